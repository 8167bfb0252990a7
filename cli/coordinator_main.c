/*
 * chesslens-coordinator: the sweep service's coordinator (coordinator/service.h) on tcp
 * endpoints. It owns the database; workers (chesslens-worker) and clients (chesslens submit,
 * status, wait, ...) connect to it. SIGINT or SIGTERM stops it after the batch in progress;
 * started again on the same database, it resumes every unfinished sweep. A store error (a full
 * disk, an I/O error) does not stop it: the batch is rolled back, and it serves again from the
 * database after a wait (coordinator/service.h).
 *
 * With --curve-key and --clients every connection is CurveZMQ, and only the workers and clients
 * whose public keys are in the clients directory get in (proto/PROTOCOL.md, "Authentication";
 * docs/SECURITY.md). Without them it listens on loopback only, unless --insecure-listen.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli_int.h"
#include "coordinator/curve.h"
#include "coordinator/service.h"

static volatile sig_atomic_t stop = 0;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv) {
    const char *db = NULL, *bind = "tcp://127.0.0.1:5555", *curve_key = NULL, *clients = NULL;
    const char *faults = NULL;
    long lease_ms = 30000, heartbeat_ms = 0, max_attempts = 3, pairs = 0, games = 0;
    long backoff_base_ms = 1000, backoff_cap_ms = 60000;
    bool quiet = false, insecure_listen = false;
    static const char *const sync_levels[] = {"normal", "full", NULL};
    int sync_level = 0;
    const cli_opt opts[] = {
        {.name = "--db",
         .kind = CLI_STRING,
         .value = &db,
         .meta = "FILE",
         .required = true,
         .help = "the chesslens database (created when absent)"},
        {.name = "--bind",
         .kind = CLI_STRING,
         .value = &bind,
         .meta = "ENDPOINT",
         .help = "where workers and clients connect (default tcp://127.0.0.1:5555; port *:\n"
                 "a free one, named by the log's 'listening on' line)"},
        {.name = "--lease-ms",
         .kind = CLI_LONG,
         .value = &lease_ms,
         .meta = "MS",
         .lo = 10,
         .hi = 86400000,
         .help = "a task's lease without a heartbeat (default 30000)"},
        {.name = "--heartbeat-ms",
         .kind = CLI_LONG,
         .value = &heartbeat_ms,
         .meta = "MS",
         .lo = 0,
         .hi = 86400000,
         .help = "how often workers heartbeat (0 = lease / 6)"},
        {.name = "--max-attempts",
         .kind = CLI_LONG,
         .value = &max_attempts,
         .meta = "N",
         .lo = 1,
         .hi = 1000,
         .help = "a task that failed or lost its lease N times is dead, with its last error"},
        {.name = "--backoff-base-ms",
         .kind = CLI_LONG,
         .value = &backoff_base_ms,
         .meta = "MS",
         .lo = 1,
         .hi = 86400000,
         .help =
             "a failed or expired attempt n waits a random time in [0, min(cap, base 2^(n-1)))\n"
             "before it is dispatched again (default 1000)"},
        {.name = "--backoff-cap-ms",
         .kind = CLI_LONG,
         .value = &backoff_cap_ms,
         .meta = "MS",
         .lo = 1,
         .hi = 86400000,
         .help = "the cap of that wait (default 60000)"},
        {.name = "--pairs-per-task",
         .kind = CLI_LONG,
         .value = &pairs,
         .meta = "N",
         .lo = 0,
         .hi = 1L << 20,
         .help = "clean/corrupt pairs per patch task of submitted sweeps (0 = 64)"},
        {.name = "--games-per-task",
         .kind = CLI_LONG,
         .value = &games,
         .meta = "N",
         .lo = 0,
         .hi = 1L << 20,
         .help = "games per aggregate task of submitted sweeps (0 = 64)"},
        {.name = "--sync",
         .kind = CLI_CHOICE,
         .value = &sync_level,
         .meta = "normal|full",
         .choices = sync_levels,
         .help = "what a power loss may take back (a crash of the process takes nothing):\n"
                 "normal (default): the last results acknowledged to workers, whose tasks then\n"
                 "run again (submits, cancels and retries are always fsynced); full: nothing,\n"
                 "at the cost of an fsync per batch"},
        {.name = "--curve-key",
         .kind = CLI_STRING,
         .value = &curve_key,
         .meta = "FILE",
         .help = "its secret key file (chesslens keygen; mode 0600): CurveZMQ on every\n"
                 "connection; needs --clients"},
        {.name = "--clients",
         .kind = CLI_STRING,
         .value = &clients,
         .meta = "DIR",
         .help = "the public keys (*.pub) of the workers and clients it admits; any other\n"
                 "key is refused and logged"},
        {.name = "--insecure-listen",
         .kind = CLI_FLAG,
         .value = &insecure_listen,
         .help = "allow plain tcp (no CURVE: anyone who reaches the port is served) on\n"
                 "addresses other than loopback"},
        {.name = "--faults",
         .kind = CLI_STRING,
         .value = &faults,
         .meta = "LIST",
         .help = "fault drill, for tests and drills only (coordinator/service.h):\n"
                 "drop_result_acks=N: the ACKs of the first N stored results are not sent"},
        {.name = "--quiet", .kind = CLI_FLAG, .value = &quiet, .help = "no log lines"},
    };
    const cli_spec spec = {
        .command = "coordinator",
        .synopsis = "--db FILE [--bind tcp://127.0.0.1:5555] [--curve-key FILE --clients DIR]",
        .about = "Serves sweeps from the database to chesslens-worker processes and answers\n"
                 "chesslens submit/status/wait/cancel/list/workers/retry-dead (proto/PROTOCOL.md).",
        .opts = opts,
        .n_opts = CLI_N_OPTS(opts)};
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    /* the service refuses these too; here the message can name the flags */
    if ((curve_key == NULL) != (clients == NULL)) {
        return cli_usage_error(&spec,
                               "--curve-key and --clients go together: CURVE without a clients "
                               "directory would admit every key (no ZAP handler checks them)");
    }
    if (curve_key == NULL && !insecure_listen && !coordinator_endpoint_is_local(bind)) {
        return cli_usage_error(&spec,
                               "--bind %s: plain tcp listens on loopback only (127.0.0.0/8, ::1, "
                               "localhost); give --curve-key and --clients, or --insecure-listen",
                               bind);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    coordinator_service_opts o = {.db_path = db,
                                  .bind = {bind},
                                  .n_bind = 1,
                                  .sched = {.lease_ms = (uint32_t)lease_ms,
                                            .heartbeat_ms = (uint32_t)heartbeat_ms,
                                            .max_attempts = (uint32_t)max_attempts,
                                            .backoff_base_ms = (uint32_t)backoff_base_ms,
                                            .backoff_cap_ms = (uint32_t)backoff_cap_ms,
                                            .sync_full = sync_level == 1,
                                            .plan = {(size_t)pairs, (size_t)games}},
                                  .stop = &stop,
                                  .log = quiet ? NULL : stderr,
                                  .curve_key = curve_key,
                                  .clients_dir = clients,
                                  .insecure_listen = insecure_listen,
                                  /* a full disk or an I/O error is waited out, not fatal */
                                  .retry_store_errors = true,
                                  .faults = faults};
    char err[COMMON_ERR_LEN] = "";
    if (coordinator_service_run(&o, err) != 0) {
        fprintf(stderr, "chesslens-coordinator: %s\n", err);
        return 1;
    }
    return 0;
}
