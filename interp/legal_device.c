/*
 * Legal-move statistics on the device (interp.h, interp_legal_accum): the host path of
 * decompose.c and stats.c (decompose_resid and stack_head_results at the final layer with
 * ln_final's cached scale, the stack @ W_U, interp_legal_stats_add) made of backend operations
 * over the activations a run leaves in its model_cache, so that statistics over many games
 * bring no activations and no logits to the host: the legal masks go up, the accumulators come
 * down once, when the caller asks.
 *
 * Each game is its own stack, with the products the host path makes (one [T, Dh] x [Dh, D] per
 * head, one [n_comp * T, D] x [D, V] per game), rather than one product over a padded batch:
 * the CPU backend then calls OpenBLAS with interp's arguments, and centre_scale and legal_stats
 * repeat interp's loops, so on one CPU thread the partials are interp's bit for bit. (OpenBLAS
 * rounds a product according to how it splits it over its threads, and the CPU backend picks
 * each product's threads by its size where interp's calls take the process' setting, so with
 * more threads the two agree to float32 rounding of the logits.) The heads of a layer are one
 * strided-batched product, so a game costs about three launches per layer on a GPU.
 */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interp/interp_int.h"

_Static_assert(MODEL_LEGAL_N_STATS == INTERP_LEGAL_N_STATS,
               "legal_stats' statistics are interp's, in interp's order");

struct interp_legal_accum {
    model_session *s;
    model_backend *be;
    model_config cfg;
    interp_legal_parts parts;
    size_t n_comp, T;
    char **labels;      /* [n_comp] */
    model_buf *acc;     /* MODEL_LEGAL_ACC_LEN(n_comp * T) elements: the partials */
    model_buf *stack;   /* [n_comp, T, D]: one game's components */
    model_buf *logits;  /* [n_comp, T, V] */
    model_buf *mask;    /* [mask_n] int32: a batch's legal masks, game after game */
    size_t mask_n;      /* elements of mask and host_mask */
    int32_t *host_mask; /* [mask_n] */
    model_ref W_U;      /* [D, V] */
    model_ref *W_O;     /* [L]: [H, Dh, D] each */
};

size_t interp_legal_parts_hooks(const model_config *cfg, interp_legal_parts p, model_hook *out,
                                size_t cap) {
    size_t n = 0;
#define PUT(k, l)                                                                                  \
    do {                                                                                           \
        if (n < cap) {                                                                             \
            out[n] = (model_hook){(k), (l)};                                                       \
        }                                                                                          \
        n++;                                                                                       \
    } while (0)
    if (p.embeds) {
        PUT(MODEL_HOOK_EMBED, -1);
        PUT(MODEL_HOOK_POS_EMBED, -1);
    }
    for (int l = 0; l < cfg->n_layers; l++) {
        if (p.attns) {
            PUT(MODEL_HOOK_ATTN_OUT, l);
        }
        if (p.mlps) {
            PUT(MODEL_HOOK_MLP_OUT, l);
        }
        if (p.heads) {
            PUT(MODEL_HOOK_Z, l);
        }
    }
    PUT(MODEL_HOOK_LN_FINAL_SCALE, -1);
#undef PUT
    return n;
}

void interp_legal_accum_destroy(interp_legal_accum **p) {
    if (p == NULL || *p == NULL) {
        return;
    }
    interp_legal_accum *a = *p;
    model_backend *be = a->be;
    be->free(be, a->acc);
    be->free(be, a->stack);
    be->free(be, a->logits);
    be->free(be, a->mask);
    if (a->labels != NULL) {
        for (size_t i = 0; i < a->n_comp; i++) {
            free(a->labels[i]);
        }
    }
    free(a->labels);
    free(a->host_mask);
    free(a->W_O);
    free(a);
    *p = NULL;
}

