/*
 * coordinator: the sweep service's state. Two parts live here so far:
 *
 * - The sweep specification (docs/SWEEP.md): a JSON document naming a model, a dataset, a range
 *   of its games and the analyses to run, validated field by field with an error that names the
 *   JSON path of the bad field ("analyses[1].cutoffs.step: must be > 0"), parsed into a
 *   coordinator_spec that the planner reads, and kept as canonical JSON text for storage.
 * - The store (docs/STORE.md): one SQLite database (WAL, foreign keys on, schema versioned by
 *   PRAGMA user_version and migrated forward on open) holding models, datasets of games with
 *   their token positions, sweeps, jobs, tasks with their leases, workers, and the results of
 *   the four analyses in tidy tables, read through documented views (patch_effects,
 *   legal_stats, neuron_stats, predictions, games, game_positions).
 *
 * Fallible functions return 0 or a negative COMMON_ERR_* code and fill `err` (COMMON_ERR_LEN
 * bytes, NULL allowed) with a message naming the operation; SQLite's own text is quoted
 * ("sqlite3_step(insert game): database is locked"). `*out` arguments are set only on success
 * and are owned by the caller. Nothing here prints or exits. A store handle is used by one
 * thread at a time.
 */
#ifndef CHESSLENS_COORDINATOR_H
#define CHESSLENS_COORDINATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/common.h"
#include "interp/interp.h"

struct sqlite3;

/* ------------------------------------------------------------------------------------------ */
/* Sweep specification                                                                         */

/* Names of sweeps and datasets: 1..COORDINATOR_MAX_NAME bytes of [A-Za-z0-9._-]. */
#define COORDINATOR_MAX_NAME 128
/* Most cut-offs one patch analysis may list; a cut-off is at most COORDINATOR_MAX_CUTOFF. */
#define COORDINATOR_MAX_CUTOFFS 4096
#define COORDINATOR_MAX_CUTOFF 65536
/* Largest top_k a predictions analysis may ask for before the model is known. */
#define COORDINATOR_MAX_TOP_K 4096
/* Most analyses in one sweep. */
#define COORDINATOR_MAX_ANALYSES 64

typedef enum coordinator_analysis_kind {
    COORDINATOR_ANALYSIS_PATCH,        /* "patch": activation patching of clean/corrupt pairs */
    COORDINATOR_ANALYSIS_LEGAL_STATS,  /* "legal_stats": legal-move statistics per component */
    COORDINATOR_ANALYSIS_NEURON_STATS, /* "neuron_stats": neuron means by position group */
    COORDINATOR_ANALYSIS_PREDICTIONS,  /* "predictions": top-k next tokens per position */
} coordinator_analysis_kind;

/* "patch", "legal_stats", "neuron_stats", "predictions"; "?" for a bad value. */
const char *coordinator_analysis_kind_name(coordinator_analysis_kind k);

/* What replaces the token at the corrupted position (corrupt.with). */
typedef enum coordinator_corrupt_kind {
    COORDINATOR_CORRUPT_EACH_LEGAL,   /* every other token the rules allow there: one pair each */
    COORDINATOR_CORRUPT_RANDOM_LEGAL, /* one of them, drawn with corrupt.seed */
    COORDINATOR_CORRUPT_TOKEN,        /* a given token (corrupt.token) */
    COORDINATOR_CORRUPT_GAME,         /* the same cut-off of another game (corrupt.game) */
} coordinator_corrupt_kind;

typedef struct coordinator_corrupt_spec {
    coordinator_corrupt_kind with;
    /* The corrupted position in the cut-off prompt: >= 1 counts from `<s>` (0), < 0 from the end
     * (-1 = the last token, what "last" means). Unused (0) for COORDINATOR_CORRUPT_GAME. */
    long position;
    uint64_t seed; /* RANDOM_LEGAL: the draw for game g, cut-off N depends on (seed, g, N) only */
    char token[4]; /* TOKEN: a square "d5" or a promotion letter "q" */
    uint64_t game; /* GAME: the index of the corrupting game in the dataset */
} coordinator_corrupt_spec;

/* A token a metric reads: a given text, or resolved per pair from the runs' top predictions. */
typedef enum coordinator_token_kind {
    COORDINATOR_TOKEN_TEXT,        /* text[]: a square or a promotion letter */
    COORDINATOR_TOKEN_CLEAN_TOP,   /* the clean run's most probable next token */
    COORDINATOR_TOKEN_CORRUPT_TOP, /* the corrupted run's most probable next token */
} coordinator_token_kind;

