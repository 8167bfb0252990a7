/*
 * tasks: the task table's state machine and the results written with a completion.
 *
 * pending -> leased (claim: worker, lease_epoch + 1, attempts + 1, deadline) -> done (complete
 * with the current epoch, results in the same transaction) or back to pending / dead (failure
 * report or expired lease; dead once attempts reach max_attempts). The epoch fences stale
 * workers: a completion, heartbeat or failure that carries another epoch changes nothing. A
 * completion of a task already done stores nothing and is reported as such, so the caller can
 * acknowledge a duplicate exactly like the original. Result rows are keyed by their task as well
 * (patch_pair UNIQUE (task_id, seq), the partial tables' primary keys), and inserted with ON
 * CONFLICT DO NOTHING, so no path stores a task's results twice.
 */
#include <assert.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coordinator/store_int.h"

int coordinator_tasks_add(coordinator_store *s, int64_t job_id, const coordinator_task_def *tasks,
                          size_t n, size_t *n_added, char *err) {
    sqlite3_stmt *st = NULL;
    size_t added = 0;
    int rc = store_begin(s, err);
    if (rc != 0) {
        return rc;
    }
    rc = store_stmt(s,
                    "INSERT INTO task (job_id, key, body) VALUES (?, ?, ?) "
                    "ON CONFLICT (job_id, key) DO NOTHING",
                    &st, "add task", err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, job_id);
        sqlite3_bind_text(st, 2, tasks[i].key, -1, SQLITE_TRANSIENT);
        if (tasks[i].body_len > 0) {
            sqlite3_bind_blob64(st, 3, tasks[i].body, tasks[i].body_len, SQLITE_TRANSIENT);
        } else {
            sqlite3_bind_zeroblob(st, 3, 0);
        }
        rc = store_step_done(s->db, st, "add task", err);
        added += (size_t)sqlite3_changes(s->db);
    }
    store_stmt_done(st);
    if (rc == 0) {
        rc = store_commit(s, err);
    }
    if (rc != 0) {
        store_rollback(s);
        return rc;
    }
    if (n_added != NULL) {
        *n_added = added;
    }
    return 0;
}

void coordinator_leases_free(coordinator_lease *leases, size_t n) {
    for (size_t i = 0; leases != NULL && i < n; i++) {
        free(leases[i].key);
        free(leases[i].body);
    }
    free(leases);
}

/* Orders leases by task id (a preferred model's tasks are picked first). */
static int lease_cmp(const void *a, const void *b) {
    int64_t x = ((const coordinator_lease *)a)->task_id,
            y = ((const coordinator_lease *)b)->task_id;
    return (x > y) - (x < y);
}

/* The claim's query: pending tasks of active sweeps, lowest ids first; with ?3 only those of
 * sweeps whose model's weights have that SHA-256. It walks the partial index task_pending in id
 * order and stops after ?2 rows, so it costs the tasks it returns (plus those skipped for their
 * backoff or their sweep), not the queue's length. */
#define CLAIM_SQL(extra)                                                                           \
    "SELECT t.id, t.job_id, j.sweep_id, j.idx, t.key, t.body, t.lease_epoch, t.attempts "          \
    "FROM task t JOIN job j ON j.id = t.job_id JOIN sweep w ON w.id = j.sweep_id " extra           \
    "WHERE t.state = 'pending' AND t.not_before_ns <= ?1 AND w.state = 'active' "                  \
    "ORDER BY t.id LIMIT ?2"

/* Picks up to max - *n more tasks into leases[max] (the caller's transaction), then leases
 * them with an UPDATE over each range of consecutive ids. Reading first and writing after keeps
 * the writes out of the index the query walks; and an UPDATE over a rowid range is done in one
 * pass, where one UPDATE over an IN (SELECT ...) list with RETURNING built three temporary
 * b-trees per claim. The epoch and attempt each lease reports are the row's values + 1, as the
 * UPDATE writes them. */
