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

/* Group-aware packing (DeepSeek's hierarchical EPLB): A.X K1 routes each token to experts of at
 * most topk_group groups, so keeping a group's experts on few devices bounds a token's fan-out.
 * With devices a multiple of the groups, group i owns the device set [i*s, (i+1)*s), s =
 * devices / groups, and its copies are packed largest-first inside it; with groups a multiple of
 * the devices, whole groups go to devices largest group load first. Otherwise, or when a group's
 * copies do not fit its set, the flat packing below is used. */
double clnpu_expert_pack_grouped(const double *w, const size_t *copies, size_t n, size_t n_group, size_t devices,
                                 size_t per_device, size_t *out_expert, size_t *out_device)
{
    if (!n_group || n % n_group || (devices % n_group && n_group % devices))
        return clnpu_expert_pack(w, copies, n, devices, per_device, out_expert, out_device);
    const size_t gs = n / n_group;
    size_t total = 0, k = 0;
    for (size_t e = 0; e < n; e++) total += copies[e];
    double mx = 0;
    if (devices % n_group == 0) {
        const size_t set = devices / n_group;
        for (size_t g = 0; g < n_group; g++) {
            size_t gc = 0;
            for (size_t e = g * gs; e < (g + 1) * gs; e++) gc += copies[e];
            if (gc > set * per_device) return clnpu_expert_pack(w, copies, n, devices, per_device, out_expert, out_device);
            double m = clnpu_expert_pack(w + g * gs, copies + g * gs, gs, set, per_device, out_expert + k, out_device + k);
            for (size_t i = k; i < k + gc; i++) out_expert[i] += g * gs, out_device[i] += g * set;
            k += gc;
            mx = fmax(mx, m);
        }
        return mx;
    }
    /* whole groups per device: group loads packed largest first, gpd groups per device */
    const size_t gpd = n_group / devices;
    double *gl = calloc(n_group, sizeof *gl), *load = calloc(devices, sizeof *load);
    size_t *cnt = calloc(devices, sizeof *cnt), *gcopies = calloc(n_group, sizeof *gcopies), *order = malloc(n_group * sizeof *order);
    if (!gl || !load || !cnt || !gcopies || !order) {
        free(gl), free(load), free(cnt), free(gcopies), free(order);
        return clnpu_expert_pack(w, copies, n, devices, per_device, out_expert, out_device);
    }
    for (size_t g = 0; g < n_group; g++) {
        order[g] = g;
        for (size_t e = g * gs; e < (g + 1) * gs; e++) gl[g] += w[e], gcopies[g] += copies[e];
    }
    for (size_t a = 0; a < n_group; a++) /* largest group load first (stable by index) */
        for (size_t b = a + 1; b < n_group; b++)
            if (gl[order[b]] > gl[order[a]]) { size_t t = order[a]; order[a] = order[b]; order[b] = t; }
    bool ok = true;
    size_t *slots_used = calloc(devices, sizeof *slots_used);
    for (size_t i = 0; i < n_group && ok && slots_used; i++) {
        size_t g = order[i], best = devices;
        for (size_t d = 0; d < devices; d++)
            if (cnt[d] < gpd && slots_used[d] + gcopies[g] <= per_device && (best == devices || load[d] < load[best])) best = d;
        if (best == devices) { ok = false; break; }
        for (size_t e = g * gs; e < (g + 1) * gs; e++)
            for (size_t r = 0; r < copies[e]; r++) out_expert[k] = e, out_device[k++] = best;
        load[best] += gl[g], cnt[best]++, slots_used[best] += gcopies[g];
        mx = fmax(mx, load[best]);
    }
    free(gl), free(load), free(cnt), free(gcopies), free(order), free(slots_used);
    return ok && k == total ? mx : clnpu_expert_pack(w, copies, n, devices, per_device, out_expert, out_device);
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
