/*
 * Forward-pass behaviour on a random model generated in the scratch directory: hook names and
 * shapes, replacements, stopping and starting at a layer, the incremental (prefix-reusing) run
 * against the full patched run, the memory a fully cached run holds, and refusals of bad
 * requests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "model/model.h"
#include "tests/model/model_test_util.h"

enum { L = 3, D = 32, H = 4, CTX = 24, V = 80 };

typedef struct fixture {
    model *m;
    model_backend *be;
    model_session *s;
    const model_config *c;
} fixture;

static int setup(void **state) {
    static char dir[1024];
    char err[COMMON_ERR_LEN];
    fixture *f = calloc(1, sizeof *f);
    if (test_random_model(dir, sizeof dir, "fwd", L, D, H, CTX, V, 7, MODEL_DTYPE_F32) ||
        model_load(&f->m, dir, NULL, err) || model_backend_cpu_new(&f->be, 2, err) ||
        model_session_new(&f->s, f->m, f->be, err)) {
        return -1;
    }
    f->c = model_get_config(f->m);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    model_session_destroy(&f->s);
    model_backend_destroy(&f->be);
    model_destroy(&f->m);
    free(f);
    return 0;
}

static void fill_tokens(int32_t *t, size_t n, unsigned seed) {
    t[0] = 1;
    for (size_t i = 1; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        t[i] = (int32_t)(3 + (seed >> 16) % 74);
    }
}

static model_hook *all_hooks(const model_config *c, size_t *n) {
    *n = model_hook_count(c);
    model_hook *h = calloc(*n, sizeof *h);
    for (size_t i = 0; i < *n; i++) {
        h[i] = model_hook_at(c, i);
    }
    return h;
}

static float *download(model_cache *c, model_hook h, size_t *n) {
    model_shape s;
    char err[COMMON_ERR_LEN];
    assert_true(model_cache_shape(c, h, &s));
    *n = model_shape_numel(&s);
    float *x = malloc(*n * sizeof *x);
    assert_int_equal(model_cache_download(c, h, x, *n, err), 0);
    return x;
}

static model_hook hk(model_hook_kind k, int layer) {
    model_hook h = {k, layer};
    return h;
}

static void test_hook_names(void **state) {
    fixture *f = *state;
    char name[96], err[COMMON_ERR_LEN];
    size_t n = model_hook_count(f->c);
    assert_int_equal(n, 2 + 18 * L + 3);
    for (size_t i = 0; i < n; i++) {
        model_hook h = model_hook_at(f->c, i), back;
        assert_int_equal(model_hook_index(f->c, h), i);
        model_hook_name(h, name, sizeof name);
        assert_int_equal(model_hook_parse(name, f->c, &back, err), 0);
        assert_int_equal(back.kind, h.kind);
        assert_int_equal(back.layer, h.layer);
    }
    model_hook h;
    assert_int_equal(model_hook_parse("blocks.1.attn.hook_pattern", f->c, &h, err), 0);
    assert_int_equal(h.kind, MODEL_HOOK_PATTERN);
    assert_int_equal(h.layer, 1);
    assert_int_equal(model_hook_parse("blocks.3.hook_resid_pre", f->c, &h, err),
                     COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "blocks.3.hook_resid_pre"));
    assert_int_equal(model_hook_parse("blocks.0.attn.hook_qq", f->c, &h, err),
                     COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "hook_qq"));
    assert_int_equal(model_hook_parse("blocks..hook_resid_pre", NULL, &h, err),
                     COMMON_ERR_NOT_FOUND);
}

static void test_hook_shapes(void **state) {
    fixture *f = *state;
    char err[COMMON_ERR_LEN];
    int32_t tok[2 * 7];
    fill_tokens(tok, 14, 3);
    size_t nh;
    model_hook *all = all_hooks(f->c, &nh);
    model_request r;
    model_request_init(&r, f->s, tok, 2, 7);
    r.hooks = all;
    r.n_hooks = nh;
    model_cache *c = NULL;
    assert_int_equal(model_run(f->s, &r, &c, err), 0);
    struct {
        model_hook h;
        model_shape s;
    } want[] = {
        {hk(MODEL_HOOK_EMBED, -1), {3, {2, 7, D}}},
        {hk(MODEL_HOOK_LN1_SCALE, 0), {3, {2, 7, 1}}},
        {hk(MODEL_HOOK_Q, 1), {4, {2, 7, H, D / H}}},
        {hk(MODEL_HOOK_ATTN_SCORES, 2), {4, {2, H, 7, 7}}},
        {hk(MODEL_HOOK_PATTERN, 2), {4, {2, H, 7, 7}}},
        {hk(MODEL_HOOK_RESULT, 0), {4, {2, 7, H, D}}},
        {hk(MODEL_HOOK_MLP_POST, 1), {3, {2, 7, 4 * D}}},
        {hk(MODEL_HOOK_LN_FINAL_SCALE, -1), {3, {2, 7, 1}}},
        {hk(MODEL_HOOK_LOGITS, -1), {3, {2, 7, V}}},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        model_shape s;
        assert_true(model_cache_shape(c, want[i].h, &s));
        assert_true(model_shape_equal(&s, &want[i].s));
    }
    /* pattern rows sum to 1 and are causal; residual identity resid_post = mid + mlp_out */
    size_t n;
    float *p = download(c, hk(MODEL_HOOK_PATTERN, 1), &n);
    for (size_t row = 0; row < n / 7; row++) {
        size_t q = row % 7;
        double sum = 0;
        for (size_t k = 0; k < 7; k++) {
            sum += p[row * 7 + k];
            if (k > q) {
                assert_true(p[row * 7 + k] == 0.0f);
            }
        }
        assert_true(fabs(sum - 1.0) < 1e-5);
    }
    free(p);
    float *mid = download(c, hk(MODEL_HOOK_RESID_MID, 2), &n);
    float *mo = download(c, hk(MODEL_HOOK_MLP_OUT, 2), &n);
    float *post = download(c, hk(MODEL_HOOK_RESID_POST, 2), &n);
    for (size_t i = 0; i < n; i++) {
        assert_true(post[i] == mid[i] + mo[i]);
    }
    free(mid);
    free(mo);
    free(post);
    /* device tensors are reachable for backend operations on them */
    model_ref ref = model_cache_ref(c, hk(MODEL_HOOK_MLP_OUT, 2));
    assert_non_null(ref.buf);
    assert_null(model_cache_ref(c, hk(MODEL_HOOK_MLP_OUT, L)).buf);
    float first;
    assert_int_equal(f->be->download(f->be, &first, ref, 1, err), 0);
    float *mo2 = download(c, hk(MODEL_HOOK_MLP_OUT, 2), &n);
    assert_true(first == mo2[0]);
    free(mo2);
    /* a run that caches nothing but logits gives the same logits */
    model_request r2;
    model_request_init(&r2, f->s, tok, 2, 7);
    model_cache *c2 = NULL;
    assert_int_equal(model_run(f->s, &r2, &c2, err), 0);
    assert_false(model_cache_has(c2, hk(MODEL_HOOK_Q, 1)));
    float *l1 = download(c, hk(MODEL_HOOK_LOGITS, -1), &n);
    float *l2 = download(c2, hk(MODEL_HOOK_LOGITS, -1), &n);
    assert_true(test_max_abs(l1, l2, n) < 1e-6);
    free(l1);
    free(l2);
    model_cache_destroy(&c2);
    model_cache_destroy(&c);
    free(all);
}

