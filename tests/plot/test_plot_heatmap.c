/*
 * test_plot_heatmap: the colour scales, the heatmap and the board of plot/.
 *
 * - Scales: 0 is the neutral colour of the diverging scale whatever the range, lo and hi (and
 *   anything beyond) take the two ends, negative values are blue and positive ones red; the
 *   sequential scale runs from its first colour to its last; NaN is the missing colour. Ranges
 *   and ticks: symmetric for signed values, widened when degenerate, ticks round, inside the
 *   range and holding 0.
 * - Heatmap: one <rect> with a <title> per cell, whose text gives panel, row, column and value
 *   (and count); the fill of each cell is its value's colour (zero neutral, the extremes the
 *   ends); labels are escaped; malformed figures are refused.
 * - Board: 64 squares with titles, every marked square ringed, the pieces as chess glyphs of
 *   the right colour, the highlighted square outlined.
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

#include "plot/plot.h"
#include "plot_test_util.h"

static json_t *check_doc(const char *name, const char *doc, size_t len) {
    const char *path = plot_test_write(name, doc, len);
    assert_non_null(path);
    int status = 0;
    char *out = plot_test_check(path, "", &status);
    assert_non_null(out);
    if (status != 0) {
        fail_msg("%s is not well-formed (status %d): %s", name, status, out);
    }
    json_t *j = json_loads(out, 0, NULL);
    assert_non_null(j);
    free(out);
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

static void rgb(const char *hex, int *r, int *g, int *b) {
    unsigned ur, ug, ub;
    assert_int_equal(sscanf(hex, "#%02x%02x%02x", &ur, &ug, &ub), 3);
    *r = (int)ur;
    *g = (int)ug;
    *b = (int)ub;
}

static void test_scales(void **state) {
    (void)state;
    char c[8], lo_c[8], hi_c[8];
    /* diverging: neutral at 0 for symmetric and lopsided ranges alike */
    plot_scale_color(PLOT_SCALE_DIVERGING, -1, 1, 0, c);
    assert_string_equal(c, PLOT_COLOR_NEUTRAL);
    plot_scale_color(PLOT_SCALE_DIVERGING, -0.01, 50, 0, c);
    assert_string_equal(c, PLOT_COLOR_NEUTRAL);
    plot_scale_color(PLOT_SCALE_DIVERGING, -2, 3, -2, lo_c);
    plot_scale_color(PLOT_SCALE_DIVERGING, -2, 3, 3, hi_c);
    assert_string_equal(lo_c, "#2166ac");
    assert_string_equal(hi_c, "#b2182b");
    plot_scale_color(PLOT_SCALE_DIVERGING, -2, 3, -200, c);
    assert_string_equal(c, lo_c);
    plot_scale_color(PLOT_SCALE_DIVERGING, -2, 3, 1e9, c);
    assert_string_equal(c, hi_c);
    int r, g, b;
    plot_scale_color(PLOT_SCALE_DIVERGING, -1, 1, -0.5, c);
    rgb(c, &r, &g, &b);
    assert_true(b > r);
    plot_scale_color(PLOT_SCALE_DIVERGING, -1, 1, 0.5, c);
    rgb(c, &r, &g, &b);
    assert_true(r > b);
    /* the further from 0, the further from neutral: red channel falls on the blue side */
    int r1, r2;
    plot_scale_color(PLOT_SCALE_DIVERGING, -1, 1, -0.2, c);
    rgb(c, &r1, &g, &b);
    plot_scale_color(PLOT_SCALE_DIVERGING, -1, 1, -0.8, c);
    rgb(c, &r2, &g, &b);
    assert_true(r2 < r1);
    /* sequential */
    plot_scale_color(PLOT_SCALE_SEQUENTIAL, -12, 0, -12, c);
    assert_string_equal(c, "#f7fbff");
    plot_scale_color(PLOT_SCALE_SEQUENTIAL, -12, 0, 0, c);
    assert_string_equal(c, "#08306b");
    plot_scale_color(PLOT_SCALE_SEQUENTIAL, -12, 0, -30, c);
    assert_string_equal(c, "#f7fbff");
    plot_scale_color(PLOT_SCALE_SEQUENTIAL, -12, 0, NAN, c);
    assert_string_equal(c, PLOT_COLOR_MISSING);
    plot_scale_color(PLOT_SCALE_DIVERGING, -1, 1, NAN, c);
    assert_string_equal(c, PLOT_COLOR_MISSING);
}

