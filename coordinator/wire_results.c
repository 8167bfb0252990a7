/*
 * wire_results: the results body of a RESULT message (wire.h; proto/PROTOCOL.md, "Task and
 * result bodies"): everything coordinator_task_complete stores, as one MessagePack map whose
 * members are the non-NULL members of coordinator_results.
 *
 * Numbers must arrive exactly as the worker computed them, so the store's rows do not depend
 * on whether a result travelled: every float array goes as little-endian IEEE-754 bytes in a
 * bin (float32 values, double sums, uint64 counts), and so do the two patch metrics, as an
 * 8-byte bin each, because they are NaN for a pair that cannot be normalised and a MessagePack
 * float (proto_r_f64) refuses NaN; a bin keeps every bit, NaN payloads and infinities
 * included. Columns of integers, flags and texts are MessagePack arrays.
 *
 * Decoding follows wire_work.c: keys in any order, each field checked for type, length and cap
 * as it is read, the columns of one batch required to have one length, messages built from the
 * inside out. Everything decoded is owned by the coordinator_results_msg: the columns live in
 * its block storage (work_int.h), each pair's interp_patch_result is allocated as interp's own
 * (calloc'd struct, malloc'd values) and freed with interp_patch_result_destroy, and the
 * statistics partials come from interp_legal_stats_new / interp_neuron_stats_new.
 */
#include <assert.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/wire.h"
#include "coordinator/work_int.h"
#include "proto/proto.h"

#define MAX_KEY 32
#define MAX_TEXT 64    /* a token text of the vocabulary ("<pad>"), a component label */
#define MAX_METRIC 128 /* a resolved metric ("logit_diff:e4,d5") */
#define MAX_ROWS ((uint64_t)COORDINATOR_WIRE_MAX_ROWS)
#define MAX_D_MLP (4 * MODEL_MAX_D_MODEL)

struct coordinator_results_msg {
    coordinator_results r; /* what msg_get returns: points to the members below */
    coordinator_patch_batch patch;
    coordinator_prediction_batch predictions;
    interp_patch_result **pr; /* [n_pr] (the array in mem; each: interp_patch_result_destroy) */
    size_t n_pr;
    interp_legal_stats *legal;
    interp_neuron_stats *neurons;
    struct coordinator_work_mem mem; /* columns and texts */
};

enum { R_PATCH, R_LEGAL, R_NEURONS, R_PREDICTIONS, R_N };
static const char *const top_keys[R_N] = {"patch", "legal", "neurons", "predictions"};
enum {
    B_KIND,
    B_GAME,
    B_CUTOFF,
    B_CORRUPT_POS,
    B_CLEAN_TOKEN,
    B_CORRUPT_TOKEN,
    B_CORRUPT_GAME,
    B_METRIC,
    B_NORMALIZED,
    B_RESULTS,
    B_N
};
static const char *const patch_keys[B_N] = {
    "kind",          "game",         "cutoff", "corrupt_pos", "clean_token",
    "corrupt_token", "corrupt_game", "metric", "normalized",  "results"};
enum {
    E_SHAPE,
    E_AXES,
    E_LABELS,
    E_CLEAN_METRIC,
    E_CORRUPTED_METRIC,
    E_N_FORWARDS,
    E_N_POSITIONS,
    E_VALUES,
    E_N
};
static const char *const result_keys[E_N] = {
    "shape",      "axes",        "labels", "clean_metric", "corrupted_metric",
    "n_forwards", "n_positions", "values"};
enum { L_LABELS, L_T, L_COUNT, L_SUM, L_MIN, L_MAX, L_N };
static const char *const legal_keys[L_N] = {"labels", "T", "count", "sum", "min", "max"};
enum { N_L, N_M, N_SLICE, N_COUNT, N_SUM, N_N };
static const char *const neuron_keys[N_N] = {"L", "M", "slice", "count", "sum"};
enum { Q_GAME, Q_POS, Q_RANK, Q_TOKEN, Q_LOGPROB, Q_LEGAL, Q_N };
static const char *const prediction_keys[Q_N] = {"game",  "pos",     "rank",
                                                 "token", "logprob", "legal"};

/* ------------------------------------------------------------------------------------------ */
/* Little-endian words                                                                         */

static uint64_t get_le(const uint8_t *p, size_t size) {
    uint64_t v = 0;
    for (size_t i = size; i-- > 0;) {
        v = v << 8 | p[i];
    }
    return v;
}

