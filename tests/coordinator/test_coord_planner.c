/*
 * test_coord_planner: the planner on a small dataset (random games plus a short mate, a
 * promotion and a short opening). Patch tasks of exact, bounded sizes whose pairs add up to the
 * count chess_legal_tokens gives; planning twice adds nothing and planning with other sizes is
 * refused; every loaded pair is a legal replacement at the corrupted position, in the documented
 * order; random draws do not depend on the split; short games give no pair; corruption by
 * another game and by a given token; aggregate chunks cover the range once; and legal / neuron
 * partials computed per task over different splits merge in the views to the one-pass values.
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
#include <jansson.h>
#include <sqlite3.h>

#include "chess/chess.h"
#include "coordinator/coordinator.h"

static char err[COMMON_ERR_LEN];

/* The dataset: N_RANDOM random games of at most 60 tokens, then the hand-written games. */
#define N_RANDOM 24
static const char *const hand_games[] = {
    "f2f3 e7e5 g2g4 d8h4",                           /* 9 tokens, mate: shorter than most cuts */
    "a2a4 b7b5 a4b5 a7a6 b5a6 c8b7 a6b7 b8c6 b7a8q", /* 20 tokens, position 19 is "q" */
    "e2e4 e7e5 g1f3 b8c6 f1c4 g8f6",                 /* 13 tokens */
};
#define N_GAMES (N_RANDOM + 3)
#define MAX_T 64

static const char *tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

static coordinator_store *open_fresh(const char *name) {
    char path[512], side[600];
    snprintf(path, sizeof path, "%s/%s", tmpdir(), name);
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", path);
    remove(side);
    coordinator_store *s = NULL;
    if (coordinator_store_open(&s, path, 0, err) != 0) {
        fail_msg("open %s: %s", path, err);
    }
    int64_t ds = 0;
    assert_int_equal(coordinator_dataset_create(s, "d", "test", false, &ds, err), 0);
    coordinator_import_stats st = {0};
    if (coordinator_games_generate(s, ds, N_RANDOM, 11, 60, &st, NULL, err) != 0) {
        fail_msg("generate: %s", err);
    }
    assert_int_equal(st.n_added, N_RANDOM);
    coordinator_game_in in[3];
    for (size_t i = 0; i < 3; i++) {
        in[i] = (coordinator_game_in){hand_games[i], NULL, (int64_t)i};
    }
    if (coordinator_games_add(s, ds, "hand", in, 3, 0, &st, NULL, err) != 0) {
        fail_msg("add: %s", err);
    }
    assert_int_equal(st.n_added, N_GAMES);
    return s;
}

/* The games as the dataset holds them (uci, read back), with their legal-token view. */
typedef struct ref_game {
    char *uci;
    chess_token_info *info;
    size_t n;
} ref_game;

static ref_game refs[N_GAMES];

static void load_refs(coordinator_store *s) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(coordinator_store_db(s),
                                        "SELECT uci FROM games WHERE dataset = 'd' ORDER BY game",
                                        -1, &st, NULL),
                     SQLITE_OK);
    size_t g = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_true(g < N_GAMES);
        free(refs[g].uci);
        free(refs[g].info);
        refs[g].uci = strdup((const char *)sqlite3_column_text(st, 0));
        assert_int_equal(chess_legal_tokens(NULL, refs[g].uci, &refs[g].info, &refs[g].n, err), 0);
        g++;
    }
    sqlite3_finalize(st);
    assert_int_equal(g, N_GAMES);
}

static void free_refs(void) {
    for (size_t g = 0; g < N_GAMES; g++) {
        free(refs[g].uci);
        free(refs[g].info);
        refs[g] = (ref_game){0};
    }
}

/* Pairs of each_legal_alternative, position last, for game g at cut-off N, from the rules. */
static size_t ref_pairs(size_t g, size_t N) {
    return refs[g].n < N ? 0 : (size_t)refs[g].info[N - 2].n_next - 1;
}

/* Whether text is a token the rules allow after position t of game g. */
static bool ref_legal(size_t g, size_t t, const char *text) {
    const chess_token_info *i = &refs[g].info[t];
    int sq = chess_square_parse(text);
    if (sq >= 0 && text[2] == '\0') {
        return (i->next_squares >> sq) & 1;
    }
    static const char letters[] = "qrbn";
    const char *l = text[0] != '\0' && text[1] == '\0' ? strchr(letters, text[0]) : NULL;
    return l != NULL && (i->next_promos & (1 << (l - letters)));
}

/* The replacements of the last token of game g's first N tokens, in the order of `chesslens
 * chess legal` (squares a1, a2, ..., h8, then q r b n) without the clean token; the count. */
static size_t ref_alternatives(size_t g, size_t N, char out[68][4]) {
    const chess_token_info *i = &refs[g].info[N - 2];
    const char *clean = refs[g].info[N - 1].token.text;
    size_t n = 0;
    for (int file = 0; file < 8; file++) {
        for (int rank = 0; rank < 8; rank++) {
            char name[3];
            chess_square_name(rank * 8 + file, name);
            if (((i->next_squares >> (rank * 8 + file)) & 1) && strcmp(name, clean) != 0) {
                snprintf(out[n++], 4, "%s", name);
            }
        }
    }
    for (int l = 0; l < 4; l++) {
        char name[2] = {"qrbn"[l], '\0'};
        if (((i->next_promos >> l) & 1) && strcmp(name, clean) != 0) {
            snprintf(out[n++], 4, "%s", name);
        }
    }
    return n;
}

