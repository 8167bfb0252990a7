/*
 * The NCCL collective (gpu.h, gpu_collective_new): the weights of a worker's model go from
 * device 0 to the others with ncclBroadcast, and the partial sums of a split task come to one
 * device with ncclReduce, device to device over NVLink or PCIe, never through the host. One
 * process drives every device (ncclCommInitAll), so each operation is one NCCL group of one
 * call per rank, each queued on that rank's backend stream: it is ordered after the work the
 * backend queued before it and before what it queues next, with no host synchronisation.
 *
 * A build without NCCL (CHESSLENS_HAVE_NCCL undefined) compiles only the refusal; the worker
 * then uses the host collective (model_collective_host_new).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(CHESSLENS_HAVE_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>
#endif

extern "C" {
#include "common/common.h"
#include "gpu/gpu.h"
#include "gpu/gpu_int.h"
}

#if defined(CHESSLENS_HAVE_NCCL)

typedef struct nccl_coll {
    model_backend **bes; /* [n], borrowed */
    ncclComm_t *comms;   /* [n] */
} nccl_coll;

static nccl_coll *nccl_of(const model_collective *c) {
    return (nccl_coll *)c->impl;
}

/* BACKEND naming the NCCL error; every rank's backend keeps it as its failure, since a failed
 * collective leaves their streams in an unknown state. */
static int nccl_fail(model_collective *c, ncclResult_t r, const char *op, char *err) {
    nccl_coll *h = nccl_of(c);
    char what[COMMON_ERR_LEN];
    snprintf(what, sizeof what, "%s: %s", op, ncclGetErrorString(r));
    for (size_t k = 0; k < c->n_ranks; k++) {
        gpu_backend_fail(h->bes[k], what, NULL);
    }
    return common_fail(err, COMMON_ERR_BACKEND, "nccl collective %s", what);
}

/* Each rank alive and its buffer given; the calling thread is left on the last one's device. */
static int check_ranks(model_collective *c, const model_ref *bufs, size_t root, char *err) {
    nccl_coll *h = nccl_of(c);
    if (root >= c->n_ranks) {
        return common_fail(err, COMMON_ERR_INVALID, "nccl collective: root %zu of %zu ranks", root,
                           c->n_ranks);
    }
    for (size_t r = 0; r < c->n_ranks; r++) {
        if (bufs[r].buf == NULL) {
            return common_fail(err, COMMON_ERR_INVALID, "nccl collective: no buffer for rank %zu",
                               r);
        }
        int rc = gpu_backend_check(h->bes[r], err);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int nccl_broadcast(model_collective *c, const model_ref *bufs, size_t n, size_t root,
                          char *err) {
    int rc = check_ranks(c, bufs, root, err);
    if (rc != 0 || n == 0 || c->n_ranks == 1) {
        return rc;
    }
    nccl_coll *h = nccl_of(c);
    ncclResult_t r = ncclGroupStart();
    for (size_t k = 0; k < c->n_ranks && r == ncclSuccess; k++) {
        /* 4-byte elements copied as they are: float32 and int32 alike */
        r = ncclBroadcast(gpu_ref_ptr(bufs[root]), gpu_ref_ptr(bufs[k]), n, ncclFloat, (int)root,
                          h->comms[k], (cudaStream_t)gpu_backend_stream(h->bes[k]));
    }
    ncclResult_t e = ncclGroupEnd();
    return r != ncclSuccess   ? nccl_fail(c, r, "ncclBroadcast", err)
           : e != ncclSuccess ? nccl_fail(c, e, "ncclGroupEnd(broadcast)", err)
                              : 0;
}

static int nccl_reduce_sum_f64(model_collective *c, const model_ref *bufs, size_t n, size_t root,
                               char *err) {
    int rc = check_ranks(c, bufs, root, err);
    if (rc != 0 || n == 0) {
        return rc;
    }
    for (size_t k = 0; k < c->n_ranks; k++) {
        if (bufs[k].off % 2 != 0) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "nccl collective: rank %zu's doubles start at an odd offset", k);
        }
    }
    if (c->n_ranks == 1) {
        return 0;
    }
    nccl_coll *h = nccl_of(c);
    ncclResult_t r = ncclGroupStart();
    for (size_t k = 0; k < c->n_ranks && r == ncclSuccess; k++) {
        /* in place on the root (send and receive buffers equal); the others only send */
        r = ncclReduce(gpu_ref_ptr(bufs[k]), gpu_ref_ptr(bufs[k]), n, ncclDouble, ncclSum,
                       (int)root, h->comms[k], (cudaStream_t)gpu_backend_stream(h->bes[k]));
    }
    ncclResult_t e = ncclGroupEnd();
    return r != ncclSuccess   ? nccl_fail(c, r, "ncclReduce", err)
           : e != ncclSuccess ? nccl_fail(c, e, "ncclGroupEnd(reduce)", err)
                              : 0;
}

