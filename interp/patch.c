/*
 * Activation patching with TransformerLens' semantics (docs/TL-SEMANTICS.md §5): for every index of
 * a patch kind (layer x position, layer x head, ...), run the corrupted tokens with the clean
 * run's activation at that index put in place, and read a metric from the logits. A call
 * patches a batch of clean/corrupted pairs of one length; the clean runs of all pairs are one
 * batched run, the corrupted runs another.
 *
 * Two algorithms share one grid of indices ("jobs", generated per layer on the fly):
 * - plain: one full forward per pair and job (TL's generic_activation_patch), the oracle;
 * - fast (exact): a patch at layer l and position p cannot change layers < l nor positions < p
 *   (causal attention), so the patched run only needs layers l.. at positions p..T-1, with the
 *   keys/values of earlier positions and the residual entering layer l taken from the corrupted
 *   run's cache. Jobs of one layer, of every pair, differ only in their start position, patch
 *   and base row, so they are packed as rows of a few incremental model_runs (every linear
 *   layer becomes one GEMM over all their positions). A head patch over all positions starts
 *   at position 0 and saves layers only.
 *   Jobs whose patched run is the corrupted run get that run's metric without running: a
 *   pattern element at a masked key (src > dest) replaces 0 by 0, and (the prefix shortcut) a
 *   patch at a position before the pair's first differing token d replaces a value by the same
 *   value, since positions < d see the same tokens in both runs. For the same reason an
 *   all-positions patch may start at d instead of 0. The plain algorithm runs every job, as TL
 *   does.
 */
#include <assert.h>
#include <math.h>
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
 * values[index] of its pair's result. */
typedef struct job {
    model_hook hook;
    int pos;     /* MODEL_ALL or a position (the destination / query one for the pattern) */
    int head;    /* MODEL_ALL or a head */
    int key_pos; /* MODEL_ALL (whole vector or pattern row) or a source position */
    size_t index;
} job;

/* What one call shares: the kind's index grid, the pairs, their base runs and results. */
typedef struct task {
    model_session *s;
    const kind_info *ki;
    size_t L, T, H, V;
    size_t per_layer; /* indices of one layer over all components */
    size_t n_jobs;    /* indices of one pair: L * per_layer */
    const interp_patch_pair *pairs;
    size_t n;
    size_t *first_diff;        /* [n] first position where clean and corrupted differ, T if none */
    interp_patch_result **res; /* [n] */
    model_cache *clean;        /* [n, T]: the clean runs, caching the hooks the patches read */
    model_cache *base;         /* [n, T]: the corrupted runs (fast: resid_pre, k, v per layer) */
    model_buf *masks;          /* [n, V] bytes on the device: pair i's LEGAL_MASS mask, or NULL */
    model_metric *row_specs;   /* [max_rows]: the metric of each row of one run */
    double *row_values;        /* [max_rows]: their values */
    void (*on_run)(void *ctx); /* interp_patch_opts.on_run */
    void *on_run_ctx;
} task;

/* model_run, then the caller's sign of life. */
static int run_model(const task *t, const model_request *req, model_cache **out, char *err) {
    int rc = model_run(t->s, req, out, err);
    if (t->on_run != NULL) {
        t->on_run(t->on_run_ctx);
    }
    return rc;
}

/* Index k (0 <= k < per_layer) of `layer`, the components one after another and each one's
 * coordinates in TL's itertools.product order (last axis fastest). */
static job job_at(const task *t, size_t layer, size_t k) {
    const kind_info *ki = t->ki;
    size_t offset = 0; /* first output index of component c */
    for (int c = 0; c < ki->n_comp; c++) {
        size_t count = per_layer(ki->ax[c], t->T, t->H);
        if (k >= count) {
            k -= count;
            offset += t->L * count;
            continue;
        }
        const layout *lay = &layouts[ki->ax[c]];
        int v[3] = {MODEL_ALL, MODEL_ALL, MODEL_ALL}; /* indexed by coord */
        size_t rest = k;
        for (int a = lay->n - 1; a >= 0; a--) {
            size_t size = coord_size(lay->c[a], t->T, t->H);
            v[lay->c[a]] = (int)(rest % size);
            rest /= size;
        }
        return (job){{ki->hooks[c], (int)layer},
                     v[COORD_POS],
                     v[COORD_HEAD],
                     v[COORD_KEY],
                     offset + layer * count + k};
    }
    assert(!"job index outside the layer");
    return (job){{ki->hooks[0], (int)layer}, MODEL_ALL, MODEL_ALL, MODEL_ALL, 0};
}

