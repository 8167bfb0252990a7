/*
 * The CUDA backend: model_backend operations on one device (gpu.h).
 *
 * Everything a backend does is queued on its one stream: matrix products through cuBLAS
 * (strided-batched, row-major expressed as the column-major product of the transposes), the
 * row and element operations through the kernels below, copies through cudaMemcpyAsync, and
 * allocations through the stream-ordered pool (cudaMallocAsync), which keeps freed memory for
 * the next run instead of returning it to the driver. The host waits only in download and sync.
 *
 * Range checks are made on the host before anything is queued, with the sizes the buffers
 * were allocated with, exactly as the CPU backend makes them. An index that gather_rows finds
 * outside its table can only be seen on the device: the kernel skips the row and raises a
 * flag that the next download or sync reports. A CUDA error (out of memory, an illegal
 * address, a lost device) is kept: every later operation fails with its text, so that a caller
 * drops the backend rather than compute on a context that may hold wrong numbers.
 *
 * The arithmetic follows the CPU backend's op order (backend_cpu.c) so that float32 results
 * agree to rounding: LayerNorm centres, takes the biased variance of the centred values with eps
 * inside the square root and divides; softmax subtracts the row maximum and maps a row with no
 * finite score to zeros; gelu_new is x / (1 + exp(-2u)). Sums are accumulated in double.
 * sum_rows and legal_stats make exactly the CPU's operations (one thread per column or cell),
 * so their accumulators equal the CPU's bit for bit; row_metrics runs the host's own metric
 * code (model/metric_eval.h), with the device's exp and log.
 *
 * Two optional operations of model.h are here too: fused attention (one warp per head and
 * query, online softmax, no score rows in memory), used by the forward when no hook needs the
 * scores or pattern, and CUDA graphs (stream capture, instantiate, launch) for launch sequences
 * that repeat on the same buffers. While capturing, what cannot be recorded (host transfers,
 * waits, allocations) is refused and fails the capture.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "common/common.h"
#include "gpu/gpu.h"
#include "gpu/gpu_int.h"
#include "model/metric_eval.h"
#include "model/model.h"
}

/* A device buffer: the pointer and the elements it was allocated with (the CPU backend's
 * layout, so the opaque type means the same in both). */
struct model_buf {
    float *p;
    size_t n;
};

typedef struct cuda_impl {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    int *d_flag; /* set by a kernel that met an input it could not use (gather_rows, copy_rows,
                  * attn_fused) */
    int *h_flag; /* pinned: where the flag is read back */
    size_t in_use, peak;
    char name[32];
    char failed[COMMON_ERR_LEN]; /* the first CUDA error; "" while none */
    bool sticky;     /* failed with a CUDA error that may have corrupted the context (not OOM) */
    void *d_blas_ws; /* cuBLAS workspace, fixed so that captured products allocate nothing */
    bool capturing;  /* between graph_begin and graph_end */
    char capture_err[COMMON_ERR_LEN]; /* the first refused operation while capturing; "" if none */
    float **deferred_free; /* [n_deferred] buffers freed while capturing, freed at graph_end */
    size_t n_deferred;
} cuda_impl;

/* A captured and instantiated launch sequence. */
struct model_graph {
    cudaGraphExec_t exec;
};

/* cuBLAS' workspace: 32 MiB, what its documentation advises for Hopper. */
#define BLAS_WORKSPACE ((size_t)32 << 20)

static cuda_impl *impl_of(const model_backend *be) {
    return (cuda_impl *)be->impl;
}

static float *at(model_ref r) {
    return r.buf->p + r.off;
}

/* ---- errors ---- */

/* Records a CUDA error as the backend's failure and returns BACKEND (NOMEM for memory). */
static int cuda_fail(cuda_impl *im, cudaError_t e, const char *op, char *err) {
    if (e != cudaErrorMemoryAllocation) {
        im->sticky = true;
    }
    if (im->failed[0] == '\0') {
        snprintf(im->failed, sizeof im->failed, "%s: %s (%s)", op, cudaGetErrorString(e),
                 cudaGetErrorName(e));
    }
    return common_fail(err, e == cudaErrorMemoryAllocation ? COMMON_ERR_NOMEM : COMMON_ERR_BACKEND,
                       "%s %s", im->name, im->failed);
}

static int blas_fail(cuda_impl *im, cublasStatus_t s, const char *op, char *err) {
    if (im->failed[0] == '\0') {
        snprintf(im->failed, sizeof im->failed, "%s: %s", op, cublasGetStatusString(s));
    }
    return common_fail(err, COMMON_ERR_BACKEND, "%s %s", im->name, im->failed);
}

/* BACKEND with the kept error once the backend has failed. Every operation starts here, and
 * binds the calling thread to the backend's device first: a worker with several devices runs
 * each on a thread of its own per task, and a kernel launched on another device's current
 * context would fail. (cudaSetDevice to the current device costs no driver call.) */
static int check_alive(cuda_impl *im, char *err) {
    if (im->failed[0] != '\0') {
        return common_fail(err, COMMON_ERR_BACKEND, "%s failed earlier: %s", im->name, im->failed);
    }
    cudaError_t e = cudaSetDevice(im->device);
    return e == cudaSuccess ? 0 : cuda_fail(im, e, "cudaSetDevice", err);
}

/* Refuses an operation that cannot be recorded (host transfers, waits, allocations) while the
 * stream captures; the refusal is kept and fails graph_end too (model.h). */
static int refuse_capture(cuda_impl *im, const char *op, char *err) {
    if (!im->capturing) {
        return 0;
    }
    if (im->capture_err[0] == '\0') {
        snprintf(im->capture_err, sizeof im->capture_err, "%s while recording a graph", op);
    }
    return common_fail(err, COMMON_ERR_INVALID, "%s %s", im->name, im->capture_err);
}

/* After a kernel launch: a launch error, and any asynchronous error already reported. */
static int launched(cuda_impl *im, const char *op, char *err) {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? 0 : cuda_fail(im, e, op, err);
}

static int check_range(const cuda_impl *im, model_ref r, size_t n, const char *op, char *err) {
    if (!r.buf || r.off > r.buf->n || n > r.buf->n - r.off) {
        return common_fail(err, COMMON_ERR_INVALID, "%s %s: range outside the buffer", im->name,
                           op);
    }
    return 0;
}

/* Threads and blocks for n independent items. */
static unsigned blocks_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b > 0x7fffffffu ? 0x7fffffffu : b);
}

