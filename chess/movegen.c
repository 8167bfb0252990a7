/*
 * movegen: fully legal move generation and perft.
 *
 * Moves are generated legal from the start rather than generated and then tested: the checking
 * pieces give a target mask (capture the checker or block its ray), pinned pieces may only move
 * along the line through their king, the king may only step to squares the enemy does not
 * attack with the king itself removed from the board, and en passant, the one move that can
 * uncover a check along a rank by removing two pieces, is tested by recomputing the attacks on
 * the king. Perft counts the moves at the last ply without playing them.
 */
#include <assert.h>

#include "chess/position_int.h"
#include "chess/tables_int.h"

uint64_t chess_attackers_to(const chess_position *pos, int sq, uint64_t occ) {
    const uint64_t(*pc)[6] = pos->pieces;
    uint64_t rooks =
        pc[0][CHESS_ROOK] | pc[1][CHESS_ROOK] | pc[0][CHESS_QUEEN] | pc[1][CHESS_QUEEN];
    uint64_t bishops =
        pc[0][CHESS_BISHOP] | pc[1][CHESS_BISHOP] | pc[0][CHESS_QUEEN] | pc[1][CHESS_QUEEN];
    return (chess_pawn_attacks[CHESS_WHITE][sq] & pc[CHESS_BLACK][CHESS_PAWN]) |
           (chess_pawn_attacks[CHESS_BLACK][sq] & pc[CHESS_WHITE][CHESS_PAWN]) |
           (chess_knight_attacks[sq] & (pc[0][CHESS_KNIGHT] | pc[1][CHESS_KNIGHT])) |
           (chess_king_attacks[sq] & (pc[0][CHESS_KING] | pc[1][CHESS_KING])) |
           (chess_rook_attacks(sq, occ) & rooks) | (chess_bishop_attacks(sq, occ) & bishops);
}

/* Whether side `by` attacks sq with the occupancy occ. */
static bool attacked_by(const chess_position *pos, int by, int sq, uint64_t occ) {
    const uint64_t *pc = pos->pieces[by];
    if (chess_pawn_attacks[by ^ 1][sq] & pc[CHESS_PAWN]) {
        return true;
    }
    if (chess_knight_attacks[sq] & pc[CHESS_KNIGHT]) {
        return true;
    }
    if (chess_king_attacks[sq] & pc[CHESS_KING]) {
        return true;
    }
    if (chess_rook_attacks(sq, occ) & (pc[CHESS_ROOK] | pc[CHESS_QUEEN])) {
        return true;
    }
    return (chess_bishop_attacks(sq, occ) & (pc[CHESS_BISHOP] | pc[CHESS_QUEEN])) != 0;
}

static inline chess_move make_move(int from, int to, int kind) {
    return (chess_move)(from | (to << 6) | (kind << 12));
}

static inline chess_move *add_promotions(chess_move *out, int from, int to) {
    for (int promo = 3; promo >= 0; promo--) { /* queen, rook, bishop, knight */
        *out++ = (chess_move)(from | (to << 6) | (CHESS_MOVE_PROMOTION << 12) | (promo << 14));
    }
    return out;
}

/* Adds one move per square of targets, from `from`. */
static inline chess_move *add_targets(chess_move *out, int from, uint64_t targets) {
    while (targets) {
        *out++ = make_move(from, chess_lsb(targets), CHESS_MOVE_NORMAL);
        targets &= targets - 1;
    }
    return out;
}

/* Adds pawn moves to each square of targets, the origin being `to - delta`. */
static inline chess_move *add_pawn_targets(chess_move *out, uint64_t targets, int delta,
                                           uint64_t promo_rank) {
    uint64_t promos = targets & promo_rank;
    targets &= ~promo_rank;
    while (targets) {
        int to = chess_lsb(targets);
        *out++ = make_move(to - delta, to, CHESS_MOVE_NORMAL);
        targets &= targets - 1;
    }
    while (promos) {
        int to = chess_lsb(promos);
        out = add_promotions(out, to - delta, to);
        promos &= promos - 1;
    }
    return out;
}

