/*
 * tables_int: constant lookup tables for move generation, defined in the chess_tables.c that
 * chess/gen_tables.c writes at build time, and the inline attack helpers built on them.
 *
 * Squares are 0..63 with a1 = 0, b1 = 1, ..., h8 = 63 (index = rank * 8 + file). Slider attacks
 * use "magic bitboards": the occupancy of a slider's rays, multiplied by a per-square constant
 * and shifted, indexes a precomputed attack set.
 */
#ifndef CHESSLENS_CHESS_TABLES_INT_H
#define CHESSLENS_CHESS_TABLES_INT_H

#include <stdint.h>

typedef struct chess_magic {
    uint64_t mask;   /* relevant occupancy: ray squares without the board edge */
    uint64_t magic;  /* multiplier that maps each occupancy subset to a distinct index */
    unsigned shift;  /* 64 - number of mask bits */
    unsigned offset; /* start of this square's entries in the attack table */
} chess_magic;

extern const uint64_t chess_knight_attacks[64];
extern const uint64_t chess_king_attacks[64];
extern const uint64_t chess_pawn_attacks[2][64]; /* [colour][square]: squares a pawn attacks */
extern const uint64_t chess_between[64][64];     /* squares strictly between two aligned squares */
extern const uint64_t chess_line[64][64];        /* the full line through two aligned squares */
extern const chess_magic chess_rook_magics[64];
extern const chess_magic chess_bishop_magics[64];
extern const uint64_t chess_rook_table[];
extern const uint64_t chess_bishop_table[];
/* Zobrist keys: [piece kind 0..11][square] at piece * 64 + square, then side to move at 768,
 * castling-rights sets at 769..784, en-passant files at 785..792. */
extern const uint64_t chess_zobrist[12 * 64 + 1 + 16 + 8];

#define CHESS_ZOBRIST_SIDE (12 * 64)
#define CHESS_ZOBRIST_CASTLING (12 * 64 + 1)
#define CHESS_ZOBRIST_EP (12 * 64 + 1 + 16)

static inline uint64_t chess_rook_attacks(int sq, uint64_t occ) {
    const chess_magic *m = &chess_rook_magics[sq];
    return chess_rook_table[m->offset + (unsigned)(((occ & m->mask) * m->magic) >> m->shift)];
}

static inline uint64_t chess_bishop_attacks(int sq, uint64_t occ) {
    const chess_magic *m = &chess_bishop_magics[sq];
    return chess_bishop_table[m->offset + (unsigned)(((occ & m->mask) * m->magic) >> m->shift)];
}

static inline int chess_lsb(uint64_t b) {
    return __builtin_ctzll(b);
}

static inline int chess_popcount(uint64_t b) {
    return __builtin_popcountll(b);
}

#endif