/* Adds "pair i: " in front of the message of a failure that concerns one pair of several. */
static int pair_fail(const task *t, size_t i, int rc, char *err) {
    if (err != NULL && t->n > 1) {
        char msg[COMMON_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", err);
        common_fail(err, rc, "patching: pair %zu: %s", i, msg);
    }
    return rc;
}

/* Writes metric value m of pair i's patched run at index, normalised when the pair asks. */
static void store(const task *t, size_t i, size_t index, double m) {
    interp_patch_result *r = t->res[i];
    if (t->pairs[i].metric.normalize) {
        m = (m - r->corrupted_metric) / (r->clean_metric - r->corrupted_metric);
    }
    r->values[index] = (float)m;
}

/* The metric of every row of a run on its last position's logits, into t->row_values: row r
 * belongs to pair pair_of[r] (pair r when pair_of is NULL). Computed on the device, so that a
 * request waits once and one value per row comes back, not V logits. */
static int row_metrics(const task *t, const model_cache *c, size_t rows, const size_t *pair_of,
                       char *err) {
    for (size_t r = 0; r < rows; r++) {
        size_t i = pair_of != NULL ? pair_of[r] : r;
        t->row_specs[r] = interp_metric_spec(&t->pairs[i].metric, (int32_t)i);
    }
    model_hook lh = {MODEL_HOOK_LOGITS, -1};
    return model_cache_metrics(c, lh, t->T - 1, t->row_specs, t->masks, t->masks ? t->n : 0,
                               t->row_values, err);
}

/* The pairs' LEGAL_MASS masks on the device, row i pair i's (zeros for a pair of another
 * metric), when any pair has one: uploaded once for every run of the call. */
static int upload_masks(task *t, char *err) {
    bool any = false;
    for (size_t i = 0; i < t->n; i++) {
        any = any || t->pairs[i].metric.kind == INTERP_METRIC_LEGAL_MASS;
    }
    if (!any) {
        return 0;
    }
    uint8_t *masks = calloc(t->n, t->V);
    if (masks == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory for %zu masks", t->n);
    }
    for (size_t i = 0; i < t->n; i++) {
        if (t->pairs[i].metric.kind == INTERP_METRIC_LEGAL_MASS) {
            memcpy(masks + i * t->V, t->pairs[i].metric.legal, t->V);
        }
    }
    int rc =
        model_metric_masks_upload(model_session_backend(t->s), masks, t->n, t->V, &t->masks, err);
    free(masks);
    return rc;
}

/* The clean (or corrupted) runs of all pairs as one batch [n, T] caching `hooks`, with logits;
 * each pair's metric goes to its result. */
static int base_run(task *t, bool clean, const model_hook *hooks, size_t n_hooks,
                    model_cache **cache, char *err) {
    size_t T = t->T;
    int32_t *tokens = malloc(t->n * T * sizeof *tokens); /* [n, T] */
    int rc = 0;
    if (tokens == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory for %zu runs", t->n);
        goto done;
    }
    for (size_t i = 0; i < t->n; i++) {
        memcpy(tokens + i * T, clean ? t->pairs[i].clean : t->pairs[i].corrupted,
               T * sizeof *tokens);
    }
    model_request req;
    model_request_init(&req, t->s, tokens, t->n, T);
    req.hooks = hooks;
    req.n_hooks = n_hooks;
    req.want_logits = true;
    rc = run_model(t, &req, cache, err);
    if (rc == 0) {
        rc = row_metrics(t, *cache, t->n, NULL, err);
    }
    for (size_t i = 0; i < t->n && rc == 0; i++) {
        interp_patch_result *r = t->res[i];
        *(clean ? &r->clean_metric : &r->corrupted_metric) = t->row_values[i];
    }
    if (rc != 0) {
        model_cache_destroy(cache);
    }
done:
    free(tokens);
    return rc;
}

/* The plain algorithm: per pair and index, one full forward of the corrupted tokens with the
 * clean activation put in place. */
static int run_plain(task *t, char *err) {
    size_t T = t->T;
    int rc = 0;
    for (size_t i = 0; i < t->n && rc == 0; i++) {
        for (size_t l = 0; l < t->L && rc == 0; l++) {
            for (size_t k = 0; k < t->per_layer && rc == 0; k++) {
                job j = job_at(t, l, k);
                model_patch patch = {.hook = j.hook,
                                     .row = 0,
                                     .pos = j.pos,
                                     .head = j.head,
                                     .src = t->clean,
                                     .src_row = (int)i,
                                     .key_pos = j.key_pos};
                model_request req;
                model_request_init(&req, t->s, t->pairs[i].corrupted, 1, T);
                req.want_logits = true;
                req.patches = &patch;
                req.n_patches = 1;
                model_cache *out = NULL;
                rc = run_model(t, &req, &out, err);
                if (rc != 0) {
                    rc = pair_fail(t, i, rc, err);
                    break;
                }
                rc = row_metrics(t, out, 1, &i, err);
                model_cache_destroy(&out);
                if (rc == 0) {
                    store(t, i, j.index, t->row_values[0]);
                }
                t->res[i]->n_forwards++;
                t->res[i]->n_positions += t->L * T;
            }
        }
    }
    return rc;
}

/* Each packed row carries its own keys and values of all T positions per layer, so rows are
 * capped as well as positions (many late-position rows are cheap in positions only). */
#define MAX_PACKED_ROWS 256

/* A patched run of the fast algorithm: pair, index, first position computed. */
typedef struct row {
    size_t pair;
    job j;
    size_t start;
} row;

/* The patched runs of one layer collected for one incremental request, in pair order. */
typedef struct packer {
    size_t budget;        /* most positions per request */
    row *rows;            /* [MAX_PACKED_ROWS] */
    size_t n_rows;        /* rows collected */
    size_t positions;     /* positions the collected rows compute per layer */
    int32_t *tokens;      /* [MAX_PACKED_ROWS, T] */
    size_t *start;        /* [MAX_PACKED_ROWS] */
    size_t *base_rows;    /* [MAX_PACKED_ROWS] */
    model_patch *patches; /* [MAX_PACKED_ROWS * T] */
} packer;

/* Runs the collected rows as one incremental request over the corrupted runs' cache. */
static int flush(task *t, packer *pk, char *err) {
    if (pk->n_rows == 0) {
        return 0;
    }
    size_t T = t->T;
    int layer = pk->rows[0].j.hook.layer;
    size_t n_patches = 0;
    for (size_t r = 0; r < pk->n_rows; r++) {
        const row *w = &pk->rows[r];
        assert(w->j.hook.layer == layer && (r == 0 || w->pair >= pk->rows[r - 1].pair));
        memcpy(pk->tokens + r * T, t->pairs[w->pair].corrupted, T * sizeof *pk->tokens);
        pk->start[r] = w->start;
        pk->base_rows[r] = w->pair;
        model_patch p = {.hook = w->j.hook,
                         .row = (int)r,
                         .pos = w->j.pos,
                         .head = w->j.head,
                         .src = t->clean,
                         .src_row = (int)w->pair,
                         .key_pos = w->j.key_pos};
        if (w->j.pos == MODEL_ALL && w->start > 0) {
            /* model_run takes an all-positions patch only in a run from position 0: patch each
             * computed position instead (those before start are equal in both runs). */
            for (size_t q = w->start; q < T; q++) {
                p.pos = (int)q;
                pk->patches[n_patches++] = p;
            }
        } else {
            pk->patches[n_patches++] = p;
        }
    }
    model_request req;
    model_request_init(&req, t->s, pk->tokens, pk->n_rows, T);
    req.want_logits = true;
    req.patches = pk->patches;
    req.n_patches = n_patches;
    req.start_layer = layer;
    req.stop_layer = (int)t->L;
    req.base = t->base;
    req.base_rows = pk->base_rows;
    req.start_pos = pk->start;
    model_cache *out = NULL;
    int rc = run_model(t, &req, &out, err);
    if (rc == 0) {
        rc = row_metrics(t, out, pk->n_rows, pk->base_rows, err);
    }
    for (size_t r = 0; r < pk->n_rows && rc == 0; r++) {
        const row *w = &pk->rows[r];
        store(t, w->pair, w->j.index, t->row_values[r]);
        interp_patch_result *res = t->res[w->pair];
        res->n_positions += (T - w->start) * (t->L - (size_t)layer);
        if (r == 0 || w->pair != pk->rows[r - 1].pair) {
            res->n_forwards++; /* a shared request counts once for each pair it serves */
        }
    }
    model_cache_destroy(&out);
    pk->n_rows = 0;
    pk->positions = 0;
    return rc;
}

/* Adds a patched run, first running the collected ones when it does not fit with them (another
 * layer, over the position budget or the row cap; a single row always fits). */
static int add_row(task *t, packer *pk, size_t pair, const job *j, size_t start, char *err) {
    size_t cost = t->T - start;
    if (pk->n_rows > 0 && (pk->rows[0].j.hook.layer != j->hook.layer ||
                           pk->positions + cost > pk->budget || pk->n_rows == MAX_PACKED_ROWS)) {
        int rc = flush(t, pk, err);
        if (rc != 0) {
            return rc;
        }
    }
    pk->rows[pk->n_rows++] = (row){pair, *j, start};
    pk->positions += cost;
    return 0;
}

/* The fast algorithm. Per layer, the patched runs of every pair go into shared incremental
 * requests; indices whose patched run is the corrupted run (a masked pattern key, or, with the
 * prefix shortcut, a patch before the pair's first differing position) get that run's metric
 * without running. */
static int run_fast(task *t, size_t budget, bool shortcut, char *err) {
    size_t T = t->T;
    packer pk = {.budget = budget};
    pk.rows = malloc(MAX_PACKED_ROWS * sizeof *pk.rows);
    pk.tokens = malloc(MAX_PACKED_ROWS * T * sizeof *pk.tokens);
    pk.start = malloc(MAX_PACKED_ROWS * sizeof *pk.start);
    pk.base_rows = malloc(MAX_PACKED_ROWS * sizeof *pk.base_rows);
    pk.patches = malloc(MAX_PACKED_ROWS * T * sizeof *pk.patches);
    int rc = 0;
    if (pk.rows == NULL || pk.tokens == NULL || pk.start == NULL || pk.base_rows == NULL ||
        pk.patches == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory for packed runs");
        goto done;
    }
    for (size_t l = 0; l < t->L && rc == 0; l++) {
        for (size_t i = 0; i < t->n && rc == 0; i++) {
            /* positions before d hold the same activations in both runs (causality) */
            size_t d = shortcut ? t->first_diff[i] : 0;
            double corrupted = t->res[i]->corrupted_metric;
            for (size_t k = 0; k < t->per_layer && rc == 0; k++) {
                job j = job_at(t, l, k);
                if (j.key_pos != MODEL_ALL && j.key_pos > j.pos) {
                    /* a masked key is 0 in both runs: the patch replaces 0 by 0 */
                    assert(j.hook.kind == MODEL_HOOK_PATTERN && j.pos != MODEL_ALL);
                    store(t, i, j.index, corrupted);
                    continue;
                }
                if (j.pos != MODEL_ALL ? (size_t)j.pos < d : d == T) {
                    store(t, i, j.index, corrupted);
                    continue;
                }
                /* An all-positions patch starts at d when that saves at least as many
                 * positions as it adds single-position patches (one per computed position). */
                size_t start = j.pos != MODEL_ALL ? (size_t)j.pos : (d > 0 && T - d <= d ? d : 0);
                rc = add_row(t, &pk, i, &j, start, err);
            }
        }
    }
    if (rc == 0) {
        rc = flush(t, &pk, err);
    }
done:
    free(pk.rows);
    free(pk.tokens);
    free(pk.start);
    free(pk.base_rows);
    free(pk.patches);
    return rc;
}

int interp_patch_result_new(interp_patch_kind kind, const model_config *cfg, size_t T,
                            interp_patch_result **out, char *err) {
    if ((int)kind < 0 || kind >= INTERP_PATCH_KIND_COUNT) {
        return common_fail(err, COMMON_ERR_INVALID, "patching: unknown kind %d", (int)kind);
    }
    const kind_info *ki = &kinds[kind];
    interp_patch_result *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory");
    }
    int nd = 0;
    if (ki->n_comp > 1) {
        r->shape.dims[nd++] = (size_t)ki->n_comp;
    }
    r->shape.dims[nd++] = (size_t)cfg->n_layers;
    for (int a = 0; a < layouts[ki->ax[0]].n; a++) {
        r->shape.dims[nd++] = coord_size(layouts[ki->ax[0]].c[a], T, (size_t)cfg->n_heads);
    }
    r->shape.ndim = nd;
    size_t numel = model_shape_numel(&r->shape);
    r->values = malloc((numel > 0 ? numel : 1) * sizeof *r->values);
    if (r->values == NULL) {
        free(r);
        return common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory for %zu values", numel);
    }
    for (size_t i = 0; i < numel; i++) {
        r->values[i] = NAN;
    }
    snprintf(r->axes, sizeof r->axes, "%s", ki->axes_name);
    snprintf(r->labels, sizeof r->labels, "%s", ki->labels);
    r->clean_metric = NAN;
    r->corrupted_metric = NAN;
    *out = r;
    return 0;
}

