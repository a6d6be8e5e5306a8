/* Host side of the work-group GEMM family (kernels-cl/gemm_wg.cl): tile parameters from the
 * capability table, the tuning database ("gemm_wg" entries) and the local-memory budget; the
 * kernel's local bytes are checked against the (emulated) budget before every launch. */
#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "clnpu/capability.h"
#include "clnpu/program.h"
#include "clnpu/tuning.h"
#include "gemm_internal.h"
#include "launch.h"

#define GEMV_MAXM 8 /* kernels-cl/gemm_wg.cl: rows the GEMV kernel takes */

/* The tuning class (gemm_params.c's): grouped by the mean rows per matrix of the m rows. */
static const char *shape_class(size_t m, size_t matrices, bool grouped)
{
    if (grouped) return (m + matrices - 1) / (matrices ? matrices : 1) <= 8 ? "grouped" : "grouped_prefill";
    return m == 1 ? "gemv" : m <= 8 ? "decode" : "prefill";
}

typedef struct wg_choice {
    clnpu_gemm_wg_params p;
    unsigned wgs;          /* GEMV work-group */
    size_t gemm_local, gemv_local;
    char opts[384];
} wg_choice;

/* Parameters for one call: table defaults, then a tuning entry (if its values are consistent),
 * then re-tiled into the local-memory budget; fails naming the bytes when nothing fits. */
static clnpu_status choose(clnpu_device *dev, const clnpu_weight_layout *w, clnpu_epilogue ep, size_t m,
                           bool grouped, wg_choice *c)
{
    /* only the kernel about to run must fit: the GEMV for m <= GEMV_MAXM (not grouped) */
    const bool gemv = !grouped && m <= GEMV_MAXM;
    const clnpu_capability *cap = clnpu_device_capability(dev);
    c->p = cap->gemm;
    const clnpu_tuning_entry *te =
        clnpu_device_tuning_lookup(dev, "gemm_wg", clnpu_dtype_name(w->dtype), shape_class(m, w->count, grouped));
    if (te) {
        clnpu_gemm_wg_params t = c->p;
        unsigned *f[] = {&t.mwg, &t.nwg, &t.kwg, &t.mdimc, &t.ndimc, &t.vwm, &t.vwn, &t.kwi, &t.sa, &t.sb};
        const char *names[] = {"mwg", "nwg", "kwg", "mdimc", "ndimc", "vwm", "vwn", "kwi", "sa", "sb"};
        for (size_t i = 0; i < 10; i++) {
            int v = clnpu_tuning_param(te, names[i], -1);
            if (v >= 0 && v <= 4096) *f[i] = (unsigned)v;
        }
        if (clnpu_gemm_wg_params_valid(&t, cap->max_wg, NULL)) c->p = t;
    }
    const bool swiglu = ep == CLNPU_EPILOGUE_SWIGLU;
    const uint64_t budget = cap->local_mem_bytes;
    const clnpu_profile *prof = clnpu_device_get_profile(dev);
    if (!clnpu_gemm_wg_fit(&c->p, budget, swiglu) && !gemv)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "gemm_wg (%s%s): the smallest %ux%ux%u tile needs %zu bytes of local "
                          "memory; the budget on device %zu (profile '%s'%s) is %llu bytes",
                          clnpu_dtype_name(w->dtype), swiglu ? ", SwiGLU" : "", c->p.mwg, c->p.nwg, c->p.kwg,
                          clnpu_gemm_wg_local_bytes(&c->p, swiglu), clnpu_device_get_info(dev)->index, prof->name,
                          clnpu_device_is_emulated(dev) ? ", emulated" : "", (unsigned long long)budget);
    c->gemm_local = clnpu_gemm_wg_local_bytes(&c->p, swiglu);
    c->wgs = cap->wg_size < w->nr ? w->nr : cap->wg_size;
    while (c->wgs > w->nr && (c->wgs > cap->max_wg ||
                              (uint64_t)GEMV_MAXM * c->wgs * sizeof(float) * (swiglu ? 2 : 1) > budget))
        c->wgs /= 2;
    c->gemv_local = (size_t)GEMV_MAXM * c->wgs * sizeof(float) * (swiglu ? 2 : 1);
    if (c->gemv_local > budget && gemv)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "gemv_wg: %u work-items need %zu bytes of local memory; the budget on "
                          "device %zu (profile '%s') is %llu bytes", c->wgs, c->gemv_local,
                          clnpu_device_get_info(dev)->index, prof->name, (unsigned long long)budget);
    snprintf(c->opts, sizeof c->opts,
             "-DCLNPU_GEMM_WTYPE=%d -DCLNPU_GEMM_QGROUP=%zu -DCLNPU_GEMM_EPILOGUE=%d -DCLNPU_GEMM_NR=%u -DMWG=%u "
             "-DNWG=%u -DKWG=%u -DMDIMC=%u -DNDIMC=%u -DVWM=%u -DVWN=%u -DKWI=%u -DSA=%u -DSB=%u -DWGS=%u",
             (int)w->dtype, w->dtype == CLNPU_DTYPE_I8 ? w->group_k : (size_t)128, (int)ep, w->nr, c->p.mwg,
             c->p.nwg, c->p.kwg, c->p.mdimc, c->p.ndimc, c->p.vwm, c->p.vwn, c->p.kwi, c->p.sa, c->p.sb, c->wgs);
    return CLNPU_OK;
}

