/*
 * bench_service: what the sweep service itself costs. Three figures from one run:
 *
 * (a) raw ZeroMQ: a ROUTER thread and 2 DEALER threads (each with its own context, as the
 *     coordinator and the workers are separate processes) over tcp://127.0.0.1 on an ephemeral
 *     port. Each DEALER keeps IN_FLIGHT (16) requests in flight, as each no-op worker holds
 *     16 tasks (--prefetch 16); a request is as large as the no-op run's RESULT, a reply as large
 *     as its mean TASK (both measured on a one-game sizing sweep of the same spec). Round trips
 *     per second, run before and after (b) and averaged, so that both see the same machine.
 * (b) the service: the real chesslens-coordinator (--pairs-per-task 1, so that every pair is a
 *     task) and 2 real `chesslens-worker --backend noop --prefetch 16` processes (a no-op task
 *     takes microseconds: with the default 2 slots a worker would wait on the coordinator's
 *     round trip instead of the coordinator on it), with a patch sweep of many
 *     games x cut-offs submitted through a DEALER client of this file (SUBMIT, then polls).
 *     No-op tasks per second from the first dispatch (the SUBMIT's own batch leases the first
 *     tasks, so its answer marks it) to the last completion (the first WORKERS poll, every
 *     5 ms, whose stored-results count reaches the sweep's tasks; a STATUS, which counts the
 *     task table, only every 5 s). Each task costs a TASK, a RESULT and its ACK; the ACK gives
 *     the slot's credit back (proto/PROTOCOL.md, "Credits"), so the next TASK leaves in the
 *     ACK's batch, and each worker slot does one round trip per task, as in (a). Its lease is
 *     committed before the TASK leaves and its result with the task marked done before the
 *     ACK leaves; the database is checked afterwards (every task done,
 *     leased exactly once). The CPU the coordinator and the workers used per task, and how
 *     busy the machine was meanwhile (other processes included), are printed with it.
 * (c) a small real sweep on models/chess-tiny through `chesslens run --workers 2 --threads 1`
 *     and through the coordinator with 2 `chesslens-worker --threads 1` processes, each on its
 *     own database; wall times (process start to last completion) and their ratio.
 *
 * The targets (the issue's): (b) >= 20,000 tasks/s and >= 0.3 of (a), every dispatch and
 * completion committed to SQLite before the frame that depends on it leaves; (c) the service
 * costs at most 10% over `chesslens run`. The SQLite synchronous level the store uses is
 * printed with what it means for durability.
 *
 * usage: bench_service [--tasks N] [--seconds S] [--real-games G] [--keep]
 *        (defaults: about 60,000 no-op tasks, 3 s of raw round trips in all, 20 games for the
 *        real sweep (0: none); a temporary directory for the databases and the processes' logs,
 *        removed at exit unless --keep)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "coordinator/coordinator.h"
#include "coordinator/wire.h"
#include "proto/proto.h"
#include "proto/reply.h"

#define CHESSLENS CHESSLENS_BINARY_DIR "/cli/chesslens"
#define COORDINATOR CHESSLENS_BINARY_DIR "/cli/chesslens-coordinator"
#define WORKER CHESSLENS_BINARY_DIR "/worker/chesslens-worker"
#define MODEL CHESSLENS_SOURCE_DIR "/models/chess-tiny"

#define TARGET_TASKS_PER_S 20000.0
#define TARGET_RAW_RATIO 0.3
#define TARGET_OVERHEAD 1.10

/* A STATUS counts the sweep's task table on the coordinator's thread (about 1 us a task), so
 * the bench asks for one rarely and follows progress through WORKERS. */
#define STATUS_EVERY_S 5.0

#define N_WORKERS 2
/* A no-op worker's slots (chesslens-worker --prefetch) and the raw loop's requests in flight
 * per DEALER: a no-op task takes microseconds, so a worker needs this many to cover the
 * coordinator's round trip, and the raw loop gets the same window to be comparable. */
#define IN_FLIGHT 16
#define STR_(x) #x
#define STR(x) STR_(x)
/* The no-op sweep's cut-offs: 2..MAX_TOKENS, one pair per game and cut-off. */
#define MAX_TOKENS 64
#define CUTOFFS_PER_GAME (MAX_TOKENS - 1)

extern char **environ;

/* One pair per game and cut-off: every cut-off of 2..MAX_TOKENS, its last token replaced by
 * the promotion letter q (the clean token almost never), so a game of MAX_TOKENS tokens gives
 * CUTOFFS_PER_GAME tasks. */
static const char NOOP_ANALYSIS[] =
    "{\"kind\": \"patch\", \"patch\": \"resid_pre\", \"cutoffs\": {\"from\": 2, \"to\": 64, "
    "\"step\": 1}, \"corrupt\": {\"position\": \"last\", \"with\": \"q\"}, "
    "\"metric\": {\"kind\": \"logit_diff\", \"tokens\": [\"clean_top\", \"corrupt_top\"]}}";

typedef struct args {
    long tasks, real_games;
    double seconds;
    bool keep;
} args;

static int die(const char *what, const char *why) {
    fprintf(stderr, "bench_service: %s: %s\n", what, why);
    return 1;
}

