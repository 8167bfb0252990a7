/*
 * test_worker_faults: workers that die or freeze mid-task (RELIABILITY.md §6, rows 1 and 2).
 *
 * - kill -9 of a worker while it holds leases (its tasks slowed with --faults sleep_ms so that
 *   the kill lands mid-task): each task it held is leased again once its lease lapses, within
 *   lease + backoff + slack, and completed by the other worker on attempt 2; the sweep's results
 *   equal a fault-free `chesslens run` (every task's rows, every view's rows and checksum).
 * - SIGSTOP of a worker past its lease, then SIGCONT: its task is leased again to another
 *   worker at a new epoch, not before the old lease's deadline; the frozen worker's late report
 *   is refused (the worker logs "lease lost" and the coordinator counts it as fenced, or, when
 *   the new holder stored the task first, it is answered duplicate; the task keeps the new
 *   lease), the task is stored once, and the frozen worker comes back to the coordinator.
 * - Late reports at the coordinator itself: a raw DEALER plays a worker that takes a task and goes
 *   silent; once the task is leased again, its RESULT (a well-formed empty one, with the right
 *   digest), FAIL and HEARTBEAT of the old epoch are each answered lease_lost and change nothing;
 *   after the task is done, a RESULT of the current epoch is answered duplicate and writes
 *   nothing.
 * - A worker stopped cleanly (SIGTERM) is not leased tasks afterwards.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "coordinator/wire.h"
#include "svc_harness.h"

#define LEASE_MS 1500
#define BACKOFF_BASE_MS 1000 /* the coordinator's default: the first retry waits < 1 s */

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* `chesslens wait SWEEP` must exit 0. */
static void wait_ok(svc_env *e, const char *name) {
    const char *const args[] = {"wait", name, "--coordinator", e->endpoint, "--timeout",
                                "150",  NULL};
    svc_cli_result r;
    svc_cli(e, 180000, &r, args);
    if (r.status != 0) {
        fail_msg("chesslens wait %s: exit %d\nstdout: %s\nstderr: %s", name, r.status, r.out,
                 r.err);
    }
    svc_cli_free(&r);
}

static void test_kill9_worker_mid_task(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256];
    int64_t planned = svc_scenario(e, "kill9", spec, ref);

    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms", "1500", "--heartbeat-ms", "250", NULL};
    svc_start_coordinator(e, opts);
    pid_t w1 = svc_start_worker(e, "w1", "sleep_ms=600");
    svc_submit(e, spec, NULL, name, sizeof name);
    /* mid-sweep and mid-task: one task stored, w1 holding others */
    svc_poll_int(e->db, 1, 60000, "tasks done by w1",
                 "SELECT count(*) FROM task WHERE state = 'done'");
    svc_poll_int(e->db, 1, 60000, "tasks leased to w1",
                 "SELECT count(*) FROM task WHERE state = 'leased' AND worker = 'w1'");
    svc_signal(e, w1, SIGKILL);
    int64_t killed_at = mono_ms();
    int st = 0;
    assert_true(svc_reap(e, w1, 10000, &st));
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    /* what w1 held when it died: it cannot change them any more */
    int64_t held[8];
    size_t n_held = svc_query_ids(e->db, held, 8,
                                  "SELECT id FROM task WHERE state = 'leased' AND worker = 'w1'");
    int64_t done_at_kill = svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'");
    assert_true(n_held >= 1);
    if (done_at_kill >= planned) {
        fail_msg("the kill did not land mid-sweep: %lld of %lld tasks done",
                 (long long)done_at_kill, (long long)planned);
    }
    print_message("  w1 killed holding %zu leases, %lld of %lld tasks done\n", n_held,
                  (long long)done_at_kill, (long long)planned);
    char ids[256] = "";
    for (size_t i = 0; i < n_held; i++) {
        size_t k = strlen(ids);
        snprintf(ids + k, sizeof ids - k, "%s%lld", i > 0 ? "," : "", (long long)held[i]);
    }

    pid_t w2 = svc_start_worker(e, "w2", NULL);
    /* re-leased once the lease lapses (the SIGSTOP test checks it is not before) */
    svc_poll_int(e->db, (int64_t)n_held, 30000, "w1's tasks leased again",
                 "SELECT count(*) FROM task WHERE id IN (%s) AND attempts >= 2", ids);
    int64_t released_ms = mono_ms() - killed_at;
    print_message("  leased again %lld ms after the kill (lease %d ms)\n", (long long)released_ms,
                  LEASE_MS);
    /* lease + its first backoff + a heartbeat, with slack for a loaded machine */
    assert_true(released_ms <= LEASE_MS + BACKOFF_BASE_MS + 250 + 6000);
    wait_ok(e, name);

    /* each held task: done on attempt 2, by w2 */
    assert_int_equal(svc_query_int(e->db,
                                   "SELECT count(*) FROM task WHERE id IN (%s) AND worker = 'w2'"
                                   " AND state = 'done' AND attempts = 2",
                                   ids),
                     n_held);
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    assert_true(cs.expired >= (uint64_t)n_held);
    assert_int_equal(cs.stored, (uint64_t)planned); /* (duplicates: results sent again) */

    svc_check_invariants(e->db, planned);
    int64_t rows[4];
    svc_compare_results(e->db, ref, 1e-6, rows);
    assert_true(rows[0] > 0 && rows[1] > 0 && rows[2] > 0);
}

