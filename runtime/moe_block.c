/* One MoE block on a device: router, routing, dispatch, grouped expert GEMMs, combine. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "clnpu/moe.h"

typedef struct moe_shard {
    clnpu_device *dev;            /* NULL: served by another process through remote */
    const clnpu_moe_remote *remote;
    size_t *experts, count;       /* global ids served here, ascending */
    clnpu_weight *gate_up, *down; /* a group of `count` matrices */
    clnpu_buffer *x, *h, *y;      /* scratch for up to max_tokens x top_k rows */
} moe_shard;

struct clnpu_moe_block {
    moe_shard *shards;            /* expert parallel: NULL when every expert is on this device */
    size_t nshards;
    float *host_x, *host_y;
    clnpu_moe_config cfg;
    size_t tag;                   /* identifies the block to remote shards' peers */
    size_t hidden, inter, shared_inter, max_tokens, tokens;
    clnpu_weight *router, *gate_up, *down, *shared_gate_up, *shared_down;
    clnpu_buffer *bias;
    /* scratch, sized for max_tokens */
    clnpu_buffer *logits, *ids, *weights, *counts, *offsets, *src, *slot_row, *xp, *hp, *yp;
    clnpu_buffer *sh_h, *sh_y;
    int *host_counts;
    /* The shared expert as matrix E of the routed experts' group (one expert's shape). In steps of
     * few rows (T * top_k < E: decode at small batches) its T rows follow the T * top_k routed
     * ones, so one gather and two grouped GEMMs serve all experts: two launches fewer per layer.
     * Larger steps run it as its own GEMMs on matrix E (measured: at 8 sequences of axk1-mini the
     * grouped SwiGLU GEMM took 1.7x longer with it inside). shared_T: the rows counts[E] holds
     * now (0: none); iota[i] = i, the source rows and count written when that changes. */
    bool shared_grouped;
    size_t shared_T;
    int *iota;
};

void clnpu_moe_block_destroy(clnpu_moe_block *b)
{
    if (!b) return;
    clnpu_weight *ws[] = {b->router, b->gate_up, b->down, b->shared_gate_up, b->shared_down};
    for (size_t i = 0; i < 5; i++) clnpu_weight_destroy(ws[i]);
    clnpu_buffer *bs[] = {b->bias, b->logits, b->ids, b->weights, b->counts, b->offsets, b->src,
                          b->slot_row, b->xp, b->hp, b->yp, b->sh_h, b->sh_y};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) clnpu_buffer_destroy(bs[i]);
    free(b->host_counts), free(b->iota);
    for (size_t i = 0; i < b->nshards; i++) {
        moe_shard *sh = &b->shards[i];
        clnpu_weight_destroy(sh->gate_up), clnpu_weight_destroy(sh->down);
        clnpu_buffer_destroy(sh->x), clnpu_buffer_destroy(sh->h), clnpu_buffer_destroy(sh->y);
        free(sh->experts);
    }
    free(b->shards), free(b->host_x), free(b->host_y);
    free(b);
}

static clnpu_status create(clnpu_device *dev, const clnpu_moe_config *cfg, const clnpu_moe_weights *w,
                           size_t max_tokens, const clnpu_moe_shard *shards, size_t nshards, clnpu_moe_block **out);

clnpu_status clnpu_moe_block_create(clnpu_device *dev, const clnpu_moe_config *cfg,
                                    const clnpu_moe_weights *w, size_t max_tokens,
                                    clnpu_moe_block **out)
{
    return create(dev, cfg, w, max_tokens, NULL, 0, out);
}

clnpu_status clnpu_moe_block_create_sharded(clnpu_device *dev, const clnpu_moe_config *cfg,
                                            const clnpu_moe_weights *w, size_t max_tokens,
                                            const clnpu_moe_shard *shards, size_t nshards, clnpu_moe_block **out)
{
    if (!shards || !nshards) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block: no expert shards");
    if (nshards > CLNPU_MAX_EP)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block: %zu expert shards, at most %d", nshards, CLNPU_MAX_EP);
    const clnpu_moe_remote *rm = NULL;
    for (size_t i = 0; i < nshards; i++) {
        if (shards[i].remote && rm && shards[i].remote != rm)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block: remote shards need one clnpu_moe_remote");
        if (shards[i].remote) rm = shards[i].remote;
    }
    return create(dev, cfg, w, max_tokens, shards, nshards, out);
}

