/* Pipeline stages and expert shards across Open MPI ranks: who owns what, hidden states and
 * logits between ranks, expert rows to the ranks holding them. Every wait has a deadline. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef CLNPU_HAVE_MPI
#include <mpi.h>
#endif

#include "../common/error.h"
#include "dp.h"
#include "pipeline_internal.h"

#ifdef CLNPU_HAVE_MPI
#define COMM(p) (*(MPI_Comm *)(p)->comm) /* the library's duplicate of the caller's communicator */

/* Wait for a request with a deadline: a peer that died or hangs becomes an error, not a hang. */
static clnpu_status mpi_wait(clnpu_pipeline *p, MPI_Request *rq, const char *what, int peer)
{
    char who[32] = "the other ranks"; /* peer < 0: a collective */
    if (peer >= 0) snprintf(who, sizeof who, "rank %d", peer);
    struct timespec t0, now, nap = {0, 100000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int done = 0;
        if (MPI_Test(rq, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI error while %s %s (did it fail?)", p->rank, what, who);
        if (done) return CLNPU_OK;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) * 1e-9 > p->timeout_s)
            return clnpu_fail(CLNPU_ERR_IO, "rank %d: nothing from %s for %.0f s while %s it: a rank failed or "
                              "hangs (CLNPU_MPI_TIMEOUT)", p->rank, who, p->timeout_s, what);
        nanosleep(&nap, NULL);
    }
}
#endif

/* Over the caller's communicator (NULL: one process, every stage this process's), either the
 * stages are dealt to ranks in contiguous runs (ranks <= stages; a stage's expert shards stay with
 * its rank), or every plan device gets its own rank (ranks = devices; a stage's first device's rank
 * owns it, the others serve its expert shards). The library works on a duplicate of the
 * communicator (its messages never meet the caller's, and errors come back as codes there without
 * touching the caller's handler). CLNPU_MPI_TIMEOUT (seconds, default 120) bounds every wait for a
 * peer. */
clnpu_status pipeline_mpi_setup(clnpu_pipeline *p, const clnpu_stage_spec *sp, size_t n, const void *comm)
{
    p->rank = 0, p->nranks = 1;
    const char *to = getenv("CLNPU_MPI_TIMEOUT");
    p->timeout_s = to && atof(to) > 0 ? atof(to) : 120;
    if (!comm) return CLNPU_OK;
#ifdef CLNPU_HAVE_MPI
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (!inited || fin) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "pipeline: a communicator was given but MPI is not "
                                          "initialised (the caller calls MPI_Init)");
    if (!(p->comm = malloc(sizeof(MPI_Comm)))) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (MPI_Comm_dup(*(const MPI_Comm *)comm, (MPI_Comm *)p->comm) != MPI_SUCCESS) {
        free(p->comm), p->comm = NULL;
        return clnpu_fail(CLNPU_ERR_IO, "pipeline: MPI_Comm_dup failed");
    }
    /* errors come back as codes so a lost peer becomes a message, not a silent abort */
    MPI_Comm_set_errhandler(COMM(p), MPI_ERRORS_RETURN);
    MPI_Comm_rank(COMM(p), &p->rank);
    MPI_Comm_size(COMM(p), &p->nranks);
    if (p->nranks <= 1) return CLNPU_OK;
    size_t slots = 0;
    for (size_t s = 0; s < n; s++) slots += sp[s].ep_count ? sp[s].ep_count : 1;
    if ((size_t)p->nranks <= n) {
        for (size_t s = 0; s < n; s++) {
            p->owner[s] = (int)(s * (size_t)p->nranks / n);
            for (size_t j = 0; j < CLNPU_MAX_EP; j++) p->shard_rank[s * CLNPU_MAX_EP + j] = p->owner[s];
        }
    } else if ((size_t)p->nranks == slots) {
        int r = 0, color = 0;
        for (size_t s = 0; s < n; s++) {
            p->owner[s] = r;
            for (size_t j = 0; j < CLNPU_MAX_EP; j++) p->shard_rank[s * CLNPU_MAX_EP + j] = r + (j < sp[s].ep_count ? (int)j : 0);
            const int width = sp[s].ep_count ? (int)sp[s].ep_count : 1;
            if (p->rank >= r && p->rank < r + width) color = (int)s;
            r += width;
        }
        /* a communicator per stage: its owner (group rank 0) and the ranks serving its shards */
        if (!(p->group_comm = malloc(sizeof(MPI_Comm)))) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        if (MPI_Comm_split(COMM(p), color, p->rank, (MPI_Comm *)p->group_comm) != MPI_SUCCESS) {
            free(p->group_comm), p->group_comm = NULL;
            return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Comm_split failed", p->rank);
        }
        MPI_Comm_set_errhandler(*(MPI_Comm *)p->group_comm, MPI_ERRORS_RETURN);
        MPI_Comm_rank(*(MPI_Comm *)p->group_comm, &p->group_rank);
        MPI_Comm_size(*(MPI_Comm *)p->group_comm, &p->group_size);
    } else {
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%d MPI ranks for a plan of %zu stages on %zu devices: give at most "
                          "%zu (stages dealt in runs) or exactly %zu (a rank per device)", p->nranks, n, slots, n, slots);
    }
    if (!(p->sends = calloc(CLNPU_MAX_MICRO, sizeof(MPI_Request)))) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    return CLNPU_OK;
