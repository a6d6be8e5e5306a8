/* GEMM / GEMV / grouped GEMM on a device: weight upload in panel layout, variant choice from the
 * target profile, launches. */
#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "clnpu/capability.h"
#include "clnpu/gemm.h"
#include "clnpu/program.h"
#include "clnpu/tuning.h"
#include "gemm_internal.h"
#include "gemm_params.h"
#include "launch.h"

struct clnpu_weight {
    clnpu_device *dev;
    clnpu_dtype dtype;
    size_t n, k, count, group_k;
    bool swiglu;
    unsigned nr;          /* panel width the weights were packed with */
    size_t panels;        /* packed panels per matrix (2x output panels for SwiGLU) */
    size_t w_stride;      /* elements per matrix */
    size_t s_stride;      /* scale floats per matrix */
    clnpu_buffer *w, *s;  /* s may be NULL for unscaled types */
};

clnpu_gemm_args clnpu_gemm_args_default(void)
{
    clnpu_gemm_args a;
    memset(&a, 0, sizeof a);
    a.alpha = 1.0f;
    return a;
}

static clnpu_status upload(clnpu_device *dev, const clnpu_weight_desc *a, const clnpu_weight_desc *b,
                           size_t count, clnpu_weight **out)
{
    *out = NULL;
    if (!dev || !a || !count) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "weight upload: no matrices");
    const clnpu_weight_desc *first = &a[0];
    for (size_t i = 0; i < count; i++) {
        for (int side = 0; side < (b ? 2 : 1); side++) {
            const clnpu_weight_desc *d = side ? &b[i] : &a[i];
            clnpu_status st = clnpu_weight_desc_check(d);
            if (st) return clnpu_fail_context(st, "matrix %zu%s", i, b ? (side ? " (up)" : " (gate)") : "");
            if (d->dtype != first->dtype || d->n != first->n || d->k != first->k ||
                d->group_k != first->group_k)
                return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT,
                                  "matrix %zu: %s [%zu, %zu] differs from matrix 0 (%s [%zu, %zu]); "
                                  "a weight group needs one dtype and shape", i,
                                  clnpu_dtype_name(d->dtype), d->n, d->k,
                                  clnpu_dtype_name(first->dtype), first->n, first->k);
        }
    }
    if (first->k > 0xffffffffu / 2 || first->n > 0xffffffffu / 2)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "matrix [%zu, %zu] too large", first->n, first->k);
    clnpu_weight *w = calloc(1, sizeof *w);
    if (!w) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    w->dev = dev;
    w->dtype = first->dtype;
    w->n = first->n;
    w->k = first->k;
    w->count = count;
    w->group_k = first->group_k;
    w->swiglu = b != NULL;
    w->nr = clnpu_gemm_panel_width(dev);
    const size_t P = (w->n + w->nr - 1) / w->nr, es = clnpu_dtype_size(w->dtype);
    /* an even panel count, so a work-item can always take two adjacent panels (NB = 2); SwiGLU
     * interleaves gate and up panels, which pairs them already */
    w->panels = b ? 2 * P : P + (P & 1);
    w->w_stride = w->panels * w->k * w->nr;
    const size_t spp = clnpu_pack_scale_count(first, w->nr) / P; /* scale floats per panel */
    w->s_stride = w->panels * spp;

    const size_t wbytes = w->w_stride * es * count, sbytes = w->s_stride * sizeof(float) * count;
    unsigned char *hw = malloc(wbytes);
    float *hs = sbytes ? malloc(sbytes) : NULL;
    clnpu_status st = CLNPU_OK;
    if (!hw || (sbytes && !hs)) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory packing weights");
    for (size_t i = 0; !st && i < count; i++) {
        for (size_t q = 0; q < w->panels; q++) {
            /* SwiGLU pairs gate and up panels, their rows alternating, so one work-item streams
             * both in one pass (kernels-cl/gemm.cl); scales stay per panel. */
            const clnpu_weight_desc *d = b ? ((q & 1) ? &b[i] : &a[i]) : &a[i];
            const size_t p = b ? q / 2 : q;
            const size_t at = b ? (q & ~(size_t)1) * w->k * w->nr + (q & 1) * w->nr : q * w->k * w->nr;
            clnpu_pack_panel(d, p, w->nr, b ? 2 * w->nr : w->nr, hw + (i * w->w_stride + at) * es,
                             hs ? hs + i * w->s_stride + q * spp : NULL);
        }
    }
    if (!st) st = clnpu_buffer_create(dev, wbytes, &w->w);
    if (!st) st = clnpu_buffer_write(w->w, 0, hw, wbytes);
    if (!st && sbytes) st = clnpu_buffer_create(dev, sbytes, &w->s);
    if (!st && sbytes) st = clnpu_buffer_write(w->s, 0, hs, sbytes);
    free(hw);
    free(hs);
    if (st) {
        clnpu_weight_destroy(w);
        return clnpu_fail_context(st, "uploading %zu %s weight%s [%zu, %zu]", count,
                                  clnpu_dtype_name(first->dtype), count > 1 ? "s" : "", first->n, first->k);
    }
    *out = w;
    return CLNPU_OK;
}

