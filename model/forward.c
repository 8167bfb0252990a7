/*
 * The forward pass: executes a model_request on the session's backend.
 *
 * A run first checks the whole request (so a bad request fails before any work), then lays
 * out the positions to compute: row r computes positions [p_r, len_r), and those rows are
 * packed one after another into matrices of N = sum (len_r - p_r) rows, so every linear layer
 * is a single GEMM whatever mix of rows and prefixes the request holds. When the packing is the
 * identity (every row computes every position), an activation that is cached is computed
 * straight into its cache buffer, so a run that caches every hook holds little more than the
 * tensors it returns. Otherwise activations live in workspace buffers and the cached ones are
 * scattered into the cache afterwards. Keys and values are assembled per layer in [B,T,D]
 * layout (prefix positions from the base cache, computed positions scattered in) because every
 * query attends to all earlier keys. Each of these copies of every row is one copy_rows
 * operation, with tables uploaded once per run alongside the token indices, so a request of
 * many rows makes as many launches for them as a request of one; the attention scores and pattern
 * are always in TL's [B,H,T,T] layout. A backend with fused attention (model.h, attn_fused)
 * computes z without them for every layer whose scores and pattern no hook caches or patches; the
 * CPU backend has none, so its numbers are those of the unfused composition.
 *
 * Numerics follow TL (docs/TL-SEMANTICS.md section 2): LN divides by sqrt(var + eps); scores are
 * divided by attn_scale and masked with -inf; softmax then NaN -> 0; gelu_new; attn_out is
 * z @ W_O + b_O as one GEMM; hook_result (per head, no b_O) is computed only when cached.
 */
#include "model/forward_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct run {
    model_session *s;
    model_backend *be;
    const model_config *cfg;
    const model_request *req;
    model_cache *out;
    size_t B, T, D, H, Dh, M, V;
    size_t *p;                  /* [B] first computed position */
    size_t *len;                /* [B] end of computed positions */
    size_t *start;              /* [B] first packed row of row r */
    size_t *brow;               /* [B] base row */
    size_t N;                   /* packed rows */
    bool identity;              /* packed row index == r * T + t */
    bool *want;                 /* [n_hooks] cached outputs */
    bool *patched;              /* [n_hooks] hooks with a patch */
    model_ref tok_idx, pos_idx; /* int32 [N] */
    /* copy_rows tables [B, 3] of the rows' copies, uploaded with the indices: */
    model_ref t_entry;   /* the base's rows p..len-1 -> the packed rows (the entry residual) */
    model_ref t_prefix;  /* the base's rows 0..p-1 -> the same rows of a [B, T] tensor */
    model_ref t_scatter; /* the packed rows -> rows p..len-1 of a [B, T] tensor */
    model_ref t_attn;    /* attn_fused's sequences [B, 4]: the packed queries, [B, T] keys */
    size_t base_rows;    /* rows of a [B_base, T] tensor of the base (0 without a base) */
    bool any_prefix;     /* some row starts after position 0 */
    char *err;
} run;

static size_t hidx(const run *R, model_hook_kind k, int layer) {
    model_hook h = {k, layer};
    return model_hook_index(R->cfg, h);
}

static model_hook hk(model_hook_kind k, int layer) {
    model_hook h = {k, layer};
    return h;
}

/* Width of one position of a position-major hook. */
static size_t width_of(const run *R, model_hook_kind k) {
    model_shape s = model_hook_shape(R->cfg, hk(k, 0), 1, 1);
    return model_shape_numel(&s);
}

/* Workspace slot of at least n elements, kept by the session between runs (fresh memory for
 * every run would cost a page fault per page). */
static int ws_get(run *R, enum ws_slot slot, size_t n, model_ref *out) {
    model_session *s = R->s;
    if (s->ws[slot] && s->ws_n[slot] < n) {
        R->be->free(R->be, s->ws[slot]);
        s->ws[slot] = NULL;
    }
    if (!s->ws[slot]) {
        int rc = R->be->alloc(R->be, n ? n : 1, &s->ws[slot], R->err);
        if (rc) {
            return rc;
        }
        s->ws_n[slot] = n ? n : 1;
    }
    out->buf = s->ws[slot];
    out->off = 0;
    return 0;
}

static model_ref ref_at(model_buf *b, size_t off) {
    model_ref r = {b, off};
    return r;
}

/* ---------------------------------------------------------------------------------------- */
/* Validation                                                                                */

static int hook_computed(const run *R, model_hook h) {
    const model_request *q = R->req;
    if (model_hook_kind_in_block(h.kind)) {
        return h.layer >= q->start_layer && h.layer < q->stop_layer;
    }
    if (h.kind == MODEL_HOOK_EMBED || h.kind == MODEL_HOOK_POS_EMBED) {
        return q->start_layer == 0;
    }
    return q->stop_layer == R->cfg->n_layers;
}

static bool valid_hook(const model_config *c, model_hook h) {
    if (h.kind < 0 || h.kind >= MODEL_HOOK_KIND_COUNT) {
        return false;
    }
    if (model_hook_kind_in_block(h.kind)) {
        return h.layer >= 0 && h.layer < c->n_layers;
    }
    return true;
}

