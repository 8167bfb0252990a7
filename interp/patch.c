/*
 * Activation patching with TransformerLens' semantics (TL-SEMANTICS.md §5): for every index of
 * a patch kind (layer x position, layer x head, ...), run the corrupted tokens with the clean
 * run's activation at that index put in place, and read a metric from the logits.
 *
 * Two algorithms share one list of indices ("jobs"):
 * - plain: one full forward per job (TL's generic_activation_patch), the oracle and baseline;
 * - fast (exact): a patch at layer l and position p cannot change layers < l nor positions < p
 *   (causal attention), so the patched run only needs layers l.. at positions p..T-1, with the
 *   keys/values of earlier positions and the residual entering layer l taken from the corrupted
 *   run's cache. Jobs of one layer differ only in their start position and patch, so they are
 *   packed as rows of one incremental model_run (every linear layer becomes one GEMM over all
 *   their positions). A head patch over all positions starts at position 0 and saves layers only.
 *   A pattern element patch (dest, src) starts at dest; one at a masked key (src > dest)
 *   replaces 0 by 0, so its run is the corrupted run and it is given that run's metric without
 *   running it (the plain algorithm runs it, as TL does).
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interp/interp_int.h"

/* How a component's indices map to patch coordinates and to the output layout. */
typedef enum axes {
    AXES_LP,   /* [L, T]: layer, position; whole vector */
    AXES_LH,   /* [L, H]: layer, head, every position */
    AXES_LPH,  /* [L, T, H]: layer, position, head */
    AXES_LHP,  /* [L, H, T]: layer, head, destination position */
    AXES_LHPP, /* [L, H, T, T]: layer, head, destination, source position (one element) */
} axes;

/* The coordinates an index runs over after the layer, outermost first, for each axes value:
 * the one description that job generation and the output shape both read. */
typedef enum coord { COORD_POS, COORD_HEAD, COORD_KEY } coord;
typedef struct layout {
    int n;
    coord c[3];
} layout;
static const layout layouts[] = {
    [AXES_LP] = {1, {COORD_POS}},
    [AXES_LH] = {1, {COORD_HEAD}},
    [AXES_LPH] = {2, {COORD_POS, COORD_HEAD}},
    [AXES_LHP] = {2, {COORD_HEAD, COORD_POS}},
    [AXES_LHPP] = {3, {COORD_HEAD, COORD_POS, COORD_KEY}},
};

static size_t coord_size(coord c, size_t T, size_t H) {
    return c == COORD_HEAD ? H : T;
}

/* Number of indices of one layer. */
static size_t per_layer(axes ax, size_t T, size_t H) {
    size_t n = 1;
    for (int a = 0; a < layouts[ax].n; a++) {
        n *= coord_size(layouts[ax].c[a], T, H);
    }
    return n;
}

typedef struct kind_info {
    const char *name;
    int n_comp;
    model_hook_kind hooks[5];
    axes ax[5];
    const char *axes_name;
    const char *labels;
} kind_info;

