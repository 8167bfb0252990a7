/*
 * test_coord_store: the SQLite store. Schema creation and its pragmas (WAL, foreign keys),
 * migration of a version-1 database, refusal of a newer one, the read-only mode, models with
 * the SHA-256 of their weights, games that must fit an aggregate's context, idempotent submissions,
 * the task state machine with fencing, results stored once, per-task partials whose merge in the
 * views does not depend on the split, and the documented view columns.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "coordinator/coordinator.h"
#include "coordinator/store_int.h"

static char err[COMMON_ERR_LEN];

static const char *tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

/* A fresh database path in the scratch directory. */
static void db_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", tmpdir(), name);
    remove(out);
    char side[600];
    snprintf(side, sizeof side, "%s-wal", out);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", out);
    remove(side);
}

static coordinator_store *open_fresh(const char *name) {
    char path[512];
    db_path(path, sizeof path, name);
    coordinator_store *s = NULL;
    if (coordinator_store_open(&s, path, 0, err) != 0) {
        fail_msg("open %s: %s", path, err);
    }
    return s;
}

static int64_t query_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("prepare %s: %s", sql, sqlite3_errmsg(db));
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static char *query_text(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("prepare %s: %s", sql, sqlite3_errmsg(db));
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    const char *t = (const char *)sqlite3_column_text(st, 0);
    char *out = strdup(t != NULL ? t : "(null)");
    sqlite3_finalize(st);
    return out;
}

/* Whether the query plan of sql names index. */
static bool plan_uses(sqlite3 *db, const char *sql, const char *index) {
    char eqp[1024];
    snprintf(eqp, sizeof eqp, "EXPLAIN QUERY PLAN %s", sql);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, eqp, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("prepare %s: %s", eqp, sqlite3_errmsg(db));
    }
    bool found = false;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *detail = (const char *)sqlite3_column_text(st, 3);
        found = found || (detail != NULL && strstr(detail, index) != NULL);
    }
    sqlite3_finalize(st);
    return found;
}

/* A dataset "d" with n short games and a sweep of the given analyses over all of them. */
static int64_t make_sweep(coordinator_store *s, const char *name, const char *analyses,
                          size_t n_games) {
    int64_t ds;
    if (coordinator_dataset_find(s, "d", &ds, NULL, err) != 0) {
        assert_int_equal(coordinator_dataset_create(s, "d", "test", false, &ds, err), 0);
        static const char *const games[] = {"e2e4 e7e5", "d2d4 d7d5", "g1f3 g8f6", "c2c4 c7c5",
                                            "e2e4 c7c5", "d2d4 g8f6", "b1c3 b8c6", "f2f4 f7f5",
                                            "a2a3 a7a6", "h2h3 h7h6"};
        coordinator_game_in in[10];
        for (size_t i = 0; i < 10; i++) {
            in[i] = (coordinator_game_in){games[i], NULL, (int64_t)i};
        }
        coordinator_import_stats st = {0};
        assert_int_equal(coordinator_games_add(s, ds, "test", in, 10, 0, &st, NULL, err), 0);
    }
    char json[2048];
    snprintf(json, sizeof json,
             "{\"name\":\"%s\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,%zu],"
             "\"analyses\":[%s]}",
             name, n_games, analyses);
    int64_t id = 0;
    if (coordinator_sweep_submit(s, json, strlen(json), name, 0, &id, NULL, err) != 0) {
        fail_msg("submit: %s", err);
    }
    return id;
}

static void test_schema_and_pragmas(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("schema.db");
    sqlite3 *db = coordinator_store_db(s);
    assert_int_equal(query_int(db, "PRAGMA user_version"), COORDINATOR_SCHEMA_VERSION);
    char *mode = query_text(db, "PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    free(mode);
    assert_int_equal(query_int(db, "PRAGMA foreign_keys"), 1);
    assert_true(query_int(db, "PRAGMA busy_timeout") > 0);
    static const char *const tables[] = {
        "model",         "dataset",        "game",      "position",   "sweep",
        "job",           "task",           "worker",    "patch_pair", "patch_value",
        "legal_partial", "neuron_partial", "prediction"};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char sql[128];
        snprintf(sql, sizeof sql,
                 "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'table' AND name = '%s'",
                 tables[i]);
        assert_int_equal(query_int(db, sql), 1);
    }
    /* foreign keys are enforced: a game of a dataset that does not exist is refused */
    assert_int_not_equal(sqlite3_exec(db,
                                      "INSERT INTO game (dataset_id, idx, uci, uci_hash, n_tokens) "
                                      "VALUES (99, 0, 'e2e4', 0, 3)",
                                      NULL, NULL, NULL),
                         SQLITE_OK);
    char *ok = query_text(db, "PRAGMA integrity_check");
    assert_string_equal(ok, "ok");
    free(ok);
    coordinator_store_close(&s);
    assert_null(s);
    coordinator_store_close(&s);
}

/* A version-3 database with a sweep's tasks and results is migrated to the rebuilt task table
 * (step 4): every task keeps every column, the rows that refer to tasks stay and still refer to
 * them, and the state CHECK still refuses what it refused, now without an IN list. */
