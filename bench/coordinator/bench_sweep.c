/*
 * bench_sweep: a cut-off patching sweep at the full chess-GPT shape (12 layers, d_model 768,
 * 12 heads, vocabulary 77, context 128; random weights) through `chesslens run`, next to the
 * same pairs run one by one through the single-shot path, in pairs per second.
 *
 * The sweep: --games random legal games, block_every at the cut-offs --cutoffs (default
 * 20,40,60), the last token replaced by every other legal square, metric logit_diff between
 * the clean and the corrupted run's top tokens. It is run as a user runs it: the built
 * `chesslens run` binary, whole (model load, planning, execution with tasks of 64 pairs
 * packed into shared batched runs, storing every value in SQLite), timed from the outside.
 *
 * The baseline is what `chesslens patch --tokens N` does for each pair, minus the process
 * start and the model load (done once here, so the baseline is not charged for them): the
 * clean and corrupted tokens, interp_patch_run on one pair, fast algorithm with the
 * identical-prefix shortcut, same threads. Its values are checked against the stored ones.
 * A third figure, the same loop without the shortcut (each index run incrementally), is
 * timed on --noshort-pairs pairs (default 2) and extrapolated to all pairs, marked as such.
 *
 * usage: bench_sweep [--games N] [--cutoffs A,B,...] [--threads N] [--noshort-pairs N]
 *        [--model DIR] (defaults: 4 games, 20,40,60, 2 threads; a temporary directory for the
 *        model, the dataset and the database, removed at exit)
 */
#include <inttypes.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "interp/interp.h"

#define CHESSLENS CHESSLENS_BINARY_DIR "/cli/chesslens"

typedef struct args {
    long games, threads, noshort_pairs;
    char cutoffs[256];
    const char *model_dir;
} args;

/* One stored pair and what the single-shot path needs to compute it. */
typedef struct pair {
    int64_t id;
    char *uci;
    size_t cutoff, corrupt_pos;
    char corrupt_token[16], metric[64];
} pair;

static int die(const char *what, const char *why) {
    fprintf(stderr, "bench_sweep: %s: %s\n", what, why);
    return 1;
}

static int parse_args(int argc, char **argv, args *a) {
    *a = (args){.games = 4, .threads = 2, .noshort_pairs = 2, .cutoffs = "20,40,60"};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v != NULL && strcmp(argv[i], "--games") == 0) {
            a->games = atol(v);
        } else if (v != NULL && strcmp(argv[i], "--threads") == 0) {
            a->threads = atol(v);
        } else if (v != NULL && strcmp(argv[i], "--noshort-pairs") == 0) {
            a->noshort_pairs = atol(v);
        } else if (v != NULL && strcmp(argv[i], "--cutoffs") == 0) {
            snprintf(a->cutoffs, sizeof a->cutoffs, "%s", v);
        } else if (v != NULL && strcmp(argv[i], "--model") == 0) {
            a->model_dir = v;
        } else {
            fprintf(stderr, "usage: bench_sweep [--games N] [--cutoffs A,B,...] [--threads N]"
                            " [--noshort-pairs N] [--model DIR]\n");
            return 2;
        }
        i++;
    }
    if (a->games < 1 || a->threads < 1 || a->noshort_pairs < 0) {
        fprintf(stderr, "bench_sweep: --games and --threads must be >= 1\n");
        return 2;
    }
    return 0;
}

/* Runs a shell command, returning its wall time in seconds (< 0 when it failed). */
static double timed_system(const char *cmd) {
    double t0 = common_now_s();
    int rc = system(cmd);
    double secs = common_now_s() - t0;
    if (rc != 0) {
        fprintf(stderr, "bench_sweep: failed (%d): %s\n", rc, cmd);
        return -1.0;
    }
    return secs;
}

