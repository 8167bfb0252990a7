/*
 * proto's message codecs: one schema table says, for every message type, which fields it has
 * and the range of each (proto.h has the rules); proto_encode and proto_decode both follow it,
 * so a message that encodes always decodes to the same message.
 *
 * Decoding runs in two passes over the hostile bytes. The first walks the top-level map with
 * the reader's bounded skip, recording where each value lies and refusing malformed bytes,
 * duplicate keys and trailing bytes; only then are "v" and "t" read, wherever they stand in
 * the map, and the second pass reads each field of that type from its recorded place. Strings
 * and bins are kept as views into the input until every field has passed, then copied into one
 * allocation (msg->mem), so a refusal leaves nothing behind.
 */
#include "proto/proto.h"
#include "proto/proto_int.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest key or type name the decoder reads; every real one is shorter. */
#define MAX_KEY 32
#define HEX64 64
#define MAX_MS 86400000u /* welcome: a day, in milliseconds */
#define MAX_SUBMISSION 128

typedef enum field_id {
    F_REQ,
    F_WORKER,
    F_BACKEND,
    F_MEMORY,
    F_THREADS,
    F_DEVICES,
    F_MODELS,
    F_CREDITS,
    F_HEARTBEAT_MS,
    F_LEASE_MS,
    F_TASK,
    F_EPOCH,
    F_ATTEMPT,
    F_MODEL_PATH,
    F_MODEL_SHA256,
    F_SPEC,
    F_DIGEST,
    F_BODY,
    F_PROGRESS,
    F_STATUS,
    F_ERROR,
    F_SUBMISSION,
    F_SWEEP,
    F_N
} field_id;

typedef enum field_kind {
    K_UINT,     /* an unsigned integer in [lo, hi] */
    K_INT,      /* an integer in [lo, hi] (both within int64) */
    K_PROGRESS, /* a finite float in [0, 1] */
    K_TEXT,     /* a str of lo..hi bytes without NUL */
    K_HEX64,    /* 64 lower-case hex digits */
    K_BIN,      /* a bin of at most hi bytes */
    K_DEVICES,  /* an array of at most hi int32 >= 0 */
    K_MODELS,   /* an array of at most hi HEX64 strs */
    K_STATUS    /* "stored", "duplicate" or "lease_lost" */
} field_kind;

static const struct {
    const char *key;
    field_kind kind;
} fields[F_N] = {
    [F_REQ] = {"req", K_UINT},
    [F_WORKER] = {"worker", K_TEXT},
    [F_BACKEND] = {"backend", K_TEXT},
    [F_MEMORY] = {"memory", K_UINT},
    [F_THREADS] = {"threads", K_UINT},
    [F_DEVICES] = {"devices", K_DEVICES},
    [F_MODELS] = {"models", K_MODELS},
    [F_CREDITS] = {"credits", K_UINT},
    [F_HEARTBEAT_MS] = {"heartbeat_ms", K_UINT},
    [F_LEASE_MS] = {"lease_ms", K_UINT},
    [F_TASK] = {"task", K_INT},
    [F_EPOCH] = {"epoch", K_UINT},
    [F_ATTEMPT] = {"attempt", K_UINT},
    [F_MODEL_PATH] = {"model_path", K_TEXT},
    [F_MODEL_SHA256] = {"model_sha256", K_HEX64},
    [F_SPEC] = {"spec", K_TEXT},
    [F_DIGEST] = {"digest", K_HEX64},
    [F_BODY] = {"body", K_BIN},
    [F_PROGRESS] = {"progress", K_PROGRESS},
    [F_STATUS] = {"status", K_STATUS},
    [F_ERROR] = {"error", K_TEXT},
    [F_SUBMISSION] = {"submission", K_TEXT},
    [F_SWEEP] = {"sweep", K_TEXT},
};

/* One field of a type: its range (integers) or its length or count bounds (str, bin, array). */
typedef struct rule {
    field_id id;
    uint64_t lo, hi;
} rule;

