/*
 * Shapes, dtypes and the float16 / bfloat16 conversions shared by the safetensors reader and
 * writer. Conversions to the narrow formats round to nearest even, as PyTorch's do, so a model
 * written here and loaded by the reference holds the same values.
 */
#include "model/model.h"

#include <stdio.h>
#include <string.h>

size_t model_shape_numel(const model_shape *s) {
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++) {
        n *= s->dims[i];
    }
    return n;
}

bool model_shape_equal(const model_shape *a, const model_shape *b) {
    if (a->ndim != b->ndim) {
        return false;
    }
    for (int i = 0; i < a->ndim; i++) {
        if (a->dims[i] != b->dims[i]) {
            return false;
        }
    }
    return true;
}

char *model_shape_format(const model_shape *s, char *buf, size_t cap) {
    size_t at = 0;
    if (cap == 0) {
        return buf;
    }
    buf[0] = '\0';
    at += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < s->ndim && at < cap; i++) {
        at += (size_t)snprintf(buf + at, cap - at, i ? ", %zu" : "%zu", s->dims[i]);
    }
    if (at < cap) {
        snprintf(buf + at, cap - at, "]");
    }
    return buf;
}

size_t model_dtype_size(model_dtype t) {
    switch (t) {
    case MODEL_DTYPE_F16:
    case MODEL_DTYPE_BF16:
        return 2;
    case MODEL_DTYPE_I64:
        return 8;
    case MODEL_DTYPE_F32:
    case MODEL_DTYPE_I32:
    default:
        return 4;
    }
}

const char *model_dtype_name(model_dtype t) {
    switch (t) {
    case MODEL_DTYPE_F16:
        return "F16";
    case MODEL_DTYPE_BF16:
        return "BF16";
    case MODEL_DTYPE_I32:
        return "I32";
    case MODEL_DTYPE_I64:
        return "I64";
    case MODEL_DTYPE_F32:
    default:
        return "F32";
    }
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float model_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) { /* inf / nan */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    }
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float32 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

uint16_t model_f32_to_f16(float f) {
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t exp = (u >> 23) & 0xffu;
    uint32_t man = u & 0x7fffffu;
    if (exp == 0xff) {
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0u));
    }
    int e = (int)exp - 127 + 15;
    if (e >= 0x1f) {
        return (uint16_t)(sign | 0x7c00u); /* overflow to inf */
    }
    if (e <= 0) {
        /* subnormal half (or zero): shift the full mantissa, round to nearest even */
        if (e < -10) {
            return sign;
        }
        uint32_t m = man | 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t mid = 1u << (shift - 1u);
        if (rem > mid || (rem == mid && (half & 1u))) {
            half++;
        }
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) {
        half++; /* may carry into the exponent, which is the correct rounding */
    }
    return (uint16_t)(sign | half);
}

float model_bf16_to_f32(uint16_t h) {
    return bits_f32((uint32_t)h << 16);
}

uint16_t model_f32_to_bf16(float f) {
    uint32_t u = f32_bits(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) {
        return (uint16_t)((u >> 16) | 0x40u); /* keep NaN a NaN */
    }
    uint32_t lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb;
    return (uint16_t)(u >> 16);
}
