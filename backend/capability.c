/* The capability table: one place maps a device (and its bound profile) to a kernel family and
 * that family's defaults. See include/clnpu/capability.h for the rules. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnpu/capability.h"
#include "device_internal.h"
#include "../common/error.h"

const char *clnpu_kernel_family_name(clnpu_kernel_family f)
{
    return f == CLNPU_KERNEL_FAMILY_WG ? "wg" : "cpu";
}

size_t clnpu_gemm_wg_local_bytes(const clnpu_gemm_wg_params *p, bool swiglu)
{
    size_t x = p->sa ? (size_t)p->kwg * p->mwg : 0, w = p->sb ? (size_t)p->kwg * p->nwg : 0;
    return (x + (swiglu ? 2 : 1) * w) * sizeof(float);
}

static bool pow2(unsigned v) { return v && !(v & (v - 1)); }

bool clnpu_gemm_wg_params_valid(const clnpu_gemm_wg_params *p, size_t max_wg, const char **why)
{
    const char *w = NULL;
    if (!pow2(p->mdimc) || !pow2(p->ndimc)) w = "MDIMC and NDIMC must be powers of two";
    else if ((size_t)p->mdimc * p->ndimc > max_wg) w = "MDIMC x NDIMC exceeds the device's work-group size";
    else if (!p->mwg || !p->nwg || p->mwg % p->mdimc || p->nwg % p->ndimc) w = "MWG / NWG must be multiples of MDIMC / NDIMC";
    else if (!p->vwm || !p->vwn || (p->mwg / p->mdimc) % p->vwm || (p->nwg / p->ndimc) % p->vwn)
        w = "VWM / VWN must divide the rows / columns per thread";
    else if (!p->kwi || !p->kwg || p->kwg % p->kwi) w = "KWI must divide KWG";
    else if ((size_t)p->mwg * p->nwg / ((size_t)p->mdimc * p->ndimc) > 256) w = "more than 256 accumulators per thread";
    if (why) *why = w;
    return w == NULL;
}

bool clnpu_gemm_wg_fit(clnpu_gemm_wg_params *p, uint64_t budget, bool swiglu)
{
    /* Re-tile: first a shorter K step (same work per thread), then narrower tiles. */
    while (clnpu_gemm_wg_local_bytes(p, swiglu) > budget) {
        if (p->kwg > p->kwi && p->kwg > 4) p->kwg /= 2;
        else if (p->nwg > p->ndimc * p->vwn) p->nwg /= 2;
        else if (p->mwg > p->mdimc * p->vwm) p->mwg /= 2;
        else return false;
        if (p->kwg % p->kwi) p->kwi = 1;
    }
    return true;
}

/* GEMM defaults from the profile's kernel keys where the profile describes a work-group
 * (wg_x * wg_y >= 8): wg_y x wg_x threads, each a tile_m x tile_n register tile, K steps of
 * tile_k, vector_width-wide column chunks. A CPU profile's keys describe the cpu family instead
 * (MR, NR of kernels-cl/gemm.cl); the wg family then takes 8 x 8 threads of 4 x 4. */
static clnpu_gemm_wg_params gemm_defaults(const clnpu_kernel_params *k, size_t max_wg)
{
    clnpu_gemm_wg_params p = {32, 32, 16, 8, 8, 1, 1, 2, 1, 1};
    if (k->wg_x > 0 && k->wg_y > 0 && k->wg_x * k->wg_y >= 8 && pow2((unsigned)k->wg_x) && pow2((unsigned)k->wg_y)) {
        p.mdimc = (unsigned)k->wg_y;
        p.ndimc = (unsigned)k->wg_x;
        const unsigned mwi = k->tile_m > 0 ? (unsigned)k->tile_m : 4, nwi = k->tile_n > 0 ? (unsigned)k->tile_n : 4;
        p.mwg = p.mdimc * mwi;
        p.nwg = p.ndimc * nwi;
        if (k->tile_k > 0) p.kwg = (unsigned)k->tile_k;
        if (k->vector_width > 0 && nwi % (unsigned)k->vector_width == 0) p.vwn = (unsigned)k->vector_width;
    }
    const char *why;
    if (!clnpu_gemm_wg_params_valid(&p, max_wg, &why)) {
        clnpu_gemm_wg_params d = {32, 32, 16, 8, 8, 1, 1, 2, 1, 1};
        p = d;
    }
    return p;
}