typedef struct coordinator_token_ref {
    coordinator_token_kind kind;
    char text[4];
} coordinator_token_ref;

/* A metric as interp knows it (interp_metric_kind) with its tokens still symbolic: logit and
 * logprob read 1 token, logit_diff 2, legal_mass none. */
typedef struct coordinator_metric_spec {
    interp_metric_kind kind;
    size_t n_tokens;
    coordinator_token_ref tokens[2];
    bool normalize; /* report (m - m_corrupted) / (m_clean - m_corrupted) */
} coordinator_metric_spec;

/* Components of the legal-move statistics (legal_stats.components), as bits. */
enum {
    COORDINATOR_COMP_EMBEDS = 1, /* "embeds": embed, pos_embed */
    COORDINATOR_COMP_ATTNS = 2,  /* "attns": {l}_attn_out of every layer */
    COORDINATOR_COMP_MLPS = 4,   /* "mlps": {l}_mlp_out of every layer */
    COORDINATOR_COMP_HEADS = 8,  /* "heads": L{l}H{h}, every head of every layer */
};

typedef struct coordinator_analysis {
    coordinator_analysis_kind kind;
    char *json; /* this analysis as canonical JSON (owned by the spec) */
    struct {
        interp_patch_kind kind;
        size_t n_cutoffs;
        size_t *cutoffs; /* [n_cutoffs] ascending, distinct, each >= 2 (prompt lengths) */
        coordinator_corrupt_spec corrupt;
        coordinator_metric_spec metric;
    } patch;
    struct {
        unsigned components; /* COORDINATOR_COMP_* bits, at least one */
    } legal;
    struct {
        long slice_begin, slice_end; /* Python slice of positions for the "slice" group */
    } neuron;
    struct {
        size_t top_k;
    } predictions;
} coordinator_analysis;

/* A parsed, valid sweep specification. Read its fields; create and free it only through the
 * functions below. */
typedef struct coordinator_spec {
    char *name;                     /* unique sweep name */
    char *model;                    /* model directory */
    char *dataset;                  /* dataset name in the store */
    uint64_t game_from, game_to;    /* games [game_from, game_to) of the dataset, from < to */
    size_t n_analyses;              /* 1..COORDINATOR_MAX_ANALYSES */
    coordinator_analysis *analyses; /* [n_analyses] */
    char *canonical;                /* the document as compact JSON with sorted keys */
} coordinator_spec;

/* Parses and validates a specification (json[0..len), UTF-8). Every field is checked and
 * unknown keys are refused; an error is COMMON_ERR_PARSE for text that is not JSON ("spec: line
 * 3 column 5: ...") and COMMON_ERR_INVALID for a bad field, the message starting with the
 * field's JSON path ("analyses[1].cutoffs.step: must be > 0"). On success *out (free with
 * coordinator_spec_destroy) is set. */
int coordinator_spec_parse(coordinator_spec **out, const char *json, size_t len, char *err);
void coordinator_spec_destroy(coordinator_spec **s);

/* The checks that need the model: every cut-off <= n_ctx and every top_k <= d_vocab.
 * COMMON_ERR_INVALID naming the path otherwise. */
int coordinator_spec_check_model(const coordinator_spec *s, size_t n_ctx, size_t d_vocab,
                                 char *err);

/* The metric in the form `chesslens patch --metric` accepts ("logit_diff:e4,d5", "logit:e4",
 * "legal_mass"), with clean_top / corrupt_top replaced by the given texts (NULL is allowed when
 * the metric does not use them). Writes at most cap bytes; COMMON_ERR_INVALID when a needed
 * text is missing or the result does not fit. */
int coordinator_metric_resolve(const coordinator_metric_spec *m, const char *clean_top,
                               const char *corrupt_top, char *out, size_t cap, char *err);

/* Whether name is a valid sweep or dataset name (see COORDINATOR_MAX_NAME). */
bool coordinator_name_valid(const char *name);

/* ------------------------------------------------------------------------------------------ */
/* Store                                                                                       */

/* The schema version this code writes (PRAGMA user_version). */
#define COORDINATOR_SCHEMA_VERSION 5

typedef struct coordinator_store coordinator_store;

/* Opens (creating when absent) the database at path for writing: WAL journal, foreign keys
 * on, synchronous NORMAL, a busy timeout of busy_timeout_ms (0: 5000), and the schema migrated
 * up to COORDINATOR_SCHEMA_VERSION in one transaction. COMMON_ERR_UNSUPPORTED for a database
 * whose user_version is newer than this code (it is left untouched). */
