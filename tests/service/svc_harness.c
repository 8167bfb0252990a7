/*
 * svc_harness: processes, the CLI, the database checks and a raw client for the tests of the
 * sweep service (svc_harness.h).
 *
 * Children are started with fork + execve, and everything the child does between the two is
 * async-signal-safe (the argument and environment arrays are built before fork), because a test
 * that holds a ZeroMQ context has threads, and a child of a threaded process may not allocate.
 */
#include "svc_harness.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "tests/cli/cli_run.h"

extern char **environ;

#define POLL_NAP_MS 20

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- the environment and its processes ---- */

int svc_setup(void **state) {
    *state = calloc(1, sizeof(svc_env));
    return *state != NULL ? 0 : -1;
}

int svc_teardown(void **state) {
    svc_env *e = *state;
    if (e != NULL) {
        svc_env_teardown(e);
        free(e);
    }
    *state = NULL;
    return 0;
}

void svc_env_init(svc_env *e, const char *scenario) {
    memset(e, 0, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "%s/%s", cli_tmpdir(), scenario);
    char cmd[3 * SVC_PATH];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", e->dir, e->dir);
    assert_int_equal(system(cmd), 0);
    svc_path(e, "service.db", e->db, sizeof e->db);
}

void svc_path(const svc_env *e, const char *name, char *out, size_t cap) {
    int n = snprintf(out, cap, "%s/%s", e->dir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

static svc_proc *proc_of(svc_env *e, pid_t pid) {
    for (size_t i = 0; i < SVC_MAX_PROCS; i++) {
        if (e->procs[i].pid == pid && pid > 0) {
            return &e->procs[i];
        }
    }
    return NULL;
}

void svc_env_teardown(svc_env *e) {
    for (size_t i = 0; i < SVC_MAX_PROCS; i++) {
        if (e->procs[i].pid > 0) {
            kill(e->procs[i].pid, SIGKILL);
            waitpid(e->procs[i].pid, NULL, 0);
            e->procs[i].pid = 0;
        }
    }
    e->coordinator = 0;
}

/* environ with env_add's entries added (replacing those of the same name): a NULL-terminated
 * array whose strings are borrowed (free the array only). */
static char **make_env(const char *const env_add[]) {
    size_t n_env = 0, n_add = 0;
    while (environ[n_env] != NULL) {
        n_env++;
    }
    while (env_add != NULL && env_add[n_add] != NULL) {
        n_add++;
    }
    char **out = calloc(n_env + n_add + 1, sizeof *out);
    assert_non_null(out);
    size_t k = 0;
    for (size_t i = 0; i < n_env; i++) {
        bool replaced = false;
        for (size_t j = 0; j < n_add && !replaced; j++) {
            size_t name_len = strcspn(env_add[j], "=");
            replaced =
                strncmp(environ[i], env_add[j], name_len) == 0 && environ[i][name_len] == '=';
        }
        if (!replaced) {
            out[k++] = environ[i];
        }
    }
    for (size_t j = 0; j < n_add; j++) {
        out[k++] = (char *)(uintptr_t)env_add[j];
    }
    out[k] = NULL;
    return out;
}

pid_t svc_spawn(svc_env *e, const char *name, const char *out_path, const char *err_path,
                const char *const argv[], const char *const env_add[]) {
    svc_proc *slot = NULL;
    for (size_t i = 0; slot == NULL && i < SVC_MAX_PROCS; i++) {
        if (e->procs[i].pid == 0) {
            slot = &e->procs[i];
        }
    }
    assert_non_null(slot);
    char **envp = make_env(env_add);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* async-signal-safe calls only until execve */
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) {
            _exit(126);
        }
        int in = open("/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = err_path != NULL ? open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644) : out;
        if (in < 0 || out < 0 || err < 0 || dup2(in, STDIN_FILENO) < 0 ||
            dup2(out, STDOUT_FILENO) < 0 || dup2(err, STDERR_FILENO) < 0) {
            _exit(126);
        }
        execve(argv[0], (char *const *)(uintptr_t)argv, envp);
        _exit(127);
    }
    free(envp);
    slot->pid = pid;
    snprintf(slot->name, sizeof slot->name, "%s", name);
    return pid;
}

void svc_signal(svc_env *e, pid_t pid, int sig) {
    svc_proc *p = proc_of(e, pid);
    assert_non_null(p);
    assert_int_equal(kill(pid, sig), 0);
}

static int exit_code(int wstatus) {
    if (WIFEXITED(wstatus)) {
        return WEXITSTATUS(wstatus);
    }
    return WIFSIGNALED(wstatus) ? 128 + WTERMSIG(wstatus) : -1;
}

bool svc_reap(svc_env *e, pid_t pid, int timeout_ms, int *wstatus) {
    svc_proc *p = proc_of(e, pid);
    assert_non_null(p);
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        assert_true(r >= 0);
        if (r == pid) {
            p->pid = 0;
            if (e->coordinator == pid) {
                e->coordinator = 0;
            }
            if (wstatus != NULL) {
                *wstatus = st;
            }
            return true;
        }
        if (now_ms() >= deadline) {
            return false;
        }
        nap_ms(10);
    }
}

