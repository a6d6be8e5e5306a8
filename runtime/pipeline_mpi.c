/* Pipeline stages and expert shards across Open MPI ranks: who owns what, hidden states and
 * logits between ranks, expert rows to the ranks holding them. Every wait has a deadline. */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef CLNPU_HAVE_MPI
#include <mpi.h>
#endif

#include "../backend/error.h"
#include "pipeline_internal.h"

#ifdef CLNPU_HAVE_MPI
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

/* Under mpirun (Open MPI's environment), either the stages are dealt to ranks in contiguous runs
 * (ranks <= stages; a stage's expert shards stay with its rank), or every plan device gets its own
 * rank (ranks = devices; a stage's first device's rank owns it, the others serve its expert shards).
 * Without mpirun every stage is this process's. CLNPU_MPI_TIMEOUT (seconds, default 120) bounds
 * every wait for a peer. */
clnpu_status pipeline_mpi_setup(clnpu_pipeline *p, const clnpu_stage_spec *sp, size_t n)
{
    p->rank = 0, p->nranks = 1;
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    const char *to = getenv("CLNPU_MPI_TIMEOUT");
    p->timeout_s = to && atof(to) > 0 ? atof(to) : 120;
    if (!size || atoi(size) <= 1) return CLNPU_OK;
#ifdef CLNPU_HAVE_MPI
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS)
            return clnpu_fail(CLNPU_ERR_IO, "MPI_Init failed");
        p->mpi_owner_init = 1;
    }
    /* errors come back as codes so a lost peer becomes a message, not a silent abort */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &p->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &p->nranks);
    size_t slots = 0;
    for (size_t s = 0; s < n; s++) slots += sp[s].ep_count ? sp[s].ep_count : 1;
    if ((size_t)p->nranks <= n) {
        for (size_t s = 0; s < n; s++) {
            p->owner[s] = (int)(s * (size_t)p->nranks / n);
            for (size_t j = 0; j < CLNPU_MAX_EP; j++) p->shard_rank[s * CLNPU_MAX_EP + j] = p->owner[s];
        }
    } else if ((size_t)p->nranks == slots) {
        int r = 0;
        for (size_t s = 0; s < n; s++) {
            p->owner[s] = r;
            for (size_t j = 0; j < CLNPU_MAX_EP; j++) p->shard_rank[s * CLNPU_MAX_EP + j] = r + (j < sp[s].ep_count ? (int)j : 0);
            r += sp[s].ep_count ? (int)sp[s].ep_count : 1;
        }
    } else {
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%d MPI ranks for a plan of %zu stages on %zu devices: give at most "
                          "%zu (stages dealt in runs) or exactly %zu (a rank per device)", p->nranks, n, slots, n, slots);
    }
    /* fault injection for the tests: "r" kills rank r at its first step, "r:load" makes rank r
     * fail its set-up with an error */
    const char *fault = getenv("CLNPU_FAULT_RANK");
    if (fault && *fault && atoi(fault) == p->rank) {
        if (strstr(fault, ":load")) return clnpu_fail(CLNPU_ERR_IO, "rank %d: set-up failure injected (CLNPU_FAULT_RANK)", p->rank);
        p->fault_step = 1;
    }
    return CLNPU_OK;
#else
    (void)sp, (void)n;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "started by mpirun with %s ranks, but clnpu was built without MPI "
                      "(install libopenmpi-dev and rebuild)", size);
#endif
}

/* Expert exchange between a stage's owner and the ranks serving its other shards: a header
 * {layer, shard, rows, segments}, the segments and the rows go out, the outputs come back; a
 * header with rows = -1 ends the stage's step. Tags stay clear of the stage numbers used for
 * hidden states. */
enum { TAG_EXP_HDR = 30000, TAG_EXP_SEGS, TAG_EXP_ROWS, TAG_EXP_OUT };

clnpu_status pipeline_never_send(void *ctx, size_t tag, size_t shard, const float *rows, size_t nrows,
                                 const clnpu_gemm_segment *segs, size_t nseg)
{
    (void)ctx, (void)rows, (void)nrows, (void)segs, (void)nseg;
    return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "layer %zu: shard %zu belongs to the stage's owner rank", tag, shard);
}

clnpu_status pipeline_never_recv(void *ctx, size_t tag, size_t shard, float *out, size_t nrows)
{
    return pipeline_never_send(ctx, tag, shard, out, nrows, NULL, 0);
}

