/*
 * games: datasets of games in the store. A game is stored once per dataset (its moves are the
 * identity: a re-run of an import or a generation adds nothing), as a row of `game` with the
 * canonical UCI text and one row of `position` per token with what the analyses group by: the
 * token, its move index and phase, and how many tokens may legally follow it. Files are
 * streamed (chess_uci_reader / chess_pgn_reader) and written in transactions of
 * COORDINATOR_IMPORT_BATCH games with prepared statements, so memory stays bounded by one
 * batch whatever the size of the input.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chess/chess.h"
#include "coordinator/store_int.h"

/* FNV-1a, 64 bits: a cheap key to find a game's possible duplicates (the text decides). */
static int64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ULL;
    }
    return (int64_t)h;
}

/* The canonical move text of a tokenized game: moves separated by one space. */
static char *canonical_uci(const chess_token_info *t, size_t n) {
    char *out = malloc(n * 3 + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 1; i < n; i++) {
        if (i > 1 && t[i].token.move_index != t[i - 1].token.move_index) {
            out[k++] = ' ';
        }
        size_t len = strlen(t[i].token.text);
        memcpy(out + k, t[i].token.text, len);
        k += len;
    }
    out[k] = '\0';
    return out;
}

typedef struct writer {
    sqlite3_stmt *next_idx, *dup, *game, *pos;
} writer;

static void writer_finalize(writer *w) {
    sqlite3_finalize(w->next_idx);
    sqlite3_finalize(w->dup);
    sqlite3_finalize(w->game);
    sqlite3_finalize(w->pos);
}

static int writer_prepare(sqlite3 *db, writer *w, char *err) {
    int rc;
    if ((rc = store_prepare(db, "SELECT COALESCE(MAX(idx) + 1, 0) FROM game WHERE dataset_id = ?",
                            &w->next_idx, "next game index", err)) != 0 ||
        (rc = store_prepare(db,
                            "SELECT idx FROM game WHERE dataset_id = ? AND uci_hash = ? AND "
                            "uci = ? LIMIT 1",
                            &w->dup, "find duplicate game", err)) != 0 ||
        (rc = store_prepare(db,
                            "INSERT INTO game (dataset_id, idx, uci, uci_hash, n_tokens, source, "
                            "source_index) VALUES (?, ?, ?, ?, ?, ?, ?)",
                            &w->game, "insert game", err)) != 0 ||
        (rc = store_prepare(db,
                            "INSERT INTO position (game_id, pos, token, move_index, phase, "
                            "n_legal) VALUES (?, ?, ?, ?, ?, ?)",
                            &w->pos, "insert position", err)) != 0) {
        return rc;
    }
    return 0;
}

static void skip(const coordinator_import_hooks *h, const char *where, const char *reason) {
    if (h != NULL && h->skipped != NULL) {
        h->skipped(h->ctx, where, reason);
    }
}

/* Stores one checked game; *added false when the dataset holds it already. */
static int put_game(sqlite3 *db, writer *w, int64_t dataset_id, int64_t idx, const char *source,
                    int64_t source_index, const chess_token_info *t, size_t n, bool *added,
                    char *err) {
    char *uci = canonical_uci(t, n);
    if (uci == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "games: out of memory");
    }
    int64_t hash = fnv1a(uci);
    int rc = 0;
    sqlite3_reset(w->dup);
    sqlite3_bind_int64(w->dup, 1, dataset_id);
    sqlite3_bind_int64(w->dup, 2, hash);
    sqlite3_bind_text(w->dup, 3, uci, -1, SQLITE_STATIC);
    int r = sqlite3_step(w->dup);
    sqlite3_reset(w->dup);
    if (r == SQLITE_ROW) {
        *added = false;
        goto done;
    }
    if (r != SQLITE_DONE) {
        rc = store_fail(db, err, "sqlite3_step(find duplicate game)");
        goto done;
    }
    sqlite3_reset(w->game);
    sqlite3_bind_int64(w->game, 1, dataset_id);
    sqlite3_bind_int64(w->game, 2, idx);
    sqlite3_bind_text(w->game, 3, uci, -1, SQLITE_STATIC);
    sqlite3_bind_int64(w->game, 4, hash);
    sqlite3_bind_int64(w->game, 5, (sqlite3_int64)n);
    sqlite3_bind_text(w->game, 6, source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(w->game, 7, source_index);
    if (sqlite3_step(w->game) != SQLITE_DONE) {
        rc = store_fail(db, err, "sqlite3_step(insert game)");
        goto done;
    }
    int64_t game_id = sqlite3_last_insert_rowid(db);
    for (size_t i = 0; i < n; i++) {
        sqlite3_reset(w->pos);
        sqlite3_bind_int64(w->pos, 1, game_id);
        sqlite3_bind_int64(w->pos, 2, (sqlite3_int64)i);
        sqlite3_bind_text(w->pos, 3, t[i].token.text, -1, SQLITE_STATIC);
        sqlite3_bind_int(w->pos, 4, t[i].token.move_index);
        sqlite3_bind_int(w->pos, 5, (int)t[i].token.phase);
        sqlite3_bind_int(w->pos, 6, t[i].n_next);
        if (sqlite3_step(w->pos) != SQLITE_DONE) {
            rc = store_fail(db, err, "sqlite3_step(insert position)");
            goto done;
        }
    }
    *added = true;

done:
    free(uci);
    return rc;
}

