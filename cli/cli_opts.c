/*
 * The option parser every command shares (cli_int.h). A command describes its options as a
 * table; this file reads argv against it and prints the --help generated from it. Being one
 * parser is the point: every command refuses the same mistakes with the same words, naming the
 * flag (an unknown flag, a repeated one, a missing or empty value, " -1" where a count is
 * wanted), instead of each hand-written loop catching a different subset of them.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "common/common.h"

/* Options are few; a table this long would be a command in need of splitting. */
#define MAX_OPTS 32

void cli_usage(const cli_spec *spec, FILE *out) {
    fprintf(out, "usage: chesslens %s %s\n", spec->command, spec->synopsis);
    if (spec->about != NULL) {
        fprintf(out, "\n%s\n", spec->about);
    }
    if (spec->n_opts > 0) {
        fprintf(out, "\noptions:\n");
    }
    for (size_t i = 0; i < spec->n_opts; i++) {
        const cli_opt *o = &spec->opts[i];
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->meta != NULL ? " " : "",
                 o->meta != NULL ? o->meta : "");
        fprintf(out, "  %-22s ", left);
        for (const char *h = o->help; *h != '\0'; h++) {
            fputc(*h, out);
            if (*h == '\n') {
                fprintf(out, "  %-22s ", "");
            }
        }
        if (o->kind == CLI_CHOICE) {
            fprintf(out, " (");
            for (size_t c = 0; o->choices[c] != NULL; c++) {
                fprintf(out, "%s%s", c > 0 ? ", " : "", o->choices[c]);
            }
            fprintf(out, ")");
        }
        if (o->kind == CLI_LONG) {
            fprintf(out, " [%ld, %ld]", o->lo, o->hi);
        }
        fprintf(out, "%s\n", o->required ? " (required)" : "");
    }
}

static int verror(const cli_spec *spec, const char *fmt, va_list ap) {
    fprintf(stderr, "chesslens %s: ", spec->command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(chesslens %s --help describes the options)\n", spec->command);
    return 2;
}

int cli_usage_error(const cli_spec *spec, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int rc = verror(spec, fmt, ap);
    va_end(ap);
    return rc;
}

/* Digits only, after an optional '-' where negative values are allowed: strtol alone would take
 * " -1" or "+5" or "0x10", and strtoull would wrap "-1" to 2^64 - 1. */
static bool is_decimal(const char *text, bool allow_minus) {
    const char *p = text;
    if (allow_minus && *p == '-') {
        p++;
    }
    if (*p == '\0') {
        return false;
    }
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return false;
        }
    }
    return true;
}

/* Stores the value of option o from text; returns 0 or prints the usage error and returns 2. */
static int set_value(const cli_spec *spec, const cli_opt *o, const char *text) {
    if (o->kind == CLI_STRING) {
        if (text[0] == '\0' && !o->allow_empty) {
            return cli_usage_error(spec, "%s needs a non-empty value", o->name);
        }
        *(const char **)o->value = text;
        return 0;
    }
    if (o->kind == CLI_CHOICE) {
        for (int c = 0; o->choices[c] != NULL; c++) {
            if (strcmp(text, o->choices[c]) == 0) {
                *(int *)o->value = c;
                return 0;
            }
        }
        char list[256] = "";
        for (size_t c = 0; o->choices[c] != NULL; c++) {
            size_t n = strlen(list);
            snprintf(list + n, sizeof list - n, "%s%s", c > 0 ? ", " : "", o->choices[c]);
        }
        return cli_usage_error(spec, "%s must be one of %s, not '%s'", o->name, list, text);
    }
    char *end = NULL;
    errno = 0;
    if (o->kind == CLI_LONG) {
        long v = is_decimal(text, o->lo < 0) ? strtol(text, &end, 10) : 0;
        if (end == NULL || *end != '\0' || errno != 0 || v < o->lo || v > o->hi) {
            return cli_usage_error(spec, "%s must be an integer in [%ld, %ld], not '%s'", o->name,
                                   o->lo, o->hi, text);
        }
        *(long *)o->value = v;
        return 0;
    }
    unsigned long long v = is_decimal(text, false) ? strtoull(text, &end, 10) : 0;
    if (end == NULL || *end != '\0' || errno != 0) {
        return cli_usage_error(spec, "%s must be a non-negative integer, not '%s'", o->name, text);
    }
    *(uint64_t *)o->value = (uint64_t)v;
    return 0;
}

