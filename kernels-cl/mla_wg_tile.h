/* The absorbed-attention work-group step that mla_wg.cl (a context range of the cache) and
 * dsa_wg.cl (the indexer's selected rows) share once a tile of cache rows is in local memory:
 * the HG x BT scores, the online-softmax update (one thread per head) and z = z * corr + p . c,
 * then the chunk's output or partial (z, max, sum). The kernels differ only in which rows they
 * load, so only the loading stays in each. All threads of the group call both functions
 * (they hold barriers). Needs R, ROW, CS, HG, BT, WGS, ZPT and SPT from the including kernel;
 * local layout: qs [HG][ROW], cs [BT][CS], ss [HG][BT], mrow / lrow / crow [HG]. */
#ifndef CLNPU_MLA_WG_TILE_H
#define CLNPU_MLA_WG_TILE_H

/* cnt (<= BT) rows of cs are valid; the rest of the tile scores -inf and weighs 0. */
inline void clnpu_mla_wg_tile(__local const float *qs, __local const float *cs, __local float *ss,
                              __local float *mrow, __local float *lrow, __local float *crow, float *z,
                              const uint lid, const uint cnt)
{
    for (uint i = 0; i < SPT; i++) {
        const uint e = lid + i * WGS;
        if (e >= HG * BT) break;
        const uint g = e / BT, j = e % BT;
        float s = -INFINITY;
        if (j < cnt) {
            s = 0.0f;
            for (uint d = 0; d < ROW; d++) s = fma(qs[g * ROW + d], cs[j * CS + d], s);
        }
        ss[e] = s;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid < HG) {
        float bm = -INFINITY;
        for (uint j = 0; j < cnt; j++) bm = fmax(bm, ss[lid * BT + j]);
        const float mo = mrow[lid], mn = fmax(mo, bm);
        const float corr = exp(mo - mn); /* 0 on the first tile (mo = -inf, mn finite) */
        float sum = lrow[lid] * corr;
        for (uint j = 0; j < BT; j++) {
            const float p = j < cnt ? exp(ss[lid * BT + j] - mn) : 0.0f;
            ss[lid * BT + j] = p;
            sum += p;
        }
        mrow[lid] = mn, lrow[lid] = sum, crow[lid] = corr;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint i = 0; i < ZPT; i++) {
        const uint e = lid + i * WGS;
        if (e >= HG * R) break;
        const uint g = e / R, d = e % R;
        float acc = z[i] * crow[g];
        for (uint j = 0; j < cnt; j++) acc = fma(ss[g * BT + j], cs[j * CS + d], acc);
        z[i] = acc;
    }
}

/* Heads [head0, head0 + nh) of chunk sp: with one chunk the normalised output (no merge pass),
 * else the partials clnpu_mla_combine (mla.cl) merges. part_z: [..][splits][R], part_ml:
 * [..][splits][2] indexed by (head0 + g) * splits + sp. */
inline void clnpu_mla_wg_store(const float *z, __local const float *mrow, __local const float *lrow,
                               __global float *part_z, __global float *part_ml, const size_t head0, const uint nh,
                               const uint splits, const uint sp, const uint lid)
{
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint i = 0; i < ZPT; i++) {
        const uint e = lid + i * WGS;
        if (e >= HG * R) break;
        const uint g = e / R, d = e % R;
        if (g >= nh) continue;
        const size_t o = (head0 + g) * splits + sp;
        part_z[o * R + d] = splits == 1 ? z[i] / lrow[g] : z[i];
        if (splits > 1 && d == 0) {
            part_ml[2 * o] = mrow[g]; /* -inf for an empty chunk */
            part_ml[2 * o + 1] = lrow[g];
        }
    }
}
#endif
