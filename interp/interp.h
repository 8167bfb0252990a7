/*
 * interp: the analyses a chess-GPT researcher runs, with TransformerLens' (TL) meaning and
 * numbers (docs/TL-SEMANTICS.md §4-§5), on top of the model engine (model/) and the chess rules
 * (chess/).
 *
 * - Activation patching: the clean run's activation patched into the corrupted run at every
 *   layer / position / head, a metric read from the patched logits. Two algorithms give the
 *   same numbers: the plain one (one full forward per index, as TL) and the fast exact one
 *   (default), which recomputes only layers >= the patched layer and positions >= the patched
 *   position, reading everything else from the corrupted run's cache, and packs many patched
 *   runs into one incremental model_run (one GEMM per linear layer).
 * - Host-side analyses of one sequence's activations (interp_acts): decomposition of the
 *   residual stream, apply_ln_to_stack, stack @ W_U (logit lens / direct logit attribution),
 *   logit_attrs, per-neuron attributions contracted with token directions first (never
 *   [neurons x positions x d_model]), attention-pattern diffs, DLA of diffed neurons.
 * - Aggregates over games as mergeable partials (legal-move statistics, neuron means), so that
 *   shards computed anywhere combine into the same result; predictions per position.
 *
 * Shapes: L layers, T positions, D d_model, H heads, Dh d_head, M d_mlp, V vocab; arrays are
 * row-major float32 unless said otherwise. Positions count tokens with `<s>` at 0. Fallible
 * functions return 0 or a negative COMMON_ERR_* code and fill `err` (COMMON_ERR_LEN bytes, NULL
 * allowed); `*out` is set only on success and is owned by the caller (free it with the matching
 * _destroy, which accepts NULL). Models, sessions and caches passed in are borrowed.
 */
#ifndef CHESSLENS_INTERP_H
#define CHESSLENS_INTERP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/common.h"
#include "model/model.h"

/* ------------------------------------------------------------------------------------------ */
/* Tokens of games                                                                             */

/* Tokenizes a UCI move list as the model reads it (`<s>` then squares and promotion letters),
 * mapping each token's text to its id through the model's tokenizer. Legality is not checked
 * (a corrupted game tokenizes). On success *out ([*T] ids, caller frees) and *T are set.
 * Errors: a malformed move (naming it), a token absent from the vocabulary, T > n_ctx. */
int interp_tokens_from_uci(const model *m, const char *uci, int32_t **out, size_t *T, char *err);

/* Copy of clean [T] with the token at `pos` replaced by the id of `token` (text, e.g. "d5"),
 * into out [T]. INVALID when pos is 0 (`<s>`) or >= T, or when token is already clean[pos] (a
 * corruption that changes nothing); NOT_FOUND when token is not in the vocabulary. */
int interp_corrupt_token(const model *m, const int32_t *clean, size_t T, size_t pos,
                         const char *token, int32_t *out, char *err);
/* interp_corrupt_token from the text "POSITION=TOKEN" (`chesslens patch --corrupt 27=d5`): the
 * position is decimal digits only; PARSE error naming the text otherwise. */
int interp_corrupt_parse(const model *m, const int32_t *clean, size_t T, const char *spec,
                         int32_t *out, char *err);

/* Legal next-token mask of a game: mask[t * V + v] = 1 when token v may legally follow
 * position t (chess_legal_tokens mapped to ids through the tokenizer). The game must be legal.
 * On success *out ([T, V] bytes, caller frees) and *T are set. */
int interp_legal_mask(const model *m, const char *uci, uint8_t **out, size_t *T, char *err);

/* Move phase (chess_phase) of each token position: *out [T] (caller frees). */
int interp_phases(const char *uci, uint8_t **out, size_t *T, char *err);

/* ------------------------------------------------------------------------------------------ */
/* Metrics                                                                                     */

typedef enum interp_metric_kind {
    INTERP_METRIC_LOGIT,      /* logits[T-1, token] */
    INTERP_METRIC_LOGIT_DIFF, /* logits[T-1, token] - logits[T-1, token2] */
    INTERP_METRIC_LOGPROB,    /* log_softmax(logits[T-1])[token] */
    INTERP_METRIC_LEGAL_MASS, /* sum of softmax(logits[T-1]) over legal[v] != 0 */
} interp_metric_kind;

