/*
 * proto's MessagePack layer: a writer that always picks the smallest encoding of a value, and a
 * pull parser over borrowed, hostile bytes.
 *
 * The subset is the one the protocol uses: nil, bool, integers (positive and negative fixint,
 * uint8..64, int8..64), float32/64, str, bin, array and map. Ext types and 0xc1 are malformed
 * here (PARSE), wherever they appear. Every read looks at one object's header, checks that the
 * header itself is present, then that its declared length (str, bin) or count (array: one byte
 * per element at least, map: two) fits in the bytes that are left, and only then the caller's
 * cap, so nothing is ever sized from a number the input has not paid for in bytes. The reader
 * never recurses: the message decoder is driven by the schema, and proto_r_skip walks nested
 * containers with a fixed stack as deep as its caller allows.
 */
#include "proto/proto.h"
#include "proto/proto_int.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Writer                                                                                      */

void proto_writer_init(proto_writer *w) {
    assert(w);
    w->buf = NULL;
    w->len = 0;
    w->cap = 0;
    w->failed = false;
}

void proto_writer_free(proto_writer *w) {
    if (!w) {
        return;
    }
    free(w->buf);
    proto_writer_init(w);
}

/* Makes room for n more bytes; false (and w->failed) when that cannot be had. */
static bool reserve(proto_writer *w, size_t n) {
    if (w->failed) {
        return false;
    }
    if (n > SIZE_MAX - w->len) {
        w->failed = true;
        return false;
    }
    size_t need = w->len + n;
    if (need <= w->cap) {
        return true;
    }
    /* a first buffer that holds a TASK or a RESULT whole: growing from less cost a few
     * reallocations (each a copy) per message */
    size_t cap = w->cap ? w->cap : 2048;
    while (cap < need) {
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    }
    uint8_t *bigger = realloc(w->buf, cap);
    if (!bigger) {
        w->failed = true;
        return false;
    }
    w->buf = bigger;
    w->cap = cap;
    return true;
}

static void put(proto_writer *w, const void *p, size_t n) {
    if (n > 0 && reserve(w, n)) {
        memcpy(w->buf + w->len, p, n);
        w->len += n;
    }
}