static void sleep_s(double s) {
    if (s <= 0) {
        return;
    }
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int parse_args(int argc, char **argv, args *a) {
    *a = (args){.tasks = 60000, .real_games = 20, .seconds = 3.0};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--keep") == 0) {
            a->keep = true;
            continue;
        }
        if (v != NULL && strcmp(argv[i], "--tasks") == 0) {
            a->tasks = atol(v);
        } else if (v != NULL && strcmp(argv[i], "--seconds") == 0) {
            a->seconds = atof(v);
        } else if (v != NULL && strcmp(argv[i], "--real-games") == 0) {
            a->real_games = atol(v);
        } else {
            fprintf(stderr,
                    "usage: bench_service [--tasks N] [--seconds S] [--real-games G] [--keep]\n");
            return 2;
        }
        i++;
    }
    if (a->tasks < 1 || a->seconds <= 0 || a->real_games < 0) {
        fprintf(stderr, "bench_service: --tasks >= 1, --seconds > 0, --real-games >= 0\n");
        return 2;
    }
    return 0;
}

/* ---- processes ---- */

/* Starts argv[0] with stdout and stderr appended to log; *pid on success. */
static int spawn(char *const argv[], const char *log, pid_t *pid) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawn(pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        return die(argv[0], strerror(rc));
    }
    return 0;
}

/* Waits for pid; its exit status (-1: killed by a signal or not waitable). */
static int wait_exit(pid_t pid) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR) {
            return -1;
        }
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* SIGTERM, up to 10 s for it to end, then SIGKILL. */
static void stop_process(pid_t *pid) {
    if (*pid <= 0) {
        return;
    }
    kill(*pid, SIGTERM);
    for (int i = 0; i < 1000; i++) {
        int st = 0;
        pid_t r = waitpid(*pid, &st, WNOHANG);
        if (r == *pid || (r < 0 && errno != EINTR)) {
            *pid = 0;
            return;
        }
        sleep_s(0.01);
    }
    kill(*pid, SIGKILL);
    waitpid(*pid, NULL, 0);
    *pid = 0;
}

/* Runs argv to completion: its wall time in seconds, < 0 when it failed. */
static double run_timed(char *const argv[], const char *log) {
    pid_t pid = 0;
    double t0 = common_now_s();
    if (spawn(argv, log, &pid) != 0) {
        return -1.0;
    }
    int rc = wait_exit(pid);
    double secs = common_now_s() - t0;
    if (rc != 0) {
        fprintf(stderr, "bench_service: %s exited with %d (log: %s)\n", argv[0], rc, log);
        return -1.0;
    }
    return secs;
}

/* A tcp port on 127.0.0.1 that is free now (the kernel's pick of an ephemeral one). */
static int free_port(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return die("socket", strerror(errno));
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
        close(fd);
        return die("bind 127.0.0.1:0", strerror(errno));
    }
    *port = ntohs(sa.sin_port);
    close(fd);
    return 0;
}

static int generate_games(char *db, long n, const char *log) {
    char n_s[32];
    snprintf(n_s, sizeof n_s, "%ld", n);
    char *argv[] = {CHESSLENS,      "games", "generate", "--n", n_s,         "--seed", "1",
                    "--max-tokens", "64",    "--db",     db,    "--dataset", "g",      NULL};
    return run_timed(argv, log) < 0 ? 1 : 0;
}

/* ---- a client of the coordinator ---- */

typedef struct client {
    void *ctx, *sock;
    uint64_t req;
} client;

static int client_open(client *c, const char *endpoint) {
    *c = (client){.ctx = zmq_ctx_new()};
    int linger = 0;
    if (c->ctx == NULL || (c->sock = zmq_socket(c->ctx, ZMQ_DEALER)) == NULL ||
        zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(c->sock, endpoint) != 0) {
        return die("client", zmq_strerror(zmq_errno()));
    }
    return 0;
}

static void client_close(client *c) {
    if (c->sock != NULL) {
        zmq_close(c->sock);
    }
    if (c->ctx != NULL) {
        zmq_ctx_term(c->ctx);
    }
    *c = (client){0};
}

/* Sends request m (its req is set here) and waits up to timeout_s for its REPLY, whose body is
 * decoded into *out (proto_reply_free). An ERROR answer or no answer fails, with err. */
static int client_call(client *c, proto_msg *m, double timeout_s, proto_reply **out, char *err) {
    m->req = ++c->req;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = proto_encode(m, &buf, &len, err);
    if (rc != 0) {
        return rc;
    }
    rc = zmq_send(c->sock, buf, len, 0);
    free(buf);
    if (rc < 0) {
        return common_fail(err, COMMON_ERR_IO, "send %s: %s", proto_type_name(m->type),
                           zmq_strerror(zmq_errno()));
    }
    double deadline = common_now_s() + timeout_s;
    for (;;) {
        double left = deadline - common_now_s();
        zmq_pollitem_t it = {.socket = c->sock, .events = ZMQ_POLLIN};
        if (left <= 0 || zmq_poll(&it, 1, (long)(left * 1000) + 1) <= 0) {
            if (left > 0 && zmq_errno() == EINTR) {
                continue;
            }
            return common_fail(err, COMMON_ERR_IO, "%s: no answer in %.0f s",
                               proto_type_name(m->type), timeout_s);
        }
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, c->sock, 0) < 0) {
            zmq_msg_close(&f);
            continue;
        }
        proto_msg *a = NULL;
        rc = proto_decode(zmq_msg_data(&f), zmq_msg_size(&f), &a, err);
        zmq_msg_close(&f);
        if (rc != 0 || a->req != m->req) {
            proto_msg_free(&a); /* the answer of an earlier request that timed out */
            continue;
        }
        if (a->type == PROTO_ERROR) {
            rc = common_fail(err, COMMON_ERR_INVALID, "%s: %s", proto_type_name(m->type), a->error);
        } else if (a->type != PROTO_REPLY) {
            rc = common_fail(err, COMMON_ERR_INVALID, "%s: answered with %s",
                             proto_type_name(m->type), proto_type_name(a->type));
        } else {
            rc = proto_reply_decode(m->type, a->body, a->body_len, out, err);
        }
        proto_msg_free(&a);
        return rc;
    }
}

