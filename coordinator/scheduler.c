/*
 * scheduler: the coordinator's state machine (coordinator/scheduler.h). The store holds every
 * task's truth; the scheduler's memory holds only what a restart may lose without harm: which
 * peers are workers, their credits, and which leases it handed to whom (for DROP and for the
 * workers list). Every decision that matters (a lease, a completion, a failure, an expiry) is a
 * store operation inside the batch's transaction, and every frame it answers with waits in the
 * outbox until that transaction commits.
 *
 * Credits (proto/PROTOCOL.md, "Credits"): a worker's credits are the free slots it asked for
 * with READY and that no TASK has used yet. The ACK of a RESULT or FAIL gives its slot back
 * as if a READY of 1 came, so the same batch can send the ACK and the next TASK without the
 * worker's READY in between; but only once the worker has sent a READY since its HELLO, since
 * a HELLO clears its credits and a worker that stops says HELLO and never READY again.
 */
#include "coordinator/scheduler.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coordinator/store_int.h"
#include "coordinator/wire.h"
#include "proto/proto.h"
#include "proto/reply.h"

#define MS 1000000LL
/* How often a worker with credits and nothing to do is offered tasks again (new sweeps,
 * backoffs that ended). */
#define IDLE_RECHECK_NS (100 * MS)
/* Dead tasks a status reply lists at most. */
#define STATUS_MAX_DEAD 1000
/* STATUS and LIST count the task table, which costs in proportion to the tasks stored (about
 * half a microsecond each). A count is reused while it is younger than STATUS_REUSE times what
 * it took, so that clients following sweeps (`chesslens wait` asks twice a second) take at most
 * about 1/STATUS_REUSE of the coordinator's time however large the store; a count that took
 * less than opts.status_fresh_ns is never reused, and a submission, a cancel or a retry makes
 * the next count fresh. */
#define STATUS_REUSE 10

/* A lease this scheduler handed out. */
typedef struct sched_lease {
    int64_t task_id;
    uint64_t epoch;
    int64_t sweep_id;
    size_t analysis; /* the task's job's index in its sweep's spec */
    int64_t deadline_ns;
    char key[64];
} sched_lease;

typedef struct sched_worker {
    uint8_t peer[COORDINATOR_PEER_MAX];
    size_t peer_len;
    char *id;
    char backend[32];
    size_t n_devices;
    int32_t devices[PROTO_MAX_DEVICES];
    uint32_t threads;
    uint32_t credits; /* free slots it asked for that no TASK used yet (<= max_credits) */
    /* A READY came since its HELLO: the ACK of each of its RESULTs and FAILs returns a credit. */
    bool returns;
    int64_t last_seen_ns;
    uint64_t tasks_done;
    /* The model it most likely holds loaded (the last one it was sent, else the first its
     * HELLO named): its tasks are leased to it first, so that a worker seldom loads another. */
    char model_sha256[65];
    size_t n_leases, cap_leases;
    sched_lease *leases;
    struct sched_worker *next;
} sched_worker;

struct sched_worker;

/* One slot of the lease index (task 0: free). */
typedef struct lease_slot {
    int64_t task;
    struct sched_worker *w;
} lease_slot;

/* What dispatching a sweep's tasks needs, read once per sweep. */
typedef struct sched_sweep {
    int64_t id;
    char *spec_text;
    coordinator_spec *spec;
    char *model_path;
    char model_sha256[65];
    struct sched_sweep *next;
} sched_sweep;

struct coordinator_sched {
    coordinator_store *store;
    coordinator_sched_opts o;
    int64_t lease_ns, worker_timeout_ns, backoff_base_ns, backoff_cap_ns;
    uint64_t rng;
    bool open;                    /* a batch is open */
    uint64_t batch_first_message; /* stats.messages_in when the open batch began */
    bool started;                 /* the leases found at creation were re-armed or requeued */
    int64_t created_ns;           /* when the scheduler was made (the re-arm deadline's base) */
    int64_t next_wake;
    sched_worker *workers;
    size_t rotate;     /* the worker dispatch starts with, so that no worker starves */
    lease_slot *index; /* [index_cap]: task id -> the worker listing its lease */
    size_t index_cap, index_n;
    /* No leased task in the store has a deadline before this (ns): the expiry query runs only
     * once the clock passes it. INT64_MIN: not known (at start), so the first tick runs it. */
    int64_t expire_from;
    sched_sweep *sweeps;
    /* the last count of every sweep's tasks (STATUS_REUSE): taken at counts_at on the clock of
     * the scheduler's inputs, costing counts_cost_ns of real time (0: not to be reused) */
    coordinator_sweep_info *counts;
    size_t n_counts;
    int64_t counts_at, counts_cost_ns;
    coordinator_send *out;
    size_t n_out, cap_out;
    coordinator_sched_stats stats;
};

/* ---- small helpers ---- */

static uint64_t next_random(coordinator_sched *s) {
    s->rng = s->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return s->rng >> 11;
}

/* Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))). */
static int64_t backoff_ns(coordinator_sched *s, uint32_t attempt) {
    int shift = attempt > 1 ? (int)(attempt - 1) : 0;
    int64_t ceiling = shift > 30 ? s->backoff_cap_ns : s->backoff_base_ns << shift;
    if (ceiling > s->backoff_cap_ns || ceiling <= 0) {
        ceiling = s->backoff_cap_ns;
    }
    return ceiling > 0 ? (int64_t)(next_random(s) % (uint64_t)ceiling) : 0;
}

static int push_frame(coordinator_sched *s, const uint8_t *peer, size_t peer_len, uint8_t *data,
                      size_t len, char *err) {
    if (s->n_out == s->cap_out) {
        size_t cap = s->cap_out > 0 ? 2 * s->cap_out : 64;
        coordinator_send *o = realloc(s->out, cap * sizeof *o);
        if (o == NULL) {
            free(data);
            return common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
        }
        s->out = o;
        s->cap_out = cap;
    }
    coordinator_send *f = &s->out[s->n_out++];
    memcpy(f->peer, peer, peer_len);
    f->peer_len = peer_len;
    f->data = data;
    f->len = len;
    return 0;
}

/* Encodes m and queues it for peer. An encoding error is a bug of this file, reported as such. */
static int send_msg(coordinator_sched *s, const uint8_t *peer, size_t peer_len, const proto_msg *m,
                    char *err) {
    uint8_t *data = NULL;
    size_t len = 0;
    char e[COMMON_ERR_LEN];
    int rc = proto_encode(m, &data, &len, e);
    if (rc != 0) {
        return common_fail(err, rc, "scheduler: encode %s: %s", proto_type_name(m->type), e);
    }
    return push_frame(s, peer, peer_len, data, len, err);
}

static int send_error(coordinator_sched *s, const uint8_t *peer, size_t peer_len, uint64_t req,
                      const char *text, char *err) {
    proto_msg m = {.type = PROTO_ERROR, .req = req, .error = text};
    return send_msg(s, peer, peer_len, &m, err);
}

static int send_ack(coordinator_sched *s, const uint8_t *peer, size_t peer_len, int64_t task,
                    uint64_t epoch, proto_ack_status status, char *err) {
    proto_msg m = {.type = PROTO_ACK, .task = task, .epoch = epoch, .status = status};
    return send_msg(s, peer, peer_len, &m, err);
}