/* Waits for the stream, then reports a kernel's raised flag (and clears it). */
static int drain(cuda_impl *im, const char *op, char *err) {
    cudaError_t e =
        cudaMemcpyAsync(im->h_flag, im->d_flag, sizeof(int), cudaMemcpyDeviceToHost, im->stream);
    if (e == cudaSuccess) {
        e = cudaStreamSynchronize(im->stream);
    }
    if (e != cudaSuccess) {
        return cuda_fail(im, e, op, err);
    }
    if (*im->h_flag != 0) {
        *im->h_flag = 0;
        e = cudaMemsetAsync(im->d_flag, 0, sizeof(int), im->stream);
        if (e != cudaSuccess) {
            return cuda_fail(im, e, op, err);
        }
        return common_fail(err, COMMON_ERR_INVALID,
                           "%s: a gather_rows index, copy_rows entry or attn_fused sequence "
                           "outside its range (its rows were not written)",
                           im->name);
    }
    return 0;
}

/* ---- memory ---- */

static int cu_alloc(model_backend *be, size_t n, model_buf **out, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc == 0) {
        rc = refuse_capture(im, "alloc", err);
    }
    if (rc != 0) {
        return rc;
    }
    model_buf *b = (model_buf *)malloc(sizeof *b);
    if (b == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of host memory", im->name);
    }
    size_t bytes = (n ? n : 1) * sizeof(float);
    cudaError_t e = cudaMallocAsync((void **)&b->p, bytes, im->stream);
    if (e != cudaSuccess) {
        free(b);
        (void)cudaGetLastError();
        /* out of memory is the caller's to handle (smaller batches); it leaves the context
         * usable, so it is not kept as the backend's failure */
        if (e == cudaErrorMemoryAllocation) {
            return common_fail(err, COMMON_ERR_NOMEM, "%s: cannot allocate %zu bytes: %s", im->name,
                               bytes, cudaGetErrorString(e));
        }
        return cuda_fail(im, e, "cudaMallocAsync", err);
    }
    b->n = n;
    im->in_use += n * sizeof(float);
    im->peak = im->in_use > im->peak ? im->in_use : im->peak;
    *out = b;
    return 0;
}

static void cu_free(model_backend *be, model_buf *b) {
    if (b == NULL) {
        return;
    }
    cuda_impl *im = impl_of(be);
    im->in_use -= b->n * sizeof(float);
    if (im->capturing) {
        /* a free queued now would become part of the graph: refuse it, and free at graph_end */
        refuse_capture(im, "free", NULL);
        float **d = (float **)realloc(im->deferred_free, (im->n_deferred + 1) * sizeof *d);
        if (d != NULL) {
            im->deferred_free = d;
            d[im->n_deferred++] = b->p;
        }
        free(b);
        return;
    }
    (void)cudaSetDevice(im->device);
    cudaError_t e = cudaFreeAsync(b->p, im->stream);
    if (e != cudaSuccess) {
        cuda_fail(im, e, "cudaFreeAsync", NULL);
    }
    free(b);
}

static void cu_mem_stats(const model_backend *be, size_t *in_use, size_t *peak) {
    const cuda_impl *im = impl_of(be);
    if (in_use) {
        *in_use = im->in_use;
    }
    if (peak) {
        *peak = im->peak;
    }
}

static void cu_reset_peak(model_backend *be) {
    impl_of(be)->peak = impl_of(be)->in_use;
}

static int cu_upload(model_backend *be, model_ref dst, const void *host, size_t n, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc == 0) {
        rc = refuse_capture(im, "upload", err);
    }
    if (rc == 0) {
        rc = check_range(im, dst, n, "upload", err);
    }
    if (rc != 0 || n == 0) {
        return rc;
    }
    /* from pageable memory the call returns once the bytes are staged: host may be reused */
    cudaError_t e =
        cudaMemcpyAsync(at(dst), host, n * sizeof(float), cudaMemcpyHostToDevice, im->stream);
    return e == cudaSuccess ? 0 : cuda_fail(im, e, "upload", err);
}

static int cu_download(model_backend *be, void *host, model_ref src, size_t n, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc == 0) {
        rc = refuse_capture(im, "download", err);
    }
    if (rc == 0) {
        rc = check_range(im, src, n, "download", err);
    }
    if (rc != 0) {
        return rc;
    }
    if (n > 0) {
        cudaError_t e =
            cudaMemcpyAsync(host, at(src), n * sizeof(float), cudaMemcpyDeviceToHost, im->stream);
        if (e != cudaSuccess) {
            return cuda_fail(im, e, "download", err);
        }
    }
    return drain(im, "download", err);
}

__global__ void broadcast_rows_kernel(float *dst, size_t dst_ld, const float *src, size_t rows,
                                      size_t cols) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < rows * cols; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / cols, c = i % cols;
        dst[r * dst_ld + c] = src[c];
    }
}

static int cu_copy2d(model_backend *be, model_ref dst, size_t dst_ld, model_ref src, size_t src_ld,
                     size_t rows, size_t cols, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0 || rows == 0 || cols == 0) {
        return rc;
    }
    if ((rc = check_range(im, dst, (rows - 1) * dst_ld + cols, "copy2d", err)) != 0 ||
        (rc = check_range(im, src, (rows - 1) * src_ld + cols, "copy2d", err)) != 0) {
        return rc;
    }
    cudaError_t e;
    if (src_ld == 0 && rows > 1) {
        broadcast_rows_kernel<<<blocks_for(rows * cols, 256), 256, 0, im->stream>>>(
            at(dst), dst_ld, at(src), rows, cols);
        return launched(im, "copy2d", err);
    }
    if (rows == 1) {
        e = cudaMemcpyAsync(at(dst), at(src), cols * sizeof(float), cudaMemcpyDeviceToDevice,
                            im->stream);
    } else {
        e = cudaMemcpy2DAsync(at(dst), dst_ld * sizeof(float), at(src), src_ld * sizeof(float),
                              cols * sizeof(float), rows, cudaMemcpyDeviceToDevice, im->stream);
    }
    return e == cudaSuccess ? 0 : cuda_fail(im, e, "copy2d", err);
}

__global__ void fill_kernel(float *x, size_t n, float v) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < n; i += (size_t)gridDim.x * blockDim.x) {
        x[i] = v;
    }
}

static int cu_fill(model_backend *be, model_ref dst, size_t n, float value, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc == 0) {
        rc = check_range(im, dst, n, "fill", err);
    }
    if (rc != 0 || n == 0) {
        return rc;
    }
    fill_kernel<<<blocks_for(n, 256), 256, 0, im->stream>>>(at(dst), n, value);
    return launched(im, "fill", err);
}

/* ---- sgemm ---- */