#define MAX_RULES 7
typedef struct schema {
    const char *name;
    size_t n;
    rule rules[MAX_RULES];
} schema;

/* The protocol (proto.h): each type's fields, in the order they are written. Client requests
 * carry a req >= 1; an ERROR's req is 0 when the message it answers had none. */
static const schema schemas[PROTO_N_TYPES] = {
    [PROTO_HELLO] = {"hello",
                     6,
                     {{F_WORKER, 1, PROTO_MAX_TEXT},
                      {F_BACKEND, 1, PROTO_MAX_TEXT},
                      {F_MEMORY, 0, UINT64_MAX},
                      {F_THREADS, 0, 65535},
                      {F_DEVICES, 0, PROTO_MAX_DEVICES},
                      {F_MODELS, 0, PROTO_MAX_MODELS}}},
    [PROTO_READY] = {"ready", 1, {{F_CREDITS, 1, 65535}}},
    [PROTO_HEARTBEAT] = {"heartbeat",
                         3,
                         {{F_TASK, 0, INT64_MAX}, {F_EPOCH, 0, UINT64_MAX}, {F_PROGRESS, 0, 1}}},
    [PROTO_RESULT] = {"result",
                      4,
                      {{F_TASK, 1, INT64_MAX},
                       {F_EPOCH, 0, UINT64_MAX},
                       {F_DIGEST, HEX64, HEX64},
                       {F_BODY, 0, PROTO_MAX_MESSAGE}}},
    [PROTO_FAIL] = {"fail",
                    3,
                    {{F_TASK, 1, INT64_MAX},
                     {F_EPOCH, 0, UINT64_MAX},
                     {F_ERROR, 0, PROTO_MAX_TEXT}}},
    [PROTO_RETURN] = {"return", 2, {{F_TASK, 1, INT64_MAX}, {F_EPOCH, 0, UINT64_MAX}}},
    [PROTO_WELCOME] = {"welcome", 2, {{F_HEARTBEAT_MS, 1, MAX_MS}, {F_LEASE_MS, 1, MAX_MS}}},
    [PROTO_TASK] = {"task",
                    7,
                    {{F_TASK, 1, INT64_MAX},
                     {F_EPOCH, 0, UINT64_MAX},
                     {F_ATTEMPT, 1, UINT32_MAX},
                     {F_MODEL_PATH, 1, PROTO_MAX_TEXT},
                     {F_MODEL_SHA256, HEX64, HEX64},
                     {F_SPEC, 1, PROTO_MAX_SPEC},
                     {F_BODY, 0, PROTO_MAX_MESSAGE}}},
    [PROTO_ACK] = {"ack", 3, {{F_TASK, 0, INT64_MAX}, {F_EPOCH, 0, UINT64_MAX}, {F_STATUS, 0, 0}}},
    [PROTO_DROP] = {"drop", 2, {{F_TASK, 1, INT64_MAX}, {F_EPOCH, 0, UINT64_MAX}}},
    [PROTO_SUBMIT] = {"submit",
                      3,
                      {{F_REQ, 1, UINT64_MAX},
                       {F_SUBMISSION, 1, MAX_SUBMISSION},
                       {F_SPEC, 1, PROTO_MAX_SPEC}}},
    [PROTO_STATUS] = {"status", 2, {{F_REQ, 1, UINT64_MAX}, {F_SWEEP, 0, PROTO_MAX_TEXT}}},
    [PROTO_CANCEL] = {"cancel", 2, {{F_REQ, 1, UINT64_MAX}, {F_SWEEP, 1, PROTO_MAX_TEXT}}},
    [PROTO_LIST] = {"list", 1, {{F_REQ, 1, UINT64_MAX}}},
    [PROTO_WORKERS] = {"workers", 1, {{F_REQ, 1, UINT64_MAX}}},
    [PROTO_RETRY_DEAD] = {"retry_dead", 2, {{F_REQ, 1, UINT64_MAX}, {F_SWEEP, 1, PROTO_MAX_TEXT}}},
    [PROTO_REPLY] = {"reply", 2, {{F_REQ, 1, UINT64_MAX}, {F_BODY, 0, PROTO_MAX_MESSAGE}}},
    [PROTO_ERROR] = {"error", 2, {{F_REQ, 0, UINT64_MAX}, {F_ERROR, 1, PROTO_MAX_TEXT}}},
};