static const kind_info kinds[INTERP_PATCH_KIND_COUNT] = {
    [INTERP_PATCH_RESID_PRE] = {"resid_pre", 1, {MODEL_HOOK_RESID_PRE}, {AXES_LP}, "layer,pos", ""},
    [INTERP_PATCH_RESID_MID] = {"resid_mid", 1, {MODEL_HOOK_RESID_MID}, {AXES_LP}, "layer,pos", ""},
    [INTERP_PATCH_ATTN_OUT] = {"attn_out", 1, {MODEL_HOOK_ATTN_OUT}, {AXES_LP}, "layer,pos", ""},
    [INTERP_PATCH_MLP_OUT] = {"mlp_out", 1, {MODEL_HOOK_MLP_OUT}, {AXES_LP}, "layer,pos", ""},
    [INTERP_PATCH_BLOCK_EVERY] = {"block_every",
                                  3,
                                  {MODEL_HOOK_RESID_PRE, MODEL_HOOK_ATTN_OUT, MODEL_HOOK_MLP_OUT},
                                  {AXES_LP, AXES_LP, AXES_LP},
                                  "component,layer,pos",
                                  "resid_pre,attn_out,mlp_out"},
    [INTERP_PATCH_HEAD_OUT_ALL_POS] =
        {"attn_head_out_all_pos", 1, {MODEL_HOOK_Z}, {AXES_LH}, "layer,head", ""},
    [INTERP_PATCH_HEAD_Q_ALL_POS] =
        {"attn_head_q_all_pos", 1, {MODEL_HOOK_Q}, {AXES_LH}, "layer,head", ""},
    [INTERP_PATCH_HEAD_K_ALL_POS] =
        {"attn_head_k_all_pos", 1, {MODEL_HOOK_K}, {AXES_LH}, "layer,head", ""},
    [INTERP_PATCH_HEAD_V_ALL_POS] =
        {"attn_head_v_all_pos", 1, {MODEL_HOOK_V}, {AXES_LH}, "layer,head", ""},
    [INTERP_PATCH_HEAD_PATTERN_ALL_POS] =
        {"attn_head_pattern_all_pos", 1, {MODEL_HOOK_PATTERN}, {AXES_LH}, "layer,head", ""},
    [INTERP_PATCH_HEAD_OUT_BY_POS] =
        {"attn_head_out_by_pos", 1, {MODEL_HOOK_Z}, {AXES_LPH}, "layer,pos,head", ""},
    [INTERP_PATCH_HEAD_Q_BY_POS] =
        {"attn_head_q_by_pos", 1, {MODEL_HOOK_Q}, {AXES_LPH}, "layer,pos,head", ""},
    [INTERP_PATCH_HEAD_K_BY_POS] =
        {"attn_head_k_by_pos", 1, {MODEL_HOOK_K}, {AXES_LPH}, "layer,pos,head", ""},
    [INTERP_PATCH_HEAD_V_BY_POS] =
        {"attn_head_v_by_pos", 1, {MODEL_HOOK_V}, {AXES_LPH}, "layer,pos,head", ""},
    [INTERP_PATCH_HEAD_PATTERN_BY_POS] = {"attn_head_pattern_by_pos",
                                          1,
                                          {MODEL_HOOK_PATTERN},
                                          {AXES_LHP},
                                          "layer,head,dest_pos",
                                          ""},
    [INTERP_PATCH_HEAD_ALL_POS_EVERY] = {"attn_head_all_pos_every",
                                         5,
                                         {MODEL_HOOK_Z, MODEL_HOOK_Q, MODEL_HOOK_K, MODEL_HOOK_V,
                                          MODEL_HOOK_PATTERN},
                                         {AXES_LH, AXES_LH, AXES_LH, AXES_LH, AXES_LH},
                                         "component,layer,head",
                                         "out,q,k,v,pattern"},
    [INTERP_PATCH_HEAD_BY_POS_EVERY] = {"attn_head_by_pos_every",
                                        5,
                                        {MODEL_HOOK_Z, MODEL_HOOK_Q, MODEL_HOOK_K, MODEL_HOOK_V,
                                         MODEL_HOOK_PATTERN},
                                        {AXES_LPH, AXES_LPH, AXES_LPH, AXES_LPH, AXES_LPH},
                                        "component,layer,pos,head",
                                        "out,q,k,v,pattern"},
    [INTERP_PATCH_HEAD_PATTERN_DEST_SRC_POS] = {"attn_head_pattern_dest_src_pos",
                                                1,
                                                {MODEL_HOOK_PATTERN},
                                                {AXES_LHPP},
                                                "layer,head,dest_pos,src_pos",
                                                ""},
};

const char *interp_patch_kind_name(interp_patch_kind k) {
    if ((int)k < 0 || k >= INTERP_PATCH_KIND_COUNT) {
        return "unknown";
    }
    return kinds[k].name;
}

