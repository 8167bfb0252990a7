/*
 * proto/reply: the codecs of REPLY bodies against their contract (proto/reply.h). Every reply
 * kind round trips with every member set, at its smallest and its largest values, and a few
 * bodies are compared byte for byte with MessagePack written out by hand. The refusals are
 * made by msgpack-c, an independent implementation: a valid body is unpacked into its object
 * tree, one entry of one map is dropped, doubled, renamed or given another value, and the tree
 * is packed again; so every key of every map is checked for "missing", and every field for a
 * value of the wrong type. Every refusal must name the field and allocate nothing (the link
 * wraps malloc and realloc to count); every prefix of every body is refused; declared counts
 * far beyond the bytes, or beyond the caps, are refused before any memory is sized from them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "proto/reply.h"

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
/* Replies to encode                                                                           */

static const proto_type kinds[] = {PROTO_SUBMIT,  PROTO_STATUS, PROTO_LIST,
                                   PROTO_WORKERS, PROTO_CANCEL, PROTO_RETRY_DEAD};
#define N_KINDS (sizeof kinds / sizeof kinds[0])

static const proto_sweep_info sweeps[] = {
    {"openings", 1, 10, 2, 28, 1, false, 123456, 1714564800},
    {"endgames-b", 2, 0, 0, 5, 1, true, 100, 1714638600},
    {"s", INT64_MAX, UINT64_MAX, UINT64_MAX - 1, 1ULL << 40, 7, false, UINT64_MAX, INT64_MAX},
};

static const proto_dead_task dead[] = {
    {"openings", "patch/0017", 3, "worker w1: out of memory\nat layer 3"},
    {"", "agg/2", UINT32_MAX, ""},
};

static proto_worker_info workers[2];

static void init_workers(void) {
    memset(workers, 0, sizeof workers);
    workers[0] = (proto_worker_info){.id = "w1",
                                     .backend = "cuda",
                                     .n_devices = 2,
                                     .devices = {0, 1},
                                     .threads = 16,
                                     .connected = true,
                                     .task = 42,
                                     .task_key = "patch/0003",
                                     .sweep = "openings",
                                     .tasks_done = 12,
                                     .last_seen_ms = 400};
    workers[1] = (proto_worker_info){.id = "w2",
                                     .backend = "cpu",
                                     .threads = 65535,
                                     .connected = false,
                                     .task = 0,
                                     .task_key = "",
                                     .sweep = "",
                                     .tasks_done = UINT64_MAX,
                                     .last_seen_ms = 2000};
}

/* Every member of a reply of kind t set, to values that differ from member to member. */
static proto_reply full_reply(proto_type t) {
    init_workers();
    proto_reply r;
    memset(&r, 0, sizeof r);
    r.request = t;
    switch (t) {
    case PROTO_SUBMIT:
        r.sweep_id = 77;
        r.sweep = "openings";
        r.existed = true;
        r.n_tasks = 256;
        break;
    case PROTO_STATUS:
        r.n_dead = 2;
        r.dead = dead;
        r.n_sweeps = 3;
        r.sweeps = sweeps;
        break;
    case PROTO_LIST:
        r.n_sweeps = 3;
        r.sweeps = sweeps;
        break;
    case PROTO_WORKERS:
        r.n_workers = 2;
        r.workers = workers;
        break;
    case PROTO_CANCEL:
    case PROTO_RETRY_DEAD:
        r.sweep = "endgames-b";
        r.n_changed = t == PROTO_CANCEL ? 4 : UINT64_MAX;
        break;
    default:
        fail_msg("not a reply kind");
    }
    return r;
}

static void assert_sweep_equal(const proto_sweep_info *a, const proto_sweep_info *b) {
    assert_string_equal(a->name, b->name);
    assert_true(a->id == b->id);
    assert_true(a->pending == b->pending && a->leased == b->leased);
    assert_true(a->done == b->done && a->dead == b->dead);
    assert_true(a->cancelled == b->cancelled);
    assert_true(a->rows == b->rows && a->created_at == b->created_at);
}

static void assert_reply_equal(const proto_reply *a, const proto_reply *b) {
    assert_int_equal(a->request, b->request);
    assert_true(a->sweep_id == b->sweep_id);
    if (a->sweep || b->sweep) {
        assert_non_null(a->sweep);
        assert_non_null(b->sweep);
        assert_string_equal(a->sweep, b->sweep);
    }
    assert_true(a->existed == b->existed);
    assert_true(a->n_tasks == b->n_tasks && a->n_changed == b->n_changed);
    assert_int_equal(a->n_sweeps, b->n_sweeps);
    for (size_t i = 0; i < a->n_sweeps; i++) {
        assert_sweep_equal(&a->sweeps[i], &b->sweeps[i]);
    }
    assert_int_equal(a->n_dead, b->n_dead);
    for (size_t i = 0; i < a->n_dead; i++) {
        assert_string_equal(a->dead[i].sweep, b->dead[i].sweep);
        assert_string_equal(a->dead[i].key, b->dead[i].key);
        assert_int_equal(a->dead[i].attempts, b->dead[i].attempts);
        assert_string_equal(a->dead[i].error, b->dead[i].error);
    }
    assert_int_equal(a->n_workers, b->n_workers);
    for (size_t i = 0; i < a->n_workers; i++) {
        const proto_worker_info *x = &a->workers[i], *y = &b->workers[i];
        assert_string_equal(x->id, y->id);
        assert_string_equal(x->backend, y->backend);
        assert_int_equal(x->n_devices, y->n_devices);
        for (size_t d = 0; d < x->n_devices; d++) {
            assert_int_equal(x->devices[d], y->devices[d]);
        }
        assert_int_equal(x->threads, y->threads);
        assert_true(x->connected == y->connected);
        assert_true(x->task == y->task);
        assert_string_equal(x->task_key, y->task_key);
        assert_string_equal(x->sweep, y->sweep);
        assert_true(x->tasks_done == y->tasks_done && x->last_seen_ms == y->last_seen_ms);
    }
}

