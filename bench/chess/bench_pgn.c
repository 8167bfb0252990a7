/*
 * bench_pgn: PGN reading speed. Writes a database of random legal games (the seeded random
 * generator and the SAN writer) to a temporary file, then reads it back with the streaming
 * reader and prints games per second and MB per second, checking that every game came back
 * with the same moves (by the final position's key).
 *
 * usage: bench_pgn [--games N] [--max-tokens T]   (defaults: 100000 games of at most 160
 *        tokens, about the length of real games)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chess/chess.h"
#include "common/common.h"

int main(int argc, char **argv) {
    uint64_t n_games = 100000, max_tokens = 160;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--games") == 0 && i + 1 < argc) {
            n_games = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
            max_tokens = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: bench_pgn [--games N] [--max-tokens T]\n");
            return 2;
        }
    }
    const char *tmpdir = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/chesslens-bench-XXXXXX", tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    FILE *f = fdopen(fd, "w+b");
    uint64_t *keys = malloc(n_games * sizeof *keys);
    if (!f || !keys) {
        perror("bench_pgn");
        return 1;
    }
    char err[COMMON_ERR_LEN];
    uint64_t plies = 0;
    double t0 = common_now_s();
    for (uint64_t i = 0; i < n_games; i++) {
        chess_game *g;
        if (chess_random_game(&g, chess_random_game_seed(2024, i), (size_t)max_tokens, err) != 0 ||
            chess_game_write_pgn(g, f, err) != 0) {
            fprintf(stderr, "bench_pgn: %s\n", err);
            return 1;
        }
        keys[i] = chess_game_position(g)->hash;
        plies += chess_game_n_moves(g);
        chess_game_destroy(&g);
    }
    fflush(f);
    double t_write = common_now_s() - t0;
    long bytes = ftell(f);
    rewind(f);

    chess_pgn_reader *r;
    if (chess_pgn_reader_new_file(&r, f, err) != 0) {
        fprintf(stderr, "bench_pgn: %s\n", err);
        return 1;
    }
    uint64_t read = 0, mismatches = 0;
    t0 = common_now_s();
    for (;;) {
        chess_game *g;
        int rc = chess_pgn_reader_next(r, &g, err);
        if (rc == CHESS_PGN_END) {
            break;
        }
        if (rc != CHESS_PGN_GAME) {
            fprintf(stderr, "bench_pgn: %s\n", err);
            mismatches++;
            continue;
        }
        if (read >= n_games || chess_game_position(g)->hash != keys[read]) {
            mismatches++;
        }
        read++;
        chess_game_destroy(&g);
    }
    double t_read = common_now_s() - t0;
    size_t n_ok, n_skipped;
    chess_pgn_reader_counts(r, &n_ok, &n_skipped);
    chess_pgn_reader_destroy(&r);
    fclose(f);
    remove(path);
    free(keys);

    printf("games %" PRIu64 ", plies %" PRIu64 " (%.1f per game), file %.1f MB\n", n_games, plies,
           (double)plies / (double)n_games, bytes / 1e6);
    printf("write (random games + SAN): %.2f s, %.0f games/s\n", t_write, n_games / t_write);
    printf("read  (PGN -> games):       %.2f s, %.0f games/s, %.1f MB/s, %.0f plies/s\n", t_read,
           read / t_read, bytes / 1e6 / t_read, plies / t_read);
    printf("read back %" PRIu64 " games, %zu skipped, %" PRIu64 " mismatches\n", read, n_skipped,
           mismatches);
    return (read == n_games && mismatches == 0) ? 0 : 1;
}