/* Upload one shard's experts: the first listed copy of each expert serves it. */
static clnpu_status make_shard(clnpu_moe_block *b, const clnpu_moe_weights *w, const clnpu_moe_shard *spec,
                               bool *taken, moe_shard *sh)
{
    const size_t E = b->cfg.experts, rows = b->max_tokens * b->cfg.top_k;
    sh->dev = spec->remote ? NULL : spec->device;
    sh->remote = spec->remote;
    if (!sh->remote && !sh->dev) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe shard: neither a device nor remote");
    sh->experts = malloc((spec->count ? spec->count : 1) * sizeof *sh->experts);
    clnpu_weight_desc *g = calloc(spec->count ? spec->count : 1, sizeof *g), *u = calloc(spec->count ? spec->count : 1, sizeof *u),
                      *d = calloc(spec->count ? spec->count : 1, sizeof *d);
    clnpu_status st = sh->experts && g && u && d ? CLNPU_OK : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t e = 0; !st && e < E; e++) { /* ascending global ids */
        bool here = false;
        for (size_t i = 0; i < spec->count && !here; i++) here = spec->experts[i] == e;
        if (!here || taken[e]) continue;
        taken[e] = true;
        g[sh->count] = w->gate[e], u[sh->count] = w->up[e], d[sh->count] = w->down[e];
        sh->experts[sh->count++] = e;
    }
    for (size_t i = 0; !st && i < spec->count; i++)
        if (spec->experts[i] >= E) st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe shard: expert %zu of %zu", spec->experts[i], E);
    if (sh->remote) { /* the peer holds the weights: only the expert list is kept here */
        free(g), free(u), free(d);
        return st;
    }
    if (!st && sh->count) st = clnpu_weight_upload_swiglu(sh->dev, g, u, sh->count, &sh->gate_up);
    if (!st && sh->count) st = clnpu_weight_upload(sh->dev, d, sh->count, &sh->down);
    if (!st && sh->count) st = clnpu_buffer_create(sh->dev, rows * b->hidden * 4, &sh->x);
    if (!st && sh->count) st = clnpu_buffer_create(sh->dev, rows * b->inter * 4, &sh->h);
    if (!st && sh->count) st = clnpu_buffer_create(sh->dev, rows * b->hidden * 4, &sh->y);
    free(g), free(u), free(d);
    return st;
}

/* A matrix the packed group of `like` can hold: one dtype, shape, quantisation group and scales. */
static bool same_layout(const clnpu_weight_desc *a, const clnpu_weight_desc *like)
{
    return a->dtype == like->dtype && a->n == like->n && a->k == like->k && a->group_k == like->group_k &&
           !a->scales == !like->scales;
}

/* The block has a shared expert (its own weights, or matrix E of the group). */
static bool w_shared(const clnpu_moe_block *b)
{
    return b->shared_gate_up || b->shared_grouped;
}

/* Upload the routed experts, with the shared expert as one more matrix when it fits the group. */
static clnpu_status upload_experts(clnpu_device *dev, clnpu_moe_block *b, const clnpu_moe_weights *w, size_t E)
{
    if (!b->shared_grouped) {
        clnpu_status st = clnpu_weight_upload_swiglu(dev, w->gate, w->up, E, &b->gate_up);
        return st ? st : clnpu_weight_upload(dev, w->down, E, &b->down);
    }
    clnpu_weight_desc *g = malloc(3 * (E + 1) * sizeof *g), *u = g + E + 1, *d = u + E + 1;
    if (!g) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    memcpy(g, w->gate, E * sizeof *g), memcpy(u, w->up, E * sizeof *u), memcpy(d, w->down, E * sizeof *d);
    g[E] = *w->shared_gate, u[E] = *w->shared_up, d[E] = *w->shared_down;
    clnpu_status st = clnpu_weight_upload_swiglu(dev, g, u, E + 1, &b->gate_up);
    if (!st) st = clnpu_weight_upload(dev, d, E + 1, &b->down);
    free(g);
    return st;
}

