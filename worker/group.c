/*
 * A task split across the executor's devices (worker.h, worker_execute): one contiguous share
 * per device, each run by the ordinary runners (patch.c, aggregate.c) on a view of the executor
 * holding that device's backend and session, on a thread of its own; the calling thread waits,
 * passing on the mean progress of the shares (the service's callback is not thread-safe, and
 * hears from the task's own thread only), then puts the outputs together.
 *
 * The split keeps every row the one-device run computes unchanged: patch tasks split by whole
 * pairs (a pair's values come from its own runs), aggregate tasks by whole batches of games,
 * so each forward is the batch the one-device run makes. Only cross-game sums differ, by the
 * order of their double additions: neuron sums are reduced device to device by the collective
 * (NCCL on GPUs); legal-statistics partials, accumulated on each device and downloaded once at
 * the end of each share (aggregate.c), are merged on the host, which is cheap (a count and 18
 * numbers per cell) and keeps minima and maxima exact. The combined output keeps the shares'
 * outputs, since its arrays point into them.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker_int.h"

struct group_run;

typedef struct share {
    struct group_run *run;
    worker_executor view; /* the executor as seen from this device */
    coordinator_work w;   /* this device's part of the task (borrowing the task's arrays) */
    const coordinator_analysis *a;
    worker_output *o;
    int rc;
    char err[COMMON_ERR_LEN];
    double fraction;
    bool done;
    bool started;
    pthread_t thread;
} share;

typedef struct group_run {
    pthread_mutex_t mu;
    pthread_cond_t changed;
    uint64_t changes; /* counts every signal of `changed`: the waiter waits only for a new one */
} group_run;

static void share_progress(void *ctx, double fraction) {
    share *sh = ctx;
    pthread_mutex_lock(&sh->run->mu);
    sh->fraction = fraction;
    sh->run->changes++;
    pthread_cond_signal(&sh->run->changed);
    pthread_mutex_unlock(&sh->run->mu);
}

static void *share_main(void *arg) {
    share *sh = arg;
    int rc = sh->w.kind == COORDINATOR_ANALYSIS_PATCH
                 ? worker_run_patch(&sh->view, sh->a, &sh->w, sh->o, sh->err)
                 : worker_run_aggregate(&sh->view, sh->a, &sh->w, sh->o, sh->err);
    pthread_mutex_lock(&sh->run->mu);
    sh->rc = rc;
    sh->done = true;
    sh->run->changes++;
    pthread_cond_signal(&sh->run->changed);
    pthread_mutex_unlock(&sh->run->mu);
    return NULL;
}

static worker_output *output_new(coordinator_analysis_kind kind) {
    worker_output *o = calloc(1, sizeof *o);
    if (o != NULL && (o->mem = calloc(1, sizeof *o->mem)) == NULL) {
        free(o);
        return NULL;
    }
    if (o != NULL) {
        o->kind = kind;
    }
    return o;
}

/* Share k of n over items that go in units of `unit` (1 for pairs, games per run for games). */
static void share_range(size_t items, size_t unit, size_t k, size_t n, size_t *lo, size_t *hi) {
    size_t units = (items + unit - 1) / unit;
    size_t u0 = k * units / n, u1 = (k + 1) * units / n;
    *lo = u0 * unit < items ? u0 * unit : items;
    *hi = u1 * unit < items ? u1 * unit : items;
}

#define ALLOC_COPY(dst, field, n)                                                                  \
    ((dst)->field = malloc(((n) > 0 ? (n) : 1) * sizeof *(dst)->field)) != NULL

static int combine_patch(worker_output *o, share *sh, size_t n_sh, char *err) {
    struct worker_output_mem *m = o->mem;
    size_t n = 0;
    for (size_t k = 0; k < n_sh; k++) {
        n += sh[k].o->mem->patch.n;
    }
    if (!(ALLOC_COPY(m, game, n) && ALLOC_COPY(m, cutoff, n) && ALLOC_COPY(m, corrupt_pos, n) &&
          ALLOC_COPY(m, corrupt_game, n) && ALLOC_COPY(m, clean_token, n) &&
          ALLOC_COPY(m, corrupt_token, n) && ALLOC_COPY(m, metric, n) &&
          ALLOC_COPY(m, normalized, n) && ALLOC_COPY(m, result, n))) {
        return common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory for %zu pairs", n);
    }
    /* n_patch stays 0: the strings and results belong to the shares' outputs */
    size_t at = 0;
    for (size_t k = 0; k < n_sh; k++) {
        const struct worker_output_mem *p = sh[k].o->mem;
        for (size_t i = 0; i < p->patch.n; i++, at++) {
            m->game[at] = p->game[i];
            m->cutoff[at] = p->cutoff[i];
            m->corrupt_pos[at] = p->corrupt_pos[i];
            m->corrupt_game[at] = p->corrupt_game[i];
            m->clean_token[at] = p->clean_token[i];
            m->corrupt_token[at] = p->corrupt_token[i];
            m->metric[at] = p->metric[i];
            m->normalized[at] = p->normalized[i];
            m->result[at] = p->result[i];
        }
        o->n_rows += sh[k].o->n_rows;
        o->n_unnormalizable += sh[k].o->n_unnormalizable;
    }
    m->patch = sh[0].o->mem->patch;
    m->patch.n = n;
    m->patch.game = m->game;
    m->patch.cutoff = m->cutoff;
    m->patch.corrupt_pos = m->corrupt_pos;
    m->patch.corrupt_game = m->corrupt_game;
    m->patch.clean_token = (const char *const *)m->clean_token;
    m->patch.corrupt_token = (const char *const *)m->corrupt_token;
    m->patch.metric = (const char *const *)m->metric;
    m->patch.normalized = m->normalized;
    m->patch.result = (const interp_patch_result *const *)m->result;
    o->results.patch = &m->patch;
    return 0;
}

