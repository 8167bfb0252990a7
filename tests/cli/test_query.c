/*
 * test_query: `chesslens query` and `chesslens export` through the built binary, on a database
 * made by `chesslens games generate` with a sweep and a few patch results added through SQL.
 * Each format's exact text for a known query, csv quoting of NULL, empty text, commas, quotes
 * and newlines, json read back with jansson, the table's columns measured on the first rows
 * only, the read-only guarantee (every kind of write refused and the file byte for byte the
 * same), one statement only, the time limit, SQL errors, a missing database that stays missing,
 * and exports of a sweep with the documented columns, an unknown sweep and an unknown view.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "cli_run.h"
#include "coordinator/coordinator.h" /* COORDINATOR_SCHEMA_VERSION */
#include "coordinator/wire.h"        /* coordinator_digest_hex */

/* The database every test reads (made once by the group setup). */
static char db[512];

/* The documented columns of patch_effects, in order (docs/STORE.md). */
#define PATCH_EFFECTS_COLUMNS                                                                      \
    "sweep,game,cutoff,corrupt_pos,clean_token,corrupt_token,metric,normalized,kind,component,"    \
    "layer,pos,head,value,src_pos,corrupt_game,dataset,analysis,sweep_id"

static void scratch(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", cli_tmpdir(), name);
}

/* A sweep "s1" over dataset d with one patch pair of two values (one NULL-free, one with a
 * comma in its metric) and a legal_stats partial; a second sweep "s2" without results. */
static const char *const results_sql =
    "INSERT INTO sweep (name, spec, dataset_id, game_from, game_to)"
    "  SELECT 's1', '{}', id, 0, 2 FROM dataset WHERE name = 'd';"
    "INSERT INTO sweep (name, spec, dataset_id, game_from, game_to)"
    "  SELECT 's2', '{}', id, 0, 2 FROM dataset WHERE name = 'd';"
    "INSERT INTO job (sweep_id, idx, kind, params)"
    "  SELECT id, 0, 'patch', '{}' FROM sweep WHERE name = 's1';"
    "INSERT INTO job (sweep_id, idx, kind, params)"
    "  SELECT id, 1, 'legal_stats', '{}' FROM sweep WHERE name = 's1';"
    "INSERT INTO task (job_id, key) SELECT id, 't' || idx FROM job;"
    "INSERT INTO patch_pair (task_id, seq, job_id, game, cutoff, corrupt_pos, clean_token,"
    "  corrupt_token, metric, normalized, kind, labels)"
    "  SELECT t.id, 0, j.id, 1, 5, 3, 'e4', 'd4', 'logit_diff:e4,d5', 1, 'block_every',"
    "         '[\"resid_pre\",\"attn_out\"]'"
    "  FROM task t JOIN job j ON j.id = t.job_id WHERE j.kind = 'patch';"
    "INSERT INTO patch_value (pair_id, idx, component, layer, pos, head, src_pos, value)"
    "  SELECT id, 0, 0, 0, 1, NULL, NULL, 0.25 FROM patch_pair;"
    "INSERT INTO patch_value (pair_id, idx, component, layer, pos, head, src_pos, value)"
    "  SELECT id, 1, 1, 2, 4, NULL, NULL, -1.5 FROM patch_pair;"
    "INSERT INTO legal_partial (task_id, job_id, component, pos, statistic, sum, count, min, max)"
    "  SELECT t.id, j.id, 'embed', 2, 0, 3.0, 2, 1.0, 2.0"
    "  FROM task t JOIN job j ON j.id = t.job_id WHERE j.kind = 'legal_stats';";

static int setup_db(void **state) {
    (void)state;
    scratch(db, sizeof db, "query.db");
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -f '%s' '%s-wal' '%s-shm'", db, db, db);
    if (system(cmd) != 0) {
        return -1;
    }
    snprintf(cmd, sizeof cmd, "games generate --n 20 --seed 1 --db '%s' --dataset d", db);
    int status;
    char *out = cli_run(cmd, &status);
    free(out);
    if (status != 0) {
        return -1;
    }
    sqlite3 *h = NULL;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(h);
        return -1;
    }
    int rc = sqlite3_exec(h, results_sql, NULL, NULL, NULL);
    sqlite3_close(h);
    return rc == SQLITE_OK ? 0 : -1;
}

