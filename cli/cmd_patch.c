/*
 * `chesslens patch`: activation patching of a clean game into a corrupted one on this machine,
 * with TransformerLens' meaning (interp_patch_run). The corruption is a token replaced at a
 * position (1.., as `<s>` is 0) or a whole other game of the same token length; the clean game
 * must be legal, the corrupted one need not be. The result is written as a safetensors file: one
 * tensor named after the patch kind, shaped as TL's get_act_patch_<kind> returns it ([3, L, T] for
 * block_every), with the axes, component labels, metric, baselines and the token strings in the
 * metadata. Beside it go the attention-pattern diffs (clean - corrupted at the last query position,
 * [L, H, T]) and the DLA of the diffed MLP neurons toward the metric's token ([L, M]).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "interp/interp.h"

/* JSON array of the token strings of ids [T] (caller frees). */
static char *token_json(const model *m, const int32_t *ids, size_t T) {
    json_t *arr = json_array();
    for (size_t t = 0; arr != NULL && t < T; t++) {
        const char *s = model_tokenizer_token(model_get_tokenizer(m), ids[t]);
        json_array_append_new(arr, json_string(s != NULL ? s : "?"));
    }
    char *text = arr != NULL ? json_dumps(arr, JSON_COMPACT) : NULL;
    json_decref(arr);
    return text;
}

/* Attention-pattern diffs at the last query position, [L, H, T], and, for a metric with a
 * token, the DLA of the diffed neurons at the last position toward it, [L, M]. */
static int extras(model_session *s, const model *m, const int32_t *clean, const int32_t *corrupted,
                  size_t T, const interp_metric *metric, model_st_writer *w, char *err) {
    const model_config *cfg = model_get_config(m);
    interp_acts **ca = NULL, **ra = NULL;
    float *diff = NULL;
    int rc = interp_run_acts(s, clean, NULL, 1, T, true, &ca, err);
    if (rc == 0) {
        rc = interp_run_acts(s, corrupted, NULL, 1, T, true, &ra, err);
    }
    if (rc == 0) {
        rc = interp_pattern_diff(ca[0], ra[0], -1, &diff, err);
    }
    if (rc == 0) {
        model_shape sh = {3, {(size_t)cfg->n_layers, (size_t)cfg->n_heads, T, 0}};
        rc = model_st_writer_add_f32(w, "pattern_diff", MODEL_DTYPE_F32, &sh, diff, err);
        free(diff);
        diff = NULL;
    }
    if (rc == 0 && metric->kind != INTERP_METRIC_LEGAL_MASS) {
        rc = interp_neuron_diff_dla(m, ca[0], ra[0], -1, metric->token, &diff, err);
        if (rc == 0) {
            model_shape sh = {2, {(size_t)cfg->n_layers, (size_t)cfg->d_mlp, 0, 0}};
            rc = model_st_writer_add_f32(w, "neuron_diff_dla", MODEL_DTYPE_F32, &sh, diff, err);
        }
    }
    free(diff);
    if (ca != NULL) {
        interp_acts_destroy(&ca[0]);
    }
    if (ra != NULL) {
        interp_acts_destroy(&ra[0]);
    }
    free(ca);
    free(ra);
    return rc;
}

