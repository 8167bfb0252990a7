/*
 * utf8: recognising valid UTF-8, for the writers that must emit Unicode text whatever bytes they
 * are handed (JSON from `chesslens query`, XML from the plots).
 */
#include "common/common.h"

size_t common_utf8_sequence(const unsigned char *p, size_t n, uint32_t *cp) {
    if (n == 0) {
        return 0;
    }
    unsigned char c = p[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* bounds of the second byte */
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        v = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        v = c & 0x0Fu;
        lo = c == 0xE0 ? 0xA0 : 0x80; /* no overlong forms */
        hi = c == 0xED ? 0x9F : 0xBF; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        v = c & 0x07u;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if (i > 1 && (p[i] < 0x80 || p[i] > 0xBF)) {
            return 0;
        }
        v = (v << 6) | (p[i] & 0x3Fu);
    }
    if (cp != NULL) {
        *cp = v;
    }
    return len;
}
