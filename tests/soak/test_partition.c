/*
 * test_partition: a network partition of one worker for two leases, then healed
 * (RELIABILITY.md §6, row 7). The worker wp runs in a network namespace of its own, joined to
 * the test's namespace (where the coordinator listens) by a veth pair; setting wp's end of the
 * pair down cuts it off, as a switch failure would, while its process and TCP state live on.
 *
 * What must hold: the task wp held is leased again to w2 (on the coordinator's side of the
 * cut) once wp's lease lapsed; after the heal wp reconnects and says hello by itself (its log
 * shows a reconnect and a second welcome, the coordinator lists it connected); wp's late result
 * for the old lease is refused: answered lease_lost (fenced) or, when w2 stored the task first,
 * duplicate, never stored; the sweep completes with done + dead = submitted, every task stored
 * once, and the results of a fault-free `chesslens run`.
 *
 * Needs root (network namespaces): skipped (77) otherwise, saying why.
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

#include "soak.h"

/* A lease of 1.5 s keeps the test short; heartbeats every 250 ms mean wp notices the silence
 * within 0.75 s of the cut. On a loaded 2-core machine a heartbeat can be late by a few hundred
 * ms, so the waits below allow seconds, not milliseconds. */
#define LEASE_MS 1500

typedef struct fixture {
    soak_fixture base; /* first */
} fixture;

static int setup(void **state) {
    return soak_fixture_setup(state, sizeof(fixture));
}

/* Whether the coordinator's WORKERS list shows id connected, polled up to timeout_ms. */
static bool worker_connected(const svc_env *e, const char *id, int timeout_ms) {
    svc_client c = {0};
    svc_client_open(&c, e->endpoint);
    bool found = false;
    int64_t deadline = soak_now_ms() + timeout_ms;
    for (uint64_t req = 1; !found && soak_now_ms() < deadline; req++) {
        proto_msg m = {.type = PROTO_WORKERS, .req = req};
        proto_reply *r = svc_client_call(&c, &m, 30000);
        for (size_t i = 0; i < r->n_workers; i++) {
            found = found || (strcmp(r->workers[i].id, id) == 0 && r->workers[i].connected);
        }
        proto_reply_free(&r);
        if (!found) {
            soak_nap_ms(100);
        }
    }
    svc_client_close(&c);
    return found;
}

