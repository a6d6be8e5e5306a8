/* Work-group family of the absorbed MLA decode (same math and outputs as mla.cl): a work-group of
 * WGS threads per (HG heads, sequence b, context chunk). The HG scaled query rows [q_abs | q_pe]
 * stay in local memory; cache rows [c_t | kpe_t] of the chunk stream through local tiles of BT
 * rows (coalesced loads through the block table); threads compute the HG x BT scores, one thread
 * per head runs the online-softmax update, and the threads accumulate z = z * corr + p . c with
 * ceil(HG * R / WGS) latent elements each. Chunks write partial (z, max, sum) that
 * clnpu_mla_combine (mla.cl) merges, or the output directly when the context is one chunk.
 * Local floats: HG * ROW + BT * (ROW + 1) + HG * BT + 3 * HG; the host sizes HG and BT. */
#include "clnpu_cache.h"
#include "clnpu_rope.h"

/* CLNPU_MLA_R and CLNPU_MLA_DR (defaults 512, 64): clnpu_cache.h */
#ifndef CLNPU_MLA_HG
#define CLNPU_MLA_HG 4
#endif
#ifndef CLNPU_MLA_BT
#define CLNPU_MLA_BT 8
#endif
#ifndef WGS
#define WGS 64
#endif
#define R CLNPU_MLA_R
#define DR CLNPU_MLA_DR
#define HG CLNPU_MLA_HG
#define BT CLNPU_MLA_BT
#define ROW (R + DR)
#define CS (ROW + 1)                      /* padded cache row in local memory */
#define ZPT_ ((HG * R + WGS - 1) / WGS)
#define ZPT (ZPT_ > 1 ? ZPT_ : 2)          /* latent outputs per thread (at least 2: attention_wg.cl says why) */
#define SPT ((HG * BT + WGS - 1) / WGS)   /* scores per thread */
#if HG > WGS
#error "mla_wg: HG must not exceed the work-group"
#endif
#include "mla_wg_tile.h"

/* Grid: (ceil(H / HG) * WGS, B, splits), local (WGS, 1, 1). part_z: [B][H][splits][R];
 * part_ml: [B][H][splits][2]; rtab: as mla.cl's; lm: the local floats above. */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_mla_decode_wg(__global const float *qa, __global const float *qp, const uint qp_off, const uint qp_hs,
                         __global const CACHE_T *cache, const uint page, __global const int *block_table,
                         const uint max_blocks, __global const int *seq_len, __global float *part_z,
                         __global float *part_ml, const uint H, const uint splits, const uint chunk,
                         const float scale, __global const float2 *rtab, const uint npos,
                         const uint half_split, __local float *lm)
{
    __local float *qs = lm, *cs = qs + HG * ROW, *ss = cs + BT * CS;
    __local float *mrow = ss + HG * BT, *lrow = mrow + HG, *crow = lrow + HG;
    const uint lid = get_local_id(0), hg0 = get_group_id(0) * HG, b = get_group_id(1), sp = get_group_id(2);
    if (hg0 >= H) return;
    const uint nh = min((uint)HG, H - hg0);
    const uint len = (uint)seq_len[b];
    const uint t0 = sp * chunk, t1 = min(len, t0 + chunk);
    for (uint e = lid; e < HG * ROW; e += WGS) {
        const uint g = e / ROW, d = e % ROW, h = hg0 + min(g, nh - 1);
        __global const float *pe = qp + qp_off + ((size_t)b * H + h) * qp_hs; /* rotated here with rtab */
        qs[e] = (d < R ? qa[((size_t)b * H + h) * R + d]
                       : rtab ? clnpu_rope_elem(pe, d - R, DR, rtab, (int)len - 1, npos, half_split) : pe[d - R]) * scale;
    }
    if (lid < HG) {
        mrow[lid] = -INFINITY;
        lrow[lid] = 0.0f;
    }
    float z[ZPT];
    for (uint i = 0; i < ZPT; i++) z[i] = 0.0f;
    __global const int *bt = block_table + (size_t)b * max_blocks;
    for (uint tb = t0; tb < t1; tb += BT) {
        const uint cnt = min((uint)BT, t1 - tb);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint e = lid; e < BT * ROW; e += WGS) {
            const uint j = e / ROW, d = e % ROW, t = tb + j;
            cs[j * CS + d] = j < cnt ? clnpu_cache_load(cache + ((size_t)bt[t / page] * page + t % page) * CACHE_ROW, d) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        clnpu_mla_wg_tile(qs, cs, ss, mrow, lrow, crow, z, lid, cnt);
    }
    clnpu_mla_wg_store(z, mrow, lrow, part_z, part_ml, (size_t)b * H + hg0, nh, splits, sp, lid);
}
