/*
 * test_plot_cli: `chesslens plot` for every kind and `chesslens report`, through the built
 * binary, on a real sweep of the bundled model (plot_sweep.h), checked against numbers that
 * come another way:
 *
 * - patch: one <title> per cell of every component panel, TL's labels (layer numbers, L0H0 ...,
 *   the game's tokens with --game), and each cell's mean equal to AVG(value) in SQL;
 * - logit-lens: TL's component labels; the direct logit attributions of the decompose_resid
 *   rows at each position sum to the logit of the actual next token that `chesslens forward`
 *   computes (the rows sum to the final residual, b_U is zero in GPT-2);
 * - board: 64 squares, every legal next square of chess/ (n_legal of game_positions) ringed,
 *   both kings on the board, and the most probable square the sweep's own top-1 prediction;
 * - attn-diff: a row per head, and each head's differences summing to 0 over the source
 *   positions (both patterns are distributions), nonzero somewhere;
 * - neurons, legal: the shown values equal the views' numbers;
 * - report: every inline SVG well-formed, no script, no link, no URL, the pretty spec and the
 *   progress on the page;
 * - errors: a kind whose data the sweep lacks, another model's weights, an unknown sweep, a
 *   usage error; a failed plot leaves an existing output untouched.
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
#include <jansson.h>
#include <sqlite3.h>

#include "../cli/cli_run.h"
#include "model/model.h"
#include "plot_sweep.h"
#include "plot_test_util.h"

#define MODEL CHESSLENS_SOURCE_DIR "/models/chess-tiny"

static const char *db_path;

static int setup(void **state) {
    (void)state;
    db_path = plot_sweep_db();
    return 0;
}

/* `chesslens plot --db DB SWEEP ARGS --out NAME.svg` must succeed; returns the summary of the
 * SVG (json_decref) and, when svg is not NULL, its text (caller frees). */
static json_t *plot(const char *sweep, const char *args, const char *name, char **svg) {
    char cmd[4096], path[2048];
    snprintf(path, sizeof path, "%s/%s.svg", cli_tmpdir(), name);
    snprintf(cmd, sizeof cmd, "plot --db '%s' %s %s --out '%s'", db_path, sweep, args, path);
    int status = 0;
    char *out = cli_run(cmd, &status);
    if (status != 0) {
        fail_msg("chesslens %s: exit %d\n%s", cmd, status, out != NULL ? out : "");
    }
    free(out);
    out = plot_test_check(path, "", &status);
    if (status != 0) {
        fail_msg("%s: not well-formed: %s", path, out != NULL ? out : "");
    }
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    free(out);
    if (svg != NULL) {
        size_t len = 0;
        char err[COMMON_ERR_LEN];
        assert_int_equal(common_read_file(path, svg, &len, err), 0);
        assert_int_equal(strncmp(*svg, "<?xml", 5), 0);
    }
    return j;
}

static bool has_string(json_t *array, const char *s) {
    for (size_t i = 0; i < json_array_size(array); i++) {
        if (strcmp(json_string_value(json_array_get(array, i)), s) == 0) {
            return true;
        }
    }
    return false;
}

static void expect_texts(json_t *j, const char *const *want, size_t n) {
    json_t *texts = json_object_get(j, "texts");
    for (size_t i = 0; i < n; i++) {
        if (!has_string(texts, want[i])) {
            fail_msg("no label '%s' in the figure", want[i]);
        }
    }
}

/* The value after the last ": " of a cell title ("... e4: -0.125 (n=3)"); NaN for "no value". */
static double title_value(const char *title) {
    const char *p = NULL;
    for (const char *q = strstr(title, ": "); q != NULL; q = strstr(q + 1, ": ")) {
        p = q;
    }
    assert_non_null(p);
    char *end = NULL;
    double v = strtod(p + 2, &end);
    return end == p + 2 ? NAN : v;
}

/* The title that starts with prefix, or fails. */
static const char *find_title(json_t *j, const char *prefix) {
    json_t *titles = json_object_get(j, "titles");
    for (size_t i = 0; i < json_array_size(titles); i++) {
        const char *t = json_string_value(json_array_get(titles, i));
        if (strncmp(t, prefix, strlen(prefix)) == 0) {
            return t;
        }
    }
    fail_msg("no cell title starts with '%s'", prefix);
    return NULL;
}