/* A scalar read from the logits at the last position. With normalize, patching reports
 * (m - m_corrupted) / (m_clean - m_corrupted). */
typedef struct interp_metric {
    interp_metric_kind kind;
    int32_t token;        /* LOGIT, LOGIT_DIFF, LOGPROB */
    int32_t token2;       /* LOGIT_DIFF */
    const uint8_t *legal; /* LEGAL_MASS: [V] mask, borrowed */
    bool normalize;
} interp_metric;

/* Parses "logit:e4", "logit_diff:e4,d5", "logprob:e4" or "legal_mass" (token texts through
 * the tokenizer; normalize and legal are left false / NULL). PARSE for an unknown form,
 * NOT_FOUND naming a token missing from the vocabulary. */
int interp_metric_parse(const model *m, const char *spec, interp_metric *out, char *err);

/* The metric (unnormalised) of one row of logits [V]. INVALID for a token outside 0..V-1 or a
 * LEGAL_MASS metric without a mask. */
int interp_metric_eval(const interp_metric *metric, const float *logits, size_t V, double *out,
                       char *err);

/* ------------------------------------------------------------------------------------------ */
/* Activation patching                                                                         */

typedef enum interp_patch_kind {
    /* [L, T]: layer x position, whole d_model vector */
    INTERP_PATCH_RESID_PRE,
    INTERP_PATCH_RESID_MID,
    INTERP_PATCH_ATTN_OUT,
    INTERP_PATCH_MLP_OUT,
    /* [3, L, T]: resid_pre, attn_out, mlp_out */
    INTERP_PATCH_BLOCK_EVERY,
    /* [L, H]: one head at every position (z for "out") */
    INTERP_PATCH_HEAD_OUT_ALL_POS,
    INTERP_PATCH_HEAD_Q_ALL_POS,
    INTERP_PATCH_HEAD_K_ALL_POS,
    INTERP_PATCH_HEAD_V_ALL_POS,
    INTERP_PATCH_HEAD_PATTERN_ALL_POS,
    /* [L, T, H]: one head at one position */
    INTERP_PATCH_HEAD_OUT_BY_POS,
    INTERP_PATCH_HEAD_Q_BY_POS,
    INTERP_PATCH_HEAD_K_BY_POS,
    INTERP_PATCH_HEAD_V_BY_POS,
    /* [L, H, T]: one head's pattern row at one destination (query) position */
    INTERP_PATCH_HEAD_PATTERN_BY_POS,
    /* [5, L, H]: out (z), q, k, v, pattern, all positions */
    INTERP_PATCH_HEAD_ALL_POS_EVERY,
    /* [5, L, T, H]: out, q, k, v, pattern by position (pattern rearranged to [L, T, H]) */
    INTERP_PATCH_HEAD_BY_POS_EVERY,
    /* [L, H, T, T]: one element of one head's pattern, (destination, source) position */
    INTERP_PATCH_HEAD_PATTERN_DEST_SRC_POS,
    INTERP_PATCH_KIND_COUNT
} interp_patch_kind;

/* TL's name without the get_act_patch_ prefix ("block_every", "resid_pre",
 * "attn_head_out_all_pos", "attn_head_q_by_pos", "attn_head_pattern_by_pos",
 * "attn_head_all_pos_every", "attn_head_pattern_dest_src_pos", ...). */
const char *interp_patch_kind_name(interp_patch_kind k);
/* Parses such a name; -1 when unknown. */
int interp_patch_kind_parse(const char *name);

