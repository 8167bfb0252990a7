/*
 * cmd_report: `chesslens report`, one HTML page that shows a sweep: its name and parameters
 * (the spec, pretty-printed), its progress (tasks by state), and every figure its analyses
 * allow, drawn by cli_plot_figure (cmd_plot.c): a patching heatmap per patch analysis; for one
 * representative game and cut-off (the first patched game at its largest cut-off, or --game /
 * --cutoff) the direct logit attribution, the board of next-square log-probs and the
 * attention-pattern diff; the legal-move statistics and the neuron lifts per analysis of those
 * kinds; a table of how often the top prediction is legal.
 *
 * The page is self-contained, so that it can be mailed, archived or opened on a machine without
 * network: CSS and SVG inline, no script, no font or image to fetch, and a Content-Security-
 * Policy that forbids any request anyway. A figure that cannot be drawn (no data yet, the model
 * not reachable from here) becomes a note on the page saying why, and a warning on stderr.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "cli/cli_int.h"
#include "common/common.h"
#include "coordinator/coordinator.h"

/* Character data with the characters HTML gives meaning to there escaped (quotes need no
 * escaping outside attributes, and the page puts no text into attributes). */
static void html_text(FILE *f, const char *s) {
    for (; s != NULL && *s != '\0'; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

static const char *const css =
    "*{box-sizing:border-box}"
    "body{margin:0;background:#f4f5f7;color:#1d2330;"
    "font:15px/1.45 'DejaVu Sans',Verdana,Arial,sans-serif}"
    "header{background:#1d2a44;color:#fff;padding:18px 32px}"
    "header h1{margin:0;font-size:24px;font-weight:600}"
    "header h1 code{background:rgba(255,255,255,.12);padding:1px 8px;border-radius:4px}"
    "header p{margin:6px 0 0;color:#c9d3e6;font-size:13px}"
    "main{padding:20px 32px 40px;max-width:1500px}"
    "h2{font-size:19px;margin:28px 0 10px;border-bottom:2px solid #d5dae3;padding-bottom:4px}"
    ".grid{display:grid;grid-template-columns:minmax(300px,1fr) minmax(300px,1fr);gap:18px}"
    ".card{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:14px 18px}"
    ".card h3{margin:0 0 8px;font-size:15px}"
    "pre{margin:0;font:12px/1.4 'DejaVu Sans Mono',monospace;background:#f7f8fa;"
    "padding:10px;border-radius:6px;overflow:auto;max-height:380px}"
    "table{border-collapse:collapse;font-size:13px}"
    "td,th{padding:3px 12px 3px 0;text-align:left}th{color:#5a6478;font-weight:600}"
    "td.n{text-align:right;font-variant-numeric:tabular-nums}td code{word-break:break-all}"
    ".bar{height:14px;background:#e3e7ee;border-radius:7px;overflow:hidden;margin:8px 0 10px}"
    ".bar span{display:block;height:100%;background:#2f7d4a}"
    ".bar span.dead{background:#b2182b}"
    ".big{font-size:22px;font-weight:600}"
    "figure{margin:14px 0;background:#fff;width:fit-content;max-width:100%;border:1px solid "
    "#dde2ea;border-radius:8px;"
    "padding:12px 14px;overflow-x:auto}"
    "figure svg{max-width:100%;height:auto;display:block}"
    "figcaption{font-size:13px;color:#4a5366;margin-top:6px;contain:inline-size}"
    ".note{background:#fff7e6;border:1px solid #f0d9a8;border-radius:6px;padding:8px 12px;"
    "font-size:13px}"
    "footer{color:#6b7385;font-size:12px;margin-top:30px}";

/* What the report needs from the store beyond the figures. */
typedef struct sweep_facts {
    coordinator_sweep_info info;
    char *spec_pretty;
    char *model_path;
    char model_sha256[65];
    const char *dataset;
    long game_from, game_to;
} sweep_facts;

static int facts_load(cli_plot_ctx *c, json_t *spec, sweep_facts *f, char *err) {
    coordinator_store *s = cli_plot_ctx_store(c);
    coordinator_sweep_info *list = NULL;
    size_t n = 0;
    char *spec_text = NULL;
    int rc = coordinator_sweeps_list(s, cli_plot_ctx_sweep_id(c), &list, &n, err);
    if (rc == 0 && n != 1) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "report: the sweep vanished");
    }
    if (rc == 0) {
        f->info = list[0];
        rc = coordinator_sweep_dispatch_info(s, f->info.id, &spec_text, &f->model_path,
                                             f->model_sha256, err);
    }
    free(list);
    free(spec_text);
    if (rc == 0) {
        f->spec_pretty = json_dumps(spec, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        rc = f->spec_pretty == NULL ? common_fail(err, COMMON_ERR_NOMEM, "report: out of memory")
                                    : 0;
    }
    json_t *games = json_object_get(spec, "games");
    f->dataset = json_string_value(json_object_get(spec, "dataset"));
    f->game_from = (long)json_integer_value(json_array_get(games, 0));
    f->game_to = (long)json_integer_value(json_array_get(games, 1));
    return rc;
}

/* The representative pair of a patch analysis: its first game with a pair, at that game's
 * largest cut-off. Leaves *game / *cutoff alone when the analysis has no pair yet. */
static void representative(cli_plot_ctx *c, const char *sweep, long analysis, long *game,
                           long *cutoff) {
    sqlite3 *db = coordinator_store_db(cli_plot_ctx_store(c));
    sqlite3_stmt *st = NULL;
    const char *sql =
        "SELECT game, MAX(cutoff) FROM patch_effects WHERE sweep = ?1 AND analysis = ?2"
        " AND game = (SELECT MIN(game) FROM patch_effects WHERE sweep = ?1 AND analysis = ?2)";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        return;
    }
    sqlite3_bind_text(st, 1, sweep, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, analysis);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        *game = (long)sqlite3_column_int64(st, 0);
        *cutoff = (long)sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
}

