/*
 * The backend a worker names (worker.h, worker_backend_new): the CPU backend, or the CUDA
 * backend of gpu/ when this build has it; the spelling of several devices, and the collective
 * between them (NCCL when gpu/ was built with it, else through host memory).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker_int.h"

#if defined(CHESSLENS_HAVE_GPU)
#include "gpu/gpu.h"
#endif

int worker_backend_new(model_backend **out, const char *backend, int threads, char *err) {
    *out = NULL;
    if (backend != NULL && strcmp(backend, "cpu") == 0) {
        return model_backend_cpu_new(out, threads, err);
    }
    if (backend == NULL || strncmp(backend, "cuda", 4) != 0 ||
        (backend[4] != '\0' && backend[4] != ':')) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "backend '%s' is not supported (cpu, cuda, cuda:N)",
                           backend != NULL ? backend : "(null)");
    }
    long device = 0;
    if (backend[4] == ':') {
        char *end = NULL;
        errno = 0;
        device = strtol(backend + 5, &end, 10);
        if (backend[5] < '0' || backend[5] > '9' || errno != 0 || *end != '\0' || device > 1024) {
            return common_fail(err, COMMON_ERR_INVALID, "backend '%s': not a device number",
                               backend);
        }
    }
#if defined(CHESSLENS_HAVE_GPU)
    return gpu_backend_new(out, (int)device, NULL, err);
#else
    return common_fail(err, COMMON_ERR_UNSUPPORTED,
                       "backend '%s': this chesslens was built without the GPU backend (nvcc "
                       "was not found when it was configured)",
                       backend);
#endif
}

int worker_backend_spec_parse(const char *backend, char kind[8], int *devices, size_t cap,
                              size_t *n, char *err) {
    *n = 0;
    if (backend == NULL) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "backend (null) is not supported");
    }
    size_t klen = strcspn(backend, ":");
    if (!((klen == 3 && strncmp(backend, "cpu", 3) == 0) ||
          (klen == 4 && strncmp(backend, "cuda", 4) == 0))) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "backend '%s' is not supported (cpu, cuda, cuda:N, cuda:0,1,...)",
                           backend);
    }
    memcpy(kind, backend, klen);
    kind[klen] = '\0';
    if (backend[klen] == '\0') {
        devices[(*n)++] = 0;
        return cap > 0 ? 0 : common_fail(err, COMMON_ERR_INVALID, "backend '%s': no room", backend);
    }
    for (const char *p = backend + klen + 1;;) {
        char *end = NULL;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (*p < '0' || *p > '9' || errno != 0 || v > 1024 || (*end != ',' && *end != '\0')) {
            return common_fail(err, COMMON_ERR_INVALID, "backend '%s': not a device number",
                               backend);
        }
        for (size_t i = 0; i < *n; i++) {
            if (devices[i] == (int)v) {
                return common_fail(err, COMMON_ERR_INVALID, "backend '%s': device %ld twice",
                                   backend, v);
            }
        }
        if (*n == cap) {
            return common_fail(err, COMMON_ERR_INVALID, "backend '%s': more than %zu devices",
                               backend, cap);
        }
        devices[(*n)++] = (int)v;
        if (*end == '\0') {
            return 0;
        }
        p = end + 1;
    }
}

int worker_collective_new(model_collective **out, const char *kind, model_backend *const *bes,
                          size_t n, char *err) {
#if defined(CHESSLENS_HAVE_GPU)
    if (strcmp(kind, "cuda") == 0 && gpu_have_nccl()) {
        return gpu_collective_new(out, bes, n, err);
    }
#endif
    (void)kind;
    /* CPU ranks, or CUDA ranks in a build without NCCL: through host memory */
    return model_collective_host_new(out, bes, n, err);
}
