/* Running a model split into pipeline stages over several devices: each stage loads only its
 * layers (and the embedding / head where it holds them) on its own device, and the residual
 * stream crosses stage boundaries device to device through the host, or between MPI ranks
 * (clnpu_pipeline_create_mpi). From examples/pipeline.c:
 *
 *     CHECK(clnpu_pipeline_read_plan(argv[2], &cfg, &st, &n, &lay)); // written by `clnpu plan -o`
 *     CHECK(clnpu_pipeline_create(&cfg, ck, st, n, &opt, &pl)); // one process; see _create_mpi for ranks
 *     CHECK(clnpu_pipeline_prefill(pl, 0, ids, T, logits));
 *     clnpu_pipeline_destroy(pl); // its stages' models and devices with it
 *     free(st);                   // the specs are the caller's (malloc'd by read_plan)
 *
 * Plan device d runs on OpenCL device d, in its own context and bound to the stage's profile
 * (an NPU profile on another device emulates the NPU). A plan device that is not present is an
 * error unless clnpu_model_options.share_devices is set: then plan device d runs on device
 * d mod N, so a plan for many NPUs runs on a laptop with one device. Under mpirun plan devices
 * number the job's devices and a rank opens d mod its node's devices.
 * Ownership and threads: the pipeline opens and owns its stages' devices and models, copies the
 * config and options, and reads the specs and checkpoint during create only. One host thread
 * drives a pipeline; its micro-batch, replica and TP threads run inside each call.
 */
#ifndef CLNPU_PIPELINE_H
#define CLNPU_PIPELINE_H

#include "clnpu/export.h"

#include "clnpu/dtype.h"
#include "clnpu/model.h"
#include "clnpu/moe.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clnpu_stage_spec {
    size_t device;          /* plan device index of the stage's main device */
    char profile[64];       /* "" = match automatically */
    uint64_t memory_bytes;  /* the capacity the plan assumed per device (0: the profile's); held to it */
    size_t layer_begin, layer_end;
    bool embed, head;
    /* expert parallel inside the stage (ep_count 0: every expert on the main device):
     * ep_experts[i] (ep_expert_counts[i] ids) on plan device ep_devices[i] */
    size_t ep_count;
    /* tensor parallel (0 or 1: none): attention and dense MLPs over plan devices
     * ep_devices[0 .. tp) (ep_devices[0] is the main device), see clnpu_model_create_tp */
    size_t tp;
    /* data-parallel attention (0 or 1: none): replica j runs attention on ep_devices[j * tp ..
     * (j + 1) * tp) for the sequences q with q mod replicas = j, each with its own latent cache;
     * at every MoE layer all replicas' rows go through the stage's one MoE block together */
    size_t replicas;
    size_t ep_devices[CLNPU_MAX_EP];
    const size_t *ep_experts[CLNPU_MAX_EP];
    size_t ep_expert_counts[CLNPU_MAX_EP];
} clnpu_stage_spec;

/* The plan's parallel layout beyond its stages. */
typedef struct clnpu_plan_layout {
    size_t ep;                /* devices per stage */
    size_t micro_batches;     /* decode micro-batches kept in flight (1: none) */
    size_t pipeline_replicas; /* whole copies of the stages (each its own process, see below) */
    int weights;              /* -1: bf16 (the checkpoint's); or CLNPU_DTYPE_FP8_E4M3 / CLNPU_DTYPE_I8 */
    clnpu_dtype latent_cache; /* the latent cache's element type the plan's memory assumed */
    size_t batch, context;    /* the sequences and tokens per sequence the plan's memory assumed */
    size_t max_tokens;        /* tokens per forward call (prefill chunk) it assumed: run with at most this */
} clnpu_plan_layout;

/* Read a plan (format clnpu-plan-2, docs/formats.md) for this config. Everything is checked: the
 * model (type, layers, hidden size, routed experts), every value (strictly: "3abc" or "1e3" for a
 * count is an error), stages covering every layer in order with the embedding on the first and
 * the head on the last, distinct devices within a stage, stage profiles that exist, expert lists
 * covering every expert. out_layout may be NULL. */
CLNPU_API clnpu_status clnpu_pipeline_read_plan(const char *path, const clnpu_model_config *cfg, clnpu_stage_spec **out_specs,
                                      size_t *out_count, clnpu_plan_layout *out_layout);

/* The weight dtype to run a plan with: the plan's (what its memory assumed) when requested is -1
 * (not chosen), else requested if it is the plan's; another is refused, naming origin. */
CLNPU_API clnpu_status clnpu_plan_layout_weights(const clnpu_plan_layout *layout, const char *origin, int requested,
                                       int *out_weights);

