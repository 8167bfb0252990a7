/*
 * `chesslens decompose`: residual-stream decomposition and direct logit attribution on this
 * machine. For one game (--uci) it writes TL's decompose_resid stack (after apply_ln_to_stack
 * at the final layer, as the logit-lens notebooks do) and its direct logit contributions
 * (stack @ W_U), optionally the per-head stack, and the logits. For a file of games (--games,
 * one UCI game per line) it aggregates: neuron means by position group and, with
 * --legal-stats, the legal-move statistics of every component at every position. Tensors keep
 * TL's shapes ([n, B, T, D] stacks with B = 1); component labels are JSON in the metadata.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "cli/cli_int.h"
#include "interp/interp.h"

typedef struct opts {
    const char *dir, *uci, *games, *out;
    interp_decomp_mode mode;
    bool heads, legal_stats;
    long threads, batch, keep;
} opts;

static const char *const stat_names[INTERP_LEGAL_N_STATS] = {
    "min_legal", "max_illegal", "mean_legal", "mean_illegal", "min_minus_max", "mean_minus_mean"};
static const char *const group_names[INTERP_NEURON_N_GROUPS] = {
    "all", "slice", "white_from", "white_to", "black_from", "black_to"};

/* The components of one game: decompose_resid rows (+ head rows) after apply_ln at the final
 * layer, as one residual stack (caller destroys). */
static int components(const model *m, const interp_acts *a, const opts *o, interp_stack **out,
                      char *err) {
    interp_stack *dec = NULL, *heads = NULL, *all = NULL;
    int rc = interp_decompose_resid(m, a, -1, false, o->mode, true, true, &dec, err);
    if (rc != 0 || !o->heads) {
        *out = dec;
        return rc;
    }
    rc = interp_stack_head_results(m, a, -1, false, true, &heads, err);
    if (rc != 0) {
        interp_stack_destroy(&dec);
        return rc;
    }
    /* one stack: decomposition rows then head rows */
    all = calloc(1, sizeof *all);
    size_t per = dec->T * dec->width;
    if (all != NULL) {
        all->n = dec->n + heads->n;
        all->T = dec->T;
        all->width = dec->width;
        all->data = malloc(all->n * per * sizeof *all->data);
        all->labels = calloc(all->n, sizeof *all->labels);
    }
    if (all == NULL || all->data == NULL || all->labels == NULL) {
        interp_stack_destroy(&all);
        interp_stack_destroy(&dec);
        interp_stack_destroy(&heads);
        return common_fail(err, COMMON_ERR_NOMEM, "decompose: out of memory");
    }
    memcpy(all->data, dec->data, dec->n * per * sizeof *all->data);
    memcpy(all->data + dec->n * per, heads->data, heads->n * per * sizeof *all->data);
    for (size_t i = 0; i < dec->n; i++) {
        all->labels[i] = dec->labels[i];
        dec->labels[i] = NULL;
    }
    for (size_t i = 0; i < heads->n; i++) {
        all->labels[dec->n + i] = heads->labels[i];
        heads->labels[i] = NULL;
    }
    interp_stack_destroy(&dec);
    interp_stack_destroy(&heads);
    *out = all;
    return 0;
}

static int labels_json(char *const *labels, size_t n, char **out, char *err) {
    json_t *arr = json_array();
    for (size_t i = 0; arr != NULL && i < n; i++) {
        json_array_append_new(arr, json_string(labels[i]));
    }
    *out = arr != NULL ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return *out != NULL ? 0 : common_fail(err, COMMON_ERR_NOMEM, "decompose: out of memory");
}

static int add_legal_stats(model_st_writer *w, const interp_legal_stats *ls, char *err) {
    size_t cells = ls->n_comp * ls->T;
    float *buf = malloc(cells * sizeof *buf);
    if (buf == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "decompose: out of memory");
    }
    model_shape shape = {2, {ls->n_comp, ls->T, 0, 0}};
    int rc = 0;
    char name[64];
    for (int k = 0; k < INTERP_LEGAL_N_STATS && rc == 0; k++) {
        interp_legal_stats_mean(ls, k, buf);
        snprintf(name, sizeof name, "legal_stats.%s", stat_names[k]);
        rc = model_st_writer_add_f32(w, name, MODEL_DTYPE_F32, &shape, buf, err);
    }
    for (size_t i = 0; i < cells && rc == 0; i++) {
        buf[i] = (float)ls->count[i];
    }
    if (rc == 0) {
        rc = model_st_writer_add_f32(w, "legal_stats.count", MODEL_DTYPE_F32, &shape, buf, err);
    }
    char *lj = NULL;
    if (rc == 0 && (rc = labels_json(ls->labels, ls->n_comp, &lj, err)) == 0) {
        rc = model_st_writer_set_metadata(w, "legal_stats.labels", lj, err);
    }
    free(lj);
    free(buf);
    return rc;
}

