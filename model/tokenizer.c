/*
 * tokenizer.json (HuggingFace `tokenizers`) for WordLevel models, as TransformerLens uses it.
 *
 * Encoding follows the library's pipeline: added tokens are split out of the text first, the
 * remaining segments go through the pre-tokenizer steps (Whitespace = regex \w+|[^\w\s]+,
 * WhitespaceSplit, Split on single digits with any of the five behaviours), each piece is looked
 * up exactly in the vocabulary and the TemplateProcessing post-processor prepends its special
 * token. Offsets are kept in bytes while splitting and converted to character offsets at the
 * end. Unlike the library, a piece missing from the vocabulary is an error naming it: chesslens
 * must never run a silently corrupted input. Non-ASCII bytes count as word characters, which is
 * what \w does for letters.
 */
#include "model/model.h"

#include <assert.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef enum pretok_kind { PRETOK_WHITESPACE, PRETOK_WS_SPLIT, PRETOK_DIGITS } pretok_kind;

typedef enum split_behavior {
    SPLIT_REMOVED,
    SPLIT_ISOLATED,
    SPLIT_MERGED_PREV,
    SPLIT_MERGED_NEXT,
    SPLIT_CONTIGUOUS,
} split_behavior;

typedef struct pretok_step {
    pretok_kind kind;
    split_behavior behavior;
} pretok_step;

typedef struct vocab_entry {
    const char *s; /* points into tokens[] */
    int32_t id;
} vocab_entry;

typedef struct added_token {
    char *content;
    size_t len;
    int32_t id;
} added_token;

struct model_tokenizer {
    char **tokens; /* [n_ids], NULL for unused ids */
    size_t n_ids;
    vocab_entry *sorted; /* [n_sorted], by string */
    size_t n_sorted;
    added_token *added;
    size_t n_added;
    pretok_step steps[8];
    size_t n_steps;
    int32_t bos;
    int32_t pad;
};

typedef struct span {
    size_t b, e; /* bytes [b, e) */
} span;

typedef struct span_list {
    span *v;
    size_t n, cap;
} span_list;

static int push_span(span_list *l, size_t b, size_t e) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 32;
        span *v = realloc(l->v, cap * sizeof *v);
        if (!v) {
            return -1;
        }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n].b = b;
    l->v[l->n].e = e;
    l->n++;
    return 0;
}

static int cmp_vocab(const void *a, const void *b) {
    return strcmp(((const vocab_entry *)a)->s, ((const vocab_entry *)b)->s);
}

static int32_t lookup(const model_tokenizer *t, const char *s) {
    vocab_entry key = {s, 0};
    const vocab_entry *hit = bsearch(&key, t->sorted, t->n_sorted, sizeof key, cmp_vocab);
    return hit ? hit->id : -1;
}

/* Checks the id of token s and raises *n_ids to cover it. */
static int check_id(json_int_t id, const char *s, size_t *n_ids, const char *path, char *err) {
    if (id < 0 || id >= MODEL_MAX_VOCAB) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: token '%s' has bad id %lld (not in 0..%d)",
                           path, s, (long long)id, MODEL_MAX_VOCAB - 1);
    }
    if ((size_t)id >= *n_ids) {
        *n_ids = (size_t)id + 1;
    }
    return 0;
}

/* Records token s at id (checked by check_id, inside t->tokens). */
static int set_token(model_tokenizer *t, json_int_t id, const char *s, const char *path,
                     char *err) {
    assert(id >= 0 && (size_t)id < t->n_ids);
    if (t->tokens[id]) {
        if (strcmp(t->tokens[id], s) != 0) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: id %lld is both '%s' and '%s'", path,
                               (long long)id, t->tokens[id], s);
        }
        return 0;
    }
    t->tokens[id] = strdup(s);
    return t->tokens[id] ? 0 : common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", path);
}

