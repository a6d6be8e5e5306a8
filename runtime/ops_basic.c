/* Row-wise operators: RMSNorm (+ fused residual add), SiLU product, embedding, softmax,
 * argmax, sampling. */
#include <math.h>
#include <stdio.h>

#include "../common/error.h"
#include "clnpu/capability.h"
#include "clnpu/ops.h"
#include "launch.h"

/* Elementwise kernels use 64-wide groups (PoCL vectorises across them); fewer where the device
 * cannot. */
static size_t elementwise_wg(const clnpu_device *dev)
{
    size_t m = clnpu_device_get_info(dev)->max_work_group_size;
    return m < 64 ? m : 64;
}

/* The capability table's reduction work-group: 1 for the cpu family (one work-item per row, no
 * barriers), its wg_size for the wg family. */
static size_t reduction_wg(const clnpu_device *dev)
{
    const clnpu_capability *c = clnpu_device_capability(dev);
    return c->family == CLNPU_KERNEL_FAMILY_WG ? c->wg_size : 1;
}

/* The forward launches all of norm.cl's kernels, with the same options: one program for them.
 * norm_wg gives their work-group size and writes those options. */
static const char *const norm_group[] = {"clnpu_rmsnorm", "clnpu_rmsnorm2", "clnpu_rmsnorm_add_tag", NULL};

static size_t norm_wg(const clnpu_device *dev, char *opts, size_t cap)
{
    const size_t wg = reduction_wg(dev);
    snprintf(opts, cap, "-DCLNPU_NORM_WG=%zu", wg);
    return wg;
}

static clnpu_status check_view(const clnpu_view *v, size_t rows, size_t n, const char *what)
{
    if (!v->buf) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: no buffer", what);
    if (v->ld < n) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: row stride %zu < row length %zu", what, v->ld, n);
    if (rows && (v->offset + (rows - 1) * v->ld + n) * sizeof(float) > clnpu_buffer_size(v->buf))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: %zu rows of %zu (stride %zu, offset %zu) "
                          "exceed a buffer of %zu bytes", what, rows, n, v->ld, v->offset,
                          clnpu_buffer_size(v->buf));
    return CLNPU_OK;
}

clnpu_status clnpu_rmsnorm(clnpu_device *dev, clnpu_view x, clnpu_view res, clnpu_view y,
                           const clnpu_buffer *w, size_t rows, size_t dim, float eps)
{
    clnpu_status st = check_view(&x, rows, dim, "rmsnorm x");
    if (!st) st = check_view(&y, rows, dim, "rmsnorm y");
    if (!st && res.buf) st = check_view(&res, rows, dim, "rmsnorm residual");
    if (!st && (!w || clnpu_buffer_size(w) < dim * sizeof(float)))
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rmsnorm: weight must hold %zu floats", dim);
    if (st || !rows) return st;
    /* cpu family: one work-item per row; wg family: the group reduces in local memory. */
    char opts[64];
    const size_t wg = norm_wg(dev, opts, sizeof opts);
    cl_mem mx = clnpu_mem(x.buf), mh = clnpu_mem(res.buf ? res.buf : x.buf), my = clnpu_mem(y.buf),
           mw = clnpu_mem(w);
    cl_uint xo = (cl_uint)x.offset, xl = (cl_uint)x.ld, ho = (cl_uint)res.offset,
            hl = (cl_uint)(res.buf ? res.ld : x.ld), yo = (cl_uint)y.offset, yl = (cl_uint)y.ld,
            d = (cl_uint)dim, hr = res.buf != NULL;
    clnpu_karg a[] = {KARG(mx), KARG(xo), KARG(xl), KARG(mh), KARG(ho), KARG(hl), KARG(my),
                      KARG(yo), KARG(yl), KARG(mw), KARG(d), KARG(eps), KARG(hr)};
    size_t g[1] = {rows * wg}, l[1] = {wg};
    return clnpu_launch_group(dev, "norm.cl", opts, norm_group, "clnpu_rmsnorm", 1, g, l, a, 13);
}

