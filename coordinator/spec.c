/*
 * spec: the sweep specification (docs/SWEEP.md) read from JSON with jansson into a
 * coordinator_spec. Validation is the point of this file: a sweep runs for hours, so a typo or
 * an out-of-range value must be refused at submit time, before anything is stored, with the
 * JSON path of the field ("analyses[1].cutoffs.step: must be > 0"). Unknown keys are refused
 * too, so that a misspelt option is never silently ignored. Range checks that need the model
 * (cut-offs against n_ctx, top_k against the vocabulary) are in coordinator_spec_check_model.
 */
#include <assert.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "coordinator/coordinator.h"

#define PATH_MAX_LEN 128

/* "PATH: message" into err; returns COMMON_ERR_INVALID. */
static int bad(char *err, const char *path, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int bad(char *err, const char *path, const char *fmt, ...) {
    if (err != NULL) {
        int k = snprintf(err, COMMON_ERR_LEN, "%s: ", path);
        if (k >= 0 && k < COMMON_ERR_LEN) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(err + k, (size_t)(COMMON_ERR_LEN - k), fmt, ap);
            va_end(ap);
        }
    }
    return COMMON_ERR_INVALID;
}

/* path + ".key" (or "key" at the root). */
static void join_key(char *out, const char *path, const char *key) {
    /* a path longer than the buffer is cut short; the message stays readable */
    if (snprintf(out, PATH_MAX_LEN, "%s%s%s", path, path[0] != '\0' ? "." : "", key) < 0) {
        out[0] = '\0';
    }
}

static void join_index(char *out, const char *path, size_t i) {
    if (snprintf(out, PATH_MAX_LEN, "%s[%zu]", path, i) < 0) {
        out[0] = '\0';
    }
}

/* Refuses keys of obj that are not in allowed (NULL-terminated). */
static int check_keys(json_t *obj, const char *path, const char *const *allowed, char *err) {
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        (void)value;
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL && !known; i++) {
            known = strcmp(key, allowed[i]) == 0;
        }
        if (!known) {
            char p[PATH_MAX_LEN];
            join_key(p, path, key);
            return bad(err, p, "unknown key");
        }
    }
    return 0;
}

static int need_object(json_t *v, const char *path, char *err) {
    return json_is_object(v) ? 0 : bad(err, path, "must be an object");
}

/* A member that must be present. */
static int member(json_t *obj, const char *path, const char *key, json_t **out, char *err) {
    *out = json_object_get(obj, key);
    if (*out == NULL) {
        char p[PATH_MAX_LEN];
        join_key(p, path, key);
        return bad(err, p, "required");
    }
    return 0;
}

static int get_int(json_t *v, const char *path, long long lo, long long hi, long long *out,
                   char *err) {
    if (!json_is_integer(v)) {
        return bad(err, path, "must be an integer");
    }
    long long x = json_integer_value(v);
    if (x < lo) {
        return bad(err, path, "must be >= %lld", lo);
    }
    if (x > hi) {
        return bad(err, path, "must be <= %lld", hi);
    }
    *out = x;
    return 0;
}

static int get_string(json_t *v, const char *path, const char **out, char *err) {
    if (!json_is_string(v)) {
        return bad(err, path, "must be a string");
    }
    *out = json_string_value(v);
    return 0;
}

static int dup_string(const char *s, char **out, char *err) {
    *out = strdup(s);
    return *out != NULL ? 0 : common_fail(err, COMMON_ERR_NOMEM, "spec: out of memory");
}

