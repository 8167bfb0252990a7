/*
 * test_uci_reader: the streaming reader of UCI game files, through the buffer and the FILE*
 * paths alike: blank and `#` comment lines skipped, blanks and CRLF stripped, a last line
 * without "\n", NUL bytes and over-long lines reported with their line (and column) while
 * reading goes on, read errors, lines straddling the file reader's 64 KiB chunks, and a large
 * generated file read through a FILE* with memory that does not grow with it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <cmocka.h>

#include "chess/chess.h"
#include "common/common.h"

/* A growable text that collects what a reader returns. */
typedef struct text {
    char *s;
    size_t len, cap;
} text;

static text text_new(void) {
    text t = {malloc(64), 0, 64};
    assert_non_null(t.s);
    t.s[0] = '\0';
    return t;
}

static void text_add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_add(text *t, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = t->cap - t->len;
        int n = vsnprintf(t->s + t->len, room, fmt, ap);
        va_end(ap);
        assert_true(n >= 0);
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        t->cap = 2 * (t->cap + (size_t)n + 1);
        t->s = realloc(t->s, t->cap);
        assert_non_null(t->s);
    }
}

/* Opens a reader on data[0..len): the buffer itself, or a temporary file holding it. */
static chess_uci_reader *open_reader(const char *data, size_t len, bool as_file, FILE **f) {
    chess_uci_reader *r = NULL;
    char err[COMMON_ERR_LEN];
    *f = NULL;
    if (as_file) {
        *f = tmpfile();
        assert_non_null(*f);
        assert_int_equal(fwrite(data, 1, len, *f), len);
        rewind(*f);
        assert_int_equal(chess_uci_reader_new_file(&r, *f, err), 0);
    } else {
        assert_int_equal(chess_uci_reader_new_buffer(&r, data, len, err), 0);
    }
    return r;
}

/* Everything a reader gives until the end: "N text" per line, "error rc: message" per error. */
static char *read_all(const char *data, size_t len, bool as_file) {
    FILE *f;
    chess_uci_reader *r = open_reader(data, len, as_file, &f);
    text t = text_new();
    for (size_t calls = 0;; calls++) {
        assert_true(calls <= len + 1); /* every call consumes a line */
        const char *line = NULL;
        size_t line_no = 0;
        char err[COMMON_ERR_LEN];
        int rc = chess_uci_reader_next(r, &line, &line_no, err);
        if (rc == CHESS_UCI_END) {
            /* the end stays the end */
            assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), CHESS_UCI_END);
            break;
        }
        if (rc < 0) {
            text_add(&t, "error %d: %s\n", rc, err);
            continue;
        }
        assert_int_equal(rc, CHESS_UCI_LINE);
        assert_true(strlen(line) > 0);
        text_add(&t, "%zu %s\n", line_no, line);
    }
    chess_uci_reader_destroy(&r);
    assert_null(r);
    if (f) {
        fclose(f);
    }
    return t.s;
}

/* Both paths give expected. */
static void expect_both(const char *data, size_t len, const char *expected) {
    for (int as_file = 0; as_file < 2; as_file++) {
        char *got = read_all(data, len, as_file);
        if (strcmp(got, expected) != 0) {
            fail_msg("%s path:\n%s\nexpected:\n%s", as_file ? "FILE*" : "buffer", got, expected);
        }
        free(got);
    }
}

static void test_lines_comments_blanks_crlf(void **state) {
    (void)state;
    static const char input[] = "# games from a run\n"
                                "e2e4 e7e5 g1f3\n"
                                "\n"
                                "   \t\n"
                                "\r\n"
                                "  d2d4 d7d5\t \r\n"
                                "  # an indented comment\n"
                                "c2c4 # not a comment: only a first character starts one\n"
                                "e2e4\re7e5\n"
                                "a7a8q";
    expect_both(input, sizeof input - 1,
                "2 e2e4 e7e5 g1f3\n"
                "6 d2d4 d7d5\n"
                "8 c2c4 # not a comment: only a first character starts one\n"
                "9 e2e4\re7e5\n"
                "10 a7a8q\n");
}