static void put_le(uint8_t *p, uint64_t v, size_t size) {
    for (size_t i = 0; i < size; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* n native words of size bytes (4: float or uint32, 8: double or uint64) from src into dst as
 * little-endian bytes. */
static void words_to_le(uint8_t *dst, const void *src, size_t n, size_t size) {
    const uint8_t *s = src;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        if (size == 4) {
            uint32_t w;
            memcpy(&w, s + 4 * i, 4);
            v = w;
        } else {
            memcpy(&v, s + 8 * i, 8);
        }
        put_le(dst + size * i, v, size);
    }
}

static void words_from_le(void *dst, const uint8_t *src, size_t n, size_t size) {
    uint8_t *d = dst;
    for (size_t i = 0; i < n; i++) {
        uint64_t v = get_le(src + size * i, size);
        if (size == 4) {
            uint32_t w = (uint32_t)v;
            memcpy(d + 4 * i, &w, 4);
        } else {
            memcpy(d + 8 * i, &v, 8);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Reading helpers (as wire_work.c's: messages are relative to their container)               */

static size_t bytes_left(const proto_reader *r) {
    return r->len - r->off;
}

/* PARSE when bytes follow the body's map (proto_r_end's own message names a message). */
static int check_end(const proto_reader *r, char *msg) {
    size_t n = bytes_left(r);
    return n == 0 ? 0 : common_fail(msg, COMMON_ERR_PARSE, ": %zu bytes after the map", n);
}

static size_t min_map_bytes(const char *const *keys, size_t n_required) {
    size_t n = 1;
    for (size_t i = 0; i < n_required; i++) {
        n += 1 + strlen(keys[i]) + 1;
    }
    return n;
}

static int read_key(proto_reader *r, const char *const *keys, size_t n, uint32_t *seen,
                    size_t *which, char *msg) {
    const char *s = NULL;
    size_t len = 0;
    int rc = proto_r_str(r, MAX_KEY, &s, &len, " key", msg);
    if (rc != 0) {
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if (strlen(keys[i]) == len && memcmp(keys[i], s, len) == 0) {
            if (*seen & (1u << i)) {
                return common_fail(msg, COMMON_ERR_INVALID, ".%s: given twice", keys[i]);
            }
            *seen |= 1u << i;
            *which = i;
            return 0;
        }
    }
    return common_fail(msg, COMMON_ERR_INVALID, ".%.*s: not a key", (int)len, s);
}

/* INVALID naming the first of keys[n] that seen lacks (all are required). */
static int check_all_keys(uint32_t seen, const char *const *keys, size_t n, char *msg) {
    for (size_t i = 0; i < n; i++) {
        if (!(seen & (1u << i))) {
            return common_fail(msg, COMMON_ERR_INVALID, ".%s: missing", keys[i]);
        }
    }
    return 0;
}

static int read_text(proto_reader *r, size_t lo, size_t hi, const char **s, size_t *n,
                     const char *what, char *msg) {
    int rc = proto_r_str(r, hi, s, n, what, msg);
    if (rc != 0) {
        return rc;
    }
    if (*n < lo) {
        return common_fail(msg, COMMON_ERR_INVALID, "%s: %zu bytes, at least %zu", what, *n, lo);
    }
    if (memchr(*s, '\0', *n) != NULL) {
        return common_fail(msg, COMMON_ERR_INVALID, "%s: a NUL byte in the text", what);
    }
    return 0;
}

/* The length the columns of one batch share: the first column read sets it. */
typedef struct columns {
    size_t n;
    const char *first; /* NULL until a column was read */
} columns;

static int column_count(columns *c, size_t n, const char *what, char *msg) {
    if (c->first == NULL) {
        c->n = n;
        c->first = what;
        return 0;
    }
    if (n != c->n) {
        return common_fail(msg, COMMON_ERR_INVALID, "%s: %zu entries, %s has %zu", what, n,
                           c->first, c->n);
    }
    return 0;
}

static int read_column_header(proto_reader *r, uint64_t cap, columns *c, uint32_t *n,
                              const char *what, char *msg) {
    int rc = proto_r_array(r, (uint32_t)cap, n, what, msg);
    return rc != 0 ? rc : column_count(c, *n, what, msg);
}

/* A column of unsigned integers <= hi into a new array of size-byte words (4 or 8). */
static int read_uint_column(proto_reader *r, struct coordinator_work_mem *m, uint64_t cap,
                            uint64_t hi, size_t size, void **out, columns *c, const char *what,
                            char *msg) {
    char inner[COMMON_ERR_LEN];
    uint32_t n = 0;
    int rc = read_column_header(r, cap, c, &n, what, msg);
    if (rc != 0) {
        return rc;
    }
    uint8_t *a = work_mem_alloc(m, n, size);
    if (a == NULL) {
        return common_fail(msg, COMMON_ERR_NOMEM, "%s: out of memory", what);
    }
    for (uint32_t i = 0; i < n; i++) {
        uint64_t v = 0;
        if ((rc = proto_r_uint(r, hi, &v, "", inner)) != 0) {
            return common_fail(msg, rc, "%s[%" PRIu32 "]%s", what, i, inner);
        }
        if (size == 4) {
            uint32_t w = (uint32_t)v;
            memcpy(a + 4 * (size_t)i, &w, 4);
        } else {
            memcpy(a + 8 * (size_t)i, &v, 8);
        }
    }
    *out = a;
    return 0;
}

static int read_int_column(proto_reader *r, struct coordinator_work_mem *m, int64_t lo, int64_t hi,
                           size_t size, void **out, columns *c, const char *what, char *msg) {
    char inner[COMMON_ERR_LEN];
    uint32_t n = 0;
    int rc = read_column_header(r, COORDINATOR_WIRE_MAX_PAIRS, c, &n, what, msg);
    if (rc != 0) {
        return rc;
    }
    uint8_t *a = work_mem_alloc(m, n, size);
    if (a == NULL) {
        return common_fail(msg, COMMON_ERR_NOMEM, "%s: out of memory", what);
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t v = 0;
        if ((rc = proto_r_int(r, lo, hi, &v, "", inner)) != 0) {
            return common_fail(msg, rc, "%s[%" PRIu32 "]%s", what, i, inner);
        }
        if (size == 4) {
            int32_t w = (int32_t)v;
            memcpy(a + 4 * (size_t)i, &w, 4);
        } else {
            memcpy(a + 8 * (size_t)i, &v, 8);
        }
    }
    *out = a;
    return 0;
}

/* A column of texts of lo..hi bytes (nil allowed when nil_ok: a NULL entry). Two passes over
 * the same bytes: the first checks every text and sums the lengths, the second copies them
 * into one block, so a column is two allocations however many texts it has. */
static int read_text_column(proto_reader *r, struct coordinator_work_mem *m, uint64_t cap,
                            size_t lo, size_t hi, bool nil_ok, const char ***out, columns *c,
                            const char *what, char *msg) {
    char inner[COMMON_ERR_LEN];
    uint32_t n = 0;
    int rc = read_column_header(r, cap, c, &n, what, msg);
    if (rc != 0) {
        return rc;
    }
    proto_reader again = *r;
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *s = NULL;
        size_t len = 0;
        if (nil_ok && proto_r_nil(r)) {
            continue;
        }
        if ((rc = read_text(r, lo, hi, &s, &len, "", inner)) != 0) {
            return common_fail(msg, rc, "%s[%" PRIu32 "]%s", what, i, inner);
        }
        total += len + 1;
    }
    const char **ptr = work_mem_alloc(m, n, sizeof *ptr);
    char *buf = work_mem_alloc(m, total, 1);
    if (ptr == NULL || buf == NULL) {
        return common_fail(msg, COMMON_ERR_NOMEM, "%s: out of memory", what);
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *s = NULL;
        size_t len = 0;
        if (nil_ok && proto_r_nil(&again)) {
            continue; /* ptr[i] stays NULL */
        }
        rc = read_text(&again, lo, hi, &s, &len, "", inner);
        assert(rc == 0); /* the first pass read these bytes */
        memcpy(buf, s, len);
        buf[len] = '\0';
        ptr[i] = buf;
        buf += len + 1;
    }
    assert(again.off == r->off);
    *out = ptr;
    return 0;
}

/* A bin of little-endian words of size bytes: *count words, a view. */
static int read_words(proto_reader *r, uint64_t max_words, size_t size, const uint8_t **p,
                      size_t *count, const char *what, char *msg) {
    const void *v = NULL;
    size_t len = 0;
    int rc = proto_r_bin(r, (size_t)(max_words * size), &v, &len, what, msg);
    if (rc != 0) {
        return rc;
    }
    if (len % size != 0) {
        return common_fail(msg, COMMON_ERR_INVALID,
                           "%s: %zu bytes is not a whole number of %zu-byte words", what, len,
                           size);
    }
    *p = v;
    *count = len / size;
    return 0;
}

/* An 8-byte bin holding a double's bits (the patch metrics: NaN travels as it is). */
static int read_f64_bits(proto_reader *r, double *v, const char *what, char *msg) {
    const uint8_t *p = NULL;
    size_t n = 0;
    int rc = read_words(r, 1, 8, &p, &n, what, msg);
    if (rc == 0 && n != 1) {
        rc = common_fail(msg, COMMON_ERR_INVALID, "%s: an 8-byte bin, not %zu bytes", what, 8 * n);
    }
    if (rc == 0) {
        words_from_le(v, p, 1, 8);
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding                                                                                    */

static int read_result(proto_reader *r, interp_patch_result **out, char *msg) {
    char inner[COMMON_ERR_LEN];
    uint32_t n = 0, seen = 0, ndim = 0;
    model_shape shape = {0};
    char axes[sizeof((interp_patch_result *)0)->axes];
    char labels[sizeof((interp_patch_result *)0)->labels];
    double clean_metric = 0, corrupted_metric = 0;
    uint64_t n_forwards = 0, n_positions = 0;
    const uint8_t *values = NULL;
    size_t n_values = 0;
    int rc = proto_r_map(r, E_N, &n, "", msg);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        size_t which = 0, len = 0;
        const char *s = NULL;
        if ((rc = read_key(r, result_keys, E_N, &seen, &which, msg)) != 0) {
            break;
        }
        switch (which) {
        case E_SHAPE:
            rc = proto_r_array(r, MODEL_MAX_DIMS, &ndim, ".shape", msg);
            for (uint32_t d = 0; rc == 0 && d < ndim; d++) {
                uint64_t v = 0;
                if ((rc = proto_r_uint(r, MAX_ROWS, &v, "", inner)) == 0 && v == 0) {
                    rc = common_fail(inner, COMMON_ERR_INVALID, ": a dimension of 0");
                }
                if (rc != 0) {
                    rc = common_fail(msg, rc, ".shape[%" PRIu32 "]%s", d, inner);
                }
                shape.dims[d] = (size_t)v;
            }
            shape.ndim = (int)ndim;
            break;
        case E_AXES:
            if ((rc = read_text(r, 0, sizeof axes - 1, &s, &len, ".axes", msg)) == 0) {
                memcpy(axes, s, len);
                axes[len] = '\0';
            }
            break;
        case E_LABELS:
            if ((rc = read_text(r, 0, sizeof labels - 1, &s, &len, ".labels", msg)) == 0) {
                memcpy(labels, s, len);
                labels[len] = '\0';
            }
            break;
        case E_CLEAN_METRIC:
            rc = read_f64_bits(r, &clean_metric, ".clean_metric", msg);
            break;
        case E_CORRUPTED_METRIC:
            rc = read_f64_bits(r, &corrupted_metric, ".corrupted_metric", msg);
            break;
        case E_N_FORWARDS:
            rc = proto_r_uint(r, SIZE_MAX, &n_forwards, ".n_forwards", msg);
            break;
        case E_N_POSITIONS:
            rc = proto_r_uint(r, SIZE_MAX, &n_positions, ".n_positions", msg);
            break;
        case E_VALUES:
            rc = read_words(r, MAX_ROWS, 4, &values, &n_values, ".values", msg);
            break;
        default:
            assert(!"a key of the table");
        }
    }
    if (rc != 0 || (rc = check_all_keys(seen, result_keys, E_N, msg)) != 0) {
        return rc;
    }
    uint64_t numel = 1;
    for (int d = 0; d < shape.ndim; d++) {
        numel *= shape.dims[d]; /* each <= MAX_ROWS and the product stops past it: no overflow */
        if (numel > MAX_ROWS) {
            return common_fail(msg, COMMON_ERR_INVALID, ".shape: more than %" PRIu64 " values",
                               MAX_ROWS);
        }
    }
    if (numel != n_values) {
        return common_fail(msg, COMMON_ERR_INVALID, ".values: %zu values, the shape has %" PRIu64,
                           n_values, numel);
    }
    /* allocated as interp_patch_result_new does, so interp_patch_result_destroy frees it */
    interp_patch_result *res = calloc(1, sizeof *res);
    float *v = res != NULL ? malloc((numel > 0 ? numel : 1) * sizeof *v) : NULL;
    if (v == NULL) {
        free(res);
        return common_fail(msg, COMMON_ERR_NOMEM, ": out of memory for %" PRIu64 " values", numel);
    }
    words_from_le(v, values, n_values, 4);
    res->shape = shape;
    res->values = v;
    memcpy(res->axes, axes, sizeof axes);
    memcpy(res->labels, labels, sizeof labels);
    res->clean_metric = clean_metric;
    res->corrupted_metric = corrupted_metric;
    res->n_forwards = (size_t)n_forwards;
    res->n_positions = (size_t)n_positions;
    *out = res;
    return 0;
}

static int read_results_column(proto_reader *r, coordinator_results_msg *m, columns *c, char *msg) {
    char inner[COMMON_ERR_LEN];
    uint32_t n = 0;
    int rc = read_column_header(r, COORDINATOR_WIRE_MAX_PAIRS, c, &n, ".results", msg);
    if (rc != 0) {
        return rc;
    }
    size_t each = min_map_bytes(result_keys, E_N);
    if ((size_t)n > bytes_left(r) / each) {
        return common_fail(msg, COMMON_ERR_PARSE,
                           ".results: %" PRIu32 " results of at least %zu bytes, %zu bytes left", n,
                           each, bytes_left(r));
    }
    m->pr = work_mem_alloc(&m->mem, n, sizeof *m->pr);
    if (m->pr == NULL) {
        return common_fail(msg, COMMON_ERR_NOMEM, ".results: out of memory");
    }
    m->n_pr = n; /* entries stay NULL until read: the free destroys those that were */
    for (uint32_t i = 0; i < n; i++) {
        if ((rc = read_result(r, &m->pr[i], inner)) != 0) {
            return common_fail(msg, rc, ".results[%" PRIu32 "]%s", i, inner);
        }
    }
    return 0;
}

static int read_patch(proto_reader *r, coordinator_results_msg *m, char *msg) {
    char inner[COMMON_ERR_LEN];
    coordinator_patch_batch *b = &m->patch;
    struct coordinator_work_mem *mem = &m->mem;
    columns c = {0};
    uint32_t n = 0, seen = 0;
    void *p = NULL;
    const char **texts = NULL;
    int rc = proto_r_map(r, B_N, &n, "", inner);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        size_t which = 0;
        if ((rc = read_key(r, patch_keys, B_N, &seen, &which, inner)) != 0) {
            break;
        }
        switch (which) {
        case B_KIND: {
            const char *s = NULL;
            size_t len = 0;
            char name[MAX_KEY + 1];
            if ((rc = read_text(r, 1, MAX_KEY, &s, &len, ".kind", inner)) != 0) {
                break;
            }
            memcpy(name, s, len);
            name[len] = '\0';
            int kind = interp_patch_kind_parse(name);
            if (kind < 0) {
                rc =
                    common_fail(inner, COMMON_ERR_INVALID, ".kind: '%s' is not a patch kind", name);
            }
            b->kind = (interp_patch_kind)kind;
            break;
        }
        case B_GAME:
            rc = read_uint_column(r, mem, COORDINATOR_WIRE_MAX_PAIRS, INT64_MAX, 8, &p, &c, ".game",
                                  inner);
            b->game = p;
            break;
        case B_CUTOFF:
            rc = read_uint_column(r, mem, COORDINATOR_WIRE_MAX_PAIRS, UINT32_MAX, 4, &p, &c,
                                  ".cutoff", inner);
            b->cutoff = p;
            break;
        case B_CORRUPT_POS:
            rc = read_int_column(r, mem, -1, INT32_MAX, 4, &p, &c, ".corrupt_pos", inner);
            b->corrupt_pos = p;
            break;
        case B_CORRUPT_GAME:
            rc = read_int_column(r, mem, -1, INT64_MAX, 8, &p, &c, ".corrupt_game", inner);
            b->corrupt_game = p;
            break;
        case B_CLEAN_TOKEN:
            rc = read_text_column(r, mem, COORDINATOR_WIRE_MAX_PAIRS, 0, MAX_TEXT, true, &texts, &c,
                                  ".clean_token", inner);
            b->clean_token = texts;
            break;
        case B_CORRUPT_TOKEN:
            rc = read_text_column(r, mem, COORDINATOR_WIRE_MAX_PAIRS, 0, MAX_TEXT, true, &texts, &c,
                                  ".corrupt_token", inner);
            b->corrupt_token = texts;
            break;
        case B_METRIC:
            rc = read_text_column(r, mem, COORDINATOR_WIRE_MAX_PAIRS, 1, MAX_METRIC, false, &texts,
                                  &c, ".metric", inner);
            b->metric = texts;
            break;
        case B_NORMALIZED: {
            bool *flags = NULL;
            uint32_t nf = 0;
            if ((rc = read_column_header(r, COORDINATOR_WIRE_MAX_PAIRS, &c, &nf, ".normalized",
                                         inner)) != 0) {
                break;
            }
            if ((flags = work_mem_alloc(mem, nf, sizeof *flags)) == NULL) {
                rc = common_fail(inner, COMMON_ERR_NOMEM, ".normalized: out of memory");
                break;
            }
            for (uint32_t i = 0; rc == 0 && i < nf; i++) {
                char e[COMMON_ERR_LEN];
                if ((rc = proto_r_bool(r, &flags[i], "", e)) != 0) {
                    rc = common_fail(inner, rc, ".normalized[%" PRIu32 "]%s", i, e);
                }
            }
            b->normalized = flags;
            break;
        }
        case B_RESULTS:
            rc = read_results_column(r, m, &c, inner);
            break;
        default:
            assert(!"a key of the table");
        }
    }
    if (rc == 0) {
        rc = check_all_keys(seen, patch_keys, B_N, inner);
    }
    if (rc != 0) {
        return common_fail(msg, rc, ".patch%s", inner);
    }
    b->n = c.n;
    b->result = (const interp_patch_result *const *)m->pr;
    return 0;
}

static int read_legal(proto_reader *r, coordinator_results_msg *m, char *msg) {
    char inner[COMMON_ERR_LEN];
    columns c = {0};
    uint32_t n = 0, seen = 0;
    uint64_t T = 0;
    const char **labels = NULL;
    const uint8_t *count = NULL, *sum = NULL, *mn = NULL, *mx = NULL;
    size_t n_count = 0, n_sum = 0, n_min = 0, n_max = 0;
    const uint64_t max_words = INTERP_LEGAL_N_STATS * MAX_ROWS;
    int rc = proto_r_map(r, L_N, &n, "", inner);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        size_t which = 0;
        if ((rc = read_key(r, legal_keys, L_N, &seen, &which, inner)) != 0) {
            break;
        }
        switch (which) {
        case L_LABELS:
            rc = read_text_column(r, &m->mem, MAX_ROWS, 1, MAX_TEXT, false, &labels, &c, ".labels",
                                  inner);
            break;
        case L_T:
            rc = proto_r_uint(r, MAX_ROWS, &T, ".T", inner);
            break;
        case L_COUNT:
            rc = read_words(r, MAX_ROWS, 8, &count, &n_count, ".count", inner);
            break;
        case L_SUM:
            rc = read_words(r, max_words, 8, &sum, &n_sum, ".sum", inner);
            break;
        case L_MIN:
            rc = read_words(r, max_words, 4, &mn, &n_min, ".min", inner);
            break;
        case L_MAX:
            rc = read_words(r, max_words, 4, &mx, &n_max, ".max", inner);
            break;
        default:
            assert(!"a key of the table");
        }
    }
    if (rc == 0) {
        rc = check_all_keys(seen, legal_keys, L_N, inner);
    }
    uint64_t cells = (uint64_t)c.n * T; /* both <= MAX_ROWS: no overflow */
    if (rc == 0 && (c.n == 0 || T == 0 || cells > MAX_ROWS)) {
        rc = common_fail(inner, COMMON_ERR_INVALID,
                         ": %zu components x %" PRIu64 " positions, 1..%" PRIu64 " cells", c.n, T,
                         MAX_ROWS);
    }
    uint64_t all = INTERP_LEGAL_N_STATS * cells;
    if (rc == 0 && (n_count != cells || n_sum != all || n_min != all || n_max != all)) {
        rc = common_fail(inner, COMMON_ERR_INVALID,
                         ": count, sum, min, max hold %zu, %zu, %zu, %zu words; %zu components "
                         "x %" PRIu64 " positions need %" PRIu64 " and %" PRIu64 " each",
                         n_count, n_sum, n_min, n_max, c.n, T, cells, all);
    }
    interp_legal_stats *s = NULL;
    char why[COMMON_ERR_LEN];
    if (rc == 0 && (rc = interp_legal_stats_new(&s, c.n, labels, (size_t)T, why)) != 0) {
        rc = common_fail(inner, rc, ": %s", why);
    }
    if (rc != 0) {
        return common_fail(msg, rc, ".legal%s", inner);
    }
    words_from_le(s->count, count, n_count, 8);
    words_from_le(s->sum, sum, n_sum, 8);
    words_from_le(s->min, mn, n_min, 4);
    words_from_le(s->max, mx, n_max, 4);
    m->legal = s;
    return 0;
}

static int read_neurons(proto_reader *r, coordinator_results_msg *m, char *msg) {
    char inner[COMMON_ERR_LEN];
    uint32_t n = 0, seen = 0;
    uint64_t L = 0, M = 0, count[INTERP_NEURON_N_GROUPS] = {0};
    int64_t slice[2] = {0, 0};
    const uint8_t *sum = NULL;
    size_t n_sum = 0;
    int rc = proto_r_map(r, N_N, &n, "", inner);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        size_t which = 0;
        uint32_t na = 0;
        if ((rc = read_key(r, neuron_keys, N_N, &seen, &which, inner)) != 0) {
            break;
        }
        switch (which) {
        case N_L:
            rc = proto_r_uint(r, MODEL_MAX_LAYERS, &L, ".L", inner);
            break;
        case N_M:
            rc = proto_r_uint(r, MAX_D_MLP, &M, ".M", inner);
            break;
        case N_SLICE:
            if ((rc = proto_r_array(r, 2, &na, ".slice", inner)) == 0 && na != 2) {
                rc = common_fail(inner, COMMON_ERR_INVALID,
                                 ".slice: [begin, end], not %" PRIu32 " numbers", na);
            }
            for (uint32_t i = 0; rc == 0 && i < 2; i++) {
                rc = proto_r_int(r, LONG_MIN, LONG_MAX, &slice[i], ".slice[]", inner);
            }
            break;
        case N_COUNT:
            if ((rc = proto_r_array(r, INTERP_NEURON_N_GROUPS, &na, ".count", inner)) == 0 &&
                na != INTERP_NEURON_N_GROUPS) {
                rc = common_fail(inner, COMMON_ERR_INVALID, ".count: %" PRIu32 " groups, not %d",
                                 na, INTERP_NEURON_N_GROUPS);
            }
            for (uint32_t i = 0; rc == 0 && i < na; i++) {
                rc = proto_r_uint(r, UINT64_MAX, &count[i], ".count[]", inner);
            }
            break;
        case N_SUM:
            rc = read_words(r, INTERP_NEURON_N_GROUPS * (uint64_t)MODEL_MAX_LAYERS * MAX_D_MLP, 8,
                            &sum, &n_sum, ".sum", inner);
            break;
        default:
            assert(!"a key of the table");
        }
    }
    if (rc == 0) {
        rc = check_all_keys(seen, neuron_keys, N_N, inner);
    }
    if (rc == 0 && (L == 0 || M == 0 || n_sum != INTERP_NEURON_N_GROUPS * L * M)) {
        rc = common_fail(inner, COMMON_ERR_INVALID,
                         ".sum: %zu sums, %d groups x %" PRIu64 " layers x %" PRIu64
                         " neurons (each >= 1)",
                         n_sum, INTERP_NEURON_N_GROUPS, L, M);
    }
    interp_neuron_stats *s = NULL;
    if (rc == 0) {
        model_config cfg = {0};
        cfg.n_layers = (int)L;
        cfg.d_mlp = (int)M;
        char why[COMMON_ERR_LEN];
        if ((rc = interp_neuron_stats_new(&s, &cfg, (long)slice[0], (long)slice[1], why)) != 0) {
            rc = common_fail(inner, rc, ": %s", why);
        }
    }
    if (rc != 0) {
        return common_fail(msg, rc, ".neurons%s", inner);
    }
    memcpy(s->count, count, sizeof s->count);
    words_from_le(s->sum, sum, n_sum, 8);
    m->neurons = s;
    return 0;
}

static int read_predictions(proto_reader *r, coordinator_results_msg *m, char *msg) {
    char inner[COMMON_ERR_LEN];
    coordinator_prediction_batch *b = &m->predictions;
    columns c = {0};
    uint32_t n = 0, seen = 0;
    void *p = NULL;
    const char **tokens = NULL;
    const uint8_t *logprob = NULL, *legal = NULL;
    size_t n_logprob = 0, n_legal = 0;
    int rc = proto_r_map(r, Q_N, &n, "", inner);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        size_t which = 0;
        if ((rc = read_key(r, prediction_keys, Q_N, &seen, &which, inner)) != 0) {
            break;
        }
        switch (which) {
        case Q_GAME:
            rc = read_uint_column(r, &m->mem, MAX_ROWS, INT64_MAX, 8, &p, &c, ".game", inner);
            b->game = p;
            break;
        case Q_POS:
            rc = read_uint_column(r, &m->mem, MAX_ROWS, UINT32_MAX, 4, &p, &c, ".pos", inner);
            b->pos = p;
            break;
        case Q_RANK:
            rc = read_uint_column(r, &m->mem, MAX_ROWS, UINT32_MAX, 4, &p, &c, ".rank", inner);
            b->rank = p;
            break;
        case Q_TOKEN:
            rc = read_text_column(r, &m->mem, MAX_ROWS, 0, MAX_TEXT, false, &tokens, &c, ".token",
                                  inner);
            b->token = tokens;
            break;
        case Q_LOGPROB:
            if ((rc = read_words(r, MAX_ROWS, 4, &logprob, &n_logprob, ".logprob", inner)) == 0) {
                rc = column_count(&c, n_logprob, ".logprob", inner);
            }
            break;
        case Q_LEGAL:
            if ((rc = read_words(r, MAX_ROWS, 1, &legal, &n_legal, ".legal", inner)) == 0) {
                rc = column_count(&c, n_legal, ".legal", inner);
            }
            for (size_t i = 0; rc == 0 && i < n_legal; i++) {
                if (legal[i] > 1) {
                    rc = common_fail(inner, COMMON_ERR_INVALID, ".legal[%zu]: %u, not 0 or 1", i,
                                     (unsigned)legal[i]);
                }
            }
            break;
        default:
            assert(!"a key of the table");
        }
    }
    if (rc == 0) {
        rc = check_all_keys(seen, prediction_keys, Q_N, inner);
    }
    float *lp = NULL;
    uint8_t *lg = NULL;
    if (rc == 0 && ((lp = work_mem_alloc(&m->mem, c.n, sizeof *lp)) == NULL ||
                    (lg = work_mem_alloc(&m->mem, c.n, 1)) == NULL)) {
        rc = common_fail(inner, COMMON_ERR_NOMEM, ": out of memory");
    }
    if (rc != 0) {
        return common_fail(msg, rc, ".predictions%s", inner);
    }
    words_from_le(lp, logprob, c.n, 4);
    memcpy(lg, legal, c.n);
    b->n = c.n;
    b->logprob = lp;
    b->legal = lg;
    return 0;
}

int coordinator_results_decode(const void *buf, size_t len, coordinator_results_msg **out,
                               char *err) {
    char msg[COMMON_ERR_LEN];
    assert(out != NULL);
    if (len > PROTO_MAX_MESSAGE) {
        return common_fail(err, COMMON_ERR_INVALID, "results: %zu bytes, at most %zu", len,
                           PROTO_MAX_MESSAGE);
    }
    coordinator_results_msg *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "results: out of memory");
    }
    proto_reader r;
    proto_reader_init(&r, buf, len);
    uint32_t n = 0, seen = 0;
    int rc = proto_r_map(&r, R_N, &n, "", msg);
    for (uint32_t k = 0; rc == 0 && k < n; k++) {
        size_t which = 0;
        if ((rc = read_key(&r, top_keys, R_N, &seen, &which, msg)) != 0) {
            break;
        }
        switch (which) {
        case R_PATCH:
            rc = read_patch(&r, m, msg);
            break;
        case R_LEGAL:
            rc = read_legal(&r, m, msg);
            break;
        case R_NEURONS:
            rc = read_neurons(&r, m, msg);
            break;
        case R_PREDICTIONS:
            rc = read_predictions(&r, m, msg);
            break;
        default:
            assert(!"a key of the table");
        }
    }
    if (rc == 0) {
        rc = check_end(&r, msg);
    }
    if (rc != 0) {
        coordinator_results_msg_free(&m);
        return common_fail(err, rc, "results%s", msg);
    }
    m->r.patch = (seen & (1u << R_PATCH)) ? &m->patch : NULL;
    m->r.legal = m->legal;
    m->r.neurons = m->neurons;
    m->r.predictions = (seen & (1u << R_PREDICTIONS)) ? &m->predictions : NULL;
    *out = m;
    return 0;
}