/* One figure into the page, or a note saying why it is not there. */
static void put_figure(FILE *f, cli_plot_ctx *c, const cli_plot_args *a, const char *caption) {
    char err[COMMON_ERR_LEN] = "";
    char *svg = NULL;
    size_t len = 0;
    if (cli_plot_figure(c, a, false, &svg, &len, err) != 0) {
        fprintf(stderr, "chesslens report: %s figure not drawn: %s\n", cli_plot_kind_names[a->kind],
                err);
        fputs("<p class=\"note\">Not drawn (", f);
        html_text(f, cli_plot_kind_names[a->kind]);
        fputs("): ", f);
        html_text(f, err);
        fputs("</p>\n", f);
        return;
    }
    fputs("<figure>\n", f);
    fwrite(svg, 1, len, f);
    fputs("<figcaption>", f);
    html_text(f, caption);
    fputs("</figcaption>\n</figure>\n", f);
    free(svg);
}

/* A short description of one analysis of the spec. */
static void analysis_summary(json_t *an, char *out, size_t cap) {
    const char *kind = json_string_value(json_object_get(an, "kind"));
    kind = kind != NULL ? kind : "?";
    if (strcmp(kind, "patch") == 0) {
        json_t *cut = json_object_get(an, "cutoffs");
        json_t *with = json_object_get(json_object_get(an, "corrupt"), "with");
        char cuts[128] = "", corrupt[64] = "";
        if (json_is_array(cut)) {
            size_t n = 0;
            n += (size_t)snprintf(cuts + n, sizeof cuts - n, "cut-off%s ",
                                  json_array_size(cut) == 1 ? "" : "s");
            for (size_t i = 0; i < json_array_size(cut) && n < sizeof cuts; i++) {
                n +=
                    (size_t)snprintf(cuts + n, sizeof cuts - n, "%s%" JSON_INTEGER_FORMAT,
                                     i > 0 ? ", " : "", json_integer_value(json_array_get(cut, i)));
            }
        } else if (json_is_object(cut)) {
            snprintf(cuts, sizeof cuts,
                     "cut-offs %" JSON_INTEGER_FORMAT "..%" JSON_INTEGER_FORMAT
                     " step %" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(cut, "from")),
                     json_integer_value(json_object_get(cut, "to")),
                     json_integer_value(json_object_get(cut, "step")));
        }
        if (json_is_string(with)) {
            snprintf(corrupt, sizeof corrupt, "%s", json_string_value(with));
        } else {
            snprintf(corrupt, sizeof corrupt, "game %" JSON_INTEGER_FORMAT,
                     json_integer_value(json_object_get(with, "game")));
        }
        snprintf(out, cap, "patch %s, %s, corrupt: %s, metric %s",
                 json_string_value(json_object_get(an, "patch")), cuts, corrupt,
                 json_string_value(json_object_get(json_object_get(an, "metric"), "kind")));
    } else if (strcmp(kind, "legal_stats") == 0) {
        char *comps = json_dumps(json_object_get(an, "components"), JSON_COMPACT);
        snprintf(out, cap, "legal_stats of %s", comps != NULL ? comps : "?");
        free(comps);
    } else if (strcmp(kind, "predictions") == 0) {
        snprintf(out, cap, "predictions, top %" JSON_INTEGER_FORMAT,
                 json_integer_value(json_object_get(an, "top_k")));
    } else {
        snprintf(out, cap, "%s", kind);
    }
}

