/* The full-scale model graph for planning: 63 pipeline units for A.X K1 (embedding, 61 decoder
 * layers, final norm + LM head) with exact parameter counts (architecture notes section 3) and
 * per-token FLOPs and cache bytes (section 4); DeepSeek-V3.2 and A.X K2 add the sparse-attention
 * indexer (its weights, key cache and per-key cost) and A.X K2 its gates. */
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "clnpu/model_memory.h"
#include "clnpu/ops.h"
#include "clnpu/plan.h"

clnpu_status clnpu_graph_build(const clnpu_model_config *c, clnpu_graph *g)
{
    memset(g, 0, sizeof *g);
    const double d = (double)c->hidden_size, H = (double)c->num_attention_heads, R = (double)c->kv_lora_rank;
    const double nope = (double)c->qk_nope_head_dim, rope = (double)c->qk_rope_head_dim, vd = (double)c->v_head_dim;
    const double qlr = (double)c->q_lora_rank, dqk = nope + rope;
    g->count = c->num_hidden_layers + 2;
    g->units = calloc(g->count, sizeof *g->units);
    if (!g->units) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    g->experts = c->n_routed_experts, g->top_k = c->num_experts_per_tok, g->n_group = c->n_group;
    g->cfg = *c;
    g->topk_group = c->topk_group, g->hidden = c->hidden_size, g->heads = c->num_attention_heads;
    /* attention: q_a + q_a_norm + q_b (or q_proj), kv_a + kv_a_norm, kv_b, o */
    const double attn = (qlr ? d * qlr + qlr + qlr * H * dqk : d * H * dqk) + d * (R + rope) + R +
                        R * H * (nope + vd) + H * vd * d;
    const double attn_mm = attn - (qlr ? qlr : 0) - R; /* matmul parameters (norms excluded) */
    const double V = (double)c->vocab_size;
    clnpu_graph_unit *u = &g->units[0];
    u->kind = CLNPU_UNIT_EMBED, u->layer = -1, u->dense_params = V * d;
    for (size_t l = 0; l < c->num_hidden_layers; l++) {
        u = &g->units[l + 1];
        u->layer = (int)l;
        u->attn_params = attn;
        u->attn_whole_params = (qlr ? d * qlr + qlr : 0) + d * (R + rope) + R;
        u->norm_params = 2 * d;
        /* absorbed decode: scores over R + rope, values over R, per head */
        u->attn_flops_per_ctx = 2 * H * (R + rope + R);
        u->attn_prefill_flops_per_ctx = 2 * H * (dqk + vd); /* keys and values expanded per head */
        u->kv_bytes_per_token = /* as allocated */
            (double)clnpu_latent_cache_row_bytes(CLNPU_LATENT_CACHE_DTYPE, c->kv_lora_rank, c->qk_rope_head_dim);
        /* DeepSeek-V3.2 / A.X K2: the indexer's projections (whole on every TP rank), its key
         * cache and per-key scores; A.X K2's gated norms */
        double fam_attn, fam_whole, fam_norms, fam_gates;
        clnpu_model_config_layer_family(c, l, &fam_attn, &fam_whole, &fam_norms, &fam_gates);
        u->attn_params += fam_attn, u->attn_whole_params += fam_whole, u->norm_params += fam_gates;
        const double fam_mm = fam_attn - fam_norms + fam_gates;
        if (c->index_topk) {
            u->attn_topk = c->index_topk;
            u->index_flops_per_ctx = 2.0 * (double)c->index_n_heads * ((double)c->index_head_dim + 1);
            u->index_bytes_per_token = (double)c->index_head_dim * 4; /* f32, as allocated */
            u->kv_bytes_per_token += u->index_bytes_per_token;
        }
        if (clnpu_model_config_is_moe(c, l)) {
            u->kind = CLNPU_UNIT_MOE;
            u->expert_params = 3 * d * (double)c->moe_intermediate_size;
            u->shared_params = u->expert_params * (double)c->n_shared_experts;
            u->router_params = (double)c->n_routed_experts * (d + 1);
            if (c->post_mlp_layernorm) u->norm_params += d;
            u->flops_per_token = 2 * (attn_mm + fam_mm + u->router_params - c->n_routed_experts +
                                      u->expert_params * (double)c->num_experts_per_tok + u->shared_params);
        } else {
            u->kind = CLNPU_UNIT_DENSE;
            u->dense_params = 3 * d * (double)c->intermediate_size;
            u->flops_per_token = 2 * (attn_mm + fam_mm + u->dense_params);
        }
    }
    u = &g->units[g->count - 1];
    u->kind = CLNPU_UNIT_HEAD, u->layer = -1, u->norm_params = d;
    u->dense_params = c->tie_word_embeddings ? 0 : V * d;
    u->flops_per_token = 2 * V * d;
    for (size_t i = 0; i < g->count; i++) {
        const clnpu_graph_unit *x = &g->units[i];
        double shared = x->attn_params + x->dense_params + x->shared_params + x->router_params + x->norm_params;
        g->total_params += shared + x->expert_params * (double)c->n_routed_experts;
        g->active_params += shared + x->expert_params * (double)c->num_experts_per_tok;
    }
    if (c->tie_word_embeddings) g->active_params += 0; /* the table counts once */
    return CLNPU_OK;
}

void clnpu_graph_free(clnpu_graph *g)
{
    free(g->units);
    g->units = NULL;
    g->count = 0;
}