static void test_migration_from_v3_keeps_tasks(void **state) {
    (void)state;
    char path[512];
    db_path(path, sizeof path, "v3.db");
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(store_migrate(raw, 3, err), 0);
    assert_int_equal(sqlite3_exec(raw,
                                  "INSERT INTO dataset (id, name, source) VALUES (1, 'd', 'x');"
                                  "INSERT INTO sweep (id, name, spec, dataset_id, game_from, "
                                  "game_to) VALUES (1, 's', '{}', 1, 0, 2);"
                                  "INSERT INTO job (id, sweep_id, idx, kind, params) "
                                  "VALUES (1, 1, 0, 'patch', '{}');"
                                  "INSERT INTO task (id, job_id, key, body, state, attempts, "
                                  "lease_epoch, lease_deadline_ns, worker, last_error, "
                                  "not_before_ns, done_at, n_rows) VALUES "
                                  "(7, 1, 'k7', x'0102', 'done', 2, 3, NULL, 'w1', 'e', 5, 99, 4),"
                                  "(9, 1, 'k9', NULL, 'leased', 1, 1, 1234, 'w2', NULL, 0, NULL, "
                                  "0);"
                                  "INSERT INTO patch_pair (id, task_id, seq, job_id, game, cutoff, "
                                  "metric, normalized, kind) VALUES "
                                  "(1, 7, 0, 1, 0, 5, 'logit', 0, 'resid_pre');",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(raw);

    coordinator_store *s = NULL;
    assert_int_equal(coordinator_store_open(&s, path, 0, err), 0);
    sqlite3 *db = coordinator_store_db(s);
    assert_int_equal(query_int(db, "PRAGMA user_version"), COORDINATOR_SCHEMA_VERSION);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM task WHERE id = 7 AND job_id = 1 AND "
                                   "key = 'k7' AND body = x'0102' AND state = 'done' AND "
                                   "attempts = 2 AND lease_epoch = 3 AND lease_deadline_ns IS "
                                   "NULL AND worker = 'w1' AND last_error = 'e' AND "
                                   "not_before_ns = 5 AND done_at = 99 AND n_rows = 4"),
                     1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM task WHERE id = 9 AND body IS NULL AND "
                                   "state = 'leased' AND lease_deadline_ns = 1234"),
                     1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM patch_pair WHERE task_id = 7"), 1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM pragma_foreign_key_check"), 0);
    /* the indexes came back (step 4), then the state index became partial ones (step 5): the
     * pending tasks in id order (what the claim walks), the dead ones, the leases' deadlines */
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND "
                                   "name IN ('task_pending', 'task_dead', 'task_by_deadline') AND "
                                   "tbl_name = 'task'"),
                     3);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_schema WHERE type = 'index' AND "
                                   "name = 'task_by_state'"),
                     0);
    assert_true(plan_uses(db,
                          "SELECT t.id FROM task t JOIN job j ON j.id = t.job_id "
                          "JOIN sweep w ON w.id = j.sweep_id WHERE t.state = 'pending' AND "
                          "t.not_before_ns <= 0 AND w.state = 'active' ORDER BY t.id LIMIT 8",
                          "task_pending"));
    char *sql = query_text(db, "SELECT sql FROM sqlite_schema WHERE name = 'task'");
    assert_non_null(sql);
    assert_null(strstr(sql, " IN ("));
    free(sql);
    assert_int_not_equal(
        sqlite3_exec(db, "UPDATE task SET state = 'bogus' WHERE id = 9", NULL, NULL, NULL),
        SQLITE_OK);
    /* foreign keys are on again after the migration: a task of no job is refused, and deleting
     * a task still deletes its result rows */
    assert_int_not_equal(
        sqlite3_exec(db, "INSERT INTO task (job_id, key) VALUES (42, 'x')", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DELETE FROM task WHERE id = 7", NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM patch_pair"), 0);
    coordinator_store_close(&s);
}

/* A database made by the first schema version, with a dataset in it, is migrated on open and
 * keeps its rows. */