static void test_partition_one_worker_then_heal(void **state) {
    fixture *f = *state;
    svc_env *e = &f->base.e;
    soak_net *net = f->base.net;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], wp_log[SVC_PATH];
    int64_t planned = svc_scenario(e, "partition", spec, ref);
    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms",
                                "1500",
                                "--heartbeat-ms",
                                "250",
                                "--pairs-per-task",
                                SVC_PAIRS_PER_TASK,
                                "--games-per-task",
                                SVC_GAMES_PER_TASK,
                                NULL};
    svc_start_coordinator_on(e, "0.0.0.0", opts, NULL);

    /* wp's tasks take 1 s, so that the cut lands while it holds some */
    pid_t wp = soak_start_worker(e, net, 0, "wp", 0, "sleep_ms=1000", NULL);
    svc_path(e, "worker-wp-0.log", wp_log, sizeof wp_log);
    if (!svc_wait_text(wp_log, "welcome:", 30000)) {
        fail_msg("wp (in namespace %s) was not welcomed through %s", net->ns[0], net->addr[0]);
    }
    svc_submit(e, spec, NULL, name, sizeof name);
    svc_poll_int(e->db, 1, 60000, "tasks leased to wp",
                 "SELECT count(*) FROM task WHERE state = 'leased' AND worker = 'wp'");
    soak_net_partition(net, 0, true);
    int64_t cut_at = soak_now_ms();
    sqlite3 *h = svc_db_open(e->db);
    int64_t task = svc_db_int(h, "SELECT coalesce(min(id), 0) FROM task WHERE state = 'leased'"
                                 " AND worker = 'wp'");
    assert_true(task > 0);
    int64_t epoch = svc_db_int(h, "SELECT lease_epoch FROM task WHERE id = %lld", (long long)task);
    sqlite3_close(h);
    print_message("  cut wp off holding task %lld at epoch %lld\n", (long long)task,
                  (long long)epoch);

    /* w2 is slow (2 s a task), so that it still holds the task when wp's result comes back */
    pid_t w2 = soak_start_worker(e, NULL, -1, "w2", 0, "sleep_ms=2000", NULL);
    svc_poll_int(e->db, 1, 30000, "wp's task leased again to w2",
                 "SELECT count(*) FROM task WHERE id = %lld AND lease_epoch > %lld"
                 " AND worker = 'w2'",
                 (long long)task, (long long)epoch);
    int64_t released_ms = soak_now_ms() - cut_at;
    /* the cut lasts two leases at least */
    while (soak_now_ms() - cut_at < 2 * LEASE_MS) {
        soak_nap_ms(20);
    }
    soak_net_partition(net, 0, false);
    int64_t cut_ms = soak_now_ms() - cut_at;
    print_message("  task leased again to w2 %lld ms after the cut; healed after %lld ms\n",
                  (long long)released_ms, (long long)cut_ms);

    /* wp comes back by itself and its old lease's report is refused */
    char lost_ack[96], dup_ack[96], stored_ack[96];
    snprintf(lost_ack, sizeof lost_ack, "task %lld: acknowledged (lease lost)", (long long)task);
    snprintf(dup_ack, sizeof dup_ack, "task %lld: acknowledged (duplicate)", (long long)task);
    snprintf(stored_ack, sizeof stored_ack, "task %lld: acknowledged (stored)", (long long)task);
    int64_t deadline = soak_now_ms() + 60000;
    while (svc_count_text(wp_log, lost_ack) + svc_count_text(wp_log, dup_ack) == 0) {
        if (svc_count_text(wp_log, stored_ack) > 0) {
            fail_msg("wp's result for the lease it lost while cut off was stored (not fenced)");
        }
        if (soak_now_ms() >= deadline) {
            char *log = svc_read_text(wp_log);
            fail_msg("wp's late result of task %lld was not answered within 60 s of the heal:\n"
                     "%s",
                     (long long)task, log);
        }
        soak_nap_ms(50);
    }
    assert_int_equal(svc_count_text(wp_log, stored_ack), 0);
    bool fenced = svc_count_text(wp_log, lost_ack) > 0;
    print_message("  wp's late result: %s\n", fenced ? "fenced (lease lost)" : "duplicate");
    assert_true(svc_count_text(wp_log, "reconnecting in") >= 1);
    assert_true(svc_count_text(wp_log, "welcome:") >= 2);
    assert_true(worker_connected(e, "wp", 30000));

    const char *const wait_args[] = {"wait", name, "--coordinator", e->endpoint, "--timeout",
                                     "150",  NULL};
    svc_cli_result r;
    svc_cli(e, 180000, &r, wait_args);
    if (r.status != 0) {
        fail_msg("chesslens wait: exit %d\n%s%s", r.status, r.out, r.err);
    }
    svc_cli_free(&r);
    /* the task is w2's: done once, under the lease wp lost */
    assert_int_equal(svc_query_int(e->db,
                                   "SELECT count(*) FROM task WHERE id = %lld AND state = 'done'"
                                   " AND worker = 'w2' AND lease_epoch > %lld",
                                   (long long)task, (long long)epoch),
                     1);
    assert_true(svc_running(e, w2) && svc_running(e, wp));
    assert_int_equal(svc_stop(e, wp, 30000), 0);
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    print_message("  coordinator: %llu stored, %llu expired, %llu fenced, %llu duplicates\n",
                  (unsigned long long)cs.stored, (unsigned long long)cs.expired,
                  (unsigned long long)cs.fenced, (unsigned long long)cs.duplicates);
    assert_true(cs.expired >= 1);
    assert_true(fenced ? cs.fenced >= 1 : cs.duplicates >= 1);
    assert_int_equal(cs.stored, (uint64_t)planned);

    int64_t done = svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'");
    int64_t dead = svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'dead'");
    assert_int_equal(done + dead, planned);
    svc_check_invariants(e->db, planned);
    int64_t rows[4];
    svc_compare_results(e->db, ref, 1e-6, rows);
    assert_true(rows[0] > 0 && rows[1] > 0 && rows[2] > 0);
}

int main(void) {
    static soak_net net;
    char why[256];
    if (!soak_net_init(&net, 1, why, sizeof why)) {
        printf("SKIPPED: test_partition needs network namespaces: %s\n", why);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_partition_one_worker_then_heal, setup,
                                                 soak_fixture_teardown, &net),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    soak_net_teardown(&net);
    return rc;
}