clnpu_status clnpu_weight_upload(clnpu_device *dev, const clnpu_weight_desc *mats, size_t count,
                                 clnpu_weight **out)
{
    return upload(dev, mats, NULL, count, out);
}

clnpu_status clnpu_weight_upload_swiglu(clnpu_device *dev, const clnpu_weight_desc *gate,
                                        const clnpu_weight_desc *up, size_t count, clnpu_weight **out)
{
    if (!up) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "SwiGLU upload: no up projection");
    return upload(dev, gate, up, count, out);
}

void clnpu_weight_destroy(clnpu_weight *w)
{
    if (!w) return;
    clnpu_buffer_destroy(w->w);
    clnpu_buffer_destroy(w->s);
    free(w);
}

void clnpu_weight_layout_of(const clnpu_weight *w, clnpu_weight_layout *out)
{
    *out = (clnpu_weight_layout){w->dtype, w->n, w->k, w->count, w->group_k, w->swiglu, w->nr,
                                 w->w_stride, w->s_stride, w->w, w->s};
}

/* The capability table chose the work-group family for this device. */
static bool wg_family(const clnpu_device *dev)
{
    return clnpu_device_capability(dev)->family == CLNPU_KERNEL_FAMILY_WG;
}

clnpu_dtype clnpu_weight_dtype(const clnpu_weight *w) { return w->dtype; }
size_t clnpu_weight_n(const clnpu_weight *w) { return w->n; }
size_t clnpu_weight_k(const clnpu_weight *w) { return w->k; }
size_t clnpu_weight_count(const clnpu_weight *w) { return w->count; }

size_t clnpu_weight_device_bytes(const clnpu_weight *w)
{
    return clnpu_buffer_size(w->w) + (w->s ? clnpu_buffer_size(w->s) : 0);
}

/* The launch's parameters: device-derived defaults, the tuning entry for its shape class, and
 * under --verbose a line naming each one's source. */
static void choose(clnpu_device *dev, const clnpu_weight *w, clnpu_epilogue ep, size_t m, bool grouped,
                   clnpu_gemm_params *out)
{
    clnpu_gemm_shape s = {w->dtype, m, w->n, w->k, w->nr, ep == CLNPU_EPILOGUE_SWIGLU, grouped};
    const char *cls = clnpu_gemm_class(&s);
    const clnpu_tuning_entry *te = clnpu_device_tuning_lookup(dev, "gemm", clnpu_dtype_name(w->dtype), cls);
    clnpu_gemm_params_choose(dev, &s, te, out);
    char tag[160], desc[320];
    snprintf(tag, sizeof tag, "gemm %s %s%s m%zu n%zu k%zu", clnpu_dtype_name(w->dtype), cls, s.pair ? " swiglu" : "", m,
             w->n, w->k);
    if (clnpu_device_tuning_say_once(dev, tag)) {
        clnpu_gemm_params_describe(out, desc, sizeof desc);
        fprintf(stderr, "clnpu: %s: %s\n", tag, desc);
    }
}

