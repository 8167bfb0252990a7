/*
 * test_plot_svg: the SVG writer of plot/ (plot_svg_*, plot_format_number).
 *
 * - Escaping: markup characters, quotes, forbidden control characters and invalid UTF-8 in text
 *   and attributes come back from an independent XML parser (Python's xml.etree) as the text
 *   that was meant, and an attribute value cannot open another attribute.
 * - Balance: nested and empty elements are well-formed; every misuse (an end that does not
 *   match, an attribute after content, an element left open, nesting too deep) is an error
 *   from plot_svg_finish and no document.
 * - Numbers: the shortest form with the given significant digits, plain or exponent notation,
 *   and the same text under a locale whose decimal point is a comma.
 */
#include <locale.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <jansson.h>

#include "plot/plot.h"
#include "../cli/cli_run.h"
#include "plot_test_util.h"

/* Finishes s, which must succeed, and returns the document (caller frees). */
static char *finish_ok(plot_svg **s, size_t *len) {
    char err[COMMON_ERR_LEN] = "", *out = NULL;
    int rc = plot_svg_finish(s, &out, len, err);
    if (rc != 0) {
        fail_msg("plot_svg_finish: %s", err);
    }
    assert_null(*s);
    assert_non_null(out);
    assert_int_equal(strlen(out), *len);
    return out;
}

/* The Python summary of a document (json_decref it). */
static json_t *check_doc(const char *name, const char *doc, size_t len, const char *extra) {
    const char *path = plot_test_write(name, doc, len);
    assert_non_null(path);
    int status = 0;
    char *out = plot_test_check(path, extra, &status);
    assert_non_null(out);
    if (status != 0) {
        fail_msg("%s is not well-formed (status %d): %s\n%s", name, status, out, doc);
    }
    json_error_t jerr;
    json_t *j = json_loads(out, 0, &jerr);
    if (j == NULL) {
        fail_msg("svg_check output: %s: %s", jerr.text, out);
    }
    free(out);
    return j;
}

static void test_text_escaping_round_trips(void **state) {
    (void)state;
    plot_svg *s = NULL;
    assert_int_equal(plot_svg_new(&s, 100, 50, true, NULL), 0);
    /* markup, quotes, a CDATA end, a forbidden control byte, a lone continuation byte, a
     * truncated sequence, an encoded surrogate, and valid multi-byte characters */
    const char *text =
        "a<b & \"c\" 'd' > ]]> \x01 \x80 \xE2\x99 \xED\xA0\x80 \xC3\xA9 \xE2\x99\x94";
    plot_svg_begin(s, "text");
    plot_svg_attr(s, "x", "1");
    plot_svg_text(s, text);
    plot_svg_end(s, "text");
    size_t len = 0;
    char *doc = finish_ok(&s, &len);
    assert_non_null(strstr(doc, "a&lt;b &amp; &quot;c&quot; &#39;d&#39; &gt; ]]&gt;"));
    assert_null(strstr(doc, "\x01"));
    json_t *j = check_doc("escape.svg", doc, len, "--text-of text");
    const char *got = json_string_value(json_object_get(j, "first_text"));
    assert_non_null(got);
    /* each invalid byte (the surrogate's three included) is one U+FFFD */
    const char *want = "a<b & \"c\" 'd' > ]]> \xEF\xBF\xBD \xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD "
                       "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xC3\xA9 \xE2\x99\x94";
    assert_string_equal(got, want);
    json_decref(j);
    free(doc);
}

static void test_attribute_cannot_break_out(void **state) {
    (void)state;
    plot_svg *s = NULL;
    assert_int_equal(plot_svg_new(&s, 10, 10, false, NULL), 0);
    plot_svg_begin(s, "rect");
    plot_svg_attr(s, "fill", "red\" onload=\"alert(1)");
    plot_svg_attr(s, "class", "a\tb\nc<d>");
    plot_svg_end(s, "rect");
    size_t len = 0;
    char *doc = finish_ok(&s, &len);
    assert_null(strstr(doc, "\" onload=\""));
    assert_non_null(strstr(doc, "fill=\"red&quot; onload=&quot;alert(1)\""));
    /* white space in a value survives attribute-value normalisation as character references */
    assert_non_null(strstr(doc, "class=\"a&#9;b&#10;c&lt;d&gt;\""));
    /* no XML declaration when the document is meant to be inlined */
    assert_int_equal(strncmp(doc, "<svg ", 5), 0);
    json_t *j = check_doc("attr.svg", doc, len, "");
    assert_int_equal(json_integer_value(json_object_get(j, "documents")), 1);
    json_decref(j);
    free(doc);
}

