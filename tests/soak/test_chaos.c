/*
 * test_chaos: the chaos soak (RELIABILITY.md §6, row 11). For CHESSLENS_SOAK_SECONDS (default
 * 1800) a nemesis picks, every 0.3-1.5 s, one of: kill -9 a worker (started again 0-2 s
 * later, same id), kill -9 the coordinator (started again on the same database and port),
 * SIGSTOP a worker (SIGCONT after 0.25-2 leases), or cut a worker's network namespace off
 * (healed after 1-2.5 leases), while sweeps of 1,000 small tasks each (at least 10,000 tasks in
 * all) are submitted over the first 80 % of the run, and the last one 5 s before its end. Two of
 * the four workers live in network namespaces of their own (soak.h), so a partition cuts exactly
 * one of them.
 *
 * Afterwards (everything healed, continued and running): every lease held when the chaos
 * stopped ends within lease_ms (plus slack for a loaded machine); every task ends done or
 * dead; no acknowledged result (the workers' --ack-log) or submission is lost, nothing is
 * stored twice, and svc_check_invariants holds. The figures are printed: events of each kind,
 * tasks, rows, lost, duplicated, and the times to drain and to converge.
 *
 * Needs root (network namespaces): skipped (77) otherwise. CHESSLENS_SOAK_SEED sets the seed.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include "soak.h"

#define LEASE_MS 2000
/* How late past lease_ms a lease held at the end may end: the coordinator's next wake, a
 * heartbeat late on a loaded 2-core machine, a coordinator started just before the end. */
#define DRAIN_SLACK_MS 3000
#define N_GAMES 500 /* one task per game and analysis: 1,000 tasks a sweep */
#define N_WORKERS 4
#define N_NS 2 /* workers 0 and 1 each in a namespace of their own; 2 and 3 beside the test */
#define MAX_SWEEPS 64

typedef struct worker {
    char id[16];
    int ns; /* -1: the test's own namespace */
    pid_t pid;
    int gen;
    bool stopped;
    int64_t restart_at, cont_at; /* ms; 0: none due */
    char ack_log[SVC_PATH];
} worker;

typedef struct submission {
    soak_submit sub;
    int64_t at; /* when it is due (ms since the start) */
    bool started;
} submission;

typedef struct fixture {
    soak_fixture base; /* first */
    worker w[N_WORKERS];
    bool cut[N_NS];
    int64_t heal_at[N_NS];
    submission subs[MAX_SWEEPS];
    int n_subs;
} fixture;

static int setup(void **state) {
    return soak_fixture_setup(state, sizeof(fixture));
}

static const char *const coord_opts[] = {"--lease-ms",
                                         "2000",
                                         "--heartbeat-ms",
                                         "250",
                                         "--max-attempts",
                                         "1000",
                                         "--pairs-per-task",
                                         "1",
                                         "--games-per-task",
                                         "1",
                                         NULL};

static void start_worker(fixture *f, worker *w) {
    w->pid = soak_start_worker(&f->base.e, f->base.net, w->ns, w->id, w->gen++, NULL, w->ack_log);
    w->stopped = false;
    w->restart_at = w->cont_at = 0;
}

static void start_submit(fixture *f, submission *s, int i) {
    char id[32], text[1024];
    snprintf(id, sizeof id, "chaos-%d", i);
    snprintf(text, sizeof text,
             "{\"name\": \"chaos%d\", \"model\": \"" CHESSLENS_SOURCE_DIR "/models/chess-tiny\","
             " \"dataset\": \"g\", \"games\": [0, %d], \"analyses\": ["
             "  {\"kind\": \"legal_stats\", \"components\": [\"embeds\"]},"
             "  {\"kind\": \"predictions\", \"top_k\": 1}]}\n",
             i, N_GAMES);
    soak_submit_start(&f->base.e, &s->sub, i, id, text, 600);
    s->started = true;
}

