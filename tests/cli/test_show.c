/*
 * test_show: `chesslens show` on a safetensors file written here with known values: the listing
 * shows the metadata and names every tensor with its dtype, shape and min / max / mean
 * (non-finite values left out), --tensor prints the values as a table, and a missing tensor or
 * file is an error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_run.h"
#include "model/model.h"

/* Runs `chesslens ARGS` with stderr merged; returns the output (caller frees). */
static char *run(const char *args, int *status) {
    char *out = cli_run(args, status);
    assert_non_null(out);
    return out;
}

static void write_fixture(char *path, size_t cap) {
    const char *tmp = getenv("CHESSLENS_TEST_TMPDIR");
    snprintf(path, cap, "%s/show.safetensors", tmp ? tmp : "/tmp");
    char err[COMMON_ERR_LEN];
    model_st_writer *w = NULL;
    assert_int_equal(model_st_writer_new(&w, err), 0);
    float grid[2][3] = {{1.0f, -2.0f, 3.5f}, {4.0f, 5.0f, -INFINITY}};
    model_shape s2 = {2, {2, 3}};
    assert_int_equal(model_st_writer_add_f32(w, "grid", MODEL_DTYPE_F32, &s2, &grid[0][0], err), 0);
    int32_t ids[4] = {7, 8, 9, 10};
    model_shape s1 = {1, {4}};
    assert_int_equal(model_st_writer_add(w, "ids", MODEL_DTYPE_I32, &s1, ids, err), 0);
    assert_int_equal(model_st_writer_set_metadata(w, "kind", "block_every", err), 0);
    assert_int_equal(model_st_writer_set_metadata(w, "axes", "component,layer,pos", err), 0);
    assert_int_equal(model_st_writer_write(w, path, err), 0);
    model_st_writer_destroy(&w);
}

static void test_listing_and_table(void **state) {
    (void)state;
    char path[512], args[600];
    write_fixture(path, sizeof path);
    int status;

    snprintf(args, sizeof args, "show %s", path);
    char *out = run(args, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "2 tensors"));
    /* the metadata, in key order, before the tensors */
    char *axes = strstr(out, "\n  axes: component,layer,pos\n");
    char *kind = strstr(out, "\n  kind: block_every\n");
    assert_non_null(axes);
    assert_non_null(kind);
    assert_true(axes < kind && kind < strstr(out, "grid"));
    /* grid: finite values 1 -2 3.5 4 5 -> min -2, max 5, mean 2.3 */
    char *grid = strstr(out, "grid");
    assert_non_null(grid);
    char dtype[8], shape[32];
    double lo, hi, mean;
    assert_int_equal(sscanf(grid, "grid %7s [%31[^]]] %lf %lf %lf", dtype, shape, &lo, &hi, &mean),
                     5);
    assert_string_equal(dtype, "F32");
    assert_string_equal(shape, "2, 3");
    assert_true(lo == -2.0 && hi == 5.0 && fabs(mean - 2.3) < 1e-4);
    char *idl = strstr(out, "ids");
    assert_non_null(idl);
    assert_int_equal(sscanf(idl, "ids %7s [%31[^]]] %lf %lf %lf", dtype, shape, &lo, &hi, &mean),
                     5);
    assert_string_equal(dtype, "I32");
    assert_true(lo == 7.0 && hi == 10.0 && fabs(mean - 8.5) < 1e-9);
    free(out);

    snprintf(args, sizeof args, "show %s --tensor grid", path);
    out = run(args, &status);
    assert_int_equal(status, 0);
    /* header line, column indices, then rows "0 1 -2 3.5" and "1 4 5 -inf" */
    char *row1 = strstr(out, "\n     1 ");
    assert_non_null(row1);
    double a, b;
    char c[16];
    assert_int_equal(sscanf(row1, " 1 %lf %lf %15s", &a, &b, c), 3);
    assert_true(a == 4.0 && b == 5.0);
    assert_string_equal(c, "-inf");
    free(out);
}

static void test_errors(void **state) {
    (void)state;
    char path[512], args[600];
    write_fixture(path, sizeof path);
    int status;
    snprintf(args, sizeof args, "show %s --tensor nope", path);
    char *out = run(args, &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "no tensor 'nope'"));
    free(out);
    out = run("show /nonexistent/x.safetensors", &status);
    assert_int_equal(status, 1);
    assert_non_null(strstr(out, "/nonexistent/x.safetensors"));
    free(out);
    out = run("show", &status);
    assert_int_equal(status, 2);
    free(out);
}

/* An empty tensor with a huge dimension prints no table (4 billion row labels, before). */
static void test_empty_tensor(void **state) {
    (void)state;
    char path[512], args[600];
    const char *tmp = getenv("CHESSLENS_TEST_TMPDIR");
    snprintf(path, sizeof path, "%s/empty.safetensors", tmp ? tmp : "/tmp");
    const char header[] = "{\"e\":{\"dtype\":\"F32\",\"shape\":[4294967296,0],"
                          "\"data_offsets\":[0,0]}}";
    unsigned char len8[8] = {0};
    size_t hlen = sizeof header - 1;
    for (int i = 0; i < 8; i++) {
        len8[i] = (unsigned char)((hlen >> (8 * i)) & 0xff);
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(len8, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, hlen, f), hlen);
    fclose(f);
    snprintf(args, sizeof args, "show %s --tensor e | head -c 4096", path);
    int status;
    char *out = run(args, &status);
    assert_int_equal(status, 0);
    assert_non_null(strstr(out, "(no elements)"));
    assert_true(strlen(out) < 200);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listing_and_table),
        cmocka_unit_test(test_empty_tensor),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