#else
    (void)sp, (void)n;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "pipeline: a communicator was given, but clnpu was built without MPI "
                      "(install libopenmpi-dev and rebuild)");
#endif
}

/* Expert exchange inside a stage's group of ranks (the owner is group rank 0, shard j's rank is
 * group rank j): per MoE layer the counts go first (MPI_Ialltoall of a header {layer, rows,
 * segments} per destination), then the segments and rows (MPI_Ialltoallv, dispatch), and after the
 * shards have computed their outputs come back (MPI_Ialltoallv, combine). A header with rows = -1
 * ends the stage's step. */
clnpu_status pipeline_never_exchange(void *ctx, size_t tag, const clnpu_moe_remote_part *parts, size_t n)
{
    (void)ctx, (void)parts, (void)n;
    return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "layer %zu: only the stage's owner rank exchanges expert rows", tag);
}

#ifdef CLNPU_HAVE_MPI
#define GROUP(p) (*(MPI_Comm *)(p)->group_comm)
#define TPCOMM(p) (*(MPI_Comm *)(p)->tp_comm)

/* The tensor-parallel communicator of this rank's replica: t consecutive ranks of the stage. */
clnpu_status pipeline_mpi_tp_comm(clnpu_pipeline *p, size_t t)
{
    if (!(p->tp_comm = malloc(sizeof(MPI_Comm)))) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (MPI_Comm_split(GROUP(p), p->group_rank / (int)t, p->group_rank, (MPI_Comm *)p->tp_comm) != MPI_SUCCESS) {
        free(p->tp_comm), p->tp_comm = NULL;
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Comm_split failed", p->rank);
    }
    MPI_Comm_set_errhandler(TPCOMM(p), MPI_ERRORS_RETURN);
    p->tp_size = t;
    return CLNPU_OK;
}

static clnpu_status mpi_xfer(clnpu_pipeline *p, bool send, void *buf, size_t count, MPI_Datatype type, int peer,
                             int tag, const char *what)
{
    if (!count) return CLNPU_OK;
    if (count > INT_MAX) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "rank %d: message of %zu items to rank %d", p->rank, count, peer);
    MPI_Request rq;
    int rc = send ? MPI_Isend(buf, (int)count, type, peer, tag, COMM(p), &rq)
                  : MPI_Irecv(buf, (int)count, type, peer, tag, COMM(p), &rq);
    if (rc != MPI_SUCCESS) return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI failed %s rank %d", p->rank, what, peer);
    return mpi_wait(p, &rq, what, peer);
}

/* One all-to-all-v of `type` items: this rank sends scount[j] items at sbuf + sdisp[j] to group
 * rank j and receives rcount[j] at rbuf + rdisp[j]. */