const coordinator_results *coordinator_results_msg_get(const coordinator_results_msg *m) {
    assert(m != NULL);
    return &m->r;
}

void coordinator_results_msg_free(coordinator_results_msg **m) {
    if (m == NULL || *m == NULL) {
        return;
    }
    for (size_t i = 0; i < (*m)->n_pr; i++) {
        interp_patch_result_destroy(&(*m)->pr[i]);
    }
    interp_legal_stats_destroy(&(*m)->legal);
    interp_neuron_stats_destroy(&(*m)->neurons);
    work_mem_release(&(*m)->mem);
    free(*m);
    *m = NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding                                                                                    */

/* n native words of size bytes as one little-endian bin; false when out of memory. */
static bool write_words(proto_writer *pw, const void *src, size_t n, size_t size) {
    if (n == 0) {
        proto_w_bin(pw, NULL, 0);
        return true;
    }
    uint8_t *tmp = malloc(n * size);
    if (tmp == NULL) {
        return false;
    }
    words_to_le(tmp, src, n, size);
    proto_w_bin(pw, tmp, n * size);
    free(tmp);
    return true;
}

/* Whether s (NULL allowed when nil_ok) is a text the decoder takes: lo..hi bytes. */
static bool text_ok(const char *s, size_t lo, size_t hi, bool nil_ok) {
    if (s == NULL) {
        return nil_ok;
    }
    size_t n = strlen(s);
    return n >= lo && n <= hi;
}

static int check_result(const interp_patch_result *res, size_t i, char *err) {
    uint64_t numel = 1;
    bool ok = res != NULL && res->values != NULL && res->shape.ndim >= 0 &&
              res->shape.ndim <= MODEL_MAX_DIMS &&
              memchr(res->axes, '\0', sizeof res->axes) != NULL &&
              memchr(res->labels, '\0', sizeof res->labels) != NULL;
    for (int d = 0; ok && d < res->shape.ndim; d++) {
        ok = res->shape.dims[d] >= 1 && res->shape.dims[d] <= MAX_ROWS &&
             (numel *= res->shape.dims[d]) <= MAX_ROWS;
    }
    if (!ok) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "results encode: pair %zu's result is missing or out of range", i);
    }
    return 0;
}