static const char *const ack_names[] = {"stored", "duplicate", "lease_lost"};
#define N_ACK (sizeof ack_names / sizeof ack_names[0])

const char *proto_type_name(proto_type t) {
    if ((unsigned)t >= PROTO_N_TYPES) {
        return NULL;
    }
    return schemas[t].name;
}

/* ------------------------------------------------------------------------------------------ */
/* Field access                                                                                */

static uint64_t get_uint(const proto_msg *m, field_id id) {
    switch (id) {
    case F_REQ:
        return m->req;
    case F_MEMORY:
        return m->memory;
    case F_THREADS:
        return m->threads;
    case F_CREDITS:
        return m->credits;
    case F_HEARTBEAT_MS:
        return m->heartbeat_ms;
    case F_LEASE_MS:
        return m->lease_ms;
    case F_EPOCH:
        return m->epoch;
    case F_ATTEMPT:
        return m->attempt;
    default:
        assert(!"not an unsigned field");
        return 0;
    }
}

/* v lies in the field's range, which fits its C type (the schema's hi says so). */
static void set_uint(proto_msg *m, field_id id, uint64_t v) {
    switch (id) {
    case F_REQ:
        m->req = v;
        break;
    case F_MEMORY:
        m->memory = v;
        break;
    case F_EPOCH:
        m->epoch = v;
        break;
    default:
        assert(v <= UINT32_MAX);
        switch (id) {
        case F_THREADS:
            m->threads = (uint32_t)v;
            break;
        case F_CREDITS:
            m->credits = (uint32_t)v;
            break;
        case F_HEARTBEAT_MS:
            m->heartbeat_ms = (uint32_t)v;
            break;
        case F_LEASE_MS:
            m->lease_ms = (uint32_t)v;
            break;
        case F_ATTEMPT:
            m->attempt = (uint32_t)v;
            break;
        default:
            assert(!"not an unsigned field");
        }
    }
}

static const char **str_slot(proto_msg *m, field_id id) {
    switch (id) {
    case F_WORKER:
        return &m->worker;
    case F_BACKEND:
        return &m->backend;
    case F_MODEL_PATH:
        return &m->model_path;
    case F_MODEL_SHA256:
        return &m->model_sha256;
    case F_SPEC:
        return &m->spec;
    case F_DIGEST:
        return &m->digest;
    case F_ERROR:
        return &m->error;
    case F_SUBMISSION:
        return &m->submission;
    case F_SWEEP:
        return &m->sweep;
    default:
        assert(!"not a string field");
        return NULL;
    }
}

static const char *get_str(const proto_msg *m, field_id id) {
    switch (id) {
    case F_WORKER:
        return m->worker;
    case F_BACKEND:
        return m->backend;
    case F_MODEL_PATH:
        return m->model_path;
    case F_MODEL_SHA256:
        return m->model_sha256;
    case F_SPEC:
        return m->spec;
    case F_DIGEST:
        return m->digest;
    case F_ERROR:
        return m->error;
    case F_SUBMISSION:
        return m->submission;
    case F_SWEEP:
        return m->sweep;
    default:
        assert(!"not a string field");
        return NULL;
    }
}

static bool is_hex64(const char *s, size_t n) {
    if (n != HEX64) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

/* A short, printable copy of untrusted bytes for an error message. */
const char *proto_printable(const char *s, size_t n, char *buf, size_t cap) {
    assert(cap >= 8);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k + 4 >= cap) {
            memcpy(buf + k, "...", 3);
            k += 3;
            break;
        }
        unsigned char c = (unsigned char)s[i];
        buf[k++] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
    }
    buf[k] = '\0';
    return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding                                                                                    */

