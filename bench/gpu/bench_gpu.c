/*
 * bench_gpu: the engine on one GPU at the full chess-GPT shape (12 layers, d_model 768, 12
 * heads, vocabulary 77, context 128; random weights), each figure next to its baseline measured
 * in the same run:
 *
 *   1. a cuBLAS matrix product of the shape of the MLP's first layer at batch 64 x 127 tokens,
 *      through the backend's gemm op: the rate the forward is compared with;
 *   2. the forward of 64 games of 127 tokens (logits only): time and achieved TFLOP/s, as a
 *      share of (1);
 *   3. block_every on one 127-token game, with the last token corrupted and with the middle one
 *      corrupted (fast exact algorithm with the identical-prefix shortcut), next to the plain
 *      algorithm (one forward per patched index, as TransformerLens does) on the same device;
 *   4. a cut-off sweep of --pairs pairs (block_every at cut-off 40, the last token replaced),
 *      in batches of 64 pairs as a worker runs a task, in pairs per second;
 *   5. legal-move statistics over --games random games of up to 127 tokens, every component
 *      (embeds, attention and MLP outputs, every head: 170 at the full shape), in batches of
 *      64 games as a worker runs a task: the legal masks on the host, a forward caching the
 *      components' hooks, interp_legal_accum_add on the device (stacks, ln_final's scale, W_U,
 *      the masked reductions), one download of the accumulators at the end; in games per
 *      second;
 *   6. the launch cost: 200 small operations queued one by one, against one replay of them
 *      recorded as a CUDA graph; and, from a second pass of (2)-(5) on a session over the
 *      counting backend (model_backend_count_new), the device operations and host waits of
 *      each figure per call, with the share of its time that many launches take at the cost
 *      measured: where that share is small, replaying the work from a graph gains little.
 *
 * Times are medians of --repeat runs after a warm-up; the device is synchronised before every
 * clock read (download and sync wait for the stream). FLOPs count the multiply-adds of the
 * products (2 per multiply-add) and nothing else. --backend cpu runs the same program on the
 * CPU backend (e.g. with --layers 2 to check the program itself on a machine without a GPU).
 *
 * usage: bench_gpu [--backend cuda|cpu] [--layers N] [--d-model N] [--heads N] [--pairs N]
 *        [--games N] [--repeat N] [--no-plain] [--tf32]
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "gpu/gpu.h"
#include "interp/interp.h"

typedef struct args {
    const char *backend;
    int layers, d_model, heads;
    long pairs, games, repeat;
    bool plain, tf32;
} args;

static int usage(void) {
    fprintf(stderr, "usage: bench_gpu [--backend cuda|cpu] [--layers N] [--d-model N] [--heads N]"
                    " [--pairs N] [--games N] [--repeat N] [--no-plain] [--tf32]\n");
    return 2;
}

static int die(const char *what, const char *err) {
    fprintf(stderr, "bench_gpu: %s: %s\n", what, err);
    return 1;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* A random legal game of exactly T tokens as ids (caller frees). */
static int game_of_length(const model *m, size_t T, uint64_t seed0, int32_t **ids, char *err) {
    for (uint64_t seed = seed0; seed < seed0 + 2000; seed++) {
        chess_game *g = NULL;
        char *uci = NULL;
        size_t n = 0;
        int rc = chess_random_game(&g, seed, T, err);
        if (rc == 0) {
            rc = chess_game_to_uci(g, &uci, err);
        }
        chess_game_destroy(&g);
        if (rc == 0) {
            rc = interp_tokens_from_uci(m, uci, ids, &n, err);
        }
        free(uci);
        if (rc != 0) {
            return rc;
        }
        if (n == T) {
            return 0;
        }
        free(*ids);
    }
    return common_fail(err, COMMON_ERR_INVALID, "no random game of %zu tokens found", T);
}