/* Waits until the coordinator lists n connected workers. */
static int wait_workers(client *c, size_t n, double timeout_s, char *err) {
    double deadline = common_now_s() + timeout_s;
    while (common_now_s() < deadline) {
        proto_msg m = {.type = PROTO_WORKERS};
        proto_reply *r = NULL;
        int rc = client_call(c, &m, timeout_s, &r, err);
        if (rc != 0) {
            return rc;
        }
        size_t up = 0;
        for (size_t i = 0; i < r->n_workers; i++) {
            up += r->workers[i].connected;
        }
        proto_reply_free(&r);
        if (up >= n) {
            return 0;
        }
        sleep_s(0.01);
    }
    return common_fail(err, COMMON_ERR_IO, "fewer than %zu workers after %.0f s", n, timeout_s);
}

/* Task counts of one STATUS answer. */
typedef struct counts {
    uint64_t pending, leased, done, dead, rows;
} counts;

static int sweep_status(client *c, const char *name, counts *out, char *err) {
    proto_msg m = {.type = PROTO_STATUS, .sweep = name};
    proto_reply *r = NULL;
    int rc = client_call(c, &m, 60.0, &r, err);
    if (rc != 0) {
        return rc;
    }
    if (r->n_sweeps != 1) {
        proto_reply_free(&r);
        return common_fail(err, COMMON_ERR_INVALID, "status: %zu sweeps", r->n_sweeps);
    }
    const proto_sweep_info *s = &r->sweeps[0];
    *out = (counts){s->pending, s->leased, s->done, s->dead, s->rows};
    proto_reply_free(&r);
    return 0;
}

/* Submits spec as sweep `name`; *n_tasks planned, *answered_at when the answer came. */
static int submit(client *c, const char *name, const char *spec, uint64_t *n_tasks,
                  double *answered_at, char *err) {
    proto_msg m = {.type = PROTO_SUBMIT, .submission = name, .spec = spec};
    proto_reply *r = NULL;
    int rc = client_call(c, &m, 300.0, &r, err);
    *answered_at = common_now_s();
    if (rc == 0) {
        *n_tasks = r->n_tasks;
        proto_reply_free(&r);
    }
    return rc;
}

typedef struct service {
    pid_t coordinator, workers[N_WORKERS];
    char endpoint[64];
} service;

/* CPU seconds used so far: by the coordinator, by the workers together, and by the whole
 * machine (busy, and busy + idle, over every CPU). */
typedef struct cpu_snap {
    double coordinator, workers, busy, all;
} cpu_snap;

static double process_cpu_s(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0.0;
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ticks[2] = {0, 0};
    /* after ") ": state (field 3) .. utime (14) and stime (15) */
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                            &ticks[0], &ticks[1]) != 2) {
        return 0.0;
    }
    return (double)(ticks[0] + ticks[1]) / (double)sysconf(_SC_CLK_TCK);
}

static void cpu_snapshot(const service *sv, cpu_snap *out) {
    *out = (cpu_snap){.coordinator = process_cpu_s(sv->coordinator)};
    for (int i = 0; i < N_WORKERS; i++) {
        out->workers += process_cpu_s(sv->workers[i]);
    }
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[8] = {0};
    if (f != NULL && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                            &v[3], &v[4], &v[5], &v[6], &v[7]) == 8) {
        double tck = (double)sysconf(_SC_CLK_TCK);
        double idle = (double)(v[3] + v[4]);
        double all = 0;
        for (int i = 0; i < 8; i++) {
            all += (double)v[i];
        }
        out->busy = (all - idle) / tck;
        out->all = all / tck;
    }
    if (f != NULL) {
        fclose(f);
    }
}

/* Results stored so far, by the coordinator's own count: the sum of its workers' tasks_done,
 * which a WORKERS request reads from memory (a STATUS counts the task table, a scan that at
 * 100,000 tasks costs the coordinator more than a hundred tasks do). */
static int stored_so_far(client *c, uint64_t *n, char *err) {
    proto_msg m = {.type = PROTO_WORKERS};
    proto_reply *r = NULL;
    int rc = client_call(c, &m, 60.0, &r, err);
    if (rc != 0) {
        return rc;
    }
    *n = 0;
    for (size_t i = 0; i < r->n_workers; i++) {
        *n += r->workers[i].tasks_done;
    }
    proto_reply_free(&r);
    return 0;
}

