/*
 * test_tokens: the token-level view of games. The legal-next-token example from the research
 * notebooks, phases and move indices (with promotions), the error contract (the move number
 * and the move are named, the valid prefix is still reported), tokenizing without legality,
 * and a cross-check of the masks against perft-1 move lists on thousands of positions taken
 * from random games.
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

static uint64_t squares(const char *names) {
    uint64_t b = 0;
    for (const char *p = names; *p; p += (p[2] == ' ') ? 3 : 2) {
        int sq = chess_square_parse(p);
        assert_true(sq >= 0);
        b |= 1ULL << sq;
        if (!p[2]) {
            break;
        }
    }
    return b;
}

static void test_square_names(void **state) {
    (void)state;
    char name[3];
    for (int sq = 0; sq < 64; sq++) {
        chess_square_name(sq, name);
        assert_int_equal(chess_square_parse(name), sq);
    }
    chess_square_name(28, name);
    assert_string_equal(name, "e4");
    assert_int_equal(chess_square_parse("a1"), 0);
    assert_int_equal(chess_square_parse("h8"), 63);
    assert_int_equal(chess_square_parse("i1"), -1);
    assert_int_equal(chess_square_parse("a9"), -1);
    assert_int_equal(chess_square_parse("A1"), -1);
    assert_int_equal(chess_square_parse(""), -1);
}

static void test_notebook_example(void **state) {
    (void)state;
    chess_token_info *t;
    size_t n;
    char err[COMMON_ERR_LEN] = "";
    assert_int_equal(chess_legal_tokens(NULL, "d2d4 d7d5 c2c4 d5c4", &t, &n, err), 0);
    assert_int_equal(n, 9);
    assert_string_equal(t[0].token.text, "<s>");
    assert_int_equal(t[0].token.move_index, -1);
    assert_int_equal(t[0].token.phase, CHESS_PHASE_SPECIAL);
    assert_true(t[0].next_squares == squares("a2 b1 b2 c2 d2 e2 f2 g1 g2 h2"));
    assert_int_equal(t[0].n_next, 10);
    assert_int_equal(t[0].next_promos, 0);
    /* after d2: the pawn's destinations */
    assert_string_equal(t[1].token.text, "d2");
    assert_int_equal(t[1].token.phase, CHESS_PHASE_WHITE_FROM);
    assert_true(t[1].next_squares == squares("d3 d4"));
    /* after d4 (White's move complete): Black's movable pieces */
    assert_int_equal(t[2].token.phase, CHESS_PHASE_WHITE_TO);
    assert_true(t[2].next_squares == squares("a7 b7 b8 c7 d7 e7 f7 g7 g8 h7"));
    assert_int_equal(t[3].token.phase, CHESS_PHASE_BLACK_FROM);
    assert_int_equal(t[3].token.move_index, 1);
    assert_int_equal(t[4].token.phase, CHESS_PHASE_BLACK_TO);
    /* after d5 (black pawn on d5 attacks c4): only the capture */
    assert_string_equal(t[7].token.text, "d5");
    assert_true(t[7].next_squares == squares("c4"));
    assert_int_equal(t[7].n_next, 1);
    assert_int_equal(t[8].token.move_index, 3);
    free(t);
}

static void test_promotion_tokens(void **state) {
    (void)state;
    chess_position start;
    assert_int_equal(chess_position_from_fen(&start, "1r5k/P7/8/8/8/8/8/K7 w - - 0 1", NULL), 0);
    chess_token_info *t;
    size_t n;
    char err[COMMON_ERR_LEN] = "";
    assert_int_equal(chess_legal_tokens(&start, "a7b8n h8g8", &t, &n, err), 0);
    assert_int_equal(n, 6); /* <s> a7 b8 n h8 g8 */
    assert_true(t[1].next_squares == squares("a8 b8"));
    assert_int_equal(t[2].next_squares, 0);
    assert_int_equal(t[2].next_promos,
                     CHESS_PROMO_Q | CHESS_PROMO_R | CHESS_PROMO_B | CHESS_PROMO_N);
    assert_int_equal(t[2].n_next, 4);
    assert_string_equal(t[3].token.text, "n");
    assert_int_equal(t[3].token.phase, CHESS_PHASE_PROMOTION);
    assert_int_equal(t[3].token.move_index, 0);
    /* the knight on b8 checks nothing; Black's king may move */
    assert_true(t[3].next_squares == squares("h8"));
    assert_int_equal(t[4].token.phase, CHESS_PHASE_BLACK_FROM);
    assert_int_equal(t[5].token.move_index, 1);
    free(t);
}

