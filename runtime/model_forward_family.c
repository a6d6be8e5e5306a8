/* The forward pieces of DeepSeek-V3.2 and A.X K2 (transformers DeepseekV32Attention / AXK2Attention):
 * the lightning indexer picks index_topk cached tokens per query, absorbed MLA attends over only
 * those, in prefill and in decode alike; A.X K2 adds q_gate_proj with a sigmoid gate on the
 * attention output, and gated RMSNorms y * sigmoid(fc2(silu(fc1(y)))), y = RMSNorm(x). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../common/error.h"
#include "clnpu/dsa.h"
#include "latent_cache.h"
#include "launch.h"
#include "model_family.h"

static clnpu_status mm_at(clnpu_model *m, const clnpu_weight *w, clnpu_buffer *x, size_t xoff, size_t ldx,
                          clnpu_buffer *y, size_t yoff, size_t ldy, size_t rows)
{
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = x, a.x_offset = xoff, a.ldx = ldx, a.y = y, a.y_offset = yoff, a.ldy = ldy, a.m = rows;
    return clnpu_gemm(m->dev, w, 0, &a);
}

static clnpu_status mm(clnpu_model *m, const clnpu_weight *w, clnpu_buffer *x, size_t xoff, size_t ldx, clnpu_buffer *y,
                       size_t ldy, size_t rows)
{
    return mm_at(m, w, x, xoff, ldx, y, 0, ldy, rows);
}

/* a *= sigmoid(fc2(silu(fc1(a)))) over T rows: the gate of AXK2GatedRMSNorm, after its RMSNorm. */
static clnpu_status gate(clnpu_model *m, const clnpu_weight *fc1, const clnpu_weight *fc2, size_t T)
{
    const size_t d = m->cfg.hidden_size, r = m->cfg.gated_norm_rank;
    model_family *f = m->fam;
    clnpu_status st = mm(m, fc1, m->a, 0, d, f->gn1, r, T);
    if (!st) st = clnpu_silu(m->dev, (clnpu_view){f->gn1, 0, r}, T, r);
    if (!st) st = mm(m, fc2, f->gn1, 0, r, f->gn2, d, T);
    if (!st) st = clnpu_mul_sigmoid(m->dev, (clnpu_view){m->a, 0, d}, 0, (clnpu_view){f->gn2, 0, d}, 0, T, 1, d);
    return st;
}

clnpu_status clnpu_model_family_in_norm(clnpu_model *m, model_layer *ly, size_t T)
{
    const size_t d = m->cfg.hidden_size;
    clnpu_status st = clnpu_rmsnorm(m->dev, (clnpu_view){m->h, 0, d}, (clnpu_view){0}, (clnpu_view){m->a, 0, d},
                                    ly->in_norm, T, d, (float)m->cfg.rms_norm_eps);
    return st ? st : gate(m, ly->in_fc1, ly->in_fc2, T);
}

clnpu_status clnpu_model_family_post_gate(clnpu_model *m, model_layer *ly, size_t T)
{
    return gate(m, ly->post_fc1, ly->post_fc2, T);
}

/* The indexer: keys of these rows into its cache, then each row's top-k of the cached keys
 * (DeepseekV32Indexer.forward). q_resid: q_a_layernorm(q_a_proj(x)). */