static void test_nesting_and_empty_elements(void **state) {
    (void)state;
    plot_svg *s = NULL;
    assert_int_equal(plot_svg_new(&s, 640.5, 480, true, NULL), 0);
    plot_svg_attr(s, "class", "root-attr"); /* the root takes attributes until content */
    plot_svg_begin(s, "g");
    plot_svg_begin(s, "g");
    plot_svg_rect(s, 1, 2, 3.25, 4, "#ffffff");
    plot_svg_line(s, 0, 0, 10, 10, "#000000", 0.5);
    plot_svg_end(s, "g");
    plot_svg_label(s, 5, 6, 10, "middle", -90, "font-weight:bold", "L3H7");
    plot_svg_end(s, "g");
    size_t len = 0;
    char *doc = finish_ok(&s, &len);
    assert_int_equal(strncmp(doc, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg ", 44), 0);
    assert_non_null(strstr(doc, "width=\"640.5\" height=\"480\" viewBox=\"0 0 640.5 480\""));
    assert_non_null(strstr(doc, "class=\"root-attr\""));
    assert_non_null(strstr(doc, "<rect x=\"1\" y=\"2\" width=\"3.25\" height=\"4\" "
                                "fill=\"#ffffff\"/>"));
    assert_non_null(strstr(doc, "transform=\"rotate(-90 5 6)\""));
    assert_int_equal(plot_test_count(doc, "<g"), plot_test_count(doc, "</g>"));
    assert_non_null(strstr(doc, "</svg>\n"));
    json_t *j = check_doc("nest.svg", doc, len, "");
    json_t *texts = json_object_get(j, "texts");
    assert_int_equal(json_array_size(texts), 1);
    assert_string_equal(json_string_value(json_array_get(texts, 0)), "L3H7");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "roots"), 0)), "svg");
    json_decref(j);
    free(doc);
}

/* Runs one misuse and expects plot_svg_finish to refuse it with `needle` in the message. */
static void expect_misuse(void (*misuse)(plot_svg *), const char *needle) {
    plot_svg *s = NULL;
    assert_int_equal(plot_svg_new(&s, 10, 10, false, NULL), 0);
    misuse(s);
    char err[COMMON_ERR_LEN] = "", *out = (char *)"untouched";
    size_t len = 7;
    int rc = plot_svg_finish(&s, &out, &len, err);
    assert_int_equal(rc, COMMON_ERR_INVALID);
    assert_null(s);
    assert_string_equal(out, "untouched");
    if (strstr(err, needle) == NULL) {
        fail_msg("error '%s' does not name '%s'", err, needle);
    }
}

static void misuse_wrong_end(plot_svg *s) {
    plot_svg_begin(s, "g");
    plot_svg_end(s, "rect");
    plot_svg_end(s, "g");
}

static void misuse_attr_after_text(plot_svg *s) {
    plot_svg_begin(s, "text");
    plot_svg_text(s, "x");
    plot_svg_attr(s, "x", "1");
    plot_svg_end(s, "text");
}

static void misuse_left_open(plot_svg *s) {
    plot_svg_begin(s, "g");
    plot_svg_begin(s, "rect");
}

static void misuse_too_deep(plot_svg *s) {
    for (int i = 0; i < PLOT_SVG_MAX_DEPTH + 1; i++) {
        plot_svg_begin(s, "g");
    }
}

static void misuse_end_root_twice(plot_svg *s) {
    plot_svg_end(s, "svg");
}

static void test_misuse_is_an_error(void **state) {
    (void)state;
    expect_misuse(misuse_wrong_end, "not open: rect");
    expect_misuse(misuse_attr_after_text, "attribute after content");
    expect_misuse(misuse_left_open, "left open: rect");
    expect_misuse(misuse_too_deep, "too deep");
    expect_misuse(misuse_end_root_twice, "closed before");
    plot_svg *s = NULL;
    char err[COMMON_ERR_LEN] = "";
    assert_int_equal(plot_svg_new(&s, 0, 10, false, err), COMMON_ERR_INVALID);
    assert_int_equal(plot_svg_new(&s, NAN, 10, false, err), COMMON_ERR_INVALID);
    assert_null(s);
}

