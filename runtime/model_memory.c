/* What a model instance allocates on its device besides weights: the same sizes as
 * model_load.c's alloc_activations, the rope table, the latent cache pages and moe_block.c's
 * scratch, from the config and options alone. test_model.c holds it to the device's count. */
#include <math.h>

#include "../common/error.h"
#include "clnpu/model_memory.h"
#include "clnpu/ops.h"
#include "latent_cache.h"
#include "model_internal.h"

/* the sub-buffer alignment of the step-input slots: at most this on the devices we know */
#define STEP_SLOT_ALIGN 1024

/* rows of a packed weight: whole panels of 16, an even number of them */
static double panel_rows(double n)
{
    const double p = ceil(n / 16);
    return (p + fmod(p, 2)) * 16;
}

clnpu_status clnpu_model_memory_estimate(const clnpu_model_config *c, const clnpu_model_options *opt, size_t tp,
                                         clnpu_model_memory *out)
{
    *out = (clnpu_model_memory){0};
    if (!tp) tp = 1;
    clnpu_model_options o = opt ? *opt : clnpu_model_options_default();
    /* the defaults model_create applies */
    if (!o.max_context) o.max_context = c->max_position_embeddings < 4096 ? c->max_position_embeddings : 4096;
    if (!o.max_sequences) o.max_sequences = 1;
    if (!o.page_size) o.page_size = 16;
    if (!o.max_tokens) o.max_tokens = 512;
    if (o.max_tokens < o.max_sequences) o.max_tokens = o.max_sequences;
    if (tp > c->num_attention_heads)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%zu tensor-parallel ranks for %zu attention heads", tp,
                          c->num_attention_heads);
    const double T = (double)o.max_tokens, S = (double)o.max_context, B = (double)o.max_sequences;
    const double d = (double)c->hidden_size, R = (double)c->kv_lora_rank, V = (double)c->vocab_size;
    /* the largest rank's heads (H / tp rounded up) */
    const double H = (double)((c->num_attention_heads + tp - 1) / tp);
    const double dqk = (double)(c->qk_nope_head_dim + c->qk_rope_head_dim), lat = R + (double)c->qk_rope_head_dim;
    const double blocks = (double)((o.max_context + o.page_size - 1) / o.page_size);
    double mlp = c->intermediate_size > c->moe_intermediate_size ? (double)c->intermediate_size
                                                                  : (double)c->moe_intermediate_size;
    if (mlp < d) mlp = d;
    const double q_lora = c->q_lora_rank ? (double)c->q_lora_rank : 1;
    const double act = T * d * 4 * 3 + T * (c->q_lora_rank ? q_lora + lat : 1) * 4 /* q_a | kv_a */ + T * H * dqk * 4 + T * lat * 4 + T * H * c->v_head_dim * 4 +
                       T * mlp * 4 + S * lat * 4 + S * H * (double)(c->qk_nope_head_dim + c->v_head_dim) * 4 +
                       S * H * dqk * 4 + 2 * B * H * R * 4 + B * H * (double)c->qk_rope_head_dim * 4 + T * 4 +
                       2 * B * blocks * 4;
    const double n = T > B ? T : B, slot = ((size_t)(n * 4) + STEP_SLOT_ALIGN - 1) / STEP_SLOT_ALIGN * STEP_SLOT_ALIGN;
    const double rope = S * (double)(c->qk_rope_head_dim / 2) * 2 * 4;
    out->workspaces = act + 4 * slot + rope + 4; /* + the non-finite flag */
    /* a model without the head keeps a one-row logits buffer */
    out->logits = (T - 1) * V * 4;
    out->workspaces += V * 4;
    clnpu_status st = clnpu_latent_cache_check(o.latent_cache, "memory estimate");
    if (st) return st;
    const double row = (double)clnpu_latent_cache_row_bytes(o.latent_cache, c->kv_lora_rank, c->qk_rope_head_dim);
    double pages = blocks * B; /* a server's pool may be smaller (clnpu_model_options.cache_pages) */
    if (o.cache_pages && (double)o.cache_pages < pages) pages = (double)o.cache_pages;
    out->cache_per_layer = pages * (double)o.page_size * row;
    /* DeepSeek-V3.2 / A.X K2: the indexer's buffers and its key cache beside the latent's pages */
    double fam_ws, key_row;
    clnpu_model_family_memory(c, o.max_tokens, o.max_context, (size_t)H, &fam_ws, &key_row);
    out->workspaces += fam_ws;
    out->cache_per_layer += pages * (double)o.page_size * key_row;
    const double E = (double)c->n_routed_experts, K = (double)c->num_experts_per_tok, I = (double)c->moe_intermediate_size;
    const double rows = T * K;
    out->moe_scratch = T * E * 4 + rows * 4 * 4 + (E + 1) * 4 + (E + 2) * 4 + rows * d * 4 * 2 + rows * I * 4;
    /* the shared expert's hidden and output rows; one of the routed experts' width, whole on this
     * rank, also joins their group in steps of fewer than E / top_k tokens (moe_block.c): that
     * many more rows of the gathered source, input, hidden and output (expert parallelism keeps
     * it apart: counted here all the same, an estimate from above) */
    if (c->n_shared_experts) out->moe_scratch += T * I * (double)c->n_shared_experts * 4 + T * d * 4;
    const double sg = floor((E - 1) / K) < T ? floor((E - 1) / K) : T;
    if (c->n_shared_experts == 1 && tp == 1) out->moe_scratch += sg * (4 + d * 4 * 2 + I * 4);
    out->shard_scratch = rows * d * 4 * 2 + rows * I * 4;
    out->replica_rows = 2 * T * d * 4;
    /* runtime/model_load.c's upload_absorbed: per head W_UK^T [R][nope] and W_UV [v][R], rows
     * padded to an even number of 16-row panels (runtime/gemm.c), in kv_b's bytes where exact:
     * bf16 copies of a bf16 kv_b (opt.weights -1: the checkpoint's dtype, taken as bf16 as A.X K1
     * ships), int8 W_UV from kv_b's own rows and scales (one f32 per 128 of R) beside a bf16
     * W_UK^T, and f32 copies of an fp8 kv_b */
    const double nope = (double)c->qk_nope_head_dim, vd = (double)c->v_head_dim;
    const double uk = panel_rows(R) * nope, uv = panel_rows(vd) * R;
    if (o.weights == CLNPU_DTYPE_I8) out->absorbed_per_layer = H * (uk * 2 + uv + panel_rows(vd) * ceil(R / 128) * 4);
    else if (o.weights == CLNPU_DTYPE_FP8_E4M3) out->absorbed_per_layer = H * (uk + uv) * 4;
    else out->absorbed_per_layer = H * (uk + uv) * 2;
    /* runtime/generate.c: a row of logits and a drawn id per sequence */
    out->sampling = B * V * 4 + B * 4;
    return CLNPU_OK;
}
