/*
 * store: opening the SQLite database (pragmas, schema version checks and migration, the
 * read-only mode for queries) and the small records of the store: models, datasets, sweeps
 * with their jobs, workers. Every write that must be all-or-nothing runs in one BEGIN
 * IMMEDIATE transaction, so a concurrent writer waits on the busy timeout instead of failing
 * half-way. Games are in games.c; tasks, leases and results in tasks.c.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/store_int.h"

/* ---- helpers ---- */

int store_fail(sqlite3 *db, char *err, const char *what) {
    int ext = sqlite3_extended_errcode(db);
    int primary = ext & 0xff;
    int code = primary == SQLITE_NOMEM        ? COMMON_ERR_NOMEM
               : primary == SQLITE_CONSTRAINT ? COMMON_ERR_INVALID
                                              : COMMON_ERR_IO;
    return common_fail(err, code, "%s: %s", what, sqlite3_errmsg(db));
}

int store_exec(sqlite3 *db, const char *sql, const char *what, char *err) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        int rc = common_fail(err, COMMON_ERR_IO, "sqlite3_exec(%s): %s", what,
                             msg != NULL ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return rc;
    }
    return 0;
}

int store_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *what, char *err) {
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
        char w[128];
        snprintf(w, sizeof w, "sqlite3_prepare(%s)", what);
        return store_fail(db, err, w);
    }
    return 0;
}

/* The cache is a plain array: a few dozen texts, matched by address first (the same literal
 * every time) and by content when the address is new. */
int store_stmt(coordinator_store *s, const char *sql, sqlite3_stmt **st, const char *what,
               char *err) {
    for (size_t i = 0; i < s->n_cache; i++) {
        if (s->cache[i].key == sql && strcmp(s->cache[i].sql, sql) == 0) {
            *st = s->cache[i].st;
            return 0;
        }
    }
    for (size_t i = 0; i < s->n_cache; i++) {
        if (strcmp(s->cache[i].sql, sql) == 0) {
            s->cache[i].key = sql; /* the next call with this address matches at once */
            *st = s->cache[i].st;
            return 0;
        }
    }
    if (s->n_cache == s->cap_cache) {
        size_t cap = s->cap_cache > 0 ? 2 * s->cap_cache : 32;
        store_cached *c = realloc(s->cache, cap * sizeof *c);
        if (c == NULL) {
            return common_fail(err, COMMON_ERR_NOMEM, "store: out of memory");
        }
        s->cache = c;
        s->cap_cache = cap;
    }
    store_cached *e = &s->cache[s->n_cache];
    e->key = sql;
    e->sql = strdup(sql);
    if (e->sql == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "store: out of memory");
    }
    if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &e->st, NULL) != SQLITE_OK) {
        free(e->sql);
        char w[128];
        snprintf(w, sizeof w, "sqlite3_prepare(%s)", what);
        return store_fail(s->db, err, w);
    }
    s->n_cache++;
    *st = e->st;
    return 0;
}

void store_stmt_done(sqlite3_stmt *st) {
    if (st != NULL) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

int store_step_done(sqlite3 *db, sqlite3_stmt *st, const char *what, char *err) {
    int r = sqlite3_step(st);
    if (r != SQLITE_DONE && r != SQLITE_ROW) {
        char w[128];
        snprintf(w, sizeof w, "sqlite3_step(%s)", what);
        return store_fail(db, err, w);
    }
    return 0;
}

int store_run(coordinator_store *s, const char *sql, const char *what, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s, sql, &st, what, err);
    if (rc == 0) {
        rc = store_step_done(s->db, st, what, err);
        store_stmt_done(st);
    }
    return rc;
}

int store_begin(coordinator_store *s, char *err) {
    return s->batch ? store_run(s, "SAVEPOINT op", "begin", err)
                    : store_run(s, "BEGIN IMMEDIATE", "begin", err);
}

