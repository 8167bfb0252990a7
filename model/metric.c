/*
 * Metrics of rows of logits (model.h): model_metric_eval (its arithmetic is metric_eval.h's,
 * shared with the CUDA kernel), the masks' upload, and the cache-level call that evaluates one
 * position of every row on the device so that only one double per row comes back.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/forward_int.h"
#include "model/metric_eval.h"

_Static_assert(sizeof(model_metric) == MODEL_METRIC_FIELDS * sizeof(int32_t),
               "a model_metric is one row of row_metrics' spec table");

double model_metric_eval(const model_metric *m, const float *x, const uint8_t *mask, size_t V) {
    return model_metric_value(m, x, mask, V);
}

int model_metric_masks_upload(model_backend *be, const uint8_t *masks, size_t n_masks, size_t V,
                              model_buf **out, char *err) {
    if (n_masks == 0 || V == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "metric masks: %zu masks of %zu tokens",
                           n_masks, V);
    }
    /* Buffers hold 4-byte elements: the bytes go up padded to a whole element. */
    size_t n = (n_masks * V + 3) / 4;
    uint8_t *padded = calloc(n, 4);
    if (padded == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "metric masks: out of memory");
    }
    memcpy(padded, masks, n_masks * V);
    model_buf *b = NULL;
    int rc = be->alloc(be, n, &b, err);
    if (rc == 0) {
        rc = be->upload(be, (model_ref){b, 0}, padded, n, err);
    }
    free(padded);
    if (rc != 0 && b != NULL) {
        be->free(be, b);
        b = NULL;
    }
    *out = b;
    return rc;
}

/* INVALID naming row r unless its spec can be evaluated: the kind exists, its tokens are
 * below V and a MASS metric's mask row is below n_masks. */
static int check_spec(const model_metric *m, size_t r, size_t V, size_t n_masks, char *err) {
    bool ok = false;
    switch (m->kind) {
    case MODEL_METRIC_LOGIT:
    case MODEL_METRIC_LOGPROB:
        ok = model_metric_token_ok(m->token, V);
        break;
    case MODEL_METRIC_LOGIT_DIFF:
        ok = model_metric_token_ok(m->token, V) && model_metric_token_ok(m->token2, V);
        break;
    case MODEL_METRIC_MASS:
        ok = m->mask >= 0 && (size_t)m->mask < n_masks;
        break;
    default:
        break;
    }
    if (!ok) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "cache metrics: row %zu: metric kind %d, tokens %d, %d, mask %d "
                           "(vocabulary %zu, %zu masks)",
                           r, (int)m->kind, (int)m->token, (int)m->token2, (int)m->mask, V,
                           n_masks);
    }
    return 0;
}

int model_cache_metrics(const model_cache *c, model_hook h, size_t pos, const model_metric *specs,
                        model_buf *masks, size_t n_masks, double *out, char *err) {
    model_buf *b = model_cache_buf(c, h);
    model_shape s = model_hook_shape(c->cfg, h, c->B, c->T);
    char name[96];
    if (b == NULL) {
        return common_fail(err, COMMON_ERR_NOT_FOUND, "cache metrics: the cache holds no '%s'",
                           model_hook_name(h, name, sizeof name));
    }
    if (s.ndim != 3 || pos >= s.dims[1]) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "cache metrics: '%s' is not [B, T, V] or has no position %zu",
                           model_hook_name(h, name, sizeof name), pos);
    }
    if ((masks == NULL) != (n_masks == 0)) {
        return common_fail(err, COMMON_ERR_INVALID, "cache metrics: %zu masks in %s buffer",
                           n_masks, masks == NULL ? "no" : "a");
    }
    size_t B = s.dims[0], T = s.dims[1], V = s.dims[2];
    for (size_t r = 0; r < B; r++) {
        int rc = check_spec(&specs[r], r, V, n_masks, err);
        if (rc != 0) {
            return rc;
        }
    }
    if (B == 0) {
        return 0;
    }
    model_backend *be = c->be;
    /* One buffer: the results (2 elements each, at offset 0, even) then the spec table. */
    model_buf *tmp = NULL;
    int rc = be->alloc(be, B * (2 + MODEL_METRIC_FIELDS), &tmp, err);
    if (rc == 0) {
        rc = be->upload(be, (model_ref){tmp, 2 * B}, specs, B * MODEL_METRIC_FIELDS, err);
    }
    if (rc == 0) {
        rc = be->row_metrics(be, (model_ref){tmp, 0}, (model_ref){b, pos * V}, T * V,
                             (model_ref){tmp, 2 * B}, (model_ref){masks, 0}, n_masks, B, V, err);
    }
    if (rc == 0) {
        rc = be->download(be, out, (model_ref){tmp, 0}, 2 * B, err);
    }
    if (tmp != NULL) {
        be->free(be, tmp);
    }
    return rc;
}
