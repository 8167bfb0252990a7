/*
 * The CUDA backend (gpu.h) against the CPU backend: every operation of the backend interface
 * on random inputs (odd sizes, strides, aliasing, batches, masked rows, the edge cases each op
 * documents), then whole runs on a random model: every hook and the logits of a batched
 * forward with padding, an incremental run from a base cache, and every activation patching
 * kind through interp (fast with and without the identical-prefix shortcut, plain, batched
 * pairs), and sum_rows and legal_stats, which must equal the CPU's bit for bit; centre_scale
 * and legal-move statistics through interp_legal_accum on both sessions; the optional ops too:
 * fused attention against the unfused composition (op and whole forwards without pattern hooks) and
 * graph capture and replay. Tolerance, float32 on both sides:
 * an element may differ by 1e-5 of the largest magnitude of its tensor (the two backends sum in
 * different orders), and a whole tensor by a relative L2 error of 1e-5.
 *
 * Without a visible CUDA device the test prints why and exits 77, which ctest reports as
 * skipped. CHESSLENS_GPU_TEST_SELF_CHECK=1 runs the same comparisons with a second CPU backend
 * (2 threads) in the CUDA backend's place, to check the test itself on a machine without a GPU;
 * it says so on stderr and proves nothing about the GPU.
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

#include "gpu/gpu.h"
#include "interp/interp.h"
#include "tests/model/attn_compose.h"

#define TOL 1e-5

static model_backend *cpu, *dev; /* the reference and the backend under test */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((double)(rng_state >> 40) / (double)(1ULL << 24)) * 2.0f - 1.0f;
}

static float *random_floats(size_t n, float scale, float offset) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) {
        x[i] = offset + scale * frand();
    }
    return x;
}

/* One buffer of n elements on each backend, with the same contents. */
typedef struct twin {
    model_buf *c, *d;
    size_t n;
} twin;

static twin twin_new(const void *host, size_t n) {
    char err[COMMON_ERR_LEN];
    twin t = {NULL, NULL, n};
    assert_int_equal(cpu->alloc(cpu, n, &t.c, err), 0);
    assert_int_equal(dev->alloc(dev, n, &t.d, err), 0);
    /* no contents given: zeros, so that what an op must not touch compares equal too */
    void *zeros = host == NULL ? calloc(n ? n : 1, sizeof(float)) : NULL;
    const void *src = host != NULL ? host : zeros;
    assert_non_null(src);
    assert_int_equal(cpu->upload(cpu, (model_ref){t.c, 0}, src, n, err), 0);
    assert_int_equal(dev->upload(dev, (model_ref){t.d, 0}, src, n, err), 0);
    free(zeros);
    return t;
}

static void twin_free(twin *t) {
    cpu->free(cpu, t->c);
    dev->free(dev, t->d);
}

static model_ref rc_(const twin *t, size_t off) {
    return (model_ref){t->c, off};
}
static model_ref rd_(const twin *t, size_t off) {
    return (model_ref){t->d, off};
}

/* Largest |a - b| over n values, against the largest |b| (1 when smaller). NaN in one and not
 * the other counts as infinite; equal infinities and NaN in both count as 0. */
static double rel_max(const float *a, const float *b, size_t n) {
    double worst = 0.0, big = 1.0;
    for (size_t i = 0; i < n; i++) {
        big = isfinite(b[i]) && fabs(b[i]) > big ? fabs(b[i]) : big;
    }
    for (size_t i = 0; i < n; i++) {
        if ((isnan(a[i]) && isnan(b[i])) || (isinf(a[i]) && a[i] == b[i])) {
            continue;
        }
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= worst)) {
            worst = isfinite(d) ? d : INFINITY;
        }
    }
    return worst / big;
}

static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(b[i])) {
            continue;
        }
        double d = isfinite(a[i]) ? (double)a[i] - (double)b[i] : 1e30;
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void expect_close(const char *what, const float *got, const float *want, size_t n) {
    double m = rel_max(got, want, n), l2 = rel_l2(got, want, n);
    if (!(m <= TOL && l2 <= TOL)) {
        fail_msg("%s: max error %.3g of the largest value, relative L2 %.3g (tolerance %.0e)", what,
                 m, l2, TOL);
    }
}

/* Downloads both copies of t and compares them. */
static void expect_twin(const char *what, const twin *t) {
    char err[COMMON_ERR_LEN];
    float *a = malloc(t->n * sizeof *a), *b = malloc(t->n * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(dev->download(dev, a, rd_(t, 0), t->n, err), 0);
    assert_int_equal(cpu->download(cpu, b, rc_(t, 0), t->n, err), 0);
    expect_close(what, a, b, t->n);
    free(a);
    free(b);
}

/* ---- operations ---------------------------------------------------------------------- */

static void gemm_case(bool ta, bool tb, size_t m, size_t n, size_t k, size_t batch, size_t pad) {
    char err[COMMON_ERR_LEN], what[128];
    size_t a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
    size_t lda = a_cols + pad, ldb = b_cols + pad, ldc = n + pad;
    size_t sa = a_rows * lda + pad, sb = b_rows * ldb, sc = m * ldc + 2 * pad;
    float *ha = random_floats(sa * batch, 1.0f, 0.0f), *hb = random_floats(sb * batch, 1.0f, 0.0f);
    float *hc = random_floats(sc * batch, 1.0f, 0.0f);
    twin a = twin_new(ha, sa * batch), b = twin_new(hb, sb * batch), c = twin_new(hc, sc * batch);
    model_gemm g = {.trans_a = ta,
                    .trans_b = tb,
                    .m = m,
                    .n = n,
                    .k = k,
                    .alpha = 0.5f,
                    .beta = 0.25f,
                    .lda = lda,
                    .stride_a = sa,
                    .ldb = ldb,
                    .stride_b = sb,
                    .ldc = ldc,
                    .stride_c = sc,
                    .batch = batch};
    g.a = rc_(&a, 0), g.b = rc_(&b, 0), g.c = rc_(&c, 0);
    assert_int_equal(cpu->gemm(cpu, &g, err), 0);
    g.a = rd_(&a, 0), g.b = rd_(&b, 0), g.c = rd_(&c, 0);
    assert_int_equal(dev->gemm(dev, &g, err), 0);
    snprintf(what, sizeof what, "gemm %s%s m=%zu n=%zu k=%zu batch=%zu pad=%zu", ta ? "T" : "N",
             tb ? "T" : "N", m, n, k, batch, pad);
    expect_twin(what, &c); /* the padding between rows must be untouched too */
    twin_free(&a);
    twin_free(&b);
    twin_free(&c);
    free(ha);
    free(hb);
    free(hc);
}

static void test_gemm(void **state) {
    (void)state;
    static const size_t shapes[][3] = {
        {1, 1, 1}, {7, 5, 3}, {33, 65, 129}, {128, 768, 768}, {1, 3072, 768}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int t = 0; t < 4; t++) {
            gemm_case(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 1, 0);
            gemm_case(t & 1, t & 2, shapes[s][0], shapes[s][1], shapes[s][2], 3, 3);
        }
    }
}