#define SETARG(k, i, v)                                                                            \
    do {                                                                                           \
        __typeof__(v) v_ = (v);                                                                    \
        cl_int e_ = clSetKernelArg(k, i, sizeof v_, &v_);                                          \
        if (e_) return clnpu_fail_cl(e_, "clSetKernelArg", "setting work-group GEMM arguments");   \
    } while (0)

/* The __local tile arguments (see gemm_wg.cl) from argument index i on: the launch's stated
 * local bytes, checked against the budget in choose(). */
static clnpu_status local_args(cl_kernel k, cl_uint i, const wg_choice *c, bool gemv, bool swiglu)
{
    size_t sz[3];
    if (gemv) {
        sz[0] = (size_t)GEMV_MAXM * c->wgs * sizeof(float);
        sz[1] = swiglu ? sz[0] : sizeof(float);
    } else {
        sz[0] = (c->p.sa ? (size_t)c->p.kwg * c->p.mwg : 1) * sizeof(float);
        sz[1] = (c->p.sb ? (size_t)c->p.kwg * c->p.nwg : 1) * sizeof(float);
        sz[2] = (c->p.sb && swiglu ? (size_t)c->p.kwg * c->p.nwg : 1) * sizeof(float);
    }
    for (cl_uint j = 0; j < (gemv ? 2u : 3u); j++) {
        cl_int e = clSetKernelArg(k, i + j, sz[j], NULL);
        if (e) return clnpu_fail_cl(e, "clSetKernelArg", "sizing work-group GEMM local memory");
    }
    return CLNPU_OK;
}

static clnpu_status kernel_of(clnpu_device *dev, const wg_choice *c, const char *name, cl_kernel *k)
{
    clnpu_program *prog;
    clnpu_status st = clnpu_program_get(dev, "gemm_wg.cl", c->opts, &prog);
    if (!st) st = clnpu_program_kernel(prog, name, (void **)k);
    return st;
}

/* Split-K for the GEMV (not SwiGLU): an explicit split_k > 1, or, with split_k 0, when the panels
 * would leave most compute units idle and K is long (work-groups then cooperate along K). */