static int cu_gemm(model_backend *be, const model_gemm *g, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0 || g->m == 0 || g->n == 0 || g->batch == 0) {
        return rc;
    }
    size_t a_rows = g->trans_a ? g->k : g->m, a_cols = g->trans_a ? g->m : g->k;
    size_t b_rows = g->trans_b ? g->n : g->k, b_cols = g->trans_b ? g->k : g->n;
    size_t last = g->batch - 1;
    if (check_range(im, g->a, last * g->stride_a + (a_rows - 1) * g->lda + a_cols, "gemm A", err) ||
        check_range(im, g->b, last * g->stride_b + (b_rows - 1) * g->ldb + b_cols, "gemm B", err) ||
        check_range(im, g->c, last * g->stride_c + (g->m - 1) * g->ldc + g->n, "gemm C", err)) {
        return COMMON_ERR_INVALID;
    }
    if (g->m > INT32_MAX || g->n > INT32_MAX || g->k > INT32_MAX || g->lda > INT32_MAX ||
        g->ldb > INT32_MAX || g->ldc > INT32_MAX || g->batch > INT32_MAX) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s gemm: a dimension over 2^31", im->name);
    }
    /* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the row-major matrices
     * read as column-major are their transposes, so B comes first and m, n swap. A product
     * with k = 0 scales C by beta, which cuBLAS does as well. */
    cublasOperation_t op_a = g->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t op_b = g->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasStatus_t s;
    if (g->batch == 1) {
        s = cublasSgemm(im->blas, op_b, op_a, (int)g->n, (int)g->m, (int)g->k, &g->alpha, at(g->b),
                        (int)g->ldb, at(g->a), (int)g->lda, &g->beta, at(g->c), (int)g->ldc);
    } else {
        s = cublasSgemmStridedBatched(im->blas, op_b, op_a, (int)g->n, (int)g->m, (int)g->k,
                                      &g->alpha, at(g->b), (int)g->ldb, (long long)g->stride_b,
                                      at(g->a), (int)g->lda, (long long)g->stride_a, &g->beta,
                                      at(g->c), (int)g->ldc, (long long)g->stride_c, (int)g->batch);
    }
    return s == CUBLAS_STATUS_SUCCESS ? 0 : blas_fail(im, s, "cublasSgemm", err);
}

/* ---- elementwise ---- */

__global__ void add_kernel(float *dst, const float *a, const float *b, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < n; i += (size_t)gridDim.x * blockDim.x) {
        dst[i] = a[i] + b[i];
    }
}

static int cu_add(model_backend *be, model_ref dst, model_ref a, model_ref b, size_t n, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (check_range(im, dst, n, "add", err) || check_range(im, a, n, "add", err) ||
        check_range(im, b, n, "add", err)) {
        return COMMON_ERR_INVALID;
    }
    if (n == 0) {
        return 0;
    }
    add_kernel<<<blocks_for(n, 256), 256, 0, im->stream>>>(at(dst), at(a), at(b), n);
    return launched(im, "add", err);
}

#define LN_THREADS 256

/* Sum over the block of one double per thread (every thread receives it). */
__device__ double block_sum(double v, double *shared) {
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_down_sync(0xffffffffu, v, o);
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        shared[warp] = v;
    }
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? shared[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) {
            v += __shfl_down_sync(0xffffffffu, v, o);
        }
        if (lane == 0) {
            shared[0] = v;
        }
    }
    __syncthreads();
    double total = shared[0];
    __syncthreads(); /* shared is reused by the next sum */
    return total;
}

/* One block per row. Each thread reads and writes only its own elements, so y may alias x. */
__global__ void layer_norm_kernel(float *y, const float *x, float *scale, size_t d, float eps) {
    __shared__ double shared[LN_THREADS / 32];
    size_t r = blockIdx.x;
    const float *xr = x + r * d;
    float *yr = y + r * d;
    double s = 0.0;
    for (size_t i = threadIdx.x; i < d; i += blockDim.x) {
        s += (double)xr[i];
    }
    float mean = (float)(block_sum(s, shared) / (double)d);
    double q = 0.0;
    for (size_t i = threadIdx.x; i < d; i += blockDim.x) {
        float c = xr[i] - mean;
        yr[i] = c;
        q += (double)c * (double)c;
    }
    /* biased variance, eps inside the sqrt, then a division (TL's op order) */
    float sc = sqrtf((float)(block_sum(q, shared) / (double)d) + eps);
    for (size_t i = threadIdx.x; i < d; i += blockDim.x) {
        yr[i] = yr[i] / sc;
    }
    if (threadIdx.x == 0) {
        scale[r] = sc;
    }
}

static int cu_layer_norm(model_backend *be, model_ref x, model_ref norm, model_ref scale,
                         size_t rows, size_t d, float eps, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (check_range(im, x, rows * d, "layer_norm", err) ||
        check_range(im, norm, rows * d, "layer_norm", err) ||
        check_range(im, scale, rows, "layer_norm", err)) {
        return COMMON_ERR_INVALID;
    }
    if (rows == 0) {
        return 0;
    }
    if (rows > 0x7fffffffu) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s layer_norm: %zu rows", im->name, rows);
    }
    layer_norm_kernel<<<(unsigned)rows, LN_THREADS, 0, im->stream>>>(at(norm), at(x), at(scale), d,
                                                                     eps);
    return launched(im, "layer_norm", err);
}

__global__ void affine_kernel(float *y, const float *x, const float *w, const float *b, size_t rows,
                              size_t d) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < rows * d; i += (size_t)gridDim.x * blockDim.x) {
        size_t c = i % d;
        y[i] = x[i] * w[c] + b[c];
    }
}

static int cu_affine(model_backend *be, model_ref y, model_ref x, model_ref w, model_ref b,
                     size_t rows, size_t d, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (check_range(im, y, rows * d, "affine", err) ||
        check_range(im, x, rows * d, "affine", err) || check_range(im, w, d, "affine", err) ||
        check_range(im, b, d, "affine", err)) {
        return COMMON_ERR_INVALID;
    }
    if (rows * d == 0) {
        return 0;
    }
    affine_kernel<<<blocks_for(rows * d, 256), 256, 0, im->stream>>>(at(y), at(x), at(w), at(b),
                                                                     rows, d);
    return launched(im, "affine", err);
}

__global__ void gather_rows_kernel(float *dst, const float *table, size_t table_rows,
                                   const int32_t *idx, size_t n, size_t d, int *flag) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < n * d; i += (size_t)gridDim.x * blockDim.x) {
        size_t r = i / d, c = i % d;
        int32_t t = idx[r];
        if (t < 0 || (size_t)t >= table_rows) {
            *flag = 1;
            continue;
        }
        dst[i] = table[(size_t)t * d + c];
    }
}

