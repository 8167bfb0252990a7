/* Placeholder replaced by the forward command group's implementation. */
#include <stdio.h>

#include "cli/cli_int.h"

int cli_forward(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "chesslens forward: not built yet\n");
    return 1;
}
