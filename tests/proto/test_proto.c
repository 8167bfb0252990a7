/*
 * proto: the message codecs against their contract (proto/proto.h). Every message type round
 * trips with every field set, with its smallest and its largest values; a few encodings are
 * compared byte for byte with MessagePack written out by hand from the format's spec; and every
 * schema rule has a refusal test that checks the error code and that the message names the
 * field. Hostile input (every prefix of every message, the count amplifiers that make
 * msgpack-c reserve gigabytes, 0xc1, ext types, oversized lengths) must be refused without a
 * crash and without allocating. The link wraps malloc and realloc so that a test can count the
 * allocations a call makes and fail the Nth one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

/* ------------------------------------------------------------------------------------------ */
/* Allocation accounting (-Wl,--wrap=malloc,--wrap=realloc in tests/proto/CMakeLists.txt)     */

void *__real_malloc(size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_realloc(void *p, size_t n);

static long alloc_count;        /* allocations since alloc_reset */
static long alloc_fail_at = -1; /* the index of the allocation to refuse; -1: none */
static size_t alloc_largest;    /* bytes of the largest allocation since alloc_reset */

static void alloc_reset(long fail_at) {
    alloc_count = 0;
    alloc_fail_at = fail_at;
    alloc_largest = 0;
}

static bool alloc_allowed(size_t n) {
    if (alloc_count++ == alloc_fail_at) {
        return false;
    }
    if (n > alloc_largest) {
        alloc_largest = n;
    }
    return true;
}

void *__wrap_malloc(size_t n) {
    return alloc_allowed(n) ? __real_malloc(n) : NULL;
}

void *__wrap_realloc(void *p, size_t n) {
    return alloc_allowed(n) ? __real_realloc(p, n) : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Messages to encode                                                                          */

#define SHA_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA_B "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
#define SHA_C "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static const uint8_t body_bytes[] = {0x81, 0xa2, 'o', 'k', 0xc3, 0x00, 0xff, 0x7f};

/* The keys of each type, in the order the test's own encoder writes them. */
static const char *const type_keys[PROTO_N_TYPES][8] = {
    [PROTO_HELLO] = {"worker", "backend", "memory", "threads", "devices", "models"},
    [PROTO_READY] = {"credits"},
    [PROTO_HEARTBEAT] = {"task", "epoch", "progress"},
    [PROTO_RESULT] = {"task", "epoch", "digest", "body"},
    [PROTO_FAIL] = {"task", "epoch", "error"},
    [PROTO_RETURN] = {"task", "epoch"},
    [PROTO_WELCOME] = {"heartbeat_ms", "lease_ms"},
    [PROTO_TASK] = {"task", "epoch", "attempt", "model_path", "model_sha256", "spec", "body"},
    [PROTO_ACK] = {"task", "epoch", "status"},
    [PROTO_DROP] = {"task", "epoch"},
    [PROTO_SUBMIT] = {"req", "submission", "spec"},
    [PROTO_STATUS] = {"req", "sweep"},
    [PROTO_CANCEL] = {"req", "sweep"},
    [PROTO_LIST] = {"req"},
    [PROTO_WORKERS] = {"req"},
    [PROTO_RETRY_DEAD] = {"req", "sweep"},
    [PROTO_REPLY] = {"req", "body"},
    [PROTO_ERROR] = {"req", "error"},
};

static const char *const names[PROTO_N_TYPES] = {
    "hello", "ready",  "heartbeat", "result", "fail", "return",  "welcome",    "task",  "ack",
    "drop",  "submit", "status",    "cancel", "list", "workers", "retry_dead", "reply", "error"};

static size_t n_keys(proto_type t) {
    size_t n = 0;
    while (n < 8 && type_keys[t][n]) {
        n++;
    }
    return n;
}

/* Every field of type t set, to values that differ from field to field. */
static proto_msg full_msg(proto_type t) {
    static const char *const models[] = {SHA_A, SHA_C};
    proto_msg m;
    memset(&m, 0, sizeof m);
    m.type = t;
    switch (t) {
    case PROTO_HELLO:
        m.worker = "worker-1";
        m.backend = "cuda";
        m.memory = (uint64_t)80 << 30;
        m.threads = 16;
        m.n_devices = 3;
        m.devices[0] = 0;
        m.devices[1] = 1;
        m.devices[2] = 300;
        m.n_models = 2;
        m.models[0] = models[0];
        m.models[1] = models[1];
        break;
    case PROTO_READY:
        m.credits = 3;
        break;
    case PROTO_HEARTBEAT:
        m.task = 17;
        m.epoch = 4;
        m.progress = 0.25;
        break;
    case PROTO_RESULT:
        m.task = 17;
        m.epoch = 4;
        m.digest = SHA_C;
        m.body = body_bytes;
        m.body_len = sizeof body_bytes;
        break;
    case PROTO_FAIL:
        m.task = 18;
        m.epoch = 5;
        m.error = "model_run: out of memory";
        break;
    case PROTO_RETURN:
        m.task = 19;
        m.epoch = 6;
        break;
    case PROTO_WELCOME:
        m.heartbeat_ms = 1000;
        m.lease_ms = 30000;
        break;
    case PROTO_TASK:
        m.task = 1234567;
        m.epoch = 9;
        m.attempt = 2;
        m.model_path = "/models/chess-tiny.safetensors";
        m.model_sha256 = SHA_A;
        m.spec = "{\"kind\":\"patch\",\"layers\":[0,1]}";
        m.body = body_bytes;
        m.body_len = sizeof body_bytes;
        break;
    case PROTO_ACK:
        m.task = 19;
        m.epoch = 6;
        m.status = PROTO_ACK_DUPLICATE;
        break;
    case PROTO_DROP:
        m.task = 20;
        m.epoch = 7;
        break;
    case PROTO_SUBMIT:
        m.req = 7;
        m.submission = "client-42-1";
        m.spec = "{\"sweep\":\"s1\"}";
        break;
    case PROTO_STATUS:
        m.req = 8;
        m.sweep = "s1";
        break;
    case PROTO_CANCEL:
        m.req = 9;
        m.sweep = "s2";
        break;
    case PROTO_LIST:
        m.req = 10;
        break;
    case PROTO_WORKERS:
        m.req = 11;
        break;
    case PROTO_RETRY_DEAD:
        m.req = 12;
        m.sweep = "s3";
        break;
    case PROTO_REPLY:
        m.req = 13;
        m.body = body_bytes;
        m.body_len = sizeof body_bytes;
        break;
    case PROTO_ERROR:
        m.req = 14;
        m.error = "submit.spec: empty";
        break;
    default:
        fail_msg("no such type %d", (int)t);
    }
    return m;
}

/* Every field of type t at the low end of its range (empty where that is allowed). */
static proto_msg min_msg(proto_type t) {
    proto_msg m;
    memset(&m, 0, sizeof m);
    m.type = t;
    switch (t) {
    case PROTO_HELLO:
        m.worker = "w";
        m.backend = "c";
        break;
    case PROTO_READY:
        m.credits = 1;
        break;
    case PROTO_HEARTBEAT:
        break;
    case PROTO_RESULT:
        m.task = 1;
        m.digest = SHA_B;
        break;
    case PROTO_FAIL:
        m.task = 1;
        m.error = "";
        break;
    case PROTO_RETURN:
        m.task = 1;
        break;
    case PROTO_WELCOME:
        m.heartbeat_ms = 1;
        m.lease_ms = 1;
        break;
    case PROTO_TASK:
        m.task = 1;
        m.attempt = 1;
        m.model_path = "p";
        m.model_sha256 = SHA_B;
        m.spec = "x";
        break;
    case PROTO_ACK:
        m.task = 1;
        m.status = PROTO_ACK_STORED;
        break;
    case PROTO_DROP:
        m.task = 1;
        break;
    case PROTO_SUBMIT:
        m.req = 1;
        m.submission = "s";
        m.spec = "{";
        break;
    case PROTO_STATUS:
        m.req = 1;
        m.sweep = "";
        break;
    case PROTO_CANCEL:
    case PROTO_RETRY_DEAD:
        m.req = 1;
        m.sweep = "s";
        break;
    case PROTO_LIST:
    case PROTO_WORKERS:
    case PROTO_REPLY:
        m.req = 1;
        break;
    case PROTO_ERROR:
        m.error = "e";
        break;
    default:
        fail_msg("no such type %d", (int)t);
    }
    return m;
}

static bool str_eq(const char *a, const char *b) {
    /* NULL encodes as "" where a field may be empty */
    return strcmp(a ? a : "", b ? b : "") == 0;
}

static void assert_msg_equal(const proto_msg *a, const proto_msg *b) {
    assert_int_equal(a->type, b->type);
    assert_true(a->req == b->req);
    assert_true(str_eq(a->worker, b->worker));
    assert_true(str_eq(a->backend, b->backend));
    assert_true(a->memory == b->memory);
    assert_int_equal(a->threads, b->threads);
    assert_int_equal(a->n_devices, b->n_devices);
    for (size_t i = 0; i < a->n_devices; i++) {
        assert_int_equal(a->devices[i], b->devices[i]);
    }
    assert_int_equal(a->n_models, b->n_models);
    for (size_t i = 0; i < a->n_models; i++) {
        assert_string_equal(a->models[i], b->models[i]);
    }
    assert_int_equal(a->credits, b->credits);
    assert_int_equal(a->heartbeat_ms, b->heartbeat_ms);
    assert_int_equal(a->lease_ms, b->lease_ms);
    assert_true(a->task == b->task);
    assert_true(a->epoch == b->epoch);
    assert_int_equal(a->attempt, b->attempt);
    assert_true(str_eq(a->model_path, b->model_path));
    assert_true(str_eq(a->model_sha256, b->model_sha256));
    assert_true(str_eq(a->spec, b->spec));
    assert_true(str_eq(a->digest, b->digest));
    assert_int_equal(a->body_len, b->body_len);
    if (a->body_len > 0) {
        assert_memory_equal(a->body, b->body, a->body_len);
    }
    assert_memory_equal(&a->progress, &b->progress, sizeof a->progress);
    assert_int_equal(a->status, b->status);
    assert_true(str_eq(a->error, b->error));
    assert_true(str_eq(a->submission, b->submission));
    assert_true(str_eq(a->sweep, b->sweep));
}

/* Encodes m, decodes the bytes, checks the two messages equal and the decoded one encodes to
 * the same bytes; returns the decoded message. */
static proto_msg *round_trip(const proto_msg *m) {
    char err[COMMON_ERR_LEN] = "";
    uint8_t *bytes = NULL, *again = NULL;
    size_t len = 0, len2 = 0;
    int rc = proto_encode(m, &bytes, &len, err);
    if (rc != 0) {
        fail_msg("encode %s: %s", names[m->type], err);
    }
    proto_msg *d = NULL;
    rc = proto_decode(bytes, len, &d, err);
    if (rc != 0) {
        fail_msg("decode %s: %s", names[m->type], err);
    }
    assert_msg_equal(m, d);
    assert_int_equal(proto_encode(d, &again, &len2, err), 0);
    assert_int_equal(len, len2);
    assert_memory_equal(bytes, again, len);
    free(bytes);
    free(again);
    return d;
}

/* ------------------------------------------------------------------------------------------ */
/* The test's own encoder, for messages the library would not write                           */

static const char *const ack_names[] = {"stored", "duplicate", "lease_lost"};

/* Appends raw bytes to a writer (its fields are public). */
static void put_raw(proto_writer *w, const void *p, size_t n) {
    if (w->len + n > w->cap) {
        size_t cap = (w->len + n) * 2;
        uint8_t *b = realloc(w->buf, cap);
        assert_non_null(b);
        w->buf = b;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

static void put_value(proto_writer *w, const proto_msg *m, const char *key) {
    if (strcmp(key, "req") == 0) {
        proto_w_uint(w, m->req);
    } else if (strcmp(key, "worker") == 0) {
        proto_w_str(w, m->worker);
    } else if (strcmp(key, "backend") == 0) {
        proto_w_str(w, m->backend);
    } else if (strcmp(key, "memory") == 0) {
        proto_w_uint(w, m->memory);
    } else if (strcmp(key, "threads") == 0) {
        proto_w_uint(w, m->threads);
    } else if (strcmp(key, "devices") == 0) {
        proto_w_array(w, (uint32_t)m->n_devices);
        for (size_t i = 0; i < m->n_devices; i++) {
            proto_w_int(w, m->devices[i]);
        }
    } else if (strcmp(key, "models") == 0) {
        proto_w_array(w, (uint32_t)m->n_models);
        for (size_t i = 0; i < m->n_models; i++) {
            proto_w_str(w, m->models[i]);
        }
    } else if (strcmp(key, "credits") == 0) {
        proto_w_uint(w, m->credits);
    } else if (strcmp(key, "heartbeat_ms") == 0) {
        proto_w_uint(w, m->heartbeat_ms);
    } else if (strcmp(key, "lease_ms") == 0) {
        proto_w_uint(w, m->lease_ms);
    } else if (strcmp(key, "task") == 0) {
        proto_w_int(w, m->task);
    } else if (strcmp(key, "epoch") == 0) {
        proto_w_uint(w, m->epoch);
    } else if (strcmp(key, "attempt") == 0) {
        proto_w_uint(w, m->attempt);
    } else if (strcmp(key, "model_path") == 0) {
        proto_w_str(w, m->model_path);
    } else if (strcmp(key, "model_sha256") == 0) {
        proto_w_str(w, m->model_sha256);
    } else if (strcmp(key, "spec") == 0) {
        proto_w_str(w, m->spec);
    } else if (strcmp(key, "digest") == 0) {
        proto_w_str(w, m->digest);
    } else if (strcmp(key, "body") == 0) {
        proto_w_bin(w, m->body, m->body_len);
    } else if (strcmp(key, "progress") == 0) {
        proto_w_f64(w, m->progress);
    } else if (strcmp(key, "status") == 0) {
        proto_w_str(w, ack_names[m->status]);
    } else if (strcmp(key, "error") == 0) {
        proto_w_str(w, m->error);
    } else if (strcmp(key, "submission") == 0) {
        proto_w_str(w, m->submission);
    } else if (strcmp(key, "sweep") == 0) {
        proto_w_str(w, m->sweep);
    } else {
        fail_msg("no field %s", key);
    }
}

/* How build() changes the message it writes. */
typedef struct edit {
    const char *omit;    /* a key left out ("v" and "t" too) */
    const char *replace; /* a key whose value is the raw bytes below */
    const uint8_t *raw;  /* its MessagePack value */
    size_t raw_len;
    const uint8_t *extra; /* one more entry (key and value), appended */
    size_t extra_len;
    bool envelope_last; /* "v" and "t" after the fields */
} edit;

static void put_entry(proto_writer *w, const proto_msg *m, const char *key, const edit *e) {
    if (e->omit && strcmp(e->omit, key) == 0) {
        return;
    }
    proto_w_str(w, key);
    if (e->replace && strcmp(e->replace, key) == 0) {
        put_raw(w, e->raw, e->raw_len);
    } else if (strcmp(key, "v") == 0) {
        proto_w_uint(w, PROTO_VERSION);
    } else if (strcmp(key, "t") == 0) {
        proto_w_str(w, names[m->type]);
    } else {
        put_value(w, m, key);
    }
}

/* The message m written by the test's own encoder with edit e applied: a malloc'd buffer. */
static uint8_t *build(const proto_msg *m, const edit *e, size_t *len) {
    proto_writer w;
    proto_writer_init(&w);
    size_t n = 2 + n_keys(m->type) - (e->omit ? 1 : 0) + (e->extra ? 1 : 0);
    proto_w_map(&w, (uint32_t)n);
    if (!e->envelope_last) {
        put_entry(&w, m, "v", e);
        put_entry(&w, m, "t", e);
    }
    for (size_t i = 0; i < n_keys(m->type); i++) {
        put_entry(&w, m, type_keys[m->type][i], e);
    }
    if (e->envelope_last) {
        put_entry(&w, m, "t", e);
        put_entry(&w, m, "v", e);
    }
    if (e->extra) {
        put_raw(&w, e->extra, e->extra_len);
    }
    uint8_t *out;
    assert_int_equal(proto_writer_finish(&w, &out, len, NULL), 0);
    return out;
}

/* Raw MessagePack bytes as (pointer, length) arguments. */
#define RAW(...) (const uint8_t[]){__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

/* Decoding must fail with code, name `needle` in err, allocate nothing and leave out alone. */
static void expect_refused(const void *buf, size_t len, int code, const char *needle) {
    char err[COMMON_ERR_LEN] = "";
    proto_msg *m = NULL;
    alloc_reset(-1);
    int rc = proto_decode(buf, len, &m, err);
    long allocs = alloc_count;
    if (rc != code || !strstr(err, needle)) {
        print_error("expected %d naming \"%s\", got %d: %s\n", code, needle, rc, err);
    }
    assert_int_equal(rc, code);
    assert_null(m);
    assert_non_null(strstr(err, needle));
    assert_int_equal(allocs, 0);
}

/* The message of type t (full_msg) with key's value replaced by raw bytes: refused. */
static void expect_field_refused(proto_type t, const char *key, const uint8_t *raw, size_t n,
                                 int code, const char *needle) {
    proto_msg m = full_msg(t);
    edit e = {.replace = key, .raw = raw, .raw_len = n};
    size_t len;
    uint8_t *buf = build(&m, &e, &len);
    expect_refused(buf, len, code, needle);
    free(buf);
}

/* ... or accepted, returning the decoded message. */
static proto_msg *expect_field_accepted(proto_type t, const char *key, const uint8_t *raw,
                                        size_t n) {
    proto_msg m = full_msg(t);
    edit e = {.replace = key, .raw = raw, .raw_len = n};
    size_t len;
    uint8_t *buf = build(&m, &e, &len);
    char err[COMMON_ERR_LEN] = "";
    proto_msg *d = NULL;
    int rc = proto_decode(buf, len, &d, err);
    if (rc != 0) {
        fail_msg("%s.%s: %s", names[t], key, err);
    }
    free(buf);
    return d;
}

/* ------------------------------------------------------------------------------------------ */
/* Round trips                                                                                 */

static void test_type_names(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        assert_string_equal(proto_type_name((proto_type)t), names[t]);
    }
    assert_null(proto_type_name(PROTO_N_TYPES));
    assert_null(proto_type_name((proto_type)-1));
}

static void test_round_trip_full(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        proto_msg m = full_msg((proto_type)t);
        proto_msg *d = round_trip(&m);
        /* strings and bins live in the message's own memory, NUL-terminated */
        if (d->body) {
            assert_ptr_not_equal(d->body, body_bytes);
        }
        if (d->worker) {
            assert_ptr_not_equal(d->worker, m.worker);
        }
        proto_msg_free(&d);
        assert_null(d);
    }
}

static void test_round_trip_minimal(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        proto_msg m = min_msg((proto_type)t);
        proto_msg *d = round_trip(&m);
        if (t == PROTO_REPLY || t == PROTO_RESULT || t == PROTO_TASK) {
            assert_int_equal(d->body_len, 0);
            assert_non_null(d->body);
        }
        proto_msg_free(&d);
    }
    /* fields that may be empty also take NULL, and decode as "" */
    proto_msg m = min_msg(PROTO_STATUS);
    m.sweep = NULL;
    proto_msg *d = round_trip(&m);
    assert_string_equal(d->sweep, "");
    proto_msg_free(&d);
    m = min_msg(PROTO_FAIL);
    m.error = NULL;
    d = round_trip(&m);
    assert_string_equal(d->error, "");
    proto_msg_free(&d);
}

static char *filled(size_t n, char c) {
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void test_round_trip_maximal(void **state) {
    (void)state;
    char *text = filled(PROTO_MAX_TEXT, 't');
    char *spec = filled(PROTO_MAX_SPEC, 's');
    char *sub = filled(128, 'u');
    proto_msg m = full_msg(PROTO_HELLO), *d;
    m.worker = m.backend = text;
    m.memory = UINT64_MAX;
    m.threads = 65535;
    m.n_devices = PROTO_MAX_DEVICES;
    for (int i = 0; i < PROTO_MAX_DEVICES; i++) {
        m.devices[i] = i == 0 ? INT32_MAX : i * 1000;
    }
    m.n_models = PROTO_MAX_MODELS;
    for (int i = 0; i < PROTO_MAX_MODELS; i++) {
        m.models[i] = i % 2 ? SHA_A : SHA_B;
    }
    d = round_trip(&m);
    proto_msg_free(&d);

    m = full_msg(PROTO_READY);
    m.credits = 65535;
    d = round_trip(&m);
    proto_msg_free(&d);

    m = full_msg(PROTO_HEARTBEAT);
    m.task = INT64_MAX;
    m.epoch = UINT64_MAX;
    m.progress = 1.0;
    d = round_trip(&m);
    proto_msg_free(&d);

    m = full_msg(PROTO_WELCOME);
    m.heartbeat_ms = m.lease_ms = 86400000;
    d = round_trip(&m);
    proto_msg_free(&d);

    m = full_msg(PROTO_TASK);
    m.attempt = UINT32_MAX;
    m.model_path = text;
    m.spec = spec;
    d = round_trip(&m);
    proto_msg_free(&d);

    m = full_msg(PROTO_SUBMIT);
    m.req = UINT64_MAX;
    m.submission = sub;
    m.spec = spec;
    d = round_trip(&m);
    proto_msg_free(&d);

    m = full_msg(PROTO_ERROR);
    m.req = UINT64_MAX;
    m.error = text;
    d = round_trip(&m);
    proto_msg_free(&d);

    for (int s = 0; s < 3; s++) {
        m = full_msg(PROTO_ACK);
        m.status = (proto_ack_status)s;
        d = round_trip(&m);
        proto_msg_free(&d);
    }
    free(text);
    free(spec);
    free(sub);
}

static void test_large_body(void **state) {
    (void)state;
    size_t n = (size_t)3 << 20; /* past bin16 */
    uint8_t *body = malloc(n);
    assert_non_null(body);
    for (size_t i = 0; i < n; i++) {
        body[i] = (uint8_t)(i * 131 + 7);
    }
    proto_msg m = full_msg(PROTO_RESULT);
    m.body = body;
    m.body_len = n;
    proto_msg *d = round_trip(&m);
    proto_msg_free(&d);
    free(body);
}

/* ------------------------------------------------------------------------------------------ */
/* Byte-exact encodings (MessagePack written by hand from the spec)                           */

static void expect_encoding(const proto_msg *m, const uint8_t *want, size_t n) {
    char err[COMMON_ERR_LEN] = "";
    uint8_t *bytes = NULL;
    size_t len = 0;
    assert_int_equal(proto_encode(m, &bytes, &len, err), 0);
    assert_int_equal(len, n);
    assert_memory_equal(bytes, want, n);
    free(bytes);
    /* and the hand-written bytes decode to the message */
    proto_msg *d = NULL;
    assert_int_equal(proto_decode(want, n, &d, err), 0);
    assert_msg_equal(m, d);
    proto_msg_free(&d);
}

static void test_encoding_bytes(void **state) {
    (void)state;
    proto_msg m = full_msg(PROTO_READY);
    /* {"v":2,"t":"ready","credits":3} */
    expect_encoding(&m, RAW(0x83, 0xa1, 'v', 0x02, 0xa1, 't', 0xa5, 'r', 'e', 'a', 'd', 'y', 0xa7,
                            'c', 'r', 'e', 'd', 'i', 't', 's', 0x03));

    memset(&m, 0, sizeof m);
    m.type = PROTO_DROP;
    m.task = 300;
    m.epoch = 70000;
    /* {"v":2,"t":"drop","task":300 (uint16),"epoch":70000 (uint32)} */
    expect_encoding(&m, RAW(0x84, 0xa1, 'v', 0x02, 0xa1, 't', 0xa4, 'd', 'r', 'o', 'p', 0xa4, 't',
                            'a', 's', 'k', 0xcd, 0x01, 0x2c, 0xa5, 'e', 'p', 'o', 'c', 'h', 0xce,
                            0x00, 0x01, 0x11, 0x70));

    memset(&m, 0, sizeof m);
    m.type = PROTO_HEARTBEAT;
    m.task = 0;
    m.epoch = 255;
    m.progress = 0.5;
    /* {"v":2,"t":"heartbeat","task":0,"epoch":255 (uint8),"progress":0.5 (float64)} */
    expect_encoding(&m, RAW(0x85, 0xa1, 'v', 0x02, 0xa1, 't', 0xa9, 'h', 'e', 'a', 'r', 't', 'b',
                            'e', 'a', 't', 0xa4, 't', 'a', 's', 'k', 0x00, 0xa5, 'e', 'p', 'o', 'c',
                            'h', 0xcc, 0xff, 0xa8, 'p', 'r', 'o', 'g', 'r', 'e', 's', 's', 0xcb,
                            0x3f, 0xe0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00));

    memset(&m, 0, sizeof m);
    m.type = PROTO_HELLO;
    m.worker = "w";
    m.backend = "cpu";
    m.memory = (uint64_t)1 << 32;
    m.threads = 8;
    m.n_devices = 2;
    m.devices[1] = 200;
    /* devices [0, 200 (uint8)], models [], memory 2^32 (uint64) */
    expect_encoding(&m, RAW(0x88, 0xa1, 'v', 0x02, 0xa1, 't', 0xa5, 'h', 'e', 'l', 'l', 'o', 0xa6,
                            'w', 'o', 'r', 'k', 'e', 'r', 0xa1, 'w', 0xa7, 'b', 'a', 'c', 'k', 'e',
                            'n', 'd', 0xa3, 'c', 'p', 'u', 0xa6, 'm', 'e', 'm', 'o', 'r', 'y', 0xcf,
                            0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0xa7, 't', 'h', 'r',
                            'e', 'a', 'd', 's', 0x08, 0xa7, 'd', 'e', 'v', 'i', 'c', 'e', 's', 0x92,
                            0x00, 0xcc, 0xc8, 0xa6, 'm', 'o', 'd', 'e', 'l', 's', 0x90));

    memset(&m, 0, sizeof m);
    m.type = PROTO_REPLY;
    m.req = 5;
    m.body = "\x80";
    m.body_len = 1;
    /* {"v":2,"t":"reply","req":5,"body":bin8 [0x80]} */
    expect_encoding(&m, RAW(0x84, 0xa1, 'v', 0x02, 0xa1, 't', 0xa5, 'r', 'e', 'p', 'l', 'y', 0xa3,
                            'r', 'e', 'q', 0x05, 0xa4, 'b', 'o', 'd', 'y', 0xc4, 0x01, 0x80));

    memset(&m, 0, sizeof m);
    m.type = PROTO_ACK;
    m.task = 1;
    m.epoch = 2;
    m.status = PROTO_ACK_LEASE_LOST;
    expect_encoding(&m,
                    RAW(0x85, 0xa1, 'v', 0x02, 0xa1, 't', 0xa3, 'a', 'c', 'k', 0xa4, 't', 'a', 's',
                        'k', 0x01, 0xa5, 'e', 'p', 'o', 'c', 'h', 0x02, 0xa6, 's', 't', 'a', 't',
                        'u', 's', 0xaa, 'l', 'e', 'a', 's', 'e', '_', 'l', 'o', 's', 't'));
}

static void expect_written(proto_writer *w, const uint8_t *want, size_t n) {
    uint8_t *out = NULL;
    size_t len = 0;
    assert_int_equal(proto_writer_finish(w, &out, &len, NULL), 0);
    if (len != n || memcmp(out, want, n) != 0) {
        print_error("writer: %zu bytes, first %02x\n", len, len ? out[0] : 0);
    }
    assert_int_equal(len, n);
    assert_memory_equal(out, want, n);
    assert_null(w->buf);
    free(out);
}

static void test_writer_smallest_encoding(void **state) {
    (void)state;
    proto_writer w;
    proto_writer_init(&w);
    static const struct {
        uint64_t v;
        uint8_t bytes[9];
        size_t n;
    } uints[] = {
        {0, {0x00}, 1},
        {127, {0x7f}, 1},
        {128, {0xcc, 0x80}, 2},
        {255, {0xcc, 0xff}, 2},
        {256, {0xcd, 0x01, 0x00}, 3},
        {65535, {0xcd, 0xff, 0xff}, 3},
        {65536, {0xce, 0x00, 0x01, 0x00, 0x00}, 5},
        {UINT32_MAX, {0xce, 0xff, 0xff, 0xff, 0xff}, 5},
        {(uint64_t)1 << 32, {0xcf, 0, 0, 0, 1, 0, 0, 0, 0}, 9},
        {UINT64_MAX, {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
    };
    for (size_t i = 0; i < sizeof uints / sizeof uints[0]; i++) {
        proto_w_uint(&w, uints[i].v);
        expect_written(&w, uints[i].bytes, uints[i].n);
    }
    static const struct {
        int64_t v;
        uint8_t bytes[9];
        size_t n;
    } ints[] = {
        {5, {0x05}, 1},
        {200, {0xcc, 0xc8}, 2},
        {-1, {0xff}, 1},
        {-32, {0xe0}, 1},
        {-33, {0xd0, 0xdf}, 2},
        {-128, {0xd0, 0x80}, 2},
        {-129, {0xd1, 0xff, 0x7f}, 3},
        {-32768, {0xd1, 0x80, 0x00}, 3},
        {-32769, {0xd2, 0xff, 0xff, 0x7f, 0xff}, 5},
        {INT32_MIN, {0xd2, 0x80, 0x00, 0x00, 0x00}, 5},
        {(int64_t)INT32_MIN - 1, {0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff}, 9},
        {INT64_MIN, {0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0}, 9},
        {INT64_MAX, {0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 9},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        proto_w_int(&w, ints[i].v);
        expect_written(&w, ints[i].bytes, ints[i].n);
    }
    proto_w_nil(&w);
    proto_w_bool(&w, true);
    proto_w_bool(&w, false);
    proto_w_str(&w, NULL);
    proto_w_f64(&w, 1.0);
    expect_written(&w, RAW(0xc0, 0xc3, 0xc2, 0xc0, 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0));
    proto_w_map(&w, 15);
    proto_w_map(&w, 16);
    proto_w_map(&w, 65536);
    proto_w_array(&w, 0);
    proto_w_array(&w, 15);
    proto_w_array(&w, 16);
    proto_w_array(&w, 65536);
    expect_written(&w, RAW(0x8f, 0xde, 0x00, 0x10, 0xdf, 0x00, 0x01, 0x00, 0x00, 0x90, 0x9f, 0xdc,
                           0x00, 0x10, 0xdd, 0x00, 0x01, 0x00, 0x00));

    /* str: fixstr up to 31 bytes, then str8, str16, str32; bin: bin8, bin16, bin32 */
    static const struct {
        size_t n;
        uint8_t str_head[5], bin_head[5];
        size_t str_hn, bin_hn;
    } lens[] = {
        {0, {0xa0}, {0xc4, 0x00}, 1, 2},
        {31, {0xbf}, {0xc4, 0x1f}, 1, 2},
        {32, {0xd9, 0x20}, {0xc4, 0x20}, 2, 2},
        {255, {0xd9, 0xff}, {0xc4, 0xff}, 2, 2},
        {256, {0xda, 0x01, 0x00}, {0xc5, 0x01, 0x00}, 3, 3},
        {65535, {0xda, 0xff, 0xff}, {0xc5, 0xff, 0xff}, 3, 3},
        {65536, {0xdb, 0x00, 0x01, 0x00, 0x00}, {0xc6, 0x00, 0x01, 0x00, 0x00}, 5, 5},
    };
    char *s = filled(65536, 'q');
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint8_t *out;
        size_t len;
        proto_w_strn(&w, s, lens[i].n);
        assert_int_equal(proto_writer_finish(&w, &out, &len, NULL), 0);
        assert_int_equal(len, lens[i].str_hn + lens[i].n);
        assert_memory_equal(out, lens[i].str_head, lens[i].str_hn);
        assert_memory_equal(out + lens[i].str_hn, s, lens[i].n);
        free(out);
        proto_w_bin(&w, s, lens[i].n);
        assert_int_equal(proto_writer_finish(&w, &out, &len, NULL), 0);
        assert_int_equal(len, lens[i].bin_hn + lens[i].n);
        assert_memory_equal(out, lens[i].bin_head, lens[i].bin_hn);
        free(out);
    }
    free(s);
}

static void test_writer_failure(void **state) {
    (void)state;
    proto_writer w;
    proto_writer_init(&w);
    uint8_t *out = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN] = "";
    /* nothing written: an empty buffer the caller frees */
    assert_int_equal(proto_writer_finish(&w, &out, &len, err), 0);
    assert_non_null(out);
    assert_int_equal(len, 0);
    free(out);

    /* a failed allocation is recorded, later writes do nothing, finish reports it */
    proto_w_str(&w, "before");
    alloc_reset(0);
    static char big[4096];
    proto_w_bin(&w, big, sizeof big); /* past the first buffer: a realloc, refused */
    alloc_reset(-1);
    assert_true(w.failed);
    proto_w_uint(&w, 1);
    out = NULL;
    assert_int_equal(proto_writer_finish(&w, &out, &len, err), COMMON_ERR_NOMEM);
    assert_null(out);
    assert_null(w.buf);
    assert_false(w.failed);

    /* proto_writer_free after writes */
    proto_w_str(&w, "x");
    proto_writer_free(&w);
    assert_null(w.buf);
    assert_int_equal(w.len, 0);
}

/* Fails each allocation of encode and decode in turn: NOMEM, nothing leaked (ASan), nothing
 * set; then the call succeeds. */
static void test_allocation_failures(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        proto_msg m = full_msg((proto_type)t);
        char err[COMMON_ERR_LEN];
        uint8_t *bytes = NULL;
        size_t len = 0;
        long n;
        for (n = 0;; n++) {
            alloc_reset(n);
            int rc = proto_encode(&m, &bytes, &len, err);
            alloc_reset(-1);
            if (rc == 0) {
                break;
            }
            assert_int_equal(rc, COMMON_ERR_NOMEM);
            assert_null(bytes);
            assert_non_null(strstr(err, names[t]));
        }
        assert_true(n >= 1);
        proto_msg *d = NULL;
        for (n = 0;; n++) {
            alloc_reset(n);
            int rc = proto_decode(bytes, len, &d, err);
            alloc_reset(-1);
            if (rc == 0) {
                break;
            }
            assert_int_equal(rc, COMMON_ERR_NOMEM);
            assert_null(d);
        }
        assert_int_equal(n, 2); /* the storage and the message */
        proto_msg_free(&d);
        free(bytes);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Accepted variations                                                                         */

static void test_key_order_free(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        proto_msg m = full_msg((proto_type)t);
        edit e = {.envelope_last = true};
        size_t len;
        uint8_t *buf = build(&m, &e, &len);
        proto_msg *d = NULL;
        char err[COMMON_ERR_LEN] = "";
        assert_int_equal(proto_decode(buf, len, &d, err), 0);
        assert_msg_equal(&m, d);
        proto_msg_free(&d);
        free(buf);
    }
    /* "t" first, then a field, then "v" */
    const uint8_t b[] = {0x83, 0xa1, 't', 0xa5, 'r', 'e', 'a',  'd',  'y', 0xa7, 'c',
                         'r',  'e',  'd', 'i',  't', 's', 0x02, 0xa1, 'v', 0x02};
    proto_msg *d = NULL;
    assert_int_equal(proto_decode(b, sizeof b, &d, NULL), 0);
    assert_int_equal(d->type, PROTO_READY);
    assert_int_equal(d->credits, 2);
    proto_msg_free(&d);
}

/* Any integer or float encoding is read (the writer's choice is not required on input). */
static void test_other_encodings_accepted(void **state) {
    (void)state;
    proto_msg *d;
    d = expect_field_accepted(PROTO_READY, "credits", RAW(0xcf, 0, 0, 0, 0, 0, 0, 0, 3));
    assert_int_equal(d->credits, 3);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_READY, "credits", RAW(0xd0, 0x05));
    assert_int_equal(d->credits, 5);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_READY, "credits", RAW(0xd3, 0, 0, 0, 0, 0, 0, 0xff, 0xff));
    assert_int_equal(d->credits, 65535);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_HEARTBEAT, "progress", RAW(0xca, 0x3e, 0x80, 0x00, 0x00));
    assert_true(d->progress == 0.25);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_HEARTBEAT, "progress", RAW(0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0));
    assert_true(d->progress == 0.0); /* -0.0 */
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_HEARTBEAT, "task", RAW(0x00));
    assert_true(d->task == 0);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_ERROR, "req", RAW(0x00));
    assert_true(d->req == 0);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_HELLO, "memory",
                              RAW(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
    assert_true(d->memory == UINT64_MAX);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_TASK, "task",
                              RAW(0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff));
    assert_true(d->task == INT64_MAX);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_TASK, "attempt", RAW(0xce, 0xff, 0xff, 0xff, 0xff));
    assert_true(d->attempt == UINT32_MAX);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_WELCOME, "lease_ms", RAW(0xce, 0x05, 0x26, 0x5c, 0x00));
    assert_int_equal(d->lease_ms, 86400000);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_HELLO, "devices",
                              RAW(0x92, 0xce, 0x7f, 0xff, 0xff, 0xff, 0xd0, 0x07));
    assert_int_equal(d->n_devices, 2);
    assert_int_equal(d->devices[0], INT32_MAX);
    assert_int_equal(d->devices[1], 7);
    proto_msg_free(&d);
    /* str8 / str16 for a short text, bin16 for a short body, array16 for devices */
    d = expect_field_accepted(PROTO_HELLO, "worker", RAW(0xda, 0x00, 0x02, 'a', 'b'));
    assert_string_equal(d->worker, "ab");
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_REPLY, "body", RAW(0xc5, 0x00, 0x01, 0x42));
    assert_int_equal(d->body_len, 1);
    assert_int_equal(((const uint8_t *)d->body)[0], 0x42);
    proto_msg_free(&d);
    d = expect_field_accepted(PROTO_HELLO, "devices", RAW(0xdc, 0x00, 0x01, 0x04));
    assert_int_equal(d->n_devices, 1);
    assert_int_equal(d->devices[0], 4);
    proto_msg_free(&d);
    /* a map16 header for the message */
    const uint8_t b[] = {0xde, 0x00, 0x03, 0xa1, 'v',  0x02, 0xa1, 't', 0xa4,
                         'l',  'i',  's',  't',  0xa3, 'r',  'e',  'q', 0x09};
    assert_int_equal(proto_decode(b, sizeof b, &d, NULL), 0);
    assert_int_equal(d->type, PROTO_LIST);
    assert_true(d->req == 9);
    proto_msg_free(&d);
}

