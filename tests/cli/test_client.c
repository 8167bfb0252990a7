/*
 * cli/client: the CLI's requests to a coordinator against a scripted ROUTER on inproc in a
 * thread of the test. A reply reaches its call; an ERROR becomes INVALID with the
 * coordinator's text; an unanswered try is sent again with the same request id from a fresh
 * socket (a restarted coordinator meets a new peer); an answer to another request id is
 * ignored; a coordinator that never answers fails the call with IO at its deadline.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cli/client.h"

#define ENDPOINT "inproc://test-client"
#define MAX_SEEN 16

/* What the scripted coordinator does with the request it receives n-th (from 0). */
typedef enum action { ANSWER, IGNORE, ERROR_REPLY, WRONG_ID_THEN_ANSWER } action;

typedef struct server {
    void *ctx, *sock;
    pthread_t thread;
    const action *script;
    size_t n_script;
    /* what it saw: request ids and routing ids of every request */
    size_t n_seen;
    uint64_t req[MAX_SEEN];
    uint8_t peer[MAX_SEEN][256];
    size_t peer_len[MAX_SEEN];
} server;

static void send_to(server *s, const uint8_t *peer, size_t peer_len, const proto_msg *m) {
    uint8_t *buf = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN];
    assert_int_equal(proto_encode(m, &buf, &len, err), 0);
    assert_true(zmq_send(s->sock, peer, peer_len, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(s->sock, buf, len, 0) >= 0);
    free(buf);
}

/* A LIST reply with n sweeps named "s0", "s1", ... */
static void send_list(server *s, const uint8_t *peer, size_t peer_len, uint64_t req, size_t n) {
    proto_sweep_info sweeps[2] = {{.name = "s0", .id = 1}, {.name = "s1", .id = 2}};
    proto_reply r = {.request = PROTO_LIST, .n_sweeps = n, .sweeps = sweeps};
    uint8_t *body = NULL;
    size_t len = 0;
    char err[COMMON_ERR_LEN];
    assert_int_equal(proto_reply_encode(&r, &body, &len, err), 0);
    proto_msg m = {.type = PROTO_REPLY, .req = req, .body = body, .body_len = len};
    send_to(s, peer, peer_len, &m);
    free(body);
}

static void *server_main(void *arg) {
    server *s = arg;
    for (size_t i = 0; i < s->n_script; i++) {
        uint8_t peer[256], frame[4096];
        int pl = zmq_recv(s->sock, peer, sizeof peer, 0);
        int fl = pl >= 0 ? zmq_recv(s->sock, frame, sizeof frame, 0) : -1;
        if (fl < 0) {
            return NULL; /* the context ended */
        }
        proto_msg *m = NULL;
        char err[COMMON_ERR_LEN];
        if (proto_decode(frame, (size_t)fl, &m, err) != 0 || s->n_seen == MAX_SEEN) {
            return NULL;
        }
        s->req[s->n_seen] = m->req;
        memcpy(s->peer[s->n_seen], peer, (size_t)pl);
        s->peer_len[s->n_seen++] = (size_t)pl;
        switch (s->script[i]) {
        case ANSWER:
            send_list(s, peer, (size_t)pl, m->req, 2);
            break;
        case IGNORE:
            break;
        case ERROR_REPLY: {
            proto_msg e = {.type = PROTO_ERROR, .req = m->req, .error = "no sweep named 'x'"};
            send_to(s, peer, (size_t)pl, &e);
            break;
        }
        case WRONG_ID_THEN_ANSWER:
            send_list(s, peer, (size_t)pl, m->req + 1000, 1);
            send_list(s, peer, (size_t)pl, m->req, 2);
            break;
        }
        proto_msg_free(&m);
    }
    return NULL;
}

