/*
 * test_game: UCI moves in and out, applying UCI games with the error contract (move number and
 * move named, earlier moves kept), and the seeded random-game generator (deterministic,
 * uniform over legal moves, within the token budget, legal when replayed).
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

static void test_uci_round_trip(void **state) {
    (void)state;
    chess_position pos;
    assert_int_equal(
        chess_position_from_fen(
            &pos, "r3k2r/Pppp1ppp/1b3nbN/nP6/BBP1P3/q4N2/Pp1P2PP/R2Q1RK1 w kq - 0 1", NULL),
        0);
    chess_move_list list;
    chess_generate_moves(&pos, &list);
    for (size_t i = 0; i < list.n; i++) {
        char text[6];
        chess_move back;
        chess_move_to_uci(list.moves[i], text);
        assert_int_equal(chess_move_from_uci(&pos, text, &back, NULL), 0);
        assert_int_equal(back, list.moves[i]);
    }
    chess_move m;
    char err[COMMON_ERR_LEN];
    assert_int_equal(chess_move_from_uci(&pos, "g1h1", &m, err), 0);
    assert_int_equal(chess_move_from_uci(&pos, "e8g8", &m, err), COMMON_ERR_INVALID);
    assert_int_equal(chess_position_from_fen(&pos, "1r5k/P7/8/8/8/8/8/K7 w - - 0 1", NULL), 0);
    assert_int_equal(chess_move_from_uci(&pos, "a7b8Q", &m, err), 0); /* uppercase letter */
    assert_int_equal(CHESS_MOVE_PROMO(m), CHESS_QUEEN);
    assert_int_equal(chess_move_from_uci(&pos, "a7a8r", &m, err), 0);
    assert_int_equal(CHESS_MOVE_PROMO(m), CHESS_ROOK);
    assert_int_equal(chess_move_from_uci(&pos, "a7b8", &m, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "promotion"));
    assert_int_equal(chess_move_from_uci(&pos, "a1a2q", &m, err), COMMON_ERR_INVALID);
    assert_int_equal(chess_move_from_uci(&pos, "a7b8k", &m, err), COMMON_ERR_PARSE);
    assert_int_equal(chess_move_from_uci(&pos, "", &m, err), COMMON_ERR_PARSE);
    assert_int_equal(chess_move_from_uci(&pos, "a7b8qq", &m, err), COMMON_ERR_PARSE);
    /* castling is written as the king's move */
    chess_position_init(&pos);
    chess_game *game;
    assert_int_equal(chess_game_new(&game, NULL, NULL), 0);
    assert_int_equal(chess_game_push_uci_line(game, "e2e4 e7e5 g1f3 b8c6 f1c4 g8f6 e1g1", err), 0);
    char *uci;
    assert_int_equal(chess_game_to_uci(game, &uci, NULL), 0);
    assert_string_equal(uci, "e2e4 e7e5 g1f3 b8c6 f1c4 g8f6 e1g1");
    free(uci);
    char fen[CHESS_FEN_MAX];
    chess_position_to_fen(chess_game_position(game), fen);
    assert_string_equal(fen, "r1bqkb1r/pppp1ppp/2n2n2/4p3/2B1P3/5N2/PPPP1PPP/RNBQ1RK1 b kq - 5 4");
    chess_game_destroy(&game);
}

static void test_push_line_errors_keep_prefix(void **state) {
    (void)state;
    chess_game *game;
    char err[COMMON_ERR_LEN] = "";
    assert_int_equal(chess_game_new(&game, NULL, NULL), 0);
    int rc = chess_game_push_uci_line(game, "e2e4 e7e5 g1f3 b8c6 f1c4 d8d1 e1g1", err);
    assert_int_equal(rc, COMMON_ERR_INVALID);
    assert_string_equal(err, "move 6 'd8d1': illegal in this position");
    assert_int_equal(chess_game_n_moves(game), 5);
    assert_int_equal(chess_game_position(game)->side, CHESS_BLACK);
    /* continuing after the error works from the kept prefix */
    assert_int_equal(chess_game_push_uci_line(game, "g8f6", err), 0);
    assert_int_equal(chess_game_n_moves(game), 6);
    rc = chess_game_push_uci_line(game, "e1g1 xyzzyxyzzyxyzzyxyzzy", err);
    assert_int_equal(rc, COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "move 2 'xyzzyxyzzyxyzzyx...'"));
    assert_int_equal(chess_game_n_moves(game), 7);
    chess_game_destroy(&game);
}