static int send_reply(coordinator_sched *s, const uint8_t *peer, size_t peer_len, uint64_t req,
                      const proto_reply *r, char *err) {
    uint8_t *body = NULL;
    size_t len = 0;
    char e[COMMON_ERR_LEN];
    int rc = proto_reply_encode(r, &body, &len, e);
    if (rc != 0) {
        return send_error(s, peer, peer_len, req, e, err);
    }
    proto_msg m = {.type = PROTO_REPLY, .req = req, .body = body, .body_len = len};
    rc = send_msg(s, peer, peer_len, &m, err);
    free(body);
    return rc;
}

/* The reply to a request that changed what clients see (a sweep submitted, cancelled, retried):
 * the batch that sends it is synced before it commits, so that no power loss takes back what
 * a client was told (other batches' commits may be: their work is done again, see
 * coordinator_sched_opts.sync_full). */
static int send_durable_reply(coordinator_sched *s, const uint8_t *peer, size_t peer_len,
                              uint64_t req, const proto_reply *r, char *err) {
    int rc = coordinator_store_batch_mark_durable(s->store, err);
    return rc != 0 ? rc : send_reply(s, peer, peer_len, req, r, err);
}

static proto_ack_status ack_of(coordinator_fence f) {
    return f == COORDINATOR_STORED           ? PROTO_ACK_STORED
           : f == COORDINATOR_ALREADY_STORED ? PROTO_ACK_DUPLICATE
                                             : PROTO_ACK_LEASE_LOST;
}

/* Whether a store error is the request's fault (refuse it and go on) or the store's (stop). */
static bool is_refusal(int rc) {
    return rc == COMMON_ERR_INVALID || rc == COMMON_ERR_PARSE || rc == COMMON_ERR_NOT_FOUND ||
           rc == COMMON_ERR_UNSUPPORTED;
}

/* ---- workers and their leases ---- */

static sched_worker *worker_by_peer(coordinator_sched *s, const uint8_t *peer, size_t len) {
    for (sched_worker *w = s->workers; w != NULL; w = w->next) {
        if (w->peer_len == len && memcmp(w->peer, peer, len) == 0) {
            return w;
        }
    }
    return NULL;
}

static void worker_free(sched_worker *w) {
    free(w->id);
    free(w->leases);
    free(w);
}

/* ---- the lease index: task id -> the worker holding it ----
 *
 * Results, heartbeats, failures and cancels name a task; its lease is found through this
 * table in O(1) whatever the number of workers, then in that worker's short list (at most
 * max_credits entries). Open addressing with linear probing over a power-of-two table kept at
 * most half full; a deletion shifts the rest of its run back, so there are no tombstones.
 * Task ids are > 0, so 0 marks a free slot. */

static size_t index_home(const coordinator_sched *s, int64_t task) {
    /* Fibonacci hashing: consecutive ids spread over the table */
    return (size_t)(((uint64_t)task * 0x9e3779b97f4a7c15ULL) >> 32) & (s->index_cap - 1);
}

static sched_worker *index_get(const coordinator_sched *s, int64_t task) {
    if (s->index_cap == 0) {
        return NULL;
    }
    for (size_t i = index_home(s, task);; i = (i + 1) & (s->index_cap - 1)) {
        if (s->index[i].task == task) {
            return s->index[i].w;
        }
        if (s->index[i].task == 0) {
            return NULL;
        }
    }
}

static int index_put(coordinator_sched *s, int64_t task, sched_worker *w, char *err) {
    assert(task > 0);
    if (2 * (s->index_n + 1) > s->index_cap) {
        size_t cap = s->index_cap > 0 ? 2 * s->index_cap : 64;
        lease_slot *old = s->index;
        size_t old_cap = s->index_cap;
        s->index = calloc(cap, sizeof *s->index);
        if (s->index == NULL) {
            s->index = old;
            return common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
        }
        s->index_cap = cap;
        for (size_t i = 0; i < old_cap; i++) {
            if (old[i].task != 0) {
                size_t j = index_home(s, old[i].task);
                while (s->index[j].task != 0) {
                    j = (j + 1) & (cap - 1);
                }
                s->index[j] = old[i];
            }
        }
        free(old);
    }
    size_t i = index_home(s, task);
    while (s->index[i].task != 0 && s->index[i].task != task) {
        i = (i + 1) & (s->index_cap - 1);
    }
    if (s->index[i].task == 0) {
        s->index_n++;
    }
    s->index[i] = (lease_slot){.task = task, .w = w};
    return 0;
}

/* Removes task from the index when it maps to w (NULL: to anyone). */
static void index_del(coordinator_sched *s, int64_t task, const sched_worker *w) {
    if (s->index_cap == 0) {
        return;
    }
    size_t mask = s->index_cap - 1, i = index_home(s, task);
    while (s->index[i].task != task) {
        if (s->index[i].task == 0) {
            return;
        }
        i = (i + 1) & mask;
    }
    if (w != NULL && s->index[i].w != w) {
        return;
    }
    /* backward shift: an entry after the hole moves into it unless its home lies cyclically
     * in (hole, its slot], where a lookup would no longer reach it */
    for (size_t j = (i + 1) & mask; s->index[j].task != 0; j = (j + 1) & mask) {
        size_t home = index_home(s, s->index[j].task);
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            s->index[i] = s->index[j];
            i = j;
        }
    }
    s->index[i] = (lease_slot){0};
    s->index_n--;
}

static void worker_unlink(coordinator_sched *s, sched_worker *gone) {
    for (size_t i = 0; i < gone->n_leases; i++) {
        index_del(s, gone->leases[i].task_id, gone);
    }
    for (sched_worker **p = &s->workers; *p != NULL; p = &(*p)->next) {
        if (*p == gone) {
            *p = gone->next;
            worker_free(gone);
            return;
        }
    }
}

/* Removes w's lease number i (from its list and the index). */
static void lease_remove_at(coordinator_sched *s, sched_worker *w, size_t i) {
    assert(i < w->n_leases);
    index_del(s, w->leases[i].task_id, w);
    w->leases[i] = w->leases[--w->n_leases];
}

/* The lease of task in any worker's list (and its worker), or NULL. */
static sched_lease *lease_find(coordinator_sched *s, int64_t task, sched_worker **owner) {
    sched_worker *w = index_get(s, task);
    for (size_t i = 0; w != NULL && i < w->n_leases; i++) {
        if (w->leases[i].task_id == task) {
            *owner = w;
            return &w->leases[i];
        }
    }
    return NULL;
}

static void lease_drop(coordinator_sched *s, int64_t task) {
    sched_worker *w = NULL;
    sched_lease *l = lease_find(s, task, &w);
    if (l != NULL) {
        lease_remove_at(s, w, (size_t)(l - w->leases));
    }
}

/* Gives w the lease l; a lease of the same task another worker still lists is dropped (the
 * store leased it anew, so that one is stale). */