static bool has_head_axis(model_hook_kind k) {
    return k == MODEL_HOOK_Q || k == MODEL_HOOK_K || k == MODEL_HOOK_V || k == MODEL_HOOK_Z ||
           k == MODEL_HOOK_ATTN_SCORES || k == MODEL_HOOK_PATTERN;
}

static int validate(run *R) {
    const model_request *q = R->req;
    const model_config *c = R->cfg;
    char *err = R->err;
    char name[96];
    if (!q->tokens || q->B == 0 || q->T == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "run: empty token batch");
    }
    if (q->T > (size_t)c->n_ctx) {
        return common_fail(err, COMMON_ERR_INVALID, "run: %zu positions exceed n_ctx %d", q->T,
                           c->n_ctx);
    }
    for (size_t i = 0; i < q->B * q->T; i++) {
        if (q->tokens[i] < 0 || q->tokens[i] >= c->d_vocab) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "run: token %d at row %zu position %zu outside the vocabulary "
                               "(%d)",
                               (int)q->tokens[i], i / q->T, i % q->T, c->d_vocab);
        }
    }
    if (q->start_layer < 0 || q->stop_layer > c->n_layers || q->start_layer > q->stop_layer) {
        return common_fail(err, COMMON_ERR_INVALID, "run: layers [%d, %d) outside [0, %d]",
                           q->start_layer, q->stop_layer, c->n_layers);
    }
    if (q->want_logits && q->stop_layer != c->n_layers) {
        return common_fail(err, COMMON_ERR_INVALID, "run: logits need stop_layer = n_layers");
    }
    const model_cache *base = q->base;
    bool need_base = q->start_layer > 0 || q->start_pos;
    if (need_base && !base) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "run: start_layer > 0 or start_pos needs a base cache");
    }
    if (base && (base->T != q->T || base->cfg != c)) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "run: base cache has %zu positions (request %zu) or another model",
                           base->T, q->T);
    }
    for (size_t r = 0; r < q->B; r++) {
        R->len[r] = q->lengths ? q->lengths[r] : q->T;
        R->p[r] = q->start_pos ? q->start_pos[r] : 0;
        R->brow[r] = q->base_rows ? q->base_rows[r] : r;
        if (R->len[r] > q->T) {
            return common_fail(err, COMMON_ERR_INVALID, "run: length %zu of row %zu exceeds T %zu",
                               R->len[r], r, q->T);
        }
        if (R->p[r] > R->len[r]) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "run: start position %zu of row %zu beyond its length %zu", R->p[r],
                               r, R->len[r]);
        }
        if (base && R->brow[r] >= base->B) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "run: base row %zu of row %zu, base has %zu", R->brow[r], r,
                               base->B);
        }
    }
    bool prefix = false;
    R->N = 0;
    for (size_t r = 0; r < q->B; r++) {
        R->start[r] = R->N;
        R->N += R->len[r] - R->p[r];
        prefix = prefix || R->p[r] > 0;
    }
    R->identity = R->N == q->B * q->T;
    R->any_prefix = prefix;
    R->base_rows = base ? base->B * base->T : 0;
    if (q->start_layer > 0) {
        model_hook a = hk(MODEL_HOOK_RESID_PRE, q->start_layer);
        model_hook b = hk(MODEL_HOOK_RESID_POST, q->start_layer - 1);
        if ((q->start_layer >= c->n_layers || !model_cache_has(base, a)) &&
            !model_cache_has(base, b)) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "run: base cache holds neither blocks.%d.hook_resid_pre nor "
                               "blocks.%d.hook_resid_post",
                               q->start_layer, q->start_layer - 1);
        }
    }
    if (prefix) {
        for (int l = q->start_layer; l < q->stop_layer; l++) {
            if (!model_cache_has(base, hk(MODEL_HOOK_K, l)) ||
                !model_cache_has(base, hk(MODEL_HOOK_V, l))) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "run: incremental run needs blocks.%d.attn.hook_k and hook_v "
                                   "in the base cache",
                                   l);
            }
        }
    }
    /* outputs */
    size_t nh = model_hook_count(c);
    for (size_t i = 0; i < q->n_hooks; i++) {
        if (!valid_hook(c, q->hooks[i])) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "run: hook %zu is not a hook of this "
                               "model",
                               i);
        }
        R->want[model_hook_index(c, q->hooks[i])] = true;
    }
    if (q->want_logits) {
        R->want[hidx(R, MODEL_HOOK_LOGITS, -1)] = true;
    }
    for (size_t i = 0; i < nh; i++) {
        if (!R->want[i]) {
            continue;
        }
        model_hook h = model_hook_at(c, i);
        bool computed = hook_computed(R, h);
        if ((!computed || prefix) && !model_cache_has(base, h)) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "run: '%s' is %s by this run and the base cache does not hold it",
                               model_hook_name(h, name, sizeof name),
                               computed ? "only partly computed" : "not computed");
        }
    }
    /* patches */
    for (size_t i = 0; i < q->n_patches; i++) {
        const model_patch *pa = &q->patches[i];
        model_hook h = pa->hook;
        if (!valid_hook(c, h) || h.kind == MODEL_HOOK_LOGITS) {
            return common_fail(err, COMMON_ERR_INVALID, "run: patch %zu names no patchable hook",
                               i);
        }
        model_hook_name(h, name, sizeof name);
        if (h.kind == MODEL_HOOK_LN1_SCALE || h.kind == MODEL_HOOK_LN2_SCALE ||
            h.kind == MODEL_HOOK_LN_FINAL_SCALE || h.kind == MODEL_HOOK_RESULT) {
            return common_fail(err, COMMON_ERR_UNSUPPORTED, "run: patching '%s' is not supported",
                               name);
        }
        if (!hook_computed(R, h)) {
            return common_fail(err, COMMON_ERR_INVALID, "run: patch of '%s' outside the layers run",
                               name);
        }
        if (!pa->src || !model_cache_has(pa->src, h) || pa->src->T != q->T || pa->src->cfg != c) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "run: patch source for '%s' does not hold it with %zu positions",
                               name, q->T);
        }
        if (pa->row != MODEL_ALL && (pa->row < 0 || (size_t)pa->row >= q->B)) {
            return common_fail(err, COMMON_ERR_INVALID, "run: patch of '%s': row %d of %zu", name,
                               pa->row, q->B);
        }
        if (pa->head != MODEL_ALL &&
            (!has_head_axis(h.kind) || pa->head < 0 || pa->head >= c->n_heads)) {
            return common_fail(err, COMMON_ERR_INVALID, "run: patch of '%s': bad head %d", name,
                               pa->head);
        }
        if (pa->pos != MODEL_ALL && (pa->pos < 0 || (size_t)pa->pos >= q->T)) {
            return common_fail(err, COMMON_ERR_INVALID, "run: patch of '%s': position %d of %zu",
                               name, pa->pos, q->T);
        }
        if (pa->key_pos != MODEL_ALL) {
            if (h.kind != MODEL_HOOK_ATTN_SCORES && h.kind != MODEL_HOOK_PATTERN) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "run: patch of '%s': key position %d, but only attn_scores and "
                                   "pattern have a key axis (use MODEL_ALL)",
                                   name, pa->key_pos);
            }
            if (pa->key_pos < 0 || (size_t)pa->key_pos >= q->T) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "run: patch of '%s': key position %d of %zu", name, pa->key_pos,
                                   q->T);
            }
        }
        for (size_t r = 0; r < q->B; r++) {
            if (pa->row != MODEL_ALL && (size_t)pa->row != r) {
                continue;
            }
            size_t sr = pa->src_row == MODEL_ALL ? r : (size_t)pa->src_row;
            if (pa->src_row < MODEL_ALL || sr >= pa->src->B) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "run: patch of '%s': source row %zu of %zu", name, sr,
                                   pa->src->B);
            }
            if (pa->pos == MODEL_ALL
                    ? R->p[r] > 0
                    : ((size_t)pa->pos < R->p[r] || (size_t)pa->pos >= R->len[r])) {
                return common_fail(err, COMMON_ERR_INVALID,
                                   "run: patch of '%s' at row %zu touches positions this run does "
                                   "not compute ([%zu, %zu))",
                                   name, r, R->p[r], R->len[r]);
            }
        }
        R->patched[model_hook_index(c, h)] = true;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Outputs: prefill from the base, homes, patches, scatter                                   */