static void test_empty_inputs(void **state) {
    (void)state;
    expect_both("", 0, "");
    static const char blank[] = "\n\n \t \r\n# only a comment";
    expect_both(blank, sizeof blank - 1, "");
    chess_uci_reader *r;
    char err[COMMON_ERR_LEN];
    assert_int_equal(chess_uci_reader_new_buffer(&r, NULL, 0, err), 0);
    const char *line;
    size_t line_no;
    assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), CHESS_UCI_END);
    chess_uci_reader_destroy(&r);
    chess_uci_reader_destroy(&r); /* NULL is fine */
    chess_uci_reader_destroy(NULL);
    assert_int_equal(chess_uci_reader_new_buffer(&r, NULL, 3, err), COMMON_ERR_INVALID);
    assert_null(r); /* untouched on failure */
    assert_int_equal(chess_uci_reader_new_file(&r, NULL, err), COMMON_ERR_INVALID);
    assert_null(r);
}

/* A NUL byte is an error naming its line and column, in a game line or a comment alike, and
 * the line is consumed whole: the next call goes on with the line after it. */
static void test_nul_byte(void **state) {
    (void)state;
    static const char input[] = "e2e4\n\n# c\ne2e4 e7\0e5 g1f3\ng1f3\n# a\0 comment\r\n\0\nb1c3\0";
    char expected[512];
    snprintf(expected, sizeof expected,
             "1 e2e4\n"
             "error %d: line 4: NUL byte at column 8\n"
             "5 g1f3\n"
             "error %d: line 6: NUL byte at column 4\n"
             "error %d: line 7: NUL byte at column 1\n"
             "error %d: line 8: NUL byte at column 5\n",
             COMMON_ERR_PARSE, COMMON_ERR_PARSE, COMMON_ERR_PARSE, COMMON_ERR_PARSE);
    expect_both(input, sizeof input - 1, expected);
}

/* Lines up to CHESS_UCI_MAX_LINE bytes (plus a "\r" before the "\n") are read; a longer one is
 * an error naming it, with or without a final newline, and reading goes on after it. */
static void test_line_length_limit(void **state) {
    (void)state;
    const size_t max = CHESS_UCI_MAX_LINE;
    size_t len = 6 * max;
    char *input = malloc(len);
    assert_non_null(input);
    size_t n = 0;
    n += (size_t)sprintf(input + n, "e2e4\n");
    memset(input + n, 'a', max); /* line 2: exactly the limit */
    n += max;
    n += (size_t)sprintf(input + n, "\n");
    memset(input + n, 'b', max); /* line 3: the limit, then CRLF */
    n += max;
    n += (size_t)sprintf(input + n, "\r\n");
    memset(input + n, 'c', max + 1); /* line 4: one byte over */
    n += max + 1;
    n += (size_t)sprintf(input + n, "\nd2d4\n");
    memset(input + n, 'd', max - 1); /* line 6: one over, a "\r" where a CRLF's would be */
    n += max - 1;
    n += (size_t)sprintf(input + n, "\re\n");
    memset(input + n, 'e', max + 7); /* line 7: over, no final newline */
    n += max + 7;
    assert_true(n <= len);
    for (int as_file = 0; as_file < 2; as_file++) {
        FILE *f;
        chess_uci_reader *r = open_reader(input, n, as_file, &f);
        const char *line;
        size_t line_no;
        char err[COMMON_ERR_LEN];
        assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), CHESS_UCI_LINE);
        assert_string_equal(line, "e2e4");
        for (size_t i = 2; i <= 3; i++) {
            assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), CHESS_UCI_LINE);
            assert_int_equal(line_no, i);
            assert_int_equal(strlen(line), max);
            assert_int_equal(strspn(line, i == 2 ? "a" : "b"), max);
        }
        char expected[COMMON_ERR_LEN];
        assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), COMMON_ERR_INVALID);
        snprintf(expected, sizeof expected, "line 4: longer than %zu bytes", max);
        assert_string_equal(err, expected);
        assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), CHESS_UCI_LINE);
        assert_int_equal(line_no, 5);
        assert_string_equal(line, "d2d4");
        assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), COMMON_ERR_INVALID);
        snprintf(expected, sizeof expected, "line 6: longer than %zu bytes", max);
        assert_string_equal(err, expected);
        assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), COMMON_ERR_INVALID);
        snprintf(expected, sizeof expected, "line 7: longer than %zu bytes", max);
        assert_string_equal(err, expected);
        assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), CHESS_UCI_END);
        chess_uci_reader_destroy(&r);
        if (f) {
            fclose(f);
        }
    }
    free(input);
}