/* ------------------------------------------------------------------------------------------ */
/* Refusals: envelope                                                                          */

static void test_refuse_version(void **state) {
    (void)state;
    expect_field_refused(PROTO_READY, "v", RAW(0x01), COMMON_ERR_UNSUPPORTED,
                         "v: protocol version 1, this build speaks 2");
    expect_field_refused(PROTO_READY, "v", RAW(0x03), COMMON_ERR_UNSUPPORTED,
                         "v: protocol version 3, this build speaks 2");
    expect_field_refused(PROTO_READY, "v", RAW(0x00), COMMON_ERR_UNSUPPORTED,
                         "v: protocol version 0");
    expect_field_refused(PROTO_READY, "v",
                         RAW(0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
                         COMMON_ERR_UNSUPPORTED, "v: protocol version 18446744073709551615");
    expect_field_refused(PROTO_READY, "v", RAW(0xa1, '1'), COMMON_ERR_INVALID,
                         "v: expected an unsigned integer");
    expect_field_refused(PROTO_READY, "v", RAW(0xff), COMMON_ERR_INVALID, "v: -1");
    expect_field_refused(PROTO_READY, "v", RAW(0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0),
                         COMMON_ERR_INVALID, "v: expected an unsigned integer, got a float");
    proto_msg m = full_msg(PROTO_READY);
    edit e = {.omit = "v"};
    size_t len;
    uint8_t *buf = build(&m, &e, &len);
    expect_refused(buf, len, COMMON_ERR_INVALID, "v: missing");
    free(buf);
}

static void test_refuse_type(void **state) {
    (void)state;
    expect_field_refused(PROTO_READY, "t", RAW(0xa4, 'n', 'o', 'p', 'e'), COMMON_ERR_INVALID,
                         "t: unknown message type \"nope\"");
    expect_field_refused(PROTO_READY, "t", RAW(0xa0), COMMON_ERR_INVALID, "t: unknown");
    expect_field_refused(PROTO_READY, "t", RAW(0xa5, 'R', 'E', 'A', 'D', 'Y'), COMMON_ERR_INVALID,
                         "t: unknown message type");
    expect_field_refused(PROTO_READY, "t", RAW(0xa6, 'r', 'e', 'a', 'd', 'y', 0),
                         COMMON_ERR_INVALID, "t: unknown message type \"ready?\"");
    expect_field_refused(PROTO_READY, "t", RAW(0x03), COMMON_ERR_INVALID,
                         "t: expected a str, got an unsigned integer");
    expect_field_refused(PROTO_READY, "t", RAW(0xc4, 0x01, 'x'), COMMON_ERR_INVALID,
                         "t: expected a str, got a bin");
    proto_msg m = full_msg(PROTO_READY);
    edit e = {.omit = "t"};
    size_t len;
    uint8_t *buf = build(&m, &e, &len);
    expect_refused(buf, len, COMMON_ERR_INVALID, "t: missing");
    free(buf);
    /* the top level must be a map */
    expect_refused(RAW(0x93, 0x01, 0x02, 0x03), COMMON_ERR_INVALID,
                   "message: expected a map, got an array");
    expect_refused(RAW(0xa1, 'x'), COMMON_ERR_INVALID, "message: expected a map");
    expect_refused(RAW(0x80), COMMON_ERR_INVALID, "v: missing");
    expect_refused(NULL, 0, COMMON_ERR_PARSE, "message: empty");
    expect_refused("", 0, COMMON_ERR_PARSE, "message: empty");
    /* keys are strs */
    expect_refused(RAW(0x81, 0x01, 0x01), COMMON_ERR_INVALID, "message key: expected a str");
}

static void test_refuse_unknown_key(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        proto_msg m = full_msg((proto_type)t);
        edit e = {.extra = RAW(0xa5, 'e', 'x', 't', 'r', 'a', 0x01)};
        size_t len;
        uint8_t *buf = build(&m, &e, &len);
        char needle[64];
        snprintf(needle, sizeof needle, "%s: unknown key \"extra\"", names[t]);
        expect_refused(buf, len, COMMON_ERR_INVALID, needle);
        free(buf);
    }
    /* a key of another type */
    proto_msg m = full_msg(PROTO_READY);
    edit e = {.extra = RAW(0xa3, 'r', 'e', 'q', 0x01)};
    size_t len;
    uint8_t *buf = build(&m, &e, &len);
    expect_refused(buf, len, COMMON_ERR_INVALID, "ready: unknown key \"req\"");
    free(buf);
    /* a key that differs by a trailing NUL, and a long one */
    e.extra = (const uint8_t *)"\xa8"
                               "credits\0\x01";
    e.extra_len = 10;
    buf = build(&m, &e, &len);
    expect_refused(buf, len, COMMON_ERR_INVALID, "ready: unknown key \"credits?\"");
    free(buf);
    uint8_t longkey[2 + 40 + 1];
    longkey[0] = 0xd9;
    longkey[1] = 40;
    memset(longkey + 2, 'k', 40);
    longkey[42] = 0x01;
    e.extra = longkey;
    e.extra_len = sizeof longkey;
    buf = build(&m, &e, &len);
    expect_refused(buf, len, COMMON_ERR_INVALID, "message key: 40 bytes, at most 32");
    free(buf);
}

