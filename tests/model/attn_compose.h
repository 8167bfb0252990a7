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

#include <stdlib.h>

#include "model/model.h"

/* z of one sequence of `a`, {q_row, kv_row, q_begin, q_end}, by the unfused ops of `be`, with
 * a scratch score buffer [H, q_end, n_keys] (rows q_begin.. used) allocated and freed here. */
static inline int test_attn_compose_seq(model_backend *be, const model_attn *a, const int32_t *seq,
                                        char *err) {
    size_t H = a->n_heads, Dh = a->d_head, nk = a->n_keys;
    size_t q_begin = (size_t)seq[2], q_end = (size_t)seq[3], nq = q_end - q_begin;
    if (nq == 0 || H == 0) {
        return 0;
    }
    model_ref q = {a->q.buf, a->q.off + (size_t)seq[0] * a->q_ld};
    model_ref z = {a->z.buf, a->z.off + (size_t)seq[0] * a->z_ld};
    model_ref k = {a->k.buf, a->k.off + (size_t)seq[1] * a->kv_ld};
    model_ref v = {a->v.buf, a->v.off + (size_t)seq[1] * a->kv_ld};
    model_buf *s = NULL; /* [H, q_end, n_keys] */
    int rc = be->alloc(be, H * q_end * nk, &s, err);
    if (rc != 0) {
        return rc;
    }
    size_t hs = q_end * nk;
    model_ref rows0 = {s, q_begin * nk};
    model_ref base = {s, 0};
    /* scores[h, q, j] = q[q, h] . k[j, h] for j < q_end, as the forward's gemm (n = q_end) */
    model_gemm g1 = {false, true, nq,       q_end, Dh,    1.0f, 0.0f, q, a->q_ld,
                     Dh,    k,    a->kv_ld, Dh,    rows0, nk,   hs,   H};
    model_attn_rows rows = {H, hs, q_begin, q_end, nk, nk};
    /* z[q, h] = pattern[h, q, :q_end] @ v[:q_end, h] */
    model_gemm g2 = {false, false, nq,       Dh, q_end, 1.0f,    0.0f, rows0, nk,
                     hs,    v,     a->kv_ld, Dh, z,     a->z_ld, Dh,   H};
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

/* z of every sequence of `a` (its table read back from `be`), one after another. */
static inline int test_attn_compose(model_backend *be, const model_attn *a, char *err) {
    size_t n = a->n_seqs * MODEL_ATTN_SEQ_FIELDS;
    int32_t *seqs = (int32_t *)malloc((n ? n : 1) * sizeof *seqs);
    if (seqs == NULL) {
        return COMMON_ERR_NOMEM;
    }
    int rc = be->download(be, seqs, a->seqs, n, err);
    for (size_t i = 0; i < a->n_seqs && rc == 0; i++) {
        rc = test_attn_compose_seq(be, a, seqs + i * MODEL_ATTN_SEQ_FIELDS, err);
    }
    free(seqs);
    return rc;
}

#endif
