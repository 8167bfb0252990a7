/*
 * test_coord_powerloss: what a power loss can cost the coordinator's database (RELIABILITY.md
 * §6, row 13), with the store on a VFS that plays the power going out (powerloss_vfs.h).
 *
 * The scheduler runs as plain calls (sched_driver.h): a client submits sweeps, a worker takes
 * their tasks and reports results, every SUBMIT reply and every ACK stored the scheduler hands
 * out is logged, with the WAL checkpointed often so that cuts land before, during and after
 * checkpoints. At a random batch the power goes out; the disk keeps what was synced and each
 * later write with probability keep (0, 1/2, 1). Then, on what the disk held:
 * - the database is intact (integrity_check, foreign keys) and consistent: a task is done
 *   exactly when its result row is there, and every sweep has all its planned tasks;
 * - every acknowledged submission is there, whatever the sync level (those batches are synced);
 * - synchronous FULL (coordinator_sched_opts.sync_full): every acknowledged result is there;
 * - NORMAL with keep 1 (only the process died): every acknowledged result is there;
 * - NORMAL with keep 0 may lose acknowledged results (the test requires that some cut does, so
 *   that the simulation is seen to bite); those tasks are not done;
 * - a new scheduler on the recovered database completes every task, each stored once.
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

#include "powerloss_vfs.h"
#include "proto/reply.h"
#include "sched_driver.h"

#define MAX_SWEEPS 6
#define TASKS_PER_SWEEP 4 /* N_GAMES games, 4 a task */
#define MAX_TASKS (MAX_SWEEPS * TASKS_PER_SWEEP)
#define CUTS_PER_CASE 12

static char err[COMMON_ERR_LEN];

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

/* What the scheduler told its peers before the power went. */
typedef struct acked {
    char sweeps[MAX_SWEEPS][16];
    size_t n_sweeps;
    int64_t results[MAX_TASKS];
    size_t n_results;
} acked;

/* Tasks handed to the worker and not yet reported: (task, epoch). */
typedef struct held {
    int64_t task[MAX_TASKS];
    uint64_t epoch[MAX_TASKS];
    size_t n;
} held;

static coordinator_sched *new_sched(coordinator_store *st, int64_t now, bool sync_full,
                                    uint64_t seed) {
    coordinator_sched_opts o = {.lease_ms = 1000,
                                .heartbeat_ms = 100,
                                .worker_timeout_ms = 60000,
                                .max_attempts = 10,
                                .backoff_base_ms = 1,
                                .backoff_cap_ms = 2,
                                .max_credits = 4,
                                .sync_full = sync_full,
                                .plan = {.games_per_task = 4},
                                .seed = seed};
    coordinator_sched *s = NULL;
    if (coordinator_sched_new(&s, st, &o, now, err) != 0) {
        fail_msg("scheduler: %s", err);
    }
    return s;
}

/* Checkpoints every `pages` pages of WAL (SQLite's default is 1000): a few batches' worth, so
 * that cuts land before, during and after checkpoints (which sync the WAL and the database). */
static void checkpoint_every(coordinator_store *st, int pages) {
    char sql[64];
    snprintf(sql, sizeof sql, "PRAGMA wal_autocheckpoint = %d", pages);
    assert_int_equal(sqlite3_exec(coordinator_store_db(st), sql, NULL, NULL, NULL), SQLITE_OK);
}

/* Reads what one batch sent: tasks to hold, results and submissions acknowledged. */
static void take(sent *o, held *h, acked *a) {
    for (size_t i = 0; i < o->n; i++) {
        proto_msg *m = o->m[i];
        if (m->type == PROTO_TASK) {
            assert_true(h->n < MAX_TASKS);
            h->task[h->n] = m->task;
            h->epoch[h->n++] = m->epoch;
        } else if (m->type == PROTO_ACK && m->status == PROTO_ACK_STORED && a != NULL) {
            assert_true(a->n_results < MAX_TASKS);
            a->results[a->n_results++] = m->task;
        } else if (m->type == PROTO_REPLY && a != NULL) {
            proto_reply *r = NULL;
            assert_int_equal(proto_reply_decode(PROTO_SUBMIT, m->body, m->body_len, &r, err), 0);
            assert_true(a->n_sweeps < MAX_SWEEPS);
            snprintf(a->sweeps[a->n_sweeps++], sizeof a->sweeps[0], "%s", r->sweep);
            proto_reply_free(&r);
        } else if (m->type == PROTO_ERROR) {
            fail_msg("the scheduler answered an error: %s", m->error);
        }
    }
    sent_free(o);
}

