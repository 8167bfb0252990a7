/*
 * test_coord_drill: the coordinator's fault drill (coordinator/drill.h) on frames made by hand:
 * its option text is read like the worker's --faults and refused naming the part; with
 * drop_result_acks=N the ACK (stored) of each of the first N results read is taken out of the
 * frame that carries it, whatever else the frame holds (a bundle keeps its other messages, a
 * frame of that ACK alone is not sent); ACKs of results not read in the batch, other peers' and
 * later ones go as they are; a result delivered again is logged with how it compares.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "coordinator/drill.h"
#include "proto/proto.h"

#define DIGEST "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static char err[COMMON_ERR_LEN];

static void test_parse(void **state) {
    (void)state;
    drill d;
    assert_int_equal(drill_parse(&d, NULL, err), 0);
    assert_false(d.on);
    assert_int_equal(drill_parse(&d, "", err), 0);
    assert_false(d.on);
    assert_int_equal(drill_parse(&d, "drop_result_acks=0", err), 0);
    assert_false(d.on);
    assert_int_equal(drill_parse(&d, "drop_result_acks=3", err), 0);
    assert_true(d.on);
    assert_int_equal(d.drop_acks_left, 3);
    static const char *const bad[][2] = {
        {"drop_result_acks", "expected key=value"},  {"drop_result_acks=", "a count in 0..64"},
        {"drop_result_acks=-1", "a count in 0..64"}, {"drop_result_acks=65", "a count in 0..64"},
        {"drop_result_acks=1x", "a count in 0..64"}, {"drop_result_acks=1,", "trailing ','"},
        {"drop_acks=1", "unknown key 'drop_acks'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        assert_int_equal(drill_parse(&d, bad[i][0], err), COMMON_ERR_INVALID);
        if (strstr(err, bad[i][1]) == NULL) {
            fail_msg("%s: '%s', not naming '%s'", bad[i][0], err, bad[i][1]);
        }
    }
}

static uint8_t *encode(const proto_msg *m, size_t *len) {
    uint8_t *out = NULL;
    assert_int_equal(proto_encode(m, &out, len, err), 0);
    return out;
}

static uint8_t *result_frame(int64_t task, uint64_t epoch, size_t *len) {
    proto_msg m = {.type = PROTO_RESULT,
                   .task = task,
                   .epoch = epoch,
                   .digest = DIGEST,
                   .body = "x",
                   .body_len = 1};
    return encode(&m, len);
}

static uint8_t *ack(int64_t task, uint64_t epoch, size_t *len) {
    proto_msg m = {.type = PROTO_ACK, .task = task, .epoch = epoch, .status = PROTO_ACK_STORED};
    return encode(&m, len);
}

/* out for peer of the n messages given, bundled when several. */
static coordinator_send send_of(const char *peer, uint8_t **msgs, size_t *lens, size_t n) {
    coordinator_send s = {.peer_len = strlen(peer)};
    memcpy(s.peer, peer, s.peer_len);
    assert_int_equal(proto_bundle((const uint8_t *const *)msgs, lens, n, &s.data, &s.len, err), 0);
    for (size_t i = 0; i < n; i++) {
        free(msgs[i]);
    }
    return s;
}

/* The types of the messages of frame, in order, as letters: A ack, T task, R ready. */
static void types_of(const uint8_t *frame, size_t len, char *out) {
    proto_frame_iter it;
    assert_int_equal(proto_frame_begin(&it, frame, len, err), 0);
    const void *msg = NULL;
    size_t n = 0, k = 0;
    while (proto_frame_next(&it, &msg, &n, err) == 1) {
        proto_msg *m = NULL;
        assert_int_equal(proto_decode(msg, n, &m, err), 0);
        out[k++] = m->type == PROTO_ACK ? 'A' : m->type == PROTO_TASK ? 'T' : 'R';
        proto_msg_free(&m);
    }
    out[k] = '\0';
}