/* Runs `chesslens query 'SQL' --db DB FLAGS` (sql is quoted for the shell); output and stderr
 * merged (caller frees). */
static char *query(const char *sql, const char *flags, int *status) {
    size_t cap = 4 * strlen(sql) + strlen(db) + strlen(flags) + 64;
    char *script = malloc(cap);
    assert_non_null(script);
    size_t n = (size_t)snprintf(script, cap, "@ query '");
    for (const char *p = sql; *p != '\0'; p++) {
        if (*p == '\'') {
            memcpy(script + n, "'\\''", 4);
            n += 4;
        } else {
            script[n++] = *p;
        }
    }
    snprintf(script + n, cap - n, "' --db '%s' %s", db, flags);
    char *out = cli_sh(script, status);
    free(script);
    assert_non_null(out);
    return out;
}

/* Asserts that the query exits with want_status and prints exactly want. */
static void expect_exact(const char *sql, const char *flags, int want_status, const char *want) {
    int status;
    char *out = query(sql, flags, &status);
    if (status != want_status || strcmp(out, want) != 0) {
        print_error("query %s %s\n  exit %d (want %d), output:\n[%s]\n  want:\n[%s]\n", sql, flags,
                    status, want_status, out, want);
        fail();
    }
    free(out);
}

/* Asserts that the query exits with want_status and that its output contains want. */
static void expect_contains(const char *sql, const char *flags, int want_status, const char *want) {
    int status;
    char *out = query(sql, flags, &status);
    if (status != want_status || strstr(out, want) == NULL) {
        print_error("query %s %s\n  exit %d (want %d), output:\n%s\n  want: %s\n", sql, flags,
                    status, want_status, out, want);
        fail();
    }
    free(out);
}

/* The SHA-256 (hex) of a whole file into out. */
static void file_sha256(const char *path, char out[65]) {
    char *bytes = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN];
    if (common_read_file(path, &bytes, &len, err) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(coordinator_digest_hex(bytes, len, out), 0);
    free(bytes);
}

/* The names in the scratch directory, sorted and joined with '/' into out. */
static void scratch_listing(char *out, size_t cap) {
    struct dirent **names = NULL;
    int n = scandir(cli_tmpdir(), &names, NULL, alphasort);
    assert_true(n >= 0);
    size_t len = 0;
    out[0] = '\0';
    for (int k = 0; k < n; k++) {
        int w = snprintf(out + len, cap - len, "%s/", names[k]->d_name);
        assert_true(w >= 0 && (size_t)w < cap - len);
        len += (size_t)w;
        free(names[k]);
    }
    free(names);
}

/* One integer that a query on a separate read-only connection answers. */
static long long scalar(const char *sql) {
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_table(void **state) {
    (void)state;
    expect_exact("SELECT 1 AS n, 'a b' AS txt, NULL AS nul, 2.5 AS r "
                 "UNION ALL SELECT 22, 'c', 'x', 1e20 "
                 "UNION ALL SELECT -3, 'tab' || char(9) || 'nl' || char(10), '', 2.0",
                 "", 0,
                 "n   txt        nul   r\n"
                 "--  ---------  ----  -----\n"
                 "1   a b        NULL  2.5\n"
                 "22  c          x     1e+20\n"
                 "-3  tab\\tnl\\n        2.0\n");
    /* the default format is the table, with a header and a rule even for no rows */
    expect_exact("SELECT 1 AS a, 2 AS bb WHERE 0", "", 0, "a  bb\n-  --\n");
    /* a REAL prints with 9 significant digits */
    expect_exact("SELECT 1.0 / 3 AS x", "--format table", 0, "x\n-----------\n0.333333333\n");
}

static void test_table_from_the_store(void **state) {
    (void)state;
    char want[1024];
    int n = snprintf(want, sizeof want, "dataset  game  n_tokens\n-------  ----  --------\n");
    for (int g = 0; g < 3; g++) {
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT n_tokens FROM games WHERE dataset = 'd' AND game = %d",
                 g);
        n += snprintf(want + n, sizeof want - (size_t)n, "d        %-4d  %lld\n", g, scalar(sql));
    }
    expect_exact("SELECT dataset, game, n_tokens FROM games WHERE game < 3 ORDER BY game", "", 0,
                 want);
}