/* Sets the labels in stack order (interp.h). */
static int make_labels(interp_legal_accum *a, char *err) {
    size_t i = 0;
    char buf[48];
#define LABEL(...)                                                                                 \
    do {                                                                                           \
        snprintf(buf, sizeof buf, __VA_ARGS__);                                                    \
        if ((a->labels[i++] = strdup(buf)) == NULL) {                                              \
            return common_fail(err, COMMON_ERR_NOMEM, "legal accumulators: out of memory");        \
        }                                                                                          \
    } while (0)
    if (a->parts.embeds) {
        LABEL("embed");
        LABEL("pos_embed");
    }
    for (int l = 0; l < a->cfg.n_layers; l++) {
        if (a->parts.attns) {
            LABEL("%d_attn_out", l);
        }
        if (a->parts.mlps) {
            LABEL("%d_mlp_out", l);
        }
    }
    for (int l = 0; a->parts.heads && l < a->cfg.n_layers; l++) {
        for (size_t h = 0; h < (size_t)a->cfg.n_heads; h++) {
            LABEL("L%dH%zu", l, h);
        }
    }
#undef LABEL
    return 0;
}

int interp_legal_accum_new(interp_legal_accum **out, model_session *s, interp_legal_parts p,
                           size_t T, char *err) {
    const model_config *cfg = model_get_config(model_session_model(s));
    size_t L = (size_t)cfg->n_layers, H = (size_t)cfg->n_heads, D = (size_t)cfg->d_model,
           V = (size_t)cfg->d_vocab;
    size_t n_comp =
        (p.embeds ? 2 : 0) + L * ((p.attns ? 1 : 0) + (p.mlps ? 1 : 0)) + (p.heads ? L * H : 0);
    if (n_comp == 0 || T == 0 || T > (size_t)cfg->n_ctx) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "legal accumulators: %zu components, %zu positions (n_ctx %d)", n_comp,
                           T, cfg->n_ctx);
    }
    interp_legal_accum *a = calloc(1, sizeof *a);
    if (a == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "legal accumulators: out of memory");
    }
    a->s = s;
    a->be = model_session_backend(s);
    a->cfg = *cfg;
    a->parts = p;
    a->n_comp = n_comp;
    a->T = T;
    a->labels = calloc(n_comp, sizeof *a->labels);
    a->W_O = calloc(L > 0 ? L : 1, sizeof *a->W_O);
    int rc = a->labels == NULL || a->W_O == NULL
                 ? common_fail(err, COMMON_ERR_NOMEM, "legal accumulators: out of memory")
                 : make_labels(a, err);
    a->W_U = model_session_param(s, "unembed.W_U");
    for (size_t l = 0; l < L && rc == 0; l++) {
        char name[48];
        snprintf(name, sizeof name, "blocks.%zu.attn.W_O", l);
        a->W_O[l] = model_session_param(s, name);
        if (a->W_O[l].buf == NULL) {
            rc = common_fail(err, COMMON_ERR_NOT_FOUND, "legal accumulators: no %s", name);
        }
    }
    if (rc == 0 && a->W_U.buf == NULL) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "legal accumulators: no unembed.W_U");
    }
    model_backend *be = a->be;
    size_t cells = n_comp * T;
    if (rc == 0) {
        rc = be->alloc(be, MODEL_LEGAL_ACC_LEN(cells), &a->acc, err);
    }
    if (rc == 0) {
        rc = be->alloc(be, n_comp * T * D, &a->stack, err);
    }
    if (rc == 0) {
        rc = be->alloc(be, n_comp * T * V, &a->logits, err);
    }
    /* counts and sums 0 (all-zero bits are the double 0), minima +inf, maxima -inf */
    if (rc == 0) {
        rc = be->fill(be, (model_ref){a->acc, 0}, MODEL_LEGAL_ACC_MIN(cells), 0.0f, err);
    }
    if (rc == 0) {
        rc = be->fill(be, (model_ref){a->acc, MODEL_LEGAL_ACC_MIN(cells)},
                      MODEL_LEGAL_N_STATS * cells, INFINITY, err);
    }
    if (rc == 0) {
        rc = be->fill(be, (model_ref){a->acc, MODEL_LEGAL_ACC_MAX(cells)},
                      MODEL_LEGAL_N_STATS * cells, -INFINITY, err);
    }
    if (rc != 0) {
        interp_legal_accum_destroy(&a);
        return rc;
    }
    *out = a;
    return 0;
}