static void test_drop_first_acks(void **state) {
    (void)state;
    drill d;
    assert_int_equal(drill_parse(&d, "drop_result_acks=1", err), 0);
    char *text = NULL;
    size_t text_len = 0;
    FILE *log = open_memstream(&text, &text_len);
    assert_non_null(log);

    /* a batch reads results of tasks 7 (peer A) and 8 (peer B); A's frame bundles the ACK of 7
     * with a READY-like other message, B's is the ACK of 8 alone */
    drill_begin_batch(&d);
    size_t len = 0;
    uint8_t *r = result_frame(7, 1, &len);
    drill_input(&d, log, "A", 1, r, len);
    free(r);
    r = result_frame(8, 2, &len);
    drill_input(&d, log, "B", 1, r, len);
    free(r);
    uint8_t *msgs[2];
    size_t lens[2];
    msgs[0] = ack(7, 1, &lens[0]);
    proto_msg other = {.type = PROTO_READY, .credits = 1}; /* any other message */
    msgs[1] = encode(&other, &lens[1]);
    coordinator_send a = send_of("A", msgs, lens, 2);
    uint8_t *instead = NULL;
    size_t instead_len = 0;
    /* the first ACK is dropped from the bundle, the rest of it goes */
    assert_int_equal(drill_output(&d, log, &a, &instead, &instead_len), 2);
    char types[8];
    types_of(instead, instead_len, types);
    assert_string_equal(types, "R");
    free(instead);
    free(a.data);
    /* the drill had one to drop: B's ACK goes as it is */
    msgs[0] = ack(8, 2, &lens[0]);
    coordinator_send b = send_of("B", msgs, lens, 1);
    assert_int_equal(drill_output(&d, log, &b, &instead, &instead_len), 0);
    free(b.data);

    /* task 7 again, with the same epoch and digest: logged, and its ACK (whatever it says) is
     * logged as the answer and sent */
    drill_begin_batch(&d);
    r = result_frame(7, 1, &len);
    drill_input(&d, log, "A", 1, r, len);
    free(r);
    msgs[0] = ack(7, 1, &lens[0]);
    coordinator_send again = send_of("A", msgs, lens, 1);
    assert_int_equal(drill_output(&d, log, &again, &instead, &instead_len), 0);
    free(again.data);
    fclose(log);
    assert_non_null(strstr(text, "fault drill: dropped the ACK (stored) of task 7 epoch 1"));
    assert_null(strstr(text, "of task 8"));
    assert_non_null(strstr(text, "fault drill: task 7 delivered again: epoch 1, digest " DIGEST
                                 ": the same epoch and digest"));
    assert_non_null(strstr(text, "fault drill: task 7 epoch 1 answered stored again"));
    free(text);
}

static void test_lone_ack_frame_not_sent(void **state) {
    (void)state;
    drill d;
    assert_int_equal(drill_parse(&d, "drop_result_acks=2", err), 0);
    drill_begin_batch(&d);
    size_t len = 0;
    uint8_t *r = result_frame(5, 3, &len);
    drill_input(&d, NULL, "A", 1, r, len);
    free(r);
    uint8_t *msgs[1];
    size_t lens[1];
    /* an ACK of a task not read in this batch, or of another epoch, is not the drill's */
    msgs[0] = ack(6, 3, &lens[0]);
    coordinator_send other = send_of("A", msgs, lens, 1);
    uint8_t *instead = NULL;
    size_t instead_len = 0;
    assert_int_equal(drill_output(&d, NULL, &other, &instead, &instead_len), 0);
    free(other.data);
    msgs[0] = ack(5, 4, &lens[0]);
    coordinator_send stale = send_of("A", msgs, lens, 1);
    assert_int_equal(drill_output(&d, NULL, &stale, &instead, &instead_len), 0);
    free(stale.data);
    /* the ACK of task 5 epoch 3 alone in its frame: nothing is sent */
    msgs[0] = ack(5, 3, &lens[0]);
    coordinator_send lone = send_of("A", msgs, lens, 1);
    assert_int_equal(drill_output(&d, NULL, &lone, &instead, &instead_len), 1);
    free(lone.data);
    assert_int_equal(d.drop_acks_left, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_drop_first_acks),
        cmocka_unit_test(test_lone_ack_frame_not_sent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