static sqlite3 *open_db(void) {
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open_v2(db_path, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    return h;
}

static double query_double(const char *sql) {
    sqlite3 *h = open_db();
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(h));
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    double v = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

static char *query_text(const char *sql) {
    sqlite3 *h = open_db();
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(h));
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char *v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

/* A value shown with 4 significant digits against the exact one. */
static void assert_close4(double shown, double exact, const char *what) {
    if (!(fabs(shown - exact) <= 6e-4 * fabs(exact) + 1e-9)) {
        fail_msg("%s: the figure shows %.6g, the store holds %.9g", what, shown, exact);
    }
}

static void test_patch_block_every(void **state) {
    (void)state;
    json_t *j = plot(PLOT_SWEEP, "--kind patch", "patch", NULL);
    /* three component panels of 4 layers x 26 positions (the largest cut-off), a title each */
    assert_int_equal(json_integer_value(json_object_get(j, "panels")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 3 * 4 * 26);
    assert_int_equal(json_array_size(json_object_get(j, "titles")), 3 * 4 * 26);
    const char *labels[] = {"resid_pre", "attn_out", "mlp_out", "0",
                            "3",         "25",       "layer",   "position"};
    expect_texts(j, labels, sizeof labels / sizeof labels[0]);
    const char *t = find_title(j, "mlp_out 0, pos 19:");
    double exact = query_double("SELECT AVG(value) FROM patch_effects WHERE sweep = '" PLOT_SWEEP
                                "' AND analysis = 0 AND component = 'mlp_out' AND layer = 0"
                                " AND pos = 19");
    assert_close4(title_value(t), exact, t);
    double pairs = query_double("SELECT COUNT(value) FROM patch_effects WHERE sweep = '" PLOT_SWEEP
                                "' AND analysis = 0 AND component = 'mlp_out' AND layer = 0"
                                " AND pos = 19");
    char n[32];
    snprintf(n, sizeof n, "(n=%.0f)", pairs);
    assert_non_null(strstr(t, n));
    assert_true(pairs > 4);
    json_decref(j);
}

static void test_patch_heads_with_game_tokens(void **state) {
    (void)state;
    json_t *j = plot(PLOT_SWEEP, "--kind patch --analysis 1 --game 0 --cutoff 20", "heads", NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 16 * 20);
    /* rows are TL's head labels; columns the game's tokens */
    char *uci = query_text("SELECT uci FROM games WHERE dataset = 'g' AND game = 0");
    char first_from[3] = {uci[0], uci[1], '\0'}, first_to[3] = {uci[2], uci[3], '\0'};
    const char *labels[] = {"L0H0", "L0H3", "L3H3", "<s>", first_from, first_to, "layer, head"};
    expect_texts(j, labels, sizeof labels / sizeof labels[0]);
    char prefix[64];
    snprintf(prefix, sizeof prefix, "L2H1, pos 1 (%s):", first_from);
    find_title(j, prefix);
    free(uci);
    json_decref(j);
    /* a patch kind without components, corrupted with another game: one panel */
    j = plot(PLOT_SWEEP, "--kind patch --analysis 2", "resid", NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "panels")), 1);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 4 * 20);
    json_decref(j);
}

/* Reads the logits [T, V] and tokens [T] of `chesslens forward` on game 0. */
static void forward_game0(float **logits, int32_t **tokens, size_t *T, size_t *V) {
    char *uci = query_text("SELECT uci FROM games WHERE dataset = 'g' AND game = 0");
    char cmd[4096], path[2048];
    snprintf(path, sizeof path, "%s/game0.safetensors", cli_tmpdir());
    snprintf(cmd, sizeof cmd, "forward --model '%s' --uci '%s' --out '%s'", MODEL, uci, path);
    int status = 0;
    free(cli_run(cmd, &status));
    assert_int_equal(status, 0);
    free(uci);
    model_st_file *f = NULL;
    char err[COMMON_ERR_LEN];
    assert_int_equal(model_st_open(&f, path, err), 0);
    long i = model_st_find(f, "logits");
    assert_true(i >= 0);
    model_dtype dt;
    model_shape sh;
    model_st_info(f, (size_t)i, &dt, &sh);
    *T = sh.dims[0];
    *V = sh.dims[1];
    *logits = malloc(*T * *V * sizeof **logits);
    *tokens = malloc(*T * sizeof **tokens);
    assert_int_equal(model_st_read_f32(f, "logits", *logits, *T * *V, NULL, err), 0);
    assert_int_equal(model_st_read_i32(f, "tokens", *tokens, *T, NULL, err), 0);
    model_st_close(&f);
}

