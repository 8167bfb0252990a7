/*
 * position: the board as bitboards plus a square-indexed piece array, FEN in and out, and
 * copy-make move application with an incrementally updated Zobrist key.
 *
 * Keeping both representations costs a few stores per move and makes "what is on this square"
 * (captures, SAN, FEN) a single load while move generation works on whole square sets.
 */
#include "chess/position_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "chess/tables_int.h"
#include "common/common.h"

/* Castling rights that survive a move touching each square: moving from, or capturing on, a
 * king or rook home square removes the rights that depend on it. 15 keeps all four. */
static const uint8_t castle_keep[64] = {
    13, 15, 15, 15, 12, 15, 15, 14, /* a1 (WQ), e1 (WK, WQ), h1 (WK) */
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 15,
    15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 7,  15, 15, 15, 3,  15, 15, 11, /* a8 (BQ), e8 (BK, BQ),
                                                                               h8 (BK) */
};

static const char piece_chars[] = "PNBRQKpnbrqk";

void chess_square_name(int sq, char out[3]) {
    assert(sq >= 0 && sq < 64);
    out[0] = (char)('a' + sq % 8);
    out[1] = (char)('1' + sq / 8);
    out[2] = '\0';
}

int chess_square_parse(const char *text) {
    if (text[0] < 'a' || text[0] > 'h') {
        return -1;
    }
    if (text[1] < '1' || text[1] > '8') {
        return -1;
    }
    return (text[1] - '1') * 8 + (text[0] - 'a');
}

static void put_piece(chess_position *pos, int piece, int sq) {
    uint64_t b = 1ULL << sq;
    pos->pieces[piece / 6][piece % 6] |= b;
    pos->occupied[piece / 6] |= b;
    pos->board[sq] = (uint8_t)piece;
    pos->hash ^= chess_zobrist[piece * 64 + sq];
}

static void remove_piece(chess_position *pos, int sq) {
    int piece = pos->board[sq];
    uint64_t b = 1ULL << sq;
    pos->pieces[piece / 6][piece % 6] &= ~b;
    pos->occupied[piece / 6] &= ~b;
    pos->board[sq] = CHESS_NO_PIECE;
    pos->hash ^= chess_zobrist[piece * 64 + sq];
}

static void move_piece(chess_position *pos, int from, int to) {
    int piece = pos->board[from];
    uint64_t b = (1ULL << from) | (1ULL << to);
    pos->pieces[piece / 6][piece % 6] ^= b;
    pos->occupied[piece / 6] ^= b;
    pos->board[from] = CHESS_NO_PIECE;
    pos->board[to] = (uint8_t)piece;
    pos->hash ^= chess_zobrist[piece * 64 + from] ^ chess_zobrist[piece * 64 + to];
}

uint64_t chess_position_compute_hash(const chess_position *pos) {
    uint64_t h = 0;
    for (int sq = 0; sq < 64; sq++) {
        if (pos->board[sq] != CHESS_NO_PIECE) {
            h ^= chess_zobrist[pos->board[sq] * 64 + sq];
        }
    }
    if (pos->side == CHESS_BLACK) {
        h ^= chess_zobrist[CHESS_ZOBRIST_SIDE];
    }
    h ^= chess_zobrist[CHESS_ZOBRIST_CASTLING + pos->castling];
    if (pos->ep_square >= 0) {
        h ^= chess_zobrist[CHESS_ZOBRIST_EP + pos->ep_square % 8];
    }
    return h;
}

static void clear_position(chess_position *pos) {
    memset(pos, 0, sizeof *pos);
    memset(pos->board, CHESS_NO_PIECE, sizeof pos->board);
    pos->ep_square = -1;
    pos->fullmove = 1;
}

void chess_position_init(chess_position *pos) {
    static const int back[8] = {CHESS_ROOK, CHESS_KNIGHT, CHESS_BISHOP, CHESS_QUEEN,
                                CHESS_KING, CHESS_BISHOP, CHESS_KNIGHT, CHESS_ROOK};
    clear_position(pos);
    for (int f = 0; f < 8; f++) {
        put_piece(pos, back[f], f);
        put_piece(pos, CHESS_PAWN, 8 + f);
        put_piece(pos, 6 + CHESS_PAWN, 48 + f);
        put_piece(pos, 6 + back[f], 56 + f);
    }
    pos->castling = 15;
    pos->hash = chess_position_compute_hash(pos);
}