static void test_migration_from_v1(void **state) {
    (void)state;
    char path[512];
    db_path(path, sizeof path, "v1.db");
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(store_migrate(raw, 1, err), 0);
    assert_int_equal(query_int(raw, "PRAGMA user_version"), 1);
    assert_int_equal(query_int(raw, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'task'"), 0);
    assert_int_equal(sqlite3_exec(raw,
                                  "INSERT INTO dataset (id, name, source) VALUES (1, 'old', 'x');"
                                  "INSERT INTO game (dataset_id, idx, uci, uci_hash, n_tokens) "
                                  "VALUES (1, 0, 'e2e4', 0, 3);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(raw);

    coordinator_store *s = NULL;
    assert_int_equal(coordinator_store_open(&s, path, 0, err), 0);
    sqlite3 *db = coordinator_store_db(s);
    assert_int_equal(query_int(db, "PRAGMA user_version"), COORDINATOR_SCHEMA_VERSION);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'task'"), 1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM games WHERE dataset = 'old'"), 1);
    int64_t id;
    uint64_t n;
    assert_int_equal(coordinator_dataset_find(s, "old", &id, &n, err), 0);
    assert_int_equal(id, 1);
    assert_int_equal(n, 1);
    coordinator_store_close(&s);
    /* opening again changes nothing */
    assert_int_equal(coordinator_store_open(&s, path, 0, err), 0);
    assert_int_equal(query_int(coordinator_store_db(s), "PRAGMA user_version"),
                     COORDINATOR_SCHEMA_VERSION);
    coordinator_store_close(&s);
}

static void test_refuses_newer(void **state) {
    (void)state;
    char path[512];
    db_path(path, sizeof path, "newer.db");
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA user_version = %d", COORDINATOR_SCHEMA_VERSION + 1);
    assert_int_equal(sqlite3_exec(raw, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(raw);
    coordinator_store *s = NULL;
    assert_int_equal(coordinator_store_open(&s, path, 0, err), COMMON_ERR_UNSUPPORTED);
    assert_non_null(strstr(err, "newer than this chesslens"));
    assert_null(s);
    assert_int_equal(coordinator_store_open_readonly(&s, path, 0, err), COMMON_ERR_UNSUPPORTED);
    /* left untouched: no table was created, the version is the same */
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(query_int(raw, "PRAGMA user_version"), COORDINATOR_SCHEMA_VERSION + 1);
    assert_int_equal(query_int(raw, "SELECT COUNT(*) FROM sqlite_schema"), 0);
    sqlite3_close(raw);
}

static void test_readonly(void **state) {
    (void)state;
    char path[512];
    db_path(path, sizeof path, "ro.db");
    coordinator_store *s = NULL;
    assert_int_equal(coordinator_store_open_readonly(&s, path, 0, err), COMMON_ERR_IO);
    assert_int_equal(coordinator_store_open(&s, path, 0, err), 0);
    int64_t ds;
    assert_int_equal(coordinator_dataset_create(s, "d", "x", false, &ds, err), 0);
    coordinator_store_close(&s);
    assert_int_equal(coordinator_store_open_readonly(&s, path, 0, err), 0);
    sqlite3 *db = coordinator_store_db(s);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM dataset"), 1);
    assert_int_equal(query_int(db, "PRAGMA query_only"), 1);
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM dataset", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(coordinator_dataset_create(s, "e", "x", false, &ds, err) != 0, 1);
    coordinator_store_close(&s);
    /* an older schema cannot be read without migrating */
    db_path(path, sizeof path, "ro-old.db");
    sqlite3 *raw = NULL;
    assert_int_equal(sqlite3_open(path, &raw), SQLITE_OK);
    assert_int_equal(store_migrate(raw, 1, err), 0);
    sqlite3_close(raw);
    assert_int_equal(coordinator_store_open_readonly(&s, path, 0, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "older"));
}

static void test_sha256(void **state) {
    (void)state;
    static const struct {
        const char *text;
        const char *hex;
    } vectors[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof vectors / sizeof vectors[0]; i++) {
        sha256_ctx c;
        char hex[65];
        sha256_init(&c);
        /* fed in pieces of 1 byte to cross block boundaries in every way */
        for (const char *p = vectors[i].text; *p != '\0'; p++) {
            sha256_update(&c, p, 1);
        }
        sha256_final_hex(&c, hex);
        assert_string_equal(hex, vectors[i].hex);
    }
    /* one million 'a' (FIPS 180-2 appendix B.3) */
    sha256_ctx c;
    char hex[65], block[1000];
    memset(block, 'a', sizeof block);
    sha256_init(&c);
    for (int i = 0; i < 1000; i++) {
        sha256_update(&c, block, sizeof block);
    }
    sha256_final_hex(&c, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_model_record(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("model.db");
    int64_t id = 0, again = 0;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/random-tiny", CHESSLENS_SOURCE_DIR);
    if (coordinator_model_record(s, dir, &id, err) != 0) {
        fail_msg("record: %s", err);
    }
    assert_int_equal(coordinator_model_record(s, dir, &again, err), 0);
    assert_int_equal(id, again);
    sqlite3 *db = coordinator_store_db(s);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM model"), 1);
    /* the digest is the file's, computed independently here */
    char file[600], expect[65];
    snprintf(file, sizeof file, "%s/model.safetensors", dir);
    FILE *f = fopen(file, "rb");
    assert_non_null(f);
    sha256_ctx c;
    sha256_init(&c);
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) {
        sha256_update(&c, buf, got);
    }
    fclose(f);
    sha256_final_hex(&c, expect);
    char *stored = query_text(db, "SELECT sha256 FROM model");
    assert_string_equal(stored, expect);
    free(stored);
    assert_true(query_int(db, "SELECT n_layers FROM model") > 0);
    assert_true(query_int(db, "SELECT d_vocab FROM model") >= 77);
    assert_int_equal(coordinator_model_record(s, "/nonexistent-model-dir", &id, err),
                     COMMON_ERR_NOT_FOUND);
    coordinator_store_close(&s);
}

/* An aggregate analysis over a game longer than the model's n_ctx is refused at submission,
 * naming the game; a patch analysis (which reads only its cut-offs) is not. */
static void test_game_lengths(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("lengths.db");
    int64_t model_id = 0, ds = 0, sweep = 0;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/random-tiny", CHESSLENS_SOURCE_DIR);
    assert_int_equal(coordinator_model_record(s, dir, &model_id, err), 0); /* n_ctx 48 */
    assert_int_equal(coordinator_dataset_create(s, "long", "test", false, &ds, err), 0);
    coordinator_import_stats st = {0};
    assert_int_equal(coordinator_games_generate(s, ds, 3, 5, 0, &st, NULL, err), 0);
    sqlite3 *db = coordinator_store_db(s);
    assert_true(query_int(db, "SELECT min(n_tokens) FROM game") > 48);
    static const char *const aggregates[] = {
        "{\"kind\":\"predictions\",\"top_k\":3}",
        "{\"kind\":\"neuron_stats\",\"by\":\"phase\"}",
        "{\"kind\":\"legal_stats\",\"components\":[\"embeds\"]}",
    };
    const char *patch = "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[20],"
                        "\"corrupt\":{\"with\":\"each_legal_alternative\"},"
                        "\"metric\":{\"kind\":\"legal_mass\"}}";
    for (size_t i = 0; i < 3; i++) {
        char json[1024];
        snprintf(json, sizeof json,
                 "{\"name\":\"a%zu\",\"model\":\"m\",\"dataset\":\"long\",\"games\":[1,3],"
                 "\"analyses\":[%s,%s]}",
                 i, patch, aggregates[i]);
        assert_int_equal(
            coordinator_sweep_submit(s, json, strlen(json), NULL, model_id, &sweep, NULL, err),
            COMMON_ERR_INVALID);
        assert_non_null(strstr(err, "analyses[1]: game 1 of dataset 'long' has "));
        assert_non_null(strstr(err, "more than the model's n_ctx (48)"));
    }
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sweep"), 0);
    /* patch only, or no model known: accepted */
    char json[1024];
    snprintf(json, sizeof json,
             "{\"name\":\"p\",\"model\":\"m\",\"dataset\":\"long\",\"games\":[0,3],"
             "\"analyses\":[%s]}",
             patch);
    assert_int_equal(
        coordinator_sweep_submit(s, json, strlen(json), NULL, model_id, &sweep, NULL, err), 0);
    snprintf(json, sizeof json,
             "{\"name\":\"n\",\"model\":\"m\",\"dataset\":\"long\",\"games\":[0,3],"
             "\"analyses\":[%s]}",
             aggregates[0]);
    assert_int_equal(coordinator_sweep_submit(s, json, strlen(json), NULL, 0, &sweep, NULL, err),
                     0);
    coordinator_store_close(&s);
}

static void test_duplicate_submission(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("submit.db");
    int64_t first = make_sweep(s, "sw", "{\"kind\":\"predictions\",\"top_k\":3}", 10);
    const char *json = "{\"games\":[0,10],\"name\":\"sw\",\"model\":\"m\",\"dataset\":\"d\","
                       "\"analyses\":[{\"top_k\":3,\"kind\":\"predictions\"}]}";
    int64_t second = 0;
    bool existed = false;
    /* the same submission (keys in another order: same canonical spec) returns the sweep */
    assert_int_equal(
        coordinator_sweep_submit(s, json, strlen(json), "sw", 0, &second, &existed, err), 0);
    assert_true(existed);
    assert_int_equal(first, second);
    sqlite3 *db = coordinator_store_db(s);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sweep"), 1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM job"), 1);
    /* the same submission id with another spec is refused */
    const char *other = "{\"games\":[0,10],\"name\":\"sw\",\"model\":\"m\",\"dataset\":\"d\","
                        "\"analyses\":[{\"top_k\":4,\"kind\":\"predictions\"}]}";
    assert_int_equal(coordinator_sweep_submit(s, other, strlen(other), "sw", 0, &second, NULL, err),
                     COMMON_ERR_INVALID);
    /* another submission with a taken name is refused, naming it */
    assert_int_equal(coordinator_sweep_submit(s, json, strlen(json), "sw-2", 0, &second, NULL, err),
                     COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "name: a sweep named 'sw' exists"));
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM sweep"), 1);
    int64_t job;
    assert_int_equal(coordinator_job_find(s, first, 0, &job, err), 0);
    assert_int_equal(coordinator_job_find(s, first, 1, &job, err), COMMON_ERR_NOT_FOUND);
    coordinator_store_close(&s);
}

static coordinator_prediction_batch one_prediction(uint64_t *game, uint32_t *pos, uint32_t *rank,
                                                   const char **token, float *lp, uint8_t *legal) {
    *game = 3;
    *pos = 1;
    *rank = 1;
    *token = "e2";
    *lp = -0.5f;
    *legal = 1;
    return (coordinator_prediction_batch){1, game, pos, rank, token, lp, legal};
}

/* A claim with a preferred model takes that model's tasks first, then the lowest ids of any
 * sweep for what is left; without a preference, the lowest ids. */
static void test_claim_prefers_model(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("prefer.db");
    sqlite3 *db = coordinator_store_db(s);
    char dir_a[512], dir_b[512], sql[256];
    snprintf(dir_a, sizeof dir_a, "%s/tests/fixtures/random-tiny", CHESSLENS_SOURCE_DIR);
    snprintf(dir_b, sizeof dir_b, "%s/models/chess-tiny", CHESSLENS_SOURCE_DIR);
    int64_t model_a = 0, model_b = 0, job_a = 0, job_b = 0;
    assert_int_equal(coordinator_model_record(s, dir_a, &model_a, err), 0);
    assert_int_equal(coordinator_model_record(s, dir_b, &model_b, err), 0);
    int64_t sweep_a = make_sweep(s, "a", "{\"kind\":\"predictions\",\"top_k\":1}", 2);
    int64_t sweep_b = make_sweep(s, "b", "{\"kind\":\"predictions\",\"top_k\":1}", 2);
    snprintf(sql, sizeof sql,
             "UPDATE sweep SET model_id = %lld WHERE id = %lld; "
             "UPDATE sweep SET model_id = %lld WHERE id = %lld",
             (long long)model_a, (long long)sweep_a, (long long)model_b, (long long)sweep_b);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(coordinator_job_find(s, sweep_a, 0, &job_a, err), 0);
    assert_int_equal(coordinator_job_find(s, sweep_b, 0, &job_b, err), 0);
    coordinator_task_def a[2] = {{"a1", NULL, 0}, {"a2", NULL, 0}};
    coordinator_task_def b[3] = {{"b1", NULL, 0}, {"b2", NULL, 0}, {"b3", NULL, 0}};
    assert_int_equal(coordinator_tasks_add(s, job_a, a, 2, NULL, err), 0); /* the lower ids */
    assert_int_equal(coordinator_tasks_add(s, job_b, b, 3, NULL, err), 0);
    char sha_b[65];
    snprintf(sql, sizeof sql, "SELECT sha256 FROM model WHERE id = %lld", (long long)model_b);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(sha_b, sizeof sha_b, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);

    coordinator_lease *l = NULL;
    size_t n = 0;
    assert_int_equal(coordinator_tasks_claim_preferring(s, "w", 2, 0, 1000, sha_b, &l, &n, err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].key, "b1");
    assert_string_equal(l[1].key, "b2");
    coordinator_leases_free(l, n);
    /* one of model b is left: it, then the lowest ids of the others */
    assert_int_equal(coordinator_tasks_claim_preferring(s, "w", 2, 0, 1000, sha_b, &l, &n, err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].key, "a1"); /* sorted by id */
    assert_string_equal(l[1].key, "b3");
    coordinator_leases_free(l, n);
    /* an unknown model prefers nothing; "" and NULL are no preference */
    assert_int_equal(coordinator_tasks_claim_preferring(s, "w", 5, 0, 1000, "ab", &l, &n, err), 0);
    assert_int_equal(n, 1);
    assert_string_equal(l[0].key, "a2");
    coordinator_leases_free(l, n);
    assert_int_equal(coordinator_tasks_claim_preferring(s, "w", 5, 0, 1000, "", &l, &n, err), 0);
    assert_int_equal(n, 0);
    assert_null(l);
    assert_int_equal(query_int(db, "SELECT count(*) FROM task WHERE state = 'leased'"), 5);
    coordinator_store_close(&s);
}

static void test_task_fencing(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("tasks.db");
    sqlite3 *db = coordinator_store_db(s);
    int64_t sweep = make_sweep(s, "t", "{\"kind\":\"predictions\",\"top_k\":1}", 10);
    int64_t job;
    assert_int_equal(coordinator_job_find(s, sweep, 0, &job, err), 0);
    coordinator_task_def defs[3] = {{"a", "body-a", 6}, {"b", "body-b", 6}, {"c", NULL, 0}};
    size_t added = 0;
    assert_int_equal(coordinator_tasks_add(s, job, defs, 3, &added, err), 0);
    assert_int_equal(added, 3);
    assert_int_equal(coordinator_tasks_add(s, job, defs, 3, &added, err), 0);
    assert_int_equal(added, 0); /* planning twice adds nothing */

    coordinator_lease *l = NULL;
    size_t n = 0;
    assert_int_equal(coordinator_tasks_claim(s, "w1", 2, 0, 1000, &l, &n, err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(l[0].key, "a");
    assert_int_equal(l[0].body_len, 6);
    assert_memory_equal(l[0].body, "body-a", 6);
    assert_int_equal(l[0].epoch, 1);
    assert_int_equal(l[0].attempt, 1);
    assert_int_equal(l[0].sweep_id, sweep);
    assert_int_equal(l[0].job_id, job);
    int64_t ta = l[0].task_id, tb = l[1].task_id;
    coordinator_leases_free(l, n);

    /* the lease of "a" expires at 1000; claimed again by w2 with epoch 2 */
    size_t expired = 0;
    assert_int_equal(coordinator_tasks_expire(s, 500, 5, 0, 0, &expired, err), 0);
    assert_int_equal(expired, 0);
    coordinator_fence f;
    assert_int_equal(coordinator_task_extend(s, tb, 1, 5000, &f, err), 0);
    assert_int_equal(f, COORDINATOR_STORED);
    assert_int_equal(coordinator_tasks_expire(s, 2000, 5, 0, 0, &expired, err), 0);
    assert_int_equal(expired, 1); /* only "a": "b" was extended */
    char *e = query_text(db, "SELECT state || ':' || last_error FROM task WHERE key = 'a'");
    assert_string_equal(e, "pending:lease expired");
    free(e);
    assert_int_equal(coordinator_tasks_claim(s, "w2", 5, 0, 9000, &l, &n, err), 0);
    assert_int_equal(n, 2); /* "a" again and "c" */
    assert_int_equal(l[0].task_id, ta);
    assert_int_equal(l[0].epoch, 2);
    assert_int_equal(l[0].attempt, 2);
    coordinator_leases_free(l, n);

    uint64_t game;
    uint32_t pos, rank;
    const char *token;
    float lp;
    uint8_t legal;
    coordinator_prediction_batch pb = one_prediction(&game, &pos, &rank, &token, &lp, &legal);
    coordinator_results r = {.predictions = &pb};
    /* the stale worker w1 (epoch 1) is fenced: nothing is stored */
    assert_int_equal(coordinator_task_complete(s, ta, 1, &r, &f, err), 0);
    assert_int_equal(f, COORDINATOR_FENCED);
    assert_int_equal(coordinator_task_extend(s, ta, 1, 99999, &f, err), 0);
    assert_int_equal(f, COORDINATOR_FENCED);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM prediction"), 0);
    /* w2 completes; a second completion stores nothing twice */
    assert_int_equal(coordinator_task_complete(s, ta, 2, &r, &f, err), 0);
    assert_int_equal(f, COORDINATOR_STORED);
    assert_int_equal(coordinator_task_complete(s, ta, 2, &r, &f, err), 0);
    assert_int_equal(f, COORDINATOR_ALREADY_STORED);
    assert_int_equal(coordinator_task_complete(s, ta, 1, &r, &f, err), 0);
    assert_int_equal(f, COORDINATOR_ALREADY_STORED);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM prediction"), 1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM predictions WHERE sweep = 't' AND "
                                   "game = 3 AND pos = 1 AND rank = 1 AND token = 'e2' AND "
                                   "legal = 1 AND logprob = -0.5"),
                     1);
    e = query_text(db, "SELECT state FROM task WHERE key = 'a'");
    assert_string_equal(e, "done");
    free(e);
    /* a done task is not leased again, and a completion of a task never leased is fenced */
    assert_int_equal(coordinator_tasks_claim(s, "w3", 5, 0, 9000, &l, &n, err), 0);
    assert_int_equal(n, 0);
    assert_null(l);
    assert_int_equal(coordinator_task_complete(s, 424242, 1, &r, &f, err), COMMON_ERR_NOT_FOUND);

    /* failures: back to pending with a backoff, dead at max_attempts with the error kept */
    assert_int_equal(coordinator_task_fail(s, tb, 7, "boom", 2, 0, &f, err), 0);
    assert_int_equal(f, COORDINATOR_FENCED);
    assert_int_equal(coordinator_task_fail(s, tb, 1, "boom", 2, 50, &f, err), 0);
    assert_int_equal(f, COORDINATOR_STORED);
    assert_int_equal(coordinator_tasks_claim(s, "w3", 5, 10, 9000, &l, &n, err), 0);
    assert_int_equal(n, 0); /* not before 50 */
    assert_int_equal(coordinator_tasks_claim(s, "w3", 5, 60, 9000, &l, &n, err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(l[0].attempt, 2);
    uint64_t epoch = l[0].epoch;
    coordinator_leases_free(l, n);
    assert_int_equal(coordinator_task_fail(s, tb, epoch, "boom again", 2, 0, &f, err), 0);
    e = query_text(db, "SELECT state || ':' || last_error || ':' || attempts FROM task "
                       "WHERE key = 'b'");
    assert_string_equal(e, "dead:boom again:2");
    free(e);
    /* rows with the same key inside one result are stored once */
    int64_t tc = query_int(db, "SELECT id FROM task WHERE key = 'c'");
    uint64_t ec = (uint64_t)query_int(db, "SELECT lease_epoch FROM task WHERE key = 'c'");
    const char *dup_tokens[2] = {"e2", "e3"};
    uint64_t games2[2] = {1, 1};
    uint32_t pos2[2] = {1, 1}, rank2[2] = {1, 1};
    float lp2[2] = {-1, -2};
    uint8_t legal2[2] = {1, 1};
    coordinator_prediction_batch twice = {2, games2, pos2, rank2, dup_tokens, lp2, legal2};
    coordinator_results r2 = {.predictions = &twice};
    assert_int_equal(coordinator_task_complete(s, tc, ec, &r2, &f, err), 0);
    /* the duplicate key (same game, pos, rank) is dropped by ON CONFLICT DO NOTHING */
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM prediction"), 2);
    coordinator_store_close(&s);
}

/* Random legal-stats partials over games of a stack of 3 components, 5 positions, 7 tokens. */
static void legal_game(interp_legal_stats *ls, unsigned seed) {
    float data[3 * 5 * 7];
    uint8_t legal[5 * 7];
    srand(seed);
    for (size_t i = 0; i < sizeof data / sizeof data[0]; i++) {
        data[i] = (float)rand() / (float)RAND_MAX * 4.0f - 2.0f;
    }
    for (size_t i = 0; i < sizeof legal; i++) {
        legal[i] = (uint8_t)(rand() % 3 == 0);
    }
    memset(legal + 4 * 7, 0, 7); /* last position: no legal token (not counted) */
    char *labels[3] = {"embed", "0_attn_out", "L0H1"};
    interp_stack st = {3, 5, 7, data, labels};
    assert_int_equal(interp_legal_stats_add(ls, &st, legal, err), 0);
}

/* Stores the given results as one completed task of job, keyed key. */
static void complete_one(coordinator_store *s, int64_t job, const char *key,
                         const coordinator_results *r) {
    coordinator_task_def def = {key, NULL, 0};
    assert_int_equal(coordinator_tasks_add(s, job, &def, 1, NULL, err), 0);
    coordinator_lease *l = NULL;
    size_t n = 0;
    assert_int_equal(coordinator_tasks_claim(s, "w", 1, 0, 1, &l, &n, err), 0);
    assert_int_equal(n, 1);
    coordinator_fence f;
    if (coordinator_task_complete(s, l[0].task_id, l[0].epoch, r, &f, err) != 0) {
        fail_msg("complete: %s", err);
    }
    assert_int_equal(f, COORDINATOR_STORED);
    coordinator_leases_free(l, n);
}

static bool close_rel(double a, double b, double tol) {
    return fabs(a - b) <= tol * fmax(fabs(a), fabs(b)) || (a == 0 && b == 0);
}

/* The same games split over three tasks and in one task give the same merged view values. */
static void test_partial_merges(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("merge.db");
    sqlite3 *db = coordinator_store_db(s);
    const char *an = "{\"kind\":\"legal_stats\",\"components\":[\"embeds\"]},"
                     "{\"kind\":\"neuron_stats\",\"by\":\"phase\"}";
    int64_t whole = make_sweep(s, "whole", an, 10);
    int64_t split = make_sweep(s, "split", an, 10);
    int64_t jw_l, jw_n, js_l, js_n;
    assert_int_equal(coordinator_job_find(s, whole, 0, &jw_l, err), 0);
    assert_int_equal(coordinator_job_find(s, whole, 1, &jw_n, err), 0);
    assert_int_equal(coordinator_job_find(s, split, 0, &js_l, err), 0);
    assert_int_equal(coordinator_job_find(s, split, 1, &js_n, err), 0);

    interp_legal_stats *all = NULL, *part[3] = {NULL, NULL, NULL};
    char *names[3] = {"embed", "0_attn_out", "L0H1"};
    assert_int_equal(interp_legal_stats_new(&all, 3, (const char *const *)names, 5, err), 0);
    for (int p = 0; p < 3; p++) {
        assert_int_equal(interp_legal_stats_new(&part[p], 3, (const char *const *)names, 5, err),
                         0);
    }
    for (unsigned g = 0; g < 10; g++) {
        legal_game(all, 100 + g);
        legal_game(part[g < 2 ? 0 : g < 7 ? 1 : 2], 100 + g);
    }
    model_config cfg = {.n_layers = 2, .d_mlp = 6};
    interp_neuron_stats *nall = NULL, *npart[3] = {NULL, NULL, NULL};
    assert_int_equal(interp_neuron_stats_new(&nall, &cfg, 15, -15, err), 0);
    srand(7);
    for (int p = 0; p < 3; p++) {
        assert_int_equal(interp_neuron_stats_new(&npart[p], &cfg, 15, -15, err), 0);
        for (int g = 0; g < INTERP_NEURON_N_GROUPS; g++) {
            npart[p]->count[g] = g == 3 ? 0 : (uint64_t)(10 + rand() % 50);
            for (size_t i = 0; i < 2 * 6; i++) {
                npart[p]->sum[(size_t)g * 12 + i] = (double)rand() / RAND_MAX * 100.0 - 30.0;
            }
        }
        assert_int_equal(interp_neuron_stats_merge(nall, npart[p], err), 0);
    }

    coordinator_results rw = {.legal = all};
    complete_one(s, jw_l, "all", &rw);
    coordinator_results rn = {.neurons = nall};
    complete_one(s, jw_n, "all", &rn);
    for (int p = 0; p < 3; p++) {
        char key[16];
        snprintf(key, sizeof key, "p%d", p);
        coordinator_results r = {.legal = part[p]};
        complete_one(s, js_l, key, &r);
        coordinator_results q = {.neurons = npart[p]};
        complete_one(s, js_n, key, &q);
    }

    /* the same rows on both sides, the same values within 1e-12 relative */
    const char *sql =
        "SELECT a.value, b.value, a.count, b.count, a.min, b.min, a.max, b.max FROM legal_stats a "
        "JOIN legal_stats b ON b.component = a.component AND b.pos = a.pos AND "
        "b.statistic = a.statistic WHERE a.sweep = 'whole' AND b.sweep = 'split'";
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    size_t rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        assert_true(close_rel(sqlite3_column_double(st, 0), sqlite3_column_double(st, 1), 1e-12));
        assert_int_equal(sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
        assert_true(sqlite3_column_double(st, 4) == sqlite3_column_double(st, 5));
        assert_true(sqlite3_column_double(st, 6) == sqlite3_column_double(st, 7));
    }
    sqlite3_finalize(st);
    int64_t n_whole = query_int(db, "SELECT COUNT(*) FROM legal_stats WHERE sweep = 'whole'");
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM legal_stats WHERE sweep = 'split'"),
                     n_whole);
    assert_int_equal(rows, n_whole);
    assert_true(n_whole > 0);
    /* positions 0..3 counted for every component and statistic; the last never */
    assert_int_equal(n_whole, 3 * 4 * 4);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM legal_stats WHERE pos = 4"), 0);
    /* the merged value is the mean over games of the statistic, as interp computes it */
    float mean[3 * 5];
    interp_legal_stats_mean(all, INTERP_LEGAL_MEAN_LEGAL, mean);
    char q[256];
    snprintf(q, sizeof q,
             "SELECT value FROM legal_stats WHERE sweep = 'split' AND component = '0_attn_out' "
             "AND pos = 2 AND statistic = 'mean_legal'");
    sqlite3_stmt *one = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &one, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(one), SQLITE_ROW);
    assert_true(fabs(sqlite3_column_double(one, 0) - (double)mean[1 * 5 + 2]) < 1e-6);
    sqlite3_finalize(one);

    sql = "SELECT a.mean, b.mean, a.count, b.count FROM neuron_stats a JOIN neuron_stats b ON "
          "b.layer = a.layer AND b.neuron = a.neuron AND b.phase = a.phase "
          "WHERE a.sweep = 'whole' AND b.sweep = 'split'";
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        assert_true(close_rel(sqlite3_column_double(st, 0), sqlite3_column_double(st, 1), 1e-12));
        assert_int_equal(sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
    }
    sqlite3_finalize(st);
    assert_int_equal(rows, 5 * 2 * 6); /* group 3 (white_to) is empty everywhere */
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM neuron_stats WHERE phase = 'white_to'"),
                     0);
    float nm[12];
    interp_neuron_stats_mean(nall, INTERP_NEURON_BLACK_TO, nm);
    sqlite3_stmt *n1 = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT mean FROM neuron_stats WHERE sweep = 'split' AND "
                                        "layer = 1 AND neuron = 4 AND phase = 'black_to'",
                                        -1, &n1, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(n1), SQLITE_ROW);
    assert_true(fabs(sqlite3_column_double(n1, 0) - (double)nm[6 + 4]) < 1e-4);
    sqlite3_finalize(n1);

    interp_legal_stats_destroy(&all);
    interp_neuron_stats_destroy(&nall);
    for (int p = 0; p < 3; p++) {
        interp_legal_stats_destroy(&part[p]);
        interp_neuron_stats_destroy(&npart[p]);
    }
    coordinator_store_close(&s);
}

