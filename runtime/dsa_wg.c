/* Host side of kernels-cl/dsa_wg.cl, DeepSeek Sparse Attention's work-group family: work-group
 * size from the capability table, tiles from the tuning database (dsa_wg: bk, hc) shrunk until
 * their local memory fits the device's budget, else a refusal naming the budget. */
#include <stdio.h>
#include <string.h>

#include "../common/error.h"
#include "clnpu/capability.h"
#include "clnpu/tuning.h"
#include "dsa_internal.h"
#include "latent_cache.h"

bool clnpu_dsa_use_wg(const clnpu_device *dev)
{
    return clnpu_device_capability(dev)->family == CLNPU_KERNEL_FAMILY_WG;
}

/* The work-group size, or a refusal: the top-k's scan and bin search need 16 .. 256 threads. */
static clnpu_status group_size(clnpu_device *dev, const char *kernel, size_t *out)
{
    const size_t w = clnpu_device_capability(dev)->wg_size;
    *out = w;
    if (w >= 16 && w <= 256) return CLNPU_OK;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: work-groups of %zu threads on device %zu (profile '%s'); the "
                      "dsa_wg kernels need 16 to 256", kernel, w, clnpu_device_get_info(dev)->index,
                      clnpu_device_get_profile(dev)->name);
}

static clnpu_status over_budget(clnpu_device *dev, const char *kernel, const char *what, size_t bytes)
{
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: %s need %zu bytes of local memory; the budget on device %zu "
                      "(profile '%s') is %llu bytes", kernel, what, bytes, clnpu_device_get_info(dev)->index,
                      clnpu_device_get_profile(dev)->name,
                      (unsigned long long)clnpu_device_capability(dev)->local_mem_bytes);
}

static size_t pow2_floor(size_t v)
{
    while (v & (v - 1)) v &= v - 1;
    return v;
}

clnpu_status clnpu_dsa_scores_wg(clnpu_device *dev, const clnpu_dsa_scores_args *a, const clnpu_karg *args)
{
    size_t wgs;
    clnpu_status st = group_size(dev, "clnpu_dsa_scores_wg", &wgs);
    if (st) return st;
    const uint64_t budget = clnpu_device_capability(dev)->local_mem_bytes;
    const clnpu_tuning_entry *e = clnpu_device_tuning_lookup(dev, "dsa_wg", "f32", a->tokens == 1 ? "decode" : "prefill");
    /* BK keys per tile (a power of two within the group); the group's other threads are lanes over
     * the heads, so HC (heads held at a time) is at least the lane count where the heads allow */
    size_t bk = pow2_floor((size_t)clnpu_tuning_param(e, "bk", 32)), D = a->head_dim;
    if (bk > wgs) bk = wgs;
    size_t hc = (size_t)clnpu_tuning_param(e, "hc", (int)(wgs / bk > 8 ? wgs / bk : 8));
    if (hc > a->heads) hc = a->heads;
    size_t bytes;
    for (;;) {
        bytes = (hc * D + hc + bk * (D + 1) + wgs) * sizeof(float);
        if (bytes <= budget) break;
        if (hc > 1) hc /= 2;
        else if (bk > 1) bk /= 2;
        else return over_budget(dev, "clnpu_dsa_scores_wg", "one key and one indexer head", bytes);
    }
    char opts[128];
    snprintf(opts, sizeof opts, "-DCLNPU_DSA_D=%zu -DCLNPU_DSA_BK=%zu -DCLNPU_DSA_HC=%zu -DWGS=%zu", D, bk, hc, wgs);
    clnpu_karg wargs[17];
    memcpy(wargs, args, 16 * sizeof *args);
    wargs[16] = (clnpu_karg){bytes, NULL};
    size_t g[2] = {(a->max_len + bk - 1) / bk * wgs, a->tokens}, l[2] = {wgs, 1};
    return clnpu_launch(dev, "dsa_wg.cl", opts, "clnpu_dsa_scores_wg", 2, g, l, wargs, 17);
}

clnpu_status clnpu_dsa_topk_wg(clnpu_device *dev, size_t T, const clnpu_karg *args)
{
    size_t wgs;
    clnpu_status st = group_size(dev, "clnpu_dsa_topk_wg", &wgs);
    if (st) return st;
    /* fixed local arrays: the histogram, the scan and the select's state */
    const size_t bytes = (256 + wgs + 5) * 4;
    if (bytes > clnpu_device_capability(dev)->local_mem_bytes)
        return over_budget(dev, "clnpu_dsa_topk_wg", "the 256-bin histogram and the scan", bytes);
    char opts[32];
    snprintf(opts, sizeof opts, "-DWGS=%zu", wgs);
    size_t g[1] = {T * wgs}, l[1] = {wgs};
    return clnpu_launch(dev, "dsa_wg.cl", opts, "clnpu_dsa_topk_wg", 1, g, l, args, 7);
}

clnpu_status clnpu_mla_sparse_wg(clnpu_device *dev, const clnpu_mla_sparse_args *a, unsigned splits,
                                 const clnpu_karg *args)
{
    size_t wgs;
    clnpu_status st = group_size(dev, "clnpu_mla_sparse_wg", &wgs);
    if (st) return st;
    /* the cache types kernels-cl/clnpu_cache.h reads; another is refused, never read as f32 */
    st = clnpu_latent_cache_check(a->cache_dtype, "clnpu_mla_sparse_wg");
    if (st) return st;
    /* as clnpu_mla_decode_wg: HG heads (up to 8) share each tile of BT selected rows; the largest
     * HG, then BT (32 .. 1) that fit the budget */
    const uint64_t budget = clnpu_device_capability(dev)->local_mem_bytes;
    const size_t H = a->heads, R = a->rank, row = R + a->rope_dim;
    size_t hg = H < 8 ? H : 8, bt = 32, bytes;
    if (hg > wgs) hg = wgs;
    for (;;) {
        bytes = (hg * row + bt * (row + 1) + hg * bt + 3 * hg + bt) * sizeof(float);
        if (bytes <= budget) break;
        if (bt > 4) bt /= 2;
        else if (hg > 1) hg /= 2;
        else if (bt > 1) bt /= 2;
        else return over_budget(dev, "clnpu_mla_sparse_wg", "one head and one latent row", bytes);
    }
    char opts[192];
    snprintf(opts, sizeof opts, "-DCLNPU_MLA_R=%zu -DCLNPU_MLA_DR=%zu -DCLNPU_MLA_HG=%zu -DCLNPU_MLA_BT=%zu -DWGS=%zu%s", R,
             a->rope_dim, hg, bt, wgs, clnpu_latent_cache_define(a->cache_dtype));
    clnpu_karg wargs[20];
    memcpy(wargs, args, 19 * sizeof *args);
    wargs[19] = (clnpu_karg){bytes, NULL};
    size_t g[3] = {(H + hg - 1) / hg * wgs, a->rows, splits}, l[3] = {wgs, 1, 1};
    return clnpu_launch(dev, "dsa_wg.cl", opts, "clnpu_mla_sparse_wg", 3, g, l, wargs, 20);
}

clnpu_status clnpu_layernorm_wg(clnpu_device *dev, size_t T, const clnpu_karg *args)
{
    size_t wgs;
    clnpu_status st = group_size(dev, "clnpu_layernorm_wg", &wgs);
    if (st) return st;
    char opts[32];
    snprintf(opts, sizeof opts, "-DWGS=%zu", wgs);
    size_t g[1] = {T * wgs}, l[1] = {wgs};
    return clnpu_launch(dev, "dsa_wg.cl", opts, "clnpu_layernorm_wg", 1, g, l, args, 7);
}
