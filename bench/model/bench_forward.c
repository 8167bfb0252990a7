/*
 * bench_forward: forward-pass throughput of the CPU backend on the full-size chess GPT shape
 * (12 layers, d_model 768, 12 heads, d_mlp 3072, vocab 77, context 128; random weights,
 * generated on first use), batch 8 x 127 tokens, next to two baselines measured in the same
 * run: the PyTorch reference implementation of the TL forward (tests/reference, cache=False,
 * same threads) when /usr/bin/python3 has torch, and OpenBLAS' own sgemm rate on the largest
 * product of the forward. Prints tokens/s, the ratio to PyTorch, achieved GFLOP/s as a fraction
 * of the sgemm rate, and peak RSS. The PyTorch baseline runs as fast as its user would run it
 * (bench/torch_settings.py: OMP_WAIT_POLICY=PASSIVE and every pool at the same thread count,
 * weights prepared once, torch.inference_mode); the settings it ran with are printed.
 *
 * Each figure is the best of `iters` repetitions, and the forward and sgemm repetitions
 * alternate, so both see the same background load of a shared machine.
 *
 * usage: bench_forward [--model DIR] [--threads N] [--batch B] [--tokens T] [--iters I]
 *                      [--torch 0|1]
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "model/model.h"

/* GFLOP/s of `reps` back-to-back sgemm calls [m,k] x [k,n] on the given operands. */
static double sgemm_gflops(const float *a, const float *b, float *c, size_t m, size_t n, size_t k,
                           int reps) {
    double t0 = common_now_s();
    for (int r = 0; r < reps; r++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k,
                    1.0f, a, (blasint)k, b, (blasint)n, 0.0f, c, (blasint)n);
    }
    double dt = common_now_s() - t0;
    return 2.0 * (double)m * (double)n * (double)k * reps / dt / 1e9;
}

/* Matrix-product FLOPs of one forward as chesslens computes it (attention over all keys up to
 * each row's length, as the GEMMs do). */
