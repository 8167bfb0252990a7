/*
 * uci_reader: a streaming reader of UCI game files, one game per line ("e2e4 e7e5 g1f3"), for
 * game lists of any size (decompose --games, dataset import).
 *
 * The reader hands out lines, not games: legality is the caller's business. It keeps one line
 * at a time in a buffer that grows to the longest line accepted (CHESS_UCI_MAX_LINE at most)
 * and reads files through a fixed chunk, so memory does not grow with the input. A bad line (a
 * NUL byte, which would cut the C string short and hide the rest of the line, or a line over
 * the limit) is an error naming the line, but it is consumed whole so that a caller may report
 * it and read on from the next line. The buffer and FILE* paths share everything but the
 * refill of the bytes being consumed.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "common/common.h"

#define UCI_CHUNK 65536
#define UCI_LINE_MIN 256
/* The line buffer's ceiling: the longest line, a "\r" before its "\n", and the terminator. */
#define UCI_LINE_CAP (CHESS_UCI_MAX_LINE + 2)

/* What is wrong with the line being read; the first problem wins and the rest of the line is
 * dropped unread. */
typedef enum line_problem {
    LINE_OK = 0,
    LINE_NUL,      /* a NUL byte */
    LINE_TOO_LONG, /* more than CHESS_UCI_MAX_LINE bytes before its terminator */
    LINE_NOMEM,    /* the line buffer could not grow */
} line_problem;

struct chess_uci_reader {
    FILE *file;       /* file mode: the source, read in chunks into chunk; NULL for a buffer */
    char *chunk;      /* file mode: UCI_CHUNK bytes */
    const char *data; /* the bytes being consumed: chunk or the caller's buffer */
    size_t len, pos;  /* valid bytes in data, next byte to read */
    bool eof;         /* file mode: the source has no more bytes */
    int io_error;     /* errno of a failed read, 0 if none; it ends the input */
    size_t io_line;   /* the line being read when the read failed */
    char *line;       /* the current line, NUL-terminated (cap bytes, NULL before the first) */
    size_t cap;       /* bytes allocated for line, at most UCI_LINE_CAP */
    size_t line_no;   /* lines begun so far: the 1-based number of the current line */
};

static int reader_alloc(chess_uci_reader **out, const char *op, char *err) {
    chess_uci_reader *r = calloc(1, sizeof *r);
    if (!r) {
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", op);
    }
    *out = r;
    return 0;
}

int chess_uci_reader_new_file(chess_uci_reader **out, FILE *f, char *err) {
    static const char op[] = "chess_uci_reader_new_file";
    if (!f) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: no file", op);
    }
    chess_uci_reader *r = NULL;
    int rc = reader_alloc(&r, op, err);
    if (rc != 0) {
        return rc;
    }
    r->chunk = malloc(UCI_CHUNK);
    if (!r->chunk) {
        free(r);
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", op);
    }
    r->file = f;
    r->data = r->chunk;
    *out = r;
    return 0;
}

int chess_uci_reader_new_buffer(chess_uci_reader **out, const char *data, size_t len, char *err) {
    static const char op[] = "chess_uci_reader_new_buffer";
    if (!data && len > 0) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: no data for %zu bytes", op, len);
    }
    chess_uci_reader *r = NULL;
    int rc = reader_alloc(&r, op, err);
    if (rc != 0) {
        return rc;
    }
    r->data = data;
    r->len = len;
    *out = r;
    return 0;
}

void chess_uci_reader_destroy(chess_uci_reader **reader) {
    if (!reader || !*reader) {
        return;
    }
    free((*reader)->chunk);
    free((*reader)->line);
    free(*reader);
    *reader = NULL;
}

/* Makes at least one byte available in data[pos..len); false at the end of the input or on a
 * read error (io_error set). */
static bool fill(chess_uci_reader *r) {
    if (r->pos < r->len) {
        return true;
    }
    if (!r->file || r->eof) {
        return false;
    }
    errno = 0;
    r->len = fread(r->chunk, 1, UCI_CHUNK, r->file);
    r->pos = 0;
    if (r->len == 0) {
        r->eof = true;
        if (ferror(r->file)) {
            r->io_error = errno ? errno : EIO;
        }
        return false;
    }
    return true;
}