void chess_position_make_move(chess_position *pos, chess_move move) {
    int from = CHESS_MOVE_FROM(move), to = CHESS_MOVE_TO(move), kind = CHESS_MOVE_KIND(move);
    int us = pos->side;
    int piece = pos->board[from];
    assert(piece != CHESS_NO_PIECE && piece / 6 == us);

    if (pos->ep_square >= 0) {
        pos->hash ^= chess_zobrist[CHESS_ZOBRIST_EP + pos->ep_square % 8];
        pos->ep_square = -1;
    }
    pos->hash ^= chess_zobrist[CHESS_ZOBRIST_CASTLING + pos->castling];
    pos->halfmove++;

    if (kind == CHESS_MOVE_CASTLING) {
        /* the king's move e1g1 / e1c1; the rook jumps from the corner to the king's side */
        int rook_from = to > from ? to + 1 : to - 2;
        int rook_to = to > from ? to - 1 : to + 1;
        move_piece(pos, from, to);
        move_piece(pos, rook_from, rook_to);
    } else {
        if (kind == CHESS_MOVE_EN_PASSANT) {
            remove_piece(pos, to ^ 8);
            pos->halfmove = 0;
        } else if (pos->board[to] != CHESS_NO_PIECE) {
            remove_piece(pos, to);
            pos->halfmove = 0;
        }
        move_piece(pos, from, to);
        if (piece % 6 == CHESS_PAWN) {
            pos->halfmove = 0;
            if (kind == CHESS_MOVE_PROMOTION) {
                remove_piece(pos, to);
                put_piece(pos, us * 6 + CHESS_MOVE_PROMO(move), to);
            } else if ((from ^ to) == 16) {
                int ep = (from + to) / 2;
                if (chess_pawn_attacks[us][ep] & pos->pieces[us ^ 1][CHESS_PAWN]) {
                    pos->ep_square = (int8_t)ep;
                    pos->hash ^= chess_zobrist[CHESS_ZOBRIST_EP + ep % 8];
                }
            }
        }
    }
    pos->castling &= castle_keep[from] & castle_keep[to];
    pos->hash ^= chess_zobrist[CHESS_ZOBRIST_CASTLING + pos->castling];
    pos->side = (uint8_t)(us ^ 1);
    pos->hash ^= chess_zobrist[CHESS_ZOBRIST_SIDE];
    if (us == CHESS_BLACK) {
        pos->fullmove++;
    }
}

bool chess_position_in_check(const chess_position *pos) {
    int us = pos->side;
    int ksq = chess_lsb(pos->pieces[us][CHESS_KING]);
    uint64_t occ = pos->occupied[0] | pos->occupied[1];
    return (chess_attackers_to(pos, ksq, occ) & pos->occupied[us ^ 1]) != 0;
}

bool chess_position_has_legal_ep(const chess_position *pos) {
    if (pos->ep_square < 0) {
        return false;
    }
    chess_move_list list;
    chess_generate_moves(pos, &list);
    for (size_t i = 0; i < list.n; i++) {
        if (CHESS_MOVE_KIND(list.moves[i]) == CHESS_MOVE_EN_PASSANT) {
            return true;
        }
    }
    return false;
}

void chess_position_normalize_ep(chess_position *pos) {
    if (pos->ep_square >= 0 && !chess_position_has_legal_ep(pos)) {
        pos->hash ^= chess_zobrist[CHESS_ZOBRIST_EP + pos->ep_square % 8];
        pos->ep_square = -1;
    }
}

bool chess_position_insufficient_material(const chess_position *pos) {
    for (int c = 0; c < 2; c++) {
        if (pos->pieces[c][CHESS_PAWN] | pos->pieces[c][CHESS_ROOK] | pos->pieces[c][CHESS_QUEEN]) {
            return false;
        }
    }
    uint64_t knights = pos->pieces[0][CHESS_KNIGHT] | pos->pieces[1][CHESS_KNIGHT];
    uint64_t bishops = pos->pieces[0][CHESS_BISHOP] | pos->pieces[1][CHESS_BISHOP];
    int minors = chess_popcount(knights | bishops);
    if (minors <= 1) {
        return true; /* K v K, K+N v K, K+B v K */
    }
    if (knights) {
        return false; /* two minors including a knight can mate with help */
    }
    const uint64_t light = 0x55AA55AA55AA55AAULL;
    return (bishops & light) == 0 || (bishops & ~light) == 0;
}

