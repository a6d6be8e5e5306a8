/* RoPE inverse frequencies and YaRN factors (DeepSeek flavour), cos/sin tables, application. */
#include <math.h>
#include <stdlib.h>

#include "../common/error.h"
#include "clnpu/ops.h"
#include "launch.h"
#include "rope_table.h"


/* g(f, m) = 0.1 m ln f + 1, and 1 for f <= 1 (yarn_get_mscale). */
static double yarn_mscale(double f, double m)
{
    return f <= 1 ? 1.0 : 0.1 * m * log(f) + 1.0;
}

/* Dimension index at which the wavelength equals max_pos / rotations (find_correction_dim). */
static double correction_dim(double rotations, double dim, double base, double max_pos)
{
    return dim * log(max_pos / (rotations * 2 * M_PI)) / (2 * log(base));
}

void clnpu_rope_inv_freq(const clnpu_rope_config *c, double *out)
{
    const size_t half = c->dim / 2;
    for (size_t i = 0; i < half; i++) out[i] = pow(c->theta, -2.0 * (double)i / (double)c->dim);
    if (c->scaling != CLNPU_ROPE_YARN || c->factor <= 1) return;
    double low = floor(correction_dim(c->beta_fast, (double)c->dim, c->theta,
                                      c->original_max_position_embeddings));
    double high = ceil(correction_dim(c->beta_slow, (double)c->dim, c->theta,
                                      c->original_max_position_embeddings));
    if (low < 0) low = 0;
    if (high > (double)c->dim - 1) high = (double)c->dim - 1;
    if (low == high) high += 0.001; /* avoid a division by zero in the ramp */
    for (size_t i = 0; i < half; i++) {
        double ramp = ((double)i - low) / (high - low);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        /* ramp 0: original frequency (extrapolation); 1: divided by factor (interpolation). */
        out[i] = out[i] / c->factor * ramp + out[i] * (1 - ramp);
    }
}

double clnpu_rope_attention_factor(const clnpu_rope_config *c)
{
    if (c->scaling != CLNPU_ROPE_YARN) return 1.0;
    return yarn_mscale(c->factor, c->mscale) / yarn_mscale(c->factor, c->mscale_all_dim);
}

double clnpu_rope_softmax_scale(const clnpu_rope_config *c, size_t qk_head_dim)
{
    double s = 1.0 / sqrt((double)qk_head_dim);
    if (c->scaling == CLNPU_ROPE_YARN && c->mscale_all_dim != 0) {
        double m = yarn_mscale(c->factor, c->mscale_all_dim);
        s *= m * m;
    }
    return s;
}

clnpu_status clnpu_rope_table_create(clnpu_device *dev, const clnpu_rope_config *c, size_t positions,
                                     clnpu_rope_table **out)
{
    *out = NULL;
    if (!c || c->dim < 2 || c->dim % 2 || c->theta <= 0 || !positions)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rope table: need an even dim, theta > 0 and positions");
    const size_t half = c->dim / 2;
    double *inv = malloc(half * sizeof *inv);
    float *tab = malloc(positions * half * 2 * sizeof *tab);
    clnpu_rope_table *t = calloc(1, sizeof *t);
    if (!inv || !tab || !t) {
        free(inv), free(tab), free(t);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for a rope table");
    }
    clnpu_rope_inv_freq(c, inv);
    const double af = clnpu_rope_attention_factor(c);
    for (size_t p = 0; p < positions; p++)
        for (size_t i = 0; i < half; i++) {
            /* Angles in float64: p * inv_freq loses nothing even at 128K positions. */
            double a = (double)p * inv[i];
            tab[2 * (p * half + i)] = (float)(cos(a) * af);
            tab[2 * (p * half + i) + 1] = (float)(sin(a) * af);
        }
    t->dim = c->dim;
    t->positions = positions;
    clnpu_status st = clnpu_buffer_create(dev, positions * half * 2 * sizeof(float), &t->buf);
    if (!st) st = clnpu_buffer_write(t->buf, 0, tab, positions * half * 2 * sizeof(float));
    free(inv);
    free(tab);
    if (st) {
        clnpu_rope_table_destroy(t);
        return st;
    }
    *out = t;
    return CLNPU_OK;
}