/* Polls the coordinator's WORKERS list up to timeout_ms for a connected worker named id. */
static bool worker_connected(const svc_env *e, const char *id, int timeout_ms) {
    svc_client c = {0};
    svc_client_open(&c, e->endpoint);
    bool found = false;
    int64_t deadline = mono_ms() + timeout_ms;
    for (uint64_t req = 1; !found; req++) {
        proto_msg m = {.type = PROTO_WORKERS, .req = req};
        proto_reply *r = svc_client_call(&c, &m, 30000);
        for (size_t i = 0; i < r->n_workers; i++) {
            found = found || (strcmp(r->workers[i].id, id) == 0 && r->workers[i].connected);
        }
        proto_reply_free(&r);
        if (found || mono_ms() >= deadline) {
            break;
        }
        struct timespec nap = {0, 100000000L};
        nanosleep(&nap, NULL);
    }
    svc_client_close(&c);
    return found;
}

static void test_sigstop_worker_is_fenced(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], w1_log[SVC_PATH];
    int64_t planned = svc_scenario(e, "sigstop", spec, ref);

    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms", "1500", "--heartbeat-ms", "250", NULL};
    svc_start_coordinator(e, opts);
    pid_t w1 = svc_start_worker(e, "w1", "sleep_ms=700");
    svc_worker_log(e, "w1", w1_log, sizeof w1_log);
    svc_submit(e, spec, NULL, name, sizeof name);
    svc_poll_int(e->db, 1, 60000, "tasks leased to w1",
                 "SELECT count(*) FROM task WHERE state = 'leased' AND worker = 'w1'");
    svc_signal(e, w1, SIGSTOP);
    int64_t stopped_at = mono_ms();
    /* the oldest task w1 holds is the one its compute thread runs */
    sqlite3 *h = svc_db_open(e->db);
    int64_t task = svc_db_int(h, "SELECT coalesce(min(id), 0) FROM task WHERE state = 'leased'"
                                 " AND worker = 'w1'");
    assert_true(task > 0);
    int64_t epoch = svc_db_int(h, "SELECT lease_epoch FROM task WHERE id = %lld", (long long)task);
    /* (the coordinator's CLOCK_MONOTONIC, the same clock as this process's) */
    int64_t deadline =
        svc_db_int(h, "SELECT lease_deadline_ns FROM task WHERE id = %lld", (long long)task);
    sqlite3_close(h);

    /* w2 is slow, so that it holds the task while w1 comes back */
    pid_t w2 = svc_start_worker(e, "w2", "sleep_ms=2000");
    svc_poll_int(e->db, 1, 30000, "w1's task leased to w2",
                 "SELECT count(*) FROM task WHERE id = %lld AND lease_epoch > %lld AND state ="
                 " 'leased' AND worker = 'w2'",
                 (long long)task, (long long)epoch);
    int64_t stopped_ms = mono_ms() - stopped_at;
    int64_t epoch2 =
        svc_query_int(e->db, "SELECT lease_epoch FROM task WHERE id = %lld", (long long)task);
    int64_t deadline2 =
        svc_query_int(e->db, "SELECT lease_deadline_ns FROM task WHERE id = %lld", (long long)task);
    print_message("  task %lld: epoch %lld leased again at epoch %lld, %lld ms after SIGSTOP\n",
                  (long long)task, (long long)epoch, (long long)epoch2, (long long)stopped_ms);
    /* not before w1's lease ran out: the new lease began (its deadline less a lease) after the
     * old deadline */
    assert_true(deadline2 - 1500 * 1000000LL > deadline);
    svc_signal(e, w1, SIGCONT);

    /* w1's heartbeat or result for the old epoch is answered lease_lost; or, when w2 stored the
     * task first (a loaded machine, a reconnect of w1), duplicate: either way nothing of it is
     * stored */
    char lost[64], lost_ack[96], dup_ack[96];
    snprintf(lost, sizeof lost, "task %lld: lease lost", (long long)task);
    snprintf(lost_ack, sizeof lost_ack, "task %lld: acknowledged (lease lost)", (long long)task);
    snprintf(dup_ack, sizeof dup_ack, "task %lld: acknowledged (duplicate)", (long long)task);
    bool was_lost = false, was_dup = false;
    for (int i = 0; i < 100 && !was_lost && !was_dup; i++) { /* up to 15 s */
        was_lost = svc_wait_text(w1_log, lost, 50) || svc_wait_text(w1_log, lost_ack, 50);
        was_dup = svc_wait_text(w1_log, dup_ack, 50);
    }
    if (!was_lost && !was_dup) {
        char *log = svc_read_text(w1_log);
        fail_msg("w1 was never told its lease of task %lld was lost:\n%s", (long long)task, log);
    }
    /* the late report changed nothing: the task keeps its new lease (epoch2, or a later one
     * should a stall of the machine have cost w2 its lease too) */
    assert_int_equal(svc_query_int(e->db,
                                   "SELECT count(*) FROM task WHERE id = %lld AND"
                                   " lease_epoch >= %lld AND coalesce(worker, '') != 'w1'",
                                   (long long)task, (long long)epoch2),
                     1);
    pid_t w3 = svc_start_worker(e, "w3", NULL); /* finishes the sweep at full speed */
    wait_ok(e, name);
    /* w1 survived and is back at the coordinator (perhaps after a reconnect: it was silent
     * for longer than the coordinator keeps a worker) */
    assert_true(svc_running(e, w1));
    assert_true(worker_connected(e, "w1", 30000));
    /* stored under a lease after the frozen one, never under the frozen one: w1 stored it only
     * if it was leased the task again later */
    assert_int_equal(svc_query_int(e->db,
                                   "SELECT count(*) FROM task WHERE id = %lld AND state = 'done'"
                                   " AND lease_epoch >= %lld",
                                   (long long)task, (long long)epoch2),
                     1);
    char stored[96], lease_line[96], again[96];
    snprintf(stored, sizeof stored, "task %lld: acknowledged (stored)", (long long)task);
    snprintf(lease_line, sizeof lease_line, "task %lld epoch ", (long long)task);
    snprintf(again, sizeof again, "task %lld again, epoch ", (long long)task);
    char *log = svc_read_text(w1_log);
    /* the leases w1 was given: "task T epoch E attempt A: ..." lines, and "task T again" */
    int leases = strstr(log, again) != NULL ? 2 : 0;
    for (const char *p = strstr(log, lease_line); p != NULL; p = strstr(p + 1, lease_line)) {
        size_t line = strcspn(p, "\n");
        const char *attempt = strstr(p, " attempt ");
        leases += attempt != NULL && (size_t)(attempt - p) < line;
    }
    bool leased_again = leases >= 2;
    if (strstr(log, stored) != NULL && !leased_again) {
        fail_msg("w1's late result of task %lld was stored:\n%s", (long long)task, log);
    }
    free(log);

    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    assert_int_equal(svc_stop(e, w3, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    print_message("  coordinator: %llu fenced, %llu expired, %llu duplicates\n",
                  (unsigned long long)cs.fenced, (unsigned long long)cs.expired,
                  (unsigned long long)cs.duplicates);
    assert_true(was_lost ? cs.fenced >= 1 : cs.duplicates >= 1);
    assert_true(cs.expired >= 1);
    assert_int_equal(cs.stored, (uint64_t)planned);

    svc_check_invariants(e->db, planned);
    int64_t rows[4];
    svc_compare_results(e->db, ref, 1e-6, rows);
    assert_true(rows[0] > 0 && rows[1] > 0 && rows[2] > 0);
}

/* The next ACK for task (other messages skipped); its status. */
static proto_ack_status ack_for(svc_client *c, int64_t task, uint64_t epoch) {
    for (;;) {
        proto_msg *m = NULL;
        if (!svc_client_recv(c, 10000, &m)) {
            fail_msg("no ACK for task %lld", (long long)task);
        }
        bool match = m->type == PROTO_ACK && m->task == task;
        proto_ack_status st = m->status;
        if (match) {
            assert_int_equal(m->epoch, epoch);
        }
        proto_msg_free(&m);
        if (match) {
            return st;
        }
    }
}

/* RESULT (task, epoch) with an empty result body ({}: a task that produced nothing), whose
 * digest is right: were it accepted, the task would be done without rows. */
static void send_empty_result(svc_client *c, int64_t task, uint64_t epoch) {
    static const uint8_t empty[] = {0x80};
    char digest[65];
    assert_int_equal(coordinator_digest_hex(empty, sizeof empty, digest), 0);
    proto_msg m = {.type = PROTO_RESULT,
                   .task = task,
                   .epoch = epoch,
                   .digest = digest,
                   .body = empty,
                   .body_len = sizeof empty};
    svc_client_send_msg(c, &m);
}

static void test_late_reports_are_fenced(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256];
    int64_t planned = svc_scenario(e, "late", spec, ref);
    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms", "1500", "--heartbeat-ms", "250", NULL};
    svc_start_coordinator(e, opts);
    svc_submit(e, spec, NULL, name, sizeof name);

    /* a worker of our own takes one task and goes silent */
    svc_client fake = {0};
    svc_client_open(&fake, e->endpoint);
    proto_msg hello = {.type = PROTO_HELLO, .worker = "fake", .backend = "cpu", .threads = 1};
    svc_client_send_msg(&fake, &hello);
    proto_msg *m = NULL;
    assert_true(svc_client_recv(&fake, 30000, &m));
    assert_int_equal(m->type, PROTO_WELCOME);
    proto_msg_free(&m);
    proto_msg ready = {.type = PROTO_READY, .credits = 1};
    svc_client_send_msg(&fake, &ready);
    assert_true(svc_client_recv(&fake, 30000, &m));
    assert_int_equal(m->type, PROTO_TASK);
    int64_t task = m->task;
    uint64_t epoch = m->epoch;
    assert_int_equal(m->attempt, 1);
    proto_msg_free(&m);

    pid_t w2 = svc_start_worker(e, "w2", "sleep_ms=2000");
    svc_poll_int(e->db, 1, 30000, "the silent worker's task leased to w2",
                 "SELECT count(*) FROM task WHERE id = %lld AND lease_epoch > %llu AND state ="
                 " 'leased' AND worker = 'w2'",
                 (long long)task, (unsigned long long)epoch);
    int64_t epoch2 =
        svc_query_int(e->db, "SELECT lease_epoch FROM task WHERE id = %lld", (long long)task);
    int64_t attempts =
        svc_query_int(e->db, "SELECT attempts FROM task WHERE id = %lld", (long long)task);

    /* every late report of the old lease is answered lease_lost and changes nothing */
    send_empty_result(&fake, task, epoch);
    assert_int_equal(ack_for(&fake, task, epoch), PROTO_ACK_LEASE_LOST);
    proto_msg late_fail = {
        .type = PROTO_FAIL, .task = task, .epoch = epoch, .error = "late failure"};
    svc_client_send_msg(&fake, &late_fail);
    assert_int_equal(ack_for(&fake, task, epoch), PROTO_ACK_LEASE_LOST);
    proto_msg late_beat = {.type = PROTO_HEARTBEAT, .task = task, .epoch = epoch, .progress = 0.5};
    svc_client_send_msg(&fake, &late_beat);
    assert_int_equal(ack_for(&fake, task, epoch), PROTO_ACK_LEASE_LOST);
    /* (not done: only w2 can finish it, after its 2 s sleep; still leased at epoch2 unless a
     * stall of the machine made w2 lose it meanwhile) */
    assert_int_equal(svc_query_int(e->db,
                                   "SELECT count(*) FROM task WHERE id = %lld AND state != 'done'"
                                   " AND lease_epoch >= %lld AND attempts >= %lld"
                                   " AND coalesce(last_error, '') != 'late failure'",
                                   (long long)task, (long long)epoch2, (long long)attempts),
                     1);

    pid_t w3 = svc_start_worker(e, "w3", NULL); /* finishes the sweep at full speed */
    wait_ok(e, name);
    /* after it is done: the old lease is still refused, the current one is a duplicate that
     * writes nothing */
    send_empty_result(&fake, task, epoch);
    assert_int_not_equal(ack_for(&fake, task, epoch), PROTO_ACK_STORED);
    send_empty_result(&fake, task, (uint64_t)epoch2);
    assert_int_equal(ack_for(&fake, task, (uint64_t)epoch2), PROTO_ACK_DUPLICATE);
    svc_client_close(&fake);

    assert_int_equal(svc_stop(e, w2, 30000), 0);
    assert_int_equal(svc_stop(e, w3, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    assert_true(cs.fenced >= 3);
    assert_true(cs.duplicates >= 1);
    assert_int_equal(cs.stored, (uint64_t)planned);
    svc_check_invariants(e->db, planned);
    svc_compare_results(e->db, ref, 1e-6, NULL);
}

/* A worker stopped cleanly (SIGTERM) must not be handed tasks: were its credits kept until the
 * coordinator forgets it (3 silent leases), tasks leased to it could not be delivered
 * (EHOSTUNREACH: "sends dropped") and each such lease would burn an attempt when it lapses, so
 * a task could go dead without ever running. A stopping worker says HELLO (credits 0) and
 * sends no READY after it (PROTOCOL.md, "Credits"). */
static void test_stopped_worker_gets_no_tasks(void **state) {
    svc_env *e = *state;
    svc_env_init(e, "departed");
    char spec[SVC_PATH], name[256];
    svc_path(e, "departed.json", spec, sizeof spec);
    svc_write_spec(spec, "departed");
    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms", "2000", "--max-attempts", "2", NULL};
    svc_start_coordinator(e, opts);
    pid_t w1 = svc_start_worker(e, "w1", NULL);
    pid_t w2 = svc_start_worker(e, "w2", NULL);
    svc_poll_int(e->db, 2, 60000, "workers registered", "SELECT count(*) FROM worker");
    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    pid_t w3 = svc_start_worker(e, "w3", NULL);
    svc_poll_int(e->db, 3, 60000, "w3 registered", "SELECT count(*) FROM worker");
    svc_submit(e, spec, NULL, name, sizeof name);
    wait_ok(e, name);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE attempts != 1"), 0);
    assert_int_equal(svc_stop(e, w3, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    assert_int_equal(cs.dropped, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill9_worker_mid_task, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_sigstop_worker_is_fenced, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_late_reports_are_fenced, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_stopped_worker_gets_no_tasks, svc_setup, svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
