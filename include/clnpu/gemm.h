/* Linear layers on a device: Y[M,N] = epilogue(alpha * X[M,K] . W[N,K]^T), X and Y in f32,
 * W in f32, bf16, f16, int8 (+ f32 scales) or fp8 e4m3 (+ 128x128 block scales). From
 * examples/gemm_check.c, a vendor's first program (CHECK: print clnpu_error_message(), clean up):
 *
 *     clnpu_weight_desc d = {.dtype = CLNPU_DTYPE_BF16, .n = N, .k = K, .data = w_bf16};
 *     CHECK(clnpu_weight_upload(dev, &d, 1, &w));                  // packed once for the kernels
 *     clnpu_gemm_args a = clnpu_gemm_args_default();
 *     a.x = xbuf, a.y = ybuf, a.m = M;
 *     CHECK(clnpu_gemm(dev, w, 0, &a));                            // Y = X . W^T, queued
 *     CHECK(clnpu_buffer_read(ybuf, 0, y, M * N * sizeof(float))); // blocking, after the GEMM
 *     clnpu_weight_destroy(w);
 *
 * Weights are given in checkpoint layout ([out, in] row-major) and repacked on upload into the
 * panel layout described in kernels-cl/gemm.cl; the host data is copied during the upload and
 * may be freed after it. Several same-shaped matrices (MoE experts) can share one clnpu_weight;
 * clnpu_gemm_grouped runs any number of (matrix, row range) segments in one launch. Calls enqueue
 * work and return; use clnpu_device_finish (or a blocking read) to wait. GEMM on M <= 8 rows takes
 * the GEMV path.
 */
#ifndef CLNPU_GEMM_H
#define CLNPU_GEMM_H

#include "clnpu/export.h"

#include <stddef.h>

#include "clnpu/device.h"
#include "clnpu/dtype.h"
#include "clnpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CLNPU_FP8_BLOCK 128

/* One matrix in checkpoint layout. Scales:
 *  - I8: group_k == 0: one f32 per output row, [n]; group_k > 0: [n][ceil(k/group_k)].
 *  - FP8_E4M3: one f32 per 128x128 block, [ceil(n/128)][ceil(k/128)] (DeepSeek-V3
 *    `weight_scale_inv`: real value = fp8 value * scale).
 *  - others: NULL. */
typedef struct clnpu_weight_desc {
    clnpu_dtype dtype;
    size_t n, k;
    const void *data;
    const float *scales;
    size_t group_k;
} clnpu_weight_desc;

typedef struct clnpu_weight clnpu_weight;

/* Upload `count` matrices of identical dtype and shape (count > 1: a group of experts). */
CLNPU_API clnpu_status clnpu_weight_upload(clnpu_device *device, const clnpu_weight_desc *mats, size_t count,
                                 clnpu_weight **out_weight);
/* Upload gate and up projections together for the fused SwiGLU epilogue:
 * Y = silu(X.Wg^T) * (X.Wu^T), written once. gate[i] and up[i] must have one dtype and shape. */
CLNPU_API clnpu_status clnpu_weight_upload_swiglu(clnpu_device *device, const clnpu_weight_desc *gate,
                                        const clnpu_weight_desc *up, size_t count,
                                        clnpu_weight **out_weight);
CLNPU_API void clnpu_weight_destroy(clnpu_weight *weight);
CLNPU_API clnpu_dtype clnpu_weight_dtype(const clnpu_weight *weight);
CLNPU_API size_t clnpu_weight_n(const clnpu_weight *weight); /* output width (per gate/up for SwiGLU) */
CLNPU_API size_t clnpu_weight_k(const clnpu_weight *weight);
CLNPU_API size_t clnpu_weight_count(const clnpu_weight *weight);
/* Device bytes held (packed weights + scales). */
CLNPU_API size_t clnpu_weight_device_bytes(const clnpu_weight *weight);

typedef enum clnpu_epilogue {
    CLNPU_EPILOGUE_NONE = 0, /* Y = alpha * X.W^T */
    CLNPU_EPILOGUE_RESIDUAL, /* Y = alpha * X.W^T + R (R may be Y itself) */
    CLNPU_EPILOGUE_SWIGLU,   /* needs a weight from clnpu_weight_upload_swiglu */
} clnpu_epilogue;

typedef struct clnpu_gemm_args {
    clnpu_buffer *x;
    size_t x_offset, ldx;          /* in elements; ldx 0 = K */
    clnpu_buffer *y;
    size_t y_offset, ldy;          /* ldy 0 = N */
    clnpu_buffer *residual;        /* CLNPU_EPILOGUE_RESIDUAL */
    size_t r_offset, ldr;          /* ldr 0 = ldy */
    size_t m;                      /* rows of X and Y */
    float alpha;                   /* 1 by default */
    clnpu_epilogue epilogue;
    clnpu_buffer *workspace;       /* optional; enables split-K (needs splits*M*ldy floats) */
    unsigned split_k;              /* 0 = choose; 1 = never split */
} clnpu_gemm_args;

CLNPU_API clnpu_gemm_args clnpu_gemm_args_default(void);

/* Y = X . W[matrix]^T for one matrix of the weight. */
CLNPU_API clnpu_status clnpu_gemm(clnpu_device *device, const clnpu_weight *weight, size_t matrix,
                        const clnpu_gemm_args *args);

/* One MoE segment: rows [row, row + rows) of X and Y through matrix `matrix`. */
typedef struct clnpu_gemm_segment {
    size_t matrix, row, rows;
} clnpu_gemm_segment;

/* All segments in one launch (rows of zero are allowed and cost nothing). args->m is the total
 * number of rows of X and Y. */
CLNPU_API clnpu_status clnpu_gemm_grouped(clnpu_device *device, const clnpu_weight *weight,
                                const clnpu_gemm_segment *segments, size_t count,
                                const clnpu_gemm_args *args);

/* The same with the segments on the device, as clnpu_moe_plan leaves them: matrix e (of the
 * weight's count) takes rows [offsets[e], offsets[e] + counts[e]) of X; counts and offsets hold
 * int32. No host round trip, so a MoE layer is queued whole. max_rows bounds the rows of any one
 * segment (it picks the tile height; 0 = args->m); results do not depend on it. A segment that
 * does not fit in args->m rows is skipped, its rows not written. */
CLNPU_API clnpu_status clnpu_gemm_grouped_counts(clnpu_device *device, const clnpu_weight *weight,
                                       clnpu_buffer *counts, clnpu_buffer *offsets, size_t max_rows,
                                       const clnpu_gemm_args *args);

/* Host-side quantisation in the formats above (used by --weights int8|fp8 and tests). */
CLNPU_API clnpu_status clnpu_quantize_i8(const float *w, size_t n, size_t k, size_t group_k, int8_t *out_q,
                               float *out_scales);
CLNPU_API clnpu_status clnpu_quantize_fp8(const float *w, size_t n, size_t k, uint8_t *out_q,
                                float *out_scales);
/* Dequantise / widen any weight_desc into f32 [n][k] (the reference the kernels must match). */
CLNPU_API clnpu_status clnpu_weight_desc_to_f32(const clnpu_weight_desc *d, float *out);

#ifdef __cplusplus
}
#endif
#endif
