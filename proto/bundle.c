/*
 * bundle: several messages in one frame (proto/proto.h, "Bundles"): a MessagePack array of bin
 * elements. The elements are read with the same bounded reader as the messages themselves.
 */
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

int proto_frame_begin(proto_frame_iter *it, const void *frame, size_t len, char *err) {
    memset(it, 0, sizeof *it);
    proto_reader_init(&it->r, frame, len);
    const uint8_t *p = frame;
    bool array = len > 0 && ((p[0] & 0xf0) == 0x90 || p[0] == 0xdc || p[0] == 0xdd);
    if (!array) {
        it->single = true;
        return 0;
    }
    if (len > PROTO_MAX_MESSAGE) {
        return common_fail(err, COMMON_ERR_INVALID, "bundle: %zu bytes, at most %zu", len,
                           PROTO_MAX_MESSAGE);
    }
    uint32_t n = 0;
    int rc = proto_r_array(&it->r, PROTO_MAX_BUNDLE, &n, "bundle", err);
    if (rc != 0) {
        return rc;
    }
    if (n < 2) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "bundle: %u messages (a bundle holds 2 to %d; one goes alone)", n,
                           PROTO_MAX_BUNDLE);
    }
    it->left = n;
    return 0;
}

int proto_frame_next(proto_frame_iter *it, const void **msg, size_t *len, char *err) {
    if (it->single) {
        it->single = false;
        *msg = it->r.p;
        *len = it->r.len;
        return 1;
    }
    if (it->left == 0) {
        if (it->r.off > 0 && proto_r_end(&it->r, err) != 0) {
            return common_fail(err, COMMON_ERR_PARSE, "bundle: bytes after its last message");
        }
        return 0;
    }
    it->left--;
    int rc = proto_r_bin(&it->r, PROTO_MAX_MESSAGE, msg, len, "bundle element", err);
    if (rc != 0) {
        it->left = 0;
        it->r.off = it->r.len; /* nothing more of this frame */
        return rc;
    }
    return 1;
}

size_t proto_bundle_overhead(size_t len) {
    return len < 256 ? 2 : len < 65536 ? 3 : 5;
}

int proto_bundle(const uint8_t *const *msgs, const size_t *lens, size_t n, uint8_t **out,
                 size_t *len, char *err) {
    *out = NULL;
    *len = 0;
    if (n == 0 || n > PROTO_MAX_BUNDLE) {
        return common_fail(err, COMMON_ERR_INVALID, "bundle: %zu messages, 1 to %d", n,
                           PROTO_MAX_BUNDLE);
    }
    size_t total = n == 1 ? lens[0] : 5;
    for (size_t i = 0; n > 1 && i < n; i++) {
        total += lens[i] + proto_bundle_overhead(lens[i]);
    }
    if (total > PROTO_MAX_MESSAGE) {
        return common_fail(err, COMMON_ERR_INVALID, "bundle: %zu bytes, at most %zu", total,
                           PROTO_MAX_MESSAGE);
    }
    if (n == 1) {
        *out = malloc(lens[0] > 0 ? lens[0] : 1);
        if (*out == NULL) {
            return common_fail(err, COMMON_ERR_NOMEM, "bundle: out of memory");
        }
        memcpy(*out, msgs[0], lens[0]);
        *len = lens[0];
        return 0;
    }
    proto_writer w;
    proto_writer_init(&w);
    proto_w_array(&w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        proto_w_bin(&w, msgs[i], lens[i]);
    }
    int rc = proto_writer_finish(&w, out, len, err);
    return rc != 0 ? common_fail(err, rc, "bundle: out of memory") : 0;
}