/* Log-probabilities [T, V], top-5 ids and log-probabilities [T, 5], legal mass [T] and
 * whether the top-1 token is legal [T] (0/1). */
static int add_predictions(model_st_writer *w, const interp_acts *a, const uint8_t *legal,
                           char *err) {
    size_t n = 0, T = interp_acts_positions(a);
    const float *logits = interp_acts_get(a, (model_hook){MODEL_HOOK_LOGITS, -1}, &n);
    if (logits == NULL || T == 0) {
        return common_fail(err, COMMON_ERR_NOT_FOUND, "predictions: no logits");
    }
    size_t V = n / T, k = V < 5 ? V : 5;
    interp_predictions *p = NULL;
    int rc = interp_predictions_new(&p, logits, T, V, legal, k, err);
    if (rc != 0) {
        return rc;
    }
    model_shape tv = {2, {T, V, 0, 0}}, tk = {2, {T, k, 0, 0}}, t1 = {1, {T, 0, 0, 0}};
    int32_t *top1 = malloc(T * sizeof *top1);
    if (top1 == NULL) {
        interp_predictions_destroy(&p);
        return common_fail(err, COMMON_ERR_NOMEM, "predictions: out of memory");
    }
    for (size_t t = 0; t < T; t++) {
        top1[t] = p->top1_legal[t];
    }
    if ((rc = model_st_writer_add_f32(w, "predictions.logprobs", MODEL_DTYPE_F32, &tv, p->logprobs,
                                      err)) == 0 &&
        (rc = model_st_writer_add(w, "predictions.top_ids", MODEL_DTYPE_I32, &tk, p->top_ids,
                                  err)) == 0 &&
        (rc = model_st_writer_add_f32(w, "predictions.top_logprobs", MODEL_DTYPE_F32, &tk,
                                      p->top_logprobs, err)) == 0 &&
        (rc = model_st_writer_add_f32(w, "predictions.legal_mass", MODEL_DTYPE_F32, &t1,
                                      p->legal_mass, err)) == 0) {
        rc = model_st_writer_add(w, "predictions.top1_legal", MODEL_DTYPE_I32, &t1, top1, err);
    }
    free(top1);
    interp_predictions_destroy(&p);
    return rc;
}

