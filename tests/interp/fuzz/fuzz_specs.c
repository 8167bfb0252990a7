/*
 * fuzz_specs: libFuzzer target for the text specs a user gives an analysis: hook lists
 * (`forward --hooks`), metrics (`patch --metric`) and corruptions (`patch --corrupt`). The
 * first byte picks the parser, the rest is the text. Whatever is accepted must be usable: hooks
 * inside the model's hook table, metric tokens inside the vocabulary, a corruption that changes
 * exactly one position of the clean game and never `<s>`. The model is the random-tiny fixture,
 * loaded once.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "interp/interp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static model *fixture(void) {
    static model *m = NULL;
    if (m == NULL) {
        char err[COMMON_ERR_LEN];
        if (model_load(&m, CHESSLENS_SOURCE_DIR "/tests/fixtures/random-tiny", NULL, err) != 0) {
            abort(); /* the fuzzer cannot run without its fixture */
        }
    }
    return m;
}

static void hooks(const model *m, const char *text) {
    const model_config *cfg = model_get_config(m);
    model_hook *list = NULL;
    size_t n = 0;
    char err[COMMON_ERR_LEN];
    if (model_hook_list_parse(text, cfg, &list, &n, err) != 0) {
        return;
    }
    if (n == 0 || n > model_hook_count(cfg)) {
        abort();
    }
    for (size_t i = 0; i < n; i++) {
        if (model_hook_index(cfg, list[i]) >= model_hook_count(cfg)) {
            abort();
        }
    }
    free(list);
}

static void metric(const model *m, const char *text) {
    interp_metric metric;
    char err[COMMON_ERR_LEN];
    if (interp_metric_parse(m, text, &metric, err) != 0) {
        return;
    }
    int32_t V = model_get_config(m)->d_vocab;
    bool one = metric.kind == INTERP_METRIC_LOGIT || metric.kind == INTERP_METRIC_LOGPROB ||
               metric.kind == INTERP_METRIC_LOGIT_DIFF;
    if (one && (metric.token < 0 || metric.token >= V)) {
        abort();
    }
    if (metric.kind == INTERP_METRIC_LOGIT_DIFF && (metric.token2 < 0 || metric.token2 >= V)) {
        abort();
    }
}

static void corruption(const model *m, const char *text) {
    static const int32_t clean[7] = {1, 26, 28, 11, 12, 44, 65}; /* <s> e2 e4 e7 e5 g1 f3 */
    int32_t out[7];
    char err[COMMON_ERR_LEN];
    if (interp_corrupt_parse(m, clean, 7, text, out, err) != 0) {
        return;
    }
    size_t changed = 0;
    for (size_t t = 0; t < 7; t++) {
        changed += out[t] != clean[t];
    }
    if (changed != 1 || out[0] != clean[0]) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) {
        return 0;
    }
    char *text = malloc(size);
    if (text == NULL) {
        return 0;
    }
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0'; /* the parsers take C strings: text stops at the first NUL */
    const model *m = fixture();
    switch (data[0] % 3) {
    case 0:
        hooks(m, text);
        break;
    case 1:
        metric(m, text);
        break;
    default:
        corruption(m, text);
        break;
    }
    free(text);
    return 0;
}