clnpu_status clnpu_rmsnorm2(clnpu_device *dev, clnpu_view x, const clnpu_buffer *w, size_t dim, clnpu_view x2,
                            const clnpu_buffer *w2, size_t dim2, size_t rows, float eps)
{
    clnpu_status st = check_view(&x, rows, dim, "rmsnorm2 x");
    if (!st) st = check_view(&x2, rows, dim2, "rmsnorm2 x2");
    if (!st && (!w || clnpu_buffer_size(w) < dim * sizeof(float) || !w2 || clnpu_buffer_size(w2) < dim2 * sizeof(float)))
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rmsnorm2: weights must hold %zu and %zu floats", dim, dim2);
    if (st || !rows) return st;
    char opts[64];
    const size_t wg = norm_wg(dev, opts, sizeof opts);
    cl_mem mx = clnpu_mem(x.buf), mw = clnpu_mem(w), mx2 = clnpu_mem(x2.buf), mw2 = clnpu_mem(w2);
    cl_uint xo = (cl_uint)x.offset, xl = (cl_uint)x.ld, d = (cl_uint)dim, xo2 = (cl_uint)x2.offset,
            xl2 = (cl_uint)x2.ld, d2 = (cl_uint)dim2, r = (cl_uint)rows;
    clnpu_karg a[] = {KARG(mx), KARG(xo), KARG(xl), KARG(mw), KARG(d), KARG(mx2), KARG(xo2), KARG(xl2),
                      KARG(mw2), KARG(d2), KARG(r), KARG(eps)};
    size_t g[1] = {2 * rows * wg}, l[1] = {wg};
    return clnpu_launch_group(dev, "norm.cl", opts, norm_group, "clnpu_rmsnorm2", 1, g, l, a, 12);
}

clnpu_status clnpu_rmsnorm_add_tag(clnpu_device *dev, clnpu_view x, const clnpu_buffer *w1, clnpu_view h, clnpu_view y,
                                   const clnpu_buffer *w2, size_t rows, size_t dim, float eps, int tag,
                                   clnpu_buffer *flag)
{
    clnpu_status st = check_view(&h, rows, dim, "rmsnorm_add_tag h");
    if (!st && x.buf) st = check_view(&x, rows, dim, "rmsnorm_add_tag x");
    if (!st && w2) st = check_view(&y, rows, dim, "rmsnorm_add_tag y");
    for (int i = 0; !st && i < 2; i++) {
        const clnpu_buffer *w = i ? w2 : w1;
        if (w && clnpu_buffer_size(w) < dim * sizeof(float))
            st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rmsnorm_add_tag: weight %d must hold %zu floats", i + 1, dim);
    }
    if (!st && w1 && !x.buf) st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rmsnorm_add_tag: a norm of x without x");
    if (!st && tag >= 0 && (!flag || clnpu_buffer_size(flag) < sizeof(cl_int)))
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rmsnorm_add_tag: a tag without a flag buffer");
    if (st || !rows) return st;
    char opts[64];
    const size_t wg = norm_wg(dev, opts, sizeof opts);
    cl_mem mx = clnpu_mem(x.buf), m1 = clnpu_mem(w1), mh = clnpu_mem(h.buf), my = clnpu_mem(w2 ? y.buf : NULL),
           m2 = clnpu_mem(w2), mf = clnpu_mem(tag >= 0 ? flag : NULL);
    cl_uint xo = (cl_uint)x.offset, xl = (cl_uint)x.ld, ho = (cl_uint)h.offset, hl = (cl_uint)h.ld,
            yo = (cl_uint)y.offset, yl = (cl_uint)y.ld, d = (cl_uint)dim;
    cl_int tg = tag;
    clnpu_karg a[] = {KARG(mx), KARG(xo), KARG(xl), KARG(m1), KARG(mh), KARG(ho), KARG(hl), KARG(my),
                      KARG(yo), KARG(yl), KARG(m2), KARG(d), KARG(eps), KARG(tg), KARG(mf)};
    size_t g[1] = {rows * wg}, l[1] = {wg};
    return clnpu_launch_group(dev, "norm.cl", opts, norm_group, "clnpu_rmsnorm_add_tag", 1, g, l, a, 15);
}

