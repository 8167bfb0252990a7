/*
 * interp_acts: the activations of one sequence on the host, indexed by hook point.
 *
 * The host analyses (decomposition, DLA, statistics) read a handful of hooks of one game many
 * times; downloading them once per sequence into plain arrays keeps those analyses independent
 * of the backend (CPU or GPU) and lets tests fill a set from reference files without running
 * the engine. Tensors are stored without the batch axis, in TL's layouts.
 */
#include <stdlib.h>
#include <string.h>

#include "interp/interp_int.h"

static size_t hook_numel(const model_config *cfg, model_hook h, size_t T) {
    model_shape s = model_hook_shape(cfg, h, 1, T);
    return model_shape_numel(&s);
}

int interp_acts_new(interp_acts **out, const model_config *cfg, size_t T, char *err) {
    if (T == 0 || T > (size_t)cfg->n_ctx) {
        return common_fail(err, COMMON_ERR_INVALID, "interp_acts_new: %zu positions (n_ctx %d)", T,
                           cfg->n_ctx);
    }
    interp_acts *a = calloc(1, sizeof *a);
    if (a == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "interp_acts_new: out of memory");
    }
    a->cfg = *cfg;
    a->T = T;
    a->n_hooks = model_hook_count(cfg);
    a->data = calloc(a->n_hooks, sizeof *a->data);
    a->numel = calloc(a->n_hooks, sizeof *a->numel);
    if (a->data == NULL || a->numel == NULL) {
        interp_acts_destroy(&a);
        return common_fail(err, COMMON_ERR_NOMEM, "interp_acts_new: out of memory");
    }
    *out = a;
    return 0;
}

void interp_acts_destroy(interp_acts **p) {
    if (p == NULL || *p == NULL) {
        return;
    }
    interp_acts *a = *p;
    if (a->data != NULL) {
        for (size_t i = 0; i < a->n_hooks; i++) {
            free(a->data[i]);
        }
    }
    free(a->data);
    free(a->numel);
    free(a);
    *p = NULL;
}

size_t interp_acts_positions(const interp_acts *a) {
    return a->T;
}

int interp_acts_set(interp_acts *a, model_hook h, const float *data, size_t n, char *err) {
    char name[64];
    size_t want = hook_numel(&a->cfg, h, a->T);
    if (n != want) {
        return common_fail(err, COMMON_ERR_INVALID, "interp_acts_set(%s): %zu values, want %zu",
                           model_hook_name(h, name, sizeof name), n, want);
    }
    size_t i = model_hook_index(&a->cfg, h);
    if (a->data[i] == NULL) {
        a->data[i] = malloc(want * sizeof(float));
        if (a->data[i] == NULL) {
            return common_fail(err, COMMON_ERR_NOMEM, "interp_acts_set: out of memory");
        }
    }
    memcpy(a->data[i], data, want * sizeof(float));
    a->numel[i] = want;
    return 0;
}

const float *interp_acts_get(const interp_acts *a, model_hook h, size_t *n) {
    if (h.kind >= MODEL_HOOK_KIND_COUNT ||
        (model_hook_kind_in_block(h.kind) && (h.layer < 0 || h.layer >= a->cfg.n_layers))) {
        return NULL;
    }
    size_t i = model_hook_index(&a->cfg, h);
    if (n != NULL) {
        *n = a->numel[i];
    }
    return a->data[i];
}

const float *interp_acts_need(const interp_acts *a, model_hook_kind kind, int layer, char *err) {
    model_hook h = {kind, layer};
    const float *p = interp_acts_get(a, h, NULL);
    if (p == NULL) {
        char name[64];
        common_fail(err, COMMON_ERR_NOT_FOUND, "activations lack %s",
                    model_hook_name(h, name, sizeof name));
    }
    return p;
}

/* Copies the first T positions of one batch row of a hook held at Tc positions: position-major
 * hooks [Tc, rest] keep rows < T; attention hooks [H, Tc, Tc] keep the [T, T] corner. */
static void crop_row(const model_config *cfg, model_hook h, const float *src, size_t Tc, size_t T,
                     float *dst) {
    model_shape full = model_hook_shape(cfg, h, 1, Tc);
    if (model_hook_position_major(h.kind)) {
        size_t rest = model_shape_numel(&full) / Tc;
        memcpy(dst, src, T * rest * sizeof(float));
        return;
    }
    size_t H = full.dims[1];
    for (size_t hh = 0; hh < H; hh++) {
        for (size_t q = 0; q < T; q++) {
            memcpy(dst + (hh * T + q) * T, src + (hh * Tc + q) * Tc, T * sizeof(float));
        }
    }
}

