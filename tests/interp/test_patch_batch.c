/*
 * Activation patching of a batch of pairs and the identical-prefix shortcut: a batch gives each
 * pair the numbers one-pair patching gives it (every kind, pairs with their own metrics and
 * corruption positions, packed across pairs); the shortcut (entries before the first differing
 * position given the corrupted metric without a run) gives the plain algorithm's numbers for
 * pairs corrupted early, in the middle and last, and really skips work (exact counts for
 * block_every with the last token corrupted). On the random-tiny fixture and a random model,
 * within the 1e-4 the fast == plain tests use.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <unistd.h>

#include "interp_test_util.h"

#define TINY_DIR CHESSLENS_SOURCE_DIR "/tests/fixtures/random-tiny"
#define TOL 1e-4     /* on normalised values */
#define RAW_TOL 1e-5 /* on the metric itself (logits, log-probabilities, probabilities) */

/* fixture_random into an empty directory: the model writer refuses a non-empty one, and the
 * scratch directory may hold an earlier run's model. */
static int fresh_random(fixture *f, const char *name, int L, int D, int H, int ctx, int V,
                        uint64_t seed, char *err) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), name);
    DIR *dp = opendir(dir);
    if (dp != NULL) {
        struct dirent *e;
        while ((e = readdir(dp)) != NULL) {
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
                char path[1024];
                snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
                remove(path);
            }
        }
        closedir(dp);
        rmdir(dir);
    }
    return fixture_random(f, name, L, D, H, ctx, V, seed, err);
}

/* The two models every test runs on: 0 = random-tiny (3 layers, 3 heads, n_ctx 48), 1 = a
 * random model (2 layers, 4 heads, n_ctx 32). */
static void load_model(fixture *f, int which) {
    char err[COMMON_ERR_LEN] = "";
    int rc = which == 0 ? fixture_load(f, TINY_DIR, err)
                        : fresh_random(f, "batch-model", 2, 32, 4, 32, 77, 23, err);
    if (rc != 0) {
        fail_msg("fixture %d: %s", which, err);
    }
}

/* n games of exactly T tokens (prefixes of random games, cut inside a move when need be, so
 * that T may be n_ctx) into clean [n, T], and each game's legal-move mask at position T-1 into
 * legal [n, V]. */
static void make_games(fixture *f, uint64_t seed, size_t n, size_t T, int32_t *clean,
                       uint8_t *legal) {
    char err[COMMON_ERR_LEN] = "";
    const model_tokenizer *tok = model_get_tokenizer(f->m);
    size_t V = (size_t)model_get_config(f->m)->d_vocab;
    size_t made = 0;
    for (uint64_t k = 0; made < n && k < 1000; k++) {
        char *uci = random_game_uci(seed * 1000 + k, T + 2);
        assert_non_null(uci);
        chess_token *toks = NULL;
        size_t Tg = 0;
        assert_int_equal(chess_uci_split(uci, &toks, &Tg, err), 0);
        if (Tg >= T) {
            uint8_t *mask = NULL;
            size_t Tm = 0;
            assert_int_equal(interp_legal_mask(f->m, uci, &mask, &Tm, err), 0);
            assert_int_equal(Tm, Tg);
            for (size_t t = 0; t < T; t++) {
                clean[made * T + t] = model_tokenizer_id(tok, toks[t].text);
                assert_true(clean[made * T + t] >= 0);
            }
            memcpy(legal + made * V, mask + (T - 1) * V, V);
            free(mask);
            made++;
        }
        free(toks);
        free(uci);
    }
    assert_int_equal(made, n);
}

/* out [T] = clean with a square other than the current one at pos. */
static void corrupt_at(fixture *f, const int32_t *clean, size_t T, size_t pos, int32_t *out) {
    char err[COMMON_ERR_LEN] = "";
    const char *now = model_tokenizer_token(model_get_tokenizer(f->m), clean[pos]);
    const char *sq = strcmp(now, "d5") == 0 ? "h3" : "d5";
    if (interp_corrupt_token(f->m, clean, T, pos, sq, out, err) != 0) {
        fail_msg("corrupt %zu: %s", pos, err);
    }
}

