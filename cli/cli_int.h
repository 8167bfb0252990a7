/*
 * cli: the `chesslens` command. main.c dispatches on the first word to one entry point per
 * command group; each group lives in its own file (cmd_<group>.c). Every command declares its
 * options in one table (cli_opt) that cli_parse reads and that the generated --help prints, so
 * that all commands treat flags alike: an unknown flag, a flag given twice, a missing or empty
 * value and an integer out of range are usage errors that name the flag. An entry point returns
 * the process exit code: 0 success, 1 failure (message on stderr), 2 usage error.
 */
#ifndef CHESSLENS_CLI_INT_H
#define CHESSLENS_CLI_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* How an option's value is read and where it goes. */
typedef enum cli_opt_kind {
    CLI_FLAG,   /* no value; sets *(bool *)value */
    CLI_STRING, /* sets *(const char **)value to the argument (borrowed from argv) */
    CLI_LONG,   /* *(long *)value, a decimal integer in [lo, hi] */
    CLI_U64,    /* *(uint64_t *)value, a decimal integer in [0, UINT64_MAX] (seeds, counts) */
    CLI_CHOICE, /* *(int *)value = index of the argument in choices (NULL-terminated) */
} cli_opt_kind;

typedef struct cli_opt {
    const char *name; /* "--model" */
    cli_opt_kind kind;
    void *value;
    const char *meta;           /* the value's placeholder in --help ("DIR"); NULL for flags */
    const char *help;           /* what it does; '\n' starts a continuation line */
    long lo, hi;                /* CLI_LONG bounds */
    bool required;              /* refused when absent */
    bool allow_empty;           /* CLI_STRING: "" is a value (else refused) */
    const char *const *choices; /* CLI_CHOICE */
} cli_opt;

/* A command's options and words: "chesslens <command> <synopsis>", an about text, up to
 * max_args positional words (arguments that do not start with '-'), the options (opts[n_opts]).
 * --help / -h print the usage to stdout. */
typedef struct cli_spec {
    const char *command;  /* "patch", "chess perft" */
    const char *synopsis; /* after the command in the usage line */
    const char *about;    /* paragraph(s) printed after the usage line; may be NULL */
    size_t min_args, max_args;
    const cli_opt *opts;
    size_t n_opts;
} cli_spec;

#define CLI_N_OPTS(a) (sizeof(a) / sizeof((a)[0]))

/* Options that several commands share, spelled once so that they read and behave alike. */
#define CLI_OPT_MODEL(ptr)                                                                         \
    {                                                                                              \
        .name = "--model", .kind = CLI_STRING, .value = (ptr), .meta = "DIR", .required = true,    \
        .help = "HuggingFace GPT-2 directory (config.json, model.safetensors, tokenizer.json)"     \
    }
#define CLI_OPT_THREADS(ptr)                                                                       \
    {                                                                                              \
        .name = "--threads", .kind = CLI_LONG, .value = (ptr), .meta = "N", .lo = 0, .hi = 1024,   \
        .help = "CPU threads (0 = all cores)"                                                      \
    }
#define CLI_OPT_DB(ptr)                                                                            \
    {                                                                                              \
        .name = "--db", .kind = CLI_STRING, .value = (ptr), .meta = "DB", .required = true,        \
        .help = "the chesslens database (created when absent)"                                     \
    }
#define CLI_OPT_MAX_TOKENS(ptr, what)                                                              \
    {                                                                                              \
        .name = "--max-tokens", .kind = CLI_LONG, .value = (ptr), .meta = "T", .lo = 0,            \
        .hi = 1L << 20, .help = (what)                                                             \
    }
#define CLI_OPT_TOKENS(ptr, what)                                                                  \
    {                                                                                              \
        .name = "--tokens", .kind = CLI_LONG, .value = (ptr), .meta = "N", .lo = 0,                \
        .hi = 1L << 16, .help = (what)                                                             \
    }
#define CLI_OPT_OUT(ptr, what)                                                                     \
    {                                                                                              \
        .name = "--out", .kind = CLI_STRING, .value = (ptr), .meta = "FILE", .required = true,     \
        .help = (what)                                                                             \
    }