/* Submits a sweep over games [0, to) with the given analyses; *spec receives the parsed spec. */
static int64_t submit(coordinator_store *s, const char *name, size_t to, const char *analyses,
                      coordinator_spec **spec) {
    char json[2048];
    snprintf(json, sizeof json,
             "{\"name\":\"%s\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,%zu],"
             "\"analyses\":[%s]}",
             name, to, analyses);
    int64_t id = 0;
    if (coordinator_sweep_submit(s, json, strlen(json), NULL, 0, &id, NULL, err) != 0) {
        fail_msg("submit: %s", err);
    }
    assert_int_equal(coordinator_spec_parse(spec, json, strlen(json), err), 0);
    return id;
}

static int64_t query_int(coordinator_store *s, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(coordinator_store_db(s), sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("prepare %s", sql);
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* A task of a job as stored, with its body parsed. */
typedef struct ref_task {
    char key[64];
    char body[256];
    size_t cutoff, pairs;
    uint64_t from, to;
} ref_task;

static size_t job_tasks(coordinator_store *s, int64_t job, ref_task *out, size_t cap) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(coordinator_store_db(s),
                                        "SELECT key, body FROM task WHERE job_id = ? ORDER BY id",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_int64(st, 1, job);
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_true(n < cap);
        ref_task *t = &out[n++];
        *t = (ref_task){0};
        snprintf(t->key, sizeof t->key, "%s", (const char *)sqlite3_column_text(st, 0));
        int len = sqlite3_column_bytes(st, 1);
        assert_true(len > 0 && (size_t)len < sizeof t->body);
        memcpy(t->body, sqlite3_column_blob(st, 1), (size_t)len);
        json_t *o = json_loads(t->body, 0, NULL);
        assert_non_null(o);
        json_t *g = json_object_get(o, "games");
        t->from = (uint64_t)json_integer_value(json_array_get(g, 0));
        t->to = (uint64_t)json_integer_value(json_array_get(g, 1));
        t->cutoff = (size_t)json_integer_value(json_object_get(o, "cutoff"));
        t->pairs = (size_t)json_integer_value(json_object_get(o, "pairs"));
        json_decref(o);
    }
    sqlite3_finalize(st);
    return n;
}

static coordinator_work *load(coordinator_store *s, const coordinator_spec *spec, int64_t job,
                              const ref_task *t) {
    coordinator_work *w = NULL;
    if (coordinator_work_load(s, spec, job, t->body, strlen(t->body), &w, err) != 0) {
        fail_msg("work %s: %s", t->key, err);
    }
    return w;
}

#define SWEEP_ANALYSES                                                                             \
    "{\"kind\":\"patch\",\"patch\":\"block_every\",\"cutoffs\":{\"from\":10,\"to\":40,"            \
    "\"step\":10},\"corrupt\":{\"position\":\"last\",\"with\":\"each_legal_alternative\"},"        \
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\",\"corrupt_top\"],"              \
    "\"normalize\":true}},"                                                                        \
    "{\"kind\":\"legal_stats\",\"components\":[\"embeds\",\"heads\",\"mlps\"]},"                   \
    "{\"kind\":\"neuron_stats\",\"by\":\"phase\"},{\"kind\":\"predictions\",\"top_k\":5}"

static const size_t cutoffs[4] = {10, 20, 30, 40};

/* Patch tasks: exact sizes, bounded and greedy, per cut-off in order; the sum is the rules'. */
static void test_patch_sizes(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("sizes.db");
    load_refs(s);
    coordinator_spec *spec = NULL;
    int64_t sw = submit(s, "sizes", N_GAMES, SWEEP_ANALYSES, &spec);
    const size_t target = 50;
    coordinator_plan_opts opts = {target, 7};
    size_t n_tasks = 0;
    if (coordinator_plan_sweep(s, sw, spec, &opts, &n_tasks, err) != 0) {
        fail_msg("plan: %s", err);
    }
    int64_t job = 0;
    assert_int_equal(coordinator_job_find(s, sw, 0, &job, err), 0);
    static ref_task tasks[1024];
    size_t n = job_tasks(s, job, tasks, 1024);
    size_t total = 0, k = 0;
    for (size_t c = 0; c < 4; c++) {
        size_t N = cutoffs[c], expect = 0, first = k;
        for (size_t g = 0; g < N_GAMES; g++) {
            expect += ref_pairs(g, N);
        }
        uint64_t next_free = 0;
        size_t got = 0;
        for (; k < n && tasks[k].cutoff == N; k++) {
            const ref_task *t = &tasks[k];
            char key[64];
            snprintf(key, sizeof key, "c%zu:g%llu-%llu", N, (unsigned long long)t->from,
                     (unsigned long long)t->to);
            assert_string_equal(t->key, key);
            /* the body's count is the rules' count over the task's games; those at both ends
             * give pairs, those between the previous task and this one none */
            size_t sum = 0;
            for (uint64_t g = t->from; g < t->to; g++) {
                sum += ref_pairs(g, N);
            }
            assert_int_equal(sum, t->pairs);
            assert_true(ref_pairs(t->from, N) > 0 && ref_pairs(t->to - 1, N) > 0);
            for (uint64_t g = next_free; g < t->from; g++) {
                assert_int_equal(ref_pairs(g, N), 0);
            }
            next_free = t->to;
            /* within the target unless one game alone exceeds it */
            assert_true(t->pairs <= target || t->to - t->from == 1);
            /* greedy: the next task's first game would not have fitted */
            if (k + 1 < n && tasks[k + 1].cutoff == N) {
                assert_true(t->pairs + ref_pairs(tasks[k + 1].from, N) > target);
            }
            got += t->pairs;
        }
        assert_true(k > first);
        assert_int_equal(got, expect);
        total += got;
    }
    assert_int_equal(k, n);
    assert_true(total > 4 * target);
    /* the short mate (game N_RANDOM, 9 tokens) is in no task's pairs */
    assert_int_equal(ref_pairs(N_RANDOM, 10), 0);
    /* aggregate jobs: ceil(27 / 7) = 4 tasks each */
    assert_int_equal(n_tasks, n + 3 * 4);

    /* planning again adds nothing; other sizes are refused */
    size_t again = 0;
    assert_int_equal(coordinator_plan_sweep(s, sw, spec, &opts, &again, err), 0);
    assert_int_equal(again, n_tasks);
    coordinator_plan_opts other = {target / 2, 7};
    assert_int_equal(coordinator_plan_sweep(s, sw, spec, &other, NULL, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "planned otherwise"));
    assert_int_equal(query_int(s, "SELECT COUNT(*) FROM task"), (int64_t)n_tasks);
    /* the defaults: 64 pairs, 64 games */
    coordinator_spec *spec2 = NULL;
    int64_t sw2 = submit(s, "defaults", N_GAMES, SWEEP_ANALYSES, &spec2);
    size_t n2 = 0;
    assert_int_equal(coordinator_plan_sweep(s, sw2, spec2, NULL, &n2, err), 0);
    assert_int_equal(coordinator_job_find(s, sw2, 1, &job, err), 0);
    assert_int_equal(job_tasks(s, job, tasks, 1024), 1);
    assert_string_equal(tasks[0].key, "g0-27");
    /* a spec that is not the sweep's is refused */
    assert_int_equal(coordinator_plan_sweep(s, sw, spec2, NULL, NULL, err), COMMON_ERR_INVALID);

    coordinator_spec_destroy(&spec);
    coordinator_spec_destroy(&spec2);
    free_refs();
    coordinator_store_close(&s);
}

/* Every pair: clean = the game's first N tokens, the corrupted prompt differs exactly at N - 1
 * with a legal token other than the clean one; all alternatives, in name order, once. */
static void test_pairs_are_legal_alternatives(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("pairs.db");
    load_refs(s);
    coordinator_spec *spec = NULL;
    int64_t sw = submit(s, "pairs", N_GAMES, SWEEP_ANALYSES, &spec);
    coordinator_plan_opts opts = {37, 5};
    assert_int_equal(coordinator_plan_sweep(s, sw, spec, &opts, NULL, err), 0);
    /* claim everything and load the patch job's tasks from their leases */
    coordinator_lease *l = NULL;
    size_t nl = 0;
    assert_int_equal(coordinator_tasks_claim(s, "w", 10000, 0, 1, &l, &nl, err), 0);
    int64_t job = 0;
    assert_int_equal(coordinator_job_find(s, sw, 0, &job, err), 0);
    size_t total = 0, expect = 0, seen_promo = 0;
    for (size_t c = 0; c < 4; c++) {
        for (size_t g = 0; g < N_GAMES; g++) {
            expect += ref_pairs(g, cutoffs[c]);
        }
    }
    for (size_t i = 0; i < nl; i++) {
        if (l[i].job_id != job) {
            continue;
        }
        coordinator_work *w = NULL;
        if (coordinator_work_load(s, spec, job, l[i].body, l[i].body_len, &w, err) != 0) {
            fail_msg("work %s: %s", l[i].key, err);
        }
        assert_int_equal(w->kind, COORDINATOR_ANALYSIS_PATCH);
        assert_int_equal(w->n_games, 0);
        size_t N = w->cutoff;
        for (size_t k = 0; k < w->n_pairs; k++) {
            const coordinator_pair *p = &w->pairs[k];
            size_t g = (size_t)p->game;
            assert_true(p->game >= w->game_from && p->game < w->game_to);
            assert_int_equal(p->corrupt_pos, (int32_t)N - 1);
            assert_int_equal(p->corrupt_game, -1);
            assert_string_equal(p->uci, refs[g].uci);
            for (size_t t = 0; t < N; t++) {
                assert_string_equal(p->clean[t], refs[g].info[t].token.text);
                if (t != N - 1) {
                    assert_string_equal(p->corrupted[t], p->clean[t]);
                }
            }
            assert_string_equal(p->clean_token, p->clean[N - 1]);
            assert_string_equal(p->corrupt_token, p->corrupted[N - 1]);
            assert_string_not_equal(p->corrupt_token, p->clean_token);
            assert_true(ref_legal(g, N - 2, p->corrupt_token));
            /* the game's pairs are consecutive: every alternative once, in name order */
            if (k == 0 || w->pairs[k - 1].game != p->game) {
                char alt[68][4];
                size_t n_alt = ref_alternatives(g, N, alt);
                assert_int_equal(n_alt, ref_pairs(g, N));
                assert_true(k + n_alt <= w->n_pairs);
                for (size_t j = 0; j < n_alt; j++) {
                    assert_int_equal(w->pairs[k + j].game, p->game);
                    assert_string_equal(w->pairs[k + j].corrupt_token, alt[j]);
                }
                assert_true(k + n_alt == w->n_pairs || w->pairs[k + n_alt].game != p->game);
            }
            if (g == N_RANDOM + 1 && N == 20) {
                seen_promo++; /* the promotion: r, b, n replace q */
                assert_int_equal(p->corrupt_token[1], '\0');
                assert_string_equal(p->clean_token, "q");
            }
        }
        total += w->n_pairs;
        coordinator_work_destroy(&w);
        assert_null(w);
    }
    assert_int_equal(total, expect);
    assert_int_equal(seen_promo, 3);
    coordinator_work_destroy(NULL);

    /* bodies that do not fit are refused */
    coordinator_work *w = NULL;
    const char *bad[] = {
        "{\"analysis\":0,\"cutoff\":20,\"games\":[0,3],\"kind\":\"patch\",\"pairs\":1}",
        "{\"analysis\":0,\"cutoff\":25,\"games\":[0,3],\"kind\":\"patch\",\"pairs\":1}",
        "{\"analysis\":1,\"games\":[0,3],\"kind\":\"legal_stats\"}",
        "{\"analysis\":0,\"cutoff\":20,\"games\":[0,99],\"kind\":\"patch\",\"pairs\":1}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(coordinator_work_load(s, spec, job, bad[i], strlen(bad[i]), &w, err),
                         COMMON_ERR_INVALID);
        assert_null(w);
    }
    const char *malformed[] = {
        "{\"analysis\":0,\"cutoff\":20,\"games\":[3,3],\"kind\":\"patch\",\"pairs\":1}",
        "{\"analysis\":0,\"cutoff\":20,\"games\":[0,3],\"kind\":\"patch\"}",
        "{\"analysis\":0,\"games\":[0,3],\"kind\":\"nope\"}",
        "[1,2]",
        "{\"analysis\":",
        "",
        "{}",
        /* duplicate and unknown keys, a cut-off a games task does not have */
        "{\"analysis\":0,\"analysis\":0,\"games\":[0,3],\"kind\":\"predictions\"}",
        "{\"analysis\":0,\"games\":[0,3],\"kind\":\"predictions\",\"extra\":1}",
        "{\"analysis\":0,\"cutoff\":20,\"games\":[0,3],\"kind\":\"predictions\"}",
        /* numbers JSON allows but a body never holds: sign, fraction, exponent, leading zero */
        "{\"analysis\":-0,\"games\":[0,3],\"kind\":\"predictions\"}",
        "{\"analysis\":0.0,\"games\":[0,3],\"kind\":\"predictions\"}",
        "{\"analysis\":0,\"games\":[0,3e0],\"kind\":\"predictions\"}",
        "{\"analysis\":00,\"games\":[0,3],\"kind\":\"predictions\"}",
        "{\"analysis\":0,\"games\":[0,18446744073709551616],\"kind\":\"predictions\"}",
        /* an escape in the kind, bytes after the object, a third bound */
        "{\"analysis\":0,\"games\":[0,3],\"kind\":\"predictions\\u0000\"}",
        "{\"analysis\":0,\"games\":[0,3],\"kind\":\"predictions\"} x",
        "{\"analysis\":0,\"games\":[0,3,4],\"kind\":\"predictions\"}",
    };
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        int rc = coordinator_work_load(s, spec, job, malformed[i], strlen(malformed[i]), &w, err);
        if (rc != COMMON_ERR_PARSE) {
            fail_msg("body %s: %d (%s), not refused as malformed", malformed[i], rc, err);
        }
        assert_null(w);
    }
    /* the keys in another order, with whitespace: the same work as the planner's own body */
    const char *spaced = " { \"kind\" : \"patch\", \"pairs\":1 ,\"games\": [ 0 , 1 ],"
                         "\n\"cutoff\":20,\"analysis\":0 }\n";
    int rc = coordinator_work_load(s, spec, job, spaced, strlen(spaced), &w, err);
    if (rc != COMMON_ERR_INVALID || strstr(err, "pairs") == NULL) {
        /* game 0 at cut-off 20 has some other number of pairs: the body was read to the end */
        fail_msg("spaced body: %d (%s)", rc, err);
    }
    coordinator_leases_free(l, nl);
    coordinator_spec_destroy(&spec);
    free_refs();
    coordinator_store_close(&s);
}

