/*
 * test_run: `chesslens run` through the built binary, as a researcher uses it.
 *
 * - Resume after kill -9: a sweep run uninterrupted into one database, and the same sweep run
 *   into another, killed with SIGKILL once some of its tasks are stored and then run again.
 *   Both databases must hold the same rows of every result view (same count, same values, a
 *   checksum of the values), every task done once, and no pair stored twice.
 * - Single-shot parity: a sweep on the trained fixture with four patch kinds and every kind of
 *   corruption; a sample of its stored pairs is replayed one by one with `chesslens patch
 *   --tokens N` and every stored value must equal the file's within 1e-5 (a pair that cannot
 *   be normalised is stored as NULLs, and the single-shot command refuses it).
 */
#include <math.h>
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
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "cli_run.h"
#include "model/model.h"

static void scratch(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/%s", cli_tmpdir(), name);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static void remove_db(const char *db) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "rm -f '%s' '%s-wal' '%s-shm'", db, db, db);
    assert_int_equal(system(cmd), 0);
}

/* `chesslens ARGS` must succeed; its output is returned (caller frees). */
static char *must_run(const char *args) {
    int status;
    char *out = cli_run(args, &status);
    if (status != 0) {
        fail_msg("chesslens %s: exit %d\n%s", args, status, out != NULL ? out : "");
    }
    return out;
}

static sqlite3 *open_ro(const char *db) {
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(h, 5000);
    return h;
}

