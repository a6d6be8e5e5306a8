/* Transformer operators on a device (besides GEMM, see gemm.h): RMSNorm, RoPE with YaRN,
 * flash attention (prefill), MLA decode attention, MoE routing and dispatch, sampling.
 * All tensors are f32 on the device unless said otherwise; a clnpu_view names a row-major
 * matrix inside a buffer (offset and row stride in elements). Calls enqueue and return. From
 * examples/rmsnorm.c:
 *
 *     clnpu_view x = {buf, 0, DIM};                                        // rows of DIM floats
 *     CHECK(clnpu_rmsnorm(dev, x, (clnpu_view){0}, x, norm_w, T, DIM, eps)); // in place, queued
 *     CHECK(clnpu_buffer_read(buf, 0, y, sizeof y));
 *
 * Views borrow their buffers for the call; the device and its buffers follow device.h's rules.
 */
#ifndef CLNPU_OPS_H
#define CLNPU_OPS_H

#include "clnpu/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clnpu/device.h"
#include "clnpu/dtype.h"
#include "clnpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clnpu_view {
    clnpu_buffer *buf;
    size_t offset; /* elements */
    size_t ld;     /* row stride in elements */
} clnpu_view;

/* y = w * h / sqrt(mean(h^2) + eps) per row, with h = x, or (residual.buf set) h = residual +=
 * x first (the fused add + norm; residual keeps the sum). y may alias x. w: f32 [dim]. */
CLNPU_API clnpu_status clnpu_rmsnorm(clnpu_device *dev, clnpu_view x, clnpu_view residual, clnpu_view y,
                           const clnpu_buffer *w, size_t rows, size_t dim, float eps);

/* Two sets of `rows` rows normalised in place in one launch: x (dim wide, weight w) and x2 (dim2,
 * w2); MLA's q_a and kv_a outputs. */
CLNPU_API clnpu_status clnpu_rmsnorm2(clnpu_device *dev, clnpu_view x, const clnpu_buffer *w, size_t dim,
                            clnpu_view x2, const clnpu_buffer *w2, size_t dim2, size_t rows, float eps);

/* A decoder layer's end in one launch: per row h += x, or h += norm(x) * w1 with w1 (x.buf NULL:
 * nothing added); with tag >= 0, int32 *flag lowered to tag (atomic min) where h holds NaN / Inf;
 * with w2, y = norm(h) * w2 (the next layer's input norm). y must not alias h or x. */
CLNPU_API clnpu_status clnpu_rmsnorm_add_tag(clnpu_device *dev, clnpu_view x, const clnpu_buffer *w1, clnpu_view h,
                                   clnpu_view y, const clnpu_buffer *w2, size_t rows, size_t dim, float eps,
                                   int tag, clnpu_buffer *flag);

/* y = silu(g) * u, rows x n. */
CLNPU_API clnpu_status clnpu_silu_mul(clnpu_device *dev, clnpu_view y, clnpu_view g, clnpu_view u,
                            size_t rows, size_t n);

/* y[t] = table[ids[t]] for t < count; table is [vocab][dim] in bf16 or f32; ids are int32.
 * An id outside the table yields a row of NaN. */
CLNPU_API clnpu_status clnpu_embed(clnpu_device *dev, clnpu_buffer *y, const clnpu_buffer *table,
                         clnpu_dtype table_dtype, const clnpu_buffer *ids, size_t count,
                         size_t dim, size_t vocab);
/* The same where table holds rows [first, first + rows) of the vocabulary (a tensor-parallel
 * slice): ids of the vocabulary outside the slice give rows of zeros. */
CLNPU_API clnpu_status clnpu_embed_rows(clnpu_device *dev, clnpu_buffer *y, const clnpu_buffer *table,
                              clnpu_dtype table_dtype, const clnpu_buffer *ids, size_t count, size_t dim,
                              size_t first, size_t rows, size_t vocab);

/* Row softmax in place; row argmax into int32 out (ties: lowest index). */
CLNPU_API clnpu_status clnpu_softmax(clnpu_device *dev, clnpu_view x, size_t rows, size_t n);
CLNPU_API clnpu_status clnpu_argmax(clnpu_device *dev, clnpu_buffer *out, clnpu_view x, size_t rows, size_t n);

/* ---- RoPE / YaRN ---- */

typedef enum clnpu_rope_scaling { CLNPU_ROPE_NONE = 0, CLNPU_ROPE_YARN } clnpu_rope_scaling;

typedef struct clnpu_rope_config {
    size_t dim;          /* rotated dims (qk_rope_head_dim) */
    double theta;        /* rope_theta */
    clnpu_rope_scaling scaling;
    double factor;       /* YaRN */
    double original_max_position_embeddings;
    double beta_fast, beta_slow;
    double mscale, mscale_all_dim;
} clnpu_rope_config;