static void server_start(server *s, const action *script, size_t n) {
    memset(s, 0, sizeof *s);
    s->script = script;
    s->n_script = n;
    s->ctx = zmq_ctx_new();
    assert_non_null(s->ctx);
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    assert_non_null(s->sock);
    assert_int_equal(zmq_bind(s->sock, ENDPOINT), 0);
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_stop(server *s) {
    pthread_join(s->thread, NULL);
    zmq_close(s->sock);
    zmq_ctx_term(s->ctx);
}

/* One LIST call with tries of try_ms and a deadline of deadline_ms. */
static int list_call(server *s, int try_ms, int deadline_ms, proto_reply **r, char *err) {
    cli_client *c = NULL;
    assert_int_equal(cli_client_open(&c, ENDPOINT, s->ctx, try_ms, err), 0);
    proto_msg req = {.type = PROTO_LIST};
    int rc = cli_client_call(c, &req, deadline_ms, r, err);
    cli_client_close(&c);
    return rc;
}

static void test_reply(void **state) {
    (void)state;
    static const action script[] = {ANSWER};
    server s;
    server_start(&s, script, 1);
    proto_reply *r = NULL;
    char err[COMMON_ERR_LEN];
    assert_int_equal(list_call(&s, 1000, 5000, &r, err), 0);
    assert_int_equal(r->request, PROTO_LIST);
    assert_int_equal(r->n_sweeps, 2);
    assert_string_equal(r->sweeps[1].name, "s1");
    proto_reply_free(&r);
    server_stop(&s);
}

static void test_error_reply(void **state) {
    (void)state;
    static const action script[] = {ERROR_REPLY};
    server s;
    server_start(&s, script, 1);
    proto_reply *r = NULL;
    char err[COMMON_ERR_LEN];
    assert_int_equal(list_call(&s, 1000, 5000, &r, err), COMMON_ERR_INVALID);
    assert_null(r);
    assert_string_equal(err, "no sweep named 'x'");
    server_stop(&s);
}

static void test_unanswered_try_is_resent_from_a_fresh_socket(void **state) {
    (void)state;
    static const action script[] = {IGNORE, IGNORE, ANSWER};
    server s;
    server_start(&s, script, 3);
    proto_reply *r = NULL;
    char err[COMMON_ERR_LEN];
    assert_int_equal(list_call(&s, 50, 10000, &r, err), 0);
    assert_int_equal(r->n_sweeps, 2);
    proto_reply_free(&r);
    server_stop(&s);
    assert_int_equal(s.n_seen, 3);
    for (size_t i = 1; i < 3; i++) {
        assert_int_equal(s.req[i], s.req[0]); /* the same request, so it is idempotent */
        bool same_peer = s.peer_len[i] == s.peer_len[i - 1] &&
                         memcmp(s.peer[i], s.peer[i - 1], s.peer_len[i]) == 0;
        assert_false(same_peer);
    }
}

static void test_answer_to_another_request_is_ignored(void **state) {
    (void)state;
    static const action script[] = {WRONG_ID_THEN_ANSWER};
    server s;
    server_start(&s, script, 1);
    proto_reply *r = NULL;
    char err[COMMON_ERR_LEN];
    assert_int_equal(list_call(&s, 1000, 5000, &r, err), 0);
    assert_int_equal(r->n_sweeps, 2); /* not the 1-sweep answer with the wrong id */
    proto_reply_free(&r);
    server_stop(&s);
}

static void test_deadline(void **state) {
    (void)state;
    static const action script[] = {IGNORE, IGNORE, IGNORE, IGNORE, IGNORE, IGNORE};
    server s;
    server_start(&s, script, 6);
    proto_reply *r = NULL;
    char err[COMMON_ERR_LEN];
    double t0 = common_now_s();
    assert_int_equal(list_call(&s, 40, 400, &r, err), COMMON_ERR_IO);
    double took = common_now_s() - t0;
    assert_null(r);
    assert_non_null(strstr(err, "no answer from the coordinator at " ENDPOINT));
    assert_true(took >= 0.39 && took < 5.0);
    zmq_ctx_shutdown(s.ctx); /* the server thread still waits for requests */
    server_stop(&s);         /* joined: its count can be read */
    /* tries of 40, 80, 160 ms, then what is left of the 400: each try doubles, so at most 5
     * reach the server (10 without the doubling). Fewer may: a try the server thread has not
     * read yet when its socket closes (linger 0) is dropped, which a loaded machine shows; that
     * each unanswered try is sent again is test_unanswered_try_is_resent_from_a_fresh_socket's */
    assert_true(s.n_seen <= 5);
}

static void test_default_endpoint(void **state) {
    (void)state;
    unsetenv("CHESSLENS_COORDINATOR");
    assert_string_equal(cli_client_default_endpoint(), "tcp://127.0.0.1:5555");
    setenv("CHESSLENS_COORDINATOR", "tcp://10.0.0.1:7000", 1);
    assert_string_equal(cli_client_default_endpoint(), "tcp://10.0.0.1:7000");
    setenv("CHESSLENS_COORDINATOR", "", 1);
    assert_string_equal(cli_client_default_endpoint(), "tcp://127.0.0.1:5555");
    unsetenv("CHESSLENS_COORDINATOR");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply),
        cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_unanswered_try_is_resent_from_a_fresh_socket),
        cmocka_unit_test(test_answer_to_another_request_is_ignored),
        cmocka_unit_test(test_deadline),
        cmocka_unit_test(test_default_endpoint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