/* Widths are measured on the first 1000 rows; a wider cell after them widens only its line. */
static void test_table_streams_after_the_sample(void **state) {
    (void)state;
    int status;
    char *out = query("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < "
                      "1500) SELECT CASE WHEN i > 1000 THEN 'wider-than-sample' ELSE 'v' END AS a,"
                      " i AS b FROM r",
                      "", &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "a  b\n-  ----\nv  1\nv  2\n"));
    assert_non_null(strstr(out, "\nv  1000\nwider-than-sample  1001\n"));
    size_t lines = 0;
    for (const char *p = out; *p != '\0'; p++) {
        lines += *p == '\n';
    }
    assert_int_equal(lines, 1502);
    free(out);
}

static void test_csv(void **state) {
    (void)state;
    expect_exact("SELECT 1 AS \"a,b\", NULL AS nul, '' AS empty, 'say \"hi\", bye' AS q, "
                 "'two' || char(10) || 'lines' AS nl, 2.0 AS r, 0.1 AS tenth, x'00ff' AS blob, "
                 "'plain' AS p",
                 "--format csv", 0,
                 "\"a,b\",nul,empty,q,nl,r,tenth,blob,p\r\n"
                 "1,,\"\",\"say \"\"hi\"\", bye\",\"two\nlines\",2.0,0.1,X'00FF',plain\r\n");
    /* csv's REAL is the shortest text that reads back as the same double */
    expect_exact("SELECT 0.1 + 0.2 AS x, 1.0 / 3 AS y", "--format csv", 0,
                 "x,y\r\n0.30000000000000004,0.3333333333333333\r\n");
    expect_exact("SELECT 1 AS a WHERE 0", "--format csv", 0, "a\r\n");
}

static void test_json(void **state) {
    (void)state;
    int status;
    char *out = query("SELECT 1 AS i, 9007199254740993 AS big, 0.1 + 0.2 AS r, 3.0 AS whole, "
                      "NULL AS nul, 'q\"uote\\back' || char(10) || char(1) || 'é♞' AS t, "
                      "x'00ff' AS b, CAST(x'ff41' AS TEXT) AS bad "
                      "UNION ALL SELECT 2, 0, -1.5e-300, 1e300, 'x', '', x'', ''",
                      "--format json", &status);
    assert_int_equal(status, 0);
    json_error_t jerr;
    json_t *doc = json_loads(out, 0, &jerr);
    if (doc == NULL) {
        print_error("%s\n  line %d: %s\n", out, jerr.line, jerr.text);
        fail();
    }
    assert_true(json_is_array(doc));
    assert_int_equal(json_array_size(doc), 2);
    json_t *row = json_array_get(doc, 0);
    assert_true(json_is_object(row));
    assert_int_equal(json_object_size(row), 8);
    assert_true(json_is_integer(json_object_get(row, "i")));
    assert_int_equal(json_integer_value(json_object_get(row, "i")), 1);
    assert_true(json_integer_value(json_object_get(row, "big")) == 9007199254740993LL);
    assert_true(json_is_real(json_object_get(row, "r")));
    assert_true(json_real_value(json_object_get(row, "r")) == 0.1 + 0.2);
    assert_true(json_is_real(json_object_get(row, "whole")));
    assert_true(json_real_value(json_object_get(row, "whole")) == 3.0);
    assert_true(json_is_null(json_object_get(row, "nul")));
    assert_string_equal(json_string_value(json_object_get(row, "t")), "q\"uote\\back\n\001é♞");
    assert_string_equal(json_string_value(json_object_get(row, "b")), "X'00FF'");
    /* text that is not UTF-8 is still JSON: the bad byte becomes U+FFFD */
    assert_string_equal(json_string_value(json_object_get(row, "bad")), "\xEF\xBF\xBD"
                                                                        "A");
    row = json_array_get(doc, 1);
    assert_true(json_real_value(json_object_get(row, "r")) == -1.5e-300);
    assert_true(json_real_value(json_object_get(row, "whole")) == 1e300);
    assert_string_equal(json_string_value(json_object_get(row, "nul")), "x");
    json_decref(doc);
    free(out);
    expect_exact("SELECT 1 AS a WHERE 0", "--format json", 0, "[]\n");
}