/* On a line over the limit with a NUL in it, the first problem by column is reported: the NUL
 * within the first CHESS_UCI_MAX_LINE + 1 bytes, else the length, whichever the path and
 * wherever its chunks end. */
static void test_first_problem_by_column(void **state) {
    (void)state;
    const size_t max = CHESS_UCI_MAX_LINE;
    size_t len = 2 * max + 16;
    char *input = malloc(len);
    assert_non_null(input);
    memset(input, 'a', max + 4); /* line 1: NUL at column max + 3, past the limit */
    input[max + 2] = '\0';
    input[max + 4] = '\n';
    char *second = input + max + 5;
    memset(second, 'b', max + 2); /* line 2: NUL at column max + 1, within it */
    second[max] = '\0';
    second[max + 2] = '\n';
    char expected[512];
    snprintf(expected, sizeof expected,
             "error %d: line 1: longer than %zu bytes\n"
             "error %d: line 2: NUL byte at column %zu\n",
             COMMON_ERR_INVALID, max, COMMON_ERR_PARSE, max + 1);
    expect_both(input, 2 * max + 8, expected);
    free(input);
}

/* Lines of every length from 0 to a few thousand bytes, over several of the file reader's
 * chunks (with CRLF, comments and NULs among them), read the same through both paths and give
 * back exactly the lines written. */
static void test_paths_agree_across_chunks(void **state) {
    (void)state;
    text in = text_new(), expected = text_new();
    uint64_t x = 88172645463325252ull; /* xorshift64 */
    size_t line_no = 0;
    while (in.len < 5 * 65536) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t n = (size_t)(x % 3000);
        line_no++;
        char *body = malloc(n + 1);
        assert_non_null(body);
        for (size_t i = 0; i < n; i++) {
            body[i] = "e2e4 g1f3 "[(i + line_no) % 10];
        }
        body[n] = '\0';
        switch (x >> 60) {
        case 0:
            text_add(&in, "# %s\n", body);
            break;
        case 1:
            text_add(&in, "%s\r\n", body);
            break;
        case 2:
            text_add(&in, "x%sy\n", body);
            in.s[in.len - (n + 3) + 1 + n / 2] = '\0'; /* in the body, or on "y" when empty */
            text_add(&expected, "error %d: line %zu: NUL byte at column %zu\n", COMMON_ERR_PARSE,
                     line_no, 2 + n / 2);
            break;
        default:
            text_add(&in, "%s\n", body);
            break;
        }
        if (x >> 60 != 0 && x >> 60 != 2) {
            /* what the reader returns: the line without its blanks at either end */
            size_t a = 0, b = n;
            while (a < b && body[a] == ' ') {
                a++;
            }
            while (b > a && body[b - 1] == ' ') {
                b--;
            }
            if (b > a) {
                text_add(&expected, "%zu %.*s\n", line_no, (int)(b - a), body + a);
            }
        }
        free(body);
    }
    expect_both(in.s, in.len, expected.s);
    free(in.s);
    free(expected.s);
}

