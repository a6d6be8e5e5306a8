/* Data-parallel attention inside a pipeline stage: the stage's devices form r
 * replicas (each a tensor-parallel group), each running attention for its own sequences with
 * its own latent cache, on its own host thread. At every MoE layer the replicas' rows meet: the
 * last replica to arrive runs the stage's one MoE block (router, shared expert, routed experts
 * over all the stage's devices, held by replica 0) on every replica's rows at once, while the
 * others wait, so no two threads ever enqueue on one device at the same time. With replicas in
 * other processes (MPI ranks) the meeting is a function the pipeline provides. */
#ifndef CLNPU_RUNTIME_DP_H
#define CLNPU_RUNTIME_DP_H

#include <stddef.h>

#include "clnpu/device.h"

struct clnpu_model;
typedef struct clnpu_dp_group clnpu_dp_group;

/* r replicas with up to `rows` rows in a step, all of them together (a step's rows are dealt to
 * the replicas), hidden size d; the MoE runs on dev (replica 0's). */
clnpu_status clnpu_dp_group_create(size_t replicas, size_t rows, size_t hidden, clnpu_device *dev,
                                   clnpu_dp_group **out);
void clnpu_dp_group_destroy(clnpu_dp_group *g);
/* The model whose MoE blocks serve every replica (replica 0, TP rank 0). */
void clnpu_dp_group_set_leader(clnpu_dp_group *g, struct clnpu_model *leader);
/* Before a step: rows[j] rows of replica j (0: it does not run this step). */
void clnpu_dp_group_begin(clnpu_dp_group *g, const size_t *rows);
/* Replica j's MoE layer: its post-attention rows (m's `a`) in, the MoE output out in m's
 * `mlp` (not yet normalised). */
clnpu_status clnpu_dp_moe(clnpu_dp_group *g, size_t replica, struct clnpu_model *m, size_t layer, size_t rows);
/* Replicas in other processes (MPI ranks): a replica's MoE layer hands its n rows (host memory)
 * to meet, which returns their MoE outputs in out; rows may be NULL with n = 0 for a replica
 * with no rows this step, which still takes part. */
typedef clnpu_status (*clnpu_dp_meet_fn)(void *ctx, size_t layer, const float *rows, size_t n, float *out);
void clnpu_dp_group_set_remote(clnpu_dp_group *g, clnpu_dp_meet_fn meet, void *ctx);
/* The leader's MoE block of `layer` on `total` rows (host memory) of every replica. */
clnpu_status clnpu_dp_run_moe(clnpu_dp_group *g, size_t layer, const float *in, size_t total, float *out);

/* Replica j failed with st (message on this thread): the first failure is kept, waiting replicas
 * are released. Returns st. */
clnpu_status clnpu_dp_fail(clnpu_dp_group *g, size_t replica, clnpu_status st);
/* The step's first failure (CLNPU_OK if none), re-raised on this thread. */
clnpu_status clnpu_dp_group_status(clnpu_dp_group *g);

#endif
