/*
 * safetensors reading and writing.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON mapping each tensor name to
 * {dtype, shape, data_offsets [begin, end)} relative to the data section that follows, plus an
 * optional "__metadata__" string map. The reader maps the file and checks every header claim
 * against the file before any tensor is used, so a truncated or inconsistent file is an error
 * naming the file and tensor rather than a crash. The writer builds the header with jansson and
 * pads it with spaces to a multiple of 8 bytes so tensor data is aligned.
 */
#include "model/model.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct st_entry {
    char *name;
    model_dtype dtype;
    model_shape shape;
    size_t begin, end; /* bytes, relative to the data section */
} st_entry;

struct model_st_file {
    char *path;
    void *map; /* the mapping when opened from a path (NULL for a borrowed buffer) */
    size_t map_len;
    const unsigned char *bytes; /* the whole file: the mapping or the borrowed buffer */
    size_t len;
    const unsigned char *data; /* start of the data section inside bytes */
    size_t data_len;
    st_entry *entries;
    size_t n;
    json_t *metadata; /* object of strings, or NULL */
};

static int parse_dtype(const char *s, model_dtype *out) {
    static const struct {
        const char *name;
        model_dtype t;
    } table[] = {{"F32", MODEL_DTYPE_F32},
                 {"F16", MODEL_DTYPE_F16},
                 {"BF16", MODEL_DTYPE_BF16},
                 {"I32", MODEL_DTYPE_I32},
                 {"I64", MODEL_DTYPE_I64}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(s, table[i].name) == 0) {
            *out = table[i].t;
            return 0;
        }
    }
    return -1;
}

/* *out = a * b; false when that overflows size_t. */
static bool mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) {
        return false;
    }
    *out = a * b;
    return true;
}

static int cmp_begin(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a;
    const st_entry *y = *(const st_entry *const *)b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

static int parse_entry(model_st_file *f, const char *name, json_t *v, st_entry *e, char *err) {
    json_t *dt = json_object_get(v, "dtype");
    json_t *shape = json_object_get(v, "shape");
    json_t *offs = json_object_get(v, "data_offsets");
    if (!json_is_object(v) || !json_is_string(dt) || !json_is_array(shape) ||
        !json_is_array(offs) || json_array_size(offs) != 2) {
        return common_fail(err, COMMON_ERR_PARSE,
                           "%s: tensor '%s': header entry needs dtype, shape and data_offsets",
                           f->path, name);
    }
    if (parse_dtype(json_string_value(dt), &e->dtype) != 0) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported dtype %s",
                           f->path, name, json_string_value(dt));
    }
    if (json_array_size(shape) > MODEL_MAX_DIMS) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: tensor '%s': %zu dimensions (max %d)",
                           f->path, name, json_array_size(shape), MODEL_MAX_DIMS);
    }
    e->shape.ndim = (int)json_array_size(shape);
    /* The element count and, with every zero dimension counted as one, the extent: the product
     * of the other dimensions. Both must fit in size_t in bytes. A reader forms products of
     * dimensions (rows x columns, a block of the trailing axes) without looking for zeros, and
     * a count that wrapped around (2^32 x 2^32 = 0) would match data_offsets [0, 0]. */
    size_t numel = 1, extent = model_dtype_size(e->dtype);
    bool fits = true;
    for (int i = 0; i < e->shape.ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 ||
            (uint64_t)json_integer_value(d) > SIZE_MAX) {
            return common_fail(err, COMMON_ERR_PARSE,
                               "%s: tensor '%s': shape entry %d is not a size", f->path, name, i);
        }
        e->shape.dims[i] = (size_t)json_integer_value(d);
        fits = fits && mul_size(numel, e->shape.dims[i], &numel) &&
               mul_size(extent, e->shape.dims[i] ? e->shape.dims[i] : 1, &extent);
    }
    size_t bytes = 0;
    if (!fits || !mul_size(numel, model_dtype_size(e->dtype), &bytes)) {
        char sb[128];
        return common_fail(err, COMMON_ERR_PARSE,
                           "%s: tensor '%s': shape %s of %s is too large (its size overflows)",
                           f->path, name, model_shape_format(&e->shape, sb, sizeof sb),
                           model_dtype_name(e->dtype));
    }
    json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(en) || json_integer_value(b) < 0 ||
        json_integer_value(en) < json_integer_value(b) ||
        (uint64_t)json_integer_value(en) > SIZE_MAX) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: tensor '%s': bad data_offsets", f->path,
                           name);
    }
    e->begin = (size_t)json_integer_value(b);
    e->end = (size_t)json_integer_value(en);
    if (e->end > f->data_len) {
        return common_fail(err, COMMON_ERR_PARSE,
                           "%s: tensor '%s': data ends at byte %zu but the file has %zu data "
                           "bytes (truncated?)",
                           f->path, name, e->end, f->data_len);
    }
    if (e->end - e->begin != bytes) {
        char sb[128];
        return common_fail(err, COMMON_ERR_PARSE,
                           "%s: tensor '%s': %zu data bytes do not match shape %s of %s", f->path,
                           name, e->end - e->begin, model_shape_format(&e->shape, sb, sizeof sb),
                           model_dtype_name(e->dtype));
    }
    e->name = strdup(name);
    if (!e->name) {
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", f->path);
    }
    return 0;
}

