/*
 * soak: what the partition test, the coordinator kill loop and the chaos soak share, on top of
 * tests/service/svc_harness.h.
 *
 * - Network namespaces (RELIABILITY.md §6, row 7): the test moves itself into a network
 *   namespace of its own (unshare(CLONE_NEWNET)), so that the coordinator, the CLI and the
 *   workers it starts normally share a loopback nobody else uses, and adds named namespaces
 *   ("chesslens-soak-PID-I"), each joined to its own by a veth pair with addresses of
 *   10.213.0.0/16 (/30 per pair). A worker started in one of them reaches the coordinator only
 *   through its veth, so setting that link down partitions exactly that worker, and setting it
 *   up heals it. Nothing of the host's network is touched: no address, route or firewall rule.
 *   This needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); without it the tests skip (77).
 * - The coordinator on a chosen address, the workers with extra options (--ack-log, --prefetch)
 *   and in a namespace, and the check of the workers' ack logs against the database.
 * - The games the sweeps run on, and `chesslens submit` run in the background (a sweep submitted
 *   while the coordinator is being killed), its reply read back and checked against the database.
 */
#ifndef CHESSLENS_TESTS_SOAK_H
#define CHESSLENS_TESTS_SOAK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tests/service/svc_harness.h"

#define SOAK_MAX_NS 4

typedef struct soak_net {
    int n;                      /* named namespaces made (0: none) */
    bool isolated;              /* this process runs in a network namespace of its own */
    char ns[SOAK_MAX_NS][48];   /* "chesslens-soak-PID-I" */
    char link[SOAK_MAX_NS][16]; /* the veth end inside ns[i] (IFNAMSIZ: 15 characters) */
    char addr[SOAK_MAX_NS][24]; /* the coordinator's address as seen from ns[i] */
    char ip[64];                /* the ip(8) binary */
} soak_net;

/* Moves this process into a network namespace of its own (loopback up) and makes n_ns named
 * namespaces joined to it by veth pairs (n_ns <= SOAK_MAX_NS). Namespaces left by an earlier
 * run that was killed (their PID gone) are deleted first. On failure (not root, no
 * CAP_SYS_ADMIN, no ip(8)) returns false with the reason in why; what was made is undone. */
bool soak_net_init(soak_net *n, int n_ns, char *why, size_t cap);
/* Deletes the named namespaces (their veth pairs go with them); the process keeps its own,
 * which ends with it. Safe to call twice and on a zeroed soak_net. */
void soak_net_teardown(soak_net *n);
/* Sets namespace i's link down (cut) or up (heal). */
void soak_net_partition(soak_net *n, int i, bool cut);

/* Starts chesslens-worker --id ID (cpu, one thread, --verbose, its log dir/worker-ID-GEN.log:
 * GEN numbers the restarts of one worker) connected to e's coordinator, or, with ns >= 0,
 * inside net's namespace ns connected to the coordinator's address there. faults (--faults)
 * and ack_log (--ack-log, appended to across restarts) may be NULL. */
pid_t soak_start_worker(svc_env *e, const soak_net *net, int ns, const char *id, int gen,
                        const char *faults, const char *ack_log);

/* The result of checking ack logs against a database. */
typedef struct soak_acks {
    int64_t lines;        /* ACK lines read */
    int64_t results;      /* ACKs stored or duplicate of a RESULT: what the database must hold */
    int64_t lost;         /* of those, tasks not done or without a result row */
    int64_t stored_twice; /* tasks whose RESULT was acknowledged stored more than once */
} soak_acks;

/* Reads the ack logs at paths[0..n) (a missing file is an empty log) and checks every
 * acknowledged result (stored or duplicate) against db: its task is done and has result rows,
 * and no task was acknowledged stored twice among the lines read. Adds to *a; prints the first
 * few lost ones. offsets (NULL: every line): per log, where the last call stopped, advanced
 * past the complete lines read, so that a test can check what was acknowledged before each
 * kill of the coordinator against the database the kill left, before a restart could mend it
 * (a lost commit whose task later runs again would pass a check made only at the end). */
