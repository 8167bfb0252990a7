/*
 * worker: the executor of sweep tasks (docs/ARCHITECTURE.md §4). It holds one engine for its
 * whole life (the model loaded and processed as TL's from_pretrained does, a backend, a session
 * with its weights uploaded once) and runs task after task on it: a task's work, as
 * coordinator_work_load gives it, goes in; the results, ready for coordinator_task_complete,
 * come out. It is a state machine without transport: no sockets, no clock, no store access,
 * no prints, so every rule can be tested as plain function calls.
 *
 * Per task the executor only tokenizes texts (a table lookup per token), runs the model and
 * computes; it never loads, uploads or parses names. Besides the executor this header offers
 * the building blocks it runs, in a form other callers (the CLI) can use: the component stack
 * of the legal-move statistics, the hooks it reads, and batched runs of games of different
 * lengths.
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill `err` (COMMON_ERR_LEN
 * bytes, NULL allowed); `*out` is set only on success and owned by the caller. An executor (and
 * its session) is used by one thread at a time.
 */
#ifndef CHESSLENS_WORKER_H
#define CHESSLENS_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "coordinator/coordinator.h"
#include "interp/interp.h"
#include "model/model.h"

/* ------------------------------------------------------------------------------------------ */
/* Executor                                                                                    */

/* Games per batched forward of an aggregate task, unless set otherwise. */
#define WORKER_GAMES_PER_RUN 8

typedef struct worker_executor worker_executor;

/* The model backend a name asks for: "cpu" (threads as above), "cuda" (visible device 0) or
 * "cuda:N" (visible device N; float32 products). UNSUPPORTED for another name, and for "cuda"
 * in a build without the GPU backend (nvcc was not found); NOT_FOUND for a device that is not
 * visible. */
int worker_backend_new(model_backend **out, const char *backend, int threads, char *err);

/* The most devices (ranks) one executor runs on. */
#define WORKER_MAX_RANKS 64

/* Parses an executor's backend spec: "cpu", "cuda" (device 0), "cuda:N", or a list of devices
 * "cuda:0,1,2,3" (one rank per device, each id at most once) and "cpu:0,1" (one CPU backend per
 * id, for tests and for checking a split on a machine without GPUs). kind receives "cpu" or
 * "cuda", devices[*n] the ids (cpu alone: one rank, id 0). UNSUPPORTED for another kind,
 * INVALID for a malformed or repeated id or more than cap. */
int worker_backend_spec_parse(const char *backend, char kind[8], int *devices, size_t cap,
                              size_t *n, char *err);

/* Makes the backend of rank `rank` (named "cpu" or "cuda:N" for device N) instead of
 * worker_backend_new: tests wrap backends with it to fail on command. Called again for a rank
 * that is recreated after a backend error. */
typedef int (*worker_backend_fn)(void *ctx, size_t rank, const char *name, int threads,
                                 model_backend **out, char *err);

typedef struct worker_executor_opts {
    int threads;                    /* BLAS and elementwise threads per rank (<= 0: all CPUs) */
    worker_backend_fn make_backend; /* NULL: worker_backend_new */
    void *make_backend_ctx;
} worker_executor_opts;

/* Loads the model in model_dir once (TL's default processing: fold_ln, center_writing_weights,
 * center_unembed, fold_value_biases) on the backend named `backend` with `threads` BLAS and
 * elementwise threads (<= 0: all online CPUs), and creates the session every task runs on.
 * Backends (worker_backend_spec_parse): "cpu", "cuda" (device 0), "cuda:N", or several devices
 * "cuda:0,1,2,3" / "cpu:0,1". With several, the executor keeps one backend (its own stream)
 * and one session per device; the weights are read from disk once into host memory, uploaded
 * to the first device and broadcast to the others through a collective: NCCL for CUDA devices
 * when the build has it (gpu_have_nccl), else the host collective (one upload per device from
 * the host copy). Errors of model_load and model_session_new are passed on. */
int worker_executor_new(worker_executor **out, const char *model_dir, const char *backend,
                        int threads, char *err);
