/*
 * common: the error contract every chesslens library follows, and a few small helpers.
 *
 * A fallible function returns 0 or one of the negative COMMON_ERR_* codes and takes
 * `char *err` last: a caller-owned buffer of COMMON_ERR_LEN bytes (NULL allowed) that receives a
 * message naming the operation and what went wrong. Libraries never print or exit; only a
 * program's main decides what to do with an error.
 */
#ifndef CHESSLENS_COMMON_H
#define CHESSLENS_COMMON_H

#include <stddef.h>

#define COMMON_ERR_LEN 256

enum {
    COMMON_OK = 0,
    COMMON_ERR_NOMEM = -1,       /* an allocation failed */
    COMMON_ERR_IO = -2,          /* a file or socket operation failed */
    COMMON_ERR_PARSE = -3,       /* input text or bytes are malformed */
    COMMON_ERR_INVALID = -4,     /* a value is out of range or inconsistent */
    COMMON_ERR_UNSUPPORTED = -5, /* well-formed but not something chesslens handles */
    COMMON_ERR_NOT_FOUND = -6,   /* a named thing (file, tensor, token) does not exist */
    COMMON_ERR_BACKEND = -7,     /* the compute backend (BLAS, CUDA) reported a failure */
};

/* Formats a message into err (COMMON_ERR_LEN bytes; NULL is ignored) and returns code, so that
 * a failure path reads `return common_fail(err, COMMON_ERR_PARSE, "fen: bad rank %d", r);`. */
int common_fail(char *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* A short name for an error code ("parse error", ...); never NULL. */
const char *common_strerror(int code);

/* Reads a whole file into a new NUL-terminated buffer. On success *out (caller frees) and
 * *len (bytes, without the terminator) are set. */
int common_read_file(const char *path, char **out, size_t *len, char *err);

/* Monotonic clock in seconds, for progress and benchmarks. */
double common_now_s(void);

#endif