static clnpu_status xch(clnpu_pipeline *p, const void *sbuf, const int *scount, const int *sdisp, void *rbuf,
                        const int *rcount, const int *rdisp, MPI_Datatype type, const char *what)
{
    MPI_Request rq;
    if (MPI_Ialltoallv(sbuf, scount, sdisp, type, rbuf, rcount, rdisp, type, GROUP(p), &rq) != MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Ialltoallv failed %s", p->rank, what);
    return mpi_wait(p, &rq, what, -1);
}

static clnpu_status headers(clnpu_pipeline *p, long long *out, long long *in)
{
    MPI_Request rq;
    if (MPI_Ialltoall(out, 3, MPI_LONG_LONG, in, 3, MPI_LONG_LONG, GROUP(p), &rq) != MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Ialltoall failed exchanging expert counts", p->rank);
    return mpi_wait(p, &rq, "exchanging expert counts with", -1);
}

static clnpu_status too_many(const clnpu_pipeline *p, size_t items)
{
    return items > INT_MAX ? clnpu_fail(CLNPU_ERR_UNSUPPORTED, "rank %d: %zu items in one exchange", p->rank, items)
                           : CLNPU_OK;
}

clnpu_status pipeline_mpi_exchange(void *ctx, size_t tag, const clnpu_moe_remote_part *parts, size_t n)
{
    clnpu_pipeline *p = ((struct remote_ctx *)ctx)->p;
    const size_t H = p->cfg.hidden_size;
    const int g = p->group_size;
    long long hout[3 * CLNPU_MAX_EP] = {0}, hin[3 * CLNPU_MAX_EP];
    int sc[CLNPU_MAX_EP] = {0}, sd[CLNPU_MAX_EP] = {0}, rc[CLNPU_MAX_EP] = {0}, rd[CLNPU_MAX_EP] = {0};
    size_t rows = 0, segs = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t j = parts[i].shard;
        if ((int)j >= g || !j) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "layer %zu: shard %zu is not another rank of the stage", tag, j);
        hout[3 * j] = (long long)tag, hout[3 * j + 1] = (long long)parts[i].nrows, hout[3 * j + 2] = (long long)parts[i].nseg;
        for (size_t k = 0; k < parts[i].nseg; k++, segs++)
            p->wire_segs[3 * segs] = (long long)parts[i].segs[k].matrix, p->wire_segs[3 * segs + 1] = (long long)parts[i].segs[k].row,
            p->wire_segs[3 * segs + 2] = (long long)parts[i].segs[k].rows;
        memcpy(p->xch_rows + rows * H, parts[i].rows, parts[i].nrows * H * sizeof(float));
        rows += parts[i].nrows;
    }
    clnpu_status st = too_many(p, rows * H);
    if (!st) st = headers(p, hout, hin); /* counts first */
    /* dispatch: segments, then rows, from this rank (group rank 0) to each shard's rank */
    size_t at = 0;
    for (int j = 0; j < g; j++) sc[j] = (int)(3 * hout[3 * j + 2]), sd[j] = (int)at, at += (size_t)sc[j];
    if (!st) st = xch(p, p->wire_segs, sc, sd, NULL, rc, rd, MPI_LONG_LONG, "sending expert segments");
    at = 0;
    for (int j = 0; j < g; j++) sc[j] = (int)(hout[3 * j + 1] * (long long)H), sd[j] = (int)at, at += (size_t)sc[j];
    if (!st) st = xch(p, p->xch_rows, sc, sd, NULL, rc, rd, MPI_FLOAT, "sending experts' rows");
    /* combine: every shard's outputs back, in the same order */
    for (int j = 0; j < g; j++) rc[j] = sc[j], rd[j] = sd[j], sc[j] = 0, sd[j] = 0;
    if (!st) st = xch(p, NULL, sc, sd, p->xch_rows, rc, rd, MPI_FLOAT, "receiving experts' outputs");
    rows = 0;
    for (size_t i = 0; !st && i < n; i++) {
        memcpy(parts[i].out, p->xch_rows + rows * H, parts[i].nrows * H * sizeof(float));
        rows += parts[i].nrows;
    }
    return st;
}