/* Clean and corrupted batches of two rows that differ at one position each. */
static void clean_corrupt(int32_t *clean, int32_t *corrupt, size_t T) {
    fill_tokens(clean, T, 11);
    fill_tokens(clean + T, T, 12);
    memcpy(corrupt, clean, 2 * T * sizeof *clean);
    corrupt[5] = corrupt[5] == 40 ? 41 : 40;
    corrupt[T + 8] = corrupt[T + 8] == 40 ? 41 : 40;
}

static void test_replacements(void **state) {
    fixture *f = *state;
    char err[COMMON_ERR_LEN];
    enum { T = 12 };
    int32_t clean[2 * T], corrupt[2 * T];
    clean_corrupt(clean, corrupt, T);
    size_t nh, n;
    model_hook *all = all_hooks(f->c, &nh);
    model_request r;
    model_cache *cc = NULL, *pc = NULL, *uc = NULL;
    model_request_init(&r, f->s, clean, 2, T);
    r.hooks = all;
    r.n_hooks = nh;
    assert_int_equal(model_run(f->s, &r, &cc, err), 0);
    /* the whole clean residual stream entering layer 0 makes the corrupted run clean */
    model_patch whole = {
        hk(MODEL_HOOK_RESID_PRE, 0), MODEL_ALL, MODEL_ALL, MODEL_ALL, cc, MODEL_ALL, MODEL_ALL};
    model_request_init(&r, f->s, corrupt, 2, T);
    r.patches = &whole;
    r.n_patches = 1;
    assert_int_equal(model_run(f->s, &r, &pc, err), 0);
    float *a = download(cc, hk(MODEL_HOOK_LOGITS, -1), &n);
    float *b = download(pc, hk(MODEL_HOOK_LOGITS, -1), &n);
    assert_true(test_max_abs(a, b, n) < 1e-6);
    free(b);
    model_cache_destroy(&pc);
    /* one head of z at one position of one row: that slice is clean, the rest is not */
    model_hook z1 = hk(MODEL_HOOK_Z, 1);
    model_patch one = {z1, 1, 9, 2, cc, 1, MODEL_ALL};
    model_request_init(&r, f->s, corrupt, 2, T);
    r.hooks = &z1;
    r.n_hooks = 1;
    assert_int_equal(model_run(f->s, &r, &uc, err), 0);
    r.patches = &one;
    r.n_patches = 1;
    assert_int_equal(model_run(f->s, &r, &pc, err), 0);
    float *zc = download(cc, z1, &n), *zu = download(uc, z1, &n), *zp = download(pc, z1, &n);
    size_t Dh = D / H;
    size_t changed = 0;
    for (size_t i = 0; i < n; i++) {
        size_t row = i / (T * D), pos = (i / D) % T, head = (i % D) / Dh;
        bool in = row == 1 && pos == 9 && head == 2;
        assert_true(zp[i] == (in ? zc[i] : zu[i]));
        changed += in && zc[i] != zu[i];
    }
    assert_true(changed > 0);
    float *lu = download(uc, hk(MODEL_HOOK_LOGITS, -1), &n);
    float *lp = download(pc, hk(MODEL_HOOK_LOGITS, -1), &n);
    /* row 0 untouched; row 1 positions < 9 untouched, position 9 changed */
    for (size_t i = 0; i < n; i++) {
        size_t row = i / (T * V), pos = (i / V) % T;
        if (row == 0 || pos < 9) {
            assert_true(lu[i] == lp[i]);
        }
    }
    assert_true(test_max_abs(lu + (T + 9) * V, lp + (T + 9) * V, V) > 0);
    free(a);
    free(zc);
    free(zu);
    free(zp);
    free(lu);
    free(lp);
    model_cache_destroy(&uc);
    model_cache_destroy(&pc);
    /* one element of one head's pattern (row 1, head 2, dest 9, src 4): only it is clean */
    model_hook p1 = hk(MODEL_HOOK_PATTERN, 1);
    model_patch elem = {p1, 1, 9, 2, cc, 1, 4};
    model_request_init(&r, f->s, corrupt, 2, T);
    r.hooks = &p1;
    r.n_hooks = 1;
    assert_int_equal(model_run(f->s, &r, &uc, err), 0);
    r.patches = &elem;
    r.n_patches = 1;
    assert_int_equal(model_run(f->s, &r, &pc, err), 0);
    float *pcl = download(cc, p1, &n), *pu = download(uc, p1, &n), *pp = download(pc, p1, &n);
    size_t at = ((1 * H + 2) * T + 9) * T + 4;
    for (size_t i = 0; i < n; i++) {
        assert_true(pp[i] == (i == at ? pcl[i] : pu[i]));
    }
    assert_true(pcl[at] != pu[at]);
    lu = download(uc, hk(MODEL_HOOK_LOGITS, -1), &n);
    lp = download(pc, hk(MODEL_HOOK_LOGITS, -1), &n);
    assert_true(test_max_abs(lu + (T + 9) * V, lp + (T + 9) * V, V) > 0);
    free(pcl);
    free(pu);
    free(pp);
    free(lu);
    free(lp);
    model_cache_destroy(&uc);
    model_cache_destroy(&pc);
    model_cache_destroy(&cc);
    free(all);
}