void soak_check_ack_logs(const char *const paths[], size_t n, const char *db, long *offsets,
                         soak_acks *a);

/* Result sets stored more than once: pairs, predictions, legal or neuron partials of a task or
 * job stored twice (0 is what every test demands). */
int64_t soak_duplicates(const char *db);
/* Result rows in the database: pairs + predictions + legal partials + neuron partials. */
int64_t soak_rows(const char *db);

/* ---- games and sweeps submitted in the background ---- */

/* Dataset "g" of e->db, the soak tests' way: `chesslens games generate --n n_games --seed seed
 * --max-tokens 64`, given up to timeout_ms; the test fails unless it exits 0. */
void soak_generate_games(svc_env *e, int n_games, int seed, int timeout_ms);

/* One `chesslens submit` run in the background, and what its reply acknowledged. A zeroed one
 * has not started. */
typedef struct soak_submit {
    char id[32];   /* its --submission-id */
    int n;         /* numbers its files in e's directory: sweep-N.json, submit-N.out, .err */
    pid_t pid;     /* its CLI while it may still run; 0 before it starts and once reaped */
    bool acked;    /* it exited 0 and its reply named the sweep and counted its tasks */
    char name[64]; /* acked: the sweep its reply named (stdout) */
    int64_t tasks; /* acked: the tasks its reply counted (stderr) */
} soak_submit;

/* Writes spec (a sweep's JSON text, borrowed) to sweep-N.json in e's directory and starts
 * `chesslens submit` on it against e's coordinator with --submission-id id and --timeout
 * timeout_s (the CLI retries through restarts of the coordinator until it is answered or that
 * long has passed). *s is overwritten: s->id is a copy of id, s->n is n and s->pid the CLI,
 * which e owns like every child (its teardown kills it); soak_submit_reap waits for it. */
void soak_submit_start(svc_env *e, soak_submit *s, int n, const char *id, const char *spec,
                       int timeout_s);
/* Waits up to timeout_ms (0: not at all) for s's CLI to end. Once it has, reads its reply from
 * submit-N.out and .err: s->acked, s->name and s->tasks are set when it was acknowledged, a line
 * saying why is printed when not, and s->pid becomes 0. Returns false while the CLI still runs,
 * true once it has ended (now or before) or when s never started. */
bool soak_submit_reap(svc_env *e, soak_submit *s, int timeout_ms);
/* Whether acknowledged submission s (s->acked) is in the database h (borrowed) as the sweep its
 * reply named, with the tasks it counted; prints a LOST line when not. */
bool soak_submit_stored(sqlite3 *h, const soak_submit *s);

/* Milliseconds on CLOCK_MONOTONIC. */
int64_t soak_now_ms(void);
void soak_nap_ms(long ms);
/* Polls up to timeout_ms until no task is pending or leased: the milliseconds it took, or -1
 * on timeout or when their number has not changed for 5 minutes (stuck). */
int64_t soak_wait_settled(const char *db, int timeout_ms);
/* An environment variable as a positive integer, else def. */
long soak_env_long(const char *name, long def);

/* A uniform draw in [0, 1) from rand(), and an integer in [lo, hi). */
double soak_uniform(void);
int64_t soak_between(int64_t lo, int64_t hi);

/* What every soak test's fixture begins with (its first member): the service's files and
 * processes, and the namespaces its workers may run in (NULL: the host's loopback). */
typedef struct soak_fixture {
    svc_env e;
    soak_net *net;
} soak_fixture;

/* cmocka setup and teardown around a fixture of `size` bytes that begins with a soak_fixture:
 * setup takes *state (the prestate: the soak_net, or NULL) into it, zeroed otherwise; teardown
 * stops what its svc_env started and frees it. */
int soak_fixture_setup(void **state, size_t size);
int soak_fixture_teardown(void **state);

#endif