/* The program variant for this weight, epilogue and parameters. */
static clnpu_status variant(clnpu_device *dev, const clnpu_weight *w, clnpu_epilogue ep, const clnpu_gemm_params *gp,
                            const char *const *kernels, clnpu_program **out)
{
    char opts[320];
    const bool no_ksplit = clnpu_quirk_disabled(clnpu_device_get_info(dev), "gemm.ksplit", NULL);
    const int *v = gp->v;
    int n = snprintf(opts, sizeof opts,
                     "-DCLNPU_GEMM_WTYPE=%d -DCLNPU_GEMM_QGROUP=%zu -DCLNPU_GEMM_EPILOGUE=%d "
                     "-DCLNPU_GEMM_MR=%d -DCLNPU_GEMM_NR=%u",
                     (int)w->dtype, w->dtype == CLNPU_DTYPE_I8 ? w->group_k : (size_t)128, (int)ep,
                     v[CLNPU_GP_MR], w->nr);
    int ksplit = no_ksplit ? 0 : v[CLNPU_GP_KSPLIT];
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if (n > 0 && (size_t)n < sizeof opts) n += snprintf(opts + n, sizeof opts - (size_t)n, __VA_ARGS__); \
    } while (0)
    if (v[CLNPU_GP_KACC] > 0) ADD(" -DCLNPU_GEMM_KACC=%d", v[CLNPU_GP_KACC]);
    if (ksplit >= 0) ADD(" -DCLNPU_GEMM_KSPLIT=%d", ksplit);
    if (v[CLNPU_GP_NB] == 2) ADD(" -DCLNPU_GEMM_NB=2");
    /* KC 0 = all of K in one block: any value >= K does that without a variant per K */
    if (v[CLNPU_GP_MB] > 1) ADD(" -DCLNPU_GEMM_MB=%d -DCLNPU_GEMM_KC=%d", v[CLNPU_GP_MB],
                                v[CLNPU_GP_KC] > 0 ? v[CLNPU_GP_KC] : 1 << 30);
#undef ADD
    return clnpu_program_get_kernels(dev, "gemm.cl", opts, kernels, out); /* only the launched kernels */
}

static clnpu_status check_args(const clnpu_weight *w, const clnpu_gemm_args *a, size_t *ldx,
                               size_t *ldy, size_t *ldr)
{
    if (!a || !a->x || !a->y)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "gemm: X and Y buffers are required");
    if (a->epilogue == CLNPU_EPILOGUE_SWIGLU && !w->swiglu)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT,
                          "gemm: the SwiGLU epilogue needs a weight from clnpu_weight_upload_swiglu");
    if (a->epilogue != CLNPU_EPILOGUE_SWIGLU && w->swiglu)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "gemm: a SwiGLU weight needs the SwiGLU epilogue");
    if (a->epilogue == CLNPU_EPILOGUE_RESIDUAL && !a->residual)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "gemm: residual epilogue without a residual buffer");
    *ldx = a->ldx ? a->ldx : w->k;
    *ldy = a->ldy ? a->ldy : w->n;
    *ldr = a->ldr ? a->ldr : *ldy;
    if (*ldx < w->k || *ldy < w->n || *ldr < w->n)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "gemm: row stride smaller than the row");
    if (a->m == 0) return CLNPU_OK;
    size_t xneed = (a->x_offset + (a->m - 1) * *ldx + w->k) * sizeof(float);
    size_t yneed = (a->y_offset + (a->m - 1) * *ldy + w->n) * sizeof(float);
    if (xneed > clnpu_buffer_size(a->x))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "gemm: X needs %zu bytes, buffer has %zu", xneed,
                          clnpu_buffer_size(a->x));
    if (yneed > clnpu_buffer_size(a->y))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "gemm: Y needs %zu bytes, buffer has %zu", yneed,
                          clnpu_buffer_size(a->y));
    if (a->residual) {
        size_t rneed = (a->r_offset + (a->m - 1) * *ldr + w->n) * sizeof(float);
        if (rneed > clnpu_buffer_size(a->residual))
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "gemm: residual needs %zu bytes, buffer has %zu",
                              rneed, clnpu_buffer_size(a->residual));
    }
    return CLNPU_OK;
}