/* Pair i's metric: four kinds in turn, normalised except the logit difference. */
static void pair_metric(fixture *f, size_t i, const uint8_t *legal, interp_metric *m) {
    char err[COMMON_ERR_LEN] = "";
    static const char *const specs[] = {"logit:e4", "logprob:e5", "logit_diff:c6,f6", "legal_mass"};
    assert_int_equal(interp_metric_parse(f->m, specs[i % 4], m, err), 0);
    m->normalize = i % 4 != 2;
    if (m->kind == INTERP_METRIC_LEGAL_MASS) {
        m->legal = legal;
    }
}

/* Values agree within TOL on the normalised metric, or within RAW_TOL on the metric itself when
 * that is larger: normalising by a corruption that moves the metric little (1e-4 here for a
 * corruption at position 1 of a random model) magnifies float rounding, which is about 1e-7 on
 * the metric, while the patching effects to tell apart are of the size of that move. */
static void expect_close(const interp_patch_result *a, const interp_patch_result *b,
                         const interp_metric *metric, const char *what, interp_patch_kind kind,
                         size_t pair) {
    assert_true(model_shape_equal(&a->shape, &b->shape));
    assert_string_equal(a->axes, b->axes);
    assert_string_equal(a->labels, b->labels);
    assert_true(fabs(a->clean_metric - b->clean_metric) <= TOL * (1 + fabs(b->clean_metric)));
    assert_true(fabs(a->corrupted_metric - b->corrupted_metric) <=
                TOL * (1 + fabs(b->corrupted_metric)));
    double denom = fabs(b->clean_metric - b->corrupted_metric);
    double tol =
        metric->normalize ? fmax(TOL, RAW_TOL / denom) : RAW_TOL * (1 + fabs(b->corrupted_metric));
    size_t where = 0;
    double d = max_abs_diff(a->values, b->values, model_shape_numel(&a->shape), &where);
    if (!(d <= tol)) {
        fail_msg("%s, %s, pair %zu: differ by %g > %g at %zu (%g vs %g)", what,
                 interp_patch_kind_name(kind), pair, d, tol, where, a->values[where],
                 b->values[where]);
    }
}

enum { NP = 4 };

/* Four pairs of T tokens corrupted at positions 1, T/2, T-1 and T-1 (two games corrupted last,
 * so that rows of different pairs share the late-position requests). */
typedef struct batch {
    size_t T;
    int32_t clean[NP * 48];     /* [NP, T] */
    int32_t corrupted[NP * 48]; /* [NP, T] */
    uint8_t legal[NP * 128];    /* [NP, V] */
    interp_patch_pair pairs[NP];
} batch;

static void make_batch(fixture *f, uint64_t seed, size_t T, batch *b) {
    size_t V = (size_t)model_get_config(f->m)->d_vocab;
    assert_true(T <= 48 && V <= 128);
    b->T = T;
    make_games(f, seed, NP, T, b->clean, b->legal);
    const size_t pos[NP] = {1, T / 2, T - 1, T - 1};
    for (size_t i = 0; i < NP; i++) {
        corrupt_at(f, b->clean + i * T, T, pos[i], b->corrupted + i * T);
        b->pairs[i].clean = b->clean + i * T;
        b->pairs[i].corrupted = b->corrupted + i * T;
        pair_metric(f, i, b->legal + i * V, &b->pairs[i].metric);
    }
}

/* Every kind, batched vs one pair at a time, with the shortcut and without it (the latter with
 * a tiny position budget, so that requests are cut inside a pair and across pairs). */