/* Waits until every one of the n_tasks of sweep `name` is done or dead. The WORKERS count of
 * stored results is polled every poll_s (its cost is a few frames); *done_at is when the poll
 * that first showed n_tasks stored was answered, so it is late by at most about poll_s. A
 * STATUS every STATUS_EVERY_S (and at the end) sees dead tasks and gives the final counts. */
static int wait_sweep(client *c, const service *sv, const char *name, uint64_t n_tasks,
                      double poll_s, double timeout_s, double *done_at, cpu_snap *cpu_at_done,
                      counts *last, char *err) {
    double t0 = common_now_s(), next_status = t0 + STATUS_EVERY_S;
    *done_at = 0;
    while (common_now_s() - t0 < timeout_s) {
        uint64_t stored = 0;
        int rc = stored_so_far(c, &stored, err);
        double t = common_now_s();
        if (rc != 0) {
            return rc;
        }
        if (stored >= n_tasks && *done_at == 0) {
            *done_at = t;
            cpu_snapshot(sv, cpu_at_done);
        }
        if (*done_at != 0 || t >= next_status) {
            if ((rc = sweep_status(c, name, last, err)) != 0) {
                return rc;
            }
            next_status = common_now_s() + STATUS_EVERY_S;
            if (last->done + last->dead >= n_tasks && last->leased == 0 && last->pending == 0) {
                if (*done_at == 0) {
                    *done_at = t; /* dead tasks: the workers never stored them all */
                    cpu_snapshot(sv, cpu_at_done);
                }
                return 0;
            }
        }
        sleep_s(poll_s);
    }
    return common_fail(err, COMMON_ERR_IO, "sweep %s not finished after %.0f s", name, timeout_s);
}

/* ---- the service's processes ---- */

/* Starts the coordinator on db and N_WORKERS workers with worker_opts (2 strings) on a free
 * port; logs go to dir/<tag>-*.log. */
static int service_start(service *sv, char *db, const char *dir, const char *tag,
                         char *pairs_per_task, char *const *worker_opts) {
    *sv = (service){0};
    int port = 0;
    if (free_port(&port) != 0) {
        return 1;
    }
    snprintf(sv->endpoint, sizeof sv->endpoint, "tcp://127.0.0.1:%d", port);
    char log[600];
    snprintf(log, sizeof log, "%s/%s-coordinator.log", dir, tag);
    char *cargv[] = {COORDINATOR,        "--db",         db,  "--bind", sv->endpoint, "--quiet",
                     "--pairs-per-task", pairs_per_task, NULL};
    if (spawn(cargv, log, &sv->coordinator) != 0) {
        return 1;
    }
    for (int i = 0; i < N_WORKERS; i++) {
        char id[32];
        snprintf(id, sizeof id, "%s-w%d", tag, i);
        snprintf(log, sizeof log, "%s/%s-worker%d.log", dir, tag, i);
        char *wargv[16] = {WORKER, "--connect", sv->endpoint, "--id", id};
        size_t n = 5;
        for (size_t k = 0; worker_opts[k] != NULL && n + 1 < sizeof wargv / sizeof wargv[0]; k++) {
            wargv[n++] = worker_opts[k];
        }
        wargv[n] = NULL;
        if (spawn(wargv, log, &sv->workers[i]) != 0) {
            return 1;
        }
    }
    return 0;
}

static void service_stop(service *sv) {
    for (int i = 0; i < N_WORKERS; i++) {
        stop_process(&sv->workers[i]);
    }
    stop_process(&sv->coordinator);
}

/* ---- what the store says ---- */

/* The store's pragmas as coordinator_store_open sets them (synchronous is per connection, so
 * it is read from a connection opened the same way). */
static void store_pragmas(coordinator_store *s, int *synchronous, char journal[16]) {
    sqlite3 *h = coordinator_store_db(s);
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(h, "PRAGMA synchronous", -1, &st, NULL);
    *synchronous = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL);
    snprintf(journal, 16, "%s",
             sqlite3_step(st) == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : "?");
    sqlite3_finalize(st);
}

/* The size of the TASK the coordinator sends for the task of st's row (id, job_id, body). */
static int task_size(coordinator_store *s, const coordinator_spec *spec, const char *spec_text,
                     const char *model_path, const char *sha, sqlite3_stmt *st, size_t *len,
                     char *err) {
    coordinator_work *work = NULL;
    uint8_t *wbody = NULL, *task = NULL;
    size_t wlen = 0;
    int rc = coordinator_work_load(s, spec, sqlite3_column_int64(st, 1), sqlite3_column_blob(st, 2),
                                   (size_t)sqlite3_column_bytes(st, 2), &work, err);
    if (rc == 0) {
        rc = coordinator_work_encode(work, &wbody, &wlen, err);
    }
    if (rc == 0) {
        proto_msg tm = {.type = PROTO_TASK,
                        .task = sqlite3_column_int64(st, 0),
                        .epoch = 1,
                        .attempt = 1,
                        .model_path = model_path,
                        .model_sha256 = sha,
                        .spec = spec_text,
                        .body = wbody,
                        .body_len = wlen};
        rc = proto_encode(&tm, &task, len, err);
    }
    free(task);
    free(wbody);
    coordinator_work_destroy(&work);
    return rc;
}

