/*
 * test_checklist_acks: results that reach the coordinator more than once (RELIABILITY.md §6,
 * rows 5 and 6), with the real coordinator and real or raw workers on loopback.
 *
 * - Row 5, a lost ACK: the coordinator's fault drill (--faults drop_result_acks=2) does not send
 *   the ACK (stored) of the first two results it stores. The worker must notice the silence,
 *   reconnect and send the same (task, epoch, digest) again, which the coordinator answers
 *   duplicate and stores nothing for: the drill logs each delivery again with how it compares to
 *   the first, the worker logs "acknowledged (duplicate)" for those tasks and never "stored",
 *   and every task's rows equal a fault-free run.
 * - Row 6, the same result twice, also from two peers at once: two raw DEALER sockets play
 *   workers; one is leased four tasks, whose real results this process computes with the
 *   worker's own executor; then both sockets send them, back to back without waiting (twice from
 *   one peer, once from each in either order, twice from each). Every task gets exactly one
 *   ACK stored and every other delivery ACK duplicate, no ERROR and no failed attempt; the rows
 *   equal a fault-free run.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "coordinator/wire.h"
#include "svc_harness.h"
#include "worker/service.h"

#define DROPPED_ACKS 2

static void test_lost_result_ack_is_resent(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], w1_log[SVC_PATH];
    int64_t planned = svc_scenario(e, "dropack", spec, ref);
    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms",         "3000", "--heartbeat-ms", "250", "--faults",
                                "drop_result_acks=2", NULL};
    svc_start_coordinator(e, opts);
    pid_t w1 = svc_start_worker(e, "w1", NULL);
    svc_worker_log(e, "w1", w1_log, sizeof w1_log);
    svc_submit(e, spec, NULL, name, sizeof name);
    assert_int_equal(svc_wait_sweep(e, name, 120), 0);
    /* The sweep can be done before the worker gave up on the ACKs it missed (a tiny model's
     * tasks take milliseconds, and the coordinator sends the next TASKs whatever the worker
     * heard): give it time to send them again (3 heartbeat intervals after each, here 0.75 s)
     * before it is stopped, as a stopping worker does not reconnect. */
    for (int waited = 0;
         waited < 20000 && svc_count_text(e->coordinator_log, "fault drill: task ") <
                               2 * DROPPED_ACKS; /* a delivery again and its answer, each */
         waited += 50) {
        nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL);
    }
    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);

    /* the ACKs the drill dropped, and what followed for each */
    char *log = svc_read_text(e->coordinator_log);
    const char *needle = "fault drill: dropped the ACK (stored) of task ";
    int64_t tasks[DROPPED_ACKS];
    size_t n = 0;
    for (const char *p = strstr(log, needle); p != NULL; p = strstr(p + 1, needle)) {
        assert_true(n < DROPPED_ACKS);
        tasks[n++] = strtoll(p + strlen(needle), NULL, 10);
    }
    if (n != DROPPED_ACKS) {
        fail_msg("the drill dropped %zu ACKs, not %d:\n%s", n, DROPPED_ACKS, log);
    }
    char *wlog = svc_read_text(w1_log);
    size_t resent = 0;
    for (size_t i = 0; i < n; i++) {
        char again[128], same[160], dup[128], worker_dup[96], worker_stored[96];
        snprintf(again, sizeof again,
                 "fault drill: task %lld delivered again: ", (long long)tasks[i]);
        snprintf(dup, sizeof dup, "fault drill: task %lld epoch ", (long long)tasks[i]);
        snprintf(worker_dup, sizeof worker_dup, "task %lld: acknowledged (duplicate)",
                 (long long)tasks[i]);
        snprintf(worker_stored, sizeof worker_stored, "task %lld: acknowledged (stored)",
                 (long long)tasks[i]);
        size_t deliveries = 0, same_ones = 0, answers = 0, dup_answers = 0;
        for (const char *p = strstr(log, again); p != NULL; p = strstr(p + 1, again)) {
            deliveries++;
            size_t line = strcspn(p, "\n");
            snprintf(same, sizeof same, "%.*s", (int)line, p);
            same_ones += strstr(same, ": the same epoch and digest") != NULL;
        }
        for (const char *p = strstr(log, dup); p != NULL; p = strstr(p + 1, dup)) {
            size_t line = strcspn(p, "\n");
            const char *answered = strstr(p, " answered ");
            if (answered != NULL && (size_t)(answered - p) < line) {
                answers++;
                dup_answers += strncmp(answered, " answered duplicate again", 25) == 0;
            }
        }
        print_message("  task %lld: ACK dropped, delivered again %zu times (%zu the same), "
                      "answered duplicate %zu of %zu times\n",
                      (long long)tasks[i], deliveries, same_ones, dup_answers, answers);
        if (deliveries == 0 || same_ones != deliveries) {
            fail_msg("task %lld: the worker did not send the same (task, epoch, digest) again:\n%s",
                     (long long)tasks[i], log);
        }
        if (answers != deliveries || dup_answers != answers) {
            fail_msg("task %lld: a delivery again was not answered duplicate:\n%s",
                     (long long)tasks[i], log);
        }
        if (strstr(wlog, worker_dup) == NULL || strstr(wlog, worker_stored) != NULL) {
            fail_msg("task %lld: the worker did not hear duplicate (and only that):\n%s",
                     (long long)tasks[i], wlog);
        }
        resent += deliveries;
    }
    /* it went again because the worker gave the silent connection up */
    assert_true(svc_count_text(w1_log, "coordinator silent: reconnecting") >= 1);
    free(wlog);
    free(log);

    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    print_message("  %zu resends; coordinator: %llu stored, %llu duplicates, %llu failed\n", resent,
                  (unsigned long long)cs.stored, (unsigned long long)cs.duplicates,
                  (unsigned long long)cs.failed);
    assert_int_equal(cs.stored, (uint64_t)planned);
    assert_true(cs.duplicates >= resent);
    assert_int_equal(cs.failed, 0);
    assert_int_equal(cs.store_errors, 0);
    svc_check_invariants(e->db, planned);
    svc_compare_results(e->db, ref, 1e-6, NULL); /* every task's rows once */
}

