/* Internal: the rope table, for kernels that rotate as they go (the latent append, MLA decode's
 * query: kernels-cl/clnpu_rope.h) besides rope.cl. */
#ifndef CLNPU_ROPE_TABLE_H
#define CLNPU_ROPE_TABLE_H
#include "clnpu/ops.h"

struct clnpu_rope_table {
    clnpu_buffer *buf; /* float2 [positions][dim/2]: cos, sin (x the attention factor) */
    size_t dim, positions;
};
#endif