static void test_start_stop(void **state) {
    fixture *f = *state;
    char err[COMMON_ERR_LEN];
    enum { T = 10 };
    int32_t tok[2 * T];
    fill_tokens(tok, 2 * T, 5);
    tok[T] = 1;
    size_t n;
    model_request r;
    model_cache *full = NULL, *first = NULL, *second = NULL;
    model_request_init(&r, f->s, tok, 2, T);
    assert_int_equal(model_run(f->s, &r, &full, err), 0);
    model_hook rp = hk(MODEL_HOOK_RESID_POST, 1);
    model_request_init(&r, f->s, tok, 2, T);
    r.stop_layer = 2;
    r.want_logits = false;
    r.hooks = &rp;
    r.n_hooks = 1;
    assert_int_equal(model_run(f->s, &r, &first, err), 0);
    assert_false(model_cache_has(first, hk(MODEL_HOOK_LOGITS, -1)));
    model_request_init(&r, f->s, tok, 2, T);
    r.start_layer = 2;
    r.base = first;
    assert_int_equal(model_run(f->s, &r, &second, err), 0);
    float *a = download(full, hk(MODEL_HOOK_LOGITS, -1), &n);
    float *b = download(second, hk(MODEL_HOOK_LOGITS, -1), &n);
    assert_true(test_max_abs(a, b, n) < 1e-6);
    free(a);
    free(b);
    /* a residual supplied from the host works the same way */
    model_cache *host = NULL, *third = NULL;
    assert_int_equal(model_cache_new(&host, f->s, 2, T, err), 0);
    float *resid = download(first, rp, &n);
    assert_int_equal(model_cache_put(host, hk(MODEL_HOOK_RESID_PRE, 2), resid, n, err), 0);
    r.base = host;
    assert_int_equal(model_run(f->s, &r, &third, err), 0);
    a = download(second, hk(MODEL_HOOK_LOGITS, -1), &n);
    b = download(third, hk(MODEL_HOOK_LOGITS, -1), &n);
    assert_memory_equal(a, b, n * sizeof *a);
    /* without a residual in the base the request is refused before any work */
    model_cache *empty = NULL, *none = NULL;
    assert_int_equal(model_cache_new(&empty, f->s, 2, T, err), 0);
    r.base = empty;
    assert_int_equal(model_run(f->s, &r, &none, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "hook_resid_pre"));
    assert_null(none);
    free(a);
    free(b);
    free(resid);
    model_cache_destroy(&empty);
    model_cache_destroy(&host);
    model_cache_destroy(&third);
    model_cache_destroy(&full);
    model_cache_destroy(&first);
    model_cache_destroy(&second);
}

