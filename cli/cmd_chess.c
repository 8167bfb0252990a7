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

static void usage(FILE *out) {
    fprintf(out,
            "usage: chesslens chess perft [--fen FEN] --depth N [--divide]\n"
            "       chesslens chess legal --uci \"MOVES\" [--fen FEN]\n"
            "       chesslens chess pgn2uci FILE.pgn\n"
            "       chesslens chess random --n N --seed S [--max-tokens T]\n"
            "\n"
            "  perft    count the leaf nodes of the legal move tree (node count on the last\n"
            "           line; --divide first prints 'move: count' per legal move)\n"
            "  legal    one JSON object per token position of a UCI game: position, token,\n"
            "           move index, phase and the legal next tokens\n"
            "  pgn2uci  one UCI game per line on stdout; skipped games and a summary on stderr\n"
            "  random   N random legal games (uniform over legal moves, seeded), one UCI game\n"
            "           per line, each at most T tokens counting <s> (0 = no limit)\n");
}

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
    uint64_t depth = 0;
    int have_depth = 0, divide = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fen") == 0 && i + 1 < argc) {
            fen = argv[++i];
        } else if (strcmp(argv[i], "--depth") == 0 && i + 1 < argc) {
            if (cli_parse_u64("chess", "--depth", argv[++i], &depth) != 0) {
                return 2;
            }
            have_depth = 1;
        } else if (strcmp(argv[i], "--divide") == 0) {
            divide = 1;
        } else {
            fprintf(stderr, "chesslens chess perft: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!have_depth || depth > 20) {
        fprintf(stderr, "chesslens chess perft: --depth N (0..20) is required\n");
        return 2;
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
    uint64_t n = 0, seed = 0, max_tokens = 0;
    int have_n = 0, have_seed = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--n") == 0 && i + 1 < argc) {
            if (cli_parse_u64("chess", "--n", argv[++i], &n) != 0) {
                return 2;
            }
            have_n = 1;
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            if (cli_parse_u64("chess", "--seed", argv[++i], &seed) != 0) {
                return 2;
            }
            have_seed = 1;
        } else if (strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
            if (cli_parse_u64("chess", "--max-tokens", argv[++i], &max_tokens) != 0) {
                return 2;
            }
        } else {
            fprintf(stderr, "chesslens chess random: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!have_n || !have_seed) {
        fprintf(stderr, "chesslens chess random: --n N and --seed S are required\n");
        return 2;
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
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--uci") == 0 && i + 1 < argc) {
            uci = argv[++i];
        } else if (strcmp(argv[i], "--fen") == 0 && i + 1 < argc) {
            fen = argv[++i];
        } else {
            fprintf(stderr, "chesslens chess legal: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!uci) {
        fprintf(stderr, "chesslens chess legal: --uci \"MOVES\" is required\n");
        return 2;
    }
    chess_position start;
    if (load_fen(fen, &start) != 0) {
        return 1;
    }
    char err[COMMON_ERR_LEN];
    chess_token_info *tokens;
    size_t n;
    int rc = chess_legal_tokens(&start, uci, &tokens, &n, err);
    for (size_t i = 0; i < n; i++) {
        const chess_token_info *t = &tokens[i];
        printf("{\"position\":%zu,\"token\":\"%s\",\"move_index\":%d,\"phase\":\"%s\","
               "\"n_legal\":%d,\"legal_next\":",
               i, t->token.text, t->token.move_index, chess_phase_name(t->token.phase), t->n_next);
        print_next_tokens(t);
        printf("}\n");
    }
    free(tokens);
    if (rc != 0) {
        fflush(stdout);
        fprintf(stderr, "chesslens chess legal: %s\n", err);
        return 1;
    }
    return 0;
}

static int cmd_pgn2uci(int argc, char **argv) {
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "chesslens chess pgn2uci: expected one argument, FILE.pgn\n");
        usage(stderr);
        return 2;
    }
    const char *path = argv[1];
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
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "perft") == 0) {
        return cmd_perft(argc - 1, argv + 1);
    }
    if (strcmp(sub, "legal") == 0) {
        return cmd_legal(argc - 1, argv + 1);
    }
    if (strcmp(sub, "pgn2uci") == 0) {
        return cmd_pgn2uci(argc - 1, argv + 1);
    }
    if (strcmp(sub, "random") == 0) {
        return cmd_random(argc - 1, argv + 1);
    }
    fprintf(stderr, "chesslens chess: unknown subcommand '%s'\n", sub);
    usage(stderr);
    return 2;
}
