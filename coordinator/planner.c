/*
 * planner: a sweep's jobs as tasks, and a leased task as the concrete work an executor runs.
 *
 * Planning reads the sweep's games from the position table only (token texts and the number of
 * legal next tokens per position), so the pair count of every patch task is exact before any
 * model runs, and packs consecutive games greedily up to the target size. Loading a task reads
 * the same rows, recomputes the same counts with the same function, and derives the legal
 * alternatives from the game itself with chess_legal_tokens; a count that disagrees with the
 * task's body is refused rather than silently run. Everything a pair depends on (the game, the
 * cut-off, the seed) is fixed by the task's key, never by its neighbours, so any split of the
 * games gives the same pairs. docs/SWEEP.md ("Tasks") is the prose form of these rules.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "coordinator/store_int.h"
#include "coordinator/work_int.h"

#define DEFAULT_PAIRS_PER_TASK 64
#define DEFAULT_GAMES_PER_TASK 64

/* ---- games as stored ---- */

/* The stored rows of one game: its first n_loaded positions (all of them, or up to a limit). */
typedef struct game_rows {
    uint64_t idx;
    size_t n_tokens;  /* positions of the whole game, `<s>` included */
    size_t n_loaded;  /* positions read: min(n_tokens, limit) */
    char *uci;        /* the game's moves */
    char (*text)[4];  /* [n_loaded] token texts */
    const char **ptr; /* [n_loaded] text[i] */
    uint8_t *phase;   /* [n_loaded] chess_phase */
    int *n_legal;     /* [n_loaded] legal next tokens after the position */
} game_rows;

/* Where games are read from: the store's game cache (store_game_get), for one dataset. */
typedef struct game_reader {
    coordinator_store *s;
    int64_t dataset_id;
} game_reader;

/* Reads game idx with its first min(n_tokens, limit) positions into g, storage from m.
 * NOT_FOUND when the dataset has no such game; INVALID when its rows are inconsistent. */
static int read_game(game_reader *r, uint64_t idx, size_t limit, struct coordinator_work_mem *m,
                     game_rows *g, char *err) {
    *g = (game_rows){0};
    g->idx = idx;
    const store_game *sg = NULL;
    int rc = store_game_get(r->s, r->dataset_id, idx, &sg, err);
    if (rc != 0) {
        return rc;
    }
    g->n_tokens = sg->n_tokens;
    g->n_loaded = g->n_tokens < limit ? g->n_tokens : limit;
    g->uci = work_mem_strdup(m, sg->uci);
    g->text = work_mem_alloc(m, g->n_loaded, sizeof *g->text);
    g->ptr = work_mem_alloc(m, g->n_loaded, sizeof *g->ptr);
    g->phase = work_mem_alloc(m, g->n_loaded, sizeof *g->phase);
    g->n_legal = work_mem_alloc(m, g->n_loaded, sizeof *g->n_legal);
    if (g->uci == NULL || g->text == NULL || g->ptr == NULL || g->phase == NULL ||
        g->n_legal == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "read game: out of memory");
    }
    memcpy(g->text, sg->text, g->n_loaded * sizeof *g->text);
    memcpy(g->phase, sg->phase, g->n_loaded * sizeof *g->phase);
    memcpy(g->n_legal, sg->n_legal, g->n_loaded * sizeof *g->n_legal);
    for (size_t i = 0; i < g->n_loaded; i++) {
        g->ptr[i] = g->text[i];
    }
    return 0;
}

/* ---- pairs ---- */

/* The corrupted position of a cut-off-N prompt, or -1 when the spec's position falls outside
 * 1..N-1. */
static long corrupt_position(const coordinator_corrupt_spec *c, size_t N) {
    long p = c->position < 0 ? (long)N + c->position : c->position;
    return p >= 1 && (size_t)p < N ? p : -1;
}

/* The number of pairs game g gives at cut-off N (other: the corrupting game, for GAME only).
 * g must hold at least min(n_tokens, N) positions. The planner and the loader both count with
 * this function, so a task's size and its work cannot disagree. */
