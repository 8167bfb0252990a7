/*
 * The executor's life cycle and its one entry point. Creating an executor does all the
 * expensive work once (loading and processing the weights, starting the backends' threads,
 * uploading the weights into a session per device, broadcasting them when there are several);
 * worker_execute then checks a task against the model and hands it to the runner of its kind
 * (patch.c, aggregate.c), or splits it across the devices (group.c), whose results end up in
 * an output that owns every array the coordinator's result types point to. A backend error
 * makes the failed device's backend and session again before the next task.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker_int.h"

/* Rank k's backend, through the executor's factory. */
static int make_rank_backend(worker_executor *e, size_t k, model_backend **out, char *err) {
    char name[24];
    if (strcmp(e->kind, "cpu") == 0) {
        snprintf(name, sizeof name, "cpu");
    } else {
        snprintf(name, sizeof name, "cuda:%d", e->ranks[k].device);
    }
    if (e->make_backend != NULL) {
        return e->make_backend(e->make_backend_ctx, k, name, e->threads, out, err);
    }
    return worker_backend_new(out, name, e->threads, err);
}

int worker_executor_new_opts(worker_executor **out, const char *model_dir, const char *backend,
                             const worker_executor_opts *o, char *err) {
    int devices[WORKER_MAX_RANKS];
    size_t n = 0;
    char kind[8];
    int rc = worker_backend_spec_parse(backend, kind, devices, WORKER_MAX_RANKS, &n, err);
    if (rc != 0) {
        return rc;
    }
    worker_executor *e = calloc(1, sizeof *e);
    if (e == NULL || (e->ranks = calloc(n, sizeof *e->ranks)) == NULL) {
        free(e);
        return common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory");
    }
    e->n_ranks = n;
    memcpy(e->kind, kind, sizeof e->kind);
    e->threads = o != NULL ? o->threads : 0;
    e->make_backend = o != NULL ? o->make_backend : NULL;
    e->make_backend_ctx = o != NULL ? o->make_backend_ctx : NULL;
    e->games_per_run = WORKER_GAMES_PER_RUN;
    for (size_t k = 0; k < n; k++) {
        e->ranks[k].device = devices[k];
    }
    model_backend *bes[WORKER_MAX_RANKS];
    model_session *ss[WORKER_MAX_RANKS];
    /* the backends first, so that a bad name or an absent device fails before the load */
    for (size_t k = 0; k < n && rc == 0; k++) {
        rc = make_rank_backend(e, k, &e->ranks[k].be, err);
        bes[k] = e->ranks[k].be;
    }
    if (rc == 0) {
        rc = model_load(&e->m, model_dir, NULL, err); /* the one read of the weights */
    }
    if (rc == 0 && n > 1) {
        rc = worker_collective_new(&e->coll, e->kind, bes, n, err);
    }
    if (rc == 0) {
        rc = model_session_new_group(ss, e->m, bes, n, e->coll, err);
    }
    if (rc != 0) {
        worker_executor_destroy(&e);
        return rc;
    }
    for (size_t k = 0; k < n; k++) {
        e->ranks[k].s = ss[k];
    }
    e->be = e->ranks[0].be;
    e->s = e->ranks[0].s;
    *out = e;
    return 0;
}

int worker_executor_new(worker_executor **out, const char *model_dir, const char *backend,
                        int threads, char *err) {
    worker_executor_opts o = {.threads = threads};
    return worker_executor_new_opts(out, model_dir, backend, &o, err);
}

void worker_executor_destroy(worker_executor **e) {
    if (e == NULL || *e == NULL) {
        return;
    }
    worker_executor *x = *e;
    /* the collective borrows the backends, the sessions live on them */
    model_collective_destroy(&x->coll);
    for (size_t k = 0; x->ranks != NULL && k < x->n_ranks; k++) {
        model_session_destroy(&x->ranks[k].s);
        model_backend_destroy(&x->ranks[k].be);
    }
    free(x->ranks);
    model_destroy(&x->m);
    free(x);
    *e = NULL;
}

void worker_recover_rank(worker_executor *e, size_t k) {
    char err[COMMON_ERR_LEN];
    model_collective_destroy(&e->coll);
    model_session_destroy(&e->ranks[k].s);
    model_backend_destroy(&e->ranks[k].be); /* a CUDA backend resets its device here (gpu.h) */
    int rc = make_rank_backend(e, k, &e->ranks[k].be, err);
    if (rc == 0) {
        /* from the host copy: a broadcast would need every other rank's stream as well */
        rc = model_session_new(&e->ranks[k].s, e->m, e->ranks[k].be, err);
    }
    if (rc == 0 && e->n_ranks > 1) {
        model_backend *bes[WORKER_MAX_RANKS];
        for (size_t j = 0; j < e->n_ranks; j++) {
            bes[j] = e->ranks[j].be;
        }
        rc = worker_collective_new(&e->coll, e->kind, bes, e->n_ranks, err);
    }
    if (rc != 0) {
        e->broken = true;
    }
    e->be = e->ranks[0].be;
    e->s = e->ranks[0].s;
}

size_t worker_executor_ranks(const worker_executor *e) {
    return e->n_ranks;
}

const char *worker_executor_collective(const worker_executor *e) {
    return e->coll != NULL ? e->coll->name : NULL;
}

bool worker_executor_broken(const worker_executor *e) {
    return e->broken;
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
        if (mem->neuron_acc != NULL) {
            mem->neuron_be->free(mem->neuron_be, mem->neuron_acc);
        }
        for (size_t i = 0; i < mem->n_parts; i++) {
            worker_output_destroy(&mem->parts[i]);
        }
        free(mem->parts);
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
    if (e->broken) {
        rc = common_fail(err, COMMON_ERR_BACKEND,
                         "executor: a device could not be made again after a backend error");
    } else if (e->n_ranks > 1) {
        rc = worker_run_group(e, a, w, o, err); /* recovers failed ranks itself */
    } else {
        rc = w->kind == COORDINATOR_ANALYSIS_PATCH ? worker_run_patch(e, a, w, o, err)
                                                   : worker_run_aggregate(e, a, w, o, err);
        if (rc == 0 && w->kind == COORDINATOR_ANALYSIS_NEURON_STATS) {
            rc = worker_neurons_finish(o, err);
        }
        if (rc == COMMON_ERR_BACKEND) {
            worker_output_destroy(&o); /* its device buffers first */
            worker_recover_rank(e, 0);
        }
    }
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
