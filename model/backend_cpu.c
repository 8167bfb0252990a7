/*
 * The CPU backend: model_backend operations on host memory.
 *
 * Matrix products go to OpenBLAS' cblas_sgemm (its own threads). The elementwise and row-wise
 * operations are plain loops written so GCC vectorises them (branch-free bodies, selects instead
 * of branches, exp by range reduction and a polynomial instead of libm calls) and are split into
 * contiguous row ranges over a small pool of worker threads. Workers sleep on a condition
 * variable between operations, so they do not compete with OpenBLAS' threads for the cores.
 * Buffers are 64-byte aligned; their bytes are counted so tests can bound a run's memory.
 */
#include "model/model.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The hot loops are compiled for AVX-512 and AVX2 as well as the portable baseline and picked
 * at load time (GCC function multiversioning). Contraction stays off (ISO C mode), so every
 * version computes the same bits. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CPU_KERNEL __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CPU_KERNEL
#endif

struct model_buf {
    float *p;
    size_t n; /* elements */
};

/* Multiply-adds below which one matrix product runs on one thread (measured with bench_sweep
 * and bench_forward: OpenBLAS' own threshold, 2^18, leaves products of a few rows split; 2^24
 * slowed the full-size model's one-row products, which two threads still speed up). */
#define CPU_GEMM_THREADED_MIN ((size_t)1 << 20)

typedef void (*range_fn)(void *ctx, size_t begin, size_t end);

typedef struct cpu_pool {
    pthread_t *threads;
    size_t n_workers; /* threads besides the caller */
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    unsigned long generation;
    size_t pending;
    bool stop;
    range_fn fn;
    void *ctx;
    size_t total;
} cpu_pool;

typedef struct cpu_impl {
    cpu_pool pool;
    size_t n_threads;
    size_t in_use, peak; /* bytes */
} cpu_impl;

typedef struct worker_arg {
    cpu_pool *pool;
    size_t index; /* 1..n_workers; the caller is 0 */
} worker_arg;

static void chunk(size_t total, size_t parts, size_t i, size_t *b, size_t *e) {
    size_t base = total / parts, extra = total % parts;
    *b = i * base + (i < extra ? i : extra);
    *e = *b + base + (i < extra ? 1 : 0);
}

static void *worker_main(void *p) {
    worker_arg *a = p;
    cpu_pool *pool = a->pool;
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&pool->mu);
        while (pool->generation == seen && !pool->stop) {
            pthread_cond_wait(&pool->start, &pool->mu);
        }
        if (pool->stop) {
            pthread_mutex_unlock(&pool->mu);
            break;
        }
        seen = pool->generation;
        range_fn fn = pool->fn;
        void *ctx = pool->ctx;
        size_t total = pool->total;
        pthread_mutex_unlock(&pool->mu);
        size_t b, e;
        chunk(total, pool->n_workers + 1, a->index, &b, &e);
        if (b < e) {
            fn(ctx, b, e);
        }
        pthread_mutex_lock(&pool->mu);
        if (--pool->pending == 0) {
            pthread_cond_signal(&pool->done);
        }
        pthread_mutex_unlock(&pool->mu);
    }
    free(a);
    return NULL;
}

/* Element operations below which a loop is not worth splitting: handing a range to another
 * thread and waiting for it costs tens of microseconds on a loaded machine (two futex round
 * trips), about what a core needs for this many simple float operations. Incremental patched
 * runs issue many operations of a few rows, and those stay on the calling thread. */
#define CPU_PARALLEL_MIN_OPS ((size_t)1 << 17)

/* Runs fn over [0, total) split across the pool; jobs of less than CPU_PARALLEL_MIN_OPS per
 * thread run inline. `cost` is an item's work in simple float operations (a row of d elements
 * costs about d). */
static void parallel_for(cpu_impl *im, size_t total, size_t cost, range_fn fn, void *ctx) {
    size_t grain = cost >= CPU_PARALLEL_MIN_OPS ? 1 : CPU_PARALLEL_MIN_OPS / (cost ? cost : 1);
    cpu_pool *pool = &im->pool;
    if (pool->n_workers == 0 || total < 2 * grain) {
        if (total > 0) {
            fn(ctx, 0, total);
        }
        return;
    }
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->total = total;
    pool->pending = pool->n_workers;
    pool->generation++;
    pthread_cond_broadcast(&pool->start);
    pthread_mutex_unlock(&pool->mu);
    size_t b, e;
    chunk(total, pool->n_workers + 1, 0, &b, &e);
    if (b < e) {
        fn(ctx, b, e);
    }
    pthread_mutex_lock(&pool->mu);
    while (pool->pending > 0) {
        pthread_cond_wait(&pool->done, &pool->mu);
    }
    pthread_mutex_unlock(&pool->mu);
}

