/*
 * cmd_plot: `chesslens plot`, one figure of a sweep as an SVG file, and the figure builders that
 * `chesslens report` shares (cli_plot_figure). Each builder reads what it needs and hands plain
 * arrays to plot/, which draws them:
 *
 * - patch, neurons, legal: from the store's views (patch_effects, neuron_stats, legal_stats),
 *   averaged in SQL; no model needed.
 * - logit-lens, board, attn-diff: a forward pass of the sweep's own model on a game of its
 *   dataset (the `games` view), through model/ and interp/ on the CPU. The model directory is
 *   the one the store recorded for the sweep (or --model), and its model.safetensors must have
 *   the SHA-256 the store recorded: a figure drawn from other weights than the sweep's would
 *   silently disagree with its stored results.
 *
 * docs/PLOTS.md says what each figure shows and where its numbers come from. A figure whose data
 * the sweep lacks is an error naming what is missing (COMMON_ERR_NOT_FOUND), which the report
 * turns into a note and the plot command into exit 1.
 */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sqlite3.h>

#include "chess/chess.h"
#include "cli/cli_int.h"
#include "common/common.h"
#include "coordinator/coordinator.h"
#include "coordinator/wire.h"
#include "interp/interp.h"
#include "plot/plot.h"

#define DEFAULT_TOP 32 /* neurons per layer in the neurons figure */
/* The board's colour scale spans at most this many nats below the most probable square, so
 * that the squares worth looking at keep their contrast; lower values take the palest colour
 * (their hover title still gives them). */
#define BOARD_RANGE_NATS 12.0

const char *const cli_plot_kind_names[CLI_PLOT_KIND_COUNT + 1] = {
    "patch", "logit-lens", "board", "attn-diff", "neurons", "legal", NULL};

struct cli_plot_ctx {
    coordinator_store *store;
    sqlite3 *db;
    char sweep[COORDINATOR_MAX_NAME + 1];
    int64_t sweep_id;
    char *spec_text;     /* canonical spec JSON */
    json_t *spec;        /* parsed spec_text */
    const char *dataset; /* in spec */
    int64_t game_from, game_to;
    char *model_path; /* as the store recorded it */
    char model_sha256[65];
    const char *model_override; /* --model, or NULL */
    long threads;
    /* the engine, loaded on first use by a forward figure */
    model *m;
    model_backend *be;
    model_session *s;
};

/* ---- small helpers ---- */

/* A list of owned strings (labels). */
typedef struct strs {
    char **v;
    size_t n, cap;
} strs;

static int strs_add(strs *s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int strs_add(strs *s, const char *fmt, ...) {
    if (s->n == s->cap) {
        size_t cap = s->cap > 0 ? 2 * s->cap : 16;
        char **v = realloc(s->v, cap * sizeof *v);
        if (v == NULL) {
            return COMMON_ERR_NOMEM;
        }
        s->v = v;
        s->cap = cap;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (p == NULL) {
        return COMMON_ERR_NOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->v[s->n++] = p;
    return 0;
}

static void strs_free(strs *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->v[i]);
    }
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int nomem(char *err) {
    return common_fail(err, COMMON_ERR_NOMEM, "plot: out of memory");
}

static int sql_prepare(cli_plot_ctx *c, const char *sql, sqlite3_stmt **st, const char *what,
                       char *err) {
    if (sqlite3_prepare_v2(c->db, sql, -1, st, NULL) != SQLITE_OK) {
        return common_fail(err, COMMON_ERR_IO, "sqlite3_prepare(%s): %s", what,
                           sqlite3_errmsg(c->db));
    }
    return 0;
}

static int sql_step_error(cli_plot_ctx *c, const char *what, char *err) {
    return common_fail(err, COMMON_ERR_IO, "sqlite3_step(%s): %s", what, sqlite3_errmsg(c->db));
}

/* The index of name in list[n], or -1. */
static long find_name(const char *const *list, size_t n, const char *name) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], name) == 0) {
            return (long)i;
        }
    }
    return -1;
}

/* ---- the context ---- */

int cli_plot_ctx_new(cli_plot_ctx **out, const char *db_path, const char *sweep,
                     const char *model_dir, long threads, char *err) {
    struct stat st;
    if (stat(db_path, &st) != 0) {
        return common_fail(err, COMMON_ERR_NOT_FOUND, "no database %s", db_path);
    }
    cli_plot_ctx *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return nomem(err);
    }
    c->model_override = model_dir;
    c->threads = threads;
    snprintf(c->sweep, sizeof c->sweep, "%s", sweep);
    int rc = coordinator_store_open_readonly(&c->store, db_path, 0, err);
    if (rc == 0) {
        c->db = coordinator_store_db(c->store);
        rc = coordinator_sweep_find(c->store, sweep, &c->sweep_id, err);
        if (rc == COMMON_ERR_NOT_FOUND) {
            rc = common_fail(err, rc, "no sweep '%s' in %s", sweep, db_path);
        }
    }
    if (rc == 0) {
        rc = coordinator_sweep_dispatch_info(c->store, c->sweep_id, &c->spec_text, &c->model_path,
                                             c->model_sha256, err);
    }
    json_error_t jerr;
    if (rc == 0 && (c->spec = json_loads(c->spec_text, 0, &jerr)) == NULL) {
        rc =
            common_fail(err, COMMON_ERR_PARSE, "sweep '%s': its stored spec: %s", sweep, jerr.text);
    }
    json_t *games = rc == 0 ? json_object_get(c->spec, "games") : NULL;
    c->dataset = rc == 0 ? json_string_value(json_object_get(c->spec, "dataset")) : NULL;
    if (rc == 0 && (c->dataset == NULL || !json_is_array(games) || json_array_size(games) != 2 ||
                    !json_is_array(json_object_get(c->spec, "analyses")))) {
        rc = common_fail(err, COMMON_ERR_PARSE, "sweep '%s': its stored spec lacks a field", sweep);
    }
    if (rc != 0) {
        cli_plot_ctx_destroy(&c);
        return rc;
    }
    c->game_from = json_integer_value(json_array_get(games, 0));
    c->game_to = json_integer_value(json_array_get(games, 1));
    *out = c;
    return 0;
}

void cli_plot_ctx_destroy(cli_plot_ctx **c) {
    if (c == NULL || *c == NULL) {
        return;
    }
    model_session_destroy(&(*c)->s);
    model_backend_destroy(&(*c)->be);
    model_destroy(&(*c)->m);
    json_decref((*c)->spec);
    free((*c)->spec_text);
    free((*c)->model_path);
    coordinator_store_close(&(*c)->store);
    free(*c);
    *c = NULL;
}

struct coordinator_store *cli_plot_ctx_store(cli_plot_ctx *c) {
    return c->store;
}

int64_t cli_plot_ctx_sweep_id(const cli_plot_ctx *c) {
    return c->sweep_id;
}

const char *cli_plot_ctx_spec(const cli_plot_ctx *c) {
    return c->spec_text;
}

/* Loads the sweep's model once, after checking its weights are the ones the sweep ran with. */
static int engine(cli_plot_ctx *c, char *err) {
    if (c->s != NULL) {
        return 0;
    }
    const char *dir = c->model_override != NULL ? c->model_override : c->model_path;
    char path[4096], sha[65];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char why[COMMON_ERR_LEN] = "";
    int rc = coordinator_digest_file_hex(path, sha, why);
    if (rc != 0) {
        return common_fail(err, rc,
                           "the sweep's model %s cannot be read (%s); pass --model DIR with the "
                           "same weights",
                           dir, why);
    }
    if (strcmp(sha, c->model_sha256) != 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "model %s has other weights than sweep '%s' ran with "
                           "(model.safetensors SHA-256 %.12s..., the store recorded %.12s...)",
                           dir, c->sweep, sha, c->model_sha256);
    }
    if ((rc = model_load(&c->m, dir, NULL, err)) == 0 &&
        (rc = model_backend_cpu_new(&c->be, (int)c->threads, err)) == 0) {
        rc = model_session_new(&c->s, c->m, c->be, err);
    }
    return rc;
}

/* The analysis of the spec of this kind ("patch", "neuron_stats", ...): index want when it is
 * >= 0 (which must be of that kind), else the first. */