/* Appends bytes[0..n) to the line at offset used, growing the buffer geometrically up to
 * UCI_LINE_CAP; the caller keeps used + n within CHESS_UCI_MAX_LINE + 1. */
static bool append(chess_uci_reader *r, size_t used, const char *bytes, size_t n) {
    size_t need = used + n + 1;
    assert(need <= UCI_LINE_CAP);
    if (need > r->cap) {
        size_t cap = r->cap ? r->cap : UCI_LINE_MIN;
        while (cap < need) {
            cap *= 2;
        }
        if (cap > UCI_LINE_CAP) {
            cap = UCI_LINE_CAP;
        }
        char *grown = realloc(r->line, cap);
        if (!grown) {
            return false;
        }
        r->line = grown;
        r->cap = cap;
    }
    memcpy(r->line + used, bytes, n);
    return true;
}

/* Reads one line, up to its "\n" or the end of the input, into r->line without the "\n".
 * Returns false when no byte was left. Otherwise *n is the line's length and *problem what is
 * wrong with it (r->line holds the line only when nothing is), *nul_column the 1-based column
 * of its first NUL byte. */
static bool read_line(chess_uci_reader *r, size_t *n, line_problem *problem, size_t *nul_column) {
    size_t used = 0;
    bool any = false;
    *problem = LINE_OK;
    while (fill(r)) {
        any = true;
        const char *start = r->data + r->pos;
        size_t avail = r->len - r->pos;
        const char *newline = memchr(start, '\n', avail);
        size_t seg = newline ? (size_t)(newline - start) : avail;
        if (*problem == LINE_OK) {
            /* the first problem by column: a NUL within the first CHESS_UCI_MAX_LINE + 1 bytes,
             * else a byte past them; the same wherever the chunks happen to end */
            size_t fit = CHESS_UCI_MAX_LINE + 1 - used;
            const char *nul = memchr(start, '\0', seg < fit ? seg : fit);
            if (nul) {
                *problem = LINE_NUL;
                *nul_column = used + (size_t)(nul - start) + 1;
            } else if (seg > fit) {
                *problem = LINE_TOO_LONG;
            } else if (!append(r, used, start, seg)) {
                *problem = LINE_NOMEM;
            } else {
                used += seg;
            }
        }
        r->pos += seg + (newline != NULL);
        if (newline) {
            break;
        }
    }
    if (!any) {
        return false;
    }
    if (*problem == LINE_OK) {
        r->line[used] = '\0';
        /* one byte over the limit is allowed only as the "\r" of a "\r\n" */
        if (used == CHESS_UCI_MAX_LINE + 1 && r->line[used - 1] != '\r') {
            *problem = LINE_TOO_LONG;
        }
    }
    *n = used;
    return true;
}

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r';
}

int chess_uci_reader_next(chess_uci_reader *r, const char **line, size_t *line_no, char *err) {
    for (;;) {
        if (r->io_error) {
            return common_fail(err, COMMON_ERR_IO, "line %zu: read error: %s", r->io_line,
                               strerror(r->io_error));
        }
        size_t n = 0, nul_column = 0;
        line_problem problem;
        bool got = read_line(r, &n, &problem, &nul_column);
        if (r->io_error) {
            /* a failed read drops the line it cut short */
            r->io_line = r->line_no + 1;
            continue;
        }
        if (!got) {
            return CHESS_UCI_END;
        }
        r->line_no++;
        switch (problem) {
        case LINE_OK:
            break;
        case LINE_NUL:
            return common_fail(err, COMMON_ERR_PARSE, "line %zu: NUL byte at column %zu",
                               r->line_no, nul_column);
        case LINE_TOO_LONG:
            return common_fail(err, COMMON_ERR_INVALID, "line %zu: longer than %zu bytes",
                               r->line_no, CHESS_UCI_MAX_LINE);
        case LINE_NOMEM:
            return common_fail(err, COMMON_ERR_NOMEM, "line %zu: out of memory", r->line_no);
        }
        char *text = r->line;
        while (n > 0 && is_blank(text[n - 1])) {
            n--;
        }
        text[n] = '\0';
        while (is_blank(*text)) {
            text++;
        }
        if (*text == '\0' || *text == '#') {
            continue;
        }
        *line = text;
        *line_no = r->line_no;
        return CHESS_UCI_LINE;
    }
}