static int one_game(model *m, model_session *s, const opts *o, model_st_writer *w, char *err) {
    int32_t *ids = NULL;
    size_t T = 0;
    interp_acts **acts = NULL;
    interp_stack *st = NULL, *lg = NULL;
    uint8_t *legal = NULL;
    interp_legal_stats *ls = NULL;
    char *lj = NULL;
    int rc = interp_tokens_from_uci(m, o->uci, &ids, &T, err);
    if (rc == 0) {
        rc = cli_keep_tokens(o->keep, &T, err);
    }
    if (rc == 0) {
        rc = interp_run_acts(s, ids, NULL, 1, T, false, &acts, err);
    }
    if (rc == 0) {
        rc = components(m, acts[0], o, &st, err);
    }
    if (rc == 0) {
        rc = interp_stack_to_logits(m, st, &lg, err);
    }
    if (rc == 0) {
        model_shape ss = {4, {st->n, 1, T, st->width}};
        model_shape ls_shape = {4, {lg->n, 1, T, lg->width}};
        size_t n_logits = 0;
        const float *logits =
            interp_acts_get(acts[0], (model_hook){MODEL_HOOK_LOGITS, -1}, &n_logits);
        model_shape lsh = {3, {1, T, (size_t)model_get_config(m)->d_vocab, 0}};
        model_shape tsh = {1, {T, 0, 0, 0}};
        if ((rc = model_st_writer_add_f32(w, "decompose_resid", MODEL_DTYPE_F32, &ss, st->data,
                                          err)) == 0 &&
            (rc = model_st_writer_add_f32(w, "decompose_resid_logits", MODEL_DTYPE_F32, &ls_shape,
                                          lg->data, err)) == 0 &&
            (rc = model_st_writer_add_f32(w, "logits", MODEL_DTYPE_F32, &lsh, logits, err)) == 0 &&
            (rc = model_st_writer_add(w, "tokens", MODEL_DTYPE_I32, &tsh, ids, err)) == 0 &&
            (rc = labels_json(st->labels, st->n, &lj, err)) == 0) {
            rc = model_st_writer_set_metadata(w, "labels", lj, err);
        }
    }
    if (rc == 0 && o->legal_stats) {
        size_t TL = 0;
        rc = interp_legal_mask(m, o->uci, &legal, &TL, err);
        if (rc == 0) {
            rc = add_predictions(w, acts[0], legal, err);
        }
        if (rc == 0) {
            rc = interp_legal_stats_new(&ls, lg->n, (const char *const *)lg->labels, T, err);
        }
        if (rc == 0) {
            rc = interp_legal_stats_add(ls, lg, legal, err);
        }
        if (rc == 0) {
            rc = add_legal_stats(w, ls, err);
        }
    }
    if (acts != NULL) {
        interp_acts_destroy(&acts[0]);
    }
    free(acts);
    free(lj);
    free(ids);
    free(legal);
    interp_legal_stats_destroy(&ls);
    interp_stack_destroy(&st);
    interp_stack_destroy(&lg);
    return rc;
}

