/*
 * The computations behind the worker service (worker/service.h): the real one, which runs
 * tasks on worker executors, and a no-op for measuring the service alone.
 *
 * Loading a model is the expensive part of a worker's life (weights read, processed, uploaded
 * to a session), so the executor computation keeps up to max_models executors keyed by the
 * models' sha256 and drops the least recently used one first. A model is trusted by digest,
 * not by path: before its first load the digest of model_path/model.safetensors must equal the
 * TASK's model_sha256, so a directory overwritten since the sweep was submitted fails its tasks
 * instead of computing results for other weights. The spec text of a sweep comes with every
 * TASK; the few most recent parsed specs are kept by text, since consecutive tasks nearly
 * always share one.
 *
 * A task that fails with a backend error (a CUDA error: an illegal address, a lost device)
 * makes its executor recreate that device's backend and session (worker_execute), so the next
 * task never computes on a context that may hold wrong numbers; an executor that could not do
 * so (worker_executor_broken) is dropped, and the model is loaded again for the next task.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coordinator/wire.h"
#include "worker/service.h"

#define MAX_MODELS_DEFAULT 2
#define SPEC_CACHE 4

typedef struct cached_model {
    char sha256[65];
    worker_executor *e;
    uint64_t used; /* the clock value of its last task: the smallest is dropped first */
} cached_model;

typedef struct cached_spec {
    char *text;
    coordinator_spec *spec;
    uint64_t used;
} cached_spec;

typedef struct exec_compute {
    char backend[PROTO_MAX_DEVICES * 6 + 8]; /* "cpu", "cuda:N", "cuda:0,1,..." */
    int threads;
    size_t max_models;
    cached_model *models; /* [max_models]; e NULL when the entry is free */
    cached_spec specs[SPEC_CACHE];
    uint64_t clock;
} exec_compute;

/* For HELLO: the CPUs online and the bytes of host memory (0 when unknown). */
static uint32_t cpus_online(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (uint32_t)n : 1;
}

static uint64_t host_memory(void) {
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
    return pages > 0 && size > 0 ? (uint64_t)pages * (uint64_t)size : 0;
}

static void exec_destroy(void *self) {
    exec_compute *x = self;
    if (x == NULL) {
        return;
    }
    for (size_t i = 0; x->models != NULL && i < x->max_models; i++) {
        worker_executor_destroy(&x->models[i].e);
    }
    free(x->models);
    for (size_t i = 0; i < SPEC_CACHE; i++) {
        free(x->specs[i].text);
        coordinator_spec_destroy(&x->specs[i].spec);
    }
    free(x);
}

static size_t exec_models(void *self, const char *out[PROTO_MAX_MODELS]) {
    exec_compute *x = self;
    size_t n = 0;
    for (size_t i = 0; i < x->max_models && n < PROTO_MAX_MODELS; i++) {
        if (x->models[i].e != NULL) {
            out[n++] = x->models[i].sha256;
        }
    }
    return n;
}

/* The executor of the model with this digest, loaded and checked on first use. */
static int get_executor(exec_compute *x, const char *dir, const char *sha256, worker_executor **out,
                        char *err) {
    cached_model *slot = NULL;
    for (size_t i = 0; i < x->max_models; i++) {
        cached_model *m = &x->models[i];
        if (m->e != NULL && strcmp(m->sha256, sha256) == 0) {
            m->used = ++x->clock;
            *out = m->e;
            return 0;
        }
        if (slot == NULL || (slot->e != NULL && (m->e == NULL || m->used < slot->used))) {
            slot = m;
        }
    }
    char path[PROTO_MAX_TEXT + 32];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char hex[65];
    int rc = coordinator_digest_file_hex(path, hex, err);
    if (rc != 0) {
        return rc;
    }
    if (strcmp(hex, sha256) != 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "worker: %s has sha256 %.12s..., the task wants %.12s...", path, hex,
                           sha256);
    }
    /* Free the slot before loading: two models' weights need not fit at once. */
    worker_executor_destroy(&slot->e);
    if ((rc = worker_executor_new(&slot->e, dir, x->backend, x->threads, err)) != 0) {
        return rc;
    }
    memcpy(slot->sha256, sha256, sizeof slot->sha256);
    slot->used = ++x->clock;
    *out = slot->e;
    return 0;
}

/* Forgets (destroys) executor e. */
static void drop_executor(exec_compute *x, worker_executor *e) {
    for (size_t i = 0; i < x->max_models; i++) {
        if (x->models[i].e == e) {
            worker_executor_destroy(&x->models[i].e);
        }
    }
}