/* ---- row 6 ---- */

/* A raw peer that has said hello and been welcomed. */
static void fake_hello(svc_client *c, const char *endpoint, const char *id) {
    svc_client_open(c, endpoint);
    proto_msg hello = {.type = PROTO_HELLO, .worker = id, .backend = "cpu", .threads = 1};
    svc_client_send_msg(c, &hello);
    proto_msg *m = NULL;
    assert_true(svc_client_recv(c, 30000, &m));
    assert_int_equal(m->type, PROTO_WELCOME);
    proto_msg_free(&m);
}

typedef struct computed {
    int64_t task;
    uint64_t epoch;
    uint8_t *body;
    size_t len;
    char digest[65];
} computed;

static void no_progress(void *ctx, double fraction) {
    (void)ctx;
    (void)fraction;
}

/* Runs TASK m with the worker's executor, as chesslens-worker would. */
static void compute(worker_compute *c, const proto_msg *m, computed *out) {
    worker_task_in t = worker_task_in_of(m);
    uint64_t rows = 0;
    char err[COMMON_ERR_LEN];
    out->task = m->task;
    out->epoch = m->epoch;
    if (c->run(c->self, &t, no_progress, NULL, &out->body, &out->len, &rows, err) != 0) {
        fail_msg("task %lld: %s", (long long)m->task, err);
    }
    assert_int_equal(coordinator_digest_hex(out->body, out->len, out->digest), 0);
}

static void send_result(svc_client *c, const computed *r) {
    proto_msg m = {.type = PROTO_RESULT,
                   .task = r->task,
                   .epoch = r->epoch,
                   .digest = r->digest,
                   .body = r->body,
                   .body_len = r->len};
    svc_client_send_msg(c, &m);
}

