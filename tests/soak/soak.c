/*
 * soak: network namespaces, the coordinator and workers started the soak tests' way, the games
 * and the background submits of their sweeps, and the checks of ack logs against the database
 * (soak.h).
 *
 * ip(8) does the namespace work, through system() with command lines built here from names
 * this file makes (no outside text reaches a shell). The test process itself changes network
 * namespace with unshare(2) before it starts any thread, so that every child it starts
 * afterwards (coordinator, CLI, workers) inherits the private loopback.
 */
#define _GNU_SOURCE /* unshare, CLONE_NEWNET */
#include "soak.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define NS_PREFIX "chesslens-soak-"
#define NETNS_DIR "/run/netns"

int64_t soak_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double soak_uniform(void) {
    return (double)rand() / ((double)RAND_MAX + 1.0);
}

int64_t soak_between(int64_t lo, int64_t hi) {
    return lo + (int64_t)(soak_uniform() * (double)(hi - lo));
}

int soak_fixture_setup(void **state, size_t size) {
    soak_fixture *f = calloc(1, size);
    if (f == NULL) {
        return -1;
    }
    f->net = *state;
    *state = f;
    return 0;
}

int soak_fixture_teardown(void **state) {
    soak_fixture *f = *state;
    svc_env_teardown(&f->e);
    free(f);
    return 0;
}

void soak_nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

long soak_env_long(const char *name, long def) {
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        return def;
    }
    char *end = NULL;
    long x = strtol(v, &end, 10);
    return end != NULL && *end == '\0' && x > 0 ? x : def;
}

/* ---- network namespaces ---- */

/* Runs "IP ARGS" quietly; its exit status (-1 when it could not run). */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
ip_run(const soak_net *n, const char *fmt, ...) {
    char args[512], cmd[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "%s %s >/dev/null 2>&1", n->ip, args);
    int st = system(cmd);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool find_ip(soak_net *n) {
    static const char *const paths[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (access(paths[i], X_OK) == 0) {
            snprintf(n->ip, sizeof n->ip, "%s", paths[i]);
            return true;
        }
    }
    return false;
}

/* Deletes the namespaces of earlier runs whose process is gone (a test killed by ctest's
 * timeout has no teardown). */
static void delete_stale(const soak_net *n) {
    DIR *d = opendir(NETNS_DIR);
    if (d == NULL) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int pid = 0, i = 0;
        char tail = 0;
        if (sscanf(de->d_name, NS_PREFIX "%d-%d%c", &pid, &i, &tail) == 2 && pid > 0 &&
            kill(pid, 0) != 0 && errno == ESRCH) {
            ip_run(n, "netns del %s", de->d_name);
        }
    }
    closedir(d);
}

bool soak_net_init(soak_net *n, int n_ns, char *why, size_t cap) {
    memset(n, 0, sizeof *n);
    assert_true(n_ns >= 0 && n_ns <= SOAK_MAX_NS);
    if (geteuid() != 0) {
        snprintf(why, cap, "not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN");
        return false;
    }
    if (!find_ip(n)) {
        snprintf(why, cap, "no ip(8) (iproute2) found");
        return false;
    }
    delete_stale(n);
    if (unshare(CLONE_NEWNET) != 0) {
        snprintf(why, cap, "unshare(CLONE_NEWNET): %s (a container without CAP_SYS_ADMIN?)",
                 strerror(errno));
        return false;
    }
    n->isolated = true;
    if (ip_run(n, "link set lo up") != 0) {
        snprintf(why, cap, "ip link set lo up failed in the test's own namespace");
        return false;
    }
    /* The third octet only keeps two concurrent runs' addresses apart for a reader of their
     * logs: each run's addresses live in namespaces of its own, so they cannot collide. */
    int pid = (int)getpid(), net = pid % 250;
    for (int i = 0; i < n_ns; i++) {
        char local[16];
        snprintf(n->ns[i], sizeof n->ns[i], NS_PREFIX "%d-%d", pid, i);
        snprintf(local, sizeof local, "c%da%d", pid, i);
        snprintf(n->link[i], sizeof n->link[i], "c%db%d", pid, i);
        snprintf(n->addr[i], sizeof n->addr[i], "10.213.%d.%d", net, 4 * i + 1);
        if (ip_run(n, "netns add %s", n->ns[i]) != 0) {
            snprintf(why, cap, "ip netns add %s failed", n->ns[i]);
            soak_net_teardown(n);
            return false;
        }
        n->n = i + 1;
        if (ip_run(n, "link add %s type veth peer name %s netns %s", local, n->link[i], n->ns[i]) !=
                0 ||
            ip_run(n, "addr add 10.213.%d.%d/30 dev %s", net, 4 * i + 1, local) != 0 ||
            ip_run(n, "link set %s up", local) != 0 ||
            ip_run(n, "-n %s addr add 10.213.%d.%d/30 dev %s", n->ns[i], net, 4 * i + 2,
                   n->link[i]) != 0 ||
            ip_run(n, "-n %s link set %s up", n->ns[i], n->link[i]) != 0 ||
            ip_run(n, "-n %s link set lo up", n->ns[i]) != 0) {
            snprintf(why, cap, "the veth pair of namespace %s could not be set up", n->ns[i]);
            soak_net_teardown(n);
            return false;
        }
    }
    return true;
}