int svc_stop(svc_env *e, pid_t pid, int timeout_ms) {
    svc_proc *p = proc_of(e, pid);
    assert_non_null(p);
    char name[64];
    snprintf(name, sizeof name, "%s", p->name);
    kill(pid, SIGTERM);
    int st = 0;
    if (!svc_reap(e, pid, timeout_ms, &st)) {
        kill(pid, SIGKILL);
        svc_reap(e, pid, 10000, NULL);
        fail_msg("%s (pid %d) did not stop within %d ms of SIGTERM", name, (int)pid, timeout_ms);
    }
    return exit_code(st);
}

bool svc_running(svc_env *e, pid_t pid) {
    svc_proc *p = proc_of(e, pid);
    if (p == NULL) {
        return false;
    }
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
        p->pid = 0; /* it ended: reaped here */
        return false;
    }
    return r == 0;
}

static const char *coordinator_bin(void) {
    return CHESSLENS_BINARY_DIR "/cli/chesslens-coordinator";
}

static const char *worker_bin(void) {
    return CHESSLENS_BINARY_DIR "/worker/chesslens-worker";
}

/* The port of the last "listening on tcp://HOST:PORT" line of log, 0 when none. */
static int listening_port(const char *log, const char *host) {
    char *text = svc_read_text(log), needle[96];
    snprintf(needle, sizeof needle, "coordinator: listening on tcp://%s:", host);
    int port = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle)) {
        port = atoi(p + strlen(needle));
    }
    free(text);
    return port;
}

pid_t svc_start_coordinator(svc_env *e, const char *const extra[]) {
    return svc_start_coordinator_env(e, extra, NULL);
}

pid_t svc_start_coordinator_env(svc_env *e, const char *const extra[],
                                const char *const env_add[]) {
    return svc_start_coordinator_on(e, "127.0.0.1", extra, env_add);
}

static bool names_option(const char *const extra[], const char *option) {
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (strcmp(extra[i], option) == 0) {
            return true;
        }
    }
    return false;
}

