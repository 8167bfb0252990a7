/*
 * chess: the rules of chess for chesslens. Board and fully legal move generation (bitboards),
 * FEN, UCI and SAN moves, games with draw rules, streaming readers of PGN and of UCI game
 * files, a seeded random-game generator, and the token-level view the chess language models
 * read: a game in UCI squares (`<s> e2 e4 e7 e5 ...`, a promotion adds a letter `q r b n`),
 * with, per token position, the move it belongs to, its phase, and the set of tokens that may
 * legally come next.
 *
 * Squares are 0..63, a1 = 0, b1 = 1, ..., h8 = 63 (index = rank * 8 + file); a square set is a
 * uint64_t with bit `index` set. The library has no global state, never prints and never exits;
 * fallible functions return 0 or a negative COMMON_ERR_* code and fill `err` (COMMON_ERR_LEN
 * bytes, NULL allowed).
 */
#ifndef CHESSLENS_CHESS_H
#define CHESSLENS_CHESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- squares, pieces, moves ---- */

enum { CHESS_WHITE = 0, CHESS_BLACK = 1 };
enum { CHESS_PAWN = 0, CHESS_KNIGHT, CHESS_BISHOP, CHESS_ROOK, CHESS_QUEEN, CHESS_KING };
#define CHESS_NO_PIECE 12 /* board[] value of an empty square; else colour * 6 + piece type */

/* Castling rights bits. */
enum {
    CHESS_CASTLE_WK = 1, /* white king side (e1g1) */
    CHESS_CASTLE_WQ = 2, /* white queen side (e1c1) */
    CHESS_CASTLE_BK = 4,
    CHESS_CASTLE_BQ = 8,
};

/* A move: bits 0-5 from square, 6-11 to square, 12-13 kind, 14-15 promotion piece
 * (0 knight, 1 bishop, 2 rook, 3 queen). Castling is encoded as the king's move (e1g1). */
typedef uint16_t chess_move;
enum {
    CHESS_MOVE_NORMAL = 0,
    CHESS_MOVE_PROMOTION = 1,
    CHESS_MOVE_EN_PASSANT = 2,
    CHESS_MOVE_CASTLING = 3,
};
#define CHESS_MOVE_FROM(m) ((int)((m)&63))
#define CHESS_MOVE_TO(m) ((int)(((m) >> 6) & 63))
#define CHESS_MOVE_KIND(m) ((int)(((m) >> 12) & 3))
/* The promotion piece as CHESS_KNIGHT..CHESS_QUEEN; meaningful for CHESS_MOVE_PROMOTION only. */
#define CHESS_MOVE_PROMO(m) ((int)(((m) >> 14) & 3) + CHESS_KNIGHT)

/* More than any position reachable with legal material can have (the maximum known is 218). */
#define CHESS_MAX_MOVES 512

typedef struct chess_move_list {
    size_t n;
    chess_move moves[CHESS_MAX_MOVES];
} chess_move_list;

/* Writes "e4" for square 28 into out (3 bytes with the terminator). sq must be 0..63. */
void chess_square_name(int sq, char out[3]);
/* Parses two characters "a1".."h8" (lowercase file); returns 0..63, or -1 when not a square.
 * Reads at most 2 bytes and does not require a terminator after them. */
int chess_square_parse(const char *text);

/* ---- positions ---- */

/* A position; a value type (copy it freely). Read the fields, change it only through the
 * functions below: the bitboards, board[] and hash are kept consistent with each other. */
typedef struct chess_position {
    uint64_t pieces[2][6]; /* [colour][piece type]: square sets */
    uint64_t occupied[2];  /* [colour]: all pieces of that colour */
    uint64_t hash;         /* Zobrist key of placement, side, castling rights, en passant */
    uint8_t board[64];     /* colour * 6 + piece type, or CHESS_NO_PIECE */
    uint8_t side;          /* CHESS_WHITE or CHESS_BLACK: the side to move */
    uint8_t castling;      /* CHESS_CASTLE_* bits */
    int8_t ep_square;      /* en-passant target square, or -1 */
    uint16_t halfmove;     /* plies since the last capture or pawn move (fifty-move rule) */
    uint16_t fullmove;     /* move number, starts at 1, incremented after Black moves */
} chess_position;

/* The standard initial position. */
void chess_position_init(chess_position *pos);

#define CHESS_START_FEN "rnbqkbnr/pppppppp/8/8/8/8/PPPPPPPP/RNBQKBNR w KQkq - 0 1"