static int claim_some(coordinator_store *s, const char *worker, size_t max, int64_t now_ns,
                      int64_t deadline_ns, const char *prefer, coordinator_lease *leases, size_t *n,
                      char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        prefer != NULL ? CLAIM_SQL("JOIN model m ON m.id = w.model_id "
                                                   "AND m.sha256 = ?3 ")
                                       : CLAIM_SQL(""),
                        &st, "pick tasks", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, now_ns);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)(max - *n));
    if (prefer != NULL) {
        sqlite3_bind_text(st, 3, prefer, -1, SQLITE_TRANSIENT);
    }
    size_t first = *n;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        assert(*n < max); /* LIMIT */
        coordinator_lease *l = &leases[(*n)++];
        l->task_id = sqlite3_column_int64(st, 0);
        l->job_id = sqlite3_column_int64(st, 1);
        l->sweep_id = sqlite3_column_int64(st, 2);
        l->analysis = (size_t)sqlite3_column_int64(st, 3);
        const char *key = (const char *)sqlite3_column_text(st, 4);
        l->key = strdup(key != NULL ? key : "");
        l->body_len = (size_t)sqlite3_column_bytes(st, 5);
        l->body = malloc(l->body_len > 0 ? l->body_len : 1);
        if (l->key == NULL || l->body == NULL) {
            store_stmt_done(st);
            return common_fail(err, COMMON_ERR_NOMEM, "claim: out of memory");
        }
        if (l->body_len > 0) {
            memcpy(l->body, sqlite3_column_blob(st, 5), l->body_len);
        }
        l->epoch = (uint64_t)sqlite3_column_int64(st, 6) + 1;
        l->attempt = (uint32_t)sqlite3_column_int64(st, 7) + 1;
        l->deadline_ns = deadline_ns;
    }
    if (r != SQLITE_DONE) {
        rc = store_fail(s->db, err, "sqlite3_step(pick tasks)");
    }
    store_stmt_done(st);
    /* one UPDATE per run of consecutive ids (the query returns ids in increasing order, and
     * within a run every id between the first and the last was picked), so a claim of the
     * queue's head costs one statement, not one per task */
    for (size_t i = first; rc == 0 && i < *n;) {
        size_t j = i + 1;
        while (j < *n && leases[j].task_id == leases[j - 1].task_id + 1) {
            j++;
        }
        if ((rc = store_stmt(s,
                             "UPDATE task SET state = 'leased', worker = ?1, "
                             "lease_epoch = lease_epoch + 1, attempts = attempts + 1, "
                             "lease_deadline_ns = ?2 WHERE id BETWEEN ?3 AND ?4",
                             &st, "lease tasks", err)) != 0) {
            break;
        }
        sqlite3_bind_text(st, 1, worker, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, deadline_ns);
        sqlite3_bind_int64(st, 3, leases[i].task_id);
        sqlite3_bind_int64(st, 4, leases[j - 1].task_id);
        rc = store_step_done(s->db, st, "lease tasks", err);
        if (rc == 0 && (size_t)sqlite3_changes(s->db) != j - i) {
            rc = common_fail(err, COMMON_ERR_IO, "lease tasks %lld..%lld: %d rows changed, not %zu",
                             (long long)leases[i].task_id, (long long)leases[j - 1].task_id,
                             sqlite3_changes(s->db), j - i);
        }
        store_stmt_done(st);
        i = j;
    }
    return rc;
}

int coordinator_tasks_claim(coordinator_store *s, const char *worker, size_t max, int64_t now_ns,
                            int64_t deadline_ns, coordinator_lease **out, size_t *n_out,
                            char *err) {
    return coordinator_tasks_claim_preferring(s, worker, max, now_ns, deadline_ns, NULL, out, n_out,
                                              err);
}

int coordinator_tasks_claim_preferring(coordinator_store *s, const char *worker, size_t max,
                                       int64_t now_ns, int64_t deadline_ns,
                                       const char *prefer_sha256, coordinator_lease **out,
                                       size_t *n_out, char *err) {
    coordinator_lease *leases = NULL;
    size_t n = 0;
    *n_out = 0;
    *out = NULL;
    if (max == 0) {
        return 0;
    }
    /* Picked and leased in one transaction (a savepoint inside a batch): a dispatch is the
     * service's most frequent write. */
    int rc = store_begin(s, err);
    if (rc != 0) {
        return rc;
    }
    leases = calloc(max, sizeof *leases);
    if (leases == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "claim: out of memory");
        goto fail;
    }
    bool prefer = prefer_sha256 != NULL && prefer_sha256[0] != '\0';
    if (prefer && (rc = claim_some(s, worker, max, now_ns, deadline_ns, prefer_sha256, leases, &n,
                                   err)) != 0) {
        goto fail;
    }
    if (n < max &&
        (rc = claim_some(s, worker, max, now_ns, deadline_ns, NULL, leases, &n, err)) != 0) {
        goto fail;
    }
    if ((rc = store_commit(s, err)) != 0) {
        goto fail;
    }
    if (n == 0) {
        free(leases);
        leases = NULL;
    } else {
        qsort(leases, n, sizeof *leases, lease_cmp);
    }
    *out = leases;
    *n_out = n;
    return 0;

