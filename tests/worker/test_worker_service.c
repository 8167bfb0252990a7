/*
 * test_worker_service: the worker service (worker/service.h) against a scripted coordinator. The
 * test process binds a real ZeroMQ ROUTER on an ephemeral loopback tcp port and plays the
 * coordinator frame by frame, while worker_service_run runs in a thread with a computation
 * defined here (it can block, report progress, stall or fail on command). Checked: HELLO comes
 * first and describes the computation; READY credits; RESULT (task, epoch, sha256 digest of the
 * body) and FAIL (the computation's error); heartbeats while the computation advances and none
 * once it stalls for a lease; an unacknowledged RESULT sent again after the coordinator's socket
 * is closed and bound again on the same port; DROP of a waiting and of a running task; the credit
 * rules (no READY for a slot an ACK of a RESULT freed, unless that RESULT left before any READY
 * since the HELLO; READY after DROP and after WELCOME; a task leased again while its RESULT is
 * unanswered); the stop flag (HELLO again, no READY); malformed frames. Then the real executor
 * computation runs tasks a store planned, each result byte-equal to the executor run here directly,
 * and the fault-injecting wrapper's rules. WELCOME asks for 50 ms heartbeats and 300 ms leases, so
 * every wait is short.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <zmq.h>

#include "coordinator/wire.h"
#include "worker/service.h"

#define HB_MS 50
#define LEASE_MS 300
#define MODEL_DIR CHESSLENS_SOURCE_DIR "/models/chess-tiny"
#define MAX_BEATS 4096
#define MAX_QUEUED 256 /* messages of one frame from the worker */

static char err[COMMON_ERR_LEN];

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- the test's computation ---- */

typedef struct tcomp {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool block;            /* each task waits for a release */
    bool progress_blocked; /* report progress while waiting */
    int releases;          /* tasks allowed past the block */
    int progress_ms;       /* before finishing, report progress every 10 ms for this long */
    const char *fail;      /* tasks fail with this text */
    int runs;              /* tasks started */
    int64_t ran[64];       /* their ids */
} tcomp;

static tcomp tc;

static int tcomp_run(void *self, const worker_task_in *t, worker_progress_fn progress, void *pctx,
                     uint8_t **out, size_t *out_len, uint64_t *n_rows, char *e) {
    tcomp *c = self;
    pthread_mutex_lock(&c->mu);
    if (c->runs < 64) {
        c->ran[c->runs] = t->task;
    }
    c->runs++;
    pthread_cond_broadcast(&c->cv);
    int steps = c->progress_ms / 10;
    pthread_mutex_unlock(&c->mu);
    for (int i = 0; i < steps; i++) {
        sleep_ms(10);
        progress(pctx, (double)(i + 1) / steps);
    }
    pthread_mutex_lock(&c->mu);
    while (c->block && c->releases == 0) {
        if (c->progress_blocked) {
            pthread_mutex_unlock(&c->mu);
            sleep_ms(10);
            progress(pctx, 0.5);
            pthread_mutex_lock(&c->mu);
        } else {
            pthread_cond_wait(&c->cv, &c->mu);
        }
    }
    if (c->block) {
        c->releases--;
    }
    const char *fail = c->fail;
    pthread_mutex_unlock(&c->mu);
    if (fail != NULL) {
        return common_fail(e, COMMON_ERR_INVALID, "%s", fail);
    }
    char text[64];
    int n = snprintf(text, sizeof text, "result:%lld", (long long)t->task);
    *out = malloc((size_t)n);
    memcpy(*out, text, (size_t)n);
    *out_len = (size_t)n;
    *n_rows = 1;
    return 0;
}

static const char model_hex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static size_t tcomp_models(void *self, const char *out[PROTO_MAX_MODELS]) {
    (void)self;
    out[0] = model_hex;
    return 1;
}

static void tcomp_release(int n) {
    pthread_mutex_lock(&tc.mu);
    tc.releases += n;
    pthread_cond_broadcast(&tc.cv);
    pthread_mutex_unlock(&tc.mu);
}

static int tcomp_runs(void) {
    pthread_mutex_lock(&tc.mu);
    int n = tc.runs;
    pthread_mutex_unlock(&tc.mu);
    return n;
}

/* Waits until n tasks have started. */
static void tcomp_wait_runs(int n) {
    int64_t end = now_ms() + 3000;
    while (tcomp_runs() < n && now_ms() < end) {
        sleep_ms(5);
    }
    assert_true(tcomp_runs() >= n);
}

/* ---- the scripted coordinator ---- */

typedef struct beat {
    int64_t at_ms, task;
    double progress;
} beat;

typedef struct harness {
    void *ctx, *router;
    char endpoint[128];
    uint8_t peer[256];
    size_t peer_len;
    size_t n_received;             /* messages from the worker, heartbeats included */
    proto_msg *queued[MAX_QUEUED]; /* the rest of the last frame, the next message last */
    size_t n_queued;
    beat beats[MAX_BEATS];
    size_t n_beats;
    worker_compute compute;
    worker_service_opts opts;
    uint32_t slots; /* opts.slots of the next worker started (0: the default) */
    volatile sig_atomic_t stop;
    pthread_t thread;
    bool running;
    pthread_mutex_t mu;
    bool returned;
    int rc;
    char err[COMMON_ERR_LEN];
} harness;

static harness h;

static void *worker_thread(void *arg) {
    (void)arg;
    char e[COMMON_ERR_LEN] = "";
    int rc = worker_service_run(&h.opts, &h.compute, e);
    pthread_mutex_lock(&h.mu);
    h.rc = rc;
    memcpy(h.err, e, sizeof e);
    h.returned = true;
    pthread_mutex_unlock(&h.mu);
    return NULL;
}

static bool worker_returned(void) {
    pthread_mutex_lock(&h.mu);
    bool r = h.returned;
    pthread_mutex_unlock(&h.mu);
    return r;
}