void soak_net_teardown(soak_net *n) {
    for (int i = 0; i < n->n; i++) {
        if (ip_run(n, "netns del %s", n->ns[i]) != 0) {
            fprintf(stderr, "soak: ip netns del %s failed\n", n->ns[i]);
        }
    }
    n->n = 0;
}

void soak_net_partition(soak_net *n, int i, bool cut) {
    assert_true(i >= 0 && i < n->n);
    int rc = ip_run(n, "-n %s link set %s %s", n->ns[i], n->link[i], cut ? "down" : "up");
    if (rc != 0) {
        fail_msg("ip -n %s link set %s %s: exit %d", n->ns[i], n->link[i], cut ? "down" : "up", rc);
    }
}

/* ---- processes ---- */

pid_t soak_start_worker(svc_env *e, const soak_net *net, int ns, const char *id, int gen,
                        const char *faults, const char *ack_log) {
    assert_true(e->port > 0);
    char log[SVC_PATH], file[128], endpoint[64];
    snprintf(file, sizeof file, "worker-%s-%d.log", id, gen);
    svc_path(e, file, log, sizeof log);
    if (ns >= 0) {
        assert_true(net != NULL && ns < net->n);
        snprintf(endpoint, sizeof endpoint, "tcp://%s:%d", net->addr[ns], e->port);
    } else {
        snprintf(endpoint, sizeof endpoint, "%s", e->endpoint);
    }
    const char *argv[24];
    size_t n = 0;
    if (ns >= 0) {
        argv[n++] = net->ip;
        argv[n++] = "netns";
        argv[n++] = "exec"; /* ip execs the command itself: the pid is the worker's */
        argv[n++] = net->ns[ns];
    }
    const char *const base[] = {CHESSLENS_BINARY_DIR "/worker/chesslens-worker",
                                "--connect",
                                endpoint,
                                "--backend",
                                "cpu",
                                "--threads",
                                "1",
                                "--id",
                                id,
                                "--verbose"};
    for (size_t i = 0; i < sizeof base / sizeof base[0]; i++) {
        argv[n++] = base[i];
    }
    if (faults != NULL) {
        argv[n++] = "--faults";
        argv[n++] = faults;
    }
    if (ack_log != NULL) {
        argv[n++] = "--ack-log";
        argv[n++] = ack_log;
    }
    argv[n] = NULL;
    return svc_spawn(e, id, log, NULL, argv, NULL);
}

/* ---- games and sweeps submitted in the background ---- */

void soak_generate_games(svc_env *e, int n_games, int seed, int timeout_ms) {
    char n[16], sd[16];
    snprintf(n, sizeof n, "%d", n_games);
    snprintf(sd, sizeof sd, "%d", seed);
    const char *const args[] = {
        "games", "generate", "--n", n,           "--seed", sd,  "--max-tokens",
        "64",    "--db",     e->db, "--dataset", "g",      NULL};
    svc_cli_result r;
    svc_cli(e, timeout_ms, &r, args);
    assert_int_equal(r.status, 0);
    svc_cli_free(&r);
}