static int many_games(model *m, model_session *s, const opts *o, model_st_writer *w, char *err) {
    const model_config *cfg = model_get_config(m);
    size_t n_ctx = (size_t)cfg->n_ctx;
    size_t B = o->batch > 0 ? (size_t)o->batch : 8;
    size_t n_games = 0;
    /* the games are streamed: memory holds one batch, whatever the size of the file */
    FILE *f = fopen(o->games, "rb");
    if (f == NULL) {
        return common_fail(err, COMMON_ERR_IO, "open %s: %s", o->games, strerror(errno));
    }
    chess_uci_reader *reader = NULL;
    int rc = chess_uci_reader_new_file(&reader, f, err);
    interp_neuron_stats *ns = NULL;
    interp_legal_stats *ls = NULL;
    int32_t *tokens = calloc(B * n_ctx, sizeof *tokens); /* [B, n_ctx] */
    size_t *lengths = calloc(B, sizeof *lengths);
    int32_t **ids = calloc(B, sizeof *ids);
    uint8_t **masks = calloc(B, sizeof *masks);
    uint8_t **phases = calloc(B, sizeof *phases);
    if (tokens == NULL || lengths == NULL || ids == NULL || masks == NULL || phases == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "decompose: out of memory");
    }
    if (rc == 0) {
        rc = interp_neuron_stats_new(&ns, cfg, 15, -15, err);
    }
    double t0 = common_now_s();
    bool end = false;
    while (rc == 0 && !end) {
        size_t nb = 0, Tmax = 0;
        while (rc == 0 && nb < B) {
            const char *line = NULL;
            size_t line_no = 0, T = 0, Tm = 0;
            int got = chess_uci_reader_next(reader, &line, &line_no, err);
            if (got == CHESS_UCI_END) {
                end = true;
                break;
            }
            if (got < 0) {
                rc = cli_error_prefix(err, got, o->games);
                break;
            }
            rc = interp_tokens_from_uci(m, line, &ids[nb], &T, err);
            if (rc == 0) {
                rc = interp_phases(line, &phases[nb], &Tm, err);
            }
            if (rc == 0 && o->legal_stats) {
                rc = interp_legal_mask(m, line, &masks[nb], &Tm, err);
            }
            if (rc != 0) {
                char where[COMMON_ERR_LEN];
                snprintf(where, sizeof where, "%s line %zu", o->games, line_no);
                rc = cli_error_prefix(err, rc, where);
                nb++; /* its buffers are freed with the batch */
                break;
            }
            lengths[nb++] = o->keep > 0 && (size_t)o->keep < T ? (size_t)o->keep : T;
            Tmax = lengths[nb - 1] > Tmax ? lengths[nb - 1] : Tmax;
        }
        n_games += rc == 0 ? nb : 0;
        if (rc == 0 && nb == 0) {
            break;
        }
        interp_acts **acts = NULL;
        if (rc == 0) {
            int32_t pad = model_tokenizer_pad(model_get_tokenizer(m));
            for (size_t b = 0; b < nb; b++) {
                for (size_t t = 0; t < Tmax; t++) {
                    tokens[b * Tmax + t] = t < lengths[b] ? ids[b][t] : pad;
                }
            }
            rc = interp_run_acts(s, tokens, lengths, nb, Tmax, false, &acts, err);
        }
        for (size_t b = 0; b < nb && rc == 0; b++) {
            rc = interp_neuron_stats_add(ns, acts[b], phases[b], err);
            if (rc == 0 && o->legal_stats) {
                interp_stack *st = NULL, *lg = NULL;
                rc = components(m, acts[b], o, &st, err);
                if (rc == 0) {
                    rc = interp_stack_to_logits(m, st, &lg, err);
                }
                if (rc == 0 && ls == NULL) {
                    rc = interp_legal_stats_new(&ls, lg->n, (const char *const *)lg->labels, n_ctx,
                                                err);
                }
                if (rc == 0) {
                    rc = interp_legal_stats_add(ls, lg, masks[b], err);
                }
                interp_stack_destroy(&st);
                interp_stack_destroy(&lg);
            }
        }
        for (size_t b = 0; b < nb; b++) {
            if (acts != NULL) {
                interp_acts_destroy(&acts[b]);
            }
            free(ids[b]);
            free(masks[b]);
            free(phases[b]);
            ids[b] = NULL;
            masks[b] = NULL;
            phases[b] = NULL;
        }
        free(acts);
    }
    double secs = common_now_s() - t0;
    if (rc == 0 && n_games == 0) {
        rc = common_fail(err, COMMON_ERR_INVALID, "%s holds no games", o->games);
    }
    if (rc == 0) {
        size_t LM = (size_t)cfg->n_layers * (size_t)cfg->d_mlp;
        float *buf = malloc(LM * sizeof *buf);
        model_shape shape = {2, {(size_t)cfg->n_layers, (size_t)cfg->d_mlp, 0, 0}};
        char name[64];
        if (buf == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "decompose: out of memory");
        }
        /* A group no position fell into (the slice 15:-15 of games of at most 30 tokens) has
         * no mean: it is left out, with its count, rather than written as NaN. */
        json_t *counts = json_object();
        for (int g = 0; g < INTERP_NEURON_N_GROUPS && rc == 0; g++) {
            json_object_set_new(counts, group_names[g], json_integer((json_int_t)ns->count[g]));
            if (ns->count[g] == 0) {
                printf("neuron_means.%s left out: no position of the games falls in it%s\n",
                       group_names[g],
                       g == INTERP_NEURON_SLICE ? " (the slice 15:-15 needs games of more than "
                                                  "30 tokens)"
                                                : "");
                continue;
            }
            interp_neuron_stats_mean(ns, g, buf);
            snprintf(name, sizeof name, "neuron_means.%s", group_names[g]);
            rc = model_st_writer_add_f32(w, name, MODEL_DTYPE_F32, &shape, buf, err);
        }
        char *counts_text = counts != NULL ? json_dumps(counts, JSON_COMPACT) : NULL;
        if (rc == 0) {
            rc = counts_text != NULL
                     ? model_st_writer_set_metadata(w, "neuron_means.positions", counts_text, err)
                     : common_fail(err, COMMON_ERR_NOMEM, "decompose: out of memory");
        }
        free(counts_text);
        json_decref(counts);
        free(buf);
    }
    if (rc == 0 && ls != NULL) {
        rc = add_legal_stats(w, ls, err);
    }
    if (rc == 0) {
        char num[32];
        snprintf(num, sizeof num, "%zu", n_games);
        rc = model_st_writer_set_metadata(w, "n_games", num, err);
        printf("%zu games in %.3f s (%.1f games/s)\n", n_games, secs,
               secs > 0 ? (double)n_games / secs : 0.0);
    }
    interp_neuron_stats_destroy(&ns);
    interp_legal_stats_destroy(&ls);
    chess_uci_reader_destroy(&reader);
    fclose(f);
    free(tokens);
    free(lengths);
    free(ids);
    free(masks);
    free(phases);
    return rc;
}