int interp_patch_run_batch(model_session *s, const interp_patch_pair *pairs, size_t n, size_t T,
                           const interp_patch_opts *opts, interp_patch_result **out, char *err) {
    const model_config *cfg = model_get_config(model_session_model(s));
    if ((int)opts->kind < 0 || opts->kind >= INTERP_PATCH_KIND_COUNT) {
        return common_fail(err, COMMON_ERR_INVALID, "patching: unknown kind %d", (int)opts->kind);
    }
    if (T == 0 || T > (size_t)cfg->n_ctx) {
        return common_fail(err, COMMON_ERR_INVALID, "patching: %zu positions (n_ctx %d)", T,
                           cfg->n_ctx);
    }
    if (n == 0) {
        return 0;
    }
    if (pairs == NULL || out == NULL) {
        return common_fail(err, COMMON_ERR_INVALID, "patching: %zu pairs without pairs or outputs",
                           n);
    }
    if (n > SIZE_MAX / sizeof(int32_t) / T) {
        return common_fail(err, COMMON_ERR_INVALID, "patching: %zu pairs of %zu positions", n, T);
    }
    for (size_t i = 0; i < n; i++) {
        if (pairs[i].clean == NULL || pairs[i].corrupted == NULL) {
            return common_fail(err, COMMON_ERR_INVALID, "patching: pair %zu has no tokens", i);
        }
    }
    task t = {.s = s,
              .ki = &kinds[opts->kind],
              .L = (size_t)cfg->n_layers,
              .T = T,
              .H = (size_t)cfg->n_heads,
              .V = (size_t)cfg->d_vocab,
              .pairs = pairs,
              .n = n,
              .on_run = opts->on_run,
              .on_run_ctx = opts->on_run_ctx};
    for (int c = 0; c < t.ki->n_comp; c++) {
        t.per_layer += per_layer(t.ki->ax[c], T, t.H);
    }
    t.n_jobs = t.L * t.per_layer;
    model_hook *clean_hooks = malloc((size_t)t.ki->n_comp * t.L * sizeof *clean_hooks);
    model_hook *base_hooks = malloc(3 * t.L * sizeof *base_hooks);
    t.first_diff = malloc(n * sizeof *t.first_diff);
    t.res = calloc(n, sizeof *t.res);
    size_t max_rows = n > MAX_PACKED_ROWS ? n : MAX_PACKED_ROWS; /* rows of one run */
    t.row_specs = malloc(max_rows * sizeof *t.row_specs);
    t.row_values = malloc(max_rows * sizeof *t.row_values);
    int rc = 0;
    if (clean_hooks == NULL || base_hooks == NULL || t.first_diff == NULL || t.res == NULL ||
        t.row_specs == NULL || t.row_values == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "patching: out of memory for %zu pairs", n);
        goto done;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        if ((rc = interp_metric_check(&pairs[i].metric, t.V, err)) != 0) {
            rc = pair_fail(&t, i, rc, err);
        }
    }
    if (rc != 0 || (rc = upload_masks(&t, err)) != 0) {
        goto done;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t d = 0;
        while (d < T && pairs[i].clean[d] == pairs[i].corrupted[d]) {
            d++;
        }
        t.first_diff[i] = d;
        rc = interp_patch_result_new(opts->kind, cfg, T, &t.res[i], err);
        assert(rc != 0 || model_shape_numel(&t.res[i]->shape) == t.n_jobs);
    }
    if (rc != 0) {
        goto done;
    }
    /* Clean runs: every hook the patches read. */
    size_t n_clean = 0;
    for (int c = 0; c < t.ki->n_comp; c++) {
        for (size_t l = 0; l < t.L; l++) {
            clean_hooks[n_clean++] = (model_hook){t.ki->hooks[c], (int)l};
        }
    }
    rc = base_run(&t, true, clean_hooks, n_clean, &t.clean, err);
    if (rc != 0) {
        goto done;
    }
    /* Corrupted runs: what an incremental run reads (residual entering each layer, keys and
     * values of every layer) for the fast algorithm; nothing for the plain one. */
    size_t n_base = 0;
    if (!opts->plain) {
        for (size_t l = 0; l < t.L; l++) {
            base_hooks[n_base++] = (model_hook){MODEL_HOOK_RESID_PRE, (int)l};
            base_hooks[n_base++] = (model_hook){MODEL_HOOK_K, (int)l};
            base_hooks[n_base++] = (model_hook){MODEL_HOOK_V, (int)l};
        }
    }
    rc = base_run(&t, false, base_hooks, n_base, &t.base, err);
    if (rc != 0) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const interp_patch_result *r = t.res[i];
        if (pairs[i].metric.normalize && r->clean_metric == r->corrupted_metric) {
            rc = common_fail(err, COMMON_ERR_INVALID,
                             "patching: cannot normalise, the clean and corrupted runs give the "
                             "same metric (%g)",
                             r->clean_metric);
            rc = pair_fail(&t, i, rc, err);
            goto done;
        }
    }
    if (opts->plain) {
        rc = run_plain(&t, err);
    } else {
        size_t budget = opts->max_packed_positions ? opts->max_packed_positions : 4096;
        rc = run_fast(&t, budget, !opts->no_prefix_shortcut, err);
    }
    if (rc != 0) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        out[i] = t.res[i];
    }
    free(t.res);
    t.res = NULL;
done:
    for (size_t i = 0; t.res != NULL && i < n; i++) {
        interp_patch_result_destroy(&t.res[i]);
    }
    free(t.res);
    model_cache_destroy(&t.clean);
    model_cache_destroy(&t.base);
    if (t.masks != NULL) {
        model_backend *be = model_session_backend(s);
        be->free(be, t.masks);
    }
    free(t.row_specs);
    free(t.row_values);
    free(t.first_diff);
    free(clean_hooks);
    free(base_hooks);
    return rc;
}

int interp_patch_run(model_session *s, const int32_t *clean, const int32_t *corrupted, size_t T,
                     const interp_patch_opts *opts, interp_patch_result **out, char *err) {
    interp_patch_pair pair = {clean, corrupted, opts->metric};
    interp_patch_result *res = NULL;
    int rc = interp_patch_run_batch(s, &pair, 1, T, opts, &res, err);
    if (rc == 0) {
        *out = res;
    }
    return rc;
}