static int find_analysis(cli_plot_ctx *c, const char *kind, long want, long *index, json_t **obj,
                         char *err) {
    json_t *list = json_object_get(c->spec, "analyses");
    size_t n = json_array_size(list);
    for (size_t i = 0; i < n; i++) {
        json_t *a = json_array_get(list, i);
        const char *k = json_string_value(json_object_get(a, "kind"));
        if (want >= 0 && (size_t)want != i) {
            continue;
        }
        if (k != NULL && strcmp(k, kind) == 0) {
            *index = (long)i;
            *obj = a;
            return 0;
        }
        if (want >= 0) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "analysis %ld of sweep '%s' is a %s analysis, not %s", want,
                               c->sweep, k != NULL ? k : "?", kind);
        }
    }
    if (want >= 0) {
        return common_fail(err, COMMON_ERR_NOT_FOUND, "sweep '%s' has no analysis %ld (it has %zu)",
                           c->sweep, want, n);
    }
    return common_fail(err, COMMON_ERR_NOT_FOUND, "sweep '%s' has no %s analysis", c->sweep, kind);
}

/* ---- games ---- */

typedef struct game_text {
    char *uci;
    chess_token *tokens; /* [n] */
    size_t n;            /* tokens, `<s>` included */
} game_text;

static void game_free(game_text *g) {
    free(g->uci);
    free(g->tokens);
    memset(g, 0, sizeof *g);
}

static int game_load(cli_plot_ctx *c, long game, game_text *g, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = sql_prepare(c, "SELECT uci FROM games WHERE dataset = ?1 AND game = ?2", &st,
                         "read game", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, c->dataset, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, game);
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        const char *uci = (const char *)sqlite3_column_text(st, 0);
        g->uci = strdup(uci != NULL ? uci : "");
        rc = g->uci != NULL ? chess_uci_split(g->uci, &g->tokens, &g->n, err) : nomem(err);
    } else if (s == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "dataset '%s' has no game %ld", c->dataset,
                         game);
    } else {
        rc = sql_step_error(c, "read game", err);
    }
    sqlite3_finalize(st);
    if (rc != 0) {
        game_free(g);
    }
    return rc;
}

/* The prompt length of a forward figure: cutoff, or the whole game when it is 0. */
static int prompt_length(const game_text *g, long game, long cutoff, size_t *T, char *err) {
    if (cutoff > 0 && (size_t)cutoff > g->n) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "game %ld has %zu tokens, fewer than --cutoff %ld", game, g->n, cutoff);
    }
    *T = cutoff > 0 ? (size_t)cutoff : g->n;
    return 0;
}

/* Model ids of the first T tokens of g: ids [T] (caller frees). */
static int prefix_ids(cli_plot_ctx *c, const game_text *g, size_t T, int32_t **ids, char *err) {
    const model_config *cfg = model_get_config(c->m);
    if (T > (size_t)cfg->n_ctx) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "a prompt of %zu tokens is longer than the model's n_ctx (%d): choose "
                           "--cutoff",
                           T, cfg->n_ctx);
    }
    int32_t *v = malloc((T > 0 ? T : 1) * sizeof *v);
    if (v == NULL) {
        return nomem(err);
    }
    const model_tokenizer *tok = model_get_tokenizer(c->m);
    for (size_t t = 0; t < T; t++) {
        v[t] = model_tokenizer_id(tok, g->tokens[t].text);
        if (v[t] < 0) {
            free(v);
            return common_fail(err, COMMON_ERR_NOT_FOUND,
                               "token '%s' at position %zu is not in the model's vocabulary",
                               g->tokens[t].text, t);
        }
    }
    *ids = v;
    return 0;
}

static void filter_text(char *out, size_t cap, long game, long cutoff) {
    size_t n = 0;
    out[0] = '\0';
    if (game >= 0) {
        n += (size_t)snprintf(out + n, cap - n, ", game %ld", game);
    }
    if (cutoff > 0 && n < cap) {
        snprintf(out + n, cap - n, ", cut-off %ld", cutoff);
    }
}

/* ---- patch ---- */

/* The order components of the "every" kinds are shown in: TL's. */
static int component_rank(const char *name) {
    static const char *const order[] = {"resid_pre", "attn_out", "mlp_out", "out",
                                        "q",         "k",        "v",       "pattern"};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        if (strcmp(order[i], name) == 0) {
            return (int)i;
        }
    }
    return 100;
}

static int metric_text(json_t *analysis, char *out, size_t cap) {
    json_t *metric = json_object_get(analysis, "metric");
    const char *kind = json_string_value(json_object_get(metric, "kind"));
    bool normalize = json_is_true(json_object_get(metric, "normalize"));
    json_t *tokens = json_object_get(metric, "tokens");
    size_t n = (size_t)snprintf(out, cap, "%s%s", normalize ? "normalised " : "",
                                kind != NULL ? kind : "metric");
    for (size_t i = 0; i < json_array_size(tokens) && n < cap; i++) {
        const char *t = json_string_value(json_array_get(tokens, i));
        n += (size_t)snprintf(out + n, cap - n, "%s%s", i == 0 ? " (" : ", ", t != NULL ? t : "?");
        if (i + 1 == json_array_size(tokens) && n < cap) {
            n += (size_t)snprintf(out + n, cap - n, ")");
        }
    }
    return 0;
}

