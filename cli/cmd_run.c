/*
 * `chesslens run SPEC`: a whole sweep in one process, the embedded default. It is the sweep
 * service in one process: a coordinator thread (coordinator/service.h) owning the database on an
 * inproc:// endpoint, --workers worker threads (worker/service.h), each with an executor that
 * keeps its loaded model for all its tasks, and this thread as the client that submits the spec
 * and draws the progress. So the embedded run and the distributed service share every line of
 * scheduling, lease and protocol code.
 *
 * A run killed at any point loses only the tasks in flight: a rerun of the same command submits
 * the same sweep (the submission id is the digest of the spec's canonical text, as `chesslens
 * submit` makes it), the coordinator requeues at its start the leases the dead run held (its
 * workers died with it), plans nothing twice and hands out what is left; a result is never
 * stored twice. One run at a time per database: a second run would requeue the first one's
 * leases.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "cli/cli_int.h"
#include "cli/client.h"
#include "coordinator/coordinator.h"
#include "coordinator/service.h"
#include "coordinator/wire.h"
#include "worker/service.h"

/* In one process the coordinator cannot restart under its client: a request waits as long as
 * it takes (planning a large sweep), and ends early only when the coordinator thread fails
 * (it shuts the context down) or a signal arrives. */
#define CALL_MS (24 * 3600 * 1000)
#define POLL_NS 200000000L /* how often the progress is asked for */

static volatile sig_atomic_t interrupted = 0, workers_stop = 0, coordinator_stop = 0;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

typedef struct coordinator_thread {
    pthread_t id;
    coordinator_service_opts o;
    int rc;
    char err[COMMON_ERR_LEN];
} coordinator_thread;

static void *coordinator_main(void *arg) {
    coordinator_thread *t = arg;
    t->rc = coordinator_service_run(&t->o, t->err);
    if (t->rc != 0) {
        zmq_ctx_shutdown(t->o.zmq_ctx); /* ends every wait of the workers and the client */
    }
    return NULL;
}

typedef struct worker_thread {
    pthread_t id;
    worker_service_opts o;
    worker_compute compute;
    char name[32];
    int rc;
    char err[COMMON_ERR_LEN];
} worker_thread;

static void *worker_main(void *arg) {
    worker_thread *t = arg;
    t->rc = worker_service_run(&t->o, &t->compute, t->err);
    return NULL;
}

/* Leases held in the database: before this run starts, those of a run that was killed. */
static int leases_left(const char *db_path, uint64_t *n, char *err) {
    coordinator_store *store = NULL;
    coordinator_sweep_info *list = NULL;
    size_t n_sweeps = 0;
    *n = 0;
    int rc = coordinator_store_open(&store, db_path, 0, err);
    if (rc == 0) {
        rc = coordinator_sweeps_list(store, 0, &list, &n_sweeps, err);
    }
    for (size_t i = 0; rc == 0 && i < n_sweeps; i++) {
        *n += list[i].progress.leased;
    }
    free(list);
    coordinator_store_close(&store);
    return rc;
}

/* The sweep's one entry of a STATUS reply. */
static int sweep_status(cli_client *c, const char *name, proto_reply **r, char *err) {
    proto_msg req = {.type = PROTO_STATUS, .sweep = name};
    int rc = cli_client_call(c, &req, CALL_MS, r, err);
    if (rc == 0 && (*r)->n_sweeps != 1) {
        proto_reply_free(r);
        rc = common_fail(err, COMMON_ERR_INVALID, "the coordinator answered no sweep '%s'", name);
    }
    return rc;
}