static unsigned gemv_splits(const clnpu_device *dev, const clnpu_weight_layout *w, const clnpu_gemm_args *a)
{
    if (a->epilogue == CLNPU_EPILOGUE_SWIGLU || a->split_k == 1) return 1;
    if (a->split_k > 1) return a->split_k < w->k ? a->split_k : (unsigned)w->k;
    const size_t panels = (w->n + w->nr - 1) / w->nr, want = 2 * (size_t)clnpu_device_capability(dev)->compute_units;
    if (panels >= want || w->k < 2048) return 1;
    size_t s = (want + panels - 1) / panels;
    if (s > w->k / 1024) s = w->k / 1024;
    return s > 1 ? (unsigned)s : 1;
}

clnpu_status clnpu_gemm_wg(clnpu_device *dev, const clnpu_weight_layout *w, size_t matrix, const clnpu_gemm_args *a,
                           size_t ldx, size_t ldy, size_t ldr)
{
    const bool gemv = a->m <= GEMV_MAXM;
    const unsigned splits = gemv ? gemv_splits(dev, w, a) : 1;
    /* split: the chunks write plain partials (epilogue 0) into a workspace, the reduce adds R */
    wg_choice c;
    clnpu_status st = choose(dev, w, splits > 1 ? CLNPU_EPILOGUE_NONE : a->epilogue, a->m, false, &c);
    if (st) return st;
    clnpu_buffer *ws = NULL;
    const size_t wsbytes = (size_t)splits * a->m * w->n * sizeof(float);
    if (splits > 1) {
        if (a->workspace && clnpu_buffer_size(a->workspace) >= wsbytes) ws = a->workspace;
        else if ((st = clnpu_buffer_create(dev, wsbytes, &ws))) return st;
    }
    cl_kernel k;
    st = kernel_of(dev, &c, gemv ? "clnpu_gemv_wg" : "clnpu_gemm_wg", &k);
    if (st) goto done;
    cl_mem r = clnpu_mem(a->residual ? a->residual : a->y), s = clnpu_mem(w->s ? w->s : w->w);
    const clnpu_karg args[] = {
        KARG(*(cl_mem[]){clnpu_mem(a->x)}), KARG(*(cl_uint[]){(cl_uint)a->x_offset}), KARG(*(cl_uint[]){(cl_uint)ldx}),
        KARG(*(cl_mem[]){clnpu_mem(w->w)}), KARG(*(cl_ulong[]){(cl_ulong)(matrix * w->w_stride)}), KARG(s),
        KARG(*(cl_ulong[]){(cl_ulong)(matrix * w->s_stride)}), KARG(*(cl_mem[]){clnpu_mem(ws ? ws : a->y)}),
        KARG(*(cl_uint[]){(cl_uint)(ws ? 0 : a->y_offset)}), KARG(*(cl_uint[]){(cl_uint)(ws ? w->n : ldy)}), KARG(r),
        KARG(*(cl_uint[]){(cl_uint)a->r_offset}), KARG(*(cl_uint[]){(cl_uint)ldr}), KARG(*(cl_uint[]){(cl_uint)a->m}),
        KARG(*(cl_uint[]){(cl_uint)w->n}), KARG(*(cl_uint[]){(cl_uint)w->k}), KARG(*(cl_float[]){a->alpha})};
    for (cl_uint i = 0; !st && i < 17; i++) {
        cl_int e = clSetKernelArg(k, i, args[i].size, args[i].value);
        if (e) st = clnpu_fail_cl(e, "clSetKernelArg", "setting work-group GEMM arguments");
    }
    if (st) goto done;
    if (gemv) {
        const size_t kchunk = (w->k + splits - 1) / splits;
        const cl_uint kc = (cl_uint)kchunk;
        cl_int e = clSetKernelArg(k, 17, sizeof kc, &kc);
        if (e) { st = clnpu_fail_cl(e, "clSetKernelArg", "setting the GEMV K chunk"); goto done; }
        st = local_args(k, 18, &c, true, a->epilogue == CLNPU_EPILOGUE_SWIGLU);
        size_t g[2] = {(w->n + w->nr - 1) / w->nr * c.wgs, splits}, l[2] = {c.wgs, 1};
        if (!st) st = clnpu_enqueue(dev, k, 2, g, l, "clnpu_gemv_wg");
        if (!st && splits > 1) {
            cl_kernel red;
            st = kernel_of(dev, &c, "clnpu_gemv_wg_reduce", &red);
            const cl_uint sp = splits, yo = (cl_uint)a->y_offset, ly = (cl_uint)ldy, ro = (cl_uint)a->r_offset,
                          lr = (cl_uint)ldr, m = (cl_uint)a->m, n = (cl_uint)w->n,
                          hr = a->epilogue == CLNPU_EPILOGUE_RESIDUAL;
            const cl_mem mw = clnpu_mem(ws), my = clnpu_mem(a->y);
            const clnpu_karg ra[] = {KARG(mw), KARG(sp), KARG(my), KARG(yo), KARG(ly), KARG(r), KARG(ro), KARG(lr),
                                     KARG(m), KARG(n), KARG(hr)};
            for (cl_uint i = 0; !st && i < 11; i++) {
                cl_int e2 = clSetKernelArg(red, i, ra[i].size, ra[i].value);
                if (e2) st = clnpu_fail_cl(e2, "clSetKernelArg", "setting the split-K GEMV reduce");
            }
            size_t rg[2] = {(w->n + 63) / 64 * 64, a->m}, rl[2] = {64, 1};
            if (!st) st = clnpu_enqueue(dev, red, 2, rg, rl, "clnpu_gemv_wg_reduce");
        }
        goto done;
    }
    st = local_args(k, 17, &c, false, a->epilogue == CLNPU_EPILOGUE_SWIGLU);
    if (!st) {
        const size_t threads = (size_t)c.p.mdimc * c.p.ndimc;
        size_t g[2] = {(w->n + c.p.nwg - 1) / c.p.nwg * threads, (a->m + c.p.mwg - 1) / c.p.mwg}, l[2] = {threads, 1};
        st = clnpu_enqueue(dev, k, 2, g, l, "clnpu_gemm_wg");
    }
done:
    if (ws && ws != a->workspace) clnpu_buffer_destroy(ws); /* the queued kernels keep it alive */
    return st;
}