/* The same with options (o NULL: defaults, threads 0). */
int worker_executor_new_opts(worker_executor **out, const char *model_dir, const char *backend,
                             const worker_executor_opts *o, char *err);
/* Frees the sessions, backends, collective and model; NULL is fine; *e is NULL afterwards. */
void worker_executor_destroy(worker_executor **e);
/* The loaded model and the first device's session (owned by the executor; the same for its
 * whole life unless a backend error made it recreate that device's backend and session). */
const model *worker_executor_model(const worker_executor *e);
model_session *worker_executor_session(worker_executor *e);
/* Devices (ranks) the executor runs on, and the collective between them (NULL with one). */
size_t worker_executor_ranks(const worker_executor *e);
const char *worker_executor_collective(const worker_executor *e);
/* True when a backend error could not be recovered from (a device's backend or session could
 * not be made again): the executor fails every task and should be destroyed. */
bool worker_executor_broken(const worker_executor *e);
/* Games per batched forward of aggregate tasks (0: WORKER_GAMES_PER_RUN). Larger batches are
 * fewer, larger GEMMs; memory grows with the batch times the longest game. */
void worker_executor_set_games_per_run(worker_executor *e, size_t n);
/* Tasks worker_execute ran successfully so far. */
uint64_t worker_executor_tasks_run(const worker_executor *e);

/* Called as a computation advances with the fraction of its task done (0..1). It must be
 * cheap: the executor calls it after each batched forward, on the thread running the task. */
typedef void (*worker_progress_fn)(void *ctx, double fraction);
/* Every later worker_execute calls fn(ctx, fraction) after each batched forward (aggregate
 * tasks: after each batch of games; patch tasks: after each run of the batch that patches all
 * the task's pairs) and with 1 when the task is done, so that a caller can
 * tell a long task that advances from one that hangs. fn NULL: no reports. */
void worker_executor_set_progress(worker_executor *e, worker_progress_fn fn, void *ctx);

struct worker_output_mem;

/* What one task produced. results is ready for coordinator_task_complete: the member of the
 * task's kind is set (a legal_stats task without games has none) and it points into memory the
 * output owns, so the output must outlive the completion call. n_rows is the number of result rows
 * the store writes for it: patch values (pairs x values per pair), legal-statistics cells x 4
 * statistics (cells counted in at least one game), neuron groups with a position x L x M,
 * prediction rows. */
typedef struct worker_output {
    coordinator_analysis_kind kind;
    coordinator_results results;
    size_t n_rows;
    /* patch: pairs whose clean and corrupted metrics are equal under normalisation (their
     * values are NaN; see worker_execute) */
    size_t n_unnormalizable;
    struct worker_output_mem *mem; /* storage of everything above (private) */
} worker_output;

