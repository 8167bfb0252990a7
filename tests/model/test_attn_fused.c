/*
 * When the forward pass takes a backend's fused attention (model.h, attn_fused) and when it must
 * not. The CPU backend has no fused op, so the test wraps it: a copy of its operation table
 * whose attn_fused is the unfused composition (tests/model/attn_compose.h) and counts its
 * calls. Runs on the wrapper must give the plain CPU session's numbers bit for bit (so the
 * descriptor the forward builds addresses the right rows), and the op must be called once for
 * every layer (all rows in one call) exactly when no hook of the layer's attn_scores or pattern
 * is cached or patched.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "model/model.h"
#include "tests/model/attn_compose.h"
#include "tests/model/model_test_util.h"

enum { L = 3, D = 32, H = 4, CTX = 24, V = 80 };

static size_t fused_calls; /* calls of the wrapper's attn_fused since the last reset */

static int counting_fused(model_backend *be, const model_attn *a, char *err) {
    fused_calls++;
    return test_attn_compose(be, a, err);
}

typedef struct fixture {
    model *m;
    model_backend *cpu;
    model_backend wrapped; /* cpu's table plus attn_fused; shares cpu's state */
    model_session *plain, *fused;
    const model_config *c;
} fixture;

static int setup(void **state) {
    static char dir[1024];
    char err[COMMON_ERR_LEN];
    fixture *f = calloc(1, sizeof *f);
    if (!f || test_random_model(dir, sizeof dir, "fused", L, D, H, CTX, V, 9, MODEL_DTYPE_F32) ||
        model_load(&f->m, dir, NULL, err) || model_backend_cpu_new(&f->cpu, 2, err)) {
        return -1;
    }
    f->wrapped = *f->cpu;
    f->wrapped.attn_fused = counting_fused;
    if (model_session_new(&f->plain, f->m, f->cpu, err) ||
        model_session_new(&f->fused, f->m, &f->wrapped, err)) {
        return -1;
    }
    f->c = model_get_config(f->m);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture *f = *state;
    model_session_destroy(&f->plain);
    model_session_destroy(&f->fused);
    model_backend_destroy(&f->cpu);
    model_destroy(&f->m);
    free(f);
    return 0;
}

static void fill_tokens(int32_t *t, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        t[i] = (int32_t)(3 + (seed >> 16) % 74);
    }
}

static model_hook hk(model_hook_kind k, int layer) {
    model_hook h = {k, layer};
    return h;
}

/* Runs req on both sessions; every hook the plain run holds, and the logits, must be equal bit
 * for bit. Returns the number of fused calls the wrapped run made. */
static size_t run_both(fixture *f, model_request *req) {
    char err[COMMON_ERR_LEN];
    model_cache *a = NULL, *b = NULL;
    assert_int_equal(model_run(f->plain, req, &a, err), 0);
    fused_calls = 0;
    if (model_run(f->fused, req, &b, err) != 0) {
        fail_msg("fused run: %s", err);
    }
    size_t calls = fused_calls;
    size_t compared = 0;
    for (size_t i = 0; i < model_hook_count(f->c); i++) {
        model_hook h = model_hook_at(f->c, i);
        if (!model_cache_has(a, h)) {
            continue;
        }
        assert_true(model_cache_has(b, h));
        model_shape s;
        assert_true(model_cache_shape(a, h, &s));
        size_t n = model_shape_numel(&s);
        float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
        assert_non_null(x);
        assert_non_null(y);
        assert_int_equal(model_cache_download(a, h, x, n, err), 0);
        assert_int_equal(model_cache_download(b, h, y, n, err), 0);
        char name[96];
        if (memcmp(x, y, n * sizeof *x) != 0) {
            fail_msg("%s differs between the fused and the unfused path",
                     model_hook_name(h, name, sizeof name));
        }
        free(x);
        free(y);
        compared++;
    }
    assert_true(compared > 0);
    model_cache_destroy(&a);
    model_cache_destroy(&b);
    return calls;
}

/* No hook at all: every layer takes the fused path, one call for all rows. */
static void test_used_without_hooks(void **state) {
    fixture *f = *state;
    enum { B = 3, T = 17 };
    int32_t tok[B * T];
    fill_tokens(tok, B * T, 1);
    size_t lengths[B] = {17, 9, 0 + 1};
    model_request r;
    model_request_init(&r, f->plain, tok, B, T);
    r.lengths = lengths;
    assert_int_equal(run_both(f, &r), (size_t)L);
    /* hooks that only need z, q, k, v or results keep the fused path */
    model_hook hooks[4] = {hk(MODEL_HOOK_Z, 0), hk(MODEL_HOOK_RESULT, 1), hk(MODEL_HOOK_Q, 2),
                           hk(MODEL_HOOK_RESID_POST, 2)};
    r.hooks = hooks;
    r.n_hooks = 4;
    assert_int_equal(run_both(f, &r), (size_t)L);
}