fail:
    store_rollback(s);
    coordinator_leases_free(leases, n);
    return rc;
}

/* The task's state and epoch (inside the caller's transaction). */
static int task_state(coordinator_store *s, int64_t task_id, char state[8], uint64_t *epoch,
                      int64_t *job_id, uint32_t *attempts, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s, "SELECT state, lease_epoch, job_id, attempts FROM task WHERE id = ?",
                        &st, "read task", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, task_id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        snprintf(state, 8, "%s", (const char *)sqlite3_column_text(st, 0));
        *epoch = (uint64_t)sqlite3_column_int64(st, 1);
        *job_id = sqlite3_column_int64(st, 2);
        *attempts = (uint32_t)sqlite3_column_int64(st, 3);
    } else if (r == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "task %lld not found", (long long)task_id);
    } else {
        rc = store_fail(s->db, err, "sqlite3_step(read task)");
    }
    store_stmt_done(st);
    return rc;
}

/* Begins a transaction and classifies the report: *status STORED when the task is leased with
 * epoch (the transaction stays open), else ALREADY_STORED / FENCED (rolled back). */
static int begin_fenced(coordinator_store *s, int64_t task_id, uint64_t epoch,
                        coordinator_fence *status, int64_t *job_id, uint32_t *attempts, char *err) {
    int rc = store_begin(s, err);
    if (rc != 0) {
        return rc;
    }
    char state[8] = "";
    uint64_t current = 0;
    if ((rc = task_state(s, task_id, state, &current, job_id, attempts, err)) != 0) {
        store_rollback(s);
        return rc;
    }
    if (strcmp(state, "done") == 0) {
        *status = COORDINATOR_ALREADY_STORED;
    } else if (strcmp(state, "leased") != 0 || current != epoch) {
        *status = COORDINATOR_FENCED;
    } else {
        *status = COORDINATOR_STORED;
        return 0;
    }
    store_rollback(s);
    return 0;
}

/* What a report about a task met when its fenced statement changed nothing: ALREADY_STORED
 * when the task is done, else FENCED (NOT_FOUND: no such task). */
static int classify(coordinator_store *s, int64_t task_id, coordinator_fence *status, char *err) {
    char state[8] = "";
    uint64_t epoch = 0;
    int64_t job_id = 0;
    uint32_t attempts = 0;
    int rc = task_state(s, task_id, state, &epoch, &job_id, &attempts, err);
    if (rc == 0) {
        *status = strcmp(state, "done") == 0 ? COORDINATOR_ALREADY_STORED : COORDINATOR_FENCED;
    }
    return rc;
}

/* Runs st, a fenced UPDATE (its WHERE clause holds the fence: id, state 'leased' and
 * lease_epoch), whose parameters are bound; *status STORED when it changed the task, else
 * classify's answer. One statement is atomic by itself, so it needs no transaction or savepoint
 * of its own. */
static int run_fenced(coordinator_store *s, sqlite3_stmt *st, int64_t task_id, const char *what,
                      coordinator_fence *status, char *err) {
    int rc = store_step_done(s->db, st, what, err);
    int changed = rc == 0 ? sqlite3_changes(s->db) : 0;
    store_stmt_done(st);
    if (rc != 0) {
        return rc;
    }
    if (changed > 0) {
        *status = COORDINATOR_STORED;
        return 0;
    }
    return classify(s, task_id, status, err);
}

int coordinator_task_extend(coordinator_store *s, int64_t task_id, uint64_t epoch,
                            int64_t deadline_ns, coordinator_fence *status, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "UPDATE task SET lease_deadline_ns = ?1 "
                        "WHERE id = ?2 AND state = 'leased' AND lease_epoch = ?3",
                        &st, "extend lease", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, deadline_ns);
    sqlite3_bind_int64(st, 2, task_id);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)epoch);
    return run_fenced(s, st, task_id, "extend lease", status, err);
}

