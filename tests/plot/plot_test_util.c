/*
 * plot_test_util.h: scratch files and the Python XML check shared by the plot tests.
 */
#include "plot_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

const char *plot_test_tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL && d[0] != '\0' ? d : "/tmp";
}

const char *plot_test_write(const char *name, const char *data, size_t len) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%s", plot_test_tmpdir(), name);
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
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        *status = -1;
        return NULL;
    }
    size_t cap = 1 << 16, n = 0, got;
    char *out = malloc(cap);
    while (out != NULL && (got = fread(out + n, 1, cap - 1 - n, p)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *bigger = realloc(out, 2 * cap);
            if (bigger == NULL) {
                break;
            }
            out = bigger;
            cap *= 2;
        }
    }
    if (out != NULL) {
        out[n] = '\0';
    }
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

size_t plot_test_count(const char *haystack, const char *needle) {
    size_t n = 0, len = strlen(needle);
    for (const char *p = strstr(haystack, needle); p != NULL; p = strstr(p + len, needle)) {
        n++;
    }
    return n;
}
