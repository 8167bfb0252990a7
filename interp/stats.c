/*
 * Aggregates over games: predictions per position, legal-move statistics of component logit
 * contributions, and neuron means by position group. The aggregates are partials (sums in
 * double, counts, minima and maxima) so that shards computed by different workers, in any
 * grouping, merge into the partial of all their games.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "interp/interp_int.h"

/* ---- predictions ---- */

void interp_predictions_destroy(interp_predictions **p) {
    if (p == NULL || *p == NULL) {
        return;
    }
    free((*p)->logprobs);
    free((*p)->top_ids);
    free((*p)->top_logprobs);
    free((*p)->legal_mass);
    free((*p)->top1_legal);
    free(*p);
    *p = NULL;
}

int interp_predictions_new(interp_predictions **out, const float *logits, size_t T, size_t V,
                           const uint8_t *legal, size_t k, char *err) {
    if (k == 0 || k > V || T == 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "predictions: top-k %zu outside 1..%zu or no positions", k, V);
    }
    interp_predictions *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "predictions: out of memory");
    }
    p->T = T;
    p->V = V;
    p->k = k;
    p->logprobs = malloc(T * V * sizeof *p->logprobs);
    p->top_ids = malloc(T * k * sizeof *p->top_ids);
    p->top_logprobs = malloc(T * k * sizeof *p->top_logprobs);
    p->legal_mass = malloc(T * sizeof *p->legal_mass);
    p->top1_legal = malloc(T);
    if (p->logprobs == NULL || p->top_ids == NULL || p->top_logprobs == NULL ||
        p->legal_mass == NULL || p->top1_legal == NULL) {
        interp_predictions_destroy(&p);
        return common_fail(err, COMMON_ERR_NOMEM, "predictions: out of memory");
    }
    for (size_t t = 0; t < T; t++) {
        const float *x = logits + t * V;
        float *lp = p->logprobs + t * V;
        double mx = -INFINITY, z = 0.0, mass = 0.0;
        for (size_t v = 0; v < V; v++) {
            mx = x[v] > mx ? x[v] : mx;
        }
        for (size_t v = 0; v < V; v++) {
            z += exp((double)x[v] - mx);
        }
        double lz = mx + log(z);
        for (size_t v = 0; v < V; v++) {
            lp[v] = (float)((double)x[v] - lz);
            if (legal != NULL && legal[t * V + v]) {
                mass += exp((double)x[v] - lz);
            }
        }
        p->legal_mass[t] = legal != NULL ? (float)mass : NAN;
        /* top-k by insertion, ties to the lower id */
        int32_t *ids = p->top_ids + t * k;
        float *vals = p->top_logprobs + t * k;
        size_t have = 0;
        for (size_t v = 0; v < V; v++) {
            if (have == k && !(lp[v] > vals[k - 1])) {
                continue;
            }
            size_t j = have < k ? have++ : k - 1;
            while (j > 0 && lp[v] > vals[j - 1]) {
                vals[j] = vals[j - 1];
                ids[j] = ids[j - 1];
                j--;
            }
            vals[j] = lp[v];
            ids[j] = (int32_t)v;
        }
        p->top1_legal[t] = legal != NULL && legal[t * V + (size_t)ids[0]] ? 1 : 0;
    }
    *out = p;
    return 0;
}

/* ---- legal-move statistics ---- */

void interp_legal_stats_destroy(interp_legal_stats **p) {
    if (p == NULL || *p == NULL) {
        return;
    }
    interp_legal_stats *s = *p;
    if (s->labels != NULL) {
        for (size_t i = 0; i < s->n_comp; i++) {
            free(s->labels[i]);
        }
    }
    free(s->labels);
    free(s->count);
    free(s->sum);
    free(s->min);
    free(s->max);
    free(s);
    *p = NULL;
}

