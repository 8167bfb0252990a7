/*
 * Residual-stream decompositions of one sequence (TL ActivationCache, docs/TL-SEMANTICS.md §4):
 * decompose_resid, accumulated_resid, stack_head_results, get_full_resid_decomposition,
 * apply_ln_to_stack, stack @ W_U and logit_attrs, plus attention-pattern diffs and neuron DLA.
 *
 * Every stack is [n, T, width] on the host. The per-neuron decomposition is the one place where
 * TL's layout explodes ([L*M, T, D]); here each neuron's row is contracted with the requested
 * directions first: post[t, n] * (W_out[n] @ dirs), so memory is [L*M, T, K]. Centring before
 * the projection (apply_ln) equals projecting onto centred directions, which is how it is
 * computed for neurons.
 */
#include <cblas.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "interp/interp_int.h"

const float *interp_param(const model *m, int layer, const char *suffix, char *err) {
    char name[96];
    if (layer >= 0) {
        snprintf(name, sizeof name, "blocks.%d.%s", layer, suffix);
    } else {
        snprintf(name, sizeof name, "%s", suffix);
    }
    const float *p = model_param(m, name, NULL);
    if (p == NULL) {
        common_fail(err, COMMON_ERR_NOT_FOUND, "model has no parameter %s", name);
    }
    return p;
}

int interp_stack_alloc(interp_stack **out, size_t n, size_t T, size_t width, char *err) {
    interp_stack *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "stack: out of memory");
    }
    s->n = n;
    s->T = T;
    s->width = width;
    s->data = calloc(n * T * width + 1, sizeof *s->data);
    s->labels = calloc(n ? n : 1, sizeof *s->labels);
    if (s->data == NULL || s->labels == NULL) {
        interp_stack_destroy(&s);
        return common_fail(err, COMMON_ERR_NOMEM, "stack: out of memory for %zu x %zu x %zu", n, T,
                           width);
    }
    *out = s;
    return 0;
}

int interp_stack_label(interp_stack *s, size_t i, char *err, const char *fmt, ...) {
    char buf[64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s->labels[i] = malloc(strlen(buf) + 1);
    if (s->labels[i] == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "stack: out of memory");
    }
    strcpy(s->labels[i], buf);
    return 0;
}

void interp_stack_destroy(interp_stack **p) {
    if (p == NULL || *p == NULL) {
        return;
    }
    interp_stack *s = *p;
    if (s->labels != NULL) {
        for (size_t i = 0; i < s->n; i++) {
            free(s->labels[i]);
        }
    }
    free(s->labels);
    free(s->data);
    free(s);
    *p = NULL;
}

static int resolve_layer(const model_config *cfg, int layer, bool mlp_input, int *out, char *err) {
    if (layer < 0) {
        layer = cfg->n_layers;
    }
    if (layer > cfg->n_layers || (mlp_input && layer >= cfg->n_layers)) {
        return common_fail(err, COMMON_ERR_INVALID, "layer %d out of range (n_layers %d%s)", layer,
                           cfg->n_layers, mlp_input ? ", mlp_input" : "");
    }
    *out = layer;
    return 0;
}

/* The cached LayerNorm scale [T] that reads the residual at (layer, mlp_input). */
static const float *ln_scale(const interp_acts *a, int layer, bool mlp_input, char *err) {
    if (layer >= a->cfg.n_layers) {
        return interp_acts_need(a, MODEL_HOOK_LN_FINAL_SCALE, -1, err);
    }
    return interp_acts_need(a, mlp_input ? MODEL_HOOK_LN2_SCALE : MODEL_HOOK_LN1_SCALE, layer, err);
}

/* Centre each [D] row of x [T, D] and divide it by scale[t]. */
static void centre_scale(float *x, size_t T, size_t D, const float *scale) {
    for (size_t t = 0; t < T; t++) {
        float *r = x + t * D;
        double mean = 0.0;
        for (size_t d = 0; d < D; d++) {
            mean += r[d];
        }
        float mu = (float)(mean / (double)D);
        for (size_t d = 0; d < D; d++) {
            r[d] = (r[d] - mu) / scale[t];
        }
    }
}

