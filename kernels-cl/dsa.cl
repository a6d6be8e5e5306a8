/* DeepSeek Sparse Attention (DeepSeek-V3.2, A.X K2), CPU family: the indexer's scores over a
 * paged key cache, the index_topk highest per query, and absorbed MLA attention over only those
 * latent rows. One work-item per (key, query) for the scores, per query for the top-k, per
 * (query, HG heads) for the attention; a work-group family can replace any of them behind the
 * same arguments.
 *
 * Indexer (transformers DeepseekV32Indexer): for query t and key j <= pos[t],
 *   score[t][j] = sum_h w[t][h] * scale * relu(q[t][h] . k_j),  scale = D^-0.5 * n_heads^-0.5,
 * q the rotated wq_b(q_resid) heads, k_j = RoPE(LayerNorm(wk(x_j))) from the key cache.
 * Tunables: CLNPU_DSA_D (indexer head dim), CLNPU_MLA_R / CLNPU_MLA_DR (latent and rope dims),
 * CLNPU_MLA_HG (heads per work-item), CLNPU_MLA_BT (selected rows per softmax step). */
#include "clnpu_cache.h"

#ifndef CLNPU_DSA_D
#define CLNPU_DSA_D 128
#endif
/* CLNPU_MLA_R and CLNPU_MLA_DR (defaults 512, 64): clnpu_cache.h */
#ifndef CLNPU_MLA_HG
#define CLNPU_MLA_HG 4
#endif
#define D CLNPU_DSA_D
#define R CLNPU_MLA_R
#define DR CLNPU_MLA_DR
#define HG CLNPU_MLA_HG
#define ROW (R + DR)

#if D % 4 || R % 4 || DR % 4
#error "indexer head, latent and rope dims must be multiples of 4"
#endif

#ifndef CLNPU_MLA_BT
#define CLNPU_MLA_BT 16
#endif
#define BT CLNPU_MLA_BT

inline float hsum4(float4 v)
{
    return v.x + v.y + v.z + v.w;
}

/* the latent rows' vector width: 16 where R and DR allow it (as kernels-cl/mla.cl) */
#if R % 16 == 0 && DR % 16 == 0
#define VW 16
#define VF float16
#define VL vload16
#define VS vstore16
inline float hsum(float16 v)
{
    float8 a = v.lo + v.hi;
    return hsum4(a.lo + a.hi);
}
#else
#define VW 4
#define VF float4
#define VL vload4
#define VS vstore4
inline float hsum(float4 v)
{
    return hsum4(v);
}
#endif
#include "mla_block.h"

#ifndef CLNPU_DSA_KB
#define CLNPU_DSA_KB 8
#endif
#define KB CLNPU_DSA_KB
#if D % 16 == 0
#define DW 16
#define DF float16
#define DL vload16
#else
#define DW 4
#define DF float4
#define DL vload4
#endif

inline float hsumd(DF v)
{
#if DW == 16
    float8 a = v.lo + v.hi;
    return hsum4(a.lo + a.hi);
#else
    return hsum4(v);
#endif
}

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_dsa_scores
/* Grid: (ceil(max_len / KB), T): a work-item scores KB consecutive keys, so each query head is
 * loaded once for all of them. Keys past a query's position get -inf (never selected). */
__kernel void clnpu_dsa_scores(__global const float *q, const uint q_off, const uint ldq,
                               __global const float *w, const uint w_off, const uint ldw,
                               __global const float *kcache, const uint page,
                               __global const int *block_table, const uint max_blocks,
                               __global const int *seq, __global const int *pos,
                               __global float *scores, const uint lds, const uint NH, const float scale)
{
    const uint j0 = get_global_id(0) * KB, t = get_global_id(1);
    if (j0 >= lds) return;
    const uint last = (uint)pos[t];
    __global float *out = scores + (size_t)t * lds;
    const uint nk = j0 > last ? 0 : min((uint)KB, last + 1 - j0);
    for (uint i = nk; i < KB && j0 + i < lds; i++) out[j0 + i] = -INFINITY;
    if (!nk) return;
    __global const float *k[KB];
    for (uint i = 0; i < KB; i++) {
        const uint j = j0 + min(i, nk - 1);
        k[i] = kcache + ((size_t)block_table[(size_t)seq[t] * max_blocks + j / page] * page + j % page) * D;
    }
    __global const float *qt = q + q_off + (size_t)t * ldq;
    __global const float *wt = w + w_off + (size_t)t * ldw;
    float s[KB];
    for (int i = 0; i < KB; i++) s[i] = 0.0f;
    for (uint h = 0; h < NH; h++) {
        DF acc[KB];
        for (int i = 0; i < KB; i++) acc[i] = (DF)(0.0f);
        for (int d = 0; d < D; d += DW) {
            const DF qv = DL(0, qt + h * D + d);
            for (int i = 0; i < KB; i++) acc[i] = fma(qv, DL(0, k[i] + d), acc[i]);
        }
        const float wh = wt[h];
        for (int i = 0; i < KB; i++) s[i] = fma(wh, fmax(hsumd(acc[i]), 0.0f), s[i]);
    }
    for (uint i = 0; i < nk; i++) out[j0 + i] = s[i] * scale;
}
#endif /* CLNPU_ONLY */