static int lease_add(coordinator_sched *s, sched_worker *w, const sched_lease *l, char *err) {
    lease_drop(s, l->task_id);
    if (w->n_leases == w->cap_leases) {
        size_t cap = w->cap_leases > 0 ? 2 * w->cap_leases : 4;
        sched_lease *a = realloc(w->leases, cap * sizeof *a);
        if (a == NULL) {
            return common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
        }
        w->leases = a;
        w->cap_leases = cap;
    }
    int rc = index_put(s, l->task_id, w, err);
    if (rc == 0) {
        w->leases[w->n_leases++] = *l;
    }
    return rc;
}

/* ---- credits ---- */

static void add_credits(coordinator_sched *s, sched_worker *w, uint32_t n) {
    uint64_t c = (uint64_t)w->credits + n;
    /* what the cap clips is lost until the next HELLO: the worker then believes this
     * coordinator holds more than it does, which costs it a slot, never an extra task */
    w->credits = c > s->o.max_credits ? s->o.max_credits : (uint32_t)c;
    s->next_wake = 0;
}

/* A RESULT or FAIL of peer (w: its worker, NULL when it is none this scheduler knows) was just
 * acknowledged: its slot is free again. A peer that is no known worker (forgotten after its
 * silence, or met first by this process) gets no credit; it is told to say hello, or it would
 * count the credit back and wait forever for a TASK. */
static int report_answered(coordinator_sched *s, sched_worker *w, const uint8_t *peer,
                           size_t peer_len, proto_type type, char *err) {
    if (w == NULL) {
        char text[64];
        snprintf(text, sizeof text, "%s: say hello first", proto_type_name(type));
        return send_error(s, peer, peer_len, 0, text, err);
    }
    if (w->returns) {
        add_credits(s, w, 1);
    }
    return 0;
}

/* ---- sweeps ---- */

static void sweep_free(sched_sweep *sw) {
    coordinator_spec_destroy(&sw->spec);
    free(sw->spec_text);
    free(sw->model_path);
    free(sw);
}

static int sweep_get(coordinator_sched *s, int64_t id, sched_sweep **out, char *err) {
    for (sched_sweep *sw = s->sweeps; sw != NULL; sw = sw->next) {
        if (sw->id == id) {
            *out = sw;
            return 0;
        }
    }
    sched_sweep *sw = calloc(1, sizeof *sw);
    if (sw == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
    }
    sw->id = id;
    int rc = coordinator_sweep_dispatch_info(s->store, id, &sw->spec_text, &sw->model_path,
                                             sw->model_sha256, err);
    if (rc == 0) {
        rc = coordinator_spec_parse(&sw->spec, sw->spec_text, strlen(sw->spec_text), err);
    }
    if (rc != 0) {
        sweep_free(sw);
        return rc;
    }
    sw->next = s->sweeps;
    s->sweeps = sw;
    *out = sw;
    return 0;
}

/* ---- life cycle ---- */

int coordinator_sched_new(coordinator_sched **out, coordinator_store *store,
                          const coordinator_sched_opts *opts, int64_t now_ns, char *err) {
    coordinator_sched *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
    }
    s->store = store;
    if (opts != NULL) {
        s->o = *opts;
    }
    coordinator_sched_opts *o = &s->o;
    o->lease_ms = o->lease_ms > 0 ? o->lease_ms : 30000;
    o->heartbeat_ms = o->heartbeat_ms > 0   ? o->heartbeat_ms
                      : o->lease_ms / 6 > 0 ? o->lease_ms / 6
                                            : 1;
    o->worker_timeout_ms = o->worker_timeout_ms > 0 ? o->worker_timeout_ms : 3 * o->lease_ms;
    o->max_attempts = o->max_attempts > 0 ? o->max_attempts : 3;
    o->backoff_base_ms = o->backoff_base_ms > 0 ? o->backoff_base_ms : 1000;
    o->backoff_cap_ms = o->backoff_cap_ms > 0 ? o->backoff_cap_ms : 60000;
    o->max_credits = o->max_credits > 0 ? o->max_credits : 64;
    o->batch_messages = o->batch_messages > 0 ? o->batch_messages : 8;
    o->status_fresh_ns = o->status_fresh_ns > 0 ? o->status_fresh_ns : 1000000;
    s->lease_ns = (int64_t)o->lease_ms * MS;
    s->worker_timeout_ns = (int64_t)o->worker_timeout_ms * MS;
    s->backoff_base_ns = (int64_t)o->backoff_base_ms * MS;
    s->backoff_cap_ns = (int64_t)o->backoff_cap_ms * MS;
    s->rng = o->seed != 0 ? o->seed : (uint64_t)now_ns | 1;
    s->created_ns = now_ns;
    s->next_wake = now_ns;
    s->expire_from = INT64_MIN;
    int rc = coordinator_store_set_sync(
        store, o->sync_full ? COORDINATOR_SYNC_FULL : COORDINATOR_SYNC_NORMAL, err);
    if (rc != 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

static void clear_out(coordinator_sched *s) {
    for (size_t i = 0; i < s->n_out; i++) {
        free(s->out[i].data);
    }
    s->n_out = 0;
}

void coordinator_sched_destroy(coordinator_sched **sp) {
    coordinator_sched *s = *sp;
    if (s == NULL) {
        return;
    }
    if (s->open) {
        coordinator_store_batch_rollback(s->store);
    }
    clear_out(s);
    free(s->out);
    free(s->index);
    free(s->counts);
    while (s->workers != NULL) {
        sched_worker *w = s->workers;
        s->workers = w->next;
        worker_free(w);
    }
    while (s->sweeps != NULL) {
        sched_sweep *sw = s->sweeps;
        s->sweeps = sw->next;
        sweep_free(sw);
    }
    free(s);
    *sp = NULL;
}

int coordinator_sched_begin(coordinator_sched *s, char *err) {
    if (s->open) {
        return common_fail(err, COMMON_ERR_INVALID, "scheduler: a batch is open already");
    }
    clear_out(s);
    int rc = coordinator_store_batch_begin(s->store, err);
    if (rc != 0) {
        return rc;
    }
    s->open = true;
    s->batch_first_message = s->stats.messages_in;
    if (!s->started) {
        size_t n = 0;
        rc = s->o.requeue_on_start
                 ? coordinator_tasks_expire(s->store, INT64_MAX, s->o.max_attempts, 0, 0, &n, err)
                 : coordinator_tasks_rearm(s->store, s->created_ns + s->lease_ns, &n, err);
        if (rc != 0) {
            return rc;
        }
        s->started = true;
    }
    return 0;
}

/* Queues one frame for peer of the messages out[idx[0..n)] (each freed): as it is when n is 1,
 * else a bundle. */
static int push_bundle(coordinator_sched *s, const uint8_t *peer, size_t peer_len,
                       const size_t *idx, size_t n, char *err) {
    if (n == 1) {
        coordinator_send *f = &s->out[idx[0]];
        uint8_t *data = f->data;
        f->data = NULL;
        return push_frame(s, peer, peer_len, data, f->len, err);
    }
    const uint8_t **msgs = calloc(n, sizeof *msgs);
    size_t *lens = calloc(n, sizeof *lens);
    uint8_t *data = NULL;
    size_t len = 0;
    char e[COMMON_ERR_LEN] = "out of memory";
    int rc = COMMON_ERR_NOMEM;
    if (msgs != NULL && lens != NULL) {
        for (size_t i = 0; i < n; i++) {
            msgs[i] = s->out[idx[i]].data;
            lens[i] = s->out[idx[i]].len;
        }
        rc = proto_bundle(msgs, lens, n, &data, &len, e);
    }
    free(msgs);
    free(lens);
    for (size_t i = 0; i < n; i++) {
        free(s->out[idx[i]].data);
        s->out[idx[i]].data = NULL;
    }
    if (rc != 0) {
        return common_fail(err, rc, "scheduler: bundle: %s", e);
    }
    return push_frame(s, peer, peer_len, data, len, err);
}

/* Joins what this batch sends to each worker into bundles (proto.h, "Bundles"), in the order
 * it was queued: a worker whose slots turned over together gets their ACKs and its next TASKs
 * in one frame. Clients, which send one request at a time, get one frame per answer. The
 * frames of the bundles take the place of their messages at the end of out. */
static int bundle_out(coordinator_sched *s, char *err) {
    size_t n = s->n_out;
    if (n < 2 || s->workers == NULL) {
        return 0;
    }
    size_t *idx = malloc(n * sizeof *idx);
    if (idx == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
    }
    int rc = 0;
    bool bundled = false;
    for (sched_worker *w = s->workers; w != NULL && rc == 0; w = w->next) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (s->out[i].data != NULL && s->out[i].peer_len == w->peer_len &&
                memcmp(s->out[i].peer, w->peer, w->peer_len) == 0) {
                idx[k++] = i;
            }
        }
        if (k < 2) {
            continue;
        }
        bundled = true;
        /* as many messages a frame as a bundle and PROTO_MAX_MESSAGE allow */
        size_t from = 0, bytes = 5;
        for (size_t i = 0; i <= k && rc == 0; i++) {
            size_t add = i < k ? s->out[idx[i]].len + proto_bundle_overhead(s->out[idx[i]].len) : 0;
            if (i == k || i - from == PROTO_MAX_BUNDLE ||
                (i > from && bytes + add > PROTO_MAX_MESSAGE)) {
                rc = push_bundle(s, w->peer, w->peer_len, idx + from, i - from, err);
                from = i;
                bytes = 5;
            }
            bytes += add;
        }
    }
    free(idx);
    if (bundled) { /* drop the messages that went into frames of their own */
        size_t kept = 0;
        for (size_t i = 0; i < s->n_out; i++) {
            if (s->out[i].data != NULL || i >= n) {
                s->out[kept++] = s->out[i];
            }
        }
        s->n_out = kept;
    }
    return rc;
}