bool coordinator_name_valid(const char *name) {
    size_t n = name != NULL ? strlen(name) : 0;
    if (n == 0 || n > COORDINATOR_MAX_NAME) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

/* A token text of the model's vocabulary other than `<s>`: a square or a promotion letter. */
static bool token_text_valid(const char *t) {
    size_t n = strlen(t);
    if (n == 2) {
        return chess_square_parse(t) >= 0;
    }
    return n == 1 && strchr("qrbn", t[0]) != NULL;
}

const char *coordinator_analysis_kind_name(coordinator_analysis_kind k) {
    switch (k) {
    case COORDINATOR_ANALYSIS_PATCH:
        return "patch";
    case COORDINATOR_ANALYSIS_LEGAL_STATS:
        return "legal_stats";
    case COORDINATOR_ANALYSIS_NEURON_STATS:
        return "neuron_stats";
    case COORDINATOR_ANALYSIS_PREDICTIONS:
        return "predictions";
    }
    return "?";
}

/* ---- patch ---- */

static int parse_cutoffs(json_t *v, const char *path, coordinator_analysis *a, char *err) {
    char p[PATH_MAX_LEN];
    long long from = 0, to = 0, step = 1;
    if (json_is_array(v)) {
        size_t n = json_array_size(v);
        if (n == 0) {
            return bad(err, path, "must not be empty");
        }
        if (n > COORDINATOR_MAX_CUTOFFS) {
            return bad(err, path, "more than %d cut-offs", COORDINATOR_MAX_CUTOFFS);
        }
        a->patch.cutoffs = malloc(n * sizeof *a->patch.cutoffs);
        if (a->patch.cutoffs == NULL) {
            return common_fail(err, COMMON_ERR_NOMEM, "spec: out of memory");
        }
        for (size_t i = 0; i < n; i++) {
            long long c = 0;
            join_index(p, path, i);
            int rc = get_int(json_array_get(v, i), p, 2, COORDINATOR_MAX_CUTOFF, &c, err);
            if (rc != 0) {
                return rc;
            }
            if (i > 0 && (size_t)c <= a->patch.cutoffs[i - 1]) {
                return bad(err, p, "must be greater than the cut-off before it (%zu)",
                           a->patch.cutoffs[i - 1]);
            }
            a->patch.cutoffs[i] = (size_t)c;
            a->patch.n_cutoffs = i + 1;
        }
        return 0;
    }
    if (!json_is_object(v)) {
        return bad(err, path, "must be an object {from, to, step} or an array of cut-offs");
    }
    static const char *const keys[] = {"from", "to", "step", NULL};
    int rc = check_keys(v, path, keys, err);
    json_t *m;
    if (rc == 0 && (rc = member(v, path, "from", &m, err)) == 0) {
        join_key(p, path, "from");
        rc = get_int(m, p, 2, COORDINATOR_MAX_CUTOFF, &from, err);
    }
    if (rc == 0 && (rc = member(v, path, "to", &m, err)) == 0) {
        join_key(p, path, "to");
        rc = get_int(m, p, 2, COORDINATOR_MAX_CUTOFF, &to, err);
        if (rc == 0 && to < from) {
            rc = bad(err, p, "must be >= from (%lld)", from);
        }
    }
    if (rc == 0 && (rc = member(v, path, "step", &m, err)) == 0) {
        join_key(p, path, "step");
        if (!json_is_integer(m)) {
            rc = bad(err, p, "must be an integer");
        } else if ((step = json_integer_value(m)) <= 0) {
            rc = bad(err, p, "must be > 0");
        }
    }
    if (rc != 0) {
        return rc;
    }
    size_t n = (size_t)((to - from) / step) + 1;
    if (n > COORDINATOR_MAX_CUTOFFS) {
        return bad(err, path, "more than %d cut-offs", COORDINATOR_MAX_CUTOFFS);
    }
    a->patch.cutoffs = malloc(n * sizeof *a->patch.cutoffs);
    if (a->patch.cutoffs == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "spec: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        a->patch.cutoffs[i] = (size_t)(from + (long long)i * step);
    }
    a->patch.n_cutoffs = n;
    return 0;
}

static int parse_corrupt(json_t *v, const char *path, coordinator_analysis *a, char *err) {
    static const char *const keys[] = {"position", "with", "seed", NULL};
    char p[PATH_MAX_LEN];
    coordinator_corrupt_spec *c = &a->patch.corrupt;
    int rc = need_object(v, path, err);
    if (rc == 0) {
        rc = check_keys(v, path, keys, err);
    }
    json_t *with;
    if (rc == 0) {
        rc = member(v, path, "with", &with, err);
    }
    if (rc != 0) {
        return rc;
    }
    join_key(p, path, "with");
    if (json_is_object(with)) {
        static const char *const game_keys[] = {"game", NULL};
        json_t *g;
        long long game = 0;
        if ((rc = check_keys(with, p, game_keys, err)) != 0 ||
            (rc = member(with, p, "game", &g, err)) != 0) {
            return rc;
        }
        char pg[PATH_MAX_LEN];
        join_key(pg, p, "game");
        if ((rc = get_int(g, pg, 0, INT64_MAX, &game, err)) != 0) {
            return rc;
        }
        c->with = COORDINATOR_CORRUPT_GAME;
        c->game = (uint64_t)game;
    } else if (json_is_string(with)) {
        const char *w = json_string_value(with);
        if (strcmp(w, "each_legal_alternative") == 0) {
            c->with = COORDINATOR_CORRUPT_EACH_LEGAL;
        } else if (strcmp(w, "random_legal_alternative") == 0) {
            c->with = COORDINATOR_CORRUPT_RANDOM_LEGAL;
        } else if (token_text_valid(w)) {
            c->with = COORDINATOR_CORRUPT_TOKEN;
            snprintf(c->token, sizeof c->token, "%s", w);
        } else {
            return bad(err, p,
                       "must be \"each_legal_alternative\", \"random_legal_alternative\", a "
                       "square, a promotion letter or {\"game\": N}");
        }
    } else {
        return bad(err, p, "must be a string or {\"game\": N}");
    }

    json_t *seed = json_object_get(v, "seed");
    if (seed != NULL) {
        join_key(p, path, "seed");
        if (c->with != COORDINATOR_CORRUPT_RANDOM_LEGAL) {
            return bad(err, p, "only with \"random_legal_alternative\"");
        }
        long long s = 0;
        if ((rc = get_int(seed, p, 0, INT64_MAX, &s, err)) != 0) {
            return rc;
        }
        c->seed = (uint64_t)s;
    }

    json_t *pos = json_object_get(v, "position");
    join_key(p, path, "position");
    if (c->with == COORDINATOR_CORRUPT_GAME) {
        if (pos != NULL) {
            return bad(err, p, "not used when corrupting with another game");
        }
        c->position = 0;
        return 0;
    }
    size_t smallest = a->patch.cutoffs[0];
    if (pos == NULL || (json_is_string(pos) && strcmp(json_string_value(pos), "last") == 0)) {
        c->position = -1;
    } else if (json_is_integer(pos)) {
        long long x = json_integer_value(pos);
        if (x == 0) {
            return bad(err, p, "must not be 0 (the <s> token)");
        }
        if (x > 0 && (size_t)x >= smallest) {
            return bad(err, p, "must be < the smallest cut-off (%zu)", smallest);
        }
        if (x < 0 && (x < -(long long)COORDINATOR_MAX_CUTOFF || (size_t)(-x) >= smallest)) {
            return bad(err, p, "must be > -%zu (the smallest cut-off)", smallest);
        }
        c->position = (long)x;
    } else {
        return bad(err, p, "must be \"last\" or a non-zero integer");
    }
    return 0;
}

static int parse_token_ref(json_t *v, const char *path, coordinator_token_ref *t, char *err) {
    const char *s = NULL;
    int rc = get_string(v, path, &s, err);
    if (rc != 0) {
        return rc;
    }
    if (strcmp(s, "clean_top") == 0) {
        t->kind = COORDINATOR_TOKEN_CLEAN_TOP;
    } else if (strcmp(s, "corrupt_top") == 0) {
        t->kind = COORDINATOR_TOKEN_CORRUPT_TOP;
    } else if (token_text_valid(s)) {
        t->kind = COORDINATOR_TOKEN_TEXT;
        snprintf(t->text, sizeof t->text, "%s", s);
    } else {
        return bad(err, path,
                   "must be a square, a promotion letter, \"clean_top\" or "
                   "\"corrupt_top\"");
    }
    return 0;
}

static int parse_metric(json_t *v, const char *path, coordinator_metric_spec *m, char *err) {
    static const char *const keys[] = {"kind", "tokens", "normalize", NULL};
    static const struct {
        const char *name;
        interp_metric_kind kind;
        size_t n_tokens;
    } kinds[] = {{"logit", INTERP_METRIC_LOGIT, 1},
                 {"logit_diff", INTERP_METRIC_LOGIT_DIFF, 2},
                 {"logprob", INTERP_METRIC_LOGPROB, 1},
                 {"legal_mass", INTERP_METRIC_LEGAL_MASS, 0}};
    char p[PATH_MAX_LEN];
    int rc = need_object(v, path, err);
    json_t *kind;
    const char *name = NULL;
    if (rc == 0) {
        rc = check_keys(v, path, keys, err);
    }
    if (rc == 0 && (rc = member(v, path, "kind", &kind, err)) == 0) {
        join_key(p, path, "kind");
        rc = get_string(kind, p, &name, err);
    }
    if (rc != 0) {
        return rc;
    }
    size_t k = 0;
    while (k < sizeof kinds / sizeof kinds[0] && strcmp(kinds[k].name, name) != 0) {
        k++;
    }
    if (k == sizeof kinds / sizeof kinds[0]) {
        return bad(err, p, "must be \"logit\", \"logit_diff\", \"logprob\" or \"legal_mass\"");
    }
    m->kind = kinds[k].kind;
    m->n_tokens = kinds[k].n_tokens;

    json_t *tokens = json_object_get(v, "tokens");
    join_key(p, path, "tokens");
    size_t n = 0;
    if (tokens != NULL) {
        if (!json_is_array(tokens)) {
            return bad(err, p, "must be an array");
        }
        n = json_array_size(tokens);
    }
    if (n != m->n_tokens) {
        return bad(err, p, "%s takes %zu token%s, got %zu", name, m->n_tokens,
                   m->n_tokens == 1 ? "" : "s", n);
    }
    for (size_t i = 0; i < n; i++) {
        char pi[PATH_MAX_LEN];
        join_index(pi, p, i);
        if ((rc = parse_token_ref(json_array_get(tokens, i), pi, &m->tokens[i], err)) != 0) {
            return rc;
        }
    }
    if (n == 2 && m->tokens[0].kind == m->tokens[1].kind &&
        (m->tokens[0].kind != COORDINATOR_TOKEN_TEXT ||
         strcmp(m->tokens[0].text, m->tokens[1].text) == 0)) {
        char pi[PATH_MAX_LEN];
        join_index(pi, p, 1);
        return bad(err, pi, "must differ from tokens[0]");
    }

    json_t *norm = json_object_get(v, "normalize");
    if (norm != NULL) {
        if (!json_is_boolean(norm)) {
            join_key(p, path, "normalize");
            return bad(err, p, "must be true or false");
        }
        m->normalize = json_is_true(norm);
    }
    return 0;
}

static int parse_patch(json_t *v, const char *path, coordinator_analysis *a, char *err) {
    static const char *const keys[] = {"kind", "patch", "cutoffs", "corrupt", "metric", NULL};
    char p[PATH_MAX_LEN];
    int rc = check_keys(v, path, keys, err);
    json_t *m;
    const char *name = NULL;
    if (rc == 0 && (rc = member(v, path, "patch", &m, err)) == 0) {
        join_key(p, path, "patch");
        rc = get_string(m, p, &name, err);
        if (rc == 0) {
            int k = interp_patch_kind_parse(name);
            if (k < 0) {
                rc = bad(err, p,
                         "unknown patch kind '%s' (TL's names without get_act_patch_, "
                         "e.g. block_every)",
                         name);
            }
            a->patch.kind = (interp_patch_kind)k;
        }
    }
    if (rc == 0 && (rc = member(v, path, "cutoffs", &m, err)) == 0) {
        join_key(p, path, "cutoffs");
        rc = parse_cutoffs(m, p, a, err);
    }
    if (rc == 0 && (rc = member(v, path, "corrupt", &m, err)) == 0) {
        join_key(p, path, "corrupt");
        rc = parse_corrupt(m, p, a, err);
    }
    if (rc == 0 && (rc = member(v, path, "metric", &m, err)) == 0) {
        join_key(p, path, "metric");
        rc = parse_metric(m, p, &a->patch.metric, err);
    }
    return rc;
}

/* ---- aggregates and predictions ---- */

static int parse_legal(json_t *v, const char *path, coordinator_analysis *a, char *err) {
    static const char *const keys[] = {"kind", "components", NULL};
    static const struct {
        const char *name;
        unsigned bit;
    } comps[] = {{"embeds", COORDINATOR_COMP_EMBEDS},
                 {"attns", COORDINATOR_COMP_ATTNS},
                 {"mlps", COORDINATOR_COMP_MLPS},
                 {"heads", COORDINATOR_COMP_HEADS}};
    char p[PATH_MAX_LEN];
    int rc = check_keys(v, path, keys, err);
    json_t *list;
    if (rc == 0) {
        rc = member(v, path, "components", &list, err);
    }
    if (rc != 0) {
        return rc;
    }
    join_key(p, path, "components");
    if (!json_is_array(list) || json_array_size(list) == 0) {
        return bad(err, p, "must be a non-empty array");
    }
    for (size_t i = 0; i < json_array_size(list); i++) {
        char pi[PATH_MAX_LEN];
        const char *s = NULL;
        join_index(pi, p, i);
        if ((rc = get_string(json_array_get(list, i), pi, &s, err)) != 0) {
            return rc;
        }
        if (strcmp(s, "neurons") == 0) {
            return bad(err, pi,
                       "not supported: a neuron's logit contributions at every "
                       "position do not fit per game (use neuron_stats)");
        }
        size_t k = 0;
        while (k < sizeof comps / sizeof comps[0] && strcmp(comps[k].name, s) != 0) {
            k++;
        }
        if (k == sizeof comps / sizeof comps[0]) {
            return bad(err, pi, "must be \"embeds\", \"attns\", \"mlps\" or \"heads\"");
        }
        if (a->legal.components & comps[k].bit) {
            return bad(err, pi, "'%s' given twice", s);
        }
        a->legal.components |= comps[k].bit;
    }
    return 0;
}

static int parse_neurons(json_t *v, const char *path, coordinator_analysis *a, char *err) {
    static const char *const keys[] = {"kind", "by", "slice", NULL};
    char p[PATH_MAX_LEN];
    int rc = check_keys(v, path, keys, err);
    json_t *by;
    const char *s = NULL;
    if (rc == 0 && (rc = member(v, path, "by", &by, err)) == 0) {
        join_key(p, path, "by");
        rc = get_string(by, p, &s, err);
        if (rc == 0 && strcmp(s, "phase") != 0) {
            rc = bad(err, p, "must be \"phase\"");
        }
    }
    if (rc != 0) {
        return rc;
    }
    a->neuron.slice_begin = 15;
    a->neuron.slice_end = -15;
    json_t *slice = json_object_get(v, "slice");
    if (slice != NULL) {
        join_key(p, path, "slice");
        if (!json_is_array(slice) || json_array_size(slice) != 2) {
            return bad(err, p, "must be [begin, end] (a Python slice of positions)");
        }
        long long b = 0, e = 0;
        char pi[PATH_MAX_LEN];
        join_index(pi, p, 0);
        if ((rc = get_int(json_array_get(slice, 0), pi, -COORDINATOR_MAX_CUTOFF,
                          COORDINATOR_MAX_CUTOFF, &b, err)) != 0) {
            return rc;
        }
        join_index(pi, p, 1);
        if ((rc = get_int(json_array_get(slice, 1), pi, -COORDINATOR_MAX_CUTOFF,
                          COORDINATOR_MAX_CUTOFF, &e, err)) != 0) {
            return rc;
        }
        a->neuron.slice_begin = (long)b;
        a->neuron.slice_end = (long)e;
    }
    return 0;
}

static int parse_predictions(json_t *v, const char *path, coordinator_analysis *a, char *err) {
    static const char *const keys[] = {"kind", "top_k", NULL};
    char p[PATH_MAX_LEN];
    int rc = check_keys(v, path, keys, err);
    json_t *k;
    long long top_k = 0;
    if (rc == 0 && (rc = member(v, path, "top_k", &k, err)) == 0) {
        join_key(p, path, "top_k");
        rc = get_int(k, p, 1, COORDINATOR_MAX_TOP_K, &top_k, err);
    }
    if (rc == 0) {
        a->predictions.top_k = (size_t)top_k;
    }
    return rc;
}

static int parse_analysis(json_t *v, const char *path, coordinator_analysis *a, char *err) {
    char p[PATH_MAX_LEN];
    int rc = need_object(v, path, err);
    json_t *kind;
    const char *name = NULL;
    if (rc == 0 && (rc = member(v, path, "kind", &kind, err)) == 0) {
        join_key(p, path, "kind");
        rc = get_string(kind, p, &name, err);
    }
    if (rc != 0) {
        return rc;
    }
    if (strcmp(name, "patch") == 0) {
        a->kind = COORDINATOR_ANALYSIS_PATCH;
        rc = parse_patch(v, path, a, err);
    } else if (strcmp(name, "legal_stats") == 0) {
        a->kind = COORDINATOR_ANALYSIS_LEGAL_STATS;
        rc = parse_legal(v, path, a, err);
    } else if (strcmp(name, "neuron_stats") == 0) {
        a->kind = COORDINATOR_ANALYSIS_NEURON_STATS;
        rc = parse_neurons(v, path, a, err);
    } else if (strcmp(name, "predictions") == 0) {
        a->kind = COORDINATOR_ANALYSIS_PREDICTIONS;
        rc = parse_predictions(v, path, a, err);
    } else {
        rc = bad(err, p,
                 "must be \"patch\", \"legal_stats\", \"neuron_stats\" or "
                 "\"predictions\"");
    }
    if (rc == 0) {
        a->json = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
        if (a->json == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "spec: out of memory");
        }
    }
    return rc;
}