static void test_batch_equals_single(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    for (int which = 0; which < 2; which++) {
        fixture f;
        load_model(&f, which);
        batch b;
        make_batch(&f, 17 + (uint64_t)which, which == 0 ? 14 : 11, &b);
        for (int k = 0; k < INTERP_PATCH_KIND_COUNT; k++) {
            for (int variant = 0; variant < 2; variant++) {
                interp_patch_opts o = interp_patch_opts_default();
                o.kind = (interp_patch_kind)k;
                o.no_prefix_shortcut = variant == 1;
                o.max_packed_positions = variant == 1 ? 7 : 0;
                interp_patch_result *res[NP] = {NULL};
                if (interp_patch_run_batch(f.s, b.pairs, NP, b.T, &o, res, err) != 0) {
                    fail_msg("batch %s: %s", interp_patch_kind_name(o.kind), err);
                }
                for (size_t i = 0; i < NP; i++) {
                    o.metric = b.pairs[i].metric;
                    interp_patch_result *one = NULL;
                    if (interp_patch_run(f.s, b.pairs[i].clean, b.pairs[i].corrupted, b.T, &o, &one,
                                         err) != 0) {
                        fail_msg("single %s: %s", interp_patch_kind_name(o.kind), err);
                    }
                    expect_close(res[i], one, &b.pairs[i].metric,
                                 variant ? "batch/no shortcut" : "batch", o.kind, i);
                    /* the same patched runs, so the same positions computed */
                    assert_int_equal(res[i]->n_positions, one->n_positions);
                    interp_patch_result_destroy(&one);
                    interp_patch_result_destroy(&res[i]);
                }
            }
        }
        fixture_free(&f);
    }
}

/* Every kind, the fast algorithm with the shortcut vs the plain one, on pairs corrupted at the
 * first move token, in the middle and last; entries before the corruption are exactly 0
 * (normalised) in the fast results. */
static void test_shortcut_equals_plain(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    for (int which = 0; which < 2; which++) {
        fixture f;
        load_model(&f, which);
        batch b;
        make_batch(&f, 31 + (uint64_t)which, which == 0 ? 12 : 10, &b);
        size_t T = b.T;
        size_t L = (size_t)model_get_config(f.m)->n_layers;
        size_t H = (size_t)model_get_config(f.m)->n_heads;
        for (int k = 0; k < INTERP_PATCH_KIND_COUNT; k++) {
            interp_patch_opts o = interp_patch_opts_default();
            o.kind = (interp_patch_kind)k;
            interp_patch_result *fast[NP] = {NULL}, *plain[NP] = {NULL};
            if (interp_patch_run_batch(f.s, b.pairs, NP - 1, T, &o, fast, err) != 0) {
                fail_msg("fast %s: %s", interp_patch_kind_name(o.kind), err);
            }
            o.plain = true;
            if (interp_patch_run_batch(f.s, b.pairs, NP - 1, T, &o, plain, err) != 0) {
                fail_msg("plain %s: %s", interp_patch_kind_name(o.kind), err);
            }
            for (size_t i = 0; i + 1 < NP; i++) {
                expect_close(fast[i], plain[i], &b.pairs[i].metric, "shortcut vs plain", o.kind, i);
                assert_true(fast[i]->n_positions < plain[i]->n_positions);
                assert_int_equal(plain[i]->n_forwards, model_shape_numel(&plain[i]->shape));
                /* first differing position */
                size_t d = 0;
                while (b.pairs[i].clean[d] == b.pairs[i].corrupted[d]) {
                    d++;
                }
                if (o.kind == INTERP_PATCH_RESID_PRE && b.pairs[i].metric.normalize) {
                    for (size_t l = 0; l < L; l++) {
                        for (size_t p = 0; p < d; p++) {
                            assert_true(fast[i]->values[l * T + p] == 0.0f);
                        }
                    }
                }
                if (o.kind == INTERP_PATCH_HEAD_Q_BY_POS && b.pairs[i].metric.normalize) {
                    for (size_t x = 0; x < L * d * H; x++) {
                        size_t l = x / (d * H), p = x / H % d, h = x % H;
                        assert_true(fast[i]->values[(l * T + p) * H + h] == 0.0f);
                    }
                }
                interp_patch_result_destroy(&fast[i]);
                interp_patch_result_destroy(&plain[i]);
            }
        }
        fixture_free(&f);
    }
}

