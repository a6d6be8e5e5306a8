/* MLA decode attention in absorbed form (DeepSeek-V2/V3, A.X K1), over a paged latent cache.
 * Per sequence b and head h: score_t = scale * (q_abs[b,h] . c_t + q_pe[b,h] . kpe_t) for every
 * cached row t = [c_t (R = kv_lora_rank) | kpe_t (DR = rope dim)], softmax over t, z = sum p_t c_t.
 * The caller folds W_UK into q_abs before and W_UV into the output after.
 *
 * Sequences of different lengths share one launch through a block table (page ids per
 * sequence, PAGE rows each). The context is split into chunks (one per work-group along dim 2);
 * each chunk writes a partial z with its max and sum, and clnpu_mla_combine merges them, so a
 * long context keeps every compute unit busy (with one chunk the output is written directly). q_pe of (b, h) is at qp + qp_off + (b*H + h) * qp_hs,
 * so it can be read in place from the projected q. A work-item serves HG heads so each cache row is
 * read once for all of them. Tunables: CLNPU_MLA_HG, CLNPU_MLA_BT (rows per softmax step). */
#include "clnpu_cache.h"
#include "clnpu_rope.h"
#include "clnpu_lanes.h"

/* CLNPU_MLA_R and CLNPU_MLA_DR (defaults 512, 64): clnpu_cache.h */
#ifndef CLNPU_MLA_HG
#define CLNPU_MLA_HG 4
#endif
#ifndef CLNPU_MLA_BT
#define CLNPU_MLA_BT 16
#endif
#define R CLNPU_MLA_R
#define DR CLNPU_MLA_DR
#define HG CLNPU_MLA_HG
#define BT CLNPU_MLA_BT
#define ROW (R + DR)

#if R % 4 || DR % 4
#error "latent and rope dims must be multiples of 4"
#endif

#if R % 16 == 0 && DR % 16 == 0
#define VW 16
#define VF float16
#define VL vload16
#define VS vstore16
inline float hsum(float16 v)
{
    float8 a = v.lo + v.hi;
    float4 b = a.lo + a.hi;
    return b.x + b.y + b.z + b.w;
}
#else
#define VW 4
#define VF float4
#define VL vload4
#define VS vstore4
inline float hsum(float4 v)
{
    return v.x + v.y + v.z + v.w;
}
#endif
#include "mla_block.h"

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_mla_decode
/* Grid: (ceil(H / HG), B, splits). part_z: [B][H][splits][R]; part_ml: [B][H][splits][2]. rtab
 * (NULL: q_pe comes rotated): the rope table q_pe is rotated with as it is read. */