/* Local sizes from the profile's work-group shape; global sizes rounded up to them. */
static void launch_dims(const clnpu_device *dev, size_t g0, size_t g1, size_t g2, size_t global[3],
                        size_t local[3])
{
    const clnpu_kernel_params *kp = &clnpu_device_get_profile(dev)->kernel;
    size_t l0 = kp->wg_x > 0 ? (size_t)kp->wg_x : 1, l1 = kp->wg_y > 0 ? (size_t)kp->wg_y : 1;
    size_t maxwg = clnpu_device_get_info(dev)->max_work_group_size;
    while (l0 * l1 > maxwg && l1 > 1) l1 /= 2;
    while (l0 * l1 > maxwg && l0 > 1) l0 /= 2;
    if (l0 > g0) l0 = 1; /* tiny grids: do not launch mostly idle groups */
    if (l1 > g1) l1 = 1;
    local[0] = l0, local[1] = l1, local[2] = 1;
    global[0] = (g0 + l0 - 1) / l0 * l0;
    global[1] = (g1 + l1 - 1) / l1 * l1;
    global[2] = g2;
}

#define SETARG(k, i, v)                                                                            \
    do {                                                                                           \
        __typeof__(v) v_ = (v);                                                                    \
        cl_int e_ = clSetKernelArg(k, i, sizeof v_, &v_);                                          \
        if (e_) return clnpu_fail_cl(e_, "clSetKernelArg", "setting GEMM arguments");              \
    } while (0)

static cl_mem mem_or_null(const clnpu_buffer *b)
{
    return b ? (cl_mem)clnpu_buffer_cl_mem(b) : NULL;
}

static unsigned choose_splits(const clnpu_device *dev, const clnpu_weight *w, const clnpu_gemm_args *a,
                              size_t items, size_t ldy)
{
    if (a->split_k == 1 || a->epilogue == CLNPU_EPILOGUE_SWIGLU || !a->workspace) return 1;
    unsigned s = a->split_k;
    if (!s) {
        /* Split only when the grid would leave compute units idle and K is long. */
        size_t want = 4 * (size_t)clnpu_device_get_info(dev)->compute_units;
        if (items >= want || w->k < 1024) return 1;
        s = (unsigned)((want + items - 1) / items);
        if (s > w->k / 256) s = (unsigned)(w->k / 256);
    }
    if (s < 2) return 1;
    while (s > 1 && (size_t)s * a->m * w->n * sizeof(float) > clnpu_buffer_size(a->workspace)) s--;
    (void)ldy;
    return s;
}

