/*
 * gpu: the CUDA side of chesslens. C code sees only this header (no CUDA types); each
 * gpu/<part>.cu holds its kernels and extern "C" functions that check every CUDA call and
 * return an error code instead of exiting.
 *
 * gpu_backend_new is the CUDA implementation of the model backend interface (model/model.h):
 * every operation a forward pass, a cache, an analysis or a patched run needs, on one device
 * and one stream, so that everything above `model` runs on a GPU unchanged.
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill err (COMMON_ERR_LEN
 * bytes, NULL allowed).
 */
#ifndef CHESSLENS_GPU_H
#define CHESSLENS_GPU_H

#include <stdbool.h>
#include <stddef.h>

#include "model/model.h"

/* Sets *count to the number of CUDA devices this process can use. A machine without a GPU or
 * without the NVIDIA driver is not an error: *count is 0. */
int gpu_device_count(int *count, char *err);

/* Describes device `index` as "NAME, N MiB" into buf (buf_len bytes). */
int gpu_device_describe(int index, char *buf, size_t buf_len, char *err);

typedef struct gpu_backend_opts {
    /* Matrix products in TF32 on the tensor cores (10-bit mantissa inputs, float32
     * accumulation): faster, and no longer equal to the CPU backend to float32 rounding (its
     * measured error is printed by bench/gpu). Off: float32 throughout. */
    bool tf32;
} gpu_backend_opts;

/* A backend on CUDA device `device` (an index among the visible devices) with its own stream
 * and cuBLAS handle. opts NULL: the defaults (float32). NOT_FOUND for a device that is not
 * there. The backend serves one host thread at a time (as the CPU backend); every operation
 * binds the calling thread to the backend's device first (cudaSetDevice), so that the thread
 * may change from one task to the next and one thread may drive backends on several devices.
 * Its operations are queued and return at once, except download and sync, which wait and
 * report any error of what was queued. After a CUDA error other than an allocation's
 * out-of-memory (an illegal address, a lost device) every operation fails with that error's
 * text (BACKEND): destroy the backend (and its sessions first) and make a new one. Destroying
 * a backend that failed so resets its device's primary context (cudaDeviceReset), since the
 * error has made it unusable for the whole process: any other backend on that device must be
 * destroyed too (it has failed as well). */
int gpu_backend_new(model_backend **out, int device, const gpu_backend_opts *opts, char *err);

/* True when this build has NCCL (cmake/ChesslensDeps.cmake found nccl.h and libnccl). */
bool gpu_have_nccl(void);

/* The NCCL collective (model.h, model_collective) over n CUDA backends on n distinct devices,
 * one process driving them all (ncclCommInitAll): broadcast and reduce_sum_f64 run as grouped
 * NCCL calls queued on each backend's own stream, device to device, with no host copy. A
 * failed NCCL call fails the collective (BACKEND, with NCCL's text) and every backend it ran
 * on (as a CUDA error would: destroy them and the collective). bes [n] are borrowed and must
 * outlive it. UNSUPPORTED in a build without NCCL (gpu_have_nccl: use
 * model_collective_host_new); INVALID for a backend that is not a CUDA one, or two on one
 * device. */
int gpu_collective_new(model_collective **out, model_backend *const *bes, size_t n, char *err);

#endif
