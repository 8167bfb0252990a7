/*
 * The counting backend (model.h, model_backend_count_new): each operation adds to a count and
 * calls the same operation of the wrapped backend with the wrapped backend as its receiver.
 */
#include <stdlib.h>

#include "common/common.h"
#include "model/model.h"

typedef struct counter {
    model_backend *inner;
    model_backend_counts *n;
} counter;

static model_backend *inner_of(model_backend *be, bool device_op) {
    counter *c = be->impl;
    if (device_op) {
        c->n->device_ops++;
    }
    return c->inner;
}

static void wait_counted(model_backend *be) {
    ((counter *)be->impl)->n->host_waits++;
}

static void c_destroy(model_backend *be) {
    free(be->impl);
    free(be);
}

static int c_alloc(model_backend *be, size_t n, model_buf **out, char *err) {
    model_backend *in = inner_of(be, false);
    return in->alloc(in, n, out, err);
}

static void c_free(model_backend *be, model_buf *buf) {
    model_backend *in = inner_of(be, false);
    in->free(in, buf);
}

static void c_mem_stats(const model_backend *be, size_t *in_use, size_t *peak) {
    const counter *c = be->impl;
    c->inner->mem_stats(c->inner, in_use, peak);
}

static void c_reset_peak(model_backend *be) {
    model_backend *in = inner_of(be, false);
    in->reset_peak(in);
}

static int c_upload(model_backend *be, model_ref dst, const void *host, size_t n, char *err) {
    model_backend *in = inner_of(be, true);
    return in->upload(in, dst, host, n, err);
}

static int c_download(model_backend *be, void *host, model_ref src, size_t n, char *err) {
    wait_counted(be);
    ((counter *)be->impl)->n->downloaded += n;
    model_backend *in = inner_of(be, false);
    return in->download(in, host, src, n, err);
}

static int c_sync(model_backend *be, char *err) {
    wait_counted(be);
    model_backend *in = inner_of(be, false);
    return in->sync(in, err);
}

static int c_copy2d(model_backend *be, model_ref dst, size_t dst_ld, model_ref src, size_t src_ld,
                    size_t rows, size_t cols, char *err) {
    model_backend *in = inner_of(be, true);
    return in->copy2d(in, dst, dst_ld, src, src_ld, rows, cols, err);
}

static int c_fill(model_backend *be, model_ref dst, size_t n, float value, char *err) {
    model_backend *in = inner_of(be, true);
    return in->fill(in, dst, n, value, err);
}

static int c_gemm(model_backend *be, const model_gemm *g, char *err) {
    model_backend *in = inner_of(be, true);
    return in->gemm(in, g, err);
}

static int c_add(model_backend *be, model_ref dst, model_ref a, model_ref b, size_t n, char *err) {
    model_backend *in = inner_of(be, true);
    return in->add(in, dst, a, b, n, err);
}

static int c_layer_norm(model_backend *be, model_ref x, model_ref norm, model_ref scale,
                        size_t rows, size_t d, float eps, char *err) {
    model_backend *in = inner_of(be, true);
    return in->layer_norm(in, x, norm, scale, rows, d, eps, err);
}

static int c_affine(model_backend *be, model_ref y, model_ref x, model_ref w, model_ref b,
                    size_t rows, size_t d, char *err) {
    model_backend *in = inner_of(be, true);
    return in->affine(in, y, x, w, b, rows, d, err);
}

static int c_gather_rows(model_backend *be, model_ref dst, model_ref table, model_ref idx, size_t n,
                         size_t d, char *err) {
    model_backend *in = inner_of(be, true);
    return in->gather_rows(in, dst, table, idx, n, d, err);
}

static int c_attn_mask(model_backend *be, model_ref scores, const model_attn_rows *rows,
                       float attn_scale, char *err) {
    model_backend *in = inner_of(be, true);
    return in->attn_mask(in, scores, rows, attn_scale, err);
}

static int c_softmax(model_backend *be, model_ref pattern, model_ref scores,
                     const model_attn_rows *rows, char *err) {
    model_backend *in = inner_of(be, true);
    return in->softmax(in, pattern, scores, rows, err);
}

static int c_gelu_new(model_backend *be, model_ref dst, model_ref src, size_t n, char *err) {
    model_backend *in = inner_of(be, true);
    return in->gelu_new(in, dst, src, n, err);
}

static int c_sum_rows(model_backend *be, model_ref acc, size_t acc_ld, model_ref x, size_t x_ld,
                      model_ref mask, size_t rows, size_t cols, size_t n_groups, char *err) {
    model_backend *in = inner_of(be, true);
    return in->sum_rows(in, acc, acc_ld, x, x_ld, mask, rows, cols, n_groups, err);
}

static int c_centre_scale(model_backend *be, model_ref x, model_ref scale, size_t rows, size_t d,
                          size_t period, char *err) {
    model_backend *in = inner_of(be, true);
    return in->centre_scale(in, x, scale, rows, d, period, err);
}

static int c_row_metrics(model_backend *be, model_ref out, model_ref x, size_t x_ld, model_ref spec,
                         model_ref masks, size_t n_masks, size_t rows, size_t V, char *err) {
    model_backend *in = inner_of(be, true);
    return in->row_metrics(in, out, x, x_ld, spec, masks, n_masks, rows, V, err);
}

static int c_copy_rows(model_backend *be, model_ref dst, size_t dst_ld, size_t dst_rows,
                       model_ref src, size_t src_ld, size_t src_rows, model_ref table, size_t n,
                       size_t cols, char *err) {
    model_backend *in = inner_of(be, true);
    return in->copy_rows(in, dst, dst_ld, dst_rows, src, src_ld, src_rows, table, n, cols, err);
}

static int c_legal_stats(model_backend *be, model_ref acc, size_t acc_T, model_ref x,
                         model_ref legal, size_t n_comp, size_t T, size_t V, char *err) {
    model_backend *in = inner_of(be, true);
    return in->legal_stats(in, acc, acc_T, x, legal, n_comp, T, V, err);
}

static int c_attn_fused(model_backend *be, const model_attn *a, char *err) {
    model_backend *in = inner_of(be, true);
    return in->attn_fused(in, a, err);
}

int model_backend_count_new(model_backend **out, model_backend *inner, model_backend_counts *counts,
                            char *err) {
    *out = NULL;
    model_backend *be = calloc(1, sizeof *be);
    counter *c = calloc(1, sizeof *c);
    if (be == NULL || c == NULL) {
        free(be);
        free(c);
        return common_fail(err, COMMON_ERR_NOMEM, "counting backend: out of memory");
    }
    *c = (counter){inner, counts};
    *be = (model_backend){
        .name = inner->name,
        .impl = c,
        .destroy = c_destroy,
        .alloc = c_alloc,
        .free = c_free,
        .mem_stats = c_mem_stats,
        .reset_peak = c_reset_peak,
        .upload = c_upload,
        .download = c_download,
        .copy2d = c_copy2d,
        .fill = c_fill,
        .gemm = c_gemm,
        .add = c_add,
        .layer_norm = c_layer_norm,
        .affine = c_affine,
        .gather_rows = c_gather_rows,
        .attn_mask = c_attn_mask,
        .softmax = c_softmax,
        .gelu_new = c_gelu_new,
        .sync = c_sync,
        .sum_rows = c_sum_rows,
        .centre_scale = c_centre_scale,
        .legal_stats = c_legal_stats,
        .row_metrics = c_row_metrics,
        .copy_rows = c_copy_rows,
        .attn_fused = inner->attn_fused != NULL ? c_attn_fused : NULL,
    };
    *out = be;
    return 0;
}