/* Incremental run (layers L.., positions p_r..) with a patch == full run with the same patch.
 * head and key_pos restrict the patch (MODEL_ALL: whole vector / whole pattern row). */
static void check_incremental(fixture *f, model_hook_kind kind, int layer, int head, int key_pos,
                              bool lengths) {
    char err[COMMON_ERR_LEN];
    enum { T = 16 };
    int32_t clean[2 * T], corrupt[2 * T];
    clean_corrupt(clean, corrupt, T);
    size_t len[2] = {T, lengths ? 13 : T};
    size_t nh, n;
    model_hook *all = all_hooks(f->c, &nh);
    model_request r;
    model_cache *cc = NULL, *base = NULL, *full = NULL, *inc = NULL;
    model_request_init(&r, f->s, clean, 2, T);
    r.hooks = all;
    r.n_hooks = nh;
    assert_int_equal(model_run(f->s, &r, &cc, err), 0);
    model_request_init(&r, f->s, corrupt, 2, T);
    r.hooks = all;
    r.n_hooks = nh;
    assert_int_equal(model_run(f->s, &r, &base, err), 0);
    /* rows patch different positions: row 0 at 5, row 1 at 8 (both rows use base row = self,
     * and a third row reuses base row 0 with a patch at 11) */
    int32_t tok3[3 * T];
    memcpy(tok3, corrupt, 2 * T * sizeof *tok3);
    memcpy(tok3 + 2 * T, corrupt, T * sizeof *tok3);
    size_t len3[3] = {len[0], len[1], T};
    model_patch pa[3] = {
        {hk(kind, layer), 0, 5, head, cc, 0, key_pos},
        {hk(kind, layer), 1, 8, head, cc, 1, key_pos},
        {hk(kind, layer), 2, 11, head, cc, 0, key_pos},
    };
    model_request_init(&r, f->s, tok3, 3, T);
    r.patches = pa;
    r.n_patches = 3;
    r.lengths = len3;
    assert_int_equal(model_run(f->s, &r, &full, err), 0);
    size_t start_pos[3] = {5, 8, 11}, base_rows[3] = {0, 1, 0};
    r.start_layer = layer;
    r.start_pos = start_pos;
    r.base_rows = base_rows;
    r.base = base;
    int rc = model_run(f->s, &r, &inc, err);
    if (rc) {
        fail_msg("incremental run: %s", err);
    }
    float *a = download(full, hk(MODEL_HOOK_LOGITS, -1), &n);
    float *b = download(inc, hk(MODEL_HOOK_LOGITS, -1), &n);
    double mx = test_max_abs(a, b, n);
    if (!(mx <= 1e-5)) {
        fail_msg("incremental vs full (%d, layer %d): max abs %.3g", (int)kind, layer, mx);
    }
    /* and the patch mattered */
    float *u = download(base, hk(MODEL_HOOK_LOGITS, -1), &n);
    assert_true(test_max_abs(u + 5 * V, a + 5 * V, V) > 1e-6);
    free(a);
    free(b);
    free(u);
    model_cache_destroy(&cc);
    model_cache_destroy(&base);
    model_cache_destroy(&full);
    model_cache_destroy(&inc);
    free(all);
}

