/*
 * cli_run.h: the command runner shared by the tests of the chesslens binary.
 */
#include "cli_run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

const char *cli_bin(void) {
    const char *env = getenv("CHESSLENS_BIN");
    return env != NULL && env[0] != '\0' ? env : CHESSLENS_BINARY_DIR "/cli/chesslens";
}

const char *cli_tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

char *cli_sh(const char *script, int *status) {
    const char *bin = cli_bin();
    size_t n_at = 0;
    for (const char *p = script; *p != '\0'; p++) {
        n_at += *p == '@';
    }
    size_t cap_cmd = strlen(script) + n_at * strlen(bin) + 16;
    char *cmd = malloc(cap_cmd);
    if (cmd == NULL) {
        *status = -1;
        return NULL;
    }
    size_t k = 0;
    for (const char *p = script; *p != '\0'; p++) {
        if (*p == '@') {
            memcpy(cmd + k, bin, strlen(bin));
            k += strlen(bin);
        } else {
            cmd[k++] = *p;
        }
    }
    memcpy(cmd + k, " 2>&1", 6);
    FILE *pipe = popen(cmd, "r");
    free(cmd);
    if (pipe == NULL) {
        *status = -1;
        return NULL;
    }
    size_t cap = 1 << 16, n = 0, got;
    char *out = malloc(cap);
    while (out != NULL && (got = fread(out + n, 1, cap - 1 - n, pipe)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *bigger = realloc(out, 2 * cap);
            if (bigger == NULL) {
                break;
            }
            out = bigger;
            cap *= 2;
        }
    }
    if (out != NULL) {
        out[n] = '\0';
    }
    int st = pclose(pipe);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

char *cli_run(const char *args, int *status) {
    size_t n = strlen(args) + 3;
    char *script = malloc(n);
    if (script == NULL) {
        *status = -1;
        return NULL;
    }
    snprintf(script, n, "@ %s", args);
    char *out = cli_sh(script, status);
    free(script);
    return out;
}
