/*
 * bench_store: how fast the store ingests patching results. A task's results reach the store
 * through coordinator_task_complete, one transaction per task; for block_every on the full-size
 * model ([3, 12, T] per pair) that is one patch_value row per value, so a sweep writes tens of
 * millions of rows and the store must not be what a sweep waits on. The same rows are also
 * written by the plainest fast loop a user would write (one prepared INSERT, bind, step and
 * reset per row, one transaction per task's rows) into a table of the same columns and types,
 * with the store's pragmas, and the two rates are printed side by side with their ratio.
 *
 * Only the time inside coordinator_task_complete counts for the store (the dataset, sweep, tasks
 * and leases are made beforehand), and only BEGIN .. COMMIT of each task for the plain loop.
 * The rows counted are patch_value rows; the store's time also covers what else a completion
 * writes (one patch_pair row per pair, the task's state).
 * Each figure is the best of --reps runs, each into a fresh database; the order of the two
 * alternates between runs, so both see the same conditions of a shared machine.
 *
 * usage: bench_store [--tasks N] [--pairs P] [--tokens T] [--reps R] [--keep DIR]
 *        (defaults: 100 tasks of 64 pairs, T = 40, 2 runs; the databases, store-R.db and
 *        plain-R.db for run R, go to a temporary directory removed at exit, or to DIR, kept)
 */
#include <errno.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coordinator/coordinator.h"

/* Targets of the store's ingestion (rows per second, and the fraction of the plain loop). */
#define TARGET_ROWS_PER_S 500000.0
#define TARGET_RATIO 0.5

/* The full-size chess GPT: block_every gives [3, L, T] values per pair. */
enum { N_COMPONENTS = 3, N_LAYERS = 12 };

/* Games in the benchmark's dataset; a pair's game is its index modulo this. */
enum { N_GAMES = 16 };

/* The table the store writes each value to (schema.c), without its foreign key to patch_pair:
 * the plain database has no such table. (The store checks that key on every row, which is part
 * of the cost measured.) */
static const char plain_schema[] = "CREATE TABLE patch_value ("
                                   "  pair_id INTEGER NOT NULL,"
                                   "  idx INTEGER NOT NULL,"
                                   "  component INTEGER,"
                                   "  layer INTEGER NOT NULL,"
                                   "  pos INTEGER,"
                                   "  head INTEGER,"
                                   "  src_pos INTEGER,"
                                   "  value REAL,"
                                   "  PRIMARY KEY (pair_id, idx)) WITHOUT ROWID;";

/* One task's results, the same for every task (pair ids differ per task). */
typedef struct bench_batch {
    size_t n_pairs, T;
    float *values;                    /* [n_pairs, 3, L, T] */
    interp_patch_result *results;     /* [n_pairs], values pointing into `values` */
    const interp_patch_result **ptrs; /* [n_pairs] */
    uint64_t *game;                   /* [n_pairs] */
    uint32_t *cutoff;                 /* [n_pairs] */
    int32_t *corrupt_pos;             /* [n_pairs] */
    const char **clean, **corrupt;    /* [n_pairs] */
    const char **metric;              /* [n_pairs] */
    bool *normalized;                 /* [n_pairs] */
    coordinator_patch_batch patch;    /* the columns above */
} bench_batch;

/* A run's figures: result rows written, seconds timed, database bytes after closing. */
typedef struct bench_figures {
    uint64_t rows;
    double seconds;
    long long bytes;
} bench_figures;

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static size_t values_per_pair(size_t T) {
    return (size_t)N_COMPONENTS * N_LAYERS * T;
}

static void batch_free(bench_batch *b) {
    free(b->values);
    free(b->results);
    free(b->ptrs);
    free(b->game);
    free(b->cutoff);
    free(b->corrupt_pos);
    free(b->clean);
    free(b->corrupt);
    free(b->metric);
    free(b->normalized);
    memset(b, 0, sizeof *b);
}

/* Pairs of the last token of a T-token prompt replaced by each of its legal alternatives, with
 * normalised logit_diff values drawn uniformly from [-1, 1). */
