/*
 * plot_sweep.h: the database the plot integration tests draw from, made with the built
 * chesslens binary as a user would (games generate, then run).
 */
#include "plot_sweep.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "../cli/cli_run.h"

static const char *const spec_text =
    "{\"name\": \"" PLOT_SWEEP "\", \"model\": \"" CHESSLENS_SOURCE_DIR "/models/chess-tiny\","
    " \"dataset\": \"g\", \"games\": [0, 4],"
    " \"analyses\": ["
    "  {\"kind\": \"patch\", \"patch\": \"block_every\", \"cutoffs\": [20, 26],"
    "   \"corrupt\": {\"position\": \"last\", \"with\": \"each_legal_alternative\"},"
    "   \"metric\": {\"kind\": \"logit_diff\", \"tokens\": [\"clean_top\", \"corrupt_top\"],"
    "   \"normalize\": true}},"
    "  {\"kind\": \"patch\", \"patch\": \"attn_head_out_by_pos\", \"cutoffs\": [20],"
    "   \"corrupt\": {\"position\": -1, \"with\": \"random_legal_alternative\", \"seed\": 3},"
    "   \"metric\": {\"kind\": \"logprob\", \"tokens\": [\"clean_top\"]}},"
    "  {\"kind\": \"patch\", \"patch\": \"resid_pre\", \"cutoffs\": [20],"
    "   \"corrupt\": {\"with\": {\"game\": 5}},"
    "   \"metric\": {\"kind\": \"logit_diff\", \"tokens\": [\"clean_top\", \"corrupt_top\"]}},"
    "  {\"kind\": \"legal_stats\", \"components\": [\"embeds\", \"heads\", \"mlps\", \"attns\"]},"
    "  {\"kind\": \"neuron_stats\", \"by\": \"phase\"},"
    "  {\"kind\": \"predictions\", \"top_k\": 3}]}";

static const char *const bare_text =
    "{\"name\": \"" PLOT_SWEEP_BARE "\", \"model\": \"" CHESSLENS_SOURCE_DIR
    "/models/chess-tiny\", \"dataset\": \"g\", \"games\": [0, 2],"
    " \"analyses\": [{\"kind\": \"predictions\", \"top_k\": 2}]}";

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
}

static void must(const char *script) {
    int status = 0;
    char *out = cli_sh(script, &status);
    if (status != 0) {
        fail_msg("%s: exit %d\n%s", script, status, out != NULL ? out : "");
    }
    free(out);
}

const char *plot_sweep_db(void) {
    static char db[2048];
    if (db[0] != '\0') {
        return db;
    }
    char spec[2048], bare[2048], cmd[8192];
    snprintf(db, sizeof db, "%s/plots.db", cli_tmpdir());
    snprintf(spec, sizeof spec, "%s/plots.json", cli_tmpdir());
    snprintf(bare, sizeof bare, "%s/bare.json", cli_tmpdir());
    write_text(spec, spec_text);
    write_text(bare, bare_text);
    snprintf(cmd, sizeof cmd, "rm -f '%s' '%s-wal' '%s-shm'", db, db, db);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "@ games generate --n 8 --seed 5 --max-tokens 40 --db '%s' --dataset g >/dev/null",
             db);
    must(cmd);
    snprintf(cmd, sizeof cmd, "@ run '%s' --db '%s' --workers 1 --threads 1 --quiet", spec, db);
    must(cmd);
    snprintf(cmd, sizeof cmd, "@ run '%s' --db '%s' --workers 1 --threads 1 --quiet", bare, db);
    must(cmd);
    return db;
}