int coordinator_games_add(coordinator_store *s, int64_t dataset_id, const char *source,
                          const coordinator_game_in *games, size_t n, size_t max_tokens,
                          coordinator_import_stats *st, const coordinator_import_hooks *hooks,
                          char *err) {
    writer w = {0};
    coordinator_import_stats counts = {0};
    chess_token_info *tokens = NULL;
    int rc = store_begin(s, err);
    if (rc != 0) {
        return rc;
    }
    if ((rc = writer_prepare(s->db, &w, err)) != 0) {
        goto fail;
    }
    sqlite3_bind_int64(w.next_idx, 1, dataset_id);
    if (sqlite3_step(w.next_idx) != SQLITE_ROW) {
        rc = store_fail(s->db, err, "sqlite3_step(next game index)");
        goto fail;
    }
    int64_t idx = sqlite3_column_int64(w.next_idx, 0);
    for (size_t i = 0; i < n; i++) {
        char where[64];
        const char *at = games[i].where;
        if (at == NULL) {
            snprintf(where, sizeof where, "game %" PRId64, games[i].source_index);
            at = where;
        }
        counts.n_read++;
        char gerr[COMMON_ERR_LEN];
        size_t nt = 0;
        int grc = chess_legal_tokens(NULL, games[i].uci, &tokens, &nt, gerr);
        if (grc == COMMON_ERR_NOMEM && tokens == NULL) {
            rc = common_fail(err, grc, "games: %s", gerr);
            goto fail;
        }
        if (grc == 0 && nt < 2) {
            grc = common_fail(gerr, COMMON_ERR_INVALID, "no moves");
        }
        if (grc == 0 && max_tokens > 0 && nt > max_tokens) {
            grc = common_fail(gerr, COMMON_ERR_INVALID, "%zu tokens, more than the limit of %zu",
                              nt, max_tokens);
        }
        if (grc != 0) {
            counts.n_skipped++;
            skip(hooks, at, gerr);
        } else {
            bool added = false;
            if ((rc = put_game(s->db, &w, dataset_id, idx, source, games[i].source_index, tokens,
                               nt, &added, err)) != 0) {
                goto fail;
            }
            if (added) {
                counts.n_added++;
                idx++;
            } else {
                counts.n_duplicate++;
            }
        }
        free(tokens);
        tokens = NULL;
    }
    writer_finalize(&w);
    if ((rc = store_commit(s, err)) != 0) {
        store_rollback(s);
        return rc;
    }
    st->n_read += counts.n_read;
    st->n_added += counts.n_added;
    st->n_duplicate += counts.n_duplicate;
    st->n_skipped += counts.n_skipped;
    return 0;

fail:
    free(tokens);
    writer_finalize(&w);
    store_rollback(s);
    return rc;
}

/* ---- batches of owned games ---- */

typedef struct batch {
    coordinator_game_in games[COORDINATOR_IMPORT_BATCH];
    char *uci[COORDINATOR_IMPORT_BATCH];
    char *where[COORDINATOR_IMPORT_BATCH];
    size_t n;
} batch;

static void batch_clear(batch *b) {
    for (size_t i = 0; i < b->n; i++) {
        free(b->uci[i]);
        free(b->where[i]);
    }
    b->n = 0;
}

/* Takes ownership of uci (freed on failure too). */
static int batch_push(batch *b, char *uci, const char *where, int64_t source_index, char *err) {
    char *w = where != NULL ? strdup(where) : NULL;
    if (uci == NULL || (where != NULL && w == NULL)) {
        free(uci);
        free(w);
        return common_fail(err, COMMON_ERR_NOMEM, "games: out of memory");
    }
    b->uci[b->n] = uci;
    b->where[b->n] = w;
    b->games[b->n] = (coordinator_game_in){uci, w, source_index};
    b->n++;
    return 0;
}

