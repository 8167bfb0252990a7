/*
 * cmd_chess: `chesslens chess perft|legal|pgn2uci|random`, the command-line face of the chess
 * library: move-tree counts for checking the move generator, the legal-token view of a game as
 * JSON lines, PGN databases to UCI lines, and seeded random games for datasets.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "cli/cli_int.h"
#include "common/common.h"

static int load_fen(const char *fen, chess_position *pos) {
    char err[COMMON_ERR_LEN];
    if (!fen) {
        chess_position_init(pos);
        return 0;
    }
    if (chess_position_from_fen(pos, fen, err) != 0) {
        fprintf(stderr, "chesslens chess: %s\n", err);
        return -1;
    }
    return 0;
}

static int cmd_perft(int argc, char **argv) {
    const char *fen = NULL;
    long depth = 0;
    bool divide = false;
    const cli_opt opts[] = {
        {.name = "--fen",
         .kind = CLI_STRING,
         .value = &fen,
         .meta = "FEN",
         .help = "start position (default: the initial position)"},
        {.name = "--depth",
         .kind = CLI_LONG,
         .value = &depth,
         .meta = "N",
         .lo = 0,
         .hi = 20,
         .required = true,
         .help = "plies to count"},
        {.name = "--divide",
         .kind = CLI_FLAG,
         .value = &divide,
         .help = "first print 'move: count' per legal move"},
    };
    const cli_spec spec = {.command = "chess perft",
                           .synopsis = "[--fen FEN] --depth N [--divide]",
                           .about = "Counts the leaf nodes of the legal move tree (the count on "
                                    "the last line).",
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    chess_position pos;
    if (load_fen(fen, &pos) != 0) {
        return 1;
    }
    uint64_t total;
    if (divide && depth > 0) {
        chess_move_list list;
        chess_generate_moves(&pos, &list);
        total = 0;
        for (size_t i = 0; i < list.n; i++) {
            chess_position child = pos;
            chess_position_make_move(&child, list.moves[i]);
            uint64_t n = chess_perft(&child, (int)depth - 1);
            char uci[6];
            chess_move_to_uci(list.moves[i], uci);
            printf("%s: %" PRIu64 "\n", uci, n);
            total += n;
        }
        printf("\n");
    } else {
        total = chess_perft(&pos, (int)depth);
    }
    printf("%" PRIu64 "\n", total);
    return 0;
}

static int cmd_random(int argc, char **argv) {
    uint64_t n = 0, seed = 0;
    long max_tokens = 0;
    const cli_opt opts[] = {
        {.name = "--n",
         .kind = CLI_U64,
         .value = &n,
         .meta = "N",
         .required = true,
         .help = "number of games"},
        {.name = "--seed",
         .kind = CLI_U64,
         .value = &seed,
         .meta = "S",
         .required = true,
         .help = "seed; game i depends only on (S, i)"},
        CLI_OPT_MAX_TOKENS(&max_tokens, "at most T tokens per game counting <s> (0 = no limit)"),
    };
    const cli_spec spec = {.command = "chess random",
                           .synopsis = "--n N --seed S [--max-tokens T]",
                           .about = "N random legal games (uniform over legal moves, seeded), one "
                                    "UCI game per line.",
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    char err[COMMON_ERR_LEN];
    for (uint64_t i = 0; i < n; i++) {
        chess_game *game;
        char *uci;
        if (chess_random_game(&game, chess_random_game_seed(seed, i), (size_t)max_tokens, err) !=
            0) {
            fprintf(stderr, "chesslens chess random: %s\n", err);
            return 1;
        }
        int rc = chess_game_to_uci(game, &uci, err);
        chess_game_destroy(&game);
        if (rc != 0) {
            fprintf(stderr, "chesslens chess random: %s\n", err);
            return 1;
        }
        fputs(uci, stdout);
        fputc('\n', stdout);
        free(uci);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "chesslens chess random: write error: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

/* Prints the legal next tokens of one position as a JSON array: squares in name order
 * ("a1", "a2", ..., "h8"), then promotion letters q r b n. */
static void print_next_tokens(const chess_token_info *t) {
    putchar('[');
    int first = 1;
    for (int file = 0; file < 8; file++) {
        for (int rank = 0; rank < 8; rank++) {
            int sq = rank * 8 + file;
            if (t->next_squares & (1ULL << sq)) {
                char name[3];
                chess_square_name(sq, name);
                printf("%s\"%s\"", first ? "" : ",", name);
                first = 0;
            }
        }
    }
    static const struct {
        int bit;
        const char *text;
    } letters[4] = {
        {CHESS_PROMO_Q, "q"}, {CHESS_PROMO_R, "r"}, {CHESS_PROMO_B, "b"}, {CHESS_PROMO_N, "n"}};
    for (int i = 0; i < 4; i++) {
        if (t->next_promos & letters[i].bit) {
            printf("%s\"%s\"", first ? "" : ",", letters[i].text);
            first = 0;
        }
    }
    putchar(']');
}

