/*
 * A fault-injecting computation (worker_compute_faulty, worker/service.h): it wraps another
 * computation and, for the task ids its spec names, fails, hangs or aborts instead of running
 * it, and can slow every task down. Reliability tests (a poison task, a worker killed
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

typedef struct id_list {
    size_t n;
    int64_t id[MAX_IDS];
} id_list;

typedef struct faulty {
    worker_compute inner;
    id_list fail, hang, abort_;
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

/* A decimal integer in [lo, hi] filling s[0..n). */
static bool parse_int(const char *s, size_t n, int64_t lo, int64_t hi, int64_t *v) {
    char buf[32];
    if (n == 0 || n >= sizeof buf) {
        return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || buf[0] == '+' || buf[0] == ' ' || x < lo || x > hi) {
        return false;
    }
    *v = x;
    return true;
}

static int parse_faults(faulty *f, const char *spec, char *err) {
    const char *p = spec != NULL ? spec : "";
    while (*p != '\0') {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        if (eq == NULL) {
            return common_fail(err, COMMON_ERR_INVALID, "faults: '%.*s': expected key=value",
                               (int)n, p);
        }
        size_t klen = (size_t)(eq - p), vlen = n - klen - 1;
        id_list *l = NULL;
        if (klen == 9 && memcmp(p, "fail_task", 9) == 0) {
            l = &f->fail;
        } else if (klen == 9 && memcmp(p, "hang_task", 9) == 0) {
            l = &f->hang;
        } else if (klen == 10 && memcmp(p, "abort_task", 10) == 0) {
            l = &f->abort_;
        } else if (!(klen == 8 && memcmp(p, "sleep_ms", 8) == 0)) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "faults: unknown key '%.*s' (fail_task, hang_task, abort_task, "
                               "sleep_ms)",
                               (int)klen, p);
        }
        int64_t v = 0;
        if (!parse_int(eq + 1, vlen, l != NULL ? 1 : 0, l != NULL ? INT64_MAX : MAX_SLEEP_MS, &v)) {
            return common_fail(err, COMMON_ERR_INVALID, "faults: '%.*s': bad value", (int)n, p);
        }
        if (l == NULL) {
            f->sleep_ms = (uint32_t)v;
        } else if (l->n == MAX_IDS) {
            return common_fail(err, COMMON_ERR_INVALID, "faults: more than %d ids for one key",
                               MAX_IDS);
        } else {
            l->id[l->n++] = v;
        }
        p += n;
        if (*p == ',') {
            p++;
            if (*p == '\0') {
                return common_fail(err, COMMON_ERR_INVALID, "faults: trailing ','");
            }
        }
    }
    return 0;
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
