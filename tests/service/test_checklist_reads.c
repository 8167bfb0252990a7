/*
 * test_checklist_reads: long `chesslens query` reads while the coordinator writes results as
 * fast as two workers deliver them (RELIABILITY.md §6, row 24).
 *
 * Each read is one statement that counts the done tasks, then spins for several seconds (a
 * recursive CTE), then counts the tasks that have result rows. Every done task of this sweep
 * has rows (patch pairs, a legal partial or predictions) and no other task has any, so the two
 * counts are equal in any one snapshot of the database, and differ when the second count sees
 * commits the first did not (the coordinator commits many times while one read spins). Must
 * hold: every read exits 0 with equal counts, at least one read spans coordinator commits, the
 * coordinator logs no store error (its WAL lets a writer commit past a reader; a reader holding
 * a rollback journal's shared lock for longer than the coordinator's 5 s busy timeout would
 * make a commit fail with SQLITE_BUSY), and the sweep completes with the invariants holding.
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

#define N_GAMES 48
/* rows the read spins over: about 6 s here, past the coordinator's busy timeout */
#define SPIN "15000000"

static const char *const read_sql =
    "WITH RECURSIVE spin(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM spin WHERE x < " SPIN ")"
    " SELECT (SELECT count(*) FROM task WHERE state = 'done') AS done,"
    " (SELECT count(*) FROM spin) AS spun,"
    " (SELECT count(DISTINCT task_id) FROM patch_pair) + (SELECT count(DISTINCT task_id) FROM"
    " legal_partial) + (SELECT count(DISTINCT task_id) FROM prediction) AS with_rows";

static void test_long_reads_during_writes(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], name[256];
    svc_env_init(e, "reads");
    svc_path(e, "reads.json", spec, sizeof spec);
    svc_write_spec_n(spec, "reads", N_GAMES);
    svc_make_dataset_n(e, e->db, N_GAMES);
    const char *const opts[] = {"--lease-ms", "10000", "--heartbeat-ms", "1000", NULL};
    svc_start_coordinator(e, opts);
    svc_submit(e, spec, NULL, name, sizeof name);
    int64_t planned = svc_query_int(e->db, "SELECT count(*) FROM task");
    /* slowed, so that the sweep lasts a few reads (about 20 s) */
    pid_t w1 = svc_start_worker(e, "w1", "sleep_ms=400");
    pid_t w2 = svc_start_worker(e, "w2", "sleep_ms=400");
    svc_poll_int(e->db, 1, 60000, "a task done", "SELECT count(*) FROM task WHERE state = 'done'");

    int reads = 0, spanning = 0, mid_sweep = 0;
    time_t give_up = time(NULL) + 75;
    for (;;) {
        int64_t before = svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'");
        if (before == planned) {
            break;
        }
        const char *const args[] = {"query", read_sql,    "--db", e->db, "--format",
                                    "csv",   "--timeout", "120",  NULL};
        svc_cli_result r;
        svc_cli(e, 150000, &r, args);
        int64_t after = svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'");
        if (r.status != 0) {
            fail_msg("chesslens query: exit %d\n%s%s", r.status, r.out, r.err);
        }
        long long done = -1, spun = -1, with_rows = -1;
        const char *row = strchr(r.out, '\n');
        if (row == NULL || sscanf(row + 1, "%lld,%lld,%lld", &done, &spun, &with_rows) != 3) {
            fail_msg("chesslens query printed:\n%s", r.out);
        }
        svc_cli_free(&r);
        reads++;
        spanning += after > before;
        mid_sweep += done > 0 && done < planned;
        print_message("  read %d: %lld done, %lld with rows (done %lld before, %lld after it)\n",
                      reads, done, with_rows, (long long)before, (long long)after);
        assert_int_equal(spun, atoll(SPIN));
        if (done != with_rows) {
            fail_msg("read %d saw %lld done tasks but %lld tasks with rows: not one snapshot",
                     reads, done, with_rows);
        }
        assert_true(done >= before && done <= after);
        /* a commit the reads made fail, or a sweep they stall, fails at once */
        if (svc_count_text(e->coordinator_log, "coordinator: store error: ") > 0) {
            char *log = svc_read_text(e->coordinator_log);
            fail_msg("read %d: the coordinator met a store error:\n%s", reads, log);
        }
        if (time(NULL) > give_up) {
            fail_msg("%d reads and still %lld of %lld tasks done after 75 s: are the reads "
                     "blocking the coordinator's commits?",
                     reads, (long long)after, (long long)planned);
        }
    }
    print_message("  %d reads, %d of them across commits, %d mid-sweep\n", reads, spanning,
                  mid_sweep);
    assert_true(spanning >= 1); /* else the sweep was too fast for the test to mean anything */
    assert_true(mid_sweep >= 1);
    assert_int_equal(svc_wait_sweep(e, name, 120), 0);
    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);

    char *log = svc_read_text(e->coordinator_log);
    if (strstr(log, "coordinator: store error: ") != NULL || strstr(log, "locked") != NULL) {
        fail_msg("the coordinator met store errors during the reads:\n%s", log);
    }
    free(log);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    assert_int_equal(cs.store_errors, 0);
    assert_int_equal(cs.stored, (uint64_t)planned);
    svc_check_invariants(e->db, planned);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_long_reads_during_writes, svc_setup, svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
