/* The MLA latent cache's element type and its loads and stores: the one place every kernel that
 * reads or writes the cache (mla.cl, mla_wg.cl, dsa.cl, ...) takes them from, so a new cache type
 * changes this file only. A cached row is [c (R = CLNPU_MLA_R, kv_lora_rank) | k_pe (DR =
 * CLNPU_MLA_DR, qk_rope_head_dim)]; the host picks the type (runtime/latent_cache.c):
 *   default               f32, R + DR floats;
 *   CLNPU_CACHE_BF16=1    bf16, widened exactly on load, rounded to nearest even on append;
 *   CLNPU_CACHE_FP8=1     DeepSeek-V3.2 / FlashMLA's fp8 row, R + 4 * ceil(R / TILE) + 2 * DR bytes
 *                         (656 for R = 512, DR = 64): c in fp8 e4m3fn, then one f32 scale per TILE
 *                         (128) elements of c, then k_pe in bf16.
 * Why that layout: c holds values of very different magnitude across a row's 512 elements and
 * e4m3 has 3 mantissa bits and a range of 2^-9 .. 448, so an unscaled cache loses most small
 * values (0.27 logits error on the tiny A.X K1); a scale per 128-element tile follows the row's
 * local magnitude at 16 bytes a row (2.5 %); k_pe is rotated and multiplies q_pe in every score,
 * so it stays in bf16 (128 bytes), as FlashMLA keeps it. Each scale is a power of two (the
 * smallest >= the tile's max |c| / 448, DeepSeek-V3.2's "ue8m0" scales), so quantising (c / s) and
 * dequantising (code * s) are exact multiplications: the device's codes equal a host
 * reference's bit for bit, where OpenCL's division (2.5 ulp) would not.
 * Use: include after clnpu_common.h with VW (4 or 16) defined where the vector loads are used;
 * rows are `cache + row_index * CACHE_ROW`. Must stay valid OpenCL C 1.2. */
#ifndef CLNPU_CACHE_H
#define CLNPU_CACHE_H

#include "clnpu_common.h"

#ifndef CLNPU_MLA_R
#define CLNPU_MLA_R 512
#endif
#ifndef CLNPU_MLA_DR
#define CLNPU_MLA_DR 64
#endif
#ifndef CLNPU_CACHE_BF16
#define CLNPU_CACHE_BF16 0
#endif
#ifndef CLNPU_CACHE_FP8
#define CLNPU_CACHE_FP8 0
#endif
#ifndef CLNPU_CACHE_TILE
#define CLNPU_CACHE_TILE 128 /* elements of c per fp8 scale (FlashMLA's) */
#endif
#if CLNPU_CACHE_BF16 && CLNPU_CACHE_FP8
#error "one latent cache type: CLNPU_CACHE_BF16 or CLNPU_CACHE_FP8"
#endif
#if CLNPU_CACHE_TILE % 16
#error "CLNPU_CACHE_TILE must be a multiple of 16 (a vector load never spans two scales)"
#endif

/* f32 -> fp8 e4m3fn, round to nearest even, saturating at +-448 (no infinities), NaN -> 0x7f: the
 * device twin of runtime/dtype.c's clnpu_f32_to_fp8e4m3, bit for bit. */
