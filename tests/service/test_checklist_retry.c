/*
 * test_checklist_retry: computations that hang or fail for a while (RELIABILITY.md §6, rows 3
 * and 9), with the real coordinator and chesslens-worker --faults on loopback.
 *
 * - Row 3, a compute thread that hangs while the worker's socket stays up (--faults
 *   hang_task=H; the worker's I/O thread and ZeroMQ's keep running, so a liveness check of the
 *   connection alone would never notice): the worker stops heartbeating the task once it has
 *   reported no progress for a lease, so the lease lapses and the task is leased again. Measured
 *   from the coordinator's own records: the new lease begins no earlier than the old deadline
 *   and at most the first retry backoff plus slack after it (so within lease_ms of the last
 *   heartbeat), and at most 2 leases + that after H was first dispatched (heartbeats go on for
 *   up to a lease after the last progress: worker/service.h). Another worker completes it on
 *   attempt 2 while the hung worker is still alive.
 * - Row 9, a transient failure k times, then success (--faults flaky=F:3 fails F's attempts 1
 *   to 3): F is done on attempt 4 after exactly 3 failures. This process polls F's row and
 *   brackets each failure between two polls; every retry waits out the backoff the coordinator
 *   drew (the next dispatch is not before not_before_ns), that backoff lies in
 *   [0, min(cap, base 2^(n-1))) as far as the polls can tell, the retry follows it promptly, and
 *   the backoffs are not all zero (a coordinator that retried at once would fail here).
 */
#include <errno.h>
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

#include "svc_harness.h"

#define MS 1000000LL

static int64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* the coordinator's clock for every deadline */
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* One look at a task's row. */
typedef struct task_row {
    char state[8];
    int64_t attempts, epoch, deadline_ns, not_before_ns;
    char worker[32];
} task_row;

static void read_task(sqlite3 *h, int64_t task, task_row *r) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h,
                                        "SELECT state, attempts, lease_epoch,"
                                        " coalesce(lease_deadline_ns, 0), not_before_ns,"
                                        " coalesce(worker, '') FROM task WHERE id = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, task);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        fail_msg("task %lld: %s", (long long)task, sqlite3_errmsg(h));
    }
    snprintf(r->state, sizeof r->state, "%s", (const char *)sqlite3_column_text(st, 0));
    r->attempts = sqlite3_column_int64(st, 1);
    r->epoch = sqlite3_column_int64(st, 2);
    r->deadline_ns = sqlite3_column_int64(st, 3);
    r->not_before_ns = sqlite3_column_int64(st, 4);
    snprintf(r->worker, sizeof r->worker, "%s", (const char *)sqlite3_column_text(st, 5));
    sqlite3_finalize(st);
}

/* The id of the task at the middle of the sweep (ids in order). */
static int64_t middle_task(const svc_env *e, int64_t planned) {
    int64_t ids[64];
    size_t n = svc_query_ids(e->db, ids, 64, "SELECT id FROM task ORDER BY id");
    assert_int_equal(n, (size_t)planned);
    return ids[n / 2];
}

#define HANG_LEASE_MS 1500
#define HANG_BACKOFF_MS 1000 /* the coordinator's default base: attempt 1 waits < 1 s */
#define SLACK_MS 1500        /* a loaded 2-core machine: polls, scheduling, one batch */