static void test_refuse_duplicate_key(void **state) {
    (void)state;
    proto_msg m = full_msg(PROTO_READY);
    edit e = {.extra = RAW(0xa7, 'c', 'r', 'e', 'd', 'i', 't', 's', 0x03)};
    size_t len;
    uint8_t *buf = build(&m, &e, &len);
    expect_refused(buf, len, COMMON_ERR_INVALID, "message: duplicate key \"credits\"");
    free(buf);
    e = (edit){.extra = RAW(0xa1, 't', 0xa5, 'r', 'e', 'a', 'd', 'y')};
    buf = build(&m, &e, &len);
    expect_refused(buf, len, COMMON_ERR_INVALID, "message: duplicate key \"t\"");
    free(buf);
    /* a second "t" naming another type is refused just the same */
    e = (edit){.extra = RAW(0xa1, 't', 0xa4, 'l', 'i', 's', 't')};
    buf = build(&m, &e, &len);
    expect_refused(buf, len, COMMON_ERR_INVALID, "message: duplicate key \"t\"");
    free(buf);
    e = (edit){.extra = RAW(0xa1, 'v', 0x01)};
    buf = build(&m, &e, &len);
    expect_refused(buf, len, COMMON_ERR_INVALID, "message: duplicate key \"v\"");
    free(buf);
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        /* the first field of each type, twice (its value re-encoded) */
        proto_msg f = full_msg((proto_type)t);
        proto_writer w;
        proto_writer_init(&w);
        proto_w_str(&w, type_keys[t][0]);
        put_value(&w, &f, type_keys[t][0]);
        uint8_t *extra;
        size_t extra_len;
        assert_int_equal(proto_writer_finish(&w, &extra, &extra_len, NULL), 0);
        edit d = {.extra = extra, .extra_len = extra_len};
        buf = build(&f, &d, &len);
        char needle[64];
        snprintf(needle, sizeof needle, "duplicate key \"%s\"", type_keys[t][0]);
        expect_refused(buf, len, COMMON_ERR_INVALID, needle);
        free(buf);
        free(extra);
    }
}

