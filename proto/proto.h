/*
 * proto: the messages between the chesslens coordinator, its workers and its clients, and their
 * checked MessagePack codecs (proto/PROTOCOL.md).
 *
 * Every message is one MessagePack map with string keys: "v" (the protocol version,
 * PROTO_VERSION), "t" (the message type's name) and the fields of that type. A ZeroMQ frame holds
 * one message, or a bundle of several (below).
 * proto depends on nothing else of chesslens beyond common/, so the coordinator, the worker and
 * the CLI all decode with the same code.
 *
 * Decoding treats every byte as hostile (a frame may come from any peer that can connect):
 * - a message longer than PROTO_MAX_MESSAGE is refused before it is read;
 * - every declared length or count (str, bin, array, map) is checked against the bytes that are
 *   left before anything is allocated or read: a map of n entries needs at least 2n bytes, an
 *   array of n elements at least n, a str/bin of n bytes exactly n; and against the field's
 *   own cap (PROTO_MAX_*);
 * - the schema of each type is fixed: unknown keys, duplicate keys, missing required keys,
 *   wrong MessagePack types, integers out of the field's range, NaN or infinite floats, and
 *   bytes after the map are refused; so is an unknown version or type;
 * - nothing recurses on input: the reader is a pull parser driven by the schema, whose depth
 *   is at most 3 (message map, array of maps, their fields).
 * Every refusal is COMMON_ERR_PARSE (malformed bytes, which include 0xc1 and ext types) or
 * COMMON_ERR_INVALID (well-formed but not allowed; an unknown version is COMMON_ERR_UNSUPPORTED)
 * with a message naming the field ("task.epoch: expected an unsigned integer"), and leaves no
 * allocation behind. The caller answers with an ERROR message or drops the frame.
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill err (COMMON_ERR_LEN
 * bytes, NULL allowed).
 */
#ifndef CHESSLENS_PROTO_H
#define CHESSLENS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"

#define PROTO_VERSION 2 /* 2: frames may be bundles */

/* Caps. ZMQ_MAXMSGSIZE is set to PROTO_MAX_MESSAGE on every socket; a decoder refuses longer
 * input as well (inproc does not apply ZMQ_MAXMSGSIZE). */
#define PROTO_MAX_MESSAGE ((size_t)256 << 20) /* a RESULT of a large task */
#define PROTO_MAX_TEXT ((size_t)4096)         /* names, paths, ids, error texts */
#define PROTO_MAX_SPEC ((size_t)1 << 20)      /* a sweep spec (JSON text) */
#define PROTO_MAX_DEVICES 64
#define PROTO_MAX_MODELS 16
#define PROTO_MAX_ITEMS 100000 /* entries of a reply list (sweeps, workers, dead tasks) */

/* ------------------------------------------------------------------------------------------ */
/* MessagePack writer and reader                                                               */

/* A growable output buffer. The write functions never fail: an allocation failure is recorded
 * and reported by proto_writer_finish. */
typedef struct proto_writer {
    uint8_t *buf;
    size_t len, cap;
    bool failed;
} proto_writer;

void proto_writer_init(proto_writer *w);
/* Frees the buffer (after an error, or when proto_writer_finish was not called). */
void proto_writer_free(proto_writer *w);
void proto_w_map(proto_writer *w, uint32_t n);
void proto_w_array(proto_writer *w, uint32_t n);
/* A NUL-terminated string; NULL writes nil. */
void proto_w_str(proto_writer *w, const char *s);
void proto_w_strn(proto_writer *w, const char *s, size_t n);
void proto_w_bin(proto_writer *w, const void *p, size_t n);
void proto_w_uint(proto_writer *w, uint64_t v);
void proto_w_int(proto_writer *w, int64_t v);
void proto_w_f64(proto_writer *w, double v);
void proto_w_bool(proto_writer *w, bool v);
void proto_w_nil(proto_writer *w);
/* Hands the bytes to the caller (*out: free) and resets w: NOMEM if a write failed. */
int proto_writer_finish(proto_writer *w, uint8_t **out, size_t *len, char *err);

/* A pull parser over borrowed bytes. Each read checks the next object's type and its declared
 * size against what is left; `what` names the field in error messages. */
typedef struct proto_reader {
    const uint8_t *p;
    size_t len, off;
} proto_reader;

void proto_reader_init(proto_reader *r, const void *buf, size_t len);
/* Map / array headers: *n entries, at most max (INVALID beyond), and no more than the bytes
 * left can hold (PARSE). */
