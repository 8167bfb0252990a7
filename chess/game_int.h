/*
 * game_int: UCI text helpers shared inside the chess library (tokens, PGN), not public API.
 */
#ifndef CHESSLENS_CHESS_GAME_INT_H
#define CHESSLENS_CHESS_GAME_INT_H

#include "chess/chess.h"

/* Parses len characters of UCI move text into squares and promotion piece (CHESS_KNIGHT..
 * CHESS_QUEEN, or -1); returns 0, or -1 when the text is not a well-formed UCI move. */
int chess_uci_text_parse(const char *text, size_t len, int *from, int *to, int *promo);

/* chess_move_from_uci on len characters of text (no terminator needed). */
int chess_move_from_uci_text(const chess_position *pos, const char *text, size_t len,
                             chess_move *out, char *err);

#endif
