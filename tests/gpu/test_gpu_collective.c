/*
 * test_gpu_collective: the NCCL collective (gpu.h) on every visible device (up to 4): a
 * broadcast of 4-byte elements from each root, a double reduction onto each root against the
 * host sum (NCCL adds in its own order: relative 1e-15 per addition), sessions whose weights
 * arrive by broadcast giving the logits of a session uploaded from the host bit for bit, and
 * the refusals (a CPU backend, two ranks on one device). With one device the group has one
 * rank, which still exercises the calls. Skipped (77) without a device or without NCCL.
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

#include "gpu/gpu.h"

#define MAX_DEV 4

static char err[COMMON_ERR_LEN];
static model_backend *bes[MAX_DEV];
static size_t n_dev;

static void test_broadcast_and_reduce(void **state) {
    (void)state;
    model_collective *c = NULL;
    if (gpu_collective_new(&c, bes, n_dev, err) != 0) {
        fail_msg("%s", err);
    }
    assert_string_equal(c->name, "nccl");
    enum { N = 100003 };
    float *src = malloc(N * sizeof *src), *got = malloc(N * sizeof *got);
    double *part = malloc(N * sizeof *part), *sum = calloc(N, sizeof *sum);
    double *out = malloc(N * sizeof *out);
    assert_true(src && got && part && sum && out);
    model_buf *f[MAX_DEV], *d[MAX_DEV];
    model_ref fr[MAX_DEV], dr[MAX_DEV];
    for (size_t root = 0; root < n_dev; root++) {
        for (size_t i = 0; i < N; i++) {
            src[i] = (float)i * 0.5f - (float)root;
            sum[i] = 0.0;
        }
        for (size_t r = 0; r < n_dev; r++) {
            assert_int_equal(bes[r]->alloc(bes[r], N, &f[r], err), 0);
            assert_int_equal(bes[r]->alloc(bes[r], 2 * N, &d[r], err), 0);
            assert_int_equal(bes[r]->fill(bes[r], (model_ref){f[r], 0}, N, -1.0f, err), 0);
            for (size_t i = 0; i < N; i++) {
                part[i] = sin((double)(i + 7 * r)) * 1e8;
                sum[i] += part[i];
            }
            assert_int_equal(bes[r]->upload(bes[r], (model_ref){d[r], 0}, part, 2 * N, err), 0);
            fr[r] = (model_ref){f[r], 0};
            dr[r] = (model_ref){d[r], 0};
        }
        assert_int_equal(bes[root]->upload(bes[root], fr[root], src, N, err), 0);
        if (c->broadcast(c, fr, N, root, err) != 0 || c->reduce_sum_f64(c, dr, N, root, err) != 0) {
            fail_msg("%s", err);
        }
        for (size_t r = 0; r < n_dev; r++) {
            assert_int_equal(bes[r]->download(bes[r], got, fr[r], N, err), 0);
            assert_memory_equal(got, src, N * sizeof *src);
        }
        assert_int_equal(bes[root]->download(bes[root], out, dr[root], 2 * N, err), 0);
        for (size_t i = 0; i < N; i++) {
            if (!(fabs(out[i] - sum[i]) <= 1e-15 * (double)n_dev * (fabs(sum[i]) + 1e8))) {
                fail_msg("reduce onto %zu: %zu is %.17g, the host sum %.17g", root, i, out[i],
                         sum[i]);
            }
        }
        for (size_t r = 0; r < n_dev; r++) {
            bes[r]->free(bes[r], f[r]);
            bes[r]->free(bes[r], d[r]);
        }
    }
    model_collective_destroy(&c);
    free(src);
    free(got);
    free(part);
    free(sum);
    free(out);
}

static void test_session_group(void **state) {
    (void)state;
    char dir[512];
    const char *tmp = getenv("CHESSLENS_TEST_TMPDIR");
    snprintf(dir, sizeof dir, "%s/nccl-model", tmp != NULL ? tmp : "/tmp");
    model_config cfg = {.n_layers = 2,
                        .d_model = 64,
                        .n_heads = 4,
                        .d_head = 16,
                        .d_mlp = 256,
                        .n_ctx = 32,
                        .n_positions = 32,
                        .d_vocab = 77,
                        .eps = 1e-5f,
                        .attn_scale = 4.0f};
    model *m = NULL;
    model_collective *c = NULL;
    assert_int_equal(model_write_random(dir, &cfg, 3, MODEL_DTYPE_F32, err), 0);
    assert_int_equal(model_load(&m, dir, NULL, err), 0);
    assert_int_equal(gpu_collective_new(&c, bes, n_dev, err), 0);
    model_session *s[MAX_DEV] = {NULL}, *host = NULL;
    if (model_session_new_group(s, m, bes, n_dev, c, err) != 0 ||
        model_session_new(&host, m, bes[0], err) != 0) {
        fail_msg("%s", err);
    }
    int32_t tokens[2 * 20];
    for (size_t i = 0; i < 40; i++) {
        tokens[i] = (int32_t)((i * 11 + 5) % 77);
    }
    size_t n = 2 * 20 * 77;
    float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
    assert_true(want && got);
    for (size_t r = 0; r <= n_dev; r++) {
        model_session *x = r == n_dev ? host : s[r];
        model_request rq;
        model_request_init(&rq, x, tokens, 2, 20);
        model_cache *out = NULL;
        assert_int_equal(model_run(x, &rq, &out, err), 0);
        assert_int_equal(model_cache_download(out, (model_hook){MODEL_HOOK_LOGITS, -1},
                                              r == 0 ? want : got, n, err),
                         0);
        if (r > 0) {
            assert_memory_equal(got, want, n * sizeof *got); /* same weights, same device kind */
        }
        model_cache_destroy(&out);
    }
    for (size_t r = 0; r < n_dev; r++) {
        model_session_destroy(&s[r]);
    }
    model_session_destroy(&host);
    model_collective_destroy(&c);
    model_destroy(&m);
    free(want);
    free(got);
}

