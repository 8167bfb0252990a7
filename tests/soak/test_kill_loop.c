/*
 * test_kill_loop: the result writer, the coordinator, killed -9 a thousand times while
 * workers deliver results and clients submit sweeps (RELIABILITY.md §6, rows 12 and 4), then
 * the Jepsen check: no acknowledged write lost.
 *
 * Acknowledged means observed by the receiver: every ACK a worker accepts for a report is in
 * its --ack-log (flushed before it drops the result it kept), and every `chesslens submit` that
 * exited 0 printed the sweep it got. After the loop every ACK stored or duplicate of a result
 * must name a task that is done with result rows, every acknowledged submission must be a
 * sweep (its id and name, with the tasks the reply counted), and once the sweeps have run to
 * the end nothing is stored twice, no task stays leased and integrity_check is ok
 * (svc_check_invariants).
 *
 * Each kill lands at a random point: some a few ms after the restart (re-arming leases, hellos
 * of reconnecting workers), some after a second or two (workers back: dispatches and result
 * commits), some while a submit is in flight, and some the moment a submit's answer arrived.
 * The coordinator restarts each time on the same database and port; the workers are never
 * restarted and reconnect by themselves. CHESSLENS_KILLS (default 1000) sets the number of
 * kills, CHESSLENS_SOAK_SEED the random seed (default: the clock; printed).
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "soak.h"

#define N_WORKERS 3
#define MAX_SUBMITS 120 /* sweeps of ~96 small tasks: ~11,500 tasks, minutes of CPU */
#define MAX_IN_FLIGHT 2 /* submits running at once (the harness holds 24 processes) */
#define N_GAMES 32

typedef struct submission {
    soak_submit sub;
    bool checked; /* acked, and checked against the database (check_submits) */
} submission;

typedef struct fixture {
    soak_fixture base; /* first */
    submission subs[MAX_SUBMITS];
    int n_subs;
} fixture;

static int setup(void **state) {
    return soak_fixture_setup(state, sizeof(fixture));
}

/* The spec of sweep NAME into text: small tasks (one pair, one game each) of three kinds, so
 * that a result commit writes pairs with their values, predictions or legal partials. */
static void format_spec(char *text, size_t cap, const char *name) {
    snprintf(text, cap,
             "{\"name\": \"%s\", \"model\": \"" CHESSLENS_SOURCE_DIR "/models/chess-tiny\","
             " \"dataset\": \"g\", \"games\": [0, %d], \"analyses\": ["
             "  {\"kind\": \"patch\", \"patch\": \"block_every\", \"cutoffs\": [20],"
             "   \"corrupt\": {\"position\": \"last\", \"with\": \"each_legal_alternative\"},"
             "   \"metric\": {\"kind\": \"logit_diff\", \"tokens\": [\"clean_top\","
             " \"corrupt_top\"], \"normalize\": true}},"
             "  {\"kind\": \"legal_stats\", \"components\": [\"embeds\"]},"
             "  {\"kind\": \"predictions\", \"top_k\": 3}]}\n",
             name, N_GAMES);
}

static soak_submit *start_submit(fixture *f) {
    soak_submit *s = &f->subs[f->n_subs].sub;
    char id[32], name[32], text[2048];
    snprintf(id, sizeof id, "kill-loop-%d", f->n_subs);
    snprintf(name, sizeof name, "k%d", f->n_subs);
    format_spec(text, sizeof text, name);
    /* a long deadline: the CLI retries through every restart until it is answered */
    soak_submit_start(&f->base.e, s, f->n_subs, id, text, 300);
    f->n_subs++;
    return s;
}

/* Reaps the submits that end within timeout_ms (each); how many still run. */
static int poll_submits(fixture *f, int timeout_ms) {
    int running = 0;
    for (int i = 0; i < f->n_subs; i++) {
        running += soak_submit_reap(&f->base.e, &f->subs[i].sub, timeout_ms) ? 0 : 1;
    }
    return running;
}

/* Every acknowledged submission not checked yet is a sweep in db with the tasks its reply
 * counted; how many are not (lost). */
static int64_t check_submits(fixture *f, int64_t *checked) {
    int64_t lost = 0;
    sqlite3 *h = svc_db_open(f->base.e.db);
    for (int i = 0; i < f->n_subs; i++) {
        submission *s = &f->subs[i];
        if (!s->sub.acked || s->checked) {
            continue;
        }
        s->checked = true;
        (*checked)++;
        lost += soak_submit_stored(h, &s->sub) ? 0 : 1;
    }
    sqlite3_close(h);
    return lost;
}