static int check_patch(const coordinator_patch_batch *b, char *err) {
    if (b->n > COORDINATOR_WIRE_MAX_PAIRS || (int)b->kind < 0 ||
        b->kind >= INTERP_PATCH_KIND_COUNT ||
        (b->n > 0 && (b->game == NULL || b->cutoff == NULL || b->corrupt_pos == NULL ||
                      b->metric == NULL || b->result == NULL))) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "results encode: a patch batch of %zu pairs out of range or lacking "
                           "a column",
                           b->n);
    }
    for (size_t i = 0; i < b->n; i++) {
        int rc = check_result(b->result[i], i, err);
        if (rc != 0) {
            return rc;
        }
        if (b->game[i] > INT64_MAX || b->corrupt_pos[i] < -1 ||
            (b->corrupt_game != NULL && b->corrupt_game[i] < -1) ||
            !text_ok(b->clean_token != NULL ? b->clean_token[i] : NULL, 0, MAX_TEXT, true) ||
            !text_ok(b->corrupt_token != NULL ? b->corrupt_token[i] : NULL, 0, MAX_TEXT, true) ||
            !text_ok(b->metric[i], 1, MAX_METRIC, false)) {
            return common_fail(err, COMMON_ERR_INVALID, "results encode: pair %zu out of range", i);
        }
    }
    return 0;
}

