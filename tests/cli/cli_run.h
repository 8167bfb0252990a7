/*
 * Running the built `chesslens` binary from a test, as a user would from the shell. The binary
 * is the one this build made, or $CHESSLENS_BIN when set (to run a test against another build,
 * e.g. to see a regression test fail on the code before its fix).
 */
#ifndef CHESSLENS_TESTS_CLI_RUN_H
#define CHESSLENS_TESTS_CLI_RUN_H

/* The path of the binary under test. */
const char *cli_bin(void);
/* Runs `sh -c SCRIPT` where every "@" in script is replaced by the binary's path; stdout and
 * stderr are merged into the returned text (caller frees). *status is the exit code (-1 when
 * killed by a signal). */
char *cli_sh(const char *script, int *status);
/* cli_sh("@ ARGS"): one chesslens command line. */
char *cli_run(const char *args, int *status);
/* The test's scratch directory ($CHESSLENS_TEST_TMPDIR). */
const char *cli_tmpdir(void);

#endif