/* 1. The matrix product [rows, D] x [D, 4D] on the backend: seconds per product (median). */
static int bench_gemm(model_backend *be, size_t rows, size_t D, long repeat, double *secs,
                      char *err) {
    size_t M = 4 * D;
    model_buf *a = NULL, *b = NULL, *c = NULL;
    int rc = be->alloc(be, rows * D, &a, err);
    if (rc == 0) {
        rc = be->alloc(be, D * M, &b, err);
    }
    if (rc == 0) {
        rc = be->alloc(be, rows * M, &c, err);
    }
    if (rc == 0) {
        rc = be->fill(be, (model_ref){a, 0}, rows * D, 0.01f, err);
    }
    if (rc == 0) {
        rc = be->fill(be, (model_ref){b, 0}, D * M, -0.02f, err);
    }
    model_gemm g = {.m = rows,
                    .n = M,
                    .k = D,
                    .alpha = 1.0f,
                    .beta = 0.0f,
                    .a = {a, 0},
                    .lda = D,
                    .b = {b, 0},
                    .ldb = M,
                    .c = {c, 0},
                    .ldc = M,
                    .batch = 1};
    double *t = calloc((size_t)repeat, sizeof *t);
    for (long i = -2; rc == 0 && i < repeat; i++) { /* two warm-ups */
        if ((rc = be->sync(be, err)) != 0) {
            break;
        }
        double t0 = common_now_s();
        for (int k = 0; rc == 0 && k < 10; k++) {
            rc = be->gemm(be, &g, err);
        }
        if (rc == 0 && (rc = be->sync(be, err)) == 0 && i >= 0) {
            t[i] = (common_now_s() - t0) / 10.0;
        }
    }
    if (rc == 0) {
        *secs = median(t, (size_t)repeat);
    }
    free(t);
    be->free(be, a);
    be->free(be, b);
    be->free(be, c);
    return rc;
}

/* FLOPs of a forward of B sequences of T tokens: the products of every layer (QKV, output, the
 * MLP's two, scores and values over the T keys) and the unembedding. */
static double forward_flops(const model_config *c, size_t B, size_t T) {
    double D = c->d_model, Tn = (double)T, L = c->n_layers, V = c->d_vocab;
    double per_token = L * (3 * D * D + D * D + 8 * D * D + 2 * Tn * D) + D * V;
    return 2.0 * per_token * (double)B * Tn;
}

/* 2. The forward of B games of T tokens, logits only. */
static int bench_forward(model_session *s, const int32_t *game, size_t B, size_t T, long repeat,
                         double *secs, char *err) {
    int32_t *tokens = malloc(B * T * sizeof *tokens);
    double *t = calloc((size_t)repeat, sizeof *t);
    if (tokens == NULL || t == NULL) {
        free(tokens);
        free(t);
        return common_fail(err, COMMON_ERR_NOMEM, "out of memory");
    }
    for (size_t b = 0; b < B; b++) {
        memcpy(tokens + b * T, game, T * sizeof *tokens);
    }
    model_request rq;
    model_request_init(&rq, s, tokens, B, T);
    int rc = 0;
    for (long i = -1; rc == 0 && i < repeat; i++) {
        model_cache *c = NULL;
        double t0 = common_now_s();
        rc = model_run(s, &rq, &c, err);
        if (rc == 0) { /* the logits' download waits for the device */
            float last;
            model_ref r = model_cache_ref(c, (model_hook){MODEL_HOOK_LOGITS, -1});
            rc = model_session_backend(s)->download(model_session_backend(s), &last, r, 1, err);
        }
        if (rc == 0 && i >= 0) {
            t[i] = common_now_s() - t0;
        }
        model_cache_destroy(&c);
    }
    if (rc == 0) {
        *secs = median(t, (size_t)repeat);
    }
    free(t);
    free(tokens);
    return rc;
}

/* Launch overhead: n_ops small additions queued one by one, then the same sequence recorded
 * once as a graph and replayed (graph ops of model.h): seconds per sequence, median of repeat.
 * *graph_s stays 0 where the backend has no graphs. */
