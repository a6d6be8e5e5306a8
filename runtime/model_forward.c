/* The A.X K1 forward pass (architecture notes section 2): prefill through expanded MLA and
 * flash attention, decode through absorbed MLA over the paged latent cache. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "latent_cache.h"
#include "launch.h"
#include "model_internal.h"
#include "rope_table.h"
#include "step.h"
#include "dp.h"
#include "tp.h"

/* Y[rows] = X . W^T (+ Y when residual), with views for X and Y. */
static clnpu_status mm(clnpu_model *m, const clnpu_weight *w, size_t matrix, clnpu_buffer *x, size_t xoff,
                       size_t ldx, clnpu_buffer *y, size_t yoff, size_t ldy, size_t rows, clnpu_epilogue ep)
{
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = x, a.x_offset = xoff, a.ldx = ldx, a.y = y, a.y_offset = yoff, a.ldy = ldy, a.m = rows;
    a.epilogue = ep;
    if (ep == CLNPU_EPILOGUE_RESIDUAL) a.residual = y, a.r_offset = yoff, a.ldr = ldy;
    return clnpu_gemm(m->dev, w, matrix, &a);
}

/* y += x over n floats. */
static clnpu_status add_into(clnpu_model *m, clnpu_buffer *y, clnpu_buffer *x, size_t n)
{
    cl_mem my = clnpu_mem(y), mx = clnpu_mem(x);
    size_t l[1], chunk, groups;
    clnpu_stretches(m->dev, n, l, &chunk, &groups);
    cl_ulong nn = n, ch = chunk;
    clnpu_karg a[] = {KARG(my), KARG(mx), KARG(nn), KARG(ch)};
    size_t g[1] = {groups * l[0]};
    char opts[32];
    return clnpu_launch_group(m->dev, "elementwise.cl", clnpu_lanes_options(m->dev, NULL, opts, sizeof opts),
                              clnpu_group_forward, "clnpu_add_f32", 1, g, l, a, 4);
}

/* Give every (sequence, position) row a cache page; update the device block table if needed. */
static clnpu_status ensure_pages(clnpu_model *m, size_t n, const size_t *seq_of, const size_t *pos_of)
{
    bool changed = false;
    for (size_t i = 0; i < n; i++) {
        if (seq_of[i] >= m->opt.max_sequences)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sequence %zu: the model was created for %zu", seq_of[i],
                              m->opt.max_sequences);
        if (pos_of[i] >= m->opt.max_context)
            return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "sequence %zu: position %zu is past the context of %zu tokens "
                              "(raise max_context)", seq_of[i], pos_of[i], m->opt.max_context);
        int *slot = &m->block_table[seq_of[i] * m->max_blocks + pos_of[i] / m->opt.page_size];
        if (*slot >= 0) continue;
        if (!m->nfree) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "latent cache full: %zu pages in use", m->pages);
        *slot = m->free_pages[--m->nfree];
        m->page_refs[*slot] = 1;
        changed = true;
    }
    if (!changed) return CLNPU_OK;
    return clnpu_buffer_write(m->block_table_dev, 0, m->block_table,
                              m->opt.max_sequences * m->max_blocks * sizeof(int));
}

void clnpu_model_reset(clnpu_model *m, size_t seq)
{
    if (seq >= m->opt.max_sequences) return;
    for (size_t r = 1; m->peers && r < m->tp_size; r++) clnpu_model_reset(m->peers[r - 1], seq);
    for (size_t b = 0; b < m->max_blocks; b++) {
        int *slot = &m->block_table[seq * m->max_blocks + b];
        if (*slot >= 0 && !--m->page_refs[*slot]) m->free_pages[m->nfree++] = *slot;
        *slot = -1;
    }
    m->seq_len[seq] = 0;
}

size_t clnpu_model_sequence_length(const clnpu_model *m, size_t seq)
{
    return seq < m->opt.max_sequences ? m->seq_len[seq] : 0;
}

/* Queue the non-finite check of n floats of b under tag (0: the embedding, l + 1: layer l's
 * output, layers + 1: the logits). One tiny kernel; the host reads the one flag per step. Rank 0
 * of a tensor-parallel group checks for all (its h is the group's); each data-parallel attention
 * replica checks its own rows with its own flag. */
