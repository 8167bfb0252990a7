/*
 * sweeps: what the service's clients ask of sweeps as a whole: find one by name, list them with
 * their task counts and dead tasks, cancel one, requeue its dead tasks; and what dispatch
 * needs of a sweep (its spec and model), and the re-arming of leases at start.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/store_int.h"

static char *dup_text(sqlite3_stmt *st, int col) {
    const char *t = (const char *)sqlite3_column_text(st, col);
    return strdup(t != NULL ? t : "");
}

int coordinator_model_limits(coordinator_store *s, int64_t model_id, size_t *n_ctx, size_t *d_vocab,
                             char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s, "SELECT n_ctx, d_vocab FROM model WHERE id = ?", &st, "read model", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, model_id);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *n_ctx = (size_t)sqlite3_column_int64(st, 0);
        *d_vocab = (size_t)sqlite3_column_int64(st, 1);
    } else if (r == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "no model with id %lld", (long long)model_id);
    } else {
        rc = store_fail(s->db, err, "sqlite3_step(read model)");
    }
    store_stmt_done(st);
    return rc;
}

int coordinator_sweep_find(coordinator_store *s, const char *name, int64_t *id, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s, "SELECT id FROM sweep WHERE name = ?", &st, "find sweep", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
    } else if (r == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "no sweep named '%s'", name);
    } else {
        rc = store_fail(s->db, err, "sqlite3_step(find sweep)");
    }
    store_stmt_done(st);
    return rc;
}

/* Index of the sweep with this id in list[n], growing the list when it is new. */
static coordinator_sweep_info *info_of(coordinator_sweep_info *list, size_t n, int64_t id) {
    for (size_t i = n; i-- > 0;) {
        if (list[i].id == id) {
            return &list[i];
        }
    }
    return NULL;
}

int coordinator_sweeps_list(coordinator_store *s, int64_t sweep_id, coordinator_sweep_info **out,
                            size_t *n_out, char *err) {
    sqlite3_stmt *sw = NULL, *counts = NULL;
    coordinator_sweep_info *list = NULL;
    size_t n = 0, cap = 0;
    int rc = store_stmt(s,
                        "SELECT id, name, state, created_at FROM sweep "
                        "WHERE ?1 = 0 OR id = ?1 ORDER BY id",
                        &sw, "list sweeps", err);
    if (rc == 0) {
        rc = store_stmt(s,
                        "SELECT j.sweep_id, t.state, count(*), min(t.not_before_ns), "
                        "sum(t.n_rows) FROM task t JOIN job j ON j.id = t.job_id "
                        "WHERE ?1 = 0 OR j.sweep_id = ?1 GROUP BY j.sweep_id, t.state",
                        &counts, "count tasks", err);
    }
    if (rc != 0) {
        goto done;
    }
    sqlite3_bind_int64(sw, 1, sweep_id);
    int r;
    while ((r = sqlite3_step(sw)) == SQLITE_ROW) {
        if (n == cap) {
            size_t c = cap > 0 ? 2 * cap : 16;
            coordinator_sweep_info *l = realloc(list, c * sizeof *l);
            if (l == NULL) {
                rc = common_fail(err, COMMON_ERR_NOMEM, "list sweeps: out of memory");
                goto done;
            }
            list = l;
            cap = c;
        }
        coordinator_sweep_info *info = &list[n++];
        memset(info, 0, sizeof *info);
        info->id = sqlite3_column_int64(sw, 0);
        snprintf(info->name, sizeof info->name, "%s", (const char *)sqlite3_column_text(sw, 1));
        info->cancelled = strcmp((const char *)sqlite3_column_text(sw, 2), "cancelled") == 0;
        info->created_at = sqlite3_column_int64(sw, 3);
    }
    if (r != SQLITE_DONE) {
        rc = store_fail(s->db, err, "sqlite3_step(list sweeps)");
        goto done;
    }
    sqlite3_bind_int64(counts, 1, sweep_id);
    while ((r = sqlite3_step(counts)) == SQLITE_ROW) {
        coordinator_sweep_info *info = info_of(list, n, sqlite3_column_int64(counts, 0));
        if (info == NULL) {
            continue;
        }
        const char *state = (const char *)sqlite3_column_text(counts, 1);
        uint64_t c = (uint64_t)sqlite3_column_int64(counts, 2);
        coordinator_sweep_progress *p = &info->progress;
        if (strcmp(state, "pending") == 0) {
            p->pending = c;
            p->next_not_before_ns = sqlite3_column_int64(counts, 3);
        } else if (strcmp(state, "leased") == 0) {
            p->leased = c;
        } else if (strcmp(state, "done") == 0) {
            p->done = c;
        } else {
            p->dead = c;
        }
        info->rows += (uint64_t)sqlite3_column_int64(counts, 4);
    }
    if (r != SQLITE_DONE) {
        rc = store_fail(s->db, err, "sqlite3_step(count tasks)");
        goto done;
    }
    if (sweep_id != 0 && n == 0) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "no sweep with id %lld", (long long)sweep_id);
    }
