/*
 * bench_patch: activation patching and dataset statistics at the full chess-GPT shape (12
 * layers, d_model 768, 12 heads, vocabulary 77, context 128; random weights written with
 * model_write_random into a temporary directory).
 *
 * 1. block_every for one game (clean vs the same game with its last token replaced), metric the
 *    normalised logit of a token at the last position: chesslens fast (incremental, packed),
 *    chesslens plain (one full forward per index, TL's algorithm) and, when /usr/bin/python3
 *    has torch, a PyTorch loop doing what TL does (torch_patch_loop.py on tl_reference.py).
 *    All three are timed in this one run and their values compared.
 * 2. Legal-move statistics over random games (decompose_resid + apply_ln + @ W_U + legal/illegal
 *    min/max/mean): chesslens vs the PyTorch reference, in games/s.
 * Ratios and peak RSS (this process and the Python child) are printed.
 *
 *   bench_patch [--tokens T] [--games N] [--threads N] [--no-plain] [--no-torch] [--model DIR]
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

typedef struct args {
    long tokens, games, threads;
    bool plain, torch;
    const char *model_dir; /* the model's directory (a temporary one unless --model) */
} args;

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

/* Peak RSS of the Python children (MB), as they report it themselves: a forked child's own
 * ru_maxrss starts from its parent's pages, so RUSAGE_CHILDREN would overstate it. */
typedef struct child_rss {
    double mb;
} child_rss;

