/* The A.X K1 model (DeepSeek-V3 family) on one device: config, weights, paged MLA cache,
 * prefill and decode. From examples/generate.c (CHECK: print clnpu_error_message(), clean up):
 *
 *     CHECK(clnpu_model_config_load(path, &cfg));       // the checkpoint's config.json
 *     CHECK(clnpu_checkpoint_open(dir, &ck));
 *     clnpu_model_options o = clnpu_model_options_default();
 *     CHECK(clnpu_model_create(dev, &cfg, ck, &o, &m));
 *     clnpu_checkpoint_close(ck);                        // the model holds its own copy of the weights on the device
 *     CHECK(clnpu_model_prefill(m, 0, ids, T, logits)); // logits [T][vocab] (or NULL)
 *     CHECK(clnpu_model_decode(m, &seq, &next, 1, logits)); // one token for sequence 0
 *     clnpu_model_destroy(m);                            // before its device
 *
 * Ownership and threads: the model borrows its device (destroy the model first) and copies the
 * config and options; the checkpoint is read during clnpu_model_create only. One model is driven
 * by one host thread at a time; a tensor-parallel model runs its ranks on threads of its own,
 * inside each call.
 */
#ifndef CLNPU_MODEL_H
#define CLNPU_MODEL_H

#include "clnpu/export.h"

#include <stdbool.h>
#include <stddef.h>

#include "clnpu/checkpoint.h"
#include "clnpu/device.h"
#include "clnpu/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clnpu_model_config {
    char model_type[32];
    size_t vocab_size, hidden_size, intermediate_size, moe_intermediate_size;
    size_t num_hidden_layers, first_k_dense_replace, moe_layer_freq;
    size_t num_attention_heads, q_lora_rank; /* q_lora_rank 0: plain q_proj */
    size_t kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim;
    size_t n_routed_experts, n_shared_experts, num_experts_per_tok, n_group, topk_group;
    bool norm_topk_prob, tie_word_embeddings, rope_interleave;
    bool post_mlp_layernorm; /* A.X K1: RMSNorm on each MoE block's output */
    double routed_scaling_factor, rms_norm_eps;
    size_t max_position_embeddings;
    clnpu_rope_config rope; /* dim = qk_rope_head_dim, theta, YaRN settings */
} clnpu_model_config;

/* Read config.json (libcjson). Missing required fields, wrong types and unsupported model types
 * or features are errors naming the file and the field; optional fields take the documented
 * defaults (docs/formats.md). RoPE from rope_scaling + rope_theta or from rope_parameters. */
CLNPU_API clnpu_status clnpu_model_config_load(const char *path, clnpu_model_config *out_config);
CLNPU_API clnpu_status clnpu_model_config_parse(const char *json, size_t len, const char *origin,
                                      clnpu_model_config *out_config);
/* Parameters of the whole model (no MTP), and those active per token. */
CLNPU_API void clnpu_model_config_params(const clnpu_model_config *cfg, double *out_total, double *out_active);
/* Whether layer l is a MoE layer. */
CLNPU_API bool clnpu_model_config_is_moe(const clnpu_model_config *cfg, size_t layer);

typedef struct clnpu_model_options {
    size_t max_sequences; /* sequences alive at once (decode batch), default 4 */
    size_t max_context;   /* tokens per sequence, default min(4096, max_position_embeddings) */
    size_t max_tokens;    /* tokens per forward call (prefill chunk), default 512 */
    size_t page_size;     /* latent cache rows per page, default 16 */
    int weights;          /* -1: checkpoint dtype; or CLNPU_DTYPE_I8 / CLNPU_DTYPE_FP8_E4M3 */
    uint64_t seed;        /* random weights (no checkpoint) */
    bool progress;        /* a progress line on stderr while loading */
    bool capture;         /* keep hidden states and routing of the last forward (tests) */
    /* A pipeline stage: only decoder layers [layer_begin, layer_end) are loaded and run (the
     * default end, SIZE_MAX, means all; [0, 0) none); the embedding and the final norm + LM head only where embed / head are set. Only the
     * tensors of the stage are read from the checkpoint. */
    size_t layer_begin, layer_end;
    bool embed, head;
    /* Expert parallelism: every MoE layer's routed experts on these devices (see moe.h); the
     * router, shared expert and attention stay on the model's device. 0 shards: all here. */
    const struct clnpu_moe_shard *ep_shards;
    size_t ep_count;
    /* Pipelines (clnpu_pipeline_create): plan devices past the OpenCL devices present share them
     * (plan device d on device d mod N, a context each) instead of being refused. */
    bool share_devices;
    /* The latent (MLA) cache's elements: CLNPU_DTYPE_F32 (the default) or CLNPU_DTYPE_BF16 (half
     * the cache memory; logits within ~1e-3 of f32, see docs/formats.md). */
    clnpu_dtype latent_cache;
    /* Latent cache pages in the pool (0: enough for every sequence at max_context). A server sets
     * fewer, so that more sequences than the pool could hold at full length share it. */
    size_t cache_pages;
} clnpu_model_options;

CLNPU_API clnpu_model_options clnpu_model_options_default(void);

typedef struct clnpu_model clnpu_model;

/* Upload weights (checkpoint NULL: seeded random weights of the config's shapes). */
CLNPU_API clnpu_status clnpu_model_create(clnpu_device *dev, const clnpu_model_config *cfg,
                                const clnpu_checkpoint *ck, const clnpu_model_options *opt,
                                clnpu_model **out_model);