static void test_incremental_equals_full(void **state) {
    fixture *f = *state;
    check_incremental(f, MODEL_HOOK_RESID_PRE, 0, MODEL_ALL, MODEL_ALL, false);
    check_incremental(f, MODEL_HOOK_RESID_PRE, 1, MODEL_ALL, MODEL_ALL, false);
    check_incremental(f, MODEL_HOOK_ATTN_OUT, 1, MODEL_ALL, MODEL_ALL, true);
    check_incremental(f, MODEL_HOOK_MLP_OUT, 2, MODEL_ALL, MODEL_ALL, false);
    check_incremental(f, MODEL_HOOK_Z, 2, MODEL_ALL, MODEL_ALL, true);
    check_incremental(f, MODEL_HOOK_PATTERN, 1, 2, MODEL_ALL, false);
    /* one element of the pattern / scores (TL's attn_head_pattern_dest_src_pos), key 3 lies
     * before every patched query (5, 8, 11), so it is attended to */
    check_incremental(f, MODEL_HOOK_PATTERN, 0, 1, 3, false);
    check_incremental(f, MODEL_HOOK_PATTERN, 2, 3, 3, true);
    check_incremental(f, MODEL_HOOK_ATTN_SCORES, 1, 0, 3, true);
}

static void test_memory_of_cached_run(void **state) {
    (void)state;
    char dir[1024], err[COMMON_ERR_LEN];
    enum { T = 127 };
    model *m = NULL;
    model_backend *be = NULL;
    model_session *s = NULL;
    assert_int_equal(
        test_random_model(dir, sizeof dir, "mem", 4, 64, 4, 128, 77, 3, MODEL_DTYPE_F32), 0);
    assert_int_equal(model_load(&m, dir, NULL, err), 0);
    assert_int_equal(model_backend_cpu_new(&be, 2, err), 0);
    assert_int_equal(model_session_new(&s, m, be, err), 0);
    int32_t tok[T];
    fill_tokens(tok, T, 9);
    size_t nh, before, peak;
    model_hook *all = all_hooks(model_get_config(m), &nh);
    model_request r;
    model_request_init(&r, s, tok, 1, T);
    r.hooks = all;
    r.n_hooks = nh;
    be->reset_peak(be);
    be->mem_stats(be, &before, NULL);
    model_cache *c = NULL;
    assert_int_equal(model_run(s, &r, &c, err), 0);
    be->mem_stats(be, NULL, &peak);
    size_t returned = model_cache_bytes(c);
    assert_true(returned > 0);
    if (!((double)(peak - before) <= 1.2 * (double)returned)) {
        fail_msg("run peak %zu bytes for %zu returned", peak - before, returned);
    }
    model_cache_destroy(&c);
    free(all);
    model_session_destroy(&s);
    model_backend_destroy(&be);
    model_destroy(&m);
}

