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

static int info(int argc, char **argv) {
    bool no_processing = false;
    const cli_opt opts[] = {
        {.name = "--no-processing",
         .kind = CLI_FLAG,
         .value = &no_processing,
         .help = "load the weights as they are (from_pretrained_no_processing)"},
    };
    const cli_spec spec = {.command = "model info",
                           .synopsis = "DIR [--no-processing]",
                           .about = "Shape, parameters, processing, hook points and vocabulary of "
                                    "a model directory\nas chesslens loads it.",
                           .min_args = 1,
                           .max_args = 1,
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    char *args[1];
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, args, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    const char *dir = args[0];
    model_processing proc = no_processing ? model_processing_none() : model_processing_default();
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
    long layers = 0, d = 0, heads = 0, ctx = 0, vocab = 0, seed = 0;
    const char *out = NULL;
    int dtype = 0;
    static const char *const dtypes[] = {"f32", "f16", "bf16", NULL};
    static const model_dtype dtype_values[] = {MODEL_DTYPE_F32, MODEL_DTYPE_F16, MODEL_DTYPE_BF16};
    const cli_opt opts[] = {
        {.name = "--layers",
         .kind = CLI_LONG,
         .value = &layers,
         .meta = "L",
         .lo = 1,
         .hi = 1024,
         .required = true,
         .help = "transformer blocks"},
        {.name = "--d-model",
         .kind = CLI_LONG,
         .value = &d,
         .meta = "D",
         .lo = 1,
         .hi = 1 << 16,
         .required = true,
         .help = "residual width (d_mlp is 4 D)"},
        {.name = "--heads",
         .kind = CLI_LONG,
         .value = &heads,
         .meta = "H",
         .lo = 1,
         .hi = 1024,
         .required = true,
         .help = "attention heads (D must be a multiple)"},
        {.name = "--ctx",
         .kind = CLI_LONG,
         .value = &ctx,
         .meta = "N",
         .lo = 1,
         .hi = 1 << 16,
         .required = true,
         .help = "context length"},
        {.name = "--vocab",
         .kind = CLI_LONG,
         .value = &vocab,
         .meta = "V",
         .lo = 77,
         .hi = 1 << 20,
         .required = true,
         .help = "vocabulary: the 77 chess tokens, then <extra_N> fillers"},
        {.name = "--seed",
         .kind = CLI_LONG,
         .value = &seed,
         .meta = "S",
         .lo = 0,
         .hi = 0x7fffffffL,
         .required = true,
         .help = "weights depend only on the seed"},
        {.name = "--dtype",
         .kind = CLI_CHOICE,
         .value = &dtype,
         .meta = "T",
         .choices = dtypes,
         .help = "stored weight type (default f32)"},
        {.name = "--out",
         .kind = CLI_STRING,
         .value = &out,
         .meta = "DIR",
         .required = true,
         .help = "directory to write (config.json, model.safetensors, tokenizer.json), moved\n"
                 "into place only when complete; an older model there is replaced"},
    };
    const cli_spec spec = {.command = "model random",
                           .synopsis =
                               "--layers L --d-model D --heads H --ctx N --vocab V --seed S "
                               "[--dtype f32|f16|bf16] --out DIR",
                           .about = "Writes a random-weight GPT-2 model in the HuggingFace layout.",
                           .opts = opts,
                           .n_opts = CLI_N_OPTS(opts)};
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    model_dtype dt = dtype_values[dtype];
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
    static const cli_subcommand subs[] = {
        {"info", info, "shape, parameters, processing and vocabulary of a model directory"},
        {"random", random_model, "write a random-weight model of any shape"},
    };
    return cli_dispatch("model", subs, CLI_N_OPTS(subs), argc, argv);
}
