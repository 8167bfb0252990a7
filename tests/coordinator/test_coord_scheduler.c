/*
 * test_coord_scheduler: the scheduler as plain calls, with frames in and frames out and the
 * clock passed by hand: hello and welcome; credits and dispatch recorded before the TASK
 * leaves; results stored once (a duplicate acknowledged as such, a stale epoch fenced, a bad
 * digest or a result of the wrong kind counted as a failure); heartbeats renewing a lease and
 * expiry requeuing it with backoff until the task is dead; failures with their error in the
 * status reply; submissions made idempotent by their id; cancel sending DROP and fencing the
 * late result; retry-dead; a restarted scheduler re-arming the leases it finds; malformed
 * frames answered with an error; and the credit rules: the ACK of a report gives its slot back
 * in the same batch, not before a READY follows a HELLO, never for a DROP.
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

#include "coordinator/coordinator.h"
#include "coordinator/scheduler.h"
#include "coordinator/wire.h"
#include "proto/proto.h"
#include "proto/reply.h"
#include "sched_driver.h"

static char err[COMMON_ERR_LEN];

static coordinator_sched *new_sched(coordinator_store *st, int64_t now, uint32_t max_attempts) {
    coordinator_sched_opts o = {.lease_ms = 1000,
                                .heartbeat_ms = 100,
                                .worker_timeout_ms = 60000,
                                .max_attempts = max_attempts,
                                .backoff_base_ms = 10,
                                .backoff_cap_ms = 20,
                                .max_credits = 4,
                                .plan = {.games_per_task = 4},
                                .seed = 7};
    coordinator_sched *s = NULL;
    assert_int_equal(coordinator_sched_new(&s, st, &o, now, err), 0);
    return s;
}

/* A scheduler with a submitted 4-task predictions sweep "p" and worker "w1" on peer "A". */
static coordinator_sched *with_sweep(coordinator_store *st, int64_t now, uint32_t attempts) {
    coordinator_sched *s = new_sched(st, now, attempts);
    sent o;
    turn1(s, now, submit("C", 1, "p", "sub-1", PREDICTIONS), &o);
    proto_msg *r = find(&o, PROTO_REPLY);
    if (r == NULL) {
        proto_msg *e = find(&o, PROTO_ERROR);
        fail_msg("submit refused: %s", e != NULL ? e->error : "no answer");
    }
    assert_int_equal(r->req, 1);
    proto_reply *rep = NULL;
    assert_int_equal(proto_reply_decode(PROTO_SUBMIT, r->body, r->body_len, &rep, err), 0);
    assert_string_equal(rep->sweep, "p");
    assert_false(rep->existed);
    assert_int_equal(rep->n_tasks, 4);
    proto_reply_free(&rep);
    sent_free(&o);
    turn1(s, now, hello("A", "w1"), &o);
    proto_msg *w = find(&o, PROTO_WELCOME);
    assert_non_null(w);
    assert_string_equal(o.peer[0], "A");
    assert_int_equal(w->lease_ms, 1000);
    assert_int_equal(w->heartbeat_ms, 100);
    assert_int_equal(count(&o, PROTO_TASK), 0); /* no credits yet */
    sent_free(&o);
    return s;
}

/* A worker is given the tasks of the model it holds first (the first its HELLO names, then the
 * last it was sent), though another sweep's tasks have lower ids; a worker that names none gets
 * the lowest ids. */