static int fig_patch(cli_plot_ctx *c, const cli_plot_args *a, bool standalone, char **out,
                     size_t *len, char *err) {
    long ai = 0;
    json_t *an = NULL;
    int rc = find_analysis(c, "patch", a->analysis, &ai, &an, err);
    if (rc != 0) {
        return rc;
    }
    const char *kind = json_string_value(json_object_get(an, "patch"));
    kind = kind != NULL ? kind : "?";
    /* the source position is the column of the (destination, source) kind, read at the last
     * destination (query) position of each pair */
    bool dest_src = strcmp(kind, "attn_head_pattern_dest_src_pos") == 0;
    /* The rows are averaged here rather than by a GROUP BY: sorting millions of values into
     * groups costs SQLite several times what streaming them does (3.3 million values of the
     * demo: 12 s against 3 s). */
    const char *sql_pos = "SELECT component, layer, head, pos, value FROM patch_effects"
                          " WHERE sweep = ?1 AND analysis = ?2 AND (?3 < 0 OR game = ?3) AND (?4 "
                          "<= 0 OR cutoff = ?4)";
    const char *sql_src =
        "SELECT component, layer, head, src_pos, value FROM patch_effects"
        " WHERE sweep = ?1 AND analysis = ?2 AND (?3 < 0 OR game = ?3) AND (?4 <= 0 OR cutoff = ?4)"
        " AND pos = cutoff - 1";
    sqlite3_stmt *st = NULL;
    if ((rc = sql_prepare(c, dest_src ? sql_src : sql_pos, &st, "read patch_effects", err)) != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, c->sweep, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, ai);
    sqlite3_bind_int64(st, 3, a->game);
    sqlite3_bind_int64(st, 4, a->cutoff);

    /* the cells: (component, layer, head, column) -> sum and count of the non-NULL values,
     * found through an open-addressing index of their packed keys */
    typedef struct cell {
        int comp;
        long layer, head, col; /* head -1: none; col -1: all positions */
        double sum, mean;
        uint32_t count;
        uint64_t key;
    } cell;
    cell *cells = NULL;
    size_t n_cells = 0, cap_cells = 0;
    uint32_t *index = NULL; /* [index_cap]: cell number + 1, 0 = empty */
    size_t index_cap = 0;
    strs comps = {0};
    bool has_null_comp = false, has_head = false, all_pos = false;
    long max_layer = -1, max_head = -1, max_col = -1;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *comp = (const char *)sqlite3_column_text(st, 0);
        long k = -1;
        if (comp != NULL && (k = find_name((const char *const *)comps.v, comps.n, comp)) < 0) {
            if (comps.n == PLOT_MAX_PANELS || strs_add(&comps, "%s", comp) != 0) {
                rc = comps.n == PLOT_MAX_PANELS ? common_fail(err, COMMON_ERR_INVALID,
                                                              "patch_effects: too many components")
                                                : nomem(err);
                break;
            }
            k = (long)comps.n - 1;
        }
        long layer = (long)sqlite3_column_int64(st, 1);
        long head = sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 2);
        long col = sqlite3_column_type(st, 3) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 3);
        if (layer < 0 || layer >= MODEL_MAX_LAYERS || head < -1 || head >= MODEL_MAX_HEADS ||
            col < -1 || col >= MODEL_MAX_CTX) {
            rc = common_fail(err, COMMON_ERR_INVALID,
                             "patch_effects: a row at layer %ld, head %ld, position %ld", layer,
                             head, col);
            break;
        }
        uint64_t key = (uint64_t)(k + 1) << 48 | (uint64_t)layer << 32 |
                       (uint64_t)(head + 1) << 20 | (uint64_t)(col + 1);
        if (2 * (n_cells + 1) > index_cap) {
            /* grow the index (and rehash) before it is half full */
            size_t cap = index_cap > 0 ? 2 * index_cap : 4096;
            uint32_t *bigger = calloc(cap, sizeof *bigger);
            if (bigger == NULL) {
                rc = nomem(err);
                break;
            }
            for (size_t i = 0; i < n_cells; i++) {
                size_t h = (size_t)(cells[i].key * 0x9E3779B97F4A7C15u >> 20) & (cap - 1);
                while (bigger[h] != 0) {
                    h = (h + 1) & (cap - 1);
                }
                bigger[h] = (uint32_t)(i + 1);
            }
            free(index);
            index = bigger;
            index_cap = cap;
        }
        size_t h = (size_t)(key * 0x9E3779B97F4A7C15u >> 20) & (index_cap - 1);
        while (index[h] != 0 && cells[index[h] - 1].key != key) {
            h = (h + 1) & (index_cap - 1);
        }
        if (index[h] == 0) {
            if (n_cells == cap_cells) {
                cap_cells = cap_cells > 0 ? 2 * cap_cells : 1024;
                cell *p = realloc(cells, cap_cells * sizeof *p);
                if (p == NULL) {
                    rc = nomem(err);
                    break;
                }
                cells = p;
            }
            cells[n_cells] =
                (cell){.comp = (int)k, .layer = layer, .head = head, .col = col, .key = key};
            index[h] = (uint32_t)++n_cells;
            has_null_comp = has_null_comp || k < 0;
            has_head = has_head || head >= 0;
            all_pos = all_pos || col < 0;
            max_layer = layer > max_layer ? layer : max_layer;
            max_head = head > max_head ? head : max_head;
            max_col = col > max_col ? col : max_col;
        }
        cell *e = &cells[index[h] - 1];
        if (sqlite3_column_type(st, 4) != SQLITE_NULL) {
            e->sum += sqlite3_column_double(st, 4);
            e->count++;
        }
    }
    free(index);
    for (size_t i = 0; i < n_cells; i++) {
        cells[i].mean = cells[i].count > 0 ? cells[i].sum / cells[i].count : NAN;
    }
    if (rc == 0 && s != SQLITE_DONE) {
        rc = sql_step_error(c, "read patch_effects", err);
    }
    sqlite3_finalize(st);
    char filt[96];
    filter_text(filt, sizeof filt, a->game, a->cutoff);
    if (rc == 0 && n_cells == 0) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND,
                         "sweep '%s' has no patch_effects rows for analysis %ld%s", c->sweep, ai,
                         filt);
    }
    if (rc == 0 && max_layer > 4096) {
        rc = common_fail(err, COMMON_ERR_INVALID, "patch_effects: layer %ld", max_layer);
    }
    /* panels: one per component (TL's order), or one when the kind has none */
    size_t n_panels = has_null_comp ? 1 : comps.n;
    int order[PLOT_MAX_PANELS];
    if (rc == 0 && n_panels > PLOT_MAX_PANELS) {
        rc = common_fail(err, COMMON_ERR_INVALID, "patch_effects: %zu components", n_panels);
    }
    for (size_t i = 0; rc == 0 && i < n_panels; i++) {
        order[i] = has_null_comp ? -1 : (int)i;
    }
    for (size_t i = 1; rc == 0 && !has_null_comp && i < n_panels; i++) {
        for (size_t j = i; j > 0; j--) {
            int x = order[j - 1], y = order[j];
            int rx = component_rank(comps.v[x]), ry = component_rank(comps.v[y]);
            if (rx > ry || (rx == ry && strcmp(comps.v[x], comps.v[y]) > 0)) {
                order[j - 1] = y;
                order[j] = x;
            }
        }
    }
    size_t H = has_head ? (size_t)max_head + 1 : 1;
    size_t n_rows = (size_t)(max_layer + 1) * H;
    size_t n_cols = all_pos ? 1 : (size_t)max_col + 1;
    strs rows = {0}, ticks = {0}, details = {0};
    game_text g = {0};
    float *values = NULL;
    uint32_t *counts = NULL;
    plot_panel panels[PLOT_MAX_PANELS];
    if (rc == 0 && (n_cols > (1u << 16) || n_rows > (1u << 16))) {
        rc = common_fail(err, COMMON_ERR_INVALID, "patch_effects: a grid of %zu x %zu", n_rows,
                         n_cols);
    }
    if (rc == 0) {
        values = malloc(n_panels * n_rows * n_cols * sizeof *values);
        counts = calloc(n_panels * n_rows * n_cols, sizeof *counts);
        rc = values == NULL || counts == NULL ? nomem(err) : 0;
    }
    for (size_t i = 0; rc == 0 && i < n_panels * n_rows * n_cols; i++) {
        values[i] = NAN;
    }
    for (size_t i = 0; rc == 0 && i < n_cells; i++) {
        const cell *e = &cells[i];
        size_t panel = 0;
        while (panel < n_panels && order[panel] != e->comp) {
            panel++;
        }
        size_t r = (size_t)e->layer * H + (size_t)(e->head >= 0 ? e->head : 0);
        size_t col = e->col >= 0 ? (size_t)e->col : 0;
        size_t k = (panel * n_rows + r) * n_cols + col;
        values[k] = (float)e->mean;
        counts[k] = e->count;
    }
    for (size_t r = 0; rc == 0 && r < n_rows; r++) {
        rc = has_head ? strs_add(&rows, "L%zuH%zu", r / H, r % H) : strs_add(&rows, "%zu", r);
        rc = rc != 0 ? nomem(err) : 0;
    }
    /* columns: the game's tokens when one game is shown, else position numbers */
    if (rc == 0 && !all_pos && a->game >= 0) {
        rc = game_load(c, a->game, &g, err);
        for (size_t t = 0; rc == 0 && t < n_cols; t++) {
            const char *tok = t < g.n ? g.tokens[t].text : "?";
            if (strs_add(&ticks, "%s", tok) != 0 ||
                strs_add(&details, "%s %zu (%s)", dest_src ? "src pos" : "pos", t, tok) != 0) {
                rc = nomem(err);
            }
        }
    }
    bool numbered = ticks.n == 0;
    for (size_t t = 0; rc == 0 && numbered && t < n_cols; t++) {
        if ((all_pos ? strs_add(&ticks, "all") : strs_add(&ticks, "%zu", t)) != 0 ||
            (all_pos ? strs_add(&details, "all positions")
                     : strs_add(&details, "%s %zu", dest_src ? "src pos" : "pos", t)) != 0) {
            rc = nomem(err);
        }
    }
    char title[256], subtitle[512], metric[160];
    if (rc == 0) {
        for (size_t i = 0; i < n_panels; i++) {
            panels[i] = (plot_panel){
                .title = order[i] >= 0 ? comps.v[order[i]] : NULL,
                .n_rows = n_rows,
                .n_cols = n_cols,
                .row_labels = (const char *const *)rows.v,
                .col_labels = (const char *const *)ticks.v,
                .col_details = (const char *const *)details.v,
                .values = values + i * n_rows * n_cols,
                .counts = counts + i * n_rows * n_cols,
            };
        }
        metric_text(an, metric, sizeof metric);
        snprintf(title, sizeof title, "Activation patching: %s (analysis %ld)", kind, ai);
        snprintf(subtitle, sizeof subtitle,
                 "mean %s over the clean/corrupted pairs of sweep '%s'%s%s; hover a cell for its "
                 "value and pair count",
                 metric, c->sweep, filt, dest_src ? " (at each pair's last query position)" : "");
        /* a normalised metric or a logit difference is signed around "no effect" (0); a raw
         * logit, log-prob or legal mass is a level, shown on a sequential scale */
        json_t *m = json_object_get(an, "metric");
        const char *mk = json_string_value(json_object_get(m, "kind"));
        bool is_signed = json_is_true(json_object_get(m, "normalize")) ||
                         (mk != NULL && strcmp(mk, "logit_diff") == 0);
        plot_heatmap h = {
            .title = title,
            .subtitle = subtitle,
            .row_axis = has_head ? "layer, head" : "layer",
            .col_axis = all_pos    ? NULL
                        : dest_src ? "source position"
                                   : "position",
            .value_label = metric,
            .scale = is_signed ? PLOT_SCALE_DIVERGING : PLOT_SCALE_SEQUENTIAL,
            .panels = panels,
            .n_panels = n_panels,
            .panels_per_row = all_pos ? n_panels : 1,
        };
        rc = plot_heatmap_svg(&h, standalone, out, len, err);
    }
    free(cells);
    free(values);
    free(counts);
    strs_free(&comps);
    strs_free(&rows);
    strs_free(&ticks);
    strs_free(&details);
    game_free(&g);
    return rc;
}

