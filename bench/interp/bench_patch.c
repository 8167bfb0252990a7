/*
 * bench_patch: activation patching and dataset statistics at the full chess-GPT shape (12
 * layers, d_model 768, 12 heads, vocabulary 77, context 128; random weights written with
 * model_write_random into a temporary directory).
 *
 * 1. block_every for one game of --tokens T (clean vs the same game with its last token
 *    replaced), metric the normalised logit of a token at the last position, all measured:
 *    chesslens fast (incremental, packed, with the identical-prefix shortcut that gives every
 *    index before the corrupted token 0 without a run), the same without that shortcut,
 *    chesslens plain (one full forward per index, TL's algorithm) and, when /usr/bin/python3
 *    has torch, a PyTorch loop doing what TL does (torch_patch_loop.py on tl_reference.py).
 *    Their values are compared.
 * 2. The same for one game of --long-tokens T (127: the whole context): both fast runs are
 *    measured; plain and the PyTorch loop, 3 x L x T full forwards each (over an hour), are
 *    extrapolated from the median of a few of their patched forwards, whose values are checked
 *    against the fast run's. The output marks those figures EXTRAPOLATED.
 * 3. Legal-move statistics over random games (decompose_resid + apply_ln + @ W_U + legal/illegal
 *    min/max/mean), batched alike: chesslens vs the PyTorch reference, in games/s, means compared.
 * A summary prints every ratio of the run side by side, the PyTorch settings (threads, wait
 * policy, BLAS; see bench/torch_settings.py) and peak RSS (this process and the Python child).
 *
 *   bench_patch [--tokens T] [--long-tokens T|0] [--games N] [--threads N] [--no-plain]
 *               [--no-torch] [--model DIR]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "chess/chess.h"
#include "interp/interp.h"

#define PYTHON "/usr/bin/python3"
/* Patched forwards timed per algorithm to extrapolate the long game's plain and PyTorch runs. */
#define LONG_SAMPLES 5
/* Games per model_run in the legal statistics, for chesslens and PyTorch alike. */
#define LEGAL_BATCH 8

typedef struct args {
    long tokens, long_tokens, games, threads; /* threads: resolved to a count in main */
    bool plain, torch;
    const char *model_dir; /* the model's directory (a temporary one unless --model) */
} args;

/* Figures of one run, for the closing summary; a time < 0 was not measured. */
typedef struct summary {
    size_t T, runs;                        /* the measured game: tokens, patched runs (3 L T) */
    double fast_s, noshort_s;              /* seconds: fast, fast without the prefix shortcut */
    double plain_s, torch_s;               /* seconds */
    double plain_diff, torch_diff;         /* max |value - fast value| */
    size_t long_T, long_runs;              /* the long game */
    double long_fast_s, long_noshort_s;    /* seconds, measured */
    double long_plain_1_s, long_torch_1_s; /* seconds per patched forward (median of samples) */
    double long_plain_diff, long_torch_diff;
    size_t games;
    double legal_s, legal_torch_s, legal_diff; /* seconds; max |mean diff| */
} summary;

/* What the Python children reported; settings are kept from the first, and flagged when a
 * later child ran differently. */
typedef struct children {
    double rss_mb; /* the largest peak RSS a child reported (its own ru_maxrss: a forked child's
                      RUSAGE_CHILDREN figure would start from its parent's pages) */
    char settings[2048];
    bool differ;
} children;

/* One child's report: seconds (-1 when it failed), per_forward_s (-1 unless sample mode). */
typedef struct child_report {
    double seconds, per_forward_s;
} child_report;

static int die(const char *what, const char *err) {
    fprintf(stderr, "bench_patch: %s: %s\n", what, err);
    return 1;
}

static bool have_torch(void) {
    return access(PYTHON, X_OK) == 0 && system(PYTHON " -c 'import torch' >/dev/null 2>&1") == 0;
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n) {
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Runs cmd, which prints "settings ...", "seconds X", "per_forward_s X" and "peak_rss_kb K"
 * lines (torch_patch_loop.py); stderr passes through. */
static child_report run_child(const char *cmd, children *ch) {
    child_report r = {-1.0, -1.0};
    FILE *p = popen(cmd, "r");
    if (p == NULL) {
        return r;
    }
    char line[2048];
    double kb = 0.0;
    while (fgets(line, sizeof line, p) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "settings ", 9) == 0) {
            if (ch->settings[0] == '\0') {
                snprintf(ch->settings, sizeof ch->settings, "%s", line + 9);
            } else if (strcmp(ch->settings, line + 9) != 0) {
                ch->differ = true;
                printf("    (this PyTorch child ran with: %s)\n", line + 9);
            }
        } else if (sscanf(line, "seconds %lf", &r.seconds) == 1 ||
                   sscanf(line, "per_forward_s %lf", &r.per_forward_s) == 1) {
            continue;
        } else if (sscanf(line, "peak_rss_kb %lf", &kb) == 1 && kb / 1024.0 > ch->rss_mb) {
            ch->rss_mb = kb / 1024.0;
        }
    }
    if (pclose(p) != 0) {
        r.seconds = -1.0;
    }
    return r;
}