int coordinator_task_fail(coordinator_store *s, int64_t task_id, uint64_t epoch, const char *error,
                          uint32_t max_attempts, int64_t not_before_ns, coordinator_fence *status,
                          char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "UPDATE task SET state = CASE WHEN ?1 > 0 AND attempts >= ?1 "
                        "THEN 'dead' ELSE 'pending' END, last_error = ?2, not_before_ns = ?3, "
                        "worker = NULL, lease_deadline_ns = NULL "
                        "WHERE id = ?4 AND state = 'leased' AND lease_epoch = ?5",
                        &st, "fail task", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, max_attempts);
    sqlite3_bind_text(st, 2, error != NULL ? error : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, not_before_ns);
    sqlite3_bind_int64(st, 4, task_id);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)epoch);
    return run_fenced(s, st, task_id, "fail task", status, err);
}

int coordinator_task_return(coordinator_store *s, int64_t task_id, uint64_t epoch,
                            coordinator_fence *status, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "UPDATE task SET state = 'pending', attempts = max(attempts - 1, 0), "
                        "worker = NULL, lease_deadline_ns = NULL "
                        "WHERE id = ?1 AND state = 'leased' AND lease_epoch = ?2",
                        &st, "return task", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, task_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)epoch);
    return run_fenced(s, st, task_id, "return task", status, err);
}

int coordinator_tasks_expire(coordinator_store *s, int64_t now_ns, uint32_t max_attempts,
                             int64_t backoff_base_ns, int64_t backoff_cap_ns, size_t *n,
                             char *err) {
    sqlite3_stmt *st = NULL;
    /* full jitter: uniform in [0, min(cap, base * 2^(attempts-1))), drawn by SQLite per task */
    int rc = store_stmt(s,
                        "UPDATE task SET state = CASE WHEN ?1 > 0 AND attempts >= ?1 "
                        "THEN 'dead' ELSE 'pending' END, last_error = 'lease expired', "
                        "worker = NULL, lease_deadline_ns = NULL, "
                        "not_before_ns = CASE WHEN ?3 > 0 THEN ?2 + abs(random() % "
                        "max(1, min(?4, ?3 << min(max(attempts - 1, 0), 40)))) ELSE 0 END "
                        "WHERE state = 'leased' AND lease_deadline_ns < ?2",
                        &st, "expire leases", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, max_attempts);
    sqlite3_bind_int64(st, 2, now_ns);
    sqlite3_bind_int64(st, 3, backoff_base_ns);
    sqlite3_bind_int64(st, 4, backoff_cap_ns);
    rc = store_step_done(s->db, st, "expire leases", err);
    store_stmt_done(st);
    if (rc == 0 && n != NULL) {
        *n = (size_t)sqlite3_changes(s->db);
    }
    return rc;
}

int coordinator_sweep_progress_get(coordinator_store *s, int64_t sweep_id,
                                   coordinator_sweep_progress *out, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "SELECT t.state, count(*), min(t.not_before_ns) FROM task t "
                        "JOIN job j ON j.id = t.job_id WHERE j.sweep_id = ?1 GROUP BY t.state",
                        &st, "sweep progress", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, sweep_id);
    coordinator_sweep_progress p = {0, 0, 0, 0, 0};
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 0);
        uint64_t n = (uint64_t)sqlite3_column_int64(st, 1);
        if (strcmp(state, "pending") == 0) {
            p.pending = n;
            p.next_not_before_ns = sqlite3_column_int64(st, 2);
        } else if (strcmp(state, "leased") == 0) {
            p.leased = n;
        } else if (strcmp(state, "done") == 0) {
            p.done = n;
        } else {
            p.dead = n;
        }
    }
    if (step != SQLITE_DONE) {
        rc = store_fail(s->db, err, "sqlite3_step(sweep progress)");
    }
    store_stmt_done(st);
    if (rc == 0) {
        *out = p;
    }
    return rc;
}

/* ---- results ---- */

/* Where each axis of a patch kind's output goes. */
enum { AX_COMPONENT, AX_LAYER, AX_POS, AX_HEAD, AX_SRC, AX_N };

