/* Weight formats on the host: quantisation (int8, fp8 e4m3), widening to f32, and repacking
 * checkpoint-layout matrices into the kernels' panel layout (kernels-cl/gemm.cl). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "clnpu/gemm.h"
#include "gemm_internal.h"

clnpu_status clnpu_quantize_i8(const float *w, size_t n, size_t k, size_t group_k, int8_t *q,
                               float *scales)
{
    if (!w || !q || !scales || !n || !k)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_quantize_i8: empty or NULL input");
    size_t g = group_k ? group_k : k, ng = (k + g - 1) / g;
    for (size_t i = 0; i < n; i++) {
        for (size_t b = 0; b < ng; b++) {
            size_t k0 = b * g, k1 = k0 + g < k ? k0 + g : k;
            float amax = 0;
            for (size_t j = k0; j < k1; j++) amax = fmaxf(amax, fabsf(w[i * k + j]));
            /* Symmetric, 127 levels; an all-zero group keeps scale 1 so dequantising is exact. */
            float s = amax > 0 ? amax / 127.0f : 1.0f;
            scales[i * ng + b] = s;
            for (size_t j = k0; j < k1; j++) {
                float v = nearbyintf(w[i * k + j] / s);
                q[i * k + j] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
            }
        }
    }
    return CLNPU_OK;
}

clnpu_status clnpu_quantize_fp8(const float *w, size_t n, size_t k, uint8_t *q, float *scales)
{
    if (!w || !q || !scales || !n || !k)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_quantize_fp8: empty or NULL input");
    const size_t B = CLNPU_FP8_BLOCK, nb = (n + B - 1) / B, kb = (k + B - 1) / B;
    for (size_t bi = 0; bi < nb; bi++) {
        for (size_t bj = 0; bj < kb; bj++) {
            size_t i1 = (bi + 1) * B < n ? (bi + 1) * B : n, j1 = (bj + 1) * B < k ? (bj + 1) * B : k;
            float amax = 0;
            for (size_t i = bi * B; i < i1; i++)
                for (size_t j = bj * B; j < j1; j++) amax = fmaxf(amax, fabsf(w[i * k + j]));
            /* Map the block's largest magnitude to 448, e4m3's largest finite value. */
            float s = amax > 0 ? amax / 448.0f : 1.0f;
            scales[bi * kb + bj] = s;
            for (size_t i = bi * B; i < i1; i++)
                for (size_t j = bj * B; j < j1; j++) q[i * k + j] = clnpu_f32_to_fp8e4m3(w[i * k + j] / s);
        }
    }
    return CLNPU_OK;
}

/* Scale of element (i, j) of a quantised matrix, 1 for unscaled types. */
static float scale_of(const clnpu_weight_desc *d, size_t i, size_t j)
{
    if (d->dtype == CLNPU_DTYPE_I8) {
        if (!d->group_k) return d->scales[i];
        size_t ng = (d->k + d->group_k - 1) / d->group_k;
        return d->scales[i * ng + j / d->group_k];
    }
    if (d->dtype == CLNPU_DTYPE_FP8_E4M3) {
        size_t kb = (d->k + CLNPU_FP8_BLOCK - 1) / CLNPU_FP8_BLOCK;
        return d->scales[(i / CLNPU_FP8_BLOCK) * kb + j / CLNPU_FP8_BLOCK];
    }
    return 1.0f;
}

float clnpu_weight_desc_element(const clnpu_weight_desc *d, size_t i, size_t j)
{
    /* Checkpoint data is mapped straight from the file: safetensors does not align tensors, so
     * every element is read with memcpy. */
    const size_t idx = i * d->k + j;
    const unsigned char *p = (const unsigned char *)d->data + idx * clnpu_dtype_size(d->dtype);
    float f;
    uint16_t h;
    switch (d->dtype) {
    case CLNPU_DTYPE_F32: memcpy(&f, p, 4); return f;
    case CLNPU_DTYPE_BF16: memcpy(&h, p, 2); return clnpu_bf16_to_f32(h);
    case CLNPU_DTYPE_F16: memcpy(&h, p, 2); return clnpu_f16_to_f32(h);
    case CLNPU_DTYPE_I8: return (float)(int8_t)p[0] * scale_of(d, i, j);
    case CLNPU_DTYPE_FP8_E4M3: return clnpu_fp8e4m3_to_f32(p[0]) * scale_of(d, i, j);
    default: return NAN;
    }
}

clnpu_status clnpu_weight_desc_check(const clnpu_weight_desc *d)
{
    if (!d || !d->data || !d->n || !d->k)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "weight: empty matrix or no data");
    switch (d->dtype) {
    case CLNPU_DTYPE_F32: case CLNPU_DTYPE_BF16: case CLNPU_DTYPE_F16: return CLNPU_OK;
    case CLNPU_DTYPE_I8:
    case CLNPU_DTYPE_FP8_E4M3:
        if (!d->scales)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "weight [%zu, %zu] %s: scales are required",
                              d->n, d->k, clnpu_dtype_name(d->dtype));
        return CLNPU_OK;
    default:
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "weight dtype %s cannot be a GEMM weight",
                          clnpu_dtype_name(d->dtype) ? clnpu_dtype_name(d->dtype) : "?");
    }
}