static cpu_impl *impl_of(model_backend *be) {
    return be->impl;
}

static float *at(model_ref r) {
    return r.buf->p + r.off;
}

/* ---- memory ---- */

static int cpu_alloc(model_backend *be, size_t n, model_buf **out, char *err) {
    cpu_impl *im = impl_of(be);
    model_buf *b = malloc(sizeof *b);
    size_t bytes = ((n ? n : 1) * sizeof(float) + 63) & ~(size_t)63;
    void *p = NULL;
    if (!b || posix_memalign(&p, 64, bytes) != 0) {
        free(b);
        return common_fail(err, COMMON_ERR_NOMEM, "cpu backend: cannot allocate %zu bytes", bytes);
    }
    b->p = p;
    b->n = n;
    im->in_use += n * sizeof(float);
    if (im->in_use > im->peak) {
        im->peak = im->in_use;
    }
    *out = b;
    return 0;
}

static void cpu_free(model_backend *be, model_buf *b) {
    if (!b) {
        return;
    }
    impl_of(be)->in_use -= b->n * sizeof(float);
    free(b->p);
    free(b);
}

static void cpu_mem_stats(const model_backend *be, size_t *in_use, size_t *peak) {
    const cpu_impl *im = be->impl;
    if (in_use) {
        *in_use = im->in_use;
    }
    if (peak) {
        *peak = im->peak;
    }
}

static void cpu_reset_peak(model_backend *be) {
    impl_of(be)->peak = impl_of(be)->in_use;
}

static int check_range(model_ref r, size_t n, const char *op, char *err) {
    if (!r.buf || r.off > r.buf->n || n > r.buf->n - r.off) {
        return common_fail(err, COMMON_ERR_INVALID, "cpu backend %s: range outside the buffer", op);
    }
    return 0;
}

static int cpu_upload(model_backend *be, model_ref dst, const void *host, size_t n, char *err) {
    (void)be;
    int rc = check_range(dst, n, "upload", err);
    if (rc == 0 && n) {
        memcpy(at(dst), host, n * sizeof(float));
    }
    return rc;
}

static int cpu_download(model_backend *be, void *host, model_ref src, size_t n, char *err) {
    (void)be;
    int rc = check_range(src, n, "download", err);
    if (rc == 0 && n) {
        memcpy(host, at(src), n * sizeof(float));
    }
    return rc;
}

typedef struct copy_ctx {
    float *dst;
    const float *src;
    size_t dst_ld, src_ld, cols;
} copy_ctx;

static void copy_range(void *p, size_t b, size_t e) {
    const copy_ctx *c = p;
    for (size_t r = b; r < e; r++) {
        memcpy(c->dst + r * c->dst_ld, c->src + r * c->src_ld, c->cols * sizeof(float));
    }
}

static int cpu_copy2d(model_backend *be, model_ref dst, size_t dst_ld, model_ref src, size_t src_ld,
                      size_t rows, size_t cols, char *err) {
    if (rows == 0 || cols == 0) {
        return 0;
    }
    int rc = check_range(dst, (rows - 1) * dst_ld + cols, "copy2d", err);
    if (rc == 0) {
        rc = check_range(src, (rows - 1) * src_ld + cols, "copy2d", err);
    }
    if (rc) {
        return rc;
    }
    copy_ctx c = {at(dst), at(src), dst_ld, src_ld, cols};
    parallel_for(impl_of(be), rows, cols, copy_range, &c);
    return 0;
}