pid_t svc_start_coordinator_on(svc_env *e, const char *host, const char *const extra[],
                               const char *const env_add[]) {
    assert_int_equal(e->coordinator, 0); /* one at a time */
    char bind[64], name[32];
    if (e->port > 0) {
        snprintf(bind, sizeof bind, "tcp://%s:%d", host, e->port);
    } else {
        snprintf(bind, sizeof bind, "tcp://%s:*", host);
    }
    const char *argv[40] = {coordinator_bin(), "--db", e->db, "--bind", bind};
    size_t n = 5;
    if (strcmp(host, "127.0.0.1") != 0) {
        argv[n++] = "--insecure-listen";
    }
    static const char *const sizes[][2] = {{"--pairs-per-task", SVC_PAIRS_PER_TASK},
                                           {"--games-per-task", SVC_GAMES_PER_TASK}};
    for (size_t i = 0; i < 2; i++) {
        if (!names_option(extra, sizes[i][0])) {
            argv[n++] = sizes[i][0];
            argv[n++] = sizes[i][1];
        }
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        assert_true(n + 1 < sizeof argv / sizeof argv[0]);
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    /* A restart on the port of a process that was just killed may find it still taken for a
     * moment: try again until the deadline. */
    int64_t deadline = now_ms() + 30000;
    for (;;) {
        e->n_coordinators++;
        snprintf(name, sizeof name, "coordinator-%d.log", e->n_coordinators);
        svc_path(e, name, e->coordinator_log, sizeof e->coordinator_log);
        pid_t pid = svc_spawn(e, "coordinator", e->coordinator_log, NULL, argv, env_add);
        for (;;) {
            int port = listening_port(e->coordinator_log, host);
            if (port > 0) {
                assert_true(e->port == 0 || port == e->port);
                e->port = port;
                snprintf(e->endpoint, sizeof e->endpoint, "tcp://127.0.0.1:%d", port);
                e->coordinator = pid;
                return pid;
            }
            int st = 0;
            if (svc_reap(e, pid, 0, &st)) {
                char *log = svc_read_text(e->coordinator_log);
                bool in_use = strstr(log, "Address already in use") != NULL;
                if (!in_use || now_ms() >= deadline) {
                    fail_msg("the coordinator exited (status %d) before listening:\n%s",
                             exit_code(st), log);
                }
                free(log);
                nap_ms(100);
                break; /* start it again */
            }
            if (now_ms() >= deadline) {
                fail_msg("the coordinator did not listen within 30 s (log %s)", e->coordinator_log);
            }
            nap_ms(POLL_NAP_MS);
        }
    }
}

void svc_worker_log(const svc_env *e, const char *id, char *out, size_t cap) {
    char name[128];
    snprintf(name, sizeof name, "worker-%s.log", id);
    svc_path(e, name, out, cap);
}

pid_t svc_start_worker(svc_env *e, const char *id, const char *faults) {
    return svc_start_worker_env(e, id, faults, NULL, NULL);
}

pid_t svc_start_worker_env(svc_env *e, const char *id, const char *faults,
                           const char *const extra[], const char *const env_add[]) {
    assert_true(e->endpoint[0] != '\0');
    char log[SVC_PATH];
    svc_worker_log(e, id, log, sizeof log);
    const char *argv[32] = {worker_bin(), "--connect", e->endpoint, "--backend", "cpu",
                            "--threads",  "1",         "--id",      id,          "--verbose"};
    size_t n = 10;
    if (faults != NULL) {
        argv[n++] = "--faults";
        argv[n++] = faults;
    }
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        assert_true(n + 1 < sizeof argv / sizeof argv[0]);
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    return svc_spawn(e, id, log, NULL, argv, env_add);
}

/* ---- the chesslens CLI ---- */

static const char **cli_argv(const char *const args[]) {
    size_t n = 0;
    while (args[n] != NULL) {
        n++;
    }
    const char **argv = calloc(n + 2, sizeof *argv);
    assert_non_null(argv);
    argv[0] = cli_bin();
    memcpy(argv + 1, args, n * sizeof *args);
    return argv;
}

/* "chesslens a b c" for messages. */
static void args_text(const char *const args[], char *out, size_t cap) {
    size_t k = (size_t)snprintf(out, cap, "chesslens");
    for (size_t i = 0; args[i] != NULL && k < cap; i++) {
        k += (size_t)snprintf(out + k, cap - k, " %s", args[i]);
    }
}

pid_t svc_cli_spawn(svc_env *e, const char *name, const char *const args[]) {
    char out[SVC_PATH], err[SVC_PATH], file[128];
    snprintf(file, sizeof file, "%s.out", name);
    svc_path(e, file, out, sizeof out);
    snprintf(file, sizeof file, "%s.err", name);
    svc_path(e, file, err, sizeof err);
    const char **argv = cli_argv(args);
    pid_t pid = svc_spawn(e, name, out, err, argv, NULL);
    free(argv);
    return pid;
}

void svc_cli(svc_env *e, int timeout_ms, svc_cli_result *r, const char *const args[]) {
    char name[32], out[SVC_PATH], err[SVC_PATH], what[1024];
    snprintf(name, sizeof name, "cli-%d", ++e->n_cli);
    args_text(args, what, sizeof what);
    pid_t pid = svc_cli_spawn(e, name, args);
    int st = 0;
    if (!svc_reap(e, pid, timeout_ms, &st)) {
        kill(pid, SIGKILL);
        svc_reap(e, pid, 10000, NULL);
        fail_msg("%s: still running after %d ms", what, timeout_ms);
    }
    char file[64];
    snprintf(file, sizeof file, "%s.out", name);
    svc_path(e, file, out, sizeof out);
    snprintf(file, sizeof file, "%s.err", name);
    svc_path(e, file, err, sizeof err);
    r->status = exit_code(st);
    r->out = svc_read_text(out);
    r->err = svc_read_text(err);
}

void svc_cli_free(svc_cli_result *r) {
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

void svc_submit(svc_env *e, const char *spec_path, const char *submission_id, char *name,
                size_t cap) {
    const char *args[] = {"submit",
                          spec_path,
                          "--coordinator",
                          e->endpoint,
                          submission_id != NULL ? "--submission-id" : NULL,
                          submission_id,
                          NULL};
    svc_cli_result r;
    svc_cli(e, 60000, &r, args);
    if (r.status != 0) {
        fail_msg("chesslens submit %s: exit %d\nstdout: %s\nstderr: %s", spec_path, r.status, r.out,
                 r.err);
    }
    /* the sweep's name alone on one line */
    size_t len = strlen(r.out);
    while (len > 0 && (r.out[len - 1] == '\n' || r.out[len - 1] == '\r')) {
        r.out[--len] = '\0';
    }
    if (len == 0 || strchr(r.out, '\n') != NULL || strchr(r.out, ' ') != NULL || len >= cap) {
        fail_msg("chesslens submit printed '%s', not a sweep name alone on one line", r.out);
    }
    memcpy(name, r.out, len + 1);
    svc_cli_free(&r);
}

int svc_wait_sweep(svc_env *e, const char *name, int timeout_s) {
    char secs[16];
    snprintf(secs, sizeof secs, "%d", timeout_s);
    const char *const args[] = {"wait", name, "--coordinator", e->endpoint, "--timeout",
                                secs,   NULL};
    svc_cli_result r;
    svc_cli(e, (timeout_s + 30) * 1000, &r, args);
    int status = r.status;
    if (status != 0 && status != 1) {
        fail_msg("chesslens wait %s: exit %d\nstdout: %s\nstderr: %s", name, status, r.out, r.err);
    }
    svc_cli_free(&r);
    return status;
}

/* ---- files ---- */

void svc_write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

char *svc_read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap);
    assert_non_null(buf);
    while (f != NULL && (got = fread(buf + n, 1, cap - 1 - n, f)) > 0) {
        n += got;
        if (n + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

bool svc_wait_text(const char *path, const char *needle, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        char *text = svc_read_text(path);
        bool found = strstr(text, needle) != NULL;
        free(text);
        if (found) {
            return true;
        }
        if (now_ms() >= deadline) {
            return false;
        }
        nap_ms(POLL_NAP_MS);
    }
}

size_t svc_count_text(const char *path, const char *needle) {
    char *text = svc_read_text(path);
    size_t n = 0;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + strlen(needle), needle)) {
        n++;
    }
    free(text);
    return n;
}