int interp_legal_stats_new(interp_legal_stats **out, size_t n_comp, const char *const *labels,
                           size_t T, char *err) {
    if (n_comp == 0 || T == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "legal stats: no components or positions");
    }
    interp_legal_stats *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "legal stats: out of memory");
    }
    size_t cells = n_comp * T, all = INTERP_LEGAL_N_STATS * cells;
    s->n_comp = n_comp;
    s->T = T;
    s->labels = calloc(n_comp, sizeof *s->labels);
    s->count = calloc(cells, sizeof *s->count);
    s->sum = calloc(all, sizeof *s->sum);
    s->min = malloc(all * sizeof *s->min);
    s->max = malloc(all * sizeof *s->max);
    if (s->labels == NULL || s->count == NULL || s->sum == NULL || s->min == NULL ||
        s->max == NULL) {
        interp_legal_stats_destroy(&s);
        return common_fail(err, COMMON_ERR_NOMEM, "legal stats: out of memory");
    }
    for (size_t i = 0; i < all; i++) {
        s->min[i] = INFINITY;
        s->max[i] = -INFINITY;
    }
    for (size_t i = 0; i < n_comp; i++) {
        char buf[32];
        const char *l = labels != NULL ? labels[i] : NULL;
        if (l == NULL) {
            snprintf(buf, sizeof buf, "c%zu", i);
            l = buf;
        }
        s->labels[i] = malloc(strlen(l) + 1);
        if (s->labels[i] == NULL) {
            interp_legal_stats_destroy(&s);
            return common_fail(err, COMMON_ERR_NOMEM, "legal stats: out of memory");
        }
        strcpy(s->labels[i], l);
    }
    *out = s;
    return 0;
}

int interp_legal_stats_add(interp_legal_stats *s, const interp_stack *st, const uint8_t *legal,
                           char *err) {
    if (st->n != s->n_comp || st->T > s->T) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "legal stats: stack of %zu components x %zu positions does not fit "
                           "%zu x %zu",
                           st->n, st->T, s->n_comp, s->T);
    }
    size_t V = st->width, cells = s->n_comp * s->T;
    for (size_t t = 0; t < st->T; t++) {
        size_t n_legal = 0;
        for (size_t v = 0; v < V; v++) {
            n_legal += legal[t * V + v] != 0;
        }
        if (n_legal == 0 || n_legal == V) {
            continue; /* no legal or no illegal token to compare */
        }
        for (size_t c = 0; c < s->n_comp; c++) {
            const float *x = st->data + (c * st->T + t) * V;
            float mn_l = INFINITY, mx_i = -INFINITY;
            double sum_l = 0.0, sum_i = 0.0;
            for (size_t v = 0; v < V; v++) {
                if (legal[t * V + v]) {
                    mn_l = x[v] < mn_l ? x[v] : mn_l;
                    sum_l += x[v];
                } else {
                    mx_i = x[v] > mx_i ? x[v] : mx_i;
                    sum_i += x[v];
                }
            }
            double mean_l = sum_l / (double)n_legal, mean_i = sum_i / (double)(V - n_legal);
            double v6[INTERP_LEGAL_N_STATS] = {
                mn_l, mx_i, mean_l, mean_i, mn_l - (double)mx_i, mean_l - mean_i};
            size_t cell = c * s->T + t;
            s->count[cell]++;
            for (int k = 0; k < INTERP_LEGAL_N_STATS; k++) {
                size_t e = (size_t)k * cells + cell;
                float f = (float)v6[k];
                s->sum[e] += v6[k];
                s->min[e] = f < s->min[e] ? f : s->min[e];
                s->max[e] = f > s->max[e] ? f : s->max[e];
            }
        }
    }
    return 0;
}

int interp_legal_stats_merge(interp_legal_stats *dst, const interp_legal_stats *src, char *err) {
    if (dst->n_comp != src->n_comp || dst->T != src->T) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "legal stats merge: %zu x %zu partials cannot take %zu x %zu",
                           dst->n_comp, dst->T, src->n_comp, src->T);
    }
    size_t cells = dst->n_comp * dst->T;
    for (size_t i = 0; i < cells; i++) {
        dst->count[i] += src->count[i];
    }
    for (size_t i = 0; i < INTERP_LEGAL_N_STATS * cells; i++) {
        dst->sum[i] += src->sum[i];
        dst->min[i] = src->min[i] < dst->min[i] ? src->min[i] : dst->min[i];
        dst->max[i] = src->max[i] > dst->max[i] ? src->max[i] : dst->max[i];
    }
    return 0;
}