/* Every pair of the sweep in the store, in id order. */
static int load_pairs(const char *db_path, pair **out, size_t *n_out) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return die(db_path, "cannot open");
    }
    sqlite3_stmt *st = NULL;
    const char *sql = "SELECT pp.id, g.uci, pp.cutoff, pp.corrupt_pos, pp.corrupt_token, pp.metric"
                      " FROM patch_pair pp JOIN job j ON j.id = pp.job_id"
                      " JOIN sweep s ON s.id = j.sweep_id"
                      " JOIN game g ON g.dataset_id = s.dataset_id AND g.idx = pp.game"
                      " ORDER BY pp.id";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return die("query pairs", sqlite3_errmsg(db));
    }
    size_t n = 0, cap = 256;
    pair *ps = malloc(cap * sizeof *ps);
    while (ps != NULL && sqlite3_step(st) == SQLITE_ROW) {
        if (n == cap) {
            pair *bigger = realloc(ps, 2 * cap * sizeof *ps);
            if (bigger == NULL) {
                break;
            }
            ps = bigger;
            cap *= 2;
        }
        pair *p = &ps[n++];
        memset(p, 0, sizeof *p);
        p->id = sqlite3_column_int64(st, 0);
        p->uci = strdup((const char *)sqlite3_column_text(st, 1));
        p->cutoff = (size_t)sqlite3_column_int64(st, 2);
        p->corrupt_pos = (size_t)sqlite3_column_int64(st, 3);
        snprintf(p->corrupt_token, sizeof p->corrupt_token, "%s", sqlite3_column_text(st, 4));
        snprintf(p->metric, sizeof p->metric, "%s", sqlite3_column_text(st, 5));
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    *out = ps;
    *n_out = n;
    return ps != NULL ? 0 : die("load pairs", "out of memory");
}

/* Max |stored - computed| over pair p's values (the stored ones read from db). */
static double stored_diff(sqlite3 *db, int64_t pair_id, const interp_patch_result *r) {
    sqlite3_stmt *st = NULL;
    sqlite3_prepare_v2(db, "SELECT idx, value FROM patch_value WHERE pair_id = ?", -1, &st, NULL);
    sqlite3_bind_int64(st, 1, pair_id);
    double worst = 0.0;
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        size_t idx = (size_t)sqlite3_column_int64(st, 0);
        double d = fabs(sqlite3_column_double(st, 1) - (double)r->values[idx]);
        worst = d > worst ? d : worst;
        n++;
    }
    sqlite3_finalize(st);
    return n == model_shape_numel(&r->shape) ? worst : INFINITY;
}

/* Runs pairs [0, n) one by one as `chesslens patch --tokens N` does; returns the seconds
 * (< 0 on an error) and the worst difference from the stored values. */
static double single_shot(model_session *s, const model *m, const pair *ps, size_t n, bool shortcut,
                          sqlite3 *db, double *worst) {
    char err[COMMON_ERR_LEN];
    double secs = 0.0;
    *worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        const pair *p = &ps[i];
        int32_t *clean = NULL, *corrupted = NULL;
        size_t T = 0;
        interp_patch_result *res = NULL;
        char corrupt[64];
        snprintf(corrupt, sizeof corrupt, "%zu=%s", p->corrupt_pos, p->corrupt_token);
        double t0 = common_now_s();
        interp_patch_opts o = interp_patch_opts_default();
        o.kind = INTERP_PATCH_BLOCK_EVERY;
        o.no_prefix_shortcut = !shortcut;
        int rc = interp_tokens_from_uci(m, p->uci, &clean, &T, err);
        if (rc == 0 && T > p->cutoff) {
            T = p->cutoff;
        }
        if (rc == 0 && (corrupted = malloc(T * sizeof *corrupted)) == NULL) {
            rc = die("single shot", "out of memory");
        }
        if (rc == 0) {
            rc = interp_corrupt_parse(m, clean, T, corrupt, corrupted, err);
        }
        if (rc == 0) {
            rc = interp_metric_parse(m, p->metric, &o.metric, err);
        }
        if (rc == 0) {
            rc = interp_patch_run(s, clean, corrupted, T, &o, &res, err);
        }
        secs += common_now_s() - t0;
        if (rc == 0) {
            double d = stored_diff(db, p->id, res);
            *worst = d > *worst ? d : *worst;
        } else {
            fprintf(stderr, "bench_sweep: pair %" PRId64 ": %s\n", p->id, err);
        }
        interp_patch_result_destroy(&res);
        free(clean);
        free(corrupted);
        if (rc != 0) {
            return -1.0;
        }
    }
    return secs;
}