int coordinator_sched_commit(coordinator_sched *s, const coordinator_send **out, size_t *n,
                             char *err) {
    *out = NULL;
    *n = 0;
    if (!s->open) {
        return common_fail(err, COMMON_ERR_INVALID, "scheduler: no batch is open");
    }
    s->open = false;
    int rc = coordinator_store_batch_commit(s->store, err);
    if (rc != 0) {
        clear_out(s); /* nothing of a batch that did not commit may be sent */
        return rc;
    }
    s->stats.batches++;
    if ((rc = bundle_out(s, err)) != 0) {
        clear_out(s);
        return rc;
    }
    *out = s->out;
    *n = s->n_out;
    return 0;
}

int64_t coordinator_sched_next_wake(const coordinator_sched *s) {
    return s->next_wake;
}

const coordinator_sched_stats *coordinator_sched_get_stats(const coordinator_sched *s) {
    return &s->stats;
}

/* ---- worker messages ---- */

static int on_hello(coordinator_sched *s, const uint8_t *peer, size_t peer_len, const proto_msg *m,
                    int64_t now, char *err) {
    sched_worker *w = worker_by_peer(s, peer, peer_len);
    if (w == NULL) {
        w = calloc(1, sizeof *w);
        if (w == NULL) {
            return common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
        }
        memcpy(w->peer, peer, peer_len);
        w->peer_len = peer_len;
        w->next = s->workers;
        s->workers = w;
    }
    free(w->id);
    w->id = strdup(m->worker);
    if (w->id == NULL) {
        worker_unlink(s, w);
        return common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
    }
    snprintf(w->backend, sizeof w->backend, "%s", m->backend);
    w->n_devices = m->n_devices;
    memcpy(w->devices, m->devices, m->n_devices * sizeof m->devices[0]);
    w->threads = m->threads;
    w->credits = 0; /* a hello starts the worker afresh: it says READY again */
    if (m->n_models > 0) {
        snprintf(w->model_sha256, sizeof w->model_sha256, "%s", m->models[0]);
    }
    w->returns = false;
    w->last_seen_ns = now;
    /* The same worker reconnected under a new routing id: its leases and counts move here. */
    for (sched_worker *o = s->workers; o != NULL; o = o->next) {
        if (o != w && o->id != NULL && strcmp(o->id, w->id) == 0) {
            for (size_t i = o->n_leases; i-- > 0;) {
                sched_lease l = o->leases[i];
                int rc = lease_add(s, w, &l, err); /* takes it off o's list */
                if (rc != 0) {
                    return rc;
                }
            }
            w->tasks_done += o->tasks_done;
            worker_unlink(s, o);
            break;
        }
    }
    char info[512];
    snprintf(info, sizeof info, "{\"backend\":\"%s\",\"threads\":%" PRIu32 ",\"devices\":%zu}",
             w->backend, w->threads, w->n_devices);
    int rc = coordinator_worker_seen(s->store, w->id, info, now, err);
    if (rc != 0) {
        return rc;
    }
    proto_msg welcome = {
        .type = PROTO_WELCOME, .heartbeat_ms = s->o.heartbeat_ms, .lease_ms = s->o.lease_ms};
    return send_msg(s, peer, peer_len, &welcome, err);
}

static int on_heartbeat(coordinator_sched *s, const uint8_t *peer, size_t peer_len,
                        const proto_msg *m, int64_t now, char *err) {
    if (m->task == 0) {
        return send_ack(s, peer, peer_len, 0, 0, PROTO_ACK_STORED, err);
    }
    coordinator_fence f;
    char e[COMMON_ERR_LEN];
    int rc = coordinator_task_extend(s->store, m->task, m->epoch, now + s->lease_ns, &f, e);
    if (rc == COMMON_ERR_NOT_FOUND) {
        f = COORDINATOR_FENCED;
    } else if (rc != 0) {
        return common_fail(err, rc, "%s", e);
    }
    if (f == COORDINATOR_STORED) {
        sched_worker *w = NULL;
        sched_lease *l = lease_find(s, m->task, &w);
        if (l != NULL) {
            l->deadline_ns = now + s->lease_ns;
        }
    } else {
        s->stats.fenced++;
    }
    return send_ack(s, peer, peer_len, m->task, m->epoch, ack_of(f), err);
}