int interp_patch_kind_parse(const char *name) {
    for (int k = 0; k < INTERP_PATCH_KIND_COUNT; k++) {
        if (strcmp(kinds[k].name, name) == 0) {
            return k;
        }
    }
    return -1;
}

interp_patch_opts interp_patch_opts_default(void) {
    interp_patch_opts o;
    memset(&o, 0, sizeof o);
    o.kind = INTERP_PATCH_BLOCK_EVERY;
    o.metric.kind = INTERP_METRIC_LOGIT;
    return o;
}

void interp_patch_result_destroy(interp_patch_result **r) {
    if (r == NULL || *r == NULL) {
        return;
    }
    free((*r)->values);
    free(*r);
    *r = NULL;
}

/* One patched run: replace `hook` at (pos, head, key_pos) and write the metric to
 * out[index]. */
typedef struct job {
    model_hook hook;
    int pos;     /* MODEL_ALL or a position (the destination / query one for the pattern) */
    int head;    /* MODEL_ALL or a head */
    int key_pos; /* MODEL_ALL (whole vector or pattern row) or a source position */
    size_t index;
} job;

static size_t comp_size(axes ax, size_t L, size_t T, size_t H) {
    return L * per_layer(ax, T, H);
}

/* Every job of a kind, in output order (TL's itertools.product order, last axis fastest). */
static int make_jobs(const kind_info *ki, size_t L, size_t T, size_t H, job **out, size_t *n_out,
                     char *err) {
    size_t n = 0;
    for (int c = 0; c < ki->n_comp; c++) {
        n += comp_size(ki->ax[c], L, T, H);
    }
    job *jobs = malloc(n * sizeof *jobs);
    if (jobs == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory for %zu indices", n);
    }
    size_t i = 0;
    for (int c = 0; c < ki->n_comp; c++) {
        for (size_t l = 0; l < L; l++) {
            model_hook h = {ki->hooks[c], (int)l};
            const layout *lay = &layouts[ki->ax[c]];
            size_t count = per_layer(ki->ax[c], T, H);
            for (size_t x = 0; x < count; x++) {
                /* decode x in mixed radix, the last coordinate fastest */
                int v[3] = {MODEL_ALL, MODEL_ALL, MODEL_ALL}; /* indexed by coord */
                size_t rest = x;
                for (int a = lay->n - 1; a >= 0; a--) {
                    size_t size = coord_size(lay->c[a], T, H);
                    v[lay->c[a]] = (int)(rest % size);
                    rest /= size;
                }
                jobs[i] = (job){h, v[COORD_POS], v[COORD_HEAD], v[COORD_KEY], i};
                i++;
            }
        }
    }
    *out = jobs;
    *n_out = n;
    return 0;
}

/* A full run of tokens [T] caching `hooks`, with logits; *metric from the last position. */
static int full_run(model_session *s, const int32_t *tokens, size_t T, const model_hook *hooks,
                    size_t n_hooks, const interp_metric *metric, float *last_logits,
                    model_cache **cache, double *value, char *err) {
    size_t V = (size_t)model_get_config(model_session_model(s))->d_vocab;
    model_request req;
    model_request_init(&req, s, tokens, 1, T);
    req.hooks = hooks;
    req.n_hooks = n_hooks;
    req.want_logits = true;
    int rc = model_run(s, &req, cache, err);
    if (rc != 0) {
        return rc;
    }
    float *logits = malloc(T * V * sizeof *logits); /* [T, V] */
    if (logits == NULL) {
        model_cache_destroy(cache);
        return common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory");
    }
    model_hook lh = {MODEL_HOOK_LOGITS, -1};
    rc = model_cache_download_row(*cache, lh, 0, logits, T * V, err);
    if (rc == 0) {
        memcpy(last_logits, logits + (T - 1) * V, V * sizeof *logits);
        rc = interp_metric_eval(metric, last_logits, V, value, err);
    }
    free(logits);
    if (rc != 0) {
        model_cache_destroy(cache);
    }
    return rc;
}