static void test_game_over_has_no_next_tokens(void **state) {
    (void)state;
    chess_token_info *t;
    size_t n;
    assert_int_equal(chess_legal_tokens(NULL, "f2f3 e7e5 g2g4 d8h4", &t, &n, NULL), 0);
    assert_int_equal(n, 9);
    assert_int_equal(t[8].next_squares, 0);
    assert_int_equal(t[8].n_next, 0);
    free(t);
}

static void test_illegal_move_names_move_and_keeps_prefix(void **state) {
    (void)state;
    chess_token_info *t;
    size_t n;
    char err[COMMON_ERR_LEN] = "";
    int rc = chess_legal_tokens(NULL, "e2e4 e7e5 e1e3 b8c6", &t, &n, err);
    assert_int_equal(rc, COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "move 3"));
    assert_non_null(strstr(err, "e1e3"));
    assert_int_equal(n, 5); /* <s> e2 e4 e7 e5 */
    assert_string_equal(t[4].token.text, "e5");
    assert_true(t[4].next_squares != 0);
    free(t);

    rc = chess_legal_tokens(NULL, "e2e4 e7e9", &t, &n, err);
    assert_int_equal(rc, COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "move 2 'e7e9'"));
    assert_int_equal(n, 3);
    free(t);

    rc = chess_legal_tokens(NULL, "e2e4 e7e5 g1f3 b8c6 f1b5 a7a6 b5c6 d7c6 e1g1 zz", &t, &n, err);
    assert_int_equal(rc, COMMON_ERR_PARSE);
    assert_non_null(strstr(err, "move 10 'zz'"));
    assert_int_equal(n, 19);
    free(t);
}

static void test_uci_split(void **state) {
    (void)state;
    chess_token *t;
    size_t n;
    char err[COMMON_ERR_LEN] = "";
    /* not a legal game: split does not care */
    assert_int_equal(chess_uci_split("e2e4  e2e4\ta7a8q h1h1", &t, &n, err), 0);
    assert_int_equal(n, 1 + 2 + 2 + 3 + 2);
    assert_string_equal(t[0].text, "<s>");
    assert_int_equal(t[0].phase, CHESS_PHASE_SPECIAL);
    assert_string_equal(t[3].text, "e2");
    assert_int_equal(t[3].phase, CHESS_PHASE_BLACK_FROM);
    assert_int_equal(t[3].move_index, 1);
    assert_string_equal(t[7].text, "q");
    assert_int_equal(t[7].phase, CHESS_PHASE_PROMOTION);
    assert_int_equal(t[7].move_index, 2);
    assert_int_equal(t[8].phase, CHESS_PHASE_BLACK_FROM);
    assert_int_equal(t[9].phase, CHESS_PHASE_BLACK_TO);
    free(t);
    assert_int_equal(chess_uci_split("", &t, &n, err), 0);
    assert_int_equal(n, 1);
    free(t);
    static const char *bad[] = {"e2e4 e7", "e2e4 e7e5x", "e2e4 e7e5qq", "e2e4 E7E5", "e2e4 e0e5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = NULL;
        assert_int_equal(chess_uci_split(bad[i], &t, &n, err), COMMON_ERR_PARSE);
        assert_null(t);
        assert_non_null(strstr(err, "move 2 '"));
    }
}