/* Runs one task: a is the task's analysis (w->params, or the same analysis of the same spec)
 * and w its work (coordinator_work_load). The analysis' parameters are checked against the
 * model first (cut-off <= n_ctx, top_k <= d_vocab: INVALID).
 *
 * With several devices the task is split into one contiguous share per device, each run on
 * its own thread: a patch task by whole pairs, an aggregate task by whole batches of games
 * (the executor's games per run), so that every forward is the batch the one-device run makes
 * and every row comes out the same. The shares' outputs are put together in order: patch and
 * prediction rows concatenated, neuron sums (which stay on the devices) reduced with the
 * collective's reduce_sum_f64 onto the first device and downloaded once, legal-statistics
 * partials (accumulated on each device, downloaded once per share) merged on the host
 * (interp_legal_stats_merge).
 * Sums therefore equal the one-device ones to double rounding (relative 1e-12 at most in
 * practice), everything else exactly. A failed share fails the task with the first failing
 * device's error.
 *
 * A backend error (BACKEND: a CUDA error such as an illegal address or a lost device) fails
 * the task with its text, and the executor then drops that device's session and backend and
 * makes them again (the weights uploaded from the host copy), so that the next task never runs
 * on a context that may hold wrong numbers; should that fail, worker_executor_broken is true.
 *
 * - patch: each pair's token texts become ids through the model's tokenizer (NOT_FOUND for a
 *   text outside the vocabulary). When the metric reads clean_top / corrupt_top or normalises,
 *   the clean prompts (once per game) and the corrupted prompts of all pairs run as one
 *   batched forward, and clean_top / corrupt_top are the argmax (lowest id on ties) of the
 *   clean / corrupted logits at the last position. Each pair's metric is resolved with
 *   coordinator_metric_resolve and parsed with interp_metric_parse; legal_mass reads the clean
 *   game's legal mask at position T-1. A normalised pair whose clean and corrupted metrics are
 *   equal cannot be normalised: it is left out of the patching, its values are NaN (the store
 *   writes NULL), normalized stays true, and n_unnormalizable counts it; the task does not
 *   fail for it. The other pairs are patched by one interp_patch_run_batch (fast algorithm,
 *   identical-prefix shortcut on), so each value is what interp_patch_run gives for the pair
 *   alone.
 * - legal_stats: per game the component stack of the analysis' bits (worker_legal_parts, the
 *   rows worker_legal_components stacks) projected to logits, with the game's legal mask, into
 *   one interp_legal_stats partial over the task's games (positions up to the longest game),
 *   computed on the device from the cached activations (interp_legal_accum).
 * - neuron_stats: interp_neuron_stats over the games with their phases and the analysis'
 *   slice.
 * - predictions: per game and position the top_k tokens by log-probability, rank 1 first,
 *   with their legality after that position.
 *
 * Aggregate games run in batches of the executor's games per run, right-padded. On success
 * *out (worker_output_destroy) is set; on an error nothing is, and the executor stays usable
 * for the next task. */
int worker_execute(worker_executor *e, const coordinator_analysis *a, const coordinator_work *w,
                   worker_output **out, char *err);
/* Frees the output; NULL is fine; *o is NULL afterwards. */
void worker_output_destroy(worker_output **o);

/* ------------------------------------------------------------------------------------------ */
/* Building blocks                                                                             */

/* The hooks the legal-statistics components of `components` (COORDINATOR_COMP_* bits) read:
 * embed and pos_embed, attn_out / mlp_out / z of every layer as needed, ln_final's scale.
 * Writes up to cap hooks and returns the count (cap 0 asks). */
size_t worker_legal_hooks(const model_config *cfg, unsigned components, model_hook *out,
                          size_t cap);

/* The components of `components` (COORDINATOR_COMP_* bits) as interp's device path takes
 * them: the same rows in the same order as worker_legal_components stacks. */
interp_legal_parts worker_legal_parts(unsigned components);

/* One game's legal-statistics components as a residual stack (width D), after
 * apply_ln_to_stack at the final layer: decompose_resid rows ("embed", "pos_embed" with
 * COORDINATOR_COMP_EMBEDS, "{l}_attn_out" with ATTNS, "{l}_mlp_out" with MLPS, in
 * decompose_resid's order) followed by the stack_head_results rows "L{l}H{h}" with HEADS. Project
 * it with interp_stack_to_logits. `chesslens decompose --legal-stats` is the bits EMBEDS | ATTNS |
 * MLPS (--mode all; attn: EMBEDS | ATTNS; mlp: EMBEDS | MLPS), plus HEADS with --heads. a must
 * hold worker_legal_hooks' hooks. INVALID for no known bit. *out: interp_stack_destroy. */
int worker_legal_components(const model *m, const interp_acts *a, unsigned components,
                            interp_stack **out, char *err);

/* Runs n games of different lengths as one batch: ids[i] holds lengths[i] tokens (1..n_ctx),
 * right-padded with the tokenizer's pad id to the longest. The run caches `hooks` [n_hooks]
 * (hooks NULL: the list interp_acts_hooks gives, without patterns; n_hooks 0 with hooks not
 * NULL: none) and logits when want_logits.
 * out[i] (caller's array of n; destroy each) receives game i's activations trimmed to its own
 * length, exactly what a run of that game alone gives (right padding cannot change earlier
 * positions). On an error no out[i] is set. */
int worker_run_games(model_session *s, const int32_t *const *ids, const size_t *lengths, size_t n,
                     const model_hook *hooks, size_t n_hooks, bool want_logits, interp_acts **out,
                     char *err);

#endif
