/* Loading DeepSeek-V3's published FP8 layout: e4m3 weights with one f32 scale per 128x128 block go
 * to the device as they are and run through the fp8 GEMM. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "model_fp8.h"

#define B CLNPU_FP8_BLOCK

clnpu_status clnpu_fp8_scales_load(const clnpu_checkpoint *ck, const char *name, size_t n, size_t k, float **out)
{
    *out = NULL;
    char sname[300];
    snprintf(sname, sizeof sname, "%s_scale_inv", name);
    const size_t nb = (n + B - 1) / B, kb = (k + B - 1) / B;
    const clnpu_tensor_info *t = clnpu_checkpoint_find(ck, sname);
    if (!t) return clnpu_fail(CLNPU_ERR_NOT_FOUND, "%s is float8_e4m3fn but %s (its block scales) is missing", name, sname);
    int64_t shape[2] = {(int64_t)nb, (int64_t)kb};
    clnpu_status st = clnpu_checkpoint_require(ck, sname, 2, shape, &t);
    if (st) return st;
    if (t->dtype != CLNPU_DTYPE_F32)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: dtype %s, block scales must be f32 (%s)", sname,
                          clnpu_dtype_name(t->dtype), t->file);
    float *s = malloc(nb * kb * sizeof *s);
    if (!s) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for %s", sname);
    memcpy(s, t->data, nb * kb * sizeof *s);
    for (size_t i = 0; i < nb * kb; i++)
        if (!isfinite(s[i])) {
            free(s);
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: block [%zu, %zu] scale is not finite (%s)", sname, i / kb, i % kb,
                              t->file);
        }
    *out = s;
    return CLNPU_OK;
}

clnpu_status clnpu_fp8_desc_rows(clnpu_weight_desc *d, const char *name, size_t r0, size_t rows)
{
    if (r0 % B)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: fp8 checkpoint split at row %zu, not at a %d-row block: this "
                          "tensor-parallel split needs a bf16 checkpoint", name, r0, B);
    const size_t kb = (d->k + B - 1) / B;
    d->data = (const unsigned char *)d->data + r0 * d->k;
    d->scales += (r0 / B) * kb;
    d->n = rows;
    return CLNPU_OK;
}

clnpu_status clnpu_fp8_desc_cols(clnpu_weight_desc *d, const char *name, size_t c0, size_t cols, void **out_w,
                                 float **out_s)
{
    *out_w = NULL, *out_s = NULL;
    if (c0 % B)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: fp8 checkpoint split at column %zu, not at a %d-column block: "
                          "this tensor-parallel split needs a bf16 checkpoint", name, c0, B);
    const size_t n = d->n, kb = (d->k + B - 1) / B, nb = (n + B - 1) / B, kb2 = (cols + B - 1) / B;
    unsigned char *w = malloc(n * cols);
    float *s = malloc(nb * kb2 * sizeof *s);
    if (!w || !s) {
        free(w), free(s);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for %s", name);
    }
    for (size_t i = 0; i < n; i++) memcpy(w + i * cols, (const unsigned char *)d->data + i * d->k + c0, cols);
    for (size_t i = 0; i < nb; i++) memcpy(s + i * kb2, d->scales + i * kb + c0 / B, kb2 * sizeof *s);
    d->data = w, d->scales = s, d->k = cols;
    *out_w = w, *out_s = s;
    return CLNPU_OK;
}
