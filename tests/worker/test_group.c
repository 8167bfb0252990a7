/*
 * test_group: an executor on several devices. Three CPU backends ("cpu:0,1,2") stand in for
 * GPUs, with the host collective, and every task of a sweep (each analysis kind) must give what
 * the one-device executor gives: patch values, prediction rows, counts, minima and maxima
 * exactly equal; neuron and legal-statistics sums to double rounding (relative 1e-12). Then a
 * device that fails (a backend wrapper that returns BACKEND from every product once armed, as
 * the CUDA backend does after an illegal address): the task fails with that error's text, the
 * executor makes that device's backend again, and the next task's numbers are right.
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

#include "worker/worker.h"

static char err[COMMON_ERR_LEN];

#define MODEL_DIR CHESSLENS_SOURCE_DIR "/models/chess-tiny"
#define N_GAMES 7

static const char *const sweep_json =
    "{\"name\":\"g\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,7],\"analyses\":["
    "{\"kind\":\"patch\",\"patch\":\"block_every\",\"cutoffs\":[9],"
    "\"corrupt\":{\"position\":\"last\",\"with\":\"each_legal_alternative\"},"
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\",\"corrupt_top\"],"
    "\"normalize\":true}},"
    "{\"kind\":\"legal_stats\",\"components\":[\"embeds\",\"heads\",\"mlps\"]},"
    "{\"kind\":\"neuron_stats\",\"by\":\"phase\",\"slice\":[5,-5]},"
    "{\"kind\":\"predictions\",\"top_k\":3}"
    "]}";

static coordinator_store *store;
static coordinator_spec *spec;
static coordinator_lease *leases;
static size_t n_leases;

static const char *tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

static int setup(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/group.db", tmpdir());
    remove(path);
    int64_t ds = 0, sweep = 0;
    coordinator_import_stats st = {0};
    coordinator_plan_opts opts = {64, 7}; /* one aggregate task of all 7 games */
    if (coordinator_store_open(&store, path, 0, err) != 0 ||
        coordinator_dataset_create(store, "d", "test", false, &ds, err) != 0 ||
        coordinator_games_generate(store, ds, N_GAMES, 9, 40, &st, NULL, err) != 0 ||
        coordinator_sweep_submit(store, sweep_json, strlen(sweep_json), NULL, 0, &sweep, NULL,
                                 err) != 0 ||
        coordinator_spec_parse(&spec, sweep_json, strlen(sweep_json), err) != 0 ||
        coordinator_plan_sweep(store, sweep, spec, &opts, NULL, err) != 0 ||
        coordinator_tasks_claim(store, "w", 10000, 0, 1, &leases, &n_leases, err) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    coordinator_leases_free(leases, n_leases);
    coordinator_spec_destroy(&spec);
    coordinator_store_close(&store);
    return 0;
}

static bool close_rel(double a, double b, double tol) {
    return fabs(a - b) <= tol * fmax(1.0, fmax(fabs(a), fabs(b)));
}