clnpu_status clnpu_weight_desc_to_f32(const clnpu_weight_desc *d, float *out)
{
    clnpu_status st = clnpu_weight_desc_check(d);
    if (st) return st;
    for (size_t i = 0; i < d->n; i++)
        for (size_t j = 0; j < d->k; j++) out[i * d->k + j] = clnpu_weight_desc_element(d, i, j);
    return CLNPU_OK;
}

size_t clnpu_pack_scale_count(const clnpu_weight_desc *d, size_t nr)
{
    size_t P = (d->n + nr - 1) / nr;
    if (d->dtype == CLNPU_DTYPE_I8)
        return P * nr * (d->group_k ? (d->k + d->group_k - 1) / d->group_k : 1);
    if (d->dtype == CLNPU_DTYPE_FP8_E4M3) return P * ((d->k + CLNPU_FP8_BLOCK - 1) / CLNPU_FP8_BLOCK);
    return 0;
}

/* Panel p of matrix d into dst_w: K rows of nr values, `stride` elements apart (nr, or 2 nr for
 * a SwiGLU pair, whose gate and up rows alternate). Padding columns are zero (their scales too,
 * so they can never produce NaN); so is a whole padding panel past the last column. */
void clnpu_pack_panel(const clnpu_weight_desc *d, size_t p, size_t nr, size_t stride, void *dst_w, float *dst_s)
{
    const size_t es = clnpu_dtype_size(d->dtype), K = d->k;
    unsigned char *dw = dst_w;
    const unsigned char *src = d->data;
    for (size_t kk = 0; kk < K; kk++) {
        for (size_t j = 0; j < nr; j++) {
            size_t i = p * nr + j;
            unsigned char *o = dw + (kk * stride + j) * es;
            if (i < d->n) memcpy(o, src + (i * K + kk) * es, es);
            else memset(o, 0, es);
        }
    }
    if (!dst_s) return;
    if (d->dtype == CLNPU_DTYPE_I8) {
        size_t ng = d->group_k ? (K + d->group_k - 1) / d->group_k : 1;
        for (size_t g = 0; g < ng; g++)
            for (size_t j = 0; j < nr; j++) {
                size_t i = p * nr + j;
                dst_s[g * nr + j] = i < d->n ? d->scales[i * ng + g] : 0.0f;
            }
    } else if (d->dtype == CLNPU_DTYPE_FP8_E4M3) {
        size_t kb = (K + CLNPU_FP8_BLOCK - 1) / CLNPU_FP8_BLOCK, nb = (p * nr) / CLNPU_FP8_BLOCK;
        for (size_t b = 0; b < kb; b++) dst_s[b] = p * nr < d->n ? d->scales[nb * kb + b] : 0.0f;
    }
}

/* scale floats of d: per row (int8: per group of the row) or per 128 x 128 block (fp8) */
static size_t scale_floats(const clnpu_weight_desc *d)
{
    if (d->dtype == CLNPU_DTYPE_FP8_E4M3)
        return (d->n + CLNPU_FP8_BLOCK - 1) / CLNPU_FP8_BLOCK * ((d->k + CLNPU_FP8_BLOCK - 1) / CLNPU_FP8_BLOCK);
    if (d->dtype == CLNPU_DTYPE_I8) return d->n * (d->group_k ? (d->k + d->group_k - 1) / d->group_k : 1);
    return 0;
}

bool clnpu_weight_desc_stackable(const clnpu_weight_desc *a, const clnpu_weight_desc *b)
{
    return a->dtype == b->dtype && a->k == b->k && a->group_k == b->group_k && !a->scales == !b->scales &&
           (a->dtype != CLNPU_DTYPE_FP8_E4M3 || a->n % CLNPU_FP8_BLOCK == 0);
}

size_t clnpu_weight_desc_stack_scales(const clnpu_weight_desc *a, const clnpu_weight_desc *b)
{
    return a->scales ? scale_floats(a) + scale_floats(b) : 0;
}

void clnpu_weight_desc_stack(const clnpu_weight_desc *a, const clnpu_weight_desc *b, void *out_w, float *out_s,
                             clnpu_weight_desc *out)
{
    const size_t es = clnpu_dtype_size(a->dtype);
    memcpy(out_w, a->data, a->n * a->k * es);
    memcpy((char *)out_w + a->n * a->k * es, b->data, b->n * b->k * es);
    /* fp8: a ends on a block row, so b's blocks follow a's whole */
    if (a->scales) memcpy(out_s, a->scales, scale_floats(a) * sizeof *out_s);
    if (a->scales) memcpy(out_s + scale_floats(a), b->scales, scale_floats(b) * sizeof *out_s);
    *out = (clnpu_weight_desc){a->dtype, a->n + b->n, a->k, out_w, a->scales ? out_s : NULL, a->group_k};
}