static int batch_make(bench_batch *b, size_t n_pairs, size_t T) {
    static const char *const squares[] = {"a3", "a4", "b3", "b4", "c3", "c4", "d3", "d4",
                                          "e3", "e4", "f3", "f4", "g3", "g4", "h3", "h4"};
    size_t per = values_per_pair(T);
    memset(b, 0, sizeof *b);
    b->n_pairs = n_pairs;
    b->T = T;
    b->values = malloc(n_pairs * per * sizeof *b->values);
    b->results = calloc(n_pairs, sizeof *b->results);
    b->ptrs = calloc(n_pairs, sizeof *b->ptrs);
    b->game = calloc(n_pairs, sizeof *b->game);
    b->cutoff = calloc(n_pairs, sizeof *b->cutoff);
    b->corrupt_pos = calloc(n_pairs, sizeof *b->corrupt_pos);
    b->clean = calloc(n_pairs, sizeof *b->clean);
    b->corrupt = calloc(n_pairs, sizeof *b->corrupt);
    b->metric = calloc(n_pairs, sizeof *b->metric);
    b->normalized = calloc(n_pairs, sizeof *b->normalized);
    if (!b->values || !b->results || !b->ptrs || !b->game || !b->cutoff || !b->corrupt_pos ||
        !b->clean || !b->corrupt || !b->metric || !b->normalized) {
        batch_free(b);
        return -1;
    }
    uint64_t rng = 2024;
    for (size_t i = 0; i < n_pairs * per; i++) {
        b->values[i] = (float)((double)(splitmix64(&rng) >> 11) * 0x1p-52 - 1.0);
    }
    for (size_t i = 0; i < n_pairs; i++) {
        interp_patch_result *r = &b->results[i];
        r->shape = (model_shape){3, {N_COMPONENTS, N_LAYERS, T, 0}};
        r->values = b->values + i * per;
        snprintf(r->axes, sizeof r->axes, "component,layer,pos");
        snprintf(r->labels, sizeof r->labels, "resid_pre,attn_out,mlp_out");
        r->clean_metric = 2.5;
        r->corrupted_metric = -1.25;
        b->ptrs[i] = r;
        b->game[i] = i % N_GAMES;
        b->cutoff[i] = (uint32_t)T;
        b->corrupt_pos[i] = (int32_t)T - 1;
        b->clean[i] = "e2";
        b->corrupt[i] = squares[i % (sizeof squares / sizeof squares[0])];
        b->metric[i] = "logit_diff:e4,d5";
        b->normalized[i] = true;
    }
    b->patch = (coordinator_patch_batch){
        .n = n_pairs,
        .kind = INTERP_PATCH_BLOCK_EVERY,
        .game = b->game,
        .cutoff = b->cutoff,
        .corrupt_pos = b->corrupt_pos,
        .clean_token = b->clean,
        .corrupt_token = b->corrupt,
        .corrupt_game = NULL,
        .metric = b->metric,
        .normalized = b->normalized,
        .result = b->ptrs,
    };
    return 0;
}

/* Removes a database and its WAL and shared-memory files (absent ones are fine). */
static void remove_db(const char *path) {
    char side[640];
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", path);
    remove(side);
}

/* Bytes of a closed database (with its WAL, should one remain). */
static long long db_bytes(const char *path) {
    struct stat st;
    long long n = 0;
    char wal[640];
    if (stat(path, &st) == 0) {
        n += (long long)st.st_size;
    }
    snprintf(wal, sizeof wal, "%s-wal", path);
    if (stat(wal, &st) == 0) {
        n += (long long)st.st_size;
    }
    return n;
}

static int64_t count_rows(sqlite3 *db) {
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM patch_value", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        n = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return n;
}

/* The store's path: a dataset, a sweep with one block_every job at cut-off T, n_tasks tasks
 * added and leased, then n_tasks timed completions carrying b's results. */