/* Copies the parts of hook h that this run does not compute from the base (or zero for
 * positions past a row's length). */
static int prefill(run *R, model_hook h, model_buf *dst) {
    model_backend *be = R->be;
    const model_cache *base = R->req->base;
    size_t T = R->T;
    model_shape s = model_hook_shape(R->cfg, h, R->B, T);
    size_t row_n = model_shape_numel(&s) / R->B;
    model_buf *src = base ? model_cache_buf(base, h) : NULL;
    int rc = 0;
    if (!hook_computed(R, h)) {
        for (size_t r = 0; r < R->B && !rc; r++) {
            rc = be->copy2d(be, ref_at(dst, r * row_n), row_n, ref_at(src, R->brow[r] * row_n),
                            row_n, 1, row_n, R->err);
        }
        return rc;
    }
    bool pm = model_hook_position_major(h.kind);
    size_t w = pm ? row_n / T : T; /* floats per position (per query row) */
    size_t heads = pm ? 1 : R->H;  /* blocks of T rows within a batch row */
    if (pm && R->any_prefix) {     /* every row's prefix in one operation */
        rc = be->copy_rows(be, ref_at(dst, 0), w, R->B * T, ref_at(src, 0), w, R->base_rows,
                           R->t_prefix, R->B, w, R->err);
    }
    for (size_t r = 0; r < R->B && !rc; r++) {
        for (size_t hh = 0; hh < heads && !rc; hh++) {
            size_t o = r * row_n + hh * T * T;
            if (!pm && R->p[r] > 0) {
                size_t so = R->brow[r] * row_n + hh * T * T;
                rc = be->copy2d(be, ref_at(dst, o), w, ref_at(src, so), w, R->p[r], w, R->err);
            }
            if (!rc && R->len[r] < T) {
                rc =
                    be->fill(be, ref_at(dst, o + R->len[r] * w), (T - R->len[r]) * w, 0.0f, R->err);
            }
        }
    }
    return rc;
}

/* Where the packed [N, width] activation of hook h is computed: its cache buffer when the
 * packing is the identity, else workspace `slot`. */
