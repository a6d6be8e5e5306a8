/* Host side of DeepSeek Sparse Attention (kernels-cl/dsa.cl): argument checks and launches of the
 * indexer scores, the top-k selection, sparse absorbed MLA, and the small elementwise kernels; the
 * wg family's scores, top-k, sparse MLA and LayerNorm (kernels-cl/dsa_wg.cl) through dsa_wg.c. */
#include <stdio.h>

#include "../common/error.h"
#include "dsa_internal.h"
#include "latent_cache.h"

static bool fits(const clnpu_buffer *b, size_t floats)
{
    return b && clnpu_buffer_size(b) >= floats * 4;
}

clnpu_status clnpu_dsa_scores(clnpu_device *dev, const clnpu_dsa_scores_args *a)
{
    if (!a || !a->q.buf || !a->w.buf || !a->key_cache || !a->block_table || !a->seq || !a->pos || !a->scores)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "dsa scores: NULL argument");
    if (!a->tokens) return CLNPU_OK;
    const size_t T = a->tokens, NH = a->heads, D = a->head_dim;
    if (!NH || !D || D % 4 || !a->page_size || !a->max_len || a->ld < a->max_len ||
        a->max_len > a->max_blocks * a->page_size)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "dsa scores: heads and head dim (a multiple of 4) must be "
                          "positive, ld >= max_len, max_len within the block table");
    if (!fits(a->q.buf, a->q.offset + (T - 1) * a->q.ld + NH * D) || !fits(a->w.buf, a->w.offset + (T - 1) * a->w.ld + NH) ||
        !fits(a->scores, T * a->ld) || !fits(a->seq, T) || !fits(a->pos, T))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "dsa scores: a buffer is smaller than its shape");
    char opts[64];
    snprintf(opts, sizeof opts, "-DCLNPU_DSA_D=%zu", D);
    cl_mem q = clnpu_mem(a->q.buf), w = clnpu_mem(a->w.buf), kc = clnpu_mem(a->key_cache), bt = clnpu_mem(a->block_table),
           sq = clnpu_mem(a->seq), ps = clnpu_mem(a->pos), sc = clnpu_mem(a->scores);
    cl_uint qo = (cl_uint)a->q.offset, qld = (cl_uint)a->q.ld, wo = (cl_uint)a->w.offset, wld = (cl_uint)a->w.ld,
            page = (cl_uint)a->page_size, mb = (cl_uint)a->max_blocks, lds = (cl_uint)a->ld, nh = (cl_uint)NH;
    cl_float s = a->scale;
    clnpu_karg args[] = {KARG(q), KARG(qo), KARG(qld), KARG(w), KARG(wo), KARG(wld), KARG(kc), KARG(page),
                         KARG(bt), KARG(mb), KARG(sq), KARG(ps), KARG(sc), KARG(lds), KARG(nh), KARG(s)};
    if (clnpu_dsa_use_wg(dev)) return clnpu_dsa_scores_wg(dev, a, args);
    /* every key column of the row up to max_len; later columns of a row are never read */
    size_t g[2] = {(a->max_len + 7) / 8, T}; /* CLNPU_DSA_KB (8) keys per work-item */
    return clnpu_launch(dev, "dsa.cl", opts, "clnpu_dsa_scores", 2, g, NULL, args, 16);
}

clnpu_status clnpu_dsa_topk(clnpu_device *dev, const clnpu_buffer *scores, size_t ld, const clnpu_buffer *pos,
                            size_t T, size_t k, clnpu_buffer *idx, clnpu_buffer *count)
{
    if (!scores || !pos || !idx || !count) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "dsa top-k: NULL argument");
    if (!T) return CLNPU_OK;
    if (!k || !ld) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "dsa top-k: k and the row stride must be positive");
    if (!fits(scores, T * ld) || !fits(pos, T) || !fits(idx, T * k) || !fits(count, T))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "dsa top-k: a buffer is smaller than its shape");
    cl_mem s = clnpu_mem(scores), p = clnpu_mem(pos), i = clnpu_mem(idx), c = clnpu_mem(count);
    cl_uint l = (cl_uint)ld, kk = (cl_uint)k, li = (cl_uint)k;
    clnpu_karg args[] = {KARG(s), KARG(l), KARG(p), KARG(kk), KARG(i), KARG(li), KARG(c)};
    if (clnpu_dsa_use_wg(dev)) return clnpu_dsa_topk_wg(dev, T, args);
    size_t g[1] = {T};
    return clnpu_launch(dev, "dsa.cl", NULL, "clnpu_dsa_topk", 1, g, NULL, args, 7);
}