int proto_check_text(const char *s, uint64_t lo, uint64_t hi, const char *what, char *err) {
    if (!s) {
        if (lo == 0) {
            return 0; /* written as "" */
        }
        return common_fail(err, COMMON_ERR_INVALID, "%s: missing (NULL)", what);
    }
    size_t n = strnlen(s, (size_t)hi + 1);
    if (n > hi) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: more than %" PRIu64 " bytes", what, hi);
    }
    if (n < lo) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: empty", what);
    }
    return 0;
}

static int check_hex64(const char *s, const char *what, char *err) {
    if (!s) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: missing (NULL)", what);
    }
    if (!is_hex64(s, strnlen(s, HEX64 + 1))) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: expected 64 lower-case hex digits", what);
    }
    return 0;
}

static int check_field(const proto_msg *m, const rule *ru, const char *what, char *err) {
    switch (fields[ru->id].kind) {
    case K_UINT: {
        uint64_t v = get_uint(m, ru->id);
        if (v < ru->lo || v > ru->hi) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "%s: %" PRIu64 ", expected %" PRIu64 "..%" PRIu64, what, v, ru->lo,
                               ru->hi);
        }
        return 0;
    }
    case K_INT:
        assert(ru->id == F_TASK && ru->hi <= INT64_MAX);
        if (m->task < (int64_t)ru->lo || m->task > (int64_t)ru->hi) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "%s: %" PRId64 ", expected %" PRIu64 "..%" PRIu64, what, m->task,
                               ru->lo, ru->hi);
        }
        return 0;
    case K_PROGRESS:
        if (!isfinite(m->progress) || m->progress < 0 || m->progress > 1) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: %g, expected 0..1", what, m->progress);
        }
        return 0;
    case K_TEXT:
        return proto_check_text(get_str(m, ru->id), ru->lo, ru->hi, what, err);
    case K_HEX64:
        return check_hex64(get_str(m, ru->id), what, err);
    case K_BIN:
        if (!m->body && m->body_len > 0) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: NULL with %zu bytes", what,
                               m->body_len);
        }
        if (m->body_len > ru->hi) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: %zu bytes, at most %" PRIu64, what,
                               m->body_len, ru->hi);
        }
        return 0;
    case K_DEVICES:
        if (m->n_devices > ru->hi) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: %zu entries, at most %" PRIu64, what,
                               m->n_devices, ru->hi);
        }
        for (size_t i = 0; i < m->n_devices; i++) {
            if (m->devices[i] < 0) {
                return common_fail(err, COMMON_ERR_INVALID, "%s[%zu]: %" PRId32 ", at least 0",
                                   what, i, m->devices[i]);
            }
        }
        return 0;
    case K_MODELS:
        if (m->n_models > ru->hi) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: %zu entries, at most %" PRIu64, what,
                               m->n_models, ru->hi);
        }
        for (size_t i = 0; i < m->n_models; i++) {
            char item[96];
            snprintf(item, sizeof item, "%s[%zu]", what, i);
            int rc = check_hex64(m->models[i], item, err);
            if (rc != 0) {
                return rc;
            }
        }
        return 0;
    case K_STATUS:
        if ((unsigned)m->status >= N_ACK) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: unknown status %d", what,
                               (int)m->status);
        }
        return 0;
    }
    assert(!"unknown field kind");
    return COMMON_ERR_INVALID;
}

static void write_field(proto_writer *w, const proto_msg *m, const rule *ru) {
    switch (fields[ru->id].kind) {
    case K_UINT:
        proto_w_uint(w, get_uint(m, ru->id));
        break;
    case K_INT:
        proto_w_int(w, m->task);
        break;
    case K_PROGRESS:
        proto_w_f64(w, m->progress);
        break;
    case K_TEXT: {
        const char *s = get_str(m, ru->id);
        proto_w_str(w, s ? s : "");
        break;
    }
    case K_HEX64:
        proto_w_strn(w, get_str(m, ru->id), HEX64);
        break;
    case K_BIN:
        proto_w_bin(w, m->body, m->body_len);
        break;
    case K_DEVICES:
        proto_w_array(w, (uint32_t)m->n_devices);
        for (size_t i = 0; i < m->n_devices; i++) {
            proto_w_int(w, m->devices[i]);
        }
        break;
    case K_MODELS:
        proto_w_array(w, (uint32_t)m->n_models);
        for (size_t i = 0; i < m->n_models; i++) {
            proto_w_strn(w, m->models[i], HEX64);
        }
        break;
    case K_STATUS:
        proto_w_str(w, ack_names[m->status]);
        break;
    }
}