typedef struct interp_patch_opts {
    interp_patch_kind kind;
    interp_metric metric;
    bool plain; /* one full forward per index (TL's algorithm) instead of the fast one */
    /* Fast algorithm: most positions one packed incremental run computes (0 = 4096); a run
     * also packs at most 256 patched runs (rows). The limits hold across pairs of a batch. */
    size_t max_packed_positions;
    /* Fast algorithm: run the indices the identical-prefix shortcut (below) would skip too
     * (same values; for measuring the shortcut and testing the incremental runs). */
    bool no_prefix_shortcut;
    /* Called after each model_run of a patching (the base runs and every patched request) with
     * on_run_ctx: a sign of life from a long batch, for callers that must tell it from a hung
     * one (a worker heartbeats only while its task reports progress). NULL: none. */
    void (*on_run)(void *ctx);
    void *on_run_ctx;
} interp_patch_opts;

/* Defaults: block_every, fast with the shortcut, metric LOGIT of token 0 (set it), not
 * normalised. */
interp_patch_opts interp_patch_opts_default(void);

typedef struct interp_patch_result {
    model_shape shape;       /* TL's output shape for the kind (e.g. [3, L, T]) */
    float *values;           /* [numel(shape)]: the metric (normalised when asked) */
    char axes[64];           /* axis names, e.g. "component,layer,pos" */
    char labels[128];        /* component names for "every" kinds, comma-separated, else "" */
    double clean_metric;     /* unnormalised metric of the clean run */
    double corrupted_metric; /* unnormalised metric of the corrupted run */
    /* model_run calls made for this pair's patched runs (base runs not counted; a request
     * shared by several pairs of a batch counts once in each) and the token positions of this
     * pair's patched runs, summed over the layers each ran. Indices given a value without a
     * run are in neither. */
    size_t n_forwards;
    size_t n_positions;
} interp_patch_result;

void interp_patch_result_destroy(interp_patch_result **r);
/* An empty result of kind's output shape for a model of shape cfg and T positions (axes and
 * labels set, every value and both metrics NaN), e.g. for a pair whose metric cannot be
 * normalised. On success *out (interp_patch_result_destroy) is set. */
int interp_patch_result_new(interp_patch_kind kind, const model_config *cfg, size_t T,
                            interp_patch_result **out, char *err);

/* Patches the clean run of `clean` [T] into the corrupted run of `corrupted` [T] (same T, a
 * single pair, batch 1) for every index of opts->kind and evaluates opts->metric on each
 * patched run's logits. With normalize, INVALID when the clean and corrupted metrics are
 * equal. Both algorithms give the same values to float rounding.
 *
 * Identical-prefix shortcut (fast algorithm, unless no_prefix_shortcut; exact, TL has none):
 * with d the first position where clean and corrupted differ (T when none), every activation
 * at positions < d is the same in both runs (causal attention), so a patch there leaves the
 * corrupted run unchanged. Such indices get the corrupted run's metric (normalised: exactly 0)
 * without a run: those at positions < d of the kinds indexed by position (resid_pre/mid,
 * attn_out, mlp_out, block_every, q/k/v/out *_by_pos, the destination position of
 * pattern_by_pos and pattern_dest_src_pos) and, for an identical pair (d = T), every index.
 * An all-positions (*_all_pos) index is still run, starting at position d when T - d <= d.
 * With the last token corrupted, block_every thus runs 3 x L one-position patched runs. A
 * pattern element at a masked key (source after destination) is given the corrupted metric
 * the same way, shortcut or not. The plain algorithm runs every index. */
int interp_patch_run(model_session *s, const int32_t *clean, const int32_t *corrupted, size_t T,
                     const interp_patch_opts *opts, interp_patch_result **out, char *err);

/* One clean/corrupted pair of a batch, with its own metric (the metric's tokens may differ per
 * pair, e.g. the clean run's top token). Borrowed pointers. */
typedef struct interp_patch_pair {
    const int32_t *clean;     /* [T] */
    const int32_t *corrupted; /* [T] */
    interp_metric metric;
} interp_patch_pair;