void soak_submit_start(svc_env *e, soak_submit *s, int n, const char *id, const char *spec,
                       int timeout_s) {
    memset(s, 0, sizeof *s);
    s->n = n;
    snprintf(s->id, sizeof s->id, "%s", id);
    char path[SVC_PATH], file[64], timeout[16];
    snprintf(file, sizeof file, "sweep-%d.json", n);
    svc_path(e, file, path, sizeof path);
    svc_write_text(path, spec);
    snprintf(timeout, sizeof timeout, "%d", timeout_s);
    const char *const args[] = {
        "submit", path,        "--coordinator", e->endpoint, "--submission-id",
        s->id,    "--timeout", timeout,         NULL};
    snprintf(file, sizeof file, "submit-%d", n);
    s->pid = svc_cli_spawn(e, file, args);
}

/* Records what s's CLI said once it ended with wait status st. An acknowledged submit prints
 * the sweep's name first on stdout and "sweep 'NAME': N tasks" on stderr (cli/cmd_service.c). */
static void read_reply(const svc_env *e, soak_submit *s, int st) {
    char path[SVC_PATH], file[64];
    snprintf(file, sizeof file, "submit-%d.out", s->n);
    svc_path(e, file, path, sizeof path);
    char *out = svc_read_text(path);
    snprintf(file, sizeof file, "submit-%d.err", s->n);
    svc_path(e, file, path, sizeof path);
    char *err = svc_read_text(path);
    long long tasks = 0;
    const char *p = strstr(err, "': ");
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && sscanf(out, "%63s", s->name) == 1 && p != NULL &&
        sscanf(p, "': %lld tasks", &tasks) == 1) {
        s->acked = true;
        s->tasks = tasks;
    } else {
        print_message("  submit %s not acknowledged (status %d): %s\n", s->id, st, err);
    }
    free(out);
    free(err);
}

bool soak_submit_reap(svc_env *e, soak_submit *s, int timeout_ms) {
    int st = 0;
    if (s->pid == 0) {
        return true;
    }
    if (!svc_reap(e, s->pid, timeout_ms, &st)) {
        return false;
    }
    s->pid = 0;
    read_reply(e, s, st);
    return true;
}

bool soak_submit_stored(sqlite3 *h, const soak_submit *s) {
    assert_true(s->acked);
    int64_t n = svc_db_int(h,
                           "SELECT count(*) FROM task t JOIN job j ON j.id = t.job_id"
                           " JOIN sweep w ON w.id = j.sweep_id WHERE w.submission_id = '%s'"
                           " AND w.name = '%s'",
                           s->id, s->name);
    if (n != s->tasks) {
        print_message("  LOST: submission %s (sweep %s): %lld tasks stored, %lld acked\n", s->id,
                      s->name, (long long)n, (long long)s->tasks);
        return false;
    }
    return true;
}

/* ---- checks ---- */

/* Checks one log; stored[task] counts the stored ACKs of each task (n_tasks entries). */
static void check_log(const char *path, long *offset, sqlite3 *h, sqlite3_stmt *q, int64_t *stored,
                      int64_t n_tasks, soak_acks *a) {
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    if (offset != NULL && fseek(f, *offset, SEEK_SET) != 0) {
        fail_msg("%s: fseek: %s", path, strerror(errno));
    }
    char line[256], status[32], kind[32];
    long long task = 0;
    unsigned long long epoch = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strchr(line, '\n') == NULL) {
            break; /* a line being written: read next time */
        }
        if (offset != NULL) {
            *offset = ftell(f);
        }
        if (sscanf(line, "ACK %lld %llu %31s %31s", &task, &epoch, status, kind) != 4) {
            fail_msg("%s: a line that is not an ACK: %s", path, line);
        }
        a->lines++;
        if (strcmp(kind, "result") != 0 || strcmp(status, "lease_lost") == 0) {
            continue;
        }
        a->results++;
        if (strcmp(status, "stored") == 0 && task > 0 && task < n_tasks && ++stored[task] == 2) {
            a->stored_twice++;
        }
        sqlite3_reset(q);
        sqlite3_bind_int64(q, 1, task);
        int rc = sqlite3_step(q);
        if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
            fail_msg("ack check: %s", sqlite3_errmsg(h));
        }
        if (rc != SQLITE_ROW || sqlite3_column_int(q, 0) != 1) {
            if (a->lost < 10) {
                print_message("  LOST: %s: task %lld epoch %llu acknowledged %s, but %s\n", path,
                              task, epoch, status,
                              rc == SQLITE_DONE ? "no such task" : "not done with results");
            }
            a->lost++;
        }
    }
    fclose(f);
}

