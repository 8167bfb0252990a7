/*
 * kvlist: "key=value,..." option texts (common/common.h, common_kv_next) and the integers in
 * them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"

int common_kv_next(const char **p, const char **key, size_t *klen, const char **value, size_t *vlen,
                   const char *what, char *err) {
    const char *s = *p;
    if (*s == '\0') {
        return 0;
    }
    size_t n = strcspn(s, ",");
    const char *eq = memchr(s, '=', n);
    if (eq == NULL) {
        return common_fail(err, COMMON_ERR_INVALID, "%s: '%.*s': expected key=value", what, (int)n,
                           s);
    }
    *key = s;
    *klen = (size_t)(eq - s);
    *value = eq + 1;
    *vlen = n - *klen - 1;
    s += n;
    if (*s == ',' && *++s == '\0') {
        return common_fail(err, COMMON_ERR_INVALID, "%s: trailing ','", what);
    }
    *p = s;
    return 1;
}

bool common_parse_i64(const char *s, size_t n, int64_t lo, int64_t hi, int64_t *v) {
    char buf[32];
    if (n == 0 || n >= sizeof buf || s[0] < '0' || s[0] > '9') {
        return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    long long x = strtoll(buf, &end, 10);
    if (errno != 0 || *end != '\0' || x < lo || x > hi) {
        return false;
    }
    *v = x;
    return true;
}