/* One of the owner's exchanges, served; *ended when the owner ended the stage's step instead. */
static clnpu_status serve_one(clnpu_pipeline *p, size_t s, bool *ended)
{
    const size_t H = p->cfg.hidden_size, E = p->cfg.n_routed_experts;
    const size_t max_rows = p->max_tokens * p->cfg.num_experts_per_tok; /* a step's rows, all replicas' together */
    const int me = p->group_rank;
    *ended = false;
    long long hout[3 * CLNPU_MAX_EP] = {0}, hin[3 * CLNPU_MAX_EP];
    int sc[CLNPU_MAX_EP] = {0}, sd[CLNPU_MAX_EP] = {0}, rc[CLNPU_MAX_EP] = {0}, rd[CLNPU_MAX_EP] = {0};
    clnpu_status st = headers(p, hout, hin);
    if (st) return clnpu_fail_context(st, "serving stage %zu's experts", s);
    const long long layer = hin[0], nrows = hin[1], nseg = hin[2]; /* from group rank 0, the owner */
    if (nrows < 0) return *ended = true, CLNPU_OK; /* the stage's step is over */
    if (nrows > (long long)max_rows || nseg < 0 || nseg > (long long)E)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: malformed exchange from rank %d", p->rank, p->owner[s]);
    rc[0] = (int)(3 * nseg);
    st = xch(p, NULL, sc, sd, p->wire_segs, rc, rd, MPI_LONG_LONG, "receiving expert segments");
    rc[0] = (int)(nrows * (long long)H);
    if (!st) st = xch(p, NULL, sc, sd, p->srv_rows, rc, rd, MPI_FLOAT, "receiving experts' rows");
    for (long long i = 0; !st && i < nseg; i++)
        p->srv_segs[i] = (clnpu_gemm_segment){(size_t)p->wire_segs[3 * i], (size_t)p->wire_segs[3 * i + 1],
                                              (size_t)p->wire_segs[3 * i + 2]};
    clnpu_moe_block *b = st ? NULL : clnpu_model_moe_block(p->stages[s], (size_t)layer);
    if (!st && !b) st = clnpu_fail(CLNPU_ERR_IO, "rank %d: rank %d sent rows for layer %lld, not a MoE layer of stage %zu",
                                   p->rank, p->owner[s], layer, s);
    if (!st) st = clnpu_moe_block_serve(b, (size_t)me, p->srv_rows, (size_t)nrows, p->srv_segs, (size_t)nseg, p->srv_rows);
    rc[0] = 0, sc[0] = (int)(nrows * (long long)H);
    if (!st) st = xch(p, p->srv_rows, sc, sd, NULL, rc, rd, MPI_FLOAT, "sending experts' outputs");
    return st ? clnpu_fail_context(st, "serving stage %zu's experts", s) : CLNPU_OK;
}

/* A rank serving a shard of stage s: answer the owner's exchanges until it ends the step. */
clnpu_status pipeline_serve_stage(clnpu_pipeline *p, size_t s)
{
    for (bool ended = false;;) {
        clnpu_status st = serve_one(p, s, &ended);
        if (st || ended) return st;
    }
}

/* ---- tensor-parallel ranks of a stage (a rank per device) ---- */

static clnpu_status tp_allgather(void *ctx, const float *mine, size_t n, float *all)
{
    clnpu_pipeline *p = ((struct remote_ctx *)ctx)->p;
    if (n > INT_MAX) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "rank %d: %zu floats in one all-gather", p->rank, n);
    MPI_Request rq;
    if (MPI_Iallgather(mine, (int)n, MPI_FLOAT, all, (int)n, MPI_FLOAT, TPCOMM(p), &rq) != MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Iallgather failed", p->rank);
    return mpi_wait(p, &rq, "summing tensor-parallel partial results with", -1);
}