void interp_legal_stats_mean(const interp_legal_stats *s, int stat, float *out) {
    size_t cells = s->n_comp * s->T;
    for (size_t i = 0; i < cells; i++) {
        out[i] =
            s->count[i] ? (float)(s->sum[(size_t)stat * cells + i] / (double)s->count[i]) : NAN;
    }
}

/* ---- neuron statistics ---- */

void interp_neuron_stats_destroy(interp_neuron_stats **p) {
    if (p == NULL || *p == NULL) {
        return;
    }
    free((*p)->sum);
    free(*p);
    *p = NULL;
}

int interp_neuron_stats_new(interp_neuron_stats **out, const model_config *cfg, long slice_begin,
                            long slice_end, char *err) {
    interp_neuron_stats *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "neuron stats: out of memory");
    }
    s->L = (size_t)cfg->n_layers;
    s->M = (size_t)cfg->d_mlp;
    s->slice_begin = slice_begin;
    s->slice_end = slice_end;
    s->sum = calloc(INTERP_NEURON_N_GROUPS * s->L * s->M, sizeof *s->sum);
    if (s->sum == NULL) {
        interp_neuron_stats_destroy(&s);
        return common_fail(err, COMMON_ERR_NOMEM, "neuron stats: out of memory");
    }
    *out = s;
    return 0;
}

/* Python's clamp of a slice bound against length T. */
static size_t slice_bound(long b, size_t T) {
    if (b < 0) {
        b += (long)T;
        return b < 0 ? 0 : (size_t)b;
    }
    return (size_t)b > T ? T : (size_t)b;
}

int interp_neuron_stats_add(interp_neuron_stats *s, const interp_acts *a, const uint8_t *phases,
                            char *err) {
    if ((size_t)a->cfg.n_layers != s->L || (size_t)a->cfg.d_mlp != s->M) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "neuron stats: activations of another model shape");
    }
    size_t T = a->T, LM = s->L * s->M;
    size_t b = slice_bound(s->slice_begin, T), e = slice_bound(s->slice_end, T);
    for (size_t l = 0; l < s->L; l++) {
        if (interp_acts_need(a, MODEL_HOOK_MLP_POST, (int)l, err) == NULL) {
            return COMMON_ERR_NOT_FOUND;
        }
    }
    for (size_t t = 0; t < T; t++) {
        int groups[3];
        int ng = 0;
        groups[ng++] = INTERP_NEURON_ALL;
        if (t >= b && t < e) {
            groups[ng++] = INTERP_NEURON_SLICE;
        }
        if (phases != NULL && phases[t] >= CHESS_PHASE_WHITE_FROM &&
            phases[t] <= CHESS_PHASE_BLACK_TO) {
            groups[ng++] = INTERP_NEURON_WHITE_FROM + (phases[t] - CHESS_PHASE_WHITE_FROM);
        }
        for (int g = 0; g < ng; g++) {
            s->count[groups[g]]++;
        }
        for (size_t l = 0; l < s->L; l++) {
            const float *post = interp_acts_get(a, (model_hook){MODEL_HOOK_MLP_POST, (int)l}, NULL);
            const float *row = post + t * s->M;
            for (int g = 0; g < ng; g++) {
                double *dst = s->sum + (size_t)groups[g] * LM + l * s->M;
                for (size_t n = 0; n < s->M; n++) {
                    dst[n] += row[n];
                }
            }
        }
    }
    return 0;
}

int interp_neuron_stats_merge(interp_neuron_stats *dst, const interp_neuron_stats *src, char *err) {
    if (dst->L != src->L || dst->M != src->M || dst->slice_begin != src->slice_begin ||
        dst->slice_end != src->slice_end) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "neuron stats merge: partials of different shapes or slices");
    }
    for (int g = 0; g < INTERP_NEURON_N_GROUPS; g++) {
        dst->count[g] += src->count[g];
    }
    for (size_t i = 0; i < INTERP_NEURON_N_GROUPS * dst->L * dst->M; i++) {
        dst->sum[i] += src->sum[i];
    }
    return 0;
}

void interp_neuron_stats_mean(const interp_neuron_stats *s, int group, float *out) {
    size_t LM = s->L * s->M;
    for (size_t i = 0; i < LM; i++) {
        out[i] = s->count[group] ? (float)(s->sum[(size_t)group * LM + i] / (double)s->count[group])
                                 : NAN;
    }
}
