/* Placeholder replaced by the chess command group's implementation. */
#include <stdio.h>

#include "cli/cli_int.h"

int cli_chess(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "chesslens chess: not built yet\n");
    return 1;
}
