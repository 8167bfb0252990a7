/*
 * fuzz_pgn: libFuzzer target for the streaming PGN reader. Any input must give games or
 * skipped-game reasons until the end, never a crash, a hang or a sanitizer report. The same
 * bytes are read through the buffer reader and through the FILE* reader (fmemopen) in lock
 * step, and both must give the same games and the same skip reasons. Every game returned must
 * start from the initial position and be a legal game whose UCI text reads back through the
 * token functions, and an input with a NUL byte must have at least one game skipped for it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Whether a skip reason ("game N (line L): why") is the one for a NUL byte. */
static bool is_nul_reason(const char *err) {
    const char *why = strstr(err, "): ");
    return why && strncmp(why + 3, "NUL byte in line ", 17) == 0;
}

/* Checks a game the reader returned; aborts on a broken property. */
static void check_game(const chess_game *game) {
    char fen[CHESS_FEN_MAX];
    chess_position_to_fen(chess_game_start(game), fen);
    if (strcmp(fen, CHESS_START_FEN) != 0) {
        abort(); /* games must start from the initial position */
    }
    char err[COMMON_ERR_LEN];
    char *uci;
    if (chess_game_to_uci(game, &uci, err) != 0) {
        return; /* out of memory */
    }
    chess_token_info *tokens;
    size_t n;
    if (chess_legal_tokens(NULL, uci, &tokens, &n, err) != 0) {
        abort(); /* a game the reader accepted must be legal */
    }
    free(tokens);
    free(uci);
}

static bool same_game(const chess_game *a, const chess_game *b) {
    size_t n = chess_game_n_moves(a);
    return n == chess_game_n_moves(b) && (n == 0 || memcmp(chess_game_moves(a), chess_game_moves(b),
                                                           n * sizeof(chess_move)) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    chess_pgn_reader *buffer_reader = NULL, *file_reader = NULL;
    char *copy = NULL;
    FILE *f = NULL;
    char err[COMMON_ERR_LEN], file_err[COMMON_ERR_LEN];
    bool has_nul = size > 0 && memchr(data, '\0', size) != NULL, nul_skipped = false, ended = false;
    if (chess_pgn_reader_new_buffer(&buffer_reader, (const char *)data, size, err) != 0) {
        goto done;
    }
    /* fmemopen wants a writable buffer even to read; it may refuse an empty one */
    copy = malloc(size ? size : 1);
    if (copy) {
        memcpy(copy, data, size);
        f = size ? fmemopen(copy, size, "r") : NULL;
    }
    if (f && chess_pgn_reader_new_file(&file_reader, f, err) != 0) {
        goto done;
    }
    for (;;) {
        chess_game *game = NULL, *file_game = NULL;
        int rc = chess_pgn_reader_next(buffer_reader, &game, err);
        if (rc < 0) {
            break; /* out of memory */
        }
        if (file_reader) {
            int file_rc = chess_pgn_reader_next(file_reader, &file_game, file_err);
            if (file_rc < 0) {
                chess_pgn_reader_destroy(&file_reader); /* out of memory: stop comparing */
            } else if (file_rc != rc) {
                abort(); /* the two paths disagree on what comes next */
            } else if (rc == CHESS_PGN_SKIPPED && strcmp(err, file_err) != 0) {
                abort(); /* ... or on why a game is skipped */
            } else if (rc == CHESS_PGN_GAME && !same_game(game, file_game)) {
                abort(); /* ... or on a game's moves */
            }
            chess_game_destroy(&file_game);
        }
        if (rc == CHESS_PGN_END) {
            ended = true;
            break;
        }
        if (rc == CHESS_PGN_SKIPPED) {
            nul_skipped = nul_skipped || is_nul_reason(err);
            if (is_nul_reason(err) && !has_nul) {
                abort(); /* a NUL reported where there is none */
            }
            continue;
        }
        check_game(game);
        chess_game_destroy(&game);
    }
    if (ended && has_nul && !nul_skipped) {
        abort(); /* a NUL byte went by unreported */
    }
    if (ended && file_reader) {
        size_t games[2], skipped[2];
        chess_pgn_reader_counts(buffer_reader, &games[0], &skipped[0]);
        chess_pgn_reader_counts(file_reader, &games[1], &skipped[1]);
        if (games[0] != games[1] || skipped[0] != skipped[1]) {
            abort();
        }
    }
done:
    chess_pgn_reader_destroy(&file_reader);
    chess_pgn_reader_destroy(&buffer_reader);
    if (f) {
        fclose(f);
    }
    free(copy);
    return 0;
}