static int parse_axes(const char *axes, const model_shape *shape, int map[MODEL_MAX_DIMS],
                      char *err) {
    char buf[64];
    snprintf(buf, sizeof buf, "%s", axes);
    int n = 0;
    bool layer = false;
    for (char *save = NULL, *a = strtok_r(buf, ",", &save); a != NULL;
         a = strtok_r(NULL, ",", &save)) {
        if (n == MODEL_MAX_DIMS) {
            return common_fail(err, COMMON_ERR_INVALID, "patch result: too many axes '%s'", axes);
        }
        if (strcmp(a, "component") == 0) {
            map[n] = AX_COMPONENT;
        } else if (strcmp(a, "layer") == 0) {
            map[n] = AX_LAYER;
            layer = true;
        } else if (strcmp(a, "pos") == 0 || strcmp(a, "dest_pos") == 0) {
            map[n] = AX_POS;
        } else if (strcmp(a, "head") == 0) {
            map[n] = AX_HEAD;
        } else if (strcmp(a, "src_pos") == 0) {
            map[n] = AX_SRC;
        } else {
            return common_fail(err, COMMON_ERR_INVALID, "patch result: unknown axis '%s'", a);
        }
        n++;
    }
    if (n != shape->ndim || !layer) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "patch result: axes '%s' do not match a shape of %d dimensions", axes,
                           shape->ndim);
    }
    return 0;
}

/* The labels "a,b,c" as a JSON array (caller frees), or NULL for "". */
static int labels_json(const char *labels, char **out, char *err) {
    *out = NULL;
    if (labels[0] == '\0') {
        return 0;
    }
    char buf[128];
    snprintf(buf, sizeof buf, "%s", labels);
    json_t *arr = json_array();
    for (char *save = NULL, *l = strtok_r(buf, ",", &save); arr != NULL && l != NULL;
         l = strtok_r(NULL, ",", &save)) {
        json_array_append_new(arr, json_string(l));
    }
    *out = arr != NULL ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return *out != NULL ? 0 : common_fail(err, COMMON_ERR_NOMEM, "patch result: out of memory");
}

static void bind_text_or_null(sqlite3_stmt *st, int i, const char *text) {
    if (text != NULL) {
        sqlite3_bind_text(st, i, text, -1, SQLITE_TRANSIENT);
    } else {
        sqlite3_bind_null(st, i);
    }
}

