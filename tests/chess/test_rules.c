/*
 * test_rules: each rule of chess with a position that exercises it: castling (and the rights
 * lost by king moves, rook moves and rook captures), en passant (including the pinned-pawn and
 * discovered-check cases), promotion to each piece, double check, stalemate, checkmate, the
 * fifty- and seventy-five-move rules, three- and fivefold repetition, insufficient material.
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

static void load(chess_position *pos, const char *fen) {
    char err[COMMON_ERR_LEN] = "";
    if (chess_position_from_fen(pos, fen, err) != 0) {
        fail_msg("%s: %s", fen, err);
    }
}

static bool has_move(const chess_position *pos, const char *uci) {
    chess_move_list list;
    chess_generate_moves(pos, &list);
    for (size_t i = 0; i < list.n; i++) {
        char text[6];
        chess_move_to_uci(list.moves[i], text);
        if (strcmp(text, uci) == 0) {
            return true;
        }
    }
    return false;
}

/* Plays the UCI moves on pos and returns the FEN of the result. */
static void play(chess_position *pos, const char *moves, char *fen_out) {
    chess_game *game;
    char err[COMMON_ERR_LEN] = "";
    assert_int_equal(chess_game_new(&game, pos, err), 0);
    if (chess_game_push_uci_line(game, moves, err) != 0) {
        fail_msg("%s: %s", moves, err);
    }
    *pos = *chess_game_position(game);
    chess_position_to_fen(pos, fen_out);
    chess_game_destroy(&game);
}

static void test_castling_both_sides(void **state) {
    (void)state;
    chess_position pos;
    char fen[CHESS_FEN_MAX];
    load(&pos, "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1");
    assert_true(has_move(&pos, "e1g1"));
    assert_true(has_move(&pos, "e1c1"));
    play(&pos, "e1g1 e8c8", fen);
    assert_string_equal(fen, "2kr3r/8/8/8/8/8/8/R4RK1 w - - 2 2");
}

static void test_castling_rights_lost_by_king_move(void **state) {
    (void)state;
    chess_position pos;
    char fen[CHESS_FEN_MAX];
    load(&pos, "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1");
    play(&pos, "e1e2 e8d8 e2e1 d8e8", fen);
    assert_string_equal(fen, "r3k2r/8/8/8/8/8/8/R3K2R w - - 4 3");
    assert_false(has_move(&pos, "e1g1"));
    assert_false(has_move(&pos, "e1c1"));
}

static void test_castling_rights_lost_by_rook_moves(void **state) {
    (void)state;
    chess_position pos;
    char fen[CHESS_FEN_MAX];
    load(&pos, "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1");
    play(&pos, "h1h2 a8a7", fen);
    assert_string_equal(fen, "4k2r/r7/8/8/8/8/7R/R3K3 w Qk - 2 2");
    assert_false(has_move(&pos, "e1g1"));
    assert_true(has_move(&pos, "e1c1"));
}

static void test_castling_rights_lost_by_rook_capture(void **state) {
    (void)state;
    chess_position pos;
    char fen[CHESS_FEN_MAX];
    load(&pos, "r3k2r/8/8/8/8/8/8/R3K2R w KQkq - 0 1");
    play(&pos, "a1a8", fen); /* takes the a8 rook: White loses Q (rook moved), Black loses q */
    assert_string_equal(fen, "R3k2r/8/8/8/8/8/8/4K2R b Kk - 0 1");
    /* a bishop takes the h8 rook: only Black's king-side right goes */
    load(&pos, "r3k2r/8/8/8/8/8/1B6/R3K2R w KQkq - 0 1");
    play(&pos, "b2h8", fen);
    assert_string_equal(fen, "r3k2B/8/8/8/8/8/8/R3K2R b KQq - 0 1");
    assert_false(has_move(&pos, "e8g8"));
    assert_true(has_move(&pos, "e8c8"));
}