int store_commit(coordinator_store *s, char *err) {
    return s->batch ? store_run(s, "RELEASE op", "commit", err)
                    : store_run(s, "COMMIT", "commit", err);
}

void store_rollback(coordinator_store *s) {
    store_jobs_free(s); /* a job read in what is taken back may be gone */
    if (sqlite3_get_autocommit(s->db)) {
        return; /* SQLite rolled the whole transaction back itself (e.g. SQLITE_FULL) */
    }
    sqlite3_exec(s->db, s->batch ? "ROLLBACK TO op; RELEASE op" : "ROLLBACK", NULL, NULL, NULL);
}

int coordinator_store_batch_begin(coordinator_store *s, char *err) {
    if (s->batch) {
        return common_fail(err, COMMON_ERR_INVALID, "store: a batch is open already");
    }
    int rc = store_run(s, "BEGIN IMMEDIATE", "begin batch", err);
    if (rc == 0) {
        s->batch = true;
    }
    return rc;
}

/* fsync of the WAL file as SQLite itself would do it at a checkpoint: through the VFS, so that
 * a VFS that is not the OS's (a test's, an encrypting one) sees it. With no WAL open (nothing
 * written yet) there is nothing to make durable. */
static int sync_wal(coordinator_store *s, char *err) {
    sqlite3_file *wal = NULL;
    int rc = sqlite3_file_control(s->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &wal);
    if (rc == SQLITE_OK && wal != NULL && wal->pMethods != NULL) {
        rc = wal->pMethods->xSync(wal, SQLITE_SYNC_NORMAL);
    }
    if (rc != SQLITE_OK) {
        return common_fail(err, COMMON_ERR_IO,
                           "commit batch: the commit is written but syncing the WAL failed: %s",
                           sqlite3_errstr(rc));
    }
    return 0;
}

int coordinator_store_batch_commit(coordinator_store *s, char *err) {
    if (!s->batch) {
        return common_fail(err, COMMON_ERR_INVALID, "store: no batch is open");
    }
    s->batch = false;
    bool durable = s->batch_durable;
    s->batch_durable = false;
    if (sqlite3_get_autocommit(s->db)) {
        return common_fail(err, COMMON_ERR_IO,
                           "commit batch: the transaction was rolled back by an earlier error");
    }
    int rc = store_run(s, "COMMIT", "commit batch", err);
    if (rc != 0) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        store_jobs_free(s);
        return rc;
    }
    if (durable && s->sync != COORDINATOR_SYNC_FULL) {
        rc = sync_wal(s, err);
    }
    return rc;
}

int coordinator_store_batch_mark_durable(coordinator_store *s, char *err) {
    if (!s->batch) {
        return common_fail(err, COMMON_ERR_INVALID, "store: no batch is open");
    }
    s->batch_durable = true;
    return 0;
}

int coordinator_store_set_sync(coordinator_store *s, coordinator_sync level, char *err) {
    if (s->batch) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "store: the synchronous level cannot change inside a batch");
    }
    int rc = store_run(s,
                       level == COORDINATOR_SYNC_FULL ? "PRAGMA synchronous = FULL"
                                                      : "PRAGMA synchronous = NORMAL",
                       "synchronous", err);
    if (rc == 0) {
        s->sync = level;
    }
    return rc;
}

void coordinator_store_batch_rollback(coordinator_store *s) {
    s->batch = false;
    s->batch_durable = false;
    store_jobs_free(s);
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    }
}

/* ---- open ---- */

static int read_version(sqlite3 *db, int *version, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_prepare(db, "PRAGMA user_version", &st, "read user_version", err);
    if (rc == 0) {
        if (sqlite3_step(st) == SQLITE_ROW) {
            *version = sqlite3_column_int(st, 0);
        } else {
            rc = store_fail(db, err, "sqlite3_step(read user_version)");
        }
    }
    sqlite3_finalize(st);
    return rc;
}

