/*
 * Sessions (a model's parameters resident on a backend) and caches (the device tensors a run
 * returns).
 *
 * The session uploads the processed parameters once, into one device buffer, in the layouts
 * the forward pass multiplies with: W_Q/W_K/W_V as [D, H*Dh] so a block's queries are one GEMM
 * over all heads, W_O as [H*Dh, D] (TL's own memory order), W_in [D,M], W_out [M,D], W_U [D,V].
 * A cache is one device buffer per held hook, indexed by the hook's dense index.
 */
#include "model/forward_int.h"

#include <stdlib.h>
#include <string.h>

/* Lays the session's weights out in one buffer on be and, when upload is set, uploads them from
 * m (a session of a group that receives them by broadcast is laid out only). */
static int session_build(model_session **out, const model *m, model_backend *be, bool upload,
                         char *err) {
    const model_config *c = &m->cfg;
    size_t L = (size_t)c->n_layers, D = (size_t)c->d_model, M = (size_t)c->d_mlp,
           V = (size_t)c->d_vocab, H = (size_t)c->n_heads, Dh = (size_t)c->d_head;
    bool ln = !m->proc.fold_ln;
    size_t per_layer = 4 * D * D + 4 * D + 2 * D * M + M + D + (ln ? 4 * D : 0);
    size_t total = V * D + (size_t)c->n_ctx * D + L * per_layer + D * V + V + (ln ? 2 * D : 0);
    int rc;
    float *stage = NULL;
    model_session *s = calloc(1, sizeof *s);
    if (!s || !(s->layers = calloc(L, sizeof *s->layers))) {
        free(s);
        return common_fail(err, COMMON_ERR_NOMEM, "session: out of memory");
    }
    s->m = m;
    s->be = be;
    s->has_ln = ln;
    if ((rc = be->alloc(be, total, &s->weights, err))) {
        goto fail;
    }
    s->weights_n = total;
    stage = malloc(D * D * sizeof *stage);
    if (!stage) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "session: out of memory");
        goto fail;
    }
    size_t off = 0;
#define PUT(ref, host, n)                                                                          \
    do {                                                                                           \
        (ref).buf = s->weights;                                                                    \
        (ref).off = off;                                                                           \
        if (upload && (rc = be->upload(be, (ref), (host), (n), err))) {                            \
            goto fail;                                                                             \
        }                                                                                          \
        off += (n);                                                                                \
    } while (0)
    PUT(s->W_E, m->W_E, V * D);
    PUT(s->W_pos, m->W_pos, (size_t)c->n_ctx * D);
    for (size_t l = 0; l < L; l++) {
        const model_layer_params *p = &m->layers[l];
        dev_layer *d = &s->layers[l];
        const float *Ws[3] = {p->W_Q, p->W_K, p->W_V};
        const float *bs[3] = {p->b_Q, p->b_K, p->b_V};
        model_ref *Wd[3] = {&d->Wq, &d->Wk, &d->Wv};
        model_ref *bd[3] = {&d->bq, &d->bk, &d->bv};
        for (int j = 0; j < 3; j++) {
            /* [H,D,Dh] -> [D, H*Dh] */
            for (size_t h = 0; h < H; h++) {
                for (size_t mm = 0; mm < D; mm++) {
                    memcpy(stage + mm * D + h * Dh, Ws[j] + (h * D + mm) * Dh, Dh * sizeof *stage);
                }
            }
            PUT(*Wd[j], stage, D * D);
            PUT(*bd[j], bs[j], D);
        }
        PUT(d->Wo, p->W_O, D * D);
        PUT(d->bo, p->b_O, D);
        PUT(d->Win, p->W_in, D * M);
        PUT(d->bin, p->b_in, M);
        PUT(d->Wout, p->W_out, M * D);
        PUT(d->bout, p->b_out, D);
        if (ln) {
            PUT(d->ln1_w, p->ln1_w, D);
            PUT(d->ln1_b, p->ln1_b, D);
            PUT(d->ln2_w, p->ln2_w, D);
            PUT(d->ln2_b, p->ln2_b, D);
        }
    }
    PUT(s->W_U, m->W_U, D * V);
    PUT(s->b_U, m->b_U, V);
    if (ln) {
        PUT(s->lnf_w, m->lnf_w, D);
        PUT(s->lnf_b, m->lnf_b, D);
    }
