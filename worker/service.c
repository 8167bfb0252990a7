/*
 * The worker service (worker/service.h): two threads around one task table.
 *
 * The I/O thread owns the DEALER socket and everything about the connection: HELLO, READY
 * credits, heartbeats, acknowledgements, silence detection and reconnects. The compute thread
 * only takes the oldest waiting task from the table, runs it and puts its output back, so a
 * computation that takes minutes (or never ends) cannot delay a heartbeat or an ACK, and the
 * socket is touched by one thread only, as ZeroMQ requires.
 *
 * The table is a list of tasks in arrival order, each waiting, running, done (its output is
 * ready) or sent (its RESULT or FAIL awaits an ACK). One mutex guards the list, the states and
 * the progress the compute thread reports; the compute thread sleeps on a condition variable
 * for work and wakes the I/O thread, which sleeps in zmq_poll, through a pipe. A running task
 * is never freed or changed by the I/O thread (a DROP only marks it), so the compute thread
 * reads it without the lock while it runs.
 *
 * ZeroMQ's own reconnection is turned off (ZMQ_RECONNECT_IVL -1): a coordinator that restarts
 * would otherwise get this worker back as an unknown peer that never said hello and so never
 * gets a task. Instead every lost connection shows as silence, and the worker closes the
 * socket, waits out its backoff, opens a new one and says hello again.
 *
 * Credits (PROTOCOL.md, "Credits"): `granted` is kept equal to the credits the coordinator
 * holds for this worker: + a READY that left, - a TASK, + the ACK of a report sent after a READY
 * since the last HELLO (the coordinator gives that slot back itself), 0 at a HELLO. A READY
 * asks for the slots minus what is held and granted, and it is worked out again after every frame
 * that may have freed a slot, so a slot is never asked for twice and never forgotten.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include "coordinator/wire.h"
#include "worker/service.h"

#define DEFAULT_SLOTS 2 /* tasks held at once by the credits: one running, one waiting */
/* Beyond HELD_FACTOR x slots (a coordinator ignoring credits) a task fails at once. */
#define HELD_FACTOR 4
#define SILENT_BEATS 3 /* heartbeat intervals without an answer before reconnecting */
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 32000
#define FIRST_HEARTBEAT_MS 1000 /* heartbeat interval assumed before the first WELCOME */
#define POLL_MAX_MS 100         /* the longest sleep: how late *stop is noticed */
#define HOLD_MS 1         /* how long finished outputs may wait for the next task's (hand_over) */
#define RECV_PER_TURN 256 /* frames read per turn, so heartbeats go out under a flood */
#define ID_LEN 256

typedef enum task_state {
    T_WAITING, /* received; the compute thread takes the oldest */
    T_RUNNING, /* on the compute thread; only it writes the output fields */
    T_DONE,    /* output ready, to be sent once connected */
    T_SENT,    /* RESULT or FAIL sent on this connection, not yet acknowledged */
} task_state;

typedef struct svc_task {
    proto_msg *msg; /* the TASK (owns its strings and body); NULL for a task failed on arrival */
    int64_t task;
    uint64_t epoch; /* the newest lease of the task this worker heard of */
    task_state state;
    bool dropped;    /* DROP or lease lost while running: discard the output */
    double progress; /* running: the last fraction reported */
    /* output (done, sent) */
    bool returned; /* handed back unrun (the worker stops): a RETURN, not a FAIL */
    int rc;
    uint8_t *body;
    size_t body_len;
    uint64_t n_rows;
    char digest[65];
    char error[COMMON_ERR_LEN];
    double seconds;      /* how long it ran, for the log */
    int64_t sent_ms;     /* sent: when */
    uint32_t hb_unacked; /* heartbeats of it on this connection whose ACK has not come */
    /* sent: the HELLO generation (svc.gen) after whose READY it left, so that its ACK gives
     * the coordinator its credit back; 0 when it left before any such READY */
    uint64_t credit_gen;
    /* sent: leased again at this epoch meanwhile (0: not). The report in flight is answered
     * first (each answer returns a credit: this task holds two until then), then the output
     * is sent again for this epoch. */
    uint64_t resend_epoch;
    struct svc_task *next;
} svc_task;

typedef enum conn_state {
    C_DOWN,  /* no socket: waiting out the backoff */
    C_HELLO, /* HELLO sent, WELCOME awaited */
    C_UP,    /* welcomed */
} conn_state;