static void test_elementwise(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    enum { N = 100003 }; /* not a multiple of any block size */
    float *hx = random_floats(N, 12.0f, 0.0f), *hy = random_floats(N, 3.0f, 1.0f);
    twin x = twin_new(hx, N), y = twin_new(hy, N), z = twin_new(NULL, N);
    /* add, with the destination aliasing an input */
    assert_int_equal(cpu->add(cpu, rc_(&y, 0), rc_(&x, 0), rc_(&y, 0), N, err), 0);
    assert_int_equal(dev->add(dev, rd_(&y, 0), rd_(&x, 0), rd_(&y, 0), N, err), 0);
    expect_twin("add", &y);
    /* gelu_new over [-12, 12], in place and out of place */
    assert_int_equal(cpu->gelu_new(cpu, rc_(&z, 0), rc_(&x, 0), N, err), 0);
    assert_int_equal(dev->gelu_new(dev, rd_(&z, 0), rd_(&x, 0), N, err), 0);
    expect_twin("gelu_new", &z);
    assert_int_equal(cpu->gelu_new(cpu, rc_(&x, 0), rc_(&x, 0), N, err), 0);
    assert_int_equal(dev->gelu_new(dev, rd_(&x, 0), rd_(&x, 0), N, err), 0);
    expect_twin("gelu_new in place", &x);
    /* fill part of a buffer */
    assert_int_equal(cpu->fill(cpu, rc_(&z, 17), 1000, -2.5f, err), 0);
    assert_int_equal(dev->fill(dev, rd_(&z, 17), 1000, -2.5f, err), 0);
    expect_twin("fill", &z);
    /* affine on rows of 96 (w and b from the start of x and y) */
    size_t rows = 1000, d = 96;
    assert_int_equal(cpu->affine(cpu, rc_(&z, 5), rc_(&y, 5), rc_(&x, 0), rc_(&y, 3), rows, d, err),
                     0);
    assert_int_equal(dev->affine(dev, rd_(&z, 5), rd_(&y, 5), rd_(&x, 0), rd_(&y, 3), rows, d, err),
                     0);
    expect_twin("affine", &z);
    /* copy2d: strided rows, one row, and one row broadcast (src_ld 0) */
    assert_int_equal(cpu->copy2d(cpu, rc_(&z, 1), 130, rc_(&x, 7), 97, 300, 90, err), 0);
    assert_int_equal(dev->copy2d(dev, rd_(&z, 1), 130, rd_(&x, 7), 97, 300, 90, err), 0);
    expect_twin("copy2d", &z);
    assert_int_equal(cpu->copy2d(cpu, rc_(&z, 3), 0, rc_(&y, 0), 0, 1, 500, err), 0);
    assert_int_equal(dev->copy2d(dev, rd_(&z, 3), 0, rd_(&y, 0), 0, 1, 500, err), 0);
    expect_twin("copy2d one row", &z);
    assert_int_equal(cpu->copy2d(cpu, rc_(&z, 50000), 70, rc_(&y, 9), 0, 200, 64, err), 0);
    assert_int_equal(dev->copy2d(dev, rd_(&z, 50000), 70, rd_(&y, 9), 0, 200, 64, err), 0);
    expect_twin("copy2d broadcast", &z);
    twin_free(&x);
    twin_free(&y);
    twin_free(&z);
    free(hx);
    free(hy);
}