static void test_ranges(void **state) {
    (void)state;
    double lo, hi;
    const float signed_v[] = {-1.0f, NAN, 3.0f, 0.5f};
    plot_scale_range(PLOT_SCALE_DIVERGING, signed_v, 4, &lo, &hi);
    assert_true(lo == -3.0 && hi == 3.0);
    plot_scale_range(PLOT_SCALE_SEQUENTIAL, signed_v, 4, &lo, &hi);
    assert_true(lo == -1.0 && hi == 3.0);
    const float zeros[] = {0.0f, 0.0f};
    plot_scale_range(PLOT_SCALE_DIVERGING, zeros, 2, &lo, &hi);
    assert_true(lo == -1.0 && hi == 1.0);
    const float same[] = {2.0f, 2.0f};
    plot_scale_range(PLOT_SCALE_SEQUENTIAL, same, 2, &lo, &hi);
    assert_true(lo < 2.0 && hi > 2.0);
    const float none[] = {NAN};
    plot_scale_range(PLOT_SCALE_SEQUENTIAL, none, 1, &lo, &hi);
    assert_true(lo < hi);
}

static void test_heatmap_cells_titles_and_colours(void **state) {
    (void)state;
    const char *rows[] = {"L0H0", "L0H1", "L1<&>"};
    const char *cols[] = {"<s>", "e2", "e4", "e7"};
    const char *details[] = {"pos 0 (<s>)", "pos 1 (e2)", "pos 2 (e4)", "pos 3 (e7)"};
    /* [3, 4] each; panel b holds the figure's extremes */
    const float a[] = {0.0f, 0.125f, -0.5f, NAN, 1.0f, 2.0f, 0.25f, 0.0f, -1.0f, 0.5f, 0.0f, 0.75f};
    const float bv[] = {4.0f, -4.0f, 0.0f, 0.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const uint32_t counts[12] = {7, 7, 7, 0, 7, 7, 7, 7, 7, 7, 7, 7};
    plot_panel panels[2] = {
        {.title = "resid_pre",
         .n_rows = 3,
         .n_cols = 4,
         .row_labels = rows,
         .col_labels = cols,
         .col_details = details,
         .values = a,
         .counts = counts},
        {.title = "mlp_out",
         .n_rows = 3,
         .n_cols = 4,
         .row_labels = rows,
         .col_labels = cols,
         .values = bv},
    };
    plot_heatmap h = {
        .title = "Activation patching: block_every",
        .subtitle = "mean over 7 pairs",
        .row_axis = "layer",
        .col_axis = "position",
        .value_label = "normalised logit_diff",
        .scale = PLOT_SCALE_DIVERGING,
        .panels = panels,
        .n_panels = 2,
        .panels_per_row = 1,
    };
    char err[COMMON_ERR_LEN] = "", *svg = NULL;
    size_t len = 0;
    int rc = plot_heatmap_svg(&h, true, &svg, &len, err);
    if (rc != 0) {
        fail_msg("plot_heatmap_svg: %s", err);
    }
    json_t *j = check_doc("heatmap.svg", svg, len);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 24);
    assert_int_equal(json_integer_value(json_object_get(j, "panels")), 2);
    assert_int_equal(json_integer_value(json_object_get(j, "ids")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "links")), 0);
    json_t *titles = json_object_get(j, "titles");
    assert_int_equal(json_array_size(titles), 24);
    assert_true(has_string(titles, "resid_pre L0H0, pos 1 (e2): 0.125 (n=7)"));
    assert_true(has_string(titles, "resid_pre L0H0, pos 3 (e7): no value (n=0)"));
    assert_true(has_string(titles, "resid_pre L1<&>, pos 0 (<s>): -1 (n=7)"));
    assert_true(has_string(titles, "mlp_out L0H0, <s>: 4"));
    assert_true(has_string(titles, "mlp_out L0H1, e7: 1"));
    json_t *texts = json_object_get(j, "texts");
    const char *want_texts[] = {"L0H0", "L0H1", "L1<&>", "<s>", "e2", "e4", "e7", "resid_pre",
                                "mlp_out", "layer", "position", "normalised logit_diff",
                                "Activation patching: block_every", "mean over 7 pairs",
                                /* the colour bar's ticks over [-4, 4] */
                                "-4", "-2", "0", "2", "4"};
    for (size_t i = 0; i < sizeof want_texts / sizeof want_texts[0]; i++) {
        if (!has_string(texts, want_texts[i])) {
            fail_msg("no text '%s' in the heatmap", want_texts[i]);
        }
    }
    /* fills: the range is [-4, 4] over both panels, so 4 and -4 take the ends, zeros the
     * neutral colour and NaN the missing one */
    assert_non_null(strstr(svg, "fill=\"#b2182b\"><title>mlp_out L0H0, &lt;s&gt;: 4</title>"));
    assert_non_null(strstr(svg, "fill=\"#2166ac\"><title>mlp_out L0H0, e2: -4</title>"));
    assert_non_null(strstr(svg, "fill=\"" PLOT_COLOR_NEUTRAL
                                "\"><title>resid_pre L0H0, pos 0 (&lt;s&gt;): 0 (n=7)</title>"));
    assert_non_null(
        strstr(svg, "fill=\"" PLOT_COLOR_MISSING "\"><title>resid_pre L0H0, pos 3 (e7): no value"));
    json_decref(j);
    free(svg);

    /* a fixed range: 1 is now the top of the scale, 2 beyond it takes the end too, 0.5 not */
    h.fixed_range = true;
    h.lo = -1;
    h.hi = 1;
    assert_int_equal(plot_heatmap_svg(&h, false, &svg, &len, err), 0);
    assert_non_null(
        strstr(svg, "fill=\"#b2182b\"><title>resid_pre L0H1, pos 0 (&lt;s&gt;): 1 (n=7)</title>"));
    assert_non_null(
        strstr(svg, "fill=\"#b2182b\"><title>resid_pre L0H1, pos 1 (e2): 2 (n=7)</title>"));
    assert_null(strstr(svg, "fill=\"#b2182b\"><title>resid_pre L1&lt;&amp;&gt;, pos 1 (e2): 0.5"));
    assert_non_null(strstr(svg, "<title>resid_pre L1&lt;&amp;&gt;, pos 1 (e2): 0.5 (n=7)"));
    assert_int_equal(strncmp(svg, "<svg ", 5), 0);
    free(svg);
}

