/* A whole MoE block on one device (A.X K1 / DeepSeek-V3 layers 1..):
 *   logits = x . W_router^T (fp32); route (ops.h); tokens permuted by expert; grouped SwiGLU
 *   expert GEMMs (gate/up fused) and down projections; weighted un-permute with fp32
 *   accumulation; plus the shared expert(s) with weight 1.
 *
 *   clnpu_moe_block_create(dev, &cfg, &weights, max_tokens, &moe) uploads the weights (host data
 *   copied during the call); clnpu_moe_block_forward(dev, moe, x, T, out) queues out = MoE(x), not
 *   normalised; clnpu_moe_block_destroy(moe) before the device closes. (A fragment: the model
 *   builds its blocks this way in runtime/model_load.c; tests/test_ops.c runs one on its own.)
 *
 * The A.X K1 post_mlp_layernorm is applied by the caller (clnpu_rmsnorm). A block borrows its
 * devices and the clnpu_moe_remote of its shards for its lifetime.
 */
#ifndef CLNPU_MOE_H
#define CLNPU_MOE_H

#include "clnpu/export.h"

#include "clnpu/gemm.h"
#include "clnpu/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clnpu_moe_weights {
    clnpu_weight_desc router;          /* [E, hidden]; widened to f32 on upload (HF runs it in fp32) */
    const float *bias;                 /* e_score_correction_bias [E] or NULL */
    const clnpu_weight_desc *gate, *up; /* [E] each [inter, hidden] */
    const clnpu_weight_desc *down;     /* [E] each [hidden, inter] */
    const clnpu_weight_desc *shared_gate, *shared_up, *shared_down; /* NULL: no shared expert */
} clnpu_moe_weights;

typedef struct clnpu_moe_block clnpu_moe_block;

#define CLNPU_MAX_EP 16 /* expert shards (devices) per MoE block */

CLNPU_API clnpu_status clnpu_moe_block_create(clnpu_device *dev, const clnpu_moe_config *cfg,
                                    const clnpu_moe_weights *w, size_t max_tokens,
                                    clnpu_moe_block **out_block);
/* Expert parallelism: the routed experts live on several devices (experts[i] on devices[i]); the
 * router, the shared expert and the combine stay on `dev`. Tokens are dispatched to the devices
 * holding their experts and the outputs combined back (through the host). Every expert must be
 * on at least one device; a replicated expert serves from its first listed copy. */
typedef struct clnpu_moe_remote clnpu_moe_remote;
typedef struct clnpu_moe_shard {
    clnpu_device *device;           /* NULL when remote */
    const size_t *experts;
    size_t count;
    const clnpu_moe_remote *remote; /* served by another process (see below), or NULL */
} clnpu_moe_shard;

/* Shards held by other processes: every forward makes one exchange with all of the block's
 * remote shards — their rows out (dispatch), their outputs back (combine) — while the local
 * shards compute. One part per remote shard, in shard order, rows possibly 0: rows are nrows x
 * hidden floats grouped by segs (matrix = index into the shard's experts in ascending id order),
 * outputs go to out (which may be rows). tag identifies the block (the model sets the layer
 * index); the peer answers with clnpu_moe_block_serve on a block created from the same shard
 * list. All remote shards of a block use one clnpu_moe_remote. */
typedef struct clnpu_moe_remote_part {
    size_t shard;
    const float *rows;
    size_t nrows;
    const clnpu_gemm_segment *segs;
    size_t nseg;
    float *out;
} clnpu_moe_remote_part;

struct clnpu_moe_remote {
    clnpu_status (*exchange)(void *ctx, size_t tag, const clnpu_moe_remote_part *parts, size_t nparts);
    void *ctx;
};

CLNPU_API clnpu_status clnpu_moe_block_create_sharded(clnpu_device *dev, const clnpu_moe_config *cfg,
                                            const clnpu_moe_weights *w, size_t max_tokens,
                                            const clnpu_moe_shard *shards, size_t nshards,
                                            clnpu_moe_block **out_block);
CLNPU_API void clnpu_moe_block_destroy(clnpu_moe_block *block);

/* out[t] = sum_k w_k Expert_k(x[t]) + Shared(x[t]) for t < tokens (<= max_tokens).
 * With every expert on `dev` the layer is only queued (the grouped GEMMs read the routing's
 * counts on the device); with shards it synchronises once, to cut the rows for them. */
CLNPU_API clnpu_status clnpu_moe_block_forward(clnpu_device *dev, clnpu_moe_block *block, clnpu_view x,
                                     size_t tokens, clnpu_view out);

/* The routing of the last forward: ids [tokens][top_k] (ascending) and weights, read back. */
CLNPU_API clnpu_status clnpu_moe_block_last_routing(clnpu_moe_block *block, int *out_ids, float *out_weights);

CLNPU_API size_t clnpu_moe_block_device_bytes(const clnpu_moe_block *block);

/* The tag passed to remote shards (default 0). */
CLNPU_API void clnpu_moe_block_set_tag(clnpu_moe_block *block, size_t tag);

/* Serve a remote peer: run local shard `shard`'s experts on nrows rows grouped by segs (as in
 * clnpu_moe_remote) and write the outputs to out (which may be rows). */
CLNPU_API clnpu_status clnpu_moe_block_serve(clnpu_moe_block *block, size_t shard, const float *rows, size_t nrows,
                                   const clnpu_gemm_segment *segs, size_t nseg, float *out);

#ifdef __cplusplus
}
#endif
#endif