static clnpu_status tp_gatherv(void *ctx, const float *mine, size_t n, float *all, size_t rows)
{
    clnpu_pipeline *p = ((struct remote_ctx *)ctx)->p;
    const size_t V = p->cfg.vocab_size, t = p->tp_size;
    int count[CLNPU_MAX_EP], disp[CLNPU_MAX_EP], at = 0;
    for (size_t r = 0; r < t; r++) {
        const size_t cols = r ? V * (r + 1) / t - V * r / t : 0; /* rank 0's columns are in place */
        count[r] = (int)(rows * cols), disp[r] = at, at += count[r];
    }
    MPI_Request rq;
    if (MPI_Igatherv(mine, (int)n, MPI_FLOAT, all, count, disp, MPI_FLOAT, 0, TPCOMM(p), &rq) != MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Igatherv failed", p->rank);
    return mpi_wait(p, &rq, "gathering the logits' columns with", -1);
}

static clnpu_status tp_moe(void *ctx, size_t layer)
{
    clnpu_pipeline *p = ((struct remote_ctx *)ctx)->p;
    const size_t s = ((struct remote_ctx *)ctx)->stage;
    if (p->dp_ranks[s]) { /* with attention replicas: the meeting, with no rows of this rank's */
        float none[1];
        return pipeline_mpi_meet(ctx, layer, NULL, 0, none);
    }
    bool ended;
    clnpu_status st = serve_one(p, s, &ended);
    if (!st && ended)
        st = clnpu_fail(CLNPU_ERR_IO, "rank %d: the owner of stage %zu ended the step inside MoE layer %zu", p->rank, s, layer);
    return st;
}

clnpu_tp_remote pipeline_mpi_tp_remote(clnpu_pipeline *p, size_t s)
{
    return (clnpu_tp_remote){tp_allgather, tp_gatherv, tp_moe, &p->remote_ctx[s]};
}

/* Stage s's step on one of its TP ranks: the previous stage's hidden states from the owner to
 * every rank (MPI_Ibcast), then this rank's share of every layer; the owner keeps the outputs. */
clnpu_status pipeline_mpi_tp_forward(clnpu_pipeline *p, size_t s, size_t n, const int *ids, const size_t *seqs,
                                     const size_t *pos, bool decode, const float *h_in, float *h_out, float *logits)
{
    const size_t H = p->cfg.hidden_size;
    clnpu_model *m = p->stages[s];
    const bool owner = p->group_rank == 0, want = m->opt.head && logits;
    float *h = owner ? (float *)h_in : p->dp_in;
    clnpu_status st = CLNPU_OK;
    if (!m->opt.embed) {
        if (n * H > INT_MAX) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "rank %d: %zu hidden values", p->rank, n * H);
        MPI_Request rq;
        st = MPI_Ibcast(h, (int)(n * H), MPI_FLOAT, 0, GROUP(p), &rq) == MPI_SUCCESS
                 ? mpi_wait(p, &rq, "receiving the stage's hidden states with", -1)
                 : clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Ibcast failed", p->rank);
    }
    if (!st) st = clnpu_model_forward_rank(m, n, ids, seqs, pos, decode, m->opt.embed ? NULL : h, owner ? h_out : NULL,
                                           owner ? logits : NULL, want);
    return st ? clnpu_fail_context(st, "stage %zu, tensor-parallel rank %d", s, p->group_rank) : CLNPU_OK;
}

/* ---- attention replicas on the ranks of a stage (a rank per device) ---- */

/* Counts and displacements (in items of `width`) of each group rank's rows this step. */
static void dp_layout(const clnpu_pipeline *p, size_t width, int *count, int *disp)
{
    int at = 0;
    for (int j = 0; j < p->group_size; j++) count[j] = (int)(p->dp_count[j] * width), disp[j] = at, at += count[j];
}

