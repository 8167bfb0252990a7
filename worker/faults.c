/*
 * A fault-injecting computation (worker_compute_faulty, worker/service.h): it wraps another
 * computation and, for the task ids its spec names, fails, hangs or aborts instead of running
 * it, fails a task's first attempts only (a transient failure), and can slow every task
 * down. Reliability tests (a poison task, a worker killed
 * mid-task, a computation that hangs while its socket stays up) run a real chesslens-worker
 * with --faults, so the service code they exercise is the production one.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/service.h"

#define MAX_IDS 64           /* task ids per fault kind */
#define MAX_SLEEP_MS 3600000 /* an hour */
#define SLEEP_SLICE_MS 10    /* progress is reported this often while sleeping */
#define MAX_FLAKY_K 1000     /* failed attempts of a flaky task */

typedef struct id_list {
    size_t n;
    int64_t id[MAX_IDS];
} id_list;

/* flaky=ID:K: the task's attempts up to k fail */
typedef struct flaky_list {
    size_t n;
    int64_t id[MAX_IDS];
    uint32_t k[MAX_IDS];
} flaky_list;

typedef struct faulty {
    worker_compute inner;
    id_list fail, hang, abort_;
    flaky_list flaky;
    uint32_t sleep_ms;
} faulty;

static bool has_id(const id_list *l, int64_t id) {
    for (size_t i = 0; i < l->n; i++) {
        if (l->id[i] == id) {
            return true;
        }
    }
    return false;
}

static void sleep_ms(uint32_t ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int faulty_run(void *self, const worker_task_in *t, worker_progress_fn progress, void *pctx,
                      uint8_t **out, size_t *out_len, uint64_t *n_rows, char *err) {
    faulty *f = self;
    for (uint32_t slept = 0; slept < f->sleep_ms; slept += SLEEP_SLICE_MS) {
        uint32_t left = f->sleep_ms - slept;
        sleep_ms(left < SLEEP_SLICE_MS ? left : SLEEP_SLICE_MS);
        progress(pctx, 0.0);
    }
    if (has_id(&f->abort_, t->task)) {
        abort();
    }
    if (has_id(&f->hang, t->task)) {
        for (;;) {
            sleep_ms(1000); /* no progress: the lease must lapse */
        }
    }
    if (has_id(&f->fail, t->task)) {
        return common_fail(err, COMMON_ERR_INVALID, "injected failure");
    }
    for (size_t i = 0; i < f->flaky.n; i++) {
        if (f->flaky.id[i] == t->task && t->attempt <= f->flaky.k[i]) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "injected transient failure (attempt %" PRIu32 " of %" PRIu32 ")",
                               t->attempt, f->flaky.k[i]);
        }
    }
    return f->inner.run(f->inner.self, t, progress, pctx, out, out_len, n_rows, err);
}

static size_t faulty_models(void *self, const char *out[PROTO_MAX_MODELS]) {
    faulty *f = self;
    return f->inner.models != NULL ? f->inner.models(f->inner.self, out) : 0;
}

static void faulty_destroy(void *self) {
    faulty *f = self;
    worker_compute_destroy(&f->inner);
    free(f);
}

static int parse_faults(faulty *f, const char *spec, char *err) {
    const char *p = spec != NULL ? spec : "", *key = NULL, *val = NULL;
    size_t klen = 0, vlen = 0;
    int got;
    while ((got = common_kv_next(&p, &key, &klen, &val, &vlen, "faults", err)) == 1) {
        int n = (int)(klen + 1 + vlen); /* the entry, for messages */
        if (klen == 5 && memcmp(key, "flaky", 5) == 0) {
            const char *colon = memchr(val, ':', vlen);
            int64_t id = 0, k = 0;
            if (colon == NULL || !common_parse_i64(val, (size_t)(colon - val), 1, INT64_MAX, &id) ||
                !common_parse_i64(colon + 1, vlen - (size_t)(colon - val) - 1, 1, MAX_FLAKY_K,
                                  &k)) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "faults: '%.*s': expected flaky=TASK:K (K in 1..%d)", n, key,
                                   MAX_FLAKY_K);
            }
            if (f->flaky.n == MAX_IDS) {
                return common_fail(err, COMMON_ERR_INVALID, "faults: more than %d ids for one key",
                                   MAX_IDS);
            }
            f->flaky.id[f->flaky.n] = id;
            f->flaky.k[f->flaky.n++] = (uint32_t)k;
            continue;
        }
        id_list *l = NULL;
        if (klen == 9 && memcmp(key, "fail_task", 9) == 0) {
            l = &f->fail;
        } else if (klen == 9 && memcmp(key, "hang_task", 9) == 0) {
            l = &f->hang;
        } else if (klen == 10 && memcmp(key, "abort_task", 10) == 0) {
            l = &f->abort_;
        } else if (!(klen == 8 && memcmp(key, "sleep_ms", 8) == 0)) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "faults: unknown key '%.*s' (fail_task, hang_task, abort_task, "
                               "flaky, sleep_ms)",
                               (int)klen, key);
        }
        int64_t v = 0;
        if (!common_parse_i64(val, vlen, l != NULL ? 1 : 0, l != NULL ? INT64_MAX : MAX_SLEEP_MS,
                              &v)) {
            return common_fail(err, COMMON_ERR_INVALID, "faults: '%.*s': bad value", n, key);
        }
        if (l == NULL) {
            f->sleep_ms = (uint32_t)v;
        } else if (l->n == MAX_IDS) {
            return common_fail(err, COMMON_ERR_INVALID, "faults: more than %d ids for one key",
                               MAX_IDS);
        } else {
            l->id[l->n++] = v;
        }
    }
    return got < 0 ? got : 0;
}

int worker_compute_faulty(worker_compute *out, worker_compute *inner, const char *faults,
                          char *err) {
    if (inner == NULL || inner->run == NULL) {
        return common_fail(err, COMMON_ERR_INVALID, "faults: no computation to wrap");
    }
    faulty *f = calloc(1, sizeof *f);
    if (f == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "faults: out of memory");
    }
    int rc = parse_faults(f, faults, err);
    if (rc != 0) {
        free(f);
        return rc;
    }
    f->inner = *inner;
    *inner = (worker_compute){0};
    *out = f->inner; /* what HELLO says is the inner computation's (out may be inner) */
    out->run = faulty_run;
    out->destroy = faulty_destroy;
    out->models = faulty_models;
    out->self = f;
    return 0;
}
