/*
 * Helpers shared by the model tests: tensor comparisons with the tolerances the golden
 * contract states, and building small random models in the test's scratch directory.
 */
#ifndef CHESSLENS_MODEL_TEST_UTIL_H
#define CHESSLENS_MODEL_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/model.h"

/* ||a - b|| / ||b|| over finite entries of b (NaN-safe: a non-finite a counts as huge). */
static inline double test_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(b[i])) {
            continue;
        }
        double d = isfinite(a[i]) ? (double)a[i] - (double)b[i] : 1e30;
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static inline double test_max_abs(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(b[i]) && !isfinite(a[i]) && (a[i] == b[i])) {
            continue;
        }
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) {
            m = d;
        }
    }
    return m;
}

/* Scratch directory for this test executable. */
static inline const char *test_tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d ? d : "/tmp";
}

/* Writes a random model with the given shape under the scratch dir and returns its path in
 * buf. */
static inline int test_random_model(char *buf, size_t cap, const char *name, int layers, int d,
                                    int heads, int ctx, int vocab, uint64_t seed, model_dtype dt) {
    model_config c = {0};
    c.n_layers = layers;
    c.d_model = d;
    c.n_heads = heads;
    c.n_ctx = ctx;
    c.d_vocab = vocab;
    snprintf(buf, cap, "%s/%s", test_tmpdir(), name);
    char err[COMMON_ERR_LEN];
    int rc = model_write_random(buf, &c, seed, dt, err);
    if (rc) {
        fprintf(stderr, "model_write_random: %s\n", err);
    }
    return rc;
}

#endif
