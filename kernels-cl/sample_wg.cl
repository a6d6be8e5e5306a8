/* Work-group family of argmax and sampling: one work-group of WGS threads per row, every pass
 * over the vocabulary a parallel reduction in local memory (163,840 logits: 640 per thread at
 * WGS 256, instead of one work-item scanning them all). Same algorithm and random stream as
 * sample.cl (threshold by bisection, ties at the threshold all kept, the draw in index order), so
 * a seed gives the same token on both families up to the summation order of the kept mass. */
#include "clnpu_common.h"

#ifndef WGS
#define WGS 256
#endif

inline ulong splitmix64(ulong x)
{
    x += 0x9e3779b97f4a7c15UL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9UL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebUL;
    return x ^ (x >> 31);
}

/* (value, index) of the first maximum of the row; NaN never wins, an all -inf row gives its first
 * index, an all-NaN row -1 (as clnpu_argmax). sv / si: WGS-entry scratch. */
inline int row_argmax(__global const float *r, uint n, __local float *sv, __local int *si, float *out_max)
{
    const uint lid = get_local_id(0);
    int best = -1;
    float bv = -INFINITY;
    for (uint i = lid; i < n; i += WGS)
        if (r[i] > bv || (best < 0 && r[i] == bv)) {
            bv = r[i];
            best = (int)i;
        }
    sv[lid] = bv;
    si[lid] = best;
    for (uint s = WGS / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < s) {
            const float v = sv[lid + s];
            const int i = si[lid + s];
            const int b = si[lid];
            if (i >= 0 && (b < 0 || v > sv[lid] || (v == sv[lid] && i < b))) {
                sv[lid] = v;
                si[lid] = i;
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const int arg = si[0];
    *out_max = sv[0];
    barrier(CLK_LOCAL_MEM_FENCE); /* the scratch is reused by the caller */
    return arg;
}

/* Grid: (rows * WGS), local (WGS). */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_argmax_wg(__global int *out, __global const float *x, const uint ld, const uint n)
{
    __local float sv[WGS];
    __local int si[WGS];
    const uint row = get_group_id(0);
    float mx;
    const int arg = row_argmax(x + (size_t)row * ld, n, sv, si, &mx);
    if (get_local_id(0) == 0) out[row] = arg;
}

/* Mass and count of probabilities >= th, reduced over the work-group (every thread gets them). */
inline void mass_above(__global const float *l, uint n, float inv_temp, float mx, float th, __local float *sm,
                       __local uint *sc, float *mass, uint *count)
{
    const uint lid = get_local_id(0);
    float s = 0.0f;
    uint c = 0;
    for (uint i = lid; i < n; i += WGS) {
        const float p = exp((l[i] - mx) * inv_temp);
        if (p >= th) { s += p; c++; }
    }
    sm[lid] = s;
    sc[lid] = c;
    for (uint h = WGS / 2; h > 0; h >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < h) {
            sm[lid] += sm[lid + h];
            sc[lid] += sc[lid + h];
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    *mass = sm[0];
    *count = sc[0];
    barrier(CLK_LOCAL_MEM_FENCE);
}

__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_sample_wg(__global int *out, __global const float *logits, const uint ld, const uint n,
                     const float temperature, const uint top_k, const float top_p, const ulong seed,
                     const ulong step)
{
    __local float sm[WGS];
    __local uint sc[WGS];
    const uint row = get_group_id(0), lid = get_local_id(0);
    __global const float *l = logits + (size_t)row * ld;
    float mx;
    int arg = row_argmax(l, n, sm, (__local int *)sc, &mx);
    if (arg < 0) arg = 0; /* as sample.cl: no finite maximum picks token 0 */
    if (temperature <= 0.0f) {
        if (lid == 0) out[row] = arg;
        return;
    }
    const float inv_temp = 1.0f / temperature;
    float total, ms;
    uint cnt, c;
    mass_above(l, n, inv_temp, mx, 0.0f, sm, sc, &total, &cnt);
    float th = 0.0f;
    if (top_k > 0 && top_k < n) {
        float lo = 0.0f, hi = 1.0f;
        for (int it = 0; it < 40; it++) {
            const float mid = 0.5f * (lo + hi);
            mass_above(l, n, inv_temp, mx, mid, sm, sc, &ms, &c);
            if (c >= top_k) lo = mid; else hi = mid;
        }
        th = lo;
    }
    if (top_p > 0.0f && top_p < 1.0f) {
        float kept, lo = th, hi = 1.0f;
        mass_above(l, n, inv_temp, mx, th, sm, sc, &kept, &c);
        const float target = top_p * kept;
        for (int it = 0; it < 40; it++) {
            const float mid = 0.5f * (lo + hi);
            mass_above(l, n, inv_temp, mx, mid, sm, sc, &ms, &c);
            if (ms >= target) lo = mid; else hi = mid;
        }
        th = lo;
    }
    float kept;
    mass_above(l, n, inv_temp, mx, th, sm, sc, &kept, &cnt);
    const ulong r = splitmix64(seed ^ splitmix64(step * 0x100000001b3UL + row));
    const float u = (float)(r >> 40) * 0x1p-24f * kept;
    /* The draw in index order: thread t owns a contiguous chunk; an exclusive scan of the chunks'
     * kept mass tells which chunk holds u, and that thread walks it. */
    const uint chunk = (n + WGS - 1) / WGS, b0 = min(n, lid * chunk), b1 = min(n, b0 + chunk);
    float mine = 0.0f;
    int last = -1;
    for (uint i = b0; i < b1; i++) {
        const float p = exp((l[i] - mx) * inv_temp);
        if (p >= th) { mine += p; last = (int)i; }
    }
    sm[lid] = mine;
    ((__local int *)sc)[lid] = last;
    barrier(CLK_LOCAL_MEM_FENCE);
    /* One thread walks the chunk sums in index order and then the one chunk where the running
     * mass passes u (WGS sums + n / WGS logits). Past the total (rounding): the last kept token,
     * as sample.cl. (A walk by the chunk's own thread, after the last barrier, did not run on
     * PoCL 3.1 with WGS >= 128 -- not understood; one thread walking is cheap and portable.) */
    if (lid == 0) {
        float acc = 0.0f;
        int fallback = arg, pick = -1;
        for (uint t = 0; t < WGS; t++) {
            const int lt = ((__local int *)sc)[t];
            if (lt >= 0) fallback = lt;
            if (pick < 0 && lt >= 0 && acc + sm[t] > u) {
                float a = acc;
                const uint c0 = min(n, t * chunk), c1 = min(n, c0 + chunk);
                for (uint i = c0; i < c1; i++) {
                    const float p = exp((l[i] - mx) * inv_temp);
                    if (pick < 0 && p >= th) {
                        a += p;
                        if (a > u) pick = (int)i;
                    }
                }
                if (pick < 0) pick = lt;
            }
            acc += sm[t];
        }
        out[row] = pick >= 0 ? pick : fallback;
    }
}

/* Row softmax in place (as elementwise.cl's clnpu_softmax): the max and the sum are work-group
 * reductions; each thread's partial sum is short (n / WGS terms) and the tree adds pairs, so the
 * rounding error grows like log(n) rather than n, without Kahan compensation. Grid: (rows * WGS). */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_softmax_wg(__global float *x, const uint ld, const uint n)
{
    __local float red[WGS];
    const uint lid = get_local_id(0);
    __global float *r = x + (size_t)get_group_id(0) * ld;
    float m = -INFINITY;
    for (uint i = lid; i < n; i += WGS) m = fmax(m, r[i]);
    red[lid] = m;
    for (uint s = WGS / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < s) red[lid] = fmax(red[lid], red[lid + s]);
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    m = red[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    float sum = 0.0f;
    for (uint i = lid; i < n; i += WGS) {
        const float e = exp(r[i] - m);
        r[i] = e;
        sum += e;
    }
    red[lid] = sum;
    for (uint s = WGS / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (lid < s) red[lid] += red[lid + s];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const float inv = 1.0f / red[0];
    for (uint i = lid; i < n; i += WGS) r[i] *= inv;
}
