/* Serving a plan across MPI ranks: rank 0 runs the engine (and the HTTP server); before each
 * pipeline call it announces the call to the other ranks, which make the same call, so every
 * rank steps its stages in the same order as under `clnpu run` (where every rank runs the same
 * program), over the pipeline's own communicator. Ranks wait for the next call without
 * spinning a core (a test every 200 us). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/error.h"
#include "pipeline_internal.h"
#include "serve_internal.h"
#ifdef CLNPU_HAVE_MPI
#include <mpi.h>
#endif


#ifdef CLNPU_HAVE_MPI
/* header: op, sequence, rows, logits wanted */
static clnpu_status bcast(const clnpu_pipeline *p, void *buf, int count, MPI_Datatype t, bool idle)
{
    MPI_Request rq;
    if (MPI_Ibcast(buf, count, t, 0, *(MPI_Comm *)p->comm, &rq) != MPI_SUCCESS)
        return clnpu_fail(CLNPU_ERR_IO, "serving: MPI_Ibcast failed");
    for (;;) {
        int done = 0;
        if (MPI_Test(&rq, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return clnpu_fail(CLNPU_ERR_IO, "serving: the leader (rank 0) is gone");
        if (done) return CLNPU_OK;
        if (idle) { /* between requests: leave the core to others */
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
}
#endif

clnpu_status serve_mpi_announce(clnpu_pipeline *p, int op, size_t seq, const size_t *seqs, const int *ids, size_t n,
                                bool logits)
{
    if (p->nranks <= 1) return CLNPU_OK;
#ifdef CLNPU_HAVE_MPI
    long long h[4] = {op, (long long)seq, (long long)n, logits};
    clnpu_status st = bcast(p, h, 4, MPI_LONG_LONG, false);
    if (!st && n) st = bcast(p, (void *)ids, (int)n, MPI_INT, false);
    if (!st && n && seqs) {
        long long *s = malloc(n * sizeof *s);
        if (!s) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        for (size_t i = 0; i < n; i++) s[i] = (long long)seqs[i];
        st = bcast(p, s, (int)n, MPI_LONG_LONG, false);
        free(s);
    }
    return st;
#else
    (void)op, (void)seq, (void)seqs, (void)ids, (void)n, (void)logits;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "built without MPI");
#endif
}

clnpu_status clnpu_pipeline_serve_follow(clnpu_pipeline *p)
{
    if (p->nranks <= 1 || p->rank == 0)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "only ranks other than 0 of an MPI run follow the leader");
#ifdef CLNPU_HAVE_MPI
    const size_t B = p->max_tokens, V = p->cfg.vocab_size;
    int *ids = malloc(B * sizeof *ids);
    long long *s = malloc(B * sizeof *s);
    size_t *seqs = malloc(B * sizeof *seqs);
    float *logits = malloc(B * V * sizeof *logits);
    clnpu_status st = ids && s && seqs && logits ? CLNPU_OK : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    while (!st) {
        long long h[4];
        if ((st = bcast(p, h, 4, MPI_LONG_LONG, true))) break;
        const int op = (int)h[0];
        const size_t n = (size_t)h[2];
        if (op == SERVE_CMD_STOP) break;
        if (n > B) {
            st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "serving: the leader sent %zu rows (at most %zu)", n, B);
            break;
        }
        if (n && (st = bcast(p, ids, (int)n, MPI_INT, false))) break;
        if (op == SERVE_CMD_DECODE && n) {
            if ((st = bcast(p, s, (int)n, MPI_LONG_LONG, false))) break;
            for (size_t i = 0; i < n; i++) seqs[i] = (size_t)s[i];
        }
        if (op == SERVE_CMD_PREFILL) st = clnpu_pipeline_prefill(p, (size_t)h[1], ids, n, h[3] ? logits : NULL);
        else if (op == SERVE_CMD_DECODE) st = clnpu_pipeline_decode(p, seqs, ids, n, logits);
        else if (op == SERVE_CMD_RESET) clnpu_pipeline_reset(p, (size_t)h[1]);
    }
    free(ids), free(s), free(seqs), free(logits);
    return st;
#else
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "built without MPI");
#endif
}
