/*
 * Golden tests: every interp analysis on the fixture models compared with the independent
 * PyTorch reference (tests/reference/tl_analyses.py, written to tests/golden/interp/ by
 * make_interp_golden.py): patching of every kind (fast and plain), decompositions and their
 * labels, DLA, logit_attrs, predictions, legal-move statistics, neuron means, pattern diffs and
 * neuron DLA. Float32 tolerances: |c - ref| <= atol + rtol |ref|.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <jansson.h>

#include "interp_test_util.h"

typedef struct golden {
    const char *name;
    fixture f;
    model_st_file *st;
    json_t *labels;
    int32_t clean[64], corrupted[64], other[64];
    size_t T;
    interp_acts *clean_acts, *corr_acts;
} golden;

static float *read_tensor(golden *g, const char *name, model_shape *shape) {
    long i = model_st_find(g->st, name);
    if (i < 0) {
        fail_msg("%s: golden lacks %s", g->name, name);
    }
    model_dtype dt;
    model_shape s;
    model_st_info(g->st, (size_t)i, &dt, &s);
    size_t n = model_shape_numel(&s);
    float *buf = malloc((n + 1) * sizeof *buf);
    char err[COMMON_ERR_LEN];
    if (dt == MODEL_DTYPE_I32) {
        int32_t *ib = malloc((n + 1) * sizeof *ib);
        assert_int_equal(model_st_read_i32(g->st, name, ib, n, NULL, err), 0);
        for (size_t k = 0; k < n; k++) {
            buf[k] = (float)ib[k];
        }
        free(ib);
    } else if (model_st_read_f32(g->st, name, buf, n, NULL, err) != 0) {
        fail_msg("%s", err);
    }
    if (shape != NULL) {
        *shape = s;
    }
    return buf;
}

static void compare(golden *g, const char *name, const float *got, size_t n, double atol,
                    double rtol) {
    model_shape s;
    float *ref = read_tensor(g, name, &s);
    if (model_shape_numel(&s) != n) {
        fail_msg("%s %s: %zu values, golden has %zu", g->name, name, n, model_shape_numel(&s));
    }
    for (size_t i = 0; i < n; i++) {
        if (isnan(ref[i]) || isnan(got[i])) {
            if (isnan(ref[i]) != isnan(got[i])) {
                fail_msg("%s %s[%zu]: %g vs golden %g", g->name, name, i, got[i], ref[i]);
            }
            continue;
        }
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > atol + rtol * fabs((double)ref[i])) {
            fail_msg("%s %s[%zu]: %.7g vs golden %.7g (|diff| %g)", g->name, name, i, got[i],
                     ref[i], d);
        }
    }
    free(ref);
}

static void compare_labels(golden *g, const char *key, const interp_stack *s) {
    json_t *arr = json_object_get(g->labels, key);
    assert_non_null(arr);
    assert_int_equal(json_array_size(arr), s->n);
    for (size_t i = 0; i < s->n; i++) {
        assert_string_equal(json_string_value(json_array_get(arr, i)), s->labels[i]);
    }
}

static void compare_stack(golden *g, const char *key, const interp_stack *s, double atol) {
    compare_labels(g, key, s);
    compare(g, key, s->data, s->n * s->T * s->width, atol, 1e-3);
}

static void read_tokens(golden *g, const char *name, int32_t *dst) {
    char err[COMMON_ERR_LEN];
    model_shape s;
    assert_int_equal(model_st_read_i32(g->st, name, dst, 64, &s, err), 0);
    g->T = s.dims[0];
}

/* Opens the golden of a fixture (name, model_dir under the source tree) or, with name NULL,
 * the files named by CHESSLENS_INTERP_GOLDEN and CHESSLENS_INTERP_MODEL (a fresh random model
 * and its golden written by the live test). */
