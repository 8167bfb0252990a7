/*
 * svc_harness: what the tests of the sweep service share. They run the real executables
 * (chesslens-coordinator, chesslens-worker, chesslens) as child processes on a loopback port of
 * their own, wait for conditions by polling with deadlines, and check the database afterwards.
 *
 * - Processes: every child is recorded in the test's svc_env, and svc_env_teardown kills (SIGKILL)
 *   and reaps whatever is still running, so a failed assertion leaves nothing behind (cmocka runs
 *   the teardown after a failure). Children also get PR_SET_PDEATHSIG, so that even a test killed
 *   by ctest's timeout takes its processes with it.
 * - Ports: the coordinator binds tcp://127.0.0.1:* and the port it got is read back from its log
 *   ("coordinator: listening on ..."); a restart binds that port again.
 * - Checks: the invariants of a finished sweep (every planned task done, dead or pending and none
 *   leased; at most one result set per task; integrity_check ok) and the comparison of two
 *   databases' result views (the rows of each view, values within a tolerance, and the result
 *   rows of each task).
 * - A raw client: a DEALER socket that sends arbitrary frames and reads the answers, for the
 *   tests of hostile input and for requests the CLI does not expose.
 * Every helper fails the running test (cmocka) when something it needs does not hold.
 */
#ifndef CHESSLENS_TESTS_SERVICE_HARNESS_H
#define CHESSLENS_TESTS_SERVICE_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <sqlite3.h>

#include "proto/proto.h"
#include "proto/reply.h"

#define SVC_MAX_PROCS 24
#define SVC_PATH 512

/* Task sizes of every sweep of these tests, the same for the coordinator and `chesslens run`. */
#define SVC_PAIRS_PER_TASK "8"
#define SVC_GAMES_PER_TASK "4"

typedef struct svc_proc {
    pid_t pid; /* 0: reaped (or never started) */
    char name[64];
} svc_proc;

/* One scenario: its scratch directory, database, coordinator and children. */
typedef struct svc_env {
    char dir[SVC_PATH]; /* $CHESSLENS_TEST_TMPDIR/<scenario>, emptied by svc_env_init */
    char db[SVC_PATH];  /* dir/service.db */
    int port;           /* the coordinator's port, 0 before the first one started */
    char endpoint[64];  /* tcp://127.0.0.1:<port> */
    pid_t coordinator;  /* the coordinator started last (0: none) */
    char coordinator_log[SVC_PATH];
    int n_coordinators; /* started so far; numbers their logs */
    int n_cli;          /* CLI commands run so far; numbers their output files */
    svc_proc procs[SVC_MAX_PROCS];
} svc_env;

/* ---- the environment and its processes ---- */

/* cmocka fixtures: *state is a zeroed svc_env (the test calls svc_env_init), and the teardown
 * kills what the test left running, also after a failed assertion. */
int svc_setup(void **state);
int svc_teardown(void **state);

void svc_env_init(svc_env *e, const char *scenario);
/* SIGKILL and reap every child still running. */
void svc_env_teardown(svc_env *e);
/* dir/name into out. */
void svc_path(const svc_env *e, const char *name, char *out, size_t cap);

/* Starts argv (argv[0] the binary's path, NULL-terminated) with stdout to out_path and stderr to
 * err_path (NULL: the same file), stdin from /dev/null, and env_add ("K=V" strings,
 * NULL-terminated, may be NULL) added to the environment. */
pid_t svc_spawn(svc_env *e, const char *name, const char *out_path, const char *err_path,
                const char *const argv[], const char *const env_add[]);
/* Sends sig to a child of e. */
void svc_signal(svc_env *e, pid_t pid, int sig);
/* Waits up to timeout_ms for the child to end: true and *wstatus (may be NULL) when it did. */
bool svc_reap(svc_env *e, pid_t pid, int timeout_ms, int *wstatus);
/* SIGTERM, then waits up to timeout_ms (then SIGKILL and the test fails); the exit code, or
 * 128 + the signal that ended it. */