static void test_random_is_deterministic(void **state) {
    (void)state;
    char *a, *b, *c;
    chess_game *g;
    assert_int_equal(chess_random_game(&g, 123, 127, NULL), 0);
    assert_int_equal(chess_game_to_uci(g, &a, NULL), 0);
    chess_game_destroy(&g);
    assert_int_equal(chess_random_game(&g, 123, 127, NULL), 0);
    assert_int_equal(chess_game_to_uci(g, &b, NULL), 0);
    chess_game_destroy(&g);
    assert_int_equal(chess_random_game(&g, 124, 127, NULL), 0);
    assert_int_equal(chess_game_to_uci(g, &c, NULL), 0);
    chess_game_destroy(&g);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    free(a);
    free(b);
    free(c);
    assert_true(chess_random_game_seed(1, 0) != chess_random_game_seed(1, 1));
    assert_true(chess_random_game_seed(1, 0) != chess_random_game_seed(2, 0));
}

static size_t count_tokens(const chess_game *g) {
    size_t tokens = 1;
    for (size_t i = 0; i < chess_game_n_moves(g); i++) {
        tokens += CHESS_MOVE_KIND(chess_game_moves(g)[i]) == CHESS_MOVE_PROMOTION ? 3 : 2;
    }
    return tokens;
}

static void test_random_respects_token_budget(void **state) {
    (void)state;
    size_t ended = 0;
    for (uint64_t i = 0; i < 500; i++) {
        chess_game *g;
        size_t budget = 20 + (size_t)(i % 120);
        assert_int_equal(chess_random_game(&g, chess_random_game_seed(9, i), budget, NULL), 0);
        size_t tokens = count_tokens(g);
        assert_true(tokens <= budget);
        chess_status st = chess_game_status(g, false);
        /* stopped because the game ended, or because even a 2- or 3-token move would overflow */
        if (st == CHESS_ONGOING) {
            assert_true(budget - tokens <= 2);
        } else {
            ended++;
        }
        /* the moves replay as a legal game */
        char *uci;
        chess_game *replay;
        char err[COMMON_ERR_LEN] = "";
        assert_int_equal(chess_game_to_uci(g, &uci, NULL), 0);
        assert_int_equal(chess_game_new(&replay, NULL, NULL), 0);
        if (chess_game_push_uci_line(replay, uci, err) != 0) {
            fail_msg("%s", err);
        }
        assert_int_equal(chess_game_n_moves(replay), chess_game_n_moves(g));
        chess_game_destroy(&replay);
        free(uci);
        chess_game_destroy(&g);
    }
    assert_true(ended > 0); /* some short games still end by mate or stalemate */
}

static void test_random_without_budget_ends_the_game(void **state) {
    (void)state;
    for (uint64_t i = 0; i < 20; i++) {
        chess_game *g;
        assert_int_equal(chess_random_game(&g, i, 0, NULL), 0);
        assert_int_not_equal(chess_game_status(g, false), CHESS_ONGOING);
        chess_game_destroy(&g);
    }
}

/* The first move over many seeds: each of the 20 moves should come up about 1/20 of the time. */
static void test_random_is_uniform(void **state) {
    (void)state;
    enum { GAMES = 20000 };
    int counts[4096] = {0};
    for (uint64_t i = 0; i < GAMES; i++) {
        chess_game *g;
        assert_int_equal(chess_random_game(&g, chess_random_game_seed(77, i), 3, NULL), 0);
        assert_int_equal(chess_game_n_moves(g), 1);
        counts[chess_game_moves(g)[0] & 4095]++;
        chess_game_destroy(&g);
    }
    int distinct = 0;
    double chi2 = 0;
    for (int m = 0; m < 4096; m++) {
        if (counts[m]) {
            distinct++;
            double d = counts[m] - GAMES / 20.0;
            chi2 += d * d / (GAMES / 20.0);
        }
    }
    assert_int_equal(distinct, 20);
    /* 19 degrees of freedom: P(chi2 > 43.8) < 0.001 */
    assert_true(chi2 < 43.8);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uci_round_trip),
        cmocka_unit_test(test_push_line_errors_keep_prefix),
        cmocka_unit_test(test_random_is_deterministic),
        cmocka_unit_test(test_random_respects_token_budget),
        cmocka_unit_test(test_random_without_budget_ends_the_game),
        cmocka_unit_test(test_random_is_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