static int golden_open(golden *g, const char *name, const char *model_dir) {
    char path[512], dir[512], err[COMMON_ERR_LEN];
    memset(g, 0, sizeof *g);
    if (name == NULL) {
        const char *gp = getenv("CHESSLENS_INTERP_GOLDEN"), *mp = getenv("CHESSLENS_INTERP_MODEL");
        if (gp == NULL || mp == NULL) {
            return -1;
        }
        g->name = "live";
        snprintf(path, sizeof path, "%s", gp);
        snprintf(dir, sizeof dir, "%s", mp);
    } else {
        g->name = name;
        snprintf(path, sizeof path, "%s/tests/golden/interp/%s.safetensors", CHESSLENS_SOURCE_DIR,
                 name);
        snprintf(dir, sizeof dir, "%s/%s", CHESSLENS_SOURCE_DIR, model_dir);
    }
    if (model_st_open(&g->st, path, err) != 0) {
        /* the fixtures' goldens are committed: missing is a failure, not a skip */
        fail_msg("%s golden: %s (regenerate with tests/reference/make_interp_golden.py)", g->name,
                 err);
    }
    if (fixture_load(&g->f, dir, err) != 0) {
        fail_msg("%s: %s", name, err);
    }
    json_error_t jerr;
    g->labels = json_loads(model_st_metadata(g->st, "labels"), 0, &jerr);
    assert_non_null(g->labels);
    read_tokens(g, "tokens.clean", g->clean);
    read_tokens(g, "tokens.corrupted", g->corrupted);
    read_tokens(g, "tokens.other", g->other);
    /* The C tokenizer agrees with the reference on the games. */
    int32_t *ids = NULL;
    size_t T = 0;
    assert_int_equal(
        interp_tokens_from_uci(g->f.m, model_st_metadata(g->st, "clean"), &ids, &T, err), 0);
    assert_int_equal(T, g->T);
    assert_memory_equal(ids, g->clean, T * sizeof *ids);
    free(ids);
    interp_acts **a = NULL;
    if (interp_run_acts(g->f.s, g->clean, NULL, 1, g->T, true, &a, err) != 0) {
        fail_msg("%s", err);
    }
    g->clean_acts = a[0];
    free(a);
    if (interp_run_acts(g->f.s, g->corrupted, NULL, 1, g->T, true, &a, err) != 0) {
        fail_msg("%s", err);
    }
    g->corr_acts = a[0];
    free(a);
    return 0;
}

static void golden_close(golden *g) {
    interp_acts_destroy(&g->clean_acts);
    interp_acts_destroy(&g->corr_acts);
    json_decref(g->labels);
    model_st_close(&g->st);
    fixture_free(&g->f);
}

static void check_patching(golden *g) {
    char err[COMMON_ERR_LEN], key[96];
    const model_tokenizer *tok = model_get_tokenizer(g->f.m);
    int32_t metric_token = model_tokenizer_id(tok, model_st_metadata(g->st, "metric_token"));
    assert_true(metric_token >= 0);
    for (int plain = 0; plain < 2; plain++) {
        for (int k = 0; k < INTERP_PATCH_KIND_COUNT; k++) {
            /* plain runs of the largest kinds (5 L T H and L H T^2 full forwards) are covered
             * by test_patch; keep this test fast */
            if (plain && (k == INTERP_PATCH_HEAD_BY_POS_EVERY ||
                          k == INTERP_PATCH_HEAD_PATTERN_DEST_SRC_POS)) {
                continue;
            }
            interp_patch_opts o = interp_patch_opts_default();
            o.kind = (interp_patch_kind)k;
            o.plain = plain;
            o.metric.kind = INTERP_METRIC_LOGIT;
            o.metric.token = metric_token;
            o.metric.normalize = true;
            interp_patch_result *r = NULL;
            if (interp_patch_run(g->f.s, g->clean, g->corrupted, g->T, &o, &r, err) != 0) {
                fail_msg("%s", err);
            }
            snprintf(key, sizeof key, "patch.%s", interp_patch_kind_name(o.kind));
            compare(g, key, r->values, model_shape_numel(&r->shape), 2e-4, 2e-3);
            interp_patch_result_destroy(&r);
        }
    }
    /* whole other game prefix, logprob, unnormalised */
    interp_patch_opts o = interp_patch_opts_default();
    o.metric.kind = INTERP_METRIC_LOGPROB;
    o.metric.token = metric_token;
    interp_patch_result *r = NULL;
    if (interp_patch_run(g->f.s, g->clean, g->other, g->T, &o, &r, err) != 0) {
        fail_msg("%s", err);
    }
    compare(g, "patch_other.block_every", r->values, model_shape_numel(&r->shape), 1e-4, 1e-4);
    interp_patch_result_destroy(&r);
    /* legal mass of the clean game's last position */
    uint8_t *legal = NULL;
    size_t T = 0, V = (size_t)model_get_config(g->f.m)->d_vocab;
    assert_int_equal(interp_legal_mask(g->f.m, model_st_metadata(g->st, "clean"), &legal, &T, err),
                     0);
    o.kind = INTERP_PATCH_RESID_PRE;
    o.metric.kind = INTERP_METRIC_LEGAL_MASS;
    o.metric.legal = legal + (T - 1) * V;
    if (interp_patch_run(g->f.s, g->clean, g->corrupted, g->T, &o, &r, err) != 0) {
        fail_msg("%s", err);
    }
    compare(g, "patch_mass.resid_pre", r->values, model_shape_numel(&r->shape), 1e-5, 1e-4);
    interp_patch_result_destroy(&r);
    free(legal);
}

