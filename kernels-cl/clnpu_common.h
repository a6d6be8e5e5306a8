/* Helpers shared by every clnpu kernel: dtype conversions and defaults for tunables.
 * Included textually (embedded at build time), so it must stay valid OpenCL C 1.2. */
#ifndef CLNPU_COMMON_H
#define CLNPU_COMMON_H

#ifndef CLNPU_LOCAL_MEM_BYTES
#define CLNPU_LOCAL_MEM_BYTES 32768 /* local-memory budget per work-group (from the profile) */
#endif

/* bf16 is the top half of an f32: widening is a shift, exact. */
inline float clnpu_bf16_to_f32(ushort b)
{
    return as_float(((uint)b) << 16);
}

/* f32 -> bf16 with round-to-nearest-even; NaN stays NaN. */
inline ushort clnpu_f32_to_bf16(float f)
{
    uint u = as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (ushort)(u >> 16);
}

/* fp8 e4m3fn (bias 7, no infinities, 0x7f/0xff = NaN, max 448), widened exactly. */
inline float clnpu_fp8e4m3_to_f32(uchar v)
{
    uint sign = (uint)(v & 0x80u) << 24;
    uint e = (v >> 3) & 0xfu, m = v & 0x7u;
    if (e == 0xfu && m == 0x7u) return as_float(sign | 0x7fc00000u);
    if (e == 0) return as_float(sign) + (sign ? -1.0f : 1.0f) * (float)m * 0.001953125f; /* m * 2^-9 */
    return as_float(sign | ((e + 120u) << 23) | (m << 20));
}

#endif