/* Names the message in a field's error: the checks and readers say "key: ...", and
 * "type.key: ..." is written only when one fails (formatting each field's name for every
 * message cost more than checking the field). */
static int in_message(const schema *s, const char *key, int rc, char *err) {
    size_t k = strlen(key);
    size_t n = strlen(s->name) + 1; /* "type." */
    if (err != NULL && strncmp(err, key, k) == 0 && n < COMMON_ERR_LEN) {
        /* the message moves right by n bytes (its end cut off if it no longer fits) */
        size_t len = strnlen(err, COMMON_ERR_LEN - 1);
        size_t keep = len < COMMON_ERR_LEN - 1 - n ? len : COMMON_ERR_LEN - 1 - n;
        memmove(err + n, err, keep);
        memcpy(err, s->name, n - 1);
        err[n - 1] = '.';
        err[n + keep] = '\0';
    }
    return rc;
}

int proto_encode(const proto_msg *m, uint8_t **out, size_t *len, char *err) {
    assert(m && out && len);
    if ((unsigned)m->type >= PROTO_N_TYPES) {
        return common_fail(err, COMMON_ERR_INVALID, "message: unknown type %d", (int)m->type);
    }
    const schema *s = &schemas[m->type];
    for (size_t i = 0; i < s->n; i++) {
        const char *key = fields[s->rules[i].id].key;
        int rc = check_field(m, &s->rules[i], key, err);
        if (rc != 0) {
            return in_message(s, key, rc, err);
        }
    }
    proto_writer w;
    proto_writer_init(&w);
    proto_w_map(&w, (uint32_t)(2 + s->n));
    proto_w_str(&w, "v");
    proto_w_uint(&w, PROTO_VERSION);
    proto_w_str(&w, "t");
    proto_w_str(&w, s->name);
    for (size_t i = 0; i < s->n; i++) {
        proto_w_str(&w, fields[s->rules[i].id].key);
        write_field(&w, m, &s->rules[i]);
    }
    uint8_t *buf;
    size_t n;
    int rc = proto_writer_finish(&w, &buf, &n, err);
    if (rc != 0) {
        return common_fail(err, rc, "%s: out of memory", s->name);
    }
    if (n > PROTO_MAX_MESSAGE) {
        free(buf);
        return common_fail(err, COMMON_ERR_INVALID, "%s: %zu bytes encoded, at most %zu", s->name,
                           n, PROTO_MAX_MESSAGE);
    }
    *out = buf;
    *len = n;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding                                                                                    */

/* A top-level entry found by the first pass: the key as a view, the value as a byte range. */
typedef struct entry {
    const char *key;
    size_t key_len;
    size_t val_off, val_end;
    bool used;
} entry;

/* The strings and the bin of a message being decoded, as views into the input, until every
 * field has passed and they are copied into the message's memory. */
typedef struct stage {
    size_t n;
    struct {
        const char **slot;
        const char *src;
        size_t len;
    } strs[MAX_RULES + PROTO_MAX_MODELS];
    const void *body;
    size_t body_len;
} stage;

static void stage_str(stage *st, const char **slot, const char *src, size_t len) {
    assert(st->n < sizeof st->strs / sizeof st->strs[0]);
    st->strs[st->n].slot = slot;
    st->strs[st->n].src = src;
    st->strs[st->n].len = len;
    st->n++;
}

int proto_r_text(proto_reader *r, uint64_t lo, uint64_t hi, const char **s, size_t *n,
                 const char *what, char *err) {
    int rc = proto_r_str(r, (size_t)hi, s, n, what, err);
    if (rc != 0) {
        return rc;
    }
    if (*n < lo) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: empty", what);
    }
    if (memchr(*s, '\0', *n)) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: contains a NUL byte", what);
    }
    return 0;
}

