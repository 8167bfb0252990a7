/*
 * test_coord_wire: the TASK and RESULT bodies (coordinator/wire.h).
 * - Work: every task of a sweep with patch analyses of each corruption kind (each and random
 *   legal alternative, a given token, another game inside and outside the range) and each
 *   aggregate kind is loaded from the store, encoded and decoded, and the decoded work equals
 *   the loaded one field by field (and encodes to the same bytes).
 * - Results: the same sweep runs in two stores set up alike; each task's executor output
 *   completes the task in store A as it is and in store B after an encode and decode, and then
 *   every result table holds the same rows in both, floats bit for bit (NaN values of
 *   unnormalisable pairs included). Hand-made results carry NaN payloads, infinities and -0.0.
 * - Hostile input: every truncation refused with nothing left allocated, every allocation
 *   failure the same, huge declared counts refused before anything of their size is allocated,
 *   wrong types, duplicate and unknown keys, trailing bytes, a pair whose game is not carried,
 *   shape and length mismatches.
 * With CHESSLENS_WIRE_CORPUS set to a directory, the round-trip test also writes a few valid
 * bodies there (one byte 0 or 1, work or results, then the body): the seed corpus of
 * tests/coordinator/fuzz/fuzz_wire.c, whose spec is sweep_json below.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "chess/chess.h"
#include "coordinator/wire.h"
#include "proto/proto.h"
#include "worker/worker.h"

/* ---- allocations: the link wraps malloc, calloc, realloc and free ---- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

/* While tracking (around one decode call only), the blocks allocated and not freed, the
 * largest request, and the allocation to refuse. */
static bool tracking;
static long live, n_allocs, fail_at = -1;
static size_t largest;

static void track_start(long fail) {
    live = 0;
    n_allocs = 0;
    largest = 0;
    fail_at = fail;
    tracking = true;
}

static void track_stop(void) {
    tracking = false;
}

/* Whether an allocation of n bytes may go ahead (counted). */
static bool allowed(size_t n) {
    if (!tracking) {
        return true;
    }
    largest = n > largest ? n : largest;
    return n_allocs++ != fail_at;
}

void *__wrap_malloc(size_t n) {
    void *p = allowed(n) ? __real_malloc(n) : NULL;
    live += tracking && p != NULL;
    return p;
}

void *__wrap_calloc(size_t n, size_t size) {
    void *p = allowed(n * size) ? __real_calloc(n, size) : NULL;
    live += tracking && p != NULL;
    return p;
}

void *__wrap_realloc(void *p, size_t n) {
    void *q = allowed(n) ? __real_realloc(p, n) : NULL;
    live += tracking && p == NULL && q != NULL;
    return q;
}

void __wrap_free(void *p) {
    live -= tracking && p != NULL;
    __real_free(p);
}

/* ---- the sweep ---- */

static char err[COMMON_ERR_LEN];

#define MODEL_DIR CHESSLENS_SOURCE_DIR "/models/chess-tiny"
#define N_RANDOM 5
#define N_GAMES (N_RANDOM + 3)
#define MAX_TOKENS 40

static const char *const hand_games[3] = {
    "f2f3 e7e5 g2g4 d8h4",                           /* 9 tokens, mate */
    "a2a4 b7b5 a4b5 a7a6 b5a6 c8b7 a6b7 b8c6 b7a8q", /* 20 tokens, a promotion */
    "e2e4 e7e5 g1f3 b8c6 f1c4 g8f6",                 /* 13 tokens: game 7, outside the sweep */
};

/* Every corruption kind and every aggregate kind; analysis 0 normalises pairs whose top tokens
 * can be equal (NaN values). tests/coordinator/fuzz/fuzz_wire.c holds the same text. */
static const char *const sweep_json =
    "{\"name\":\"wire\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,7],\"analyses\":["
    /* 0 */ "{\"kind\":\"patch\",\"patch\":\"block_every\",\"cutoffs\":[9,14],"
    "\"corrupt\":{\"position\":\"last\",\"with\":\"each_legal_alternative\"},"
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\",\"corrupt_top\"],"
    "\"normalize\":true}},"
    /* 1 */ "{\"kind\":\"patch\",\"patch\":\"attn_head_out_by_pos\",\"cutoffs\":[12],"
    "\"corrupt\":{\"position\":4,\"with\":\"random_legal_alternative\",\"seed\":3},"
    "\"metric\":{\"kind\":\"legal_mass\",\"normalize\":true}},"
    /* 2 */ "{\"kind\":\"legal_stats\",\"components\":[\"embeds\",\"heads\",\"mlps\"]},"
    /* 3 */ "{\"kind\":\"neuron_stats\",\"by\":\"phase\",\"slice\":[5,-5]},"
    /* 4 */ "{\"kind\":\"predictions\",\"top_k\":3},"
    /* 5 */ "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[9],"
    "\"corrupt\":{\"position\":-1,\"with\":\"e4\"},"
    "\"metric\":{\"kind\":\"logprob\",\"tokens\":[\"e5\"]}},"
    /* 6 */ "{\"kind\":\"patch\",\"patch\":\"mlp_out\",\"cutoffs\":[10],"
    "\"corrupt\":{\"with\":{\"game\":0}},"
    "\"metric\":{\"kind\":\"logit\",\"tokens\":[\"clean_top\"]}},"
    /* 7 */ "{\"kind\":\"patch\",\"patch\":\"attn_out\",\"cutoffs\":[10],"
    "\"corrupt\":{\"with\":{\"game\":7}},"
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"e4\",\"d5\"]}}"
    "]}";
#define N_ANALYSES 8

static coordinator_store *store_a, *store_b;
static coordinator_spec *spec;
static worker_executor *ex;

static const char *tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