static void test_heatmap_refuses_bad_figures(void **state) {
    (void)state;
    const char *rows[] = {"a"};
    const char *cols[] = {"b", NULL};
    const float v[] = {1, 2};
    plot_panel p = {.n_rows = 1, .n_cols = 2, .row_labels = rows, .col_labels = cols, .values = v};
    plot_heatmap h = {.title = "t", .panels = &p, .n_panels = 1};
    char err[COMMON_ERR_LEN] = "", *svg = NULL;
    size_t len = 0;
    assert_int_equal(plot_heatmap_svg(&h, true, &svg, &len, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "column 1: no label"));
    h.n_panels = 0;
    assert_int_equal(plot_heatmap_svg(&h, true, &svg, &len, err), COMMON_ERR_INVALID);
    h.n_panels = 1;
    cols[1] = "c";
    p.n_rows = 0;
    assert_int_equal(plot_heatmap_svg(&h, true, &svg, &len, err), COMMON_ERR_INVALID);
    p.n_rows = 1;
    h.fixed_range = true;
    h.lo = 0.5;
    h.hi = 2;
    assert_int_equal(plot_heatmap_svg(&h, true, &svg, &len, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "0 inside"));
    assert_null(svg);
    h.scale = PLOT_SCALE_SEQUENTIAL;
    assert_int_equal(plot_heatmap_svg(&h, true, &svg, &len, err), 0);
    free(svg);
}