done:
    store_stmt_done(sw);
    store_stmt_done(counts);
    if (rc != 0) {
        free(list);
        return rc;
    }
    *out = list;
    *n_out = n;
    return 0;
}

int coordinator_sweep_dispatch_info(coordinator_store *s, int64_t sweep_id, char **spec,
                                    char **model_path, char model_sha256[65], char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "SELECT w.spec, m.path, m.sha256 FROM sweep w "
                        "LEFT JOIN model m ON m.id = w.model_id WHERE w.id = ?",
                        &st, "read sweep", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, sweep_id);
    int r = sqlite3_step(st);
    if (r == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "no sweep with id %lld", (long long)sweep_id);
    } else if (r != SQLITE_ROW) {
        rc = store_fail(s->db, err, "sqlite3_step(read sweep)");
    } else if (sqlite3_column_type(st, 1) == SQLITE_NULL) {
        rc = common_fail(err, COMMON_ERR_INVALID, "sweep %lld has no model recorded",
                         (long long)sweep_id);
    } else {
        char *sp = dup_text(st, 0), *mp = dup_text(st, 1);
        const char *sha = (const char *)sqlite3_column_text(st, 2);
        if (sp == NULL || mp == NULL || sha == NULL || strlen(sha) != 64) {
            free(sp);
            free(mp);
            rc = common_fail(
                err, sha == NULL || strlen(sha) == 64 ? COMMON_ERR_NOMEM : COMMON_ERR_INVALID,
                "read sweep %lld: %s", (long long)sweep_id,
                sha == NULL || strlen(sha) == 64 ? "out of memory" : "model digest malformed");
        } else {
            memcpy(model_sha256, sha, 65);
            *spec = sp;
            *model_path = mp;
        }
    }
    store_stmt_done(st);
    return rc;
}

int coordinator_dead_tasks(coordinator_store *s, int64_t sweep_id, size_t max,
                           coordinator_dead_task **out, size_t *n_out, char *err) {
    *out = NULL;
    *n_out = 0;
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "SELECT t.id, j.sweep_id, t.key, t.attempts, t.last_error FROM task t "
                        "JOIN job j ON j.id = t.job_id "
                        "WHERE t.state = 'dead' AND (?1 = 0 OR j.sweep_id = ?1) "
                        "ORDER BY t.id LIMIT ?2",
                        &st, "list dead tasks", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, sweep_id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    coordinator_dead_task *list = NULL;
    size_t n = 0, cap = 0;
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            size_t c = cap > 0 ? 2 * cap : 16;
            coordinator_dead_task *l = realloc(list, c * sizeof *l);
            if (l == NULL) {
                rc = common_fail(err, COMMON_ERR_NOMEM, "list dead tasks: out of memory");
                break;
            }
            list = l;
            cap = c;
        }
        coordinator_dead_task *t = &list[n++];
        t->task_id = sqlite3_column_int64(st, 0);
        t->sweep_id = sqlite3_column_int64(st, 1);
        t->key = dup_text(st, 2);
        t->attempts = (uint32_t)sqlite3_column_int64(st, 3);
        t->error = dup_text(st, 4);
        if (t->key == NULL || t->error == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "list dead tasks: out of memory");
            break;
        }
    }
    if (rc == 0 && r != SQLITE_DONE) {
        rc = store_fail(s->db, err, "sqlite3_step(list dead tasks)");
    }
    store_stmt_done(st);
    if (rc != 0) {
        coordinator_dead_tasks_free(list, n);
        return rc;
    }
    *out = list;
    *n_out = n;
    return 0;
}