clnpu_status clnpu_silu_mul(clnpu_device *dev, clnpu_view y, clnpu_view g, clnpu_view u,
                            size_t rows, size_t n)
{
    clnpu_status st = check_view(&y, rows, n, "silu y");
    if (!st) st = check_view(&g, rows, n, "silu gate");
    if (!st) st = check_view(&u, rows, n, "silu up");
    if (st || !rows || !n) return st;
    /* Offsets are applied through sub-ranges of the same kernel: pass base + offset rows. */
    if (y.offset || g.offset || u.offset)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "silu_mul: views with offsets are not supported");
    cl_mem my = clnpu_mem(y.buf), mg = clnpu_mem(g.buf), mu = clnpu_mem(u.buf);
    cl_uint ly = (cl_uint)y.ld, lg = (cl_uint)g.ld, lu = (cl_uint)u.ld, nn = (cl_uint)n;
    clnpu_karg a[] = {KARG(my), KARG(ly), KARG(mg), KARG(lg), KARG(mu), KARG(lu), KARG(nn)};
    size_t gl[2] = {n, rows}, l[2] = {elementwise_wg(dev), 1};
    return clnpu_launch(dev, "elementwise.cl", NULL, "clnpu_silu_mul", 2, gl, l, a, 7);
}

clnpu_status clnpu_embed(clnpu_device *dev, clnpu_buffer *y, const clnpu_buffer *table,
                         clnpu_dtype dt, const clnpu_buffer *ids, size_t count, size_t dim,
                         size_t vocab)
{
    return clnpu_embed_rows(dev, y, table, dt, ids, count, dim, 0, vocab, vocab);
}

clnpu_status clnpu_embed_rows(clnpu_device *dev, clnpu_buffer *y, const clnpu_buffer *table, clnpu_dtype dt,
                              const clnpu_buffer *ids, size_t count, size_t dim, size_t first, size_t rows,
                              size_t vocab)
{
    if (dt != CLNPU_DTYPE_BF16 && dt != CLNPU_DTYPE_F32)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "embedding table in %s (bf16 or f32 only)",
                          clnpu_dtype_name(dt) ? clnpu_dtype_name(dt) : "?");
    if (!y || !table || !ids) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "embed: NULL buffer");
    if (first > vocab || rows > vocab - first)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "embed: rows [%zu, %zu) of a vocabulary of %zu", first,
                          first + rows, vocab);
    if (clnpu_buffer_size(table) < rows * dim * clnpu_dtype_size(dt) ||
        clnpu_buffer_size(y) < count * dim * sizeof(float) || clnpu_buffer_size(ids) < count * 4)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "embed: a buffer is smaller than its shape");
    if (!count) return CLNPU_OK;
    cl_mem my = clnpu_mem(y), mt = clnpu_mem(table), mi = clnpu_mem(ids);
    cl_uint d = (cl_uint)dim, f = (cl_uint)first, r = (cl_uint)rows, v = (cl_uint)vocab;
    clnpu_karg a[] = {KARG(my), KARG(mt), KARG(mi), KARG(d), KARG(f), KARG(r), KARG(v)};
    size_t l[2] = {clnpu_lanes(dev), 1}, g[2] = {l[0], count};
    char opts[32];
    return clnpu_launch(dev, "elementwise.cl", clnpu_lanes_options(dev, NULL, opts, sizeof opts),
                        dt == CLNPU_DTYPE_BF16 ? "clnpu_embed_bf16" : "clnpu_embed_f32", 2, g, l, a, 7);
}