/* ---- the document ---- */

static int parse_root(json_t *root, coordinator_spec *s, char *err) {
    static const char *const keys[] = {"name", "model", "dataset", "games", "analyses", NULL};
    int rc = need_object(root, "spec", err);
    if (rc == 0) {
        rc = check_keys(root, "", keys, err);
    }
    json_t *m;
    const char *text = NULL;
    if (rc == 0 && (rc = member(root, "", "name", &m, err)) == 0 &&
        (rc = get_string(m, "name", &text, err)) == 0) {
        rc = coordinator_name_valid(text)
                 ? dup_string(text, &s->name, err)
                 : bad(err, "name", "must be 1..%d characters of [A-Za-z0-9._-]",
                       COORDINATOR_MAX_NAME);
    }
    if (rc == 0 && (rc = member(root, "", "model", &m, err)) == 0 &&
        (rc = get_string(m, "model", &text, err)) == 0) {
        rc = text[0] != '\0' ? dup_string(text, &s->model, err)
                             : bad(err, "model", "must not be empty");
    }
    if (rc == 0 && (rc = member(root, "", "dataset", &m, err)) == 0 &&
        (rc = get_string(m, "dataset", &text, err)) == 0) {
        rc = coordinator_name_valid(text)
                 ? dup_string(text, &s->dataset, err)
                 : bad(err, "dataset", "must be 1..%d characters of [A-Za-z0-9._-]",
                       COORDINATOR_MAX_NAME);
    }
    if (rc == 0 && (rc = member(root, "", "games", &m, err)) == 0) {
        long long from = 0, to = 0;
        if (!json_is_array(m) || json_array_size(m) != 2) {
            rc = bad(err, "games", "must be [from, to], a half-open range of game indices");
        } else if ((rc = get_int(json_array_get(m, 0), "games[0]", 0, INT64_MAX, &from, err)) ==
                       0 &&
                   (rc = get_int(json_array_get(m, 1), "games[1]", 0, INT64_MAX, &to, err)) == 0) {
            if (to <= from) {
                rc = bad(err, "games[1]", "must be > games[0] (%lld)", from);
            }
            s->game_from = (uint64_t)from;
            s->game_to = (uint64_t)to;
        }
    }
    if (rc == 0 && (rc = member(root, "", "analyses", &m, err)) == 0) {
        size_t n = json_is_array(m) ? json_array_size(m) : 0;
        if (n == 0) {
            rc = bad(err, "analyses", "must be a non-empty array");
        } else if (n > COORDINATOR_MAX_ANALYSES) {
            rc = bad(err, "analyses", "more than %d analyses", COORDINATOR_MAX_ANALYSES);
        } else if ((s->analyses = calloc(n, sizeof *s->analyses)) == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "spec: out of memory");
        }
        for (size_t i = 0; rc == 0 && i < n; i++) {
            char p[PATH_MAX_LEN];
            join_index(p, "analyses", i);
            s->n_analyses = i + 1;
            rc = parse_analysis(json_array_get(m, i), p, &s->analyses[i], err);
        }
    }
    return rc;
}