/* Checks the legal-token masks of one game against the perft-1 move lists of each position. */
static void check_game(const chess_game *game) {
    char *uci;
    assert_int_equal(chess_game_to_uci(game, &uci, NULL), 0);
    chess_token_info *t;
    size_t n;
    char err[COMMON_ERR_LEN] = "";
    if (chess_legal_tokens(NULL, uci, &t, &n, err) != 0) {
        fail_msg("%s: %s", uci, err);
    }
    chess_position pos;
    chess_position_init(&pos);
    const chess_move *moves = chess_game_moves(game);
    size_t k = 0;
    for (size_t m = 0; m <= chess_game_n_moves(game); m++) {
        chess_move_list list;
        chess_generate_moves(&pos, &list);
        assert_int_equal(list.n, chess_perft(&pos, 1));
        uint64_t froms = 0;
        for (size_t i = 0; i < list.n; i++) {
            froms |= 1ULL << CHESS_MOVE_FROM(list.moves[i]);
        }
        /* token k ends the previous move (or is <s>): next is a from-square */
        assert_true(t[k].next_squares == froms);
        assert_int_equal(t[k].next_promos, 0);
        assert_int_equal(t[k].n_next, __builtin_popcountll(froms));
        if (m == chess_game_n_moves(game)) {
            assert_int_equal(k + 1, n);
            break;
        }
        chess_move played = moves[m];
        int from = CHESS_MOVE_FROM(played);
        uint64_t tos = 0;
        bool promo = false;
        for (size_t i = 0; i < list.n; i++) {
            if (CHESS_MOVE_FROM(list.moves[i]) == from) {
                tos |= 1ULL << CHESS_MOVE_TO(list.moves[i]);
                if (CHESS_MOVE_TO(list.moves[i]) == CHESS_MOVE_TO(played)) {
                    promo |= CHESS_MOVE_KIND(list.moves[i]) == CHESS_MOVE_PROMOTION;
                }
            }
        }
        char name[3];
        chess_square_name(from, name);
        assert_string_equal(t[k + 1].token.text, name);
        assert_int_equal(t[k + 1].token.move_index, (int)m);
        assert_int_equal(t[k + 1].token.phase,
                         pos.side == CHESS_WHITE ? CHESS_PHASE_WHITE_FROM : CHESS_PHASE_BLACK_FROM);
        assert_true(t[k + 1].next_squares == tos);
        assert_int_equal(t[k + 1].n_next, __builtin_popcountll(tos));
        if (promo) {
            assert_int_equal(t[k + 2].next_promos, 15);
            assert_int_equal(t[k + 2].n_next, 4);
            assert_int_equal(t[k + 3].token.phase, CHESS_PHASE_PROMOTION);
            k += 3;
        } else {
            k += 2;
        }
        chess_position_make_move(&pos, played);
    }
    free(t);
    free(uci);
}

static void test_masks_match_perft_lists(void **state) {
    (void)state;
    size_t positions = 0, promotions = 0;
    for (uint64_t i = 0; i < 200; i++) {
        chess_game *game;
        /* no token limit: long games reach endgames, promotions and mates */
        assert_int_equal(chess_random_game(&game, chess_random_game_seed(42, i), 0, NULL), 0);
        check_game(game);
        positions += chess_game_n_moves(game) + 1;
        for (size_t m = 0; m < chess_game_n_moves(game); m++) {
            promotions += CHESS_MOVE_KIND(chess_game_moves(game)[m]) == CHESS_MOVE_PROMOTION;
        }
        chess_game_destroy(&game);
    }
    assert_true(positions > 5000);
    assert_true(promotions > 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_square_names),
        cmocka_unit_test(test_notebook_example),
        cmocka_unit_test(test_promotion_tokens),
        cmocka_unit_test(test_game_over_has_no_next_tokens),
        cmocka_unit_test(test_illegal_move_names_move_and_keeps_prefix),
        cmocka_unit_test(test_uci_split),
        cmocka_unit_test(test_masks_match_perft_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
