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
