/* Pipeline stage partition: an exact DP over contiguous unit ranges and device groups
 * (scheduler notes 7.3), and a brute-force enumerator to check it. */
#include <math.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

#include "clnpu/plan.h"

static double combine(double a, double b, clnpu_stage_objective obj)
{
    return obj == CLNPU_STAGES_SUM ? a + b : (a > b ? a : b);
}

/* F[j][k]: best value covering units 0..j-1 with k groups used (k stages). Ties prefer fewer
 * stages (the outer loop keeps the first minimum over k). */
size_t clnpu_stage_dp(size_t L, size_t G, clnpu_stage_fn cost, clnpu_stage_fn mem, const double *cap,
                      clnpu_stage_objective obj, void *ctx, size_t *cuts, double *value)
{
    return clnpu_stage_dp_all(L, G, cost, mem, cap, obj, ctx, cuts, value, NULL);
}

size_t clnpu_stage_dp_all(size_t L, size_t G, clnpu_stage_fn cost, clnpu_stage_fn mem, const double *cap,
                          clnpu_stage_objective obj, void *ctx, size_t *cuts, double *value, double *per_k)
{
    const size_t W = G + 1;
    double *F = malloc((L + 1) * W * sizeof *F);
    size_t *arg = malloc((L + 1) * W * sizeof *arg);
    if (!F || !arg) {
        free(F), free(arg);
        return 0;
    }
    for (size_t i = 0; i < (L + 1) * W; i++) F[i] = INFINITY;
    F[0] = 0;
    for (size_t k = 1; k <= G; k++)
        for (size_t j = 1; j <= L; j++)
            for (size_t i = k - 1; i < j; i++) {
                if (!isfinite(F[i * W + k - 1])) continue;
                if (mem(i, j, k - 1, ctx) > cap[k - 1]) continue;
                double v = combine(F[i * W + k - 1], cost(i, j, k - 1, ctx), obj);
                if (v < F[j * W + k]) {
                    F[j * W + k] = v;
                    arg[j * W + k] = i;
                }
            }
    size_t best_k = 0;
    double best = INFINITY;
    for (size_t k = 1; k <= G; k++) {
        if (per_k) per_k[k] = F[L * W + k]; /* the optimum with exactly k stages */
        if (F[L * W + k] < best) best = F[L * W + k], best_k = k;
    }
    if (best_k) {
        size_t j = L;
        for (size_t k = best_k; k > 0; k--) {
            cuts[k] = j;
            j = arg[j * W + k];
        }
        cuts[0] = 0;
    }
    if (value) *value = best;
    free(F), free(arg);
    return best_k;
}

/* Every composition of L into at most G parts (cut masks over L - 1 boundaries). */
size_t clnpu_stage_brute(size_t L, size_t G, clnpu_stage_fn cost, clnpu_stage_fn mem, const double *cap,
                         clnpu_stage_objective obj, void *ctx, size_t *cuts, double *value)
{
    double best = INFINITY;
    size_t best_k = 0, tmp[64];
    for (unsigned long mask = 0; mask < (1ul << (L - 1)); mask++) {
        size_t k = 0;
        tmp[0] = 0;
        for (size_t b = 1; b < L; b++)
            if (mask >> (b - 1) & 1) tmp[++k] = b;
        tmp[++k] = L;
        if (k > G) continue;
        double v = obj == CLNPU_STAGES_SUM ? 0 : -INFINITY;
        bool ok = true;
        for (size_t s = 0; s < k && ok; s++) {
            if (mem(tmp[s], tmp[s + 1], s, ctx) > cap[s]) ok = false;
            else v = combine(v, cost(tmp[s], tmp[s + 1], s, ctx), obj);
        }
        if (ok && (v < best || (v == best && k < best_k))) {
            best = v, best_k = k;
            memcpy(cuts, tmp, (k + 1) * sizeof *cuts);
        }
    }
    if (value) *value = best;
    return best_k;
}