/* Records a failed attempt of (task, epoch) and answers with the fence's ACK. */
static int fail_task(coordinator_sched *s, const uint8_t *peer, size_t peer_len, int64_t task,
                     uint64_t epoch, const char *error, int64_t now, bool refused_result,
                     char *err) {
    /* the attempt number is the task's; read it through the fence below */
    sqlite3_stmt *st = NULL;
    uint32_t attempt = 1;
    if (store_stmt(s->store, "SELECT attempts FROM task WHERE id = ?", &st, "read attempts",
                   NULL) == 0) {
        sqlite3_bind_int64(st, 1, task);
        if (sqlite3_step(st) == SQLITE_ROW) {
            attempt = (uint32_t)sqlite3_column_int64(st, 0);
        }
        store_stmt_done(st);
    }
    coordinator_fence f;
    char e[COMMON_ERR_LEN];
    int rc = coordinator_task_fail(s->store, task, epoch, error, s->o.max_attempts,
                                   now + backoff_ns(s, attempt), &f, e);
    if (rc == COMMON_ERR_NOT_FOUND) {
        f = COORDINATOR_FENCED;
    } else if (rc != 0) {
        return common_fail(err, rc, "%s", e);
    }
    if (f == COORDINATOR_STORED) {
        s->stats.failed++;
        lease_drop(s, task);
    } else {
        s->stats.fenced++;
    }
    /* a refused result must not read as stored: the worker is told to forget it, the task
     * runs again */
    proto_ack_status a =
        refused_result && f == COORDINATOR_STORED ? PROTO_ACK_LEASE_LOST : ack_of(f);
    return send_ack(s, peer, peer_len, task, epoch, a, err);
}

/* A task handed back unrun: pending again, its attempt not counted; one ACK as for FAIL. */
static int return_task(coordinator_sched *s, const uint8_t *peer, size_t peer_len, int64_t task,
                       uint64_t epoch, char *err) {
    coordinator_fence f;
    char e[COMMON_ERR_LEN];
    int rc = coordinator_task_return(s->store, task, epoch, &f, e);
    if (rc == COMMON_ERR_NOT_FOUND) {
        f = COORDINATOR_FENCED;
    } else if (rc != 0) {
        return common_fail(err, rc, "%s", e);
    }
    if (f == COORDINATOR_STORED) {
        s->stats.returned++;
        lease_drop(s, task);
    } else {
        s->stats.fenced++;
    }
    return send_ack(s, peer, peer_len, task, epoch, ack_of(f), err);
}

/* The sweep and analysis index of a task, NOT_FOUND when there is no such task. */
static int task_job(coordinator_sched *s, int64_t task, int64_t *sweep_id, size_t *analysis,
                    char *err) {
    sqlite3 *db = coordinator_store_db(s->store);
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s->store,
                        "SELECT j.sweep_id, j.idx FROM task t JOIN job j ON j.id = t.job_id "
                        "WHERE t.id = ?",
                        &st, "read task's job", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(st, 1, task);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *sweep_id = sqlite3_column_int64(st, 0);
        *analysis = (size_t)sqlite3_column_int64(st, 1);
    } else if (r == SQLITE_DONE) {
        rc = common_fail(err, COMMON_ERR_NOT_FOUND, "no task %lld", (long long)task);
    } else {
        rc = store_fail(db, err, "sqlite3_step(read task's job)");
    }
    store_stmt_done(st);
    return rc;
}

/* Whether decoded results are what the task's analysis produces; a reason when not. */
static const char *results_mismatch(const coordinator_analysis *a, const coordinator_results *r) {
    bool patch = a->kind == COORDINATOR_ANALYSIS_PATCH;
    bool legal = a->kind == COORDINATOR_ANALYSIS_LEGAL_STATS;
    bool neurons = a->kind == COORDINATOR_ANALYSIS_NEURON_STATS;
    bool predictions = a->kind == COORDINATOR_ANALYSIS_PREDICTIONS;
    if ((r->patch != NULL && !patch) || (r->legal != NULL && !legal) ||
        (r->neurons != NULL && !neurons) || (r->predictions != NULL && !predictions)) {
        return "results of another analysis kind";
    }
    if (r->patch != NULL && r->patch->kind != a->patch.kind) {
        return "patch results of another patch kind";
    }
    if (r->neurons != NULL && (r->neurons->slice_begin != a->neuron.slice_begin ||
                               r->neurons->slice_end != a->neuron.slice_end)) {
        return "neuron statistics over another slice";
    }
    return NULL;
}

static int on_result(coordinator_sched *s, const uint8_t *peer, size_t peer_len, const proto_msg *m,
                     int64_t now, char *err) {
    char why[COMMON_ERR_LEN + 64] = "";
    char e[COMMON_ERR_LEN] = "";
    int64_t sweep_id = 0;
    size_t analysis = 0;
    int rc = 0;
    sched_worker *holder = NULL;
    const sched_lease *held = lease_find(s, m->task, &holder);
    if (held != NULL) {
        /* a task's sweep and analysis never change: the lease this scheduler handed out
         * knows them (whether this report is fenced is the store's to say, below) */
        sweep_id = held->sweep_id;
        analysis = held->analysis;
    } else {
        rc = task_job(s, m->task, &sweep_id, &analysis, e);
    }
    if (rc == COMMON_ERR_NOT_FOUND) {
        s->stats.fenced++;
        return send_ack(s, peer, peer_len, m->task, m->epoch, PROTO_ACK_LEASE_LOST, err);
    }
    if (rc != 0) {
        return common_fail(err, rc, "%s", e);
    }
    char digest[65];
    coordinator_digest_hex(m->body, m->body_len, digest);
    coordinator_results_msg *res = NULL;
    sched_sweep *sw = NULL;
    if (strcmp(digest, m->digest) != 0) {
        snprintf(why, sizeof why, "result digest mismatch: body is %s", digest);
    } else if ((rc = coordinator_results_decode(m->body, m->body_len, &res, e)) != 0) {
        snprintf(why, sizeof why, "malformed result: %s", e);
    } else if ((rc = sweep_get(s, sweep_id, &sw, e)) != 0) {
        coordinator_results_msg_free(&res);
        return common_fail(err, rc, "%s", e);
    } else if (analysis >= sw->spec->n_analyses) {
        snprintf(why, sizeof why, "task's analysis %zu is not in its sweep's spec", analysis);
    } else {
        const char *bad =
            results_mismatch(&sw->spec->analyses[analysis], coordinator_results_msg_get(res));
        if (bad != NULL) {
            snprintf(why, sizeof why, "result refused: %s", bad);
        }
    }
    if (why[0] == '\0') {
        coordinator_fence f;
        rc = coordinator_task_complete(s->store, m->task, m->epoch,
                                       coordinator_results_msg_get(res), &f, e);
        coordinator_results_msg_free(&res);
        if (rc == 0) {
            if (f == COORDINATOR_STORED) {
                s->stats.stored++;
                sched_worker *w = NULL;
                if (lease_find(s, m->task, &w) != NULL) {
                    w->tasks_done++;
                }
                lease_drop(s, m->task);
            } else if (f == COORDINATOR_ALREADY_STORED) {
                s->stats.duplicates++;
            } else {
                s->stats.fenced++;
            }
            return send_ack(s, peer, peer_len, m->task, m->epoch, ack_of(f), err);
        }
        if (!is_refusal(rc)) {
            return common_fail(err, rc, "%s", e);
        }
        snprintf(why, sizeof why, "result refused by the store: %s", e);
    }
    coordinator_results_msg_free(&res);
    /* A result that cannot be stored is a failed attempt: the task runs again elsewhere. */
    return fail_task(s, peer, peer_len, m->task, m->epoch, why, now, true, err);
}