void coordinator_spec_destroy(coordinator_spec **sp) {
    if (sp == NULL || *sp == NULL) {
        return;
    }
    coordinator_spec *s = *sp;
    for (size_t i = 0; i < s->n_analyses; i++) {
        free(s->analyses[i].json);
        free(s->analyses[i].patch.cutoffs);
    }
    free(s->analyses);
    free(s->name);
    free(s->model);
    free(s->dataset);
    free(s->canonical);
    free(s);
    *sp = NULL;
}

int coordinator_spec_parse(coordinator_spec **out, const char *json, size_t len, char *err) {
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        return common_fail(err, COMMON_ERR_PARSE, "spec: line %d column %d: %s", jerr.line,
                           jerr.column, jerr.text);
    }
    coordinator_spec *s = calloc(1, sizeof *s);
    int rc = s != NULL ? parse_root(root, s, err)
                       : common_fail(err, COMMON_ERR_NOMEM, "spec: out of memory");
    if (rc == 0) {
        s->canonical = json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS);
        if (s->canonical == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "spec: out of memory");
        }
    }
    json_decref(root);
    if (rc != 0) {
        coordinator_spec_destroy(&s);
        return rc;
    }
    *out = s;
    return 0;
}

int coordinator_spec_check_model(const coordinator_spec *s, size_t n_ctx, size_t d_vocab,
                                 char *err) {
    for (size_t i = 0; i < s->n_analyses; i++) {
        const coordinator_analysis *a = &s->analyses[i];
        char p[PATH_MAX_LEN];
        if (a->kind == COORDINATOR_ANALYSIS_PATCH) {
            size_t last = a->patch.cutoffs[a->patch.n_cutoffs - 1];
            if (last > n_ctx) {
                snprintf(p, sizeof p, "analyses[%zu].cutoffs", i);
                return bad(err, p, "cut-off %zu is longer than the model's n_ctx (%zu)", last,
                           n_ctx);
            }
        } else if (a->kind == COORDINATOR_ANALYSIS_PREDICTIONS && a->predictions.top_k > d_vocab) {
            snprintf(p, sizeof p, "analyses[%zu].top_k", i);
            return bad(err, p, "must be <= the model's vocabulary (%zu)", d_vocab);
        }
    }
    return 0;
}

