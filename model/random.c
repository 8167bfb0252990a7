/*
 * Random-weight GPT-2 models in the HuggingFace layout, for tests and benchmarks of any shape
 * (the full-size benchmark model is hundreds of MB and is generated, never committed).
 *
 * The files are what a HF GPT-2 checkpoint looks like: config.json with both n_ctx and
 * n_positions, model.safetensors with "transformer."-prefixed names in Conv1D [in, out] layouts
 * and no lm_head (tied to wte), and a tokenizer.json for the UCI chess vocabulary. Weights come
 * from a splitmix64 stream through Box-Muller, so a seed always gives the same model.
 */
#include "model/model_int.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const model_chess_vocab[77] = {
    "<pad>", "<s>", "</s>", "P",  "N",  "R",  "B",  "Q",  "K",  "c2", "c4", "e7", "e5",
    "g2",    "g3",  "b8",   "c6", "f1", "g8", "f6", "b1", "c3", "f8", "b4", "d5", "e8",
    "e2",    "e3",  "e4",   "a2", "a3", "d6", "d8", "a1", "e6", "b2", "b3", "c7", "d2",
    "d3",    "f7",  "f5",   "a7", "a5", "g1", "d4", "g4", "c5", "e1", "d7", "d1", "h8",
    "c1",    "a4",  "h2",   "h3", "a8", "f4", "g7", "g5", "b6", "b7", "c8", "h7", "h4",
    "f3",    "h5",  "h1",   "f2", "h6", "g6", "b5", "a6", "q",  "r",  "b",  "n"};

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static mode_t current_umask(void) {
    mode_t m = umask(0);
    umask(m);
    return m;
}