/* The messages of the no-op run, measured on a sizing sweep of its first game (the same game,
 * the same cut-offs): the mean TASK over its tasks as the coordinator builds them, and a no-op
 * worker's RESULT. Also the store's synchronous level and journal mode. */
static int message_sizes(const char *dir, size_t *task_len, size_t *result_len, int *synchronous,
                         char journal[16]) {
    char db[512], log[512], json[2048], err[COMMON_ERR_LEN];
    snprintf(db, sizeof db, "%s/sizing.db", dir);
    snprintf(log, sizeof log, "%s/sizing-games.log", dir);
    if (generate_games(db, 1, log) != 0) {
        return 1;
    }
    snprintf(json, sizeof json,
             "{\"name\": \"sizing\", \"model\": \"%s\", \"dataset\": \"g\", \"games\": "
             "[0, 1], \"analyses\": [%s]}",
             MODEL, NOOP_ANALYSIS);
    coordinator_store *s = NULL;
    coordinator_spec *spec = NULL;
    sqlite3_stmt *st = NULL;
    char *spec_text = NULL, *model_path = NULL, sha[65];
    uint8_t *rbody = NULL, *result = NULL;
    size_t rlen = 0, n_tasks = 0, total = 0, n = 0;
    int64_t model_id = 0, sweep_id = 0;
    coordinator_plan_opts one_pair = {.pairs_per_task = 1};
    int rc = coordinator_store_open(&s, db, 0, err);
    if (rc == 0) {
        store_pragmas(s, synchronous, journal);
        rc = coordinator_model_record(s, MODEL, &model_id, err);
    }
    if (rc == 0) {
        rc = coordinator_sweep_submit(s, json, strlen(json), "sizing", model_id, &sweep_id, NULL,
                                      err);
    }
    if (rc == 0 &&
        (rc = coordinator_sweep_dispatch_info(s, sweep_id, &spec_text, &model_path, sha, err)) ==
            0 &&
        (rc = coordinator_spec_parse(&spec, spec_text, strlen(spec_text), err)) == 0) {
        rc = coordinator_plan_sweep(s, sweep_id, spec, &one_pair, &n_tasks, err);
    }
    if (rc == 0) {
        sqlite3_prepare_v2(coordinator_store_db(s), "SELECT id, job_id, body FROM task ORDER BY id",
                           -1, &st, NULL);
        while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
            size_t len = 0;
            rc = task_size(s, spec, spec_text, model_path, sha, st, &len, err);
            total += len;
            n++;
        }
    }
    if (rc == 0 && n == 0) {
        rc = common_fail(err, COMMON_ERR_INVALID, "the sizing sweep has no task");
    }
    coordinator_results none = {0};
    char digest[65];
    if (rc == 0 && (rc = coordinator_results_encode(&none, &rbody, &rlen, err)) == 0) {
        coordinator_digest_hex(rbody, rlen, digest);
        proto_msg rm = {.type = PROTO_RESULT,
                        .task = 1,
                        .epoch = 1,
                        .digest = digest,
                        .body = rbody,
                        .body_len = rlen};
        rc = proto_encode(&rm, &result, result_len, err);
    }
    if (rc == 0) {
        *task_len = total / n;
    } else {
        die("message sizes", err);
    }
    sqlite3_finalize(st);
    free(rbody);
    free(result);
    free(spec_text);
    free(model_path);
    coordinator_spec_destroy(&spec);
    coordinator_store_close(&s);
    return rc != 0;
}

static int64_t query_int(sqlite3 *h, const char *sql) {
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

/* ---- (a) raw ZeroMQ ---- */

typedef struct raw_bench {
    char endpoint[128];
    size_t req_len, rep_len;
    atomic_int bound; /* 1: endpoint is set; -1: the ROUTER failed */
    atomic_bool stop;
    atomic_uint_fast64_t done[N_WORKERS];
} raw_bench;

typedef struct raw_dealer {
    raw_bench *b;
    int index;
} raw_dealer;

static void *raw_router(void *arg) {
    raw_bench *b = arg;
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_ROUTER);
    int zero = 0;
    size_t n = sizeof b->endpoint;
    uint8_t *reply = calloc(b->rep_len, 1);
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (reply == NULL || zmq_bind(sock, "tcp://127.0.0.1:*") != 0 ||
        zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, b->endpoint, &n) != 0) {
        atomic_store(&b->bound, -1);
    } else {
        atomic_store(&b->bound, 1);
    }
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    while (atomic_load(&b->bound) == 1 && !atomic_load(&b->stop)) {
        zmq_pollitem_t it = {.socket = sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 50) <= 0) {
            continue;
        }
        /* like the coordinator: take every frame that waits, then answer each */
        while (zmq_msg_recv(&id, sock, ZMQ_DONTWAIT) >= 0) {
            if (zmq_msg_recv(&body, sock, 0) < 0) {
                break;
            }
            zmq_send(sock, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE | ZMQ_DONTWAIT);
            zmq_send(sock, reply, b->rep_len, ZMQ_DONTWAIT);
        }
    }
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    free(reply);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return NULL;
}