static void expect_same(const worker_output *x, const worker_output *y) {
    assert_int_equal(x->kind, y->kind);
    assert_int_equal(x->n_rows, y->n_rows);
    assert_int_equal(x->n_unnormalizable, y->n_unnormalizable);
    const coordinator_results *a = &x->results, *b = &y->results;
    if (x->kind == COORDINATOR_ANALYSIS_PATCH) {
        assert_int_equal(a->patch->n, b->patch->n);
        for (size_t i = 0; i < a->patch->n; i++) {
            assert_int_equal(a->patch->game[i], b->patch->game[i]);
            assert_int_equal(a->patch->corrupt_pos[i], b->patch->corrupt_pos[i]);
            assert_string_equal(a->patch->metric[i], b->patch->metric[i]);
            const interp_patch_result *p = a->patch->result[i], *q = b->patch->result[i];
            size_t n = model_shape_numel(&p->shape);
            assert_int_equal(n, model_shape_numel(&q->shape));
            /* a pair's runs are the same on every device: the values, NaN included, too */
            assert_memory_equal(p->values, q->values, n * sizeof *p->values);
        }
    } else if (x->kind == COORDINATOR_ANALYSIS_PREDICTIONS) {
        const coordinator_prediction_batch *p = a->predictions, *q = b->predictions;
        assert_int_equal(p->n, q->n);
        for (size_t i = 0; i < p->n; i++) {
            assert_true(p->game[i] == q->game[i] && p->pos[i] == q->pos[i] &&
                        p->rank[i] == q->rank[i] && p->legal[i] == q->legal[i]);
            assert_string_equal(p->token[i], q->token[i]);
            assert_memory_equal(&p->logprob[i], &q->logprob[i], sizeof p->logprob[i]);
        }
    } else if (x->kind == COORDINATOR_ANALYSIS_LEGAL_STATS) {
        const interp_legal_stats *p = a->legal, *q = b->legal;
        assert_true(p->n_comp == q->n_comp && p->T == q->T);
        size_t cells = p->n_comp * p->T;
        assert_memory_equal(p->count, q->count, cells * sizeof *p->count);
        assert_memory_equal(p->min, q->min, INTERP_LEGAL_N_STATS * cells * sizeof *p->min);
        assert_memory_equal(p->max, q->max, INTERP_LEGAL_N_STATS * cells * sizeof *p->max);
        for (size_t i = 0; i < INTERP_LEGAL_N_STATS * cells; i++) {
            assert_true(close_rel(p->sum[i], q->sum[i], 1e-12));
        }
    } else {
        const interp_neuron_stats *p = a->neurons, *q = b->neurons;
        assert_memory_equal(p->count, q->count, sizeof p->count);
        size_t n = INTERP_NEURON_N_GROUPS * p->L * p->M, nonzero = 0;
        for (size_t i = 0; i < n; i++) {
            if (!close_rel(p->sum[i], q->sum[i], 1e-12)) {
                fail_msg("neuron sum %zu: %.17g on one device, %.17g split", i, q->sum[i],
                         p->sum[i]);
            }
            nonzero += p->sum[i] != 0.0;
        }
        assert_true(nonzero > n / 2);
    }
}

/* Runs every claimed task on both executors and compares. */
static void run_all(worker_executor *one, worker_executor *split, size_t *kinds) {
    for (size_t i = 0; i < n_leases; i++) {
        coordinator_work *w = NULL;
        worker_output *x = NULL, *y = NULL;
        assert_int_equal(coordinator_work_load(store, spec, leases[i].job_id, leases[i].body,
                                               leases[i].body_len, &w, err),
                         0);
        if (worker_execute(one, w->params, w, &x, err) != 0 ||
            worker_execute(split, w->params, w, &y, err) != 0) {
            fail_msg("execute: %s", err);
        }
        expect_same(y, x);
        kinds[w->kind]++;
        worker_output_destroy(&x);
        worker_output_destroy(&y);
        coordinator_work_destroy(&w);
    }
}

static void test_split_equals_one_device(void **state) {
    (void)state;
    worker_executor *one = NULL, *split = NULL;
    assert_int_equal(worker_executor_new(&one, MODEL_DIR, "cpu", 1, err), 0);
    assert_int_equal(worker_executor_new(&split, MODEL_DIR, "cpu:0,1,2", 1, err), 0);
    assert_int_equal(worker_executor_ranks(split), 3);
    assert_string_equal(worker_executor_collective(split), "host");
    assert_null(worker_executor_collective(one));
    /* batches of 2 games: 4 batches over 3 devices, one device gets two */
    worker_executor_set_games_per_run(one, 2);
    worker_executor_set_games_per_run(split, 2);
    size_t kinds[4] = {0};
    run_all(one, split, kinds);
    for (int k = 0; k < 4; k++) {
        assert_true(kinds[k] > 0);
    }
    /* more devices than batches: the first gets the one batch, the others nothing */
    worker_executor_set_games_per_run(one, 8);
    worker_executor_set_games_per_run(split, 8);
    run_all(one, split, kinds);
    worker_executor_destroy(&one);
    worker_executor_destroy(&split);
}

static void test_spec_refusals(void **state) {
    (void)state;
    worker_executor *e = NULL;
    assert_int_equal(worker_executor_new(&e, MODEL_DIR, "cpu:0,0", 1, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "twice"));
    assert_int_equal(worker_executor_new(&e, MODEL_DIR, "cpu:0,", 1, err), COMMON_ERR_INVALID);
    assert_int_equal(worker_executor_new(&e, MODEL_DIR, "gpu:0", 1, err), COMMON_ERR_UNSUPPORTED);
    assert_null(e);
    char kind[8];
    int ids[4];
    size_t n = 0;
    assert_int_equal(worker_backend_spec_parse("cuda:3,1,2", kind, ids, 4, &n, err), 0);
    assert_string_equal(kind, "cuda");
    assert_true(n == 3 && ids[0] == 3 && ids[1] == 1 && ids[2] == 2);
    assert_int_equal(worker_backend_spec_parse("cuda", kind, ids, 4, &n, err), 0);
    assert_true(n == 1 && ids[0] == 0);
    assert_int_equal(worker_backend_spec_parse("cuda:0,1,2,3,4", kind, ids, 4, &n, err),
                     COMMON_ERR_INVALID);
}

