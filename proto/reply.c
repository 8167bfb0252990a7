/*
 * The codecs of REPLY bodies (proto/reply.h, PROTOCOL.md "Replies"). Each request's body, and
 * each item of its lists (a sweep, a dead task, a worker), is a map described by one table of
 * fields: key, kind, the member of the C struct it fills (offsetof) and its range. The encoder
 * and the decoder both walk these tables, so a body that encodes always decodes to the same
 * reply, and a field's rule is written once.
 *
 * Decoding runs twice over the same hostile bytes. The first pass checks everything and only
 * counts the memory a decoded reply needs (its struct, its arrays, its strings); the second,
 * after one allocation of exactly that much, fills it. So a refused body allocates nothing,
 * and an accepted one makes one allocation, sized by what the input has paid for in bytes
 * (every array count is checked against the bytes left before it is used). The walk is driven
 * by the tables, whose depth is fixed (body map, list, item map, devices array): the input
 * cannot make it deeper.
 */
#include "proto/reply.h"
#include "proto/proto_int.h"

#include <assert.h>
#include <inttypes.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest key the decoder reads; every real one is shorter. */
#define MAX_KEY 32
/* The most fields a table has (workers: 10). */
#define MAX_FIELDS 12
/* Room left in a message for the REPLY envelope around a body ("v", "t", "req", the bin header
 * of "body"): an encoded body always fits in a REPLY. */
#define REPLY_ENVELOPE 64
/* Error paths: "workers reply.workers[99999].devices[63]" */
#define WHAT_LEN 128

typedef enum rkind {
    R_TEXT,    /* const char *: a str of lo..hi bytes without NUL */
    R_U64,     /* uint64_t in [lo, hi] */
    R_U32,     /* uint32_t in [lo, hi] */
    R_I64,     /* int64_t in [lo, hi] (both within int64) */
    R_BOOL,    /* bool */
    R_DEVICES, /* int32_t[] at off, its size_t count at n_off: at most hi entries, each >= 0 */
    R_SWEEPS,  /* proto_reply.sweeps / n_sweeps: at most hi items */
    R_DEAD,    /* proto_reply.dead / n_dead */
    R_WORKERS  /* proto_reply.workers / n_workers */
} rkind;

typedef struct rfield {
    const char *key;
    rkind kind;
    size_t off;   /* the member it fills in its struct */
    size_t n_off; /* R_DEVICES: the member that counts them */
    uint64_t lo, hi;
} rfield;

typedef struct rschema {
    size_t n;
    const rfield *f;
} rschema;

#define FIELD(type, key, kind, member, lo, hi)                                                     \
    { key, kind, offsetof(type, member), 0, lo, hi }
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const rfield sweep_fields[] = {
    FIELD(proto_sweep_info, "name", R_TEXT, name, 1, PROTO_MAX_TEXT),
    FIELD(proto_sweep_info, "id", R_I64, id, 1, INT64_MAX),
    FIELD(proto_sweep_info, "pending", R_U64, pending, 0, UINT64_MAX),
    FIELD(proto_sweep_info, "leased", R_U64, leased, 0, UINT64_MAX),
    FIELD(proto_sweep_info, "done", R_U64, done, 0, UINT64_MAX),
    FIELD(proto_sweep_info, "dead", R_U64, dead, 0, UINT64_MAX),
    FIELD(proto_sweep_info, "cancelled", R_BOOL, cancelled, 0, 1),
    FIELD(proto_sweep_info, "rows", R_U64, rows, 0, UINT64_MAX),
    FIELD(proto_sweep_info, "created_at", R_I64, created_at, 0, INT64_MAX),
};

/* A dead task's sweep is "" when the coordinator could not name it; its last error may be ""
 * (a lease that expired without a word from the worker still has a text, but nothing forces
 * every path to have one). */
static const rfield dead_fields[] = {
    FIELD(proto_dead_task, "sweep", R_TEXT, sweep, 0, PROTO_MAX_TEXT),
    FIELD(proto_dead_task, "key", R_TEXT, key, 1, PROTO_MAX_TEXT),
    FIELD(proto_dead_task, "attempts", R_U32, attempts, 0, UINT32_MAX),
    FIELD(proto_dead_task, "error", R_TEXT, error, 0, PROTO_MAX_TEXT),
};