static int64_t query_int(sqlite3 *h, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("%s: %s", sql, sqlite3_errmsg(h));
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* ---- resume after kill -9 ---------------------------------------------------------------- */

/* The sweep of the resume test: patching at four cut-offs plus every aggregate, cut into
 * small tasks so that a kill lands between many of them. */
static const char *const resume_spec =
    "{\"name\": \"resume\", \"model\": \"" CHESSLENS_SOURCE_DIR "/models/chess-tiny\","
    " \"dataset\": \"g\", \"games\": [0, 24],"
    " \"analyses\": ["
    "  {\"kind\": \"patch\", \"patch\": \"block_every\", \"cutoffs\": {\"from\": 20, \"to\": 35,"
    "   \"step\": 5}, \"corrupt\": {\"position\": \"last\", \"with\": \"each_legal_alternative\"},"
    "   \"metric\": {\"kind\": \"logit_diff\", \"tokens\": [\"clean_top\", \"corrupt_top\"],"
    "   \"normalize\": true}},"
    "  {\"kind\": \"legal_stats\", \"components\": [\"embeds\", \"heads\", \"mlps\"]},"
    "  {\"kind\": \"neuron_stats\", \"by\": \"phase\"},"
    "  {\"kind\": \"predictions\", \"top_k\": 3}]}";

#define RUN_FLAGS "--pairs-per-task 8 --games-per-task 4 --threads 1 --quiet"

/* The rows of a result view in a fixed order, with the columns compared. */
typedef struct view_query {
    const char *name;
    const char *sql;
    bool exact; /* values computed per task (else merged sums: equal to rounding) */
} view_query;

static const view_query views[] = {
    {"patch_effects",
     "SELECT game, cutoff, corrupt_pos, clean_token, corrupt_token, metric, kind, component,"
     " layer, pos, head, value FROM patch_effects ORDER BY game, cutoff, corrupt_token, kind,"
     " component, layer, pos, head",
     true},
    {"predictions",
     "SELECT game, pos, rank, token, legal, logprob FROM predictions ORDER BY game, pos, rank",
     true},
    {"legal_stats",
     "SELECT component, pos, statistic, count, value FROM legal_stats"
     " ORDER BY component, pos, statistic",
     false},
    {"neuron_stats",
     "SELECT layer, neuron, phase, count, mean FROM neuron_stats ORDER BY layer, neuron, phase",
     false},
};

/* Every row of view v in databases a and b: the same count, the same keys, the same values
 * (the last column); returns the row count and adds the values to *sum_a / *sum_b. */
static int64_t compare_view(sqlite3 *a, sqlite3 *b, const view_query *v, double *sum_a,
                            double *sum_b) {
    sqlite3_stmt *sa = NULL, *sb = NULL;
    assert_int_equal(sqlite3_prepare_v2(a, v->sql, -1, &sa, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(b, v->sql, -1, &sb, NULL), SQLITE_OK);
    int n_cols = sqlite3_column_count(sa);
    int64_t rows = 0;
    for (;;) {
        int ra = sqlite3_step(sa), rb = sqlite3_step(sb);
        if (ra != rb) {
            fail_msg("%s: row %lld exists in only one database", v->name, (long long)rows);
        }
        if (ra == SQLITE_DONE) {
            break;
        }
        assert_int_equal(ra, SQLITE_ROW);
        for (int c = 0; c + 1 < n_cols; c++) {
            const unsigned char *ta = sqlite3_column_text(sa, c), *tb = sqlite3_column_text(sb, c);
            bool same =
                (ta == NULL && tb == NULL) ||
                (ta != NULL && tb != NULL && strcmp((const char *)ta, (const char *)tb) == 0);
            if (!same) {
                fail_msg("%s: row %lld column %d: %s vs %s", v->name, (long long)rows, c,
                         ta != NULL ? (const char *)ta : "NULL",
                         tb != NULL ? (const char *)tb : "NULL");
            }
        }
        int last = n_cols - 1;
        bool null_a = sqlite3_column_type(sa, last) == SQLITE_NULL;
        bool null_b = sqlite3_column_type(sb, last) == SQLITE_NULL;
        assert_int_equal(null_a, null_b);
        if (!null_a) {
            double x = sqlite3_column_double(sa, last), y = sqlite3_column_double(sb, last);
            double tol = v->exact ? 0.0 : 1e-12 * (1.0 + fabs(x));
            if (fabs(x - y) > tol) {
                fail_msg("%s: row %lld: %.17g vs %.17g", v->name, (long long)rows, x, y);
            }
            *sum_a += x;
            *sum_b += y;
        }
        rows++;
    }
    sqlite3_finalize(sa);
    sqlite3_finalize(sb);
    return rows;
}

/* Starts `chesslens run SPEC --db DB RUN_FLAGS` as a child process (stdout/stderr to LOG). */
static pid_t spawn_run(const char *spec, const char *db, const char *log) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        FILE *f = freopen(log, "w", stdout);
        if (f == NULL || dup2(STDOUT_FILENO, STDERR_FILENO) < 0) {
            _exit(127);
        }
        execl(cli_bin(), cli_bin(), "run", spec, "--db", db, "--pairs-per-task", "8",
              "--games-per-task", "4", "--threads", "1", "--quiet", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void test_resume_after_kill(void **state) {
    (void)state;
    char spec[512], db_whole[512], db_killed[512], log[512], cmd[4096];
    scratch(spec, sizeof spec, "resume.json");
    scratch(db_whole, sizeof db_whole, "whole.db");
    scratch(db_killed, sizeof db_killed, "killed.db");
    scratch(log, sizeof log, "killed.log");
    write_text(spec, resume_spec);
    const char *dbs[] = {db_whole, db_killed};
    for (size_t i = 0; i < 2; i++) {
        remove_db(dbs[i]);
        snprintf(cmd, sizeof cmd,
                 "games generate --n 24 --seed 7 --max-tokens 128 --db '%s' --dataset g", dbs[i]);
        free(must_run(cmd));
    }
    snprintf(cmd, sizeof cmd, "run '%s' --db '%s' " RUN_FLAGS, spec, db_whole);
    free(must_run(cmd));

    /* the killed run: SIGKILL once a few tasks are stored and most are not */
    pid_t pid = spawn_run(spec, db_killed, log);
    int64_t total = 0, done = 0;
    for (int i = 0; i < 6000; i++) { /* up to 60 s */
        struct timespec nap = {0, 10000000L};
        nanosleep(&nap, NULL);
        sqlite3 *h = open_ro(db_killed);
        total = query_int(h, "SELECT count(*) FROM task");
        done = query_int(h, "SELECT count(*) FROM task WHERE state = 'done'");
        sqlite3_close(h);
        if (done >= 3) {
            break;
        }
    }
    assert_int_equal(kill(pid, SIGKILL), 0);
    int wstatus = 0;
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    assert_true(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);
    {
        sqlite3 *h = open_ro(db_killed);
        done = query_int(h, "SELECT count(*) FROM task WHERE state = 'done'");
        total = query_int(h, "SELECT count(*) FROM task");
        sqlite3_close(h);
    }
    if (!(done >= 3 && done < total / 2)) {
        fail_msg("the kill did not land mid-sweep: %lld of %lld tasks done", (long long)done,
                 (long long)total);
    }
    snprintf(cmd, sizeof cmd, "run '%s' --db '%s' " RUN_FLAGS, spec, db_killed);
    char *out = must_run(cmd);
    assert_non_null(strstr(out, "resuming sweep 'resume'"));
    assert_non_null(strstr(out, "leases of an interrupted run requeued"));
    free(out);

    sqlite3 *a = open_ro(db_whole), *b = open_ro(db_killed);
    const char *const invariants[] = {
        "SELECT count(*) FROM task WHERE state != 'done'",
        "SELECT count(*) FROM (SELECT job_id, game, cutoff, corrupt_pos, corrupt_token"
        " FROM patch_pair GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1)",
        "SELECT count(*) FROM (SELECT task_id FROM patch_pair GROUP BY task_id, seq"
        " HAVING count(*) > 1)",
    };
    for (size_t i = 0; i < sizeof invariants / sizeof invariants[0]; i++) {
        assert_int_equal(query_int(a, invariants[i]), 0);
        assert_int_equal(query_int(b, invariants[i]), 0);
    }
    assert_int_equal(query_int(a, "SELECT count(*) FROM task"), total);
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        double sum_a = 0.0, sum_b = 0.0;
        int64_t rows = compare_view(a, b, &views[i], &sum_a, &sum_b);
        assert_true(rows > 0);
        assert_true(fabs(sum_a - sum_b) <= 1e-9 * (1.0 + fabs(sum_a)));
        print_message("%s: %lld rows, sum %.10g in both\n", views[i].name, (long long)rows, sum_a);
    }
    sqlite3_close(a);
    sqlite3_close(b);
}

/* ---- single-shot parity ------------------------------------------------------------------ */

/* Four patch kinds, each with another kind of corruption and metric. */
static const char *const replay_spec =
    "{\"name\": \"replay\", \"model\": \"" CHESSLENS_SOURCE_DIR "/models/chess-tiny\","
    " \"dataset\": \"g\", \"games\": [0, 4],"
    " \"analyses\": ["
    "  {\"kind\": \"patch\", \"patch\": \"block_every\", \"cutoffs\": [13, 20],"
    "   \"corrupt\": {\"position\": \"last\", \"with\": \"each_legal_alternative\"},"
    "   \"metric\": {\"kind\": \"logit_diff\", \"tokens\": [\"clean_top\", \"corrupt_top\"],"
    "   \"normalize\": true}},"
    "  {\"kind\": \"patch\", \"patch\": \"attn_head_out_all_pos\", \"cutoffs\": [16],"
    "   \"corrupt\": {\"position\": 5, \"with\": \"random_legal_alternative\", \"seed\": 3},"
    "   \"metric\": {\"kind\": \"logprob\", \"tokens\": [\"clean_top\"]}},"
    "  {\"kind\": \"patch\", \"patch\": \"resid_pre\", \"cutoffs\": [14],"
    "   \"corrupt\": {\"with\": {\"game\": 5}}, \"metric\": {\"kind\": \"legal_mass\"}},"
    "  {\"kind\": \"patch\", \"patch\": \"attn_head_pattern_dest_src_pos\", \"cutoffs\": [10],"
    "   \"corrupt\": {\"position\": -3, \"with\": \"e4\"},"
    "   \"metric\": {\"kind\": \"logit\", \"tokens\": [\"corrupt_top\"]}}]}";

/* One stored pair: what `chesslens patch` needs to compute it again. */
typedef struct stored_pair {
    int64_t id;
    char clean_uci[4096], corrupt_uci[4096], metric[128], kind[64];
    int64_t cutoff, corrupt_pos;
    char corrupt_token[16];
    bool has_corrupt_game, normalized;
} stored_pair;

static void copy_col(sqlite3_stmt *st, int c, char *dst, size_t cap) {
    const unsigned char *t = sqlite3_column_text(st, c);
    snprintf(dst, cap, "%s", t != NULL ? (const char *)t : "");
}

/* Replays pair p and compares every stored value with the single-shot file; returns the
 * number of values compared. */
static size_t replay_pair(sqlite3 *h, const stored_pair *p) {
    char out_path[512], cmd[12288], corruption[4200];
    scratch(out_path, sizeof out_path, "replay.safetensors");
    if (p->has_corrupt_game) {
        snprintf(corruption, sizeof corruption, "--corrupt-uci '%s'", p->corrupt_uci);
    } else {
        snprintf(corruption, sizeof corruption, "--corrupt %lld=%s", (long long)p->corrupt_pos,
                 p->corrupt_token);
    }
    snprintf(cmd, sizeof cmd,
             "patch --model '%s/models/chess-tiny' --uci '%s' %s --metric '%s' %s --kind %s"
             " --tokens %lld --threads 1 --out '%s'",
             CHESSLENS_SOURCE_DIR, p->clean_uci, corruption, p->metric,
             p->normalized ? "--normalize" : "", p->kind, (long long)p->cutoff, out_path);
    /* a normalised pair whose clean and corrupted metrics are equal (e.g. logit_diff with
     * clean_top = corrupt_top) cannot be normalised: the sweep stores NULLs, the single-shot
     * command refuses it */
    char count_sql[128];
    snprintf(count_sql, sizeof count_sql,
             "SELECT count(*) FROM patch_value WHERE pair_id = %lld AND value IS NOT NULL",
             (long long)p->id);
    if (p->normalized && query_int(h, count_sql) == 0) {
        int status;
        char *out = cli_run(cmd, &status);
        assert_int_not_equal(status, 0);
        assert_non_null(strstr(out, "cannot normalise"));
        free(out);
        return 0;
    }
    free(must_run(cmd));
    char err[COMMON_ERR_LEN];
    model_st_file *f = NULL;
    if (model_st_open(&f, out_path, err) != 0) {
        fail_msg("%s", err);
    }
    long ti = model_st_find(f, p->kind);
    assert_true(ti >= 0);
    model_dtype dtype;
    model_shape shape;
    model_st_info(f, (size_t)ti, &dtype, &shape);
    size_t bytes = 0;
    const float *values = model_st_data(f, (size_t)ti, &bytes);
    size_t n_file = bytes / sizeof(float);

    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h,
                                        "SELECT idx, value FROM patch_value WHERE pair_id = ?"
                                        " ORDER BY idx",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, p->id);
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(st, 0);
        assert_true(idx >= 0 && (size_t)idx < n_file);
        float want = values[idx];
        if (sqlite3_column_type(st, 1) == SQLITE_NULL) { /* an unnormalisable pair */
            if (!isnan(want)) {
                fail_msg("pair %lld idx %lld: stored NULL, single-shot %.9g", (long long)p->id,
                         (long long)idx, (double)want);
            }
        } else {
            double got = sqlite3_column_double(st, 1);
            if (!(fabs(got - (double)want) <= 1e-5)) {
                fail_msg("pair %lld (%s, cut-off %lld) idx %lld: stored %.9g, single-shot %.9g",
                         (long long)p->id, p->kind, (long long)p->cutoff, (long long)idx, got,
                         (double)want);
            }
        }
        n++;
    }
    sqlite3_finalize(st);
    assert_int_equal(n, n_file); /* every value of the kind is stored */
    model_st_close(&f);
    return n;
}