#undef PUT
    free(stage);
    *out = s;
    return 0;
fail:
    free(stage);
    model_session_destroy(&s);
    return rc;
}

int model_session_new(model_session **out, const model *m, model_backend *be, char *err) {
    return session_build(out, m, be, true, err);
}

int model_session_new_group(model_session **out, const model *m, model_backend *const *bes,
                            size_t n, model_collective *c, char *err) {
    if (n == 0 || (c != NULL && c->n_ranks != n)) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "session group: %zu backends, a collective of %zu ranks", n,
                           c != NULL ? c->n_ranks : n);
    }
    model_session **s = calloc(n, sizeof *s);
    model_ref *refs = calloc(n, sizeof *refs);
    int rc = 0;
    if (s == NULL || refs == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "session group: out of memory");
    }
    for (size_t r = 0; r < n && rc == 0; r++) {
        /* with a collective only rank 0 reads the host copy; the others are filled from it */
        rc = session_build(&s[r], m, bes[r], c == NULL || r == 0, err);
        if (rc == 0) {
            refs[r] = (model_ref){s[r]->weights, 0};
        }
    }
    if (rc == 0 && c != NULL && n > 1) {
        rc = c->broadcast(c, refs, s[0]->weights_n, 0, err);
    }
    for (size_t r = 0; r < n && s != NULL; r++) {
        if (rc == 0) {
            out[r] = s[r];
        } else {
            model_session_destroy(&s[r]);
        }
    }
    free(s);
    free(refs);
    return rc;
}

void model_session_destroy(model_session **sp) {
    if (!sp || !*sp) {
        return;
    }
    model_session *s = *sp;
    model_session_release_workspace(s);
    if (s->weights) {
        s->be->free(s->be, s->weights);
    }
    free(s->layers);
    free(s);
    *sp = NULL;
}

void model_session_release_workspace(model_session *s) {
    for (int i = 0; i < WS_COUNT; i++) {
        if (s->ws[i]) {
            s->be->free(s->be, s->ws[i]);
            s->ws[i] = NULL;
            s->ws_n[i] = 0;
        }
    }
}

const model *model_session_model(const model_session *s) {
    return s->m;
}

model_backend *model_session_backend(const model_session *s) {
    return s->be;
}

model_ref model_session_param(const model_session *s, const char *name) {
    model_ref none = {NULL, 0};
    const model_config *c = &s->m->cfg;
    if (strncmp(name, "blocks.", 7) != 0) {
        const struct {
            const char *name;
            const model_ref *ref;
            bool ln;
        } top[] = {{"embed.W_E", &s->W_E, false},   {"pos_embed.W_pos", &s->W_pos, false},
                   {"unembed.W_U", &s->W_U, false}, {"unembed.b_U", &s->b_U, false},
                   {"ln_final.w", &s->lnf_w, true}, {"ln_final.b", &s->lnf_b, true}};
        for (size_t i = 0; i < sizeof top / sizeof top[0]; i++) {
            if (strcmp(name, top[i].name) == 0 && (!top[i].ln || s->has_ln)) {
                return *top[i].ref;
            }
        }
        return none;
    }
    char *end = NULL;
    long l = strtol(name + 7, &end, 10);
    if (end == name + 7 || *end != '.' || l < 0 || l >= c->n_layers) {
        return none;
    }
    const dev_layer *d = &s->layers[l];
    const struct {
        const char *suffix;
        const model_ref *ref;
        bool ln;
    } per[] = {{"attn.b_Q", &d->bq, false},    {"attn.b_K", &d->bk, false},
               {"attn.b_V", &d->bv, false},    {"attn.W_O", &d->Wo, false},
               {"attn.b_O", &d->bo, false},    {"mlp.W_in", &d->Win, false},
               {"mlp.b_in", &d->bin, false},   {"mlp.W_out", &d->Wout, false},
               {"mlp.b_out", &d->bout, false}, {"ln1.w", &d->ln1_w, true},
               {"ln1.b", &d->ln1_b, true},     {"ln2.w", &d->ln2_w, true},
               {"ln2.b", &d->ln2_b, true}};
    for (size_t i = 0; i < sizeof per / sizeof per[0]; i++) {
        if (strcmp(end + 1, per[i].suffix) == 0 && (!per[i].ln || s->has_ln)) {
            return *per[i].ref;
        }
    }
    return none;
}

