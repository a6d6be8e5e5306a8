/* One block of the cpu family's absorbed attention, shared by mla.cl (a context range of the
 * cache) and dsa.cl (the indexer's selected rows): the kernels differ only in which cache rows
 * they gather into rows[0..cnt). For HG heads: the scores against each row (read once for all
 * heads, HG independent chains), the online-softmax update of m / lsum, and
 * z = z * corr + sum_j p_j c_j (each cache chunk loaded once for all heads); then the
 * chunk's output (clnpu_mla_store).
 * Needs R, DR, HG, BT, VW, VF, VL, VS, hsum (VF -> float) and clnpu_cache.h's loads from the
 * including kernel. */
#ifndef CLNPU_MLA_BLOCK_H
#define CLNPU_MLA_BLOCK_H

inline void clnpu_mla_block(__global const CACHE_T *const *rows, const uint cnt, float q[HG][R],
                            float qr[HG][DR], float z[HG][R], float *m, float *lsum)
{
    float s[HG][BT];
    for (uint j = 0; j < cnt; j++) {
        VF acc[HG];
        for (int g = 0; g < HG; g++) acc[g] = (VF)(0.0f);
        for (int d = 0; d < R; d += VW) {
            const VF rv = CACHE_VLOAD_C(rows[j], d);
            for (int g = 0; g < HG; g++) acc[g] = fma(VL(0, q[g] + d), rv, acc[g]);
        }
        for (int d = 0; d < DR; d += VW) {
            const VF rv = CACHE_VLOAD_PE(rows[j], d);
            for (int g = 0; g < HG; g++) acc[g] = fma(VL(0, qr[g] + d), rv, acc[g]);
        }
        for (int g = 0; g < HG; g++) s[g][j] = hsum(acc[g]);
    }
    float corr[HG];
    for (int g = 0; g < HG; g++) {
        float bm = -INFINITY;
        for (uint j = 0; j < cnt; j++) bm = fmax(bm, s[g][j]);
        const float mn = fmax(m[g], bm);
        corr[g] = exp(m[g] - mn); /* 0 on the first block */
        m[g] = mn;
        lsum[g] *= corr[g];
        for (uint j = 0; j < cnt; j++) {
            s[g][j] = exp(s[g][j] - mn);
            lsum[g] += s[g][j];
        }
    }
    for (int d = 0; d < R; d += VW) {
        VF zd[HG];
        for (int g = 0; g < HG; g++) zd[g] = VL(0, z[g] + d) * corr[g];
        for (uint j = 0; j < cnt; j++) {
            const VF rv = CACHE_VLOAD_C(rows[j], d);
            for (int g = 0; g < HG; g++) zd[g] = fma((VF)(s[g][j]), rv, zd[g]);
        }
        for (int g = 0; g < HG; g++) VS(zd[g], 0, z[g] + d);
    }
}
/* Heads [head0, head0 + nh) of chunk sp: with one chunk the normalised output (no merge pass),
 * else the partials clnpu_mla_combine (mla.cl) merges: z, and the chunk's max and sum. part_z:
 * [..][splits][R], part_ml: [..][splits][2], indexed by (head0 + g) * splits + sp. */
inline void clnpu_mla_store(float z[HG][R], const float *m, const float *lsum, __global float *part_z,
                            __global float *part_ml, const size_t head0, const uint nh, const uint splits,
                            const uint sp)
{
    for (uint g = 0; g < nh; g++) {
        const size_t k = (head0 + g) * splits + sp;
        if (splits == 1) {
            const float inv = 1.0f / lsum[g];
            for (int d = 0; d < R; d++) part_z[k * R + d] = z[g][d] * inv;
            continue;
        }
        for (int d = 0; d < R; d++) part_z[k * R + d] = z[g][d];
        part_ml[2 * k] = m[g]; /* -inf for an empty chunk */
        part_ml[2 * k + 1] = lsum[g];
    }
}
#endif
