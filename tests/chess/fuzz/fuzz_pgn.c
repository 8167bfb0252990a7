/*
 * fuzz_pgn: libFuzzer target for the streaming PGN reader. Any input must give games or
 * skipped-game reasons until the end, never a crash, a hang or a sanitizer report; every game
 * it returns must be a legal game whose UCI text reads back through the token functions.
 */
#include <stdint.h>
#include <stdlib.h>

#include "chess/chess.h"
#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    chess_pgn_reader *reader;
    char err[COMMON_ERR_LEN];
    if (chess_pgn_reader_new_buffer(&reader, (const char *)data, size, err) != 0) {
        return 0;
    }
    for (;;) {
        chess_game *game;
        int rc = chess_pgn_reader_next(reader, &game, err);
        if (rc == CHESS_PGN_END || rc < 0) {
            break;
        }
        if (rc != CHESS_PGN_GAME) {
            continue;
        }
        char *uci;
        if (chess_game_to_uci(game, &uci, err) == 0) {
            chess_token_info *tokens;
            size_t n;
            if (chess_legal_tokens(chess_game_start(game), uci, &tokens, &n, err) != 0) {
                abort(); /* a game the reader accepted must be legal */
            }
            free(tokens);
            free(uci);
        }
        chess_game_destroy(&game);
    }
    chess_pgn_reader_destroy(&reader);
    return 0;
}
