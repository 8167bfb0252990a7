/*
 * worker/service.h: a chesslens worker on the network (proto/PROTOCOL.md). It connects a
 * ZeroMQ DEALER socket to a coordinator, says hello, takes tasks, runs them on its compute
 * thread and sends their results, while its I/O thread keeps the connection: heartbeats,
 * acknowledgements, reconnects.
 *
 * The rules it keeps (PROTOCOL.md, "Leases" and "Credits"):
 * - it asks for tasks with READY credits: one task runs while at most slots - 1 more wait. A task
 *   holds its slot from its TASK until its RESULT or FAIL is acknowledged (or it is dropped).
 *   The ACK of a RESULT or FAIL (stored, duplicate or lease_lost) returns that slot's credit
 *   to the coordinator by itself, so no READY is sent for it, unless the report left before
 *   any READY since the last HELLO. Every other freed slot is asked for with READY: after a
 *   DROP, after an ACK lease_lost of a heartbeat that forgets a waiting task, after a running
 *   task's output is discarded, for the credit of a TASK of a task already held; and after
 *   every WELCOME all free slots are, before the outputs kept are sent (a HELLO clears the
 *   credits the coordinator held). A task leased again while its report awaits the ACK holds
 *   two credits until that ACK, then its output goes again for the newer epoch;
 * - every heartbeat_ms the I/O thread sends a HEARTBEAT for each task it holds that is waiting
 *   or running, but only while the compute thread reports progress: when the running task
 *   reported none for lease_ms, nothing is sent at all, so a hung computation loses its leases
 *   even though the socket stays up. With no such task it sends an idle HEARTBEAT (task 0);
 * - a result or failure is kept until the coordinator acknowledges it (stored, duplicate or
 *   lease_lost) and sent again after a reconnect; an ACK that is not stored for a heartbeat
 *   forgets a waiting task and discards a running task's result when it ends;
 * - silence: a message that wants an answer (HEARTBEAT, RESULT, FAIL) unanswered for 3
 *   heartbeat intervals, or no WELCOME 3 intervals after HELLO: the socket is closed and
 *   opened again after a backoff of 1 s doubling to 32 s (reset by a WELCOME), then HELLO.
 *   ZeroMQ's own reconnection is off, so a coordinator that restarts always meets a fresh
 *   HELLO; an ERROR from the coordinator (it does not know this peer, as after a RESULT it
 *   forgot the worker for) gets one too;
 * - DROP stops waiting tasks at once and discards a running task's result when it ends;
 * - *stop set (SIGTERM): a welcomed worker says HELLO again and sends no READY after it, so
 *   the coordinator holds no credit for it and its ACKs return none; the running task
 *   finishes, its result is sent and acknowledged (or the coordinator stays silent for 3
 *   heartbeat intervals, or is not connected), then the function returns 0, but not before
 *   that HELLO is welcomed (or unanswered for 3 intervals). Waiting tasks, and tasks that
 *   arrive meanwhile, are handed back with RETURN (no attempt counted). A computation that never
 *   ends keeps the function from returning (it borrows c): chesslens-worker exits on a second
 *   signal.
 *
 * What a task computes is behind worker_compute, so that the real executor, a no-op (for the
 * throughput bench) and a fault-injecting one (for tests) run through the same service code.
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill err (COMMON_ERR_LEN
 * bytes, NULL allowed).
 */
#ifndef CHESSLENS_WORKER_SERVICE_H
#define CHESSLENS_WORKER_SERVICE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/common.h"
#include "proto/proto.h"
#include "worker/worker.h" /* worker_progress_fn */

/* One task as the TASK message gave it (every pointer borrowed for the call). */
typedef struct worker_task_in {
    int64_t task;
    uint64_t epoch;
    uint32_t attempt;
    const char *model_path;
    const char *model_sha256;
    const char *spec; /* the sweep's canonical spec text */
    const void *body; /* the work (coordinator_work_encode) */
    size_t body_len;
} worker_task_in;

/* The task TASK message m (m->type PROTO_TASK) carries. Every pointer of the result points into
 * m, which keeps ownership: the result is valid while m lives unchanged. */
worker_task_in worker_task_in_of(const proto_msg *m);

/* What runs tasks. run and models are called on the compute thread only, one call at a time
 * (models also once before that thread starts). */
typedef struct worker_compute {
    /* Runs t. On success *out (free) holds the RESULT body (coordinator_results_encode) and
     * *n_rows the rows it stores; on failure a negative code and err, the FAIL text. */
    int (*run)(void *self, const worker_task_in *t, worker_progress_fn progress, void *pctx,
               uint8_t **out, size_t *out_len, uint64_t *n_rows, char *err);
    void (*destroy)(void *self);
    void *self;
    const char *backend; /* for HELLO: "cpu", "cuda", "noop" */
    size_t n_devices;
    int32_t devices[PROTO_MAX_DEVICES];
    uint64_t memory; /* bytes offered */
    uint32_t threads;
    /* sha256 of the models it holds loaded, for HELLO (may change after each task) */
    size_t (*models)(void *self, const char *out[PROTO_MAX_MODELS]);
} worker_compute;