/* The parsed spec of this text (borrowed from the cache until SPEC_CACHE other texts came). */
static int get_spec(exec_compute *x, const char *text, const coordinator_spec **out, char *err) {
    cached_spec *slot = &x->specs[0];
    for (size_t i = 0; i < SPEC_CACHE; i++) {
        cached_spec *c = &x->specs[i];
        if (c->text != NULL && strcmp(c->text, text) == 0) {
            c->used = ++x->clock;
            *out = c->spec;
            return 0;
        }
        if (c->text == NULL || (slot->text != NULL && c->used < slot->used)) {
            slot = c;
        }
    }
    coordinator_spec *spec = NULL;
    char *copy = strdup(text);
    if (copy == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "worker: out of memory");
    }
    int rc = coordinator_spec_parse(&spec, text, strlen(text), err);
    if (rc != 0) {
        free(copy);
        return rc;
    }
    free(slot->text);
    coordinator_spec_destroy(&slot->spec);
    slot->text = copy;
    slot->spec = spec;
    slot->used = ++x->clock;
    *out = spec;
    return 0;
}

static int exec_run(void *self, const worker_task_in *t, worker_progress_fn progress, void *pctx,
                    uint8_t **out, size_t *out_len, uint64_t *n_rows, char *err) {
    exec_compute *x = self;
    const coordinator_spec *spec = NULL;
    worker_executor *e = NULL;
    coordinator_work *w = NULL;
    worker_output *o = NULL;
    int rc = get_spec(x, t->spec, &spec, err);
    if (rc == 0) {
        rc = coordinator_work_decode(spec, t->body, t->body_len, &w, err);
    }
    if (rc == 0) {
        /* a first use hashes and loads the model, with no progress inside: report either side */
        progress(pctx, 0.0);
        rc = get_executor(x, t->model_path, t->model_sha256, &e, err);
        progress(pctx, 0.0);
    }
    if (rc == 0) {
        worker_executor_set_progress(e, progress, pctx);
        rc = worker_execute(e, w->params, w, &o, err);
        worker_executor_set_progress(e, NULL, NULL);
        if (rc == COMMON_ERR_BACKEND && worker_executor_broken(e)) {
            drop_executor(x, e);
        }
    }
    if (rc == 0) {
        rc = coordinator_results_encode(&o->results, out, out_len, err);
    }
    if (rc == 0) {
        *n_rows = o->n_rows;
    }
    worker_output_destroy(&o);
    coordinator_work_destroy(&w);
    return rc;
}

int worker_compute_executor(worker_compute *out, const char *backend, int threads,
                            size_t max_models, char *err) {
    /* each device's backend is made (and the name checked) once here, so that a worker with a
     * bad --backend or an absent device fails at its start rather than at every task */
    char kind[8], name[24];
    int ids[PROTO_MAX_DEVICES];
    size_t n_ids = 0;
    int rc = worker_backend_spec_parse(backend, kind, ids, PROTO_MAX_DEVICES, &n_ids, err);
    for (size_t i = 0; i < n_ids && rc == 0; i++) {
        model_backend *probe = NULL;
        snprintf(name, sizeof name, "%s:%d", kind, ids[i]);
        rc = worker_backend_new(&probe, strcmp(kind, "cpu") == 0 ? "cpu" : name, threads, err);
        model_backend_destroy(&probe);
    }
    if (rc != 0) {
        return rc;
    }
    exec_compute *x = calloc(1, sizeof *x);
    if (x == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "worker: out of memory");
    }
    x->max_models = max_models > 0 ? max_models : MAX_MODELS_DEFAULT;
    x->max_models = x->max_models < PROTO_MAX_MODELS ? x->max_models : PROTO_MAX_MODELS;
    x->threads = threads;
    snprintf(x->backend, sizeof x->backend, "%s", backend);
    if ((x->models = calloc(x->max_models, sizeof *x->models)) == NULL) {
        free(x);
        return common_fail(err, COMMON_ERR_NOMEM, "worker: out of memory");
    }
    bool cuda = strncmp(backend, "cuda", 4) == 0;
    *out = (worker_compute){
        .run = exec_run,
        .destroy = exec_destroy,
        .self = x,
        .backend = cuda ? "cuda" : "cpu",
        .threads = threads > 0 ? (uint32_t)threads : cpus_online(),
        .memory = host_memory(),
        .models = exec_models,
    };
    if (cuda) { /* "cuda" is device 0, "cuda:N" device N, "cuda:0,1,..." each of them */
        out->n_devices = n_ids;
        for (size_t i = 0; i < n_ids; i++) {
            out->devices[i] = (int32_t)ids[i];
        }
    }
    return 0;
}

static int noop_run(void *self, const worker_task_in *t, worker_progress_fn progress, void *pctx,
                    uint8_t **out, size_t *out_len, uint64_t *n_rows, char *err) {
    (void)self;
    (void)t;
    (void)progress;
    (void)pctx;
    coordinator_results none = {0};
    *n_rows = 0;
    return coordinator_results_encode(&none, out, out_len, err);
}

void worker_compute_noop(worker_compute *out) {
    *out = (worker_compute){.run = noop_run, .backend = "noop", .threads = 1};
}

void worker_compute_destroy(worker_compute *c) {
    if (c == NULL) {
        return;
    }
    if (c->destroy != NULL) {
        c->destroy(c->self);
    }
    *c = (worker_compute){0};
}
