/* Collectives of an in-process tensor-parallel group (see tp.h): a barrier that a failing rank
 * can break, and host slots double-buffered by call parity so that one barrier per collective
 * suffices (a rank can only overwrite parity p's slot after every rank has passed the barrier of
 * the call in between, so every rank has finished reading parity p). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "barrier.h"
#include "tp.h"

struct clnpu_tp_group {
    size_t size, floats;
    clnpu_barrier bar;
    clnpu_tp_remote remote;   /* ranks in other processes (remote.allgather set) */
    float *gathered;          /* remote gather: [rows][total] on rank 0 */
    size_t gathered_cap;
    float *slots;        /* [2][size][floats] */
    float *sums;         /* [size][floats]: each rank's sum before it goes up */
    size_t *calls;       /* all-reduces made by each rank this step */
    struct tp_part {     /* gather: each rank's host copy of its columns */
        const float *host;
        size_t col0, cols;
    } *parts;
};

clnpu_status clnpu_tp_group_create(size_t size, size_t floats, clnpu_tp_group **out)
{
    *out = NULL;
    clnpu_tp_group *g = calloc(1, sizeof *g);
    if (!g) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    g->size = size, g->floats = floats;
    g->slots = malloc(2 * size * floats * sizeof *g->slots);
    g->sums = malloc(size * floats * sizeof *g->sums);
    g->calls = calloc(size, sizeof *g->calls);
    g->parts = calloc(size, sizeof *g->parts);
    if (!g->slots || !g->sums || !g->calls || !g->parts) {
        free(g->slots), free(g->sums), free(g->calls), free(g->parts), free(g);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for a tensor-parallel group");
    }
    clnpu_barrier_init(&g->bar);
    *out = g;
    return CLNPU_OK;
}

void clnpu_tp_group_destroy(clnpu_tp_group *g)
{
    if (!g) return;
    clnpu_barrier_destroy(&g->bar);
    free(g->gathered), free(g->slots), free(g->sums), free(g->calls), free(g->parts), free(g);
}


void clnpu_tp_group_begin(clnpu_tp_group *g)
{
    clnpu_barrier_reset(&g->bar);
    for (size_t r = 0; r < g->size; r++) g->calls[r] = 0;
}

clnpu_status clnpu_tp_fail(clnpu_tp_group *g, size_t rank, clnpu_status st)
{
    char who[64];
    snprintf(who, sizeof who, "tensor-parallel rank %zu", rank);
    return clnpu_barrier_fail(&g->bar, who, st);
}

clnpu_status clnpu_tp_group_status(clnpu_tp_group *g) { return clnpu_barrier_status(&g->bar); }

void clnpu_tp_group_set_remote(clnpu_tp_group *g, const clnpu_tp_remote *r) { g->remote = *r; }

clnpu_status clnpu_tp_peer_moe(clnpu_tp_group *g, size_t layer)
{
    return g->remote.moe ? g->remote.moe(g->remote.ctx, layer) : CLNPU_OK;
}

/* Every rank arrives, or some rank has failed. */
static clnpu_status barrier(clnpu_tp_group *g)
{
    return clnpu_barrier_wait(&g->bar, g->size, NULL, NULL, NULL, "tensor-parallel group stopped: another rank failed");
}

clnpu_status clnpu_tp_allreduce(clnpu_tp_group *g, size_t rank, clnpu_buffer *b, size_t n)
{
    return clnpu_tp_allreduce_add(g, rank, b, n, true);
}

clnpu_status clnpu_tp_allreduce_add(clnpu_tp_group *g, size_t rank, clnpu_buffer *b, size_t n, bool add)
{
    if (n > g->floats)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "tensor-parallel all-reduce of %zu floats; the group holds %zu", n,
                          g->floats);
    const bool remote = g->remote.allgather != NULL;
    /* across processes every rank's part arrives packed [size][n] (an all-gather), so each
     * process sums them in rank order too and all hold the same bits */
    const size_t stride = remote ? n : g->floats;
    float *slots = g->slots + (remote ? 0 : (g->calls[rank]++ & 1) * g->size * g->floats);
    float *mine = remote ? g->sums : slots + rank * stride;
    clnpu_status st = CLNPU_OK;
    if (add) {
        st = clnpu_buffer_read(b, 0, mine, n * sizeof(float));
    } else {
        /* zeros, with no work for the device, but first a wait for its queue: this rank's last
         * write (the previous all-reduce's sum) may still be reading the host slot that this
         * call overwrites, and nothing else here blocks on the queue. A one-float blocking read
         * waits for it (in order). Without it a peer that was slow to queue that write got the
         * MoE sum in place of the attention one: 2e-3..0.5 logits errors under load in data-
         * parallel attention replicas, the one place where a rank adds zeros. */
        float one;
        st = n ? clnpu_buffer_read(b, 0, &one, sizeof one) : CLNPU_OK;
        memset(mine, 0, n * sizeof(float));
    }
    if (!st) st = remote ? g->remote.allgather(g->remote.ctx, mine, n, slots) : barrier(g);
    if (st) return st;
    float *acc = g->sums + (remote ? 0 : rank) * g->floats;
    memcpy(acc, slots, n * sizeof(float));
    for (size_t r = 1; r < g->size; r++) {
        const float *part = slots + r * stride;
        for (size_t i = 0; i < n; i++) acc[i] += part[i];
    }
    /* queued without waiting: acc is next written after this rank's next all-reduce has read
     * its buffer (or, adding zeros, waited for it), which the in-order queue does only after
     * this write */
    return clnpu_buffer_write_async(b, 0, acc, n * sizeof(float));
}

clnpu_status clnpu_tp_gather_columns(clnpu_tp_group *g, size_t rank, clnpu_buffer *b, size_t rows, size_t col0,
                                     size_t cols, size_t total, float *host)
{
    clnpu_status st = rank ? clnpu_buffer_read(b, 0, host, rows * cols * sizeof(float)) : CLNPU_OK;
    if (!st && g->remote.gatherv) { /* the peers' blocks, one after another, to rank 0's process */
        if (rank == 0 && g->gathered_cap < rows * total) {
            free(g->gathered);
            g->gathered_cap = 0;
            if (!(g->gathered = malloc(rows * total * sizeof(float))))
                return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
            g->gathered_cap = rows * total;
        }
        st = g->remote.gatherv(g->remote.ctx, host, rank ? rows * cols : 0, g->gathered, rows);
        for (size_t r = 1, at = 0; !st && rank == 0 && r < g->size; r++) {
            const size_t c0 = total * r / g->size, nc = total * (r + 1) / g->size - c0;
            st = clnpu_buffer_write_2d(b, c0 * sizeof(float), total * sizeof(float), g->gathered + at,
                                       nc * sizeof(float), nc * sizeof(float), rows);
            at += rows * nc;
        }
        return st;
    }
    if (!st) g->parts[rank] = (struct tp_part){host, col0, cols};
    if (!st) st = barrier(g);
    /* rank 0 reads the peers' host copies after they have left; they are theirs again only at
     * the next step, after every rank's thread has been joined */
    for (size_t r = 1; !st && rank == 0 && r < g->size; r++) {
        const struct tp_part *q = &g->parts[r];
        st = clnpu_buffer_write_2d(b, q->col0 * sizeof(float), total * sizeof(float), q->host, q->cols * sizeof(float),
                                   q->cols * sizeof(float), rows);
    }
    return st;
}
