/*
 * chesslens-worker: one worker of the sweep service (worker/service.h). It connects to a
 * chesslens-coordinator, takes tasks, runs them on its executor (one loaded model serves many
 * tasks) and sends the results back until it is told to stop. Its options are read by the same
 * table-driven parser as every chesslens command (cli/cli_int.h).
 *
 * The first SIGINT or SIGTERM stops it cleanly: no new tasks, the running one finishes and its
 * result is acknowledged, then it exits 0. The handler is installed with SA_RESETHAND, so a
 * second signal kills it at once (a task that hangs cannot keep it alive against the operator).
 * Exit codes: 0 after a clean stop, 1 for an error, 2 for a bad command line.
 *
 * With --curve-key (its own secret key file) and --server-key (the coordinator's public key
 * file) every connection is CurveZMQ (proto/PROTOCOL.md, "Authentication"): the keys are read
 * once at start and set on every socket the worker opens, reconnects included.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "coordinator/curve.h"
#include "worker/service.h"

static volatile sig_atomic_t stop = 0;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

/* "0,1,3" into ids[] (at most PROTO_MAX_DEVICES ids in 0..65535); false when malformed. */
static bool parse_devices(const char *s, int32_t *ids, size_t *n) {
    *n = 0;
    for (const char *p = s;;) {
        char *end = NULL;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (*p < '0' || *p > '9' || errno != 0 || v > 65535 || *n == PROTO_MAX_DEVICES ||
            (*end != ',' && *end != '\0')) {
            return false;
        }
        ids[(*n)++] = (int32_t)v;
        if (*end == '\0') {
            return true;
        }
        p = end + 1;
    }
}

