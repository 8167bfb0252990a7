/*
 * fuzz_proto: libFuzzer target for the message decoder. The input is one frame: one message, or
 * a bundle of them (proto.h, "Bundles"), each checked as follows. A refusal must
 * leave nothing allocated and a NUL-terminated message; whatever is accepted must encode (the
 * encoder checks the same ranges), decode again to the same message field by field, and encode
 * a second time to the same bytes. proto_peek_req runs on every input, and on an accepted one
 * must return the message's own request id.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool str_eq(const char *a, const char *b) {
    if (!a || !b) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

static bool msg_equal(const proto_msg *a, const proto_msg *b) {
    if (a->type != b->type || a->req != b->req || !str_eq(a->worker, b->worker) ||
        !str_eq(a->backend, b->backend) || a->memory != b->memory || a->threads != b->threads ||
        a->n_devices != b->n_devices || a->n_models != b->n_models) {
        return false;
    }
    if (a->n_devices > PROTO_MAX_DEVICES || a->n_models > PROTO_MAX_MODELS) {
        return false;
    }
    for (size_t i = 0; i < a->n_devices; i++) {
        if (a->devices[i] != b->devices[i]) {
            return false;
        }
    }
    for (size_t i = 0; i < a->n_models; i++) {
        if (!str_eq(a->models[i], b->models[i])) {
            return false;
        }
    }
    if (a->credits != b->credits || a->heartbeat_ms != b->heartbeat_ms ||
        a->lease_ms != b->lease_ms || a->task != b->task || a->epoch != b->epoch ||
        a->attempt != b->attempt || !str_eq(a->model_path, b->model_path) ||
        !str_eq(a->model_sha256, b->model_sha256) || !str_eq(a->spec, b->spec) ||
        !str_eq(a->digest, b->digest) || a->body_len != b->body_len ||
        (a->body == NULL) != (b->body == NULL) || a->status != b->status ||
        !str_eq(a->error, b->error) || !str_eq(a->submission, b->submission) ||
        !str_eq(a->sweep, b->sweep)) {
        return false;
    }
    if (a->body_len > 0 && memcmp(a->body, b->body, a->body_len) != 0) {
        return false;
    }
    /* bit for bit: -0.0 stays -0.0 */
    return memcmp(&a->progress, &b->progress, sizeof a->progress) == 0;
}

static void check_message(const uint8_t *data, size_t size) {
    char err[COMMON_ERR_LEN];
    uint64_t req = proto_peek_req(data, size);
    proto_msg *m = NULL;
    if (proto_decode(data, size, &m, err) != 0) {
        if (m || !memchr(err, '\0', sizeof err)) {
            abort();
        }
        return;
    }
    if (!m || req != m->req || !proto_type_name(m->type)) {
        abort();
    }
    uint8_t *first = NULL, *second = NULL;
    size_t first_len = 0, second_len = 0;
    if (proto_encode(m, &first, &first_len, err) != 0) {
        abort(); /* accepted but not encodable: the two sides disagree on a range */
    }
    proto_msg *again = NULL;
    if (proto_decode(first, first_len, &again, err) != 0 || !msg_equal(m, again)) {
        abort();
    }
    if (proto_peek_req(first, first_len) != m->req) {
        abort();
    }
    if (proto_encode(again, &second, &second_len, err) != 0 || second_len != first_len ||
        memcmp(first, second, first_len) != 0) {
        abort();
    }
    free(first);
    free(second);
    proto_msg_free(&again);
    proto_msg_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[COMMON_ERR_LEN];
    proto_frame_iter it;
    if (proto_frame_begin(&it, data, size, err) != 0) {
        return 0;
    }
    const void *msg = NULL;
    size_t len = 0;
    int got;
    while ((got = proto_frame_next(&it, &msg, &len, err)) > 0) {
        /* every element lies inside the frame */
        if ((const uint8_t *)msg < data || (const uint8_t *)msg + len > data + size) {
            abort();
        }
        check_message(msg, len);
    }
    if (got < 0 && !memchr(err, '\0', sizeof err)) {
        abort();
    }
    return 0;
}
