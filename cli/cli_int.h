/*
 * cli: the `chesslens` command. main.c dispatches on the first word to one entry point per
 * command group; each group lives in its own file (cmd_<group>.c) and parses its own flags.
 * An entry point returns the process exit code: 0 success, 1 failure (message on stderr),
 * 2 usage error.
 */
#ifndef CHESSLENS_CLI_INT_H
#define CHESSLENS_CLI_INT_H

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

#endif