int coordinator_store_open(coordinator_store **out, const char *path, int busy_timeout_ms,
                           char *err);
/* Opens an existing database read-only (SQLITE_OPEN_READONLY and PRAGMA query_only), for
 * queries. Its schema must be exactly COORDINATOR_SCHEMA_VERSION: newer is UNSUPPORTED, older
 * INVALID (open it for writing once to migrate). */
int coordinator_store_open_readonly(coordinator_store **out, const char *path, int busy_timeout_ms,
                                    char *err);
/* Closes the database; NULL is fine; *s is NULL afterwards. */
void coordinator_store_close(coordinator_store **s);
/* The SQLite connection (owned by the store), for queries and tests. */
struct sqlite3 *coordinator_store_db(coordinator_store *s);

/* ---- models ---- */

/* Records the model directory dir: its path as given, the SHA-256 of dir/model.safetensors
 * (hex, computed while streaming the file) and the shape from dir/config.json. Recording the
 * same path with the same weights again returns the existing row. *id receives the model id. */
int coordinator_model_record(coordinator_store *s, const char *dir, int64_t *id, char *err);

/* ---- datasets and games ---- */

/* Creates a dataset named name (coordinator_name_valid) with a free-text source description.
 * A name that exists is COMMON_ERR_INVALID ("dataset 'x' exists"), unless append, when *id is
 * the existing dataset's. */
int coordinator_dataset_create(coordinator_store *s, const char *name, const char *source,
                               bool append, int64_t *id, char *err);
/* The id and the number of games of the dataset named name; COMMON_ERR_NOT_FOUND if absent.
 * n_games may be NULL. */
int coordinator_dataset_find(coordinator_store *s, const char *name, int64_t *id, uint64_t *n_games,
                             char *err);

/* Counts of an import or generation. */
typedef struct coordinator_import_stats {
    uint64_t n_read;      /* games read from the input */
    uint64_t n_added;     /* new games stored */
    uint64_t n_duplicate; /* games the dataset already held (same moves), not stored again */
    uint64_t n_skipped;   /* games refused (malformed, illegal, empty, too long) */
} coordinator_import_stats;

/* Callbacks of the game writers; any may be NULL. */
typedef struct coordinator_import_hooks {
    /* A refused game: where ("line 7", "game 3 (line 40)") and why. */
    void (*skipped)(void *ctx, const char *where, const char *reason);
    /* After each committed batch: the counts so far and, for a file, the bytes consumed. */
    void (*progress)(void *ctx, const coordinator_import_stats *st, uint64_t bytes);
    void *ctx;
} coordinator_import_hooks;

/* One game for coordinator_games_add. */
typedef struct coordinator_game_in {
    const char *uci;      /* space-separated UCI moves from the initial position */
    const char *where;    /* for a refusal message ("line 7"); NULL: "game N" of the batch */
    int64_t source_index; /* line or ordinal of the game in its source, stored with it */
} coordinator_game_in;

/* Adds games to a dataset in one transaction: each game is checked with chess_legal_tokens and
 * stored as a row of `game` (next index in the dataset) with one row of `position` per token
 * (token, move index, phase, number of legal next tokens). A game with no moves, a malformed or
 * illegal move, or more than max_tokens tokens counting `<s>` (0: no limit) is refused
 * (hooks->skipped); a game the dataset already holds is counted as a duplicate and not stored.
 * st (required) is added to. On an error nothing of the batch is stored. */
int coordinator_games_add(coordinator_store *s, int64_t dataset_id, const char *source,
                          const coordinator_game_in *games, size_t n, size_t max_tokens,
                          coordinator_import_stats *st, const coordinator_import_hooks *hooks,
                          char *err);

typedef enum coordinator_games_format {
    COORDINATOR_GAMES_AUTO, /* PGN when the path ends in .pgn or the content looks like PGN */
    COORDINATOR_GAMES_UCI,  /* one game per line (chess_uci_reader) */
    COORDINATOR_GAMES_PGN,  /* PGN (chess_pgn_reader) */
} coordinator_games_format;

/* The format of a games file: .pgn (any case) is PGN; otherwise the first line that is neither
 * blank nor a '#' comment decides: PGN when it starts with '[' (a tag pair) or a move number
 * ("1."), or when it starts with '{' (a comment) or '%', else UCI lines. head holds the first
 * bytes of the file (len may be 0). */
coordinator_games_format coordinator_games_detect(const char *path, const char *head, size_t len);