static bool write_patch(proto_writer *pw, const coordinator_patch_batch *b) {
    uint32_t n = (uint32_t)b->n;
    proto_w_map(pw, B_N);
    proto_w_str(pw, "kind");
    proto_w_str(pw, interp_patch_kind_name(b->kind));
    proto_w_str(pw, "game");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_uint(pw, b->game[i]);
    }
    proto_w_str(pw, "cutoff");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_uint(pw, b->cutoff[i]);
    }
    proto_w_str(pw, "corrupt_pos");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_int(pw, b->corrupt_pos[i]);
    }
    /* a NULL column goes as what the store reads for it: nil texts, -1 games, false flags */
    proto_w_str(pw, "clean_token");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_str(pw, b->clean_token != NULL ? b->clean_token[i] : NULL);
    }
    proto_w_str(pw, "corrupt_token");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_str(pw, b->corrupt_token != NULL ? b->corrupt_token[i] : NULL);
    }
    proto_w_str(pw, "corrupt_game");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_int(pw, b->corrupt_game != NULL ? b->corrupt_game[i] : -1);
    }
    proto_w_str(pw, "metric");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_str(pw, b->metric[i]);
    }
    proto_w_str(pw, "normalized");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_bool(pw, b->normalized != NULL && b->normalized[i]);
    }
    proto_w_str(pw, "results");
    proto_w_array(pw, n);
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++) {
        const interp_patch_result *res = b->result[i];
        proto_w_map(pw, E_N);
        proto_w_str(pw, "shape");
        proto_w_array(pw, (uint32_t)res->shape.ndim);
        for (int d = 0; d < res->shape.ndim; d++) {
            proto_w_uint(pw, res->shape.dims[d]);
        }
        proto_w_str(pw, "axes");
        proto_w_str(pw, res->axes);
        proto_w_str(pw, "labels");
        proto_w_str(pw, res->labels);
        uint8_t bits[8];
        words_to_le(bits, &res->clean_metric, 1, 8);
        proto_w_str(pw, "clean_metric");
        proto_w_bin(pw, bits, 8);
        words_to_le(bits, &res->corrupted_metric, 1, 8);
        proto_w_str(pw, "corrupted_metric");
        proto_w_bin(pw, bits, 8);
        proto_w_str(pw, "n_forwards");
        proto_w_uint(pw, res->n_forwards);
        proto_w_str(pw, "n_positions");
        proto_w_uint(pw, res->n_positions);
        proto_w_str(pw, "values");
        ok = write_words(pw, res->values, model_shape_numel(&res->shape), 4);
    }
    return ok;
}

