/*
 * `chesslens run SPEC`: a whole sweep in one process, the embedded default. The spec is
 * submitted to the store (./chesslens.db unless --db), planned into tasks, and every task is
 * executed by --workers executor threads, each holding one loaded model for all its tasks.
 *
 * The main thread owns the store: it claims tasks (a lease, as a distributed coordinator would
 * give a worker), loads their work, hands it to the executor threads through a queue and
 * completes each task with its results in one transaction. So a run killed at any point loses
 * only the tasks in flight: a rerun of the same command finds the same sweep (the submission id
 * is the spec's digest), requeues the leases the dead run held, plans nothing twice and runs
 * what is left; a result is never stored twice. One run at a time per database: a second run
 * would requeue the first one's leases.
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

#include "cli/cli_int.h"
#include "coordinator/coordinator.h"
#include "worker/worker.h"

/* Embedded leases are never renewed: long enough for any task, as no other process shares
 * them; a crashed run's leases are requeued by the next run at its start. */
#define LEASE_NS (3600LL * 1000000000LL)
#define BACKOFF_BASE_NS 1000000000LL /* first retry after about a second */
#define BACKOFF_CAP_NS 60000000000LL

/* One task on its way through the executors. */
typedef struct slot {
    int64_t task_id;
    uint64_t epoch;
    uint32_t attempt;
    char key[96];
    coordinator_work *work;
    worker_output *out;
    int rc;
    char err[COMMON_ERR_LEN];
    struct slot *next;
} slot;

/* The queues between the main thread and the executor threads. */
typedef struct queue {
    pthread_mutex_t mu;
    pthread_cond_t todo_cv, done_cv;
    slot *todo, *todo_tail, *done;
    bool closing;
    const coordinator_spec *spec;
} queue;

typedef struct executor_thread {
    pthread_t id;
    worker_executor *ex;
    queue *q;
} executor_thread;

static volatile sig_atomic_t interrupted = 0;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *executor_main(void *arg) {
    executor_thread *t = arg;
    queue *q = t->q;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (q->todo == NULL && !q->closing) {
            pthread_cond_wait(&q->todo_cv, &q->mu);
        }
        slot *s = q->todo;
        if (s == NULL) {
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        q->todo = s->next;
        if (q->todo == NULL) {
            q->todo_tail = NULL;
        }
        pthread_mutex_unlock(&q->mu);
        s->rc = worker_execute(t->ex, s->work->params, s->work, &s->out, s->err);
        pthread_mutex_lock(&q->mu);
        s->next = q->done;
        q->done = s;
        pthread_cond_signal(&q->done_cv);
        pthread_mutex_unlock(&q->mu);
    }
}

static void slot_free(slot *s) {
    coordinator_work_destroy(&s->work);
    worker_output_destroy(&s->out);
    free(s);
}

/* The progress line on stderr: a bar, tasks done / all, failures, rows, throughput, ETA. */
static void draw(const coordinator_sweep_progress *p, uint64_t rows, uint64_t done_here, double t0,
                 bool final) {
    uint64_t all = p->pending + p->leased + p->done + p->dead;
    double secs = common_now_s() - t0;
    double rate = secs > 0 ? (double)done_here / secs : 0.0;
    uint64_t left = p->pending + p->leased;
    char eta[32] = "-";
    if (rate > 0 && left > 0) {
        long e = (long)((double)left / rate + 0.5);
        snprintf(eta, sizeof eta, "%ld:%02ld", e / 60, e % 60);
    }
    char bar[25];
    size_t fill = all > 0 ? (size_t)(24 * (p->done + p->dead) / all) : 0;
    for (size_t i = 0; i < 24; i++) {
        bar[i] = i < fill ? '#' : '.';
    }
    bar[24] = '\0';
    fprintf(stderr,
            "\r[%s] %" PRIu64 "/%" PRIu64 " tasks, %" PRIu64 " failed, %" PRIu64
            " rows, %.1f tasks/s, ETA %s   %s",
            bar, p->done, all, p->dead, rows, rate, eta, final ? "\n" : "");
    fflush(stderr);
}

