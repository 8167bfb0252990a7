/*
 * The building blocks the executor runs, public so that `chesslens decompose` and other callers
 * compute the same numbers the same way: the component stack of the legal-move statistics, the
 * hooks it reads and its parts as the device path takes them, batched runs of games of different
 * lengths (right-padded, activations trimmed back to each game), and the empty patching result of a
 * pair that gets no values.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker_int.h"

#define ALL_COMPONENTS                                                                             \
    (COORDINATOR_COMP_EMBEDS | COORDINATOR_COMP_ATTNS | COORDINATOR_COMP_MLPS |                    \
     COORDINATOR_COMP_HEADS)

/* The decompose_resid call the bits need: mode, whether it has embed rows, and whether any
 * decomposition is needed. With embeds alone the ATTN mode is run and cut after its two embed
 * rows (decompose_resid has no mode without layer rows). */
typedef struct decomp_plan {
    bool any;
    bool embeds;
    bool attn, mlp; /* hooks the mode reads */
    interp_decomp_mode mode;
    bool embeds_only;
} decomp_plan;

static decomp_plan plan_of(unsigned bits) {
    decomp_plan p = {0};
    bool attns = bits & COORDINATOR_COMP_ATTNS, mlps = bits & COORDINATOR_COMP_MLPS;
    p.embeds = bits & COORDINATOR_COMP_EMBEDS;
    p.any = p.embeds || attns || mlps;
    p.embeds_only = p.embeds && !attns && !mlps;
    p.mode = attns && mlps ? INTERP_DECOMP_ALL : mlps ? INTERP_DECOMP_MLP : INTERP_DECOMP_ATTN;
    p.attn = p.any && p.mode != INTERP_DECOMP_MLP;
    p.mlp = p.any && p.mode != INTERP_DECOMP_ATTN;
    return p;
}

size_t worker_legal_hooks(const model_config *cfg, unsigned components, model_hook *out,
                          size_t cap) {
    decomp_plan p = plan_of(components);
    bool heads = components & COORDINATOR_COMP_HEADS;
    size_t n = 0;
#define PUT(k, l)                                                                                  \
    do {                                                                                           \
        if (n < cap) {                                                                             \
            out[n] = (model_hook){(k), (l)};                                                       \
        }                                                                                          \
        n++;                                                                                       \
    } while (0)
    if (p.embeds) {
        PUT(MODEL_HOOK_EMBED, -1);
        PUT(MODEL_HOOK_POS_EMBED, -1);
    }
    for (int l = 0; l < cfg->n_layers; l++) {
        if (p.attn) {
            PUT(MODEL_HOOK_ATTN_OUT, l);
        }
        if (p.mlp) {
            PUT(MODEL_HOOK_MLP_OUT, l);
        }
        if (heads) {
            PUT(MODEL_HOOK_Z, l);
        }
    }
    PUT(MODEL_HOOK_LN_FINAL_SCALE, -1);
#undef PUT
    return n;
}

interp_legal_parts worker_legal_parts(unsigned components) {
    return (interp_legal_parts){
        .embeds = (components & COORDINATOR_COMP_EMBEDS) != 0,
        .attns = (components & COORDINATOR_COMP_ATTNS) != 0,
        .mlps = (components & COORDINATOR_COMP_MLPS) != 0,
        .heads = (components & COORDINATOR_COMP_HEADS) != 0,
    };
}

/* One stack of a's rows followed by b's (both [., T, width]); a and b are consumed. */
static int concat(interp_stack **a, interp_stack **b, interp_stack **out, char *err) {
    interp_stack *x = *a, *y = *b;
    size_t per = x->T * x->width;
    interp_stack *s = calloc(1, sizeof *s);
    if (s != NULL) {
        s->n = x->n + y->n;
        s->T = x->T;
        s->width = x->width;
        s->data = malloc((s->n * per > 0 ? s->n * per : 1) * sizeof *s->data);
        s->labels = calloc(s->n > 0 ? s->n : 1, sizeof *s->labels);
    }
    if (s == NULL || s->data == NULL || s->labels == NULL) {
        if (s != NULL) {
            s->n = 0; /* no label is set yet */
        }
        interp_stack_destroy(&s);
        interp_stack_destroy(a);
        interp_stack_destroy(b);
        return common_fail(err, COMMON_ERR_NOMEM, "legal components: out of memory");
    }
    memcpy(s->data, x->data, x->n * per * sizeof *s->data);
    memcpy(s->data + x->n * per, y->data, y->n * per * sizeof *s->data);
    for (size_t i = 0; i < x->n; i++) {
        s->labels[i] = x->labels[i];
        x->labels[i] = NULL;
    }
    for (size_t i = 0; i < y->n; i++) {
        s->labels[x->n + i] = y->labels[i];
        y->labels[i] = NULL;
    }
    interp_stack_destroy(a);
    interp_stack_destroy(b);
    *out = s;
    return 0;
}