static void test_dispatch_prefers_held_model(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-prefer.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 3); /* sweep "p" on MODEL_DIR, 4 tasks */
    char json[1024];
    snprintf(json, sizeof json,
             "{\"name\":\"q\",\"model\":\"%s/tests/fixtures/random-tiny\",\"dataset\":\"d\","
             "\"games\":[0,16],\"analyses\":[" PREDICTIONS "]}",
             CHESSLENS_SOURCE_DIR);
    proto_msg sub = {.type = PROTO_SUBMIT, .req = 2, .submission = "sub-q", .spec = json};
    sent o;
    turn1(s, now, encode("C", &sub), &o);
    if (find(&o, PROTO_REPLY) == NULL) {
        proto_msg *e = find(&o, PROTO_ERROR);
        fail_msg("submit q refused: %s", e != NULL ? e->error : "no answer");
    }
    sent_free(&o);
    char sha_q[65] = "";
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(coordinator_store_db(st),
                                        "SELECT m.sha256 FROM sweep w JOIN model m ON m.id = "
                                        "w.model_id WHERE w.name = 'q'",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    snprintf(sha_q, sizeof sha_q, "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);

    const char *models[1] = {sha_q};
    proto_msg h = {.type = PROTO_HELLO,
                   .worker = "wq",
                   .backend = "cpu",
                   .threads = 1,
                   .n_models = 1,
                   .models = {models[0]}};
    turn1(s, now, encode("B", &h), &o);
    sent_free(&o);
    turn1(s, now, ready("B", 1), &o);
    proto_msg *t = find(&o, PROTO_TASK);
    assert_non_null(t);
    assert_string_equal(t->model_sha256, sha_q); /* q's, though p's tasks come first by id */
    sent_free(&o);
    turn1(s, now, ready("A", 1), &o); /* w1 named no model: the lowest id, one of p's */
    t = find(&o, PROTO_TASK);
    assert_non_null(t);
    assert_string_not_equal(t->model_sha256, sha_q);
    sent_free(&o);
    turn1(s, now, ready("B", 1), &o); /* still q's: the model it was sent last */
    t = find(&o, PROTO_TASK);
    assert_non_null(t);
    assert_string_equal(t->model_sha256, sha_q);
    sent_free(&o);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

static void test_dispatch_and_store_once(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-dispatch.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 3);
    sent o;
    turn1(s, now, ready("A", 2), &o);
    assert_int_equal(count(&o, PROTO_TASK), 2);
    proto_msg *t = find(&o, PROTO_TASK);
    assert_int_equal(t->epoch, 1);
    assert_int_equal(t->attempt, 1);
    assert_string_equal(t->model_path, MODEL_DIR);
    assert_int_equal(strlen(t->model_sha256), 64);
    assert_non_null(strstr(t->spec, "\"predictions\""));
    int64_t task = t->task;
    uint64_t epoch = t->epoch;
    /* the dispatch is in the database (it committed before the frames were handed out) */
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'leased'"), 2);
    /* the body is the task's work, decodable against the spec */
    coordinator_spec *spec = NULL;
    assert_int_equal(coordinator_spec_parse(&spec, t->spec, strlen(t->spec), err), 0);
    coordinator_work *w = NULL;
    assert_int_equal(coordinator_work_decode(spec, t->body, t->body_len, &w, err), 0);
    assert_int_equal(w->n_games, 4);
    coordinator_work_destroy(&w);
    coordinator_spec_destroy(&spec);
    sent_free(&o);

    /* a stale epoch is fenced and stores nothing (its ACK gives the slot back: the third task
     * goes out with it) */
    turn1(s, now, result("A", task, epoch + 5, &prediction_results, false), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_LEASE_LOST);
    assert_int_equal(count(&o, PROTO_TASK), 1);
    assert_int_equal(query_int(st, "SELECT count(*) FROM prediction"), 0);
    sent_free(&o);
    /* the current epoch is stored, with its row (and the fourth task goes out) */
    turn1(s, now, result("A", task, epoch, &prediction_results, false), &o);
    proto_msg *ack = find(&o, PROTO_ACK);
    assert_int_equal(ack->task, task);
    assert_int_equal(ack->status, PROTO_ACK_STORED);
    assert_int_equal(count(&o, PROTO_TASK), 1);
    assert_int_equal(query_int(st, "SELECT count(*) FROM prediction"), 1);
    sent_free(&o);
    /* the same result again: acknowledged as a duplicate, nothing more stored */
    turn1(s, now, result("A", task, epoch, &prediction_results, false), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_DUPLICATE);
    assert_int_equal(query_int(st, "SELECT count(*) FROM prediction"), 1);
    assert_int_equal(coordinator_sched_get_stats(s)->duplicates, 1);
    sent_free(&o);
    /* more credits, but every task is out */
    turn1(s, now, ready("A", 10), &o);
    assert_int_equal(count(&o, PROTO_TASK), 0);
    sent_free(&o);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'leased'"), 3);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'done'"), 1);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

static void test_bad_results_count_as_failures(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-bad.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 3);
    sent o;
    turn1(s, now, ready("A", 2), &o);
    int64_t t1 = o.m[0]->task, t2 = o.m[1]->task;
    uint64_t e1 = o.m[0]->epoch, e2 = o.m[1]->epoch;
    sent_free(&o);
    /* a digest that does not match the body */
    turn1(s, now, result("A", t1, e1, &prediction_results, true), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_LEASE_LOST);
    sent_free(&o);
    /* a result of another kind than the task's analysis (legal statistics for predictions) */
    interp_legal_stats *ls = NULL;
    assert_int_equal(interp_legal_stats_new(&ls, 1, NULL, 4, err), 0);
    coordinator_results wrong = {.legal = ls};
    turn1(s, now, result("A", t2, e2, &wrong, false), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_LEASE_LOST);
    sent_free(&o);
    interp_legal_stats_destroy(&ls);
    assert_int_equal(query_int(st, "SELECT count(*) FROM prediction"), 0);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'pending' AND "
                                   "last_error LIKE 'result digest mismatch%'"),
                     1);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'pending' AND "
                                   "last_error LIKE '%another analysis kind%'"),
                     1);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

static void test_heartbeat_expiry_and_dead(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-expiry.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 2);
    sent o;
    turn1(s, now, ready("A", 1), &o);
    proto_msg *t = find(&o, PROTO_TASK);
    int64_t task = t->task;
    uint64_t epoch = t->epoch;
    sent_free(&o);
    /* the next wake is the lease deadline */
    assert_true(coordinator_sched_next_wake(s) <= now + 1000 * MS + 1);
    /* a heartbeat at 800 ms renews the lease to 1800 ms */
    turn1(s, now + 800 * MS, heartbeat("A", task, epoch), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_STORED);
    sent_free(&o);
    turn(s, now + 1500 * MS, NULL, 0, &o);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'leased'"), 1);
    sent_free(&o);
    /* silent past the deadline: requeued with a backoff, the attempt counted */
    turn(s, now + 1900 * MS, NULL, 0, &o);
    sent_free(&o);
    assert_int_equal(coordinator_sched_get_stats(s)->expired, 1);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM task WHERE id = %lld AND state = 'pending' AND attempts = 1 "
             "AND last_error = 'lease expired' AND not_before_ns >= %lld",
             (long long)task, (long long)(now + 1900 * MS));
    assert_int_equal(query_int(st, sql), 1);
    /* the late heartbeat of the lost lease is fenced */
    turn1(s, now + 1950 * MS, heartbeat("A", task, epoch), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_LEASE_LOST);
    sent_free(&o);
    /* an idle heartbeat is answered, so the worker knows the coordinator lives */
    turn1(s, now + 1960 * MS, heartbeat("A", 0, 0), &o);
    assert_int_equal(find(&o, PROTO_ACK)->task, 0);
    sent_free(&o);
    /* leased again after its backoff (lowest id first), it expires a second time: dead */
    turn1(s, now + 2000 * MS, ready("A", 1), &o);
    t = find(&o, PROTO_TASK);
    assert_non_null(t);
    assert_int_equal(t->task, task);
    assert_int_equal(t->attempt, 2);
    assert_int_equal(t->epoch, epoch + 1);
    sent_free(&o);
    turn(s, now + 3100 * MS, NULL, 0, &o);
    sent_free(&o);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM task WHERE id = %lld AND state = 'dead'",
             (long long)task);
    assert_int_equal(query_int(st, sql), 1);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

