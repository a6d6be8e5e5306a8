/* One RoPE pair rotated in place, shared by rope.cl and the kernels that rotate as they go (the
 * latent append, MLA decode's query). table: [positions][d/2] of (cos, sin) (runtime/rope.c);
 * interleaved pairs (2i, 2i + 1) or half-split (i, i + d/2). A position outside the table poisons
 * the pair rather than reading past it. */
#ifndef CLNPU_ROPE_H
#define CLNPU_ROPE_H

/* Element e (< d) of vector v rotated at position p, as clnpu_rope_pair writes it. */
inline float clnpu_rope_elem(__global const float *v, const uint e, const uint d, __global const float2 *table,
                             const int p, const uint npos, const uint half_split)
{
    const uint hp = d / 2, i = half_split ? e % hp : e / 2, a = half_split ? i : 2 * i, b = half_split ? i + hp : 2 * i + 1;
    if (p < 0 || (uint)p >= npos) return as_float(0x7fc00000u);
    const float2 cs = table[(size_t)p * hp + i];
    const float x0 = v[a], x1 = v[b];
    return e == a ? x0 * cs.x - x1 * cs.y : x1 * cs.x + x0 * cs.y;
}

inline void clnpu_rope_pair(__global float *v, const uint i, const uint d, __global const float2 *table, const int p,
                            const uint npos, const uint half_split)
{
    const uint a = half_split ? i : 2 * i, b = half_split ? i + d / 2 : 2 * i + 1;
    if (p < 0 || (uint)p >= npos) {
        v[a] = v[b] = as_float(0x7fc00000u);
        return;
    }
    const float2 cs = table[(size_t)p * (d / 2) + i];
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * cs.x - x1 * cs.y;
    v[b] = x1 * cs.x + x0 * cs.y;
}
#endif
