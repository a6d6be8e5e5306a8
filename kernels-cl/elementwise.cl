/* Elementwise kernels: fills, copies, scaled adds. The smallest kernels, used by tier-0
 * conformance (launches, events) and as building blocks by the runtime. */
#include "clnpu_common.h"
#include "clnpu_lanes.h"

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_fill_f32
__kernel void clnpu_fill_f32(__global float *y, const float value, const uint n)
{
    uint i = get_global_id(0);
    if (i < n) y[i] = value;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_copy_f32
__kernel void clnpu_copy_f32(__global float *y, __global const float *x, const uint n)
{
    uint i = get_global_id(0);
    if (i < n) y[i] = x[i];
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_axpby_f32
/* y = a * x + b * y */
__kernel void clnpu_axpby_f32(__global float *y, __global const float *x, const float a,
                              const float b, const uint n)
{
    uint i = get_global_id(0);
    if (i < n) y[i] = fma(a, x[i], b * y[i]);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_convert_bf16_f32
__kernel void clnpu_convert_bf16_f32(__global float *y, __global const ushort *x, const uint n)
{
    uint i = get_global_id(0);
    if (i < n) y[i] = clnpu_bf16_to_f32(x[i]);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_silu_mul
/* y[r][i] = silu(g[r][i]) * u[r][i] (the unfused SwiGLU product). */
__kernel void clnpu_silu_mul(__global float *y, const uint ldy, __global const float *g,
                             const uint ldg, __global const float *u, const uint ldu, const uint n)
{
    const uint i = get_global_id(0), r = get_global_id(1);
    if (i >= n) return;
    const float a = g[(size_t)r * ldg + i];
    y[(size_t)r * ldy + i] = a / (1.0f + exp(-a)) * u[(size_t)r * ldu + i];
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_embed_bf16
/* Embedding lookup: y[t] = E[ids[t]] with bf16 rows widened to f32 (exact). The table holds
 * rows [first, first + rows) of a vocabulary of `vocab` (a tensor-parallel rank's slice): other
 * ids of the vocabulary give zeros (another rank has them), ids outside it NaN, so they are
 * caught, never read outside the table. Grid: (lanes, count), work-groups (lanes, 1): a row's
 * lanes stride through it (clnpu_lanes). */
__kernel void clnpu_embed_bf16(__global float *y, __global const ushort *E, __global const int *ids,
                               const uint dim, const uint first, const uint rows, const uint vocab)
{
    const uint t = get_global_id(1);
    const int id = ids[t];
    const uint r = (uint)id - first;
    for (uint i = get_local_id(0); i < dim; i += CLNPU_LANES)
        y[(size_t)t * dim + i] = id < 0 || (uint)id >= vocab ? as_float(0x7fc00000u)
                                 : r < rows ? clnpu_bf16_to_f32(E[(size_t)r * dim + i]) : 0.0f;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_embed_f32
__kernel void clnpu_embed_f32(__global float *y, __global const float *E, __global const int *ids,
                              const uint dim, const uint first, const uint rows, const uint vocab)
{
    const uint t = get_global_id(1);
    const int id = ids[t];
    const uint r = (uint)id - first;
    for (uint i = get_local_id(0); i < dim; i += CLNPU_LANES)
        y[(size_t)t * dim + i] = id < 0 || (uint)id >= vocab ? as_float(0x7fc00000u) : r < rows ? E[(size_t)r * dim + i] : 0.0f;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_softmax
/* Row softmax in place, fp32, max-subtracted. One work-item per row. Built without fast-math
 * options, so the compensation below is kept. */
__kernel void clnpu_softmax(__global float *x, const uint ld, const uint n)
{
    __global float *r = x + (size_t)get_global_id(0) * ld;
    float m = -INFINITY;
    for (uint i = 0; i < n; i++) m = fmax(m, r[i]);
    /* Kahan-compensated sum: a plain f32 sum over a 163840-token vocabulary drifts by ~1e-4. */
    float s = 0.0f, comp = 0.0f;
    for (uint i = 0; i < n; i++) {
        const float e = exp(r[i] - m);
        r[i] = e;
        const float y = e - comp, t = s + y;
        comp = (t - s) - y;
        s = t;
    }
    const float inv = 1.0f / s;
    for (uint i = 0; i < n; i++) r[i] *= inv;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_argmax
/* Index of the largest value per row; ties go to the lowest index, NaN is never chosen. */
__kernel void clnpu_argmax(__global int *out, __global const float *x, const uint ld, const uint n)
{
    const uint row = get_global_id(0);
    __global const float *r = x + (size_t)row * ld;
    int best = -1;
    float bv = -INFINITY;
    for (uint i = 0; i < n; i++)
        if (r[i] > bv || (best < 0 && r[i] == bv)) {
            bv = r[i];
            best = (int)i;
        }
    out[row] = best;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_mla_assemble_k
/* MLA prefill keys: K[s][h] = [k_nope (kv row s, head h, first `nope` of each head's
 * nope + v block) | k_pe (the one rope key of row s, shared by all heads)].
 * Grid: (lanes, heads, S), work-groups (lanes, 1, 1): a row's lanes stride through it
 * (clnpu_lanes). */
__kernel void clnpu_mla_assemble_k(__global float *K, __global const float *kv, const uint nope,
                                   const uint vdim, __global const float *latent, const uint lat_ld,
                                   const uint lat_off, const uint rope, const uint heads)
{
    const uint h = get_global_id(1), s = get_global_id(2);
    if (h >= heads) return;
    __global float *k = K + ((size_t)s * heads + h) * (nope + rope);
    __global const float *kn = kv + ((size_t)s * heads + h) * (nope + vdim);
    __global const float *kr = latent + (size_t)s * lat_ld + lat_off;
    for (uint d = get_local_id(0); d < nope + rope; d += CLNPU_LANES) k[d] = d < nope ? kn[d] : kr[d - nope];
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_probe_fma
/* Probe: a long chain of independent FMAs per work-item in float8 registers (FMA-bound). The
 * result is stored so the compiler cannot drop the loop. */
__kernel void clnpu_probe_fma(__global float *out, const uint iters, const float a)
{
    float8 x0 = (float8)(get_global_id(0) * 1e-9f), x1 = x0 + 1.0f, x2 = x0 + 2.0f, x3 = x0 + 3.0f;
    float8 x4 = x0 + 4.0f, x5 = x0 + 5.0f, x6 = x0 + 6.0f, x7 = x0 + 7.0f;
    const float8 b = (float8)(0.999f);
    for (uint i = 0; i < iters; i++) {
        x0 = fma(x0, b, a); x1 = fma(x1, b, a); x2 = fma(x2, b, a); x3 = fma(x3, b, a);
        x4 = fma(x4, b, a); x5 = fma(x5, b, a); x6 = fma(x6, b, a); x7 = fma(x7, b, a);
    }
    float8 s = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
    out[get_global_id(0)] = s.s0 + s.s1 + s.s2 + s.s3 + s.s4 + s.s5 + s.s6 + s.s7;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_probe_read
/* Probe: read-only bandwidth (sum of float16 rows per work-item, two chains). */
__kernel void clnpu_probe_read(__global float *out, __global const float16 *x, const uint per_item)
{
    const size_t base = (size_t)get_global_id(0) * per_item;
    float16 s = (float16)(0.0f), t = (float16)(0.0f);
    for (uint i = 0; i < per_item; i += 2) {
        s += x[base + i];
        t += x[base + i + 1];
    }
    s += t;
    out[get_global_id(0)] = s.s0 + s.s1 + s.s2 + s.s3 + s.s4 + s.s5 + s.s6 + s.s7 + s.s8 + s.s9 + s.sa + s.sb +
                            s.sc + s.sd + s.se + s.sf;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_probe_empty
/* Probe: an empty kernel for launch latency. */
__kernel void clnpu_probe_empty(__global float *out)
{
    if (get_global_id(0) == 0xffffffffu) out[0] = 0.0f;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_nonfinite_tag
/* The non-finite check of a forward (runtime/model_forward.c): a work-item that finds NaN or Inf
 * (all exponent bits set: a bit test, immune to fast-math) in its stretch of x [n] lowers *flag to
 * tag with atomic_min, so after a step *flag holds the smallest tag that went bad (the first
 * layer). Nothing is written while all is finite, so the flag needs no reset per step. Work-group
 * g checks the stretch [g chunk, (g + 1) chunk), its lanes striding through it (clnpu_stretches). */
__kernel void clnpu_nonfinite_tag(__global const uint *x, const ulong n, const ulong chunk, const int tag,
                                  __global int *flag)
{
    const ulong lo = get_group_id(0) * chunk, hi = min(lo + chunk, n);
    uint bad = 0;
    for (ulong i = lo + get_local_id(0); i < hi; i += CLNPU_LANES) bad |= (x[i] & 0x7f800000u) == 0x7f800000u;
    if (bad) atomic_min(flag, tag);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_add_f32
/* y += x over [n], in stretches as clnpu_nonfinite_tag's. */
__kernel void clnpu_add_f32(__global float *y, __global const float *x, const ulong n, const ulong chunk)
{
    const ulong lo = get_group_id(0) * chunk, hi = min(lo + chunk, n);
    for (ulong i = lo + get_local_id(0); i < hi; i += CLNPU_LANES) y[i] += x[i];
}
#endif /* CLNPU_ONLY */
