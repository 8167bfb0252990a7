/*
 * The reference for the optional backend op attn_fused (model.h, model_attn): the unfused
 * composition the forward pass makes (scores gemm, attn_mask, softmax in place, gemm with V),
 * on any backend's own ops, in the same geometry and order. On the CPU backend it gives what
 * the forward's unfused path gives bit for bit; the model tests install it as attn_fused of a
 * wrapped CPU backend to test when the forward chooses the fused path, and the GPU test
 * compares the CUDA kernel with it.
 */
#ifndef CHESSLENS_TESTS_ATTN_COMPOSE_H
#define CHESSLENS_TESTS_ATTN_COMPOSE_H

#include "model/model.h"

/* z of `a` by the unfused ops of `be`, with a scratch score buffer [H, q_end, n_keys] (rows
 * q_begin.. used) allocated and freed here. */
static inline int test_attn_compose(model_backend *be, const model_attn *a, char *err) {
    size_t H = a->n_heads, Dh = a->d_head, nq = a->q_end - a->q_begin, nk = a->n_keys;
    if (nq == 0 || H == 0) {
        return 0;
    }
    model_buf *s = NULL; /* [H, q_end, n_keys] */
    int rc = be->alloc(be, H * a->q_end * nk, &s, err);
    if (rc != 0) {
        return rc;
    }
    size_t hs = a->q_end * nk;
    model_ref rows0 = {s, a->q_begin * nk};
    model_ref base = {s, 0};
    /* scores[h, q, j] = q[q, h] . k[j, h] for j < q_end, as the forward's gemm (n = q_end) */
    model_gemm g1 = {false, true, nq,       a->q_end, Dh,    1.0f, 0.0f, a->q, a->q_ld,
                     Dh,    a->k, a->kv_ld, Dh,       rows0, nk,   hs,   H};
    model_attn_rows rows = {H, hs, a->q_begin, a->q_end, nk, nk};
    /* z[q, h] = pattern[h, q, :q_end] @ v[:q_end, h] */
    model_gemm g2 = {false, false, nq,       Dh, a->q_end, 1.0f,    0.0f, rows0, nk,
                     hs,    a->v,  a->kv_ld, Dh, a->z,     a->z_ld, Dh,   H};
    if ((rc = be->gemm(be, &g1, err)) == 0 &&
        (rc = be->attn_mask(be, base, &rows, a->attn_scale, err)) == 0 &&
        (rc = be->softmax(be, base, base, &rows, err)) == 0) {
        rc = be->gemm(be, &g2, err);
    }
    if (rc == 0) {
        rc = be->sync(be, err); /* the scratch is freed below */
    }
    be->free(be, s);
    return rc;
}

#endif
