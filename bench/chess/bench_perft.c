/*
 * bench_perft: perft nodes per second of the chess library on the standard deep counts
 * (initial position depth 6, Kiwipete depth 5), and, when Stockfish is installed, Stockfish's
 * `go perft` on the same positions in the same run, with the ratio. Both are single-threaded.
 * Stockfish's time is measured around the whole process with its start-up (measured
 * separately with an immediate `quit`) subtracted.
 *
 * usage: bench_perft [--stockfish PATH] [--quick]   (--quick: one depth less)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "chess/chess.h"
#include "common/common.h"

typedef struct bench_case {
    const char *name;
    const char *fen;
    int depth;
    uint64_t expected;
    uint64_t expected_quick;
} bench_case;

static const bench_case cases[] = {
    {"start", CHESS_START_FEN, 6, 119060324, 4865609},
    {"kiwipete", "r3k2r/p1ppqpb1/bn2pnp1/3PN3/1p2P3/2N2Q1p/PPPBBPPP/R3K2R w KQkq - 0 1", 5,
     193690690, 4085603},
};

/* Runs Stockfish with the given UCI commands; returns wall seconds, or -1. Sets *nodes from
 * its "Nodes searched" line when nodes is not NULL. */
static double run_stockfish(const char *path, const char *commands, uint64_t *nodes) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "printf '%s' | %s", commands, path);
    double t0 = common_now_s();
    FILE *p = popen(cmd, "r");
    if (!p) {
        return -1;
    }
    char line[512];
    while (fgets(line, sizeof line, p)) {
        unsigned long long n;
        if (nodes && sscanf(line, "Nodes searched: %llu", &n) == 1) {
            *nodes = n;
        }
    }
    int status = pclose(p);
    double t = common_now_s() - t0;
    return status == 0 ? t : -1;
}

int main(int argc, char **argv) {
    const char *stockfish = "/usr/games/stockfish";
    int quick = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--stockfish") == 0 && i + 1 < argc) {
            stockfish = argv[++i];
        } else if (strcmp(argv[i], "--quick") == 0) {
            quick = 1;
        } else {
            fprintf(stderr, "usage: bench_perft [--stockfish PATH] [--quick]\n");
            return 2;
        }
    }
    int have_sf = access(stockfish, X_OK) == 0;
    double sf_startup = 0;
    if (have_sf) {
        /* best of three start-ups */
        sf_startup = 1e9;
        for (int i = 0; i < 3; i++) {
            double t = run_stockfish(stockfish, "uci\\nisready\\nquit\\n", NULL);
            if (t < 0) {
                have_sf = 0;
                break;
            }
            sf_startup = t < sf_startup ? t : sf_startup;
        }
    }
    printf("%-9s %5s %12s %9s %12s", "position", "depth", "nodes", "seconds", "nodes/s");
    if (have_sf) {
        printf(" %10s %12s %9s", "sf_seconds", "sf_nodes/s", "sf/ours");
    }
    printf("\n");
    int failed = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const bench_case *c = &cases[i];
        int depth = quick ? c->depth - 1 : c->depth;
        uint64_t expected = quick ? c->expected_quick : c->expected;
        chess_position pos;
        char err[COMMON_ERR_LEN];
        if (chess_position_from_fen(&pos, c->fen, err) != 0) {
            fprintf(stderr, "bench_perft: %s\n", err);
            return 1;
        }
        double t0 = common_now_s();
        uint64_t nodes = chess_perft(&pos, depth);
        double t = common_now_s() - t0;
        if (nodes != expected) {
            fprintf(stderr, "bench_perft: %s depth %d: %" PRIu64 " nodes, expected %" PRIu64 "\n",
                    c->name, depth, nodes, expected);
            failed = 1;
        }
        printf("%-9s %5d %12" PRIu64 " %9.3f %12.0f", c->name, depth, nodes, t, nodes / t);
        if (have_sf) {
            char commands[512];
            uint64_t sf_nodes = 0;
            snprintf(commands, sizeof commands,
                     "setoption name Threads value 1\\nposition fen %s\\ngo perft %d\\nquit\\n",
                     c->fen, depth);
            double st = run_stockfish(stockfish, commands, &sf_nodes) - sf_startup;
            if (sf_nodes != expected) {
                fprintf(stderr, "bench_perft: stockfish counted %" PRIu64 " nodes\n", sf_nodes);
                failed = 1;
            }
            /* ratio > 1: Stockfish took longer than chesslens */
            printf(" %10.3f %12.0f %9.2f", st, sf_nodes / st, st / t);
        }
        printf("\n");
    }
    if (have_sf) {
        printf("stockfish start-up subtracted: %.3f s (%s)\n", sf_startup, stockfish);
    } else {
        printf("stockfish not found at %s: no comparison\n", stockfish);
    }
    return failed;
}
