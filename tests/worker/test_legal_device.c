/*
 * Legal-move statistics on the device (interp_legal_accum, the executor's path) against the
 * host path the executor took before (worker_legal_components, interp_stack_to_logits,
 * interp_legal_stats_add over host copies of the activations), on the CPU backend, where the
 * two must be equal bit for bit: counts, sums, minima and maxima, not merely close.
 *
 * First the two backend operations on their own: legal_stats on random logits (NaN, signed
 * zeros, ties, positions with only legal or only illegal tokens, an accumulator wider than the
 * game, two games accumulated, split over threads) against interp_legal_stats_add, and
 * centre_scale against apply_ln_to_stack on a real run's residual rows and ln_final scale.
 * Then whole tasks: random legal games of different lengths in right-padded batches on random
 * models (one with d_model 512, where OpenBLAS blocks the products' inner dimension), for
 * every kind of component bits: bit for bit on one thread; on two, to float32 rounding
 * (relative 1e-5), since OpenBLAS' products round by how they are split over its threads and
 * the backend chooses the threads of each product by its size, the host path by the process'
 * setting. The legal_stats operation itself is exact on any number of threads. Then the
 * refusals.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/interp/interp_test_util.h"
#include "worker/worker.h"

static char err[COMMON_ERR_LEN];
static uint64_t rng = 0x2545f4914f6cdd1dULL;

static uint32_t next_u32(void) {
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng >> 32);
}

static float frand(void) { /* uniform in [-1, 1) */
    return (float)((double)(next_u32() >> 8) / (double)(1u << 24)) * 2.0f - 1.0f;
}

/* Fails unless the partials are equal bit for bit (labels, counts, sums, minima, maxima). */
static void expect_same_stats(const char *what, const interp_legal_stats *got,
                              const interp_legal_stats *want) {
    assert_int_equal(got->n_comp, want->n_comp);
    assert_int_equal(got->T, want->T);
    size_t cells = want->n_comp * want->T, k = INTERP_LEGAL_N_STATS * cells, counted = 0;
    for (size_t c = 0; c < want->n_comp; c++) {
        assert_string_equal(got->labels[c], want->labels[c]);
    }
    for (size_t i = 0; i < cells; i++) {
        if (got->count[i] != want->count[i]) {
            fail_msg("%s: cell %zu counted %llu times, %llu on the host", what, i,
                     (unsigned long long)got->count[i], (unsigned long long)want->count[i]);
        }
        counted += want->count[i] > 0;
    }
    for (size_t i = 0; i < k; i++) {
        if (memcmp(&got->sum[i], &want->sum[i], sizeof got->sum[i]) != 0 ||
            memcmp(&got->min[i], &want->min[i], sizeof got->min[i]) != 0 ||
            memcmp(&got->max[i], &want->max[i], sizeof got->max[i]) != 0) {
            fail_msg("%s: statistic %zu of cell %zu: sum %.17g min %.9g max %.9g, on the host "
                     "%.17g %.9g %.9g",
                     what, i / cells, i % cells, got->sum[i], got->min[i], got->max[i],
                     want->sum[i], want->min[i], want->max[i]);
        }
    }
    assert_true(counted > 0); /* something was compared */
}

/* Fails unless the partials agree to float32 rounding of the logits: counts equal, every
 * statistic's sums, minima and maxima within 1e-5 of the statistic's largest magnitude. */
static void expect_close_stats(const char *what, const interp_legal_stats *got,
                               const interp_legal_stats *want) {
    assert_int_equal(got->n_comp, want->n_comp);
    assert_int_equal(got->T, want->T);
    size_t cells = want->n_comp * want->T;
    assert_memory_equal(got->count, want->count, cells * sizeof *got->count);
    for (size_t k = 0; k < INTERP_LEGAL_N_STATS; k++) {
        double big = 1.0, worst = 0.0;
        for (size_t i = k * cells; i < (k + 1) * cells; i++) {
            if (want->count[i % cells] > 0) {
                big = fmax(big, fabs(want->sum[i]) / (double)want->count[i % cells]);
                big = fmax(big, fmax(fabs(want->min[i]), fabs(want->max[i])));
            }
        }
        for (size_t i = k * cells; i < (k + 1) * cells; i++) {
            if (want->count[i % cells] == 0) {
                assert_true(got->sum[i] == 0.0 && got->min[i] == INFINITY &&
                            got->max[i] == -INFINITY);
                continue;
            }
            double n = (double)want->count[i % cells];
            double d = fmax(fabs(got->sum[i] - want->sum[i]) / n,
                            fmax(fabs((double)got->min[i] - want->min[i]),
                                 fabs((double)got->max[i] - want->max[i])));
            worst = d > worst || d != d ? d : worst;
        }
        if (!(worst <= 1e-5 * big)) {
            fail_msg("%s: statistic %zu differs by %.3g of its largest value", what, k,
                     worst / big);
        }
    }
}