static int parse_split_behavior(const char *s, split_behavior *out) {
    static const struct {
        const char *name;
        split_behavior b;
    } table[] = {{"Removed", SPLIT_REMOVED},
                 {"Isolated", SPLIT_ISOLATED},
                 {"MergedWithPrevious", SPLIT_MERGED_PREV},
                 {"MergedWithNext", SPLIT_MERGED_NEXT},
                 {"Contiguous", SPLIT_CONTIGUOUS}};
    for (size_t i = 0; s && i < sizeof table / sizeof table[0]; i++) {
        if (strcmp(s, table[i].name) == 0) {
            *out = table[i].b;
            return 0;
        }
    }
    return -1;
}

static int parse_pretok(model_tokenizer *t, json_t *p, const char *path, char *err) {
    if (!p || json_is_null(p)) {
        return 0;
    }
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: pre_tokenizer without a type", path);
    }
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(p, "pretokenizers");
        size_t i;
        json_t *step;
        if (!json_is_array(list)) {
            return common_fail(err, COMMON_ERR_PARSE, "%s: Sequence pre_tokenizer without a list",
                               path);
        }
        json_array_foreach(list, i, step) {
            int rc = parse_pretok(t, step, path, err);
            if (rc) {
                return rc;
            }
        }
        return 0;
    }
    if (t->n_steps == sizeof t->steps / sizeof t->steps[0]) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: too many pre_tokenizer steps", path);
    }
    pretok_step *s = &t->steps[t->n_steps];
    if (strcmp(type, "Whitespace") == 0) {
        s->kind = PRETOK_WHITESPACE;
    } else if (strcmp(type, "WhitespaceSplit") == 0) {
        s->kind = PRETOK_WS_SPLIT;
    } else if (strcmp(type, "Split") == 0) {
        json_t *pat = json_object_get(p, "pattern");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        json_t *invert = json_object_get(p, "invert");
        if (!re || strcmp(re, "\\d") != 0 || json_is_true(invert)) {
            return common_fail(err, COMMON_ERR_UNSUPPORTED,
                               "%s: Split pre_tokenizer: only the regex \\d (not inverted) is "
                               "supported",
                               path);
        }
        if (parse_split_behavior(json_string_value(json_object_get(p, "behavior")), &s->behavior) !=
            0) {
            return common_fail(err, COMMON_ERR_UNSUPPORTED,
                               "%s: Split pre_tokenizer: unknown "
                               "behavior",
                               path);
        }
        s->kind = PRETOK_DIGITS;
    } else {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' unsupported",
                           path, type);
    }
    t->n_steps++;
    return 0;
}

static int parse_post(model_tokenizer *t, json_t *p, const char *path, char *err) {
    t->bos = -1;
    if (!p || json_is_null(p)) {
        t->bos = lookup(t, "<s>");
        return 0;
    }
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type || strcmp(type, "TemplateProcessing") != 0) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: post_processor type '%s' unsupported",
                           path, type ? type : "(none)");
    }
    json_t *single = json_object_get(p, "single");
    if (!json_is_array(single) || json_array_size(single) != 2) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "%s: post_processor template must be [special token, $A]", path);
    }
    json_t *sp = json_object_get(json_array_get(single, 0), "SpecialToken");
    json_t *seq = json_object_get(json_array_get(single, 1), "Sequence");
    const char *name = json_string_value(json_object_get(sp, "id"));
    if (!name || !seq) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED,
                           "%s: post_processor template must be [special token, $A]", path);
    }
    json_t *ids =
        json_object_get(json_object_get(json_object_get(p, "special_tokens"), name), "ids");
    if (json_is_array(ids) && json_array_size(ids) == 1 &&
        json_is_integer(json_array_get(ids, 0))) {
        json_int_t id = json_integer_value(json_array_get(ids, 0));
        t->bos = id >= 0 && (uint64_t)id < t->n_ids ? (int32_t)id : -1;
    } else {
        t->bos = lookup(t, name);
    }
    if (t->bos < 0 || (size_t)t->bos >= t->n_ids || !t->tokens[t->bos]) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: template token '%s' has no id", path,
                           name);
    }
    return 0;
}