/* cli_parse returns this when the command should go on. */
enum { CLI_CONTINUE = -1 };

/* Parses argv[1..argc-1] by spec. Returns CLI_CONTINUE with the positional words in
 * args[0..*n_args-1] (args holds at least spec->max_args entries; borrowed from argv), or the
 * exit code the command returns at once: 0 after printing --help, 2 after a usage error
 * ("chesslens CMD: --flag given twice") was printed with the usage. */
int cli_parse(const cli_spec *spec, int argc, char **argv, char **args, size_t *n_args);
/* Prints "usage: chesslens CMD SYNOPSIS", the about text and the option table. */
void cli_usage(const cli_spec *spec, FILE *out);
/* Prints "chesslens CMD: MESSAGE" and a pointer to --help on stderr; returns 2 (a usage error),
 * for the checks a table cannot express ("exactly one of --uci / --games"). */
int cli_usage_error(const cli_spec *spec, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Puts "PREFIX: " before the message in err (COMMON_ERR_LEN bytes, truncated to fit), to say
 * where an error arose (which flag, which line of which file); returns code. */
int cli_error_prefix(char *err, int code, const char *prefix);

/* --tokens N: keeps the first keep tokens of a game of *T (`<s>` included; 0 keeps all), so that
 * a prompt may end inside a move. INVALID when the game is shorter than keep. */
int cli_keep_tokens(long keep, size_t *T, char *err);

/* Refuses (message, returns false) an output path that names the same file as one of the
 * inputs (same device and inode), before anything is computed: inputs[n_inputs] are paths,
 * NULL entries are skipped. */
bool cli_output_is_new(const char *cmd, const char *out, const char *const *inputs,
                       size_t n_inputs);
/* The same check against the files of a model directory (config.json, model.safetensors,
 * tokenizer.json). */
bool cli_output_not_in_model(const char *cmd, const char *out, const char *model_dir);

/* A sweep's tasks by state, for the progress line. */
typedef struct cli_progress {
    uint64_t pending, running, done, dead;
    uint64_t rows; /* values stored */
} cli_progress;

/* Draws the progress line on stderr ("\r[####....] 40/127 tasks, 2 running, 0 failed, ...,
 * 12.5 tasks/s, ETA 0:07"); final ends it with a newline. */
void cli_progress_draw(const cli_progress *p, double tasks_per_s, bool final);

/* A command group's subcommands: "chesslens chess perft ..." */
typedef struct cli_subcommand {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand's name */
    const char *summary;
} cli_subcommand;

/* Runs argv[1]'s subcommand of group; --help lists them (exit 0), a missing or unknown one is a
 * usage error naming it (exit 2). */
int cli_dispatch(const char *group, const cli_subcommand *subs, size_t n_subs, int argc,
                 char **argv);

/* `chesslens chess perft|legal|pgn2uci|random ...` (cmd_chess.c) */
int cli_chess(int argc, char **argv);
/* `chesslens model info|random ...` (cmd_model.c) */
int cli_model(int argc, char **argv);
/* `chesslens forward --model DIR --uci MOVES ...` (cmd_forward.c) */
int cli_forward(int argc, char **argv);
/* `chesslens patch --model DIR --uci CLEAN ...` (cmd_patch.c) */
int cli_patch(int argc, char **argv);
/* `chesslens decompose --model DIR (--uci MOVES | --games FILE) ...` (cmd_decompose.c) */
int cli_decompose(int argc, char **argv);
/* `chesslens run SPEC.json [--db FILE] [--workers N] ...` (cmd_run.c) */
int cli_run(int argc, char **argv);
/* `chesslens submit|status|wait|cancel|list|workers|retry-dead ...`: the coordinator's clients
 * (cmd_service.c) */
int cli_submit(int argc, char **argv);
int cli_status(int argc, char **argv);
int cli_wait(int argc, char **argv);
int cli_cancel(int argc, char **argv);
int cli_list(int argc, char **argv);
int cli_workers(int argc, char **argv);
int cli_retry_dead(int argc, char **argv);
/* `chesslens keygen --out PREFIX`: a CurveZMQ key pair (cmd_keygen.c) */
int cli_keygen(int argc, char **argv);
/* `chesslens show FILE.safetensors [--tensor NAME]` (cmd_show.c) */
int cli_show(int argc, char **argv);
/* `chesslens games import|generate ... --db DB --dataset NAME` (cmd_games.c) */
int cli_games(int argc, char **argv);
/* `chesslens query SQL [--db DB] [--format table|csv|json] [--timeout SECONDS]` (cmd_query.c) */
int cli_query(int argc, char **argv);
/* `chesslens export SWEEP --format csv|json [--view V] [--db DB] [--out FILE]` (cmd_query.c) */
int cli_export(int argc, char **argv);

/* `chesslens plot --db DB SWEEP --kind KIND [--game G] [--cutoff N] --out FILE.svg` (cmd_plot.c) */
int cli_plot(int argc, char **argv);
/* `chesslens report --db DB SWEEP --out report.html` (cmd_report.c) */
int cli_report(int argc, char **argv);

/* The figures of a sweep, shared by plot and report (cmd_plot.c; docs/PLOTS.md). A context holds
 * the store opened read-only, the sweep's spec and, once a figure needs a forward pass, the
 * sweep's model (its weights checked against the SHA-256 the store recorded). */
typedef enum cli_plot_kind {
    CLI_PLOT_PATCH,      /* patch_effects: mean effect per component x layer[/head] x position */
    CLI_PLOT_LOGIT_LENS, /* direct logit attribution to the next token, component x position */
    CLI_PLOT_BOARD,      /* next-square log-probs on the board of the position */
    CLI_PLOT_ATTN_DIFF,  /* attention pattern clean - corrupted at the last query, head x source */
    CLI_PLOT_NEURONS,    /* neuron_stats: phase mean - overall mean, top neurons x phase */
    CLI_PLOT_LEGAL,      /* legal_stats: legal - illegal logit gaps, component x position */
    CLI_PLOT_KIND_COUNT
} cli_plot_kind;
/* "patch", "logit-lens", "board", "attn-diff", "neurons", "legal", NULL (for CLI_CHOICE). */
extern const char *const cli_plot_kind_names[CLI_PLOT_KIND_COUNT + 1];

typedef struct cli_plot_args {
    cli_plot_kind kind;
    long analysis;       /* index in the spec; -1: the first analysis of the kind's type */
    long game;           /* -1: all games (patch) or the sweep's first game (forward figures) */
    long cutoff;         /* 0: every cut-off (patch), the whole game, or the largest with pairs */
    long top;            /* neurons per layer; 0: 32 */
    const char *corrupt; /* attn-diff: the pair corrupted with this token; NULL: the first */
} cli_plot_args;

typedef struct cli_plot_ctx cli_plot_ctx;
struct coordinator_store;

/* Opens db read-only and finds the sweep; model_dir (NULL: the recorded path) is where its
 * model is read from. On success *out (cli_plot_ctx_destroy) is set. */
int cli_plot_ctx_new(cli_plot_ctx **out, const char *db, const char *sweep, const char *model_dir,
                     long threads, char *err);
void cli_plot_ctx_destroy(cli_plot_ctx **c);
/* The open store, the sweep's id and its canonical spec text (owned by the context). */
struct coordinator_store *cli_plot_ctx_store(cli_plot_ctx *c);
int64_t cli_plot_ctx_sweep_id(const cli_plot_ctx *c);
const char *cli_plot_ctx_spec(const cli_plot_ctx *c);
/* One figure as SVG text (standalone: with the XML declaration; else for inlining in HTML):
 * *svg (caller frees) and *len. COMMON_ERR_NOT_FOUND, naming what is missing, when the sweep
 * lacks the figure's data (no such analysis, no rows yet, no pair to take a corruption from). */
int cli_plot_figure(cli_plot_ctx *c, const cli_plot_args *a, bool standalone, char **svg,
                    size_t *len, char *err);

#endif