/* Records the submits that ended within timeout_ms each; how many still run. */
static int poll_submits(fixture *f, int timeout_ms) {
    int running = 0;
    for (int i = 0; i < f->n_subs; i++) {
        running += soak_submit_reap(&f->base.e, &f->subs[i].sub, timeout_ms) ? 0 : 1;
    }
    return running;
}

static void kill_and_reap(svc_env *e, pid_t pid) {
    svc_signal(e, pid, SIGKILL);
    assert_true(svc_reap(e, pid, 10000, NULL));
}

static void test_chaos_soak(void **state) {
    fixture *f = *state;
    svc_env *e = &f->base.e;
    long seconds = soak_env_long("CHESSLENS_SOAK_SECONDS", 1800);
    unsigned seed = (unsigned)soak_env_long("CHESSLENS_SOAK_SEED", (long)time(NULL));
    srand(seed);
    int64_t t0 = soak_now_ms();
    svc_env_init(e, "chaos");
    soak_generate_games(e, N_GAMES, 11, 120000);
    /* at least 10 sweeps of 1,000 tasks; one more per 100 s of a longer run */
    f->n_subs = seconds / 100 > 10 ? (int)(seconds / 100) : 10;
    if (f->n_subs > MAX_SWEEPS) {
        f->n_subs = MAX_SWEEPS;
    }
    for (int i = 0; i < f->n_subs; i++) {
        /* the first at once, the last 5 s before the end (so that leases are held when the
         * chaos stops, and the drain below measures something), the others spread over the
         * first 80 % of the run */
        f->subs[i].at = i == 0               ? 0
                        : i == f->n_subs - 1 ? (seconds > 10 ? seconds - 5 : seconds) * 1000
                                             : soak_between(0, seconds * 800);
    }
    print_message("  %ld s of chaos, %d sweeps of %d tasks, seed %u\n", seconds, f->n_subs,
                  2 * N_GAMES, seed);

    svc_start_coordinator_on(e, "0.0.0.0", coord_opts, NULL);
    for (int i = 0; i < N_WORKERS; i++) {
        worker *w = &f->w[i];
        snprintf(w->id, sizeof w->id, "%s%d", i < N_NS ? "n" : "l", i);
        w->ns = i < N_NS ? i : -1;
        char file[64];
        snprintf(file, sizeof file, "acks-%s.log", w->id);
        svc_path(e, file, w->ack_log, sizeof w->ack_log);
        start_worker(f, w);
    }

    const char *paths[N_WORKERS];
    for (int i = 0; i < N_WORKERS; i++) {
        paths[i] = f->w[i].ack_log;
    }
    long offsets[N_WORKERS] = {0};
    soak_acks at_kill = {0}; /* the checks right after each kill of the coordinator */
    long worker_kills = 0, coord_kills = 0, stops = 0, partitions = 0, quiet = 0;
    int64_t start = soak_now_ms(), end = start + seconds * 1000, next_event = start + 1000;
    int64_t last_print = start;
    for (int64_t now = start; now < end; now = soak_now_ms()) {
        int64_t t = now - start;
        for (int i = 0; i < f->n_subs; i++) {
            if (!f->subs[i].started && f->subs[i].at <= t) {
                start_submit(f, &f->subs[i], i);
            }
        }
        poll_submits(f, 0);
        for (int i = 0; i < N_WORKERS; i++) {
            worker *w = &f->w[i];
            if (w->restart_at != 0 && now >= w->restart_at) {
                start_worker(f, w);
            }
            if (w->cont_at != 0 && now >= w->cont_at) {
                svc_signal(e, w->pid, SIGCONT);
                w->stopped = false;
                w->cont_at = 0;
            }
        }
        for (int i = 0; i < N_NS; i++) {
            if (f->cut[i] && now >= f->heal_at[i]) {
                soak_net_partition(f->base.net, i, false);
                f->cut[i] = false;
            }
        }
        if (now < next_event) {
            soak_nap_ms(10);
            continue;
        }
        next_event = now + soak_between(300, 1500);
        double r = soak_uniform();
        worker *w = &f->w[(int)(soak_uniform() * N_WORKERS)];
        if (r < 0.25) {
            if (w->restart_at == 0) {
                kill_and_reap(e, w->pid);
                w->restart_at = now + soak_between(0, 2000);
                w->cont_at = 0;
                w->stopped = false;
                worker_kills++;
            }
        } else if (r < 0.40) {
            kill_and_reap(e, e->coordinator);
            /* what was acknowledged before the kill is in the database the kill left */
            soak_check_ack_logs(paths, N_WORKERS, e->db, offsets, &at_kill);
            if (at_kill.lost > 0) {
                fail_msg("%lld acknowledged results are not in the database the kill of the"
                         " coordinator left",
                         (long long)at_kill.lost);
            }
            soak_nap_ms((long)soak_between(0, 500));
            svc_start_coordinator_on(e, "0.0.0.0", coord_opts, NULL);
            coord_kills++;
        } else if (r < 0.65) {
            if (w->restart_at == 0 && !w->stopped) {
                svc_signal(e, w->pid, SIGSTOP);
                w->stopped = true;
                w->cont_at = now + soak_between(LEASE_MS / 4, 2 * LEASE_MS);
                stops++;
            }
        } else if (r < 0.85) {
            int i = (int)(soak_uniform() * N_NS);
            if (!f->cut[i]) {
                soak_net_partition(f->base.net, i, true);
                f->cut[i] = true;
                f->heal_at[i] = now + soak_between(LEASE_MS, 5 * LEASE_MS / 2);
                partitions++;
            }
        } else {
            quiet++;
        }
        if (now - last_print >= 30000) {
            last_print = now;
            print_message("  %.0f s: %ld worker kills, %ld coordinator kills, %ld stops, %ld"
                          " partitions; %lld tasks done\n",
                          (double)t / 1000.0, worker_kills, coord_kills, stops, partitions,
                          (long long)svc_query_int(e->db, "SELECT count(*) FROM task WHERE state ="
                                                          " 'done'"));
        }
    }
    /* the chaos stops: everything healed, continued and running again */
    for (int i = 0; i < N_NS; i++) {
        if (f->cut[i]) {
            soak_net_partition(f->base.net, i, false);
            f->cut[i] = false;
        }
    }
    for (int i = 0; i < N_WORKERS; i++) {
        worker *w = &f->w[i];
        if (w->restart_at != 0) {
            start_worker(f, w);
        } else if (w->stopped) {
            svc_signal(e, w->pid, SIGCONT);
            w->stopped = false;
        }
    }
    for (int i = 0; i < f->n_subs; i++) {
        if (!f->subs[i].started) {
            start_submit(f, &f->subs[i], i);
        }
    }
    int64_t stopped_at = soak_now_ms();
    /* every lease held now ends (stored, failed, expired) within a lease */
    int64_t held_ids[4096], held_epochs[4096];
    size_t n_held = svc_query_ids(e->db, held_ids, 4096,
                                  "SELECT id FROM task WHERE state = 'leased' ORDER BY id");
    for (size_t i = 0; i < n_held; i++) {
        held_epochs[i] = svc_query_int(e->db, "SELECT lease_epoch FROM task WHERE id = %lld",
                                       (long long)held_ids[i]);
    }
    int64_t drain_ms = 0;
    for (size_t i = 0; i < n_held; i++) {
        for (;;) {
            int64_t still = svc_query_int(e->db,
                                          "SELECT count(*) FROM task WHERE id = %lld AND state ="
                                          " 'leased' AND lease_epoch = %lld",
                                          (long long)held_ids[i], (long long)held_epochs[i]);
            drain_ms = soak_now_ms() - stopped_at;
            if (still == 0) {
                break;
            }
            if (drain_ms > LEASE_MS + DRAIN_SLACK_MS + 10000) {
                break; /* failed below, with the figure */
            }
            soak_nap_ms(20);
        }
    }
    assert_int_equal(poll_submits(f, 610000), 0);
    int64_t converge_ms = soak_wait_settled(e->db, 1800000);
    if (converge_ms < 0) {
        fail_msg("tasks still pending or leased after the chaos stopped (none settled for 5 min,"
                 " or 30 min passed): %lld",
                 (long long)svc_query_int(e->db, "SELECT count(*) FROM task WHERE state IN"
                                                 " ('pending', 'leased')"));
    }
    converge_ms = soak_now_ms() - stopped_at;

    for (int i = 0; i < N_WORKERS; i++) {
        assert_int_equal(svc_stop(e, f->w[i].pid, 60000), 0);
    }
    assert_int_equal(svc_stop(e, e->coordinator, 60000), 0);

    int64_t acked_subs = 0, lost_subs = 0;
    sqlite3 *h = svc_db_open(e->db);
    for (int i = 0; i < f->n_subs; i++) {
        const soak_submit *s = &f->subs[i].sub;
        if (!s->acked) {
            continue;
        }
        acked_subs++;
        lost_subs += soak_submit_stored(h, s) ? 0 : 1;
    }
    int64_t tasks = svc_db_int(h, "SELECT count(*) FROM task");
    int64_t done = svc_db_int(h, "SELECT count(*) FROM task WHERE state = 'done'");
    int64_t dead = svc_db_int(h, "SELECT count(*) FROM task WHERE state = 'dead'");
    sqlite3_close(h);
    soak_acks a = {0};
    soak_check_ack_logs(paths, N_WORKERS, e->db, NULL, &a);
    int64_t dups = soak_duplicates(e->db) + a.stored_twice;
    int64_t rows = soak_rows(e->db);
    print_message("  chaos: %ld s; %ld worker kills, %ld coordinator kills, %ld stops, %ld"
                  " partitions, %ld quiet turns\n",
                  seconds, worker_kills, coord_kills, stops, partitions, quiet);
    print_message("  tasks: %lld (%lld sweeps acknowledged of %d), %lld done, %lld dead; result"
                  " rows: %lld\n",
                  (long long)tasks, (long long)acked_subs, f->n_subs, (long long)done,
                  (long long)dead, (long long)rows);
    print_message("  acks: %lld acknowledged results checked at the end, %lld right after a"
                  " kill of the coordinator; lost: %lld results (%lld right after a kill), %lld"
                  " submissions; duplicated: %lld\n",
                  (long long)a.results, (long long)at_kill.results,
                  (long long)(a.lost + at_kill.lost), (long long)at_kill.lost, (long long)lost_subs,
                  (long long)dups);
    print_message("  %zu leases held when the chaos stopped, all ended after %.1f s (lease %.1f"
                  " s); converged %.1f s after the chaos; wall time %.1f s\n",
                  n_held, (double)drain_ms / 1000.0, LEASE_MS / 1000.0,
                  (double)converge_ms / 1000.0, (double)(soak_now_ms() - t0) / 1000.0);
    assert_true(tasks >= 10000);
    assert_int_equal(acked_subs, f->n_subs);
    assert_true(drain_ms <= LEASE_MS + DRAIN_SLACK_MS);
    assert_int_equal(a.lost + at_kill.lost, 0);
    assert_int_equal(lost_subs, 0);
    assert_int_equal(dups, 0);
    assert_int_equal(done + dead, tasks);
    svc_check_invariants(e->db, -1);
}

int main(void) {
    static soak_net net;
    char why[256];
    if (!soak_net_init(&net, N_NS, why, sizeof why)) {
        printf("SKIPPED: the chaos soak needs network namespaces for its partitions: %s\n", why);
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_chaos_soak, setup, soak_fixture_teardown,
                                                 &net),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    soak_net_teardown(&net);
    return rc;
}