static int bench_launches(model_backend *be, size_t n_ops, long repeat, double *direct_s,
                          double *graph_s, char *err) {
    enum { N = 4096 };
    model_buf *x = NULL;
    model_graph *g = NULL;
    double *t = calloc((size_t)repeat, sizeof *t);
    int rc =
        t == NULL ? common_fail(err, COMMON_ERR_NOMEM, "out of memory") : be->alloc(be, N, &x, err);
    model_ref r = {x, 0};
    if (rc == 0) {
        rc = be->fill(be, r, N, 0.5f, err);
    }
    for (int mode = 0; mode < 2 && rc == 0; mode++) {
        if (mode == 1 && be->graph_begin == NULL) {
            break;
        }
        if (mode == 1) {
            rc = be->graph_begin(be, err);
            for (size_t k = 0; k < n_ops && rc == 0; k++) {
                rc = be->add(be, r, r, r, N, err);
            }
            int rc2 = be->graph_end(be, &g, err); /* ends the recording whatever happened */
            rc = rc != 0 ? rc : rc2;
        }
        for (long i = -1; rc == 0 && i < repeat; i++) {
            double t0 = common_now_s();
            if (mode == 0) {
                for (size_t k = 0; k < n_ops && rc == 0; k++) {
                    rc = be->add(be, r, r, r, N, err);
                }
            } else {
                rc = be->graph_launch(be, g, err);
            }
            if (rc == 0) {
                rc = be->sync(be, err);
            }
            if (rc == 0 && i >= 0) {
                t[i] = common_now_s() - t0;
            }
        }
        if (rc == 0) {
            *(mode == 0 ? direct_s : graph_s) = median(t, (size_t)repeat);
        }
    }
    if (g != NULL) {
        be->graph_destroy(be, g);
    }
    if (x != NULL) {
        be->free(be, x);
    }
    free(t);
    return rc;
}

/* 3. block_every on one game with the token at pos replaced: seconds (median of repeat). */
static int bench_block_every(model_session *s, const int32_t *clean, size_t T, size_t pos,
                             bool plain, long repeat, double *secs, char *err) {
    int32_t *corrupted = malloc(T * sizeof *corrupted);
    double *t = calloc((size_t)repeat, sizeof *t);
    if (corrupted == NULL || t == NULL) {
        free(corrupted);
        free(t);
        return common_fail(err, COMMON_ERR_NOMEM, "out of memory");
    }
    memcpy(corrupted, clean, T * sizeof *corrupted);
    corrupted[pos] = (clean[pos] + 1) % 64 + 1;
    interp_patch_opts o = interp_patch_opts_default();
    o.kind = INTERP_PATCH_BLOCK_EVERY;
    o.plain = plain;
    o.metric = (interp_metric){.kind = INTERP_METRIC_LOGIT_DIFF, .token = 10, .token2 = 20};
    int rc = 0;
    for (long i = plain ? 0 : -1; rc == 0 && i < repeat; i++) {
        interp_patch_result *r = NULL;
        double t0 = common_now_s();
        rc = interp_patch_run(s, clean, corrupted, T, &o, &r, err); /* values come to the host */
        if (rc == 0 && i >= 0) {
            t[i] = common_now_s() - t0;
        }
        interp_patch_result_destroy(&r);
    }
    if (rc == 0) {
        *secs = median(t, (size_t)repeat);
    }
    free(t);
    free(corrupted);
    return rc;
}