static int parse_header(model_st_file *f, char *err) {
    if (f->len < 8) {
        return common_fail(err, COMMON_ERR_PARSE,
                           "%s: %zu bytes, too short for a safetensors "
                           "header",
                           f->path, f->len);
    }
    const unsigned char *p = f->bytes;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) {
        hlen = (hlen << 8) | p[i];
    }
    if (hlen > f->len - 8) {
        return common_fail(err, COMMON_ERR_PARSE,
                           "%s: header claims %llu bytes but the file has %zu after the length "
                           "(truncated?)",
                           f->path, (unsigned long long)hlen, f->len - 8);
    }
    f->data = p + 8 + hlen;
    f->data_len = f->len - 8 - (size_t)hlen;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p + 8, (size_t)hlen, 0, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return common_fail(err, COMMON_ERR_PARSE, "%s: header JSON: %s", f->path,
                           root ? "not an object" : jerr.text);
    }
    int rc = 0;
    size_t cap = json_object_size(root);
    f->entries = calloc(cap ? cap : 1, sizeof *f->entries);
    if (!f->entries) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", f->path);
        goto done;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            const char *mk;
            json_t *mv;
            if (!json_is_object(val)) {
                rc = common_fail(err, COMMON_ERR_PARSE, "%s: __metadata__ is not an object",
                                 f->path);
                goto done;
            }
            json_object_foreach(val, mk, mv) {
                if (!json_is_string(mv)) {
                    rc = common_fail(err, COMMON_ERR_PARSE,
                                     "%s: __metadata__ value '%s' is not a string", f->path, mk);
                    goto done;
                }
            }
            f->metadata = json_incref(val);
            continue;
        }
        rc = parse_entry(f, key, val, &f->entries[f->n], err);
        if (rc) {
            goto done;
        }
        f->n++;
    }
    /* No byte belongs to two tensors. Empty tensors hold no bytes and may sit anywhere, so they
     * are left out of the sweep: among the others in order of their start, each must start at
     * or after the furthest end seen so far (comparing only neighbours misses a tensor that
     * lies inside an earlier, longer one). */
    if (f->n > 1) {
        st_entry **order = malloc(f->n * sizeof *order);
        if (!order) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", f->path);
            goto done;
        }
        size_t n_held = 0;
        for (size_t i = 0; i < f->n; i++) {
            if (f->entries[i].end > f->entries[i].begin) {
                order[n_held++] = &f->entries[i];
            }
        }
        qsort(order, n_held, sizeof *order, cmp_begin);
        const st_entry *furthest = NULL; /* the tensor with the largest end so far */
        for (size_t i = 0; i < n_held; i++) {
            if (furthest && order[i]->begin < furthest->end) {
                rc = common_fail(err, COMMON_ERR_PARSE, "%s: tensors '%s' and '%s' overlap",
                                 f->path, furthest->name, order[i]->name);
                break;
            }
            if (!furthest || order[i]->end > furthest->end) {
                furthest = order[i];
            }
        }
        free(order);
    }
done:
    json_decref(root);
    return rc;
}