clnpu_status clnpu_softmax(clnpu_device *dev, clnpu_view x, size_t rows, size_t n)
{
    clnpu_status st = check_view(&x, rows, n, "softmax");
    if (st || !rows) return st;
    if (x.offset) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "softmax: views with offsets are not supported");
    cl_mem m = clnpu_mem(x.buf);
    cl_uint ld = (cl_uint)x.ld, nn = (cl_uint)n;
    clnpu_karg a[] = {KARG(m), KARG(ld), KARG(nn)};
    const size_t wg = reduction_wg(dev);
    if (wg > 1) {
        char opts[32];
        snprintf(opts, sizeof opts, "-DWGS=%zu", wg);
        size_t g[1] = {rows * wg}, l[1] = {wg};
        return clnpu_launch(dev, "sample_wg.cl", opts, "clnpu_softmax_wg", 1, g, l, a, 3);
    }
    size_t g[1] = {rows};
    return clnpu_launch(dev, "elementwise.cl", NULL, "clnpu_softmax", 1, g, NULL, a, 3);
}

clnpu_status clnpu_argmax(clnpu_device *dev, clnpu_buffer *out, clnpu_view x, size_t rows, size_t n)
{
    clnpu_status st = check_view(&x, rows, n, "argmax");
    if (!st && (!out || clnpu_buffer_size(out) < rows * 4))
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "argmax: output must hold %zu ints", rows);
    if (st || !rows) return st;
    if (x.offset) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "argmax: views with offsets are not supported");
    cl_mem mo = clnpu_mem(out), mx = clnpu_mem(x.buf);
    cl_uint ld = (cl_uint)x.ld, nn = (cl_uint)n;
    clnpu_karg a[] = {KARG(mo), KARG(mx), KARG(ld), KARG(nn)};
    const size_t wg = reduction_wg(dev);
    if (wg > 1) { /* a work-group per row, the vocabulary reduced in local memory */
        char opts[32];
        snprintf(opts, sizeof opts, "-DWGS=%zu", wg);
        size_t g[1] = {rows * wg}, l[1] = {wg};
        return clnpu_launch(dev, "sample_wg.cl", opts, "clnpu_argmax_wg", 1, g, l, a, 4);
    }
    size_t g[1] = {rows};
    return clnpu_launch(dev, "elementwise.cl", NULL, "clnpu_argmax", 1, g, NULL, a, 4);
}

clnpu_status clnpu_sample(clnpu_device *dev, clnpu_buffer *out, clnpu_view x, size_t rows, size_t n,
                          const clnpu_sampling *p, uint64_t step)
{
    clnpu_status st = check_view(&x, rows, n, "sample");
    if (!st && (!out || clnpu_buffer_size(out) < rows * 4))
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sample: output must hold %zu ints", rows);
    if (!st && !p) st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sample: no parameters");
    /* NaN passes every <= test and would sample garbage: refuse it */
    if (!st && (isnan(p->temperature) || isinf(p->temperature) || isnan(p->top_p)))
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sample: temperature %g, top_p %g: not numbers", p->temperature,
                        p->top_p);
    if (st || !rows) return st;
    if (x.offset) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "sample: views with offsets are not supported");
    cl_mem mo = clnpu_mem(out), mx = clnpu_mem(x.buf);
    cl_uint ld = (cl_uint)x.ld, nn = (cl_uint)n, k = p->top_k;
    /* a temperature whose inverse overflows float (below ~3e-39) samples as greedy, its limit */
    cl_float t = p->temperature > 0 && isinf(1.0f / p->temperature) ? 0.0f : p->temperature, tp = p->top_p;
    cl_ulong seed = p->seed, s = step;
    clnpu_karg a[] = {KARG(mo), KARG(mx), KARG(ld), KARG(nn), KARG(t), KARG(k), KARG(tp), KARG(seed), KARG(s)};
    const size_t wg = reduction_wg(dev);
    if (wg > 1) {
        char opts[32];
        snprintf(opts, sizeof opts, "-DWGS=%zu", wg);
        size_t g[1] = {rows * wg}, l[1] = {wg};
        return clnpu_launch(dev, "sample_wg.cl", opts, "clnpu_sample_wg", 1, g, l, a, 9);
    }
    size_t g[1] = {rows};
    return clnpu_launch(dev, "sample.cl", NULL, "clnpu_sample", 1, g, NULL, a, 9);
}