static int cu_gather_rows(model_backend *be, model_ref dst, model_ref table, model_ref idx,
                          size_t n, size_t d, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (check_range(im, dst, n * d, "gather_rows", err) ||
        check_range(im, idx, n, "gather_rows", err)) {
        return COMMON_ERR_INVALID;
    }
    if (n * d == 0) {
        return 0;
    }
    size_t table_rows = d ? (table.buf->n - table.off) / d : 0;
    gather_rows_kernel<<<blocks_for(n * d, 256), 256, 0, im->stream>>>(
        at(dst), at(table), table_rows, (const int32_t *)(const void *)at(idx), n, d, im->d_flag);
    return launched(im, "gather_rows", err);
}

/* The y blocks stride over the table's entries, the x blocks over an entry's rows x cols
 * elements. */
__global__ void copy_rows_kernel(float *dst, size_t dst_ld, size_t dst_rows, const float *src,
                                 size_t src_ld, size_t src_rows, const int32_t *table, size_t n,
                                 size_t cols, int *flag) {
    for (size_t e = blockIdx.y; e < n; e += gridDim.y) {
        const int32_t *en = table + e * MODEL_COPY_ROWS_FIELDS;
        int32_t d0 = en[0], s0 = en[1], rows = en[2];
        if (d0 < 0 || s0 < 0 || rows < 0 || (size_t)d0 + (size_t)rows > dst_rows ||
            (size_t)s0 + (size_t)rows > src_rows) {
            if (blockIdx.x == 0 && threadIdx.x == 0) {
                *flag = 1;
            }
            continue;
        }
        size_t count = (size_t)rows * cols;
        for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < count;
             i += (size_t)gridDim.x * blockDim.x) {
            size_t r = i / cols, c = i % cols;
            dst[((size_t)d0 + r) * dst_ld + c] = src[((size_t)s0 + r) * src_ld + c];
        }
    }
}

static int cu_copy_rows(model_backend *be, model_ref dst, size_t dst_ld, size_t dst_rows,
                        model_ref src, size_t src_ld, size_t src_rows, model_ref table, size_t n,
                        size_t cols, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (n == 0 || cols == 0) {
        return 0;
    }
    if (check_range(im, table, n * MODEL_COPY_ROWS_FIELDS, "copy_rows table", err) ||
        (dst_rows > 0 && check_range(im, dst, (dst_rows - 1) * dst_ld + cols, "copy_rows", err)) ||
        (src_rows > 0 && check_range(im, src, (src_rows - 1) * src_ld + cols, "copy_rows", err))) {
        return COMMON_ERR_INVALID;
    }
    /* enough x blocks to cover a few rows of an entry at once (longer ones stride), one y
     * block per entry up to the grid's limit */
    dim3 grid(blocks_for(8 * cols, 256), (unsigned)(n < 65535 ? n : 65535));
    copy_rows_kernel<<<grid, 256, 0, im->stream>>>(
        dst_rows > 0 ? at(dst) : NULL, dst_ld, dst_rows, src_rows > 0 ? at(src) : NULL, src_ld,
        src_rows, (const int32_t *)(const void *)at(table), n, cols, im->d_flag);
    return launched(im, "copy_rows", err);
}

/* ---- attention ---- */

/* The geometry of model_attn_rows, passed by value to the kernels. */
typedef struct attn_geom {
    size_t n_heads, head_stride, q_begin, nq, ld, n_keys;
} attn_geom;

static attn_geom geom_of(const model_attn_rows *g) {
    attn_geom a = {g->n_heads, g->head_stride, g->q_begin, g->q_end - g->q_begin, g->ld, g->n_keys};
    return a;
}

__device__ size_t attn_row_offset(const attn_geom &g, size_t row, size_t *q) {
    size_t h = row / g.nq;
    *q = g.q_begin + row % g.nq;
    return h * g.head_stride + *q * g.ld;
}

__global__ void attn_mask_kernel(float *s, attn_geom g, float attn_scale) {
    size_t total = g.n_heads * g.nq * g.n_keys;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < total; i += (size_t)gridDim.x * blockDim.x) {
        size_t q, k = i % g.n_keys;
        float *row = s + attn_row_offset(g, i / g.n_keys, &q);
        row[k] = k <= q ? row[k] / attn_scale : -INFINITY;
    }
}

static int check_attn(const cuda_impl *im, model_ref r, const model_attn_rows *g, const char *op,
                      char *err) {
    if (g->n_heads == 0 || g->q_end <= g->q_begin || g->n_keys == 0) {
        return 0;
    }
    return check_range(
        im, r, (g->n_heads - 1) * g->head_stride + (g->q_end - 1) * g->ld + g->n_keys, op, err);
}

static int cu_attn_mask(model_backend *be, model_ref scores, const model_attn_rows *g,
                        float attn_scale, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (check_attn(im, scores, g, "attn_mask", err)) {
        return COMMON_ERR_INVALID;
    }
    if (g->q_end <= g->q_begin || g->n_heads == 0 || g->n_keys == 0) {
        return 0;
    }
    attn_geom a = geom_of(g);
    attn_mask_kernel<<<blocks_for(a.n_heads * a.nq * a.n_keys, 256), 256, 0, im->stream>>>(
        at(scores), a, attn_scale);
    return launched(im, "attn_mask", err);
}

#define SOFTMAX_WARPS 8

/* One warp per row. The pattern row is written only after its scores were read (same lanes),
 * so pattern may alias scores. */
__global__ void softmax_kernel(float *pattern, const float *scores, attn_geom g) {
    size_t rows = g.n_heads * g.nq;
    size_t row = (size_t)blockIdx.x * SOFTMAX_WARPS + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) {
        return;
    }
    size_t q;
    size_t off = attn_row_offset(g, row, &q);
    const float *in = scores + off;
    float *out = pattern + off;
    /* the maximum skips NaN scores, as the CPU backend's does: a NaN score makes its row NaN */
    float mx = -INFINITY;
    for (size_t k = lane; k < g.n_keys; k += 32) {
        float v = in[k];
        mx = v > mx ? v : mx;
    }
    for (int o = 16; o > 0; o >>= 1) {
        float other = __shfl_xor_sync(0xffffffffu, mx, o);
        mx = other > mx ? other : mx;
    }
    if (mx == -INFINITY) {
        /* every key masked: TL's softmax gives NaN, then NaN -> 0 */
        for (size_t k = lane; k < g.n_keys; k += 32) {
            out[k] = 0.0f;
        }
        return;
    }
    double sum = 0.0;
    for (size_t k = lane; k < g.n_keys; k += 32) {
        float e = expf(in[k] - mx);
        out[k] = e;
        sum += (double)e;
    }
    for (int o = 16; o > 0; o >>= 1) {
        sum += __shfl_xor_sync(0xffffffffu, sum, o);
    }
    float inv = (float)(1.0 / sum);
    for (size_t k = lane; k < g.n_keys; k += 32) {
        out[k] *= inv;
    }
}

