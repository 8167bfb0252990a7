/*
 * A patch task: the clean/corrupted pairs of one cut-off T, patched in one
 * interp_patch_run_batch. Before it, each pair's metric is made concrete: clean_top /
 * corrupt_top become the argmax of the clean / corrupted logits at the last position, the
 * metric text is resolved and parsed, and legal_mass gets the clean prompt's legal mask at
 * T-1. The logits those need come from one batched forward of the distinct clean prompts (a
 * game's pairs share theirs) and all corrupted prompts, run only when the metric reads a top
 * token or normalises.
 *
 * Normalising divides by m_clean - m_corrupted, so a pair whose two metrics are equal has no
 * normalised value (interp refuses it, and would refuse the whole batch with it). Such a pair
 * is kept out of the batch and given NaN values, which the store writes as NULL. The equality
 * is decided on this file's batched run; should interp's own base runs of the batch round to
 * equal metrics for a pair where this run did not, the batch is redone unnormalised and
 * normalised here, with that pair NaN as well.
 *
 * All the pairs of a task are patched in one batch, so that the fast algorithm packs the
 * patched runs of all of them into shared requests (large products); the executor's progress
 * callback hears from the batch after each of its runs (interp_patch_opts.on_run), since a
 * worker renews its lease only while progress comes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker_int.h"

/* Rows of one base forward: bounds the logits held at once ([rows, T, V]). */
#define BASE_ROWS 64
/* Longest resolved metric text ("logit_diff:" and two vocabulary tokens). */
#define METRIC_LEN 160

/* Last-position logits of rows prompts (tokens [rows, T]) into last [rows, V]. */
static int last_logits(model_session *s, const int32_t *tokens, size_t rows, size_t T, size_t V,
                       float *last, char *err) {
    int rc = 0;
    for (size_t r0 = 0; r0 < rows && rc == 0; r0 += BASE_ROWS) {
        size_t nb = rows - r0 < BASE_ROWS ? rows - r0 : BASE_ROWS;
        model_request req;
        model_request_init(&req, s, tokens + r0 * T, nb, T);
        model_cache *c = NULL;
        rc = model_run(s, &req, &c, err);
        if (rc == 0) { /* the batch's last positions in one transfer */
            rc = model_cache_download_position(c, (model_hook){MODEL_HOOK_LOGITS, -1}, T - 1,
                                               last + r0 * V, nb * V, err);
        }
        model_cache_destroy(&c);
    }
    return rc;
}

/* The lowest id of the largest value of x [V]. */
static int32_t argmax(const float *x, size_t V) {
    size_t best = 0;
    for (size_t v = 1; v < V; v++) {
        if (x[v] > x[best]) {
            best = v;
        }
    }
    return (int32_t)best;
}

static bool needs_tops(const coordinator_metric_spec *ms) {
    for (size_t i = 0; i < ms->n_tokens; i++) {
        if (ms->tokens[i].kind != COORDINATOR_TOKEN_TEXT) {
            return true;
        }
    }
    return false;
}

static char *dup_or_null(const char *s, bool *failed) {
    if (s == NULL) {
        return NULL;
    }
    char *d = strdup(s);
    *failed = *failed || d == NULL;
    return d;
}

/* Allocates the output's patch columns for n pairs. */
static int alloc_columns(struct worker_output_mem *mem, size_t n, char *err) {
    size_t k = n > 0 ? n : 1;
    mem->game = calloc(k, sizeof *mem->game);
    mem->cutoff = calloc(k, sizeof *mem->cutoff);
    mem->corrupt_pos = calloc(k, sizeof *mem->corrupt_pos);
    mem->corrupt_game = calloc(k, sizeof *mem->corrupt_game);
    mem->clean_token = calloc(k, sizeof *mem->clean_token);
    mem->corrupt_token = calloc(k, sizeof *mem->corrupt_token);
    mem->metric = calloc(k, sizeof *mem->metric);
    mem->normalized = calloc(k, sizeof *mem->normalized);
    mem->result = calloc(k, sizeof *mem->result);
    if (mem->game == NULL || mem->cutoff == NULL || mem->corrupt_pos == NULL ||
        mem->corrupt_game == NULL || mem->clean_token == NULL || mem->corrupt_token == NULL ||
        mem->metric == NULL || mem->normalized == NULL || mem->result == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "patch task: out of memory for %zu pairs", n);
    }
    mem->n_patch = n;
    return 0;
}