static void test_logit_lens_sums_to_the_next_token_logit(void **state) {
    (void)state;
    json_t *j = plot(PLOT_SWEEP, "--kind logit-lens --game 0 --cutoff 20", "lens", NULL);
    const char *labels[] = {"embed",     "pos_embed", "0_attn_out", "0_mlp_out",
                            "3_mlp_out", "L0H0",      "L3H3"};
    expect_texts(j, labels, sizeof labels / sizeof labels[0]);
    /* decompose_resid: 2 + 2 L rows; heads: L x H rows; 20 positions each have a next token */
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), (2 + 8) * 20 + 16 * 20);
    float *logits = NULL;
    int32_t *tokens = NULL;
    size_t T = 0, V = 0;
    forward_game0(&logits, &tokens, &T, &V);
    assert_true(T > 20);
    double sums[20] = {0};
    size_t seen[20] = {0};
    json_t *titles = json_object_get(j, "titles");
    for (size_t i = 0; i < json_array_size(titles); i++) {
        const char *t = json_string_value(json_array_get(titles, i));
        const char *p = strstr(t, ", pos ");
        unsigned pos = 0;
        if (strncmp(t, "decompose_resid ", 16) == 0 && p != NULL &&
            sscanf(p, ", pos %u", &pos) == 1) {
            assert_true(pos < 20);
            sums[pos] += title_value(t);
            seen[pos]++;
        }
    }
    /* fold_ln moved ln_final's bias into b_U: logits = sum of the rows' DLA + b_U */
    model *m = NULL;
    char err[COMMON_ERR_LEN];
    assert_int_equal(model_load(&m, MODEL, NULL, err), 0);
    model_shape bs;
    const float *b_U = model_param(m, "unembed.b_U", &bs);
    assert_non_null(b_U);
    assert_int_equal(bs.dims[0], V);
    for (size_t t = 0; t < 20; t++) {
        assert_int_equal(seen[t], 10);
        double want = logits[t * V + (size_t)tokens[t + 1]] - b_U[tokens[t + 1]];
        if (fabs(sums[t] - want) > 0.02 + 2e-3 * fabs(want)) {
            fail_msg("position %zu: the attributions sum to %.5g, the next token's logit is %.5g",
                     t, sums[t], want);
        }
    }
    model_destroy(&m);
    free(logits);
    free(tokens);
    json_decref(j);
}

static void test_board_marks_the_legal_squares(void **state) {
    (void)state;
    /* the prompt of 21 tokens ends with black's 10th move; position 20 is its to-square */
    char *svg = NULL;
    json_t *j = plot(PLOT_SWEEP, "--kind board --game 1 --cutoff 21", "board", &svg);
    assert_int_equal(json_integer_value(json_object_get(j, "squares")), 64);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 64);
    double n_legal = query_double("SELECT n_legal FROM game_positions WHERE dataset = 'g'"
                                  " AND game = 1 AND pos = 20");
    assert_true(n_legal >= 1);
    assert_int_equal(json_integer_value(json_object_get(j, "legal")), (json_int_t)n_legal);
    json_t *pieces = json_object_get(j, "pieces");
    assert_true(json_array_size(pieces) >= 2 && json_array_size(pieces) <= 32);
    size_t kings[2] = {0, 0};
    for (size_t i = 0; i < json_array_size(pieces); i++) {
        const char *p = json_string_value(json_array_get(pieces, i));
        kings[0] += strcmp(p, "white \xE2\x99\x9A") == 0;
        kings[1] += strcmp(p, "black \xE2\x99\x9A") == 0;
    }
    assert_int_equal(kings[0], 1);
    assert_int_equal(kings[1], 1);
    /* the most probable square is the sweep's own top-1 prediction after position 20 (when
     * that is a square) */
    char *top = query_text("SELECT token FROM predictions WHERE sweep = '" PLOT_SWEEP
                           "' AND game = 1 AND pos = 20 AND rank = 1");
    double best = -INFINITY;
    char best_sq[3] = "";
    json_t *titles = json_object_get(j, "titles");
    double mass = 0;
    for (size_t i = 0; i < json_array_size(titles); i++) {
        const char *t = json_string_value(json_array_get(titles, i));
        double v = 0;
        if (sscanf(t + 2, ": log p(next square) %lf", &v) == 1) {
            mass += exp(v);
            if (v > best) {
                best = v;
                memcpy(best_sq, t, 2);
            }
        }
    }
    assert_true(mass > 0.5 && mass < 1.001); /* log-softmax over the vocabulary, squares only */
    if (strlen(top) == 2) {
        assert_string_equal(best_sq, top);
    }
    double lp = query_double("SELECT logprob FROM predictions WHERE sweep = '" PLOT_SWEEP
                             "' AND game = 1 AND pos = 20 AND rank = 1");
    if (strlen(top) == 2) {
        assert_close4(best, lp, "top square log-prob");
    }
    free(top);
    free(svg);
    json_decref(j);
}