static int read_hex64(proto_reader *r, const char **s, const char *what, char *err) {
    size_t n;
    int rc = proto_r_str(r, HEX64, s, &n, what, err);
    if (rc != 0) {
        return rc;
    }
    if (!is_hex64(*s, n)) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: expected 64 lower-case hex digits", what);
    }
    return 0;
}

static int read_field(proto_reader *r, const rule *ru, proto_msg *m, stage *st, const char *what,
                      char *err) {
    int rc = 0;
    switch (fields[ru->id].kind) {
    case K_UINT: {
        uint64_t v;
        rc = proto_r_uint(r, ru->hi, &v, what, err);
        if (rc == 0 && v < ru->lo) {
            rc = common_fail(err, COMMON_ERR_INVALID, "%s: %" PRIu64 ", at least %" PRIu64, what, v,
                             ru->lo);
        }
        if (rc == 0) {
            set_uint(m, ru->id, v);
        }
        return rc;
    }
    case K_INT:
        assert(ru->id == F_TASK && ru->hi <= INT64_MAX);
        return proto_r_int(r, (int64_t)ru->lo, (int64_t)ru->hi, &m->task, what, err);
    case K_PROGRESS:
        rc = proto_r_f64(r, &m->progress, what, err);
        if (rc == 0 && !(m->progress >= 0 && m->progress <= 1)) {
            rc = common_fail(err, COMMON_ERR_INVALID, "%s: %g, expected 0..1", what, m->progress);
        }
        return rc;
    case K_TEXT: {
        const char *s;
        size_t n;
        rc = proto_r_text(r, ru->lo, ru->hi, &s, &n, what, err);
        if (rc == 0) {
            stage_str(st, str_slot(m, ru->id), s, n);
        }
        return rc;
    }
    case K_HEX64: {
        const char *s;
        rc = read_hex64(r, &s, what, err);
        if (rc == 0) {
            stage_str(st, str_slot(m, ru->id), s, HEX64);
        }
        return rc;
    }
    case K_BIN:
        return proto_r_bin(r, (size_t)ru->hi, &st->body, &st->body_len, what, err);
    case K_DEVICES: {
        uint32_t n;
        rc = proto_r_array(r, (uint32_t)ru->hi, &n, what, err);
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            char item[96];
            int64_t v;
            snprintf(item, sizeof item, "%s[%" PRIu32 "]", what, i);
            rc = proto_r_int(r, 0, INT32_MAX, &v, item, err);
            if (rc == 0) {
                m->devices[i] = (int32_t)v;
            }
        }
        m->n_devices = n;
        return rc;
    }
    case K_MODELS: {
        uint32_t n;
        rc = proto_r_array(r, (uint32_t)ru->hi, &n, what, err);
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            char item[96];
            const char *s;
            snprintf(item, sizeof item, "%s[%" PRIu32 "]", what, i);
            rc = read_hex64(r, &s, item, err);
            if (rc == 0) {
                stage_str(st, &m->models[i], s, HEX64);
            }
        }
        m->n_models = n;
        return rc;
    }
    case K_STATUS: {
        const char *s;
        size_t n;
        char shown[40];
        rc = proto_r_str(r, MAX_KEY, &s, &n, what, err);
        if (rc != 0) {
            return rc;
        }
        for (size_t k = 0; k < N_ACK; k++) {
            if (strlen(ack_names[k]) == n && memcmp(ack_names[k], s, n) == 0) {
                m->status = (proto_ack_status)k;
                return 0;
            }
        }
        return common_fail(err, COMMON_ERR_INVALID, "%s: unknown status \"%s\"", what,
                           proto_printable(s, n, shown, sizeof shown));
    }
    }
    assert(!"unknown field kind");
    return COMMON_ERR_INVALID;
}

