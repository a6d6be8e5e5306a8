/* Causal flash attention for prefill (chunked: a cached prefix of P keys precedes the T new
 * tokens; query t sits at position P + t and sees keys 0 .. P + t). Heads are independent;
 * q/k head dim DQK may differ from the v head dim DV (A.X K1: 192 and 128).
 *
 * A work-group takes WG * BQ consecutive queries of one head. Keys and values stream through
 * local-memory tiles of BK rows (BK sized by the host from the profile's local-memory budget);
 * each work-item keeps its BQ query rows and output accumulators in private memory and runs
 * the online softmax in fp32 one tile at a time (max and rescale once per tile). Fully masked
 * tiles past the group's last query are never loaded.
 * Tunables: CLNPU_ATTN_BQ, CLNPU_ATTN_BK, CLNPU_ATTN_WG; DQK and DV are fixed per program. */
#include "clnpu_common.h"

#ifndef CLNPU_ATTN_DQK
#define CLNPU_ATTN_DQK 192
#endif
#ifndef CLNPU_ATTN_DV
#define CLNPU_ATTN_DV 128
#endif
#ifndef CLNPU_ATTN_BQ
#define CLNPU_ATTN_BQ 4
#endif
#ifndef CLNPU_ATTN_BK
#define CLNPU_ATTN_BK 32
#endif
#ifndef CLNPU_ATTN_WG
#define CLNPU_ATTN_WG 1
#endif
#define DQK CLNPU_ATTN_DQK
#define DV CLNPU_ATTN_DV
#define BQ CLNPU_ATTN_BQ
#define BK CLNPU_ATTN_BK

/* Vectors of VW floats along the head dims: 16 when both dims allow it (AVX-512 / wide SIMD),
 * else 4 (every supported head dim is a multiple of 4). */
#if DQK % 4 || DV % 4
#error "head dims must be multiples of 4"
#endif
#if DQK % 16 == 0 && DV % 16 == 0
#define VW 16
#define VF float16
#define VL vload16
#define VS vstore16
#define HSUM(v) (hsum8((v).lo) + hsum8((v).hi))
#else
#define VW 4
#define VF float4
#define VL vload4
#define VS vstore4
#define HSUM(v) ((v).x + (v).y + (v).z + (v).w)
#endif