void coordinator_dead_tasks_free(coordinator_dead_task *t, size_t n) {
    for (size_t i = 0; t != NULL && i < n; i++) {
        free(t[i].key);
        free(t[i].error);
    }
    free(t);
}

int coordinator_sweep_cancel(coordinator_store *s, int64_t sweep_id, coordinator_task_ref **leased,
                             size_t *n_leased, char *err) {
    *leased = NULL;
    *n_leased = 0;
    sqlite3_stmt *mark = NULL, *release = NULL;
    coordinator_task_ref *refs = NULL;
    size_t n = 0, cap = 0;
    int rc = store_begin(s, err);
    if (rc != 0) {
        return rc;
    }
    if ((rc = store_stmt(s, "UPDATE sweep SET state = 'cancelled' WHERE id = ?", &mark,
                         "cancel sweep", err)) != 0 ||
        (rc = store_stmt(s,
                         /* the attempt the lease counted is given back: a cancel is no
                          * failure of the task */
                         "UPDATE task SET state = 'pending', worker = NULL, "
                         "lease_deadline_ns = NULL, attempts = max(attempts - 1, 0) "
                         "WHERE state = 'leased' AND job_id IN "
                         "(SELECT id FROM job WHERE sweep_id = ?) RETURNING id, lease_epoch",
                         &release, "release leases", err)) != 0) {
        goto fail;
    }
    sqlite3_bind_int64(mark, 1, sweep_id);
    if ((rc = store_step_done(s->db, mark, "cancel sweep", err)) != 0) {
        goto fail;
    }
    if (sqlite3_changes(s->db) == 0) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "no sweep with id %lld", (long long)sweep_id);
        goto fail;
    }
    sqlite3_bind_int64(release, 1, sweep_id);
    int r;
    while ((r = sqlite3_step(release)) == SQLITE_ROW) {
        if (n == cap) {
            size_t c = cap > 0 ? 2 * cap : 16;
            coordinator_task_ref *l = realloc(refs, c * sizeof *l);
            if (l == NULL) {
                rc = common_fail(err, COMMON_ERR_NOMEM, "cancel sweep: out of memory");
                goto fail;
            }
            refs = l;
            cap = c;
        }
        refs[n].task_id = sqlite3_column_int64(release, 0);
        refs[n].epoch = (uint64_t)sqlite3_column_int64(release, 1);
        n++;
    }
    if (r != SQLITE_DONE) {
        rc = store_fail(s->db, err, "sqlite3_step(release leases)");
        goto fail;
    }
    store_stmt_done(mark);
    store_stmt_done(release);
    mark = release = NULL;
    if ((rc = store_commit(s, err)) != 0) {
        goto fail;
    }
    *leased = refs;
    *n_leased = n;
    return 0;
fail:
    store_stmt_done(mark);
    store_stmt_done(release);
    store_rollback(s);
    free(refs);
    return rc;
}

/* Runs one UPDATE with an int64 parameter in its own transaction; *n: rows changed. */
static int update_all(coordinator_store *s, const char *sql, int64_t param, const char *what,
                      size_t *n, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_begin(s, err);
    if (rc != 0) {
        return rc;
    }
    if ((rc = store_stmt(s, sql, &st, what, err)) == 0) {
        sqlite3_bind_int64(st, 1, param);
        rc = store_step_done(s->db, st, what, err);
    }
    size_t changed = (size_t)sqlite3_changes(s->db);
    store_stmt_done(st);
    if (rc == 0) {
        rc = store_commit(s, err);
    }
    if (rc != 0) {
        store_rollback(s);
        return rc;
    }
    if (n != NULL) {
        *n = changed;
    }
    return 0;
}

int coordinator_sweep_retry_dead(coordinator_store *s, int64_t sweep_id, size_t *n, char *err) {
    return update_all(s,
                      "UPDATE task SET state = 'pending', attempts = 0, not_before_ns = 0 "
                      "WHERE state = 'dead' AND job_id IN (SELECT id FROM job WHERE sweep_id = ?)",
                      sweep_id, "requeue dead tasks", n, err);
}

int coordinator_tasks_rearm(coordinator_store *s, int64_t deadline_ns, size_t *n, char *err) {
    return update_all(s, "UPDATE task SET lease_deadline_ns = ? WHERE state = 'leased'",
                      deadline_ns, "re-arm leases", n, err);
}