static int run_plain(model_session *s, const int32_t *corrupted, size_t T, const job *jobs,
                     size_t n_jobs, const model_cache *clean, const interp_metric *metric,
                     float *values, interp_patch_result *res, char *err) {
    const model_config *cfg = model_get_config(model_session_model(s));
    size_t V = (size_t)cfg->d_vocab;
    float *logits = malloc(T * V * sizeof *logits); /* [T, V] */
    if (logits == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory");
    }
    int rc = 0;
    model_hook lh = {MODEL_HOOK_LOGITS, -1};
    for (size_t j = 0; j < n_jobs && rc == 0; j++) {
        model_patch patch = {.hook = jobs[j].hook,
                             .row = 0,
                             .pos = jobs[j].pos,
                             .head = jobs[j].head,
                             .src = clean,
                             .src_row = 0,
                             .key_pos = jobs[j].key_pos};
        model_request req;
        model_request_init(&req, s, corrupted, 1, T);
        req.want_logits = true;
        req.patches = &patch;
        req.n_patches = 1;
        model_cache *out = NULL;
        rc = model_run(s, &req, &out, err);
        if (rc != 0) {
            break;
        }
        rc = model_cache_download_row(out, lh, 0, logits, T * V, err);
        model_cache_destroy(&out);
        double m = 0.0;
        if (rc == 0) {
            rc = interp_metric_eval(metric, logits + (T - 1) * V, V, &m, err);
        }
        values[jobs[j].index] = (float)m;
        res->n_forwards++;
        res->n_positions += (size_t)cfg->n_layers * T;
    }
    free(logits);
    return rc;
}

static size_t job_start(const job *j) {
    return j->pos == MODEL_ALL ? 0 : (size_t)j->pos;
}

/* Runs jobs[0..n) (all of one layer) as rows of one incremental request over `base`. */
static int run_packed(model_session *s, const int32_t *corrupted, size_t T, const job *jobs,
                      size_t n, const model_cache *clean, const model_cache *base,
                      const interp_metric *metric, float *values, interp_patch_result *res,
                      char *err) {
    const model_config *cfg = model_get_config(model_session_model(s));
    size_t V = (size_t)cfg->d_vocab;
    int layer = jobs[0].hook.layer;
    int32_t *tokens = malloc(n * T * sizeof *tokens); /* [n, T] */
    size_t *start = malloc(n * sizeof *start);        /* [n] */
    size_t *base_rows = calloc(n, sizeof *base_rows); /* [n], all row 0 of base */
    model_patch *patches = malloc(n * sizeof *patches);
    float *logits = malloc(T * V * sizeof *logits); /* [T, V] one row */
    model_cache *out = NULL;
    int rc = 0;
    if (tokens == NULL || start == NULL || base_rows == NULL || patches == NULL || logits == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory for %zu rows", n);
        goto done;
    }
    size_t positions = 0;
    for (size_t r = 0; r < n; r++) {
        assert(jobs[r].hook.layer == layer);
        memcpy(tokens + r * T, corrupted, T * sizeof *tokens);
        start[r] = job_start(&jobs[r]);
        positions += T - start[r];
        patches[r] = (model_patch){.hook = jobs[r].hook,
                                   .row = (int)r,
                                   .pos = jobs[r].pos,
                                   .head = jobs[r].head,
                                   .src = clean,
                                   .src_row = 0,
                                   .key_pos = jobs[r].key_pos};
    }
    model_request req;
    model_request_init(&req, s, tokens, n, T);
    req.want_logits = true;
    req.patches = patches;
    req.n_patches = n;
    req.start_layer = layer;
    req.stop_layer = cfg->n_layers;
    req.base = base;
    req.base_rows = base_rows;
    req.start_pos = start;
    rc = model_run(s, &req, &out, err);
    if (rc != 0) {
        goto done;
    }
    model_hook lh = {MODEL_HOOK_LOGITS, -1};
    for (size_t r = 0; r < n && rc == 0; r++) {
        rc = model_cache_download_row(out, lh, r, logits, T * V, err);
        double m = 0.0;
        if (rc == 0) {
            rc = interp_metric_eval(metric, logits + (T - 1) * V, V, &m, err);
        }
        values[jobs[r].index] = (float)m;
    }
    res->n_forwards++;
    res->n_positions += positions * (size_t)(cfg->n_layers - layer);
done:
    model_cache_destroy(&out);
    free(tokens);
    free(start);
    free(base_rows);
    free(patches);
    free(logits);
    return rc;
}

