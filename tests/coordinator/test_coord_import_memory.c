/*
 * test_coord_import_memory: importing a large file streams in bounded memory. A file of about
 * 200,000 distinct legal games (a fixed 4-ply knight opening that returns to the initial position,
 * then every 4-ply continuation: perft(4) = 197,281 lines, about 12 MB) is imported after a
 * small warm-up import; the peak resident set (VmHWM) may grow by far less than the file's
 * size over the large import, which an importer that held the file, its games or a single
 * transaction's worth of rows in memory would exceed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "chess/chess.h"
#include "coordinator/coordinator.h"

/* ASan keeps freed memory in a quarantine (256 MB by default), which would show as growth of
 * the resident set without any leak; none keeps the measurement about the importer. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) {
    return "quarantine_size_mb=0";
}

static char err[COMMON_ERR_LEN];

static const char *tmpdir(void) {
    const char *d = getenv("CHESSLENS_TEST_TMPDIR");
    return d != NULL ? d : "/tmp";
}

/* Peak resident set size of this process in KiB (VmHWM). */
static long peak_rss_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    assert_non_null(f);
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "VmHWM:", 6) == 0) {
            kib = strtol(line + 6, NULL, 10);
        }
    }
    fclose(f);
    assert_true(kib > 0);
    return kib;
}

static const char *prefix = "g1f3 g8f6 f3g1 f6g8";

/* Writes every legal 4-ply continuation of the prefix, one game per line; returns the count. */
static size_t write_games(FILE *f, const chess_position *pos, int depth, char *line, size_t len) {
    if (depth == 0) {
        fprintf(f, "%s%s\n", prefix, line);
        return 1;
    }
    chess_move_list list;
    chess_generate_moves(pos, &list);
    size_t n = 0;
    for (size_t i = 0; i < list.n; i++) {
        chess_position child = *pos;
        chess_position_make_move(&child, list.moves[i]);
        char uci[6];
        chess_move_to_uci(list.moves[i], uci);
        int k = snprintf(line + len, 64 - len, " %s", uci);
        n += write_games(f, &child, depth - 1, line, len + (size_t)k);
        line[len] = '\0';
    }
    return n;
}

static void test_bounded_memory(void **state) {
    (void)state;
    char big[512], small[512], db[512];
    snprintf(big, sizeof big, "%s/big.uci", tmpdir());
    snprintf(small, sizeof small, "%s/small.uci", tmpdir());
    snprintf(db, sizeof db, "%s/memory.db", tmpdir());
    remove(db);
    char side[600];
    snprintf(side, sizeof side, "%s-wal", db);
    remove(side);

    FILE *f = fopen(big, "w");
    assert_non_null(f);
    chess_position start;
    chess_position_init(&start);
    char line[64] = "";
    size_t n_games = write_games(f, &start, 4, line, 0);
    long file_bytes = ftell(f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(n_games, 197281);
    /* the warm-up: a few thousand games of the same kind (the first lines of the big file) */
    FILE *in = fopen(big, "r");
    FILE *out = fopen(small, "w");
    assert_non_null(in);
    assert_non_null(out);
    for (int i = 0; i < 20000 && fgets(line, sizeof line, in) != NULL; i++) {
        fputs(line, out);
    }
    fclose(in);
    assert_int_equal(fclose(out), 0);

    coordinator_store *s = NULL;
    assert_int_equal(coordinator_store_open(&s, db, 0, err), 0);
    int64_t ds;
    assert_int_equal(coordinator_dataset_create(s, "big", "test", false, &ds, err), 0);
    coordinator_import_stats st = {0};
    assert_int_equal(
        coordinator_games_import(s, ds, small, COORDINATOR_GAMES_AUTO, 0, &st, NULL, err), 0);
    assert_int_equal(st.n_added, 20000);
    long before = peak_rss_kib();
    coordinator_import_stats st2 = {0};
    if (coordinator_games_import(s, ds, big, COORDINATOR_GAMES_AUTO, 0, &st2, NULL, err) != 0) {
        fail_msg("import: %s", err);
    }
    long after = peak_rss_kib();
    assert_int_equal(st2.n_added, n_games - 20000);
    assert_int_equal(st2.n_duplicate, 20000);
    long growth = after - before;
    print_message("file %ld KiB, peak RSS %ld KiB -> %ld KiB (+%ld KiB)\n", file_bytes / 1024,
                  before, after, growth);
    /* a third of the file: SQLite's page cache, one batch and the allocator's slack (more of it
     * under ASan) fit easily; the file, or the lines or games of the whole import, do not */
    assert_true(growth < file_bytes / 1024 / 3);
    coordinator_store_close(&s);
    remove(big);
    remove(small);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounded_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