void svc_write_spec(const char *path, const char *sweep_name) {
    svc_write_spec_n(path, sweep_name, 12);
}

void svc_write_spec_n(const char *path, const char *sweep_name, int n_games) {
    char text[2048];
    snprintf(text, sizeof text,
             "{\"name\": \"%s\", \"model\": \"" CHESSLENS_SOURCE_DIR "/models/chess-tiny\","
             " \"dataset\": \"g\", \"games\": [0, %d],"
             " \"analyses\": ["
             "  {\"kind\": \"patch\", \"patch\": \"block_every\", \"cutoffs\": [20, 25],"
             "   \"corrupt\": {\"position\": \"last\", \"with\": \"each_legal_alternative\"},"
             "   \"metric\": {\"kind\": \"logit_diff\", \"tokens\": [\"clean_top\","
             " \"corrupt_top\"], \"normalize\": true}},"
             "  {\"kind\": \"legal_stats\", \"components\": [\"embeds\", \"heads\", \"mlps\"]},"
             "  {\"kind\": \"predictions\", \"top_k\": 3}]}\n",
             sweep_name, n_games);
    svc_write_text(path, text);
}

void svc_make_dataset(svc_env *e, const char *db) {
    svc_make_dataset_n(e, db, 12);
}

void svc_make_dataset_n(svc_env *e, const char *db, int n_games) {
    char n[16];
    snprintf(n, sizeof n, "%d", n_games);
    const char *args[] = {"games", "generate", "--n", n,           "--seed", "7", "--max-tokens",
                          "128",   "--db",     db,    "--dataset", "g",      NULL};
    svc_cli_result r;
    svc_cli(e, 60000, &r, args);
    if (r.status != 0) {
        fail_msg("games generate: exit %d\n%s%s", r.status, r.out, r.err);
    }
    svc_cli_free(&r);
}

void svc_reference_run(svc_env *e, const char *spec_path, const char *ref_db) {
    char cmd[4 * SVC_PATH];
    snprintf(cmd, sizeof cmd, "rm -f '%s' '%s-wal' '%s-shm'", ref_db, ref_db, ref_db);
    assert_int_equal(system(cmd), 0);
    svc_make_dataset(e, ref_db);
    const char *args[] = {"run",
                          spec_path,
                          "--db",
                          ref_db,
                          "--pairs-per-task",
                          SVC_PAIRS_PER_TASK,
                          "--games-per-task",
                          SVC_GAMES_PER_TASK,
                          "--threads",
                          "1",
                          "--quiet",
                          NULL};
    svc_cli_result r;
    svc_cli(e, 120000, &r, args);
    if (r.status != 0) {
        fail_msg("chesslens run %s: exit %d\n%s%s", spec_path, r.status, r.out, r.err);
    }
    svc_cli_free(&r);
}

int64_t svc_scenario(svc_env *e, const char *tag, char spec[SVC_PATH], char ref[SVC_PATH]) {
    char file[256];
    svc_env_init(e, tag);
    snprintf(file, sizeof file, "%s.json", tag);
    svc_path(e, file, spec, SVC_PATH);
    svc_path(e, "ref.db", ref, SVC_PATH);
    svc_write_spec(spec, tag);
    svc_reference_run(e, spec, ref);
    return svc_query_int(ref, "SELECT count(*) FROM task");
}

/* ---- the database ---- */

sqlite3 *svc_db_open(const char *db) {
    sqlite3 *h = NULL;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        fail_msg("open %s: %s", db, h != NULL ? sqlite3_errmsg(h) : "out of memory");
    }
    sqlite3_busy_timeout(h, 10000);
    return h;
}

