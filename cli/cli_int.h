/*
 * cli: the `chesslens` command. main.c dispatches on the first word to one entry point per
 * command group; each group lives in its own file (cmd_<group>.c) and parses its own flags.
 * An entry point returns the process exit code: 0 success, 1 failure (message on stderr),
 * 2 usage error.
 */
#ifndef CHESSLENS_CLI_INT_H
#define CHESSLENS_CLI_INT_H

#include <stdint.h>

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
/* `chesslens show FILE.safetensors [--tensor NAME]` (cmd_show.c) */
int cli_show(int argc, char **argv);

/* Parses an integer option value in [lo, hi] into *out; on a bad value prints
 * "chesslens CMD: FLAG must be an integer in [lo, hi]" and returns -1 (cli_util.c). */
int cli_parse_long(const char *cmd, const char *flag, const char *text, long lo, long hi,
                   long *out);
/* Same for a non-negative 64-bit value (seeds, counts). */
int cli_parse_u64(const char *cmd, const char *flag, const char *text, uint64_t *out);

#endif