/* Fallback of the batch (see the top of the file): results res [k] of the pairs run without
 * normalising are normalised in place; a pair with equal metrics gets NaN and equal[j] true.
 * Returns whether any pair had equal metrics. */
static bool normalise_here(interp_patch_result **res, size_t k, bool *equal) {
    bool any = false;
    for (size_t j = 0; j < k; j++) {
        interp_patch_result *r = res[j];
        size_t numel = model_shape_numel(&r->shape);
        double den = r->clean_metric - r->corrupted_metric;
        equal[j] = den == 0.0;
        any = any || equal[j];
        for (size_t i = 0; i < numel; i++) {
            r->values[i] =
                den == 0.0 ? NAN : (float)(((double)r->values[i] - r->corrupted_metric) / den);
        }
    }
    return any;
}

/* Progress of a batch: its number of runs is not known ahead, so the fraction after run k is
 * an estimate that grows towards 1 (k / (k + 32) of what follows the base runs). */
typedef struct run_progress {
    const worker_executor *e;
    double base_share;
    size_t runs;
} run_progress;

static void on_run(void *ctx) {
    run_progress *p = ctx;
    p->runs++;
    double k = (double)p->runs;
    worker_report_progress(p->e, p->base_share + (1.0 - p->base_share) * k / (k + 32.0));
}

/* Patches the task's pairs in one batch: pairs batch [k] (batch_of [k]: their pair numbers) into
 * res [k]. Normalising, a refusal of the batch is retried unnormalised and normalised here (see
 * the top of the file), and the pairs found equal are marked in skip [pairs of the task]. All
 * or nothing: on an error no res[j] is set. */
static int run_batch(model_session *s, interp_patch_pair *batch, const size_t *batch_of, size_t k,
                     size_t T, const interp_patch_opts *opts, bool normalize,
                     interp_patch_result **res, bool *skip, char *err) {
    int rc = interp_patch_run_batch(s, batch, k, T, opts, res, err);
    if (rc != COMMON_ERR_INVALID || !normalize || k == 0) {
        return rc;
    }
    char first_err[COMMON_ERR_LEN] = "";
    if (err != NULL) {
        memcpy(first_err, err, COMMON_ERR_LEN);
    }
    for (size_t j = 0; j < k; j++) {
        batch[j].metric.normalize = false;
    }
    if ((rc = interp_patch_run_batch(s, batch, k, T, opts, res, err)) != 0) {
        return rc;
    }
    bool *equal = calloc(k, sizeof *equal);
    if (equal == NULL) {
        for (size_t j = 0; j < k; j++) {
            interp_patch_result_destroy(&res[j]);
        }
        return common_fail(err, COMMON_ERR_NOMEM, "patch task: out of memory");
    }
    bool any = normalise_here(res, k, equal);
    for (size_t j = 0; j < k; j++) {
        skip[batch_of[j]] = skip[batch_of[j]] || equal[j];
    }
    free(equal);
    if (!any) {
        /* no pair had equal metrics: the refusal was about something else */
        for (size_t j = 0; j < k; j++) {
            interp_patch_result_destroy(&res[j]);
        }
        if (err != NULL) {
            memcpy(err, first_err, COMMON_ERR_LEN);
        }
        return COMMON_ERR_INVALID;
    }
    return 0;
}

