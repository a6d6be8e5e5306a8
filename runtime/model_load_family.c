/* Weights and buffers of DeepSeek-V3.2 and A.X K2 beyond A.X K1's: the sparse-attention indexer
 * (self_attn.indexer.{wq_b, wk, weights_proj, k_norm}) with its paged key cache, A.X K2's
 * q_gate_proj and gated norms ({input,post_attention}_layernorm.mlp.{fc1, fc2}). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../backend/error.h"
#include "model_family.h"

clnpu_status clnpu_model_family_create(clnpu_model *m)
{
    const clnpu_model_config *c = &m->cfg;
    if (!c->index_topk && !c->gated_norm_rank && !c->attn_output_gate) return CLNPU_OK;
    /* tensor parallel: the indexer and the gated norms run whole on every rank (each picks the same
     * rows), the attention heads and their output gates are split */
    model_family *f = m->fam = calloc(1, sizeof *f);
    if (!f) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    const size_t T = m->opt.max_tokens, S = m->opt.max_context, H = m->heads, R = c->kv_lora_rank;
    const size_t qr = c->q_lora_rank, P = m->dqk + (c->attn_output_gate ? c->v_head_dim : 0);
    const size_t NH = c->index_n_heads, D = c->index_head_dim;
    f->k = c->index_topk < S ? c->index_topk : S;
    struct { clnpu_buffer **b; size_t floats; bool need; } a[] = {
        {&f->cq2, T * 2 * qr, c->attn_output_gate}, {&f->qg, T * H * P, c->attn_output_gate},
        {&f->gn1, T * c->gated_norm_rank, c->gated_norm_rank > 0}, {&f->gn2, T * c->hidden_size, c->gated_norm_rank > 0},
        {&f->iq, T * NH * D, true}, {&f->ik, T * D, true}, {&f->iw, T * NH, true}, {&f->scores, T * S, true},
        {&f->idx, T * f->k, true}, {&f->count, T, true}, {&f->q_abs, T * H * R, true}, {&f->z, T * H * R, true},
    };
    clnpu_status st = CLNPU_OK;
    for (size_t i = 0; !st && i < sizeof a / sizeof a[0]; i++)
        if (a[i].need) st = clnpu_buffer_create(m->dev, a[i].floats * sizeof(float), a[i].b);
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