static void check_decompositions(golden *g) {
    char err[COMMON_ERR_LEN];
    const interp_acts *a = g->clean_acts;
    model *m = g->f.m;
    interp_stack *s = NULL, *lg = NULL;
    assert_int_equal(
        interp_decompose_resid(m, a, -1, false, INTERP_DECOMP_ALL, true, true, &s, err), 0);
    compare_stack(g, "decompose_resid", s, 1e-4);
    assert_int_equal(interp_stack_to_logits(m, s, &lg, err), 0);
    compare(g, "dla", lg->data, lg->n * lg->T * lg->width, 2e-4, 1e-3);
    interp_stack_destroy(&lg);
    interp_stack_destroy(&s);
    assert_int_equal(interp_decompose_resid(m, a, 1, true, INTERP_DECOMP_ATTN, true, true, &s, err),
                     0);
    compare_stack(g, "decompose_resid_l1", s, 1e-4);
    interp_stack_destroy(&s);
    assert_int_equal(interp_accumulated_resid(m, a, -1, true, false, true, &s, err), 0);
    compare_stack(g, "accumulated_resid", s, 1e-4);
    interp_stack_destroy(&s);
    assert_int_equal(interp_accumulated_resid(m, a, 2, true, true, true, &s, err), 0);
    compare_stack(g, "accumulated_resid_l2", s, 1e-4);
    interp_stack_destroy(&s);
    assert_int_equal(interp_stack_head_results(m, a, -1, true, true, &s, err), 0);
    compare_stack(g, "stack_head_results", s, 1e-4);
    interp_stack_destroy(&s);
    assert_int_equal(
        interp_full_resid_decomposition(m, a, -1, false, false, true, NULL, 0, &s, err), 0);
    compare_stack(g, "full_decomp_mlp", s, 1e-4);
    interp_stack_destroy(&s);
    /* per-neuron rows projected onto two token directions */
    model_shape ts;
    float *tf = read_tensor(g, "full_decomp_dir_tokens", &ts);
    int32_t toks[2] = {(int32_t)tf[0], (int32_t)tf[1]};
    free(tf);
    float *dirs = NULL;
    assert_int_equal(interp_token_dirs(m, toks, NULL, 2, &dirs, err), 0);
    if (interp_full_resid_decomposition(m, a, -1, false, true, true, dirs, 2, &s, err) != 0) {
        fail_msg("%s", err);
    }
    compare_stack(g, "full_decomp_neurons_dirs", s, 1e-4);
    interp_stack_destroy(&s);
    free(dirs);
    /* logit_attrs of the raw decomposition toward each next token against the metric token */
    assert_int_equal(
        interp_decompose_resid(m, a, -1, false, INTERP_DECOMP_ALL, true, false, &s, err), 0);
    const model_tokenizer *tok = model_get_tokenizer(m);
    int32_t metric_token = model_tokenizer_id(tok, model_st_metadata(g->st, "metric_token"));
    int32_t next[64], wrong[64];
    for (size_t t = 0; t < g->T; t++) {
        next[t] = g->clean[t + 1 < g->T ? t + 1 : t];
        wrong[t] = metric_token;
    }
    float *attrs = NULL;
    assert_int_equal(interp_logit_attrs(m, a, s, next, wrong, &attrs, err), 0);
    compare(g, "logit_attrs", attrs, s->n * s->T, 2e-4, 1e-3);
    free(attrs);
    interp_stack_destroy(&s);
}

