/*
 * fuzz_config: libFuzzer target for config.json parsing. Whatever parses must be a
 * configuration the engine can size: every value inside the documented limits, the derived
 * values (d_head, d_mlp, attn_scale) consistent, LayerNorm epsilon finite and in range; and
 * the hook points of the first and last layer must round-trip through their names and dense
 * indices with shapes whose element counts fit.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_hook(const model_config *c, model_hook h) {
    char name[128], err[COMMON_ERR_LEN];
    model_hook back;
    model_hook_name(h, name, sizeof name);
    if (model_hook_parse(name, c, &back, err) != 0 || back.kind != h.kind ||
        back.layer != h.layer) {
        abort();
    }
    size_t i = model_hook_index(c, h);
    model_hook at = model_hook_at(c, i);
    if (i >= model_hook_count(c) || at.kind != h.kind || at.layer != h.layer) {
        abort();
    }
    model_shape s = model_hook_shape(c, h, 2, (size_t)c->n_ctx);
    size_t numel = 1;
    for (int d = 0; d < s.ndim; d++) {
        if (s.dims[d] != 0 && numel > SIZE_MAX / s.dims[d]) {
            abort();
        }
        numel *= s.dims[d];
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[COMMON_ERR_LEN];
    model_config c;
    memset(&c, 0x5a, sizeof c);
    model_config before = c;
    if (model_config_parse(&c, "fuzz/config.json", (const char *)data, size, err) != 0) {
        if (memcmp(&c, &before, sizeof c) != 0) {
            abort(); /* a failed parse leaves the output alone */
        }
        return 0;
    }
    if (c.n_layers < 1 || c.n_layers > MODEL_MAX_LAYERS || c.d_model < 1 ||
        c.d_model > MODEL_MAX_D_MODEL || c.n_heads < 1 || c.n_heads > MODEL_MAX_HEADS ||
        c.d_vocab < 1 || c.d_vocab > MODEL_MAX_VOCAB || c.n_ctx < 1 || c.n_ctx > c.n_positions ||
        c.n_positions > MODEL_MAX_CTX) {
        abort();
    }
    if (c.d_head * c.n_heads != c.d_model || c.d_mlp != 4 * c.d_model) {
        abort();
    }
    if (!isfinite(c.eps) || c.eps < (float)MODEL_MIN_EPS || c.eps > (float)MODEL_MAX_EPS ||
        !isfinite(c.attn_scale) || c.attn_scale < 1.0f) {
        abort();
    }
    for (int k = 0; k < MODEL_HOOK_KIND_COUNT; k++) {
        bool block = model_hook_kind_in_block((model_hook_kind)k);
        model_hook h = {(model_hook_kind)k, block ? 0 : -1};
        check_hook(&c, h);
        if (block) {
            h.layer = c.n_layers - 1;
            check_hook(&c, h);
        }
    }
    return 0;
}
