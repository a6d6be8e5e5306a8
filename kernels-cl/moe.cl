/* MoE routing and dispatch (DeepSeek-V3 noaux_tc, as A.X K1 uses it; section 2.6 of the
 * architecture notes):
 *   s = sigmoid(router logits); sb = s + e_score_correction_bias (selection only);
 *   group score = sum of the top-2 sb in each group; keep the topk_group best groups (others
 *   masked to -inf); take the top_k experts by sb; weights = s of those (unbiased),
 *   normalised when norm_topk_prob, times routed_scaling_factor.
 * Ties: the lower index wins everywhere (groups and experts), so routing is deterministic.
 * Then: a dispatch plan (tokens grouped by expert, in token order), a gather of the rows, and
 * after the grouped expert GEMMs, the weighted combine with fp32 accumulation. */
#include "clnpu_common.h"
#include "clnpu_lanes.h"

#ifndef CLNPU_MOE_MAX_EXPERTS
#define CLNPU_MOE_MAX_EXPERTS 256
#endif
#ifndef CLNPU_MOE_MAX_TOPK
#define CLNPU_MOE_MAX_TOPK 16
#endif

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_moe_route
/* One work-item per token. ids/weights: [T][top_k], ids ascending. */
__kernel void clnpu_moe_route(__global const float *logits, const uint ld,
                              __global const float *bias, const uint E, const uint n_group,
                              const uint topk_group, const uint top_k, const uint norm_topk,
                              const float scaling, __global int *ids, __global float *weights,
                              const uint T)
{
    const uint t = get_global_id(0);
    if (t >= T) return;
    float s[CLNPU_MOE_MAX_EXPERTS], sb[CLNPU_MOE_MAX_EXPERTS];
    for (uint e = 0; e < E; e++) {
        s[e] = 1.0f / (1.0f + exp(-logits[(size_t)t * ld + e]));
        sb[e] = s[e] + (bias ? bias[e] : 0.0f);
    }
    const uint gs = E / n_group;
    /* Group scores: sum of the two largest biased scores (the single one if gs == 1). */
    float gscore[CLNPU_MOE_MAX_EXPERTS];
    for (uint g = 0; g < n_group; g++) {
        float a = -INFINITY, b = -INFINITY;
        for (uint e = g * gs; e < (g + 1) * gs; e++) {
            if (sb[e] > a) { b = a; a = sb[e]; }
            else if (sb[e] > b) b = sb[e];
        }
        gscore[g] = gs > 1 ? a + b : a;
    }
    uint keep[CLNPU_MOE_MAX_EXPERTS];
    for (uint g = 0; g < n_group; g++) keep[g] = 0;
    for (uint r = 0; r < topk_group; r++) {
        int best = -1;
        for (uint g = 0; g < n_group; g++)
            if (!keep[g] && (best < 0 || gscore[g] > gscore[best])) best = (int)g;
        keep[best] = 1;
    }
    /* Top-k among the kept groups by biased score (CLNPU_MOE_MASKED_ZERO, A.X K2: the other
     * groups' experts take part with a score of 0, as transformers' AXK2TopkRouter fills them). */
#ifdef CLNPU_MOE_MASKED_ZERO
    for (uint e = 0; e < E; e++)
        if (!keep[e / gs]) sb[e] = 0.0f;
#define MOE_EXCLUDED(e) 0
#else
#define MOE_EXCLUDED(e) (!keep[(e) / gs])
#endif
    uint chosen[CLNPU_MOE_MAX_EXPERTS];
    for (uint e = 0; e < E; e++) chosen[e] = 0;
    float wsum = 0.0f;
    for (uint r = 0; r < top_k; r++) {
        int best = -1;
        for (uint e = 0; e < E; e++) {
            if (chosen[e] || MOE_EXCLUDED(e)) continue;
            if (best < 0 || sb[e] > sb[best]) best = (int)e;
        }
        chosen[best] = 1;
        wsum += s[best];
    }
    const float norm = norm_topk ? scaling / (wsum + 1e-20f) : scaling;
    uint j = 0;
    for (uint e = 0; e < E && j < top_k; e++) {
        if (!chosen[e]) continue;
        ids[(size_t)t * top_k + j] = (int)e;
        weights[(size_t)t * top_k + j] = s[e] * norm;
        j++;
    }
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_moe_plan
/* Dispatch plan (one work-item; T * top_k is small): counts[E], offsets[E + 1], and for each
 * permuted row its source token (src[p]) and for each (token, slot) its permuted row
 * (slot_row[t * top_k + j]). Rows are grouped by expert, tokens ascending within an expert. */
__kernel void clnpu_moe_plan(__global const int *ids, const uint T, const uint top_k, const uint E,
                             __global int *counts, __global int *offsets, __global int *src,
                             __global int *slot_row)
{
    if (get_global_id(0) != 0) return;
    for (uint e = 0; e < E; e++) counts[e] = 0;
    for (uint i = 0; i < T * top_k; i++) counts[ids[i]]++;
    int acc = 0;
    for (uint e = 0; e < E; e++) {
        offsets[e] = acc;
        acc += counts[e];
    }
    offsets[E] = acc;
    for (uint e = 0; e < E; e++) counts[e] = 0; /* reused as fill cursors, restored below */
    for (uint t = 0; t < T; t++)
        for (uint j = 0; j < top_k; j++) {
            const int e = ids[t * top_k + j];
            const int p = offsets[e] + counts[e]++;
            src[p] = (int)t;
            slot_row[t * top_k + j] = p;
        }
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_moe_gather
/* Xp[p] = X[src[p]] for p < rows. Grid: (lanes, ceil(rows / per)), work-groups (lanes, 1): each
 * group copies `per` rows, its lanes striding through each (clnpu_lanes; one on CPUs, where a
 * group of a few rows keeps a decode step's eight on one thread: spreading them woke the second
 * thread for ~5 us). */
__kernel void clnpu_moe_gather(__global float *Xp, __global const float *X, const uint ldx,
                               __global const int *src, const uint dim, const uint rows, const uint per)
{
    const uint p0 = get_group_id(1) * per, p1 = min(p0 + per, rows);
    for (uint p = p0; p < p1; p++) {
        __global float *dst = Xp + (size_t)p * dim;
        __global const float *row = X + (size_t)src[p] * ldx;
        for (uint d = get_local_id(0); d < dim; d += CLNPU_LANES) dst[d] = row[d];
    }
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_moe_combine
/* out[t] = base[t] + sum_j w[t][j] * Yp[slot_row[t][j]], fp32, slots in order. base (the
 * shared expert's output, at boff: it may sit in Yp after the routed rows) may be NULL.
 * Grid: (lanes, T), work-groups (lanes, 1): a row's lanes stride through it. */
__kernel void clnpu_moe_combine(__global float *out, const uint ldo, __global const float *base,
                                const uint boff, const uint ldb, __global const float *Yp,
                                __global const int *slot_row, __global const float *weights,
                                const uint top_k, const uint dim)
{
    /* Slot by slot over the whole row (the same order of sums per element as one element at a
     * time, so the same bits), each pass a contiguous loop the compiler vectorises. */
    const uint t = get_global_id(1), l0 = get_local_id(0);
    __global float *o = out + (size_t)t * ldo;
    for (uint d = l0; d < dim; d += CLNPU_LANES) o[d] = base ? base[boff + (size_t)t * ldb + d] : 0.0f;
    for (uint j = 0; j < top_k; j++) {
        const float w = weights[t * top_k + j];
        __global const float *y = Yp + (size_t)slot_row[t * top_k + j] * dim;
        for (uint d = l0; d < dim; d += CLNPU_LANES) o[d] = fma(w, y[d], o[d]);
    }
}
#endif /* CLNPU_ONLY */
