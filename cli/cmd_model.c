/* Placeholder replaced by the model command group's implementation. */
#include <stdio.h>

#include "cli/cli_int.h"

int cli_model(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "chesslens model: not built yet\n");
    return 1;
}