static void test_attn_diff_rows_sum_to_zero(void **state) {
    (void)state;
    json_t *j = plot(PLOT_SWEEP, "--kind attn-diff --game 2 --cutoff 26", "attn", NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 16 * 26);
    const char *labels[] = {"L0H0", "L1H2", "L3H3", "layer, head", "source (key) position"};
    expect_texts(j, labels, sizeof labels / sizeof labels[0]);
    double sums[16] = {0}, mag = 0;
    json_t *titles = json_object_get(j, "titles");
    for (size_t i = 0; i < json_array_size(titles); i++) {
        const char *t = json_string_value(json_array_get(titles, i));
        unsigned l = 0, h = 0;
        assert_int_equal(sscanf(t, "L%uH%u", &l, &h), 2);
        double v = title_value(t);
        sums[l * 4 + h] += v;
        mag += fabs(v);
    }
    for (size_t r = 0; r < 16; r++) {
        if (fabs(sums[r]) > 5e-3) {
            fail_msg("head row %zu sums to %g, not 0", r, sums[r]);
        }
    }
    assert_true(mag > 1e-3); /* the corruption changes some attention */
    /* the corrupted position is the last one, marked, and named in its column's hover text */
    find_title(j, "L0H0, src pos 25 (");
    assert_non_null(strstr(find_title(j, "L0H0, src pos 25 ("), "corrupted: "));
    json_decref(j);
    /* another game as the corruption (analysis 2) */
    j = plot(PLOT_SWEEP, "--kind attn-diff --analysis 2", "attn_game", NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 16 * 20);
    json_decref(j);
}

static void test_neurons_match_the_view(void **state) {
    (void)state;
    json_t *j = plot(PLOT_SWEEP, "--kind neurons", "neurons", NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "panels")), 4);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 4 * 32 * 5);
    const char *labels[] = {"layer 0", "layer 3", "slice", "white_from", "black_to"};
    expect_texts(j, labels, sizeof labels / sizeof labels[0]);
    const char *t = find_title(j, "layer 2 L2N");
    unsigned neuron = 0;
    char phase[32];
    assert_int_equal(sscanf(t, "layer 2 L2N%u, %31[a-z_]:", &neuron, phase), 2);
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT p.mean - a.mean FROM neuron_stats p JOIN neuron_stats a ON a.sweep = p.sweep"
             " AND a.layer = p.layer AND a.neuron = p.neuron AND a.phase = 'all'"
             " WHERE p.sweep = '" PLOT_SWEEP "' AND p.layer = 2 AND p.neuron = %u"
             " AND p.phase = '%s'",
             neuron, phase);
    assert_close4(title_value(t), query_double(sql), t);
    json_decref(j);
    j = plot(PLOT_SWEEP, "--kind neurons --top 5", "neurons5", NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 4 * 5 * 5);
    json_decref(j);
}

