/* Sampling from logits with temperature, top-k and top-p, reproducible from an explicit seed.
 * One work-item per row. Instead of sorting the vocabulary, the kept set is defined by a
 * probability threshold found by bisection: top-k keeps every token whose probability is at
 * least the k-th largest, top-p the smallest threshold set whose mass reaches p (ties at the
 * threshold are all kept, so the result never depends on sort order). The draw scans the kept
 * tokens in index order against u in [0, kept mass), u from a counter-based hash of
 * (seed, row), so the same seed gives the same tokens on every device. */
#include "clnpu_common.h"

inline ulong splitmix64(ulong x)
{
    x += 0x9e3779b97f4a7c15UL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9UL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebUL;
    return x ^ (x >> 31);
}

/* Mass and count of probabilities >= th (probabilities are exp(l/temp - max) / z). */
inline void mass_above(__global const float *l, uint n, float inv_temp, float mx, float th,
                       float *mass, uint *count)
{
    float s = 0.0f;
    uint c = 0;
    for (uint i = 0; i < n; i++) {
        const float p = exp((l[i] - mx) * inv_temp);
        if (p >= th) { s += p; c++; }
    }
    *mass = s;
    *count = c;
}

__kernel void clnpu_sample(__global int *out, __global const float *logits, const uint ld,
                           const uint n, const float temperature, const uint top_k,
                           const float top_p, const ulong seed, const ulong step)
{
    const uint row = get_global_id(0);
    __global const float *l = logits + (size_t)row * ld;
    float mx = -INFINITY;
    int arg = 0;
    for (uint i = 0; i < n; i++)
        if (l[i] > mx) { mx = l[i]; arg = (int)i; }
    if (temperature <= 0.0f) { /* greedy */
        out[row] = arg;
        return;
    }
    const float inv_temp = 1.0f / temperature;
    /* Unnormalised probabilities lie in (0, 1] with the maximum at exactly 1. */
    float total;
    uint cnt;
    mass_above(l, n, inv_temp, mx, 0.0f, &total, &cnt);
    float th = 0.0f;
    if (top_k > 0 && top_k < n) { /* largest th with count(p >= th) >= k */
        float lo = 0.0f, hi = 1.0f;
        for (int it = 0; it < 40; it++) {
            const float mid = 0.5f * (lo + hi);
            float ms;
            uint c;
            mass_above(l, n, inv_temp, mx, mid, &ms, &c);
            if (c >= top_k) lo = mid; else hi = mid;
        }
        th = lo;
    }
    if (top_p > 0.0f && top_p < 1.0f) { /* largest th' >= th whose kept mass >= p * total */
        float kept, lo = th, hi = 1.0f;
        uint c;
        mass_above(l, n, inv_temp, mx, th, &kept, &c);
        const float target = top_p * kept;
        for (int it = 0; it < 40; it++) {
            const float mid = 0.5f * (lo + hi);
            float ms;
            mass_above(l, n, inv_temp, mx, mid, &ms, &c);
            if (ms >= target) lo = mid; else hi = mid;
        }
        th = lo;
    }
    float kept;
    mass_above(l, n, inv_temp, mx, th, &kept, &cnt);
    const ulong r = splitmix64(seed ^ splitmix64(step * 0x100000001b3UL + row));
    const float u = (float)(r >> 40) * 0x1p-24f * kept;
    float acc = 0.0f;
    int pick = arg;
    for (uint i = 0; i < n; i++) {
        const float p = exp((l[i] - mx) * inv_temp);
        if (p < th) continue;
        acc += p;
        pick = (int)i;
        if (acc > u) break;
    }
    out[row] = pick;
}
