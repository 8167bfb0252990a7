/*
 * test_frames: hostile input to the coordinator's ROUTER from raw DEALER sockets
 * (RELIABILITY.md §6, rows 18, 19 and 21; PROTOCOL.md "Envelope").
 *
 * Every malformed frame below (random bytes, a valid request cut at every length, other protocol
 * versions, count and length amplifiers, depth, 0xc1, trailing bytes, duplicate keys, wrong
 * types, a coordinator's own message types, messages of several frames) is answered with an
 * ERROR, and with nothing else: never a REPLY, never more than one answer. A request sent after
 * them is answered, so the answers came in order and the coordinator kept serving. A frame over
 * PROTO_MAX_MESSAGE gets its connection closed, without the coordinator ever holding it
 * (VmHWM). A flood of 30,000 such messages from one peer, and from 40 short-lived peers, leaves
 * its VmRSS within RSS_BOUND_KB of where the first flood left it. Afterwards a normal sweep runs
 * to completion, and the coordinator counted the bad frames.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zmq.h>

#include "svc_harness.h"

/* VmRSS growth allowed across three floods after a first one (the first sizes the allocator's
 * pools and ZeroMQ's queues). The three send about 36,000 frames, so a leak of 256 bytes a frame
 * exceeds it; smaller leaks are LeakSanitizer's to find when the coordinator exits (Debug). */
#define RSS_BOUND_KB (8 * 1024)
#define FLOOD_FRAMES 10000

/* A small deterministic generator (xorshift64*) for random frames. */
static uint64_t next_rand(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

typedef struct frame {
    uint8_t *data;
    size_t len;
} frame;

/* A growable list of frames (each owned). */
typedef struct frames {
    frame *f;
    size_t n, cap;
} frames;

static void frames_add(frames *l, const void *data, size_t len) {
    if (l->n == l->cap) {
        l->cap = l->cap > 0 ? 2 * l->cap : 64;
        l->f = realloc(l->f, l->cap * sizeof *l->f);
        assert_non_null(l->f);
    }
    uint8_t *copy = malloc(len > 0 ? len : 1);
    assert_non_null(copy);
    if (len > 0) {
        memcpy(copy, data, len);
    }
    l->f[l->n++] = (frame){copy, len};
}

static void frames_free(frames *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->f[i].data);
    }
    free(l->f);
    *l = (frames){0};
}

static void encode(const proto_msg *m, uint8_t **out, size_t *len) {
    char err[COMMON_ERR_LEN];
    if (proto_encode(m, out, len, err) != 0) {
        fail_msg("proto_encode: %s", err);
    }
}

/* A STATUS request with this req, encoded. */
static void status_frame(uint64_t req, uint8_t **out, size_t *len) {
    proto_msg m = {.type = PROTO_STATUS, .req = req, .sweep = ""};
    encode(&m, out, len);
}

/* Adds w's bytes to l (w is reset). */
static void add_written(frames *l, proto_writer *w) {
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(proto_writer_finish(w, &buf, &len, NULL), 0);
    frames_add(l, buf, len);
    free(buf);
}

/* {"v": v, "t": "status", "req": 9, "sweep": ""} with v written by the caller's choice. */
static void versioned_status(frames *l, int kind) {
    proto_writer w;
    proto_writer_init(&w);
    proto_w_map(&w, kind == 4 ? 3 : 4);
    if (kind != 4) {
        proto_w_str(&w, "v");
        switch (kind) {
        case 0:
            proto_w_uint(&w, 0);
            break;
        case 1:
            proto_w_uint(&w, PROTO_VERSION + 1);
            break;
        case 2:
            proto_w_uint(&w, (uint64_t)1 << 40);
            break;
        default:
            proto_w_str(&w, "1");
            break;
        }
    }
    proto_w_str(&w, "t");
    proto_w_str(&w, "status");
    proto_w_str(&w, "req");
    proto_w_uint(&w, 9);
    proto_w_str(&w, "sweep");
    proto_w_str(&w, "");
    add_written(l, &w);
}

/* The keys every hostile message below starts with: version 1, its type, request id 5. */
static void message_head(proto_writer *w, const char *type) {
    proto_w_str(w, "v");
    proto_w_uint(w, 1);
    proto_w_str(w, "t");
    proto_w_str(w, type);
    proto_w_str(w, "req");
    proto_w_uint(w, 5);
}

