/*
 * schema: the store's SQL schema, in one place, as the list of migration steps that build it.
 * Step i takes a database from PRAGMA user_version i - 1 to i; a new schema version is a new
 * step appended here (never an edit of an old one), so a database written by any earlier
 * version is brought forward on open, in one transaction. docs/STORE.md documents the result.
 *
 * The base tables (model, dataset, game, position, sweep, job, task, worker, patch_pair,
 * patch_value, legal_partial, neuron_partial, prediction) are the store's own business; the
 * views (games, game_positions, patch_effects, legal_stats, neuron_stats, predictions) are the
 * documented interface, with fixed names and leading columns. Aggregates are stored as
 * per-task partials (sums, counts, minima, maxima) that the views merge with SQL, so a merged
 * value does not depend on how the games were split into tasks.
 */
#include <stdio.h>

#include "coordinator/store_int.h"

/* 1: models, datasets of games and their token positions */
static const char *const step1[] = {
    "CREATE TABLE model ("
    "  id INTEGER PRIMARY KEY,"
    "  path TEXT NOT NULL,"
    "  sha256 TEXT NOT NULL," /* hex digest of model.safetensors */
    "  n_layers INTEGER NOT NULL, d_model INTEGER NOT NULL, n_heads INTEGER NOT NULL,"
    "  d_head INTEGER NOT NULL, d_mlp INTEGER NOT NULL, n_ctx INTEGER NOT NULL,"
    "  d_vocab INTEGER NOT NULL,"
    "  created_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)),"
    "  UNIQUE (path, sha256));",
    "CREATE TABLE dataset ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  source TEXT,"
    "  created_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)));",
    "CREATE TABLE game ("
    "  id INTEGER PRIMARY KEY,"
    "  dataset_id INTEGER NOT NULL REFERENCES dataset(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL," /* 0-based index of the game in its dataset */
    "  uci TEXT NOT NULL,"
    "  uci_hash INTEGER NOT NULL," /* FNV-1a 64 of uci, to find duplicates */
    "  n_tokens INTEGER NOT NULL,"
    "  source TEXT,"
    "  source_index INTEGER,"
    "  UNIQUE (dataset_id, idx));",
    "CREATE INDEX game_by_hash ON game(dataset_id, uci_hash);",
    "CREATE TABLE position ("
    "  game_id INTEGER NOT NULL REFERENCES game(id) ON DELETE CASCADE,"
    "  pos INTEGER NOT NULL,"
    "  token TEXT NOT NULL,"
    "  move_index INTEGER NOT NULL," /* -1 for <s> */
    "  phase INTEGER NOT NULL,"      /* chess_phase */
    "  n_legal INTEGER NOT NULL,"
    "  PRIMARY KEY (game_id, pos)) WITHOUT ROWID;",
    "CREATE VIEW games AS"
    "  SELECT d.name AS dataset, g.idx AS game, g.uci AS uci, g.n_tokens AS n_tokens,"
    "         g.source AS source, g.source_index AS source_index"
    "  FROM game g JOIN dataset d ON d.id = g.dataset_id;",
    "CREATE VIEW game_positions AS"
    "  SELECT d.name AS dataset, g.idx AS game, p.pos AS pos, p.token AS token,"
    "         p.move_index AS move_index,"
    "         CASE p.phase WHEN 0 THEN 'special' WHEN 1 THEN 'white_from'"
    "           WHEN 2 THEN 'white_to' WHEN 3 THEN 'black_from' WHEN 4 THEN 'black_to'"
    "           WHEN 5 THEN 'promotion' END AS phase,"
    "         p.n_legal AS n_legal"
    "  FROM position p JOIN game g ON g.id = p.game_id JOIN dataset d ON d.id = g.dataset_id;",
    NULL,
};