static void test_replay_patch_effects(void **state) {
    (void)state;
    char spec[512], db[512], cmd[2048];
    scratch(spec, sizeof spec, "replay.json");
    scratch(db, sizeof db, "replay.db");
    write_text(spec, replay_spec);
    remove_db(db);
    snprintf(cmd, sizeof cmd,
             "games generate --n 6 --seed 11 --max-tokens 128 --db '%s' --dataset g", db);
    free(must_run(cmd));
    snprintf(cmd, sizeof cmd, "run '%s' --db '%s' --threads 1 --quiet", spec, db);
    free(must_run(cmd));

    sqlite3 *h = open_ro(db);
    /* every analysis stored pairs */
    assert_int_equal(query_int(h, "SELECT count(DISTINCT kind) FROM patch_pair"), 4);
    /* a sample: every 7th pair and the first and last of each kind */
    const char *sql =
        "SELECT pp.id, g.uci, pp.cutoff, pp.corrupt_pos, pp.corrupt_token, pp.corrupt_game,"
        "       cg.uci, pp.metric, pp.normalized, pp.kind"
        " FROM patch_pair pp JOIN job j ON j.id = pp.job_id JOIN sweep s ON s.id = j.sweep_id"
        " JOIN game g ON g.dataset_id = s.dataset_id AND g.idx = pp.game"
        " LEFT JOIN game cg ON cg.dataset_id = s.dataset_id AND cg.idx = pp.corrupt_game"
        " WHERE pp.id % 7 = 0"
        "    OR pp.id IN (SELECT min(id) FROM patch_pair GROUP BY kind)"
        "    OR pp.id IN (SELECT max(id) FROM patch_pair GROUP BY kind)"
        " ORDER BY pp.id";
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    size_t n_pairs = 0, n_values = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        stored_pair p;
        memset(&p, 0, sizeof p);
        p.id = sqlite3_column_int64(st, 0);
        copy_col(st, 1, p.clean_uci, sizeof p.clean_uci);
        p.cutoff = sqlite3_column_int64(st, 2);
        p.corrupt_pos = sqlite3_column_int64(st, 3);
        copy_col(st, 4, p.corrupt_token, sizeof p.corrupt_token);
        p.has_corrupt_game = sqlite3_column_type(st, 5) != SQLITE_NULL;
        copy_col(st, 6, p.corrupt_uci, sizeof p.corrupt_uci);
        copy_col(st, 7, p.metric, sizeof p.metric);
        p.normalized = sqlite3_column_int(st, 8) != 0;
        copy_col(st, 9, p.kind, sizeof p.kind);
        size_t n = replay_pair(h, &p);
        n_values += n;
        n_pairs += n > 0;
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    assert_true(n_pairs >= 8);
    print_message("replayed %zu pairs, %zu values\n", n_pairs, n_values);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_after_kill),
        cmocka_unit_test(test_replay_patch_effects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