static void test_read_only(void **state) {
    (void)state;
    static const char *const writes[] = {
        "INSERT INTO dataset (name) VALUES ('x')",
        "UPDATE game SET n_tokens = 0",
        "DELETE FROM game",
        "DELETE FROM sweep WHERE name = 's1'",
        "CREATE TABLE t (a)",
        "CREATE TEMP TABLE t (a)",
        "CREATE INDEX i ON game (uci)",
        "DROP VIEW games",
        "PRAGMA user_version = 7",
        "PRAGMA query_only = OFF",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA main.writable_schema = ON",
        "VACUUM",
        "REINDEX",
        "BEGIN IMMEDIATE",
    };
    char before[65], after[65], listing[8192], listing_after[8192];
    char other[600], sql[700];
    scratch(other, sizeof other, "attached.db");
    remove(other);
    file_sha256(db, before);
    scratch_listing(listing, sizeof listing);
    long long games = scalar("SELECT COUNT(*) FROM game");
    assert_int_equal(games, 20);
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        expect_contains(writes[i], "", 1, "refused");
    }
    /* ATTACH would open (and create) another file, or the database a second time; VACUUM
     * INTO would write one; an extension would run code */
    snprintf(sql, sizeof sql, "ATTACH '%s' AS other", other);
    expect_contains(sql, "", 1, "ATTACH is refused");
    snprintf(sql, sizeof sql, "ATTACH '%s' AS again", db);
    expect_contains(sql, "", 1, "ATTACH is refused");
    snprintf(sql, sizeof sql, "VACUUM INTO '%s'", other);
    expect_contains(sql, "", 1, "refused");
    expect_contains("SELECT load_extension('libm.so.6')", "", 1,
                    "load_extension is refused: query loads no extensions");
    expect_contains("SELECT 1; DELETE FROM game", "", 1, "exactly one statement");
    /* values and expressions too large to be an honest read */
    expect_contains("SELECT zeroblob(1000000000)", "", 1,
                    "a string or blob longer than 256 MiB, the most a value may hold");
    expect_contains("SELECT length(zeroblob(1000000000))", "", 1, "longer than 256 MiB");
    char *deep = malloc(40000);
    assert_non_null(deep);
    int n = snprintf(deep, 40000, "SELECT ");
    for (int k = 0; k < 3000; k++) {
        deep[n++] = '(';
    }
    deep[n++] = '1';
    for (int k = 0; k < 3000; k++) {
        deep[n++] = ')';
    }
    deep[n] = '\0';
    expect_contains(deep, "", 1, "parser stack overflow");
    n = snprintf(deep, 40000, "SELECT 1");
    for (int k = 0; k < 5000; k++) {
        n += snprintf(deep + n, (size_t)(40000 - n), "+1");
    }
    expect_contains(deep, "", 1, "Expression tree is too large");
    free(deep);
    /* nothing of it reached the disk: the same bytes, no file made or left */
    file_sha256(db, after);
    assert_string_equal(after, before);
    scratch_listing(listing_after, sizeof listing_after);
    assert_string_equal(listing_after, listing);
    assert_int_equal(scalar("SELECT COUNT(*) FROM game"), games);
    assert_int_equal(scalar("PRAGMA user_version"), COORDINATOR_SCHEMA_VERSION);
    /* reading pragmas and pragmas that name what to read still work */
    char version[64];
    snprintf(version, sizeof version, "user_version\r\n%d\r\n", COORDINATOR_SCHEMA_VERSION);
    expect_exact("PRAGMA user_version", "--format csv", 0, version);
    expect_contains("PRAGMA table_info(sweep)", "--format csv", 0, "1,name,TEXT,1,,0\r\n");
}

