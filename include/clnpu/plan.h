/* Planning A.X K1 (or any DeepSeek-V3-family config) across a cluster of NPUs / GPUs: the
 * full-scale graph, an analytic cost model fed by target profiles (and measurements), a search
 * over tensor / pipeline / expert / data parallel layouts with an exact stage DP, expert
 * placement with replication, and a per-device memory plan. No weights are read. From
 * examples/plan.c:
 *
 *     if (clnpu_model_config_load(argv[1], &cfg) || clnpu_cluster_load(argv[2], NULL, &cl)) {
 *     clnpu_workload w = clnpu_workload_default(); // decode, bf16, batch searched
 *     if (clnpu_plan_create(&cfg, cl, &w, NULL, &p)) { // NULL: default calibration
 *         fprintf(stderr, "plan: %s\n", clnpu_error_message()); // says what is missing
 *     clnpu_plan_print(p, stdout);
 *     if (!f || clnpu_plan_write_yaml(p, f)) {
 *     clnpu_plan_destroy(p);
 *     clnpu_cluster_destroy(cl); // the plan keeps no pointer into the cluster
 *
 * Threads: planning keeps no shared state (its caches are per thread), so plans may be made on
 * several threads at once; a cluster or plan, once made, may be read from several threads.
 */
#ifndef CLNPU_PLAN_H
#define CLNPU_PLAN_H

#include "clnpu/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "clnpu/dtype.h"
#include "clnpu/model.h"
#include "clnpu/pipeline.h"
#include "clnpu/profile.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the model graph ---- */

typedef enum clnpu_unit_kind { CLNPU_UNIT_EMBED, CLNPU_UNIT_DENSE, CLNPU_UNIT_MOE, CLNPU_UNIT_HEAD } clnpu_unit_kind;

/* One pipeline unit: the embedding, one decoder layer, or the final norm + LM head. Parameter
 * counts are exact; bytes follow from the weight dtype. */
typedef struct clnpu_graph_unit {
    clnpu_unit_kind kind;
    int layer;                 /* -1 for embed / head */
    double attn_params;        /* q/kv/o projections and their norms */
    double attn_whole_params;  /* of which every tensor-parallel rank holds whole: q_a, kv_a, norms */
    double dense_params;       /* dense MLP (layer 0), or embedding / LM head */
    double expert_params;      /* one routed expert */
    double shared_params;      /* shared expert(s) */
    double router_params;      /* router weight + bias */
    double norm_params;        /* layer norms */
    double flops_per_token;    /* projections and MLPs; attention core excluded */
    double attn_flops_per_ctx; /* attention core FLOPs per token per key (absorbed decode) */
    double kv_bytes_per_token; /* latent cache bytes per token (CLNPU_LATENT_CACHE_DTYPE, what the executor allocates) */
} clnpu_graph_unit;

typedef struct clnpu_graph {
    size_t count;
    clnpu_graph_unit *units;
    double total_params, active_params;
    size_t experts, top_k, n_group, topk_group, hidden, heads;
    clnpu_model_config cfg; /* the config it was built from (the executor's buffers follow from it) */
} clnpu_graph;

CLNPU_API clnpu_status clnpu_graph_build(const clnpu_model_config *cfg, clnpu_graph *out_graph);
CLNPU_API void clnpu_graph_free(clnpu_graph *g);

/* ---- the cluster ---- */

typedef struct clnpu_cluster_device {
    clnpu_profile profile; /* with overrides applied */
    size_t node;
    double shared_bandwidth; /* the node's memory system shared by its devices (bytes/s), 0: own */
} clnpu_cluster_device;

typedef struct clnpu_cluster {
    char name[64];
    clnpu_cluster_device *devices; /* grouped by node, in file order */
    size_t count, nodes;
    clnpu_link intra, inter;       /* inside a node, between nodes */
    double reserve_fraction;       /* of every device's memory kept free */
    double launch_overhead_s;      /* per kernel */
    double comm_overlap;           /* fraction of the shorter of compute / communication hidden
                                    * behind the other (0.9 default: micro-batches, async all-to-all;
                                    * 0 for an executor that exchanges synchronously) */
} clnpu_cluster;