static void check_number(double v, int sig, const char *want) {
    char out[32];
    plot_format_number(v, sig, out, sizeof out);
    if (strcmp(out, want) != 0) {
        fail_msg("plot_format_number(%.17g, %d) = '%s', want '%s'", v, sig, out, want);
    }
}

static void check_numbers(void) {
    check_number(0, 6, "0");
    check_number(-0.0, 6, "0");
    check_number(1, 6, "1");
    check_number(-2.5, 6, "-2.5");
    check_number(0.1 + 0.2, 6, "0.3");
    check_number(123.456, 6, "123.456");
    check_number(123.456, 4, "123.5");
    check_number(1234567, 6, "1234570");
    check_number(640, 6, "640");
    check_number(0.000123, 3, "0.000123");
    check_number(1e-5, 6, "0.00001");
    check_number(1.5e-7, 6, "1.5e-07");
    check_number(-3e20, 4, "-3e+20");
    check_number(1e15, 6, "1e+15");
    check_number(99999, 6, "99999");
    check_number(0.9999999, 3, "1");
    check_number(NAN, 6, "nan");
    check_number(INFINITY, 6, "inf");
    check_number(-INFINITY, 6, "-inf");
    char small[4];
    plot_format_number(-123.456, 6, small, sizeof small);
    assert_string_equal(small, "-12"); /* truncated to the buffer, terminated */
}

/* Makes a locale whose decimal point is a comma current for LC_NUMERIC, generating one into
 * the scratch directory with localedef when none is installed. False when impossible. */
static bool comma_locale(void) {
    static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "nl_NL.UTF-8"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (setlocale(LC_NUMERIC, names[i]) != NULL) {
            return true;
        }
    }
    /* generated once into the scratch directory (glibc remembers a failed lookup, so the
     * locale must exist before the one setlocale that uses LOCPATH) */
    char dir[2048], cmd[8192];
    snprintf(dir, sizeof dir, "%s/de_DE.UTF-8", cli_tmpdir());
    struct stat st;
    if (stat(dir, &st) != 0) {
        snprintf(cmd, sizeof cmd,
                 "localedef -i de_DE -f UTF-8 '%s' >/dev/null 2>&1 || "
                 "localedef -i de_DE -f UTF-8 -c '%s' >/dev/null 2>&1",
                 dir, dir);
        if (system(cmd) != 0) {
            return false;
        }
    }
    setenv("LOCPATH", cli_tmpdir(), 1);
    return setlocale(LC_NUMERIC, "de_DE.UTF-8") != NULL;
}

static void test_numbers_ignore_the_locale(void **state) {
    (void)state;
    check_numbers();
    if (!comma_locale()) {
        setlocale(LC_NUMERIC, "C");
        print_message("no locale with a decimal comma could be made; checked the C locale only\n");
        skip();
    }
    char c[16];
    snprintf(c, sizeof c, "%.1f", 0.5);
    assert_string_equal(c, "0,5"); /* the locale is really in force */
    check_numbers();
    plot_svg *s = NULL;
    assert_int_equal(plot_svg_new(&s, 10.5, 2.25, false, NULL), 0);
    plot_svg_rect(s, 0.5, 1.75, 2, 3, "#000000");
    size_t len = 0;
    char *doc = finish_ok(&s, &len);
    setlocale(LC_NUMERIC, "C");
    assert_non_null(strstr(doc, "viewBox=\"0 0 10.5 2.25\""));
    assert_non_null(strstr(doc, "x=\"0.5\" y=\"1.75\""));
    for (const char *p = strchr(doc, ','); p != NULL; p = strchr(p + 1, ',')) {
        /* commas only in the font list, never between digits */
        assert_false(p > doc && p[-1] >= '0' && p[-1] <= '9' && p[1] >= '0' && p[1] <= '9');
    }
    free(doc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_escaping_round_trips),
        cmocka_unit_test(test_attribute_cannot_break_out),
        cmocka_unit_test(test_nesting_and_empty_elements),
        cmocka_unit_test(test_misuse_is_an_error),
        cmocka_unit_test(test_numbers_ignore_the_locale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