/* Streams the games of path (fmt AUTO: coordinator_games_detect on its first 64 KiB) into the
 * dataset in transactions of COORDINATOR_IMPORT_BATCH games; memory stays bounded whatever the
 * file's size. Games refused by the reader (PGN) or by coordinator_games_add go to
 * hooks->skipped. A read error stops the import (COMMON_ERR_IO); the games read before it
 * are stored. */
#define COORDINATOR_IMPORT_BATCH 2000
int coordinator_games_import(coordinator_store *s, int64_t dataset_id, const char *path,
                             coordinator_games_format fmt, size_t max_tokens,
                             coordinator_import_stats *st, const coordinator_import_hooks *hooks,
                             char *err);

/* Generates games i = 0..n-1 with chess_random_game(chess_random_game_seed(seed, i),
 * max_tokens), the games `chesslens chess random --n N --seed S --max-tokens T` prints, and adds
 * them in batches (duplicates, possible only with a small max_tokens, are counted and not
 * stored again, so indices then differ from the line numbers). */
int coordinator_games_generate(coordinator_store *s, int64_t dataset_id, uint64_t n, uint64_t seed,
                               size_t max_tokens, coordinator_import_stats *st,
                               const coordinator_import_hooks *hooks, char *err);

/* ---- sweeps and jobs ---- */

/* Creates the sweep of spec in one transaction: a `sweep` row (name, submission_id, canonical
 * spec, dataset, model) and one `job` row per analysis (index i, kind, canonical analysis
 * JSON). model_id <= 0 leaves the model unset. The dataset must exist (NOT_FOUND) and hold the
 * games range (INVALID, path "games"). With a model, an aggregate analysis' games must fit its
 * n_ctx (INVALID, naming the first longer game). A submission_id (NULL: none) already stored with
 * the same spec returns that sweep with *existed true; with another spec it is INVALID, as is a
 * name already taken. Nothing is created on an error. *sweep_id is set; existed may be NULL. */
int coordinator_sweep_create(coordinator_store *s, const coordinator_spec *spec,
                             const char *submission_id, int64_t model_id, int64_t *sweep_id,
                             bool *existed, char *err);
/* coordinator_spec_parse then coordinator_sweep_create: an invalid spec creates nothing. */
int coordinator_sweep_submit(coordinator_store *s, const char *json, size_t len,
                             const char *submission_id, int64_t model_id, int64_t *sweep_id,
                             bool *existed, char *err);
/* The id of job `index` (the analysis' position in the spec) of a sweep; NOT_FOUND if none. */
int coordinator_job_find(coordinator_store *s, int64_t sweep_id, size_t index, int64_t *job_id,
                         char *err);

/* ---- tasks and leases ---- */

/* A task the planner defines: a key unique within its job ("g0-100", "g17-c40") and an opaque
 * body the executor reads (the store never looks inside). */
typedef struct coordinator_task_def {
    const char *key;
    const void *body;
    size_t body_len;
} coordinator_task_def;

/* Inserts tasks (state pending) in one transaction; a key the job already has is left as it is,
 * so planning twice adds nothing. n_added (may be NULL) receives the number of new rows. */
int coordinator_tasks_add(coordinator_store *s, int64_t job_id, const coordinator_task_def *tasks,
                          size_t n, size_t *n_added, char *err);

/* A leased task. The strings and body are owned by the array (coordinator_leases_free). */
typedef struct coordinator_lease {
    int64_t task_id, job_id, sweep_id;
    size_t analysis; /* the job's index in its sweep's spec */
    char *key;
    void *body;
    size_t body_len;
    uint64_t epoch;      /* lease epoch: a result or heartbeat must carry it */
    uint32_t attempt;    /* 1 for the first dispatch */
    int64_t deadline_ns; /* lease deadline as given (CLOCK_MONOTONIC ns of the coordinator) */
} coordinator_lease;

/* Leases up to max pending tasks of active sweeps (lowest ids first; those with not_before_ns
 * <= now_ns; a cancelled sweep's tasks stay pending) to
 * worker in one transaction: state leased, worker, lease_epoch + 1, attempts + 1, deadline
 * deadline_ns. *out (coordinator_leases_free) receives *n_out leases (0 when none is pending;
 * *out may then be NULL). */
int coordinator_tasks_claim(coordinator_store *s, const char *worker, size_t max, int64_t now_ns,
                            int64_t deadline_ns, coordinator_lease **out, size_t *n_out, char *err);
/* coordinator_tasks_claim, taking first the tasks of sweeps whose model's weights have the
 * SHA-256 prefer_sha256 (a model the worker holds loaded), then, for what is left of max, the
 * lowest ids of any sweep. prefer_sha256 NULL or "": no preference. */