/* Reads up to n floats from path into out; returns how many. */
static size_t read_floats(const char *path, float *out, size_t n) {
    FILE *f = fopen(path, "rb");
    size_t got = f != NULL ? fread(out, sizeof *out, n, f) : 0;
    if (f != NULL) {
        fclose(f);
    }
    return got;
}

/* A random legal game of exactly T tokens (T odd: <s> + 2 per move), as ids; *uci gets the
 * text (caller frees both). */
static int game_of_length(const model *m, size_t T, uint64_t seed0, int32_t **ids, char **uci,
                          char *err) {
    for (uint64_t seed = seed0; seed < seed0 + 1000; seed++) {
        chess_game *g = NULL;
        int rc = chess_random_game(&g, seed, T, err);
        if (rc != 0) {
            return rc;
        }
        rc = chess_game_to_uci(g, uci, err);
        chess_game_destroy(&g);
        if (rc != 0) {
            return rc;
        }
        size_t n = 0;
        rc = interp_tokens_from_uci(m, *uci, ids, &n, err);
        if (rc != 0) {
            free(*uci);
            return rc;
        }
        if (n == T) {
            return 0;
        }
        free(*ids);
        free(*uci);
    }
    return common_fail(err, COMMON_ERR_INVALID, "no random game of %zu tokens found", T);
}

/* One clean game, its corruption (last token replaced) and the metric token: the square whose
 * last logit the corruption moves most. */
typedef struct pair {
    size_t T;
    int32_t *clean, *corrupted; /* [T] */
    int32_t token;
    char *uci;
} pair;

static void pair_free(pair *p) {
    free(p->clean);
    free(p->corrupted);
    free(p->uci);
    memset(p, 0, sizeof *p);
}

static int last_logits(model_session *s, const int32_t *tokens, size_t T, float *out, char *err) {
    size_t V = (size_t)model_get_config(model_session_model(s))->d_vocab;
    float *lg = malloc(T * V * sizeof *lg); /* [T, V] */
    model_request req;
    model_request_init(&req, s, tokens, 1, T);
    model_cache *c = NULL;
    model_hook lh = {MODEL_HOOK_LOGITS, -1};
    int rc = lg == NULL ? common_fail(err, COMMON_ERR_NOMEM, "out of memory")
                        : model_run(s, &req, &c, err);
    if (rc == 0) {
        rc = model_cache_download_row(c, lh, 0, lg, T * V, err);
    }
    if (rc == 0) {
        memcpy(out, lg + (T - 1) * V, V * sizeof *out);
    }
    model_cache_destroy(&c);
    free(lg);
    return rc;
}

static int make_pair(const model *m, model_session *s, size_t T, uint64_t seed, pair *p,
                     char *err) {
    memset(p, 0, sizeof *p);
    p->T = T;
    int rc = game_of_length(m, T, seed, &p->clean, &p->uci, err);
    if (rc != 0) {
        return rc;
    }
    p->corrupted = malloc(T * sizeof *p->corrupted);
    const char *last = model_tokenizer_token(model_get_tokenizer(m), p->clean[T - 1]);
    rc = interp_corrupt_token(m, p->clean, T, T - 1, strcmp(last, "d5") ? "d5" : "h3", p->corrupted,
                              err);
    size_t V = (size_t)model_get_config(m)->d_vocab;
    float *lc = malloc(V * sizeof *lc), *lr = malloc(V * sizeof *lr); /* [V] each */
    if (rc == 0) {
        rc = last_logits(s, p->clean, T, lc, err);
    }
    if (rc == 0) {
        rc = last_logits(s, p->corrupted, T, lr, err);
    }
    p->token = 9;
    float best = -1.0f;
    for (size_t v = 9; rc == 0 && v < 73 && v < V; v++) {
        float d = fabsf(lc[v] - lr[v]);
        if (d > best) {
            best = d;
            p->token = (int32_t)v;
        }
    }
    free(lc);
    free(lr);
    if (rc != 0) {
        pair_free(p);
    }
    return rc;
}