static int64_t vquery(sqlite3 *h, const char *fmt, va_list ap) {
    char sql[4096];
    int n = vsnprintf(sql, sizeof sql, fmt, ap);
    assert_true(n > 0 && (size_t)n < sizeof sql);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(h));
    }
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        fail_msg("%s: %s", sql, rc == SQLITE_DONE ? "no row" : sqlite3_errmsg(h));
    }
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

int64_t svc_db_int(sqlite3 *h, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int64_t v = vquery(h, fmt, ap);
    va_end(ap);
    return v;
}

int64_t svc_query_int(const char *db, const char *fmt, ...) {
    sqlite3 *h = svc_db_open(db);
    va_list ap;
    va_start(ap, fmt);
    int64_t v = vquery(h, fmt, ap);
    va_end(ap);
    sqlite3_close(h);
    return v;
}

size_t svc_query_ids(const char *db, int64_t *out, size_t cap, const char *fmt, ...) {
    char sql[4096];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    assert_true(len > 0 && (size_t)len < sizeof sql);
    sqlite3 *h = svc_db_open(db);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(h));
    }
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        assert_true(n < cap);
        out[n++] = sqlite3_column_int64(st, 0);
    }
    if (rc != SQLITE_DONE) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(h));
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    return n;
}

int64_t svc_poll_int(const char *db, int64_t want, int timeout_ms, const char *what,
                     const char *fmt, ...) {
    int64_t deadline = now_ms() + timeout_ms, v = 0;
    for (;;) {
        sqlite3 *h = svc_db_open(db);
        va_list ap;
        va_start(ap, fmt);
        v = vquery(h, fmt, ap);
        va_end(ap);
        sqlite3_close(h);
        if (v >= want) {
            return v;
        }
        if (now_ms() >= deadline) {
            fail_msg("%s: still %lld (want >= %lld) after %d ms", what, (long long)v,
                     (long long)want, timeout_ms);
        }
        nap_ms(POLL_NAP_MS);
    }
}

/* The first column of the first row as text ("" for no row). */
static void query_text(sqlite3 *h, const char *sql, char *out, size_t cap) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(h));
    }
    out[0] = '\0';
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, cap, "%s", t != NULL ? (const char *)t : "NULL");
    } else if (rc != SQLITE_DONE) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(h));
    }
    sqlite3_finalize(st);
}

void svc_check_invariants(const char *db, int64_t planned) {
    sqlite3 *h = svc_db_open(db);
    char text[256];
    query_text(h, "PRAGMA integrity_check", text, sizeof text);
    if (strcmp(text, "ok") != 0) {
        fail_msg("%s: integrity_check: %s", db, text);
    }
    query_text(h, "PRAGMA foreign_key_check", text, sizeof text);
    if (text[0] != '\0') {
        fail_msg("%s: foreign_key_check: a row of table %s", db, text);
    }
    int64_t total = svc_db_int(h, "SELECT count(*) FROM task");
    int64_t done = svc_db_int(h, "SELECT count(*) FROM task WHERE state = 'done'");
    int64_t dead = svc_db_int(h, "SELECT count(*) FROM task WHERE state = 'dead'");
    int64_t pending = svc_db_int(h, "SELECT count(*) FROM task WHERE state = 'pending'");
    int64_t leased = svc_db_int(h, "SELECT count(*) FROM task WHERE state = 'leased'");
    if (planned >= 0 && total != planned) {
        fail_msg("%s: %lld tasks stored, %lld planned", db, (long long)total, (long long)planned);
    }
    if (leased != 0 || done + dead + pending != total) {
        fail_msg("%s: %lld tasks: %lld done + %lld dead + %lld pending, %lld leased", db,
                 (long long)total, (long long)done, (long long)dead, (long long)pending,
                 (long long)leased);
    }
    /* results only of done tasks, each stored once */
    static const char *const checks[][2] = {
        {"pairs of tasks that are not done", "SELECT count(*) FROM patch_pair p JOIN task t ON"
                                             " t.id = p.task_id WHERE t.state != 'done'"},
        {"legal partials of tasks that are not done",
         "SELECT count(*) FROM legal_partial p JOIN task t ON t.id = p.task_id"
         " WHERE t.state != 'done'"},
        {"neuron partials of tasks that are not done",
         "SELECT count(*) FROM neuron_partial p JOIN task t ON t.id = p.task_id"
         " WHERE t.state != 'done'"},
        {"predictions of tasks that are not done",
         "SELECT count(*) FROM prediction p JOIN task t ON t.id = p.task_id"
         " WHERE t.state != 'done'"},
        {"pairs stored twice in a task",
         "SELECT count(*) FROM (SELECT 1 FROM patch_pair GROUP BY task_id, seq"
         " HAVING count(*) > 1)"},
        {"pairs stored twice in a job",
         "SELECT count(*) FROM (SELECT 1 FROM patch_pair GROUP BY job_id, game, cutoff,"
         " corrupt_pos, corrupt_token, corrupt_game HAVING count(*) > 1)"},
        {"predictions stored twice in a job",
         "SELECT count(*) FROM (SELECT 1 FROM prediction GROUP BY job_id, game, pos, rank"
         " HAVING count(*) > 1)"},
        {"done patch tasks whose pairs differ from the planned count",
         "SELECT count(*) FROM task t WHERE t.state = 'done'"
         " AND json_extract(CAST(t.body AS TEXT), '$.kind') = 'patch'"
         " AND (SELECT count(*) FROM patch_pair p WHERE p.task_id = t.id)"
         "  != json_extract(CAST(t.body AS TEXT), '$.pairs')"},
        {"pairs without values", "SELECT count(*) FROM patch_pair p WHERE NOT EXISTS"
                                 " (SELECT 1 FROM patch_value v WHERE v.pair_id = p.id)"},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        int64_t n = svc_db_int(h, "%s", checks[i][1]);
        if (n != 0) {
            fail_msg("%s: %lld %s", db, (long long)n, checks[i][0]);
        }
    }
    sqlite3_close(h);
}