static void test_layer_norm(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    static const size_t shapes[][2] = {{37, 768}, {5, 5}, {3, 1600}, {1, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t rows = shapes[s][0], d = shapes[s][1];
        /* a large mean, as residual streams have, so centring matters */
        float *hx = random_floats(rows * d, 3.0f, 100.0f);
        twin x = twin_new(hx, rows * d), y = twin_new(NULL, rows * d), sc = twin_new(NULL, rows);
        assert_int_equal(
            cpu->layer_norm(cpu, rc_(&x, 0), rc_(&y, 0), rc_(&sc, 0), rows, d, 1e-5f, err), 0);
        assert_int_equal(
            dev->layer_norm(dev, rd_(&x, 0), rd_(&y, 0), rd_(&sc, 0), rows, d, 1e-5f, err), 0);
        expect_twin("layer_norm", &y);
        expect_twin("layer_norm scale", &sc);
        /* in place */
        assert_int_equal(
            cpu->layer_norm(cpu, rc_(&x, 0), rc_(&x, 0), rc_(&sc, 0), rows, d, 1e-5f, err), 0);
        assert_int_equal(
            dev->layer_norm(dev, rd_(&x, 0), rd_(&x, 0), rd_(&sc, 0), rows, d, 1e-5f, err), 0);
        expect_twin("layer_norm in place", &x);
        twin_free(&x);
        twin_free(&y);
        twin_free(&sc);
        free(hx);
    }
}

static void test_attention(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    /* [H=3, T=41, T=41] scores with a row stride of 45, queries 2..40, scale sqrt(16) */
    size_t H = 3, T = 41, ld = 45, hs = T * ld;
    float *hs_ = random_floats(H * hs, 8.0f, 0.0f);
    twin s = twin_new(hs_, H * hs), p = twin_new(NULL, H * hs);
    model_attn_rows g = {
        .n_heads = H, .head_stride = hs, .q_begin = 2, .q_end = T, .ld = ld, .n_keys = T};
    assert_int_equal(cpu->attn_mask(cpu, rc_(&s, 0), &g, 4.0f, err), 0);
    assert_int_equal(dev->attn_mask(dev, rd_(&s, 0), &g, 4.0f, err), 0);
    expect_twin("attn_mask", &s);
    assert_int_equal(cpu->softmax(cpu, rc_(&p, 0), rc_(&s, 0), &g, err), 0);
    assert_int_equal(dev->softmax(dev, rd_(&p, 0), rd_(&s, 0), &g, err), 0);
    expect_twin("softmax", &p);
    /* in place, and rows with every key masked (-inf): zeros */
    assert_int_equal(cpu->fill(cpu, rc_(&s, 5 * ld), ld, -INFINITY, err), 0);
    assert_int_equal(dev->fill(dev, rd_(&s, 5 * ld), ld, -INFINITY, err), 0);
    assert_int_equal(cpu->softmax(cpu, rc_(&s, 0), rc_(&s, 0), &g, err), 0);
    assert_int_equal(dev->softmax(dev, rd_(&s, 0), rd_(&s, 0), &g, err), 0);
    expect_twin("softmax in place with a masked row", &s);
    float row[45];
    assert_int_equal(dev->download(dev, row, rd_(&s, 5 * ld), T, err), 0);
    for (size_t k = 0; k < T; k++) {
        assert_true(row[k] == 0.0f);
    }
    /* one query row of more keys than a warp has lanes times a few */
    model_attn_rows one = {
        .n_heads = 1, .head_stride = 0, .q_begin = 0, .q_end = 1, .ld = 0, .n_keys = H * hs};
    assert_int_equal(cpu->softmax(cpu, rc_(&p, 0), rc_(&p, 0), &one, err), 0);
    assert_int_equal(dev->softmax(dev, rd_(&p, 0), rd_(&p, 0), &one, err), 0);
    expect_twin("softmax of one long row", &p);
    twin_free(&s);
    twin_free(&p);
    free(hs_);
}

/* attn_fused against the unfused composition on the CPU: three packed sequences in one call (one
 * with queries from 2, one whose keys start at row 29, one without queries), padded row strides,
 * a d_head wider than a warp, a key count above one sequence's queries, and scores large enough
 * that the online softmax rescales often; a sequence outside its rows reported at the sync. */
static void test_attn_fused(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    if (dev->attn_fused == NULL) {
        fprintf(stderr, "test_attn_fused: the backend has no fused attention\n");
        return;
    }
    size_t H = 3, Dh = 37, nk = 33, ld = H * Dh + 5, q_rows = 60, kv_rows = 62;
    int32_t seqs[3 * MODEL_ATTN_SEQ_FIELDS] = {0, 0, 2, 29, 27, 29, 0, 33, 60, 0, 5, 5};
    float *hq = random_floats(q_rows * ld, 2.0f, 0.0f);
    float *hk = random_floats(kv_rows * ld, 2.0f, 0.0f);
    float *hv = random_floats(kv_rows * ld, 1.0f, 0.5f);
    twin q = twin_new(hq, q_rows * ld), k = twin_new(hk, kv_rows * ld);
    twin v = twin_new(hv, kv_rows * ld), z = twin_new(NULL, q_rows * ld);
    twin sq = twin_new(seqs, sizeof seqs / sizeof *seqs);
    model_attn a = {.n_heads = H,
                    .d_head = Dh,
                    .n_keys = nk,
                    .q_ld = ld,
                    .kv_ld = ld,
                    .z_ld = ld,
                    .attn_scale = sqrtf((float)Dh),
                    .n_seqs = 3,
                    .q_rows = q_rows,
                    .kv_rows = kv_rows};
    for (int scale = 0; scale < 2; scale++) {
        /* the second time, a scale that makes the scores large: the running maximum moves far */
        a.attn_scale = scale == 0 ? sqrtf((float)Dh) : 0.05f;
        a.q = rc_(&q, 0), a.k = rc_(&k, 0), a.v = rc_(&v, 0), a.z = rc_(&z, 0),
        a.seqs = rc_(&sq, 0);
        assert_int_equal(test_attn_compose(cpu, &a, err), 0);
        a.q = rd_(&q, 0), a.k = rd_(&k, 0), a.v = rd_(&v, 0), a.z = rd_(&z, 0),
        a.seqs = rd_(&sq, 0);
        if (dev->attn_fused(dev, &a, err) != 0) {
            fail_msg("%s", err);
        }
        expect_twin(scale == 0 ? "attn_fused" : "attn_fused, large scores", &z);
    }
    /* refusals: rows past a buffer at once; a sequence past n_keys at the next sync */
    a.kv_ld = ld + 1;
    assert_int_equal(dev->attn_fused(dev, &a, err), COMMON_ERR_INVALID);
    a.kv_ld = ld;
    a.n_keys = 32;
    int rc = dev->attn_fused(dev, &a, err);
    if (rc == 0) {
        rc = dev->sync(dev, err);
    }
    assert_int_equal(rc, COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "attn_fused"));
    assert_int_equal(dev->sync(dev, err), 0);
    twin_free(&q);
    twin_free(&k);
    twin_free(&v);
    twin_free(&z);
    twin_free(&sq);
    free(hq);
    free(hk);
    free(hv);
}

/* A recorded sequence replays on whatever its buffers hold at launch; what cannot be recorded
 * fails the recording and leaves the backend usable. */
static void test_graphs(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    if (dev->graph_begin == NULL) {
        fprintf(stderr, "test_graphs: the backend has no graphs\n");
        return;
    }
    size_t m = 7, n = 9, kk = 5;
    float *ha = random_floats(m * kk, 1.0f, 0.0f), *hb = random_floats(kk * n, 1.0f, 0.0f);
    twin a = twin_new(ha, m * kk), b = twin_new(hb, kk * n), c = twin_new(NULL, m * n);
    model_graph *g = NULL;
    model_gemm gd = {false, false,      m, n, kk,         1.0f, 0.0f, rd_(&a, 0), kk,
                     0,     rd_(&b, 0), n, 0, rd_(&c, 0), n,    0,    1};
    model_gemm gc = gd;
    gc.a = rc_(&a, 0);
    gc.b = rc_(&b, 0);
    gc.c = rc_(&c, 0);
    assert_int_equal(dev->graph_begin(dev, err), 0);
    assert_int_equal(dev->gemm(dev, &gd, err), 0);
    assert_int_equal(dev->gelu_new(dev, rd_(&c, 0), rd_(&c, 0), m * n, err), 0);
    assert_int_equal(dev->add(dev, rd_(&c, 0), rd_(&c, 0), rd_(&c, 0), m * n, err), 0);
    if (dev->graph_end(dev, &g, err) != 0) {
        fail_msg("%s", err);
    }
    for (int round = 0; round < 3; round++) {
        /* new inputs, then one launch: the graph reads the buffers as they are now */
        float *na = random_floats(m * kk, 1.0f, (float)round);
        assert_int_equal(cpu->upload(cpu, rc_(&a, 0), na, m * kk, err), 0);
        assert_int_equal(dev->upload(dev, rd_(&a, 0), na, m * kk, err), 0);
        assert_int_equal(cpu->gemm(cpu, &gc, err), 0);
        assert_int_equal(cpu->gelu_new(cpu, rc_(&c, 0), rc_(&c, 0), m * n, err), 0);
        assert_int_equal(cpu->add(cpu, rc_(&c, 0), rc_(&c, 0), rc_(&c, 0), m * n, err), 0);
        assert_int_equal(dev->graph_launch(dev, g, err), 0);
        expect_twin("graph replay", &c);
        free(na);
    }
    dev->graph_destroy(dev, g);
    dev->graph_destroy(dev, NULL);
    /* an upload while recording is refused and fails the recording */
    g = NULL;
    assert_int_equal(dev->graph_begin(dev, err), 0);
    assert_int_not_equal(dev->graph_begin(dev, err), 0);
    assert_int_equal(dev->upload(dev, rd_(&a, 0), ha, m * kk, err), COMMON_ERR_INVALID);
    assert_int_not_equal(dev->graph_end(dev, &g, err), 0);
    assert_null(g);
    assert_int_not_equal(dev->graph_end(dev, &g, err), 0); /* not recording any more */
    assert_int_equal(dev->upload(dev, rd_(&a, 0), ha, m * kk, err), 0);
    assert_int_equal(cpu->upload(cpu, rc_(&a, 0), ha, m * kk, err), 0);
    assert_int_equal(dev->gemm(dev, &gd, err), 0);
    assert_int_equal(cpu->gemm(cpu, &gc, err), 0);
    expect_twin("gemm after a failed recording", &c);
    twin_free(&a);
    twin_free(&b);
    twin_free(&c);
    free(ha);
    free(hb);
}