static int cmd_legal(int argc, char **argv) {
    const char *uci = NULL, *fen = NULL;
    const cli_opt opts[] = {
        {.name = "--uci",
         .kind = CLI_STRING,
         .value = &uci,
         .meta = "MOVES",
         .required = true,
         .allow_empty = true,
         .help = "the game, UCI moves separated by spaces"},
        {.name = "--fen",
         .kind = CLI_STRING,
         .value = &fen,
         .meta = "FEN",
         .help = "start position (default: the initial position)"},
    };
    const cli_spec spec = {.command = "chess legal",
                           .synopsis = "--uci \"MOVES\" [--fen FEN]",
                           .about = "One JSON object per token position of a game: position, "
                                    "token, move index,\nphase and the legal next tokens. An "
                                    "illegal game prints nothing but the error.",
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    chess_position start;
    if (load_fen(fen, &start) != 0) {
        return 1;
    }
    char err[COMMON_ERR_LEN];
    chess_token_info *tokens;
    size_t n;
    /* the whole game is checked before anything is printed: no partial output */
    if (chess_legal_tokens(&start, uci, &tokens, &n, err) != 0) {
        free(tokens);
        fprintf(stderr, "chesslens chess legal: %s\n", err);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        const chess_token_info *t = &tokens[i];
        printf("{\"position\":%zu,\"token\":\"%s\",\"move_index\":%d,\"phase\":\"%s\","
               "\"n_legal\":%d,\"legal_next\":",
               i, t->token.text, t->token.move_index, chess_phase_name(t->token.phase), t->n_next);
        print_next_tokens(t);
        printf("}\n");
    }
    free(tokens);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "chesslens chess legal: write error: %s\n", strerror(errno));
        return 1;
    }
    return 0;
}

static int cmd_pgn2uci(int argc, char **argv) {
    const cli_spec spec = {.command = "chess pgn2uci",
                           .synopsis = "FILE.pgn",
                           .about = "One UCI game per line on stdout; skipped games (with the "
                                    "reason) and a summary\non stderr.",
                           .min_args = 1,
                           .max_args = 1};
    char *args[1];
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, args, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    const char *path = args[0];
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "chesslens chess pgn2uci: open %s: %s\n", path, strerror(errno));
        return 1;
    }
    char err[COMMON_ERR_LEN];
    chess_pgn_reader *reader;
    if (chess_pgn_reader_new_file(&reader, f, err) != 0) {
        fprintf(stderr, "chesslens chess pgn2uci: %s\n", err);
        fclose(f);
        return 1;
    }
    int status = 0;
    for (;;) {
        chess_game *game;
        int rc = chess_pgn_reader_next(reader, &game, err);
        if (rc == CHESS_PGN_END) {
            break;
        }
        if (rc == CHESS_PGN_SKIPPED) {
            fprintf(stderr, "%s: skipped %s\n", path, err);
            continue;
        }
        if (rc < 0) {
            fprintf(stderr, "chesslens chess pgn2uci: %s: %s\n", path, err);
            status = 1;
            break;
        }
        char *uci;
        rc = chess_game_to_uci(game, &uci, err);
        chess_game_destroy(&game);
        if (rc != 0) {
            fprintf(stderr, "chesslens chess pgn2uci: %s\n", err);
            status = 1;
            break;
        }
        fputs(uci, stdout);
        fputc('\n', stdout);
        free(uci);
    }
    size_t n_games, n_skipped;
    chess_pgn_reader_counts(reader, &n_games, &n_skipped);
    chess_pgn_reader_destroy(&reader);
    fclose(f);
    fprintf(stderr, "%s: %zu games converted, %zu skipped\n", path, n_games, n_skipped);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "chesslens chess pgn2uci: write error: %s\n", strerror(errno));
        return 1;
    }
    return status;
}

int cli_chess(int argc, char **argv) {
    static const cli_subcommand subs[] = {
        {"perft", cmd_perft, "count the leaf nodes of the legal move tree"},
        {"legal", cmd_legal, "per token of a game: move, phase, legal next tokens (JSON)"},
        {"pgn2uci", cmd_pgn2uci, "PGN database to one UCI game per line"},
        {"random", cmd_random, "seeded random legal games"},
    };
    return cli_dispatch("chess", subs, CLI_N_OPTS(subs), argc, argv);
}