/* How often the most probable next token is legal, by phase of the position. */
static void put_predictions(FILE *f, cli_plot_ctx *c, const char *sweep, const char *dataset,
                            long analysis) {
    sqlite3 *db = coordinator_store_db(cli_plot_ctx_store(c));
    sqlite3_stmt *st = NULL;
    const char *sql =
        "SELECT gp.phase, AVG(p.legal), COUNT(*) FROM predictions p"
        " JOIN game_positions gp ON gp.dataset = ?3 AND gp.game = p.game AND gp.pos = p.pos"
        " WHERE p.sweep = ?1 AND p.analysis = ?2 AND p.rank = 1"
        " GROUP BY gp.phase ORDER BY MIN(gp.pos)";
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "chesslens report: predictions: %s\n", sqlite3_errmsg(db));
        return;
    }
    sqlite3_bind_text(st, 1, sweep, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, analysis);
    sqlite3_bind_text(st, 3, dataset, -1, SQLITE_STATIC);
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (n++ == 0) {
            fprintf(f,
                    "<div class=\"card\"><h3>Top-1 prediction legal (analysis %ld)</h3>\n"
                    "<table><tr><th>position phase</th><th>top-1 legal</th>"
                    "<th>positions</th></tr>\n",
                    analysis);
        }
        fputs("<tr><td>", f);
        html_text(f, (const char *)sqlite3_column_text(st, 0));
        fprintf(f, "</td><td class=\"n\">%.1f%%</td><td class=\"n\">%lld</td></tr>\n",
                100.0 * sqlite3_column_double(st, 1), (long long)sqlite3_column_int64(st, 2));
    }
    sqlite3_finalize(st);
    if (n > 0) {
        fputs("</table></div>\n", f);
    } else {
        fprintf(f, "<p class=\"note\">No predictions stored yet for analysis %ld.</p>\n", analysis);
    }
}

