/*
 * game_cache: the games the work loader reads, kept in memory. The planner reads every game of a
 * sweep to count its pairs, and each dispatch reads its task's games again to rebuild the work
 * (coordinator_work_load): on a sweep of short tasks, reading a game's positions was the largest
 * part of a dispatch. Games are immutable once stored (nothing updates or deletes a game or a
 * position row), so an entry never goes stale; a direct-mapped table keyed by (dataset, index)
 * keeps the last game read in each slot.
 */
#include <stdlib.h>
#include <string.h>

#include "coordinator/store_int.h"

static void game_clear(store_game *g) {
    free(g->uci);
    free(g->text);
    free(g->phase);
    free(g->n_legal);
    *g = (store_game){0};
}

void store_games_free(coordinator_store *s) {
    if (s->games == NULL) {
        return;
    }
    for (size_t i = 0; i < STORE_GAME_SLOTS; i++) {
        game_clear(&s->games[i]);
    }
    free(s->games);
    s->games = NULL;
}

static size_t slot_of(int64_t dataset_id, uint64_t idx) {
    uint64_t h = (uint64_t)dataset_id * 0x9E3779B97F4A7C15ull ^ idx * 0xC2B2AE3D27D4EB4Full;
    return (size_t)((h ^ (h >> 29)) % STORE_GAME_SLOTS);
}

/* Reads the game row and all its position rows into g (empty on entry). */
static int read_stored(coordinator_store *s, int64_t dataset_id, uint64_t idx, store_game *g,
                       char *err) {
    sqlite3_stmt *game = NULL, *pos = NULL;
    int rc = store_stmt(s, "SELECT id, n_tokens, uci FROM game WHERE dataset_id = ? AND idx = ?",
                        &game, "read game", err);
    if (rc != 0) {
        return rc;
    }
    sqlite3_bind_int64(game, 1, dataset_id);
    sqlite3_bind_int64(game, 2, (sqlite3_int64)idx);
    int step = sqlite3_step(game);
    if (step == SQLITE_DONE) {
        store_stmt_done(game);
        return common_fail(err, COMMON_ERR_NOT_FOUND, "read game: the dataset has no game %llu",
                           (unsigned long long)idx);
    }
    if (step != SQLITE_ROW) {
        rc = store_fail(s->db, err, "sqlite3_step(read game)");
        store_stmt_done(game);
        return rc;
    }
    int64_t game_id = sqlite3_column_int64(game, 0);
    sqlite3_int64 n_tokens = sqlite3_column_int64(game, 1);
    const char *uci = (const char *)sqlite3_column_text(game, 2);
    /* a game longer than any model's context is refused when it is stored; the bound here only
     * keeps a damaged row from sizing an allocation */
    if (n_tokens < 1 || n_tokens > 1 << 20) {
        store_stmt_done(game);
        return common_fail(err, COMMON_ERR_INVALID, "read game %llu: %lld tokens",
                           (unsigned long long)idx, (long long)n_tokens);
    }
    size_t n = (size_t)n_tokens;
    *g = (store_game){.dataset_id = dataset_id, .idx = idx, .n_tokens = n};
    g->uci = strdup(uci != NULL ? uci : "");
    g->text = malloc(n * sizeof *g->text);
    g->phase = malloc(n * sizeof *g->phase);
    g->n_legal = malloc(n * sizeof *g->n_legal);
    store_stmt_done(game);
    if (g->uci == NULL || g->text == NULL || g->phase == NULL || g->n_legal == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "read game: out of memory");
    }
    if ((rc = store_stmt(s,
                         "SELECT pos, token, phase, n_legal FROM position "
                         "WHERE game_id = ? ORDER BY pos",
                         &pos, "read positions", err)) != 0) {
        return rc;
    }
    sqlite3_bind_int64(pos, 1, game_id);
    size_t i = 0;
    while ((step = sqlite3_step(pos)) == SQLITE_ROW) {
        const char *tok = (const char *)sqlite3_column_text(pos, 1);
        if (i >= n || sqlite3_column_int64(pos, 0) != (sqlite3_int64)i || tok == NULL ||
            strlen(tok) >= sizeof g->text[0]) {
            store_stmt_done(pos);
            return common_fail(err, COMMON_ERR_INVALID, "read game %llu: bad position row %zu",
                               (unsigned long long)idx, i);
        }
        memcpy(g->text[i], tok, strlen(tok) + 1);
        g->phase[i] = (uint8_t)sqlite3_column_int(pos, 2);
        g->n_legal[i] = sqlite3_column_int(pos, 3);
        i++;
    }
    rc = step == SQLITE_DONE ? 0 : store_fail(s->db, err, "sqlite3_step(read positions)");
    store_stmt_done(pos);
    if (rc == 0 && i != n) {
        rc = common_fail(err, COMMON_ERR_INVALID, "read game %llu: %zu of %zu positions stored",
                         (unsigned long long)idx, i, n);
    }
    return rc;
}

int store_game_get(coordinator_store *s, int64_t dataset_id, uint64_t idx, const store_game **out,
                   char *err) {
    if (s->games == NULL && (s->games = calloc(STORE_GAME_SLOTS, sizeof *s->games)) == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "read game: out of memory");
    }
    store_game *slot = &s->games[slot_of(dataset_id, idx)];
    if (slot->uci != NULL && slot->dataset_id == dataset_id && slot->idx == idx) {
        *out = slot;
        return 0;
    }
    game_clear(slot);
    store_game g = {0};
    int rc = read_stored(s, dataset_id, idx, &g, err);
    if (rc != 0) {
        game_clear(&g);
        return rc;
    }
    *slot = g;
    *out = slot;
    return 0;
}