#ifdef CLNPU_HAVE_MPI
static clnpu_status mpi_xfer(clnpu_pipeline *p, bool send, void *buf, size_t count, MPI_Datatype type, int peer,
                             int tag, const char *what)
{
    if (!count) return CLNPU_OK;
    if (count > INT_MAX) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "rank %d: message of %zu items to rank %d", p->rank, count, peer);
    MPI_Request rq;
    int rc = send ? MPI_Isend(buf, (int)count, type, peer, tag, MPI_COMM_WORLD, &rq)
                  : MPI_Irecv(buf, (int)count, type, peer, tag, MPI_COMM_WORLD, &rq);
    if (rc != MPI_SUCCESS) return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI failed %s rank %d", p->rank, what, peer);
    return mpi_wait(p, &rq, what, peer);
}

clnpu_status pipeline_mpi_send(void *ctx, size_t tag, size_t shard, const float *rows, size_t nrows,
                               const clnpu_gemm_segment *segs, size_t nseg)
{
    struct remote_ctx *c = ctx;
    clnpu_pipeline *p = c->p;
    const int peer = p->shard_rank[c->stage * CLNPU_MAX_EP + shard];
    long long hdr[4] = {(long long)tag, (long long)shard, (long long)nrows, (long long)nseg};
    for (size_t i = 0; i < nseg; i++)
        p->wire_segs[3 * i] = (long long)segs[i].matrix, p->wire_segs[3 * i + 1] = (long long)segs[i].row,
        p->wire_segs[3 * i + 2] = (long long)segs[i].rows;
    clnpu_status st = mpi_xfer(p, true, hdr, 4, MPI_LONG_LONG, peer, TAG_EXP_HDR, "sending experts' rows to");
    if (!st) st = mpi_xfer(p, true, p->wire_segs, 3 * nseg, MPI_LONG_LONG, peer, TAG_EXP_SEGS, "sending experts' rows to");
    if (!st)
        st = mpi_xfer(p, true, (void *)rows, nrows * p->cfg.hidden_size, MPI_FLOAT, peer, TAG_EXP_ROWS, "sending experts' rows to");
    return st;
}

clnpu_status pipeline_mpi_recv(void *ctx, size_t tag, size_t shard, float *out, size_t nrows)
{
    struct remote_ctx *c = ctx;
    clnpu_pipeline *p = c->p;
    (void)tag;
    const int peer = p->shard_rank[c->stage * CLNPU_MAX_EP + shard];
    return mpi_xfer(p, false, out, nrows * p->cfg.hidden_size, MPI_FLOAT, peer, TAG_EXP_OUT, "receiving experts' outputs from");
}

/* A rank serving a shard of stage s: answer the owner's exchanges until it ends the step. */
clnpu_status pipeline_serve_stage(clnpu_pipeline *p, size_t s)
{
    const int owner = p->owner[s];
    const size_t H = p->cfg.hidden_size, E = p->cfg.n_routed_experts;
    const size_t max_rows = p->max_tokens * p->cfg.num_experts_per_tok;
    for (;;) {
        long long hdr[4];
        clnpu_status st = mpi_xfer(p, false, hdr, 4, MPI_LONG_LONG, owner, TAG_EXP_HDR, "waiting for experts' rows from");
        if (st) return st;
        if (hdr[2] < 0) return CLNPU_OK; /* the stage's step is over */
        if (hdr[2] > (long long)max_rows || hdr[3] < 0 || hdr[3] > (long long)E)
            return clnpu_fail(CLNPU_ERR_IO, "rank %d: malformed exchange from rank %d", p->rank, owner);
        const size_t nrows = (size_t)hdr[2], nseg = (size_t)hdr[3];
        st = mpi_xfer(p, false, p->wire_segs, 3 * nseg, MPI_LONG_LONG, owner, TAG_EXP_SEGS, "receiving experts' rows from");
        if (!st) st = mpi_xfer(p, false, p->srv_rows, nrows * H, MPI_FLOAT, owner, TAG_EXP_ROWS, "receiving experts' rows from");
        for (size_t i = 0; !st && i < nseg; i++)
            p->srv_segs[i] = (clnpu_gemm_segment){(size_t)p->wire_segs[3 * i], (size_t)p->wire_segs[3 * i + 1],
                                                  (size_t)p->wire_segs[3 * i + 2]};
        clnpu_moe_block *b = st ? NULL : clnpu_model_moe_block(p->stages[s], (size_t)hdr[0]);
        if (!st && !b) st = clnpu_fail(CLNPU_ERR_IO, "rank %d: rank %d sent rows for layer %lld, not a MoE layer of stage %zu",
                                       p->rank, owner, hdr[0], s);
        if (!st) st = clnpu_moe_block_serve(b, (size_t)hdr[1], p->srv_rows, nrows, p->srv_segs, nseg, p->srv_rows);
        if (!st) st = mpi_xfer(p, true, p->srv_rows, nrows * H, MPI_FLOAT, owner, TAG_EXP_OUT, "sending experts' outputs to");
        if (st) return clnpu_fail_context(st, "serving stage %zu's experts", s);
    }
}