static int check_legal(const interp_legal_stats *s, char *err) {
    bool ok = s->n_comp >= 1 && s->T >= 1 && s->n_comp <= MAX_ROWS && s->T <= MAX_ROWS &&
              (uint64_t)s->n_comp * s->T <= MAX_ROWS && s->labels != NULL;
    for (size_t i = 0; ok && i < s->n_comp; i++) {
        ok = text_ok(s->labels[i], 1, MAX_TEXT, false);
    }
    return ok ? 0
              : common_fail(err, COMMON_ERR_INVALID,
                            "results encode: legal statistics of %zu components x %zu positions "
                            "out of range",
                            s->n_comp, s->T);
}

static bool write_legal(proto_writer *pw, const interp_legal_stats *s) {
    size_t cells = s->n_comp * s->T, all = INTERP_LEGAL_N_STATS * cells;
    proto_w_map(pw, L_N);
    proto_w_str(pw, "labels");
    proto_w_array(pw, (uint32_t)s->n_comp);
    for (size_t i = 0; i < s->n_comp; i++) {
        proto_w_str(pw, s->labels[i]);
    }
    proto_w_str(pw, "T");
    proto_w_uint(pw, s->T);
    proto_w_str(pw, "count");
    bool ok = write_words(pw, s->count, cells, 8);
    proto_w_str(pw, "sum");
    ok = ok && write_words(pw, s->sum, all, 8);
    proto_w_str(pw, "min");
    ok = ok && write_words(pw, s->min, all, 4);
    proto_w_str(pw, "max");
    return ok && write_words(pw, s->max, all, 4);
}