/* Parses a FEN. The halfmove and fullmove fields may be omitted (0 and 1). Rejects positions
 * the move generator cannot trust: not exactly one king per side, more than 16 pieces or 8
 * pawns per side, pawns on the first or last rank, the side not to move in check, castling
 * rights without king and rook on their home squares, an impossible en-passant square. An
 * en-passant square with no legal en-passant capture is dropped (as in the FEN written back).
 * Sets *pos only on success. */
int chess_position_from_fen(chess_position *pos, const char *fen, char *err);

#define CHESS_FEN_MAX 100
/* Writes the FEN of pos into out (at least CHESS_FEN_MAX bytes). */
void chess_position_to_fen(const chess_position *pos, char *out);

/* Fills list with every legal move of the side to move; returns the count. */
size_t chess_generate_moves(const chess_position *pos, chess_move_list *list);

/* Plays a legal move (one that chess_generate_moves returned) on pos. Copy the position first
 * to keep the old one. The en-passant square is set after every double pawn push that an
 * enemy pawn could capture. */
void chess_position_make_move(chess_position *pos, chess_move move);

/* Whether the side to move is in check. */
bool chess_position_in_check(const chess_position *pos);

/* Whether a legal en-passant capture exists (FEN and repetition compare positions by it). */
bool chess_position_has_legal_ep(const chess_position *pos);

/* Neither side can checkmate by any sequence of legal moves in the sense of the common rule:
 * K v K, K+minor v K, and K+bishops v K+bishops with all bishops on one square colour. */
bool chess_position_insufficient_material(const chess_position *pos);

/* Number of leaf nodes of the legal move tree to depth (perft). depth 0 returns 1. */
uint64_t chess_perft(const chess_position *pos, int depth);

/* ---- UCI and SAN ---- */

/* Writes the UCI text of a move ("e2e4", "e7e8q", "e1g1") into out (6 bytes). */
void chess_move_to_uci(chess_move move, char out[6]);

/* Finds the legal move with the given UCI text (4 or 5 characters, promotion letter lowercase
 * or uppercase; castling as the king's move). COMMON_ERR_PARSE for malformed text,
 * COMMON_ERR_INVALID for a well-formed but illegal move. Sets *out only on success. */
int chess_move_from_uci(const chess_position *pos, const char *uci, chess_move *out, char *err);

#define CHESS_SAN_MAX 12
/* Writes Standard Algebraic Notation for a legal move ("Nbd7", "exd6", "e8=Q+", "O-O#"). */
void chess_move_to_san(const chess_position *pos, chess_move move, char out[CHESS_SAN_MAX]);

/* Parses SAN for a legal move. Accepts check/mate marks and annotation suffixes (+ # ! ?),
 * castling as O-O / 0-0, promotions as e8=Q or e8Q, and over-specified origins (Ng1f3).
 * COMMON_ERR_PARSE for malformed text, COMMON_ERR_INVALID for illegal or ambiguous moves. */
int chess_move_from_san(const chess_position *pos, const char *san, chess_move *out, char *err);

/* ---- games ---- */

typedef enum chess_status {
    CHESS_ONGOING = 0,
    CHESS_CHECKMATE,            /* the side to move is mated */
    CHESS_STALEMATE,            /* the side to move has no legal move and is not in check */
    CHESS_INSUFFICIENT,         /* insufficient material (automatic draw) */
    CHESS_SEVENTYFIVE_MOVES,    /* 150 plies without capture or pawn move (automatic draw) */
    CHESS_FIVEFOLD_REPETITION,  /* same position a fifth time (automatic draw) */
    CHESS_FIFTY_MOVES,          /* 100 plies without capture or pawn move (claimable draw) */
    CHESS_THREEFOLD_REPETITION, /* same position a third time (claimable draw) */
} chess_status;

/* A short name ("checkmate", "threefold_repetition", ...); never NULL. */
const char *chess_status_name(chess_status status);

/* A game: a start position, the moves played and the position after them, with the history
 * the repetition rules need. */
typedef struct chess_game chess_game;

/* Starts a game at start (NULL = the standard initial position). */
int chess_game_new(chess_game **out, const chess_position *start, char *err);
void chess_game_destroy(chess_game **game);

/* The position after the moves played so far (borrowed; valid until the next push). */
const chess_position *chess_game_position(const chess_game *game);
/* The start position (borrowed). */
const chess_position *chess_game_start(const chess_game *game);
size_t chess_game_n_moves(const chess_game *game);
/* The moves played (borrowed array of chess_game_n_moves entries). */
const chess_move *chess_game_moves(const chess_game *game);