static void test_castling_through_and_out_of_check(void **state) {
    (void)state;
    chess_position pos;
    load(&pos, "r3kr2/8/8/8/8/8/8/R3K2R w KQq - 0 1"); /* f8 rook covers f1 */
    assert_false(has_move(&pos, "e1g1"));
    assert_true(has_move(&pos, "e1c1"));
    load(&pos, "4r1k1/8/8/8/8/8/8/R3K2R w KQ - 0 1"); /* in check on the e-file */
    assert_false(has_move(&pos, "e1g1"));
    assert_false(has_move(&pos, "e1c1"));
    load(&pos, "1r2k3/8/8/8/8/8/8/R3K3 w Q - 0 1"); /* b1 attacked: the king does not cross it */
    assert_true(has_move(&pos, "e1c1"));
    load(&pos, "2r1k3/8/8/8/8/8/8/R3K3 w Q - 0 1"); /* c1 attacked: landing square */
    assert_false(has_move(&pos, "e1c1"));
    load(&pos, "4k3/8/8/8/8/8/8/RN2K3 w Q - 0 1"); /* b1 occupied */
    assert_false(has_move(&pos, "e1c1"));
}

static void test_en_passant(void **state) {
    (void)state;
    chess_position pos;
    char fen[CHESS_FEN_MAX];
    load(&pos, "4k3/8/8/8/3p4/8/4P3/4K3 w - - 0 1");
    play(&pos, "e2e4", fen);
    assert_string_equal(fen, "4k3/8/8/8/3pP3/8/8/4K3 b - e3 0 1");
    assert_true(has_move(&pos, "d4e3"));
    play(&pos, "d4e3", fen);
    assert_string_equal(fen, "4k3/8/8/8/8/4p3/8/4K3 w - - 0 2");
    /* no capturer next to the pawn: no en-passant square at all */
    load(&pos, "4k3/8/8/8/8/8/4P3/4K3 w - - 0 1");
    play(&pos, "e2e4", fen);
    assert_string_equal(fen, "4k3/8/8/8/4P3/8/8/4K3 b - - 0 1");
    /* the right expires after one move */
    load(&pos, "4k3/8/8/8/3p4/8/4P3/4K3 w - - 0 1");
    play(&pos, "e2e4 e8d8 e1d1", fen);
    assert_false(has_move(&pos, "d4e3"));
}

static void test_en_passant_pinned_and_discovered(void **state) {
    (void)state;
    chess_position pos;
    char fen[CHESS_FEN_MAX];
    /* diagonal pin of the capturer: king c3, pawn e5, bishop g7; Black plays d7d5 */
    load(&pos, "4k3/3p2b1/8/4P3/8/2K5/8/8 b - - 0 1");
    play(&pos, "d7d5", fen);
    assert_false(has_move(&pos, "e5d6"));
    assert_string_equal(fen, "4k3/6b1/8/3pP3/8/2K5/8/8 w - - 0 2"); /* no legal ep: no square */
    /* both pawns leave the rank: the h5 rook would check the a5 king */
    load(&pos, "4k3/3p4/8/K3P2r/8/8/8/8 b - - 0 1");
    play(&pos, "d7d5", fen);
    assert_false(has_move(&pos, "e5d6"));
    /* Black's capturer pinned on the a2-e6 diagonal */
    load(&pos, "8/8/4k3/8/2p5/8/B2P2K1/8 w - - 0 1");
    play(&pos, "d2d4", fen);
    assert_false(has_move(&pos, "c4d3"));
    assert_false(has_move(&pos, "c4c3")); /* nor may it push off the pin line */
    /* en passant that removes the checking pawn is legal */
    load(&pos, "8/8/8/2k5/4p3/8/3P4/4K3 w - - 0 1");
    play(&pos, "d2d4", fen);
    assert_true(chess_position_in_check(&pos));
    assert_true(has_move(&pos, "e4d3"));
    /* the same capture without a legal outcome: an own-king rank pin */
    load(&pos, "8/8/8/8/k3p2Q/8/3P4/4K3 w - - 0 1");
    play(&pos, "d2d4", fen);
    assert_false(has_move(&pos, "e4d3"));
}

