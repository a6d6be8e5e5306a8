/* The latent cache's element types on the host side: a row's bytes and the kernel option that
 * selects the type in kernels-cl/clnpu_cache.h, the one account model_load.c, the planner and the
 * attention launches share. */
#include "../common/error.h"
#include "clnpu/ops.h"
#include "latent_cache.h"

size_t clnpu_latent_cache_row_bytes(clnpu_dtype dtype, size_t rank, size_t rope_dim)
{
    switch (dtype) {
    case CLNPU_DTYPE_F32: return (rank + rope_dim) * 4;
    case CLNPU_DTYPE_BF16: return (rank + rope_dim) * 2;
    case CLNPU_DTYPE_FP8_E4M3: /* fp8 c, an f32 scale per tile, bf16 k_pe (FlashMLA's 656 bytes) */
        return rank + 4 * ((rank + CLNPU_LATENT_CACHE_FP8_TILE - 1) / CLNPU_LATENT_CACHE_FP8_TILE) + 2 * rope_dim;
    default: return 0;
    }
}

const char *clnpu_latent_cache_define(clnpu_dtype dtype)
{
    return dtype == CLNPU_DTYPE_BF16 ? " -DCLNPU_CACHE_BF16=1" : dtype == CLNPU_DTYPE_FP8_E4M3 ? " -DCLNPU_CACHE_FP8=1" : "";
}

clnpu_status clnpu_latent_cache_check(clnpu_dtype dtype, const char *who)
{
    if (dtype == CLNPU_DTYPE_F32 || dtype == CLNPU_DTYPE_BF16 || dtype == CLNPU_DTYPE_FP8_E4M3) return CLNPU_OK;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: a %s latent cache (f32, bf16 or fp8)", who,
                      clnpu_dtype_name(dtype) ? clnpu_dtype_name(dtype) : "?");
}