/* block_every, last token corrupted: with the shortcut only the 3 x L one-position patched runs
 * at the last position remain (one request per layer, 3 rows starting there), i.e.
 * 3 * (L + (L-1) + ... + 1) positions; without it every (component, layer, position) is run,
 * 3 * T(T+1)/2 * L(L+1)/2 positions. Same values either way. Also the all-positions kinds,
 * which then start at the last position. */
static void check_counts(fixture *f, size_t T) {
    char err[COMMON_ERR_LEN] = "";
    size_t L = (size_t)model_get_config(f->m)->n_layers;
    size_t H = (size_t)model_get_config(f->m)->n_heads;
    size_t V = (size_t)model_get_config(f->m)->d_vocab;
    int32_t clean[64], corrupted[64];
    uint8_t legal[128];
    assert_true(T <= 64 && V <= 128);
    make_games(f, 101 + T, 1, T, clean, legal);
    corrupt_at(f, clean, T, T - 1, corrupted);
    interp_patch_opts o = interp_patch_opts_default();
    assert_int_equal(interp_metric_parse(f->m, "logit:e4", &o.metric, err), 0);
    o.metric.normalize = true;
    interp_patch_result *on = NULL, *off = NULL;
    if (interp_patch_run(f->s, clean, corrupted, T, &o, &on, err) != 0) {
        fail_msg("shortcut: %s", err);
    }
    o.no_prefix_shortcut = true;
    if (interp_patch_run(f->s, clean, corrupted, T, &o, &off, err) != 0) {
        fail_msg("no shortcut: %s", err);
    }
    size_t tri_L = L * (L + 1) / 2, tri_T = T * (T + 1) / 2;
    print_message("block_every T=%zu L=%zu: shortcut %zu forwards, %zu positions; without %zu "
                  "forwards, %zu positions\n",
                  T, L, on->n_forwards, on->n_positions, off->n_forwards, off->n_positions);
    assert_int_equal(on->n_positions, 3 * tri_L);
    assert_int_equal(on->n_forwards, L);
    assert_int_equal(off->n_positions, 3 * tri_T * tri_L);
    assert_int_equal(off->n_forwards, L); /* 3T rows, under 4096 positions, fit one request */
    expect_close(on, off, &o.metric, "counts", o.kind, 0);
    for (size_t x = 0; x < 3 * L * T; x++) {
        if (x % T != T - 1) {
            assert_true(on->values[x] == 0.0f);
        }
    }
    interp_patch_result_destroy(&on);
    interp_patch_result_destroy(&off);
    /* head patches over all positions: L x H rows of one position instead of T */
    o.kind = INTERP_PATCH_HEAD_V_ALL_POS;
    o.no_prefix_shortcut = false;
    assert_int_equal(interp_patch_run(f->s, clean, corrupted, T, &o, &on, err), 0);
    o.no_prefix_shortcut = true;
    assert_int_equal(interp_patch_run(f->s, clean, corrupted, T, &o, &off, err), 0);
    assert_int_equal(on->n_positions, H * tri_L);
    assert_int_equal(off->n_positions, H * T * tri_L);
    expect_close(on, off, &o.metric, "counts", o.kind, 0);
    interp_patch_result_destroy(&on);
    interp_patch_result_destroy(&off);
}

static void test_shortcut_counts(void **state) {
    (void)state;
    fixture f;
    load_model(&f, 0);
    check_counts(&f, 15);
    check_counts(&f, (size_t)model_get_config(f.m)->n_ctx); /* the longest game: 48 */
    fixture_free(&f);
}

