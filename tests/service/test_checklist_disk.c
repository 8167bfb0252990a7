/*
 * test_checklist_disk: the disk fills up under the coordinator mid-sweep (RELIABILITY.md §6,
 * row 14). The coordinator's database lives on a small tmpfs of the test's own; once a few
 * tasks are stored, a file takes every free byte, so the next result commits fail with
 * SQLITE_FULL. Must hold while the disk is full: the coordinator stays up and logs the store
 * error, no task becomes done and no result row appears (nothing partial), the worker hears no
 * ACK stored and retries (it reconnects after its silence rule and sends its result again).
 * Once the file is removed the sweep completes with the rows of a fault-free run and the
 * invariants hold.
 *
 * Mounting needs root (CI runs the tests as root): without it, or when the mount fails, the
 * test says so and exits 77 (skipped). The tmpfs is unmounted in the teardown, after every
 * process the test started is killed.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "svc_harness.h"
#include "tests/cli/cli_run.h"

#define FS_SIZE "16m" /* the dataset, the sweep's tasks and a few results fit well */

typedef struct disk_env {
    svc_env e; /* first: the harness's fixtures see a svc_env */
    char mnt[SVC_PATH];
    bool mounted;
} disk_env;

static int disk_setup(void **state) {
    *state = calloc(1, sizeof(disk_env));
    return *state != NULL ? 0 : -1;
}

