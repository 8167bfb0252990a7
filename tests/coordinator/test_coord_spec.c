/*
 * test_coord_spec: the sweep specification (docs/SWEEP.md). The example parses into the
 * documented struct; every bad field is refused with its JSON path in the message; unknown keys
 * are refused with theirs; canonical text round-trips; a refused submission creates nothing in
 * the store; the model-dependent checks and metric resolution.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "coordinator/coordinator.h"

static const char *example =
    "{\"name\": \"cutoff-patching\", \"model\": \"models/chess-tiny\", \"dataset\": \"random-1k\","
    " \"games\": [0, 1000],"
    " \"analyses\": ["
    "  {\"kind\": \"patch\", \"patch\": \"block_every\", \"cutoffs\": {\"from\": 20, \"to\": 120,"
    "   \"step\": 10},"
    "   \"corrupt\": {\"position\": \"last\", \"with\": \"each_legal_alternative\"},"
    "   \"metric\": {\"kind\": \"logit_diff\", \"tokens\": [\"clean_top\", \"corrupt_top\"],"
    "   \"normalize\": true}},"
    "  {\"kind\": \"legal_stats\", \"components\": [\"embeds\", \"heads\", \"mlps\"]},"
    "  {\"kind\": \"neuron_stats\", \"by\": \"phase\"},"
    "  {\"kind\": \"predictions\", \"top_k\": 5}]}";

static coordinator_spec *parse_ok(const char *json) {
    char err[COMMON_ERR_LEN] = "";
    coordinator_spec *s = NULL;
    int rc = coordinator_spec_parse(&s, json, strlen(json), err);
    if (rc != 0) {
        fail_msg("parse failed: %s\n%s", err, json);
    }
    return s;
}

static void test_example(void **state) {
    (void)state;
    coordinator_spec *s = parse_ok(example);
    assert_string_equal(s->name, "cutoff-patching");
    assert_string_equal(s->model, "models/chess-tiny");
    assert_string_equal(s->dataset, "random-1k");
    assert_int_equal(s->game_from, 0);
    assert_int_equal(s->game_to, 1000);
    assert_int_equal(s->n_analyses, 4);

    const coordinator_analysis *p = &s->analyses[0];
    assert_int_equal(p->kind, COORDINATOR_ANALYSIS_PATCH);
    assert_int_equal(p->patch.kind, INTERP_PATCH_BLOCK_EVERY);
    assert_int_equal(p->patch.n_cutoffs, 11); /* 20, 30, ..., 120: both ends included */
    for (size_t i = 0; i < 11; i++) {
        assert_int_equal(p->patch.cutoffs[i], 20 + 10 * i);
    }
    assert_int_equal(p->patch.corrupt.with, COORDINATOR_CORRUPT_EACH_LEGAL);
    assert_int_equal(p->patch.corrupt.position, -1);
    assert_int_equal(p->patch.metric.kind, INTERP_METRIC_LOGIT_DIFF);
    assert_int_equal(p->patch.metric.n_tokens, 2);
    assert_int_equal(p->patch.metric.tokens[0].kind, COORDINATOR_TOKEN_CLEAN_TOP);
    assert_int_equal(p->patch.metric.tokens[1].kind, COORDINATOR_TOKEN_CORRUPT_TOP);
    assert_true(p->patch.metric.normalize);

    assert_int_equal(s->analyses[1].kind, COORDINATOR_ANALYSIS_LEGAL_STATS);
    assert_int_equal(s->analyses[1].legal.components,
                     COORDINATOR_COMP_EMBEDS | COORDINATOR_COMP_HEADS | COORDINATOR_COMP_MLPS);
    assert_int_equal(s->analyses[2].kind, COORDINATOR_ANALYSIS_NEURON_STATS);
    assert_int_equal(s->analyses[2].neuron.slice_begin, 15);
    assert_int_equal(s->analyses[2].neuron.slice_end, -15);
    assert_int_equal(s->analyses[3].kind, COORDINATOR_ANALYSIS_PREDICTIONS);
    assert_int_equal(s->analyses[3].predictions.top_k, 5);

    /* the canonical text is compact with sorted keys */
    assert_non_null(strstr(s->canonical, "{\"analyses\":[{\"corrupt\":"));
    assert_null(strstr(s->canonical, ": "));
    assert_string_equal(s->analyses[3].json, "{\"kind\":\"predictions\",\"top_k\":5}");
    coordinator_spec_destroy(&s);
    assert_null(s);
    coordinator_spec_destroy(&s); /* NULL is fine */
}