static void *raw_dealer_main(void *arg) {
    raw_dealer *d = arg;
    raw_bench *b = d->b;
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0, timeout = 100;
    uint8_t *req = calloc(b->req_len, 1);
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    if (req != NULL && zmq_connect(sock, b->endpoint) == 0) {
        for (int i = 0; i < IN_FLIGHT; i++) {
            zmq_send(sock, req, b->req_len, 0);
        }
        zmq_msg_t m;
        zmq_msg_init(&m);
        while (!atomic_load(&b->stop)) {
            if (zmq_msg_recv(&m, sock, 0) < 0) {
                continue;
            }
            atomic_fetch_add(&b->done[d->index], 1);
            zmq_send(sock, req, b->req_len, 0);
        }
        zmq_msg_close(&m);
    }
    free(req);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return NULL;
}

static uint64_t raw_total(raw_bench *b) {
    uint64_t n = 0;
    for (int i = 0; i < N_WORKERS; i++) {
        n += atomic_load(&b->done[i]);
    }
    return n;
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* Round trips per second over `seconds`, after a warm-up of 0.5 s; < 0 on a failure. *cpu_us:
 * CPU microseconds (every thread of this process) per round trip. */
static double raw_zmq(size_t req_len, size_t rep_len, double seconds, double *cpu_us) {
    raw_bench *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return -1.0;
    }
    b->req_len = req_len;
    b->rep_len = rep_len;
    atomic_init(&b->bound, 0);
    atomic_init(&b->stop, false);
    for (int i = 0; i < N_WORKERS; i++) {
        atomic_init(&b->done[i], 0);
    }
    pthread_t router, dealers[N_WORKERS];
    raw_dealer ds[N_WORKERS];
    double rate = -1.0;
    if (pthread_create(&router, NULL, raw_router, b) != 0) {
        free(b);
        return -1.0;
    }
    while (atomic_load(&b->bound) == 0) {
        sleep_s(0.001);
    }
    if (atomic_load(&b->bound) == 1) {
        int started = 0;
        for (int i = 0; i < N_WORKERS; i++) {
            ds[i] = (raw_dealer){.b = b, .index = i};
            if (pthread_create(&dealers[i], NULL, raw_dealer_main, &ds[i]) != 0) {
                break;
            }
            started++;
        }
        if (started == N_WORKERS) {
            sleep_s(0.5);
            uint64_t n0 = raw_total(b);
            double t0 = common_now_s(), c0 = self_cpu_s();
            sleep_s(seconds);
            uint64_t n1 = raw_total(b);
            double t1 = common_now_s(), c1 = self_cpu_s();
            rate = (double)(n1 - n0) / (t1 - t0);
            *cpu_us = n1 > n0 ? (c1 - c0) * 1e6 / (double)(n1 - n0) : 0.0;
        }
        atomic_store(&b->stop, true);
        for (int i = 0; i < started; i++) {
            pthread_join(dealers[i], NULL);
        }
    }
    atomic_store(&b->stop, true);
    pthread_join(router, NULL);
    free(b);
    return rate;
}

/* ---- (b) no-op tasks through the service ---- */

typedef struct noop_result {
    uint64_t tasks;
    double plan_s, run_s, rate;
    int64_t db_done, db_once, db_total;
    cpu_snap cpu0, cpu1; /* at the first dispatch and at the last completion */
} noop_result;

static int write_spec(const char *path, const char *name, long games, const char *analysis) {
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        return die(path, "cannot write");
    }
    fprintf(f,
            "{\"name\": \"%s\", \"model\": \"%s\", \"dataset\": \"g\", \"games\": [0, %ld],"
            " \"analyses\": [%s]}\n",
            name, MODEL, games, analysis);
    return fclose(f) == 0 ? 0 : die(path, "cannot write");
}

static int read_text(const char *path, char **out) {
    size_t len = 0;
    char err[COMMON_ERR_LEN];
    return common_read_file(path, out, &len, err) == 0 ? 0 : die(path, err);
}

static int noop_run(const args *a, const char *dir, noop_result *out) {
    char db[512], spec_path[512], log[512], err[COMMON_ERR_LEN];
    char *spec = NULL;
    long games = (a->tasks + CUTOFFS_PER_GAME - 1) / CUTOFFS_PER_GAME;
    snprintf(db, sizeof db, "%s/noop.db", dir);
    snprintf(spec_path, sizeof spec_path, "%s/noop.json", dir);
    snprintf(log, sizeof log, "%s/noop-games.log", dir);
    if (generate_games(db, games, log) != 0 ||
        write_spec(spec_path, "noop", games, NOOP_ANALYSIS) != 0 ||
        read_text(spec_path, &spec) != 0) {
        free(spec);
        return 1;
    }
    service sv;
    client c = {0};
    char *const wopts[] = {"--backend", "noop", "--prefetch", STR(IN_FLIGHT), NULL};
    int rc = service_start(&sv, db, dir, "noop", "1", wopts);
    counts last = {0};
    double submitted = 0, answered = 0, done_at = 0;
    if (rc == 0 && (rc = client_open(&c, sv.endpoint)) == 0) {
        rc = wait_workers(&c, N_WORKERS, 30.0, err);
        submitted = common_now_s();
        if (rc == 0) {
            rc = submit(&c, "noop", spec, &out->tasks, &answered, err);
            cpu_snapshot(&sv, &out->cpu0);
        }
        if (rc == 0) {
            rc = wait_sweep(&c, &sv, "noop", out->tasks, 0.005, 600.0, &done_at, &out->cpu1, &last,
                            err);
        }
        if (rc != 0) {
            die("no-op sweep", err);
        }
    }
    client_close(&c);
    service_stop(&sv);
    free(spec);
    if (rc != 0) {
        return 1;
    }
    out->plan_s = answered - submitted;
    out->run_s = done_at - answered;
    out->rate = (double)last.done / out->run_s;
    sqlite3 *h = NULL;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(h);
        return die(db, "cannot open");
    }
    out->db_total = query_int(h, "SELECT count(*) FROM task");
    out->db_done = query_int(h, "SELECT count(*) FROM task WHERE state = 'done' AND "
                                "done_at IS NOT NULL AND worker IS NOT NULL");
    out->db_once = query_int(h, "SELECT count(*) FROM task WHERE attempts = 1 AND lease_epoch = 1");
    sqlite3_close(h);
    return 0;
}

