/*
 * job_cache: what the work loader reads of a task's job (its analysis index, the sweep's dataset
 * and spec text), kept in memory. Every dispatch loads its task's work, and a sweep's tasks are
 * claimed in id order, job after job; reading the job and its sweep again for each one was a
 * statement per dispatch. A job never changes once planned (nothing updates or deletes a job or
 * a sweep's spec, dataset or jobs), so an entry never goes stale; a direct-mapped table keyed by
 * the job id keeps the last job read in each slot.
 */
#include <stdlib.h>
#include <string.h>

#include "coordinator/store_int.h"

void store_jobs_free(coordinator_store *s) {
    if (s->jobs == NULL) {
        return;
    }
    for (size_t i = 0; i < STORE_JOB_SLOTS; i++) {
        free(s->jobs[i].spec);
    }
    free(s->jobs);
    s->jobs = NULL;
}

/* Reads the job's row and its sweep's into j (empty on entry). */
static int read_stored(coordinator_store *s, int64_t job_id, store_job *j, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s,
                        "SELECT j.idx, s.dataset_id, s.spec FROM job j "
                        "JOIN sweep s ON s.id = j.sweep_id WHERE j.id = ?",
                        &st, "read job", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, job_id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 2);
        j->id = job_id;
        j->analysis = sqlite3_column_int64(st, 0);
        j->dataset_id = sqlite3_column_int64(st, 1);
        j->spec = strdup(text != NULL ? text : "");
        if (j->spec == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "read job: out of memory");
        }
    } else if (step == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "work: job %lld not found", (long long)job_id);
    } else {
        rc = store_fail(s->db, err, "sqlite3_step(read job)");
    }
    store_stmt_done(st);
    return rc;
}

int store_job_get(coordinator_store *s, int64_t job_id, const store_job **out, char *err) {
    if (s->jobs == NULL && (s->jobs = calloc(STORE_JOB_SLOTS, sizeof *s->jobs)) == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "read job: out of memory");
    }
    store_job *j = &s->jobs[(uint64_t)job_id % STORE_JOB_SLOTS];
    if (j->spec == NULL || j->id != job_id) {
        store_job fresh = {0};
        int rc = read_stored(s, job_id, &fresh, err);
        if (rc != 0) {
            return rc;
        }
        free(j->spec);
        *j = fresh;
    }
    *out = j;
    return 0;
}