/* Parsing the canonical text gives the same spec and the same canonical text. */
static void test_round_trip(void **state) {
    (void)state;
    const char *variants[] = {
        example,
        "{\"name\":\"a\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[5,6],\"analyses\":[{\"kind\":"
        "\"patch\",\"patch\":\"attn_head_out_by_pos\",\"cutoffs\":[28,40],\"corrupt\":{"
        "\"position\":"
        "27,\"with\":\"d5\"},\"metric\":{\"kind\":\"logit\",\"tokens\":[\"e4\"]}}]}",
        "{\"name\":\"b\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,9],\"analyses\":[{\"kind\":"
        "\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":{\"from\":30,\"to\":30,\"step\":1},"
        "\"corrupt\":{\"with\":\"random_legal_alternative\",\"seed\":7,\"position\":-3},"
        "\"metric\":{\"kind\":\"legal_mass\"}},{\"kind\":\"patch\",\"patch\":\"mlp_out\","
        "\"cutoffs\":[10],\"corrupt\":{\"with\":{\"game\":3}},\"metric\":{\"kind\":\"logprob\","
        "\"tokens\":[\"q\"],\"normalize\":false}},{\"kind\":\"neuron_stats\",\"by\":\"phase\","
        "\"slice\":[10,-10]}]}",
    };
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        coordinator_spec *a = parse_ok(variants[v]);
        coordinator_spec *b = parse_ok(a->canonical);
        assert_string_equal(a->canonical, b->canonical);
        assert_int_equal(a->n_analyses, b->n_analyses);
        assert_int_equal(a->game_from, b->game_from);
        assert_int_equal(a->game_to, b->game_to);
        for (size_t i = 0; i < a->n_analyses; i++) {
            const coordinator_analysis *x = &a->analyses[i], *y = &b->analyses[i];
            assert_int_equal(x->kind, y->kind);
            assert_string_equal(x->json, y->json);
            assert_int_equal(x->patch.n_cutoffs, y->patch.n_cutoffs);
            for (size_t c = 0; c < x->patch.n_cutoffs; c++) {
                assert_int_equal(x->patch.cutoffs[c], y->patch.cutoffs[c]);
            }
            assert_memory_equal(&x->patch.corrupt, &y->patch.corrupt, sizeof x->patch.corrupt);
            assert_int_equal(x->patch.metric.kind, y->patch.metric.kind);
            assert_int_equal(x->neuron.slice_begin, y->neuron.slice_begin);
        }
        if (v == 1) {
            assert_int_equal(a->analyses[0].patch.kind, INTERP_PATCH_HEAD_OUT_BY_POS);
            assert_int_equal(a->analyses[0].patch.corrupt.with, COORDINATOR_CORRUPT_TOKEN);
            assert_string_equal(a->analyses[0].patch.corrupt.token, "d5");
            assert_int_equal(a->analyses[0].patch.corrupt.position, 27);
        }
        if (v == 2) {
            assert_int_equal(a->analyses[0].patch.n_cutoffs, 1);
            assert_int_equal(a->analyses[0].patch.corrupt.with, COORDINATOR_CORRUPT_RANDOM_LEGAL);
            assert_int_equal(a->analyses[0].patch.corrupt.seed, 7);
            assert_int_equal(a->analyses[0].patch.corrupt.position, -3);
            assert_int_equal(a->analyses[0].patch.metric.n_tokens, 0);
            assert_int_equal(a->analyses[1].patch.corrupt.with, COORDINATOR_CORRUPT_GAME);
            assert_int_equal(a->analyses[1].patch.corrupt.game, 3);
            assert_string_equal(a->analyses[1].patch.metric.tokens[0].text, "q");
            assert_int_equal(a->analyses[2].neuron.slice_begin, 10);
        }
        coordinator_spec_destroy(&a);
        coordinator_spec_destroy(&b);
    }
}

