/*
 * game: UCI moves, games with their repetition history and end-of-game rules, and the seeded
 * random-game generator.
 *
 * A game keeps the Zobrist key of every position it passed through, so threefold and fivefold
 * repetition are a scan back over the positions since the last irreversible move. Keys include
 * the en-passant square only when an en-passant capture is actually legal, as the repetition
 * rule requires.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "chess/game_int.h"
#include "chess/position_int.h"
#include "common/common.h"

struct chess_game {
    chess_position start;
    chess_position pos;  /* after all moves */
    chess_move *moves;   /* n_moves played moves */
    uint64_t *hashes;    /* n_moves + 1 keys: hashes[i] is the key after i moves */
    size_t n_moves, cap; /* cap: allocated entries of moves (hashes has cap + 1) */
};

static const char promo_letters[] = "nbrq"; /* indexed by CHESS_MOVE_PROMO - CHESS_KNIGHT */

void chess_move_to_uci(chess_move move, char out[6]) {
    chess_square_name(CHESS_MOVE_FROM(move), out);
    chess_square_name(CHESS_MOVE_TO(move), out + 2);
    if (CHESS_MOVE_KIND(move) == CHESS_MOVE_PROMOTION) {
        out[4] = promo_letters[CHESS_MOVE_PROMO(move) - CHESS_KNIGHT];
        out[5] = '\0';
    }
}

int chess_uci_text_parse(const char *text, size_t len, int *from, int *to, int *promo) {
    if (len != 4 && len != 5) {
        return -1;
    }
    *from = chess_square_parse(text);
    *to = chess_square_parse(text + 2);
    if (*from < 0 || *to < 0) {
        return -1;
    }
    *promo = -1;
    if (len == 5) {
        const char *p = strchr(promo_letters, text[4] | 0x20);
        if (!p || text[4] == '\0') {
            return -1;
        }
        *promo = (int)(p - promo_letters) + CHESS_KNIGHT;
    }
    return 0;
}

int chess_move_from_uci_text(const chess_position *pos, const char *text, size_t len,
                             chess_move *out, char *err) {
    int from, to, promo;
    if (chess_uci_text_parse(text, len, &from, &to, &promo) != 0) {
        return common_fail(err, COMMON_ERR_PARSE, "malformed UCI move");
    }
    chess_move_list list;
    chess_generate_moves(pos, &list);
    for (size_t i = 0; i < list.n; i++) {
        chess_move m = list.moves[i];
        if (CHESS_MOVE_FROM(m) != from || CHESS_MOVE_TO(m) != to) {
            continue;
        }
        bool is_promo = CHESS_MOVE_KIND(m) == CHESS_MOVE_PROMOTION;
        if (!is_promo && promo < 0) {
            *out = m;
            return 0;
        }
        if (is_promo && promo < 0) {
            return common_fail(err, COMMON_ERR_INVALID, "promotion without a piece letter");
        }
        if (is_promo && CHESS_MOVE_PROMO(m) == promo) {
            *out = m;
            return 0;
        }
        if (!is_promo) {
            return common_fail(err, COMMON_ERR_INVALID, "promotion letter on a non-promotion");
        }
    }
    return common_fail(err, COMMON_ERR_INVALID, "illegal in this position");
}

int chess_move_from_uci(const chess_position *pos, const char *uci, chess_move *out, char *err) {
    return chess_move_from_uci_text(pos, uci, strlen(uci), out, err);
}

/* ---- games ---- */

int chess_game_new(chess_game **out, const chess_position *start, char *err) {
    chess_game *g = calloc(1, sizeof *g);
    if (!g) {
        return common_fail(err, COMMON_ERR_NOMEM, "chess_game_new: out of memory");
    }
    g->cap = 64;
    g->moves = malloc(g->cap * sizeof *g->moves);
    g->hashes = malloc((g->cap + 1) * sizeof *g->hashes);
    if (!g->moves || !g->hashes) {
        chess_game_destroy(&g);
        return common_fail(err, COMMON_ERR_NOMEM, "chess_game_new: out of memory");
    }
    if (start) {
        g->start = *start;
    } else {
        chess_position_init(&g->start);
    }
    g->pos = g->start;
    g->hashes[0] = g->pos.hash;
    *out = g;
    return 0;
}

void chess_game_destroy(chess_game **game) {
    if (!game || !*game) {
        return;
    }
    free((*game)->moves);
    free((*game)->hashes);
    free(*game);
    *game = NULL;
}

const chess_position *chess_game_position(const chess_game *game) {
    return &game->pos;
}

const chess_position *chess_game_start(const chess_game *game) {
    return &game->start;
}

size_t chess_game_n_moves(const chess_game *game) {
    return game->n_moves;
}

const chess_move *chess_game_moves(const chess_game *game) {
    return game->moves;
}

int chess_game_push(chess_game *game, chess_move move, char *err) {
    if (game->n_moves == game->cap) {
        size_t cap = game->cap * 2;
        chess_move *moves = realloc(game->moves, cap * sizeof *moves);
        if (!moves) {
            return common_fail(err, COMMON_ERR_NOMEM, "chess_game_push: out of memory");
        }
        game->moves = moves;
        uint64_t *hashes = realloc(game->hashes, (cap + 1) * sizeof *hashes);
        if (!hashes) {
            return common_fail(err, COMMON_ERR_NOMEM, "chess_game_push: out of memory");
        }
        game->hashes = hashes;
        game->cap = cap;
    }
    chess_position_make_move(&game->pos, move);
    chess_position_normalize_ep(&game->pos);
    game->moves[game->n_moves++] = move;
    game->hashes[game->n_moves] = game->pos.hash;
    return 0;
}