inline uchar clnpu_f32_to_fp8e4m3(float f)
{
    const uint u = as_uint(f), a = u & 0x7fffffffu;
    const uchar sign = (uchar)((u >> 24) & 0x80u);
    if (a > 0x7f800000u) return 0x7f;
    if (a >= 0x43e00000u) return sign | 0x7e; /* >= 448 */
    if (a < 0x3c800000u) return sign | (uchar)rint(as_float(a) * 512.0f); /* < 2^-6: units of 2^-9 (8 is 2^-6) */
    /* normal: drop 20 of the 23 mantissa bits, to nearest even (a carry moves into the exponent) */
    return sign | (uchar)(((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - (120u << 3));
}

#define CLNPU_CAT_(a, b) a##b
#define CLNPU_CAT(a, b) CLNPU_CAT_(a, b)

/* fp8 e4m3fn widened exactly, n lanes at once (integer ops only: a subnormal is m * 2^-9, never an
 * f32 denormal a device might flush); 0x7f / 0xff stay NaN. */
#define CLNPU_FP8_WIDEN(n)                                                                      \
    inline float##n clnpu_fp8e4m3_to_f32_##n(uchar##n v)                                      \
    {                                                                                           \
        const uint##n u = convert_uint##n(v), em = u & 0x7fu;                                   \
        float##n r = select(as_float##n((em << 20) + (120u << 23)),                             \
                            convert_float##n(u & 7u) * 0.001953125f, em < 8u);                  \
        r = as_float##n(as_uint##n(r) | ((u & 0x80u) << 24));                                   \
        return select(r, (float##n)(NAN), em == 0x7fu);                                         \
    }
CLNPU_FP8_WIDEN(4)
CLNPU_FP8_WIDEN(16)

#if CLNPU_CACHE_FP8
#define CACHE_T uchar
#define CACHE_NT ((CLNPU_MLA_R + CLNPU_CACHE_TILE - 1) / CLNPU_CACHE_TILE) /* scales per row */
#define CACHE_ROW (CLNPU_MLA_R + 4 * CACHE_NT + 2 * CLNPU_MLA_DR)       /* bytes per row */
#define CACHE_SCALES(row) ((__global const float *)((row) + CLNPU_MLA_R))
#define CACHE_PE(row) ((__global const ushort *)((row) + CLNPU_MLA_R + 4 * CACHE_NT))

inline float clnpu_cache_load(__global const uchar *row, uint d)
{
    if (d < CLNPU_MLA_R) return clnpu_fp8e4m3_to_f32(row[d]) * CACHE_SCALES(row)[d / CLNPU_CACHE_TILE];
    return clnpu_bf16_to_f32(CACHE_PE(row)[d - CLNPU_MLA_R]);
}
inline float4 clnpu_cache_vload_c4(__global const uchar *row, uint d)
{
    return clnpu_fp8e4m3_to_f32_4(vload4(0, row + d)) * CACHE_SCALES(row)[d / CLNPU_CACHE_TILE];
}
inline float16 clnpu_cache_vload_c16(__global const uchar *row, uint d)
{
    return clnpu_fp8e4m3_to_f32_16(vload16(0, row + d)) * CACHE_SCALES(row)[d / CLNPU_CACHE_TILE];
}
inline float4 clnpu_cache_vload_pe4(__global const uchar *row, uint d)
{
    return as_float4(convert_uint4(vload4(0, CACHE_PE(row) + d)) << 16);
}
inline float16 clnpu_cache_vload_pe16(__global const uchar *row, uint d)
{
    return as_float16(convert_uint16(vload16(0, CACHE_PE(row) + d)) << 16);
}

/* The smallest power of two >= amax / 448, from amax's bits (exact): amax = 2^e * 1.f gives
 * 2^(e-8) when 1.f <= 1.75 (448 = 1.75 * 2^8), else 2^(e-7). An all-zero tile gets 2^-108. */
inline float clnpu_cache_fp8_scale(float amax)
{
    if (!(amax <= FLT_MAX)) return NAN; /* an Inf or NaN in the row: every element reads NaN */
    const uint u = as_uint(fmax(amax, 0x1p-100f));
    const uint e = (u >> 23) - 8u + ((u & 0x7fffffu) > 0x600000u ? 1u : 0u);
    return as_float(e << 23);
}

/* Work-item d of a row-wide grid (R + DR) stores its share of src[0 .. R + DR): the first
 * work-item of each tile of c finds the tile's scale and writes the scale and the tile's codes;
 * the others of c have nothing to do; each of k_pe rounds its element to bf16. */
inline void clnpu_cache_store(__global uchar *row, __global const float *src, uint d)
{
    if (d >= CLNPU_MLA_R) {
        ((__global ushort *)(row + CLNPU_MLA_R + 4 * CACHE_NT))[d - CLNPU_MLA_R] = clnpu_f32_to_bf16(src[d]);
        return;
    }
    if (d % CLNPU_CACHE_TILE) return;
    const uint n = min((uint)CLNPU_CACHE_TILE, (uint)CLNPU_MLA_R - d);
    float amax = 0.0f;
    for (uint i = 0; i < n; i++) amax = fmax(amax, fabs(src[d + i]));
    const float s = clnpu_cache_fp8_scale(amax), inv = as_float((254u << 23) - as_uint(s)); /* 1 / s, exact */
    ((__global float *)(row + CLNPU_MLA_R))[d / CLNPU_CACHE_TILE] = s;
    for (uint i = 0; i < n; i++) row[d + i] = clnpu_f32_to_fp8e4m3(src[d + i] * inv);
}

#else /* f32 or bf16: the row is R + DR elements of CACHE_T */
#define CACHE_ROW (CLNPU_MLA_R + CLNPU_MLA_DR)
#if CLNPU_CACHE_BF16
#define CACHE_T ushort
#define CLNPU_CACHE_WIDEN1(x) clnpu_bf16_to_f32(x)
#define CLNPU_CACHE_WIDEN(n, p) as_float##n(convert_uint##n(vload##n(0, (p))) << 16)
#define CLNPU_CACHE_NARROW(f) clnpu_f32_to_bf16(f)
#else
#define CACHE_T float
#define CLNPU_CACHE_WIDEN1(x) (x)
#define CLNPU_CACHE_WIDEN(n, p) vload##n(0, (p))
#define CLNPU_CACHE_NARROW(f) (f)
#endif
inline float clnpu_cache_load(__global const CACHE_T *row, uint d)
{
    return CLNPU_CACHE_WIDEN1(row[d]);
}
inline float4 clnpu_cache_vload_c4(__global const CACHE_T *row, uint d)
{
    return CLNPU_CACHE_WIDEN(4, row + d);
}
inline float16 clnpu_cache_vload_c16(__global const CACHE_T *row, uint d)
{
    return CLNPU_CACHE_WIDEN(16, row + d);
}
inline float4 clnpu_cache_vload_pe4(__global const CACHE_T *row, uint d)
{
    return CLNPU_CACHE_WIDEN(4, row + CLNPU_MLA_R + d);
}
inline float16 clnpu_cache_vload_pe16(__global const CACHE_T *row, uint d)
{
    return CLNPU_CACHE_WIDEN(16, row + CLNPU_MLA_R + d);
}
inline void clnpu_cache_store(__global CACHE_T *row, __global const float *src, uint d)
{
    row[d] = CLNPU_CACHE_NARROW(src[d]);
}
#endif

/* VW lanes of c from element d, or of k_pe from its element d (d a multiple of VW): the vector
 * width of the including kernel (VW defined before the first use). */
#define CACHE_VLOAD_C(row, d) CLNPU_CAT(clnpu_cache_vload_c, VW)((row), (d))
#define CACHE_VLOAD_PE(row, d) CLNPU_CAT(clnpu_cache_vload_pe, VW)((row), (d))

#endif
