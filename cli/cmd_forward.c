/*
 * `chesslens forward`: run a model on one token sequence and save the logits and the requested
 * TransformerLens hooks as a safetensors file (batch dimension dropped: logits [T, V],
 * blocks.0.attn.hook_pattern [H, T, T], ...). The input need not be a legal game; text that
 * does not tokenize with the model's vocabulary is an error naming the piece; --check-legal
 * refuses a game the rules do not allow.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "interp/interp.h"
#include "model/model.h"

int cli_forward(int argc, char **argv) {
    const char *dir = NULL, *uci = NULL, *hooks_spec = NULL, *out_path = NULL;
    bool no_processing = false, check_legal = false;
    long threads = 0, keep = 0;
    const cli_opt opts[] = {
        CLI_OPT_MODEL(&dir),
        {.name = "--uci",
         .kind = CLI_STRING,
         .value = &uci,
         .meta = "MOVES",
         .required = true,
         .allow_empty = true,
         .help = "the game, UCI moves separated by spaces (read after <s>); legality is not\n"
                 "checked, so corrupted games run too"},
        {.name = "--check-legal",
         .kind = CLI_FLAG,
         .value = &check_legal,
         .help = "refuse a game that is not legal from the initial position"},
        {.name = "--hooks",
         .kind = CLI_STRING,
         .value = &hooks_spec,
         .meta = "NAMES",
         .help = "TransformerLens hook names to save, comma-separated, or all"},
        {.name = "--no-processing",
         .kind = CLI_FLAG,
         .value = &no_processing,
         .help = "load the weights as they are (from_pretrained_no_processing)"},
        CLI_OPT_TOKENS(&keep, "run only the first N tokens (<s> included; may end inside a "
                              "move)"),
        CLI_OPT_THREADS(&threads),
        CLI_OPT_OUT(&out_path, "safetensors file to write: logits [T, V], tokens [T], the hooks"),
    };
    const cli_spec spec = {
        .command = "forward",
        .synopsis = "--model DIR --uci \"MOVES\" [--hooks NAME,...|all] --out FILE.safetensors",
        .about = "Runs the model on one game and saves the logits and the requested hooks with\n"
                 "TransformerLens' names and shapes (batch dimension dropped), then prints the\n"
                 "top next-token predictions after the last token.",
        .opts = opts,
        .n_opts = CLI_N_OPTS(opts),
    };
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if (!cli_output_not_in_model("forward", out_path, dir)) {
        return 1;
    }
    model_processing proc = no_processing ? model_processing_none() : model_processing_default();
    char err[COMMON_ERR_LEN] = "";
    int status = 1;
    model *m = NULL;
    model_backend *be = NULL;
    model_session *s = NULL;
    model_cache *cache = NULL;
    model_st_writer *w = NULL;
    model_hook *hooks = NULL;
    size_t n_hooks = 0, n_tok = 0;
    int top[5] = {0};
    int32_t *ids = NULL;
    float *buf = NULL;
    json_t *inputs = NULL;
    char *inputs_text = NULL;
    if (model_load(&m, dir, &proc, err) != 0) {
        goto fail;
    }
    const model_config *c = model_get_config(m);
    size_t cap = (size_t)c->n_ctx;
    ids = calloc(cap, sizeof *ids);
    if (!ids) {
        snprintf(err, sizeof err, "out of memory");
        goto fail;
    }
    if (model_tokenizer_encode(model_get_tokenizer(m), uci, true, ids, NULL, cap, &n_tok, err) !=
        0) {
        if (n_tok > cap) {
            snprintf(err, sizeof err, "%zu tokens exceed the model's context of %zu", n_tok, cap);
        }
        goto fail;
    }
    if (cli_keep_tokens(keep, &n_tok, err) != 0) {
        goto fail;
    }
    if (check_legal) {
        uint8_t *mask = NULL;
        size_t T_legal = 0;
        int lrc = interp_legal_mask(m, uci, &mask, &T_legal, err);
        free(mask);
        if (lrc != 0) {
            goto fail;
        }
    }
    if (hooks_spec && model_hook_list_parse(hooks_spec, c, &hooks, &n_hooks, err) != 0) {
        cli_error_prefix(err, 0, "--hooks");
        goto fail;
    }
    if (model_backend_cpu_new(&be, (int)threads, err) != 0 ||
        model_session_new(&s, m, be, err) != 0) {
        goto fail;
    }
    model_request req;
    model_request_init(&req, s, ids, 1, n_tok);
    req.hooks = hooks;
    req.n_hooks = n_hooks;
    if (model_run(s, &req, &cache, err) != 0 || model_st_writer_new(&w, err) != 0) {
        goto fail;
    }
    size_t total = model_hook_count(c);
    for (size_t i = 0; i < total; i++) {
        model_hook h = model_hook_at(c, i);
        model_shape shape;
        if (!model_cache_shape(cache, h, &shape)) {
            continue;
        }
        size_t n = model_shape_numel(&shape);
        float *grown = realloc(buf, n * sizeof *buf);
        if (!grown) {
            snprintf(err, sizeof err, "out of memory");
            goto fail;
        }
        buf = grown;
        if (model_cache_download_row(cache, h, 0, buf, n, err) != 0) {
            goto fail;
        }
        model_shape row = {shape.ndim - 1, {shape.dims[1], shape.dims[2], shape.dims[3], 0}};
        char name[96];
        if (model_st_writer_add_f32(w, model_hook_name(h, name, sizeof name), MODEL_DTYPE_F32, &row,
                                    buf, err) != 0) {
            goto fail;
        }
    }
    model_shape ts = {1, {n_tok, 0, 0, 0}};
    inputs = json_pack("[s]", uci);
    inputs_text = inputs ? json_dumps(inputs, JSON_COMPACT) : NULL;
    if (model_st_writer_add(w, "tokens", MODEL_DTYPE_I32, &ts, ids, err) != 0 || !inputs_text ||
        model_st_writer_set_metadata(w, "inputs", inputs_text, err) != 0 ||
        model_st_writer_set_metadata(w, "model", dir, err) != 0 ||
        model_st_writer_set_metadata(w, "processing",
                                     proc.fold_ln ? "fold_ln,center_writing_weights,"
                                                    "center_unembed,fold_value_biases"
                                                  : "none",
                                     err) != 0 ||
        model_st_writer_write(w, out_path, err) != 0) {
        goto fail;
    }
    printf("wrote %s: %zu tokens, logits [%zu, %d], %zu hooks\n", out_path, n_tok, n_tok,
           c->d_vocab, n_hooks);
    /* the model's top next-token predictions after the last input token */
    model_hook lg = {MODEL_HOOK_LOGITS, -1};
    float *logits = malloc(n_tok * (size_t)c->d_vocab * sizeof *logits);
    if (logits &&
        model_cache_download_row(cache, lg, 0, logits, n_tok * (size_t)c->d_vocab, err) == 0) {
        const float *last = logits + (n_tok - 1) * (size_t)c->d_vocab;
        printf("top next tokens:");
        for (int k = 0; k < 5 && k < c->d_vocab; k++) {
            int best = -1;
            for (int v = 0; v < c->d_vocab; v++) {
                bool taken = false;
                for (int j = 0; j < k; j++) {
                    taken = taken || top[j] == v;
                }
                if (!taken && (best < 0 || last[v] > last[best])) {
                    best = v;
                }
            }
            top[k] = best;
            const char *tok = model_tokenizer_token(model_get_tokenizer(m), best);
            printf(" %s (%.2f)", tok ? tok : "?", (double)last[best]);
        }
        printf("\n");
    }
    free(logits);
    status = 0;
fail:
    if (status) {
        fprintf(stderr, "chesslens forward: %s\n", err);
    }
    free(inputs_text);
    json_decref(inputs);
    free(buf);
    free(ids);
    free(hooks);
    model_st_writer_destroy(&w);
    model_cache_destroy(&cache);
    model_session_destroy(&s);
    model_backend_destroy(&be);
    model_destroy(&m);
    return status;
}