static void test_fail_until_dead_and_status(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-fail.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 2);
    sent o;
    int64_t first = 0;
    for (int attempt = 1; attempt <= 2; attempt++) {
        now += 100 * MS; /* past any backoff (cap 20 ms) */
        turn1(s, now, ready("A", 1), &o);
        proto_msg *t = find(&o, PROTO_TASK);
        assert_non_null(t);
        if (first == 0) {
            first = t->task;
        }
        assert_int_equal(t->task, first);
        assert_int_equal(t->attempt, attempt);
        int64_t task = t->task;
        uint64_t epoch = t->epoch;
        sent_free(&o);
        turn1(s, now, failure("A", task, epoch, "the model is on fire"), &o);
        assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_STORED);
        /* the failed task waits out its backoff; the slot its FAIL gave back takes another */
        t = find(&o, PROTO_TASK);
        assert_non_null(t);
        assert_int_not_equal(t->task, first);
        sent_free(&o);
    }
    turn1(s, now, request("C", PROTO_STATUS, 9, "p"), &o);
    proto_msg *r = find(&o, PROTO_REPLY);
    assert_non_null(r);
    assert_int_equal(r->req, 9);
    proto_reply *rep = NULL;
    assert_int_equal(proto_reply_decode(PROTO_STATUS, r->body, r->body_len, &rep, err), 0);
    assert_int_equal(rep->n_sweeps, 1);
    assert_int_equal(rep->sweeps[0].dead, 1);
    assert_int_equal(rep->sweeps[0].leased, 2);
    assert_int_equal(rep->sweeps[0].pending, 1);
    assert_int_equal(rep->n_dead, 1);
    assert_string_equal(rep->dead[0].error, "the model is on fire");
    assert_int_equal(rep->dead[0].attempts, 2);
    proto_reply_free(&rep);
    sent_free(&o);
    /* retry-dead puts it back with its attempts reset */
    turn1(s, now, request("C", PROTO_RETRY_DEAD, 10, "p"), &o);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'dead'"), 0);
    assert_int_equal(query_int(st, "SELECT max(attempts) FROM task WHERE state = 'pending'"), 0);
    sent_free(&o);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

/* STATUS's sweep "p": its pending and leased counts. */
static void status_counts(coordinator_sched *s, int64_t now, uint64_t req, uint64_t *pending,
                          uint64_t *leased) {
    sent o;
    turn1(s, now, request("C", PROTO_STATUS, req, "p"), &o);
    proto_msg *r = find(&o, PROTO_REPLY);
    assert_non_null(r);
    proto_reply *rep = NULL;
    assert_int_equal(proto_reply_decode(PROTO_STATUS, r->body, r->body_len, &rep, err), 0);
    assert_int_equal(rep->n_sweeps, 1);
    *pending = rep->sweeps[0].pending;
    *leased = rep->sweeps[0].leased;
    proto_reply_free(&rep);
    sent_free(&o);
}

/* On a store whose count is dear (here: any count, status_fresh_ns 1), STATUS answers from the
 * last count while it is younger than ten times its cost, a later one counts again, and a
 * submission makes the next count fresh. */
