/* The MoE meeting point of data-parallel attention replicas (see dp.h). In one process rows
 * travel through the host: each replica reads its rows into its place in one host array, the
 * last to arrive writes them to the leader's device, runs the MoE block on all of them and reads
 * the outputs back, and each replica writes its own rows of the output to its device. Across
 * processes the meet function moves the rows instead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "barrier.h"
#include "dp.h"
#include "model_internal.h"

struct clnpu_dp_group {
    size_t replicas, rows, hidden;
    clnpu_device *dev;
    struct clnpu_model *leader;
    clnpu_buffer *in, *out;   /* on the leader's device: [rows][hidden], made at first use */
    float *host_in, *host_out;
    size_t *first, *count;    /* this step: replica j's rows are [first[j], first[j] + count[j]) */
    size_t active, total;
    clnpu_barrier bar;
    clnpu_dp_meet_fn meet;    /* replicas in other processes: the meeting goes through this */
    void *meet_ctx;
};

clnpu_status clnpu_dp_group_create(size_t replicas, size_t rows, size_t hidden, clnpu_device *dev, clnpu_dp_group **out)
{
    *out = NULL;
    clnpu_dp_group *g = calloc(1, sizeof *g);
    if (!g) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    g->replicas = replicas, g->rows = rows, g->hidden = hidden, g->dev = dev;
    const size_t n = rows * hidden;
    g->host_in = malloc(n * sizeof(float)), g->host_out = malloc(n * sizeof(float));
    g->first = calloc(replicas, sizeof *g->first), g->count = calloc(replicas, sizeof *g->count);
    clnpu_barrier_init(&g->bar);
    clnpu_status st = g->host_in && g->host_out && g->first && g->count
                          ? CLNPU_OK : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (st) {
        clnpu_dp_group_destroy(g);
        return clnpu_fail_context(st, "data-parallel attention over %zu replicas", replicas);
    }
    *out = g;
    return CLNPU_OK;
}

void clnpu_dp_group_destroy(clnpu_dp_group *g)
{
    if (!g) return;
    clnpu_buffer_destroy(g->in), clnpu_buffer_destroy(g->out);
    clnpu_barrier_destroy(&g->bar);
    free(g->host_in), free(g->host_out), free(g->first), free(g->count), free(g);
}

void clnpu_dp_group_set_leader(clnpu_dp_group *g, struct clnpu_model *leader) { g->leader = leader; }

void clnpu_dp_group_begin(clnpu_dp_group *g, const size_t *rows)
{
    clnpu_barrier_reset(&g->bar);
    g->active = 0, g->total = 0;
    for (size_t j = 0; j < g->replicas; j++) {
        g->first[j] = g->total, g->count[j] = rows[j];
        g->total += rows[j];
        g->active += rows[j] > 0;
    }
}

clnpu_status clnpu_dp_fail(clnpu_dp_group *g, size_t replica, clnpu_status st)
{
    char who[64];
    snprintf(who, sizeof who, "attention replica %zu", replica);
    return clnpu_barrier_fail(&g->bar, who, st);
}

clnpu_status clnpu_dp_group_status(clnpu_dp_group *g) { return clnpu_barrier_status(&g->bar); }

/* Every replica's rows through the leader's MoE block of this layer; the last replica to arrive
 * runs it while the others wait, so it is the only thread enqueueing on the stage's devices. */
void clnpu_dp_group_set_remote(clnpu_dp_group *g, clnpu_dp_meet_fn meet, void *ctx) { g->meet = meet, g->meet_ctx = ctx; }

clnpu_status clnpu_dp_run_moe(clnpu_dp_group *g, size_t layer, const float *in, size_t total, float *out)
{
    const size_t d = g->hidden, n = total * d * sizeof(float);
    if (total > g->rows)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "MoE layer %zu: %zu rows from the replicas, room for %zu", layer,
                          total, g->rows);
    clnpu_moe_block *moe = g->leader ? g->leader->layers[layer].moe : NULL;
    if (!moe) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "layer %zu: this replica holds no MoE block", layer);
    /* the device side only where the MoE runs (the other processes' groups never need it) */
    const size_t cap = g->rows * d * sizeof(float);
    clnpu_status st = CLNPU_OK;
    if (!g->in) st = clnpu_buffer_create(g->dev, cap, &g->in);
    if (!st && !g->out) st = clnpu_buffer_create(g->dev, cap, &g->out);
    /* queued without waiting: the blocking read of the outputs below comes after it */
    if (!st) st = clnpu_buffer_write_async(g->in, 0, in, n);
    if (!st) st = clnpu_moe_block_forward(g->dev, moe, (clnpu_view){g->in, 0, d}, total, (clnpu_view){g->out, 0, d});
    if (!st) st = clnpu_buffer_read(g->out, 0, out, n);
    return st ? clnpu_fail_context(st, "MoE layer %zu of the stage's %zu rows", layer, total) : CLNPU_OK;
}

struct moe_call {
    clnpu_dp_group *g;
    size_t layer;
};

static clnpu_status run_moe(void *ctx)
{
    clnpu_dp_group *g = ((struct moe_call *)ctx)->g;
    return clnpu_dp_run_moe(g, ((struct moe_call *)ctx)->layer, g->host_in, g->total, g->host_out);
}

clnpu_status clnpu_dp_moe(clnpu_dp_group *g, size_t replica, struct clnpu_model *m, size_t layer, size_t rows)
{
    const size_t d = g->hidden;
    if (g->meet) { /* the other replicas are processes: this one's rows there and back */
        if (rows > g->rows)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "replica %zu: %zu rows, room for %zu", replica, rows, g->rows);
        clnpu_status st = clnpu_buffer_read(m->a, 0, g->host_in, rows * d * sizeof(float));
        if (!st) st = g->meet(g->meet_ctx, layer, g->host_in, rows, g->host_out);
        return st ? st : clnpu_buffer_write(m->mlp, 0, g->host_out, rows * d * sizeof(float));
    }
    if (rows != g->count[replica] || g->total > g->rows)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "replica %zu: %zu rows at the MoE, %zu announced (%zu in all, room "
                          "for %zu)", replica, rows, g->count[replica], g->total, g->rows);
    clnpu_status st = clnpu_buffer_read(m->a, 0, g->host_in + g->first[replica] * d, rows * d * sizeof(float));
    if (st) return st;
    struct moe_call call = {g, layer}; /* every replica meets at the same layer */
    char who[64];
    snprintf(who, sizeof who, "attention replica %zu", replica);
    st = clnpu_barrier_wait(&g->bar, g->active, run_moe, &call, who,
                            "the stage's MoE stopped: another attention replica failed");
    if (st) return st;
    /* queued without waiting: this replica's rows of host_out are next overwritten only after it
     * has arrived at the next MoE layer, behind a blocking read on the same queue */
    return clnpu_buffer_write_async(m->mlp, 0, g->host_out + g->first[replica] * d, rows * d * sizeof(float));
}
