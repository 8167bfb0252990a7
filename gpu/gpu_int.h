/*
 * What the files of gpu/ share about the CUDA backend (backend_cuda.cu), without CUDA types so
 * that the header stays plain C: the NCCL collective needs each backend's device, stream and
 * buffer addresses, and marks a backend failed when a collective on its stream fails. Never
 * included outside gpu/.
 */
#ifndef CHESSLENS_GPU_INT_H
#define CHESSLENS_GPU_INT_H

#include <stdbool.h>

#include "model/model.h"

/* True when be was made by gpu_backend_new. */
bool gpu_backend_is_cuda(const model_backend *be);
/* Its device index and its stream (a cudaStream_t). */
int gpu_backend_device(const model_backend *be);
void *gpu_backend_stream(const model_backend *be);
/* The device address of r (its buffer must be a CUDA backend's). */
void *gpu_ref_ptr(model_ref r);
/* BACKEND with the backend's kept error, or 0 with the calling thread bound to its device. */
int gpu_backend_check(model_backend *be, char *err);
/* Keeps `what` as the backend's failure (as its own CUDA errors are: every later operation
 * fails with it, and destroying it resets the device) and returns BACKEND naming it. */
int gpu_backend_fail(model_backend *be, const char *what, char *err);

#endif