static void test_status_reuses_dear_counts(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-status.db");
    int64_t now = 1000 * MS;
    coordinator_sched_opts so = {.lease_ms = 1000,
                                 .max_credits = 4,
                                 .status_fresh_ns = 1,
                                 .plan = {.games_per_task = 4},
                                 .seed = 7};
    coordinator_sched *s = NULL;
    assert_int_equal(coordinator_sched_new(&s, st, &so, now, err), 0);
    sent o;
    turn1(s, now, submit("C", 1, "p", "sub-1", PREDICTIONS), &o);
    sent_free(&o);
    turn1(s, now, hello("A", "w1"), &o);
    sent_free(&o);
    uint64_t pending = 0, leased = 0;
    status_counts(s, now, 2, &pending, &leased);
    assert_int_equal(pending, 4);
    assert_int_equal(leased, 0);
    turn1(s, now, ready("A", 1), &o);
    assert_int_equal(count(&o, PROTO_TASK), 1);
    sent_free(&o);
    status_counts(s, now, 3, &pending, &leased); /* no time has passed: the count is reused */
    assert_int_equal(pending, 4);
    assert_int_equal(leased, 0);
    status_counts(s, now + 1000 * MS, 4, &pending, &leased);
    assert_int_equal(pending, 3);
    assert_int_equal(leased, 1);
    turn1(s, now + 1000 * MS, ready("A", 1), &o);
    sent_free(&o);
    turn1(s, now + 1000 * MS, submit("C", 5, "p", "sub-1", PREDICTIONS), &o); /* the same sweep */
    sent_free(&o);
    status_counts(s, now + 1000 * MS, 6, &pending, &leased);
    assert_int_equal(pending, 2);
    assert_int_equal(leased, 2);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

static void test_submit_idempotent_and_refusals(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-submit.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 3);
    sent o;
    /* the same submission again: the same sweep, nothing added */
    turn1(s, now, submit("D", 2, "p", "sub-1", PREDICTIONS), &o);
    proto_reply *rep = NULL;
    proto_msg *r = find(&o, PROTO_REPLY);
    assert_non_null(r);
    assert_int_equal(proto_reply_decode(PROTO_SUBMIT, r->body, r->body_len, &rep, err), 0);
    assert_true(rep->existed);
    assert_int_equal(rep->n_tasks, 4);
    proto_reply_free(&rep);
    sent_free(&o);
    assert_int_equal(query_int(st, "SELECT count(*) FROM sweep"), 1);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task"), 4);
    /* another submission with the same name is refused with the store's reason */
    turn1(s, now, submit("D", 3, "p", "sub-2", PREDICTIONS), &o);
    proto_msg *e = find(&o, PROTO_ERROR);
    assert_non_null(e);
    assert_int_equal(e->req, 3);
    sent_free(&o);
    /* an invalid spec names the bad field */
    turn1(s, now, submit("D", 4, "q", "sub-3", "{\"kind\":\"predictions\",\"top_k\":0}"), &o);
    e = find(&o, PROTO_ERROR);
    assert_non_null(e);
    assert_non_null(strstr(e->error, "top_k"));
    sent_free(&o);
    /* status of a sweep that does not exist */
    turn1(s, now, request("D", PROTO_STATUS, 5, "nope"), &o);
    e = find(&o, PROTO_ERROR);
    assert_non_null(e);
    assert_int_equal(e->req, 5);
    sent_free(&o);
    /* list */
    turn1(s, now, request("D", PROTO_LIST, 6, NULL), &o);
    r = find(&o, PROTO_REPLY);
    assert_int_equal(proto_reply_decode(PROTO_LIST, r->body, r->body_len, &rep, err), 0);
    assert_int_equal(rep->n_sweeps, 1);
    assert_string_equal(rep->sweeps[0].name, "p");
    assert_int_equal(rep->sweeps[0].pending, 4);
    proto_reply_free(&rep);
    sent_free(&o);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

static void test_cancel_drops_and_fences(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-cancel.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 3);
    sent o;
    turn1(s, now, ready("A", 1), &o);
    proto_msg *t = find(&o, PROTO_TASK);
    int64_t task = t->task;
    uint64_t epoch = t->epoch;
    sent_free(&o);
    turn1(s, now, request("C", PROTO_CANCEL, 7, "p"), &o);
    proto_msg *d = find(&o, PROTO_DROP);
    assert_non_null(d);
    assert_int_equal(d->task, task);
    assert_int_equal(d->epoch, epoch);
    proto_msg *r = find(&o, PROTO_REPLY);
    assert_non_null(r);
    proto_reply *rep = NULL;
    assert_int_equal(proto_reply_decode(PROTO_CANCEL, r->body, r->body_len, &rep, err), 0);
    assert_int_equal(rep->n_changed, 1);
    proto_reply_free(&rep);
    for (size_t i = 0; i < o.n; i++) {
        if (o.m[i]->type == PROTO_DROP) {
            assert_string_equal(o.peer[i], "A");
        }
    }
    sent_free(&o);
    /* the late result is fenced, and nothing more is handed out */
    turn1(s, now, result("A", task, epoch, &prediction_results, false), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_LEASE_LOST);
    sent_free(&o);
    turn1(s, now, ready("A", 4), &o);
    assert_int_equal(count(&o, PROTO_TASK), 0);
    sent_free(&o);
    assert_int_equal(query_int(st, "SELECT count(*) FROM prediction"), 0);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'pending'"), 4);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

static void test_restart_rearms_and_worker_reconnects(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-restart.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 3);
    sent o;
    turn1(s, now, ready("A", 1), &o);
    proto_msg *t = find(&o, PROTO_TASK);
    int64_t task = t->task;
    uint64_t epoch = t->epoch;
    sent_free(&o);
    coordinator_sched_destroy(&s);
    /* a new coordinator process: its clock starts elsewhere; the lease is re-armed from now */
    int64_t later = 5 * MS;
    s = new_sched(st, later, 3);
    turn(s, later, NULL, 0, &o);
    sent_free(&o);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT lease_deadline_ns FROM task WHERE id = %lld AND state = 'leased'",
             (long long)task);
    assert_int_equal(query_int(st, sql), later + 1000 * MS);
    /* the worker says hello again from a new routing id and delivers its result */
    frame in[2] = {hello("B", "w1"), result("B", task, epoch, &prediction_results, false)};
    turn(s, later + 10 * MS, in, 2, &o);
    assert_non_null(find(&o, PROTO_WELCOME));
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_STORED);
    sent_free(&o);
    /* the workers list shows it */
    turn1(s, later + 20 * MS, request("C", PROTO_WORKERS, 3, NULL), &o);
    proto_msg *r = find(&o, PROTO_REPLY);
    proto_reply *rep = NULL;
    assert_int_equal(proto_reply_decode(PROTO_WORKERS, r->body, r->body_len, &rep, err), 0);
    assert_int_equal(rep->n_workers, 1);
    assert_string_equal(rep->workers[0].id, "w1");
    assert_true(rep->workers[0].connected);
    proto_reply_free(&rep);
    sent_free(&o);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

