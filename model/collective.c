/*
 * The host collective (model.h, model_collective_host_new): copies and sums between the buffers
 * of several backends through host memory, with nothing but each backend's upload and
 * download. It is what a group of CPU backends uses, what the tests check a split task
 * against, and what a GPU build without NCCL falls back to; gpu/ has the NCCL one, which
 * moves the same bytes device to device.
 *
 * The reduction adds in rank order (rank 0 first), so its result is deterministic; NCCL's order
 * is its own, which is why the interface promises double rounding, not bit equality.
 */
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

typedef struct host_coll {
    model_backend **bes; /* [n_ranks], borrowed */
} host_coll;

static host_coll *host_of(const model_collective *c) {
    return c->impl;
}

static int check_bufs(const model_collective *c, const model_ref *bufs, size_t root, char *err) {
    if (root >= c->n_ranks) {
        return common_fail(err, COMMON_ERR_INVALID, "%s collective: root %zu of %zu ranks", c->name,
                           root, c->n_ranks);
    }
    for (size_t r = 0; r < c->n_ranks; r++) {
        if (bufs[r].buf == NULL) {
            return common_fail(err, COMMON_ERR_INVALID, "%s collective: no buffer for rank %zu",
                               c->name, r);
        }
    }
    return 0;
}

static int host_broadcast(model_collective *c, const model_ref *bufs, size_t n, size_t root,
                          char *err) {
    int rc = check_bufs(c, bufs, root, err);
    if (rc != 0 || n == 0 || c->n_ranks == 1) {
        return rc;
    }
    model_backend **bes = host_of(c)->bes;
    float *stage = malloc(n * sizeof *stage);
    if (stage == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "host collective: out of memory for %zu elements",
                           n);
    }
    rc = bes[root]->download(bes[root], stage, bufs[root], n, err);
    for (size_t r = 0; r < c->n_ranks && rc == 0; r++) {
        if (r != root) {
            rc = bes[r]->upload(bes[r], bufs[r], stage, n, err);
        }
    }
    free(stage);
    return rc;
}

static int host_reduce_sum_f64(model_collective *c, const model_ref *bufs, size_t n, size_t root,
                               char *err) {
    int rc = check_bufs(c, bufs, root, err);
    if (rc != 0 || n == 0) {
        return rc;
    }
    for (size_t r = 0; r < c->n_ranks; r++) {
        if (bufs[r].off % 2 != 0) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "host collective: rank %zu's doubles start at an odd offset", r);
        }
    }
    if (c->n_ranks == 1) {
        return 0;
    }
    model_backend **bes = host_of(c)->bes;
    double *sum = malloc(n * sizeof *sum), *part = malloc(n * sizeof *part);
    if (sum == NULL || part == NULL) {
        free(sum);
        free(part);
        return common_fail(err, COMMON_ERR_NOMEM, "host collective: out of memory for %zu doubles",
                           n);
    }
    rc = bes[0]->download(bes[0], sum, bufs[0], 2 * n, err);
    for (size_t r = 1; r < c->n_ranks && rc == 0; r++) {
        rc = bes[r]->download(bes[r], part, bufs[r], 2 * n, err);
        for (size_t i = 0; i < n && rc == 0; i++) {
            sum[i] += part[i];
        }
    }
    if (rc == 0) {
        rc = bes[root]->upload(bes[root], bufs[root], sum, 2 * n, err);
    }
    free(sum);
    free(part);
    return rc;
}

static void host_destroy(model_collective *c) {
    host_coll *h = host_of(c);
    if (h != NULL) {
        free(h->bes);
        free(h);
    }
    free(c);
}

int model_collective_host_new(model_collective **out, model_backend *const *bes, size_t n,
                              char *err) {
    if (n == 0 || bes == NULL) {
        return common_fail(err, COMMON_ERR_INVALID, "host collective: no ranks");
    }
    for (size_t r = 0; r < n; r++) {
        if (bes[r] == NULL) {
            return common_fail(err, COMMON_ERR_INVALID, "host collective: no backend for rank %zu",
                               r);
        }
    }
    model_collective *c = calloc(1, sizeof *c);
    host_coll *h = calloc(1, sizeof *h);
    model_backend **copy = malloc(n * sizeof *copy);
    if (c == NULL || h == NULL || copy == NULL) {
        free(c);
        free(h);
        free(copy);
        return common_fail(err, COMMON_ERR_NOMEM, "host collective: out of memory");
    }
    memcpy(copy, bes, n * sizeof *copy);
    h->bes = copy;
    *c = (model_collective){.name = "host",
                            .n_ranks = n,
                            .impl = h,
                            .destroy = host_destroy,
                            .broadcast = host_broadcast,
                            .reduce_sum_f64 = host_reduce_sum_f64};
    *out = c;
    return 0;
}

void model_collective_destroy(model_collective **c) {
    if (c == NULL || *c == NULL) {
        return;
    }
    (*c)->destroy(*c);
    *c = NULL;
}