int cli_parse(const cli_spec *spec, int argc, char **argv, char **args, size_t *n_args) {
    bool seen[MAX_OPTS] = {false};
    assert(spec->n_opts <= MAX_OPTS);
    *n_args = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            cli_usage(spec, stdout);
            return 0;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] == '\0') {
            if (*n_args == spec->max_args) {
                return cli_usage_error(spec, "unexpected argument '%s'", a);
            }
            args[(*n_args)++] = argv[i];
            continue;
        }
        size_t k = 0;
        while (k < spec->n_opts && strcmp(spec->opts[k].name, a) != 0) {
            k++;
        }
        if (k == spec->n_opts) {
            return cli_usage_error(spec, "unknown option '%s'", a);
        }
        const cli_opt *o = &spec->opts[k];
        if (seen[k]) {
            return cli_usage_error(spec, "%s given twice", o->name);
        }
        seen[k] = true;
        if (o->kind == CLI_FLAG) {
            *(bool *)o->value = true;
            continue;
        }
        if (i + 1 >= argc) {
            return cli_usage_error(spec, "%s needs a value (%s)", o->name, o->meta);
        }
        int rc = set_value(spec, o, argv[++i]);
        if (rc != 0) {
            return rc;
        }
    }
    for (size_t k = 0; k < spec->n_opts; k++) {
        if (spec->opts[k].required && !seen[k]) {
            return cli_usage_error(spec, "%s %s is required", spec->opts[k].name,
                                   spec->opts[k].meta != NULL ? spec->opts[k].meta : "");
        }
    }
    if (*n_args < spec->min_args) {
        return cli_usage_error(spec, "expected %s", spec->synopsis);
    }
    return CLI_CONTINUE;
}

int cli_dispatch(const char *group, const cli_subcommand *subs, size_t n_subs, int argc,
                 char **argv) {
    bool help = argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0);
    if (argc >= 2 && !help) {
        for (size_t i = 0; i < n_subs; i++) {
            if (strcmp(argv[1], subs[i].name) == 0) {
                return subs[i].run(argc - 1, argv + 1);
            }
        }
        fprintf(stderr, "chesslens %s: unknown subcommand '%s'\n", group, argv[1]);
    } else if (!help) {
        fprintf(stderr, "chesslens %s: a subcommand is needed\n", group);
    }
    FILE *out = help ? stdout : stderr;
    fprintf(out, "usage: chesslens %s SUBCOMMAND [OPTIONS]\n\nsubcommands:\n", group);
    for (size_t i = 0; i < n_subs; i++) {
        fprintf(out, "  %-10s %s\n", subs[i].name, subs[i].summary);
    }
    fprintf(out, "\n'chesslens %s SUBCOMMAND --help' describes one.\n", group);
    return help ? 0 : 2;
}

bool cli_output_is_new(const char *cmd, const char *out, const char *const *inputs,
                       size_t n_inputs) {
    for (size_t i = 0; i < n_inputs; i++) {
        if (inputs[i] != NULL && common_same_file(out, inputs[i])) {
            fprintf(stderr, "chesslens %s: refusing to write %s: it is the input %s\n", cmd, out,
                    inputs[i]);
            return false;
        }
    }
    return true;
}

bool cli_output_not_in_model(const char *cmd, const char *out, const char *model_dir) {
    static const char *const names[] = {"config.json", "model.safetensors", "tokenizer.json"};
    char paths[3][4096];
    const char *inputs[4] = {model_dir, paths[0], paths[1], paths[2]};
    for (size_t i = 0; i < 3; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/%s", model_dir, names[i]);
    }
    return cli_output_is_new(cmd, out, inputs, 4);
}

int cli_error_prefix(char *err, int code, const char *prefix) {
    char inner[COMMON_ERR_LEN];
    memcpy(inner, err, COMMON_ERR_LEN);
    inner[COMMON_ERR_LEN - 1] = '\0';
    size_t n = strnlen(prefix, COMMON_ERR_LEN / 2);
    memcpy(err, prefix, n);
    memcpy(err + n, ": ", 2);
    snprintf(err + n + 2, COMMON_ERR_LEN - n - 2, "%.*s", (int)(COMMON_ERR_LEN - n - 3), inner);
    return code;
}

int cli_keep_tokens(long keep, size_t *T, char *err) {
    if (keep > 0 && (size_t)keep > *T) {
        return common_fail(err, COMMON_ERR_INVALID, "--tokens %ld: the game has only %zu tokens",
                           keep, *T);
    }
    if (keep > 0) {
        *T = (size_t)keep;
    }
    return 0;
}