static int put_patch(coordinator_store *s, int64_t task_id, int64_t job_id,
                     const coordinator_patch_batch *b, char *err) {
    sqlite3_stmt *pair = NULL, *val = NULL;
    char *labels = NULL;
    int rc;
    if ((rc = store_stmt(s,
                         "INSERT INTO patch_pair (task_id, seq, job_id, game, cutoff, "
                         "corrupt_pos, clean_token, corrupt_token, corrupt_game, metric, "
                         "normalized, kind, labels, clean_metric, corrupted_metric) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (task_id, seq) DO NOTHING",
                         &pair, "insert patch pair", err)) != 0 ||
        (rc = store_stmt(s,
                         "INSERT INTO patch_value (pair_id, idx, component, layer, pos, head, "
                         "src_pos, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT DO NOTHING",
                         &val, "insert patch value", err)) != 0) {
        goto done;
    }
    const char *kind = interp_patch_kind_name(b->kind);
    for (size_t i = 0; i < b->n; i++) {
        const interp_patch_result *r = b->result[i];
        int map[MODEL_MAX_DIMS];
        if ((rc = parse_axes(r->axes, &r->shape, map, err)) != 0 ||
            (rc = labels_json(r->labels, &labels, err)) != 0) {
            goto done;
        }
        sqlite3_reset(pair);
        sqlite3_bind_int64(pair, 1, task_id);
        sqlite3_bind_int64(pair, 2, (sqlite3_int64)i);
        sqlite3_bind_int64(pair, 3, job_id);
        sqlite3_bind_int64(pair, 4, (sqlite3_int64)b->game[i]);
        sqlite3_bind_int64(pair, 5, b->cutoff[i]);
        if (b->corrupt_pos[i] >= 0) {
            sqlite3_bind_int64(pair, 6, b->corrupt_pos[i]);
        } else {
            sqlite3_bind_null(pair, 6);
        }
        bind_text_or_null(pair, 7, b->clean_token != NULL ? b->clean_token[i] : NULL);
        bind_text_or_null(pair, 8, b->corrupt_token != NULL ? b->corrupt_token[i] : NULL);
        if (b->corrupt_game != NULL && b->corrupt_game[i] >= 0) {
            sqlite3_bind_int64(pair, 9, b->corrupt_game[i]);
        } else {
            sqlite3_bind_null(pair, 9);
        }
        sqlite3_bind_text(pair, 10, b->metric[i], -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(pair, 11, b->normalized != NULL && b->normalized[i]);
        sqlite3_bind_text(pair, 12, kind, -1, SQLITE_STATIC);
        bind_text_or_null(pair, 13, labels);
        sqlite3_bind_double(pair, 14, r->clean_metric);
        sqlite3_bind_double(pair, 15, r->corrupted_metric);
        if ((rc = store_step_done(s->db, pair, "insert patch pair", err)) != 0) {
            goto done;
        }
        free(labels);
        labels = NULL;
        if (sqlite3_changes(s->db) == 0) {
            continue; /* stored before: its values too */
        }
        int64_t pair_id = sqlite3_last_insert_rowid(s->db);
        size_t numel = model_shape_numel(&r->shape);
        for (size_t idx = 0; idx < numel; idx++) {
            long coord[AX_N] = {-1, -1, -1, -1, -1};
            size_t rest = idx;
            for (int a = r->shape.ndim - 1; a >= 0; a--) {
                coord[map[a]] = (long)(rest % r->shape.dims[a]);
                rest /= r->shape.dims[a];
            }
            sqlite3_reset(val);
            sqlite3_bind_int64(val, 1, pair_id);
            sqlite3_bind_int64(val, 2, (sqlite3_int64)idx);
            for (int c = 0; c < AX_N; c++) {
                if (coord[c] >= 0) {
                    sqlite3_bind_int64(val, 3 + c, coord[c]);
                } else {
                    sqlite3_bind_null(val, 3 + c);
                }
            }
            sqlite3_bind_double(val, 8, (double)r->values[idx]);
            if ((rc = store_step_done(s->db, val, "insert patch value", err)) != 0) {
                goto done;
            }
        }
    }

done:
    free(labels);
    store_stmt_done(pair);
    store_stmt_done(val);
    return rc;
}

static int put_legal(coordinator_store *s, int64_t task_id, int64_t job_id,
                     const interp_legal_stats *ls, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "INSERT INTO legal_partial (task_id, job_id, component, pos, statistic, "
                        "sum, count, min, max) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT DO NOTHING",
                        &st, "insert legal partial", err);
    size_t cells = ls->n_comp * ls->T;
    for (size_t c = 0; rc == 0 && c < ls->n_comp; c++) {
        for (size_t t = 0; rc == 0 && t < ls->T; t++) {
            uint64_t count = ls->count[c * ls->T + t];
            if (count == 0) {
                continue;
            }
            for (int k = INTERP_LEGAL_MIN_LEGAL; rc == 0 && k <= INTERP_LEGAL_MEAN_ILLEGAL; k++) {
                size_t at = (size_t)k * cells + c * ls->T + t;
                sqlite3_reset(st);
                sqlite3_bind_int64(st, 1, task_id);
                sqlite3_bind_int64(st, 2, job_id);
                sqlite3_bind_text(st, 3, ls->labels[c], -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 4, (sqlite3_int64)t);
                sqlite3_bind_int(st, 5, k);
                sqlite3_bind_double(st, 6, ls->sum[at]);
                sqlite3_bind_int64(st, 7, (sqlite3_int64)count);
                sqlite3_bind_double(st, 8, (double)ls->min[at]);
                sqlite3_bind_double(st, 9, (double)ls->max[at]);
                rc = store_step_done(s->db, st, "insert legal partial", err);
            }
        }
    }
    store_stmt_done(st);
    return rc;
}

static int put_neurons(coordinator_store *s, int64_t task_id, int64_t job_id,
                       const interp_neuron_stats *ns, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "INSERT INTO neuron_partial (task_id, job_id, layer, neuron, phase, sum, "
                        "count) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        &st, "insert neuron partial", err);
    for (int g = 0; rc == 0 && g < INTERP_NEURON_N_GROUPS; g++) {
        if (ns->count[g] == 0) {
            continue;
        }
        for (size_t l = 0; rc == 0 && l < ns->L; l++) {
            for (size_t m = 0; rc == 0 && m < ns->M; m++) {
                sqlite3_reset(st);
                sqlite3_bind_int64(st, 1, task_id);
                sqlite3_bind_int64(st, 2, job_id);
                sqlite3_bind_int64(st, 3, (sqlite3_int64)l);
                sqlite3_bind_int64(st, 4, (sqlite3_int64)m);
                sqlite3_bind_int(st, 5, g);
                sqlite3_bind_double(st, 6, ns->sum[((size_t)g * ns->L + l) * ns->M + m]);
                sqlite3_bind_int64(st, 7, (sqlite3_int64)ns->count[g]);
                rc = store_step_done(s->db, st, "insert neuron partial", err);
            }
        }
    }
    store_stmt_done(st);
    return rc;
}

