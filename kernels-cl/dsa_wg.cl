/* Work-group family of DeepSeek Sparse Attention (same arguments, outputs and selections as
 * dsa.cl, plus a __local area): work-groups of WGS threads with local-memory tiles and tree
 * reductions, for GPUs and NPUs.
 *  - clnpu_dsa_scores_wg: a group per (BK keys, query): the key tile and HC query heads at a time
 *    in local memory; WGS / BK lanes split the heads of each key, reduced over the lanes.
 *  - clnpu_dsa_topk_wg: a group per query: the radix select of dsa.cl (four passes of a 256-bin
 *    histogram, built by the group with local atomics, its k-th bin found through a scan), then
 *    the indices written in increasing order through a work-group scan, ties at the k-th value to
 *    the lower indices, so the selection is dsa.cl's exactly.
 *  - clnpu_mla_sparse_wg: mla_wg.cl's absorbed attention over the selected latent rows (BT at a
 *    time through a local tile) instead of a context range.
 *  - clnpu_layernorm_wg: a group per row, mean and variance by local reductions.
 * Tunables: CLNPU_DSA_BK, CLNPU_DSA_HC (kernels-cl/tunables.yaml, dsa_wg); CLNPU_DSA_D,
 * CLNPU_MLA_R / DR / HG / BT and WGS from the host, which sizes them to the local budget.
 * Per-thread arrays have at least two elements (PoCL 3.1 quirk, see attention_wg.cl). */
#include "clnpu_cache.h"

#ifndef CLNPU_DSA_D
#define CLNPU_DSA_D 128
#endif
#ifndef WGS
#define WGS 64
#endif
#ifndef CLNPU_DSA_BK
#if WGS < 32
#define CLNPU_DSA_BK WGS
#else
#define CLNPU_DSA_BK 32
#endif
#endif
#ifndef CLNPU_DSA_HC
#define CLNPU_DSA_HC 8
#endif
/* CLNPU_MLA_R and CLNPU_MLA_DR (defaults 512, 64): clnpu_cache.h */
#ifndef CLNPU_MLA_HG
#define CLNPU_MLA_HG 4
#endif
#ifndef CLNPU_MLA_BT
#define CLNPU_MLA_BT 8
#endif
#define D CLNPU_DSA_D
#define BK CLNPU_DSA_BK
#define HC CLNPU_DSA_HC
#define R CLNPU_MLA_R
#define DR CLNPU_MLA_DR
#define HG CLNPU_MLA_HG
#define BT CLNPU_MLA_BT
#define ROW (R + DR)
#define KS (D + 1)  /* padded key row in local memory: a lane's column walk avoids one bank */
#define CS (ROW + 1) /* padded latent row */
#define LANES (WGS / BK)
#if WGS & (WGS - 1) || BK & (BK - 1) || BK > WGS
#error "dsa_wg: WGS and BK must be powers of two, BK <= WGS"
#endif
#if WGS < 16 || WGS > 256
#error "dsa_wg: the top-k needs 16 <= WGS <= 256 (16-bit scan halves)"
#endif
#if HG > WGS
#error "dsa_wg: HG must not exceed the work-group"
#endif

/* The latent cache's rows (f32, bf16 or fp8) come from kernels-cl/clnpu_cache.h, as in mla_wg.cl:
 * each latent read is clnpu_cache_load of the row at cache + index * CACHE_ROW, widened (and
 * scaled) as a tile is loaded; the tile and the arithmetic stay f32. */