/* Every entry is checked before any is copied; each is then a copy2d. */
static int cpu_copy_rows(model_backend *be, model_ref dst, size_t dst_ld, size_t dst_rows,
                         model_ref src, size_t src_ld, size_t src_rows, model_ref table, size_t n,
                         size_t cols, char *err) {
    if (n == 0 || cols == 0) {
        return 0;
    }
    if (check_range(table, n * MODEL_COPY_ROWS_FIELDS, "copy_rows table", err) ||
        (dst_rows > 0 && check_range(dst, (dst_rows - 1) * dst_ld + cols, "copy_rows", err)) ||
        (src_rows > 0 && check_range(src, (src_rows - 1) * src_ld + cols, "copy_rows", err))) {
        return COMMON_ERR_INVALID;
    }
    const int32_t *t = (const int32_t *)(const void *)at(table);
    for (size_t e = 0; e < n; e++) {
        const int32_t *en = t + e * MODEL_COPY_ROWS_FIELDS;
        if (en[0] < 0 || en[1] < 0 || en[2] < 0 || (size_t)en[0] + (size_t)en[2] > dst_rows ||
            (size_t)en[1] + (size_t)en[2] > src_rows) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "cpu backend copy_rows: entry %zu {%d, %d, %d} outside %zu "
                               "destination and %zu source rows",
                               e, (int)en[0], (int)en[1], (int)en[2], dst_rows, src_rows);
        }
    }
    for (size_t e = 0; e < n; e++) {
        const int32_t *en = t + e * MODEL_COPY_ROWS_FIELDS;
        if (en[2] == 0) {
            continue; /* also where dst or src holds no rows */
        }
        copy_ctx c = {at(dst) + (size_t)en[0] * dst_ld, at(src) + (size_t)en[1] * src_ld, dst_ld,
                      src_ld, cols};
        parallel_for(impl_of(be), (size_t)en[2], cols, copy_range, &c);
    }
    return 0;
}

typedef struct fill_ctx {
    float *x;
    float v;
} fill_ctx;

static void fill_range(void *p, size_t b, size_t e) {
    const fill_ctx *c = p;
    for (size_t i = b; i < e; i++) {
        c->x[i] = c->v;
    }
}

static int cpu_fill(model_backend *be, model_ref dst, size_t n, float value, char *err) {
    int rc = check_range(dst, n, "fill", err);
    if (rc == 0) {
        fill_ctx c = {at(dst), value};
        parallel_for(impl_of(be), n, 1, fill_range, &c);
    }
    return rc;
}

/* ---- sgemm ---- */

typedef struct gemm_ctx {
    const model_gemm *g;
    const float *A, *B;
    float *C;
} gemm_ctx;

static void gemm_items(void *p, size_t b, size_t e) {
    const gemm_ctx *c = p;
    const model_gemm *g = c->g;
    for (size_t i = b; i < e; i++) {
        cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                    g->trans_b ? CblasTrans : CblasNoTrans, (blasint)g->m, (blasint)g->n,
                    (blasint)g->k, g->alpha, c->A + i * g->stride_a, (blasint)g->lda,
                    c->B + i * g->stride_b, (blasint)g->ldb, g->beta, c->C + i * g->stride_c,
                    (blasint)g->ldc);
    }
}

static int cpu_gemm(model_backend *be, const model_gemm *g, char *err) {
    if (g->m == 0 || g->n == 0 || g->batch == 0) {
        return 0;
    }
    size_t a_rows = g->trans_a ? g->k : g->m, a_cols = g->trans_a ? g->m : g->k;
    size_t b_rows = g->trans_b ? g->n : g->k, b_cols = g->trans_b ? g->k : g->n;
    size_t last = g->batch - 1;
    if (check_range(g->a, last * g->stride_a + (a_rows - 1) * g->lda + a_cols, "gemm A", err) ||
        check_range(g->b, last * g->stride_b + (b_rows - 1) * g->ldb + b_cols, "gemm B", err) ||
        check_range(g->c, last * g->stride_c + (g->m - 1) * g->ldc + g->n, "gemm C", err)) {
        return COMMON_ERR_INVALID;
    }
    gemm_ctx c = {g, at(g->a), at(g->b), at(g->c)};
    cpu_impl *im = impl_of(be);
    size_t item = g->m * g->n * g->k; /* multiply-adds of one product */
    if (im->n_threads == 1) {
        gemm_items(&c, 0, g->batch);
    } else if (g->batch >= 2 * (im->pool.n_workers + 1)) {
        /* many products (attention heads): one single-threaded sgemm per item, items spread
         * over the pool (inline when all of them are small), rather than each product split
         * across OpenBLAS' threads */
        openblas_set_num_threads(1);
        parallel_for(im, g->batch, item, gemm_items, &c);
        openblas_set_num_threads((int)im->n_threads);
    } else if (item * g->batch < CPU_GEMM_THREADED_MIN) {
        /* a small product (an incremental run's few rows): splitting it costs more in thread
         * hand-offs than it saves */
        openblas_set_num_threads(1);
        gemm_items(&c, 0, g->batch);
        openblas_set_num_threads((int)im->n_threads);
    } else {
        gemm_items(&c, 0, g->batch);
    }
    return 0;
}

/* ---- elementwise ---- */

typedef struct rows_ctx {
    float *y;
    const float *x, *w, *b;
    float *scale;
    size_t d;
    float eps;
} rows_ctx;