/* Order-preserving map of a float to an unsigned key (larger float, larger key). */
inline uint dsa_key(float f)
{
    const uint u = as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_dsa_topk
/* The k highest of scores[t][0 .. pos[t]] (all of them when there are no more than k), as
 * indices in increasing order; ties at the k-th value go to the lower indices, so the choice is
 * deterministic. A radix select over the keys' bytes (four passes of a 256-bin histogram)
 * finds the k-th value, one more pass writes the indices. Grid: (T). */
__kernel void clnpu_dsa_topk(__global const float *scores, const uint lds, __global const int *pos, const uint k,
                             __global int *idx, const uint ldi, __global int *count)
{
    const uint t = get_global_id(0);
    const uint n = (uint)pos[t] + 1;
    __global const float *s = scores + (size_t)t * lds;
    __global int *out = idx + (size_t)t * ldi;
    if (n <= k) {
        for (uint j = 0; j < n; j++) out[j] = (int)j;
        count[t] = (int)n;
        return;
    }
    uint prefix = 0, mask = 0, want = k; /* want: how many of those matching prefix are still needed */
    uint hist[256];
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = 0; b < 256; b++) hist[b] = 0;
        for (uint j = 0; j < n; j++) {
            const uint key = dsa_key(s[j]);
            if ((key & mask) == prefix) hist[(key >> shift) & 255u]++;
        }
        int b = 255;
        for (; b > 0 && hist[b] < want; b--) want -= hist[b];
        prefix |= (uint)b << shift;
        mask |= 255u << shift;
    }
    /* prefix is now the k-th highest key; `want` of the elements equal to it are taken */
    uint o = 0, eq = 0;
    for (uint j = 0; j < n; j++) {
        const uint key = dsa_key(s[j]);
        if (key > prefix || (key == prefix && eq++ < want)) out[o++] = (int)j;
    }
    count[t] = (int)o;
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_mla_sparse
/* Absorbed MLA attention over selected latent rows: row r (sequence seq[r]) and head h,
 * score_j = scale * (q_abs[r,h] . c_j + q_pe[r,h] . kpe_j) for the count[r] cached positions j in
 * idx[r], softmax over them, z[r,h] = sum_j p_j c_j. q_pe of (r, h) at qp + qp_off + r * qp_ld +
 * h * qp_hs. The selection may be cut into `splits` chunks of `chunk` rows (dim 2), each writing a
 * partial z with its max and sum for clnpu_mla_combine, so one query keeps many compute units busy.
 * Grid: (ceil(H / HG), rows, splits). */