/* ---- FEN ---- */

static int fail_fen(char *err, const char *what) {
    return common_fail(err, COMMON_ERR_PARSE, "fen: %s", what);
}

static const char *skip_spaces(const char *s) {
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    return s;
}

/* Parses a non-negative decimal up to max; returns the character after it, NULL on failure. */
static const char *parse_uint(const char *s, unsigned max, unsigned *out) {
    unsigned v = 0;
    if (*s < '0' || *s > '9') {
        return NULL;
    }
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (unsigned)(*s - '0');
        if (v > max) {
            return NULL;
        }
        s++;
    }
    *out = v;
    return s;
}

int chess_position_from_fen(chess_position *out, const char *fen, char *err) {
    chess_position pos;
    clear_position(&pos);
    const char *s = skip_spaces(fen);

    /* placement: ranks 8..1 separated by '/' */
    int rank = 7, file = 0;
    for (;; s++) {
        char c = *s;
        if (c == '/') {
            if (file != 8 || rank == 0) {
                return fail_fen(err, "bad rank in piece placement");
            }
            rank--;
            file = 0;
        } else if (c >= '1' && c <= '8') {
            if (s > fen && s[-1] >= '1' && s[-1] <= '8') {
                return fail_fen(err, "consecutive digits in piece placement");
            }
            file += c - '0';
            if (file > 8) {
                return fail_fen(err, "rank longer than 8 squares");
            }
        } else if (c != '\0' && strchr(piece_chars, c)) {
            if (file >= 8) {
                return fail_fen(err, "rank longer than 8 squares");
            }
            put_piece(&pos, (int)(strchr(piece_chars, c) - piece_chars), rank * 8 + file);
            file++;
        } else if (c == ' ' || c == '\t' || c == '\0') {
            break;
        } else {
            return fail_fen(err, "unexpected character in piece placement");
        }
    }
    if (rank != 0 || file != 8) {
        return fail_fen(err, "piece placement does not cover 8 ranks");
    }

    s = skip_spaces(s);
    if (*s == 'w' || *s == 'b') {
        pos.side = *s == 'w' ? CHESS_WHITE : CHESS_BLACK;
        s++;
    } else {
        return fail_fen(err, "side to move must be 'w' or 'b'");
    }
    if (*s != ' ' && *s != '\t') {
        return fail_fen(err, "missing castling field");
    }

    s = skip_spaces(s);
    if (*s == '-') {
        s++;
    } else {
        int n = 0;
        for (; *s && *s != ' ' && *s != '\t'; s++, n++) {
            const char *rights = "KQkq";
            const char *p = strchr(rights, *s);
            if (!p || n >= 4 || (pos.castling & (1 << (p - rights)))) {
                return fail_fen(err, "bad castling field");
            }
            pos.castling |= (uint8_t)(1 << (p - rights));
        }
        if (n == 0) {
            return fail_fen(err, "missing castling field");
        }
    }
    if (*s != ' ' && *s != '\t') {
        return fail_fen(err, "missing en-passant field");
    }

    s = skip_spaces(s);
    if (*s == '-') {
        s++;
    } else {
        int sq = (s[0] && s[1]) ? chess_square_parse(s) : -1;
        if (sq < 0) {
            return fail_fen(err, "bad en-passant square");
        }
        pos.ep_square = (int8_t)sq;
        s += 2;
    }

    s = skip_spaces(s);
    unsigned halfmove = 0, fullmove = 1;
    if (*s) {
        s = parse_uint(s, 60000, &halfmove);
        if (!s) {
            return fail_fen(err, "bad halfmove clock");
        }
        s = skip_spaces(s);
        if (*s) {
            s = parse_uint(s, 60000, &fullmove);
            if (!s) {
                return fail_fen(err, "bad fullmove number");
            }
            s = skip_spaces(s);
        }
    }
    if (*s) {
        return fail_fen(err, "trailing characters");
    }
    pos.halfmove = (uint16_t)halfmove;
    pos.fullmove = (uint16_t)(fullmove == 0 ? 1 : fullmove);

    /* the position must be one the move generator can trust */
    for (int c = 0; c < 2; c++) {
        if (chess_popcount(pos.pieces[c][CHESS_KING]) != 1) {
            return common_fail(err, COMMON_ERR_INVALID, "fen: each side needs exactly one king");
        }
        if (chess_popcount(pos.occupied[c]) > 16 || chess_popcount(pos.pieces[c][CHESS_PAWN]) > 8) {
            return common_fail(err, COMMON_ERR_INVALID, "fen: more than 16 pieces or 8 pawns");
        }
        if (pos.pieces[c][CHESS_PAWN] & (CHESS_RANK_1 | CHESS_RANK_8)) {
            return common_fail(err, COMMON_ERR_INVALID, "fen: pawn on the first or last rank");
        }
    }
    static const struct {
        uint8_t right;
        int king, rook, colour;
    } homes[4] = {{CHESS_CASTLE_WK, 4, 7, 0},
                  {CHESS_CASTLE_WQ, 4, 0, 0},
                  {CHESS_CASTLE_BK, 60, 63, 1},
                  {CHESS_CASTLE_BQ, 60, 56, 1}};
    for (int i = 0; i < 4; i++) {
        if ((pos.castling & homes[i].right) &&
            (pos.board[homes[i].king] != homes[i].colour * 6 + CHESS_KING ||
             pos.board[homes[i].rook] != homes[i].colour * 6 + CHESS_ROOK)) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "fen: castling right without king and rook on their squares");
        }
    }
    if (pos.ep_square >= 0) {
        int ep = pos.ep_square;
        /* White to move: Black just pushed a pawn from ep+8 to ep-8 (and vice versa) */
        int pawn_sq = pos.side == CHESS_WHITE ? ep - 8 : ep + 8;
        int origin = pos.side == CHESS_WHITE ? ep + 8 : ep - 8;
        int want_rank = pos.side == CHESS_WHITE ? 5 : 2;
        if (ep / 8 != want_rank || pos.board[pawn_sq] != (pos.side ^ 1) * 6 + CHESS_PAWN ||
            pos.board[ep] != CHESS_NO_PIECE || pos.board[origin] != CHESS_NO_PIECE) {
            return common_fail(err, COMMON_ERR_INVALID, "fen: impossible en-passant square");
        }
    }
    uint64_t occ = pos.occupied[0] | pos.occupied[1];
    int their_king = chess_lsb(pos.pieces[pos.side ^ 1][CHESS_KING]);
    if (chess_attackers_to(&pos, their_king, occ) & pos.occupied[pos.side]) {
        return common_fail(err, COMMON_ERR_INVALID, "fen: the side not to move is in check");
    }
    pos.hash = chess_position_compute_hash(&pos);
    chess_position_normalize_ep(&pos);
    *out = pos;
    return 0;
}

