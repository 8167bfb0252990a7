/*
 * Option-value parsing shared by the command groups: a value that is not what the flag takes
 * is reported on stderr as "chesslens CMD: FLAG ..." so that every command words it alike.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/cli_int.h"

int cli_parse_long(const char *cmd, const char *flag, const char *text, long lo, long hi,
                   long *out) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        fprintf(stderr, "chesslens %s: %s must be an integer in [%ld, %ld], not '%s'\n", cmd, flag,
                lo, hi, text);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_u64(const char *cmd, const char *flag, const char *text, uint64_t *out) {
    char *end;
    errno = 0;
    if (text[0] == '-' || text[0] == '\0') {
        fprintf(stderr, "chesslens %s: %s needs a non-negative integer, not '%s'\n", cmd, flag,
                text);
        return -1;
    }
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0') {
        fprintf(stderr, "chesslens %s: %s needs a non-negative integer, not '%s'\n", cmd, flag,
                text);
        return -1;
    }
    *out = v;
    return 0;
}