static clnpu_status indexer(clnpu_model *m, model_layer *ly, clnpu_view q_resid, size_t T, size_t maxlen)
{
    const clnpu_model_config *c = &m->cfg;
    model_family *f = m->fam;
    const size_t d = c->hidden_size, NH = c->index_n_heads, D = c->index_head_dim;
    clnpu_status st = mm(m, ly->ix_wq, q_resid.buf, q_resid.offset, q_resid.ld, f->iq, NH * D, T);
    if (!st) st = mm(m, ly->ix_wk, m->a, 0, d, f->ik, D, T);
    if (!st) st = clnpu_layernorm(m->dev, (clnpu_view){f->ik, 0, D}, ly->ix_knorm_w, ly->ix_knorm_b, T, D, 1e-6f);
    /* the indexer rotates the first qk_rope_head_dim dims in the half-split form, unlike the main attention */
    if (!st) st = clnpu_rope_apply(m->dev, m->rope, (clnpu_view){f->iq, 0, NH * D}, T, NH, D, m->pos, CLNPU_ROPE_HALF_SPLIT);
    if (!st) st = clnpu_rope_apply(m->dev, m->rope, (clnpu_view){f->ik, 0, D}, T, 1, 0, m->pos, CLNPU_ROPE_HALF_SPLIT);
    if (!st) st = mm(m, ly->ix_w, m->a, 0, d, f->iw, NH, T);
    if (!st)
        st = clnpu_dsa_key_append(m->dev, ly->ix_cache, m->opt.page_size, m->block_table_dev, m->max_blocks,
                                  (clnpu_view){f->ik, 0, D}, D, T, m->seqs, m->pos);
    if (!st) {
        const clnpu_dsa_scores_args a = {{f->iq, 0, NH * D}, {f->iw, 0, NH}, ly->ix_cache, m->opt.page_size,
                                         m->block_table_dev, m->max_blocks, m->seqs, m->pos, T, NH, D, maxlen,
                                         (float)(1.0 / sqrt((double)D * (double)NH)), f->scores, m->opt.max_context};
        st = clnpu_dsa_scores(m->dev, &a);
    }
    if (!st) st = clnpu_dsa_topk(m->dev, f->scores, m->opt.max_context, m->pos, T, f->k, f->idx, f->count);
    return st;
}

/* Per-head products: row r * H + h of x (stride ldx) through matrix h into row r * H + h of y
 * (stride ldy). Many rows (prefill): one GEMM per head over its rows, strided (r at r * H * ldx);
 * a few (decode): one grouped launch of single-row segments. */
static clnpu_status per_head(clnpu_model *m, const clnpu_weight *w, clnpu_buffer *x, size_t ldx, clnpu_buffer *y,
                             size_t ldy, size_t rows)
{
    const size_t H = m->heads;
    if (rows >= 16) {
        clnpu_status st = CLNPU_OK;
        for (size_t h = 0; !st && h < H; h++) {
            clnpu_gemm_args a = clnpu_gemm_args_default();
            a.x = x, a.x_offset = h * ldx, a.ldx = H * ldx, a.y = y, a.y_offset = h * ldy, a.ldy = H * ldy, a.m = rows;
            st = clnpu_gemm(m->dev, w, h, &a);
        }
        return st;
    }
    clnpu_gemm_segment *segs = malloc(rows * H * sizeof *segs);
    if (!segs) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t r = 0; r < rows; r++)
        for (size_t h = 0; h < H; h++) segs[r * H + h] = (clnpu_gemm_segment){h, r * H + h, 1};
    clnpu_gemm_args g = clnpu_gemm_args_default();
    g.x = x, g.ldx = ldx, g.y = y, g.ldy = ldy, g.m = rows * H;
    clnpu_status st = clnpu_gemm_grouped(m->dev, w, segs, rows * H, &g);
    free(segs);
    return st;
}

