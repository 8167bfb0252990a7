/*
 * `chesslens decompose`: residual-stream decomposition and direct logit attribution on this
 * machine. For one game (--uci) it writes TL's decompose_resid stack (after apply_ln_to_stack
 * at the final layer, as the logit-lens notebooks do) and its direct logit contributions
 * (stack @ W_U), optionally the per-head stack, and the logits. For a file of games (--games,
 * one UCI game per line) it aggregates: neuron means by position group and, with
 * --legal-stats, the legal-move statistics of every component at every position. Tensors keep
 * TL's shapes ([n, B, T, D] stacks with B = 1); component labels are JSON in the metadata.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "interp/interp.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: chesslens decompose --model DIR (--uci \"MOVES\" | --games FILE)\n"
            "                           [--mode all|attn|mlp] [--heads] [--legal-stats]\n"
            "                           [--threads N] [--batch N] --out FILE.safetensors\n"
            "\n"
            "  --uci MOVES     one game: decompose_resid (apply_ln at the final layer) [n,1,T,D],\n"
            "                  its logit contributions [n,1,T,V], logits [1,T,V]\n"
            "  --games FILE    one UCI game per line: neuron means per layer x neuron (all,\n"
            "                  slice 15:-15, white/black from/to) [L,M]\n"
            "  --heads         add the per-head rows (stack_head_results)\n"
            "  --legal-stats   legal-move statistics per component x position (legal games);\n"
            "                  with --uci also predictions (log-probs, top-5, legal mass)\n");
}

typedef struct opts {
    const char *dir, *uci, *games, *out;
    interp_decomp_mode mode;
    bool heads, legal_stats;
    long threads, batch;
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

/* Reads the non-empty lines of path (caller frees each and the array). */
static int read_lines(const char *path, char ***out, size_t *n, char *err) {
    char *text = NULL;
    size_t len = 0;
    int rc = common_read_file(path, &text, &len, err);
    if (rc != 0) {
        return rc;
    }
    size_t cap = 16, k = 0;
    char **lines = malloc(cap * sizeof *lines);
    bool oom = lines == NULL;
    char *save = NULL;
    for (char *l = strtok_r(text, "\r\n", &save); !oom && l != NULL;
         l = strtok_r(NULL, "\r\n", &save)) {
        while (*l == ' ' || *l == '\t') {
            l++;
        }
        if (*l == '\0' || *l == '#') {
            continue;
        }
        if (k == cap) {
            char **g = realloc(lines, 2 * cap * sizeof *lines);
            if (g == NULL) {
                oom = true;
                break;
            }
            lines = g;
            cap *= 2;
        }
        lines[k] = malloc(strlen(l) + 1);
        if (lines[k] == NULL) {
            oom = true;
            break;
        }
        strcpy(lines[k++], l);
    }
    free(text);
    if (oom) {
        for (size_t i = 0; lines != NULL && i < k; i++) {
            free(lines[i]);
        }
        free(lines);
        return common_fail(err, COMMON_ERR_NOMEM, "reading %s: out of memory", path);
    }
    if (k == 0) {
        free(lines);
        return common_fail(err, COMMON_ERR_INVALID, "%s holds no games", path);
    }
    *out = lines;
    *n = k;
    return 0;
}

static int many_games(model *m, model_session *s, const opts *o, model_st_writer *w, char *err) {
    const model_config *cfg = model_get_config(m);
    size_t n_ctx = (size_t)cfg->n_ctx;
    size_t B = o->batch > 0 ? (size_t)o->batch : 8;
    char **games = NULL;
    size_t n_games = 0;
    int rc = read_lines(o->games, &games, &n_games, err);
    if (rc != 0) {
        return rc;
    }
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
    for (size_t g0 = 0; g0 < n_games && rc == 0; g0 += B) {
        size_t nb = n_games - g0 < B ? n_games - g0 : B, Tmax = 0;
        for (size_t b = 0; b < nb && rc == 0; b++) {
            size_t T = 0, Tm = 0;
            rc = interp_tokens_from_uci(m, games[g0 + b], &ids[b], &T, err);
            if (rc == 0) {
                rc = interp_phases(games[g0 + b], &phases[b], &Tm, err);
            }
            if (rc == 0 && o->legal_stats) {
                rc = interp_legal_mask(m, games[g0 + b], &masks[b], &Tm, err);
            }
            if (rc != 0) {
                char inner[COMMON_ERR_LEN];
                snprintf(inner, sizeof inner, "%s", err);
                rc = common_fail(err, rc, "game %zu: %s", g0 + b + 1, inner);
                break;
            }
            lengths[b] = T;
            Tmax = T > Tmax ? T : Tmax;
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
    if (rc == 0) {
        size_t LM = (size_t)cfg->n_layers * (size_t)cfg->d_mlp;
        float *buf = malloc(LM * sizeof *buf);
        model_shape shape = {2, {(size_t)cfg->n_layers, (size_t)cfg->d_mlp, 0, 0}};
        char name[64];
        if (buf == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "decompose: out of memory");
        }
        for (int g = 0; g < INTERP_NEURON_N_GROUPS && rc == 0; g++) {
            interp_neuron_stats_mean(ns, g, buf);
            snprintf(name, sizeof name, "neuron_means.%s", group_names[g]);
            rc = model_st_writer_add_f32(w, name, MODEL_DTYPE_F32, &shape, buf, err);
        }
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
    for (size_t i = 0; i < n_games; i++) {
        free(games[i]);
    }
    free(games);
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
    o.mode = INTERP_DECOMP_ALL;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(f, "--heads") == 0) {
            o.heads = true;
            continue;
        }
        if (strcmp(f, "--legal-stats") == 0) {
            o.legal_stats = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "chesslens decompose: %s needs a value\n", f);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(f, "--model") == 0) {
            o.dir = v;
        } else if (strcmp(f, "--uci") == 0) {
            o.uci = v;
        } else if (strcmp(f, "--games") == 0) {
            o.games = v;
        } else if (strcmp(f, "--out") == 0) {
            o.out = v;
        } else if (strcmp(f, "--mode") == 0) {
            if (strcmp(v, "all") == 0) {
                o.mode = INTERP_DECOMP_ALL;
            } else if (strcmp(v, "attn") == 0) {
                o.mode = INTERP_DECOMP_ATTN;
            } else if (strcmp(v, "mlp") == 0) {
                o.mode = INTERP_DECOMP_MLP;
            } else {
                fprintf(stderr, "chesslens decompose: --mode must be all, attn or mlp\n");
                return 2;
            }
        } else if (strcmp(f, "--threads") == 0 || strcmp(f, "--batch") == 0) {
            long x = 0;
            if (cli_parse_long("decompose", f, v, 0, 1024, &x) != 0) {
                return 2;
            }
            *(strcmp(f, "--threads") == 0 ? &o.threads : &o.batch) = x;
        } else {
            fprintf(stderr, "chesslens decompose: unknown option '%s'\n", f);
            usage(stderr);
            return 2;
        }
    }
    if (o.dir == NULL || o.out == NULL || (o.uci == NULL) == (o.games == NULL)) {
        fprintf(stderr, "chesslens decompose: --model, --out and exactly one of --uci / --games "
                        "are required\n");
        usage(stderr);
        return 2;
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
