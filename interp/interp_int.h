/*
 * interp internals shared by the files of the interp library: the host activation set and
 * small helpers for reading parameters and hooks with errors that name what is missing. Never
 * included outside interp/.
 */
#ifndef CHESSLENS_INTERP_INT_H
#define CHESSLENS_INTERP_INT_H

#include "interp/interp.h"

struct interp_acts {
    model_config cfg;
    size_t T;
    size_t n_hooks; /* model_hook_count(cfg) */
    float **data;   /* [n_hooks] by model_hook_index; NULL when not held */
    size_t *numel;  /* [n_hooks] */
};

/* The held tensor of (kind, layer), or NULL with a NOT_FOUND message naming the hook. */
const float *interp_acts_need(const interp_acts *a, model_hook_kind kind, int layer, char *err);

/* A processed parameter "blocks.{layer}.{suffix}" (layer < 0: suffix is the whole name), or
 * NULL with a NOT_FOUND message. */
const float *interp_param(const model *m, int layer, const char *suffix, char *err);

/* INVALID unless metric can be evaluated on V logits: a known kind, tokens below V, a mask
 * for LEGAL_MASS. */
int interp_metric_check(const interp_metric *metric, size_t V, char *err);
/* The model-level form of metric (model_metric_eval, the backends' row_metrics), with its
 * mask (LEGAL_MASS) at row mask_row of the masks the caller uploads; an unknown kind maps to
 * one model_metric_eval does not know (NaN). */
model_metric interp_metric_spec(const interp_metric *metric, int32_t mask_row);

/* A new stack of n rows x T x width, zeroed, with n NULL labels to fill. */
int interp_stack_alloc(interp_stack **out, size_t n, size_t T, size_t width, char *err);
/* Sets label i (copied, printf-style). */
int interp_stack_label(interp_stack *s, size_t i, char *err, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#endif