/* 4. n pairs of 40-token prompts, last token replaced, in batches of 64 pairs. */
static int bench_sweep(model_session *s, const model *m, size_t n, double *secs, char *err) {
    enum { T = 41, BATCH = 64 };
    int32_t *ids = malloc(n * 2 * T * sizeof *ids);
    interp_patch_pair *pairs = calloc(n, sizeof *pairs);
    interp_patch_result **out = calloc(BATCH, sizeof *out);
    int rc = ids != NULL && pairs != NULL && out != NULL
                 ? 0
                 : common_fail(err, COMMON_ERR_NOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int32_t *g = NULL;
        if ((rc = game_of_length(m, T, 1000 + 7 * i, &g, err)) != 0) {
            break;
        }
        int32_t *clean = ids + i * 2 * T, *corrupted = clean + T;
        memcpy(clean, g, T * sizeof *g);
        memcpy(corrupted, g, T * sizeof *g);
        corrupted[T - 1] = (g[T - 1] + 1 + (int32_t)(i % 60)) % 64 + 1;
        free(g);
        pairs[i] = (interp_patch_pair){
            clean,
            corrupted,
            {.kind = INTERP_METRIC_LOGIT_DIFF, .token = clean[T - 1], .token2 = corrupted[T - 1]}};
    }
    interp_patch_opts o = interp_patch_opts_default();
    o.kind = INTERP_PATCH_BLOCK_EVERY;
    double t0 = common_now_s();
    for (size_t i0 = 0; rc == 0 && i0 < n; i0 += BATCH) {
        size_t nb = n - i0 < BATCH ? n - i0 : BATCH;
        rc = interp_patch_run_batch(s, pairs + i0, nb, T, &o, out, err);
        for (size_t j = 0; rc == 0 && j < nb; j++) {
            interp_patch_result_destroy(&out[j]);
        }
    }
    *secs = common_now_s() - t0;
    free(out);
    free(pairs);
    free(ids);
    return rc;
}

/* 5. Legal-move statistics of every component over n random games of up to 127 tokens, in
 * batches of 64 games: *n_comp, *positions (of all games) and the seconds from the first mask
 * to the accumulators on the host. */
static int bench_legal(model_session *s, const model *m, size_t n, size_t *n_comp,
                       size_t *positions, double *secs, char *err) {
    enum { BATCH = 64, T_MAX = 127 };
    const model_config *cfg = model_get_config(m);
    const interp_legal_parts all = {true, true, true, true};
    size_t n_hooks = interp_legal_parts_hooks(cfg, all, NULL, 0);
    model_hook *hooks = malloc(n_hooks * sizeof *hooks);
    char **uci = calloc(n, sizeof *uci);
    int32_t **ids = calloc(n, sizeof *ids);
    size_t *T = calloc(n, sizeof *T);
    int32_t *tokens = malloc(BATCH * T_MAX * sizeof *tokens);
    uint8_t *masks[BATCH] = {NULL};
    interp_legal_accum *acc = NULL;
    interp_legal_stats *ls = NULL;
    int rc = hooks != NULL && uci != NULL && ids != NULL && T != NULL && tokens != NULL
                 ? 0
                 : common_fail(err, COMMON_ERR_NOMEM, "out of memory");
    if (rc == 0) {
        interp_legal_parts_hooks(cfg, all, hooks, n_hooks);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        chess_game *g = NULL;
        rc = chess_random_game(&g, 5000 + i, T_MAX, err);
        if (rc == 0) {
            rc = chess_game_to_uci(g, &uci[i], err);
        }
        chess_game_destroy(&g);
        if (rc == 0) {
            rc = interp_tokens_from_uci(m, uci[i], &ids[i], &T[i], err);
        }
        *positions += rc == 0 ? T[i] : 0;
    }
    int32_t pad = model_tokenizer_pad(model_get_tokenizer(m));
    double t0 = common_now_s();
    if (rc == 0) {
        rc = interp_legal_accum_new(&acc, s, all, T_MAX, err);
    }
    for (size_t i0 = 0; rc == 0 && i0 < n; i0 += BATCH) {
        size_t nb = n - i0 < BATCH ? n - i0 : BATCH, Tb = 0;
        for (size_t b = 0; rc == 0 && b < nb; b++) {
            size_t Tm = 0;
            rc = interp_legal_mask(m, uci[i0 + b], &masks[b], &Tm, err);
            Tb = T[i0 + b] > Tb ? T[i0 + b] : Tb;
        }
        for (size_t b = 0; rc == 0 && b < nb; b++) {
            for (size_t t = 0; t < Tb; t++) {
                tokens[b * Tb + t] = t < T[i0 + b] ? ids[i0 + b][t] : pad;
            }
        }
        model_cache *c = NULL;
        if (rc == 0) {
            model_request rq;
            model_request_init(&rq, s, tokens, nb, Tb);
            rq.lengths = T + i0;
            rq.hooks = hooks;
            rq.n_hooks = n_hooks;
            rq.want_logits = false;
            rc = model_run(s, &rq, &c, err);
        }
        if (rc == 0) {
            rc = interp_legal_accum_add(acc, c, T + i0, (const uint8_t *const *)masks, nb, err);
        }
        model_cache_destroy(&c);
        for (size_t b = 0; b < nb; b++) {
            free(masks[b]);
            masks[b] = NULL;
        }
    }
    if (rc == 0) { /* the download waits for the device */
        rc = interp_legal_accum_download(acc, &ls, err);
    }
    *secs = common_now_s() - t0;
    if (rc == 0) {
        *n_comp = ls->n_comp;
    }
    interp_legal_stats_destroy(&ls);
    interp_legal_accum_destroy(&acc);
    for (size_t i = 0; i < n && uci != NULL && ids != NULL; i++) {
        free(uci[i]);
        free(ids[i]);
    }
    free(uci);
    free(ids);
    free(T);
    free(tokens);
    free(hooks);
    return rc;
}

