/*
 * test_san: Standard Algebraic Notation written and read: disambiguation by file, rank and
 * both, captures, en passant, promotions, castling, check and mate marks; the tolerant forms
 * real PGN uses; malformed, illegal and ambiguous text; and a round trip of every legal move
 * of thousands of positions from random games.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chess/chess.h"
#include "common/common.h"

static void expect_san(const char *fen, const char *uci, const char *san) {
    chess_position pos;
    char err[COMMON_ERR_LEN] = "";
    if (chess_position_from_fen(&pos, fen, err) != 0) {
        fail_msg("%s: %s", fen, err);
    }
    chess_move m;
    if (chess_move_from_uci(&pos, uci, &m, err) != 0) {
        fail_msg("%s %s: %s", fen, uci, err);
    }
    char text[CHESS_SAN_MAX];
    chess_move_to_san(&pos, m, text);
    if (strcmp(text, san) != 0) {
        fail_msg("%s %s: wrote '%s', expected '%s'", fen, uci, text, san);
    }
    chess_move back;
    if (chess_move_from_san(&pos, san, &back, err) != 0 || back != m) {
        fail_msg("%s: reading '%s' back: %s", fen, san, err);
    }
}

static void test_write_san(void **state) {
    (void)state;
    expect_san(CHESS_START_FEN, "e2e4", "e4");
    expect_san(CHESS_START_FEN, "g1f3", "Nf3");
    /* two knights reach d7: file disambiguation */
    expect_san("r1bqkbnr/pppnpppp/8/8/8/8/PPPPPPPP/RNBQKBNR b KQkq - 0 1", "g8f6", "Ngf6");
    expect_san("rn1qkb1r/ppp1pppp/5n2/8/8/8/PPPPPPPP/RNBQKBNR b KQkq - 0 1", "b8d7", "Nbd7");
    /* two rooks on one file: rank disambiguation */
    expect_san("4k3/8/8/R7/8/8/8/R3K3 w - - 0 1", "a1a3", "R1a3");
    expect_san("4k3/8/8/R7/8/8/8/R3K3 w - - 0 1", "a5a3", "R5a3");
    /* three queens: square disambiguation */
    expect_san("6k1/8/8/8/4Q2Q/8/8/K6Q w - - 0 1", "h4e1", "Qh4e1");
    /* captures, en passant, promotions */
    expect_san("4k3/8/8/3p4/4P3/8/8/4K3 w - - 0 1", "e4d5", "exd5");
    expect_san("4k3/8/8/3pP3/8/8/8/4K3 w - d6 0 1", "e5d6", "exd6");
    expect_san("4k3/P7/8/8/8/8/8/4K3 w - - 0 1", "a7a8q", "a8=Q+");
    expect_san("4k3/P7/8/8/8/8/8/4K3 w - - 0 1", "a7a8n", "a8=N");
    expect_san("1n2k3/P7/8/8/8/8/8/4K3 w - - 0 1", "a7b8r", "axb8=R+");
    expect_san("5b1k/4P1pp/8/8/8/8/8/4K3 w - - 0 1", "e7f8q", "exf8=Q#");
    /* castling, with check */
    expect_san("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1", "e1g1", "O-O");
    expect_san("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1", "e1c1", "O-O-O");
    expect_san("3k4/8/8/8/8/8/8/R3K3 w Q - 0 1", "e1c1", "O-O-O+");
    /* mate */
    expect_san("rnbqkbnr/pppp1ppp/8/4p3/6P1/5P2/PPPPP2P/RNBQKBNR b KQkq - 0 2", "d8h4", "Qh4#");
    /* a pinned knight does not count for disambiguation */
    expect_san("4k3/4r3/8/8/8/2N5/4N3/4K3 w - - 0 1", "c3d5", "Nd5");
}

static int parse(const char *fen, const char *san, char *uci_out) {
    chess_position pos;
    assert_int_equal(chess_position_from_fen(&pos, fen, NULL), 0);
    chess_move m;
    char err[COMMON_ERR_LEN];
    int rc = chess_move_from_san(&pos, san, &m, err);
    if (rc == 0) {
        chess_move_to_uci(m, uci_out);
    }
    return rc;
}

