/* Rotary position embedding on the rope slice of q and k (A.X K1: the last 64 of each 192-wide
 * q head, and the one shared 64-wide k_pe). cos/sin come from a table built once per context
 * length on the host (runtime/rope.c), already multiplied by the YaRN attention factor.
 * Layouts: interleaved pairs (x[2i], x[2i+1]) — A.X K1 / DeepSeek, vLLM is_neox_style=False;
 * half-split pairs (x[i], x[i + d/2]) — Llama / NeoX style. */
#include "clnpu_common.h"
#include "clnpu_rope.h"
#include "clnpu_lanes.h"

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_rope
/* x: rows (tokens) of `heads` vectors; element (t, h, i) of the rope slice sits at
 * x[off + t*ld + h*hstride + i]; then heads2 more of x2 (0: none) with their own offset, stride
 * and head stride, so two tensors of the same rows take one launch (MLA: q's heads and the one
 * k_pe). table: [positions][d/2] of (cos, sin) pairs.
 * Grid (lanes, rows), work-groups (lanes, 1): a row's lanes stride through its (heads + heads2)
 * x d/2 pairs (clnpu_lanes: one work-item per row on the cpu family, where a work-group per pair
 * cost more than the rotation). */
__kernel void clnpu_rope(__global float *x, const uint off, const uint ld, const uint hstride,
                         const uint heads, __global float *x2, const uint off2, const uint ld2,
                         const uint hstride2, const uint heads2, const uint d, __global const float2 *table,
                         __global const int *pos, const uint npos, const uint half_split)
{
    const uint t = get_global_id(1), hp = d / 2, n = (heads + heads2) * hp;
    for (uint j = get_local_id(0); j < n; j += CLNPU_LANES) {
        const uint h = j / hp, i = j % hp;
        __global float *v = h < heads ? x + off + (size_t)t * ld + (size_t)h * hstride
                                      : x2 + off2 + (size_t)t * ld2 + (size_t)(h - heads) * hstride2;
        clnpu_rope_pair(v, i, d, table, pos[t], npos, half_split);
    }
}
#endif /* CLNPU_ONLY */
