/*
 * The CLI's client of the coordinator (client.h): one DEALER socket, one request at a time.
 */
#include "cli/client.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/common.h"

#define TRY_MAX_MS 30000

struct cli_client {
    void *ctx;
    bool own_ctx;
    void *sock;
    char *endpoint;
    int try_ms;
    uint64_t next_req;
};

const char *cli_client_default_endpoint(void) {
    const char *env = getenv("CHESSLENS_COORDINATOR");
    return env != NULL && env[0] != '\0' ? env : "tcp://127.0.0.1:5555";
}

static void close_socket(cli_client *c) {
    if (c->sock != NULL) {
        zmq_close(c->sock);
        c->sock = NULL;
    }
}

static int open_socket(cli_client *c, char *err) {
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (c->sock == NULL) {
        return common_fail(err, COMMON_ERR_IO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    }
    int64_t max = (int64_t)PROTO_MAX_MESSAGE;
    int linger = 0;
    if (zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0 ||
        zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(c->sock, c->endpoint) != 0) {
        int e = zmq_errno();
        close_socket(c);
        return common_fail(err, COMMON_ERR_IO, "%s: %s", c->endpoint, zmq_strerror(e));
    }
    return 0;
}

int cli_client_open(cli_client **out, const char *endpoint, void *zmq_ctx, int try_ms, char *err) {
    *out = NULL;
    cli_client *c = calloc(1, sizeof *c);
    if (c == NULL || (c->endpoint = strdup(endpoint)) == NULL) {
        free(c);
        return common_fail(err, COMMON_ERR_NOMEM, "client: out of memory");
    }
    c->try_ms = try_ms > 0 ? try_ms : 1000;
    c->next_req = 1;
    c->ctx = zmq_ctx;
    if (c->ctx == NULL) {
        c->ctx = zmq_ctx_new();
        c->own_ctx = true;
    }
    int rc = c->ctx != NULL ? open_socket(c, err)
                            : common_fail(err, COMMON_ERR_IO, "zmq_ctx_new failed");
    if (rc != 0) {
        cli_client_close(&c);
        return rc;
    }
    *out = c;
    return 0;
}

void cli_client_close(cli_client **c) {
    if (c == NULL || *c == NULL) {
        return;
    }
    close_socket(*c);
    if ((*c)->own_ctx && (*c)->ctx != NULL) {
        zmq_ctx_term((*c)->ctx);
    }
    free((*c)->endpoint);
    free(*c);
    *c = NULL;
}

/* Handles one received frame: 1 when it answered request req (*rc set, *out filled on success),
 * 0 when it is to be ignored (a late answer to an earlier try, or a frame that is no answer). */
static int take_answer(const void *data, size_t len, const proto_msg *req, proto_reply **out,
                       int *rc, char *err) {
    proto_msg *m = NULL;
    char e[COMMON_ERR_LEN];
    if (proto_decode(data, len, &m, e) != 0) {
        if (proto_peek_req(data, len) != req->req) {
            return 0;
        }
        *rc = common_fail(err, COMMON_ERR_PARSE, "malformed answer from the coordinator: %s", e);
        return 1;
    }
    int answered = (m->type == PROTO_REPLY || m->type == PROTO_ERROR) && m->req == req->req;
    if (answered && m->type == PROTO_ERROR) {
        *rc = common_fail(err, COMMON_ERR_INVALID, "%s", m->error);
    } else if (answered) {
        *rc = proto_reply_decode(req->type, m->body, m->body_len, out, e);
        if (*rc != 0) {
            common_fail(err, *rc, "malformed reply from the coordinator: %s", e);
        }
    }
    proto_msg_free(&m);
    return answered;
}

int cli_client_call(cli_client *c, proto_msg *req, int deadline_ms, proto_reply **out, char *err) {
    *out = NULL;
    req->req = c->next_req++;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = proto_encode(req, &buf, &len, err);
    if (rc != 0) {
        return rc;
    }
    double deadline = common_now_s() + (deadline_ms > 0 ? deadline_ms : 0) / 1000.0;
    /* each try waits twice as long as the one before (up to TRY_MAX_MS), so that a coordinator
     * busy with a long request (planning a large sweep) is not sent ever more copies of it */
    int try_ms = c->try_ms;
    for (;;) {
        if (c->sock == NULL && (rc = open_socket(c, err)) != 0) {
            break;
        }
        if (zmq_send(c->sock, buf, len, ZMQ_DONTWAIT) < 0 && zmq_errno() != EAGAIN) {
            rc = common_fail(err, COMMON_ERR_IO, "%s: zmq_send: %s", c->endpoint,
                             zmq_strerror(zmq_errno()));
            break;
        }
        double try_end = common_now_s() + try_ms / 1000.0;
        try_ms = try_ms < TRY_MAX_MS / 2 ? 2 * try_ms : (try_ms > TRY_MAX_MS ? try_ms : TRY_MAX_MS);
        bool last = try_end >= deadline; /* this try runs to the deadline: no other after it */
        try_end = last ? deadline : try_end;
        int answered = 0;
        while (!answered) {
            double left_ms = (try_end - common_now_s()) * 1000.0;
            long wait_ms = (long)left_ms + (left_ms > (double)(long)left_ms); /* rounded up */
            zmq_pollitem_t item = {.socket = c->sock, .events = ZMQ_POLLIN};
            int n = zmq_poll(&item, 1, wait_ms > 0 ? wait_ms : 0);
            if (n < 0 && zmq_errno() == EINTR) {
                rc = common_fail(err, COMMON_ERR_IO, "interrupted");
                goto done;
            }
            if (n <= 0) {
                break;
            }
            zmq_msg_t f;
            zmq_msg_init(&f);
            if (zmq_msg_recv(&f, c->sock, ZMQ_DONTWAIT) >= 0 && !zmq_msg_more(&f)) {
                answered = take_answer(zmq_msg_data(&f), zmq_msg_size(&f), req, out, &rc, err);
            }
            zmq_msg_close(&f);
        }
        if (answered) {
            break;
        }
        /* no answer: a fresh socket, so that a coordinator that restarted meets a new peer */
        close_socket(c);
        if (last || common_now_s() >= deadline) {
            rc = common_fail(err, COMMON_ERR_IO, "no answer from the coordinator at %s",
                             c->endpoint);
            break;
        }
    }
done:
    free(buf);
    return rc;
}