int main(int argc, char **argv) {
    static const char *const backends[] = {"cpu", "cuda", "noop", NULL};
    const char *endpoint = NULL, *devices = NULL, *id = NULL, *faults = NULL, *curve_key = NULL,
               *server_key = NULL, *ack_log = NULL;
    int backend = 0;
    long threads = 0, max_models = 2, prefetch = 2;
    bool verbose = false, trace = false;
    const cli_opt opts[] = {
        {.name = "--connect",
         .kind = CLI_STRING,
         .value = &endpoint,
         .meta = "ENDPOINT",
         .required = true,
         .help = "the coordinator, e.g. tcp://127.0.0.1:5555"},
        {.name = "--backend",
         .kind = CLI_CHOICE,
         .value = &backend,
         .meta = "NAME",
         .choices = backends,
         .help = "cpu (default), cuda (the GPU --devices names), or noop: empty results at\n"
                 "once, for measuring the service"},
        {.name = "--devices",
         .kind = CLI_STRING,
         .value = &devices,
         .meta = "LIST",
         .help = "cuda: the GPUs this worker uses (default 0), e.g. 0,1,2,3: one model copy\n"
                 "and stream per GPU, each task split across them (NCCL when built with it);\n"
                 "or one worker per GPU (CUDA_VISIBLE_DEVICES); cpu: ids announced, e.g. 0,1"},
        CLI_OPT_THREADS(&threads),
        {.name = "--id",
         .kind = CLI_STRING,
         .value = &id,
         .meta = "NAME",
         .help = "worker id (default HOSTNAME-PID); keep it across restarts of the same worker"},
        {.name = "--max-models",
         .kind = CLI_LONG,
         .value = &max_models,
         .meta = "N",
         .lo = 1,
         .hi = PROTO_MAX_MODELS,
         .help = "loaded models kept at once, least recently used dropped first (default 2)"},
        {.name = "--prefetch",
         .kind = CLI_LONG,
         .value = &prefetch,
         .meta = "N",
         .lo = 1,
         .hi = WORKER_MAX_SLOTS,
         .help = "tasks held at once: one running, N-1 waiting (default 2); raise it when\n"
                 "tasks take well under a millisecond"},
        {.name = "--faults",
         .kind = CLI_STRING,
         .value = &faults,
         .meta = "SPEC",
         .allow_empty = true,
         .help = "inject faults, for tests: fail_task=ID, hang_task=ID, abort_task=ID,\n"
                 "flaky=ID:K (attempts 1..K fail), sleep_ms=MS, comma-separated"},
        {.name = "--curve-key",
         .kind = CLI_STRING,
         .value = &curve_key,
         .meta = "FILE",
         .help = "its own secret key file (chesslens keygen; mode 0600): CurveZMQ to the\n"
                 "coordinator, which must list its .pub; needs --server-key"},
        {.name = "--server-key",
         .kind = CLI_STRING,
         .value = &server_key,
         .meta = "FILE",
         .help = "the coordinator's public key file (its .pub); needs --curve-key"},
        {.name = "--ack-log",
         .kind = CLI_STRING,
         .value = &ack_log,
         .meta = "FILE",
         .help = "append a line 'ACK TASK EPOCH STATUS KIND' for every acknowledgement of\n"
                 "a result, failure or return, flushed before the worker acts on it (for\n"
                 "checking acknowledged results against the database)"},
        {.name = "--verbose",
         .kind = CLI_FLAG,
         .value = &verbose,
         .help = "one line per task and per reconnect on stderr"},
        {.name = "--trace",
         .kind = CLI_FLAG,
         .value = &trace,
         .help = "as --verbose, and a line for every frame that could not be sent"},
    };
    const cli_spec spec = {
        .command = "worker",
        .synopsis = "--connect ENDPOINT [--backend cpu|cuda|noop] [--devices LIST] [--threads N]",
        .about = "Takes tasks from a chesslens-coordinator and runs them (proto/PROTOCOL.md).",
        .opts = opts,
        .n_opts = CLI_N_OPTS(opts)};
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    int32_t ids[PROTO_MAX_DEVICES];
    size_t n_ids = 0;
    if (devices != NULL && !parse_devices(devices, ids, &n_ids)) {
        return cli_usage_error(&spec, "--devices: '%s' is not a list of ids like 0,1", devices);
    }
    if ((curve_key == NULL) != (server_key == NULL)) {
        return cli_usage_error(&spec, "--curve-key and --server-key go together");
    }
    char err[COMMON_ERR_LEN] = "", name[PROTO_MAX_DEVICES * 6 + 8];
    /* read before the model loads, so that a bad key file fails at once */
    coordinator_curve_client curve;
    memset(&curve, 0, sizeof curve);
    if (curve_key != NULL &&
        coordinator_curve_client_load(&curve, curve_key, server_key, err) != 0) {
        fprintf(stderr, "chesslens-worker: %s\n", err);
        return 1;
    }
    worker_compute c = {0};
    if (backends[backend][0] == 'n') {
        worker_compute_noop(&c);
    } else {
        snprintf(name, sizeof name, "%s", backends[backend]);
        if (backends[backend][1] == 'u') { /* "cuda:0,1,2,3": one executor rank per GPU */
            int at = snprintf(name, sizeof name, "cuda:%d", n_ids > 0 ? (int)ids[0] : 0);
            for (size_t i = 1; i < n_ids; i++) {
                at += snprintf(name + at, sizeof name - (size_t)at, ",%d", (int)ids[i]);
            }
        }
        if (worker_compute_executor(&c, name, (int)threads, (size_t)max_models, err) != 0) {
            fprintf(stderr, "chesslens-worker: %s\n", err);
            coordinator_curve_wipe(&curve.own);
            return 1;
        }
    }
    if (n_ids > 0 && backends[backend][1] != 'u') { /* cuda announces its device itself */
        memcpy(c.devices, ids, n_ids * sizeof ids[0]);
        c.n_devices = n_ids;
    }
    if (faults != NULL && worker_compute_faulty(&c, &c, faults, err) != 0) {
        worker_compute_destroy(&c);
        coordinator_curve_wipe(&curve.own);
        fprintf(stderr, "chesslens-worker: --faults: %s\n", err);
        return 2;
    }

    FILE *acks = NULL;
    if (ack_log != NULL && (acks = fopen(ack_log, "a")) == NULL) {
        fprintf(stderr, "chesslens-worker: --ack-log: fopen(%s): %s\n", ack_log, strerror(errno));
        worker_compute_destroy(&c);
        coordinator_curve_wipe(&curve.own);
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* the second signal is not caught: it ends the process */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    worker_service_opts o = {.endpoint = endpoint,
                             .id = id,
                             .stop = &stop,
                             .slots = (uint32_t)prefetch,
                             .socket_setup =
                                 curve_key != NULL ? coordinator_curve_client_setup : NULL,
                             .socket_setup_arg = &curve,
                             .ack_log = acks,
                             .verbose = trace     ? 2
                                        : verbose ? 1
                                                  : 0};
    int rc = worker_service_run(&o, &c, err);
    if (acks != NULL) {
        fclose(acks);
    }
    worker_compute_destroy(&c);
    coordinator_curve_wipe(&curve.own);
    if (rc != 0) {
        fprintf(stderr, "chesslens-worker: %s\n", err);
        return 1;
    }
    return 0;
}
