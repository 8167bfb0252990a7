/*
 * The coordinator's clients: `chesslens submit|status|wait|cancel|list|workers|retry-dead`.
 * Each sends client requests (proto/PROTOCOL.md) to a running chesslens-coordinator through
 * cli/client.h; --coordinator names it (default $CHESSLENS_COORDINATOR, else
 * tcp://127.0.0.1:5555). A sweep is named by its name, the handle `submit` prints.
 * --curve-key and --server-key (default $CHESSLENS_CURVE_KEY, $CHESSLENS_SERVER_KEY) make the
 * connection CurveZMQ (proto/PROTOCOL.md, "Authentication"): both or neither.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli_int.h"
#include "cli/client.h"
#include "coordinator/coordinator.h"
#include "coordinator/curve.h"
#include "coordinator/wire.h"

/* How long one try of a request waits before it is sent again on a fresh socket. */
#define TRY_MS 2000

#define OPT_COORDINATOR(ptr)                                                                       \
    {                                                                                              \
        .name = "--coordinator", .kind = CLI_STRING, .value = (ptr), .meta = "ENDPOINT",           \
        .help = "the coordinator (default $CHESSLENS_COORDINATOR, else tcp://127.0.0.1:5555)"      \
    }
#define OPT_CURVE_KEY(ptr)                                                                         \
    {                                                                                              \
        .name = "--curve-key", .kind = CLI_STRING, .value = (ptr), .meta = "FILE",                 \
        .help = "this client's secret key file (chesslens keygen; default\n"                       \
                "$CHESSLENS_CURVE_KEY): CurveZMQ to the coordinator; needs --server-key"           \
    }
#define OPT_SERVER_KEY(ptr)                                                                        \
    {                                                                                              \
        .name = "--server-key", .kind = CLI_STRING, .value = (ptr), .meta = "FILE",                \
        .help = "the coordinator's public key file (default $CHESSLENS_SERVER_KEY)"                \
    }
#define OPT_TIMEOUT(ptr, what)                                                                     \
    {                                                                                              \
        .name = "--timeout", .kind = CLI_LONG, .value = (ptr), .meta = "SECONDS", .lo = 0,         \
        .hi = 100000000L, .help = (what)                                                           \
    }

/* The key files of --curve-key and --server-key: the environment's unless a flag names one. */
typedef struct key_paths {
    const char *key, *server;
} key_paths;