static entry *find_entry(entry *e, size_t n, const char *key) {
    size_t len = strlen(key);
    for (size_t i = 0; i < n; i++) {
        if (e[i].key_len == len && memcmp(e[i].key, key, len) == 0) {
            return &e[i];
        }
    }
    return NULL;
}

/* A reader over exactly one recorded value. */
static void value_reader(proto_reader *r, const void *buf, const entry *e) {
    proto_reader_init(r, buf, e->val_end);
    r->off = e->val_off;
}

/* The first pass: every top-level key and where its value lies; no duplicates, nothing after
 * the map. Two containers may nest in a value (the schema's depth of 3, less the map). */
static int scan_map(const void *buf, size_t len, entry *e, uint32_t *n, char *err) {
    proto_reader r;
    proto_reader_init(&r, buf, len);
    int rc = proto_r_map(&r, PROTO_MAX_KEYS, n, "message", err);
    for (uint32_t i = 0; rc == 0 && i < *n; i++) {
        char shown[40];
        rc = proto_r_str(&r, MAX_KEY, &e[i].key, &e[i].key_len, "message key", err);
        if (rc != 0) {
            break;
        }
        proto_printable(e[i].key, e[i].key_len, shown, sizeof shown);
        for (uint32_t j = 0; j < i; j++) {
            if (e[j].key_len == e[i].key_len && memcmp(e[j].key, e[i].key, e[i].key_len) == 0) {
                return common_fail(err, COMMON_ERR_INVALID, "message: duplicate key \"%s\"", shown);
            }
        }
        e[i].val_off = r.off;
        e[i].used = false;
        rc = proto_r_skip(&r, 2, shown, err);
        e[i].val_end = r.off;
    }
    if (rc == 0) {
        rc = proto_r_end(&r, err);
    }
    return rc;
}

/* "v" and "t", wherever they are in the map. */
static int read_envelope(const void *buf, entry *e, uint32_t n, proto_type *type, char *err) {
    proto_reader r;
    entry *v = find_entry(e, n, "v");
    if (!v) {
        return common_fail(err, COMMON_ERR_INVALID, "v: missing (the protocol version)");
    }
    v->used = true;
    value_reader(&r, buf, v);
    uint64_t version;
    int rc = proto_r_uint(&r, UINT64_MAX, &version, "v", err);
    if (rc != 0) {
        return rc;
    }
    if (version != PROTO_VERSION) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "v: protocol version %" PRIu64 ", this build speaks %d", version,
                           PROTO_VERSION);
    }
    entry *t = find_entry(e, n, "t");
    if (!t) {
        return common_fail(err, COMMON_ERR_INVALID, "t: missing (the message type)");
    }
    t->used = true;
    value_reader(&r, buf, t);
    const char *name;
    size_t len;
    rc = proto_r_str(&r, MAX_KEY, &name, &len, "t", err);
    if (rc != 0) {
        return rc;
    }
    for (int k = 0; k < PROTO_N_TYPES; k++) {
        if (strlen(schemas[k].name) == len && memcmp(schemas[k].name, name, len) == 0) {
            *type = (proto_type)k;
            return 0;
        }
    }
    char shown[40];
    return common_fail(err, COMMON_ERR_INVALID, "t: unknown message type \"%s\"",
                       proto_printable(name, len, shown, sizeof shown));
}

