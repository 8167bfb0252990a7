/*
 * Decomposition identities on random models and random games: the rows of every decomposition
 * sum to the residual stream they decompose; with apply_ln at the last layer, the sum over
 * components of stack @ W_U plus b_U reproduces the model's logits; per-neuron rows contracted
 * with directions equal the explicit rows projected; mergeable partials merge exactly; bad
 * arguments are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "interp_test_util.h"

typedef struct setup {
    fixture f;
    int32_t *tokens;
    size_t T;
    interp_acts *acts;
} setup;

static void setup_open(setup *s, uint64_t seed) {
    char err[COMMON_ERR_LEN] = "";
    if (fixture_random(&s->f, "decomp-model", 3, 32, 4, 48, 79, 3, err) != 0) {
        fail_msg("fixture: %s", err);
    }
    char *uci = random_game_uci(seed, 40);
    assert_non_null(uci);
    assert_int_equal(interp_tokens_from_uci(s->f.m, uci, &s->tokens, &s->T, err), 0);
    free(uci);
    interp_acts **a = NULL;
    if (interp_run_acts(s->f.s, s->tokens, NULL, 1, s->T, true, &a, err) != 0) {
        fail_msg("%s", err);
    }
    s->acts = a[0];
    free(a);
}

static void setup_close(setup *s) {
    interp_acts_destroy(&s->acts);
    free(s->tokens);
    fixture_free(&s->f);
}

/* Sum of rows of s equals ref [T, D] within tol. */
static void assert_rows_sum_to(const interp_stack *s, const float *ref, double tol) {
    size_t TD = s->T * s->width;
    for (size_t e = 0; e < TD; e++) {
        double acc = 0.0;
        for (size_t i = 0; i < s->n; i++) {
            acc += s->data[i * TD + e];
        }
        if (fabs(acc - ref[e]) > tol) {
            fail_msg("rows sum to %g at %zu, residual %g", acc, e, ref[e]);
        }
    }
}

static const float *hook(const setup *s, model_hook_kind k, int layer) {
    const float *p = interp_acts_get(s->acts, (model_hook){k, layer}, NULL);
    assert_non_null(p);
    return p;
}

static void test_rows_sum_to_residual(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    setup s;
    setup_open(&s, 77);
    model *m = s.f.m;
    int L = model_get_config(m)->n_layers;
    interp_stack *st = NULL;
    for (int layer = 0; layer <= L; layer++) {
        const float *resid = layer == L ? hook(&s, MODEL_HOOK_RESID_POST, L - 1)
                                        : hook(&s, MODEL_HOOK_RESID_PRE, layer);
        assert_int_equal(interp_decompose_resid(m, s.acts, layer, false, INTERP_DECOMP_ALL, true,
                                                false, &st, err),
                         0);
        assert_int_equal(st->n, 2 + 2 * (size_t)layer);
        assert_rows_sum_to(st, resid, 1e-4);
        interp_stack_destroy(&st);
        assert_int_equal(interp_full_resid_decomposition(m, s.acts, layer, false, false, false,
                                                         NULL, 0, &st, err),
                         0);
        assert_rows_sum_to(st, resid, 1e-4);
        assert_string_equal(st->labels[st->n - 1], "bias");
        interp_stack_destroy(&st);
        if (layer < L) {
            assert_int_equal(interp_decompose_resid(m, s.acts, layer, true, INTERP_DECOMP_ALL, true,
                                                    false, &st, err),
                             0);
            assert_rows_sum_to(st, hook(&s, MODEL_HOOK_RESID_MID, layer), 1e-4);
            interp_stack_destroy(&st);
            assert_int_equal(interp_full_resid_decomposition(m, s.acts, layer, true, false, false,
                                                             NULL, 0, &st, err),
                             0);
            assert_rows_sum_to(st, hook(&s, MODEL_HOOK_RESID_MID, layer), 1e-4);
            interp_stack_destroy(&st);
        }
        if (layer > 0) {
            assert_int_equal(interp_stack_head_results(m, s.acts, layer, true, false, &st, err), 0);
            assert_rows_sum_to(st, hook(&s, MODEL_HOOK_RESID_POST, layer - 1), 1e-4);
            interp_stack_destroy(&st);
        }
    }
    /* per-neuron rows, projected onto every basis direction of d_model (dirs = identity),
     * sum to the residual too */
    size_t D = (size_t)model_get_config(m)->d_model;
    float *eye = calloc(D * D, sizeof *eye);
    for (size_t d = 0; d < D; d++) {
        eye[d * D + d] = 1.0f;
    }
    assert_int_equal(
        interp_full_resid_decomposition(m, s.acts, L, false, true, false, eye, D, &st, err), 0);
    assert_int_equal(st->n, (size_t)L * (4 + (size_t)model_get_config(m)->d_mlp) + 3);
    assert_string_equal(st->labels[(size_t)L * 4], "L0N0");
    assert_rows_sum_to(st, hook(&s, MODEL_HOOK_RESID_POST, L - 1), 2e-4);
    interp_stack_destroy(&st);
    /* without directions the neuron rows are refused rather than materialised */
    assert_int_equal(
        interp_full_resid_decomposition(m, s.acts, L, false, true, false, NULL, 0, &st, err),
        COMMON_ERR_INVALID);
    free(eye);
    setup_close(&s);
}