/* Tensor parallel over tp devices (devs[0 .. tp)), one model per device, returned as rank 0:
 * attention heads and the features of the dense MLPs and of the shared expert are split between
 * the ranks (q_b, kv_b, gate, up by rows; o and down by columns); q_a, kv_a and the latent cache
 * are whole on every rank; the partial outputs are summed at two all-reduces per layer (through
 * the host). The embedding, the MoE router with the routed experts (on opt's shards) and the
 * final norm + LM head run on rank 0. A forward on the returned model runs every rank on its
 * own host thread; destroy frees them all. */
#define CLNPU_MAX_TP 16 /* tensor-parallel ranks of one model */
CLNPU_API clnpu_status clnpu_model_create_tp(clnpu_device *const *devs, size_t tp, const clnpu_model_config *cfg,
                                   const clnpu_checkpoint *ck, const clnpu_model_options *opt,
                                   clnpu_model **out_model);
CLNPU_API void clnpu_model_destroy(clnpu_model *m);

/* Append n tokens to sequence seq (< max_sequences) through the prefill path (expanded MLA,
 * flash attention over the cached prefix + new tokens). logits: [n][vocab] or NULL. */
CLNPU_API clnpu_status clnpu_model_prefill(clnpu_model *m, size_t seq, const int *ids, size_t n, float *logits);
/* The same, computing the LM head for the last prompt position only: last_logits [vocab] (what
 * generation samples from; the other positions' head is never run). */
CLNPU_API clnpu_status clnpu_model_prefill_last(clnpu_model *m, size_t seq, const int *ids, size_t n, float *last_logits);
/* One token for each of the n listed sequences, through the absorbed MLA decode path.
 * logits: [n][vocab] or NULL. */
CLNPU_API clnpu_status clnpu_model_decode(clnpu_model *m, const size_t *seqs, const int *ids, size_t n,
                                float *logits);
/* Generation: the same decode step, then each sequence's next token drawn on the device with
 * clnpu_sample (draw `step` of the seed); only out_ids [n] come back, and the logits too when
 * `logits` is not NULL. One host sync per step. */
CLNPU_API clnpu_status clnpu_model_decode_sample(clnpu_model *m, const size_t *seqs, const int *ids, size_t n,
                                       const clnpu_sampling *s, size_t step, int *out_ids, float *logits);
/* One pipeline stage's share of a forward: ids in (embedding stage) or the residual stream
 * h_in [n][hidden] (host) from the previous stage; out: logits [n][vocab] (head stage) or the
 * residual stream h_out for the next stage. decode: one token per listed sequence. */
CLNPU_API clnpu_status clnpu_model_forward_stage(clnpu_model *m, size_t n, const int *ids, const size_t *seqs,
                                       const size_t *positions, bool decode, const float *h_in, float *h_out,
                                       float *logits);

/* Forget a sequence (its cache pages return to the pool). */
CLNPU_API void clnpu_model_reset(clnpu_model *m, size_t seq);
CLNPU_API size_t clnpu_model_sequence_length(const clnpu_model *m, size_t seq);

/* The paged latent cache as a server sees it. Pages hold page_size token rows of every layer and
 * are reference counted: a sequence holds one reference on each page of its block table, and a
 * caller (a prefix cache) may hold more. A page returns to the free pool when its last reference
 * goes. Pages are written only when a sequence appends into them, so a full page can be shared
 * by every sequence whose tokens up to its end are the same (prefix caching). */
typedef struct clnpu_cache_usage {
    size_t pages, free, page_size;
} clnpu_cache_usage;
CLNPU_API clnpu_cache_usage clnpu_model_cache_usage(const clnpu_model *m);
/* The first n pages of sequence seq's block table (out_pages [n]); fails past its length. */
CLNPU_API clnpu_status clnpu_model_sequence_pages(const clnpu_model *m, size_t seq, size_t n, int *out_pages);
/* An empty sequence starts with n full pages of another's (its length becomes n * page_size):
 * their rows are not computed again. Each page gains a reference. */
CLNPU_API clnpu_status clnpu_model_sequence_attach(clnpu_model *m, size_t seq, const int *pages, size_t n);
/* Take or drop one reference on each of n pages (a page whose count reaches 0 is freed). */
CLNPU_API clnpu_status clnpu_model_pages_retain(clnpu_model *m, const int *pages, size_t n);
CLNPU_API void clnpu_model_pages_release(clnpu_model *m, const int *pages, size_t n);
/* References held on a page (0: free). */
CLNPU_API unsigned clnpu_model_page_refs(const clnpu_model *m, int page);

/* With options.capture: the residual stream of the last forward — index 0 the embedding output,
 * l + 1 the output of layer l, num_hidden_layers + 1 after the final norm; [tokens][hidden]. */
CLNPU_API clnpu_status clnpu_model_hidden(const clnpu_model *m, size_t index, float *out);
/* With options.capture: routed experts of MoE layer l in the last forward, [tokens][top_k]. */
CLNPU_API clnpu_status clnpu_model_routing(const clnpu_model *m, size_t layer, int *out_ids, float *out_weights);
CLNPU_API size_t clnpu_model_device_bytes(const clnpu_model *m);
/* The MoE block of loaded layer l (its tag is l), or NULL for a dense or unloaded layer: how an
 * expert-parallel peer process serves remote shards (clnpu_moe_block_serve). */
CLNPU_API struct clnpu_moe_block *clnpu_model_moe_block(clnpu_model *m, size_t layer);

#ifdef __cplusplus
}
#endif
#endif