static void test_legal_matches_the_view(void **state) {
    (void)state;
    json_t *j = plot(PLOT_SWEEP, "--kind legal", "legal", NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "panels")), 2);
    const char *labels[] = {"embed", "pos_embed", "L0H0", "0_attn_out", "0_mlp_out", "3_mlp_out"};
    expect_texts(j, labels, sizeof labels / sizeof labels[0]);
    const char *t = find_title(j, "mean legal - mean illegal 1_mlp_out, pos 7:");
    double exact = query_double(
        "SELECT a.value - b.value FROM legal_stats a JOIN legal_stats b ON b.sweep = a.sweep"
        " AND b.component = a.component AND b.pos = a.pos WHERE a.sweep = '" PLOT_SWEEP "'"
        " AND a.component = '1_mlp_out' AND a.pos = 7 AND a.statistic = 'mean_legal'"
        " AND b.statistic = 'mean_illegal'");
    assert_close4(title_value(t), exact, t);
    json_decref(j);
}

static void test_report_is_self_contained(void **state) {
    (void)state;
    char path[2048], cmd[4096];
    snprintf(path, sizeof path, "%s/report.html", cli_tmpdir());
    snprintf(cmd, sizeof cmd, "report --db '%s' " PLOT_SWEEP " --out '%s'", db_path, path);
    int status = 0;
    char *out = cli_run(cmd, &status);
    if (status != 0) {
        fail_msg("chesslens %s: exit %d\n%s", cmd, status, out);
    }
    assert_null(strstr(out, "not drawn")); /* every figure of this sweep can be drawn */
    free(out);
    out = plot_test_check(path, "--html", &status);
    if (status != 0) {
        fail_msg("%s: an inline SVG is not well-formed: %s", path, out);
    }
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    free(out);
    /* 3 patch heatmaps, logit lens, board, attention diff, legal stats, neurons */
    assert_int_equal(json_integer_value(json_object_get(j, "documents")), 8);
    assert_int_equal(json_integer_value(json_object_get(j, "html_scripts")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "html_links")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "html_urls")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "ids")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "squares")), 64);
    json_decref(j);
    char *html = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN];
    assert_int_equal(common_read_file(path, &html, &len, err), 0);
    assert_non_null(strstr(html, "<h1>Sweep <code>" PLOT_SWEEP "</code></h1>"));
    assert_non_null(strstr(html, "\"kind\": \"legal_stats\"")); /* the spec, pretty */
    assert_non_null(strstr(html, "\"analyses\": [\n"));
    assert_non_null(strstr(html, "tasks done (100%)"));
    assert_non_null(strstr(html, "Top-1 prediction legal"));
    assert_non_null(strstr(html, "Content-Security-Policy"));
    assert_null(strstr(html, "<?xml"));
    free(html);
}

/* `chesslens ARGS` must fail with code and say what. */
static void expect_failure(const char *args, int code, const char *what) {
    int status = 0;
    char *out = cli_run(args, &status);
    assert_non_null(out);
    if (status != code || strstr(out, what) == NULL) {
        fail_msg("chesslens %s: exit %d (want %d), output lacks '%s':\n%s", args, status, code,
                 what, out);
    }
    free(out);
}