static int open_db(coordinator_store **out, const char *path, int busy_timeout_ms, bool readonly,
                   char *err) {
    coordinator_store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "store: out of memory");
    }
    s->readonly = readonly;
    int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    int rc = 0;
    if (sqlite3_open_v2(path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        rc = common_fail(err, s->db == NULL ? COMMON_ERR_NOMEM : COMMON_ERR_IO,
                         "sqlite3_open(%s): %s", path,
                         s->db != NULL ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, busy_timeout_ms > 0 ? busy_timeout_ms : 5000);

    int version = 0;
    if ((rc = read_version(s->db, &version, err)) != 0) {
        goto fail;
    }
    if (version > COORDINATOR_SCHEMA_VERSION) {
        rc = common_fail(err, COMMON_ERR_UNSUPPORTED,
                         "store %s: schema version %d is newer than this chesslens (%d)", path,
                         version, COORDINATOR_SCHEMA_VERSION);
        goto fail;
    }
    if (readonly) {
        if (version < COORDINATOR_SCHEMA_VERSION) {
            rc = common_fail(err, COMMON_ERR_INVALID,
                             "store %s: schema version %d is older than this chesslens (%d); open "
                             "it for writing once to migrate",
                             path, version, COORDINATOR_SCHEMA_VERSION);
            goto fail;
        }
        rc = store_exec(s->db, "PRAGMA query_only = ON; PRAGMA foreign_keys = ON", "pragmas", err);
        if (rc != 0) {
            goto fail;
        }
        *out = s;
        return 0;
    }
    /* journal_mode answers with the mode in force: a file system without shared memory keeps
     * the old mode, which the store refuses rather than running without WAL's readers */
    sqlite3_stmt *st = NULL;
    if ((rc = store_prepare(s->db, "PRAGMA journal_mode = WAL", &st, "journal_mode", err)) != 0) {
        goto fail;
    }
    const char *mode =
        sqlite3_step(st) == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    bool wal = mode != NULL && strcmp(mode, "wal") == 0;
    sqlite3_finalize(st);
    if (!wal) {
        rc = common_fail(err, COMMON_ERR_IO, "store %s: cannot switch to WAL journal mode: %s",
                         path, sqlite3_errmsg(s->db));
        goto fail;
    }
    /* synchronous NORMAL: a commit is in the WAL file (written, not fsynced) when COMMIT
     * returns, so it survives a crash of this process; the WAL is fsynced at checkpoints. */
    /* foreign keys are enforced once the schema is current: a migration step that rebuilds a
     * table drops the old one, which with them on would delete the rows that refer to it */
    rc = store_exec(s->db, "PRAGMA synchronous = NORMAL", "pragmas", err);
    if (rc == 0) {
        rc = store_migrate(s->db, COORDINATOR_SCHEMA_VERSION, err);
    }
    if (rc == 0) {
        rc = store_exec(s->db, "PRAGMA foreign_keys = ON", "pragmas", err);
    }
    if (rc != 0) {
        goto fail;
    }
    *out = s;
    return 0;

fail:
    sqlite3_close(s->db);
    free(s);
    return rc;
}

int coordinator_store_open(coordinator_store **out, const char *path, int busy_timeout_ms,
                           char *err) {
    return open_db(out, path, busy_timeout_ms, false, err);
}

int coordinator_store_open_readonly(coordinator_store **out, const char *path, int busy_timeout_ms,
                                    char *err) {
    return open_db(out, path, busy_timeout_ms, true, err);
}

void coordinator_store_close(coordinator_store **sp) {
    if (sp == NULL || *sp == NULL) {
        return;
    }
    coordinator_store *s = *sp;
    for (size_t i = 0; i < s->n_cache; i++) {
        sqlite3_finalize(s->cache[i].st);
        free(s->cache[i].sql);
    }
    free(s->cache);
    store_games_free(s);
    store_jobs_free(s);
    sqlite3_close_v2(s->db);
    free(s);
    *sp = NULL;
}

struct sqlite3 *coordinator_store_db(coordinator_store *s) {
    return s->db;
}

/* ---- models ---- */

int coordinator_model_record(coordinator_store *s, const char *dir, int64_t *id, char *err) {
    char path[4096];
    char hex[65];
    char *json = NULL;
    size_t len = 0;
    model_config cfg;
    sqlite3_stmt *st = NULL;
    int rc;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((rc = common_read_file(path, &json, &len, err)) != 0 ||
        (rc = model_config_parse(&cfg, path, json, len, err)) != 0) {
        goto done;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((rc = sha256_file_hex(path, hex, err)) != 0) {
        goto done;
    }
    rc = store_stmt(s,
                    "INSERT INTO model (path, sha256, n_layers, d_model, n_heads, d_head, "
                    "d_mlp, n_ctx, d_vocab) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (path, sha256) DO UPDATE SET path = excluded.path "
                    "RETURNING id",
                    &st, "record model", err);
    if (rc != 0) {
        goto done;
    }
    sqlite3_bind_text(st, 1, dir, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, hex, -1, SQLITE_TRANSIENT);
    int dims[7] = {cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head,
                   cfg.d_mlp,    cfg.n_ctx,   cfg.d_vocab};
    for (int i = 0; i < 7; i++) {
        sqlite3_bind_int(st, 3 + i, dims[i]);
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = store_fail(s->db, err, "sqlite3_step(record model)");
        goto done;
    }
    *id = sqlite3_column_int64(st, 0);

done:
    store_stmt_done(st);
    free(json);
    return rc;
}

/* ---- datasets ---- */

int coordinator_dataset_find(coordinator_store *s, const char *name, int64_t *id, uint64_t *n_games,
                             char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "SELECT d.id, (SELECT COUNT(*) FROM game g WHERE g.dataset_id = d.id) "
                        "FROM dataset d WHERE d.name = ?",
                        &st, "find dataset", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        if (n_games != NULL) {
            *n_games = (uint64_t)sqlite3_column_int64(st, 1);
        }
    } else if (r == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "dataset '%s' not found", name);
    } else {
        rc = store_fail(s->db, err, "sqlite3_step(find dataset)");
    }
    store_stmt_done(st);
    return rc;
}

