/*
 * test_coord_games: datasets of games. UCI-line and PGN files are imported with their refused
 * games reported (where and why), re-imports add nothing, names are unique unless appended to,
 * generated games are chess_random_game's game for game, every position row matches
 * chess_legal_tokens, and the format detection rules of docs/STORE.md.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "chess/chess.h"
#include "coordinator/coordinator.h"

static char err[COMMON_ERR_LEN];

static const char *tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

static coordinator_store *open_fresh(const char *name) {
    char path[512], side[600];
    snprintf(path, sizeof path, "%s/%s", tmpdir(), name);
    remove(path);
    snprintf(side, sizeof side, "%s-wal", path);
    remove(side);
    coordinator_store *s = NULL;
    if (coordinator_store_open(&s, path, 0, err) != 0) {
        fail_msg("open: %s", err);
    }
    return s;
}

static void write_file(const char *path, const char *text, size_t len) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Collected refusals. */
typedef struct skips {
    size_t n;
    char text[16][COMMON_ERR_LEN + 64];
} skips;

static void on_skip(void *ctx, const char *where, const char *reason) {
    skips *k = ctx;
    if (k->n < 16) {
        snprintf(k->text[k->n], sizeof k->text[0], "%s%s%s", where, where[0] != '\0' ? ": " : "",
                 reason);
    }
    k->n++;
}

static int64_t query_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fail_msg("prepare %s: %s", sql, sqlite3_errmsg(db));
    }
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* The stored games of a dataset, in index order, one per line (caller frees). */
static char *dataset_lines(sqlite3 *db, const char *dataset) {
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT game, uci FROM games WHERE dataset = ? "
                                        "ORDER BY game",
                                        -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(st, 1, dataset, -1, SQLITE_STATIC);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    assert_non_null(out);
    out[0] = '\0';
    int64_t expect = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_int_equal(sqlite3_column_int64(st, 0), expect++); /* indices 0, 1, 2, ... */
        const char *uci = (const char *)sqlite3_column_text(st, 1);
        size_t len = strlen(uci);
        while (n + len + 2 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        memcpy(out + n, uci, len);
        n += len;
        out[n++] = '\n';
        out[n] = '\0';
    }
    sqlite3_finalize(st);
    return out;
}

/* Every position row of every game of the dataset equals chess_legal_tokens of its moves. */
static void check_positions(sqlite3 *db, const char *dataset) {
    sqlite3_stmt *games = NULL, *pos = NULL;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT game, uci, n_tokens FROM games WHERE "
                                        "dataset = ?1 ORDER BY game",
                                        -1, &games, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT pos, token, move_index, phase, n_legal FROM "
                                        "game_positions WHERE dataset = ?1 AND game = ?2 "
                                        "ORDER BY pos",
                                        -1, &pos, NULL),
                     SQLITE_OK);
    sqlite3_bind_text(games, 1, dataset, -1, SQLITE_STATIC);
    size_t n_games = 0;
    while (sqlite3_step(games) == SQLITE_ROW) {
        chess_token_info *t = NULL;
        size_t n = 0;
        const char *uci = (const char *)sqlite3_column_text(games, 1);
        assert_int_equal(chess_legal_tokens(NULL, uci, &t, &n, err), 0);
        assert_int_equal(sqlite3_column_int64(games, 2), n);
        sqlite3_reset(pos);
        sqlite3_bind_text(pos, 1, dataset, -1, SQLITE_STATIC);
        sqlite3_bind_int64(pos, 2, sqlite3_column_int64(games, 0));
        size_t i = 0;
        while (sqlite3_step(pos) == SQLITE_ROW) {
            assert_true(i < n);
            assert_int_equal(sqlite3_column_int64(pos, 0), i);
            assert_string_equal((const char *)sqlite3_column_text(pos, 1), t[i].token.text);
            assert_int_equal(sqlite3_column_int64(pos, 2), t[i].token.move_index);
            assert_string_equal((const char *)sqlite3_column_text(pos, 3),
                                chess_phase_name(t[i].token.phase));
            assert_int_equal(sqlite3_column_int64(pos, 4), t[i].n_next);
            i++;
        }
        assert_int_equal(i, n);
        free(t);
        n_games++;
    }
    assert_true(n_games > 0);
    sqlite3_finalize(games);
    sqlite3_finalize(pos);
}

