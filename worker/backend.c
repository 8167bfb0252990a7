/*
 * The backend a worker names (worker.h, worker_backend_new): the CPU backend, or the CUDA
 * backend of gpu/ when this build has it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker.h"

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