static clnpu_status check_finite(clnpu_model *m, clnpu_buffer *b, size_t n, size_t tag)
{
    if (m->tp_rank || !n) return CLNPU_OK;
    cl_mem x = clnpu_mem(b), f = clnpu_mem(m->nonfinite);
    size_t l[1], chunk, groups;
    clnpu_stretches(m->dev, n, l, &chunk, &groups);
    cl_ulong nn = n, ch = chunk; /* T x vocab can pass 2^32 */
    cl_int t = (cl_int)tag;
    clnpu_karg a[] = {KARG(x), KARG(nn), KARG(ch), KARG(t), KARG(f)};
    size_t g[1] = {groups * l[0]};
    char opts[32];
    return clnpu_launch_group(m->dev, "elementwise.cl", clnpu_lanes_options(m->dev, NULL, opts, sizeof opts),
                              clnpu_group_forward, "clnpu_nonfinite_tag", 1, g, l, a, 5);
}

/* A layer's end in one launch (clnpu_rmsnorm_add_tag): h += x (through post_mlp_norm w1 when the
 * model has it; x NULL: nothing to add), the non-finite check of h under tag, and the next norm
 * into m->a where one follows in this stage: the next layer's input norm (*normed: that layer
 * skips its own), or the final norm before the head. Not with captures (they read h in between)
 * nor with data-parallel attention (its MoE layers leave some devices alone). */
static bool fuse_layer_end(const clnpu_model *m)
{
    return !m->opt.capture && !m->dp;
}

static clnpu_status layer_end(clnpu_model *m, size_t l, size_t T, clnpu_buffer *x, const clnpu_buffer *w1, bool *normed)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t d = c->hidden_size;
    const clnpu_buffer *w2 = NULL;
    if (l + 1 < m->opt.layer_end) w2 = m->layers[l + 1].in_fc1 ? NULL : m->layers[l + 1].in_norm; /* gated: its own */
    else if (m->opt.head) w2 = m->final_norm;
    const clnpu_view xv = {x, 0, d}, hv = {m->h, 0, d}, av = {m->a, 0, d};
    const int tag = m->tp_rank ? -1 : (int)(l + 1); /* rank 0 checks for the group, as check_finite */
    *normed = w2 != NULL;
    return clnpu_rmsnorm_add_tag(m->dev, xv, w1, hv, av, w2, T, d, (float)c->rms_norm_eps, tag, m->nonfinite);
}

/* After a step: the error naming where values first turned NaN / Inf, and the flag reset. */
static clnpu_status nonfinite_report(clnpu_model *m)
{
    if (m->tp_rank) return CLNPU_OK;
    cl_int tag = CL_INT_MAX;
    clnpu_status st = clnpu_buffer_read(m->nonfinite, 0, &tag, sizeof tag);
    if (st || tag == CL_INT_MAX) return st;
    const cl_int reset = CL_INT_MAX;
    clnpu_buffer_write(m->nonfinite, 0, &reset, sizeof reset);
    const size_t L = m->cfg.num_hidden_layers;
    char where[96];
    if (tag == 0) snprintf(where, sizeof where, "the embedding output (model.embed_tokens.weight)");
    else if ((size_t)tag <= L) snprintf(where, sizeof where, "the output of layer %d (model.layers.%d)", tag - 1, tag - 1);
    else snprintf(where, sizeof where, "the logits (model.norm.weight and the LM head)");
    return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "non-finite values (NaN or Inf) in %s: the weights or the config are "
                      "broken (a scan of the weights at load, clnpu run --check-weights, names bad tensors)", where);
}

static clnpu_status capture(clnpu_model *m, size_t index, clnpu_buffer *b, size_t T)
{
    if (!m->opt.capture) return CLNPU_OK;
    const size_t d = m->cfg.hidden_size;
    return clnpu_buffer_read(b, 0, m->hidden + index * m->opt.max_tokens * d, T * d * sizeof(float));
}