static clnpu_status create(clnpu_device *dev, const clnpu_moe_config *cfg, const clnpu_moe_weights *w,
                           size_t max_tokens, const clnpu_moe_shard *shards, size_t nshards, clnpu_moe_block **out)
{
    *out = NULL;
    if (!cfg || !w || !w->gate || !w->up || !w->down || !max_tokens)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block: missing config, weights or max_tokens");
    const size_t E = cfg->experts, H = w->router.k, I = w->gate[0].n;
    if (w->router.n != E)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block: router has %zu rows for %zu experts", w->router.n, E);
    if (w->gate[0].k != H || w->down[0].n != H || w->down[0].k != I)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block: expert shapes [%zu, %zu] / [%zu, %zu] do not "
                          "fit hidden %zu", w->gate[0].n, w->gate[0].k, w->down[0].n, w->down[0].k, H);
    clnpu_moe_block *b = calloc(1, sizeof *b);
    if (!b) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    b->cfg = *cfg;
    b->hidden = H, b->inter = I, b->max_tokens = max_tokens;
    /* (expert parallel keeps the shared expert apart, on this device) */
    b->shared_grouped = !nshards && w->shared_gate && same_layout(w->shared_gate, &w->gate[0]) &&
                        same_layout(w->shared_up, &w->up[0]) && same_layout(w->shared_down, &w->down[0]);
    /* the shared segment's rows: at most (E - 1) / top_k (the steps that take it into the group) */
    const size_t K = cfg->top_k, rows = max_tokens * K,
                 srows = b->shared_grouped ? (max_tokens < (E - 1) / K ? max_tokens : (E - 1) / K) : 0, grows = rows + srows;
    clnpu_status st = CLNPU_OK;
    b->max_tokens = max_tokens; /* make_shard sizes its scratch from it */
    /* The router runs in fp32 as in HF (near-ties must not flip with the weight dtype). */
    float *r32 = malloc(E * H * sizeof *r32);
    if (!r32) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st) st = clnpu_weight_desc_to_f32(&w->router, r32);
    if (!st) {
        clnpu_weight_desc rd = {CLNPU_DTYPE_F32, E, H, r32, NULL, 0};
        st = clnpu_weight_upload(dev, &rd, 1, &b->router);
    }
    free(r32);
    if (!st && !nshards) st = upload_experts(dev, b, w, E);
    if (!st && nshards) {
        bool *taken = calloc(E, sizeof *taken);
        b->shards = calloc(nshards, sizeof *b->shards);
        b->host_x = malloc(max_tokens * K * H * sizeof(float));
        b->host_y = malloc(max_tokens * K * H * sizeof(float));
        if (!taken || !b->shards || !b->host_x || !b->host_y) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        for (size_t i = 0; !st && i < nshards; i++, b->nshards++) st = make_shard(b, w, &shards[i], taken, &b->shards[i]);
        for (size_t e = 0; !st && e < E; e++)
            if (!taken[e]) st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block: expert %zu is on no device", e);
        free(taken);
    }
    if (!st && w->shared_gate) b->shared_inter = w->shared_gate->n;
    if (!st && w->shared_gate && !b->shared_grouped) { /* (grouped: matrix E of gate_up and down) */
        st = clnpu_weight_upload_swiglu(dev, w->shared_gate, w->shared_up, 1, &b->shared_gate_up);
        if (!st) st = clnpu_weight_upload(dev, w->shared_down, 1, &b->shared_down);
    }
    if (!st && w->bias) {
        st = clnpu_buffer_create(dev, E * sizeof(float), &b->bias);
        if (!st) st = clnpu_buffer_write(b->bias, 0, w->bias, E * sizeof(float));
    }
    struct { clnpu_buffer **p; size_t bytes; } scratch[] = {
        {&b->logits, max_tokens * E * 4}, {&b->ids, rows * 4}, {&b->weights, rows * 4},
        {&b->counts, (E + 1) * 4}, {&b->offsets, (E + 2) * 4}, {&b->src, grows * 4}, {&b->slot_row, rows * 4},
        {&b->xp, grows * H * 4}, {&b->hp, grows * I * 4}, {&b->yp, grows * H * 4},
    };
    for (size_t i = 0; !st && i < sizeof scratch / sizeof scratch[0]; i++)
        st = clnpu_buffer_create(dev, scratch[i].bytes, scratch[i].p);
    if (!st && w->shared_gate) {
        st = clnpu_buffer_create(dev, max_tokens * b->shared_inter * 4, &b->sh_h);
        if (!st) st = clnpu_buffer_create(dev, max_tokens * H * 4, &b->sh_y);
    }
    if (!st && !(b->host_counts = malloc(E * sizeof(int))))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st && b->shared_grouped && !(b->iota = malloc((max_tokens + 1) * sizeof(int))))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t i = 0; !st && b->iota && i <= max_tokens; i++) b->iota[i] = (int)i;
    if (!st && b->shared_grouped) st = clnpu_buffer_write(b->counts, E * sizeof(int), b->iota, sizeof(int)); /* none yet */
    if (st) {
        clnpu_moe_block_destroy(b);
        return clnpu_fail_context(st, "creating a MoE block (%zu experts, hidden %zu, width %zu)", E, H, I);
    }
    *out = b;
    return CLNPU_OK;
}