static void test_gather_rows(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    size_t rows = 77, d = 64, n = 500;
    float *ht = random_floats(rows * d, 1.0f, 0.0f);
    int32_t idx[500];
    for (size_t i = 0; i < n; i++) {
        idx[i] = (int32_t)((i * 31 + 7) % rows);
    }
    twin t = twin_new(ht, rows * d), ix = twin_new(idx, n), out = twin_new(NULL, n * d);
    assert_int_equal(cpu->gather_rows(cpu, rc_(&out, 0), rc_(&t, 0), rc_(&ix, 0), n, d, err), 0);
    assert_int_equal(dev->gather_rows(dev, rd_(&out, 0), rd_(&t, 0), rd_(&ix, 0), n, d, err), 0);
    expect_twin("gather_rows", &out);
    /* an index outside the table: the CPU refuses at once, the device at the next sync */
    int32_t bad = (int32_t)rows;
    assert_int_equal(cpu->upload(cpu, rc_(&ix, 3), &bad, 1, err), 0);
    assert_int_equal(dev->upload(dev, rd_(&ix, 3), &bad, 1, err), 0);
    assert_int_equal(cpu->gather_rows(cpu, rc_(&out, 0), rc_(&t, 0), rc_(&ix, 0), n, d, err),
                     COMMON_ERR_INVALID);
    int rc = dev->gather_rows(dev, rd_(&out, 0), rd_(&t, 0), rd_(&ix, 0), n, d, err);
    if (rc == 0) {
        rc = dev->sync(dev, err);
    }
    assert_int_equal(rc, COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "gather_rows"));
    assert_int_equal(dev->sync(dev, err), 0); /* reported once; the backend still works */
    twin_free(&t);
    twin_free(&ix);
    twin_free(&out);
    free(ht);
}

/* sum_rows: the same double additions in the same order on both sides, so the sums must be
 * equal bit for bit, not merely close (model.h). */