/* Plays a legal move (one chess_generate_moves returned for the current position). */
int chess_game_push(chess_game *game, chess_move move, char *err);

/* Plays a space-separated UCI move list ("e2e4 e7e5 g1f3"). A malformed or illegal move stops
 * it with an error naming the move number (1-based, counting plies) and the move, e.g.
 * "move 3 'e1e3': illegal in this position"; the moves before it stay applied. */
int chess_game_push_uci_line(chess_game *game, const char *uci_line, char *err);

/* The game's state. With claim_draw, the claimable draws (fifty moves, threefold repetition)
 * end the game too; without, only automatic endings do (as python-chess' is_game_over()). */
chess_status chess_game_status(const chess_game *game, bool claim_draw);

/* The moves as a space-separated UCI string (new buffer, caller frees). */
int chess_game_to_uci(const chess_game *game, char **out, char *err);

/* Writes the game's movetext in SAN with move numbers ("1. e4 e5 2. Nf3") and the result
 * token, followed by a newline, as PGN with a minimal tag section. */
int chess_game_write_pgn(const chess_game *game, FILE *out, char *err);

/* ---- random games ---- */

/* A random game from the standard initial position: each ply picks uniformly among the legal
 * moves with a generator seeded by seed (same seed, same game). The game stops when it ends
 * (chess_game_status without claims is not CHESS_ONGOING) or when the next move would make
 * the token sequence longer than max_tokens, counting the leading `<s>` and 2 tokens per move
 * (3 for a promotion). max_tokens 0 means no token limit. */
int chess_random_game(chess_game **out, uint64_t seed, size_t max_tokens, char *err);

/* The seed of game `index` in a numbered set of games drawn from one base seed. */
uint64_t chess_random_game_seed(uint64_t base_seed, uint64_t index);

/* ---- tokens ---- */

typedef enum chess_phase {
    CHESS_PHASE_SPECIAL = 0, /* `<s>` */
    CHESS_PHASE_WHITE_FROM,
    CHESS_PHASE_WHITE_TO,
    CHESS_PHASE_BLACK_FROM,
    CHESS_PHASE_BLACK_TO,
    CHESS_PHASE_PROMOTION, /* the promotion letter after a to-square */
} chess_phase;

/* "special", "white_from", "white_to", "black_from", "black_to", "promotion". */
const char *chess_phase_name(chess_phase phase);

/* Promotion letter mask bits, in the order of the model vocabulary's letters. */
enum { CHESS_PROMO_Q = 1, CHESS_PROMO_R = 2, CHESS_PROMO_B = 4, CHESS_PROMO_N = 8 };

/* One token of a tokenized game, without legality. */
typedef struct chess_token {
    char text[4];      /* "<s>", a square "e2", or a promotion letter "q" "r" "b" "n" */
    int move_index;    /* 0-based move (ply) the token belongs to; -1 for `<s>` */
    chess_phase phase; /* from the token's place in its move and the move's parity */
} chess_token;

/* Splits a UCI game into tokens: `<s>` then from, to and optional promotion letter of each
 * move. Only the text is checked (squares a1..h8, letters qrbn), not legality, so corrupted
 * games tokenize too. Phases assume White moves first. A malformed move is an error naming
 * the move number and the move. On success *out (caller frees) holds *n_out tokens. */
int chess_uci_split(const char *uci_line, chess_token **out, size_t *n_out, char *err);

/* A token position with the tokens that may legally follow it. */
typedef struct chess_token_info {
    chess_token token;
    uint64_t next_squares; /* square tokens that may come next (bit = square index) */
    uint8_t next_promos;   /* CHESS_PROMO_* letters that may come next */
    int n_next;            /* number of legal next tokens: squares + letters */
} chess_token_info;

/* Legal-token view of a game played from start (NULL = the standard initial position). Per
 * token position i (0 = `<s>`): after `<s>` or a complete move, the from-squares of the side
 * to move's pieces with at least one legal move; after a from-square, that piece's legal
 * destinations; after a promotion destination, the promotion letters; when the game has no
 * legal move (checkmate, stalemate), nothing. Draw rules do not empty the set.
 *
 * On success returns 0 with *out (caller frees) holding *n_out entries. A malformed or illegal
 * move returns an error naming the move number and the move, and *out / *n_out still hold the
 * tokens of the valid prefix (the last entry then gives the legal continuations there); the
 * caller frees *out in both cases. On allocation failure *out is NULL. */
int chess_legal_tokens(const chess_position *start, const char *uci_line, chess_token_info **out,
                       size_t *n_out, char *err);

