/* Internal pieces shared by the GEMM host code. */
#ifndef CLNPU_GEMM_INTERNAL_H
#define CLNPU_GEMM_INTERNAL_H
#include "clnpu/gemm.h"

clnpu_status clnpu_weight_desc_check(const clnpu_weight_desc *d);
float clnpu_weight_desc_element(const clnpu_weight_desc *d, size_t i, size_t j);
/* Floats of per-panel scales for one matrix packed with panel width nr. */
size_t clnpu_pack_scale_count(const clnpu_weight_desc *d, size_t nr);
/* Pack panel p of d into dst_w (K x nr elements) and its scales into dst_s (if any). */
void clnpu_pack_panel(const clnpu_weight_desc *d, size_t p, size_t nr, void *dst_w, float *dst_s);
#endif