/* Exponential backoff with full jitter: a uniform delay in [0, min(cap, base * 2^(a-1))). */
static int64_t backoff_ns(uint32_t attempt, uint64_t *rng) {
    int64_t ceiling = BACKOFF_BASE_NS << (attempt > 6 ? 6 : attempt - 1);
    ceiling = ceiling > BACKOFF_CAP_NS ? BACKOFF_CAP_NS : ceiling;
    *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (int64_t)((*rng >> 11) % (uint64_t)ceiling);
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
         .help = "executor threads, each with its own copy of the model"},
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
        .about = "Runs a whole sweep (docs/SWEEP.md) in this process and stores its results in\n"
                 "the database. Interrupted or killed, the same command resumes where it\n"
                 "stopped and stores nothing twice. Query the results with chesslens query.",
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
    const char *spec_path = args[0];
    char err[COMMON_ERR_LEN] = "";
    int status = 1;
    char *text = NULL;
    size_t text_len = 0;
    coordinator_spec *spec = NULL;
    coordinator_store *store = NULL;
    executor_thread *ts = NULL;
    size_t n_started = 0;
    queue q;
    memset(&q, 0, sizeof q);
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.todo_cv, NULL);
    pthread_cond_init(&q.done_cv, NULL);

    if (common_read_file(spec_path, &text, &text_len, err) != 0 ||
        coordinator_spec_parse(&spec, text, text_len, err) != 0) {
        goto fail;
    }
    q.spec = spec;
    ts = calloc((size_t)workers, sizeof *ts);
    if (ts == NULL) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    /* The models are loaded before anything is written, so a bad model creates no sweep. */
    for (long i = 0; i < workers; i++) {
        if (worker_executor_new(&ts[i].ex, spec->model, "cpu", (int)threads, err) != 0) {
            goto fail;
        }
    }
    const model_config *cfg = model_get_config(worker_executor_model(ts[0].ex));
    if (coordinator_spec_check_model(spec, (size_t)cfg->n_ctx, (size_t)cfg->d_vocab, err) != 0) {
        goto fail;
    }
    int64_t model_id = 0, sweep_id = 0;
    bool existed = false;
    /* the spec's canonical text identifies the submission: the same spec again resumes */
    if (coordinator_store_open(&store, db_path, 0, err) != 0 ||
        coordinator_model_record(store, spec->model, &model_id, err) != 0 ||
        coordinator_sweep_create(store, spec, spec->canonical, model_id, &sweep_id, &existed,
                                 err) != 0) {
        goto fail;
    }
    coordinator_plan_opts plan = {(size_t)pairs_per_task, (size_t)games_per_task};
    size_t n_tasks = 0, n_requeued = 0;
    if (coordinator_plan_sweep(store, sweep_id, spec, &plan, &n_tasks, err) != 0 ||
        coordinator_tasks_expire(store, INT64_MAX, (uint32_t)max_attempts, 0, 0, &n_requeued,
                                 err) != 0) {
        goto fail;
    }
    coordinator_sweep_progress p;
    if (coordinator_sweep_progress_get(store, sweep_id, &p, err) != 0) {
        goto fail;
    }
    fprintf(stderr, "%s sweep '%s': %zu tasks (%" PRIu64 " done, %" PRIu64 " dead%s), %ld %s\n",
            existed ? "resuming" : "running", spec->name, n_tasks, p.done, p.dead,
            n_requeued > 0 ? ", leases of an interrupted run requeued" : "", workers,
            workers == 1 ? "executor" : "executors");
    for (long i = 0; i < workers; i++) {
        ts[i].q = &q;
        if (pthread_create(&ts[i].id, NULL, executor_main, &ts[i]) != 0) {
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
    double t0 = common_now_s(), last_draw = 0.0;
    uint64_t rows = 0, done_here = 0, rng = (uint64_t)now_ns() | 1;
    size_t inflight = 0, target = 2 * (size_t)workers;
    for (;;) {
        if (interrupted) {
            fprintf(stderr,
                    "\ninterrupted: %" PRIu64 " tasks stored in this run; run the same "
                    "command again to resume\n",
                    done_here);
            coordinator_store_close(&store); /* the executors may be mid-task: leave at once */
            _exit(130);
        }
        if (inflight < target) {
            coordinator_lease *leases = NULL;
            size_t n = 0;
            int64_t now = now_ns();
            if (coordinator_tasks_claim(store, "embedded", target - inflight, now, now + LEASE_NS,
                                        &leases, &n, err) != 0) {
                goto fail;
            }
            for (size_t i = 0; i < n; i++) {
                slot *s = calloc(1, sizeof *s);
                if (s == NULL) {
                    coordinator_leases_free(leases, n);
                    snprintf(err, sizeof err, "out of memory");
                    goto fail;
                }
                s->task_id = leases[i].task_id;
                s->epoch = leases[i].epoch;
                s->attempt = leases[i].attempt;
                snprintf(s->key, sizeof s->key, "%s", leases[i].key);
                s->rc = coordinator_work_load(store, spec, leases[i].job_id, leases[i].body,
                                              leases[i].body_len, &s->work, s->err);
                pthread_mutex_lock(&q.mu);
                if (s->rc == 0) { /* to an executor */
                    if (q.todo_tail != NULL) {
                        q.todo_tail->next = s;
                    } else {
                        q.todo = s;
                    }
                    q.todo_tail = s;
                    pthread_cond_signal(&q.todo_cv);
                } else { /* straight to the failures */
                    s->next = q.done;
                    q.done = s;
                }
                pthread_mutex_unlock(&q.mu);
                inflight++;
            }
            coordinator_leases_free(leases, n);
        }
        if (inflight == 0) {
            if (coordinator_sweep_progress_get(store, sweep_id, &p, err) != 0) {
                goto fail;
            }
            if (p.pending == 0) {
                break;
            }
            int64_t wait = p.next_not_before_ns - now_ns(); /* failed tasks back off */
            struct timespec nap = {0, 100000000L};
            if (wait > 0 && wait < 100000000LL) {
                nap.tv_nsec = (long)wait;
            }
            nanosleep(&nap, NULL);
            continue;
        }
        pthread_mutex_lock(&q.mu);
        if (q.done == NULL) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += 250000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&q.done_cv, &q.mu, &until);
        }
        slot *finished = q.done;
        q.done = NULL;
        pthread_mutex_unlock(&q.mu);
        while (finished != NULL) {
            slot *s = finished;
            finished = s->next;
            coordinator_fence fence;
            int rc = s->rc == 0 ? coordinator_task_complete(store, s->task_id, s->epoch,
                                                            &s->out->results, &fence, err)
                                : coordinator_task_fail(
                                      store, s->task_id, s->epoch, s->err, (uint32_t)max_attempts,
                                      now_ns() + backoff_ns(s->attempt, &rng), &fence, err);
            if (rc != 0) {
                slot_free(s);
                goto fail;
            }
            if (s->rc == 0) {
                rows += s->out->n_rows;
                done_here++;
            } else if (!quiet) {
                fprintf(stderr, "%stask %s (attempt %" PRIu32 "): %s\n", tty ? "\n" : "", s->key,
                        s->attempt, s->err);
            }
            inflight--;
            slot_free(s);
        }
        if (tty && common_now_s() - last_draw > 0.2) {
            if (coordinator_sweep_progress_get(store, sweep_id, &p, err) != 0) {
                goto fail;
            }
            draw(&p, rows, done_here, t0, false);
            last_draw = common_now_s();
        }
    }
    if (coordinator_sweep_progress_get(store, sweep_id, &p, err) != 0) {
        goto fail;
    }
    if (tty) {
        draw(&p, rows, done_here, t0, true);
    }
    double secs = common_now_s() - t0;
    printf("sweep '%s': %" PRIu64 " tasks done, %" PRIu64 " dead; this run stored %" PRIu64
           " tasks (%" PRIu64 " values) in %.1f s; results in %s\n",
           spec->name, p.done, p.dead, done_here, rows, secs, db_path);
    status = p.dead > 0 ? 1 : 0;
    if (p.dead > 0) {
        fprintf(stderr,
                "chesslens run: %" PRIu64 " tasks failed %ld times and are dead: "
                "SELECT key, last_error FROM task WHERE state = 'dead'\n",
                p.dead, max_attempts);
    }
fail:
    if (status != 0 && err[0] != '\0') {
        fprintf(stderr, "chesslens run: %s\n", err);
    }
    /* tasks not handed out yet (only after an error) are dropped: their leases lapse and the
     * next run requeues them */
    pthread_mutex_lock(&q.mu);
    slot *unstarted = q.todo;
    q.todo = q.todo_tail = NULL;
    q.closing = true;
    pthread_cond_broadcast(&q.todo_cv);
    pthread_mutex_unlock(&q.mu);
    for (size_t i = 0; i < n_started; i++) {
        pthread_join(ts[i].id, NULL);
    }
    for (slot *s = unstarted; s != NULL;) {
        slot *next = s->next;
        slot_free(s);
        s = next;
    }
    for (slot *s = q.done; s != NULL;) {
        slot *next = s->next;
        slot_free(s);
        s = next;
    }
    for (long i = 0; ts != NULL && i < workers; i++) {
        worker_executor_destroy(&ts[i].ex);
    }
    free(ts);
    coordinator_store_close(&store);
    coordinator_spec_destroy(&spec);
    free(text);
    pthread_cond_destroy(&q.todo_cv);
    pthread_cond_destroy(&q.done_cv);
    pthread_mutex_destroy(&q.mu);
    return status;
}