/* A read error is reported with the line it stopped at, and again on every later call. */
static void test_read_error(void **state) {
    (void)state;
    const char *dir = getenv("CHESSLENS_TEST_TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/write_only.uci", dir ? dir : ".");
    FILE *f = fopen(path, "w"); /* reading a write-only stream fails */
    assert_non_null(f);
    chess_uci_reader *r;
    char err[COMMON_ERR_LEN];
    assert_int_equal(chess_uci_reader_new_file(&r, f, err), 0);
    const char *line;
    size_t line_no;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(chess_uci_reader_next(r, &line, &line_no, err), COMMON_ERR_IO);
        assert_non_null(strstr(err, "line 1: read error: "));
    }
    chess_uci_reader_destroy(&r);
    fclose(f);
    remove(path);
}

static long max_rss_kib(void) {
    struct rusage ru;
    assert_int_equal(getrusage(RUSAGE_SELF, &ru), 0);
    return ru.ru_maxrss; /* KiB on Linux */
}

/* 48 MiB of game lines (with a comment every 1000 lines and a 3 MiB over-long line half way)
 * through a FILE*: every line comes back with its number, and the peak memory of the process
 * grows by far less than the input. */
static void test_large_file_bounded_memory(void **state) {
    (void)state;
    enum { LONG_AT = 250000 };
    static const char game[] = "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6 b5a4 g8f6 e1g1 f8e7 f1e1 b7b5 a4b3 "
                               "d7d6 c2c3 e8g8 h2h3 c6a5 b3c2 c7c5 d2d4 d8c7";
    FILE *f = tmpfile();
    assert_non_null(f);
    size_t lines = 0, games = 0;
    long written = 0;
    while (written < 48L << 20) {
        lines++;
        int n;
        if (lines == LONG_AT) {
            for (size_t i = 0; i < (3u << 20) / 8; i++) {
                assert_int_equal(fputs("e2e4 e7e", f) >= 0, 1);
            }
            n = fputc('\n', f) == '\n' ? (3 << 20) + 1 : -1;
        } else if (lines % 1000 == 0) {
            n = fprintf(f, "# comment %zu\n", lines);
        } else {
            n = fprintf(f, "%s %zu\r\n", game, lines);
            games++;
        }
        assert_true(n > 0);
        written += n;
    }
    assert_int_equal(fflush(f), 0);
    assert_true(lines > LONG_AT);
    rewind(f);
    long rss_before = max_rss_kib();
    chess_uci_reader *r;
    char err[COMMON_ERR_LEN];
    assert_int_equal(chess_uci_reader_new_file(&r, f, err), 0);
    size_t n_games = 0, n_errors = 0, last_no = 0;
    for (;;) {
        const char *line;
        size_t line_no;
        int rc = chess_uci_reader_next(r, &line, &line_no, err);
        if (rc == CHESS_UCI_END) {
            break;
        }
        if (rc < 0) {
            assert_int_equal(rc, COMMON_ERR_INVALID);
            char expected[COMMON_ERR_LEN];
            snprintf(expected, sizeof expected, "line %d: longer than %zu bytes", LONG_AT,
                     CHESS_UCI_MAX_LINE);
            assert_string_equal(err, expected);
            n_errors++;
            continue;
        }
        assert_true(line_no > last_no);
        last_no = line_no;
        size_t glen = sizeof game - 1;
        assert_memory_equal(line, game, glen);
        assert_int_equal(strtoull(line + glen + 1, NULL, 10), line_no);
        n_games++;
    }
    chess_uci_reader_destroy(&r);
    long growth_kib = max_rss_kib() - rss_before;
    fclose(f);
    assert_int_equal(n_games, games);
    assert_int_equal(n_errors, 1);
    assert_int_equal(last_no, lines - (lines % 1000 == 0));
    if (growth_kib > 16 * 1024) {
        fail_msg("peak memory grew by %ld KiB reading %ld bytes", growth_kib, written);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_large_file_bounded_memory),
        cmocka_unit_test(test_lines_comments_blanks_crlf),
        cmocka_unit_test(test_empty_inputs),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_line_length_limit),
        cmocka_unit_test(test_first_problem_by_column),
        cmocka_unit_test(test_paths_agree_across_chunks),
        cmocka_unit_test(test_read_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