void clnpu_rope_table_destroy(clnpu_rope_table *t)
{
    if (!t) return;
    clnpu_buffer_destroy(t->buf);
    free(t);
}

/* One launch over both tensors (heads2 may be 0: x2 is then x and untouched). */
static clnpu_status rope_launch(clnpu_device *dev, const clnpu_rope_table *t, clnpu_view x, size_t heads, size_t hstride,
                                clnpu_view x2, size_t heads2, size_t hstride2, size_t rows, const clnpu_buffer *pos,
                                clnpu_rope_layout layout)
{
    const size_t need = (x.offset + (rows - 1) * x.ld + (heads - 1) * hstride + t->dim) * sizeof(float),
                 need2 = heads2 ? (x2.offset + (rows - 1) * x2.ld + (heads2 - 1) * hstride2 + t->dim) * sizeof(float) : 0;
    if (need > clnpu_buffer_size(x.buf) || need2 > clnpu_buffer_size(x2.buf) || clnpu_buffer_size(pos) < rows * 4)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rope: %zu rows x %zu + %zu heads exceed the buffers", rows, heads,
                          heads2);
    cl_mem mx = clnpu_mem(x.buf), mx2 = clnpu_mem(x2.buf), mt = clnpu_mem(t->buf), mp = clnpu_mem(pos);
    cl_uint off = (cl_uint)x.offset, ld = (cl_uint)x.ld, hs = (cl_uint)hstride, h = (cl_uint)heads,
            off2 = (cl_uint)x2.offset, ld2 = (cl_uint)x2.ld, hs2 = (cl_uint)hstride2, h2 = (cl_uint)heads2,
            d = (cl_uint)t->dim, hsplit = layout == CLNPU_ROPE_HALF_SPLIT, np = (cl_uint)t->positions;
    clnpu_karg a[] = {KARG(mx), KARG(off), KARG(ld), KARG(hs), KARG(h), KARG(mx2), KARG(off2), KARG(ld2),
                      KARG(hs2), KARG(h2), KARG(d), KARG(mt), KARG(mp), KARG(np), KARG(hsplit)};
    /* a row's lanes stride through its pairs: one work-item per row on the cpu family, where a
     * work-group per pair cost more than the rotation */
    size_t l[2] = {clnpu_lanes(dev), 1}, g[2] = {l[0], rows};
    char opts[32];
    return clnpu_launch(dev, "rope.cl", clnpu_lanes_options(dev, NULL, opts, sizeof opts), "clnpu_rope", 2, g, l, a, 15);
}

clnpu_status clnpu_rope_apply(clnpu_device *dev, const clnpu_rope_table *t, clnpu_view x,
                              size_t rows, size_t heads, size_t hstride, const clnpu_buffer *pos,
                              clnpu_rope_layout layout)
{
    if (!t || !x.buf || !pos) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rope: NULL argument");
    if (!rows || !heads) return CLNPU_OK;
    return rope_launch(dev, t, x, heads, hstride, x, 0, 0, rows, pos, layout);
}

clnpu_status clnpu_rope_apply2(clnpu_device *dev, const clnpu_rope_table *t, clnpu_view x, size_t heads,
                               size_t hstride, clnpu_view x2, size_t heads2, size_t hstride2, size_t rows,
                               const clnpu_buffer *pos, clnpu_rope_layout layout)
{
    if (!t || !x.buf || !x2.buf || !pos) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rope: NULL argument");
    if (!rows || !heads || !heads2) { /* one side empty: the other alone */
        clnpu_status st = clnpu_rope_apply(dev, t, x, rows, heads, hstride, pos, layout);
        return st ? st : clnpu_rope_apply(dev, t, x2, rows, heads2, hstride2, pos, layout);
    }
    return rope_launch(dev, t, x, heads, hstride, x2, heads2, hstride2, rows, pos, layout);
}