typedef struct add_ctx {
    float *dst;
    const float *a, *b;
} add_ctx;

CPU_KERNEL static void add_range(void *p, size_t b, size_t e) {
    const add_ctx *c = p;
    float *d = c->dst;
    const float *x = c->a, *y = c->b;
    for (size_t i = b; i < e; i++) {
        d[i] = x[i] + y[i];
    }
}

static int cpu_add(model_backend *be, model_ref dst, model_ref a, model_ref b, size_t n,
                   char *err) {
    if (check_range(dst, n, "add", err) || check_range(a, n, "add", err) ||
        check_range(b, n, "add", err)) {
        return COMMON_ERR_INVALID;
    }
    add_ctx c = {at(dst), at(a), at(b)};
    parallel_for(impl_of(be), n, 1, add_range, &c);
    return 0;
}

/* Row sum with eight independent partial sums (vectorisable), combined in double. */
static double row_sum(const float *x, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (size_t j = 0; j < 8; j++) {
            acc[j] += x[i + j];
        }
    }
    double s = 0.0;
    for (size_t j = 0; j < 8; j++) {
        s += (double)acc[j];
    }
    for (; i < n; i++) {
        s += (double)x[i];
    }
    return s;
}

static double row_sumsq(const float *x, size_t n) {
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (size_t j = 0; j < 8; j++) {
            acc[j] += x[i + j] * x[i + j];
        }
    }
    double s = 0.0;
    for (size_t j = 0; j < 8; j++) {
        s += (double)acc[j];
    }
    for (; i < n; i++) {
        s += (double)x[i] * (double)x[i];
    }
    return s;
}

CPU_KERNEL static void ln_rows(void *p, size_t b, size_t e) {
    const rows_ctx *c = p;
    size_t d = c->d;
    for (size_t r = b; r < e; r++) {
        const float *x = c->x + r * d;
        float *y = c->y + r * d;
        float mean = (float)(row_sum(x, d) / (double)d);
        for (size_t i = 0; i < d; i++) {
            y[i] = x[i] - mean;
        }
        /* biased variance, eps inside the sqrt, then a division (TL's op order) */
        float s = sqrtf((float)(row_sumsq(y, d) / (double)d) + c->eps);
        for (size_t i = 0; i < d; i++) {
            y[i] = y[i] / s;
        }
        c->scale[r] = s;
    }
}

static int cpu_layer_norm(model_backend *be, model_ref x, model_ref norm, model_ref scale,
                          size_t rows, size_t d, float eps, char *err) {
    if (check_range(x, rows * d, "layer_norm", err) ||
        check_range(norm, rows * d, "layer_norm", err) ||
        check_range(scale, rows, "layer_norm", err)) {
        return COMMON_ERR_INVALID;
    }
    rows_ctx c = {at(norm), at(x), NULL, NULL, at(scale), d, eps};
    parallel_for(impl_of(be), rows, 4 * d, ln_rows, &c); /* mean, variance, scale */
    return 0;
}

CPU_KERNEL static void affine_rows(void *p, size_t b, size_t e) {
    const rows_ctx *c = p;
    for (size_t r = b; r < e; r++) {
        const float *x = c->x + r * c->d;
        float *y = c->y + r * c->d;
        for (size_t i = 0; i < c->d; i++) {
            y[i] = x[i] * c->w[i] + c->b[i];
        }
    }
}

static int cpu_affine(model_backend *be, model_ref y, model_ref x, model_ref w, model_ref b,
                      size_t rows, size_t d, char *err) {
    if (check_range(y, rows * d, "affine", err) || check_range(x, rows * d, "affine", err) ||
        check_range(w, d, "affine", err) || check_range(b, d, "affine", err)) {
        return COMMON_ERR_INVALID;
    }
    rows_ctx c = {at(y), at(x), at(w), at(b), NULL, d, 0};
    parallel_for(impl_of(be), rows, d, affine_rows, &c);
    return 0;
}

typedef struct gather_ctx {
    float *dst;
    const float *table;
    const int32_t *idx;
    size_t d;
} gather_ctx;

static void gather_range(void *p, size_t b, size_t e) {
    const gather_ctx *c = p;
    for (size_t i = b; i < e; i++) {
        memcpy(c->dst + i * c->d, c->table + (size_t)c->idx[i] * c->d, c->d * sizeof(float));
    }
}