/* ---- the operations ---- */

/* legal_stats over n_comp x T x V random logits, two games, into accumulators of acc_T
 * positions at element offset 2, against interp_legal_stats_add. */
static void legal_stats_case(int threads, size_t n_comp, size_t T, size_t acc_T, size_t V) {
    model_backend *be = NULL;
    assert_int_equal(model_backend_cpu_new(&be, threads, err), 0);
    size_t cells = n_comp * acc_T, n_acc = MODEL_LEGAL_ACC_LEN(cells);
    model_buf *acc = NULL, *x = NULL, *lg = NULL;
    assert_int_equal(be->alloc(be, n_acc + 2, &acc, err), 0);
    assert_int_equal(be->alloc(be, n_comp * T * V, &x, err), 0);
    assert_int_equal(be->alloc(be, T * V, &lg, err), 0);
    assert_int_equal(be->fill(be, (model_ref){acc, 0}, n_acc + 2, 0.0f, err), 0);
    assert_int_equal(
        be->fill(be, (model_ref){acc, 2 + MODEL_LEGAL_ACC_MIN(cells)}, 6 * cells, INFINITY, err),
        0);
    assert_int_equal(
        be->fill(be, (model_ref){acc, 2 + MODEL_LEGAL_ACC_MAX(cells)}, 6 * cells, -INFINITY, err),
        0);
    interp_legal_stats *want = NULL;
    assert_int_equal(interp_legal_stats_new(&want, n_comp, NULL, acc_T, err), 0);
    float *logits = malloc(n_comp * T * V * sizeof *logits);
    uint8_t *mask = malloc(T * V);
    int32_t *mask32 = malloc(T * V * sizeof *mask32);
    assert_true(logits != NULL && mask != NULL && mask32 != NULL);
    for (int game = 0; game < 2; game++) {
        for (size_t i = 0; i < n_comp * T * V; i++) {
            uint32_t r = next_u32() % 64;
            /* a few NaNs (component 0 only: a NaN makes its cell's sums NaN), signed zeros
             * and repeated values among ordinary logits */
            logits[i] = r == 0 && i < T * V ? NAN
                        : r == 1            ? -0.0f
                        : r == 2            ? 0.0f
                        : r == 3            ? 0.25f
                                            : 8.0f * frand();
        }
        for (size_t t = 0; t < T; t++) {
            for (size_t v = 0; v < V; v++) {
                /* position 0 has no legal token, position 1 only legal ones, the last one
                 * both kinds */
                uint8_t on = t == 0                ? 0
                             : t == 1              ? 1
                             : t == T - 1 && v < 2 ? v == 0
                                                   : next_u32() % 5 == 0;
                mask[t * V + v] = on;
                mask32[t * V + v] = on ? (int32_t)(next_u32() | 1u) : 0; /* any nonzero */
            }
        }
        interp_stack st = {n_comp, T, V, logits, NULL};
        assert_int_equal(interp_legal_stats_add(want, &st, mask, err), 0);
        assert_int_equal(be->upload(be, (model_ref){x, 0}, logits, n_comp * T * V, err), 0);
        assert_int_equal(be->upload(be, (model_ref){lg, 0}, mask32, T * V, err), 0);
        assert_int_equal(be->legal_stats(be, (model_ref){acc, 2}, acc_T, (model_ref){x, 0},
                                         (model_ref){lg, 0}, n_comp, T, V, err),
                         0);
    }
    float *h = malloc((n_acc + 2) * sizeof *h);
    assert_non_null(h);
    assert_int_equal(be->download(be, h, (model_ref){acc, 0}, n_acc + 2, err), 0);
    assert_true(h[0] == 0.0f && h[1] == 0.0f); /* before the accumulators: untouched */
    interp_legal_stats *got = NULL;
    assert_int_equal(interp_legal_stats_new(&got, n_comp, NULL, acc_T, err), 0);
    const double *count = (const double *)(const void *)(h + 2);
    for (size_t i = 0; i < cells; i++) {
        got->count[i] = (uint64_t)count[i];
    }
    memcpy(got->sum, h + 2 + MODEL_LEGAL_ACC_SUM(cells), 6 * cells * sizeof *got->sum);
    memcpy(got->min, h + 2 + MODEL_LEGAL_ACC_MIN(cells), 6 * cells * sizeof *got->min);
    memcpy(got->max, h + 2 + MODEL_LEGAL_ACC_MAX(cells), 6 * cells * sizeof *got->max);
    char what[96];
    snprintf(what, sizeof what, "legal_stats %zu x %zu x %zu, %d threads", n_comp, T, V, threads);
    expect_same_stats(what, got, want);
    for (size_t c = 0; c < n_comp; c++) {
        assert_int_equal(got->count[c * acc_T + 0], 0); /* no legal token */
        assert_int_equal(got->count[c * acc_T + 1], 0); /* no illegal token */
        assert_int_equal(got->count[c * acc_T + T - 1], 2);
    }
    interp_legal_stats_destroy(&want);
    interp_legal_stats_destroy(&got);
    free(h);
    free(logits);
    free(mask);
    free(mask32);
    be->free(be, acc);
    be->free(be, x);
    be->free(be, lg);
    model_backend_destroy(&be);
}