static void encode_ok(const proto_reply *r, uint8_t **buf, size_t *len) {
    char err[COMMON_ERR_LEN] = "";
    int rc = proto_reply_encode(r, buf, len, err);
    if (rc != 0) {
        fail_msg("proto_reply_encode: %s", err);
    }
}

/* Decodes, counting the allocations the call makes. */
static int decode_counted(proto_type t, const uint8_t *buf, size_t len, proto_reply **out,
                          char *err, long *allocs) {
    alloc_reset(-1);
    int rc = proto_reply_decode(t, buf, len, out, err);
    *allocs = alloc_count;
    return rc;
}

static void round_trip(const proto_reply *r) {
    uint8_t *buf = NULL;
    size_t len = 0;
    encode_ok(r, &buf, &len);
    proto_reply *got = NULL;
    char err[COMMON_ERR_LEN] = "";
    long allocs = 0;
    int rc = decode_counted(r->request, buf, len, &got, err, &allocs);
    if (rc != 0) {
        fail_msg("proto_reply_decode(%s): %s", proto_type_name(r->request), err);
    }
    assert_int_equal(allocs, 1); /* one block: the reply, its arrays, its strings */
    assert_reply_equal(got, r);
    proto_reply_free(&got);
    assert_null(got);
    free(buf);
}

/* Decoding buf as the reply to t is refused with code and a message that contains needle, and
 * allocates nothing. */
