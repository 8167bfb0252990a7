/*
 * gpu: the CUDA side of chesslens. C code sees only this header (no CUDA types); each
 * gpu/<op>.cu holds its kernels and an extern "C" launcher that checks for launch errors and
 * returns an error code instead of exiting.
 *
 * The CUDA implementation of the model backend interface grows here; today it offers device
 * discovery and the gelu_new activation (TL's tanh form), checked against a CPU reference.
 */
#ifndef CHESSLENS_GPU_H
#define CHESSLENS_GPU_H

#include <stddef.h>

/* Sets *count to the number of CUDA devices this process can use. A machine without a GPU or
 * without the NVIDIA driver is not an error: *count is 0. */
int gpu_device_count(int *count, char *err);

/* Describes device `index` as "NAME, N MiB" into buf (buf_len bytes). */
int gpu_device_describe(int index, char *buf, size_t buf_len, char *err);

/* y[i] = gelu_new(x[i]) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) for n floats, computed
 * on the current device. x and y are host arrays of n floats (borrowed); the data are copied to
 * the device and back. */
int gpu_gelu_new(const float *x, float *y, size_t n, char *err);

#endif