static void test_refusals(void **state) {
    (void)state;
    model_backend *cpu = NULL, *two[2] = {bes[0], NULL};
    model_collective *c = NULL;
    assert_int_equal(model_backend_cpu_new(&cpu, 1, err), 0);
    two[1] = cpu;
    assert_int_equal(gpu_collective_new(&c, two, 2, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "not a CUDA one"));
    two[1] = bes[0];
    assert_int_equal(gpu_collective_new(&c, two, 2, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "both on device"));
    assert_null(c);
    model_backend_destroy(&cpu);
}

int main(void) {
    int count = 0;
    if (!gpu_have_nccl()) {
        fprintf(stderr, "test_gpu_collective: SKIPPED: built without NCCL\n");
        return 77;
    }
    if (gpu_device_count(&count, err) != 0) {
        fprintf(stderr, "test_gpu_collective: %s\n", err);
        return 1;
    }
    if (count == 0) {
        fprintf(stderr, "test_gpu_collective: SKIPPED: no CUDA device visible\n");
        return 77;
    }
    n_dev = (size_t)(count < MAX_DEV ? count : MAX_DEV);
    for (size_t r = 0; r < n_dev; r++) {
        if (gpu_backend_new(&bes[r], (int)r, NULL, err) != 0) {
            fprintf(stderr, "test_gpu_collective: %s\n", err);
            return 1;
        }
    }
    fprintf(stderr, "test_gpu_collective: %zu device(s)\n", n_dev);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_broadcast_and_reduce),
        cmocka_unit_test(test_session_group),
        cmocka_unit_test(test_refusals),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    for (size_t r = 0; r < n_dev; r++) {
        model_backend_destroy(&bes[r]);
    }
    return failed;
}