int interp_acts_from_cache(interp_acts **out, const model_config *cfg, const model_cache *c,
                           size_t row, size_t T, char *err) {
    size_t Tc = model_cache_positions(c);
    if (T == 0) {
        T = Tc;
    }
    if (T > Tc || row >= model_cache_batch(c)) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "interp_acts_from_cache: row %zu / %zu positions outside the cache "
                           "[%zu, %zu]",
                           row, T, model_cache_batch(c), Tc);
    }
    interp_acts *a = NULL;
    int rc = interp_acts_new(&a, cfg, T, err);
    if (rc != 0) {
        return rc;
    }
    float *buf = NULL;
    size_t n_hooks = model_hook_count(cfg);
    for (size_t i = 0; i < n_hooks; i++) {
        model_hook h = model_hook_at(cfg, i);
        if (!model_cache_has(c, h)) {
            continue;
        }
        size_t n_row = hook_numel(cfg, h, Tc);
        float *tmp = realloc(buf, n_row * sizeof(float));
        if (tmp == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "interp_acts_from_cache: out of memory");
            goto fail;
        }
        buf = tmp;
        rc = model_cache_download_row(c, h, row, buf, n_row, err);
        if (rc != 0) {
            goto fail;
        }
        size_t n = hook_numel(cfg, h, T);
        a->data[i] = malloc(n * sizeof(float));
        if (a->data[i] == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "interp_acts_from_cache: out of memory");
            goto fail;
        }
        crop_row(cfg, h, buf, Tc, T, a->data[i]);
        a->numel[i] = n;
    }
    free(buf);
    *out = a;
    return 0;
fail:
    free(buf);
    interp_acts_destroy(&a);
    return rc;
}

size_t interp_acts_hooks(const model_config *cfg, bool with_patterns, model_hook *out, size_t cap) {
    static const model_hook_kind per_layer[] = {
        MODEL_HOOK_RESID_PRE, MODEL_HOOK_LN1_SCALE,  MODEL_HOOK_Z,         MODEL_HOOK_PATTERN,
        MODEL_HOOK_ATTN_OUT,  MODEL_HOOK_RESID_MID,  MODEL_HOOK_LN2_SCALE, MODEL_HOOK_MLP_POST,
        MODEL_HOOK_MLP_OUT,   MODEL_HOOK_RESID_POST,
    };
    size_t n_per = sizeof per_layer / sizeof per_layer[0];
    size_t n = 0;
    model_hook h;
#define PUT(k, l)                                                                                  \
    do {                                                                                           \
        h.kind = (k);                                                                              \
        h.layer = (l);                                                                             \
        if (n < cap) {                                                                             \
            out[n] = h;                                                                            \
        }                                                                                          \
        n++;                                                                                       \
    } while (0)
    PUT(MODEL_HOOK_EMBED, -1);
    PUT(MODEL_HOOK_POS_EMBED, -1);
    for (int l = 0; l < cfg->n_layers; l++) {
        for (size_t k = 0; k < n_per; k++) {
            if (per_layer[k] != MODEL_HOOK_PATTERN || with_patterns) {
                PUT(per_layer[k], l);
            }
        }
    }
    PUT(MODEL_HOOK_LN_FINAL_SCALE, -1);
#undef PUT
    return n;
}

int interp_run_acts(model_session *s, const int32_t *tokens, const size_t *lengths, size_t B,
                    size_t T, bool with_patterns, interp_acts ***out, char *err) {
    const model_config *cfg = model_get_config(model_session_model(s));
    size_t n_hooks = interp_acts_hooks(cfg, with_patterns, NULL, 0);
    model_hook *hooks = malloc(n_hooks * sizeof *hooks);
    interp_acts **acts = calloc(B, sizeof *acts);
    model_cache *cache = NULL;
    int rc = 0;
    if (hooks == NULL || acts == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "interp_run_acts: out of memory");
        goto fail;
    }
    interp_acts_hooks(cfg, with_patterns, hooks, n_hooks);
    model_request req;
    model_request_init(&req, s, tokens, B, T);
    req.lengths = lengths;
    req.hooks = hooks;
    req.n_hooks = n_hooks;
    req.want_logits = true;
    rc = model_run(s, &req, &cache, err);
    if (rc != 0) {
        goto fail;
    }
    for (size_t b = 0; b < B; b++) {
        rc = interp_acts_from_cache(&acts[b], cfg, cache, b, lengths ? lengths[b] : T, err);
        if (rc != 0) {
            goto fail;
        }
    }
    model_cache_destroy(&cache);
    free(hooks);
    *out = acts;
    return 0;
fail:
    model_cache_destroy(&cache);
    if (acts != NULL) {
        for (size_t b = 0; b < B; b++) {
            interp_acts_destroy(&acts[b]);
        }
    }
    free(acts);
    free(hooks);
    return rc;
}