int model_st_open(model_st_file **out, const char *path, char *err) {
    int rc = 0;
    model_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", path);
    }
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) {
        rc = common_fail(err, errno == ENOENT ? COMMON_ERR_NOT_FOUND : COMMON_ERR_IO, "open %s: %s",
                         path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "stat %s: %s", path, strerror(errno));
        close(fd);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         S_ISDIR(st.st_mode) ? "%s is a directory, not a safetensors file"
                                             : "%s is not a regular file",
                         path);
        close(fd);
        goto fail;
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: too large to map", path);
        close(fd);
        goto fail;
    }
    f->map_len = (size_t)st.st_size;
    if (f->map_len > 0) {
        f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (f->map == MAP_FAILED) {
            f->map = NULL;
            rc = common_fail(err, COMMON_ERR_IO, "mmap %s: %s", path, strerror(errno));
            close(fd);
            goto fail;
        }
    }
    close(fd);
    f->bytes = f->map;
    f->len = f->map_len;
    rc = parse_header(f, err);
    if (rc) {
        goto fail;
    }
    *out = f;
    return 0;
fail:
    model_st_close(&f);
    return rc;
}

int model_st_open_buffer(model_st_file **out, const char *name, const void *data, size_t len,
                         char *err) {
    model_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(name))) {
        free(f);
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", name);
    }
    f->bytes = data;
    f->len = len;
    int rc = parse_header(f, err);
    if (rc) {
        model_st_close(&f);
        return rc;
    }
    *out = f;
    return 0;
}

void model_st_close(model_st_file **fp) {
    if (!fp || !*fp) {
        return;
    }
    model_st_file *f = *fp;
    if (f->map) {
        munmap(f->map, f->map_len);
    }
    for (size_t i = 0; i < f->n; i++) {
        free(f->entries[i].name);
    }
    free(f->entries);
    json_decref(f->metadata);
    free(f->path);
    free(f);
    *fp = NULL;
}

size_t model_st_count(const model_st_file *f) {
    return f->n;
}

const char *model_st_name(const model_st_file *f, size_t i) {
    return i < f->n ? f->entries[i].name : NULL;
}