/* interp_patch_run for n pairs of the same length T: out[i] (caller destroys each, and frees
 * nothing else) holds pair i's result, as interp_patch_run would give it. opts->metric is not
 * read (each pair has its own). The length is one argument, so pairs of different lengths
 * cannot be passed: group them by length (a shorter game padded to T would be patched as a
 * game of T tokens). The fast algorithm packs the patched runs of all pairs into shared
 * incremental requests (the clean runs of all pairs as one batched run, their corrupted runs
 * as another, then per layer the patched rows of many pairs per request, within the packing
 * limits), so a task of 64 pairs is a few large GEMMs, not 64 small loops; the base runs hold
 * the hooks of all n pairs at once (memory grows with n). The plain algorithm runs pair after
 * pair. n = 0 is a no-op (returns 0, writes nothing). All or nothing: on an error no out[i] is
 * set, and a failure that concerns one pair of several names it ("pair 3: ..."), e.g. INVALID
 * when that pair normalises with equal clean and corrupted metrics. */
int interp_patch_run_batch(model_session *s, const interp_patch_pair *pairs, size_t n, size_t T,
                           const interp_patch_opts *opts, interp_patch_result **out, char *err);

/* ------------------------------------------------------------------------------------------ */
/* Activations of one sequence on the host                                                     */

/* The hooks of one sequence (batch row), downloaded: per hook kind and layer, the TL tensor
 * without the batch axis ([T, D], [T, H, Dh], [H, T, T], [T, 1], [T, V] for logits). */
typedef struct interp_acts interp_acts;

/* The hook list interp_run_acts caches: embed, pos_embed, and per layer resid_pre, ln1 scale,
 * z, pattern (only with_patterns: [H, T, T] per layer is the largest activation, and only the
 * attention-pattern diff reads it), attn_out, resid_mid, ln2 scale, mlp post, mlp_out,
 * resid_post; ln_final scale. Writes up to cap hooks, returns the count (cap may be 0 to ask). */
size_t interp_acts_hooks(const model_config *cfg, bool with_patterns, model_hook *out, size_t cap);

/* Runs B sequences (tokens [B, T], lengths [B] or NULL for all T) with the hooks above plus
 * logits and downloads each row: *out receives an array of B interp_acts (free each with
 * interp_acts_destroy, then the array with free). */
int interp_run_acts(model_session *s, const int32_t *tokens, const size_t *lengths, size_t B,
                    size_t T, bool with_patterns, interp_acts ***out, char *err);

/* An empty set for T positions of a model of shape cfg (copied). */
int interp_acts_new(interp_acts **out, const model_config *cfg, size_t T, char *err);
void interp_acts_destroy(interp_acts **a);
/* Downloads every hook `c` holds (and logits) at batch row `row`, keeping the first T
 * positions (T <= the cache's positions; T = 0: all). */
int interp_acts_from_cache(interp_acts **out, const model_config *cfg, const model_cache *c,
                           size_t row, size_t T, char *err);
/* Copies data (the hook's shape without the batch axis, for this T) into the set. */
int interp_acts_set(interp_acts *a, model_hook h, const float *data, size_t n, char *err);
/* The held tensor, or NULL; *n (may be NULL) receives its element count. */
const float *interp_acts_get(const interp_acts *a, model_hook h, size_t *n);
size_t interp_acts_positions(const interp_acts *a);

/* ------------------------------------------------------------------------------------------ */
/* Stacks of components: decomposition, logit lens, DLA                                        */

/* n components, each [T, width] (width D for residual stacks, V or K directions after
 * projection), with TL's labels. */
typedef struct interp_stack {
    size_t n, T, width;
    float *data;   /* [n, T, width] */
    char **labels; /* [n] NUL-terminated */
} interp_stack;

void interp_stack_destroy(interp_stack **s);

typedef enum interp_decomp_mode {
    INTERP_DECOMP_ALL,
    INTERP_DECOMP_ATTN,
    INTERP_DECOMP_MLP,
} interp_decomp_mode;

/* TL decompose_resid(layer, mlp_input, mode, apply_ln, incl_embeds): rows "embed",
 * "pos_embed", "{l}_attn_out", "{l}_mlp_out" for l < layer (and "{layer}_attn_out" with
 * mlp_input). layer -1 = L. apply_ln centres each row and divides by the cached scale of
 * (layer, mlp_input) (ln_final's at L). */
int interp_decompose_resid(const model *m, const interp_acts *a, int layer, bool mlp_input,
                           interp_decomp_mode mode, bool incl_embeds, bool apply_ln,
                           interp_stack **out, char *err);