int worker_run_patch(worker_executor *e, const coordinator_analysis *a, const coordinator_work *w,
                     worker_output *o, char *err) {
    const model *m = e->m;
    const model_config *cfg = model_get_config(m);
    const model_tokenizer *tok = model_get_tokenizer(m);
    const coordinator_metric_spec *ms = &a->patch.metric;
    struct worker_output_mem *mem = o->mem;
    size_t T = w->cutoff, n = w->n_pairs, V = (size_t)cfg->d_vocab, k = n > 0 ? n : 1;
    int32_t *clean = malloc(k * T * sizeof *clean);         /* [n, T] */
    int32_t *corrupted = malloc(k * T * sizeof *corrupted); /* [n, T] */
    size_t *uniq = malloc(k * sizeof *uniq);                /* [n] pair -> distinct clean prompt */
    size_t *first = malloc(k * sizeof *first);           /* [u] distinct prompt -> its 1st pair */
    interp_metric *metrics = calloc(k, sizeof *metrics); /* [n] */
    bool *skip = calloc(k, sizeof *skip);                /* [n] equal metrics: NaN */
    double *mc = calloc(k, sizeof *mc), *mr = calloc(k, sizeof *mr); /* [n] when normalising */
    interp_patch_pair *batch = malloc(k * sizeof *batch);            /* [n_run] */
    size_t *batch_of = malloc(k * sizeof *batch_of);                 /* [n_run] -> pair */
    interp_patch_result **res = calloc(k, sizeof *res);              /* [n_run] */
    int32_t *base = NULL;  /* [u + n, T]: distinct clean prompts, then corrupted ones */
    float *last = NULL;    /* [u + n, V] their last-position logits */
    uint8_t *legal = NULL; /* [u, V] legal mask at T-1 of each distinct clean prompt */
    uint8_t *mask = NULL;  /* [T_game, V] one game's mask */
    size_t n_run = 0, u = 0;
    int rc = 0;
    if (clean == NULL || corrupted == NULL || uniq == NULL || first == NULL || metrics == NULL ||
        skip == NULL || mc == NULL || mr == NULL || batch == NULL || batch_of == NULL ||
        res == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "patch task: out of memory for %zu pairs", n);
        goto fail;
    }
    if ((rc = alloc_columns(mem, n, err)) != 0) {
        goto fail;
    }

    /* Tokens; pairs come by game, so a clean prompt equal to the previous one is shared. */
    for (size_t i = 0; i < n; i++) {
        const coordinator_pair *p = &w->pairs[i];
        if ((rc = worker_ids_from_texts(m, p->clean, T, clean + i * T, err)) != 0 ||
            (rc = worker_ids_from_texts(m, p->corrupted, T, corrupted + i * T, err)) != 0) {
            goto fail;
        }
        if (u > 0 && memcmp(clean + first[u - 1] * T, clean + i * T, T * sizeof *clean) == 0) {
            uniq[i] = u - 1;
        } else {
            first[u] = i;
            uniq[i] = u++;
        }
    }

    bool need_base = ms->normalize || needs_tops(ms);
    if (need_base && n > 0) {
        base = malloc((u + n) * T * sizeof *base);
        last = malloc((u + n) * V * sizeof *last);
        if (base == NULL || last == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "patch task: out of memory for base runs");
            goto fail;
        }
        for (size_t j = 0; j < u; j++) {
            memcpy(base + j * T, clean + first[j] * T, T * sizeof *base);
        }
        memcpy(base + u * T, corrupted, n * T * sizeof *base);
        if ((rc = last_logits(e->s, base, u + n, T, V, last, err)) != 0) {
            goto fail;
        }
    }
    if (ms->kind == INTERP_METRIC_LEGAL_MASS && n > 0) {
        legal = malloc(u * V);
        if (legal == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "patch task: out of memory for masks");
            goto fail;
        }
        for (size_t j = 0; j < u; j++) {
            const coordinator_pair *p = &w->pairs[first[j]];
            size_t Tg = 0;
            if ((rc = interp_legal_mask(m, p->uci, &mask, &Tg, err)) != 0) {
                goto fail;
            }
            if (Tg < T) {
                rc = common_fail(err, COMMON_ERR_INVALID,
                                 "patch task: game %llu has %zu tokens, the cut-off is %zu",
                                 (unsigned long long)p->game, Tg, T);
                goto fail;
            }
            memcpy(legal + j * V, mask + (T - 1) * V, V);
            free(mask);
            mask = NULL;
        }
    }

    /* Each pair's metric, resolved, parsed and (normalising) evaluated on both runs. */
    for (size_t i = 0; i < n; i++) {
        const char *tops[2] = {NULL, NULL};
        if (need_base) {
            int32_t ids[2] = {argmax(last + uniq[i] * V, V), argmax(last + (u + i) * V, V)};
            for (int t = 0; t < 2; t++) {
                tops[t] = model_tokenizer_token(tok, ids[t]);
                if (tops[t] == NULL) {
                    rc = common_fail(err, COMMON_ERR_INVALID,
                                     "patch task: pair %zu: the %s token %d has no text", i,
                                     t == 0 ? "clean_top" : "corrupt_top", (int)ids[t]);
                    goto fail;
                }
            }
        }
        char text[METRIC_LEN];
        if ((rc = coordinator_metric_resolve(ms, tops[0], tops[1], text, sizeof text, err)) != 0 ||
            (rc = interp_metric_parse(m, text, &metrics[i], err)) != 0) {
            goto fail;
        }
        if ((mem->metric[i] = strdup(text)) == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "patch task: out of memory");
            goto fail;
        }
        metrics[i].normalize = ms->normalize;
        if (metrics[i].kind == INTERP_METRIC_LEGAL_MASS) {
            metrics[i].legal = legal + uniq[i] * V;
        }
        if (ms->normalize) {
            if ((rc = interp_metric_eval(&metrics[i], last + uniq[i] * V, V, &mc[i], err)) != 0 ||
                (rc = interp_metric_eval(&metrics[i], last + (u + i) * V, V, &mr[i], err)) != 0) {
                goto fail;
            }
            skip[i] = mc[i] == mr[i];
        }
        if (!skip[i]) {
            batch[n_run] = (interp_patch_pair){clean + i * T, corrupted + i * T, metrics[i]};
            batch_of[n_run++] = i;
        }
    }

    interp_patch_opts opts = interp_patch_opts_default();
    opts.kind = a->patch.kind;
    /* The base runs are a small part of the task, the patched requests the rest. */
    run_progress rp = {e, need_base && n > 0 ? 0.1 : 0.0, 0};
    opts.on_run = on_run;
    opts.on_run_ctx = &rp;
    worker_report_progress(e, rp.base_share);
    if ((rc = run_batch(e->s, batch, batch_of, n_run, T, &opts, ms->normalize, res, skip, err)) !=
        0) {
        goto fail;
    }
    for (size_t j = 0; j < n_run; j++) {
        mem->result[batch_of[j]] = res[j];
        res[j] = NULL;
    }

    bool nomem = false;
    for (size_t i = 0; i < n; i++) {
        const coordinator_pair *p = &w->pairs[i];
        if (mem->result[i] == NULL) {
            if ((rc = interp_patch_result_new(a->patch.kind, cfg, T, &mem->result[i], err)) != 0) {
                goto fail;
            }
            mem->result[i]->clean_metric = mc[i];
            mem->result[i]->corrupted_metric = mr[i];
        }
        o->n_unnormalizable += skip[i];
        mem->game[i] = p->game;
        mem->cutoff[i] = (uint32_t)T;
        mem->corrupt_pos[i] = p->corrupt_pos;
        mem->corrupt_game[i] = p->corrupt_game;
        mem->clean_token[i] = dup_or_null(p->corrupt_pos >= 0 ? p->clean_token : NULL, &nomem);
        mem->corrupt_token[i] = dup_or_null(p->corrupt_pos >= 0 ? p->corrupt_token : NULL, &nomem);
        mem->normalized[i] = ms->normalize;
        o->n_rows += model_shape_numel(&mem->result[i]->shape);
    }
    if (nomem) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "patch task: out of memory");
        goto fail;
    }
    mem->patch = (coordinator_patch_batch){
        .n = n,
        .kind = a->patch.kind,
        .game = mem->game,
        .cutoff = mem->cutoff,
        .corrupt_pos = mem->corrupt_pos,
        .clean_token = (const char *const *)mem->clean_token,
        .corrupt_token = (const char *const *)mem->corrupt_token,
        .corrupt_game = mem->corrupt_game,
        .metric = (const char *const *)mem->metric,
        .normalized = mem->normalized,
        .result = (const interp_patch_result *const *)mem->result,
    };
    o->results.patch = &mem->patch;

fail:
    for (size_t j = 0; res != NULL && j < n_run; j++) {
        interp_patch_result_destroy(&res[j]);
    }
    free(res);
    free(clean);
    free(corrupted);
    free(uniq);
    free(first);
    free(metrics);
    free(skip);
    free(mc);
    free(mr);
    free(batch);
    free(batch_of);
    free(base);
    free(last);
    free(legal);
    free(mask);
    return rc;
}
