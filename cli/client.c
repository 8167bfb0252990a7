/*
 * The CLI's client of the coordinator (client.h): one DEALER socket, one request at a time.
 * Each socket has a monitor (an inproc PAIR fed by zmq_socket_monitor) that reports only
 * handshake outcomes: a refused handshake leaves a request unanswered with nothing else to show
 * for it, and the monitor is how the timeout's message can say why.
 */
#include "cli/client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/common.h"

#define TRY_MAX_MS 30000
#define HANDSHAKE_EVENTS                                                                           \
    (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |                        \
     ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

struct cli_client {
    void *ctx;
    bool own_ctx;
    void *sock;
    void *monitor;      /* the PAIR reading sock's handshake events (NULL: none) */
    unsigned n_sockets; /* opened so far: names each monitor's endpoint */
    char *endpoint;
    int try_ms;
    uint64_t next_req;
    cli_client_setup setup; /* fn NULL: none */
    /* the most telling handshake failure seen on any socket since the last success (0: none) */
    uint16_t failed_event;
    uint32_t failed_value;
};

const char *cli_client_default_endpoint(void) {
    const char *env = getenv("CHESSLENS_COORDINATOR");
    return env != NULL && env[0] != '\0' ? env : "tcp://127.0.0.1:5555";
}

static void close_socket(cli_client *c) {
    if (c->monitor != NULL) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->monitor);
        c->monitor = NULL;
    }
    if (c->sock != NULL) {
        zmq_close(c->sock);
        c->sock = NULL;
    }
}

/* Starts the monitor of c->sock, before it connects. Best effort: without one, only the
 * timeout's message is poorer. */
static void start_monitor(cli_client *c) {
    char ep[96];
    snprintf(ep, sizeof ep, "inproc://chesslens-client-monitor-%p-%u", (void *)c, c->n_sockets);
    int linger = 0;
    if (zmq_socket_monitor(c->sock, ep, HANDSHAKE_EVENTS) != 0) {
        return;
    }
    c->monitor = zmq_socket(c->ctx, ZMQ_PAIR);
    if (c->monitor == NULL) {
        zmq_socket_monitor(c->sock, NULL, 0);
        return;
    }
    if (zmq_setsockopt(c->monitor, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(c->monitor, ep) != 0) {
        zmq_close(c->monitor);
        c->monitor = NULL;
        zmq_socket_monitor(c->sock, NULL, 0);
    }
}

/* How much a handshake failure says: a refusal by the ZAP handler most, a protocol error (such
 * as a mechanism mismatch) less, a connection dropped mid-handshake least. That is also the order
 * in which a race can hide them: a peer that closes after a mismatch often shows up as a broken
 * pipe on the next try, which must not overwrite the mismatch. */
static int failure_rank(uint16_t event) {
    return event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH       ? 3
           : event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? 2
           : event != 0                                   ? 1
                                                          : 0;
}

/* Reads the monitor's waiting events (two frames each: event and value, then the endpoint). */
static void read_events(cli_client *c) {
    for (;;) {
        zmq_msg_t ev, ep;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, c->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        bool two = zmq_msg_more(&ev);
        if (two) {
            zmq_msg_init(&ep);
            zmq_msg_recv(&ep, c->monitor, 0);
            zmq_msg_close(&ep);
        }
        if (two && zmq_msg_size(&ev) == 6) {
            uint16_t event;
            uint32_t value;
            memcpy(&event, zmq_msg_data(&ev), 2); /* host byte order (zmq_socket_monitor) */
            memcpy(&value, (const char *)zmq_msg_data(&ev) + 2, 4);
            if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
                c->failed_event = 0;
            } else if (failure_rank(event) >= failure_rank(c->failed_event)) {
                c->failed_event = event;
                c->failed_value = value;
            }
        }
        zmq_msg_close(&ev);
    }
}