static bool any_running(const fixture *f) {
    for (int i = 0; i < f->n_subs; i++) {
        if (f->subs[i].sub.pid != 0) {
            return true;
        }
    }
    return false;
}

static void test_kill9_coordinator_a_thousand_times(void **state) {
    fixture *f = *state;
    svc_env *e = &f->base.e;
    long n_kills = soak_env_long("CHESSLENS_KILLS", 1000);
    unsigned seed = (unsigned)soak_env_long("CHESSLENS_SOAK_SEED", (long)time(NULL));
    srand(seed);
    print_message("  %ld kills, seed %u, %s\n", n_kills, seed,
                  f->base.net != NULL ? "in a network namespace of its own"
                                      : "on the host loopback");
    int64_t t0 = soak_now_ms();
    svc_env_init(e, "kill_loop");
    soak_generate_games(e, N_GAMES, 7, 60000);
    /* A lease of 3 s outlives the workers' reconnect (silence 3 x 100 ms, then a backoff of
     * 1 s), so most leases survive a kill; the attempts a lapse costs are many, so that no task
     * dies of the kills (dead would be allowed, but done checks more). */
    const char *const opts[] = {"--lease-ms",
                                "3000",
                                "--heartbeat-ms",
                                "100",
                                "--max-attempts",
                                "1000",
                                "--pairs-per-task",
                                "1",
                                "--games-per-task",
                                "1",
                                NULL};
    svc_start_coordinator_on(e, "127.0.0.1", opts, NULL);
    char ack_logs[N_WORKERS][SVC_PATH];
    const char *ack_paths[N_WORKERS];
    for (int i = 0; i < N_WORKERS; i++) {
        char id[16], file[32];
        snprintf(id, sizeof id, "w%d", i);
        snprintf(file, sizeof file, "acks-%s.log", id);
        svc_path(e, file, ack_logs[i], sizeof ack_logs[i]);
        ack_paths[i] = ack_logs[i];
        soak_start_worker(e, NULL, -1, id, 0, NULL, ack_logs[i]);
    }
    start_submit(f);

    /* submits spread over the whole loop, so that results are being stored until its end */
    double p_submit = (double)MAX_SUBMITS / (double)n_kills;
    p_submit = p_submit < 0.05 ? 0.05 : p_submit > 0.25 ? 0.25 : p_submit;
    long offsets[N_WORKERS] = {0};
    soak_acks at_kill = {0}; /* the checks right after each kill */
    int64_t lost_subs = 0, subs_at_kill = 0;
    long kills = 0, short_kills = 0, long_kills = 0, in_submit = 0, after_ack = 0;
    long while_storing = 0, while_dispatching = 0;
    int64_t last_restart = 0;
    while (kills < n_kills) {
        int in_flight = poll_submits(f, 0);
        int64_t done0 = svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'");
        int64_t leases0 = svc_query_int(e->db, "SELECT coalesce(sum(attempts), 0) FROM task");
        double r = soak_uniform();
        bool submitted = false;
        if (r < p_submit && f->n_subs < MAX_SUBMITS && in_flight < MAX_IN_FLIGHT) {
            soak_submit *s = start_submit(f);
            submitted = true;
            if (soak_uniform() < 0.5) {
                /* the moment its answer arrived: the sweep must have been committed first */
                if (soak_submit_reap(e, s, 10000)) {
                    after_ack++;
                }
            } else {
                soak_nap_ms((long)(soak_uniform() * 100.0)); /* mid-submit */
            }
        } else if (r < p_submit + 0.35) {
            soak_nap_ms((long)(soak_uniform() * 150.0));
            short_kills++;
        } else {
            soak_nap_ms(500 + (long)(soak_uniform() * 1300.0));
            long_kills++;
        }
        in_submit += submitted || any_running(f) ? 1 : 0;
        pid_t c = e->coordinator;
        svc_signal(e, c, SIGKILL);
        int st = 0;
        assert_true(svc_reap(e, c, 10000, &st));
        assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        kills++;
        /* what was acknowledged before the kill is in the database the kill left */
        soak_check_ack_logs(ack_paths, N_WORKERS, e->db, offsets, &at_kill);
        lost_subs += check_submits(f, &subs_at_kill);
        if (at_kill.lost > 0 || lost_subs > 0) {
            fail_msg("kill %ld: %lld acknowledged results and %lld acknowledged submissions are"
                     " not in the database it left",
                     kills, (long long)at_kill.lost, (long long)lost_subs);
        }
        while_storing +=
            svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'") > done0;
        while_dispatching +=
            svc_query_int(e->db, "SELECT coalesce(sum(attempts), 0) FROM task") > leases0;
        svc_start_coordinator_on(e, "127.0.0.1", opts, NULL);
        last_restart = soak_now_ms();
        if (kills % 100 == 0) {
            print_message("  %ld kills, %d sweeps submitted, %lld tasks done\n", kills, f->n_subs,
                          (long long)svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = "
                                                          "'done'"));
        }
    }
    /* the submits still running finish against the last coordinator */
    assert_int_equal(poll_submits(f, 310000), 0);
    int64_t converge_ms = soak_wait_settled(e->db, 1200000);
    if (converge_ms < 0) {
        fail_msg("tasks still pending or leased after the last kill (none settled for 5 min, or"
                 " 20 min passed): %lld",
                 (long long)svc_query_int(e->db, "SELECT count(*) FROM task WHERE state IN"
                                                 " ('pending', 'leased')"));
    }
    converge_ms = soak_now_ms() - last_restart;

    for (size_t i = 0; i < SVC_MAX_PROCS; i++) {
        if (e->procs[i].pid > 0 && e->procs[i].name[0] == 'w') {
            assert_int_equal(svc_stop(e, e->procs[i].pid, 60000), 0);
        }
    }
    assert_int_equal(svc_stop(e, e->coordinator, 60000), 0);

    /* every acknowledged submission is a sweep, with the tasks its reply counted */
    int64_t subs_after = 0;
    lost_subs += check_submits(f, &subs_after);
    int64_t acked_subs = 0, tasks_acked = 0;
    for (int i = 0; i < f->n_subs; i++) {
        acked_subs += f->subs[i].sub.acked ? 1 : 0;
        tasks_acked += f->subs[i].sub.acked ? f->subs[i].sub.tasks : 0;
    }
    sqlite3 *h = svc_db_open(e->db);
    int64_t tasks = svc_db_int(h, "SELECT count(*) FROM task");
    int64_t done = svc_db_int(h, "SELECT count(*) FROM task WHERE state = 'done'");
    int64_t dead = svc_db_int(h, "SELECT count(*) FROM task WHERE state = 'dead'");
    int64_t sweeps = svc_db_int(h, "SELECT count(*) FROM sweep");
    sqlite3_close(h);
    soak_acks a = {0};
    soak_check_ack_logs(ack_paths, N_WORKERS, e->db, NULL, &a);
    int64_t dups = soak_duplicates(e->db) + a.stored_twice;
    int64_t rows = soak_rows(e->db);
    print_message("  kills: %ld (%ld within 150 ms of a restart, %ld after 0.5-1.8 s, %ld with a"
                  " submit in flight, %ld the moment a submit was answered; %ld while results"
                  " were being stored, %ld while tasks were being dispatched)\n",
                  kills, short_kills, long_kills, in_submit, after_ack, while_storing,
                  while_dispatching);
    print_message("  sweeps: %d submitted, %lld acknowledged, %lld stored; tasks: %lld (%lld of"
                  " acknowledged sweeps), %lld done, %lld dead; result rows: %lld\n",
                  f->n_subs, (long long)acked_subs, (long long)sweeps, (long long)tasks,
                  (long long)tasks_acked, (long long)done, (long long)dead, (long long)rows);
    print_message("  acks: %lld lines, %lld acknowledged results checked at the end, %lld right"
                  " after the kill that followed them (and %lld submissions); lost: %lld results"
                  " (%lld right after a kill), %lld submissions; duplicated: %lld\n",
                  (long long)a.lines, (long long)a.results, (long long)at_kill.results,
                  (long long)subs_at_kill, (long long)(a.lost + at_kill.lost),
                  (long long)at_kill.lost, (long long)lost_subs, (long long)dups);
    print_message("  converged %.1f s after the last kill; wall time %.1f s\n",
                  (double)converge_ms / 1000.0, (double)(soak_now_ms() - t0) / 1000.0);
    assert_int_equal(kills, n_kills);
    assert_true(acked_subs >= 1 && a.results >= 1);
    assert_int_equal(a.lost + at_kill.lost, 0);
    assert_int_equal(lost_subs, 0);
    assert_int_equal(dups, 0);
    assert_int_equal(done + dead, tasks);
    svc_check_invariants(e->db, -1);
}

int main(void) {
    /* A namespace of its own, where root can have one, keeps the port it restarts on away from
     * every other process; without one the host's loopback does. */
    static soak_net net;
    char why[256];
    soak_net *pnet = soak_net_init(&net, 0, why, sizeof why) ? &net : NULL;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_kill9_coordinator_a_thousand_times, setup,
                                                 soak_fixture_teardown, pnet),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
