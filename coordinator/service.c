/*
 * service: the ZeroMQ adapter around the scheduler (coordinator/service.h). The CURVE server
 * (coordinator/curve.h) is set up here: its ZAP handler starts before the socket binds, is
 * checked every turn, and stops only after the socket is closed, because libzmq admits every
 * client key of a CURVE socket whose context has no handler.
 */
#include "coordinator/service.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "coordinator/curve.h"
#include "proto/proto.h"

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int zfail(char *err, const char *what) {
    return common_fail(err, COMMON_ERR_IO, "%s: %s", what, zmq_strerror(zmq_errno()));
}

/* Receives one message (routing id + frames) if one waits. *got false when none does. A message
 * of more than one frame after the routing id is reduced to an empty payload, which the
 * scheduler refuses like any other malformed frame. */
static int recv_one(void *sock, zmq_msg_t *id, zmq_msg_t *body, bool *got, char *err) {
    *got = false;
    if (zmq_msg_recv(id, sock, ZMQ_DONTWAIT) < 0) {
        if (zmq_errno() == EAGAIN || zmq_errno() == EINTR) {
            return 0;
        }
        return zfail(err, "zmq_msg_recv");
    }
    bool malformed = !zmq_msg_more(id);
    if (!malformed && zmq_msg_recv(body, sock, 0) < 0) {
        return zfail(err, "zmq_msg_recv");
    }
    while (!malformed && zmq_msg_more(body)) { /* more frames: read and discard them all */
        malformed = true;
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        bool more = true;
        while (more) {
            if (zmq_msg_recv(&extra, sock, 0) < 0) {
                zmq_msg_close(&extra);
                return zfail(err, "zmq_msg_recv");
            }
            more = zmq_msg_more(&extra);
        }
        zmq_msg_close(&extra);
    }
    if (malformed) {
        zmq_msg_close(body);
        zmq_msg_init(body); /* empty: answered as malformed */
    }
    *got = true;
    return 0;
}

static void send_all(void *sock, const coordinator_send *out, size_t n, uint64_t *dropped) {
    for (size_t i = 0; i < n; i++) {
        if (zmq_send(sock, out[i].peer, out[i].peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            (*dropped)++; /* EHOSTUNREACH: the peer is gone; EAGAIN: its queue is full */
            continue;
        }
        if (zmq_send(sock, out[i].data, out[i].len, ZMQ_DONTWAIT) < 0) {
            (*dropped)++;
        }
    }
}

/* One line of the scheduler's counters (tests read the last one, written when the loop ends). */
static void log_stats(FILE *log, const char *prefix, const coordinator_sched *sched,
                      uint64_t dropped) {
    const coordinator_sched_stats *st = coordinator_sched_get_stats(sched);
    fprintf(log,
            "coordinator: %s%" PRIu64 " dispatched, %" PRIu64 " stored, %" PRIu64
            " failed, %" PRIu64 " expired, %" PRIu64 " fenced, %" PRIu64 " duplicates, %" PRIu64
            " bad frames, %" PRIu64 " sends dropped, %" PRIu64 " returned\n",
            prefix, st->dispatched, st->stored, st->failed, st->expired, st->fenced, st->duplicates,
            st->frames_bad, dropped, st->returned);
    fflush(log);
}

/* The rules of coordinator/service.h on what may listen, checked before anything starts. */
static int check_listen(const coordinator_service_opts *o, char *err) {
    if (o->curve_key != NULL && o->clients_dir == NULL) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "coordinator: a CURVE key without a clients directory: with no ZAP "
                           "handler to check them, libzmq would admit every client key");
    }
    if (o->curve_key == NULL && o->clients_dir != NULL) {
        return common_fail(err, COMMON_ERR_INVALID,
                           "coordinator: a clients directory without a CURVE key: clients are "
                           "authenticated only with CURVE");
    }
    for (size_t i = 0; o->curve_key == NULL && !o->insecure_listen && i < o->n_bind; i++) {
        if (!coordinator_endpoint_is_local(o->bind[i])) {
            return common_fail(err, COMMON_ERR_INVALID,
                               "coordinator: refusing to listen on %s without CURVE: plain tcp "
                               "is for loopback addresses (127.0.0.0/8, ::1, localhost); give "
                               "CURVE keys, or allow it explicitly (insecure listen)",
                               o->bind[i]);
        }
    }
    return 0;
}

