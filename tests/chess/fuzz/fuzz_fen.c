/*
 * fuzz_fen: libFuzzer target for the FEN parser and what runs on the positions it accepts.
 * The input is "FEN\nUCI moves": a FEN that parses must write back to a FEN that parses to
 * the same position, its moves must survive SAN and UCI round trips, and the UCI line must be
 * handled by the game, token and split functions with errors, never crashes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) {
        return 0;
    }
    char *text = malloc(size + 1);
    if (!text) {
        return 0;
    }
    memcpy(text, data, size);
    text[size] = '\0';
    char *uci = strchr(text, '\n');
    if (uci) {
        *uci++ = '\0';
    } else {
        uci = text + size;
    }

    char err[COMMON_ERR_LEN];
    chess_position pos;
    if (chess_position_from_fen(&pos, text, err) == 0) {
        char fen[CHESS_FEN_MAX];
        chess_position_to_fen(&pos, fen);
        chess_position again;
        if (chess_position_from_fen(&again, fen, err) != 0 || again.hash != pos.hash ||
            memcmp(again.board, pos.board, sizeof pos.board) != 0) {
            abort(); /* a FEN we wrote must read back as the same position */
        }
        chess_move_list list;
        chess_generate_moves(&pos, &list);
        for (size_t i = 0; i < list.n; i++) {
            char san[CHESS_SAN_MAX], text_uci[6];
            chess_move back;
            chess_move_to_san(&pos, list.moves[i], san);
            if (chess_move_from_san(&pos, san, &back, err) != 0 || back != list.moves[i]) {
                abort();
            }
            chess_move_to_uci(list.moves[i], text_uci);
            if (chess_move_from_uci(&pos, text_uci, &back, err) != 0 || back != list.moves[i]) {
                abort();
            }
        }
        if (chess_perft(&pos, 1) != list.n) {
            abort();
        }
        (void)chess_perft(&pos, 2);
        chess_game *game;
        if (chess_game_new(&game, &pos, err) == 0) {
            (void)chess_game_push_uci_line(game, uci, err);
            (void)chess_game_status(game, true);
            chess_game_destroy(&game);
        }
        chess_token_info *tokens;
        size_t n;
        (void)chess_legal_tokens(&pos, uci, &tokens, &n, err);
        free(tokens);
    }
    chess_token *split;
    size_t n_split;
    if (chess_uci_split(uci, &split, &n_split, err) == 0) {
        free(split);
    }
    chess_move m;
    chess_position start;
    chess_position_init(&start);
    (void)chess_move_from_san(&start, text, &m, err);
    (void)chess_move_from_uci(&start, text, &m, err);
    free(text);
    return 0;
}
