/*
 * test_executor: the executor runs a whole sweep through the store as a worker would (claim,
 * load the work, execute, complete) with one loaded model, and every number it produced is
 * checked against direct interp calls on the same games, computed here without the executor:
 * - patch values against interp_patch_run of each pair alone with the metric resolved here
 *   (clean_top / corrupt_top from an argmax of single-prompt runs), NaN values (NULL in the
 *   store) for normalised pairs whose two metrics are equal;
 * - legal_stats and neuron_stats views against one pass of cmd_decompose-style calls;
 * - predictions rows against interp_predictions of each game;
 * and the building blocks: empty patch results shaped as interp's, the CLI's component stack.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "worker/worker.h"

static char err[COMMON_ERR_LEN];

/* A trained model: its top predictions react to a corrupted last token, so both resolved
 * metrics with two tokens and pairs of equal top tokens (no normalised value) occur. */
#define MODEL_DIR CHESSLENS_SOURCE_DIR "/models/chess-tiny"
#define N_RANDOM 4
#define N_GAMES (N_RANDOM + 3)
#define MAX_TOKENS 40

/* Games shorter than the random ones, so batches hold games of different lengths. */
static const char *const hand_games[3] = {
    "f2f3 e7e5 g2g4 d8h4",                           /* 9 tokens, mate */
    "a2a4 b7b5 a4b5 a7a6 b5a6 c8b7 a6b7 b8c6 b7a8q", /* 20 tokens, a promotion */
    "e2e4 e7e5 g1f3 b8c6 f1c4 g8f6",                 /* 13 tokens */
};

static const char *tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

/* The sweep: every analysis kind, the patch ones over the four kinds of corruption and the
 * metric paths (top tokens, normalisation, legal mass, a plain text token). */
static const char *const sweep_json =
    "{\"name\":\"all\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,7],\"analyses\":["
    /* 0 */ "{\"kind\":\"patch\",\"patch\":\"block_every\",\"cutoffs\":[9,14],"
    "\"corrupt\":{\"position\":\"last\",\"with\":\"each_legal_alternative\"},"
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\",\"corrupt_top\"],"
    "\"normalize\":true}},"
    /* 1 */ "{\"kind\":\"patch\",\"patch\":\"attn_head_out_by_pos\",\"cutoffs\":[12],"
    "\"corrupt\":{\"position\":4,\"with\":\"random_legal_alternative\",\"seed\":3},"
    "\"metric\":{\"kind\":\"legal_mass\",\"normalize\":true}},"
    /* 2 */ "{\"kind\":\"legal_stats\",\"components\":[\"embeds\",\"heads\",\"mlps\"]},"
    /* 3 */ "{\"kind\":\"neuron_stats\",\"by\":\"phase\",\"slice\":[5,-5]},"
    /* 4 */ "{\"kind\":\"predictions\",\"top_k\":3},"
    /* 5 */ "{\"kind\":\"legal_stats\",\"components\":[\"embeds\"]},"
    /* 6 */ "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[9],"
    "\"corrupt\":{\"position\":-1,\"with\":\"e4\"},"
    "\"metric\":{\"kind\":\"logprob\",\"tokens\":[\"e5\"]}},"
    /* 7 */ "{\"kind\":\"patch\",\"patch\":\"mlp_out\",\"cutoffs\":[10],"
    "\"corrupt\":{\"with\":{\"game\":0}},"
    "\"metric\":{\"kind\":\"logit\",\"tokens\":[\"clean_top\"]}}"
    "]}";

static coordinator_store *store;
static coordinator_spec *spec;
static int64_t sweep_id;
static worker_executor *ex;
static char *ucis[N_GAMES];