/* Patch results: one row per value with the coordinates of the kind's axes. */
static void test_patch_rows(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("patch.db");
    sqlite3 *db = coordinator_store_db(s);
    int64_t sweep = make_sweep(s, "p",
                               "{\"kind\":\"patch\",\"patch\":\"block_every\",\"cutoffs\":[4],"
                               "\"corrupt\":{\"with\":\"each_legal_alternative\"},"
                               "\"metric\":{\"kind\":\"logit\",\"tokens\":[\"e4\"]}},"
                               "{\"kind\":\"patch\",\"patch\":\"attn_head_out_by_pos\","
                               "\"cutoffs\":[4],\"corrupt\":{\"with\":\"d5\"},"
                               "\"metric\":{\"kind\":\"logit\",\"tokens\":[\"e4\"]}}",
                               10);
    int64_t job0, job1;
    assert_int_equal(coordinator_job_find(s, sweep, 0, &job0, err), 0);
    assert_int_equal(coordinator_job_find(s, sweep, 1, &job1, err), 0);
    enum { L = 2, T = 4, H = 3 };
    float v_block[3 * L * T], v_head[L * T * H];
    for (size_t i = 0; i < 3 * L * T; i++) {
        v_block[i] = (float)i * 0.25f;
    }
    for (size_t i = 0; i < L * T * H; i++) {
        v_head[i] = (float)i - 7.0f;
    }
    interp_patch_result rb = {.shape = {3, {3, L, T, 0}},
                              .values = v_block,
                              .axes = "component,layer,pos",
                              .labels = "resid_pre,attn_out,mlp_out",
                              .clean_metric = 1.5,
                              .corrupted_metric = -0.5};
    interp_patch_result rh = {
        .shape = {3, {L, T, H, 0}}, .values = v_head, .axes = "layer,pos,head", .labels = ""};
    uint64_t game[1] = {2};
    uint32_t cutoff[1] = {T};
    int32_t cpos[1] = {3};
    const char *clean[1] = {"g1"}, *corrupt[1] = {"b1"}, *metric[1] = {"logit:e4"};
    bool norm[1] = {true};
    const interp_patch_result *res_b[1] = {&rb}, *res_h[1] = {&rh};
    coordinator_patch_batch pb = {
        1, INTERP_PATCH_BLOCK_EVERY, game, cutoff, cpos, clean, corrupt, NULL, metric, norm, res_b};
    coordinator_results r = {.patch = &pb};
    complete_one(s, job0, "g2", &r);
    coordinator_patch_batch ph = pb;
    ph.kind = INTERP_PATCH_HEAD_OUT_BY_POS;
    ph.result = res_h;
    coordinator_results r2 = {.patch = &ph};
    complete_one(s, job1, "g2", &r2);

    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM patch_effects WHERE kind = "
                                   "'block_every'"),
                     3 * L * T);
    /* component 2 (mlp_out), layer 1, position 3 is flat index 2*8 + 1*4 + 3 = 23 */
    assert_int_equal(query_int(db, "SELECT value * 4 FROM patch_effects WHERE sweep = 'p' AND "
                                   "component = 'mlp_out' AND layer = 1 AND pos = 3"),
                     23);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM patch_effects WHERE kind = "
                                   "'block_every' AND head IS NULL AND game = 2 AND cutoff = 4 "
                                   "AND corrupt_pos = 3 AND clean_token = 'g1' AND "
                                   "corrupt_token = 'b1' AND metric = 'logit:e4' AND "
                                   "normalized = 1 AND dataset = 'd'"),
                     3 * L * T);
    /* layer 1, position 2, head 1: flat (1*4 + 2)*3 + 1 = 19, value 12 */
    assert_int_equal(query_int(db, "SELECT value FROM patch_effects WHERE kind = "
                                   "'attn_head_out_by_pos' AND layer = 1 AND pos = 2 AND "
                                   "head = 1 AND component IS NULL"),
                     12);
    /* the join the views are for: effects at black's to-squares */
    int64_t n_join =
        query_int(db, "SELECT COUNT(*) FROM patch_effects pe JOIN game_positions gp ON "
                      "gp.dataset = pe.dataset AND gp.game = pe.game AND gp.pos = pe.pos "
                      "WHERE pe.sweep = 'p' AND pe.kind = 'block_every' AND "
                      "gp.phase = 'black_from'");
    assert_int_equal(n_join, 3 * L); /* g1f3 g8f6 cut at 4 tokens: g8 (3) is black's from */
    coordinator_store_close(&s);
}