static bool write_neurons(proto_writer *pw, const interp_neuron_stats *s) {
    proto_w_map(pw, N_N);
    proto_w_str(pw, "L");
    proto_w_uint(pw, s->L);
    proto_w_str(pw, "M");
    proto_w_uint(pw, s->M);
    proto_w_str(pw, "slice");
    proto_w_array(pw, 2);
    proto_w_int(pw, s->slice_begin);
    proto_w_int(pw, s->slice_end);
    proto_w_str(pw, "count");
    proto_w_array(pw, INTERP_NEURON_N_GROUPS);
    for (int g = 0; g < INTERP_NEURON_N_GROUPS; g++) {
        proto_w_uint(pw, s->count[g]);
    }
    proto_w_str(pw, "sum");
    return write_words(pw, s->sum, INTERP_NEURON_N_GROUPS * s->L * s->M, 8);
}

static int check_predictions(const coordinator_prediction_batch *b, char *err) {
    bool ok = b->n <= MAX_ROWS &&
              (b->n == 0 || (b->game != NULL && b->pos != NULL && b->rank != NULL &&
                             b->token != NULL && b->logprob != NULL && b->legal != NULL));
    for (size_t i = 0; ok && i < b->n; i++) {
        ok = b->game[i] <= INT64_MAX && text_ok(b->token[i], 0, MAX_TEXT, false);
    }
    return ok ? 0
              : common_fail(err, COMMON_ERR_INVALID,
                            "results encode: %zu prediction rows out of range", b->n);
}