static void test_one_statement(void **state) {
    (void)state;
    expect_contains("SELECT 1; SELECT 2", "", 1, "exactly one statement");
    expect_contains("SELECT 1; DELETE FROM game", "", 1, "exactly one statement");
    assert_int_equal(scalar("SELECT COUNT(*) FROM game"), 20);
    /* a trailing semicolon, blanks and comments are no second statement */
    expect_exact("SELECT 7 AS x; ; -- done\n", "--format csv", 0, "x\r\n7\r\n");
    expect_contains("", "", 2, "holds no statement");
}

/* A query that would run (nearly) forever is interrupted at its time limit: an endless
 * recursive CTE and a cross join of 20^11 rows. The wall time of the process is the limit plus
 * what a trivial query costs (start, open, exit), measured alongside, plus 100 ms, and a
 * further 400 ms of slack for a loaded machine. */
static void test_time_limit(void **state) {
    (void)state;
    double t0 = now_s();
    expect_exact("SELECT 1 AS x", "--format csv --timeout 1", 0, "x\r\n1\r\n");
    double base = now_s() - t0;
    static const char *const endless[] = {
        "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r) SELECT COUNT(*) FROM r",
        "SELECT COUNT(*) FROM game a, game b, game c, game d, game e, game f, game g, game h, "
        "game i, game j, game k",
    };
    for (size_t i = 0; i < sizeof endless / sizeof endless[0]; i++) {
        t0 = now_s();
        expect_contains(endless[i], "--timeout 1", 1, "time limit of 1 s");
        double dt = now_s() - t0;
        if (dt < 0.9 || dt > 1.0 + base + 0.1 + 0.4) {
            fail_msg("%s: interrupted after %.3f s (limit 1 s, a trivial query takes %.3f s)",
                     endless[i], dt, base);
        }
    }
    expect_contains("SELECT 1", "--timeout -1", 2, "--timeout must be an integer");
}

/* A statement that needs more memory than --memory-mb is stopped with the reason, and one
 * that fits runs under the same limit. */
static void test_memory_limit(void **state) {
    (void)state;
    const char *big = "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r "
                      "LIMIT 1500000) SELECT length(group_concat(i)) FROM r";
    expect_contains(big, "--memory-mb 8", 1, "memory limit of 8 MB (--memory-mb)");
    expect_contains(big, "--memory-mb 256 --format csv", 0, "\r\n10888895\r\n");
    expect_contains("SELECT 1", "--memory-mb 0", 2, "--memory-mb must be an integer");
}

static void test_sql_errors(void **state) {
    (void)state;
    expect_contains("SELEC 1", "", 1, "near \"SELEC\": syntax error");
    expect_contains("SELECT * FROM no_such_view", "", 1, "no such table: no_such_view");
    expect_contains("SELECT 1", "--format xml", 2, "--format must be one of table, csv, json");
    expect_contains("SELECT 1", "--help", 0, "usage: chesslens query SQL");
}

static void test_missing_database(void **state) {
    (void)state;
    char path[600], cmd[1400];
    scratch(path, sizeof path, "absent.db");
    remove(path);
    snprintf(cmd, sizeof cmd, "query 'SELECT 1' --db '%s'", path);
    int status;
    char *out = cli_run(cmd, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, path));
    assert_non_null(strstr(out, "no such database file"));
    free(out);
    snprintf(cmd, sizeof cmd, "export s1 --format csv --db '%s'", path);
    out = cli_run(cmd, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, path));
    free(out);
    assert_int_equal(access(path, F_OK), -1);
    /* without --db the file is ./chesslens.db */
    snprintf(cmd, sizeof cmd,
             "{ cd '%s' && rm -f chesslens.db && @ query 'SELECT 1'; echo rc=$?; }", cli_tmpdir());
    out = cli_sh(cmd, &status);
    assert_non_null(strstr(out, "chesslens.db: no such database file"));
    assert_non_null(strstr(out, "rc=1"));
    free(out);
}

