/*
 * test_perft: move generation against published perft counts. The six standard positions and
 * the special-case positions (illegal en passant, castling into and through check, promotion
 * out of check, self-stalemate, ...) run here at depths that take well under a second; the
 * deep counts run in test_perft_deep (label slow) and in bench/chess/bench_perft.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "chess/chess.h"
#include "common/common.h"

typedef struct perft_case {
    const char *fen;
    int depth;
    uint64_t nodes;
} perft_case;

/* Position 6's counts are for the FEN as written here (computed by this library and confirmed
 * with Stockfish 15.1's `go perft`). */
static const perft_case cases[] = {
    {CHESS_START_FEN, 1, 20},
    {CHESS_START_FEN, 2, 400},
    {CHESS_START_FEN, 3, 8902},
    {CHESS_START_FEN, 4, 197281},
    {"r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq -", 1, 48},
    {"r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq -", 2, 2039},
    {"r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq -", 3, 97862},
    {"8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - -", 1, 14},
    {"8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - -", 2, 191},
    {"8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - -", 3, 2812},
    {"8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - -", 4, 43238},
    {"8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - -", 5, 674624},
    {"r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1", 1, 6},
    {"r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1", 2, 264},
    {"r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1", 3, 9467},
    {"r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1", 4, 422333},
    /* position 4 mirrored (colours swapped): must give the same counts */
    {"r2q1rk1/pP1p2pp/Q4n2/bbp1p3/Np6/1B3NBn/pPPP1PPP/R3K2R b KQ - 0 1", 4, 422333},
    {"rnbq1k1r/pp1Pbppp/2p5/8/2B5/8/PPP1NnPP/RNBQK2R w KQ - 1 8", 1, 44},
    {"rnbq1k1r/pp1Pbppp/2p5/8/2B5/8/PPP1NnPP/RNBQK2R w KQ - 1 8", 2, 1486},
    {"rnbq1k1r/pp1Pbppp/2p5/8/2B5/8/PPP1NnPP/RNBQK2R w KQ - 1 8", 3, 62379},
    {"r4rk1/1pp1qppp/p1np1n2/2b1p1B1/2B1P1b1/P1NP1N2/1PP1QPPP/R4RK1 w - - 0 10", 1, 46},
    {"r4rk1/1pp1qppp/p1np1n2/2b1p1B1/2B1P1b1/P1NP1N2/1PP1QPPP/R4RK1 w - - 0 10", 2, 2079},
    {"r4rk1/1pp1qppp/p1np1n2/2b1p1B1/2B1P1b1/P1NP1N2/1PP1QPPP/R4RK1 w - - 0 10", 3, 89890},
    /* special cases (TalkChess perft tests by Martin Sedlak); counts at depths below the
     * published ones were confirmed with Stockfish 15.1 `go perft` */
    {"3k4/3p4/8/K1P4r/8/8/8/8 b - - 0 1", 6, 1134888},       /* illegal ep (pin on rank) */
    {"8/8/4k3/8/2p5/8/B2P2K1/8 w - - 0 1", 6, 1015133},      /* illegal ep (diagonal) */
    {"8/8/1k6/2b5/2pP4/8/5K2/8 b - d3 0 1", 6, 1440467},     /* ep capture gives check */
    {"5k2/8/8/8/8/8/8/4K2R w K - 0 1", 6, 661072},           /* short castling gives check */
    {"3k4/8/8/8/8/8/8/R3K3 w Q - 0 1", 6, 803711},           /* long castling gives check */
    {"r3k2r/1b4bq/8/8/8/8/7B/R3K2R w KQkq - 0 1", 3, 27826}, /* castling rights */
    {"r3k2r/8/3Q4/8/8/5q2/8/R3K2R b KQkq - 0 1", 3, 50509},  /* castling prevented */
    {"2K2r2/4P3/8/8/8/8/8/3k4 w - - 0 1", 5, 266199},        /* promote out of check */
    {"8/8/1P2K3/8/2n5/1q6/8/5k2 b - - 0 1", 4, 31961},       /* discovered check */
    {"4k3/1P6/8/8/8/8/K7/8 w - - 0 1", 6, 217342},           /* promote to give check */
    {"8/P1k5/K7/8/8/8/8/8 w - - 0 1", 6, 92683},             /* underpromote to give check */
    {"K1k5/8/P7/8/8/8/8/8 w - - 0 1", 6, 2217},              /* self stalemate */
    {"8/k1P5/8/1K6/8/8/8/8 w - - 0 1", 7, 567584},           /* stalemate and checkmate */
    {"8/8/2k5/5q2/5n2/8/5K2/8 b - - 0 1", 4, 23527},         /* stalemate and checkmate */
};

static void test_perft_counts(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        chess_position pos;
        char err[COMMON_ERR_LEN] = "";
        int rc = chess_position_from_fen(&pos, cases[i].fen, err);
        if (rc != 0) {
            fail_msg("%s: %s", cases[i].fen, err);
        }
        uint64_t nodes = chess_perft(&pos, cases[i].depth);
        if (nodes != cases[i].nodes) {
            fail_msg("perft(%s, %d) = %llu, expected %llu", cases[i].fen, cases[i].depth,
                     (unsigned long long)nodes, (unsigned long long)cases[i].nodes);
        }
    }
}

static void test_perft_depth_zero_is_one(void **state) {
    (void)state;
    chess_position pos;
    chess_position_init(&pos);
    assert_int_equal(chess_perft(&pos, 0), 1);
}

/* The divide (per-move) counts sum to the total and every move's subtree is counted once. */
static void test_perft_divide_sums(void **state) {
    (void)state;
    chess_position pos;
    assert_int_equal(
        chess_position_from_fen(
            &pos, "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq -", NULL),
        0);
    chess_move_list list;
    assert_int_equal(chess_generate_moves(&pos, &list), 48);
    uint64_t sum = 0;
    for (size_t i = 0; i < list.n; i++) {
        chess_position child = pos;
        chess_position_make_move(&child, list.moves[i]);
        sum += chess_perft(&child, 2);
    }
    assert_int_equal(sum, 97862);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perft_counts),
        cmocka_unit_test(test_perft_depth_zero_is_one),
        cmocka_unit_test(test_perft_divide_sums),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