/* ---- (c) a real sweep both ways ---- */

typedef struct real_result {
    uint64_t tasks;
    double run_s, service_s;
    int64_t run_values, service_values;
} real_result;

static const char REAL_ANALYSIS[] =
    "{\"kind\": \"patch\", \"patch\": \"block_every\", \"cutoffs\": [20, 40, 60], "
    "\"corrupt\": {\"position\": \"last\", \"with\": \"each_legal_alternative\"}, "
    "\"metric\": {\"kind\": \"logit_diff\", \"tokens\": [\"clean_top\", \"corrupt_top\"]}}";

static int64_t count_values(const char *db) {
    sqlite3 *h = NULL;
    int64_t n = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        n = query_int(h, "SELECT count(*) FROM patch_value");
    }
    sqlite3_close(h);
    return n;
}

static int real_run(const args *a, const char *dir, real_result *out) {
    char db1[512], db2[512], spec_path[512], log[512], err[COMMON_ERR_LEN];
    char *spec = NULL;
    snprintf(db1, sizeof db1, "%s/real-run.db", dir);
    snprintf(db2, sizeof db2, "%s/real-service.db", dir);
    snprintf(spec_path, sizeof spec_path, "%s/real.json", dir);
    snprintf(log, sizeof log, "%s/real-games.log", dir);
    if (generate_games(db1, a->real_games, log) != 0 ||
        generate_games(db2, a->real_games, log) != 0 ||
        write_spec(spec_path, "real", a->real_games, REAL_ANALYSIS) != 0 ||
        read_text(spec_path, &spec) != 0) {
        free(spec);
        return 1;
    }
    snprintf(log, sizeof log, "%s/real-run.log", dir);
    char *rargv[] = {CHESSLENS, "run",       spec_path, "--db",    db1, "--workers",
                     "2",       "--threads", "1",       "--quiet", NULL};
    out->run_s = run_timed(rargv, log);
    if (out->run_s < 0) {
        free(spec);
        return 1;
    }

    service sv;
    client c = {0};
    char *const wopts[] = {"--threads", "1", NULL};
    double t0 = common_now_s(), answered = 0, done_at = 0;
    counts last = {0};
    int rc = service_start(&sv, db2, dir, "real", "0", wopts);
    if (rc == 0 && (rc = client_open(&c, sv.endpoint)) == 0) {
        rc = submit(&c, "real", spec, &out->tasks, &answered, err);
        if (rc == 0) {
            cpu_snap at_done;
            rc = wait_sweep(&c, &sv, "real", out->tasks, 0.005, 600.0, &done_at, &at_done, &last,
                            err);
        }
        if (rc != 0) {
            die("real sweep through the service", err);
        }
    }
    client_close(&c);
    service_stop(&sv);
    free(spec);
    if (rc != 0) {
        return 1;
    }
    out->service_s = done_at - t0;
    out->run_values = count_values(db1);
    out->service_values = count_values(db2);
    return 0;
}

/* ---- report ---- */

static const char *sync_name(int level) {
    static const char *const names[] = {"OFF", "NORMAL", "FULL", "EXTRA"};
    return level >= 0 && level <= 3 ? names[level] : "?";
}

static const char *verdict(bool met) {
    return met ? "met" : "NOT met";
}