#define CACHE_READ(row, d) clnpu_cache_load((row), (d))
#define CACHE_STRIDE CACHE_ROW

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_dsa_scores_wg
/* Grid: (ceil(max_len / BK) * WGS, T), local (WGS, 1). Keys past a query's position get -inf.
 * lm: HC * D + HC + BK * KS + WGS floats. */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_dsa_scores_wg(__global const float *q, const uint q_off, const uint ldq, __global const float *w,
                         const uint w_off, const uint ldw, __global const float *kcache, const uint page,
                         __global const int *block_table, const uint max_blocks, __global const int *seq,
                         __global const int *pos, __global float *scores, const uint lds, const uint NH,
                         const float scale, __local float *lm)
{
    __local float *qs = lm, *ws = qs + HC * D, *ks = ws + HC, *red = ks + BK * KS;
    const uint lid = get_local_id(0), j0 = get_group_id(0) * BK, t = get_group_id(1);
    if (j0 >= lds) return;
    const uint last = (uint)pos[t];
    __global float *out = scores + (size_t)t * lds;
    const uint nk = j0 > last ? 0 : min((uint)BK, last + 1 - j0);
    for (uint i = nk + lid; i < BK && j0 + i < lds; i += WGS) out[j0 + i] = -INFINITY;
    if (!nk) return; /* the same for the whole group */
    __global const int *bt = block_table + (size_t)seq[t] * max_blocks;
    for (uint e = lid; e < BK * D; e += WGS) { /* consecutive threads: consecutive floats of a key */
        const uint j = e / D, d = e % D, key = j0 + j;
        ks[j * KS + d] = j < nk ? kcache[((size_t)bt[key / page] * page + key % page) * D + d] : 0.0f;
    }
    __global const float *qt = q + q_off + (size_t)t * ldq;
    __global const float *wt = w + w_off + (size_t)t * ldw;
    const uint j = lid % BK, lane = lid / BK;
    float s = 0.0f;
    for (uint h0 = 0; h0 < NH; h0 += HC) {
        const uint nh = min((uint)HC, NH - h0);
        barrier(CLK_LOCAL_MEM_FENCE); /* the key tile is in; the previous heads are read */
        for (uint e = lid; e < nh * D; e += WGS) qs[e] = qt[(size_t)h0 * D + e];
        for (uint g = lid; g < nh; g += WGS) ws[g] = wt[h0 + g];
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint g = lane; g < nh; g += LANES) {
            float acc = 0.0f;
            for (uint d = 0; d < D; d++) acc = fma(qs[g * D + d], ks[j * KS + d], acc);
            s = fma(ws[g], fmax(acc, 0.0f), s);
        }
    }
    red[lid] = s; /* lid = lane * BK + j */
    for (uint hw = LANES / 2; hw > 0; hw >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lane < hw) red[lid] += red[lid + hw * BK];
    }
    if (lane == 0 && j < nk) out[j0 + j] = red[j] * scale;
}
#endif /* CLNPU_ONLY */