static int cu_softmax(model_backend *be, model_ref pattern, model_ref scores,
                      const model_attn_rows *g, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (check_attn(im, pattern, g, "softmax", err) || check_attn(im, scores, g, "softmax", err)) {
        return COMMON_ERR_INVALID;
    }
    if (g->q_end <= g->q_begin || g->n_heads == 0 || g->n_keys == 0) {
        return 0;
    }
    attn_geom a = geom_of(g);
    size_t rows = a.n_heads * a.nq;
    softmax_kernel<<<blocks_for(rows, SOFTMAX_WARPS), SOFTMAX_WARPS * 32, 0, im->stream>>>(
        at(pattern), at(scores), a);
    return launched(im, "softmax", err);
}

/* gelu_new(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), evaluated as
 * x / (1 + exp(-2u)) as the CPU backend does (no cancellation near tanh = -1). */
__global__ void gelu_new_kernel(float *y, const float *x, size_t n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float v = x[i];
        float u = 0.7978845608028654f * (v + 0.044715f * (v * v * v));
        y[i] = v / (1.0f + expf(-2.0f * u));
    }
}

static int cu_gelu_new(model_backend *be, model_ref dst, model_ref src, size_t n, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (check_range(im, dst, n, "gelu_new", err) || check_range(im, src, n, "gelu_new", err)) {
        return COMMON_ERR_INVALID;
    }
    if (n == 0) {
        return 0;
    }
    gelu_new_kernel<<<blocks_for(n, 256), 256, 0, im->stream>>>(at(dst), at(src), n);
    return launched(im, "gelu_new", err);
}

/* ---- reductions ---- */

/* One thread per (group, column), adding the column's chosen rows in increasing order in
 * double: the additions, and so the roundings, of the CPU backend's loop (model.h), while
 * neighbouring threads read neighbouring columns of each row. */
__global__ void sum_rows_kernel(double *acc, size_t acc_ld, const float *x, size_t x_ld,
                                const int32_t *mask, size_t rows, size_t cols, size_t n_groups) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < n_groups * cols; i += (size_t)gridDim.x * blockDim.x) {
        size_t g = i / cols, c = i % cols;
        uint32_t bit = 1u << g;
        double s = acc[g * acc_ld + c];
        for (size_t r = 0; r < rows; r++) {
            if ((uint32_t)mask[r] & bit) {
                s += (double)x[r * x_ld + c];
            }
        }
        acc[g * acc_ld + c] = s;
    }
}

static int cu_sum_rows(model_backend *be, model_ref acc, size_t acc_ld, model_ref x, size_t x_ld,
                       model_ref mask, size_t rows, size_t cols, size_t n_groups, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (n_groups > MODEL_SUM_ROWS_MAX_GROUPS || acc.off % 2 != 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "%s sum_rows: %zu groups (at most %d) or an odd accumulator offset %zu",
                           im->name, n_groups, MODEL_SUM_ROWS_MAX_GROUPS, acc.off);
    }
    if (rows == 0 || cols == 0 || n_groups == 0) {
        return 0;
    }
    if (check_range(im, acc, 2 * ((n_groups - 1) * acc_ld + cols), "sum_rows acc", err) ||
        check_range(im, x, (rows - 1) * x_ld + cols, "sum_rows x", err) ||
        check_range(im, mask, rows, "sum_rows mask", err)) {
        return COMMON_ERR_INVALID;
    }
    sum_rows_kernel<<<blocks_for(n_groups * cols, 128), 128, 0, im->stream>>>(
        (double *)(void *)at(acc), acc_ld, at(x), x_ld, (const int32_t *)(const void *)at(mask),
        rows, cols, n_groups);
    return launched(im, "sum_rows", err);
}

#define CENTRE_WARPS 8

/* One warp per row: the lanes add strided columns in double, then combine by shuffles (an
 * order other than the CPU's, model.h), and each lane centres and scales its own columns. */
__global__ void centre_scale_kernel(float *x, const float *scale, size_t rows, size_t d,
                                    size_t period) {
    size_t row = (size_t)blockIdx.x * CENTRE_WARPS + (threadIdx.x >> 5);
    unsigned lane = threadIdx.x & 31;
    if (row >= rows) {
        return; /* whole warps leave together */
    }
    float *xr = x + row * d;
    double s = 0.0;
    for (size_t c = lane; c < d; c += 32) {
        s += (double)xr[c];
    }
    for (int o = 16; o > 0; o >>= 1) {
        s += __shfl_xor_sync(0xffffffffu, s, o);
    }
    float mu = (float)(s / (double)d), sc = scale[row % period];
    for (size_t c = lane; c < d; c += 32) {
        xr[c] = (xr[c] - mu) / sc;
    }
}

static int cu_centre_scale(model_backend *be, model_ref x, model_ref scale, size_t rows, size_t d,
                           size_t period, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0 || rows == 0 || d == 0) {
        return rc;
    }
    if (period == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "%s centre_scale: period 0", im->name);
    }
    if (check_range(im, x, rows * d, "centre_scale x", err) ||
        check_range(im, scale, period, "centre_scale scale", err)) {
        return COMMON_ERR_INVALID;
    }
    centre_scale_kernel<<<blocks_for(rows, CENTRE_WARPS), CENTRE_WARPS * 32, 0, im->stream>>>(
        at(x), at(scale), rows, d, period);
    return launched(im, "centre_scale", err);
}

/* One thread per cell (component, position), making the CPU backend's operations in its
 * order (model.h): the minima and maxima by the same comparisons, the sums in double in
 * increasing token order, then the cell's accumulators; no two threads share a cell. */
__global__ void legal_stats_kernel(double *count, double *sum, float *mn, float *mx, size_t cells,
                                   size_t acc_T, const float *x, const int32_t *legal,
                                   size_t n_comp, size_t T, size_t V) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i < n_comp * T; i += (size_t)gridDim.x * blockDim.x) {
        size_t comp = i / T, t = i % T;
        const int32_t *lg = legal + t * V;
        size_t n_legal = 0;
        for (size_t v = 0; v < V; v++) {
            n_legal += lg[v] != 0;
        }
        if (n_legal == 0 || n_legal == V) {
            continue;
        }
        const float *xr = x + (comp * T + t) * V;
        float mn_l = INFINITY, mx_i = -INFINITY;
        double sum_l = 0.0, sum_i = 0.0;
        for (size_t v = 0; v < V; v++) {
            float xv = xr[v];
            if (lg[v] != 0) {
                mn_l = xv < mn_l ? xv : mn_l;
                sum_l += (double)xv;
            } else {
                mx_i = xv > mx_i ? xv : mx_i;
                sum_i += (double)xv;
            }
        }
        double mean_l = sum_l / (double)n_legal, mean_i = sum_i / (double)(V - n_legal);
        double v6[MODEL_LEGAL_N_STATS] = {
            mn_l, mx_i, mean_l, mean_i, (double)mn_l - (double)mx_i, mean_l - mean_i};
        size_t cell = comp * acc_T + t;
        count[cell] += 1.0;
        for (size_t k = 0; k < MODEL_LEGAL_N_STATS; k++) {
            size_t e = k * cells + cell;
            float f = (float)v6[k];
            sum[e] += v6[k];
            mn[e] = f < mn[e] ? f : mn[e];
            mx[e] = f > mx[e] ? f : mx[e];
        }
    }
}