/* Attention core, prefill: one sequence, rows at positions p0 .. p0 + T - 1. */
static clnpu_status attention_prefill(clnpu_model *m, model_layer *ly, size_t seq, size_t p0, size_t T)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t H = m->heads, R = c->kv_lora_rank, nope = c->qk_nope_head_dim,
                 vd = c->v_head_dim, S = p0 + T, blk = nope + vd;
    /* The whole context's latent rows (cached prefix + these), expanded to per-head K and V. */
    cl_mem lat = clnpu_mem(m->latent), cache = clnpu_mem(ly->cache), bt = clnpu_mem(m->block_table_dev);
    cl_uint page = (cl_uint)m->opt.page_size, mb = (cl_uint)m->max_blocks, s = (cl_uint)seq;
    clnpu_karg ga[] = {KARG(lat), KARG(cache), KARG(page), KARG(bt), KARG(mb), KARG(s)};
    size_t l2[2] = {clnpu_lanes(m->dev), 1}, g2[2] = {l2[0], S};
    char opts[96], lopts[128];
    snprintf(opts, sizeof opts, "-DCLNPU_MLA_R=%zu -DCLNPU_MLA_DR=%zu%s", R, c->qk_rope_head_dim,
             clnpu_latent_cache_define(m->opt.latent_cache));
    clnpu_status st = clnpu_launch_group(m->dev, "mla.cl", clnpu_lanes_options(m->dev, opts, lopts, sizeof lopts),
                                         clnpu_group_cache, "clnpu_kv_gather", 2, g2, l2, ga, 6);
    if (!st) st = mm(m, ly->kv_b, 0, m->latent, 0, m->lat, m->kvfull, 0, H * blk, S, CLNPU_EPILOGUE_NONE);
    if (!st) {
        cl_mem K = clnpu_mem(m->kfull), kv = clnpu_mem(m->kvfull);
        cl_uint n = (cl_uint)nope, v = (cl_uint)vd, ld = (cl_uint)m->lat, off = (cl_uint)R,
                rope = (cl_uint)c->qk_rope_head_dim, h = (cl_uint)H;
        clnpu_karg ka[] = {KARG(K), KARG(kv), KARG(n), KARG(v), KARG(lat), KARG(ld), KARG(off), KARG(rope), KARG(h)};
        size_t l3[3] = {clnpu_lanes(m->dev), 1, 1}, g3[3] = {l3[0], H, S};
        st = clnpu_launch_group(m->dev, "elementwise.cl", clnpu_lanes_options(m->dev, NULL, lopts, sizeof lopts),
                                clnpu_group_forward, "clnpu_mla_assemble_k", 3, g3, l3, ka, 9);
    }
    if (!st) {
        clnpu_attention_args a = {
            .q = {m->q, 0, H * m->dqk}, .k = {m->kfull, 0, H * m->dqk}, .v = {m->kvfull, nope, H * blk},
            .o = {m->attn, 0, H * vd}, .q_head_stride = m->dqk, .k_head_stride = m->dqk,
            .v_head_stride = blk, .o_head_stride = vd, .heads = H, .dqk = m->dqk, .dv = vd,
            .tokens = T, .prefix = p0, .scale = m->scale};
        st = clnpu_flash_attention(m->dev, &a);
    }
    return st;
}

/* Attention core, decode: one new row per sequence, absorbed form over the latent cache. */
static clnpu_status attention_decode(clnpu_model *m, model_layer *ly, size_t B, size_t maxlen)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t H = m->heads, R = c->kv_lora_rank, nope = c->qk_nope_head_dim, vd = c->v_head_dim;
    /* Per-head products as one grouped GEMM each: row b*H + h of q (stride dqk) goes through
     * matrix h. q_abs[b, h] = q_nope[b, h] . W_UK[h]  (W_UK^T stored per head as [R, nope]). */
    clnpu_gemm_segment *segs = malloc(B * H * sizeof *segs);
    if (!segs) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++) segs[b * H + h] = (clnpu_gemm_segment){h, b * H + h, 1};
    clnpu_gemm_args g = clnpu_gemm_args_default();
    g.x = m->q, g.ldx = m->dqk, g.y = m->q_abs, g.ldy = R, g.m = B * H;
    clnpu_status st = clnpu_gemm_grouped(m->dev, ly->uk_t, segs, B * H, &g);
    if (!st) {
        /* q_pe unrotated in decode: rotated as MLA reads it */
        clnpu_mla_decode_args a = {m->q_abs, m->q, ly->cache, m->opt.page_size, m->step_bt, m->max_blocks,
                                   m->lens, maxlen, B, H, R, c->qk_rope_head_dim, m->scale, m->z, 0,
                                   nope, m->dqk, m->opt.latent_cache, m->rope,
                                   c->rope_interleave ? CLNPU_ROPE_INTERLEAVED : CLNPU_ROPE_HALF_SPLIT};
        st = clnpu_mla_decode(m->dev, &a);
    }
    /* out[b, h] = z[b, h] . W_UV[h]^T */
    g = clnpu_gemm_args_default();
    g.x = m->z, g.ldx = R, g.y = m->attn, g.ldy = vd, g.m = B * H;
    if (!st) st = clnpu_gemm_grouped(m->dev, ly->uv, segs, B * H, &g);
    free(segs);
    return st;
}