static const rfield worker_fields[] = {
    FIELD(proto_worker_info, "id", R_TEXT, id, 1, PROTO_MAX_TEXT),
    FIELD(proto_worker_info, "backend", R_TEXT, backend, 1, PROTO_MAX_TEXT),
    {"devices", R_DEVICES, offsetof(proto_worker_info, devices),
     offsetof(proto_worker_info, n_devices), 0, PROTO_MAX_DEVICES},
    /* the same bound as a HELLO's threads */
    FIELD(proto_worker_info, "threads", R_U32, threads, 0, 65535),
    FIELD(proto_worker_info, "connected", R_BOOL, connected, 0, 1),
    FIELD(proto_worker_info, "task", R_I64, task, 0, INT64_MAX),
    FIELD(proto_worker_info, "task_key", R_TEXT, task_key, 0, PROTO_MAX_TEXT),
    FIELD(proto_worker_info, "sweep", R_TEXT, sweep, 0, PROTO_MAX_TEXT),
    FIELD(proto_worker_info, "tasks_done", R_U64, tasks_done, 0, UINT64_MAX),
    FIELD(proto_worker_info, "last_seen_ms", R_U64, last_seen_ms, 0, UINT64_MAX),
};

static const rfield submit_fields[] = {
    FIELD(proto_reply, "sweep_id", R_I64, sweep_id, 1, INT64_MAX),
    FIELD(proto_reply, "sweep", R_TEXT, sweep, 1, PROTO_MAX_TEXT),
    FIELD(proto_reply, "existed", R_BOOL, existed, 0, 1),
    FIELD(proto_reply, "tasks", R_U64, n_tasks, 0, UINT64_MAX),
};

static const rfield status_fields[] = {
    FIELD(proto_reply, "sweeps", R_SWEEPS, sweeps, 0, PROTO_MAX_ITEMS),
    FIELD(proto_reply, "dead", R_DEAD, dead, 0, PROTO_MAX_ITEMS),
};

static const rfield list_fields[] = {
    FIELD(proto_reply, "sweeps", R_SWEEPS, sweeps, 0, PROTO_MAX_ITEMS),
};

static const rfield workers_fields[] = {
    FIELD(proto_reply, "workers", R_WORKERS, workers, 0, PROTO_MAX_ITEMS),
};

/* cancel and retry_dead: the sweep named in the request, and how many tasks changed */
static const rfield changed_fields[] = {
    FIELD(proto_reply, "sweep", R_TEXT, sweep, 1, PROTO_MAX_TEXT),
    FIELD(proto_reply, "changed", R_U64, n_changed, 0, UINT64_MAX),
};

static const rschema sweep_schema = {N_OF(sweep_fields), sweep_fields};
static const rschema dead_schema = {N_OF(dead_fields), dead_fields};
static const rschema worker_schema = {N_OF(worker_fields), worker_fields};

/* The body of the reply to a request of type t; NULL when t has none. */
static const rschema *body_schema(proto_type t) {
    static const rschema submit = {N_OF(submit_fields), submit_fields};
    static const rschema status = {N_OF(status_fields), status_fields};
    static const rschema list = {N_OF(list_fields), list_fields};
    static const rschema workers = {N_OF(workers_fields), workers_fields};
    static const rschema changed = {N_OF(changed_fields), changed_fields};
    switch (t) {
    case PROTO_SUBMIT:
        return &submit;
    case PROTO_STATUS:
        return &status;
    case PROTO_LIST:
        return &list;
    case PROTO_WORKERS:
        return &workers;
    case PROTO_CANCEL:
    case PROTO_RETRY_DEAD:
        return &changed;
    default:
        return NULL;
    }
}

/* The list member kind of r. The item pointers are read and written through their own types
 * here, never through a void ** that aliases them. */
static void list_get(const proto_reply *r, rkind kind, const void **items, size_t *n) {
    switch (kind) {
    case R_SWEEPS:
        *items = r->sweeps;
        *n = r->n_sweeps;
        return;
    case R_DEAD:
        *items = r->dead;
        *n = r->n_dead;
        return;
    case R_WORKERS:
        *items = r->workers;
        *n = r->n_workers;
        return;
    default:
        assert(!"not a list field");
    }
}

static void list_set(proto_reply *r, rkind kind, void *items, size_t n) {
    switch (kind) {
    case R_SWEEPS:
        r->sweeps = items;
        r->n_sweeps = n;
        return;
    case R_DEAD:
        r->dead = items;
        r->n_dead = n;
        return;
    case R_WORKERS:
        r->workers = items;
        r->n_workers = n;
        return;
    default:
        assert(!"not a list field");
    }
}

static const rschema *item_schema(rkind kind, size_t *size) {
    switch (kind) {
    case R_SWEEPS:
        *size = sizeof(proto_sweep_info);
        return &sweep_schema;
    case R_DEAD:
        *size = sizeof(proto_dead_task);
        return &dead_schema;
    case R_WORKERS:
        *size = sizeof(proto_worker_info);
        return &worker_schema;
    default:
        assert(!"not a list field");
        return NULL;
    }
}

