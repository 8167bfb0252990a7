/*
 * worker internals shared by the files of the worker library: the executor's state, the
 * storage an output owns, and the per-kind task runners. Never included outside worker/.
 */
#ifndef CHESSLENS_WORKER_INT_H
#define CHESSLENS_WORKER_INT_H

#include "worker/worker.h"

/* One device of an executor. */
typedef struct worker_rank {
    model_backend *be;
    model_session *s;
    int device; /* the id of the backend spec */
} worker_rank;

struct worker_executor {
    model *m;
    model_backend *be; /* the backend and session a task (or a share) runs on: rank 0's */
    model_session *s;
    size_t n_ranks;
    worker_rank *ranks;     /* [n_ranks]; NULL in a share's view */
    model_collective *coll; /* NULL with one rank */
    char kind[8];           /* "cpu" or "cuda" */
    int threads;
    worker_backend_fn make_backend;
    void *make_backend_ctx;
    bool broken;
    /* a share of a legal-statistics task: the task's longest game, so that the partials of
     * every share have the same positions (0: the work's own) */
    size_t legal_T;
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
    /* neuron sums while on the device: [INTERP_NEURON_N_GROUPS, L, M] doubles on neuron_be,
     * freed when downloaded (worker_neurons_finish) or with the output */
    model_buf *neuron_acc;
    model_backend *neuron_be;
    /* a multi-device output: the shares' outputs its arrays point into (owned) */
    struct worker_output **parts;
    size_t n_parts;
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

/* Downloads a neuron_stats output's device sums into its interp_neuron_stats and frees them. */
int worker_neurons_finish(worker_output *o, char *err);
/* The rows the store writes for legal-statistics and neuron-statistics partials. */
size_t worker_legal_rows(const interp_legal_stats *ls);
size_t worker_neuron_rows(const interp_neuron_stats *ns);
/* The collective between an executor's n ranks of kind "cpu" or "cuda" (backend.c): NCCL for
 * CUDA when built with it, else the host collective. */
int worker_collective_new(model_collective **out, const char *kind, model_backend *const *bes,
                          size_t n, char *err);
/* Runs a task split across the executor's ranks (e->n_ranks > 1) into o (group.c). */
int worker_run_group(worker_executor *e, const coordinator_analysis *a, const coordinator_work *w,
                     worker_output *o, char *err);
/* After a BACKEND error on rank k: its session and backend made again (the collective too). */
void worker_recover_rank(worker_executor *e, size_t k);

/* Reports the fraction done of the running task to the executor's progress callback, if any. */
void worker_report_progress(const worker_executor *e, double fraction);

/* Token ids of n texts through the model's tokenizer into out [n]; NOT_FOUND names the text. */
int worker_ids_from_texts(const model *m, const char *const *texts, size_t n, int32_t *out,
                          char *err);

#endif
