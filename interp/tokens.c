/*
 * Tokens, corruptions, legal masks and metrics: the bridge between games (chess/) and the
 * model's vocabulary. Token ids always come from the model's tokenizer by token text, never
 * from a fixed table, because vocabularies of chess models order their squares differently.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "interp/interp_int.h"

int interp_tokens_from_uci(const model *m, const char *uci, int32_t **out, size_t *T, char *err) {
    const model_tokenizer *tok = model_get_tokenizer(m);
    const model_config *cfg = model_get_config(m);
    chess_token *toks = NULL;
    size_t n = 0;
    int rc = chess_uci_split(uci, &toks, &n, err);
    if (rc != 0) {
        return rc;
    }
    if (n > (size_t)cfg->n_ctx) {
        free(toks);
        return common_fail(err, COMMON_ERR_INVALID, "game of %zu tokens exceeds n_ctx %d", n,
                           cfg->n_ctx);
    }
    int32_t *ids = malloc(n * sizeof *ids);
    if (ids == NULL) {
        free(toks);
        return common_fail(err, COMMON_ERR_NOMEM, "interp_tokens_from_uci: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        ids[i] = model_tokenizer_id(tok, toks[i].text);
        if (ids[i] < 0) {
            rc = common_fail(err, COMMON_ERR_NOT_FOUND,
                             "token '%s' at position %zu is not in the model's vocabulary",
                             toks[i].text, i);
            free(ids);
            free(toks);
            return rc;
        }
    }
    free(toks);
    *out = ids;
    *T = n;
    return 0;
}

int interp_corrupt_token(const model *m, const int32_t *clean, size_t T, size_t pos,
                         const char *token, int32_t *out, char *err) {
    if (pos >= T) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "corruption position %zu is outside the game (positions 1..%zu)", pos,
                           T - 1);
    }
    if (pos == 0) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "corruption position 0 is <s>, which every game starts with (positions "
                           "1..%zu are the game's tokens)",
                           T - 1);
    }
    int32_t id = model_tokenizer_id(model_get_tokenizer(m), token);
    if (id < 0) {
        return common_fail(err, COMMON_ERR_NOT_FOUND,
                           "corruption token '%s' is not in the model's vocabulary", token);
    }
    if (id == clean[pos]) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "corruption at position %zu: '%s' is the clean token there, so nothing "
                           "would be corrupted",
                           pos, token);
    }
    memmove(out, clean, T * sizeof *out);
    out[pos] = id;
    return 0;
}

int interp_corrupt_parse(const model *m, const int32_t *clean, size_t T, const char *spec,
                         int32_t *out, char *err) {
    const char *eq = strchr(spec, '=');
    size_t digits = strspn(spec, "0123456789");
    if (eq == NULL || digits == 0 || spec + digits != eq || eq[1] == '\0' || digits > 9) {
        return common_fail(err, COMMON_ERR_PARSE,
                           "corruption '%s': want POSITION=TOKEN with a decimal position, e.g. "
                           "27=d5",
                           spec);
    }
    size_t pos = (size_t)strtoul(spec, NULL, 10);
    return interp_corrupt_token(m, clean, T, pos, eq + 1, out, err);
}

int interp_legal_mask(const model *m, const char *uci, uint8_t **out, size_t *T, char *err) {
    const model_tokenizer *tok = model_get_tokenizer(m);
    size_t V = (size_t)model_get_config(m)->d_vocab;
    static const char *const promo_text[4] = {"q", "r", "b", "n"};
    int32_t square_id[64];
    int32_t promo_id[4];
    for (int sq = 0; sq < 64; sq++) {
        char name[3];
        chess_square_name(sq, name);
        square_id[sq] = model_tokenizer_id(tok, name);
        if (square_id[sq] < 0 || (size_t)square_id[sq] >= V) {
            return common_fail(err, COMMON_ERR_NOT_FOUND,
                               "square token '%s' is not in the model's vocabulary", name);
        }
    }
    for (int i = 0; i < 4; i++) {
        promo_id[i] = model_tokenizer_id(tok, promo_text[i]);
        if (promo_id[i] < 0 || (size_t)promo_id[i] >= V) {
            return common_fail(err, COMMON_ERR_NOT_FOUND,
                               "promotion token '%s' is not in the model's vocabulary",
                               promo_text[i]);
        }
    }
    chess_token_info *info = NULL;
    size_t n = 0;
    int rc = chess_legal_tokens(NULL, uci, &info, &n, err);
    if (rc != 0) {
        free(info);
        return rc;
    }
    uint8_t *mask = calloc(n * V, 1);
    if (mask == NULL) {
        free(info);
        return common_fail(err, COMMON_ERR_NOMEM, "interp_legal_mask: out of memory");
    }
    for (size_t t = 0; t < n; t++) {
        uint64_t sqs = info[t].next_squares;
        for (int sq = 0; sq < 64; sq++) {
            if (sqs >> sq & 1u) {
                mask[t * V + (size_t)square_id[sq]] = 1;
            }
        }
        for (int i = 0; i < 4; i++) {
            if (info[t].next_promos >> i & 1u) {
                mask[t * V + (size_t)promo_id[i]] = 1;
            }
        }
    }
    free(info);
    *out = mask;
    *T = n;
    return 0;
}

int interp_phases(const char *uci, uint8_t **out, size_t *T, char *err) {
    chess_token *toks = NULL;
    size_t n = 0;
    int rc = chess_uci_split(uci, &toks, &n, err);
    if (rc != 0) {
        return rc;
    }
    uint8_t *ph = malloc(n ? n : 1);
    if (ph == NULL) {
        free(toks);
        return common_fail(err, COMMON_ERR_NOMEM, "interp_phases: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        ph[i] = (uint8_t)toks[i].phase;
    }
    free(toks);
    *out = ph;
    *T = n;
    return 0;
}

static int token_id(const model *m, const char *text, size_t len, int32_t *id, char *err) {
    char buf[32];
    if (len == 0 || len >= sizeof buf) {
        return common_fail(err, COMMON_ERR_PARSE, "metric: empty or overlong token");
    }
    memcpy(buf, text, len);
    buf[len] = '\0';
    *id = model_tokenizer_id(model_get_tokenizer(m), buf);
    if (*id < 0 || *id >= model_get_config(m)->d_vocab) {
        return common_fail(err, COMMON_ERR_NOT_FOUND,
                           "metric token '%s' is not in the model's vocabulary", buf);
    }
    return 0;
}

int interp_metric_parse(const model *m, const char *spec, interp_metric *out, char *err) {
    interp_metric r;
    memset(&r, 0, sizeof r);
    const char *colon = strchr(spec, ':');
    size_t head = colon ? (size_t)(colon - spec) : strlen(spec);
    int rc = 0;
    if (strcmp(spec, "legal_mass") == 0) {
        r.kind = INTERP_METRIC_LEGAL_MASS;
    } else if (colon != NULL && head == 5 && strncmp(spec, "logit", 5) == 0) {
        r.kind = INTERP_METRIC_LOGIT;
        rc = token_id(m, colon + 1, strlen(colon + 1), &r.token, err);
    } else if (colon != NULL && head == 7 && strncmp(spec, "logprob", 7) == 0) {
        r.kind = INTERP_METRIC_LOGPROB;
        rc = token_id(m, colon + 1, strlen(colon + 1), &r.token, err);
    } else if (colon != NULL && head == 10 && strncmp(spec, "logit_diff", 10) == 0) {
        r.kind = INTERP_METRIC_LOGIT_DIFF;
        const char *comma = strchr(colon + 1, ',');
        if (comma == NULL) {
            return common_fail(err, COMMON_ERR_PARSE,
                               "metric '%s': logit_diff needs two tokens (logit_diff:A,B)", spec);
        }
        rc = token_id(m, colon + 1, (size_t)(comma - colon - 1), &r.token, err);
        if (rc == 0) {
            rc = token_id(m, comma + 1, strlen(comma + 1), &r.token2, err);
        }
    } else {
        return common_fail(err, COMMON_ERR_PARSE,
                           "metric '%s': want logit:TOKEN, logit_diff:A,B, logprob:TOKEN or "
                           "legal_mass",
                           spec);
    }
    if (rc != 0) {
        return rc;
    }
    *out = r;
    return 0;
}

model_metric interp_metric_spec(const interp_metric *metric, int32_t mask_row) {
    static const int32_t kinds[] = {
        [INTERP_METRIC_LOGIT] = MODEL_METRIC_LOGIT,
        [INTERP_METRIC_LOGIT_DIFF] = MODEL_METRIC_LOGIT_DIFF,
        [INTERP_METRIC_LOGPROB] = MODEL_METRIC_LOGPROB,
        [INTERP_METRIC_LEGAL_MASS] = MODEL_METRIC_MASS,
    };
    bool known = (int)metric->kind >= 0 && (size_t)metric->kind < sizeof kinds / sizeof *kinds;
    return (model_metric){known ? kinds[metric->kind] : -1, metric->token, metric->token2,
                          mask_row};
}

int interp_metric_check(const interp_metric *metric, size_t V, char *err) {
    if ((int)metric->kind < 0 || metric->kind > INTERP_METRIC_LEGAL_MASS) {
        return common_fail(err, COMMON_ERR_INVALID, "metric: unknown kind %d", (int)metric->kind);
    }
    bool needs_token = metric->kind != INTERP_METRIC_LEGAL_MASS;
    if (needs_token && (metric->token < 0 || (size_t)metric->token >= V)) {
        return common_fail(err, COMMON_ERR_INVALID, "metric: token id %d outside 0..%zu",
                           metric->token, V - 1);
    }
    if (metric->kind == INTERP_METRIC_LOGIT_DIFF &&
        (metric->token2 < 0 || (size_t)metric->token2 >= V)) {
        return common_fail(err, COMMON_ERR_INVALID, "metric: token id %d outside 0..%zu",
                           metric->token2, V - 1);
    }
    if (metric->kind == INTERP_METRIC_LEGAL_MASS && metric->legal == NULL) {
        return common_fail(err, COMMON_ERR_INVALID, "metric legal_mass: no legal-token mask");
    }
    return 0;
}

int interp_metric_eval(const interp_metric *metric, const float *logits, size_t V, double *out,
                       char *err) {
    int rc = interp_metric_check(metric, V, err);
    if (rc == 0) {
        model_metric m = interp_metric_spec(metric, 0);
        *out = model_metric_eval(&m, logits, metric->legal, V);
    }
    return rc;
}