/* A bad spec: the document with one field replaced, and the message it must give. */
typedef struct bad_case {
    const char *json;
    const char *message; /* the beginning of the error: the path and the reason */
} bad_case;

#define HEAD "{\"name\":\"s\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,10],"
#define PATCH(body) HEAD "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":1}," body "]}"
#define OKP "\"kind\":\"patch\",\"patch\":\"block_every\""
#define OKC "\"cutoffs\":{\"from\":20,\"to\":40,\"step\":10}"
#define OKR "\"corrupt\":{\"with\":\"each_legal_alternative\"}"
#define OKM "\"metric\":{\"kind\":\"logit\",\"tokens\":[\"e4\"]}"

static const bad_case bad_cases[] = {
    {"[1, 2]", "spec: must be an object"},
    {"{\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,1],\"analyses\":[]}", "name: required"},
    {HEAD "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":1}],\"nmae\":\"x\"}",
     "nmae: unknown key"},
    {"{\"name\":\"a b\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,1],\"analyses\":[]}",
     "name: must be 1..128 characters"},
    {"{\"name\":7,\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,1],\"analyses\":[]}",
     "name: must be a string"},
    {"{\"name\":\"a\",\"model\":\"\",\"dataset\":\"d\",\"games\":[0,1],\"analyses\":[]}",
     "model: must not be empty"},
    {"{\"name\":\"a\",\"model\":\"m\",\"dataset\":\"d/x\",\"games\":[0,1],\"analyses\":[]}",
     "dataset: must be 1..128"},
    {"{\"name\":\"a\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0],\"analyses\":[]}",
     "games: must be [from, to]"},
    {"{\"name\":\"a\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[-1,3],\"analyses\":[]}",
     "games[0]: must be >= 0"},
    {"{\"name\":\"a\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,2.5],\"analyses\":[]}",
     "games[1]: must be an integer"},
    {"{\"name\":\"a\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[4,4],\"analyses\":[]}",
     "games[1]: must be > games[0]"},
    {HEAD "\"analyses\":[]}", "analyses: must be a non-empty array"},
    {HEAD "\"analyses\":{}}", "analyses: must be a non-empty array"},
    {HEAD "\"analyses\":[3]}", "analyses[0]: must be an object"},
    {HEAD "\"analyses\":[{\"top_k\":1}]}", "analyses[0].kind: required"},
    {HEAD "\"analyses\":[{\"kind\":\"plot\"}]}", "analyses[0].kind: must be \"patch\""},
    {PATCH("{" OKC "," OKR "," OKM ",\"kind\":\"patch\"}"), "analyses[1].patch: required"},
    {PATCH("{\"kind\":\"patch\",\"patch\":\"block_everything\"," OKC "," OKR "," OKM "}"),
     "analyses[1].patch: unknown patch kind 'block_everything'"},
    {PATCH("{" OKP "," OKR "," OKM "}"), "analyses[1].cutoffs: required"},
    {PATCH("{" OKP ",\"cutoffs\":{\"from\":20,\"to\":40,\"step\":0}," OKR "," OKM "}"),
     "analyses[1].cutoffs.step: must be > 0"},
    {PATCH("{" OKP ",\"cutoffs\":{\"from\":20,\"to\":40,\"step\":-2}," OKR "," OKM "}"),
     "analyses[1].cutoffs.step: must be > 0"},
    {PATCH("{" OKP ",\"cutoffs\":{\"from\":20,\"to\":10,\"step\":1}," OKR "," OKM "}"),
     "analyses[1].cutoffs.to: must be >= from (20)"},
    {PATCH("{" OKP ",\"cutoffs\":{\"from\":1,\"to\":10,\"step\":1}," OKR "," OKM "}"),
     "analyses[1].cutoffs.from: must be >= 2"},
    {PATCH("{" OKP ",\"cutoffs\":{\"from\":2,\"to\":70000,\"step\":1}," OKR "," OKM "}"),
     "analyses[1].cutoffs.to: must be <= 65536"},
    {PATCH("{" OKP ",\"cutoffs\":{\"from\":2,\"to\":10000,\"step\":1}," OKR "," OKM "}"),
     "analyses[1].cutoffs: more than 4096 cut-offs"},
    {PATCH("{" OKP ",\"cutoffs\":{\"from\":20,\"to\":40}," OKR "," OKM "}"),
     "analyses[1].cutoffs.step: required"},
    {PATCH("{" OKP ",\"cutoffs\":{\"from\":20,\"to\":40,\"step\":1,\"stop\":3}," OKR "," OKM "}"),
     "analyses[1].cutoffs.stop: unknown key"},
    {PATCH("{" OKP ",\"cutoffs\":[20,20]," OKR "," OKM "}"),
     "analyses[1].cutoffs[1]: must be greater than the cut-off before it"},
    {PATCH("{" OKP ",\"cutoffs\":[]," OKR "," OKM "}"), "analyses[1].cutoffs: must not be empty"},
    {PATCH("{" OKP ",\"cutoffs\":\"20:40\"," OKR "," OKM "}"),
     "analyses[1].cutoffs: must be an object"},
    {PATCH("{" OKP "," OKC "," OKM "}"), "analyses[1].corrupt: required"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"position\":\"last\"}," OKM "}"),
     "analyses[1].corrupt.with: required"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":\"every_legal\"}," OKM "}"),
     "analyses[1].corrupt.with: must be \"each_legal_alternative\""},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":\"i9\"}," OKM "}"),
     "analyses[1].corrupt.with: must be"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":{\"gmae\":1}}," OKM "}"),
     "analyses[1].corrupt.with.gmae: unknown key"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":{\"game\":-1}}," OKM "}"),
     "analyses[1].corrupt.with.game: must be >= 0"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":{\"game\":1},\"position\":3}," OKM "}"),
     "analyses[1].corrupt.position: not used when corrupting with another game"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":\"d5\",\"seed\":3}," OKM "}"),
     "analyses[1].corrupt.seed: only with \"random_legal_alternative\""},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":\"random_legal_alternative\",\"seed\":-3}," OKM
           "}"),
     "analyses[1].corrupt.seed: must be >= 0"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":\"d5\",\"position\":0}," OKM "}"),
     "analyses[1].corrupt.position: must not be 0"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":\"d5\",\"position\":20}," OKM "}"),
     "analyses[1].corrupt.position: must be < the smallest cut-off (20)"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":\"d5\",\"position\":-20}," OKM "}"),
     "analyses[1].corrupt.position: must be > -20"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":\"d5\",\"position\":\"first\"}," OKM "}"),
     "analyses[1].corrupt.position: must be \"last\" or a non-zero integer"},
    {PATCH("{" OKP "," OKC ",\"corrupt\":{\"with\":\"d5\",\"postion\":3}," OKM "}"),
     "analyses[1].corrupt.postion: unknown key"},
    {PATCH("{" OKP "," OKC "," OKR "}"), "analyses[1].metric: required"},
    {PATCH("{" OKP "," OKC "," OKR ",\"metric\":{\"kind\":\"kl\"}}"),
     "analyses[1].metric.kind: must be \"logit\""},
    {PATCH("{" OKP "," OKC "," OKR ",\"metric\":{\"tokens\":[]}}"),
     "analyses[1].metric.kind: required"},
    {PATCH("{" OKP "," OKC "," OKR ",\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"e4\"]}}"),
     "analyses[1].metric.tokens: logit_diff takes 2 tokens, got 1"},
    {PATCH("{" OKP "," OKC "," OKR ",\"metric\":{\"kind\":\"logit\"}}"),
     "analyses[1].metric.tokens: logit takes 1 token, got 0"},
    {PATCH("{" OKP "," OKC "," OKR ",\"metric\":{\"kind\":\"legal_mass\",\"tokens\":[\"e4\"]}}"),
     "analyses[1].metric.tokens: legal_mass takes 0 tokens, got 1"},
    {PATCH("{" OKP "," OKC "," OKR ",\"metric\":{\"kind\":\"logit\",\"tokens\":\"e4\"}}"),
     "analyses[1].metric.tokens: must be an array"},
    {PATCH("{" OKP "," OKC "," OKR
           ",\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"e4\",\"top\"]}}"),
     "analyses[1].metric.tokens[1]: must be a square"},
    {PATCH("{" OKP "," OKC "," OKR
           ",\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\",\"clean_top\"]}}"),
     "analyses[1].metric.tokens[1]: must differ from tokens[0]"},
    {PATCH("{" OKP "," OKC "," OKR
           ",\"metric\":{\"kind\":\"logit\",\"tokens\":[\"e4\"],\"normalize\":1}}"),
     "analyses[1].metric.normalize: must be true or false"},
    {PATCH("{" OKP "," OKC "," OKR
           ",\"metric\":{\"kind\":\"logit\",\"tokens\":[\"e4\"],\"normalise\":true}}"),
     "analyses[1].metric.normalise: unknown key"},
    {PATCH("{" OKP "," OKC "," OKR "," OKM ",\"top_k\":3}"), "analyses[1].top_k: unknown key"},
    {HEAD "\"analyses\":[{\"kind\":\"legal_stats\"}]}", "analyses[0].components: required"},
    {HEAD "\"analyses\":[{\"kind\":\"legal_stats\",\"components\":[]}]}",
     "analyses[0].components: must be a non-empty array"},
    {HEAD "\"analyses\":[{\"kind\":\"legal_stats\",\"components\":[\"heads\",\"mlp\"]}]}",
     "analyses[0].components[1]: must be \"embeds\""},
    {HEAD "\"analyses\":[{\"kind\":\"legal_stats\",\"components\":[\"heads\",\"heads\"]}]}",
     "analyses[0].components[1]: 'heads' given twice"},
    {HEAD "\"analyses\":[{\"kind\":\"legal_stats\",\"components\":[\"neurons\"]}]}",
     "analyses[0].components[0]: not supported"},
    {HEAD "\"analyses\":[{\"kind\":\"neuron_stats\"}]}", "analyses[0].by: required"},
    {HEAD "\"analyses\":[{\"kind\":\"neuron_stats\",\"by\":\"layer\"}]}",
     "analyses[0].by: must be \"phase\""},
    {HEAD "\"analyses\":[{\"kind\":\"neuron_stats\",\"by\":\"phase\",\"slice\":[15]}]}",
     "analyses[0].slice: must be [begin, end]"},
    {HEAD "\"analyses\":[{\"kind\":\"neuron_stats\",\"by\":\"phase\",\"slice\":[15,\"x\"]}]}",
     "analyses[0].slice[1]: must be an integer"},
    {HEAD "\"analyses\":[{\"kind\":\"predictions\"}]}", "analyses[0].top_k: required"},
    {HEAD "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":0}]}",
     "analyses[0].top_k: must be >= 1"},
    {HEAD "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":5000}]}",
     "analyses[0].top_k: must be <= 4096"},
    {HEAD "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":5,\"topk\":5}]}",
     "analyses[0].topk: unknown key"},
};

