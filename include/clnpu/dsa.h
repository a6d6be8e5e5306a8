/* DeepSeek Sparse Attention (DeepSeek-V3.2, A.X K2) on a device: the lightning indexer's scores
 * over a paged key cache, the index_topk highest per query, and absorbed MLA attention over only
 * those latent rows; plus the small elementwise pieces these models add (LayerNorm with bias,
 * sigmoid gates, SiLU). f32 tensors; calls enqueue and return.
 *
 *     clnpu_dsa_scores(dev, &sa);        // scores [T][ld], -inf past each query's position
 *     clnpu_dsa_topk(dev, scores, ld, pos, T, 2048, idx, count);
 *     clnpu_mla_sparse(dev, &ma);        // z [T][H][R] from the selected cache rows
 */
#ifndef CLNPU_DSA_H
#define CLNPU_DSA_H

#include <stddef.h>

#include "clnpu/device.h"
#include "clnpu/export.h"
#include "clnpu/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Rows (queries) t = 0 .. tokens-1 of sequence seq[t] at position pos[t] (int32 buffers). */
typedef struct clnpu_dsa_scores_args {
    clnpu_view q;                    /* [T] rows of `heads` rotated heads of head_dim (head h at + h * head_dim) */
    clnpu_view w;                    /* [T][heads]: weights_proj(x) */
    const clnpu_buffer *key_cache;   /* pages [n][page_size][head_dim] */
    size_t page_size;
    const clnpu_buffer *block_table; /* int32 [sequences][max_blocks], indexed by seq[t] */
    size_t max_blocks;
    const clnpu_buffer *seq, *pos;   /* int32 [T] */
    size_t tokens, heads, head_dim;
    size_t max_len;                  /* the largest pos[t] + 1 */
    float scale;                     /* head_dim^-0.5 * heads^-0.5 */
    clnpu_buffer *scores;            /* [T][ld] out, ld >= max_len; -inf for keys past pos[t] */
    size_t ld;
} clnpu_dsa_scores_args;

/* score[t][j] = scale * sum_h w[t][h] * relu(q[t][h] . k_j) for j <= pos[t]. */
CLNPU_API clnpu_status clnpu_dsa_scores(clnpu_device *dev, const clnpu_dsa_scores_args *args);

/* For each row t the k highest of scores[t][0 .. pos[t]] (every key when there are no more than
 * k): count[t] indices in increasing order into idx[t][0 .. k) (int32, row stride k); ties at
 * the k-th value go to the lower indices. */
CLNPU_API clnpu_status clnpu_dsa_topk(clnpu_device *dev, const clnpu_buffer *scores, size_t ld, const clnpu_buffer *pos,
                            size_t tokens, size_t k, clnpu_buffer *idx, clnpu_buffer *count);

typedef struct clnpu_mla_sparse_args {
    const clnpu_buffer *q_abs;       /* [rows][H][R]: q_nope folded through W_UK */
    const clnpu_buffer *q_pe;        /* rotated; (r, h) at q_pe_offset + r * q_pe_ld + h * q_pe_hs */
    size_t q_pe_offset, q_pe_ld, q_pe_hs;
    const clnpu_buffer *cache;       /* pages [n][page_size][R + DR]: c then rotated k_pe */
    size_t page_size;
    const clnpu_buffer *block_table; /* int32 [sequences][max_blocks] */
    size_t max_blocks;
    const clnpu_buffer *seq;         /* int32 [rows]: each row's sequence */
    const clnpu_buffer *idx, *count; /* from clnpu_dsa_topk: idx [rows][k], count [rows] >= 1 */
    size_t k;
    size_t rows, heads, rank, rope_dim;
    float scale;
    clnpu_buffer *out;               /* [rows][H][R]: z = sum_j p_j c_j over the selected j */
    unsigned splits;                 /* chunks of the selection merged after (0: choose) */
    clnpu_dtype cache_dtype;         /* the cache's rows: F32 (0), BF16 or FP8_E4M3 (clnpu_latent_cache_row_bytes) */
} clnpu_mla_sparse_args;

/* Split over the selection with a reduction, as clnpu_mla_decode splits the context. */
CLNPU_API clnpu_status clnpu_mla_sparse(clnpu_device *dev, const clnpu_mla_sparse_args *args);

/* Row t of src (head_dim floats) into the paged key cache at (seq[t], pos[t]). */
CLNPU_API clnpu_status clnpu_dsa_key_append(clnpu_device *dev, clnpu_buffer *key_cache, size_t page_size,
                                  const clnpu_buffer *block_table, size_t max_blocks, clnpu_view src,
                                  size_t head_dim, size_t tokens, const clnpu_buffer *seq, const clnpu_buffer *pos);

/* x = (x - mean) / sqrt(var + eps) * weight + bias over rows of n, in place. */
CLNPU_API clnpu_status clnpu_layernorm(clnpu_device *dev, clnpu_view x, const clnpu_buffer *weight, const clnpu_buffer *bias,
                             size_t rows, size_t n, float eps);

/* y[t][h][i] *= sigmoid(g[t][h][i]), i < n, h < heads (head h at + h * *_head_stride). */
CLNPU_API clnpu_status clnpu_mul_sigmoid(clnpu_device *dev, clnpu_view y, size_t y_head_stride, clnpu_view g,
                               size_t g_head_stride, size_t rows, size_t heads, size_t n);

/* x = x * sigmoid(x) over rows of n, in place. */
CLNPU_API clnpu_status clnpu_silu(clnpu_device *dev, clnpu_view x, size_t rows, size_t n);

#ifdef __cplusplus
}
#endif
#endif
