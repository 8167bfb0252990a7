/*
 * coordinator/service.h: the coordinator on the network: a ZeroMQ ROUTER socket around the
 * scheduler (coordinator/scheduler.h), one thread owning the store. `chesslens-coordinator`
 * runs it on tcp endpoints; `chesslens run` runs it on an inproc endpoint in a thread of its
 * own, so both share every line of scheduling and protocol code.
 *
 * Each turn of the loop waits for frames (at most until the scheduler's next wake), takes
 * the frames that are waiting (up to max_batch, and no more once the scheduler says its batch
 * is full: opts.sched.batch_messages), runs one scheduler batch over them (one store
 * transaction) and sends what the batch produced after it committed. The socket refuses
 * frames over PROTO_MAX_MESSAGE (ZMQ_MAXMSGSIZE: the peer is disconnected), a message of more
 * than one frame is answered with an error, and sends never block: a frame to a peer that is
 * gone or whose queue is full is dropped (its worker times out and its leases lapse, or it asks
 * again), so a slow or vanished peer cannot stall the coordinator.
 *
 * A store error (the disk is full, an I/O error, a database locked past its busy timeout) rolls
 * the batch back, so nothing of it is sent: no ACK for a result it did not store, no TASK for a
 * lease it did not record. With retry_store_errors (chesslens-coordinator) the service then
 * stays up: it logs the error, destroys the scheduler, waits (COORDINATOR_STORE_RETRY_FIRST_MS
 * doubling to COORDINATOR_STORE_RETRY_MAX_MS, without reading the socket, so frames wait in its
 * queues), and makes a new scheduler from the same database, which re-arms the recorded leases and
 * serves on. The frames of the failed batch are lost as if on the wire: workers whose reports went
 * unanswered reconnect after their silence rule and send them again, clients retry. Without it
 * (chesslens run, whose sweep cannot progress without its store) the error ends the service.
 * The counters of the stats lines add up every scheduler the process made, and count the store
 * errors.
 *
 * Fault drills (faults, for tests and drills only; never in production): a comma-separated
 * list of key=value, parsed like chesslens-worker's --faults (worker/service.h):
 *   drop_result_acks=N  the ACK (stored) of the first N results stored is not sent, as if lost
 *                       on the wire: the worker must send the same (task, epoch, digest) again
 *                       after its silence rule, and it must be answered duplicate. Every ACK
 *                       dropped, every delivery of such a task again (its epoch and digest, and
 *                       whether both equal the first's) and its answer are logged as lines
 *                       starting "coordinator: fault drill: ".
 * A malformed list fails before the database is opened.
 *
 * Authentication (proto/PROTOCOL.md, "Authentication"; coordinator/curve.h): with curve_key the
 * socket is a CURVE server and a ZAP handler, started before the first bind, admits only the
 * client keys of clients_dir; a ZAP handler that fails stops the service. Without CURVE, tcp
 * endpoints must be loopback addresses unless insecure_listen is set. Both rules are checked
 * before the database is opened or anything is bound.
 */
#ifndef CHESSLENS_COORDINATOR_SERVICE_H
#define CHESSLENS_COORDINATOR_SERVICE_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "coordinator/scheduler.h"

#define COORDINATOR_MAX_BINDS 8

typedef struct coordinator_service_opts {
    const char *db_path;                     /* the database (created when absent) */
    const char *bind[COORDINATOR_MAX_BINDS]; /* endpoints: "tcp://127.0.0.1:5555", "inproc://x" */
    size_t n_bind;                           /* 1..COORDINATOR_MAX_BINDS */
    void *zmq_ctx;                           /* the context (required for inproc; NULL: own) */
    coordinator_sched_opts sched;            /* lease and retry rules, task sizes */
    size_t max_batch;                        /* frames per batch (0: 4096) */
    size_t queue_limit;                      /* per-peer send and receive queue (0: 10000) */
    volatile sig_atomic_t *stop;             /* set: the loop ends after its turn (may be NULL) */
    FILE *log;                               /* one line per notable event (NULL: silent) */
    const char *curve_key;   /* the coordinator's secret key file: CURVE on (NULL: off) */
    const char *clients_dir; /* the admitted clients' *.pub files (required with curve_key) */
    bool insecure_listen;    /* plain tcp on addresses other than loopback is allowed */
    bool retry_store_errors; /* a store error is survived (above) instead of ending the run */
    const char *faults;      /* fault drills (above; NULL or "": none) */
} coordinator_service_opts;

/* The wait after a store error before a new scheduler is made: the first, doubled after every
 * error that follows within COORDINATOR_STORE_RETRY_RESET_MS of the last, up to the most. */
#define COORDINATOR_STORE_RETRY_FIRST_MS 250
#define COORDINATOR_STORE_RETRY_MAX_MS 8000
#define COORDINATOR_STORE_RETRY_RESET_MS 30000

/* Runs until *stop is set (0), or a socket error, or a store error without retry_store_errors
 * (a negative code; the database is as the last committed batch left it, and a restart resumes
 * from there). A configuration the rules above refuse (curve_key without clients_dir or the
 * reverse, plain tcp off loopback, a key file that is unreadable, malformed or not private, a
 * malformed faults list) fails before the database is opened. */
int coordinator_service_run(const coordinator_service_opts *o, char *err);

#endif
