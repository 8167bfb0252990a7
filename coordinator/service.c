/*
 * service: the ZeroMQ adapter around the scheduler (coordinator/service.h). The CURVE server
 * (coordinator/curve.h) is set up here: its ZAP handler starts before the socket binds, is
 * checked every turn, and stops only after the socket is closed, because libzmq admits every
 * client key of a CURVE socket whose context has no handler. A store error costs the
 * scheduler, never the process (with retry_store_errors): the batch is rolled back, and a new
 * scheduler made from the same database after a wait resumes, which scheduler.h promises is
 * safe because nothing of a failed batch was sent. The fault drills (coordinator/drill.h)
 * decode frames only when configured, so a coordinator without them pays nothing for them.
 */
#include "coordinator/service.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "coordinator/curve.h"
#include "coordinator/drill.h"
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

/* ---- the loop ---- */

static void send_all(void *sock, const coordinator_send *out, size_t n, uint64_t *dropped, drill *d,
                     FILE *log) {
    for (size_t i = 0; i < n; i++) {
        const void *data = out[i].data;
        size_t len = out[i].len;
        uint8_t *instead = NULL;
        int what = d->on ? drill_output(d, log, &out[i], &instead, &len) : 0;
        if (what == 1) {
            continue;
        }
        if (what == 2) {
            data = instead;
        }
        if (zmq_send(sock, out[i].peer, out[i].peer_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
            (*dropped)++; /* EHOSTUNREACH: the peer is gone; EAGAIN: its queue is full */
        } else if (zmq_send(sock, data, len, ZMQ_DONTWAIT) < 0) {
            (*dropped)++;
        }
        free(instead);
    }
    if (log != NULL && d->on) {
        fflush(log);
    }
}

/* The counters of two schedulers together. */
static coordinator_sched_stats add_stats(const coordinator_sched_stats *a,
                                         const coordinator_sched_stats *b) {
    coordinator_sched_stats t = *a;
    t.frames_in += b->frames_in;
    t.frames_bad += b->frames_bad;
    t.messages_in += b->messages_in;
    t.dispatched += b->dispatched;
    t.stored += b->stored;
    t.duplicates += b->duplicates;
    t.fenced += b->fenced;
    t.failed += b->failed;
    t.expired += b->expired;
    t.returned += b->returned;
    t.batches += b->batches;
    return t;
}

/* One line of the counters (tests read the last one, written when the loop ends). */
static void log_stats(FILE *log, const char *prefix, const coordinator_sched_stats *st,
                      uint64_t dropped, uint64_t store_errors) {
    fprintf(log,
            "coordinator: %s%" PRIu64 " dispatched, %" PRIu64 " stored, %" PRIu64
            " failed, %" PRIu64 " expired, %" PRIu64 " fenced, %" PRIu64 " duplicates, %" PRIu64
            " bad frames, %" PRIu64 " sends dropped, %" PRIu64 " returned, %" PRIu64
            " store errors\n",
            prefix, st->dispatched, st->stored, st->failed, st->expired, st->fenced, st->duplicates,
            st->frames_bad, dropped, st->returned, store_errors);
    fflush(log);
}

/* Sleeps ms, in slices that see *stop. */
static void nap_unless_stopped(const coordinator_service_opts *o, long ms) {
    while (ms > 0 && (o->stop == NULL || !*o->stop)) {
        long slice = ms < 200 ? ms : 200;
        struct timespec ts = {0, slice * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        ms -= slice;
    }
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

/* One turn's batch: the frames waiting (up to max_batch, or until the scheduler has taken its
 * batch_messages), a tick, the commit, the sends. A
 * socket error is returned with *store false; a scheduler (store) error with *store true, the
 * batch then rolled back by the caller destroying the scheduler. */
static int run_batch(const coordinator_service_opts *o, coordinator_sched *sched, void *sock,
                     size_t max_batch, zmq_msg_t *id, zmq_msg_t *body, drill *d, uint64_t *dropped,
                     bool *store, char *err) {
    *store = true;
    drill_begin_batch(d);
    int rc = coordinator_sched_begin(sched, err);
    for (size_t k = 0; rc == 0 && k < max_batch && !coordinator_sched_batch_full(sched); k++) {
        bool got = false;
        if ((rc = recv_one(sock, id, body, &got, err)) != 0) {
            *store = false;
            return rc;
        }
        if (!got) {
            break;
        }
        if (d->on) {
            drill_input(d, o->log, zmq_msg_data(id), zmq_msg_size(id), zmq_msg_data(body),
                        zmq_msg_size(body));
        }
        rc = coordinator_sched_input(sched, zmq_msg_data(id), zmq_msg_size(id), zmq_msg_data(body),
                                     zmq_msg_size(body), now_ns(), err);
    }
    const coordinator_send *out = NULL;
    size_t n_out = 0;
    if (rc == 0 && (rc = coordinator_sched_tick(sched, now_ns(), err)) == 0 &&
        (rc = coordinator_sched_commit(sched, &out, &n_out, err)) == 0) {
        send_all(sock, out, n_out, dropped, d, o->log);
    }
    return rc;
}

int coordinator_service_run(const coordinator_service_opts *o, char *err) {
    if (o->n_bind == 0 || o->n_bind > COORDINATOR_MAX_BINDS) {
        return common_fail(err, COMMON_ERR_INVALID, "coordinator: %zu endpoints to bind",
                           o->n_bind);
    }
    char local_err[COMMON_ERR_LEN];
    if (err == NULL) {
        err = local_err; /* the log line of a store error names it */
    }
    int rc = check_listen(o, err);
    if (rc != 0) {
        return rc;
    }
    drill d;
    if ((rc = drill_parse(&d, o->faults, err)) != 0) {
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
    /* The counters of the schedulers destroyed after store errors, and the current one's as of
     * its last committed batch: a failed batch counted what it rolled back. */
    coordinator_sched_stats past, committed;
    memset(&past, 0, sizeof past);
    memset(&committed, 0, sizeof committed);
    uint64_t store_errors = 0;
    long retry_ms = 0;            /* the wait after the next store error (0: the first) */
    int64_t last_store_error = 0; /* now_ns() of the last one */
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
            fprintf(o->log, "coordinator: listening on %s, database %s (synchronous %s)\n", bound,
                    o->db_path, o->sched.sync_full ? "full" : "normal");
            fflush(o->log);
        }
    }
    if (o->log != NULL && d.on) {
        fprintf(o->log, "coordinator: fault drill on: %s\n", o->faults);
        fflush(o->log);
    }
    int64_t last_log = now_ns();
    while (o->stop == NULL || !*o->stop) {
        if (zap != NULL && coordinator_zap_failed(zap, err)) {
            rc = COMMON_ERR_IO; /* handshakes now wait for it: stop rather than serve without */
            goto done;
        }
        bool store_error = false;
        if (sched == NULL) {
            /* after a store error: a new scheduler resumes from what the store committed */
            rc = coordinator_sched_new(&sched, store, &o->sched, now_ns(), err);
            store_error = rc != 0;
        } else {
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
            rc = run_batch(o, sched, sock, max_batch, &id, &body, &d, &dropped, &store_error, err);
        }
        if (rc != 0 && (!store_error || !o->retry_store_errors)) {
            goto done;
        }
        if (rc != 0) {
            /* Nothing of the batch was sent. Its frames are lost as if on the wire: workers
             * send their reports again after their silence rule, clients retry. */
            store_errors++;
            past = add_stats(&past, &committed);
            memset(&committed, 0, sizeof committed);
            coordinator_sched_destroy(&sched); /* rolls the batch back */
            int64_t now = now_ns();
            if (retry_ms == 0 ||
                now - last_store_error > (int64_t)COORDINATOR_STORE_RETRY_RESET_MS * 1000000) {
                retry_ms = COORDINATOR_STORE_RETRY_FIRST_MS;
            } else if (retry_ms < COORDINATOR_STORE_RETRY_MAX_MS) {
                retry_ms = 2 * retry_ms < COORDINATOR_STORE_RETRY_MAX_MS
                               ? 2 * retry_ms
                               : COORDINATOR_STORE_RETRY_MAX_MS;
            }
            last_store_error = now;
            if (o->log != NULL) {
                fprintf(o->log,
                        "coordinator: store error: %s; the batch was rolled back and nothing of "
                        "it sent; serving again from the database in %ld ms\n",
                        err, retry_ms);
                fflush(o->log);
            }
            nap_unless_stopped(o, retry_ms);
            rc = 0;
            continue;
        }
        committed = *coordinator_sched_get_stats(sched);
        if (o->log != NULL && now_ns() - last_log > 10000000000LL) {
            coordinator_sched_stats t = add_stats(&past, &committed);
            log_stats(o->log, "", &t, dropped, store_errors);
            last_log = now_ns();
        }
    }
done:
    if (o->log != NULL && (sched != NULL || store_errors > 0)) {
        /* an error's batch was rolled back: what it counted is not in the line */
        if (rc == 0 && sched != NULL) {
            committed = *coordinator_sched_get_stats(sched);
        }
        coordinator_sched_stats t = add_stats(&past, &committed);
        log_stats(o->log, rc == 0 ? "stopped: " : "failed: ", &t, dropped, store_errors);
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