clnpu_status clnpu_model_family_attention(clnpu_model *m, model_layer *ly, size_t T, size_t maxlen)
{
    const clnpu_model_config *c = &m->cfg;
    model_family *f = m->fam;
    const size_t d = c->hidden_size, H = m->heads, R = c->kv_lora_rank, qr = c->q_lora_rank, nope = c->qk_nope_head_dim,
                 vd = c->v_head_dim, dqk = m->dqk, DR = c->qk_rope_head_dim;
    const float eps = (float)c->rms_norm_eps;
    const clnpu_view none = {0};
    const bool gated = c->attn_output_gate;
    const size_t P = gated ? dqk + vd : dqk; /* a head's stride in the query rows */
    clnpu_buffer *q = gated ? f->qg : m->q;
    clnpu_view q_resid;
    clnpu_status st;
    if (gated) {
        /* q_gate_proj(concat(q_resid, q_compressed)): q_compressed = q_a_proj(x) in columns [qr, 2qr),
         * its RMSNorm q_resid in [0, qr); per head out come the query, then the output gate */
        st = mm_at(m, ly->q_a, m->a, 0, d, f->cq2, qr, 2 * qr, T);
        q_resid = (clnpu_view){f->cq2, 0, 2 * qr};
        if (!st) st = clnpu_rmsnorm(m->dev, (clnpu_view){f->cq2, qr, 2 * qr}, none, q_resid, ly->q_a_norm, T, qr, eps);
        if (!st) st = mm(m, ly->q_b, f->cq2, 0, 2 * qr, q, H * P, T);
    } else {
        st = mm(m, ly->q_a, m->a, 0, d, m->cq, qr, T);
        q_resid = (clnpu_view){m->cq, 0, qr};
        if (!st) st = clnpu_rmsnorm(m->dev, q_resid, none, q_resid, ly->q_a_norm, T, qr, eps);
        if (!st) st = mm(m, ly->q_b, m->cq, 0, qr, q, H * dqk, T);
    }
    /* the latent c | k_pe, as for DeepSeek-V3, into the cache */
    const clnpu_rope_layout layout = c->rope_interleave ? CLNPU_ROPE_INTERLEAVED : CLNPU_ROPE_HALF_SPLIT;
    if (!st) st = mm(m, ly->kv_a, m->a, 0, d, m->kv0, m->lat, T);
    if (!st) st = clnpu_rmsnorm(m->dev, (clnpu_view){m->kv0, 0, m->lat}, none, (clnpu_view){m->kv0, 0, m->lat},
                                ly->kv_a_norm, T, R, eps);
    /* q's rope slices and k_pe in one launch (the sparse attention reads q_pe from q, rotated) */
    if (!st)
        st = clnpu_rope_apply2(m->dev, m->rope, (clnpu_view){q, nope, H * P}, H, P, (clnpu_view){m->kv0, R, m->lat}, 1, 0, T,
                               m->pos, layout);
    if (!st) {
        char opts[96];
        snprintf(opts, sizeof opts, "-DCLNPU_MLA_R=%zu -DCLNPU_MLA_DR=%zu%s", R, DR,
                 clnpu_latent_cache_define(m->opt.latent_cache));
        st = clnpu_model_kv_append(m, ly, opts, (clnpu_view){m->kv0, 0, m->lat}, false, layout, T); /* k_pe rotated above */
    }
    if (!st) st = indexer(m, ly, q_resid, T, maxlen);
    /* absorbed MLA over the selected rows, prefill and decode alike: q_abs = q_nope . W_UK per head,
     * z over the chosen latent rows, attn = z . W_UV^T */
    if (!st) st = per_head(m, ly->uk_t, q, P, f->q_abs, R, T);
    if (!st) {
        const clnpu_mla_sparse_args a = {f->q_abs, q, nope, H * P, P, ly->cache, m->opt.page_size, m->block_table_dev,
                                         m->max_blocks, m->seqs, f->idx, f->count, f->k, T, H, R, DR, m->scale, f->z, 0,
                                         m->opt.latent_cache};
        st = clnpu_mla_sparse(m->dev, &a);
    }
    if (!st) st = per_head(m, ly->uv, f->z, R, m->attn, vd, T);
    if (!st && gated) /* attn_output * sigmoid(gate) before o_proj */
        st = clnpu_mul_sigmoid(m->dev, (clnpu_view){m->attn, 0, H * vd}, vd, (clnpu_view){q, dqk, H * P}, P, T, H, vd);
    return st;
}