static void test_bad_fields(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        char err[COMMON_ERR_LEN] = "";
        coordinator_spec *s = NULL;
        const char *json = bad_cases[i].json;
        int rc = coordinator_spec_parse(&s, json, strlen(json), err);
        if (rc != COMMON_ERR_INVALID ||
            strncmp(err, bad_cases[i].message, strlen(bad_cases[i].message)) != 0) {
            fail_msg("case %zu: rc %d, message '%s', expected '%s...'\n%s", i, rc, err,
                     bad_cases[i].message, json);
        }
        assert_null(s);
    }
}

static void test_not_json(void **state) {
    (void)state;
    const char *texts[] = {"", "{\"name\": \"a\",", "{\"name\":\"a\",\"name\":\"b\"}", "nul"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char err[COMMON_ERR_LEN] = "";
        coordinator_spec *s = NULL;
        assert_int_equal(coordinator_spec_parse(&s, texts[i], strlen(texts[i]), err),
                         COMMON_ERR_PARSE);
        assert_non_null(strstr(err, "spec: line "));
        assert_null(s);
    }
}

static void test_check_model(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "";
    coordinator_spec *s = parse_ok(example);
    assert_int_equal(coordinator_spec_check_model(s, 127, 77, err), 0);
    assert_int_equal(coordinator_spec_check_model(s, 100, 77, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "analyses[0].cutoffs: cut-off 120"));
    assert_int_equal(coordinator_spec_check_model(s, 127, 4, err), COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "analyses[3].top_k: must be <= the model's vocabulary (4)"));
    coordinator_spec_destroy(&s);
}