int coordinator_tasks_claim_preferring(coordinator_store *s, const char *worker, size_t max,
                                       int64_t now_ns, int64_t deadline_ns,
                                       const char *prefer_sha256, coordinator_lease **out,
                                       size_t *n_out, char *err);
void coordinator_leases_free(coordinator_lease *leases, size_t n);

/* What a completion, heartbeat or failure report did. */
typedef enum coordinator_fence {
    COORDINATOR_STORED = 0,         /* accepted: this call stored it */
    COORDINATOR_ALREADY_STORED = 1, /* the task was done already: nothing stored, ack it */
    COORDINATOR_FENCED = 2,         /* the epoch is not the task's current lease: refused */
} coordinator_fence;

/* Extends a lease (heartbeat) to deadline_ns when the task is leased with this epoch
 * (COORDINATOR_STORED); otherwise nothing changes (FENCED, or ALREADY_STORED when done). */
int coordinator_task_extend(coordinator_store *s, int64_t task_id, uint64_t epoch,
                            int64_t deadline_ns, coordinator_fence *status, char *err);

/* Records a failed attempt of the leased task with this epoch: last_error is kept and the task
 * goes back to pending with not_before_ns (a backoff the scheduler chose), or to dead once its
 * attempts reached max_attempts (0: no limit). A task not leased with this epoch is left as it
 * is (FENCED, or ALREADY_STORED when done). */
int coordinator_task_fail(coordinator_store *s, int64_t task_id, uint64_t epoch, const char *error,
                          uint32_t max_attempts, int64_t not_before_ns, coordinator_fence *status,
                          char *err);

/* Puts the leased task with this epoch back to pending as if that lease had not been made: its
 * attempt is not counted (a worker that stops hands back the tasks it has not started). Its
 * lease epoch stays, so a report of the returned lease is fenced. A task not leased with this
 * epoch is left as it is (FENCED, or ALREADY_STORED when done). */
int coordinator_task_return(coordinator_store *s, int64_t task_id, uint64_t epoch,
                            coordinator_fence *status, char *err);

/* Requeues every leased task whose deadline is before now_ns (last_error "lease expired") with
 * a backoff like a failure's: not before now_ns + a uniform draw in [0, min(cap, base *
 * 2^(attempts-1))) (base 0: no backoff); or marks it dead when its attempts reached
 * max_attempts (0: no limit). n (may be NULL) receives the count. */
int coordinator_tasks_expire(coordinator_store *s, int64_t now_ns, uint32_t max_attempts,
                             int64_t backoff_base_ns, int64_t backoff_cap_ns, size_t *n, char *err);

/* Task counts of a sweep by state, for progress and for deciding when it is finished. */
typedef struct coordinator_sweep_progress {
    uint64_t pending, leased, done, dead;
    int64_t next_not_before_ns; /* earliest not_before_ns of a pending task (0: none waits) */
} coordinator_sweep_progress;

int coordinator_sweep_progress_get(coordinator_store *s, int64_t sweep_id,
                                   coordinator_sweep_progress *out, char *err);

/* ---- results ---- */

/* Patching results of one task, pair by pair (columns [n]). Each pair's values come from its
 * interp_patch_result: one row per value, with the coordinates of the kind's axes (component
 * label for "every" kinds, layer, pos or dest_pos, head, src_pos). */
typedef struct coordinator_patch_batch {
    size_t n;
    interp_patch_kind kind;                   /* the job's patch kind */
    const uint64_t *game;                     /* [n] game index in the sweep's dataset */
    const uint32_t *cutoff;                   /* [n] prompt length in tokens, `<s>` included */
    const int32_t *corrupt_pos;               /* [n] corrupted position; -1 for another game */
    const char *const *clean_token;           /* [n] clean token there (NULL with -1) */
    const char *const *corrupt_token;         /* [n] its replacement (NULL with -1) */
    const int64_t *corrupt_game;              /* [n] corrupting game index, -1 (NULL: all -1) */
    const char *const *metric;                /* [n] resolved metric ("logit_diff:e4,d5") */
    const bool *normalized;                   /* [n] values are normalised */
    const interp_patch_result *const *result; /* [n] shape, values, axes, labels, metrics */
} coordinator_patch_batch;