long model_st_find(const model_st_file *f, const char *name) {
    for (size_t i = 0; i < f->n; i++) {
        if (strcmp(f->entries[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

void model_st_info(const model_st_file *f, size_t i, model_dtype *dtype, model_shape *shape) {
    assert(i < f->n);
    if (dtype) {
        *dtype = f->entries[i].dtype;
    }
    if (shape) {
        *shape = f->entries[i].shape;
    }
}

const void *model_st_data(const model_st_file *f, size_t i, size_t *bytes) {
    assert(i < f->n);
    if (bytes) {
        *bytes = f->entries[i].end - f->entries[i].begin;
    }
    return f->data + f->entries[i].begin;
}

static int compare_keys(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int model_st_metadata_keys(const model_st_file *f, const char ***out, size_t *n, char *err) {
    size_t count = f->metadata != NULL ? json_object_size(f->metadata) : 0;
    const char **keys = malloc((count > 0 ? count : 1) * sizeof *keys);
    if (keys == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", f->path);
    }
    size_t k = 0;
    const char *key;
    json_t *value;
    if (f->metadata != NULL) {
        json_object_foreach(f->metadata, key, value) {
            (void)value;
            keys[k++] = key;
        }
    }
    qsort(keys, k, sizeof *keys, compare_keys);
    *out = keys;
    *n = k;
    return 0;
}

const char *model_st_metadata(const model_st_file *f, const char *key) {
    if (!f->metadata) {
        return NULL;
    }
    return json_string_value(json_object_get(f->metadata, key));
}

/* The entry of tensor `name` and its element count, which must fit in `cap` elements: the
 * common start of the typed readers. */
static int entry_to_read(const model_st_file *f, const char *name, size_t cap, const st_entry **out,
                         size_t *n, char *err) {
    long i = model_st_find(f, name);
    if (i < 0) {
        return common_fail(err, COMMON_ERR_NOT_FOUND, "%s: no tensor '%s'", f->path, name);
    }
    *out = &f->entries[i];
    *n = model_shape_numel(&(*out)->shape);
    if (*n > cap) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "%s: tensor '%s' has %zu elements, room for %zu", f->path, name, *n,
                           cap);
    }
    return 0;
}

int model_st_read_f32(const model_st_file *f, const char *name, float *dst, size_t cap,
                      model_shape *shape, char *err) {
    const st_entry *e = NULL;
    size_t n = 0;
    int rc = entry_to_read(f, name, cap, &e, &n, err);
    if (rc != 0) {
        return rc;
    }
    const unsigned char *src = f->data + e->begin;
    switch (e->dtype) {
    case MODEL_DTYPE_F32:
        memcpy(dst, src, n * 4);
        break;
    case MODEL_DTYPE_F16:
    case MODEL_DTYPE_BF16:
        for (size_t k = 0; k < n; k++) {
            uint16_t h = (uint16_t)(src[2 * k] | (src[2 * k + 1] << 8));
            dst[k] = e->dtype == MODEL_DTYPE_F16 ? model_f16_to_f32(h) : model_bf16_to_f32(h);
        }
        break;
    default:
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: tensor '%s' is %s, not a float type",
                           f->path, name, model_dtype_name(e->dtype));
    }
    if (shape) {
        *shape = e->shape;
    }
    return 0;
}

int model_st_read_i32(const model_st_file *f, const char *name, int32_t *dst, size_t cap,
                      model_shape *shape, char *err) {
    const st_entry *e = NULL;
    size_t n = 0;
    int rc = entry_to_read(f, name, cap, &e, &n, err);
    if (rc != 0) {
        return rc;
    }
    const unsigned char *src = f->data + e->begin;
    if (e->dtype == MODEL_DTYPE_I32) {
        memcpy(dst, src, n * 4);
    } else if (e->dtype == MODEL_DTYPE_I64) {
        for (size_t k = 0; k < n; k++) {
            int64_t v;
            memcpy(&v, src + 8 * k, 8);
            if (v < INT32_MIN || v > INT32_MAX) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "%s: tensor '%s': value %lld does not fit int32", f->path, name,
                                   (long long)v);
            }
            dst[k] = (int32_t)v;
        }
    } else {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "%s: tensor '%s' is %s, not an integer type", f->path, name,
                           model_dtype_name(e->dtype));
    }
    if (shape) {
        *shape = e->shape;
    }
    return 0;
}

/* ---- writer ---- */

typedef struct wr_entry {
    char *name;
    model_dtype dtype;
    model_shape shape;
    void *data;
    size_t bytes;
} wr_entry;

struct model_st_writer {
    wr_entry *e;
    size_t n, cap;
    json_t *metadata;
};

int model_st_writer_new(model_st_writer **out, char *err) {
    model_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->metadata = json_object())) {
        free(w);
        return common_fail(err, COMMON_ERR_NOMEM, "safetensors writer: out of memory");
    }
    *out = w;
    return 0;
}

void model_st_writer_destroy(model_st_writer **wp) {
    if (!wp || !*wp) {
        return;
    }
    model_st_writer *w = *wp;
    for (size_t i = 0; i < w->n; i++) {
        free(w->e[i].name);
        free(w->e[i].data);
    }
    free(w->e);
    json_decref(w->metadata);
    free(w);
    *wp = NULL;
}

static int writer_push(model_st_writer *w, const char *name, model_dtype dtype,
                       const model_shape *shape, void **data, char *err) {
    if (strcmp(name, "__metadata__") == 0 || name[0] == '\0') {
        return common_fail(err, COMMON_ERR_INVALID, "safetensors writer: bad tensor name '%s'",
                           name);
    }
    for (size_t i = 0; i < w->n; i++) {
        if (strcmp(w->e[i].name, name) == 0) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "safetensors writer: tensor '%s' added twice", name);
        }
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        wr_entry *e = realloc(w->e, cap * sizeof *e);
        if (!e) {
            return common_fail(err, COMMON_ERR_NOMEM, "safetensors writer: out of memory");
        }
        w->e = e;
        w->cap = cap;
    }
    size_t bytes = model_shape_numel(shape) * model_dtype_size(dtype);
    wr_entry *e = &w->e[w->n];
    e->name = strdup(name);
    e->data = malloc(bytes ? bytes : 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return common_fail(err, COMMON_ERR_NOMEM, "safetensors writer: out of memory");
    }
    e->dtype = dtype;
    e->shape = *shape;
    e->bytes = bytes;
    w->n++;
    *data = e->data;
    return 0;
}