static void test_metric_resolve(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN] = "", out[32];
    coordinator_spec *s = parse_ok(example);
    const coordinator_metric_spec *m = &s->analyses[0].patch.metric;
    assert_int_equal(coordinator_metric_resolve(m, "e4", "d5", out, sizeof out, err), 0);
    assert_string_equal(out, "logit_diff:e4,d5");
    assert_int_equal(coordinator_metric_resolve(m, "e4", NULL, out, sizeof out, err),
                     COMMON_ERR_INVALID);
    assert_int_equal(coordinator_metric_resolve(m, "e4", "d5", out, 8, err), COMMON_ERR_INVALID);
    coordinator_metric_spec legal = {.kind = INTERP_METRIC_LEGAL_MASS};
    assert_int_equal(coordinator_metric_resolve(&legal, NULL, NULL, out, sizeof out, err), 0);
    assert_string_equal(out, "legal_mass");
    coordinator_metric_spec lp = {.kind = INTERP_METRIC_LOGPROB, .n_tokens = 1};
    lp.tokens[0] = (coordinator_token_ref){COORDINATOR_TOKEN_TEXT, "q"};
    assert_int_equal(coordinator_metric_resolve(&lp, NULL, NULL, out, sizeof out, err), 0);
    assert_string_equal(out, "logprob:q");
    coordinator_spec_destroy(&s);
}