/* The rows of a result view in a fixed order; the last column is the value compared. */
typedef struct view_query {
    const char *name, *sql;
} view_query;

static const view_query views[4] = {
    {"patch_effects",
     "SELECT game, cutoff, corrupt_pos, clean_token, corrupt_token, metric, kind, component,"
     " layer, pos, head, value FROM patch_effects ORDER BY game, cutoff, corrupt_token, kind,"
     " component, layer, pos, head"},
    {"predictions",
     "SELECT game, pos, rank, token, legal, logprob FROM predictions ORDER BY game, pos, rank"},
    {"legal_stats", "SELECT component, pos, statistic, count, value FROM legal_stats"
                    " ORDER BY component, pos, statistic"},
    {"neuron_stats",
     "SELECT layer, neuron, phase, count, mean FROM neuron_stats ORDER BY layer, neuron, phase"},
};

static bool same_text(sqlite3_stmt *a, sqlite3_stmt *b, int c) {
    const unsigned char *ta = sqlite3_column_text(a, c), *tb = sqlite3_column_text(b, c);
    return (ta == NULL && tb == NULL) ||
           (ta != NULL && tb != NULL && strcmp((const char *)ta, (const char *)tb) == 0);
}

/* Every row of v in a and b: the same keys, values within tol, checksums within tol per row. */
static int64_t compare_view(sqlite3 *a, sqlite3 *b, const view_query *v, double tol) {
    sqlite3_stmt *sa = NULL, *sb = NULL;
    assert_int_equal(sqlite3_prepare_v2(a, v->sql, -1, &sa, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(b, v->sql, -1, &sb, NULL), SQLITE_OK);
    int n_cols = sqlite3_column_count(sa);
    int64_t rows = 0;
    double sum_a = 0.0, sum_b = 0.0;
    for (;;) {
        int ra = sqlite3_step(sa), rb = sqlite3_step(sb);
        if (ra != rb) {
            fail_msg("%s: row %lld exists in only one database", v->name, (long long)rows);
        }
        if (ra == SQLITE_DONE) {
            break;
        }
        assert_int_equal(ra, SQLITE_ROW);
        for (int c = 0; c + 1 < n_cols; c++) {
            if (!same_text(sa, sb, c)) {
                const unsigned char *ta = sqlite3_column_text(sa, c);
                const unsigned char *tb = sqlite3_column_text(sb, c);
                fail_msg("%s: row %lld column %d: %s vs %s", v->name, (long long)rows, c,
                         ta != NULL ? (const char *)ta : "NULL",
                         tb != NULL ? (const char *)tb : "NULL");
            }
        }
        int last = n_cols - 1;
        bool null_a = sqlite3_column_type(sa, last) == SQLITE_NULL;
        bool null_b = sqlite3_column_type(sb, last) == SQLITE_NULL;
        if (null_a != null_b) {
            fail_msg("%s: row %lld: value NULL in only one database", v->name, (long long)rows);
        }
        if (!null_a) {
            double x = sqlite3_column_double(sa, last), y = sqlite3_column_double(sb, last);
            if (!(fabs(x - y) <= tol)) {
                fail_msg("%s: row %lld: %.17g vs %.17g", v->name, (long long)rows, x, y);
            }
            sum_a += x;
            sum_b += y;
        }
        rows++;
    }
    sqlite3_finalize(sa);
    sqlite3_finalize(sb);
    if (!(fabs(sum_a - sum_b) <= tol * (double)(rows > 0 ? rows : 1))) {
        fail_msg("%s: checksum %.17g vs %.17g", v->name, sum_a, sum_b);
    }
    print_message("  %s: %lld rows, checksum %.10g in both\n", v->name, (long long)rows, sum_a);
    return rows;
}

/* Per task (analysis, key): state and result rows in every table, in both databases. */
static void compare_tasks(sqlite3 *a, sqlite3 *b) {
    const char *sql = "SELECT j.idx, t.key, t.state,"
                      " (SELECT count(*) FROM patch_pair p WHERE p.task_id = t.id),"
                      " (SELECT count(*) FROM patch_value v JOIN patch_pair p ON p.id = v.pair_id"
                      "   WHERE p.task_id = t.id),"
                      " (SELECT count(*) FROM legal_partial x WHERE x.task_id = t.id),"
                      " (SELECT count(*) FROM neuron_partial x WHERE x.task_id = t.id),"
                      " (SELECT count(*) FROM prediction x WHERE x.task_id = t.id)"
                      " FROM task t JOIN job j ON j.id = t.job_id ORDER BY j.idx, t.key";
    sqlite3_stmt *sa = NULL, *sb = NULL;
    assert_int_equal(sqlite3_prepare_v2(a, sql, -1, &sa, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(b, sql, -1, &sb, NULL), SQLITE_OK);
    static const char *const cols[] = {"analysis",        "key",          "state",
                                       "pairs",           "patch values", "legal partials",
                                       "neuron partials", "predictions"};
    int64_t n = 0;
    for (;;) {
        int ra = sqlite3_step(sa), rb = sqlite3_step(sb);
        if (ra != rb) {
            fail_msg("tasks: task %lld exists in only one database", (long long)n);
        }
        if (ra == SQLITE_DONE) {
            break;
        }
        assert_int_equal(ra, SQLITE_ROW);
        for (int c = 0; c < 8; c++) {
            if (!same_text(sa, sb, c)) {
                fail_msg("task %s of analysis %s: %s %s vs %s", sqlite3_column_text(sa, 1),
                         sqlite3_column_text(sa, 0), cols[c], sqlite3_column_text(sa, c),
                         sqlite3_column_text(sb, c));
            }
        }
        n++;
    }
    sqlite3_finalize(sa);
    sqlite3_finalize(sb);
    assert_true(n > 0);
}

void svc_compare_results(const char *db, const char *ref, double tol, int64_t rows[4]) {
    sqlite3 *a = svc_db_open(db), *b = svc_db_open(ref);
    compare_tasks(a, b);
    for (size_t i = 0; i < 4; i++) {
        int64_t n = compare_view(a, b, &views[i], tol);
        if (rows != NULL) {
            rows[i] = n;
        }
    }
    sqlite3_close(a);
    sqlite3_close(b);
}

/* ---- the coordinator's counters and memory ---- */

/* The counters written from at (the first of them); the store errors came last (a line
 * without them leaves them 0). */
static bool parse_stats(const char *at, svc_coord_stats *out) {
    memset(out, 0, sizeof *out);
    int got = at == NULL ? 0
                         : sscanf(at,
                                  "%" SCNu64 " dispatched, %" SCNu64 " stored, %" SCNu64
                                  " failed, %" SCNu64 " expired, %" SCNu64 " fenced, %" SCNu64
                                  " duplicates, %" SCNu64 " bad frames, %" SCNu64
                                  " sends dropped, %" SCNu64 " returned, %" SCNu64 " store errors",
                                  &out->dispatched, &out->stored, &out->failed, &out->expired,
                                  &out->fenced, &out->duplicates, &out->bad_frames, &out->dropped,
                                  &out->returned, &out->store_errors);
    return got >= 8;
}

bool svc_coord_stats_read(const char *log, svc_coord_stats *out) {
    char *text = svc_read_text(log);
    const char *needle = "coordinator: stopped: ", *last = NULL;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle)) {
        last = p;
    }
    bool ok = parse_stats(last != NULL ? last + strlen(needle) : NULL, out);
    free(text);
    return ok;
}