void chess_position_to_fen(const chess_position *pos, char *out) {
    char *p = out;
    for (int rank = 7; rank >= 0; rank--) {
        int empty = 0;
        for (int file = 0; file < 8; file++) {
            int piece = pos->board[rank * 8 + file];
            if (piece == CHESS_NO_PIECE) {
                empty++;
                continue;
            }
            if (empty) {
                *p++ = (char)('0' + empty);
                empty = 0;
            }
            *p++ = piece_chars[piece];
        }
        if (empty) {
            *p++ = (char)('0' + empty);
        }
        if (rank) {
            *p++ = '/';
        }
    }
    *p++ = ' ';
    *p++ = pos->side == CHESS_WHITE ? 'w' : 'b';
    *p++ = ' ';
    if (!pos->castling) {
        *p++ = '-';
    }
    for (int i = 0; i < 4; i++) {
        if (pos->castling & (1 << i)) {
            *p++ = "KQkq"[i];
        }
    }
    *p++ = ' ';
    if (pos->ep_square >= 0) {
        chess_square_name(pos->ep_square, p);
        p += 2;
    } else {
        *p++ = '-';
    }
    snprintf(p, (size_t)(CHESS_FEN_MAX - (p - out)), " %u %u", (unsigned)pos->halfmove,
             (unsigned)pos->fullmove);
}
