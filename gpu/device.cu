/*
 * Device discovery. A process on a machine with no GPU or no driver sees zero devices rather
 * than an error, so that callers (and tests, which then skip) can fall back to the CPU backend.
 */
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "common/common.h"
#include "gpu/gpu.h"
}

extern "C" int gpu_device_count(int *count, char *err) {
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc == cudaErrorNoDevice || rc == cudaErrorInsufficientDriver) {
        (void)cudaGetLastError(); /* clear the sticky error state */
        *count = 0;
        return COMMON_OK;
    }
    if (rc != cudaSuccess) {
        return common_fail(err, COMMON_ERR_BACKEND, "cudaGetDeviceCount: %s",
                           cudaGetErrorString(rc));
    }
    *count = n;
    return COMMON_OK;
}

extern "C" int gpu_device_describe(int index, char *buf, size_t buf_len, char *err) {
    cudaDeviceProp prop;
    cudaError_t rc = cudaGetDeviceProperties(&prop, index);
    if (rc != cudaSuccess) {
        return common_fail(err, COMMON_ERR_BACKEND, "cudaGetDeviceProperties(%d): %s", index,
                           cudaGetErrorString(rc));
    }
    snprintf(buf, buf_len, "%s, %zu MiB", prop.name, (size_t)(prop.totalGlobalMem >> 20));
    return COMMON_OK;
}