/* A type byte followed by the n low bytes of v, big-endian (n = 0, 1, 2, 4 or 8). */
static void put_head(proto_writer *w, uint8_t type, uint64_t v, size_t n) {
    uint8_t b[9];
    b[0] = type;
    for (size_t i = 0; i < n; i++) {
        b[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    }
    put(w, b, 1 + n);
}

/* The header of a str, bin, array or map of n bytes or entries: the fix form when `fix_max`
 * allows one (fix_max 0: none), else the 8-, 16- or 32-bit form (type8 0: none). A length past
 * 32 bits cannot be written; it fails the writer like an allocation would. */
static void put_len(proto_writer *w, uint64_t n, uint8_t fix, uint64_t fix_max, uint8_t type8,
                    uint8_t type16, uint8_t type32) {
    if (fix_max > 0 && n <= fix_max) {
        put_head(w, (uint8_t)(fix | n), 0, 0);
    } else if (type8 && n <= UINT8_MAX) {
        put_head(w, type8, n, 1);
    } else if (n <= UINT16_MAX) {
        put_head(w, type16, n, 2);
    } else if (n <= UINT32_MAX) {
        put_head(w, type32, n, 4);
    } else {
        w->failed = true;
    }
}

void proto_w_map(proto_writer *w, uint32_t n) {
    put_len(w, n, 0x80, 15, 0, 0xde, 0xdf);
}

void proto_w_array(proto_writer *w, uint32_t n) {
    put_len(w, n, 0x90, 15, 0, 0xdc, 0xdd);
}

void proto_w_str(proto_writer *w, const char *s) {
    if (!s) {
        proto_w_nil(w);
        return;
    }
    proto_w_strn(w, s, strlen(s));
}

void proto_w_strn(proto_writer *w, const char *s, size_t n) {
    assert(s || n == 0);
    if (n <= 31 && !w->failed && w->cap - w->len > n) {
        /* the common case (a key, a token) written in place: fixstr header and bytes */
        w->buf[w->len] = (uint8_t)(0xa0 | n);
        memcpy(w->buf + w->len + 1, s, n);
        w->len += n + 1;
        return;
    }
    put_len(w, n, 0xa0, 31, 0xd9, 0xda, 0xdb);
    if (!w->failed) {
        put(w, s, n);
    }
}

void proto_w_bin(proto_writer *w, const void *p, size_t n) {
    assert(p || n == 0);
    put_len(w, n, 0, 0, 0xc4, 0xc5, 0xc6);
    if (!w->failed) {
        put(w, p, n);
    }
}

void proto_w_uint(proto_writer *w, uint64_t v) {
    if (v <= 0x7f) {
        put_head(w, (uint8_t)v, 0, 0);
    } else if (v <= UINT8_MAX) {
        put_head(w, 0xcc, v, 1);
    } else if (v <= UINT16_MAX) {
        put_head(w, 0xcd, v, 2);
    } else if (v <= UINT32_MAX) {
        put_head(w, 0xce, v, 4);
    } else {
        put_head(w, 0xcf, v, 8);
    }
}

void proto_w_int(proto_writer *w, int64_t v) {
    if (v >= 0) {
        proto_w_uint(w, (uint64_t)v);
        return;
    }
    /* two's complement bits of v; the put_head truncation keeps the low bytes */
    uint64_t bits = (uint64_t)v;
    if (v >= -32) {
        put_head(w, (uint8_t)(bits & 0xff), 0, 0);
    } else if (v >= INT8_MIN) {
        put_head(w, 0xd0, bits, 1);
    } else if (v >= INT16_MIN) {
        put_head(w, 0xd1, bits, 2);
    } else if (v >= INT32_MIN) {
        put_head(w, 0xd2, bits, 4);
    } else {
        put_head(w, 0xd3, bits, 8);
    }
}

/* Always float64: a double goes out exactly, and readers of any language take it as is. */
void proto_w_f64(proto_writer *w, double v) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_head(w, 0xcb, bits, 8);
}

void proto_w_bool(proto_writer *w, bool v) {
    put_head(w, v ? 0xc3 : 0xc2, 0, 0);
}

void proto_w_nil(proto_writer *w) {
    put_head(w, 0xc0, 0, 0);
}