static void test_import_uci(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("uci.db");
    sqlite3 *db = coordinator_store_db(s);
    char path[512];
    snprintf(path, sizeof path, "%s/games.uci", tmpdir());
    const char text[] = "# three good games, one illegal, one malformed, one too long\n"
                        "e2e4 e7e5 g1f3\n"
                        "\n"
                        "d2d4   d7d5\r\n"
                        "e2e4 e7e5 e1e3\n"
                        "e2e4 zz\n"
                        "g1f3 g8f6 f3g1 f6g8 g1f3 g8f6 f3g1 f6g8 g1f3\n"
                        "e7e8q\n"
                        "e2e4 e7e5 g1f3 b8c6 f1c4 g8f6 d2d3\n";
    write_file(path, text, sizeof text - 1);
    int64_t ds;
    assert_int_equal(coordinator_dataset_create(s, "u", path, false, &ds, err), 0);
    coordinator_import_stats st = {0};
    skips k = {0};
    coordinator_import_hooks hooks = {on_skip, NULL, &k};
    assert_int_equal(
        coordinator_games_import(s, ds, path, COORDINATOR_GAMES_AUTO, 16, &st, &hooks, err), 0);
    assert_int_equal(st.n_read, 7);
    assert_int_equal(st.n_added, 3);
    assert_int_equal(st.n_skipped, 4);
    assert_int_equal(st.n_duplicate, 0);
    assert_int_equal(k.n, 4);
    assert_non_null(strstr(k.text[0], "line 5: move 3 'e1e3'"));
    assert_non_null(strstr(k.text[1], "line 6: "));
    assert_non_null(strstr(k.text[1], "zz"));
    assert_non_null(strstr(k.text[2], "line 7: 19 tokens, more than the limit of 16"));
    assert_non_null(strstr(k.text[3], "line 8: move 1 'e7e8q'"));
    char *lines = dataset_lines(db, "u");
    /* canonical text: one space between moves */
    assert_string_equal(lines, "e2e4 e7e5 g1f3\nd2d4 d7d5\ne2e4 e7e5 g1f3 b8c6 f1c4 g8f6 d2d3\n");
    free(lines);
    check_positions(db, "u");
    assert_int_equal(query_int(db, "SELECT source_index FROM games WHERE dataset = 'u' AND "
                                   "game = 1"),
                     4);

    /* the name is taken without append; a re-run with append adds nothing */
    int64_t again;
    assert_int_equal(coordinator_dataset_create(s, "u", path, false, &again, err),
                     COMMON_ERR_INVALID);
    assert_non_null(strstr(err, "dataset 'u' exists"));
    assert_int_equal(coordinator_dataset_create(s, "u", path, true, &again, err), 0);
    assert_int_equal(again, ds);
    coordinator_import_stats st2 = {0};
    assert_int_equal(
        coordinator_games_import(s, ds, path, COORDINATOR_GAMES_UCI, 16, &st2, NULL, err), 0);
    assert_int_equal(st2.n_added, 0);
    assert_int_equal(st2.n_duplicate, 3);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM game"), 3);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM position"), 7 + 5 + 15);
    uint64_t n_games;
    assert_int_equal(coordinator_dataset_find(s, "u", &again, &n_games, err), 0);
    assert_int_equal(n_games, 3);
    assert_int_equal(coordinator_dataset_find(s, "v", &again, &n_games, err), COMMON_ERR_NOT_FOUND);
    assert_int_equal(coordinator_games_import(s, ds, "/nonexistent/games.uci",
                                              COORDINATOR_GAMES_AUTO, 0, &st2, NULL, err),
                     COMMON_ERR_NOT_FOUND);
    coordinator_store_close(&s);
}

static void test_import_pgn(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("pgn.db");
    sqlite3 *db = coordinator_store_db(s);
    char path[512];
    snprintf(path, sizeof path, "%s/games.txt", tmpdir()); /* detected by content */
    const char text[] = "[Event \"a\"]\n[Result \"1-0\"]\n\n1. e4 e5 2. Nf3 {a comment} Nc6 "
                        "3. Bb5 1-0\n\n"
                        "[Event \"b\"]\n\n1. d4 d5 2. Ke3 *\n\n"
                        "[Event \"c\"]\n[FEN \"8/8/8/8/8/8/8/K6k w - - 0 1\"]\n\n1. Kb1 *\n\n"
                        "[Event \"d\"]\n\n1. c4 (1. d4) c5 0-1\n";
    write_file(path, text, sizeof text - 1);
    int64_t ds;
    assert_int_equal(coordinator_dataset_create(s, "p", path, false, &ds, err), 0);
    coordinator_import_stats st = {0};
    skips k = {0};
    coordinator_import_hooks hooks = {on_skip, NULL, &k};
    assert_int_equal(
        coordinator_games_import(s, ds, path, COORDINATOR_GAMES_AUTO, 0, &st, &hooks, err), 0);
    assert_int_equal(st.n_added, 2);
    assert_int_equal(st.n_skipped, 2);
    assert_int_equal(k.n, 2);
    assert_non_null(strstr(k.text[0], "game 2"));
    assert_non_null(strstr(k.text[0], "Ke3"));
    assert_non_null(strstr(k.text[1], "game 3"));
    assert_non_null(strstr(k.text[1], "initial position"));
    char *lines = dataset_lines(db, "p");
    assert_string_equal(lines, "e2e4 e7e5 g1f3 b8c6 f1b5\nc2c4 c7c5\n");
    free(lines);
    check_positions(db, "p");
    coordinator_store_close(&s);
}

