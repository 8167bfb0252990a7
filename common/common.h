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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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

/* An output file that appears whole or not at all. Bytes go to a temporary file beside the
 * target (same directory, so the rename cannot cross file systems); common_outfile_commit
 * flushes and fsyncs it, renames it over the target and fsyncs the directory. A failed write,
 * a failed commit or common_outfile_destroy without a commit removes the temporary file and
 * leaves whatever was at the target before untouched: a full disk never leaves a truncated
 * result behind. */
typedef struct common_outfile common_outfile;

/* Creates the temporary file for path. On success *out is set (caller commits or destroys). */
int common_outfile_new(common_outfile **out, const char *path, char *err);
/* The stream to write to (owned by the outfile; do not close it). */
FILE *common_outfile_stream(common_outfile *o);
/* Writes len bytes; an error names the target path. */
int common_outfile_write(common_outfile *o, const void *data, size_t len, char *err);
/* Makes the file appear at its path and frees *o (also on failure, when the temporary file is
 * removed); *o is NULL afterwards. */
int common_outfile_commit(common_outfile **o, char *err);
/* Abandons an uncommitted file (removes the temporary file) and frees it; NULL is fine. */
void common_outfile_destroy(common_outfile **o);

/* Flushes to disk the entries of the directory that holds path (after a rename into it). */
int common_fsync_parent(const char *path, char *err);

/* True when both paths exist and name the same file (same device and inode): an output that
 * would overwrite one of a command's inputs. */
bool common_same_file(const char *a, const char *b);

/* Monotonic clock in seconds, for progress and benchmarks. */
double common_now_s(void);

/* The length (2..4) of the valid multi-byte UTF-8 sequence at p[0..n), or 0 when p does not
 * start one (a byte below 0x80 is not one either): overlong forms, surrogates, code points above
 * U+10FFFF and truncated sequences are invalid. *cp (NULL allowed) receives its code point. */
size_t common_utf8_sequence(const unsigned char *p, size_t n, uint32_t *cp);

/* Options given as one "key=value,key=value" text (fault drills: chesslens-worker and
 * chesslens-coordinator --faults). Reads the next entry of *p into key[klen] and value[vlen]
 * (views into the text) and moves *p past it: 1 when an entry was read, 0 at the end. An
 * entry without '=' or a trailing ',' is INVALID, naming `what`. */
int common_kv_next(const char **p, const char **key, size_t *klen, const char **value, size_t *vlen,
                   const char *what, char *err);
/* A decimal integer in [lo, hi] spelled by s[0..n) exactly (no sign, no blank). */
bool common_parse_i64(const char *s, size_t n, int64_t lo, int64_t hi, int64_t *v);

#endif