static void test_malformed_frames(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-malformed.db");
    coordinator_sched *s = new_sched(st, 0, 3);
    static const uint8_t junk[][8] = {{0xc1}, {0x81, 0xa1, 'v'}, {0x80}, {0xdd, 0xff, 0xff, 0xff}};
    static const size_t junk_len[] = {1, 3, 1, 4};
    sent o;
    frame in[5];
    for (size_t i = 0; i < 4; i++) {
        in[i].data = malloc(junk_len[i]);
        memcpy(in[i].data, junk[i], junk_len[i]);
        in[i].len = junk_len[i];
        snprintf(in[i].peer, sizeof in[i].peer, "X%zu", i);
    }
    /* a message only a coordinator sends, sent to it */
    proto_msg welcome = {.type = PROTO_WELCOME, .heartbeat_ms = 1, .lease_ms = 1};
    in[4] = encode("X4", &welcome);
    turn(s, 0, in, 5, &o);
    assert_int_equal(o.n, 5);
    assert_int_equal(count(&o, PROTO_ERROR), 5);
    assert_int_equal(coordinator_sched_get_stats(s)->frames_bad, 5);
    sent_free(&o);
    /* READY before HELLO */
    turn1(s, 0, ready("X9", 1), &o);
    assert_non_null(find(&o, PROTO_ERROR));
    sent_free(&o);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

/* Many workers at once: the lease index grows past its first size, every lease is found from
 * the task id alone (results, a heartbeat, DROPs on cancel go to the worker that holds it),
 * including the leases of a worker that reconnected under a new routing id, and no-op (empty)
 * results are stored through the one-statement path. */
#define MANY_WORKERS 20
#define MANY_CUTOFFS                                                                               \
    "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":{\"from\":2,"                         \
    "\"to\":12,\"step\":1},\"corrupt\":{\"position\":\"last\",\"with\":\"q\"},"                    \
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\","                               \
    "\"corrupt_top\"]}}"

typedef struct held_task {
    int64_t task;
    uint64_t epoch;
    char peer[8];
} held_task;

static void test_many_workers_and_leases(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-many.db");
    int64_t now = 1000 * MS;
    coordinator_sched_opts opts = {.lease_ms = 1000,
                                   .worker_timeout_ms = 60000,
                                   .max_credits = 4,
                                   .plan = {.pairs_per_task = 1},
                                   .seed = 3};
    coordinator_sched *s = NULL;
    assert_int_equal(coordinator_sched_new(&s, st, &opts, now, err), 0);
    sent o;
    turn1(s, now, submit("C", 1, "m", "sub-m", MANY_CUTOFFS), &o);
    proto_msg *r = find(&o, PROTO_REPLY);
    assert_non_null(r);
    proto_reply *rep = NULL;
    assert_int_equal(proto_reply_decode(PROTO_SUBMIT, r->body, r->body_len, &rep, err), 0);
    assert_true(rep->n_tasks >= 4 * MANY_WORKERS);
    proto_reply_free(&rep);
    sent_free(&o);

    held_task held[8 * MANY_WORKERS];
    size_t n_held = 0;
    for (int w = 0; w < MANY_WORKERS; w += 5) { /* 5 workers a turn: at most 25 frames out */
        frame in[10];
        struct {
            char peer[8], id[8];
        } names[5];
        for (int k = 0; k < 5; k++) {
            snprintf(names[k].peer, sizeof names[k].peer, "P%02d", (w + k) % 100);
            snprintf(names[k].id, sizeof names[k].id, "w%02d", (w + k) % 100);
            in[2 * k] = hello(names[k].peer, names[k].id);
            in[2 * k + 1] = ready(names[k].peer, 4);
        }
        turn(s, now, in, 10, &o);
        for (size_t i = 0; i < o.n; i++) {
            if (o.m[i]->type == PROTO_TASK) {
                assert_true(n_held < 4 * MANY_WORKERS);
                held[n_held] = (held_task){.task = o.m[i]->task, .epoch = o.m[i]->epoch};
                snprintf(held[n_held].peer, sizeof held[n_held].peer, "%.7s", o.peer[i]);
                n_held++;
            }
        }
        sent_free(&o);
    }
    assert_int_equal(n_held, 4 * MANY_WORKERS);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'leased'"),
                     4 * MANY_WORKERS);

    /* worker w07 comes back under a new routing id: its four leases move with it */
    turn1(s, now, hello("Q07", "w07"), &o);
    assert_non_null(find(&o, PROTO_WELCOME));
    sent_free(&o);
    for (size_t i = 0; i < n_held; i++) {
        if (strcmp(held[i].peer, "P07") == 0) {
            snprintf(held[i].peer, sizeof held[i].peer, "Q07");
        }
    }
    /* a heartbeat finds its lease from the task id */
    turn1(s, now + 100 * MS, heartbeat(held[0].peer, held[0].task, held[0].epoch), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_STORED);
    sent_free(&o);

    /* the second half's results, last first, in turns of 20; each ACK gives its slot back, so
     * a new task goes out to the same peer with it (while there are tasks left) */
    const coordinator_results none = {0};
    size_t half = n_held / 2, first_held = n_held;
    held_task more[4 * MANY_WORKERS];
    size_t n_more = 0;
    for (size_t i = first_held; i > half;) {
        frame in[20];
        char peers[20][8];
        size_t n = 0;
        while (i > half && n < 20) {
            i--;
            snprintf(peers[n], sizeof peers[n], "%s", held[i].peer);
            in[n++] = result(held[i].peer, held[i].task, held[i].epoch, &none, false);
        }
        turn(s, now + 200 * MS, in, n, &o);
        assert_int_equal(count(&o, PROTO_ACK), n);
        assert_true(count(&o, PROTO_TASK) <= n);
        for (size_t k = 0; k < o.n; k++) {
            if (o.m[k]->type == PROTO_ACK) {
                assert_int_equal(o.m[k]->status, PROTO_ACK_STORED);
                continue;
            }
            assert_int_equal(o.m[k]->type, PROTO_TASK);
            bool answered = false; /* only a peer whose result this turn answered */
            for (size_t j = 0; j < n; j++) {
                answered = answered || strcmp(peers[j], o.peer[k]) == 0;
            }
            assert_true(answered);
            more[n_more] = (held_task){.task = o.m[k]->task, .epoch = o.m[k]->epoch};
            snprintf(more[n_more].peer, sizeof more[n_more].peer, "%.7s", o.peer[k]);
            n_more++;
        }
        sent_free(&o);
    }
    assert_int_equal(coordinator_sched_get_stats(s)->stored, n_held - half);
    assert_true(n_more > 0);
    /* the first half and the new ones are what is leased now */
    for (size_t k = 0; k < n_more; k++) {
        held[half + k] = more[k];
    }
    size_t n_leased = half + n_more;
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'done' AND n_rows = 0 "
                                   "AND done_at IS NOT NULL"),
                     n_held - half);

    /* cancel: each remaining lease gets its DROP at the peer that holds it */
    turn1(s, now + 300 * MS, request("C", PROTO_CANCEL, 2, "m"), &o);
    assert_int_equal(count(&o, PROTO_DROP), n_leased);
    for (size_t k = 0; k < o.n; k++) {
        if (o.m[k]->type != PROTO_DROP) {
            continue;
        }
        size_t i = 0;
        while (i < n_leased && held[i].task != o.m[k]->task) {
            i++;
        }
        assert_true(i < n_leased);
        assert_int_equal(o.m[k]->epoch, held[i].epoch);
        assert_string_equal(o.peer[k], held[i].peer);
    }
    sent_free(&o);
    /* the dropped leases are gone from the index too: their late results are fenced */
    turn1(s, now + 400 * MS, result(held[1].peer, held[1].task, held[1].epoch, &none, false), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_LEASE_LOST);
    sent_free(&o);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

