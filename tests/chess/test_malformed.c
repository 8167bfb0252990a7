/*
 * test_malformed: a fixed corpus of malformed input through both parsers (the same kind of
 * input the fuzz targets in fuzz/ generate): FEN text that is wrong in every field, cut at
 * every length, or binary; PGN cut at every byte, with NUL bytes, huge tokens, deep nesting
 * and garbage. Each must give an error or a skipped game and the reader must reach the end;
 * run under the Debug build's sanitizers this also proves no memory errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chess/chess.h"
#include "common/common.h"

static const char *bad_fens[] = {
    "/",
    "////////",
    "8/8/8/8/8/8/8/8/8/8/8/8 w - - 0 1",
    "K7/8/8/8/8/8/8/7k w - - 0 1 2 3",
    "K7/8/8/8/8/8/8/7k w - - -1 1",
    "K7/8/8/8/8/8/8/7k w - - 0 -1",
    "K7/8/8/8/8/8/8/7k w - - 0 1a",
    "K7/8/8/8/8/8/8/7k  w  -  -  0",
    "K7/8/8/8/8/8/8/7k w --",
    "K7/8/8/8/8/8/8/7k w - a",
    "K7/8/8/8/8/8/8/7k w - a1",
    "K7/8/8/8/8/8/8/7k w - h9 0 1",
    "K7/8/8/8/8/8/8/7k w KQkqKQkq - 0 1",
    "K7/8/8/8/8/8/8/7k W - - 0 1",
    "K7/8/8/8/8/8/8/7k\tw\t-\t-\t0\t1\t",
    "K7/8/8/8/8/8/8/7k w - - 0 1\n",
    "K7/8/8/8/8/8/8/7k\xff w - - 0 1",
    "K7/8/8/8/8/8/8/7\xc3\xa9 w - - 0 1",
    "K8/8/8/8/8/8/8/7k w - - 0 1",
    "K07/8/8/8/8/8/8/7k w - - 0 1",
    "K7/8/8/8/8/8/8/6kk w - - 0 1",
    "K7/8/8/8/8/8/8/7k b - - 0 1 ",
    "k7/8/8/8/8/8/8/7K w - - 4294967296 1",
    "1K6/8/8/8/8/8/8/7k w - - 0 18446744073709551617",
};

static void test_fen_corpus(void **state) {
    (void)state;
    size_t rejected = 0;
    for (size_t i = 0; i < sizeof bad_fens / sizeof bad_fens[0]; i++) {
        chess_position pos;
        char err[COMMON_ERR_LEN] = "";
        int rc = chess_position_from_fen(&pos, bad_fens[i], err);
        if (rc != 0) {
            assert_true(rc == COMMON_ERR_PARSE || rc == COMMON_ERR_INVALID);
            assert_true(strlen(err) > 5);
            rejected++;
        } else {
            /* accepted with lenient whitespace: must still describe a sane position */
            assert_int_equal(__builtin_popcountll(pos.pieces[0][CHESS_KING]), 1);
        }
    }
    assert_true(rejected >= sizeof bad_fens / sizeof bad_fens[0] - 3);
}

/* Every prefix of valid FENs either parses or fails cleanly. */
static void test_fen_truncations(void **state) {
    (void)state;
    static const char *fens[] = {
        "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1",
        "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3",
    };
    for (size_t f = 0; f < 2; f++) {
        size_t len = strlen(fens[f]);
        char buf[128];
        size_t parsed = 0;
        for (size_t n = 0; n <= len; n++) {
            memcpy(buf, fens[f], n);
            buf[n] = '\0';
            chess_position pos;
            parsed += chess_position_from_fen(&pos, buf, NULL) == 0;
        }
        /* only the prefixes ending after the en-passant field or a counter parse */
        assert_true(parsed >= 2 && parsed <= 8);
    }
}