static int combine_predictions(worker_output *o, share *sh, size_t n_sh, char *err) {
    struct worker_output_mem *m = o->mem;
    size_t n = 0;
    for (size_t k = 0; k < n_sh; k++) {
        n += sh[k].o->mem->pred.n;
    }
    if (!(ALLOC_COPY(m, p_game, n) && ALLOC_COPY(m, p_pos, n) && ALLOC_COPY(m, p_rank, n) &&
          ALLOC_COPY(m, p_token, n) && ALLOC_COPY(m, p_logprob, n) && ALLOC_COPY(m, p_legal, n))) {
        return common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory for %zu rows", n);
    }
    size_t at = 0;
    for (size_t k = 0; k < n_sh; k++) {
        const struct worker_output_mem *p = sh[k].o->mem;
        size_t c = p->pred.n;
        memcpy(m->p_game + at, p->p_game, c * sizeof *m->p_game);
        memcpy(m->p_pos + at, p->p_pos, c * sizeof *m->p_pos);
        memcpy(m->p_rank + at, p->p_rank, c * sizeof *m->p_rank);
        memcpy(m->p_token + at, p->p_token, c * sizeof *m->p_token); /* into the share's texts */
        memcpy(m->p_logprob + at, p->p_logprob, c * sizeof *m->p_logprob);
        memcpy(m->p_legal + at, p->p_legal, c * sizeof *m->p_legal);
        at += c;
    }
    m->pred = (coordinator_prediction_batch){.n = n,
                                             .game = m->p_game,
                                             .pos = m->p_pos,
                                             .rank = m->p_rank,
                                             .token = m->p_token,
                                             .logprob = m->p_logprob,
                                             .legal = m->p_legal};
    o->n_rows = n;
    o->results.predictions = &m->pred;
    return 0;
}

static int combine_legal(worker_output *o, share *sh, size_t n_sh, char *err) {
    struct worker_output_mem *m = o->mem;
    int rc = 0;
    for (size_t k = 0; k < n_sh && rc == 0; k++) {
        const interp_legal_stats *p = sh[k].o->mem->legal;
        if (p == NULL) {
            continue; /* a share without games */
        }
        if (m->legal == NULL) {
            rc = interp_legal_stats_new(&m->legal, p->n_comp, (const char *const *)p->labels, p->T,
                                        err);
        }
        if (rc == 0) {
            rc = interp_legal_stats_merge(m->legal, p, err);
        }
    }
    if (rc == 0 && m->legal != NULL) {
        o->n_rows = worker_legal_rows(m->legal);
        o->results.legal = m->legal;
    }
    return rc;
}

static int combine_neurons(worker_executor *e, worker_output *o, share *sh, size_t n_sh,
                           char *err) {
    struct worker_output_mem *m = o->mem;
    const interp_neuron_stats *first = sh[0].o->mem->neurons;
    model_ref refs[WORKER_MAX_RANKS];
    for (size_t k = 0; k < n_sh; k++) {
        refs[k] = (model_ref){sh[k].o->mem->neuron_acc, 0};
    }
    size_t n = INTERP_NEURON_N_GROUPS * first->L * first->M;
    int rc = e->coll->reduce_sum_f64(e->coll, refs, n, 0, err);
    if (rc == 0) {
        rc = worker_neurons_finish(sh[0].o, err); /* rank 0 now holds the sum */
    }
    if (rc == 0) {
        /* the shares' own partials are what they counted; the sums are rank 0's reduced */
        m->neurons = sh[0].o->mem->neurons;
        sh[0].o->mem->neurons = NULL;
        for (size_t k = 1; k < n_sh; k++) {
            for (int g = 0; g < INTERP_NEURON_N_GROUPS; g++) {
                m->neurons->count[g] += sh[k].o->mem->neurons->count[g];
            }
        }
        o->n_rows = worker_neuron_rows(m->neurons);
        o->results.neurons = m->neurons;
    }
    return rc;
}