/* Predictions of one task, one row per (game, position, rank) (columns [n]). */
typedef struct coordinator_prediction_batch {
    size_t n;
    const uint64_t *game;     /* [n] game index in the dataset */
    const uint32_t *pos;      /* [n] position (0 = `<s>`) the prediction follows */
    const uint32_t *rank;     /* [n] 1 = most probable */
    const char *const *token; /* [n] predicted token text */
    const float *logprob;     /* [n] */
    const uint8_t *legal;     /* [n] 1 when the token may legally come next */
} coordinator_prediction_batch;

/* Everything a task produced; NULL members are absent. Aggregates are the task's mergeable
 * partials: legal-move statistics (the four statistics min_legal, max_illegal, mean_legal and
 * mean_illegal are stored per component x position: sum, count, min, max over the task's games;
 * cells with count 0 are not stored) and neuron sums per layer x neuron x group (groups with no
 * position are not stored). The views merge the partials of all tasks of a sweep. */
typedef struct coordinator_results {
    const coordinator_patch_batch *patch;
    const interp_legal_stats *legal;
    const interp_neuron_stats *neurons;
    const coordinator_prediction_batch *predictions;
} coordinator_results;

/* Completes the task in one transaction: when it is done already, nothing is written
 * (COORDINATOR_ALREADY_STORED); when it is not leased with this epoch, nothing is written
 * (COORDINATOR_FENCED); otherwise its results (may be NULL) are inserted through prepared
 * statements, keyed by the task so that a repeat inserts nothing, and the task is marked done
 * (COORDINATOR_STORED). An error rolls everything back and leaves the task as it was. */
int coordinator_task_complete(coordinator_store *s, int64_t task_id, uint64_t epoch,
                              const coordinator_results *results, coordinator_fence *status,
                              char *err);

/* ---- batches ---- */

/* A batch makes many store operations one transaction (the scheduler's: every dispatch,
 * completion and reply of one turn of its loop share a commit). Between batch_begin and
 * batch_commit each operation above runs in a savepoint, so one that fails undoes only itself
 * and the batch goes on; nothing is durable before batch_commit returns 0. A batch that fails
 * to commit is rolled back whole. One batch at a time (INVALID otherwise). */
int coordinator_store_batch_begin(coordinator_store *s, char *err);
int coordinator_store_batch_commit(coordinator_store *s, char *err);
void coordinator_store_batch_rollback(coordinator_store *s);
/* Asks that the open batch's commit survive a power loss: batch_commit then also fsyncs the
 * write-ahead log (which makes every earlier commit durable too) before it returns. Without
 * it, under synchronous NORMAL, a commit is written to the WAL but not synced: it survives a
 * crash of the process, not necessarily of the machine. INVALID outside a batch. */
int coordinator_store_batch_mark_durable(coordinator_store *s, char *err);

/* How much a commit costs and what a power loss can take back (PRAGMA synchronous): NORMAL
 * (the default of coordinator_store_open) syncs the WAL only at checkpoints and in batches
 * marked durable, so a power loss may undo the last unmarked commits but never leaves the
 * database inconsistent; FULL syncs the WAL at every commit, so no commit is ever undone.
 * Outside a batch only (INVALID otherwise). */
typedef enum coordinator_sync { COORDINATOR_SYNC_NORMAL, COORDINATOR_SYNC_FULL } coordinator_sync;
int coordinator_store_set_sync(coordinator_store *s, coordinator_sync level, char *err);

/* ---- sweep control: what the service's clients ask for ---- */

/* A sweep with its task counts. */
typedef struct coordinator_sweep_info {
    int64_t id;
    char name[COORDINATOR_MAX_NAME + 1];
    bool cancelled;
    int64_t created_at; /* Unix seconds */
    coordinator_sweep_progress progress;
    uint64_t rows; /* result rows its tasks stored (the result tables' rows, pairs included) */
} coordinator_sweep_info;

/* The context length and vocabulary size of a recorded model, for
 * coordinator_spec_check_model. */
int coordinator_model_limits(coordinator_store *s, int64_t model_id, size_t *n_ctx, size_t *d_vocab,
                             char *err);

/* The id of the sweep named name; NOT_FOUND when none. */
int coordinator_sweep_find(coordinator_store *s, const char *name, int64_t *id, char *err);
/* Sweep sweep_id (0: every sweep, by id) with its counts. *out (free) receives *n entries. */
int coordinator_sweeps_list(coordinator_store *s, int64_t sweep_id, coordinator_sweep_info **out,
                            size_t *n, char *err);

/* What a dispatch of the sweep's tasks needs: the canonical spec text and the model directory
 * with the SHA-256 of its weights (*spec, *model_path: free). INVALID when the sweep has no
 * model recorded. */
