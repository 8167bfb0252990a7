/*
 * test_restart: kill -9 of the coordinator mid-sweep and a restart on the same database and port
 * (RELIABILITY.md §6, rows 4 and 16). The workers are not restarted: they notice the silence,
 * reconnect by themselves and say hello again, the new coordinator re-arms the leases it finds,
 * and the sweep completes with the results of a fault-free `chesslens run`. A `chesslens wait`
 * started before the kill keeps waiting through the restart and exits 0. Nothing stored before
 * the kill is stored again: the new coordinator stores exactly the tasks that were not done.
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

#include <cmocka.h>

#include "svc_harness.h"

static void test_kill9_coordinator_and_restart(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], log[SVC_PATH];
    int64_t planned = svc_scenario(e, "restart", spec, ref);

    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms", "3000", "--heartbeat-ms", "200", NULL};
    pid_t c1 = svc_start_coordinator(e, opts);
    int port = e->port;
    pid_t w1 = svc_start_worker(e, "w1", "sleep_ms=300");
    pid_t w2 = svc_start_worker(e, "w2", "sleep_ms=300");
    svc_poll_int(e->db, 2, 60000, "workers registered", "SELECT count(*) FROM worker");
    svc_submit(e, spec, NULL, name, sizeof name);
    const char *const wait_args[] = {"wait", name, "--coordinator", e->endpoint, "--timeout",
                                     "150",  NULL};
    pid_t waiter = svc_cli_spawn(e, "wait", wait_args);

    svc_poll_int(e->db, 3, 60000, "tasks done before the kill",
                 "SELECT count(*) FROM task WHERE state = 'done'");
    svc_signal(e, c1, SIGKILL);
    int st = 0;
    assert_true(svc_reap(e, c1, 10000, &st));
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    int64_t done_at_kill = svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'");
    int64_t leased_at_kill =
        svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'leased'");
    print_message("  coordinator killed: %lld of %lld tasks done, %lld leased\n",
                  (long long)done_at_kill, (long long)planned, (long long)leased_at_kill);
    if (done_at_kill >= planned) {
        fail_msg("the kill did not land mid-sweep: every task was done");
    }
    /* the database the crash left is sound */
    {
        sqlite3 *h = svc_db_open(e->db);
        sqlite3_stmt *q = NULL;
        assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA integrity_check", -1, &q, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(q), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(q, 0), "ok");
        sqlite3_finalize(q);
        sqlite3_close(h);
    }

    pid_t c2 = svc_start_coordinator(e, opts);
    assert_int_equal(e->port, port);
    assert_true(svc_running(e, w1) && svc_running(e, w2)); /* the same workers */
    if (!svc_reap(e, waiter, 150000, &st)) {
        fail_msg("chesslens wait still running 150 s after the restart");
    }
    svc_path(e, "wait.err", log, sizeof log);
    char *err_text = svc_read_text(log);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fail_msg("chesslens wait across the restart: status %d\nstderr: %s", st, err_text);
    }
    free(err_text);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'"),
                     planned);

    /* both workers came back by themselves and work for the new coordinator */
    svc_client c = {0};
    svc_client_open(&c, e->endpoint);
    proto_msg req = {.type = PROTO_WORKERS, .req = 1};
    proto_reply *r = svc_client_call(&c, &req, 30000);
    uint64_t done_by_workers = 0;
    int seen = 0;
    for (size_t i = 0; i < r->n_workers; i++) {
        const proto_worker_info *w = &r->workers[i];
        print_message("  worker %s: connected %d, %llu tasks stored since the restart\n", w->id,
                      (int)w->connected, (unsigned long long)w->tasks_done);
        if (strcmp(w->id, "w1") == 0 || strcmp(w->id, "w2") == 0) {
            assert_true(w->connected);
            seen++;
        }
        done_by_workers += w->tasks_done;
    }
    assert_int_equal(seen, 2);
    /* (results of leases the first coordinator granted count as stored, not as a worker's) */
    assert_true(done_by_workers >= 1 && done_by_workers <= (uint64_t)(planned - done_at_kill));
    proto_reply_free(&r);
    svc_client_close(&c);
    for (int i = 0; i < 2; i++) {
        svc_worker_log(e, i == 0 ? "w1" : "w2", log, sizeof log);
        assert_true(svc_wait_text(log, "reconnecting in", 0));
    }

    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    assert_int_equal(svc_stop(e, c2, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    print_message("  new coordinator: %llu stored, %llu duplicates, %llu fenced, %llu expired\n",
                  (unsigned long long)cs.stored, (unsigned long long)cs.duplicates,
                  (unsigned long long)cs.fenced, (unsigned long long)cs.expired);
    /* what was stored before the kill is not stored again */
    assert_int_equal(cs.stored, (uint64_t)(planned - done_at_kill));

    svc_check_invariants(e->db, planned);
    int64_t rows[4];
    svc_compare_results(e->db, ref, 1e-6, rows);
    assert_true(rows[0] > 0 && rows[1] > 0 && rows[2] > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill9_coordinator_and_restart, svc_setup,
                                        svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
