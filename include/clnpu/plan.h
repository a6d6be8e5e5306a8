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
    double attn_prefill_flops_per_ctx; /* the same in the non-absorbed form prefill uses */
    double kv_bytes_per_token; /* latent cache bytes per token (CLNPU_LATENT_CACHE_DTYPE, what the executor allocates) */
    /* DeepSeek Sparse Attention: the indexer scores every key, attention reads only attn_topk
     * (0: all) of them */
    size_t attn_topk;
    double index_flops_per_ctx;  /* indexer FLOPs per token per key (whole on every TP rank) */
    double index_bytes_per_token; /* of kv_bytes_per_token, the indexer's key (f32, as allocated) */
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

/* Achieved rates of the kernels the cost model prices, per device; 0 = the profile's peak times
 * the calibration's efficiency. From a cluster file's `kernel_rates` (published figures, with
 * their source) or from measurements (`--calibration`, which wins). */
/* One point of a GEMM library's published rate table (DeepGEMM's README lists them by shape):
 * M rows (per group for a grouped GEMM) x N outputs x K inputs ran at `flops` FLOP/s. */
typedef struct clnpu_gemm_point {
    double m, n, k, flops;
} clnpu_gemm_point;
#define CLNPU_GEMM_TABLE_MAX 32

/* Seconds of `groups` GEMMs of m rows each (N x K) from a table's points of that N x K: the rate
 * interpolated linearly in log2 M between the tabulated M, the largest M's rate above it, and
 * below the smallest M the smallest M's time per group (weight-bound: the same weights are read
 * for fewer rows). -1 when the table has no point of that N x K (the caller prices a roofline).
 *   clnpu_gemm_point t[] = {{256, 4096, 7168, 932e12}, {512, 4096, 7168, 1040e12}};
 *   double s = clnpu_gemm_table_time(t, 2, 384, 4096, 7168, 4); // 4 experts x 384 rows */
CLNPU_API double clnpu_gemm_table_time(const clnpu_gemm_point *table, size_t count, double m, double n, double k,
                                       double groups);

/* A prefill attention kernel's published rate by prompt length (FlashAttention-3's benchmark:
 * causal, FLOPs counted for the unmasked half, batch x length = 16k tokens). */
typedef struct clnpu_attn_point {
    double len, flops;
} clnpu_attn_point;
/* The rate at prompt length `len`: linear in log2 len between points, the end points' beyond
 * them; 0 for an empty table. */
CLNPU_API double clnpu_attn_table_rate(const clnpu_attn_point *table, size_t count, double len);

/* One MoE layer of both micro-batches under two-micro-batch overlap (TBO), in the schedules
 * DeepSeek publishes (open-infra-index day 6; deepseek-ai/profile-data's figures). Per
 * micro-batch: attention `attn` (of it `late`: the core and o_proj), shared expert + router
 * `shared`, routed experts `mlp`, `dispatch` and `combine` (seconds each, at full compute units):
 *   prefill: ATTN(1)+SHARED(0) | COMBINE(0); ATTN(0) | DISPATCH(1); MLP(1) | DISPATCH(0);
 *            MLP(0)+SHARED(1) | COMBINE(1)
 *   decode:  SHARED(0)+ATTN-0(1) | DISPATCH(0); MLP(0) alone; ATTN-1(1) | COMBINE(0); then swapped
 * each slot as long as the longer side. compute_sm_fraction > 0: compute runs on that fixed share
 * of the compute units throughout (DeepSeek's prefill: 108 of 132 SMs), taking 1 / share as long;
 * else exchange_sm_fraction of each exchange's time also occupies the compute stream. Returns the
 * layer's seconds for both micro-batches. */
typedef struct clnpu_tbo_layer {
    bool prefill;
    double attn, late, shared, mlp, dispatch, combine;
    double compute_sm_fraction, exchange_sm_fraction;
} clnpu_tbo_layer;
CLNPU_API double clnpu_tbo_layer_time(const clnpu_tbo_layer *x);

