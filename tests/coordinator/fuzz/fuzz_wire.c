/*
 * fuzz_wire: libFuzzer target for the TASK and RESULT body decoders (coordinator/wire.h). The
 * first byte of the input picks the decoder (even: work, decoded against the fixed sweep spec
 * below; odd: results) and the rest is the body. A refusal must leave *out NULL and a
 * NUL-terminated message (ASan's leak check sees anything left allocated); an accepted body
 * must encode (the encoder checks the caps the decoder does), decode again, and encode a
 * second time to the same bytes, so what was accepted round-trips exactly.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "coordinator/wire.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* test_coord_wire's sweep, so that its seed bodies fit: every corruption kind and every
 * aggregate kind. */
static const char *const sweep_json =
    "{\"name\":\"wire\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,7],\"analyses\":["
    "{\"kind\":\"patch\",\"patch\":\"block_every\",\"cutoffs\":[9,14],"
    "\"corrupt\":{\"position\":\"last\",\"with\":\"each_legal_alternative\"},"
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\",\"corrupt_top\"],"
    "\"normalize\":true}},"
    "{\"kind\":\"patch\",\"patch\":\"attn_head_out_by_pos\",\"cutoffs\":[12],"
    "\"corrupt\":{\"position\":4,\"with\":\"random_legal_alternative\",\"seed\":3},"
    "\"metric\":{\"kind\":\"legal_mass\",\"normalize\":true}},"
    "{\"kind\":\"legal_stats\",\"components\":[\"embeds\",\"heads\",\"mlps\"]},"
    "{\"kind\":\"neuron_stats\",\"by\":\"phase\",\"slice\":[5,-5]},"
    "{\"kind\":\"predictions\",\"top_k\":3},"
    "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[9],"
    "\"corrupt\":{\"position\":-1,\"with\":\"e4\"},"
    "\"metric\":{\"kind\":\"logprob\",\"tokens\":[\"e5\"]}},"
    "{\"kind\":\"patch\",\"patch\":\"mlp_out\",\"cutoffs\":[10],"
    "\"corrupt\":{\"with\":{\"game\":0}},"
    "\"metric\":{\"kind\":\"logit\",\"tokens\":[\"clean_top\"]}},"
    "{\"kind\":\"patch\",\"patch\":\"attn_out\",\"cutoffs\":[10],"
    "\"corrupt\":{\"with\":{\"game\":7}},"
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"e4\",\"d5\"]}}"
    "]}";

/* Parsed once; the fuzzer's process owns it until it exits. */
static coordinator_spec *spec;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char err[COMMON_ERR_LEN];
    if (coordinator_spec_parse(&spec, sweep_json, strlen(sweep_json), err) != 0) {
        abort();
    }
    return 0;
}

static bool refused_cleanly(const void *out, const char *err) {
    return out == NULL && memchr(err, '\0', COMMON_ERR_LEN) != NULL;
}

static void same_bytes(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    if (na != nb || memcmp(a, b, na) != 0) {
        abort();
    }
}

static void fuzz_work(const uint8_t *body, size_t len) {
    char err[COMMON_ERR_LEN];
    coordinator_work *w = NULL, *again = NULL;
    if (coordinator_work_decode(spec, body, len, &w, err) != 0) {
        if (!refused_cleanly(w, err)) {
            abort();
        }
        return;
    }
    uint8_t *first = NULL, *second = NULL;
    size_t first_len = 0, second_len = 0;
    if (coordinator_work_encode(w, &first, &first_len, err) != 0 ||
        coordinator_work_decode(spec, first, first_len, &again, err) != 0 ||
        coordinator_work_encode(again, &second, &second_len, err) != 0) {
        abort(); /* accepted but not round-tripped: encoder and decoder disagree */
    }
    same_bytes(first, first_len, second, second_len);
    free(first);
    free(second);
    coordinator_work_destroy(&again);
    coordinator_work_destroy(&w);
}

static void fuzz_results(const uint8_t *body, size_t len) {
    char err[COMMON_ERR_LEN];
    coordinator_results_msg *m = NULL, *again = NULL;
    if (coordinator_results_decode(body, len, &m, err) != 0) {
        if (!refused_cleanly(m, err)) {
            abort();
        }
        return;
    }
    uint8_t *first = NULL, *second = NULL;
    size_t first_len = 0, second_len = 0;
    if (coordinator_results_encode(coordinator_results_msg_get(m), &first, &first_len, err) != 0 ||
        coordinator_results_decode(first, first_len, &again, err) != 0 ||
        coordinator_results_encode(coordinator_results_msg_get(again), &second, &second_len, err) !=
            0) {
        abort();
    }
    same_bytes(first, first_len, second, second_len);
    free(first);
    free(second);
    coordinator_results_msg_free(&again);
    coordinator_results_msg_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) {
        return 0;
    }
    if (data[0] % 2 == 0) {
        fuzz_work(data + 1, size - 1);
    } else {
        fuzz_results(data + 1, size - 1);
    }
    return 0;
}
