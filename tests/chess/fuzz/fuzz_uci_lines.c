/*
 * fuzz_uci_lines: libFuzzer target for the streaming reader of UCI game files. The input is
 * read three ways, through the buffer reader, through the FILE* reader (fmemopen), and through
 * the FILE* reader after a comment line that puts the input across the reader's 64 KiB chunk
 * boundary at an offset drawn from the input, and each must give exactly what a plain
 * reference split of the bytes on "\n" gives: the same lines with the same numbers, the same
 * errors for NUL bytes and over-long lines, then the end. Every line returned also goes
 * through chess_legal_tokens, as the reader's callers do.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { CHUNK = 65536 }; /* the FILE* reader's read size */

/* The reference: what the reader must return next, from a plain walk over the bytes. */
typedef struct expected {
    int rc;           /* CHESS_UCI_LINE, CHESS_UCI_END or an error code */
    const char *text; /* CHESS_UCI_LINE: the stripped line (not terminated) */
    size_t len;       /* its length */
    size_t line_no;   /* the line's 1-based number */
    size_t column;    /* COMMON_ERR_PARSE: the NUL's 1-based column */
} expected;

typedef struct reference {
    const char *data;
    size_t size, pos, line_no;
} reference;

static bool is_blank(char c) {
    return c == ' ' || c == '\t' || c == '\r';
}

static expected reference_next(reference *ref) {
    expected e = {CHESS_UCI_END, NULL, 0, 0, 0};
    while (ref->pos < ref->size) {
        const char *raw = ref->data + ref->pos;
        const char *newline = memchr(raw, '\n', ref->size - ref->pos);
        size_t n = newline ? (size_t)(newline - raw) : ref->size - ref->pos;
        ref->pos += n + (newline != NULL);
        ref->line_no++;
        e.line_no = ref->line_no;
        size_t head = n < CHESS_UCI_MAX_LINE + 1 ? n : CHESS_UCI_MAX_LINE + 1;
        const char *nul = memchr(raw, '\0', head);
        if (nul) {
            e.rc = COMMON_ERR_PARSE;
            e.column = (size_t)(nul - raw) + 1;
            return e;
        }
        if (n > CHESS_UCI_MAX_LINE + 1 || (n == CHESS_UCI_MAX_LINE + 1 && raw[n - 1] != '\r')) {
            e.rc = COMMON_ERR_INVALID;
            return e;
        }
        while (n > 0 && is_blank(raw[n - 1])) {
            n--;
        }
        while (n > 0 && is_blank(raw[0])) {
            raw++;
            n--;
        }
        if (n == 0 || raw[0] == '#') {
            continue;
        }
        e.rc = CHESS_UCI_LINE;
        e.text = raw;
        e.len = n;
        return e;
    }
    e.rc = CHESS_UCI_END;
    return e;
}

/* Reads everything from reader and checks it against the reference, with line numbers
 * shifted by line_shift (the lines put before the input). Aborts on any difference. */
static void check_reader(chess_uci_reader *reader, const uint8_t *data, size_t size,
                         size_t line_shift, bool legal_tokens) {
    reference ref = {(const char *)data, size, 0, 0};
    for (;;) {
        expected e = reference_next(&ref);
        const char *line = NULL;
        size_t line_no = 0;
        char err[COMMON_ERR_LEN] = "";
        int rc = chess_uci_reader_next(reader, &line, &line_no, err);
        if (rc == COMMON_ERR_NOMEM) {
            return; /* the line buffer hit the fuzzer's malloc limit */
        }
        if (rc != e.rc) {
            abort();
        }
        char want[COMMON_ERR_LEN];
        switch (rc) {
        case CHESS_UCI_END:
            if (chess_uci_reader_next(reader, &line, &line_no, err) != CHESS_UCI_END) {
                abort(); /* the end stays the end */
            }
            return;
        case CHESS_UCI_LINE:
            if (line_no != e.line_no + line_shift || strlen(line) != e.len ||
                memcmp(line, e.text, e.len) != 0) {
                abort();
            }
            if (legal_tokens) {
                chess_token_info *tokens = NULL;
                size_t n = 0;
                chess_legal_tokens(NULL, line, &tokens, &n, err);
                free(tokens);
            }
            continue;
        case COMMON_ERR_PARSE:
            snprintf(want, sizeof want, "line %zu: NUL byte at column %zu", e.line_no + line_shift,
                     e.column);
            break;
        default:
            snprintf(want, sizeof want, "line %zu: longer than %zu bytes", e.line_no + line_shift,
                     CHESS_UCI_MAX_LINE);
            break;
        }
        if (strcmp(err, want) != 0) {
            abort();
        }
    }
}

/* Reads the bytes through the FILE* reader, after pad bytes of a comment line when pad > 0. */
static void check_file(const uint8_t *data, size_t size, size_t pad) {
    size_t total = pad + size;
    if (total == 0) {
        return; /* fmemopen may refuse an empty buffer; the buffer path covers it */
    }
    char *bytes = malloc(total); /* fmemopen wants a writable buffer even to read */
    if (!bytes) {
        return;
    }
    if (pad > 0) {
        memset(bytes, '-', pad);
        bytes[0] = '#';
        bytes[pad - 1] = '\n';
    }
    memcpy(bytes + pad, data, size);
    FILE *f = fmemopen(bytes, total, "r");
    chess_uci_reader *reader = NULL;
    if (f && chess_uci_reader_new_file(&reader, f, NULL) == 0) {
        check_reader(reader, data, size, pad > 0, false);
    }
    chess_uci_reader_destroy(&reader);
    if (f) {
        fclose(f);
    }
    free(bytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    chess_uci_reader *reader = NULL;
    if (chess_uci_reader_new_buffer(&reader, (const char *)data, size, NULL) == 0) {
        check_reader(reader, data, size, 0, true);
        chess_uci_reader_destroy(&reader);
    }
    check_file(data, size, 0);
    /* the input starts `offset` bytes before the end of the first chunk */
    size_t offset = size > 0 && size < CHUNK - 2 ? (size_t)data[0] * size / 256 : 0;
    check_file(data, size, CHUNK - offset);
    return 0;
}
