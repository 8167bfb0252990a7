/*
 * test_proto_interop: proto's MessagePack against an independent implementation, msgpack-c.
 * Messages written by proto_encode are unpacked by msgpack-c and every key and value is checked
 * (so proto writes standard MessagePack, not a private dialect), and messages packed by
 * msgpack-c, with the wider integer and string encodings it may choose, are read by proto_decode
 * (so a peer written against any conforming library is understood).
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "proto/proto.h"

static const char *const SHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/* The value of key in the msgpack-c map object (fails the test when absent). */
static const msgpack_object *find(const msgpack_object *map, const char *key) {
    assert_int_equal(map->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        assert_int_equal(kv->key.type, MSGPACK_OBJECT_STR);
        if (kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, kv->key.via.str.size) == 0) {
            return &kv->val;
        }
    }
    fail_msg("key %s not in the map", key);
    return NULL;
}

static void assert_str(const msgpack_object *o, const char *want) {
    assert_int_equal(o->type, MSGPACK_OBJECT_STR);
    assert_int_equal(o->via.str.size, strlen(want));
    assert_memory_equal(o->via.str.ptr, want, strlen(want));
}

static void test_proto_written_msgpack_c_read(void **state) {
    (void)state;
    static const char body[] = {1, 2, 3, 0, (char)0xff};
    proto_msg m = {.type = PROTO_TASK,
                   .task = 4000000000LL,
                   .epoch = UINT64_MAX,
                   .attempt = 2,
                   .model_path = "/models/chess-tiny",
                   .model_sha256 = SHA,
                   .spec = "{\"name\":\"s\"}",
                   .body = body,
                   .body_len = sizeof body};
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN];
    if (proto_encode(&m, &buf, &len, err) != 0) {
        fail_msg("%s", err);
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    assert_int_equal(msgpack_unpack_next(&u, (const char *)buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len); /* one object, nothing after it */
    const msgpack_object *root = &u.data;
    assert_int_equal(root->via.map.size, 9); /* v, t and the seven fields of a task */
    const msgpack_object *v = find(root, "v");
    assert_int_equal(v->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    assert_int_equal(v->via.u64, PROTO_VERSION);
    assert_str(find(root, "t"), "task");
    assert_int_equal(find(root, "task")->via.u64, 4000000000ULL);
    assert_true(find(root, "epoch")->via.u64 == UINT64_MAX);
    assert_int_equal(find(root, "attempt")->via.u64, 2);
    assert_str(find(root, "model_path"), "/models/chess-tiny");
    assert_str(find(root, "model_sha256"), SHA);
    assert_str(find(root, "spec"), "{\"name\":\"s\"}");
    const msgpack_object *b = find(root, "body");
    assert_int_equal(b->type, MSGPACK_OBJECT_BIN);
    assert_int_equal(b->via.bin.size, sizeof body);
    assert_memory_equal(b->via.bin.ptr, body, sizeof body);
    msgpack_unpacked_destroy(&u);
    free(buf);

    /* a heartbeat's float and a hello's arrays */
    proto_msg h = {.type = PROTO_HEARTBEAT, .task = 7, .epoch = 3, .progress = 0.25};
    assert_int_equal(proto_encode(&h, &buf, &len, err), 0);
    msgpack_unpacked_init(&u);
    off = 0;
    assert_int_equal(msgpack_unpack_next(&u, (const char *)buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(off, len);
    const msgpack_object *p = find(&u.data, "progress");
    assert_true(p->type == MSGPACK_OBJECT_FLOAT64 || p->type == MSGPACK_OBJECT_FLOAT32);
    assert_true(p->via.f64 == 0.25);
    msgpack_unpacked_destroy(&u);
    free(buf);

    proto_msg hello = {.type = PROTO_HELLO,
                       .worker = "node1/gpu0",
                       .backend = "cpu",
                       .memory = 1ULL << 40,
                       .threads = 16,
                       .n_devices = 2,
                       .devices = {0, 3},
                       .n_models = 1,
                       .models = {SHA}};
    assert_int_equal(proto_encode(&hello, &buf, &len, err), 0);
    msgpack_unpacked_init(&u);
    off = 0;
    assert_int_equal(msgpack_unpack_next(&u, (const char *)buf, len, &off), MSGPACK_UNPACK_SUCCESS);
    const msgpack_object *d = find(&u.data, "devices");
    assert_int_equal(d->type, MSGPACK_OBJECT_ARRAY);
    assert_int_equal(d->via.array.size, 2);
    assert_int_equal(d->via.array.ptr[1].via.u64, 3);
    assert_true(find(&u.data, "memory")->via.u64 == 1ULL << 40);
    assert_str(&find(&u.data, "models")->via.array.ptr[0], SHA);
    msgpack_unpacked_destroy(&u);
    free(buf);
}

/* msgpack-c's packer with its own choices of encoding; keys in an order proto never writes. */
static void test_msgpack_c_written_proto_read(void **state) {
    (void)state;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "body", 4);
    msgpack_pack_bin_with_body(&pk, "xyz", 3);
    msgpack_pack_str_with_body(&pk, "digest", 6);
    msgpack_pack_str_with_body(&pk, SHA, 64);
    msgpack_pack_str_with_body(&pk, "epoch", 5);
    msgpack_pack_uint64(&pk, 12); /* msgpack-c writes the smallest form; fine either way */
    msgpack_pack_str_with_body(&pk, "task", 4);
    msgpack_pack_int32(&pk, 99);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "result", 6);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int8(&pk, PROTO_VERSION);
    proto_msg *m = NULL;
    char err[COMMON_ERR_LEN];
    if (proto_decode(sb.data, sb.size, &m, err) != 0) {
        fail_msg("%s", err);
    }
    assert_int_equal(m->type, PROTO_RESULT);
    assert_int_equal(m->task, 99);
    assert_int_equal(m->epoch, 12);
    assert_string_equal(m->digest, SHA);
    assert_int_equal(m->body_len, 3);
    assert_memory_equal(m->body, "xyz", 3);
    proto_msg_free(&m);
    assert_null(m);
    msgpack_sbuffer_destroy(&sb);

    /* a float32 progress, as a peer on float32 hardware might send */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, PROTO_VERSION);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "heartbeat", 9);
    msgpack_pack_str_with_body(&pk, "task", 4);
    msgpack_pack_uint32(&pk, 5);
    msgpack_pack_str_with_body(&pk, "epoch", 5);
    msgpack_pack_uint16(&pk, 1);
    msgpack_pack_str_with_body(&pk, "progress", 8);
    msgpack_pack_float(&pk, 0.5f);
    assert_int_equal(proto_decode(sb.data, sb.size, &m, err), 0);
    assert_int_equal(m->type, PROTO_HEARTBEAT);
    assert_true(m->progress == 0.5);
    proto_msg_free(&m);
    msgpack_sbuffer_destroy(&sb);

    /* the same map with a key msgpack-c happily packs twice: proto refuses it */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, PROTO_VERSION);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "ready", 5);
    msgpack_pack_str_with_body(&pk, "credits", 7);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "credits", 7);
    msgpack_pack_uint8(&pk, 2);
    int rc = proto_decode(sb.data, sb.size, &m, err);
    assert_true(rc == COMMON_ERR_PARSE || rc == COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "credits"));
    assert_null(m);
    msgpack_sbuffer_destroy(&sb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_written_msgpack_c_read),
        cmocka_unit_test(test_msgpack_c_written_proto_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