static clnpu_status gatherv(clnpu_pipeline *p, const float *mine, size_t n, float *all, size_t width, const char *what)
{
    int count[CLNPU_MAX_EP], disp[CLNPU_MAX_EP];
    dp_layout(p, width, count, disp);
    MPI_Request rq;
    if (MPI_Igatherv(mine, (int)(n * width), MPI_FLOAT, all, count, disp, MPI_FLOAT, 0, GROUP(p), &rq) != MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Igatherv failed %s", p->rank, what);
    return mpi_wait(p, &rq, what, -1);
}

static clnpu_status scatterv(clnpu_pipeline *p, const float *all, float *mine, size_t n, size_t width, const char *what)
{
    int count[CLNPU_MAX_EP], disp[CLNPU_MAX_EP];
    dp_layout(p, width, count, disp);
    MPI_Request rq;
    if (MPI_Iscatterv(all, count, disp, MPI_FLOAT, mine, (int)(n * width), MPI_FLOAT, 0, GROUP(p), &rq) != MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Iscatterv failed %s", p->rank, what);
    return mpi_wait(p, &rq, what, -1);
}

/* A MoE layer's meeting of the stage's replicas: every rank's rows to the owner, which runs the
 * stage's MoE block on all of them (its expert exchange served by the other ranks meanwhile),
 * and each rank's outputs back. */
clnpu_status pipeline_mpi_meet(void *ctx, size_t layer, const float *rows, size_t n, float *out)
{
    clnpu_pipeline *p = ((struct remote_ctx *)ctx)->p;
    const size_t s = ((struct remote_ctx *)ctx)->stage, H = p->cfg.hidden_size;
    size_t total = 0;
    for (int j = 0; j < p->group_size; j++) total += p->dp_count[j];
    clnpu_status st = gatherv(p, rows, n, p->dp_in, H, "gathering the replicas' rows for a MoE layer with");
    if (!st && p->group_rank == 0) {
        st = clnpu_dp_run_moe(p->dps[s], layer, p->dp_in, total, p->dp_out);
    } else if (!st) {
        bool ended;
        st = serve_one(p, s, &ended);
        if (!st && ended) st = clnpu_fail(CLNPU_ERR_IO, "rank %d: the owner of stage %zu ended the step inside MoE layer %zu",
                                          p->rank, s, layer);
    }
    if (!st) st = scatterv(p, p->dp_out, out, n, H, "returning the replicas' MoE outputs with");
    return st ? clnpu_fail_context(st, "stage %zu, MoE layer %zu", s, layer) : CLNPU_OK;
}

/* Stage s's step on this rank, one attention replica per rank of the stage: the rows of
 * sequences q with q mod replicas = this rank's place, the previous stage's hidden states
 * scattered from the owner and the outputs gathered back to it in the step's order. A rank
 * without rows still takes part in every MoE layer's meeting. */
clnpu_status pipeline_mpi_dp_forward(clnpu_pipeline *p, size_t s, size_t n, const int *ids, const size_t *seqs,
                                     const size_t *pos, bool decode, const float *h_in, float *h_out, float *logits)
{
    /* t ranks per replica (tensor parallel inside it): replica j is group ranks j*t .. j*t+t-1,
     * and its first rank alone brings rows to the MoE meetings and outputs to the owner */
    const size_t t = p->tp_size ? p->tp_size : 1, G = (size_t)p->group_size, R = G / t, me = (size_t)p->group_rank;
    const size_t rep = me / t, H = p->cfg.hidden_size, V = p->cfg.vocab_size;
    clnpu_model *m = p->stages[s];
    const bool owner = me == 0, lead = me % t == 0, embed = m->opt.embed, last = m->opt.head;
    size_t cnt[CLNPU_MAX_EP] = {0}, first[CLNPU_MAX_EP + 1] = {0};
    size_t *order = malloc((n + 1) * sizeof *order), *lseq = malloc((n + 1) * sizeof *lseq);
    size_t *lpos = malloc((n + 1) * sizeof *lpos);
    int *lids = malloc((n + 1) * sizeof *lids);
    if (order && lseq && lpos && lids) pipeline_deal_rows(n, seqs, ids, pos, R, cnt, first, order, lids, lseq, lpos);
    for (size_t g = 0; g < G; g++) p->dp_count[g] = g % t ? 0 : cnt[g / t];
    const size_t mine = cnt[rep], width = last ? V : H, at0 = first[rep];
    float *hin = malloc((mine + 1) * H * sizeof *hin), *res = malloc((mine + 1) * width * sizeof *res);
    float *all = owner ? malloc((n * t + 1) * (width > H ? width : H) * sizeof *all) : NULL;
    clnpu_status st = order && lseq && lpos && lids && hin && res && (!owner || all)
                          ? CLNPU_OK : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st && !embed) { /* every rank of replica j gets its rows of the previous stage's states */
        int count[CLNPU_MAX_EP], disp[CLNPU_MAX_EP], at = 0;
        for (size_t g = 0; g < G; g++) {
            count[g] = (int)(cnt[g / t] * H), disp[g] = at;
            for (size_t k = first[g / t]; owner && k < first[g / t + 1]; k++)
                memcpy(all + (size_t)at + (k - first[g / t]) * H, h_in + order[k] * H, H * sizeof(float));
            at += count[g];
        }
        MPI_Request rq;
        st = MPI_Iscatterv(all, count, disp, MPI_FLOAT, hin, (int)(mine * H), MPI_FLOAT, 0, GROUP(p), &rq) == MPI_SUCCESS
                 ? mpi_wait(p, &rq, "scattering the stage's hidden states with", -1)
                 : clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Iscatterv failed", p->rank);
    }
    if (!st && mine) {
        st = clnpu_model_forward_rank(m, mine, lids + at0, lseq + at0, lpos + at0, decode, embed ? NULL : hin,
                                      lead && !last ? res : NULL, lead && last && logits ? res : NULL, last && logits);
    } else if (!st) { /* no rows here this step: meet the others at every MoE layer all the same */
        float none[1];
        for (size_t l = m->opt.layer_begin; !st && l < m->opt.layer_end; l++)
            if (clnpu_model_config_is_moe(&p->cfg, l)) st = pipeline_mpi_meet(&p->remote_ctx[s], l, NULL, 0, none);
    }
    /* the replicas' outputs to the owner (from their first ranks), back in the step's order */
    if (!st && (!last || logits)) st = gatherv(p, res, lead ? mine : 0, all, width, "gathering the replicas' outputs with");
    for (size_t k = 0; !st && owner && k < n; k++)
        memcpy((last ? logits : h_out) + order[k] * width, all + k * width, width * sizeof(float));
    free(order), free(lseq), free(lpos), free(lids), free(hin), free(res), free(all);
    return st ? clnpu_fail_context(st, "stage %zu, rank %zu of its %zu", s, me, G) : CLNPU_OK;
}

/* The owner of stage s tells the ranks serving its shards that the step is over. */
clnpu_status pipeline_end_stage(clnpu_pipeline *p, size_t s)
{
    if (p->group_size <= 1 || p->owner[s] != p->rank) return CLNPU_OK;
    long long hout[3 * CLNPU_MAX_EP], hin[3 * CLNPU_MAX_EP];
    for (int j = 0; j < 3 * CLNPU_MAX_EP; j += 3) hout[j] = 0, hout[j + 1] = -1, hout[j + 2] = 0;
    return headers(p, hout, hin);
}

clnpu_status pipeline_mpi_agree(clnpu_pipeline *p, clnpu_status mine_st)
{
    /* every rank agrees that set-up worked before any step starts: a rank that failed to load
     * its stages is named on all of them, and timings start with every rank ready */
    if (p->nranks <= 1) return mine_st;
    int mine = mine_st ? p->rank : INT_MAX, first = INT_MAX;
    MPI_Request rq;
    clnpu_status ws = MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, COMM(p), &rq) == MPI_SUCCESS
                          ? mpi_wait(p, &rq, "agreeing on set-up with", -1)
                          : clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Iallreduce failed", p->rank);
    if (mine_st) return mine_st;
    if (ws) return ws;
    if (first != INT_MAX)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d could not set up its stages (its own message says why)", first);
    return CLNPU_OK;
}

