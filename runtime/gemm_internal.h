/* Internal pieces shared by the GEMM host code. */
#ifndef CLNPU_GEMM_INTERNAL_H
#define CLNPU_GEMM_INTERNAL_H
#include <stdbool.h>

#include "clnpu/gemm.h"

clnpu_status clnpu_weight_desc_check(const clnpu_weight_desc *d);
float clnpu_weight_desc_element(const clnpu_weight_desc *d, size_t i, size_t j);
/* Matrix a's rows, then b's, as one matrix [a.n + b.n, k] in out_w / out_s (caller's memory:
 * (a.n + b.n) * k elements and, for scaled types, *out_scales floats of clnpu_weight_desc_stack_scales).
 * False where one packed weight cannot hold both: other dtypes, k or quantisation groups, or fp8
 * blocks across the seam (a.n not a multiple of 128). */
bool clnpu_weight_desc_stackable(const clnpu_weight_desc *a, const clnpu_weight_desc *b);
size_t clnpu_weight_desc_stack_scales(const clnpu_weight_desc *a, const clnpu_weight_desc *b);
void clnpu_weight_desc_stack(const clnpu_weight_desc *a, const clnpu_weight_desc *b, void *out_w, float *out_s,
                             clnpu_weight_desc *out);
/* Floats of per-panel scales for one matrix packed with panel width nr. */
size_t clnpu_pack_scale_count(const clnpu_weight_desc *d, size_t nr);
/* Pack panel p of d into dst_w (K rows of nr elements, `stride` apart: nr, or 2 nr in a SwiGLU
 * pair) and its scales into dst_s (if any). */
void clnpu_pack_panel(const clnpu_weight_desc *d, size_t p, size_t nr, size_t stride, void *dst_w, float *dst_s);

/* What the work-group family (runtime/gemm_wg.c) needs of an uploaded weight: the panel layout
 * is shared by both families. */
typedef struct clnpu_weight_layout {
    clnpu_dtype dtype;
    size_t n, k, count, group_k;
    bool swiglu;
    unsigned nr;
    size_t w_stride, s_stride; /* elements / scale floats per matrix */
    clnpu_buffer *w, *s;       /* s NULL for unscaled types */
} clnpu_weight_layout;
void clnpu_weight_layout_of(const clnpu_weight *w, clnpu_weight_layout *out);

/* The work-group family's launches (arguments already checked by gemm.c). */
clnpu_status clnpu_gemm_wg(clnpu_device *dev, const clnpu_weight_layout *w, size_t matrix,
                           const clnpu_gemm_args *a, size_t ldx, size_t ldy, size_t ldr);
clnpu_status clnpu_gemm_wg_grouped(clnpu_device *dev, const clnpu_weight_layout *w, const clnpu_gemm_segment *segs,
                                   size_t count, const clnpu_gemm_args *a, size_t ldx, size_t ldy, size_t ldr);
clnpu_status clnpu_gemm_wg_grouped_counts(clnpu_device *dev, const clnpu_weight_layout *w, clnpu_buffer *counts,
                                          clnpu_buffer *offsets, const clnpu_gemm_args *a, size_t ldx, size_t ldy,
                                          size_t ldr);
#endif