static void test_refuse_missing_key(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        for (size_t k = 0; k < n_keys((proto_type)t); k++) {
            proto_msg m = full_msg((proto_type)t);
            edit e = {.omit = type_keys[t][k]};
            size_t len;
            uint8_t *buf = build(&m, &e, &len);
            char needle[64];
            snprintf(needle, sizeof needle, "%s.%s: missing", names[t], type_keys[t][k]);
            expect_refused(buf, len, COMMON_ERR_INVALID, needle);
            free(buf);
        }
    }
}

/* A value of the wrong MessagePack type for the field `key`. */
static void wrong_value(const char *key, const uint8_t **raw, size_t *n) {
    static const uint8_t str[] = {0xa1, 'x'}, uint[] = {0x01}, map[] = {0x80},
                         bin[] = {0xc4, 0x01, 'x'};
    static const char *const ints[] = {"req",      "memory", "threads", "credits", "heartbeat_ms",
                                       "lease_ms", "task",   "epoch",   "attempt"};
    static const char *const strs[] = {"worker", "backend", "model_path", "model_sha256", "spec",
                                       "digest", "status",  "error",      "submission",   "sweep"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (strcmp(key, ints[i]) == 0) {
            *raw = str;
            *n = sizeof str;
            return;
        }
    }
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++) {
        if (strcmp(key, strs[i]) == 0) {
            *raw = bin;
            *n = sizeof bin;
            return;
        }
    }
    if (strcmp(key, "progress") == 0) {
        *raw = uint; /* an integer is not a float */
        *n = sizeof uint;
    } else if (strcmp(key, "body") == 0) {
        *raw = str;
        *n = sizeof str;
    } else {
        assert_true(strcmp(key, "devices") == 0 || strcmp(key, "models") == 0);
        *raw = map;
        *n = sizeof map;
    }
}