int interp_apply_ln_to_stack(const interp_acts *a, interp_stack *stack, int layer, bool mlp_input,
                             char *err) {
    size_t D = (size_t)a->cfg.d_model;
    int rc = resolve_layer(&a->cfg, layer, mlp_input, &layer, err);
    if (rc != 0) {
        return rc;
    }
    if (stack->width != D || stack->T != a->T) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "apply_ln_to_stack: stack [%zu, %zu, %zu] is not a residual stack of "
                           "%zu positions x d_model %zu",
                           stack->n, stack->T, stack->width, a->T, D);
    }
    const float *scale = ln_scale(a, layer, mlp_input, err);
    if (scale == NULL) {
        return COMMON_ERR_NOT_FOUND;
    }
    for (size_t i = 0; i < stack->n; i++) {
        centre_scale(stack->data + i * stack->T * D, stack->T, D, scale);
    }
    return 0;
}

/* Copies hook (kind, layer) [T, D] into row i of s with a label. */
static int put_hook_row(interp_stack *s, size_t i, const interp_acts *a, model_hook_kind kind,
                        int layer, char *err, const char *label) {
    const float *src = interp_acts_need(a, kind, layer, err);
    if (src == NULL) {
        return COMMON_ERR_NOT_FOUND;
    }
    memcpy(s->data + i * s->T * s->width, src, s->T * s->width * sizeof(float));
    return interp_stack_label(s, i, err, "%s", label);
}