/* ---- client requests ---- */

static int on_submit(coordinator_sched *s, const uint8_t *peer, size_t peer_len, const proto_msg *m,
                     char *err) {
    s->counts_cost_ns = 0; /* the next STATUS counts afresh */
    char e[COMMON_ERR_LEN] = "";
    coordinator_spec *spec = NULL;
    int64_t model_id = 0, sweep_id = 0;
    size_t n_ctx = 0, d_vocab = 0, n_tasks = 0;
    bool existed = false;
    int rc = coordinator_spec_parse(&spec, m->spec, strlen(m->spec), e);
    if (rc == 0) {
        rc = coordinator_model_record(s->store, spec->model, &model_id, e);
    }
    if (rc == 0) {
        rc = coordinator_model_limits(s->store, model_id, &n_ctx, &d_vocab, e);
    }
    if (rc == 0) {
        rc = coordinator_spec_check_model(spec, n_ctx, d_vocab, e);
    }
    if (rc == 0) {
        rc = coordinator_sweep_create(s->store, spec, m->submission, model_id, &sweep_id, &existed,
                                      e);
    }
    if (rc == 0) {
        /* planning a sweep that exists completes a planning a crash interrupted */
        rc = coordinator_plan_sweep(s->store, sweep_id, spec, &s->o.plan, &n_tasks, e);
    }
    if (rc != 0) {
        coordinator_spec_destroy(&spec);
        if (!is_refusal(rc) && rc != COMMON_ERR_IO) {
            return common_fail(err, rc, "submit: %s", e);
        }
        /* a model directory that cannot be read (IO) is the submitter's problem too */
        return send_error(s, peer, peer_len, m->req, e, err);
    }
    proto_reply r = {.request = PROTO_SUBMIT,
                     .sweep_id = sweep_id,
                     .sweep = spec->name,
                     .existed = existed,
                     .n_tasks = n_tasks};
    rc = send_durable_reply(s, peer, peer_len, m->req, &r, err);
    coordinator_spec_destroy(&spec);
    s->next_wake = 0; /* new tasks: dispatch at the next tick */
    return rc;
}

static void sweep_to_reply(const coordinator_sweep_info *in, proto_sweep_info *out) {
    *out = (proto_sweep_info){.name = in->name,
                              .id = in->id,
                              .pending = in->progress.pending,
                              .leased = in->progress.leased,
                              .done = in->progress.done,
                              .dead = in->progress.dead,
                              .cancelled = in->cancelled,
                              .rows = in->rows,
                              .created_at = in->created_at};
}

/* The sweep a request names: *id, or an ERROR sent and *id 0. */
static int named_sweep(coordinator_sched *s, const uint8_t *peer, size_t peer_len,
                       const proto_msg *m, int64_t *id, char *err) {
    char e[COMMON_ERR_LEN];
    *id = 0;
    int rc = coordinator_sweep_find(s->store, m->sweep, id, e);
    if (rc == COMMON_ERR_NOT_FOUND) {
        *id = 0;
        return send_error(s, peer, peer_len, m->req, e, err);
    }
    return rc != 0 ? common_fail(err, rc, "%s", e) : 0;
}

/* The sweeps with their progress (s->counts), counted again unless the last count may be reused
 * (STATUS_REUSE) and holds sweep `want` (0: any). */
static int sweep_counts(coordinator_sched *s, int64_t now, int64_t want, char *err) {
    bool has = want == 0;
    for (size_t i = 0; !has && s->counts != NULL && i < s->n_counts; i++) {
        has = s->counts[i].id == want;
    }
    if (has && s->counts != NULL && s->counts_cost_ns >= (int64_t)s->o.status_fresh_ns &&
        now >= s->counts_at && now - s->counts_at < STATUS_REUSE * s->counts_cost_ns) {
        return 0;
    }
    char e[COMMON_ERR_LEN];
    coordinator_sweep_info *list = NULL;
    size_t n = 0;
    double t0 = common_now_s();
    int rc = coordinator_sweeps_list(s->store, 0, &list, &n, e);
    if (rc != 0) {
        return common_fail(err, rc, "%s", e);
    }
    free(s->counts);
    s->counts = list;
    s->n_counts = n;
    s->counts_at = now;
    s->counts_cost_ns = (int64_t)((common_now_s() - t0) * 1e9);
    return 0;
}

static int on_status(coordinator_sched *s, const uint8_t *peer, size_t peer_len, const proto_msg *m,
                     int64_t now, char *err) {
    int64_t id = 0;
    int rc;
    if (m->type == PROTO_STATUS && m->sweep[0] != '\0') {
        if ((rc = named_sweep(s, peer, peer_len, m, &id, err)) != 0 || id == 0) {
            return rc;
        }
    }
    char e[COMMON_ERR_LEN];
    size_t n = 0, n_dead = 0;
    coordinator_dead_task *dead = NULL;
    proto_sweep_info *sweeps = NULL;
    proto_dead_task *dead_out = NULL;
    if ((rc = sweep_counts(s, now, id, err)) != 0) {
        return rc;
    }
    /* the sweep asked for, or all of them */
    const coordinator_sweep_info *list = s->counts;
    n = s->n_counts;
    if (id != 0) {
        size_t i = 0;
        while (i < n && list[i].id != id) {
            i++;
        }
        list = i < n ? &list[i] : NULL;
        n = i < n ? 1 : 0;
    }
    if (m->type == PROTO_STATUS &&
        (rc = coordinator_dead_tasks(s->store, id, STATUS_MAX_DEAD, &dead, &n_dead, e)) != 0) {
        return common_fail(err, rc, "%s", e);
    }
    n = n > PROTO_MAX_ITEMS ? PROTO_MAX_ITEMS : n;
    sweeps = calloc(n > 0 ? n : 1, sizeof *sweeps);
    dead_out = calloc(n_dead > 0 ? n_dead : 1, sizeof *dead_out);
    if (sweeps == NULL || dead_out == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        sweep_to_reply(&list[i], &sweeps[i]);
    }
    for (size_t i = 0; i < n_dead; i++) {
        const char *name = "";
        for (size_t j = 0; j < n; j++) {
            if (list[j].id == dead[i].sweep_id) {
                name = list[j].name;
            }
        }
        dead_out[i] = (proto_dead_task){.sweep = name,
                                        .key = dead[i].key,
                                        .attempts = dead[i].attempts,
                                        .error = dead[i].error};
    }
    proto_reply r = {
        .request = m->type, .n_sweeps = n, .sweeps = sweeps, .n_dead = n_dead, .dead = dead_out};
    rc = send_reply(s, peer, peer_len, m->req, &r, err);
done:
    free(sweeps);
    free(dead_out);
    coordinator_dead_tasks_free(dead, n_dead);
    return rc;
}

