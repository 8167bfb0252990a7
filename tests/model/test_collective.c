/*
 * test_collective: the operations a worker with several devices builds on, on the CPU backend:
 * sum_rows (column sums of masked rows in double, which must equal a plain host loop bit for
 * bit, since the executor's neuron statistics rely on that to match interp's), the host
 * collective's broadcast and double reduction over three backends, and sessions of one model
 * on three backends whose weights reach ranks 1 and 2 by broadcast (every run on them gives the
 * rank 0 numbers exactly).
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

#define RANKS 3

static char err[COMMON_ERR_LEN];
static uint64_t rng = 0x2545f4914f6cdd1dULL;

static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng >> 40) / (double)(1ULL << 24)) * 2.0f - 1.0f;
}

static model_buf *upload_new(model_backend *be, const void *host, size_t n) {
    model_buf *b = NULL;
    assert_int_equal(be->alloc(be, n, &b, err), 0);
    assert_int_equal(be->upload(be, (model_ref){b, 0}, host, n, err), 0);
    return b;
}

/* The loop sum_rows promises to equal: rows in increasing order, one double addition each. */
static void reference(double *acc, size_t acc_ld, const float *x, size_t x_ld, const int32_t *mask,
                      size_t rows, size_t cols, size_t groups) {
    for (size_t r = 0; r < rows; r++) {
        for (size_t g = 0; g < groups; g++) {
            if ((uint32_t)mask[r] & (1u << g)) {
                for (size_t c = 0; c < cols; c++) {
                    acc[g * acc_ld + c] += x[r * x_ld + c];
                }
            }
        }
    }
}

static void sum_rows_case(int threads, size_t rows, size_t cols, size_t x_ld, size_t groups,
                          size_t acc_ld, size_t calls) {
    model_backend *be = NULL;
    assert_int_equal(model_backend_cpu_new(&be, threads, err), 0);
    size_t nx = rows * x_ld, nacc = groups * acc_ld; /* doubles */
    float *x = malloc(nx * sizeof *x);
    int32_t *mask = malloc(rows * sizeof *mask);
    double *want = calloc(nacc + 1, sizeof *want), *got = calloc(nacc + 1, sizeof *got);
    assert_true(x != NULL && mask != NULL && want != NULL && got != NULL);
    /* values of very different magnitudes, so that the order of the additions shows */
    for (size_t i = 0; i < nx; i++) {
        x[i] = frand() * (i % 7 == 0 ? 1e6f : 1.0f);
    }
    for (size_t r = 0; r < rows; r++) {
        mask[r] = (int32_t)((r * 2654435761u) & ((1u << groups) - 1));
    }
    /* the accumulator starts one double into its buffer: offsets count elements, 2 per double */
    model_buf *bx = upload_new(be, x, nx), *bm = upload_new(be, mask, rows), *ba = NULL;
    assert_int_equal(be->alloc(be, 2 * (nacc + 1), &ba, err), 0);
    assert_int_equal(be->fill(be, (model_ref){ba, 0}, 2 * (nacc + 1), 0.0f, err), 0);
    for (size_t k = 0; k < calls; k++) { /* accumulates across calls, as across batches */
        assert_int_equal(be->sum_rows(be, (model_ref){ba, 2}, acc_ld, (model_ref){bx, 0}, x_ld,
                                      (model_ref){bm, 0}, rows, cols, groups, err),
                         0);
        reference(want + 1, acc_ld, x, x_ld, mask, rows, cols, groups);
    }
    assert_int_equal(be->download(be, got, (model_ref){ba, 0}, 2 * (nacc + 1), err), 0);
    for (size_t i = 0; i < nacc + 1; i++) {
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0) {
            fail_msg("sum_rows rows=%zu cols=%zu groups=%zu threads=%d: double %zu is %.17g, the "
                     "host loop gives %.17g",
                     rows, cols, groups, threads, i, got[i], want[i]);
        }
    }
    be->free(be, bx);
    be->free(be, bm);
    be->free(be, ba);
    model_backend_destroy(&be);
    free(x);
    free(mask);
    free(want);
    free(got);
}