/* What the handshakes saw, for the message of a call that got no answer ("" when nothing). */
static void handshake_text(const cli_client *c, char *out, size_t cap) {
    out[0] = '\0';
    switch (c->failed_event) {
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        if (c->failed_value == 400) {
            snprintf(out, cap,
                     ": the coordinator refused this client's CURVE key (its public key is not "
                     "among the coordinator's --clients)");
        } else {
            snprintf(out, cap, ": the coordinator's authentication failed (ZAP status %" PRIu32 ")",
                     c->failed_value);
        }
        break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        if (c->failed_value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH && c->setup.fn != NULL) {
            snprintf(out, cap, ": the coordinator does not use CURVE, and this client does");
        } else if (c->failed_value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
            snprintf(out, cap,
                     ": the coordinator requires CURVE keys (--curve-key and --server-key, or "
                     "$CHESSLENS_CURVE_KEY and $CHESSLENS_SERVER_KEY)");
        } else {
            snprintf(out, cap, ": the handshake failed (ZMTP protocol error 0x%" PRIx32 ")",
                     c->failed_value);
        }
        break;
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        if (c->setup.fn != NULL) {
            snprintf(out, cap,
                     ": the CURVE handshake failed (is --server-key the coordinator's public "
                     "key?)");
        } else { /* a plain coordinator has no handshake to fail: most likely it wants keys */
            snprintf(out, cap,
                     ": the handshake failed (%s; does the coordinator require CURVE keys? "
                     "--curve-key and --server-key)",
                     zmq_strerror((int)c->failed_value));
        }
        break;
    default:
        break;
    }
}

static int open_socket(cli_client *c, char *err) {
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (c->sock == NULL) {
        return common_fail(err, COMMON_ERR_IO, "zmq_socket: %s", zmq_strerror(zmq_errno()));
    }
    c->n_sockets++;
    int64_t max = (int64_t)PROTO_MAX_MESSAGE;
    int linger = 0;
    if (zmq_setsockopt(c->sock, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0 ||
        zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger) != 0) {
        int e = zmq_errno();
        close_socket(c);
        return common_fail(err, COMMON_ERR_IO, "%s: %s", c->endpoint, zmq_strerror(e));
    }
    /* every socket, fresh ones of a retry too: a socket without the keys would never get in */
    int rc = c->setup.fn != NULL ? c->setup.fn(c->sock, c->setup.arg, err) : 0;
    if (rc != 0) {
        close_socket(c);
        return rc;
    }
    start_monitor(c);
    if (zmq_connect(c->sock, c->endpoint) != 0) {
        int e = zmq_errno();
        close_socket(c);
        return common_fail(err, COMMON_ERR_IO, "%s: %s", c->endpoint, zmq_strerror(e));
    }
    return 0;
}

int cli_client_open(cli_client **out, const char *endpoint, void *zmq_ctx, int try_ms, char *err) {
    return cli_client_open_with(out, endpoint, zmq_ctx, try_ms, NULL, err);
}

int cli_client_open_with(cli_client **out, const char *endpoint, void *zmq_ctx, int try_ms,
                         const cli_client_setup *setup, char *err) {
    *out = NULL;
    cli_client *c = calloc(1, sizeof *c);
    if (c == NULL || (c->endpoint = strdup(endpoint)) == NULL) {
        free(c);
        return common_fail(err, COMMON_ERR_NOMEM, "client: out of memory");
    }
    if (setup != NULL) {
        c->setup = *setup;
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
            zmq_pollitem_t items[2] = {{.socket = c->sock, .events = ZMQ_POLLIN},
                                       {.socket = c->monitor, .events = ZMQ_POLLIN}};
            int n = zmq_poll(items, c->monitor != NULL ? 2 : 1, wait_ms > 0 ? wait_ms : 0);
            if (n < 0 && zmq_errno() == EINTR) {
                rc = common_fail(err, COMMON_ERR_IO, "interrupted");
                goto done;
            }
            if (n <= 0) {
                break;
            }
            if (items[1].revents & ZMQ_POLLIN) {
                read_events(c);
            }
            if (!(items[0].revents & ZMQ_POLLIN)) {
                continue;
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
        if (c->monitor != NULL) {
            read_events(c);
        }
        close_socket(c);
        if (last || common_now_s() >= deadline) {
            char why[192];
            handshake_text(c, why, sizeof why);
            rc = common_fail(err, COMMON_ERR_IO, "no answer from the coordinator at %s%s",
                             c->endpoint, why);
            break;
        }
    }
done:
    free(buf);
    return rc;
}