static int on_workers(coordinator_sched *s, const uint8_t *peer, size_t peer_len,
                      const proto_msg *m, int64_t now, char *err) {
    size_t n = 0;
    for (sched_worker *w = s->workers; w != NULL; w = w->next) {
        n += w->id != NULL;
    }
    proto_worker_info *list = calloc(n > 0 ? n : 1, sizeof *list);
    if (list == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "scheduler: out of memory");
    }
    size_t i = 0;
    for (sched_worker *w = s->workers; w != NULL && i < n; w = w->next) {
        if (w->id == NULL) {
            continue;
        }
        const sched_lease *l = w->n_leases > 0 ? &w->leases[0] : NULL;
        sched_sweep *sw = NULL;
        if (l != NULL && sweep_get(s, l->sweep_id, &sw, NULL) != 0) {
            sw = NULL; /* the list still answers; that worker's sweep shows as "" */
        }
        list[i] = (proto_worker_info){
            .id = w->id,
            .backend = w->backend,
            .n_devices = w->n_devices,
            .threads = w->threads,
            .connected = now - w->last_seen_ns <= s->worker_timeout_ns,
            .task = l != NULL ? l->task_id : 0,
            .task_key = l != NULL ? l->key : "",
            .sweep = sw != NULL ? sw->spec->name : "",
            .tasks_done = w->tasks_done,
            .last_seen_ms = now > w->last_seen_ns ? (uint64_t)((now - w->last_seen_ns) / MS) : 0};
        memcpy(list[i].devices, w->devices, w->n_devices * sizeof w->devices[0]);
        i++;
    }
    proto_reply r = {.request = PROTO_WORKERS, .n_workers = i, .workers = list};
    int rc = send_reply(s, peer, peer_len, m->req, &r, err);
    free(list);
    return rc;
}

static int on_cancel(coordinator_sched *s, const uint8_t *peer, size_t peer_len, const proto_msg *m,
                     char *err) {
    s->counts_cost_ns = 0; /* the next STATUS counts afresh */
    int64_t id = 0;
    int rc = named_sweep(s, peer, peer_len, m, &id, err);
    if (rc != 0 || id == 0) {
        return rc;
    }
    char e[COMMON_ERR_LEN];
    coordinator_task_ref *refs = NULL;
    size_t n = 0;
    if ((rc = coordinator_sweep_cancel(s->store, id, &refs, &n, e)) != 0) {
        return common_fail(err, rc, "%s", e);
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        sched_worker *w = NULL;
        if (lease_find(s, refs[i].task_id, &w) != NULL) {
            proto_msg drop = {.type = PROTO_DROP, .task = refs[i].task_id, .epoch = refs[i].epoch};
            rc = send_msg(s, w->peer, w->peer_len, &drop, err);
            lease_drop(s, refs[i].task_id);
        }
    }
    free(refs);
    if (rc != 0) {
        return rc;
    }
    proto_reply r = {.request = PROTO_CANCEL, .sweep = m->sweep, .n_changed = n};
    return send_durable_reply(s, peer, peer_len, m->req, &r, err);
}

static int on_retry_dead(coordinator_sched *s, const uint8_t *peer, size_t peer_len,
                         const proto_msg *m, char *err) {
    s->counts_cost_ns = 0; /* the next STATUS counts afresh */
    int64_t id = 0;
    int rc = named_sweep(s, peer, peer_len, m, &id, err);
    if (rc != 0 || id == 0) {
        return rc;
    }
    char e[COMMON_ERR_LEN];
    size_t n = 0;
    if ((rc = coordinator_sweep_retry_dead(s->store, id, &n, e)) != 0) {
        return common_fail(err, rc, "%s", e);
    }
    s->next_wake = 0;
    proto_reply r = {.request = PROTO_RETRY_DEAD, .sweep = m->sweep, .n_changed = n};
    return send_durable_reply(s, peer, peer_len, m->req, &r, err);
}

/* One message of a frame from peer. */
static int on_message(coordinator_sched *s, const uint8_t *peer, size_t peer_len, const void *frame,
                      size_t len, int64_t now, char *err) {
    proto_msg *m = NULL;
    char e[COMMON_ERR_LEN];
    int rc = proto_decode(frame, len, &m, e);
    if (rc != 0) {
        s->stats.frames_bad++;
        return send_error(s, peer, peer_len, proto_peek_req(frame, len), e, err);
    }
    sched_worker *w = worker_by_peer(s, peer, peer_len);
    if (w != NULL) {
        w->last_seen_ns = now;
    }
    switch (m->type) {
    case PROTO_HELLO:
        rc = on_hello(s, peer, peer_len, m, now, err);
        break;
    case PROTO_READY:
        if (w == NULL) {
            rc = send_error(s, peer, peer_len, 0, "ready: say hello first", err);
        } else {
            add_credits(s, w, m->credits);
            w->returns = true;
        }
        break;
    case PROTO_HEARTBEAT:
        rc = on_heartbeat(s, peer, peer_len, m, now, err);
        break;
    case PROTO_RESULT:
    case PROTO_FAIL:
    case PROTO_RETURN:
        /* each sends exactly one ACK */
        if (m->type == PROTO_RESULT) {
            rc = on_result(s, peer, peer_len, m, now, err);
        } else if (m->type == PROTO_FAIL) {
            rc = fail_task(s, peer, peer_len, m->task, m->epoch, m->error, now, false, err);
        } else {
            rc = return_task(s, peer, peer_len, m->task, m->epoch, err);
        }
        if (rc == 0) {
            rc = report_answered(s, w, peer, peer_len, m->type, err);
        }
        break;
    case PROTO_SUBMIT:
        rc = on_submit(s, peer, peer_len, m, err);
        break;
    case PROTO_STATUS:
    case PROTO_LIST:
        rc = on_status(s, peer, peer_len, m, now, err);
        break;
    case PROTO_WORKERS:
        rc = on_workers(s, peer, peer_len, m, now, err);
        break;
    case PROTO_CANCEL:
        rc = on_cancel(s, peer, peer_len, m, err);
        break;
    case PROTO_RETRY_DEAD:
        rc = on_retry_dead(s, peer, peer_len, m, err);
        break;
    default: /* a coordinator's own message types, sent to it */
        s->stats.frames_bad++;
        snprintf(e, sizeof e, "%s: not a message a coordinator takes", proto_type_name(m->type));
        rc = send_error(s, peer, peer_len, m->req, e, err);
        break;
    }
    proto_msg_free(&m);
    return rc;
}

int coordinator_sched_input(coordinator_sched *s, const void *peer_v, size_t peer_len,
                            const void *frame, size_t len, int64_t now, char *err) {
    const uint8_t *peer = peer_v;
    if (!s->open) {
        return common_fail(err, COMMON_ERR_INVALID, "scheduler: input outside a batch");
    }
    if (peer_len == 0 || peer_len > COORDINATOR_PEER_MAX) {
        s->stats.frames_bad++;
        return 0; /* no routing id to answer to */
    }
    s->stats.frames_in++;
    proto_frame_iter it;
    char e[COMMON_ERR_LEN];
    int got = proto_frame_begin(&it, frame, len, e);
    const void *msg = NULL;
    size_t msg_len = 0;
    while (got == 0 && (got = proto_frame_next(&it, &msg, &msg_len, e)) > 0) {
        s->stats.messages_in++;
        int rc = on_message(s, peer, peer_len, msg, msg_len, now, err);
        if (rc != 0) {
            return rc;
        }
        got = 0;
    }
    if (got < 0) { /* a bundle that is malformed (from there on) */
        s->stats.frames_bad++;
        return send_error(s, peer, peer_len, 0, e, err);
    }
    return 0;
}