/* Leases come and go through the index for many rounds: each result drops its lease (else the
 * worker's list would fill and it would get fewer tasks), so every worker that stores its four
 * results and asks again gets four new tasks until the sweep runs dry. */
#define CHURN_CUTOFFS                                                                              \
    "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":{\"from\":2,"                         \
    "\"to\":40,\"step\":1},\"corrupt\":{\"position\":\"last\",\"with\":\"q\"},"                    \
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\","                               \
    "\"corrupt_top\"]}}"

static void test_lease_churn(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-churn.db");
    int64_t now = 1000 * MS;
    coordinator_sched_opts opts = {.lease_ms = 60000,
                                   .worker_timeout_ms = 600000,
                                   .max_credits = 4,
                                   .plan = {.pairs_per_task = 1},
                                   .seed = 5};
    coordinator_sched *s = NULL;
    assert_int_equal(coordinator_sched_new(&s, st, &opts, now, err), 0);
    sent o;
    turn1(s, now, submit("C", 1, "c", "sub-c", CHURN_CUTOFFS), &o);
    proto_reply *rep = NULL;
    proto_msg *r = find(&o, PROTO_REPLY);
    assert_non_null(r);
    assert_int_equal(proto_reply_decode(PROTO_SUBMIT, r->body, r->body_len, &rep, err), 0);
    size_t n_tasks = rep->n_tasks, left = n_tasks;
    proto_reply_free(&rep);
    sent_free(&o);
    assert_true(n_tasks > 8 * MANY_WORKERS);
    held_task held[MANY_WORKERS][4];
    size_t n_held[MANY_WORKERS] = {0};
    struct {
        char peer[8], id[8];
    } names[MANY_WORKERS];
    for (int w = 0; w < MANY_WORKERS; w++) {
        snprintf(names[w].peer, sizeof names[w].peer, "P%02d", w % 100);
        snprintf(names[w].id, sizeof names[w].id, "w%02d", w % 100);
        turn1(s, now, hello(names[w].peer, names[w].id), &o);
        sent_free(&o);
    }
    size_t stored = 0;
    for (int round = 0; left > 0; round++) {
        assert_true(round < 100);
        for (int w0 = 0; w0 < MANY_WORKERS; w0 += 5) {
            frame in[25];
            size_t n = 0;
            for (int w = w0; w < w0 + 5; w++) {
                for (size_t k = 0; k < n_held[w]; k++) {
                    in[n++] = result(names[w].peer, held[w][k].task, held[w][k].epoch,
                                     &(coordinator_results){0}, false);
                }
                in[n++] = ready(names[w].peer, 4);
            }
            size_t acks_expected = 0;
            for (int w = w0; w < w0 + 5; w++) {
                acks_expected += n_held[w];
                n_held[w] = 0;
            }
            now += MS;
            turn(s, now, in, n, &o);
            assert_int_equal(count(&o, PROTO_ACK), acks_expected);
            stored += acks_expected;
            size_t want = 0;
            for (int w = w0; w < w0 + 5; w++) {
                want += left >= 4 ? 4 : left;
                left -= left >= 4 ? 4 : left;
            }
            assert_int_equal(count(&o, PROTO_TASK), want);
            for (size_t i = 0; i < o.n; i++) {
                if (o.m[i]->type == PROTO_ACK) {
                    assert_int_equal(o.m[i]->status, PROTO_ACK_STORED);
                }
                if (o.m[i]->type != PROTO_TASK) {
                    continue;
                }
                int w = atoi(o.peer[i] + 1);
                assert_true(w >= w0 && w < w0 + 5 && n_held[w] < 4);
                held[w][n_held[w]++] = (held_task){.task = o.m[i]->task, .epoch = o.m[i]->epoch};
            }
            sent_free(&o);
        }
    }
    assert_int_equal(coordinator_sched_get_stats(s)->stored, stored);
    assert_int_equal(coordinator_sched_get_stats(s)->dispatched, n_tasks);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

/* ---- credits (PROTOCOL.md, "Credits") ---- */

/* The ACK of a RESULT or FAIL gives the worker's slot back: the next TASK leaves in the same
 * batch, after the ACK, with no READY in between, whatever the ACK says (stored, duplicate,
 * lease_lost), and one TASK per report, never more. A heartbeat's ACK gives nothing back. */
static void test_ack_returns_credit(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-credit.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 3);
    sent o;
    turn1(s, now, ready("A", 1), &o);
    assert_int_equal(o.n, 1);
    proto_msg *t = find(&o, PROTO_TASK);
    assert_non_null(t);
    int64_t t1 = t->task;
    uint64_t e1 = t->epoch;
    sent_free(&o);
    /* stored: the ACK, then the next task */
    turn1(s, now, result("A", t1, e1, &prediction_results, false), &o);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.m[0]->type, PROTO_ACK);
    assert_int_equal(o.m[0]->status, PROTO_ACK_STORED);
    assert_int_equal(o.m[1]->type, PROTO_TASK);
    assert_string_equal(o.peer[1], "A");
    int64_t t2 = o.m[1]->task;
    uint64_t e2 = o.m[1]->epoch;
    assert_int_not_equal(t2, t1);
    sent_free(&o);
    /* a heartbeat's ACK returns nothing */
    turn1(s, now, heartbeat("A", t2, e2), &o);
    assert_int_equal(o.n, 1);
    assert_int_equal(o.m[0]->type, PROTO_ACK);
    sent_free(&o);
    /* a FAIL: the same */
    turn1(s, now, failure("A", t2, e2, "no"), &o);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.m[0]->type, PROTO_ACK);
    assert_int_equal(o.m[1]->type, PROTO_TASK);
    int64_t t3 = o.m[1]->task;
    uint64_t e3 = o.m[1]->epoch;
    sent_free(&o);
    /* a fenced report (lease_lost): the same */
    turn1(s, now, result("A", t3, e3 + 7, &prediction_results, false), &o);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.m[0]->status, PROTO_ACK_LEASE_LOST);
    assert_int_equal(o.m[1]->type, PROTO_TASK);
    sent_free(&o);
    /* a duplicate: the same (t2 is back from its backoff by now) */
    now += 100 * MS;
    turn1(s, now, result("A", t1, e1, &prediction_results, false), &o);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.m[0]->status, PROTO_ACK_DUPLICATE);
    assert_int_equal(o.m[1]->type, PROTO_TASK);
    assert_int_equal(o.m[1]->task, t2);
    assert_int_equal(o.m[1]->attempt, 2);
    sent_free(&o);
    /* every task is out: a report gives its slot back with nothing to fill it, and the
     * credit waits there, one per report */
    turn1(s, now, result("A", t3, e3 + 7, &prediction_results, false), &o);
    assert_int_equal(o.n, 1);
    sent_free(&o);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'pending'"), 0);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

