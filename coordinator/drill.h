/*
 * coordinator/drill.h: the fault drills of chesslens-coordinator (coordinator/service.h,
 * "Fault drills"), for tests and drills only. The service's loop hands them every frame it
 * reads and every frame a batch would send; a drill may keep a message back (as if lost on the
 * wire) and logs what it did and what followed, as lines starting "coordinator: fault drill: ".
 */
#ifndef CHESSLENS_COORDINATOR_DRILL_H
#define CHESSLENS_COORDINATOR_DRILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "coordinator/scheduler.h"

#define DRILL_MAX 64 /* ACKs one drill drops at most; results watched per batch */

/* A result the drill knows of: read in this batch, or one whose ACK it dropped. */
typedef struct drill_result {
    uint8_t peer[COORDINATOR_PEER_MAX];
    size_t peer_len;
    int64_t task;
    uint64_t epoch;
    char digest[65];
} drill_result;

typedef struct drill {
    bool on;                 /* any drill configured: frames are decoded to find results */
    uint64_t drop_acks_left; /* ACKs (stored) still to drop */
    size_t n_read;           /* results read in this batch (their ACKs come out of it) */
    drill_result read[DRILL_MAX];
    size_t n_dropped; /* results whose ACK was dropped */
    drill_result dropped[DRILL_MAX];
} drill;

/* Parses spec, "key=value,..." (the grammar of chesslens-worker's --faults; NULL or "": no
 * drill): drop_result_acks=N (0..DRILL_MAX). INVALID naming the part otherwise. */
int drill_parse(drill *d, const char *spec, char *err);
/* A new batch begins: the results read in the last one are forgotten. */
void drill_begin_batch(drill *d);
/* A frame read from peer: each of its messages (a bundle's, proto.h). */
void drill_input(drill *d, FILE *log, const void *peer, size_t peer_len, const void *frame,
                 size_t len);
/* What to send of out (a frame the batch made, one message or a bundle): 0 as it is, 1
 * nothing, 2 *frame[*len] (free) instead, the messages the drill keeps. */
int drill_output(drill *d, FILE *log, const coordinator_send *out, uint8_t **frame, size_t *len);

#endif