clnpu_status clnpu_model_kv_append(clnpu_model *m, model_layer *ly, const char *opts, clnpu_view src, bool rotate,
                                   clnpu_rope_layout layout, size_t T)
{
    cl_mem cache = clnpu_mem(ly->cache), bt = clnpu_mem(m->block_table_dev), sb = clnpu_mem(src.buf),
           sq = clnpu_mem(m->seqs), ps = clnpu_mem(m->pos), tab = rotate ? clnpu_mem(m->rope->buf) : NULL;
    cl_uint page = (cl_uint)m->opt.page_size, mb = (cl_uint)m->max_blocks, off = (cl_uint)src.offset,
            lds = (cl_uint)src.ld, np = rotate ? (cl_uint)m->rope->positions : 0,
            hs = rotate && layout == CLNPU_ROPE_HALF_SPLIT;
    clnpu_karg a[] = {KARG(cache), KARG(page), KARG(bt), KARG(mb), KARG(sb), KARG(off), KARG(lds), KARG(sq), KARG(ps),
                      KARG(tab), KARG(np), KARG(hs)};
    size_t lo[2] = {clnpu_lanes(m->dev), 1}, g[2] = {lo[0], T};
    char lopts[128];
    return clnpu_launch_group(m->dev, "mla.cl", clnpu_lanes_options(m->dev, opts, lopts, sizeof lopts),
                              clnpu_group_cache, "clnpu_kv_append", 2, g, lo, a, 12);
}

/* Dense MLA (A.X K1, DeepSeek-V3): q (through the low-rank q_a / q_b when the model has it), the
 * latent c and k_pe from the normed m->a, the latent rows to the cache, attention into m->attn. */
static clnpu_status attention_dense(clnpu_model *m, model_layer *ly, size_t T, bool decode, const size_t *seq_of,
                                    const size_t *pos_of, size_t maxlen, const char *opts)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t d = c->hidden_size, H = m->heads, R = c->kv_lora_rank;
    const clnpu_view none = {0};
    const float eps = (float)c->rms_norm_eps;
    const clnpu_rope_layout layout = c->rope_interleave ? CLNPU_ROPE_INTERLEAVED : CLNPU_ROPE_HALF_SPLIT;
    clnpu_status st;
    /* q_a and kv_a read the same input: one GEMV into m->cq (q_a's outputs, then c | k_pe) where
     * the load joined them, else two; their norms go in one launch */
    clnpu_view kv0 = {m->kv0, 0, m->lat};
    const size_t QL = c->q_lora_rank, W = QL + m->lat;
    if (ly->qkv_a) {
        kv0 = (clnpu_view){m->cq, QL, W};
        st = mm(m, ly->qkv_a, 0, m->a, 0, d, m->cq, 0, W, T, CLNPU_EPILOGUE_NONE);
        if (!st) st = clnpu_rmsnorm2(m->dev, (clnpu_view){m->cq, 0, W}, ly->q_a_norm, QL, kv0, ly->kv_a_norm, R, T, eps);
        if (!st) st = mm(m, ly->q_b, 0, m->cq, 0, W, m->q, 0, H * m->dqk, T, CLNPU_EPILOGUE_NONE);
    } else if (ly->q_a) {
        st = mm(m, ly->q_a, 0, m->a, 0, d, m->cq, 0, c->q_lora_rank, T, CLNPU_EPILOGUE_NONE);
        if (!st) st = mm(m, ly->kv_a, 0, m->a, 0, d, m->kv0, 0, m->lat, T, CLNPU_EPILOGUE_NONE);
        clnpu_view cq = {m->cq, 0, c->q_lora_rank};
        if (!st) st = clnpu_rmsnorm2(m->dev, cq, ly->q_a_norm, c->q_lora_rank, kv0, ly->kv_a_norm, R, T, eps);
        if (!st) st = mm(m, ly->q_b, 0, m->cq, 0, c->q_lora_rank, m->q, 0, H * m->dqk, T, CLNPU_EPILOGUE_NONE);
    } else {
        st = mm(m, ly->q_b, 0, m->a, 0, d, m->q, 0, H * m->dqk, T, CLNPU_EPILOGUE_NONE);
        if (!st) st = mm(m, ly->kv_a, 0, m->a, 0, d, m->kv0, 0, m->lat, T, CLNPU_EPILOGUE_NONE);
        if (!st) st = clnpu_rmsnorm(m->dev, kv0, none, kv0, ly->kv_a_norm, T, R, eps);
    }
    /* q's rope slices: in prefill here, in decode as MLA reads them (clnpu_mla_decode_args.q_pe_rope) */
    if (!st && !decode)
        st = clnpu_rope_apply(m->dev, m->rope, (clnpu_view){m->q, c->qk_nope_head_dim, H * m->dqk}, T, H, m->dqk,
                              m->pos, layout);
    /* The new latent rows (c | k_pe, rotated on the way) go to the cache before attention reads it. */
    if (!st) st = clnpu_model_kv_append(m, ly, opts, kv0, true, layout, T);
    if (!st) st = decode ? attention_decode(m, ly, T, maxlen) : attention_prefill(m, ly, seq_of[0], pos_of[0], T);
    return st;
}