static void test_refuse_wrong_type(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        for (size_t k = 0; k < n_keys((proto_type)t); k++) {
            const char *key = type_keys[t][k];
            char needle[64];
            snprintf(needle, sizeof needle, "%s.%s: expected", names[t], key);
            const uint8_t *raw;
            size_t n;
            wrong_value(key, &raw, &n);
            expect_field_refused((proto_type)t, key, raw, n, COMMON_ERR_INVALID, needle);
            expect_field_refused((proto_type)t, key, RAW(0xc0), COMMON_ERR_INVALID, needle);
            expect_field_refused((proto_type)t, key, RAW(0xc3), COMMON_ERR_INVALID, needle);
        }
    }
    expect_field_refused(PROTO_TASK, "epoch", RAW(0xa1, '1'), COMMON_ERR_INVALID,
                         "task.epoch: expected an unsigned integer");
    expect_field_refused(PROTO_HELLO, "devices", RAW(0x91, 0xa1, '0'), COMMON_ERR_INVALID,
                         "hello.devices[0]: expected an integer, got a str");
    expect_field_refused(PROTO_HELLO, "devices", RAW(0x92, 0x00, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0),
                         COMMON_ERR_INVALID, "hello.devices[1]: expected an integer, got a float");
    expect_field_refused(PROTO_HELLO, "models", RAW(0x91, 0x01), COMMON_ERR_INVALID,
                         "hello.models[0]: expected a str");
    expect_field_refused(PROTO_HELLO, "devices", RAW(0x91, 0x90), COMMON_ERR_INVALID,
                         "hello.devices[0]: expected an integer, got an array");
    expect_field_refused(PROTO_ACK, "status", RAW(0xa5, 'b', 'o', 'g', 'u', 's'),
                         COMMON_ERR_INVALID, "ack.status: unknown status \"bogus\"");
    expect_field_refused(PROTO_ACK, "status", RAW(0xa6, 'S', 'T', 'O', 'R', 'E', 'D'),
                         COMMON_ERR_INVALID, "ack.status: unknown status");
}

/* ------------------------------------------------------------------------------------------ */
/* Refusals: values                                                                            */

static void test_refuse_integer_range(void **state) {
    (void)state;
    static const struct {
        proto_type t;
        const char *key;
        uint8_t raw[9];
        size_t n;
        const char *needle;
    } cases[] = {
        {PROTO_READY, "credits", {0x00}, 1, "ready.credits: 0, at least 1"},
        {PROTO_READY, "credits", {0xce, 0x00, 0x01, 0x00, 0x00}, 5, "ready.credits: 65536"},
        {PROTO_READY, "credits", {0xff}, 1, "ready.credits: -1"},
        {PROTO_HELLO, "threads", {0xce, 0x00, 0x01, 0x00, 0x00}, 5, "hello.threads: 65536"},
        {PROTO_HELLO, "threads", {0xd0, 0x80}, 2, "hello.threads: -128"},
        {PROTO_HELLO, "memory", {0xff}, 1, "hello.memory: -1"},
        {PROTO_HELLO, "devices", {0x91, 0xff}, 2, "hello.devices[0]: -1, at least 0"},
        {PROTO_HELLO, "devices", {0x91, 0xce, 0x80, 0, 0, 0}, 6, "hello.devices[0]: 2147483648"},
        {PROTO_TASK, "task", {0x00}, 1, "task.task: 0, at least 1"},
        {PROTO_TASK, "task", {0xfb}, 1, "task.task: -5"},
        {PROTO_TASK,
         "task",
         {0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0},
         9,
         "task.task: 9223372036854775808"},
        {PROTO_TASK,
         "task",
         {0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0},
         9,
         "task.task: -9223372036854775808"},
        {PROTO_HEARTBEAT, "task", {0xff}, 1, "heartbeat.task: -1, at least 0"},
        {PROTO_RESULT, "task", {0x00}, 1, "result.task: 0"},
        {PROTO_FAIL, "task", {0x00}, 1, "fail.task: 0"},
        {PROTO_ACK, "task", {0xff}, 1, "ack.task: -1, at least 0"},
        {PROTO_DROP, "task", {0x00}, 1, "drop.task: 0"},
        {PROTO_TASK, "attempt", {0x00}, 1, "task.attempt: 0, at least 1"},
        {PROTO_TASK, "attempt", {0xcf, 0, 0, 0, 1, 0, 0, 0, 0}, 9, "task.attempt: 4294967296"},
        {PROTO_TASK, "epoch", {0xd0, 0xff}, 2, "task.epoch: -1"},
        {PROTO_TASK,
         "epoch",
         {0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0},
         9,
         "task.epoch: -9223372036854775808"},
        {PROTO_WELCOME, "lease_ms", {0x00}, 1, "welcome.lease_ms: 0"},
        {PROTO_WELCOME,
         "lease_ms",
         {0xce, 0x05, 0x26, 0x5c, 0x01},
         5,
         "welcome.lease_ms: 86400001"},
        {PROTO_WELCOME, "heartbeat_ms", {0x00}, 1, "welcome.heartbeat_ms: 0"},
        {PROTO_WELCOME, "heartbeat_ms", {0xce, 0x05, 0x26, 0x5c, 0x01}, 5, "welcome.heartbeat_ms"},
        {PROTO_SUBMIT, "req", {0x00}, 1, "submit.req: 0, at least 1"},
        {PROTO_STATUS, "req", {0x00}, 1, "status.req: 0"},
        {PROTO_CANCEL, "req", {0x00}, 1, "cancel.req: 0"},
        {PROTO_LIST, "req", {0xff}, 1, "list.req: -1"},
        {PROTO_WORKERS, "req", {0x00}, 1, "workers.req: 0"},
        {PROTO_RETRY_DEAD, "req", {0x00}, 1, "retry_dead.req: 0"},
        {PROTO_REPLY, "req", {0x00}, 1, "reply.req: 0"},
        {PROTO_ERROR, "req", {0xe0}, 1, "error.req: -32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_field_refused(cases[i].t, cases[i].key, cases[i].raw, cases[i].n, COMMON_ERR_INVALID,
                             cases[i].needle);
    }
}

static void test_refuse_progress(void **state) {
    (void)state;
    expect_field_refused(PROTO_HEARTBEAT, "progress", RAW(0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0),
                         COMMON_ERR_INVALID, "heartbeat.progress: NaN");
    expect_field_refused(PROTO_HEARTBEAT, "progress", RAW(0xcb, 0xff, 0xf8, 0, 0, 0, 0, 0, 1),
                         COMMON_ERR_INVALID, "heartbeat.progress: NaN");
    expect_field_refused(PROTO_HEARTBEAT, "progress", RAW(0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0),
                         COMMON_ERR_INVALID, "heartbeat.progress: infinite");
    expect_field_refused(PROTO_HEARTBEAT, "progress", RAW(0xcb, 0xff, 0xf0, 0, 0, 0, 0, 0, 0),
                         COMMON_ERR_INVALID, "heartbeat.progress: infinite");
    expect_field_refused(PROTO_HEARTBEAT, "progress", RAW(0xca, 0x7f, 0xc0, 0x00, 0x00),
                         COMMON_ERR_INVALID, "heartbeat.progress: NaN");
    expect_field_refused(PROTO_HEARTBEAT, "progress", RAW(0xca, 0x7f, 0x80, 0x00, 0x00),
                         COMMON_ERR_INVALID, "heartbeat.progress: infinite");
    /* 1.5 and -0.1 */
    expect_field_refused(PROTO_HEARTBEAT, "progress", RAW(0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0),
                         COMMON_ERR_INVALID, "heartbeat.progress: 1.5, expected 0..1");
    expect_field_refused(PROTO_HEARTBEAT, "progress",
                         RAW(0xcb, 0xbf, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a),
                         COMMON_ERR_INVALID, "heartbeat.progress: -0.1");
    /* the smallest double above 1 */
    expect_field_refused(PROTO_HEARTBEAT, "progress", RAW(0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 1),
                         COMMON_ERR_INVALID, "heartbeat.progress");
}

/* A str value of n bytes of c (str8/16/32 as n needs). */
static uint8_t *str_value(size_t n, char c, size_t *len) {
    proto_writer w;
    proto_writer_init(&w);
    char *s = filled(n, c);
    proto_w_strn(&w, s, n);
    free(s);
    uint8_t *out;
    assert_int_equal(proto_writer_finish(&w, &out, len, NULL), 0);
    return out;
}

static void test_refuse_long_strings(void **state) {
    (void)state;
    static const struct {
        proto_type t;
        const char *key;
        size_t max;
    } cases[] = {
        {PROTO_HELLO, "worker", PROTO_MAX_TEXT}, {PROTO_HELLO, "backend", PROTO_MAX_TEXT},
        {PROTO_FAIL, "error", PROTO_MAX_TEXT},   {PROTO_TASK, "model_path", PROTO_MAX_TEXT},
        {PROTO_TASK, "spec", PROTO_MAX_SPEC},    {PROTO_SUBMIT, "submission", 128},
        {PROTO_SUBMIT, "spec", PROTO_MAX_SPEC},  {PROTO_STATUS, "sweep", PROTO_MAX_TEXT},
        {PROTO_CANCEL, "sweep", PROTO_MAX_TEXT}, {PROTO_RETRY_DEAD, "sweep", PROTO_MAX_TEXT},
        {PROTO_ERROR, "error", PROTO_MAX_TEXT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        uint8_t *raw = str_value(cases[i].max + 1, 'a', &n);
        char needle[96];
        snprintf(needle, sizeof needle, "%s.%s: %zu bytes, at most %zu", names[cases[i].t],
                 cases[i].key, cases[i].max + 1, cases[i].max);
        expect_field_refused(cases[i].t, cases[i].key, raw, n, COMMON_ERR_INVALID, needle);
        free(raw);
        /* exactly at the cap is fine */
        raw = str_value(cases[i].max, 'a', &n);
        proto_msg *d = expect_field_accepted(cases[i].t, cases[i].key, raw, n);
        proto_msg_free(&d);
        free(raw);
    }
    /* texts that may not be empty */
    static const struct {
        proto_type t;
        const char *key;
    } nonempty[] = {
        {PROTO_HELLO, "worker"}, {PROTO_HELLO, "backend"},     {PROTO_TASK, "model_path"},
        {PROTO_TASK, "spec"},    {PROTO_SUBMIT, "submission"}, {PROTO_SUBMIT, "spec"},
        {PROTO_CANCEL, "sweep"}, {PROTO_RETRY_DEAD, "sweep"},  {PROTO_ERROR, "error"}};
    for (size_t i = 0; i < sizeof nonempty / sizeof nonempty[0]; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "%s.%s: empty", names[nonempty[i].t], nonempty[i].key);
        expect_field_refused(nonempty[i].t, nonempty[i].key, RAW(0xa0), COMMON_ERR_INVALID, needle);
    }
}

static void test_refuse_nul_in_text(void **state) {
    (void)state;
    static const struct {
        proto_type t;
        const char *key;
    } cases[] = {
        {PROTO_HELLO, "worker"},     {PROTO_HELLO, "backend"}, {PROTO_FAIL, "error"},
        {PROTO_TASK, "model_path"},  {PROTO_TASK, "spec"},     {PROTO_SUBMIT, "submission"},
        {PROTO_SUBMIT, "spec"},      {PROTO_STATUS, "sweep"},  {PROTO_CANCEL, "sweep"},
        {PROTO_RETRY_DEAD, "sweep"}, {PROTO_ERROR, "error"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "%s.%s: contains a NUL byte", names[cases[i].t],
                 cases[i].key);
        expect_field_refused(cases[i].t, cases[i].key, RAW(0xa3, 'a', 0, 'b'), COMMON_ERR_INVALID,
                             needle);
        expect_field_refused(cases[i].t, cases[i].key, RAW(0xa1, 0), COMMON_ERR_INVALID, needle);
    }
}

static void test_refuse_bad_hex(void **state) {
    (void)state;
    static const char *const keys[][2] = {
        {"result", "digest"}, {"task", "model_sha256"}, {"hello", "models"}};
    static const proto_type types[] = {PROTO_RESULT, PROTO_TASK, PROTO_HELLO};
    static const char *const bad[] = {
        "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef", /* upper case */
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg", /* not hex */
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde",  /* 63 digits */
        "",
    };
    for (size_t k = 0; k < 3; k++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            uint8_t raw[1 + 2 + 64];
            size_t n = strlen(bad[i]), at = 0;
            if (types[k] == PROTO_HELLO) {
                raw[at++] = 0x91;
            }
            raw[at++] = 0xd9;
            raw[at++] = (uint8_t)n;
            memcpy(raw + at, bad[i], n);
            char needle[64];
            snprintf(needle, sizeof needle, "%s.%s%s: expected 64 lower-case hex digits",
                     keys[k][0], keys[k][1], types[k] == PROTO_HELLO ? "[0]" : "");
            expect_field_refused(types[k], keys[k][1], raw, at + n, COMMON_ERR_INVALID, needle);
        }
    }
    /* 65 digits: over the str cap */
    uint8_t raw[2 + 65];
    raw[0] = 0xd9;
    raw[1] = 65;
    memset(raw + 2, 'a', 65);
    expect_field_refused(PROTO_RESULT, "digest", raw, sizeof raw, COMMON_ERR_INVALID,
                         "result.digest: 65 bytes, at most 64");
}