/* TL accumulated_resid(layer, incl_mid, mlp_input, apply_ln): rows "{l}_pre" (+ "{l}_mid"),
 * "final_post" at l == L. apply_ln at layer L recomputes the LayerNorm of every row (TL
 * v2.18+ logit lens); otherwise the cached scale of (layer, mlp_input). */
int interp_accumulated_resid(const model *m, const interp_acts *a, int layer, bool incl_mid,
                             bool mlp_input, bool apply_ln, interp_stack **out, char *err);

/* TL stack_head_results(layer, incl_remainder, apply_ln): rows "L{l}H{h}" = z[.,h] @ W_O[h]
 * (no b_O) for l < layer, plus "remainder" = resid entering `layer` - sum(rows). */
int interp_stack_head_results(const model *m, const interp_acts *a, int layer, bool incl_remainder,
                              bool apply_ln, interp_stack **out, char *err);

/* TL get_full_resid_decomposition(layer, mlp_input, expand_neurons, apply_ln) with the rows
 * projected onto directions dirs [D, K] (e.g. W_U, K = V, or chosen token directions) before
 * they are stored: out [n_rows, T, K]. Rows: heads "L{l}H{h}", then neurons "L{l}N{n}"
 * (expand_neurons) or "{l}_mlp_out", then "embed", "pos_embed", "bias". Neuron rows are
 * post[t, n] * (W_out[n] @ dirs), so [M, T, D] is never formed. dirs NULL: no projection
 * (K = D), allowed only without expand_neurons. */
int interp_full_resid_decomposition(const model *m, const interp_acts *a, int layer, bool mlp_input,
                                    bool expand_neurons, bool apply_ln, const float *dirs, size_t K,
                                    interp_stack **out, char *err);

/* TL apply_ln_to_stack in place on a residual stack (width D): centre each row over D and
 * divide by the cached scale of (layer, mlp_input), layer -1 = L (ln_final). */
int interp_apply_ln_to_stack(const interp_acts *a, interp_stack *stack, int layer, bool mlp_input,
                             char *err);

/* stack @ W_U (width D -> V): each component's direct logit contribution. b_U is not added
 * (sum over rows + b_U gives the logits when the stack had apply_ln at layer L). */
int interp_stack_to_logits(const model *m, const interp_stack *stack, interp_stack **out,
                           char *err);

/* TL logit_attrs: per row and position, apply_ln_to_stack(stack, L) . (W_U[:, tokens[t]] -
 * W_U[:, incorrect[t]]) (incorrect NULL: no subtraction). tokens/incorrect [stack->T].
 * *out [n, T] (caller frees). */
int interp_logit_attrs(const model *m, const interp_acts *a, const interp_stack *stack,
                       const int32_t *tokens, const int32_t *incorrect, float **out, char *err);

/* Token directions W_U[:, tokens[k]] - W_U[:, minus[k]] (minus NULL or -1 entries: none) as
 * dirs [D, K] (caller frees), for interp_full_resid_decomposition. */
int interp_token_dirs(const model *m, const int32_t *tokens, const int32_t *minus, size_t K,
                      float **out, char *err);

/* ------------------------------------------------------------------------------------------ */
/* Attention diffs and neuron DLA                                                              */

/* pattern_clean - pattern_corrupted at query position `query` (-1 = last): out [L, H, T]
 * (caller frees). Both sets must hold every layer's pattern for the same T. */
int interp_pattern_diff(const interp_acts *clean, const interp_acts *corrupted, int query,
                        float **out, char *err);

/* DLA of diffed neurons: (post_clean - post_corrupted)[pos] * (W_out[l] @ W_U[:, token]) for
 * every layer and neuron (pos -1 = last): out [L, M] (caller frees). */
int interp_neuron_diff_dla(const model *m, const interp_acts *clean, const interp_acts *corrupted,
                           int pos, int32_t token, float **out, char *err);

/* Weight-based neuron DLA: score[l, n] = W_out[l][n] @ W_U[:, token]. Writes the k largest
 * (descending) as layer, neuron and score arrays of k entries (caller's). k <= L * M. */
