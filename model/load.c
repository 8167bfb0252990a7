/*
 * Loading a HuggingFace GPT-2 directory into TransformerLens parameters.
 *
 * config.json is read the way TL's convert_hf_model_config reads it (n_ctx from the legacy
 * n_ctx key, d_mlp = 4 d_model whatever n_inner says, attn_scale = sqrt(d_head)); values TL
 * would compute differently or chesslens does not implement are refused by name. The weights
 * are memory-mapped and converted once, from HF's Conv1D [in, out] layouts to TL's per-head
 * layouts (docs/TL-SEMANTICS.md section 1.3), into float32 host arrays; weight processing
 * (process.c) then rewrites them in place.
 */
#include "model/model_int.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

model_processing model_processing_default(void) {
    model_processing p = {true, true, true, true};
    return p;
}

model_processing model_processing_none(void) {
    model_processing p = {false, false, false, false};
    return p;
}

/* Reads the integer `key` into *out: 1 when it is absent (or null) and not required, else 0.
 * A value that is not an integer in 1..max is INVALID naming the key. */
static int get_int(json_t *root, const char *key, bool required, int max, int *out,
                   const char *path, char *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: missing key '%s'", path, key);
        }
        return 1;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > max) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: '%s' must be an integer in 1..%d", path,
                           key, max);
    }
    *out = (int)json_integer_value(v);
    return 0;
}

/* Reads the switch `key` into *out (def when absent or null); anything but a boolean is
 * INVALID naming the key (a string "true" must not read as false). */
static int get_bool(json_t *root, const char *key, bool def, bool *out, const char *path,
                    char *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: '%s' must be true or false", path, key);
    }
    *out = json_is_true(v);
    return 0;
}

/* With the limits, the largest products the loader forms (V x D x 4 bytes for the embedding,
 * D x 4D x 4 bytes for an MLP matrix) fit in size_t with room to spare. */
_Static_assert((uint64_t)MODEL_MAX_VOCAB *MODEL_MAX_D_MODEL * 4 * sizeof(float) <= SIZE_MAX,
               "config limits too large for size_t");

