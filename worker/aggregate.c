/*
 * Aggregate tasks: legal-move statistics, neuron statistics and predictions over a range of
 * whole games. Games run in batches of the executor's games per run, right-padded to the
 * batch's longest game, caching only the hooks the analysis reads; each game's activations are
 * trimmed back to its length (worker_run_games), so every game counts as if it ran alone. The
 * statistics are the task's mergeable partials, which the store merges across tasks exactly.
 * Progress is reported after each batch.
 *
 * Neuron statistics never bring activations back: each batch's hook_post stays on the device
 * and sum_rows adds its positions into the group sums there (a mask bit per group: all, the
 * slice, the position's phase), in the order interp_neuron_stats_add adds them on the host, so
 * the sums are the same doubles; the host counts positions. Only the sums come back, once per
 * task (worker_neurons_finish), or they are reduced across devices first (group.c).
 *
 * Legal-move statistics bring no activations back either: each batch runs caching only the
 * components' hooks, and interp_legal_accum_add builds each game's component stack on the
 * device (copies of the cached rows, the heads' products with W_O, centre_scale with ln_final's
 * cached scale, one product with W_U), then the backend's legal_stats adds the masked minima,
 * maxima and means of its logits into accumulators there. Only the legal masks, computed from
 * the moves on the host, go up; the accumulators come down once per task (or share), at the
 * end of the run, and the shares of a split task are merged on the host (group.c). The
 * products have the shapes of the host path (worker_legal_components, interp_stack_to_logits,
 * interp_legal_stats_add), so on a one-thread CPU backend the partials are that path's bit for
 * bit; with more threads OpenBLAS may split a product otherwise than the host path's call and
 * round it differently (float32 rounding of the logits).
 */
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
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

/* One game's predictions (the statistics kinds take their device paths instead). */
static int add_game(worker_executor *e, const coordinator_analysis *a,
                    const coordinator_work_game *g, const interp_acts *acts,
                    struct worker_output_mem *mem, size_t *pred_at, char *err) {
    const model *m = e->m;
    uint8_t *legal = NULL; /* [T, V] */
    size_t T = 0;
    int rc = interp_legal_mask(m, g->uci, &legal, &T, err);
    if (rc == 0 && T != g->n_tokens) {
        rc = common_fail(err, COMMON_ERR_INVALID,
                         "executor: game %llu: %zu tokens in its moves, %zu in the work",
                         (unsigned long long)g->index, T, g->n_tokens);
    }
    if (rc == 0) {
        rc = add_predictions(mem, m, g->index, acts, legal, a->predictions.top_k, pred_at, err);
    }
    free(legal);
    return rc;
}

/* One batch of nb games (tokens [nb, T], right-padded) into the device accumulators: each
 * game's legal mask from its moves on the host, a forward caching the components' hooks, then
 * interp_legal_accum_add, which leaves the activations where they are. */
static int legal_batch(worker_executor *e, interp_legal_accum *acc,
                       const coordinator_work_game *games, const int32_t *tokens,
                       const size_t *lengths, size_t nb, size_t T, const model_hook *hooks,
                       size_t n_hooks, uint8_t **masks, char *err) {
    int rc = 0;
    for (size_t b = 0; b < nb && rc == 0; b++) {
        size_t Tm = 0;
        rc = interp_legal_mask(e->m, games[b].uci, &masks[b], &Tm, err);
        if (rc == 0 && Tm != games[b].n_tokens) {
            rc = common_fail(err, COMMON_ERR_INVALID,
                             "executor: game %llu: %zu tokens in its moves, %zu in the work",
                             (unsigned long long)games[b].index, Tm, games[b].n_tokens);
        }
    }
    model_cache *c = NULL;
    if (rc == 0) {
        model_request req;
        model_request_init(&req, e->s, tokens, nb, T);
        req.lengths = lengths;
        req.hooks = hooks;
        req.n_hooks = n_hooks;
        req.want_logits = false;
        rc = model_run(e->s, &req, &c, err);
    }
    if (rc == 0) {
        rc = interp_legal_accum_add(acc, c, lengths, (const uint8_t *const *)masks, nb, err);
    }
    model_cache_destroy(&c);
    for (size_t b = 0; b < nb; b++) {
        free(masks[b]);
        masks[b] = NULL;
    }
    return rc;
}

/* Python's clamp of a slice bound against length T (as interp's neuron statistics). */
static size_t slice_bound(long b, size_t T) {
    if (b < 0) {
        b += (long)T;
        return b < 0 ? 0 : (size_t)b;
    }
    return (size_t)b > T ? T : (size_t)b;
}