/* YAML: name, nodes: [{name, count (identical nodes), shared_memory_bandwidth (optional: the
 * node's devices draw on one memory system of this many bytes/s, as sub-devices of one CPU
 * socket do), devices: [{profile, count, overrides}]}],
 * links: {intra_node: {bandwidth, latency_s}, inter_node: {...}}, memory_reserve (fraction),
 * launch_overhead_s. Profiles come from `profiles` (NULL: the built-in set). */
CLNPU_API clnpu_status clnpu_cluster_load(const char *path, const clnpu_profile_set *profiles, clnpu_cluster **out);
CLNPU_API clnpu_status clnpu_cluster_parse(const char *yaml, size_t len, const char *origin,
                                 const clnpu_profile_set *profiles, clnpu_cluster **out);
CLNPU_API void clnpu_cluster_destroy(clnpu_cluster *c);

/* ---- the workload ---- */

typedef enum clnpu_phase { CLNPU_PHASE_DECODE = 0, CLNPU_PHASE_PREFILL } clnpu_phase;

typedef struct clnpu_workload {
    clnpu_phase phase;
    size_t batch;        /* sequences; 0 = the largest that fits (and meets the SLO) */
    size_t context;      /* tokens per sequence (prompt length for prefill) */
    clnpu_dtype weights; /* BF16, FP8_E4M3 or I8 */
    double slo_ms;       /* per output token (decode) or per prompt (prefill); 0 = none */
    const double *expert_load; /* [moe layers][experts] relative loads, NULL = uniform */
    size_t expert_load_layers;
    size_t max_tp;       /* largest tensor-parallel width to consider; 0 = the node size */
    size_t min_tp;       /* smallest one (0 or 1: from 1); with max_tp, pins the width */
    clnpu_dtype latent_cache; /* the latent cache's element type (what the executor allocates: F32) */
} clnpu_workload;

CLNPU_API clnpu_workload clnpu_workload_default(void);
/* The per-token latency target decode plans use when neither batch nor SLO is given. */
#define CLNPU_PLAN_DEFAULT_SLO_MS 100.0
/* YAML histogram: {layers: {L: [w0, w1, ...]}, default: [...]}; out is [moe layers][experts]. */
CLNPU_API clnpu_status clnpu_expert_load_read(const char *path, const clnpu_graph *g, double **out_loads,
                                    size_t *out_layers);

/* ---- calibration ---- */

/* Efficiency factors (achieved / peak) for the roofline; measured files override defaults. */
typedef struct clnpu_calibration {
    double compute_eff, memory_eff, link_eff;
} clnpu_calibration;
CLNPU_API clnpu_calibration clnpu_calibration_default(void);
/* `clnpu bench ... --json` lines: gemm rows give compute (large M) and memory (M = 1)
 * efficiency against the bound profile's peaks. */
CLNPU_API clnpu_status clnpu_calibration_read(const char *path, const clnpu_profile *profile, clnpu_calibration *inout);

/* ---- algorithms (exposed for tests) ---- */

typedef enum clnpu_stage_objective { CLNPU_STAGES_BOTTLENECK = 0, CLNPU_STAGES_SUM } clnpu_stage_objective;

/* Cut units 0..L-1 into contiguous stages, each on one group of devices (groups are used in
 * order; group k has the capacity cap[k]); cost(i, j, k) / mem(i, j, k) of units i..j-1 on group k
 * come from the callbacks. Minimises the max (or sum) of stage costs using at most G groups.
 * Returns the number of stages (0 = infeasible) and cut points in out_cuts[0..stages]. */
typedef double (*clnpu_stage_fn)(size_t i, size_t j, size_t group, void *ctx);
CLNPU_API size_t clnpu_stage_dp(size_t L, size_t G, clnpu_stage_fn cost, clnpu_stage_fn mem, const double *cap,
                      clnpu_stage_objective obj, void *ctx, size_t *out_cuts, double *out_value);
