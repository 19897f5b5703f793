/* tensor.c — dtype table, fp16/bf16 conversions, host tensors. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tensor.h"

size_t sd_dtype_size(sd_dtype dt) {
    switch (dt) {
    case DT_F32: return 4;
    case DT_F16: case DT_BF16: return 2;
    case DT_I64: return 8;
    }
    return 0;
}

const char *sd_dtype_name(sd_dtype dt) {
    switch (dt) {
    case DT_F32: return "F32";
    case DT_F16: return "F16";
    case DT_BF16: return "BF16";
    case DT_I64: return "I64";
    }
    return "?";
}

int sd_dtype_parse(const char *s, sd_dtype *out) {
    static const sd_dtype all[] = { DT_F32, DT_F16, DT_BF16, DT_I64 };
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, sd_dtype_name(all[i]))) { *out = all[i]; return 0; }
    return -1;
}

int64_t sd_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

char *sd_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += snprintf(buf + k, n - k, "(");
    for (int i = 0; i < ndim && k < n; i++)
        k += snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

sd_status sd_tensor_alloc(struct sd_tensor *t, sd_dtype dt, int ndim, const int64_t *shape) {
    SD_ASSERT(ndim >= 0 && ndim <= SD_MAX_DIMS);
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->ndim = ndim;
    memcpy(t->shape, shape, ndim * sizeof *shape);
    size_t n = (size_t)sd_numel(ndim, shape);
    t->data = sd_calloc(n ? n : 1, sd_dtype_size(dt));
    return t->data ? SD_OK : SD_ERR_NOMEM;
}

void sd_tensor_free(struct sd_tensor *t) {
    sd_free(t->data);
    t->data = NULL;
}

float sd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {                                   /* subnormal: renormalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t sd_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - exp;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;   /* may carry into exp: correct */
    return (uint16_t)h;
}

float sd_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t sd_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

void sd_convert_to_f32(float *dst, const void *src, sd_dtype dt, size_t n) {
    const unsigned char *s = src;
    switch (dt) {
    case DT_F32: memcpy(dst, src, n * 4); break;
    case DT_F16:
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, s + 2 * i, 2); dst[i] = sd_f16_to_f32(h); }
        break;
    case DT_BF16:
        for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, s + 2 * i, 2); dst[i] = sd_bf16_to_f32(h); }
        break;
    case DT_I64:
        for (size_t i = 0; i < n; i++) { int64_t v; memcpy(&v, s + 8 * i, 8); dst[i] = (float)v; }
        break;
    }
}

void sd_convert_from_f32(void *dst, const float *src, sd_dtype dt, size_t n) {
    unsigned char *d = dst;
    switch (dt) {
    case DT_F32: memcpy(dst, src, n * 4); break;
    case DT_F16:
        for (size_t i = 0; i < n; i++) { uint16_t h = sd_f32_to_f16(src[i]); memcpy(d + 2 * i, &h, 2); }
        break;
    case DT_BF16:
        for (size_t i = 0; i < n; i++) { uint16_t h = sd_f32_to_bf16(src[i]); memcpy(d + 2 * i, &h, 2); }
        break;
    case DT_I64:
        for (size_t i = 0; i < n; i++) { int64_t v = (int64_t)llrintf(src[i]); memcpy(d + 8 * i, &v, 8); }
        break;
    }
}

long long sd_find_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (long long)i;
    return -1;
}