clnpu_status clnpu_model_forward(clnpu_model *m, size_t T, const int *ids, const size_t *seq_of,
                                 const size_t *pos_of, bool decode, float *logits)
{
    return clnpu_model_forward_stage(m, T, ids, seq_of, pos_of, decode, NULL, NULL, logits);
}

/* Tensor parallel: the partial sums of this rank's heads, features or vocabulary rows in b (in
 * h, rank 0 added the residual) summed over the ranks. A no-op on one device. */
static clnpu_status tp_sum(clnpu_model *m, clnpu_buffer *b, size_t T)
{
    return m->tp ? clnpu_tp_allreduce(m->tp, m->tp_rank, b, T * m->cfg.hidden_size) : CLNPU_OK;
}

/* A step's inputs, checked once before any rank starts (a rank that returned early would leave
 * its peers waiting at their first collective). */
static clnpu_status check_inputs(const clnpu_model *m, size_t T, const int *ids, const float *h_in)
{
    const clnpu_model_config *c = &m->cfg;
    if (T > m->opt.max_tokens)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%zu tokens in one step; the model was created for %zu", T,
                          m->opt.max_tokens);
    if (m->opt.embed ? !ids : !h_in)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "stage %s needs %s", m->opt.embed ? "with the embedding" : "after the first",
                          m->opt.embed ? "token ids" : "the previous stage's hidden states");
    for (size_t i = 0; m->opt.embed && i < T; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= c->vocab_size)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "token id %d at %zu is outside the vocabulary of %zu",
                              ids[i], i, c->vocab_size);
    return CLNPU_OK;
}

