/*
 * Aggregate tasks: legal-move statistics, neuron statistics and predictions over a range of
 * whole games. Games run in batches of the executor's games per run, right-padded to the
 * batch's longest game, caching only the hooks the analysis reads; each game's activations are
 * trimmed back to its length (worker_run_games), so every game counts as if it ran alone. The
 * statistics are the task's mergeable partials, which the store merges across tasks exactly.
 * Progress is reported after each batch.
 */
#include <stdlib.h>
#include <string.h>

#include "worker/worker_int.h"

/* Adds one game's prediction rows (ranks 1..k at every position) to the output's columns from
 * row *at on. */
static int add_predictions(struct worker_output_mem *mem, const model *m, uint64_t game,
                           const interp_acts *acts, const uint8_t *legal, size_t k, size_t *at,
                           char *err) {
    const model_tokenizer *tok = model_get_tokenizer(m);
    size_t n = 0, T = interp_acts_positions(acts), V = mem->V;
    const float *logits = interp_acts_get(acts, (model_hook){MODEL_HOOK_LOGITS, -1}, &n);
    if (logits == NULL || n != T * V) {
        return common_fail(err, COMMON_ERR_NOT_FOUND, "predictions: no logits for game %llu",
                           (unsigned long long)game);
    }
    interp_predictions *p = NULL;
    int rc = interp_predictions_new(&p, logits, T, V, legal, k, err);
    for (size_t t = 0; t < T && rc == 0; t++) {
        for (size_t r = 0; r < k && rc == 0; r++) {
            int32_t id = p->top_ids[t * k + r];
            if (mem->token_texts[id] == NULL) {
                const char *text = model_tokenizer_token(tok, id);
                mem->token_texts[id] = strdup(text != NULL ? text : "");
                if (mem->token_texts[id] == NULL) {
                    rc = common_fail(err, COMMON_ERR_NOMEM, "predictions: out of memory");
                    break;
                }
            }
            size_t i = (*at)++;
            mem->p_game[i] = game;
            mem->p_pos[i] = (uint32_t)t;
            mem->p_rank[i] = (uint32_t)(r + 1);
            mem->p_token[i] = mem->token_texts[id];
            mem->p_logprob[i] = p->top_logprobs[t * k + r];
            mem->p_legal[i] = legal[t * V + (size_t)id] != 0;
        }
    }
    interp_predictions_destroy(&p);
    return rc;
}

static int alloc_predictions(struct worker_output_mem *mem, size_t rows, size_t V, char *err) {
    size_t k = rows > 0 ? rows : 1;
    mem->V = V;
    mem->p_game = malloc(k * sizeof *mem->p_game);
    mem->p_pos = malloc(k * sizeof *mem->p_pos);
    mem->p_rank = malloc(k * sizeof *mem->p_rank);
    mem->p_token = malloc(k * sizeof *mem->p_token);
    mem->p_logprob = malloc(k * sizeof *mem->p_logprob);
    mem->p_legal = malloc(k * sizeof *mem->p_legal);
    mem->token_texts = calloc(V, sizeof *mem->token_texts);
    if (mem->p_game == NULL || mem->p_pos == NULL || mem->p_rank == NULL || mem->p_token == NULL ||
        mem->p_logprob == NULL || mem->p_legal == NULL || mem->token_texts == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "predictions: out of memory for %zu rows", rows);
    }
    return 0;
}

/* One game's part of the task's analysis. */
static int add_game(worker_executor *e, const coordinator_analysis *a,
                    const coordinator_work_game *g, const interp_acts *acts, size_t T_max,
                    struct worker_output_mem *mem, size_t *pred_at, char *err) {
    const model *m = e->m;
    if (a->kind == COORDINATOR_ANALYSIS_NEURON_STATS) {
        return interp_neuron_stats_add(mem->neurons, acts, g->phases, err);
    }
    uint8_t *legal = NULL; /* [T, V] */
    size_t T = 0;
    int rc = interp_legal_mask(m, g->uci, &legal, &T, err);
    if (rc == 0 && T != g->n_tokens) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "executor: game %llu: %zu tokens in its moves, %zu in the work",
                         (unsigned long long)g->index, T, g->n_tokens);
    }
    if (rc == 0 && a->kind == COORDINATOR_ANALYSIS_PREDICTIONS) {
        rc = add_predictions(mem, m, g->index, acts, legal, a->predictions.top_k, pred_at, err);
    } else if (rc == 0) {
        interp_stack *st = NULL, *lg = NULL;
        rc = worker_legal_components(m, acts, a->legal.components, &st, err);
        if (rc == 0) {
            rc = interp_stack_to_logits(m, st, &lg, err); /* [n, T, V] */
        }
        if (rc == 0 && mem->legal == NULL) {
            rc = interp_legal_stats_new(&mem->legal, lg->n, (const char *const *)lg->labels, T_max,
                                        err);
        }
        if (rc == 0) {
            rc = interp_legal_stats_add(mem->legal, lg, legal, err);
        }
        interp_stack_destroy(&st);
        interp_stack_destroy(&lg);
    }
    free(legal);
    return rc;
}

