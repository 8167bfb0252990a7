/*
 * Activation patching: the fast exact algorithm (incremental runs packed per layer), with and
 * without the identical-prefix shortcut, must give the plain algorithm's numbers (one full
 * forward per index, TL's semantics) for every patch kind, on random models and random games,
 * within 1e-4 on the normalised metric; and the patching entry points refuse bad inputs with
 * clear errors. Batches of pairs: test_patch_batch.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <unistd.h>

#include "interp_test_util.h"

/* fixture_random into an empty directory: the model writer refuses a non-empty one, and the
 * scratch directory holds the previous test's model. */
static int fresh_random(fixture *f, const char *name, int L, int D, int H, int ctx, int V,
                        uint64_t seed, char *err) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), name);
    DIR *dp = opendir(dir);
    if (dp != NULL) {
        struct dirent *e;
        while ((e = readdir(dp)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                char path[1024];
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                remove(path);
            }
        }
        closedir(dp);
        rmdir(dir);
    }
    return fixture_random(f, name, L, D, H, ctx, V, seed, err);
}

/* Runs kind with the plain algorithm and the fast one, with and without the shortcut, and
 * checks that they agree. */
static void check_fast_equals_plain(fixture *f, const int32_t *clean, const int32_t *corrupted,
                                    size_t T, interp_patch_kind kind, const interp_metric *metric,
                                    size_t budget) {
    char err[COMMON_ERR_LEN] = "";
    interp_patch_opts o = interp_patch_opts_default();
    o.kind = kind;
    o.metric = *metric;
    o.max_packed_positions = budget;
    o.plain = true;
    interp_patch_result *plain = NULL;
    if (interp_patch_run(f->s, clean, corrupted, T, &o, &plain, err) != 0) {
        fail_msg("plain %s: %s", interp_patch_kind_name(kind), err);
    }
    size_t shortcut_positions = 0;
    for (int no_shortcut = 1; no_shortcut >= 0; no_shortcut--) {
        o.plain = false;
        o.no_prefix_shortcut = no_shortcut;
        interp_patch_result *fast = NULL;
        if (interp_patch_run(f->s, clean, corrupted, T, &o, &fast, err) != 0) {
            fail_msg("fast %s: %s", interp_patch_kind_name(kind), err);
        }
        assert_true(model_shape_equal(&fast->shape, &plain->shape));
        size_t n = model_shape_numel(&fast->shape);
        size_t where = 0;
        double d = max_abs_diff(fast->values, plain->values, n, &where);
        if (!(d <= 1e-4)) {
            fail_msg("%s%s: fast and plain differ by %g at %zu (%g vs %g)",
                     interp_patch_kind_name(kind), no_shortcut ? " (no shortcut)" : "", d, where,
                     fast->values[where], plain->values[where]);
        }
        /* The fast algorithm computes fewer positions than the plain one (L >= 2), and the
         * shortcut no more (strictly fewer: test_patch_batch.c). */
        assert_true(fast->n_positions < plain->n_positions);
        if (no_shortcut) {
            shortcut_positions = fast->n_positions;
        } else {
            assert_true(fast->n_positions <= shortcut_positions);
        }
        interp_patch_result_destroy(&fast);
    }
    interp_patch_result_destroy(&plain);
}

static void test_fast_equals_plain_every_kind(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    fixture f;
    if (fresh_random(&f, "patch-model-a", 2, 32, 4, 32, 77, 11, err) != 0) {
        fail_msg("fixture: %s", err);
    }
    for (uint64_t seed = 1; seed <= 2; seed++) {
        char *uci = random_game_uci(seed * 7919, 9 + 4 * seed);
        assert_non_null(uci);
        int32_t *clean = NULL;
        size_t T = 0;
        assert_int_equal(interp_tokens_from_uci(f.m, uci, &clean, &T, err), 0);
        int32_t *corrupted = malloc(T * sizeof *corrupted);
        /* corrupt the last token with a square that differs from it */
        const char *sq =
            strcmp(model_tokenizer_token(model_get_tokenizer(f.m), clean[T - 1]), "d5") == 0 ? "h3"
                                                                                             : "d5";
        assert_int_equal(interp_corrupt_token(f.m, clean, T, T - 1, sq, corrupted, err), 0);
        interp_metric metric;
        assert_int_equal(
            interp_metric_parse(f.m, seed == 1 ? "logit:e4" : "logprob:e5", &metric, err), 0);
        metric.normalize = true;
        for (int k = 0; k < INTERP_PATCH_KIND_COUNT; k++) {
            /* a tiny budget forces several packed runs per layer */
            check_fast_equals_plain(&f, clean, corrupted, T, (interp_patch_kind)k, &metric,
                                    seed == 1 ? 0 : 7);
        }
        free(corrupted);
        free(clean);
        free(uci);
    }
    fixture_free(&f);
}