static void test_refuse_too_many_entries(void **state) {
    (void)state;
    uint8_t raw[3 + PROTO_MAX_DEVICES + 1];
    size_t n = 0;
    raw[n++] = 0xdc;
    raw[n++] = 0;
    raw[n++] = PROTO_MAX_DEVICES + 1;
    for (int i = 0; i <= PROTO_MAX_DEVICES; i++) {
        raw[n++] = (uint8_t)(i % 100);
    }
    expect_field_refused(PROTO_HELLO, "devices", raw, n, COMMON_ERR_INVALID,
                         "hello.devices: 65 entries, at most 64");
    /* 64 is fine */
    raw[2] = PROTO_MAX_DEVICES;
    proto_msg *d = expect_field_accepted(PROTO_HELLO, "devices", raw, n - 1);
    assert_int_equal(d->n_devices, 64);
    assert_int_equal(d->devices[63], 63);
    proto_msg_free(&d);

    uint8_t models[3 + 17 * 66];
    n = 0;
    models[n++] = 0xdc;
    models[n++] = 0;
    models[n++] = PROTO_MAX_MODELS + 1;
    for (int i = 0; i <= PROTO_MAX_MODELS; i++) { /* str8 of 64 bytes each */
        models[n++] = 0xd9;
        models[n++] = 64;
        memcpy(models + n, SHA_A, 64);
        n += 64;
    }
    expect_field_refused(PROTO_HELLO, "models", models, n, COMMON_ERR_INVALID,
                         "hello.models: 17 entries, at most 16");
    models[2] = PROTO_MAX_MODELS;
    d = expect_field_accepted(PROTO_HELLO, "models", models, n - 66);
    assert_int_equal(d->n_models, 16);
    assert_string_equal(d->models[15], SHA_A);
    proto_msg_free(&d);

    /* the top-level map: at most 24 entries */
    uint8_t map[5 + 25 * 3];
    n = 0;
    map[n++] = 0xdf;
    map[n++] = 0;
    map[n++] = 0;
    map[n++] = 0;
    map[n++] = 25;
    for (int i = 0; i < 25; i++) {
        map[n++] = 0xa1;
        map[n++] = (uint8_t)('A' + i);
        map[n++] = 0x00;
    }
    expect_refused(map, n, COMMON_ERR_INVALID, "message: 25 entries, at most 24");
}

static void test_refuse_trailing_bytes(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        proto_msg m = full_msg((proto_type)t);
        uint8_t *bytes;
        size_t len;
        assert_int_equal(proto_encode(&m, &bytes, &len, NULL), 0);
        uint8_t *more = malloc(len + 3);
        assert_non_null(more);
        memcpy(more, bytes, len);
        memcpy(more + len, "\x01\x02\x03", 3);
        expect_refused(more, len + 1, COMMON_ERR_PARSE, "message: 1 bytes after the map");
        expect_refused(more, len + 3, COMMON_ERR_PARSE, "message: 3 bytes after the map");
        assert_int_equal(proto_peek_req(more, len + 3), 0);
        free(more);
        free(bytes);
    }
}

/* Every prefix of every message is refused as malformed, without allocating. */
static void test_refuse_truncated(void **state) {
    (void)state;
    for (int pass = 0; pass < 2; pass++) {
        for (int t = 0; t < PROTO_N_TYPES; t++) {
            proto_msg m = pass ? min_msg((proto_type)t) : full_msg((proto_type)t);
            uint8_t *bytes;
            size_t len;
            assert_int_equal(proto_encode(&m, &bytes, &len, NULL), 0);
            for (size_t n = 0; n < len; n++) {
                /* a copy of exactly n bytes, so that ASan sees any read past them */
                uint8_t *cut = malloc(n ? n : 1);
                assert_non_null(cut);
                memcpy(cut, bytes, n);
                expect_refused(cut, n, COMMON_ERR_PARSE, n ? "" : "message: empty");
                assert_int_equal(proto_peek_req(cut, n), 0);
                free(cut);
            }
            free(bytes);
        }
    }
}

/* Declared counts and lengths that the bytes cannot hold: refused before anything is sized
 * from them (nothing is allocated at all). */
static void test_refuse_count_amplifiers(void **state) {
    (void)state;
    /* at the top level */
    expect_refused(RAW(0xdd, 0x05, 0xf5, 0xe1, 0x00), COMMON_ERR_INVALID, "expected a map");
    expect_refused(RAW(0xdf, 0x05, 0xf5, 0xe1, 0x00), COMMON_ERR_PARSE,
                   "message: a map of 100000000 entries in 0 bytes");
    expect_refused(RAW(0xdf, 0xff, 0xff, 0xff, 0xff), COMMON_ERR_PARSE, "message: a map of");
    expect_refused(RAW(0xde, 0xff, 0xff, 0xa1, 'v'), COMMON_ERR_PARSE, "message: a map of 65535");
    expect_refused(RAW(0x8f, 0xa1, 'v', 0x01), COMMON_ERR_PARSE, "message: a map of 15 entries");
    /* as a field's value, where the field's schema takes an array, a str or a bin */
    static const struct {
        const char *key;
        uint8_t raw[6];
        size_t n;
        const char *needle;
    } cases[] = {
        {"devices", {0xdd, 0x05, 0xf5, 0xe1, 0x00}, 5, "devices: an array of 100000000 entries"},
        {"devices", {0xdd, 0xff, 0xff, 0xff, 0xff}, 5, "devices: an array of 4294967295 entries"},
        {"models", {0xdc, 0xff, 0xff}, 3, "models: an array of 65535 entries"},
        {"models", {0xdf, 0xff, 0xff, 0xff, 0xff}, 5, "models: a map of 4294967295 entries"},
        {"worker", {0xdb, 0xff, 0xff, 0xff, 0xff}, 5, "worker: a str of 4294967295 bytes"},
        {"worker", {0xda, 0xff, 0xff, 'a'}, 4, "worker: a str of 65535 bytes"},
        {"backend", {0xc6, 0xff, 0xff, 0xff, 0xff}, 5, "backend: a bin of 4294967295 bytes"},
        {"devices", {0x91, 0xdd, 0xff, 0xff, 0xff, 0xff}, 6, "devices: an array of 4294967295"},
        {"devices", {0x91, 0xdb, 0xff, 0xff, 0xff, 0xff}, 6, "devices: a str of 4294967295"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_field_refused(PROTO_HELLO, cases[i].key, cases[i].raw, cases[i].n, COMMON_ERR_PARSE,
                             cases[i].needle);
    }
    expect_field_refused(PROTO_RESULT, "body", RAW(0xc6, 0xff, 0xff, 0xff, 0xff), COMMON_ERR_PARSE,
                         "body: a bin of 4294967295 bytes");
    expect_field_refused(PROTO_TASK, "spec", RAW(0xdb, 0x7f, 0xff, 0xff, 0xff), COMMON_ERR_PARSE,
                         "spec: a str of 2147483647 bytes");
    /* a huge key */
    expect_refused(RAW(0x81, 0xdb, 0xff, 0xff, 0xff, 0xff, 0x00), COMMON_ERR_PARSE,
                   "message key: a str of 4294967295 bytes");
    /* nesting past the schema's depth: 31 nested array32 headers of one element each */
    uint8_t deep[3 + 8 + 31 * 5 + 1];
    size_t n = 0;
    memcpy(deep + n,
           "\x81\xa7"
           "devices",
           9);
    n += 9;
    for (int i = 0; i < 31; i++) {
        memcpy(deep + n, "\xdd\x00\x00\x00\x01", 5);
        n += 5;
    }
    deep[n++] = 0x00;
    expect_refused(deep, n, COMMON_ERR_INVALID, "devices: nested deeper");
    /* two levels inside a value are skipped fine (and then refused by the schema) */
    expect_field_refused(PROTO_HELLO, "devices", RAW(0x91, 0x81, 0x00, 0x00), COMMON_ERR_INVALID,
                         "hello.devices[0]: expected an integer, got a map");
    expect_field_refused(PROTO_HELLO, "devices", RAW(0x91, 0x91, 0x91, 0x00), COMMON_ERR_INVALID,
                         "devices: nested deeper");
}

static void test_refuse_c1_and_ext(void **state) {
    (void)state;
    expect_refused(RAW(0xc1), COMMON_ERR_PARSE, "message: byte 0xc1 is not MessagePack");
    expect_refused(RAW(0x81, 0xc1, 0x00), COMMON_ERR_PARSE, "message key: byte 0xc1");
    expect_field_refused(PROTO_READY, "credits", RAW(0xc1), COMMON_ERR_PARSE, "credits: byte 0xc1");
    expect_field_refused(PROTO_HELLO, "devices", RAW(0x91, 0xc1), COMMON_ERR_PARSE,
                         "devices: byte 0xc1");
    static const struct {
        uint8_t raw[8];
        size_t n;
    } ext[] = {
        {{0xc7, 0x01, 0x05, 0xaa}, 4},             /* ext8 */
        {{0xc8, 0x00, 0x01, 0x05, 0xaa}, 5},       /* ext16 */
        {{0xc9, 0, 0, 0, 1, 0x05, 0xaa}, 7},       /* ext32 */
        {{0xd4, 0x05, 0xaa}, 3},                   /* fixext1 */
        {{0xd5, 0x05, 0xaa, 0xaa}, 4},             /* fixext2 */
        {{0xd6, 0x05, 0, 0, 0, 0}, 6},             /* fixext4 */
        {{0xd7, 0x05, 0, 0, 0, 0, 0, 0}, 8},       /* fixext8 (truncated: refused on the type) */
        {{0xd8, 0x05}, 2},                         /* fixext16 */
        {{0xc7, 0xff, 0x05}, 3},                   /* ext8 with more bytes than are left */
        {{0xc9, 0xff, 0xff, 0xff, 0xff, 0x05}, 6}, /* ext32 amplifier */
    };
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++) {
        expect_refused(ext[i].raw, ext[i].n, COMMON_ERR_PARSE, "message: MessagePack ext type");
        expect_field_refused(PROTO_READY, "credits", ext[i].raw, ext[i].n, COMMON_ERR_PARSE,
                             "credits: MessagePack ext type");
        expect_field_refused(PROTO_REPLY, "body", ext[i].raw, ext[i].n, COMMON_ERR_PARSE,
                             "body: MessagePack ext type");
    }
}

static void test_refuse_oversized_message(void **state) {
    (void)state;
    /* calloc is lazy: the pages are never touched, because the length is checked first */
    uint8_t *big = calloc(PROTO_MAX_MESSAGE + 1, 1);
    assert_non_null(big);
    char err[COMMON_ERR_LEN] = "";
    proto_msg *m = NULL;
    alloc_reset(-1);
    assert_int_equal(proto_decode(big, PROTO_MAX_MESSAGE + 1, &m, err), COMMON_ERR_INVALID);
    assert_int_equal(alloc_count, 0);
    assert_null(m);
    assert_non_null(strstr(err, "message: 268435457 bytes, at most 268435456"));
    assert_int_equal(proto_peek_req(big, PROTO_MAX_MESSAGE + 1), 0);

    /* encoding: a body over the cap is refused before anything is written */
    proto_msg r = full_msg(PROTO_RESULT);
    r.body = big;
    r.body_len = PROTO_MAX_MESSAGE + 1;
    uint8_t *out = NULL;
    size_t len = 0;
    alloc_reset(-1);
    assert_int_equal(proto_encode(&r, &out, &len, err), COMMON_ERR_INVALID);
    assert_int_equal(alloc_count, 0);
    assert_null(out);
    assert_non_null(strstr(err, "result.body: 268435457 bytes, at most 268435456"));
    free(big);
}

