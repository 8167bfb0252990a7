/*
 * san: Standard Algebraic Notation, the move text of PGN ("Nbd7", "exd6", "e8=Q+", "O-O").
 *
 * Writing follows the PGN standard: minimal disambiguation (file, else rank, else both), "x"
 * for captures, "=Q" for promotions and "+" / "#" for check and mate. Reading is tolerant in
 * the ways real databases need (annotation marks, castling with zeros, promotions without
 * "=", over-specified origins) and strict about what matters: the text must name exactly one
 * legal move.
 */
#include <string.h>

#include "chess/game_int.h"
#include "common/common.h"

static const char piece_letters[] = "PNBRQK"; /* indexed by CHESS_PAWN..CHESS_KING */

void chess_move_to_san(const chess_position *pos, chess_move move, char out[CHESS_SAN_MAX]) {
    int from = CHESS_MOVE_FROM(move), to = CHESS_MOVE_TO(move), kind = CHESS_MOVE_KIND(move);
    int type = pos->board[from] % 6;
    char *p = out;
    if (kind == CHESS_MOVE_CASTLING) {
        strcpy(p, to > from ? "O-O" : "O-O-O");
        p += strlen(p);
    } else {
        bool capture = kind == CHESS_MOVE_EN_PASSANT || pos->board[to] != CHESS_NO_PIECE;
        if (type == CHESS_PAWN) {
            if (capture) {
                *p++ = (char)('a' + from % 8);
            }
        } else {
            *p++ = piece_letters[type];
            /* other pieces of the same type that can reach the same square */
            chess_move_list list;
            chess_generate_moves(pos, &list);
            bool clash = false, same_file = false, same_rank = false;
            for (size_t i = 0; i < list.n; i++) {
                int f = CHESS_MOVE_FROM(list.moves[i]);
                if (f != from && CHESS_MOVE_TO(list.moves[i]) == to && pos->board[f] % 6 == type) {
                    clash = true;
                    same_file |= f % 8 == from % 8;
                    same_rank |= f / 8 == from / 8;
                }
            }
            if (clash) {
                if (!same_file) {
                    *p++ = (char)('a' + from % 8);
                } else if (!same_rank) {
                    *p++ = (char)('1' + from / 8);
                } else {
                    *p++ = (char)('a' + from % 8);
                    *p++ = (char)('1' + from / 8);
                }
            }
        }
        if (capture) {
            *p++ = 'x';
        }
        chess_square_name(to, p);
        p += 2;
        if (kind == CHESS_MOVE_PROMOTION) {
            *p++ = '=';
            *p++ = piece_letters[CHESS_MOVE_PROMO(move)];
        }
    }
    chess_position after = *pos;
    chess_position_make_move(&after, move);
    if (chess_position_in_check(&after)) {
        chess_move_list replies;
        *p++ = chess_generate_moves(&after, &replies) == 0 ? '#' : '+';
    }
    *p = '\0';
}

static int piece_from_letter(char c) {
    const char *p = strchr(piece_letters, c);
    return (c && p) ? (int)(p - piece_letters) : -1;
}

int chess_move_from_san(const chess_position *pos, const char *san, chess_move *out, char *err) {
    char text[16];
    size_t len = strlen(san);
    /* drop check, mate and annotation marks */
    while (len > 0 && strchr("+#!?", san[len - 1])) {
        len--;
    }
    if (len < 2 || len >= sizeof text) {
        return common_fail(err, COMMON_ERR_PARSE, "malformed SAN");
    }
    memcpy(text, san, len);
    text[len] = '\0';

    chess_move_list list;
    chess_generate_moves(pos, &list);

    if (strcmp(text, "O-O") == 0 || strcmp(text, "0-0") == 0 || strcmp(text, "O-O-O") == 0 ||
        strcmp(text, "0-0-0") == 0) {
        bool king_side = len == 3;
        for (size_t i = 0; i < list.n; i++) {
            chess_move m = list.moves[i];
            if (CHESS_MOVE_KIND(m) == CHESS_MOVE_CASTLING &&
                (CHESS_MOVE_TO(m) > CHESS_MOVE_FROM(m)) == king_side) {
                *out = m;
                return 0;
            }
        }
        return common_fail(err, COMMON_ERR_INVALID, "castling is not legal here");
    }

    /* [piece] [from file] [from rank] [x] to-square [[=] promotion] */
    const char *p = text, *end = text + len;
    int type = CHESS_PAWN;
    if (*p >= 'A' && *p <= 'Z') {
        type = piece_from_letter(*p);
        if (type < 0) {
            return common_fail(err, COMMON_ERR_PARSE, "malformed SAN: unknown piece letter");
        }
        p++;
    }
    int promo = -1;
    if (end - p >= 3 && (end[-1] == 'Q' || end[-1] == 'R' || end[-1] == 'B' || end[-1] == 'N' ||
                         (end[-2] == '=' && strchr("qrbn", end[-1])))) {
        promo = piece_from_letter((char)(end[-1] & ~0x20));
        end--;
        if (end[-1] == '=') {
            end--;
        }
    }
    if (end - p < 2) {
        return common_fail(err, COMMON_ERR_PARSE, "malformed SAN: no destination square");
    }
    int to = chess_square_parse(end - 2);
    if (to < 0) {
        return common_fail(err, COMMON_ERR_PARSE, "malformed SAN: bad destination square");
    }
    end -= 2;
    int from_file = -1, from_rank = -1;
    bool capture = false;
    for (; p < end; p++) {
        if (*p >= 'a' && *p <= 'h' && from_file < 0 && from_rank < 0 && !capture) {
            from_file = *p - 'a';
        } else if (*p >= '1' && *p <= '8' && from_rank < 0 && !capture) {
            from_rank = *p - '1';
        } else if ((*p == 'x' || *p == ':' || *p == '-') && !capture) {
            capture = true;
        } else {
            return common_fail(err, COMMON_ERR_PARSE, "malformed SAN");
        }
    }
    if (promo >= 0 && (type != CHESS_PAWN || promo == CHESS_PAWN || promo == CHESS_KING)) {
        return common_fail(err, COMMON_ERR_PARSE, "malformed SAN: bad promotion");
    }

    int found = 0;
    for (size_t i = 0; i < list.n; i++) {
        chess_move m = list.moves[i];
        int from = CHESS_MOVE_FROM(m);
        if (CHESS_MOVE_TO(m) != to || pos->board[from] % 6 != type ||
            CHESS_MOVE_KIND(m) == CHESS_MOVE_CASTLING) {
            continue;
        }
        if ((from_file >= 0 && from % 8 != from_file) ||
            (from_rank >= 0 && from / 8 != from_rank)) {
            continue;
        }
        if (CHESS_MOVE_KIND(m) == CHESS_MOVE_PROMOTION) {
            if (promo < 0) {
                return common_fail(err, COMMON_ERR_INVALID, "promotion without a piece");
            }
            if (CHESS_MOVE_PROMO(m) != promo) {
                continue;
            }
        } else if (promo >= 0) {
            continue;
        }
        if (type == CHESS_PAWN && from_file < 0 && from % 8 != to % 8) {
            continue; /* a pawn capture must name its file */
        }
        *out = m;
        found++;
    }
    if (found == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "illegal in this position");
    }
    if (found > 1) {
        return common_fail(err, COMMON_ERR_INVALID, "ambiguous");
    }
    return 0;
}
