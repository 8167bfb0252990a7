/*
 * position_int: helpers shared by the chess library's source files (not part of the public
 * API): attack queries, Zobrist hashing and the square-set constants.
 */
#ifndef CHESSLENS_CHESS_POSITION_INT_H
#define CHESSLENS_CHESS_POSITION_INT_H

#include "chess/chess.h"

#define CHESS_FILE_A 0x0101010101010101ULL
#define CHESS_FILE_H 0x8080808080808080ULL
#define CHESS_RANK_1 0x00000000000000FFULL
#define CHESS_RANK_8 0xFF00000000000000ULL

/* Every piece of either colour that attacks sq, given the occupancy occ. */
uint64_t chess_attackers_to(const chess_position *pos, int sq, uint64_t occ);

/* The Zobrist key of pos computed from scratch (make_move updates it incrementally). */
uint64_t chess_position_compute_hash(const chess_position *pos);

/* Clears the en-passant square (and its hash key) when no legal en-passant capture exists, so
 * that equal positions compare equal (FEN output, repetition). */
void chess_position_normalize_ep(chess_position *pos);

#endif
