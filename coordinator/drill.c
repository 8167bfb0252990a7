/*
 * drill: the fault drills of chesslens-coordinator --faults (coordinator/drill.h). They see the
 * frames the service reads and sends, decoded only when a drill is configured.
 */
#include "coordinator/drill.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

void drill_begin_batch(drill *d) {
    d->n_read = 0;
}

int drill_parse(drill *d, const char *spec, char *err) {
    memset(d, 0, sizeof *d);
    const char *p = spec != NULL ? spec : "", *key = NULL, *val = NULL;
    size_t klen = 0, vlen = 0;
    int got;
    while ((got = common_kv_next(&p, &key, &klen, &val, &vlen, "faults", err)) == 1) {
        if (!(klen == 16 && memcmp(key, "drop_result_acks", 16) == 0)) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "faults: unknown key '%.*s' (drop_result_acks)", (int)klen, key);
        }
        int64_t v = 0;
        if (!common_parse_i64(val, vlen, 0, DRILL_MAX, &v)) {
            return common_fail(err, COMMON_ERR_INVALID, "faults: '%.*s': a count in 0..%d",
                               (int)(klen + 1 + vlen), key, DRILL_MAX);
        }
        d->drop_acks_left = (uint64_t)v;
        d->on = d->on || v > 0;
    }
    return got < 0 ? got : 0;
}

static drill_result *drill_find(drill_result *list, size_t n, const uint8_t *peer, size_t peer_len,
                                int64_t task) {
    for (size_t i = 0; i < n; i++) {
        if (list[i].task == task && (peer == NULL || (list[i].peer_len == peer_len &&
                                                      memcmp(list[i].peer, peer, peer_len) == 0))) {
            return &list[i];
        }
    }
    return NULL;
}

/* One message read from peer: a RESULT is remembered for the batch's ACKs, and a RESULT of a
 * task whose ACK was dropped is logged with how it compares to the first delivery. */
static void drill_input_msg(drill *d, FILE *log, const void *peer, size_t peer_len,
                            const void *data, size_t len) {
    proto_msg *m = NULL;
    if (proto_decode(data, len, &m, NULL) != 0) {
        return; /* a malformed message is the scheduler's to answer */
    }
    if (m->type == PROTO_RESULT && peer_len <= COORDINATOR_PEER_MAX && d->n_read < DRILL_MAX) {
        drill_result *r = &d->read[d->n_read++];
        memcpy(r->peer, peer, peer_len);
        r->peer_len = peer_len;
        r->task = m->task;
        r->epoch = m->epoch;
        snprintf(r->digest, sizeof r->digest, "%s", m->digest);
        const drill_result *first = drill_find(d->dropped, d->n_dropped, NULL, 0, m->task);
        if (first != NULL && log != NULL) {
            bool same = first->epoch == m->epoch && strcmp(first->digest, m->digest) == 0;
            fprintf(log,
                    "coordinator: fault drill: task %" PRId64 " delivered again: epoch %" PRIu64
                    ", digest %s: %s\n",
                    m->task, m->epoch, m->digest,
                    same ? "the same epoch and digest" : "NOT the epoch and digest first sent");
        }
    }
    proto_msg_free(&m);
}

void drill_input(drill *d, FILE *log, const void *peer, size_t peer_len, const void *frame,
                 size_t len) {
    proto_frame_iter it;
    const void *msg = NULL;
    size_t msg_len = 0;
    if (proto_frame_begin(&it, frame, len, NULL) != 0) {
        return;
    }
    while (proto_frame_next(&it, &msg, &msg_len, NULL) == 1) {
        drill_input_msg(d, log, peer, peer_len, msg, msg_len);
    }
}

/* Whether one message the batch made for peer is sent: the ACK (stored) of a result read in
 * this batch is not, while the drill has ACKs to drop. The answer to a result delivered again
 * is logged. */
static bool drill_keep(drill *d, FILE *log, const uint8_t *peer, size_t peer_len, const void *data,
                       size_t len) {
    proto_msg *m = NULL;
    if (proto_decode(data, len, &m, NULL) != 0) {
        return true;
    }
    bool keep = true;
    const drill_result *r =
        m->type == PROTO_ACK ? drill_find(d->read, d->n_read, peer, peer_len, m->task) : NULL;
    if (r != NULL && r->epoch == m->epoch) {
        const drill_result *first = drill_find(d->dropped, d->n_dropped, NULL, 0, m->task);
        if (first != NULL) {
            if (log != NULL) {
                fprintf(log,
                        "coordinator: fault drill: task %" PRId64 " epoch %" PRIu64
                        " answered %s again\n",
                        m->task, m->epoch,
                        m->status == PROTO_ACK_STORED      ? "stored"
                        : m->status == PROTO_ACK_DUPLICATE ? "duplicate"
                                                           : "lease_lost");
            }
        } else if (m->status == PROTO_ACK_STORED && d->drop_acks_left > 0 &&
                   d->n_dropped < DRILL_MAX) {
            d->dropped[d->n_dropped++] = *r;
            d->drop_acks_left--;
            keep = false;
            if (log != NULL) {
                fprintf(log,
                        "coordinator: fault drill: dropped the ACK (stored) of task %" PRId64
                        " epoch %" PRIu64 ", digest %s\n",
                        m->task, m->epoch, r->digest);
            }
        }
    }
    proto_msg_free(&m);
    return keep;
}

int drill_output(drill *d, FILE *log, const coordinator_send *out, uint8_t **frame, size_t *len) {
    proto_frame_iter it;
    const void *msg = NULL;
    size_t msg_len = 0, n = 0, n_kept = 0;
    if (d->n_read == 0 || proto_frame_begin(&it, out->data, out->len, NULL) != 0) {
        return 0;
    }
    const uint8_t **kept = malloc(PROTO_MAX_BUNDLE * sizeof *kept);
    size_t *kept_len = malloc(PROTO_MAX_BUNDLE * sizeof *kept_len);
    if (kept == NULL || kept_len == NULL) {
        free(kept);
        free(kept_len);
        return 0; /* sent as it is: the drill skips a turn rather than the frame */
    }
    while (n < PROTO_MAX_BUNDLE && proto_frame_next(&it, &msg, &msg_len, NULL) == 1) {
        n++;
        if (drill_keep(d, log, out->peer, out->peer_len, msg, msg_len)) {
            kept[n_kept] = msg;
            kept_len[n_kept++] = msg_len;
        }
    }
    int what = n_kept == n ? 0 : n_kept == 0 ? 1 : 2;
    /* fewer messages than the frame held: it still fits, so only memory can fail, and then
     * the frame is lost whole, as it could be on the wire */
    if (what == 2 && proto_bundle(kept, kept_len, n_kept, frame, len, NULL) != 0) {
        what = 1;
    }
    free(kept);
    free(kept_len);
    return what;
}