int coordinator_dataset_create(coordinator_store *s, const char *name, const char *source,
                               bool append, int64_t *id, char *err) {
    if (!coordinator_name_valid(name)) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "dataset name '%s': must be 1..%d characters of [A-Za-z0-9._-]", name,
                           COORDINATOR_MAX_NAME);
    }
    int64_t existing;
    char ferr[COMMON_ERR_LEN];
    int rc = coordinator_dataset_find(s, name, &existing, NULL, ferr);
    if (rc == 0) {
        if (!append) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "dataset '%s' exists (append to it with "
                               "--append)",
                               name);
        }
        *id = existing;
        return 0;
    }
    if (rc != COMMON_ERR_NOT_FOUND) {
        return common_fail(err, rc, "%s", ferr);
    }
    sqlite3_stmt *st = NULL;
    rc = store_stmt(s, "INSERT INTO dataset (name, source) VALUES (?, ?)", &st, "create dataset",
                    err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, source, -1, SQLITE_TRANSIENT);
    rc = store_step_done(s->db, st, "create dataset", err);
    store_stmt_done(st);
    if (rc == 0) {
        *id = sqlite3_last_insert_rowid(s->db);
    }
    return rc;
}

/* ---- sweeps ---- */

/* Looks the submission up: *found with its sweep id and whether its spec equals canonical. */
static int find_submission(coordinator_store *s, const char *submission_id, bool *found,
                           int64_t *sweep_id, bool *same_spec, const char *canonical, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s, "SELECT id, spec FROM sweep WHERE submission_id = ?", &st,
                        "find submission", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, submission_id, -1, SQLITE_TRANSIENT);
    int r = sqlite3_step(st);
    *found = r == SQLITE_ROW;
    if (r == SQLITE_ROW) {
        *sweep_id = sqlite3_column_int64(st, 0);
        const char *spec = (const char *)sqlite3_column_text(st, 1);
        *same_spec = spec != NULL && strcmp(spec, canonical) == 0;
    } else if (r != SQLITE_DONE) {
        rc = store_fail(s->db, err, "sqlite3_step(find submission)");
    }
    store_stmt_done(st);
    return rc;
}