static int home(run *R, model_hook_kind k, int layer, enum ws_slot slot, size_t width,
                model_ref *out) {
    size_t i = hidx(R, k, layer);
    if (R->want[i] && R->identity) {
        out->buf = R->out->bufs[i];
        out->off = 0;
        return 0;
    }
    return ws_get(R, slot, R->N * width, out);
}

/* Copies the computed packed rows of a position-major hook into its cache buffer, unless they
 * were computed in place. */
static int finish(run *R, model_hook_kind k, int layer, model_ref packed, size_t width) {
    size_t i = hidx(R, k, layer);
    if (!R->want[i] || R->identity) {
        return 0;
    }
    return R->be->copy_rows(R->be, ref_at(R->out->bufs[i], 0), width, R->B * R->T, packed, width,
                            R->N, R->t_scatter, R->B, width, R->err);
}

/* Applies every patch of hook (k, layer) to its activation. Position-major hooks are packed
 * [N, width] at `act`; attention hooks are [B,H,T,T] at `act`. */
static int apply_patches(run *R, model_hook_kind k, int layer, model_ref act, size_t width) {
    const model_request *q = R->req;
    if (!R->patched[hidx(R, k, layer)]) {
        return 0;
    }
    size_t T = R->T, H = R->H;
    for (size_t i = 0; i < q->n_patches; i++) {
        const model_patch *pa = &q->patches[i];
        if (pa->hook.kind != k || (model_hook_kind_in_block(k) && pa->hook.layer != layer)) {
            continue;
        }
        model_buf *src = model_cache_buf(pa->src, pa->hook);
        for (size_t r = 0; r < R->B; r++) {
            if (pa->row != MODEL_ALL && (size_t)pa->row != r) {
                continue;
            }
            size_t sr = pa->src_row == MODEL_ALL ? r : (size_t)pa->src_row;
            size_t t0 = pa->pos == MODEL_ALL ? R->p[r] : (size_t)pa->pos;
            size_t t1 = pa->pos == MODEL_ALL ? R->len[r] : (size_t)pa->pos + 1;
            if (t1 <= t0) {
                continue;
            }
            int rc = 0;
            if (model_hook_position_major(k)) {
                size_t seg = width, seg_off = 0;
                if (pa->head != MODEL_ALL) {
                    seg = width / H;
                    seg_off = (size_t)pa->head * seg;
                }
                size_t d = act.off + (R->start[r] + t0 - R->p[r]) * width + seg_off;
                size_t so = (sr * T + t0) * width + seg_off;
                rc = R->be->copy2d(R->be, ref_at(act.buf, d), width, ref_at(src, so), width,
                                   t1 - t0, seg, R->err);
            } else {
                /* [B,H,T,T]: query rows t0..t1-1 of each head, each whole (T keys) or the one
                 * element at key_pos. */
                size_t h0 = pa->head == MODEL_ALL ? 0 : (size_t)pa->head;
                size_t h1 = pa->head == MODEL_ALL ? H : h0 + 1;
                size_t k0 = pa->key_pos == MODEL_ALL ? 0 : (size_t)pa->key_pos;
                size_t nk = pa->key_pos == MODEL_ALL ? T : 1;
                for (size_t h = h0; h < h1 && !rc; h++) {
                    size_t d = act.off + ((r * H + h) * T + t0) * T + k0;
                    size_t so = ((sr * H + h) * T + t0) * T + k0;
                    rc = R->be->copy2d(R->be, ref_at(act.buf, d), T, ref_at(src, so), T, t1 - t0,
                                       nk, R->err);
                }
            }
            if (rc) {
                return rc;
            }
        }
    }
    return 0;
}

/* A position-major activation has been computed at `act`: patch it, then cache it. */
static int emit(run *R, model_hook_kind k, int layer, model_ref act) {
    size_t w = width_of(R, k);
    int rc = apply_patches(R, k, layer, act, w);
    return rc ? rc : finish(R, k, layer, act, w);
}

static bool needs_home(const run *R, model_hook_kind k, int layer) {
    size_t i = hidx(R, k, layer);
    return R->want[i] || R->patched[i];
}

/* ---------------------------------------------------------------------------------------- */
/* Building blocks                                                                           */

/* out [N, n] = bias [n] + x [N, k] @ W [k, n], as torch.addmm (TL's F.linear / addmm): the
 * bias is broadcast into out and the GEMM accumulates onto it (beta = 1). */
static int linear(run *R, model_ref out, model_ref x, model_ref W, model_ref bias, size_t k,
                  size_t n) {
    int rc = R->be->copy2d(R->be, out, n, bias, 0, R->N, n, R->err);
    if (rc == 0) {
        model_gemm g = {false, false, R->N, n, k, 1.0f, 1.0f, x, k, 0, W, n, 0, out, n, 0, 1};
        rc = R->be->gemm(R->be, &g, R->err);
    }
    return rc;
}

/* LayerNorm(Pre) of x [N,D] with hooks (scale_kind, norm_kind) at layer; *y receives the input
 * of the next linear layer (normalized, or normalized * w + b without fold_ln). */