/* Each documented view has exactly the documented leading columns, in order. */
static void test_view_columns(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("views.db");
    sqlite3 *db = coordinator_store_db(s);
    static const struct {
        const char *view;
        const char *columns;
    } views[] = {
        {"patch_effects", "sweep,game,cutoff,corrupt_pos,clean_token,corrupt_token,metric,"
                          "normalized,kind,component,layer,pos,head,value"},
        {"legal_stats", "sweep,component,pos,statistic,value,count"},
        {"neuron_stats", "sweep,layer,neuron,phase,mean,count"},
        {"predictions", "sweep,game,pos,rank,token,logprob,legal"},
        {"game_positions", "dataset,game,pos,token,move_index,phase,n_legal"},
        {"games", "dataset,game,uci,n_tokens"},
    };
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        char sql[640], got[512] = "";
        snprintf(sql, sizeof sql, "PRAGMA table_info(%s)", views[i].view);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW) {
            size_t k = strlen(got);
            snprintf(got + k, sizeof got - k, "%s%s", k > 0 ? "," : "",
                     (const char *)sqlite3_column_text(st, 1));
        }
        sqlite3_finalize(st);
        if (strncmp(got, views[i].columns, strlen(views[i].columns)) != 0 ||
            (got[strlen(views[i].columns)] != '\0' && got[strlen(views[i].columns)] != ',')) {
            fail_msg("%s: columns %s, documented %s", views[i].view, got, views[i].columns);
        }
        /* and a SELECT of them by name works */
        snprintf(sql, sizeof sql, "SELECT %s FROM %s", views[i].columns, views[i].view);
        assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);
    }
    coordinator_store_close(&s);
}