/* Order-preserving map of a float to an unsigned key (larger float, larger key), as dsa.cl. */
inline uint dsa_key(float f)
{
    const uint u = as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* Inclusive prefix sum of v over the work-group (Hillis-Steele in sc[WGS]); afterwards sc[WGS - 1]
 * holds the total, until the caller's next barrier. No out-parameter: PoCL 3.1 mishandles a
 * private variable whose address is taken across barriers (heap corruption at 64 work-items). */
inline uint wg_scan_inclusive(uint v, __local uint *sc)
{
    const uint lid = get_local_id(0);
    sc[lid] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint off = 1; off < WGS; off <<= 1) {
        const uint x = lid >= off ? sc[lid - off] : 0u;
        barrier(CLK_LOCAL_MEM_FENCE);
        sc[lid] += x;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    return sc[lid];
}

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_dsa_topk_wg
/* The k highest of scores[t][0 .. pos[t]] as dsa.cl's clnpu_dsa_topk: count[t] indices in
 * increasing order, ties at the k-th value to the lower indices. Grid: (T * WGS), local (WGS).
 * The select's state (prefix, mask, how many still wanted; then the output count and the equal
 * keys still to take) lives in local memory, written by one thread between barriers. */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_dsa_topk_wg(__global const float *scores, const uint lds, __global const int *pos, const uint k,
                       __global int *idx, const uint ldi, __global int *count)
{
    __local uint hist[256], sc[WGS], st[5]; /* st: prefix, mask, want, out count, equal left */
    const uint lid = get_local_id(0), t = get_group_id(0);
    const uint n = (uint)pos[t] + 1;
    __global const float *s = scores + (size_t)t * lds;
    __global int *out = idx + (size_t)t * ldi;
    if (n <= k) {
        for (uint j = lid; j < n; j += WGS) out[j] = (int)j;
        if (lid == 0) count[t] = (int)n;
        return;
    }
    if (lid == 0) st[0] = 0, st[1] = 0, st[2] = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (uint b = lid; b < 256; b += WGS) hist[b] = 0;
        barrier(CLK_LOCAL_MEM_FENCE);
        const uint prefix = st[0], mask = st[1], want = st[2]; /* rewritten after two more barriers */
        for (uint j = lid; j < n; j += WGS) {
            const uint key = dsa_key(s[j]);
            if ((key & mask) == prefix) atomic_inc(&hist[(key >> shift) & 255u]);
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        /* the bin holding the k-th key (dsa.cl walks down from 255 subtracting counts): thread lid
         * sums 256 / WGS bins from the top, a scan gives the counts above each stretch, and the
         * thread whose stretch the k-th key falls in walks it */
        uint mine = 0;
        for (uint i = 0; i < 256 / WGS; i++) mine += hist[255 - lid * (256 / WGS) - i];
        const uint incl = wg_scan_inclusive(mine, sc);
        uint above = incl - mine;
        if (above < want && incl >= want) {
            int b = 255 - (int)(lid * (256 / WGS));
            for (; b > 0 && above + hist[b] < want; b--) above += hist[b];
            st[0] = prefix | (uint)b << shift;
            st[1] = mask | 255u << shift;
            st[2] = want - above;
        }
        barrier(CLK_LOCAL_MEM_FENCE); /* hist is cleared by the next pass */
    }
    /* st[0] is the k-th highest key; the first st[2] elements equal to it are taken. Tiles of WGS
     * consecutive keys: one scan of (greater, equal) counts in 16-bit halves places each. */
    const uint prefix = st[0];
    if (lid == 0) st[3] = 0, st[4] = st[2];
    for (uint j0 = 0; j0 < n; j0 += WGS) {
        const uint j = j0 + lid;
        uint gt = 0, eq = 0;
        if (j < n) {
            const uint key = dsa_key(s[j]);
            gt = key > prefix;
            eq = key == prefix;
        }
        barrier(CLK_LOCAL_MEM_FENCE); /* st[3], st[4] of the previous tile are written */
        const uint base = st[3], rem = st[4]; /* equal keys still to take */
        const uint flags = gt | eq << 16, ex = wg_scan_inclusive(flags, sc) - flags, total = sc[WGS - 1];
        const uint gt_ex = ex & 0xffffu, eq_ex = ex >> 16;
        if (gt || (eq && eq_ex < rem)) out[base + gt_ex + min(eq_ex, rem)] = (int)j;
        if (lid == 0) { /* through min(): Oclgrind lacks the saturating subtraction a ?: becomes */
            const uint taken = min(total >> 16, rem);
            st[3] = base + (total & 0xffffu) + taken;
            st[4] = rem - taken;
        }
        barrier(CLK_LOCAL_MEM_FENCE); /* sc is rewritten by the next tile */
    }
    if (lid == 0) count[t] = (int)st[3];
}
#endif /* CLNPU_ONLY */

#define ZPT_ ((HG * R + WGS - 1) / WGS)
#define ZPT (ZPT_ > 1 ? ZPT_ : 2) /* latent outputs per thread */
#define SPT ((HG * BT + WGS - 1) / WGS) /* scores per thread */
#include "mla_wg_tile.h"

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_mla_sparse_wg
/* Absorbed MLA attention over selected latent rows, as dsa.cl's clnpu_mla_sparse: row r (sequence
 * seq[r]) and HG heads per group, the count[r] cache positions in idx[r] (or the chunk sp of them),
 * BT rows at a time through a local tile, scores by threads, the online softmax by one thread per
 * head, z = z * corr + p . c with ZPT latent elements per thread. Grid: (ceil(H / HG) * WGS, rows,
 * splits), local (WGS, 1, 1). lm: HG * ROW + BT * CS + HG * BT + 3 * HG floats + BT ints. */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_mla_sparse_wg(__global const float *qa, __global const float *qp, const uint qp_off, const uint qp_ld,
                         const uint qp_hs, __global const CACHE_T *cache, const uint page,
                         __global const int *block_table, const uint max_blocks, __global const int *seq,
                         __global const int *idx, const uint ldi, __global const int *count, __global float *z_out,
                         __global float *part_ml, const uint H, const uint splits, const uint chunk, const float scale,
                         __local float *lm)
{
    __local float *qs = lm, *cs = qs + HG * ROW, *ss = cs + BT * CS;
    __local float *mrow = ss + HG * BT, *lrow = mrow + HG, *crow = lrow + HG;
    __local uint *rows = (__local uint *)(crow + HG); /* cache row numbers of the tile */
    const uint lid = get_local_id(0), hg0 = get_group_id(0) * HG, r = get_group_id(1), sp = get_group_id(2);
    if (hg0 >= H) return;
    const uint nh = min((uint)HG, H - hg0);
    for (uint e = lid; e < HG * ROW; e += WGS) {
        const uint g = e / ROW, d = e % ROW, h = hg0 + min(g, nh - 1);
        qs[e] = (d < R ? qa[((size_t)r * H + h) * R + d] : qp[qp_off + (size_t)r * qp_ld + (size_t)h * qp_hs + d - R]) *
                scale;
    }
    if (lid < HG) {
        mrow[lid] = -INFINITY;
        lrow[lid] = 0.0f;
    }
    float z[ZPT];
    for (uint i = 0; i < ZPT; i++) z[i] = 0.0f;
    __global const int *bt = block_table + (size_t)seq[r] * max_blocks;
    __global const int *sel = idx + (size_t)r * ldi;
    const uint i_begin = sp * chunk, i_end = min((uint)count[r], i_begin + chunk);
    for (uint i0 = i_begin; i0 < i_end; i0 += BT) {
        const uint cnt = min((uint)BT, i_end - i0);
        barrier(CLK_LOCAL_MEM_FENCE); /* the previous tile is consumed */
        for (uint j = lid; j < cnt; j += WGS) {
            const uint tok = (uint)sel[i0 + j];
            rows[j] = (uint)bt[tok / page] * page + tok % page;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint e = lid; e < BT * ROW; e += WGS) {
            const uint j = e / ROW, d = e % ROW;
            cs[j * CS + d] = j < cnt ? CACHE_READ(cache + (size_t)rows[j] * CACHE_STRIDE, d) : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        clnpu_mla_wg_tile(qs, cs, ss, mrow, lrow, crow, z, lid, cnt);
    }
    clnpu_mla_wg_store(z, mrow, lrow, z_out, part_ml, (size_t)r * H + hg0, nh, splits, sp, lid);
}
#endif /* CLNPU_ONLY */

/* Sum of v over the work-group in red[WGS] (every thread gets it). */
inline float wg_sum(float v, __local float *red)
{
    const uint lid = get_local_id(0);
    red[lid] = v;
    for (uint hw = WGS / 2; hw > 0; hw >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < hw) red[lid] += red[lid + hw];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float s = red[0];
    barrier(CLK_LOCAL_MEM_FENCE); /* red is reused */
    return s;
}

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_layernorm_wg
/* LayerNorm with weight and bias over rows of n (the indexer's k_norm), in place: the mean, then
 * the variance about it (two passes, as torch), each a work-group sum. Grid: (T * WGS), local (WGS). */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_layernorm_wg(__global float *x, const uint off, const uint ld, __global const float *weight,
                        __global const float *bias, const uint n, const float eps)
{
    __local float red[WGS];
    const uint lid = get_local_id(0);
    __global float *row = x + off + (size_t)get_group_id(0) * ld;
    float a = 0.0f;
    for (uint i = lid; i < n; i += WGS) a += row[i];
    const float mean = wg_sum(a, red) / (float)n;
    float v = 0.0f;
    for (uint i = lid; i < n; i += WGS) v = fma(row[i] - mean, row[i] - mean, v);
    const float inv = rsqrt(wg_sum(v, red) / (float)n + eps);
    for (uint i = lid; i < n; i += WGS) row[i] = fma((row[i] - mean) * inv, weight[i], bias[i]);
}
#endif /* CLNPU_ONLY */
