/*
 * `chesslens patch`: activation patching of a clean game into a corrupted one on this machine,
 * with TransformerLens' meaning (interp_patch_run). The corruption is a token replaced at a
 * position (0 = `<s>`) or a whole other game of the same token length; neither needs to be
 * legal. The result is written as a safetensors file: one tensor named after the patch kind,
 * shaped as TL's get_act_patch_<kind> returns it ([3, L, T] for block_every), with the axes,
 * component labels, metric, baselines and the token strings in the metadata. Beside it go
 * the attention-pattern diffs (clean - corrupted at the last query position, [L, H, T]) and
 * the DLA of the diffed MLP neurons toward the metric's token ([L, M]).
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_int.h"
#include "interp/interp.h"

static void usage(FILE *out) {
    fprintf(out, "usage: chesslens patch --model DIR --uci \"CLEAN\" (--corrupt POS=TOKEN | "
                 "--corrupt-uci \"MOVES\")\n"
                 "                       --metric SPEC [--normalize] [--kind KIND] [--plain]\n"
                 "                       [--threads N] [--max-positions N] --out FILE.safetensors\n"
                 "\n"
                 "  --corrupt POS=TOKEN   replace the token at position POS (0 = <s>) by TOKEN\n"
                 "  --corrupt-uci MOVES   corrupted run on another game of the same token length\n"
                 "  --metric SPEC         logit:SQ | logit_diff:SQ,SQ | logprob:SQ | legal_mass\n"
                 "                        (read at the last position; legal_mass sums the\n"
                 "                        probabilities of the clean game's legal next tokens)\n"
                 "  --normalize           report (m - corrupted) / (clean - corrupted)\n"
                 "  --kind KIND           block_every (default), resid_pre, resid_mid, attn_out,\n"
                 "                        mlp_out, attn_head_{out,q,k,v,pattern}_all_pos,\n"
                 "                        attn_head_{out,q,k,v,pattern}_by_pos,\n"
                 "                        attn_head_all_pos_every, attn_head_by_pos_every,\n"
                 "                        attn_head_pattern_dest_src_pos\n"
                 "  --plain               one full forward per index (TL's algorithm) instead of\n"
                 "                        the fast exact one\n");
}

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
    long threads = 0, max_positions = 0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i];
        if (strcmp(f, "--help") == 0 || strcmp(f, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(f, "--normalize") == 0) {
            normalize = true;
            continue;
        }
        if (strcmp(f, "--plain") == 0) {
            plain = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "chesslens patch: %s needs a value\n", f);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (strcmp(f, "--model") == 0) {
            dir = v;
        } else if (strcmp(f, "--uci") == 0) {
            uci = v;
        } else if (strcmp(f, "--corrupt") == 0) {
            corrupt = v;
        } else if (strcmp(f, "--corrupt-uci") == 0) {
            corrupt_uci = v;
        } else if (strcmp(f, "--metric") == 0) {
            metric_spec = v;
        } else if (strcmp(f, "--kind") == 0) {
            kind_name = v;
        } else if (strcmp(f, "--out") == 0) {
            out_path = v;
        } else if (strcmp(f, "--threads") == 0) {
            if (cli_parse_long("patch", f, v, 0, 1024, &threads) != 0) {
                return 2;
            }
        } else if (strcmp(f, "--max-positions") == 0) {
            if (cli_parse_long("patch", f, v, 0, 1L << 24, &max_positions) != 0) {
                return 2;
            }
        } else {
            fprintf(stderr, "chesslens patch: unknown option '%s'\n", f);
            usage(stderr);
            return 2;
        }
    }
    if (dir == NULL || uci == NULL || metric_spec == NULL || out_path == NULL ||
        (corrupt == NULL) == (corrupt_uci == NULL)) {
        fprintf(stderr, "chesslens patch: --model, --uci, --metric, --out and exactly one of "
                        "--corrupt / --corrupt-uci are required\n");
        usage(stderr);
        return 2;
    }
    int kind = interp_patch_kind_parse(kind_name);
    if (kind < 0) {
        fprintf(stderr, "chesslens patch: unknown --kind '%s'\n", kind_name);
        return 2;
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
    if (model_load(&m, dir, NULL, err) != 0 ||
        interp_tokens_from_uci(m, uci, &clean, &T, err) != 0) {
        goto fail;
    }
    size_t V = (size_t)model_get_config(m)->d_vocab;
    if (corrupt != NULL) {
        const char *eq = strchr(corrupt, '=');
        char *end = NULL;
        long pos = eq != NULL ? strtol(corrupt, &end, 10) : -1;
        if (eq == NULL || end != eq || pos < 0) {
            snprintf(err, sizeof err, "--corrupt '%s': want POS=TOKEN, e.g. 27=d5", corrupt);
            goto fail;
        }
        corrupted = malloc(T * sizeof *corrupted);
        if (corrupted == NULL) {
            snprintf(err, sizeof err, "out of memory");
            goto fail;
        }
        if (interp_corrupt_token(m, clean, T, (size_t)pos, eq + 1, corrupted, err) != 0) {
            goto fail;
        }
    } else {
        size_t T2 = 0;
        if (interp_tokens_from_uci(m, corrupt_uci, &corrupted, &T2, err) != 0) {
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
        size_t TL = 0;
        if (interp_legal_mask(m, uci, &legal, &TL, err) != 0) {
            snprintf(err + strlen(err), sizeof err - strlen(err),
                     " (legal_mass needs a legal clean game)");
            goto fail;
        }
        o.metric.legal = legal + (TL - 1) * V;
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