static void test_components_reproduce_logits(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    setup s;
    setup_open(&s, 91);
    model *m = s.f.m;
    size_t V = (size_t)model_get_config(m)->d_vocab, T = s.T;
    const float *logits = hook(&s, MODEL_HOOK_LOGITS, -1);
    const float *b_U = model_param(m, "unembed.b_U", NULL);
    assert_non_null(b_U);
    interp_stack *st = NULL, *lg = NULL;
    for (int variant = 0; variant < 3; variant++) {
        if (variant == 0) {
            assert_int_equal(interp_decompose_resid(m, s.acts, -1, false, INTERP_DECOMP_ALL, true,
                                                    true, &st, err),
                             0);
        } else if (variant == 1) {
            assert_int_equal(interp_stack_head_results(m, s.acts, -1, true, true, &st, err), 0);
        } else {
            assert_int_equal(interp_full_resid_decomposition(m, s.acts, -1, false, false, true,
                                                             NULL, 0, &st, err),
                             0);
        }
        assert_int_equal(interp_stack_to_logits(m, st, &lg, err), 0);
        for (size_t t = 0; t < T; t++) {
            for (size_t v = 0; v < V; v++) {
                double acc = b_U[v];
                for (size_t i = 0; i < lg->n; i++) {
                    acc += lg->data[(i * T + t) * V + v];
                }
                if (fabs(acc - logits[t * V + v]) > 1e-4) {
                    fail_msg("variant %d: components give %g, logits %g at (%zu, %zu)", variant,
                             acc, logits[t * V + v], t, v);
                }
            }
        }
        interp_stack_destroy(&lg);
        interp_stack_destroy(&st);
    }
    /* per-neuron rows contracted with W_U (never [neurons, T, D]) also sum to the logits */
    const float *W_U = model_param(m, "unembed.W_U", NULL);
    assert_int_equal(
        interp_full_resid_decomposition(m, s.acts, -1, false, true, true, W_U, V, &st, err), 0);
    for (size_t t = 0; t < T; t++) {
        for (size_t v = 0; v < V; v += 7) {
            double acc = b_U[v];
            for (size_t i = 0; i < st->n; i++) {
                acc += st->data[(i * T + t) * V + v];
            }
            assert_true(fabs(acc - logits[t * V + v]) <= 2e-4);
        }
    }
    interp_stack_destroy(&st);
    /* the logit lens: accumulated_resid at the last layer @ W_U + b_U, last row = logits */
    assert_int_equal(interp_accumulated_resid(m, s.acts, -1, false, false, true, &st, err), 0);
    assert_string_equal(st->labels[st->n - 1], "final_post");
    assert_int_equal(interp_stack_to_logits(m, st, &lg, err), 0);
    for (size_t e = 0; e < T * V; e++) {
        double x = lg->data[(lg->n - 1) * T * V + e] + b_U[e % V];
        assert_true(fabs(x - logits[e]) <= 1e-4);
    }
    interp_stack_destroy(&lg);
    interp_stack_destroy(&st);
    setup_close(&s);
}