static size_t pairs_of(const coordinator_corrupt_spec *c, const game_rows *g, size_t N,
                       const game_rows *other) {
    if (g->n_tokens < N) {
        return 0;
    }
    if (c->with == COORDINATOR_CORRUPT_GAME) {
        return other != NULL && other->idx != g->idx && other->n_tokens >= N ? 1 : 0;
    }
    long p = corrupt_position(c, N);
    if (p < 0) {
        return 0;
    }
    assert((size_t)p < g->n_loaded);
    int n_alt = g->n_legal[p - 1] - 1; /* the clean token is one of the legal ones */
    switch (c->with) {
    case COORDINATOR_CORRUPT_EACH_LEGAL:
        return n_alt > 0 ? (size_t)n_alt : 0;
    case COORDINATOR_CORRUPT_RANDOM_LEGAL:
        return n_alt > 0 ? 1 : 0;
    case COORDINATOR_CORRUPT_TOKEN:
        return strcmp(c->token, g->text[p]) != 0 ? 1 : 0;
    case COORDINATOR_CORRUPT_GAME:
        break;
    }
    return 0;
}

/* SplitMix64's finaliser: a bijective mix of all 64 bits. */
static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* The random_legal_alternative draw of game g at cut-off N: a function of (seed, g, N) only.
 * The modulo's bias (n / 2^64) is far below anything a sweep can see. */
static size_t random_choice(uint64_t seed, uint64_t game, size_t N, size_t n) {
    return (size_t)(mix64(mix64(mix64(seed) ^ game) ^ (uint64_t)N) % n);
}

/* The tokens legal after a position, in the order `chesslens chess legal` prints them: squares
 * a1, a2, ..., a8, b1, ..., h8, then the promotion letters q r b n. Returns the count. */
static size_t legal_texts(const chess_token_info *t, char out[68][4]) {
    size_t n = 0;
    for (int file = 0; file < 8; file++) {
        for (int rank = 0; rank < 8; rank++) {
            int sq = rank * 8 + file;
            if (t->next_squares & (1ULL << sq)) {
                chess_square_name(sq, out[n++]);
            }
        }
    }
    static const struct {
        int bit;
        const char *text;
    } letters[4] = {
        {CHESS_PROMO_Q, "q"}, {CHESS_PROMO_R, "r"}, {CHESS_PROMO_B, "b"}, {CHESS_PROMO_N, "n"}};
    for (int i = 0; i < 4; i++) {
        if (t->next_promos & letters[i].bit) {
            snprintf(out[n++], 4, "%s", letters[i].text);
        }
    }
    return n;
}

/* ---- planning ---- */

/* The sweep's stored spec text, dataset and games range. */
static int read_sweep(sqlite3 *db, int64_t sweep_id, const coordinator_spec *spec,
                      int64_t *dataset_id, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_prepare(db, "SELECT spec, dataset_id FROM sweep WHERE id = ?", &st, "read sweep",
                           err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, sweep_id);
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(st, 0);
        *dataset_id = sqlite3_column_int64(st, 1);
        if (text == NULL || strcmp(text, spec->canonical) != 0) {
            rc = common_fail(err, COMMON_ERR_INVALID, "plan: sweep %lld has another spec",
                             (long long)sweep_id);
        }
    } else if (step == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "plan: sweep %lld not found",
                         (long long)sweep_id);
    } else {
        rc = store_fail(db, err, "sqlite3_step(read sweep)");
    }
    sqlite3_finalize(st);
    return rc;
}

/* Task definitions of one job; keys and bodies are owned through text[2 i], text[2 i + 1]. */
typedef struct task_list {
    coordinator_task_def *defs;
    char **text;
    size_t n, cap;
} task_list;

static void task_list_free(task_list *l) {
    for (size_t i = 0; i < 2 * l->n; i++) {
        free(l->text[i]);
    }
    free(l->defs);
    free(l->text);
    *l = (task_list){0};
}

/* Room for one more task. */
static int task_list_grow(task_list *l, char *err) {
    if (l->n < l->cap) {
        return 0;
    }
    size_t cap = l->cap > 0 ? 2 * l->cap : 16;
    coordinator_task_def *d = realloc(l->defs, cap * sizeof *d);
    if (d != NULL) {
        l->defs = d;
    }
    char **t = d != NULL ? realloc(l->text, 2 * cap * sizeof *t) : NULL;
    if (t == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "plan: out of memory");
    }
    l->text = t;
    l->cap = cap;
    return 0;
}