int proto_writer_finish(proto_writer *w, uint8_t **out, size_t *len, char *err) {
    assert(w && out && len);
    if (w->failed) {
        proto_writer_free(w);
        return common_fail(err, COMMON_ERR_NOMEM,
                           "proto_writer: out of memory (or an object over 4 GiB)");
    }
    if (!w->buf && !reserve(w, 1)) { /* nothing written: still a buffer to free */
        proto_writer_free(w);
        return common_fail(err, COMMON_ERR_NOMEM, "proto_writer: out of memory");
    }
    *out = w->buf;
    *len = w->len;
    proto_writer_init(w);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Reader                                                                                      */

typedef enum mp_kind {
    MP_NIL,
    MP_BOOL,
    MP_UINT, /* any integer >= 0, whatever its encoding */
    MP_NEG,  /* any integer < 0 */
    MP_FLOAT,
    MP_STR,
    MP_BIN,
    MP_ARRAY,
    MP_MAP
} mp_kind;

/* One object's header, read but not consumed. */
typedef struct mp_head {
    mp_kind kind;
    size_t hdr; /* bytes of the type byte and what follows it at a fixed size: a number's value
                   or a str/bin/array/map's length */
    uint64_t u; /* MP_UINT: the value; MP_STR, MP_BIN: bytes; MP_ARRAY, MP_MAP: entries;
                   MP_BOOL: 0 or 1 */
    int64_t i;  /* MP_NEG: the value */
    double f;   /* MP_FLOAT: the value (float32 widened) */
} mp_head;

static const char *kind_name(mp_kind k) {
    static const char *const names[] = {"nil",
                                        "a bool",
                                        "an unsigned integer",
                                        "a negative integer",
                                        "a float",
                                        "a str",
                                        "a bin",
                                        "an array",
                                        "a map"};
    return names[k];
}

void proto_reader_init(proto_reader *r, const void *buf, size_t len) {
    assert(r && (buf || len == 0));
    r->p = buf;
    r->len = len;
    r->off = 0;
}

static size_t left(const proto_reader *r) {
    assert(r->off <= r->len);
    return r->len - r->off;
}

static int read_head(const proto_reader *r, mp_head *h, const char *what, char *err) {
    size_t avail = left(r);
    if (avail == 0) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: truncated (the message ends here)", what);
    }
    uint8_t b = r->p[r->off];
    size_t extra = 0; /* bytes after the type byte */
    bool is_signed = false, is_f32 = false;
    memset(h, 0, sizeof *h);
    if (b <= 0x7f) {
        h->kind = MP_UINT;
        h->u = b;
    } else if (b <= 0x8f) {
        h->kind = MP_MAP;
        h->u = b & 0x0fu;
    } else if (b <= 0x9f) {
        h->kind = MP_ARRAY;
        h->u = b & 0x0fu;
    } else if (b <= 0xbf) {
        h->kind = MP_STR;
        h->u = b & 0x1fu;
    } else if (b >= 0xe0) {
        h->kind = MP_NEG;
        h->i = (int64_t)b - 256;
    } else {
        switch (b) {
        case 0xc0:
            h->kind = MP_NIL;
            break;
        case 0xc2:
        case 0xc3:
            h->kind = MP_BOOL;
            h->u = b == 0xc3;
            break;
        case 0xc4:
        case 0xc5:
        case 0xc6:
            h->kind = MP_BIN;
            extra = (size_t)1 << (b - 0xc4);
            break;
        case 0xca:
        case 0xcb:
            h->kind = MP_FLOAT;
            is_f32 = b == 0xca;
            extra = is_f32 ? 4 : 8;
            break;
        case 0xcc:
        case 0xcd:
        case 0xce:
        case 0xcf:
            h->kind = MP_UINT;
            extra = (size_t)1 << (b - 0xcc);
            break;
        case 0xd0:
        case 0xd1:
        case 0xd2:
        case 0xd3:
            h->kind = MP_UINT; /* or MP_NEG, once the sign is known */
            is_signed = true;
            extra = (size_t)1 << (b - 0xd0);
            break;
        case 0xd9:
        case 0xda:
        case 0xdb:
            h->kind = MP_STR;
            extra = (size_t)1 << (b - 0xd9);
            break;
        case 0xdc:
        case 0xdd:
            h->kind = MP_ARRAY;
            extra = b == 0xdc ? 2 : 4;
            break;
        case 0xde:
        case 0xdf:
            h->kind = MP_MAP;
            extra = b == 0xde ? 2 : 4;
            break;
        case 0xc1:
            return common_fail(err, COMMON_ERR_PARSE, "%s: byte 0xc1 is not MessagePack", what);
        default: /* 0xc7..0xc9 ext 8/16/32, 0xd4..0xd8 fixext */
            return common_fail(err, COMMON_ERR_PARSE,
                               "%s: MessagePack ext type 0x%02x is not used by the protocol", what,
                               (unsigned)b);
        }
    }
    if (avail - 1 < extra) {
        return common_fail(err, COMMON_ERR_PARSE,
                           "%s: truncated (a %zu-byte header, %zu bytes left)", what, 1 + extra,
                           avail);
    }
    h->hdr = 1 + extra;
    if (extra == 0) {
        return 0;
    }
    uint64_t v = 0;
    for (size_t k = 0; k < extra; k++) {
        v = v << 8 | r->p[r->off + 1 + k];
    }
    if (h->kind == MP_FLOAT) {
        if (is_f32) {
            uint32_t bits = (uint32_t)v;
            float f;
            memcpy(&f, &bits, sizeof f);
            h->f = f;
        } else {
            memcpy(&h->f, &v, sizeof h->f);
        }
    } else if (is_signed && (v >> (8 * extra - 1) & 1)) {
        /* negative: -(~v) - 1 over the value's width, which cannot overflow int64 */
        uint64_t mask = extra == 8 ? UINT64_MAX : ((uint64_t)1 << (8 * extra)) - 1;
        h->kind = MP_NEG;
        h->i = -(int64_t)(~v & mask) - 1;
    } else {
        h->u = v;
    }
    return 0;
}