/* One local shard's experts on r rows already grouped by its segments: start queues the work
 * (the device computes while the host moves on), finish reads the outputs (out may be in). */
static clnpu_status start_shard(clnpu_moe_block *b, moe_shard *sh, const float *in, size_t r,
                                const clnpu_gemm_segment *local, size_t n)
{
    clnpu_status st = clnpu_buffer_write(sh->x, 0, in, r * b->hidden * sizeof(float));
    clnpu_gemm_args g = clnpu_gemm_args_default();
    g.x = sh->x, g.y = sh->h, g.m = r, g.epilogue = CLNPU_EPILOGUE_SWIGLU;
    if (!st) st = clnpu_gemm_grouped(sh->dev, sh->gate_up, local, n, &g);
    g = clnpu_gemm_args_default();
    g.x = sh->h, g.y = sh->y, g.m = r;
    if (!st) st = clnpu_gemm_grouped(sh->dev, sh->down, local, n, &g);
    return st;
}

static clnpu_status finish_shard(clnpu_moe_block *b, moe_shard *sh, size_t r, float *out)
{
    return clnpu_buffer_read(sh->y, 0, out, r * b->hidden * sizeof(float));
}

/* Expert parallel: the permuted rows (grouped by expert on the main device) are packed shard by
 * shard in host memory; remote shards get theirs first, local devices compute while they work,
 * then every output goes back to its rows' place. */
static clnpu_status dispatch_shards(clnpu_moe_block *b, const clnpu_gemm_segment *segs, size_t nseg, size_t rows)
{
    const size_t H = b->hidden, S = b->nshards;
    clnpu_status st = clnpu_buffer_read(b->xp, 0, b->host_x, rows * H * sizeof(float));
    /* local[i]: segment i as its shard sees it; home[i]: where its rows sit in expert order */
    clnpu_gemm_segment *local = malloc((nseg ? nseg : 1) * sizeof *local);
    size_t *home = malloc((nseg ? nseg : 1) * sizeof *home);
    size_t *at = malloc(4 * S * sizeof *at), *nr = at + S, *first = at + 2 * S, *ns = at + 3 * S;
    if (!local || !home || !at) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    size_t r = 0, n = 0;
    for (size_t s = 0; !st && s < S; s++) { /* each shard's segments, packed contiguously */
        const moe_shard *sh = &b->shards[s];
        at[s] = r, first[s] = n;
        for (size_t i = 0; i < nseg; i++)
            for (size_t j = 0; j < sh->count; j++)
                if (sh->experts[j] == segs[i].matrix) {
                    memcpy(b->host_y + r * H, b->host_x + segs[i].row * H, segs[i].rows * H * sizeof(float));
                    home[n] = segs[i].row;
                    local[n++] = (clnpu_gemm_segment){j, r - at[s], segs[i].rows};
                    r += segs[i].rows;
                }
        nr[s] = r - at[s], ns[s] = n - first[s];
    }
    /* every shard busy at once: local devices queued, then one exchange with every remote shard
     * (dispatch and combine) while they compute, then the local outputs collected */
    for (size_t s = 0; !st && s < S; s++)
        if (!b->shards[s].remote && nr[s])
            st = start_shard(b, &b->shards[s], b->host_y + at[s] * H, nr[s], local + first[s], ns[s]);
    clnpu_moe_remote_part parts[CLNPU_MAX_EP];
    const clnpu_moe_remote *remote = NULL;
    size_t np = 0;
    for (size_t s = 0; !st && s < S; s++)
        if (b->shards[s].remote) {
            remote = b->shards[s].remote;
            parts[np++] = (clnpu_moe_remote_part){s, b->host_y + at[s] * H, nr[s], local + first[s], ns[s],
                                                  b->host_y + at[s] * H};
        }
    if (!st && np) st = remote->exchange(remote->ctx, b->tag, parts, np);
    for (size_t s = 0; !st && s < S; s++)
        if (!b->shards[s].remote && nr[s]) st = finish_shard(b, &b->shards[s], nr[s], b->host_y + at[s] * H);
    /* back to the rows' places in expert order (host_x holds the outputs from here on) */
    for (size_t s = 0; !st && s < S; s++)
        for (size_t i = first[s]; i < first[s] + ns[s]; i++)
            memcpy(b->host_x + home[i] * H, b->host_y + (at[s] + local[i].row) * H, local[i].rows * H * sizeof(float));
    free(local), free(home), free(at);
    if (!st) st = clnpu_buffer_write(b->yp, 0, b->host_x, rows * H * sizeof(float));
    return st;
}