static int cu_legal_stats(model_backend *be, model_ref acc, size_t acc_T, model_ref x,
                          model_ref legal, size_t n_comp, size_t T, size_t V, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (T > acc_T || acc.off % 2 != 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "%s legal_stats: %zu positions into accumulators of %zu, or an odd "
                           "accumulator offset %zu",
                           im->name, T, acc_T, acc.off);
    }
    if (n_comp == 0 || T == 0 || V == 0) {
        return 0;
    }
    size_t cells = n_comp * acc_T;
    if (check_range(im, acc, MODEL_LEGAL_ACC_LEN(cells), "legal_stats acc", err) ||
        check_range(im, x, n_comp * T * V, "legal_stats x", err) ||
        check_range(im, legal, T * V, "legal_stats legal", err)) {
        return COMMON_ERR_INVALID;
    }
    float *a = at(acc);
    legal_stats_kernel<<<blocks_for(n_comp * T, 128), 128, 0, im->stream>>>(
        (double *)(void *)(a + MODEL_LEGAL_ACC_COUNT(cells)),
        (double *)(void *)(a + MODEL_LEGAL_ACC_SUM(cells)), a + MODEL_LEGAL_ACC_MIN(cells),
        a + MODEL_LEGAL_ACC_MAX(cells), cells, acc_T, at(x),
        (const int32_t *)(const void *)at(legal), n_comp, T, V);
    return launched(im, "legal_stats", err);
}

/* One thread per row, through the host's own arithmetic (metric_eval.h). */
__global__ void row_metrics_kernel(double *out, const float *x, size_t x_ld,
                                   const model_metric *spec, const unsigned char *masks,
                                   size_t n_masks, size_t rows, size_t V) {
    size_t r = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; r < rows; r += (size_t)gridDim.x * blockDim.x) {
        model_metric m = spec[r];
        bool mass = m.kind == MODEL_METRIC_MASS;
        if (mass && (m.mask < 0 || (size_t)m.mask >= n_masks)) {
            out[r] = NAN;
            continue;
        }
        out[r] = model_metric_value(&m, x + r * x_ld, mass ? masks + (size_t)m.mask * V : NULL, V);
    }
}

static int cu_row_metrics(model_backend *be, model_ref out, model_ref x, size_t x_ld,
                          model_ref spec, model_ref masks, size_t n_masks, size_t rows, size_t V,
                          char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (out.off % 2 != 0) {
        return common_fail(err, COMMON_ERR_INVALID, "%s row_metrics: odd offset %zu", im->name,
                           out.off);
    }
    if (rows == 0) {
        return 0;
    }
    if (check_range(im, out, 2 * rows, "row_metrics out", err) ||
        check_range(im, x, (rows - 1) * x_ld + V, "row_metrics x", err) ||
        check_range(im, spec, rows * MODEL_METRIC_FIELDS, "row_metrics spec", err) ||
        (n_masks > 0 && check_range(im, masks, (n_masks * V + 3) / 4, "row_metrics masks", err))) {
        return COMMON_ERR_INVALID;
    }
    row_metrics_kernel<<<blocks_for(rows, 64), 64, 0, im->stream>>>(
        (double *)(void *)at(out), at(x), x_ld, (const model_metric *)(const void *)at(spec),
        n_masks > 0 ? (const unsigned char *)(const void *)at(masks) : NULL, n_masks, rows, V);
    return launched(im, "row_metrics", err);
}

static int cu_sync(model_backend *be, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc == 0) {
        rc = refuse_capture(im, "sync", err);
    }
    return rc != 0 ? rc : drain(im, "sync", err);
}

/* ---- fused attention ---- */

#define ATTN_WARPS 4

/* One warp per (head, query): the lanes split the head's d_head columns; keys are visited in
 * order with an online softmax (running maximum m, running sum l, z rescaled when m grows), so
 * no score row is stored. The maximum skips NaN scores and a NaN score makes the row NaN, and
 * a row whose scores are all -inf gives z = 0, as attn_mask + softmax do. z accumulates in
 * place (each lane owns its columns), so any d_head works. The y blocks go over the packed
 * sequences (model_attn), the x warps over one sequence's heads and queries. */
__global__ void attn_fused_kernel(float *z, size_t z_ld, const float *q, size_t q_ld,
                                  const float *k, const float *v, size_t kv_ld, size_t n_heads,
                                  size_t d_head, float attn_scale, const int32_t *seqs,
                                  size_t n_seqs, size_t n_keys, size_t q_rows, size_t kv_rows,
                                  int *flag) {
    size_t row = (size_t)blockIdx.x * ATTN_WARPS + (threadIdx.x >> 5);
    unsigned lane = threadIdx.x & 31;
    for (size_t s = blockIdx.y; s < n_seqs; s += gridDim.y) {
        const int32_t *sq = seqs + s * MODEL_ATTN_SEQ_FIELDS;
        int32_t q_row = sq[0], kv_row = sq[1], q_begin = sq[2], q_end = sq[3];
        if (q_row < 0 || kv_row < 0 || q_begin < 0 || q_end < q_begin || (size_t)q_end > n_keys ||
            (size_t)q_row + (size_t)(q_end - q_begin) > q_rows ||
            (size_t)kv_row + (size_t)q_end > kv_rows) {
            if (row == 0 && lane == 0) {
                *flag = 1;
            }
            continue;
        }
        size_t nq = (size_t)(q_end - q_begin);
        if (row >= n_heads * nq) {
            continue; /* whole warps skip together: row is the same for all lanes of a warp */
        }
        size_t h = row / nq, i = row % nq, pos = (size_t)q_begin + i;
        const float *qr = q + ((size_t)q_row + i) * q_ld + h * d_head;
        float *zr = z + ((size_t)q_row + i) * z_ld + h * d_head;
        const float *ks = k + (size_t)kv_row * kv_ld, *vs = v + (size_t)kv_row * kv_ld;
        for (size_t d = lane; d < d_head; d += 32) {
            zr[d] = 0.0f;
        }
        float m = -INFINITY;
        double l = 0.0;
        for (size_t j = 0; j <= pos; j++) {
            const float *kr = ks + j * kv_ld + h * d_head;
            float dot = 0.0f;
            for (size_t d = lane; d < d_head; d += 32) {
                dot += qr[d] * kr[d];
            }
            for (int o = 16; o > 0; o >>= 1) {
                dot += __shfl_xor_sync(0xffffffffu, dot, o);
            }
            float sc = dot / attn_scale;
            float mn = sc > m ? sc : m;
            if (mn == -INFINITY) {
                continue; /* no finite score yet: this key weighs 0 */
            }
            float corr = expf(m - mn), p = expf(sc - mn);
            l = l * (double)corr + (double)p;
            const float *vr = vs + j * kv_ld + h * d_head;
            for (size_t d = lane; d < d_head; d += 32) {
                zr[d] = zr[d] * corr + p * vr[d];
            }
            m = mn;
        }
        if (m == -INFINITY) {
            continue; /* every key masked: TL's NaN -> 0, z stays 0 */
        }
        float inv = (float)(1.0 / l);
        for (size_t d = lane; d < d_head; d += 32) {
            zr[d] *= inv;
        }
    }
}