static int task_list_add(task_list *l, const char *key, const char *body, char *err) {
    int rc = task_list_grow(l, err);
    if (rc != 0) {
        return rc;
    }
    char *k = strdup(key), *b = strdup(body);
    if (k == NULL || b == NULL) {
        free(k);
        free(b);
        return common_fail(err, COMMON_ERR_NOMEM, "plan: out of memory");
    }
    l->text[2 * l->n] = k;
    l->text[2 * l->n + 1] = b;
    l->defs[l->n++] = (coordinator_task_def){k, b, strlen(b)};
    return 0;
}

/* Moves the tasks of src to the end of dst; src keeps those not moved on an error. */
static int task_list_move(task_list *dst, task_list *src, char *err) {
    size_t i = 0;
    int rc = 0;
    for (; i < src->n && (rc = task_list_grow(dst, err)) == 0; i++) {
        dst->text[2 * dst->n] = src->text[2 * i];
        dst->text[2 * dst->n + 1] = src->text[2 * i + 1];
        dst->defs[dst->n++] = src->defs[i];
    }
    /* what was moved is dst's now (an empty list has no arrays: memmove takes no NULL) */
    if (src->n > i) {
        memmove(src->text, src->text + 2 * i, 2 * (src->n - i) * sizeof *src->text);
        memmove(src->defs, src->defs + i, (src->n - i) * sizeof *src->defs);
    }
    src->n -= i;
    return rc;
}

/* An open patch task of one cut-off: games [from, to) with pairs so far. */
typedef struct open_task {
    uint64_t from, to;
    size_t pairs;
} open_task;

static int close_patch_task(task_list *l, size_t analysis, size_t N, open_task *t, char *err) {
    if (t->pairs == 0) {
        return 0;
    }
    char key[80], body[160];
    snprintf(key, sizeof key, "c%zu:g%llu-%llu", N, (unsigned long long)t->from,
             (unsigned long long)t->to);
    snprintf(body, sizeof body,
             "{\"analysis\":%zu,\"cutoff\":%zu,\"games\":[%llu,%llu],\"kind\":\"patch\","
             "\"pairs\":%zu}",
             analysis, N, (unsigned long long)t->from, (unsigned long long)t->to, t->pairs);
    t->pairs = 0;
    return task_list_add(l, key, body, err);
}

/* Adds a game's pairs at one cut-off to the open task, closing it first when they would not
 * fit. */
static int pack_game(task_list *l, size_t analysis, size_t N, size_t target, open_task *t,
                     uint64_t game, size_t pairs, char *err) {
    if (pairs == 0) {
        return 0;
    }
    int rc = 0;
    if (t->pairs > 0 && t->pairs + pairs > target) {
        rc = close_patch_task(l, analysis, N, t, err);
    }
    if (t->pairs == 0) {
        t->from = game;
    }
    t->to = game + 1;
    t->pairs += pairs;
    return rc;
}

static int plan_patch(game_reader *r, const coordinator_spec *spec, size_t analysis, size_t target,
                      task_list *l, char *err) {
    const coordinator_analysis *a = &spec->analyses[analysis];
    const coordinator_corrupt_spec *c = &a->patch.corrupt;
    size_t n_cut = a->patch.n_cutoffs;
    size_t limit = a->patch.cutoffs[n_cut - 1];
    struct coordinator_work_mem mem = {0}, other_mem = {0};
    game_rows g, other;
    const game_rows *other_p = NULL;
    open_task *open = calloc(n_cut, sizeof *open);
    task_list *per = calloc(n_cut, sizeof *per); /* the tasks of each cut-off */
    int rc = 0;
    if (open == NULL || per == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "plan: out of memory");
        goto fail;
    }
    if (c->with == COORDINATOR_CORRUPT_GAME) {
        if ((rc = read_game(r, c->game, 0, &other_mem, &other, err)) != 0) {
            if (rc == COMMON_ERR_NOT_FOUND) {
                rc = common_fail(err, COMMON_ERR_NOT_FOUND,
                                 "analyses[%zu].corrupt.with.game: the dataset has no game %llu",
                                 analysis, (unsigned long long)c->game);
            }
            goto fail;
        }
        other_p = &other;
    }
    for (uint64_t gi = spec->game_from; gi < spec->game_to; gi++) {
        work_mem_free_all(&mem);
        if ((rc = read_game(r, gi, limit, &mem, &g, err)) != 0) {
            goto fail;
        }
        for (size_t k = 0; k < n_cut; k++) {
            size_t N = a->patch.cutoffs[k];
            rc = pack_game(&per[k], analysis, N, target, &open[k], gi, pairs_of(c, &g, N, other_p),
                           err);
            if (rc != 0) {
                goto fail;
            }
        }
    }
    /* the tasks of one cut-off together, by game, in the spec's order of cut-offs */
    for (size_t k = 0; k < n_cut && rc == 0; k++) {
        if ((rc = close_patch_task(&per[k], analysis, a->patch.cutoffs[k], &open[k], err)) == 0) {
            rc = task_list_move(l, &per[k], err);
        }
    }