static void test_workers(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("workers.db");
    assert_int_equal(coordinator_worker_seen(s, "w1", "cpu x16", 10, err), 0);
    assert_int_equal(coordinator_worker_seen(s, "w1", NULL, 20, err), 0);
    char *t = query_text(coordinator_store_db(s), "SELECT info || ':' || first_seen_ns || ':' || "
                                                  "last_seen_ns FROM worker");
    assert_string_equal(t, "cpu x16:10:20");
    free(t);
    coordinator_store_close(&s);
}

/* Asserts that no statement of db is mid-step (each was reset after use, on every path) and
 * returns how many are prepared. */
static size_t statements_idle(sqlite3 *db) {
    size_t n = 0;
    for (sqlite3_stmt *st = sqlite3_next_stmt(db, NULL); st != NULL;
         st = sqlite3_next_stmt(db, st)) {
        if (sqlite3_stmt_busy(st)) {
            fail_msg("statement left mid-step: %s", sqlite3_sql(st));
        }
        n++;
    }
    return n;
}

/* One round of every task operation on a fresh sweep named name, the failing paths included
 * (a report for a task that does not exist, a fenced one, a duplicate). */
static void task_round(coordinator_store *s, const char *name) {
    int64_t sweep = make_sweep(s, name, "{\"kind\":\"predictions\",\"top_k\":1}", 10);
    int64_t job;
    assert_int_equal(coordinator_job_find(s, sweep, 0, &job, err), 0);
    coordinator_task_def defs[3] = {{"a", "x", 1}, {"b", "y", 1}, {"c", "z", 1}};
    assert_int_equal(coordinator_tasks_add(s, job, defs, 3, NULL, err), 0);
    coordinator_lease *l = NULL;
    size_t n = 0;
    assert_int_equal(coordinator_tasks_claim(s, "w", 3, 0, 1000, &l, &n, err), 0);
    assert_int_equal(n, 3);
    coordinator_fence f;
    assert_int_equal(coordinator_task_extend(s, l[0].task_id, l[0].epoch, 2000, &f, err), 0);
    assert_int_equal(f, COORDINATOR_STORED);
    /* a completion with nothing to store: one fenced statement */
    assert_int_equal(coordinator_task_complete(s, l[0].task_id, l[0].epoch + 1, NULL, &f, err), 0);
    assert_int_equal(f, COORDINATOR_FENCED);
    assert_int_equal(coordinator_task_complete(s, l[0].task_id, l[0].epoch, NULL, &f, err), 0);
    assert_int_equal(f, COORDINATOR_STORED);
    coordinator_results none = {0};
    assert_int_equal(coordinator_task_complete(s, l[0].task_id, l[0].epoch, &none, &f, err), 0);
    assert_int_equal(f, COORDINATOR_ALREADY_STORED);
    assert_int_equal(coordinator_task_extend(s, l[0].task_id, l[0].epoch, 3000, &f, err), 0);
    assert_int_equal(f, COORDINATOR_ALREADY_STORED);
    assert_int_equal(coordinator_task_complete(s, 987654, 1, NULL, &f, err), COMMON_ERR_NOT_FOUND);
    assert_int_equal(coordinator_task_extend(s, 987654, 1, 5, &f, err), COMMON_ERR_NOT_FOUND);
    assert_int_equal(coordinator_task_fail(s, l[1].task_id, l[1].epoch, "no", 1, 0, &f, err), 0);
    assert_int_equal(f, COORDINATOR_STORED); /* attempts 1 of at most 1: dead */
    size_t expired = 0;
    assert_int_equal(coordinator_tasks_expire(s, 1500, 5, 0, 0, &expired, err), 0);
    assert_int_equal(expired, 1); /* "c": "a" is done, "b" dead */
    coordinator_leases_free(l, n);
    coordinator_sweep_progress p;
    assert_int_equal(coordinator_sweep_progress_get(s, sweep, &p, err), 0);
    assert_int_equal(p.done, 1);
    assert_int_equal(p.dead, 1);
    assert_int_equal(p.pending, 1);
    coordinator_sweep_info *info = NULL;
    assert_int_equal(coordinator_sweeps_list(s, 0, &info, &n, err), 0);
    free(info);
    coordinator_dead_task *dead = NULL;
    assert_int_equal(coordinator_dead_tasks(s, sweep, 10, &dead, &n, err), 0);
    assert_int_equal(n, 1);
    coordinator_dead_tasks_free(dead, n);
    assert_int_equal(coordinator_sweep_retry_dead(s, sweep, &n, err), 0);
    assert_int_equal(n, 1);
    coordinator_task_ref *refs = NULL;
    assert_int_equal(coordinator_sweep_cancel(s, sweep, &refs, &n, err), 0);
    free(refs);
    assert_int_equal(coordinator_sweep_cancel(s, 424242, &refs, &n, err), COMMON_ERR_NOT_FOUND);
    int64_t id = 0;
    assert_int_equal(coordinator_sweep_find(s, name, &id, err), 0);
    assert_int_equal(id, sweep);
    assert_int_equal(coordinator_sweep_find(s, "nope", &id, err), COMMON_ERR_NOT_FOUND);
    assert_int_equal(coordinator_worker_seen(s, "w", NULL, 5, err), 0);
}

