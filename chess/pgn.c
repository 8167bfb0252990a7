/*
 * pgn: a streaming PGN reader (one game at a time, from a FILE* or a memory buffer) and the
 * PGN writer for games.
 *
 * Real databases (the lichess monthly dumps) carry tag pairs, comments with clock and engine
 * annotations (`{ [%clk 0:03:00] }`), variations, NAGs, move numbers and results; the reader
 * keeps the main line and drops the rest. A game with a bad move, a variant, an unterminated
 * comment or variation, no result or a NUL byte is skipped as a whole with a reason that names
 * the game and the line it starts on, and reading continues with the next game: one bad game
 * never stops a database.
 *
 * Games must start from the standard initial position, the only start the models read: a
 * [FEN] tag with any other position, or a set-up claim ([SetUp "1"], [Variant "From
 * Position"]) without a FEN of the initial position, skips the game. These tags are judged as
 * they are read, so the limit on the tags kept for chess_pgn_reader_tag cannot hide one. A NUL
 * byte would cut a C string short and silently drop what follows it, so any NUL skips the game
 * it falls in (one between games goes with the game after it, or alone at the end).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "common/common.h"

#define PGN_MAX_TAGS 64
#define PGN_TAG_NAME_MAX 64
#define PGN_TAG_VALUE_MAX 256
#define PGN_TOKEN_MAX 32
#define PGN_CHUNK 65536

typedef struct pgn_tag {
    char name[PGN_TAG_NAME_MAX];
    char value[PGN_TAG_VALUE_MAX];
} pgn_tag;

/* Why a game's tags keep it from being read, gathered as the tags are read. */
typedef struct pgn_setup {
    char why[160];    /* the first tag that rules the game out (variant, FEN), or "" */
    char claim[80];   /* a set-up claim ("[SetUp \"1\"]") that needs a FEN tag, or "" */
    bool fen_initial; /* a [FEN] tag of the initial position was read */
} pgn_setup;

struct chess_pgn_reader {
    FILE *file;         /* file mode: source, read in chunks into buf */
    char *buf;          /* file mode: chunk buffer (PGN_CHUNK bytes) */
    const char *data;   /* the bytes being consumed: buf or the caller's buffer */
    size_t len, pos;    /* valid bytes in data, next byte to read */
    int pushback;       /* a character given back, or -1 */
    int io_error;       /* errno of a failed read, 0 if none */
    size_t line;        /* 1-based line of the next character */
    size_t nul_line;    /* line of the first NUL byte read for the current game, 0 if none */
    size_t game_number; /* 1-based ordinal of the game being read */
    size_t n_games, n_skipped;
    pgn_tag tags[PGN_MAX_TAGS];
    size_t n_tags;
    pgn_setup setup;
};

static int reader_alloc(chess_pgn_reader **out, char *err) {
    chess_pgn_reader *r = calloc(1, sizeof *r);
    if (!r) {
        return common_fail(err, COMMON_ERR_NOMEM, "chess_pgn_reader_new: out of memory");
    }
    r->pushback = -1;
    r->line = 1;
    *out = r;
    return 0;
}

int chess_pgn_reader_new_file(chess_pgn_reader **out, FILE *f, char *err) {
    chess_pgn_reader *r = NULL;
    int rc = reader_alloc(&r, err);
    if (rc != 0) {
        return rc;
    }
    r->buf = malloc(PGN_CHUNK);
    if (!r->buf) {
        free(r);
        return common_fail(err, COMMON_ERR_NOMEM, "chess_pgn_reader_new: out of memory");
    }
    r->file = f;
    r->data = r->buf;
    *out = r;
    return 0;
}

int chess_pgn_reader_new_buffer(chess_pgn_reader **out, const char *data, size_t len, char *err) {
    chess_pgn_reader *r = NULL;
    int rc = reader_alloc(&r, err);
    if (rc != 0) {
        return rc;
    }
    r->data = data;
    r->len = len;
    *out = r;
    return 0;
}

void chess_pgn_reader_destroy(chess_pgn_reader **reader) {
    if (!reader || !*reader) {
        return;
    }
    free((*reader)->buf);
    free(*reader);
    *reader = NULL;
}

/* Next byte (0..255), or -1 at the end of input or on a read error (io_error set). */
static int next_char(chess_pgn_reader *r) {
    int c;
    if (r->pushback >= 0) {
        c = r->pushback;
        r->pushback = -1;
    } else {
        if (r->pos == r->len) {
            if (!r->file) {
                return -1;
            }
            errno = 0;
            r->len = fread(r->buf, 1, PGN_CHUNK, r->file);
            r->pos = 0;
            if (r->len == 0) {
                if (ferror(r->file)) {
                    r->io_error = errno ? errno : EIO;
                }
                return -1;
            }
        }
        c = (unsigned char)r->data[r->pos++];
        if (c == '\0' && r->nul_line == 0) {
            r->nul_line = r->line;
        }
    }
    if (c == '\n') {
        r->line++;
    }
    return c;
}