int proto_decode(const void *buf, size_t len, proto_msg **out, char *err) {
    assert(out);
    if (len > PROTO_MAX_MESSAGE) {
        return common_fail(err, COMMON_ERR_INVALID, "message: %zu bytes, at most %zu", len,
                           PROTO_MAX_MESSAGE);
    }
    if (!buf || len == 0) {
        return common_fail(err, COMMON_ERR_PARSE, "message: empty");
    }
    entry e[PROTO_MAX_KEYS];
    uint32_t n = 0;
    int rc = scan_map(buf, len, e, &n, err);
    if (rc != 0) {
        return rc;
    }
    proto_type type = PROTO_HELLO;
    rc = read_envelope(buf, e, n, &type, err);
    if (rc != 0) {
        return rc;
    }
    const schema *s = &schemas[type];

    /* every key is the type's */
    for (uint32_t i = 0; i < n; i++) {
        if (e[i].used) {
            continue;
        }
        bool known = false;
        for (size_t k = 0; k < s->n && !known; k++) {
            const char *key = fields[s->rules[k].id].key;
            known = strlen(key) == e[i].key_len && memcmp(key, e[i].key, e[i].key_len) == 0;
        }
        if (!known) {
            char shown[40];
            return common_fail(err, COMMON_ERR_INVALID, "%s: unknown key \"%s\"", s->name,
                               proto_printable(e[i].key, e[i].key_len, shown, sizeof shown));
        }
    }

    /* every field of the type is there and in range */
    proto_msg m;
    memset(&m, 0, sizeof m);
    m.type = type;
    stage st;
    memset(&st, 0, sizeof st);
    for (size_t k = 0; k < s->n; k++) {
        const rule *ru = &s->rules[k];
        const char *key = fields[ru->id].key;
        entry *f = find_entry(e, n, key);
        if (!f) {
            return common_fail(err, COMMON_ERR_INVALID, "%s.%s: missing", s->name, key);
        }
        proto_reader r;
        value_reader(&r, buf, f);
        rc = read_field(&r, ru, &m, &st, key, err);
        if (rc != 0) {
            return in_message(s, key, rc, err);
        }
        /* the field's reader and the first pass's skip walk the same bytes */
        assert(r.off == r.len);
    }

    /* one allocation for the bin (first, so it keeps malloc's alignment) and the strings */
    size_t total = st.body_len;
    for (size_t i = 0; i < st.n; i++) {
        total += st.strs[i].len + 1;
    }
    char *mem = malloc(total ? total : 1);
    if (!mem) {
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory (%zu bytes)", s->name, total);
    }
    size_t at = 0;
    if (st.body) {
        memcpy(mem, st.body, st.body_len);
        m.body = mem;
        m.body_len = st.body_len;
        at = st.body_len;
    }
    for (size_t i = 0; i < st.n; i++) {
        memcpy(mem + at, st.strs[i].src, st.strs[i].len);
        mem[at + st.strs[i].len] = '\0';
        *st.strs[i].slot = mem + at;
        at += st.strs[i].len + 1;
    }
    assert(at == total);
    proto_msg *msg = malloc(sizeof *msg);
    if (!msg) {
        free(mem);
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", s->name);
    }
    /* m's string slots point into mem, not into m: the copy keeps them */
    *msg = m;
    msg->mem = mem;
    *out = msg;
    return 0;
}

void proto_msg_free(proto_msg **m) {
    if (!m || !*m) {
        return;
    }
    free((*m)->mem);
    free(*m);
    *m = NULL;
}

uint64_t proto_peek_req(const void *buf, size_t len) {
    if (!buf || len == 0 || len > PROTO_MAX_MESSAGE) {
        return 0;
    }
    proto_reader r;
    proto_reader_init(&r, buf, len);
    uint32_t n;
    if (proto_r_map(&r, PROTO_MAX_KEYS, &n, "message", NULL) != 0) {
        return 0;
    }
    uint64_t req = 0;
    bool found = false;
    for (uint32_t i = 0; i < n; i++) {
        const char *key;
        size_t key_len;
        if (proto_r_str(&r, len, &key, &key_len, "message key", NULL) != 0) {
            return 0;
        }
        if (key_len == 3 && memcmp(key, "req", 3) == 0) {
            if (found || proto_r_uint(&r, UINT64_MAX, &req, "req", NULL) != 0) {
                return 0; /* a duplicate, or not an unsigned integer */
            }
            found = true;
        } else if (proto_r_skip(&r, 2, "message", NULL) != 0) {
            return 0;
        }
    }
    if (proto_r_end(&r, NULL) != 0) {
        return 0;
    }
    return found ? req : 0;
}
