/*
 * test_copy_rows: the backend's many-block copy (copy_rows) on the CPU backend, against a host
 * loop, with its checks; and the reason it exists: an incremental run's copies of its rows
 * (entry residual, key and value prefixes, scatters into the cache) are one operation each
 * whatever the number of rows, so that a request of many patched runs makes few launches. Only
 * attention (four operations per row and layer without a fused op) still goes row by row.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"
#include "model_test_util.h"

static char err[COMMON_ERR_LEN];

static model_buf *upload_new(model_backend *be, const void *host, size_t n) {
    model_buf *b = NULL;
    assert_int_equal(be->alloc(be, n, &b, err), 0);
    assert_int_equal(be->upload(be, (model_ref){b, 0}, host, n, err), 0);
    return b;
}

static void test_op(void **state) {
    (void)state;
    enum { SRC_ROWS = 20, SRC_LD = 9, DST_ROWS = 30, DST_LD = 7, COLS = 5, OFF = 3 };
    model_backend *be = NULL;
    assert_int_equal(model_backend_cpu_new(&be, 2, err), 0);
    float src[SRC_ROWS * SRC_LD], dst[OFF + DST_ROWS * DST_LD], want[OFF + DST_ROWS * DST_LD];
    for (size_t i = 0; i < sizeof src / sizeof *src; i++) {
        src[i] = (float)i + 0.5f;
    }
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        want[i] = -1.0f;
    }
    /* entries {dst_row, src_row, rows}, one empty, one reaching the last rows of both */
    int32_t table[] = {0, 4, 3, 10, 0, 1, 12, 9, 0, 26, 16, 4, 5, 2, 2};
    size_t n = sizeof table / sizeof *table / MODEL_COPY_ROWS_FIELDS;
    for (size_t e = 0; e < n; e++) {
        const int32_t *en = table + e * MODEL_COPY_ROWS_FIELDS;
        for (int32_t i = 0; i < en[2]; i++) {
            for (size_t c = 0; c < COLS; c++) {
                want[OFF + (size_t)(en[0] + i) * DST_LD + c] =
                    src[(size_t)(en[1] + i) * SRC_LD + c];
            }
        }
    }
    model_buf *bs = upload_new(be, src, sizeof src / sizeof *src);
    model_buf *bt = upload_new(be, table, sizeof table / sizeof *table);
    for (size_t i = 0; i < sizeof dst / sizeof *dst; i++) {
        dst[i] = -1.0f;
    }
    model_buf *bd = upload_new(be, dst, sizeof dst / sizeof *dst);
    model_ref d = {bd, OFF}, s = {bs, 0}, t = {bt, 0};
    assert_int_equal(be->copy_rows(be, d, DST_LD, DST_ROWS, s, SRC_LD, SRC_ROWS, t, n, COLS, err),
                     0);
    assert_int_equal(be->download(be, dst, (model_ref){bd, 0}, sizeof dst / sizeof *dst, err), 0);
    assert_memory_equal(dst, want, sizeof want);

    /* an entry past the destination's or the source's rows, or negative: INVALID, nothing
     * copied; the row extents and the table checked against their buffers */
    float poison[OFF + DST_ROWS * DST_LD];
    for (size_t i = 0; i < sizeof poison / sizeof *poison; i++) {
        poison[i] = 9.0f;
    }
    int32_t bad[][3] = {{28, 0, 3}, {0, 18, 3}, {-1, 0, 1}, {0, 0, -2}};
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(be->upload(be, (model_ref){bd, 0}, poison, sizeof poison / 4, err), 0);
        assert_int_equal(be->upload(be, (model_ref){bt, 3}, bad[k], 3, err), 0);
        assert_int_equal(
            be->copy_rows(be, d, DST_LD, DST_ROWS, s, SRC_LD, SRC_ROWS, t, n, COLS, err),
            COMMON_ERR_INVALID);
        assert_non_null(strstr(err, "entry 1"));
        assert_int_equal(be->download(be, dst, (model_ref){bd, 0}, sizeof dst / 4, err), 0);
        assert_memory_equal(dst, poison, sizeof poison);
    }
    assert_int_equal(
        be->copy_rows(be, d, DST_LD, DST_ROWS + 1, s, SRC_LD, SRC_ROWS, t, n, COLS, err),
        COMMON_ERR_INVALID);
    assert_int_equal(
        be->copy_rows(be, d, DST_LD, DST_ROWS, s, SRC_LD + 1, SRC_ROWS, t, n, COLS, err),
        COMMON_ERR_INVALID);
    assert_int_equal(
        be->copy_rows(be, d, DST_LD, DST_ROWS, s, SRC_LD, SRC_ROWS, t, n + 1, COLS, err),
        COMMON_ERR_INVALID);
    assert_int_equal(be->copy_rows(be, d, DST_LD, DST_ROWS, s, SRC_LD, SRC_ROWS, t, 0, COLS, err),
                     0);
    be->free(be, bs);
    be->free(be, bt);
    be->free(be, bd);
    model_backend_destroy(&be);
}