void soak_check_ack_logs(const char *const paths[], size_t n, const char *db, long *offsets,
                         soak_acks *a) {
    sqlite3 *h = svc_db_open(db);
    int64_t n_tasks = svc_db_int(h, "SELECT coalesce(max(id), 0) + 1 FROM task");
    int64_t *stored = calloc((size_t)n_tasks, sizeof *stored);
    assert_non_null(stored);
    sqlite3_stmt *q = NULL;
    const char *sql = "SELECT t.state = 'done' AND ("
                      " EXISTS (SELECT 1 FROM patch_pair x WHERE x.task_id = t.id) OR"
                      " EXISTS (SELECT 1 FROM prediction x WHERE x.task_id = t.id) OR"
                      " EXISTS (SELECT 1 FROM legal_partial x WHERE x.task_id = t.id) OR"
                      " EXISTS (SELECT 1 FROM neuron_partial x WHERE x.task_id = t.id))"
                      " FROM task t WHERE t.id = ?";
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &q, NULL), SQLITE_OK);
    for (size_t i = 0; i < n; i++) {
        check_log(paths[i], offsets != NULL ? &offsets[i] : NULL, h, q, stored, n_tasks, a);
    }
    sqlite3_finalize(q);
    sqlite3_close(h);
    free(stored);
}

int64_t soak_duplicates(const char *db) {
    sqlite3 *h = svc_db_open(db);
    int64_t n = svc_db_int(h, "SELECT count(*) FROM (SELECT 1 FROM patch_pair"
                              " GROUP BY task_id, seq HAVING count(*) > 1)");
    n += svc_db_int(h, "SELECT count(*) FROM (SELECT 1 FROM patch_pair GROUP BY job_id, game,"
                       " cutoff, corrupt_pos, corrupt_token, corrupt_game HAVING count(*) > 1)");
    n += svc_db_int(h, "SELECT count(*) FROM (SELECT 1 FROM prediction GROUP BY job_id, game,"
                       " pos, rank HAVING count(*) > 1)");
    /* a result of a task that is not done was stored outside its task's transaction */
    n += svc_db_int(h, "SELECT count(*) FROM prediction x JOIN task t ON t.id = x.task_id"
                       " WHERE t.state != 'done'");
    n += svc_db_int(h, "SELECT count(*) FROM legal_partial x JOIN task t ON t.id = x.task_id"
                       " WHERE t.state != 'done'");
    sqlite3_close(h);
    return n;
}

int64_t soak_rows(const char *db) {
    sqlite3 *h = svc_db_open(db);
    int64_t n = svc_db_int(h, "SELECT (SELECT count(*) FROM patch_pair) +"
                              " (SELECT count(*) FROM prediction) +"
                              " (SELECT count(*) FROM legal_partial) +"
                              " (SELECT count(*) FROM neuron_partial)");
    sqlite3_close(h);
    return n;
}

int64_t soak_wait_settled(const char *db, int timeout_ms) {
    int64_t start = soak_now_ms(), last = -1, changed = start;
    for (;;) {
        int64_t open =
            svc_query_int(db, "SELECT count(*) FROM task WHERE state IN ('pending', 'leased')");
        int64_t now = soak_now_ms();
        if (open == 0) {
            return now - start;
        }
        if (open != last) {
            last = open;
            changed = now;
        }
        if (now - start >= timeout_ms || now - changed >= 300000) {
            return -1;
        }
        soak_nap_ms(100);
    }
}