static int cu_attn_fused(model_backend *be, const model_attn *a, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (a->n_seqs == 0 || a->n_heads == 0 || a->d_head == 0 || a->n_keys == 0) {
        return 0;
    }
    size_t w = a->n_heads * a->d_head;
    if (a->q_rows == 0 || a->kv_rows == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "%s attn_fused: %zu query and %zu key rows",
                           im->name, a->q_rows, a->kv_rows);
    }
    if (check_range(im, a->seqs, a->n_seqs * MODEL_ATTN_SEQ_FIELDS, "attn_fused seqs", err) ||
        check_range(im, a->q, (a->q_rows - 1) * a->q_ld + w, "attn_fused q", err) ||
        check_range(im, a->z, (a->q_rows - 1) * a->z_ld + w, "attn_fused z", err) ||
        check_range(im, a->k, (a->kv_rows - 1) * a->kv_ld + w, "attn_fused k", err) ||
        check_range(im, a->v, (a->kv_rows - 1) * a->kv_ld + w, "attn_fused v", err)) {
        return COMMON_ERR_INVALID;
    }
    /* x: a warp per (head, query) of the longest possible sequence (n_keys queries); y: the
     * sequences, up to the grid's limit */
    dim3 grid(blocks_for(a->n_heads * a->n_keys, ATTN_WARPS),
              (unsigned)(a->n_seqs < 65535 ? a->n_seqs : 65535));
    attn_fused_kernel<<<grid, ATTN_WARPS * 32, 0, im->stream>>>(
        at(a->z), a->z_ld, at(a->q), a->q_ld, at(a->k), at(a->v), a->kv_ld, a->n_heads, a->d_head,
        a->attn_scale, (const int32_t *)(const void *)at(a->seqs), a->n_seqs, a->n_keys, a->q_rows,
        a->kv_rows, im->d_flag);
    return launched(im, "attn_fused", err);
}

/* ---- graphs ---- */

static int cu_graph_begin(model_backend *be, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc != 0) {
        return rc;
    }
    if (im->capturing) {
        return common_fail(err, COMMON_ERR_INVALID, "%s graph_begin: already recording", im->name);
    }
    /* thread-local: another thread's unrelated CUDA calls do not break this capture */
    cudaError_t e = cudaStreamBeginCapture(im->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) {
        return cuda_fail(im, e, "cudaStreamBeginCapture", err);
    }
    im->capturing = true;
    im->capture_err[0] = '\0';
    return 0;
}

static int cu_graph_end(model_backend *be, model_graph **out, char *err) {
    cuda_impl *im = impl_of(be);
    if (!im->capturing) {
        return common_fail(err, COMMON_ERR_INVALID, "%s graph_end: not recording", im->name);
    }
    (void)cudaSetDevice(im->device);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(im->stream, &graph);
    im->capturing = false;
    for (size_t i = 0; i < im->n_deferred; i++) {
        (void)cudaFreeAsync(im->deferred_free[i], im->stream);
    }
    free(im->deferred_free);
    im->deferred_free = NULL;
    im->n_deferred = 0;
    int rc = 0;
    if (e != cudaSuccess) {
        rc = cuda_fail(im, e, "cudaStreamEndCapture", err);
    } else if (im->capture_err[0] != '\0') {
        rc = common_fail(err, COMMON_ERR_INVALID, "%s graph_end: %s", im->name, im->capture_err);
    } else if (im->failed[0] != '\0') {
        rc = common_fail(err, COMMON_ERR_BACKEND, "%s failed while recording: %s", im->name,
                         im->failed);
    }
    model_graph *g = NULL;
    if (rc == 0) {
        g = (model_graph *)calloc(1, sizeof *g);
        if (g == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "%s graph_end: out of host memory", im->name);
        }
    }
    if (rc == 0) {
        e = cudaGraphInstantiate(&g->exec, graph, 0);
        if (e != cudaSuccess) {
            free(g);
            g = NULL;
            rc = cuda_fail(im, e, "cudaGraphInstantiate", err);
        }
    }
    if (graph != NULL) {
        (void)cudaGraphDestroy(graph); /* the executable graph keeps what it needs */
    }
    if (rc == 0) {
        *out = g;
    }
    return rc;
}

static int cu_graph_launch(model_backend *be, model_graph *g, char *err) {
    cuda_impl *im = impl_of(be);
    int rc = check_alive(im, err);
    if (rc == 0) {
        rc = refuse_capture(im, "graph_launch", err);
    }
    if (rc != 0) {
        return rc;
    }
    cudaError_t e = cudaGraphLaunch(g->exec, im->stream);
    return e == cudaSuccess ? 0 : cuda_fail(im, e, "cudaGraphLaunch", err);
}

static void cu_graph_destroy(model_backend *be, model_graph *g) {
    if (g == NULL) {
        return;
    }
    (void)cudaSetDevice(impl_of(be)->device);
    (void)cudaGraphExecDestroy(g->exec);
    free(g);
}

/* ---- for gpu/ (gpu_int.h) ---- */

static void cu_destroy(model_backend *be);

extern "C" bool gpu_backend_is_cuda(const model_backend *be) {
    return be != NULL && be->destroy == cu_destroy;
}

extern "C" int gpu_backend_device(const model_backend *be) {
    return impl_of(be)->device;
}

extern "C" void *gpu_backend_stream(const model_backend *be) {
    return (void *)impl_of(be)->stream;
}