int main(int argc, char **argv) {
    args a = {.backend = "cuda",
              .layers = 12,
              .d_model = 768,
              .heads = 12,
              .pairs = 1000,
              .games = 1000,
              .repeat = 5,
              .plain = true};
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--backend") == 0 && v) {
            a.backend = argv[++i];
        } else if (strcmp(argv[i], "--layers") == 0 && v) {
            a.layers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--d-model") == 0 && v) {
            a.d_model = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--heads") == 0 && v) {
            a.heads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--pairs") == 0 && v) {
            a.pairs = atol(argv[++i]);
        } else if (strcmp(argv[i], "--games") == 0 && v) {
            a.games = atol(argv[++i]);
        } else if (strcmp(argv[i], "--repeat") == 0 && v) {
            a.repeat = atol(argv[++i]);
        } else if (strcmp(argv[i], "--no-plain") == 0) {
            a.plain = false;
        } else if (strcmp(argv[i], "--tf32") == 0) {
            a.tf32 = true;
        } else {
            return usage();
        }
    }
    if (a.layers < 1 || a.d_model < 1 || a.heads < 1 || a.d_model % a.heads != 0 || a.pairs < 0 ||
        a.games < 0 || a.repeat < 1) {
        return usage();
    }
    char err[COMMON_ERR_LEN], dir[] = "/tmp/chesslens-bench-gpu-XXXXXX", desc[256] = "CPU";
    model_backend *be = NULL;
    if (strcmp(a.backend, "cpu") == 0) {
        if (model_backend_cpu_new(&be, 0, err) != 0) {
            return die("cpu backend", err);
        }
    } else {
        int count = 0;
        if (gpu_device_count(&count, err) != 0) {
            return die("devices", err);
        }
        if (count == 0) {
            printf("bench_gpu: no CUDA device visible: nothing measured\n");
            return 0;
        }
        gpu_backend_opts go = {.tf32 = a.tf32};
        if (gpu_device_describe(0, desc, sizeof desc, err) != 0 ||
            gpu_backend_new(&be, 0, &go, err) != 0) {
            return die("cuda backend", err);
        }
    }
    if (mkdtemp(dir) == NULL) {
        return die("mkdtemp", "cannot create a temporary directory");
    }
    model_config cfg = {.n_layers = a.layers,
                        .d_model = a.d_model,
                        .n_heads = a.heads,
                        .d_head = a.d_model / a.heads,
                        .d_mlp = 4 * a.d_model,
                        .n_ctx = 128,
                        .n_positions = 128,
                        .d_vocab = 77,
                        .eps = 1e-5f,
                        .attn_scale = sqrtf((float)(a.d_model / a.heads))};
    char mdir[600];
    snprintf(mdir, sizeof mdir, "%s/model", dir);
    model *m = NULL;
    model_session *s = NULL;
    if (model_write_random(mdir, &cfg, 1, MODEL_DTYPE_F32, err) != 0 ||
        model_load(&m, mdir, NULL, err) != 0 || model_session_new(&s, m, be, err) != 0) {
        return die("model", err);
    }
    printf("bench_gpu: %s (%s%s); model %d x %d x %d heads, vocabulary 77, 127 tokens\n", be->name,
           desc, a.tf32 ? ", TF32 products" : ", float32", a.layers, a.d_model, a.heads);
    const size_t T = 127, B = 64;
    int32_t *game = NULL;
    double gemm_s = 0, fwd_s = 0, unfused_s = 0, last_s = 0, mid_s = 0, plain_s = 0, sweep_s = 0;
    double direct_s = 0, graph_s = 0, legal_s = 0;
    size_t legal_comp = 0, legal_pos = 0;
    /* the forward once more with the fused attention op hidden: the unfused composition */
    int (*fused)(model_backend *, const model_attn *, char *) = be->attn_fused;
    if (game_of_length(m, T, 1, &game, err) != 0) {
        return die("game", err);
    }
    if (fused != NULL) {
        be->attn_fused = NULL;
        int rc = bench_forward(s, game, B, T, a.repeat, &unfused_s, err);
        be->attn_fused = fused;
        if (rc != 0) {
            return die("unfused forward", err);
        }
    }
    if (bench_gemm(be, B * T, (size_t)a.d_model, a.repeat, &gemm_s, err) != 0 ||
        bench_forward(s, game, B, T, a.repeat, &fwd_s, err) != 0 ||
        bench_launches(be, 200, a.repeat, &direct_s, &graph_s, err) != 0 ||
        bench_block_every(s, game, T, T - 1, false, a.repeat, &last_s, err) != 0 ||
        bench_block_every(s, game, T, T / 2, false, a.repeat, &mid_s, err) != 0 ||
        (a.plain && bench_block_every(s, game, T, T / 2, true, 1, &plain_s, err) != 0) ||
        bench_sweep(s, m, (size_t)a.pairs, &sweep_s, err) != 0 ||
        bench_legal(s, m, (size_t)a.games, &legal_comp, &legal_pos, &legal_s, err) != 0) {
        return die("run", err);
    }
    /* The same work once more on a session over the counting backend: the launches (device
     * operations) and host waits of each figure, per call. The timed calls above ran a warm-up
     * and `repeat` calls; these run a warm-up and one, so the counts are halved. */
    model_backend_counts oc = {0}, per[5];
    model_backend *counted = NULL;
    model_session *cs = NULL;
    if (model_backend_count_new(&counted, be, &oc, err) != 0 ||
        model_session_new(&cs, m, counted, err) != 0) {
        return die("counting session", err);
    }
    size_t legal_games = a.games < 4 ? (size_t)a.games : 4, cc = 0, cp = 0;
    double ignored = 0;
    for (int k = 0; k < 5; k++) {
        oc = (model_backend_counts){0};
        int rc =
            k == 0   ? bench_forward(cs, game, B, T, 1, &ignored, err)
            : k == 1 ? bench_block_every(cs, game, T, T - 1, false, 1, &ignored, err)
            : k == 2 ? bench_block_every(cs, game, T, T / 2, false, 1, &ignored, err)
            : k == 3
                ? bench_sweep(cs, m, 64, &ignored, err)
                : (legal_games > 0 ? bench_legal(cs, m, legal_games, &cc, &cp, &ignored, err) : 0);
        if (rc != 0) {
            return die("counted run", err);
        }
        per[k] = oc;
        if (k < 3) { /* a warm-up and one call */
            per[k].device_ops /= 2;
            per[k].host_waits /= 2;
            per[k].downloaded /= 2;
        }
    }
    model_session_destroy(&cs);
    model_backend_destroy(&counted);
    double gemm_rate = 2.0 * (double)(B * T) * a.d_model * 4.0 * a.d_model / gemm_s / 1e12;
    double fwd_rate = forward_flops(&cfg, B, T) / fwd_s / 1e12;
    printf("  gemm [%zu x %d] x [%d x %d]          %10.3f ms  %8.2f TFLOP/s\n", B * T, a.d_model,
           a.d_model, 4 * a.d_model, gemm_s * 1e3, gemm_rate);
    printf("  forward, batch %zu x %zu tokens         %10.3f ms  %8.2f TFLOP/s  %5.1f%% of the gemm"
           " rate\n",
           B, T, fwd_s * 1e3, fwd_rate, 100.0 * fwd_rate / gemm_rate);
    printf("  attention: %s\n", fused != NULL ? "fused (no hook asks for the pattern)"
                                              : "unfused (the backend has no fused op)");
    if (fused != NULL) {
        printf("  forward, unfused attention            %10.3f ms  fused/unfused: %.2fx faster\n",
               unfused_s * 1e3, unfused_s / fwd_s);
    }
    if (be->graph_begin != NULL) {
        printf("  200 small launches: queued one by one %8.3f ms, one graph replay %8.3f ms\n",
               direct_s * 1e3, graph_s * 1e3);
        printf("  CUDA graphs: available; not used by the forward or patching (README)\n");
    } else {
        printf("  200 small launches: queued one by one %8.3f ms; graphs: not available\n",
               direct_s * 1e3);
    }
    printf("  block_every, last token corrupted    %10.3f ms\n", last_s * 1e3);
    printf("  block_every, middle token corrupted  %10.3f ms\n", mid_s * 1e3);
    if (a.plain) {
        printf("  block_every, plain (one forward per index, as TL)  %10.3f ms  fast/plain: "
               "%.1fx faster\n",
               plain_s * 1e3, plain_s / mid_s);
    }
    if (a.pairs > 0) {
        printf("  cut-off sweep, %ld pairs of 41 tokens  %10.3f s   %8.1f pairs/s\n", a.pairs,
               sweep_s, (double)a.pairs / sweep_s);
    }
    if (a.games > 0) {
        printf("  legal-move statistics, %ld games (%zu positions, %zu components x 127 "
               "positions x 77 tokens)  %10.3f s  %8.1f games/s\n",
               a.games, legal_pos, legal_comp, legal_s, (double)a.games / legal_s);
    }
    /* what launching alone would cost of each figure, at the measured cost of a small launch */
    double launch_s = direct_s / 200;
    const char *what[5] = {"forward, batch 64", "block_every, last token", "block_every, middle",
                           "sweep, one task of 64 pairs", "legal statistics, one game"};
    double time_of[5] = {fwd_s, last_s, mid_s, a.pairs > 0 ? sweep_s * 64 / (double)a.pairs : 0,
                         legal_games > 0 && a.games > 0 ? legal_s / (double)a.games : 0};
    printf("  launches per call (device operations, host waits, KiB downloaded), and their share "
           "of the time at %.2f us a launch:\n",
           launch_s * 1e6);
    for (int k = 0; k < 5; k++) {
        uint64_t ops = per[k].device_ops, waits = per[k].host_waits, back = per[k].downloaded;
        if (k == 4) { /* per game */
            uint64_t g = legal_games > 0 ? legal_games : 1;
            ops /= g;
            waits /= g;
            back /= g;
        }
        printf("    %-28s %8" PRIu64 " ops %6" PRIu64 " waits %9.1f KiB", what[k], ops, waits,
               (double)back * 4.0 / 1024.0);
        if (time_of[k] > 0) {
            printf("  %6.1f%%", 100.0 * (double)ops * launch_s / time_of[k]);
        }
        printf("\n");
    }
    free(game);
    model_session_destroy(&s);
    model_destroy(&m);
    model_backend_destroy(&be);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