/* Builds the tokenizer from a parsed tokenizer.json. Two passes over the vocabulary and the
 * added tokens: the first checks every id and finds the largest, so that the id table is
 * allocated once (growing it id by id would make loading quadratic in the vocabulary size). */
static int from_json(model_tokenizer *t, json_t *root, const char *path, char *err) {
    int rc = 0;
    json_t *mdl = json_object_get(root, "model");
    const char *mtype = json_string_value(json_object_get(mdl, "type"));
    if (!mtype || strcmp(mtype, "WordLevel") != 0) {
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: model type '%s' (only WordLevel)",
                           path, mtype ? mtype : "(none)");
    }
    json_t *vocab = json_object_get(mdl, "vocab");
    if (!json_is_object(vocab)) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: model.vocab is not an object", path);
    }
    json_t *added = json_object_get(root, "added_tokens");
    if (added && !json_is_null(added) && !json_is_array(added)) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: added_tokens is not a list", path);
    }
    size_t n_ids = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val)) {
            return common_fail(err, COMMON_ERR_PARSE, "%s: vocab entry '%s' is not an integer",
                               path, key);
        }
        if ((rc = check_id(json_integer_value(val), key, &n_ids, path, err))) {
            return rc;
        }
    }
    size_t i;
    json_array_foreach(added, i, val) {
        const char *content = json_string_value(json_object_get(val, "content"));
        json_t *id = json_object_get(val, "id");
        if (!content || !json_is_integer(id) || content[0] == '\0') {
            return common_fail(err, COMMON_ERR_PARSE, "%s: added_tokens[%zu] needs id and content",
                               path, i);
        }
        if ((rc = check_id(json_integer_value(id), content, &n_ids, path, err))) {
            return rc;
        }
    }
    t->tokens = calloc(n_ids ? n_ids : 1, sizeof *t->tokens);
    t->added = calloc(json_array_size(added) ? json_array_size(added) : 1, sizeof *t->added);
    if (!t->tokens || !t->added) {
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", path);
    }
    t->n_ids = n_ids;
    json_object_foreach(vocab, key, val) {
        if ((rc = set_token(t, json_integer_value(val), key, path, err))) {
            return rc;
        }
    }
    json_array_foreach(added, i, val) {
        const char *content = json_string_value(json_object_get(val, "content"));
        json_int_t id = json_integer_value(json_object_get(val, "id"));
        if ((rc = set_token(t, id, content, path, err))) {
            return rc;
        }
        added_token *a = &t->added[t->n_added];
        a->content = strdup(content);
        if (!a->content) {
            return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", path);
        }
        a->len = strlen(content);
        a->id = (int32_t)id;
        t->n_added++;
    }
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        const char *type = json_string_value(json_object_get(norm, "type"));
        return common_fail(err, COMMON_ERR_UNSUPPORTED, "%s: normalizer '%s' unsupported", path,
                           type ? type : "(none)");
    }
    t->sorted = calloc(t->n_ids ? t->n_ids : 1, sizeof *t->sorted);
    if (!t->sorted) {
        return common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", path);
    }
    for (size_t k = 0; k < t->n_ids; k++) {
        if (t->tokens[k]) {
            t->sorted[t->n_sorted].s = t->tokens[k];
            t->sorted[t->n_sorted].id = (int32_t)k;
            t->n_sorted++;
        }
    }
    qsort(t->sorted, t->n_sorted, sizeof *t->sorted, cmp_vocab);
    for (size_t k = 1; k < t->n_sorted; k++) {
        if (strcmp(t->sorted[k - 1].s, t->sorted[k].s) == 0) {
            return common_fail(err, COMMON_ERR_INVALID, "%s: token '%s' has two ids", path,
                               t->sorted[k].s);
        }
    }
    if ((rc = parse_pretok(t, json_object_get(root, "pre_tokenizer"), path, err)) ||
        (rc = parse_post(t, json_object_get(root, "post_processor"), path, err))) {
        return rc;
    }
    int32_t pad = lookup(t, "<pad>");
    t->pad = pad < 0 ? 0 : pad;
    return 0;
}