int model_st_writer_add(model_st_writer *w, const char *name, model_dtype dtype,
                        const model_shape *shape, const void *data, char *err) {
    void *dst;
    int rc = writer_push(w, name, dtype, shape, &dst, err);
    if (rc == 0) {
        memcpy(dst, data, w->e[w->n - 1].bytes);
    }
    return rc;
}

int model_st_writer_add_f32(model_st_writer *w, const char *name, model_dtype dtype,
                            const model_shape *shape, const float *data, char *err) {
    if (dtype != MODEL_DTYPE_F32 && dtype != MODEL_DTYPE_F16 && dtype != MODEL_DTYPE_BF16) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "safetensors writer: '%s': %s is not a float "
                           "type",
                           name, model_dtype_name(dtype));
    }
    void *dst;
    int rc = writer_push(w, name, dtype, shape, &dst, err);
    if (rc) {
        return rc;
    }
    size_t n = model_shape_numel(shape);
    if (dtype == MODEL_DTYPE_F32) {
        memcpy(dst, data, n * 4);
    } else {
        unsigned char *b = dst;
        for (size_t i = 0; i < n; i++) {
            uint16_t h =
                dtype == MODEL_DTYPE_F16 ? model_f32_to_f16(data[i]) : model_f32_to_bf16(data[i]);
            b[2 * i] = (unsigned char)(h & 0xff);
            b[2 * i + 1] = (unsigned char)(h >> 8);
        }
    }
    return 0;
}

int model_st_writer_set_metadata(model_st_writer *w, const char *key, const char *value,
                                 char *err) {
    if (json_object_set_new(w->metadata, key, json_string(value)) != 0) {
        return common_fail(err, COMMON_ERR_INVALID, "safetensors writer: bad metadata '%s'", key);
    }
    return 0;
}

int model_st_writer_write(const model_st_writer *w, const char *path, char *err) {
    int rc = 0;
    char *text = NULL;
    common_outfile *f = NULL;
    json_t *root = json_object();
    if (!root) {
        return common_fail(err, COMMON_ERR_NOMEM, "write %s: out of memory", path);
    }
    if (json_object_size(w->metadata) > 0) {
        json_object_set(root, "__metadata__", w->metadata);
    }
    size_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const wr_entry *e = &w->e[i];
        json_t *shape = json_array();
        for (int d = 0; d < e->shape.ndim; d++) {
            json_array_append_new(shape, json_integer((json_int_t)e->shape.dims[d]));
        }
        json_t *ent =
            json_pack("{s:s, s:o, s:[I,I]}", "dtype", model_dtype_name(e->dtype), "shape", shape,
                      "data_offsets", (json_int_t)off, (json_int_t)(off + e->bytes));
        if (!ent || json_object_set_new(root, e->name, ent) != 0) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "write %s: out of memory", path);
            goto done;
        }
        off += e->bytes;
    }
    text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "write %s: out of memory", path);
        goto done;
    }
    size_t hlen = strlen(text);
    size_t padded = (hlen + 7) & ~(size_t)7;
    /* whole or nothing: a failed write (a full disk) leaves no truncated file at path */
    rc = common_outfile_new(&f, path, err);
    if (rc != 0) {
        goto done;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) {
        len8[i] = (unsigned char)(((uint64_t)padded >> (8 * i)) & 0xff);
    }
    static const char spaces[8] = "        ";
    rc = common_outfile_write(f, len8, 8, err);
    if (rc == 0) {
        rc = common_outfile_write(f, text, hlen, err);
    }
    if (rc == 0) {
        rc = common_outfile_write(f, spaces, padded - hlen, err);
    }
    for (size_t i = 0; rc == 0 && i < w->n; i++) {
        rc = common_outfile_write(f, w->e[i].data, w->e[i].bytes, err);
    }
    if (rc == 0) {
        rc = common_outfile_commit(&f, err);
    }
done:
    common_outfile_destroy(&f);
    free(text);
    json_decref(root);
    return rc;
}