static const char *request_name(proto_type t) {
    const char *name = proto_type_name(t);
    return name ? name : "unknown";
}

/* The name of a field inside path, for error messages: path.key, or path[index] when key is
 * NULL. Real paths are far shorter than WHAT_LEN; one cut short still says where it began. */
static const char *subpath(char *out, const char *path, const char *key, size_t index) {
    int n = key ? snprintf(out, WHAT_LEN, "%s.%s", path, key)
                : snprintf(out, WHAT_LEN, "%s[%zu]", path, index);
    if (n < 0 || n >= WHAT_LEN) {
        memcpy(out + WHAT_LEN - 4, "...", 4);
    }
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding                                                                                    */

static int write_map(proto_writer *w, const rschema *s, const void *src, const char *path,
                     char *err);

static int range_error(const char *what, uint64_t v, uint64_t lo, uint64_t hi, char *err) {
    return common_fail(err, COMMON_ERR_INVALID, "%s: %" PRIu64 ", expected %" PRIu64 "..%" PRIu64,
                       what, v, lo, hi);
}

static int write_value(proto_writer *w, const rfield *f, const void *src, const char *what,
                       char *err) {
    const char *base = src;
    switch (f->kind) {
    case R_TEXT: {
        const char *s = *(const char *const *)(base + f->off);
        if (!s) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: missing (NULL)", what);
        }
        int rc = proto_check_text(s, f->lo, f->hi, what, err);
        if (rc == 0) {
            proto_w_str(w, s);
        }
        return rc;
    }
    case R_U64: {
        uint64_t v = *(const uint64_t *)(base + f->off);
        if (v < f->lo || v > f->hi) {
            return range_error(what, v, f->lo, f->hi, err);
        }
        proto_w_uint(w, v);
        return 0;
    }
    case R_U32: {
        uint32_t v = *(const uint32_t *)(base + f->off);
        if (v < f->lo || v > f->hi) {
            return range_error(what, v, f->lo, f->hi, err);
        }
        proto_w_uint(w, v);
        return 0;
    }
    case R_I64: {
        int64_t v = *(const int64_t *)(base + f->off);
        assert(f->hi <= INT64_MAX);
        if (v < (int64_t)f->lo || v > (int64_t)f->hi) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "%s: %" PRId64 ", expected %" PRIu64 "..%" PRIu64, what, v, f->lo,
                               f->hi);
        }
        proto_w_int(w, v);
        return 0;
    }
    case R_BOOL:
        proto_w_bool(w, *(const bool *)(base + f->off));
        return 0;
    case R_DEVICES: {
        size_t n = *(const size_t *)(base + f->n_off);
        const int32_t *dev = (const int32_t *)(base + f->off);
        if (n > f->hi) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: %zu entries, at most %" PRIu64, what,
                               n, f->hi);
        }
        proto_w_array(w, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            if (dev[i] < 0) {
                return common_fail(err, COMMON_ERR_INVALID, "%s[%zu]: %" PRId32 ", at least 0",
                                   what, i, dev[i]);
            }
            proto_w_int(w, dev[i]);
        }
        return 0;
    }
    case R_SWEEPS:
    case R_DEAD:
    case R_WORKERS: {
        const void *items = NULL;
        size_t n = 0, size = 0;
        list_get(src, f->kind, &items, &n);
        const rschema *is = item_schema(f->kind, &size);
        if (n > f->hi) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: %zu entries, at most %" PRIu64, what,
                               n, f->hi);
        }
        if (n > 0 && !items) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: NULL with %zu entries", what, n);
        }
        proto_w_array(w, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            char item[WHAT_LEN];
            subpath(item, what, NULL, i);
            int rc = write_map(w, is, (const char *)items + i * size, item, err);
            if (rc != 0) {
                return rc;
            }
        }
        return 0;
    }
    }
    assert(!"unknown field kind");
    return COMMON_ERR_INVALID;
}

/* One map of the table's fields, in the table's order. An item map's fields hold no list, so
 * this goes at most two maps deep, whatever the reply. */
