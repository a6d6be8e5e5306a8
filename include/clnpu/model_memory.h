/* Device memory a model instance allocates besides its weights, computed from the config and the
 * options alone (no device): the scheduler plans with it, so a plan counts what the executor
 * allocates, and a test holds it to clnpu_device_memory_used.
 *
 *     clnpu_model_memory mm;
 *     clnpu_model_memory_estimate(&cfg, &opt, 1, &mm);
 *     double bytes = weights + mm.workspaces + layers * mm.cache_per_layer + moe_layers * mm.moe_scratch;
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
} clnpu_model_memory;

/* For a model with opt's max_tokens, max_context, max_sequences (0: the defaults
 * clnpu_model_create applies) and page size, one of tp tensor-parallel ranks (heads split). */
CLNPU_API clnpu_status clnpu_model_memory_estimate(const clnpu_model_config *cfg, const clnpu_model_options *opt, size_t tp,
                                         clnpu_model_memory *out);

#ifdef __cplusplus
}
#endif
#endif