/* inv_freq[i], i < dim/2 (HF _compute_yarn_parameters / vLLM DeepseekScalingRotaryEmbedding). */
CLNPU_API void clnpu_rope_inv_freq(const clnpu_rope_config *cfg, double *out_inv_freq);
/* The factor cos/sin are multiplied by: g(f, mscale) / g(f, mscale_all_dim), 1 without YaRN.
 * g(f, m) = 0.1 m ln f + 1 (1 when f <= 1). A.X K1 (mscale 1, mscale_all_dim 0): 1.1386. */
CLNPU_API double clnpu_rope_attention_factor(const clnpu_rope_config *cfg);
/* Softmax scale qk_head_dim^-0.5, times g(f, mscale_all_dim)^2 when mscale_all_dim != 0
 * (the DeepSeek-V3 branch). */
CLNPU_API double clnpu_rope_softmax_scale(const clnpu_rope_config *cfg, size_t qk_head_dim);

typedef struct clnpu_rope_table clnpu_rope_table;
/* cos/sin (x attention factor) for positions [0, max_positions), built once on the host in
 * float64 and uploaded. */
CLNPU_API clnpu_status clnpu_rope_table_create(clnpu_device *dev, const clnpu_rope_config *cfg,
                                     size_t max_positions, clnpu_rope_table **out_table);
CLNPU_API void clnpu_rope_table_destroy(clnpu_rope_table *table);

typedef enum clnpu_rope_layout {
    CLNPU_ROPE_INTERLEAVED = 0, /* pairs (2i, 2i+1): A.X K1, DeepSeek */
    CLNPU_ROPE_HALF_SPLIT,      /* pairs (i, i + dim/2): NeoX / Llama */
} clnpu_rope_layout;

/* Rotate, in place, the rope slice of `heads` vectors per row: element i of head h of row t is
 * at x.offset + t * x.ld + h * head_stride + i. positions: int32 [rows], < max_positions. */
CLNPU_API clnpu_status clnpu_rope_apply(clnpu_device *dev, const clnpu_rope_table *table, clnpu_view x,
                              size_t rows, size_t heads, size_t head_stride,
                              const clnpu_buffer *positions, clnpu_rope_layout layout);
/* The same on two tensors of the same rows in one launch: `heads` vectors of x, then `heads2` of
 * x2 (MLA: q's heads and the shared k_pe). */
CLNPU_API clnpu_status clnpu_rope_apply2(clnpu_device *dev, const clnpu_rope_table *table, clnpu_view x,
                               size_t heads, size_t head_stride, clnpu_view x2, size_t heads2,
                               size_t head_stride2, size_t rows, const clnpu_buffer *positions,
                               clnpu_rope_layout layout);

/* ---- attention ---- */

typedef struct clnpu_attention_args {
    clnpu_view q, k, v, o;          /* rows = tokens; head h of row t at + h * *_head_stride */
    size_t q_head_stride, k_head_stride, v_head_stride, o_head_stride;
    size_t heads, dqk, dv;          /* dqk, dv multiples of 4 */
    size_t tokens;                  /* T new queries */
    size_t prefix;                  /* P cached keys before them; k and v hold P + T rows */
    float scale;                    /* softmax scale */
} clnpu_attention_args;

/* Causal flash attention (prefill / chunked prefill): query t sees keys 0 .. P + t. Two kernels:
 * key/value tiles in local memory sized from the profile's budget (GPUs, NPUs), and a
 * register-blocked one with the queries in vector lanes for devices whose local memory is
 * ordinary memory (CPUs). */
CLNPU_API clnpu_status clnpu_flash_attention(clnpu_device *dev, const clnpu_attention_args *args);
/* Which kernel clnpu_flash_attention uses on this device: true for the register-blocked one.
 * CLNPU_ATTENTION=local|registers overrides the choice (tests run both on one device). */
CLNPU_API bool clnpu_attention_uses_registers(const clnpu_device *dev);