bool svc_coord_stats_read_last(const char *log, svc_coord_stats *out) {
    char *text = svc_read_text(log);
    const char *needle = " dispatched, ", *last = NULL;
    for (const char *p = strstr(text, needle); p != NULL; p = strstr(p + 1, needle)) {
        last = p;
    }
    while (last != NULL && last > text && last[-1] >= '0' && last[-1] <= '9') {
        last--; /* back to the first digit of the count */
    }
    bool ok = parse_stats(last, out);
    free(text);
    return ok;
}

const char *svc_faketime_lib(void) {
    static const char *const paths[] = {
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (access(paths[i], R_OK) == 0) {
            return paths[i];
        }
    }
    return NULL;
}

long svc_proc_kb(pid_t pid, const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    long kb = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

/* ---- a raw client ---- */

void svc_client_open(svc_client *c, const char *endpoint) {
    memset(c, 0, sizeof *c);
    c->ctx = zmq_ctx_new();
    assert_non_null(c->ctx);
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    assert_non_null(c->sock);
    int linger = 0, hwm = 1000000, sndtimeo = 10000;
    assert_int_equal(zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger), 0);
    assert_int_equal(zmq_setsockopt(c->sock, ZMQ_SNDHWM, &hwm, sizeof hwm), 0);
    assert_int_equal(zmq_setsockopt(c->sock, ZMQ_RCVHWM, &hwm, sizeof hwm), 0);
    assert_int_equal(zmq_setsockopt(c->sock, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo), 0);
    assert_int_equal(zmq_connect(c->sock, endpoint), 0);
}

