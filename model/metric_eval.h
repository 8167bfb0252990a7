/*
 * The arithmetic of model_metric_eval (model.h) as one inline function that both the host and
 * the CUDA backend's row_metrics kernel compile, so that every backend makes the same
 * operations in the same order: only exp and log are each compiler's own. Included by
 * model/metric.c and gpu/backend_cuda.cu, nowhere else.
 */
#ifndef CHESSLENS_MODEL_METRIC_EVAL_H
#define CHESSLENS_MODEL_METRIC_EVAL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

#ifdef __CUDACC__
#define MODEL_METRIC_FN static inline __host__ __device__
#else
#define MODEL_METRIC_FN static inline
#endif

MODEL_METRIC_FN bool model_metric_token_ok(int32_t t, size_t V) {
    return t >= 0 && (size_t)t < V;
}

/* model_metric_eval: NaN for an unknown kind or a token outside 0..V-1; mask is read for
 * MODEL_METRIC_MASS only. */
MODEL_METRIC_FN double model_metric_value(const model_metric *m, const float *x,
                                          const uint8_t *mask, size_t V) {
    bool logprob = m->kind == MODEL_METRIC_LOGPROB;
    switch (m->kind) {
    case MODEL_METRIC_LOGIT:
        return model_metric_token_ok(m->token, V) ? (double)x[m->token] : (double)NAN;
    case MODEL_METRIC_LOGIT_DIFF:
        if (!model_metric_token_ok(m->token, V) || !model_metric_token_ok(m->token2, V)) {
            return (double)NAN;
        }
        return (double)x[m->token] - (double)x[m->token2];
    case MODEL_METRIC_LOGPROB:
    case MODEL_METRIC_MASS:
        if (logprob && !model_metric_token_ok(m->token, V)) {
            return (double)NAN;
        }
        break;
    default:
        return (double)NAN;
    }
    double mx = -INFINITY, z = 0.0, mass = 0.0;
    for (size_t v = 0; v < V; v++) {
        mx = x[v] > mx ? x[v] : mx;
    }
    for (size_t v = 0; v < V; v++) {
        double e = exp((double)x[v] - mx);
        z += e;
        if (!logprob && mask[v]) {
            mass += e;
        }
    }
    return logprob ? (double)x[m->token] - mx - log(z) : mass / z;
}

#endif