static int wrong_type(const mp_head *h, const char *expected, const char *what, char *err) {
    return common_fail(err, COMMON_ERR_INVALID, "%s: expected %s, got %s", what, expected,
                       kind_name(h->kind));
}

/* The header of an array or map: each element of an array takes a byte at least, each entry of
 * a map two (a key and a value). */
static int read_count(proto_reader *r, mp_kind kind, uint32_t max, uint32_t *n, const char *what,
                      char *err) {
    mp_head h;
    int rc = read_head(r, &h, what, err);
    if (rc != 0) {
        return rc;
    }
    if (h.kind != kind) {
        return wrong_type(&h, kind_name(kind), what, err);
    }
    uint64_t per_entry = kind == MP_MAP ? 2 : 1;
    size_t rem = left(r) - h.hdr;
    if (h.u > rem / per_entry) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: %s of %" PRIu64 " entries in %zu bytes",
                           what, kind_name(kind), h.u, rem);
    }
    if (h.u > max) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: %" PRIu64 " entries, at most %" PRIu32,
                           what, h.u, max);
    }
    *n = (uint32_t)h.u;
    r->off += h.hdr;
    return 0;
}

int proto_r_map(proto_reader *r, uint32_t max, uint32_t *n, const char *what, char *err) {
    assert(r && n && what);
    return read_count(r, MP_MAP, max, n, what, err);
}

int proto_r_array(proto_reader *r, uint32_t max, uint32_t *n, const char *what, char *err) {
    assert(r && n && what);
    return read_count(r, MP_ARRAY, max, n, what, err);
}

/* A str or bin: its bytes as a view. */
static int read_bytes(proto_reader *r, mp_kind kind, size_t max, const uint8_t **p, size_t *n,
                      const char *what, char *err) {
    mp_head h;
    int rc = read_head(r, &h, what, err);
    if (rc != 0) {
        return rc;
    }
    if (h.kind != kind) {
        return wrong_type(&h, kind_name(kind), what, err);
    }
    size_t rem = left(r) - h.hdr;
    if (h.u > rem) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: %s of %" PRIu64 " bytes, %zu left", what,
                           kind_name(kind), h.u, rem);
    }
    if (h.u > max) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: %" PRIu64 " bytes, at most %zu", what, h.u,
                           max);
    }
    *p = r->p + r->off + h.hdr;
    *n = (size_t)h.u;
    r->off += h.hdr + (size_t)h.u;
    return 0;
}

int proto_r_str(proto_reader *r, size_t max, const char **s, size_t *n, const char *what,
                char *err) {
    assert(r && s && n && what);
    const uint8_t *p = NULL;
    int rc = read_bytes(r, MP_STR, max, &p, n, what, err);
    if (rc == 0) {
        *s = (const char *)p;
    }
    return rc;
}

int proto_r_bin(proto_reader *r, size_t max, const void **p, size_t *n, const char *what,
                char *err) {
    assert(r && p && n && what);
    const uint8_t *b = NULL;
    int rc = read_bytes(r, MP_BIN, max, &b, n, what, err);
    if (rc == 0) {
        *p = b;
    }
    return rc;
}

int proto_r_uint(proto_reader *r, uint64_t hi, uint64_t *v, const char *what, char *err) {
    assert(r && v && what);
    mp_head h;
    int rc = read_head(r, &h, what, err);
    if (rc != 0) {
        return rc;
    }
    if (h.kind == MP_NEG) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "%s: %" PRId64 ", expected an unsigned integer (at least 0)", what, h.i);
    }
    if (h.kind != MP_UINT) {
        return wrong_type(&h, "an unsigned integer", what, err);
    }
    if (h.u > hi) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: %" PRIu64 ", at most %" PRIu64, what, h.u,
                           hi);
    }
    *v = h.u;
    r->off += h.hdr;
    return 0;
}