static void test_bad_requests(void **state) {
    fixture *f = *state;
    char err[COMMON_ERR_LEN];
    enum { T = 8 };
    int32_t tok[T];
    fill_tokens(tok, T, 2);
    model_request r;
    model_cache *c = NULL, *base = NULL;
    tok[3] = V;
    model_request_init(&r, f->s, tok, 1, T);
    assert_int_equal(model_run(f->s, &r, &c, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "token 80"));
    tok[3] = 5;
    int32_t longer[CTX + 1] = {0};
    model_request_init(&r, f->s, longer, 1, CTX + 1);
    assert_int_equal(model_run(f->s, &r, &c, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "n_ctx"));
    /* incremental without keys/values in the base */
    model_request_init(&r, f->s, tok, 1, T);
    assert_int_equal(model_run(f->s, &r, &base, err), 0);
    size_t p = 3;
    model_request_init(&r, f->s, tok, 1, T);
    r.start_pos = &p;
    r.base = base;
    r.want_logits = false;
    assert_int_equal(model_run(f->s, &r, &c, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "hook_k"));
    /* patches: scale unsupported, wrong head axis, before the computed positions */
    model_patch pa = {hk(MODEL_HOOK_LN1_SCALE, 0), 0, 1, MODEL_ALL, base, 0, MODEL_ALL};
    model_request_init(&r, f->s, tok, 1, T);
    r.patches = &pa;
    r.n_patches = 1;
    assert_int_equal(model_run(f->s, &r, &c, err), COMMON_ERR_UNSUPPORTED);
    pa.hook = hk(MODEL_HOOK_RESID_PRE, 0);
    pa.head = 1;
    assert_int_equal(model_run(f->s, &r, &c, err), COMMON_ERR_INVALID);
    pa.head = MODEL_ALL;
    assert_int_equal(model_run(f->s, &r, &c, err), COMMON_ERR_INVALID); /* base lacks the hook */
    assert_non_null(strstr(err, "blocks.0.hook_resid_pre"));
    assert_null(c);
    /* key positions: inside the row, and only for the hooks with a key axis */
    model_hook src_hooks[2] = {hk(MODEL_HOOK_PATTERN, 0), hk(MODEL_HOOK_RESID_PRE, 0)};
    model_cache *src = NULL;
    model_request_init(&r, f->s, tok, 1, T);
    r.hooks = src_hooks;
    r.n_hooks = 2;
    assert_int_equal(model_run(f->s, &r, &src, err), 0);
    model_patch kp = {hk(MODEL_HOOK_PATTERN, 0), 0, 5, 1, src, 0, T};
    model_request_init(&r, f->s, tok, 1, T);
    r.patches = &kp;
    r.n_patches = 1;
    assert_int_equal(model_run(f->s, &r, &c, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "key position 8 of 8"));
    kp.key_pos = -2;
    assert_int_equal(model_run(f->s, &r, &c, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "key position -2"));
    kp.hook = hk(MODEL_HOOK_RESID_PRE, 0);
    kp.head = MODEL_ALL;
    kp.key_pos = 0;
    assert_int_equal(model_run(f->s, &r, &c, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "key axis"));
    assert_null(c);
    /* the same patch with a valid key runs */
    kp.hook = hk(MODEL_HOOK_PATTERN, 0);
    kp.head = 1;
    kp.key_pos = 5;
    assert_int_equal(model_run(f->s, &r, &c, err), 0);
    model_cache_destroy(&c);
    model_cache_destroy(&src);
    model_cache_destroy(&base);
}