static int config_from_json(json_t *root, const char *path, model_config *cfg, char *err) {
    int rc;
    memset(cfg, 0, sizeof *cfg);
    if (!json_is_object(root)) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: not a JSON object", path);
    }
    json_t *arch = json_object_get(root, "architectures");
    const char *a0 = json_string_value(json_array_get(arch, 0));
    if (a0 && strcmp(a0, "GPT2LMHeadModel") != 0 && strcmp(a0, "GPT2Model") != 0) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: architecture '%s' (only GPT-2)", path,
                           a0);
    }
    if ((rc = get_int(root, "n_layer", true, MODEL_MAX_LAYERS, &cfg->n_layers, path, err)) < 0 ||
        (rc = get_int(root, "n_head", true, MODEL_MAX_HEADS, &cfg->n_heads, path, err)) < 0 ||
        (rc = get_int(root, "n_embd", true, MODEL_MAX_D_MODEL, &cfg->d_model, path, err)) < 0 ||
        (rc = get_int(root, "vocab_size", true, MODEL_MAX_VOCAB, &cfg->d_vocab, path, err)) < 0) {
        return rc;
    }
    int have_ctx = get_int(root, "n_ctx", false, MODEL_MAX_CTX, &cfg->n_ctx, path, err);
    if (have_ctx < 0) {
        return have_ctx;
    }
    int have_pos = get_int(root, "n_positions", false, MODEL_MAX_CTX, &cfg->n_positions, path, err);
    if (have_pos < 0) {
        return have_pos;
    }
    if (have_ctx == 1 && have_pos == 1) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: missing key 'n_ctx' (and n_positions)",
                           path);
    }
    if (have_ctx == 1) {
        cfg->n_ctx = cfg->n_positions;
    }
    if (have_pos == 1) {
        cfg->n_positions = cfg->n_ctx;
    }
    if (cfg->n_positions < cfg->n_ctx) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: n_positions %d < n_ctx %d", path,
                           cfg->n_positions, cfg->n_ctx);
    }
    if (cfg->d_model % cfg->n_heads != 0) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: n_embd %d is not a multiple of n_head %d",
                           path, cfg->d_model, cfg->n_heads);
    }
    cfg->d_head = cfg->d_model / cfg->n_heads;
    cfg->d_mlp = 4 * cfg->d_model;
    cfg->attn_scale = (float)sqrt((double)cfg->d_head);
    cfg->eps = 1e-5f;
    json_t *eps = json_object_get(root, "layer_norm_epsilon");
    if (eps && !json_is_null(eps)) {
        /* out of range in float32 it becomes inf (every LayerNorm output 0) or 0 */
        double e = json_number_value(eps);
        if (!json_is_number(eps) || !(e >= MODEL_MIN_EPS && e <= MODEL_MAX_EPS)) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "%s: 'layer_norm_epsilon' must be a number in [%g, %g]", path,
                               MODEL_MIN_EPS, MODEL_MAX_EPS);
        }
        cfg->eps = (float)e;
    }
    json_t *act = json_object_get(root, "activation_function");
    if (act && !json_is_null(act) &&
        (!json_is_string(act) || strcmp(json_string_value(act), "gelu_new") != 0)) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "%s: activation_function '%s' unsupported (only gelu_new)", path,
                           json_is_string(act) ? json_string_value(act) : "?");
    }
    bool by_layer = false, tied = true;
    if ((rc = get_bool(root, "scale_attn_by_inverse_layer_idx", false, &by_layer, path, err)) ||
        (rc = get_bool(root, "tie_word_embeddings", true, &tied, path, err))) {
        return rc;
    }
    if (by_layer) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "%s: scale_attn_by_inverse_layer_idx=true unsupported", path);
    }
    if (!tied) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "%s: tie_word_embeddings=false unsupported (lm_head must be tied)",
                           path);
    }
    return 0;
}

int model_config_parse(model_config *cfg, const char *name, const char *json, size_t len,
                       char *err) {
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (!root) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: line %d column %d: %s", name, jerr.line,
                           jerr.column, jerr.text);
    }
    model_config c;
    int rc = config_from_json(root, name, &c, err);
    json_decref(root);
    if (rc == 0) {
        *cfg = c;
    }
    return rc;
}

static int parse_config(const char *path, model_config *cfg, char *err) {
    char *text = NULL;
    size_t len = 0;
    int rc = common_read_file(path, &text, &len, err);
    if (rc == 0) {
        rc = model_config_parse(cfg, path, text, len, err);
        free(text);
    }
    return rc;
}

/* Adds a listed parameter with its own zeroed storage. */
static float *add_param(model *m, const char *name, model_shape shape) {
    model_param_entry *e = &m->params[m->n_params];
    size_t n = model_shape_numel(&shape);
    e->data = calloc(n ? n : 1, sizeof(float));
    if (!e->data) {
        return NULL;
    }
    snprintf(e->name, sizeof e->name, "%s", name);
    e->shape = shape;
    m->n_params++;
    return e->data;
}

static model_shape shp(int ndim, size_t a, size_t b, size_t c) {
    model_shape s = {ndim, {a, b, c, 0}};
    return s;
}