/* ---- logit lens (direct logit attribution) ---- */

static int fig_logit_lens(cli_plot_ctx *c, const cli_plot_args *a, bool standalone, char **out,
                          size_t *len, char *err) {
    long game = a->game >= 0 ? a->game : (long)c->game_from;
    game_text g = {0};
    size_t T = 0;
    int32_t *ids = NULL, *targets = NULL;
    interp_acts **acts = NULL;
    interp_stack *dec = NULL, *heads = NULL;
    float *attr_dec = NULL, *attr_heads = NULL;
    strs ticks = {0}, details = {0};
    int rc = game_load(c, game, &g, err);
    if (rc == 0) {
        rc = prompt_length(&g, game, a->cutoff, &T, err);
    }
    if (rc == 0) {
        rc = engine(c, err);
    }
    /* the next token exists at every position but the game's last */
    size_t n_cols = T < g.n ? T : T - 1;
    if (rc == 0 && n_cols == 0) {
        rc = common_fail(err, COMMON_ERR_INVALID, "game %ld: no position has a next token", game);
    }
    if (rc == 0) {
        rc = prefix_ids(c, &g, T, &ids, err);
    }
    if (rc == 0) {
        targets = malloc(T * sizeof *targets); /* [T] */
        rc = targets == NULL ? nomem(err) : 0;
    }
    const model_tokenizer *tok = rc == 0 ? model_get_tokenizer(c->m) : NULL;
    for (size_t t = 0; rc == 0 && t < T; t++) {
        targets[t] = t + 1 < g.n ? model_tokenizer_id(tok, g.tokens[t + 1].text) : ids[t];
        if (targets[t] < 0) {
            rc = common_fail(err, COMMON_ERR_NOT_FOUND, "token '%s' is not in the vocabulary",
                             g.tokens[t + 1].text);
        }
    }
    if (rc == 0) {
        rc = interp_run_acts(c->s, ids, NULL, 1, T, false, &acts, err);
    }
    /* TL: decompose_resid() and stack_head_results() at the final layer without apply_ln;
     * logit_attrs applies apply_ln_to_stack(stack, L) itself */
    if (rc == 0) {
        rc = interp_decompose_resid(c->m, acts[0], -1, false, INTERP_DECOMP_ALL, true, false, &dec,
                                    err);
    }
    if (rc == 0) {
        rc = interp_stack_head_results(c->m, acts[0], -1, false, false, &heads, err);
    }
    if (rc == 0) {
        rc = interp_logit_attrs(c->m, acts[0], dec, targets, NULL, &attr_dec, err); /* [n, T] */
    }
    if (rc == 0) {
        rc = interp_logit_attrs(c->m, acts[0], heads, targets, NULL, &attr_heads, err);
    }
    float *grid_dec = NULL, *grid_heads = NULL; /* [n, n_cols] */
    if (rc == 0) {
        grid_dec = malloc(dec->n * n_cols * sizeof *grid_dec);
        grid_heads = malloc(heads->n * n_cols * sizeof *grid_heads);
        rc = grid_dec == NULL || grid_heads == NULL ? nomem(err) : 0;
    }
    for (size_t i = 0; rc == 0 && i < dec->n; i++) {
        memcpy(grid_dec + i * n_cols, attr_dec + i * T, n_cols * sizeof *grid_dec);
    }
    for (size_t i = 0; rc == 0 && i < heads->n; i++) {
        memcpy(grid_heads + i * n_cols, attr_heads + i * T, n_cols * sizeof *grid_heads);
    }
    for (size_t t = 0; rc == 0 && t < n_cols; t++) {
        if (strs_add(&ticks, "%s", g.tokens[t].text) != 0 ||
            strs_add(&details, "pos %zu (%s) -> next %s", t, g.tokens[t].text,
                     g.tokens[t + 1].text) != 0) {
            rc = nomem(err);
        }
    }
    if (rc == 0) {
        char title[256], subtitle[512];
        snprintf(title, sizeof title, "Direct logit attribution to the next token: game %ld", game);
        snprintf(subtitle, sizeof subtitle,
                 "first %zu tokens; each component's contribution to the logit of the token that "
                 "actually comes next (TL logit_attrs, frozen final LayerNorm scale)",
                 T);
        plot_panel panels[2] = {
            {.title = "decompose_resid",
             .n_rows = dec->n,
             .n_cols = n_cols,
             .row_labels = (const char *const *)dec->labels,
             .col_labels = (const char *const *)ticks.v,
             .col_details = (const char *const *)details.v,
             .values = grid_dec},
            {.title = "stack_head_results",
             .n_rows = heads->n,
             .n_cols = n_cols,
             .row_labels = (const char *const *)heads->labels,
             .col_labels = (const char *const *)ticks.v,
             .col_details = (const char *const *)details.v,
             .values = grid_heads},
        };
        plot_heatmap h = {
            .title = title,
            .subtitle = subtitle,
            .row_axis = "component",
            .col_axis = "position (its token)",
            .value_label = "logit contribution",
            .scale = PLOT_SCALE_DIVERGING,
            .panels = panels,
            .n_panels = 2,
            .panels_per_row = 1,
        };
        rc = plot_heatmap_svg(&h, standalone, out, len, err);
    }
    if (acts != NULL) {
        interp_acts_destroy(&acts[0]);
    }
    free(acts);
    free(ids);
    free(targets);
    free(attr_dec);
    free(attr_heads);
    free(grid_dec);
    free(grid_heads);
    interp_stack_destroy(&dec);
    interp_stack_destroy(&heads);
    strs_free(&ticks);
    strs_free(&details);
    game_free(&g);
    return rc;
}

/* ---- board ---- */