int interp_neuron_weight_dla_topk(const model *m, int32_t token, size_t k, int *layers,
                                  int *neurons, float *scores, char *err);

/* ------------------------------------------------------------------------------------------ */
/* Predictions                                                                                 */

typedef struct interp_predictions {
    size_t T, V, k;
    float *logprobs;     /* [T, V] log_softmax of the logits */
    int32_t *top_ids;    /* [T, k] most probable first */
    float *top_logprobs; /* [T, k] */
    float *legal_mass;   /* [T] probability on legal next tokens (NaN without a mask) */
    uint8_t *top1_legal; /* [T] 1 when the most probable token is legal */
} interp_predictions;

/* From logits [T, V] and an optional legal mask [T, V]; k <= V. */
int interp_predictions_new(interp_predictions **out, const float *logits, size_t T, size_t V,
                           const uint8_t *legal, size_t k, char *err);
void interp_predictions_destroy(interp_predictions **p);

/* ------------------------------------------------------------------------------------------ */
/* Legal-move statistics: mergeable partials                                                   */

/* For every component x position, over games: per game the component's logit contributions
 * [V] at that position give min over legal tokens, max over illegal ones, mean over legal,
 * mean over illegal; the partials keep, per statistic, the sum (double), min and max over
 * games and the number of games counted (positions without both a legal and an illegal token
 * are not counted). Two partials over disjoint game sets merge into exactly the partial of
 * their union (sums in double, order aside). */
enum {
    INTERP_LEGAL_MIN_LEGAL = 0,
    INTERP_LEGAL_MAX_ILLEGAL,
    INTERP_LEGAL_MEAN_LEGAL,
    INTERP_LEGAL_MEAN_ILLEGAL,
    INTERP_LEGAL_MIN_MINUS_MAX,   /* min legal - max illegal */
    INTERP_LEGAL_MEAN_MINUS_MEAN, /* mean legal - mean illegal */
    INTERP_LEGAL_N_STATS
};

typedef struct interp_legal_stats {
    size_t n_comp, T;
    char **labels;   /* [n_comp] */
    uint64_t *count; /* [n_comp, T] */
    double *sum;     /* [INTERP_LEGAL_N_STATS, n_comp, T] */
    float *min;      /* [INTERP_LEGAL_N_STATS, n_comp, T] (+inf when count 0) */
    float *max;      /* [INTERP_LEGAL_N_STATS, n_comp, T] (-inf when count 0) */
} interp_legal_stats;

/* Empty partials for n_comp components (labels copied; NULL: "c0", "c1", ...) and T
 * positions. */
int interp_legal_stats_new(interp_legal_stats **out, size_t n_comp, const char *const *labels,
                           size_t T, char *err);
void interp_legal_stats_destroy(interp_legal_stats **s);
/* Adds one game: a logit stack (width V, n == n_comp, stack->T <= T) and its legal mask
 * [stack->T, V]. */
int interp_legal_stats_add(interp_legal_stats *s, const interp_stack *logit_stack,
                           const uint8_t *legal, char *err);
/* dst += src (same components and T). */
int interp_legal_stats_merge(interp_legal_stats *dst, const interp_legal_stats *src, char *err);
/* Mean over games of one statistic: out [n_comp, T] (NaN where count is 0). */
void interp_legal_stats_mean(const interp_legal_stats *s, int stat, float *out);

/* Legal-move statistics on the device: the partials above, computed from activations that stay
 * in a model_cache. The components of the stack, in this order: "embed" and "pos_embed"
 * (embeds), per layer l "{l}_attn_out" (attns) then "{l}_mlp_out" (mlps), then "L{l}H{h}" for
 * every layer and head (heads), each through ln_final's cached scale (apply_ln_to_stack at
 * the final layer): the rows of decompose_resid and stack_head_results, as
 * worker_legal_components stacks them on the host. */
typedef struct interp_legal_parts {
    bool embeds, attns, mlps, heads;
} interp_legal_parts;

