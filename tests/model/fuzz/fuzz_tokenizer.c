/*
 * fuzz_tokenizer: libFuzzer target for tokenizer.json loading and encoding. The input is a
 * tokenizer.json, optionally followed by a NUL byte and newline-separated texts to encode (a
 * few chess strings otherwise). A tokenizer that loads must map ids and tokens both ways; every
 * encoding must give ids that name tokens and spans inside the text, report its full count when
 * the room is short, fit exactly when given that room, and decode back.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "model/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const default_texts[] = {
    "e2e4 e7e5 g1f3", "<s>d2d4  </s>", "e7e8q 12 a1", "", " \t\n", "\xc3\xa9 e2", "<pad><s>x9",
};

static size_t n_chars(const char *s) {
    size_t n = 0;
    for (; *s; s++) {
        n += ((unsigned char)*s & 0xc0) != 0x80;
    }
    return n;
}

static void check_encoding(const model_tokenizer *t, const char *text, bool bos) {
    char err[COMMON_ERR_LEN];
    enum { CAP = 16 };
    int32_t ids[CAP];
    model_token_span spans[CAP];
    size_t n = 0;
    int rc = model_tokenizer_encode(t, text, bos, ids, spans, CAP, &n, err);
    if (rc == COMMON_ERR_INVALID) {
        if (n <= CAP) {
            abort(); /* a short room reports the full count */
        }
        int32_t *big = malloc(n * sizeof *big);
        size_t again = 0;
        if (!big || model_tokenizer_encode(t, text, bos, big, NULL, n, &again, err) != 0 ||
            again != n) {
            abort(); /* and that count fits */
        }
        free(big);
        return;
    }
    if (rc != 0) {
        return;
    }
    if (n > CAP) {
        abort();
    }
    size_t chars = n_chars(text), need = 1;
    for (size_t k = 0; k < n; k++) {
        const char *tok = model_tokenizer_token(t, ids[k]);
        if (!tok || spans[k].start > spans[k].end || spans[k].end > chars) {
            abort(); /* ids name tokens; spans lie inside the text */
        }
        need += strlen(tok) + 1;
    }
    if (bos && (n == 0 || ids[0] != model_tokenizer_bos(t))) {
        abort();
    }
    char *out = malloc(need);
    if (!out || model_tokenizer_decode(t, ids, n, out, need, err) != 0 || strlen(out) >= need) {
        abort();
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 1 << 16) {
        return 0;
    }
    const uint8_t *nul = memchr(data, '\0', size);
    size_t json_len = nul ? (size_t)(nul - data) : size;
    char err[COMMON_ERR_LEN];
    model_tokenizer *t = NULL;
    if (model_tokenizer_parse(&t, "fuzz/tokenizer.json", (const char *)data, json_len, err) != 0) {
        if (t) {
            abort();
        }
        return 0;
    }
    size_t n_ids = model_tokenizer_vocab_size(t);
    if (n_ids > MODEL_MAX_VOCAB) {
        abort();
    }
    for (size_t id = 0; id < n_ids && id < 4096; id++) {
        const char *tok = model_tokenizer_token(t, (int32_t)id);
        if (tok && model_tokenizer_id(t, tok) != (int32_t)id) {
            abort(); /* ids and tokens map both ways */
        }
    }
    if (model_tokenizer_token(t, -1) || model_tokenizer_token(t, (int32_t)n_ids)) {
        abort();
    }
    int32_t bos = model_tokenizer_bos(t);
    if (bos >= 0 && !model_tokenizer_token(t, bos)) {
        abort();
    }
    (void)model_tokenizer_pad(t);
    if (nul) {
        size_t rest = size - json_len - 1;
        char *texts = malloc(rest + 1);
        if (!texts) {
            abort();
        }
        memcpy(texts, nul + 1, rest);
        texts[rest] = '\0';
        /* texts after a second NUL are cut off there, like a C string */
        for (char *line = texts, *next; line; line = next) {
            next = strchr(line, '\n');
            if (next) {
                *next++ = '\0';
            }
            check_encoding(t, line, false);
            check_encoding(t, line, true);
        }
        free(texts);
    } else {
        for (size_t i = 0; i < sizeof default_texts / sizeof default_texts[0]; i++) {
            check_encoding(t, default_texts[i], false);
            check_encoding(t, default_texts[i], true);
        }
    }
    model_tokenizer_destroy(&t);
    return 0;
}