/* Threads per work-group for a requested size: 64 -> 8 x 8, 128 -> 16 x 8, 256 -> 16 x 16. */
static void gemm_threads(clnpu_gemm_wg_params *p, unsigned wg)
{
    unsigned m = 1, n = 1;
    while (m * n < wg) {
        if (n <= m) n *= 2;
        else m *= 2;
    }
    p->mdimc = m;
    p->ndimc = n;
    p->mwg = 2 * m;
    p->nwg = 2 * n;
    p->vwm = p->vwn = 1;
}

void clnpu_capability_compute(const clnpu_device_info *i, const clnpu_profile *prof, bool emulated,
                              clnpu_capability *c)
{
    memset(c, 0, sizeof *c);
    /* the budget as a device opens it: the profile's kernel budget or SRAM, within the device's */
    uint64_t budget = i->local_mem_bytes;
    if (prof->kernel.local_mem_bytes > 0) budget = (uint64_t)prof->kernel.local_mem_bytes;
    else if (prof->sram_bytes > 0) budget = (uint64_t)prof->sram_bytes;
    if (budget > i->local_mem_bytes) budget = i->local_mem_bytes;
    c->type = i->type;
    c->local_mem_real = !i->local_mem_is_global && i->local_mem_bytes > 0;
    c->local_mem_bytes = budget;
    c->subgroups = i->subgroups;
    c->subgroup_size = i->subgroup_size_count ? (unsigned)i->subgroup_sizes[0] : 0;
    c->compute_units = i->compute_units;
    c->vector_width = i->pref_vector_width_float;
    c->max_wg = i->max_work_group_size ? i->max_work_group_size : 1;
    const bool cpu_profile = prof->match_types == CLNPU_MATCH_TYPE_CPU || strstr(prof->class_name, "cpu") != NULL;
    const char *env = getenv("CLNPU_KERNEL_FAMILY");
    if (env && !strcmp(env, "wg")) c->family = CLNPU_KERNEL_FAMILY_WG, c->reason = "CLNPU_KERNEL_FAMILY=wg";
    else if (env && !strcmp(env, "cpu")) c->family = CLNPU_KERNEL_FAMILY_CPU, c->reason = "CLNPU_KERNEL_FAMILY=cpu";
    else if (emulated && !cpu_profile)
        c->family = CLNPU_KERNEL_FAMILY_WG, c->reason = "emulated accelerator profile";
    else if (i->type != CLNPU_DEVICE_TYPE_CPU && c->local_mem_real)
        c->family = CLNPU_KERNEL_FAMILY_WG, c->reason = "accelerator with dedicated local memory";
    else
        c->family = CLNPU_KERNEL_FAMILY_CPU,
        c->reason = i->type == CLNPU_DEVICE_TYPE_CPU ? "CPU device" : "local memory emulated in global memory";
    c->wg_size = c->max_wg >= 256 ? 256 : (unsigned)c->max_wg;
    while (c->wg_size & (c->wg_size - 1)) c->wg_size &= c->wg_size - 1;
    c->gemm = gemm_defaults(&prof->kernel, c->max_wg);
    const char *wgs = getenv("CLNPU_WG_SIZE");
    if (wgs && *wgs) {
        unsigned v = (unsigned)strtoul(wgs, NULL, 10);
        if (pow2(v) && v <= c->max_wg) {
            c->wg_size = v;
            gemm_threads(&c->gemm, v);
        }
    }
    /* Keep the GEMM tile inside the (emulated) local-memory budget; launches still check. */
    clnpu_gemm_wg_fit(&c->gemm, c->local_mem_bytes, true);
}

void clnpu_capability_fill(clnpu_device *dev)
{
    clnpu_capability_compute(&dev->info, &dev->profile, dev->emulated, &dev->cap);
}

const clnpu_capability *clnpu_device_capability(const clnpu_device *dev)
{
    return &dev->cap;
}

