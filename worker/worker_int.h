/*
 * worker internals shared by the files of the worker library: the executor's state, the
 * storage an output owns, and the per-kind task runners. Never included outside worker/.
 */
#ifndef CHESSLENS_WORKER_INT_H
#define CHESSLENS_WORKER_INT_H

#include "worker/worker.h"

struct worker_executor {
    model *m;
    model_backend *be;
    model_session *s;
    size_t games_per_run; /* games per batched forward of an aggregate task */
    uint64_t tasks_run;
    worker_progress_fn progress; /* may be NULL */
    void *progress_ctx;
};

/* Everything an output points to. Arrays are [n] of the batch they belong to. */
struct worker_output_mem {
    /* patch */
    coordinator_patch_batch patch;
    uint64_t *game;
    uint32_t *cutoff;
    int32_t *corrupt_pos;
    int64_t *corrupt_game;
    char **clean_token;   /* NULL entries for a corruption by another game */
    char **corrupt_token; /* likewise */
    char **metric;        /* resolved metric texts */
    bool *normalized;
    interp_patch_result **result;
    size_t n_patch; /* entries of the arrays above allocated (results set so far) */
    /* aggregates */
    interp_legal_stats *legal;
    interp_neuron_stats *neurons;
    /* predictions */
    coordinator_prediction_batch pred;
    uint64_t *p_game;
    uint32_t *p_pos, *p_rank;
    const char **p_token; /* into token_texts */
    float *p_logprob;
    uint8_t *p_legal;
    char **token_texts; /* [V] copies of the vocabulary's texts a prediction names (else NULL) */
    size_t V;
};

/* The task runners of worker_execute; o is a fresh output of the task's kind. */
int worker_run_patch(worker_executor *e, const coordinator_analysis *a, const coordinator_work *w,
                     worker_output *o, char *err);
int worker_run_aggregate(worker_executor *e, const coordinator_analysis *a,
                         const coordinator_work *w, worker_output *o, char *err);

/* Reports the fraction done of the running task to the executor's progress callback, if any. */
void worker_report_progress(const worker_executor *e, double fraction);

/* Token ids of n texts through the model's tokenizer into out [n]; NOT_FOUND names the text. */
int worker_ids_from_texts(const model *m, const char *const *texts, size_t n, int32_t *out,
                          char *err);

#endif