static int fig_board(cli_plot_ctx *c, const cli_plot_args *a, bool standalone, char **out,
                     size_t *len, char *err) {
    long game = a->game >= 0 ? a->game : (long)c->game_from;
    game_text g = {0};
    size_t T = 0, n_info = 0;
    int32_t *ids = NULL;
    interp_acts **acts = NULL;
    chess_token_info *info = NULL;
    chess_game *cg = NULL;
    char *moves = NULL;
    int rc = game_load(c, game, &g, err);
    if (rc == 0) {
        rc = prompt_length(&g, game, a->cutoff, &T, err);
    }
    if (rc == 0) {
        rc = engine(c, err);
    }
    if (rc == 0) {
        rc = prefix_ids(c, &g, T, &ids, err);
    }
    if (rc == 0) {
        rc = interp_run_acts(c->s, ids, NULL, 1, T, false, &acts, err);
    }
    if (rc == 0) {
        rc = chess_legal_tokens(NULL, g.uci, &info, &n_info, err);
        rc = rc == 0 && n_info < T ? common_fail(err, COMMON_ERR_INVALID, "game %ld", game) : rc;
    }
    plot_board b;
    memset(&b, 0, sizeof b);
    b.highlight = -1;
    size_t n_moves = 0;
    if (rc == 0) {
        /* the moves completed within the prompt: the last token's move is complete when the
         * token after the prompt starts another move (or the game ends there); a move in
         * progress shows the position before it, its from-square outlined */
        int last_move = g.tokens[T - 1].move_index;
        bool complete = T == g.n || g.tokens[T].move_index != last_move;
        n_moves = (size_t)(last_move + 1) - (complete ? 0 : 1);
        if (!complete) {
            size_t first = T - 1;
            while (first > 0 && g.tokens[first - 1].move_index == last_move) {
                first--;
            }
            b.highlight = chess_square_parse(g.tokens[first].text);
        }
        moves = strdup(g.uci);
        rc = moves == NULL ? nomem(err) : 0;
    }
    if (rc == 0) {
        /* cut the move list after n_moves words */
        size_t words = 0;
        char *p = moves;
        while (*p != '\0' && words < n_moves) {
            while (*p == ' ') {
                p++;
            }
            while (*p != '\0' && *p != ' ') {
                p++;
            }
            words++;
        }
        *p = '\0';
        rc = chess_game_new(&cg, NULL, err);
        if (rc == 0 && n_moves > 0) {
            rc = chess_game_push_uci_line(cg, moves, err);
        }
    }
    if (rc == 0) {
        static const char letters[] = "PNBRQKpnbrqk";
        const chess_position *pos = chess_game_position(cg);
        for (int sq = 0; sq < 64; sq++) {
            b.pieces[sq] = pos->board[sq] < 12 ? letters[pos->board[sq]] : 0;
        }
        b.marked = info[T - 1].next_squares;
        /* log_softmax over the whole vocabulary at the last position, read at the squares */
        size_t n = 0;
        const float *logits = interp_acts_get(acts[0], (model_hook){MODEL_HOOK_LOGITS, -1}, &n);
        size_t V = n / T;
        const float *row = logits + (T - 1) * V; /* [V] */
        double mx = -INFINITY, sum = 0;
        for (size_t v = 0; v < V; v++) {
            mx = row[v] > mx ? row[v] : mx;
        }
        for (size_t v = 0; v < V; v++) {
            sum += exp(row[v] - mx);
        }
        double lse = mx + log(sum);
        const model_tokenizer *tok = model_get_tokenizer(c->m);
        double best = -INFINITY, worst = INFINITY;
        for (int sq = 0; sq < 64; sq++) {
            char name[3];
            chess_square_name(sq, name);
            int32_t id = model_tokenizer_id(tok, name);
            b.values[sq] = id >= 0 && (size_t)id < V ? (float)(row[id] - lse) : NAN;
            if (!isnan(b.values[sq])) {
                best = fmax(best, b.values[sq]);
                worst = fmin(worst, b.values[sq]);
            }
        }
        if (!(best > -INFINITY)) {
            rc = common_fail(err, COMMON_ERR_NOT_FOUND, "the model's vocabulary has no squares");
        } else {
            b.fixed_range = true;
            b.hi = best;
            b.lo = fmax(worst, best - BOARD_RANGE_NATS);
            b.lo = b.lo < b.hi ? b.lo : b.hi - 1;
        }
    }
    if (rc == 0) {
        char title[256], subtitle[512];
        const chess_token *last = &g.tokens[T - 1];
        snprintf(title, sizeof title, "Next-square log-probabilities: game %ld after %zu tokens",
                 game, T);
        snprintf(subtitle, sizeof subtitle,
                 "last token '%s' (%s); %d legal next token%s; the position after %zu move%s",
                 last->text, chess_phase_name(last->phase), info[T - 1].n_next,
                 info[T - 1].n_next == 1 ? "" : "s", n_moves, n_moves == 1 ? "" : "s");
        b.title = title;
        b.subtitle = subtitle;
        b.value_label = "log p(next square)";
        rc = plot_board_svg(&b, standalone, out, len, err);
    }
    if (acts != NULL) {
        interp_acts_destroy(&acts[0]);
    }
    free(acts);
    free(ids);
    free(info);
    free(moves);
    chess_game_destroy(&cg);
    game_free(&g);
    return rc;
}

/* ---- attention-pattern difference ---- */

/* The game and cut-off of the first patching pair that matches a (game and cut-off may be
 * unset), with its corruption. */
typedef struct pair_info {
    long game, cutoff;
    long corrupt_pos; /* -1 with corrupt_game */
    char clean_token[8], corrupt_token[8];
    long corrupt_game; /* -1 with corrupt_pos */
} pair_info;

static int find_pair(cli_plot_ctx *c, long ai, const cli_plot_args *a, pair_info *p, char *err) {
    /* The largest cut-off of the chosen (or first) game: the longest prompt shows the most. */
    const char *sql =
        "SELECT game, cutoff, corrupt_pos, clean_token, corrupt_token, corrupt_game"
        " FROM patch_effects WHERE sweep = ?1 AND analysis = ?2 AND (?3 < 0 OR game = ?3)"
        " AND (?4 <= 0 OR cutoff = ?4) AND (?5 IS NULL OR corrupt_token = ?5)"
        " AND game = (SELECT MIN(game) FROM patch_effects WHERE sweep = ?1 AND analysis = ?2"
        "   AND (?3 < 0 OR game = ?3) AND (?4 <= 0 OR cutoff = ?4))"
        " ORDER BY cutoff DESC, corrupt_token LIMIT 1";
    sqlite3_stmt *st = NULL;
    int rc = sql_prepare(c, sql, &st, "read patch_effects", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, c->sweep, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, ai);
    sqlite3_bind_int64(st, 3, a->game);
    sqlite3_bind_int64(st, 4, a->cutoff);
    if (a->corrupt != NULL) {
        sqlite3_bind_text(st, 5, a->corrupt, -1, SQLITE_STATIC);
    }
    int s = sqlite3_step(st);
    if (s == SQLITE_ROW) {
        p->game = (long)sqlite3_column_int64(st, 0);
        p->cutoff = (long)sqlite3_column_int64(st, 1);
        p->corrupt_pos =
            sqlite3_column_type(st, 2) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 2);
        const char *ct = (const char *)sqlite3_column_text(st, 3);
        const char *rt = (const char *)sqlite3_column_text(st, 4);
        snprintf(p->clean_token, sizeof p->clean_token, "%s", ct != NULL ? ct : "");
        snprintf(p->corrupt_token, sizeof p->corrupt_token, "%s", rt != NULL ? rt : "");
        p->corrupt_game =
            sqlite3_column_type(st, 5) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 5);
    } else if (s == SQLITE_DONE) {
        char filt[96];
        filter_text(filt, sizeof filt, a->game, a->cutoff);
        rc = common_fail(err, COMMON_ERR_NOT_FOUND,
                         "sweep '%s' has no patching pair of analysis %ld%s%s%s to take the "
                         "corruption from",
                         c->sweep, ai, filt, a->corrupt != NULL ? " corrupted with " : "",
                         a->corrupt != NULL ? a->corrupt : "");
    } else {
        rc = sql_step_error(c, "read patch_effects", err);
    }
    sqlite3_finalize(st);
    return rc;
}