static void test_sum_rows(void **state) {
    (void)state;
    sum_rows_case(1, 37, 19, 23, 6, 20, 2);
    sum_rows_case(2, 127, 3072, 3072, 6, 3072, 3); /* a full-size MLP layer, threads split */
    sum_rows_case(2, 1, 1, 1, 1, 1, 1);
    sum_rows_case(2, 300, 5, 5, 31, 5, 1); /* every group bit */
}

static void test_sum_rows_refusals(void **state) {
    (void)state;
    model_backend *be = NULL;
    assert_int_equal(model_backend_cpu_new(&be, 1, err), 0);
    model_buf *b = NULL;
    assert_int_equal(be->alloc(be, 64, &b, err), 0);
    model_ref r = {b, 0};
    /* an odd offset cannot hold a double; 32 groups do not fit an int32's non-sign bits */
    assert_int_equal(be->sum_rows(be, (model_ref){b, 1}, 2, r, 2, r, 2, 2, 1, err),
                     COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "sum_rows"));
    assert_int_equal(be->sum_rows(be, r, 2, r, 2, r, 2, 2, 32, err), COMMON_ERR_INVALID);
    /* 2 groups x 16 doubles = 64 elements fit; a row stride of 17 doubles does not */
    assert_int_equal(be->sum_rows(be, r, 17, r, 1, r, 4, 16, 2, err), COMMON_ERR_INVALID);
    assert_int_equal(be->sum_rows(be, r, 16, r, 40, r, 2, 30, 1, err), COMMON_ERR_INVALID);
    assert_int_equal(be->sum_rows(be, r, 16, r, 1, (model_ref){b, 60}, 5, 1, 1, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(be->sum_rows(be, r, 16, r, 1, r, 0, 16, 2, err), 0); /* nothing to do */
    be->free(be, b);
    model_backend_destroy(&be);
}

static void new_ranks(model_backend **bes) {
    for (size_t r = 0; r < RANKS; r++) {
        assert_int_equal(model_backend_cpu_new(&bes[r], 1, err), 0);
    }
}

static void free_ranks(model_backend **bes) {
    for (size_t r = 0; r < RANKS; r++) {
        model_backend_destroy(&bes[r]);
    }
}

static void test_host_collective(void **state) {
    (void)state;
    model_backend *bes[RANKS];
    new_ranks(bes);
    model_collective *c = NULL;
    assert_int_equal(model_collective_host_new(&c, bes, 0, err), COMMON_ERR_INVALID);
    assert_int_equal(model_collective_host_new(&c, bes, RANKS, err), 0);
    assert_int_equal(c->n_ranks, RANKS);
    enum { N = 1001 };
    float src[N], got[N];
    double part[RANKS][N], sum[N];
    for (size_t i = 0; i < N; i++) {
        src[i] = frand();
        sum[i] = 0.0;
    }
    model_buf *f[RANKS], *d[RANKS];
    model_ref fr[RANKS], dr[RANKS];
    for (size_t r = 0; r < RANKS; r++) {
        float zeros[N] = {0};
        for (size_t i = 0; i < N; i++) {
            part[r][i] = (double)frand() * 1e10 + (double)r;
            sum[i] += part[r][i]; /* rank order, as the host collective adds */
        }
        f[r] = upload_new(bes[r], r == 1 ? src : zeros, N);
        d[r] = upload_new(bes[r], part[r], 2 * N);
        fr[r] = (model_ref){f[r], 0};
        dr[r] = (model_ref){d[r], 0};
    }
    /* broadcast from rank 1 */
    assert_int_equal(c->broadcast(c, fr, N, 1, err), 0);
    for (size_t r = 0; r < RANKS; r++) {
        assert_int_equal(bes[r]->download(bes[r], got, fr[r], N, err), 0);
        assert_memory_equal(got, src, sizeof src);
    }
    /* sum into rank 2 */
    double out[N];
    assert_int_equal(c->reduce_sum_f64(c, dr, N, 2, err), 0);
    assert_int_equal(bes[2]->download(bes[2], out, dr[2], 2 * N, err), 0);
    assert_memory_equal(out, sum, sizeof sum);
    /* refusals: a root outside the group, a missing buffer, doubles at an odd offset */
    assert_int_equal(c->broadcast(c, fr, N, RANKS, err), COMMON_ERR_INVALID);
    model_ref none[RANKS] = {fr[0], {NULL, 0}, fr[2]};
    assert_int_equal(c->broadcast(c, none, N, 0, err), COMMON_ERR_INVALID);
    model_ref odd[RANKS] = {dr[0], {d[1], 1}, dr[2]};
    assert_int_equal(c->reduce_sum_f64(c, odd, 4, 0, err), COMMON_ERR_INVALID);
    /* a range outside a rank's buffer is that backend's refusal */
    assert_int_equal(c->broadcast(c, fr, N + 1, 0, err), COMMON_ERR_INVALID);
    for (size_t r = 0; r < RANKS; r++) {
        bes[r]->free(bes[r], f[r]);
        bes[r]->free(bes[r], d[r]);
    }
    model_collective_destroy(&c);
    assert_null(c);
    model_collective_destroy(NULL);
    free_ranks(bes);
}

static void test_session_group(void **state) {
    (void)state;
    char dir[512];
    const char *tmp = getenv("CHESSLENS_TEST_TMPDIR");
    snprintf(dir, sizeof dir, "%s/collective-model", tmp != NULL ? tmp : "/tmp");
    model_config cfg = {.n_layers = 2,
                        .d_model = 32,
                        .n_heads = 4,
                        .d_head = 8,
                        .d_mlp = 128,
                        .n_ctx = 16,
                        .n_positions = 16,
                        .d_vocab = 77,
                        .eps = 1e-5f,
                        .attn_scale = sqrtf(8.0f)};
    model *m = NULL;
    assert_int_equal(model_write_random(dir, &cfg, 5, MODEL_DTYPE_F32, err), 0);
    assert_int_equal(model_load(&m, dir, NULL, err), 0);
    model_backend *bes[RANKS];
    new_ranks(bes);
    model_collective *c = NULL;
    assert_int_equal(model_collective_host_new(&c, bes, RANKS, err), 0);
    int32_t tokens[2 * 12];
    for (size_t i = 0; i < 24; i++) {
        tokens[i] = (int32_t)((i * 7 + 3) % 77);
    }
    float want[2 * 12 * 77], got[2 * 12 * 77];
    for (int with_collective = 0; with_collective < 2; with_collective++) {
        model_session *s[RANKS] = {NULL};
        model_collective *cc = with_collective ? c : NULL;
        assert_int_equal(model_session_new_group(s, m, bes, RANKS, cc, err), 0);
        for (size_t r = 0; r < RANKS; r++) {
            model_request rq;
            model_request_init(&rq, s[r], tokens, 2, 12);
            model_cache *out = NULL;
            assert_int_equal(model_run(s[r], &rq, &out, err), 0);
            assert_int_equal(model_cache_download(out, (model_hook){MODEL_HOOK_LOGITS, -1},
                                                  r == 0 ? want : got, 2 * 12 * 77, err),
                             0);
            if (r > 0) {
                assert_memory_equal(got, want, sizeof got);
            }
            model_cache_destroy(&out);
        }
        for (size_t r = 0; r < RANKS; r++) {
            model_session_destroy(&s[r]);
        }
    }
    /* a collective over other backends than the group's count is refused */
    model_session *two[2] = {NULL, NULL};
    assert_int_equal(model_session_new_group(two, m, bes, 2, c, err), COMMON_ERR_INVALID);
    assert_null(two[0]);
    model_collective_destroy(&c);
    free_ranks(bes);
    model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sum_rows),
        cmocka_unit_test(test_sum_rows_refusals),
        cmocka_unit_test(test_host_collective),
        cmocka_unit_test(test_session_group),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