/* Each packed row carries its own keys and values of all T positions per layer, so rows are
 * capped as well as positions (many late-position rows are cheap in positions only). */
#define MAX_PACKED_ROWS 256

static int cmp_job_layer(const void *a, const void *b) {
    const job *x = a, *y = b;
    if (x->hook.layer != y->hook.layer) {
        return x->hook.layer < y->hook.layer ? -1 : 1;
    }
    return x->index < y->index ? -1 : x->index > y->index;
}

static int run_fast(model_session *s, const int32_t *corrupted, size_t T, job *jobs, size_t n_jobs,
                    const model_cache *clean, const model_cache *base, const interp_metric *metric,
                    double corrupted_metric, size_t budget, float *values, interp_patch_result *res,
                    char *err) {
    /* A pattern element at a masked key (source after destination) is 0 in the clean and the
     * corrupted run alike: the patched run is the corrupted run. */
    size_t kept = 0;
    for (size_t j = 0; j < n_jobs; j++) {
        if (jobs[j].key_pos != MODEL_ALL && jobs[j].key_pos > jobs[j].pos) {
            assert(jobs[j].hook.kind == MODEL_HOOK_PATTERN && jobs[j].pos != MODEL_ALL);
            values[jobs[j].index] = (float)corrupted_metric;
        } else {
            jobs[kept++] = jobs[j];
        }
    }
    n_jobs = kept;
    qsort(jobs, n_jobs, sizeof *jobs, cmp_job_layer);
    size_t i = 0;
    while (i < n_jobs) {
        size_t j = i;
        size_t positions = 0;
        while (j < n_jobs && jobs[j].hook.layer == jobs[i].hook.layer &&
               (j == i ||
                (positions + (T - job_start(&jobs[j])) <= budget && j - i < MAX_PACKED_ROWS))) {
            positions += T - job_start(&jobs[j]);
            j++;
        }
        int rc =
            run_packed(s, corrupted, T, jobs + i, j - i, clean, base, metric, values, res, err);
        if (rc != 0) {
            return rc;
        }
        i = j;
    }
    return 0;
}