static int layer_norm(run *R, model_ref x, model_hook_kind scale_kind, model_hook_kind norm_kind,
                      int layer, model_ref w, model_ref b, model_ref *y) {
    model_ref scale, norm; /* [N] and [N,D], packed */
    int rc;
    if ((rc = home(R, scale_kind, layer, WS_LN_SCALE, 1, &scale)) ||
        (rc = home(R, norm_kind, layer, WS_LN_NORM, R->D, &norm)) ||
        (rc = R->be->layer_norm(R->be, x, norm, scale, R->N, R->D, R->cfg->eps, R->err)) ||
        (rc = emit(R, scale_kind, layer, scale)) || (rc = emit(R, norm_kind, layer, norm))) {
        return rc;
    }
    if (R->s->has_ln) {
        if ((rc = ws_get(R, WS_LN_Y, R->N * R->D, y)) ||
            (rc = R->be->affine(R->be, *y, norm, w, b, R->N, R->D, R->err))) {
            return rc;
        }
    } else {
        *y = norm;
    }
    return 0;
}

/* Keys or values of layer l in [B*T, D] layout for attention: prefix positions from the base,
 * computed positions from x @ W + b. */
static int keys_values(run *R, int l, model_hook_kind k, model_ref x, model_ref W, model_ref bias,
                       model_ref *full) {
    size_t T = R->T, D = R->D;
    size_t i = hidx(R, k, l);
    bool kk = k == MODEL_HOOK_K;
    int rc;
    if (R->want[i]) {
        *full = ref_at(R->out->bufs[i], 0); /* prefix already copied by prefill */
    } else {
        if ((rc = ws_get(R, kk ? WS_KFULL : WS_VFULL, R->B * T * D, full))) {
            return rc;
        }
        model_buf *src = R->req->base ? model_cache_buf(R->req->base, hk(k, l)) : NULL;
        if (R->any_prefix && (rc = R->be->copy_rows(R->be, *full, D, R->B * T, ref_at(src, 0), D,
                                                    R->base_rows, R->t_prefix, R->B, D, R->err))) {
            return rc;
        }
    }
    model_ref packed = *full;
    if (!R->identity && (rc = ws_get(R, kk ? WS_KP : WS_VP, R->N * D, &packed))) {
        return rc;
    }
    if ((rc = linear(R, packed, x, W, bias, D, D)) || (rc = apply_patches(R, k, l, packed, D))) {
        return rc;
    }
    if (R->identity) {
        return 0;
    }
    return R->be->copy_rows(R->be, *full, D, R->B * T, packed, D, R->N, R->t_scatter, R->B, D,
                            R->err);
}

/* From z [N, H*Dh] packed (computed, not yet emitted) to attn_out: hook_z, hook_result when
 * cached, and z @ W_O + b_O. */
static int attention_out(run *R, int l, model_ref z, model_ref *attn_out) {
    const dev_layer *d = &R->s->layers[l];
    model_backend *be = R->be;
    size_t D = R->D, H = R->H, Dh = R->Dh;
    int rc;
    if ((rc = emit(R, MODEL_HOOK_Z, l, z))) {
        return rc;
    }
    if (R->want[hidx(R, MODEL_HOOK_RESULT, l)]) {
        model_ref res; /* [N, H, D] packed */
        if ((rc = home(R, MODEL_HOOK_RESULT, l, WS_RESULT, H * D, &res))) {
            return rc;
        }
        /* result[:, h, :] = z[:, h, :] @ W_O[h] (no b_O) */
        model_gemm g = {false, false, R->N, D,      Dh,  1.0f,  0.0f, z, D,
                        Dh,    d->Wo, D,    Dh * D, res, H * D, D,    H};
        if ((rc = be->gemm(be, &g, R->err)) || (rc = emit(R, MODEL_HOOK_RESULT, l, res))) {
            return rc;
        }
    }
    if ((rc = home(R, MODEL_HOOK_ATTN_OUT, l, WS_ATTN_OUT, D, attn_out)) ||
        (rc = linear(R, *attn_out, z, d->Wo, d->bo, D, D)) ||
        (rc = emit(R, MODEL_HOOK_ATTN_OUT, l, *attn_out))) {
        return rc;
    }
    return 0;
}