#define N_LEASED 4
#define MAX_EXTRA 64

/* What a peer heard: the ACK statuses per task (in order), and the tasks leased to it meanwhile
 * (an ACK of a report returns a credit, so the coordinator may send another TASK). */
typedef struct heard {
    size_t n_acks[N_LEASED];
    proto_ack_status acks[N_LEASED][8];
    size_t n_extra;
    int64_t extra_task[MAX_EXTRA];
    uint64_t extra_epoch[MAX_EXTRA];
} heard;

/* Reads c until it has had want ACKs for the tasks of r; an ERROR fails the test. */
static void collect(svc_client *c, const computed *r, size_t want, heard *h) {
    size_t got = 0;
    while (got < want) {
        proto_msg *m = NULL;
        if (!svc_client_recv(c, 20000, &m)) {
            fail_msg("%zu of %zu ACKs heard", got, want);
        }
        if (m->type == PROTO_ERROR) {
            fail_msg("the coordinator answered with an error: %s", m->error);
        }
        if (m->type == PROTO_TASK) {
            assert_true(h->n_extra < MAX_EXTRA);
            h->extra_task[h->n_extra] = m->task;
            h->extra_epoch[h->n_extra++] = m->epoch;
        }
        for (size_t i = 0; m->type == PROTO_ACK && i < N_LEASED; i++) {
            if (m->task == r[i].task) {
                assert_int_equal(m->epoch, r[i].epoch);
                assert_true(h->n_acks[i] < 8);
                h->acks[i][h->n_acks[i]++] = m->status;
                got++;
            }
        }
        proto_msg_free(&m);
    }
}