static bool write_predictions(proto_writer *pw, const coordinator_prediction_batch *b) {
    uint32_t n = (uint32_t)b->n;
    proto_w_map(pw, Q_N);
    proto_w_str(pw, "game");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_uint(pw, b->game[i]);
    }
    proto_w_str(pw, "pos");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_uint(pw, b->pos[i]);
    }
    proto_w_str(pw, "rank");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_uint(pw, b->rank[i]);
    }
    proto_w_str(pw, "token");
    proto_w_array(pw, n);
    for (size_t i = 0; i < n; i++) {
        proto_w_str(pw, b->token[i]);
    }
    proto_w_str(pw, "logprob");
    bool ok = write_words(pw, b->logprob, n, 4);
    /* the store keeps legal != 0, so a flag goes as 0 or 1 */
    uint8_t *legal = malloc(n > 0 ? n : 1);
    if (legal == NULL) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        legal[i] = b->legal[i] != 0;
    }
    proto_w_str(pw, "legal");
    proto_w_bin(pw, legal, n);
    free(legal);
    return ok;
}

int coordinator_results_encode(const coordinator_results *r, uint8_t **out, size_t *len,
                               char *err) {
    assert(r != NULL && out != NULL && len != NULL);
    int rc = 0;
    if ((r->patch != NULL && (rc = check_patch(r->patch, err)) != 0) ||
        (r->legal != NULL && (rc = check_legal(r->legal, err)) != 0) ||
        (r->predictions != NULL && (rc = check_predictions(r->predictions, err)) != 0)) {
        return rc;
    }
    if (r->neurons != NULL && (r->neurons->L < 1 || r->neurons->L > MODEL_MAX_LAYERS ||
                               r->neurons->M < 1 || r->neurons->M > MAX_D_MLP)) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "results encode: neuron statistics of %zu x %zu out of range",
                           r->neurons->L, r->neurons->M);
    }
    proto_writer pw;
    proto_writer_init(&pw);
    proto_w_map(&pw, (uint32_t)((r->patch != NULL) + (r->legal != NULL) + (r->neurons != NULL) +
                                (r->predictions != NULL)));
    bool ok = true;
    if (r->patch != NULL) {
        proto_w_str(&pw, "patch");
        ok = write_patch(&pw, r->patch);
    }
    if (ok && r->legal != NULL) {
        proto_w_str(&pw, "legal");
        ok = write_legal(&pw, r->legal);
    }
    if (ok && r->neurons != NULL) {
        proto_w_str(&pw, "neurons");
        ok = write_neurons(&pw, r->neurons);
    }
    if (ok && r->predictions != NULL) {
        proto_w_str(&pw, "predictions");
        ok = write_predictions(&pw, r->predictions);
    }
    if (!ok) {
        proto_writer_free(&pw);
        return common_fail(err, COMMON_ERR_NOMEM, "results encode: out of memory");
    }
    uint8_t *bytes = NULL;
    size_t n_bytes = 0;
    if ((rc = proto_writer_finish(&pw, &bytes, &n_bytes, err)) != 0) {
        return rc;
    }
    if (n_bytes > PROTO_MAX_MESSAGE) {
        free(bytes);
        return common_fail(err, COMMON_ERR_INVALID, "results encode: %zu bytes, at most %zu",
                           n_bytes, PROTO_MAX_MESSAGE);
    }
    *out = bytes;
    *len = n_bytes;
    return 0;
}