int interp_decompose_resid(const model *m, const interp_acts *a, int layer, bool mlp_input,
                           interp_decomp_mode mode, bool incl_embeds, bool apply_ln,
                           interp_stack **out, char *err) {
    (void)m;
    const model_config *cfg = &a->cfg;
    int rc = resolve_layer(cfg, layer, mlp_input, &layer, err);
    if (rc != 0) {
        return rc;
    }
    bool attn = mode != INTERP_DECOMP_MLP, mlp = mode != INTERP_DECOMP_ATTN;
    size_t n = (incl_embeds ? 2 : 0) + (size_t)layer * ((attn ? 1 : 0) + (mlp ? 1 : 0)) +
               (mlp_input && attn ? 1 : 0);
    interp_stack *s = NULL;
    rc = interp_stack_alloc(&s, n, a->T, (size_t)cfg->d_model, err);
    if (rc != 0) {
        return rc;
    }
    size_t i = 0;
    char label[32];
    if (incl_embeds) {
        rc = put_hook_row(s, i++, a, MODEL_HOOK_EMBED, -1, err, "embed");
        if (rc == 0) {
            rc = put_hook_row(s, i++, a, MODEL_HOOK_POS_EMBED, -1, err, "pos_embed");
        }
    }
    for (int l = 0; l < layer && rc == 0; l++) {
        if (attn) {
            snprintf(label, sizeof label, "%d_attn_out", l);
            rc = put_hook_row(s, i++, a, MODEL_HOOK_ATTN_OUT, l, err, label);
        }
        if (mlp && rc == 0) {
            snprintf(label, sizeof label, "%d_mlp_out", l);
            rc = put_hook_row(s, i++, a, MODEL_HOOK_MLP_OUT, l, err, label);
        }
    }
    if (rc == 0 && mlp_input && attn) {
        snprintf(label, sizeof label, "%d_attn_out", layer);
        rc = put_hook_row(s, i++, a, MODEL_HOOK_ATTN_OUT, layer, err, label);
    }
    if (rc == 0 && apply_ln) {
        rc = interp_apply_ln_to_stack(a, s, layer, mlp_input, err);
    }
    if (rc != 0) {
        interp_stack_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

int interp_accumulated_resid(const model *m, const interp_acts *a, int layer, bool incl_mid,
                             bool mlp_input, bool apply_ln, interp_stack **out, char *err) {
    const model_config *cfg = &a->cfg;
    size_t D = (size_t)cfg->d_model, T = a->T;
    int rc = resolve_layer(cfg, layer, mlp_input, &layer, err);
    if (rc != 0) {
        return rc;
    }
    size_t n = 0;
    for (int l = 0; l <= layer; l++) {
        n += 1 + (l < cfg->n_layers && ((incl_mid && l < layer) || (mlp_input && l == layer)));
    }
    interp_stack *s = NULL;
    rc = interp_stack_alloc(&s, n, T, D, err);
    if (rc != 0) {
        return rc;
    }
    size_t i = 0;
    char label[32];
    for (int l = 0; l <= layer && rc == 0; l++) {
        if (l == cfg->n_layers) {
            rc = put_hook_row(s, i++, a, MODEL_HOOK_RESID_POST, cfg->n_layers - 1, err,
                              "final_post");
            continue;
        }
        snprintf(label, sizeof label, "%d_pre", l);
        rc = put_hook_row(s, i++, a, MODEL_HOOK_RESID_PRE, l, err, label);
        if (rc == 0 && ((incl_mid && l < layer) || (mlp_input && l == layer))) {
            snprintf(label, sizeof label, "%d_mid", l);
            rc = put_hook_row(s, i++, a, MODEL_HOOK_RESID_MID, l, err, label);
        }
    }
    if (rc == 0 && apply_ln) {
        if (layer == cfg->n_layers) {
            /* Logit lens: each row through ln_final with its own centring and scale (and the
             * LN weights of an unprocessed model). */
            const float *w = model_param(m, "ln_final.w", NULL);
            const float *b = model_param(m, "ln_final.b", NULL);
            for (size_t r = 0; r < n * T; r++) {
                float *x = s->data + r * D;
                double mean = 0.0, var = 0.0;
                for (size_t d = 0; d < D; d++) {
                    mean += x[d];
                }
                float mu = (float)(mean / (double)D);
                for (size_t d = 0; d < D; d++) {
                    x[d] -= mu;
                    var += (double)x[d] * x[d];
                }
                float sc = sqrtf((float)(var / (double)D) + cfg->eps);
                for (size_t d = 0; d < D; d++) {
                    x[d] = x[d] / sc;
                    if (w != NULL && b != NULL) {
                        x[d] = x[d] * w[d] + b[d];
                    }
                }
            }
        } else {
            rc = interp_apply_ln_to_stack(a, s, layer, mlp_input, err);
        }
    }
    if (rc != 0) {
        interp_stack_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

/* result[t, :] = sum_d z[t, h, d] W_O[h, d, :] for one head, into dst [T, D]. */
static void head_result(const float *z, const float *W_O, size_t T, size_t H, size_t Dh, size_t D,
                        size_t h, float *dst) {
    /* z [T, H, Dh] rows of head h have stride H*Dh; W_O[h] [Dh, D]. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)D, (int)Dh, 1.0f,
                z + h * Dh, (int)(H * Dh), W_O + h * Dh * D, (int)D, 0.0f, dst, (int)D);
}

int interp_stack_head_results(const model *m, const interp_acts *a, int layer, bool incl_remainder,
                              bool apply_ln, interp_stack **out, char *err) {
    const model_config *cfg = &a->cfg;
    size_t D = (size_t)cfg->d_model, H = (size_t)cfg->n_heads, Dh = (size_t)cfg->d_head;
    size_t T = a->T;
    int rc = resolve_layer(cfg, layer, false, &layer, err);
    if (rc != 0) {
        return rc;
    }
    if (incl_remainder && layer == 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "stack_head_results: a remainder needs layer >= 1");
    }
    size_t n = (size_t)layer * H + (incl_remainder ? 1 : 0);
    interp_stack *s = NULL;
    rc = interp_stack_alloc(&s, n, T, D, err);
    if (rc != 0) {
        return rc;
    }
    for (int l = 0; l < layer && rc == 0; l++) {
        const float *z = interp_acts_need(a, MODEL_HOOK_Z, l, err);
        const float *W_O = interp_param(m, l, "attn.W_O", err);
        if (z == NULL || W_O == NULL) {
            rc = COMMON_ERR_NOT_FOUND;
            break;
        }
        for (size_t h = 0; h < H && rc == 0; h++) {
            size_t i = (size_t)l * H + h;
            head_result(z, W_O, T, H, Dh, D, h, s->data + i * T * D);
            rc = interp_stack_label(s, i, err, "L%dH%zu", l, h);
        }
    }
    if (rc == 0 && incl_remainder) {
        const float *resid = interp_acts_need(a, MODEL_HOOK_RESID_POST, layer - 1, err);
        if (resid == NULL) {
            rc = COMMON_ERR_NOT_FOUND;
        } else {
            float *rem = s->data + (n - 1) * T * D;
            for (size_t e = 0; e < T * D; e++) {
                double acc = 0.0;
                for (size_t i = 0; i + 1 < n; i++) {
                    acc += s->data[i * T * D + e];
                }
                rem[e] = (float)((double)resid[e] - acc);
            }
            rc = interp_stack_label(s, n - 1, err, "remainder");
        }
    }
    if (rc == 0 && apply_ln) {
        rc = interp_apply_ln_to_stack(a, s, layer, false, err);
    }
    if (rc != 0) {
        interp_stack_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

/* Finishes a [T, D] row: centre and scale (apply_ln), then project onto dirs [D, K] into dst
 * [T, K], or copy when dirs is NULL. */
static void finish_row(float *row, size_t T, size_t D, const float *scale, const float *dirs,
                       size_t K, float *dst) {
    if (scale != NULL) {
        centre_scale(row, T, D, scale);
    }
    if (dirs == NULL) {
        memcpy(dst, row, T * D * sizeof *row);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)K, (int)D, 1.0f, row,
                (int)D, dirs, (int)K, 0.0f, dst, (int)K);
}

int interp_full_resid_decomposition(const model *m, const interp_acts *a, int layer, bool mlp_input,
                                    bool expand_neurons, bool apply_ln, const float *dirs, size_t K,
                                    interp_stack **out, char *err) {
    const model_config *cfg = &a->cfg;
    size_t D = (size_t)cfg->d_model, H = (size_t)cfg->n_heads, Dh = (size_t)cfg->d_head;
    size_t M = (size_t)cfg->d_mlp, T = a->T;
    int rc = resolve_layer(cfg, layer, mlp_input, &layer, err);
    if (rc != 0) {
        return rc;
    }
    if (dirs == NULL) {
        if (expand_neurons && layer > 0) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "full_resid_decomposition: per-neuron rows need directions to "
                               "project onto ([neurons x positions x d_model] is not formed)");
        }
        K = D;
    }
    if (K == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "full_resid_decomposition: no directions");
    }
    size_t head_layers = (size_t)layer + (mlp_input ? 1 : 0);
    size_t n_mlp = (size_t)layer * (expand_neurons ? M : 1);
    size_t n = head_layers * H + n_mlp + 3;
    const float *scale = NULL;
    if (apply_ln) {
        scale = ln_scale(a, layer, mlp_input, err);
        if (scale == NULL) {
            return COMMON_ERR_NOT_FOUND;
        }
    }
    interp_stack *s = NULL;
    float *row = malloc(T * D * sizeof *row); /* [T, D] */
    float *proj = NULL;                       /* [M, K] W_out @ dirs (centred) */
    float *cdirs = NULL;                      /* [D, K] */
    rc = row == NULL ? common_fail(err, COMMON_ERR_NOMEM, "decomposition: out of memory")
                     : interp_stack_alloc(&s, n, T, K, err);
    if (rc != 0) {
        goto fail;
    }
    size_t i = 0;
    for (size_t l = 0; l < head_layers; l++) {
        const float *z = interp_acts_need(a, MODEL_HOOK_Z, (int)l, err);
        const float *W_O = interp_param(m, (int)l, "attn.W_O", err);
        if (z == NULL || W_O == NULL) {
            rc = COMMON_ERR_NOT_FOUND;
            goto fail;
        }
        for (size_t h = 0; h < H; h++, i++) {
            head_result(z, W_O, T, H, Dh, D, h, row);
            finish_row(row, T, D, scale, dirs, K, s->data + i * T * K);
            if ((rc = interp_stack_label(s, i, err, "L%zuH%zu", l, h)) != 0) {
                goto fail;
            }
        }
    }
    if (expand_neurons && layer > 0) {
        proj = malloc(M * K * sizeof *proj);
        cdirs = malloc(D * K * sizeof *cdirs);
        if (proj == NULL || cdirs == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "decomposition: out of memory");
            goto fail;
        }
        memcpy(cdirs, dirs, D * K * sizeof *cdirs);
        if (apply_ln) { /* centre(x) . d = x . (d - mean_D d) */
            for (size_t k = 0; k < K; k++) {
                double mean = 0.0;
                for (size_t d = 0; d < D; d++) {
                    mean += cdirs[d * K + k];
                }
                for (size_t d = 0; d < D; d++) {
                    cdirs[d * K + k] -= (float)(mean / (double)D);
                }
            }
        }
    }
    for (int l = 0; l < layer; l++) {
        if (!expand_neurons) {
            const float *mo = interp_acts_need(a, MODEL_HOOK_MLP_OUT, l, err);
            if (mo == NULL) {
                rc = COMMON_ERR_NOT_FOUND;
                goto fail;
            }
            memcpy(row, mo, T * D * sizeof *row);
            finish_row(row, T, D, scale, dirs, K, s->data + i * T * K);
            if ((rc = interp_stack_label(s, i++, err, "%d_mlp_out", l)) != 0) {
                goto fail;
            }
            continue;
        }
        const float *post = interp_acts_need(a, MODEL_HOOK_MLP_POST, l, err); /* [T, M] */
        const float *W_out = interp_param(m, l, "mlp.W_out", err);            /* [M, D] */
        if (post == NULL || W_out == NULL) {
            rc = COMMON_ERR_NOT_FOUND;
            goto fail;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)K, (int)D, 1.0f, W_out,
                    (int)D, cdirs, (int)K, 0.0f, proj, (int)K);
        for (size_t nn = 0; nn < M; nn++, i++) {
            float *dst = s->data + i * T * K;
            for (size_t t = 0; t < T; t++) {
                float c = post[t * M + nn];
                if (scale != NULL) {
                    c /= scale[t];
                }
                for (size_t k = 0; k < K; k++) {
                    dst[t * K + k] = c * proj[nn * K + k];
                }
            }
            if ((rc = interp_stack_label(s, i, err, "L%dN%zu", l, nn)) != 0) {
                goto fail;
            }
        }
    }
    static const model_hook_kind embeds[2] = {MODEL_HOOK_EMBED, MODEL_HOOK_POS_EMBED};
    static const char *const embed_labels[2] = {"embed", "pos_embed"};
    for (int e = 0; e < 2; e++, i++) {
        const float *src = interp_acts_need(a, embeds[e], -1, err);
        if (src == NULL) {
            rc = COMMON_ERR_NOT_FOUND;
            goto fail;
        }
        memcpy(row, src, T * D * sizeof *row);
        finish_row(row, T, D, scale, dirs, K, s->data + i * T * K);
        if ((rc = interp_stack_label(s, i, err, "%s", embed_labels[e])) != 0) {
            goto fail;
        }
    }
    /* bias = sum_{l < layer} (b_O[l] + b_out[l] when neurons are expanded) + b_O[layer] with
     * mlp_input, the same vector at every position. */
    double *bias = calloc(D, sizeof *bias);
    if (bias == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "decomposition: out of memory");
        goto fail;
    }
    for (size_t l = 0; l < head_layers; l++) {
        const float *b_O = interp_param(m, (int)l, "attn.b_O", err);
        const float *b_out =
            (int)l < layer && expand_neurons ? interp_param(m, (int)l, "mlp.b_out", err) : NULL;
        if (b_O == NULL || ((int)l < layer && expand_neurons && b_out == NULL)) {
            free(bias);
            rc = COMMON_ERR_NOT_FOUND;
            goto fail;
        }
        for (size_t d = 0; d < D; d++) {
            bias[d] += b_O[d] + (b_out != NULL ? b_out[d] : 0.0f);
        }
    }
    for (size_t t = 0; t < T; t++) {
        for (size_t d = 0; d < D; d++) {
            row[t * D + d] = (float)bias[d];
        }
    }
    free(bias);
    finish_row(row, T, D, scale, dirs, K, s->data + i * T * K);
    if ((rc = interp_stack_label(s, i++, err, "bias")) != 0) {
        goto fail;
    }
    free(row);
    free(proj);
    free(cdirs);
    *out = s;
    return 0;
