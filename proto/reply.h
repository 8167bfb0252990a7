/*
 * proto/reply.h: the bodies of the coordinator's REPLY messages to client requests
 * (proto/PROTOCOL.md, "Replies"). A REPLY's body is one MessagePack map whose keys depend on the
 * request it answers; the coordinator encodes it with proto_reply_encode and the CLI decodes it
 * with proto_reply_decode under the same rules as every other message (proto.h): declared
 * lengths and counts checked before allocating, unknown, duplicate or missing keys, wrong
 * types, out-of-range values and trailing bytes refused, nothing left allocated on refusal.
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill err (COMMON_ERR_LEN
 * bytes, NULL allowed).
 */
#ifndef CHESSLENS_PROTO_REPLY_H
#define CHESSLENS_PROTO_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/proto.h"

/* One sweep with its task counts (status, list). */
typedef struct proto_sweep_info {
    const char *name;
    int64_t id;
    uint64_t pending, leased, done, dead;
    bool cancelled;
    uint64_t rows;      /* result values stored so far */
    int64_t created_at; /* Unix seconds */
} proto_sweep_info;

/* A dead task with its last error (status). */
typedef struct proto_dead_task {
    const char *sweep;
    const char *key;
    uint32_t attempts;
    const char *error;
} proto_dead_task;

/* A worker as the coordinator knows it (workers). */
typedef struct proto_worker_info {
    const char *id;
    const char *backend;
    size_t n_devices;
    int32_t devices[PROTO_MAX_DEVICES];
    uint32_t threads;
    bool connected;        /* heard from within its timeout */
    int64_t task;          /* the task it runs (0: none) */
    const char *task_key;  /* that task's key ("" when none) */
    const char *sweep;     /* that task's sweep ("" when none) */
    uint64_t tasks_done;   /* results it delivered that were stored */
    uint64_t last_seen_ms; /* milliseconds since its last message */
} proto_worker_info;

/* The answer to one request. Which members are read or set depends on `request`:
 * - PROTO_SUBMIT: sweep_id, sweep, existed, n_tasks;
 * - PROTO_STATUS: sweeps (the one asked for, or all), dead (their dead tasks, at most
 *   PROTO_MAX_ITEMS);
 * - PROTO_LIST: sweeps;
 * - PROTO_WORKERS: workers;
 * - PROTO_CANCEL: sweep, n_changed (running tasks told to drop);
 * - PROTO_RETRY_DEAD: sweep, n_changed (dead tasks requeued).
 * Members of other requests are not written, and are zero after decoding. After
 * proto_reply_decode every string and array lives in the reply's one allocation
 * (proto_reply_free); for proto_reply_encode they are borrowed. */
typedef struct proto_reply {
    proto_type request;
    int64_t sweep_id;
    const char *sweep;
    bool existed;
    uint64_t n_tasks;
    uint64_t n_changed;
    size_t n_sweeps;
    const proto_sweep_info *sweeps;
    size_t n_dead;
    const proto_dead_task *dead;
    size_t n_workers;
    const proto_worker_info *workers;
    void *mem; /* decoded replies: their storage (private) */
} proto_reply;

/* Encodes the members of r->request into *out (free) of *len bytes, with the keys of
 * PROTOCOL.md. INVALID for a request type that has no reply body, a NULL string, a value outside
 * its field's range (an empty name, a negative device, threads over 65535, ...), a list longer
 * than PROTO_MAX_ITEMS, or a body too large for a REPLY message; NOMEM. */
int proto_reply_encode(const proto_reply *r, uint8_t **out, size_t *len, char *err);
/* Decodes the body of a REPLY to a request of type `request` under the rules above. On success
 * *out (proto_reply_free) is set, with (*out)->request = request; on an error nothing is
 * allocated. */
int proto_reply_decode(proto_type request, const void *buf, size_t len, proto_reply **out,
                       char *err);
void proto_reply_free(proto_reply **r);

#endif