static void put_progress(FILE *f, const sweep_facts *x) {
    const coordinator_sweep_progress *p = &x->info.progress;
    uint64_t total = p->pending + p->leased + p->done + p->dead;
    double done_pct = total > 0 ? 100.0 * (double)p->done / (double)total : 0;
    double dead_pct = total > 0 ? 100.0 * (double)p->dead / (double)total : 0;
    fprintf(f,
            "<div class=\"card\"><h3>Progress</h3>\n"
            "<div class=\"big\">%" PRIu64 " / %" PRIu64 " tasks done (%.0f%%)</div>\n"
            "<div class=\"bar\" title=\"done %.1f%%, dead %.1f%%\"><span style=\"width:%.2f%%;"
            "float:left\"></span><span class=\"dead\" style=\"width:%.2f%%;float:left\">"
            "</span></div>\n"
            "<table><tr><th>state</th><th>tasks</th></tr>\n"
            "<tr><td>done</td><td class=\"n\">%" PRIu64 "</td></tr>\n"
            "<tr><td>running (leased)</td><td class=\"n\">%" PRIu64 "</td></tr>\n"
            "<tr><td>pending</td><td class=\"n\">%" PRIu64 "</td></tr>\n"
            "<tr><td>dead</td><td class=\"n\">%" PRIu64 "</td></tr>\n"
            "<tr><td>result rows stored</td><td class=\"n\">%" PRIu64 "</td></tr>\n"
            "</table>\n",
            p->done, total, done_pct, done_pct, dead_pct, done_pct, dead_pct, p->done, p->leased,
            p->pending, p->dead, x->info.rows);
    fputs("<h3 style=\"margin-top:14px\">Sweep</h3>\n<table>\n<tr><td>dataset</td><td>", f);
    html_text(f, x->dataset);
    fprintf(f, "</td></tr>\n<tr><td>games</td><td>%ld to %ld (%ld games)</td></tr>\n", x->game_from,
            x->game_to - 1, x->game_to - x->game_from);
    fputs("<tr><td>model</td><td>", f);
    html_text(f, x->model_path);
    fputs("</td></tr>\n<tr><td>weights</td><td><code>", f);
    html_text(f, x->model_sha256);
    fprintf(f, "</code></td></tr>\n<tr><td>state</td><td>%s</td></tr>\n</table>\n",
            x->info.cancelled                         ? "cancelled"
            : total > 0 && p->done + p->dead == total ? "finished"
                                                      : "running or waiting for workers");
    if (x->info.cancelled) {
        fputs("<p class=\"note\">This sweep was cancelled.</p>\n", f);
    }
    if (p->dead > 0) {
        fputs("<p class=\"note\">Some tasks are dead: <code>chesslens status</code> shows their "
              "errors; figures leave their results out.</p>\n",
              f);
    }
}