/* A fresh store with N_GAMES random games and the sweep planned. */
static int setup(void **state) {
    (void)state;
    char path[512], side[600];
    snprintf(path, sizeof path, "%s/executor.db", tmpdir());
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", path);
    remove(side);
    if (coordinator_store_open(&store, path, 0, err) != 0) {
        fprintf(stderr, "open %s: %s\n", path, err);
        return -1;
    }
    int64_t ds = 0;
    coordinator_import_stats st = {0};
    coordinator_game_in hand_in[3];
    for (size_t i = 0; i < 3; i++) {
        hand_in[i] = (coordinator_game_in){hand_games[i], NULL, (int64_t)i};
    }
    if (coordinator_dataset_create(store, "d", "test", false, &ds, err) != 0 ||
        coordinator_games_generate(store, ds, N_RANDOM, 5, MAX_TOKENS, &st, NULL, err) != 0 ||
        coordinator_games_add(store, ds, "hand", hand_in, 3, 0, &st, NULL, err) != 0 ||
        st.n_added != N_GAMES ||
        coordinator_sweep_submit(store, sweep_json, strlen(sweep_json), NULL, 0, &sweep_id, NULL,
                                 err) != 0 ||
        coordinator_spec_parse(&spec, sweep_json, strlen(sweep_json), err) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    coordinator_plan_opts opts = {16, 3}; /* several tasks per job */
    if (coordinator_plan_sweep(store, sweep_id, spec, &opts, NULL, err) != 0) {
        fprintf(stderr, "plan: %s\n", err);
        return -1;
    }
    sqlite3_stmt *q = NULL;
    sqlite3_prepare_v2(coordinator_store_db(store),
                       "SELECT uci FROM games WHERE dataset = 'd' ORDER BY game", -1, &q, NULL);
    for (size_t g = 0; g < N_GAMES && sqlite3_step(q) == SQLITE_ROW; g++) {
        ucis[g] = strdup((const char *)sqlite3_column_text(q, 0));
    }
    sqlite3_finalize(q);
    if (worker_executor_new(&ex, MODEL_DIR, "cpu", 1, err) != 0) {
        fprintf(stderr, "executor: %s\n", err);
        return -1;
    }
    worker_executor_set_games_per_run(ex, 2); /* batches of games of different lengths */
    return 0;
}

static int teardown(void **state) {
    (void)state;
    worker_executor_destroy(&ex);
    coordinator_spec_destroy(&spec);
    coordinator_store_close(&store);
    for (size_t g = 0; g < N_GAMES; g++) {
        free(ucis[g]);
    }
    return 0;
}

static int64_t query_int(const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(coordinator_store_db(store), sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("prepare %s", sql);
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static bool close_rel(double a, double b, double tol) {
    return fabs(a - b) <= tol * fmax(1.0, fmax(fabs(a), fabs(b)));
}

/* The first T token ids of game g, from its moves. */
static int32_t *prompt_of(const model *m, uint64_t g, size_t T) {
    int32_t *ids = NULL;
    size_t n = 0;
    assert_true(g < N_GAMES);
    assert_int_equal(interp_tokens_from_uci(m, ucis[g], &ids, &n, err), 0);
    assert_true(n >= T);
    return ids;
}

/* The most probable next token after prompt [T], from a run of that prompt alone. */
static const char *top_of(model_session *s, const int32_t *prompt, size_t T) {
    const model *m = model_session_model(s);
    size_t V = (size_t)model_get_config(m)->d_vocab;
    model_request req;
    model_request_init(&req, s, prompt, 1, T);
    model_cache *c = NULL;
    assert_int_equal(model_run(s, &req, &c, err), 0);
    float *logits = malloc(T * V * sizeof *logits);
    assert_int_equal(
        model_cache_download(c, (model_hook){MODEL_HOOK_LOGITS, -1}, logits, T * V, err), 0);
    size_t best = 0;
    for (size_t v = 0; v < V; v++) {
        best = logits[(T - 1) * V + v] > logits[(T - 1) * V + best] ? v : best;
    }
    free(logits);
    model_cache_destroy(&c);
    return model_tokenizer_token(model_get_tokenizer(m), (int32_t)best);
}

/* Checks one patch task's output pair by pair; counts NaN pairs and compared values. */
static void check_patch(const coordinator_analysis *a, const coordinator_work *w,
                        const worker_output *o, size_t *n_nan, size_t *n_values) {
    size_t ok_pairs = 0;
    model_session *s = worker_executor_session(ex);
    const model *m = worker_executor_model(ex);
    size_t T = w->cutoff, V = (size_t)model_get_config(m)->d_vocab;
    const coordinator_patch_batch *b = o->results.patch;
    assert_non_null(b);
    assert_null(o->results.legal);
    assert_int_equal(b->n, w->n_pairs);
    assert_int_equal(b->kind, a->patch.kind);
    size_t nan_pairs = 0, rows = 0;
    for (size_t i = 0; i < b->n; i++) {
        const coordinator_pair *p = &w->pairs[i];
        assert_int_equal(b->game[i], p->game);
        assert_int_equal(b->cutoff[i], T);
        assert_int_equal(b->corrupt_pos[i], p->corrupt_pos);
        assert_int_equal(b->corrupt_game[i], p->corrupt_game);
        assert_int_equal(b->normalized[i], a->patch.metric.normalize);
        int32_t *clean = prompt_of(m, p->game, T), *corrupted = NULL;
        if (p->corrupt_pos >= 0) {
            assert_string_equal(b->clean_token[i], p->clean_token);
            assert_string_equal(b->corrupt_token[i], p->corrupt_token);
            corrupted = malloc(T * sizeof *corrupted);
            assert_int_equal(interp_corrupt_token(m, clean, T, (size_t)p->corrupt_pos,
                                                  p->corrupt_token, corrupted, err),
                             0);
        } else {
            assert_null(b->clean_token[i]);
            assert_null(b->corrupt_token[i]);
            corrupted = prompt_of(m, (uint64_t)p->corrupt_game, T);
        }
        /* the metric as resolved here */
        char want[128];
        const char *ct = top_of(s, clean, T), *rt = top_of(s, corrupted, T);
        const coordinator_metric_spec *ms = &a->patch.metric;
        if (ms->kind == INTERP_METRIC_LEGAL_MASS) {
            snprintf(want, sizeof want, "legal_mass");
        } else if (ms->kind == INTERP_METRIC_LOGIT_DIFF) {
            snprintf(want, sizeof want, "logit_diff:%s,%s", ct, rt);
        } else {
            const char *t = ms->tokens[0].kind == COORDINATOR_TOKEN_CLEAN_TOP ? ct
                            : ms->tokens[0].kind == COORDINATOR_TOKEN_CORRUPT_TOP
                                ? rt
                                : ms->tokens[0].text;
            snprintf(want, sizeof want, "%s:%s",
                     ms->kind == INTERP_METRIC_LOGIT ? "logit" : "logprob", t);
        }
        assert_string_equal(b->metric[i], want);
        const interp_patch_result *r = b->result[i];
        size_t numel = model_shape_numel(&r->shape);
        rows += numel;
        interp_patch_opts opts = interp_patch_opts_default();
        opts.kind = a->patch.kind;
        assert_int_equal(interp_metric_parse(m, want, &opts.metric, err), 0);
        opts.metric.normalize = ms->normalize;
        uint8_t *mask = NULL;
        if (opts.metric.kind == INTERP_METRIC_LEGAL_MASS) {
            size_t Tg = 0;
            assert_int_equal(interp_legal_mask(m, ucis[p->game], &mask, &Tg, err), 0);
            opts.metric.legal = mask + (T - 1) * V;
        }
        interp_patch_result *ref = NULL;
        int rc = interp_patch_run(s, clean, corrupted, T, &opts, &ref, err);
        bool equal_tops = ms->kind == INTERP_METRIC_LOGIT_DIFF && strcmp(ct, rt) == 0;
        if (equal_tops) {
            /* logit_diff of a token with itself: 0 in both runs, nothing to normalise by */
            assert_int_equal(rc, COMMON_ERR_INVALID);
            assert_true(ms->normalize);
        }
        if (rc != 0) {
            assert_true(ms->normalize);
            for (size_t k = 0; k < numel; k++) {
                assert_true(isnan(r->values[k]));
            }
            assert_true(r->clean_metric == r->corrupted_metric);
            nan_pairs++;
        } else {
            assert_true(model_shape_equal(&r->shape, &ref->shape));
            assert_string_equal(r->axes, ref->axes);
            assert_string_equal(r->labels, ref->labels);
            assert_true(close_rel(r->clean_metric, ref->clean_metric, 1e-5));
            assert_true(close_rel(r->corrupted_metric, ref->corrupted_metric, 1e-5));
            /* 1e-5 on the metric's scale: a normalised value is the metric divided by
             * m_clean - m_corrupted, which magnifies the rounding of a batched run */
            double den = fabs(ref->clean_metric - ref->corrupted_metric);
            double tol = ms->normalize ? 1e-5 * fmax(1.0, 1.0 / den)
                                       : 1e-5 * (1.0 + fabs(ref->corrupted_metric));
            for (size_t k = 0; k < numel; k++) {
                if (!(fabs((double)r->values[k] - (double)ref->values[k]) <= tol)) {
                    fail_msg("analysis %zu pair %zu value %zu: %.9g, alone %.9g (tol %g)",
                             w->analysis, i, k, (double)r->values[k], (double)ref->values[k], tol);
                }
            }
            ok_pairs++;
        }
        interp_patch_result_destroy(&ref);
        free(mask);
        free(clean);
        free(corrupted);
    }
    assert_int_equal(o->n_unnormalizable, nan_pairs);
    assert_int_equal(o->n_rows, rows);
    n_nan[w->analysis] += nan_pairs;
    n_values[w->analysis] += ok_pairs;
}

/* The legal_stats view of analysis `an` against one pass over the games, cmd_decompose-style:
 * decompose_resid (MLP mode with embeds, or embeds alone) then stack_head_results. */
static void check_legal(int an, bool heads, bool embeds_only) {
    model_session *s = worker_executor_session(ex);
    const model *m = worker_executor_model(ex);
    interp_legal_stats *ls = NULL;
    size_t n_ctx = (size_t)model_get_config(m)->n_ctx;
    for (size_t g = 0; g < N_GAMES; g++) {
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t T = 0, Tm = 0;
        interp_acts **acts = NULL;
        interp_stack *dec = NULL, *hs = NULL, *lg = NULL, *lh = NULL;
        assert_int_equal(interp_tokens_from_uci(m, ucis[g], &ids, &T, err), 0);
        assert_int_equal(interp_legal_mask(m, ucis[g], &mask, &Tm, err), 0);
        assert_int_equal(interp_run_acts(s, ids, NULL, 1, T, false, &acts, err), 0);
        assert_int_equal(interp_decompose_resid(m, acts[0], -1, false,
                                                embeds_only ? INTERP_DECOMP_ALL : INTERP_DECOMP_MLP,
                                                true, true, &dec, err),
                         0);
        assert_int_equal(interp_stack_to_logits(m, dec, &lg, err), 0);
        if (heads) {
            assert_int_equal(interp_stack_head_results(m, acts[0], -1, false, true, &hs, err), 0);
            assert_int_equal(interp_stack_to_logits(m, hs, &lh, err), 0);
        }
        size_t n_dec = embeds_only ? 2 : lg->n, n = n_dec + (heads ? lh->n : 0);
        if (ls == NULL) {
            const char *labels[64];
            assert_true(n <= 64);
            for (size_t i = 0; i < n; i++) {
                labels[i] = i < n_dec ? lg->labels[i] : lh->labels[i - n_dec];
            }
            assert_int_equal(interp_legal_stats_new(&ls, n, labels, n_ctx, err), 0);
        }
        /* one logit stack of the chosen rows */
        size_t per = T * lg->width;
        float *data = malloc(n * per * sizeof *data);
        memcpy(data, lg->data, n_dec * per * sizeof *data);
        if (heads) {
            memcpy(data + n_dec * per, lh->data, lh->n * per * sizeof *data);
        }
        interp_stack all = {n, T, lg->width, data, ls->labels};
        assert_int_equal(interp_legal_stats_add(ls, &all, mask, err), 0);
        free(data);
        interp_stack_destroy(&dec);
        interp_stack_destroy(&hs);
        interp_stack_destroy(&lg);
        interp_stack_destroy(&lh);
        interp_acts_destroy(&acts[0]);
        free(acts);
        free(ids);
        free(mask);
    }
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(coordinator_store_db(store),
                                        "SELECT component, pos, statistic, value, count, min, max "
                                        "FROM legal_stats WHERE sweep = 'all' AND analysis = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int(st, 1, an);
    static const char *const stats[4] = {"min_legal", "max_illegal", "mean_legal", "mean_illegal"};
    size_t rows = 0, cells = 0, cells_all = ls->n_comp * ls->T;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        const char *comp = (const char *)sqlite3_column_text(st, 0);
        size_t c = 0;
        while (c < ls->n_comp && strcmp(ls->labels[c], comp) != 0) {
            c++;
        }
        assert_true(c < ls->n_comp);
        size_t t = (size_t)sqlite3_column_int64(st, 1);
        int k = 0;
        while (k < 4 && strcmp(stats[k], (const char *)sqlite3_column_text(st, 2)) != 0) {
            k++;
        }
        assert_true(k < 4 && t < ls->T);
        size_t at = (size_t)k * cells_all + c * ls->T + t;
        uint64_t count = ls->count[c * ls->T + t];
        assert_int_equal(sqlite3_column_int64(st, 4), (int64_t)count);
        assert_true(close_rel(sqlite3_column_double(st, 3), ls->sum[at] / (double)count, 1e-6));
        assert_true(close_rel(sqlite3_column_double(st, 5), ls->min[at], 1e-6));
        assert_true(close_rel(sqlite3_column_double(st, 6), ls->max[at], 1e-6));
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < cells_all; i++) {
        cells += ls->count[i] > 0;
    }
    assert_true(cells > 0);
    assert_int_equal(rows, 4 * cells);
    interp_legal_stats_destroy(&ls);
}

/* The neuron_stats view against one pass over the games. */
static void check_neurons(int an) {
    model_session *s = worker_executor_session(ex);
    const model *m = worker_executor_model(ex);
    const model_config *cfg = model_get_config(m);
    interp_neuron_stats *ns = NULL;
    assert_int_equal(interp_neuron_stats_new(&ns, cfg, 5, -5, err), 0);
    for (size_t g = 0; g < N_GAMES; g++) {
        int32_t *ids = NULL;
        uint8_t *phases = NULL;
        size_t T = 0, Tp = 0;
        interp_acts **acts = NULL;
        assert_int_equal(interp_tokens_from_uci(m, ucis[g], &ids, &T, err), 0);
        assert_int_equal(interp_phases(ucis[g], &phases, &Tp, err), 0);
        assert_int_equal(interp_run_acts(s, ids, NULL, 1, T, false, &acts, err), 0);
        assert_int_equal(interp_neuron_stats_add(ns, acts[0], phases, err), 0);
        interp_acts_destroy(&acts[0]);
        free(acts);
        free(ids);
        free(phases);
    }
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(coordinator_store_db(store),
                           "SELECT layer, neuron, phase, mean, count FROM neuron_stats "
                           "WHERE sweep = 'all' AND analysis = ?",
                           -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_int(st, 1, an);
    static const char *const groups[6] = {"all",      "slice",      "white_from",
                                          "white_to", "black_from", "black_to"};
    size_t rows = 0, L = ns->L, M = ns->M, groups_present = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        size_t l = (size_t)sqlite3_column_int64(st, 0), n = (size_t)sqlite3_column_int64(st, 1);
        int g = 0;
        while (g < 6 && strcmp(groups[g], (const char *)sqlite3_column_text(st, 2)) != 0) {
            g++;
        }
        assert_true(g < 6 && l < L && n < M);
        assert_int_equal(sqlite3_column_int64(st, 4), (int64_t)ns->count[g]);
        assert_true(close_rel(sqlite3_column_double(st, 3),
                              ns->sum[((size_t)g * L + l) * M + n] / (double)ns->count[g], 1e-6));
    }
    sqlite3_finalize(st);
    for (int g = 0; g < 6; g++) {
        groups_present += ns->count[g] > 0;
    }
    assert_true(groups_present >= 5);
    assert_int_equal(rows, groups_present * L * M);
    interp_neuron_stats_destroy(&ns);
}

/* The predictions view against interp_predictions of each game. */
static void check_predictions(int an, size_t k) {
    model_session *s = worker_executor_session(ex);
    const model *m = worker_executor_model(ex);
    const model_tokenizer *tok = model_get_tokenizer(m);
    size_t V = (size_t)model_get_config(m)->d_vocab, total = 0;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(coordinator_store_db(store),
                                        "SELECT token, logprob, legal FROM predictions WHERE "
                                        "sweep = 'all' AND analysis = ? AND game = ? AND pos = ? "
                                        "AND rank = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    for (size_t g = 0; g < N_GAMES; g++) {
        int32_t *ids = NULL;
        uint8_t *mask = NULL;
        size_t T = 0, Tm = 0;
        interp_acts **acts = NULL;
        interp_predictions *p = NULL;
        assert_int_equal(interp_tokens_from_uci(m, ucis[g], &ids, &T, err), 0);
        assert_int_equal(interp_legal_mask(m, ucis[g], &mask, &Tm, err), 0);
        assert_int_equal(interp_run_acts(s, ids, NULL, 1, T, false, &acts, err), 0);
        const float *logits = interp_acts_get(acts[0], (model_hook){MODEL_HOOK_LOGITS, -1}, NULL);
        assert_int_equal(interp_predictions_new(&p, logits, T, V, mask, k, err), 0);
        for (size_t t = 0; t < T; t++) {
            for (size_t r = 0; r < k; r++) {
                sqlite3_reset(st);
                sqlite3_bind_int(st, 1, an);
                sqlite3_bind_int64(st, 2, (sqlite3_int64)g);
                sqlite3_bind_int64(st, 3, (sqlite3_int64)t);
                sqlite3_bind_int64(st, 4, (sqlite3_int64)(r + 1));
                assert_int_equal(sqlite3_step(st), SQLITE_ROW);
                int32_t id = p->top_ids[t * k + r];
                assert_string_equal((const char *)sqlite3_column_text(st, 0),
                                    model_tokenizer_token(tok, id));
                /* a batch of padded games rounds differently from a game alone */
                assert_true(
                    close_rel(sqlite3_column_double(st, 1), p->top_logprobs[t * k + r], 1e-5));
                assert_int_equal(sqlite3_column_int(st, 2), mask[t * V + (size_t)id] != 0);
                total++;
            }
        }
        interp_predictions_destroy(&p);
        interp_acts_destroy(&acts[0]);
        free(acts);
        free(ids);
        free(mask);
    }
    sqlite3_finalize(st);
    char sql[128];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM predictions WHERE sweep = 'all' AND analysis = %d", an);
    assert_int_equal(query_int(sql), (int64_t)total);
}

/* The whole sweep through the store with one executor, then every result checked. */
static void test_sweep(void **state) {
    (void)state;
    model_session *session = worker_executor_session(ex);
    const model *mdl = worker_executor_model(ex);
    coordinator_lease *l = NULL;
    size_t n = 0, n_nan[8] = {0}, n_ok[8] = {0}, nan_rows = 0;
    size_t per_kind[4] = {0};
    assert_int_equal(coordinator_tasks_claim(store, "w", 10000, 0, 1, &l, &n, err), 0);
    assert_true(n > 8);
    for (size_t i = 0; i < n; i++) {
        coordinator_work *w = NULL;
        if (coordinator_work_load(store, spec, l[i].job_id, l[i].body, l[i].body_len, &w, err) !=
            0) {
            fail_msg("work %s: %s", l[i].key, err);
        }
        worker_output *o = NULL;
        if (worker_execute(ex, w->params, w, &o, err) != 0) {
            fail_msg("execute %s: %s", l[i].key, err);
        }
        assert_int_equal(o->kind, w->kind);
        per_kind[w->kind]++;
        if (w->kind == COORDINATOR_ANALYSIS_PATCH) {
            check_patch(w->params, w, o, n_nan, n_ok);
            for (size_t p = 0; p < o->results.patch->n; p++) {
                if (isnan(o->results.patch->result[p]->values[0])) {
                    nan_rows += model_shape_numel(&o->results.patch->result[p]->shape);
                }
            }
        }
        coordinator_fence f;
        assert_int_equal(
            coordinator_task_complete(store, l[i].task_id, l[i].epoch, &o->results, &f, err), 0);
        assert_int_equal(f, COORDINATOR_STORED);
        worker_output_destroy(&o);
        assert_null(o);
        coordinator_work_destroy(&w);
        /* one engine for every task */
        assert_ptr_equal(worker_executor_session(ex), session);
        assert_ptr_equal(worker_executor_model(ex), mdl);
    }
    assert_int_equal(worker_executor_tasks_run(ex), n);
    for (int k = 0; k < 4; k++) {
        assert_true(per_kind[k] > 0);
    }
    coordinator_leases_free(l, n);
    assert_int_equal(query_int("SELECT COUNT(*) FROM task WHERE state <> 'done'"), 0);
    /* some pairs had equal tops and so no normalised value, most had one; the other patch
     * analyses have values for every pair */
    assert_true(n_nan[0] > 0);
    assert_true(n_ok[0] > n_nan[0]);
    for (int an = 1; an < 8; an++) {
        assert_int_equal(n_nan[an], 0);
    }
    assert_true(n_ok[1] > 0 && n_ok[6] > 0 && n_ok[7] > 0);
    assert_int_equal(query_int("SELECT COUNT(*) FROM patch_effects WHERE sweep = 'all' AND "
                               "value IS NULL"),
                     (int64_t)nan_rows);
    check_legal(2, true, false);
    check_legal(5, false, true);
    check_neurons(3);
    check_predictions(4, 3);
}

/* The NaN results of unnormalisable pairs have the shape, axes and labels interp gives. */
static void test_nan_result_layout(void **state) {
    (void)state;
    model_session *s = worker_executor_session(ex);
    const model *m = worker_executor_model(ex);
    int32_t *clean = prompt_of(m, 1, 6);
    int32_t corrupted[6];
    memcpy(corrupted, clean, sizeof corrupted);
    corrupted[5] = clean[5] == 10 ? 11 : 10;
    for (int k = 0; k < INTERP_PATCH_KIND_COUNT; k++) {
        interp_patch_opts opts = interp_patch_opts_default();
        opts.kind = (interp_patch_kind)k;
        opts.metric.token = 12;
        interp_patch_result *ref = NULL, *r = NULL;
        assert_int_equal(interp_patch_run(s, clean, corrupted, 6, &opts, &ref, err), 0);
        assert_int_equal(interp_patch_result_new(opts.kind, model_get_config(m), 6, &r, err), 0);
        assert_true(model_shape_equal(&r->shape, &ref->shape));
        assert_string_equal(r->axes, ref->axes);
        assert_string_equal(r->labels, ref->labels);
        for (size_t i = 0; i < model_shape_numel(&r->shape); i++) {
            assert_true(isnan(r->values[i]));
        }
        interp_patch_result_destroy(&ref);
        interp_patch_result_destroy(&r);
    }
    free(clean);
}

/* Every bit combination's stack is the matching rows of the CLI's one (decompose_resid ALL
 * with embeds, then stack_head_results), row for row; the hooks listed suffice. */
static void test_legal_components(void **state) {
    (void)state;
    model_session *s = worker_executor_session(ex);
    const model *m = worker_executor_model(ex);
    const model_config *cfg = model_get_config(m);
    int32_t *ids = NULL;
    size_t T = 0;
    assert_int_equal(interp_tokens_from_uci(m, ucis[2], &ids, &T, err), 0);
    interp_acts **acts = NULL;
    assert_int_equal(interp_run_acts(s, ids, NULL, 1, T, false, &acts, err), 0);
    interp_stack *dec = NULL, *heads = NULL;
    assert_int_equal(
        interp_decompose_resid(m, acts[0], -1, false, INTERP_DECOMP_ALL, true, true, &dec, err), 0);
    assert_int_equal(interp_stack_head_results(m, acts[0], -1, false, true, &heads, err), 0);
    for (unsigned bits = 1; bits < 16; bits++) {
        /* the activations only the listed hooks give */
        model_hook hooks[64];
        size_t nh = worker_legal_hooks(cfg, bits, hooks, 64);
        assert_true(nh <= 64);
        interp_acts *only = NULL;
        const int32_t *rows[1] = {ids};
        assert_int_equal(worker_run_games(s, rows, &T, 1, hooks, nh, false, &only, err), 0);
        interp_stack *st = NULL;
        if (worker_legal_components(m, only, bits, &st, err) != 0) {
            fail_msg("bits %u: %s", bits, err);
        }
        size_t r = 0, per = T * (size_t)cfg->d_model;
        const interp_stack *srcs[2] = {dec, heads};
        for (int k = 0; k < 2; k++) {
            for (size_t i = 0; i < srcs[k]->n; i++) {
                const char *lab = srcs[k]->labels[i];
                bool want = k == 1                         ? (bits & COORDINATOR_COMP_HEADS)
                            : strstr(lab, "embed") != NULL ? (bits & COORDINATOR_COMP_EMBEDS)
                            : strstr(lab, "attn") != NULL  ? (bits & COORDINATOR_COMP_ATTNS)
                                                           : (bits & COORDINATOR_COMP_MLPS);
                if (!want) {
                    continue;
                }
                assert_true(r < st->n);
                assert_string_equal(st->labels[r], lab);
                assert_memory_equal(st->data + r * per, srcs[k]->data + i * per,
                                    per * sizeof(float));
                r++;
            }
        }
        assert_int_equal(r, st->n);
        interp_stack_destroy(&st);
        interp_acts_destroy(&only);
    }
    assert_int_equal(worker_legal_components(m, acts[0], 0, &dec, err), COMMON_ERR_INVALID);
    interp_stack_destroy(&dec);
    interp_stack_destroy(&heads);
    interp_acts_destroy(&acts[0]);
    free(acts);
    free(ids);
}

/* Batched games of different lengths give each game's activations as a run of it alone. */
static void test_run_games_padding(void **state) {
    (void)state;
    model_session *s = worker_executor_session(ex);
    const model *m = worker_executor_model(ex);
    int32_t *ids[3];
    size_t T[3];
    for (int g = 0; g < 3; g++) {
        assert_int_equal(interp_tokens_from_uci(m, ucis[g], &ids[g], &T[g], err), 0);
    }
    T[1] = T[1] > 5 ? T[1] - 4 : T[1]; /* a shorter prompt in the middle */
    interp_acts *acts[3];
    assert_int_equal(
        worker_run_games(s, (const int32_t *const *)ids, T, 3, NULL, 0, true, acts, err), 0);
    for (int g = 0; g < 3; g++) {
        interp_acts **alone = NULL;
        assert_int_equal(interp_run_acts(s, ids[g], NULL, 1, T[g], false, &alone, err), 0);
        assert_int_equal(interp_acts_positions(acts[g]), T[g]);
        model_hook hs[2] = {{MODEL_HOOK_LOGITS, -1}, {MODEL_HOOK_MLP_POST, 1}};
        for (int h = 0; h < 2; h++) {
            size_t na = 0, nb = 0;
            const float *x = interp_acts_get(acts[g], hs[h], &na);
            const float *y = interp_acts_get(alone[0], hs[h], &nb);
            assert_non_null(x);
            assert_non_null(y);
            assert_int_equal(na, nb);
            for (size_t i = 0; i < na; i++) {
                assert_true(close_rel(x[i], y[i], 1e-5));
            }
        }
        interp_acts_destroy(&alone[0]);
        free(alone);
        interp_acts_destroy(&acts[g]);
        free(ids[g]);
    }
}

static void test_refusals(void **state) {
    (void)state;
    worker_executor *e = NULL;
    /* backend names: unknown ones, and malformed device numbers (whether this build has the
     * GPU backend or not; "cuda:0" itself depends on the machine) */
    assert_int_equal(worker_executor_new(&e, MODEL_DIR, "tpu", 1, err), COMMON_ERR_UNSUPPORTED);
    assert_null(e);
    assert_int_equal(worker_executor_new(&e, MODEL_DIR, "cudax", 1, err), COMMON_ERR_UNSUPPORTED);
    assert_int_equal(worker_executor_new(&e, MODEL_DIR, "cuda:", 1, err), COMMON_ERR_INVALID);
    assert_int_equal(worker_executor_new(&e, MODEL_DIR, "cuda:1x", 1, err), COMMON_ERR_INVALID);
    assert_int_equal(worker_executor_new(&e, MODEL_DIR, "cuda:-1", 1, err), COMMON_ERR_INVALID);
    assert_null(e);
    assert_int_equal(worker_executor_new(&e, "/nonexistent-model-dir", "cpu", 1, err),
                     COMMON_ERR_NOT_FOUND);
    assert_null(e);
    worker_executor_destroy(&e);
    worker_output_destroy(NULL);
    /* a work of one kind with the analysis of another */
    coordinator_work w;
    memset(&w, 0, sizeof w);
    w.kind = COORDINATOR_ANALYSIS_PREDICTIONS;
    worker_output *o = NULL;
    assert_int_equal(worker_execute(ex, &spec->analyses[2], &w, &o, err), COMMON_ERR_INVALID);
    assert_null(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sweep),
        cmocka_unit_test(test_nan_result_layout),
        cmocka_unit_test(test_legal_components),
        cmocka_unit_test(test_run_games_padding),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