typedef struct clnpu_kernel_rates {
    double gemm_flops;         /* dense and grouped GEMM, compute-bound, in the weight dtype */
    double stream_bandwidth;   /* weights streamed by memory-bound GEMMs (bytes/s) */
    double attn_flops;         /* attention core (MLA), compute-bound */
    double attn_bandwidth;     /* attention core reading the latent cache (bytes/s) */
    double alltoall_bandwidth; /* expert dispatch / combine, per device and direction (bytes/s) */
    double alltoall_latency_s; /* per message round of dispatch / combine */
    double alltoall_sm_fraction; /* of an exchange's time that the compute units spend on it, so
                                  * overlapped compute cannot use them (DeepEP normal kernels hold
                                  * 24 of 132 SMs throughout: 0.18; low-latency kernels fill every
                                  * SM while sending and receiving, about 0.06 of 0.17 ms: 0.35) */
    double tbo_compute_sm_fraction; /* a fixed split of the compute units while two micro-batches
                                     * overlap: the compute stream's share (DeepSeek's prefill:
                                     * 108 of 132 SMs, 0.818; 0: no fixed split) */
    /* published rates by GEMM shape (replace gemm_flops for the shapes they list): dense GEMMs
     * (attention projections, dense MLP, shared expert, by tokens) and grouped expert GEMMs (by
     * rows per expert) */
    clnpu_gemm_point gemm_table[CLNPU_GEMM_TABLE_MAX];
    size_t gemm_table_count;
    clnpu_gemm_point grouped_table[CLNPU_GEMM_TABLE_MAX];
    size_t grouped_table_count;
    clnpu_attn_point attn_prefill_table[CLNPU_GEMM_TABLE_MAX]; /* prefill attention core by prompt length */
    size_t attn_prefill_table_count;
} clnpu_kernel_rates;

/* Expert dispatch: DeepEP's low-latency kernels send one message per (token, expert) straight
 * over RDMA; its normal kernels send a token once per destination node, then forward inside the
 * node (what clnpu's executor does per destination device: CLNPU_DISPATCH_DEVICE). */
enum { CLNPU_DISPATCH_DEVICE = 0, CLNPU_DISPATCH_EXPERT, CLNPU_DISPATCH_NODE };
/* Two-micro-batch overlap: chosen when it predicts faster (auto), forced, or never; DEFAULT (a
 * workload's 0) defers to the cluster, whose default is OFF: clnpu's executor does not overlap
 * micro-batches yet, the GPU deployment files say auto. */
enum { CLNPU_TBO_DEFAULT = 0, CLNPU_TBO_AUTO, CLNPU_TBO_ON, CLNPU_TBO_OFF };

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
                                    * behind the other within one batch (0.9 default: asynchronous
                                    * all-to-all; 0 for an executor that exchanges synchronously).
                                    * Two-micro-batch overlap is a separate, priced choice (tbo). */
    size_t redundant_experts;      /* extra expert slots per MoE layer (EPLB), e.g. 32: 256 + 32 */
    int ep_dispatch;               /* CLNPU_DISPATCH_*: how dispatch/combine address destinations */
    int tbo;                       /* CLNPU_TBO_*: two-micro-batch overlap (DeepSeek / SGLang) */
    clnpu_kernel_rates rates;      /* published or measured kernel rates (0: peak x efficiency) */
    char rates_source[256];        /* where `rates` come from (stated in the cluster file) */
    /* Per-phase settings (`prefill:` / `decode:` blocks), for a pool that serves both phases with
     * different kernels (DeepEP normal kernels for prefill, low-latency ones for decode). */
    struct clnpu_cluster_phase {
        bool set;
        int ep_dispatch, tbo;
        clnpu_kernel_rates rates;
        char rates_source[256];
    } phase[2];                    /* [CLNPU_PHASE_DECODE], [CLNPU_PHASE_PREFILL] */
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
    double prefix_hit;   /* prefill: fraction of prompt tokens found in the prefix cache (not
                          * computed, still attended); throughput counts them, as DeepSeek's does */
    double mtp_accept;   /* decode: acceptance of one multi-token-prediction draft token (0 = no
                          * MTP); each step verifies 2 tokens per sequence, emits 1 + accept */
    double expert_imbalance; /* max / mean expert load per device left after placement, measured
                              * (1 or 0 = what the load histogram gives) */
    double expert_imbalance_at[3]; /* where expert_imbalance was measured: EP width, expert slots
                                    * per device, rows each device receives per exchange; set,
                                    * the planner carries it to each layout it prices
                                    * (clnpu_expert_imbalance_transfer); 0: used as it is */
    int tbo;             /* CLNPU_TBO_*, overrides the cluster's when not DEFAULT */
    size_t redundant_experts; /* overrides the cluster's when > 0 */
    bool kv_transfer;    /* prefill: the KV cache is sent to decode devices (disaggregation), on
                          * the inter-node link, sharing it with the expert all-to-all */
    clnpu_dtype latent_cache; /* the latent cache's element type (what the executor allocates: F32) */
    size_t ep;           /* pins the expert-parallel width (devices per stage); 0 = searched */
} clnpu_workload;

CLNPU_API clnpu_workload clnpu_workload_default(void);

/* Expert imbalance (max / mean rows per device in one exchange) measured at one layout, carried
 * to another. Two parts, both seen on the busiest of G devices, z(G) spreads above the mean
 * (Blom's expected maximum of G normal draws): EPLB leaves each expert copy's load off its share
 * by a relative spread s, so a device of n slots is off by s / sqrt(n); and one exchange samples
 * its r rows per device (Poisson: 1 / sqrt(r)). The measurement (ratio, G, n, r) fixes s;
 * the result is (1 + z(G') s / sqrt(n')) (1 + z(G') / sqrt(r')), 1 for G' <= 1.
 *   // TensorRT-LLM: 1.109 at EP32, 9 slots, 256 tokens x top-8 per rank; at EP36 with 8 slots:
 *   double x = clnpu_expert_imbalance_transfer(1.109, 32, 9, 2048, 36, 8, 2048); // 1.1155 */