clnpu_status clnpu_device_set_kernel_family(clnpu_device *dev, clnpu_kernel_family family, unsigned wg_size)
{
    if (!dev) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_device_set_kernel_family: NULL device");
    if (family != CLNPU_KERNEL_FAMILY_CPU && family != CLNPU_KERNEL_FAMILY_WG)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "unknown kernel family %d", (int)family);
    if (wg_size && (!pow2(wg_size) || wg_size > dev->cap.max_wg))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "work-group size %u: not a power of two within the "
                          "device's %zu", wg_size, dev->cap.max_wg);
    dev->cap.family = family;
    dev->cap.reason = "set by the caller";
    if (wg_size) {
        dev->cap.wg_size = wg_size;
        gemm_threads(&dev->cap.gemm, wg_size);
        clnpu_gemm_wg_fit(&dev->cap.gemm, dev->cap.local_mem_bytes, true);
    }
    return CLNPU_OK;
}

const char *clnpu_op_variant(const clnpu_device *dev, const char *op, size_t rows)
{
    const bool wg = dev->cap.family == CLNPU_KERNEL_FAMILY_WG;
    static const struct { const char *op, *cpu, *wg; } table[] = {
        {"gemv", "cpu:clnpu_gemm (M <= 8 panel stream)", "wg:clnpu_gemv_wg"},
        {"gemm", "cpu:clnpu_gemm (register block)", "wg:clnpu_gemm_wg (local tiles)"},
        {"gemm_grouped", "cpu:clnpu_gemm_grouped", "wg:clnpu_gemm_wg_grouped"},
        {"rmsnorm", "cpu:clnpu_rmsnorm (1 work-item per row)", "wg:clnpu_rmsnorm (work-group reduction)"},
        {"rmsnorm2", "cpu:clnpu_rmsnorm2 (1 work-item per row)", "wg:clnpu_rmsnorm2 (work-group reduction)"},
        {"rmsnorm_layer_end", "cpu:clnpu_rmsnorm_add_tag (1 work-item per row)",
         "wg:clnpu_rmsnorm_add_tag (work-group reduction)"},
        {"argmax", "cpu:clnpu_argmax", "wg:clnpu_argmax_wg"},
        {"sample", "cpu:clnpu_sample", "wg:clnpu_sample_wg"},
        {"softmax", "cpu:clnpu_softmax (Kahan, one work-item per row)", "wg:clnpu_softmax_wg"},
        {"flash_attention", "cpu:clnpu_flash_attn_regs", "wg:clnpu_flash_attn_wg (Q, K/V tiles in local memory)"},
        {"mla_decode", "cpu:clnpu_mla_decode", "wg:clnpu_mla_decode_wg (cache tiles in local memory)"},
        {"mla_decode_rope", "cpu:clnpu_mla_decode (q_pe rotated on load)",
         "wg:clnpu_mla_decode_wg (q_pe rotated on load)"},
        {"dsa_scores", "cpu:clnpu_dsa_scores", "wg:clnpu_dsa_scores_wg (key tiles in local memory)"},
        {"dsa_topk", "cpu:clnpu_dsa_topk (one work-item per query)", "wg:clnpu_dsa_topk_wg (local histogram, scan)"},
        {"mla_sparse", "cpu:clnpu_mla_sparse", "wg:clnpu_mla_sparse_wg (selected rows in local tiles)"},
        {"dsa", "cpu:clnpu_dsa_scores + clnpu_dsa_topk + clnpu_mla_sparse",
         "wg:clnpu_dsa_scores_wg + clnpu_dsa_topk_wg + clnpu_mla_sparse_wg"},
        {"layernorm", "cpu:clnpu_layernorm (1 work-item per row)", "wg:clnpu_layernorm_wg (work-group reduction)"},
        {"moe_route_ids", "cpu:clnpu_moe_route", "wg:clnpu_moe_route_wg"},
        {"moe_route_weights", "cpu:clnpu_moe_route", "wg:clnpu_moe_route_wg"},
        {"moe_plan", "cpu:clnpu_moe_plan (one work-item)", "wg:clnpu_moe_plan_wg"},
        {"model_forward", "cpu", "wg"},
    };
    if (!strcmp(op, "gemm") && rows && rows <= 8) op = "gemv";
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(table[i].op, op)) return wg ? table[i].wg : table[i].cpu;
    return "shared"; /* one kernel for both families (elementwise, RoPE, gather / combine) */
}