static void test_promotions(void **state) {
    (void)state;
    static const char *letters = "qrbn";
    static const int pieces[4] = {CHESS_QUEEN, CHESS_ROOK, CHESS_BISHOP, CHESS_KNIGHT};
    for (int i = 0; i < 4; i++) {
        chess_position pos;
        char fen[CHESS_FEN_MAX], move[6] = "a7b8?";
        load(&pos, "1r5k/P7/8/8/8/8/8/K7 w - - 0 1");
        assert_true(has_move(&pos, "a7a8q") && has_move(&pos, "a7a8n"));
        move[4] = letters[i];
        play(&pos, move, fen); /* capture-promotion */
        assert_int_equal(pos.board[57], CHESS_WHITE * 6 + pieces[i]);
        assert_int_equal(pos.halfmove, 0);
    }
    /* black promotes by a push */
    chess_position pos;
    char fen[CHESS_FEN_MAX];
    load(&pos, "7k/8/8/8/8/8/p7/7K b - - 0 1");
    play(&pos, "a2a1n", fen);
    assert_string_equal(fen, "7k/8/8/8/8/8/8/n6K w - - 0 2");
}

static void test_double_check_only_king_moves(void **state) {
    (void)state;
    chess_position pos;
    load(&pos, "R3r2k/8/8/8/8/3n4/8/4K3 w - - 0 1"); /* rook e8 and knight d3 both check */
    assert_true(chess_position_in_check(&pos));
    chess_move_list list;
    assert_int_equal(chess_generate_moves(&pos, &list), 3); /* Kd1, Kd2, Kf1 */
    for (size_t i = 0; i < list.n; i++) {
        assert_int_equal(CHESS_MOVE_FROM(list.moves[i]), 4);
    }
    assert_false(has_move(&pos, "a8e8")); /* capturing one checker is not enough */
}

static void test_pins(void **state) {
    (void)state;
    chess_position pos;
    /* pinned knight cannot move; pinned rook moves along the pin only */
    load(&pos, "4k3/4r3/8/8/8/8/4N3/4K3 w - - 0 1");
    assert_false(has_move(&pos, "e2c3"));
    load(&pos, "4k3/4r3/8/8/8/8/4R3/4K3 w - - 0 1");
    assert_true(has_move(&pos, "e2e7"));
    assert_false(has_move(&pos, "e2d2"));
}

static chess_status status_after(const char *fen, const char *moves, bool claim) {
    chess_position start;
    chess_game *game;
    load(&start, fen);
    assert_int_equal(chess_game_new(&game, &start, NULL), 0);
    char err[COMMON_ERR_LEN] = "";
    if (chess_game_push_uci_line(game, moves, err) != 0) {
        fail_msg("%s", err);
    }
    chess_status s = chess_game_status(game, claim);
    chess_game_destroy(&game);
    return s;
}

static void test_checkmate_and_stalemate(void **state) {
    (void)state;
    assert_int_equal(status_after(CHESS_START_FEN, "f2f3 e7e5 g2g4 d8h4", false), CHESS_CHECKMATE);
    assert_int_equal(status_after("7k/5Q2/6K1/8/8/8/8/8 b - - 0 1", "", false), CHESS_STALEMATE);
    assert_int_equal(status_after("7k/8/6K1/8/8/8/8/5Q2 w - - 0 1", "f1f7", false),
                     CHESS_STALEMATE);
    assert_int_equal(status_after("7k/8/6K1/8/8/8/8/5Q2 w - - 0 1", "f1f8", false),
                     CHESS_CHECKMATE);
    assert_int_equal(status_after(CHESS_START_FEN, "e2e4", false), CHESS_ONGOING);
    /* back-rank mate by a rook */
    assert_int_equal(status_after("6k1/5ppp/8/8/8/8/8/R5K1 w - - 0 1", "a1a8", false),
                     CHESS_CHECKMATE);
}

static void test_fifty_and_seventyfive_moves(void **state) {
    (void)state;
    const char *fen99 = "8/8/4k3/8/8/3K4/8/R7 w - - 99 80";
    assert_int_equal(status_after(fen99, "", true), CHESS_ONGOING);
    assert_int_equal(status_after(fen99, "a1a2", true), CHESS_FIFTY_MOVES);
    assert_int_equal(status_after(fen99, "a1a2", false), CHESS_ONGOING);
    /* a pawn move resets the count */
    assert_int_equal(status_after("8/8/4k3/8/8/3K4/P7/8 w - - 99 80", "a2a3", true), CHESS_ONGOING);
    assert_int_equal(status_after("8/8/4k3/8/8/3K4/8/R7 w - - 149 80", "a1a2", false),
                     CHESS_SEVENTYFIVE_MOVES);
    /* mate on the hundredth ply is mate, not a draw */
    assert_int_equal(status_after("6k1/5ppp/8/8/8/8/8/R5K1 w - - 99 60", "a1a8", true),
                     CHESS_CHECKMATE);
}

