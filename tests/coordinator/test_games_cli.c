/*
 * test_games_cli: `chesslens games import|generate` through the built binary. generate stores
 * the games `chesslens chess random` prints with the same options, game for game; import reports
 * each skipped game with its reason and a summary; an existing dataset name is refused unless
 * --append, and a re-run adds nothing; usage errors exit 2.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "cli_run.h"

static void fresh_db(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", cli_tmpdir(), name);
    remove(out);
    char side[600];
    snprintf(side, sizeof side, "%s-wal", out);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", out);
    remove(side);
}

/* The games of a dataset, one UCI line each in index order (caller frees). */
static char *stored_games(const char *db_path, const char *dataset) {
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT uci FROM games WHERE dataset = ? ORDER BY game",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, dataset, -1, SQLITE_STATIC);
    size_t cap = 1 << 20, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    out[0] = '\0';
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *uci = (const char *)sqlite3_column_text(st, 0);
        size_t len = strlen(uci);
        assert_true(n + len + 2 < cap);
        memcpy(out + n, uci, len);
        n += len;
        out[n++] = '\n';
        out[n] = '\0';
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
}

static void test_generate_matches_chess_random(void **state) {
    (void)state;
    char db[512], cmd[1024];
    fresh_db(db, sizeof db, "gen.db");
    int status;
    snprintf(cmd, sizeof cmd,
             "games generate --n 60 --seed 11 --max-tokens 80 --db %s "
             "--dataset r60",
             db);
    char *out = cli_run(cmd, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "60 games read, 60 added to dataset 'r60', 0 already in it, "
                                "0 skipped"));
    free(out);
    char *expect = cli_sh("@ chess random --n 60 --seed 11 --max-tokens 80 2>/dev/null", &status);
    assert_int_equal(status, 0);
    char *got = stored_games(db, "r60");
    assert_string_equal(got, expect);
    free(got);
    free(expect);

    /* the name is taken */
    out = cli_run(cmd, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "dataset 'r60' exists"));
    free(out);
    /* appending the same games adds nothing */
    snprintf(cmd, sizeof cmd,
             "games generate --n 60 --seed 11 --max-tokens 80 --db %s "
             "--dataset r60 --append",
             db);
    out = cli_run(cmd, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "0 added to dataset 'r60', 60 already in it"));
    free(out);
}

static void test_import_reports_skipped(void **state) {
    (void)state;
    char db[512], file[512], cmd[1536];
    fresh_db(db, sizeof db, "import.db");
    snprintf(file, sizeof file, "%s/few.uci", cli_tmpdir());
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("e2e4 e7e5\nd2d4 d7d5 e1e5\nc2c4\n", f);
    assert_int_equal(fclose(f), 0);
    int status;
    snprintf(cmd, sizeof cmd, "games import %s --db %s --dataset few", file, db);
    char *out = cli_run(cmd, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "skipped line 2: move 3 'e1e5'"));
    assert_non_null(strstr(out, "3 games read, 2 added to dataset 'few', 0 already in it, "
                                "1 skipped"));
    assert_null(strstr(out, "\r")); /* no progress line when stderr is not a terminal */
    free(out);
    char *got = stored_games(db, "few");
    assert_string_equal(got, "e2e4 e7e5\nc2c4\n");
    free(got);

    /* PGN by extension, appended */
    char pgn[512];
    snprintf(pgn, sizeof pgn, "%s/few.pgn", cli_tmpdir());
    f = fopen(pgn, "w");
    assert_non_null(f);
    fputs("[Event \"x\"]\n\n1. Nf3 Nf6 *\n\n[Event \"y\"]\n\n1. e4 e5 2. Qxf7 *\n", f);
    assert_int_equal(fclose(f), 0);
    snprintf(cmd, sizeof cmd, "games import %s --db %s --dataset few --append", pgn, db);
    out = cli_run(cmd, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "skipped game 2"));
    assert_non_null(strstr(out, "Qxf7"));
    assert_non_null(strstr(out, "2 games read, 1 added"));
    free(out);
    got = stored_games(db, "few");
    assert_string_equal(got, "e2e4 e7e5\nc2c4\ng1f3 g8f6\n");
    free(got);
}

static void test_usage_errors(void **state) {
    (void)state;
    int status;
    char *out = cli_run("games import x.uci --dataset d", &status);
    assert_int_equal(status, 2);
    assert_non_null(strstr(out, "--db"));
    free(out);
    out = cli_run("games generate --n 3 --seed 1 --db /tmp/x.db --dataset 'a b'", &status);
    assert_int_equal(status, 2);
    assert_non_null(strstr(out, "--dataset 'a b'"));
    free(out);
    out = cli_run("games frobnicate", &status);
    assert_int_equal(status, 2);
    free(out);
    out = cli_run("games --help", &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "import"));
    assert_non_null(strstr(out, "generate"));
    free(out);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "games import %s/missing.uci --db %s/m.db --dataset m", cli_tmpdir(),
             cli_tmpdir());
    out = cli_run(cmd, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "missing.uci"));
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_matches_chess_random),
        cmocka_unit_test(test_import_reports_skipped),
        cmocka_unit_test(test_usage_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