inline float hsum8(float8 v)
{
    float4 a = v.lo + v.hi;
    return a.x + a.y + a.z + a.w;
}

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_flash_attn
__kernel void clnpu_flash_attn(__global const float *Q, const uint qoff, const uint ldq,
                               const uint hsq, __global const float *K, const uint koff,
                               const uint ldk, const uint hsk, __global const float *V,
                               const uint voff, const uint ldv, const uint hsv, __global float *O,
                               const uint ooff, const uint ldo, const uint hso, const uint T,
                               const uint P, const float scale)
{
    __local float kt[BK * DQK];
    __local float vt[BK * DV];
    const uint h = get_group_id(1), l = get_local_id(0);
    const uint gq0 = get_group_id(0) * CLNPU_ATTN_WG * BQ; /* first query of the group */
    const uint t0 = gq0 + l * BQ;
    const uint glast = min(T, gq0 + CLNPU_ATTN_WG * BQ) - 1;
    const uint kend = P + glast + 1; /* keys any query of the group may see */

    float q[BQ][DQK], o[BQ][DV], m[BQ], lsum[BQ];
    for (int i = 0; i < BQ; i++) {
        const uint t = min(t0 + i, T - 1);
        __global const float *qr = Q + qoff + (size_t)t * ldq + (size_t)h * hsq;
        for (int d = 0; d < DQK; d++) q[i][d] = qr[d] * scale;
        for (int d = 0; d < DV; d++) o[i][d] = 0.0f;
        m[i] = -INFINITY;
        lsum[i] = 0.0f;
    }

    for (uint j0 = 0; j0 < kend; j0 += BK) {
        const uint jn = min((uint)BK, kend - j0);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint r = l; r < jn; r += CLNPU_ATTN_WG) {
            __global const float *kr = K + koff + (size_t)(j0 + r) * ldk + (size_t)h * hsk;
            __global const float *vr = V + voff + (size_t)(j0 + r) * ldv + (size_t)h * hsv;
            for (int d = 0; d < DQK; d++) kt[r * DQK + d] = kr[d];
            for (int d = 0; d < DV; d++) vt[r * DV + d] = vr[d];
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        /* Scores for all BQ queries against each key: BQ independent accumulator chains. */
        float s[BQ][BK];
        uint cnt[BQ];
        for (int i = 0; i < BQ; i++) {
            const uint lim = P + min(t0 + i, T - 1) + 1; /* causal: keys < lim */
            cnt[i] = j0 >= lim ? 0 : min(jn, lim - j0);
        }
        const uint cmax = cnt[BQ - 1]; /* causal: later queries see the most keys */
        if (cmax == 0) continue;
        /* Scores: each key row loaded once for all BQ queries, BQ independent chains. */
        for (uint j = 0; j < cmax; j++) {
            VF acc[BQ];
            for (int i = 0; i < BQ; i++) acc[i] = (VF)(0.0f);
            __local const float *kr = kt + j * DQK;
            for (int d = 0; d < DQK; d += VW) {
                const VF kv = VL(0, kr + d);
                for (int i = 0; i < BQ; i++) acc[i] = fma(VL(0, q[i] + d), kv, acc[i]);
            }
            for (int i = 0; i < BQ; i++) s[i][j] = j < cnt[i] ? HSUM(acc[i]) : -INFINITY;
        }
        float corr[BQ];
        for (int i = 0; i < BQ; i++) {
            float bm = -INFINITY;
            for (uint j = 0; j < cnt[i]; j++) bm = fmax(bm, s[i][j]);
            const float mn = fmax(m[i], bm);
            corr[i] = mn == -INFINITY ? 1.0f : exp(m[i] - mn); /* 0 on the first tile */
            m[i] = mn;
            lsum[i] *= corr[i];
            for (uint j = 0; j < cmax; j++) {
                s[i][j] = j < cnt[i] ? exp(s[i][j] - mn) : 0.0f;
                lsum[i] += s[i][j];
            }
        }
        /* o = o * corr + P . V, each value row loaded once for all BQ queries. */
        for (int d = 0; d < DV; d += VW) {
            VF od[BQ];
            for (int i = 0; i < BQ; i++) od[i] = VL(0, o[i] + d) * corr[i];
            for (uint j = 0; j < cmax; j++) {
                const VF vv = VL(0, vt + j * DV + d);
                for (int i = 0; i < BQ; i++) od[i] = fma((VF)(s[i][j]), vv, od[i]);
            }
            for (int i = 0; i < BQ; i++) VS(od[i], 0, o[i] + d);
        }
    }
    for (int i = 0; i < BQ; i++) {
        const uint t = t0 + i;
        if (t >= T) break;
        const float inv = 1.0f / lsum[i];
        __global float *orow = O + ooff + (size_t)t * ldo + (size_t)h * hso;
        for (int d = 0; d < DV; d++) orow[d] = o[i][d] * inv;
    }
}
#endif /* CLNPU_ONLY */

/* The same attention for devices whose local memory is ordinary cached memory (CPUs): no local
 * tiles and no barriers, and the queries run along the vector lanes. A work-item takes QG
 * groups of QV consecutive queries of one head; per block of KB keys the scores S^T[key][query]
 * sit in QG * KB vector registers, built like a GEMM micro-kernel (QG query-column loads and KB
 * broadcasts feed QG * KB FMAs per head-dim element). The online softmax is then element-wise
 * across those vectors (max, exp and sum over QV queries at once, no horizontal reductions),
 * and P.V accumulates into O^T[dv][query] with KB broadcast FMAs per load/store. Each key block
 * is first copied to a private tile so the inner loops address it with constant offsets.
 * Measured on PoCL: docs/performance.md.
 * Tunables: CLNPU_ATTN_QV (8 or 16), CLNPU_ATTN_QG (1 or 2), CLNPU_ATTN_KB (keys per block). */