int svc_stop(svc_env *e, pid_t pid, int timeout_ms);
/* Whether the child is still running (not exited, not reaped). */
bool svc_running(svc_env *e, pid_t pid);

/* Starts chesslens-coordinator on e->db with extra options (NULL-terminated, may be NULL),
 * with the harness's task sizes (SVC_PAIRS_PER_TASK, SVC_GAMES_PER_TASK) for any extra does not
 * name: on a free port the first time, on e->port again afterwards. Returns once its log says
 * it listens (up to 30 s). */
pid_t svc_start_coordinator(svc_env *e, const char *const extra[]);
/* The same with env_add ("K=V", NULL-terminated) added to its environment. */
pid_t svc_start_coordinator_env(svc_env *e, const char *const extra[], const char *const env_add[]);
/* The same bound to host (an IPv4 address: one that is not 127.0.0.1, such as 0.0.0.0 in a
 * test's own network namespace, adds --insecure-listen); e->endpoint is 127.0.0.1 at its port. */
pid_t svc_start_coordinator_on(svc_env *e, const char *host, const char *const extra[],
                               const char *const env_add[]);
/* Starts chesslens-worker --id ID on the cpu backend with one thread (--verbose, log in
 * dir/worker-ID.log), with --faults FAULTS unless NULL. */
pid_t svc_start_worker(svc_env *e, const char *id, const char *faults);
/* The same with extra options after the others (NULL-terminated, may be NULL) and env_add
 * ("K=V", NULL-terminated, may be NULL) added to its environment. */
pid_t svc_start_worker_env(svc_env *e, const char *id, const char *faults,
                           const char *const extra[], const char *const env_add[]);
/* The log of worker id. */
void svc_worker_log(const svc_env *e, const char *id, char *out, size_t cap);

/* ---- the chesslens CLI ---- */

typedef struct svc_cli_result {
    int status; /* exit code, 128 + signal when killed */
    char *out;  /* stdout (free) */
    char *err;  /* stderr (free) */
} svc_cli_result;

/* Runs chesslens with args (NULL-terminated), waits up to timeout_ms (then kills it and fails
 * the test). */
void svc_cli(svc_env *e, int timeout_ms, svc_cli_result *r, const char *const args[]);
void svc_cli_free(svc_cli_result *r);
/* Starts chesslens with args in the background, stdout to dir/name.out, stderr to
 * dir/name.err. */
pid_t svc_cli_spawn(svc_env *e, const char *name, const char *const args[]);
/* `chesslens submit SPEC --coordinator EP [--submission-id ID]`: must exit 0; the sweep name it
 * prints is copied to name. */
void svc_submit(svc_env *e, const char *spec_path, const char *submission_id, char *name,
                size_t cap);
/* `chesslens wait NAME --timeout timeout_s` on e's coordinator: its exit code (0: every task
 * done, 1: finished with dead tasks); a wait still running timeout_s + 30 s later fails the
 * test. */
int svc_wait_sweep(svc_env *e, const char *name, int timeout_s);

/* ---- files ---- */

void svc_write_text(const char *path, const char *text);
/* The whole file (free), "" when it does not exist. */
char *svc_read_text(const char *path);
/* Polls path up to timeout_ms for needle; whether it appeared. */
bool svc_wait_text(const char *path, const char *needle, int timeout_ms);
/* How often needle occurs in the file (0 when it does not exist). */
size_t svc_count_text(const char *path, const char *needle);

/* The spec of every sweep here: patching (block_every at cut-offs 20 and 25, every legal
 * alternative of the last token) plus legal_stats and predictions, on games [0, 12) of
 * dataset "g": 22 tasks at these task sizes. */
void svc_write_spec(const char *path, const char *sweep_name);
/* The same on games [0, n_games) of dataset "g" (svc_make_dataset_n with as many games). */
void svc_write_spec_n(const char *path, const char *sweep_name, int n_games);
/* Dataset "g" of db: 12 games, seed 7, at most 128 tokens. */
void svc_make_dataset(svc_env *e, const char *db);
/* The same with n_games games. */
void svc_make_dataset_n(svc_env *e, const char *db, int n_games);
/* A fault-free reference: the dataset and `chesslens run SPEC` in ref_db (created afresh). */
void svc_reference_run(svc_env *e, const char *spec_path, const char *ref_db);
/* What every fault scenario starts with: svc_env_init(e, tag), the spec of sweep TAG written
 * to spec (TAG.json in the scratch directory) and its fault-free reference run into ref
 * (ref.db). Returns the tasks the reference planned. */