static void assert_refused(proto_type t, const void *buf, size_t len, int code,
                           const char *needle) {
    proto_reply *got = NULL;
    char err[COMMON_ERR_LEN] = "";
    long allocs = 0;
    int rc = decode_counted(t, buf, len, &got, err, &allocs);
    if (rc != code) {
        fail_msg("%s reply: expected %d, got %d (%s)", proto_type_name(t), code, rc, err);
    }
    assert_null(got);
    assert_int_equal(allocs, 0);
    if (needle && !strstr(err, needle)) {
        fail_msg("error \"%s\" does not contain \"%s\"", err, needle);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Edits of a valid body, made with msgpack-c                                                  */

typedef enum edit_op { E_NONE, E_DROP, E_DUP, E_SET, E_ADD } edit_op;

static msgpack_object v_strn(const char *s, size_t n) {
    msgpack_object o;
    memset(&o, 0, sizeof o);
    o.type = MSGPACK_OBJECT_STR;
    o.via.str.size = (uint32_t)n;
    o.via.str.ptr = s;
    return o;
}

static msgpack_object v_str(const char *s) {
    return v_strn(s, strlen(s));
}

static msgpack_object v_uint(uint64_t v) {
    msgpack_object o;
    memset(&o, 0, sizeof o);
    o.type = MSGPACK_OBJECT_POSITIVE_INTEGER;
    o.via.u64 = v;
    return o;
}

static msgpack_object v_neg(int64_t v) {
    msgpack_object o;
    memset(&o, 0, sizeof o);
    o.type = MSGPACK_OBJECT_NEGATIVE_INTEGER;
    o.via.i64 = v;
    return o;
}

static msgpack_object v_f64(double v) {
    msgpack_object o;
    memset(&o, 0, sizeof o);
    o.type = MSGPACK_OBJECT_FLOAT64;
    o.via.f64 = v;
    return o;
}

static msgpack_object v_of(msgpack_object_type type) {
    msgpack_object o;
    memset(&o, 0, sizeof o);
    o.type = type; /* nil, or an empty array or map */
    return o;
}

static msgpack_object v_bool(bool b) {
    msgpack_object o = v_of(MSGPACK_OBJECT_BOOLEAN);
    o.via.boolean = b;
    return o;
}

static bool key_is(const msgpack_object *k, const char *key) {
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
           memcmp(k->via.str.ptr, key, k->via.str.size) == 0;
}

/* The body of r, with one edit of the map at `list`[index] (list NULL: the body itself): the
 * entry `key` dropped, doubled (a copy at the end) or given val, or a new entry key: val added.
 * *out: free. */
static void edited(const proto_reply *r, const char *list, uint32_t index, const char *key,
                   edit_op op, msgpack_object val, uint8_t **out, size_t *out_len) {
    uint8_t *buf = NULL;
    size_t len = 0;
    encode_ok(r, &buf, &len);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&up, (const char *)buf, len, &off),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    msgpack_object *map = &up.data;
    if (list) {
        msgpack_object *arr = NULL;
        for (uint32_t i = 0; i < map->via.map.size; i++) {
            if (key_is(&map->via.map.ptr[i].key, list)) {
                arr = &map->via.map.ptr[i].val;
            }
        }
        assert_non_null(arr);
        assert_int_equal(arr->type, MSGPACK_OBJECT_ARRAY);
        assert_true(index < arr->via.array.size);
        map = &arr->via.array.ptr[index];
    }
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    uint32_t n = map->via.map.size, k = n;
    for (uint32_t i = 0; i < n; i++) {
        if (key_is(&map->via.map.ptr[i].key, key)) {
            k = i;
        }
    }
    assert_true(op == E_ADD || op == E_NONE || k < n);
    msgpack_object_kv *kv = map->via.map.ptr;
    switch (op) {
    case E_NONE:
        break;
    case E_DROP:
        memmove(&kv[k], &kv[k + 1], (n - k - 1) * sizeof kv[0]);
        map->via.map.size--;
        break;
    case E_SET:
        kv[k].val = val;
        break;
    case E_DUP:
    case E_ADD: {
        msgpack_object_kv *more = msgpack_zone_malloc(up.zone, (n + 1) * sizeof *more);
        assert_non_null(more);
        memcpy(more, kv, n * sizeof *more);
        if (op == E_DUP) {
            more[n] = kv[k];
        } else {
            more[n].key = v_str(key);
            more[n].val = val;
        }
        map->via.map.ptr = more;
        map->via.map.size = n + 1;
        break;
    }
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    assert_int_equal(msgpack_pack_object(&pk, up.data), 0);
    *out = malloc(sb.size);
    assert_non_null(*out);
    memcpy(*out, sb.data, sb.size);
    *out_len = sb.size;
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&up);
    free(buf);
}

static void assert_edit_refused(proto_type t, const char *list, uint32_t index, const char *key,
                                edit_op op, msgpack_object val, int code, const char *needle) {
    proto_reply r = full_reply(t);
    uint8_t *buf = NULL;
    size_t len = 0;
    edited(&r, list, index, key, op, val, &buf, &len);
    assert_refused(t, buf, len, code, needle);
    free(buf);
}

/* The keys of the maps of each kind: its body, and the items of its lists. */
static const char *const body_keys[][5] = {
    {"sweep_id", "sweep", "existed", "tasks"}, /* submit */
    {"sweeps", "dead"},                        /* status */
    {"sweeps"},                                /* list */
    {"workers"},                               /* workers */
    {"sweep", "changed"},                      /* cancel */
    {"sweep", "changed"},                      /* retry_dead */
};
static const char *const sweep_keys[] = {"name", "leased", "pending",   "done",      "dead",
                                         "id",   "rows",   "cancelled", "created_at"};
static const char *const dead_keys[] = {"sweep", "key", "attempts", "error"};
static const char *const worker_keys[] = {"id",         "backend",     "devices",  "threads",
                                          "connected",  "task",        "task_key", "sweep",
                                          "tasks_done", "last_seen_ms"};

typedef struct item_map {
    proto_type kind;
    const char *list;
    const char *const *keys;
    size_t n_keys;
} item_map;

static const item_map item_maps[] = {
    {PROTO_LIST, "sweeps", sweep_keys, 9},
    {PROTO_STATUS, "sweeps", sweep_keys, 9},
    {PROTO_STATUS, "dead", dead_keys, 4},
    {PROTO_WORKERS, "workers", worker_keys, 10},
};
#define N_ITEM_MAPS (sizeof item_maps / sizeof item_maps[0])

/* ------------------------------------------------------------------------------------------ */
/* Round trips                                                                                 */

static void test_round_trip_every_kind(void **state) {
    (void)state;
    for (size_t i = 0; i < N_KINDS; i++) {
        proto_reply r = full_reply(kinds[i]);
        round_trip(&r);
    }
}

static void test_round_trip_smallest(void **state) {
    (void)state;
    /* empty lists, zero counts, "" wherever a text may be empty */
    for (size_t i = 0; i < N_KINDS; i++) {
        proto_reply r;
        memset(&r, 0, sizeof r);
        r.request = kinds[i];
        if (kinds[i] == PROTO_SUBMIT) {
            r.sweep_id = 1;
        }
        if (kinds[i] == PROTO_SUBMIT || kinds[i] == PROTO_CANCEL || kinds[i] == PROTO_RETRY_DEAD) {
            r.sweep = "x";
        }
        round_trip(&r);
    }
    proto_worker_info w;
    memset(&w, 0, sizeof w);
    w.id = "w";
    w.backend = "c";
    w.task_key = "";
    w.sweep = "";
    proto_dead_task d = {"", "k", 0, ""};
    proto_sweep_info s = {"n", 1, 0, 0, 0, 0, false, 0, 0};
    proto_reply r = {.request = PROTO_STATUS, .n_sweeps = 1, .sweeps = &s, .n_dead = 1, .dead = &d};
    round_trip(&r);
    proto_reply rw = {.request = PROTO_WORKERS, .n_workers = 1, .workers = &w};
    round_trip(&rw);
}

static void test_round_trip_largest(void **state) {
    (void)state;
    static char text[PROTO_MAX_TEXT + 1];
    memset(text, 'a', PROTO_MAX_TEXT);
    text[PROTO_MAX_TEXT] = '\0';
    proto_worker_info w;
    memset(&w, 0, sizeof w);
    w.id = text;
    w.backend = text;
    w.n_devices = PROTO_MAX_DEVICES;
    for (size_t d = 0; d < PROTO_MAX_DEVICES; d++) {
        w.devices[d] = d % 2 ? INT32_MAX : (int32_t)d;
    }
    w.threads = 65535;
    w.task = INT64_MAX;
    w.task_key = text;
    w.sweep = text;
    w.tasks_done = UINT64_MAX;
    w.last_seen_ms = UINT64_MAX;
    proto_reply rw = {.request = PROTO_WORKERS, .n_workers = 1, .workers = &w};
    round_trip(&rw);
    proto_reply rs = {.request = PROTO_SUBMIT,
                      .sweep_id = INT64_MAX,
                      .sweep = text,
                      .existed = false,
                      .n_tasks = UINT64_MAX};
    round_trip(&rs);

    /* PROTO_MAX_ITEMS sweeps round trip; one more is refused by the encoder */
    size_t n = PROTO_MAX_ITEMS + 1;
    proto_sweep_info *many = malloc(n * sizeof *many);
    assert_non_null(many);
    for (size_t i = 0; i < n; i++) {
        many[i] = sweeps[i % 3];
    }
    proto_reply rl = {.request = PROTO_LIST, .n_sweeps = PROTO_MAX_ITEMS, .sweeps = many};
    round_trip(&rl);
    rl.n_sweeps = n;
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN] = "";
    assert_int_equal(proto_reply_encode(&rl, &buf, &len, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "list reply.sweeps: 100001 entries"));
    free(many);
}