static void nccl_destroy(model_collective *c) {
    nccl_coll *h = nccl_of(c);
    if (h != NULL) {
        for (size_t k = 0; h->comms != NULL && k < c->n_ranks; k++) {
            if (h->comms[k] != NULL) {
                (void)cudaSetDevice(gpu_backend_device(h->bes[k]));
                (void)ncclCommDestroy(h->comms[k]);
            }
        }
        free(h->comms);
        free(h->bes);
        free(h);
    }
    free(c);
}

extern "C" bool gpu_have_nccl(void) {
    return true;
}

extern "C" int gpu_collective_new(model_collective **out, model_backend *const *bes, size_t n,
                                  char *err) {
    if (n == 0 || bes == NULL || n > 1024) {
        return common_fail(err, COMMON_ERR_INVALID, "nccl collective: %zu ranks", n);
    }
    int *devs = (int *)malloc(n * sizeof *devs);
    model_collective *c = (model_collective *)calloc(1, sizeof *c);
    nccl_coll *h = (nccl_coll *)calloc(1, sizeof *h);
    if (devs != NULL && h != NULL) {
        h->bes = (model_backend **)malloc(n * sizeof *h->bes);
        h->comms = (ncclComm_t *)calloc(n, sizeof *h->comms);
    }
    if (devs == NULL || c == NULL || h == NULL || h->bes == NULL || h->comms == NULL) {
        free(devs);
        free(c);
        if (h != NULL) {
            free(h->bes);
            free(h->comms);
        }
        free(h);
        return common_fail(err, COMMON_ERR_NOMEM, "nccl collective: out of memory");
    }
    *c = (model_collective){.name = "nccl",
                            .n_ranks = n,
                            .impl = h,
                            .destroy = nccl_destroy,
                            .broadcast = nccl_broadcast,
                            .reduce_sum_f64 = nccl_reduce_sum_f64};
    memcpy(h->bes, bes, n * sizeof *h->bes);
    int rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        if (!gpu_backend_is_cuda(bes[k])) {
            rc = common_fail(err, COMMON_ERR_INVALID,
                             "nccl collective: rank %zu's backend '%s' is not a CUDA one", k,
                             bes[k] != NULL ? bes[k]->name : "(null)");
            break;
        }
        devs[k] = gpu_backend_device(bes[k]);
        for (size_t j = 0; j < k; j++) {
            if (devs[j] == devs[k]) {
                rc = common_fail(err, COMMON_ERR_INVALID,
                                 "nccl collective: ranks %zu and %zu are both on device %d", j, k,
                                 devs[k]);
            }
        }
    }
    if (rc == 0) {
        ncclResult_t r = ncclCommInitAll(h->comms, (int)n, devs);
        if (r != ncclSuccess) {
            memset(h->comms, 0, n * sizeof *h->comms);
            rc = common_fail(err, COMMON_ERR_BACKEND, "nccl collective: ncclCommInitAll(%zu): %s",
                             n, ncclGetErrorString(r));
        }
    }
    free(devs);
    if (rc != 0) {
        nccl_destroy(c);
        return rc;
    }
    *out = c;
    return 0;
}

#else /* no NCCL in this build */

extern "C" bool gpu_have_nccl(void) {
    return false;
}

extern "C" int gpu_collective_new(model_collective **out, model_backend *const *bes, size_t n,
                                  char *err) {
    (void)out;
    (void)bes;
    (void)n;
    return common_fail(err, COMMON_ERR_UNSUPPORTED,
                       "nccl collective: this chesslens was built without NCCL (nccl.h or "
                       "libnccl was not found when it was configured)");
}

#endif
