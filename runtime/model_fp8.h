/* FP8 checkpoints as DeepSeek-V3 publishes them: an F8_E4M3 matrix [n, k] and its F32
 * `<name>_scale_inv` [ceil(n/128), ceil(k/128)] (real value = fp8 x scale), handed to the GEMM as
 * they are (no dequantisation). */
#ifndef CLNPU_MODEL_FP8_H
#define CLNPU_MODEL_FP8_H

#include "clnpu/checkpoint.h"
#include "clnpu/gemm.h"

/* The block scales of fp8 matrix `name` [n, k], checked (dtype, shape, finite) and copied into
 * aligned host memory (*out, malloc'd; the file's data is not aligned). */
clnpu_status clnpu_fp8_scales_load(const clnpu_checkpoint *ck, const char *name, size_t n, size_t k, float **out);
/* Rows [r0, r0 + rows) of an fp8 matrix in place: r0 must start a block (a block's scale covers
 * 128 rows), else a tensor-parallel split of this checkpoint is refused by name. */
clnpu_status clnpu_fp8_desc_rows(clnpu_weight_desc *d, const char *name, size_t r0, size_t rows);
/* Columns [c0, c0 + cols): the matrix and its scales copied into host memory *out_w, *out_s
 * (malloc'd); c0 must start a block. */
clnpu_status clnpu_fp8_desc_cols(clnpu_weight_desc *d, const char *name, size_t c0, size_t cols, void **out_w,
                                 float **out_s);

#endif