/* A HELLO clears a worker's credits, and until a READY follows it its reports give none back:
 * a worker that stops says HELLO and no READY, so it is handed nothing more; a worker that
 * reconnected with every slot full asks with READY first. A report from a peer that is no
 * known worker (the old routing id of a worker that reconnected) is acknowledged, with an
 * ERROR that asks for a HELLO, and credits nobody. */
static void test_no_credit_back_without_ready(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-credit-hello.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 3);
    sent o;
    turn1(s, now, ready("A", 2), &o);
    assert_int_equal(count(&o, PROTO_TASK), 2);
    int64_t t1 = o.m[0]->task, t2 = o.m[1]->task;
    uint64_t e1 = o.m[0]->epoch, e2 = o.m[1]->epoch;
    sent_free(&o);
    /* the worker stops: HELLO again, then it returns one task and delivers the other */
    turn1(s, now, hello("A", "w1"), &o);
    assert_non_null(find(&o, PROTO_WELCOME));
    assert_int_equal(count(&o, PROTO_TASK), 0);
    sent_free(&o);
    turn1(s, now, returned("A", t2, e2), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_STORED);
    assert_int_equal(count(&o, PROTO_TASK), 0);
    sent_free(&o);
    /* returned unrun: pending again at once, its attempt not counted, no error recorded */
    char sql[160];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM task WHERE id = %lld AND state = 'pending' AND attempts = 0 "
             "AND last_error IS NULL AND not_before_ns = 0 AND worker IS NULL",
             (long long)t2);
    assert_int_equal(query_int(st, sql), 1);
    assert_int_equal(coordinator_sched_get_stats(s)->returned, 1);
    /* a second RETURN of that lease is fenced */
    turn1(s, now, returned("A", t2, e2), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_LEASE_LOST);
    sent_free(&o);
    turn1(s, now, result("A", t1, e1, &prediction_results, false), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_STORED);
    assert_int_equal(count(&o, PROTO_TASK), 0);
    sent_free(&o);
    now += 100 * MS; /* still nothing for the stopping worker */
    turn(s, now, NULL, 0, &o);
    assert_int_equal(count(&o, PROTO_TASK), 0);
    sent_free(&o);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'leased'"), 0);

    /* it comes back from a new routing id; a late report from the old one is answered, with
     * an ERROR, and hands out nothing */
    turn1(s, now, hello("B", "w1"), &o);
    assert_non_null(find(&o, PROTO_WELCOME));
    sent_free(&o);
    turn1(s, now, result("A", t1, e1, &prediction_results, false), &o);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.m[0]->type, PROTO_ACK);
    assert_int_equal(o.m[0]->status, PROTO_ACK_DUPLICATE);
    assert_int_equal(o.m[1]->type, PROTO_ERROR);
    assert_string_equal(o.peer[1], "A");
    sent_free(&o);
    /* once B said READY, its reports give their slots back again */
    turn1(s, now, ready("B", 1), &o);
    assert_int_equal(count(&o, PROTO_TASK), 1);
    proto_msg *t = find(&o, PROTO_TASK);
    int64_t t3 = t->task;
    uint64_t e3 = t->epoch;
    sent_free(&o);
    turn1(s, now, result("B", t3, e3, &prediction_results, false), &o);
    assert_int_equal(find(&o, PROTO_ACK)->status, PROTO_ACK_STORED);
    assert_int_equal(count(&o, PROTO_TASK), 1);
    assert_string_equal(o.peer[1], "B");
    sent_free(&o);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