int cli_report(int argc, char **argv) {
    const char *db = NULL, *out = NULL, *model_dir = NULL;
    long game = -1, cutoff = 0, threads = 1;
    const cli_opt table[] = {
        {.name = "--db",
         .kind = CLI_STRING,
         .value = &db,
         .meta = "DB",
         .required = true,
         .help = "the chesslens database (opened read-only)"},
        {.name = "--game",
         .kind = CLI_LONG,
         .value = &game,
         .meta = "G",
         .lo = 0,
         .hi = 1L << 40,
         .help = "the game of the one-game figures (default: the first patched game)"},
        {.name = "--cutoff",
         .kind = CLI_LONG,
         .value = &cutoff,
         .meta = "N",
         .lo = 1,
         .hi = 1L << 16,
         .help = "the prompt length of the one-game figures (default: that game's largest\n"
                 "patched cut-off, or the whole game)"},
        {.name = "--model",
         .kind = CLI_STRING,
         .value = &model_dir,
         .meta = "DIR",
         .help = "the sweep's model, when its recorded path does not reach it from here"},
        CLI_OPT_THREADS(&threads),
        CLI_OPT_OUT(&out, "the HTML file to write"),
    };
    const cli_spec spec = {
        .command = "report",
        .synopsis = "--db DB SWEEP --out report.html",
        .about = "Writes one self-contained HTML page (inline CSS and SVG; it makes no network\n"
                 "request) with the sweep's parameters, its progress and every figure of its\n"
                 "analyses (docs/PLOTS.md).",
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
    if (!cli_output_is_new("report", out, inputs, 1)) {
        return 1;
    }
    const char *sweep = args[0];
    char err[COMMON_ERR_LEN] = "";
    cli_plot_ctx *c = NULL;
    common_outfile *of = NULL;
    json_t *js = NULL;
    sweep_facts x;
    memset(&x, 0, sizeof x);
    int rc = cli_plot_ctx_new(&c, db, sweep, model_dir, threads, err);
    if (rc == 0) {
        json_error_t jerr;
        js = json_loads(cli_plot_ctx_spec(c), 0, &jerr);
        rc = js == NULL ? common_fail(err, COMMON_ERR_PARSE, "the stored spec: %s", jerr.text)
                        : facts_load(c, js, &x, err);
    }
    if (rc == 0) {
        rc = common_outfile_new(&of, out, err);
    }
    if (rc != 0) {
        fprintf(stderr, "chesslens report: %s\n", err);
        goto done;
    }
    FILE *f = common_outfile_stream(of);
    json_t *analyses = json_object_get(js, "analyses");
    size_t n_an = json_array_size(analyses);

    char created[64] = "?";
    time_t t = (time_t)x.info.created_at;
    struct tm tm;
    if (gmtime_r(&t, &tm) != NULL) {
        strftime(created, sizeof created, "%Y-%m-%d %H:%M UTC", &tm);
    }
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
          "style-src 'unsafe-inline'; img-src data:\">\n"
          "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>",
          f);
    fputs("chesslens report: ", f);
    html_text(f, sweep);
    fprintf(f, "</title>\n<style>%s</style>\n</head>\n<body>\n<header><h1>Sweep <code>", css);
    html_text(f, sweep);
    fputs("</code></h1>\n<p>dataset <b>", f);
    html_text(f, x.dataset);
    fprintf(f, "</b>, games %ld to %ld &middot; model <b>", x.game_from, x.game_to - 1);
    html_text(f, x.model_path);
    fprintf(f, "</b> (SHA-256 %.16s&hellip;) &middot; created %s</p></header>\n<main>\n",
            x.model_sha256, created);

    /* parameters and progress */
    fputs("<div class=\"grid\">\n<div class=\"card\"><h3>Parameters</h3>\n<table>"
          "<tr><th>analysis</th><th>what</th></tr>\n",
          f);
    for (size_t i = 0; i < n_an; i++) {
        char sum[512];
        analysis_summary(json_array_get(analyses, i), sum, sizeof sum);
        fprintf(f, "<tr><td class=\"n\">%zu</td><td>", i);
        html_text(f, sum);
        fputs("</td></tr>\n", f);
    }
    fputs("</table>\n<h3 style=\"margin-top:12px\">Specification</h3>\n<pre>", f);
    html_text(f, x.spec_pretty);
    fputs("</pre></div>\n", f);
    put_progress(f, &x);
    fputs("</div>\n</div>\n", f);

    /* per-analysis figures */
    long first_patch = -1, rep_game = game, rep_cutoff = cutoff;
    for (size_t i = 0; i < n_an; i++) {
        const char *k = json_string_value(json_object_get(json_array_get(analyses, i), "kind"));
        if (k != NULL && strcmp(k, "patch") == 0 && first_patch < 0) {
            first_patch = (long)i;
        }
    }
    bool patch_heading = false;
    for (size_t i = 0; i < n_an; i++) {
        const char *k = json_string_value(json_object_get(json_array_get(analyses, i), "kind"));
        if (k == NULL || strcmp(k, "patch") != 0) {
            continue;
        }
        if (!patch_heading) {
            fputs("<h2>Activation patching</h2>\n", f);
            patch_heading = true;
        }
        cli_plot_args a = {.kind = CLI_PLOT_PATCH, .analysis = (long)i, .game = -1};
        put_figure(f, c, &a,
                   "The clean run's activation patched into the corrupted run, one cell per "
                   "layer (or head) and position, averaged over every pair the sweep stored. "
                   "With a normalised metric 1 means the patch restores the clean behaviour, 0 "
                   "that it changes nothing.");
    }

    /* one game up close */
    if (first_patch >= 0 && (rep_game < 0 || rep_cutoff <= 0)) {
        long g = -1, n = 0;
        representative(c, sweep, first_patch, &g, &n);
        if (rep_game < 0 && g >= 0) {
            rep_game = g;
            rep_cutoff = rep_cutoff > 0 ? rep_cutoff : n;
        }
    }
    if (rep_game < 0) {
        rep_game = x.game_from;
    }
    fprintf(f, "<h2>One game up close: game %ld", rep_game);
    if (rep_cutoff > 0) {
        fprintf(f, ", first %ld tokens", rep_cutoff);
    }
    fputs("</h2>\n", f);
    cli_plot_args one = {.game = rep_game, .cutoff = rep_cutoff, .analysis = -1};
    one.kind = CLI_PLOT_LOGIT_LENS;
    put_figure(f, c, &one,
               "Direct logit attribution: how much each component of the residual stream "
               "(embeddings, each layer's attention and MLP output, and each head) adds to the "
               "logit of the token that actually follows each position.");
    one.kind = CLI_PLOT_BOARD;
    put_figure(f, c, &one,
               "The model's log-probability of each square as the next token after the prompt, "
               "on the position the prompt reaches; rings mark the squares the rules allow next.");
    if (first_patch >= 0) {
        one.kind = CLI_PLOT_ATTN_DIFF;
        one.analysis = first_patch;
        put_figure(f, c, &one,
                   "How the corruption moves attention: the attention pattern of every head at "
                   "the last query position, clean minus corrupted, per source position.");
    }

    bool heading = false;
    for (size_t i = 0; i < n_an; i++) {
        const char *k = json_string_value(json_object_get(json_array_get(analyses, i), "kind"));
        if (k == NULL || strcmp(k, "legal_stats") != 0) {
            continue;
        }
        if (!heading) {
            fputs("<h2>Legal-move statistics</h2>\n", f);
            heading = true;
        }
        cli_plot_args a = {.kind = CLI_PLOT_LEGAL, .analysis = (long)i, .game = -1};
        put_figure(f, c, &a,
                   "Per component and position, the gap between its direct logit contributions "
                   "to the legal and to the illegal next tokens, averaged over the sweep's "
                   "games: red components push the legal moves up.");
    }
    heading = false;
    for (size_t i = 0; i < n_an; i++) {
        const char *k = json_string_value(json_object_get(json_array_get(analyses, i), "kind"));
        if (k == NULL || strcmp(k, "neuron_stats") != 0) {
            continue;
        }
        if (!heading) {
            fputs("<h2>Neurons</h2>\n", f);
            heading = true;
        }
        cli_plot_args a = {.kind = CLI_PLOT_NEURONS, .analysis = (long)i, .game = -1};
        put_figure(f, c, &a,
                   "The MLP neurons whose mean activation differs most between groups of "
                   "positions (the move phases and the slice) and all positions.");
    }
    heading = false;
    for (size_t i = 0; i < n_an; i++) {
        const char *k = json_string_value(json_object_get(json_array_get(analyses, i), "kind"));
        if (k == NULL || strcmp(k, "predictions") != 0) {
            continue;
        }
        if (!heading) {
            fputs("<h2>Predictions</h2>\n", f);
            heading = true;
        }
        put_predictions(f, c, sweep, x.dataset, (long)i);
    }
    fputs("<footer>Written by <code>chesslens report</code>. Hover over a cell or a square for "
          "its value. The numbers come from the store's views (docs/STORE.md) and, for the "
          "one-game figures, from a forward pass of the sweep's model (docs/PLOTS.md).</footer>\n"
          "</main>\n</body>\n</html>\n",
          f);
    rc = common_outfile_commit(&of, err);
    if (rc != 0) {
        fprintf(stderr, "chesslens report: %s\n", err);
    } else {
        fprintf(stderr, "chesslens report: wrote %s\n", out);
    }
done:
    common_outfile_destroy(&of);
    json_decref(js);
    free(x.spec_pretty);
    free(x.model_path);
    cli_plot_ctx_destroy(&c);
    return rc == 0 ? 0 : 1;
}