static void test_board(void **state) {
    (void)state;
    plot_board b;
    memset(&b, 0, sizeof b);
    const char *ranks[8] = {"RNBQKBNR", "PPPP PPP", "        ", "    P   ",
                            "        ", "        ", "pppppppp", "rnbqkbnr"};
    for (int sq = 0; sq < 64; sq++) {
        b.pieces[sq] = ranks[sq / 8][sq % 8] == ' ' ? 0 : ranks[sq / 8][sq % 8];
        b.values[sq] = -(float)sq / 4.0f; /* a1 = 0 (most probable) down to h8 = -15.75 */
    }
    b.values[63] = NAN;
    b.marked = (1ull << 48) | (1ull << 49) | (1ull << 57); /* a7, b7, b8 */
    b.highlight = 28;                                      /* e4 */
    b.title = "Next-square log-probabilities";
    b.value_label = "log p(next square)";
    char err[COMMON_ERR_LEN] = "", *svg = NULL;
    size_t len = 0;
    int rc = plot_board_svg(&b, true, &svg, &len, err);
    if (rc != 0) {
        fail_msg("plot_board_svg: %s", err);
    }
    json_t *j = check_doc("board.svg", svg, len);
    assert_int_equal(json_integer_value(json_object_get(j, "squares")), 64);
    assert_int_equal(json_integer_value(json_object_get(j, "cells")), 64);
    assert_int_equal(json_integer_value(json_object_get(j, "legal")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "highlight")), 1);
    json_t *pieces = json_object_get(j, "pieces");
    assert_int_equal(json_array_size(pieces), 32);
    assert_true(has_string(pieces, "white \xE2\x99\x9A")); /* kings */
    assert_true(has_string(pieces, "black \xE2\x99\x9A"));
    assert_true(has_string(pieces, "white \xE2\x99\x9F")); /* pawns */
    assert_true(has_string(pieces, "black \xE2\x99\x9E")); /* knights */
    json_t *titles = json_object_get(j, "titles");
    assert_true(has_string(titles, "a1: log p(next square) 0, p = 1; white rook"));
    assert_true(has_string(titles, "e4: log p(next square) -7, p = 0.000912; white pawn; the "
                                   "piece being moved"));
    assert_true(has_string(titles, "b8: log p(next square) -14.25, p = 6.48e-07; black knight; "
                                   "legal next square"));
    assert_true(has_string(titles, "h8: no value; black rook"));
    json_t *texts = json_object_get(j, "texts");
    const char *labels[] = {"a", "h", "1", "8", "legal next square", "piece being moved"};
    for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++) {
        if (!has_string(texts, labels[i])) {
            fail_msg("no text '%s' on the board", labels[i]);
        }
    }
    /* white pieces are drawn white, black ones black; a1 is the top of the scale */
    assert_int_equal(plot_test_count(svg, "class=\"piece white\""), 16);
    assert_int_equal(plot_test_count(svg, "class=\"piece black\""), 16);
    assert_non_null(strstr(svg, "fill=\"#08306b\"><title>a1:"));
    json_decref(j);
    free(svg);
    b.highlight = 64;
    assert_int_equal(plot_board_svg(&b, true, &svg, &len, err), COMMON_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scales),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_heatmap_cells_titles_and_colours),
        cmocka_unit_test(test_heatmap_refuses_bad_figures),
        cmocka_unit_test(test_board),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