static void test_export(void **state) {
    (void)state;
    char cmd[2048];
    int status;
    snprintf(cmd, sizeof cmd, "export s1 --format csv --db '%s'", db);
    char *out = cli_run(cmd, &status);
    assert_int_equal(status, 0);
    assert_string_equal(out, PATCH_EFFECTS_COLUMNS
                        "\r\n"
                        "s1,1,5,3,e4,d4,\"logit_diff:e4,d5\",1,block_every,resid_pre,0,1,,"
                        "0.25,,,d,0,1\r\n"
                        "s1,1,5,3,e4,d4,\"logit_diff:e4,d5\",1,block_every,attn_out,2,4,,"
                        "-1.5,,,d,0,1\r\n");
    free(out);

    char path[600];
    scratch(path, sizeof path, "export.json");
    remove(path);
    snprintf(cmd, sizeof cmd, "export s1 --format json --db '%s' --out '%s'", db, path);
    out = cli_run(cmd, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "wrote 2 rows"));
    free(out);
    json_error_t jerr;
    json_t *doc = json_load_file(path, 0, &jerr);
    assert_non_null(doc);
    assert_int_equal(json_array_size(doc), 2);
    json_t *row = json_array_get(doc, 1);
    /* the documented columns, in order (jansson keeps insertion order) */
    char keys[512] = "";
    const char *key;
    json_t *value;
    json_object_foreach(row, key, value) {
        size_t n = strlen(keys);
        snprintf(keys + n, sizeof keys - n, "%s%s", n > 0 ? "," : "", key);
    }
    assert_string_equal(keys, PATCH_EFFECTS_COLUMNS);
    assert_string_equal(json_string_value(json_object_get(row, "component")), "attn_out");
    assert_true(json_real_value(json_object_get(row, "value")) == -1.5);
    assert_true(json_is_null(json_object_get(row, "head")));
    assert_int_equal(json_integer_value(json_object_get(row, "layer")), 2);
    json_decref(doc);

    /* another view of the same sweep; a sweep without results exports a header only */
    snprintf(cmd, sizeof cmd, "export s1 --view legal_stats --format csv --db '%s'", db);
    out = cli_run(cmd, &status);
    assert_int_equal(status, 0);
    assert_string_equal(out, "sweep,component,pos,statistic,value,count,min,max,analysis,"
                             "sweep_id\r\ns1,embed,2,min_legal,1.5,2,1.0,2.0,1,1\r\n");
    free(out);
    snprintf(cmd, sizeof cmd, "export s2 --format json --db '%s'", db);
    out = cli_run(cmd, &status);
    assert_int_equal(status, 0);
    assert_string_equal(out, "[]\n");
    free(out);
}

static void test_export_refusals(void **state) {
    (void)state;
    char cmd[2048], path[600];
    int status;
    scratch(path, sizeof path, "refused.csv");
    remove(path);
    snprintf(cmd, sizeof cmd, "export no-such-sweep --format csv --db '%s' --out '%s'", db, path);
    char *out = cli_run(cmd, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "no sweep 'no-such-sweep'"));
    free(out);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(cmd, sizeof cmd, "export s1 --view games --format csv --db '%s'", db);
    out = cli_run(cmd, &status);
    assert_int_equal(status, 2);
    assert_non_null(
        strstr(out, "--view must be one of patch_effects, legal_stats, neuron_stats, predictions"));
    free(out);
    snprintf(cmd, sizeof cmd, "export s1 --db '%s'", db);
    out = cli_run(cmd, &status);
    assert_int_equal(status, 2);
    assert_non_null(strstr(out, "--format F is required"));
    free(out);
    snprintf(cmd, sizeof cmd, "export --help");
    out = cli_run(cmd, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "usage: chesslens export SWEEP"));
    free(out);
    /* the output may not be the database itself */
    char before[65], after[65];
    file_sha256(db, before);
    snprintf(cmd, sizeof cmd, "export s1 --format csv --db '%s' --out '%s'", db, db);
    out = cli_run(cmd, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "it is the input"));
    free(out);
    file_sha256(db, after);
    assert_string_equal(after, before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_table_from_the_store),
        cmocka_unit_test(test_table_streams_after_the_sample),
        cmocka_unit_test(test_csv),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_read_only),
        cmocka_unit_test(test_one_statement),
        cmocka_unit_test(test_time_limit),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_sql_errors),
        cmocka_unit_test(test_missing_database),
        cmocka_unit_test(test_export),
        cmocka_unit_test(test_export_refusals),
    };
    return cmocka_run_group_tests(tests, setup_db, NULL);
}