/* A fresh store with the dataset and the sweep planned; the same calls give the same ids. */
static coordinator_store *make_store(const char *name) {
    char path[512], side[600];
    snprintf(path, sizeof path, "%s/%s", tmpdir(), name);
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", path);
    remove(side);
    coordinator_store *s = NULL;
    int64_t ds = 0, sweep = 0;
    coordinator_import_stats st = {0};
    coordinator_game_in in[3];
    for (size_t i = 0; i < 3; i++) {
        in[i] = (coordinator_game_in){hand_games[i], NULL, (int64_t)i};
    }
    coordinator_plan_opts opts = {16, 3}; /* several tasks per job */
    if (coordinator_store_open(&s, path, 0, err) != 0 ||
        coordinator_dataset_create(s, "d", "test", false, &ds, err) != 0 ||
        coordinator_games_generate(s, ds, N_RANDOM, 5, MAX_TOKENS, &st, NULL, err) != 0 ||
        coordinator_games_add(s, ds, "hand", in, 3, 0, &st, NULL, err) != 0 ||
        st.n_added != N_GAMES ||
        coordinator_sweep_submit(s, sweep_json, strlen(sweep_json), NULL, 0, &sweep, NULL, err) !=
            0 ||
        coordinator_plan_sweep(s, sweep, spec, &opts, NULL, err) != 0) {
        fprintf(stderr, "store %s: %s\n", name, err);
        coordinator_store_close(&s);
    }
    return s;
}

static int setup(void **state) {
    (void)state;
    if (coordinator_spec_parse(&spec, sweep_json, strlen(sweep_json), err) != 0) {
        fprintf(stderr, "spec: %s\n", err);
        return -1;
    }
    store_a = make_store("wire-a.db");
    store_b = make_store("wire-b.db");
    if (store_a == NULL || store_b == NULL) {
        return -1;
    }
    if (worker_executor_new(&ex, MODEL_DIR, "cpu", 1, err) != 0) {
        fprintf(stderr, "executor: %s\n", err);
        return -1;
    }
    worker_executor_set_games_per_run(ex, 2);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    worker_executor_destroy(&ex);
    coordinator_store_close(&store_a);
    coordinator_store_close(&store_b);
    coordinator_spec_destroy(&spec);
    return 0;
}

/* Every task of the sweep as (job, body), read from store s. */
typedef struct task_row {
    int64_t id, job;
    void *body;
    size_t len;
} task_row;

static size_t read_tasks(coordinator_store *s, task_row *out, size_t cap) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(coordinator_store_db(s),
                                        "SELECT id, job_id, body FROM task ORDER BY id", -1, &st,
                                        NULL),
                     SQLITE_OK);
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_true(n < cap);
        out[n].id = sqlite3_column_int64(st, 0);
        out[n].job = sqlite3_column_int64(st, 1);
        out[n].len = (size_t)sqlite3_column_bytes(st, 2);
        out[n].body = malloc(out[n].len + 1);
        memcpy(out[n].body, sqlite3_column_blob(st, 2), out[n].len);
        n++;
    }
    sqlite3_finalize(st);
    return n;
}

static void free_tasks(task_row *t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(t[i].body);
    }
}

static void assert_texts_equal(const char *const *a, const char *const *b, size_t n) {
    assert_non_null(a);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(a[i], b[i]);
    }
}

static void assert_work_equal(const coordinator_work *a, const coordinator_work *b) {
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->analysis, b->analysis);
    assert_ptr_equal(a->params, b->params);
    assert_int_equal(a->game_from, b->game_from);
    assert_int_equal(a->game_to, b->game_to);
    assert_int_equal(a->cutoff, b->cutoff);
    assert_int_equal(a->n_pairs, b->n_pairs);
    for (size_t i = 0; i < a->n_pairs; i++) {
        const coordinator_pair *p = &a->pairs[i], *q = &b->pairs[i];
        assert_int_equal(p->game, q->game);
        assert_int_equal(p->corrupt_pos, q->corrupt_pos);
        assert_int_equal(p->corrupt_game, q->corrupt_game);
        assert_string_equal(p->clean_token, q->clean_token);
        assert_string_equal(p->corrupt_token, q->corrupt_token);
        assert_string_equal(p->uci, q->uci);
        assert_texts_equal(p->clean, q->clean, a->cutoff);
        assert_texts_equal(p->corrupted, q->corrupted, a->cutoff);
    }
    assert_int_equal(a->n_games, b->n_games);
    for (size_t i = 0; i < a->n_games; i++) {
        const coordinator_work_game *g = &a->games[i], *h = &b->games[i];
        assert_int_equal(g->index, h->index);
        assert_string_equal(g->uci, h->uci);
        assert_int_equal(g->n_tokens, h->n_tokens);
        assert_texts_equal(g->tokens, h->tokens, g->n_tokens);
        assert_memory_equal(g->phases, h->phases, g->n_tokens);
    }
}

/* Decodes body with allocations tracked: on success *out; on a refusal nothing is left. */
static int decode_work_tracked(const void *body, size_t len, long fail, coordinator_work **out) {
    coordinator_work *w = NULL;
    track_start(fail);
    int rc = coordinator_work_decode(spec, body, len, &w, err);
    track_stop();
    if (rc != 0) {
        assert_null(w);
        assert_int_equal(live, 0);
    }
    *out = w;
    return rc;
}

static int decode_results_tracked(const void *body, size_t len, long fail,
                                  coordinator_results_msg **out) {
    coordinator_results_msg *m = NULL;
    track_start(fail);
    int rc = coordinator_results_decode(body, len, &m, err);
    track_stop();
    if (rc != 0) {
        assert_null(m);
        assert_int_equal(live, 0);
    }
    *out = m;
    return rc;
}

/* Every proper prefix of body is refused (of a body over 16 KiB: 4096 prefixes spread over it
 * and the last 64), and every allocation failure is NOMEM; both leave nothing allocated. */
static void check_hostile_cuts(const uint8_t *body, size_t len, bool work) {
    size_t stride = len > 16384 ? len / 4096 : 1;
    for (size_t cut = 0; cut < len; cut += cut + 64 >= len ? 1 : stride) {
        coordinator_work *w = NULL;
        coordinator_results_msg *m = NULL;
        int rc = work ? decode_work_tracked(body, cut, -1, &w)
                      : decode_results_tracked(body, cut, -1, &m);
        if (rc == 0) {
            fail_msg("a body cut to %zu of %zu bytes decoded", cut, len);
        }
    }
    for (long fail = 0;; fail++) {
        coordinator_work *w = NULL;
        coordinator_results_msg *m = NULL;
        int rc = work ? decode_work_tracked(body, len, fail, &w)
                      : decode_results_tracked(body, len, fail, &m);
        if (rc == 0) {
            assert_true(fail >= n_allocs); /* every allocation was tried and refused once */
            coordinator_work_destroy(&w);
            coordinator_results_msg_free(&m);
            break;
        }
        assert_int_equal(rc, COMMON_ERR_NOMEM);
    }
}