static int fig_attn_diff(cli_plot_ctx *c, const cli_plot_args *a, bool standalone, char **out,
                         size_t *len, char *err) {
    long ai = 0;
    json_t *an = NULL;
    pair_info p;
    memset(&p, 0, sizeof p);
    game_text g = {0}, gc = {0};
    int32_t *clean = NULL, *corrupted = NULL, *tokens = NULL;
    interp_acts **acts = NULL;
    float *diff = NULL;
    strs rows = {0}, ticks = {0}, details = {0};
    int rc = find_analysis(c, "patch", a->analysis, &ai, &an, err);
    if (rc == 0) {
        rc = find_pair(c, ai, a, &p, err);
    }
    if (rc == 0) {
        rc = game_load(c, p.game, &g, err);
    }
    size_t T = (size_t)p.cutoff;
    if (rc == 0 && T > g.n) {
        rc = common_fail(err, COMMON_ERR_INVALID, "game %ld has fewer tokens than cut-off %ld",
                         p.game, p.cutoff);
    }
    if (rc == 0) {
        rc = engine(c, err);
    }
    if (rc == 0) {
        rc = prefix_ids(c, &g, T, &clean, err);
    }
    if (rc == 0 && p.corrupt_game >= 0) {
        rc = game_load(c, p.corrupt_game, &gc, err);
        if (rc == 0 && gc.n < T) {
            rc = common_fail(err, COMMON_ERR_INVALID, "corrupting game %ld is shorter than %zu",
                             p.corrupt_game, T);
        }
        if (rc == 0) {
            rc = prefix_ids(c, &gc, T, &corrupted, err);
        }
    } else if (rc == 0) {
        corrupted = malloc(T * sizeof *corrupted);
        rc = corrupted == NULL ? nomem(err)
                               : interp_corrupt_token(c->m, clean, T, (size_t)p.corrupt_pos,
                                                      p.corrupt_token, corrupted, err);
    }
    if (rc == 0) {
        tokens = malloc(2 * T * sizeof *tokens); /* [2, T]: clean, corrupted */
        rc = tokens == NULL ? nomem(err) : 0;
    }
    if (rc == 0) {
        memcpy(tokens, clean, T * sizeof *tokens);
        memcpy(tokens + T, corrupted, T * sizeof *tokens);
        rc = interp_run_acts(c->s, tokens, NULL, 2, T, true, &acts, err);
    }
    if (rc == 0) {
        rc = interp_pattern_diff(acts[0], acts[1], -1, &diff, err); /* [L, H, T] */
    }
    const model_config *cfg = rc == 0 ? model_get_config(c->m) : NULL;
    size_t L = cfg != NULL ? (size_t)cfg->n_layers : 0, H = cfg != NULL ? (size_t)cfg->n_heads : 0;
    for (size_t r = 0; rc == 0 && r < L * H; r++) {
        rc = strs_add(&rows, "L%zuH%zu", r / H, r % H) != 0 ? nomem(err) : 0;
    }
    for (size_t t = 0; rc == 0 && t < T; t++) {
        bool changed = clean[t] != corrupted[t];
        const char *ct = p.corrupt_game >= 0 ? gc.tokens[t].text : p.corrupt_token;
        int e1 = strs_add(&ticks, "%s%s", g.tokens[t].text, changed ? "*" : "");
        int e2 =
            changed ? strs_add(&details, "src pos %zu (%s, corrupted: %s)", t, g.tokens[t].text, ct)
                    : strs_add(&details, "src pos %zu (%s)", t, g.tokens[t].text);
        rc = e1 != 0 || e2 != 0 ? nomem(err) : 0;
    }
    if (rc == 0) {
        char title[256], subtitle[512];
        snprintf(title, sizeof title,
                 "Attention-pattern difference, clean - corrupted: game %ld, cut-off %ld", p.game,
                 p.cutoff);
        if (p.corrupt_game >= 0) {
            snprintf(subtitle, sizeof subtitle,
                     "query position %zu; corrupted prompt: game %ld (analysis %ld); * marks "
                     "positions whose token differs",
                     T - 1, p.corrupt_game, ai);
        } else {
            snprintf(subtitle, sizeof subtitle,
                     "query position %zu (the last); corruption: position %ld %s -> %s (analysis "
                     "%ld, marked *)",
                     T - 1, p.corrupt_pos, p.clean_token, p.corrupt_token, ai);
        }
        plot_panel panel = {
            .n_rows = L * H,
            .n_cols = T,
            .row_labels = (const char *const *)rows.v,
            .col_labels = (const char *const *)ticks.v,
            .col_details = (const char *const *)details.v,
            .values = diff,
        };
        plot_heatmap h = {
            .title = title,
            .subtitle = subtitle,
            .row_axis = "layer, head",
            .col_axis = "source (key) position",
            .value_label = "attention weight, clean - corrupted",
            .scale = PLOT_SCALE_DIVERGING,
            .panels = &panel,
            .n_panels = 1,
        };
        rc = plot_heatmap_svg(&h, standalone, out, len, err);
    }
    if (acts != NULL) {
        interp_acts_destroy(&acts[0]);
        interp_acts_destroy(&acts[1]);
    }
    free(acts);
    free(clean);
    free(corrupted);
    free(tokens);
    free(diff);
    strs_free(&rows);
    strs_free(&ticks);
    strs_free(&details);
    game_free(&g);
    game_free(&gc);
    return rc;
}

/* ---- neurons ---- */

static const char *const phases[] = {"all",      "slice",      "white_from",
                                     "white_to", "black_from", "black_to"};
#define N_PHASES 6

