/*
 * test_e2e: the sweep service end to end, as a user runs it: chesslens-coordinator, two
 * chesslens-worker processes and the chesslens client commands, on a loopback port of their own.
 *
 * - A sweep (patching plus two aggregates, 22 tasks) submitted with `chesslens submit` and
 *   awaited with `chesslens wait` stores exactly what `chesslens run` stores for the same spec in
 *   another database: every task with the same result rows, every view's rows with values within
 *   1e-6; both workers ran tasks; status, list and workers answer.
 * - A submission sent again is one sweep: the same --submission-id twice (CLI), the same
 *   submission twice in one batch (raw SUBMIT), the default id twice; a new id for a taken name
 *   is refused with exit 1 and changes nothing.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "svc_harness.h"

static void test_sweep_matches_run(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256];
    int64_t planned = svc_scenario(e, "e2e", spec, ref);
    assert_true(planned >= 10);

    svc_make_dataset(e, e->db);
    /* every commit fsynced (the default, normal, is what the other service tests run) */
    const char *const opts[] = {"--lease-ms", "20000", "--sync", "full", NULL};
    svc_start_coordinator(e, opts);
    char *log = svc_read_text(e->coordinator_log);
    assert_non_null(strstr(log, "(synchronous full)"));
    free(log);
    pid_t w1 = svc_start_worker(e, "w1", NULL);
    pid_t w2 = svc_start_worker(e, "w2", NULL);
    /* both said hello before there is work, so that both get some */
    svc_poll_int(e->db, 2, 60000, "workers registered", "SELECT count(*) FROM worker");

    svc_submit(e, spec, NULL, name, sizeof name);
    assert_string_equal(name, "e2e");
    const char *const wait_args[] = {"wait", name, "--coordinator", e->endpoint, "--timeout",
                                     "150",  NULL};
    svc_cli_result r;
    svc_cli(e, 180000, &r, wait_args);
    if (r.status != 0) {
        fail_msg("chesslens wait: exit %d\nstdout: %s\nstderr: %s", r.status, r.out, r.err);
    }
    assert_true(strlen(r.out) > 0); /* the summary line */
    svc_cli_free(&r);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'"),
                     planned);
    /* both workers ran tasks */
    assert_int_equal(svc_query_int(e->db, "SELECT count(DISTINCT worker) FROM task"), 2);

    const char *const status_args[] = {"status", name, "--coordinator", e->endpoint, NULL};
    svc_cli(e, 30000, &r, status_args);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "e2e"));
    svc_cli_free(&r);
    const char *const list_args[] = {"list", "--coordinator", e->endpoint, NULL};
    svc_cli(e, 30000, &r, list_args);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "e2e"));
    svc_cli_free(&r);
    const char *const workers_args[] = {"workers", "--coordinator", e->endpoint, NULL};
    svc_cli(e, 30000, &r, workers_args);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "w1"));
    assert_non_null(strstr(r.out, "w2"));
    svc_cli_free(&r);

    /* a clean stop of everything; the counters say each task ran once */
    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats st;
    assert_true(svc_coord_stats_read(e->coordinator_log, &st));
    assert_int_equal(st.dispatched, (uint64_t)planned);
    assert_int_equal(st.stored, (uint64_t)planned);
    /* (a duplicate would be a result sent again after a reconnect: allowed, and not stored) */
    assert_int_equal(st.failed + st.expired, 0);

    svc_check_invariants(e->db, planned);
    int64_t rows[4];
    svc_compare_results(e->db, ref, 1e-6, rows);
    assert_true(rows[0] > 0 && rows[1] > 0 && rows[2] > 0); /* patch_effects, predictions, legal */
}

/* Sends SUBMIT (submission, spec text) and returns its reply. */
static proto_reply *raw_submit(svc_client *c, uint64_t req, const char *submission,
                               const char *spec_text) {
    proto_msg m = {.type = PROTO_SUBMIT, .req = req, .submission = submission, .spec = spec_text};
    return svc_client_call(c, &m, 30000);
}