static int write_map(proto_writer *w, const rschema *s, const void *src, const char *path,
                     char *err) {
    proto_w_map(w, (uint32_t)s->n);
    for (size_t i = 0; i < s->n; i++) {
        char what[WHAT_LEN];
        subpath(what, path, s->f[i].key, 0);
        proto_w_str(w, s->f[i].key);
        int rc = write_value(w, &s->f[i], src, what, err);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

int proto_reply_encode(const proto_reply *r, uint8_t **out, size_t *len, char *err) {
    assert(r && out && len);
    const rschema *s = body_schema(r->request);
    if (!s) {
        return common_fail(err, COMMON_ERR_INVALID, "reply: a %s request has no reply body",
                           request_name(r->request));
    }
    char path[WHAT_LEN];
    snprintf(path, sizeof path, "%s reply", request_name(r->request));
    proto_writer w;
    proto_writer_init(&w);
    int rc = write_map(&w, s, r, path, err);
    if (rc != 0) {
        proto_writer_free(&w);
        return rc;
    }
    uint8_t *buf;
    size_t n;
    rc = proto_writer_finish(&w, &buf, &n, err);
    if (rc != 0) {
        return common_fail(err, rc, "%s: out of memory", path);
    }
    if (n > PROTO_MAX_MESSAGE - REPLY_ENVELOPE) {
        free(buf);
        return common_fail(err, COMMON_ERR_INVALID,
                           "%s: %zu bytes encoded, more than a reply message holds", path, n);
    }
    *out = buf;
    *len = n;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding                                                                                    */

/* The decoded reply's one block. Counting (base NULL), takes only add up the bytes; filling,
 * they hand out the block's memory in the same order, so both passes agree on every offset. */
typedef struct arena {
    char *base;
    size_t used, cap;
} arena;

static void *arena_take(arena *a, size_t n, size_t align) {
    a->used = (a->used + align - 1) / align * align;
    void *p = a->base ? a->base + a->used : NULL;
    a->used += n;
    assert(!a->base || a->used <= a->cap);
    return p;
}

/* A NUL-terminated copy of s[n]; NULL while counting. */
static const char *arena_str(arena *a, const char *s, size_t n) {
    char *p = arena_take(a, n + 1, 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static int read_map(proto_reader *r, const rschema *s, void *dst, arena *a, const char *path,
                    char *err);

static int read_value(proto_reader *r, const rfield *f, void *dst, arena *a, const char *what,
                      char *err) {
    char *base = dst;
    int rc = 0;
    switch (f->kind) {
    case R_TEXT: {
        const char *s;
        size_t n;
        rc = proto_r_text(r, f->lo, f->hi, &s, &n, what, err);
        if (rc == 0) {
            *(const char **)(base + f->off) = arena_str(a, s, n);
        }
        return rc;
    }
    case R_U64:
    case R_U32: {
        uint64_t v;
        rc = proto_r_uint(r, f->hi, &v, what, err);
        if (rc == 0 && v < f->lo) {
            rc = common_fail(err, COMMON_ERR_INVALID, "%s: %" PRIu64 ", at least %" PRIu64, what, v,
                             f->lo);
        }
        if (rc == 0 && f->kind == R_U64) {
            *(uint64_t *)(base + f->off) = v;
        } else if (rc == 0) {
            assert(v <= UINT32_MAX); /* the table's hi says so */
            *(uint32_t *)(base + f->off) = (uint32_t)v;
        }
        return rc;
    }
    case R_I64:
        assert(f->hi <= INT64_MAX);
        return proto_r_int(r, (int64_t)f->lo, (int64_t)f->hi, (int64_t *)(base + f->off), what,
                           err);
    case R_BOOL:
        return proto_r_bool(r, (bool *)(base + f->off), what, err);
    case R_DEVICES: {
        uint32_t n;
        int32_t *dev = (int32_t *)(base + f->off);
        rc = proto_r_array(r, (uint32_t)f->hi, &n, what, err);
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            char item[WHAT_LEN];
            int64_t v;
            subpath(item, what, NULL, i);
            rc = proto_r_int(r, 0, INT32_MAX, &v, item, err);
            if (rc == 0) {
                dev[i] = (int32_t)v;
            }
        }
        if (rc == 0) {
            *(size_t *)(base + f->n_off) = n;
        }
        return rc;
    }
    case R_SWEEPS:
    case R_DEAD:
    case R_WORKERS: {
        /* the items of the counting pass are decoded into this and forgotten */
        union {
            proto_sweep_info sweep;
            proto_dead_task dead;
            proto_worker_info worker;
        } scratch;
        size_t size = 0;
        const rschema *is = item_schema(f->kind, &size);
        uint32_t n;
        /* n is at most PROTO_MAX_ITEMS, so n * size cannot overflow; memory is handed out
         * only in the filling pass, after every one of the n items has been read */
        rc = proto_r_array(r, (uint32_t)f->hi, &n, what, err);
        if (rc != 0) {
            return rc;
        }
        char *items = arena_take(a, (size_t)n * size, alignof(max_align_t));
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            char item[WHAT_LEN];
            void *slot = items ? items + (size_t)i * size : (void *)&scratch;
            memset(slot, 0, size);
            subpath(item, what, NULL, i);
            rc = read_map(r, is, slot, a, item, err);
        }
        if (rc == 0) {
            list_set(dst, f->kind, items, n);
        }
        return rc;
    }
    }
    assert(!"unknown field kind");
    return COMMON_ERR_INVALID;
}

/* One map of the table's fields, in any order: every key known, none twice, none missing.
 * The map's count is checked against the bytes left (two per entry); beyond that it needs no
 * cap of its own, as the loop stops at the first key that is unknown or repeated, so it runs at
 * most one entry more than the table has. */
static int read_map(proto_reader *r, const rschema *s, void *dst, arena *a, const char *path,
                    char *err) {
    assert(s->n <= MAX_FIELDS);
    bool seen[MAX_FIELDS] = {false};
    uint32_t n;
    int rc = proto_r_map(r, UINT32_MAX, &n, path, err);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        char what[WHAT_LEN], shown[40];
        const char *key;
        size_t key_len;
        subpath(what, path, "(key)", 0);
        rc = proto_r_str(r, MAX_KEY, &key, &key_len, what, err);
        if (rc != 0) {
            break;
        }
        size_t k = 0;
        while (k < s->n &&
               !(strlen(s->f[k].key) == key_len && memcmp(s->f[k].key, key, key_len) == 0)) {
            k++;
        }
        if (k == s->n) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: unknown key \"%s\"", path,
                               proto_printable(key, key_len, shown, sizeof shown));
        }
        if (seen[k]) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: duplicate key \"%s\"", path,
                               s->f[k].key);
        }
        seen[k] = true;
        subpath(what, path, s->f[k].key, 0);
        rc = read_value(r, &s->f[k], dst, a, what, err);
    }
    for (size_t k = 0; rc == 0 && k < s->n; k++) {
        if (!seen[k]) {
            rc = common_fail(err, COMMON_ERR_INVALID, "%s.%s: missing", path, s->f[k].key);
        }
    }
    return rc;
}