/* All pairs of a patch job, loaded task by task, as "game:N:pos:token" lines in order. */
static size_t collect_pairs(coordinator_store *s, int64_t sw, const coordinator_spec *spec,
                            char (*out)[32], size_t cap) {
    int64_t job = 0;
    assert_int_equal(coordinator_job_find(s, sw, 0, &job, err), 0);
    static ref_task tasks[4096];
    size_t n = job_tasks(s, job, tasks, 4096), k = 0;
    for (size_t i = 0; i < n; i++) {
        coordinator_work *w = load(s, spec, job, &tasks[i]);
        for (size_t j = 0; j < w->n_pairs; j++) {
            assert_true(k < cap);
            const coordinator_pair *p = &w->pairs[j];
            snprintf(out[k++], 32, "%llu:%zu:%d:%s:%lld", (unsigned long long)p->game, w->cutoff,
                     p->corrupt_pos, p->corrupt_token, (long long)p->corrupt_game);
        }
        coordinator_work_destroy(&w);
    }
    return k;
}

/* SplitMix64's finaliser, as docs/SWEEP.md states the draw. */
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* random_legal_alternative: one pair per game and cut-off, the documented draw, whatever the
 * task sizes. */
static void test_random_draw_split_free(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("random.db");
    load_refs(s);
    const char *an = "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[10,20,30,40],"
                     "\"corrupt\":{\"with\":\"random_legal_alternative\",\"seed\":5},"
                     "\"metric\":{\"kind\":\"logit\",\"tokens\":[\"clean_top\"]}}";
    coordinator_spec *sa = NULL, *sb = NULL;
    int64_t a = submit(s, "ra", N_GAMES, an, &sa);
    int64_t b = submit(s, "rb", N_GAMES, an, &sb);
    coordinator_plan_opts oa = {1, 0}, ob = {100, 0};
    size_t na = 0, nb = 0;
    assert_int_equal(coordinator_plan_sweep(s, a, sa, &oa, &na, err), 0);
    assert_int_equal(coordinator_plan_sweep(s, b, sb, &ob, &nb, err), 0);
    assert_true(na > nb);
    static char pa[512][32], pb[512][32];
    size_t ka = collect_pairs(s, a, sa, pa, 512), kb = collect_pairs(s, b, sb, pb, 512);
    assert_int_equal(na, ka); /* one pair per task */
    assert_int_equal(ka, kb);
    /* the same pairs; task order is by cut-off then game in both */
    for (size_t i = 0; i < ka; i++) {
        assert_string_equal(pa[i], pb[i]);
    }
    /* one per game with an alternative at each cut-off, the documented draw */
    size_t expect = 0;
    for (size_t c = 0; c < 4; c++) {
        for (size_t g = 0; g < N_GAMES; g++) {
            size_t N = cutoffs[c], n_alt = ref_pairs(g, N);
            if (n_alt == 0) {
                continue;
            }
            char alt[68][4];
            assert_int_equal(ref_alternatives(g, N, alt), n_alt);
            const char *want = alt[mix(mix(mix(5) ^ g) ^ N) % n_alt];
            char line[32];
            snprintf(line, sizeof line, "%zu:%zu:%zu:%s:-1", g, N, N - 1, want);
            assert_string_equal(pa[expect], line);
            expect++;
        }
    }
    assert_int_equal(expect, ka);
    coordinator_spec_destroy(&sa);
    coordinator_spec_destroy(&sb);
    free_refs();
    coordinator_store_close(&s);
}

