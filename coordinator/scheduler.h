/*
 * coordinator/scheduler.h: the coordinator's scheduler, a state machine between the store and
 * the network (proto/PROTOCOL.md). Frames go in with the routing id of the peer that sent
 * them; frames to send come out. There is no socket, thread or clock inside: the caller passes
 * the monotonic time with every call, so every lease rule is testable as plain calls, and the
 * ZeroMQ adapter (coordinator/service.h) is a thin loop around it.
 *
 * Work happens in batches, each one store transaction:
 *
 *     coordinator_sched_begin(s)              BEGIN IMMEDIATE
 *     coordinator_sched_input(s, peer, frame) for frames that are waiting, until
 *                                             coordinator_sched_batch_full(s)
 *     coordinator_sched_tick(s, now)          expire leases, dispatch, forget silent workers
 *     coordinator_sched_commit(s, &out)       COMMIT; only now may out's frames be sent
 *
 * so a dispatch is recorded before its TASK leaves, an acknowledgement is sent only for a
 * result that is stored, and many messages share one commit. A frame that cannot be decoded, a
 * request that is refused and a report that is fenced are answered (ERROR, or ACK lease_lost)
 * and change nothing. A store error (the disk is full, the file is gone) is returned; the
 * batch is then rolled back, the scheduler must be destroyed, and a new one made from the same
 * database resumes (nothing acknowledged is lost, since nothing was sent).
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill err (COMMON_ERR_LEN
 * bytes, NULL allowed).
 */
#ifndef CHESSLENS_COORDINATOR_SCHEDULER_H
#define CHESSLENS_COORDINATOR_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/coordinator.h"

/* Longest routing id kept for a peer (ZeroMQ's are at most 255 bytes). */
#define COORDINATOR_PEER_MAX 256

typedef struct coordinator_sched_opts {
    uint32_t lease_ms;          /* lease without a heartbeat (0: 30,000) */
    uint32_t heartbeat_ms;      /* how often workers heartbeat (0: lease_ms / 6, >= 1) */
    uint32_t worker_timeout_ms; /* a worker silent this long is forgotten (0: 3 * lease_ms) */
    uint32_t max_attempts;      /* dispatches before a task is dead (0: 3) */
    uint32_t backoff_base_ms;   /* retry backoff, full jitter in [0, min(cap, base 2^(a-1))) */
    uint32_t backoff_cap_ms;    /* (0: 1,000 and 60,000) */
    /* most tasks one worker holds at once (0: 64, the most a chesslens-worker asks for) */
    uint32_t max_credits;
    /* On creation, leases of an earlier process are requeued at once (an embedded run, whose
     * workers died with it) instead of re-armed to now + lease_ms (a coordinator restart, whose
     * workers may still be computing and will deliver). */
    bool requeue_on_start;
    /* STATUS counts the task table; a count that took this long or longer is reused while it
     * is younger than 10 times its cost (0: 1,000,000 ns, so stores of up to a few thousand
     * tasks are always counted afresh) */
    uint32_t status_fresh_ns;
    /* Power loss (a crash of the process costs nothing: every commit is in the WAL before a
     * frame of its batch leaves). Off: only batches that answer SUBMIT, CANCEL or RETRY_DEAD
     * are fsynced, so a power loss never takes back what a client was told but may take back
     * the last results acknowledged to workers (those tasks are then leased and run again).
     * On: every batch is (SQLite synchronous FULL): nothing acknowledged is ever taken back,
     * at the cost of an fsync per batch. */
    bool sync_full;
    /* Messages a batch takes before coordinator_sched_batch_full says so (0: 8). A batch that
     * took every frame waiting made the workers' bundles meet in the coordinator: every worker
     * got its tasks at once, all came back at once, and the coordinator sat idle while they
     * ran; a batch of 8 messages answers one worker's bundle before the next worker's is read,
     * and still spreads its commit over enough work to cost little. */
    uint32_t batch_messages;
    coordinator_plan_opts plan; /* task sizes of submitted sweeps */
    uint64_t seed;              /* backoff jitter (0: from the clock) */
} coordinator_sched_opts;

typedef struct coordinator_sched coordinator_sched;

/* One frame to send: to the peer with this routing id. Owned by the scheduler until the next
 * coordinator_sched_begin. What a batch sends to one worker is one frame (a bundle when it is
 * several messages, proto.h), unless it is too large for one; a client gets a frame per
 * message. */
typedef struct coordinator_send {
    uint8_t peer[COORDINATOR_PEER_MAX];
    size_t peer_len;
    uint8_t *data;
    size_t len;
} coordinator_send;

/* Counters since creation, for logs, benchmarks and tests. */
typedef struct coordinator_sched_stats {
    /* frames received (a bundle is one); frames and bundled messages refused as malformed */
    uint64_t frames_in, frames_bad;
    uint64_t messages_in; /* messages received: each of a bundle's, or the frame's one */
    uint64_t dispatched, stored, duplicates, fenced, failed, expired;
    uint64_t returned; /* tasks handed back unrun by stopping workers */
    uint64_t batches;
} coordinator_sched_stats;

/* A scheduler over store (borrowed; used by this scheduler only while it lives). It re-arms or
 * requeues the leases it finds (opts.requeue_on_start) in its first batch's transaction.
 * opts NULL: the defaults. */
int coordinator_sched_new(coordinator_sched **out, coordinator_store *store,
                          const coordinator_sched_opts *opts, int64_t now_ns, char *err);
/* NULL is fine; *s is NULL afterwards. An open batch is rolled back. */
void coordinator_sched_destroy(coordinator_sched **s);

int coordinator_sched_begin(coordinator_sched *s, char *err);
/* One frame from peer[peer_len] (1..COORDINATOR_PEER_MAX bytes). Only a store error fails. */
int coordinator_sched_input(coordinator_sched *s, const void *peer, size_t peer_len,
                            const void *frame, size_t len, int64_t now_ns, char *err);
/* Whether the open batch has taken opts.batch_messages messages or more: the caller should
 * end it (tick and commit) rather than give it another frame. */
bool coordinator_sched_batch_full(const coordinator_sched *s);
/* Expires leases past their deadline (requeued with backoff, or dead), forgets workers silent
 * for worker_timeout_ms, and leases pending tasks to workers with credits. */
int coordinator_sched_tick(coordinator_sched *s, int64_t now_ns, char *err);
/* Commits the batch; *out[*n] are the frames to send now, in order. On an error the batch is
 * rolled back and nothing may be sent. */
int coordinator_sched_commit(coordinator_sched *s, const coordinator_send **out, size_t *n,
                             char *err);
/* When the next tick has work to do without any input (a lease deadline, a backoff ending, a
 * worker timing out): a monotonic time in ns, or INT64_MAX. */
int64_t coordinator_sched_next_wake(const coordinator_sched *s);
const coordinator_sched_stats *coordinator_sched_get_stats(const coordinator_sched *s);

#endif