int model_tokenizer_parse(model_tokenizer **out, const char *name, const char *json, size_t len,
                          char *err) {
    json_error_t jerr;
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (!root) {
        return common_fail(err, COMMON_ERR_PARSE, "%s: line %d column %d: %s", name, jerr.line,
                           jerr.column, jerr.text);
    }
    model_tokenizer *t = calloc(1, sizeof *t);
    int rc = t ? from_json(t, root, name, err)
               : common_fail(err, COMMON_ERR_NOMEM, "%s: out of memory", name);
    json_decref(root);
    if (rc) {
        model_tokenizer_destroy(&t);
        return rc;
    }
    *out = t;
    return 0;
}

int model_tokenizer_load(model_tokenizer **out, const char *path, char *err) {
    char *text = NULL;
    size_t len = 0;
    int rc = common_read_file(path, &text, &len, err);
    if (rc) {
        return rc;
    }
    rc = model_tokenizer_parse(out, path, text, len, err);
    free(text);
    return rc;
}

void model_tokenizer_destroy(model_tokenizer **tp) {
    if (!tp || !*tp) {
        return;
    }
    model_tokenizer *t = *tp;
    for (size_t i = 0; i < t->n_ids; i++) {
        free(t->tokens[i]);
    }
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].content);
    }
    free(t->tokens);
    free(t->sorted);
    free(t->added);
    free(t);
    *tp = NULL;
}

size_t model_tokenizer_vocab_size(const model_tokenizer *t) {
    return t->n_ids;
}

const char *model_tokenizer_token(const model_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_ids ? t->tokens[id] : NULL;
}

int32_t model_tokenizer_id(const model_tokenizer *t, const char *token) {
    return lookup(t, token);
}

int32_t model_tokenizer_bos(const model_tokenizer *t) {
    return t->bos;
}

int32_t model_tokenizer_pad(const model_tokenizer *t) {
    return t->pad;
}