/* Reads a buffer to the end; returns games + skipped, failing if the reader loops. */
static size_t drain(const char *data, size_t len) {
    chess_pgn_reader *r;
    char err[COMMON_ERR_LEN];
    assert_int_equal(chess_pgn_reader_new_buffer(&r, data, len, err), 0);
    size_t items = 0;
    for (;;) {
        chess_game *g = NULL;
        int rc = chess_pgn_reader_next(r, &g, err);
        assert_true(rc >= 0);
        if (rc == CHESS_PGN_END) {
            assert_null(g);
            break;
        }
        if (rc == CHESS_PGN_GAME) {
            assert_non_null(g);
            chess_game_destroy(&g);
        } else {
            assert_int_equal(rc, CHESS_PGN_SKIPPED);
            assert_null(g);
            assert_non_null(strstr(err, "game "));
        }
        items++;
        assert_true(items <= len + 1); /* each item consumes input */
    }
    size_t n_games, n_skipped;
    chess_pgn_reader_counts(r, &n_games, &n_skipped);
    assert_int_equal(n_games + n_skipped, items);
    chess_pgn_reader_destroy(&r);
    return items;
}

static const char sample_pgn[] =
    "[Event \"x\"]\n[FEN \"4k3/P7/8/8/8/8/8/4K3 w - - 0 1\"]\n\n"
    "1. a8=Q+ { [%clk 0:01:00] } Kd7 (1... Ke7 2. Qb7+) 2. Qb7+ $2 1/2-1/2\n\n"
    "[Event \"y\"]\n\n1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 4. O-O 1-0\n";

static void test_pgn_truncations(void **state) {
    (void)state;
    size_t len = strlen(sample_pgn);
    char *buf = malloc(len);
    assert_non_null(buf);
    for (size_t n = 0; n <= len; n++) {
        memcpy(buf, sample_pgn, n); /* exact-length buffer: no terminator to lean on */
        drain(buf, n);
    }
    free(buf);
    assert_int_equal(drain(sample_pgn, len), 2);
}

static void test_pgn_corpus(void **state) {
    (void)state;
    static const char *corpus[] = {
        "[",
        "]",
        "[[[[",
        "[Event",
        "[Event \"",
        "[Event \"x\"",
        "[Event \"x\\",
        "{",
        "}",
        "(",
        ")",
        "((((((((((((((((((((((((((((((((((((",
        "))))))))",
        "$",
        "$$$$",
        "1.",
        "1...",
        "1-0",
        "*",
        "1/2-1/2 1/2-1/2",
        "e4 e5 Nf3",
        ";",
        "%",
        "......",
        "1.e4!!!!!!!!!!!!!",
        "1. e4 e5 2. Qh5 Nc6 3. Bc4 Nf6 4. Qxf7# 1-0 garbage after",
        "[Event \"\"]\n[\"no name\"]\n\n*",
        "[FEN \"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1\"]\n1. O-O *",
        "[Variant \"Crazyhouse\"]\n1. e4 *",
        "1. e4 {unterminated ( [ ] } e5 *",
        "1. e4 e5 2. Nf3 Nc6 3. Bb5 a6 4. Bxc6 dxc6 5. O-O f6 6. d4 exd4 7. Nxd4 c5 8. Nb3 "
        "Qxd1 9. Rxd1 Bg4 10. f3 Be6 11. Nc3 Bd6 12. Be3 b6 13. a4 O-O-O 14. a5 Kb7 *",
    };
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        drain(corpus[i], strlen(corpus[i]));
    }
    /* NUL bytes, high bytes and a very long token in the middle of a game */
    char blob[2048];
    memset(blob, 'N', sizeof blob);
    memcpy(blob, "1. e4 ", 6);
    blob[100] = '\0';
    blob[101] = (char)0xff;
    memcpy(blob + sizeof blob - 4, " *\n", 3);
    assert_true(drain(blob, sizeof blob) >= 1);
    /* deep nesting of variations and comments in a long input */
    size_t n = 200000;
    char *deep = malloc(n);
    assert_non_null(deep);
    for (size_t i = 0; i < n; i++) {
        deep[i] = "({ )}"[i % 5];
    }
    drain(deep, n);
    free(deep);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fen_corpus),
        cmocka_unit_test(test_fen_truncations),
        cmocka_unit_test(test_pgn_truncations),
        cmocka_unit_test(test_pgn_corpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
