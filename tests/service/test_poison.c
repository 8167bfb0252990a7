/*
 * test_poison: a task that fails on every attempt (RELIABILITY.md §6, row 8). Every worker runs
 * with --faults fail_task=ID; the task is dead after exactly --max-attempts attempts with its
 * last error "injected failure", every other task is done (the pool is not starved), `chesslens
 * status` shows the dead task with its key, attempts and error, and `chesslens wait` exits 1.
 * `chesslens retry-dead` puts it back to pending with its attempts reset: a worker without the
 * fault completes it on attempt 1, `wait` exits 0 and the results equal a fault-free run.
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

#include "svc_harness.h"

#define MAX_ATTEMPTS 3
#define LEASE_MS "2000"

static int run_wait(svc_env *e, const char *name) {
    const char *const args[] = {"wait", name, "--coordinator", e->endpoint, "--timeout",
                                "150",  NULL};
    svc_cli_result r;
    svc_cli(e, 180000, &r, args);
    int status = r.status;
    print_message("  chesslens wait: exit %d: %s", status, r.out);
    svc_cli_free(&r);
    return status;
}

static void test_poison_task_dies_and_retries(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], faults[64], key[128], attempts[16];
    int64_t planned = svc_scenario(e, "poison", spec, ref);

    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms", LEASE_MS, "--max-attempts", "3", NULL};
    svc_start_coordinator(e, opts);
    svc_submit(e, spec, NULL, name, sizeof name);
    /* the poison: a task in the middle of the sweep */
    int64_t ids[64];
    size_t n = svc_query_ids(e->db, ids, 64, "SELECT id FROM task ORDER BY id");
    assert_int_equal(n, (size_t)planned);
    int64_t poison = ids[n / 2];
    {
        sqlite3 *h = svc_db_open(e->db);
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(h, "SELECT key FROM task WHERE id = ?", -1, &st, NULL),
                         SQLITE_OK);
        sqlite3_bind_int64(st, 1, poison);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        snprintf(key, sizeof key, "%s", (const char *)sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
        sqlite3_close(h);
    }
    snprintf(faults, sizeof faults, "fail_task=%lld", (long long)poison);
    pid_t w1 = svc_start_worker(e, "w1", faults);
    pid_t w2 = svc_start_worker(e, "w2", faults);

    assert_int_equal(run_wait(e, name), 1); /* finished with a dead task */
    assert_int_equal(svc_query_int(e->db,
                                   "SELECT count(*) FROM task WHERE id = %lld AND state = 'dead'"
                                   " AND attempts = %d AND last_error = 'injected failure'",
                                   (long long)poison, MAX_ATTEMPTS),
                     1);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'"),
                     planned - 1);
    svc_check_invariants(e->db, planned);

    /* status names it, with its attempts and error */
    const char *const status_args[] = {"status", name, "--coordinator", e->endpoint, NULL};
    svc_cli_result r;
    svc_cli(e, 30000, &r, status_args);
    assert_int_equal(r.status, 0);
    const char *line = strstr(r.out, key);
    if (line == NULL || strstr(r.out, "injected failure") == NULL) {
        fail_msg("chesslens status does not show dead task %s with its error:\n%s", key, r.out);
    }
    size_t line_len = strcspn(line, "\n");
    snprintf(attempts, sizeof attempts, "%d", MAX_ATTEMPTS);
    char shown[512];
    snprintf(shown, sizeof shown, "%.*s", (int)line_len, line);
    if (strstr(shown, attempts) == NULL || strstr(shown, "injected failure") == NULL) {
        fail_msg("chesslens status: the line of dead task %s lacks its %d attempts or its error:"
                 "\n%s",
                 key, MAX_ATTEMPTS, r.out);
    }
    svc_cli_free(&r);

    /* retry-dead with a worker that does not fail: it completes on a fresh count */
    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    /* a stopped worker holds no credits (PROTOCOL.md, "Credits"): the retried task can only go
     * to w3 */
    pid_t w3 = svc_start_worker(e, "w3", NULL);
    const char *const retry_args[] = {"retry-dead", name, "--coordinator", e->endpoint, NULL};
    svc_cli(e, 30000, &r, retry_args);
    if (r.status != 0) {
        fail_msg("chesslens retry-dead: exit %d\n%s%s", r.status, r.out, r.err);
    }
    svc_cli_free(&r);
    assert_int_equal(run_wait(e, name), 0);
    assert_int_equal(svc_query_int(e->db,
                                   "SELECT count(*) FROM task WHERE id = %lld AND state = 'done'"
                                   " AND attempts = 1 AND worker = 'w3'",
                                   (long long)poison),
                     1);

    assert_int_equal(svc_stop(e, w3, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    assert_int_equal(cs.failed, MAX_ATTEMPTS);
    assert_int_equal(cs.stored, (uint64_t)planned);
    svc_check_invariants(e->db, planned);
    int64_t rows[4];
    svc_compare_results(e->db, ref, 1e-6, rows);
    assert_true(rows[0] > 0 && rows[1] > 0 && rows[2] > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_poison_task_dies_and_retries, svc_setup, svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