/* The latent cache type likewise: the plan's when requested is -1, else requested if it is the
 * plan's; another is refused. */
CLNPU_API clnpu_status clnpu_plan_layout_latent_cache(const clnpu_plan_layout *layout, const char *origin, int requested,
                                            clnpu_dtype *out_cache);

/* Pipeline replica k of a plan with `replicas` of them: every plan device index of the specs
 * moved up by k times the devices of one replica (the largest index + 1), so the replicas of a
 * plan run side by side as separate processes, each on its own devices. k >= replicas fails. */
CLNPU_API clnpu_status clnpu_stage_specs_replica(clnpu_stage_spec *specs, size_t count, size_t k, size_t replicas);

typedef struct clnpu_pipeline clnpu_pipeline;

CLNPU_API clnpu_status clnpu_pipeline_create(const clnpu_model_config *cfg, const clnpu_checkpoint *ck,
                                   const clnpu_stage_spec *specs, size_t count, const clnpu_model_options *opt,
                                   clnpu_pipeline **out_pipeline);
CLNPU_API void clnpu_pipeline_destroy(clnpu_pipeline *p);
CLNPU_API size_t clnpu_pipeline_stage_count(const clnpu_pipeline *p);
CLNPU_API clnpu_device *clnpu_pipeline_stage_device(const clnpu_pipeline *p, size_t stage);

/* Across MPI ranks: the caller initialises MPI and hands over a communicator (mpi_comm points to
 * an MPI_Comm: `MPI_Comm w = MPI_COMM_WORLD;` then `&w`; read during the call only). NULL runs
 * every stage in this process, as clnpu_pipeline_create does. Every rank of the communicator calls
 * this with the same plan. With at most as many ranks as stages, each rank builds only its stages
 * (contiguous runs of the plan); with one rank per plan device, each stage's other devices are
 * ranks serving its expert shards. The library duplicates the communicator (MPI_Comm_dup, freed by
 * clnpu_pipeline_destroy) and never calls MPI_Init, MPI_Finalize or MPI_Abort. The residual stream
 * crosses ranks by point-to-point messages; every wait has a deadline (CLNPU_MPI_TIMEOUT seconds,
 * default 120), so a failed or stopped rank becomes an error on the others. After an error the
 * ranks no longer agree on where the run is: the caller ends the job (MPI_Abort) rather than wait
 * in MPI_Finalize for a peer that may never come (tools/cli_mpi.c does). A library built without
 * MPI refuses a non-NULL communicator. */
CLNPU_API clnpu_status clnpu_pipeline_create_mpi(const clnpu_model_config *cfg, const clnpu_checkpoint *ck,
                                       const clnpu_stage_spec *specs, size_t count, const clnpu_model_options *opt,
                                       const void *mpi_comm, clnpu_pipeline **out_pipeline);
/* This process's rank and the number of ranks (0 and 1 without a communicator). */
CLNPU_API int clnpu_pipeline_rank(const clnpu_pipeline *p);
CLNPU_API int clnpu_pipeline_ranks(const clnpu_pipeline *p);

/* Decode micro-batches in flight (in one process): a decode step of n >= 2 sequences is cut into
 * up to m groups, and stage s works on group j while stage s + 1 works on group j - 1, each stage
 * driven by its own host thread. 1 (the default) runs the stages one after another. Ranks of an
 * MPI run step their stages one after another whatever m is. */
CLNPU_API void clnpu_pipeline_set_micro_batches(clnpu_pipeline *p, size_t micro_batches);

/* Serving (clnpu_engine_create_pipeline): forget a sequence on every stage; the latent cache of
 * the first stage held here (its attention replicas summed); sizes the pipeline was made for. */
CLNPU_API void clnpu_pipeline_reset(clnpu_pipeline *p, size_t seq);
CLNPU_API clnpu_cache_usage clnpu_pipeline_cache_usage(const clnpu_pipeline *p);
CLNPU_API size_t clnpu_pipeline_max_sequences(const clnpu_pipeline *p);
CLNPU_API size_t clnpu_pipeline_max_tokens(const clnpu_pipeline *p);
CLNPU_API size_t clnpu_pipeline_context(const clnpu_pipeline *p);
CLNPU_API const clnpu_model_config *clnpu_pipeline_config(const clnpu_pipeline *p);

/* As clnpu_model_prefill / clnpu_model_decode, through every stage in turn. */
CLNPU_API clnpu_status clnpu_pipeline_prefill(clnpu_pipeline *p, size_t seq, const int *ids, size_t n, float *logits);
CLNPU_API clnpu_status clnpu_pipeline_decode(clnpu_pipeline *p, const size_t *seqs, const int *ids, size_t n, float *logits);

#ifdef __cplusplus
}
#endif
#endif
