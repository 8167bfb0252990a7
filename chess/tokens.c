/*
 * tokens: the token-level view of a game that chess language models read. A game in UCI is the
 * token sequence `<s> from to [promotion] from to ...`; for every token position this file
 * says which move it belongs to, its phase, and which tokens may legally come next, so that an
 * analysis can score a model's prediction against the rules at any position.
 *
 * The legal next tokens follow the research convention: starting a move, the from-squares of
 * pieces that have a legal move; after a from-square, that piece's destinations; after a
 * promotion destination, the four letters; with no legal move (mate, stalemate), nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "chess/game_int.h"
#include "chess/tables_int.h"
#include "common/common.h"

static const char promo_text[] = "nbrq"; /* UCI letter of CHESS_KNIGHT.. CHESS_QUEEN */

const char *chess_phase_name(chess_phase phase) {
    switch (phase) {
    case CHESS_PHASE_SPECIAL:
        return "special";
    case CHESS_PHASE_WHITE_FROM:
        return "white_from";
    case CHESS_PHASE_WHITE_TO:
        return "white_to";
    case CHESS_PHASE_BLACK_FROM:
        return "black_from";
    case CHESS_PHASE_BLACK_TO:
        return "black_to";
    case CHESS_PHASE_PROMOTION:
        return "promotion";
    }
    return "unknown";
}

static bool is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Number of whitespace-separated words in s. */
static size_t count_words(const char *s) {
    size_t n = 0;
    while (*s) {
        while (is_space(*s)) {
            s++;
        }
        if (!*s) {
            break;
        }
        n++;
        while (*s && !is_space(*s)) {
            s++;
        }
    }
    return n;
}

/* Advances *s to the next word; returns its length (0 at the end). */
static size_t next_word(const char **s, const char **word) {
    const char *p = *s;
    while (is_space(*p)) {
        p++;
    }
    *word = p;
    while (*p && !is_space(*p)) {
        p++;
    }
    *s = p;
    return (size_t)(p - *word);
}

static int move_error(char *err, int code, size_t number, const char *word, size_t len,
                      const char *why) {
    int shown = (int)(len > 16 ? 16 : len);
    return common_fail(err, code, "move %zu '%.*s%s': %s", number, shown, word,
                       len > 16 ? "..." : "", why);
}

static void set_token(chess_token *t, const char *text, int move_index, chess_phase phase) {
    memset(t->text, 0, sizeof t->text);
    memcpy(t->text, text, strlen(text) < 3 ? strlen(text) : 3);
    t->move_index = move_index;
    t->phase = phase;
}

int chess_uci_split(const char *uci_line, chess_token **out, size_t *n_out, char *err) {
    size_t n_moves = count_words(uci_line);
    chess_token *tokens = malloc((3 * n_moves + 1) * sizeof *tokens);
    if (!tokens) {
        return common_fail(err, COMMON_ERR_NOMEM, "chess_uci_split: out of memory");
    }
    size_t n = 0;
    set_token(&tokens[n++], "<s>", -1, CHESS_PHASE_SPECIAL);
    const char *s = uci_line, *word;
    size_t len;
    for (size_t i = 0; (len = next_word(&s, &word)) > 0; i++) {
        int from, to, promo;
        if (chess_uci_text_parse(word, len, &from, &to, &promo) != 0) {
            free(tokens);
            return move_error(err, COMMON_ERR_PARSE, i + 1, word, len, "malformed UCI move");
        }
        bool white = i % 2 == 0;
        char text[3];
        chess_square_name(from, text);
        set_token(&tokens[n++], text, (int)i,
                  white ? CHESS_PHASE_WHITE_FROM : CHESS_PHASE_BLACK_FROM);
        chess_square_name(to, text);
        set_token(&tokens[n++], text, (int)i, white ? CHESS_PHASE_WHITE_TO : CHESS_PHASE_BLACK_TO);
        if (promo >= 0) {
            char letter[2] = {promo_text[promo - CHESS_KNIGHT], '\0'};
            set_token(&tokens[n++], letter, (int)i, CHESS_PHASE_PROMOTION);
        }
    }
    *out = tokens;
    *n_out = n;
    return 0;
}