static int alloc_params(model *m, char *err) {
    const model_config *c = &m->cfg;
    size_t L = (size_t)c->n_layers, D = (size_t)c->d_model, H = (size_t)c->n_heads,
           Dh = (size_t)c->d_head, M = (size_t)c->d_mlp, V = (size_t)c->d_vocab;
    m->params = calloc(6 + 16 * L, sizeof *m->params);
    m->layers = calloc(L, sizeof *m->layers);
    if (!m->params || !m->layers) {
        return common_fail(err, COMMON_ERR_NOMEM, "model: out of memory");
    }
    char name[48];
    bool ok = (m->W_E = add_param(m, "embed.W_E", shp(2, V, D, 0))) &&
              (m->W_pos = add_param(m, "pos_embed.W_pos", shp(2, (size_t)c->n_ctx, D, 0)));
    for (size_t l = 0; ok && l < L; l++) {
        model_layer_params *p = &m->layers[l];
        struct {
            const char *suffix;
            float **dst;
            model_shape s;
        } list[] = {
            {"ln1.w", &p->ln1_w, shp(1, D, 0, 0)},     {"ln1.b", &p->ln1_b, shp(1, D, 0, 0)},
            {"attn.W_Q", &p->W_Q, shp(3, H, D, Dh)},   {"attn.W_K", &p->W_K, shp(3, H, D, Dh)},
            {"attn.W_V", &p->W_V, shp(3, H, D, Dh)},   {"attn.W_O", &p->W_O, shp(3, H, Dh, D)},
            {"attn.b_Q", &p->b_Q, shp(2, H, Dh, 0)},   {"attn.b_K", &p->b_K, shp(2, H, Dh, 0)},
            {"attn.b_V", &p->b_V, shp(2, H, Dh, 0)},   {"attn.b_O", &p->b_O, shp(1, D, 0, 0)},
            {"ln2.w", &p->ln2_w, shp(1, D, 0, 0)},     {"ln2.b", &p->ln2_b, shp(1, D, 0, 0)},
            {"mlp.W_in", &p->W_in, shp(2, D, M, 0)},   {"mlp.b_in", &p->b_in, shp(1, M, 0, 0)},
            {"mlp.W_out", &p->W_out, shp(2, M, D, 0)}, {"mlp.b_out", &p->b_out, shp(1, D, 0, 0)},
        };
        for (size_t i = 0; ok && i < sizeof list / sizeof list[0]; i++) {
            snprintf(name, sizeof name, "blocks.%zu.%s", l, list[i].suffix);
            ok = (*list[i].dst = add_param(m, name, list[i].s)) != NULL;
        }
    }
    ok = ok && (m->lnf_w = add_param(m, "ln_final.w", shp(1, D, 0, 0))) &&
         (m->lnf_b = add_param(m, "ln_final.b", shp(1, D, 0, 0))) &&
         (m->W_U = add_param(m, "unembed.W_U", shp(2, D, V, 0))) &&
         (m->b_U = add_param(m, "unembed.b_U", shp(1, V, 0, 0)));
    return ok ? 0 : common_fail(err, COMMON_ERR_NOMEM, "model: out of memory for parameters");
}

/* Checks that HF tensor `full` exists with the expected shape and a float dtype. */
static int check_hf(const model_st_file *st, const char *path, const char *full, model_shape want,
                    char *err) {
    long i = model_st_find(st, full);
    if (i < 0) {
        return common_fail(err, COMMON_ERR_NOT_FOUND, "%s: missing tensor '%s'", path, full);
    }
    model_dtype dt;
    model_shape got;
    model_st_info(st, (size_t)i, &dt, &got);
    if (!model_shape_equal(&got, &want)) {
        char a[64], b[64];
        return common_fail(err, COMMON_ERR_INVALID, "%s: tensor '%s' has shape %s, expected %s",
                           path, full, model_shape_format(&got, a, sizeof a),
                           model_shape_format(&want, b, sizeof b));
    }
    if (dt != MODEL_DTYPE_F32 && dt != MODEL_DTYPE_F16 && dt != MODEL_DTYPE_BF16) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s", path, full,
                           model_dtype_name(dt));
    }
    return 0;
}

/* Reads HF tensor `name` (with the file's prefix) of the expected shape as float32 into a new
 * buffer (*out, caller frees). */