#ifndef CLNPU_ATTN_QV
#define CLNPU_ATTN_QV 16
#endif
#ifndef CLNPU_ATTN_QG
#define CLNPU_ATTN_QG 1
#endif
#ifndef CLNPU_ATTN_KB
#define CLNPU_ATTN_KB 8
#endif
#define QV CLNPU_ATTN_QV
#define QG CLNPU_ATTN_QG
#define KB CLNPU_ATTN_KB
#define QN (QV * QG) /* queries per work-item */
#if QV == 16
#define QF float16
#define QI int16
#define QL vload16
#define QS vstore16
#elif QV == 8
#define QF float8
#define QI int8
#define QL vload8
#define QS vstore8
#else
#error "CLNPU_ATTN_QV must be 8 or 16"
#endif

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_flash_attn_regs
__kernel void clnpu_flash_attn_regs(__global const float *Q, const uint qoff, const uint ldq,
                                    const uint hsq, __global const float *K, const uint koff,
                                    const uint ldk, const uint hsk, __global const float *V,
                                    const uint voff, const uint ldv, const uint hsv, __global float *O,
                                    const uint ooff, const uint ldo, const uint hso, const uint T,
                                    const uint P, const float scale)
{
    const uint h = get_global_id(1), t0 = get_global_id(0) * QN;
    if (t0 >= T) return;
    /* qt[d][i] and ot[dv][i] hold query i of the work-item in lane i % QV of vector i / QV */
    float qt[DQK * QN], ot[DV * QN], kt[KB * DQK], vt[KB * DV], lane[QN];
    for (int i = 0; i < QN; i++) {
        /* rows past T repeat the last query; they are computed but never stored */
        __global const float *qr = Q + qoff + (size_t)min(t0 + i, T - 1) * ldq + (size_t)h * hsq;
        for (int d = 0; d < DQK; d++) qt[d * QN + i] = qr[d] * scale;
        lane[i] = (float)(P + t0 + i); /* the query's position: it sees keys <= lane */
    }
    for (int d = 0; d < DV * QN; d++) ot[d] = 0.0f;
    QF qpos[QG], m[QG], lsum[QG];
#pragma unroll
    for (int g = 0; g < QG; g++) {
        qpos[g] = QL(0, lane + g * QV);
        m[g] = (QF)(-INFINITY);
        lsum[g] = (QF)(0.0f);
    }
    const uint kend = P + min(T, t0 + QN); /* keys any of the queries may see */
    for (uint j0 = 0; j0 < kend; j0 += KB) {
        for (int jj = 0; jj < KB; jj++) { /* rows past kend repeat the last key, masked below */
            const size_t j = min(j0 + jj, kend - 1);
            __global const float *kr = K + koff + j * ldk + (size_t)h * hsk;
            __global const float *vr = V + voff + j * ldv + (size_t)h * hsv;
#if DQK % 16 == 0 && DV % 16 == 0
            for (int d = 0; d < DQK; d += 16) vstore16(vload16(0, kr + d), 0, kt + jj * DQK + d);
            for (int d = 0; d < DV; d += 16) vstore16(vload16(0, vr + d), 0, vt + jj * DV + d);
#else
            for (int d = 0; d < DQK; d += 4) vstore4(vload4(0, kr + d), 0, kt + jj * DQK + d);
            for (int d = 0; d < DV; d += 4) vstore4(vload4(0, vr + d), 0, vt + jj * DV + d);
#endif
        }
        QF s[QG * KB];
#pragma unroll
        for (int r = 0; r < QG * KB; r++) s[r] = (QF)(0.0f);
        for (int d = 0; d < DQK; d++) {
#pragma unroll
            for (int g = 0; g < QG; g++) {
                const QF qv = QL(0, qt + d * QN + g * QV);
#pragma unroll
                for (int jj = 0; jj < KB; jj++) s[g * KB + jj] = fma((QF)(kt[jj * DQK + d]), qv, s[g * KB + jj]);
            }
        }
        /* causal mask and the online softmax, for all queries at once; the first block always
         * holds key 0, which every query sees, so m is finite after it */
        QF corr[QG];
#pragma unroll
        for (int g = 0; g < QG; g++) {
            QF bm = m[g];
#pragma unroll
            for (int jj = 0; jj < KB; jj++) {
                const QI hide = isgreater((QF)((float)(j0 + jj)), qpos[g]) | (QI)(j0 + jj >= kend ? -1 : 0);
                s[g * KB + jj] = select(s[g * KB + jj], (QF)(-INFINITY), hide);
                bm = fmax(bm, s[g * KB + jj]);
            }
            corr[g] = exp(m[g] - bm);
            m[g] = bm;
            lsum[g] *= corr[g];
#pragma unroll
            for (int jj = 0; jj < KB; jj++) {
                s[g * KB + jj] = exp(s[g * KB + jj] - bm);
                lsum[g] += s[g * KB + jj];
            }
        }
        for (int d = 0; d < DV; d++) {
#pragma unroll
            for (int g = 0; g < QG; g++) {
                QF acc = QL(0, ot + d * QN + g * QV) * corr[g];
#pragma unroll
                for (int jj = 0; jj < KB; jj++) acc = fma(s[g * KB + jj], (QF)(vt[jj * DV + d]), acc);
                QS(acc, 0, ot + d * QN + g * QV);
            }
        }
    }
#pragma unroll
    for (int g = 0; g < QG; g++) QS((QF)(1.0f) / lsum[g], 0, lane + g * QV);
    for (int i = 0; i < QN && t0 + i < T; i++) {
        __global float *orow = O + ooff + (size_t)(t0 + i) * ldo + (size_t)h * hso;
        for (int d = 0; d < DV; d++) orow[d] = ot[d * QN + i] * lane[i];
    }
}
#endif /* CLNPU_ONLY */