static int disk_teardown(void **state) {
    disk_env *d = *state;
    if (d != NULL) {
        svc_env_teardown(&d->e); /* nothing may hold the file system any more */
        if (d->mounted && umount2(d->mnt, MNT_DETACH) != 0) {
            fprintf(stderr, "umount %s: %s\n", d->mnt, strerror(errno));
        }
        free(d);
    }
    *state = NULL;
    return 0;
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Writes path until the file system is full; the bytes written. */
static size_t fill(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    static char block[1 << 16];
    memset(block, 0x5a, sizeof block);
    size_t total = 0;
    for (size_t chunk = sizeof block; chunk > 0;) {
        ssize_t n = write(fd, block, chunk);
        if (n > 0) {
            total += (size_t)n;
        } else if (n < 0 && errno == ENOSPC) {
            chunk /= 2; /* the last free pages, in smaller and smaller writes */
        } else {
            assert_true(n >= 0 || errno == EINTR);
        }
    }
    assert_int_equal(close(fd), 0);
    return total;
}

/* Every result row, of every table. */
static int64_t result_rows(const char *db) {
    return svc_query_int(db, "SELECT (SELECT count(*) FROM patch_pair) + (SELECT count(*) FROM"
                             " patch_value) + (SELECT count(*) FROM legal_partial) + (SELECT"
                             " count(*) FROM prediction) + (SELECT count(*) FROM neuron_partial)");
}

static void test_disk_full_on_result_commit(void **state) {
    disk_env *d = *state;
    svc_env *e = &d->e;
    char spec[SVC_PATH], ref[SVC_PATH], name[256], filler[SVC_PATH], w1_log[SVC_PATH];
    /* a run killed by its timeout had no teardown: its tmpfs would keep the scratch directory
     * from being emptied */
    char stale[SVC_PATH];
    snprintf(stale, sizeof stale, "%s/diskfull/fs", cli_tmpdir());
    umount2(stale, MNT_DETACH);
    int64_t planned = svc_scenario(e, "diskfull", spec, ref);
    svc_path(e, "fs", d->mnt, sizeof d->mnt);
    assert_int_equal(mkdir(d->mnt, 0755), 0);
    if (mount("chesslens-test", d->mnt, "tmpfs", MS_NOSUID | MS_NODEV, "size=" FS_SIZE) != 0) {
        fail_msg("mount tmpfs on %s: %s", d->mnt, strerror(errno)); /* main checked it works */
    }
    d->mounted = true;
    int n_db = snprintf(e->db, sizeof e->db, "%s/service.db", d->mnt);
    int n_filler = snprintf(filler, sizeof filler, "%s/filler", d->mnt);
    assert_true(n_db > 0 && (size_t)n_db < sizeof e->db);
    assert_true(n_filler > 0 && (size_t)n_filler < sizeof filler);
    svc_make_dataset(e, e->db);

    const char *const opts[] = {"--lease-ms", "3000", "--heartbeat-ms", "250", NULL};
    pid_t coordinator = svc_start_coordinator(e, opts);
    /* slowed, so that the disk fills mid-sweep */
    pid_t w1 = svc_start_worker(e, "w1", "sleep_ms=150");
    svc_worker_log(e, "w1", w1_log, sizeof w1_log);
    svc_submit(e, spec, NULL, name, sizeof name);
    svc_poll_int(e->db, 2, 60000, "tasks done before the disk fills",
                 "SELECT count(*) FROM task WHERE state = 'done'");
    size_t filled = fill(filler);
    print_message("  disk full: %zu bytes of filler\n", filled);

    /* the first failed commit; a coordinator that ends on it fails here at once */
    for (int i = 0; !svc_wait_text(e->coordinator_log, "coordinator: store error: ", 100); i++) {
        if (!svc_running(e, coordinator) || i == 600) {
            char *log = svc_read_text(e->coordinator_log);
            fail_msg("the coordinator %s:\n%s",
                     i == 600 ? "logged no store error within 60 s of the disk filling up"
                              : "exited on the full disk",
                     log);
        }
    }
    int64_t done_full = svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'");
    int64_t rows_full = result_rows(e->db);
    size_t acked_full = svc_count_text(w1_log, ": acknowledged (stored)");
    size_t reconnects_full = svc_count_text(w1_log, "coordinator silent: reconnecting");
    assert_true(done_full < planned);
    /* full for a while: several failed commits, the worker sending again */
    for (int i = 0; i < 100 && svc_count_text(e->coordinator_log, "coordinator: store error: ") < 3;
         i++) {
        nap_ms(100);
    }
    nap_ms(2000);
    size_t errors = svc_count_text(e->coordinator_log, "coordinator: store error: ");
    size_t reconnects = svc_count_text(w1_log, "coordinator silent: reconnecting");
    print_message("  while full: %zu store errors, worker reconnects %zu -> %zu, %lld of %lld "
                  "tasks done, %lld result rows\n",
                  errors, reconnects_full, reconnects, (long long)done_full, (long long)planned,
                  (long long)rows_full);
    assert_true(svc_running(e, coordinator)); /* it survives its store's errors */
    assert_true(errors >= 2);
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'"),
                     done_full);
    assert_int_equal(result_rows(e->db), rows_full); /* nothing partial */
    assert_int_equal(svc_count_text(w1_log, ": acknowledged (stored)"), acked_full); /* no ACK */
    assert_true(reconnects > reconnects_full); /* the worker retries */
    char *log = svc_read_text(e->coordinator_log);
    if (strstr(log, "database or disk is full") == NULL) {
        fail_msg("the store errors do not name a full disk:\n%s", log);
    }
    free(log);

    /* space again: the sweep completes */
    assert_int_equal(unlink(filler), 0);
    assert_int_equal(svc_wait_sweep(e, name, 120), 0);
    assert_int_equal(svc_stop(e, w1, 30000), 0);
    assert_int_equal(svc_stop(e, e->coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    print_message("  recovered: %llu stored, %llu duplicates, %llu store errors\n",
                  (unsigned long long)cs.stored, (unsigned long long)cs.duplicates,
                  (unsigned long long)cs.store_errors);
    assert_int_equal(cs.stored, (uint64_t)planned);
    assert_true(cs.store_errors >= errors);
    svc_check_invariants(e->db, planned);
    svc_compare_results(e->db, ref, 1e-6, NULL);
}

/* Whether this process may mount a tmpfs (root, and a kernel and container that allow it). */
static bool can_mount(char *why, size_t cap) {
    if (geteuid() != 0) {
        snprintf(why, cap, "not root");
        return false;
    }
    char dir[] = "/tmp/chesslens-mount-probe-XXXXXX";
    if (mkdtemp(dir) == NULL) {
        snprintf(why, cap, "mkdtemp: %s", strerror(errno));
        return false;
    }
    bool ok = mount("chesslens-test", dir, "tmpfs", 0, "size=1m") == 0;
    if (!ok) {
        snprintf(why, cap, "mount tmpfs: %s", strerror(errno));
    } else {
        umount2(dir, MNT_DETACH);
    }
    rmdir(dir);
    return ok;
}

int main(void) {
    char why[256];
    if (!can_mount(why, sizeof why)) {
        fprintf(stderr,
                "test_checklist_disk: SKIPPED: a small tmpfs for the database cannot be mounted "
                "(%s); run as root to test a full disk\n",
                why);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_disk_full_on_result_commit, disk_setup, disk_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