/* A pair with no differing token: every patch leaves the corrupted run as it is, so the fast
 * algorithm runs nothing and every value is the corrupted metric (the plain one runs them all
 * and agrees); normalising it is refused, naming the pair, and no result is given. */
static void test_identical_pair(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    fixture f;
    load_model(&f, 1);
    batch b;
    make_batch(&f, 5, 9, &b);
    interp_patch_pair p[2] = {b.pairs[0], b.pairs[1]};
    p[1].corrupted = p[1].clean;
    p[1].metric.normalize = false;
    interp_patch_opts o = interp_patch_opts_default();
    o.kind = INTERP_PATCH_HEAD_BY_POS_EVERY;
    interp_patch_result *fast[2] = {NULL}, *plain[2] = {NULL};
    assert_int_equal(interp_patch_run_batch(f.s, p, 2, b.T, &o, fast, err), 0);
    o.plain = true;
    assert_int_equal(interp_patch_run_batch(f.s, p, 2, b.T, &o, plain, err), 0);
    assert_int_equal(fast[1]->n_forwards, 0);
    assert_int_equal(fast[1]->n_positions, 0);
    assert_true(fast[1]->clean_metric == fast[1]->corrupted_metric);
    size_t n = model_shape_numel(&fast[1]->shape);
    for (size_t x = 0; x < n; x++) {
        assert_true(fast[1]->values[x] == (float)fast[1]->corrupted_metric);
    }
    for (size_t i = 0; i < 2; i++) {
        expect_close(fast[i], plain[i], &p[i].metric, "identical pair", o.kind, i);
        interp_patch_result_destroy(&fast[i]);
        interp_patch_result_destroy(&plain[i]);
    }
    p[1].metric.normalize = true;
    o.plain = false;
    assert_int_equal(interp_patch_run_batch(f.s, p, 2, b.T, &o, fast, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "pair 1"));
    assert_non_null(strstr(err, "normalise"));
    assert_null(fast[0]);
    assert_null(fast[1]);
    fixture_free(&f);
}

/* n = 0 is a no-op; missing pairs or tokens, bad lengths and a pair's bad metric are refused
 * before anything is given back. */
static void test_batch_bad_inputs(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    fixture f;
    load_model(&f, 0);
    batch b;
    make_batch(&f, 9, 10, &b);
    interp_patch_opts o = interp_patch_opts_default();
    interp_patch_result *sentinel = (interp_patch_result *)&b; /* never dereferenced */
    interp_patch_result *res[NP] = {sentinel, sentinel, sentinel, sentinel};
    assert_int_equal(interp_patch_run_batch(f.s, b.pairs, 0, b.T, &o, res, err), 0);
    assert_int_equal(interp_patch_run_batch(f.s, NULL, 0, b.T, &o, NULL, err), 0);
    for (size_t i = 0; i < NP; i++) {
        assert_ptr_equal(res[i], sentinel);
        res[i] = NULL;
    }
    assert_int_equal(interp_patch_run_batch(f.s, NULL, 2, b.T, &o, res, err), COMMON_ERR_INVALID);
    assert_int_equal(interp_patch_run_batch(f.s, b.pairs, 2, b.T, &o, NULL, err),
                     COMMON_ERR_INVALID);
    /* one length for all pairs: 0 and beyond n_ctx are refused */
    assert_int_equal(interp_patch_run_batch(f.s, b.pairs, NP, 0, &o, res, err), COMMON_ERR_INVALID);
    size_t ctx = (size_t)model_get_config(f.m)->n_ctx;
    assert_int_equal(interp_patch_run_batch(f.s, b.pairs, NP, ctx + 1, &o, res, err),
                     COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "positions"));
    interp_patch_pair p[NP];
    memcpy(p, b.pairs, sizeof p);
    p[3].corrupted = NULL;
    assert_int_equal(interp_patch_run_batch(f.s, p, NP, b.T, &o, res, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "pair 3"));
    memcpy(p, b.pairs, sizeof p);
    p[2].metric.kind = INTERP_METRIC_LEGAL_MASS;
    p[2].metric.legal = NULL;
    assert_true(interp_patch_run_batch(f.s, p, NP, b.T, &o, res, err) < 0);
    assert_non_null(strstr(err, "pair 2"));
    assert_non_null(strstr(err, "mask"));
    memcpy(p, b.pairs, sizeof p);
    p[1].metric.token = 100000;
    assert_int_equal(interp_patch_run_batch(f.s, p, NP, b.T, &o, res, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "pair 1"));
    for (size_t i = 0; i < NP; i++) {
        assert_null(res[i]);
    }
    o.kind = (interp_patch_kind)INTERP_PATCH_KIND_COUNT;
    assert_int_equal(interp_patch_run_batch(f.s, b.pairs, NP, b.T, &o, res, err),
                     COMMON_ERR_INVALID);
    fixture_free(&f);
}