static int cpu_gather_rows(model_backend *be, model_ref dst, model_ref table, model_ref idx,
                           size_t n, size_t d, char *err) {
    if (check_range(dst, n * d, "gather_rows", err) || check_range(idx, n, "gather_rows", err)) {
        return COMMON_ERR_INVALID;
    }
    const int32_t *ix = (const int32_t *)(const void *)at(idx);
    size_t table_rows = d ? (table.buf->n - table.off) / d : 0;
    for (size_t i = 0; i < n; i++) {
        if (ix[i] < 0 || (size_t)ix[i] >= table_rows) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "cpu backend gather_rows: index %d "
                               "outside a table of %zu rows",
                               (int)ix[i], table_rows);
        }
    }
    gather_ctx c = {at(dst), at(table), ix, d};
    parallel_for(impl_of(be), n, d, gather_range, &c);
    return 0;
}

/* exp(x) by Cephes-style range reduction and a degree-6 polynomial: within 2 ulp of expf,
 * exactly 0 below -87 (so -inf gives 0). Branch-free (round-to-nearest by the 1.5 * 2^23
 * trick, selects for the clamps) so loops over it vectorise. */
static inline float exp_fast(float x) {
    float xc = x < -87.0f ? -87.0f : x;
    xc = xc > 88.0f ? 88.0f : xc;
    float fn = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)fn + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = y * scale;
    return x < -87.0f ? 0.0f : e;
}

typedef struct attn_ctx {
    float *dst;
    const float *src;
    model_attn_rows g;
    float inv; /* attn_scale */
} attn_ctx;

static float *attn_row(float *base, const model_attn_rows *g, size_t i, size_t *q) {
    size_t nq = g->q_end - g->q_begin;
    size_t h = i / nq;
    *q = g->q_begin + i % nq;
    return base + h * g->head_stride + *q * g->ld;
}

CPU_KERNEL static void mask_range(void *p, size_t b, size_t e) {
    const attn_ctx *c = p;
    size_t nk = c->g.n_keys;
    float scale = c->inv;
    for (size_t i = b; i < e; i++) {
        size_t q;
        float *row = attn_row(c->dst, &c->g, i, &q);
        for (size_t k = 0; k < nk; k++) {
            row[k] = k <= q ? row[k] / scale : -INFINITY;
        }
    }
}

static int check_attn(model_ref r, const model_attn_rows *g, const char *op, char *err) {
    if (g->n_heads == 0 || g->q_end <= g->q_begin || g->n_keys == 0) {
        return 0;
    }
    return check_range(r, (g->n_heads - 1) * g->head_stride + (g->q_end - 1) * g->ld + g->n_keys,
                       op, err);
}

static int cpu_attn_mask(model_backend *be, model_ref scores, const model_attn_rows *g,
                         float attn_scale, char *err) {
    if (check_attn(scores, g, "attn_mask", err)) {
        return COMMON_ERR_INVALID;
    }
    if (g->q_end <= g->q_begin) {
        return 0;
    }
    attn_ctx c = {at(scores), NULL, *g, attn_scale};
    parallel_for(impl_of(be), g->n_heads * (g->q_end - g->q_begin), g->n_keys, mask_range, &c);
    return 0;
}

CPU_KERNEL static void softmax_range(void *p, size_t b, size_t e) {
    const attn_ctx *c = p;
    size_t nk = c->g.n_keys;
    for (size_t i = b; i < e; i++) {
        size_t q;
        float *out = attn_row(c->dst, &c->g, i, &q);
        const float *in = attn_row((float *)(uintptr_t)c->src, &c->g, i, &q);
        float mx = -INFINITY;
        for (size_t k = 0; k < nk; k++) {
            mx = in[k] > mx ? in[k] : mx;
        }
        if (mx == -INFINITY || mx != mx) {
            /* every key masked (or NaN): TL's softmax gives NaN, then NaN -> 0 */
            for (size_t k = 0; k < nk; k++) {
                out[k] = 0.0f;
            }
            continue;
        }
        for (size_t k = 0; k < nk; k++) {
            out[k] = exp_fast(in[k] - mx);
        }
        float inv = (float)(1.0 / row_sum(out, nk));
        for (size_t k = 0; k < nk; k++) {
            out[k] *= inv;
        }
    }
}

static int cpu_softmax(model_backend *be, model_ref pattern, model_ref scores,
                       const model_attn_rows *g, char *err) {
    if (check_attn(pattern, g, "softmax", err) || check_attn(scores, g, "softmax", err)) {
        return COMMON_ERR_INVALID;
    }
    if (g->q_end <= g->q_begin) {
        return 0;
    }
    attn_ctx c = {at(pattern), at(scores), *g, 1.0f};
    parallel_for(impl_of(be), g->n_heads * (g->q_end - g->q_begin), 8 * g->n_keys, softmax_range,
                 &c); /* max, exp, sum, scale */
    return 0;
}