/* Corruption by another game: its first N tokens, for every other game long enough; and by a
 * given token, skipped where it is the clean one. */
static void test_corrupt_by_game_and_token(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("game.db");
    load_refs(s);
    const size_t G = 3;
    char an[512];
    snprintf(an, sizeof an,
             "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[10,20],"
             "\"corrupt\":{\"with\":{\"game\":%zu}},\"metric\":{\"kind\":\"legal_mass\"}}",
             G);
    coordinator_spec *spec = NULL;
    int64_t sw = submit(s, "bygame", N_GAMES, an, &spec);
    coordinator_plan_opts opts = {4, 0};
    assert_int_equal(coordinator_plan_sweep(s, sw, spec, &opts, NULL, err), 0);
    int64_t job = 0;
    assert_int_equal(coordinator_job_find(s, sw, 0, &job, err), 0);
    static ref_task tasks[256];
    size_t n = job_tasks(s, job, tasks, 256), total = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(tasks[i].pairs <= 4);
        coordinator_work *w = load(s, spec, job, &tasks[i]);
        for (size_t k = 0; k < w->n_pairs; k++) {
            const coordinator_pair *p = &w->pairs[k];
            assert_true(p->game != G && refs[p->game].n >= w->cutoff);
            assert_int_equal(p->corrupt_pos, -1);
            assert_int_equal(p->corrupt_game, (int64_t)G);
            assert_string_equal(p->clean_token, "");
            assert_string_equal(p->corrupt_token, "");
            for (size_t t = 0; t < w->cutoff; t++) {
                assert_string_equal(p->clean[t], refs[p->game].info[t].token.text);
                assert_string_equal(p->corrupted[t], refs[G].info[t].token.text);
            }
        }
        total += w->n_pairs;
        coordinator_work_destroy(&w);
    }
    size_t expect = 0;
    for (size_t N = 10; N <= 20; N += 10) {
        for (size_t g = 0; g < N_GAMES; g++) {
            expect += g != G && refs[g].n >= N;
        }
    }
    assert_int_equal(total, expect);
    assert_true(total > 0 && total < 2 * N_GAMES);

    /* a corrupting game the dataset does not have */
    coordinator_spec *missing = NULL;
    int64_t sm =
        submit(s, "missing", N_GAMES,
               "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[10],"
               "\"corrupt\":{\"with\":{\"game\":999}},\"metric\":{\"kind\":\"legal_mass\"}}",
               &missing);
    assert_int_equal(coordinator_plan_sweep(s, sm, missing, NULL, NULL, err), COMMON_ERR_NOT_FOUND);
    assert_non_null(strstr(err, "analyses[0].corrupt.with.game"));

    /* "e4" at position 2 (White's first to-square): no pair for the games opening e2e4 */
    coordinator_spec *tok = NULL;
    int64_t st = submit(s, "token", N_GAMES,
                        "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[3,5],"
                        "\"corrupt\":{\"position\":2,\"with\":\"e4\"},"
                        "\"metric\":{\"kind\":\"logit\",\"tokens\":[\"e4\"]}}",
                        &tok);
    assert_int_equal(coordinator_plan_sweep(s, st, tok, NULL, NULL, err), 0);
    assert_int_equal(coordinator_job_find(s, st, 0, &job, err), 0);
    n = job_tasks(s, job, tasks, 256);
    size_t with_e4 = 0;
    for (size_t g = 0; g < N_GAMES; g++) {
        with_e4 += strcmp(refs[g].info[2].token.text, "e4") == 0;
    }
    assert_true(with_e4 >= 1);
    total = 0;
    for (size_t i = 0; i < n; i++) {
        coordinator_work *w = load(s, tok, job, &tasks[i]);
        for (size_t k = 0; k < w->n_pairs; k++) {
            const coordinator_pair *p = &w->pairs[k];
            assert_int_equal(p->corrupt_pos, 2);
            assert_string_equal(p->corrupt_token, "e4");
            assert_string_equal(p->corrupted[2], "e4");
            assert_string_not_equal(p->clean[2], "e4");
        }
        total += w->n_pairs;
        coordinator_work_destroy(&w);
    }
    assert_int_equal(total, 2 * (N_GAMES - with_e4));
    coordinator_spec_destroy(&spec);
    coordinator_spec_destroy(&missing);
    coordinator_spec_destroy(&tok);
    free_refs();
    coordinator_store_close(&s);
}