/* msgpack-c reads a body back and packs it again (perhaps in other encodings): proto decodes
 * the same reply. Keys in any order are the same reply too. */
static void test_msgpack_c_repacked(void **state) {
    (void)state;
    for (size_t i = 0; i < N_KINDS; i++) {
        proto_reply r = full_reply(kinds[i]);
        uint8_t *buf = NULL;
        size_t len = 0;
        edited(&r, NULL, 0, "", E_NONE, v_of(MSGPACK_OBJECT_NIL), &buf, &len);
        proto_reply *got = NULL;
        char err[COMMON_ERR_LEN] = "";
        if (proto_reply_decode(kinds[i], buf, len, &got, err) != 0) {
            fail_msg("%s: %s", proto_type_name(kinds[i]), err);
        }
        assert_reply_equal(got, &r);
        proto_reply_free(&got);
        free(buf);
    }
    /* a worker map written by hand, its keys in reverse order, the devices as uint16 */
    static const uint8_t rev[] = {
        0x81, 0xa7, 'w', 'o', 'r',  'k',  'e',  'r',  's',  0x91, 0x8a, 0xac, 'l',  'a', 's', 't',
        '_',  's',  'e', 'e', 'n',  '_',  'm',  's',  0x05, 0xaa, 't',  'a',  's',  'k', 's', '_',
        'd',  'o',  'n', 'e', 0x00, 0xa5, 's',  'w',  'e',  'e',  'p',  0xa0, 0xa8, 't', 'a', 's',
        'k',  '_',  'k', 'e', 'y',  0xa0, 0xa4, 't',  'a',  's',  'k',  0x00, 0xa9, 'c', 'o', 'n',
        'n',  'e',  'c', 't', 'e',  'd',  0xc2, 0xa7, 't',  'h',  'r',  'e',  'a',  'd', 's', 0x01,
        0xa7, 'd',  'e', 'v', 'i',  'c',  'e',  's',  0x91, 0xcd, 0x01, 0x00, 0xa7, 'b', 'a', 'c',
        'k',  'e',  'n', 'd', 0xa3, 'c',  'p',  'u',  0xa2, 'i',  'd',  0xa1, 'w'};
    proto_reply *got = NULL;
    char err[COMMON_ERR_LEN] = "";
    if (proto_reply_decode(PROTO_WORKERS, rev, sizeof rev, &got, err) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(got->n_workers, 1);
    assert_string_equal(got->workers[0].id, "w");
    assert_int_equal(got->workers[0].n_devices, 1);
    assert_int_equal(got->workers[0].devices[0], 256);
    assert_int_equal(got->workers[0].last_seen_ms, 5);
    proto_reply_free(&got);
}

static void test_encoding_bytes(void **state) {
    (void)state;
    /* {"sweep": "s", "changed": 3} */
    static const uint8_t cancel[] = {0x82, 0xa5, 's', 'w', 'e', 'e', 'p', 0xa1, 's',
                                     0xa7, 'c',  'h', 'a', 'n', 'g', 'e', 'd',  0x03};
    /* {"sweep_id": 1, "sweep": "s", "existed": true, "tasks": 256} */
    static const uint8_t submit[] = {0x84, 0xa8, 's', 'w', 'e',  'e',  'p', '_',  'i',  'd',
                                     0x01, 0xa5, 's', 'w', 'e',  'e',  'p', 0xa1, 's',  0xa7,
                                     'e',  'x',  'i', 's', 't',  'e',  'd', 0xc3, 0xa5, 't',
                                     'a',  's',  'k', 's', 0xcd, 0x01, 0x00};
    /* {"sweeps": [], "dead": []} */
    static const uint8_t status[] = {0x82, 0xa6, 's', 'w', 'e', 'e', 'p', 's',
                                     0x90, 0xa4, 'd', 'e', 'a', 'd', 0x90};
    proto_reply rc = {.request = PROTO_CANCEL, .sweep = "s", .n_changed = 3};
    proto_reply rs = {
        .request = PROTO_SUBMIT, .sweep_id = 1, .sweep = "s", .existed = true, .n_tasks = 256};
    proto_reply rt = {.request = PROTO_STATUS};
    const struct {
        const proto_reply *r;
        const uint8_t *want;
        size_t n;
    } cases[] = {
        {&rc, cancel, sizeof cancel}, {&rs, submit, sizeof submit}, {&rt, status, sizeof status}};
    for (size_t i = 0; i < 3; i++) {
        uint8_t *buf = NULL;
        size_t len = 0;
        encode_ok(cases[i].r, &buf, &len);
        assert_int_equal(len, cases[i].n);
        assert_memory_equal(buf, cases[i].want, len);
        free(buf);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Allocation failures                                                                         */

static void test_allocation_failures(void **state) {
    (void)state;
    for (size_t i = 0; i < N_KINDS; i++) {
        proto_reply r = full_reply(kinds[i]);
        uint8_t *buf = NULL;
        size_t len = 0;
        encode_ok(&r, &buf, &len);
        proto_reply *got = NULL;
        char err[COMMON_ERR_LEN] = "";
        alloc_reset(0);
        assert_int_equal(proto_reply_decode(kinds[i], buf, len, &got, err), COMMON_ERR_NOMEM);
        assert_null(got);
        assert_non_null(strstr(err, "out of memory"));
        /* the encoder: each of its allocations refused in turn, until it needs no more */
        bool done = false;
        for (long k = 0; !done && k < 64; k++) {
            uint8_t *b = NULL;
            size_t n = 0;
            alloc_reset(k);
            int rc = proto_reply_encode(&r, &b, &n, err);
            if (rc == 0) {
                assert_int_equal(n, len);
                assert_memory_equal(b, buf, len);
                free(b);
                done = true;
            } else {
                assert_int_equal(rc, COMMON_ERR_NOMEM);
                assert_null(b);
            }
        }
        alloc_reset(-1);
        assert_true(done);
        free(buf);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Refusals                                                                                    */

static void test_refuse_truncated(void **state) {
    (void)state;
    for (size_t i = 0; i < N_KINDS; i++) {
        proto_reply r = full_reply(kinds[i]);
        uint8_t *buf = NULL;
        size_t len = 0;
        encode_ok(&r, &buf, &len);
        for (size_t cut = 0; cut < len; cut++) {
            /* a copy of exactly cut bytes, so that ASan sees any read past them */
            uint8_t *part = malloc(cut ? cut : 1);
            assert_non_null(part);
            memcpy(part, buf, cut);
            assert_refused(kinds[i], cut ? part : NULL, cut, COMMON_ERR_PARSE, NULL);
            free(part);
        }
        free(buf);
    }
}

static void test_refuse_count_amplifiers(void **state) {
    (void)state;
    /* a 5-byte array header that declares 4 billion sweeps, and one that declares 65536 */
    static const uint8_t huge[] = {0x81, 0xa6, 's',  'w',  'e',  'e', 'p',
                                   's',  0xdd, 0xff, 0xff, 0xff, 0xff};
    assert_refused(PROTO_LIST, huge, sizeof huge, COMMON_ERR_PARSE, "list reply.sweeps");
    static const uint8_t big16[] = {0x81, 0xa6, 's', 'w', 'e', 'e', 'p', 's', 0xdc, 0xff, 0xff};
    assert_refused(PROTO_LIST, big16, sizeof big16, COMMON_ERR_PARSE, "entries in 0 bytes");
    /* a body map that declares 4 billion entries */
    static const uint8_t map[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0};
    assert_refused(PROTO_STATUS, map, sizeof map, COMMON_ERR_PARSE, "status reply");
    /* a sweep name that declares 4 GiB */
    static const uint8_t name[] = {0x81, 0xa6, 's', 'w', 'e', 'e',  'p',  's',  0x91, 0x81,
                                   0xa4, 'n',  'a', 'm', 'e', 0xdb, 0xff, 0xff, 0xff, 0xff};
    assert_refused(PROTO_LIST, name, sizeof name, COMMON_ERR_PARSE, "list reply.sweeps[0].name");

    /* counts the bytes do pay for: PROTO_MAX_ITEMS + 1 entries are over the cap, and
     * PROTO_MAX_ITEMS entries that are not maps are refused at the first, with no memory
     * sized from the count (a naive decoder would reserve PROTO_MAX_ITEMS sweeps here) */
    for (uint32_t n = PROTO_MAX_ITEMS; n <= PROTO_MAX_ITEMS + 1; n++) {
        size_t len = 8 + 5 + n;
        uint8_t *b = malloc(len);
        assert_non_null(b);
        memcpy(b, huge, 8);
        b[8] = 0xdd;
        b[9] = (uint8_t)(n >> 24);
        b[10] = (uint8_t)(n >> 16);
        b[11] = (uint8_t)(n >> 8);
        b[12] = (uint8_t)n;
        memset(b + 13, 0xc0, n);
        if (n > PROTO_MAX_ITEMS) {
            assert_refused(PROTO_LIST, b, len, COMMON_ERR_INVALID, "at most 100000");
        } else {
            assert_refused(PROTO_LIST, b, len, COMMON_ERR_INVALID,
                           "list reply.sweeps[0]: expected a map, got nil");
        }
        free(b);
    }
    /* 65 devices (each byte present) are over PROTO_MAX_DEVICES */
    proto_reply r = full_reply(PROTO_WORKERS);
    uint8_t *buf = NULL;
    size_t len = 0;
    static msgpack_object many[PROTO_MAX_DEVICES + 1];
    for (size_t i = 0; i <= PROTO_MAX_DEVICES; i++) {
        many[i] = v_uint(i);
    }
    msgpack_object devs = v_of(MSGPACK_OBJECT_ARRAY);
    devs.via.array.size = PROTO_MAX_DEVICES + 1;
    devs.via.array.ptr = many;
    edited(&r, "workers", 1, "devices", E_SET, devs, &buf, &len);
    assert_refused(PROTO_WORKERS, buf, len, COMMON_ERR_INVALID,
                   "workers reply.workers[1].devices: 65 entries, at most 64");
    free(buf);
}

static void test_refuse_unknown_key(void **state) {
    (void)state;
    msgpack_object one = v_uint(1);
    for (size_t i = 0; i < N_KINDS; i++) {
        char needle[64];
        snprintf(needle, sizeof needle, "%s reply: unknown key \"bogus\"",
                 proto_type_name(kinds[i]));
        assert_edit_refused(kinds[i], NULL, 0, "bogus", E_ADD, one, COMMON_ERR_INVALID, needle);
    }
    for (size_t m = 0; m < N_ITEM_MAPS; m++) {
        char needle[96];
        snprintf(needle, sizeof needle, "%s reply.%s[1]: unknown key \"bogus\"",
                 proto_type_name(item_maps[m].kind), item_maps[m].list);
        assert_edit_refused(item_maps[m].kind, item_maps[m].list, 1, "bogus", E_ADD, one,
                            COMMON_ERR_INVALID, needle);
    }
    /* a key of another reply kind is as unknown as any */
    assert_edit_refused(PROTO_CANCEL, NULL, 0, "tasks", E_ADD, one, COMMON_ERR_INVALID,
                        "unknown key \"tasks\"");
    /* a key that is not a str, and one longer than any key */
    static const uint8_t int_key[] = {0x81, 0x01, 0x02};
    assert_refused(PROTO_LIST, int_key, sizeof int_key, COMMON_ERR_INVALID, "expected a str");
    static char long_key[80];
    memset(long_key, 'k', sizeof long_key - 1);
    assert_edit_refused(PROTO_LIST, NULL, 0, long_key, E_ADD, one, COMMON_ERR_INVALID,
                        "at most 32");
}

static void test_refuse_duplicate_key(void **state) {
    (void)state;
    msgpack_object unused = v_of(MSGPACK_OBJECT_NIL);
    for (size_t i = 0; i < N_KINDS; i++) {
        for (size_t k = 0; k < 5 && body_keys[i][k]; k++) {
            char needle[96];
            snprintf(needle, sizeof needle, "duplicate key \"%s\"", body_keys[i][k]);
            assert_edit_refused(kinds[i], NULL, 0, body_keys[i][k], E_DUP, unused,
                                COMMON_ERR_INVALID, needle);
        }
    }
    for (size_t m = 0; m < N_ITEM_MAPS; m++) {
        for (size_t k = 0; k < item_maps[m].n_keys; k++) {
            char needle[96];
            snprintf(needle, sizeof needle, "%s[0]: duplicate key \"%s\"", item_maps[m].list,
                     item_maps[m].keys[k]);
            assert_edit_refused(item_maps[m].kind, item_maps[m].list, 0, item_maps[m].keys[k],
                                E_DUP, unused, COMMON_ERR_INVALID, needle);
        }
    }
}

static void test_refuse_missing_key(void **state) {
    (void)state;
    msgpack_object unused = v_of(MSGPACK_OBJECT_NIL);
    for (size_t i = 0; i < N_KINDS; i++) {
        for (size_t k = 0; k < 5 && body_keys[i][k]; k++) {
            char needle[96];
            snprintf(needle, sizeof needle, "%s reply.%s: missing", proto_type_name(kinds[i]),
                     body_keys[i][k]);
            assert_edit_refused(kinds[i], NULL, 0, body_keys[i][k], E_DROP, unused,
                                COMMON_ERR_INVALID, needle);
        }
    }
    for (size_t m = 0; m < N_ITEM_MAPS; m++) {
        for (size_t k = 0; k < item_maps[m].n_keys; k++) {
            char needle[96];
            snprintf(needle, sizeof needle, "%s[1].%s: missing", item_maps[m].list,
                     item_maps[m].keys[k]);
            assert_edit_refused(item_maps[m].kind, item_maps[m].list, 1, item_maps[m].keys[k],
                                E_DROP, unused, COMMON_ERR_INVALID, needle);
        }
    }
    static const uint8_t empty_map[] = {0x80};
    assert_refused(PROTO_SUBMIT, empty_map, 1, COMMON_ERR_INVALID,
                   "submit reply.sweep_id: missing");
}

/* A value of another MessagePack type than the field's. */
static msgpack_object wrong_for(const char *key) {
    static const char *const texts[] = {"name", "sweep",   "key",     "error",
                                        "id",   "backend", "task_key"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        if (strcmp(key, texts[i]) == 0) {
            return v_uint(1);
        }
    }
    if (strcmp(key, "sweeps") == 0 || strcmp(key, "dead") == 0 || strcmp(key, "workers") == 0 ||
        strcmp(key, "devices") == 0) {
        return v_of(MSGPACK_OBJECT_MAP);
    }
    return v_str("1"); /* integers and bools */
}

static void test_refuse_wrong_type(void **state) {
    (void)state;
    for (size_t i = 0; i < N_KINDS; i++) {
        for (size_t k = 0; k < 5 && body_keys[i][k]; k++) {
            const char *key = body_keys[i][k];
            assert_edit_refused(kinds[i], NULL, 0, key, E_SET, wrong_for(key), COMMON_ERR_INVALID,
                                "expected");
        }
    }
    for (size_t m = 0; m < N_ITEM_MAPS; m++) {
        for (size_t k = 0; k < item_maps[m].n_keys; k++) {
            const char *key = item_maps[m].keys[k];
            msgpack_object v = wrong_for(key);
            if (strcmp(item_maps[m].list, "sweeps") == 0 && strcmp(key, "id") == 0) {
                v = v_str("1"); /* a sweep's id is an integer */
            }
            char needle[96];
            snprintf(needle, sizeof needle, "%s[0].%s: expected", item_maps[m].list, key);
            assert_edit_refused(item_maps[m].kind, item_maps[m].list, 0, key, E_SET, v,
                                COMMON_ERR_INVALID, needle);
        }
    }
    /* nil, a float and a bool where an integer goes; an integer where a bool goes */
    assert_edit_refused(PROTO_CANCEL, NULL, 0, "changed", E_SET, v_of(MSGPACK_OBJECT_NIL),
                        COMMON_ERR_INVALID, "cancel reply.changed: expected an unsigned integer");
    assert_edit_refused(PROTO_CANCEL, NULL, 0, "changed", E_SET, v_f64(3.0), COMMON_ERR_INVALID,
                        "got a float");
    assert_edit_refused(PROTO_LIST, "sweeps", 0, "rows", E_SET, v_bool(true), COMMON_ERR_INVALID,
                        "got a bool");
    assert_edit_refused(PROTO_SUBMIT, NULL, 0, "existed", E_SET, v_uint(1), COMMON_ERR_INVALID,
                        "submit reply.existed: expected a bool");
    /* a device that is not an integer */
    msgpack_object s = v_str("0");
    msgpack_object devs = v_of(MSGPACK_OBJECT_ARRAY);
    devs.via.array.size = 1;
    devs.via.array.ptr = &s;
    assert_edit_refused(PROTO_WORKERS, "workers", 0, "devices", E_SET, devs, COMMON_ERR_INVALID,
                        "workers reply.workers[0].devices[0]: expected an integer");
    /* a reply body that is not a map */
    static const uint8_t arr[] = {0x90};
    assert_refused(PROTO_LIST, arr, 1, COMMON_ERR_INVALID, "list reply: expected a map");
}

static void test_refuse_out_of_range(void **state) {
    (void)state;
    static char long_text[PROTO_MAX_TEXT + 1];
    memset(long_text, 'x', sizeof long_text);
    const struct {
        proto_type kind;
        const char *list;
        const char *key;
        msgpack_object val;
        const char *needle;
    } cases[] = {
        {PROTO_SUBMIT, NULL, "sweep_id", v_uint(0), "submit reply.sweep_id: 0, at least 1"},
        {PROTO_SUBMIT, NULL, "sweep_id", v_neg(-5), "submit reply.sweep_id: -5, at least 1"},
        {PROTO_SUBMIT, NULL, "sweep_id", v_uint(1ULL << 63), "at most 9223372036854775807"},
        {PROTO_SUBMIT, NULL, "tasks", v_neg(-1), "submit reply.tasks: -1, expected an unsigned"},
        {PROTO_SUBMIT, NULL, "sweep", v_str(""), "submit reply.sweep: empty"},
        {PROTO_CANCEL, NULL, "sweep", v_strn("a\0b", 3), "cancel reply.sweep: contains a NUL"},
        {PROTO_RETRY_DEAD, NULL, "sweep", v_strn(long_text, sizeof long_text),
         "retry_dead reply.sweep: 4097 bytes, at most 4096"},
        {PROTO_LIST, "sweeps", "id", v_uint(0), "list reply.sweeps[0].id: 0, at least 1"},
        {PROTO_LIST, "sweeps", "name", v_str(""), "list reply.sweeps[0].name: empty"},
        {PROTO_LIST, "sweeps", "created_at", v_neg(-1), "sweeps[0].created_at: -1, at least 0"},
        {PROTO_STATUS, "dead", "key", v_str(""), "status reply.dead[0].key: empty"},
        {PROTO_STATUS, "dead", "attempts", v_uint(1ULL << 32), "attempts: 4294967296, at most"},
        {PROTO_STATUS, "dead", "error", v_strn("x\0", 2), "dead[0].error: contains a NUL"},
        {PROTO_WORKERS, "workers", "threads", v_uint(65536), "threads: 65536, at most 65535"},
        {PROTO_WORKERS, "workers", "task", v_neg(-1), "workers[0].task: -1, at least 0"},
        {PROTO_WORKERS, "workers", "id", v_str(""), "workers reply.workers[0].id: empty"},
        {PROTO_WORKERS, "workers", "backend", v_str(""), "workers[0].backend: empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_edit_refused(cases[i].kind, cases[i].list, 0, cases[i].key, E_SET, cases[i].val,
                            COMMON_ERR_INVALID, cases[i].needle);
    }
    /* devices: negative, and past int32 */
    const msgpack_object bad_devices[] = {v_neg(-1), v_uint(1ULL << 31)};
    const char *const needles[] = {"devices[1]: -1, at least 0", "devices[1]: 2147483648, at most"};
    for (size_t i = 0; i < 2; i++) {
        msgpack_object d[2] = {v_uint(0), bad_devices[i]};
        msgpack_object devs = v_of(MSGPACK_OBJECT_ARRAY);
        devs.via.array.size = 2;
        devs.via.array.ptr = d;
        assert_edit_refused(PROTO_WORKERS, "workers", 0, "devices", E_SET, devs, COMMON_ERR_INVALID,
                            needles[i]);
    }
}

static void test_refuse_malformed(void **state) {
    (void)state;
    /* bytes after the map */
    for (size_t i = 0; i < N_KINDS; i++) {
        proto_reply r = full_reply(kinds[i]);
        uint8_t *buf = NULL;
        size_t len = 0;
        encode_ok(&r, &buf, &len);
        uint8_t *more = malloc(len + 1);
        assert_non_null(more);
        memcpy(more, buf, len);
        more[len] = 0xc0;
        assert_refused(kinds[i], more, len + 1, COMMON_ERR_PARSE, "1 bytes after the map");
        free(more);
        free(buf);
    }
    /* 0xc1 and an ext type where a value goes, and as a key */
    static const uint8_t c1[] = {0x82, 0xa5, 's', 'w', 'e', 'e', 'p', 0xc1, 0xa7,
                                 'c',  'h',  'a', 'n', 'g', 'e', 'd', 0x03};
    assert_refused(PROTO_CANCEL, c1, sizeof c1, COMMON_ERR_PARSE, "0xc1");
    static const uint8_t ext[] = {0x82, 0xa5, 's', 'w', 'e', 'e', 'p', 0xd4, 0x01, 0x00,
                                  0xa7, 'c',  'h', 'a', 'n', 'g', 'e', 'd',  0x03};
    assert_refused(PROTO_CANCEL, ext, sizeof ext, COMMON_ERR_PARSE, "ext type");
    static const uint8_t ext_key[] = {0x81, 0xc7, 0x00, 0x01, 0x03};
    assert_refused(PROTO_CANCEL, ext_key, sizeof ext_key, COMMON_ERR_PARSE, "ext type");
    /* over a message's size, before a byte is read */
    static const uint8_t one[] = {0x80};
    assert_refused(PROTO_LIST, one, PROTO_MAX_MESSAGE + 1, COMMON_ERR_INVALID, "at most");
}

static void test_refuse_request_without_body(void **state) {
    (void)state;
    static const uint8_t empty[] = {0x80};
    const proto_type none[] = {PROTO_HELLO, PROTO_REPLY, PROTO_ERROR, PROTO_N_TYPES,
                               (proto_type)-1};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        assert_refused(none[i], empty, 1, COMMON_ERR_INVALID, "has no reply body");
        proto_reply r = {.request = none[i]};
        uint8_t *buf = NULL;
        size_t len = 0;
        char err[COMMON_ERR_LEN] = "";
        assert_int_equal(proto_reply_encode(&r, &buf, &len, err), COMMON_ERR_INVALID);
        assert_null(buf);
        assert_non_null(strstr(err, "has no reply body"));
    }
    /* a submit body is not a status body */
    proto_reply r = full_reply(PROTO_SUBMIT);
    uint8_t *buf = NULL;
    size_t len = 0;
    encode_ok(&r, &buf, &len);
    assert_refused(PROTO_STATUS, buf, len, COMMON_ERR_INVALID, "status reply: unknown key");
    free(buf);
}

static void expect_encode_refused(const proto_reply *r, const char *needle) {
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN] = "";
    alloc_reset(-1);
    int rc = proto_reply_encode(r, &buf, &len, err);
    if (rc != COMMON_ERR_INVALID) {
        fail_msg("expected INVALID, got %d (%s)", rc, err);
    }
    assert_null(buf);
    if (!strstr(err, needle)) {
        fail_msg("error \"%s\" does not contain \"%s\"", err, needle);
    }
}

static void test_encode_refusals(void **state) {
    (void)state;
    static char long_text[PROTO_MAX_TEXT + 2];
    memset(long_text, 'x', PROTO_MAX_TEXT + 1);
    proto_reply r = full_reply(PROTO_SUBMIT);
    r.sweep = NULL;
    expect_encode_refused(&r, "submit reply.sweep: missing (NULL)");
    r.sweep = "";
    expect_encode_refused(&r, "submit reply.sweep: empty");
    r.sweep = long_text;
    expect_encode_refused(&r, "submit reply.sweep: more than 4096 bytes");
    r = full_reply(PROTO_SUBMIT);
    r.sweep_id = 0;
    expect_encode_refused(&r, "submit reply.sweep_id: 0, expected 1..");

    proto_reply l = full_reply(PROTO_LIST);
    l.sweeps = NULL;
    expect_encode_refused(&l, "list reply.sweeps: NULL with 3 entries");
    proto_sweep_info s = sweeps[0];
    s.name = NULL;
    l = (proto_reply){.request = PROTO_LIST, .n_sweeps = 1, .sweeps = &s};
    expect_encode_refused(&l, "list reply.sweeps[0].name: missing (NULL)");
    s = sweeps[0];
    s.created_at = -1;
    expect_encode_refused(&l, "list reply.sweeps[0].created_at: -1");

    proto_reply st = full_reply(PROTO_STATUS);
    proto_dead_task d = dead[0];
    d.error = NULL;
    st.dead = &d;
    st.n_dead = 1;
    expect_encode_refused(&st, "status reply.dead[0].error: missing (NULL)");
    st.n_dead = PROTO_MAX_ITEMS + 1;
    expect_encode_refused(&st, "status reply.dead: 100001 entries, at most 100000");

    proto_reply w = full_reply(PROTO_WORKERS);
    workers[1].devices[0] = -1;
    workers[1].n_devices = 1;
    expect_encode_refused(&w, "workers reply.workers[1].devices[0]: -1, at least 0");
    w = full_reply(PROTO_WORKERS);
    workers[0].n_devices = PROTO_MAX_DEVICES + 1;
    expect_encode_refused(&w, "workers reply.workers[0].devices: 65 entries, at most 64");
    w = full_reply(PROTO_WORKERS);
    workers[0].threads = 65536;
    expect_encode_refused(&w, "workers reply.workers[0].threads: 65536, expected 0..65535");
    w = full_reply(PROTO_WORKERS);
    workers[1].task_key = NULL;
    expect_encode_refused(&w, "workers reply.workers[1].task_key: missing (NULL)");
    w = full_reply(PROTO_WORKERS);
    workers[0].task = -1;
    expect_encode_refused(&w, "workers reply.workers[0].task: -1");
}

static void test_reply_free_null(void **state) {
    (void)state;
    proto_reply_free(NULL);
    proto_reply *r = NULL;
    proto_reply_free(&r);
    assert_null(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_kind),
        cmocka_unit_test(test_round_trip_smallest),
        cmocka_unit_test(test_round_trip_largest),
        cmocka_unit_test(test_msgpack_c_repacked),
        cmocka_unit_test(test_encoding_bytes),
        cmocka_unit_test(test_allocation_failures),
        cmocka_unit_test(test_refuse_truncated),
        cmocka_unit_test(test_refuse_count_amplifiers),
        cmocka_unit_test(test_refuse_unknown_key),
        cmocka_unit_test(test_refuse_duplicate_key),
        cmocka_unit_test(test_refuse_missing_key),
        cmocka_unit_test(test_refuse_wrong_type),
        cmocka_unit_test(test_refuse_out_of_range),
        cmocka_unit_test(test_refuse_malformed),
        cmocka_unit_test(test_refuse_request_without_body),
        cmocka_unit_test(test_encode_refusals),
        cmocka_unit_test(test_reply_free_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
