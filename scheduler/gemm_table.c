/* GEMM time from a kernel library's published rate table (DeepGEMM's README lists FP8 TFLOPS by
 * M, N, K on H800): the cost model's rate for the shapes a table lists, at the M a step gives. */
#include <math.h>

#include "clnpu/plan.h"

double clnpu_gemm_table_time(const clnpu_gemm_point *t, size_t count, double m, double n, double k, double groups)
{
    const clnpu_gemm_point *lo = NULL, *hi = NULL; /* the tabulated M just below and above m */
    if (!(groups > 0) || !(m > 0)) return 0;
    for (size_t i = 0; t && i < count; i++) {
        if (t[i].n != n || t[i].k != k || !(t[i].flops > 0) || !(t[i].m > 0)) continue;
        if (t[i].m <= m && (!lo || t[i].m > lo->m)) lo = &t[i];
        if (t[i].m >= m && (!hi || t[i].m < hi->m)) hi = &t[i];
    }
    if (!lo && !hi) return -1;
    double rate;
    if (!lo) /* fewer rows than any point: as long as the smallest point (the weights bound it) */
        return groups * 2 * hi->m * n * k / hi->flops;
    if (!hi || hi->m == lo->m) rate = lo->flops;
    else {
        const double f = log2(m / lo->m) / log2(hi->m / lo->m);
        rate = lo->flops + f * (hi->flops - lo->flops);
    }
    return groups * 2 * m * n * k / rate;
}

double clnpu_attn_table_rate(const clnpu_attn_point *t, size_t count, double len)
{
    const clnpu_attn_point *lo = NULL, *hi = NULL;
    for (size_t i = 0; t && i < count; i++) {
        if (!(t[i].len > 0) || !(t[i].flops > 0)) continue;
        if (t[i].len <= len && (!lo || t[i].len > lo->len)) lo = &t[i];
        if (t[i].len >= len && (!hi || t[i].len < hi->len)) hi = &t[i];
    }
    if (!lo || !hi) return lo ? lo->flops : hi ? hi->flops : 0;
    if (hi->len == lo->len) return lo->flops;
    return lo->flops + log2(len / lo->len) / log2(hi->len / lo->len) * (hi->flops - lo->flops);
}