static bool is_space(unsigned char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_word(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c >= 0x80;
}

/* Applies one pre-tokenizer step to every piece of `in`, appending the results to `out`. */
static int apply_step(const pretok_step *st, const char *text, const span_list *in,
                      span_list *out) {
    for (size_t p = 0; p < in->n; p++) {
        size_t b = in->v[p].b, e = in->v[p].e;
        if (st->kind == PRETOK_WHITESPACE || st->kind == PRETOK_WS_SPLIT) {
            size_t i = b;
            while (i < e) {
                unsigned char c = (unsigned char)text[i];
                if (is_space(c)) {
                    i++;
                    continue;
                }
                size_t j = i + 1;
                if (st->kind == PRETOK_WS_SPLIT) {
                    while (j < e && !is_space((unsigned char)text[j])) {
                        j++;
                    }
                } else {
                    bool w = is_word(c);
                    while (j < e && !is_space((unsigned char)text[j]) &&
                           is_word((unsigned char)text[j]) == w) {
                        j++;
                    }
                }
                if (push_span(out, i, j)) {
                    return -1;
                }
                i = j;
            }
            continue;
        }
        /* Split on single digits: matches and the gaps between them, then the behaviour. */
        span_list parts = {0};
        bool *is_match = NULL;
        size_t nm = 0;
        size_t i = b;
        while (i < e) {
            size_t j = i;
            bool m = text[i] >= '0' && text[i] <= '9';
            if (m) {
                j = i + 1;
            } else {
                while (j < e && !(text[j] >= '0' && text[j] <= '9')) {
                    j++;
                }
            }
            bool *grown = realloc(is_match, (nm + 1) * sizeof *grown);
            if (!grown || push_span(&parts, i, j)) {
                free(grown ? grown : is_match);
                free(parts.v);
                return -1;
            }
            is_match = grown;
            is_match[nm++] = m;
            i = j;
        }
        size_t first = out->n;
        bool prev = false;
        int rc = 0;
        switch (st->behavior) {
        case SPLIT_REMOVED:
            for (size_t k = 0; k < nm && !rc; k++) {
                if (!is_match[k]) {
                    rc = push_span(out, parts.v[k].b, parts.v[k].e);
                }
            }
            break;
        case SPLIT_ISOLATED:
            for (size_t k = 0; k < nm && !rc; k++) {
                rc = push_span(out, parts.v[k].b, parts.v[k].e);
            }
            break;
        case SPLIT_MERGED_PREV:
            for (size_t k = 0; k < nm && !rc; k++) {
                if (is_match[k] && !prev && out->n > first) {
                    out->v[out->n - 1].e = parts.v[k].e;
                } else {
                    rc = push_span(out, parts.v[k].b, parts.v[k].e);
                }
                prev = is_match[k];
            }
            break;
        case SPLIT_MERGED_NEXT:
            /* mirror image: walk backwards, merging a match into the piece after it */
            for (size_t k = nm; k-- > 0 && !rc;) {
                if (is_match[k] && !prev && out->n > first) {
                    out->v[out->n - 1].b = parts.v[k].b;
                } else {
                    rc = push_span(out, parts.v[k].b, parts.v[k].e);
                }
                prev = is_match[k];
            }
            for (size_t lo = first, hi = out->n; !rc && hi > lo + 1; lo++, hi--) {
                span tmp = out->v[lo];
                out->v[lo] = out->v[hi - 1];
                out->v[hi - 1] = tmp;
            }
            break;
        case SPLIT_CONTIGUOUS:
            for (size_t k = 0; k < nm && !rc; k++) {
                if (k > 0 && is_match[k] == prev && out->n > first) {
                    out->v[out->n - 1].e = parts.v[k].e;
                } else {
                    rc = push_span(out, parts.v[k].b, parts.v[k].e);
                }
                prev = is_match[k];
            }
            break;
        }
        free(is_match);
        free(parts.v);
        if (rc) {
            return -1;
        }
    }
    return 0;
}

static size_t char_offset(const char *text, size_t byte) {
    size_t n = 0;
    for (size_t i = 0; i < byte; i++) {
        if (((unsigned char)text[i] & 0xc0) != 0x80) {
            n++;
        }
    }
    return n;
}

/* Appends one token (with its byte span) to the caller's output, counting past cap. */
static void emit(int32_t id, size_t b, size_t e, int32_t *ids, span *bspans, size_t cap,
                 size_t *n) {
    if (*n < cap) {
        ids[*n] = id;
        bspans[*n].b = b;
        bspans[*n].e = e;
    }
    (*n)++;
}

/* Pre-tokenizes text[b, e) and looks every piece up. */
static int encode_segment(const model_tokenizer *t, const char *text, size_t b, size_t e,
                          int32_t *ids, span *bspans, size_t cap, size_t *n, char *err) {
    span_list cur = {0}, next = {0};
    int rc = 0;
    if (push_span(&cur, b, e)) {
        return common_fail(err, COMMON_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (size_t s = 0; s < t->n_steps; s++) {
        next.n = 0;
        if (apply_step(&t->steps[s], text, &cur, &next)) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "tokenizer: out of memory");
            goto done;
        }
        span_list tmp = cur;
        cur = next;
        next = tmp;
    }
    for (size_t p = 0; p < cur.n; p++) {
        size_t len = cur.v[p].e - cur.v[p].b;
        if (len == 0) {
            continue;
        }
        char piece[256];
        if (len >= sizeof piece) {
            rc = common_fail(err, COMMON_ERR_NOT_FOUND,
                             "tokenizer: unknown piece of %zu bytes at character %zu", len,
                             char_offset(text, cur.v[p].b));
            goto done;
        }
        memcpy(piece, text + cur.v[p].b, len);
        piece[len] = '\0';
        int32_t id = lookup(t, piece);
        if (id < 0) {
            rc = common_fail(err, COMMON_ERR_NOT_FOUND,
                             "tokenizer: unknown piece '%s' at character %zu", piece,
                             char_offset(text, cur.v[p].b));
            goto done;
        }
        emit(id, cur.v[p].b, cur.v[p].e, ids, bspans, cap, n);
    }
done:
    free(cur.v);
    free(next.v);
    return rc;
}

int model_tokenizer_encode(const model_tokenizer *t, const char *text, bool prepend_bos,
                           int32_t *ids, model_token_span *spans, size_t cap, size_t *n,
                           char *err) {
    size_t len = strlen(text);
    span *bspans = malloc((cap ? cap : 1) * sizeof *bspans);
    if (!bspans) {
        return common_fail(err, COMMON_ERR_NOMEM, "tokenizer: out of memory");
    }
    int rc = 0;
    *n = 0;
    if (prepend_bos) {
        if (t->bos < 0) {
            free(bspans);
            return common_fail(err, COMMON_ERR_UNSUPPORTED, "tokenizer: no BOS token");
        }
        emit(t->bos, 0, 0, ids, bspans, cap, n);
    }
    size_t seg = 0, i = 0;
    while (i < len) {
        const added_token *best = NULL;
        for (size_t a = 0; a < t->n_added; a++) {
            const added_token *at = &t->added[a];
            if (at->len <= len - i && memcmp(text + i, at->content, at->len) == 0 &&
                (!best || at->len > best->len)) {
                best = at;
            }
        }
        if (!best) {
            i++;
            continue;
        }
        rc = encode_segment(t, text, seg, i, ids, bspans, cap, n, err);
        if (rc) {
            goto done;
        }
        emit(best->id, i, i + best->len, ids, bspans, cap, n);
        i += best->len;
        seg = i;
    }
    rc = encode_segment(t, text, seg, len, ids, bspans, cap, n, err);
    if (rc) {
        goto done;
    }
    if (*n > cap) {
        rc = common_fail(err, COMMON_ERR_INVALID, "tokenizer: %zu tokens, room for %zu", *n, cap);
        goto done;
    }
    if (spans) {
        for (size_t k = 0; k < *n; k++) {
            bool inserted = prepend_bos && k == 0;
            spans[k].start = inserted ? 0 : char_offset(text, bspans[k].b);
            spans[k].end = inserted ? 0 : char_offset(text, bspans[k].e);
        }
    }
done:
    free(bspans);
    return rc;
}

int model_tokenizer_decode(const model_tokenizer *t, const int32_t *ids, size_t n, char *out,
                           size_t cap, char *err) {
    size_t at = 0;
    if (cap == 0) {
        return common_fail(err, COMMON_ERR_INVALID, "tokenizer decode: no room");
    }
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *s = model_tokenizer_token(t, ids[i]);
        if (!s) {
            return common_fail(err, COMMON_ERR_INVALID, "tokenizer decode: unknown id %d",
                               (int)ids[i]);
        }
        size_t l = strlen(s) + (i > 0);
        if (at + l + 1 > cap) {
            return common_fail(err, COMMON_ERR_INVALID, "tokenizer decode: output longer than %zu",
                               cap);
        }
        if (i > 0) {
            out[at++] = ' ';
        }
        memcpy(out + at, s, strlen(s) + 1);
        at += strlen(s);
    }
    return 0;
}