clnpu_status clnpu_gemm(clnpu_device *dev, const clnpu_weight *w, size_t matrix, const clnpu_gemm_args *a)
{
    size_t ldx = 0, ldy = 0, ldr = 0;
    clnpu_status st = check_args(w, a, &ldx, &ldy, &ldr);
    if (st) return st;
    if (matrix >= w->count)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "gemm: matrix %zu of a group of %zu", matrix, w->count);
    if (a->m == 0) return CLNPU_OK;
    clnpu_weight_layout wl;
    if (wg_family(dev)) return clnpu_weight_layout_of(w, &wl), clnpu_gemm_wg(dev, &wl, matrix, a, ldx, ldy, ldr);
    clnpu_gemm_params gp;
    choose(dev, w, a->epilogue, a->m, false, &gp);
    const unsigned nb = (unsigned)gp.v[CLNPU_GP_NB], tile = (unsigned)(gp.v[CLNPU_GP_MR] * gp.v[CLNPU_GP_MB]);
    const size_t out_panels = (w->n + w->nr - 1) / w->nr, rowblocks = (a->m + tile - 1) / tile;
    const size_t items0 = (out_panels + nb - 1) / nb;
    unsigned splits = choose_splits(dev, w, a, items0 * rowblocks, ldy);
    clnpu_epilogue ep = splits > 1 ? CLNPU_EPILOGUE_NONE : a->epilogue;
    clnpu_program *prog;
    const char *only[] = {"clnpu_gemm", splits > 1 ? "clnpu_gemm_splitk_reduce" : NULL, NULL};
    st = variant(dev, w, ep, &gp, only, &prog);
    if (st || clnpu_device_recording(dev)) return st; /* a dry pass only lists programs */
    cl_kernel k;
    st = clnpu_program_kernel(prog, "clnpu_gemm", (void **)&k);
    if (st) return st;
    /* Quantised scale blocks must not straddle split boundaries. */
    size_t kchunk = (w->k + splits - 1) / splits;
    if (splits > 1) kchunk = (kchunk + 127) / 128 * 128;
    if (splits > 1) splits = (unsigned)((w->k + kchunk - 1) / kchunk);
    cl_mem r = a->residual ? mem_or_null(a->residual) : mem_or_null(a->y);
    cl_mem s = w->s ? mem_or_null(w->s) : mem_or_null(w->w);
    SETARG(k, 0, mem_or_null(a->x));
    SETARG(k, 1, (cl_uint)a->x_offset);
    SETARG(k, 2, (cl_uint)ldx);
    SETARG(k, 3, mem_or_null(w->w));
    SETARG(k, 4, (cl_ulong)(matrix * w->w_stride));
    SETARG(k, 5, s);
    SETARG(k, 6, (cl_ulong)(matrix * w->s_stride));
    SETARG(k, 7, splits > 1 ? mem_or_null(a->workspace) : mem_or_null(a->y));
    SETARG(k, 8, (cl_uint)(splits > 1 ? 0 : a->y_offset));
    SETARG(k, 9, (cl_uint)(splits > 1 ? w->n : ldy));
    SETARG(k, 10, r);
    SETARG(k, 11, (cl_uint)a->r_offset);
    SETARG(k, 12, (cl_uint)ldr);
    SETARG(k, 13, (cl_uint)a->m);
    SETARG(k, 14, (cl_uint)w->n);
    SETARG(k, 15, (cl_uint)w->k);
    SETARG(k, 16, (cl_uint)kchunk);
    SETARG(k, 17, (cl_float)a->alpha);
    /* Small M is weight-bound: let the row blocks of one panel run back to back so the panel
     * is read from memory once. Large M streams X instead and keeps it in cache per panel. */
    const cl_uint rows_first = rowblocks > 1 && a->m <= 64;
    SETARG(k, 18, rows_first);
    size_t global[3], local[3];
    if (rows_first) launch_dims(dev, rowblocks, items0, splits, global, local);
    else launch_dims(dev, items0, rowblocks, splits, global, local);
    st = clnpu_enqueue(dev, k, 3, global, local, a->m <= 8 ? "clnpu_gemv" : "clnpu_gemm");
    if (st || splits == 1) return st;

    cl_kernel red;
    st = clnpu_program_kernel(prog, "clnpu_gemm_splitk_reduce", (void **)&red);
    if (st) return st;
    SETARG(red, 0, mem_or_null(a->workspace));
    SETARG(red, 1, (cl_uint)splits);
    SETARG(red, 2, mem_or_null(a->y));
    SETARG(red, 3, (cl_uint)a->y_offset);
    SETARG(red, 4, (cl_uint)ldy);
    SETARG(red, 5, r);
    SETARG(red, 6, (cl_uint)a->r_offset);
    SETARG(red, 7, (cl_uint)ldr);
    SETARG(red, 8, (cl_uint)a->m);
    SETARG(red, 9, (cl_uint)w->n);
    SETARG(red, 10, (cl_uint)(a->epilogue == CLNPU_EPILOGUE_RESIDUAL));
    size_t rl[2] = {64, 1}, rg[2] = {(w->n + 63) / 64 * 64, a->m};
    return clnpu_enqueue(dev, red, 2, rg, rl, "clnpu_gemm_splitk_reduce");
}

/* Arguments 0-10 of both grouped kernels: X, its offset and stride, the packed weights and
 * scales, Y, R (each with offset and stride). */
