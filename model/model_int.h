/*
 * model internals shared by the files of the model library: the loaded model (host parameters
 * in TransformerLens layouts) and the device-side session and cache objects. Never included
 * outside model/.
 */
#ifndef CHESSLENS_MODEL_INT_H
#define CHESSLENS_MODEL_INT_H

#include "model/model.h"

/* Host parameters of one block, TL layouts; ln* are NULL after fold_ln. */
typedef struct model_layer_params {
    float *ln1_w, *ln1_b;   /* [D] */
    float *W_Q, *W_K, *W_V; /* [H,D,Dh] */
    float *b_Q, *b_K, *b_V; /* [H,Dh] */
    float *W_O;             /* [H,Dh,D] */
    float *b_O;             /* [D] */
    float *ln2_w, *ln2_b;   /* [D] */
    float *W_in;            /* [D,M] */
    float *b_in;            /* [M] */
    float *W_out;           /* [M,D] */
    float *b_out;           /* [D] */
} model_layer_params;

typedef struct model_param_entry {
    char name[48];
    model_shape shape;
    float *data; /* owned */
} model_param_entry;

struct model {
    model_config cfg;
    model_processing proc;
    model_tokenizer *tok;
    model_param_entry *params; /* listed parameters, fixed order */
    size_t n_params;
    float *W_E;                 /* [V,D] */
    float *W_pos;               /* [n_ctx,D] */
    model_layer_params *layers; /* [L] */
    float *lnf_w, *lnf_b;       /* [D], NULL after fold_ln */
    float *W_U;                 /* [D,V] */
    float *b_U;                 /* [V] */
};

/* Applies m->proc to the freshly loaded parameters (process.c). */
void model_process_weights(model *m);

/* The 77-token UCI chess vocabulary in its real order (ids 0..76). */
extern const char *const model_chess_vocab[77];

/* Writes a tokenizer.json for the chess vocabulary padded with <extra_i> to `size` ids. */
int model_write_chess_tokenizer(const char *path, size_t size, char *err);

#endif
