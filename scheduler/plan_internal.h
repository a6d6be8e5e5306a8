/* Internal state of a plan: the chosen layout, per-stage and per-device figures. */
#ifndef CLNPU_PLAN_INTERNAL_H
#define CLNPU_PLAN_INTERNAL_H
#include "clnpu/plan.h"

typedef struct plan_stage {
    size_t unit_begin, unit_end; /* units [begin, end) */
    size_t device_begin;         /* first device of its group (g devices) */
    double time_s;               /* per micro-batch */
    double mem[6];               /* weights, kv, activations, comm, reserve, capacity (per device) */
} plan_stage;

struct clnpu_plan {
    clnpu_model_config cfg;
    clnpu_graph graph;
    clnpu_workload work;
    char cluster_name[64];
    size_t devices_total, devices_per_node;
    clnpu_plan_summary sum;
    size_t g;                    /* devices per stage (= EP) */
    plan_stage *stages;
    size_t nstages;
    /* expert placement (one layer's; uniform loads place every layer alike) */
    size_t slots_per_device, *copy_expert, *copy_device, ncopies;
    double weight_bytes_per_param;
    char profile_names[4][64];
    char (*stage_profiles)[64];  /* [nstages] */
    clnpu_plan_breakdown breakdown;
};
/* The executor's buffers per device (scheduler/memory.c): a stage model's workspaces, and what a
 * unit adds besides its weights and latent cache (the head's logits, a MoE layer's scratch), for
 * TP t, r attention replicas and the pipeline replica's batch. */
/* The latent cache's bytes per token of every layer for the workload's cache dtype. */
void plan_graph_set_latent_cache(clnpu_graph *g, clnpu_dtype cache);
/* The tokens per forward call (prefill chunk) a plan budgets for each stage model. */
size_t plan_exec_max_tokens(const clnpu_workload *w, size_t r, double batch);
double plan_exec_fixed_bytes(const clnpu_graph *gr, const clnpu_workload *w, size_t t, size_t r, double batch);
double plan_exec_unit_bytes(const clnpu_graph *gr, const clnpu_workload *w, const clnpu_graph_unit *u, size_t g, size_t t,
                            size_t r, double batch);
#endif
