/* RMSNorm with fp32 accumulation, optionally fused with the residual add (vLLM's "fused add +
 * norm"): h += x; y = w * h / sqrt(mean(h^2) + eps). One work-group per row; CLNPU_NORM_WG
 * work-items share the row and reduce the sum of squares in local memory. */
#include "clnpu_common.h"

#ifndef CLNPU_NORM_WG
#define CLNPU_NORM_WG 1
#endif

inline float row_sumsq(__global const float *h, uint dim, __local float *part)
{
    const uint l = get_local_id(0);
    float s = 0.0f;
#if CLNPU_NORM_WG == 1
    /* Sixteen partial sums: one chain of dependent FMAs (the compiler may not reassociate it)
     * ran at one element per FMA latency; axk1-mini on PoCL (Zen 5): a 512-token prefill's 40
     * norms 9-17 ms -> 2.4-3.0 ms, a decode step's 55 -> 28 us. */
    float16 acc = (float16)(0.0f);
    uint i = 0;
    for (; i + 16 <= dim; i += 16) {
        const float16 v = vload16(0, h + i);
        acc = fma(v, v, acc);
    }
    const float8 a8 = acc.lo + acc.hi;
    const float4 a4 = a8.lo + a8.hi;
    const float2 a2 = a4.lo + a4.hi;
    s = a2.x + a2.y;
    for (; i < dim; i++) s = fma(h[i], h[i], s);
#else
    for (uint i = l; i < dim; i += CLNPU_NORM_WG) s = fma(h[i], h[i], s);
#endif
#if CLNPU_NORM_WG > 1
    part[l] = s;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint w = CLNPU_NORM_WG / 2; w > 0; w >>= 1) {
        if (l < w) part[l] += part[l + w];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    s = part[0];
#endif
    return s;
}

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_rmsnorm
/* y[r] = norm(x[r]) * w; rows of x and y have strides ldx / ldy (in place allowed). With
 * has_residual, h[r] += x[r] first and h is what gets normalised (h keeps the sum). */
__kernel void clnpu_rmsnorm(__global float *x, const uint xoff, const uint ldx,
                            __global float *h, const uint hoff, const uint ldh,
                            __global float *y, const uint yoff, const uint ldy,
                            __global const float *w, const uint dim, const float eps,
                            const uint has_residual)
{
    __local float part[CLNPU_NORM_WG];
    const uint r = get_group_id(0), l = get_local_id(0);
    __global float *xr = x + xoff + (size_t)r * ldx;
    __global float *src = xr;
    if (has_residual) {
        __global float *hr = h + hoff + (size_t)r * ldh;
        for (uint i = l; i < dim; i += CLNPU_NORM_WG) hr[i] += xr[i];
        barrier(CLK_GLOBAL_MEM_FENCE);
        src = hr;
    }
    /* 1/sqrt rather than rsqrt: rsqrt may be 2 ulp off, and it scales the whole row. */
    const float inv = 1.0f / sqrt(row_sumsq(src, dim, part) / (float)dim + eps);
    __global float *yr = y + yoff + (size_t)r * ldy;
    for (uint i = l; i < dim; i += CLNPU_NORM_WG) yr[i] = w[i] * (src[i] * inv);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_rmsnorm_add_tag
/* The end of a decoder layer in one launch instead of four (post-MLP norm, residual add, non-finite
 * check, the next layer's input norm): per row, h += x, or h += norm(x) * w1 with w1 (x NULL:
 * nothing added); then, with tag >= 0, the non-finite check of h as clnpu_nonfinite_tag does it
 * (atomic_min of *flag to tag, a bit test immune to fast-math); then y = norm(h) * w2 with w2. The
 * sums and products are the separate kernels' own, in their order. */
__kernel void clnpu_rmsnorm_add_tag(__global const float *x, const uint xoff, const uint ldx,
                                    __global const float *w1, __global float *h, const uint hoff,
                                    const uint ldh, __global float *y, const uint yoff, const uint ldy,
                                    __global const float *w2, const uint dim, const float eps, const int tag,
                                    __global int *flag)
{
    __local float part[CLNPU_NORM_WG];
    const uint r = get_group_id(0), l = get_local_id(0);
    __global float *hr = h + hoff + (size_t)r * ldh;
    if (x) {
        __global const float *xr = x + xoff + (size_t)r * ldx;
        const float inv1 = w1 ? 1.0f / sqrt(row_sumsq(xr, dim, part) / (float)dim + eps) : 1.0f;
        for (uint i = l; i < dim; i += CLNPU_NORM_WG) hr[i] += w1 ? w1[i] * (xr[i] * inv1) : xr[i];
        /* every work-item's h is written, and part[0] read, before the next reduction */
        barrier(CLK_GLOBAL_MEM_FENCE | CLK_LOCAL_MEM_FENCE);
    }
    if (tag >= 0) {
        uint bad = 0;
        for (uint i = l; i < dim; i += CLNPU_NORM_WG) bad |= (as_uint(hr[i]) & 0x7f800000u) == 0x7f800000u;
        if (bad) atomic_min(flag, tag);
    }
    if (!w2) return;
    const float inv = 1.0f / sqrt(row_sumsq(hr, dim, part) / (float)dim + eps);
    __global float *yr = y + yoff + (size_t)r * ldy;
    for (uint i = l; i < dim; i += CLNPU_NORM_WG) yr[i] = w2[i] * (hr[i] * inv);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_rmsnorm2
/* Two sets of rows normalised in place in one launch (MLA: the outputs of q_a and kv_a, each with
 * its own norm): work-group r < rows takes row r of x (dim, weight w), the next rows those of x2
 * (dim2, w2). */
__kernel void clnpu_rmsnorm2(__global float *x, const uint xoff, const uint ldx, __global const float *w,
                             const uint dim, __global float *x2, const uint xoff2, const uint ldx2,
                             __global const float *w2, const uint dim2, const uint rows, const float eps)
{
    __local float part[CLNPU_NORM_WG];
    const uint g = get_group_id(0), l = get_local_id(0), second = g >= rows, r = second ? g - rows : g;
    __global float *v = second ? x2 + xoff2 + (size_t)r * ldx2 : x + xoff + (size_t)r * ldx;
    __global const float *wv = second ? w2 : w;
    const uint n = second ? dim2 : dim;
    const float inv = 1.0f / sqrt(row_sumsq(v, n, part) / (float)n + eps);
    for (uint i = l; i < n; i += CLNPU_NORM_WG) v[i] = wv[i] * (v[i] * inv);
}
#endif /* CLNPU_ONLY */