/* Writes the pair as torch_patch_loop.py reads it: clean ids, then corrupted ids, a line each. */
static void write_pair(const pair *p, const char *path) {
    FILE *f = fopen(path, "w");
    for (size_t t = 0; f != NULL && t < p->T; t++) {
        fprintf(f, "%d%c", p->clean[t], t + 1 < p->T ? ' ' : '\n');
    }
    for (size_t t = 0; f != NULL && t < p->T; t++) {
        fprintf(f, "%d%c", p->corrupted[t], t + 1 < p->T ? ' ' : '\n');
    }
    if (f != NULL) {
        fclose(f);
    }
}

/* The chesslens algorithms: fast (default: incremental, packed, with the identical-prefix
 * shortcut), fast without that shortcut (every index run incrementally), plain (TL's). */
typedef enum algo { ALGO_FAST, ALGO_FAST_NO_SHORTCUT, ALGO_PLAIN } algo;

static int patching(model_session *s, const pair *p, algo al, interp_patch_result **out,
                    double *secs, char *err) {
    interp_patch_opts o = interp_patch_opts_default();
    o.metric.kind = INTERP_METRIC_LOGIT;
    o.metric.token = p->token;
    o.metric.normalize = true;
    o.plain = al == ALGO_PLAIN;
    o.no_prefix_shortcut = al == ALGO_FAST_NO_SHORTCUT;
    double t0 = common_now_s();
    int rc = interp_patch_run(s, p->clean, p->corrupted, p->T, &o, out, err);
    *secs = common_now_s() - t0;
    return rc;
}

static double max_diff(const float *a, const float *b, size_t n) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        worst = fmax(worst, fabs((double)a[i] - b[i]));
    }
    return worst;
}

/* Runs chesslens fast with and without the prefix shortcut (both measured, values compared);
 * *fast receives the former's result. */
static int chesslens_fast(model_session *s, const pair *p, interp_patch_result **fast,
                          double *fast_s, double *noshort_s) {
    char err[COMMON_ERR_LEN];
    interp_patch_result *ns = NULL;
    if (patching(s, p, ALGO_FAST, fast, fast_s, err) != 0) {
        return die("fast patching", err);
    }
    printf("  chesslens fast : %8.3f s  measured (%zu packed runs, %zu position-layers; the "
           "identical-prefix shortcut gives positions before the corrupted token 0 without a "
           "run)\n",
           *fast_s, (*fast)->n_forwards, (*fast)->n_positions);
    if (patching(s, p, ALGO_FAST_NO_SHORTCUT, &ns, noshort_s, err) != 0) {
        return die("fast patching without the prefix shortcut", err);
    }
    printf("  fast, no prefix shortcut: %8.3f s  measured (%zu packed runs, %zu position-layers; "
           "every index run), max |diff| vs fast %.2e\n",
           *noshort_s, ns->n_forwards, ns->n_positions,
           max_diff((*fast)->values, ns->values, model_shape_numel(&(*fast)->shape)));
    interp_patch_result_destroy(&ns);
    return 0;
}

static void print_header(const model *m, const pair *p, const char *what) {
    const model_config *cfg = model_get_config(m);
    printf("block_every on one game, %s: %zu tokens, %d layers -> %zu patched runs; metric "
           "normalised logit of '%s'\n",
           what, p->T, cfg->n_layers, 3 * (size_t)cfg->n_layers * p->T,
           model_tokenizer_token(model_get_tokenizer(m), p->token));
    printf("game: %s\n", p->uci);
}

