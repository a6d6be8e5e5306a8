/* The plan file format (clnpu-plan-2): its keys, reading, writing and validation, in one place.
 * The scheduler fills a clnpu_plan_doc from a plan and writes it (`clnpu plan -o`); the runtime
 * reads one back, validates it against the model it runs and turns it into stage specs. Both go
 * through this module, so a key the writer emits is a key the reader checks. docs/formats.md
 * describes the format.
 *
 *     clnpu_plan_doc d;
 *     if (!clnpu_plan_doc_load("plan.yaml", &d)) {           // syntax, every scalar, coverage
 *         st = clnpu_plan_doc_check_model(&d, &cfg, "plan.yaml");   // for this model?
 *         if (!st) st = clnpu_plan_doc_check_profiles(&d, set, "plan.yaml");
 *         if (!st) st = clnpu_plan_doc_specs(&d, "plan.yaml", &specs, &n, &layout);
 *         clnpu_plan_doc_free(&d);
 *     }
 */
#ifndef CLNPU_PLAN_SCHEMA_H
#define CLNPU_PLAN_SCHEMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "clnpu/dtype.h"
#include "clnpu/model.h"
#include "clnpu/pipeline.h"
#include "clnpu/profile.h"
#include "clnpu/status.h"

#define CLNPU_PLAN_FORMAT "clnpu-plan-2"
/* Limits of the format (far above any cluster the planner accepts), so that no count from a file
 * reaches arithmetic or malloc unchecked. */
#define CLNPU_PLAN_MAX_DEVICES 65536  /* plan device indices 0 .. this - 1 */
#define CLNPU_PLAN_MAX_STAGES 4096
#define CLNPU_PLAN_MAX_LAYERS 100000
#define CLNPU_PLAN_MAX_EXPERTS 65536
#define CLNPU_PLAN_MAX_MICRO 1024
#define CLNPU_PLAN_MAX_BATCH 1000000
#define CLNPU_PLAN_MAX_CONTEXT 100000000
#define CLNPU_PLAN_MAX_TOKENS 1000000

/* memory_per_device keys, in order */
#define CLNPU_PLAN_MEM_KINDS 6
extern const char *const clnpu_plan_mem_keys[CLNPU_PLAN_MEM_KINDS];
/* predicted keys, in order */
#define CLNPU_PLAN_PREDICTED 7
extern const char *const clnpu_plan_predicted_keys[CLNPU_PLAN_PREDICTED];

typedef struct clnpu_plan_doc_stage {
    char profile[64];       /* "" = match the device automatically */
    size_t ndevices;
    size_t *devices;        /* plan device indices, distinct */
    bool embedding, head;
    size_t layer_begin, layer_end; /* decoder layers [begin, end), contiguous over the stages */
    double time_s;                 /* predicted (informative) */
    double memory[CLNPU_PLAN_MEM_KINDS]; /* predicted bytes per device (informative) */
} clnpu_plan_doc_stage;

typedef struct clnpu_plan_doc {
    char model[32];          /* config.json model_type */
    size_t layers, hidden_size, routed_experts;
    char cluster[64];
    bool prefill;            /* phase: decode (false) or prefill */
    clnpu_dtype weights;     /* BF16, FP8_E4M3 or I8 */
    clnpu_dtype latent_cache; /* the latent (MLA) cache's element type the plan assumed */
    size_t batch, context;
    size_t max_tokens;       /* tokens per forward call (prefill chunk) the memory assumed */
    size_t tp, pp, ep, dp, micro_batches, pipeline_replicas;
    double predicted[CLNPU_PLAN_PREDICTED];
    size_t nstages;
    clnpu_plan_doc_stage *stages;
    /* expert placement: list j holds the experts of device j of every stage (all MoE layers) */
    size_t nexpert_lists;
    size_t *expert_counts;
    size_t **experts;
} clnpu_plan_doc;

/* An empty document with the defaults (decode, bf16 weights, f32 latent cache, all widths 1). */
void clnpu_plan_doc_init(clnpu_plan_doc *doc);
void clnpu_plan_doc_free(clnpu_plan_doc *doc);
/* Allocate the stages' and expert lists' arrays (zeroed): nstages stages of ndev devices each,
 * nlists lists of counts[j] experts. */
clnpu_status clnpu_plan_doc_alloc(clnpu_plan_doc *doc, size_t nstages, size_t ndev, size_t nlists,
                                  const size_t *counts);

/* Parse a plan (text of len bytes; origin names it in messages) or the file at path, then
 * clnpu_plan_doc_validate. On failure nothing to free. */
clnpu_status clnpu_plan_doc_parse(const char *text, size_t len, const char *origin, clnpu_plan_doc *out_doc);
clnpu_status clnpu_plan_doc_load(const char *path, clnpu_plan_doc *out_doc);

/* The document on its own: every value in range, stages numbered in order, each with distinct
 * devices and as many as `ep`, tp dividing ep, dp = (ep / tp) x pipeline_replicas, pp = the
 * stages, layers covered exactly once in order, the embedding on the first stage and the head on
 * the last, expert lists (one per device of a stage when ep > 1) covering every expert. */
clnpu_status clnpu_plan_doc_validate(const clnpu_plan_doc *doc, const char *origin);
/* The plan is for this model: model type, layers, hidden size and routed experts. */
clnpu_status clnpu_plan_doc_check_model(const clnpu_plan_doc *doc, const clnpu_model_config *cfg, const char *origin);
/* Every stage profile is one of the set (NULL: the built-in profiles). */
clnpu_status clnpu_plan_doc_check_profiles(const clnpu_plan_doc *doc, const clnpu_profile_set *set,
                                           const char *origin);
/* Stage specs for clnpu_pipeline_create (one block: free(*out_specs)) and the layout. */
clnpu_status clnpu_plan_doc_specs(const clnpu_plan_doc *doc, const char *origin, clnpu_stage_spec **out_specs,
                                  size_t *out_count, clnpu_plan_layout *out_layout);

/* Write the document as YAML. */
clnpu_status clnpu_plan_doc_write(const clnpu_plan_doc *doc, FILE *out);

#endif
