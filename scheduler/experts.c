/* Expert placement (scheduler notes section 4 and 7.4): replicate hot experts into the spare
 * slots, then pack copies onto devices, largest per-copy load first. */
#include <math.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>

#include "clnpu/plan.h"

/* Giving the next slot to the expert with the largest per-copy load is optimal for the min-max
 * per-copy load (each step lowers the current maximum as far as one copy can). Ties: lowest id. */
double clnpu_expert_replicate(const double *w, size_t n, size_t slots, size_t *c)
{
    for (size_t e = 0; e < n; e++) c[e] = 1;
    for (size_t s = n; s < slots; s++) {
        size_t best = 0;
        for (size_t e = 1; e < n; e++)
            if (w[e] / c[e] > w[best] / c[best]) best = e;
        c[best]++;
    }
    double m = 0;
    for (size_t e = 0; e < n; e++) m = fmax(m, w[e] / c[e]);
    return m;
}

static void brute_rec(const double *w, size_t n, size_t e, size_t left, size_t *c, double *best)
{
    if (e == n - 1) {
        c[e] = 1 + left;
        double m = 0;
        for (size_t i = 0; i < n; i++) m = fmax(m, w[i] / c[i]);
        if (m < *best) *best = m;
        return;
    }
    for (size_t extra = 0; extra <= left; extra++) {
        c[e] = 1 + extra;
        brute_rec(w, n, e + 1, left - extra, c, best);
    }
}

double clnpu_expert_replicate_brute(const double *w, size_t n, size_t slots)
{
    size_t c[64];
    double best = INFINITY;
    if (n == 0 || n > 64 || slots < n) return INFINITY;
    brute_rec(w, n, 0, slots - n, c, &best);
    return best;
}

typedef struct copy_ref {
    size_t expert;
    double load;
} copy_ref;

static int by_load_desc(const void *a, const void *b)
{
    const copy_ref *x = a, *y = b;
    if (x->load != y->load) return x->load < y->load ? 1 : -1;
    return x->expert < y->expert ? -1 : x->expert > y->expert;
}

double clnpu_expert_pack(const double *w, const size_t *copies, size_t n, size_t devices, size_t per_device,
                         size_t *out_expert, size_t *out_device)
{
    size_t total = 0;
    for (size_t e = 0; e < n; e++) total += copies[e];
    copy_ref *cp = malloc(total * sizeof *cp);
    double *load = calloc(devices, sizeof *load);
    size_t *used = calloc(devices, sizeof *used);
    if (!cp || !load || !used || total > devices * per_device) {
        free(cp), free(load), free(used);
        return INFINITY;
    }
    size_t k = 0;
    for (size_t e = 0; e < n; e++)
        for (size_t r = 0; r < copies[e]; r++) cp[k++] = (copy_ref){e, w[e] / copies[e]};
    qsort(cp, total, sizeof *cp, by_load_desc);
    double mx = 0;
    for (size_t i = 0; i < total; i++) {
        /* the least loaded device with a free slot that does not already hold this expert */
        size_t best = devices;
        for (size_t d = 0; d < devices; d++) {
            if (used[d] >= per_device) continue;
            /* copies of one expert are adjacent after the sort: look back over them only */
            bool dup = false;
            for (size_t j = i; j-- > 0 && out_expert[j] == cp[i].expert && !dup;) dup = out_device[j] == d;
            if (dup) continue;
            if (best == devices || load[d] < load[best]) best = d;
        }
        if (best == devices) { /* only duplicates left: allow one (more copies than devices) */
            for (size_t d = 0; d < devices; d++)
                if (used[d] < per_device && (best == devices || load[d] < load[best])) best = d;
        }
        out_expert[i] = cp[i].expert;
        out_device[i] = best;
        load[best] += cp[i].load;
        used[best]++;
        mx = fmax(mx, load[best]);
    }
    free(cp), free(load), free(used);
    return mx;
}