int proto_r_int(proto_reader *r, int64_t lo, int64_t hi, int64_t *v, const char *what, char *err) {
    assert(r && v && what && lo <= hi);
    mp_head h;
    int rc = read_head(r, &h, what, err);
    if (rc != 0) {
        return rc;
    }
    int64_t x;
    if (h.kind == MP_UINT) {
        if (hi < 0 || h.u > (uint64_t)hi) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: %" PRIu64 ", at most %" PRId64, what,
                               h.u, hi);
        }
        x = (int64_t)h.u;
    } else if (h.kind == MP_NEG) {
        x = h.i;
    } else {
        return wrong_type(&h, "an integer", what, err);
    }
    if (x < lo) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: %" PRId64 ", at least %" PRId64, what, x,
                           lo);
    }
    if (x > hi) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: %" PRId64 ", at most %" PRId64, what, x,
                           hi);
    }
    *v = x;
    r->off += h.hdr;
    return 0;
}

int proto_r_f64(proto_reader *r, double *v, const char *what, char *err) {
    assert(r && v && what);
    mp_head h;
    int rc = read_head(r, &h, what, err);
    if (rc != 0) {
        return rc;
    }
    if (h.kind != MP_FLOAT) {
        return wrong_type(&h, "a float", what, err);
    }
    if (isnan(h.f)) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: NaN is not a value", what);
    }
    if (isinf(h.f)) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: infinite values are not allowed", what);
    }
    *v = h.f;
    r->off += h.hdr;
    return 0;
}

int proto_r_bool(proto_reader *r, bool *v, const char *what, char *err) {
    assert(r && v && what);
    mp_head h;
    int rc = read_head(r, &h, what, err);
    if (rc != 0) {
        return rc;
    }
    if (h.kind != MP_BOOL) {
        return wrong_type(&h, "a bool", what, err);
    }
    *v = h.u != 0;
    r->off += h.hdr;
    return 0;
}

bool proto_r_nil(proto_reader *r) {
    assert(r);
    if (left(r) > 0 && r->p[r->off] == 0xc0) {
        r->off++;
        return true;
    }
    return false;
}

int proto_r_end(const proto_reader *r, char *err) {
    assert(r);
    size_t n = left(r);
    if (n > 0) {
        return common_fail(err, COMMON_ERR_PARSE, "message: %zu bytes after the map", n);
    }
    return 0;
}

int proto_r_skip(proto_reader *r, int levels, const char *what, char *err) {
    assert(r && what && levels >= 0 && levels <= 3);
    uint64_t todo[4]; /* todo[d]: objects still to step over at nesting depth d */
    int d = 0;
    todo[0] = 1;
    for (;;) {
        while (d >= 0 && todo[d] == 0) {
            d--;
        }
        if (d < 0) {
            return 0;
        }
        todo[d]--;
        mp_head h;
        int rc = read_head(r, &h, what, err);
        if (rc != 0) {
            return rc;
        }
        size_t rem = left(r) - h.hdr;
        switch (h.kind) {
        case MP_STR:
        case MP_BIN:
            if (h.u > rem) {
                return common_fail(err, COMMON_ERR_PARSE, "%s: %s of %" PRIu64 " bytes, %zu left",
                                   what, kind_name(h.kind), h.u, rem);
            }
            r->off += h.hdr + (size_t)h.u;
            break;
        case MP_ARRAY:
        case MP_MAP: {
            uint64_t objects = h.kind == MP_MAP ? 2 * h.u : h.u; /* h.u < 2^32 */
            if (objects > rem) {
                return common_fail(err, COMMON_ERR_PARSE,
                                   "%s: %s of %" PRIu64 " entries in %zu bytes", what,
                                   kind_name(h.kind), h.u, rem);
            }
            if (d == levels) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "%s: nested deeper than any field of the protocol", what);
            }
            r->off += h.hdr;
            todo[++d] = objects;
            break;
        }
        default:
            r->off += h.hdr;
            break;
        }
    }
}