void svc_client_close(svc_client *c) {
    free(c->pending);
    c->pending = NULL;
    if (c->sock != NULL) {
        zmq_close(c->sock);
        c->sock = NULL;
    }
    if (c->ctx != NULL) {
        zmq_ctx_term(c->ctx);
        c->ctx = NULL;
    }
}

void svc_client_send_frames(svc_client *c, const void *const *frames, const size_t *lens,
                            size_t n) {
    for (size_t i = 0; i < n; i++) {
        int flags = i + 1 < n ? ZMQ_SNDMORE : 0;
        if (zmq_send(c->sock, frames[i], lens[i], flags) != (int)lens[i]) {
            fail_msg("zmq_send: %s", zmq_strerror(zmq_errno()));
        }
    }
}

void svc_client_send(svc_client *c, const void *buf, size_t len) {
    svc_client_send_frames(c, &buf, &len, 1);
}

void svc_client_send_msg(svc_client *c, const proto_msg *m) {
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN];
    if (proto_encode(m, &buf, &len, err) != 0) {
        fail_msg("proto_encode: %s", err);
    }
    svc_client_send(c, buf, len);
    free(buf);
}

/* The next message of the bundle held in c->pending, if any is left. */
static bool client_pending(svc_client *c, proto_msg **out) {
    if (c->pending == NULL) {
        return false;
    }
    const void *msg = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN];
    int got = proto_frame_next(&c->pending_it, &msg, &len, err);
    if (got < 0) {
        fail_msg("the coordinator sent a malformed bundle: %s", err);
    }
    if (got > 0 && proto_decode(msg, len, out, err) != 0) {
        fail_msg("the coordinator sent a message of %zu bytes that does not decode: %s", len, err);
    }
    if (got == 0) {
        free(c->pending);
        c->pending = NULL;
    }
    return got > 0;
}

bool svc_client_recv(svc_client *c, int timeout_ms, proto_msg **out) {
    if (client_pending(c, out)) {
        return true;
    }
    zmq_pollitem_t item = {.socket = c->sock, .events = ZMQ_POLLIN};
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        long left = (long)(deadline - now_ms());
        int rc = zmq_poll(&item, 1, left > 0 ? left : 0);
        if (rc < 0 && zmq_errno() != EINTR) {
            fail_msg("zmq_poll: %s", zmq_strerror(zmq_errno()));
        }
        if (rc > 0) {
            break;
        }
        if (left <= 0) {
            return false;
        }
    }
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    assert_true(zmq_msg_recv(&msg, c->sock, 0) >= 0);
    if (zmq_msg_more(&msg)) {
        fail_msg("the coordinator sent a message of several frames");
    }
    /* kept until its last message is read: the iterator's views point into it */
    c->pending_len = zmq_msg_size(&msg);
    c->pending = malloc(c->pending_len > 0 ? c->pending_len : 1);
    assert_non_null(c->pending);
    memcpy(c->pending, zmq_msg_data(&msg), c->pending_len);
    zmq_msg_close(&msg);
    char err[COMMON_ERR_LEN];
    if (proto_frame_begin(&c->pending_it, c->pending, c->pending_len, err) != 0) {
        fail_msg("the coordinator sent a frame of %zu bytes that is not a message or a bundle: %s",
                 c->pending_len, err);
    }
    if (!client_pending(c, out)) {
        fail_msg("the coordinator sent an empty frame");
    }
    return true;
}

proto_reply *svc_client_call(svc_client *c, const proto_msg *m, int timeout_ms) {
    assert_true(m->req > 0);
    svc_client_send_msg(c, m);
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        long left = (long)(deadline - now_ms());
        proto_msg *a = NULL;
        if (left <= 0 || !svc_client_recv(c, (int)left, &a)) {
            fail_msg("%s request %llu: no reply within %d ms", proto_type_name(m->type),
                     (unsigned long long)m->req, timeout_ms);
        }
        if (a->req != m->req) {
            proto_msg_free(&a);
            continue;
        }
        if (a->type == PROTO_ERROR) {
            fail_msg("%s request %llu refused: %s", proto_type_name(m->type),
                     (unsigned long long)m->req, a->error);
        }
        assert_int_equal(a->type, PROTO_REPLY);
        proto_reply *r = NULL;
        char err[COMMON_ERR_LEN];
        if (proto_reply_decode(m->type, a->body, a->body_len, &r, err) != 0) {
            fail_msg("%s reply: %s", proto_type_name(m->type), err);
        }
        proto_msg_free(&a);
        return r;
    }
}
