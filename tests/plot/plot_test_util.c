/*
 * plot_test_util.h: scratch files and the Python XML check shared by the plot tests (run through
 * the command runner of the CLI tests, tests/cli/cli_run.h).
 */
#include "plot_test_util.h"

#include "../cli/cli_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *plot_test_write(const char *name, const char *data, size_t len) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", cli_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        return NULL;
    }
    size_t put = fwrite(data, 1, len, f);
    if (fclose(f) != 0 || put != len) {
        return NULL;
    }
    return path;
}

char *plot_test_check(const char *path, const char *extra, int *status) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/tests/plot/svg_check.py' '%s' %s",
             CHESSLENS_SOURCE_DIR, path, extra);
    return cli_sh(cmd, status);
}

size_t plot_test_count(const char *haystack, const char *needle) {
    size_t n = 0, len = strlen(needle);
    for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + len, needle)) {
        n++;
    }
    return n;
}
