/*
 * test_metric: metrics of rows of logits. model_metric_eval against formulas written out here;
 * the CPU backend's row_metrics (which must give model_metric_eval's values bit for bit, NaN for
 * a spec out of range, and check its ranges); model_cache_metrics on a real forward's logits
 * (the values of the downloaded logits, bit for bit, and its errors).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model_test_util.h"

static char err[COMMON_ERR_LEN];
static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static float frand(void) { /* uniform in [-8, 8) */
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng >> 40) / (double)(1ULL << 24)) * 16.0f - 8.0f;
}

static model_buf *upload_new(model_backend *be, const void *host, size_t n) {
    model_buf *b = NULL;
    assert_int_equal(be->alloc(be, n, &b, err), 0);
    assert_int_equal(be->upload(be, (model_ref){b, 0}, host, n, err), 0);
    return b;
}

static void test_eval_kinds(void **state) {
    (void)state;
    enum { V = 7 };
    const float x[V] = {1.5f, -2.0f, 0.25f, 3.0f, -0.5f, 2.75f, 0.0f};
    const uint8_t mask[V] = {1, 0, 0, 1, 0, 1, 0};
    double z = 0.0, in = 0.0; /* the softmax denominator and the masked numerator, by exp(x) */
    for (int v = 0; v < V; v++) {
        z += exp((double)x[v]);
        in += mask[v] ? exp((double)x[v]) : 0.0;
    }
    model_metric logit = {MODEL_METRIC_LOGIT, 3, 0, 0};
    model_metric diff = {MODEL_METRIC_LOGIT_DIFF, 5, 1, 0};
    model_metric logprob = {MODEL_METRIC_LOGPROB, 2, 0, 0};
    model_metric mass = {MODEL_METRIC_MASS, 0, 0, 0};
    assert_true(model_metric_eval(&logit, x, NULL, V) == 3.0);
    assert_true(model_metric_eval(&diff, x, NULL, V) == 4.75);
    assert_true(fabs(model_metric_eval(&logprob, x, NULL, V) - (0.25 - log(z))) < 1e-14);
    assert_true(fabs(model_metric_eval(&mass, x, mask, V) - in / z) < 1e-15);
    const uint8_t all[V] = {1, 1, 1, 1, 1, 1, 1};
    assert_true(fabs(model_metric_eval(&mass, x, all, V) - 1.0) < 1e-15);

    model_metric bad[] = {{MODEL_METRIC_LOGIT, V, 0, 0},      {MODEL_METRIC_LOGIT, -1, 0, 0},
                          {MODEL_METRIC_LOGIT_DIFF, 0, V, 0}, {MODEL_METRIC_LOGPROB, V + 3, 0, 0},
                          {MODEL_METRIC_MASS + 1, 0, 0, 0},   {-1, 0, 0, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_true(isnan(model_metric_eval(&bad[i], x, mask, V)));
    }
}

/* row_metrics over rows of a wider buffer (x_ld > V), every kind and mask row, plus rows whose
 * spec is out of range, against model_metric_eval on the same floats. */
static void test_row_metrics_op(void **state) {
    (void)state;
    enum { V = 77, LD = 90, ROWS = 40, MASKS = 3 };
    model_backend *be = NULL;
    assert_int_equal(model_backend_cpu_new(&be, 2, err), 0);
    float *x = malloc(ROWS * LD * sizeof *x);
    for (size_t i = 0; i < ROWS * LD; i++) {
        x[i] = frand();
    }
    uint8_t masks[MASKS * V + 3] = {0}; /* padded to whole 4-byte elements */
    for (size_t i = 0; i < MASKS * V; i++) {
        masks[i] = (uint8_t)((i * 7 + i / V) % 3 == 0);
    }
    model_metric spec[ROWS];
    for (int r = 0; r < ROWS; r++) {
        spec[r] = (model_metric){r % 4, (r * 13) % V, (r * 29 + 1) % V, r % MASKS};
    }
    spec[5].token = V;                     /* LOGIT_DIFF's first token out of range */
    spec[11].mask = MASKS;                 /* MASS with a mask row past the masks */
    spec[19].mask = -1;                    /* likewise before them */
    spec[23] = (model_metric){9, 0, 0, 0}; /* no such kind */

    model_buf *bx = upload_new(be, x, ROWS * LD);
    model_buf *bs = upload_new(be, spec, ROWS * MODEL_METRIC_FIELDS);
    model_buf *bm = upload_new(be, masks, (MASKS * V + 3) / 4);
    model_buf *bo = NULL;
    assert_int_equal(be->alloc(be, 2 * ROWS + 2, &bo, err), 0);
    assert_int_equal(be->row_metrics(be, (model_ref){bo, 2}, (model_ref){bx, 0}, LD,
                                     (model_ref){bs, 0}, (model_ref){bm, 0}, MASKS, ROWS, V, err),
                     0);
    double got[ROWS];
    assert_int_equal(be->download(be, got, (model_ref){bo, 2}, 2 * ROWS, err), 0);
    for (int r = 0; r < ROWS; r++) {
        bool bad = r == 5 || r == 11 || r == 19 || r == 23;
        if (bad) {
            assert_true(isnan(got[r]));
            continue;
        }
        const uint8_t *mk = spec[r].kind == MODEL_METRIC_MASS ? masks + spec[r].mask * V : NULL;
        double want = model_metric_eval(&spec[r], x + r * LD, mk, V);
        assert_true(isfinite(want));
        assert_memory_equal(&got[r], &want, sizeof want);
    }

    /* ranges: an odd result offset, results, logits, specs and masks past their buffers */
    model_ref o = {bo, 0}, xr = {bx, 0}, s = {bs, 0}, m = {bm, 0};
    assert_int_equal(be->row_metrics(be, (model_ref){bo, 1}, xr, LD, s, m, MASKS, ROWS, V, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(be->row_metrics(be, (model_ref){bo, 4}, xr, LD, s, m, MASKS, ROWS, V, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(be->row_metrics(be, o, xr, LD + 1, s, m, MASKS, ROWS, V, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(be->row_metrics(be, o, xr, LD, s, m, MASKS, ROWS + 1, V, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(be->row_metrics(be, o, xr, LD, s, m, MASKS + 1, ROWS, V, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(be->row_metrics(be, o, xr, LD, s, m, MASKS, 0, V, err), 0);

    be->free(be, bx);
    be->free(be, bs);
    be->free(be, bm);
    be->free(be, bo);
    model_backend_destroy(&be);
    free(x);
}

typedef struct fixture {
    model *m;
    model_backend *cpu;
    model_session *s;
    model_cache *c; /* B rows of T positions with logits and resid_pre of layer 0 */
    size_t V;
} fixture;

enum { B = 5, T = 9 };

static int setup(void **state) {
    static char dir[1024];
    fixture *f = calloc(1, sizeof *f);
    if (!f || test_random_model(dir, sizeof dir, "metric", 2, 32, 4, 16, 77, 3, MODEL_DTYPE_F32) ||
        model_load(&f->m, dir, NULL, err) || model_backend_cpu_new(&f->cpu, 2, err) ||
        model_session_new(&f->s, f->m, f->cpu, err)) {
        return -1;
    }
    int32_t tokens[B * T];
    for (size_t i = 0; i < B * T; i++) {
        tokens[i] = (int32_t)((i * 31 + 7) % 77);
    }
    model_hook pre = {MODEL_HOOK_RESID_PRE, 0};
    model_request req;
    model_request_init(&req, f->s, tokens, B, T);
    req.hooks = &pre;
    req.n_hooks = 1;
    if (model_run(f->s, &req, &f->c, err) != 0) {
        return -1;
    }
    f->V = (size_t)model_get_config(f->m)->d_vocab;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    model_cache_destroy(&f->c);
    model_session_destroy(&f->s);
    model_backend_destroy(&f->cpu);
    model_destroy(&f->m);
    free(f);
    return 0;
}

/* Every position's metrics equal model_metric_eval on the downloaded logits, bit for bit. */
static void test_cache_metrics(void **state) {
    fixture *f = *state;
    size_t V = f->V;
    model_hook lh = {MODEL_HOOK_LOGITS, -1};
    uint8_t masks[2 * 77];
    for (size_t i = 0; i < 2 * V; i++) {
        masks[i] = (uint8_t)(i % 5 < 2);
    }
    model_buf *bm = NULL;
    assert_int_equal(model_metric_masks_upload(f->cpu, masks, 2, V, &bm, err), 0);
    float logits[B * 77];
    model_metric spec[B];
    for (int r = 0; r < B; r++) {
        spec[r] = (model_metric){r % 4, r * 11, r * 3 + 2, r % 2};
    }
    for (size_t pos = 0; pos < T; pos++) {
        double got[B];
        assert_int_equal(model_cache_metrics(f->c, lh, pos, spec, bm, 2, got, err), 0);
        assert_int_equal(model_cache_download_position(f->c, lh, pos, logits, B * V, err), 0);
        for (int r = 0; r < B; r++) {
            const uint8_t *mk = spec[r].kind == MODEL_METRIC_MASS ? masks + spec[r].mask * V : NULL;
            double want = model_metric_eval(&spec[r], logits + r * V, mk, V);
            assert_true(isfinite(want));
            assert_memory_equal(&got[r], &want, sizeof want);
        }
    }
    f->cpu->free(f->cpu, bm);
}

static void test_cache_metrics_errors(void **state) {
    fixture *f = *state;
    model_hook lh = {MODEL_HOOK_LOGITS, -1};
    model_metric spec[B];
    for (int r = 0; r < B; r++) {
        spec[r] = (model_metric){MODEL_METRIC_LOGIT, r, 0, 0};
    }
    double out[B];
    /* a hook the cache does not hold; one that is not [B, T, V]; a position past T */
    model_hook absent = {MODEL_HOOK_RESID_POST, 1};
    assert_int_equal(model_cache_metrics(f->c, absent, 0, spec, NULL, 0, out, err),
                     COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "holds no"));
    model_hook pattern = {MODEL_HOOK_PATTERN, 0};
    model_cache *pc = NULL;
    int32_t tokens[B * T] = {0};
    model_request req;
    model_request_init(&req, f->s, tokens, B, T);
    req.hooks = &pattern;
    req.n_hooks = 1;
    assert_int_equal(model_run(f->s, &req, &pc, err), 0);
    assert_int_equal(model_cache_metrics(pc, pattern, 0, spec, NULL, 0, out, err),
                     COMMON_ERR_INVALID);
    model_cache_destroy(&pc);
    assert_int_equal(model_cache_metrics(f->c, lh, T, spec, NULL, 0, out, err), COMMON_ERR_INVALID);
    /* a token past the vocabulary, a MASS metric with no masks, masks without a count */
    spec[3].token = (int32_t)f->V;
    assert_int_equal(model_cache_metrics(f->c, lh, 0, spec, NULL, 0, out, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "row 3"));
    spec[3] = (model_metric){MODEL_METRIC_MASS, 0, 0, 0};
    assert_int_equal(model_cache_metrics(f->c, lh, 0, spec, NULL, 0, out, err), COMMON_ERR_INVALID);
    uint8_t mask[77] = {1};
    model_buf *bm = NULL;
    assert_int_equal(model_metric_masks_upload(f->cpu, mask, 1, f->V, &bm, err), 0);
    assert_int_equal(model_cache_metrics(f->c, lh, 0, spec, bm, 0, out, err), COMMON_ERR_INVALID);
    assert_int_equal(model_cache_metrics(f->c, lh, 0, spec, bm, 1, out, err), 0);
    f->cpu->free(f->cpu, bm);
    assert_int_equal(model_metric_masks_upload(f->cpu, mask, 0, f->V, &bm, err),
                     COMMON_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_eval_kinds),
        cmocka_unit_test(test_row_metrics_op),
        cmocka_unit_test_setup_teardown(test_cache_metrics, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_metrics_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