static clnpu_status grouped_args(cl_kernel k, const clnpu_weight_layout *w, const clnpu_gemm_args *a, size_t ldx,
                                 size_t ldy, size_t ldr)
{
    SETARG(k, 0, clnpu_mem(a->x));
    SETARG(k, 1, (cl_uint)a->x_offset);
    SETARG(k, 2, (cl_uint)ldx);
    SETARG(k, 3, clnpu_mem(w->w));
    SETARG(k, 4, clnpu_mem(w->s ? w->s : w->w));
    SETARG(k, 5, clnpu_mem(a->y));
    SETARG(k, 6, (cl_uint)a->y_offset);
    SETARG(k, 7, (cl_uint)ldy);
    SETARG(k, 8, clnpu_mem(a->residual ? a->residual : a->y));
    SETARG(k, 9, (cl_uint)a->r_offset);
    SETARG(k, 10, (cl_uint)ldr);
    return CLNPU_OK;
}

clnpu_status clnpu_gemm_wg_grouped(clnpu_device *dev, const clnpu_weight_layout *w, const clnpu_gemm_segment *segs,
                                   size_t count, const clnpu_gemm_args *a, size_t ldx, size_t ldy, size_t ldr)
{
    wg_choice c;
    clnpu_status st = choose(dev, w, a->epilogue, a->m, true, &c);
    if (st) return st;
    size_t total = 0;
    for (size_t i = 0; i < count; i++) total += (segs[i].rows + c.p.mwg - 1) / c.p.mwg;
    if (!total) return CLNPU_OK;
    cl_int *tiles = malloc(total * 3 * sizeof *tiles);
    if (!tiles) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    size_t t = 0;
    for (size_t i = 0; i < count; i++)
        for (size_t r = 0; r < segs[i].rows; r += c.p.mwg, t++) {
            tiles[3 * t] = (cl_int)segs[i].matrix;
            tiles[3 * t + 1] = (cl_int)(segs[i].row + r);
            tiles[3 * t + 2] = (cl_int)(segs[i].rows - r < c.p.mwg ? segs[i].rows - r : c.p.mwg);
        }
    cl_kernel k;
    st = kernel_of(dev, &c, "clnpu_gemm_wg_grouped", &k);
    cl_int err = 0;
    cl_mem tb = NULL;
    if (!st) {
        tb = clCreateBuffer(clnpu_device_cl_context(dev), CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                            total * 3 * sizeof *tiles, tiles, &err);
        if (!tb) st = clnpu_fail_cl(err, "clCreateBuffer", "uploading the grouped GEMM tile table");
    }
    free(tiles);
    if (st) return st;
    st = grouped_args(k, w, a, ldx, ldy, ldr);
    const cl_uint nt = (cl_uint)total, n = (cl_uint)w->n, kk = (cl_uint)w->k;
    const cl_ulong ws = w->w_stride, ss = w->s_stride;
    const cl_float alpha = a->alpha;
    const clnpu_karg rest[] = {KARG(tb), KARG(nt), KARG(n), KARG(kk), KARG(ws), KARG(ss), KARG(alpha)};
    for (cl_uint i = 0; !st && i < 7; i++)
        if ((err = clSetKernelArg(k, 11 + i, rest[i].size, rest[i].value)))
            st = clnpu_fail_cl(err, "clSetKernelArg", "setting grouped GEMM arguments");
    if (!st) st = local_args(k, 18, &c, false, a->epilogue == CLNPU_EPILOGUE_SWIGLU);
    if (!st) {
        const size_t threads = (size_t)c.p.mdimc * c.p.ndimc;
        size_t g[2] = {(w->n + c.p.nwg - 1) / c.p.nwg * threads, total}, l[2] = {threads, 1};
        st = clnpu_enqueue(dev, k, 2, g, l, "clnpu_gemm_wg_grouped");
    }
    clReleaseMemObject(tb); /* the queued launch keeps it alive */
    return st;
}

