/*
 * Golden comparisons against the independent PyTorch reference (tests/reference/): for each
 * fixture model (trained chess-tiny, random-tiny of an odd shape) and processing (TL defaults,
 * none), the tokens of the recorded inputs, every processed parameter, the logits and every
 * hook of a cached run must agree within the contract's tolerances (relative L2 <= 1e-5 per
 * tensor, max abs <= 1e-4 on logits; attention scores compared on finite entries with -inf at
 * the same places). The same batch is also run with per-row lengths, which exercises the packed
 * (non-identity) layout, and compared on the real positions. The golden files are part of the
 * repository, so a missing one fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <string.h>

#include "model/model.h"
#include "tests/model/model_test_util.h"

typedef struct golden_case {
    const char *model_dir; /* relative to the source dir */
    const char *golden;    /* file name under tests/golden */
    bool processed;
} golden_case;

static void run_case(const golden_case *gc) {
    char path[1024], dir[1024], err[COMMON_ERR_LEN] = "";
    snprintf(path, sizeof path, "%s/tests/golden/%s", CHESSLENS_SOURCE_DIR, gc->golden);
    snprintf(dir, sizeof dir, "%s/%s", CHESSLENS_SOURCE_DIR, gc->model_dir);
    model_st_file *g = NULL;
    if (model_st_open(&g, path, err) != COMMON_OK) {
        fail_msg("golden file: %s (regenerate with tests/reference/make_golden.py)", err);
    }
    model_processing proc = gc->processed ? model_processing_default() : model_processing_none();
    model *m = NULL;
    int rc = model_load(&m, dir, &proc, err);
    if (rc) {
        fail_msg("model_load: %s", err);
    }
    const model_config *c = model_get_config(m);

    /* tokens: the golden's, and ours for the recorded inputs */
    long ti = model_st_find(g, "tokens");
    assert_true(ti >= 0);
    model_shape ts;
    model_st_info(g, (size_t)ti, NULL, &ts);
    assert_int_equal(ts.ndim, 2);
    size_t B = ts.dims[0], T = ts.dims[1];
    int32_t *tokens = calloc(B * T, sizeof *tokens);
    size_t *lengths = calloc(B, sizeof *lengths);
    assert_int_equal(model_st_read_i32(g, "tokens", tokens, B * T, NULL, err), 0);
    const char *inputs = model_st_metadata(g, "inputs");
    assert_non_null(inputs);
    json_t *arr = json_loads(inputs, 0, NULL);
    assert_true(json_is_array(arr));
    assert_int_equal(json_array_size(arr), B);
    int32_t *ids = calloc(T, sizeof *ids);
    for (size_t b = 0; b < B; b++) {
        size_t n = 0;
        rc = model_tokenizer_encode(model_get_tokenizer(m),
                                    json_string_value(json_array_get(arr, b)), true, ids, NULL, T,
                                    &n, err);
        if (rc) {
            fail_msg("encode: %s", err);
        }
        lengths[b] = n;
        for (size_t t = 0; t < T; t++) {
            assert_int_equal(tokens[b * T + t], t < n ? ids[t] : 0);
        }
    }
    json_decref(arr);
    free(ids);

    /* parameters */
    size_t n_params_checked = 0;
    for (size_t i = 0; i < model_st_count(g); i++) {
        const char *name = model_st_name(g, i);
        if (strncmp(name, "params.", 7) != 0) {
            continue;
        }
        model_shape ps, gs;
        const float *p = model_param(m, name + 7, &ps);
        if (!p) {
            fail_msg("golden parameter %s missing from the model", name);
        }
        model_st_info(g, i, NULL, &gs);
        assert_true(model_shape_equal(&ps, &gs));
        size_t n = model_shape_numel(&gs);
        float *ref = malloc(n * sizeof *ref);
        assert_int_equal(model_st_read_f32(g, name, ref, n, NULL, err), 0);
        double rel = test_rel_l2(p, ref, n);
        if (!(rel <= 1e-5)) {
            fail_msg("%s: parameter %s rel L2 %.3g", gc->golden, name, rel);
        }
        free(ref);
        n_params_checked++;
    }
    assert_int_equal(n_params_checked, model_param_count(m));

    model_backend *be = NULL;
    model_session *s = NULL;
    assert_int_equal(model_backend_cpu_new(&be, 2, err), 0);
    assert_int_equal(model_session_new(&s, m, be, err), 0);
    size_t nh = model_hook_count(c);
    model_hook *all = calloc(nh, sizeof *all);
    for (size_t i = 0; i < nh; i++) {
        all[i] = model_hook_at(c, i);
    }
    for (int variant = 0; variant < 2; variant++) {
        model_request req;
        model_request_init(&req, s, tokens, B, T);
        req.hooks = all;
        req.n_hooks = nh;
        req.lengths = variant ? lengths : NULL;
        model_cache *cache = NULL;
        rc = model_run(s, &req, &cache, err);
        if (rc) {
            fail_msg("model_run: %s", err);
        }
        size_t compared = 0;
        for (size_t i = 0; i < model_st_count(g); i++) {
            const char *name = model_st_name(g, i);
            model_hook h;
            if (strncmp(name, "params.", 7) == 0 || strcmp(name, "tokens") == 0) {
                continue;
            }
            if (model_hook_parse(name, c, &h, err) != 0) {
                fail_msg("golden tensor %s: %s", name, err);
            }
            model_shape gs, cs;
            model_st_info(g, i, NULL, &gs);
            assert_true(model_cache_shape(cache, h, &cs));
            if (!model_shape_equal(&gs, &cs)) {
                char a[64], b2[64];
                fail_msg("%s: shape %s vs golden %s", name, model_shape_format(&cs, a, sizeof a),
                         model_shape_format(&gs, b2, sizeof b2));
            }
            size_t n = model_shape_numel(&gs);
            float *ref = malloc(n * sizeof *ref), *got = malloc(n * sizeof *got);
            assert_int_equal(model_st_read_f32(g, name, ref, n, NULL, err), 0);
            assert_int_equal(model_cache_download(cache, h, got, n, err), 0);
            if (variant) {
                /* compare only real positions: blank the rest in both */
                size_t row = n / B;
                bool pm = model_hook_position_major(h.kind);
                for (size_t b = 0; b < B; b++) {
                    for (size_t k = 0; k < row; k++) {
                        size_t pos = pm ? k / (row / T) : (k / T) % T;
                        if (pos >= lengths[b]) {
                            ref[b * row + k] = got[b * row + k] = 0.0f;
                        }
                    }
                }
            }
            if (h.kind == MODEL_HOOK_ATTN_SCORES) {
                for (size_t k = 0; k < n; k++) {
                    if (isinf(ref[k]) != isinf(got[k]) || (isinf(ref[k]) && ref[k] != got[k])) {
                        fail_msg("%s: -inf mask differs at %zu", name, k);
                    }
                }
            }
            double rel = test_rel_l2(got, ref, n);
            if (!(rel <= 1e-5)) {
                fail_msg("%s (%s, variant %d): rel L2 %.3g", name, gc->golden, variant, rel);
            }
            if (h.kind == MODEL_HOOK_LOGITS) {
                double mx = test_max_abs(got, ref, n);
                if (!(mx <= 1e-4)) {
                    fail_msg("logits (%s): max abs %.3g", gc->golden, mx);
                }
            }
            free(ref);
            free(got);
            compared++;
        }
        /* every hook of the run (and logits) is in the golden file */
        assert_int_equal(compared, nh);
        model_cache_destroy(&cache);
    }
    free(all);
    free(tokens);
    free(lengths);
    model_session_destroy(&s);
    model_backend_destroy(&be);
    model_destroy(&m);
    model_st_close(&g);
}

static void test_random_tiny_processed(void **state) {
    (void)state;
    golden_case gc = {"tests/fixtures/random-tiny", "random-tiny.processed.safetensors", true};
    run_case(&gc);
}

static void test_random_tiny_unprocessed(void **state) {
    (void)state;
    golden_case gc = {"tests/fixtures/random-tiny", "random-tiny.unprocessed.safetensors", false};
    run_case(&gc);
}

static void test_chess_tiny_processed(void **state) {
    (void)state;
    golden_case gc = {"models/chess-tiny", "chess-tiny.processed.safetensors", true};
    run_case(&gc);
}

static void test_chess_tiny_unprocessed(void **state) {
    (void)state;
    golden_case gc = {"models/chess-tiny", "chess-tiny.unprocessed.safetensors", false};
    run_case(&gc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_tiny_processed),
        cmocka_unit_test(test_random_tiny_unprocessed),
        cmocka_unit_test(test_chess_tiny_processed),
        cmocka_unit_test(test_chess_tiny_unprocessed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