int proto_r_map(proto_reader *r, uint32_t max, uint32_t *n, const char *what, char *err);
int proto_r_array(proto_reader *r, uint32_t max, uint32_t *n, const char *what, char *err);
/* A str of at most max bytes, as a view into the buffer (not NUL-terminated). */
int proto_r_str(proto_reader *r, size_t max, const char **s, size_t *n, const char *what,
                char *err);
/* A bin of at most max bytes, as a view. */
int proto_r_bin(proto_reader *r, size_t max, const void **p, size_t *n, const char *what,
                char *err);
/* Any MessagePack integer encoding; the value must lie in [lo, hi] (INVALID otherwise). */
int proto_r_uint(proto_reader *r, uint64_t hi, uint64_t *v, const char *what, char *err);
int proto_r_int(proto_reader *r, int64_t lo, int64_t hi, int64_t *v, const char *what, char *err);
/* float32 or float64 (an integer is refused); NaN and infinities are INVALID. */
int proto_r_f64(proto_reader *r, double *v, const char *what, char *err);
int proto_r_bool(proto_reader *r, bool *v, const char *what, char *err);
/* True (and consumed) when the next object is nil. */
bool proto_r_nil(proto_reader *r);
/* PARSE when bytes are left. */
int proto_r_end(const proto_reader *r, char *err);

/* ------------------------------------------------------------------------------------------ */
/* Messages                                                                                    */

typedef enum proto_type {
    /* worker -> coordinator */
    PROTO_HELLO,     /* worker, backend, devices, memory, threads, models */
    PROTO_READY,     /* credits: how many more tasks the worker takes */
    PROTO_HEARTBEAT, /* task, epoch, progress (task 0: an idle worker's liveness) */
    PROTO_RESULT,    /* task, epoch, digest, body (the results, encoded by the coordinator lib) */
    PROTO_FAIL,      /* task, epoch, error */
    PROTO_RETURN,    /* task, epoch: handed back unrun (the worker stops); not an attempt */
    /* coordinator -> worker */
    PROTO_WELCOME, /* heartbeat_ms, lease_ms: the answer to HELLO */
    PROTO_TASK,    /* task, epoch, attempt, model_path, model_sha256, spec, body (the work) */
    PROTO_ACK,     /* task, epoch, status: the answer to RESULT, FAIL and HEARTBEAT */
    PROTO_DROP,    /* task, epoch: stop it, its sweep was cancelled */
    /* client -> coordinator */
    PROTO_SUBMIT,     /* req, submission, spec */
    PROTO_STATUS,     /* req, sweep ("" for all) */
    PROTO_CANCEL,     /* req, sweep */
    PROTO_LIST,       /* req */
    PROTO_WORKERS,    /* req */
    PROTO_RETRY_DEAD, /* req, sweep */
    /* coordinator -> client */
    PROTO_REPLY, /* req, body: the answer's fields, a MessagePack map (PROTOCOL.md) */
    /* either way */
    PROTO_ERROR, /* req (0 when the failed message had none), error */
    PROTO_N_TYPES
} proto_type;

/* The answer to a RESULT, FAIL or HEARTBEAT. */
typedef enum proto_ack_status {
    PROTO_ACK_STORED,    /* accepted (a result stored, a failure counted, a lease renewed) */
    PROTO_ACK_DUPLICATE, /* the task was done already: nothing stored, forget it */
    PROTO_ACK_LEASE_LOST /* the epoch is not the task's current lease: stop, forget it */
} proto_ack_status;

/* A decoded or to-be-encoded message. Only the fields of its type are read or set (the
 * others are zero after decoding). Strings are NUL-terminated; after proto_decode they and the
 * byte fields live in the message's own memory (proto_msg_free); for proto_encode they are
 * borrowed. */
