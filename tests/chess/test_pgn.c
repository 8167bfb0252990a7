/*
 * test_pgn: the streaming PGN reader on hand-written PGN with every feature of real databases
 * (lichess-style tags, `%clk` / `%eval` comments, nested variations, NAGs, move numbers with
 * `...`, glued move numbers, all four results, `;` and `%` lines, escaped tag values, set-up
 * tags naming the initial position) and with malformed games that must be skipped with a
 * counted reason while reading goes on: games from another position (the models read games
 * from the initial position) and games with NUL bytes among them, through the buffer and the
 * FILE* paths alike; then the SAN writer and the reader round-tripping thousands of random
 * games through a file larger than the reader's chunk.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chess/chess.h"
#include "common/common.h"

static const char good_pgn[] =
    "% an escape line, ignored\n"
    "[Event \"Rated Blitz game\"]\n"
    "[Site \"https://lichess.org/AbCdEfGh\"]\n"
    "[White \"alice \\\"the rook\\\"\"]\n"
    "[Black \"bob\"]\n"
    "[Result \"1-0\"]\n"
    "[WhiteElo \"1500\"]\n"
    "[TimeControl \"180+0\"]\n"
    "\n"
    "1. e4 { [%eval 0.17] [%clk 0:03:00] } 1... e5 { [%eval 0.2] [%clk 0:03:00] } 2. Nf3 $1\n"
    "( 2. Bc4 Nc6 ( 2... Nf6 3. d3 { a comment (with parentheses) } ) 3. Qh5 ) 2... Nc6!?\n"
    "3. Bb5 a6 $6 4. Ba4 ; a rest-of-line comment 5. Bxc6\n"
    "Nf6 5. O-O Be7 6. Re1 b5 7. Bb3 d6 8. c3 O-O 9. h3 { multi\n"
    "line comment } 1-0\n"
    "\n"
    "[Event \"glued numbers, no blank line before the next game\"]\n"
    "[Result \"0-1\"]\n"
    "1.f3 e5 2.g4?? Qh4# 0-1\n"
    "[Event \"set-up tags naming the initial position\"]\n"
    "[SetUp \"1\"]\n"
    "[FEN \"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1\"]\n"
    "[Variant \"From Position\"]\n"
    "[Result \"1/2-1/2\"]\n"
    "\n"
    "1. e4 d5 2. exd5 c6 3. dxc6 Qb6 4. cxb7 Qxf2+ 5. Kxf2 e5 6. bxc8=Q+ { check } 6... Ke7\n"
    "1/2-1/2\n"
    "\n"
    "[Event \"no moves\"]\n"
    "[SetUp \"0\"]\n"
    "\n"
    "*\n"
    "\n"
    "1. d4 d5 2. c4 dxc4 1/2-1/2\n";

static void test_reads_every_feature(void **state) {
    (void)state;
    static const char *expected[] = {
        "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6 b5a4 g8f6 e1g1 f8e7 f1e1 b7b5 a4b3 d7d6 c2c3 e8g8 h2h3",
        "f2f3 e7e5 g2g4 d8h4",
        "e2e4 d7d5 e4d5 c7c6 d5c6 d8b6 c6b7 b6f2 e1f2 e7e5 b7c8q e8e7",
        "",
        "d2d4 d7d5 c2c4 d5c4",
    };
    chess_pgn_reader *r;
    char err[COMMON_ERR_LEN];
    assert_int_equal(chess_pgn_reader_new_buffer(&r, good_pgn, strlen(good_pgn), err), 0);
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        chess_game *g;
        int rc = chess_pgn_reader_next(r, &g, err);
        if (rc != CHESS_PGN_GAME) {
            fail_msg("game %zu: rc %d: %s", i + 1, rc, err);
        }
        char *uci;
        assert_int_equal(chess_game_to_uci(g, &uci, NULL), 0);
        assert_string_equal(uci, expected[i]);
        free(uci);
        if (i == 0) {
            assert_string_equal(chess_pgn_reader_tag(r, "White"), "alice \"the rook\"");
            assert_string_equal(chess_pgn_reader_tag(r, "TimeControl"), "180+0");
            assert_null(chess_pgn_reader_tag(r, "Termination"));
        }
        if (i == 1) {
            assert_int_equal(chess_game_status(g, false), CHESS_CHECKMATE);
        }
        chess_game_destroy(&g);
    }
    chess_game *g;
    assert_int_equal(chess_pgn_reader_next(r, &g, err), CHESS_PGN_END);
    assert_null(g);
    size_t n_games, n_skipped;
    chess_pgn_reader_counts(r, &n_games, &n_skipped);
    assert_int_equal(n_games, 5);
    assert_int_equal(n_skipped, 0);
    chess_pgn_reader_destroy(&r);
    assert_null(r);
}

static const char bad_pgn[] =
    "[Event \"ok 1\"]\n\n1. e4 e5 1-0\n\n"
    "[Event \"illegal\"]\n\n1. e4 e5 2. Ke3 Nc6 3. Nf3 0-1\n\n"
    "[Event \"ok 2\"]\n\n1. d4 *\n\n"
    "[Event \"malformed move\"]\n\n1. e4 e5 2. Nf9 *\n\n"
    "[Event \"variant\"]\n[Variant \"Atomic\"]\n\n1. e4 *\n\n"
    "[Event \"bad fen\"]\n[FEN \"8/8/8/8/8/8/8/8 w - - 0 1\"]\n\n1. e4 *\n\n"
    "[Event \"ambiguous\"]\n[Site \"?\"]\n\n1. a4 a5 2. h4 h5 3. Ra3 Ra6 4. Rhh3 Rhh6 5. Re3 *\n\n"
    "[Event \"no result\"]\n\n1. e4 e5\n\n"
    "[Event \"ok 3\"]\n\n1. c4 1/2-1/2\n\n"
    "[Event \"unbalanced\"]\n\n1. e4 ) e5 *\n\n"
    "[Event \"broken tag\n\n1. e4 *\n\n"
    "[Event \"ok 4\"]\n\n1. Nf3 *\n\n"
    "[Event \"unterminated variation\"]\n\n1. e4 ( 1. d4 d5 *\n\n"
    "[Event \"ok 5\"]\n\n1. g3 *\n\n"
    "[Event \"unterminated comment\"]\n\n1. e4 { never closed *\n\n";

static void test_skips_malformed_games_and_goes_on(void **state) {
    (void)state;
    static const char *good[] = {"e2e4 e7e5", "d2d4", "c2c4", "g1f3", "g2g3"};
    static const char *reasons[] = {
        "game 2 (line 5): move 2. Ke3: illegal",
        "game 4 (line 13): move 2. Nf9: malformed",
        "game 5 (line 17): unsupported variant 'Atomic'",
        "game 6 (line 22): bad FEN tag",
        "game 7 (line 27): move 5. Re3: ambiguous",
        "game 8 (line 32): no result",
        "game 10 (line 40): unbalanced ')'",
        "game 11 (line 44): malformed tag pair",
        "game 13 (line 52): unterminated variation",
        "game 15 (line 60): unterminated comment",
    };
    chess_pgn_reader *r;
    char err[COMMON_ERR_LEN];
    assert_int_equal(chess_pgn_reader_new_buffer(&r, bad_pgn, strlen(bad_pgn), err), 0);
    size_t n_good = 0, n_bad = 0;
    for (;;) {
        chess_game *g;
        int rc = chess_pgn_reader_next(r, &g, err);
        if (rc == CHESS_PGN_END) {
            break;
        }
        if (rc == CHESS_PGN_SKIPPED) {
            assert_true(n_bad < sizeof reasons / sizeof reasons[0]);
            if (strncmp(err, reasons[n_bad], strlen(reasons[n_bad])) != 0) {
                fail_msg("skip %zu: '%s', expected '%s...'", n_bad, err, reasons[n_bad]);
            }
            n_bad++;
            continue;
        }
        assert_int_equal(rc, CHESS_PGN_GAME);
        assert_true(n_good < 5);
        if (n_good == 0) {
            assert_string_equal(chess_pgn_reader_tag(r, "Event"), "ok 1");
        }
        char *uci;
        assert_int_equal(chess_game_to_uci(g, &uci, NULL), 0);
        assert_string_equal(uci, good[n_good]);
        free(uci);
        chess_game_destroy(&g);
        n_good++;
    }
    assert_int_equal(n_good, 5);
    assert_int_equal(n_bad, 10);
    size_t n_games, n_skipped;
    chess_pgn_reader_counts(r, &n_games, &n_skipped);
    assert_int_equal(n_games, 5);
    assert_int_equal(n_skipped, 10);
    chess_pgn_reader_destroy(&r);
}

/* Reads data[0..len) to the end through the buffer reader (as_file false) or through a
 * temporary file (as_file true) and writes one line per item into out (a malloc'd string the
 * caller frees): "G <uci moves>" for a game, "S <reason>" for a skipped game. */
