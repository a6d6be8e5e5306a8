/* What pipeline.c (stages, steps) and pipeline_mpi.c (ranks, messages) share. */
#ifndef CLNPU_PIPELINE_INTERNAL_H
#define CLNPU_PIPELINE_INTERNAL_H

#include "clnpu/pipeline.h"
#include "model_internal.h"
#include "tp.h"

struct remote_ctx {
    struct clnpu_pipeline *p;
    size_t stage;
};

#define CLNPU_MAX_MICRO 64 /* micro-batches (groups) in flight per step */

struct clnpu_pipeline {
    clnpu_model_config cfg;
    size_t count;
    clnpu_device **devs;
    clnpu_device **ep_devs; /* [count][CLNPU_MAX_EP], NULL where the main device serves */
    clnpu_model **stages;  /* each stage's model (its attention replica 0) */
    clnpu_model **reps;    /* [count][CLNPU_MAX_EP]: attention replicas 1.. of a stage */
    struct clnpu_dp_group **dps;
    size_t *nrep;          /* attention replicas per stage (1: none) */
    float *h[2];        /* host hand-off buffers [max_tokens][hidden] */
    size_t max_tokens;
    size_t *seq_len;    /* tokens per sequence, kept here (stage 0 may live on another rank) */
    size_t max_sequences;
    /* MPI: stage s runs on rank owner[s]; this process builds only its own stages */
    int rank, nranks;
    void *comm;                   /* MPI_Comm: the library's duplicate of the caller's (NULL: one process) */
    int *owner;
    /* expert parallel across ranks: shard j of stage s is served by rank shard_rank[s][j]; a
     * rank that serves a shard of a stage it does not own keeps that stage's model in stages[s]
     * (its own shard local, the others remote) and answers the owner's exchanges */
    int *shard_rank;
    struct remote_ctx *remote_ctx;
    clnpu_moe_remote *remotes, never;
    float *srv_rows, *xch_rows;   /* rows served here; rows packed for an exchange */
    clnpu_gemm_segment *srv_segs;
    long long *wire_segs;
    void *group_comm;             /* MPI_Comm of this rank's stage group (a rank per device) */
    void *sends;                  /* MPI_Request[CLNPU_MAX_MICRO]: hidden-state sends in flight */
    int send_peer[CLNPU_MAX_MICRO];
    size_t nsends;
    int group_rank, group_size;
    double timeout_s;
    size_t micro;                 /* decode micro-batches in flight (in one process) */
    /* attention replicas across the ranks of a stage (a rank per device): this step's rows per
     * group rank, and the owner's rows of every replica for a MoE meeting */
    bool *dp_ranks;               /* [count]: the stage runs its replicas on its ranks */
    bool *tp_ranks;               /* [count]: the stage runs its TP ranks on its ranks */
    void *tp_comm;                /* MPI_Comm of this rank's TP ranks (its replica's) */
    size_t tp_size;
    struct clnpu_tp_group **tps;  /* [count]: their collectives */
    size_t dp_count[CLNPU_MAX_EP];
    float *dp_in, *dp_out;
};

/* One stage's forward on this rank (its attention replicas on threads of their own). */
clnpu_status pipeline_stage_forward(clnpu_pipeline *p, size_t s, size_t n, const int *ids, const size_t *seqs,
                                    const size_t *pos, bool decode, const float *h_in, float *h_out, float *logits);

/* A step's n rows dealt to R attention replicas by sequence (q mod R): replica j's rows are
 * order[start[j] .. start[j] + count[j]) (their step rows, in step order), and, when lids is
 * not NULL, their token ids, local sequences (q / R) and positions at the same places. */
void pipeline_deal_rows(size_t n, const size_t *seqs, const int *ids, const size_t *pos, size_t R, size_t *count,
                        size_t *start, size_t *order, int *lids, size_t *lseq, size_t *lpos);

/* Attention replicas across a stage's ranks: the stage's step on this rank, and a MoE layer's
 * meeting (clnpu_dp_meet_fn, ctx a struct remote_ctx). */
clnpu_status pipeline_mpi_dp_forward(clnpu_pipeline *p, size_t s, size_t n, const int *ids, const size_t *seqs,
                                     const size_t *pos, bool decode, const float *h_in, float *h_out, float *logits);
clnpu_status pipeline_mpi_meet(void *ctx, size_t layer, const float *rows, size_t n, float *out);
/* Tensor-parallel ranks across a stage's ranks: the stage's step on this rank, and the
 * collectives' transport. */
clnpu_status pipeline_mpi_tp_forward(clnpu_pipeline *p, size_t s, size_t n, const int *ids, const size_t *seqs,
                                     const size_t *pos, bool decode, const float *h_in, float *h_out, float *logits);
clnpu_tp_remote pipeline_mpi_tp_remote(clnpu_pipeline *p, size_t s);
clnpu_status pipeline_mpi_tp_comm(clnpu_pipeline *p, size_t t);

/* n rows cut into groups (group j: rows [start[j], start[j + 1])) through the stages with a host
 * thread per stage, several groups in flight; logits [n][vocab] from the last stage (or NULL). */
clnpu_status pipeline_run_micro(clnpu_pipeline *p, size_t n, const int *ids, const size_t *seqs, const size_t *pos,
                                bool decode, const size_t *start, size_t groups, float *logits);

/* Ranks: decide who owns which stage and shard over the caller's communicator (comm: an MPI_Comm *,
 * NULL for one process) and, after set-up, make every rank agree that it worked; release frees the
 * library's communicators (never MPI itself). */
clnpu_status pipeline_mpi_setup(clnpu_pipeline *p, const clnpu_stage_spec *sp, size_t n, const void *comm);
clnpu_status pipeline_mpi_agree(clnpu_pipeline *p, clnpu_status mine);
void pipeline_mpi_release(clnpu_pipeline *p);
/* The residual stream between stages' ranks, and the last stage's logits to every rank. */
/* rows [row, row + rows) of the hand-off buffer */
clnpu_status pipeline_recv_hidden(clnpu_pipeline *p, size_t s, size_t row, size_t rows);
clnpu_status pipeline_send_hidden(clnpu_pipeline *p, size_t s, size_t row, size_t rows);
/* Wait for the hidden-state sends still travelling (each with the deadline). */
clnpu_status pipeline_sends_done(clnpu_pipeline *p);
clnpu_status pipeline_bcast_logits(clnpu_pipeline *p, float *logits, size_t count);
/* Expert shards of a stage on other ranks: the owner's exchange with its stage's group (counts,
 * then MPI_Ialltoallv dispatch and combine), its end-of-step message, and the serving rank's
 * loop. pipeline_never_exchange backs shards a serving rank does not hold. */
clnpu_status pipeline_mpi_exchange(void *ctx, size_t tag, const clnpu_moe_remote_part *parts, size_t n);
clnpu_status pipeline_never_exchange(void *ctx, size_t tag, const clnpu_moe_remote_part *parts, size_t n);
clnpu_status pipeline_end_stage(clnpu_pipeline *p, size_t s);
clnpu_status pipeline_serve_stage(clnpu_pipeline *p, size_t s);

#endif