/* gelu_new(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), evaluated as
 * x / (1 + exp(-2u)), the same function without tanh's cancellation near -1. */
CPU_KERNEL static void gelu_range(void *p, size_t b, size_t e) {
    const add_ctx *c = p;
    float *y = c->dst;
    const float *x = c->a;
    for (size_t i = b; i < e; i++) {
        float v = x[i];
        float u = 0.7978845608028654f * (v + 0.044715f * (v * v * v));
        y[i] = v / (1.0f + exp_fast(-2.0f * u));
    }
}

static int cpu_gelu_new(model_backend *be, model_ref dst, model_ref src, size_t n, char *err) {
    if (check_range(dst, n, "gelu_new", err) || check_range(src, n, "gelu_new", err)) {
        return COMMON_ERR_INVALID;
    }
    add_ctx c = {at(dst), at(src), NULL};
    parallel_for(impl_of(be), n, 16, gelu_range, &c); /* a cubic and an exp */
    return 0;
}

/* ---- reductions ---- */

typedef struct sum_rows_ctx {
    double *acc;
    const float *x;
    const int32_t *mask;
    size_t acc_ld, x_ld, rows, n_groups;
} sum_rows_ctx;

/* Columns [b, e): every thread owns whole columns, so each sum is still added row after row. */
static void sum_rows_cols(void *p, size_t b, size_t e) {
    const sum_rows_ctx *c = p;
    for (size_t r = 0; r < c->rows; r++) {
        uint32_t bits = (uint32_t)c->mask[r];
        if (bits == 0) {
            continue;
        }
        const float *xr = c->x + r * c->x_ld;
        for (size_t g = 0; g < c->n_groups; g++) {
            if (bits & (1u << g)) {
                double *a = c->acc + g * c->acc_ld;
                for (size_t j = b; j < e; j++) {
                    a[j] += (double)xr[j];
                }
            }
        }
    }
}

static int cpu_sum_rows(model_backend *be, model_ref acc, size_t acc_ld, model_ref x, size_t x_ld,
                        model_ref mask, size_t rows, size_t cols, size_t n_groups, char *err) {
    if (n_groups > MODEL_SUM_ROWS_MAX_GROUPS || acc.off % 2 != 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "cpu backend sum_rows: %zu groups (at most %d) or an odd accumulator "
                           "offset %zu",
                           n_groups, MODEL_SUM_ROWS_MAX_GROUPS, acc.off);
    }
    if (rows == 0 || cols == 0 || n_groups == 0) {
        return 0;
    }
    if (check_range(acc, 2 * ((n_groups - 1) * acc_ld + cols), "sum_rows acc", err) ||
        check_range(x, (rows - 1) * x_ld + cols, "sum_rows x", err) ||
        check_range(mask, rows, "sum_rows mask", err)) {
        return COMMON_ERR_INVALID;
    }
    sum_rows_ctx c = {(double *)(void *)at(acc),
                      at(x),
                      (const int32_t *)(const void *)at(mask),
                      acc_ld,
                      x_ld,
                      rows,
                      n_groups};
    parallel_for(impl_of(be), cols, rows * n_groups, sum_rows_cols, &c);
    return 0;
}

typedef struct centre_ctx {
    float *x;
    const float *scale;
    size_t d, period;
} centre_ctx;

/* interp's apply_ln_to_stack, row by row: the mean in double in increasing order, then one
 * float subtraction and division per element (model.h). */
static void centre_rows(void *p, size_t b, size_t e) {
    const centre_ctx *c = p;
    for (size_t r = b; r < e; r++) {
        float *x = c->x + r * c->d;
        double s = 0.0;
        for (size_t i = 0; i < c->d; i++) {
            s += x[i];
        }
        float mu = (float)(s / (double)c->d), sc = c->scale[r % c->period];
        for (size_t i = 0; i < c->d; i++) {
            x[i] = (x[i] - mu) / sc;
        }
    }
}

static int cpu_centre_scale(model_backend *be, model_ref x, model_ref scale, size_t rows, size_t d,
                            size_t period, char *err) {
    if (rows == 0 || d == 0) {
        return 0;
    }
    if (period == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "cpu backend centre_scale: period 0");
    }
    if (check_range(x, rows * d, "centre_scale x", err) ||
        check_range(scale, period, "centre_scale scale", err)) {
        return COMMON_ERR_INVALID;
    }
    centre_ctx c = {at(x), at(scale), d, period};
    parallel_for(impl_of(be), rows, 3 * d, centre_rows, &c); /* sum, subtract, divide */
    return 0;
}