static void test_sum_rows(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    size_t rows = 3 * 127, cols = 3072, groups = 6, n_acc = groups * cols;
    float *hx = random_floats(rows * cols, 4.0f, 0.5f);
    int32_t *mask = malloc(rows * sizeof *mask);
    assert_non_null(mask);
    for (size_t r = 0; r < rows; r++) {
        mask[r] = (int32_t)((r * 2654435761u >> 7) & 63u);
    }
    twin x = twin_new(hx, rows * cols), m = twin_new(mask, rows);
    twin acc = twin_new(NULL, 2 * n_acc + 2); /* doubles from element 2 on: zeros */
    for (int k = 0; k < 2; k++) {             /* and accumulating on what is there */
        assert_int_equal(cpu->sum_rows(cpu, rc_(&acc, 2), cols, rc_(&x, 0), cols, rc_(&m, 0), rows,
                                       cols, groups, err),
                         0);
        assert_int_equal(dev->sum_rows(dev, rd_(&acc, 2), cols, rd_(&x, 0), cols, rd_(&m, 0), rows,
                                       cols, groups, err),
                         0);
    }
    double *a = malloc((n_acc + 1) * sizeof *a), *b = malloc((n_acc + 1) * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(dev->download(dev, a, rd_(&acc, 0), 2 * n_acc + 2, err), 0);
    assert_int_equal(cpu->download(cpu, b, rc_(&acc, 0), 2 * n_acc + 2, err), 0);
    for (size_t i = 0; i < n_acc + 1; i++) {
        if (memcmp(&a[i], &b[i], sizeof a[i]) != 0) {
            fail_msg("sum_rows: double %zu is %.17g on the device, %.17g on the CPU", i, a[i],
                     b[i]);
        }
    }
    assert_int_equal(dev->sum_rows(dev, rd_(&acc, 1), cols, rd_(&x, 0), cols, rd_(&m, 0), rows,
                                   cols, groups, err),
                     COMMON_ERR_INVALID);
    twin_free(&x);
    twin_free(&m);
    twin_free(&acc);
    free(hx);
    free(mask);
    free(a);
    free(b);
}

/* centre_scale: rows [n, period, d] with a large mean, as residual rows have; the two sides
 * add each row in different orders, so within TOL. */
static void test_centre_scale(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    static const size_t shapes[][3] = {{5, 13, 77}, {3, 127, 768}, {1, 1, 1}, {2, 3, 33}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t period = shapes[s][1], d = shapes[s][2], rows = shapes[s][0] * period;
        float *hx = random_floats(rows * d + 3, 3.0f, 100.0f);
        float *hs = random_floats(period + 1, 0.5f, 1.0f); /* positive, as LayerNorm scales */
        twin x = twin_new(hx, rows * d + 3), sc = twin_new(hs, period + 1);
        assert_int_equal(cpu->centre_scale(cpu, rc_(&x, 3), rc_(&sc, 1), rows, d, period, err), 0);
        assert_int_equal(dev->centre_scale(dev, rd_(&x, 3), rd_(&sc, 1), rows, d, period, err), 0);
        expect_twin("centre_scale", &x);
        assert_int_equal(dev->centre_scale(dev, rd_(&x, 3), rd_(&sc, 1), rows, d, 0, err),
                         COMMON_ERR_INVALID);
        assert_int_equal(dev->centre_scale(dev, rd_(&x, 4), rd_(&sc, 1), rows, d, period, err),
                         COMMON_ERR_INVALID);
        twin_free(&x);
        twin_free(&sc);
        free(hx);
        free(hs);
    }
}

/* legal_stats: the same operations in the same order on both sides (model.h), so the
 * accumulators must be equal bit for bit, over two games, NaN and signed zeros included. */
static void test_legal_stats(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    size_t n_comp = 170, T = 127, acc_T = 130, V = 77, cells = n_comp * acc_T;
    size_t n_acc = MODEL_LEGAL_ACC_LEN(cells);
    twin acc = twin_new(NULL, n_acc + 2); /* from element 2 on */
    for (int side = 0; side < 2; side++) {
        model_backend *be = side == 0 ? cpu : dev;
        model_buf *b = side == 0 ? acc.c : acc.d;
        assert_int_equal(be->fill(be, (model_ref){b, 2 + MODEL_LEGAL_ACC_MIN(cells)},
                                  MODEL_LEGAL_N_STATS * cells, INFINITY, err),
                         0);
        assert_int_equal(be->fill(be, (model_ref){b, 2 + MODEL_LEGAL_ACC_MAX(cells)},
                                  MODEL_LEGAL_N_STATS * cells, -INFINITY, err),
                         0);
    }
    int32_t *mask = malloc(T * V * sizeof *mask);
    assert_non_null(mask);
    for (int game = 0; game < 2; game++) {
        float *hx = random_floats(n_comp * T * V, 6.0f, 0.0f);
        for (size_t i = 0; i < n_comp * T * V; i += 997) {
            hx[i] = i % 3 == 0 ? NAN : i % 3 == 1 ? -0.0f : 0.0f;
        }
        for (size_t t = 0; t < T; t++) {
            for (size_t v = 0; v < V; v++) {
                /* position 0: nothing legal; position 1: everything; else about one in six */
                float r = frand();
                mask[t * V + v] = t == 0 ? 0 : t == 1 ? 1 : r > 0.66f ? (int32_t)(t + 1) : 0;
            }
        }
        twin x = twin_new(hx, n_comp * T * V), lg = twin_new(mask, T * V);
        assert_int_equal(
            cpu->legal_stats(cpu, rc_(&acc, 2), acc_T, rc_(&x, 0), rc_(&lg, 0), n_comp, T, V, err),
            0);
        assert_int_equal(
            dev->legal_stats(dev, rd_(&acc, 2), acc_T, rd_(&x, 0), rd_(&lg, 0), n_comp, T, V, err),
            0);
        twin_free(&x);
        twin_free(&lg);
        free(hx);
    }
    float *a = malloc((n_acc + 2) * sizeof *a), *b = malloc((n_acc + 2) * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(dev->download(dev, a, rd_(&acc, 0), n_acc + 2, err), 0);
    assert_int_equal(cpu->download(cpu, b, rc_(&acc, 0), n_acc + 2, err), 0);
    const double *count = (const double *)(const void *)(b + 2);
    assert_true(count[T - 1] == 2.0 && count[0] == 0.0 && count[1] == 0.0);
    for (size_t i = 0; i < n_acc + 2; i++) {
        if (memcmp(&a[i], &b[i], sizeof a[i]) != 0) {
            fail_msg("legal_stats: element %zu of the accumulators differs (device %08x, CPU "
                     "%08x)",
                     i, *(const uint32_t *)(const void *)&a[i],
                     *(const uint32_t *)(const void *)&b[i]);
        }
    }
    assert_int_equal(
        dev->legal_stats(dev, rd_(&acc, 1), acc_T, rd_(&acc, 0), rd_(&acc, 0), 1, 1, 1, err),
        COMMON_ERR_INVALID);
    assert_int_equal(
        dev->legal_stats(dev, rd_(&acc, 2), 3, rd_(&acc, 0), rd_(&acc, 0), 1, 4, 1, err),
        COMMON_ERR_INVALID);
    twin_free(&acc);
    free(mask);
    free(a);
    free(b);
}

/* copy_rows: many blocks of rows in one operation, equal on both sides (untouched elements
 * included); an entry outside its rows refused by the CPU at once, by the device at the next
 * sync, and the device still works afterwards. */
static void test_copy_rows(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    size_t src_rows = 900, src_ld = 800, dst_rows = 1000, dst_ld = 770, cols = 768, n = 300;
    float *hs = random_floats(src_rows * src_ld, 1.0f, 0.0f);
    int32_t *table = malloc(n * MODEL_COPY_ROWS_FIELDS * sizeof *table);
    assert_non_null(table);
    for (size_t e = 0; e < n; e++) { /* disjoint destinations of 0..3 rows */
        int32_t rows = (int32_t)(e % 4);
        int32_t *en = table + e * MODEL_COPY_ROWS_FIELDS;
        en[0] = (int32_t)(e * 3);
        en[1] = (int32_t)((e * 37) % (src_rows - 3));
        en[2] = rows;
    }
    twin src = twin_new(hs, src_rows * src_ld), dst = twin_new(NULL, dst_rows * dst_ld + 5);
    twin tb = twin_new(table, n * MODEL_COPY_ROWS_FIELDS);
    assert_int_equal(cpu->copy_rows(cpu, rc_(&dst, 5), dst_ld, dst_rows, rc_(&src, 0), src_ld,
                                    src_rows, rc_(&tb, 0), n, cols, err),
                     0);
    assert_int_equal(dev->copy_rows(dev, rd_(&dst, 5), dst_ld, dst_rows, rd_(&src, 0), src_ld,
                                    src_rows, rd_(&tb, 0), n, cols, err),
                     0);
    expect_twin("copy_rows", &dst);
    int32_t bad[3] = {(int32_t)dst_rows - 1, 0, 2};
    assert_int_equal(cpu->upload(cpu, rc_(&tb, 6), bad, 3, err), 0);
    assert_int_equal(dev->upload(dev, rd_(&tb, 6), bad, 3, err), 0);
    assert_int_equal(cpu->copy_rows(cpu, rc_(&dst, 5), dst_ld, dst_rows, rc_(&src, 0), src_ld,
                                    src_rows, rc_(&tb, 0), n, cols, err),
                     COMMON_ERR_INVALID);
    int rc = dev->copy_rows(dev, rd_(&dst, 5), dst_ld, dst_rows, rd_(&src, 0), src_ld, src_rows,
                            rd_(&tb, 0), n, cols, err);
    if (rc == 0) {
        rc = dev->sync(dev, err);
    }
    assert_int_equal(rc, COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "copy_rows"));
    assert_int_equal(dev->sync(dev, err), 0);
    assert_int_equal(dev->copy_rows(dev, rd_(&dst, 5), dst_ld, dst_rows + 1, rd_(&src, 0), src_ld,
                                    src_rows, rd_(&tb, 0), n, cols, err),
                     COMMON_ERR_INVALID);
    twin_free(&src);
    twin_free(&dst);
    twin_free(&tb);
    free(hs);
    free(table);
}

/* row_metrics: model_metric_eval's operations on both sides, the device's exp and log within
 * an ulp of the host's: every kind over the GPT-2 vocabulary and the chess one, rows of a wider
 * buffer, and NaN for a spec out of range on both. */
static void test_row_metrics(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    const size_t vocabs[] = {77, 50257};
    for (size_t vi = 0; vi < 2; vi++) {
        size_t V = vocabs[vi], ld = V + 5, rows = 300, n_masks = 4;
        float *hx = random_floats(rows * ld, 12.0f, 0.0f);
        uint8_t *masks = calloc(n_masks * V + 4, 1);
        model_metric *spec = malloc(rows * sizeof *spec);
        assert_non_null(masks);
        assert_non_null(spec);
        for (size_t i = 0; i < n_masks * V; i++) {
            masks[i] = frand() > 0.5f;
        }
        for (size_t r = 0; r < rows; r++) {
            spec[r] = (model_metric){(int32_t)(r % 4), (int32_t)((r * 7919) % V),
                                     (int32_t)((r * 104729 + 3) % V), (int32_t)(r % n_masks)};
        }
        spec[7].token = (int32_t)V;            /* LOGIT_DIFF, a token past the vocabulary */
        spec[11].mask = (int32_t)n_masks;      /* MASS, a mask row past the masks */
        spec[13] = (model_metric){7, 0, 0, 0}; /* no such kind */
        twin x = twin_new(hx, rows * ld), sp = twin_new(spec, rows * MODEL_METRIC_FIELDS);
        twin mk = twin_new(masks, (n_masks * V + 3) / 4), out = twin_new(NULL, 2 * rows);
        assert_int_equal(cpu->row_metrics(cpu, rc_(&out, 0), rc_(&x, 0), ld, rc_(&sp, 0),
                                          rc_(&mk, 0), n_masks, rows, V, err),
                         0);
        assert_int_equal(dev->row_metrics(dev, rd_(&out, 0), rd_(&x, 0), ld, rd_(&sp, 0),
                                          rd_(&mk, 0), n_masks, rows, V, err),
                         0);
        double *a = malloc(rows * sizeof *a), *b = malloc(rows * sizeof *b);
        assert_non_null(a);
        assert_non_null(b);
        assert_int_equal(dev->download(dev, a, rd_(&out, 0), 2 * rows, err), 0);
        assert_int_equal(cpu->download(cpu, b, rc_(&out, 0), 2 * rows, err), 0);
        for (size_t r = 0; r < rows; r++) {
            bool bad = r == 7 || r == 11 || r == 13;
            if (bad ? !(isnan(a[r]) && isnan(b[r]))
                    : !(fabs(a[r] - b[r]) <= 1e-12 * (fabs(b[r]) > 1.0 ? fabs(b[r]) : 1.0))) {
                fail_msg("row_metrics (V %zu): row %zu kind %d: device %.17g, CPU %.17g", V, r,
                         (int)spec[r].kind, a[r], b[r]);
            }
        }
        assert_int_equal(dev->row_metrics(dev, rd_(&out, 1), rd_(&x, 0), ld, rd_(&sp, 0),
                                          rd_(&mk, 0), n_masks, rows, V, err),
                         COMMON_ERR_INVALID);
        assert_int_equal(dev->row_metrics(dev, rd_(&out, 0), rd_(&x, 0), ld + 1, rd_(&sp, 0),
                                          rd_(&mk, 0), n_masks, rows, V, err),
                         COMMON_ERR_INVALID);
        twin_free(&x);
        twin_free(&sp);
        twin_free(&mk);
        twin_free(&out);
        free(hx);
        free(masks);
        free(spec);
        free(a);
        free(b);
    }
}

static void test_range_errors(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    twin a = twin_new(NULL, 100);
    float host[128] = {0};
    assert_int_equal(dev->upload(dev, rd_(&a, 50), host, 51, err), COMMON_ERR_INVALID);
    assert_int_equal(dev->download(dev, host, rd_(&a, 101), 0, err), COMMON_ERR_INVALID);
    assert_int_equal(dev->add(dev, rd_(&a, 0), rd_(&a, 1), rd_(&a, 0), 100, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(dev->copy2d(dev, rd_(&a, 0), 50, rd_(&a, 0), 10, 3, 10, err),
                     COMMON_ERR_INVALID);
    model_gemm g = {
        .m = 10, .n = 10, .k = 2, .alpha = 1, .lda = 2, .ldb = 10, .ldc = 10, .batch = 1};
    g.a = rd_(&a, 0), g.b = rd_(&a, 0), g.c = rd_(&a, 1);
    assert_int_equal(dev->gemm(dev, &g, err), COMMON_ERR_INVALID);
    size_t in_use = 0, peak = 0;
    dev->mem_stats(dev, &in_use, &peak);
    assert_true(in_use >= 100 * sizeof(float));
    assert_int_equal(dev->sync(dev, err), 0); /* refusals leave the backend working */
    twin_free(&a);
}

/* ---- whole runs ------------------------------------------------------------------------ */

typedef struct twin_model {
    model *m;
    model_session *sc, *sd;
} twin_model;

static void twin_model_new(twin_model *t, int L, int D, int H, int ctx) {
    char err[COMMON_ERR_LEN], dir[512];
    const char *tmp = getenv("CHESSLENS_TEST_TMPDIR");
    snprintf(dir, sizeof dir, "%s/gpu-model-%d-%d", tmp != NULL ? tmp : "/tmp", L, D);
    model_config cfg = {.n_layers = L,
                        .d_model = D,
                        .n_heads = H,
                        .d_head = D / H,
                        .d_mlp = 4 * D,
                        .n_ctx = ctx,
                        .n_positions = ctx,
                        .d_vocab = 77,
                        .eps = 1e-5f,
                        .attn_scale = sqrtf((float)(D / H))};
    if (model_write_random(dir, &cfg, 11, MODEL_DTYPE_F32, err) != 0 ||
        model_load(&t->m, dir, NULL, err) != 0 || model_session_new(&t->sc, t->m, cpu, err) != 0 ||
        model_session_new(&t->sd, t->m, dev, err) != 0) {
        fail_msg("%s", err);
    }
}

static void twin_model_free(twin_model *t) {
    model_session_destroy(&t->sc);
    model_session_destroy(&t->sd);
    model_destroy(&t->m);
}

static int32_t *random_tokens(size_t n, int V) {
    int32_t *t = malloc(n * sizeof *t);
    assert_non_null(t);
    for (size_t i = 0; i < n; i++) {
        t[i] = (int32_t)((frand() + 1.0f) * 0.5f * (float)(V - 1));
    }
    return t;
}

/* Compares every hook both caches hold, and the logits. */
static void expect_caches(const char *what, const twin_model *t, const model_cache *a,
                          const model_cache *b, size_t B, size_t T) {
    const model_config *cfg = model_get_config(t->m);
    char err[COMMON_ERR_LEN], name[128], label[256];
    size_t n_hooks = model_hook_count(cfg), compared = 0;
    for (size_t i = 0; i < n_hooks; i++) {
        model_hook h = model_hook_at(cfg, i);
        if (!model_cache_has(b, h)) {
            continue;
        }
        assert_true(model_cache_has(a, h));
        model_shape sh = model_hook_shape(cfg, h, B, T);
        size_t n = model_shape_numel(&sh);
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(model_cache_download(a, h, x, n, err), 0);
        assert_int_equal(model_cache_download(b, h, y, n, err), 0);
        snprintf(label, sizeof label, "%s: %s", what, model_hook_name(h, name, sizeof name));
        expect_close(label, x, y, n);
        compared++;
        free(x);
        free(y);
    }
    assert_true(compared > 0);
}

static void test_forward(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    twin_model t;
    twin_model_new(&t, 3, 64, 4, 40);
    size_t B = 3, T = 33, lengths[3] = {33, 20, 33};
    int32_t *tokens = random_tokens(B * T, 77);
    const model_config *cfg = model_get_config(t.m);
    model_hook *hooks = NULL;
    size_t n_hooks = 0;
    assert_int_equal(model_hook_list_parse("all", cfg, &hooks, &n_hooks, err), 0);
    model_request rq;
    model_request_init(&rq, t.sc, tokens, B, T);
    rq.lengths = lengths;
    rq.hooks = hooks;
    rq.n_hooks = n_hooks;
    model_cache *cc = NULL, *cd = NULL;
    assert_int_equal(model_run(t.sc, &rq, &cc, err), 0);
    if (model_run(t.sd, &rq, &cd, err) != 0) {
        fail_msg("%s", err);
    }
    expect_caches("forward, every hook", &t, cd, cc, B, T);

    /* incremental: positions from 25 on, in layers 1.., keys and values before from the base,
     * one token changed at position 25 */
    int32_t *tokens2 = malloc(B * T * sizeof *tokens2);
    assert_non_null(tokens2);
    memcpy(tokens2, tokens, B * T * sizeof *tokens2);
    for (size_t r = 0; r < B; r++) {
        tokens2[r * T + 25] = (tokens2[r * T + 25] + 1) % 77;
    }
    size_t start_pos[3] = {25, 25, 25};
    model_hook few[2];
    assert_int_equal(model_hook_parse("blocks.2.hook_resid_post", cfg, &few[0], err), 0);
    assert_int_equal(model_hook_parse("blocks.1.attn.hook_pattern", cfg, &few[1], err), 0);
    model_request inc;
    model_request_init(&inc, t.sc, tokens2, B, T);
    inc.hooks = few;
    inc.n_hooks = 2;
    inc.start_layer = 1;
    inc.start_pos = start_pos;
    inc.base = cc;
    model_cache *ic = NULL, *id = NULL;
    assert_int_equal(model_run(t.sc, &inc, &ic, err), 0);
    inc.base = cd;
    if (model_run(t.sd, &inc, &id, err) != 0) {
        fail_msg("%s", err);
    }
    expect_caches("incremental run", &t, id, ic, B, T);
    model_cache_destroy(&ic);
    model_cache_destroy(&id);

    /* the fused attention path (no scores or pattern hooked): logits only, then a few hooks
     * with layer 1's pattern, which keeps only that layer unfused */
    model_request plain;
    model_request_init(&plain, t.sc, tokens, B, T);
    plain.lengths = lengths;
    const char *lists[2] = {NULL, "blocks.0.attn.hook_z,blocks.1.attn.hook_pattern,"
                                  "blocks.2.hook_resid_post"};
    for (int i = 0; i < 2; i++) {
        model_hook *some = NULL;
        size_t n_some = 0;
        if (lists[i] != NULL) {
            assert_int_equal(model_hook_list_parse(lists[i], cfg, &some, &n_some, err), 0);
        }
        plain.hooks = some;
        plain.n_hooks = n_some;
        assert_int_equal(model_run(t.sc, &plain, &ic, err), 0);
        if (model_run(t.sd, &plain, &id, err) != 0) {
            fail_msg("%s", err);
        }
        expect_caches(i == 0 ? "forward, fused attention, logits only"
                             : "forward, fused attention but in layer 1",
                      &t, id, ic, B, T);
        model_cache_destroy(&ic);
        model_cache_destroy(&id);
        free(some);
    }
    model_cache_destroy(&cc);
    model_cache_destroy(&cd);
    free(hooks);
    free(tokens);
    free(tokens2);
    twin_model_free(&t);
}

static void expect_patch(const char *what, const interp_patch_result *a,
                         const interp_patch_result *b) {
    assert_int_equal(a->shape.ndim, b->shape.ndim);
    for (int k = 0; k < b->shape.ndim; k++) {
        assert_int_equal(a->shape.dims[k], b->shape.dims[k]);
    }
    size_t n = model_shape_numel(&b->shape);
    expect_close(what, a->values, b->values, n);
    float m[2] = {(float)a->clean_metric, (float)a->corrupted_metric};
    float w[2] = {(float)b->clean_metric, (float)b->corrupted_metric};
    expect_close(what, m, w, 2);
}

static void test_patching(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN], what[160];
    twin_model t;
    twin_model_new(&t, 2, 32, 4, 24);
    enum { NP = 3, T = 14 };
    int32_t *clean[NP], *corrupted[NP];
    interp_patch_pair pairs[NP];
    for (size_t i = 0; i < NP; i++) {
        clean[i] = random_tokens(T, 77);
        corrupted[i] = malloc(T * sizeof(int32_t));
        assert_non_null(corrupted[i]);
        memcpy(corrupted[i], clean[i], T * sizeof(int32_t));
        corrupted[i][i == 0 ? T - 1 : 5 + i] = (clean[i][i == 0 ? T - 1 : 5 + i] + 3) % 77;
        pairs[i] = (interp_patch_pair){clean[i],
                                       corrupted[i],
                                       {.kind = INTERP_METRIC_LOGIT_DIFF,
                                        .token = (int32_t)(4 + i),
                                        .token2 = 9,
                                        .normalize = false}};
    }
    for (int k = 0; k < INTERP_PATCH_KIND_COUNT; k++) {
        for (int variant = 0; variant < 3; variant++) {
            interp_patch_opts o = interp_patch_opts_default();
            o.kind = (interp_patch_kind)k;
            o.no_prefix_shortcut = variant == 1;
            o.plain = variant == 2;
            if (o.plain && k != INTERP_PATCH_BLOCK_EVERY && k != INTERP_PATCH_HEAD_OUT_BY_POS) {
                continue; /* the plain algorithm is slow: two kinds are enough */
            }
            interp_patch_result *rc[NP] = {NULL}, *rd[NP] = {NULL};
            if (interp_patch_run_batch(t.sc, pairs, NP, T, &o, rc, err) != 0) {
                fail_msg("cpu %s: %s", interp_patch_kind_name(o.kind), err);
            }
            if (interp_patch_run_batch(t.sd, pairs, NP, T, &o, rd, err) != 0) {
                fail_msg("device %s: %s", interp_patch_kind_name(o.kind), err);
            }
            for (size_t i = 0; i < NP; i++) {
                snprintf(what, sizeof what, "%s (%s), pair %zu", interp_patch_kind_name(o.kind),
                         o.plain                ? "plain"
                         : o.no_prefix_shortcut ? "fast, no shortcut"
                                                : "fast",
                         i);
                expect_patch(what, rd[i], rc[i]);
                interp_patch_result_destroy(&rc[i]);
                interp_patch_result_destroy(&rd[i]);
            }
        }
    }
    for (size_t i = 0; i < NP; i++) {
        free(clean[i]);
        free(corrupted[i]);
    }
    twin_model_free(&t);
}

/* Legal-move statistics through interp_legal_accum on both sessions: the stack, centre_scale,
 * the products with W_O and W_U and legal_stats over padded batches; the counts must be equal,
 * every statistic's minima, maxima and means within TOL of its largest magnitude (the products
 * round differently). */
static void test_legal_accum(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    twin_model t;
    twin_model_new(&t, 3, 64, 4, 40);
    const model_config *cfg = model_get_config(t.m);
    size_t B = 3, T = 33, lengths[2][3] = {{33, 20, 27}, {9, 33, 31}}, V = 77;
    const interp_legal_parts kinds[2] = {{true, true, true, true}, {true, false, true, false}};
    for (int k = 0; k < 2; k++) {
        interp_legal_accum *ac = NULL, *ad = NULL;
        assert_int_equal(interp_legal_accum_new(&ac, t.sc, kinds[k], 36, err), 0);
        if (interp_legal_accum_new(&ad, t.sd, kinds[k], 36, err) != 0) {
            fail_msg("%s", err);
        }
        size_t n_hooks = interp_legal_parts_hooks(cfg, kinds[k], NULL, 0);
        model_hook *hooks = malloc(n_hooks * sizeof *hooks);
        assert_non_null(hooks);
        interp_legal_parts_hooks(cfg, kinds[k], hooks, n_hooks);
        for (int batch = 0; batch < 2; batch++) {
            int32_t *tokens = random_tokens(B * T, 77);
            uint8_t *masks[3];
            for (size_t b = 0; b < B; b++) {
                masks[b] = malloc(lengths[batch][b] * V);
                assert_non_null(masks[b]);
                for (size_t i = 0; i < lengths[batch][b] * V; i++) {
                    masks[b][i] = frand() > 0.7f;
                }
            }
            model_request rq;
            model_request_init(&rq, t.sc, tokens, B, T);
            rq.lengths = lengths[batch];
            rq.hooks = hooks;
            rq.n_hooks = n_hooks;
            rq.want_logits = false;
            model_cache *cc = NULL, *cd = NULL;
            assert_int_equal(model_run(t.sc, &rq, &cc, err), 0);
            if (model_run(t.sd, &rq, &cd, err) != 0) {
                fail_msg("%s", err);
            }
            const uint8_t *const *m = (const uint8_t *const *)masks;
            assert_int_equal(interp_legal_accum_add(ac, cc, lengths[batch], m, B, err), 0);
            if (interp_legal_accum_add(ad, cd, lengths[batch], m, B, err) != 0) {
                fail_msg("%s", err);
            }
            model_cache_destroy(&cc);
            model_cache_destroy(&cd);
            for (size_t b = 0; b < B; b++) {
                free(masks[b]);
            }
            free(tokens);
        }
        interp_legal_stats *sc = NULL, *sd = NULL;
        assert_int_equal(interp_legal_accum_download(ac, &sc, err), 0);
        if (interp_legal_accum_download(ad, &sd, err) != 0) {
            fail_msg("%s", err);
        }
        size_t cells = sc->n_comp * sc->T;
        assert_int_equal(sd->n_comp, sc->n_comp);
        assert_memory_equal(sd->count, sc->count, cells * sizeof *sc->count);
        float *mc = malloc(cells * sizeof *mc), *md = malloc(cells * sizeof *md);
        assert_non_null(mc);
        assert_non_null(md);
        for (int j = 0; j < INTERP_LEGAL_N_STATS; j++) {
            char what[96];
            snprintf(what, sizeof what, "legal statistics (parts %d), statistic %d", k, j);
            interp_legal_stats_mean(sc, j, mc);
            interp_legal_stats_mean(sd, j, md);
            expect_close(what, md, mc, cells);
            expect_close(what, sd->min + (size_t)j * cells, sc->min + (size_t)j * cells, cells);
            expect_close(what, sd->max + (size_t)j * cells, sc->max + (size_t)j * cells, cells);
        }
        free(mc);
        free(md);
        free(hooks);
        interp_legal_stats_destroy(&sc);
        interp_legal_stats_destroy(&sd);
        interp_legal_accum_destroy(&ac);
        interp_legal_accum_destroy(&ad);
    }
    twin_model_free(&t);
}

int main(void) {
    char err[COMMON_ERR_LEN];
    const char *self = getenv("CHESSLENS_GPU_TEST_SELF_CHECK");
    if (self != NULL && strcmp(self, "1") == 0) {
        fprintf(stderr, "test_gpu_backend: self-check: a 2-thread CPU backend stands in for the "
                        "CUDA backend; this says nothing about the GPU\n");
        if (model_backend_cpu_new(&dev, 2, err) != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        /* the reference composition as the stand-in's fused op, so that those comparisons
         * and the forward's fused path run too (it has no graphs: those cases say so) */
        dev->attn_fused = test_attn_compose;
    } else {
        int count = 0;
        if (gpu_device_count(&count, err) != 0) {
            fprintf(stderr, "test_gpu_backend: %s\n", err);
            return 1;
        }
        if (count == 0) {
            fprintf(stderr, "test_gpu_backend: SKIPPED: no CUDA device visible\n");
            return 77;
        }
        char desc[256];
        if (gpu_device_describe(0, desc, sizeof desc, err) != 0 ||
            gpu_backend_new(&dev, 0, NULL, err) != 0) {
            fprintf(stderr, "test_gpu_backend: %s\n", err);
            return 1;
        }
        fprintf(stderr, "test_gpu_backend: device 0: %s\n", desc);
    }
    if (model_backend_cpu_new(&cpu, 1, err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm),        cmocka_unit_test(test_elementwise),
        cmocka_unit_test(test_layer_norm),  cmocka_unit_test(test_attention),
        cmocka_unit_test(test_gather_rows), cmocka_unit_test(test_range_errors),
        cmocka_unit_test(test_forward),     cmocka_unit_test(test_patching),
        cmocka_unit_test(test_sum_rows),    cmocka_unit_test(test_attn_fused),
        cmocka_unit_test(test_graphs),      cmocka_unit_test(test_centre_scale),
        cmocka_unit_test(test_legal_stats), cmocka_unit_test(test_legal_accum),
        cmocka_unit_test(test_row_metrics), cmocka_unit_test(test_copy_rows),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    model_backend_destroy(&dev);
    model_backend_destroy(&cpu);
    return failed;
}