int cli_decompose(int argc, char **argv) {
    opts o;
    memset(&o, 0, sizeof o);
    int mode = 0;
    static const char *const modes[] = {"all", "attn", "mlp", NULL};
    static const interp_decomp_mode mode_values[] = {INTERP_DECOMP_ALL, INTERP_DECOMP_ATTN,
                                                     INTERP_DECOMP_MLP};
    const cli_opt table[] = {
        CLI_OPT_MODEL(&o.dir),
        {.name = "--uci",
         .kind = CLI_STRING,
         .value = &o.uci,
         .meta = "MOVES",
         .help = "one game: decompose_resid (apply_ln at the final layer) [n,1,T,D], its logit\n"
                 "contributions [n,1,T,V], logits [1,T,V]"},
        {.name = "--games",
         .kind = CLI_STRING,
         .value = &o.games,
         .meta = "FILE",
         .help = "one UCI game per line ('#' comments): neuron means per layer x neuron (all,\n"
                 "slice 15:-15, white/black from/to) [L,M]"},
        {.name = "--mode",
         .kind = CLI_CHOICE,
         .value = &mode,
         .meta = "MODE",
         .choices = modes,
         .help = "decompose_resid mode"},
        {.name = "--heads",
         .kind = CLI_FLAG,
         .value = &o.heads,
         .help = "add the per-head rows (stack_head_results)"},
        {.name = "--legal-stats",
         .kind = CLI_FLAG,
         .value = &o.legal_stats,
         .help = "legal-move statistics per component x position (legal games); with --uci\n"
                 "also predictions (log-probs, top-5, legal mass)"},
        CLI_OPT_TOKENS(&o.keep, "only the first N tokens of the game (<s> included; may end\n"
                                "inside a move); with --games, of each game longer than N"),
        CLI_OPT_THREADS(&o.threads),
        {.name = "--batch",
         .kind = CLI_LONG,
         .value = &o.batch,
         .meta = "N",
         .lo = 0,
         .hi = 1024,
         .help = "games per forward with --games (0 = 8)"},
        CLI_OPT_OUT(&o.out, "safetensors file to write"),
    };
    const cli_spec spec = {
        .command = "decompose",
        .synopsis = "--model DIR (--uci \"MOVES\" | --games FILE) [--mode all|attn|mlp] [--heads]\n"
                    "                           [--legal-stats] --out FILE.safetensors",
        .about = "Residual-stream decomposition and direct logit attribution of one game, or\n"
                 "neuron means and legal-move statistics aggregated over a file of games.",
        .opts = table,
        .n_opts = CLI_N_OPTS(table),
    };
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    o.mode = mode_values[mode];
    if ((o.uci == NULL) == (o.games == NULL)) {
        return cli_usage_error(&spec, "exactly one of --uci / --games is needed");
    }
    const char *inputs[] = {o.games};
    if (!cli_output_not_in_model("decompose", o.out, o.dir) ||
        !cli_output_is_new("decompose", o.out, inputs, 1)) {
        return 1;
    }
    char err[COMMON_ERR_LEN] = "";
    model *m = NULL;
    model_backend *be = NULL;
    model_session *s = NULL;
    model_st_writer *w = NULL;
    int rc = model_load(&m, o.dir, NULL, err);
    if (rc == 0) {
        rc = model_backend_cpu_new(&be, (int)o.threads, err);
    }
    if (rc == 0) {
        rc = model_session_new(&s, m, be, err);
    }
    if (rc == 0) {
        rc = model_st_writer_new(&w, err);
    }
    if (rc == 0) {
        rc = o.uci != NULL ? one_game(m, s, &o, w, err) : many_games(m, s, &o, w, err);
    }
    if (rc == 0) {
        rc = model_st_writer_set_metadata(w, "model", o.dir, err);
    }
    if (rc == 0) {
        rc = model_st_writer_write(w, o.out, err);
    }
    if (rc == 0) {
        printf("wrote %s\n", o.out);
    } else {
        fprintf(stderr, "chesslens decompose: %s\n", err);
    }
    model_st_writer_destroy(&w);
    model_session_destroy(&s);
    model_backend_destroy(&be);
    model_destroy(&m);
    return rc == 0 ? 0 : 1;
}