/* One batch of the worker: results for up to two held tasks (oldest first) and a submission
 * now and then. */
static void step(coordinator_sched *s, int64_t now, uint64_t *rng, held *h, size_t *submitted,
                 acked *a) {
    frame in[3];
    size_t n = 0;
    if (*submitted < MAX_SWEEPS && (*submitted == 0 || next_rand(rng) % 4 == 0)) {
        char name[16], sub[32];
        snprintf(name, sizeof name, "s%zu", *submitted);
        snprintf(sub, sizeof sub, "sub-%zu", *submitted);
        in[n++] = submit("C", *submitted + 1, name, sub, PREDICTIONS);
        (*submitted)++;
    }
    size_t reports = h->n < 2 ? h->n : 1 + next_rand(rng) % 2;
    for (size_t i = 0; i < reports; i++) {
        in[n++] = result("A", h->task[i], h->epoch[i], &prediction_results, false);
    }
    memmove(h->task, h->task + reports, (h->n - reports) * sizeof h->task[0]);
    memmove(h->epoch, h->epoch + reports, (h->n - reports) * sizeof h->epoch[0]);
    h->n -= reports;
    sent o;
    turn(s, now, in, n, &o);
    take(&o, h, a);
}

/* The checks on the database the disk held after the cut. Returns the acknowledged results it
 * lost. */