/* want_logits: the step computes the LM head (the same on every TP rank). */
static clnpu_status forward_rank(clnpu_model *m, size_t T, const int *ids, const size_t *seq_of, const size_t *pos_of,
                                 bool decode, const float *h_in, float *h_out, float *logits, bool want_logits)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t d = c->hidden_size, H = m->heads, R = c->kv_lora_rank;
    /* the partial products of ranks after the first overwrite h: rank 0 carries the residual */
    const clnpu_epilogue partial = m->tp_rank ? CLNPU_EPILOGUE_NONE : CLNPU_EPILOGUE_RESIDUAL;
    clnpu_status st = ensure_pages(m, T, seq_of, pos_of);
    /* ids, positions, sequences and lengths go up in one write, queued without waiting (a decode
     * step would otherwise sync four times before its first kernel); the step ends with a sync. */
    const size_t slot = m->step_slot / sizeof(int);
    int *hid = m->step_host, *pos = hid + slot, *seq = pos + slot, *lens = seq + slot;
    size_t maxlen = 0;
    for (size_t i = 0; !st && i < T; i++) {
        hid[i] = m->opt.embed ? ids[i] : 0;
        pos[i] = (int)pos_of[i], seq[i] = (int)seq_of[i], lens[i] = (int)pos_of[i] + 1;
        if ((size_t)lens[i] > maxlen) maxlen = (size_t)lens[i];
    }
    if (!st) st = clnpu_buffer_write_async(m->stepbuf, 0, m->step_host, 3 * m->step_slot + T * sizeof(int));
    /* MLA decode reads one block-table row per batch row: the rows of this step's sequences, in
     * their order (the model's table is indexed by sequence). */
    for (size_t b = 0; !st && decode && b < T; b++)
        memcpy(m->step_bt_host + b * m->max_blocks, m->block_table + seq_of[b] * m->max_blocks, m->max_blocks * sizeof(int));
    if (!st && decode) st = clnpu_buffer_write_async(m->step_bt, 0, m->step_bt_host, T * m->max_blocks * sizeof(int));
    if (!st && m->opt.embed) { /* this rank's vocabulary rows (zeros for the others' ids), summed */
        st = clnpu_embed_rows(m->dev, m->h, m->embed, m->embed_dtype, m->ids, T, d, m->v0, m->vocab, c->vocab_size);
        if (!st) st = tp_sum(m, m->h, T);
    } else if (!st) {
        st = clnpu_buffer_write(m->h, 0, h_in, T * d * sizeof(float)); /* from the previous stage */
    }
    if (!st && m->opt.embed) st = check_finite(m, m->h, T * d, 0);
    if (!st && m->opt.embed) st = capture(m, 0, m->h, T);
    const clnpu_view hv = {m->h, 0, d}, av = {m->a, 0, d}, none = {0};
    const float eps = (float)c->rms_norm_eps;
    char opts[96];
    snprintf(opts, sizeof opts, "-DCLNPU_MLA_R=%zu -DCLNPU_MLA_DR=%zu%s", R, c->qk_rope_head_dim,
             clnpu_latent_cache_define(m->opt.latent_cache));
    bool normed = false; /* m->a holds this layer's input norm already (the last layer's end made it) */
    const bool fuse = fuse_layer_end(m);
    for (size_t l = m->opt.layer_begin; !st && l < m->opt.layer_end; l++) {
        model_layer *ly = &m->layers[l];
        if (ly->in_fc1) st = clnpu_model_family_in_norm(m, ly, T);
        else if (!normed) st = clnpu_rmsnorm(m->dev, hv, none, av, ly->in_norm, T, d, eps);
        normed = false;
        bool ended = false; /* layer_end ran: h's check (and the next norm) done */
        if (!st && m->fam) st = clnpu_model_family_attention(m, ly, T, maxlen); /* indexer, gates */
        else if (!st) st = attention_dense(m, ly, T, decode, seq_of, pos_of, maxlen, opts);
        /* h += attn . Wo^T, then the MLP on the post-attention norm */
        if (!st) st = mm(m, ly->o, 0, m->attn, 0, H * c->v_head_dim, m->h, 0, d, T, partial);
        if (!st) st = tp_sum(m, m->h, T);
        const bool moe = clnpu_model_config_is_moe(c, l);
        /* data-parallel attention: a TP peer leaves its device alone in a MoE layer, which the
         * replica that runs the stage's MoE may be using */
        const bool idle = m->dp && moe && m->tp_rank;
        if (!st && !idle) st = clnpu_rmsnorm(m->dev, hv, none, av, ly->post_attn_norm, T, d, eps);
        if (!st && !idle && ly->post_fc1) st = clnpu_model_family_post_gate(m, ly, T);
        if (!st && !moe) {
            st = mm(m, ly->dense_gate_up, 0, m->a, 0, d, m->mlp_h, 0, m->inter, T, CLNPU_EPILOGUE_SWIGLU);
            if (!st) st = mm(m, ly->dense_down, 0, m->mlp_h, 0, m->inter, m->h, 0, d, T, partial);
            if (!st) st = tp_sum(m, m->h, T);
            if (!st && fuse) st = layer_end(m, l, T, NULL, NULL, &normed), ended = true;
        } else if (!st) {
            /* rank 0: routed experts + its slice of the shared expert; a peer: its slice only;
             * summed over the ranks before the norm after the block */
            clnpu_view mv = {m->mlp, 0, d};
            if (m->dp && !m->tp_rank) { /* the stage's MoE, on every replica's rows at once */
                st = clnpu_dp_moe(m->dp, m->replica, m, l, T);
            } else if (idle) {
                /* adds nothing to the replica's sum below */
            } else if (ly->moe && !m->tp_rank) { /* (a peer's block only serves its shard) */
                st = clnpu_moe_block_forward(m->dev, ly->moe, av, T, mv);
            } else if (ly->dense_gate_up) {
                st = mm(m, ly->dense_gate_up, 0, m->a, 0, d, m->mlp_h, 0, m->shared, T, CLNPU_EPILOGUE_SWIGLU);
                if (!st) st = mm(m, ly->dense_down, 0, m->mlp_h, 0, m->shared, m->mlp, 0, d, T, CLNPU_EPILOGUE_NONE);
            } else {
                const float zero = 0;
                st = clnpu_buffer_fill(m->mlp, &zero, sizeof zero);
            }
            /* a peer in its own process serves its expert shard while rank 0 runs the block (with
             * attention replicas: meets them with no rows of its own) */
            if (!st && m->tp && m->tp_rank) st = clnpu_tp_peer_moe(m->tp, l);
            if (!st) st = m->tp ? clnpu_tp_allreduce_add(m->tp, m->tp_rank, m->mlp, T * d, !idle) : CLNPU_OK;
            if (!st && fuse) {
                st = layer_end(m, l, T, m->mlp, ly->post_mlp_norm, &normed), ended = true;
            } else {
                if (!st && ly->post_mlp_norm) st = clnpu_rmsnorm(m->dev, mv, none, mv, ly->post_mlp_norm, T, d, eps);
                if (!st) st = add_into(m, m->h, m->mlp, T * d);
            }
            if (!st && m->opt.capture && ly->moe && !m->dp) {
                const size_t K = c->num_experts_per_tok, off = l * m->opt.max_tokens * K;
                st = clnpu_moe_block_last_routing(ly->moe, m->route_ids + off, m->route_w + off);
            }
        }
        if (!st && !idle && !ended) st = check_finite(m, m->h, T * d, l + 1);
        if (!st) st = capture(m, l + 1, m->h, T);
    }
    if (!st && !m->opt.head && h_out) st = clnpu_buffer_read(m->h, 0, h_out, T * d * sizeof(float));
    if (!st && m->opt.head && !normed) st = clnpu_rmsnorm(m->dev, hv, none, av, m->final_norm, T, d, eps);
    if (!st && m->opt.head) st = capture(m, c->num_hidden_layers + 1, m->a, T);
    if (!st && want_logits && m->opt.head) {
        /* this rank's vocabulary columns: rank 0's in place in [HT][vocab], the others' gathered;
         * HT = 1 when only the last row's logits are used (a prompt before generation: the head
         * of the other rows is vocab x hidden work per row for nothing) */
        const size_t ld = m->tp_rank ? m->vocab : c->vocab_size;
        const size_t h0 = m->head_last_only ? T - 1 : 0, HT = T - h0;
        st = mm(m, m->lm_head, 0, m->a, h0 * d, d, m->logits, 0, ld, HT, CLNPU_EPILOGUE_NONE);
        if (!st && m->tp)
            st = clnpu_tp_gather_columns(m->tp, m->tp_rank, m->logits, HT, m->v0, m->vocab, c->vocab_size, m->logits_host);
        if (!st) st = check_finite(m, m->logits, HT * c->vocab_size, c->num_hidden_layers + 1);
        /* sampling on the device: only the ids cross back */
        if (!st && m->sample)
            st = clnpu_sample(m->dev, m->sampled, (clnpu_view){m->logits, 0, c->vocab_size}, HT, c->vocab_size, m->sample,
                              m->sample_step);
        if (!st && m->sample) st = clnpu_buffer_read(m->sampled, 0, m->sample_out, HT * sizeof(int));
        if (!st && logits) st = clnpu_buffer_read(m->logits, 0, logits, HT * c->vocab_size * sizeof(float));
    }
    if (st && m->tp) clnpu_tp_fail(m->tp, m->tp_rank, st); /* release the ranks waiting for this one */
    if (st && m->dp && !m->tp_rank) clnpu_dp_fail(m->dp, m->replica, st); /* and the other replicas */
    /* Always: the queued upload reads m->step_host until here, even after a failure. */
    clnpu_status fin = clnpu_device_finish(m->dev);
    if (!st) st = fin;
    if (!st) st = nonfinite_report(m);
    if (!st) {
        m->captured_tokens = T;
        for (size_t i = 0; i < T; i++)
            if (pos_of[i] + 1 > m->seq_len[seq_of[i]]) m->seq_len[seq_of[i]] = pos_of[i] + 1;
    }
    return st;
}