/* Expert parallel: the counts come back to the host, which cuts the permuted rows into
 * segments and hands them to the shards (one sync per layer). */
static clnpu_status dispatch_routed(clnpu_moe_block *b, size_t T)
{
    const size_t E = b->cfg.experts, K = b->cfg.top_k;
    clnpu_status st = clnpu_buffer_read(b->counts, 0, b->host_counts, E * sizeof(int));
    clnpu_gemm_segment *segs = NULL;
    if (!st && !(segs = malloc(E * sizeof *segs))) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    size_t row = 0, nseg = 0;
    for (size_t e = 0; !st && e < E; e++) {
        if (b->host_counts[e] < 0 || row + (size_t)b->host_counts[e] > T * K) {
            st = clnpu_fail(CLNPU_ERR_OPENCL, "moe block: device returned inconsistent expert counts");
            break;
        }
        if (b->host_counts[e]) segs[nseg++] = (clnpu_gemm_segment){e, row, (size_t)b->host_counts[e]};
        row += (size_t)b->host_counts[e];
    }
    if (!st) st = dispatch_shards(b, segs, nseg, T * K);
    free(segs);
    return st;
}

void clnpu_moe_block_set_tag(clnpu_moe_block *b, size_t tag) { b->tag = tag; }

clnpu_status clnpu_moe_block_serve(clnpu_moe_block *b, size_t shard, const float *rows, size_t nrows,
                                   const clnpu_gemm_segment *segs, size_t nseg, float *out)
{
    if (shard >= b->nshards || b->shards[shard].remote)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block %zu: shard %zu is not served here", b->tag, shard);
    moe_shard *sh = &b->shards[shard];
    if (nrows > b->max_tokens * b->cfg.top_k)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block %zu: %zu rows for shard %zu, at most %zu", b->tag, nrows,
                          shard, b->max_tokens * b->cfg.top_k);
    size_t covered = 0;
    for (size_t i = 0; i < nseg; i++) {
        if (segs[i].matrix >= sh->count || segs[i].row != covered)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block %zu: malformed segment %zu for shard %zu", b->tag, i, shard);
        covered += segs[i].rows;
    }
    if (covered != nrows)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block %zu: segments cover %zu of %zu rows", b->tag, covered, nrows);
    clnpu_status st = nrows ? start_shard(b, sh, rows, nrows, segs, nseg) : CLNPU_OK;
    return !st && nrows ? finish_shard(b, sh, nrows, out) : st;
}

