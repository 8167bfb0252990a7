/*
 * chesslens: command-line entry point. The first argument names a command group; the rest is
 * handed to that group's parser (see cli_int.h).
 */
#include <stdio.h>
#include <string.h>

#include "cli/cli_int.h"

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

static const cli_command commands[] = {
    {"chess", cli_chess, "chess rules: perft, legal next tokens, PGN to UCI, random games"},
    {"model", cli_model, "model files: info, random-weight models of any shape"},
    {"forward", cli_forward, "run a model on a game and save logits and hooks (safetensors)"},
    {"patch", cli_patch, "activation patching of a clean game into a corrupted one"},
    {"decompose", cli_decompose, "residual decomposition, direct logit attribution, legal stats"},
    {"show", cli_show, "list or print the tensors of a safetensors result file"},
    {"run", cli_run, "run a whole sweep in this process, results into the database"},
    {"submit", cli_submit, "submit a sweep to a coordinator; prints its name"},
    {"status", cli_status, "a coordinator's sweeps: tasks by state, dead tasks and their errors"},
    {"wait", cli_wait, "wait for a sweep with a progress bar; exit 0 when it finished cleanly"},
    {"cancel", cli_cancel, "stop handing out a sweep's tasks; workers drop its running ones"},
    {"list", cli_list, "list a coordinator's sweeps"},
    {"workers", cli_workers, "list a coordinator's workers and what each runs"},
    {"retry-dead", cli_retry_dead, "run a sweep's dead tasks again"},
    {"keygen", cli_keygen, "make a CurveZMQ key pair for the service (PREFIX.key, PREFIX.pub)"},
    {"games", cli_games, "datasets of games in a database: import files, generate random games"},
    {"query", cli_query, "run one read-only SQL statement on a database (table, csv, json)"},
    {"export", cli_export, "write one view of a sweep's results as csv or json"},
    {"plot", cli_plot, "draw one figure of a sweep as SVG (heatmaps, the board)"},
    {"report", cli_report, "write a sweep's self-contained HTML report with every figure"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: chesslens COMMAND [ARGS...]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        fprintf(out, "  %-11s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out, "\n'chesslens COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            return commands[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "chesslens: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