/* Writes 1 byte of kind, then the body, to $CHESSLENS_WIRE_CORPUS/name when set. */
static void write_seed(const char *name, uint8_t kind, const uint8_t *body, size_t len) {
    const char *dir = getenv("CHESSLENS_WIRE_CORPUS");
    if (dir == NULL || len > 48 * 1024) {
        return;
    }
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(&kind, 1, 1, f), 1);
    assert_int_equal(fwrite(body, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Every task: load, encode, decode, equal; the decoded work encodes to the same bytes. */
static void test_work_round_trip(void **state) {
    (void)state;
    static task_row tasks[512];
    size_t n = read_tasks(store_a, tasks, 512), per_analysis[N_ANALYSES] = {0};
    size_t game_pairs_outside = 0, pairs = 0;
    for (size_t i = 0; i < n; i++) {
        coordinator_work *loaded = NULL, *decoded = NULL;
        if (coordinator_work_load(store_a, spec, tasks[i].job, tasks[i].body, tasks[i].len, &loaded,
                                  err) != 0) {
            fail_msg("load task %lld: %s", (long long)tasks[i].id, err);
        }
        uint8_t *body = NULL, *again = NULL;
        size_t len = 0, len2 = 0;
        if (coordinator_work_encode(loaded, &body, &len, err) != 0) {
            fail_msg("encode task %lld: %s", (long long)tasks[i].id, err);
        }
        if (decode_work_tracked(body, len, -1, &decoded) != 0) {
            fail_msg("decode task %lld: %s", (long long)tasks[i].id, err);
        }
        assert_work_equal(loaded, decoded);
        assert_int_equal(coordinator_work_encode(decoded, &again, &len2, err), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(again, body, len);
        per_analysis[loaded->analysis]++;
        pairs += loaded->n_pairs;
        for (size_t k = 0; k < loaded->n_pairs; k++) {
            game_pairs_outside += loaded->pairs[k].corrupt_game == N_GAMES - 1;
        }
        if (per_analysis[loaded->analysis] == 1) {
            char name[64];
            snprintf(name, sizeof name, "work-%zu", loaded->analysis);
            write_seed(name, 0, body, len);
        }
        /* the first task of each analysis also takes the hostile cuts */
        if (per_analysis[loaded->analysis] == 1) {
            check_hostile_cuts(body, len, true);
        }
        free(body);
        free(again);
        coordinator_work_destroy(&loaded);
        coordinator_work_destroy(&decoded);
    }
    for (size_t a = 0; a < N_ANALYSES; a++) {
        assert_true(per_analysis[a] > 0);
    }
    assert_true(pairs > 0);
    assert_true(game_pairs_outside > 0);
    free_tasks(tasks, n);
}

/* Compares the rows of one query in both stores, column by column, floats bit for bit. */
static size_t compare_rows(const char *sql, size_t *n_null_real) {
    sqlite3_stmt *a = NULL, *b = NULL;
    assert_int_equal(sqlite3_prepare_v2(coordinator_store_db(store_a), sql, -1, &a, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(coordinator_store_db(store_b), sql, -1, &b, NULL),
                     SQLITE_OK);
    size_t rows = 0;
    for (;;) {
        int sa = sqlite3_step(a), sb = sqlite3_step(b);
        assert_int_equal(sa, sb);
        if (sa != SQLITE_ROW) {
            assert_int_equal(sa, SQLITE_DONE);
            break;
        }
        rows++;
        int nc = sqlite3_column_count(a);
        assert_int_equal(nc, sqlite3_column_count(b));
        for (int c = 0; c < nc; c++) {
            int ta = sqlite3_column_type(a, c);
            assert_int_equal(ta, sqlite3_column_type(b, c));
            if (ta == SQLITE_INTEGER) {
                assert_int_equal(sqlite3_column_int64(a, c), sqlite3_column_int64(b, c));
            } else if (ta == SQLITE_FLOAT) {
                double x = sqlite3_column_double(a, c), y = sqlite3_column_double(b, c);
                assert_memory_equal(&x, &y, sizeof x);
            } else if (ta == SQLITE_TEXT || ta == SQLITE_BLOB) {
                int n = sqlite3_column_bytes(a, c);
                assert_int_equal(n, sqlite3_column_bytes(b, c));
                assert_memory_equal(sqlite3_column_blob(a, c), sqlite3_column_blob(b, c),
                                    (size_t)n);
            } else if (n_null_real != NULL && strcmp(sqlite3_column_name(a, c), "value") == 0) {
                (*n_null_real)++;
            }
        }
    }
    sqlite3_finalize(a);
    sqlite3_finalize(b);
    return rows;
}

/* The sweep through both stores: A stores the executor's output, B the decoded output. */
static void test_results_round_trip(void **state) {
    (void)state;
    coordinator_lease *la = NULL, *lb = NULL;
    size_t na = 0, nb = 0, unnormalizable = 0, per_kind[4] = {0};
    assert_int_equal(coordinator_tasks_claim(store_a, "w", 10000, 0, 1, &la, &na, err), 0);
    assert_int_equal(coordinator_tasks_claim(store_b, "w", 10000, 0, 1, &lb, &nb, err), 0);
    assert_int_equal(na, nb);
    assert_true(na > N_ANALYSES);
    for (size_t i = 0; i < na; i++) {
        assert_int_equal(la[i].task_id, lb[i].task_id);
        coordinator_work *loaded = NULL, *w = NULL;
        uint8_t *wb = NULL;
        size_t wlen = 0;
        /* the worker runs the work as the TASK body carries it */
        if (coordinator_work_load(store_a, spec, la[i].job_id, la[i].body, la[i].body_len, &loaded,
                                  err) != 0 ||
            coordinator_work_encode(loaded, &wb, &wlen, err) != 0 ||
            coordinator_work_decode(spec, wb, wlen, &w, err) != 0) {
            fail_msg("work %s: %s", la[i].key, err);
        }
        worker_output *o = NULL;
        if (worker_execute(ex, w->params, w, &o, err) != 0) {
            fail_msg("execute %s: %s", la[i].key, err);
        }
        per_kind[w->kind]++;
        unnormalizable += o->n_unnormalizable;
        uint8_t *body = NULL, *again = NULL;
        size_t len = 0, len2 = 0;
        coordinator_results_msg *m = NULL;
        if (coordinator_results_encode(&o->results, &body, &len, err) != 0 ||
            decode_results_tracked(body, len, -1, &m) != 0) {
            fail_msg("results %s: %s", la[i].key, err);
        }
        const coordinator_results *r = coordinator_results_msg_get(m);
        assert_true((r->patch != NULL) == (o->results.patch != NULL));
        assert_true((r->legal != NULL) == (o->results.legal != NULL));
        assert_true((r->neurons != NULL) == (o->results.neurons != NULL));
        assert_true((r->predictions != NULL) == (o->results.predictions != NULL));
        assert_int_equal(coordinator_results_encode(r, &again, &len2, err), 0);
        assert_int_equal(len2, len);
        assert_memory_equal(again, body, len);
        if (per_kind[w->kind] == 1) {
            char name[64];
            snprintf(name, sizeof name, "results-%s", coordinator_analysis_kind_name(w->kind));
            write_seed(name, 1, body, len);
            check_hostile_cuts(body, len, false);
        }
        coordinator_fence f;
        assert_int_equal(
            coordinator_task_complete(store_a, la[i].task_id, la[i].epoch, &o->results, &f, err),
            0);
        assert_int_equal(f, COORDINATOR_STORED);
        assert_int_equal(coordinator_task_complete(store_b, lb[i].task_id, lb[i].epoch, r, &f, err),
                         0);
        assert_int_equal(f, COORDINATOR_STORED);
        free(body);
        free(again);
        free(wb);
        coordinator_results_msg_free(&m);
        assert_null(m);
        worker_output_destroy(&o);
        coordinator_work_destroy(&w);
        coordinator_work_destroy(&loaded);
    }
    coordinator_leases_free(la, na);
    coordinator_leases_free(lb, nb);
    for (int k = 0; k < 4; k++) {
        assert_true(per_kind[k] > 0);
    }
    assert_true(unnormalizable > 0); /* NaN values travelled */
    size_t nulls = 0;
    assert_true(compare_rows("SELECT * FROM patch_pair ORDER BY task_id, seq", NULL) > 0);
    assert_true(compare_rows("SELECT * FROM patch_value ORDER BY pair_id, idx", &nulls) > 0);
    assert_true(nulls > 0);
    assert_true(compare_rows("SELECT * FROM legal_partial "
                             "ORDER BY task_id, component, pos, statistic",
                             NULL) > 0);
    assert_true(compare_rows("SELECT * FROM neuron_partial ORDER BY task_id, layer, neuron, phase",
                             NULL) > 0);
    assert_true(compare_rows("SELECT * FROM prediction ORDER BY task_id, game, pos, rank", NULL) >
                0);
    assert_true(compare_rows("SELECT id, state, n_rows FROM task ORDER BY id", NULL) > 0);
}

/* ---- hand-made results: special floats, NULL columns ---- */

static float f32_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static double f64_bits(uint64_t b) {
    double d;
    memcpy(&d, &b, sizeof d);
    return d;
}

static void test_results_special_values(void **state) {
    (void)state;
    model_config cfg = {0};
    cfg.n_layers = 2;
    cfg.n_heads = 2;
    cfg.d_mlp = 3;
    interp_patch_result *res[2] = {NULL, NULL};
    assert_int_equal(interp_patch_result_new(INTERP_PATCH_BLOCK_EVERY, &cfg, 4, &res[0], err), 0);
    assert_int_equal(interp_patch_result_new(INTERP_PATCH_BLOCK_EVERY, &cfg, 4, &res[1], err), 0);
    res[0]->values[0] = f32_bits(0x7fc01234u); /* a NaN with a payload */
    res[0]->values[1] = -0.0f;
    res[0]->values[2] = INFINITY;
    res[0]->values[3] = f32_bits(1u);                       /* the smallest subnormal */
    res[0]->clean_metric = f64_bits(0xfff8000000000abcULL); /* a negative NaN with a payload */
    res[0]->corrupted_metric = -INFINITY;
    res[1]->clean_metric = 1.5;
    res[1]->corrupted_metric = -0.0;
    res[1]->n_forwards = 7;
    res[1]->n_positions = 123456789;
    uint64_t game[2] = {3, 4};
    uint32_t cutoff[2] = {9, 9};
    int32_t pos[2] = {-1, 8};
    const char *metric[2] = {"logit:e4", "logit_diff:e4,d5"};
    const char *corrupt_token[2] = {NULL, "e4"};
    const interp_patch_result *const results[2] = {res[0], res[1]};
    /* NULL columns: clean_token, corrupt_game, normalized */
    coordinator_patch_batch pb = {2,
                                  INTERP_PATCH_BLOCK_EVERY,
                                  game,
                                  cutoff,
                                  pos,
                                  NULL,
                                  corrupt_token,
                                  NULL,
                                  metric,
                                  NULL,
                                  results};
    interp_legal_stats *ls = NULL;
    const char *labels[2] = {"embed", "L0H1"};
    assert_int_equal(interp_legal_stats_new(&ls, 2, labels, 3, err), 0);
    ls->count[1] = 2;
    ls->sum[1] = f64_bits(0x7ff0000000000001ULL); /* a signalling NaN */
    ls->min[1] = -0.0f;
    interp_neuron_stats *ns = NULL;
    assert_int_equal(interp_neuron_stats_new(&ns, &cfg, 5, -5, err), 0);
    ns->count[INTERP_NEURON_SLICE] = UINT64_MAX;
    ns->sum[5] = -INFINITY;
    uint64_t pg[3] = {0, 0, 1};
    uint32_t pp[3] = {0, 1, 0}, pr[3] = {1, 1, 1};
    const char *pt[3] = {"<pad>", "", "e4"};
    float plp[3] = {-INFINITY, f32_bits(0xffc00001u), -0.0f};
    uint8_t plg[3] = {1, 0, 1};
    coordinator_prediction_batch pred = {3, pg, pp, pr, pt, plp, plg};
    coordinator_results in = {&pb, ls, ns, &pred};
    uint8_t *body = NULL;
    size_t len = 0;
    assert_int_equal(coordinator_results_encode(&in, &body, &len, err), 0);
    coordinator_results_msg *m = NULL;
    assert_int_equal(decode_results_tracked(body, len, -1, &m), 0);
    const coordinator_results *r = coordinator_results_msg_get(m);
    const coordinator_patch_batch *b = r->patch;
    assert_int_equal(b->n, 2);
    assert_int_equal(b->kind, INTERP_PATCH_BLOCK_EVERY);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(b->game[i], game[i]);
        assert_int_equal(b->cutoff[i], cutoff[i]);
        assert_int_equal(b->corrupt_pos[i], pos[i]);
        assert_null(b->clean_token[i]);
        assert_int_equal(b->corrupt_game[i], -1);
        assert_false(b->normalized[i]);
        assert_string_equal(b->metric[i], metric[i]);
        const interp_patch_result *x = results[i], *y = b->result[i];
        assert_true(model_shape_equal(&x->shape, &y->shape));
        assert_memory_equal(x->values, y->values, model_shape_numel(&x->shape) * sizeof(float));
        assert_string_equal(x->axes, y->axes);
        assert_string_equal(x->labels, y->labels);
        assert_memory_equal(&x->clean_metric, &y->clean_metric, sizeof(double));
        assert_memory_equal(&x->corrupted_metric, &y->corrupted_metric, sizeof(double));
        assert_int_equal(x->n_forwards, y->n_forwards);
        assert_int_equal(x->n_positions, y->n_positions);
    }
    assert_null(b->corrupt_token[0]);
    assert_string_equal(b->corrupt_token[1], "e4");
    const interp_legal_stats *l = r->legal;
    assert_int_equal(l->n_comp, 2);
    assert_int_equal(l->T, 3);
    assert_string_equal(l->labels[0], "embed");
    assert_string_equal(l->labels[1], "L0H1");
    assert_memory_equal(l->count, ls->count, 6 * sizeof *l->count);
    assert_memory_equal(l->sum, ls->sum, INTERP_LEGAL_N_STATS * 6 * sizeof *l->sum);
    assert_memory_equal(l->min, ls->min, INTERP_LEGAL_N_STATS * 6 * sizeof *l->min);
    assert_memory_equal(l->max, ls->max, INTERP_LEGAL_N_STATS * 6 * sizeof *l->max);
    assert_true(isinf(l->min[0]) && l->min[0] > 0 && isinf(l->max[0]) && l->max[0] < 0);
    const interp_neuron_stats *n = r->neurons;
    assert_int_equal(n->L, 2);
    assert_int_equal(n->M, 3);
    assert_int_equal(n->slice_begin, 5);
    assert_int_equal(n->slice_end, -5);
    assert_memory_equal(n->count, ns->count, sizeof n->count);
    assert_memory_equal(n->sum, ns->sum, INTERP_NEURON_N_GROUPS * 6 * sizeof *n->sum);
    const coordinator_prediction_batch *q = r->predictions;
    assert_int_equal(q->n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(q->game[i], pg[i]);
        assert_int_equal(q->pos[i], pp[i]);
        assert_int_equal(q->rank[i], pr[i]);
        assert_string_equal(q->token[i], pt[i]);
        assert_memory_equal(&q->logprob[i], &plp[i], sizeof(float));
        assert_int_equal(q->legal[i], plg[i]);
    }
    check_hostile_cuts(body, len, false);
    write_seed("results-special", 1, body, len);
    /* an empty result set is an empty map */
    coordinator_results none = {0};
    uint8_t *empty = NULL;
    size_t elen = 0;
    coordinator_results_msg_free(&m);
    assert_int_equal(coordinator_results_encode(&none, &empty, &elen, err), 0);
    assert_int_equal(elen, 1);
    assert_int_equal(decode_results_tracked(empty, elen, -1, &m), 0);
    r = coordinator_results_msg_get(m);
    assert_true(r->patch == NULL && r->legal == NULL && r->neurons == NULL &&
                r->predictions == NULL);
    coordinator_results_msg_free(&m);
    coordinator_results_msg_free(&m); /* NULL is fine */
    free(empty);
    free(body);
    interp_patch_result_destroy(&res[0]);
    interp_patch_result_destroy(&res[1]);
    interp_legal_stats_destroy(&ls);
    interp_neuron_stats_destroy(&ns);
}

/* ---- hand-written hostile bodies ---- */

typedef enum fault {
    OK,
    DUP_KEY,
    UNKNOWN_KEY,
    MISSING_KEY,
    TRAILING,
    WRONG_TYPE,
    PAIR_GAME,  /* work: a pair's game is not carried */
    LONG_TOKEN, /* work: a token of 4 bytes */
    BAD_POS,    /* work: not the spec's position */
    CLEAN_TOKEN,
    UNUSED_GAME,
    SHORT_GAME,
    ANALYSIS,
    KIND,
    SHAPE,   /* results: 5 values for a [2, 3] shape */
    ODD_BIN, /* results: 7 bytes of float32 */
    COLUMNS, /* results: a column of another length */
    METRIC,  /* results: a 4-byte metric */
    CELLS,   /* results: legal count of another size */
    SUMS,    /* results: neuron sums of another size */
    FLAG,    /* results: a legal flag of 2 */
    PATCH_KIND,
    N_FAULTS
} fault;

/* key, or "nope" for the UNKNOWN_KEY fault. */
static void w_key(proto_writer *pw, const char *key, fault f) {
    proto_w_str(pw, f == UNKNOWN_KEY ? "nope" : key);
}

/* A patch work for analysis 5 (cut-off 9, the last token replaced by e4): game 3's first 9
 * tokens, one pair, with one fault. */
static void hand_work(fault f, uint8_t **out, size_t *len) {
    chess_token *t = NULL;
    size_t n = 0;
    assert_int_equal(chess_uci_split(hand_games[2], &t, &n, err), 0);
    proto_writer pw;
    proto_writer_init(&pw);
    uint32_t keys = 7 - (f == MISSING_KEY);
    proto_w_map(&pw, keys);
    proto_w_str(&pw, "analysis");
    proto_w_uint(&pw, f == ANALYSIS ? 99 : 5);
    proto_w_str(&pw, "kind");
    proto_w_str(&pw, f == KIND ? "legal_stats" : "patch");
    proto_w_str(&pw, "from");
    proto_w_uint(&pw, 3);
    proto_w_str(&pw, f == DUP_KEY ? "from" : "to"); /* a map of as many entries, one twice */
    proto_w_uint(&pw, 5);
    proto_w_str(&pw, "cutoff");
    if (f == WRONG_TYPE) {
        proto_w_str(&pw, "9");
    } else {
        proto_w_uint(&pw, 9);
    }
    proto_w_str(&pw, "games");
    proto_w_array(&pw, f == UNUSED_GAME ? 2 : 1);
    for (uint32_t g = 0; g < (f == UNUSED_GAME ? 2u : 1u); g++) {
        size_t nt = f == SHORT_GAME ? 8 : 9;
        proto_w_map(&pw, 3);
        proto_w_str(&pw, "index");
        proto_w_uint(&pw, 3 + g);
        proto_w_str(&pw, "uci");
        proto_w_str(&pw, hand_games[2]);
        proto_w_str(&pw, "tokens");
        proto_w_array(&pw, (uint32_t)nt);
        for (size_t i = 0; i < nt; i++) {
            proto_w_str(&pw, f == LONG_TOKEN && i == 3 ? "e2e4" : t[i].text);
        }
    }
    if (f != MISSING_KEY) {
        w_key(&pw, "pairs", f);
        proto_w_array(&pw, 1);
        proto_w_map(&pw, 5);
        proto_w_str(&pw, "game");
        proto_w_uint(&pw, f == PAIR_GAME ? 4 : 3);
        proto_w_str(&pw, "corrupt_pos");
        proto_w_int(&pw, f == BAD_POS ? 7 : 8);
        proto_w_str(&pw, "corrupt_game");
        proto_w_int(&pw, -1);
        proto_w_str(&pw, "clean_token");
        proto_w_str(&pw, f == CLEAN_TOKEN ? "d5" : t[8].text);
        proto_w_str(&pw, "corrupt_token");
        proto_w_str(&pw, "e4");
    }
    if (f == TRAILING) {
        proto_w_nil(&pw);
    }
    free(t);
    assert_int_equal(proto_writer_finish(&pw, out, len, err), 0);
}

static void w_floats(proto_writer *pw, size_t n) {
    uint8_t b[64] = {0};
    assert_true(n * 4 <= sizeof b);
    proto_w_bin(pw, b, n * 4);
}

/* Results with one pair (shape [2, 3]), legal statistics of 1 x 2, neurons of 1 x 1 and one
 * prediction, with one fault. */
static void hand_results(fault f, uint8_t **out, size_t *len) {
    uint8_t zero[128] = {0};
    proto_writer pw;
    proto_writer_init(&pw);
    proto_w_map(&pw, 4);
    proto_w_str(&pw, "patch");
    proto_w_map(&pw, 10 - (f == MISSING_KEY));
    proto_w_str(&pw, "kind");
    proto_w_str(&pw, f == PATCH_KIND ? "resid_everything" : "resid_pre");
    const char *uints[2] = {"game", "cutoff"};
    for (int i = 0; i < 2; i++) {
        w_key(&pw, uints[i], f);
        proto_w_array(&pw, f == COLUMNS && i == 1 ? 2 : 1);
        proto_w_uint(&pw, 9);
        if (f == COLUMNS && i == 1) {
            proto_w_uint(&pw, 9);
        }
    }
    proto_w_str(&pw, "corrupt_pos");
    proto_w_array(&pw, 1);
    proto_w_int(&pw, 8);
    proto_w_str(&pw, "clean_token");
    proto_w_array(&pw, 1);
    proto_w_str(&pw, "c6");
    proto_w_str(&pw, "corrupt_token");
    proto_w_array(&pw, 1);
    proto_w_nil(&pw);
    if (f != MISSING_KEY) {
        proto_w_str(&pw, "corrupt_game");
        proto_w_array(&pw, 1);
        proto_w_int(&pw, -1);
    }
    proto_w_str(&pw, "metric");
    proto_w_array(&pw, 1);
    proto_w_str(&pw, "logit:e4");
    proto_w_str(&pw, "normalized");
    proto_w_array(&pw, 1);
    if (f == WRONG_TYPE) {
        proto_w_uint(&pw, 1);
    } else {
        proto_w_bool(&pw, true);
    }
    proto_w_str(&pw, "results");
    proto_w_array(&pw, 1);
    proto_w_map(&pw, 8);
    proto_w_str(&pw, "shape");
    proto_w_array(&pw, 2);
    proto_w_uint(&pw, 2);
    proto_w_uint(&pw, 3);
    proto_w_str(&pw, "axes");
    proto_w_str(&pw, "layer,pos");
    proto_w_str(&pw, "labels");
    proto_w_str(&pw, "");
    proto_w_str(&pw, "clean_metric");
    proto_w_bin(&pw, zero, f == METRIC ? 4 : 8);
    proto_w_str(&pw, "corrupted_metric");
    proto_w_bin(&pw, zero, 8);
    proto_w_str(&pw, "n_forwards");
    proto_w_uint(&pw, 1);
    proto_w_str(&pw, "n_positions");
    proto_w_uint(&pw, 1);
    proto_w_str(&pw, "values");
    if (f == ODD_BIN) {
        proto_w_bin(&pw, zero, 7);
    } else {
        w_floats(&pw, f == SHAPE ? 5 : 6);
    }
    proto_w_str(&pw, "legal");
    proto_w_map(&pw, 6);
    proto_w_str(&pw, "labels");
    proto_w_array(&pw, 1);
    proto_w_str(&pw, "embed");
    proto_w_str(&pw, "T");
    proto_w_uint(&pw, 2);
    proto_w_str(&pw, "count");
    proto_w_bin(&pw, zero, f == CELLS ? 8 : 16);
    proto_w_str(&pw, "sum");
    proto_w_bin(&pw, zero, INTERP_LEGAL_N_STATS * 2 * 8);
    proto_w_str(&pw, "min");
    w_floats(&pw, INTERP_LEGAL_N_STATS * 2);
    proto_w_str(&pw, "max");
    w_floats(&pw, INTERP_LEGAL_N_STATS * 2);
    proto_w_str(&pw, f == DUP_KEY ? "legal" : "neurons");
    proto_w_map(&pw, 5);
    proto_w_str(&pw, "L");
    proto_w_uint(&pw, 1);
    proto_w_str(&pw, "M");
    proto_w_uint(&pw, 1);
    proto_w_str(&pw, "slice");
    proto_w_array(&pw, 2);
    proto_w_int(&pw, 0);
    proto_w_int(&pw, -1);
    proto_w_str(&pw, "count");
    proto_w_array(&pw, INTERP_NEURON_N_GROUPS);
    for (int g = 0; g < INTERP_NEURON_N_GROUPS; g++) {
        proto_w_uint(&pw, (uint64_t)g);
    }
    proto_w_str(&pw, "sum");
    proto_w_bin(&pw, zero, (f == SUMS ? 5 : 6) * 8);
    proto_w_str(&pw, "predictions");
    proto_w_map(&pw, 6);
    const char *cols[3] = {"game", "pos", "rank"};
    for (int i = 0; i < 3; i++) {
        proto_w_str(&pw, cols[i]);
        proto_w_array(&pw, 1);
        proto_w_uint(&pw, 1);
    }
    proto_w_str(&pw, "token");
    proto_w_array(&pw, 1);
    proto_w_str(&pw, "e4");
    proto_w_str(&pw, "logprob");
    w_floats(&pw, 1);
    proto_w_str(&pw, "legal");
    uint8_t flag = f == FLAG ? 2 : 1;
    proto_w_bin(&pw, &flag, 1);
    if (f == TRAILING) {
        proto_w_nil(&pw);
    }
    assert_int_equal(proto_writer_finish(&pw, out, len, err), 0);
}

/* Each fault is refused with the expected code and a message naming the field. */
static void test_hostile_work(void **state) {
    (void)state;
    static const struct {
        fault f;
        int rc;
        const char *needle;
    } cases[] = {
        {DUP_KEY, COMMON_ERR_INVALID, "work.from: given twice"},
        {UNKNOWN_KEY, COMMON_ERR_INVALID, "work.nope: not a key"},
        {MISSING_KEY, COMMON_ERR_INVALID, "work.pairs: missing"},
        {TRAILING, COMMON_ERR_PARSE, "after the map"},
        {WRONG_TYPE, COMMON_ERR_INVALID, "work.cutoff: expected"},
        {PAIR_GAME, COMMON_ERR_INVALID, "work.pairs[0].game: 4 is not among the games"},
        {LONG_TOKEN, COMMON_ERR_INVALID, "work.games[0].tokens[3]"},
        {BAD_POS, COMMON_ERR_INVALID, "work.pairs[0].corrupt_pos"},
        {CLEAN_TOKEN, COMMON_ERR_INVALID, "work.pairs[0].clean_token"},
        {UNUSED_GAME, COMMON_ERR_INVALID, "work.games[1]: no pair reads game 4"},
        {SHORT_GAME, COMMON_ERR_INVALID, "work.games[0]: 8 tokens"},
        {ANALYSIS, COMMON_ERR_INVALID, "work.analysis"},
        {KIND, COMMON_ERR_INVALID, "work.kind"},
    };
    uint8_t *body = NULL;
    size_t len = 0;
    coordinator_work *w = NULL;
    hand_work(OK, &body, &len);
    if (decode_work_tracked(body, len, -1, &w) != 0) {
        fail_msg("the faultless hand work: %s", err);
    }
    assert_true(n_allocs > 0 && live > 0); /* the allocator is wrapped: the counts mean something */
    assert_int_equal(w->n_pairs, 1);
    assert_string_equal(w->pairs[0].corrupted[8], "e4");
    assert_string_equal(w->pairs[0].clean[8], "c6");
    coordinator_work_destroy(&w);
    check_hostile_cuts(body, len, true);
    write_seed("work-hand", 0, body, len);
    free(body);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hand_work(cases[i].f, &body, &len);
        int rc = decode_work_tracked(body, len, -1, &w);
        if (rc != cases[i].rc || strstr(err, cases[i].needle) == NULL) {
            fail_msg("fault %d: %d '%s', expected %d '%s'", (int)cases[i].f, rc, err, cases[i].rc,
                     cases[i].needle);
        }
        free(body);
    }
    /* huge declared counts: refused before anything of their size is allocated */
    proto_writer pw;
    proto_writer_init(&pw);
    proto_w_map(&pw, 5);
    proto_w_str(&pw, "analysis");
    proto_w_uint(&pw, 2);
    proto_w_str(&pw, "kind");
    proto_w_str(&pw, "legal_stats");
    proto_w_str(&pw, "from");
    proto_w_uint(&pw, 0);
    proto_w_str(&pw, "to");
    proto_w_uint(&pw, 3);
    proto_w_str(&pw, "games");
    size_t head = pw.len;
    proto_w_array(&pw, 60000); /* within the cap, not paid for */
    uint8_t pad[4096] = {0};
    proto_w_bin(&pw, pad, sizeof pad);
    assert_int_equal(proto_writer_finish(&pw, &body, &len, err), 0);
    assert_int_equal(decode_work_tracked(body, len, -1, &w), COMMON_ERR_PARSE);
    assert_true(largest < 4096);
    body[head] = 0xdd; /* array32 of 0xffffffff */
    memset(body + head + 1, 0xff, 4);
    assert_true(decode_work_tracked(body, len, -1, &w) < 0);
    assert_true(largest < 4096);
    free(body);
    assert_int_equal(coordinator_work_decode(spec, "", 0, &w, err), COMMON_ERR_PARSE);
    assert_int_equal(coordinator_work_decode(spec, "\xc1", 1, &w, err), COMMON_ERR_PARSE);
    assert_null(w);
}

static void test_hostile_results(void **state) {
    (void)state;
    static const struct {
        fault f;
        int rc;
        const char *needle;
    } cases[] = {
        {DUP_KEY, COMMON_ERR_INVALID, "results.legal: given twice"},
        {UNKNOWN_KEY, COMMON_ERR_INVALID, "results.patch.nope: not a key"},
        {MISSING_KEY, COMMON_ERR_INVALID, "results.patch.corrupt_game: missing"},
        {TRAILING, COMMON_ERR_PARSE, "after the map"},
        {WRONG_TYPE, COMMON_ERR_INVALID, "results.patch.normalized[0]: expected a bool"},
        {SHAPE, COMMON_ERR_INVALID, "results.patch.results[0].values: 5 values, the shape has 6"},
        {ODD_BIN, COMMON_ERR_INVALID, "results.patch.results[0].values: 7 bytes"},
        {COLUMNS, COMMON_ERR_INVALID, "results.patch.cutoff: 2 entries, .game has 1"},
        {METRIC, COMMON_ERR_INVALID, "results.patch.results[0].clean_metric"},
        {CELLS, COMMON_ERR_INVALID, "results.legal"},
        {SUMS, COMMON_ERR_INVALID, "results.neurons.sum"},
        {FLAG, COMMON_ERR_INVALID, "results.predictions.legal[0]: 2"},
        {PATCH_KIND, COMMON_ERR_INVALID, "results.patch.kind"},
    };
    uint8_t *body = NULL;
    size_t len = 0;
    coordinator_results_msg *m = NULL;
    hand_results(OK, &body, &len);
    if (decode_results_tracked(body, len, -1, &m) != 0) {
        fail_msg("the faultless hand results: %s", err);
    }
    const coordinator_results *r = coordinator_results_msg_get(m);
    assert_int_equal(r->patch->n, 1);
    assert_int_equal(r->legal->T, 2);
    assert_int_equal(r->neurons->count[5], 5);
    assert_int_equal(r->predictions->n, 1);
    coordinator_results_msg_free(&m);
    check_hostile_cuts(body, len, false);
    write_seed("results-hand", 1, body, len);
    free(body);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        hand_results(cases[i].f, &body, &len);
        int rc = decode_results_tracked(body, len, -1, &m);
        if (rc != cases[i].rc || strstr(err, cases[i].needle) == NULL) {
            fail_msg("fault %d: %d '%s', expected %d '%s'", (int)cases[i].f, rc, err, cases[i].rc,
                     cases[i].needle);
        }
        free(body);
    }
    /* huge declared dimensions refused before interp allocates them */
    const struct {
        const char *key;
        const char *dim;
        uint64_t v;
    } huge[] = {{"legal", "T", COORDINATOR_WIRE_MAX_ROWS}, {"neurons", "M", 65536}};
    for (size_t h = 0; h < 2; h++) {
        proto_writer pw;
        proto_writer_init(&pw);
        proto_w_map(&pw, 1);
        proto_w_str(&pw, huge[h].key);
        if (h == 0) {
            proto_w_map(&pw, 6);
            proto_w_str(&pw, "labels");
            proto_w_array(&pw, 1);
            proto_w_str(&pw, "embed");
            proto_w_str(&pw, "count");
            proto_w_bin(&pw, NULL, 0);
            proto_w_str(&pw, "sum");
            proto_w_bin(&pw, NULL, 0);
            proto_w_str(&pw, "min");
            proto_w_bin(&pw, NULL, 0);
            proto_w_str(&pw, "max");
            proto_w_bin(&pw, NULL, 0);
        } else {
            proto_w_map(&pw, 5);
            proto_w_str(&pw, "L");
            proto_w_uint(&pw, 256);
            proto_w_str(&pw, "slice");
            proto_w_array(&pw, 2);
            proto_w_int(&pw, 0);
            proto_w_int(&pw, 0);
            proto_w_str(&pw, "count");
            proto_w_array(&pw, INTERP_NEURON_N_GROUPS);
            for (int g = 0; g < INTERP_NEURON_N_GROUPS; g++) {
                proto_w_uint(&pw, 0);
            }
            proto_w_str(&pw, "sum");
            proto_w_bin(&pw, NULL, 0);
        }
        proto_w_str(&pw, huge[h].dim);
        proto_w_uint(&pw, huge[h].v);
        assert_int_equal(proto_writer_finish(&pw, &body, &len, err), 0);
        assert_int_equal(decode_results_tracked(body, len, -1, &m), COMMON_ERR_INVALID);
        assert_true(largest < 4096);
        free(body);
    }
    /* a prediction column declaring 16M rows it does not hold */
    proto_writer pw;
    proto_writer_init(&pw);
    proto_w_map(&pw, 1);
    proto_w_str(&pw, "predictions");
    proto_w_map(&pw, 6);
    proto_w_str(&pw, "token");
    proto_w_array(&pw, COORDINATOR_WIRE_MAX_ROWS);
    uint8_t pad[4096] = {0};
    proto_w_bin(&pw, pad, sizeof pad);
    assert_int_equal(proto_writer_finish(&pw, &body, &len, err), 0);
    assert_int_equal(decode_results_tracked(body, len, -1, &m), COMMON_ERR_PARSE);
    assert_true(largest < 4096);
    free(body);
    assert_int_equal(coordinator_results_decode("\x80\x00", 2, &m, err), COMMON_ERR_PARSE);
    assert_null(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_work_round_trip),        cmocka_unit_test(test_results_round_trip),
        cmocka_unit_test(test_results_special_values), cmocka_unit_test(test_hostile_work),
        cmocka_unit_test(test_hostile_results),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