/* Runs cmd, which prints "SECONDS PEAK_RSS_KB"; returns the seconds or -1. */
static double run_child(const char *cmd, child_rss *rss) {
    FILE *p = popen(cmd, "r");
    double secs = -1.0, kb = 0.0;
    if (p == NULL || fscanf(p, "%lf %lf", &secs, &kb) != 2) {
        secs = -1.0;
    }
    if (p != NULL) {
        pclose(p);
    }
    if (kb / 1024.0 > rss->mb) {
        rss->mb = kb / 1024.0;
    }
    return secs;
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

static int bench_patching(const args *a, const char *dir, model *m, model_session *s,
                          child_rss *rss) {
    char err[COMMON_ERR_LEN];
    const model_config *cfg = model_get_config(m);
    size_t T = (size_t)a->tokens, V = (size_t)cfg->d_vocab;
    int32_t *clean = NULL;
    char *uci = NULL;
    if (game_of_length(m, T, 42, &clean, &uci, err) != 0) {
        return die("game", err);
    }
    int32_t *corrupted = malloc(T * sizeof *corrupted);
    const char *last = model_tokenizer_token(model_get_tokenizer(m), clean[T - 1]);
    if (interp_corrupt_token(m, clean, T, T - 1, strcmp(last, "d5") ? "d5" : "h3", corrupted,
                             err) != 0) {
        return die("corrupt", err);
    }
    /* metric token: the square whose last logit the corruption moves most */
    model_request req;
    model_cache *cc = NULL, *rc_ = NULL;
    float *lc = malloc(T * V * sizeof *lc), *lr = malloc(T * V * sizeof *lr);
    model_request_init(&req, s, clean, 1, T);
    model_hook lh = {MODEL_HOOK_LOGITS, -1};
    if (model_run(s, &req, &cc, err) != 0 ||
        model_cache_download_row(cc, lh, 0, lc, T * V, err) != 0) {
        return die("clean run", err);
    }
    model_request_init(&req, s, corrupted, 1, T);
    if (model_run(s, &req, &rc_, err) != 0 ||
        model_cache_download_row(rc_, lh, 0, lr, T * V, err) != 0) {
        return die("corrupted run", err);
    }
    model_cache_destroy(&cc);
    model_cache_destroy(&rc_);
    int32_t token = 9;
    float best = -1.0f;
    for (size_t v = 9; v < 73 && v < V; v++) {
        float d = fabsf(lc[(T - 1) * V + v] - lr[(T - 1) * V + v]);
        if (d > best) {
            best = d;
            token = (int32_t)v;
        }
    }
    free(lc);
    free(lr);
    printf("block_every on one game: %zu tokens, %d layers -> %zu patched runs; metric "
           "normalised logit of '%s'\n",
           T, cfg->n_layers, 3 * (size_t)cfg->n_layers * T,
           model_tokenizer_token(model_get_tokenizer(m), token));
    printf("game: %s\n", uci);
    interp_patch_opts o = interp_patch_opts_default();
    o.metric.kind = INTERP_METRIC_LOGIT;
    o.metric.token = token;
    o.metric.normalize = true;
    interp_patch_result *fast = NULL, *plain = NULL;
    double t0 = common_now_s();
    if (interp_patch_run(s, clean, corrupted, T, &o, &fast, err) != 0) {
        return die("fast patching", err);
    }
    double t_fast = common_now_s() - t0;
    printf("  chesslens fast : %8.3f s  (%zu packed runs, %zu position-layers)\n", t_fast,
           fast->n_forwards, fast->n_positions);
    size_t n = model_shape_numel(&fast->shape);
    if (a->plain) {
        o.plain = true;
        t0 = common_now_s();
        if (interp_patch_run(s, clean, corrupted, T, &o, &plain, err) != 0) {
            return die("plain patching", err);
        }
        double t_plain = common_now_s() - t0;
        double worst = 0.0;
        for (size_t i = 0; i < n; i++) {
            worst = fmax(worst, fabs((double)fast->values[i] - plain->values[i]));
        }
        printf("  chesslens plain: %8.3f s  (%zu full runs, %zu position-layers)\n", t_plain,
               plain->n_forwards, plain->n_positions);
        printf("  fast vs plain  : %.2fx faster, max |diff| of the normalised metric %.2e\n",
               t_plain / t_fast, worst);
        interp_patch_result_destroy(&plain);
    }
    if (a->torch) {
        char tok_path[600], out_path[600], cmd[2400];
        snprintf(tok_path, sizeof tok_path, "%s/tokens.txt", dir);
        snprintf(out_path, sizeof out_path, "%s/torch_values.f32", dir);
        FILE *f = fopen(tok_path, "w");
        for (size_t t = 0; f != NULL && t < T; t++) {
            fprintf(f, "%d%c", clean[t], t + 1 < T ? ' ' : '\n');
        }
        for (size_t t = 0; f != NULL && t < T; t++) {
            fprintf(f, "%d%c", corrupted[t], t + 1 < T ? ' ' : '\n');
        }
        if (f != NULL) {
            fclose(f);
        }
        long threads = a->threads > 0 ? a->threads : sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(cmd, sizeof cmd,
                 PYTHON " %s/bench/interp/torch_patch_loop.py patch %s %s %d %ld %s",
                 CHESSLENS_SOURCE_DIR, a->model_dir, tok_path, token, threads, out_path);
        double t_torch = run_child(cmd, rss);
        if (t_torch > 0) {
            float *tv = malloc(n * sizeof *tv);
            FILE *vf = fopen(out_path, "rb");
            size_t got = vf != NULL ? fread(tv, sizeof *tv, n, vf) : 0;
            if (vf != NULL) {
                fclose(vf);
            }
            double worst = 0.0;
            for (size_t i = 0; i < got; i++) {
                worst = fmax(worst, fabs((double)fast->values[i] - tv[i]));
            }
            printf("  PyTorch TL loop: %8.3f s  (%ld threads)\n", t_torch, threads);
            printf("  fast vs PyTorch: %.2fx faster, max |diff| %.2e over %zu values\n",
                   t_torch / t_fast, worst, got);
            free(tv);
        } else {
            printf("  PyTorch TL loop: failed to run\n");
        }
    }
    interp_patch_result_destroy(&fast);
    free(clean);
    free(corrupted);
    free(uci);
    return 0;
}

static int bench_legal(const args *a, const char *dir, model *m, model_session *s, child_rss *rss) {
    char err[COMMON_ERR_LEN];
    const model_config *cfg = model_get_config(m);
    size_t n_games = (size_t)a->games, V = (size_t)cfg->d_vocab, B = 8;
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
    int32_t *tokens = malloc(B * n_ctx * sizeof *tokens);
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
    double t_c = common_now_s() - t0;
    printf("legal-move statistics over %zu random games (batches of %zu):\n", n_games, B);
    printf("  chesslens      : %8.3f s  %8.2f games/s\n", t_c, (double)n_games / t_c);
    if (a->torch) {
        char cmd[2400];
        long threads = a->threads > 0 ? a->threads : sysconf(_SC_NPROCESSORS_ONLN);
        snprintf(cmd, sizeof cmd, PYTHON " %s/bench/interp/torch_patch_loop.py legal %s %s %ld",
                 CHESSLENS_SOURCE_DIR, a->model_dir, path, threads);
        double t_torch = run_child(cmd, rss);
        if (t_torch > 0) {
            printf("  PyTorch ref    : %8.3f s  %8.2f games/s\n", t_torch,
                   (double)n_games / t_torch);
            printf("  chesslens vs PyTorch: %.2fx games/s\n", t_torch / t_c);
        }
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

int main(int argc, char **argv) {
    args a = {31, 32, 0, true, true, NULL};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-plain") == 0) {
            a.plain = false;
        } else if (strcmp(argv[i], "--no-torch") == 0) {
            a.torch = false;
        } else if (i + 1 < argc && strcmp(argv[i], "--tokens") == 0) {
            a.tokens = strtol(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(argv[i], "--games") == 0) {
            a.games = strtol(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(argv[i], "--threads") == 0) {
            a.threads = strtol(argv[++i], NULL, 10);
        } else if (i + 1 < argc && strcmp(argv[i], "--model") == 0) {
            a.model_dir = argv[++i];
        } else {
            fprintf(stderr, "usage: bench_patch [--tokens T (odd)] [--games N] [--threads N] "
                            "[--no-plain] [--no-torch] [--model DIR]\n");
            return 2;
        }
    }
    if (a.tokens < 3 || a.tokens > 127 || a.tokens % 2 == 0 || a.games < 1) {
        fprintf(stderr, "bench_patch: --tokens must be odd in 3..127, --games >= 1\n");
        return 2;
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
           a.threads == 0 ? " (all)" : "");
    child_rss rss = {0.0};
    int rc = bench_patching(&a, tmp, m, s, &rss);
    if (rc == 0) {
        rc = bench_legal(&a, tmp, m, s, &rss);
    }
    printf("peak RSS: chesslens %.0f MB, PyTorch child %.0f MB\n", peak_rss_mb(), rss.mb);
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
