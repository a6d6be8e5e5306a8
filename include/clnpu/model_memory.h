/* Device memory a model instance allocates besides its weights, computed from the config and the
 * options alone (no device): the scheduler plans with it, so a plan counts what the executor
 * allocates, and a test holds it to clnpu_device_memory_used. There are no staging or pinned
 * buffers to count: weights go up with clEnqueueWriteBuffer from host memory. Not in it: kernel programs (on
 * PoCL's CPU device they live in the host process, not in device buffers; a profile's
 * program_bytes counts them where they do, see docs/targets.md), the padding of weight matrices
 * to the GEMM's panels of 16 rows (none for A.X K1's shapes), and the short-lived partial sums
 * of a decode split over its context (at most 8 x compute units x 16 heads x (R + 2) floats,
 * freed when the launch is queued). From examples/generate.c:
 *
 *     clnpu_model_memory mm;
 *     CHECK(clnpu_model_memory_estimate(&cfg, &o, 1, &mm));
 *     const double besides = mm.workspaces + mm.logits + cfg.num_hidden_layers * (mm.cache_per_layer + mm.absorbed_per_layer) + moe_layers * mm.moe_scratch;
 *
 * (plus the weights: what a model of one device holds in all).
 */
#ifndef CLNPU_MODEL_MEMORY_H
#define CLNPU_MODEL_MEMORY_H

#include "clnpu/export.h"

#include "clnpu/model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The latent cache's default element type (clnpu_model_options.latent_cache: f32 or bf16). */
#define CLNPU_LATENT_CACHE_DTYPE CLNPU_DTYPE_F32

typedef struct clnpu_model_memory {
    double workspaces;      /* per model (stage or TP rank): activations for max_tokens, the prefill
                             * attention's context-sized buffers, step inputs, the rope table */
    double logits;          /* the head's logits buffer (where the model holds the head) */
    double cache_per_layer; /* latent cache pages of one layer: every sequence's max_context */
    double moe_scratch;     /* per MoE layer on the router's device: routing and expert rows */
    double shard_scratch;   /* per MoE layer on each device holding an expert shard */
    double replica_rows;    /* where attention replicas meet: the stage's rows in and out */
    double absorbed_per_layer; /* per layer: W_UK^T and W_UV per head for the absorbed decode, copies
                                * of kv_b_proj beside it (packed in panels of 16 rows; bf16 for
                                * opt.weights -1, taken as a bf16 checkpoint; int8 / bf16 for I8;
                                * f32 for FP8_E4M3) */
    double sampling;        /* a clnpu_generator over max_sequences rows: their logits and drawn ids,
                             * on the device it is given (the head's) */
} clnpu_model_memory;

/* For a model with opt's max_tokens, max_context, max_sequences (0: the defaults
 * clnpu_model_create applies) and page size, one of tp tensor-parallel ranks (heads split). */
CLNPU_API clnpu_status clnpu_model_memory_estimate(const clnpu_model_config *cfg, const clnpu_model_options *opt, size_t tp,
                                         clnpu_model_memory *out);

#ifdef __cplusplus
}
#endif
#endif