static void test_legal_stats_op(void **state) {
    (void)state;
    legal_stats_case(1, 5, 9, 13, 37);
    legal_stats_case(2, 300, 4, 4, 77); /* enough components to split over the threads */
    legal_stats_case(2, 1, 3, 3, 2);
}

/* centre_scale on a run's residual rows [n, T, D] with ln_final's scale [T], against
 * apply_ln_to_stack at the final layer. */
static void test_centre_scale_op(void **state) {
    (void)state;
    fixture f;
    if (fixture_random(&f, "centre", 2, 48, 4, 40, 77, 5, err) != 0) {
        fail_msg("%s", err);
    }
    model_backend *be2 = NULL;
    assert_int_equal(model_backend_cpu_new(&be2, 2, err), 0);
    char *uci = random_game_uci(3, 36);
    int32_t *ids = NULL;
    size_t T = 0;
    interp_acts **acts = NULL;
    interp_stack *raw = NULL, *want = NULL;
    assert_non_null(uci);
    assert_int_equal(interp_tokens_from_uci(f.m, uci, &ids, &T, err), 0);
    assert_int_equal(interp_run_acts(f.s, ids, NULL, 1, T, false, &acts, err), 0);
    assert_int_equal(
        interp_decompose_resid(f.m, acts[0], -1, false, INTERP_DECOMP_ALL, true, false, &raw, err),
        0);
    assert_int_equal(
        interp_decompose_resid(f.m, acts[0], -1, false, INTERP_DECOMP_ALL, true, true, &want, err),
        0);
    const float *scale =
        interp_acts_get(acts[0], (model_hook){MODEL_HOOK_LN_FINAL_SCALE, -1}, NULL);
    assert_non_null(scale);
    size_t D = raw->width, rows = raw->n * T;
    float *got = malloc(rows * D * sizeof *got);
    assert_non_null(got);
    model_backend *bes[2] = {f.be, be2};
    for (int k = 0; k < 2; k++) {
        model_backend *be = bes[k];
        model_buf *x = NULL, *sc = NULL;
        assert_int_equal(be->alloc(be, 3 + rows * D, &x, err), 0);
        assert_int_equal(be->alloc(be, 1 + T, &sc, err), 0);
        assert_int_equal(be->upload(be, (model_ref){x, 3}, raw->data, rows * D, err), 0);
        assert_int_equal(be->upload(be, (model_ref){sc, 1}, scale, T, err), 0);
        assert_int_equal(
            be->centre_scale(be, (model_ref){x, 3}, (model_ref){sc, 1}, rows, D, T, err), 0);
        assert_int_equal(be->download(be, got, (model_ref){x, 3}, rows * D, err), 0);
        assert_memory_equal(got, want->data, rows * D * sizeof *got);
        be->free(be, x);
        be->free(be, sc);
    }
    free(got);
    interp_stack_destroy(&raw);
    interp_stack_destroy(&want);
    interp_acts_destroy(&acts[0]);
    free(acts);
    free(ids);
    free(uci);
    model_backend_destroy(&be2);
    fixture_free(&f);
}