typedef struct legal_ctx {
    double *count, *sum;  /* [cells], [MODEL_LEGAL_N_STATS, cells] */
    float *min, *max;     /* [MODEL_LEGAL_N_STATS, cells] */
    const float *x;       /* [n_comp, T, V] */
    const int32_t *legal; /* [T, V] */
    size_t cells, acc_T, T, V;
} legal_ctx;

/* Components [b, e): each cell is one thread's, so its additions are made in game order. The
 * body is interp_legal_stats_add's, operation for operation (model.h). */
static void legal_comps(void *p, size_t b, size_t e) {
    const legal_ctx *c = p;
    size_t V = c->V;
    for (size_t comp = b; comp < e; comp++) {
        for (size_t t = 0; t < c->T; t++) {
            const int32_t *lg = c->legal + t * V;
            size_t n_legal = 0;
            for (size_t v = 0; v < V; v++) {
                n_legal += lg[v] != 0;
            }
            if (n_legal == 0 || n_legal == V) {
                continue;
            }
            const float *x = c->x + (comp * c->T + t) * V;
            float mn_l = INFINITY, mx_i = -INFINITY;
            double sum_l = 0.0, sum_i = 0.0;
            for (size_t v = 0; v < V; v++) {
                if (lg[v] != 0) {
                    mn_l = x[v] < mn_l ? x[v] : mn_l;
                    sum_l += x[v];
                } else {
                    mx_i = x[v] > mx_i ? x[v] : mx_i;
                    sum_i += x[v];
                }
            }
            double mean_l = sum_l / (double)n_legal, mean_i = sum_i / (double)(V - n_legal);
            double v6[MODEL_LEGAL_N_STATS] = {
                mn_l, mx_i, mean_l, mean_i, mn_l - (double)mx_i, mean_l - mean_i};
            size_t cell = comp * c->acc_T + t;
            c->count[cell] += 1.0;
            for (size_t k = 0; k < MODEL_LEGAL_N_STATS; k++) {
                size_t i = k * c->cells + cell;
                float f = (float)v6[k];
                c->sum[i] += v6[k];
                c->min[i] = f < c->min[i] ? f : c->min[i];
                c->max[i] = f > c->max[i] ? f : c->max[i];
            }
        }
    }
}

static int cpu_legal_stats(model_backend *be, model_ref acc, size_t acc_T, model_ref x,
                           model_ref legal, size_t n_comp, size_t T, size_t V, char *err) {
    if (T > acc_T || acc.off % 2 != 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "cpu backend legal_stats: %zu positions into accumulators of %zu, or "
                           "an odd accumulator offset %zu",
                           T, acc_T, acc.off);
    }
    if (n_comp == 0 || T == 0 || V == 0) {
        return 0;
    }
    size_t cells = n_comp * acc_T;
    if (check_range(acc, MODEL_LEGAL_ACC_LEN(cells), "legal_stats acc", err) ||
        check_range(x, n_comp * T * V, "legal_stats x", err) ||
        check_range(legal, T * V, "legal_stats legal", err)) {
        return COMMON_ERR_INVALID;
    }
    float *a = at(acc);
    legal_ctx c = {(double *)(void *)(a + MODEL_LEGAL_ACC_COUNT(cells)),
                   (double *)(void *)(a + MODEL_LEGAL_ACC_SUM(cells)),
                   a + MODEL_LEGAL_ACC_MIN(cells),
                   a + MODEL_LEGAL_ACC_MAX(cells),
                   at(x),
                   (const int32_t *)(const void *)at(legal),
                   cells,
                   acc_T,
                   T,
                   V};
    parallel_for(impl_of(be), n_comp, 3 * T * V, legal_comps, &c); /* mask, logits, sums */
    return 0;
}

