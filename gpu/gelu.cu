/*
 * gelu_new on the device, TransformerLens' tanh form (docs/TL-SEMANTICS.md §2.4), one thread per
 * element. The host wrapper copies in, launches, checks the launch, and copies back.
 */
#include <cuda_runtime.h>

extern "C" {
#include "common/common.h"
#include "gpu/gpu.h"
}

__global__ void gelu_new_kernel(const float *d_x, float *d_y, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float k = 0.7978845608028654f; /* sqrt(2/pi) */
        float x = d_x[i];
        d_y[i] = 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
    }
}

extern "C" int gpu_gelu_new(const float *x, float *y, size_t n, char *err) {
    if (n == 0) {
        return COMMON_OK;
    }
    float *d_x = NULL, *d_y = NULL; // (n)
    int ret = COMMON_OK;
    cudaError_t rc = cudaMalloc((void **)&d_x, n * sizeof(float));
    if (rc == cudaSuccess) {
        rc = cudaMalloc((void **)&d_y, n * sizeof(float));
    }
    if (rc == cudaSuccess) {
        rc = cudaMemcpy(d_x, x, n * sizeof(float), cudaMemcpyHostToDevice);
    }
    if (rc == cudaSuccess) {
        unsigned threads = 256;
        unsigned blocks = (unsigned)((n + threads - 1) / threads);
        gelu_new_kernel<<<blocks, threads>>>(d_x, d_y, n);
        rc = cudaGetLastError();
    }
    if (rc == cudaSuccess) {
        rc = cudaMemcpy(y, d_y, n * sizeof(float), cudaMemcpyDeviceToHost);
    }
    if (rc != cudaSuccess) {
        ret = common_fail(err, COMMON_ERR_BACKEND, "gpu_gelu_new(%zu floats): %s", n,
                          cudaGetErrorString(rc));
    }
    cudaFree(d_x);
    cudaFree(d_y);
    return ret;
}