/* Aggregate tasks: chunks of games_per_task covering [from, to) once, with whole games. */
static void test_aggregate_chunks(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("chunks.db");
    load_refs(s);
    char json[1024];
    snprintf(json, sizeof json,
             "{\"name\":\"sub\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[2,%d],"
             "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":3},"
             "{\"kind\":\"neuron_stats\",\"by\":\"phase\"}]}",
             N_GAMES);
    coordinator_spec *spec = NULL;
    int64_t sw = 0;
    assert_int_equal(coordinator_sweep_submit(s, json, strlen(json), NULL, 0, &sw, NULL, err), 0);
    assert_int_equal(coordinator_spec_parse(&spec, json, strlen(json), err), 0);
    coordinator_plan_opts opts = {0, 6};
    size_t n_tasks = 0;
    assert_int_equal(coordinator_plan_sweep(s, sw, spec, &opts, &n_tasks, err), 0);
    assert_int_equal(n_tasks, 2 * 5); /* 25 games: 6 + 6 + 6 + 6 + 1 */
    for (size_t a = 0; a < 2; a++) {
        int64_t job = 0;
        assert_int_equal(coordinator_job_find(s, sw, a, &job, err), 0);
        static ref_task tasks[16];
        size_t n = job_tasks(s, job, tasks, 16);
        assert_int_equal(n, 5);
        int covered[N_GAMES] = {0};
        for (size_t i = 0; i < n; i++) {
            char key[32];
            snprintf(key, sizeof key, "g%llu-%llu", (unsigned long long)tasks[i].from,
                     (unsigned long long)tasks[i].to);
            assert_string_equal(tasks[i].key, key);
            coordinator_work *w = load(s, spec, job, &tasks[i]);
            assert_int_equal(w->kind, a == 0 ? COORDINATOR_ANALYSIS_PREDICTIONS
                                             : COORDINATOR_ANALYSIS_NEURON_STATS);
            assert_int_equal(w->analysis, a);
            assert_ptr_equal(w->params, &spec->analyses[a]);
            assert_int_equal(w->n_pairs, 0);
            assert_int_equal(w->n_games, w->game_to - w->game_from);
            assert_true(w->n_games == 6 || (i == 4 && w->n_games == 1));
            for (size_t k = 0; k < w->n_games; k++) {
                const coordinator_work_game *g = &w->games[k];
                assert_int_equal(g->index, w->game_from + k);
                covered[g->index]++;
                assert_string_equal(g->uci, refs[g->index].uci);
                assert_int_equal(g->n_tokens, refs[g->index].n);
                for (size_t t = 0; t < g->n_tokens; t++) {
                    assert_string_equal(g->tokens[t], refs[g->index].info[t].token.text);
                    assert_int_equal(g->phases[t], refs[g->index].info[t].token.phase);
                }
            }
            coordinator_work_destroy(&w);
        }
        for (size_t g = 0; g < N_GAMES; g++) {
            assert_int_equal(covered[g], g >= 2 ? 1 : 0);
        }
    }
    coordinator_spec_destroy(&spec);
    free_refs();
    coordinator_store_close(&s);
}

