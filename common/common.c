/*
 * common: error formatting, whole-file reading and a monotonic clock, shared by every library.
 */
#include "common/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int common_fail(char *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, COMMON_ERR_LEN, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *common_strerror(int code) {
    switch (code) {
    case COMMON_OK:
        return "ok";
    case COMMON_ERR_NOMEM:
        return "out of memory";
    case COMMON_ERR_IO:
        return "i/o error";
    case COMMON_ERR_PARSE:
        return "parse error";
    case COMMON_ERR_INVALID:
        return "invalid argument";
    case COMMON_ERR_UNSUPPORTED:
        return "unsupported";
    case COMMON_ERR_NOT_FOUND:
        return "not found";
    case COMMON_ERR_BACKEND:
        return "backend error";
    default:
        return "unknown error";
    }
}

int common_read_file(const char *path, char **out, size_t *len, char *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        return common_fail(err, errno == ENOENT ? COMMON_ERR_NOT_FOUND : COMMON_ERR_IO,
                           "open %s: %s", path, strerror(errno));
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return common_fail(err, COMMON_ERR_NOMEM, "read %s: out of memory", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                fclose(f);
                return common_fail(err, COMMON_ERR_NOMEM, "read %s: out of memory", path);
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) {
            break;
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        return common_fail(err, COMMON_ERR_IO, "read %s: read error", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return COMMON_OK;
}

double common_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