int coordinator_service_run(const coordinator_service_opts *o, char *err) {
    if (o->n_bind == 0 || o->n_bind > COORDINATOR_MAX_BINDS) {
        return common_fail(err, COMMON_ERR_INVALID, "coordinator: %zu endpoints to bind",
                           o->n_bind);
    }
    int rc = check_listen(o, err);
    if (rc != 0) {
        return rc;
    }
    coordinator_curve_key key;
    memset(&key, 0, sizeof key);
    if (o->curve_key != NULL) {
        if (!coordinator_curve_available()) {
            return common_fail(err, COMMON_ERR_UNSUPPORTED,
                               "coordinator: this libzmq was built without CURVE");
        }
        if ((rc = coordinator_curve_read_secret(o->curve_key, &key, err)) != 0) {
            return rc;
        }
    }
    size_t max_batch = o->max_batch > 0 ? o->max_batch : 4096;
    int hwm = o->queue_limit > 0 ? (int)o->queue_limit : 10000;
    coordinator_store *store = NULL;
    coordinator_sched *sched = NULL;
    coordinator_zap *zap = NULL;
    void *ctx = o->zmq_ctx != NULL ? o->zmq_ctx : zmq_ctx_new();
    void *sock = NULL;
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    uint64_t dropped = 0;
    if (ctx == NULL) {
        coordinator_curve_wipe(&key);
        return zfail(err, "zmq_ctx_new");
    }
    /* the handler before the socket: a CURVE socket must never meet a context without one */
    if (o->curve_key != NULL &&
        (rc = coordinator_zap_start(&zap, ctx, o->clients_dir, o->log, err)) != 0) {
        goto done;
    }
    if ((rc = coordinator_store_open(&store, o->db_path, 0, err)) != 0 ||
        (rc = coordinator_sched_new(&sched, store, &o->sched, now_ns(), err)) != 0) {
        goto done;
    }
    sock = zmq_socket(ctx, ZMQ_ROUTER);
    if (sock == NULL) {
        rc = zfail(err, "zmq_socket(ROUTER)");
        goto done;
    }
    int64_t maxmsg = (int64_t)PROTO_MAX_MESSAGE;
    int one = 1, zero = 0;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0 ||
        zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
        zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero) != 0) {
        rc = zfail(err, "zmq_setsockopt");
        goto done;
    }
    if (zap != NULL) {
        rc = coordinator_curve_server_setup(sock, &key, err);
        coordinator_curve_wipe(&key); /* libzmq keeps its own copy */
        if (rc != 0) {
            goto done;
        }
        if (o->log != NULL) {
            fprintf(o->log,
                    "coordinator: CURVE on: server key %s, admitting the %zu client key%s of %s\n",
                    key.public_z85, coordinator_zap_clients(zap),
                    coordinator_zap_clients(zap) == 1 ? "" : "s", o->clients_dir);
            fflush(o->log);
        }
    }
    for (size_t i = 0; i < o->n_bind; i++) {
        if (zmq_bind(sock, o->bind[i]) != 0) {
            rc = common_fail(err, COMMON_ERR_IO, "bind %s: %s", o->bind[i],
                             zmq_strerror(zmq_errno()));
            goto done;
        }
        if (o->log != NULL) {
            /* the endpoint as bound, so that "tcp://127.0.0.1:*" names the port it got */
            char bound[1024] = "";
            size_t bound_len = sizeof bound;
            if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, bound, &bound_len) != 0 ||
                bound[0] == '\0') {
                snprintf(bound, sizeof bound, "%s", o->bind[i]);
            }
            fprintf(o->log, "coordinator: listening on %s, database %s\n", bound, o->db_path);
            fflush(o->log);
        }
    }
    int64_t last_log = now_ns();
    while (o->stop == NULL || !*o->stop) {
        if (zap != NULL && coordinator_zap_failed(zap, err)) {
            rc = COMMON_ERR_IO; /* handshakes now wait for it: stop rather than serve without */
            goto done;
        }
        int64_t now = now_ns();
        int64_t wake = coordinator_sched_next_wake(sched);
        /* wake at the scheduler's next deadline, and at least every 200 ms to see *stop */
        long timeout_ms = wake <= now ? 0 : (wake - now) / 1000000 + 1;
        timeout_ms = timeout_ms > 200 ? 200 : timeout_ms;
        zmq_pollitem_t item = {.socket = sock, .events = ZMQ_POLLIN};
        if (zmq_poll(&item, 1, timeout_ms) < 0 && zmq_errno() != EINTR) {
            rc = zfail(err, "zmq_poll");
            goto done;
        }
        if ((rc = coordinator_sched_begin(sched, err)) != 0) {
            goto done;
        }
        for (size_t k = 0; k < max_batch; k++) {
            bool got = false;
            if ((rc = recv_one(sock, &id, &body, &got, err)) != 0) {
                goto done;
            }
            if (!got) {
                break;
            }
            rc = coordinator_sched_input(sched, zmq_msg_data(&id), zmq_msg_size(&id),
                                         zmq_msg_data(&body), zmq_msg_size(&body), now_ns(), err);
            if (rc != 0) {
                goto done;
            }
        }
        const coordinator_send *out = NULL;
        size_t n_out = 0;
        if ((rc = coordinator_sched_tick(sched, now_ns(), err)) != 0 ||
            (rc = coordinator_sched_commit(sched, &out, &n_out, err)) != 0) {
            goto done;
        }
        send_all(sock, out, n_out, &dropped);
        if (o->log != NULL && now_ns() - last_log > 10000000000LL) {
            log_stats(o->log, "", sched, dropped);
            last_log = now_ns();
        }
    }
done:
    if (o->log != NULL && sched != NULL) {
        log_stats(o->log, rc == 0 ? "stopped: " : "failed: ", sched, dropped);
    }
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    coordinator_sched_destroy(&sched); /* rolls back an open batch: nothing of it was sent */
    if (sock != NULL) {
        zmq_close(sock);
    }
    coordinator_zap_stop(&zap); /* after the CURVE socket is closed, never before */
    coordinator_curve_wipe(&key);
    if (o->zmq_ctx == NULL) {
        zmq_ctx_term(ctx);
    }
    coordinator_store_close(&store);
    return rc;
}
