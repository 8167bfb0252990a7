/*
 * test_plot_chromium: the report of a real sweep (plot_sweep.h) opened in headless Chromium, as
 * a reader would open the file, by tests/plot/chromium_report.py (DevTools protocol over
 * --remote-debugging-pipe, Python stdlib only). The page must load with no exception, no
 * console or log error, no failed load and no request for anything but the page itself, and
 * show its eight figures; the screenshot lands in the test's scratch directory
 * (build/test-tmp/test_plot_chromium/report.png). Skipped (77) when Chromium is not installed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "../cli/cli_run.h"
#include "plot_sweep.h"

static void test_report_opens_offline_without_errors(void **state) {
    (void)state;
    const char *db = plot_sweep_db();
    char page[2048], shot[2048], cmd[8192];
    snprintf(page, sizeof page, "%s/report.html", cli_tmpdir());
    snprintf(shot, sizeof shot, "%s/report.png", cli_tmpdir());
    remove(shot);
    snprintf(cmd, sizeof cmd, "report --db '%s' " PLOT_SWEEP " --out '%s'", db, page);
    int status = 0;
    char *out = cli_run(cmd, &status);
    if (status != 0) {
        fail_msg("chesslens %s: exit %d\n%s", cmd, status, out);
    }
    free(out);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/tests/plot/chromium_report.py' '%s' '%s' --min-svgs 8 "
             "--full-page",
             CHESSLENS_SOURCE_DIR, page, shot);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    int st = pclose(p);
    if (st != 0) {
        fail_msg("%s: status %d\n%s", cmd, st, buf);
    }
    json_t *j = json_loads(buf, 0, NULL);
    if (j == NULL) {
        fail_msg("chromium_report.py printed no summary: %s", buf);
    }
    assert_int_equal(json_integer_value(json_object_get(j, "svgs")), 8);
    assert_int_equal(json_integer_value(json_object_get(j, "requests")), 1); /* the page */
    assert_int_equal(json_array_size(json_object_get(j, "problems")), 0);
    assert_string_equal(json_string_value(json_object_get(j, "title")),
                        "chesslens report: " PLOT_SWEEP);
    json_decref(j);
    /* a PNG of a page several screens tall */
    FILE *f = fopen(shot, "rb");
    assert_non_null(f);
    unsigned char head[24];
    assert_int_equal(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    assert_memory_equal(head, "\x89PNG\r\n\x1a\n", 8);
    unsigned height =
        (unsigned)head[20] << 24 | (unsigned)head[21] << 16 | (unsigned)head[22] << 8 | head[23];
    assert_true(height > 2000);
}

int main(void) {
    if (system("command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null "
               "2>&1") != 0 &&
        getenv("CHROMIUM") == NULL) {
        fprintf(stderr, "no chromium installed (apt-get install chromium fonts-dejavu-core): "
                        "skipped\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_opens_offline_without_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