static void check_stats(golden *g) {
    char err[COMMON_ERR_LEN];
    model *m = g->f.m;
    const model_config *cfg = model_get_config(m);
    size_t V = (size_t)cfg->d_vocab, L = (size_t)cfg->n_layers, M = (size_t)cfg->d_mlp;
    const char *clean_uci = model_st_metadata(g->st, "clean");
    /* predictions */
    uint8_t *legal = NULL;
    size_t T = 0, n = 0;
    assert_int_equal(interp_legal_mask(m, clean_uci, &legal, &T, err), 0);
    const float *logits = interp_acts_get(g->clean_acts, (model_hook){MODEL_HOOK_LOGITS, -1}, &n);
    assert_non_null(logits);
    interp_predictions *p = NULL;
    assert_int_equal(interp_predictions_new(&p, logits, T, V, legal, 5, err), 0);
    compare(g, "predictions.logprobs", p->logprobs, T * V, 1e-4, 1e-5);
    compare(g, "predictions.top_logprobs", p->top_logprobs, T * 5, 1e-4, 1e-5);
    compare(g, "predictions.legal_mass", p->legal_mass, T, 1e-5, 1e-4);
    float *ids = malloc(T * 5 * sizeof *ids), *top1 = malloc(T * sizeof *top1);
    for (size_t i = 0; i < T * 5; i++) {
        ids[i] = (float)p->top_ids[i];
    }
    for (size_t i = 0; i < T; i++) {
        top1[i] = p->top1_legal[i];
    }
    /* ids must match except where two tokens tie to float rounding: then the token chosen
     * must have the golden's log-probability at that rank */
    float *ref_ids = read_tensor(g, "predictions.top_ids", NULL);
    float *ref_lp = read_tensor(g, "predictions.top_logprobs", NULL);
    for (size_t i = 0; i < T * 5; i++) {
        if (ids[i] != ref_ids[i] &&
            fabsf(p->logprobs[(i / 5) * V + (size_t)p->top_ids[i]] - ref_lp[i]) > 1e-5f) {
            fail_msg("%s predictions.top_ids[%zu]: %g vs golden %g", g->name, i, ids[i],
                     ref_ids[i]);
        }
    }
    free(ref_ids);
    free(ref_lp);
    compare(g, "predictions.top1_legal", top1, T, 0, 0);
    free(ids);
    free(top1);
    interp_predictions_destroy(&p);
    free(legal);

    /* dataset statistics over the golden's games, two games per shard, shards merged */
    json_error_t jerr;
    json_t *games = json_loads(model_st_metadata(g->st, "games"), 0, &jerr);
    json_t *slice = json_loads(model_st_metadata(g->st, "slice"), 0, &jerr);
    assert_non_null(games);
    size_t n_games = json_array_size(games);
    model_shape cs;
    float *count_ref = read_tensor(g, "legal_stats.count", &cs);
    free(count_ref);
    size_t n_comp = cs.dims[0], Tmax = cs.dims[1];
    interp_legal_stats *shard[2] = {NULL, NULL};
    interp_neuron_stats *nshard[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        assert_int_equal(interp_legal_stats_new(&shard[k], n_comp, NULL, Tmax, err), 0);
        assert_int_equal(interp_neuron_stats_new(
                             &nshard[k], cfg, (long)json_integer_value(json_array_get(slice, 0)),
                             (long)json_integer_value(json_array_get(slice, 1)), err),
                         0);
    }
    for (size_t i = 0; i < n_games; i++) {
        const char *uci = json_string_value(json_array_get(games, i));
        int32_t *toks = NULL;
        uint8_t *mask = NULL, *phases = NULL;
        size_t Tg = 0, Tm = 0, Tp = 0;
        assert_int_equal(interp_tokens_from_uci(m, uci, &toks, &Tg, err), 0);
        assert_int_equal(interp_legal_mask(m, uci, &mask, &Tm, err), 0);
        assert_int_equal(interp_phases(uci, &phases, &Tp, err), 0);
        assert_int_equal(Tg, Tm);
        assert_int_equal(Tg, Tp);
        interp_acts **a = NULL;
        assert_int_equal(interp_run_acts(g->f.s, toks, NULL, 1, Tg, false, &a, err), 0);
        interp_stack *s = NULL, *lg = NULL;
        assert_int_equal(
            interp_decompose_resid(m, a[0], -1, false, INTERP_DECOMP_ALL, true, true, &s, err), 0);
        assert_int_equal(interp_stack_to_logits(m, s, &lg, err), 0);
        assert_int_equal(interp_legal_stats_add(shard[i % 2], lg, mask, err), 0);
        assert_int_equal(interp_neuron_stats_add(nshard[i % 2], a[0], phases, err), 0);
        interp_stack_destroy(&s);
        interp_stack_destroy(&lg);
        interp_acts_destroy(&a[0]);
        free(a);
        free(toks);
        free(mask);
        free(phases);
    }
    assert_int_equal(interp_legal_stats_merge(shard[0], shard[1], err), 0);
    assert_int_equal(interp_neuron_stats_merge(nshard[0], nshard[1], err), 0);
    static const char *const stat_names[INTERP_LEGAL_N_STATS] = {
        "min_legal",    "max_illegal",   "mean_legal",
        "mean_illegal", "min_minus_max", "mean_minus_mean"};
    float *mean = malloc(n_comp * Tmax * sizeof *mean);
    char key[64];
    for (int k = 0; k < INTERP_LEGAL_N_STATS; k++) {
        interp_legal_stats_mean(shard[0], k, mean);
        snprintf(key, sizeof key, "legal_stats.%s", stat_names[k]);
        compare(g, key, mean, n_comp * Tmax, 2e-4, 1e-3);
    }
    for (size_t i = 0; i < n_comp * Tmax; i++) {
        mean[i] = (float)shard[0]->count[i];
    }
    compare(g, "legal_stats.count", mean, n_comp * Tmax, 0, 0);
    free(mean);
    static const char *const groups[INTERP_NEURON_N_GROUPS] = {
        "all", "slice", "white_from", "white_to", "black_from", "black_to"};
    float *nm = malloc(L * M * sizeof *nm);
    for (int k = 0; k < INTERP_NEURON_N_GROUPS; k++) {
        interp_neuron_stats_mean(nshard[0], k, nm);
        snprintf(key, sizeof key, "neuron_means.%s", groups[k]);
        compare(g, key, nm, L * M, 1e-5, 1e-4);
    }
    free(nm);
    for (int k = 0; k < 2; k++) {
        interp_legal_stats_destroy(&shard[k]);
        interp_neuron_stats_destroy(&nshard[k]);
    }
    json_decref(games);
    json_decref(slice);

    /* attention-pattern diff and neuron DLA */
    float *diff = NULL;
    assert_int_equal(interp_pattern_diff(g->clean_acts, g->corr_acts, -1, &diff, err), 0);
    compare(g, "pattern_diff", diff, L * (size_t)cfg->n_heads * g->T, 1e-5, 1e-4);
    free(diff);
    int32_t metric_token =
        model_tokenizer_id(model_get_tokenizer(m), model_st_metadata(g->st, "metric_token"));
    assert_int_equal(
        interp_neuron_diff_dla(m, g->clean_acts, g->corr_acts, -1, metric_token, &diff, err), 0);
    compare(g, "neuron_diff_dla", diff, L * M, 1e-5, 1e-3);
    free(diff);
    int layers[10], neurons[10];
    float scores[10], fl[10], fn[10];
    assert_int_equal(
        interp_neuron_weight_dla_topk(m, metric_token, 10, layers, neurons, scores, err), 0);
    for (int i = 0; i < 10; i++) {
        fl[i] = (float)layers[i];
        fn[i] = (float)neurons[i];
    }
    compare(g, "weight_dla.scores", scores, 10, 1e-5, 1e-4);
    /* the same neurons, except for exact-to-rounding ties (the scores are compared above) */
    float *rl = read_tensor(g, "weight_dla.layers", NULL);
    float *rn = read_tensor(g, "weight_dla.neurons", NULL);
    float *rs = read_tensor(g, "weight_dla.scores", NULL);
    for (int i = 0; i < 10; i++) {
        bool same = fl[i] == rl[i] && fn[i] == rn[i];
        bool tie = (i > 0 && fabsf(rs[i] - rs[i - 1]) <= 1e-5f) ||
                   (i < 9 && fabsf(rs[i] - rs[i + 1]) <= 1e-5f);
        if (!same && !tie) {
            fail_msg("%s weight_dla[%d]: L%gN%g vs golden L%gN%g", g->name, i, fl[i], fn[i], rl[i],
                     rn[i]);
        }
    }
    free(rl);
    free(rn);
    free(rs);
}

static void run_golden(const char *name, const char *dir) {
    golden g;
    if (golden_open(&g, name, dir) != 0) {
        skip();
    }
    check_decompositions(&g);
    check_stats(&g);
    check_patching(&g);
    golden_close(&g);
}

static void test_golden_random_tiny(void **state) {
    (void)state;
    run_golden("random-tiny", "tests/fixtures/random-tiny");
}

static void test_golden_chess_tiny(void **state) {
    (void)state;
    run_golden("chess-tiny", "models/chess-tiny");
}

static void test_golden_live(void **state) {
    (void)state;
    run_golden(NULL, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_random_tiny),
        cmocka_unit_test(test_golden_chess_tiny),
        cmocka_unit_test(test_golden_live),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