static inline uint64_t shift_up(uint64_t b, int us) {
    return us == CHESS_WHITE ? b << 8 : b >> 8;
}

size_t chess_generate_moves(const chess_position *pos, chess_move_list *list) {
    chess_move *out = list->moves;
    const int us = pos->side, them = us ^ 1;
    const uint64_t own = pos->occupied[us], opp = pos->occupied[them], occ = own | opp;
    const uint64_t *mine = pos->pieces[us], *theirs = pos->pieces[them];
    const int ksq = chess_lsb(mine[CHESS_KING]);
    const uint64_t checkers = chess_attackers_to(pos, ksq, occ) & opp;

    /* king steps: the king itself is lifted off the board so a slider's ray through it counts */
    uint64_t targets = chess_king_attacks[ksq] & ~own;
    const uint64_t occ_noking = occ ^ (1ULL << ksq);
    while (targets) {
        int to = chess_lsb(targets);
        targets &= targets - 1;
        if (!attacked_by(pos, them, to, occ_noking)) {
            *out++ = make_move(ksq, to, CHESS_MOVE_NORMAL);
        }
    }
    if (checkers & (checkers - 1)) {
        list->n = (size_t)(out - list->moves); /* double check: only the king moves */
        return list->n;
    }

    /* where non-king pieces may go: anywhere not own, or, in check, onto the checker's ray */
    uint64_t mask = ~own;
    if (checkers) {
        mask = chess_between[ksq][chess_lsb(checkers)] | checkers;
    }

    /* pinned pieces: own pieces alone between the king and an enemy slider */
    uint64_t pinned = 0;
    uint64_t snipers =
        (chess_rook_attacks(ksq, opp) & (theirs[CHESS_ROOK] | theirs[CHESS_QUEEN])) |
        (chess_bishop_attacks(ksq, opp) & (theirs[CHESS_BISHOP] | theirs[CHESS_QUEEN]));
    while (snipers) {
        uint64_t b = chess_between[ksq][chess_lsb(snipers)] & occ;
        snipers &= snipers - 1;
        if (b && !(b & (b - 1)) && (b & own)) {
            pinned |= b;
        }
    }

    /* knights: a pinned knight never moves */
    uint64_t pieces = mine[CHESS_KNIGHT] & ~pinned;
    while (pieces) {
        int from = chess_lsb(pieces);
        pieces &= pieces - 1;
        out = add_targets(out, from, chess_knight_attacks[from] & mask);
    }
    pieces = mine[CHESS_BISHOP] | mine[CHESS_QUEEN];
    while (pieces) {
        int from = chess_lsb(pieces);
        pieces &= pieces - 1;
        uint64_t t = chess_bishop_attacks(from, occ) & mask;
        if (pinned & (1ULL << from)) {
            t &= chess_line[ksq][from];
        }
        out = add_targets(out, from, t);
    }
    pieces = mine[CHESS_ROOK] | mine[CHESS_QUEEN];
    while (pieces) {
        int from = chess_lsb(pieces);
        pieces &= pieces - 1;
        uint64_t t = chess_rook_attacks(from, occ) & mask;
        if (pinned & (1ULL << from)) {
            t &= chess_line[ksq][from];
        }
        out = add_targets(out, from, t);
    }

    /* pawns: unpinned ones set-wise, pinned ones one by one along their pin line */
    const uint64_t promo_rank = us == CHESS_WHITE ? CHESS_RANK_8 : CHESS_RANK_1;
    const uint64_t third_rank = us == CHESS_WHITE ? 0x0000000000FF0000ULL : 0x0000FF0000000000ULL;
    const int up = us == CHESS_WHITE ? 8 : -8;
    const uint64_t empty = ~occ;
    uint64_t pawns = mine[CHESS_PAWN] & ~pinned;
    uint64_t single = shift_up(pawns, us) & empty;
    uint64_t dbl = shift_up(single & third_rank, us) & empty & mask;
    out = add_pawn_targets(out, single & mask, up, promo_rank);
    out = add_pawn_targets(out, dbl, 2 * up, 0);
    uint64_t left, right; /* captures towards the a-file and towards the h-file */
    if (us == CHESS_WHITE) {
        left = ((pawns & ~CHESS_FILE_A) << 7) & opp & mask;
        right = ((pawns & ~CHESS_FILE_H) << 9) & opp & mask;
        out = add_pawn_targets(out, left, 7, promo_rank);
        out = add_pawn_targets(out, right, 9, promo_rank);
    } else {
        left = ((pawns & ~CHESS_FILE_A) >> 9) & opp & mask;
        right = ((pawns & ~CHESS_FILE_H) >> 7) & opp & mask;
        out = add_pawn_targets(out, left, -9, promo_rank);
        out = add_pawn_targets(out, right, -7, promo_rank);
    }
    uint64_t pinned_pawns = mine[CHESS_PAWN] & pinned;
    while (pinned_pawns) {
        int from = chess_lsb(pinned_pawns);
        pinned_pawns &= pinned_pawns - 1;
        uint64_t b = 1ULL << from, ray = chess_line[ksq][from] & mask;
        uint64_t push = shift_up(b, us) & empty;
        uint64_t push2 = shift_up(push & third_rank, us) & empty;
        uint64_t caps = chess_pawn_attacks[us][from] & opp;
        uint64_t t = (push | push2 | caps) & ray;
        while (t) {
            int to = chess_lsb(t);
            t &= t - 1;
            if ((1ULL << to) & promo_rank) {
                out = add_promotions(out, from, to);
            } else {
                *out++ = make_move(from, to, CHESS_MOVE_NORMAL);
            }
        }
    }
    if (pos->ep_square >= 0) {
        int ep = pos->ep_square, victim = ep ^ 8;
        uint64_t capturers = chess_pawn_attacks[them][ep] & mine[CHESS_PAWN];
        while (capturers) {
            int from = chess_lsb(capturers);
            capturers &= capturers - 1;
            /* play it on the occupancy and look for any attack on the king */
            uint64_t after = (occ ^ (1ULL << from) ^ (1ULL << victim)) | (1ULL << ep);
            uint64_t attackers = chess_attackers_to(pos, ksq, after) & opp & ~(1ULL << victim);
            if (!attackers) {
                *out++ = make_move(from, ep, CHESS_MOVE_EN_PASSANT);
            }
        }
    }

    /* castling: not out of, through or into check; squares between king and rook empty */
    if (!checkers && pos->castling) {
        int base = us == CHESS_WHITE ? 0 : 56;
        int right_k = us == CHESS_WHITE ? CHESS_CASTLE_WK : CHESS_CASTLE_BK;
        int right_q = us == CHESS_WHITE ? CHESS_CASTLE_WQ : CHESS_CASTLE_BQ;
        if ((pos->castling & right_k) && !(occ & (3ULL << (base + 5))) &&
            !attacked_by(pos, them, base + 5, occ) && !attacked_by(pos, them, base + 6, occ)) {
            *out++ = make_move(base + 4, base + 6, CHESS_MOVE_CASTLING);
        }
        if ((pos->castling & right_q) && !(occ & (7ULL << (base + 1))) &&
            !attacked_by(pos, them, base + 3, occ) && !attacked_by(pos, them, base + 2, occ)) {
            *out++ = make_move(base + 4, base + 2, CHESS_MOVE_CASTLING);
        }
    }
    list->n = (size_t)(out - list->moves);
    assert(list->n <= CHESS_MAX_MOVES);
    return list->n;
}

static uint64_t perft_rec(const chess_position *pos, int depth) {
    chess_move_list list;
    size_t n = chess_generate_moves(pos, &list);
    if (depth == 1) {
        return n;
    }
    uint64_t nodes = 0;
    for (size_t i = 0; i < n; i++) {
        chess_position child = *pos;
        chess_position_make_move(&child, list.moves[i]);
        nodes += perft_rec(&child, depth - 1);
    }
    return nodes;
}

uint64_t chess_perft(const chess_position *pos, int depth) {
    if (depth <= 0) {
        return 1;
    }
    return perft_rec(pos, depth);
}