typedef struct svc {
    const worker_service_opts *o;
    worker_compute *c;
    void *ctx;
    bool own_ctx;
    char id[ID_LEN];

    /* guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    svc_task *tasks;          /* arrival order */
    bool quit;                /* the compute thread ends after its current task */
    bool stopping;            /* no more tasks start */
    int64_t last_progress_ms; /* the running task's last progress (or start) */
    int64_t held_since_ms;    /* when the oldest output not yet handed to the I/O thread was
                               * ready (0: none) */
    size_t n_models;
    char models[PROTO_MAX_MODELS][65]; /* the compute's loaded models, read on its thread */

    int wake[2]; /* pipe: the compute thread writes a byte when an output is ready */
    pthread_t thread;
    bool thread_started;

    /* I/O thread only */
    void *sock;
    /* Messages of this turn, sent as one frame (a bundle when several) when it ends
     * (flush_out): their order is kept, and a turn that answers many ACKs costs the
     * coordinator one frame to read. out_ok: the socket could take a frame when the first
     * was queued. */
    uint8_t **out_msg;
    size_t *out_len;
    size_t n_out, cap_out;
    bool out_ok;
    conn_state conn;
    uint32_t heartbeat_ms, lease_ms;
    uint32_t slots; /* tasks held at once (worker_service_opts.slots) */
    int64_t backoff_ms, reconnect_at_ms, hello_at_ms, next_hb_ms;
    bool awaiting; /* something was sent that wants an answer, and nothing came since */
    int64_t awaiting_since_ms;
    uint32_t granted; /* credits the coordinator holds for this connection */
    uint64_t gen;     /* HELLOs said (on every connection): the credits' generation */
    bool readied;     /* a READY left since the last HELLO: ACKs of reports return credits */
    bool ready_due;   /* a slot may have been freed: READY once the frames waiting are read */
    bool stop_hello;  /* the HELLO that told the coordinator this worker stops awaits WELCOME */
} svc;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
say(const svc *s, const char *fmt, ...) {
    if (s->o->verbose <= 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "chesslens-worker %s: ", s->id);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ---- the task table (every function here runs with mu held) ---- */

/* The slots the tasks held take: one each, two for a task whose report at an old epoch is
 * still to be answered while it is leased again (both leases' credits come back with ACKs). */
static size_t held(const svc *s) {
    size_t n = 0;
    for (const svc_task *t = s->tasks; t != NULL; t = t->next) {
        n += t->state == T_SENT && t->resend_epoch != 0 ? 2 : 1;
    }
    return n;
}

static svc_task *find_task(const svc *s, int64_t task) {
    for (svc_task *t = s->tasks; t != NULL; t = t->next) {
        if (t->task == task) {
            return t;
        }
    }
    return NULL;
}

static void free_task(svc *s, svc_task *t) {
    assert(t->state != T_RUNNING); /* the compute thread reads a running task without the lock */
    for (svc_task **p = &s->tasks; *p != NULL; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    proto_msg_free(&t->msg);
    free(t->body);
    free(t);
}

/* Makes t a failure to report (a waiting task returned, a task refused on arrival). */
static void fail_task(svc_task *t, const char *why) {
    t->state = T_DONE;
    t->rc = COMMON_ERR_UNSUPPORTED;
    snprintf(t->error, sizeof t->error, "%s", why);
}

/* A waiting task this stopping worker will not run: it goes back with RETURN, which does not
 * count as an attempt of the task. */
static void return_task(svc_task *t) {
    fail_task(t, "worker stopping");
    t->returned = true;
}

/* ---- the compute thread ---- */

static void on_progress(void *ctx, double fraction) {
    svc *s = ctx;
    pthread_mutex_lock(&s->mu);
    for (svc_task *t = s->tasks; t != NULL; t = t->next) {
        if (t->state == T_RUNNING) {
            t->progress = fraction;
        }
    }
    s->last_progress_ms = now_ms();
    pthread_mutex_unlock(&s->mu);
}

/* Copies the compute's model list for HELLO (mu held; on the compute thread once it runs, as
 * the computation is used by one thread at a time). */
static void publish_models(svc *s) {
    const char *m[PROTO_MAX_MODELS] = {NULL};
    size_t n = s->c->models != NULL ? s->c->models(s->c->self, m) : 0;
    s->n_models = 0;
    for (size_t i = 0; i < n && i < PROTO_MAX_MODELS; i++) {
        /* only well-formed digests: HELLO would not encode with another */
        if (m[i] != NULL && strlen(m[i]) == 64 && strspn(m[i], "0123456789abcdef") == 64) {
            memcpy(s->models[s->n_models++], m[i], 65);
        }
    }
}

static void wake_io(svc *s) {
    char b = 1;
    /* a full pipe already holds a wake-up: nothing is lost */
    if (write(s->wake[1], &b, 1) < 0) {
        return;
    }
}

/* Wakes the I/O thread for the output just made, or holds it while more tasks wait and the
 * oldest held output is younger than HOLD_MS: tasks of microseconds (a sweep of tiny tasks, the
 * no-op backend) then leave in one bundle per run of the queue instead of a frame and a wake-up
 * each. A held output leaves at the latest with the I/O thread's next turn (POLL_MAX_MS), which
 * sends every finished task. Called with the lock held. */
static void hand_over(svc *s) {
    int64_t now = now_ms();
    if (s->held_since_ms == 0) {
        s->held_since_ms = now;
    }
    bool more = false;
    for (const svc_task *t = s->tasks; t != NULL && !more && !s->stopping; t = t->next) {
        more = t->state == T_WAITING;
    }
    if (!more || now - s->held_since_ms >= HOLD_MS) {
        s->held_since_ms = 0;
        wake_io(s);
    }
}

worker_task_in worker_task_in_of(const proto_msg *m) {
    assert(m->type == PROTO_TASK);
    return (worker_task_in){
        .task = m->task,
        .epoch = m->epoch,
        .attempt = m->attempt,
        .model_path = m->model_path,
        .model_sha256 = m->model_sha256,
        .spec = m->spec,
        .body = m->body,
        .body_len = m->body_len,
    };
}

static void *compute_main(void *arg) {
    svc *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        svc_task *t = NULL;
        while (!s->quit) {
            for (t = s->tasks; t != NULL && t->state != T_WAITING; t = t->next) {
            }
            if (t != NULL && !s->stopping) {
                break;
            }
            t = NULL;
            pthread_cond_wait(&s->cv, &s->mu);
        }
        if (t == NULL) {
            break;
        }
        t->state = T_RUNNING;
        t->progress = 0;
        s->last_progress_ms = now_ms(); /* starting counts as progress */
        /* t->msg stays while t runs: the I/O thread replaces it only in a waiting task */
        worker_task_in in = worker_task_in_of(t->msg);
        pthread_mutex_unlock(&s->mu);

        uint8_t *out = NULL;
        size_t len = 0;
        uint64_t rows = 0;
        char e[COMMON_ERR_LEN] = "";
        double t0 = common_now_s();
        int rc = s->c->run(s->c->self, &in, on_progress, s, &out, &len, &rows, e);
        char digest[65] = "";
        if (rc == 0) {
            /* hashed here, not on the I/O thread: a large body takes a while */
            coordinator_digest_hex(out, len, digest);
        } else {
            free(out);
            out = NULL;
            len = 0;
        }

        pthread_mutex_lock(&s->mu);
        t->rc = rc;
        t->body = out;
        t->body_len = len;
        t->n_rows = rows;
        memcpy(t->digest, digest, sizeof digest);
        snprintf(t->error, sizeof t->error, "%s", e[0] != '\0' ? e : common_strerror(rc));
        t->seconds = common_now_s() - t0;
        t->state = T_DONE;
        publish_models(s);
        hand_over(s);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- sending (I/O thread) ---- */

/* Sends the messages queued this turn as one frame (a bundle when several; more frames only
 * past PROTO_MAX_BUNDLE or PROTO_MAX_MESSAGE), without blocking. A frame that cannot leave (no
 * peer, a full queue) is lost like one lost on the wire: the silence rule reconnects and
 * whatever needs it is sent again. */
static void flush_out(svc *s) {
    size_t from = 0;
    while (from < s->n_out) {
        size_t n = 0, bytes = 5;
        while (from + n < s->n_out && n < PROTO_MAX_BUNDLE) {
            size_t add = s->out_len[from + n] + proto_bundle_overhead(s->out_len[from + n]);
            if (n > 0 && bytes + add > PROTO_MAX_MESSAGE) {
                break;
            }
            bytes += add;
            n++;
        }
        uint8_t *frame = NULL;
        size_t len = 0;
        char e[COMMON_ERR_LEN];
        int rc = n == 1 ? 0
                        : proto_bundle((const uint8_t *const *)s->out_msg + from, s->out_len + from,
                                       n, &frame, &len, e);
        if (rc == 0 && s->sock != NULL &&
            zmq_send(s->sock, n == 1 ? s->out_msg[from] : frame, n == 1 ? s->out_len[from] : len,
                     ZMQ_DONTWAIT) < 0 &&
            s->o->verbose > 1) {
            say(s, "%zu message%s not sent: %s", n, n == 1 ? "" : "s", zmq_strerror(zmq_errno()));
        } else if (rc != 0) {
            say(s, "%zu messages not sent: %s", n, e); /* out of memory */
        }
        free(frame);
        from += n;
    }
    for (size_t i = 0; i < s->n_out; i++) {
        free(s->out_msg[i]);
    }
    s->n_out = 0;
}

/* Queues an encoded message (buf: taken) for this turn's frame; *sent (may be NULL) tells
 * whether it will leave: whether the socket could take a frame when this turn's first message
 * was queued. */
static void send_frame(svc *s, uint8_t *buf, size_t len, bool wants_answer, bool *sent) {
    if (s->n_out == 0) {
        int events = 0;
        size_t size = sizeof events;
        s->out_ok = s->sock != NULL && zmq_getsockopt(s->sock, ZMQ_EVENTS, &events, &size) == 0 &&
                    (events & ZMQ_POLLOUT) != 0;
    }
    if (s->n_out == s->cap_out) {
        size_t cap = s->cap_out > 0 ? 2 * s->cap_out : 32;
        uint8_t **msg = realloc(s->out_msg, cap * sizeof *msg);
        if (msg != NULL) {
            s->out_msg = msg;
        }
        size_t *lens = msg != NULL ? realloc(s->out_len, cap * sizeof *lens) : NULL;
        if (lens != NULL) {
            s->out_len = lens;
            s->cap_out = cap;
        }
    }
    bool queued = s->out_ok && s->n_out < s->cap_out;
    if (queued) {
        s->out_msg[s->n_out] = buf;
        s->out_len[s->n_out++] = len;
    } else {
        free(buf); /* lost, as on the wire */
    }
    if (wants_answer && !s->awaiting) {
        s->awaiting = true;
        s->awaiting_since_ms = now_ms();
    }
    if (sent != NULL) {
        *sent = queued;
    }
}

/* Encodes and sends m (send_frame). Only an encoding failure is an error. */
static int send_msg(svc *s, const proto_msg *m, bool wants_answer, bool *sent, char *err) {
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = proto_encode(m, &buf, &len, err);
    if (rc != 0) {
        return rc;
    }
    send_frame(s, buf, len, wants_answer, sent);
    return 0;
}

/* Says hello (mu held). */
static int send_hello(svc *s, char *err) {
    proto_msg m = {.type = PROTO_HELLO,
                   .worker = s->id,
                   .backend = s->c->backend != NULL ? s->c->backend : "cpu",
                   .memory = s->c->memory,
                   .threads = s->c->threads,
                   .n_devices = s->c->n_devices};
    memcpy(m.devices, s->c->devices, s->c->n_devices * sizeof m.devices[0]);
    /* mu is held: the compute thread cannot change the model list while it is encoded */
    m.n_models = s->n_models;
    for (size_t i = 0; i < s->n_models; i++) {
        m.models[i] = s->models[i];
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = proto_encode(&m, &buf, &len, err);
    if (rc != 0) {
        return rc;
    }
    send_frame(s, buf, len, false, NULL);
    s->conn = C_HELLO;
    s->hello_at_ms = now_ms();
    s->granted = 0; /* a hello starts this worker afresh at the coordinator */
    s->readied = false;
    s->gen++;
    s->stop_hello = s->stopping; /* answered before a stopping worker returns */
    return 0;
}

/* Asks for as many tasks as the free slots allow (mu held): those neither held nor granted.
 * A stopping worker asks for none. A READY that cannot leave now is asked for again at the
 * next turn. */
static int send_ready(svc *s, char *err) {
    if (s->conn != C_UP || s->stopping) {
        return 0;
    }
    size_t busy = held(s) + s->granted;
    if (busy >= s->slots) {
        return 0;
    }
    proto_msg m = {.type = PROTO_READY, .credits = (uint32_t)(s->slots - busy)};
    bool sent = false;
    int rc = send_msg(s, &m, false, &sent, err);
    if (rc == 0 && sent) {
        s->granted += m.credits;
        s->readied = true;
    } else if (rc == 0) {
        s->ready_due = true;
    }
    return rc;
}

/* Sends every finished output (mu held); frees those that were dropped. */
static int send_outputs(svc *s, char *err) {
    int rc = 0;
    bool freed = false;
    svc_task *next = NULL;
    for (svc_task *t = s->tasks; t != NULL && rc == 0; t = next) {
        next = t->next;
        if (t->state != T_DONE) {
            continue;
        }
        if (t->dropped) {
            say(s, "task %" PRId64 " dropped after %.2f s: output discarded", t->task, t->seconds);
            free_task(s, t);
            freed = true;
            continue;
        }
        if (s->conn != C_UP) {
            continue;
        }
        uint8_t *buf = NULL;
        size_t len = 0;
        proto_msg m = {.task = t->task, .epoch = t->epoch};
        if (t->rc == 0) {
            m.type = PROTO_RESULT;
            m.digest = t->digest;
            m.body = t->body;
            m.body_len = t->body_len;
            char e[COMMON_ERR_LEN];
            int erc = proto_encode(&m, &buf, &len, e);
            if (erc != 0) {
                /* a result no message can carry (over PROTO_MAX_MESSAGE) fails its task */
                t->rc = erc;
                snprintf(t->error, sizeof t->error, "worker: result not sendable: %.200s", e);
                free(t->body);
                t->body = NULL;
            } else {
                say(s,
                    "task %" PRId64 " epoch %" PRIu64 ": result, %zu bytes, %" PRIu64
                    " rows, %.2f s",
                    t->task, t->epoch, t->body_len, t->n_rows, t->seconds);
            }
        }
        if (t->rc != 0) {
            m = (proto_msg){.type = t->returned ? PROTO_RETURN : PROTO_FAIL,
                            .task = t->task,
                            .epoch = t->epoch};
            m.error = t->returned ? NULL : t->error;
            say(s, "task %" PRId64 " epoch %" PRIu64 ": %s: %s", t->task, t->epoch,
                t->returned ? "returned" : "failed", t->error);
            if ((rc = proto_encode(&m, &buf, &len, err)) != 0) {
                break;
            }
        }
        /* Its heartbeats' ACKs (hb_unacked) come before this one's: ACKs keep the order of
         * what they answer. */
        send_frame(s, buf, len, true, NULL);
        t->state = T_SENT;
        t->sent_ms = now_ms();
        t->credit_gen = s->readied ? s->gen : 0;
    }
    if (rc == 0 && freed) {
        rc = send_ready(s, err);
    }
    return rc;
}

/* Heartbeats every task held that may still run, while the compute thread shows progress;
 * an idle heartbeat when nothing is held that could be renewed (mu held). */
static int send_heartbeats(svc *s, int64_t now, char *err) {
    bool running = false, renewable = false;
    for (const svc_task *t = s->tasks; t != NULL; t = t->next) {
        running = running || t->state == T_RUNNING;
        renewable = renewable || ((t->state == T_WAITING || t->state == T_RUNNING) && !t->dropped);
    }
    if (!renewable) {
        proto_msg m = {.type = PROTO_HEARTBEAT, .task = 0};
        return send_msg(s, &m, true, NULL, err);
    }
    if (running && now - s->last_progress_ms >= (int64_t)s->lease_ms) {
        return 0; /* hung: let the leases lapse (PROTOCOL.md, "Leases") */
    }
    int rc = 0;
    for (svc_task *t = s->tasks; t != NULL && rc == 0; t = t->next) {
        if ((t->state == T_WAITING || t->state == T_RUNNING) && !t->dropped) {
            proto_msg m = {.type = PROTO_HEARTBEAT,
                           .task = t->task,
                           .epoch = t->epoch,
                           .progress = t->state == T_RUNNING ? t->progress : 0.0};
            bool sent = false;
            rc = send_msg(s, &m, true, &sent, err);
            t->hb_unacked += sent; /* only a heartbeat that left gets an ACK */
        }
    }
    return rc;
}

/* ---- the connection ---- */

static void close_socket(svc *s) {
    for (size_t i = 0; i < s->n_out; i++) {
        free(s->out_msg[i]); /* queued for a connection that is gone */
    }
    s->n_out = 0;
    if (s->sock != NULL) {
        zmq_close(s->sock);
        s->sock = NULL;
    }
}

static int open_socket(svc *s, char *err) {
    s->sock = zmq_socket(s->ctx, ZMQ_DEALER);
    if (s->sock == NULL) {
        return common_fail(err, COMMON_ERR_IO, "worker: zmq_socket: %s", zmq_strerror(zmq_errno()));
    }
    int64_t max = (int64_t)PROTO_MAX_MESSAGE;
    int linger = 0, reconnect = -1;
    if (zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &max, sizeof max) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_setsockopt(s->sock, ZMQ_RECONNECT_IVL, &reconnect, sizeof reconnect) != 0) {
        int e = zmq_errno();
        close_socket(s);
        return common_fail(err, COMMON_ERR_IO, "worker: zmq_setsockopt: %s", zmq_strerror(e));
    }
    int rc =
        s->o->socket_setup != NULL ? s->o->socket_setup(s->sock, s->o->socket_setup_arg, err) : 0;
    if (rc != 0) {
        close_socket(s);
        return rc;
    }
    if (zmq_connect(s->sock, s->o->endpoint) != 0) {
        int e = zmq_errno();
        close_socket(s);
        return common_fail(err, COMMON_ERR_INVALID, "worker: zmq_connect(%s): %s", s->o->endpoint,
                           zmq_strerror(e));
    }
    return 0;
}

/* Gives up the connection (mu held): outputs sent on it go again after the next WELCOME. */
static void disconnect(svc *s, int64_t now, const char *why) {
    say(s, "%s: reconnecting in %.0f s", why, (double)s->backoff_ms / 1000.0);
    close_socket(s);
    s->conn = C_DOWN;
    s->awaiting = false;
    s->reconnect_at_ms = now + s->backoff_ms;
    s->backoff_ms = s->backoff_ms * 2 < BACKOFF_MAX_MS ? s->backoff_ms * 2 : BACKOFF_MAX_MS;
    s->stop_hello = false;
    for (svc_task *t = s->tasks; t != NULL; t = t->next) {
        t->hb_unacked = 0;
        if (t->state == T_SENT) {
            t->state = T_DONE; /* no answer comes on this connection any more */
            t->epoch = t->resend_epoch > t->epoch ? t->resend_epoch : t->epoch;
            t->resend_epoch = 0;
        }
    }
}

/* Whether the coordinator owes an answer for 3 heartbeat intervals (mu held). */
static bool silent(const svc *s, int64_t now) {
    int64_t limit = (int64_t)SILENT_BEATS * s->heartbeat_ms;
    if (s->conn == C_HELLO) {
        return now - s->hello_at_ms >= limit;
    }
    if (s->awaiting && now - s->awaiting_since_ms >= limit) {
        return true;
    }
    for (const svc_task *t = s->tasks; t != NULL; t = t->next) {
        if (t->state == T_SENT && now - t->sent_ms >= limit) {
            return true;
        }
    }
    return false;
}

/* ---- messages from the coordinator (mu held) ---- */

static int on_task(svc *s, proto_msg **mp, char *err) {
    proto_msg *m = *mp;
    /* Every TASK took a credit. A TCP-ordered TASK sent before the coordinator read this
     * worker's HELLO finds granted at 0 already: the HELLO cleared that credit too. */
    s->granted = s->granted > 0 ? s->granted - 1 : 0;
    svc_task *t = find_task(s, m->task);
    if (t != NULL) {
        /* Leased again (its lease lapsed at the coordinator while it was here): the work is
         * the task's, so what is held serves the new epoch. The credit it took fills no new
         * slot, so the slots are worked out again (one is asked for unless the task's report
         * in flight brings it back). */
        say(s, "task %" PRId64 " again, epoch %" PRIu64 " (held at %" PRIu64 ")", m->task, m->epoch,
            t->epoch);
        s->ready_due = true;
        if (t->state == T_SENT) {
            /* its report at t->epoch is answered first; then it goes again at this one */
            if (m->epoch > t->epoch && m->epoch > t->resend_epoch) {
                t->resend_epoch = m->epoch;
            }
            return 0;
        }
        if (m->epoch <= t->epoch && !t->dropped) {
            return 0;
        }
        t->epoch = m->epoch;
        t->dropped = false;
        t->hb_unacked = 0;
        if (t->state == T_WAITING) {
            proto_msg_free(&t->msg);
            t->msg = m;
            *mp = NULL;
        }
        return 0;
    }
    if (held(s) >= (size_t)HELD_FACTOR * s->slots) {
        proto_msg f = {.type = PROTO_FAIL,
                       .task = m->task,
                       .epoch = m->epoch,
                       .error = "worker: more tasks than its credits"};
        return send_msg(s, &f, true, NULL, err);
    }
    t = calloc(1, sizeof *t);
    if (t == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "worker: out of memory");
    }
    t->task = m->task;
    t->epoch = m->epoch;
    t->msg = m;
    *mp = NULL;
    t->state = T_WAITING;
    if (s->stopping) {
        return_task(t);
    }
    svc_task **p = &s->tasks;
    while (*p != NULL) {
        p = &(*p)->next;
    }
    *p = t;
    say(s, "task %" PRId64 " epoch %" PRIu64 " attempt %" PRIu32 ": %zu bytes of work", t->task,
        t->epoch, m->attempt, m->body_len);
    pthread_cond_signal(&s->cv);
    return 0;
}

static int on_ack(svc *s, const proto_msg *m) {
    svc_task *t = m->task > 0 ? find_task(s, m->task) : NULL;
    if (t == NULL || t->epoch != m->epoch) {
        return 0; /* an idle heartbeat's, or about a lease this worker no longer holds */
    }
    if (t->hb_unacked > 0) {
        /* ACKs come in the order of what they answer, so this one is a heartbeat's */
        t->hb_unacked--;
        if (m->status == PROTO_ACK_STORED || t->state == T_SENT) {
            return 0;
        }
        if (t->state == T_RUNNING) {
            say(s, "task %" PRId64 ": lease lost while running", t->task);
            t->dropped = true;
            return 0;
        }
        say(s, "task %" PRId64 ": lease lost", t->task);
        free_task(s, t);
        s->ready_due = true;
        return 0;
    }
    if (t->state != T_SENT) {
        return 0;
    }
    say(s, "task %" PRId64 ": acknowledged (%s)", t->task,
        m->status == PROTO_ACK_STORED      ? "stored"
        : m->status == PROTO_ACK_DUPLICATE ? "duplicate"
                                           : "lease lost");
    if (s->o->ack_log != NULL) {
        /* flushed before the output is dropped below: a line in the log is an ACK that
         * arrived, whatever becomes of this process afterwards */
        fprintf(s->o->ack_log, "ACK %" PRId64 " %" PRIu64 " %s %s\n", t->task, m->epoch,
                m->status == PROTO_ACK_STORED      ? "stored"
                : m->status == PROTO_ACK_DUPLICATE ? "duplicate"
                                                   : "lease_lost",
                t->rc == 0    ? "result"
                : t->returned ? "return"
                              : "fail");
        fflush(s->o->ack_log);
    }
    if (t->credit_gen == s->gen) {
        s->granted++; /* the coordinator took this slot back as free: no READY for it */
    }
    if (t->resend_epoch != 0 && m->status == PROTO_ACK_LEASE_LOST) {
        /* fenced by the newer lease this worker holds too: its output goes again for that */
        t->epoch = t->resend_epoch;
        t->resend_epoch = 0;
        t->state = T_DONE;
    } else {
        free_task(s, t);
    }
    s->ready_due = true; /* a slot freed that the coordinator did not take back asks a READY */
    return 0;
}

static int on_drop(svc *s, const proto_msg *m) {
    svc_task *t = find_task(s, m->task);
    if (t != NULL && t->state == T_SENT && t->resend_epoch == m->epoch && m->epoch != 0) {
        /* the newer lease is dropped: nothing goes again once the report in flight is
         * answered, and the second slot it held is free */
        t->resend_epoch = 0;
        s->ready_due = true;
        return 0;
    }
    if (t == NULL || t->epoch != m->epoch || t->state == T_SENT) {
        return 0;
    }
    say(s, "task %" PRId64 ": dropped", t->task);
    if (t->state == T_RUNNING) {
        t->dropped = true; /* its output is discarded when it ends */
        return 0;
    }
    free_task(s, t);
    s->ready_due = true;
    return 0;
}

static int on_message(svc *s, const void *buf, size_t len, int64_t now, char *err) {
    proto_msg *m = NULL;
    char e[COMMON_ERR_LEN];
    if (proto_decode(buf, len, &m, e) != 0) {
        say(s, "message of %zu bytes refused: %s", len, e);
        return 0;
    }
    int rc = 0;
    if (m->type == PROTO_WELCOME || m->type == PROTO_TASK || m->type == PROTO_ACK ||
        m->type == PROTO_DROP || m->type == PROTO_ERROR) {
        s->awaiting = false; /* the coordinator is there */
    }
    switch (m->type) {
    case PROTO_WELCOME:
        if (s->conn == C_HELLO) {
            s->conn = C_UP;
            s->heartbeat_ms = m->heartbeat_ms;
            s->lease_ms = m->lease_ms;
            s->backoff_ms = BACKOFF_MIN_MS;
            s->next_hb_ms = now; /* renew what is held at once */
            say(s, "welcome: heartbeat %" PRIu32 " ms, lease %" PRIu32 " ms", m->heartbeat_ms,
                m->lease_ms);
            s->stop_hello = false;
            /* READY first: the reports that follow it give their credits back when answered */
            if ((rc = send_ready(s, err)) == 0) {
                rc = send_outputs(s, err);
            }
        }
        break;
    case PROTO_TASK:
        rc = on_task(s, &m, err);
        break;
    case PROTO_ACK:
        rc = on_ack(s, m);
        break;
    case PROTO_DROP:
        rc = on_drop(s, m);
        break;
    case PROTO_ERROR:
        /* Most likely the coordinator does not know this peer (it forgot a worker that was
         * silent, or restarted): say hello again on the same socket. */
        say(s, "coordinator error: %s", m->error);
        if (s->conn == C_UP) {
            rc = send_hello(s, err);
        }
        break;
    default:
        say(s, "%s: not a message a worker takes", proto_type_name(m->type));
        break;
    }
    proto_msg_free(&m);
    return rc;
}

/* The messages of one frame, in order (a bundle's, proto.h). */
static int on_frame(svc *s, const void *buf, size_t len, int64_t now, char *err) {
    proto_frame_iter it;
    char e[COMMON_ERR_LEN];
    int got = proto_frame_begin(&it, buf, len, e);
    const void *msg = NULL;
    size_t msg_len = 0;
    while (got == 0 && (got = proto_frame_next(&it, &msg, &msg_len, e)) > 0) {
        int rc = on_message(s, msg, msg_len, now, err);
        if (rc != 0) {
            return rc;
        }
        got = 0;
    }
    if (got < 0) {
        say(s, "frame of %zu bytes refused: %s", len, e);
    }
    return 0;
}

/* Reads the frames that are waiting (mu held). A message of several frames is not ours. */
static int read_frames(svc *s, char *err) {
    for (int i = 0; i < RECV_PER_TURN && s->sock != NULL; i++) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, s->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f);
            return 0;
        }
        bool more = zmq_msg_more(&f);
        int rc = 0;
        if (!more) {
            rc = on_frame(s, zmq_msg_data(&f), zmq_msg_size(&f), now_ms(), err);
        } else {
            say(s, "message of several frames dropped");
            while (more) {
                zmq_msg_close(&f);
                zmq_msg_init(&f);
                if (zmq_msg_recv(&f, s->sock, ZMQ_DONTWAIT) < 0) {
                    break;
                }
                more = zmq_msg_more(&f);
            }
        }
        zmq_msg_close(&f);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* Reads the frames that are waiting (mu held). A message of several frames is not ours. The
 * slots that ACKs and DROPs among them freed are asked for with one READY after the last (two
 * ACKs that came together cost the coordinator one READY, and it leases both tasks at once). */
static int recv_frames(svc *s, char *err) {
    int rc = read_frames(s, err);
    if (rc == 0 && s->ready_due) {
        s->ready_due = false;
        rc = send_ready(s, err);
    }
    flush_out(s);
    return rc;
}

/* ---- the I/O loop ---- */

/* *stop was set (mu held): nothing new starts, the waiting tasks go back as failures. A
 * welcomed worker says HELLO again, which clears the credits the coordinator holds for it and,
 * as no READY follows, keeps the ACKs of its last reports from giving any back: it is handed
 * no task after this (but those already on their way, which it returns). */
static int begin_stop(svc *s, char *err) {
    say(s, "stopping: the running task finishes, waiting ones are returned");
    s->stopping = true;
    for (svc_task *t = s->tasks; t != NULL; t = t->next) {
        if (t->state == T_WAITING) {
            return_task(t);
        }
    }
    return s->conn == C_UP ? send_hello(s, err) : 0;
}

/* Whether a stopping worker may return (mu held): its last HELLO answered (or given up on by
 * the silence rule), and nothing held, or nothing it can still deliver (no connection, and no
 * computation to wait for). */
static bool stop_done(const svc *s) {
    if (s->stop_hello) {
        return false;
    }
    if (s->tasks == NULL) {
        return true;
    }
    for (const svc_task *t = s->tasks; t != NULL; t = t->next) {
        if (t->state == T_RUNNING) {
            return false;
        }
    }
    return s->conn != C_UP;
}

/* One turn (mu held): connect, heartbeat, notice silence, send outputs. *done when a stopping
 * worker may return. */
static int turn(svc *s, bool *done, char *err) {
    int64_t now = now_ms();
    int rc = 0;
    if (s->o->stop != NULL && *s->o->stop && !s->stopping && (rc = begin_stop(s, err)) != 0) {
        return rc;
    }
    if (s->conn != C_DOWN && silent(s, now)) {
        disconnect(s, now, s->conn == C_HELLO ? "no welcome" : "coordinator silent");
    }
    if (s->stopping && stop_done(s)) {
        *done = true;
        return 0;
    }
    if (s->conn == C_DOWN && !s->stopping && now >= s->reconnect_at_ms) {
        if ((rc = open_socket(s, err)) != 0 || (rc = send_hello(s, err)) != 0) {
            return rc;
        }
        say(s, "hello sent to %s", s->o->endpoint);
    }
    if (s->conn == C_UP && now >= s->next_hb_ms) {
        s->next_hb_ms = now + s->heartbeat_ms;
        rc = send_heartbeats(s, now, err);
    }
    if (rc == 0) {
        rc = send_outputs(s, err);
    }
    if (rc == 0 && s->ready_due) {
        s->ready_due = false; /* a READY that could not leave before */
        rc = send_ready(s, err);
    }
    return rc;
}

static int poll_timeout_ms(const svc *s, int64_t now) {
    int64_t until = POLL_MAX_MS;
    if (s->conn == C_UP && s->next_hb_ms - now < until) {
        until = s->next_hb_ms - now;
    }
    if (s->conn == C_DOWN && s->reconnect_at_ms - now < until) {
        until = s->reconnect_at_ms - now;
    }
    return until > 0 ? (int)until : 0;
}

static void drain_wake(svc *s) {
    char b[64];
    while (read(s->wake[0], b, sizeof b) > 0) {
    }
}

static void default_id(char *out, size_t cap) {
    char host[128] = "worker";
    if (gethostname(host, sizeof host) != 0) {
        snprintf(host, sizeof host, "worker");
    }
    host[sizeof host - 1] = '\0';
    snprintf(out, cap, "%s-%ld", host, (long)getpid());
}

static int loop(svc *s, char *err) {
    int rc = 0;
    bool done = false;
    while (rc == 0 && !done) {
        pthread_mutex_lock(&s->mu);
        rc = turn(s, &done, err);
        flush_out(s);
        pthread_mutex_unlock(&s->mu);
        if (rc != 0 || done) {
            break;
        }
        zmq_pollitem_t items[2] = {{.socket = NULL, .fd = s->wake[0], .events = ZMQ_POLLIN},
                                   {.socket = s->sock, .fd = 0, .events = ZMQ_POLLIN}};
        int n = zmq_poll(items, s->sock != NULL ? 2 : 1, poll_timeout_ms(s, now_ms()));
        if (n < 0 && zmq_errno() != EINTR) {
            rc = common_fail(err, COMMON_ERR_IO, "worker: zmq_poll: %s", zmq_strerror(zmq_errno()));
            break;
        }
        if (n > 0 && (items[0].revents & ZMQ_POLLIN) != 0) {
            drain_wake(s);
        }
        if (n > 0 && s->sock != NULL && (items[1].revents & ZMQ_POLLIN) != 0) {
            pthread_mutex_lock(&s->mu);
            rc = recv_frames(s, err);
            pthread_mutex_unlock(&s->mu);
        }
    }
    return rc;
}

static void svc_cleanup(svc *s) {
    if (s->thread_started) {
        pthread_mutex_lock(&s->mu);
        s->quit = true;
        pthread_cond_broadcast(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL); /* waits for a running task: it borrows c */
    }
    while (s->tasks != NULL) {
        free_task(s, s->tasks);
    }
    close_socket(s);
    free(s->out_msg);
    free(s->out_len);
    if (s->own_ctx && s->ctx != NULL) {
        zmq_ctx_term(s->ctx);
    }
    for (int i = 0; i < 2; i++) {
        if (s->wake[i] >= 0) {
            close(s->wake[i]);
        }
    }
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

int worker_service_run(const worker_service_opts *o, worker_compute *c, char *err) {
    if (o == NULL || o->endpoint == NULL || c == NULL || c->run == NULL) {
        return common_fail(err, COMMON_ERR_INVALID, "worker: no endpoint or computation");
    }
    if (c->n_devices > PROTO_MAX_DEVICES) {
        return common_fail(err, COMMON_ERR_INVALID, "worker: %zu devices (at most %d)",
                           c->n_devices, PROTO_MAX_DEVICES);
    }
    if (o->id != NULL && (o->id[0] == '\0' || strlen(o->id) >= ID_LEN)) {
        return common_fail(err, COMMON_ERR_INVALID, "worker: id must have 1..%d bytes", ID_LEN - 1);
    }
    if (o->slots > WORKER_MAX_SLOTS) {
        return common_fail(err, COMMON_ERR_INVALID, "worker: %" PRIu32 " slots (at most %d)",
                           o->slots, WORKER_MAX_SLOTS);
    }
    svc s = {.o = o, .c = c, .wake = {-1, -1}};
    s.slots = o->slots > 0 ? o->slots : DEFAULT_SLOTS;
    s.heartbeat_ms = FIRST_HEARTBEAT_MS;
    s.lease_ms = SILENT_BEATS * FIRST_HEARTBEAT_MS;
    s.backoff_ms = BACKOFF_MIN_MS;
    s.conn = C_DOWN;
    s.reconnect_at_ms = 0; /* the first connection is made at once */
    if (o->id != NULL) {
        snprintf(s.id, sizeof s.id, "%s", o->id);
    } else {
        default_id(s.id, sizeof s.id);
    }
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    int rc = 0;
    if (pipe(s.wake) != 0) {
        s.wake[0] = s.wake[1] = -1;
        rc = common_fail(err, COMMON_ERR_IO, "worker: pipe: %s", strerror(errno));
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(s.wake[i], F_GETFL);
        if (fl < 0 || fcntl(s.wake[i], F_SETFL, fl | O_NONBLOCK) != 0) {
            rc = common_fail(err, COMMON_ERR_IO, "worker: fcntl: %s", strerror(errno));
            goto done;
        }
    }
    s.ctx = o->zmq_ctx;
    if (s.ctx == NULL) {
        if ((s.ctx = zmq_ctx_new()) == NULL) {
            rc = common_fail(err, COMMON_ERR_IO, "worker: zmq_ctx_new: %s",
                             zmq_strerror(zmq_errno()));
            goto done;
        }
        s.own_ctx = true;
    }
    publish_models(&s); /* for the first HELLO; later on the compute thread, after each task */
    if (pthread_create(&s.thread, NULL, compute_main, &s) != 0) {
        rc = common_fail(err, COMMON_ERR_IO, "worker: cannot start the compute thread");
        goto done;
    }
    s.thread_started = true;
    rc = loop(&s, err);
    if (rc == 0) {
        say(&s, "stopped");
    } else {
        say(&s, "ended: %s", err != NULL ? err : common_strerror(rc));
    }
done:
    svc_cleanup(&s);
    return rc;
}
