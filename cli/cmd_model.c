/*
 * `chesslens model info DIR` and `chesslens model random ...`: inspect a HuggingFace GPT-2
 * model directory as chesslens loads it, and write random-weight models of any shape (the
 * full-size benchmark model is generated this way rather than committed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "model/model.h"

static void usage(FILE *out) {
    fprintf(out, "usage: chesslens model info DIR [--no-processing]\n"
                 "       chesslens model random --layers L --d-model D --heads H --ctx N "
                 "--vocab V --seed S [--dtype f32|f16|bf16] --out DIR\n");
}

static int info(int argc, char **argv) {
    const char *dir = NULL;
    model_processing proc = model_processing_default();
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--no-processing") == 0) {
            proc = model_processing_none();
        } else if (!dir && argv[i][0] != '-') {
            dir = argv[i];
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    char err[COMMON_ERR_LEN];
    model *m = NULL;
    if (model_load(&m, dir, &proc, err) != 0) {
        fprintf(stderr, "chesslens model info: %s\n", err);
        return 1;
    }
    const model_config *c = model_get_config(m);
    const model_processing *p = model_get_processing(m);
    const model_tokenizer *t = model_get_tokenizer(m);
    printf("model: %s\n", dir);
    printf("shape: n_layers=%d d_model=%d n_heads=%d d_head=%d d_mlp=%d n_ctx=%d d_vocab=%d\n",
           c->n_layers, c->d_model, c->n_heads, c->d_head, c->d_mlp, c->n_ctx, c->d_vocab);
    printf("layer_norm_epsilon: %g, attn_scale: %g, act_fn: gelu_new\n", (double)c->eps,
           (double)c->attn_scale);
    printf("parameters: %zu (%zu tensors after processing)\n", model_param_numel(m),
           model_param_count(m));
    printf("processing: fold_ln=%d center_writing_weights=%d center_unembed=%d "
           "fold_value_biases=%d\n",
           p->fold_ln, p->center_writing_weights, p->center_unembed, p->fold_value_biases);
    printf("hook points: %zu\n", model_hook_count(c));
    printf("vocabulary: %zu ids, bos=%d pad=%d:", model_tokenizer_vocab_size(t),
           (int)model_tokenizer_bos(t), (int)model_tokenizer_pad(t));
    for (size_t i = 0; i < model_tokenizer_vocab_size(t); i++) {
        const char *s = model_tokenizer_token(t, (int32_t)i);
        printf(" %s", s ? s : "(unused)");
    }
    printf("\n");
    model_destroy(&m);
    return 0;
}

static int random_model(int argc, char **argv) {
    long layers = -1, d = -1, heads = -1, ctx = -1, vocab = -1, seed = -1;
    const char *out = NULL;
    model_dtype dt = MODEL_DTYPE_F32;
    for (int i = 0; i < argc; i++) {
        const char *f = argv[i];
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (strcmp(f, "--layers") == 0) {
            rc = cli_parse_long("model random", f, v, 1, 1024, &layers);
        } else if (strcmp(f, "--d-model") == 0) {
            rc = cli_parse_long("model random", f, v, 1, 1 << 16, &d);
        } else if (strcmp(f, "--heads") == 0) {
            rc = cli_parse_long("model random", f, v, 1, 1024, &heads);
        } else if (strcmp(f, "--ctx") == 0) {
            rc = cli_parse_long("model random", f, v, 1, 1 << 16, &ctx);
        } else if (strcmp(f, "--vocab") == 0) {
            rc = cli_parse_long("model random", f, v, 1, 1 << 20, &vocab);
        } else if (strcmp(f, "--seed") == 0) {
            rc = cli_parse_long("model random", f, v, 0, 0x7fffffffL, &seed);
        } else if (strcmp(f, "--out") == 0) {
            out = v;
        } else if (strcmp(f, "--dtype") == 0) {
            if (strcmp(v, "f32") == 0) {
                dt = MODEL_DTYPE_F32;
            } else if (strcmp(v, "f16") == 0) {
                dt = MODEL_DTYPE_F16;
            } else if (strcmp(v, "bf16") == 0) {
                dt = MODEL_DTYPE_BF16;
            } else {
                fprintf(stderr, "chesslens model random: --dtype is f32, f16 or bf16\n");
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
        if (rc) {
            return 2;
        }
    }
    if (layers < 0 || d < 0 || heads < 0 || ctx < 0 || vocab < 0 || seed < 0 || !out) {
        usage(stderr);
        return 2;
    }
    model_config c = {0};
    c.n_layers = (int)layers;
    c.d_model = (int)d;
    c.n_heads = (int)heads;
    c.n_ctx = (int)ctx;
    c.d_vocab = (int)vocab;
    char err[COMMON_ERR_LEN];
    if (model_write_random(out, &c, (uint64_t)seed, dt, err) != 0) {
        fprintf(stderr, "chesslens model random: %s\n", err);
        return 1;
    }
    printf("wrote %s (layers %ld, d_model %ld, heads %ld, d_mlp %ld, ctx %ld, vocab %ld, %s)\n",
           out, layers, d, heads, 4 * d, ctx, vocab, model_dtype_name(dt));
    return 0;
}

int cli_model(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "info") == 0) {
        return info(argc - 2, argv + 2);
    }
    if (strcmp(argv[1], "random") == 0) {
        return random_model(argc - 2, argv + 2);
    }
    fprintf(stderr, "chesslens model: unknown subcommand '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
