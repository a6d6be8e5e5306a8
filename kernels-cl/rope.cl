/* Rotary position embedding on the rope slice of q and k (A.X K1: the last 64 of each 192-wide
 * q head, and the one shared 64-wide k_pe). cos/sin come from a table built once per context
 * length on the host (runtime/rope.c), already multiplied by the YaRN attention factor.
 * Layouts: interleaved pairs (x[2i], x[2i+1]) — A.X K1 / DeepSeek, vLLM is_neox_style=False;
 * half-split pairs (x[i], x[i + d/2]) — Llama / NeoX style. */
#include "clnpu_common.h"

/* x: rows (tokens) of `heads` vectors; element (t, h, i) of the rope slice sits at
 * x[off + t*ld + h*hstride + i]. table: [positions][d/2] of (cos, sin) pairs. */
__kernel void clnpu_rope(__global float *x, const uint off, const uint ld, const uint hstride,
                         const uint heads, const uint d, __global const float2 *table,
                         __global const int *pos, const uint npos, const uint half_split)
{
    const uint i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    if (i >= d / 2 || h >= heads) return;
    __global float *v = x + off + (size_t)t * ld + (size_t)h * hstride;
    const uint a = half_split ? i : 2 * i, b = half_split ? i + d / 2 : 2 * i + 1;
    const int p = pos[t];
    if (p < 0 || (uint)p >= npos) { /* outside the table: poison rather than read past it */
        v[a] = v[b] = as_float(0x7fc00000u);
        return;
    }
    const float2 cs = table[(size_t)p * (d / 2) + i];
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * cs.x - x1 * cs.y;
    v[b] = x1 * cs.x + x0 * cs.y;
}
