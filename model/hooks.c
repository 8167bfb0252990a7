/*
 * Hook points: TransformerLens names <-> (kind, layer) ids, dense indices and shapes.
 *
 * A name is parsed once into a model_hook; the forward pass and caches use the dense index
 * (hook_embed, hook_pos_embed, the 18 block hooks of each layer in firing order, then
 * ln_final.hook_scale, ln_final.hook_normalized, logits) so lookups during a run are array
 * indexing, never string comparison.
 */
#include "model/model.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_BLOCK_KINDS (MODEL_HOOK_RESID_POST - MODEL_HOOK_RESID_PRE + 1)

/* Names of the kinds; block kinds are the suffix after "blocks.{l}.". */
static const char *const kind_names[MODEL_HOOK_KIND_COUNT] = {
    [MODEL_HOOK_EMBED] = "hook_embed",
    [MODEL_HOOK_POS_EMBED] = "hook_pos_embed",
    [MODEL_HOOK_RESID_PRE] = "hook_resid_pre",
    [MODEL_HOOK_LN1_SCALE] = "ln1.hook_scale",
    [MODEL_HOOK_LN1_NORMALIZED] = "ln1.hook_normalized",
    [MODEL_HOOK_Q] = "attn.hook_q",
    [MODEL_HOOK_K] = "attn.hook_k",
    [MODEL_HOOK_V] = "attn.hook_v",
    [MODEL_HOOK_ATTN_SCORES] = "attn.hook_attn_scores",
    [MODEL_HOOK_PATTERN] = "attn.hook_pattern",
    [MODEL_HOOK_Z] = "attn.hook_z",
    [MODEL_HOOK_RESULT] = "attn.hook_result",
    [MODEL_HOOK_ATTN_OUT] = "hook_attn_out",
    [MODEL_HOOK_RESID_MID] = "hook_resid_mid",
    [MODEL_HOOK_LN2_SCALE] = "ln2.hook_scale",
    [MODEL_HOOK_LN2_NORMALIZED] = "ln2.hook_normalized",
    [MODEL_HOOK_MLP_PRE] = "mlp.hook_pre",
    [MODEL_HOOK_MLP_POST] = "mlp.hook_post",
    [MODEL_HOOK_MLP_OUT] = "hook_mlp_out",
    [MODEL_HOOK_RESID_POST] = "hook_resid_post",
    [MODEL_HOOK_LN_FINAL_SCALE] = "ln_final.hook_scale",
    [MODEL_HOOK_LN_FINAL_NORMALIZED] = "ln_final.hook_normalized",
    [MODEL_HOOK_LOGITS] = "logits",
};

bool model_hook_kind_in_block(model_hook_kind k) {
    return k >= MODEL_HOOK_RESID_PRE && k <= MODEL_HOOK_RESID_POST;
}

bool model_hook_position_major(model_hook_kind k) {
    return k != MODEL_HOOK_ATTN_SCORES && k != MODEL_HOOK_PATTERN;
}

int model_hook_parse(const char *name, const model_config *cfg, model_hook *out, char *err) {
    if (strncmp(name, "blocks.", 7) == 0) {
        const char *p = name + 7;
        char *end;
        if (*p < '0' || *p > '9') {
            return common_fail(err, COMMON_ERR_NOT_FOUND, "unknown hook '%s'", name);
        }
        long layer = strtol(p, &end, 10);
        if (*end != '.') {
            return common_fail(err, COMMON_ERR_NOT_FOUND, "unknown hook '%s'", name);
        }
        for (int k = MODEL_HOOK_RESID_PRE; k <= MODEL_HOOK_RESID_POST; k++) {
            if (strcmp(end + 1, kind_names[k]) == 0) {
                if (cfg && layer >= cfg->n_layers) {
                    return common_fail(err, COMMON_ERR_INVALID,
                                       "hook '%s': layer %ld out of range (model has %d layers)",
                                       name, layer, cfg->n_layers);
                }
                out->kind = (model_hook_kind)k;
                out->layer = (int)layer;
                return 0;
            }
        }
        return common_fail(err, COMMON_ERR_NOT_FOUND, "unknown hook '%s'", name);
    }
    for (int k = 0; k < MODEL_HOOK_KIND_COUNT; k++) {
        if (!model_hook_kind_in_block((model_hook_kind)k) && strcmp(name, kind_names[k]) == 0) {
            out->kind = (model_hook_kind)k;
            out->layer = -1;
            return 0;
        }
    }
    return common_fail(err, COMMON_ERR_NOT_FOUND, "unknown hook '%s'", name);
}