/* ------------------------------------------------------------------------------------------ */
/* Encoder refusals                                                                            */

static void expect_encode_refused(const proto_msg *m, const char *needle) {
    char err[COMMON_ERR_LEN] = "";
    uint8_t *out = NULL;
    size_t len = 0;
    alloc_reset(-1);
    int rc = proto_encode(m, &out, &len, err);
    if (rc != COMMON_ERR_INVALID || !strstr(err, needle)) {
        print_error("expected INVALID naming \"%s\", got %d: %s\n", needle, rc, err);
    }
    assert_int_equal(rc, COMMON_ERR_INVALID);
    assert_null(out);
    assert_int_equal(alloc_count, 0);
    assert_non_null(strstr(err, needle));
}

static void test_encode_refusals(void **state) {
    (void)state;
    proto_msg m = full_msg(PROTO_READY);
    m.type = PROTO_N_TYPES;
    char unknown[64];
    snprintf(unknown, sizeof unknown, "message: unknown type %d", (int)PROTO_N_TYPES);
    expect_encode_refused(&m, unknown);
    m.type = (proto_type)-1;
    expect_encode_refused(&m, "message: unknown type -1");

    /* NULL where a string is required */
    static const struct {
        proto_type t;
        const char *key;
    } required[] = {
        {PROTO_HELLO, "worker"},      {PROTO_HELLO, "backend"},     {PROTO_RESULT, "digest"},
        {PROTO_TASK, "model_path"},   {PROTO_TASK, "model_sha256"}, {PROTO_TASK, "spec"},
        {PROTO_SUBMIT, "submission"}, {PROTO_SUBMIT, "spec"},       {PROTO_CANCEL, "sweep"},
        {PROTO_RETRY_DEAD, "sweep"},  {PROTO_ERROR, "error"},
    };
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        m = full_msg(required[i].t);
        const char **slot = NULL;
        const char *key = required[i].key;
        if (strcmp(key, "worker") == 0) {
            slot = &m.worker;
        } else if (strcmp(key, "backend") == 0) {
            slot = &m.backend;
        } else if (strcmp(key, "digest") == 0) {
            slot = &m.digest;
        } else if (strcmp(key, "model_path") == 0) {
            slot = &m.model_path;
        } else if (strcmp(key, "model_sha256") == 0) {
            slot = &m.model_sha256;
        } else if (strcmp(key, "spec") == 0) {
            slot = &m.spec;
        } else if (strcmp(key, "submission") == 0) {
            slot = &m.submission;
        } else if (strcmp(key, "sweep") == 0) {
            slot = &m.sweep;
        } else {
            slot = &m.error;
        }
        char needle[64];
        *slot = NULL;
        snprintf(needle, sizeof needle, "%s.%s: missing (NULL)", names[required[i].t], key);
        expect_encode_refused(&m, needle);
        if (strcmp(key, "digest") != 0 && strcmp(key, "model_sha256") != 0) {
            *slot = "";
            snprintf(needle, sizeof needle, "%s.%s: empty", names[required[i].t], key);
            expect_encode_refused(&m, needle);
        }
    }

    char *text = filled(PROTO_MAX_TEXT + 1, 'x');
    m = full_msg(PROTO_HELLO);
    m.worker = text;
    expect_encode_refused(&m, "hello.worker: more than 4096 bytes");
    m = full_msg(PROTO_SUBMIT);
    m.submission = text + PROTO_MAX_TEXT - 128; /* 129 bytes */
    expect_encode_refused(&m, "submit.submission: more than 128 bytes");
    free(text);

    m = full_msg(PROTO_HELLO);
    m.threads = 65536;
    expect_encode_refused(&m, "hello.threads: 65536, expected 0..65535");
    m = full_msg(PROTO_HELLO);
    m.n_devices = PROTO_MAX_DEVICES + 1;
    expect_encode_refused(&m, "hello.devices: 65 entries, at most 64");
    m = full_msg(PROTO_HELLO);
    m.devices[1] = -1;
    expect_encode_refused(&m, "hello.devices[1]: -1, at least 0");
    m = full_msg(PROTO_HELLO);
    m.n_models = PROTO_MAX_MODELS + 1;
    expect_encode_refused(&m, "hello.models: 17 entries, at most 16");
    m = full_msg(PROTO_HELLO);
    m.models[1] = NULL;
    expect_encode_refused(&m, "hello.models[1]: missing (NULL)");
    m = full_msg(PROTO_HELLO);
    m.models[0] = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    expect_encode_refused(&m, "hello.models[0]: expected 64 lower-case hex digits");
    m = full_msg(PROTO_HELLO);
    m.models[0] = SHA_A "0";
    expect_encode_refused(&m, "hello.models[0]: expected 64 lower-case hex digits");
    m = full_msg(PROTO_READY);
    m.credits = 0;
    expect_encode_refused(&m, "ready.credits: 0, expected 1..65535");
    m.credits = 65536;
    expect_encode_refused(&m, "ready.credits: 65536");
    m = full_msg(PROTO_HEARTBEAT);
    m.task = -1;
    expect_encode_refused(&m, "heartbeat.task: -1, expected 0..");
    m.task = 1;
    m.progress = NAN;
    expect_encode_refused(&m, "heartbeat.progress");
    m.progress = INFINITY;
    expect_encode_refused(&m, "heartbeat.progress");
    m.progress = 1.0000001;
    expect_encode_refused(&m, "heartbeat.progress");
    m.progress = -0.5;
    expect_encode_refused(&m, "heartbeat.progress");
    m = full_msg(PROTO_TASK);
    m.task = 0;
    expect_encode_refused(&m, "task.task: 0, expected 1..");
    m = full_msg(PROTO_TASK);
    m.attempt = 0;
    expect_encode_refused(&m, "task.attempt: 0");
    m = full_msg(PROTO_TASK);
    m.body = NULL;
    expect_encode_refused(&m, "task.body: NULL with 8 bytes");
    m = full_msg(PROTO_WELCOME);
    m.lease_ms = 86400001;
    expect_encode_refused(&m, "welcome.lease_ms: 86400001, expected 1..86400000");
    m.lease_ms = 0;
    expect_encode_refused(&m, "welcome.lease_ms: 0");
    m = full_msg(PROTO_ACK);
    m.status = (proto_ack_status)3;
    expect_encode_refused(&m, "ack.status: unknown status 3");
    m = full_msg(PROTO_SUBMIT);
    m.req = 0;
    expect_encode_refused(&m, "submit.req: 0, expected 1..");
    m = full_msg(PROTO_REPLY);
    m.req = 0;
    expect_encode_refused(&m, "reply.req: 0");
}

/* ------------------------------------------------------------------------------------------ */
/* Reader primitives                                                                           */