int coordinator_sweep_dispatch_info(coordinator_store *s, int64_t sweep_id, char **spec,
                                    char **model_path, char model_sha256[65], char *err);

/* A dead task and its last error (strings owned by the array: coordinator_dead_tasks_free). */
typedef struct coordinator_dead_task {
    int64_t task_id, sweep_id;
    char *key;
    uint32_t attempts;
    char *error;
} coordinator_dead_task;

/* Up to max dead tasks of sweep_id (0: of every sweep), by id. */
int coordinator_dead_tasks(coordinator_store *s, int64_t sweep_id, size_t max,
                           coordinator_dead_task **out, size_t *n, char *err);
void coordinator_dead_tasks_free(coordinator_dead_task *t, size_t n);

/* A task and a lease epoch. */
typedef struct coordinator_task_ref {
    int64_t task_id;
    uint64_t epoch;
} coordinator_task_ref;

/* Cancels the sweep in one transaction: its state becomes cancelled, so its pending tasks are
 * no longer leased, and its leased tasks go back to pending without counting an attempt; their
 * epochs, returned in *leased (free; *n_leased entries), no longer fence anything in, so a late
 * report of them is answered lease_lost. Cancelling twice changes nothing more. */
int coordinator_sweep_cancel(coordinator_store *s, int64_t sweep_id, coordinator_task_ref **leased,
                             size_t *n_leased, char *err);
/* Gives the sweep's dead tasks another max_attempts: back to pending with attempts 0 and no
 * backoff (their last error is kept until they run again). *n (may be NULL): tasks requeued. */
int coordinator_sweep_retry_dead(coordinator_store *s, int64_t sweep_id, size_t *n, char *err);

/* Sets the deadline of every leased task to deadline_ns: a coordinator that starts re-arms the
 * leases of the one before it, whose monotonic clock meant nothing to this one. */
int coordinator_tasks_rearm(coordinator_store *s, int64_t deadline_ns, size_t *n, char *err);

/* ---- workers ---- */

/* Records that worker id (with a free-text description, may be NULL) was seen at now_ns. */
int coordinator_worker_seen(coordinator_store *s, const char *id, const char *info, int64_t now_ns,
                            char *err);

/* ------------------------------------------------------------------------------------------ */
/* Planner                                                                                     */

/* The planner turns a sweep into tasks and a leased task back into the work an executor runs
 * (docs/SWEEP.md, "Tasks"). A task is sized to keep a worker busy yet be cheap to retry:
 *
 * - A patch task holds the clean/corrupted pairs of one cut-off N for a range of consecutive
 *   games, key "c<N>:g<from>-<to>". Pair counts are exact at planning time (they are read from
 *   the position table), so a task's size is known before it runs.
 * - An aggregate task (legal_stats, neuron_stats, predictions) holds a range of games, key
 *   "g<from>-<to>". Its results are mergeable partials that the store merges exactly (sums in
 *   double, counts, minima, maxima), so the merged view does not depend on the split.
 *
 * Bodies are compact JSON objects with sorted keys, self-describing with the spec and the
 * store: {"analysis":0,"cutoff":40,"games":[0,17],"kind":"patch","pairs":63} and
 * {"analysis":1,"games":[0,64],"kind":"legal_stats"}. "pairs" is the count the planner
 * computed; loading the work recomputes it and refuses a task whose count differs. */

typedef struct coordinator_plan_opts {
    size_t pairs_per_task; /* patch tasks: at most this many clean/corrupt pairs (0: 64) */
    size_t games_per_task; /* aggregate tasks: games per task (0: 64) */
} coordinator_plan_opts;

/* Expands every job of the sweep (spec must be the sweep's own spec: its canonical text is
 * compared with the stored one, INVALID otherwise) into tasks, one coordinator_tasks_add
 * transaction per job. opts NULL: the defaults.
 *
 * Patch jobs, per cut-off N in the spec's order: the games of the sweep's range in index order,
 * each giving the pairs below; consecutive games are packed greedily into a task while its
 * pair count stays <= pairs_per_task (a game is never split, so one game with more pairs than
 * that is a task on its own). A task's range starts at its first game with a pair and ends
 * after its last one; games with no pair between tasks belong to none. A cut-off whose games
 * give no pair has no task. Pairs per game at cut-off N, with p the corrupted position
 * (corrupt.position: p >= 1 as given, p < 0 counts from the end, N + p; "last" is N - 1):
 * - a game with fewer than N tokens, or p outside 1..N-1: none;
 * - each_legal_alternative: n_legal(p - 1) - 1, every token legal after position p - 1 other
 *   than the clean token at p (n_legal as stored in the position table);
 * - random_legal_alternative: 1 when such an alternative exists, else none;
 * - a given token: 1, none when it is the clean token at p (it need not be legal there);
 * - another game G: 1 when G has at least N tokens and G is not the game itself, else none.
 *   G must be a game of the dataset (NOT_FOUND otherwise); it may lie outside the range.
 *
 * Aggregate jobs: games [from, to) of the sweep in chunks of games_per_task (the last may be
 * smaller).
 *
 * Planning again with the same spec and options adds nothing. A job that already has tasks
 * must have exactly the tasks this planning defines (INVALID otherwise, e.g. planned before
 * with other sizes: two overlapping plans would count games twice); a planning interrupted
 * between jobs is completed by planning again. *n_tasks (may be NULL) receives the number of
 * tasks the sweep has. */