static int count_rows(sqlite3 *db, const char *table) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", table);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* A refused submission leaves no sweep and no job behind; a valid one after it works. */
static void test_refused_submit_creates_nothing(void **state) {
    (void)state;
    char path[512], err[COMMON_ERR_LEN] = "";
    const char *tmp = getenv("CHESSLENS_TEST_TMPDIR");
    snprintf(path, sizeof path, "%s/refused.db", tmp != NULL ? tmp : "/tmp");
    remove(path);
    coordinator_store *s = NULL;
    assert_int_equal(coordinator_store_open(&s, path, 0, err), 0);
    int64_t ds;
    assert_int_equal(coordinator_dataset_create(s, "d", "test", false, &ds, err), 0);
    coordinator_game_in g = {"e2e4 e7e5", NULL, 0};
    coordinator_import_stats st = {0};
    assert_int_equal(coordinator_games_add(s, ds, "test", &g, 1, 0, &st, NULL, err), 0);

    const char *bad = HEAD "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":0}]}";
    int64_t id = -1;
    assert_int_equal(coordinator_sweep_submit(s, bad, strlen(bad), "sub-1", 0, &id, NULL, err),
                     COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "analyses[0].top_k"));
    assert_int_equal(id, -1);
    /* the dataset does not hold games [0, 10): refused too, naming "games" */
    const char *big = HEAD "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":2}]}";
    assert_int_equal(coordinator_sweep_submit(s, big, strlen(big), "sub-1", 0, &id, NULL, err),
                     COMMON_ERR_INVALID);
    assert_true(strncmp(err, "games: ", 7) == 0);
    /* an unknown dataset */
    const char *nods = "{\"name\":\"s\",\"model\":\"m\",\"dataset\":\"nope\",\"games\":[0,1],"
                       "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":2}]}";
    assert_int_equal(coordinator_sweep_submit(s, nods, strlen(nods), "sub-1", 0, &id, NULL, err),
                     COMMON_ERR_NOT_FOUND);
    sqlite3 *db = coordinator_store_db(s);
    assert_int_equal(count_rows(db, "sweep"), 0);
    assert_int_equal(count_rows(db, "job"), 0);

    const char *good = "{\"name\":\"s\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,1],"
                       "\"analyses\":[{\"kind\":\"predictions\",\"top_k\":2}]}";
    bool existed = true;
    assert_int_equal(
        coordinator_sweep_submit(s, good, strlen(good), "sub-1", 0, &id, &existed, err), 0);
    assert_false(existed);
    assert_int_equal(count_rows(db, "sweep"), 1);
    assert_int_equal(count_rows(db, "job"), 1);
    coordinator_store_close(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_example),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_check_model),
        cmocka_unit_test(test_metric_resolve),
        cmocka_unit_test(test_refused_submit_creates_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