static int attention(run *R, int l, model_ref y, model_ref *attn_out) {
    const dev_layer *d = &R->s->layers[l];
    model_backend *be = R->be;
    size_t T = R->T, D = R->D, H = R->H, Dh = R->Dh;
    model_ref q;               /* [N, H*Dh] packed */
    model_ref kf, vf;          /* [B*T, H*Dh] */
    model_ref scores, pattern; /* [B,H,T,T] */
    model_ref z;               /* [N, H*Dh] packed */
    int rc;
    if ((rc = home(R, MODEL_HOOK_Q, l, WS_Q, D, &q)) ||
        (rc = linear(R, q, y, d->Wq, d->bq, D, D)) || (rc = emit(R, MODEL_HOOK_Q, l, q)) ||
        (rc = keys_values(R, l, MODEL_HOOK_K, y, d->Wk, d->bk, &kf)) ||
        (rc = keys_values(R, l, MODEL_HOOK_V, y, d->Wv, d->bv, &vf))) {
        return rc;
    }
    if (be->attn_fused && !needs_home(R, MODEL_HOOK_ATTN_SCORES, l) &&
        !needs_home(R, MODEL_HOOK_PATTERN, l)) {
        /* Nobody reads or replaces this layer's scores or pattern: the backend's fused
         * attention computes z without the [B,H,T,T] tensors (model.h, attn_fused). */
        if ((rc = home(R, MODEL_HOOK_Z, l, WS_Z, D, &z))) {
            return rc;
        }
        model_attn a = {.n_heads = H,
                        .d_head = Dh,
                        .n_keys = T,
                        .q = q,
                        .q_ld = D,
                        .k = kf,
                        .v = vf,
                        .kv_ld = D,
                        .z = z,
                        .z_ld = D,
                        .attn_scale = R->cfg->attn_scale,
                        .seqs = R->t_attn,
                        .n_seqs = R->B,
                        .q_rows = R->N,
                        .kv_rows = R->B * T};
        rc = be->attn_fused(be, &a, R->err);
        return rc ? rc : attention_out(R, l, z, attn_out);
    }
    size_t si = hidx(R, MODEL_HOOK_ATTN_SCORES, l), pi = hidx(R, MODEL_HOOK_PATTERN, l);
    if (R->want[si]) {
        scores = ref_at(R->out->bufs[si], 0);
    } else if ((rc = ws_get(R, WS_SCORES, R->B * H * T * T, &scores))) {
        return rc;
    }
    if (R->want[pi]) {
        pattern = ref_at(R->out->bufs[pi], 0);
    } else if (!R->want[si]) {
        pattern = scores; /* softmax in place */
    } else if ((rc = ws_get(R, WS_PATTERN, R->B * H * T * T, &pattern))) {
        return rc;
    }
    for (size_t r = 0; r < R->B; r++) {
        size_t n = R->len[r] - R->p[r];
        if (n == 0) {
            continue;
        }
        model_gemm g = {false,
                        true,
                        n,
                        R->len[r],
                        Dh,
                        1.0f,
                        0.0f,
                        ref_at(q.buf, q.off + R->start[r] * D),
                        D,
                        Dh,
                        ref_at(kf.buf, kf.off + r * T * D),
                        D,
                        Dh,
                        ref_at(scores.buf, scores.off + r * H * T * T + R->p[r] * T),
                        T,
                        T * T,
                        H};
        model_attn_rows rows = {H, T * T, R->p[r], R->len[r], T, T};
        if ((rc = be->gemm(be, &g, R->err)) ||
            (rc = be->attn_mask(be, ref_at(scores.buf, scores.off + r * H * T * T), &rows,
                                R->cfg->attn_scale, R->err))) {
            return rc;
        }
    }
    if ((rc = apply_patches(R, MODEL_HOOK_ATTN_SCORES, l, scores, 0))) {
        return rc;
    }
    for (size_t r = 0; r < R->B; r++) {
        if (R->len[r] == R->p[r]) {
            continue;
        }
        model_attn_rows rows = {H, T * T, R->p[r], R->len[r], T, T};
        if ((rc = be->softmax(be, ref_at(pattern.buf, pattern.off + r * H * T * T),
                              ref_at(scores.buf, scores.off + r * H * T * T), &rows, R->err))) {
            return rc;
        }
    }
    if ((rc = apply_patches(R, MODEL_HOOK_PATTERN, l, pattern, 0)) ||
        (rc = home(R, MODEL_HOOK_Z, l, WS_Z, D, &z))) {
        return rc;
    }
    for (size_t r = 0; r < R->B; r++) {
        size_t n = R->len[r] - R->p[r];
        if (n == 0) {
            continue;
        }
        model_gemm g = {false,
                        false,
                        n,
                        Dh,
                        R->len[r],
                        1.0f,
                        0.0f,
                        ref_at(pattern.buf, pattern.off + r * H * T * T + R->p[r] * T),
                        T,
                        T * T,
                        ref_at(vf.buf, vf.off + r * T * D),
                        D,
                        Dh,
                        ref_at(z.buf, z.off + R->start[r] * D),
                        D,
                        Dh,
                        H};
        if ((rc = be->gemm(be, &g, R->err))) {
            return rc;
        }
    }
    return attention_out(R, l, z, attn_out);
}