fail:
    free(row);
    free(proj);
    free(cdirs);
    interp_stack_destroy(&s);
    return rc;
}

int interp_stack_to_logits(const model *m, const interp_stack *stack, interp_stack **out,
                           char *err) {
    const model_config *cfg = model_get_config(m);
    size_t D = (size_t)cfg->d_model, V = (size_t)cfg->d_vocab;
    if (stack->width != D) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "stack @ W_U: stack width %zu is not d_model %zu", stack->width, D);
    }
    const float *W_U = interp_param(m, -1, "unembed.W_U", err); /* [D, V] */
    if (W_U == NULL) {
        return COMMON_ERR_NOT_FOUND;
    }
    interp_stack *s = NULL;
    int rc = interp_stack_alloc(&s, stack->n, stack->T, V, err);
    if (rc != 0) {
        return rc;
    }
    if (stack->n * stack->T > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(stack->n * stack->T), (int)V,
                    (int)D, 1.0f, stack->data, (int)D, W_U, (int)V, 0.0f, s->data, (int)V);
    }
    for (size_t i = 0; i < stack->n && rc == 0; i++) {
        rc = interp_stack_label(s, i, err, "%s", stack->labels[i] ? stack->labels[i] : "");
    }
    if (rc != 0) {
        interp_stack_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

int interp_token_dirs(const model *m, const int32_t *tokens, const int32_t *minus, size_t K,
                      float **out, char *err) {
    const model_config *cfg = model_get_config(m);
    size_t D = (size_t)cfg->d_model, V = (size_t)cfg->d_vocab;
    const float *W_U = interp_param(m, -1, "unembed.W_U", err);
    if (W_U == NULL) {
        return COMMON_ERR_NOT_FOUND;
    }
    for (size_t k = 0; k < K; k++) {
        if (tokens[k] < 0 || (size_t)tokens[k] >= V ||
            (minus != NULL && minus[k] >= 0 && (size_t)minus[k] >= V)) {
            return common_fail(err, COMMON_ERR_INVALID, "token direction %zu: id out of 0..%zu", k,
                               V - 1);
        }
    }
    float *dirs = malloc(D * K * sizeof *dirs + 1); /* [D, K] */
    if (dirs == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "token directions: out of memory");
    }
    for (size_t d = 0; d < D; d++) {
        for (size_t k = 0; k < K; k++) {
            float v = W_U[d * V + (size_t)tokens[k]];
            if (minus != NULL && minus[k] >= 0) {
                v -= W_U[d * V + (size_t)minus[k]];
            }
            dirs[d * K + k] = v;
        }
    }
    *out = dirs;
    return 0;
}