/* The hooks a cache must hold for the parts: hook_embed and hook_pos_embed, hook_attn_out /
 * hook_mlp_out / attn.hook_z of every layer as needed, ln_final.hook_scale. Writes up to cap
 * hooks and returns the count (cap 0 asks). */
size_t interp_legal_parts_hooks(const model_config *cfg, interp_legal_parts p, model_hook *out,
                                size_t cap);

typedef struct interp_legal_accum interp_legal_accum;

/* Empty accumulators on s's backend for the parts' components x T positions (T: the longest
 * game to be added). INVALID when no part is chosen or T is 0 or above n_ctx. s is borrowed
 * and must outlive the accumulators. */
int interp_legal_accum_new(interp_legal_accum **out, model_session *s, interp_legal_parts p,
                           size_t T, char *err);
/* Frees the device buffers; accepts NULL and NULL *a. */
void interp_legal_accum_destroy(interp_legal_accum **a);
/* Number of components (the partials' n_comp). */
size_t interp_legal_accum_components(const interp_legal_accum *a);
/* Adds the n games of cache c (a run of a's session, holding interp_legal_parts_hooks' hooks):
 * game b is row b, positions < lengths[b] (1..T of the accumulators), with the legal mask
 * legal[b] ([lengths[b], V] bytes, as interp_legal_mask gives). Per game, on the backend: the
 * component stack [n_comp, T_b, D] (copies of the cached rows, and each layer's head results
 * z[h] @ W_O[h] as one product per head), centre_scale with ln_final's scale, one product
 * with W_U to logits [n_comp, T_b, V], then legal_stats into the accumulators. The products
 * have the shapes interp's host path makes (worker_legal_components, interp_stack_to_logits),
 * so on a one-thread CPU backend the partials equal interp_legal_stats_add's bit for bit (with
 * more threads, OpenBLAS may split a product over them otherwise than the host path's call and
 * round it differently). Only the masks are uploaded (once per call); nothing comes back. */
int interp_legal_accum_add(interp_legal_accum *a, const model_cache *c, const size_t *lengths,
                           const uint8_t *const *legal, size_t n, char *err);
/* Downloads the accumulators into new partials (labels as above; *out:
 * interp_legal_stats_destroy). The accumulators are left as they are. */
int interp_legal_accum_download(const interp_legal_accum *a, interp_legal_stats **out, char *err);

/* ------------------------------------------------------------------------------------------ */
/* Neuron statistics: mergeable partials                                                       */

/* Groups of positions a neuron mean is taken over. */
enum {
    INTERP_NEURON_ALL = 0,
    INTERP_NEURON_SLICE,      /* positions [slice_begin, T + slice_end) style, see below */
    INTERP_NEURON_WHITE_FROM, /* positions of phase CHESS_PHASE_WHITE_FROM ... */
    INTERP_NEURON_WHITE_TO,
    INTERP_NEURON_BLACK_FROM,
    INTERP_NEURON_BLACK_TO,
    INTERP_NEURON_N_GROUPS
};

typedef struct interp_neuron_stats {
    size_t L, M;
    long slice_begin, slice_end; /* Python slice of positions per game; negative from the end */
    uint64_t count[INTERP_NEURON_N_GROUPS]; /* positions summed per group */
    double *sum;                            /* [INTERP_NEURON_N_GROUPS, L, M] sums of hook_post */
} interp_neuron_stats;

/* Empty partials; the slice is Python's positions[slice_begin:slice_end] (e.g. 15, -15). */
int interp_neuron_stats_new(interp_neuron_stats **out, const model_config *cfg, long slice_begin,
                            long slice_end, char *err);
void interp_neuron_stats_destroy(interp_neuron_stats **s);
/* Adds one game's hook_post of every layer (from a) with its phases [T] (NULL: only the
 * overall and slice groups). */
int interp_neuron_stats_add(interp_neuron_stats *s, const interp_acts *a, const uint8_t *phases,
                            char *err);
int interp_neuron_stats_merge(interp_neuron_stats *dst, const interp_neuron_stats *src, char *err);
/* Mean of group g: out [L, M] (NaN when the group is empty). */
void interp_neuron_stats_mean(const interp_neuron_stats *s, int group, float *out);

#endif