static clnpu_status grouped_common_args(cl_kernel k, const clnpu_weight *w, const clnpu_gemm_args *a, size_t ldx,
                                        size_t ldy, size_t ldr)
{
    cl_mem r = a->residual ? mem_or_null(a->residual) : mem_or_null(a->y);
    cl_mem s = w->s ? mem_or_null(w->s) : mem_or_null(w->w);
    SETARG(k, 0, mem_or_null(a->x));
    SETARG(k, 1, (cl_uint)a->x_offset);
    SETARG(k, 2, (cl_uint)ldx);
    SETARG(k, 3, mem_or_null(w->w));
    SETARG(k, 4, s);
    SETARG(k, 5, mem_or_null(a->y));
    SETARG(k, 6, (cl_uint)a->y_offset);
    SETARG(k, 7, (cl_uint)ldy);
    SETARG(k, 8, r);
    SETARG(k, 9, (cl_uint)a->r_offset);
    SETARG(k, 10, (cl_uint)ldr);
    return CLNPU_OK;
}

clnpu_status clnpu_gemm_grouped(clnpu_device *dev, const clnpu_weight *w, const clnpu_gemm_segment *segs,
                                size_t count, const clnpu_gemm_args *a)
{
    size_t ldx = 0, ldy = 0, ldr = 0;
    clnpu_status st = check_args(w, a, &ldx, &ldy, &ldr);
    if (st) return st;
    /* Tiles of at most MR x MB rows; the row block height follows the largest segment. */
    size_t maxrows = 0, total = 0;
    for (size_t i = 0; i < count; i++) {
        if (segs[i].matrix >= w->count)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "grouped gemm: segment %zu uses matrix %zu "
                              "of a group of %zu", i, segs[i].matrix, w->count);
        if (segs[i].row + segs[i].rows > a->m)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "grouped gemm: segment %zu rows [%zu, %zu) "
                              "outside the %zu rows of X", i, segs[i].row, segs[i].row + segs[i].rows, a->m);
        if (segs[i].rows > maxrows) maxrows = segs[i].rows;
    }
    if (!maxrows) return CLNPU_OK;
    clnpu_weight_layout wl;
    if (wg_family(dev)) return clnpu_weight_layout_of(w, &wl), clnpu_gemm_wg_grouped(dev, &wl, segs, count, a, ldx, ldy, ldr);
    clnpu_gemm_params gp;
    choose(dev, w, a->epilogue, maxrows, true, &gp);
    const size_t mr = (size_t)gp.v[CLNPU_GP_MR] * (size_t)gp.v[CLNPU_GP_MB]; /* rows per tile */
    for (size_t i = 0; i < count; i++) total += (segs[i].rows + mr - 1) / mr;
    cl_int *tiles = malloc(total * 3 * sizeof *tiles);
    if (!tiles) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    size_t t = 0;
    for (size_t i = 0; i < count; i++)
        for (size_t r = 0; r < segs[i].rows; r += mr) {
            tiles[3 * t] = (cl_int)segs[i].matrix;
            tiles[3 * t + 1] = (cl_int)(segs[i].row + r);
            tiles[3 * t + 2] = (cl_int)(segs[i].rows - r < mr ? segs[i].rows - r : mr);
            t++;
        }
    clnpu_program *prog;
    const char *only[] = {"clnpu_gemm_grouped", NULL};
    st = variant(dev, w, a->epilogue, &gp, only, &prog);
    if (!st && clnpu_device_recording(dev)) return free(tiles), CLNPU_OK;
    cl_kernel k = NULL;
    if (!st) st = clnpu_program_kernel(prog, "clnpu_gemm_grouped", (void **)&k);
    cl_int err = 0;
    cl_mem tb = NULL;
    if (!st) {
        /* The tile table is small; a buffer copied at creation keeps the call asynchronous. */
        tb = clCreateBuffer(clnpu_device_cl_context(dev), CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                            total * 3 * sizeof *tiles, tiles, &err);
        if (!tb) st = clnpu_fail_cl(err, "clCreateBuffer", "uploading the grouped GEMM tile table");
    }
    free(tiles);
    if (st) return st;
    clnpu_status set = grouped_common_args(k, w, a, ldx, ldy, ldr);
