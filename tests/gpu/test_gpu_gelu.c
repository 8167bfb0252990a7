/*
 * The device gelu_new against the CPU backend's gelu_new op (tolerance 2e-6 absolute plus 2e-6
 * relative: the two evaluate the same function through different float32 expressions). Without
 * a visible CUDA device the test reports why and exits 77, which ctest shows as skipped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/common.h"
#include "gpu/gpu.h"
#include "model/model.h"

/* gelu_new of n floats through the CPU backend (upload, op, download). */
static void gelu_new_cpu(const float *x, float *y, size_t n) {
    char err[COMMON_ERR_LEN];
    model_backend *be = NULL;
    assert_int_equal(model_backend_cpu_new(&be, 1, err), COMMON_OK);
    model_buf *buf = NULL;
    assert_int_equal(be->alloc(be, n, &buf, err), COMMON_OK);
    model_ref ref = {buf, 0};
    assert_int_equal(be->upload(be, ref, x, n, err), COMMON_OK);
    assert_int_equal(be->gelu_new(be, ref, ref, n, err), COMMON_OK);
    assert_int_equal(be->download(be, y, ref, n, err), COMMON_OK);
    be->free(be, buf);
    model_backend_destroy(&be);
}

static void test_gelu_new_matches_cpu(void **state) {
    (void)state;
    enum { N = 100003 }; /* not a multiple of the block size */
    float *x = malloc(N * sizeof(float));
    float *y = malloc(N * sizeof(float));
    float *want = malloc(N * sizeof(float));
    assert_non_null(x);
    assert_non_null(y);
    assert_non_null(want);
    for (size_t i = 0; i < N; i++) {
        x[i] = -12.0f + 24.0f * (float)i / (float)N;
    }
    char err[COMMON_ERR_LEN];
    assert_int_equal(gpu_gelu_new(x, y, N, err), COMMON_OK);
    gelu_new_cpu(x, want, N);
    for (size_t i = 0; i < N; i++) {
        assert_true(fabsf(y[i] - want[i]) <= 2e-6f + 2e-6f * fabsf(want[i]));
    }
    free(x);
    free(y);
    free(want);
}

int main(void) {
    char err[COMMON_ERR_LEN];
    int count = 0;
    if (gpu_device_count(&count, err) != COMMON_OK) {
        printf("SKIP: CUDA runtime error: %s\n", err);
        return 77;
    }
    if (count == 0) {
        printf("SKIP: no CUDA device visible; the GPU tests need an NVIDIA GPU\n");
        return 77;
    }
    char name[256];
    if (gpu_device_describe(0, name, sizeof name, err) == COMMON_OK) {
        printf("device 0: %s\n", name);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gelu_new_matches_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