int coordinator_plan_sweep(coordinator_store *s, int64_t sweep_id, const coordinator_spec *spec,
                           const coordinator_plan_opts *opts, size_t *n_tasks, char *err);

/* One clean/corrupted pair of a patch task, as token texts ready for a tokenizer. */
typedef struct coordinator_pair {
    uint64_t game;                /* game index in the dataset */
    int32_t corrupt_pos;          /* corrupted position (1..N-1), -1 when corrupted by a game */
    int64_t corrupt_game;         /* the corrupting game's index, -1 otherwise */
    char clean_token[4];          /* clean token at corrupt_pos ("" with -1) */
    char corrupt_token[4];        /* its replacement ("" with -1) */
    const char *uci;              /* the clean game's moves (for its legal mask; owned by the
                                   * work) */
    const char *const *clean;     /* [cutoff] token texts, "<s>" first (owned by the work) */
    const char *const *corrupted; /* [cutoff] token texts (owned by the work) */
} coordinator_pair;

/* One game of an aggregate task, whole. */
typedef struct coordinator_work_game {
    uint64_t index;            /* game index in the dataset */
    const char *uci;           /* canonical moves (owned by the work) */
    size_t n_tokens;           /* positions, `<s>` included */
    const char *const *tokens; /* [n_tokens] token texts, "<s>" first (owned by the work) */
    const uint8_t *phases;     /* [n_tokens] chess_phase of each position (owned by the work) */
} coordinator_work_game;

struct coordinator_work_mem;

/* The work of one task. Read the fields; create it with coordinator_work_load. */
typedef struct coordinator_work {
    coordinator_analysis_kind kind;
    size_t analysis;                    /* the job's index in the spec */
    const coordinator_analysis *params; /* &spec->analyses[analysis] (borrowed from the spec) */
    uint64_t game_from, game_to;        /* the task's games [from, to) */
    /* patch: the cut-off N (prompt length, `<s>` included) and the pairs, by game index, then
     * by replacement in the order of `chesslens chess legal` (squares a1, a2, ..., h8, then
     * q r b n). 0 / none for an aggregate task. */
    size_t cutoff;
    size_t n_pairs;
    const coordinator_pair *pairs; /* [n_pairs] */
    /* aggregates: every game of [from, to), by index. None for a patch task. */
    size_t n_games;
    const coordinator_work_game *games; /* [n_games] */
    struct coordinator_work_mem *mem;   /* storage of everything above (private) */
} coordinator_work;

/* Loads the work of one leased task of job job_id from its body, the spec and the dataset: for
 * a patch task the cut-off and every pair, for an aggregate task the games (index, UCI text,
 * token texts and phases per position). The spec must be the job's sweep's (INVALID
 * otherwise), and the body must be one the planner wrote for this job: a malformed body is
 * PARSE, one that does not fit the spec (another analysis or kind, a cut-off or games outside
 * it) or whose pair count differs from the dataset's is INVALID. Legal alternatives are
 * computed from the game with chess_legal_tokens; random_legal_alternative takes alternative
 * number h % n of the n there, h = mix(mix(mix(seed) ^ game) ^ N) with mix the SplitMix64
 * finaliser (add 0x9e3779b97f4a7c15, then the two xor-shift-multiply steps), so the draw
 * depends on (seed, game, N) only. On success *out (coordinator_work_destroy) is set; it
 * borrows spec, which must outlive it. */
int coordinator_work_load(coordinator_store *s, const coordinator_spec *spec, int64_t job_id,
                          const void *body, size_t body_len, coordinator_work **out, char *err);
/* Frees the work; NULL is fine; *w is NULL afterwards. */
void coordinator_work_destroy(coordinator_work **w);

#endif
