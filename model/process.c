/*
 * TransformerLens' from_pretrained weight processing (docs/TL-SEMANTICS.md section 3), in TL's
 * order: fold_ln -> center_writing_weights -> center_unembed -> fold_value_biases. Each step
 * rewrites the host parameters in place. Sums and means accumulate in double and round once,
 * which keeps the result within float32 rounding of TL's own float32 reductions.
 */
#include "model/model_int.h"

/* Folds LN (w, b) into a reading weight W viewed as [outer][D][inner] with bias [outer][inner]:
 * bias += sum_m W[m] b[m]; W[m] *= w[m]; then W -= mean over m. */
static void fold_reader(float *W, float *bias, const float *w, const float *b, size_t outer,
                        size_t D, size_t inner) {
    for (size_t o = 0; o < outer; o++) {
        float *Wo = W + o * D * inner;
        for (size_t i = 0; i < inner; i++) {
            double acc = 0.0;
            for (size_t m = 0; m < D; m++) {
                acc += (double)Wo[m * inner + i] * (double)b[m];
            }
            bias[o * inner + i] += (float)acc;
        }
        for (size_t m = 0; m < D; m++) {
            for (size_t i = 0; i < inner; i++) {
                Wo[m * inner + i] *= w[m];
            }
        }
        for (size_t i = 0; i < inner; i++) {
            double mean = 0.0;
            for (size_t m = 0; m < D; m++) {
                mean += (double)Wo[m * inner + i];
            }
            float mu = (float)(mean / (double)D);
            for (size_t m = 0; m < D; m++) {
                Wo[m * inner + i] -= mu;
            }
        }
    }
}

/* Subtracts from each of `rows` rows of width n its own mean. */
static void center_rows(float *X, size_t rows, size_t n) {
    for (size_t r = 0; r < rows; r++) {
        double mean = 0.0;
        for (size_t i = 0; i < n; i++) {
            mean += (double)X[r * n + i];
        }
        float mu = (float)(mean / (double)n);
        for (size_t i = 0; i < n; i++) {
            X[r * n + i] -= mu;
        }
    }
}

void model_process_weights(model *m) {
    const model_config *c = &m->cfg;
    size_t D = (size_t)c->d_model, H = (size_t)c->n_heads, Dh = (size_t)c->d_head,
           M = (size_t)c->d_mlp, V = (size_t)c->d_vocab;
    if (m->proc.fold_ln) {
        for (int l = 0; l < c->n_layers; l++) {
            model_layer_params *p = &m->layers[l];
            fold_reader(p->W_Q, p->b_Q, p->ln1_w, p->ln1_b, H, D, Dh);
            fold_reader(p->W_K, p->b_K, p->ln1_w, p->ln1_b, H, D, Dh);
            fold_reader(p->W_V, p->b_V, p->ln1_w, p->ln1_b, H, D, Dh);
            fold_reader(p->W_in, p->b_in, p->ln2_w, p->ln2_b, 1, D, M);
        }
        fold_reader(m->W_U, m->b_U, m->lnf_w, m->lnf_b, 1, D, V);
    }
    if (m->proc.center_writing_weights) {
        center_rows(m->W_E, V, D);
        center_rows(m->W_pos, (size_t)c->n_ctx, D);
        for (int l = 0; l < c->n_layers; l++) {
            model_layer_params *p = &m->layers[l];
            center_rows(p->W_O, H * Dh, D);
            center_rows(p->b_O, 1, D);
            center_rows(p->W_out, M, D);
            center_rows(p->b_out, 1, D);
        }
    }
    if (m->proc.center_unembed) {
        center_rows(m->W_U, D, V);
        center_rows(m->b_U, 1, V);
    }
    if (m->proc.fold_value_biases) {
        for (int l = 0; l < c->n_layers; l++) {
            model_layer_params *p = &m->layers[l];
            for (size_t mm = 0; mm < D; mm++) {
                double acc = 0.0;
                for (size_t hd = 0; hd < H * Dh; hd++) {
                    acc += (double)p->b_V[hd] * (double)p->W_O[hd * D + mm];
                }
                p->b_O[mm] += (float)acc;
            }
            for (size_t hd = 0; hd < H * Dh; hd++) {
                p->b_V[hd] = 0.0f;
            }
        }
    }
}