/* The real computation: worker_executor (worker.h) on `backend` ("cpu", "cuda" or "cuda:N":
 * worker_backend_new, tried once here so that a bad name or an absent device fails at once)
 * with `threads` threads (<= 0: every CPU online), keeping up to max_models loaded models (0:
 * 2; at most PROTO_MAX_MODELS; by sha256, least recently used dropped first, before the next
 * one loads); a task that fails with a backend error drops its executor. A task's model is loaded
 * on first use from model_path and its model.safetensors checked against model_sha256 (a mismatch
 * fails the task); its spec is parsed once per distinct text; its work is decoded
 * (coordinator_work_decode), executed (worker_execute) and the results encoded
 * (coordinator_results_encode). */
int worker_compute_executor(worker_compute *out, const char *backend, int threads,
                            size_t max_models, char *err);
/* A computation that checks nothing and returns empty results at once, for measuring the
 * service itself (bench/). */
void worker_compute_noop(worker_compute *out);
/* A computation that runs inner's tasks with faults injected, for tests and fault drills.
 * faults is a comma-separated list of key=value (empty: none), each key as often as wanted:
 *   fail_task=ID   the task with this id fails with the error "injected failure";
 *   hang_task=ID   the task with this id blocks without reporting progress until the process
 *                  exits (its worker stops heartbeating it, so its lease lapses);
 *   abort_task=ID  the task with this id calls abort() (a worker crash mid-task);
 *   flaky=ID:K     the task with this id fails with the error "injected transient failure"
 *                  on its attempts 1..K (the TASK's attempt, so the count holds across workers
 *                  and restarts) and runs normally from attempt K+1 (K in 1..1000);
 *   sleep_ms=MS    before each task, sleep MS milliseconds while reporting progress 0
 *                  (0..3,600,000; the last one given counts).
 * On success inner is moved into *out (inner is zeroed; destroying *out destroys it); INVALID
 * for a malformed spec, with inner left as it was. */
int worker_compute_faulty(worker_compute *out, worker_compute *inner, const char *faults,
                          char *err);
/* Calls c->destroy; c is zeroed. NULL and a zeroed compute are fine. */
void worker_compute_destroy(worker_compute *c);

/* The most tasks a worker holds at once (the coordinator's default max_credits is the same). */
#define WORKER_MAX_SLOTS 64

typedef struct worker_service_opts {
    const char *endpoint;        /* "tcp://host:port" or "inproc://name" */
    void *zmq_ctx;               /* the context to use (required for inproc; NULL: its own) */
    const char *id;              /* worker id in HELLO (NULL: "<hostname>-<pid>") */
    volatile sig_atomic_t *stop; /* may be NULL */
    int verbose;                 /* > 0: one line per task and per reconnect on stderr */
    /* Tasks held at once, one running and the others waiting (0: 2; at most WORKER_MAX_SLOTS).
     * Two keep the compute thread busy while a result goes and the next task comes; tasks of
     * well under a millisecond need more to cover the coordinator's round trip. */
    uint32_t slots;
    /* Called on every socket the worker opens, before its zmq_connect (a reconnect opens a
     * fresh socket, so options set here hold on every connection), e.g. CURVE keys with
     * coordinator_curve_client_setup (coordinator/curve.h); NULL: none. A failure ends
     * worker_service_run with its code. socket_setup_arg is passed to it (borrowed). */
    int (*socket_setup)(void *sock, const void *arg, char *err);
    const void *socket_setup_arg;
    /* NULL: none. Otherwise every ACK of a report (RESULT, FAIL, RETURN) this worker accepts
     * is written to it as one line "ACK TASK EPOCH STATUS KIND" (STATUS stored, duplicate or
     * lease_lost; KIND result, fail or return) and flushed before the worker acts on it (drops
     * the output it kept), so that a test can check every acknowledged result against the
     * database after killing the coordinator (RELIABILITY.md §6, rows 4 and 12). A write
     * error is ignored: the log is evidence, not state. Borrowed; used by the I/O thread. */
    FILE *ack_log;
} worker_service_opts;

/* Runs the worker until *stop is set (0) or an unrecoverable error (a negative code: the
 * endpoint cannot be parsed, an id outside 1..255 bytes, out of memory). A coordinator that is
 * down or silent is not an error: the worker keeps reconnecting. A task that fails, or whose
 * result is too large for a message, is a FAIL, not an error. c is borrowed. */
int worker_service_run(const worker_service_opts *o, worker_compute *c, char *err);

#endif