clnpu_status clnpu_mla_sparse(clnpu_device *dev, const clnpu_mla_sparse_args *a)
{
    if (!a || !a->q_abs || !a->q_pe || !a->cache || !a->block_table || !a->seq || !a->idx || !a->count || !a->out)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mla sparse: NULL argument");
    if (!a->rows || !a->heads) return CLNPU_OK;
    const size_t N = a->rows, H = a->heads, R = a->rank;
    if (!R || R % 4 || a->rope_dim % 4 || !a->page_size || !a->k)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mla sparse: rank and rope dim must be multiples of 4; page size "
                          "and k positive");
    clnpu_status cst = clnpu_latent_cache_check(a->cache_dtype, "mla sparse");
    if (cst) return cst;
    if (!fits(a->q_abs, N * H * R) || !fits(a->out, N * H * R) || !fits(a->seq, N) || !fits(a->count, N) ||
        !fits(a->idx, N * a->k) ||
        !fits(a->q_pe, a->q_pe_offset + (N - 1) * a->q_pe_ld + (H - 1) * a->q_pe_hs + a->rope_dim))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mla sparse: a buffer is smaller than its shape");
    const size_t hg = H < 8 ? H : 8; /* heads per work-item share each latent row they read */
    /* chunks of the selection when the rows and head groups alone would leave compute units idle
     * (decode of a few sequences), as clnpu_mla_decode splits the context; at least 256 rows each */
    unsigned splits = a->splits;
    if (!splits) {
        const size_t cus = clnpu_device_get_info(dev)->compute_units, items = N * ((H + hg - 1) / hg);
        splits = items >= 4 * cus ? 1 : (unsigned)((4 * cus + items - 1) / items);
        if (splits > (a->k + 255) / 256) splits = (unsigned)((a->k + 255) / 256);
        if (!splits) splits = 1;
    }
    const size_t chunk = (a->k + splits - 1) / splits;
    clnpu_buffer *pz = NULL, *pml = NULL;
    clnpu_status st = splits == 1 ? CLNPU_OK : clnpu_buffer_create(dev, N * H * splits * R * sizeof(float), &pz);
    if (!st && splits > 1) st = clnpu_buffer_create(dev, N * H * splits * 2 * sizeof(float), &pml);
    char opts[128];
    snprintf(opts, sizeof opts, "-DCLNPU_MLA_R=%zu -DCLNPU_MLA_DR=%zu -DCLNPU_MLA_HG=%zu%s", R, a->rope_dim, hg,
             clnpu_latent_cache_define(a->cache_dtype));
    if (!st) {
        cl_mem qa = clnpu_mem(a->q_abs), qp = clnpu_mem(a->q_pe), c = clnpu_mem(a->cache), bt = clnpu_mem(a->block_table),
               sq = clnpu_mem(a->seq), ix = clnpu_mem(a->idx), cn = clnpu_mem(a->count),
               o = clnpu_mem(splits > 1 ? pz : a->out), ml = clnpu_mem(splits > 1 ? pml : a->out);
        cl_uint qo = (cl_uint)a->q_pe_offset, qld = (cl_uint)a->q_pe_ld, qhs = (cl_uint)a->q_pe_hs,
                page = (cl_uint)a->page_size, mb = (cl_uint)a->max_blocks, ldi = (cl_uint)a->k, h = (cl_uint)H,
                sp = splits, ch = (cl_uint)chunk;
        cl_float sc = a->scale;
        clnpu_karg args[] = {KARG(qa), KARG(qp), KARG(qo), KARG(qld), KARG(qhs), KARG(c), KARG(page), KARG(bt), KARG(mb),
                             KARG(sq), KARG(ix), KARG(ldi), KARG(cn), KARG(o), KARG(ml), KARG(h), KARG(sp), KARG(ch),
                             KARG(sc)};
        size_t g[3] = {(H + hg - 1) / hg, N, splits};
        st = clnpu_dsa_use_wg(dev) ? clnpu_mla_sparse_wg(dev, a, splits, args)
                                   : clnpu_launch(dev, "dsa.cl", opts, "clnpu_mla_sparse", 3, g, NULL, args, 19);
    }
    if (!st && splits > 1) { /* the same merge as the dense decode's chunks */
        cl_mem mz = clnpu_mem(pz), mml = clnpu_mem(pml), mo = clnpu_mem(a->out);
        cl_uint h = (cl_uint)H, sp = splits;
        clnpu_karg args[] = {KARG(mz), KARG(mml), KARG(mo), KARG(h), KARG(sp)};
        size_t g[3] = {R, H, N}, l[3] = {R % 64 ? 1 : 64, 1, 1};
        st = clnpu_launch(dev, "mla.cl", opts, "clnpu_mla_combine", 3, g, l, args, 5);
    }
    clnpu_buffer_destroy(pz); /* OpenCL keeps them until the queued kernels are done */
    clnpu_buffer_destroy(pml);
    return st;
}

