/*
 * chesslens-worker: one worker of the sweep service (worker/service.h). It connects to a
 * chesslens-coordinator, takes tasks, runs them on its executor (one loaded model serves many
 * tasks) and sends the results back until it is told to stop.
 *
 * The first SIGINT or SIGTERM stops it cleanly: no new tasks, the running one finishes and its
 * result is acknowledged, then it exits 0. The handler is installed with SA_RESETHAND, so a
 * second signal kills it at once (a task that hangs cannot keep it alive against the operator).
 * Exit codes: 0 after a clean stop, 1 for an error, 2 for a bad command line.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/service.h"

static volatile sig_atomic_t stop = 0;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static void usage(FILE *out) {
    fprintf(out,
            "usage: chesslens-worker --connect ENDPOINT [options]\n"
            "\n"
            "Takes tasks from a chesslens-coordinator and runs them (proto/PROTOCOL.md).\n"
            "\n"
            "options:\n"
            "  --connect ENDPOINT   the coordinator, e.g. tcp://127.0.0.1:5555 (required)\n"
            "  --backend NAME       cpu (default), or noop: empty results at once, for\n"
            "                       measuring the service\n"
            "  --devices LIST       device ids announced to the coordinator, e.g. 0,1\n"
            "  --threads N          BLAS and elementwise threads (default 0: every CPU online)\n"
            "  --id NAME            worker id (default HOSTNAME-PID); keep it across restarts\n"
            "                       of the same worker\n"
            "  --max-models N       loaded models kept at once, least recently used dropped\n"
            "                       first (default 2, at most 16)\n"
            "  --faults SPEC        inject faults, for tests: fail_task=ID, hang_task=ID,\n"
            "                       abort_task=ID, sleep_ms=MS, comma-separated\n"
            "  --verbose            one line per task and per reconnect on stderr (twice:\n"
            "                       also frames that could not be sent)\n"
            "  --help               this text\n");
}

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static int
bad(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "chesslens-worker: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(chesslens-worker --help describes the options)\n");
    va_end(ap);
    return 2;
}

/* A decimal integer in [lo, hi]. */
static bool parse_long(const char *s, long lo, long hi, long *v) {
    char *end = NULL;
    errno = 0;
    long x = strtol(s, &end, 10);
    if (s[0] == '\0' || s[0] == ' ' || s[0] == '+' || errno != 0 || *end != '\0' || x < lo ||
        x > hi) {
        return false;
    }
    *v = x;
    return true;
}

/* "0,1,3" into devices (at most PROTO_MAX_DEVICES ids in 0..65535). */
static bool parse_devices(const char *s, worker_compute *c) {
    c->n_devices = 0;
    char buf[1024];
    if (strlen(s) >= sizeof buf || s[0] == '\0') {
        return false;
    }
    strcpy(buf, s);
    for (char *p = buf;;) {
        char *comma = strchr(p, ',');
        if (comma != NULL) {
            *comma = '\0';
        }
        long v = 0;
        if (c->n_devices == PROTO_MAX_DEVICES || !parse_long(p, 0, 65535, &v)) {
            return false;
        }
        c->devices[c->n_devices++] = (int32_t)v;
        if (comma == NULL) {
            return true;
        }
        p = comma + 1;
    }
}

int main(int argc, char **argv) {
    const char *endpoint = NULL, *backend = NULL, *devices = NULL, *id = NULL, *faults = NULL;
    const char *threads_s = NULL, *max_models_s = NULL;
    int verbose = 0;
    struct {
        const char *name;
        const char **value;
    } opts[] = {{"--connect", &endpoint},       {"--backend", &backend}, {"--devices", &devices},
                {"--threads", &threads_s},      {"--id", &id},           {"--faults", &faults},
                {"--max-models", &max_models_s}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(a, "--verbose") == 0 || strcmp(a, "-v") == 0) {
            verbose++;
            continue;
        }
        size_t k = 0;
        while (k < sizeof opts / sizeof opts[0] && strcmp(a, opts[k].name) != 0) {
            k++;
        }
        if (k == sizeof opts / sizeof opts[0]) {
            return bad("unknown option '%s'", a);
        }
        if (*opts[k].value != NULL) {
            return bad("%s given twice", a);
        }
        if (i + 1 == argc || argv[i + 1][0] == '\0') {
            return bad("%s needs a value", a);
        }
        *opts[k].value = argv[++i];
    }
    if (endpoint == NULL) {
        return bad("%s is required", "--connect");
    }
    long threads = 0, max_models = 2;
    if (threads_s != NULL && !parse_long(threads_s, 0, 4096, &threads)) {
        return bad("--threads: '%s' is not a count in 0..4096", threads_s);
    }
    if (max_models_s != NULL && !parse_long(max_models_s, 1, PROTO_MAX_MODELS, &max_models)) {
        return bad("--max-models: '%s' is not a count in 1..16", max_models_s);
    }
    backend = backend != NULL ? backend : "cpu";
    if (strcmp(backend, "cpu") != 0 && strcmp(backend, "noop") != 0) {
        return bad("--backend: '%s' is not one of cpu, noop", backend);
    }

    char err[COMMON_ERR_LEN] = "";
    worker_compute c = {0};
    if (strcmp(backend, "noop") == 0) {
        worker_compute_noop(&c);
    } else if (worker_compute_executor(&c, backend, (int)threads, (size_t)max_models, err) != 0) {
        fprintf(stderr, "chesslens-worker: %s\n", err);
        return 1;
    }
    if (devices != NULL && !parse_devices(devices, &c)) {
        worker_compute_destroy(&c);
        return bad("--devices: '%s' is not a list of ids like 0,1", devices);
    }
    if (faults != NULL && worker_compute_faulty(&c, &c, faults, err) != 0) {
        worker_compute_destroy(&c);
        fprintf(stderr, "chesslens-worker: --faults: %s\n", err);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND; /* the second signal is not caught: it ends the process */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    worker_service_opts o = {.endpoint = endpoint, .id = id, .stop = &stop, .verbose = verbose};
    int rc = worker_service_run(&o, &c, err);
    worker_compute_destroy(&c);
    if (rc != 0) {
        fprintf(stderr, "chesslens-worker: %s\n", err);
        return 1;
    }
    return 0;
}