static int read_hf(const model_st_file *st, const char *path, const char *prefix, const char *name,
                   model_shape want, float **out, char *err) {
    char full[128];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    int rc = check_hf(st, path, full, want, err);
    if (rc) {
        return rc;
    }
    size_t n = model_shape_numel(&want);
    float *buf = malloc((n ? n : 1) * sizeof *buf);
    if (!buf) {
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory for '%s'", path, full);
    }
    rc = model_st_read_f32(st, full, buf, n, NULL, err);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

/* The HF tensors of one block, "h.{l}." + suffix, in the order load_weights reads them: the
 * first ten copy straight into a TL parameter, the last two (c_attn) are split into Q, K, V. */
enum { BLOCK_TENSORS = 12, BLOCK_DIRECT = 10 };

typedef struct hf_tensor {
    const char *suffix;
    model_shape shape;
} hf_tensor;

static void block_tensors(const model_config *c, hf_tensor out[BLOCK_TENSORS]) {
    size_t D = (size_t)c->d_model, M = (size_t)c->d_mlp;
    const hf_tensor list[BLOCK_TENSORS] = {
        {"ln_1.weight", shp(1, D, 0, 0)},
        {"ln_1.bias", shp(1, D, 0, 0)},
        {"ln_2.weight", shp(1, D, 0, 0)},
        {"ln_2.bias", shp(1, D, 0, 0)},
        {"attn.c_proj.weight", shp(2, D, D, 0)},
        {"attn.c_proj.bias", shp(1, D, 0, 0)},
        {"mlp.c_fc.weight", shp(2, D, M, 0)},
        {"mlp.c_fc.bias", shp(1, M, 0, 0)},
        {"mlp.c_proj.weight", shp(2, M, D, 0)},
        {"mlp.c_proj.bias", shp(1, D, 0, 0)},
        {"attn.c_attn.weight", shp(2, D, 3 * D, 0)},
        {"attn.c_attn.bias", shp(1, 3 * D, 0, 0)},
    };
    memcpy(out, list, sizeof list);
}

/* Checks every tensor the model needs against the config before anything is allocated from
 * the config: the parameters are then bounded by what the file holds. */
static int check_weights(const model_st_file *st, const char *path, const char *prefix,
                         const model_config *c, char *err) {
    size_t D = (size_t)c->d_model, V = (size_t)c->d_vocab;
    char full[128];
    int rc;
    snprintf(full, sizeof full, "%swte.weight", prefix);
    if ((rc = check_hf(st, path, full, shp(2, V, D, 0), err))) {
        return rc;
    }
    if (model_st_find(st, "lm_head.weight") >= 0 &&
        (rc = check_hf(st, path, "lm_head.weight", shp(2, V, D, 0), err))) {
        return rc;
    }
    snprintf(full, sizeof full, "%swpe.weight", prefix);
    if ((rc = check_hf(st, path, full, shp(2, (size_t)c->n_positions, D, 0), err))) {
        return rc;
    }
    hf_tensor block[BLOCK_TENSORS];
    block_tensors(c, block);
    for (int l = 0; l < c->n_layers; l++) {
        for (size_t k = 0; k < BLOCK_TENSORS; k++) {
            snprintf(full, sizeof full, "%sh.%d.%s", prefix, l, block[k].suffix);
            if ((rc = check_hf(st, path, full, block[k].shape, err))) {
                return rc;
            }
        }
    }
    snprintf(full, sizeof full, "%sln_f.weight", prefix);
    if ((rc = check_hf(st, path, full, shp(1, D, 0, 0), err))) {
        return rc;
    }
    snprintf(full, sizeof full, "%sln_f.bias", prefix);
    return check_hf(st, path, full, shp(1, D, 0, 0), err);
}

static int load_weights(model *m, const model_st_file *st, const char *path, const char *prefix,
                        char *err) {
    const model_config *c = &m->cfg;
    size_t D = (size_t)c->d_model, H = (size_t)c->n_heads, Dh = (size_t)c->d_head,
           V = (size_t)c->d_vocab;
    float *t = NULL;
    int rc;
    char name[96];

    if ((rc = read_hf(st, path, prefix, "wte.weight", shp(2, V, D, 0), &t, err))) {
        goto done;
    }
    memcpy(m->W_E, t, V * D * sizeof *t);
    free(t);
    t = NULL;
    /* lm_head is tied to wte; a file that carries it anyway is read from it (as TL does). */
    long lm = model_st_find(st, "lm_head.weight");
    if (lm >= 0) {
        if ((rc = read_hf(st, path, "", "lm_head.weight", shp(2, V, D, 0), &t, err))) {
            goto done;
        }
    }
    const float *wu = lm >= 0 ? t : m->W_E;
    for (size_t v = 0; v < V; v++) {
        for (size_t d = 0; d < D; d++) {
            m->W_U[d * V + v] = wu[v * D + d];
        }
    }
    free(t);
    t = NULL;
    if ((rc = read_hf(st, path, prefix, "wpe.weight", shp(2, (size_t)c->n_positions, D, 0), &t,
                      err))) {
        goto done;
    }
    memcpy(m->W_pos, t, (size_t)c->n_ctx * D * sizeof *t); /* first n_ctx rows, as TL trims */
    free(t);
    t = NULL;
    hf_tensor block[BLOCK_TENSORS];
    block_tensors(c, block);
    for (int l = 0; l < c->n_layers; l++) {
        model_layer_params *p = &m->layers[l];
        float *direct[BLOCK_DIRECT] = {p->ln1_w, p->ln1_b, p->ln2_w, p->ln2_b, p->W_O,
                                       p->b_O,   p->W_in,  p->b_in,  p->W_out, p->b_out};
        for (size_t i = 0; i < BLOCK_DIRECT; i++) {
            snprintf(name, sizeof name, "h.%d.%s", l, block[i].suffix);
            if ((rc = read_hf(st, path, prefix, name, block[i].shape, &t, err))) {
                goto done;
            }
            /* c_proj [H*Dh, D] is W_O [H,Dh,D] in the same memory order */
            memcpy(direct[i], t, model_shape_numel(&block[i].shape) * sizeof *t);
            free(t);
            t = NULL;
        }
        snprintf(name, sizeof name, "h.%d.%s", l, block[BLOCK_DIRECT].suffix);
        if ((rc = read_hf(st, path, prefix, name, block[BLOCK_DIRECT].shape, &t, err))) {
            goto done;
        }
        float *W[3] = {p->W_Q, p->W_K, p->W_V};
        for (size_t j = 0; j < 3; j++) {
            for (size_t h = 0; h < H; h++) {
                for (size_t mm = 0; mm < D; mm++) {
                    for (size_t d = 0; d < Dh; d++) {
                        W[j][(h * D + mm) * Dh + d] = t[mm * 3 * D + j * D + h * Dh + d];
                    }
                }
            }
        }
        free(t);
        t = NULL;
        snprintf(name, sizeof name, "h.%d.%s", l, block[BLOCK_DIRECT + 1].suffix);
        if ((rc = read_hf(st, path, prefix, name, block[BLOCK_DIRECT + 1].shape, &t, err))) {
            goto done;
        }
        memcpy(p->b_Q, t, D * sizeof *t);
        memcpy(p->b_K, t + D, D * sizeof *t);
        memcpy(p->b_V, t + 2 * D, D * sizeof *t);
        free(t);
        t = NULL;
    }
    if ((rc = read_hf(st, path, prefix, "ln_f.weight", shp(1, D, 0, 0), &t, err))) {
        goto done;
    }
    memcpy(m->lnf_w, t, D * sizeof *t);
    free(t);
    t = NULL;
    if ((rc = read_hf(st, path, prefix, "ln_f.bias", shp(1, D, 0, 0), &t, err))) {
        goto done;
    }
    memcpy(m->lnf_b, t, D * sizeof *t);
    /* b_U stays zero: GPT-2 has no unembedding bias. */
done:
    free(t);
    return rc;
}

/* Removes the LayerNorm parameters from the listed set (after fold_ln). */
static void drop_ln_params(model *m) {
    size_t w = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        const char *n = m->params[i].name;
        size_t len = strlen(n);
        bool ln =
            strncmp(n, "ln_final.", 9) == 0 || (len > 6 && strncmp(n + len - 6, ".ln", 3) == 0 &&
                                                (n[len - 3] == '1' || n[len - 3] == '2'));
        if (ln) {
            free(m->params[i].data);
        } else {
            m->params[w++] = m->params[i];
        }
    }
    m->n_params = w;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        model_layer_params *p = &m->layers[l];
        p->ln1_w = p->ln1_b = p->ln2_w = p->ln2_b = NULL;
    }
    m->lnf_w = m->lnf_b = NULL;
}