static void test_generate(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("gen.db");
    sqlite3 *db = coordinator_store_db(s);
    int64_t ds;
    assert_int_equal(coordinator_dataset_create(s, "r", "random", false, &ds, err), 0);
    coordinator_import_stats st = {0};
    assert_int_equal(coordinator_games_generate(s, ds, 40, 7, 60, &st, NULL, err), 0);
    assert_int_equal(st.n_added, 40);
    char *lines = dataset_lines(db, "r");
    /* the games chess_random_game draws for (seed, i), in order */
    char *expect = calloc(1, 1 << 16);
    assert_non_null(expect);
    for (uint64_t i = 0; i < 40; i++) {
        chess_game *g = NULL;
        char *uci = NULL;
        assert_int_equal(chess_random_game(&g, chess_random_game_seed(7, i), 60, err), 0);
        assert_int_equal(chess_game_to_uci(g, &uci, err), 0);
        strcat(expect, uci);
        strcat(expect, "\n");
        free(uci);
        chess_game_destroy(&g);
    }
    assert_string_equal(lines, expect);
    free(lines);
    free(expect);
    check_positions(db, "r");
    assert_int_equal(query_int(db, "SELECT MAX(n_tokens) <= 60 FROM games"), 1);
    /* generating again into it adds nothing */
    coordinator_import_stats st2 = {0};
    assert_int_equal(coordinator_games_generate(s, ds, 40, 7, 60, &st2, NULL, err), 0);
    assert_int_equal(st2.n_added, 0);
    assert_int_equal(st2.n_duplicate, 40);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM game"), 40);
    coordinator_store_close(&s);
}

/* A batch is all or nothing: games of a batch that fails to store are not kept. */
static void test_add_in_batches(void **state) {
    (void)state;
    coordinator_store *s = open_fresh("batch.db");
    sqlite3 *db = coordinator_store_db(s);
    int64_t ds;
    assert_int_equal(coordinator_dataset_create(s, "b", "x", false, &ds, err), 0);
    coordinator_game_in in[3] = {
        {"e2e4", "first", 1}, {"", "second", 2}, {"e2e4", NULL, 3}}; /* empty; duplicate */
    coordinator_import_stats st = {0};
    skips k = {0};
    coordinator_import_hooks hooks = {on_skip, NULL, &k};
    assert_int_equal(coordinator_games_add(s, ds, "x", in, 3, 0, &st, &hooks, err), 0);
    assert_int_equal(st.n_added, 1);
    assert_int_equal(st.n_skipped, 1);
    assert_int_equal(st.n_duplicate, 1);
    assert_string_equal(k.text[0], "second: no moves");
    /* a dataset id that does not exist: the foreign key refuses, nothing is kept */
    coordinator_game_in other = {"d2d4", NULL, 0};
    assert_int_not_equal(coordinator_games_add(s, 999, "x", &other, 1, 0, &st, NULL, err), 0);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM game"), 1);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM position"), 3);
    coordinator_store_close(&s);
}

static void test_detect(void **state) {
    (void)state;
    static const struct {
        const char *path, *head;
        coordinator_games_format expect;
    } cases[] = {
        {"a.pgn", "e2e4 e7e5\n", COORDINATOR_GAMES_PGN},
        {"a.PGN", "", COORDINATOR_GAMES_PGN},
        {"a.uci", "e2e4 e7e5\n", COORDINATOR_GAMES_UCI},
        {"a.txt", "[Event \"x\"]\n", COORDINATOR_GAMES_PGN},
        {"a.txt", "# comment\n\n  1. e4 e5\n", COORDINATOR_GAMES_PGN},
        {"a.txt", "12. Nf3\n", COORDINATOR_GAMES_PGN},
        {"a.txt", "{intro} 1. e4\n", COORDINATOR_GAMES_PGN},
        {"a.txt", "\xef\xbb\xbf[Event \"x\"]\n", COORDINATOR_GAMES_PGN},
        {"a.txt", "# [Event]\ne2e4\n", COORDINATOR_GAMES_UCI},
        {"a", "", COORDINATOR_GAMES_UCI},
        {"a", "e2e4 e7e5 g1f3\n", COORDINATOR_GAMES_UCI},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        coordinator_games_format got =
            coordinator_games_detect(cases[i].path, cases[i].head, strlen(cases[i].head));
        if (got != cases[i].expect) {
            fail_msg("case %zu (%s): got %d", i, cases[i].path, (int)got);
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_uci), cmocka_unit_test(test_import_pgn),
        cmocka_unit_test(test_generate),   cmocka_unit_test(test_add_in_batches),
        cmocka_unit_test(test_detect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
