/*
 * Private types of the forward pass: the session (parameters on a backend) and the cache
 * (hook tensors on a backend), shared by session.c and forward.c.
 */
#ifndef CHESSLENS_MODEL_FORWARD_INT_H
#define CHESSLENS_MODEL_FORWARD_INT_H

#include "model/model_int.h"

/* Device parameters of one block; ln* only for models without fold_ln. */
typedef struct dev_layer {
    model_ref ln1_w, ln1_b;         /* [D] */
    model_ref Wq, Wk, Wv;           /* [D, H*Dh] */
    model_ref bq, bk, bv;           /* [H*Dh] */
    model_ref Wo;                   /* [H*Dh, D] */
    model_ref bo;                   /* [D] */
    model_ref ln2_w, ln2_b;         /* [D] */
    model_ref Win, bin, Wout, bout; /* [D,M], [M], [M,D], [D] */
} dev_layer;

/* Workspace slots of the forward pass (forward.c). */
enum ws_slot {
    WS_EMB,
    WS_POS,
    WS_PRE,
    WS_MID,
    WS_POST,
    WS_LN_SCALE,
    WS_LN_NORM,
    WS_LN_Y,
    WS_Q,
    WS_KP,
    WS_VP,
    WS_KFULL,
    WS_VFULL,
    WS_SCORES,
    WS_PATTERN,
    WS_Z,
    WS_RESULT,
    WS_ATTN_OUT,
    WS_MLP_PRE,
    WS_MLP_POST,
    WS_MLP_OUT,
    WS_LOGITS,
    WS_IDX,
    WS_COUNT
};

struct model_session {
    const model *m;
    model_backend *be;
    model_buf *weights; /* every parameter, one allocation */
    size_t weights_n;   /* its elements */
    bool has_ln;
    model_ref W_E;   /* [V,D] */
    model_ref W_pos; /* [n_ctx,D] */
    dev_layer *layers;
    model_ref lnf_w, lnf_b;  /* [D] */
    model_ref W_U;           /* [D,V] */
    model_ref b_U;           /* [V] */
    model_buf *ws[WS_COUNT]; /* workspace kept between runs */
    size_t ws_n[WS_COUNT];   /* elements of each slot */
};

struct model_cache {
    model_backend *be;
    const model_config *cfg;
    size_t B, T;
    size_t n_hooks;
    model_buf **bufs; /* [n_hooks], by dense hook index; NULL = not held */
};

/* The device buffer of a held hook, or NULL. */
model_buf *model_cache_buf(const model_cache *c, model_hook h);
/* Allocates the hook's buffer (full shape) if the cache does not hold it yet. */
int model_cache_ensure(model_cache *c, model_hook h, model_buf **out, char *err);

#endif