/* 2: sweeps, jobs, tasks with leases, workers, and the results of the four analyses */
static const char *const step2[] = {
    "CREATE TABLE sweep ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  submission_id TEXT UNIQUE,"
    "  spec TEXT NOT NULL," /* canonical JSON */
    "  dataset_id INTEGER NOT NULL REFERENCES dataset(id),"
    "  model_id INTEGER REFERENCES model(id),"
    "  game_from INTEGER NOT NULL,"
    "  game_to INTEGER NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'done', 'cancelled')),"
    "  created_at INTEGER NOT NULL DEFAULT (CAST(strftime('%s', 'now') AS INTEGER)));",
    "CREATE INDEX sweep_by_dataset ON sweep(dataset_id);",
    "CREATE INDEX sweep_by_model ON sweep(model_id);",
    "CREATE TABLE job ("
    "  id INTEGER PRIMARY KEY,"
    "  sweep_id INTEGER NOT NULL REFERENCES sweep(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL," /* the analysis' index in the spec */
    "  kind TEXT NOT NULL,"
    "  params TEXT NOT NULL," /* the analysis as canonical JSON */
    "  UNIQUE (sweep_id, idx));",
    "CREATE TABLE task ("
    "  id INTEGER PRIMARY KEY,"
    "  job_id INTEGER NOT NULL REFERENCES job(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  body BLOB,"
    "  state TEXT NOT NULL DEFAULT 'pending'"
    "    CHECK (state IN ('pending', 'leased', 'done', 'dead')),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"    /* dispatches so far */
    "  lease_epoch INTEGER NOT NULL DEFAULT 0," /* incremented by every lease */
    "  lease_deadline_ns INTEGER,"              /* CLOCK_MONOTONIC ns, as the caller gave it */
    "  worker TEXT,"
    "  last_error TEXT,"
    "  not_before_ns INTEGER NOT NULL DEFAULT 0," /* retry backoff */
    "  done_at INTEGER,"
    "  UNIQUE (job_id, key));",
    "CREATE INDEX task_by_state ON task(state, id);",
    "CREATE INDEX task_by_deadline ON task(lease_deadline_ns) WHERE state = 'leased';",
    "CREATE TABLE worker ("
    "  id TEXT PRIMARY KEY,"
    "  info TEXT,"
    "  first_seen_ns INTEGER NOT NULL,"
    "  last_seen_ns INTEGER NOT NULL);",
    "CREATE TABLE patch_pair ("
    "  id INTEGER PRIMARY KEY,"
    "  task_id INTEGER NOT NULL REFERENCES task(id) ON DELETE CASCADE,"
    "  seq INTEGER NOT NULL," /* the pair's place in its task's result */
    "  job_id INTEGER NOT NULL REFERENCES job(id) ON DELETE CASCADE,"
    "  game INTEGER NOT NULL,"
    "  cutoff INTEGER NOT NULL,"
    "  corrupt_pos INTEGER,"
    "  clean_token TEXT,"
    "  corrupt_token TEXT,"
    "  corrupt_game INTEGER,"
    "  metric TEXT NOT NULL,"
    "  normalized INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  labels TEXT," /* JSON array of the components of an "every" kind, else NULL */
    "  clean_metric REAL,"
    "  corrupted_metric REAL,"
    "  UNIQUE (task_id, seq));",
    "CREATE INDEX patch_pair_by_job ON patch_pair(job_id, game, cutoff);",
    "CREATE TABLE patch_value ("
    "  pair_id INTEGER NOT NULL REFERENCES patch_pair(id) ON DELETE CASCADE,"
    "  idx INTEGER NOT NULL," /* flat index in the kind's TL output */
    "  component INTEGER,"    /* index into patch_pair.labels */
    "  layer INTEGER NOT NULL,"
    "  pos INTEGER,"
    "  head INTEGER,"
    "  src_pos INTEGER,"
    "  value REAL,"
    "  PRIMARY KEY (pair_id, idx)) WITHOUT ROWID;",
    "CREATE TABLE legal_partial ("
    "  task_id INTEGER NOT NULL REFERENCES task(id) ON DELETE CASCADE,"
    "  job_id INTEGER NOT NULL REFERENCES job(id) ON DELETE CASCADE,"
    "  component TEXT NOT NULL,"
    "  pos INTEGER NOT NULL,"
    "  statistic INTEGER NOT NULL," /* INTERP_LEGAL_MIN_LEGAL .. INTERP_LEGAL_MEAN_ILLEGAL */
    "  sum REAL NOT NULL,"
    "  count INTEGER NOT NULL,"
    "  min REAL NOT NULL,"
    "  max REAL NOT NULL,"
    "  PRIMARY KEY (task_id, component, pos, statistic)) WITHOUT ROWID;",
    "CREATE INDEX legal_partial_by_job ON legal_partial(job_id, component, pos, statistic);",
    "CREATE TABLE neuron_partial ("
    "  task_id INTEGER NOT NULL REFERENCES task(id) ON DELETE CASCADE,"
    "  job_id INTEGER NOT NULL REFERENCES job(id) ON DELETE CASCADE,"
    "  layer INTEGER NOT NULL,"
    "  neuron INTEGER NOT NULL,"
    "  phase INTEGER NOT NULL," /* INTERP_NEURON_ALL .. INTERP_NEURON_BLACK_TO */
    "  sum REAL NOT NULL,"
    "  count INTEGER NOT NULL,"
    "  PRIMARY KEY (task_id, layer, neuron, phase)) WITHOUT ROWID;",
    "CREATE INDEX neuron_partial_by_job ON neuron_partial(job_id, layer, neuron, phase);",
    "CREATE TABLE prediction ("
    "  task_id INTEGER NOT NULL REFERENCES task(id) ON DELETE CASCADE,"
    "  job_id INTEGER NOT NULL REFERENCES job(id) ON DELETE CASCADE,"
    "  game INTEGER NOT NULL,"
    "  pos INTEGER NOT NULL,"
    "  rank INTEGER NOT NULL,"
    "  token TEXT NOT NULL,"
    "  logprob REAL,"
    "  legal INTEGER NOT NULL,"
    "  PRIMARY KEY (task_id, game, pos, rank)) WITHOUT ROWID;",
    "CREATE INDEX prediction_by_job ON prediction(job_id, game, pos);",
    "CREATE VIEW patch_effects AS"
    "  SELECT s.name AS sweep, pp.game AS game, pp.cutoff AS cutoff,"
    "         pp.corrupt_pos AS corrupt_pos, pp.clean_token AS clean_token,"
    "         pp.corrupt_token AS corrupt_token, pp.metric AS metric,"
    "         pp.normalized AS normalized, pp.kind AS kind,"
    "         CASE WHEN v.component IS NULL THEN NULL"
    "           ELSE json_extract(pp.labels, '$[' || v.component || ']') END AS component,"
    "         v.layer AS layer, v.pos AS pos, v.head AS head, v.value AS value,"
    "         v.src_pos AS src_pos, pp.corrupt_game AS corrupt_game, d.name AS dataset,"
    "         j.idx AS analysis, s.id AS sweep_id"
    "  FROM patch_value v JOIN patch_pair pp ON pp.id = v.pair_id"
    "  JOIN job j ON j.id = pp.job_id JOIN sweep s ON s.id = j.sweep_id"
    "  JOIN dataset d ON d.id = s.dataset_id;",
    "CREATE VIEW legal_stats AS"
    "  SELECT s.name AS sweep, lp.component AS component, lp.pos AS pos,"
    "         CASE lp.statistic WHEN 0 THEN 'min_legal' WHEN 1 THEN 'max_illegal'"
    "           WHEN 2 THEN 'mean_legal' WHEN 3 THEN 'mean_illegal' END AS statistic,"
    "         SUM(lp.sum) / SUM(lp.count) AS value, SUM(lp.count) AS count,"
    "         MIN(lp.min) AS min, MAX(lp.max) AS max, j.idx AS analysis, s.id AS sweep_id"
    "  FROM legal_partial lp JOIN job j ON j.id = lp.job_id JOIN sweep s ON s.id = j.sweep_id"
    /* grouped by the sweep's name (with the job's index, which is unique within it) so that
     * SQLite pushes a WHERE on sweep down into the aggregate instead of merging every sweep */
    "  GROUP BY s.name, j.idx, lp.component, lp.pos, lp.statistic;",
    "CREATE VIEW neuron_stats AS"
    "  SELECT s.name AS sweep, np.layer AS layer, np.neuron AS neuron,"
    "         CASE np.phase WHEN 0 THEN 'all' WHEN 1 THEN 'slice' WHEN 2 THEN 'white_from'"
    "           WHEN 3 THEN 'white_to' WHEN 4 THEN 'black_from' WHEN 5 THEN 'black_to'"
    "           END AS phase,"
    "         SUM(np.sum) / SUM(np.count) AS mean, SUM(np.count) AS count,"
    "         j.idx AS analysis, s.id AS sweep_id"
    "  FROM neuron_partial np JOIN job j ON j.id = np.job_id JOIN sweep s ON s.id = j.sweep_id"
    "  GROUP BY s.name, j.idx, np.layer, np.neuron, np.phase;",
    "CREATE VIEW predictions AS"
    "  SELECT s.name AS sweep, p.game AS game, p.pos AS pos, p.rank AS rank, p.token AS token,"
    "         p.logprob AS logprob, p.legal AS legal, j.idx AS analysis, s.id AS sweep_id"
    "  FROM prediction p JOIN job j ON j.id = p.job_id JOIN sweep s ON s.id = j.sweep_id;",
    NULL,
};