/* The library's communicators go; MPI itself is the caller's (no MPI_Finalize here: after an
 * error a peer may be stopped or dead, and MPI_Finalize would wait for it forever). */
void pipeline_mpi_release(clnpu_pipeline *p)
{
    if (p->nsends) pipeline_sends_done(p); /* an error path may leave sends running */
    free(p->sends);
    if (p->tp_comm) MPI_Comm_free((MPI_Comm *)p->tp_comm);
    free(p->tp_comm);
    if (p->group_comm) MPI_Comm_free((MPI_Comm *)p->group_comm);
    free(p->group_comm);
    if (p->comm) MPI_Comm_free((MPI_Comm *)p->comm);
    free(p->comm);
}

/* Messages between two ranks with one tag arrive in order, so a step's groups need no numbering. */
clnpu_status pipeline_recv_hidden(clnpu_pipeline *p, size_t s, size_t row, size_t rows)
{
    if (p->nranks <= 1 || !s || p->owner[s] != p->rank || p->owner[s - 1] == p->rank) return CLNPU_OK;
    const size_t H = p->cfg.hidden_size;
    return mpi_xfer(p, false, p->h[s % 2] + row * H, rows * H, MPI_FLOAT, p->owner[s - 1], (int)s,
                    "receiving hidden states from");
}

/* Sends are started and left running: the rank goes on with its next group while this one
 * travels (each group has its own rows of the buffer); pipeline_sends_done waits for them. */
clnpu_status pipeline_send_hidden(clnpu_pipeline *p, size_t s, size_t row, size_t rows)
{
    if (p->nranks <= 1 || s + 1 >= p->count || p->owner[s] != p->rank || p->owner[s + 1] == p->rank) return CLNPU_OK;
    const size_t H = p->cfg.hidden_size, count = rows * H;
    if (count > INT_MAX) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "rank %d: %zu hidden values in one message", p->rank, count);
    if (p->nsends >= CLNPU_MAX_MICRO) {
        clnpu_status st = pipeline_sends_done(p);
        if (st) return st;
    }
    MPI_Request *rq = &((MPI_Request *)p->sends)[p->nsends];
    if (MPI_Isend(p->h[(s + 1) % 2] + row * H, (int)count, MPI_FLOAT, p->owner[s + 1], (int)(s + 1), COMM(p), rq) !=
        MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI failed sending hidden states to rank %d", p->rank, p->owner[s + 1]);
    p->send_peer[p->nsends++] = p->owner[s + 1];
    return CLNPU_OK;
}

