/*
 * cmd_games: `chesslens games import|generate`, datasets of games in a chesslens database
 * (docs/STORE.md). import streams a file of UCI lines or PGN into a named dataset; generate
 * stores the seeded random games `chesslens chess random` prints. Both report each refused
 * game with its reason and a summary on stderr, with a progress line while a terminal watches.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli_int.h"
#include "coordinator/coordinator.h"

typedef struct report {
    const char *label; /* the file, or "generate" */
    uint64_t total;    /* bytes of the file or games to generate; 0: unknown */
    bool by_bytes;
    bool tty;
    bool drawn; /* a progress line is on screen */
} report;

static void clear_progress(report *r) {
    if (r->drawn) {
        fputs("\r\033[K", stderr);
        r->drawn = false;
    }
}

static void on_skipped(void *ctx, const char *where, const char *reason) {
    report *r = ctx;
    clear_progress(r);
    fprintf(stderr, "%s: skipped %s%s%s\n", r->label, where, where[0] != '\0' ? ": " : "", reason);
}

static void on_progress(void *ctx, const coordinator_import_stats *st, uint64_t bytes) {
    report *r = ctx;
    if (!r->tty) {
        return;
    }
    uint64_t done = r->by_bytes ? bytes : st->n_read;
    double frac = r->total > 0 ? (double)done / (double)r->total : 0.0;
    frac = frac > 1.0 ? 1.0 : frac;
    char bar[31];
    int filled = (int)(frac * 30.0);
    for (int i = 0; i < 30; i++) {
        bar[i] = i < filled ? '#' : '.';
    }
    bar[30] = '\0';
    fprintf(stderr, "\r%s [%s] %3.0f%%  %" PRIu64 " games, %" PRIu64 " added", r->label, bar,
            frac * 100.0, st->n_read, st->n_added);
    r->drawn = true;
}

static void summary(report *r, const coordinator_import_stats *st, const char *dataset) {
    clear_progress(r);
    fprintf(stderr,
            "%s: %" PRIu64 " games read, %" PRIu64 " added to dataset '%s', %" PRIu64
            " already in it, %" PRIu64 " skipped\n",
            r->label, st->n_read, st->n_added, dataset, st->n_duplicate, st->n_skipped);
}

/* The options both subcommands take, spelled once. */
#define DATASET_OPT(ptr)                                                                           \
    {                                                                                              \
        .name = "--dataset", .kind = CLI_STRING, .value = (ptr), .meta = "NAME", .required = true, \
        .help = "dataset to create ([A-Za-z0-9._-], at most 128 characters)"                       \
    }
#define APPEND_OPT(ptr)                                                                            \
    {                                                                                              \
        .name = "--append", .kind = CLI_FLAG, .value = (ptr),                                      \
        .help = "add to an existing dataset (games it holds are not added again)"                  \
    }