clnpu_status clnpu_model_forward_rank(clnpu_model *m, size_t T, const int *ids, const size_t *seq_of, const size_t *pos_of,
                                      bool decode, const float *h_in, float *h_out, float *logits, bool want_logits)
{
    if (!T) return CLNPU_OK;
    clnpu_status st = m->tp_rank ? CLNPU_OK : check_inputs(m, T, ids, h_in);
    return st ? st : forward_rank(m, T, ids, seq_of, pos_of, decode, h_in, h_out, logits, want_logits);
}

typedef struct tp_call {
    clnpu_model *m;
    size_t T;
    const int *ids;
    const size_t *seq_of, *pos_of;
    bool decode;
    const float *h_in;
    bool want_logits;
} tp_call;

static void *tp_rank_main(void *arg)
{
    const tp_call *a = arg;
    forward_rank(a->m, a->T, a->ids, a->seq_of, a->pos_of, a->decode, a->h_in, NULL, NULL, a->want_logits); /* fails into the group */
    return NULL;
}

clnpu_status clnpu_model_forward_stage(clnpu_model *m, size_t T, const int *ids, const size_t *seq_of,
                                       const size_t *pos_of, bool decode, const float *h_in, float *h_out,
                                       float *logits)
{
    if (!T) return CLNPU_OK;
    clnpu_status st = check_inputs(m, T, ids, h_in);
    if (st) return st;
    const bool want_logits = logits || m->sample;
    if (!m->peers) return forward_rank(m, T, ids, seq_of, pos_of, decode, h_in, h_out, logits, want_logits);
    /* tensor parallel: ranks 1.. on their own threads, rank 0 on this one */
    const size_t n = m->tp_size - 1;
    pthread_t th[CLNPU_MAX_TP];
    tp_call calls[CLNPU_MAX_TP];
    size_t started = 0;
    clnpu_tp_group_begin(m->tp);
    for (; started < n; started++) {
        m->peers[started]->head_last_only = m->head_last_only; /* the same rows on every rank */
        calls[started] = (tp_call){m->peers[started], T, ids, seq_of, pos_of, decode, h_in, want_logits};
        if (pthread_create(&th[started], NULL, tp_rank_main, &calls[started])) {
            clnpu_tp_fail(m->tp, started + 1, clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "cannot start its host thread"));
            break;
        }
    }
    st = forward_rank(m, T, ids, seq_of, pos_of, decode, h_in, h_out, logits, want_logits);
    for (size_t i = 0; i < started; i++) pthread_join(th[i], NULL);
    const clnpu_status group = clnpu_tp_group_status(m->tp); /* the first failure, with its message */
    return group ? group : st;
}