fail:
    work_mem_free_all(&mem);
    work_mem_free_all(&other_mem);
    free(mem.blocks);
    free(other_mem.blocks);
    for (size_t k = 0; per != NULL && k < n_cut; k++) {
        task_list_free(&per[k]);
    }
    free(per);
    free(open);
    return rc;
}

static int plan_aggregate(const coordinator_spec *spec, size_t analysis, size_t chunk, task_list *l,
                          char *err) {
    const char *kind = coordinator_analysis_kind_name(spec->analyses[analysis].kind);
    for (uint64_t from = spec->game_from; from < spec->game_to; from += chunk) {
        uint64_t to = spec->game_to - from > chunk ? from + chunk : spec->game_to;
        char key[64], body[160];
        snprintf(key, sizeof key, "g%llu-%llu", (unsigned long long)from, (unsigned long long)to);
        snprintf(body, sizeof body, "{\"analysis\":%zu,\"games\":[%llu,%llu],\"kind\":\"%s\"}",
                 analysis, (unsigned long long)from, (unsigned long long)to, kind);
        int rc = task_list_add(l, key, body, err);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* A job planned before must hold exactly the tasks of l: none missing, none extra. */
static int check_existing(sqlite3 *db, int64_t job_id, size_t analysis, const task_list *l,
                          char *err) {
    sqlite3_stmt *count = NULL, *has = NULL;
    int rc =
        store_prepare(db, "SELECT COUNT(*) FROM task WHERE job_id = ?", &count, "count tasks", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(count, 1, job_id);
    if (sqlite3_step(count) != SQLITE_ROW) {
        rc = store_fail(db, err, "sqlite3_step(count tasks)");
        goto done;
    }
    size_t existing = (size_t)sqlite3_column_int64(count, 0);
    if (existing == 0) {
        goto done;
    }
    size_t found = 0;
    if ((rc = store_prepare(db, "SELECT 1 FROM task WHERE job_id = ? AND key = ?", &has,
                            "find task", err)) != 0) {
        goto done;
    }
    for (size_t i = 0; i < l->n; i++) {
        sqlite3_reset(has);
        sqlite3_bind_int64(has, 1, job_id);
        sqlite3_bind_text(has, 2, l->defs[i].key, -1, SQLITE_STATIC);
        int step = sqlite3_step(has);
        if (step == SQLITE_ROW) {
            found++;
        } else if (step != SQLITE_DONE) {
            rc = store_fail(db, err, "sqlite3_step(find task)");
            goto done;
        }
    }
    if (found != l->n || existing != l->n) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "plan: analysis %zu has %zu tasks planned otherwise (%zu of %zu match); "
                         "plan with the sizes it was planned with",
                         analysis, existing, found, l->n);
    }

done:
    sqlite3_finalize(count);
    sqlite3_finalize(has);
    return rc;
}

int coordinator_plan_sweep(coordinator_store *s, int64_t sweep_id, const coordinator_spec *spec,
                           const coordinator_plan_opts *opts, size_t *n_tasks, char *err) {
    size_t pairs_per_task =
        opts != NULL && opts->pairs_per_task > 0 ? opts->pairs_per_task : DEFAULT_PAIRS_PER_TASK;
    size_t games_per_task =
        opts != NULL && opts->games_per_task > 0 ? opts->games_per_task : DEFAULT_GAMES_PER_TASK;
    int64_t dataset_id = 0;
    game_reader r = {0};
    task_list l = {0};
    sqlite3_stmt *st = NULL;
    int rc = read_sweep(s->db, sweep_id, spec, &dataset_id, err);
    if (rc != 0) {
        return rc;
    }
    r = (game_reader){s, dataset_id};
    for (size_t i = 0; i < spec->n_analyses; i++) {
        int64_t job_id = 0;
        if ((rc = coordinator_job_find(s, sweep_id, i, &job_id, err)) != 0) {
            goto done;
        }
        task_list_free(&l);
        if (spec->analyses[i].kind == COORDINATOR_ANALYSIS_PATCH) {
            rc = plan_patch(&r, spec, i, pairs_per_task, &l, err);
        } else {
            rc = plan_aggregate(spec, i, games_per_task, &l, err);
        }
        if (rc != 0 || (rc = check_existing(s->db, job_id, i, &l, err)) != 0 ||
            (rc = coordinator_tasks_add(s, job_id, l.defs, l.n, NULL, err)) != 0) {
            goto done;
        }
    }
    if (n_tasks != NULL) {
        rc = store_prepare(s->db,
                           "SELECT COUNT(*) FROM task t JOIN job j ON j.id = t.job_id "
                           "WHERE j.sweep_id = ?",
                           &st, "count tasks", err);
        if (rc == 0) {
            sqlite3_bind_int64(st, 1, sweep_id);
            if (sqlite3_step(st) == SQLITE_ROW) {
                *n_tasks = (size_t)sqlite3_column_int64(st, 0);
            } else {
                rc = store_fail(s->db, err, "sqlite3_step(count tasks)");
            }
        }
    }

done:
    sqlite3_finalize(st);
    task_list_free(&l);
    return rc;
}

/* ---- loading the work of a task ---- */

/* What a body says. */
typedef struct task_body {
    size_t analysis;
    coordinator_analysis_kind kind;
    uint64_t from, to;
    size_t cutoff, pairs; /* patch only */
} task_body;

/* A task body is the small JSON object the planner writes (plan_patch_tasks, plan_game_tasks):
 * "analysis", "games" ([from, to)), "kind" and, for a patch task, "cutoff" and "pairs". It is
 * read on every dispatch, so it is scanned here for exactly that shape (any key order,
 * whitespace between tokens) instead of being built into a general JSON tree: unsigned
 * integers without sign, fraction or exponent, the kind as a plain string, nothing else. */
typedef struct body_scan {
    const char *p, *end;
} body_scan;

static void skip_space(body_scan *sc) {
    while (sc->p < sc->end &&
           (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r')) {
        sc->p++;
    }
}

static bool eat(body_scan *sc, char c) {
    skip_space(sc);
    if (sc->p < sc->end && *sc->p == c) {
        sc->p++;
        return true;
    }
    return false;
}

/* A string of at most cap - 1 plain characters (no escapes), NUL-terminated into out. */
static bool scan_string(body_scan *sc, char *out, size_t cap) {
    if (!eat(sc, '"')) {
        return false;
    }
    size_t n = 0;
    while (sc->p < sc->end && *sc->p != '"') {
        unsigned char c = (unsigned char)*sc->p++;
        if (c == '\\' || c < 0x20 || n + 1 >= cap) {
            return false;
        }
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return sc->p++ < sc->end;
}

/* An unsigned integer of at most max: digits, no leading zero unless it is 0. */
static bool scan_uint(body_scan *sc, uint64_t max, uint64_t *out) {
    skip_space(sc);
    const char *start = sc->p;
    uint64_t v = 0;
    while (sc->p < sc->end && *sc->p >= '0' && *sc->p <= '9') {
        uint64_t d = (uint64_t)(*sc->p++ - '0');
        if (v > (max - d) / 10) {
            return false;
        }
        v = v * 10 + d;
    }
    size_t n = (size_t)(sc->p - start);
    if (n == 0 || (n > 1 && *start == '0') ||
        (sc->p < sc->end && (*sc->p == '.' || *sc->p == 'e' || *sc->p == 'E'))) {
        return false;
    }
    *out = v;
    return true;
}

static int parse_body(const void *body, size_t len, task_body *b, char *err) {
    enum { K_ANALYSIS, K_CUTOFF, K_GAMES, K_KIND, K_PAIRS, N_KEYS };
    static const char *const keys[N_KEYS] = {"analysis", "cutoff", "games", "kind", "pairs"};
    static const uint64_t max[N_KEYS] = {COORDINATOR_MAX_ANALYSES, COORDINATOR_MAX_CUTOFF, 0, 0,
                                         SIZE_MAX / 2};
    body_scan sc = {body, (const char *)body + len};
    bool seen[N_KEYS] = {false};
    uint64_t v[N_KEYS] = {0};
    char kind[32] = "";
    if (!eat(&sc, '{')) {
        return common_fail(err, COMMON_ERR_PARSE, "task body: not a JSON object");
    }
    do {
        char key[16];
        size_t k = 0;
        if (!scan_string(&sc, key, sizeof key) || !eat(&sc, ':')) {
            return common_fail(err, COMMON_ERR_PARSE, "task body: malformed at byte %zu",
                               (size_t)(sc.p - (const char *)body));
        }
        while (k < N_KEYS && strcmp(keys[k], key) != 0) {
            k++;
        }
        if (k == N_KEYS || seen[k]) {
            return common_fail(err, COMMON_ERR_PARSE, "task body: key '%s' %s", key,
                               k == N_KEYS ? "unknown" : "given twice");
        }
        seen[k] = true;
        bool ok;
        if (k == K_GAMES) {
            ok = eat(&sc, '[') && scan_uint(&sc, UINT64_MAX, &b->from) && eat(&sc, ',') &&
                 scan_uint(&sc, UINT64_MAX, &b->to) && eat(&sc, ']') && b->from < b->to;
        } else if (k == K_KIND) {
            ok = scan_string(&sc, kind, sizeof kind);
        } else {
            ok = scan_uint(&sc, max[k], &v[k]);
        }
        if (!ok) {
            return common_fail(err, COMMON_ERR_PARSE,
                               k == K_GAMES  ? "task body: 'games' must be [from, to), from < to"
                               : k == K_KIND ? "task body: 'kind' must be an analysis kind"
                                             : "task body: '%s' must be an integer 0..%llu",
                               keys[k], (unsigned long long)max[k]);
        }
    } while (eat(&sc, ','));
    if (!eat(&sc, '}') || (skip_space(&sc), sc.p != sc.end)) {
        return common_fail(err, COMMON_ERR_PARSE, "task body: malformed at byte %zu",
                           (size_t)(sc.p - (const char *)body));
    }
    static const coordinator_analysis_kind kinds[] = {
        COORDINATOR_ANALYSIS_PATCH, COORDINATOR_ANALYSIS_LEGAL_STATS,
        COORDINATOR_ANALYSIS_NEURON_STATS, COORDINATOR_ANALYSIS_PREDICTIONS};
    size_t i = 0;
    while (i < 4 && strcmp(coordinator_analysis_kind_name(kinds[i]), kind) != 0) {
        i++;
    }
    if (i == 4) {
        return common_fail(err, COMMON_ERR_PARSE, "task body: 'kind' must be an analysis kind");
    }
    b->kind = kinds[i];
    bool patch = b->kind == COORDINATOR_ANALYSIS_PATCH;
    for (size_t k = 0; k < N_KEYS; k++) {
        bool wanted = patch || (k != K_CUTOFF && k != K_PAIRS);
        if (seen[k] != wanted) {
            return common_fail(err, COMMON_ERR_PARSE, "task body: '%s' %s for a %s task", keys[k],
                               wanted ? "missing" : "not allowed", kind);
        }
    }
    b->analysis = (size_t)v[K_ANALYSIS];
    b->cutoff = (size_t)v[K_CUTOFF];
    b->pairs = (size_t)v[K_PAIRS];
    return 0;
}

/* The job's analysis index and its sweep's dataset, checking that spec is that sweep's. */
static int read_job(coordinator_store *s, int64_t job_id, const coordinator_spec *spec,
                    size_t *analysis, int64_t *dataset_id, char *err) {
    const store_job *j = NULL;
    int rc = store_job_get(s, job_id, &j, err);
    if (rc != 0) {
        return rc;
    }
    if (strcmp(j->spec, spec->canonical) != 0 || j->analysis < 0 ||
        (size_t)j->analysis >= spec->n_analyses) {
        return common_fail(err, COMMON_ERR_INVALID, "work: job %lld is not of this spec",
                           (long long)job_id);
    }
    *analysis = (size_t)j->analysis;
    *dataset_id = j->dataset_id;
    return 0;
}

/* The replacement texts of game g at cut-off N into alt (at most 67), the clean token left
 * out, in legal_texts' order; *n receives the count. Checks it against the stored n_legal. */
static int alternatives(const game_rows *g, long p, char alt[68][4], size_t *n, char *err) {
    chess_token_info *info = NULL;
    size_t n_info = 0;
    char msg[COMMON_ERR_LEN];
    int rc = chess_legal_tokens(NULL, g->uci, &info, &n_info, msg);
    if (rc != 0 || n_info != g->n_tokens) {
        free(info);
        return common_fail(err, rc != 0 ? rc : COMMON_ERR_INVALID, "work: game %llu: %s",
                           (unsigned long long)g->idx, rc != 0 ? msg : "token count differs");
    }
    char legal[68][4];
    size_t n_legal = legal_texts(&info[p - 1], legal);
    free(info);
    size_t k = 0;
    bool clean_legal = false;
    for (size_t i = 0; i < n_legal; i++) {
        if (strcmp(legal[i], g->text[p]) == 0) {
            clean_legal = true;
        } else {
            memcpy(alt[k++], legal[i], 4);
        }
    }
    if (!clean_legal || (int)n_legal != g->n_legal[p - 1]) {
        return common_fail(
            err, COMMON_ERR_INVALID,
            "work: game %llu position %ld: the stored tokens disagree with the rules",
            (unsigned long long)g->idx, p);
    }
    *n = k;
    return 0;
}

/* A pair of game g whose corrupted prompt is the clean one with position p replaced by text;
 * clean is g's first N token texts. */
static int make_token_pair(struct coordinator_work_mem *m, const game_rows *g, size_t N, long p,
                           const char *text, coordinator_pair *out, char *err) {
    const char **corrupted = work_mem_alloc(m, N, sizeof *corrupted);
    char *tok = work_mem_strdup(m, text);
    if (corrupted == NULL || tok == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "work: out of memory");
    }
    memcpy(corrupted, g->ptr, N * sizeof *corrupted);
    corrupted[p] = tok;
    *out = (coordinator_pair){.game = g->idx,
                              .corrupt_pos = (int32_t)p,
                              .corrupt_game = -1,
                              .uci = g->uci,
                              .clean = g->ptr,
                              .corrupted = corrupted};
    snprintf(out->clean_token, sizeof out->clean_token, "%s", g->text[p]);
    snprintf(out->corrupt_token, sizeof out->corrupt_token, "%s", text);
    return 0;
}

static int load_patch(game_reader *r, coordinator_work *w, const task_body *b, char *err) {
    const coordinator_analysis *a = w->params;
    const coordinator_corrupt_spec *c = &a->patch.corrupt;
    size_t N = b->cutoff;
    struct coordinator_work_mem *m = w->mem;
    size_t n_games = (size_t)(b->to - b->from);
    game_rows *games = calloc(n_games, sizeof *games);
    game_rows other = {0};
    const game_rows *other_p = NULL;
    coordinator_pair *pairs = NULL;
    int rc = 0;
    if (games == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "work: out of memory");
        goto done;
    }
    if (c->with == COORDINATOR_CORRUPT_GAME) {
        if ((rc = read_game(r, c->game, N, m, &other, err)) != 0) {
            goto done;
        }
        other_p = &other;
    }
    size_t total = 0;
    for (size_t i = 0; i < n_games; i++) {
        if ((rc = read_game(r, b->from + i, N, m, &games[i], err)) != 0) {
            goto done;
        }
        total += pairs_of(c, &games[i], N, other_p);
    }
    if (total != b->pairs) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "work: the task plans %zu pairs, its games give %zu", b->pairs, total);
        goto done;
    }
    pairs = work_mem_alloc(m, total, sizeof *pairs);
    if (pairs == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "work: out of memory");
        goto done;
    }
    size_t k = 0;
    for (size_t i = 0; i < n_games; i++) {
        const game_rows *g = &games[i];
        size_t np = pairs_of(c, g, N, other_p);
        if (np == 0) {
            continue;
        }
        long p = corrupt_position(c, N);
        char alt[68][4];
        size_t n_alt = 0;
        switch (c->with) {
        case COORDINATOR_CORRUPT_EACH_LEGAL:
        case COORDINATOR_CORRUPT_RANDOM_LEGAL:
            if ((rc = alternatives(g, p, alt, &n_alt, err)) != 0) {
                goto done;
            }
            assert(c->with == COORDINATOR_CORRUPT_RANDOM_LEGAL ? n_alt > 0 : n_alt == np);
            if (c->with == COORDINATOR_CORRUPT_EACH_LEGAL) {
                for (size_t j = 0; j < n_alt && rc == 0; j++) {
                    rc = make_token_pair(m, g, N, p, alt[j], &pairs[k++], err);
                }
            } else {
                size_t j = random_choice(c->seed, g->idx, N, n_alt);
                rc = make_token_pair(m, g, N, p, alt[j], &pairs[k++], err);
            }
            break;
        case COORDINATOR_CORRUPT_TOKEN:
            rc = make_token_pair(m, g, N, p, c->token, &pairs[k++], err);
            break;
        case COORDINATOR_CORRUPT_GAME:
            pairs[k++] = (coordinator_pair){.game = g->idx,
                                            .corrupt_pos = -1,
                                            .corrupt_game = (int64_t)other.idx,
                                            .uci = g->uci,
                                            .clean = g->ptr,
                                            .corrupted = other.ptr};
            break;
        }
        if (rc != 0) {
            goto done;
        }
    }
    assert(k == total);
    w->cutoff = N;
    w->n_pairs = total;
    w->pairs = pairs;