int cli_patch(int argc, char **argv) {
    const char *dir = NULL, *uci = NULL, *corrupt = NULL, *corrupt_uci = NULL;
    const char *metric_spec = NULL, *out_path = NULL, *kind_name = "block_every";
    bool normalize = false, plain = false;
    long threads = 0, max_positions = 0, keep = 0;
    const cli_opt opts[] = {
        CLI_OPT_MODEL(&dir),
        {.name = "--uci",
         .kind = CLI_STRING,
         .value = &uci,
         .meta = "MOVES",
         .required = true,
         .help = "the clean game (must be legal)"},
        {.name = "--corrupt",
         .kind = CLI_STRING,
         .value = &corrupt,
         .meta = "POS=TOKEN",
         .help = "corrupted run: the clean game with the token at position POS (1.., 0 is\n"
                 "<s>) replaced by TOKEN"},
        {.name = "--corrupt-uci",
         .kind = CLI_STRING,
         .value = &corrupt_uci,
         .meta = "MOVES",
         .help = "corrupted run: another game of the same token length (need not be legal)"},
        {.name = "--metric",
         .kind = CLI_STRING,
         .value = &metric_spec,
         .meta = "SPEC",
         .required = true,
         .help = "logit:SQ | logit_diff:SQ,SQ | logprob:SQ | legal_mass, read at the last\n"
                 "position (legal_mass: probability of the clean game's legal next tokens)"},
        {.name = "--normalize",
         .kind = CLI_FLAG,
         .value = &normalize,
         .help = "report (m - corrupted) / (clean - corrupted)"},
        {.name = "--kind",
         .kind = CLI_STRING,
         .value = &kind_name,
         .meta = "KIND",
         .help = "block_every (default), resid_pre, resid_mid, attn_out, mlp_out,\n"
                 "attn_head_{out,q,k,v,pattern}_all_pos, attn_head_{out,q,k,v,pattern}_by_pos,\n"
                 "attn_head_all_pos_every, attn_head_by_pos_every,\n"
                 "attn_head_pattern_dest_src_pos"},
        {.name = "--plain",
         .kind = CLI_FLAG,
         .value = &plain,
         .help = "one full forward per index (TL's algorithm) instead of the fast exact one"},
        CLI_OPT_TOKENS(&keep, "patch the prompt of the first N tokens (<s> included; may end\n"
                              "inside a move), as a sweep's cut-off N does"),
        CLI_OPT_THREADS(&threads),
        {.name = "--max-positions",
         .kind = CLI_LONG,
         .value = &max_positions,
         .meta = "N",
         .lo = 0,
         .hi = 1L << 24,
         .help = "cap on positions packed into one run (0 = no cap)"},
        CLI_OPT_OUT(&out_path, "safetensors file to write"),
    };
    const cli_spec spec = {
        .command = "patch",
        .synopsis = "--model DIR --uci \"CLEAN\" (--corrupt POS=TOKEN | --corrupt-uci \"MOVES\")\n"
                    "                       --metric SPEC [--normalize] [--kind KIND] [--plain] "
                    "--out FILE.safetensors",
        .about = "Activation patching with TransformerLens' meaning: the clean run's activation\n"
                 "is patched into the corrupted run at every index of --kind and the metric read.\n"
                 "The output holds the result shaped as TL's get_act_patch_<kind> returns it,\n"
                 "the attention-pattern diffs at the last position and the DLA of diffed neurons.",
        .opts = opts,
        .n_opts = CLI_N_OPTS(opts),
    };
    size_t n_args = 0;
    int prc = cli_parse(&spec, argc, argv, NULL, &n_args);
    if (prc != CLI_CONTINUE) {
        return prc;
    }
    if ((corrupt == NULL) == (corrupt_uci == NULL)) {
        return cli_usage_error(&spec, "exactly one of --corrupt / --corrupt-uci is needed");
    }
    int kind = interp_patch_kind_parse(kind_name);
    if (kind < 0) {
        return cli_usage_error(&spec, "unknown --kind '%s'", kind_name);
    }
    if (!cli_output_not_in_model("patch", out_path, dir)) {
        return 1;
    }
    char err[COMMON_ERR_LEN] = "";
    int status = 1;
    model *m = NULL;
    model_backend *be = NULL;
    model_session *s = NULL;
    model_st_writer *w = NULL;
    int32_t *clean = NULL, *corrupted = NULL;
    uint8_t *legal = NULL;
    interp_patch_result *res = NULL;
    char *clean_tokens = NULL, *corr_tokens = NULL;
    size_t T = 0;
    if (model_load(&m, dir, NULL, err) != 0) {
        goto fail;
    }
    size_t T_legal = 0;
    if (interp_tokens_from_uci(m, uci, &clean, &T, err) != 0 ||
        interp_legal_mask(m, uci, &legal, &T_legal, err) != 0 ||
        cli_keep_tokens(keep, &T, err) != 0) {
        cli_error_prefix(err, 0, "--uci");
        goto fail;
    }
    size_t V = (size_t)model_get_config(m)->d_vocab;
    if (corrupt != NULL) {
        corrupted = malloc(T * sizeof *corrupted);
        if (corrupted == NULL) {
            snprintf(err, sizeof err, "out of memory");
            goto fail;
        }
        if (interp_corrupt_parse(m, clean, T, corrupt, corrupted, err) != 0) {
            cli_error_prefix(err, 0, "--corrupt");
            goto fail;
        }
    } else {
        size_t T2 = 0;
        if (interp_tokens_from_uci(m, corrupt_uci, &corrupted, &T2, err) != 0 ||
            cli_keep_tokens(keep, &T2, err) != 0) {
            cli_error_prefix(err, 0, "--corrupt-uci");
            goto fail;
        }
        if (T2 != T) {
            snprintf(err, sizeof err,
                     "games of different lengths: the clean game has %zu tokens, the corrupted "
                     "one %zu",
                     T, T2);
            goto fail;
        }
    }
    interp_patch_opts o = interp_patch_opts_default();
    o.kind = (interp_patch_kind)kind;
    o.plain = plain;
    o.max_packed_positions = (size_t)max_positions;
    if (interp_metric_parse(m, metric_spec, &o.metric, err) != 0) {
        goto fail;
    }
    o.metric.normalize = normalize;
    if (o.metric.kind == INTERP_METRIC_LEGAL_MASS) {
        o.metric.legal = legal + (T - 1) * V;
    }
    if (model_backend_cpu_new(&be, (int)threads, err) != 0 ||
        model_session_new(&s, m, be, err) != 0) {
        goto fail;
    }
    double t0 = common_now_s();
    if (interp_patch_run(s, clean, corrupted, T, &o, &res, err) != 0) {
        goto fail;
    }
    double secs = common_now_s() - t0;
    char num[64];
    clean_tokens = token_json(m, clean, T);
    corr_tokens = token_json(m, corrupted, T);
    if (clean_tokens == NULL || corr_tokens == NULL || model_st_writer_new(&w, err) != 0 ||
        model_st_writer_add_f32(w, interp_patch_kind_name(o.kind), MODEL_DTYPE_F32, &res->shape,
                                res->values, err) != 0 ||
        model_st_writer_set_metadata(w, "kind", interp_patch_kind_name(o.kind), err) != 0 ||
        model_st_writer_set_metadata(w, "axes", res->axes, err) != 0 ||
        model_st_writer_set_metadata(w, "labels", res->labels, err) != 0 ||
        model_st_writer_set_metadata(w, "metric", metric_spec, err) != 0 ||
        model_st_writer_set_metadata(w, "normalize", normalize ? "true" : "false", err) != 0 ||
        model_st_writer_set_metadata(w, "algorithm", plain ? "plain" : "fast", err) != 0 ||
        model_st_writer_set_metadata(w, "clean_uci", uci, err) != 0 ||
        model_st_writer_set_metadata(w, "corruption", corrupt ? corrupt : corrupt_uci, err) != 0 ||
        model_st_writer_set_metadata(w, "clean_tokens", clean_tokens, err) != 0 ||
        model_st_writer_set_metadata(w, "corrupted_tokens", corr_tokens, err) != 0 ||
        model_st_writer_set_metadata(w, "model", dir, err) != 0) {
        goto fail;
    }
    if (extras(s, m, clean, corrupted, T, &o.metric, w, err) != 0) {
        goto fail;
    }
    snprintf(num, sizeof num, "%.9g", res->clean_metric);
    if (model_st_writer_set_metadata(w, "clean_metric", num, err) != 0) {
        goto fail;
    }
    snprintf(num, sizeof num, "%.9g", res->corrupted_metric);
    if (model_st_writer_set_metadata(w, "corrupted_metric", num, err) != 0 ||
        model_st_writer_write(w, out_path, err) != 0) {
        goto fail;
    }
    char shape[64];
    printf("wrote %s: %s %s, clean %.6g, corrupted %.6g, %zu runs, %.3f s\n", out_path,
           interp_patch_kind_name(o.kind), model_shape_format(&res->shape, shape, sizeof shape),
           res->clean_metric, res->corrupted_metric, res->n_forwards, secs);
    status = 0;
fail:
    if (status != 0) {
        fprintf(stderr, "chesslens patch: %s\n", err);
    }
    free(clean_tokens);
    free(corr_tokens);
    model_st_writer_destroy(&w);
    interp_patch_result_destroy(&res);
    free(legal);
    free(clean);
    free(corrupted);
    model_session_destroy(&s);
    model_backend_destroy(&be);
    model_destroy(&m);
    return status;
}