static void test_resubmit_is_one_sweep(void **state) {
    svc_env *e = *state;
    svc_env_init(e, "resubmit");
    char spec[SVC_PATH], spec_b[SVC_PATH], spec_c[SVC_PATH], name[256], again[256];
    svc_path(e, "resub.json", spec, sizeof spec);
    svc_path(e, "resub-b.json", spec_b, sizeof spec_b);
    svc_path(e, "resub-c.json", spec_c, sizeof spec_c);
    svc_write_spec(spec, "resub");
    svc_write_spec(spec_b, "resub-b");
    svc_write_spec(spec_c, "resub-c");
    svc_make_dataset(e, e->db);
    svc_start_coordinator(e, NULL); /* no workers: every task stays pending */

    /* the same explicit id twice: one sweep, one task set */
    svc_submit(e, spec, "sub-1", name, sizeof name);
    assert_string_equal(name, "resub");
    int64_t tasks = svc_query_int(e->db, "SELECT count(*) FROM task");
    assert_true(tasks >= 10);
    svc_submit(e, spec, "sub-1", again, sizeof again);
    assert_string_equal(again, name);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM sweep"), 1);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task"), tasks);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM sweep WHERE submission_id ="
                                          " 'sub-1'"),
                     1);

    /* the coordinator says it existed, with the same id and task count */
    svc_client c = {0};
    svc_client_open(&c, e->endpoint);
    char *text = svc_read_text(spec);
    proto_reply *r = raw_submit(&c, 1, "sub-1", text);
    assert_true(r->existed);
    assert_string_equal(r->sweep, "resub");
    assert_int_equal(r->sweep_id, svc_query_int(e->db, "SELECT id FROM sweep"));
    assert_int_equal(r->n_tasks, (uint64_t)tasks);
    proto_reply_free(&r);
    free(text);

    /* another id for the same name: refused, nothing added */
    const char *const other[] = {"submit", spec, "--coordinator", e->endpoint, "--submission-id",
                                 "sub-2",  NULL};
    svc_cli_result cr;
    svc_cli(e, 30000, &cr, other);
    assert_int_equal(cr.status, 1);
    assert_true(strlen(cr.err) > 0);
    svc_cli_free(&cr);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM sweep"), 1);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task"), tasks);

    /* the default id, derived from the spec: twice is once */
    svc_submit(e, spec_b, NULL, name, sizeof name);
    assert_string_equal(name, "resub-b");
    svc_submit(e, spec_b, NULL, again, sizeof again);
    assert_string_equal(again, "resub-b");
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM sweep"), 2);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task"), 2 * tasks);

    /* the same submission twice back to back (one batch, most likely): the first creates it,
     * the second finds it */
    text = svc_read_text(spec_c);
    for (uint64_t req = 10; req <= 11; req++) {
        proto_msg m = {.type = PROTO_SUBMIT, .req = req, .submission = "raw-1", .spec = text};
        svc_client_send_msg(&c, &m);
    }
    int64_t ids[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        proto_msg *a = NULL;
        assert_true(svc_client_recv(&c, 30000, &a));
        assert_int_equal(a->type, PROTO_REPLY);
        assert_true(a->req == 10 || a->req == 11);
        char err[COMMON_ERR_LEN];
        if (proto_reply_decode(PROTO_SUBMIT, a->body, a->body_len, &r, err) != 0) {
            fail_msg("submit reply: %s", err);
        }
        assert_int_equal(r->existed, a->req == 11); /* answered in order */
        assert_string_equal(r->sweep, "resub-c");
        ids[a->req - 10] = r->sweep_id;
        proto_reply_free(&r);
        proto_msg_free(&a);
    }
    free(text);
    assert_int_equal(ids[0], ids[1]);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM sweep"), 3);
    assert_int_equal(svc_query_int(e->db, "SELECT id FROM sweep WHERE name = 'resub-c'"), ids[0]);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task"), 3 * tasks);
    svc_client_close(&c);

    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_check_invariants(e->db, 3 * tasks);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE state != 'pending'"), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sweep_matches_run, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_resubmit_is_one_sweep, svc_setup, svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