int model_cache_new(model_cache **out, model_session *s, size_t B, size_t T, char *err) {
    const model_config *c = &s->m->cfg;
    model_cache *cache = calloc(1, sizeof *cache);
    if (cache) {
        cache->bufs = calloc(model_hook_count(c), sizeof *cache->bufs);
    }
    if (!cache || !cache->bufs) {
        free(cache);
        return common_fail(err, COMMON_ERR_NOMEM, "cache: out of memory");
    }
    cache->be = s->be;
    cache->cfg = c;
    cache->B = B;
    cache->T = T;
    cache->n_hooks = model_hook_count(c);
    *out = cache;
    return 0;
}

void model_cache_destroy(model_cache **cp) {
    if (!cp || !*cp) {
        return;
    }
    model_cache *c = *cp;
    for (size_t i = 0; i < c->n_hooks; i++) {
        if (c->bufs[i]) {
            c->be->free(c->be, c->bufs[i]);
        }
    }
    free(c->bufs);
    free(c);
    *cp = NULL;
}

size_t model_cache_batch(const model_cache *c) {
    return c->B;
}

size_t model_cache_positions(const model_cache *c) {
    return c->T;
}

static bool hook_ok(const model_cache *c, model_hook h) {
    if (h.kind < 0 || h.kind >= MODEL_HOOK_KIND_COUNT) {
        return false;
    }
    if (model_hook_kind_in_block(h.kind)) {
        return h.layer >= 0 && h.layer < c->cfg->n_layers;
    }
    return true;
}

model_buf *model_cache_buf(const model_cache *c, model_hook h) {
    return hook_ok(c, h) ? c->bufs[model_hook_index(c->cfg, h)] : NULL;
}

model_ref model_cache_ref(const model_cache *c, model_hook h) {
    model_ref r = {model_cache_buf(c, h), 0};
    return r;
}

bool model_cache_has(const model_cache *c, model_hook h) {
    return model_cache_buf(c, h) != NULL;
}

bool model_cache_shape(const model_cache *c, model_hook h, model_shape *shape) {
    if (!model_cache_has(c, h)) {
        return false;
    }
    if (shape) {
        *shape = model_hook_shape(c->cfg, h, c->B, c->T);
    }
    return true;
}

int model_cache_ensure(model_cache *c, model_hook h, model_buf **out, char *err) {
    size_t i = model_hook_index(c->cfg, h);
    if (!c->bufs[i]) {
        model_shape s = model_hook_shape(c->cfg, h, c->B, c->T);
        int rc = c->be->alloc(c->be, model_shape_numel(&s), &c->bufs[i], err);
        if (rc) {
            return rc;
        }
    }
    *out = c->bufs[i];
    return 0;
}

static int missing(model_hook h, char *err) {
    char name[96];
    return common_fail(err, COMMON_ERR_NOT_FOUND, "cache holds no '%s'",
                       model_hook_name(h, name, sizeof name));
}