static void test_hung_compute_loses_its_lease(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], faults[64];
    int64_t planned = svc_scenario(e, "hang", spec, ref);
    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms", "1500", "--heartbeat-ms", "250", NULL};
    svc_start_coordinator(e, opts);
    svc_submit(e, spec, NULL, name, sizeof name);
    int64_t hung = middle_task(e, planned);
    snprintf(faults, sizeof faults, "hang_task=%lld", (long long)hung);
    /* one slot: the task starts running as soon as it arrives */
    const char *const one_slot[] = {"--prefetch", "1", NULL};
    pid_t w1 = svc_start_worker_env(e, "w1", faults, one_slot, NULL);

    sqlite3 *h = svc_db_open(e->db);
    task_row r;
    int64_t first_dispatch = 0, last_deadline = 0, epoch1 = 0, redispatch = 0;
    pid_t w2 = 0;
    int64_t give_up = mono_ns() + 60000 * MS;
    for (;;) {
        read_task(h, hung, &r);
        int64_t now = mono_ns();
        if (epoch1 == 0 && strcmp(r.state, "leased") == 0 && strcmp(r.worker, "w1") == 0) {
            epoch1 = r.epoch;
            first_dispatch = r.deadline_ns - HANG_LEASE_MS * MS;
            assert_int_equal(r.attempts, 1);
            /* w2 takes over what w1 can no longer do */
            w2 = svc_start_worker(e, "w2", NULL);
        }
        if (epoch1 != 0 && r.epoch == epoch1 && strcmp(r.state, "leased") == 0) {
            last_deadline = r.deadline_ns; /* renewed by each heartbeat w1 sent */
        }
        if (epoch1 != 0 && r.epoch > epoch1 && strcmp(r.state, "leased") == 0) {
            redispatch = r.deadline_ns - HANG_LEASE_MS * MS;
            break;
        }
        if (epoch1 != 0 && r.epoch > epoch1 && strcmp(r.state, "done") == 0) {
            fail_msg("task %lld went from epoch %lld to done unseen", (long long)hung,
                     (long long)epoch1);
        }
        if (now > give_up) {
            fail_msg("task %lld (hung at w1) was not leased again within 60 s: state %s, epoch "
                     "%lld, worker %s",
                     (long long)hung, r.state, (long long)r.epoch, r.worker);
        }
        nap_ms(5);
    }
    sqlite3_close(h);
    assert_true(svc_running(e, w1)); /* its process and socket are alive: only compute hung */
    double after_deadline_ms = (double)(redispatch - last_deadline) / 1e6;
    double after_dispatch_ms = (double)(redispatch - first_dispatch) / 1e6;
    print_message("  task %lld hung: leased again %.0f ms after its first dispatch, %.0f ms after "
                  "its last deadline (lease %d ms, heartbeats renewed it by %.0f ms)\n",
                  (long long)hung, after_dispatch_ms, after_deadline_ms, HANG_LEASE_MS,
                  (double)(last_deadline - first_dispatch) / 1e6 - HANG_LEASE_MS);
    assert_true(redispatch >= last_deadline);
    assert_true(after_deadline_ms <= HANG_BACKOFF_MS + SLACK_MS);
    assert_true(after_dispatch_ms <= 2 * HANG_LEASE_MS + HANG_BACKOFF_MS + SLACK_MS);

    assert_int_equal(svc_wait_sweep(e, name, 120), 0);
    assert_int_equal(svc_query_int(e->db,
                                   "SELECT count(*) FROM task WHERE id = %lld AND state = 'done'"
                                   " AND attempts = 2 AND worker = 'w2'",
                                   (long long)hung),
                     1);
    /* the hung computation never ends: w1 cannot stop cleanly (worker/service.h) */
    svc_signal(e, w1, SIGKILL);
    assert_true(svc_reap(e, w1, 10000, NULL));
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    assert_true(cs.expired >= 1);
    assert_int_equal(cs.stored, (uint64_t)planned);
    svc_check_invariants(e->db, planned);
    svc_compare_results(e->db, ref, 1e-6, NULL);
}

#define FLAKY_K 3
#define FLAKY_LEASE_MS 10000
#define BASE_MS 400
#define CAP_MS 1000
/* a retry leaves this soon after its backoff ends: the slot it needs may be running another
 * task (300 ms and its computation), then a batch and the polls */
#define PROMPT_MS 1500

/* What the polls saw of attempt n (1-based) of the flaky task. */
typedef struct attempt_seen {
    int64_t dispatch_ns;   /* its lease's deadline less the lease (0: unseen) */
    int64_t last_leased;   /* the last poll that saw it leased */
    int64_t first_after;   /* the first poll that saw it over (pending, or a later attempt) */
    int64_t not_before_ns; /* the backoff its failure drew ended here */
} attempt_seen;