static void test_reader_primitives(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    proto_reader r;
    uint64_t u;
    int64_t i;
    double f;
    bool b;
    const uint8_t ints[] = {0xd1, 0xff, 0x7f, 0xd2, 0x80, 0, 0, 0, 0xe0, 0xcd, 0x01, 0x00};
    proto_reader_init(&r, ints, sizeof ints);
    assert_int_equal(proto_r_int(&r, INT64_MIN, INT64_MAX, &i, "a", err), 0);
    assert_true(i == -129);
    assert_int_equal(proto_r_int(&r, INT64_MIN, INT64_MAX, &i, "b", err), 0);
    assert_true(i == INT32_MIN);
    assert_int_equal(proto_r_int(&r, -32, -32, &i, "c", err), 0);
    assert_true(i == -32);
    assert_int_equal(proto_r_uint(&r, 255, &u, "d", err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "d: 256, at most 255"));
    assert_int_equal(proto_r_uint(&r, 256, &u, "d", err), 0);
    assert_true(u == 256);
    assert_int_equal(proto_r_end(&r, err), 0);
    assert_int_equal(proto_r_uint(&r, 1, &u, "e", err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "e: truncated"));

    /* a header cut short */
    proto_reader_init(&r, RAW(0xcd, 0x01));
    assert_int_equal(proto_r_uint(&r, UINT64_MAX, &u, "f", err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "f: truncated"));
    assert_int_equal(r.off, 0);

    const uint8_t mixed[] = {0xc0, 0xc3, 0xc2, 0xca, 0x3f, 0x80, 0, 0, 0x01, 0xa1, 'x'};
    proto_reader_init(&r, mixed, sizeof mixed);
    assert_true(proto_r_nil(&r));
    assert_false(proto_r_nil(&r));
    assert_int_equal(proto_r_bool(&r, &b, "g", err), 0);
    assert_true(b);
    assert_int_equal(proto_r_bool(&r, &b, "g", err), 0);
    assert_false(b);
    assert_int_equal(proto_r_f64(&r, &f, "h", err), 0);
    assert_true(f == 1.0);
    assert_int_equal(proto_r_f64(&r, &f, "i", err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "i: expected a float, got an unsigned integer"));
    assert_int_equal(proto_r_uint(&r, 1, &u, "i", err), 0);
    assert_int_equal(proto_r_bool(&r, &b, "j", err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "j: expected a bool, got a str"));
    assert_int_equal(proto_r_end(&r, err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "2 bytes after the map"));
    const char *s;
    size_t n;
    assert_int_equal(proto_r_str(&r, 0, &s, &n, "k", err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "k: 1 bytes, at most 0"));
    assert_int_equal(proto_r_str(&r, 1, &s, &n, "k", err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(s[0], 'x');
    assert_false(proto_r_nil(&r));

    /* counts against the bytes left: a map needs two bytes an entry, an array one */
    uint32_t cnt;
    proto_reader_init(&r, RAW(0x82, 0x01, 0x02, 0x03));
    assert_int_equal(proto_r_map(&r, 10, &cnt, "m", err), COMMON_ERR_PARSE);
    proto_reader_init(&r, RAW(0x82, 0x01, 0x02, 0x03, 0x04));
    assert_int_equal(proto_r_map(&r, 1, &cnt, "m", err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "m: 2 entries, at most 1"));
    assert_int_equal(proto_r_map(&r, 2, &cnt, "m", err), 0);
    assert_int_equal(cnt, 2);
    proto_reader_init(&r, RAW(0x93, 0x01, 0x02));
    assert_int_equal(proto_r_array(&r, 10, &cnt, "a", err), COMMON_ERR_PARSE);
    proto_reader_init(&r, RAW(0x93, 0x01, 0x02, 0x03));
    assert_int_equal(proto_r_array(&r, 10, &cnt, "a", err), 0);
    assert_int_equal(cnt, 3);
    const void *p;
    proto_reader_init(&r, RAW(0xc4, 0x03, 0x01, 0x02));
    assert_int_equal(proto_r_bin(&r, 10, &p, &n, "b", err), COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "b: a bin of 3 bytes, 2 left"));
    proto_reader_init(&r, RAW(0xc4, 0x02, 0x01, 0x02));
    assert_int_equal(proto_r_bin(&r, 10, &p, &n, "b", err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(proto_r_end(&r, err), 0);
}

/* ------------------------------------------------------------------------------------------ */
/* proto_peek_req                                                                              */

static void test_peek_req(void **state) {
    (void)state;
    for (int t = 0; t < PROTO_N_TYPES; t++) {
        proto_msg m = full_msg((proto_type)t);
        uint8_t *bytes;
        size_t len;
        assert_int_equal(proto_encode(&m, &bytes, &len, NULL), 0);
        assert_true(proto_peek_req(bytes, len) == m.req);
        free(bytes);
    }
    proto_msg m = full_msg(PROTO_SUBMIT);
    m.req = UINT64_MAX;
    size_t len;
    edit e = {.envelope_last = true};
    uint8_t *buf = build(&m, &e, &len);
    assert_true(proto_peek_req(buf, len) == UINT64_MAX);
    free(buf);

    /* messages that fail to decode, but whose req can be read */
    m = full_msg(PROTO_SUBMIT);
    e = (edit){.extra = RAW(0xa5, 'e', 'x', 't', 'r', 'a', 0x92, 0x81, 0x01, 0x02, 0x03)};
    buf = build(&m, &e, &len);
    assert_int_not_equal(proto_decode(buf, len, &(proto_msg *){NULL}, NULL), 0);
    assert_true(proto_peek_req(buf, len) == 7);
    free(buf);
    e = (edit){.replace = "t", .raw = RAW(0xa3, 'z', 'z', 'z')};
    buf = build(&m, &e, &len);
    assert_true(proto_peek_req(buf, len) == 7);
    free(buf);
    e = (edit){.replace = "v", .raw = RAW(0x09)};
    buf = build(&m, &e, &len);
    assert_true(proto_peek_req(buf, len) == 7);
    free(buf);
    assert_true(proto_peek_req(RAW(0x81, 0xa3, 'r', 'e', 'q', 0xd0, 0x05)) == 5);

    /* nothing readable: 0 */
    e = (edit){.replace = "req", .raw = RAW(0xff)};
    buf = build(&m, &e, &len);
    assert_true(proto_peek_req(buf, len) == 0);
    free(buf);
    e = (edit){.replace = "req", .raw = RAW(0xa1, '7')};
    buf = build(&m, &e, &len);
    assert_true(proto_peek_req(buf, len) == 0);
    free(buf);
    e = (edit){.extra = RAW(0xa3, 'r', 'e', 'q', 0x08)};
    buf = build(&m, &e, &len);
    assert_true(proto_peek_req(buf, len) == 0); /* a duplicate */
    free(buf);
    assert_true(proto_peek_req(NULL, 0) == 0);
    assert_true(proto_peek_req(RAW(0x00)) == 0);
    assert_true(proto_peek_req(RAW(0xc1)) == 0);
    assert_true(proto_peek_req(RAW(0x91, 0x05)) == 0);
    assert_true(proto_peek_req(RAW(0xdf, 0xff, 0xff, 0xff, 0xff)) == 0);
    assert_true(proto_peek_req(RAW(0x81, 0xa3, 'r', 'e', 'q', 0xcd, 0x01)) == 0);
    assert_true(proto_peek_req(RAW(0x81, 0xa3, 'r', 'e', 'q', 0x05, 0x00)) == 0);
    assert_true(proto_peek_req(RAW(0x82, 0xa3, 'r', 'e', 'q', 0x05, 0xa1, 'x', 0xc7, 0, 0)) == 0);
    assert_true(proto_peek_req(RAW(0x82, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0xa3, 'r', 'e',
                                   'q', 0x05)) == 0);
    assert_true(proto_peek_req(RAW(0x82, 0x01, 0x02, 0xa3, 'r', 'e', 'q', 0x05)) == 0);
    assert_true(proto_peek_req(RAW(0x81, 0xa3, 'r', 'e', 'x', 0x05)) == 0);
    /* garbage */
    uint8_t noise[512];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof noise; i++) {
        x = x * 1103515245u + 12345u;
        noise[i] = (uint8_t)(x >> 16);
    }
    for (size_t n = 0; n <= sizeof noise; n += 7) {
        proto_msg *d = NULL;
        assert_true(proto_decode(noise, n, &d, NULL) < 0);
        assert_null(d);
        (void)proto_peek_req(noise, n);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Bundles                                                                                     */

/* The messages of frame[len], decoded in order into out[cap]; returns how many, or the negative
 * code of the first refusal (of the bundle, or of proto_frame_next), with err filled. */
static int frame_messages(const uint8_t *frame, size_t len, proto_msg **out, size_t cap,
                          char *err) {
    proto_frame_iter it;
    int rc = proto_frame_begin(&it, frame, len, err);
    if (rc != 0) {
        return rc;
    }
    const void *msg = NULL;
    size_t msg_len = 0, n = 0;
    while ((rc = proto_frame_next(&it, &msg, &msg_len, err)) > 0) {
        assert_true(n < cap);
        assert_int_equal(proto_decode(msg, msg_len, &out[n], err), 0);
        n++;
    }
    return rc < 0 ? rc : (int)n;
}

static void test_bundle_round_trip(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    proto_msg in[3] = {
        {.type = PROTO_ACK, .task = 7, .epoch = 1, .status = PROTO_ACK_STORED},
        {.type = PROTO_READY, .credits = 2},
        {.type = PROTO_DROP, .task = 9, .epoch = 4},
    };
    uint8_t *enc[3];
    size_t lens[3];
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(proto_encode(&in[i], &enc[i], &lens[i], err), 0);
    }
    /* one message: the frame is the message itself */
    uint8_t *frame = NULL;
    size_t len = 0;
    assert_int_equal(proto_bundle((const uint8_t *const *)enc, lens, 1, &frame, &len, err), 0);
    assert_int_equal(len, lens[0]);
    assert_memory_equal(frame, enc[0], len);
    proto_msg *out[4] = {0};
    assert_int_equal(frame_messages(frame, len, out, 4, err), 1);
    assert_int_equal(out[0]->type, PROTO_ACK);
    proto_msg_free(&out[0]);
    free(frame);
    /* three: an array of three bins, taken in order */
    assert_int_equal(proto_bundle((const uint8_t *const *)enc, lens, 3, &frame, &len, err), 0);
    assert_int_equal(frame[0], 0x93);
    assert_int_equal(len, 1 + lens[0] + lens[1] + lens[2] + 3 * 2);
    assert_int_equal(frame_messages(frame, len, out, 4, err), 3);
    assert_int_equal(out[0]->type, PROTO_ACK);
    assert_int_equal(out[0]->task, 7);
    assert_int_equal(out[1]->type, PROTO_READY);
    assert_int_equal(out[1]->credits, 2);
    assert_int_equal(out[2]->type, PROTO_DROP);
    assert_int_equal(out[2]->epoch, 4);
    for (size_t i = 0; i < 3; i++) {
        proto_msg_free(&out[i]);
    }
    /* a bundle is not a message: proto_decode alone refuses it */
    proto_msg *d = NULL;
    assert_int_not_equal(proto_decode(frame, len, &d, err), 0);
    assert_null(d);
    /* a bundle inside a bundle is an element that is not a message */
    const uint8_t *nested[2] = {frame, enc[1]};
    size_t nested_lens[2] = {len, lens[1]};
    uint8_t *outer = NULL;
    size_t outer_len = 0;
    assert_int_equal(proto_bundle(nested, nested_lens, 2, &outer, &outer_len, err), 0);
    proto_frame_iter it;
    assert_int_equal(proto_frame_begin(&it, outer, outer_len, err), 0);
    const void *msg = NULL;
    size_t msg_len = 0;
    assert_int_equal(proto_frame_next(&it, &msg, &msg_len, err), 1);
    assert_int_not_equal(proto_decode(msg, msg_len, &d, err), 0);
    free(outer);
    free(frame);
    /* no messages, or more than a bundle holds */
    assert_int_equal(proto_bundle((const uint8_t *const *)enc, lens, 0, &frame, &len, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(
        proto_bundle((const uint8_t *const *)enc, lens, PROTO_MAX_BUNDLE + 1, &frame, &len, err),
        COMMON_ERR_INVALID);
    for (size_t i = 0; i < 3; i++) {
        free(enc[i]);
    }
}

/* Reading frame's messages must end in a refusal with code, naming needle. */
static void expect_bundle_refused(const uint8_t *frame, size_t len, int code, const char *needle) {
    char err[COMMON_ERR_LEN] = "";
    proto_frame_iter it;
    int rc = proto_frame_begin(&it, frame, len, err);
    const void *msg = NULL;
    size_t msg_len = 0;
    while (rc == 0 && (rc = proto_frame_next(&it, &msg, &msg_len, err)) > 0) {
        rc = 0;
    }
    if (rc != code || strstr(err, needle) == NULL) {
        print_error("expected %d naming \"%s\", got %d: %s\n", code, needle, rc, err);
    }
    assert_int_equal(rc, code);
    assert_non_null(strstr(err, needle));
}

static void test_bundle_refusals(void **state) {
    (void)state;
    /* READY {"v":2,"t":"ready","credits":3} as a bin8 element */
#define READY_BIN                                                                                  \
    0xc4, 0x15, 0x83, 0xa1, 'v', 0x02, 0xa1, 't', 0xa5, 'r', 'e', 'a', 'd', 'y', 0xa7, 'c', 'r',   \
        'e', 'd', 'i', 't', 's', 0x03
    /* a bundle of one, or of none: a message goes alone */
    expect_bundle_refused(RAW(0x91, READY_BIN), COMMON_ERR_INVALID, "bundle: 1 messages");
    expect_bundle_refused(RAW(0x90), COMMON_ERR_INVALID, "bundle: 0 messages");
    /* a count amplifier: 4 billion elements declared in 5 bytes */
    expect_bundle_refused(RAW(0xdd, 0xff, 0xff, 0xff, 0xff), COMMON_ERR_PARSE,
                          "bundle: an array of 4294967295 entries in 0 bytes");
    /* more than PROTO_MAX_BUNDLE, with the bytes to back the count */
    size_t n = PROTO_MAX_BUNDLE + 1, len = 3 + 2 * n;
    uint8_t *big = calloc(len, 1);
    big[0] = 0xdc;
    big[1] = (uint8_t)(n >> 8);
    big[2] = (uint8_t)n;
    for (size_t i = 0; i < n; i++) {
        big[3 + 2 * i] = 0xc4; /* empty bins */
    }
    expect_bundle_refused(big, len, COMMON_ERR_INVALID, "bundle");
    free(big);
    /* more elements declared than the bytes hold */
    expect_bundle_refused(RAW(0x93, READY_BIN, READY_BIN), COMMON_ERR_PARSE, "bundle element");
    /* an element that is not a bin */
    expect_bundle_refused(RAW(0x92, READY_BIN, 0xa1, 'x'), COMMON_ERR_INVALID, "bundle element");
    /* a bin that overruns the frame */
    expect_bundle_refused(RAW(0x92, READY_BIN, 0xc4, 0x40, 0x00), COMMON_ERR_PARSE,
                          "bundle element");
    /* bytes after the last element */
    expect_bundle_refused(RAW(0x92, READY_BIN, READY_BIN, 0x00), COMMON_ERR_PARSE,
                          "bundle: bytes after its last message");
#undef READY_BIN
}

static void test_msg_free_null(void **state) {
    (void)state;
    proto_msg_free(NULL);
    proto_msg *m = NULL;
    proto_msg_free(&m);
    assert_null(m);
    proto_writer_free(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_round_trip_full),
        cmocka_unit_test(test_round_trip_minimal),
        cmocka_unit_test(test_round_trip_maximal),
        cmocka_unit_test(test_large_body),
        cmocka_unit_test(test_encoding_bytes),
        cmocka_unit_test(test_writer_smallest_encoding),
        cmocka_unit_test(test_writer_failure),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_key_order_free),
        cmocka_unit_test(test_other_encodings_accepted),
        cmocka_unit_test(test_refuse_version),
        cmocka_unit_test(test_refuse_type),
        cmocka_unit_test(test_refuse_unknown_key),
        cmocka_unit_test(test_refuse_duplicate_key),
        cmocka_unit_test(test_refuse_missing_key),
        cmocka_unit_test(test_refuse_wrong_type),
        cmocka_unit_test(test_refuse_integer_range),
        cmocka_unit_test(test_refuse_progress),
        cmocka_unit_test(test_refuse_long_strings),
        cmocka_unit_test(test_refuse_nul_in_text),
        cmocka_unit_test(test_refuse_bad_hex),
        cmocka_unit_test(test_refuse_too_many_entries),
        cmocka_unit_test(test_refuse_trailing_bytes),
        cmocka_unit_test(test_refuse_truncated),
        cmocka_unit_test(test_refuse_count_amplifiers),
        cmocka_unit_test(test_refuse_c1_and_ext),
        cmocka_unit_test(test_refuse_oversized_message),
        cmocka_unit_test(test_encode_refusals),
        cmocka_unit_test(test_reader_primitives),
        cmocka_unit_test(test_peek_req),
        cmocka_unit_test(test_msg_free_null),
        cmocka_unit_test(test_bundle_round_trip),
        cmocka_unit_test(test_bundle_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