int model_cache_download(const model_cache *c, model_hook h, float *dst, size_t cap, char *err) {
    model_buf *b = model_cache_buf(c, h);
    if (!b) {
        return missing(h, err);
    }
    model_shape s = model_hook_shape(c->cfg, h, c->B, c->T);
    size_t n = model_shape_numel(&s);
    if (n > cap) {
        return common_fail(err, COMMON_ERR_INVALID, "cache download: %zu floats, room for %zu", n,
                           cap);
    }
    model_ref r = {b, 0};
    return c->be->download(c->be, dst, r, n, err);
}

int model_cache_download_row(const model_cache *c, model_hook h, size_t row, float *dst, size_t cap,
                             char *err) {
    model_buf *b = model_cache_buf(c, h);
    if (!b) {
        return missing(h, err);
    }
    if (row >= c->B) {
        return common_fail(err, COMMON_ERR_INVALID, "cache download: row %zu of %zu", row, c->B);
    }
    model_shape s = model_hook_shape(c->cfg, h, c->B, c->T);
    size_t n = model_shape_numel(&s) / c->B;
    if (n > cap) {
        return common_fail(err, COMMON_ERR_INVALID, "cache download: %zu floats, room for %zu", n,
                           cap);
    }
    model_ref r = {b, row * n};
    return c->be->download(c->be, dst, r, n, err);
}

int model_cache_download_position(const model_cache *c, model_hook h, size_t pos, float *dst,
                                  size_t cap, char *err) {
    model_buf *b = model_cache_buf(c, h);
    if (!b) {
        return missing(h, err);
    }
    model_shape s = model_hook_shape(c->cfg, h, c->B, c->T);
    if (s.ndim != 3 || pos >= s.dims[1]) {
        char name[96];
        return common_fail(err, COMMON_ERR_INVALID,
                           "cache download: '%s' is not [B, T, W] or has no position %zu",
                           model_hook_name(h, name, sizeof name), pos);
    }
    size_t B = s.dims[0], T = s.dims[1], W = s.dims[2];
    if (B * W > cap) {
        return common_fail(err, COMMON_ERR_INVALID, "cache download: %zu floats, room for %zu",
                           B * W, cap);
    }
    model_buf *tmp = NULL;
    int rc = c->be->alloc(c->be, B * W, &tmp, err);
    if (rc == 0) {
        rc =
            c->be->copy2d(c->be, (model_ref){tmp, 0}, W, (model_ref){b, pos * W}, T * W, B, W, err);
    }
    if (rc == 0) {
        rc = c->be->download(c->be, dst, (model_ref){tmp, 0}, B * W, err);
    }
    if (tmp != NULL) {
        c->be->free(c->be, tmp);
    }
    return rc;
}

int model_cache_put(model_cache *c, model_hook h, const float *src, size_t n, char *err) {
    if (!hook_ok(c, h)) {
        return common_fail(err, COMMON_ERR_INVALID, "cache put: bad hook");
    }
    model_shape s = model_hook_shape(c->cfg, h, c->B, c->T);
    if (n != model_shape_numel(&s)) {
        char name[96];
        return common_fail(err, COMMON_ERR_INVALID, "cache put '%s': %zu floats, expected %zu",
                           model_hook_name(h, name, sizeof name), n, model_shape_numel(&s));
    }
    model_buf *b;
    int rc = model_cache_ensure(c, h, &b, err);
    if (rc) {
        return rc;
    }
    model_ref r = {b, 0};
    return c->be->upload(c->be, r, src, n, err);
}

size_t model_cache_bytes(const model_cache *c) {
    size_t bytes = 0;
    for (size_t i = 0; i < c->n_hooks; i++) {
        if (c->bufs[i]) {
            model_shape s = model_hook_shape(c->cfg, model_hook_at(c->cfg, i), c->B, c->T);
            bytes += model_shape_numel(&s) * sizeof(float);
        }
    }
    return bytes;
}
