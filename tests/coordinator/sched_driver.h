/*
 * sched_driver.h: what the scheduler's tests share to drive a coordinator_sched as plain calls,
 * with frames in (encoded as a worker or a client would send them) and frames out (decoded),
 * and the clock passed by hand. Every function fails the running cmocka test on an error, so
 * callers check only what they test.
 */
#ifndef CHESSLENS_TESTS_COORDINATOR_SCHED_DRIVER_H
#define CHESSLENS_TESTS_COORDINATOR_SCHED_DRIVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/coordinator.h"
#include "coordinator/scheduler.h"
#include "proto/proto.h"

#define MODEL_DIR CHESSLENS_SOURCE_DIR "/models/chess-tiny"
#define MS 1000000LL
#define N_GAMES 16 /* games of the dataset "d" open_fresh makes */
#define PREDICTIONS "{\"kind\":\"predictions\",\"top_k\":1}"

/* The test's scratch directory ($CHESSLENS_TEST_TMPDIR, else /tmp). */
const char *tmpdir(void);
/* A store at tmpdir()/name, made afresh (any old file and its -wal and -shm removed), with a
 * dataset "d" of N_GAMES generated games. */
coordinator_store *open_fresh(const char *name);
/* The first column of the first row of sql. */
int64_t query_int(coordinator_store *s, const char *sql);

/* One frame in, from the peer with this routing id; data owned (turn frees it). */
typedef struct frame {
    char peer[32];
    uint8_t *data;
    size_t len;
} frame;

frame encode(const char *peer, const proto_msg *m);
frame hello(const char *peer, const char *worker);
frame ready(const char *peer, uint32_t credits);
/* SUBMIT of a sweep `name` over all of "d" with the model of MODEL_DIR and these analyses (a
 * JSON array's contents, e.g. PREDICTIONS). */
frame submit(const char *peer, uint64_t req, const char *name, const char *submission,
             const char *analyses);
/* STATUS, CANCEL, LIST, ... of a sweep (NULL: none). */
frame request(const char *peer, proto_type t, uint64_t req, const char *sweep);
/* A RESULT of (task, epoch) carrying r, with the right digest (bad_digest: one digit wrong). */
frame result(const char *peer, int64_t task, uint64_t epoch, const coordinator_results *r,
             bool bad_digest);
frame heartbeat(const char *peer, int64_t task, uint64_t epoch);
frame failure(const char *peer, int64_t task, uint64_t epoch, const char *text);
frame returned(const char *peer, int64_t task, uint64_t epoch);

/* One prediction row of game 0, so that a stored result has a row to count. */
extern const coordinator_results prediction_results;

/* What one batch sent: decoded, with the peer each went to. */
#define MAX_SENT 256

typedef struct sent {
    size_t n;
    char peer[MAX_SENT][32];
    proto_msg *m[MAX_SENT];
} sent;

void sent_free(sent *o);
/* One batch: the frames in (freed), a tick at now, the commit; *out receives what it sent. */
void turn(coordinator_sched *s, int64_t now, frame *in, size_t n_in, sent *out);
void turn1(coordinator_sched *s, int64_t now, frame f, sent *out);
/* The first message of type t in o, or NULL; how many of type t o holds. */
proto_msg *find(sent *o, proto_type t);
size_t count(sent *o, proto_type t);

#endif
