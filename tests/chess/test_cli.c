/*
 * test_cli: the `chesslens chess` commands run as a user runs them (the built binary through
 * popen): random games in the documented format and within the token budget, perft's count on
 * the last line and --divide lines, legal's JSON lines with the notebook example, pgn2uci's
 * output and summary, and the exit codes for bad input. Skipped (77) when the binary is not
 * built.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#define CHESSLENS CHESSLENS_BINARY_DIR "/cli/chesslens"

/* Runs `chesslens ARGS` and returns its stdout (caller frees) and exit status; stderr is
 * dropped unless ARGS redirects it. */
static char *run(const char *args, int *status) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s %s%s", CHESSLENS, args,
             strstr(args, "2>&1") ? "" : " 2>/dev/null");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    size_t got;
    while ((got = fread(out + n, 1, cap - 1 - n, p)) > 0) {
        n += got;
        if (n + 1 == cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
    }
    out[n] = '\0';
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

static void test_random(void **state) {
    (void)state;
    int status;
    char *out = run("chess random --n 50 --seed 7 --max-tokens 127", &status);
    assert_int_equal(status, 0);
    size_t lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        size_t tokens = 1, len = strlen(line);
        assert_true(line[0] != ' ' && line[len - 1] != ' ');
        assert_null(strstr(line, "  "));
        for (char *w = line; *w;) {
            size_t wl = strcspn(w, " ");
            assert_true(wl == 4 || wl == 5);
            tokens += wl == 5 ? 3 : 2;
            w += wl;
            w += *w == ' ';
        }
        assert_true(tokens <= 127);
        lines++;
    }
    assert_int_equal(lines, 50);
    free(out);
    /* same seed, same games */
    char *a = run("chess random --n 5 --seed 99 --max-tokens 60", &status);
    char *b = run("chess random --n 5 --seed 99 --max-tokens 60", &status);
    assert_string_equal(a, b);
    free(a);
    free(b);
    free(run("chess random --n 5", &status));
    assert_int_equal(status, 2);
}

static void test_perft(void **state) {
    (void)state;
    int status;
    char *out = run("chess perft --depth 4", &status);
    assert_int_equal(status, 0);
    assert_string_equal(out, "197281\n");
    free(out);
    out = run("chess perft --fen '8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - -' --depth 3 --divide",
              &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "e2e4: "));
    assert_non_null(strstr(out, "\n2812\n"));
    free(out);
    free(run("chess perft --fen 'not a fen' --depth 1", &status));
    assert_int_equal(status, 1);
}

static void test_legal(void **state) {
    (void)state;
    int status;
    char *out = run("chess legal --uci 'd2d4 d7d5 c2c4 d5c4'", &status);
    assert_int_equal(status, 0);
    const char *first = "{\"position\":0,\"token\":\"<s>\",\"move_index\":-1,\"phase\":\"special\","
                        "\"n_legal\":10,\"legal_next\":[\"a2\",\"b1\",\"b2\",\"c2\",\"d2\",\"e2\","
                        "\"f2\",\"g1\",\"g2\",\"h2\"]}\n";
    assert_true(strncmp(out, first, strlen(first)) == 0);
    assert_non_null(strstr(out, "{\"position\":7,\"token\":\"d5\",\"move_index\":3,\"phase\":"
                                "\"black_from\",\"n_legal\":1,\"legal_next\":[\"c4\"]}"));
    free(out);
    /* an illegal game prints nothing on stdout: the whole game is checked first */
    out = run("chess legal --uci 'e2e4 e7e5 e1e3'", &status);
    assert_int_equal(status, 1);
    assert_string_equal(out, "");
    free(out);
}

static void test_pgn2uci(void **state) {
    (void)state;
    const char *dir = getenv("CHESSLENS_TEST_TMPDIR");
    char path[512], args[700];
    snprintf(path, sizeof path, "%s/cli.pgn", dir ? dir : ".");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("[Event \"a\"]\n\n1. e4 {[%clk 0:01:00]} e5 (1... c5) 2. Nf3 $1 1-0\n\n"
          "[Event \"bad\"]\n\n1. e4 e5 2. Ke3 0-1\n\n"
          "[Event \"b\"]\n\n1. d4 d5 *\n",
          f);
    fclose(f);
    int status;
    snprintf(args, sizeof args, "chess pgn2uci '%s'", path);
    char *out = run(args, &status);
    assert_int_equal(status, 0);
    assert_string_equal(out, "e2e4 e7e5 g1f3\nd2d4 d7d5\n");
    free(out);
    snprintf(args, sizeof args, "chess pgn2uci '%s' 2>&1 >/dev/null", path);
    out = run(args, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "skipped game 2 (line 5): move 2. Ke3: illegal"));
    assert_non_null(strstr(out, "2 games converted, 1 skipped"));
    free(out);
    free(run("chess pgn2uci /nonexistent/file.pgn", &status));
    assert_int_equal(status, 1);
    remove(path);
}

int main(void) {
    if (access(CHESSLENS, X_OK) != 0) {
        fprintf(stderr, "test_cli: %s not built, skipping\n", CHESSLENS);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_perft),
        cmocka_unit_test(test_legal),
        cmocka_unit_test(test_pgn2uci),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