int main(int argc, char **argv) {
    args a;
    int prc = parse_args(argc, argv, &a);
    if (prc != 0) {
        return prc;
    }
    char tmp[] = "/tmp/chesslens-bench-sweep-XXXXXX";
    if (mkdtemp(tmp) == NULL) {
        return die("mkdtemp", "failed");
    }
    char err[COMMON_ERR_LEN], model_dir[512], db[512], spec_path[512], cmd[4096];
    snprintf(model_dir, sizeof model_dir, "%s/model", tmp);
    snprintf(db, sizeof db, "%s/bench.db", tmp);
    snprintf(spec_path, sizeof spec_path, "%s/sweep.json", tmp);
    if (a.model_dir != NULL) {
        snprintf(model_dir, sizeof model_dir, "%s", a.model_dir);
    } else {
        model_config cfg = {12, 768, 12, 64, 3072, 128, 128, 77, 1e-5f, 8.0f};
        if (model_write_random(model_dir, &cfg, 1, MODEL_DTYPE_F32, err) != 0) {
            return die("model", err);
        }
    }
    FILE *f = fopen(spec_path, "w");
    if (f == NULL) {
        return die(spec_path, "cannot write");
    }
    fprintf(f,
            "{\"name\": \"bench\", \"model\": \"%s\", \"dataset\": \"g\", \"games\": [0, %ld],"
            " \"analyses\": [{\"kind\": \"patch\", \"patch\": \"block_every\","
            " \"cutoffs\": [%s], \"corrupt\": {\"position\": \"last\","
            " \"with\": \"each_legal_alternative\"}, \"metric\": {\"kind\": \"logit_diff\","
            " \"tokens\": [\"clean_top\", \"corrupt_top\"]}}]}\n",
            model_dir, a.games, a.cutoffs);
    fclose(f);
    snprintf(
        cmd, sizeof cmd,
        "%s games generate --n %ld --seed 1 --max-tokens 128 --db %s --dataset g >/dev/null 2>&1",
        CHESSLENS, a.games, db);
    if (timed_system(cmd) < 0) {
        return 1;
    }
    printf("bench_sweep: block_every at cut-offs %s over %ld games, last token replaced by every"
           " other legal square; full-size random model; %ld threads\n",
           a.cutoffs, a.games, a.threads);
    fflush(stdout);
    snprintf(cmd, sizeof cmd, "%s run %s --db %s --threads %ld --quiet", CHESSLENS, spec_path, db,
             a.threads);
    double run_s = timed_system(cmd);
    if (run_s < 0) {
        return 1;
    }
    pair *ps = NULL;
    size_t n = 0;
    if (load_pairs(db, &ps, &n) != 0 || n == 0) {
        return die("pairs", "none stored");
    }

    model *m = NULL;
    model_backend *be = NULL;
    model_session *s = NULL;
    sqlite3 *h = NULL;
    if (model_load(&m, model_dir, NULL, err) != 0 ||
        model_backend_cpu_new(&be, (int)a.threads, err) != 0 ||
        model_session_new(&s, m, be, err) != 0) {
        return die("model", err);
    }
    sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL);
    double worst = 0.0, worst_ns = 0.0;
    double one_s = single_shot(s, m, ps, n, true, h, &worst);
    size_t n_ns = (size_t)a.noshort_pairs < n ? (size_t)a.noshort_pairs : n;
    double ns_s = n_ns > 0 ? single_shot(s, m, ps, n_ns, false, h, &worst_ns) : -1.0;
    if (one_s < 0 || (n_ns > 0 && ns_s < 0)) {
        return 1;
    }
    double ns_all = n_ns > 0 ? ns_s / (double)n_ns * (double)n : -1.0;

    printf("%zu pairs\n", n);
    printf("  chesslens run (whole command: load, plan, batched tasks, SQLite) %8.2f s  %8.2f "
           "pairs/s\n",
           run_s, (double)n / run_s);
    printf("  one by one, single-shot path, with the shortcut                  %8.2f s  %8.2f "
           "pairs/s  max |diff| vs stored %.2g\n",
           one_s, (double)n / one_s, worst);
    if (n_ns > 0) {
        printf("  one by one, single-shot path, no shortcut   ~%8.2f s EXTRAPOLATED from %zu "
               "pairs  %8.3f pairs/s  max |diff| %.2g\n",
               ns_all, n_ns, (double)n / ns_all, worst_ns);
    }
    printf("summary: run / one-by-one = %.2fx", one_s / run_s);
    if (n_ns > 0) {
        printf(", run / one-by-one without shortcut = ~%.1fx", ns_all / run_s);
    }
    printf(" (higher is better for run)\n");

    sqlite3_close(h);
    model_session_destroy(&s);
    model_backend_destroy(&be);
    model_destroy(&m);
    for (size_t i = 0; i < n; i++) {
        free(ps[i].uci);
    }
    free(ps);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    return system(cmd) == 0 ? 0 : 1;
}