/* ---- whole tasks ---- */

#define N_GAMES 7
#define BATCH 3

typedef struct games {
    char *uci[N_GAMES];
    int32_t *ids[N_GAMES];
    size_t T[N_GAMES];
    uint8_t *mask[N_GAMES];
    size_t T_max;
} games;

static void games_new(games *g, const model *m, uint64_t seed) {
    memset(g, 0, sizeof *g);
    for (size_t i = 0; i < N_GAMES; i++) {
        size_t Tm = 0;
        g->uci[i] = random_game_uci(seed + 17 * i, 12 + 5 * i); /* 12..42 tokens */
        assert_non_null(g->uci[i]);
        assert_int_equal(interp_tokens_from_uci(m, g->uci[i], &g->ids[i], &g->T[i], err), 0);
        assert_int_equal(interp_legal_mask(m, g->uci[i], &g->mask[i], &Tm, err), 0);
        assert_int_equal(Tm, g->T[i]);
        g->T_max = g->T[i] > g->T_max ? g->T[i] : g->T_max;
    }
}

static void games_free(games *g) {
    for (size_t i = 0; i < N_GAMES; i++) {
        free(g->uci[i]);
        free(g->ids[i]);
        free(g->mask[i]);
    }
}

/* The executor's former path: batched runs trimmed to host activations, then per game the
 * component stack, its logits and interp_legal_stats_add, into partials of T positions. */
static interp_legal_stats *host_stats(model_session *s, const games *g, unsigned bits, size_t T) {
    const model *m = model_session_model(s);
    const model_config *cfg = model_get_config(m);
    size_t n_hooks = worker_legal_hooks(cfg, bits, NULL, 0);
    model_hook *hooks = malloc(n_hooks * sizeof *hooks);
    assert_non_null(hooks);
    worker_legal_hooks(cfg, bits, hooks, n_hooks);
    interp_legal_stats *ls = NULL;
    for (size_t g0 = 0; g0 < N_GAMES; g0 += BATCH) {
        size_t nb = N_GAMES - g0 < BATCH ? N_GAMES - g0 : BATCH;
        interp_acts *acts[BATCH] = {NULL};
        if (worker_run_games(s, (const int32_t *const *)g->ids + g0, g->T + g0, nb, hooks, n_hooks,
                             false, acts, err) != 0) {
            fail_msg("%s", err);
        }
        for (size_t b = 0; b < nb; b++) {
            interp_stack *st = NULL, *lg = NULL;
            assert_int_equal(worker_legal_components(m, acts[b], bits, &st, err), 0);
            assert_int_equal(interp_stack_to_logits(m, st, &lg, err), 0);
            if (ls == NULL) {
                assert_int_equal(
                    interp_legal_stats_new(&ls, lg->n, (const char *const *)lg->labels, T, err), 0);
            }
            assert_int_equal(interp_legal_stats_add(ls, lg, g->mask[g0 + b], err), 0);
            interp_stack_destroy(&st);
            interp_stack_destroy(&lg);
            interp_acts_destroy(&acts[b]);
        }
    }
    free(hooks);
    return ls;
}