/* One batch of nb games (tokens [nb, T], right-padded) into the device sums: a forward caching
 * hook_post of every layer, the group bits of each position counted on the host and uploaded
 * as the mask [nb, T] (0 for padding), then one sum_rows per layer. */
static int neuron_batch(model_session *s, interp_neuron_stats *ns, model_buf *acc,
                        model_buf *mask_buf, const coordinator_work_game *games,
                        const int32_t *tokens, const size_t *lengths, size_t nb, size_t T,
                        const model_hook *hooks, int32_t *mask, char *err) {
    model_backend *be = model_session_backend(s);
    size_t L = ns->L, M = ns->M;
    for (size_t b = 0; b < nb; b++) {
        size_t n = lengths[b], lo = slice_bound(ns->slice_begin, n),
               hi = slice_bound(ns->slice_end, n);
        const uint8_t *ph = games[b].phases;
        for (size_t t = 0; t < T; t++) {
            uint32_t bits = 0;
            if (t < n) {
                bits |= 1u << INTERP_NEURON_ALL;
                bits |= t >= lo && t < hi ? 1u << INTERP_NEURON_SLICE : 0;
                if (ph != NULL && ph[t] >= CHESS_PHASE_WHITE_FROM &&
                    ph[t] <= CHESS_PHASE_BLACK_TO) {
                    bits |= 1u << (INTERP_NEURON_WHITE_FROM + (ph[t] - CHESS_PHASE_WHITE_FROM));
                }
            }
            for (int g = 0; g < INTERP_NEURON_N_GROUPS; g++) {
                ns->count[g] += (bits >> g) & 1u;
            }
            mask[b * T + t] = (int32_t)bits;
        }
    }
    model_request req;
    model_request_init(&req, s, tokens, nb, T);
    req.lengths = lengths;
    req.hooks = hooks;
    req.n_hooks = L;
    req.want_logits = false;
    model_cache *c = NULL;
    int rc = model_run(s, &req, &c, err);
    if (rc == 0) {
        rc = be->upload(be, (model_ref){mask_buf, 0}, mask, nb * T, err);
    }
    for (size_t l = 0; l < L && rc == 0; l++) {
        model_ref x = model_cache_ref(c, hooks[l]); /* [nb, T, M] */
        rc = be->sum_rows(be, (model_ref){acc, 2 * l * M}, L * M, x, M, (model_ref){mask_buf, 0},
                          nb * T, M, INTERP_NEURON_N_GROUPS, err);
    }
    model_cache_destroy(&c);
    return rc;
}

int worker_neurons_finish(worker_output *o, char *err) {
    struct worker_output_mem *mem = o->mem;
    if (mem->neuron_acc == NULL) {
        return 0;
    }
    interp_neuron_stats *ns = mem->neurons;
    size_t n = INTERP_NEURON_N_GROUPS * ns->L * ns->M; /* doubles */
    int rc = mem->neuron_be->download(mem->neuron_be, ns->sum, (model_ref){mem->neuron_acc, 0},
                                      2 * n, err);
    mem->neuron_be->free(mem->neuron_be, mem->neuron_acc);
    mem->neuron_acc = NULL;
    return rc;
}

size_t worker_legal_rows(const interp_legal_stats *ls) {
    size_t rows = 0;
    for (size_t c = 0; ls != NULL && c < ls->n_comp * ls->T; c++) {
        rows += ls->count[c] > 0 ? 4 : 0; /* min/max legal/illegal, as stored */
    }
    return rows;
}