/* ---- exact merges through the store ---- */

/* A value in [-2, 2) that depends only on its arguments. */
static float synth(uint64_t game, uint64_t a, uint64_t b, uint64_t c) {
    uint64_t h = mix(mix(mix(mix(game) ^ a) ^ b) ^ c);
    return (float)((double)(h >> 11) / 9007199254740992.0 * 4.0 - 2.0);
}

#define V_SYN 68 /* squares a1..h8 by index, then q r b n */
static const char *const comp_labels[3] = {"embed", "L0H1", "0_mlp_out"};
static const model_config syn_cfg = {.n_layers = 2,
                                     .d_model = 8,
                                     .n_heads = 2,
                                     .d_head = 4,
                                     .d_mlp = 5,
                                     .n_ctx = MAX_T,
                                     .n_positions = MAX_T,
                                     .d_vocab = V_SYN};

/* One game's contribution to the partials: synthetic logit contributions with the game's real
 * legal mask, synthetic MLP activations with its real phases. */
static void add_game(interp_legal_stats *ls, interp_neuron_stats *ns,
                     const coordinator_work_game *g) {
    size_t T = g->n_tokens;
    assert_true(T <= MAX_T);
    float *data = malloc(3 * T * V_SYN * sizeof *data);
    uint8_t *legal = calloc(T * V_SYN, 1);
    float *post = malloc(T * 5 * sizeof *post);
    assert_non_null(data);
    assert_non_null(legal);
    assert_non_null(post);
    for (size_t i = 0; i < 3 * T * V_SYN; i++) {
        data[i] = synth(g->index, 1, i, 0);
    }
    const chess_token_info *info = refs[g->index].info;
    for (size_t t = 0; t < T; t++) {
        for (int v = 0; v < 64; v++) {
            legal[t * V_SYN + (size_t)v] = (uint8_t)((info[t].next_squares >> v) & 1);
        }
        for (int v = 0; v < 4; v++) {
            legal[t * V_SYN + 64 + (size_t)v] = (uint8_t)((info[t].next_promos >> v) & 1);
        }
    }
    char names[3][16], *labels[3];
    for (int c = 0; c < 3; c++) {
        snprintf(names[c], sizeof names[c], "%s", comp_labels[c]);
        labels[c] = names[c];
    }
    interp_stack st = {3, T, V_SYN, data, labels};
    assert_int_equal(interp_legal_stats_add(ls, &st, legal, err), 0);
    interp_acts *a = NULL;
    assert_int_equal(interp_acts_new(&a, &syn_cfg, T, err), 0);
    for (int l = 0; l < 2; l++) {
        for (size_t i = 0; i < T * 5; i++) {
            post[i] = synth(g->index, 2, (uint64_t)l, i);
        }
        model_hook h = {MODEL_HOOK_MLP_POST, l};
        assert_int_equal(interp_acts_set(a, h, post, T * 5, err), 0);
    }
    assert_int_equal(interp_neuron_stats_add(ns, a, g->phases, err), 0);
    interp_acts_destroy(&a);
    free(data);
    free(legal);
    free(post);
}