static void bind_router(const char *endpoint) {
    h.router = zmq_socket(h.ctx, ZMQ_ROUTER);
    assert_non_null(h.router);
    int linger = 0;
    zmq_setsockopt(h.router, ZMQ_LINGER, &linger, sizeof linger);
    /* the port of a router closed a moment ago may take a little while to be free again */
    int64_t end = now_ms() + 3000;
    while (zmq_bind(h.router, endpoint) != 0) {
        if (now_ms() > end) {
            fail_msg("bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        }
        sleep_ms(20);
    }
    size_t n = sizeof h.endpoint;
    assert_int_equal(zmq_getsockopt(h.router, ZMQ_LAST_ENDPOINT, h.endpoint, &n), 0);
}

static void send_frame(const void *data, size_t len) {
    assert_true(zmq_send(h.router, h.peer, h.peer_len, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(h.router, data, len, 0) >= 0);
}

static void send_msg(const proto_msg *m) {
    uint8_t *buf = NULL;
    size_t len = 0;
    if (proto_encode(m, &buf, &len, err) != 0) {
        fail_msg("encode: %s", err);
    }
    send_frame(buf, len);
    free(buf);
}

static void send_ack(int64_t task, uint64_t epoch, proto_ack_status st) {
    proto_msg a = {.type = PROTO_ACK, .task = task, .epoch = epoch, .status = st};
    send_msg(&a);
}

/* Reads one frame from the worker (one message, or a bundle) into h.queued, kept so that the
 * last entry is the first message. */
static void recv_frame(void) {
    uint8_t peer[256];
    int pn = zmq_recv(h.router, peer, sizeof peer, 0);
    assert_true(pn > 0);
    zmq_msg_t f;
    zmq_msg_init(&f);
    assert_true(zmq_msg_recv(&f, h.router, 0) >= 0);
    assert_false(zmq_msg_more(&f)); /* one frame per message or bundle */
    memcpy(h.peer, peer, (size_t)pn);
    h.peer_len = (size_t)pn;
    proto_frame_iter fi;
    if (proto_frame_begin(&fi, zmq_msg_data(&f), zmq_msg_size(&f), err) != 0) {
        fail_msg("the worker sent a frame that is not a message or a bundle: %s", err);
    }
    proto_msg *in_order[MAX_QUEUED];
    size_t n = 0;
    const void *msg = NULL;
    size_t len = 0;
    int got;
    while ((got = proto_frame_next(&fi, &msg, &len, err)) > 0) {
        assert_true(n < MAX_QUEUED);
        if (proto_decode(msg, len, &in_order[n], err) != 0) {
            fail_msg("the worker sent a message that does not decode: %s", err);
        }
        n++;
    }
    if (got < 0) {
        fail_msg("the worker sent a malformed bundle: %s", err);
    }
    zmq_msg_close(&f);
    assert_true(h.n_queued == 0);
    for (size_t i = 0; i < n; i++) {
        h.queued[n - 1 - i] = in_order[i];
    }
    h.n_queued = n;
}

/* The next message from the worker, heartbeats included, within timeout_ms (NULL when none
 * came). */
static proto_msg *next_any(int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    while (h.n_queued == 0) {
        int64_t left = end - now_ms();
        if (left < 0) {
            return NULL;
        }
        zmq_pollitem_t it = {.socket = h.router, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, (long)left) > 0) {
            recv_frame();
        }
    }
    h.n_received++;
    return h.queued[--h.n_queued];
}

/* The next message from the worker that is not a heartbeat, within timeout_ms (NULL when none
 * came). Heartbeats are logged and acknowledged (stored) as a coordinator would. */
static proto_msg *next_msg(int timeout_ms) {
    int64_t end = now_ms() + timeout_ms;
    for (;;) {
        proto_msg *m = next_any((int)(end - now_ms()));
        if (m == NULL) {
            return NULL;
        }
        if (m->type != PROTO_HEARTBEAT) {
            return m;
        }
        if (h.n_beats < MAX_BEATS) {
            h.beats[h.n_beats++] = (beat){now_ms(), m->task, m->progress};
        }
        send_ack(m->task, m->epoch, PROTO_ACK_STORED);
        proto_msg_free(&m);
    }
}

static proto_msg *expect(proto_type t, int timeout_ms) {
    proto_msg *m = next_msg(timeout_ms);
    if (m == NULL) {
        fail_msg("no %s within %d ms", proto_type_name(t), timeout_ms);
    }
    if (m->type != t) {
        fail_msg("expected %s, got %s", proto_type_name(t), proto_type_name(m->type));
    }
    return m;
}

static void expect_ready(uint32_t credits) {
    proto_msg *m = expect(PROTO_READY, 2000);
    assert_int_equal(m->credits, credits);
    proto_msg_free(&m);
}

static void expect_nothing(int ms) {
    proto_msg *m = next_msg(ms);
    if (m != NULL) {
        fail_msg("unexpected %s (task %lld)", proto_type_name(m->type), (long long)m->task);
    }
}

static void send_welcome(void) {
    proto_msg w = {.type = PROTO_WELCOME, .heartbeat_ms = HB_MS, .lease_ms = LEASE_MS};
    send_msg(&w);
}

/* HELLO, WELCOME, READY 2. */
static void handshake(void) {
    proto_msg *m = expect(PROTO_HELLO, 3000);
    proto_msg_free(&m);
    send_welcome();
    expect_ready(2);
}

static void send_task(int64_t task, uint64_t epoch, const char *body) {
    proto_msg t = {.type = PROTO_TASK,
                   .task = task,
                   .epoch = epoch,
                   .attempt = 1,
                   .model_path = "/nowhere",
                   .model_sha256 = model_hex,
                   .spec = "{}",
                   .body = body,
                   .body_len = strlen(body)};
    send_msg(&t);
}

/* A RESULT of task/epoch whose digest is the sha256 of its body "result:<task>". */
static void check_result(proto_msg *m, int64_t task, uint64_t epoch) {
    assert_int_equal(m->type, PROTO_RESULT);
    assert_int_equal(m->task, task);
    assert_int_equal(m->epoch, epoch);
    char want[64], hex[65];
    snprintf(want, sizeof want, "result:%lld", (long long)task);
    assert_int_equal(m->body_len, strlen(want));
    assert_memory_equal(m->body, want, m->body_len);
    coordinator_digest_hex(m->body, m->body_len, hex);
    assert_string_equal(m->digest, hex);
}

static void start_with(worker_compute c) {
    h.compute = c;
    h.opts = (worker_service_opts){.endpoint = h.endpoint,
                                   /* inproc needs the router's context; tcp gets its own */
                                   .zmq_ctx = strncmp(h.endpoint, "inproc:", 7) == 0 ? h.ctx : NULL,
                                   .id = "w-test",
                                   .stop = &h.stop,
                                   .slots = h.slots,
                                   .verbose = getenv("WORKER_TEST_VERBOSE") != NULL ? 2 : 0};
    assert_int_equal(pthread_create(&h.thread, NULL, worker_thread, NULL), 0);
    h.running = true;
}

static void start_worker(void) {
    worker_compute c = {.run = tcomp_run,
                        .self = &tc,
                        .backend = "test",
                        .threads = 3,
                        .memory = 1234,
                        .n_devices = 2,
                        .devices = {0, 5},
                        .models = tcomp_models};
    start_with(c);
}

static int setup(void **state) {
    (void)state;
    pthread_mutex_lock(&tc.mu);
    tc.block = tc.progress_blocked = false;
    tc.releases = tc.progress_ms = tc.runs = 0;
    tc.fail = NULL;
    pthread_mutex_unlock(&tc.mu);
    memset(h.beats, 0, sizeof h.beats);
    h.n_beats = h.n_received = 0;
    h.stop = 0;
    h.slots = 0;
    h.returned = false;
    h.running = false;
    h.ctx = zmq_ctx_new();
    if (h.ctx == NULL) {
        return -1;
    }
    bind_router("tcp://127.0.0.1:*");
    return 0;
}

/* Stops the worker, acknowledging whatever it still sends (and welcoming the HELLO it says on
 * stopping), and joins it. */
static int teardown(void **state) {
    (void)state;
    if (h.running) {
        h.stop = 1;
        tcomp_release(1000);
        int64_t end = now_ms() + 5000;
        while (!worker_returned() && now_ms() < end && h.router != NULL) {
            proto_msg *m = next_msg(20);
            if (m != NULL && (m->type == PROTO_RESULT || m->type == PROTO_FAIL)) {
                send_ack(m->task, m->epoch, PROTO_ACK_STORED);
            }
            if (m != NULL && m->type == PROTO_HELLO) {
                send_welcome();
            }
            proto_msg_free(&m);
        }
        pthread_join(h.thread, NULL);
        h.running = false;
    }
    while (h.n_queued > 0) {
        proto_msg_free(&h.queued[--h.n_queued]);
    }
    if (h.router != NULL) {
        zmq_close(h.router);
        h.router = NULL;
    }
    zmq_ctx_term(h.ctx);
    h.ctx = NULL;
    return 0;
}

/* ---- tests ---- */

/* HELLO first with the computation's description; READY 2; a TASK gives its RESULT; the ACK
 * frees the slot, which the coordinator counts as free itself (no READY); the stop flag makes
 * the worker say HELLO again (no READY after it), and the service ends with 0 once that is
 * answered. */
static void test_hello_task_result(void **state) {
    (void)state;
    start_worker();
    proto_msg *m = expect(PROTO_HELLO, 3000);
    assert_int_equal(h.n_received, 1);
    assert_string_equal(m->worker, "w-test");
    assert_string_equal(m->backend, "test");
    assert_int_equal(m->threads, 3);
    assert_int_equal(m->memory, 1234);
    assert_int_equal(m->n_devices, 2);
    assert_int_equal(m->devices[1], 5);
    assert_int_equal(m->n_models, 1);
    assert_string_equal(m->models[0], model_hex);
    proto_msg_free(&m);
    expect_nothing(200); /* no heartbeat, no READY before WELCOME */
    assert_int_equal(h.n_received, 1);
    send_welcome();
    expect_ready(2);

    send_task(7, 3, "work-7");
    m = expect(PROTO_RESULT, 2000);
    check_result(m, 7, 3);
    proto_msg_free(&m);
    assert_int_equal(tc.ran[0], 7);
    expect_nothing(HB_MS); /* the slot is held until the ACK (not for 3 intervals: silence) */
    send_ack(7, 3, PROTO_ACK_STORED);

    /* idle: liveness heartbeats, task 0, and no READY: the ACK gave the slot back */
    expect_nothing(300);
    assert_true(h.n_beats >= 3);
    assert_int_equal(h.beats[h.n_beats - 1].task, 0);

    h.stop = 1;
    m = expect(PROTO_HELLO, 2000);
    proto_msg_free(&m);
    expect_nothing(100);
    assert_false(worker_returned()); /* its HELLO is answered first */
    send_welcome();
    int64_t end = now_ms() + 2000;
    while (!worker_returned() && now_ms() < end) {
        expect_nothing(20);
    }
    assert_true(worker_returned());
    assert_int_equal(h.rc, 0);
}

/* A failing computation: FAIL with its error text. */
static void test_fail_text(void **state) {
    (void)state;
    tc.fail = "boom: the model exploded (42)";
    start_worker();
    handshake();
    send_task(9, 1, "work-9");
    proto_msg *m = expect(PROTO_FAIL, 2000);
    assert_int_equal(m->task, 9);
    assert_int_equal(m->epoch, 1);
    assert_string_equal(m->error, "boom: the model exploded (42)");
    proto_msg_free(&m);
    send_ack(9, 1, PROTO_ACK_STORED);
    expect_nothing(200); /* the ACK gave the slot back: no READY */
}

/* Heartbeats every heartbeat_ms while the computation reports progress for 2 leases, with the
 * progress rising. */
static void test_heartbeats_follow_progress(void **state) {
    (void)state;
    tc.progress_ms = 2 * LEASE_MS + 100;
    start_worker();
    handshake();
    size_t before = h.n_beats;
    int64_t t0 = now_ms();
    send_task(11, 4, "work-11");
    proto_msg *m = expect(PROTO_RESULT, 3000);
    check_result(m, 11, 4);
    proto_msg_free(&m);
    int64_t took = now_ms() - t0;
    size_t n = 0;
    double last = 0;
    for (size_t i = before; i < h.n_beats; i++) {
        if (h.beats[i].task == 11) {
            assert_true(h.beats[i].progress >= last);
            last = h.beats[i].progress;
            n++;
        } else {
            assert_int_equal(h.beats[i].task, 0); /* nothing else is held */
        }
    }
    assert_true(took >= 2 * LEASE_MS);
    /* about took / HB_MS of them; half allows for a loaded machine */
    assert_true(n >= (size_t)(took / HB_MS / 2));
    assert_true(last > 0.5);
    send_ack(11, 4, PROTO_ACK_STORED);
    expect_nothing(100);
}

/* A computation that blocks without progress: heartbeats for at most a lease, then none at
 * all (not even idle ones) until it ends; its result still comes. */
static void test_no_heartbeats_when_stalled(void **state) {
    (void)state;
    tc.block = true;
    start_worker();
    handshake();
    int64_t t0 = now_ms();
    send_task(12, 2, "work-12");
    expect_nothing(3 * LEASE_MS);
    size_t early = 0, late = 0;
    for (size_t i = 0; i < h.n_beats; i++) {
        if (h.beats[i].at_ms > t0 + LEASE_MS + 2 * HB_MS) {
            late++;
        } else if (h.beats[i].task == 12) {
            early++;
        }
    }
    assert_true(early >= 1);
    assert_int_equal(late, 0);
    tcomp_release(1);
    proto_msg *m = expect(PROTO_RESULT, 2000);
    check_result(m, 12, 2);
    proto_msg_free(&m);
    send_ack(12, 2, PROTO_ACK_STORED);
    expect_nothing(100);
}

/* The same with progress while blocked: heartbeats go on past the lease. */
static void test_heartbeats_while_blocked_with_progress(void **state) {
    (void)state;
    tc.block = true;
    tc.progress_blocked = true;
    start_worker();
    handshake();
    int64_t t0 = now_ms();
    send_task(13, 1, "work-13");
    expect_nothing(3 * LEASE_MS);
    size_t late = 0;
    for (size_t i = 0; i < h.n_beats; i++) {
        late += h.beats[i].at_ms > t0 + LEASE_MS + 2 * HB_MS && h.beats[i].task == 13;
    }
    assert_true(late >= 3);
    tcomp_release(1);
    proto_msg *m = expect(PROTO_RESULT, 2000);
    check_result(m, 13, 1);
    proto_msg_free(&m);
}

/* A RESULT the coordinator never acknowledged (its socket closed) is sent again, same task,
 * epoch and digest, after the socket is bound again on the same port and the worker reconnected
 * with a fresh HELLO: READY first for the one free slot, then the RESULT, whose ACK (after that
 * READY) gives its slot back. */
static void test_reconnect_resends_result(void **state) {
    (void)state;
    tc.block = true;
    start_worker();
    handshake();
    send_task(21, 6, "work-21");
    tcomp_wait_runs(1);
    expect_nothing(2 * HB_MS); /* a heartbeat or two, acknowledged */
    char endpoint[128];
    snprintf(endpoint, sizeof endpoint, "%s", h.endpoint);
    zmq_close(h.router);
    h.router = NULL;
    tcomp_release(1); /* its RESULT goes nowhere */
    sleep_ms(300);
    bind_router(endpoint);
    int64_t t0 = now_ms();
    proto_msg *m = expect(PROTO_HELLO, 5000);
    assert_true(now_ms() - t0 <= 2000); /* the first backoff is 1 s */
    assert_string_equal(m->worker, "w-test");
    proto_msg_free(&m);
    send_welcome();
    expect_ready(1);
    m = expect(PROTO_RESULT, 2000);
    check_result(m, 21, 6);
    proto_msg_free(&m);
    send_ack(21, 6, PROTO_ACK_DUPLICATE);
    expect_nothing(200);
    assert_int_equal(tcomp_runs(), 1); /* sent again, not computed again */
}

/* DROP of a waiting task: it never runs and its slot is asked for again. DROP of the running
 * task: its output is discarded when it ends. */
static void test_drop(void **state) {
    (void)state;
    tc.block = true;
    start_worker();
    handshake();
    send_task(31, 1, "work-31");
    send_task(32, 1, "work-32");
    tcomp_wait_runs(1);
    proto_msg drop = {.type = PROTO_DROP, .task = 32, .epoch = 1};
    send_msg(&drop);
    expect_ready(1);
    drop.task = 31;
    send_msg(&drop);
    expect_nothing(100);
    tcomp_release(1);
    expect_ready(1); /* 31 ended: discarded, its slot free */
    expect_nothing(200);
    assert_int_equal(tcomp_runs(), 1);
    assert_int_equal(tc.ran[0], 31);
    tcomp_release(1);
    send_task(33, 2, "work-33");
    proto_msg *m = expect(PROTO_RESULT, 2000);
    check_result(m, 33, 2);
    proto_msg_free(&m);
}

/* A worker with 3 slots (--prefetch 3) asks for 3 credits and runs the tasks it holds one after
 * another; a task beyond four times its slots (a coordinator that ignores credits) fails at
 * once, and the 12 held all deliver. */
static void test_prefetch_slots(void **state) {
    (void)state;
    tc.block = true;
    h.slots = 3;
    start_worker();
    proto_msg *m = expect(PROTO_HELLO, 3000);
    proto_msg_free(&m);
    send_welcome();
    expect_ready(3);
    for (int i = 0; i < 12; i++) {
        send_task(100 + i, 1, "work");
    }
    send_task(112, 1, "work");
    m = expect(PROTO_FAIL, 2000);
    assert_int_equal(m->task, 112);
    assert_non_null(strstr(m->error, "more tasks than its credits"));
    proto_msg_free(&m);
    tcomp_release(12);
    for (int i = 0; i < 12; i++) {
        m = expect(PROTO_RESULT, 2000);
        assert_int_equal(m->task, 100 + i);
        proto_msg_free(&m);
    }
    assert_int_equal(tcomp_runs(), 12);
}

/* ---- credits (PROTOCOL.md, "Credits") ---- */

static void set_block(bool block) {
    pthread_mutex_lock(&tc.mu);
    tc.block = block;
    pthread_mutex_unlock(&tc.mu);
}

/* With nothing held and the coordinator holding both credits (as the worker counts them): a
 * TASK, its DROP while it runs, and its end ask for exactly the one slot it took (READY 1). A
 * worker that counted one credit fewer asks for 2, one that counted more asks for none. */
static void expect_both_credits_granted(int64_t task) {
    set_block(true);
    int runs = tcomp_runs();
    send_task(task, 1, "probe");
    tcomp_wait_runs(runs + 1);
    proto_msg drop = {.type = PROTO_DROP, .task = task, .epoch = 1};
    send_msg(&drop);
    expect_nothing(50); /* still running: its slot is not free yet */
    tcomp_release(1);
    expect_ready(1);
}

/* No READY after the ACK of a RESULT: the coordinator counts that slot free itself, and the
 * worker counts it as granted (so a later READY asks for no more than is free). READY after a
 * DROP of a waiting task. */
static void test_ack_returns_credit(void **state) {
    (void)state;
    tc.block = true;
    start_worker();
    handshake();
    send_task(71, 1, "work-71");
    send_task(72, 1, "work-72");
    tcomp_wait_runs(1);
    proto_msg drop = {.type = PROTO_DROP, .task = 72, .epoch = 1};
    send_msg(&drop);
    expect_ready(1);
    tcomp_release(1);
    proto_msg *m = expect(PROTO_RESULT, 2000);
    check_result(m, 71, 1);
    proto_msg_free(&m);
    send_ack(71, 1, PROTO_ACK_STORED);
    expect_nothing(200);
    expect_both_credits_granted(73);
    /* a lease_lost ACK of a RESULT gives the slot back too */
    set_block(false);
    send_task(74, 1, "work-74");
    m = expect(PROTO_RESULT, 2000);
    proto_msg_free(&m);
    send_ack(74, 1, PROTO_ACK_LEASE_LOST);
    expect_nothing(200);
    expect_both_credits_granted(75);
}

/* After a reconnect with both slots holding outputs there is nothing to ask for, so the
 * RESULTs go before any READY: the coordinator gives nothing back for them, and each ACK is
 * followed by a READY for its slot. */
static void test_full_slots_after_reconnect(void **state) {
    (void)state;
    tc.block = true;
    start_worker();
    handshake();
    send_task(81, 1, "work-81");
    send_task(82, 1, "work-82");
    tcomp_wait_runs(1);
    expect_nothing(2 * HB_MS);
    char endpoint[128];
    snprintf(endpoint, sizeof endpoint, "%s", h.endpoint);
    zmq_close(h.router);
    h.router = NULL;
    tcomp_release(2); /* both finish while no coordinator listens */
    tcomp_wait_runs(2);
    sleep_ms(300);
    bind_router(endpoint);
    proto_msg *m = expect(PROTO_HELLO, 5000);
    proto_msg_free(&m);
    send_welcome();
    m = expect(PROTO_RESULT, 2000); /* not a READY: no slot is free */
    check_result(m, 81, 1);
    proto_msg_free(&m);
    m = expect(PROTO_RESULT, 2000);
    check_result(m, 82, 1);
    proto_msg_free(&m);
    send_ack(81, 1, PROTO_ACK_STORED);
    expect_ready(1);
    send_ack(82, 1, PROTO_ACK_STORED);
    expect_ready(1);
    expect_nothing(100);
    expect_both_credits_granted(83);
}

/* A task leased again while its RESULT awaits the ACK: nothing more is asked for (it holds the
 * credits of both leases, each given back by the ACK of its report), the output goes again for
 * the new epoch once the old one is answered lease_lost, and it is computed once. */
static void test_leased_again_while_sent(void **state) {
    (void)state;
    start_worker();
    handshake();
    send_task(91, 1, "work-91");
    proto_msg *m = expect(PROTO_RESULT, 2000);
    check_result(m, 91, 1);
    proto_msg_free(&m);
    send_task(91, 2, "work-91");
    expect_nothing(40); /* less than the silence limit of 3 intervals */
    send_ack(91, 1, PROTO_ACK_LEASE_LOST);
    m = expect(PROTO_RESULT, 100);
    check_result(m, 91, 2);
    proto_msg_free(&m);
    send_ack(91, 2, PROTO_ACK_STORED);
    expect_nothing(100);
    assert_int_equal(tcomp_runs(), 1);
    expect_both_credits_granted(92);
}

/* Lease lost in a heartbeat's ACK: a waiting task is forgotten at once. */
static void test_lease_lost_heartbeat(void **state) {
    (void)state;
    tc.block = true;
    tc.progress_blocked = true; /* heartbeats go on while 35 runs */
    start_worker();
    handshake();
    send_task(35, 1, "work-35");
    tcomp_wait_runs(1);
    send_task(36, 1, "work-36");
    /* answer the next heartbeat of 36 with lease_lost */
    int64_t end = now_ms() + 2000;
    bool answered = false;
    while (!answered && now_ms() < end) {
        proto_msg *m = next_any(50);
        if (m == NULL) {
            continue;
        }
        assert_int_equal(m->type, PROTO_HEARTBEAT);
        answered = m->task == 36;
        send_ack(m->task, m->epoch, answered ? PROTO_ACK_LEASE_LOST : PROTO_ACK_STORED);
        proto_msg_free(&m);
    }
    assert_true(answered);
    expect_ready(1);
    tcomp_release(2);
    proto_msg *m = expect(PROTO_RESULT, 2000);
    check_result(m, 35, 1);
    proto_msg_free(&m);
    expect_nothing(100);
    assert_int_equal(tcomp_runs(), 1);
}

/* The stop flag: HELLO again, and once it is welcomed the waiting task comes back with RETURN
 * (not a FAIL: it is no attempt), no READY follows, the running task's RESULT is sent, and the
 * service returns 0 once it is acknowledged. */
static void test_stop_after_ack(void **state) {
    (void)state;
    tc.block = true;
    start_worker();
    handshake();
    send_task(41, 1, "work-41");
    send_task(42, 1, "work-42");
    tcomp_wait_runs(1);
    h.stop = 1;
    /* HELLO again, so that the coordinator holds no credit for it and gets none back */
    proto_msg *m = expect(PROTO_HELLO, 2000);
    proto_msg_free(&m);
    expect_nothing(100); /* nothing before WELCOME */
    send_welcome();
    m = expect(PROTO_RETURN, 2000);
    assert_int_equal(m->task, 42);
    assert_int_equal(m->epoch, 1);
    proto_msg_free(&m);
    send_ack(42, 1, PROTO_ACK_STORED);
    expect_nothing(100); /* no READY */
    assert_false(worker_returned());
    tcomp_release(1);
    m = expect(PROTO_RESULT, 2000);
    check_result(m, 41, 1);
    proto_msg_free(&m);
    assert_false(worker_returned());
    send_ack(41, 1, PROTO_ACK_STORED);
    int64_t end = now_ms() + 2000;
    while (!worker_returned() && now_ms() < end) {
        expect_nothing(10);
    }
    assert_true(worker_returned());
    assert_int_equal(h.rc, 0);
    assert_int_equal(tcomp_runs(), 1);
}

/* Stopping with a coordinator that does not acknowledge the last result: the service still
 * returns 0, after about 3 heartbeat intervals. A task that arrives while stopping is
 * returned at once. */
static void test_stop_silent_coordinator(void **state) {
    (void)state;
    tc.block = true;
    start_worker();
    handshake();
    send_task(44, 1, "work-44");
    tcomp_wait_runs(1);
    h.stop = 1;
    send_task(45, 1, "work-45");
    proto_msg *m = expect(PROTO_HELLO, 2000);
    proto_msg_free(&m);
    send_welcome();
    m = expect(PROTO_RETURN, 2000);
    assert_int_equal(m->task, 45);
    proto_msg_free(&m);
    send_ack(45, 1, PROTO_ACK_STORED);
    tcomp_release(1);
    m = expect(PROTO_RESULT, 2000);
    check_result(m, 44, 1);
    proto_msg_free(&m);
    int64_t t0 = now_ms();
    int64_t end = t0 + 3000;
    while (!worker_returned() && now_ms() < end) {
        sleep_ms(10); /* nothing read, nothing acknowledged */
    }
    assert_true(worker_returned());
    assert_int_equal(h.rc, 0);
    assert_true(now_ms() - t0 < 1500);
}

/* Frames no coordinator would send, and some that a confused one might: none crashes the worker
 * or changes what it holds; an ERROR makes it say hello again; work goes on. */
static void test_malformed_frames(void **state) {
    (void)state;
    start_worker();
    handshake();
    static const uint8_t c1[] = {0xc1};
    static const uint8_t amplifier[] = {0xdd, 0x05, 0xf5, 0xe1, 0x00};
    static const uint8_t deep[] = {0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x91, 0x90};
    static const uint8_t map_bad_str[] = {0x81, 0xa1, 't', 0xdb, 0xff, 0xff, 0xff, 0xff};
    send_frame("", 0);
    send_frame(c1, sizeof c1);
    send_frame(amplifier, sizeof amplifier);
    send_frame(deep, sizeof deep);
    send_frame(map_bad_str, sizeof map_bad_str);
    send_frame("not msgpack at all", 18);
    /* a valid TASK, truncated at every length */
    proto_msg t = {.type = PROTO_TASK,
                   .task = 5,
                   .epoch = 1,
                   .attempt = 1,
                   .model_path = "/m",
                   .model_sha256 = model_hex,
                   .spec = "{}",
                   .body = "b",
                   .body_len = 1};
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(proto_encode(&t, &buf, &len, err), 0);
    for (size_t n = 0; n < len; n++) {
        send_frame(buf, n);
    }
    /* with a byte after it */
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0xc0;
    send_frame(longer, len + 1);
    free(longer);
    free(buf);
    /* two frames in one message */
    assert_true(zmq_send(h.router, h.peer, h.peer_len, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(h.router, "a", 1, ZMQ_SNDMORE) >= 0);
    assert_true(zmq_send(h.router, "b", 1, 0) >= 0);
    /* well-formed, but not for a worker, or about nothing it holds */
    proto_msg hello = {.type = PROTO_HELLO, .worker = "x", .backend = "cpu"};
    send_msg(&hello);
    send_ack(99, 1, PROTO_ACK_STORED);
    proto_msg drop = {.type = PROTO_DROP, .task = 98, .epoch = 3};
    send_msg(&drop);
    send_welcome(); /* while welcomed already: ignored */
    expect_nothing(300);
    assert_int_equal(tcomp_runs(), 0);

    proto_msg e = {.type = PROTO_ERROR, .error = "ready: say hello first"};
    send_msg(&e);
    handshake(); /* a fresh HELLO, and the credits asked for again */

    send_task(51, 8, "work-51");
    proto_msg *m = expect(PROTO_RESULT, 2000);
    check_result(m, 51, 8);
    proto_msg_free(&m);
    assert_int_equal(tcomp_runs(), 1);
}

/* The same service on an inproc endpoint of a context it is given (as `chesslens run` may
 * embed it). */
static void test_inproc(void **state) {
    (void)state;
    zmq_close(h.router);
    h.router = NULL;
    bind_router("inproc://worker-service-test");
    start_worker();
    handshake();
    send_task(61, 2, "work-61");
    proto_msg *m = expect(PROTO_RESULT, 2000);
    check_result(m, 61, 2);
    proto_msg_free(&m);
    send_ack(61, 2, PROTO_ACK_STORED);
    expect_nothing(100);
}

/* ---- the real executor ---- */

static const char *tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

static const char *const exec_sweep =
    "{\"name\":\"svc\",\"model\":\"m\",\"dataset\":\"d\",\"games\":[0,6],\"analyses\":["
    "{\"kind\":\"patch\",\"patch\":\"resid_pre\",\"cutoffs\":[10],"
    "\"corrupt\":{\"position\":\"last\",\"with\":\"each_legal_alternative\"},"
    "\"metric\":{\"kind\":\"logit_diff\",\"tokens\":[\"clean_top\",\"corrupt_top\"],"
    "\"normalize\":true}},"
    "{\"kind\":\"predictions\",\"top_k\":3}]}";

static int progress_calls;
static double last_fraction;

/* A progress callback that checks the fractions rise within [0, 1]. */
static void record_progress(void *ctx, double f) {
    (void)ctx;
    assert_true(f >= 0 && f <= 1 && f >= last_fraction);
    last_fraction = f;
    progress_calls++;
}

/* A patch task of many pairs, run as one batch: progress after the base runs and each patched
 * request (the first report, two base runs, at least one request, the end), and each pair's
 * values those of the pair run alone (a work of that one pair), to float rounding. */
static void check_patch_chunks(worker_executor *ex, const coordinator_work *w,
                               const coordinator_patch_batch *b) {
    assert_true(progress_calls >= 5);
    assert_int_equal(b->n, w->n_pairs);
    for (size_t i = 0; i < w->n_pairs; i++) {
        coordinator_work one = *w;
        one.n_pairs = 1;
        one.pairs = &w->pairs[i];
        worker_output *o = NULL;
        if (worker_execute(ex, w->params, &one, &o, err) != 0) {
            fail_msg("pair %zu alone: %s", i, err);
        }
        const interp_patch_result *a = o->results.patch->result[0], *r = b->result[i];
        assert_string_equal(o->results.patch->metric[0], b->metric[i]);
        size_t numel = model_shape_numel(&r->shape);
        assert_int_equal(model_shape_numel(&a->shape), numel);
        for (size_t k = 0; k < numel; k++) {
            if (isnan(r->values[k]) || isnan(a->values[k])) {
                assert_true(isnan(r->values[k]) && isnan(a->values[k]));
            } else if (fabsf(r->values[k] - a->values[k]) > 1e-4f * (1 + fabsf(a->values[k]))) {
                fail_msg("pair %zu value %zu: %g in the chunk, %g alone", i, k, r->values[k],
                         a->values[k]);
            }
        }
        worker_output_destroy(&o);
    }
}

/* Every task of a planned sweep runs through the service on worker_compute_executor; each
 * RESULT body equals the executor's own run of the same work, encoded here. A model whose
 * digest is not the task's fails the task. */
static void test_executor_compute(void **state) {
    (void)state;
    char path[512], side[600];
    snprintf(path, sizeof path, "%s/service-%ld.db", tmpdir(), (long)getpid());
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", path);
    remove(side);
    coordinator_store *store = NULL;
    coordinator_spec *spec = NULL;
    int64_t ds = 0, sweep = 0;
    coordinator_import_stats st = {0};
    if (coordinator_store_open(&store, path, 0, err) != 0 ||
        coordinator_dataset_create(store, "d", "test", false, &ds, err) != 0 ||
        coordinator_games_generate(store, ds, 6, 7, 40, &st, NULL, err) != 0 ||
        coordinator_sweep_submit(store, exec_sweep, strlen(exec_sweep), NULL, 0, &sweep, NULL,
                                 err) != 0 ||
        coordinator_spec_parse(&spec, exec_sweep, strlen(exec_sweep), err) != 0 ||
        coordinator_plan_sweep(store, sweep, spec, NULL, NULL, err) != 0) {
        fail_msg("store: %s", err);
    }
    coordinator_lease *l = NULL;
    size_t n = 0;
    assert_int_equal(coordinator_tasks_claim(store, "w", 100, 0, 1, &l, &n, err), 0);
    assert_true(n >= 2);
    char sha[65];
    assert_int_equal(coordinator_digest_file_hex(MODEL_DIR "/model.safetensors", sha, err), 0);
    worker_executor *ex = NULL;
    if (worker_executor_new(&ex, MODEL_DIR, "cpu", 1, err) != 0) {
        fail_msg("executor: %s", err);
    }

    /* Expected results first: the harness answers no heartbeat while it computes. */
    assert_true(n <= 8);
    uint8_t *bodies[8] = {NULL}, *wants[8] = {NULL};
    size_t body_lens[8] = {0}, want_lens[8] = {0};
    bool kinds[2] = {false, false};
    size_t most_pairs = 0;
    for (size_t i = 0; i < n; i++) {
        coordinator_work *w = NULL;
        if (coordinator_work_load(store, spec, l[i].job_id, l[i].body, l[i].body_len, &w, err) !=
            0) {
            fail_msg("work: %s", err);
        }
        kinds[w->kind == COORDINATOR_ANALYSIS_PATCH] = true;
        worker_output *o = NULL;
        assert_int_equal(coordinator_work_encode(w, &bodies[i], &body_lens[i], err), 0);
        progress_calls = 0;
        last_fraction = -1;
        worker_executor_set_progress(ex, record_progress, NULL);
        if (worker_execute(ex, w->params, w, &o, err) != 0 ||
            coordinator_results_encode(&o->results, &wants[i], &want_lens[i], err) != 0) {
            fail_msg("execute: %s", err);
        }
        worker_executor_set_progress(ex, NULL, NULL);
        assert_true(last_fraction == 1.0);
        if (w->kind == COORDINATOR_ANALYSIS_PATCH) {
            check_patch_chunks(ex, w, o->results.patch);
            most_pairs = w->n_pairs > most_pairs ? w->n_pairs : most_pairs;
        } else {
            assert_true(progress_calls >= 2); /* each batch of games, then the end */
        }
        worker_output_destroy(&o);
        coordinator_work_destroy(&w);
    }
    assert_true(kinds[0] && kinds[1]);
    assert_true(most_pairs > 32); /* a batch of many pairs */

    worker_compute c = {0};
    assert_int_equal(worker_compute_executor(&c, "gpu", 1, 1, err), COMMON_ERR_UNSUPPORTED);
    assert_int_equal(worker_compute_executor(&c, "cpu", 1, 1, err), 0);
    start_with(c);
    proto_msg *m = expect(PROTO_HELLO, 3000);
    assert_string_equal(m->backend, "cpu");
    assert_int_equal(m->n_models, 0);
    proto_msg_free(&m);
    send_welcome();
    expect_ready(2);
    for (size_t i = 0; i < n; i++) {
        proto_msg t = {.type = PROTO_TASK,
                       .task = l[i].task_id,
                       .epoch = l[i].epoch,
                       .attempt = 1,
                       .model_path = MODEL_DIR,
                       .model_sha256 = sha,
                       .spec = exec_sweep,
                       .body = bodies[i],
                       .body_len = body_lens[i]};
        send_msg(&t);
        m = expect(PROTO_RESULT, 20000);
        assert_int_equal(m->task, l[i].task_id);
        assert_int_equal(m->epoch, l[i].epoch);
        assert_int_equal(m->body_len, want_lens[i]);
        assert_memory_equal(m->body, wants[i], want_lens[i]);
        char hex[65];
        coordinator_digest_hex(m->body, m->body_len, hex);
        assert_string_equal(m->digest, hex);
        proto_msg_free(&m);
        send_ack(l[i].task_id, l[i].epoch, PROTO_ACK_STORED);
        free(bodies[i]);
        free(wants[i]);
    }

    /* the same work under another digest: refused before anything loads */
    coordinator_work *w = NULL;
    assert_int_equal(
        coordinator_work_load(store, spec, l[0].job_id, l[0].body, l[0].body_len, &w, err), 0);
    uint8_t *body = NULL;
    size_t body_len = 0;
    assert_int_equal(coordinator_work_encode(w, &body, &body_len, err), 0);
    proto_msg t = {.type = PROTO_TASK,
                   .task = l[0].task_id,
                   .epoch = l[0].epoch + 1,
                   .attempt = 2,
                   .model_path = MODEL_DIR,
                   .model_sha256 = model_hex,
                   .spec = exec_sweep,
                   .body = body,
                   .body_len = body_len};
    send_msg(&t);
    m = expect(PROTO_FAIL, 5000);
    assert_non_null(strstr(m->error, "sha256"));
    proto_msg_free(&m);
    send_ack(l[0].task_id, l[0].epoch + 1, PROTO_ACK_STORED);
    /* a body that is not a work body */
    t.model_sha256 = sha;
    t.body = "junk";
    t.body_len = 4;
    send_msg(&t);
    m = expect(PROTO_FAIL, 5000);
    proto_msg_free(&m);
    free(body);
    coordinator_work_destroy(&w);

    teardown(NULL);
    setup(NULL);
    /* the model the tasks loaded, for the next HELLO */
    const char *models[PROTO_MAX_MODELS] = {NULL};
    assert_int_equal(h.compute.models(h.compute.self, models), 1);
    assert_string_equal(models[0], sha);
    worker_compute_destroy(&h.compute);
    worker_compute_destroy(&h.compute); /* zeroed: a no-op */

    worker_executor_destroy(&ex);
    coordinator_leases_free(l, n);
    coordinator_spec_destroy(&spec);
    coordinator_store_close(&store);
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    snprintf(side, sizeof side, "%s-shm", path);
    remove(side);
}

/* ---- the fault wrapper ---- */

static void count_progress(void *ctx, double f) {
    (void)ctx;
    (void)f;
    progress_calls++;
}

static void test_faulty(void **state) {
    (void)state;
    static const char *const bad[] = {"fail_task",
                                      "fail_task=",
                                      "fail_task=0",
                                      "fail_task=-3",
                                      "fail_task=x",
                                      "bogus=1",
                                      "sleep_ms=-1",
                                      "sleep_ms=4000000",
                                      "fail_task=3,",
                                      ",fail_task=3",
                                      "fail_task=3,,sleep_ms=1",
                                      "=3",
                                      "flaky=3",
                                      "flaky=3:0",
                                      "flaky=x:2",
                                      "flaky=3:",
                                      "flaky=3:2:1"};
    worker_compute inner = {0}, f = {0};
    worker_compute_noop(&inner);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(worker_compute_faulty(&f, &inner, bad[i], err), COMMON_ERR_INVALID);
        assert_non_null(inner.run); /* left as it was */
    }
    assert_int_equal(worker_compute_faulty(&f, &inner,
                                           "fail_task=3,sleep_ms=30,fail_task=8,"
                                           "abort_task=5,hang_task=6,flaky=9:2",
                                           err),
                     0);
    assert_null(inner.run);
    assert_string_equal(f.backend, "noop");
    worker_task_in t = {.task = 3, .epoch = 1, .spec = "{}", .body = "", .body_len = 0};
    uint8_t *out = NULL;
    size_t len = 0;
    uint64_t rows = 7;
    int64_t t0 = now_ms();
    progress_calls = 0;
    assert_int_equal(f.run(f.self, &t, count_progress, NULL, &out, &len, &rows, err),
                     COMMON_ERR_INVALID);
    assert_string_equal(err, "injected failure");
    assert_true(now_ms() - t0 >= 30);
    assert_true(progress_calls >= 2);
    t.task = 4;
    assert_int_equal(f.run(f.self, &t, count_progress, NULL, &out, &len, &rows, err), 0);
    assert_int_equal(rows, 0);
    coordinator_results_msg *r = NULL;
    assert_int_equal(coordinator_results_decode(out, len, &r, err), 0); /* empty results */
    coordinator_results_msg_free(&r);
    free(out);
    out = NULL;
    t.task = 8;
    assert_int_equal(f.run(f.self, &t, count_progress, NULL, &out, &len, &rows, err),
                     COMMON_ERR_INVALID);
    /* abort_task: the process dies with SIGABRT */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        t.task = 5;
        f.run(f.self, &t, count_progress, NULL, &out, &len, &rows, err);
        _exit(0);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    /* hang_task: still running after a while, without progress */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        t.task = 6;
        f.run(f.self, &t, count_progress, NULL, &out, &len, &rows, err);
        _exit(0);
    }
    sleep_ms(300);
    assert_int_equal(waitpid(pid, &status, WNOHANG), 0);
    kill(pid, SIGKILL);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    worker_compute_destroy(&f);
    assert_null(f.run);
}

int main(void) {
    pthread_mutex_init(&tc.mu, NULL);
    pthread_cond_init(&tc.cv, NULL);
    pthread_mutex_init(&h.mu, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_task_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fail_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeats_follow_progress, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_heartbeats_when_stalled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeats_while_blocked_with_progress, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_resends_result, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_lost_heartbeat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_returns_credit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_slots_after_reconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prefetch_slots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leased_again_while_sent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_after_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_silent_coordinator, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inproc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_executor_compute, setup, teardown),
        cmocka_unit_test(test_faulty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