static size_t check_recovered(const char *db, const acked *a) {
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    if (strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0) {
        fail_msg("%s after the cut: integrity_check: %s", db, sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    static const char *const must_be_zero[][2] = {
        {"foreign key violations", "SELECT count(*) FROM pragma_foreign_key_check"},
        {"done tasks without their result row",
         "SELECT count(*) FROM task t WHERE t.state = 'done' AND"
         " (SELECT count(*) FROM prediction p WHERE p.task_id = t.id) != 1"},
        {"result rows of tasks not done", "SELECT count(*) FROM prediction p JOIN task t ON"
                                          " t.id = p.task_id WHERE t.state != 'done'"},
        {"sweeps without all their tasks",
         "SELECT count(*) FROM sweep s WHERE (SELECT count(*) FROM task t JOIN job j ON"
         " j.id = t.job_id WHERE j.sweep_id = s.id) != 4"},
    };
    for (size_t i = 0; i < sizeof must_be_zero / sizeof must_be_zero[0]; i++) {
        assert_int_equal(sqlite3_prepare_v2(h, must_be_zero[i][1], -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        if (sqlite3_column_int64(st, 0) != 0) {
            fail_msg("%s after the cut: %lld %s", db, (long long)sqlite3_column_int64(st, 0),
                     must_be_zero[i][0]);
        }
        sqlite3_finalize(st);
    }
    for (size_t i = 0; i < a->n_sweeps; i++) {
        assert_int_equal(
            sqlite3_prepare_v2(h, "SELECT count(*) FROM sweep WHERE name = ?", -1, &st, NULL),
            SQLITE_OK);
        sqlite3_bind_text(st, 1, a->sweeps[i], -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        if (sqlite3_column_int64(st, 0) != 1) {
            fail_msg("%s after the cut: sweep %s was acknowledged to its client and is gone", db,
                     a->sweeps[i]);
        }
        sqlite3_finalize(st);
    }
    size_t lost = 0;
    for (size_t i = 0; i < a->n_results; i++) {
        assert_int_equal(
            sqlite3_prepare_v2(h, "SELECT state = 'done' FROM task WHERE id = ?", -1, &st, NULL),
            SQLITE_OK);
        sqlite3_bind_int64(st, 1, a->results[i]);
        int rc = sqlite3_step(st);
        lost += rc != SQLITE_ROW || sqlite3_column_int(st, 0) != 1;
        sqlite3_finalize(st);
    }
    sqlite3_close(h);
    return lost;
}

/* A new scheduler on the recovered database runs every task to the end; each is stored once. */
static void complete(coordinator_store *st, int64_t now, uint64_t seed) {
    coordinator_sched *s = new_sched(st, now, false, seed);
    held h = {0};
    sent o;
    turn1(s, now, hello("B", "w2"), &o);
    sent_free(&o);
    turn1(s, now, ready("B", 4), &o);
    take(&o, &h, NULL);
    int64_t total = query_int(st, "SELECT count(*) FROM task");
    for (int i = 0;
         i < 400 && query_int(st, "SELECT count(*) FROM task WHERE state = 'done'") < total; i++) {
        now += 300 * MS; /* leases re-armed at the restart lapse after lease_ms */
        frame in[MAX_TASKS];
        size_t n = 0;
        for (size_t k = 0; k < h.n; k++) {
            in[n++] = result("B", h.task[k], h.epoch[k], &prediction_results, false);
        }
        h.n = 0;
        turn(s, now, in, n, &o);
        take(&o, &h, NULL);
    }
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'done'"), total);
    assert_int_equal(query_int(st, "SELECT count(*) FROM prediction"), total);
    coordinator_sched_destroy(&s);
}

/* CUTS_PER_CASE runs of one case; returns the acknowledged results the cuts lost in all. */
static size_t run_case(bool sync_full, double keep, uint64_t seed0) {
    size_t lost_total = 0;
    for (uint64_t c = 0; c < CUTS_PER_CASE; c++) {
        uint64_t rng = seed0 * 1000 + c + 1;
        char name[64], db[512];
        snprintf(name, sizeof name, "powerloss-%d-%.0f-%llu.db", sync_full, keep * 10,
                 (unsigned long long)c);
        snprintf(db, sizeof db, "%s/%s", tmpdir(), name);
        coordinator_store *st = open_fresh(name);
        checkpoint_every(st, c % 3 == 0 ? 4 : 50);
        int64_t now = 1000 * MS;
        coordinator_sched *s = new_sched(st, now, sync_full, rng);
        held h = {0};
        acked a = {0};
        size_t submitted = 0;
        sent o;
        turn1(s, now, hello("A", "w1"), &o);
        sent_free(&o);
        turn1(s, now, ready("A", 4), &o);
        take(&o, &h, &a);
        uint64_t syncs_before = powerloss_syncs();
        int batches = 2 + (int)(next_rand(&rng) % 30);
        for (int b = 0; b < batches; b++) {
            now += MS;
            step(s, now, &rng, &h, &submitted, &a);
        }
        assert_true(powerloss_syncs() > syncs_before); /* the submissions were synced at least */
        powerloss_cut();
        coordinator_sched_destroy(&s);
        coordinator_store_close(&st);
        powerloss_restore(rng, keep);

        size_t lost = check_recovered(db, &a);
        if (sync_full && lost > 0) {
            fail_msg("synchronous FULL, cut after %d batches: %zu acknowledged results lost",
                     batches, lost);
        }
        if (keep == 1.0 && lost > 0) {
            fail_msg("a crash of the process alone (every write kept), cut after %d batches: %zu "
                     "acknowledged results lost",
                     batches, lost);
        }
        lost_total += lost;
        if (coordinator_store_open(&st, db, 0, err) != 0) {
            fail_msg("reopen %s: %s", db, err);
        }
        complete(st, now + 1000 * MS, rng);
        coordinator_store_close(&st);
    }
    return lost_total;
}

static void test_sync_full_loses_nothing(void **state) {
    (void)state;
    assert_int_equal(run_case(true, 0.0, 1), 0);
    assert_int_equal(run_case(true, 0.5, 2), 0);
}

static void test_normal_keeps_submissions_and_consistency(void **state) {
    (void)state;
    assert_int_equal(run_case(false, 1.0, 3), 0);
    (void)run_case(false, 0.5, 4);
    size_t lost = run_case(false, 0.0, 5);
    /* NORMAL does not sync results: with nothing unsynced kept, some cut must take some back,
     * or the simulation is not simulating */
    if (lost == 0) {
        fail_msg("synchronous NORMAL lost no acknowledged result in %d cuts that kept no unsynced "
                 "write: the power-loss simulation is not reaching the WAL",
                 CUTS_PER_CASE);
    }
    print_message("synchronous NORMAL: %zu acknowledged results taken back by %d cuts that kept "
                  "no unsynced write (their tasks ran again)\n",
                  lost, CUTS_PER_CASE);
}

int main(void) {
    powerloss_install();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_full_loses_nothing),
        cmocka_unit_test(test_normal_keeps_submissions_and_consistency),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
