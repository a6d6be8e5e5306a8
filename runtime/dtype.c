/* Host-side element types: names, sizes and exact conversions (bf16, f16, fp8 e4m3). */
#include <math.h>
#include <string.h>
#include <strings.h>

#include "clnpu/dtype.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[CLNPU_DTYPE_COUNT] = {
    [CLNPU_DTYPE_F32] = {"f32", 4},  [CLNPU_DTYPE_BF16] = {"bf16", 2},
    [CLNPU_DTYPE_F16] = {"f16", 2},  [CLNPU_DTYPE_I8] = {"int8", 1},
    [CLNPU_DTYPE_FP8_E4M3] = {"fp8", 1}, [CLNPU_DTYPE_I32] = {"i32", 4},
};

const char *clnpu_dtype_name(clnpu_dtype t)
{
    return (unsigned)t < CLNPU_DTYPE_COUNT ? dtypes[t].name : NULL;
}

size_t clnpu_dtype_size(clnpu_dtype t)
{
    return (unsigned)t < CLNPU_DTYPE_COUNT ? dtypes[t].size : 0;
}

int clnpu_dtype_parse(const char *s)
{
    for (int i = 0; i < CLNPU_DTYPE_COUNT; i++)
        if (!strcasecmp(s, dtypes[i].name)) return i;
    if (!strcasecmp(s, "i8")) return CLNPU_DTYPE_I8;
    if (!strcasecmp(s, "f8_e4m3") || !strcasecmp(s, "fp8_e4m3") || !strcasecmp(s, "e4m3"))
        return CLNPU_DTYPE_FP8_E4M3;
    if (!strcasecmp(s, "fp32") || !strcasecmp(s, "float32")) return CLNPU_DTYPE_F32;
    if (!strcasecmp(s, "fp16") || !strcasecmp(s, "half")) return CLNPU_DTYPE_F16;
    return -1;
}

float clnpu_bf16_to_f32(uint16_t v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t clnpu_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float clnpu_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    float mag;
    if (e == 0) mag = ldexpf((float)m, -24);
    else if (e == 31) mag = m ? NAN : INFINITY;
    else mag = ldexpf((float)(m | 0x400u), (int)e - 25);
    uint32_t u;
    memcpy(&u, &mag, 4);
    u |= sign;
    memcpy(&mag, &u, 4);
    return mag;
}

uint16_t clnpu_f32_to_f16(float f)
{
    uint16_t sign = signbit(f) ? 0x8000u : 0;
    float a = fabsf(f);
    if (isnan(f)) return 0x7e00u;
    if (a >= 65520.0f) return sign | 0x7c00u; /* rounds to infinity */
    if (a < ldexpf(1, -14)) /* subnormal: units of 2^-24, nearbyint rounds to even */
        return sign | (uint16_t)nearbyintf(ldexpf(a, 24));
    int e;
    float fr = frexpf(a, &e); /* a = fr * 2^e, fr in [0.5, 1) */
    uint32_t m = (uint32_t)nearbyintf((fr * 2 - 1) * 1024);
    int ex = e - 1 + 15;
    if (m == 1024) { m = 0; ex++; }
    return sign | (uint16_t)(ex << 10) | (uint16_t)m;
}

float clnpu_fp8e4m3_to_f32(uint8_t v)
{
    int e = (v >> 3) & 0xf, m = v & 7;
    float sign = (v & 0x80) ? -1.0f : 1.0f;
    if (e == 0xf && m == 7) return NAN;
    if (e == 0) return sign * ldexpf((float)m, -9);
    return sign * ldexpf(1.0f + m / 8.0f, e - 7);
}

uint8_t clnpu_f32_to_fp8e4m3(float f)
{
    if (isnan(f)) return 0x7f;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    if (a > 448.0f) a = 448.0f; /* e4m3fn has no infinity: saturate (as DeepSeek's cast does) */
    if (a < ldexpf(1, -6)) /* subnormal (code 8 rounds up into the first normal) */
        return sign | (uint8_t)nearbyintf(ldexpf(a, 9));
    int e;
    float fr = frexpf(a, &e);
    int m = (int)nearbyintf((fr * 2 - 1) * 8);
    int ex = e - 1 + 7;
    if (m == 8) { m = 0; ex++; }
    return sign | (uint8_t)(ex << 3) | (uint8_t)m;
}