/* One pass over the body: counting (a->base NULL) or filling. */
static int read_body(const void *buf, size_t len, const rschema *s, proto_reply *dst, arena *a,
                     const char *path, char *err) {
    proto_reader r;
    proto_reader_init(&r, buf, len);
    int rc = read_map(&r, s, dst, a, path, err);
    if (rc == 0 && r.off != r.len) {
        rc = common_fail(err, COMMON_ERR_PARSE, "%s: %zu bytes after the map", path, r.len - r.off);
    }
    return rc;
}

int proto_reply_decode(proto_type request, const void *buf, size_t len, proto_reply **out,
                       char *err) {
    assert(out);
    const rschema *s = body_schema(request);
    if (!s) {
        return common_fail(err, COMMON_ERR_INVALID, "reply: a %s request has no reply body",
                           request_name(request));
    }
    char path[WHAT_LEN];
    snprintf(path, sizeof path, "%s reply", request_name(request));
    if (len > PROTO_MAX_MESSAGE) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: %zu bytes, at most %zu", path, len,
                           PROTO_MAX_MESSAGE);
    }
    if (!buf || len == 0) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: empty", path);
    }

    /* the checking pass: nothing is kept but the size of what a decoded reply needs */
    proto_reply scratch;
    memset(&scratch, 0, sizeof scratch);
    arena a = {NULL, 0, 0};
    arena_take(&a, sizeof(proto_reply), alignof(max_align_t));
    int rc = read_body(buf, len, s, &scratch, &a, path, err);
    if (rc != 0) {
        return rc;
    }

    /* the filling pass, over bytes that passed every check: it cannot fail */
    size_t total = a.used;
    a.base = malloc(total);
    if (!a.base) {
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory (%zu bytes)", path, total);
    }
    a.cap = total;
    a.used = 0;
    proto_reply *rep = arena_take(&a, sizeof *rep, alignof(max_align_t));
    memset(rep, 0, sizeof *rep);
    rep->request = request;
    rc = read_body(buf, len, s, rep, &a, path, err);
    assert(rc == 0 && a.used == total);
    (void)rc;
    rep->mem = a.base; /* the block rep itself lives in */
    *out = rep;
    return 0;
}

void proto_reply_free(proto_reply **r) {
    if (!r || !*r) {
        return;
    }
    void *mem = (*r)->mem; /* the reply struct is the start of this block */
    *r = NULL;
    free(mem);
}