clnpu_status clnpu_dsa_key_append(clnpu_device *dev, clnpu_buffer *cache, size_t page, const clnpu_buffer *bt,
                                  size_t mb, clnpu_view src, size_t D, size_t T, const clnpu_buffer *seq,
                                  const clnpu_buffer *pos)
{
    if (!cache || !bt || !src.buf || !seq || !pos) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "dsa key append: NULL argument");
    if (!T) return CLNPU_OK;
    if (!D || D % 4 || !page || !fits(src.buf, src.offset + (T - 1) * src.ld + D) || !fits(seq, T) || !fits(pos, T))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "dsa key append: bad head dim or a buffer smaller than its shape");
    char opts[64];
    snprintf(opts, sizeof opts, "-DCLNPU_DSA_D=%zu", D);
    cl_mem c = clnpu_mem(cache), b = clnpu_mem(bt), s = clnpu_mem(src.buf), sq = clnpu_mem(seq), ps = clnpu_mem(pos);
    cl_uint pg = (cl_uint)page, m = (cl_uint)mb, so = (cl_uint)src.offset, ld = (cl_uint)src.ld;
    clnpu_karg args[] = {KARG(c), KARG(pg), KARG(b), KARG(m), KARG(s), KARG(so), KARG(ld), KARG(sq), KARG(ps)};
    size_t g[2] = {D, T};
    return clnpu_launch(dev, "dsa.cl", opts, "clnpu_dsa_key_append", 2, g, NULL, args, 9);
}

clnpu_status clnpu_layernorm(clnpu_device *dev, clnpu_view x, const clnpu_buffer *w, const clnpu_buffer *b,
                             size_t T, size_t n, float eps)
{
    if (!x.buf || !w || !b) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "layernorm: NULL argument");
    if (!T) return CLNPU_OK;
    if (!n || !fits(x.buf, x.offset + (T - 1) * x.ld + n) || !fits(w, n) || !fits(b, n))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "layernorm: a buffer is smaller than its shape");
    cl_mem mx = clnpu_mem(x.buf), mw = clnpu_mem(w), mb = clnpu_mem(b);
    cl_uint off = (cl_uint)x.offset, ld = (cl_uint)x.ld, nn = (cl_uint)n;
    cl_float e = eps;
    clnpu_karg args[] = {KARG(mx), KARG(off), KARG(ld), KARG(mw), KARG(mb), KARG(nn), KARG(e)};
    if (clnpu_dsa_use_wg(dev)) return clnpu_layernorm_wg(dev, T, args);
    size_t g[1] = {T};
    return clnpu_launch(dev, "dsa.cl", NULL, "clnpu_layernorm", 1, g, NULL, args, 7);
}

clnpu_status clnpu_mul_sigmoid(clnpu_device *dev, clnpu_view y, size_t yhs, clnpu_view g, size_t ghs, size_t T,
                               size_t heads, size_t n)
{
    if (!y.buf || !g.buf) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mul sigmoid: NULL argument");
    if (!T || !heads || !n) return CLNPU_OK;
    if (!fits(y.buf, y.offset + (T - 1) * y.ld + (heads - 1) * yhs + n) ||
        !fits(g.buf, g.offset + (T - 1) * g.ld + (heads - 1) * ghs + n))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mul sigmoid: a buffer is smaller than its shape");
    cl_mem my = clnpu_mem(y.buf), mg = clnpu_mem(g.buf);
    cl_uint yo = (cl_uint)y.offset, yl = (cl_uint)y.ld, yh = (cl_uint)yhs, go = (cl_uint)g.offset, gl = (cl_uint)g.ld,
            gh = (cl_uint)ghs;
    clnpu_karg args[] = {KARG(my), KARG(yo), KARG(yl), KARG(yh), KARG(mg), KARG(go), KARG(gl), KARG(gh)};
    size_t gs[3] = {n, heads, T};
    return clnpu_launch(dev, "dsa.cl", NULL, "clnpu_mul_sigmoid", 3, gs, NULL, args, 8);
}

clnpu_status clnpu_silu(clnpu_device *dev, clnpu_view x, size_t T, size_t n)
{
    if (!x.buf) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "silu: NULL argument");
    if (!T || !n) return CLNPU_OK;
    if (!fits(x.buf, x.offset + (T - 1) * x.ld + n))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "silu: a buffer is smaller than its shape");
    cl_mem mx = clnpu_mem(x.buf);
    cl_uint off = (cl_uint)x.offset, ld = (cl_uint)x.ld, nn = (cl_uint)n;
    clnpu_karg args[] = {KARG(mx), KARG(off), KARG(ld), KARG(nn)};
    size_t g[2] = {n, T};
    return clnpu_launch(dev, "dsa.cl", NULL, "clnpu_silu", 2, g, NULL, args, 4);
}