/* Runs every pending task of the store as an executor would: load the work, compute the
 * partials of its games, complete it. specs[i] is the spec of sweep ids[i]. */
static void run_all(coordinator_store *s, const int64_t *ids, coordinator_spec *const *specs,
                    size_t n_sweeps) {
    coordinator_lease *l = NULL;
    size_t n = 0;
    assert_int_equal(coordinator_tasks_claim(s, "w", 10000, 0, 1, &l, &n, err), 0);
    assert_true(n > 0);
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < n_sweeps && ids[k] != l[i].sweep_id) {
            k++;
        }
        assert_true(k < n_sweeps);
        coordinator_work *w = NULL;
        if (coordinator_work_load(s, specs[k], l[i].job_id, l[i].body, l[i].body_len, &w, err) !=
            0) {
            fail_msg("work %s: %s", l[i].key, err);
        }
        interp_legal_stats *ls = NULL;
        interp_neuron_stats *ns = NULL;
        assert_int_equal(interp_legal_stats_new(&ls, 3, comp_labels, MAX_T, err), 0);
        assert_int_equal(interp_neuron_stats_new(&ns, &syn_cfg, 15, -15, err), 0);
        for (size_t g = 0; g < w->n_games; g++) {
            add_game(ls, ns, &w->games[g]);
        }
        coordinator_results r = {0};
        if (w->kind == COORDINATOR_ANALYSIS_LEGAL_STATS) {
            r.legal = ls;
        } else {
            assert_int_equal(w->kind, COORDINATOR_ANALYSIS_NEURON_STATS);
            r.neurons = ns;
        }
        coordinator_fence f;
        assert_int_equal(coordinator_task_complete(s, l[i].task_id, l[i].epoch, &r, &f, err), 0);
        assert_int_equal(f, COORDINATOR_STORED);
        interp_legal_stats_destroy(&ls);
        interp_neuron_stats_destroy(&ns);
        coordinator_work_destroy(&w);
    }
    coordinator_leases_free(l, n);
}

static bool close_rel(double a, double b) {
    return fabs(a - b) <= 1e-12 * fmax(fabs(a), fabs(b));
}

/* Compares sweep `name`'s views, row by row, with the one-pass partials of all games. */
static void check_views(coordinator_store *s, const char *name, const interp_legal_stats *ls,
                        const interp_neuron_stats *ns) {
    sqlite3 *db = coordinator_store_db(s);
    static const char *const stats[4] = {"min_legal", "max_illegal", "mean_legal", "mean_illegal"};
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT component, pos, statistic, value, count, min, max "
                                        "FROM legal_stats WHERE sweep = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    size_t rows = 0, cells = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        const char *comp = (const char *)sqlite3_column_text(st, 0);
        size_t c = 0;
        while (c < 3 && strcmp(comp_labels[c], comp) != 0) {
            c++;
        }
        assert_true(c < 3);
        size_t t = (size_t)sqlite3_column_int64(st, 1);
        int k = 0;
        while (k < 4 && strcmp(stats[k], (const char *)sqlite3_column_text(st, 2)) != 0) {
            k++;
        }
        assert_true(k < 4);
        size_t at = (size_t)k * 3 * MAX_T + c * MAX_T + t;
        uint64_t count = ls->count[c * MAX_T + t];
        assert_int_equal(sqlite3_column_int64(st, 4), (int64_t)count);
        assert_true(close_rel(sqlite3_column_double(st, 3), ls->sum[at] / (double)count));
        assert_true(sqlite3_column_double(st, 5) == (double)ls->min[at]);
        assert_true(sqlite3_column_double(st, 6) == (double)ls->max[at]);
    }
    sqlite3_finalize(st);
    for (size_t i = 0; i < 3 * MAX_T; i++) {
        cells += ls->count[i] > 0;
    }
    assert_true(cells > 0);
    assert_int_equal(rows, 4 * cells);

    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT layer, neuron, phase, mean, count FROM "
                                        "neuron_stats WHERE sweep = ?",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    static const char *const groups[6] = {"all",      "slice",      "white_from",
                                          "white_to", "black_from", "black_to"};
    rows = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        rows++;
        size_t l = (size_t)sqlite3_column_int64(st, 0), m = (size_t)sqlite3_column_int64(st, 1);
        int g = 0;
        while (g < 6 && strcmp(groups[g], (const char *)sqlite3_column_text(st, 2)) != 0) {
            g++;
        }
        assert_true(g < 6);
        assert_int_equal(sqlite3_column_int64(st, 4), (int64_t)ns->count[g]);
        assert_true(close_rel(sqlite3_column_double(st, 3),
                              ns->sum[((size_t)g * 2 + l) * 5 + m] / (double)ns->count[g]));
    }
    sqlite3_finalize(st);
    assert_int_equal(rows, 6 * 2 * 5);
}