static void test_read_tolerant_forms(void **state) {
    (void)state;
    char uci[6];
    assert_int_equal(parse(CHESS_START_FEN, "Nf3!?", uci), 0);
    assert_string_equal(uci, "g1f3");
    assert_int_equal(parse(CHESS_START_FEN, "Ng1f3", uci), 0);
    assert_string_equal(uci, "g1f3");
    assert_int_equal(parse(CHESS_START_FEN, "Ng1-f3", uci), 0);
    assert_string_equal(uci, "g1f3");
    assert_int_equal(parse(CHESS_START_FEN, "e4??", uci), 0);
    assert_string_equal(uci, "e2e4");
    assert_int_equal(parse("r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1", "0-0", uci), 0);
    assert_string_equal(uci, "e1g1");
    assert_int_equal(parse("r3k2r/8/8/8/8/8/8/R3K2R b KQkq - 0 1", "0-0-0", uci), 0);
    assert_string_equal(uci, "e8c8");
    assert_int_equal(parse("4k3/P7/8/8/8/8/8/4K3 w - - 0 1", "a8Q", uci), 0);
    assert_string_equal(uci, "a7a8q");
    assert_int_equal(parse("4k3/P7/8/8/8/8/8/4K3 w - - 0 1", "a8=n", uci), 0);
    assert_string_equal(uci, "a7a8n");
    assert_int_equal(parse("4k3/8/8/3p4/4P3/8/8/4K3 w - - 0 1", "exd5+", uci), 0);
    assert_string_equal(uci, "e4d5");
    assert_int_equal(parse("4k3/8/8/3p4/4P3/8/8/4K3 w - - 0 1", "ed5", uci), 0);
    assert_string_equal(uci, "e4d5");
    /* "b" is a file for pawns, "B" a bishop */
    assert_int_equal(parse("4k3/8/8/8/8/2p5/1P1B4/4K3 w - - 0 1", "bxc3", uci), 0);
    assert_string_equal(uci, "b2c3");
    assert_int_equal(parse("4k3/8/8/8/8/2p5/1P1B4/4K3 w - - 0 1", "Bxc3", uci), 0);
    assert_string_equal(uci, "d2c3");
}

static void test_read_errors(void **state) {
    (void)state;
    char uci[6];
    assert_int_equal(parse(CHESS_START_FEN, "Nf4", uci), COMMON_ERR_INVALID); /* illegal */
    assert_int_equal(parse(CHESS_START_FEN, "O-O", uci), COMMON_ERR_INVALID); /* illegal */
    assert_int_equal(parse(CHESS_START_FEN, "Zf3", uci), COMMON_ERR_PARSE);   /* no piece */
    assert_int_equal(parse(CHESS_START_FEN, "e9", uci), COMMON_ERR_PARSE);    /* no square */
    assert_int_equal(parse(CHESS_START_FEN, "", uci), COMMON_ERR_PARSE);
    assert_int_equal(parse(CHESS_START_FEN, "+", uci), COMMON_ERR_PARSE);
    assert_int_equal(parse(CHESS_START_FEN, "Nf3xxx", uci), COMMON_ERR_PARSE);
    assert_int_equal(parse(CHESS_START_FEN, "Nxf3extremelylongtext", uci), COMMON_ERR_PARSE);
    assert_int_equal(parse(CHESS_START_FEN, "e2e4", uci), 0); /* over-specified pawn origin */
    assert_string_equal(uci, "e2e4");
    assert_int_equal(parse(CHESS_START_FEN, "e3e4", uci), COMMON_ERR_INVALID);
    assert_int_equal(parse(CHESS_START_FEN, "exd3", uci), COMMON_ERR_INVALID);
    /* ambiguous: two knights reach f6, two reach d7 */
    assert_int_equal(parse("r1bqkbnr/pppnpppp/8/8/8/8/PPPPPPPP/RNBQKBNR b KQkq - 0 1", "Nf6", uci),
                     COMMON_ERR_INVALID);
    assert_int_equal(
        parse("rn1qkb1r/ppp1pppp/5n2/8/8/8/PPPPPPPP/RNBQKBNR b KQkq - 0 1", "Nd7", uci),
        COMMON_ERR_INVALID);
    /* promotion must name a piece, and only a pawn promotes */
    assert_int_equal(parse("4k3/P7/8/8/8/8/8/4K3 w - - 0 1", "a8", uci), COMMON_ERR_INVALID);
    assert_int_equal(parse("4k3/P7/8/8/8/8/8/4K3 w - - 0 1", "a8=K", uci), COMMON_ERR_PARSE);
    assert_int_equal(parse(CHESS_START_FEN, "e4=Q", uci), COMMON_ERR_INVALID);
}

/* Every legal move of every position of 100 random games: SAN is unique within the position
 * and reads back as the same move. */
static void test_round_trip_random_positions(void **state) {
    (void)state;
    size_t checked = 0;
    for (uint64_t g = 0; g < 100; g++) {
        chess_game *game;
        assert_int_equal(chess_random_game(&game, chess_random_game_seed(5, g), 0, NULL), 0);
        chess_position pos = *chess_game_start(game);
        for (size_t i = 0; i <= chess_game_n_moves(game); i++) {
            chess_move_list list;
            chess_generate_moves(&pos, &list);
            char sans[CHESS_MAX_MOVES][CHESS_SAN_MAX];
            for (size_t k = 0; k < list.n; k++) {
                chess_move back;
                char err[COMMON_ERR_LEN] = "";
                chess_move_to_san(&pos, list.moves[k], sans[k]);
                if (chess_move_from_san(&pos, sans[k], &back, err) != 0 || back != list.moves[k]) {
                    fail_msg("'%s': %s", sans[k], err);
                }
                for (size_t j = 0; j < k; j++) {
                    assert_string_not_equal(sans[j], sans[k]);
                }
                checked++;
            }
            if (i < chess_game_n_moves(game)) {
                chess_position_make_move(&pos, chess_game_moves(game)[i]);
            }
        }
        chess_game_destroy(&game);
    }
    assert_true(checked > 100000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_san),
        cmocka_unit_test(test_read_tolerant_forms),
        cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_round_trip_random_positions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