#define GSET(i, v)                                                                                 \
    do {                                                                                           \
        __typeof__(v) v_ = (v);                                                                    \
        if (!set && (err = clSetKernelArg(k, i, sizeof v_, &v_)))                                  \
            set = clnpu_fail_cl(err, "clSetKernelArg", "setting grouped GEMM arguments");          \
    } while (0)
    GSET(11, tb);
    GSET(12, (cl_uint)total);
    GSET(13, (cl_uint)w->n);
    GSET(14, (cl_uint)w->k);
    GSET(15, (cl_ulong)w->w_stride);
    GSET(16, (cl_ulong)w->s_stride);
    GSET(17, (cl_float)a->alpha);
#undef GSET
    if (!set) {
        size_t global[3], local[3];
        launch_dims(dev, (w->n + w->nr - 1) / w->nr, total, 1, global, local);
        set = clnpu_enqueue(dev, k, 2, global, local, "clnpu_gemm_grouped");
    }
    clReleaseMemObject(tb); /* released once the queued launch no longer needs it */
    return set;
}

clnpu_status clnpu_gemm_grouped_counts(clnpu_device *dev, const clnpu_weight *w, clnpu_buffer *counts,
                                       clnpu_buffer *offsets, size_t max_rows, const clnpu_gemm_args *a)
{
    size_t ldx = 0, ldy = 0, ldr = 0;
    clnpu_status st = check_args(w, a, &ldx, &ldy, &ldr);
    if (st) return st;
    if (!counts || !offsets)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "grouped gemm: counts and offsets buffers are required");
    const size_t E = w->count;
    if (clnpu_buffer_size(counts) < E * sizeof(cl_int) || clnpu_buffer_size(offsets) < E * sizeof(cl_int))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "grouped gemm: counts / offsets hold fewer than the %zu "
                          "matrices' ints", E);
    if (a->m == 0) return CLNPU_OK;
    if (a->m > 0xffffffffu) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "grouped gemm: %zu rows", a->m);
    clnpu_weight_layout wl;
    if (wg_family(dev))
        return clnpu_weight_layout_of(w, &wl), clnpu_gemm_wg_grouped_counts(dev, &wl, counts, offsets, a, ldx, ldy, ldr);
    /* The counts are on the device; tiles are sized for twice the mean rows per matrix (a tile
     * computes all its MR rows, so sizing for the largest possible segment would multiply a
     * decode batch's FMAs by MR / rows: 8 sequences over 64 experts is ~1 row each). */
    size_t hint = max_rows ? max_rows : a->m;
    const size_t mean2 = 2 * ((a->m + E - 1) / E);
    if (mean2 < hint) hint = mean2;
    clnpu_gemm_params gp;
    choose(dev, w, a->epilogue, hint, true, &gp);
    const size_t mr = (size_t)gp.v[CLNPU_GP_MR] * (size_t)gp.v[CLNPU_GP_MB]; /* rows per tile */
    /* However the m rows fall into segments, each non-empty one adds at most one partial tile. */
    const size_t busy = a->m < E ? a->m : E, tiles = (a->m + busy * (mr - 1)) / mr;
    clnpu_program *prog;
    const char *only[] = {"clnpu_gemm_grouped_counts", NULL};
    st = variant(dev, w, a->epilogue, &gp, only, &prog);
    if (!st && clnpu_device_recording(dev)) return CLNPU_OK;
    cl_kernel k = NULL;
    if (!st) st = clnpu_program_kernel(prog, "clnpu_gemm_grouped_counts", (void **)&k);
    if (st) return st;
    st = grouped_common_args(k, w, a, ldx, ldy, ldr);
    if (st) return st;
    SETARG(k, 11, mem_or_null(counts));
    SETARG(k, 12, mem_or_null(offsets));
    SETARG(k, 13, (cl_uint)E);
    SETARG(k, 14, (cl_uint)a->m);
    SETARG(k, 15, (cl_uint)w->n);
    SETARG(k, 16, (cl_uint)w->k);
    SETARG(k, 17, (cl_ulong)w->w_stride);
    SETARG(k, 18, (cl_ulong)w->s_stride);
    SETARG(k, 19, (cl_float)a->alpha);
    size_t global[3], local[3];
    launch_dims(dev, (w->n + w->nr - 1) / w->nr, tiles, 1, global, local);
    return clnpu_enqueue(dev, k, 2, global, local, "clnpu_gemm_grouped");
}
