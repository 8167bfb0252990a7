/*
 * hf_logits DIR BACKEND TOKEN...: loads the HuggingFace GPT-2 checkpoint in DIR without
 * TransformerLens' weight processing (so its logits are the checkpoint's own), runs the token
 * ids given on BACKEND (cpu or cuda) and prints the logits, one line of V values per position,
 * for tests/gpu/hf_logits_check.py to compare with transformers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/gpu.h"
#include "model/model.h"

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: hf_logits DIR cpu|cuda TOKEN...\n");
        return 2;
    }
    char err[COMMON_ERR_LEN];
    size_t T = (size_t)(argc - 3);
    int32_t *tokens = malloc(T * sizeof *tokens);
    if (tokens == NULL) {
        return 1;
    }
    for (size_t t = 0; t < T; t++) {
        tokens[t] = (int32_t)atoi(argv[3 + t]);
    }
    model *m = NULL;
    model_backend *be = NULL;
    model_session *s = NULL;
    model_cache *c = NULL;
    model_processing none = model_processing_none();
    int rc = model_load(&m, argv[1], &none, err);
    if (rc == 0) {
        rc = strcmp(argv[2], "cpu") == 0 ? model_backend_cpu_new(&be, 0, err)
                                         : gpu_backend_new(&be, 0, NULL, err);
    }
    if (rc == 0) {
        rc = model_session_new(&s, m, be, err);
    }
    model_request rq;
    if (rc == 0) {
        model_request_init(&rq, s, tokens, 1, T);
        rc = model_run(s, &rq, &c, err);
    }
    size_t V = rc == 0 ? (size_t)model_get_config(m)->d_vocab : 0;
    float *logits = rc == 0 ? malloc(T * V * sizeof *logits) : NULL;
    if (rc == 0 && logits == NULL) {
        rc = COMMON_ERR_NOMEM;
    }
    if (rc == 0) {
        rc = model_cache_download(c, (model_hook){MODEL_HOOK_LOGITS, -1}, logits, T * V, err);
    }
    for (size_t i = 0; rc == 0 && i < T * V; i++) {
        printf("%.9g%c", logits[i], (i + 1) % V == 0 ? '\n' : ' ');
    }
    if (rc != 0) {
        fprintf(stderr, "hf_logits: %s\n", err);
    }
    free(logits);
    free(tokens);
    model_cache_destroy(&c);
    model_session_destroy(&s);
    model_backend_destroy(&be);
    model_destroy(&m);
    return rc == 0 ? 0 : 1;
}