static int block(run *R, int l, model_ref *x) {
    const dev_layer *d = &R->s->layers[l];
    model_backend *be = R->be;
    size_t D = R->D, M = R->M, N = R->N;
    model_ref y;                  /* [N,D] LN output */
    model_ref attn_out, mid, out; /* [N,D] */
    model_ref pre, post;          /* [N,M] */
    model_ref mlp_out;            /* [N,D] */
    int rc;
    if (needs_home(R, MODEL_HOOK_RESID_PRE, l)) {
        model_ref pre_home; /* [N,D] */
        if ((rc = home(R, MODEL_HOOK_RESID_PRE, l, WS_PRE, D, &pre_home)) ||
            (rc = be->copy2d(be, pre_home, D, *x, D, N, D, R->err)) ||
            (rc = emit(R, MODEL_HOOK_RESID_PRE, l, pre_home))) {
            return rc;
        }
        *x = pre_home;
    }
    if ((rc = layer_norm(R, *x, MODEL_HOOK_LN1_SCALE, MODEL_HOOK_LN1_NORMALIZED, l, d->ln1_w,
                         d->ln1_b, &y)) ||
        (rc = attention(R, l, y, &attn_out)) ||
        (rc = home(R, MODEL_HOOK_RESID_MID, l, WS_MID, D, &mid)) ||
        (rc = be->add(be, mid, *x, attn_out, N * D, R->err)) ||
        (rc = emit(R, MODEL_HOOK_RESID_MID, l, mid)) ||
        (rc = layer_norm(R, mid, MODEL_HOOK_LN2_SCALE, MODEL_HOOK_LN2_NORMALIZED, l, d->ln2_w,
                         d->ln2_b, &y)) ||
        (rc = home(R, MODEL_HOOK_MLP_PRE, l, WS_MLP_PRE, M, &pre)) ||
        (rc = linear(R, pre, y, d->Win, d->bin, D, M)) ||
        (rc = emit(R, MODEL_HOOK_MLP_PRE, l, pre))) {
        return rc;
    }
    if (needs_home(R, MODEL_HOOK_MLP_PRE, l) || needs_home(R, MODEL_HOOK_MLP_POST, l)) {
        rc = home(R, MODEL_HOOK_MLP_POST, l, WS_MLP_POST, M, &post);
    } else {
        post = pre; /* gelu in place: nobody else reads pre */
        rc = 0;
    }
    if (rc || (rc = be->gelu_new(be, post, pre, N * M, R->err)) ||
        (rc = emit(R, MODEL_HOOK_MLP_POST, l, post)) ||
        (rc = home(R, MODEL_HOOK_MLP_OUT, l, WS_MLP_OUT, D, &mlp_out)) ||
        (rc = linear(R, mlp_out, post, d->Wout, d->bout, M, D)) ||
        (rc = emit(R, MODEL_HOOK_MLP_OUT, l, mlp_out)) ||
        (rc = home(R, MODEL_HOOK_RESID_POST, l, WS_POST, D, &out)) ||
        (rc = be->add(be, out, mid, mlp_out, N * D, R->err)) ||
        (rc = emit(R, MODEL_HOOK_RESID_POST, l, out))) {
        return rc;
    }
    *x = out;
    return 0;
}

/* The residual entering start_layer, packed [N, D]. */
static int entry_residual(run *R, model_ref *x) {
    model_backend *be = R->be;
    size_t D = R->D, N = R->N;
    const model_request *q = R->req;
    int rc;
    if (q->start_layer == 0) {
        model_ref emb, pos; /* [N,D] */
        if ((rc = home(R, MODEL_HOOK_EMBED, -1, WS_EMB, D, &emb)) ||
            (rc = be->gather_rows(be, emb, R->s->W_E, R->tok_idx, N, D, R->err)) ||
            (rc = emit(R, MODEL_HOOK_EMBED, -1, emb)) ||
            (rc = home(R, MODEL_HOOK_POS_EMBED, -1, WS_POS, D, &pos)) ||
            (rc = be->gather_rows(be, pos, R->s->W_pos, R->pos_idx, N, D, R->err)) ||
            (rc = emit(R, MODEL_HOOK_POS_EMBED, -1, pos)) || (rc = ws_get(R, WS_POST, N * D, x))) {
            return rc;
        }
        return be->add(be, *x, emb, pos, N * D, R->err);
    }
    model_hook a = hk(MODEL_HOOK_RESID_PRE, q->start_layer);
    model_buf *src = q->start_layer < R->cfg->n_layers ? model_cache_buf(q->base, a) : NULL;
    if (!src) {
        src = model_cache_buf(q->base, hk(MODEL_HOOK_RESID_POST, q->start_layer - 1));
    }
    if ((rc = ws_get(R, WS_POST, N * D, x))) {
        return rc;
    }
    return be->copy_rows(be, *x, D, N, ref_at(src, 0), D, R->base_rows, R->t_entry, R->B, D,
                         R->err);
}

static int unembed(run *R, model_ref x) {
    model_ref y, logits; /* [N,D], [N,V] */
    int rc;
    if ((rc = layer_norm(R, x, MODEL_HOOK_LN_FINAL_SCALE, MODEL_HOOK_LN_FINAL_NORMALIZED, -1,
                         R->s->lnf_w, R->s->lnf_b, &y))) {
        return rc;
    }
    if (!needs_home(R, MODEL_HOOK_LOGITS, -1)) {
        return 0;
    }
    if ((rc = home(R, MODEL_HOOK_LOGITS, -1, WS_LOGITS, R->V, &logits)) ||
        (rc = linear(R, logits, y, R->s->W_U, R->s->b_U, R->D, R->V)) ||
        (rc = emit(R, MODEL_HOOK_LOGITS, -1, logits))) {
        return rc;
    }
    return 0;
}

_Static_assert(MODEL_COPY_ROWS_FIELDS == 3, "a copy_rows entry is {dst_row, src_row, rows}");
_Static_assert(MODEL_ATTN_SEQ_FIELDS == 4, "a sequence is {q_row, kv_row, q_begin, q_end}");

/* Uploads, in one transfer, the packed rows' token ids and positions (the embeddings' gathers),
 * the copy_rows tables of the rows' copies and attn_fused's sequences. */