/* The executor's path now: right-padded batches whose activations stay in the cache. */
static interp_legal_stats *device_stats(model_session *s, const games *g, unsigned bits, size_t T) {
    const model *m = model_session_model(s);
    const model_config *cfg = model_get_config(m);
    interp_legal_parts parts = worker_legal_parts(bits);
    size_t n_hooks = interp_legal_parts_hooks(cfg, parts, NULL, 0);
    model_hook *hooks = malloc(n_hooks * sizeof *hooks);
    int32_t *tokens = malloc(BATCH * g->T_max * sizeof *tokens);
    assert_true(hooks != NULL && tokens != NULL);
    interp_legal_parts_hooks(cfg, parts, hooks, n_hooks);
    interp_legal_accum *acc = NULL;
    assert_int_equal(interp_legal_accum_new(&acc, s, parts, T, err), 0);
    int32_t pad = model_tokenizer_pad(model_get_tokenizer(m));
    for (size_t g0 = 0; g0 < N_GAMES; g0 += BATCH) {
        size_t nb = N_GAMES - g0 < BATCH ? N_GAMES - g0 : BATCH, Tb = 0;
        for (size_t b = 0; b < nb; b++) {
            Tb = g->T[g0 + b] > Tb ? g->T[g0 + b] : Tb;
        }
        for (size_t b = 0; b < nb; b++) {
            for (size_t t = 0; t < Tb; t++) {
                tokens[b * Tb + t] = t < g->T[g0 + b] ? g->ids[g0 + b][t] : pad;
            }
        }
        model_request rq;
        model_request_init(&rq, s, tokens, nb, Tb);
        rq.lengths = g->T + g0;
        rq.hooks = hooks;
        rq.n_hooks = n_hooks;
        rq.want_logits = false;
        model_cache *c = NULL;
        assert_int_equal(model_run(s, &rq, &c, err), 0);
        if (interp_legal_accum_add(acc, c, g->T + g0, (const uint8_t *const *)g->mask + g0, nb,
                                   err) != 0) {
            fail_msg("%s", err);
        }
        model_cache_destroy(&c);
    }
    interp_legal_stats *ls = NULL;
    assert_int_equal(interp_legal_accum_download(acc, &ls, err), 0);
    assert_int_equal(interp_legal_accum_components(acc), ls->n_comp);
    interp_legal_accum_destroy(&acc);
    assert_null(acc);
    free(hooks);
    free(tokens);
    return ls;
}

static void compare_model(const char *name, int L, int D, int H, const unsigned *bits,
                          size_t n_bits) {
    fixture f;
    if (fixture_random(&f, name, L, D, H, 48, 77, 9, err) != 0) {
        fail_msg("%s", err);
    }
    games g;
    games_new(&g, f.m, 100);
    for (int threads = 1; threads <= 2; threads++) {
        model_backend *be = NULL;
        model_session *s = NULL;
        assert_int_equal(model_backend_cpu_new(&be, threads, err), 0);
        assert_int_equal(model_session_new(&s, f.m, be, err), 0);
        for (size_t i = 0; i < n_bits; i++) {
            size_t T = g.T_max + 3 * (i % 2); /* accumulators as long as the games, or longer */
            interp_legal_stats *want = host_stats(s, &g, bits[i], T);
            interp_legal_stats *got = device_stats(s, &g, bits[i], T);
            char what[128];
            snprintf(what, sizeof what, "%s, components 0x%x, %d threads", name, bits[i], threads);
            if (threads == 1) {
                expect_same_stats(what, got, want);
            } else {
                /* OpenBLAS rounds a product by how it splits it over its threads, and the
                 * backend picks the threads of each product by its size, where the host path
                 * takes the process-wide count (model.h, interp.h) */
                expect_close_stats(what, got, want);
            }
            interp_legal_stats_destroy(&want);
            interp_legal_stats_destroy(&got);
        }
        model_session_destroy(&s);
        model_backend_destroy(&be);
    }
    games_free(&g);
    fixture_free(&f);
}

enum {
    E = COORDINATOR_COMP_EMBEDS,
    A = COORDINATOR_COMP_ATTNS,
    M = COORDINATOR_COMP_MLPS,
    HD = COORDINATOR_COMP_HEADS
};

static void test_device_equals_host(void **state) {
    (void)state;
    static const unsigned bits[] = {E, A, M, HD, E | HD, A | M, E | M, M | HD, E | A | M | HD};
    compare_model("small", 3, 48, 4, bits, sizeof bits / sizeof bits[0]);
}

static void test_device_equals_host_wide(void **state) {
    (void)state;
    static const unsigned bits[] = {E | A | M | HD};
    compare_model("wide", 1, 512, 8, bits, 1);
}

/* ---- refusals ---- */