/* Same, also giving the optimum with exactly k stages in per_k[k] (INFINITY if none), k <= G. */
CLNPU_API size_t clnpu_stage_dp_all(size_t L, size_t G, clnpu_stage_fn cost, clnpu_stage_fn mem, const double *cap,
                          clnpu_stage_objective obj, void *ctx, size_t *out_cuts, double *out_value, double *per_k);
CLNPU_API size_t clnpu_stage_brute(size_t L, size_t G, clnpu_stage_fn cost, clnpu_stage_fn mem, const double *cap,
                         clnpu_stage_objective obj, void *ctx, size_t *out_cuts, double *out_value);

/* Replicate experts into `slots` >= n copies minimising the max per-copy load w_e / c_e
 * (greedy on the largest per-copy load; optimal). out_copies[n]. Returns that max. */
CLNPU_API double clnpu_expert_replicate(const double *w, size_t n, size_t slots, size_t *out_copies);
CLNPU_API double clnpu_expert_replicate_brute(const double *w, size_t n, size_t slots);
/* Pack the copies onto `devices` devices of `per_device` slots (largest first, least loaded
 * device; copies of one expert on distinct devices). out_device[copy]; returns max device load. */
CLNPU_API double clnpu_expert_pack(const double *w, const size_t *copies, size_t n, size_t devices, size_t per_device,
                         size_t *out_expert, size_t *out_device);

/* Group-aware packing (hierarchical EPLB): a group's experts on its own device set when devices
 * are a multiple of n_group, whole groups per device when n_group is a multiple of devices, else
 * the flat packing. Same outputs as clnpu_expert_pack. */
CLNPU_API double clnpu_expert_pack_grouped(const double *w, const size_t *copies, size_t n, size_t n_group, size_t devices,
                                 size_t per_device, size_t *out_expert, size_t *out_device);

/* ---- the plan ---- */

typedef struct clnpu_plan clnpu_plan;

CLNPU_API clnpu_status clnpu_plan_create(const clnpu_model_config *cfg, const clnpu_cluster *cluster,
                               const clnpu_workload *w, const clnpu_calibration *cal, clnpu_plan **out_plan);
CLNPU_API void clnpu_plan_destroy(clnpu_plan *p);

typedef struct clnpu_plan_summary {
    size_t tp, pp, ep, dp, devices_used, batch, micro_batches;
    double step_s;           /* decode: one token for every sequence; prefill: the batch's prompts */
    double token_latency_s;  /* decode: per output token of one sequence */
    double tokens_per_s, tokens_per_s_per_device;
    double comm_bytes_per_step;
    double expert_imbalance; /* max / mean device expert load */
    double expert_lb_gap;    /* max / lower bound - 1 */
    double max_memory_fraction;
    double plan_time_s;
} clnpu_plan_summary;

CLNPU_API clnpu_plan_summary clnpu_plan_get_summary(const clnpu_plan *p);
CLNPU_API void clnpu_plan_print(const clnpu_plan *p, FILE *out);
/* The plan file (format clnpu-plan-2, docs/formats.md); clnpu_pipeline_read_plan reads it back. */
CLNPU_API clnpu_status clnpu_plan_write_yaml(const clnpu_plan *p, FILE *out);
/* The plan straight to the executor, no file: stage specs for clnpu_pipeline_create (one block,
 * free(*out_specs)), checked as a plan file is (against cfg, the model to run). */
CLNPU_API clnpu_status clnpu_plan_stage_specs(const clnpu_plan *p, const clnpu_model_config *cfg, clnpu_stage_spec **out_specs,
                                    size_t *out_count, clnpu_plan_layout *out_layout);
CLNPU_API clnpu_status clnpu_plan_write_svg(const clnpu_plan *p, FILE *out);
/* Memory of device d: weights, kv, activations, comm buffers, reserve, capacity (bytes). */
CLNPU_API void clnpu_plan_device_memory(const clnpu_plan *p, size_t d, double out[6]);

#ifdef __cplusplus
}
#endif
#endif