size_t worker_neuron_rows(const interp_neuron_stats *ns) {
    size_t rows = 0;
    for (int gr = 0; gr < INTERP_NEURON_N_GROUPS; gr++) {
        rows += ns->count[gr] > 0 ? ns->L * ns->M : 0;
    }
    return rows;
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
    T_max = e->legal_T > 0 ? e->legal_T : T_max; /* a share: the whole task's positions */
    bool neurons = a->kind == COORDINATOR_ANALYSIS_NEURON_STATS;
    bool legal = a->kind == COORDINATOR_ANALYSIS_LEGAL_STATS;
    bool want_logits = a->kind == COORDINATOR_ANALYSIS_PREDICTIONS;
    interp_legal_parts parts = legal ? worker_legal_parts(a->legal.components)
                                     : (interp_legal_parts){false, false, false, false};
    model_hook *hooks = NULL;
    size_t n_hooks = 0;
    if (legal) {
        n_hooks = interp_legal_parts_hooks(cfg, parts, NULL, 0);
    } else if (neurons) {
        n_hooks = L;
    }
    hooks = malloc((n_hooks > 0 ? n_hooks : 1) * sizeof *hooks);
    int32_t *ids = malloc(B * n_ctx * sizeof *ids); /* [B, n_ctx]: one game per row */
    const int32_t **rows = malloc(B * sizeof *rows);
    size_t *lengths = malloc(B * sizeof *lengths);
    interp_acts **acts = calloc(B, sizeof *acts);
    uint8_t **masks = calloc(B, sizeof *masks); /* legal_stats: [B] masks [T_b, V] */
    int32_t *padded = NULL; /* device paths: [B, n_ctx] tokens of a batch, right-padded */
    int32_t *mask = NULL;   /* neuron_stats: [B, n_ctx] group bits */
    model_buf *mask_buf = NULL;
    interp_legal_accum *acc = NULL;
    model_backend *be = model_session_backend(e->s);
    int rc = 0;
    if (hooks == NULL || ids == NULL || rows == NULL || lengths == NULL || acts == NULL ||
        masks == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory for %zu games", B);
        goto done;
    }
    if (neurons || legal) {
        padded = malloc(B * n_ctx * sizeof *padded);
        if (padded == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory for %zu games", B);
            goto done;
        }
    }
    if (legal) {
        interp_legal_parts_hooks(cfg, parts, hooks, n_hooks);
        if (n > 0) {
            rc = interp_legal_accum_new(&acc, e->s, parts, T_max, err);
        }
    } else if (neurons) {
        for (size_t l = 0; l < L; l++) {
            hooks[l] = (model_hook){MODEL_HOOK_MLP_POST, (int)l};
        }
        rc = interp_neuron_stats_new(&mem->neurons, cfg, a->neuron.slice_begin, a->neuron.slice_end,
                                     err);
        mask = malloc(B * n_ctx * sizeof *mask);
        if (rc == 0 && mask == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory for %zu games", B);
        }
        /* the sums on the device: [INTERP_NEURON_N_GROUPS, L, M] doubles, from zero bits */
        size_t n_acc = 2 * INTERP_NEURON_N_GROUPS * L * (size_t)cfg->d_mlp;
        if (rc == 0 && (rc = be->alloc(be, n_acc, &mem->neuron_acc, err)) == 0) {
            mem->neuron_be = be;
            rc = be->fill(be, (model_ref){mem->neuron_acc, 0}, n_acc, 0.0f, err);
        }
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
        if (rc == 0 && (neurons || legal)) {
            size_t T = 0;
            for (size_t b = 0; b < nb; b++) {
                T = lengths[b] > T ? lengths[b] : T;
            }
            int32_t pad = model_tokenizer_pad(model_get_tokenizer(e->m));
            for (size_t b = 0; b < nb; b++) {
                memcpy(padded + b * T, rows[b], lengths[b] * sizeof *padded);
                for (size_t t = lengths[b]; t < T; t++) {
                    padded[b * T + t] = pad;
                }
            }
            if (legal) {
                rc = legal_batch(e, acc, &w->games[g0], padded, lengths, nb, T, hooks, n_hooks,
                                 masks, err);
            } else {
                if (mask_buf == NULL) {
                    rc = be->alloc(be, B * n_ctx, &mask_buf, err); /* room for any batch */
                }
                if (rc == 0) {
                    rc = neuron_batch(e->s, mem->neurons, mem->neuron_acc, mask_buf, &w->games[g0],
                                      padded, lengths, nb, T, hooks, mask, err);
                }
            }
            if (rc == 0) {
                worker_report_progress(e, (double)(g0 + nb) / (double)n);
            }
            continue;
        }
        if (rc == 0) {
            rc = worker_run_games(e->s, rows, lengths, nb, hooks, n_hooks, want_logits, acts, err);
        }
        for (size_t b = 0; b < nb && rc == 0; b++) {
            rc = add_game(e, a, &w->games[g0 + b], acts[b], mem, &pred_at, err);
        }
        for (size_t b = 0; b < nb; b++) {
            interp_acts_destroy(&acts[b]);
        }
        if (rc == 0) {
            worker_report_progress(e, (double)(g0 + nb) / (double)n);
        }
    }
    if (rc == 0 && acc != NULL) {
        rc = interp_legal_accum_download(acc, &mem->legal, err); /* once per task (or share) */
    }
    if (rc != 0) {
        goto done;
    }
    if (legal && mem->legal != NULL) {
        o->n_rows = worker_legal_rows(mem->legal);
        o->results.legal = mem->legal;
    } else if (neurons) {
        /* the sums are still on the device: worker_neurons_finish or a reduction brings them */
        o->n_rows = worker_neuron_rows(mem->neurons);
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
    free(masks);
    interp_legal_accum_destroy(&acc); /* before the backend can be made again */
    if (mask_buf != NULL) {
        be->free(be, mask_buf);
    }
    free(padded);
    free(mask);
    free(hooks);
    free(ids);
    free(rows);
    free(lengths);
    return rc;
}