extern "C" void *gpu_ref_ptr(model_ref r) {
    return (void *)at(r);
}

extern "C" int gpu_backend_fail(model_backend *be, const char *what, char *err) {
    cuda_impl *im = impl_of(be);
    im->sticky = true;
    if (im->failed[0] == '\0') {
        snprintf(im->failed, sizeof im->failed, "%s", what);
    }
    return common_fail(err, COMMON_ERR_BACKEND, "%s %s", im->name, im->failed);
}

extern "C" int gpu_backend_check(model_backend *be, char *err) {
    return check_alive(impl_of(be), err);
}

/* ---- lifetime ---- */

static void cu_destroy(model_backend *be) {
    cuda_impl *im = impl_of(be);
    if (im != NULL) {
        cudaSetDevice(im->device);
        if (im->stream != NULL) {
            cudaStreamSynchronize(im->stream);
        }
        if (im->blas != NULL) {
            cublasDestroy(im->blas);
        }
        if (im->capturing) {
            cudaGraph_t graph = NULL;
            if (cudaStreamEndCapture(im->stream, &graph) == cudaSuccess && graph != NULL) {
                cudaGraphDestroy(graph);
            }
        }
        for (size_t i = 0; i < im->n_deferred; i++) {
            cudaFree(im->deferred_free[i]);
        }
        free(im->deferred_free);
        cudaFree(im->d_blas_ws);
        cudaFree(im->d_flag);
        cudaFreeHost(im->h_flag);
        if (im->stream != NULL) {
            cudaStreamDestroy(im->stream);
        }
        /* An illegal address or a lost device leaves the device's context unusable for the
         * whole process: reset it, so that the next backend on this device starts on a fresh
         * one (gpu.h). Out of memory leaves it usable and is not a reason. */
        if (im->sticky) {
            (void)cudaDeviceReset();
        }
        (void)cudaGetLastError();
        free(im);
    }
    free(be);
}

extern "C" int gpu_backend_new(model_backend **out, int device, const gpu_backend_opts *o,
                               char *err) {
    *out = NULL;
    int count = 0;
    int rc = gpu_device_count(&count, err);
    if (rc != 0) {
        return rc;
    }
    if (device < 0 || device >= count) {
        return common_fail(err, COMMON_ERR_NOT_FOUND, "cuda backend: no device %d (%d visible)",
                           device, count);
    }
    model_backend *be = (model_backend *)calloc(1, sizeof *be);
    cuda_impl *im = (cuda_impl *)calloc(1, sizeof *im);
    if (be == NULL || im == NULL) {
        free(be);
        free(im);
        return common_fail(err, COMMON_ERR_NOMEM, "cuda backend: out of memory");
    }
    be->impl = im;
    im->device = device;
    snprintf(im->name, sizeof im->name, "cuda:%d", device);
    be->name = im->name;
    be->destroy = cu_destroy;
    cudaError_t e = cudaSetDevice(device);
    const char *what = "cudaSetDevice";
    if (e == cudaSuccess) {
        what = "cudaStreamCreate";
        e = cudaStreamCreateWithFlags(&im->stream, cudaStreamNonBlocking);
    }
    if (e == cudaSuccess) {
        what = "cudaMalloc";
        e = cudaMalloc((void **)&im->d_flag, sizeof(int));
    }
    if (e == cudaSuccess) {
        what = "cudaMallocHost";
        e = cudaMallocHost((void **)&im->h_flag, sizeof(int));
    }
    if (e == cudaSuccess) {
        what = "cudaMemset";
        e = cudaMemset(im->d_flag, 0, sizeof(int));
        *im->h_flag = 0;
    }
    if (e == cudaSuccess) {
        /* keep freed pool memory for the next run rather than handing it back at each sync */
        cudaMemPool_t pool;
        what = "cudaDeviceGetDefaultMemPool";
        e = cudaDeviceGetDefaultMemPool(&pool, device);
        uint64_t keep = UINT64_MAX;
        if (e == cudaSuccess) {
            what = "cudaMemPoolSetAttribute";
            e = cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep);
        }
    }
    if (e != cudaSuccess) {
        rc = common_fail(err, COMMON_ERR_BACKEND, "cuda backend on device %d: %s: %s", device, what,
                         cudaGetErrorString(e));
        cu_destroy(be);
        return rc;
    }
    cublasStatus_t s = cublasCreate(&im->blas);
    if (s == CUBLAS_STATUS_SUCCESS) {
        s = cublasSetStream(im->blas, im->stream);
    }
    if (s == CUBLAS_STATUS_SUCCESS) {
        /* a workspace of our own: cuBLAS would otherwise allocate one inside a graph capture */
        cudaError_t we = cudaMalloc(&im->d_blas_ws, BLAS_WORKSPACE);
        s = we == cudaSuccess ? cublasSetWorkspace(im->blas, im->d_blas_ws, BLAS_WORKSPACE)
                              : CUBLAS_STATUS_ALLOC_FAILED;
    }
    if (s == CUBLAS_STATUS_SUCCESS) {
        /* float32 products stay float32 unless TF32 is asked for (gpu.h states its error) */
        s = cublasSetMathMode(im->blas, o != NULL && o->tf32 ? CUBLAS_TF32_TENSOR_OP_MATH
                                                             : CUBLAS_DEFAULT_MATH);
    }
    if (s != CUBLAS_STATUS_SUCCESS) {
        rc = common_fail(err, COMMON_ERR_BACKEND, "cuda backend on device %d: cuBLAS: %s", device,
                         cublasGetStatusString(s));
        cu_destroy(be);
        return rc;
    }
    be->alloc = cu_alloc;
    be->free = cu_free;
    be->mem_stats = cu_mem_stats;
    be->reset_peak = cu_reset_peak;
    be->upload = cu_upload;
    be->download = cu_download;
    be->copy2d = cu_copy2d;
    be->fill = cu_fill;
    be->gemm = cu_gemm;
    be->add = cu_add;
    be->layer_norm = cu_layer_norm;
    be->affine = cu_affine;
    be->gather_rows = cu_gather_rows;
    be->copy_rows = cu_copy_rows;
    be->attn_mask = cu_attn_mask;
    be->softmax = cu_softmax;
    be->gelu_new = cu_gelu_new;
    be->sync = cu_sync;
    be->sum_rows = cu_sum_rows;
    be->centre_scale = cu_centre_scale;
    be->legal_stats = cu_legal_stats;
    be->row_metrics = cu_row_metrics;
    be->attn_fused = cu_attn_fused;
    be->graph_begin = cu_graph_begin;
    be->graph_end = cu_graph_end;
    be->graph_launch = cu_graph_launch;
    be->graph_destroy = cu_graph_destroy;
    *out = be;
    return 0;
}
