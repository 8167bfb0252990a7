/*
 * coordinator/service.h: the coordinator on the network: a ZeroMQ ROUTER socket around the
 * scheduler (coordinator/scheduler.h), one thread owning the store. `chesslens-coordinator`
 * runs it on tcp endpoints; `chesslens run` runs it on an inproc endpoint in a thread of its
 * own, so both share every line of scheduling and protocol code.
 *
 * Each turn of the loop waits for frames (at most until the scheduler's next wake), takes
 * every frame that is waiting (up to max_batch), runs one scheduler batch over them (one store
 * transaction) and sends what the batch produced after it committed. The socket refuses
 * frames over PROTO_MAX_MESSAGE (ZMQ_MAXMSGSIZE: the peer is disconnected), a message of more
 * than one frame is answered with an error, and sends never block: a frame to a peer that is
 * gone or whose queue is full is dropped (its worker times out and its leases lapse, or it asks
 * again), so a slow or vanished peer cannot stall the coordinator.
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
} coordinator_service_opts;

/* Runs until *stop is set (0), or a store or socket error (a negative code; the database is as
 * the last committed batch left it, and a restart resumes from there). A configuration the
 * rules above refuse (curve_key without clients_dir or the reverse, plain tcp off loopback, a
 * key file that is unreadable, malformed or not private) fails before the database is opened. */
int coordinator_service_run(const coordinator_service_opts *o, char *err);

#endif
