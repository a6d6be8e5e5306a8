/* The executor's buffers in a plan's memory: what a stage's model allocates on each of its
 * devices besides weights and the latent cache (clnpu_model_memory_estimate, the runtime's own
 * account), for the options a plan runs with. */
#include "clnpu/model_memory.h"
#include "clnpu/ops.h"
#include "plan_internal.h"

size_t plan_exec_max_tokens(const clnpu_workload *w, size_t r, double batch)
{
    const double per = r ? batch / (double)r : batch;
    const size_t seqs = per < 1 ? 1 : (size_t)(per + 0.999999);
    /* prefill plans take prompts in chunks of 512 tokens (the executor's default); decode plans
     * budget 64-token chunks (a decode step holds every sequence's row) and their runs keep to it
     * (the plan file's max_tokens), so the per-layer MoE scratch stays small */
    const size_t chunk = w->phase == CLNPU_PHASE_PREFILL ? 512 : 64;
    return seqs > chunk ? seqs : chunk;
}

/* The options clnpu run gives a stage of this layout: prompts in chunks of the plan's
 * max_tokens, the plan's context, the replica's share of the sequences. */
static clnpu_model_memory exec_memory(const clnpu_graph *gr, const clnpu_workload *w, size_t t, size_t r, double batch)
{
    clnpu_model_options o = clnpu_model_options_default();
    o.max_context = w->context;
    const double per = r ? batch / (double)r : batch;
    o.max_sequences = per < 1 ? 1 : (size_t)(per + 0.999999);
    o.max_tokens = plan_exec_max_tokens(w, r, batch);
    o.latent_cache = w->latent_cache;
    /* the weights as clnpu run loads them: a bf16 plan from the checkpoint, int8 / fp8 converted */
    o.weights = w->weights == CLNPU_DTYPE_BF16 ? -1 : (int)w->weights;
    clnpu_model_memory mm = {0};
    if (clnpu_model_memory_estimate(&gr->cfg, &o, t, &mm)) mm = (clnpu_model_memory){0};
    return mm;
}

void plan_graph_set_latent_cache(clnpu_graph *g, clnpu_dtype cache)
{
    const clnpu_model_config *c = &g->cfg;
    for (size_t u = 0; u < g->count; u++)
        if (g->units[u].layer >= 0)
            g->units[u].kv_bytes_per_token = /* the indexer's keys (f32) beside the latent row */
                (double)clnpu_latent_cache_row_bytes(cache, c->kv_lora_rank, c->qk_rope_head_dim) +
                g->units[u].index_bytes_per_token;
}

double plan_exec_fixed_bytes(const clnpu_graph *gr, const clnpu_workload *w, size_t t, size_t r, double batch)
{
    return exec_memory(gr, w, t, r, batch).workspaces;
}

double plan_exec_unit_bytes(const clnpu_graph *gr, const clnpu_workload *w, const clnpu_graph_unit *u, size_t g, size_t t,
                            size_t r, double batch)
{
    const clnpu_model_memory mm = exec_memory(gr, w, t, r, batch);
    /* the head's device draws the tokens (a clnpu_generator over the replica's sequences) */
    if (u->kind == CLNPU_UNIT_HEAD) return mm.logits + mm.sampling;
    if (u->layer < 0) return 0;
    /* every layer: the absorbed decode's copies of kv_b_proj on each device with attention */
    if (u->kind != CLNPU_UNIT_MOE) return mm.absorbed_per_layer;
    /* the router's device holds the block's scratch, and its own shard's when experts are spread;
     * replicas meet there */
    return mm.absorbed_per_layer + mm.moe_scratch + (g > 1 ? mm.shard_scratch : 0) + (r > 1 ? mm.replica_rows : 0);
}