typedef struct clnpu_mla_decode_args {
    const clnpu_buffer *q_abs;       /* [B][H][R]: q_nope folded through W_UK */
    const clnpu_buffer *q_pe;        /* (b, h) at q_pe_offset + (b*H + h) * q_pe_stride; rotated, or see q_pe_rope */
    const clnpu_buffer *cache;       /* pages [n][page_size][R + DR]: c then rotated k_pe */
    size_t page_size;
    const clnpu_buffer *block_table; /* int32 [B][max_blocks] page ids */
    size_t max_blocks;
    const clnpu_buffer *seq_len;     /* int32 [B], each >= 1 */
    size_t max_seq_len;              /* the largest of seq_len (sizes the context split) */
    size_t batch, heads, rank, rope_dim;
    float scale;
    clnpu_buffer *out;               /* [B][H][R]: z = sum_t p_t c_t */
    unsigned splits;                 /* 0: choose from the context length and device */
    size_t q_pe_offset, q_pe_stride; /* elements; stride 0 = rope_dim (dense [B][H][DR]) */
    clnpu_dtype cache_dtype;         /* the cache's rows: CLNPU_DTYPE_F32 (0), BF16 or FP8_E4M3 (see below) */
    /* NULL: q_pe comes rotated; else q_pe is rotated as it is read, at position seq_len - 1 (the new
     * token's), with this table (dim = rope_dim) and layout: a decode step's RoPE launch saved */
    const clnpu_rope_table *q_pe_rope;
    clnpu_rope_layout q_pe_layout;
} clnpu_mla_decode_args;

/* Bytes of one latent cache row [c (rank) | k_pe (rope_dim)] of a cache type; 0 for a type the
 * kernels do not keep. f32 and bf16 rows are rank + rope_dim elements; an FP8_E4M3 row is
 * DeepSeek-V3.2 / FlashMLA's: rank fp8 e4m3fn codes of c, then one f32 power-of-two scale per
 * CLNPU_LATENT_CACHE_FP8_TILE elements of c (c = code * scale), then k_pe in bf16 (656 bytes for
 * rank 512, rope 64). Pages hold page_size rows back to back. */
#define CLNPU_LATENT_CACHE_FP8_TILE 128
CLNPU_API size_t clnpu_latent_cache_row_bytes(clnpu_dtype dtype, size_t rank, size_t rope_dim);

/* Absorbed MLA decode over a paged latent cache, split over the context with a reduction. */
CLNPU_API clnpu_status clnpu_mla_decode(clnpu_device *dev, const clnpu_mla_decode_args *args);

/* ---- MoE ---- */

typedef struct clnpu_moe_config {
    size_t experts, n_group, topk_group, top_k;
    bool norm_topk_prob;
    float routed_scaling_factor;
    /* A.X K2's grouped routing (transformers AXK2TopkRouter): the experts of the groups not kept
     * compete with a choice score of 0 instead of being excluded (DeepSeek-V3: excluded) */
    bool masked_groups_score_zero;
} clnpu_moe_config;

/* Routing (sigmoid, noaux_tc grouped top-k): ids int32 [T][top_k] ascending, weights f32. */
CLNPU_API clnpu_status clnpu_moe_route(clnpu_device *dev, clnpu_view logits, const clnpu_buffer *bias,
                             size_t tokens, const clnpu_moe_config *cfg, clnpu_buffer *ids,
                             clnpu_buffer *weights);

/* Dispatch plan: counts int32 [E], offsets int32 [E + 1], src int32 [T * top_k] (token of each
 * permuted row), slot_row int32 [T * top_k] (permuted row of each (token, slot)). Entries past
 * those (counts[E], src[T * top_k] ..) are left as they are. */
CLNPU_API clnpu_status clnpu_moe_plan(clnpu_device *dev, const clnpu_buffer *ids, size_t tokens,
                            size_t top_k, size_t experts, clnpu_buffer *counts,
                            clnpu_buffer *offsets, clnpu_buffer *src, clnpu_buffer *slot_row);
/* xp[p] = x[src[p]] for p < rows. */
CLNPU_API clnpu_status clnpu_moe_gather(clnpu_device *dev, clnpu_buffer *xp, clnpu_view x,
                              const clnpu_buffer *src, size_t rows, size_t dim);
/* out[t] = base[t] (if base.buf; base.offset allowed) + sum_j w[t][j] * yp[slot_row[t][j]], fp32. */
CLNPU_API clnpu_status clnpu_moe_combine(clnpu_device *dev, clnpu_view out, clnpu_view base,
                               const clnpu_buffer *yp, const clnpu_buffer *slot_row,
                               const clnpu_buffer *weights, size_t tokens, size_t top_k,
                               size_t dim);

/* ---- sampling ---- */

typedef struct clnpu_sampling {
    float temperature; /* <= 0: greedy */
    unsigned top_k;    /* 0: off */
    float top_p;       /* >= 1 or <= 0: off */
    uint64_t seed;
} clnpu_sampling;

/* One token per row; `step` makes successive draws of one seed differ reproducibly. */
CLNPU_API clnpu_status clnpu_sample(clnpu_device *dev, clnpu_buffer *out, clnpu_view logits, size_t rows,
                          size_t n, const clnpu_sampling *params, uint64_t step);

#ifdef __cplusplus
}
#endif
#endif
