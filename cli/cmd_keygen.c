/*
 * `chesslens keygen --out PREFIX`: a CurveZMQ key pair for the sweep service (proto/PROTOCOL.md,
 * "Authentication"; docs/SECURITY.md). PREFIX.key holds the public and the secret key and is
 * created with mode 0600 (never wider, not even for an instant); PREFIX.pub holds the public
 * key, mode 0644, for the coordinator's --clients directory (a worker's or client's key) or as
 * the others' --server-key (the coordinator's). Neither file is ever written over. The format
 * and the checks are coordinator/curve.h's; this file only reads the command line.
 */
#include <stdio.h>

#include "cli/cli_int.h"
#include "coordinator/curve.h"

int cli_keygen(int argc, char **argv) {
    const char *prefix = NULL;
    const cli_opt opts[] = {
        {.name = "--out",
         .kind = CLI_STRING,
         .value = &prefix,
         .meta = "PREFIX",
         .required = true,
         .help = "writes PREFIX.key (secret, 0600) and PREFIX.pub (public, 0644); both must\n"
                 "not exist"},
    };
    const cli_spec spec = {
        .command = "keygen",
        .synopsis = "--out PREFIX",
        .about = "Makes a CurveZMQ key pair for chesslens-coordinator, chesslens-worker or the\n"
                 "client commands (--curve-key PREFIX.key) and prints its public key. Give the\n"
                 "coordinator every worker's and client's PREFIX.pub (--clients DIR), and them\n"
                 "the coordinator's (--server-key).",
        .opts = opts,
        .n_opts = CLI_N_OPTS(opts)};
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    char err[COMMON_ERR_LEN] = "";
    coordinator_curve_key k;
    if (coordinator_curve_keygen(prefix, &k, err) != 0) {
        fprintf(stderr, "chesslens keygen: %s\n", err);
        return 1;
    }
    coordinator_curve_wipe(&k);
    fprintf(stderr, "wrote %s.key (secret: keep it private) and %s.pub (public)\n", prefix, prefix);
    printf("%s\n", k.public_z85);
    return 0;
}