size_t interp_legal_accum_components(const interp_legal_accum *a) {
    return a->n_comp;
}

/* Room for n int32 mask elements on the host and the device. */
static int reserve_mask(interp_legal_accum *a, size_t n, char *err) {
    if (n <= a->mask_n) {
        return 0;
    }
    int32_t *h = realloc(a->host_mask, n * sizeof *h);
    if (h == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "legal accumulators: out of memory for masks");
    }
    a->host_mask = h;
    a->be->free(a->be, a->mask);
    a->mask = NULL;
    a->mask_n = 0;
    int rc = a->be->alloc(a->be, n, &a->mask, err);
    if (rc == 0) {
        a->mask_n = n;
    }
    return rc;
}

/* Game b (Tb positions, row b of a cache of Tc positions) into the accumulators; its mask at
 * mask_off. */
static int add_game(interp_legal_accum *a, const model_cache *c, size_t b, size_t Tb, size_t Tc,
                    size_t mask_off, char *err) {
    model_backend *be = a->be;
    const model_config *cfg = &a->cfg;
    size_t L = (size_t)cfg->n_layers, H = (size_t)cfg->n_heads, Dh = (size_t)cfg->d_head,
           D = (size_t)cfg->d_model, V = (size_t)cfg->d_vocab, per = Tb * D, i = 0;
    int rc = 0;
    /* the residual rows: copies of the cached hooks, [Tb, D] each */
    model_hook rows[2 + 2 * MODEL_MAX_LAYERS];
    size_t n_rows = 0;
    if (a->parts.embeds) {
        rows[n_rows++] = (model_hook){MODEL_HOOK_EMBED, -1};
        rows[n_rows++] = (model_hook){MODEL_HOOK_POS_EMBED, -1};
    }
    for (size_t l = 0; l < L; l++) {
        if (a->parts.attns) {
            rows[n_rows++] = (model_hook){MODEL_HOOK_ATTN_OUT, (int)l};
        }
        if (a->parts.mlps) {
            rows[n_rows++] = (model_hook){MODEL_HOOK_MLP_OUT, (int)l};
        }
    }
    for (; i < n_rows && rc == 0; i++) {
        model_ref src = model_cache_ref(c, rows[i]); /* [B, Tc, D] */
        src.off += b * Tc * D;
        rc = be->copy2d(be, (model_ref){a->stack, i * per}, per, src, per, 1, per, err);
    }
    /* the heads: result[h] = z[:, h, :] @ W_O[h], one product per head of each layer */
    for (size_t l = 0; a->parts.heads && l < L && rc == 0; l++, i += H) {
        model_ref z = model_cache_ref(c, (model_hook){MODEL_HOOK_Z, (int)l}); /* [B, Tc, H, Dh] */
        model_gemm g = {.m = Tb,
                        .n = D,
                        .k = Dh,
                        .alpha = 1.0f,
                        .beta = 0.0f,
                        .a = {z.buf, z.off + b * Tc * H * Dh},
                        .lda = H * Dh,
                        .stride_a = Dh,
                        .b = a->W_O[l],
                        .ldb = D,
                        .stride_b = Dh * D,
                        .c = {a->stack, i * per},
                        .ldc = D,
                        .stride_c = per,
                        .batch = H};
        rc = be->gemm(be, &g, err);
    }
    assert(rc != 0 || i == a->n_comp);
    /* apply_ln_to_stack with ln_final's scale of each position, then @ W_U */
    model_ref scale = model_cache_ref(c, (model_hook){MODEL_HOOK_LN_FINAL_SCALE, -1}); /* [B,Tc] */
    scale.off += b * Tc;
    if (rc == 0) {
        rc = be->centre_scale(be, (model_ref){a->stack, 0}, scale, a->n_comp * Tb, D, Tb, err);
    }
    if (rc == 0) {
        model_gemm g = {.m = a->n_comp * Tb,
                        .n = V,
                        .k = D,
                        .alpha = 1.0f,
                        .beta = 0.0f,
                        .a = {a->stack, 0},
                        .lda = D,
                        .b = a->W_U,
                        .ldb = V,
                        .c = {a->logits, 0},
                        .ldc = V,
                        .batch = 1};
        rc = be->gemm(be, &g, err);
    }
    if (rc == 0) {
        rc = be->legal_stats(be, (model_ref){a->acc, 0}, a->T, (model_ref){a->logits, 0},
                             (model_ref){a->mask, mask_off}, a->n_comp, Tb, V, err);
    }
    return rc;
}

