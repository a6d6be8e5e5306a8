/* The runtime's side of the latent cache's element type (runtime/latent_cache.c). */
#ifndef CLNPU_LATENT_CACHE_H
#define CLNPU_LATENT_CACHE_H

#include "clnpu/dtype.h"
#include "clnpu/status.h"

/* The -D option kernels-cl/clnpu_cache.h reads ("" for f32), with its leading space. */
const char *clnpu_latent_cache_define(clnpu_dtype dtype);
/* CLNPU_OK for f32, bf16 and fp8; an UNSUPPORTED error naming `who` otherwise. */
clnpu_status clnpu_latent_cache_check(clnpu_dtype dtype, const char *who);

#endif