int interp_logit_attrs(const model *m, const interp_acts *a, const interp_stack *stack,
                       const int32_t *tokens, const int32_t *incorrect, float **out, char *err) {
    size_t D = (size_t)a->cfg.d_model, T = stack->T, n = stack->n;
    float *dirs = NULL; /* [D, T]: one direction per position */
    int rc = interp_token_dirs(m, tokens, incorrect, T, &dirs, err);
    if (rc != 0) {
        return rc;
    }
    interp_stack copy = *stack;
    copy.data = malloc(n * T * D * sizeof(float) + 1);
    float *res = malloc(n * T * sizeof *res + 1); /* [n, T] */
    if (copy.data == NULL || res == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "logit_attrs: out of memory");
        goto done;
    }
    memcpy(copy.data, stack->data, n * T * D * sizeof(float));
    rc = interp_apply_ln_to_stack(a, &copy, -1, false, err);
    if (rc != 0) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t t = 0; t < T; t++) {
            const float *x = copy.data + (i * T + t) * D;
            double acc = 0.0;
            for (size_t d = 0; d < D; d++) {
                acc += (double)x[d] * dirs[d * T + t];
            }
            res[i * T + t] = (float)acc;
        }
    }
    *out = res;
    res = NULL;
done:
    free(res);
    free(copy.data);
    free(dirs);
    return rc;
}