/* Part 1: the measured game; fast, plain and the PyTorch loop all run in full. */
static int bench_short(const args *a, const char *dir, model *m, model_session *s, children *ch,
                       summary *sum) {
    char err[COMMON_ERR_LEN];
    const model_config *cfg = model_get_config(m);
    pair p;
    if (make_pair(m, s, (size_t)a->tokens, 42, &p, err) != 0) {
        return die("game", err);
    }
    sum->T = p.T;
    sum->runs = 3 * (size_t)cfg->n_layers * p.T;
    print_header(m, &p, "all measured");
    interp_patch_result *fast = NULL, *plain = NULL;
    if (chesslens_fast(s, &p, &fast, &sum->fast_s, &sum->noshort_s) != 0) {
        return 1;
    }
    size_t n = model_shape_numel(&fast->shape);
    if (a->plain) {
        if (patching(s, &p, ALGO_PLAIN, &plain, &sum->plain_s, err) != 0) {
            return die("plain patching", err);
        }
        sum->plain_diff = max_diff(fast->values, plain->values, n);
        printf("  chesslens plain: %8.3f s  (%zu full runs, %zu position-layers)\n", sum->plain_s,
               plain->n_forwards, plain->n_positions);
        printf("  fast vs plain  : %.2fx faster, max |diff| of the normalised metric %.2e\n",
               sum->plain_s / sum->fast_s, sum->plain_diff);
        interp_patch_result_destroy(&plain);
    }
    if (a->torch) {
        char tok_path[600], out_path[600], cmd[2400];
        snprintf(tok_path, sizeof tok_path, "%s/tokens.txt", dir);
        snprintf(out_path, sizeof out_path, "%s/torch_values.f32", dir);
        write_pair(&p, tok_path);
        snprintf(cmd, sizeof cmd,
                 PYTHON " %s/bench/interp/torch_patch_loop.py patch %s %s %d %ld %s",
                 CHESSLENS_SOURCE_DIR, a->model_dir, tok_path, p.token, a->threads, out_path);
        sum->torch_s = run_child(cmd, ch).seconds;
        if (sum->torch_s > 0) {
            float *tv = malloc(n * sizeof *tv);
            size_t got = read_floats(out_path, tv, n);
            sum->torch_diff = got == n ? 0.0 : INFINITY;
            for (size_t i = 0; i < got; i++) {
                sum->torch_diff = fmax(sum->torch_diff, fabs((double)fast->values[i] - tv[i]));
            }
            printf("  PyTorch TL loop: %8.3f s  (%zu full runs, %ld threads)\n", sum->torch_s,
                   sum->runs, a->threads);
            printf("  fast vs PyTorch: %.2fx faster, max |diff| %.2e over %zu of %zu values\n",
                   sum->torch_s / sum->fast_s, sum->torch_diff, got, n);
            free(tv);
        } else {
            printf("  PyTorch TL loop: failed to run\n");
        }
    }
    interp_patch_result_destroy(&fast);
    pair_free(&p);
    return 0;
}

/* The sampled indices of the long game, spread over components and layers, mostly at the
 * corrupted (last) position, where the values are not 0: idx[k] = {component (0 resid_pre,
 * 1 attn_out, 2 mlp_out), layer, position}. A plain patched run costs the same at any index. */
static void long_samples(size_t L, size_t T, size_t idx[LONG_SAMPLES][3]) {
    const size_t pick[LONG_SAMPLES][3] = {
        {0, 0, T - 1}, {1, L / 2, T - 1}, {2, L - 1, T - 1}, {0, L - 1, T / 2}, {1, 0, 0}};
    memcpy(idx, pick, sizeof pick);
}

/* LONG_SAMPLES plain patched forwards, each as the plain algorithm runs it (a full corrupted
 * forward with one clean slice written in, logits downloaded, metric read); values[k] gets the
 * normalised metric, per_s the median seconds of one. */