int coordinator_metric_resolve(const coordinator_metric_spec *m, const char *clean_top,
                               const char *corrupt_top, char *out, size_t cap, char *err) {
    static const char *const names[] = {
        [INTERP_METRIC_LOGIT] = "logit",
        [INTERP_METRIC_LOGIT_DIFF] = "logit_diff",
        [INTERP_METRIC_LOGPROB] = "logprob",
        [INTERP_METRIC_LEGAL_MASS] = "legal_mass",
    };
    assert((size_t)m->kind < sizeof names / sizeof names[0] && m->n_tokens <= 2);
    const char *texts[2] = {NULL, NULL};
    for (size_t i = 0; i < m->n_tokens; i++) {
        const coordinator_token_ref *t = &m->tokens[i];
        texts[i] = t->kind == COORDINATOR_TOKEN_TEXT        ? t->text
                   : t->kind == COORDINATOR_TOKEN_CLEAN_TOP ? clean_top
                                                            : corrupt_top;
        if (texts[i] == NULL || texts[i][0] == '\0') {
            return common_fail(err, COMMON_ERR_INVALID, "metric: token %zu (%s) not given", i,
                               t->kind == COORDINATOR_TOKEN_CLEAN_TOP ? "clean_top"
                                                                      : "corrupt_top");
        }
    }
    int k;
    if (m->n_tokens == 0) {
        k = snprintf(out, cap, "%s", names[m->kind]);
    } else if (m->n_tokens == 1) {
        k = snprintf(out, cap, "%s:%s", names[m->kind], texts[0]);
    } else {
        k = snprintf(out, cap, "%s:%s,%s", names[m->kind], texts[0], texts[1]);
    }
    if (k < 0 || (size_t)k >= cap) {
        return common_fail(err, COMMON_ERR_INVALID, "metric: %zu bytes do not hold the metric",
                           cap);
    }
    return 0;
}