int main(int argc, char **argv) {
    args a;
    int prc = parse_args(argc, argv, &a);
    if (prc != 0) {
        return prc;
    }
    char dir[] = "/tmp/chesslens-bench-service-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        return die("mkdtemp", strerror(errno));
    }
    signal(SIGPIPE, SIG_IGN);
    printf("bench_service: the sweep service on tcp loopback, %d workers, %ld CPUs online\n",
           N_WORKERS, sysconf(_SC_NPROCESSORS_ONLN));
    fflush(stdout);

    /* the raw loop runs before and after the service, with the message sizes of this run's
     * first no-op task (from a small sizing sweep), so that both see the same machine */
    noop_result nr = {0};
    size_t task_len = 0, result_len = 0;
    int synchronous = -1;
    char journal[16] = "?";
    double raw[2] = {-1.0, -1.0}, raw_cpu[2] = {0.0, 0.0};
    int rc = message_sizes(dir, &task_len, &result_len, &synchronous, journal);
    if (rc == 0) {
        raw[0] = raw_zmq(result_len, task_len, a.seconds / 2, &raw_cpu[0]);
        rc = raw[0] > 0 ? 0 : die("raw ZeroMQ", "failed");
    }
    if (rc == 0) {
        rc = noop_run(&a, dir, &nr);
    }
    if (rc == 0) {
        raw[1] = raw_zmq(result_len, task_len, a.seconds / 2, &raw_cpu[1]);
        rc = raw[1] > 0 ? 0 : die("raw ZeroMQ", "failed");
    }
    double raw_rate = (raw[0] + raw[1]) / 2, raw_us = (raw_cpu[0] + raw_cpu[1]) / 2;
    if (rc == 0) {
        long games = (a.tasks + CUTOFFS_PER_GAME - 1) / CUTOFFS_PER_GAME;
        printf("store: SQLite journal_mode %s, synchronous %s (%d): a batch's COMMIT reaches the "
               "WAL file (write) before\n  any frame of the batch is sent, so it survives a "
               "crash of the coordinator process; %s\n",
               journal, sync_name(synchronous), synchronous,
               synchronous >= 2 ? "FULL also fsyncs the WAL at every commit, surviving an OS "
                                  "crash or power loss"
                                : "an OS crash or power loss may take back the last "
                                  "results (their tasks run again; the\n  batches that answer "
                                  "a submit, cancel or retry-dead are fsynced; --sync full "
                                  "fsyncs every commit)");
        printf("no-op sweep: %ld games x %d cut-offs, 1 pair per task: %" PRIu64
               " tasks (planned in %.2f s)\n",
               games, CUTOFFS_PER_GAME, nr.tasks, nr.plan_s);
        printf("  messages: TASK %zu bytes (the mean over the cut-offs), RESULT %zu bytes\n",
               task_len, result_len);
        printf("  raw ZeroMQ   ROUTER thread + %d DEALER threads, %d in flight each, "
               "RESULT-size requests, TASK-size replies\n"
               "               %.0f round trips/s (%.0f before the service, %.0f after; "
               "CPU %.1f us each)\n",
               N_WORKERS, IN_FLIGHT, raw_rate, raw[0], raw[1], raw_us);
        printf("  service      chesslens-coordinator + %d chesslens-worker --backend noop "
               "processes\n"
               "               %.0f tasks/s (%.2f s from the first dispatch to the last "
               "completion) = %.3f of raw\n",
               N_WORKERS, nr.rate, nr.run_s, nr.rate / raw_rate);
        double coord = nr.cpu1.coordinator - nr.cpu0.coordinator;
        double workers = nr.cpu1.workers - nr.cpu0.workers;
        double busy = nr.cpu1.busy - nr.cpu0.busy, all = nr.cpu1.all - nr.cpu0.all;
        double per = 1e6 / (double)(nr.tasks > 0 ? nr.tasks : 1);
        printf("  CPU per task: coordinator %.1f us, the 2 workers %.1f us; the machine was %.0f%% "
               "busy, %.0f%% of it not the service's\n",
               coord * per, workers * per, all > 0 ? 100 * busy / all : 0,
               all > 0 ? 100 * (busy - coord - workers) / all : 0);
        printf("  store check: %" PRId64 " of %" PRId64 " tasks done with their completion "
               "recorded; %" PRId64 " leased exactly once (epoch 1, attempt 1)\n",
               nr.db_done, nr.db_total, nr.db_once);
        fflush(stdout);
    }
    real_result rr = {0};
    if (rc == 0 && a.real_games > 0) {
        rc = real_run(&a, dir, &rr);
        if (rc == 0) {
            printf("real sweep: block_every at cut-offs 20,40,60 over %ld games of models/"
                   "chess-tiny, every legal alternative of the last token: %" PRIu64
                   " tasks of up to 64 pairs\n",
                   a.real_games, rr.tasks);
            printf("  chesslens run --workers 2 --threads 1                  %8.2f s  (%" PRId64
                   " values stored)\n",
                   rr.run_s, rr.run_values);
            printf("  chesslens-coordinator + 2 chesslens-worker --threads 1 %8.2f s  (%" PRId64
                   " values stored; from process start to the last completion)  = %.3f x run\n",
                   rr.service_s, rr.service_values, rr.service_s / rr.run_s);
        }
    }
    if (rc == 0) {
        bool durable = nr.db_done == nr.db_total && nr.db_once == nr.db_total;
        printf("targets: no-op >= %.0f tasks/s: %s (%.0f); >= %.1f of raw: %s (%.3f); every "
               "dispatch and completion in the store: %s",
               TARGET_TASKS_PER_S, verdict(nr.rate >= TARGET_TASKS_PER_S), nr.rate,
               TARGET_RAW_RATIO, verdict(nr.rate / raw_rate >= TARGET_RAW_RATIO),
               nr.rate / raw_rate, verdict(durable));
        if (a.real_games > 0) {
            printf("; service <= %.2f x run: %s (%.3f)", TARGET_OVERHEAD,
                   verdict(rr.service_s <= TARGET_OVERHEAD * rr.run_s), rr.service_s / rr.run_s);
        }
        printf("\n");
    }
    if (a.keep) {
        printf("kept: %s\n", dir);
    } else {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench_service: could not remove %s\n", dir);
        }
    }
    return rc;
}
