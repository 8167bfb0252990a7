/*
 * test_fen: FEN in and out. Round trips of the standard positions, defaults for omitted
 * counters, the en-passant square kept only when a capture is legal, and rejection (with an
 * error, never a crash) of malformed text and of positions the move generator cannot trust.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "chess/chess.h"
#include "common/common.h"

static void test_round_trip(void **state) {
    (void)state;
    static const char *fens[] = {
        CHESS_START_FEN,
        "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1",
        "8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - - 0 1",
        "r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1",
        "rnbq1k1r/pp1Pbppp/2p5/8/2B5/8/PPP1NnPP/RNBQK2R w KQ - 1 8",
        "rnbqkbnr/ppp1p1pp/8/3pPp2/8/8/PPPP1PPP/RNBQKBNR w KQkq f6 0 3",
        "4k3/8/8/8/8/8/8/4K3 b - - 99 150",
    };
    for (size_t i = 0; i < sizeof fens / sizeof fens[0]; i++) {
        chess_position pos;
        char out[CHESS_FEN_MAX], err[COMMON_ERR_LEN] = "";
        if (chess_position_from_fen(&pos, fens[i], err) != 0) {
            fail_msg("%s: %s", fens[i], err);
        }
        chess_position_to_fen(&pos, out);
        assert_string_equal(out, fens[i]);
    }
    chess_position a, b;
    chess_position_init(&a);
    assert_int_equal(chess_position_from_fen(&b, CHESS_START_FEN, NULL), 0);
    assert_memory_equal(&a, &b, sizeof a);
}

static void test_defaults_and_whitespace(void **state) {
    (void)state;
    chess_position pos;
    char out[CHESS_FEN_MAX];
    assert_int_equal(chess_position_from_fen(
                         &pos, "  rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq -  ", NULL),
                     0);
    chess_position_to_fen(&pos, out);
    assert_string_equal(out, CHESS_START_FEN);
    assert_int_equal(chess_position_from_fen(&pos, "4k3/8/8/8/8/8/8/4K3 b - - 7", NULL), 0);
    assert_int_equal(pos.halfmove, 7);
    assert_int_equal(pos.fullmove, 1);
}

static void test_en_passant_square_kept_only_when_legal(void **state) {
    (void)state;
    chess_position pos;
    char out[CHESS_FEN_MAX];
    /* no black pawn can capture on e3 */
    assert_int_equal(chess_position_from_fen(&pos, "4k3/8/8/8/4P3/8/8/4K3 b - e3 0 1", NULL), 0);
    assert_int_equal(pos.ep_square, -1);
    chess_position_to_fen(&pos, out);
    assert_string_equal(out, "4k3/8/8/8/4P3/8/8/4K3 b - - 0 1");
    /* a capturer exists */
    assert_int_equal(chess_position_from_fen(&pos, "4k3/8/8/8/3pP3/8/8/4K3 b - e3 0 1", NULL), 0);
    assert_int_equal(pos.ep_square, 20);
}

static void test_rejects_bad_fens(void **state) {
    (void)state;
    static const struct {
        const char *fen;
        int code;
    } bad[] = {
        {"", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR x KQkq - 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP w KQkq - 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/9/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNRR w KQkq - 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/44/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR/8 w KQkq - 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/ppppxppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkqK - 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KX - 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq e9 0 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - x 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1 extra", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 99999999999 1", COMMON_ERR_PARSE},
        {"rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNRw KQkq - 0 1", COMMON_ERR_PARSE},
        {"8/8/8/8/8/8/8/8 w - - 0 1", COMMON_ERR_INVALID},                  /* no kings */
        {"4k3/8/8/8/8/8/8/3KK3 w - - 0 1", COMMON_ERR_INVALID},             /* two kings */
        {"4k3/8/8/8/8/8/8/P3K3 w - - 0 1", COMMON_ERR_INVALID},             /* pawn on rank 1 */
        {"4k2P/8/8/8/8/8/8/4K3 w - - 0 1", COMMON_ERR_INVALID},             /* pawn on rank 8 */
        {"4k3/4Q3/8/8/8/8/8/4K3 w - - 0 1", COMMON_ERR_INVALID},            /* Black in check */
        {"4k3/8/8/8/8/8/8/4K3 w K - 0 1", COMMON_ERR_INVALID},              /* right, no rook */
        {"4k3/8/8/8/8/8/8/R4K2 w Q - 0 1", COMMON_ERR_INVALID},             /* king moved */
        {"4k3/8/8/8/8/8/8/4K3 w - e6 0 1", COMMON_ERR_INVALID},             /* no pawn pushed */
        {"4k3/8/8/4p3/8/8/8/4K3 w - e3 0 1", COMMON_ERR_INVALID},           /* wrong rank */
        {"QQQQQQQQ/QQQQQQQQ/8/8/8/8/8/4K2k w - - 0 1", COMMON_ERR_INVALID}, /* 17 white pieces */
        {"4k3/8/8/8/8/PPPPPPPP/P7/4K3 w - - 0 1", COMMON_ERR_INVALID},      /* nine pawns */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        chess_position pos;
        memset(&pos, 0x5a, sizeof pos);
        chess_position before = pos;
        char err[COMMON_ERR_LEN] = "";
        int rc = chess_position_from_fen(&pos, bad[i].fen, err);
        if (rc != bad[i].code) {
            fail_msg("'%s': rc %d (%s), expected %d", bad[i].fen, rc, err, bad[i].code);
        }
        assert_true(strncmp(err, "fen: ", 5) == 0);
        assert_memory_equal(&pos, &before, sizeof pos); /* untouched on failure */
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_defaults_and_whitespace),
        cmocka_unit_test(test_en_passant_square_kept_only_when_legal),
        cmocka_unit_test(test_rejects_bad_fens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