static void test_transient_failures_back_off(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], faults[96], w1_log[SVC_PATH];
    int64_t planned = svc_scenario(e, "flaky", spec, ref);
    svc_make_dataset(e, e->db);
    const char *const opts[] = {"--lease-ms",
                                "10000",
                                "--heartbeat-ms",
                                "2000",
                                "--max-attempts",
                                "5",
                                "--backoff-base-ms",
                                "400",
                                "--backoff-cap-ms",
                                "1000",
                                NULL};
    svc_start_coordinator(e, opts);
    svc_submit(e, spec, NULL, name, sizeof name);
    int64_t flaky = middle_task(e, planned);
    /* each attempt takes 300 ms, so that every one is seen leased */
    snprintf(faults, sizeof faults, "flaky=%lld:%d,sleep_ms=300", (long long)flaky, FLAKY_K);
    pid_t w1 = svc_start_worker(e, "w1", faults);
    svc_worker_log(e, "w1", w1_log, sizeof w1_log);

    attempt_seen seen[FLAKY_K + 2];
    memset(seen, 0, sizeof seen);
    sqlite3 *h = svc_db_open(e->db);
    task_row r;
    int64_t give_up = mono_ns() + 90000 * MS;
    for (;;) {
        int64_t before = mono_ns();
        read_task(h, flaky, &r);
        int64_t after = mono_ns();
        assert_true(r.attempts <= FLAKY_K + 1);
        bool leased = strcmp(r.state, "leased") == 0;
        for (int64_t n = 1; n <= r.attempts; n++) {
            attempt_seen *a = &seen[n];
            if (leased && n == r.attempts) {
                if (a->dispatch_ns == 0) {
                    a->dispatch_ns = r.deadline_ns - FLAKY_LEASE_MS * MS;
                }
                a->last_leased = before; /* the row was read after this */
            } else if (a->first_after == 0) {
                a->first_after = after; /* and before this */
            }
        }
        if (r.attempts >= 1 && !leased && strcmp(r.state, "pending") == 0) {
            seen[r.attempts].not_before_ns = r.not_before_ns;
        }
        if (leased && r.attempts >= 2) {
            seen[r.attempts - 1].not_before_ns = r.not_before_ns; /* kept from that failure */
        }
        if (strcmp(r.state, "done") == 0 || strcmp(r.state, "dead") == 0) {
            break;
        }
        if (after > give_up) {
            fail_msg("task %lld still %s after 90 s (attempt %lld)", (long long)flaky, r.state,
                     (long long)r.attempts);
        }
        nap_ms(3);
    }
    sqlite3_close(h);
    assert_string_equal(r.state, "done");
    assert_int_equal(r.attempts, FLAKY_K + 1); /* success on attempt k + 1 */

    int64_t drawn_max = 0;
    for (int n = 1; n <= FLAKY_K; n++) {
        const attempt_seen *a = &seen[n], *next = &seen[n + 1];
        if (a->dispatch_ns == 0 || a->first_after == 0 || next->dispatch_ns == 0 ||
            a->not_before_ns == 0) {
            fail_msg("attempt %d of task %lld was not seen whole (dispatch %lld, over %lld, next "
                     "%lld, not before %lld)",
                     n, (long long)flaky, (long long)a->dispatch_ns, (long long)a->first_after,
                     (long long)next->dispatch_ns, (long long)a->not_before_ns);
        }
        int64_t bound = (int64_t)BASE_MS << (n - 1);
        bound = bound < CAP_MS ? bound : CAP_MS;
        /* the failure came between the last poll that saw it leased and the first after */
        double drawn_lo = (double)(a->not_before_ns - a->first_after) / 1e6;
        double drawn_hi = (double)(a->not_before_ns - a->last_leased) / 1e6;
        double delay_lo = (double)(next->dispatch_ns - a->first_after) / 1e6;
        double delay_hi = (double)(next->dispatch_ns - a->last_leased) / 1e6;
        print_message("  attempt %d failed; backoff drawn in [%.0f, %.0f] ms, retried after "
                      "[%.0f, %.0f] ms (bound %lld ms)\n",
                      n, drawn_lo, drawn_hi, delay_lo, delay_hi, (long long)bound);
        assert_true(next->dispatch_ns >= a->not_before_ns); /* the backoff was waited out */
        assert_true(drawn_hi >= 0.0);
        assert_true(drawn_lo < (double)bound);
        assert_true(delay_lo <= (double)(bound + PROMPT_MS));
        int64_t d = a->not_before_ns - a->first_after;
        drawn_max = d > drawn_max ? d : drawn_max;
    }
    /* three backoffs all within a poll of zero: no backoff at all (by chance: about 1 in 40,000) */
    assert_true(drawn_max > 0);

    assert_int_equal(svc_wait_sweep(e, name, 120), 0);
    /* three failures and one result, each acknowledged stored */
    char line[96];
    snprintf(line, sizeof line, "task %lld epoch %d: result, ", (long long)flaky, FLAKY_K + 1);
    assert_int_equal(svc_count_text(w1_log, line), 1);
    snprintf(line, sizeof line, "task %lld: acknowledged (stored)", (long long)flaky);
    assert_int_equal(svc_count_text(w1_log, line), FLAKY_K + 1);
    assert_true(svc_count_text(w1_log, "injected transient failure") >= FLAKY_K);
    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    assert_int_equal(cs.failed, FLAKY_K);
    assert_int_equal(cs.stored, (uint64_t)planned);
    assert_int_equal(cs.expired, 0);
    svc_check_invariants(e->db, planned);
    svc_compare_results(e->db, ref, 1e-6, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hung_compute_loses_its_lease, svc_setup, svc_teardown),
        cmocka_unit_test_setup_teardown(test_transient_failures_back_off, svc_setup, svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