/* The hostile MessagePack battery: each one a single frame that must be refused. */
static void hostile_frames(frames *l) {
    static const uint8_t array_100m[] = {0xdd, 0x05, 0xf5, 0xe1, 0x00};
    static const uint8_t array_4g[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t map_4g[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t str_4g[] = {0xdb, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t bin_4g[] = {0xc6, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t never_used[] = {0xc1};
    static const uint8_t ext[] = {0xd4, 0x01, 0x00};
    static const uint8_t nil[] = {0xc0};
    frames_add(l, array_100m, sizeof array_100m);
    frames_add(l, array_4g, sizeof array_4g);
    frames_add(l, map_4g, sizeof map_4g);
    frames_add(l, str_4g, sizeof str_4g);
    frames_add(l, bin_4g, sizeof bin_4g);
    frames_add(l, never_used, sizeof never_used);
    frames_add(l, ext, sizeof ext);
    frames_add(l, nil, sizeof nil);
    uint8_t deep[40]; /* 33 nested arrays of one element, then nil; and 31 nested array32s */
    memset(deep, 0x91, 33);
    deep[33] = 0xc0;
    frames_add(l, deep, 34);
    uint8_t nested32[31 * 5 + 1];
    for (size_t i = 0; i < 31; i++) {
        memcpy(nested32 + 5 * i, (const uint8_t[]){0xdd, 0x00, 0x00, 0x00, 0x01}, 5);
    }
    nested32[155] = 0xc0;
    frames_add(l, nested32, sizeof nested32);
    /* a valid STATUS with a byte after it */
    uint8_t *buf = NULL;
    size_t len = 0;
    status_frame(5, &buf, &len);
    uint8_t *trailing = malloc(len + 1);
    assert_non_null(trailing);
    memcpy(trailing, buf, len);
    trailing[len] = 0x00;
    frames_add(l, trailing, len + 1);
    free(trailing);
    free(buf);
    /* duplicate key, wrong type, NUL in a text, unknown key, missing key, unknown type */
    proto_writer w;
    proto_writer_init(&w);
    proto_w_map(&w, 5);
    message_head(&w, "status");
    proto_w_str(&w, "sweep");
    proto_w_str(&w, "");
    proto_w_str(&w, "req");
    proto_w_uint(&w, 6);
    add_written(l, &w);
    proto_w_map(&w, 4);
    message_head(&w, "status");
    proto_w_str(&w, "sweep");
    proto_w_int(&w, 5);
    add_written(l, &w);
    proto_w_map(&w, 4);
    message_head(&w, "status");
    proto_w_str(&w, "sweep");
    proto_w_strn(&w, "a\0b", 3);
    add_written(l, &w);
    proto_w_map(&w, 5);
    message_head(&w, "status");
    proto_w_str(&w, "sweep");
    proto_w_str(&w, "");
    proto_w_str(&w, "extra");
    proto_w_uint(&w, 1);
    add_written(l, &w);
    proto_w_map(&w, 3);
    message_head(&w, "status");
    add_written(l, &w);
    proto_w_map(&w, 3);
    message_head(&w, "launch");
    add_written(l, &w);
    /* messages only a coordinator sends */
    proto_msg welcome = {.type = PROTO_WELCOME, .heartbeat_ms = 100, .lease_ms = 1000};
    encode(&welcome, &buf, &len);
    frames_add(l, buf, len);
    free(buf);
    proto_msg reply = {.type = PROTO_REPLY, .req = 5, .body = "\x80", .body_len = 1};
    encode(&reply, &buf, &len);
    frames_add(l, buf, len);
    free(buf);
}

/* Sends a STATUS with req `sentinel` and reads every answer up to its REPLY: each one before it
 * must be an ERROR with req 0 or `echo`; their number is returned. */
static size_t drain(svc_client *c, uint64_t sentinel, uint64_t echo, int timeout_ms) {
    uint8_t *buf = NULL;
    size_t len = 0;
    status_frame(sentinel, &buf, &len);
    svc_client_send(c, buf, len);
    free(buf);
    size_t n_errors = 0;
    for (;;) {
        proto_msg *m = NULL;
        if (!svc_client_recv(c, timeout_ms, &m)) {
            fail_msg("no answer to STATUS %llu within %d ms (after %zu errors)",
                     (unsigned long long)sentinel, timeout_ms, n_errors);
        }
        if (m->type == PROTO_REPLY && m->req == sentinel) {
            proto_reply *r = NULL;
            char err[COMMON_ERR_LEN];
            if (proto_reply_decode(PROTO_STATUS, m->body, m->body_len, &r, err) != 0) {
                fail_msg("the STATUS reply does not decode: %s", err);
            }
            proto_reply_free(&r);
            proto_msg_free(&m);
            return n_errors;
        }
        if (m->type != PROTO_ERROR) {
            fail_msg("a malformed frame was answered with %s (req %llu)", proto_type_name(m->type),
                     (unsigned long long)m->req);
        }
        if (m->req != 0 && m->req != echo) {
            fail_msg("an ERROR echoes req %llu, which no frame carried",
                     (unsigned long long)m->req);
        }
        n_errors++;
        proto_msg_free(&m);
    }
}

static void send_all(svc_client *c, const frames *l) {
    for (size_t i = 0; i < l->n; i++) {
        svc_client_send(c, l->f[i].data, l->f[i].len);
    }
}

/* One flood: FLOOD_FRAMES frames from c without reading (random bytes, cuts, the hostile
 * battery, valid STATUS and idle heartbeats), then 40 peers that send 50 frames each and
 * vanish; c's answers are drained afterwards. */
static void flood(svc_client *c, const char *endpoint, const frames *bad, uint64_t *seed,
                  uint64_t sentinel) {
    uint8_t junk[256];
    uint8_t *status = NULL, *heartbeat = NULL;
    size_t status_len = 0, heartbeat_len = 0;
    status_frame(4242, &status, &status_len);
    proto_msg hb = {.type = PROTO_HEARTBEAT, .task = 0, .epoch = 0, .progress = 0.0};
    encode(&hb, &heartbeat, &heartbeat_len);
    for (size_t i = 0; i < FLOOD_FRAMES; i++) {
        switch (i % 4) {
        case 0: {
            size_t n = 1 + next_rand(seed) % sizeof junk;
            for (size_t k = 0; k < n; k++) {
                junk[k] = (uint8_t)next_rand(seed);
            }
            svc_client_send(c, junk, n);
            break;
        }
        case 1:
            svc_client_send(c, status, next_rand(seed) % status_len);
            break;
        case 2: {
            const frame *f = &bad->f[next_rand(seed) % bad->n];
            svc_client_send(c, f->data, f->len);
            break;
        }
        default:
            if (i % 8 == 3) {
                svc_client_send(c, status, status_len);
            } else {
                svc_client_send(c, heartbeat, heartbeat_len);
            }
            break;
        }
    }
    for (int p = 0; p < 40; p++) {
        svc_client peer = {0};
        svc_client_open(&peer, endpoint);
        int linger = 5000; /* closing flushes what it sent, then it is gone */
        assert_int_equal(zmq_setsockopt(peer.sock, ZMQ_LINGER, &linger, sizeof linger), 0);
        for (int k = 0; k < 50; k++) {
            size_t n = 1 + next_rand(seed) % 64;
            for (size_t j = 0; j < n; j++) {
                junk[j] = (uint8_t)next_rand(seed);
            }
            svc_client_send(&peer, junk, n);
        }
        svc_client_send(&peer, status, status_len); /* then it goes without reading */
        svc_client_close(&peer);
    }
    free(status);
    free(heartbeat);
    /* drain c: ERRORs, ACKs of the heartbeats and REPLYs to STATUS 4242 may come; then ours */
    uint8_t *s = NULL;
    size_t s_len = 0;
    status_frame(sentinel, &s, &s_len);
    svc_client_send(c, s, s_len);
    free(s);
    for (;;) {
        proto_msg *m = NULL;
        if (!svc_client_recv(c, 60000, &m)) {
            fail_msg("no answer to STATUS %llu after a flood", (unsigned long long)sentinel);
        }
        bool done = m->type == PROTO_REPLY && m->req == sentinel;
        bool expected = m->type == PROTO_ERROR || m->type == PROTO_ACK ||
                        (m->type == PROTO_REPLY && m->req == 4242) || done;
        if (!expected) {
            fail_msg("a flood frame was answered with %s (req %llu)", proto_type_name(m->type),
                     (unsigned long long)m->req);
        }
        proto_msg_free(&m);
        if (done) {
            return;
        }
    }
}

/* Whether a ZMQ_EVENT_DISCONNECTED arrives on monitor within timeout_ms. */
static bool disconnected(void *monitor, int timeout_ms) {
    zmq_pollitem_t item = {.socket = monitor, .events = ZMQ_POLLIN};
    while (zmq_poll(&item, 1, timeout_ms) > 0) {
        zmq_msg_t ev, addr;
        zmq_msg_init(&ev);
        zmq_msg_init(&addr);
        assert_true(zmq_msg_recv(&ev, monitor, 0) >= 0);
        assert_true(zmq_msg_more(&ev));
        assert_true(zmq_msg_recv(&addr, monitor, 0) >= 0);
        uint16_t event = 0;
        assert_true(zmq_msg_size(&ev) >= sizeof event);
        memcpy(&event, zmq_msg_data(&ev), sizeof event);
        zmq_msg_close(&ev);
        zmq_msg_close(&addr);
        if (event == ZMQ_EVENT_DISCONNECTED) {
            return true;
        }
    }
    return false;
}

/* A frame over PROTO_MAX_MESSAGE from a peer of its own: the coordinator closes that connection
 * without reading the frame into memory, and answers nothing. */
static void oversized(const svc_env *e, pid_t coordinator) {
    long hwm_before = svc_proc_kb(coordinator, "VmHWM");
    assert_true(hwm_before > 0);
    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, no_reconnect = -1;
    assert_int_equal(zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger), 0);
    assert_int_equal(zmq_setsockopt(sock, ZMQ_RECONNECT_IVL, &no_reconnect, sizeof no_reconnect),
                     0);
    assert_int_equal(zmq_socket_monitor(sock, "inproc://oversized", ZMQ_EVENT_DISCONNECTED), 0);
    void *monitor = zmq_socket(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_connect(monitor, "inproc://oversized"), 0);
    assert_int_equal(zmq_connect(sock, e->endpoint), 0);
    zmq_msg_t big;
    assert_int_equal(zmq_msg_init_size(&big, PROTO_MAX_MESSAGE + 1), 0);
    memset(zmq_msg_data(&big), 0x80, zmq_msg_size(&big)); /* fixmaps: not even malformed early */
    assert_true(zmq_msg_send(&big, sock, 0) >= 0);
    if (!disconnected(monitor, 60000)) {
        fail_msg("the coordinator kept the connection of a frame over PROTO_MAX_MESSAGE");
    }
    zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
    assert_int_equal(zmq_poll(&item, 1, 200), 0); /* no answer */
    zmq_socket_monitor(sock, NULL, 0);
    zmq_close(monitor);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    long hwm_after = svc_proc_kb(coordinator, "VmHWM");
    print_message("  oversized frame: connection closed; coordinator VmHWM %ld -> %ld kB\n",
                  hwm_before, hwm_after);
    /* it never held the 256 MiB */
    assert_true(hwm_after - hwm_before < 64 * 1024);
}

static void test_hostile_frames(void **state) {
    svc_env *e = *state;
    svc_env_init(e, "frames");
    svc_make_dataset(e, e->db);
    /* Under AddressSanitizer, freed memory waits in a quarantine (256 MiB by default) before
     * it is reused, so RSS grows with every allocation until that fills: the coordinator gets a
     * small one, and RSS measures its own allocations again. */
    char asan[1024] = "";
#if defined(__SANITIZE_ADDRESS__)
    const char *asan_now = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "ASAN_OPTIONS=%s%squarantine_size_mb=1",
             asan_now != NULL ? asan_now : "", asan_now != NULL && asan_now[0] != '\0' ? ":" : "");
#endif
    const char *const env_add[] = {asan[0] != '\0' ? asan : NULL, NULL};
    pid_t coordinator = svc_start_coordinator_env(e, NULL, env_add);
    svc_client c = {0};
    svc_client_open(&c, e->endpoint);
    assert_int_equal(drain(&c, 1, 0, 30000), 0);
    uint64_t n_bad = 0; /* frames the coordinator must count as bad */

    /* random bytes */
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    frames junk = {0};
    for (int i = 0; i < 300; i++) {
        uint8_t buf[300];
        size_t n = 1 + next_rand(&seed) % sizeof buf;
        for (size_t k = 0; k < n; k++) {
            buf[k] = (uint8_t)next_rand(&seed);
        }
        buf[0] |= 0x80; /* not a positive fixint: every one is malformed for sure */
        frames_add(&junk, buf, n);
    }
    send_all(&c, &junk);
    assert_int_equal(drain(&c, 2, 0, 30000), junk.n);
    n_bad += junk.n;
    frames_free(&junk);

    /* a valid request cut at every length */
    uint8_t *status = NULL;
    size_t status_len = 0;
    status_frame(77, &status, &status_len);
    for (size_t cut = 0; cut < status_len; cut++) {
        svc_client_send(&c, status, cut);
    }
    assert_int_equal(drain(&c, 3, 77, 30000), status_len);
    n_bad += status_len;
    free(status);

    /* other protocol versions: refused, naming the version, echoing req */
    frames versions = {0};
    for (int kind = 0; kind < 5; kind++) {
        versioned_status(&versions, kind);
    }
    svc_client_send(&c, versions.f[1].data, versions.f[1].len); /* the next version */
    proto_msg *m = NULL;
    assert_true(svc_client_recv(&c, 30000, &m));
    assert_int_equal(m->type, PROTO_ERROR);
    assert_int_equal(m->req, 9);
    assert_non_null(strstr(m->error, "version"));
    proto_msg_free(&m);
    send_all(&c, &versions);
    assert_int_equal(drain(&c, 4, 9, 30000), versions.n);
    n_bad += versions.n + 1;
    frames_free(&versions);

    /* the hostile battery */
    frames bad = {0};
    hostile_frames(&bad);
    send_all(&c, &bad);
    assert_int_equal(drain(&c, 5, 5, 30000), bad.n);
    n_bad += bad.n;

    /* READY from a peer that never said hello: refused */
    proto_msg ready = {.type = PROTO_READY, .credits = 4};
    svc_client_send_msg(&c, &ready);
    assert_int_equal(drain(&c, 6, 0, 30000), 1);

    /* messages of several frames: one ERROR each, never a REPLY to a part */
    uint8_t *a = NULL, *b = NULL;
    size_t a_len = 0, b_len = 0;
    status_frame(20, &a, &a_len);
    status_frame(21, &b, &b_len);
    const void *two[] = {a, b};
    const size_t two_len[] = {a_len, b_len};
    svc_client_send_frames(&c, two, two_len, 2);
    const void *three[] = {a, "", b};
    const size_t three_len[] = {a_len, 0, b_len};
    svc_client_send_frames(&c, three, three_len, 3);
    const void *empties[] = {"", ""};
    const size_t empties_len[] = {0, 0};
    svc_client_send_frames(&c, empties, empties_len, 2);
    assert_int_equal(drain(&c, 7, 0, 30000), 3);
    n_bad += 3;
    free(a);
    free(b);

    /* a frame over the limit */
    oversized(e, coordinator);
    assert_int_equal(drain(&c, 8, 0, 30000), 0);

    /* floods: the first one sizes the pools, the next three must not grow the process */
    flood(&c, e->endpoint, &bad, &seed, 9);
    long rss_before = svc_proc_kb(coordinator, "VmRSS");
    for (uint64_t round = 0; round < 3; round++) {
        flood(&c, e->endpoint, &bad, &seed, 10 + round);
    }
    long rss_after = svc_proc_kb(coordinator, "VmRSS");
    print_message("  4 floods of %d frames + 40 peers each: coordinator VmRSS %ld -> %ld kB"
                  " (bound +%d kB)\n",
                  FLOOD_FRAMES, rss_before, rss_after, RSS_BOUND_KB);
    assert_true(rss_before > 0 && rss_after > 0);
    assert_true(rss_after - rss_before <= RSS_BOUND_KB);
    frames_free(&bad);
    svc_client_close(&c);

    /* it still runs sweeps */
    char spec[SVC_PATH], name[256];
    svc_path(e, "after.json", spec, sizeof spec);
    svc_write_spec(spec, "after-flood");
    pid_t w = svc_start_worker(e, "w1", NULL);
    svc_submit(e, spec, NULL, name, sizeof name);
    const char *const wait_args[] = {"wait", name, "--coordinator", e->endpoint, "--timeout",
                                     "150",  NULL};
    svc_cli_result r;
    svc_cli(e, 180000, &r, wait_args);
    if (r.status != 0) {
        fail_msg("chesslens wait after the floods: exit %d\n%s%s", r.status, r.out, r.err);
    }
    svc_cli_free(&r);
    int64_t tasks = svc_query_int(e->db, "SELECT count(*) FROM task");
    assert_int_equal(svc_query_int(e->db, "SELECT count(*) FROM task WHERE state = 'done'"), tasks);

    assert_int_equal(svc_stop(e, w, 30000), 0);
    assert_int_equal(svc_stop(e, coordinator, 30000), 0);
    svc_coord_stats cs;
    assert_true(svc_coord_stats_read(e->coordinator_log, &cs));
    print_message("  coordinator counted %llu bad frames (%llu in the checked batteries)\n",
                  (unsigned long long)cs.bad_frames, (unsigned long long)n_bad);
    assert_true(cs.bad_frames >= n_bad);
    assert_int_equal(cs.stored, (uint64_t)tasks);
    svc_check_invariants(e->db, tasks);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hostile_frames, svc_setup, svc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