int64_t svc_scenario(svc_env *e, const char *tag, char spec[SVC_PATH], char ref[SVC_PATH]);

/* ---- the database ---- */

sqlite3 *svc_db_open(const char *db);
/* The single integer a query returns (printf-style SQL). */
int64_t svc_db_int(sqlite3 *h, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* svc_db_int on a fresh read-only connection. */
int64_t svc_query_int(const char *db, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* The integers of the first column of every row (at most cap); how many there were. */
size_t svc_query_ids(const char *db, int64_t *out, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Polls the query up to timeout_ms until it returns at least want; the last value (the test
 * fails on timeout, naming what). */
int64_t svc_poll_int(const char *db, int64_t want, int timeout_ms, const char *what,
                     const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* The invariants of a sweep that ended (nothing left running): planned tasks (< 0: not
 * checked) = done + dead + pending and none leased; result rows only for done tasks and no
 * pair stored twice; PRAGMA integrity_check and foreign_key_check clean. */
void svc_check_invariants(const char *db, int64_t planned);
/* db's results equal ref's: every task (by analysis and key) has the same state and the same
 * number of result rows in every table, and every result view holds the same rows with values
 * within tol. The rows of each view are returned in rows[4] (may be NULL) in the order
 * patch_effects, predictions, legal_stats, neuron_stats. */
void svc_compare_results(const char *db, const char *ref, double tol, int64_t rows[4]);

/* ---- the coordinator's counters and memory ---- */

typedef struct svc_coord_stats {
    uint64_t dispatched, stored, failed, expired, fenced, duplicates, bad_frames, dropped;
    uint64_t returned, store_errors;
} svc_coord_stats;

/* The counters of the coordinator's last "stopped:" log line (written when it ends after
 * SIGTERM); false when there is none. */
bool svc_coord_stats_read(const char *log, svc_coord_stats *out);
/* The same for the last stats line of any kind (the coordinator logs one every 10 s while it
 * runs, "stopped:" or "failed:" when it ends). */
bool svc_coord_stats_read_last(const char *log, svc_coord_stats *out);

/* ---- a coordinator's options of these tests ---- */

/* The path of libfaketime's multi-threaded library (Debian's libfaketime package), or NULL
 * when it is not installed. */
const char *svc_faketime_lib(void);
/* A field of /proc/PID/status in kB ("VmRSS", "VmHWM"); -1 when unreadable. */
long svc_proc_kb(pid_t pid, const char *field);

/* ---- a raw client ---- */

typedef struct svc_client {
    void *ctx, *sock;
    /* the rest of the last frame (a bundle, proto.h): raw messages, the next one first */
    uint8_t *pending;
    size_t pending_len;
    proto_frame_iter pending_it;
} svc_client;

void svc_client_open(svc_client *c, const char *endpoint);
void svc_client_close(svc_client *c);
/* Sends one message of n frames. */
void svc_client_send_frames(svc_client *c, const void *const *frames, const size_t *lens, size_t n);
void svc_client_send(svc_client *c, const void *buf, size_t len);
/* Encodes m and sends it. */
void svc_client_send_msg(svc_client *c, const proto_msg *m);
/* The next message within timeout_ms, the messages of a bundle one by one: true and *out
 * (proto_msg_free); false on timeout. A message that does not decode, a malformed bundle or a
 * message of several frames fails the test. */
bool svc_client_recv(svc_client *c, int timeout_ms, proto_msg **out);
/* Sends request m (m->req set) and waits for its REPLY, skipping answers with other req ids;
 * the decoded body (proto_reply_free). An ERROR for it or a timeout fails the test. */
proto_reply *svc_client_call(svc_client *c, const proto_msg *m, int timeout_ms);

#endif