typedef struct proto_msg {
    proto_type type;
    uint64_t req; /* client requests and their REPLY / ERROR: the client's request id */
    /* HELLO */
    const char *worker, *backend;
    uint64_t memory; /* bytes of device (or host) memory the worker offers */
    uint32_t threads;
    size_t n_devices;
    int32_t devices[PROTO_MAX_DEVICES];
    size_t n_models;
    const char *models[PROTO_MAX_MODELS]; /* sha256 of the models it holds loaded */
    /* READY */
    uint32_t credits;
    /* WELCOME */
    uint32_t heartbeat_ms, lease_ms;
    /* TASK, HEARTBEAT, RESULT, FAIL, ACK, DROP */
    int64_t task; /* > 0 (HEARTBEAT and its ACK: 0 = idle) */
    uint64_t epoch;
    uint32_t attempt;         /* TASK: 1 for the first dispatch */
    const char *model_path;   /* TASK */
    const char *model_sha256; /* TASK: 64 lower-case hex digits */
    const char *spec;         /* TASK, SUBMIT: the sweep's JSON text */
    const char *digest;       /* RESULT: sha256 (hex) of body */
    const void *body;         /* TASK, RESULT, REPLY */
    size_t body_len;
    double progress;         /* HEARTBEAT: 0..1 */
    proto_ack_status status; /* ACK */
    const char *error;       /* FAIL, ERROR */
    /* SUBMIT, STATUS, CANCEL, RETRY_DEAD */
    const char *submission; /* SUBMIT: the client-made id that makes a retried submit one */
    const char *sweep;      /* STATUS (may be ""), CANCEL, RETRY_DEAD: a sweep's name */
    void *mem;              /* decoded messages: their storage (private) */
} proto_msg;

/* The type's name on the wire ("hello", "task", ...); NULL outside the enum. */
const char *proto_type_name(proto_type t);

/* Encodes m (the fields of m->type; a NULL string is INVALID unless the field may be empty, when
 * it is written as "") into *out (free) of *len bytes. INVALID for a field out of its range or
 * cap. */
int proto_encode(const proto_msg *m, uint8_t **out, size_t *len, char *err);

/* Decodes one message from buf[len] under the rules at the top of this header. On success *out
 * (proto_msg_free) is set; on an error nothing is allocated. */
int proto_decode(const void *buf, size_t len, proto_msg **out, char *err);
void proto_msg_free(proto_msg **m);

/* The request id of a message that failed to decode, when one can be read ("req" at the top
 * level of a map), else 0: so that the ERROR answer reaches the right client request. */
uint64_t proto_peek_req(const void *buf, size_t len);

/* ------------------------------------------------------------------------------------------ */
/* Bundles                                                                                     */

/* A frame holds one message (the map above) or, between a worker and the coordinator, a bundle
 * of several: a MessagePack array of 2..PROTO_MAX_BUNDLE bin elements, each the bytes of one
 * message, to be taken in order (PROTOCOL.md, "Bundles"). A worker's slots turn over together
 * (the ACK of a result and the next TASK, the results of a turn, their heartbeats), so a bundle
 * makes a task cost a fraction of a ZeroMQ message and of a wake-up on each side. A bundle's
 * elements are messages, never bundles. */
#define PROTO_MAX_BUNDLE 4096

/* The messages of one frame, in order, as views into it (borrowed for the iteration). */
typedef struct proto_frame_iter {
    proto_reader r;
    uint32_t left; /* elements not yet handed out */
    bool single;   /* the frame is one message, not yet handed out */
} proto_frame_iter;

/* Starts reading frame[len]. A frame that starts with a MessagePack array is a bundle, whose
 * header is checked here (2..PROTO_MAX_BUNDLE elements, no more than its bytes can hold:
 * PARSE or INVALID otherwise, and then nothing of it is taken); any other frame is one
 * message, handed out whole for proto_decode to judge. */
int proto_frame_begin(proto_frame_iter *it, const void *frame, size_t len, char *err);
/* The next message of the frame: 1 with *msg and *len set, 0 after the last. An element that is
 * not a bin or overruns the frame, and bytes after the last element, are PARSE: the messages
 * handed out before stand, the rest of the frame is not read. */
int proto_frame_next(proto_frame_iter *it, const void **msg, size_t *len, char *err);

/* The frame of n >= 1 encoded messages (msgs[i] of lens[i] bytes) in order: a single message
 * as it is, several as a bundle. INVALID when n is 0 or over PROTO_MAX_BUNDLE, or the frame
 * would exceed PROTO_MAX_MESSAGE (callers split before). *out: free. */
int proto_bundle(const uint8_t *const *msgs, const size_t *lens, size_t n, uint8_t **out,
                 size_t *len, char *err);
/* Bytes a bundle adds around a message of len bytes (its bin header; the array header is at
 * most 5 more per bundle), so that callers can split before PROTO_MAX_MESSAGE. */
size_t proto_bundle_overhead(size_t len);

#endif