static void test_fast_equals_plain_other_game(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    fixture f;
    if (fresh_random(&f, "patch-model-b", 3, 24, 3, 40, 80, 5, err) != 0) {
        fail_msg("fixture: %s", err);
    }
    int32_t *clean = NULL, *other = NULL;
    size_t T = 0, T2 = 0;
    assert_int_equal(interp_tokens_from_uci(f.m, "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6", &clean, &T, err),
                     0);
    assert_int_equal(interp_tokens_from_uci(f.m, "d2d4 d7d5 c2c4 e7e6 b1c3 g8f6", &other, &T2, err),
                     0);
    assert_int_equal(T, T2);
    uint8_t *legal = NULL;
    size_t TL = 0;
    assert_int_equal(interp_legal_mask(f.m, "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6", &legal, &TL, err), 0);
    assert_int_equal(TL, T);
    interp_metric metric;
    assert_int_equal(interp_metric_parse(f.m, "legal_mass", &metric, err), 0);
    metric.legal = legal + (T - 1) * (size_t)model_get_config(f.m)->d_vocab;
    check_fast_equals_plain(&f, clean, other, T, INTERP_PATCH_BLOCK_EVERY, &metric, 0);
    check_fast_equals_plain(&f, clean, other, T, INTERP_PATCH_HEAD_BY_POS_EVERY, &metric, 50);
    assert_int_equal(interp_metric_parse(f.m, "logit_diff:c6,f6", &metric, err), 0);
    metric.normalize = true;
    check_fast_equals_plain(&f, clean, other, T, INTERP_PATCH_HEAD_ALL_POS_EVERY, &metric, 0);
    check_fast_equals_plain(&f, clean, other, T, INTERP_PATCH_RESID_MID, &metric, 0);
    free(legal);
    free(clean);
    free(other);
    fixture_free(&f);
}

/* Patching the corrupted token's own residual at layer 0 restores the clean run exactly
 * (normalised metric 1), and patching a position before it changes nothing (0). */