static int run_store(const char *path, const bench_batch *b, size_t n_tasks, bench_figures *out) {
    char err[COMMON_ERR_LEN] = "";
    coordinator_store *s = NULL;
    coordinator_task_def *defs = NULL;
    char *keys = NULL, *bodies = NULL;
    coordinator_lease *leases = NULL;
    size_t n_leases = 0;
    int rc = -1;
    enum { KEY_LEN = 64, BODY_LEN = 128 };

    remove_db(path);
    int64_t dataset = 0, sweep = 0, job = 0;
    coordinator_import_stats st = {0};
    if (coordinator_store_open(&s, path, 0, err) != 0 ||
        coordinator_dataset_create(s, "bench", "bench_store", false, &dataset, err) != 0 ||
        coordinator_games_generate(s, dataset, N_GAMES, 1, 160, &st, NULL, err) != 0) {
        goto done;
    }
    char spec[1024];
    snprintf(spec, sizeof spec,
             "{\"name\":\"bench\",\"model\":\"bench-model\",\"dataset\":\"bench\","
             "\"games\":[0,%" PRIu64 "],\"analyses\":[{\"kind\":\"patch\",\"patch\":"
             "\"block_every\",\"cutoffs\":[%zu],\"corrupt\":{\"with\":"
             "\"each_legal_alternative\"},\"metric\":{\"kind\":\"logit_diff\",\"tokens\":"
             "[\"clean_top\",\"corrupt_top\"],\"normalize\":true}}]}",
             st.n_added, b->T);
    if (coordinator_sweep_submit(s, spec, strlen(spec), NULL, 0, &sweep, NULL, err) != 0 ||
        coordinator_job_find(s, sweep, 0, &job, err) != 0) {
        goto done;
    }
    defs = calloc(n_tasks, sizeof *defs);
    keys = malloc(n_tasks * KEY_LEN);
    bodies = malloc(n_tasks * BODY_LEN);
    if (!defs || !keys || !bodies) {
        snprintf(err, sizeof err, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_tasks; i++) {
        char *key = keys + i * KEY_LEN, *body = bodies + i * BODY_LEN;
        snprintf(key, KEY_LEN, "c%zu:g%zu-%zu", b->T, i, i + 1);
        int len = snprintf(body, BODY_LEN,
                           "{\"analysis\":0,\"cutoff\":%zu,\"games\":[%zu,%zu],\"kind\":"
                           "\"patch\",\"pairs\":%zu}",
                           b->T, i, i + 1, b->n_pairs);
        defs[i] = (coordinator_task_def){key, body, (size_t)len};
    }
    if (coordinator_tasks_add(s, job, defs, n_tasks, NULL, err) != 0 ||
        coordinator_tasks_claim(s, "bench", n_tasks, 0, INT64_MAX, &leases, &n_leases, err) != 0) {
        goto done;
    }
    if (n_leases != n_tasks) {
        snprintf(err, sizeof err, "claimed %zu of %zu tasks", n_leases, n_tasks);
        goto done;
    }

    coordinator_results results = {.patch = &b->patch};
    double seconds = 0;
    for (size_t i = 0; i < n_leases; i++) {
        coordinator_fence fence;
        double t0 = common_now_s();
        int r =
            coordinator_task_complete(s, leases[i].task_id, leases[i].epoch, &results, &fence, err);
        seconds += common_now_s() - t0;
        if (r != 0) {
            goto done;
        }
        if (fence != COORDINATOR_STORED) {
            snprintf(err, sizeof err, "task %zu not stored (fence %d)", i, (int)fence);
            goto done;
        }
    }
    uint64_t expected = (uint64_t)n_tasks * b->n_pairs * values_per_pair(b->T);
    int64_t rows = count_rows(coordinator_store_db(s));
    if (rows < 0 || (uint64_t)rows != expected) {
        snprintf(err, sizeof err, "patch_value holds %" PRId64 " rows, expected %" PRIu64, rows,
                 expected);
        goto done;
    }
    coordinator_store_close(&s);
    *out = (bench_figures){expected, seconds, db_bytes(path)};
    rc = 0;

done:
    if (rc != 0) {
        fprintf(stderr, "bench_store: store: %s\n", err);
    }
    coordinator_leases_free(leases, n_leases);
    coordinator_store_close(&s);
    free(defs);
    free(keys);
    free(bodies);
    return rc;
}

static int exec_sql(sqlite3 *db, const char *sql) {
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "bench_store: plain: %s: %s\n", sql, msg != NULL ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* The baseline: the same rows (pair ids numbered as the store numbers its pairs) inserted with
 * one prepared statement, one transaction per task. */
static int run_plain(const char *path, const bench_batch *b, size_t n_tasks, bench_figures *out) {
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL;
    int rc = -1;
    remove_db(path);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        fprintf(stderr, "bench_store: plain: sqlite3_open(%s): %s\n", path,
                db != NULL ? sqlite3_errmsg(db) : "out of memory");
        goto done;
    }
    if (exec_sql(db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL") != 0 ||
        exec_sql(db, plain_schema) != 0) {
        goto done;
    }
    if (sqlite3_prepare_v2(db, "INSERT INTO patch_value VALUES (?, ?, ?, ?, ?, ?, ?, ?)", -1, &ins,
                           NULL) != SQLITE_OK) {
        fprintf(stderr, "bench_store: plain: prepare: %s\n", sqlite3_errmsg(db));
        goto done;
    }
    /* block_every has no head and no source position: NULL, and bindings survive a reset */
    sqlite3_bind_null(ins, 6);
    sqlite3_bind_null(ins, 7);
    size_t T = b->T;
    double seconds = 0;
    for (size_t task = 0; task < n_tasks; task++) {
        double t0 = common_now_s();
        if (exec_sql(db, "BEGIN") != 0) {
            goto done;
        }
        for (size_t p = 0; p < b->n_pairs; p++) {
            const float *v = b->results[p].values; /* [3, L, T] */
            sqlite3_bind_int64(ins, 1, (sqlite3_int64)(task * b->n_pairs + p + 1));
            size_t idx = 0;
            for (size_t c = 0; c < N_COMPONENTS; c++) {
                for (size_t l = 0; l < N_LAYERS; l++) {
                    for (size_t t = 0; t < T; t++, idx++) {
                        sqlite3_bind_int64(ins, 2, (sqlite3_int64)idx);
                        sqlite3_bind_int64(ins, 3, (sqlite3_int64)c);
                        sqlite3_bind_int64(ins, 4, (sqlite3_int64)l);
                        sqlite3_bind_int64(ins, 5, (sqlite3_int64)t);
                        sqlite3_bind_double(ins, 8, (double)v[idx]);
                        if (sqlite3_step(ins) != SQLITE_DONE) {
                            fprintf(stderr, "bench_store: plain: insert: %s\n", sqlite3_errmsg(db));
                            goto done;
                        }
                        sqlite3_reset(ins);
                    }
                }
            }
        }
        if (exec_sql(db, "COMMIT") != 0) {
            goto done;
        }
        seconds += common_now_s() - t0;
    }
    uint64_t expected = (uint64_t)n_tasks * b->n_pairs * values_per_pair(T);
    int64_t rows = count_rows(db);
    if (rows < 0 || (uint64_t)rows != expected) {
        fprintf(stderr, "bench_store: plain: %" PRId64 " rows, expected %" PRIu64 "\n", rows,
                expected);
        goto done;
    }
    sqlite3_finalize(ins);
    ins = NULL;
    sqlite3_close(db);
    db = NULL;
    *out = (bench_figures){expected, seconds, db_bytes(path)};
    rc = 0;

done:
    sqlite3_finalize(ins);
    sqlite3_close(db);
    return rc;
}

static double rate(const bench_figures *f) {
    return f->seconds > 0 ? (double)f->rows / f->seconds : 0;
}

static void print_run(const char *what, const bench_figures *f) {
    printf("  %-38s %10" PRIu64 " rows %8.2f s %12.0f rows/s  database %8.1f MB\n", what, f->rows,
           f->seconds, rate(f), (double)f->bytes / 1e6);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_store [--tasks N] [--pairs P] [--tokens T] [--reps R] "
                    "[--keep DIR]\n");
    return 2;
}

int main(int argc, char **argv) {
    size_t n_tasks = 100, n_pairs = 64, T = 40, reps = 2;
    const char *keep = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) {
            return usage();
        }
        const char *v = argv[++i];
        if (strcmp(a, "--tasks") == 0) {
            n_tasks = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--pairs") == 0) {
            n_pairs = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--tokens") == 0) {
            T = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--reps") == 0) {
            reps = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--keep") == 0) {
            keep = v;
        } else {
            return usage();
        }
    }
    if (n_tasks == 0 || n_pairs == 0 || T < 2 || T > COORDINATOR_MAX_CUTOFF || reps == 0) {
        fprintf(stderr, "bench_store: --tasks, --pairs and --reps must be > 0, --tokens in "
                        "2..65536\n");
        return 2;
    }

    char dir[512];
    if (keep != NULL) {
        snprintf(dir, sizeof dir, "%s", keep);
        if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
            perror("bench_store: mkdir");
            return 1;
        }
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/chesslens-bench-store-XXXXXX", tmp ? tmp : "/tmp");
        if (mkdtemp(dir) == NULL) {
            perror("bench_store: mkdtemp");
            return 1;
        }
    }
    bench_batch b;
    if (batch_make(&b, n_pairs, T) != 0) {
        fprintf(stderr, "bench_store: out of memory\n");
        return 1;
    }

    printf("bench_store: %zu tasks x %zu pairs of block_every [%d, %d, %zu] (%zu values per "
           "pair): %" PRIu64 " result rows per run, SQLite %s\n",
           n_tasks, n_pairs, N_COMPONENTS, N_LAYERS, T, values_per_pair(T),
           (uint64_t)n_tasks * n_pairs * values_per_pair(T), sqlite3_libversion());
    printf("databases in %s (%s)\n", dir, keep != NULL ? "kept" : "removed at exit");

    bench_figures best_store = {0, 0, 0}, best_plain = {0, 0, 0};
    int rc = 0;
    for (size_t r = 0; r < reps && rc == 0; r++) {
        char store_path[600], plain_path[600];
        snprintf(store_path, sizeof store_path, "%s/store-%zu.db", dir, r + 1);
        snprintf(plain_path, sizeof plain_path, "%s/plain-%zu.db", dir, r + 1);
        bool store_first = r % 2 == 0;
        bench_figures fs = {0, 0, 0}, fp = {0, 0, 0};
        for (int k = 0; k < 2 && rc == 0; k++) {
            bool store_now = (k == 0) == store_first;
            rc = store_now ? run_store(store_path, &b, n_tasks, &fs)
                           : run_plain(plain_path, &b, n_tasks, &fp);
        }
        if (rc != 0) {
            break;
        }
        printf("run %zu of %zu (%s first):\n", r + 1, reps, store_first ? "store" : "plain");
        print_run("chesslens coordinator_task_complete", &fs);
        print_run("plain prepared INSERT loop", &fp);
        if (best_store.rows == 0 || fs.seconds < best_store.seconds) {
            best_store = fs;
        }
        if (best_plain.rows == 0 || fp.seconds < best_plain.seconds) {
            best_plain = fp;
        }
        if (keep == NULL) {
            remove_db(store_path);
            remove_db(plain_path);
        }
    }
    if (keep == NULL) {
        rmdir(dir);
    }
    batch_free(&b);
    if (rc != 0) {
        return 1;
    }

    double ratio = rate(&best_plain) > 0 ? rate(&best_store) / rate(&best_plain) : 0;
    printf("best of %zu runs each (order alternating):\n", reps);
    print_run("chesslens coordinator_task_complete", &best_store);
    print_run("plain prepared INSERT loop", &best_plain);
    printf("  ratio chesslens / plain: %.3f\n", ratio);
    printf("  target >= %.0f rows/s: %s\n", TARGET_ROWS_PER_S,
           rate(&best_store) >= TARGET_ROWS_PER_S ? "met" : "NOT met");
    printf("  target >= %.2f of the plain loop: %s\n", TARGET_RATIO,
           ratio >= TARGET_RATIO ? "met" : "NOT met");
    return 0;
}