/* One row at a time through model_metric_eval, the arithmetic the other backends repeat. */
static int cpu_row_metrics(model_backend *be, model_ref out, model_ref x, size_t x_ld,
                           model_ref spec, model_ref masks, size_t n_masks, size_t rows, size_t V,
                           char *err) {
    (void)be;
    if (out.off % 2 != 0) {
        return common_fail(err, COMMON_ERR_INVALID, "cpu backend row_metrics: odd offset %zu",
                           out.off);
    }
    if (rows == 0) {
        return 0;
    }
    if (check_range(out, 2 * rows, "row_metrics out", err) ||
        check_range(x, (rows - 1) * x_ld + V, "row_metrics x", err) ||
        check_range(spec, rows * MODEL_METRIC_FIELDS, "row_metrics spec", err) ||
        (n_masks > 0 && check_range(masks, (n_masks * V + 3) / 4, "row_metrics masks", err))) {
        return COMMON_ERR_INVALID;
    }
    double *o = (double *)(void *)at(out);
    const model_metric *sp = (const model_metric *)(const void *)at(spec);
    const uint8_t *mk = n_masks > 0 ? (const uint8_t *)(const void *)at(masks) : NULL;
    for (size_t r = 0; r < rows; r++) {
        const model_metric *m = &sp[r];
        bool mass = m->kind == MODEL_METRIC_MASS;
        if (mass && (m->mask < 0 || (size_t)m->mask >= n_masks)) {
            o[r] = NAN;
            continue;
        }
        o[r] = model_metric_eval(m, at(x) + r * x_ld, mass ? mk + (size_t)m->mask * V : NULL, V);
    }
    return 0;
}

static int cpu_sync(model_backend *be, char *err) {
    (void)be;
    (void)err;
    return 0;
}

static void cpu_destroy(model_backend *be) {
    cpu_impl *im = be->impl;
    if (im) {
        cpu_pool *pool = &im->pool;
        if (pool->threads) {
            pthread_mutex_lock(&pool->mu);
            pool->stop = true;
            pthread_cond_broadcast(&pool->start);
            pthread_mutex_unlock(&pool->mu);
            for (size_t i = 0; i < pool->n_workers; i++) {
                pthread_join(pool->threads[i], NULL);
            }
            free(pool->threads);
        }
        pthread_mutex_destroy(&pool->mu);
        pthread_cond_destroy(&pool->start);
        pthread_cond_destroy(&pool->done);
        free(im);
    }
    free(be);
}

int model_backend_cpu_new(model_backend **out, int n_threads, char *err) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    model_backend *be = calloc(1, sizeof *be);
    cpu_impl *im = calloc(1, sizeof *im);
    if (!be || !im) {
        free(be);
        free(im);
        return common_fail(err, COMMON_ERR_NOMEM, "cpu backend: out of memory");
    }
    be->impl = im;
    be->name = "cpu";
    be->destroy = cpu_destroy;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->mem_stats = cpu_mem_stats;
    be->reset_peak = cpu_reset_peak;
    be->upload = cpu_upload;
    be->download = cpu_download;
    be->copy2d = cpu_copy2d;
    be->fill = cpu_fill;
    be->gemm = cpu_gemm;
    be->add = cpu_add;
    be->layer_norm = cpu_layer_norm;
    be->affine = cpu_affine;
    be->gather_rows = cpu_gather_rows;
    be->copy_rows = cpu_copy_rows;
    be->attn_mask = cpu_attn_mask;
    be->softmax = cpu_softmax;
    be->gelu_new = cpu_gelu_new;
    be->sync = cpu_sync;
    be->sum_rows = cpu_sum_rows;
    be->centre_scale = cpu_centre_scale;
    be->legal_stats = cpu_legal_stats;
    be->row_metrics = cpu_row_metrics;
    im->n_threads = (size_t)n_threads;
    cpu_pool *pool = &im->pool;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->start, NULL);
    pthread_cond_init(&pool->done, NULL);
    if (n_threads > 1) {
        pool->threads = calloc((size_t)n_threads - 1, sizeof *pool->threads);
        if (!pool->threads) {
            cpu_destroy(be);
            return common_fail(err, COMMON_ERR_NOMEM, "cpu backend: out of memory");
        }
        for (size_t i = 0; i < (size_t)n_threads - 1; i++) {
            worker_arg *a = malloc(sizeof *a);
            if (!a) {
                cpu_destroy(be);
                return common_fail(err, COMMON_ERR_NOMEM, "cpu backend: out of memory");
            }
            a->pool = pool;
            a->index = i + 1;
            if (pthread_create(&pool->threads[i], NULL, worker_main, a) != 0) {
                free(a);
                cpu_destroy(be);
                return common_fail(err, COMMON_ERR_BACKEND, "cpu backend: pthread_create failed");
            }
            pool->n_workers++;
        }
    }
    openblas_set_num_threads(n_threads);
    *out = be;
    return 0;
}

void model_backend_destroy(model_backend **be) {
    if (!be || !*be) {
        return;
    }
    (*be)->destroy(*be);
    *be = NULL;
}