static char *read_all(const char *data, size_t len, bool as_file) {
    FILE *f = NULL;
    chess_pgn_reader *r;
    char err[COMMON_ERR_LEN];
    if (as_file) {
        f = tmpfile();
        assert_non_null(f);
        assert_int_equal(fwrite(data, 1, len, f), len);
        rewind(f);
        assert_int_equal(chess_pgn_reader_new_file(&r, f, err), 0);
    } else {
        assert_int_equal(chess_pgn_reader_new_buffer(&r, data, len, err), 0);
    }
    size_t cap = 1024, used = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    out[0] = '\0';
    for (;;) {
        chess_game *g;
        int rc = chess_pgn_reader_next(r, &g, err);
        assert_true(rc >= 0);
        if (rc == CHESS_PGN_END) {
            break;
        }
        char *uci = NULL;
        if (rc == CHESS_PGN_GAME) {
            char fen[CHESS_FEN_MAX];
            chess_position_to_fen(chess_game_start(g), fen);
            assert_string_equal(fen, CHESS_START_FEN);
            assert_int_equal(chess_game_to_uci(g, &uci, NULL), 0);
            chess_game_destroy(&g);
        } else {
            assert_int_equal(rc, CHESS_PGN_SKIPPED);
            assert_null(g);
        }
        const char *text = uci ? uci : err;
        size_t need = used + strlen(text) + 4;
        if (need > cap) {
            cap = 2 * need;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        used += (size_t)sprintf(out + used, "%c %s\n", uci ? 'G' : 'S', text);
        free(uci);
    }
    chess_pgn_reader_destroy(&r);
    if (f) {
        fclose(f);
    }
    return out;
}

/* Reads data through both paths and checks both give expected. */
static void expect_items(const char *data, size_t len, const char *expected) {
    for (int as_file = 0; as_file < 2; as_file++) {
        char *got = read_all(data, len, as_file);
        if (strcmp(got, expected) != 0) {
            fail_msg("%s path:\n%s\nexpected:\n%s", as_file ? "FILE*" : "buffer", got, expected);
        }
        free(got);
    }
}

/* A game that does not start from the initial position is skipped: a [FEN] tag with another
 * position (wherever it stands among the tags, past the ones the reader keeps too), [SetUp "1"]
 * or [Variant "From Position"] without a FEN. A FEN of the initial position and [SetUp "0"]
 * are read as usual. */
static void test_skips_games_not_from_initial_position(void **state) {
    (void)state;
    char many_tags[64 * 16 + 1] = "";
    for (int i = 0; i < 64; i++) {
        char tag[32];
        snprintf(tag, sizeof tag, "[T%d \"x\"]\n", i); /* 64 lines */
        strcat(many_tags, tag);
    }
    char pgn[4096];
    int n =
        snprintf(pgn, sizeof pgn,
                 "[Event \"castling from a position\"]\n"
                 "[SetUp \"1\"]\n"
                 "[FEN \"r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1\"]\n"
                 "\n"
                 "1. O-O O-O *\n"
                 "\n"
                 "[Event \"the initial position\"]\n" /* line 7 */
                 "[SetUp \"1\"]\n"
                 "[FEN \"" CHESS_START_FEN "\"]\n"
                 "\n"
                 "1. e4 *\n"
                 "\n"
                 "[SetUp \"0\"]\n" /* line 13 */
                 "1. d4 *\n"
                 "[SetUp \"1\"]\n" /* line 15 */
                 "1. c4 *\n"
                 "[FEN \"4k3/8/8/8/8/8/p7/4K3 b - - 0 40\"]\n" /* line 17 */
                 "[Variant \"From Position\"]\n"
                 "40... a1=N 41. Kd2 *\n"
                 "[Event \"the FEN past the tags kept\"]\n" /* line 20 */
                 "%s"
                 "[FEN \"4k3/8/8/8/8/8/4P3/4K3 w - - 0 1\"]\n"
                 "1. e4 *\n"
                 "[FEN \"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq -\"]\n" /* line 87 */
                 "1. g3 *\n"
                 "[FEN \"" CHESS_START_FEN "\"]\n" /* line 89 */
                 "[FEN \"r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1\"]\n"
                 "1. O-O *\n"
                 "[Variant \"From Position\"]\n" /* line 92 */
                 "1. e3 *\n"
                 "[FEN \"8/8/8/8/8/8/8/8 w - - 0 1\"]\n" /* line 94 */
                 "1. e4 *\n"
                 "[FEN \"" CHESS_START_FEN "%250s\"]\n" /* line 96: cut where the tags are kept */
                 "1. e4 *\n",
                 many_tags, "x");
    assert_true(n > 0 && (size_t)n < sizeof pgn);
    expect_items(pgn, strlen(pgn),
                 "S game 1 (line 1): does not start from the initial position ([FEN] tag)\n"
                 "G e2e4\n"
                 "G d2d4\n"
                 "S game 4 (line 15): does not start from the initial position ([SetUp \"1\"] "
                 "without a [FEN] tag)\n"
                 "S game 5 (line 17): does not start from the initial position ([FEN] tag)\n"
                 "S game 6 (line 20): does not start from the initial position ([FEN] tag)\n"
                 "G g2g3\n"
                 "S game 8 (line 89): does not start from the initial position ([FEN] tag)\n"
                 "S game 9 (line 92): does not start from the initial position ([Variant \"From "
                 "Position\"] without a [FEN] tag)\n"
                 "S game 10 (line 94): bad FEN tag: fen: each side needs exactly one king\n"
                 "S game 11 (line 96): bad FEN tag: longer than 255 bytes\n");
}

/* A NUL byte anywhere in a game (a move, a tag, a comment, a line between games) skips that
 * game with the line of the NUL; nothing is read past it as if it ended the text. */
static void test_nul_byte_skips_the_game(void **state) {
    (void)state;
    static const char moves[] =
        "[Event \"a\"]\n\n1. e4 e5\n2. Nf3\0Nc6 *\n\n[Event \"b\"]\n\n1. d4 *\n";
    expect_items(moves, sizeof moves - 1, "S game 1 (line 1): NUL byte in line 4\nG d2d4\n");
    static const char glued[] = "1. Nf3\0garbage *\n1. e4 *\n";
    expect_items(glued, sizeof glued - 1, "S game 1 (line 1): NUL byte in line 1\nG e2e4\n");
    static const char result[] = "1. e4 1-0\0\n1. d4 *\n";
    expect_items(result, sizeof result - 1, "S game 1 (line 1): NUL byte in line 1\nG d2d4\n");
    static const char tag[] = "[Event \"x\0y\"]\n1. e4 *\n1. d4 *\n";
    expect_items(tag, sizeof tag - 1, "S game 1 (line 1): NUL byte in line 1\nG d2d4\n");
    static const char comment[] = "1. e4 {\n a \0 comment } *\n1. d4 *\n";
    expect_items(comment, sizeof comment - 1, "S game 1 (line 1): NUL byte in line 2\nG d2d4\n");
    static const char between[] = "1. e4 *\n\0\n[Event \"b\"]\n1. d4 *\n";
    expect_items(between, sizeof between - 1,
                 "G e2e4\nS game 2 (line 2): NUL byte in line 2\nG d2d4\n");
    static const char escape[] = "1. e4 *\n%\0\n[Event \"b\"]\n1. d4 *\n";
    expect_items(escape, sizeof escape - 1, "G e2e4\nS game 2 (line 3): NUL byte in line 2\n");
    static const char trailing[] = "1. e4 *\n% trailing\0 escape\n\n";
    expect_items(trailing, sizeof trailing - 1, "G e2e4\nS game 2 (line 2): NUL byte in line 2\n");
    static const char only[] = "\0";
    expect_items(only, 1, "S game 1 (line 1): NUL byte in line 1\n");
}

/* A NUL past the FILE* reader's first chunk is found on both paths alike. */
static void test_nul_byte_past_the_first_chunk(void **state) {
    (void)state;
    enum { GAMES = 7000, BAD = 6500 };
    static const char game[] = "1. e4 e5 *\n"; /* 11 bytes: 77,000 in all */
    size_t len = GAMES * (sizeof game - 1);
    char *pgn = malloc(len);
    assert_non_null(pgn);
    for (size_t i = 0; i < GAMES; i++) {
        memcpy(pgn + i * (sizeof game - 1), game, sizeof game - 1);
    }
    pgn[(BAD - 1) * (sizeof game - 1) + 4] = '\0'; /* "1. e\0 e5 *" */
    size_t cap = GAMES * 16 + 64;
    char *expected = malloc(cap);
    assert_non_null(expected);
    size_t used = 0;
    for (size_t i = 1; i <= GAMES; i++) {
        if (i == BAD) {
            used += (size_t)snprintf(expected + used, cap - used,
                                     "S game %zu (line %zu): NUL byte in line %zu\n", i, i, i);
        } else {
            used += (size_t)snprintf(expected + used, cap - used, "G e2e4 e7e5\n");
        }
    }
    expect_items(pgn, len, expected);
    free(expected);
    free(pgn);
}

static void test_empty_input(void **state) {
    (void)state;
    chess_pgn_reader *r;
    chess_game *g;
    assert_int_equal(chess_pgn_reader_new_buffer(&r, "", 0, NULL), 0);
    assert_int_equal(chess_pgn_reader_next(r, &g, NULL), CHESS_PGN_END);
    chess_pgn_reader_destroy(&r);
    assert_int_equal(chess_pgn_reader_new_buffer(&r, "\n\n  \n% only escapes\n", 20, NULL), 0);
    assert_int_equal(chess_pgn_reader_next(r, &g, NULL), CHESS_PGN_END);
    chess_pgn_reader_destroy(&r);
}

/* Random games written as PGN (SAN writer) to a file larger than the reader's 64 KiB chunk and
 * read back through the FILE* reader give the same moves. */
static void test_write_read_round_trip(void **state) {
    (void)state;
    enum { GAMES = 1500 };
    const char *dir = getenv("CHESSLENS_TEST_TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/round_trip.pgn", dir ? dir : ".");
    FILE *f = fopen(path, "w+b");
    assert_non_null(f);
    char *ucis[GAMES];
    for (size_t i = 0; i < GAMES; i++) {
        chess_game *g;
        assert_int_equal(
            chess_random_game(&g, chess_random_game_seed(11, i), i % 2 ? 127 : 0, NULL), 0);
        assert_int_equal(chess_game_write_pgn(g, f, NULL), 0);
        assert_int_equal(chess_game_to_uci(g, &ucis[i], NULL), 0);
        chess_game_destroy(&g);
    }
    assert_true(ftell(f) > 3 * 65536);
    rewind(f);
    chess_pgn_reader *r;
    char err[COMMON_ERR_LEN];
    assert_int_equal(chess_pgn_reader_new_file(&r, f, err), 0);
    for (size_t i = 0; i < GAMES; i++) {
        chess_game *g;
        int rc = chess_pgn_reader_next(r, &g, err);
        if (rc != CHESS_PGN_GAME) {
            fail_msg("game %zu: %d %s", i, rc, err);
        }
        char *uci;
        assert_int_equal(chess_game_to_uci(g, &uci, NULL), 0);
        assert_string_equal(uci, ucis[i]);
        free(uci);
        free(ucis[i]);
        chess_game_destroy(&g);
    }
    chess_game *g;
    assert_int_equal(chess_pgn_reader_next(r, &g, err), CHESS_PGN_END);
    chess_pgn_reader_destroy(&r);
    fclose(f);
    remove(path);
}

/* The PGN writer's text for a known game. */
static void test_write_pgn_text(void **state) {
    (void)state;
    chess_game *g;
    assert_int_equal(chess_game_new(&g, NULL, NULL), 0);
    assert_int_equal(chess_game_push_uci_line(g, "f2f3 e7e5 g2g4 d8h4", NULL), 0);
    char buf[1024] = "";
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(chess_game_write_pgn(g, f, NULL), 0);
    rewind(f);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    assert_non_null(strstr(buf, "[Result \"0-1\"]\n"));
    assert_non_null(strstr(buf, "\n\n1. f3 e5 2. g4 Qh4# 0-1\n"));
    chess_game_destroy(&g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_every_feature),
        cmocka_unit_test(test_skips_malformed_games_and_goes_on),
        cmocka_unit_test(test_skips_games_not_from_initial_position),
        cmocka_unit_test(test_nul_byte_skips_the_game),
        cmocka_unit_test(test_nul_byte_past_the_first_chunk),
        cmocka_unit_test(test_empty_input),
        cmocka_unit_test(test_write_read_round_trip),
        cmocka_unit_test(test_write_pgn_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