int model_load(model **out, const char *dir, const model_processing *proc, char *err) {
    char path[4096];
    int rc;
    model_st_file *st = NULL;
    model *m = calloc(1, sizeof *m);
    if (!m) {
        return common_fail(err, COMMON_ERR_NOMEM, "model: out of memory");
    }
    m->proc = proc ? *proc : model_processing_default();
    snprintf(path, sizeof path, "%s/config.json", dir);
    if ((rc = parse_config(path, &m->cfg, err))) {
        goto fail;
    }
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if ((rc = model_tokenizer_load(&m->tok, path, err))) {
        goto fail;
    }
    if (model_tokenizer_vocab_size(m->tok) > (size_t)m->cfg.d_vocab) {
        rc = common_fail(err, COMMON_ERR_INVALID, "%s: %zu token ids but vocab_size is %d", path,
                         model_tokenizer_vocab_size(m->tok), m->cfg.d_vocab);
        goto fail;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if ((rc = model_st_open(&st, path, err))) {
        goto fail;
    }
    const char *prefix = model_st_find(st, "transformer.wte.weight") >= 0 ? "transformer." : "";
    if ((rc = check_weights(st, path, prefix, &m->cfg, err)) || (rc = alloc_params(m, err)) ||
        (rc = load_weights(m, st, path, prefix, err))) {
        goto fail;
    }
    model_st_close(&st);
    model_process_weights(m);
    if (m->proc.fold_ln) {
        drop_ln_params(m);
    }
    *out = m;
    return 0;
fail:
    model_st_close(&st);
    model_destroy(&m);
    return rc;
}

void model_destroy(model **mp) {
    if (!mp || !*mp) {
        return;
    }
    model *m = *mp;
    for (size_t i = 0; i < m->n_params; i++) {
        free(m->params[i].data);
    }
    free(m->params);
    free(m->layers);
    model_tokenizer_destroy(&m->tok);
    free(m);
    *mp = NULL;
}

const model_config *model_get_config(const model *m) {
    return &m->cfg;
}

const model_processing *model_get_processing(const model *m) {
    return &m->proc;
}

const model_tokenizer *model_get_tokenizer(const model *m) {
    return m->tok;
}

const float *model_param(const model *m, const char *name, model_shape *shape) {
    for (size_t i = 0; i < m->n_params; i++) {
        if (strcmp(m->params[i].name, name) == 0) {
            if (shape) {
                *shape = m->params[i].shape;
            }
            return m->params[i].data;
        }
    }
    return NULL;
}

size_t model_param_count(const model *m) {
    return m->n_params;
}

const char *model_param_name(const model *m, size_t i) {
    return i < m->n_params ? m->params[i].name : NULL;
}

size_t model_param_numel(const model *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        n += model_shape_numel(&m->params[i].shape);
    }
    return n;
}