/* The same games split three ways (4, 11 and all games per task): the views of all three are
 * the one-pass partials', and so equal to each other. */
static void test_exact_merge(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("merge.db");
    load_refs(s);
    const char *an = "{\"kind\":\"legal_stats\",\"components\":[\"embeds\"]},"
                     "{\"kind\":\"neuron_stats\",\"by\":\"phase\"}";
    const char *names[3] = {"by4", "by11", "one"};
    const size_t sizes[3] = {4, 11, 1000};
    int64_t ids[3];
    coordinator_spec *specs[3];
    size_t n_tasks[3];
    for (int i = 0; i < 3; i++) {
        ids[i] = submit(s, names[i], N_GAMES, an, &specs[i]);
        coordinator_plan_opts o = {0, sizes[i]};
        assert_int_equal(coordinator_plan_sweep(s, ids[i], specs[i], &o, &n_tasks[i], err), 0);
    }
    assert_int_equal(n_tasks[0], 2 * 7);
    assert_int_equal(n_tasks[1], 2 * 3);
    assert_int_equal(n_tasks[2], 2 * 1);
    run_all(s, ids, specs, 3);
    assert_int_equal(query_int(s, "SELECT COUNT(*) FROM task WHERE state <> 'done'"), 0);

    /* one pass over all games, in memory */
    interp_legal_stats *ls = NULL;
    interp_neuron_stats *ns = NULL;
    assert_int_equal(interp_legal_stats_new(&ls, 3, comp_labels, MAX_T, err), 0);
    assert_int_equal(interp_neuron_stats_new(&ns, &syn_cfg, 15, -15, err), 0);
    for (size_t g = 0; g < N_GAMES; g++) {
        chess_token *tok = NULL;
        size_t nt = 0;
        assert_int_equal(chess_uci_split(refs[g].uci, &tok, &nt, err), 0);
        uint8_t phases[MAX_T];
        const char *texts[MAX_T];
        for (size_t t = 0; t < nt; t++) {
            phases[t] = (uint8_t)tok[t].phase;
            texts[t] = tok[t].text;
        }
        coordinator_work_game wg = {g, refs[g].uci, nt, texts, phases};
        add_game(ls, ns, &wg);
        free(tok);
    }
    for (int i = 0; i < 3; i++) {
        check_views(s, names[i], ls, ns);
    }
    interp_legal_stats_destroy(&ls);
    interp_neuron_stats_destroy(&ns);
    for (int i = 0; i < 3; i++) {
        coordinator_spec_destroy(&specs[i]);
    }
    free_refs();
    coordinator_store_close(&s);
}

/* A job read by the work loader inside a batch that is rolled back is not remembered: the
 * next sweep planned gets the same job id, and its work loads with its own spec. */
static void test_job_read_rolled_back(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("rollback.db");
    coordinator_spec *specs[2] = {NULL, NULL};
    const char *an[2] = {"{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[10],"
                         "\"corrupt\":{\"position\":\"last\",\"with\":\"q\"},"
                         "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\","
                         "\"corrupt_top\"]}}",
                         "{\"kind\":\"legal_stats\",\"components\":[\"embeds\"]}"};
    const coordinator_analysis_kind kinds[2] = {COORDINATOR_ANALYSIS_PATCH,
                                                COORDINATOR_ANALYSIS_LEGAL_STATS};
    int64_t jobs[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(coordinator_store_batch_begin(s, err), 0);
        int64_t sw = submit(s, "again", N_GAMES, an[i], &specs[i]);
        coordinator_plan_opts o = {0, 4};
        size_t n_tasks = 0;
        assert_int_equal(coordinator_plan_sweep(s, sw, specs[i], &o, &n_tasks, err), 0);
        assert_int_equal(coordinator_job_find(s, sw, 0, &jobs[i], err), 0);
        coordinator_lease *l = NULL;
        size_t nl = 0;
        assert_int_equal(coordinator_tasks_claim(s, "w", 1, 0, 1, &l, &nl, err), 0);
        assert_int_equal(nl, 1);
        assert_int_equal(l[0].job_id, jobs[i]);
        coordinator_work *w = NULL;
        if (coordinator_work_load(s, specs[i], jobs[i], l[0].body, l[0].body_len, &w, err) != 0) {
            fail_msg("work of sweep %d: %s", i, err);
        }
        assert_int_equal(w->kind, kinds[i]);
        coordinator_work_destroy(&w);
        coordinator_leases_free(l, nl);
        if (i == 0) {
            coordinator_store_batch_rollback(s);
        } else {
            assert_int_equal(coordinator_store_batch_commit(s, err), 0);
        }
    }
    assert_int_equal(jobs[1], jobs[0]); /* the id was given again, to another job */
    for (int i = 0; i < 2; i++) {
        coordinator_spec_destroy(&specs[i]);
    }
    coordinator_store_close(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_patch_sizes),
        cmocka_unit_test(test_pairs_are_legal_alternatives),
        cmocka_unit_test(test_random_draw_split_free),
        cmocka_unit_test(test_corrupt_by_game_and_token),
        cmocka_unit_test(test_aggregate_chunks),
        cmocka_unit_test(test_exact_merge),
        cmocka_unit_test(test_job_read_rolled_back),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