clnpu_status clnpu_moe_block_forward(clnpu_device *dev, clnpu_moe_block *b, clnpu_view x, size_t T,
                                     clnpu_view out)
{
    if (T > b->max_tokens)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "moe block: %zu tokens, created for %zu", T, b->max_tokens);
    if (x.offset) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "moe block: x with an offset");
    b->tokens = T;
    if (!T) return CLNPU_OK;
    const size_t E = b->cfg.experts, K = b->cfg.top_k, H = b->hidden;
    clnpu_gemm_args g = clnpu_gemm_args_default();
    g.x = x.buf, g.x_offset = x.offset, g.ldx = x.ld, g.y = b->logits, g.m = T;
    clnpu_status st = clnpu_gemm(dev, b->router, 0, &g);
    if (!st) st = clnpu_moe_route(dev, (clnpu_view){b->logits, 0, E}, b->bias, T, &b->cfg, b->ids, b->weights);
    if (!st) st = clnpu_moe_plan(dev, b->ids, T, K, E, b->counts, b->offsets, b->src, b->slot_row);
    /* In the group (few rows), the shared expert is matrix E over rows [T * K, T * K + T) =
     * tokens 0 .. T - 1: the plan writes offsets[E] = T * K and leaves counts[E] and those source
     * rows alone. Otherwise counts[E] = 0 and it runs apart. */
    const size_t S = b->shared_grouped && T * K < E ? T : 0, M = T * K + S;
    if (!st && b->shared_grouped && b->shared_T != S) {
        if (S) st = clnpu_buffer_write_async(b->src, T * K * sizeof(int), b->iota, S * sizeof(int));
        if (!st) st = clnpu_buffer_write_async(b->counts, E * sizeof(int), b->iota + S, sizeof(int));
        b->shared_T = st ? b->shared_T : S;
    }
    /* Apart, the shared expert does not depend on routing: queued first. */
    if (!st && w_shared(b) && !S) {
        const clnpu_weight *gu = b->shared_grouped ? b->gate_up : b->shared_gate_up,
                           *dn = b->shared_grouped ? b->down : b->shared_down;
        const size_t mat = b->shared_grouped ? E : 0;
        g = clnpu_gemm_args_default();
        g.x = x.buf, g.x_offset = x.offset, g.ldx = x.ld, g.y = b->sh_h, g.m = T;
        g.epilogue = CLNPU_EPILOGUE_SWIGLU;
        st = clnpu_gemm(dev, gu, mat, &g);
        if (!st) {
            g = clnpu_gemm_args_default();
            g.x = b->sh_h, g.y = b->sh_y, g.m = T;
            st = clnpu_gemm(dev, dn, mat, &g);
        }
    }
    if (!st) st = clnpu_moe_gather(dev, b->xp, x, b->src, M, H);
    if (!st && !b->nshards) {
        /* All experts here: the grouped GEMMs read the plan's counts on the device, so the
         * whole layer is queued without waiting (an expert takes at most T rows). The tile
         * height is the routed experts' (gemm.c: twice their mean rows, at most T): the shared
         * segment's T rows in the mean would double it at 8 sequences, and every routed tile
         * computes all its rows; the shared segment takes more tiles instead. */
        const size_t tile = S && 2 * ((T * K + E - 1) / E) < T ? 2 * ((T * K + E - 1) / E) : T;
        g = clnpu_gemm_args_default();
        g.x = b->xp, g.y = b->hp, g.m = M, g.epilogue = CLNPU_EPILOGUE_SWIGLU;
        st = clnpu_gemm_grouped_counts(dev, b->gate_up, b->counts, b->offsets, tile, &g);
        g = clnpu_gemm_args_default();
        g.x = b->hp, g.y = b->yp, g.m = M;
        if (!st) st = clnpu_gemm_grouped_counts(dev, b->down, b->counts, b->offsets, tile, &g);
    } else if (!st) {
        st = dispatch_routed(b, T);
    }
    const clnpu_view shared = S ? (clnpu_view){b->yp, T * K * H, H} : (clnpu_view){b->sh_y, 0, H};
    if (!st) st = clnpu_moe_combine(dev, out, shared, b->yp, b->slot_row, b->weights, T, K, H);
    return st;
}

clnpu_status clnpu_moe_block_last_routing(clnpu_moe_block *b, int *ids, float *w)
{
    const size_t n = b->tokens * b->cfg.top_k * 4;
    if (!n) return CLNPU_OK;
    clnpu_status st = ids ? clnpu_buffer_read(b->ids, 0, ids, n) : CLNPU_OK;
    if (!st && w) st = clnpu_buffer_read(b->weights, 0, w, n);
    return st;
}

size_t clnpu_moe_block_device_bytes(const clnpu_moe_block *b)
{
    size_t s = clnpu_weight_device_bytes(b->router);
    if (b->gate_up) s += clnpu_weight_device_bytes(b->gate_up) + clnpu_weight_device_bytes(b->down);
    for (size_t i = 0; i < b->nshards; i++)
        if (b->shards[i].gate_up) s += clnpu_weight_device_bytes(b->shards[i].gate_up) + clnpu_weight_device_bytes(b->shards[i].down);
    if (b->shared_gate_up) s += clnpu_weight_device_bytes(b->shared_gate_up) + clnpu_weight_device_bytes(b->shared_down);
    /* (a shared expert in the group is in gate_up and down) */
    return s;
}