int chess_game_push_uci_line(chess_game *game, const char *uci_line, char *err) {
    const char *s = uci_line;
    size_t number = 0;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r') {
            s++;
        }
        if (!*s) {
            return 0;
        }
        const char *end = s;
        while (*end && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r') {
            end++;
        }
        number++;
        chess_move move;
        char why[COMMON_ERR_LEN];
        int rc = chess_move_from_uci_text(&game->pos, s, (size_t)(end - s), &move, why);
        if (rc == 0) {
            rc = chess_game_push(game, move, why);
        }
        if (rc != 0) {
            int shown = (int)(end - s > 16 ? 16 : end - s);
            return common_fail(err, rc, "move %zu '%.*s%s': %s", number, shown, s,
                               end - s > 16 ? "..." : "", why);
        }
        s = end;
    }
}

/* How many times the current position occurred (including now), looking back only over the
 * positions since the last capture or pawn move, with the same side to move. */
static int repetitions(const chess_game *game) {
    size_t n = game->n_moves;
    size_t back = game->pos.halfmove < n ? game->pos.halfmove : n;
    int count = 1;
    for (size_t k = 2; k <= back; k += 2) {
        if (game->hashes[n - k] == game->hashes[n]) {
            count++;
        }
    }
    return count;
}

chess_status chess_game_status(const chess_game *game, bool claim_draw) {
    chess_move_list list;
    if (chess_generate_moves(&game->pos, &list) == 0) {
        return chess_position_in_check(&game->pos) ? CHESS_CHECKMATE : CHESS_STALEMATE;
    }
    if (chess_position_insufficient_material(&game->pos)) {
        return CHESS_INSUFFICIENT;
    }
    if (game->pos.halfmove >= 150) {
        return CHESS_SEVENTYFIVE_MOVES;
    }
    int reps = repetitions(game);
    if (reps >= 5) {
        return CHESS_FIVEFOLD_REPETITION;
    }
    if (claim_draw && game->pos.halfmove >= 100) {
        return CHESS_FIFTY_MOVES;
    }
    if (claim_draw && reps >= 3) {
        return CHESS_THREEFOLD_REPETITION;
    }
    return CHESS_ONGOING;
}

const char *chess_status_name(chess_status status) {
    switch (status) {
    case CHESS_ONGOING:
        return "ongoing";
    case CHESS_CHECKMATE:
        return "checkmate";
    case CHESS_STALEMATE:
        return "stalemate";
    case CHESS_INSUFFICIENT:
        return "insufficient_material";
    case CHESS_SEVENTYFIVE_MOVES:
        return "seventyfive_moves";
    case CHESS_FIVEFOLD_REPETITION:
        return "fivefold_repetition";
    case CHESS_FIFTY_MOVES:
        return "fifty_moves";
    case CHESS_THREEFOLD_REPETITION:
        return "threefold_repetition";
    }
    return "unknown";
}

int chess_game_to_uci(const chess_game *game, char **out, char *err) {
    char *buf = malloc(game->n_moves * 6 + 1);
    if (!buf) {
        return common_fail(err, COMMON_ERR_NOMEM, "chess_game_to_uci: out of memory");
    }
    char *p = buf;
    for (size_t i = 0; i < game->n_moves; i++) {
        if (i) {
            *p++ = ' ';
        }
        chess_move_to_uci(game->moves[i], p);
        p += strlen(p);
    }
    *p = '\0';
    *out = buf;
    return 0;
}

/* ---- random games ---- */

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) without modulo bias (rejects the top partial block of 2^64). */
static size_t uniform_below(uint64_t *state, size_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t r;
    do {
        r = splitmix64(state);
    } while (r >= limit);
    return (size_t)(r % n);
}

uint64_t chess_random_game_seed(uint64_t base_seed, uint64_t index) {
    uint64_t state = base_seed ^ (index * 0xD1B54A32D192ED03ULL);
    return splitmix64(&state);
}

int chess_random_game(chess_game **out, uint64_t seed, size_t max_tokens, char *err) {
    chess_game *g;
    int rc = chess_game_new(&g, NULL, err);
    if (rc != 0) {
        return rc;
    }
    uint64_t state = seed;
    size_t tokens = 1; /* <s> */
    while (chess_game_status(g, false) == CHESS_ONGOING) {
        chess_move_list list;
        chess_generate_moves(&g->pos, &list);
        chess_move move = list.moves[uniform_below(&state, list.n)];
        size_t cost = CHESS_MOVE_KIND(move) == CHESS_MOVE_PROMOTION ? 3 : 2;
        if (max_tokens && tokens + cost > max_tokens) {
            break;
        }
        rc = chess_game_push(g, move, err);
        if (rc != 0) {
            chess_game_destroy(&g);
            return rc;
        }
        tokens += cost;
    }
    *out = g;
    return 0;
}