static void test_partials_merge_exactly(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    setup s;
    setup_open(&s, 5);
    model *m = s.f.m;
    const model_config *cfg = model_get_config(m);
    interp_legal_stats *all = NULL, *part[2] = {NULL, NULL};
    interp_neuron_stats *nall = NULL, *npart[2] = {NULL, NULL};
    size_t n_comp = 2 + 2 * (size_t)cfg->n_layers;
    assert_int_equal(interp_legal_stats_new(&all, n_comp, NULL, 48, err), 0);
    assert_int_equal(interp_neuron_stats_new(&nall, cfg, 2, -2, err), 0);
    for (int k = 0; k < 2; k++) {
        assert_int_equal(interp_legal_stats_new(&part[k], n_comp, NULL, 48, err), 0);
        assert_int_equal(interp_neuron_stats_new(&npart[k], cfg, 2, -2, err), 0);
    }
    for (uint64_t g = 0; g < 4; g++) {
        char *uci = random_game_uci(1000 + g, 20 + 6 * g);
        int32_t *toks = NULL;
        uint8_t *mask = NULL, *ph = NULL;
        size_t T = 0, Tm = 0, Tp = 0;
        assert_int_equal(interp_tokens_from_uci(m, uci, &toks, &T, err), 0);
        assert_int_equal(interp_legal_mask(m, uci, &mask, &Tm, err), 0);
        assert_int_equal(interp_phases(uci, &ph, &Tp, err), 0);
        interp_acts **a = NULL;
        /* the dataset path: no attention patterns cached, so a pattern diff is refused */
        assert_int_equal(interp_run_acts(s.f.s, toks, NULL, 1, T, false, &a, err), 0);
        float *no_diff = NULL;
        assert_int_equal(interp_pattern_diff(a[0], a[0], -1, &no_diff, err), COMMON_ERR_NOT_FOUND);
        assert_null(no_diff);
        interp_stack *st = NULL, *lg = NULL;
        assert_int_equal(
            interp_decompose_resid(m, a[0], -1, false, INTERP_DECOMP_ALL, true, true, &st, err), 0);
        assert_int_equal(interp_stack_to_logits(m, st, &lg, err), 0);
        assert_int_equal(interp_legal_stats_add(all, lg, mask, err), 0);
        assert_int_equal(interp_legal_stats_add(part[g % 2], lg, mask, err), 0);
        assert_int_equal(interp_neuron_stats_add(nall, a[0], ph, err), 0);
        assert_int_equal(interp_neuron_stats_add(npart[g % 2], a[0], ph, err), 0);
        interp_stack_destroy(&st);
        interp_stack_destroy(&lg);
        interp_acts_destroy(&a[0]);
        free(a);
        free(toks);
        free(mask);
        free(ph);
        free(uci);
    }
    assert_int_equal(interp_legal_stats_merge(part[0], part[1], err), 0);
    assert_int_equal(interp_neuron_stats_merge(npart[0], npart[1], err), 0);
    size_t cells = n_comp * 48;
    assert_memory_equal(all->count, part[0]->count, cells * sizeof *all->count);
    for (size_t i = 0; i < INTERP_LEGAL_N_STATS * cells; i++) {
        assert_true(fabs(all->sum[i] - part[0]->sum[i]) <= 1e-9 * (1 + fabs(all->sum[i])));
        assert_true(all->min[i] == part[0]->min[i]);
        assert_true(all->max[i] == part[0]->max[i]);
    }
    float *mean_min = malloc(cells * sizeof(float)), *mean_avg = malloc(cells * sizeof(float));
    interp_legal_stats_mean(all, INTERP_LEGAL_MIN_LEGAL, mean_min);
    interp_legal_stats_mean(all, INTERP_LEGAL_MEAN_LEGAL, mean_avg);
    size_t counted = 0;
    for (size_t i = 0; i < cells; i++) {
        if (all->count[i]) {
            assert_true(mean_min[i] <= mean_avg[i] + 1e-5f);
            counted++;
        } else {
            assert_true(isnan(mean_avg[i]));
        }
    }
    assert_true(counted > 0);
    free(mean_min);
    free(mean_avg);
    for (int gi = 0; gi < INTERP_NEURON_N_GROUPS; gi++) {
        assert_int_equal(nall->count[gi], npart[0]->count[gi]);
    }
    /* every position is in "all"; phases partition the non-special positions */
    assert_int_equal(nall->count[INTERP_NEURON_ALL], 4 + nall->count[INTERP_NEURON_WHITE_FROM] +
                                                         nall->count[INTERP_NEURON_WHITE_TO] +
                                                         nall->count[INTERP_NEURON_BLACK_FROM] +
                                                         nall->count[INTERP_NEURON_BLACK_TO]);
    size_t LM = (size_t)cfg->n_layers * (size_t)cfg->d_mlp;
    for (size_t i = 0; i < INTERP_NEURON_N_GROUPS * LM; i++) {
        assert_true(fabs(nall->sum[i] - npart[0]->sum[i]) <= 1e-9 * (1 + fabs(nall->sum[i])));
    }
    /* mismatched partials are refused */
    interp_legal_stats *other = NULL;
    assert_int_equal(interp_legal_stats_new(&other, n_comp, NULL, 40, err), 0);
    assert_int_equal(interp_legal_stats_merge(all, other, err), COMMON_ERR_INVALID);
    interp_legal_stats_destroy(&other);
    interp_legal_stats_destroy(&all);
    interp_neuron_stats_destroy(&nall);
    for (int k = 0; k < 2; k++) {
        interp_legal_stats_destroy(&part[k]);
        interp_neuron_stats_destroy(&npart[k]);
    }
    setup_close(&s);
}