done:
    free(games);
    return rc;
}

static int load_games(game_reader *r, coordinator_work *w, const task_body *b, char *err) {
    size_t n = (size_t)(b->to - b->from);
    coordinator_work_game *games = work_mem_alloc(w->mem, n, sizeof *games);
    if (games == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "work: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        game_rows g;
        int rc = read_game(r, b->from + i, SIZE_MAX, w->mem, &g, err);
        if (rc != 0) {
            return rc;
        }
        games[i] = (coordinator_work_game){g.idx, g.uci, g.n_tokens, g.ptr, g.phase};
    }
    w->n_games = n;
    w->games = games;
    return 0;
}

int coordinator_work_load(coordinator_store *s, const coordinator_spec *spec, int64_t job_id,
                          const void *body, size_t body_len, coordinator_work **out, char *err) {
    task_body b = {0};
    size_t analysis = 0;
    int64_t dataset_id = 0;
    game_reader r = {0};
    coordinator_work *w = NULL;
    int rc;
    if ((rc = read_job(s, job_id, spec, &analysis, &dataset_id, err)) != 0 ||
        (rc = parse_body(body, body_len, &b, err)) != 0) {
        return rc;
    }
    const coordinator_analysis *a = &spec->analyses[analysis];
    if (b.analysis != analysis || b.kind != a->kind) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "work: the body is for analysis %zu (%s), the job is analysis %zu (%s)",
                           b.analysis, coordinator_analysis_kind_name(b.kind), analysis,
                           coordinator_analysis_kind_name(a->kind));
    }
    if (b.from < spec->game_from || b.to > spec->game_to) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "work: games [%llu, %llu) are outside the sweep's [%llu, %llu)",
                           (unsigned long long)b.from, (unsigned long long)b.to,
                           (unsigned long long)spec->game_from, (unsigned long long)spec->game_to);
    }
    if (a->kind == COORDINATOR_ANALYSIS_PATCH) {
        size_t k = 0;
        while (k < a->patch.n_cutoffs && a->patch.cutoffs[k] != b.cutoff) {
            k++;
        }
        if (k == a->patch.n_cutoffs) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "work: cut-off %zu is not one of analysis %zu", b.cutoff, analysis);
        }
    }
    w = work_new();
    if (w == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "work: out of memory");
        goto fail;
    }
    w->kind = a->kind;
    w->analysis = analysis;
    w->params = a;
    w->game_from = b.from;
    w->game_to = b.to;
    r = (game_reader){s, dataset_id};
    rc = a->kind == COORDINATOR_ANALYSIS_PATCH ? load_patch(&r, w, &b, err)
                                               : load_games(&r, w, &b, err);
    if (rc != 0) {
        goto fail;
    }
    *out = w;
    return 0;

fail:
    coordinator_work_destroy(&w);
    return rc;
}