static int fig_neurons(cli_plot_ctx *c, const cli_plot_args *a, bool standalone, char **out,
                       size_t *len, char *err) {
    long ai = 0;
    json_t *an = NULL;
    int rc = find_analysis(c, "neuron_stats", a->analysis, &ai, &an, err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_stmt *st = NULL;
    if ((rc = sql_prepare(c,
                          "SELECT MAX(layer), MAX(neuron), MAX(count) FROM neuron_stats"
                          " WHERE sweep = ?1 AND analysis = ?2",
                          &st, "read neuron_stats", err)) != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, c->sweep, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, ai);
    long L = -1, M = -1, positions = 0;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        L = (long)sqlite3_column_int64(st, 0) + 1;
        M = (long)sqlite3_column_int64(st, 1) + 1;
        positions = (long)sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    if (L <= 0 || M <= 0) {
        return common_fail(err, COMMON_ERR_NOT_FOUND,
                           "sweep '%s' has no neuron_stats rows for analysis %ld (no task of it "
                           "is done)",
                           c->sweep, ai);
    }
    if (L > MODEL_MAX_LAYERS || M > (1L << 20) || L > PLOT_MAX_PANELS) {
        return common_fail(err, COMMON_ERR_INVALID, "neuron_stats: %ld layers x %ld neurons", L, M);
    }
    size_t K = a->top > 0 ? (size_t)a->top : DEFAULT_TOP;
    K = K < (size_t)M ? K : (size_t)M;
    double *mean = malloc((size_t)L * (size_t)M * N_PHASES * sizeof *mean);  /* [L, M, phase] */
    double *score = malloc((size_t)M * sizeof *score);                       /* [M] */
    long *pick = malloc(K * sizeof *pick);                                   /* [K] */
    float *values = malloc((size_t)L * K * (N_PHASES - 1) * sizeof *values); /* [L, K, 5] */
    strs rows = {0}, cols = {0};
    rc = mean == NULL || score == NULL || pick == NULL || values == NULL ? nomem(err) : 0;
    for (size_t i = 0; rc == 0 && i < (size_t)L * (size_t)M * N_PHASES; i++) {
        mean[i] = NAN;
    }
    if (rc == 0) {
        rc = sql_prepare(c,
                         "SELECT layer, neuron, phase, mean FROM neuron_stats"
                         " WHERE sweep = ?1 AND analysis = ?2",
                         &st, "read neuron_stats", err);
    }
    if (rc == 0) {
        sqlite3_bind_text(st, 1, c->sweep, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, ai);
        int s;
        while ((s = sqlite3_step(st)) == SQLITE_ROW) {
            long l = (long)sqlite3_column_int64(st, 0), n = (long)sqlite3_column_int64(st, 1);
            const char *ph = (const char *)sqlite3_column_text(st, 2);
            long k = ph != NULL ? find_name(phases, N_PHASES, ph) : -1;
            if (l >= 0 && l < L && n >= 0 && n < M && k >= 0 &&
                sqlite3_column_type(st, 3) != SQLITE_NULL) {
                mean[((size_t)l * (size_t)M + (size_t)n) * N_PHASES + (size_t)k] =
                    sqlite3_column_double(st, 3);
            }
        }
        rc = s != SQLITE_DONE ? sql_step_error(c, "read neuron_stats", err) : 0;
        sqlite3_finalize(st);
    }
    plot_panel panels[PLOT_MAX_PANELS];
    char titles[PLOT_MAX_PANELS][32];
    for (long l = 0; rc == 0 && l < L; l++) {
        /* a neuron's score: its largest |phase mean - overall mean| */
        for (long n = 0; n < M; n++) {
            const double *m = &mean[((size_t)l * (size_t)M + (size_t)n) * N_PHASES];
            score[n] = -1;
            for (int k = 1; k < N_PHASES; k++) {
                if (!isnan(m[k]) && !isnan(m[0])) {
                    score[n] = fmax(score[n], fabs(m[k] - m[0]));
                }
            }
        }
        /* the K best, by a partial selection (K is small) */
        for (size_t i = 0; i < K; i++) {
            long best = -1;
            for (long n = 0; n < M; n++) {
                bool taken = false;
                for (size_t j = 0; j < i && !taken; j++) {
                    taken = pick[j] == n;
                }
                if (!taken && (best < 0 || score[n] > score[best])) {
                    best = n;
                }
            }
            pick[i] = best;
            const double *m = &mean[((size_t)l * (size_t)M + (size_t)best) * N_PHASES];
            for (int k = 1; k < N_PHASES; k++) {
                values[((size_t)l * K + i) * (N_PHASES - 1) + (size_t)(k - 1)] =
                    (float)(m[k] - m[0]);
            }
            if (strs_add(&rows, "L%ldN%ld", l, best) != 0) {
                rc = nomem(err);
                break;
            }
        }
    }
    for (int k = 1; rc == 0 && k < N_PHASES; k++) {
        rc = strs_add(&cols, "%s", phases[k]) != 0 ? nomem(err) : 0;
    }
    if (rc == 0) {
        for (long l = 0; l < L; l++) {
            snprintf(titles[l], sizeof titles[l], "layer %ld", l);
            panels[l] = (plot_panel){
                .title = titles[l],
                .n_rows = K,
                .n_cols = N_PHASES - 1,
                .row_labels = (const char *const *)rows.v + (size_t)l * K,
                .col_labels = (const char *const *)cols.v,
                .values = values + (size_t)l * K * (N_PHASES - 1),
            };
        }
        char title[256], subtitle[512];
        snprintf(title, sizeof title, "Neuron activation by move phase (analysis %ld)", ai);
        snprintf(subtitle, sizeof subtitle,
                 "mean of mlp.hook_post in each group minus its mean over all %ld positions; the "
                 "%zu neurons of each layer with the largest |difference|",
                 positions, K);
        plot_heatmap h = {
            .title = title,
            .subtitle = subtitle,
            .row_axis = "neuron",
            .col_axis = "positions",
            .value_label = "mean - overall mean",
            .scale = PLOT_SCALE_DIVERGING,
            .panels = panels,
            .n_panels = (size_t)L,
            .panels_per_row = L < 6 ? (size_t)L : 6,
            .cell_w = 28,
            .cell_h = K > 48 ? 10 : 14,
        };
        rc = plot_heatmap_svg(&h, standalone, out, len, err);
    }
    free(mean);
    free(score);
    free(pick);
    free(values);
    strs_free(&rows);
    strs_free(&cols);
    return rc;
}

/* ---- legal-move statistics ---- */

/* Sort key of a component label: embed, pos_embed, then per layer its heads, attn_out and
 * mlp_out (the order in which they write to the residual stream). */
static void component_key(const char *label, long key[3]) {
    long l = 0, h = 0;
    char rest[32];
    key[0] = key[1] = key[2] = 0;
    if (strcmp(label, "embed") == 0) {
        key[0] = -2;
    } else if (strcmp(label, "pos_embed") == 0) {
        key[0] = -1;
    } else if (sscanf(label, "L%ldH%ld", &l, &h) == 2) {
        key[0] = l;
        key[1] = 0;
        key[2] = h;
    } else if (sscanf(label, "%ld_%31s", &l, rest) == 2) {
        key[0] = l;
        key[1] = strcmp(rest, "attn_out") == 0 ? 1 : 2;
    } else {
        key[0] = 1L << 30;
    }
}

static int component_cmp(const char *a, const char *b) {
    long ka[3], kb[3];
    component_key(a, ka);
    component_key(b, kb);
    for (int i = 0; i < 3; i++) {
        if (ka[i] != kb[i]) {
            return ka[i] < kb[i] ? -1 : 1;
        }
    }
    return strcmp(a, b);
}

static int fig_legal(cli_plot_ctx *c, const cli_plot_args *a, bool standalone, char **out,
                     size_t *len, char *err) {
    long ai = 0;
    json_t *an = NULL;
    int rc = find_analysis(c, "legal_stats", a->analysis, &ai, &an, err);
    if (rc != 0) {
        return rc;
    }
    /* the two gaps per component and position: mean legal - mean illegal, min legal - max
     * illegal (the separation the legal-move notebooks look at) */
    sqlite3_stmt *st = NULL;
    rc = sql_prepare(c,
                     "SELECT component, pos,"
                     " MAX(CASE statistic WHEN 'mean_legal' THEN value END)"
                     "  - MAX(CASE statistic WHEN 'mean_illegal' THEN value END),"
                     " MAX(CASE statistic WHEN 'min_legal' THEN value END)"
                     "  - MAX(CASE statistic WHEN 'max_illegal' THEN value END),"
                     " MAX(count)"
                     " FROM legal_stats WHERE sweep = ?1 AND analysis = ?2 GROUP BY component, pos",
                     &st, "read legal_stats", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_text(st, 1, c->sweep, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, ai);
    typedef struct row {
        long comp, pos;
        double gap[2];
        uint32_t count;
    } row;
    row *rows = NULL;
    size_t n = 0, cap = 0;
    strs comps = {0};
    long max_pos = -1;
    int s;
    while ((s = sqlite3_step(st)) == SQLITE_ROW) {
        const char *comp = (const char *)sqlite3_column_text(st, 0);
        if (n == cap) {
            cap = cap > 0 ? 2 * cap : 1024;
            row *p = realloc(rows, cap * sizeof *p);
            if (p == NULL) {
                rc = nomem(err);
                break;
            }
            rows = p;
        }
        long k = find_name((const char *const *)comps.v, comps.n, comp != NULL ? comp : "?");
        if (k < 0) {
            if (strs_add(&comps, "%s", comp != NULL ? comp : "?") != 0) {
                rc = nomem(err);
                break;
            }
            k = (long)comps.n - 1;
        }
        row *e = &rows[n++];
        e->comp = k;
        e->pos = (long)sqlite3_column_int64(st, 1);
        for (int i = 0; i < 2; i++) {
            e->gap[i] = sqlite3_column_type(st, 2 + i) == SQLITE_NULL
                            ? NAN
                            : sqlite3_column_double(st, 2 + i);
        }
        e->count = (uint32_t)sqlite3_column_int64(st, 4);
        max_pos = e->pos > max_pos ? e->pos : max_pos;
    }
    if (rc == 0 && s != SQLITE_DONE) {
        rc = sql_step_error(c, "read legal_stats", err);
    }
    sqlite3_finalize(st);
    if (rc == 0 && n == 0) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND,
                         "sweep '%s' has no legal_stats rows for analysis %ld", c->sweep, ai);
    }
    if (rc == 0 && (max_pos < 0 || max_pos > (1L << 16))) {
        rc = common_fail(err, COMMON_ERR_INVALID, "legal_stats: position %ld", max_pos);
    }
    size_t R = comps.n, C = (size_t)max_pos + 1;
    size_t *order = rc == 0 ? malloc(R * sizeof *order) : NULL; /* [R] display row -> comp */
    size_t *where = rc == 0 ? malloc(R * sizeof *where) : NULL; /* [R] comp -> display row */
    float *values = rc == 0 ? malloc(2 * R * C * sizeof *values) : NULL;   /* [2, R, C] */
    uint32_t *counts = rc == 0 ? calloc(2 * R * C, sizeof *counts) : NULL; /* [2, R, C] */
    strs labels = {0}, ticks = {0}, details = {0};
    if (rc == 0 && (order == NULL || where == NULL || values == NULL || counts == NULL)) {
        rc = nomem(err);
    }
    for (size_t i = 0; rc == 0 && i < R; i++) {
        size_t j = i;
        order[i] = i;
        while (j > 0 && component_cmp(comps.v[order[j - 1]], comps.v[order[j]]) > 0) {
            size_t t = order[j - 1];
            order[j - 1] = order[j];
            order[j] = t;
            j--;
        }
    }
    for (size_t i = 0; rc == 0 && i < R; i++) {
        where[order[i]] = i;
        rc = strs_add(&labels, "%s", comps.v[order[i]]) != 0 ? nomem(err) : 0;
    }
    for (size_t i = 0; rc == 0 && i < 2 * R * C; i++) {
        values[i] = NAN;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        for (int k = 0; k < 2; k++) {
            size_t at = ((size_t)k * R + where[rows[i].comp]) * C + (size_t)rows[i].pos;
            values[at] = (float)rows[i].gap[k];
            counts[at] = rows[i].count;
        }
    }
    for (size_t t = 0; rc == 0 && t < C; t++) {
        if (strs_add(&ticks, "%zu", t) != 0 || strs_add(&details, "pos %zu", t) != 0) {
            rc = nomem(err);
        }
    }
    if (rc == 0) {
        plot_panel panels[2];
        static const char *const names[2] = {"mean legal - mean illegal",
                                             "min legal - max illegal"};
        for (int k = 0; k < 2; k++) {
            panels[k] = (plot_panel){
                .title = names[k],
                .n_rows = R,
                .n_cols = C,
                .row_labels = (const char *const *)labels.v,
                .col_labels = (const char *const *)ticks.v,
                .col_details = (const char *const *)details.v,
                .values = values + (size_t)k * R * C,
                .counts = counts + (size_t)k * R * C,
            };
        }
        char title[256], subtitle[512];
        snprintf(title, sizeof title, "Legal vs illegal next tokens by component (analysis %ld)",
                 ai);
        snprintf(subtitle, sizeof subtitle,
                 "direct logit contributions, averaged over the sweep's games: positive where a "
                 "component favours the legal next tokens (n = games counted)");
        plot_heatmap h = {
            .title = title,
            .subtitle = subtitle,
            .row_axis = "component",
            .col_axis = "position",
            .value_label = "logit gap",
            .scale = PLOT_SCALE_DIVERGING,
            .panels = panels,
            .n_panels = 2,
            .panels_per_row = 1,
        };
        rc = plot_heatmap_svg(&h, standalone, out, len, err);
    }
    free(rows);
    free(order);
    free(where);
    free(values);
    free(counts);
    strs_free(&comps);
    strs_free(&labels);
    strs_free(&ticks);
    strs_free(&details);
    return rc;
}