int interp_patch_run(model_session *s, const int32_t *clean, const int32_t *corrupted, size_t T,
                     const interp_patch_opts *opts, interp_patch_result **out, char *err) {
    const model_config *cfg = model_get_config(model_session_model(s));
    size_t L = (size_t)cfg->n_layers, H = (size_t)cfg->n_heads, V = (size_t)cfg->d_vocab;
    if ((int)opts->kind < 0 || opts->kind >= INTERP_PATCH_KIND_COUNT) {
        return common_fail(err, COMMON_ERR_INVALID, "patching: unknown kind %d", (int)opts->kind);
    }
    if (T == 0 || T > (size_t)cfg->n_ctx) {
        return common_fail(err, COMMON_ERR_INVALID, "patching: %zu positions (n_ctx %d)", T,
                           cfg->n_ctx);
    }
    const kind_info *ki = &kinds[opts->kind];
    job *jobs = NULL;
    size_t n_jobs = 0;
    model_hook *clean_hooks = NULL, *base_hooks = NULL;
    model_cache *clean_cache = NULL, *base_cache = NULL;
    interp_patch_result *res = NULL;
    float *last = malloc(V * sizeof *last); /* [V] */
    int rc = make_jobs(ki, L, T, H, &jobs, &n_jobs, err);
    if (rc != 0) {
        goto fail;
    }
    res = calloc(1, sizeof *res);
    clean_hooks = malloc((size_t)ki->n_comp * L * sizeof *clean_hooks);
    base_hooks = malloc(3 * L * sizeof *base_hooks);
    if (last == NULL || res == NULL || clean_hooks == NULL || base_hooks == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory");
        goto fail;
    }
    res->values = malloc(n_jobs * sizeof *res->values);
    if (res->values == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory");
        goto fail;
    }
    /* Clean run: every hook the patches read. */
    size_t n_clean = 0;
    for (int c = 0; c < ki->n_comp; c++) {
        for (size_t l = 0; l < L; l++) {
            clean_hooks[n_clean++] = (model_hook){ki->hooks[c], (int)l};
        }
    }
    rc = full_run(s, clean, T, clean_hooks, n_clean, &opts->metric, last, &clean_cache,
                  &res->clean_metric, err);
    if (rc != 0) {
        goto fail;
    }
    /* Corrupted run: what an incremental run reads (residual entering each layer, keys and
     * values of every layer) for the fast algorithm; nothing for the plain one. */
    size_t n_base = 0;
    if (!opts->plain) {
        for (size_t l = 0; l < L; l++) {
            base_hooks[n_base++] = (model_hook){MODEL_HOOK_RESID_PRE, (int)l};
            base_hooks[n_base++] = (model_hook){MODEL_HOOK_K, (int)l};
            base_hooks[n_base++] = (model_hook){MODEL_HOOK_V, (int)l};
        }
    }
    rc = full_run(s, corrupted, T, base_hooks, n_base, &opts->metric, last, &base_cache,
                  &res->corrupted_metric, err);
    if (rc != 0) {
        goto fail;
    }
    double denom = res->clean_metric - res->corrupted_metric;
    if (opts->metric.normalize && denom == 0.0) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "patching: cannot normalise, the clean and corrupted runs give the same "
                         "metric (%g)",
                         res->clean_metric);
        goto fail;
    }
    if (opts->plain) {
        rc = run_plain(s, corrupted, T, jobs, n_jobs, clean_cache, &opts->metric, res->values, res,
                       err);
    } else {
        size_t budget = opts->max_packed_positions ? opts->max_packed_positions : 4096;
        rc = run_fast(s, corrupted, T, jobs, n_jobs, clean_cache, base_cache, &opts->metric,
                      res->corrupted_metric, budget, res->values, res, err);
    }
    if (rc != 0) {
        goto fail;
    }
    if (opts->metric.normalize) {
        for (size_t i = 0; i < n_jobs; i++) {
            res->values[i] = (float)(((double)res->values[i] - res->corrupted_metric) / denom);
        }
    }
    /* Output shape. */
    size_t dims[4];
    int nd = 0;
    if (ki->n_comp > 1) {
        dims[nd++] = (size_t)ki->n_comp;
    }
    dims[nd++] = L;
    for (int a = 0; a < layouts[ki->ax[0]].n; a++) {
        dims[nd++] = coord_size(layouts[ki->ax[0]].c[a], T, H);
    }
    res->shape.ndim = nd;
    for (int d = 0; d < nd; d++) {
        res->shape.dims[d] = dims[d];
    }
    snprintf(res->axes, sizeof res->axes, "%s", ki->axes_name);
    snprintf(res->labels, sizeof res->labels, "%s", ki->labels);
    model_cache_destroy(&clean_cache);
    model_cache_destroy(&base_cache);
    free(jobs);
    free(clean_hooks);
    free(base_hooks);
    free(last);
    *out = res;
    return 0;
fail:
    model_cache_destroy(&clean_cache);
    model_cache_destroy(&base_cache);
    free(jobs);
    free(clean_hooks);
    free(base_hooks);
    free(last);
    interp_patch_result_destroy(&res);
    return rc;
}