/* Fault injection: the backend's allocator fails at its Nth call. */
static int (*real_alloc)(model_backend *, size_t, model_buf **, char *);
static int alloc_budget;

static int failing_alloc(model_backend *be, size_t n, model_buf **out, char *err) {
    if (alloc_budget-- <= 0) {
        return common_fail(err, COMMON_ERR_NOMEM, "injected allocation failure");
    }
    return real_alloc(be, n, out, err);
}

static void test_allocation_failures(void **state) {
    fixture *f = *state;
    char err[COMMON_ERR_LEN];
    enum { T = 9 };
    int32_t tok[2 * T];
    fill_tokens(tok, 2 * T, 4);
    size_t nh, p[2] = {3, 0}, in_use0, in_use;
    model_hook *all = all_hooks(f->c, &nh);
    model_request r;
    model_cache *base = NULL, *c = NULL;
    model_request_init(&r, f->s, tok, 2, T);
    r.hooks = all;
    r.n_hooks = nh;
    assert_int_equal(model_run(f->s, &r, &base, err), 0);
    r.start_layer = 1;
    r.start_pos = p; /* an incremental run uses every kind of buffer */
    r.base = base;
    model_session_release_workspace(f->s);
    f->be->mem_stats(f->be, &in_use0, NULL);
    real_alloc = f->be->alloc;
    f->be->alloc = failing_alloc;
    int rc = COMMON_ERR_NOMEM, n;
    for (n = 0; rc == COMMON_ERR_NOMEM && n < 10000; n++) {
        alloc_budget = n;
        rc = model_run(f->s, &r, &c, err);
        if (rc) {
            assert_int_equal(rc, COMMON_ERR_NOMEM);
            assert_null(c);
            model_session_release_workspace(f->s);
            f->be->mem_stats(f->be, &in_use, NULL);
            assert_int_equal(in_use, in_use0); /* nothing leaked on the device */
        }
    }
    f->be->alloc = real_alloc;
    assert_int_equal(rc, 0);
    assert_true(n > 10); /* the loop really failed many distinct allocations */
    model_cache_destroy(&c);
    model_cache_destroy(&base);
    free(all);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook_names),
        cmocka_unit_test(test_hook_shapes),
        cmocka_unit_test(test_replacements),
        cmocka_unit_test(test_start_stop),
        cmocka_unit_test(test_incremental_equals_full),
        cmocka_unit_test(test_memory_of_cached_run),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