/* ---- a device that fails ---- */

typedef struct faulty_backend {
    model_backend be; /* first: the CPU functions get this, with the CPU impl */
    model_backend *inner;
    bool failed;
} faulty_backend;

static int armed_rank = -1; /* the rank whose next backend product fails */
static size_t made[4];      /* backends made per rank */
static faulty_backend *live[4];

static int faulty_gemm(model_backend *be, const model_gemm *g, char *e) {
    faulty_backend *f = (faulty_backend *)be;
    for (size_t r = 0; r < 4; r++) {
        if (live[r] == f && (int)r == armed_rank) {
            f->failed = true; /* sticky, as the CUDA backend's errors are */
            armed_rank = -1;
        }
    }
    if (f->failed) {
        return common_fail(e, COMMON_ERR_BACKEND, "cpu-faulty: injected illegal address");
    }
    return f->inner->gemm(be, g, e);
}

static void faulty_destroy(model_backend *be) {
    faulty_backend *f = (faulty_backend *)be;
    for (size_t r = 0; r < 4; r++) {
        live[r] = live[r] == f ? NULL : live[r];
    }
    model_backend_destroy(&f->inner);
    free(f);
}

static int make_faulty(void *ctx, size_t rank, const char *name, int threads, model_backend **out,
                       char *e) {
    (void)ctx;
    assert_string_equal(name, "cpu");
    faulty_backend *f = calloc(1, sizeof *f);
    assert_non_null(f);
    int rc = model_backend_cpu_new(&f->inner, threads, e);
    assert_int_equal(rc, 0);
    f->be = *f->inner;
    f->be.gemm = faulty_gemm;
    f->be.destroy = faulty_destroy;
    live[rank] = f;
    made[rank]++;
    *out = &f->be;
    return 0;
}

static void test_device_failure_recreates_it(void **state) {
    (void)state;
    worker_executor *ref = NULL, *e = NULL;
    worker_executor_opts o = {.threads = 1, .make_backend = make_faulty};
    assert_int_equal(worker_executor_new(&ref, MODEL_DIR, "cpu", 1, err), 0);
    for (int ranks = 1; ranks <= 2; ranks++) {
        memset(made, 0, sizeof made);
        assert_int_equal(
            worker_executor_new_opts(&e, MODEL_DIR, ranks == 1 ? "cpu" : "cpu:0,1", &o, err), 0);
        worker_executor_set_games_per_run(e, 2);
        worker_executor_set_games_per_run(ref, 2);
        size_t r = (size_t)ranks - 1; /* the last rank fails */
        for (size_t i = 0; i < n_leases; i++) {
            coordinator_work *w = NULL;
            worker_output *x = NULL, *y = NULL;
            assert_int_equal(coordinator_work_load(store, spec, leases[i].job_id, leases[i].body,
                                                   leases[i].body_len, &w, err),
                             0);
            if (w->kind != COORDINATOR_ANALYSIS_NEURON_STATS) {
                coordinator_work_destroy(&w);
                continue;
            }
            armed_rank = (int)r;
            assert_int_equal(worker_execute(e, w->params, w, &y, err), COMMON_ERR_BACKEND);
            assert_null(y);
            assert_non_null(strstr(err, "injected illegal address"));
            assert_int_equal(made[r], 2); /* made again at once */
            assert_false(worker_executor_broken(e));
            assert_int_equal(worker_execute(e, w->params, w, &y, err), 0);
            assert_int_equal(worker_execute(ref, w->params, w, &x, err), 0);
            expect_same(y, x);
            worker_output_destroy(&x);
            worker_output_destroy(&y);
            coordinator_work_destroy(&w);
        }
        assert_int_equal(made[r], 2);
        worker_executor_destroy(&e);
    }
    worker_executor_destroy(&ref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split_equals_one_device),
        cmocka_unit_test(test_spec_refusals),
        cmocka_unit_test(test_device_failure_recreates_it),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
