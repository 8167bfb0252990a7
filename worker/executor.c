/*
 * The executor's life cycle and its one entry point. Creating an executor does all the
 * expensive work once (loading and processing the weights, starting the backend's threads,
 * uploading the weights into a session); worker_execute then checks a task against the model
 * and hands it to the runner of its kind (patch.c, aggregate.c), whose results end up in an
 * output that owns every array the coordinator's result types point to.
 */
#include <stdlib.h>
#include <string.h>

#include "worker/worker_int.h"

int worker_executor_new(worker_executor **out, const char *model_dir, const char *backend,
                        int threads, char *err) {
    worker_executor *e = calloc(1, sizeof *e);
    if (e == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory");
    }
    e->games_per_run = WORKER_GAMES_PER_RUN;
    int rc = model_load(&e->m, model_dir, NULL, err);
    if (rc != 0) {
        goto fail;
    }
    if ((rc = worker_backend_new(&e->be, backend, threads, err)) != 0 ||
        (rc = model_session_new(&e->s, e->m, e->be, err)) != 0) {
        goto fail;
    }
    *out = e;
    return 0;
fail:
    worker_executor_destroy(&e);
    return rc;
}

void worker_executor_destroy(worker_executor **e) {
    if (e == NULL || *e == NULL) {
        return;
    }
    model_session_destroy(&(*e)->s);
    model_backend_destroy(&(*e)->be);
    model_destroy(&(*e)->m);
    free(*e);
    *e = NULL;
}

const model *worker_executor_model(const worker_executor *e) {
    return e->m;
}

model_session *worker_executor_session(worker_executor *e) {
    return e->s;
}

void worker_executor_set_games_per_run(worker_executor *e, size_t n) {
    e->games_per_run = n > 0 ? n : WORKER_GAMES_PER_RUN;
}

uint64_t worker_executor_tasks_run(const worker_executor *e) {
    return e->tasks_run;
}

void worker_executor_set_progress(worker_executor *e, worker_progress_fn fn, void *ctx) {
    e->progress = fn;
    e->progress_ctx = ctx;
}

void worker_report_progress(const worker_executor *e, double fraction) {
    if (e->progress != NULL) {
        e->progress(e->progress_ctx, fraction < 0 ? 0 : fraction > 1 ? 1 : fraction);
    }
}

void worker_output_destroy(worker_output **o) {
    if (o == NULL || *o == NULL) {
        return;
    }
    struct worker_output_mem *mem = (*o)->mem;
    if (mem != NULL) {
        for (size_t i = 0; i < mem->n_patch; i++) {
            if (mem->clean_token != NULL) {
                free(mem->clean_token[i]);
            }
            if (mem->corrupt_token != NULL) {
                free(mem->corrupt_token[i]);
            }
            if (mem->metric != NULL) {
                free(mem->metric[i]);
            }
            if (mem->result != NULL) {
                interp_patch_result_destroy(&mem->result[i]);
            }
        }
        free(mem->game);
        free(mem->cutoff);
        free(mem->corrupt_pos);
        free(mem->corrupt_game);
        free(mem->clean_token);
        free(mem->corrupt_token);
        free(mem->metric);
        free(mem->normalized);
        free(mem->result);
        interp_legal_stats_destroy(&mem->legal);
        interp_neuron_stats_destroy(&mem->neurons);
        free(mem->p_game);
        free(mem->p_pos);
        free(mem->p_rank);
        free(mem->p_token);
        free(mem->p_logprob);
        free(mem->p_legal);
        for (size_t v = 0; mem->token_texts != NULL && v < mem->V; v++) {
            free(mem->token_texts[v]);
        }
        free(mem->token_texts);
        free(mem);
    }
    free(*o);
    *o = NULL;
}

/* The checks coordinator_spec_check_model makes, for this task's analysis. */
static int check_model(const model_config *cfg, const coordinator_analysis *a,
                       const coordinator_work *w, char *err) {
    if (w->kind == COORDINATOR_ANALYSIS_PATCH &&
        (w->cutoff < 2 || w->cutoff > (size_t)cfg->n_ctx)) {
        return common_fail(err, COMMON_ERR_INVALID, "executor: cut-off %zu outside 2..n_ctx %d",
                           w->cutoff, cfg->n_ctx);
    }
    if (w->kind == COORDINATOR_ANALYSIS_PREDICTIONS &&
        (a->predictions.top_k == 0 || a->predictions.top_k > (size_t)cfg->d_vocab)) {
        return common_fail(err, COMMON_ERR_INVALID, "executor: top_k %zu outside 1..d_vocab %d",
                           a->predictions.top_k, cfg->d_vocab);
    }
    for (size_t g = 0; g < w->n_games; g++) {
        if (w->games[g].n_tokens == 0 || w->games[g].n_tokens > (size_t)cfg->n_ctx) {
            return common_fail(
                err, COMMON_ERR_INVALID, "executor: game %llu has %zu tokens (n_ctx %d)",
                (unsigned long long)w->games[g].index, w->games[g].n_tokens, cfg->n_ctx);
        }
    }
    return 0;
}

int worker_execute(worker_executor *e, const coordinator_analysis *a, const coordinator_work *w,
                   worker_output **out, char *err) {
    if (a == NULL || w == NULL || out == NULL) {
        return common_fail(err, COMMON_ERR_INVALID, "executor: no analysis, work or output");
    }
    if (a->kind != w->kind) {
        return common_fail(
            err, COMMON_ERR_INVALID, "executor: the work is a %s task, the analysis %s",
            coordinator_analysis_kind_name(w->kind), coordinator_analysis_kind_name(a->kind));
    }
    int rc = check_model(model_get_config(e->m), a, w, err);
    if (rc != 0) {
        return rc;
    }
    worker_output *o = calloc(1, sizeof *o);
    if (o == NULL || (o->mem = calloc(1, sizeof *o->mem)) == NULL) {
        free(o);
        return common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory");
    }
    o->kind = w->kind;
    rc = w->kind == COORDINATOR_ANALYSIS_PATCH ? worker_run_patch(e, a, w, o, err)
                                               : worker_run_aggregate(e, a, w, o, err);
    if (rc != 0) {
        worker_output_destroy(&o);
        return rc;
    }
    e->tasks_run++;
    worker_report_progress(e, 1.0);
    *out = o;
    return 0;
}

int worker_ids_from_texts(const model *m, const char *const *texts, size_t n, int32_t *out,
                          char *err) {
    const model_tokenizer *tok = model_get_tokenizer(m);
    for (size_t i = 0; i < n; i++) {
        out[i] = model_tokenizer_id(tok, texts[i]);
        if (out[i] < 0) {
            return common_fail(err, COMMON_ERR_NOT_FOUND,
                               "executor: token '%s' (position %zu) is not in the vocabulary",
                               texts[i], i);
        }
    }
    return 0;
}