int cli_plot_figure(cli_plot_ctx *c, const cli_plot_args *a, bool standalone, char **svg,
                    size_t *len, char *err) {
    switch (a->kind) {
    case CLI_PLOT_PATCH:
        return fig_patch(c, a, standalone, svg, len, err);
    case CLI_PLOT_LOGIT_LENS:
        return fig_logit_lens(c, a, standalone, svg, len, err);
    case CLI_PLOT_BOARD:
        return fig_board(c, a, standalone, svg, len, err);
    case CLI_PLOT_ATTN_DIFF:
        return fig_attn_diff(c, a, standalone, svg, len, err);
    case CLI_PLOT_NEURONS:
        return fig_neurons(c, a, standalone, svg, len, err);
    case CLI_PLOT_LEGAL:
        return fig_legal(c, a, standalone, svg, len, err);
    default:
        return common_fail(err, COMMON_ERR_INVALID, "plot: unknown kind %d", (int)a->kind);
    }
}

/* ---- the command ---- */

int cli_plot(int argc, char **argv) {
    const char *db = NULL, *out = NULL, *model_dir = NULL, *corrupt = NULL;
    int kind = 0;
    long game = -1, cutoff = 0, analysis = -1, top = 0, threads = 1;
    const cli_opt table[] = {
        {.name = "--db",
         .kind = CLI_STRING,
         .value = &db,
         .meta = "DB",
         .required = true,
         .help = "the chesslens database (opened read-only)"},
        {.name = "--kind",
         .kind = CLI_CHOICE,
         .value = &kind,
         .meta = "KIND",
         .choices = cli_plot_kind_names,
         .required = true,
         .help = "patch: patching effect (patch_effects); logit-lens: direct logit attribution\n"
                 "per component x position; board: next-square log-probs on the board;\n"
                 "attn-diff: attention-pattern diff clean - corrupted per head x source position;\n"
                 "neurons: neuron means by phase (neuron_stats); legal: legal_stats gaps"},
        {.name = "--game",
         .kind = CLI_LONG,
         .value = &game,
         .meta = "G",
         .lo = 0,
         .hi = 1L << 40,
         .help = "the game (index in the sweep's dataset): patch averages over it only;\n"
                 "logit-lens, board: default the sweep's first game"},
        {.name = "--cutoff",
         .kind = CLI_LONG,
         .value = &cutoff,
         .meta = "N",
         .lo = 1,
         .hi = 1L << 16,
         .help = "the prompt's length in tokens (<s> included): patch averages over that\n"
                 "cut-off only; logit-lens, board: default the whole game"},
        {.name = "--analysis",
         .kind = CLI_LONG,
         .value = &analysis,
         .meta = "I",
         .lo = 0,
         .hi = 63,
         .help = "which analysis of the spec (default: the first of the kind's type)"},
        {.name = "--top",
         .kind = CLI_LONG,
         .value = &top,
         .meta = "K",
         .lo = 1,
         .hi = 4096,
         .help = "neurons: neurons shown per layer (default 32)"},
        {.name = "--corrupt",
         .kind = CLI_STRING,
         .value = &corrupt,
         .meta = "TOKEN",
         .help = "attn-diff: the pair whose corrupted token is TOKEN (default: the first)"},
        {.name = "--model",
         .kind = CLI_STRING,
         .value = &model_dir,
         .meta = "DIR",
         .help = "the sweep's model, when its recorded path does not reach it from here\n"
                 "(its model.safetensors must have the recorded SHA-256)"},
        CLI_OPT_THREADS(&threads),
        CLI_OPT_OUT(&out, "the SVG file to write"),
    };
    const cli_spec spec = {
        .command = "plot",
        .synopsis = "--db DB SWEEP --kind patch|logit-lens|board|attn-diff|neurons|legal\n"
                    "                      [--game G] [--cutoff N] --out FILE.svg",
        .about = "Draws one figure of a sweep as SVG: heatmaps with TL's labels, a colour bar\n"
                 "and each cell's value on hover, or the board of next-square log-probs.\n"
                 "logit-lens, board and attn-diff run the sweep's model (docs/PLOTS.md).",
        .min_args = 1,
        .max_args = 1,
        .opts = table,
        .n_opts = CLI_N_OPTS(table),
    };
    char *args[1];
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, args, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    const char *inputs[] = {db};
    if (!cli_output_is_new("plot", out, inputs, 1)) {
        return 1;
    }
    char err[COMMON_ERR_LEN] = "";
    cli_plot_ctx *c = NULL;
    char *svg = NULL;
    size_t len = 0;
    common_outfile *of = NULL;
    cli_plot_args a = {.kind = (cli_plot_kind)kind,
                       .analysis = analysis,
                       .game = game,
                       .cutoff = cutoff,
                       .top = top,
                       .corrupt = corrupt};
    int rc = cli_plot_ctx_new(&c, db, args[0], model_dir, threads, err);
    if (rc == 0) {
        rc = cli_plot_figure(c, &a, true, &svg, &len, err);
    }
    if (rc == 0 && (rc = common_outfile_new(&of, out, err)) == 0 &&
        (rc = common_outfile_write(of, svg, len, err)) == 0) {
        rc = common_outfile_commit(&of, err);
    }
    if (rc == 0) {
        fprintf(stderr, "chesslens plot: wrote %s (%s, %zu bytes)\n", out,
                cli_plot_kind_names[kind], len);
    } else {
        fprintf(stderr, "chesslens plot: %s\n", err);
    }
    common_outfile_destroy(&of);
    free(svg);
    cli_plot_ctx_destroy(&c);
    return rc == 0 ? 0 : 1;
}