static int plain_samples(model_session *s, const pair *p, const interp_patch_result *fast,
                         size_t idx[LONG_SAMPLES][3], float *values, double *per_s, char *err) {
    const model_config *cfg = model_get_config(model_session_model(s));
    size_t L = (size_t)cfg->n_layers, T = p->T, V = (size_t)cfg->d_vocab;
    const model_hook_kind kinds[3] = {MODEL_HOOK_RESID_PRE, MODEL_HOOK_ATTN_OUT,
                                      MODEL_HOOK_MLP_OUT};
    model_hook *hooks = malloc(3 * L * sizeof *hooks);
    float *logits = malloc(T * V * sizeof *logits); /* [T, V] */
    model_cache *clean = NULL;
    double times[LONG_SAMPLES];
    int rc = 0;
    if (hooks == NULL || logits == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (size_t c = 0; c < 3; c++) {
        for (size_t l = 0; l < L; l++) {
            hooks[c * L + l] = (model_hook){kinds[c], (int)l};
        }
    }
    model_request req;
    model_request_init(&req, s, p->clean, 1, T);
    req.hooks = hooks;
    req.n_hooks = 3 * L;
    rc = model_run(s, &req, &clean, err);
    double denom = fast->clean_metric - fast->corrupted_metric;
    interp_metric metric = {.kind = INTERP_METRIC_LOGIT, .token = p->token};
    model_hook lh = {MODEL_HOOK_LOGITS, -1};
    for (size_t k = 0; k < LONG_SAMPLES && rc == 0; k++) {
        model_patch patch = {.hook = {kinds[idx[k][0]], (int)idx[k][1]},
                             .row = 0,
                             .pos = (int)idx[k][2],
                             .head = MODEL_ALL,
                             .src = clean,
                             .src_row = 0,
                             .key_pos = MODEL_ALL};
        model_request_init(&req, s, p->corrupted, 1, T);
        req.patches = &patch;
        req.n_patches = 1;
        model_cache *out = NULL;
        double t0 = common_now_s(), v = 0.0;
        rc = model_run(s, &req, &out, err);
        if (rc == 0) {
            rc = model_cache_download_row(out, lh, 0, logits, T * V, err);
        }
        if (rc == 0) {
            rc = interp_metric_eval(&metric, logits + (T - 1) * V, V, &v, err);
        }
        times[k] = common_now_s() - t0;
        model_cache_destroy(&out);
        values[k] = (float)((v - fast->corrupted_metric) / denom);
    }
    if (rc == 0) {
        *per_s = median(times, LONG_SAMPLES);
    }
done:
    model_cache_destroy(&clean);
    free(hooks);
    free(logits);
    return rc;
}

static double sample_diff(const interp_patch_result *fast, size_t L, size_t T,
                          size_t idx[LONG_SAMPLES][3], const float *values) {
    double worst = 0.0;
    for (size_t k = 0; k < LONG_SAMPLES; k++) {
        size_t i = (idx[k][0] * L + idx[k][1]) * T + idx[k][2];
        worst = fmax(worst, fabs((double)fast->values[i] - values[k]));
    }
    return worst;
}

/* Part 2: the long game; fast measured, plain and PyTorch extrapolated from samples. */
static int bench_long(const args *a, const char *dir, model *m, model_session *s, children *ch,
                      summary *sum) {
    char err[COMMON_ERR_LEN];
    const model_config *cfg = model_get_config(m);
    size_t L = (size_t)cfg->n_layers;
    pair p;
    if (make_pair(m, s, (size_t)a->long_tokens, 4242, &p, err) != 0) {
        return die("long game", err);
    }
    sum->long_T = p.T;
    sum->long_runs = 3 * L * p.T;
    print_header(m, &p, "fast measured, plain and PyTorch extrapolated");
    interp_patch_result *fast = NULL;
    if (chesslens_fast(s, &p, &fast, &sum->long_fast_s, &sum->long_noshort_s) != 0) {
        return 1;
    }
    size_t idx[LONG_SAMPLES][3];
    long_samples(L, p.T, idx);
    float values[LONG_SAMPLES];
    if (a->plain) {
        if (plain_samples(s, &p, fast, idx, values, &sum->long_plain_1_s, err) != 0) {
            return die("plain patched forwards (long game)", err);
        }
        sum->long_plain_diff = sample_diff(fast, L, p.T, idx, values);
        printf("  chesslens plain: %8.3f s  EXTRAPOLATED = %.4f s per patched run (median of %d "
               "timed) x %zu runs; max |diff| of the %d sampled values %.2e\n",
               sum->long_plain_1_s * (double)sum->long_runs, sum->long_plain_1_s, LONG_SAMPLES,
               sum->long_runs, LONG_SAMPLES, sum->long_plain_diff);
        printf("  fast vs plain  : %.2fx faster (extrapolated)\n",
               sum->long_plain_1_s * (double)sum->long_runs / sum->long_fast_s);
    }
    if (a->torch) {
        char tok_path[600], out_path[600], list[256] = "", cmd[2400];
        snprintf(tok_path, sizeof tok_path, "%s/long_tokens.txt", dir);
        snprintf(out_path, sizeof out_path, "%s/torch_long_values.f32", dir);
        write_pair(&p, tok_path);
        for (size_t k = 0; k < LONG_SAMPLES; k++) {
            size_t used = strlen(list);
            snprintf(list + used, sizeof list - used, "%s%zu:%zu:%zu", k ? "," : "", idx[k][0],
                     idx[k][1], idx[k][2]);
        }
        snprintf(cmd, sizeof cmd,
                 PYTHON " %s/bench/interp/torch_patch_loop.py sample %s %s %d %ld %s %s",
                 CHESSLENS_SOURCE_DIR, a->model_dir, tok_path, p.token, a->threads, out_path, list);
        child_report r = run_child(cmd, ch);
        if (r.seconds > 0 && r.per_forward_s > 0 &&
            read_floats(out_path, values, LONG_SAMPLES) == LONG_SAMPLES) {
            sum->long_torch_1_s = r.per_forward_s;
            sum->long_torch_diff = sample_diff(fast, L, p.T, idx, values);
            printf("  PyTorch TL loop: %8.3f s  EXTRAPOLATED = %.4f s per patched run (median of "
                   "%d timed) x %zu runs; max |diff| of the sampled values %.2e\n",
                   r.per_forward_s * (double)sum->long_runs, r.per_forward_s, LONG_SAMPLES,
                   sum->long_runs, sum->long_torch_diff);
            printf("  fast vs PyTorch: %.2fx faster (extrapolated)\n",
                   r.per_forward_s * (double)sum->long_runs / sum->long_fast_s);
        } else {
            printf("  PyTorch TL loop: failed to run\n");
        }
    }
    interp_patch_result_destroy(&fast);
    pair_free(&p);
    return 0;
}

/* Part 3: legal-move statistics. */
static int bench_legal(const args *a, const char *dir, model *m, model_session *s, children *ch,
                       summary *sum) {
    char err[COMMON_ERR_LEN];
    const model_config *cfg = model_get_config(m);
    size_t n_games = (size_t)a->games, V = (size_t)cfg->d_vocab, B = LEGAL_BATCH;
    size_t n_ctx = (size_t)cfg->n_ctx;
    char **ucis = calloc(n_games, sizeof *ucis);
    int32_t **ids = calloc(n_games, sizeof *ids);
    uint8_t **masks = calloc(n_games, sizeof *masks);
    size_t *lens = calloc(n_games, sizeof *lens);
    char path[600];
    snprintf(path, sizeof path, "%s/games.txt", dir);
    FILE *f = fopen(path, "w");
    for (size_t g = 0; g < n_games; g++) {
        chess_game *game = NULL;
        if (chess_random_game(&game, chess_random_game_seed(7, g), n_ctx - 1, err) != 0 ||
            chess_game_to_uci(game, &ucis[g], err) != 0) {
            return die("games", err);
        }
        chess_game_destroy(&game);
        size_t Tm = 0;
        if (interp_tokens_from_uci(m, ucis[g], &ids[g], &lens[g], err) != 0 ||
            interp_legal_mask(m, ucis[g], &masks[g], &Tm, err) != 0) {
            return die("games", err);
        }
        for (size_t t = 0; f != NULL && t < lens[g]; t++) {
            fprintf(f, "%d%c", ids[g][t], t + 1 < lens[g] ? ',' : ';');
        }
        for (size_t t = 0; f != NULL && t < lens[g]; t++) {
            for (size_t v = 0; v < V; v++) {
                fputc(masks[g][t * V + v] ? '1' : '0', f);
            }
            fputc(t + 1 < lens[g] ? '|' : '\n', f);
        }
    }
    if (f != NULL) {
        fclose(f);
    }
    interp_legal_stats *ls = NULL;
    int32_t *tokens = malloc(B * n_ctx * sizeof *tokens); /* [B, Tmax] */
    double t0 = common_now_s();
    for (size_t g0 = 0; g0 < n_games; g0 += B) {
        size_t nb = n_games - g0 < B ? n_games - g0 : B, Tmax = 0;
        for (size_t b = 0; b < nb; b++) {
            Tmax = lens[g0 + b] > Tmax ? lens[g0 + b] : Tmax;
        }
        for (size_t b = 0; b < nb; b++) {
            for (size_t t = 0; t < Tmax; t++) {
                tokens[b * Tmax + t] = t < lens[g0 + b] ? ids[g0 + b][t] : 0;
            }
        }
        interp_acts **acts = NULL;
        if (interp_run_acts(s, tokens, lens + g0, nb, Tmax, false, &acts, err) != 0) {
            return die("legal stats run", err);
        }
        for (size_t b = 0; b < nb; b++) {
            interp_stack *st = NULL, *lg = NULL;
            if (interp_decompose_resid(m, acts[b], -1, false, INTERP_DECOMP_ALL, true, true, &st,
                                       err) != 0 ||
                interp_stack_to_logits(m, st, &lg, err) != 0 ||
                (ls == NULL && interp_legal_stats_new(&ls, lg->n, NULL, n_ctx, err) != 0) ||
                interp_legal_stats_add(ls, lg, masks[g0 + b], err) != 0) {
                return die("legal stats", err);
            }
            interp_stack_destroy(&st);
            interp_stack_destroy(&lg);
            interp_acts_destroy(&acts[b]);
        }
        free(acts);
    }
    sum->legal_s = common_now_s() - t0;
    sum->games = n_games;
    printf("legal-move statistics over %zu random games (batches of %zu, both):\n", n_games, B);
    printf("  chesslens      : %8.3f s  %8.2f games/s\n", sum->legal_s,
           (double)n_games / sum->legal_s);
    if (a->torch) {
        char cmd[2400], out_path[600];
        snprintf(out_path, sizeof out_path, "%s/torch_legal_means.f32", dir);
        snprintf(cmd, sizeof cmd,
                 PYTHON " %s/bench/interp/torch_patch_loop.py legal %s %s %zu %ld %s",
                 CHESSLENS_SOURCE_DIR, a->model_dir, path, B, a->threads, out_path);
        sum->legal_torch_s = run_child(cmd, ch).seconds;
        size_t n = INTERP_LEGAL_N_STATS * ls->n_comp * n_ctx, per = ls->n_comp * n_ctx;
        float *tm = malloc(n * sizeof *tm), *cm = malloc(per * sizeof *cm);
        if (sum->legal_torch_s > 0 && read_floats(out_path, tm, n) == n) {
            sum->legal_diff = 0.0;
            for (int st = 0; st < INTERP_LEGAL_N_STATS; st++) {
                interp_legal_stats_mean(ls, st, cm);
                for (size_t i = 0; i < per; i++) {
                    if (isfinite(cm[i]) != isfinite(tm[st * per + i])) {
                        sum->legal_diff = INFINITY; /* counted on one side only */
                    } else if (isfinite(cm[i])) {
                        sum->legal_diff =
                            fmax(sum->legal_diff, fabs((double)cm[i] - tm[st * per + i]));
                    }
                }
            }
            printf("  PyTorch ref    : %8.3f s  %8.2f games/s\n", sum->legal_torch_s,
                   (double)n_games / sum->legal_torch_s);
            printf("  chesslens vs PyTorch: %.2fx games/s; max |diff| of the means %.2e\n",
                   sum->legal_torch_s / sum->legal_s, sum->legal_diff);
        } else {
            sum->legal_torch_s = -1.0;
            printf("  PyTorch ref    : failed to run\n");
        }
        free(tm);
        free(cm);
    }
    interp_legal_stats_destroy(&ls);
    for (size_t g = 0; g < n_games; g++) {
        free(ucis[g]);
        free(ids[g]);
        free(masks[g]);
    }
    free(ucis);
    free(ids);
    free(masks);
    free(lens);
    free(tokens);
    return 0;
}

/* One game's times (seconds, < 0: not run) and every ratio between them. */
static void print_row(double fast, double noshort, double plain, double torch, bool extrapolated) {
    const char *x = extrapolated ? "~" : "";
    printf("      chesslens fast %.2f s | fast without the prefix shortcut %.2f s", fast, noshort);
    if (plain >= 0) {
        printf(" | chesslens plain %s%.1f s", x, plain);
    }
    if (torch >= 0) {
        printf(" | PyTorch TL loop %s%.1f s", x, torch);
    }
    printf("\n");
    if (plain < 0 && torch < 0) {
        return;
    }
    printf("      ratios:");
    if (plain >= 0) {
        printf(" plain/fast %.1fx, plain/no-shortcut %.2fx;", plain / fast, plain / noshort);
    }
    if (torch >= 0) {
        printf(" PyTorch/fast %.1fx, PyTorch/no-shortcut %.2fx;", torch / fast, torch / noshort);
    }
    if (plain >= 0 && torch >= 0) {
        printf(" PyTorch/plain %.2fx (the same algorithm)", torch / plain);
    }
    printf("%s\n", extrapolated && (plain >= 0 || torch >= 0) ? " (EXTRAPOLATED)" : "");
}

static void print_summary(const args *a, const summary *sum, const children *ch) {
    printf("\nsummary of this run (chesslens and PyTorch on %ld threads; ratio = time of the "
           "baseline / time of chesslens):\n",
           a->threads);
    printf("  block_every, %3zu tokens, %4zu patched runs, all MEASURED:\n", sum->T, sum->runs);
    print_row(sum->fast_s, sum->noshort_s, sum->plain_s, sum->torch_s, false);
    if (sum->long_T > 0) {
        double lp = sum->long_plain_1_s < 0 ? -1.0 : sum->long_plain_1_s * (double)sum->long_runs;
        double lt = sum->long_torch_1_s < 0 ? -1.0 : sum->long_torch_1_s * (double)sum->long_runs;
        printf("  block_every, %3zu tokens, %4zu patched runs: both fast runs MEASURED; plain and "
               "PyTorch EXTRAPOLATED (median of %d patched forwards x %zu):\n",
               sum->long_T, sum->long_runs, LONG_SAMPLES, sum->long_runs);
        print_row(sum->long_fast_s, sum->long_noshort_s, lp, lt, true);
    }
    printf("  legal-move statistics, %zu games: chesslens %.2f games/s", sum->games,
           (double)sum->games / sum->legal_s);
    if (sum->legal_torch_s > 0) {
        printf(" | PyTorch %.2f games/s; ratio chesslens/PyTorch %.2fx",
               (double)sum->games / sum->legal_torch_s, sum->legal_torch_s / sum->legal_s);
    }
    printf("\n  peak RSS: chesslens %.0f MB, PyTorch child %.0f MB\n", peak_rss_mb(), ch->rss_mb);
    if (a->torch) {
        printf("  PyTorch settings%s: %s\n", ch->differ ? " (of the first child; see above)" : "",
               ch->settings[0] ? ch->settings : "(none reported)");
    }
}

static bool odd_in_range(long t) {
    return t >= 3 && t <= 127 && t % 2 == 1;
}

int main(int argc, char **argv) {
    args a = {15, 127, 32, 0, true, true, NULL};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-plain") == 0) {
            a.plain = false;
        } else if (strcmp(argv[i], "--no-torch") == 0) {
            a.torch = false;
        } else if (i + 1 < argc && strcmp(argv[i], "--tokens") == 0) {
            a.tokens = strtol(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(argv[i], "--long-tokens") == 0) {
            a.long_tokens = strtol(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(argv[i], "--games") == 0) {
            a.games = strtol(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) {
            a.threads = strtol(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(argv[i], "--model") == 0) {
            a.model_dir = argv[++i];
        } else {
            fprintf(stderr, "usage: bench_patch [--tokens T (odd)] [--long-tokens T (odd, 0: "
                            "skip)] [--games N] [--threads N] [--no-plain] [--no-torch] "
                            "[--model DIR]\n");
            return 2;
        }
    }
    if (!odd_in_range(a.tokens) || (a.long_tokens != 0 && !odd_in_range(a.long_tokens)) ||
        a.games < 1 || a.threads < 0) {
        fprintf(stderr, "bench_patch: --tokens and --long-tokens must be odd in 3..127 "
                        "(--long-tokens 0 skips), --games >= 1, --threads >= 0\n");
        return 2;
    }
    bool all_threads = a.threads == 0;
    if (all_threads) {
        a.threads = sysconf(_SC_NPROCESSORS_ONLN);
    }
    a.torch = a.torch && have_torch();
    char err[COMMON_ERR_LEN];
    char tmp[] = "/tmp/chesslens-bench-patch-XXXXXX";
    if (mkdtemp(tmp) == NULL) {
        return die("mkdtemp", "failed");
    }
    const char *dir = a.model_dir;
    if (dir == NULL) {
        model_config cfg = {12, 768, 12, 64, 3072, 128, 128, 77, 1e-5f, 8.0f};
        if (model_write_random(tmp, &cfg, 1, MODEL_DTYPE_F32, err) != 0) {
            return die("model_write_random", err);
        }
        dir = tmp;
    }
    a.model_dir = dir;
    model *m = NULL;
    model_backend *be = NULL;
    model_session *s = NULL;
    if (model_load(&m, dir, NULL, err) != 0 ||
        model_backend_cpu_new(&be, (int)a.threads, err) != 0 ||
        model_session_new(&s, m, be, err) != 0) {
        return die("load", err);
    }
    const model_config *c = model_get_config(m);
    printf("model: %d layers, d_model %d, %d heads, d_mlp %d, vocab %d (%s); threads %ld%s\n",
           c->n_layers, c->d_model, c->n_heads, c->d_mlp, c->d_vocab, dir, a.threads,
           all_threads ? " (all)" : "");
    children ch = {0};
    summary sum = {0};
    sum.plain_s = sum.torch_s = sum.long_plain_1_s = sum.long_torch_1_s = sum.legal_torch_s = -1.0;
    int rc = bench_short(&a, tmp, m, s, &ch, &sum);
    if (rc == 0 && a.long_tokens > 0) {
        rc = bench_long(&a, tmp, m, s, &ch, &sum);
    }
    if (rc == 0) {
        rc = bench_legal(&a, tmp, m, s, &ch, &sum);
    }
    if (rc == 0) {
        print_summary(&a, &sum, &ch);
    }
    model_session_destroy(&s);
    model_backend_destroy(&be);
    model_destroy(&m);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) {
        fprintf(stderr, "bench_patch: could not remove %s\n", tmp);
    }
    return rc;
}