/* 3: the result rows each task stored, so progress queries need not count result tables */
static const char *const step3[] = {
    "ALTER TABLE task ADD COLUMN n_rows INTEGER NOT NULL DEFAULT 0;",
    NULL,
};

/* 4: the task table rebuilt with its state CHECK as comparisons: SQLite evaluates a CHECK's
 * IN list by building a temporary b-tree on every row written, which made each lease and
 * completion cost twice what its UPDATE does. Same columns, keys and indexes; rows copied. The
 * tables that reference task(id) keep referring to it by name (store_migrate runs with foreign
 * keys off, so dropping the old table deletes nothing else; legacy_alter_table keeps the rename
 * from re-checking the views against the table that is gone for a moment). */
static const char *const step4[] = {
    "CREATE TABLE task_v4 ("
    "  id INTEGER PRIMARY KEY,"
    "  job_id INTEGER NOT NULL REFERENCES job(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  body BLOB,"
    "  state TEXT NOT NULL DEFAULT 'pending'"
    "    CHECK (state = 'pending' OR state = 'leased' OR state = 'done' OR state = 'dead'),"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  lease_epoch INTEGER NOT NULL DEFAULT 0,"
    "  lease_deadline_ns INTEGER,"
    "  worker TEXT,"
    "  last_error TEXT,"
    "  not_before_ns INTEGER NOT NULL DEFAULT 0,"
    "  done_at INTEGER,"
    "  n_rows INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (job_id, key));",
    "INSERT INTO task_v4 (id, job_id, key, body, state, attempts, lease_epoch, lease_deadline_ns,"
    "  worker, last_error, not_before_ns, done_at, n_rows)"
    "  SELECT id, job_id, key, body, state, attempts, lease_epoch, lease_deadline_ns, worker,"
    "  last_error, not_before_ns, done_at, n_rows FROM task;",
    "DROP TABLE task;",
    "PRAGMA legacy_alter_table = ON;",
    "ALTER TABLE task_v4 RENAME TO task;",
    "PRAGMA legacy_alter_table = OFF;",
    "CREATE INDEX task_by_state ON task(state, id);",
    "CREATE INDEX task_by_deadline ON task(lease_deadline_ns) WHERE state = 'leased';",
    NULL,
};

