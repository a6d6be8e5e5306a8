/* MoE routing and dispatch operators (the expert GEMMs themselves are clnpu_gemm_grouped). */
#include "../common/error.h"
#include <stdio.h>
#include <string.h>

#include "clnpu/capability.h"
#include "clnpu/ops.h"
#include "launch.h"

#define MOE_MAX_EXPERTS 256

/* The wg family's work-group size for these kernels (0: the cpu family's single work-items). */
static size_t moe_wg(const clnpu_device *dev, char *opts, size_t cap)
{
    const clnpu_capability *c = clnpu_device_capability(dev);
    if (c->family != CLNPU_KERNEL_FAMILY_WG) return 0;
    snprintf(opts, cap, "-DWGS=%u", c->wg_size);
    return c->wg_size;
}

clnpu_status clnpu_moe_route(clnpu_device *dev, clnpu_view logits, const clnpu_buffer *bias,
                             size_t T, const clnpu_moe_config *c, clnpu_buffer *ids, clnpu_buffer *w)
{
    if (!c || !logits.buf || !ids || !w) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe route: NULL argument");
    if (!c->experts || c->experts > MOE_MAX_EXPERTS || !c->n_group || c->experts % c->n_group ||
        !c->topk_group || c->topk_group > c->n_group || !c->top_k ||
        (c->top_k > c->topk_group * (c->experts / c->n_group) && !c->masked_groups_score_zero) || c->top_k > 16 ||
        c->top_k > c->experts)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT,
                          "moe route: inconsistent config (experts %zu <= %d in %zu groups, topk_group "
                          "%zu, top_k %zu <= 16 and <= the experts of the kept groups)",
                          c->experts, MOE_MAX_EXPERTS, c->n_group, c->topk_group, c->top_k);
    if (!T) return CLNPU_OK;
    if (logits.offset || logits.ld < c->experts ||
        clnpu_buffer_size(logits.buf) < ((T - 1) * logits.ld + c->experts) * 4 ||
        clnpu_buffer_size(ids) < T * c->top_k * 4 || clnpu_buffer_size(w) < T * c->top_k * 4 ||
        (bias && clnpu_buffer_size(bias) < c->experts * 4))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe route: a buffer is smaller than its shape");
    cl_mem ml = clnpu_mem(logits.buf), mb = clnpu_mem(bias), mi = clnpu_mem(ids), mw = clnpu_mem(w);
    cl_uint ld = (cl_uint)logits.ld, E = (cl_uint)c->experts, ng = (cl_uint)c->n_group,
            tg = (cl_uint)c->topk_group, tk = (cl_uint)c->top_k, norm = c->norm_topk_prob,
            tt = (cl_uint)T;
    cl_float sc = c->routed_scaling_factor;
    clnpu_karg a[] = {KARG(ml), KARG(ld), KARG(mb), KARG(E), KARG(ng), KARG(tg), KARG(tk), KARG(norm),
                      KARG(sc), KARG(mi), KARG(mw), KARG(tt)};
    char opts[64];
    const size_t wg = moe_wg(dev, opts, sizeof opts);
    if (wg && c->masked_groups_score_zero) /* A.X K2 / DeepSeek-V3.2 routing */
        strncat(opts, " -DCLNPU_MOE_MASKED_ZERO=1", sizeof opts - strlen(opts) - 1);
    if (wg) { /* a work-group per token */
        size_t g[1] = {T * wg}, l[1] = {wg};
        return clnpu_launch(dev, "moe_wg.cl", opts, "clnpu_moe_route_wg", 1, g, l, a, 12);
    }
    size_t g[1] = {T};
    return clnpu_launch(dev, "moe.cl", c->masked_groups_score_zero ? "-DCLNPU_MOE_MASKED_ZERO=1" : NULL,
                        "clnpu_moe_route", 1, g, NULL, a, 12);
}

