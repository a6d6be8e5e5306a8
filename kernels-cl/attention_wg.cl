/* Work-group family of causal flash attention (prefill, chunked prefill): a work-group of WGS
 * threads per tile of BQ queries of one head; query t sits at position P + t and sees keys
 * 0 .. P + t. The Q tile stays in local memory; K and V stream through local tiles of BK rows,
 * loaded with coalesced row reads; per tile the threads compute the BQ x BK scores (one dot
 * product each), one thread per query row runs the online-softmax update (running max, sum,
 * rescale factor), and the threads accumulate O = O * corr + P . V with each thread owning
 * ceil(BQ * DV / WGS) output elements (consecutive threads: consecutive columns). No thread keeps
 * more than that in private memory.
 * Local floats: BQ * DQK + BK * (DQK + 1) + BK * DV + BQ * BK + 3 * BQ (K rows padded by one
 * float so a score's column walk does not hit one bank); the host sizes BK from the budget.
 * PoCL 3.1 quirk: a one-element private array live across barriers corrupted the heap at 256
 * work-items (mla_wg.cl at the tiny model's dims; Oclgrind found nothing wrong), so the per-thread
 * arrays here and in mla_wg.cl / gemm_wg.cl have at least two elements. */
#include "clnpu_common.h"

#ifndef CLNPU_ATTN_DQK
#define CLNPU_ATTN_DQK 192
#endif
#ifndef CLNPU_ATTN_DV
#define CLNPU_ATTN_DV 128
#endif
#ifndef CLNPU_ATTN_BQ
#define CLNPU_ATTN_BQ 16
#endif
#ifndef CLNPU_ATTN_BK
#define CLNPU_ATTN_BK 16
#endif
#ifndef WGS
#define WGS 64
#endif
#define DQK CLNPU_ATTN_DQK
#define DV CLNPU_ATTN_DV
#define BQ CLNPU_ATTN_BQ
#define BK CLNPU_ATTN_BK
#define KS (DQK + 1)
#define OPT_ ((BQ * DV + WGS - 1) / WGS)
#define OPT (OPT_ > 1 ? OPT_ : 2)          /* output elements per thread (at least 2, see below) */
#define SPT ((BQ * BK + WGS - 1) / WGS)   /* scores per thread */
#if BQ > WGS
#error "attention_wg: BQ must not exceed the work-group"
#endif

/* Grid: (ceil(T / BQ) * WGS, heads), local (WGS, 1). lm: the local floats above. */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_flash_attn_wg(__global const float *Q, const uint qoff, const uint ldq, const uint hsq,
                         __global const float *K, const uint koff, const uint ldk, const uint hsk,
                         __global const float *V, const uint voff, const uint ldv, const uint hsv,
                         __global float *O, const uint ooff, const uint ldo, const uint hso, const uint T,
                         const uint P, const float scale, __local float *lm)
{
    __local float *qs = lm, *ks = qs + BQ * DQK, *vs = ks + BK * KS, *ss = vs + BK * DV;
    __local float *mrow = ss + BQ * BK, *lrow = mrow + BQ, *crow = lrow + BQ;
    const uint lid = get_local_id(0), h = get_group_id(1), t0 = get_group_id(0) * BQ;
    if (t0 >= T) return;
    const uint nq = min((uint)BQ, T - t0), kend = P + t0 + nq; /* keys the tile's last query sees */
    for (uint e = lid; e < BQ * DQK; e += WGS) {
        const uint i = e / DQK, d = e % DQK;
        qs[e] = i < nq ? Q[qoff + (size_t)(t0 + i) * ldq + (size_t)h * hsq + d] * scale : 0.0f;
    }
    if (lid < BQ) {
        mrow[lid] = -INFINITY;
        lrow[lid] = 0.0f;
    }
    float o[OPT];
    for (uint i = 0; i < OPT; i++) o[i] = 0.0f;

    for (uint j0 = 0; j0 < kend; j0 += BK) {
        const uint jn = min((uint)BK, kend - j0);
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint e = lid; e < BK * DQK; e += WGS) {
            const uint j = e / DQK, d = e % DQK;
            ks[j * KS + d] = j < jn ? K[koff + (size_t)(j0 + j) * ldk + (size_t)h * hsk + d] : 0.0f;
        }
        for (uint e = lid; e < BK * DV; e += WGS) {
            const uint j = e / DV, d = e % DV;
            vs[e] = j < jn ? V[voff + (size_t)(j0 + j) * ldv + (size_t)h * hsv + d] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint r = 0; r < SPT; r++) {
            const uint e = lid + r * WGS;
            if (e >= BQ * BK) break;
            const uint i = e / BK, j = e % BK;
            /* causal: query i sees keys < P + t0 + i + 1 */
            float s = -INFINITY;
            if (i < nq && j < jn && j0 + j <= P + t0 + i) {
                s = 0.0f;
                for (uint d = 0; d < DQK; d++) s = fma(qs[i * DQK + d], ks[j * KS + d], s);
            }
            ss[e] = s;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < BQ) { /* online softmax, one thread per query row */
            float bm = -INFINITY;
            for (uint j = 0; j < BK; j++) bm = fmax(bm, ss[lid * BK + j]);
            const float mo = mrow[lid], mn = fmax(mo, bm);
            const float corr = mn == -INFINITY ? 1.0f : exp(mo - mn); /* exp(-inf) = 0 on the first tile */
            float sum = lrow[lid] * corr;
            for (uint j = 0; j < BK; j++) {
                const float s = ss[lid * BK + j];
                const float p = s == -INFINITY ? 0.0f : exp(s - mn);
                ss[lid * BK + j] = p;
                sum += p;
            }
            mrow[lid] = mn;
            lrow[lid] = sum;
            crow[lid] = corr;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint r = 0; r < OPT; r++) {
            const uint e = lid + r * WGS;
            if (e >= BQ * DV) break;
            const uint i = e / DV, d = e % DV;
            float acc = o[r] * crow[i];
            for (uint j = 0; j < jn; j++) acc = fma(ss[i * BK + j], vs[j * DV + d], acc);
            o[r] = acc;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint r = 0; r < OPT; r++) {
        const uint e = lid + r * WGS;
        if (e >= BQ * DV) break;
        const uint i = e / DV, d = e % DV;
        if (i < nq) O[ooff + (size_t)(t0 + i) * ldo + (size_t)h * hso + d] = o[r] / lrow[i];
    }
}