static int cmd_import(int argc, char **argv) {
    const char *db = NULL, *dataset = NULL;
    bool append = false;
    long max_tokens = 0;
    int format = 0;
    static const char *const formats[] = {"auto", "uci", "pgn", NULL};
    static const coordinator_games_format format_values[] = {
        COORDINATOR_GAMES_AUTO, COORDINATOR_GAMES_UCI, COORDINATOR_GAMES_PGN};
    const cli_opt opts[] = {
        CLI_OPT_DB(&db),
        DATASET_OPT(&dataset),
        APPEND_OPT(&append),
        {.name = "--format",
         .kind = CLI_CHOICE,
         .value = &format,
         .meta = "F",
         .choices = formats,
         .help = "input format; auto: .pgn files and files that start like PGN are PGN"},
        CLI_OPT_MAX_TOKENS(&max_tokens,
                           "skip games of more than T tokens counting <s> (0 = no limit)"),
    };
    const cli_spec spec = {.command = "games import",
                           .synopsis = "FILE --db DB --dataset NAME [--append] [--format F] "
                                       "[--max-tokens T]",
                           .about = "Streams a file of games (one UCI game per line, or PGN) into "
                                    "a dataset: one row\nper game and one per token position. "
                                    "Skipped games (with the reason) and a\nsummary go to stderr.",
                           .min_args = 1,
                           .max_args = 1,
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    char *args[1];
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, args, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    const char *path = args[0];
    if (!coordinator_name_valid(dataset)) {
        return cli_usage_error(&spec, "--dataset '%s': use 1..%d characters of [A-Za-z0-9._-]",
                               dataset, COORDINATOR_MAX_NAME);
    }
    if (!cli_output_is_new(spec.command, db, (const char *const[]){path}, 1)) {
        return 1;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fprintf(stderr, "chesslens games import: %s: not a readable file\n", path);
        return 1;
    }
    char err[COMMON_ERR_LEN];
    coordinator_store *s = NULL;
    int64_t id;
    if (coordinator_store_open(&s, db, 0, err) != 0 ||
        coordinator_dataset_create(s, dataset, path, append, &id, err) != 0) {
        fprintf(stderr, "chesslens games import: %s\n", err);
        coordinator_store_close(&s);
        return 1;
    }
    report r = {path, (uint64_t)sb.st_size, true, isatty(STDERR_FILENO) != 0, false};
    coordinator_import_hooks hooks = {on_skipped, on_progress, &r};
    coordinator_import_stats st = {0};
    int rc = coordinator_games_import(s, id, path, format_values[format], (size_t)max_tokens, &st,
                                      &hooks, err);
    summary(&r, &st, dataset);
    coordinator_store_close(&s);
    if (rc != 0) {
        fprintf(stderr, "chesslens games import: %s\n", err);
        return 1;
    }
    return 0;
}

static int cmd_generate(int argc, char **argv) {
    const char *db = NULL, *dataset = NULL;
    uint64_t n = 0, seed = 0;
    long max_tokens = 0;
    bool append = false;
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
         .help = "seed; game i depends only on (S, i), as in chess random"},
        CLI_OPT_MAX_TOKENS(&max_tokens, "at most T tokens per game counting <s> (0 = no limit)"),
        CLI_OPT_DB(&db),
        DATASET_OPT(&dataset),
        APPEND_OPT(&append),
    };
    const cli_spec spec = {.command = "games generate",
                           .synopsis = "--n N --seed S [--max-tokens T] --db DB --dataset NAME "
                                       "[--append]",
                           .about = "Stores N seeded random legal games, the games `chesslens "
                                    "chess random` prints\nwith the same options, as a dataset.",
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (!coordinator_name_valid(dataset)) {
        return cli_usage_error(&spec, "--dataset '%s': use 1..%d characters of [A-Za-z0-9._-]",
                               dataset, COORDINATOR_MAX_NAME);
    }
    char err[COMMON_ERR_LEN], source[96];
    snprintf(source, sizeof source, "random seed=%" PRIu64 " max_tokens=%ld", seed, max_tokens);
    coordinator_store *s = NULL;
    int64_t id;
    if (coordinator_store_open(&s, db, 0, err) != 0 ||
        coordinator_dataset_create(s, dataset, source, append, &id, err) != 0) {
        fprintf(stderr, "chesslens games generate: %s\n", err);
        coordinator_store_close(&s);
        return 1;
    }
    report r = {"generate", n, false, isatty(STDERR_FILENO) != 0, false};
    coordinator_import_hooks hooks = {on_skipped, on_progress, &r};
    coordinator_import_stats st = {0};
    int rc = coordinator_games_generate(s, id, n, seed, (size_t)max_tokens, &st, &hooks, err);
    summary(&r, &st, dataset);
    coordinator_store_close(&s);
    if (rc != 0) {
        fprintf(stderr, "chesslens games generate: %s\n", err);
        return 1;
    }
    return 0;
}

int cli_games(int argc, char **argv) {
    static const cli_subcommand subs[] = {
        {"import", cmd_import, "stream a UCI-lines or PGN file into a dataset"},
        {"generate", cmd_generate, "store seeded random games as a dataset"},
    };
    return cli_dispatch("games", subs, CLI_N_OPTS(subs), argc, argv);
}