/* An aggregate analysis reads every token of its games, so none may be longer than the
 * model's context (a patch analysis reads only its cut-offs, checked against n_ctx with the
 * spec). Refused at submission, naming the first game too long, rather than as dead tasks. */
static int check_game_lengths(coordinator_store *s, const coordinator_spec *spec,
                              int64_t dataset_id, int64_t model_id, char *err) {
    size_t first_aggregate = spec->n_analyses;
    for (size_t i = 0; i < spec->n_analyses && first_aggregate == spec->n_analyses; i++) {
        if (spec->analyses[i].kind != COORDINATOR_ANALYSIS_PATCH) {
            first_aggregate = i;
        }
    }
    if (first_aggregate == spec->n_analyses) {
        return 0;
    }
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "SELECT g.idx, g.n_tokens, m.n_ctx FROM game g, model m"
                        " WHERE m.id = ?1 AND g.dataset_id = ?2 AND g.idx >= ?3 AND g.idx < ?4"
                        "   AND g.n_tokens > m.n_ctx ORDER BY g.idx LIMIT 1",
                        &st, "check game lengths", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, model_id);
    sqlite3_bind_int64(st, 2, dataset_id);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)spec->game_from);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)spec->game_to);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "analyses[%zu]: game %lld of dataset '%s' has %lld tokens, more than the "
                         "model's n_ctx (%lld); %s analyses whole games, so its games must fit "
                         "(e.g. chesslens games generate --max-tokens %lld)",
                         first_aggregate, (long long)sqlite3_column_int64(st, 0), spec->dataset,
                         (long long)sqlite3_column_int64(st, 1),
                         (long long)sqlite3_column_int64(st, 2),
                         coordinator_analysis_kind_name(spec->analyses[first_aggregate].kind),
                         (long long)sqlite3_column_int64(st, 2));
    } else if (r != SQLITE_DONE) {
        rc = store_fail(s->db, err, "sqlite3_step(check game lengths)");
    }
    store_stmt_done(st);
    return rc;
}