int cli_run(int argc, char **argv) {
    const char *db_path = "chesslens.db";
    long workers = 1, threads = 0, max_attempts = 3, pairs_per_task = 0, games_per_task = 0;
    bool quiet = false;
    const cli_opt opts[] = {
        {.name = "--db",
         .kind = CLI_STRING,
         .value = &db_path,
         .meta = "FILE",
         .help = "the chesslens database (default ./chesslens.db; its dataset must exist)"},
        {.name = "--workers",
         .kind = CLI_LONG,
         .value = &workers,
         .meta = "N",
         .lo = 1,
         .hi = 256,
         .help = "worker threads, each with its own copy of the model"},
        CLI_OPT_THREADS(&threads),
        {.name = "--max-attempts",
         .kind = CLI_LONG,
         .value = &max_attempts,
         .meta = "N",
         .lo = 1,
         .hi = 1000,
         .help = "a task that failed N times is dead, with its last error"},
        {.name = "--pairs-per-task",
         .kind = CLI_LONG,
         .value = &pairs_per_task,
         .meta = "N",
         .lo = 0,
         .hi = 1L << 20,
         .help = "clean/corrupt pairs per patch task (0 = 64)"},
        {.name = "--games-per-task",
         .kind = CLI_LONG,
         .value = &games_per_task,
         .meta = "N",
         .lo = 0,
         .hi = 1L << 20,
         .help = "games per aggregate task (0 = 64)"},
        {.name = "--quiet", .kind = CLI_FLAG, .value = &quiet, .help = "no progress bar"},
    };
    const cli_spec spec_cli = {
        .command = "run",
        .synopsis = "SPEC.json [--db FILE] [--workers N] [--threads N]",
        .about = "Runs a whole sweep (docs/SWEEP.md) in this process: a coordinator and N worker\n"
                 "threads, as chesslens-coordinator and chesslens-worker would on a cluster, and\n"
                 "stores its results in the database. Interrupted or killed, the same command\n"
                 "resumes where it stopped and stores nothing twice. Query the results with\n"
                 "chesslens query.",
        .min_args = 1,
        .max_args = 1,
        .opts = opts,
        .n_opts = CLI_N_OPTS(opts)};
    char *args[1];
    size_t n_args = 0;
    int prc = cli_parse(&spec_cli, argc, argv, args, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    char err[COMMON_ERR_LEN] = "", digest[65], submission[80], endpoint[64];
    int status = 1;
    char *text = NULL;
    size_t text_len = 0;
    uint64_t requeued = 0;
    coordinator_spec *spec = NULL;
    void *ctx = NULL;
    cli_client *client = NULL;
    proto_reply *r = NULL;
    coordinator_thread coord = {.rc = 0};
    bool coord_started = false;
    worker_thread *ws = NULL;
    size_t n_started = 0;

    if (common_read_file(args[0], &text, &text_len, err) != 0 ||
        coordinator_spec_parse(&spec, text, text_len, err) != 0) {
        cli_error_prefix(err, COMMON_ERR_INVALID, args[0]);
        goto fail;
    }
    coordinator_digest_hex(spec->canonical, strlen(spec->canonical), digest);
    snprintf(submission, sizeof submission, "spec-%s", digest);
    if (leases_left(db_path, &requeued, err) != 0) {
        goto fail;
    }
    if ((ctx = zmq_ctx_new()) == NULL) {
        snprintf(err, sizeof err, "zmq_ctx_new: %s", zmq_strerror(zmq_errno()));
        goto fail;
    }
    snprintf(endpoint, sizeof endpoint, "inproc://chesslens-run");
    coord.o = (coordinator_service_opts){
        .db_path = db_path,
        .bind = {endpoint},
        .n_bind = 1,
        .zmq_ctx = ctx,
        .sched = {.max_attempts = (uint32_t)max_attempts,
                  .requeue_on_start = true, /* this process's workers are the only ones */
                  .plan = {(size_t)pairs_per_task, (size_t)games_per_task}},
        .stop = &coordinator_stop};
    if (pthread_create(&coord.id, NULL, coordinator_main, &coord) != 0) {
        snprintf(err, sizeof err, "pthread_create: %s", strerror(errno));
        goto fail;
    }
    coord_started = true;
    if (cli_client_open(&client, endpoint, ctx, CALL_MS, err) != 0) {
        goto fail;
    }
    proto_msg submit = {.type = PROTO_SUBMIT, .submission = submission, .spec = spec->canonical};
    if (cli_client_call(client, &submit, CALL_MS, &r, err) != 0) {
        goto fail;
    }
    bool existed = r->existed;
    uint64_t n_tasks = r->n_tasks;
    proto_reply_free(&r);
    if (sweep_status(client, spec->name, &r, err) != 0) {
        goto fail;
    }
    const uint64_t done0 = r->sweeps[0].done, rows0 = r->sweeps[0].rows;
    fprintf(stderr,
            "%s sweep '%s': %" PRIu64 " tasks (%" PRIu64 " done, %" PRIu64 " dead%s), %ld %s\n",
            existed ? "resuming" : "running", spec->name, n_tasks, done0, r->sweeps[0].dead,
            requeued > 0 ? ", leases of an interrupted run requeued" : "", workers,
            workers == 1 ? "executor" : "executors");
    proto_reply_free(&r);

    ws = calloc((size_t)workers, sizeof *ws);
    if (ws == NULL) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    for (long i = 0; i < workers; i++) {
        worker_thread *w = &ws[i];
        snprintf(w->name, sizeof w->name, "run-%ld", i);
        w->o = (worker_service_opts){
            .endpoint = endpoint, .zmq_ctx = ctx, .id = w->name, .stop = &workers_stop};
        if (worker_compute_executor(&w->compute, "cpu", (int)threads, 1, err) != 0) {
            goto fail;
        }
        if (pthread_create(&w->id, NULL, worker_main, w) != 0) {
            worker_compute_destroy(&w->compute);
            snprintf(err, sizeof err, "pthread_create: %s", strerror(errno));
            goto fail;
        }
        n_started++;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    bool tty = !quiet && isatty(STDERR_FILENO);
    double t0 = common_now_s();
    for (;;) {
        int rc = interrupted ? COMMON_ERR_IO : sweep_status(client, spec->name, &r, err);
        if (interrupted) {
            /* the workers may be mid-task: leave at once; the next run requeues their leases */
            fprintf(stderr, "\ninterrupted: run the same command again to resume\n");
            _exit(130);
        }
        if (rc != 0) {
            goto fail;
        }
        const proto_sweep_info *s = &r->sweeps[0];
        double secs = common_now_s() - t0;
        double rate = secs > 0 ? (double)(s->done - done0) / secs : 0.0;
        cli_progress p = {s->pending, s->leased, s->done, s->dead, s->rows};
        bool over = s->pending + s->leased == 0;
        if (tty) {
            cli_progress_draw(&p, rate, over);
        }
        if (over) {
            break;
        }
        proto_reply_free(&r);
        struct timespec nap = {0, POLL_NS};
        nanosleep(&nap, NULL);
    }
    const proto_sweep_info *s = &r->sweeps[0];
    printf("sweep '%s': %" PRIu64 " tasks done, %" PRIu64 " dead; this run stored %" PRIu64
           " tasks (%" PRIu64 " values) in %.1f s; results in %s\n",
           spec->name, s->done, s->dead, s->done - done0, s->rows - rows0, common_now_s() - t0,
           db_path);
    status = s->dead > 0 ? 1 : 0;
    if (s->dead > 0) {
        fprintf(stderr, "chesslens run: %" PRIu64 " tasks failed %ld times and are dead:\n",
                s->dead, max_attempts);
        for (size_t i = 0; i < r->n_dead; i++) {
            fprintf(stderr, "  task %s: %s\n", r->dead[i].key, r->dead[i].error);
        }
    }
fail:
    if (status != 0 && err[0] != '\0') {
        fprintf(stderr, "chesslens run: %s\n", err);
    }
    proto_reply_free(&r);
    workers_stop = 1; /* idle workers return within a poll; a running task finishes first */
    for (size_t i = 0; i < n_started; i++) {
        pthread_join(ws[i].id, NULL);
        if (ws[i].rc != 0 && status == 0) {
            fprintf(stderr, "chesslens run: worker %s: %s\n", ws[i].name, ws[i].err);
            status = 1;
        }
    }
    for (long i = 0; ws != NULL && i < workers; i++) {
        worker_compute_destroy(&ws[i].compute);
    }
    free(ws);
    cli_client_close(&client);
    coordinator_stop = 1;
    if (coord_started) {
        pthread_join(coord.id, NULL);
        if (coord.rc != 0) {
            fprintf(stderr, "chesslens run: coordinator: %s\n", coord.err);
            status = 1;
        }
    }
    if (ctx != NULL) {
        zmq_ctx_term(ctx);
    }
    coordinator_spec_destroy(&spec);
    free(text);
    return status;
}
