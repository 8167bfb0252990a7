/*
 * test_perft_deep: the deep published perft counts (label slow; seconds in Release, minutes
 * under sanitizers): initial position to depth 6, Kiwipete to depth 5, positions 3-5 to the
 * depths commonly published.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "chess/chess.h"
#include "common/common.h"

typedef struct perft_case {
    const char *fen;
    int depth;
    uint64_t nodes;
} perft_case;

static const perft_case cases[] = {
    {CHESS_START_FEN, 6, 119060324},
    {"r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq -", 5, 193690690},
    {"8/2p5/3p4/KP5r/1R3p1k/8/4P1P1/8 w - -", 7, 178633661},
    {"r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1", 6, 706045033},
    {"rnbq1k1r/pp1Pbppp/2p5/8/2B5/8/PPP1NnPP/RNBQK2R w KQ - 1 8", 5, 89941194},
    {"r4rk1/1pp1qppp/p1np1n2/2b1p1B1/2B1P1b1/P1NP1N2/1PP1QPPP/R4RK1 w - - 0 10", 5, 164075551},
};

static void test_perft_deep_counts(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        chess_position pos;
        char err[COMMON_ERR_LEN] = "";
        if (chess_position_from_fen(&pos, cases[i].fen, err) != 0) {
            fail_msg("%s: %s", cases[i].fen, err);
        }
        uint64_t nodes = chess_perft(&pos, cases[i].depth);
        if (nodes != cases[i].nodes) {
            fail_msg("perft(%s, %d) = %llu, expected %llu", cases[i].fen, cases[i].depth,
                     (unsigned long long)nodes, (unsigned long long)cases[i].nodes);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_perft_deep_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