/* ---- PGN ---- */

/* A streaming PGN reader: one game at a time from a FILE* or a memory buffer. */
typedef struct chess_pgn_reader chess_pgn_reader;

/* Reads from f (borrowed; the caller closes it after destroying the reader). */
int chess_pgn_reader_new_file(chess_pgn_reader **out, FILE *f, char *err);
/* Reads from a copy-free view of data[0..len) (borrowed; must outlive the reader). */
int chess_pgn_reader_new_buffer(chess_pgn_reader **out, const char *data, size_t len, char *err);
void chess_pgn_reader_destroy(chess_pgn_reader **reader);

enum {
    CHESS_PGN_END = 0,     /* no more games */
    CHESS_PGN_GAME = 1,    /* *game holds the next game */
    CHESS_PGN_SKIPPED = 2, /* a malformed game was skipped; err says which and why */
};

/* Reads the next game. Returns CHESS_PGN_GAME with a new game in *game (caller destroys),
 * CHESS_PGN_SKIPPED with the reason in err ("game 7 (line 120): move 12... Nf3: illegal in this
 * position", the line being where the game starts), CHESS_PGN_END at the end of input, or a
 * negative code on an I/O or allocation failure. Comments, variations, NAGs, move numbers,
 * annotations and results are read and dropped. Every game returned starts from the standard
 * initial position: a game whose tags say otherwise is skipped ("does not start from the
 * initial position ([FEN] tag)"): a [FEN] tag with another position, [SetUp "1"] or [Variant
 * "From Position"] without a [FEN] tag of the initial position. A [FEN] tag of the initial
 * position and [SetUp "0"] are accepted; a non-standard [Variant] is skipped. A NUL byte skips
 * the game it is in ("NUL byte in line L"; one between games goes with the game after it). */
int chess_pgn_reader_next(chess_pgn_reader *reader, chess_game **game, char *err);

/* The value of a tag of the game last returned or skipped ("White", "Result"), or NULL. */
const char *chess_pgn_reader_tag(const chess_pgn_reader *reader, const char *name);

/* Games returned and games skipped so far. */
void chess_pgn_reader_counts(const chess_pgn_reader *reader, size_t *n_games, size_t *n_skipped);

/* ---- UCI game files ---- */

/* A streaming reader of UCI game files: one game per line, as `chess random` writes them
 * ("e2e4 e7e5 g1f3"), with blank lines and `#` comment lines allowed. It reads lines, not
 * moves: callers check legality (chess_legal_tokens, chess_game_push_uci_line). */
typedef struct chess_uci_reader chess_uci_reader;

/* The longest line accepted, in bytes, without its "\n" or "\r\n" (a 1000-ply game is about
 * 5 KB). */
#define CHESS_UCI_MAX_LINE ((size_t)1 << 20)

/* Reads from f (borrowed; the caller closes it after destroying the reader) or from a buffer of
 * len bytes (borrowed, must outlive the reader; NULL allowed when len is 0). */
int chess_uci_reader_new_file(chess_uci_reader **out, FILE *f, char *err);
int chess_uci_reader_new_buffer(chess_uci_reader **out, const char *data, size_t len, char *err);
void chess_uci_reader_destroy(chess_uci_reader **reader);

enum {
    CHESS_UCI_END = 0,  /* no more lines */
    CHESS_UCI_LINE = 1, /* *line holds the next game line */
};

/* Reads the next game line: skips blank lines and lines whose first non-blank character is
 * '#'; strips leading and trailing blanks (space, tab) and "\r". Returns CHESS_UCI_LINE with
 * *line (NUL-terminated, non-empty, owned by the reader, valid until the next call or destroy)
 * and *line_no (1-based line number in the input, counting every "\n"), CHESS_UCI_END at the
 * end (again on every later call), or a negative code with err naming the line:
 * COMMON_ERR_PARSE for a NUL byte in any line, comments included ("line 7: NUL byte at column
 * 12", columns 1-based in bytes), COMMON_ERR_INVALID for a line longer than CHESS_UCI_MAX_LINE,
 * COMMON_ERR_NOMEM, or COMMON_ERR_IO for a read error. After a bad line (NUL, too long, out of
 * memory) the whole line has been consumed and the next call goes on with the line after it;
 * a read error ends the input and is returned again by every later call. Memory stays bounded
 * by the longest line accepted plus a fixed read buffer, whatever the input size. */
int chess_uci_reader_next(chess_uci_reader *reader, const char **line, size_t *line_no, char *err);

#endif