/* 5: the index of task states replaced by partial indexes of the states that are looked up:
 * every lease and every completion moved a task's entry within task_by_state (a delete and an
 * insert, a quarter of what either write cost); now a lease removes one entry of task_pending
 * and a completion touches no state index. The claim walks task_pending in id order as it
 * walked task_by_state from ('pending', 0); dead tasks are listed through task_dead; the counts
 * by state per sweep read the tasks of the sweep's jobs by (job_id, key) either way. */
static const char *const step5[] = {
    "DROP INDEX task_by_state;",
    "CREATE INDEX task_pending ON task(id) WHERE state = 'pending';",
    "CREATE INDEX task_dead ON task(id) WHERE state = 'dead';",
    NULL,
};

static const char *const *const steps[] = {step1, step2, step3, step4, step5};

size_t store_schema_steps(void) {
    return sizeof steps / sizeof steps[0];
}

static int user_version(sqlite3 *db, int *out, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_prepare(db, "PRAGMA user_version", &st, "read user_version", err);
    if (rc != 0) {
        return rc;
    }
    if (sqlite3_step(st) != SQLITE_ROW) {
        rc = store_fail(db, err, "sqlite3_step(read user_version)");
    } else {
        *out = sqlite3_column_int(st, 0);
    }
    sqlite3_finalize(st);
    return rc;
}

int store_migrate(sqlite3 *db, int target, char *err) {
    if (target < 0 || (size_t)target > store_schema_steps()) {
        return common_fail(err, COMMON_ERR_INVALID, "store: no schema version %d", target);
    }
    int rc = store_exec(db, "BEGIN IMMEDIATE", "begin migration", err);
    if (rc != 0) {
        return rc;
    }
    int version = 0;
    if ((rc = user_version(db, &version, err)) != 0) {
        goto fail;
    }
    if (version > target) {
        rc = common_fail(err, COMMON_ERR_UNSUPPORTED,
                         "store: schema version %d is newer than this chesslens (%d)", version,
                         target);
        goto fail;
    }
    for (int v = version; v < target; v++) {
        char what[64];
        snprintf(what, sizeof what, "schema migration to version %d", v + 1);
        for (const char *const *sql = steps[v]; *sql != NULL; sql++) {
            if ((rc = store_exec(db, *sql, what, err)) != 0) {
                goto fail;
            }
        }
    }
    if (version != target) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", target);
        if ((rc = store_exec(db, sql, "set user_version", err)) != 0) {
            goto fail;
        }
    }
    return store_exec(db, "COMMIT", "commit migration", err);

fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}