static void test_same_result_from_two_peers(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], err[COMMON_ERR_LEN];
    int64_t planned = svc_scenario(e, "twice", spec, ref);
    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms", "20000", "--heartbeat-ms", "1000", NULL};
    svc_start_coordinator(e, opts);
    svc_submit(e, spec, NULL, name, sizeof name);

    svc_client a = {0}, b = {0};
    fake_hello(&a, e->endpoint, "peer-a");
    fake_hello(&b, e->endpoint, "peer-b"); /* known, but asks for no task */
    proto_msg ready = {.type = PROTO_READY, .credits = N_LEASED};
    svc_client_send_msg(&a, &ready);
    worker_compute exec = {0};
    assert_int_equal(worker_compute_executor(&exec, "cpu", 1, 1, err), 0);
    computed r[N_LEASED];
    for (size_t i = 0; i < N_LEASED; i++) {
        proto_msg *m = NULL;
        assert_true(svc_client_recv(&a, 30000, &m));
        assert_int_equal(m->type, PROTO_TASK);
        compute(&exec, m, &r[i]);
        proto_msg_free(&m);
    }
    worker_compute_destroy(&exec);

    /* every delivery leaves before any ACK is read: they meet at the coordinator */
    send_result(&a, &r[0]); /* the same peer twice */
    send_result(&a, &r[0]);
    send_result(&a, &r[1]); /* each peer once, a first */
    send_result(&b, &r[1]);
    send_result(&b, &r[2]); /* each peer once, b first */
    send_result(&a, &r[2]);
    for (int k = 0; k < 2; k++) { /* each peer twice */
        send_result(&a, &r[3]);
        send_result(&b, &r[3]);
    }
    heard ha, hb;
    memset(&ha, 0, sizeof ha);
    memset(&hb, 0, sizeof hb);
    collect(&a, r, 6, &ha);
    collect(&b, r, 4, &hb);
    static const size_t deliveries[N_LEASED] = {2, 2, 2, 4};
    size_t total = 0;
    for (size_t i = 0; i < N_LEASED; i++) {
        size_t stored = 0, dup = 0;
        for (size_t k = 0; k < ha.n_acks[i]; k++) {
            stored += ha.acks[i][k] == PROTO_ACK_STORED;
            dup += ha.acks[i][k] == PROTO_ACK_DUPLICATE;
        }
        for (size_t k = 0; k < hb.n_acks[i]; k++) {
            stored += hb.acks[i][k] == PROTO_ACK_STORED;
            dup += hb.acks[i][k] == PROTO_ACK_DUPLICATE;
        }
        print_message("  task %lld: %zu deliveries: %zu stored, %zu duplicate\n",
                      (long long)r[i].task, deliveries[i], stored, dup);
        assert_int_equal(stored, 1);
        assert_int_equal(dup, deliveries[i] - 1);
        total += deliveries[i];
    }
    /* one peer's reports are answered in order: its first is the one stored */
    assert_int_equal(ha.acks[0][0], PROTO_ACK_STORED);
    assert_int_equal(ha.acks[0][1], PROTO_ACK_DUPLICATE);
    for (size_t i = 0; i < N_LEASED; i++) {
        assert_int_equal(svc_query_int(e->db,
                                       "SELECT count(*) FROM task WHERE id = %lld AND"
                                       " state = 'done' AND attempts = 1",
                                       (long long)r[i].task),
                         1);
    }

    /* peer a stops (HELLO clears its credits) and hands back what it was leased meanwhile */
    proto_msg bye = {.type = PROTO_HELLO, .worker = "peer-a", .backend = "cpu", .threads = 1};
    svc_client_send_msg(&a, &bye);
    for (;;) {
        proto_msg *m = NULL;
        if (!svc_client_recv(&a, 1000, &m)) {
            break; /* quiet for a second: nothing more is coming */
        }
        if (m->type == PROTO_TASK) {
            assert_true(ha.n_extra < MAX_EXTRA);
            ha.extra_task[ha.n_extra] = m->task;
            ha.extra_epoch[ha.n_extra++] = m->epoch;
        }
        assert_int_not_equal(m->type, PROTO_ERROR);
        proto_msg_free(&m);
        for (; ha.n_extra > 0; ha.n_extra--) {
            proto_msg ret = {.type = PROTO_RETURN,
                             .task = ha.extra_task[ha.n_extra - 1],
                             .epoch = ha.extra_epoch[ha.n_extra - 1]};
            svc_client_send_msg(&a, &ret);
        }
    }
    for (; ha.n_extra > 0; ha.n_extra--) {
        proto_msg ret = {.type = PROTO_RETURN,
                         .task = ha.extra_task[ha.n_extra - 1],
                         .epoch = ha.extra_epoch[ha.n_extra - 1]};
        svc_client_send_msg(&a, &ret);
    }
    assert_int_equal(hb.n_extra, 0); /* b asked for nothing */
    svc_client_close(&a);
    svc_client_close(&b);
    for (size_t i = 0; i < N_LEASED; i++) {
        free(r[i].body);
    }

    pid_t w1 = svc_start_worker(e, "w1", NULL); /* the rest of the sweep */
    assert_int_equal(svc_wait_sweep(e, name, 120), 0);
    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    print_message("  coordinator: %llu stored, %llu duplicates, %llu fenced, %llu failed\n",
                  (unsigned long long)cs.stored, (unsigned long long)cs.duplicates,
                  (unsigned long long)cs.fenced, (unsigned long long)cs.failed);
    assert_int_equal(cs.stored, (uint64_t)planned);
    assert_int_equal(cs.duplicates, total - N_LEASED);
    assert_int_equal(cs.fenced, 0);
    assert_int_equal(cs.failed, 0);
    assert_int_equal(cs.bad_frames, 0);
    assert_int_equal(cs.store_errors, 0);
    svc_check_invariants(e->db, planned);
    svc_compare_results(e->db, ref, 1e-6, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lost_result_ack_is_resent, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_same_result_from_two_peers, svc_setup, svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
