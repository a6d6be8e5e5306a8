/* What serving needs of a pipeline beyond its steps: forgetting a sequence on every stage (and
 * in the attention replica that holds it), and the latent cache's pages summed over the first
 * stage's replicas (where every sequence has its rows). */
#include "pipeline_internal.h"

/* The model of stage s that holds sequence seq, and seq's number there (replicas deal the
 * sequences q mod R, each keeping q / R). */
static clnpu_model *holder(clnpu_pipeline *p, size_t s, size_t seq, size_t *local)
{
    const size_t R = p->nrep[s] > 1 ? p->nrep[s] : 1, j = seq % R;
    *local = seq / R;
    return j ? p->reps[s * CLNPU_MAX_EP + j] : p->stages[s];
}

void clnpu_pipeline_reset(clnpu_pipeline *p, size_t seq)
{
    if (seq >= p->max_sequences) return;
    for (size_t s = 0; s < p->count; s++) {
        size_t local;
        clnpu_model *m = holder(p, s, seq, &local);
        if (m) clnpu_model_reset(m, local); /* NULL: a stage of another rank */
    }
    p->seq_len[seq] = 0;
}

clnpu_cache_usage clnpu_pipeline_cache_usage(const clnpu_pipeline *p)
{
    clnpu_cache_usage u = {0, 0, 0};
    for (size_t s = 0; s < p->count && !u.pages; s++) {
        const size_t R = p->nrep[s] > 1 ? p->nrep[s] : 1;
        for (size_t j = 0; j < R; j++) {
            const clnpu_model *m = j ? p->reps[s * CLNPU_MAX_EP + j] : p->stages[s];
            if (!m) continue;
            const clnpu_cache_usage v = clnpu_model_cache_usage(m);
            u.pages += v.pages, u.free += v.free, u.page_size = v.page_size;
        }
    }
    return u;
}

size_t clnpu_pipeline_max_sequences(const clnpu_pipeline *p)
{
    return p->max_sequences;
}

size_t clnpu_pipeline_max_tokens(const clnpu_pipeline *p)
{
    return p->max_tokens;
}

const clnpu_model_config *clnpu_pipeline_config(const clnpu_pipeline *p)
{
    return &p->cfg;
}

size_t clnpu_pipeline_context(const clnpu_pipeline *p)
{
    size_t ctx = 0;
    for (size_t s = 0; s < p->count; s++)
        if (p->stages[s] && (!ctx || p->stages[s]->opt.max_context < ctx)) ctx = p->stages[s]->opt.max_context;
    return ctx;
}