int worker_legal_components(const model *m, const interp_acts *a, unsigned components,
                            interp_stack **out, char *err) {
    if ((components & ALL_COMPONENTS) == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "legal components: no component in 0x%x",
                           components);
    }
    decomp_plan p = plan_of(components);
    interp_stack *dec = NULL, *heads = NULL;
    int rc = 0;
    if (p.any) {
        rc = interp_decompose_resid(m, a, -1, false, p.mode, p.embeds, true, &dec, err);
        if (rc != 0) {
            return rc;
        }
        if (p.embeds_only) {
            /* keep "embed" and "pos_embed"; the rows after them are the layers' */
            for (size_t i = 2; i < dec->n; i++) {
                free(dec->labels[i]);
                dec->labels[i] = NULL;
            }
            dec->n = 2;
        }
    }
    if (components & COORDINATOR_COMP_HEADS) {
        rc = interp_stack_head_results(m, a, -1, false, true, &heads, err);
        if (rc != 0) {
            interp_stack_destroy(&dec);
            return rc;
        }
    }
    if (dec == NULL) {
        *out = heads;
        return 0;
    }
    if (heads == NULL) {
        *out = dec;
        return 0;
    }
    return concat(&dec, &heads, out, err);
}

int worker_run_games(model_session *s, const int32_t *const *ids, const size_t *lengths, size_t n,
                     const model_hook *hooks, size_t n_hooks, bool want_logits, interp_acts **out,
                     char *err) {
    const model *m = model_session_model(s);
    const model_config *cfg = model_get_config(m);
    if (n == 0) {
        return 0;
    }
    size_t T = 0;
    for (size_t i = 0; i < n; i++) {
        if (lengths[i] == 0 || lengths[i] > (size_t)cfg->n_ctx) {
            return common_fail(err, COMMON_ERR_INVALID, "run games: game %zu has %zu tokens", i,
                               lengths[i]);
        }
        T = lengths[i] > T ? lengths[i] : T;
    }
    model_hook *own = NULL;
    if (hooks == NULL) {
        n_hooks = interp_acts_hooks(cfg, false, NULL, 0);
        own = malloc(n_hooks * sizeof *own);
        if (own == NULL) {
            return common_fail(err, COMMON_ERR_NOMEM, "run games: out of memory");
        }
        interp_acts_hooks(cfg, false, own, n_hooks);
        hooks = own;
    }
    int32_t *tokens = malloc(n * T * sizeof *tokens); /* [n, T] right-padded */
    interp_acts **acts = calloc(n, sizeof *acts);
    model_cache *cache = NULL;
    int rc = 0;
    if (tokens == NULL || acts == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "run games: out of memory for %zu games", n);
        goto done;
    }
    int32_t pad = model_tokenizer_pad(model_get_tokenizer(m));
    for (size_t i = 0; i < n; i++) {
        memcpy(tokens + i * T, ids[i], lengths[i] * sizeof *tokens);
        for (size_t t = lengths[i]; t < T; t++) {
            tokens[i * T + t] = pad;
        }
    }
    model_request req;
    model_request_init(&req, s, tokens, n, T);
    req.lengths = lengths;
    req.hooks = hooks;
    req.n_hooks = n_hooks;
    req.want_logits = want_logits;
    rc = model_run(s, &req, &cache, err);
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = interp_acts_from_cache(&acts[i], cfg, cache, i, lengths[i], err);
    }
    if (rc == 0) {
        memcpy(out, acts, n * sizeof *out);
        memset(acts, 0, n * sizeof *acts);
    }
done:
    for (size_t i = 0; acts != NULL && i < n; i++) {
        interp_acts_destroy(&acts[i]);
    }
    free(acts);
    free(tokens);
    free(own);
    model_cache_destroy(&cache);
    return rc;
}