int worker_run_group(worker_executor *e, const coordinator_analysis *a, const coordinator_work *w,
                     worker_output *o, char *err) {
    size_t n = e->n_ranks;
    share *sh = calloc(n, sizeof *sh);
    if (sh == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory");
    }
    group_run run = {.changes = 0};
    pthread_mutex_init(&run.mu, NULL);
    pthread_cond_init(&run.changed, NULL);
    bool patch = w->kind == COORDINATOR_ANALYSIS_PATCH;
    size_t T_max = 0;
    for (size_t g = 0; g < w->n_games; g++) {
        T_max = w->games[g].n_tokens > T_max ? w->games[g].n_tokens : T_max;
    }
    int rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        share *s = &sh[k];
        size_t lo, hi;
        share_range(patch ? w->n_pairs : w->n_games, patch ? 1 : e->games_per_run, k, n, &lo, &hi);
        s->run = &run;
        s->a = a;
        s->w = *w;
        if (patch) {
            s->w.pairs = w->pairs + lo;
            s->w.n_pairs = hi - lo;
        } else {
            s->w.games = w->games + lo;
            s->w.n_games = hi - lo;
        }
        s->view = *e;
        s->view.be = e->ranks[k].be;
        s->view.s = e->ranks[k].s;
        s->view.n_ranks = 1;
        s->view.ranks = NULL;
        s->view.coll = NULL;
        s->view.progress = share_progress;
        s->view.progress_ctx = s;
        s->view.legal_T = T_max;
        if ((s->o = output_new(w->kind)) == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory");
        }
    }
    for (size_t k = 0; k < n && rc == 0; k++) {
        if (pthread_create(&sh[k].thread, NULL, share_main, &sh[k]) != 0) {
            rc = common_fail(err, COMMON_ERR_BACKEND, "executor: cannot start device %zu's thread",
                             k);
            break;
        }
        sh[k].started = true;
    }
    /* wait for every started share, passing their mean progress on from this thread; the lock
     * is let go while reporting, so a share may finish meanwhile: wait only when nothing has
     * changed since the shares were read */
    pthread_mutex_lock(&run.mu);
    for (;;) {
        size_t done = 0;
        double sum = 0.0;
        uint64_t seen = run.changes;
        for (size_t k = 0; k < n; k++) {
            done += !sh[k].started || sh[k].done;
            sum += sh[k].done ? 1.0 : sh[k].fraction;
        }
        if (done == n) {
            break;
        }
        pthread_mutex_unlock(&run.mu);
        worker_report_progress(e, sum / (double)n);
        pthread_mutex_lock(&run.mu);
        while (run.changes == seen) {
            pthread_cond_wait(&run.changed, &run.mu);
        }
    }
    pthread_mutex_unlock(&run.mu);
    for (size_t k = 0; k < n; k++) {
        if (sh[k].started) {
            pthread_join(sh[k].thread, NULL);
        }
    }
    /* the first failed device's error is the task's */
    for (size_t k = 0; k < n && rc == 0; k++) {
        if (sh[k].started && sh[k].rc != 0) {
            rc = sh[k].rc;
            common_fail(err, rc, "device %zu: %s", k, sh[k].err);
        }
    }
    if (rc == 0) {
        switch (w->kind) {
        case COORDINATOR_ANALYSIS_PATCH:
            rc = combine_patch(o, sh, n, err);
            break;
        case COORDINATOR_ANALYSIS_LEGAL_STATS:
            rc = combine_legal(o, sh, n, err);
            break;
        case COORDINATOR_ANALYSIS_NEURON_STATS:
            rc = combine_neurons(e, o, sh, n, err);
            break;
        default:
            rc = combine_predictions(o, sh, n, err);
            break;
        }
    }
    bool keep = rc == 0;
    if (keep && (o->mem->parts = malloc(n * sizeof *o->mem->parts)) == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "executor: out of memory");
        keep = false;
    }
    for (size_t k = 0; k < n; k++) {
        if (keep) {
            o->mem->parts[o->mem->n_parts++] = sh[k].o;
        } else {
            worker_output_destroy(&sh[k].o); /* device buffers go before any backend does */
        }
    }
    if (rc == COMMON_ERR_BACKEND) {
        /* every device whose share failed so, and all of them when the reduction did */
        bool any = false;
        for (size_t k = 0; k < n; k++) {
            if (sh[k].started && sh[k].rc == COMMON_ERR_BACKEND) {
                worker_recover_rank(e, k);
                any = true;
            }
        }
        for (size_t k = 0; k < n && !any; k++) {
            worker_recover_rank(e, k);
        }
    }
    pthread_mutex_destroy(&run.mu);
    pthread_cond_destroy(&run.changed);
    free(sh);
    return rc;
}
