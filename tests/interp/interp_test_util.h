/*
 * Helpers shared by the interp tests: a scratch directory, a random-weight model written and
 * loaded there with a CPU session, random games as token arrays, and tolerance checks that
 * report the worst element. Header-only (static functions) so each test stays one file.
 */
#ifndef CHESSLENS_INTERP_TEST_UTIL_H
#define CHESSLENS_INTERP_TEST_UTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chess/chess.h"
#include "interp/interp.h"

typedef struct fixture {
    model *m;
    model_backend *be;
    model_session *s;
} fixture;

static inline const char *test_tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

/* Loads dir with TL's default processing on a 1-thread CPU backend; fails the test otherwise. */
static inline int fixture_load(fixture *f, const char *dir, char *err) {
    memset(f, 0, sizeof *f);
    int rc = model_load(&f->m, dir, NULL, err);
    if (rc == 0) {
        rc = model_backend_cpu_new(&f->be, 1, err);
    }
    if (rc == 0) {
        rc = model_session_new(&f->s, f->m, f->be, err);
    }
    return rc;
}

static inline void fixture_free(fixture *f) {
    model_session_destroy(&f->s);
    model_backend_destroy(&f->be);
    model_destroy(&f->m);
}

/* Writes a random model of the given shape under the scratch dir and loads it. */
static inline int fixture_random(fixture *f, const char *name, int L, int D, int H, int ctx, int V,
                                 uint64_t seed, char *err) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), name);
    model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = L;
    cfg.d_model = D;
    cfg.n_heads = H;
    cfg.d_head = D / H;
    cfg.d_mlp = 4 * D;
    cfg.n_ctx = ctx;
    cfg.n_positions = ctx;
    cfg.d_vocab = V;
    cfg.eps = 1e-5f;
    cfg.attn_scale = sqrtf((float)(D / H));
    int rc = model_write_random(dir, &cfg, seed, MODEL_DTYPE_F32, err);
    return rc != 0 ? rc : fixture_load(f, dir, err);
}

/* A random legal game of at most max_tokens tokens as UCI text (caller frees). */
static inline char *random_game_uci(uint64_t seed, size_t max_tokens) {
    chess_game *g = NULL;
    char *uci = NULL;
    if (chess_random_game(&g, seed, max_tokens, NULL) != 0) {
        return NULL;
    }
    if (chess_game_to_uci(g, &uci, NULL) != 0) {
        uci = NULL;
    }
    chess_game_destroy(&g);
    return uci;
}

/* Max |a - b| over n elements; NaN when any element is NaN in one but not the other. */
static inline double max_abs_diff(const float *a, const float *b, size_t n, size_t *where) {
    double worst = 0.0;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i]) != isnan(b[i])) {
            if (where) {
                *where = i;
            }
            return NAN;
        }
        if (isnan(a[i])) {
            continue;
        }
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > worst || isinf(d)) {
            worst = d;
            w = i;
        }
    }
    if (where) {
        *where = w;
    }
    return worst;
}

#endif