bool coordinator_sched_batch_full(const coordinator_sched *s) {
    return s->open && s->stats.messages_in - s->batch_first_message >= s->o.batch_messages;
}

/* ---- the tick: expiry, forgetting, dispatch ---- */

/* Leases up to w's credits and sends the tasks; a task whose work cannot be loaded fails. */
static int dispatch_to(coordinator_sched *s, sched_worker *w, int64_t now, bool *drained,
                       char *err) {
    size_t room = s->o.max_credits > w->n_leases ? s->o.max_credits - w->n_leases : 0;
    size_t want = w->credits < room ? w->credits : room;
    if (want == 0) {
        return 0;
    }
    coordinator_lease *leases = NULL;
    size_t n = 0;
    char e[COMMON_ERR_LEN];
    int rc = coordinator_tasks_claim_preferring(s->store, w->id, want, now, now + s->lease_ns,
                                                w->model_sha256, &leases, &n, e);
    if (rc != 0) {
        return common_fail(err, rc, "%s", e);
    }
    *drained = n < want;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const coordinator_lease *l = &leases[i];
        sched_sweep *sw = NULL;
        coordinator_work *work = NULL;
        uint8_t *body = NULL;
        size_t body_len = 0;
        int wrc = sweep_get(s, l->sweep_id, &sw, e);
        if (wrc == 0) {
            wrc = coordinator_work_load(s->store, sw->spec, l->job_id, l->body, l->body_len, &work,
                                        e);
        }
        if (wrc == 0) {
            wrc = coordinator_work_encode(work, &body, &body_len, e);
        }
        coordinator_work_destroy(&work);
        if (wrc != 0) {
            if (!is_refusal(wrc)) {
                rc = common_fail(err, wrc, "dispatch task %lld: %s", (long long)l->task_id, e);
                break;
            }
            /* the task cannot be run as stored: count the attempt, so that it ends up dead */
            coordinator_fence f;
            char why[COMMON_ERR_LEN + 32];
            snprintf(why, sizeof why, "cannot load the task's work: %s", e);
            rc = coordinator_task_fail(s->store, l->task_id, l->epoch, why, s->o.max_attempts,
                                       now + backoff_ns(s, l->attempt), &f, e);
            if (rc != 0) {
                rc = common_fail(err, rc, "%s", e);
            }
            s->stats.failed++;
            continue;
        }
        proto_msg task = {.type = PROTO_TASK,
                          .task = l->task_id,
                          .epoch = l->epoch,
                          .attempt = l->attempt,
                          .model_path = sw->model_path,
                          .model_sha256 = sw->model_sha256,
                          .spec = sw->spec_text,
                          .body = body,
                          .body_len = body_len};
        rc = send_msg(s, w->peer, w->peer_len, &task, err);
        free(body);
        if (rc != 0) {
            break;
        }
        sched_lease sl = {.task_id = l->task_id,
                          .epoch = l->epoch,
                          .sweep_id = l->sweep_id,
                          .analysis = l->analysis,
                          .deadline_ns = l->deadline_ns};
        snprintf(sl.key, sizeof sl.key, "%s", l->key);
        rc = lease_add(s, w, &sl, err);
        s->expire_from = l->deadline_ns < s->expire_from ? l->deadline_ns : s->expire_from;
        w->credits--;
        memcpy(w->model_sha256, sw->model_sha256, sizeof w->model_sha256);
        s->stats.dispatched++;
    }
    coordinator_leases_free(leases, n);
    return rc;
}

/* The earliest deadline of a leased task in the store (INT64_MAX: none), through the partial
 * index of leased tasks' deadlines. */
static int earliest_deadline(coordinator_sched *s, int64_t *out, char *err) {
    sqlite3_stmt *st = NULL;
    int rc = store_stmt(s->store,
                        "SELECT min(lease_deadline_ns) FROM task "
                        "WHERE state = 'leased' AND lease_deadline_ns IS NOT NULL",
                        &st, "earliest deadline", err);
    if (rc != 0) {
        return rc;
    }
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        *out = sqlite3_column_type(st, 0) == SQLITE_NULL ? INT64_MAX : sqlite3_column_int64(st, 0);
    } else {
        rc = store_fail(coordinator_store_db(s->store), err, "sqlite3_step(earliest deadline)");
    }
    store_stmt_done(st);
    return rc;
}

int coordinator_sched_tick(coordinator_sched *s, int64_t now, char *err) {
    if (!s->open) {
        return common_fail(err, COMMON_ERR_INVALID, "scheduler: tick outside a batch");
    }
    char e[COMMON_ERR_LEN];
    int rc = 0;
    /* Expiry runs only when a deadline may have passed: expire_from is a lower bound of every
     * leased task's deadline (a new lease lowers it; a renewal only moves a deadline later, and
     * a lease that ends leaves the bound valid), so most ticks skip the query. */
    if (now > s->expire_from) {
        size_t n_expired = 0;
        rc = coordinator_tasks_expire(s->store, now, s->o.max_attempts, s->backoff_base_ns,
                                      s->backoff_cap_ns, &n_expired, e);
        if (rc == 0) {
            rc = earliest_deadline(s, &s->expire_from, e);
        }
        if (rc != 0) {
            return common_fail(err, rc, "%s", e);
        }
        s->stats.expired += n_expired;
    }
    /* forget silent workers and leases that lapsed (the store requeued them above) */
    size_t n_workers = 0;
    for (sched_worker *w = s->workers, *next; w != NULL; w = next) {
        next = w->next;
        if (now - w->last_seen_ns > s->worker_timeout_ns) {
            worker_unlink(s, w);
            continue;
        }
        n_workers++;
        for (size_t i = 0; i < w->n_leases;) {
            if (w->leases[i].deadline_ns < now) {
                lease_remove_at(s, w, i);
            } else {
                i++;
            }
        }
    }
    /* dispatch, starting with a different worker each tick */
    bool waiting = false; /* a worker with credits found nothing to do */
    sched_worker *w = s->workers;
    for (size_t j = 0; n_workers > 0 && j < s->rotate % n_workers; j++) {
        w = w->next;
    }
    for (size_t k = 0; k < n_workers && rc == 0; k++) {
        bool drained = false;
        if (w->id != NULL && w->credits > 0) {
            rc = dispatch_to(s, w, now, &drained, err);
            waiting = waiting || drained;
        }
        w = w->next != NULL ? w->next : s->workers;
    }
    s->rotate++;
    /* a worker timing out, a lease lapsing (this scheduler's, or one it does not list: a
     * re-armed lease of the process before it) */
    int64_t wake = s->expire_from < INT64_MAX ? s->expire_from + 1 : INT64_MAX;
    for (sched_worker *v = s->workers; v != NULL; v = v->next) {
        int64_t gone_at = v->last_seen_ns + s->worker_timeout_ns;
        wake = gone_at < wake ? gone_at : wake;
    }
    if (waiting) {
        int64_t again = now + IDLE_RECHECK_NS;
        wake = again < wake ? again : wake;
    }
    s->next_wake = wake;
    return rc;
}