static void test_statement_cache(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("stmt-cache.db");
    sqlite3 *db = coordinator_store_db(s);
    /* the same text is the same statement, whatever buffer holds it */
    sqlite3_stmt *a = NULL, *b = NULL;
    char *copy = strdup("SELECT ?1");
    assert_int_equal(store_stmt(s, "SELECT ?1", &a, "test", err), 0);
    sqlite3_bind_int(a, 1, 42);
    assert_int_equal(sqlite3_step(a), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(a, 0), 42);
    store_stmt_done(a);
    assert_int_equal(store_stmt(s, copy, &b, "test", err), 0);
    assert_ptr_equal(a, b);
    /* handed back reset and with its parameters cleared */
    assert_int_equal(sqlite3_step(b), SQLITE_ROW);
    assert_int_equal(sqlite3_column_type(b, 0), SQLITE_NULL);
    store_stmt_done(b);
    free(copy);
    /* a text SQLite refuses is an error naming the operation, and caches nothing */
    size_t before = statements_idle(db);
    assert_int_equal(store_stmt(s, "SELEC nothing", &a, "bad sql", err), COMMON_ERR_IO);
    assert_non_null(strstr(err, "bad sql"));
    assert_int_equal(statements_idle(db), before);

    /* every operation leaves its statements idle, and doing it all again prepares nothing new */
    task_round(s, "r1");
    size_t after_one = statements_idle(db);
    task_round(s, "r2");
    assert_int_equal(statements_idle(db), after_one);
    /* nothing holds a read open: another connection can checkpoint the whole WAL away */
    char path[512];
    snprintf(path, sizeof path, "%s/stmt-cache.db", tmpdir());
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(path, &other), SQLITE_OK);
    assert_int_equal(query_int(other, "SELECT count(*) FROM sweep"), 2); /* opens the WAL */
    int log = -1, done = -1;
    assert_int_equal(
        sqlite3_wal_checkpoint_v2(other, NULL, SQLITE_CHECKPOINT_TRUNCATE, &log, &done), SQLITE_OK);
    assert_int_equal(log, 0);
    sqlite3_close(other);
    assert_int_equal(query_int(db, "SELECT count(*) FROM task WHERE state = 'done' AND "
                                   "n_rows = 0 AND done_at > 0"),
                     2);
    coordinator_store_close(&s); /* finalizes the cache: ASan / valgrind see no leak */
    assert_null(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_and_pragmas),
        cmocka_unit_test(test_migration_from_v1),
        cmocka_unit_test(test_migration_from_v3_keeps_tasks),
        cmocka_unit_test(test_refuses_newer),
        cmocka_unit_test(test_readonly),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_model_record),
        cmocka_unit_test(test_game_lengths),
        cmocka_unit_test(test_duplicate_submission),
        cmocka_unit_test(test_task_fencing),
        cmocka_unit_test(test_claim_prefers_model),
        cmocka_unit_test(test_partial_merges),
        cmocka_unit_test(test_patch_rows),
        cmocka_unit_test(test_view_columns),
        cmocka_unit_test(test_workers),
        cmocka_unit_test(test_statement_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