static void test_repetition(void **state) {
    (void)state;
    const char *cycle = "g1f3 g8f6 f3g1 f6g8 ";
    char moves[256] = "";
    strcat(moves, cycle);
    assert_int_equal(status_after(CHESS_START_FEN, moves, true), CHESS_ONGOING); /* twice */
    strcat(moves, cycle);
    assert_int_equal(status_after(CHESS_START_FEN, moves, true), CHESS_THREEFOLD_REPETITION);
    assert_int_equal(status_after(CHESS_START_FEN, moves, false), CHESS_ONGOING);
    strcat(moves, cycle);
    strcat(moves, cycle);
    assert_int_equal(status_after(CHESS_START_FEN, moves, false), CHESS_FIVEFOLD_REPETITION);
    /* same placement but castling rights changed: not a repetition of the start */
    assert_int_equal(status_after(CHESS_START_FEN,
                                  "g1f3 g8f6 h1g1 h8g8 g1h1 g8h8 f3g1 f6g8 g1f3 g8f6 f3g1 f6g8",
                                  true),
                     CHESS_ONGOING);
    /* a double push with no possible en-passant capture does not make the position differ */
    assert_int_equal(status_after("4k3/8/8/8/8/8/4P3/4K3 w - - 0 1",
                                  "e2e4 e8d8 e1d1 d8e8 d1e1 e8d8 e1d1 d8e8 d1e1", true),
                     CHESS_THREEFOLD_REPETITION);
}

static void test_insufficient_material(void **state) {
    (void)state;
    static const struct {
        const char *fen;
        bool insufficient;
    } cases[] = {
        {"8/8/4k3/8/8/3K4/8/8 w - - 0 1", true},      /* K v K */
        {"8/8/4k3/8/8/3K4/8/6N1 w - - 0 1", true},    /* K+N v K */
        {"8/8/4k3/8/8/3K4/8/6B1 w - - 0 1", true},    /* K+B v K */
        {"8/8/4k1b1/8/8/3K4/8/6B1 w - - 0 1", false}, /* bishops on opposite colours */
        {"8/8/4k1b1/8/8/3K4/8/5B2 w - - 0 1", true},  /* bishops on one colour (f1, g6) */
        {"8/8/4k3/8/8/3K4/8/5NN1 w - - 0 1", false},  /* two knights can mate */
        {"8/8/4kn2/8/8/3K4/8/6B1 w - - 0 1", false},  /* K+B v K+N */
        {"8/8/4k3/8/8/3K4/7P/8 w - - 0 1", false},    /* a pawn */
        {"8/8/4k3/8/8/3K4/8/7R w - - 0 1", false},    /* a rook */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        chess_position pos;
        load(&pos, cases[i].fen);
        if (chess_position_insufficient_material(&pos) != cases[i].insufficient) {
            fail_msg("%s: expected insufficient=%d", cases[i].fen, cases[i].insufficient);
        }
    }
    assert_int_equal(status_after("8/8/4k3/8/8/3K4/3r4/8 w - - 0 1", "d3c3", false), CHESS_ONGOING);
    assert_int_equal(status_after("8/8/4k3/8/8/3K4/3r4/8 w - - 0 1", "d3d2", false),
                     CHESS_INSUFFICIENT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_castling_both_sides),
        cmocka_unit_test(test_castling_rights_lost_by_king_move),
        cmocka_unit_test(test_castling_rights_lost_by_rook_moves),
        cmocka_unit_test(test_castling_rights_lost_by_rook_capture),
        cmocka_unit_test(test_castling_through_and_out_of_check),
        cmocka_unit_test(test_en_passant),
        cmocka_unit_test(test_en_passant_pinned_and_discovered),
        cmocka_unit_test(test_promotions),
        cmocka_unit_test(test_double_check_only_king_moves),
        cmocka_unit_test(test_pins),
        cmocka_unit_test(test_checkmate_and_stalemate),
        cmocka_unit_test(test_fifty_and_seventyfive_moves),
        cmocka_unit_test(test_repetition),
        cmocka_unit_test(test_insufficient_material),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
