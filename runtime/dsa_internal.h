/* Internal: the work-group family of DeepSeek Sparse Attention (kernels-cl/dsa_wg.cl), launched by
 * dsa.c once it has checked the arguments and built the kernel arguments both families share;
 * the wg kernels take one more, their __local area, sized here to the device's budget. */
#ifndef CLNPU_DSA_INTERNAL_H
#define CLNPU_DSA_INTERNAL_H
#include <stdbool.h>

#include "clnpu/dsa.h"
#include "launch.h"

/* The capability table names the wg family for this device. */
bool clnpu_dsa_use_wg(const clnpu_device *dev);

/* args: clnpu_dsa_scores' 16 arguments. */
clnpu_status clnpu_dsa_scores_wg(clnpu_device *dev, const clnpu_dsa_scores_args *a, const clnpu_karg *args);
/* args: clnpu_dsa_topk's 7 arguments, T rows. */
clnpu_status clnpu_dsa_topk_wg(clnpu_device *dev, size_t T, const clnpu_karg *args);
/* args: clnpu_mla_sparse's 19 arguments (output or partials already chosen), `splits` chunks. */
clnpu_status clnpu_mla_sparse_wg(clnpu_device *dev, const clnpu_mla_sparse_args *a, unsigned splits,
                                 const clnpu_karg *args);
/* args: clnpu_layernorm's 7 arguments, T rows. */
clnpu_status clnpu_layernorm_wg(clnpu_device *dev, size_t T, const clnpu_karg *args);
#endif