static int upload_indices(run *R) {
    size_t B = R->B, T = R->T, N = R->N, F = MODEL_COPY_ROWS_FIELDS;
    if (B * T > INT32_MAX || R->base_rows > INT32_MAX) {
        return common_fail(R->err, COMMON_ERR_INVALID, "run: %zu x %zu positions", B, T);
    }
    size_t n = 2 * N + 3 * F * B + MODEL_ATTN_SEQ_FIELDS * B;
    int32_t *idx = malloc(n * sizeof *idx);
    if (!idx) {
        return common_fail(R->err, COMMON_ERR_NOMEM, "run: out of memory");
    }
    int32_t *entry = idx + 2 * N, *prefix = entry + F * B, *scatter = prefix + F * B;
    int32_t *attn = scatter + F * B;
    for (size_t r = 0; r < B; r++) {
        for (size_t t = R->p[r]; t < R->len[r]; t++) {
            size_t i = R->start[r] + t - R->p[r];
            idx[i] = R->req->tokens[r * T + t];
            idx[N + i] = (int32_t)t;
        }
        int32_t p = (int32_t)R->p[r], m = (int32_t)(R->len[r] - R->p[r]);
        int32_t base = (int32_t)(R->brow[r] * T), own = (int32_t)(r * T);
        int32_t packed = (int32_t)R->start[r];
        memcpy(entry + F * r, (int32_t[]){packed, base + p, m}, sizeof(int32_t[3]));
        memcpy(prefix + F * r, (int32_t[]){own, base, p}, sizeof(int32_t[3]));
        memcpy(scatter + F * r, (int32_t[]){own + p, packed, m}, sizeof(int32_t[3]));
        memcpy(attn + MODEL_ATTN_SEQ_FIELDS * r, (int32_t[]){packed, own, p, (int32_t)R->len[r]},
               sizeof(int32_t[4]));
    }
    model_ref all; /* int32: token ids [N], positions [N], then the three tables */
    int rc = ws_get(R, WS_IDX, n, &all);
    if (rc == 0) {
        rc = R->be->upload(R->be, all, idx, n, R->err);
    }
    free(idx);
    R->tok_idx = all;
    R->pos_idx = ref_at(all.buf, N);
    R->t_entry = ref_at(all.buf, 2 * N);
    R->t_prefix = ref_at(all.buf, 2 * N + F * B);
    R->t_scatter = ref_at(all.buf, 2 * N + 2 * F * B);
    R->t_attn = ref_at(all.buf, 2 * N + 3 * F * B);
    return rc;
}

void model_request_init(model_request *r, const model_session *s, const int32_t *tokens, size_t B,
                        size_t T) {
    memset(r, 0, sizeof *r);
    r->tokens = tokens;
    r->B = B;
    r->T = T;
    r->want_logits = true;
    r->start_layer = 0;
    r->stop_layer = s->m->cfg.n_layers;
}

int model_run(model_session *s, const model_request *req, model_cache **out, char *err) {
    const model_config *c = &s->m->cfg;
    size_t nh = model_hook_count(c);
    run R;
    memset(&R, 0, sizeof R);
    R.s = s;
    R.be = s->be;
    R.cfg = c;
    R.req = req;
    R.err = err;
    R.B = req->B;
    R.T = req->T;
    R.D = (size_t)c->d_model;
    R.H = (size_t)c->n_heads;
    R.Dh = (size_t)c->d_head;
    R.M = (size_t)c->d_mlp;
    R.V = (size_t)c->d_vocab;
    int rc;
    size_t B = req->B ? req->B : 1;
    R.p = calloc(B, sizeof *R.p);
    R.len = calloc(B, sizeof *R.len);
    R.start = calloc(B, sizeof *R.start);
    R.brow = calloc(B, sizeof *R.brow);
    R.want = calloc(nh, sizeof *R.want);
    R.patched = calloc(nh, sizeof *R.patched);
    if (!R.p || !R.len || !R.start || !R.brow || !R.want || !R.patched) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "run: out of memory");
        goto done;
    }
    if ((rc = validate(&R)) || (rc = model_cache_new(&R.out, s, R.B, R.T, err)) ||
        (R.B > 0 && (rc = upload_indices(&R)))) {
        goto done;
    }
    for (size_t i = 0; i < nh; i++) {
        model_buf *b;
        if (R.want[i] && ((rc = model_cache_ensure(R.out, model_hook_at(c, i), &b, err)) ||
                          (rc = prefill(&R, model_hook_at(c, i), b)))) {
            goto done;
        }
    }
    model_ref x = {NULL, 0};
    if (R.N > 0) {
        if ((rc = entry_residual(&R, &x))) {
            goto done;
        }
        for (int l = req->start_layer; l < req->stop_layer; l++) {
            if ((rc = block(&R, l, &x))) {
                goto done;
            }
        }
        if (req->stop_layer == c->n_layers && (rc = unembed(&R, x))) {
            goto done;
        }
    }
    rc = R.be->sync(R.be, err);
done:
    if (rc == 0) {
        *out = R.out;
    } else {
        model_cache_destroy(&R.out);
    }
    free(R.p);
    free(R.len);
    free(R.start);
    free(R.brow);
    free(R.want);
    free(R.patched);
    return rc;
}