static void test_bad_arguments(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    setup s;
    setup_open(&s, 13);
    model *m = s.f.m;
    interp_stack *st = NULL;
    assert_int_equal(
        interp_decompose_resid(m, s.acts, 7, false, INTERP_DECOMP_ALL, true, false, &st, err),
        COMMON_ERR_INVALID);
    assert_null(st);
    assert_int_equal(interp_accumulated_resid(m, s.acts, -1, false, true, false, &st, err),
                     COMMON_ERR_INVALID);
    /* a set without the hooks an analysis needs names the missing hook */
    interp_acts *empty = NULL;
    assert_int_equal(interp_acts_new(&empty, model_get_config(m), s.T, err), 0);
    assert_int_equal(
        interp_decompose_resid(m, empty, -1, false, INTERP_DECOMP_ALL, true, false, &st, err),
        COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "hook_embed"));
    /* games of different lengths where one length is needed */
    interp_acts *shorter = NULL;
    assert_int_equal(interp_acts_new(&shorter, model_get_config(m), s.T - 1, err), 0);
    float *diff = NULL;
    assert_int_equal(interp_pattern_diff(s.acts, shorter, -1, &diff, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "different lengths"));
    assert_int_equal(interp_neuron_diff_dla(m, s.acts, shorter, -1, 5, &diff, err),
                     COMMON_ERR_INVALID);
    interp_acts_destroy(&shorter);
    interp_acts_destroy(&empty);
    int layers[2], neurons[2];
    float scores[2];
    assert_int_equal(interp_neuron_weight_dla_topk(m, 1000, 2, layers, neurons, scores, err),
                     COMMON_ERR_INVALID);
    /* top-k is sorted and holds the largest score */
    assert_int_equal(interp_neuron_weight_dla_topk(m, 12, 2, layers, neurons, scores, err), 0);
    assert_true(scores[0] >= scores[1]);
    setup_close(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_sum_to_residual),
        cmocka_unit_test(test_components_reproduce_logits),
        cmocka_unit_test(test_partials_merge_exactly),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