/* A DROP gives no credit back (the worker asks for the dropped slots with READY), so a new
 * sweep is not sent to a worker whose tasks were dropped until it does; the late result of a
 * dropped task that the worker had sent before the DROP came is fenced, and its ACK gives that
 * slot back. */
static void test_drop_returns_no_credit(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("sched-credit-drop.db");
    int64_t now = 1000 * MS;
    coordinator_sched *s = with_sweep(st, now, 3);
    sent o;
    turn1(s, now, ready("A", 2), &o);
    assert_int_equal(count(&o, PROTO_TASK), 2);
    int64_t t1 = o.m[0]->task;
    uint64_t e1 = o.m[0]->epoch;
    sent_free(&o);
    turn1(s, now, request("C", PROTO_CANCEL, 2, "p"), &o);
    assert_int_equal(count(&o, PROTO_DROP), 2);
    sent_free(&o);
    turn1(s, now, submit("C", 3, "q", "sub-q", PREDICTIONS), &o);
    assert_non_null(find(&o, PROTO_REPLY));
    assert_int_equal(count(&o, PROTO_TASK), 0);
    sent_free(&o);
    turn(s, now + 200 * MS, NULL, 0, &o);
    assert_int_equal(count(&o, PROTO_TASK), 0);
    sent_free(&o);
    turn1(s, now + 200 * MS, ready("A", 1), &o);
    assert_int_equal(count(&o, PROTO_TASK), 1);
    sent_free(&o);
    turn1(s, now + 200 * MS, result("A", t1, e1, &prediction_results, false), &o);
    assert_int_equal(o.n, 2);
    assert_int_equal(o.m[0]->status, PROTO_ACK_LEASE_LOST);
    assert_int_equal(o.m[1]->type, PROTO_TASK);
    sent_free(&o);
    assert_int_equal(query_int(st, "SELECT count(*) FROM task WHERE state = 'leased'"), 2);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

/* A batch is full once it has taken batch_messages messages, each of a bundle's counting: the
 * service then ends it rather than read another frame; a new batch starts empty. */
static void test_batch_full_counts_messages(void **state) {
    (void)state;
    coordinator_store *st = open_fresh("batchfull.db");
    int64_t now = 1000 * MS;
    coordinator_sched_opts o = {.batch_messages = 4, .seed = 7};
    coordinator_sched *s = NULL;
    assert_int_equal(coordinator_sched_new(&s, st, &o, now, err), 0);
    sent out;
    turn1(s, now, hello("A", "w1"), &out);
    sent_free(&out);

    assert_false(coordinator_sched_batch_full(s)); /* no batch open */
    assert_int_equal(coordinator_sched_begin(s, err), 0);
    frame beats[3] = {heartbeat("A", 0, 0), heartbeat("A", 0, 0), heartbeat("A", 0, 0)};
    const uint8_t *msgs[3] = {beats[0].data, beats[1].data, beats[2].data};
    size_t lens[3] = {beats[0].len, beats[1].len, beats[2].len};
    uint8_t *bundle = NULL;
    size_t bundle_len = 0;
    assert_int_equal(proto_bundle(msgs, lens, 3, &bundle, &bundle_len, err), 0);
    assert_int_equal(coordinator_sched_input(s, "A", 1, bundle, bundle_len, now, err), 0);
    assert_false(coordinator_sched_batch_full(s)); /* 3 of 4 */
    frame one = heartbeat("A", 0, 0);
    assert_int_equal(coordinator_sched_input(s, "A", 1, one.data, one.len, now, err), 0);
    assert_true(coordinator_sched_batch_full(s)); /* 4 */
    const coordinator_send *sends = NULL;
    size_t n_sends = 0;
    assert_int_equal(coordinator_sched_tick(s, now, err), 0);
    assert_int_equal(coordinator_sched_commit(s, &sends, &n_sends, err), 0);
    assert_int_equal(coordinator_sched_begin(s, err), 0);
    assert_false(coordinator_sched_batch_full(s)); /* a new batch starts empty */
    assert_int_equal(coordinator_sched_commit(s, &sends, &n_sends, err), 0);
    assert_int_equal(coordinator_sched_get_stats(s)->messages_in, 1 + 3 + 1);

    for (size_t i = 0; i < 3; i++) {
        free(beats[i].data);
    }
    free(one.data);
    free(bundle);
    coordinator_sched_destroy(&s);
    coordinator_store_close(&st);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch_and_store_once),
        cmocka_unit_test(test_bad_results_count_as_failures),
        cmocka_unit_test(test_heartbeat_expiry_and_dead),
        cmocka_unit_test(test_fail_until_dead_and_status),
        cmocka_unit_test(test_status_reuses_dear_counts),
        cmocka_unit_test(test_submit_idempotent_and_refusals),
        cmocka_unit_test(test_cancel_drops_and_fences),
        cmocka_unit_test(test_restart_rearms_and_worker_reconnects),
        cmocka_unit_test(test_malformed_frames),
        cmocka_unit_test(test_many_workers_and_leases),
        cmocka_unit_test(test_lease_churn),
        cmocka_unit_test(test_ack_returns_credit),
        cmocka_unit_test(test_no_credit_back_without_ready),
        cmocka_unit_test(test_drop_returns_no_credit),
        cmocka_unit_test(test_dispatch_prefers_held_model),
        cmocka_unit_test(test_batch_full_counts_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