/* A cached pattern or attn_scores keeps that layer, and only that layer, on the unfused path. */
static void test_not_used_when_cached(void **state) {
    fixture *f = *state;
    enum { B = 2, T = 13 };
    int32_t tok[B * T];
    fill_tokens(tok, B * T, 2);
    model_request r;
    model_request_init(&r, f->plain, tok, B, T);
    model_hook pat = hk(MODEL_HOOK_PATTERN, 1);
    r.hooks = &pat;
    r.n_hooks = 1;
    assert_int_equal(run_both(f, &r), (size_t)(L - 1));
    model_hook two[2] = {hk(MODEL_HOOK_ATTN_SCORES, 0), hk(MODEL_HOOK_PATTERN, 2)};
    r.hooks = two;
    r.n_hooks = 2;
    assert_int_equal(run_both(f, &r), (size_t)(L - 2));
}

/* A patch of the pattern or the scores keeps its layer unfused, even with nothing cached. */
static void test_not_used_when_patched(void **state) {
    fixture *f = *state;
    char err[COMMON_ERR_LEN];
    enum { T = 11 };
    int32_t clean[T], corrupt[T];
    fill_tokens(clean, T, 3);
    memcpy(corrupt, clean, sizeof clean);
    corrupt[6] = corrupt[6] == 5 ? 6 : 5;
    model_hook src_hooks[2] = {hk(MODEL_HOOK_PATTERN, 2), hk(MODEL_HOOK_ATTN_SCORES, 0)};
    model_request r;
    model_request_init(&r, f->plain, clean, 1, T);
    r.hooks = src_hooks;
    r.n_hooks = 2;
    model_cache *src = NULL;
    assert_int_equal(model_run(f->plain, &r, &src, err), 0);
    model_patch p = {.hook = src_hooks[0],
                     .row = MODEL_ALL,
                     .pos = 7,
                     .head = 1,
                     .src = src,
                     .src_row = 0,
                     .key_pos = MODEL_ALL};
    model_request_init(&r, f->plain, corrupt, 1, T);
    r.patches = &p;
    r.n_patches = 1;
    assert_int_equal(run_both(f, &r), (size_t)(L - 1));
    p.hook = src_hooks[1];
    p.pos = MODEL_ALL;
    p.head = MODEL_ALL;
    assert_int_equal(run_both(f, &r), (size_t)(L - 1));
    model_cache_destroy(&src);
}

/* Incremental runs (prefix keys and values from a base, packed rows starting late) give the
 * descriptor's sequences query ranges and packed rows that differ per row. */
static void test_incremental(void **state) {
    fixture *f = *state;
    char err[COMMON_ERR_LEN];
    enum { B = 3, T = 15 };
    int32_t tok[B * T];
    fill_tokens(tok, B * T, 4);
    model_hook base_hooks[3 * L];
    for (int l = 0; l < L; l++) {
        base_hooks[3 * l] = hk(MODEL_HOOK_RESID_PRE, l);
        base_hooks[3 * l + 1] = hk(MODEL_HOOK_K, l);
        base_hooks[3 * l + 2] = hk(MODEL_HOOK_V, l);
    }
    model_request r;
    model_request_init(&r, f->plain, tok, B, T);
    r.hooks = base_hooks;
    r.n_hooks = 3 * L;
    model_cache *base = NULL;
    assert_int_equal(model_run(f->plain, &r, &base, err), 0);
    int32_t tok2[B * T];
    memcpy(tok2, tok, sizeof tok);
    size_t start[B] = {4, 14, 9}, rows[B] = {2, 0, 1}, lengths[B] = {15, 15, 12};
    for (size_t i = 0; i < B; i++) {
        memcpy(tok2 + i * T, tok + rows[i] * T, T * sizeof *tok);
        tok2[i * T + start[i]] = 7;
    }
    model_request_init(&r, f->plain, tok2, B, T);
    r.start_layer = 1;
    r.start_pos = start;
    r.base = base;
    r.base_rows = rows;
    r.lengths = lengths;
    assert_int_equal(run_both(f, &r), (size_t)(L - 1));
    model_cache_destroy(&base);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_used_without_hooks),
        cmocka_unit_test(test_not_used_when_cached),
        cmocka_unit_test(test_not_used_when_patched),
        cmocka_unit_test(test_incremental),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