clnpu_status pipeline_sends_done(clnpu_pipeline *p)
{
    clnpu_status st = CLNPU_OK;
    for (size_t i = 0; i < p->nsends; i++) {
        clnpu_status w = mpi_wait(p, &((MPI_Request *)p->sends)[i], "sending hidden states to", p->send_peer[i]);
        if (!st) st = w;
    }
    p->nsends = 0;
    return st;
}

clnpu_status pipeline_bcast_logits(clnpu_pipeline *p, float *logits, size_t count)
{
    if (p->nranks <= 1 || !logits) return CLNPU_OK;
    if (count > INT_MAX) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "rank %d: %zu logits in one message", p->rank, count);
    const int root = p->owner[p->count - 1];
    MPI_Request rq;
    if (MPI_Ibcast(logits, (int)count, MPI_FLOAT, root, COMM(p), &rq) != MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Ibcast failed", p->rank);
    /* the root waits for the others, the others for the root */
    return root == p->rank ? mpi_wait(p, &rq, "broadcasting logits to", -1) : mpi_wait(p, &rq, "receiving logits from", root);
}
#else
/* Built without MPI: one process runs every stage; nothing crosses ranks. */
clnpu_status pipeline_mpi_agree(clnpu_pipeline *p, clnpu_status mine) { (void)p; return mine; }
void pipeline_mpi_release(clnpu_pipeline *p) { (void)p; }
clnpu_status pipeline_recv_hidden(clnpu_pipeline *p, size_t s, size_t r, size_t n) { (void)p, (void)s, (void)r, (void)n; return CLNPU_OK; }
clnpu_status pipeline_send_hidden(clnpu_pipeline *p, size_t s, size_t r, size_t n) { (void)p, (void)s, (void)r, (void)n; return CLNPU_OK; }
clnpu_status pipeline_sends_done(clnpu_pipeline *p) { (void)p; return CLNPU_OK; }
clnpu_status pipeline_bcast_logits(clnpu_pipeline *p, float *l, size_t c) { (void)p, (void)l, (void)c; return CLNPU_OK; }
clnpu_status pipeline_end_stage(clnpu_pipeline *p, size_t s) { (void)p, (void)s; return CLNPU_OK; }
/* no rank is remote without MPI, so this is never reached */
clnpu_status pipeline_mpi_exchange(void *ctx, size_t tag, const clnpu_moe_remote_part *parts, size_t n)
{
    return pipeline_never_exchange(ctx, tag, parts, n);
}
clnpu_status pipeline_mpi_tp_comm(clnpu_pipeline *p, size_t t)
{
    (void)p;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "tensor parallel %zu across ranks needs MPI", t);
}
clnpu_tp_remote pipeline_mpi_tp_remote(clnpu_pipeline *p, size_t s)
{
    (void)p, (void)s;
    return (clnpu_tp_remote){NULL, NULL, NULL, NULL};
}
clnpu_status pipeline_mpi_tp_forward(clnpu_pipeline *p, size_t s, size_t n, const int *ids, const size_t *seqs,
                                     const size_t *pos, bool decode, const float *h_in, float *h_out, float *logits)
{
    (void)p, (void)n, (void)ids, (void)seqs, (void)pos, (void)decode, (void)h_in, (void)h_out, (void)logits;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "stage %zu: tensor parallel across ranks needs MPI", s);
}
clnpu_status pipeline_mpi_meet(void *ctx, size_t layer, const float *rows, size_t n, float *out)
{
    (void)ctx, (void)rows, (void)n, (void)out;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "layer %zu: attention replicas across ranks need MPI", layer);
}
clnpu_status pipeline_mpi_dp_forward(clnpu_pipeline *p, size_t s, size_t n, const int *ids, const size_t *seqs,
                                     const size_t *pos, bool decode, const float *h_in, float *h_out, float *logits)
{
    (void)p, (void)n, (void)ids, (void)seqs, (void)pos, (void)decode, (void)h_in, (void)h_out, (void)logits;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "stage %zu: attention replicas across ranks need MPI", s);
}
clnpu_status pipeline_serve_stage(clnpu_pipeline *p, size_t s)
{
    (void)p;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "stage %zu's experts on another rank need MPI", s);
}
#endif