static double forward_flops(const model_config *c, size_t B, size_t T) {
    double N = (double)(B * T), D = c->d_model, M = c->d_mlp, V = c->d_vocab;
    double per_layer = N * (2 * 4 * D * D + 2 * 2 * D * M) + 2.0 * 2.0 * (double)B * T * T * D;
    return c->n_layers * per_layer + N * 2 * D * V;
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int threads = 2, iters = 3, with_torch = 1;
    size_t B = 8, T = 127;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--model") == 0) {
            dir = argv[i + 1];
        } else if (strcmp(argv[i], "--threads") == 0) {
            threads = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--batch") == 0) {
            B = (size_t)atol(argv[i + 1]);
        } else if (strcmp(argv[i], "--tokens") == 0) {
            T = (size_t)atol(argv[i + 1]);
        } else if (strcmp(argv[i], "--torch") == 0) {
            with_torch = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--iters") == 0) {
            iters = atoi(argv[i + 1]);
        } else {
            fprintf(stderr,
                    "usage: %s [--model DIR] [--threads N] [--batch B] [--tokens T] "
                    "[--iters I] [--torch 0|1]\n",
                    argv[0]);
            return 2;
        }
    }
    char err[COMMON_ERR_LEN], gen[1024];
    if (!dir) {
        snprintf(gen, sizeof gen, "%s/bench-model-full", CHESSLENS_BINARY_DIR);
        char cfg_path[1100];
        snprintf(cfg_path, sizeof cfg_path, "%s/model.safetensors", gen);
        struct stat st;
        if (stat(cfg_path, &st) != 0) {
            model_config c = {0};
            c.n_layers = 12;
            c.d_model = 768;
            c.n_heads = 12;
            c.n_ctx = 128;
            c.d_vocab = 77;
            printf("generating the full-size random model in %s ...\n", gen);
            if (model_write_random(gen, &c, 1234, MODEL_DTYPE_F32, err) != 0) {
                fprintf(stderr, "bench_forward: %s\n", err);
                return 1;
            }
        }
        dir = gen;
    }
    model *m = NULL;
    model_backend *be = NULL;
    model_session *s = NULL;
    if (model_load(&m, dir, NULL, err) || model_backend_cpu_new(&be, threads, err) ||
        model_session_new(&s, m, be, err)) {
        fprintf(stderr, "bench_forward: %s\n", err);
        return 1;
    }
    const model_config *c = model_get_config(m);
    int32_t *tok = malloc(B * T * sizeof *tok);
    unsigned seed = 99;
    for (size_t i = 0; i < B * T; i++) {
        seed = seed * 1103515245u + 12345u;
        tok[i] = i % T == 0 ? 1 : (int32_t)(3 + (seed >> 16) % 74);
    }
    model_request req;
    model_request_init(&req, s, tok, B, T);
    model_cache *cache = NULL;
    if (model_run(s, &req, &cache, err)) { /* warm-up */
        fprintf(stderr, "bench_forward: %s\n", err);
        return 1;
    }
    model_cache_destroy(&cache);
    /* the largest product of the forward, [B*T, D] x [D, M], as the sgemm reference */
    size_t gm = B * T, gn = (size_t)c->d_mlp, gk = (size_t)c->d_model;
    float *ga = malloc(gm * gk * sizeof *ga), *gb = malloc(gk * gn * sizeof *gb),
          *gc = malloc(gm * gn * sizeof *gc);
    for (size_t i = 0; i < gm * gk; i++) {
        ga[i] = (float)(i % 17) * 0.01f;
    }
    for (size_t i = 0; i < gk * gn; i++) {
        gb[i] = (float)(i % 13) * 0.01f;
    }
    double flops = forward_flops(c, B, T);
    int reps = (int)(flops / (2.0 * (double)gm * (double)gn * (double)gk)) + 1;
    double best = 1e30, peak_sgemm = 0.0;
    for (int i = 0; i < iters; i++) {
        double t0 = common_now_s();
        if (model_run(s, &req, &cache, err)) {
            fprintf(stderr, "bench_forward: %s\n", err);
            return 1;
        }
        double dt = common_now_s() - t0;
        best = dt < best ? dt : best;
        model_cache_destroy(&cache);
        double g = sgemm_gflops(ga, gb, gc, gm, gn, gk, reps);
        peak_sgemm = g > peak_sgemm ? g : peak_sgemm;
    }
    free(ga);
    free(gb);
    free(gc);
    double tps = (double)(B * T) / best;
    double gflops = flops / best / 1e9;

    /* Memory of a cached run: one game, every hook point, workspace allocated inside the run
     * (released first), against the bytes of the tensors the run returns. */
    size_t n_hooks = model_hook_count(c);
    model_hook *all = malloc(n_hooks * sizeof *all);
    for (size_t i = 0; i < n_hooks; i++) {
        all[i] = model_hook_at(c, i);
    }
    model_request one;
    model_request_init(&one, s, tok, 1, T);
    one.hooks = all;
    one.n_hooks = n_hooks;
    model_session_release_workspace(s);
    size_t mem_before = 0, mem_peak = 0;
    be->reset_peak(be);
    be->mem_stats(be, &mem_before, NULL);
    if (model_run(s, &one, &cache, err)) {
        fprintf(stderr, "bench_forward: %s\n", err);
        return 1;
    }
    be->mem_stats(be, NULL, &mem_peak);
    size_t returned = model_cache_bytes(cache);
    model_cache_destroy(&cache);
    free(all);

    double torch_tps = 0.0;
    char cmd[4096], torch_settings[2048] = "";
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import torch' 2>/dev/null && /usr/bin/python3 "
             "%s/bench/model/torch_baseline.py %s %zu %zu %d %d 1",
             CHESSLENS_SOURCE_DIR, dir, B, T, threads, iters);
    FILE *p = with_torch ? popen(cmd, "r") : NULL;
    if (p) {
        char line[2048];
        while (fgets(line, sizeof line, p)) {
            if (strncmp(line, "settings ", 9) == 0) {
                snprintf(torch_settings, sizeof torch_settings, "%s", line + 9);
                torch_settings[strcspn(torch_settings, "\n")] = '\0';
            }
            sscanf(line, "tokens_per_s %lf", &torch_tps);
        }
        pclose(p);
    }
    struct rusage ru, ruc;
    getrusage(RUSAGE_SELF, &ru);
    getrusage(RUSAGE_CHILDREN, &ruc);

    printf("model: %s (L=%d D=%d H=%d M=%d V=%d), batch %zu x %zu tokens, %d threads, %d iters\n",
           dir, c->n_layers, c->d_model, c->n_heads, c->d_mlp, c->d_vocab, B, T, threads, iters);
    printf("chesslens tokens/s:  %.1f  (%.3f s per forward, best of %d)\n", tps, best, iters);
    if (torch_tps > 0) {
        printf("pytorch tokens/s:    %.1f\n", torch_tps);
        printf("pytorch settings:    %s\n", torch_settings);
        printf("ratio chesslens/pytorch: %.2fx\n", tps / torch_tps);
    } else {
        printf("pytorch tokens/s:    %s\n",
               with_torch ? "unavailable (no torch in /usr/bin/python3)" : "skipped (--torch 0)");
    }
    printf("achieved GFLOP/s:    %.1f of sgemm %.1f GFLOP/s ([%zu x %d] x [%d x %d]) = %.0f%%\n",
           gflops, peak_sgemm, B * T, c->d_model, c->d_model, c->d_mlp,
           100.0 * gflops / peak_sgemm);
    printf("cached run, 1 game x %zu tokens, all %zu hooks: %.1f MiB returned, run peak %.1f MiB "
           "(%.3fx)\n",
           T, n_hooks, returned / 1048576.0, (double)(mem_peak - mem_before) / 1048576.0,
           (double)(mem_peak - mem_before) / (double)returned);
    printf("peak RSS: chesslens %.1f MiB, pytorch child %.1f MiB\n", ru.ru_maxrss / 1024.0,
           ruc.ru_maxrss / 1024.0);
    free(tok);
    model_session_destroy(&s);
    model_backend_destroy(&be);
    model_destroy(&m);
    return 0;
}