static clnpu_status model_step(void *ctx, size_t n, const int *ids, const size_t *seqs, const size_t *pos, bool decode,
                               float *logits)
{
    return clnpu_model_forward(ctx, n, ids, seqs, pos, decode, logits);
}

static clnpu_stepper stepper(clnpu_model *m)
{
    return (clnpu_stepper){model_step, m, m->seq_len, m->opt.max_sequences, m->opt.max_tokens, m->cfg.vocab_size, "model",
                           NULL};
}

clnpu_status clnpu_model_prefill(clnpu_model *m, size_t seq, const int *ids, size_t n, float *logits)
{
    const clnpu_stepper s = stepper(m);
    return clnpu_step_prefill(&s, seq, ids, n, logits);
}

clnpu_status clnpu_model_prefill_last(clnpu_model *m, size_t seq, const int *ids, size_t n, float *last_logits)
{
    if (!n) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "prefill: no tokens");
    /* the chunks clnpu_model_prefill would make; all but the last without the head */
    const size_t chunk = m->opt.max_tokens ? m->opt.max_tokens : n, tail = (n - 1) % chunk + 1;
    clnpu_status st = n > tail ? clnpu_model_prefill(m, seq, ids, n - tail, NULL) : CLNPU_OK;
    m->head_last_only = true;
    if (!st) st = clnpu_model_prefill(m, seq, ids + n - tail, tail, last_logits);
    m->head_last_only = false;
    return st;
}

clnpu_status clnpu_model_decode(clnpu_model *m, const size_t *seqs, const int *ids, size_t n, float *logits)
{
    const clnpu_stepper s = stepper(m);
    return clnpu_step_decode(&s, seqs, ids, n, logits);
}

clnpu_status clnpu_model_decode_sample(clnpu_model *m, const size_t *seqs, const int *ids, size_t n,
                                       const clnpu_sampling *s, size_t step, int *out_ids, float *logits)
{
    if (!s || !out_ids) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "decode with sampling: no sampling or output");
    if (!m->opt.head) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "decode with sampling: this stage has no head");
    m->sample = s, m->sample_step = step, m->sample_out = out_ids;
    clnpu_status st = clnpu_model_decode(m, seqs, ids, n, logits);
    m->sample = NULL, m->sample_out = NULL;
    return st;
}

clnpu_status clnpu_model_hidden(const clnpu_model *m, size_t index, float *out)
{
    if (!m->opt.capture || index > m->cfg.num_hidden_layers + 1)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "hidden state %zu: not captured", index);
    memcpy(out, m->hidden + index * m->opt.max_tokens * m->cfg.hidden_size,
           m->captured_tokens * m->cfg.hidden_size * sizeof(float));
    return CLNPU_OK;
}

clnpu_status clnpu_model_routing(const clnpu_model *m, size_t layer, int *ids, float *w)
{
    if (!m->opt.capture || layer >= m->cfg.num_hidden_layers || !m->layers[layer].moe)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "routing of layer %zu: not a captured MoE layer", layer);
    const size_t K = m->cfg.num_experts_per_tok, off = layer * m->opt.max_tokens * K;
    if (ids) memcpy(ids, m->route_ids + off, m->captured_tokens * K * sizeof(int));
    if (w) memcpy(w, m->route_w + off, m->captured_tokens * K * sizeof(float));
    return CLNPU_OK;
}