__kernel void clnpu_mla_decode(__global const float *qa, __global const float *qp,
                               const uint qp_off, const uint qp_hs,
                               __global const CACHE_T *cache, const uint page,
                               __global const int *block_table, const uint max_blocks,
                               __global const int *seq_len, __global float *part_z,
                               __global float *part_ml, const uint H, const uint splits,
                               const uint chunk, const float scale, __global const float2 *rtab,
                               const uint npos, const uint half_split)
{
    const uint hg0 = get_global_id(0) * HG, b = get_global_id(1), sp = get_global_id(2);
    if (hg0 >= H) return;
    const uint nh = min((uint)HG, H - hg0);
    const uint len = (uint)seq_len[b];
    const uint t0 = sp * chunk, t1 = min(len, t0 + chunk);

    float q[HG][R], qr[HG][DR], z[HG][R], m[HG], lsum[HG];
    for (uint g = 0; g < HG; g++) {
        const uint h = hg0 + min(g, nh - 1);
        __global const float *a = qa + ((size_t)b * H + h) * R;
        __global const float *p = qp + qp_off + ((size_t)b * H + h) * qp_hs;
        for (int d = 0; d < R; d++) {
            q[g][d] = a[d] * scale;
            z[g][d] = 0.0f;
        }
        /* with a rope table, q_pe is rotated here, at the new token's position len - 1 */
        for (int d = 0; d < DR; d++) qr[g][d] = (rtab ? clnpu_rope_elem(p, d, DR, rtab, (int)len - 1, npos, half_split) : p[d]) * scale;
        m[g] = -INFINITY;
        lsum[g] = 0.0f;
    }
    __global const int *bt = block_table + (size_t)b * max_blocks;
    for (uint tb = t0; tb < t1; tb += BT) {
        const uint cnt = min((uint)BT, t1 - tb);
        __global const CACHE_T *rows[BT];
        for (uint j = 0; j < cnt; j++) {
            const uint t = tb + j;
            rows[j] = cache + ((size_t)bt[t / page] * page + t % page) * CACHE_ROW;
        }
        clnpu_mla_block(rows, cnt, q, qr, z, m, lsum);
    }
    clnpu_mla_store(z, m, lsum, part_z, part_ml, (size_t)b * H + hg0, nh, splits, sp);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_mla_combine
/* Merge the chunks: z = sum_s exp(m_s - M) z_s / sum_s exp(m_s - M) l_s. Grid: (R, H, B). */
__kernel void clnpu_mla_combine(__global const float *part_z, __global const float *part_ml,
                                __global float *out, const uint H, const uint splits)
{
    const uint d = get_global_id(0), h = get_global_id(1), b = get_global_id(2);
    if (d >= R) return;
    const size_t base = ((size_t)b * H + h) * splits;
    float M = -INFINITY;
    for (uint s = 0; s < splits; s++) M = fmax(M, part_ml[2 * (base + s)]);
    float num = 0.0f, den = 0.0f;
    for (uint s = 0; s < splits; s++) {
        const float ms = part_ml[2 * (base + s)];
        if (ms == -INFINITY) continue; /* empty chunk */
        const float w = exp(ms - M);
        num += w * part_z[(base + s) * R + d];
        den += w * part_ml[2 * (base + s) + 1];
    }
    out[((size_t)b * H + h) * R + d] = num / den;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_kv_append
/* Append latent rows to the paged cache: row t of src (c | k_pe, at srcoff, stride lds) goes to
 * sequence seq[t] at position pos[t]. With a rope table, k_pe is rotated first, in place (the
 * launch RoPE took otherwise). Grid: (lanes, T), work-groups (lanes, 1): a row's lanes stride
 * through it (clnpu_lanes). */
__kernel void clnpu_kv_append(__global CACHE_T *cache, const uint page, __global const int *block_table,
                              const uint max_blocks, __global float *src, const uint srcoff,
                              const uint lds, __global const int *seq, __global const int *pos,
                              __global const float2 *table, const uint npos, const uint half_split)
{
    const uint t = get_global_id(1), p = (uint)pos[t];
    __global float *row = src + srcoff + (size_t)t * lds;
    if (table) {
        for (uint i = get_local_id(0); i < DR / 2; i += CLNPU_LANES)
            clnpu_rope_pair(row + R, i, DR, table, pos[t], npos, half_split);
        barrier(CLK_GLOBAL_MEM_FENCE); /* an fp8 tile's store reads its neighbours; k_pe is read whole below */
    }
    const int pg = block_table[(size_t)seq[t] * max_blocks + p / page];
    for (uint d = get_local_id(0); d < ROW; d += CLNPU_LANES)
        clnpu_cache_store(cache + ((size_t)pg * page + p % page) * CACHE_ROW, row, d);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_kv_gather
/* Copy positions [0, len) of sequence s out of the paged cache into dst [len][ROW].
 * Grid: (lanes, len) as clnpu_kv_append's. */
__kernel void clnpu_kv_gather(__global float *dst, __global const CACHE_T *cache, const uint page,
                              __global const int *block_table, const uint max_blocks, const uint s)
{
    const uint p = get_global_id(1);
    const int pg = block_table[(size_t)s * max_blocks + p / page];
    for (uint d = get_local_id(0); d < ROW; d += CLNPU_LANES)
        dst[(size_t)p * ROW + d] = clnpu_cache_load(cache + ((size_t)pg * page + p % page) * CACHE_ROW, d);
}
#endif /* CLNPU_ONLY */