clnpu_status clnpu_moe_plan(clnpu_device *dev, const clnpu_buffer *ids, size_t T, size_t top_k,
                            size_t E, clnpu_buffer *counts, clnpu_buffer *offsets, clnpu_buffer *src,
                            clnpu_buffer *slot_row)
{
    if (!ids || !counts || !offsets || !src || !slot_row)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe plan: NULL buffer");
    if (clnpu_buffer_size(counts) < E * 4 || clnpu_buffer_size(offsets) < (E + 1) * 4 ||
        clnpu_buffer_size(src) < T * top_k * 4 || clnpu_buffer_size(slot_row) < T * top_k * 4 ||
        clnpu_buffer_size(ids) < T * top_k * 4)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe plan: a buffer is smaller than its shape");
    cl_mem mi = clnpu_mem(ids), mc = clnpu_mem(counts), mo = clnpu_mem(offsets), ms = clnpu_mem(src),
           mr = clnpu_mem(slot_row);
    cl_uint t = (cl_uint)T, k = (cl_uint)top_k, e = (cl_uint)E;
    clnpu_karg a[] = {KARG(mi), KARG(t), KARG(k), KARG(e), KARG(mc), KARG(mo), KARG(ms), KARG(mr)};
    char opts[32];
    const size_t wg = moe_wg(dev, opts, sizeof opts);
    if (wg && E > MOE_MAX_EXPERTS)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "moe plan (wg family): %zu experts > %d", E, MOE_MAX_EXPERTS);
    if (wg) { /* one work-group, a thread per expert */
        size_t g[1] = {wg}, l[1] = {wg};
        return clnpu_launch(dev, "moe_wg.cl", opts, "clnpu_moe_plan_wg", 1, g, l, a, 8);
    }
    size_t g[1] = {1}; /* the group's options */
    return clnpu_launch_group(dev, "moe.cl", clnpu_lanes_options(dev, NULL, opts, sizeof opts), clnpu_group_moe,
                              "clnpu_moe_plan", 1, g, NULL, a, 8);
}

clnpu_status clnpu_moe_gather(clnpu_device *dev, clnpu_buffer *xp, clnpu_view x, const clnpu_buffer *src,
                              size_t rows, size_t dim)
{
    if (!xp || !x.buf || !src) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe gather: NULL buffer");
    if (!rows) return CLNPU_OK;
    if (x.offset || clnpu_buffer_size(xp) < rows * dim * 4 || clnpu_buffer_size(src) < rows * 4)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe gather: a buffer is smaller than its shape");
    cl_mem mp = clnpu_mem(xp), mx = clnpu_mem(x.buf), ms = clnpu_mem(src);
    /* cpu family: 64 KiB or more a work-group, so a decode step's few rows stay on one thread */
    const size_t per = clnpu_lanes(dev) > 1 ? 1 : dim >= 16384 ? 1 : 16384 / dim;
    cl_uint ld = (cl_uint)x.ld, d = (cl_uint)dim, nr = (cl_uint)rows, pr = (cl_uint)per;
    clnpu_karg a[] = {KARG(mp), KARG(mx), KARG(ld), KARG(ms), KARG(d), KARG(nr), KARG(pr)};
    size_t l[2] = {clnpu_lanes(dev), 1}, g[2] = {l[0], (rows + per - 1) / per};
    char opts[32];
    return clnpu_launch_group(dev, "moe.cl", clnpu_lanes_options(dev, NULL, opts, sizeof opts), clnpu_group_moe,
                              "clnpu_moe_gather", 2, g, l, a, 7);
}

clnpu_status clnpu_moe_combine(clnpu_device *dev, clnpu_view out, clnpu_view base, const clnpu_buffer *yp,
                               const clnpu_buffer *slot_row, const clnpu_buffer *w, size_t T,
                               size_t top_k, size_t dim)
{
    if (!out.buf || !yp || !slot_row || !w) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe combine: NULL buffer");
    if (!T) return CLNPU_OK;
    if (out.offset || base.offset > 0xffffffffu || clnpu_buffer_size(yp) < T * top_k * dim * 4 ||
        clnpu_buffer_size(out.buf) < ((T - 1) * out.ld + dim) * 4 ||
        (base.buf && clnpu_buffer_size(base.buf) < (base.offset + (T - 1) * base.ld + dim) * 4))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe combine: a buffer is smaller than its shape");
    cl_mem mo = clnpu_mem(out.buf), mb = clnpu_mem(base.buf), my = clnpu_mem(yp), ms = clnpu_mem(slot_row),
           mw = clnpu_mem(w);
    cl_uint lo = (cl_uint)out.ld, bo = (cl_uint)base.offset, lb = (cl_uint)base.ld, k = (cl_uint)top_k,
            d = (cl_uint)dim;
    clnpu_karg a[] = {KARG(mo), KARG(lo), KARG(mb), KARG(bo), KARG(lb), KARG(my), KARG(ms), KARG(mw), KARG(k), KARG(d)};
    size_t l[2] = {clnpu_lanes(dev), 1}, g[2] = {l[0], T};
    char opts[32];
    return clnpu_launch_group(dev, "moe.cl", clnpu_lanes_options(dev, NULL, opts, sizeof opts), clnpu_group_moe,
                              "clnpu_moe_combine", 2, g, l, a, 10);
}