char *model_hook_name(model_hook h, char *buf, size_t cap) {
    if (h.kind < 0 || h.kind >= MODEL_HOOK_KIND_COUNT) {
        snprintf(buf, cap, "(bad hook)");
    } else if (model_hook_kind_in_block(h.kind)) {
        snprintf(buf, cap, "blocks.%d.%s", h.layer, kind_names[h.kind]);
    } else {
        snprintf(buf, cap, "%s", kind_names[h.kind]);
    }
    return buf;
}

size_t model_hook_count(const model_config *cfg) {
    return 2 + (size_t)N_BLOCK_KINDS * (size_t)cfg->n_layers + 3;
}

size_t model_hook_index(const model_config *cfg, model_hook h) {
    if (h.kind <= MODEL_HOOK_POS_EMBED) {
        return (size_t)h.kind;
    }
    if (model_hook_kind_in_block(h.kind)) {
        return 2 + (size_t)h.layer * N_BLOCK_KINDS + (size_t)(h.kind - MODEL_HOOK_RESID_PRE);
    }
    return 2 + (size_t)N_BLOCK_KINDS * (size_t)cfg->n_layers +
           (size_t)(h.kind - MODEL_HOOK_LN_FINAL_SCALE);
}

model_hook model_hook_at(const model_config *cfg, size_t index) {
    model_hook h = {MODEL_HOOK_EMBED, -1};
    size_t blocks = (size_t)N_BLOCK_KINDS * (size_t)cfg->n_layers;
    if (index < 2) {
        h.kind = (model_hook_kind)index;
    } else if (index < 2 + blocks) {
        h.kind = (model_hook_kind)(MODEL_HOOK_RESID_PRE + (int)((index - 2) % N_BLOCK_KINDS));
        h.layer = (int)((index - 2) / N_BLOCK_KINDS);
    } else {
        h.kind = (model_hook_kind)(MODEL_HOOK_LN_FINAL_SCALE + (int)(index - 2 - blocks));
    }
    return h;
}

model_shape model_hook_shape(const model_config *cfg, model_hook h, size_t B, size_t T) {
    size_t D = (size_t)cfg->d_model, H = (size_t)cfg->n_heads, Dh = (size_t)cfg->d_head;
    model_shape s = {3, {B, T, D, 0}};
    switch (h.kind) {
    case MODEL_HOOK_LN1_SCALE:
    case MODEL_HOOK_LN2_SCALE:
    case MODEL_HOOK_LN_FINAL_SCALE:
        s.dims[2] = 1;
        break;
    case MODEL_HOOK_Q:
    case MODEL_HOOK_K:
    case MODEL_HOOK_V:
    case MODEL_HOOK_Z:
        s.ndim = 4;
        s.dims[2] = H;
        s.dims[3] = Dh;
        break;
    case MODEL_HOOK_RESULT:
        s.ndim = 4;
        s.dims[2] = H;
        s.dims[3] = D;
        break;
    case MODEL_HOOK_ATTN_SCORES:
    case MODEL_HOOK_PATTERN:
        s.ndim = 4;
        s.dims[1] = H;
        s.dims[2] = T;
        s.dims[3] = T;
        break;
    case MODEL_HOOK_MLP_PRE:
    case MODEL_HOOK_MLP_POST:
        s.dims[2] = (size_t)cfg->d_mlp;
        break;
    case MODEL_HOOK_LOGITS:
        s.dims[2] = (size_t)cfg->d_vocab;
        break;
    default:
        break;
    }
    return s;
}

int model_hook_list_parse(const char *spec, const model_config *cfg, model_hook **out, size_t *n,
                          char *err) {
    size_t total = model_hook_count(cfg);
    model_hook *list = calloc(total + 1, sizeof *list);
    if (list == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "hooks: out of memory");
    }
    size_t k = 0;
    if (strcmp(spec, "all") == 0) {
        for (; k < total; k++) {
            list[k] = model_hook_at(cfg, k);
        }
        *out = list;
        *n = k;
        return 0;
    }
    const char *p = spec;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        char name[128];
        if (len >= sizeof name) {
            free(list);
            return common_fail(err, COMMON_ERR_NOT_FOUND, "unknown hook '%.*s...'", 40, p);
        }
        memcpy(name, p, len);
        name[len] = '\0';
        p += len + (p[len] == ',');
        if (len == 0) {
            continue; /* "a,,b" */
        }
        model_hook one;
        int rc = model_hook_parse(name, cfg, &one, err);
        if (rc != 0) {
            free(list);
            return rc;
        }
        bool dup = false;
        for (size_t i = 0; i < k; i++) {
            dup = dup || (list[i].kind == one.kind && list[i].layer == one.layer);
        }
        if (!dup) {
            assert(k < total); /* distinct hooks of cfg are at most total */
            list[k++] = one;
        }
    }
    if (k == 0) {
        free(list);
        return common_fail(err, COMMON_ERR_INVALID, "hooks '%s' name no hook", spec);
    }
    *out = list;
    *n = k;
    return 0;
}