__kernel void clnpu_mla_sparse(__global const float *qa, __global const float *qp, const uint qp_off,
                               const uint qp_ld, const uint qp_hs, __global const CACHE_T *cache, const uint page,
                               __global const int *block_table, const uint max_blocks, __global const int *seq,
                               __global const int *idx, const uint ldi, __global const int *count,
                               __global float *z_out, __global float *part_ml, const uint H, const uint splits,
                               const uint chunk, const float scale)
{
    const uint hg0 = get_global_id(0) * HG, r = get_global_id(1), sp = get_global_id(2);
    if (hg0 >= H) return;
    const uint nh = min((uint)HG, H - hg0);
    float q[HG][R], qr[HG][DR], z[HG][R], m[HG], lsum[HG];
    for (uint g = 0; g < HG; g++) {
        const uint h = hg0 + min(g, nh - 1);
        __global const float *a = qa + ((size_t)r * H + h) * R;
        __global const float *p = qp + qp_off + (size_t)r * qp_ld + (size_t)h * qp_hs;
        for (int d = 0; d < R; d++) {
            q[g][d] = a[d] * scale;
            z[g][d] = 0.0f;
        }
        for (int d = 0; d < DR; d++) qr[g][d] = p[d] * scale;
        m[g] = -INFINITY;
        lsum[g] = 0.0f;
    }
    __global const int *bt = block_table + (size_t)seq[r] * max_blocks;
    __global const int *sel = idx + (size_t)r * ldi;
    /* this work-item's chunk of the selection (one chunk: all of it) */
    const uint i_begin = sp * chunk, cnt = min((uint)count[r], i_begin + chunk);
    /* BT selected rows at a time: scores for all HG heads, one rescale of z per block */
    for (uint i0 = i_begin; i0 < cnt; i0 += BT) {
        const uint nb = min((uint)BT, cnt - i0);
        __global const CACHE_T *rows[BT];
        for (uint j = 0; j < nb; j++) {
            const uint t = (uint)sel[i0 + j];
            rows[j] = cache + ((size_t)bt[t / page] * page + t % page) * CACHE_ROW;
        }
        clnpu_mla_block(rows, nb, q, qr, z, m, lsum);
    }
    clnpu_mla_store(z, m, lsum, z_out, part_ml, (size_t)r * H + hg0, nh, splits, sp);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_dsa_key_append
/* Append indexer keys to their paged cache: row t of src (stride lds) to sequence seq[t] at
 * pos[t]. Grid: (D, T). */
__kernel void clnpu_dsa_key_append(__global float *cache, const uint page, __global const int *block_table,
                                   const uint max_blocks, __global const float *src, const uint src_off,
                                   const uint lds, __global const int *seq, __global const int *pos)
{
    const uint d = get_global_id(0), t = get_global_id(1);
    if (d >= D) return;
    const uint p = (uint)pos[t];
    const int pg = block_table[(size_t)seq[t] * max_blocks + p / page];
    cache[((size_t)pg * page + p % page) * D + d] = src[src_off + (size_t)t * lds + d];
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_layernorm
/* LayerNorm with weight and bias over rows of n (the indexer's k_norm), in place, statistics in
 * two passes (mean, then the variance about it) as torch does. Grid: (T). */
__kernel void clnpu_layernorm(__global float *x, const uint off, const uint ld, __global const float *weight,
                              __global const float *bias, const uint n, const float eps)
{
    __global float *row = x + off + (size_t)get_global_id(0) * ld;
    float mean = 0.0f;
    for (uint i = 0; i < n; i++) mean += row[i];
    mean /= (float)n;
    float var = 0.0f;
    for (uint i = 0; i < n; i++) var = fma(row[i] - mean, row[i] - mean, var);
    const float inv = rsqrt(var / (float)n + eps);
    for (uint i = 0; i < n; i++) row[i] = fma((row[i] - mean) * inv, weight[i], bias[i]);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_mul_sigmoid
/* y[t][h][i] *= sigmoid(g[t][h][i]) for rows of `heads` heads of n (A.X K2's attention output gate
 * and gated norms): y at y_off + t * ldy + h * y_hs + i, g likewise. Grid: (n, heads, T). */
__kernel void clnpu_mul_sigmoid(__global float *y, const uint y_off, const uint ldy, const uint y_hs,
                                __global const float *g, const uint g_off, const uint ldg, const uint g_hs)
{
    const uint i = get_global_id(0), h = get_global_id(1), t = get_global_id(2);
    const float gv = g[g_off + (size_t)t * ldg + (size_t)h * g_hs + i];
    y[y_off + (size_t)t * ldy + (size_t)h * y_hs + i] *= 1.0f / (1.0f + exp(-gv));
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_silu
/* x = silu(x) = x * sigmoid(x) over rows of n. Grid: (n, T). */
__kernel void clnpu_silu(__global float *x, const uint off, const uint ld, const uint n)
{
    const uint i = get_global_id(0), t = get_global_id(1);
    if (i >= n) return;
    const size_t k = off + (size_t)t * ld + i;
    x[k] = x[k] / (1.0f + exp(-x[k]));
}
#endif /* CLNPU_ONLY */