static void test_patch_values_have_meaning(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    fixture f;
    if (fresh_random(&f, "patch-model-a", 2, 32, 4, 32, 77, 11, err) != 0) {
        fail_msg("fixture: %s", err);
    }
    int32_t *clean = NULL;
    size_t T = 0;
    assert_int_equal(interp_tokens_from_uci(f.m, "e2e4 e7e5 g1f3 b8c6", &clean, &T, err), 0);
    int32_t corrupted[16];
    assert_int_equal(interp_corrupt_token(f.m, clean, T, 6, "f6", corrupted, err), 0);
    interp_patch_opts o = interp_patch_opts_default();
    o.kind = INTERP_PATCH_RESID_PRE;
    assert_int_equal(interp_metric_parse(f.m, "logit:a7", &o.metric, err), 0);
    o.metric.normalize = true;
    interp_patch_result *r = NULL;
    if (interp_patch_run(f.s, clean, corrupted, T, &o, &r, err) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(r->shape.ndim, 2);
    assert_int_equal(r->shape.dims[0], 2);
    assert_int_equal(r->shape.dims[1], T);
    assert_float_equal(r->values[6], 1.0, 1e-4); /* layer 0, corrupted position */
    for (size_t p = 0; p < 6; p++) {
        assert_float_equal(r->values[p], 0.0, 1e-5);
    }
    assert_string_equal(r->axes, "layer,pos");
    interp_patch_result_destroy(&r);
    /* One pattern element (TL's attn_head_pattern_dest_src_pos, [L, H, T, T]): a masked key
     * (source after destination) is 0 in both runs and a destination before the corrupted
     * position sees the same pattern in both, so neither moves the metric; elements of the last
     * destination row do. Both algorithms (the fast one does not run masked keys at all). */
    enum { L = 2, H = 4 };
    o.kind = INTERP_PATCH_HEAD_PATTERN_DEST_SRC_POS;
    for (int plain = 0; plain < 2; plain++) {
        o.plain = plain;
        if (interp_patch_run(f.s, clean, corrupted, T, &o, &r, err) != 0) {
            fail_msg("%s", err);
        }
        assert_int_equal(r->shape.ndim, 4);
        assert_int_equal(r->shape.dims[0], L);
        assert_int_equal(r->shape.dims[1], H);
        assert_int_equal(r->shape.dims[2], T);
        assert_int_equal(r->shape.dims[3], T);
        assert_string_equal(r->axes, "layer,head,dest_pos,src_pos");
        double last_row = 0.0;
        for (size_t l = 0; l < L; l++) {
            for (size_t h = 0; h < H; h++) {
                for (size_t d = 0; d < T; d++) {
                    for (size_t src = 0; src < T; src++) {
                        float v = r->values[((l * H + h) * T + d) * T + src];
                        if (src > d || d < 6) {
                            assert_float_equal(v, 0.0, 1e-5);
                        }
                        if (d == T - 1 && fabs(v) > last_row) {
                            last_row = fabs(v);
                        }
                    }
                }
            }
        }
        assert_true(last_row > 1e-3);
        interp_patch_result_destroy(&r);
    }
    free(clean);
    fixture_free(&f);
}

static void test_bad_inputs(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    fixture f;
    if (fresh_random(&f, "patch-model-a", 2, 32, 4, 32, 77, 11, err) != 0) {
        fail_msg("fixture: %s", err);
    }
    int32_t *clean = NULL;
    size_t T = 0;
    assert_int_equal(interp_tokens_from_uci(f.m, "e2e4 e7e5", &clean, &T, err), 0);
    assert_int_equal(T, 5);
    int32_t out[8];
    /* corruption position outside the game */
    assert_int_equal(interp_corrupt_token(f.m, clean, T, 5, "d5", out, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "outside the game"));
    /* token not in the vocabulary */
    assert_int_equal(interp_corrupt_token(f.m, clean, T, 4, "z9", out, err), COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "'z9'"));
    /* metric token missing / malformed metric */
    interp_metric metric;
    assert_int_equal(interp_metric_parse(f.m, "logit:k9", &metric, err), COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "'k9'"));
    assert_int_equal(interp_metric_parse(f.m, "logit:", &metric, err), COMMON_ERR_PARSE);
    assert_int_equal(interp_metric_parse(f.m, "entropy", &metric, err), COMMON_ERR_PARSE);
    assert_int_equal(interp_metric_parse(f.m, "logit_diff:e4", &metric, err), COMMON_ERR_PARSE);
    /* malformed game */
    int32_t *bad = NULL;
    size_t Tb = 0;
    assert_true(interp_tokens_from_uci(f.m, "e2e4 e7x5", &bad, &Tb, err) < 0);
    /* normalising with identical runs */
    interp_patch_opts o = interp_patch_opts_default();
    o.kind = INTERP_PATCH_RESID_PRE;
    assert_int_equal(interp_metric_parse(f.m, "logit:e4", &o.metric, err), 0);
    o.metric.normalize = true;
    interp_patch_result *r = NULL;
    assert_int_equal(interp_patch_run(f.s, clean, clean, T, &o, &r, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "normalise"));
    assert_null(r);
    /* legal_mass without a mask */
    assert_int_equal(interp_corrupt_token(f.m, clean, T, 4, "d5", out, err), 0);
    assert_int_equal(interp_metric_parse(f.m, "legal_mass", &o.metric, err), 0);
    assert_true(interp_patch_run(f.s, clean, out, T, &o, &r, err) < 0);
    assert_non_null(strstr(err, "mask"));
    /* kind names round-trip */
    for (int k = 0; k < INTERP_PATCH_KIND_COUNT; k++) {
        assert_int_equal(interp_patch_kind_parse(interp_patch_kind_name((interp_patch_kind)k)), k);
    }
    assert_int_equal(interp_patch_kind_parse("block"), -1);
    free(clean);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patch_values_have_meaning),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_fast_equals_plain_every_kind),
        cmocka_unit_test(test_fast_equals_plain_other_game),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