static void test_refusals(void **state) {
    (void)state;
    fixture f;
    if (fixture_random(&f, "refuse", 2, 32, 4, 24, 77, 2, err) != 0) {
        fail_msg("%s", err);
    }
    model_backend *be = f.be;
    interp_legal_accum *acc = NULL;
    interp_legal_parts none = {false, false, false, false}, all = {true, true, true, true};
    assert_int_equal(interp_legal_accum_new(&acc, f.s, none, 10, err), COMMON_ERR_INVALID);
    assert_int_equal(interp_legal_accum_new(&acc, f.s, all, 0, err), COMMON_ERR_INVALID);
    assert_int_equal(interp_legal_accum_new(&acc, f.s, all, 25, err), COMMON_ERR_INVALID);
    assert_null(acc);
    assert_int_equal(interp_legal_accum_new(&acc, f.s, all, 6, err), 0);
    /* a cache without the heads' z, and games longer than the accumulators */
    int32_t tokens[8] = {76, 10, 20, 30, 40, 50, 60, 70};
    size_t len[1] = {8}, short_len[1] = {5};
    uint8_t mask[8 * 77] = {0};
    const uint8_t *masks[1] = {mask};
    model_hook few[2] = {{MODEL_HOOK_EMBED, -1}, {MODEL_HOOK_LN_FINAL_SCALE, -1}};
    model_request rq;
    model_request_init(&rq, f.s, tokens, 1, 8);
    rq.hooks = few;
    rq.n_hooks = 2;
    model_cache *c = NULL;
    assert_int_equal(model_run(f.s, &rq, &c, err), 0);
    assert_int_equal(interp_legal_accum_add(acc, c, short_len, masks, 1, err),
                     COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "hook_pos_embed"));
    assert_int_equal(interp_legal_accum_add(acc, c, len, masks, 1, err), COMMON_ERR_INVALID);
    assert_int_equal(interp_legal_accum_add(acc, c, short_len, masks, 2, err), COMMON_ERR_INVALID);
    model_cache_destroy(&c);
    interp_legal_accum_destroy(&acc);
    interp_legal_accum_destroy(&acc); /* NULL is fine */
    /* the operations' own refusals */
    model_buf *b = NULL;
    assert_int_equal(be->alloc(be, MODEL_LEGAL_ACC_LEN(4) + 2, &b, err), 0);
    model_ref r = {b, 0};
    assert_int_equal(be->legal_stats(be, (model_ref){b, 1}, 2, r, r, 2, 2, 1, err),
                     COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "legal_stats"));
    assert_int_equal(be->legal_stats(be, r, 1, r, r, 2, 2, 1, err), COMMON_ERR_INVALID); /* T */
    assert_int_equal(be->legal_stats(be, r, 3, r, r, 2, 3, 1, err), COMMON_ERR_INVALID); /* acc */
    assert_int_equal(be->legal_stats(be, r, 2, (model_ref){b, 104}, r, 2, 2, 1, err),
                     COMMON_ERR_INVALID);                               /* x */
    assert_int_equal(be->legal_stats(be, r, 2, r, r, 0, 2, 1, err), 0); /* nothing to do */
    assert_int_equal(be->centre_scale(be, r, r, 4, 3, 0, err), COMMON_ERR_INVALID);
    assert_int_equal(be->centre_scale(be, r, r, 100, 3, 1, err), COMMON_ERR_INVALID);
    assert_int_equal(be->centre_scale(be, r, (model_ref){b, 103}, 4, 3, 4, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(be->centre_scale(be, r, r, 0, 3, 0, err), 0); /* nothing to do */
    be->free(be, b);
    /* the session's weights by name */
    assert_non_null(model_session_param(f.s, "unembed.W_U").buf);
    assert_non_null(model_session_param(f.s, "blocks.1.attn.W_O").buf);
    assert_null(model_session_param(f.s, "blocks.2.attn.W_O").buf);
    assert_null(model_session_param(f.s, "blocks.0.attn.W_Q").buf);
    assert_null(model_session_param(f.s, "ln_final.w").buf); /* folded */
    assert_null(model_session_param(f.s, "blocks.x.attn.W_O").buf);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_legal_stats_op),     cmocka_unit_test(test_centre_scale_op),
        cmocka_unit_test(test_device_equals_host), cmocka_unit_test(test_device_equals_host_wide),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
