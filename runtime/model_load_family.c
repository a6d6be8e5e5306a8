/* Weights and buffers of DeepSeek-V3.2 and A.X K2 beyond A.X K1's: the sparse-attention indexer
 * (self_attn.indexer.{wq_b, wk, weights_proj, k_norm}) with its paged key cache, A.X K2's
 * q_gate_proj and gated norms ({input,post_attention}_layernorm.mlp.{fc1, fc2}). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/error.h"
#include "model_family.h"

/* The family's activation buffers, in one list for the allocation and the estimate: element
 * counts (f32 / int32) for max_tokens T, context S and H heads on this rank; 0 where unused. */
enum { F_CQ2, F_QG, F_GN1, F_GN2, F_IQ, F_IK, F_IW, F_SCORES, F_IDX, F_COUNT, F_QABS, F_Z, F_N };
static void family_floats(const clnpu_model_config *c, size_t T, size_t S, size_t H, size_t out[F_N])
{
    const size_t qr = c->q_lora_rank, dqk = c->qk_nope_head_dim + c->qk_rope_head_dim, R = c->kv_lora_rank;
    const size_t P = dqk + (c->attn_output_gate ? c->v_head_dim : 0), NH = c->index_n_heads, D = c->index_head_dim;
    const size_t k = c->index_topk < S ? c->index_topk : S, gate = c->attn_output_gate, gn = c->gated_norm_rank > 0;
    const size_t ix = c->index_topk > 0;
    const size_t n[F_N] = {gate * T * 2 * qr, gate * T * H * P, gn * T * c->gated_norm_rank, gn * T * c->hidden_size,
                           ix * T * NH * D, ix * T * D, ix * T * NH, ix * T * S, ix * T * k, ix * T,
                           ix * T * H * R, ix * T * H * R};
    for (int i = 0; i < F_N; i++) out[i] = n[i];
}

void clnpu_model_family_memory(const clnpu_model_config *c, size_t T, size_t S, size_t H, double *out_workspaces,
                               double *out_key_bytes_per_row)
{
    size_t n[F_N];
    family_floats(c, T, S, H, n);
    double b = 0;
    for (int i = 0; i < F_N; i++) b += 4.0 * (double)n[i];
    *out_workspaces = b;
    *out_key_bytes_per_row = c->index_topk ? 4.0 * (double)c->index_head_dim : 0;
}

clnpu_status clnpu_model_family_create(clnpu_model *m)
{
    const clnpu_model_config *c = &m->cfg;
    if (!c->index_topk && !c->gated_norm_rank && !c->attn_output_gate) return CLNPU_OK;
    /* tensor parallel: the indexer and the gated norms run whole on every rank (each picks the same
     * rows), the attention heads and their output gates are split */
    model_family *f = m->fam = calloc(1, sizeof *f);
    if (!f) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    const size_t T = m->opt.max_tokens, S = m->opt.max_context;
    f->k = c->index_topk < S ? c->index_topk : S;
    size_t n[F_N];
    family_floats(c, T, S, m->heads, n);
    clnpu_buffer **b[F_N] = {&f->cq2, &f->qg, &f->gn1, &f->gn2, &f->iq, &f->ik, &f->iw, &f->scores, &f->idx, &f->count,
                             &f->q_abs, &f->z};
    clnpu_status st = CLNPU_OK;
    for (int i = 0; !st && i < F_N; i++)
        if (n[i]) st = clnpu_buffer_create(m->dev, n[i] * sizeof(float), b[i]);
    return st ? clnpu_fail_context(st, "allocating the indexer's buffers for %zu tokens, context %zu", T, S) : CLNPU_OK;
}

void clnpu_model_family_destroy(clnpu_model *m)
{
    model_family *f = m->fam;
    if (!f) return;
    clnpu_buffer *bs[] = {f->cq2, f->qg, f->gn1, f->gn2, f->iq, f->ik, f->iw, f->scores, f->idx, f->count, f->q_abs, f->z};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) clnpu_buffer_destroy(bs[i]);
    free(f);
    m->fam = NULL;
}

clnpu_status clnpu_model_load_family_layer(clnpu_model *m, struct loader *L, size_t l, model_layer *ly)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t d = c->hidden_size, NH = c->index_n_heads, D = c->index_head_dim, qr = c->q_lora_rank;
    const size_t rank = c->gated_norm_rank;
    char name[256];
#define NAME(fmt) (snprintf(name, sizeof name, "model.layers.%zu." fmt, l), name)
    clnpu_status st = CLNPU_OK;
    if (c->index_topk) {
        st = clnpu_loader_upload_mat(m, L, NAME("self_attn.indexer.wq_b.weight"), NH * D, qr, &ly->ix_wq);
        if (!st) st = clnpu_loader_upload_mat(m, L, NAME("self_attn.indexer.wk.weight"), D, d, &ly->ix_wk);
        if (!st) st = clnpu_loader_upload_mat(m, L, NAME("self_attn.indexer.weights_proj.weight"), NH, d, &ly->ix_w);
        if (!st) st = clnpu_loader_upload_vec(m, L, NAME("self_attn.indexer.k_norm.weight"), D, 1.0f, &ly->ix_knorm_w);
        if (!st) st = clnpu_loader_upload_vec(m, L, NAME("self_attn.indexer.k_norm.bias"), D, NAN, &ly->ix_knorm_b);
        /* the indexer's keys, paged with the same page ids as the latent cache */
        if (!st) st = clnpu_buffer_create(m->dev, m->pages * m->opt.page_size * D * sizeof(float), &ly->ix_cache);
    }
    const size_t P = m->dqk + c->v_head_dim;
    if (!st && c->attn_output_gate) /* per head: dqk query rows, then v_head_dim gate rows; this rank's heads */
        st = clnpu_loader_upload_rows(m, L, NAME("self_attn.q_gate_proj.weight"), c->num_attention_heads * P, 2 * qr,
                                      m->h0 * P, m->heads * P, &ly->q_b);
    if (!st && rank) {
        st = clnpu_loader_upload_mat(m, L, NAME("input_layernorm.mlp.fc1.weight"), rank, d, &ly->in_fc1);
        if (!st) st = clnpu_loader_upload_mat(m, L, NAME("input_layernorm.mlp.fc2.weight"), d, rank, &ly->in_fc2);
    }
    if (!st && rank && clnpu_model_config_is_moe(c, l)) {
        st = clnpu_loader_upload_mat(m, L, NAME("post_attention_layernorm.mlp.fc1.weight"), rank, d, &ly->post_fc1);
        if (!st) st = clnpu_loader_upload_mat(m, L, NAME("post_attention_layernorm.mlp.fc2.weight"), d, rank, &ly->post_fc2);
    }
#undef NAME
    return st;
}

void clnpu_model_family_destroy_layer(model_layer *ly)
{
    clnpu_weight *ws[] = {ly->ix_wq, ly->ix_wk, ly->ix_w, ly->in_fc1, ly->in_fc2, ly->post_fc1, ly->post_fc2};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) clnpu_weight_destroy(ws[i]);
    clnpu_buffer *bs[] = {ly->ix_knorm_w, ly->ix_knorm_b, ly->ix_cache};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) clnpu_buffer_destroy(bs[i]);
}
