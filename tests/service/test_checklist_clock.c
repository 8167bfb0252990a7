/*
 * test_checklist_clock: the wall clock jumps an hour forward and back mid-sweep (RELIABILITY.md
 * §6, row 15). The coordinator and both workers run under libfaketime (Debian's libfaketime),
 * whose offset this process changes while they run (FAKETIME_TIMESTAMP_FILE, re-read on every
 * call with FAKETIME_NO_CACHE=1): +1 h, then -1 h (a jump of two hours back), then +0 again.
 * Only the wall clock is faked (FAKETIME_DONT_FAKE_MONOTONIC=1): a jump of the monotonic clock
 * does not happen on a real machine, and lease deadlines run on it (proto/PROTOCOL.md,
 * "Leases"), so a coordinator that kept them on CLOCK_REALTIME would expire every lease at the
 * +1 h jump, and this test would see it.
 *
 * Must hold: no lease expires (the coordinator's expired counter is 0, every task is done on
 * its first attempt), none is stuck (the sweep completes in about the time it takes without
 * jumps), and the jumps did reach the coordinator: the tasks' done_at (Unix seconds from its
 * wall clock) show both offsets. Without libfaketime the test says so and exits 77.
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
#include <time.h>

#include <cmocka.h>

#include "svc_harness.h"

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int64_t real_now_s(void) {
    return (int64_t)time(NULL); /* this process runs without libfaketime */
}

/* Sets the faked processes' wall clock offset ("+1h", "-1h", "+0"). */
static void set_offset(const char *rc, const char *offset) {
    char tmp[SVC_PATH + 8], text[32];
    snprintf(tmp, sizeof tmp, "%s.new", rc);
    snprintf(text, sizeof text, "%s\n", offset);
    svc_write_text(tmp, text);
    assert_int_equal(rename(tmp, rc), 0); /* never a half-written file for them to read */
}

static void test_clock_jumps_expire_nothing(void **state) {
    svc_env *e = *state;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], rc[SVC_PATH];
    int64_t planned = svc_scenario(e, "clock", spec, ref);
    svc_make_dataset(e, e->db);
    svc_path(e, "faketime.rc", rc, sizeof rc);
    set_offset(rc, "+0");
    char preload[SVC_PATH + 16], file[SVC_PATH + 32], asan[1024];
    snprintf(preload, sizeof preload, "LD_PRELOAD=%s", svc_faketime_lib());
    snprintf(file, sizeof file, "FAKETIME_TIMESTAMP_FILE=%s", rc);
    /* a sanitizer build: libfaketime comes before ASan's runtime, which ASan must be told */
    const char *asan_options = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%sverify_asan_link_order=0",
             asan_options != NULL ? asan_options : "",
             asan_options != NULL && asan_options[0] != '\0' ? ":" : "");
    const char *const env[] = {
        preload, file, "FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1", asan, NULL};
    /* a lease of 5 s: under a sanitizer, with other tests beside it, a worker's heartbeats can
     * stall for seconds, and no lease may lapse for any reason but a broken clock */
    const char *const opts[] = {"--lease-ms", "5000", "--heartbeat-ms", "250", NULL};
    svc_start_coordinator_env(e, opts, env);
    /* slowed, so that tasks run across every jump: the three jumps take 3 x 5.2 s after the
     * first two tasks are done, and the sweep's 22 tasks of 2 s on two workers take 22 s */
    pid_t w1 = svc_start_worker_env(e, "w1", "sleep_ms=2000", NULL, env);
    pid_t w2 = svc_start_worker_env(e, "w2", "sleep_ms=2000", NULL, env);
    svc_submit(e, spec, NULL, name, sizeof name);
    svc_poll_int(e->db, 2, 60000, "tasks done before the jumps",
                 "SELECT count(*) FROM task WHERE state = 'done'");

    static const char *const offsets[] = {"+1h", "-1h", "+0"};
    int64_t done_at_jump[3];
    for (size_t i = 0; i < 3; i++) {
        /* each offset holds for longer than a lease, with tasks leased all along */
        svc_poll_int(e->db, 1, 30000, "a task leased at the jump",
                     "SELECT count(*) FROM task WHERE state = 'leased'");
        set_offset(rc, offsets[i]);
        done_at_jump[i] = svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'");
        nap_ms(5200);
    }
    print_message("  jumps to +1 h, -1 h and +0 with %lld, %lld and %lld of %lld tasks done\n",
                  (long long)done_at_jump[0], (long long)done_at_jump[1],
                  (long long)done_at_jump[2], (long long)planned);
    assert_true(done_at_jump[2] < planned); /* the last jump came mid-sweep */
    assert_int_equal(svc_wait_sweep(e, name, 60), 0);

    /* the coordinator's wall clock did jump: done_at (its time(NULL)) saw both offsets */
    int64_t now = real_now_s();
    int64_t ahead = svc_query_int(e->db, "SELECT count(*) FROM task WHERE done_at > %lld",
                                  (long long)(now + 1800));
    int64_t behind = svc_query_int(e->db, "SELECT count(*) FROM task WHERE done_at < %lld",
                                   (long long)(now - 1800));
    print_message("  tasks done at +1 h: %lld, at -1 h: %lld\n", (long long)ahead,
                  (long long)behind);
    if (ahead == 0 || behind == 0) {
        fail_msg("the clock jumps did not reach the coordinator (%lld tasks done an hour ahead,"
                 " %lld an hour behind): is libfaketime working?",
                 (long long)ahead, (long long)behind);
    }
    /* no lease lapsed: every task done on its first attempt */
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE attempts != 1"), 0);
    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, w2, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    print_message("  coordinator: %llu dispatched, %llu expired, %llu fenced\n",
                  (unsigned long long)cs.dispatched, (unsigned long long)cs.expired,
                  (unsigned long long)cs.fenced);
    assert_int_equal(cs.expired, 0);
    assert_int_equal(cs.fenced, 0);
    assert_int_equal(cs.dispatched, (uint64_t)planned); /* re-dispatches: 0 */
    assert_int_equal(cs.stored, (uint64_t)planned);
    svc_check_invariants(e->db, planned);
    svc_compare_results(e->db, ref, 1e-6, NULL);
}

int main(void) {
    if (svc_faketime_lib() == NULL) {
        fprintf(stderr, "test_checklist_clock: SKIPPED: libfaketime is not installed (Debian "
                        "package libfaketime; deploy/install-deps.sh installs it)\n");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clock_jumps_expire_nothing, svc_setup, svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