static int batch_flush(coordinator_store *s, int64_t dataset_id, const char *source, batch *b,
                       size_t max_tokens, coordinator_import_stats *st,
                       const coordinator_import_hooks *hooks, uint64_t bytes, char *err) {
    int rc = 0;
    if (b->n > 0) {
        rc = coordinator_games_add(s, dataset_id, source, b->games, b->n, max_tokens, st, hooks,
                                   err);
    }
    batch_clear(b);
    if (rc == 0 && hooks != NULL && hooks->progress != NULL) {
        hooks->progress(hooks->ctx, st, bytes);
    }
    return rc;
}

/* ---- files ---- */

coordinator_games_format coordinator_games_detect(const char *path, const char *head, size_t len) {
    size_t pl = path != NULL ? strlen(path) : 0;
    if (pl >= 4) {
        const char *ext = path + pl - 4;
        if (ext[0] == '.' && tolower((unsigned char)ext[1]) == 'p' &&
            tolower((unsigned char)ext[2]) == 'g' && tolower((unsigned char)ext[3]) == 'n') {
            return COORDINATOR_GAMES_PGN;
        }
    }
    size_t i = 0;
    if (len >= 3 && (uint8_t)head[0] == 0xef && (uint8_t)head[1] == 0xbb &&
        (uint8_t)head[2] == 0xbf) {
        i = 3; /* a UTF-8 byte order mark */
    }
    while (i < len) {
        while (i < len && (head[i] == ' ' || head[i] == '\t' || head[i] == '\r')) {
            i++;
        }
        if (i < len && head[i] == '\n') {
            i++;
            continue;
        }
        if (i < len && head[i] == '#') {
            while (i < len && head[i] != '\n') {
                i++;
            }
            continue;
        }
        break;
    }
    if (i >= len) {
        return COORDINATOR_GAMES_UCI;
    }
    char c = head[i];
    if (c == '[' || c == '{' || c == '%') {
        return COORDINATOR_GAMES_PGN;
    }
    size_t j = i;
    while (j < len && head[j] >= '0' && head[j] <= '9') {
        j++;
    }
    if (j > i && j < len && head[j] == '.') {
        return COORDINATOR_GAMES_PGN;
    }
    return COORDINATOR_GAMES_UCI;
}

static uint64_t file_offset(FILE *f) {
    long off = ftell(f);
    return off >= 0 ? (uint64_t)off : 0;
}

static int import_uci(coordinator_store *s, int64_t dataset_id, const char *path, FILE *f, batch *b,
                      size_t max_tokens, coordinator_import_stats *st,
                      const coordinator_import_hooks *hooks, char *err) {
    chess_uci_reader *r = NULL;
    int rc = chess_uci_reader_new_file(&r, f, err);
    if (rc != 0) {
        return rc;
    }
    for (;;) {
        const char *line;
        size_t line_no;
        char rerr[COMMON_ERR_LEN];
        int got = chess_uci_reader_next(r, &line, &line_no, rerr);
        if (got == CHESS_UCI_END) {
            break;
        }
        if (got == COMMON_ERR_IO) {
            rc = common_fail(err, got, "games import %s: %s", path, rerr);
            break;
        }
        if (got < 0) {
            /* a bad line (NUL byte, too long): the reader has moved past it */
            st->n_read++;
            st->n_skipped++;
            skip(hooks, "", rerr);
            continue;
        }
        char where[48];
        snprintf(where, sizeof where, "line %zu", line_no);
        if ((rc = batch_push(b, strdup(line), where, (int64_t)line_no, err)) != 0) {
            break;
        }
        if (b->n == COORDINATOR_IMPORT_BATCH &&
            (rc = batch_flush(s, dataset_id, path, b, max_tokens, st, hooks, file_offset(f),
                              err)) != 0) {
            break;
        }
    }
    chess_uci_reader_destroy(&r);
    int frc = batch_flush(s, dataset_id, path, b, max_tokens, st, hooks, file_offset(f),
                          rc != 0 ? NULL : err);
    return rc != 0 ? rc : frc;
}