int interp_pattern_diff(const interp_acts *clean, const interp_acts *corrupted, int query,
                        float **out, char *err) {
    const model_config *cfg = &clean->cfg;
    size_t L = (size_t)cfg->n_layers, H = (size_t)cfg->n_heads, T = clean->T;
    if (corrupted->T != T) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "pattern diff: games of different lengths (%zu and %zu positions)", T,
                           corrupted->T);
    }
    if (query < 0) {
        query += (int)T;
    }
    if (query < 0 || (size_t)query >= T) {
        return common_fail(err, COMMON_ERR_INVALID, "pattern diff: query position outside 0..%zu",
                           T - 1);
    }
    float *res = malloc(L * H * T * sizeof *res); /* [L, H, T] */
    if (res == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "pattern diff: out of memory");
    }
    for (size_t l = 0; l < L; l++) {
        const float *pc = interp_acts_need(clean, MODEL_HOOK_PATTERN, (int)l, err);
        const float *pr = interp_acts_need(corrupted, MODEL_HOOK_PATTERN, (int)l, err);
        if (pc == NULL || pr == NULL) {
            free(res);
            return COMMON_ERR_NOT_FOUND;
        }
        for (size_t h = 0; h < H; h++) {
            const float *rc = pc + (h * T + (size_t)query) * T;
            const float *rr = pr + (h * T + (size_t)query) * T;
            for (size_t k = 0; k < T; k++) {
                res[(l * H + h) * T + k] = rc[k] - rr[k];
            }
        }
    }
    *out = res;
    return 0;
}