static void unget_char(chess_pgn_reader *r, int c) {
    if (c < 0) {
        return;
    }
    if (c == '\n') {
        r->line--;
    }
    r->pushback = c;
}

static bool is_space(int c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Skips to the end of the line (for `;` comments and `%` escape lines). */
static void skip_line(chess_pgn_reader *r) {
    int c;
    while ((c = next_char(r)) >= 0 && c != '\n') {
    }
}

/* Skips a `{...}` comment whose `{` was read; returns false if the input ends first. */
static bool skip_comment(chess_pgn_reader *r) {
    int c;
    while ((c = next_char(r)) >= 0) {
        if (c == '}') {
            return true;
        }
    }
    return false;
}

/* Judges a tag that bears on the start of the game (Variant, SetUp, FEN) into r->setup. value
 * is the whole value unless truncated. */
static void judge_setup_tag(chess_pgn_reader *r, const char *name, const char *value,
                            bool truncated) {
    pgn_setup *s = &r->setup;
    if (strcmp(name, "Variant") == 0) {
        if (strcmp(value, "From Position") == 0) {
            snprintf(s->claim, sizeof s->claim, "[Variant \"From Position\"]");
        } else if (strcmp(value, "Standard") != 0 && strcmp(value, "Chess") != 0 &&
                   strcmp(value, "chess") != 0 && !s->why[0]) {
            snprintf(s->why, sizeof s->why, "unsupported variant '%.40s'", value);
        }
    } else if (strcmp(name, "SetUp") == 0) {
        if (strcmp(value, "0") != 0) {
            snprintf(s->claim, sizeof s->claim, "[SetUp \"%.40s\"]", value);
        }
    } else if (strcmp(name, "FEN") == 0) {
        chess_position pos;
        char fen_err[COMMON_ERR_LEN];
        char fen[CHESS_FEN_MAX];
        if (truncated) {
            snprintf(fen_err, sizeof fen_err, "longer than %d bytes", PGN_TAG_VALUE_MAX - 1);
        } else if (chess_position_from_fen(&pos, value, fen_err) == 0) {
            /* the FEN written back compares the position, side, rights and counters alike */
            chess_position_to_fen(&pos, fen);
            if (strcmp(fen, CHESS_START_FEN) == 0) {
                s->fen_initial = true;
                return;
            }
            if (!s->why[0]) {
                snprintf(s->why, sizeof s->why,
                         "does not start from the initial position ([FEN] tag)");
            }
            return;
        }
        if (!s->why[0]) {
            snprintf(s->why, sizeof s->why, "bad FEN tag: %.120s", fen_err);
        }
    }
}

/* Reads a tag pair whose `[` was read. Returns false when malformed (the rest of the line is
 * consumed). */
static bool read_tag(chess_pgn_reader *r) {
    int c;
    char name[PGN_TAG_NAME_MAX], value[PGN_TAG_VALUE_MAX];
    size_t n = 0, v = 0;
    bool name_truncated = false, value_truncated = false;
    while ((c = next_char(r)) >= 0 && (c == ' ' || c == '\t')) {
    }
    while (c >= 0 &&
           (c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
            (c >= '0' && c <= '9') || c == '+' || c == '#' || c == '=' || c == ':' || c == '-')) {
        if (n + 1 < sizeof name) {
            name[n++] = (char)c;
        } else {
            name_truncated = true;
        }
        c = next_char(r);
    }
    name[n] = '\0';
    while (c == ' ' || c == '\t') {
        c = next_char(r);
    }
    if (n == 0 || c != '"') {
        unget_char(r, c);
        skip_line(r);
        return false;
    }
    while ((c = next_char(r)) >= 0 && c != '"' && c != '\n') {
        if (c == '\\') {
            c = next_char(r);
            if (c < 0 || c == '\n') {
                break;
            }
        }
        if (v + 1 < sizeof value) {
            value[v++] = (char)c;
        } else {
            value_truncated = true;
        }
    }
    value[v] = '\0';
    if (c != '"') {
        unget_char(r, c);
        skip_line(r);
        return false;
    }
    while ((c = next_char(r)) == ' ' || c == '\t') {
    }
    if (c != ']') {
        unget_char(r, c);
        skip_line(r);
        return false;
    }
    if (!name_truncated) {
        judge_setup_tag(r, name, value, value_truncated);
    }
    if (r->n_tags < PGN_MAX_TAGS) {
        memcpy(r->tags[r->n_tags].name, name, n + 1);
        memcpy(r->tags[r->n_tags].value, value, v + 1);
        r->n_tags++;
    }
    return true;
}

const char *chess_pgn_reader_tag(const chess_pgn_reader *reader, const char *name) {
    for (size_t i = 0; i < reader->n_tags; i++) {
        if (strcmp(reader->tags[i].name, name) == 0) {
            return reader->tags[i].value;
        }
    }
    return NULL;
}

void chess_pgn_reader_counts(const chess_pgn_reader *reader, size_t *n_games, size_t *n_skipped) {
    if (n_games) {
        *n_games = reader->n_games;
    }
    if (n_skipped) {
        *n_skipped = reader->n_skipped;
    }
}

static bool is_result(const char *t) {
    return strcmp(t, "1-0") == 0 || strcmp(t, "0-1") == 0 || strcmp(t, "1/2-1/2") == 0 ||
           strcmp(t, "*") == 0;
}

/* Starts the game at the initial position unless its tags rule it out. Returns 0, or fills why
 * and returns 1 (the game is skipped), or a negative code on allocation failure. */
static int start_game(chess_pgn_reader *r, chess_game **game, char *why, size_t why_len,
                      char *err) {
    const pgn_setup *s = &r->setup;
    if (s->why[0]) {
        snprintf(why, why_len, "%s", s->why);
        return 1;
    }
    if (s->claim[0] && !s->fen_initial) {
        snprintf(why, why_len, "does not start from the initial position (%s without a [FEN] tag)",
                 s->claim);
        return 1;
    }
    return chess_game_new(game, NULL, err);
}

int chess_pgn_reader_next(chess_pgn_reader *r, chess_game **out, char *err) {
    *out = NULL;
    r->n_tags = 0;
    memset(&r->setup, 0, sizeof r->setup);
    r->nul_line = 0;
    int c;
    bool seen_tag = false, bad_tag = false;
    size_t game_line = 0; /* where the game starts: its first tag, else its movetext */

    /* tag section: skip blank lines, escape lines and stray comments before it */
    for (;;) {
        c = next_char(r);
        if (c < 0) {
            if (r->io_error) {
                return common_fail(err, COMMON_ERR_IO, "pgn: read error: %s",
                                   strerror(r->io_error));
            }
            if (!seen_tag && r->nul_line == 0) {
                return CHESS_PGN_END;
            }
            break;
        }
        if (is_space(c)) {
            continue;
        }
        if (c == '%' || c == ';') {
            skip_line(r);
        } else if (c == '[') {
            if (!seen_tag) {
                r->game_number++;
                game_line = r->line;
            }
            seen_tag = true;
            if (!read_tag(r)) {
                bad_tag = true;
            }
        } else {
            unget_char(r, c);
            break;
        }
    }
    if (!seen_tag) {
        r->game_number++;
        /* a NUL before the end of input with no game after it is skipped on its own line */
        game_line = c < 0 ? r->nul_line : r->line;
    }

    char why[160] = "";
    chess_game *game = NULL;
    if (bad_tag) {
        snprintf(why, sizeof why, "malformed tag pair");
    } else {
        int rc = start_game(r, &game, why, sizeof why, err);
        if (rc < 0) {
            return rc;
        }
    }

    /* movetext, up to and including the result */
    size_t depth = 0; /* variation nesting */
    bool ended = false;
    char token[PGN_TOKEN_MAX + 1];
    while (!ended) {
        c = next_char(r);
        if (c < 0) {
            if (r->io_error) {
                chess_game_destroy(&game);
                return common_fail(err, COMMON_ERR_IO, "pgn: read error: %s",
                                   strerror(r->io_error));
            }
            break;
        }
        if (is_space(c)) {
            continue;
        }
        if (c == '{') {
            if (!skip_comment(r) && !why[0]) {
                snprintf(why, sizeof why, "unterminated comment");
            }
            continue;
        }
        if (c == ';') {
            skip_line(r);
            continue;
        }
        if (c == '(') {
            depth++;
            continue;
        }
        if (c == ')') {
            if (depth == 0 && !why[0]) {
                snprintf(why, sizeof why, "unbalanced ')'");
            }
            if (depth > 0) {
                depth--;
            }
            continue;
        }
        if (c == '[') {
            /* the next game's tags: this game has no result (or an unclosed variation) */
            unget_char(r, c);
            break;
        }
        /* a token: up to whitespace or a delimiter */
        size_t n = 0;
        bool too_long = false;
        while (c >= 0 && !is_space(c) && c != '{' && c != '(' && c != ')' && c != ';' && c != '[' &&
               !(c == '$' && n > 0)) {
            if (n < PGN_TOKEN_MAX) {
                token[n++] = (char)c;
            } else {
                too_long = true;
            }
            c = next_char(r);
        }
        unget_char(r, c);
        token[n] = '\0';
        if (depth > 0) {
            continue; /* inside a variation: not the main line */
        }
        if (is_result(token)) {
            ended = true;
            break;
        }
        if (token[0] == '$') {
            continue; /* NAG */
        }
        /* move numbers "12." / "12..." possibly glued to the move ("12.e4") */
        char *move_text = token;
        if (token[0] >= '0' && token[0] <= '9') {
            char *p = token;
            while (*p >= '0' && *p <= '9') {
                p++;
            }
            if (*p == '.') {
                while (*p == '.') {
                    p++;
                }
                move_text = p;
            }
        }
        while (*move_text == '.') {
            move_text++; /* a lone "..." continuation */
        }
        if (!*move_text || strspn(move_text, "!?") == strlen(move_text)) {
            continue; /* only a move number, or a stand-alone annotation */
        }
        if (why[0]) {
            continue; /* already skipping: read to the end of the game */
        }
        const chess_position *pos = chess_game_position(game);
        chess_move move;
        char san_err[COMMON_ERR_LEN];
        int rc = too_long ? common_fail(san_err, COMMON_ERR_PARSE, "malformed SAN")
                          : chess_move_from_san(pos, move_text, &move, san_err);
        if (rc == 0) {
            rc = chess_game_push(game, move, err);
            if (rc != 0) {
                chess_game_destroy(&game);
                return rc;
            }
        } else {
            snprintf(why, sizeof why, "move %u%s %.*s: %.60s", (unsigned)pos->fullmove,
                     pos->side == CHESS_WHITE ? "." : "...", PGN_TOKEN_MAX, move_text, san_err);
        }
    }
    if (!why[0] && depth > 0) {
        snprintf(why, sizeof why, "unterminated variation");
    }
    if (!why[0] && !ended) {
        snprintf(why, sizeof why, "no result (truncated game)");
    }
    if (r->nul_line) {
        /* first: the other reasons may only be what the NUL did to the text */
        snprintf(why, sizeof why, "NUL byte in line %zu", r->nul_line);
    }
    if (why[0]) {
        chess_game_destroy(&game);
        r->n_skipped++;
        common_fail(err, 0, "game %zu (line %zu): %s", r->game_number, game_line, why);
        return CHESS_PGN_SKIPPED;
    }
    r->n_games++;
    *out = game;
    return CHESS_PGN_GAME;
}

/* ---- writing ---- */

static const char *result_text(const chess_game *game) {
    switch (chess_game_status(game, false)) {
    case CHESS_CHECKMATE:
        return chess_game_position(game)->side == CHESS_WHITE ? "0-1" : "1-0";
    case CHESS_ONGOING:
        return "*";
    default:
        return "1/2-1/2";
    }
}

int chess_game_write_pgn(const chess_game *game, FILE *out, char *err) {
    const char *result = result_text(game);
    chess_position pos = *chess_game_start(game);
    chess_position standard;
    chess_position_init(&standard);
    fprintf(out,
            "[Event \"?\"]\n[Site \"?\"]\n[Date \"????.??.??\"]\n[Round \"?\"]\n"
            "[White \"?\"]\n[Black \"?\"]\n[Result \"%s\"]\n",
            result);
    if (pos.hash != standard.hash || pos.fullmove != 1 || pos.halfmove != 0) {
        char fen[CHESS_FEN_MAX];
        chess_position_to_fen(&pos, fen);
        fprintf(out, "[SetUp \"1\"]\n[FEN \"%s\"]\n", fen);
    }
    fputc('\n', out);
    size_t column = 0;
    const chess_move *moves = chess_game_moves(game);
    for (size_t i = 0; i < chess_game_n_moves(game); i++) {
        char word[32], san[CHESS_SAN_MAX];
        chess_move_to_san(&pos, moves[i], san);
        if (pos.side == CHESS_WHITE) {
            snprintf(word, sizeof word, "%u. %s", (unsigned)pos.fullmove, san);
        } else if (i == 0) {
            snprintf(word, sizeof word, "%u... %s", (unsigned)pos.fullmove, san);
        } else {
            snprintf(word, sizeof word, "%s", san);
        }
        size_t w = strlen(word);
        if (column && column + 1 + w > 79) {
            fputc('\n', out);
            column = 0;
        } else if (column) {
            fputc(' ', out);
            column++;
        }
        fputs(word, out);
        column += w;
        chess_position_make_move(&pos, moves[i]);
    }
    fprintf(out, "%s%s\n\n", column ? " " : "", result);
    if (ferror(out)) {
        return common_fail(err, COMMON_ERR_IO, "chess_game_write_pgn: write error");
    }
    return 0;
}