static int import_pgn(coordinator_store *s, int64_t dataset_id, const char *path, FILE *f, batch *b,
                      size_t max_tokens, coordinator_import_stats *st,
                      const coordinator_import_hooks *hooks, char *err) {
    chess_pgn_reader *r = NULL;
    int rc = chess_pgn_reader_new_file(&r, f, err);
    if (rc != 0) {
        return rc;
    }
    for (;;) {
        chess_game *game = NULL;
        char rerr[COMMON_ERR_LEN];
        int got = chess_pgn_reader_next(r, &game, rerr);
        if (got == CHESS_PGN_END) {
            break;
        }
        if (got == CHESS_PGN_SKIPPED) {
            st->n_read++;
            st->n_skipped++;
            skip(hooks, "", rerr);
            continue;
        }
        if (got < 0) {
            rc = common_fail(err, got, "games import %s: %s", path, rerr);
            break;
        }
        size_t n_games, n_skipped;
        chess_pgn_reader_counts(r, &n_games, &n_skipped);
        char *uci = NULL;
        rc = chess_game_to_uci(game, &uci, err);
        chess_game_destroy(&game);
        if (rc != 0) {
            break;
        }
        char where[48];
        snprintf(where, sizeof where, "game %zu", n_games + n_skipped);
        if ((rc = batch_push(b, uci, where, (int64_t)(n_games + n_skipped), err)) != 0) {
            break;
        }
        if (b->n == COORDINATOR_IMPORT_BATCH &&
            (rc = batch_flush(s, dataset_id, path, b, max_tokens, st, hooks, file_offset(f),
                              err)) != 0) {
            break;
        }
    }
    chess_pgn_reader_destroy(&r);
    int frc = batch_flush(s, dataset_id, path, b, max_tokens, st, hooks, file_offset(f),
                          rc != 0 ? NULL : err);
    return rc != 0 ? rc : frc;
}

int coordinator_games_import(coordinator_store *s, int64_t dataset_id, const char *path,
                             coordinator_games_format fmt, size_t max_tokens,
                             coordinator_import_stats *st, const coordinator_import_hooks *hooks,
                             char *err) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return common_fail(err, errno == ENOENT ? COMMON_ERR_NOT_FOUND : COMMON_ERR_IO,
                           "games import: open %s: %s", path, strerror(errno));
    }
    batch *b = calloc(1, sizeof *b);
    int rc = 0;
    if (b == NULL) {
        rc = common_fail(err, COMMON_ERR_NOMEM, "games import: out of memory");
        goto done;
    }
    if (fmt == COORDINATOR_GAMES_AUTO) {
        static const size_t head_len = 1 << 16;
        char *head = malloc(head_len);
        if (head == NULL) {
            rc = common_fail(err, COMMON_ERR_NOMEM, "games import: out of memory");
            goto done;
        }
        size_t got = fread(head, 1, head_len, f);
        fmt = coordinator_games_detect(path, head, got);
        free(head);
        if (ferror(f) || fseek(f, 0, SEEK_SET) != 0) {
            rc =
                common_fail(err, COMMON_ERR_IO, "games import: read %s: %s", path, strerror(errno));
            goto done;
        }
    }
    rc = fmt == COORDINATOR_GAMES_PGN
             ? import_pgn(s, dataset_id, path, f, b, max_tokens, st, hooks, err)
             : import_uci(s, dataset_id, path, f, b, max_tokens, st, hooks, err);

done:
    free(b);
    fclose(f);
    return rc;
}

int coordinator_games_generate(coordinator_store *s, int64_t dataset_id, uint64_t n, uint64_t seed,
                               size_t max_tokens, coordinator_import_stats *st,
                               const coordinator_import_hooks *hooks, char *err) {
    char source[96];
    snprintf(source, sizeof source, "random seed=%" PRIu64 " max_tokens=%zu", seed, max_tokens);
    batch *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return common_fail(err, COMMON_ERR_NOMEM, "games generate: out of memory");
    }
    int rc = 0;
    for (uint64_t i = 0; i < n && rc == 0; i++) {
        chess_game *game = NULL;
        char *uci = NULL;
        if ((rc = chess_random_game(&game, chess_random_game_seed(seed, i), max_tokens, err)) !=
            0) {
            break;
        }
        rc = chess_game_to_uci(game, &uci, err);
        chess_game_destroy(&game);
        if (rc == 0) {
            rc = batch_push(b, uci, NULL, (int64_t)i, err);
        }
        if (rc == 0 && b->n == COORDINATOR_IMPORT_BATCH) {
            rc = batch_flush(s, dataset_id, source, b, 0, st, hooks, 0, err);
        }
    }
    if (rc == 0) {
        rc = batch_flush(s, dataset_id, source, b, 0, st, hooks, 0, err);
    }
    batch_clear(b);
    free(b);
    return rc;
}
