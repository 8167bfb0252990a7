/*
 * sched_driver: the scheduler driven as plain calls by a test, as a worker and a client would
 * drive it over the network (sched_driver.h).
 */
#include "sched_driver.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "coordinator/wire.h"

static char err[COMMON_ERR_LEN];

const char *tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

coordinator_store *open_fresh(const char *name) {
    char path[512], side[600];
    snprintf(path, sizeof path, "%s/%s", tmpdir(), name);
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", path);
    remove(side);
    coordinator_store *s = NULL;
    if (coordinator_store_open(&s, path, 0, err) != 0) {
        fail_msg("open %s: %s", path, err);
    }
    int64_t ds = 0;
    assert_int_equal(coordinator_dataset_create(s, "d", "test", false, &ds, err), 0);
    coordinator_import_stats st = {0};
    if (coordinator_games_generate(s, ds, N_GAMES, 5, 40, &st, NULL, err) != 0) {
        fail_msg("generate: %s", err);
    }
    return s;
}

int64_t query_int(coordinator_store *s, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(coordinator_store_db(s), sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("prepare %s", sql);
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* ---- frames ---- */

frame encode(const char *peer, const proto_msg *m) {
    frame f = {0};
    snprintf(f.peer, sizeof f.peer, "%.31s", peer);
    if (proto_encode(m, &f.data, &f.len, err) != 0) {
        fail_msg("encode: %s", err);
    }
    return f;
}

void sent_free(sent *o) {
    for (size_t i = 0; i < o->n; i++) {
        proto_msg_free(&o->m[i]);
    }
    o->n = 0;
}

/* One batch: the frames in (freed), a tick at now, the commit; *out receives what it sent. */
void turn(coordinator_sched *s, int64_t now, frame *in, size_t n_in, sent *out) {
    assert_int_equal(coordinator_sched_begin(s, err), 0);
    for (size_t i = 0; i < n_in; i++) {
        if (coordinator_sched_input(s, in[i].peer, strlen(in[i].peer), in[i].data, in[i].len, now,
                                    err) != 0) {
            fail_msg("input: %s", err);
        }
        free(in[i].data);
    }
    if (coordinator_sched_tick(s, now, err) != 0) {
        fail_msg("tick: %s", err);
    }
    const coordinator_send *o = NULL;
    size_t n = 0;
    assert_int_equal(coordinator_sched_commit(s, &o, &n, err), 0);
    assert_true(n <= MAX_SENT);
    out->n = 0;
    for (size_t i = 0; i < n; i++) {
        proto_frame_iter it;
        const void *msg = NULL;
        size_t len = 0;
        if (proto_frame_begin(&it, o[i].data, o[i].len, err) != 0) {
            fail_msg("the scheduler sent a frame that is not a message or a bundle: %s", err);
        }
        int got;
        while ((got = proto_frame_next(&it, &msg, &len, err)) > 0) {
            assert_true(out->n < MAX_SENT);
            assert_true(o[i].peer_len < 32);
            memcpy(out->peer[out->n], o[i].peer, o[i].peer_len);
            out->peer[out->n][o[i].peer_len] = '\0';
            if (proto_decode(msg, len, &out->m[out->n], err) != 0) {
                fail_msg("the scheduler sent a message that does not decode: %s", err);
            }
            out->n++;
        }
        if (got < 0) {
            fail_msg("the scheduler sent a malformed bundle: %s", err);
        }
    }
}

void turn1(coordinator_sched *s, int64_t now, frame f, sent *out) {
    turn(s, now, &f, 1, out);
}

/* The first message of type t in o, or NULL. */
proto_msg *find(sent *o, proto_type t) {
    for (size_t i = 0; i < o->n; i++) {
        if (o->m[i]->type == t) {
            return o->m[i];
        }
    }
    return NULL;
}

size_t count(sent *o, proto_type t) {
    size_t n = 0;
    for (size_t i = 0; i < o->n; i++) {
        n += o->m[i]->type == t;
    }
    return n;
}

frame hello(const char *peer, const char *worker) {
    proto_msg m = {.type = PROTO_HELLO, .worker = worker, .backend = "cpu", .threads = 1};
    return encode(peer, &m);
}

frame ready(const char *peer, uint32_t credits) {
    proto_msg m = {.type = PROTO_READY, .credits = credits};
    return encode(peer, &m);
}

static char spec_json[1024];

frame submit(const char *peer, uint64_t req, const char *name, const char *submission,
             const char *analyses) {
    snprintf(spec_json, sizeof spec_json,
             "{\"name\":\"%s\",\"model\":\"%s\",\"dataset\":\"d\",\"games\":[0,%d],"
             "\"analyses\":[%s]}",
             name, MODEL_DIR, N_GAMES, analyses);
    proto_msg m = {.type = PROTO_SUBMIT, .req = req, .submission = submission, .spec = spec_json};
    return encode(peer, &m);
}

frame request(const char *peer, proto_type t, uint64_t req, const char *sweep) {
    proto_msg m = {.type = t, .req = req, .sweep = sweep};
    return encode(peer, &m);
}

/* A RESULT of (task, epoch) with the given results. */
frame result(const char *peer, int64_t task, uint64_t epoch, const coordinator_results *r,
             bool bad_digest) {
    uint8_t *body = NULL;
    size_t len = 0;
    if (coordinator_results_encode(r, &body, &len, err) != 0) {
        fail_msg("encode results: %s", err);
    }
    char digest[65];
    /* sha256 of the body, through the same digest the worker computes */
    assert_int_equal(coordinator_digest_hex(body, len, digest), 0);
    if (bad_digest) {
        digest[0] = digest[0] == '0' ? '1' : '0';
    }
    proto_msg m = {.type = PROTO_RESULT,
                   .task = task,
                   .epoch = epoch,
                   .digest = digest,
                   .body = body,
                   .body_len = len};
    frame f = encode(peer, &m);
    free(body);
    return f;
}

frame heartbeat(const char *peer, int64_t task, uint64_t epoch) {
    proto_msg m = {.type = PROTO_HEARTBEAT, .task = task, .epoch = epoch, .progress = 0.5};
    return encode(peer, &m);
}

frame failure(const char *peer, int64_t task, uint64_t epoch, const char *text) {
    proto_msg m = {.type = PROTO_FAIL, .task = task, .epoch = epoch, .error = text};
    return encode(peer, &m);
}

frame returned(const char *peer, int64_t task, uint64_t epoch) {
    proto_msg m = {.type = PROTO_RETURN, .task = task, .epoch = epoch};
    return encode(peer, &m);
}

/* One prediction row of game 0, so that a stored result has a row to count. */
static const uint64_t one_game[1] = {0};
static const uint32_t one_pos[1] = {1}, one_rank[1] = {1};
static const char *const one_token[1] = {"e4"};
static const float one_logprob[1] = {-0.5f};
static const uint8_t one_legal[1] = {1};
static const coordinator_prediction_batch one_prediction = {
    1, one_game, one_pos, one_rank, one_token, one_logprob, one_legal};
const coordinator_results prediction_results = {.predictions = &one_prediction};