static const char *env_path(const char *name) {
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static key_paths key_paths_default(void) {
    return (key_paths){env_path("CHESSLENS_CURVE_KEY"), env_path("CHESSLENS_SERVER_KEY")};
}

/* Reads the CURVE keys that k names into *buf: 0 with *curve = buf, or NULL when neither file
 * is named; else the exit code after printing why (2: only one of them is named). */
static int load_keys(const cli_spec *spec, const key_paths *k, coordinator_curve_client *buf,
                     const coordinator_curve_client **curve) {
    *curve = NULL;
    memset(buf, 0, sizeof *buf);
    if (k->key == NULL && k->server == NULL) {
        return 0;
    }
    if (k->key == NULL || k->server == NULL) {
        return cli_usage_error(spec, "CURVE needs both keys: --curve-key (or $CHESSLENS_CURVE_KEY)"
                                     " and --server-key (or $CHESSLENS_SERVER_KEY)");
    }
    char err[COMMON_ERR_LEN] = "";
    if (coordinator_curve_client_load(buf, k->key, k->server, err) != 0) {
        fprintf(stderr, "chesslens %s: %s\n", spec->command, err);
        return 1;
    }
    *curve = buf;
    return 0;
}

/* A client of endpoint, a CURVE client when curve is not NULL (borrowed: it must outlive the
 * client). */
static int open_client(cli_client **c, const char *endpoint, const coordinator_curve_client *curve,
                       char *err) {
    const cli_client_setup setup = {coordinator_curve_client_setup, curve};
    return cli_client_open_with(c, endpoint, NULL, TRY_MS, curve != NULL ? &setup : NULL, err);
}

/* One request and its reply: 0, or 1 after printing the error as "chesslens CMD: ...". */
static int call(const char *cmd, const char *endpoint, const coordinator_curve_client *curve,
                proto_msg *req, long timeout_s, proto_reply **reply) {
    char err[COMMON_ERR_LEN] = "";
    cli_client *c = NULL;
    int rc = open_client(&c, endpoint, curve, err);
    if (rc == 0) {
        rc = cli_client_call(c, req, (int)(timeout_s * 1000), reply, err);
    }
    cli_client_close(&c);
    if (rc != 0) {
        fprintf(stderr, "chesslens %s: %s\n", cmd, err);
        return 1;
    }
    return 0;
}

/* "running" while tasks are pending or leased, else "finished" or "failed" (dead tasks);
 * "cancelled" once cancelled. */
static const char *sweep_state(const proto_sweep_info *s) {
    if (s->cancelled) {
        return "cancelled";
    }
    if (s->pending + s->leased > 0) {
        return "running";
    }
    return s->dead > 0 ? "failed" : "finished";
}

static void print_sweeps(const proto_reply *r) {
    size_t w = strlen("sweep");
    for (size_t i = 0; i < r->n_sweeps; i++) {
        size_t n = strlen(r->sweeps[i].name);
        w = n > w ? n : w;
    }
    printf("%-*s  %-9s  %8s  %8s  %8s  %6s  %12s  %s\n", (int)w, "sweep", "state", "pending",
           "running", "done", "dead", "rows", "created");
    for (size_t i = 0; i < r->n_sweeps; i++) {
        const proto_sweep_info *s = &r->sweeps[i];
        char created[32] = "-";
        time_t t = (time_t)s->created_at;
        struct tm tm;
        if (gmtime_r(&t, &tm) != NULL) {
            strftime(created, sizeof created, "%Y-%m-%d %H:%M:%SZ", &tm);
        }
        printf("%-*s  %-9s  %8" PRIu64 "  %8" PRIu64 "  %8" PRIu64 "  %6" PRIu64 "  %12" PRIu64
               "  %s\n",
               (int)w, s->name, sweep_state(s), s->pending, s->leased, s->done, s->dead, s->rows,
               created);
    }
}

/* ---- submit ---------------------------------------------------------------------------- */

int cli_submit(int argc, char **argv) {
    const char *endpoint = cli_client_default_endpoint(), *submission = NULL;
    key_paths keys = key_paths_default();
    long timeout_s = 30;
    const cli_opt opts[] = {
        OPT_COORDINATOR(&endpoint),
        OPT_CURVE_KEY(&keys.key),
        OPT_SERVER_KEY(&keys.server),
        {.name = "--submission-id",
         .kind = CLI_STRING,
         .value = &submission,
         .meta = "ID",
         .help = "what makes a retried submit the same sweep (default: the digest of the\n"
                 "spec's canonical text, so the same spec is one sweep)"},
        OPT_TIMEOUT(&timeout_s, "give up when the coordinator has not answered (default 30)"),
    };
    const cli_spec spec_cli = {
        .command = "submit",
        .synopsis = "SPEC.json [--coordinator ENDPOINT] [--submission-id ID]",
        .about = "Submits a sweep (docs/SWEEP.md) to the coordinator and prints its name, the\n"
                 "handle of status, wait, cancel and retry-dead. The model path and dataset are\n"
                 "as the coordinator and its workers see them. Submitting the same spec again\n"
                 "(or the same --submission-id) answers with the sweep already there.",
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
    coordinator_curve_client key_buf;
    const coordinator_curve_client *curve = NULL;
    if ((prc = load_keys(&spec_cli, &keys, &key_buf, &curve)) != 0) {
        return prc;
    }
    char err[COMMON_ERR_LEN] = "", digest[65], default_id[80];
    char *text = NULL;
    size_t len = 0;
    coordinator_spec *spec = NULL;
    /* checked here first, so that a mistake in the file is reported with its path */
    if (common_read_file(args[0], &text, &len, err) != 0 ||
        coordinator_spec_parse(&spec, text, len, err) != 0) {
        fprintf(stderr, "chesslens submit: %s: %s\n", args[0], err);
        free(text);
        coordinator_curve_wipe(&key_buf.own);
        return 1;
    }
    free(text);
    if (submission == NULL) {
        coordinator_digest_hex(spec->canonical, strlen(spec->canonical), digest);
        snprintf(default_id, sizeof default_id, "spec-%s", digest);
        submission = default_id;
    }
    proto_msg req = {.type = PROTO_SUBMIT, .submission = submission, .spec = spec->canonical};
    proto_reply *r = NULL;
    int status = call("submit", endpoint, curve, &req, timeout_s, &r);
    coordinator_curve_wipe(&key_buf.own);
    if (status == 0) {
        fprintf(stderr, "sweep '%s': %" PRIu64 " tasks%s\n", r->sweep, r->n_tasks,
                r->existed ? " (submitted before: this is that sweep)" : "");
        printf("%s\n", r->sweep);
    }
    proto_reply_free(&r);
    coordinator_spec_destroy(&spec);
    return status;
}

/* The shape every request command but submit and wait shares: --coordinator and --timeout,
 * up to max_args words (the sweep's name, min_args of them required), one request of `type`
 * naming that sweep ("" when none). CLI_CONTINUE with its reply in *r, or the exit code (0
 * after --help). */
static int request_command(int argc, char **argv, const char *cmd, const char *synopsis,
                           const char *about, size_t min_args, size_t max_args, proto_type type,
                           proto_reply **r) {
    const char *endpoint = cli_client_default_endpoint();
    key_paths keys = key_paths_default();
    long timeout_s = 30;
    const cli_opt opts[] = {
        OPT_COORDINATOR(&endpoint),
        OPT_CURVE_KEY(&keys.key),
        OPT_SERVER_KEY(&keys.server),
        OPT_TIMEOUT(&timeout_s, "give up when the coordinator has not answered (default 30)"),
    };
    const cli_spec spec_cli = {.command = cmd,
                               .synopsis = synopsis,
                               .about = about,
                               .min_args = min_args,
                               .max_args = max_args,
                               .opts = opts,
                               .n_opts = CLI_N_OPTS(opts)};
    char *args[1];
    size_t n_args = 0;
    int prc = cli_parse(&spec_cli, argc, argv, args, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    coordinator_curve_client key_buf;
    const coordinator_curve_client *curve = NULL;
    if ((prc = load_keys(&spec_cli, &keys, &key_buf, &curve)) != 0) {
        return prc;
    }
    proto_msg req = {.type = type, .sweep = n_args > 0 ? args[0] : ""};
    int rc = call(cmd, endpoint, curve, &req, timeout_s, r) != 0 ? 1 : CLI_CONTINUE;
    coordinator_curve_wipe(&key_buf.own);
    return rc;
}

/* ---- status, list ---------------------------------------------------------------------- */

int cli_status(int argc, char **argv) {
    proto_reply *r = NULL;
    int rc = request_command(argc, argv, "status", "[SWEEP] [--coordinator ENDPOINT]",
                             "Prints a sweep's tasks by state (or every sweep's) and its dead "
                             "tasks with\ntheir last errors.",
                             0, 1, PROTO_STATUS, &r);
    if (rc != CLI_CONTINUE) {
        return rc;
    }
    print_sweeps(r);
    if (r->n_dead > 0) {
        printf(
            "\ndead tasks (failed every attempt; chesslens retry-dead SWEEP runs them again):\n");
    }
    for (size_t i = 0; i < r->n_dead; i++) {
        const proto_dead_task *d = &r->dead[i];
        printf("  %s  %s  %" PRIu32 " attempts: %s\n", d->sweep, d->key, d->attempts, d->error);
    }
    proto_reply_free(&r);
    return 0;
}

int cli_list(int argc, char **argv) {
    proto_reply *r = NULL;
    int rc = request_command(argc, argv, "list", "[--coordinator ENDPOINT]",
                             "Lists the coordinator's sweeps with their tasks by state.", 0, 0,
                             PROTO_LIST, &r);
    if (rc != CLI_CONTINUE) {
        return rc;
    }
    print_sweeps(r);
    proto_reply_free(&r);
    return 0;
}

/* ---- workers --------------------------------------------------------------------------- */

int cli_workers(int argc, char **argv) {
    proto_reply *r = NULL;
    int rc = request_command(argc, argv, "workers", "[--coordinator ENDPOINT]",
                             "Lists the workers the coordinator knows: backend, devices, the "
                             "task each\nruns, results delivered, and how long ago each was last "
                             "heard from.",
                             0, 0, PROTO_WORKERS, &r);
    if (rc != CLI_CONTINUE) {
        return rc;
    }
    size_t w = strlen("worker");
    for (size_t i = 0; i < r->n_workers; i++) {
        size_t n = strlen(r->workers[i].id);
        w = n > w ? n : w;
    }
    printf("%-*s  %-7s  %-12s  %7s  %-9s  %8s  %10s  %s\n", (int)w, "worker", "backend", "devices",
           "threads", "state", "done", "last seen", "task");
    for (size_t i = 0; i < r->n_workers; i++) {
        const proto_worker_info *x = &r->workers[i];
        char devices[64] = "-", task[256] = "-", seen[32];
        size_t at = 0;
        for (size_t d = 0; d < x->n_devices && at < sizeof devices - 8; d++) {
            at += (size_t)snprintf(devices + at, sizeof devices - at, "%s%" PRId32, d ? "," : "",
                                   x->devices[d]);
        }
        if (x->task != 0) {
            snprintf(task, sizeof task, "%s/%s", x->sweep, x->task_key);
        }
        snprintf(seen, sizeof seen, "%.1f s ago", (double)x->last_seen_ms / 1000.0);
        printf("%-*s  %-7s  %-12s  %7" PRIu32 "  %-9s  %8" PRIu64 "  %10s  %s\n", (int)w, x->id,
               x->backend, devices, x->threads, x->connected ? "connected" : "silent",
               x->tasks_done, seen, task);
    }
    proto_reply_free(&r);
    return 0;
}

/* ---- cancel, retry-dead ---------------------------------------------------------------- */

int cli_cancel(int argc, char **argv) {
    proto_reply *r = NULL;
    int rc = request_command(argc, argv, "cancel", "SWEEP [--coordinator ENDPOINT]",
                             "Cancels a sweep: its tasks are no longer handed out and the workers\n"
                             "running them are told to drop them. What is stored stays.",
                             1, 1, PROTO_CANCEL, &r);
    if (rc == CLI_CONTINUE) {
        rc = 0;
        printf("sweep '%s' cancelled: %" PRIu64 " running tasks told to stop\n", r->sweep,
               r->n_changed);
    }
    proto_reply_free(&r);
    return rc;
}

int cli_retry_dead(int argc, char **argv) {
    proto_reply *r = NULL;
    int rc = request_command(argc, argv, "retry-dead", "SWEEP [--coordinator ENDPOINT]",
                             "Runs a sweep's dead tasks again, each with a fresh count of "
                             "attempts.",
                             1, 1, PROTO_RETRY_DEAD, &r);
    if (rc == CLI_CONTINUE) {
        rc = 0;
        printf("sweep '%s': %" PRIu64 " dead tasks requeued\n", r->sweep, r->n_changed);
    }
    proto_reply_free(&r);
    return rc;
}

/* ---- wait ------------------------------------------------------------------------------ */

int cli_wait(int argc, char **argv) {
    const char *endpoint = cli_client_default_endpoint();
    key_paths keys = key_paths_default();
    long timeout_s = 0, interval_ms = 500;
    bool quiet = false;
    const cli_opt opts[] = {
        OPT_COORDINATOR(&endpoint),
        OPT_CURVE_KEY(&keys.key),
        OPT_SERVER_KEY(&keys.server),
        OPT_TIMEOUT(&timeout_s, "stop waiting after this long, exit 1 (default 0: no limit)"),
        {.name = "--interval-ms",
         .kind = CLI_LONG,
         .value = &interval_ms,
         .meta = "MS",
         .lo = 10,
         .hi = 3600000,
         .help = "how often to ask the coordinator (default 500)"},
        {.name = "--quiet", .kind = CLI_FLAG, .value = &quiet, .help = "no progress bar"},
    };
    const cli_spec spec_cli = {
        .command = "wait",
        .synopsis = "SWEEP [--coordinator ENDPOINT] [--timeout SECONDS]",
        .about = "Waits until a sweep has no task pending or running, with a progress bar on a\n"
                 "terminal, then prints a summary. Exit code 0 only when it finished with no\n"
                 "dead task; 1 when tasks are dead, it was cancelled or the time ran out. It\n"
                 "keeps waiting while the coordinator is down or restarting.",
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
    coordinator_curve_client key_buf;
    const coordinator_curve_client *curve = NULL;
    if ((prc = load_keys(&spec_cli, &keys, &key_buf, &curve)) != 0) {
        return prc;
    }
    char err[COMMON_ERR_LEN] = "";
    cli_client *c = NULL;
    if (open_client(&c, endpoint, curve, err) != 0) {
        fprintf(stderr, "chesslens wait: %s\n", err);
        coordinator_curve_wipe(&key_buf.own);
        return 1;
    }
    bool tty = !quiet && isatty(STDERR_FILENO), silent_noted = false;
    double t0 = common_now_s(), last_draw = 0.0;
    uint64_t done0 = UINT64_MAX;
    int status = 1;
    for (;;) {
        proto_msg req = {.type = PROTO_STATUS, .sweep = args[0]};
        proto_reply *r = NULL;
        int rc = cli_client_call(c, &req, TRY_MS, &r, err);
        if (rc == COMMON_ERR_IO) { /* down or restarting: keep asking */
            if (!silent_noted) {
                fprintf(stderr, "%schesslens wait: %s; still waiting\n", tty ? "\n" : "", err);
                silent_noted = true;
            }
        } else if (rc != 0) {
            fprintf(stderr, "%schesslens wait: %s\n", tty ? "\n" : "", err);
            break;
        } else if (r->n_sweeps != 1) {
            fprintf(stderr, "chesslens wait: the coordinator answered %zu sweeps for '%s'\n",
                    r->n_sweeps, args[0]);
            proto_reply_free(&r);
            break;
        } else {
            silent_noted = false;
            const proto_sweep_info *s = &r->sweeps[0];
            done0 = done0 == UINT64_MAX ? s->done : done0;
            double secs = common_now_s() - t0;
            double rate = secs > 0 && s->done > done0 ? (double)(s->done - done0) / secs : 0.0;
            cli_progress p = {s->pending, s->leased, s->done, s->dead, s->rows};
            bool over = s->leased == 0 && (s->pending == 0 || s->cancelled);
            if (tty && (over || common_now_s() - last_draw > 0.2)) {
                cli_progress_draw(&p, rate, over);
                last_draw = common_now_s();
            }
            if (over) {
                printf("sweep '%s' %s: %" PRIu64 " tasks done, %" PRIu64 " dead, %" PRIu64
                       " pending, %" PRIu64 " values stored\n",
                       s->name, sweep_state(s), s->done, s->dead, s->pending, s->rows);
                if (s->dead > 0) {
                    fprintf(stderr,
                            "chesslens wait: %" PRIu64
                            " dead tasks: chesslens status %s shows their errors\n",
                            s->dead, s->name);
                }
                status = s->dead == 0 && !s->cancelled ? 0 : 1;
                proto_reply_free(&r);
                break;
            }
            proto_reply_free(&r);
        }
        if (timeout_s > 0 && common_now_s() - t0 >= (double)timeout_s) {
            fprintf(stderr, "%schesslens wait: '%s' not finished after %ld s\n", tty ? "\n" : "",
                    args[0], timeout_s);
            break;
        }
        struct timespec nap = {interval_ms / 1000, (interval_ms % 1000) * 1000000L};
        nanosleep(&nap, NULL);
    }
    cli_client_close(&c);
    coordinator_curve_wipe(&key_buf.own);
    return status;
}
