/* Work-group family of MoE routing and dispatch planning (same results as moe.cl, bit for bit in
 * the ids and in the order of every sum).
 * Route: a work-group of WGS threads per token. Sigmoid scores in local memory (one expert per
 * thread), group scores one group per thread, the topk_group groups and then the top_k experts by
 * repeated parallel argmax reductions (ties: the lower index, as moe.cl). Plan: one work-group;
 * thread e counts and then places expert e's rows in token order, an exclusive scan in between, so
 * the plan is the one the single work-item of moe.cl writes. */
#include "clnpu_common.h"

#ifndef WGS
#define WGS 64
#endif
#ifndef CLNPU_MOE_MAX_EXPERTS
#define CLNPU_MOE_MAX_EXPERTS 256
#endif

/* Index of the largest v[i] over i < n with ok[i] (lowest index on ties), -1 if none; every
 * thread gets it. rv / ri: WGS-entry scratch. */
inline int wg_argmax(__local const float *v, __local const uint *ok, uint n, __local float *rv, __local int *ri)
{
    const uint lid = get_local_id(0);
    float bv = -INFINITY;
    int bi = -1;
    for (uint i = lid; i < n; i += WGS)
        if (ok[i] && (bi < 0 || v[i] > bv)) bv = v[i], bi = (int)i;
    rv[lid] = bv;
    ri[lid] = bi;
    for (uint s = WGS / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < s) {
            const int oi = ri[lid + s];
            const float ov = rv[lid + s];
            const int mi = ri[lid];
            if (oi >= 0 && (mi < 0 || ov > rv[lid] || (ov == rv[lid] && oi < mi))) rv[lid] = ov, ri[lid] = oi;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const int r = ri[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* Grid: (T * WGS), local (WGS). ids/weights: [T][top_k], ids ascending. */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_moe_route_wg(__global const float *logits, const uint ld, __global const float *bias, const uint E,
                        const uint n_group, const uint topk_group, const uint top_k, const uint norm_topk,
                        const float scaling, __global int *ids, __global float *weights, const uint T)
{
    __local float s[CLNPU_MOE_MAX_EXPERTS], sb[CLNPU_MOE_MAX_EXPERTS], gscore[CLNPU_MOE_MAX_EXPERTS];
    __local uint keep[CLNPU_MOE_MAX_EXPERTS], avail[CLNPU_MOE_MAX_EXPERTS], chosen[CLNPU_MOE_MAX_EXPERTS];
    __local float rv[WGS];
    __local int ri[WGS];
    __local int pick_order[16];
    const uint t = get_group_id(0), lid = get_local_id(0);
    if (t >= T) return;
    for (uint e = lid; e < E; e += WGS) {
        s[e] = 1.0f / (1.0f + exp(-logits[(size_t)t * ld + e]));
        sb[e] = s[e] + (bias ? bias[e] : 0.0f);
        chosen[e] = 0;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const uint gs = E / n_group;
    for (uint g = lid; g < n_group; g += WGS) { /* sum of the two largest biased scores */
        float a = -INFINITY, b = -INFINITY;
        for (uint e = g * gs; e < (g + 1) * gs; e++) {
            if (sb[e] > a) { b = a; a = sb[e]; }
            else if (sb[e] > b) b = sb[e];
        }
        gscore[g] = gs > 1 ? a + b : a;
        keep[g] = 0;
        avail[g] = 1;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint r = 0; r < topk_group; r++) {
        const int best = wg_argmax(gscore, avail, n_group, rv, ri);
        if (lid == 0) keep[best] = 1, avail[best] = 0;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
#ifdef CLNPU_MOE_MASKED_ZERO
    /* A.X K2 (as moe.cl): the other groups' experts take part with a biased score of 0 */
    for (uint e = lid; e < E; e += WGS) {
        if (!keep[e / gs]) sb[e] = 0.0f;
        avail[e] = 1;
    }
#else
    for (uint e = lid; e < E; e += WGS) avail[e] = keep[e / gs];
#endif
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint r = 0; r < top_k; r++) {
        const int best = wg_argmax(sb, avail, E, rv, ri);
        if (lid == 0) avail[best] = 0, chosen[best] = 1, pick_order[r] = best;
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0) {
        float wsum = 0.0f; /* in selection order, as moe.cl */
        for (uint r = 0; r < top_k; r++) wsum += s[pick_order[r]];
        const float norm = norm_topk ? scaling / (wsum + 1e-20f) : scaling;
        uint j = 0;
        for (uint e = 0; e < E && j < top_k; e++) {
            if (!chosen[e]) continue;
            ids[(size_t)t * top_k + j] = (int)e;
            weights[(size_t)t * top_k + j] = s[e] * norm;
            j++;
        }
    }
}

/* Dispatch plan: counts[E], offsets[E + 1], src[p] (the token of permuted row p), slot_row[t *
 * top_k + j]. One work-group: grid (WGS), local (WGS). */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_moe_plan_wg(__global const int *ids, const uint T, const uint top_k, const uint E, __global int *counts,
                       __global int *offsets, __global int *src, __global int *slot_row)
{
    __local int cnt[CLNPU_MOE_MAX_EXPERTS + 1];
    const uint lid = get_local_id(0), n = T * top_k;
    for (uint e = lid; e < E; e += WGS) {
        int c = 0;
        for (uint i = 0; i < n; i++) c += ids[i] == (int)e;
        cnt[e] = c;
        counts[e] = c;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    if (lid == 0) { /* exclusive scan of at most 256 counts */
        int acc = 0;
        for (uint e = 0; e < E; e++) {
            const int c = cnt[e];
            cnt[e] = acc;
            offsets[e] = acc;
            acc += c;
        }
        offsets[E] = acc;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (uint e = lid; e < E; e += WGS) {
        int p = cnt[e];
        for (uint i = 0; i < n; i++)
            if (ids[i] == (int)e) {
                src[p] = (int)(i / top_k);
                slot_row[i] = p++;
            }
    }
}