/* The host waits for the device once per request, not once per patched run: each request is a
 * forward (one sync) and one transfer of its rows' metric values, computed on the device; with
 * the pair's clean and corrupted runs that is 2 x (n_forwards + 2) waits at most, whatever the
 * number of patched runs the requests pack. And only the metrics come back: one double (two
 * elements) per run, not the run's logits (counted on a backend that counts what passes, over
 * the fixture's CPU backend). */
static void test_waits_per_request(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    fixture f;
    load_model(&f, 1);
    batch b;
    make_batch(&f, 31, 20, &b);
    model_backend_counts counts = {0};
    model_backend *counted = NULL;
    model_session *s = NULL;
    assert_int_equal(model_backend_count_new(&counted, f.be, &counts, err), 0);
    assert_int_equal(model_session_new(&s, f.m, counted, err), 0);
    for (int k = 0; k < INTERP_PATCH_KIND_COUNT; k++) {
        interp_patch_opts o = interp_patch_opts_default();
        o.kind = (interp_patch_kind)k;
        o.no_prefix_shortcut = true; /* every index a patched run */
        o.metric = b.pairs[0].metric;
        interp_patch_result *res = NULL;
        counts = (model_backend_counts){0};
        if (interp_patch_run(s, b.pairs[0].clean, b.pairs[0].corrupted, b.T, &o, &res, err) != 0) {
            fail_msg("%s: %s", interp_patch_kind_name(o.kind), err);
        }
        size_t runs = model_shape_numel(&res->shape);
        if (counts.host_waits > 2 * (res->n_forwards + 2)) {
            fail_msg("%s: %llu host waits for %zu requests (%zu patched runs)",
                     interp_patch_kind_name(o.kind), (unsigned long long)counts.host_waits,
                     res->n_forwards, runs);
        }
        size_t pairs_runs = runs + 2; /* the patched runs, the clean and the corrupted run */
        if (counts.downloaded > 2 * pairs_runs) {
            fail_msg("%s: %llu elements downloaded for %zu runs", interp_patch_kind_name(o.kind),
                     (unsigned long long)counts.downloaded, pairs_runs);
        }
        if (o.kind == INTERP_PATCH_BLOCK_EVERY) { /* many runs a request: per-run waits fail */
            assert_true(runs > 2 * (res->n_forwards + 2));
        }
        interp_patch_result_destroy(&res);
    }
    model_session_destroy(&s);
    model_backend_destroy(&counted);
    fixture_free(&f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_bad_inputs),    cmocka_unit_test(test_identical_pair),
        cmocka_unit_test(test_shortcut_counts),     cmocka_unit_test(test_shortcut_equals_plain),
        cmocka_unit_test(test_batch_equals_single), cmocka_unit_test(test_waits_per_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