CLNPU_API double clnpu_expert_imbalance_transfer(double ratio, double g, double slots, double rows, double g_to,
                                                 double slots_to, double rows_to);
/* Blom's approximation of the expected maximum of n standard normal draws, 0 for n <= 1. */
CLNPU_API double clnpu_normal_expected_max(double n);
/* The largest cluster the planner takes (65,536 devices plan in about 2 s; past it, an error).
 * EP widths stop at max(expert slots, devices per node), so the search does not grow with N. */
#define CLNPU_PLAN_MAX_DEVICES 65536
/* The per-token latency target decode plans use when neither batch nor SLO is given. */
#define CLNPU_PLAN_DEFAULT_SLO_MS 100.0
/* YAML histogram: {layers: {L: [w0, w1, ...]}, default: [...]}; out is [moe layers][experts]. */
CLNPU_API clnpu_status clnpu_expert_load_read(const char *path, const clnpu_graph *g, double **out_loads,
                                    size_t *out_layers);

/* ---- calibration ---- */

/* Efficiency factors (achieved / peak) for the roofline; measured files override defaults. */
typedef struct clnpu_calibration {
    double compute_eff, memory_eff, link_eff;
    clnpu_kernel_rates rates; /* measured kernel rates; 0 = not measured */
} clnpu_calibration;
CLNPU_API clnpu_calibration clnpu_calibration_default(void);
/* `clnpu bench ... --json` lines: gemm rows give compute (large M) and memory (M = 1)
 * efficiency against the bound profile's peaks; mla rows the attention core's bandwidth and
 * FLOP rate, attention rows the prefill attention rate, moe rows the grouped GEMM (FLOP rate at
 * the most tokens, weight stream at the fewest); "alltoall" rows ({"op":"alltoall","gbps":..,
 * "latency_us":..}, e.g. from DeepEP's or nccl-tests' output) the dispatch / combine link. */
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

/* Where the predicted step time goes (seconds per step, the bottleneck stage for decode, all
 * stages for prefill): attention (projections + core), MoE compute (routed + shared experts,
 * router, dense MLP), dispatch + combine, other (embedding, head, stage transfers, launches),
 * pipeline bubbles, overlap credit (time hidden by overlap, subtracted), and whether two-micro-
 * batch overlap was chosen. step = attention + moe + comm + other + bubbles - overlap. */
typedef struct clnpu_plan_breakdown {
    double attention_s, moe_s, comm_s, other_s, bubble_s, overlap_s;
    bool tbo;
    double tokens_per_step, output_tokens_per_step;
    /* of attention_s: non-absorbed prefill's per-head q / k / v written and read (bf16), and
     * kv_b expanding the cached prefix keys; of attention_s + moe_s: the GEMMs priced from a
     * published shape table (DeepGEMM's); of moe_s: routed rows into expert order and back */
    double prefill_qkv_s, prefix_kvb_s, table_gemm_s, permute_s;
} clnpu_plan_breakdown;
CLNPU_API clnpu_plan_breakdown clnpu_plan_get_breakdown(const clnpu_plan *p);

/* Prefill / decode disaggregation (DistServe-style, scheduler notes 7.5): split the cluster's
 * nodes into a prefill part and a decode part, plan each phase on its part (the prefill plan
 * sends its KV cache over the network link), and keep the split that serves the most requests
 * per second for prompts of `input_len` and answers of `output_len` tokens:
 * min(prefill tokens/s / input_len, decode tokens/s / output_len). `prefill` and `decode` carry
 * the other workload inputs (weights, SLO, MTP, ...); their phase and context are set here.
 * out_prefill / out_decode receive the two plans (destroy both), out_prefill_nodes the split. */
CLNPU_API clnpu_status clnpu_plan_disaggregate(const clnpu_model_config *cfg, const clnpu_cluster *cluster,
                                               const clnpu_workload *prefill, const clnpu_workload *decode,
                                               const clnpu_calibration *cal, size_t input_len, size_t output_len,
                                               clnpu_plan **out_prefill, clnpu_plan **out_decode,
                                               size_t *out_prefill_nodes, double *out_requests_per_s);

/* Validation against published deployments: a YAML file of rows (model, cluster, workload,
 * published value and unit, source), each planned and compared. Paths in the file are relative
 * to `base_dir`. Prints a table to `out`; out_worst is the largest |error| (fraction). */
CLNPU_API clnpu_status clnpu_plan_validate(const char *path, const char *base_dir, FILE *out, double *out_worst);

#ifdef __cplusplus
}
#endif
#endif