static int put_predictions(coordinator_store *s, int64_t task_id, int64_t job_id,
                           const coordinator_prediction_batch *b, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "INSERT INTO prediction (task_id, job_id, game, pos, rank, token, "
                        "logprob, legal) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        &st, "insert prediction", err);
    for (size_t i = 0; rc == 0 && i < b->n; i++) {
        sqlite3_reset(st);
        sqlite3_bind_int64(st, 1, task_id);
        sqlite3_bind_int64(st, 2, job_id);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)b->game[i]);
        sqlite3_bind_int64(st, 4, b->pos[i]);
        sqlite3_bind_int64(st, 5, b->rank[i]);
        sqlite3_bind_text(st, 6, b->token[i], -1, SQLITE_TRANSIENT);
        sqlite3_bind_double(st, 7, (double)b->logprob[i]);
        sqlite3_bind_int(st, 8, b->legal[i] != 0);
        rc = store_step_done(s->db, st, "insert prediction", err);
    }
    store_stmt_done(st);
    return rc;
}

/* Whether results hold anything to store. */
static bool has_results(const coordinator_results *r) {
    return r != NULL &&
           (r->patch != NULL || r->legal != NULL || r->neurons != NULL || r->predictions != NULL);
}

int coordinator_task_complete(coordinator_store *s, int64_t task_id, uint64_t epoch,
                              const coordinator_results *results, coordinator_fence *status,
                              char *err) {
    sqlite3_stmt *st = NULL;
    int rc;
    if (!has_results(results)) {
        /* nothing to insert: marking it done is one fenced statement */
        rc = store_stmt(s,
                        "UPDATE task SET state = 'done', lease_deadline_ns = NULL, n_rows = 0, "
                        "done_at = ?1 WHERE id = ?2 AND state = 'leased' AND lease_epoch = ?3",
                        &st, "complete task", err);
        if (rc != 0) {
            return rc;
        }
        sqlite3_bind_int64(st, 1, (sqlite3_int64)time(NULL));
        sqlite3_bind_int64(st, 2, task_id);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)epoch);
        return run_fenced(s, st, task_id, "complete task", status, err);
    }
    int64_t job_id = 0;
    uint32_t attempts = 0;
    rc = begin_fenced(s, task_id, epoch, status, &job_id, &attempts, err);
    if (rc != 0 || *status != COORDINATOR_STORED) {
        return rc;
    }
    sqlite3_int64 changes_before = sqlite3_total_changes64(s->db);
    if (rc == 0 && results->patch != NULL) {
        rc = put_patch(s, task_id, job_id, results->patch, err);
    }
    if (rc == 0 && results->legal != NULL) {
        rc = put_legal(s, task_id, job_id, results->legal, err);
    }
    if (rc == 0 && results->neurons != NULL) {
        rc = put_neurons(s, task_id, job_id, results->neurons, err);
    }
    if (rc == 0 && results->predictions != NULL) {
        rc = put_predictions(s, task_id, job_id, results->predictions, err);
    }
    if (rc == 0) {
        rc = store_stmt(s,
                        "UPDATE task SET state = 'done', lease_deadline_ns = NULL, n_rows = ?1, "
                        "done_at = ?2 WHERE id = ?3",
                        &st, "complete task with results", err);
    }
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, sqlite3_total_changes64(s->db) - changes_before);
        sqlite3_bind_int64(st, 2, (sqlite3_int64)time(NULL));
        sqlite3_bind_int64(st, 3, task_id);
        rc = store_step_done(s->db, st, "complete task", err);
    }
    store_stmt_done(st);
    if (rc == 0) {
        rc = store_commit(s, err);
    }
    if (rc != 0) {
        store_rollback(s);
    }
    return rc;
}