static void test_missing_data_and_other_weights_are_errors(void **state) {
    (void)state;
    char cmd[16384], out[1024];
    snprintf(out, sizeof out, "%s/kept.svg", cli_tmpdir());
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    fputs("old", f);
    fclose(f);
    static const char *const lacking[][2] = {
        {"patch", "sweep 'bare' has no patch analysis"},
        {"attn-diff", "sweep 'bare' has no patch analysis"},
        {"neurons", "sweep 'bare' has no neuron_stats analysis"},
        {"legal", "sweep 'bare' has no legal_stats analysis"},
    };
    for (size_t i = 0; i < sizeof lacking / sizeof lacking[0]; i++) {
        snprintf(cmd, sizeof cmd, "plot --db '%s' " PLOT_SWEEP_BARE " --kind %s --out '%s'",
                 db_path, lacking[i][0], out);
        expect_failure(cmd, 1, lacking[i][1]);
    }
    /* the output was left as it was */
    char *kept = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN];
    assert_int_equal(common_read_file(out, &kept, &len, err), 0);
    assert_string_equal(kept, "old");
    free(kept);
    snprintf(cmd, sizeof cmd, "plot --db '%s' " PLOT_SWEEP " --kind patch --game 7 --out '%s'",
             db_path, out);
    expect_failure(cmd, 1, "no patch_effects rows for analysis 0, game 7");
    snprintf(cmd, sizeof cmd, "plot --db '%s' " PLOT_SWEEP " --kind patch --analysis 3 --out '%s'",
             db_path, out);
    expect_failure(cmd, 1, "analysis 3 of sweep 'plots' is a legal_stats analysis, not patch");
    snprintf(cmd, sizeof cmd, "plot --db '%s' nosuch --kind patch --out '%s'", db_path, out);
    expect_failure(cmd, 1, "no sweep 'nosuch'");
    snprintf(cmd, sizeof cmd, "plot --db '%s' " PLOT_SWEEP " --out '%s'", db_path, out);
    expect_failure(cmd, 2, "--kind");
    snprintf(cmd, sizeof cmd, "plot --db '%s' " PLOT_SWEEP " --kind boards --out '%s'", db_path,
             out);
    expect_failure(cmd, 2, "--kind");
    snprintf(cmd, sizeof cmd,
             "plot --db '%s' " PLOT_SWEEP " --kind board --game 0 --cutoff 200 "
             "--out '%s'",
             db_path, out);
    expect_failure(cmd, 1, "fewer than --cutoff 200");
    snprintf(cmd, sizeof cmd, "plot --db '%s' " PLOT_SWEEP " --kind patch --out '%s'", db_path,
             db_path);
    expect_failure(cmd, 1, "refusing to write");

    /* a model directory whose weights differ by one byte from the sweep's */
    char other[1024];
    snprintf(other, sizeof other, "%s/other-model", cli_tmpdir());
    snprintf(cmd, sizeof cmd,
             "rm -rf '%s' && mkdir -p '%s' && cp '%s'/config.json '%s'/tokenizer.json '%s'/ && "
             "cp '%s/model.safetensors' '%s/' && printf 'x' | dd of='%s/model.safetensors' bs=1 "
             "seek=$(($(stat -c %%s '%s/model.safetensors') - 1)) conv=notrunc 2>/dev/null",
             other, other, MODEL, MODEL, other, MODEL, other, other, other);
    assert_int_equal(system(cmd), 0);
    for (size_t k = 0; k < 3; k++) {
        static const char *const kinds[] = {"board", "logit-lens", "attn-diff"};
        snprintf(cmd, sizeof cmd, "plot --db '%s' " PLOT_SWEEP " --kind %s --model '%s' --out '%s'",
                 db_path, kinds[k], other, out);
        expect_failure(cmd, 1, "has other weights than sweep 'plots' ran with");
    }
    /* figures from the store alone do not need the model */
    snprintf(cmd, sizeof cmd,
             "plot --db '%s' " PLOT_SWEEP " --kind neurons --model '%s' --out '%s'", db_path, other,
             out);
    int status = 0;
    free(cli_run(cmd, &status));
    assert_int_equal(status, 0);
    /* the report notes a figure it cannot draw and still writes the page */
    char html[1024];
    snprintf(html, sizeof html, "%s/report-other.html", cli_tmpdir());
    snprintf(cmd, sizeof cmd, "report --db '%s' " PLOT_SWEEP " --model '%s' --out '%s'", db_path,
             other, html);
    free(cli_run(cmd, &status));
    assert_int_equal(status, 0);
    char *page = NULL;
    assert_int_equal(common_read_file(html, &page, &len, err), 0);
    assert_non_null(strstr(page, "Not drawn (board): model"));
    free(page);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patch_block_every),
        cmocka_unit_test(test_patch_heads_with_game_tokens),
        cmocka_unit_test(test_logit_lens_sums_to_the_next_token_logit),
        cmocka_unit_test(test_board_marks_the_legal_squares),
        cmocka_unit_test(test_attn_diff_rows_sum_to_zero),
        cmocka_unit_test(test_neurons_match_the_view),
        cmocka_unit_test(test_legal_matches_the_view),
        cmocka_unit_test(test_report_is_self_contained),
        cmocka_unit_test(test_missing_data_and_other_weights_are_errors),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