/* w[l, n] = W_out[l][n] . W_U[:, token] into w [L, M]. */
static int neuron_token_weights(const model *m, int32_t token, float *w, char *err) {
    const model_config *cfg = model_get_config(m);
    size_t D = (size_t)cfg->d_model, M = (size_t)cfg->d_mlp, V = (size_t)cfg->d_vocab;
    if (token < 0 || (size_t)token >= V) {
        return common_fail(err, COMMON_ERR_INVALID, "neuron DLA: token id %d outside 0..%zu", token,
                           V - 1);
    }
    const float *W_U = interp_param(m, -1, "unembed.W_U", err);
    if (W_U == NULL) {
        return COMMON_ERR_NOT_FOUND;
    }
    for (int l = 0; l < cfg->n_layers; l++) {
        const float *W_out = interp_param(m, l, "mlp.W_out", err);
        if (W_out == NULL) {
            return COMMON_ERR_NOT_FOUND;
        }
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)M, (int)D, 1.0f, W_out, (int)D, W_U + token,
                    (int)V, 0.0f, w + (size_t)l * M, 1);
    }
    return 0;
}

int interp_neuron_diff_dla(const model *m, const interp_acts *clean, const interp_acts *corrupted,
                           int pos, int32_t token, float **out, char *err) {
    const model_config *cfg = &clean->cfg;
    size_t L = (size_t)cfg->n_layers, M = (size_t)cfg->d_mlp, T = clean->T;
    if (corrupted->T != T) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "neuron diff DLA: games of different lengths (%zu and %zu positions)", T,
                           corrupted->T);
    }
    if (pos < 0) {
        pos += (int)T;
    }
    if (pos < 0 || (size_t)pos >= T) {
        return common_fail(err, COMMON_ERR_INVALID, "neuron diff DLA: position outside 0..%zu",
                           T - 1);
    }
    float *w = malloc(L * M * sizeof *w); /* [L, M] */
    if (w == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "neuron diff DLA: out of memory");
    }
    int rc = neuron_token_weights(m, token, w, err);
    for (size_t l = 0; l < L && rc == 0; l++) {
        const float *pc = interp_acts_need(clean, MODEL_HOOK_MLP_POST, (int)l, err);
        const float *pr = interp_acts_need(corrupted, MODEL_HOOK_MLP_POST, (int)l, err);
        if (pc == NULL || pr == NULL) {
            rc = COMMON_ERR_NOT_FOUND;
            break;
        }
        for (size_t n = 0; n < M; n++) {
            size_t e = (size_t)pos * M + n;
            w[l * M + n] *= pc[e] - pr[e];
        }
    }
    if (rc != 0) {
        free(w);
        return rc;
    }
    *out = w;
    return 0;
}

int interp_neuron_weight_dla_topk(const model *m, int32_t token, size_t k, int *layers,
                                  int *neurons, float *scores, char *err) {
    const model_config *cfg = model_get_config(m);
    size_t LM = (size_t)cfg->n_layers * (size_t)cfg->d_mlp, M = (size_t)cfg->d_mlp;
    if (k == 0 || k > LM) {
        return common_fail(err, COMMON_ERR_INVALID, "neuron DLA top-k: k %zu outside 1..%zu", k,
                           LM);
    }
    float *w = malloc(LM * sizeof *w);
    if (w == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "neuron DLA: out of memory");
    }
    int rc = neuron_token_weights(m, token, w, err);
    if (rc != 0) {
        free(w);
        return rc;
    }
    /* Selection of the k largest by insertion into a sorted list (k is small). Ties keep the
     * lower (layer, neuron) first. */
    size_t have = 0;
    for (size_t i = 0; i < LM; i++) {
        float v = w[i];
        if (have == k && !(v > scores[k - 1])) {
            continue;
        }
        size_t j = have < k ? have++ : k - 1;
        while (j > 0 && v > scores[j - 1]) {
            scores[j] = scores[j - 1];
            layers[j] = layers[j - 1];
            neurons[j] = neurons[j - 1];
            j--;
        }
        scores[j] = v;
        layers[j] = (int)(i / M);
        neurons[j] = (int)(i % M);
    }
    free(w);
    return 0;
}
