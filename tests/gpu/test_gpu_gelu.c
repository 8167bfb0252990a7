/*
 * The device gelu_new against the CPU formula of TL-SEMANTICS.md §2.4 (tolerance 2e-6 absolute
 * plus 2e-6 relative: tanhf on the device and in libm may differ in the last bits). Without a
 * visible CUDA device the test reports why and exits 77, which ctest shows as skipped.
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

static float gelu_new_cpu(float x) {
    const float k = 0.7978845608028654f;
    return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

static void test_gelu_new_matches_cpu(void **state) {
    (void)state;
    enum { N = 100003 }; /* not a multiple of the block size */
    float *x = malloc(N * sizeof(float));
    float *y = malloc(N * sizeof(float));
    assert_non_null(x);
    assert_non_null(y);
    for (size_t i = 0; i < N; i++) {
        x[i] = -12.0f + 24.0f * (float)i / (float)N;
    }
    char err[COMMON_ERR_LEN];
    assert_int_equal(gpu_gelu_new(x, y, N, err), COMMON_OK);
    for (size_t i = 0; i < N; i++) {
        float want = gelu_new_cpu(x[i]);
        assert_true(fabsf(y[i] - want) <= 2e-6f + 2e-6f * fabsf(want));
    }
    free(x);
    free(y);
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