/* From-squares of the pieces that have at least one legal move. */
static uint64_t from_squares(const chess_move_list *list) {
    uint64_t b = 0;
    for (size_t i = 0; i < list->n; i++) {
        b |= 1ULL << CHESS_MOVE_FROM(list->moves[i]);
    }
    return b;
}

static uint64_t to_squares(const chess_move_list *list, int from) {
    uint64_t b = 0;
    for (size_t i = 0; i < list->n; i++) {
        if (CHESS_MOVE_FROM(list->moves[i]) == from) {
            b |= 1ULL << CHESS_MOVE_TO(list->moves[i]);
        }
    }
    return b;
}

static void set_next(chess_token_info *info, uint64_t squares, uint8_t promos) {
    info->next_squares = squares;
    info->next_promos = promos;
    info->n_next = chess_popcount(squares) + chess_popcount(promos);
}

int chess_legal_tokens(const chess_position *start, const char *uci_line, chess_token_info **out,
                       size_t *n_out, char *err) {
    *out = NULL;
    *n_out = 0;
    size_t n_moves = count_words(uci_line);
    chess_token_info *info = calloc(3 * n_moves + 1, sizeof *info);
    if (!info) {
        return common_fail(err, COMMON_ERR_NOMEM, "chess_legal_tokens: out of memory");
    }
    chess_position pos;
    if (start) {
        pos = *start;
    } else {
        chess_position_init(&pos);
    }
    chess_move_list list;
    chess_generate_moves(&pos, &list);

    size_t n = 0;
    set_token(&info[n].token, "<s>", -1, CHESS_PHASE_SPECIAL);
    set_next(&info[n++], from_squares(&list), 0);

    const char *s = uci_line, *word;
    size_t len;
    int rc = 0;
    for (size_t i = 0; (len = next_word(&s, &word)) > 0; i++) {
        chess_move move;
        char why[COMMON_ERR_LEN];
        rc = chess_move_from_uci_text(&pos, word, len, &move, why);
        if (rc != 0) {
            rc = move_error(err, rc, i + 1, word, len, why);
            break;
        }
        bool white = pos.side == CHESS_WHITE;
        int from = CHESS_MOVE_FROM(move), to = CHESS_MOVE_TO(move);
        bool promo = CHESS_MOVE_KIND(move) == CHESS_MOVE_PROMOTION;
        char text[3];

        chess_square_name(from, text);
        set_token(&info[n].token, text, (int)i,
                  white ? CHESS_PHASE_WHITE_FROM : CHESS_PHASE_BLACK_FROM);
        set_next(&info[n++], to_squares(&list, from), 0);

        chess_square_name(to, text);
        set_token(&info[n].token, text, (int)i,
                  white ? CHESS_PHASE_WHITE_TO : CHESS_PHASE_BLACK_TO);
        chess_token_info *to_info = &info[n++];
        chess_token_info *promo_info = NULL;
        if (promo) {
            set_next(to_info, 0, CHESS_PROMO_Q | CHESS_PROMO_R | CHESS_PROMO_B | CHESS_PROMO_N);
            char letter[2] = {promo_text[CHESS_MOVE_PROMO(move) - CHESS_KNIGHT], '\0'};
            promo_info = &info[n++];
            set_token(&promo_info->token, letter, (int)i, CHESS_PHASE_PROMOTION);
        }
        chess_position_make_move(&pos, move);
        chess_generate_moves(&pos, &list);
        set_next(promo ? promo_info : to_info, from_squares(&list), 0);
    }
    *out = info;
    *n_out = n;
    return rc;
}
