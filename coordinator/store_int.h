/*
 * store_int.h: what the store's files share: the handle with its cache of prepared statements,
 * the schema migrations (schema.c), the SQLite error helpers and SHA-256 (sha256.c). Private to
 * coordinator/.
 */
#ifndef CHESSLENS_COORDINATOR_STORE_INT_H
#define CHESSLENS_COORDINATOR_STORE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coordinator/coordinator.h"

/* One statement of the store's cache: prepared once, reused by every call with its text. */
typedef struct store_cached {
    const char *key; /* the text's address at its first use (a literal's: the fast match) */
    char *sql;       /* its own copy of the text (the match that decides) */
    sqlite3_stmt *st;
} store_cached;

/* One game as stored, all its positions: the work loader's cache entry (store_game_*). */
typedef struct store_game {
    int64_t dataset_id; /* the key: (dataset_id, idx) */
    uint64_t idx;
    size_t n_tokens; /* positions, `<s>` included */
    char *uci;       /* the game's moves */
    char (*text)[4]; /* [n_tokens] token texts */
    uint8_t *phase;  /* [n_tokens] chess_phase */
    int *n_legal;    /* [n_tokens] legal next tokens after the position */
} store_game;

/* Direct-mapped slots of the game cache. A patch sweep's tasks go cut-off by cut-off, each
 * cut-off over every game, and a dispatch reads its task's games again (coordinator_work_load):
 * 8,192 slots keep the games of a sweep of a few thousand games (about 2 KiB each at 127
 * tokens, allocated as they are read; the slots themselves are 64 bytes each). */
#define STORE_GAME_SLOTS 8192

/* A job as the work loader reads it (store_job_get): its analysis index and its sweep's
 * dataset and spec text. */
typedef struct store_job {
    int64_t id;
    int64_t analysis;
    int64_t dataset_id;
    char *spec; /* canonical spec text; NULL: the slot is empty */
} store_job;

/* Direct-mapped slots of the job cache: a sweep has one job per analysis, and its tasks are
 * claimed job by job; a few slots keep several sweeps running side by side. Emptied on every
 * rollback, since a job read in a transaction that is taken back may not exist (and its id may
 * be given to another job). */
#define STORE_JOB_SLOTS 64

struct coordinator_store {
    sqlite3 *db;
    bool readonly;
    bool batch; /* inside coordinator_store_batch_begin: transactions below nest as savepoints */
    bool batch_durable;    /* the open batch's commit also syncs the WAL */
    coordinator_sync sync; /* PRAGMA synchronous in force */
    /* The service runs a few dozen distinct statements tens of thousands of times a second;
     * preparing one costs more than running it, so each is prepared once (store_stmt). */
    store_cached *cache; /* [n_cache] */
    size_t n_cache, cap_cache;
    /* Games never change once stored (no statement updates or deletes a game or a position),
     * so what was read is kept: [STORE_GAME_SLOTS], NULL until the first read. */
    store_game *games;
    /* Jobs never change once committed: [STORE_JOB_SLOTS], NULL until the first read. */
    store_job *jobs;
};

/* Game idx of the dataset as stored (borrowed from the store until its next store_game call or
 * its close), read and checked on first use through the store's statements. NOT_FOUND when the
 * dataset has no such game; INVALID when its rows are inconsistent. */
int store_game_get(coordinator_store *s, int64_t dataset_id, uint64_t idx, const store_game **out,
                   char *err);
/* Frees the cached games (coordinator_store_close). */
void store_games_free(coordinator_store *s);

/* Job job_id as stored with its sweep's dataset and spec text (borrowed from the store until its
 * next store_job_get or its close). NOT_FOUND when there is no such job. */
int store_job_get(coordinator_store *s, int64_t job_id, const store_job **out, char *err);
/* Frees the cached jobs (coordinator_store_close). */
void store_jobs_free(coordinator_store *s);

/* The number of migration steps; step i (1-based) takes user_version i - 1 to i. */
size_t store_schema_steps(void);

/* Runs the migration steps that take the database from its user_version up to target
 * (<= store_schema_steps()) in one transaction, setting user_version. Refuses (UNSUPPORTED) a
 * database newer than target. Tests use a smaller target to make an old database. */
int store_migrate(sqlite3 *db, int target, char *err);

/* "WHAT: <sqlite message>" into err with COMMON_ERR_IO (COMMON_ERR_INVALID for a constraint,
 * COMMON_ERR_NOMEM for SQLITE_NOMEM); returns the code. */
int store_fail(sqlite3 *db, char *err, const char *what);

/* Runs SQL without results (one or more statements). */
int store_exec(sqlite3 *db, const char *sql, const char *what, char *err);

/* Prepares sql into *st; an error names what. The caller finalizes *st. */
int store_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st, const char *what, char *err);

/* The store's prepared statement for sql (one SQL statement), prepared on its first use and
 * kept until coordinator_store_close; *st comes reset, with no parameter bound. It is the
 * store's: the caller never finalizes it, hands it back with store_stmt_done once its rows are
 * read (on every path, errors included: a statement left mid-step keeps its read open), and
 * does not ask for the same text again before that (both would get the same statement). */
int store_stmt(coordinator_store *s, const char *sql, sqlite3_stmt **st, const char *what,
               char *err);
/* Resets st and clears its parameters; NULL is fine. */
void store_stmt_done(sqlite3_stmt *st);
/* Runs one cached statement that returns no rows (or whose rows do not matter). */
int store_run(coordinator_store *s, const char *sql, const char *what, char *err);
/* Steps a statement that returns no row (or whose rows do not matter); an error names what. */
int store_step_done(sqlite3 *db, sqlite3_stmt *st, const char *what, char *err);

/* One store operation's transaction: BEGIN IMMEDIATE / COMMIT / ROLLBACK, or inside a batch
 * (coordinator_store_batch_begin) a savepoint, so that a failed operation undoes only itself
 * (rollback ignores errors: it runs on failure paths). */
int store_begin(coordinator_store *s, char *err);
int store_commit(coordinator_store *s, char *err);
void store_rollback(coordinator_store *s);

/* The phase codes stored in position.phase are chess_phase values. */

/* ---- SHA-256 ---- */

typedef struct sha256_ctx {
    uint32_t h[8];
    uint64_t n_bytes;
    uint8_t block[64];
    size_t used;
} sha256_ctx;

void sha256_init(sha256_ctx *c);
void sha256_update(sha256_ctx *c, const void *data, size_t len);
/* Writes the digest as 64 lowercase hex digits and a terminator. */
void sha256_final_hex(sha256_ctx *c, char out[65]);

/* SHA-256 of a whole file, streamed; hex into out. */
int sha256_file_hex(const char *path, char out[65], char *err);

#endif