int worker_run_aggregate(worker_executor *e, const coordinator_analysis *a,
                         const coordinator_work *w, worker_output *o, char *err) {
    const model_config *cfg = model_get_config(e->m);
    struct worker_output_mem *mem = o->mem;
    size_t n = w->n_games, B = e->games_per_run, T_max = 0, positions = 0;
    size_t L = (size_t)cfg->n_layers, V = (size_t)cfg->d_vocab, n_ctx = (size_t)cfg->n_ctx;
    for (size_t g = 0; g < n; g++) {
        T_max = w->games[g].n_tokens > T_max ? w->games[g].n_tokens : T_max;
        positions += w->games[g].n_tokens;
    }
    model_hook *hooks = NULL;
    size_t n_hooks = 0;
    bool want_logits = a->kind == COORDINATOR_ANALYSIS_PREDICTIONS;
    if (a->kind == COORDINATOR_ANALYSIS_LEGAL_STATS) {
        n_hooks = worker_legal_hooks(cfg, a->legal.components, NULL, 0);
    } else if (a->kind == COORDINATOR_ANALYSIS_NEURON_STATS) {
        n_hooks = L;
    }
    hooks = malloc((n_hooks > 0 ? n_hooks : 1) * sizeof *hooks);
    int32_t *ids = malloc(B * n_ctx * sizeof *ids); /* [B, n_ctx]: one game per row */
    const int32_t **rows = malloc(B * sizeof *rows);
    size_t *lengths = malloc(B * sizeof *lengths);
    interp_acts **acts = calloc(B, sizeof *acts);
    int rc = 0;
    if (hooks == NULL || ids == NULL || rows == NULL || lengths == NULL || acts == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory for %zu games", B);
        goto done;
    }
    if (a->kind == COORDINATOR_ANALYSIS_LEGAL_STATS) {
        worker_legal_hooks(cfg, a->legal.components, hooks, n_hooks);
    } else if (a->kind == COORDINATOR_ANALYSIS_NEURON_STATS) {
        for (size_t l = 0; l < L; l++) {
            hooks[l] = (model_hook){MODEL_HOOK_MLP_POST, (int)l};
        }
        rc = interp_neuron_stats_new(&mem->neurons, cfg, a->neuron.slice_begin, a->neuron.slice_end,
                                     err);
    } else {
        rc = alloc_predictions(mem, positions * a->predictions.top_k, V, err);
    }
    size_t pred_at = 0;
    for (size_t g0 = 0; g0 < n && rc == 0; g0 += B) {
        size_t nb = n - g0 < B ? n - g0 : B;
        for (size_t b = 0; b < nb && rc == 0; b++) {
            const coordinator_work_game *g = &w->games[g0 + b];
            rc = worker_ids_from_texts(e->m, g->tokens, g->n_tokens, ids + b * n_ctx, err);
            rows[b] = ids + b * n_ctx;
            lengths[b] = g->n_tokens;
        }
        if (rc == 0) {
            rc = worker_run_games(e->s, rows, lengths, nb, hooks, n_hooks, want_logits, acts, err);
        }
        for (size_t b = 0; b < nb && rc == 0; b++) {
            rc = add_game(e, a, &w->games[g0 + b], acts[b], T_max, mem, &pred_at, err);
        }
        for (size_t b = 0; b < nb; b++) {
            interp_acts_destroy(&acts[b]);
        }
        if (rc == 0) {
            worker_report_progress(e, (double)(g0 + nb) / (double)n);
        }
    }
    if (rc != 0) {
        goto done;
    }
    if (a->kind == COORDINATOR_ANALYSIS_LEGAL_STATS && mem->legal != NULL) {
        const interp_legal_stats *ls = mem->legal;
        for (size_t c = 0; c < ls->n_comp * ls->T; c++) {
            o->n_rows += ls->count[c] > 0 ? 4 : 0; /* min/max legal/illegal, as stored */
        }
        o->results.legal = ls;
    } else if (a->kind == COORDINATOR_ANALYSIS_NEURON_STATS) {
        for (int gr = 0; gr < INTERP_NEURON_N_GROUPS; gr++) {
            o->n_rows += mem->neurons->count[gr] > 0 ? L * (size_t)cfg->d_mlp : 0;
        }
        o->results.neurons = mem->neurons;
    } else if (a->kind == COORDINATOR_ANALYSIS_PREDICTIONS) {
        mem->pred = (coordinator_prediction_batch){
            .n = pred_at,
            .game = mem->p_game,
            .pos = mem->p_pos,
            .rank = mem->p_rank,
            .token = mem->p_token,
            .logprob = mem->p_logprob,
            .legal = mem->p_legal,
        };
        o->n_rows = pred_at;
        o->results.predictions = &mem->pred;
    }
done:
    for (size_t b = 0; acts != NULL && b < B; b++) {
        interp_acts_destroy(&acts[b]);
    }
    free(acts);
    free(hooks);
    free(ids);
    free(rows);
    free(lengths);
    return rc;
}