/* Standard normal via Box-Muller (one value per call; simple beats fast here). */
static float rng_normal(rng *r) {
    double u1 = ((double)(rng_next(r) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
    double u2 = (double)(rng_next(r) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* Writes root (consumed) as indented JSON, whole or not at all. */
static int write_json(const char *path, json_t *root, char *err) {
    if (!root) {
        return common_fail(err, COMMON_ERR_NOMEM, "write %s: out of memory", path);
    }
    common_outfile *f = NULL;
    int rc = common_outfile_new(&f, path, err);
    if (rc == 0 &&
        json_dumpf(root, common_outfile_stream(f), JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "write %s: %s", path, strerror(errno));
    }
    if (rc == 0) {
        rc = common_outfile_commit(&f, err);
    }
    common_outfile_destroy(&f);
    json_decref(root);
    return rc;
}

int model_write_chess_tokenizer(const char *path, size_t size, char *err) {
    if (size < 77) {
        return common_fail(err, COMMON_ERR_INVALID, "tokenizer: vocabulary size %zu < 77", size);
    }
    json_t *vocab = json_object();
    json_t *added = json_array();
    char extra[32];
    for (size_t i = 0; i < size; i++) {
        const char *tok = model_chess_vocab[i < 77 ? i : 0];
        if (i >= 77) {
            snprintf(extra, sizeof extra, "<extra_%zu>", i - 77);
            tok = extra;
        }
        json_object_set_new(vocab, tok, json_integer((json_int_t)i));
        if (i < 3) {
            json_array_append_new(added, json_pack("{s:I, s:s, s:b, s:b, s:b, s:b, s:b}", "id",
                                                   (json_int_t)i, "content", tok, "single_word", 0,
                                                   "lstrip", 0, "rstrip", 0, "normalized", 0,
                                                   "special", 1));
        }
    }
    json_t *pre = json_pack("{s:s, s:[{s:s}, {s:s, s:{s:s}, s:s, s:b}]}", "type", "Sequence",
                            "pretokenizers", "type", "Whitespace", "type", "Split", "pattern",
                            "Regex", "\\d", "behavior", "MergedWithPrevious", "invert", 0);
    json_t *post =
        json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}], s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, "
                  "{s:{s:s, s:i}}], s:{s:{s:s, s:[i], s:[s]}}}",
                  "type", "TemplateProcessing", "single", "SpecialToken", "id", "<s>", "type_id", 0,
                  "Sequence", "id", "A", "type_id", 0, "pair", "SpecialToken", "id", "<s>",
                  "type_id", 0, "Sequence", "id", "A", "type_id", 0, "Sequence", "id", "B",
                  "type_id", 1, "special_tokens", "<s>", "id", "<s>", "ids", 1, "tokens", "<s>");
    json_t *root = json_pack("{s:s, s:n, s:n, s:o, s:n, s:o, s:o, s:n, s:{s:s, s:o, s:s}}",
                             "version", "1.0", "truncation", "padding", "added_tokens", added,
                             "normalizer", "pre_tokenizer", pre, "post_processor", post, "decoder",
                             "model", "type", "WordLevel", "vocab", vocab, "unk_token", "<pad>");
    return write_json(path, root, err);
}

/* Writes the three files of a random model into the existing directory dir. */
static int write_model_files(const char *dir, const model_config *cfg, uint64_t seed,
                             model_dtype dtype, char *err) {
    char path[4096];
    int rc;
    size_t L = (size_t)cfg->n_layers, D = (size_t)cfg->d_model, M = 4 * D, V = (size_t)cfg->d_vocab,
           C = (size_t)cfg->n_ctx;
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *conf = json_pack(
        "{s:[s], s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:n, s:f, s:f, s:f, s:f, s:b, "
        "s:b, s:I, s:I}",
        "architectures", "GPT2LMHeadModel", "model_type", "gpt2", "activation_function", "gelu_new",
        "n_embd", (json_int_t)D, "n_head", (json_int_t)cfg->n_heads, "n_layer", (json_int_t)L,
        "n_ctx", (json_int_t)C, "n_positions", (json_int_t)C, "vocab_size", (json_int_t)V,
        "layer_norm_epsilon", 1e-5, "n_inner", "initializer_range", 0.02, "attn_pdrop", 0.0,
        "embd_pdrop", 0.0, "resid_pdrop", 0.0, "scale_attn_weights", 1, "tie_word_embeddings", 1,
        "bos_token_id", (json_int_t)1, "eos_token_id", (json_int_t)2);
    if ((rc = write_json(path, conf, err))) {
        return rc;
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if ((rc = model_write_chess_tokenizer(path, V, err))) {
        return rc;
    }

    model_st_writer *w = NULL;
    float *buf =
        malloc(D * (M > 3 * D ? M : 3 * D) * sizeof *buf + (V > C ? V : C) * D * sizeof *buf);
    rng r = {seed};
    if (!buf) {
        return common_fail(err, COMMON_ERR_NOMEM, "random model: out of memory");
    }
    if ((rc = model_st_writer_new(&w, err))) {
        goto done;
    }
    /* kind: 0 = N(0, 0.02) matrix or bias, 1 = LN weight 1 + N(0, 0.1), 2 = LN bias N(0, 0.1) */
    struct {
        const char *suffix;
        size_t rows, cols;
        int kind;
    } block[] = {
        {"ln_1.weight", D, 0, 1},
        {"ln_1.bias", D, 0, 2},
        {"attn.c_attn.weight", D, 3 * D, 0},
        {"attn.c_attn.bias", 3 * D, 0, 0},
        {"attn.c_proj.weight", D, D, 0},
        {"attn.c_proj.bias", D, 0, 0},
        {"ln_2.weight", D, 0, 1},
        {"ln_2.bias", D, 0, 2},
        {"mlp.c_fc.weight", D, M, 0},
        {"mlp.c_fc.bias", M, 0, 0},
        {"mlp.c_proj.weight", M, D, 0},
        {"mlp.c_proj.bias", D, 0, 0},
    };
    char name[128];
    for (int t = 0; t < 2; t++) {
        size_t rows = t == 0 ? V : C;
        model_shape s = {2, {rows, D, 0, 0}};
        for (size_t i = 0; i < rows * D; i++) {
            buf[i] = 0.02f * rng_normal(&r);
        }
        snprintf(name, sizeof name, "transformer.%s.weight", t == 0 ? "wte" : "wpe");
        if ((rc = model_st_writer_add_f32(w, name, dtype, &s, buf, err))) {
            goto done;
        }
    }
    for (size_t l = 0; l < L; l++) {
        for (size_t b = 0; b < sizeof block / sizeof block[0]; b++) {
            model_shape s = {block[b].cols ? 2 : 1, {block[b].rows, block[b].cols, 0, 0}};
            size_t n = model_shape_numel(&s);
            for (size_t i = 0; i < n; i++) {
                float z = rng_normal(&r);
                buf[i] = block[b].kind == 0 ? 0.02f * z
                                            : (block[b].kind == 1 ? 1.0f + 0.1f * z : 0.1f * z);
            }
            snprintf(name, sizeof name, "transformer.h.%zu.%s", l, block[b].suffix);
            if ((rc = model_st_writer_add_f32(w, name, dtype, &s, buf, err))) {
                goto done;
            }
        }
    }
    for (int t = 0; t < 2; t++) {
        model_shape s = {1, {D, 0, 0, 0}};
        for (size_t i = 0; i < D; i++) {
            float z = rng_normal(&r);
            buf[i] = t == 0 ? 1.0f + 0.1f * z : 0.1f * z;
        }
        if ((rc = model_st_writer_add_f32(
                 w, t == 0 ? "transformer.ln_f.weight" : "transformer.ln_f.bias", dtype, &s, buf,
                 err))) {
            goto done;
        }
    }
    model_st_writer_set_metadata(w, "format", "pt", NULL);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    rc = model_st_writer_write(w, path, err);
done:
    free(buf);
    model_st_writer_destroy(&w);
    return rc;
}

static const char *const model_files[] = {"config.json", "tokenizer.json", "model.safetensors"};

static bool is_model_file(const char *name) {
    for (size_t i = 0; i < sizeof model_files / sizeof model_files[0]; i++) {
        if (strcmp(name, model_files[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Removes dir's model files and dir itself, so that a new model can be renamed into its
 * place; a missing dir is fine. A directory that holds anything else is not ours to clear: the
 * check comes before anything is removed. */
static int clear_model_dir(const char *dir, char *err) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        return errno == ENOENT
                   ? 0
                   : common_fail(err, COMMON_ERR_IO, "open %s: %s", dir, strerror(errno));
    }
    int rc = 0;
    for (struct dirent *e = readdir(d); e != NULL && rc == 0; e = readdir(d)) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            !is_model_file(e->d_name)) {
            rc = common_fail(err, COMMON_ERR_INVALID,
                             "random model: %s holds %s, which is not a model file; choose a new "
                             "directory",
                             dir, e->d_name);
        }
    }
    closedir(d);
    char path[4096];
    for (size_t i = 0; rc == 0 && i < sizeof model_files / sizeof model_files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, model_files[i]);
        if (unlink(path) != 0 && errno != ENOENT) {
            rc = common_fail(err, COMMON_ERR_IO, "remove %s: %s", path, strerror(errno));
        }
    }
    if (rc == 0 && rmdir(dir) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "remove %s: %s", dir, strerror(errno));
    }
    return rc;
}

/* Removes a staging directory of model files (what write_model_files may have left). */
static void remove_staging(const char *staging) {
    char path[4096];
    for (size_t i = 0; i < sizeof model_files / sizeof model_files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", staging, model_files[i]);
        unlink(path);
    }
    rmdir(staging);
}

int model_write_random(const char *dir, const model_config *cfg, uint64_t seed, model_dtype dtype,
                       char *err) {
    if (cfg->n_layers <= 0 || cfg->d_model <= 0 || cfg->n_heads <= 0 || cfg->n_ctx <= 0 ||
        cfg->d_model % cfg->n_heads != 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "random model: need layers, d_model, heads, ctx > 0 and d_model a "
                           "multiple of heads");
    }
    if (cfg->d_vocab < 77) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "random model: vocab %d < 77 (the chess vocabulary)", cfg->d_vocab);
    }
    if (cfg->d_mlp != 0 && cfg->d_mlp != 4 * cfg->d_model) {
        return common_fail(err, COMMON_ERR_INVALID, "random model: d_mlp must be 4 d_model");
    }
    if (dtype != MODEL_DTYPE_F32 && dtype != MODEL_DTYPE_F16 && dtype != MODEL_DTYPE_BF16) {
        return common_fail(err, COMMON_ERR_INVALID, "random model: dtype must be f32, f16 or bf16");
    }
    /* The files are built in a staging directory beside dir and moved into place by one
     * rename once complete: a failure (a full disk) leaves no partial model and an older model
     * at dir untouched. */
    char staging[3968]; /* leaves room for "/model.safetensors" in a 4096-byte path */
    if (snprintf(staging, sizeof staging, "%s.tmp-XXXXXX", dir) >= (int)sizeof staging - 32) {
        return common_fail(err, COMMON_ERR_INVALID, "random model: path too long: %s", dir);
    }
    if (mkdtemp(staging) == NULL) {
        return common_fail(err, COMMON_ERR_IO, "create %s: %s", staging, strerror(errno));
    }
    int rc = write_model_files(staging, cfg, seed, dtype, err);
    if (rc == 0) {
        rc = clear_model_dir(dir, err); /* an older model at dir is replaced */
    }
    if (rc == 0 && rename(staging, dir) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "move the model into %s: %s", dir, strerror(errno));
    }
    if (rc != 0) {
        remove_staging(staging);
        return rc;
    }
    (void)chmod(dir, 0777 & ~current_umask()); /* mkdtemp creates 0700 */
    return common_fsync_parent(dir, err);
}
