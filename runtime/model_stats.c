/* What a loaded model's GEMM weights hold, by dtype: the figures behind `clnpu run --stats`. */
#include "model_internal.h"

void clnpu_model_weight_stats_add(clnpu_model_weight_stats *s, const clnpu_weight_desc *d)
{
    if ((unsigned)d->dtype >= CLNPU_DTYPE_COUNT) return;
    s->elements[d->dtype] += (double)d->n * d->k;
    if (d->dtype == CLNPU_DTYPE_FP8_E4M3)
        s->scale_bytes += 4.0 * ((d->n + CLNPU_FP8_BLOCK - 1) / CLNPU_FP8_BLOCK) * ((d->k + CLNPU_FP8_BLOCK - 1) / CLNPU_FP8_BLOCK);
    else if (d->dtype == CLNPU_DTYPE_I8)
        s->scale_bytes += 4.0 * d->n * (d->group_k ? (d->k + d->group_k - 1) / d->group_k : 1);
}

void clnpu_model_weight_stats_get(const clnpu_model *m, clnpu_model_weight_stats *out)
{
    *out = m->wstats;
    for (size_t r = 1; m->peers && r < m->tp_size; r++) { /* tensor-parallel ranks: all their shares */
        clnpu_model_weight_stats p;
        clnpu_model_weight_stats_get(m->peers[r - 1], &p);
        for (int t = 0; t < CLNPU_DTYPE_COUNT; t++) out->elements[t] += p.elements[t];
        out->scale_bytes += p.scale_bytes;
    }
}
