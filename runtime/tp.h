/* Tensor parallel: the t models of a TP group (one device each) run a step side by side and meet
 * at collectives on the residual stream. In one process each rank is a host thread; a collective
 * reads each rank's buffer to the host, every rank sums the ranks' parts in rank order (so every
 * rank holds the same bits) and writes the sum back, and a gather assembles the logits' column
 * blocks on rank 0. A rank that fails breaks the group: the others leave their next collective
 * with an error instead of waiting for it. With ranks in other processes the parts travel
 * through the transport given by clnpu_tp_group_set_remote (MPI), summed the same way. */
#ifndef CLNPU_RUNTIME_TP_H
#define CLNPU_RUNTIME_TP_H

#include <stdbool.h>
#include <stddef.h>

#include "clnpu/device.h"

typedef struct clnpu_tp_group clnpu_tp_group;

/* A group of `size` ranks exchanging up to `floats` floats per collective. */
clnpu_status clnpu_tp_group_create(size_t size, size_t floats, clnpu_tp_group **out);
void clnpu_tp_group_destroy(clnpu_tp_group *g);

/* Before a step: clear a previous step's failure. Called by rank 0 while no rank is inside. */
void clnpu_tp_group_begin(clnpu_tp_group *g);
/* Sum n floats of every rank's buffer b into every rank's b. */
clnpu_status clnpu_tp_allreduce(clnpu_tp_group *g, size_t rank, clnpu_buffer *b, size_t n);
/* The same where add false makes this rank add zeros instead of reading b (its device gets no
 * work until the sum is written; the call only waits for the rank's queue to pass its previous
 * write, whose host source the call reuses). */
clnpu_status clnpu_tp_allreduce_add(clnpu_tp_group *g, size_t rank, clnpu_buffer *b, size_t n, bool add);
/* Columns [col0, col0 + cols) of a [rows][total] matrix: each rank holds its block [rows][cols]
 * in b, and rank 0's b ([rows][total], its own block in place) receives the others' blocks.
 * A rank after the first reads its block through host, which stays untouched until the step
 * ends. */
clnpu_status clnpu_tp_gather_columns(clnpu_tp_group *g, size_t rank, clnpu_buffer *b, size_t rows, size_t col0,
                                     size_t cols, size_t total, float *host);
/* Ranks in other processes (MPI): this process holds one rank; the collectives go through
 * these. allgather: every rank's n floats, packed [size][n] in all. gatherv: every rank's block
 * (rank 0's: none) packed in rank order in all on rank 0, rows rows of the vocabulary split
 * total * r / size. moe: a peer's part in MoE layer `layer` (serving its expert shard). */
typedef struct clnpu_tp_remote {
    clnpu_status (*allgather)(void *ctx, const float *mine, size_t n, float *all);
    clnpu_status (*gatherv)(void *ctx, const float *mine, size_t n, float *all, size_t rows);
    clnpu_status (*moe)(void *ctx, size_t layer);
    void *ctx;
} clnpu_tp_remote;
void clnpu_tp_group_set_remote(clnpu_tp_group *g, const clnpu_tp_remote *remote);
/* A peer rank's turn in a MoE layer that rank 0 runs (no-op in one process). */
clnpu_status clnpu_tp_peer_moe(clnpu_tp_group *g, size_t layer);

/* This rank failed with st (message from this thread): record the first failure, release the
 * others. Returns st. */
clnpu_status clnpu_tp_fail(clnpu_tp_group *g, size_t rank, clnpu_status st);
/* The group's first failure this step (CLNPU_OK if none), re-raised on this thread. */
clnpu_status clnpu_tp_group_status(clnpu_tp_group *g);

#endif