int coordinator_sweep_create(coordinator_store *s, const coordinator_spec *spec,
                             const char *submission_id, int64_t model_id, int64_t *sweep_id,
                             bool *existed, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_begin(s, err);
    if (rc != 0) {
        return rc;
    }
    if (submission_id != NULL) {
        bool found = false, same = false;
        int64_t id = 0;
        rc = find_submission(s, submission_id, &found, &id, &same, spec->canonical, err);
        if (rc != 0) {
            goto fail;
        }
        if (found) {
            store_rollback(s);
            if (!same) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "sweep: submission '%s' was made with another spec",
                                   submission_id);
            }
            *sweep_id = id;
            if (existed != NULL) {
                *existed = true;
            }
            return 0;
        }
    }
    int64_t dataset_id;
    uint64_t n_games;
    if ((rc = coordinator_dataset_find(s, spec->dataset, &dataset_id, &n_games, err)) != 0) {
        goto fail;
    }
    if (spec->game_to > n_games) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "games: [%llu, %llu) is beyond the %llu games of dataset '%s'",
                         (unsigned long long)spec->game_from, (unsigned long long)spec->game_to,
                         (unsigned long long)n_games, spec->dataset);
        goto fail;
    }
    if (model_id > 0 && (rc = check_game_lengths(s, spec, dataset_id, model_id, err)) != 0) {
        goto fail;
    }
    rc = store_stmt(s,
                    "INSERT INTO sweep (name, submission_id, spec, dataset_id, model_id, "
                    "game_from, game_to) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (name) DO NOTHING",
                    &st, "create sweep", err);
    if (rc != 0) {
        goto fail;
    }
    sqlite3_bind_text(st, 1, spec->name, -1, SQLITE_TRANSIENT);
    if (submission_id != NULL) {
        sqlite3_bind_text(st, 2, submission_id, -1, SQLITE_TRANSIENT);
    }
    sqlite3_bind_text(st, 3, spec->canonical, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, dataset_id);
    if (model_id > 0) {
        sqlite3_bind_int64(st, 5, model_id);
    }
    sqlite3_bind_int64(st, 6, (sqlite3_int64)spec->game_from);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)spec->game_to);
    if ((rc = store_step_done(s->db, st, "create sweep", err)) != 0) {
        goto fail;
    }
    if (sqlite3_changes(s->db) == 0) {
        rc = common_fail(err, COMMON_ERR_INVALID, "name: a sweep named '%s' exists", spec->name);
        goto fail;
    }
    int64_t id = sqlite3_last_insert_rowid(s->db);
    store_stmt_done(st);
    st = NULL;
    rc = store_stmt(s, "INSERT INTO job (sweep_id, idx, kind, params) VALUES (?, ?, ?, ?)", &st,
                    "create job", err);
    for (size_t i = 0; rc == 0 && i < spec->n_analyses; i++) {
        const coordinator_analysis *a = &spec->analyses[i];
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)i);
        sqlite3_bind_text(st, 3, coordinator_analysis_kind_name(a->kind), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, a->json, -1, SQLITE_TRANSIENT);
        rc = store_step_done(s->db, st, "create job", err);
    }
    if (rc != 0) {
        goto fail;
    }
    store_stmt_done(st);
    st = NULL;
    if ((rc = store_commit(s, err)) != 0) {
        goto fail;
    }
    *sweep_id = id;
    if (existed != NULL) {
        *existed = false;
    }
    return 0;

fail:
    store_stmt_done(st);
    store_rollback(s);
    return rc;
}

int coordinator_sweep_submit(coordinator_store *s, const char *json, size_t len,
                             const char *submission_id, int64_t model_id, int64_t *sweep_id,
                             bool *existed, char *err) {
    coordinator_spec *spec = NULL;
    int rc = coordinator_spec_parse(&spec, json, len, err);
    if (rc == 0) {
        rc = coordinator_sweep_create(s, spec, submission_id, model_id, sweep_id, existed, err);
    }
    coordinator_spec_destroy(&spec);
    return rc;
}

int coordinator_job_find(coordinator_store *s, int64_t sweep_id, size_t index, int64_t *job_id,
                         char *err) {
    sqlite3_stmt *st = NULL;
    int rc =
        store_stmt(s, "SELECT id FROM job WHERE sweep_id = ? AND idx = ?", &st, "find job", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, sweep_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)index);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *job_id = sqlite3_column_int64(st, 0);
    } else if (r == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "sweep %lld has no analysis %zu",
                         (long long)sweep_id, index);
    } else {
        rc = store_fail(s->db, err, "sqlite3_step(find job)");
    }
    store_stmt_done(st);
    return rc;
}

/* ---- workers ---- */

int coordinator_worker_seen(coordinator_store *s, const char *id, const char *info, int64_t now_ns,
                            char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "INSERT INTO worker (id, info, first_seen_ns, last_seen_ns) "
                        "VALUES (?1, ?2, ?3, ?3) ON CONFLICT (id) DO UPDATE SET "
                        "last_seen_ns = excluded.last_seen_ns, "
                        "info = coalesce(excluded.info, info)",
                        &st, "record worker", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (info != NULL) {
        sqlite3_bind_text(st, 2, info, -1, SQLITE_TRANSIENT);
    }
    sqlite3_bind_int64(st, 3, now_ns);
    rc = store_step_done(s->db, st, "record worker", err);
    store_stmt_done(st);
    return rc;
}