enum { L = 3, T = 12 };

/* The device operations of an incremental run (from layer 1, every row from position 6) of B
 * rows over a base of 2 rows, caching the logits. */
static uint64_t ops_of_run(model *m, model_backend *cpu, size_t B) {
    model_backend_counts counts = {0};
    model_backend *counted = NULL;
    model_session *s = NULL;
    assert_int_equal(model_backend_count_new(&counted, cpu, &counts, err), 0);
    assert_int_equal(model_session_new(&s, m, counted, err), 0);
    int32_t *tok = malloc(B * T * sizeof *tok);
    size_t *start = malloc(B * sizeof *start), *rows = malloc(B * sizeof *rows);
    assert_non_null(tok);
    assert_non_null(start);
    assert_non_null(rows);
    for (size_t i = 0; i < B * T; i++) {
        tok[i] = (int32_t)((i % T) * 5 % 77);
    }
    model_hook base_hooks[3 * L];
    for (int l = 0; l < L; l++) {
        base_hooks[3 * l] = (model_hook){MODEL_HOOK_RESID_PRE, l};
        base_hooks[3 * l + 1] = (model_hook){MODEL_HOOK_K, l};
        base_hooks[3 * l + 2] = (model_hook){MODEL_HOOK_V, l};
    }
    model_request r;
    model_request_init(&r, s, tok, 2, T);
    r.hooks = base_hooks;
    r.n_hooks = 3 * L;
    model_cache *base = NULL, *out = NULL;
    assert_int_equal(model_run(s, &r, &base, err), 0);
    for (size_t i = 0; i < B; i++) {
        start[i] = 6;
        rows[i] = i % 2;
    }
    model_request_init(&r, s, tok, B, T);
    r.start_layer = 1;
    r.start_pos = start;
    r.base = base;
    r.base_rows = rows;
    counts = (model_backend_counts){0};
    assert_int_equal(model_run(s, &r, &out, err), 0);
    uint64_t ops = counts.device_ops;
    model_cache_destroy(&out);
    model_cache_destroy(&base);
    model_session_destroy(&s);
    model_backend_destroy(&counted);
    free(tok);
    free(start);
    free(rows);
    return ops;
}

static void test_copies_per_request(void **state) {
    (void)state;
    char dir[1024];
    model *m = NULL;
    model_backend *cpu = NULL;
    assert_int_equal(
        test_random_model(dir, sizeof dir, "copy_rows", L, 32, 4, 16, 77, 5, MODEL_DTYPE_F32), 0);
    assert_int_equal(model_load(&m, dir, NULL, err), 0);
    assert_int_equal(model_backend_cpu_new(&cpu, 2, err), 0);
    assert_null(cpu->attn_fused); /* the unfused composition: four operations per row */
    uint64_t few = ops_of_run(m, cpu, 2), many = ops_of_run(m, cpu, 34);
    uint64_t per_row = 4 * (L - 1); /* scores, mask, softmax, z in each computed layer */
    if (many - few > 32 * per_row) {
        fail_msg("%llu operations for 2 rows, %llu for 34: more than attention's %llu a row",
                 (unsigned long long)few, (unsigned long long)many, (unsigned long long)per_row);
    }
    model_backend_destroy(&cpu);
    model_destroy(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_op),
        cmocka_unit_test(test_copies_per_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
