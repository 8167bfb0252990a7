/*
 * Tests of the shared error contract: messages are formatted into the caller's buffer, codes
 * pass through, a NULL buffer is allowed, and whole-file reads report missing files by name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

static void test_fail_formats_message_and_returns_code(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    int rc = common_fail(err, COMMON_ERR_PARSE, "fen: bad rank %d", 9);
    assert_int_equal(rc, COMMON_ERR_PARSE);
    assert_string_equal(err, "fen: bad rank 9");
    assert_int_equal(common_fail(NULL, COMMON_ERR_IO, "ignored"), COMMON_ERR_IO);
}

static void test_fail_truncates_long_messages(void **state) {
    (void)state;
    char err[COMMON_ERR_LEN];
    char longname[600];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    common_fail(err, COMMON_ERR_IO, "open %s", longname);
    assert_int_equal(strlen(err), COMMON_ERR_LEN - 1);
}

static void test_read_file_roundtrip_and_missing(void **state) {
    (void)state;
    char path[512];
    const char *tmp = getenv("CHESSLENS_TEST_TMPDIR");
    snprintf(path, sizeof path, "%s/read.txt", tmp ? tmp : "/tmp");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs("e2e4 e7e5", f);
    fclose(f);

    char err[COMMON_ERR_LEN];
    char *text = NULL;
    size_t len = 0;
    assert_int_equal(common_read_file(path, &text, &len, err), COMMON_OK);
    assert_int_equal(len, 9);
    assert_string_equal(text, "e2e4 e7e5");
    free(text);

    text = NULL;
    int rc = common_read_file("/nonexistent/chesslens.txt", &text, &len, err);
    assert_int_equal(rc, COMMON_ERR_NOT_FOUND);
    assert_null(text);
    assert_non_null(strstr(err, "/nonexistent/chesslens.txt"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_formats_message_and_returns_code),
        cmocka_unit_test(test_fail_truncates_long_messages),
        cmocka_unit_test(test_read_file_roundtrip_and_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