int interp_legal_accum_add(interp_legal_accum *a, const model_cache *c, const size_t *lengths,
                           const uint8_t *const *legal, size_t n, char *err) {
    size_t V = (size_t)a->cfg.d_vocab, Tc = model_cache_positions(c), total = 0;
    if (n > model_cache_batch(c)) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "legal accumulators: %zu games from a cache of %zu rows", n,
                           model_cache_batch(c));
    }
    for (size_t b = 0; b < n; b++) {
        if (lengths[b] == 0 || lengths[b] > Tc || lengths[b] > a->T) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "legal accumulators: game %zu of %zu positions (the cache has "
                               "%zu, the accumulators %zu)",
                               b, lengths[b], Tc, a->T);
        }
        total += lengths[b] * V;
    }
    model_hook need[3 + 3 * MODEL_MAX_LAYERS];
    size_t n_need = interp_legal_parts_hooks(&a->cfg, a->parts, need, sizeof need / sizeof *need);
    for (size_t i = 0; i < n_need; i++) {
        if (!model_cache_has(c, need[i])) {
            char name[96];
            return common_fail(err, COMMON_ERR_NOT_FOUND,
                               "legal accumulators: the cache does not hold %s",
                               model_hook_name(need[i], name, sizeof name));
        }
    }
    if (n == 0) {
        return 0;
    }
    int rc = reserve_mask(a, total, err);
    if (rc != 0) {
        return rc;
    }
    for (size_t b = 0, at = 0; b < n; at += lengths[b++] * V) {
        for (size_t e = 0; e < lengths[b] * V; e++) {
            a->host_mask[at + e] = legal[b][e] != 0;
        }
    }
    rc = a->be->upload(a->be, (model_ref){a->mask, 0}, a->host_mask, total, err);
    for (size_t b = 0, at = 0; b < n && rc == 0; at += lengths[b++] * V) {
        rc = add_game(a, c, b, lengths[b], Tc, at, err);
    }
    return rc;
}

int interp_legal_accum_download(const interp_legal_accum *a, interp_legal_stats **out, char *err) {
    size_t cells = a->n_comp * a->T, n = MODEL_LEGAL_ACC_LEN(cells);
    float *h = malloc(n * sizeof *h);
    interp_legal_stats *s = NULL;
    int rc = h == NULL ? common_fail(err, COMMON_ERR_NOMEM, "legal accumulators: out of memory")
                       : a->be->download(a->be, h, (model_ref){a->acc, 0}, n, err);
    if (rc == 0) {
        rc = interp_legal_stats_new(&s, a->n_comp, (const char *const *)a->labels, a->T, err);
    }
    if (rc == 0) {
        const double *count = (const double *)(const void *)(h + MODEL_LEGAL_ACC_COUNT(cells));
        for (size_t i = 0; i < cells; i++) {
            s->count[i] = (uint64_t)count[i];
        }
        size_t k = MODEL_LEGAL_N_STATS * cells;
        memcpy(s->sum, h + MODEL_LEGAL_ACC_SUM(cells), k * sizeof *s->sum);
        memcpy(s->min, h + MODEL_LEGAL_ACC_MIN(cells), k * sizeof *s->min);
        memcpy(s->max, h + MODEL_LEGAL_ACC_MAX(cells), k * sizeof *s->max);
        *out = s;
    }
    free(h);
    return rc;
}