/* The owner of stage s tells every rank serving one of its shards that the step is over. */
clnpu_status pipeline_end_stage(clnpu_pipeline *p, size_t s)
{
    clnpu_status st = CLNPU_OK;
    long long done[4] = {0, 0, -1, 0};
    for (size_t j = 1; !st && j < CLNPU_MAX_EP; j++) {
        const int r = p->shard_rank[s * CLNPU_MAX_EP + j];
        if (r != p->rank && r != p->shard_rank[s * CLNPU_MAX_EP + j - 1])
            st = mpi_xfer(p, true, done, 4, MPI_LONG_LONG, r, TAG_EXP_HDR, "ending the step with");
    }
    return st;
}

clnpu_status pipeline_mpi_agree(clnpu_pipeline *p, clnpu_status mine_st)
{
    /* every rank agrees that set-up worked before any step starts: a rank that failed to load
     * its stages is named on all of them, and timings start with every rank ready */
    if (p->nranks <= 1) return mine_st;
    int mine = mine_st ? p->rank : INT_MAX, first = INT_MAX;
    MPI_Request rq;
    clnpu_status ws = MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &rq) == MPI_SUCCESS
                          ? mpi_wait(p, &rq, "agreeing on set-up with", -1)
                          : clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Iallreduce failed", p->rank);
    if (mine_st) return mine_st;
    if (ws) return ws;
    if (first != INT_MAX)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d could not set up its stages (its own message says why)", first);
    return CLNPU_OK;
}

void pipeline_mpi_finalize(clnpu_pipeline *p)
{
    if (p->mpi_owner_init) MPI_Finalize();
}

clnpu_status pipeline_recv_hidden(clnpu_pipeline *p, size_t s, size_t count)
{
    if (p->nranks <= 1 || !s || p->owner[s] != p->rank || p->owner[s - 1] == p->rank) return CLNPU_OK;
    return mpi_xfer(p, false, p->h[s % 2], count, MPI_FLOAT, p->owner[s - 1], (int)s, "receiving hidden states from");
}

clnpu_status pipeline_send_hidden(clnpu_pipeline *p, size_t s, size_t count)
{
    if (p->nranks <= 1 || s + 1 >= p->count || p->owner[s] != p->rank || p->owner[s + 1] == p->rank) return CLNPU_OK;
    return mpi_xfer(p, true, p->h[(s + 1) % 2], count, MPI_FLOAT, p->owner[s + 1], (int)(s + 1), "sending hidden states to");
}

clnpu_status pipeline_bcast_logits(clnpu_pipeline *p, float *logits, size_t count)
{
    if (p->nranks <= 1 || !logits) return CLNPU_OK;
    if (count > INT_MAX) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "rank %d: %zu logits in one message", p->rank, count);
    const int root = p->owner[p->count - 1];
    MPI_Request rq;
    if (MPI_Ibcast(logits, (int)count, MPI_FLOAT, root, MPI_COMM_WORLD, &rq) != MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Ibcast failed", p->rank);
    return mpi_wait(p, &rq, "receiving logits from", root);
}
#else
/* Built without MPI: one process runs every stage; nothing crosses ranks. */
clnpu_status pipeline_mpi_agree(clnpu_pipeline *p, clnpu_status mine) { (void)p; return mine; }
void pipeline_mpi_finalize(clnpu_pipeline *p) { (void)p; }
clnpu_status pipeline_recv_hidden(clnpu_pipeline *p, size_t s, size_t c) { (void)p, (void)s, (void)c; return CLNPU_OK; }
clnpu_status pipeline_send_hidden(clnpu_pipeline *p, size_t s, size_t c) { (void)p, (void)s, (void)c; return CLNPU_OK; }
clnpu_status pipeline_bcast_logits(clnpu_pipeline *p, float *l, size_t c) { (void)p, (void)l, (void)c; return CLNPU_OK; }
clnpu_status pipeline_end_stage(clnpu_pipeline *p, size_t s) { (void)p, (void)s; return CLNPU_OK; }
/* no rank is remote without MPI, so these are never reached */
clnpu_status pipeline_mpi_send(void *ctx, size_t tag, size_t shard, const float *rows, size_t nrows,
                               const clnpu_gemm_segment *segs, size_t nseg)
{
    return pipeline_never_send(ctx, tag, shard, rows, nrows, segs, nseg);
}
clnpu_status pipeline_mpi_recv(void *ctx, size_t tag, size_t shard, float *out, size_t nrows)
{
    return pipeline_never_recv(ctx, tag, shard, out, nrows);
}
clnpu_status pipeline_serve_stage(clnpu_pipeline *p, size_t s)
{
    (void)p;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "stage %zu's experts on another rank need MPI", s);
}
#endif