clnpu_status clnpu_gemm_wg_grouped_counts(clnpu_device *dev, const clnpu_weight_layout *w, clnpu_buffer *counts,
                                          clnpu_buffer *offsets, const clnpu_gemm_args *a, size_t ldx, size_t ldy,
                                          size_t ldr)
{
    wg_choice c;
    clnpu_status st = choose(dev, w, a->epilogue, a->m, true, &c);
    if (st) return st;
    cl_kernel k;
    st = kernel_of(dev, &c, "clnpu_gemm_wg_grouped_counts", &k);
    if (!st) st = grouped_args(k, w, a, ldx, ldy, ldr);
    if (st) return st;
    /* However the m rows fall into segments, each non-empty one adds at most one partial tile. */
    const size_t E = w->count, busy = a->m < E ? a->m : E, tiles = (a->m + busy * (c.p.mwg - 1)) / c.p.mwg;
    SETARG(k, 11, clnpu_mem(counts));
    SETARG(k, 12, clnpu_mem(offsets));
    SETARG(k, 13, (cl_uint)E);
    SETARG(k, 14, (cl_uint)a->m);
    SETARG(k, 15, (cl_uint)w->n);
    SETARG(k, 16, (cl_uint)w->k);
    SETARG(k, 17, (cl_ulong)w->w_stride);
    SETARG(k, 18, (cl_ulong)w->s_stride);
    SETARG(k, 19, (cl_float)a->alpha);
    st = local_args(k, 20, &c, false, a->epilogue == CLNPU_EPILOGUE_SWIGLU);
    if (st) return st;
    const size_t threads = (size_t)c.p.mdimc * c.p.ndimc;
    size_t g[2] = {(w->n + c.p.nwg - 1) / c.p.nwg * threads, tiles}, l[2] = {threads, 1};
    return clnpu_enqueue(dev, k, 2, g, l, "clnpu_gemm_wg_grouped");
}
