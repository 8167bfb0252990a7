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

/* Valid sequences of 2, 3 and 4 bytes with their code points; ASCII, continuation bytes,
 * overlong forms, surrogates, code points past U+10FFFF and truncated sequences are not. */
static void test_utf8_sequence(void **state) {
    (void)state;
    const struct {
        const char *bytes;
        size_t len;
        uint32_t cp;
    } ok[] = {{"\xc3\xa9", 2, 0xE9},
              {"\xe2\x99\x9e", 3, 0x265E},
              {"\xef\xbf\xbf", 3, 0xFFFF},
              {"\xf0\x9f\x98\x80", 4, 0x1F600},
              {"\xf4\x8f\xbf\xbf", 4, 0x10FFFF}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        uint32_t cp = 0;
        const unsigned char *p = (const unsigned char *)ok[i].bytes;
        assert_int_equal(common_utf8_sequence(p, strlen(ok[i].bytes), &cp), ok[i].len);
        assert_int_equal(cp, ok[i].cp);
        assert_int_equal(common_utf8_sequence(p, ok[i].len - 1, NULL), 0); /* truncated */
    }
    const char *const bad[] = {"A",
                               "\x80",
                               "\xc0\xaf",
                               "\xc1\xbf",
                               "\xe0\x80\xaf",
                               "\xed\xa0\x80",
                               "\xf0\x80\x80\xaf",
                               "\xf4\x90\x80\x80",
                               "\xf5\x80\x80\x80",
                               "\xe2\x28\xa1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(common_utf8_sequence((const unsigned char *)bad[i], strlen(bad[i]), NULL),
                         0);
    }
    assert_int_equal(common_utf8_sequence((const unsigned char *)"", 0, NULL), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fail_formats_message_and_returns_code),
        cmocka_unit_test(test_utf8_sequence),
        cmocka_unit_test(test_fail_truncates_long_messages),
        cmocka_unit_test(test_read_file_roundtrip_and_missing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
