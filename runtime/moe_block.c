/* One MoE block on a device: router, routing, dispatch, grouped expert GEMMs, combine. */
#include <stdlib.h>
#include <string.h>

#include "../backend/error.h"
#include "clnpu/moe.h"

struct clnpu_moe_block {
    clnpu_moe_config cfg;
    size_t hidden, inter, shared_inter, max_tokens, tokens;
    clnpu_weight *router, *gate_up, *down, *shared_gate_up, *shared_down;
    clnpu_buffer *bias;
    /* scratch, sized for max_tokens */
    clnpu_buffer *logits, *ids, *weights, *counts, *offsets, *src, *slot_row, *xp, *hp, *yp;
    clnpu_buffer *sh_h, *sh_y;
    int *host_counts;
};

void clnpu_moe_block_destroy(clnpu_moe_block *b)
{
    if (!b) return;
    clnpu_weight *ws[] = {b->router, b->gate_up, b->down, b->shared_gate_up, b->shared_down};
    for (size_t i = 0; i < 5; i++) clnpu_weight_destroy(ws[i]);
    clnpu_buffer *bs[] = {b->bias, b->logits, b->ids, b->weights, b->counts, b->offsets, b->src,
                          b->slot_row, b->xp, b->hp, b->yp, b->sh_h, b->sh_y};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) clnpu_buffer_destroy(bs[i]);
    free(b->host_counts);
    free(b);
}

clnpu_status clnpu_moe_block_create(clnpu_device *dev, const clnpu_moe_config *cfg,
                                    const clnpu_moe_weights *w, size_t max_tokens,
                                    clnpu_moe_block **out)
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
    const size_t K = cfg->top_k, rows = max_tokens * K;
    clnpu_status st = CLNPU_OK;
    /* The router runs in fp32 as in HF (near-ties must not flip with the weight dtype). */
    float *r32 = malloc(E * H * sizeof *r32);
    if (!r32) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st) st = clnpu_weight_desc_to_f32(&w->router, r32);
    if (!st) {
        clnpu_weight_desc rd = {CLNPU_DTYPE_F32, E, H, r32, NULL, 0};
        st = clnpu_weight_upload(dev, &rd, 1, &b->router);
    }
    free(r32);
    if (!st) st = clnpu_weight_upload_swiglu(dev, w->gate, w->up, E, &b->gate_up);
    if (!st) st = clnpu_weight_upload(dev, w->down, E, &b->down);
    if (!st && w->shared_gate) {
        b->shared_inter = w->shared_gate->n;
        st = clnpu_weight_upload_swiglu(dev, w->shared_gate, w->shared_up, 1, &b->shared_gate_up);
        if (!st) st = clnpu_weight_upload(dev, w->shared_down, 1, &b->shared_down);
    }
    if (!st && w->bias) {
        st = clnpu_buffer_create(dev, E * sizeof(float), &b->bias);
        if (!st) st = clnpu_buffer_write(b->bias, 0, w->bias, E * sizeof(float));
    }
    struct { clnpu_buffer **p; size_t bytes; } scratch[] = {
        {&b->logits, max_tokens * E * 4}, {&b->ids, rows * 4}, {&b->weights, rows * 4},
        {&b->counts, E * 4}, {&b->offsets, (E + 1) * 4}, {&b->src, rows * 4}, {&b->slot_row, rows * 4},
        {&b->xp, rows * H * 4}, {&b->hp, rows * I * 4}, {&b->yp, rows * H * 4},
    };
    for (size_t i = 0; !st && i < sizeof scratch / sizeof scratch[0]; i++)
        st = clnpu_buffer_create(dev, scratch[i].bytes, scratch[i].p);
    if (!st && b->shared_gate_up) {
        st = clnpu_buffer_create(dev, max_tokens * b->shared_inter * 4, &b->sh_h);
        if (!st) st = clnpu_buffer_create(dev, max_tokens * H * 4, &b->sh_y);
    }
    if (!st && !(b->host_counts = malloc(E * sizeof(int))))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (st) {
        clnpu_moe_block_destroy(b);
        return clnpu_fail_context(st, "creating a MoE block (%zu experts, hidden %zu, width %zu)", E, H, I);
    }
    *out = b;
    return CLNPU_OK;
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
    /* The shared expert does not depend on routing: queue it before the one sync. */
    if (!st && b->shared_gate_up) {
        g = clnpu_gemm_args_default();
        g.x = x.buf, g.x_offset = x.offset, g.ldx = x.ld, g.y = b->sh_h, g.m = T;
        g.epilogue = CLNPU_EPILOGUE_SWIGLU;
        st = clnpu_gemm(dev, b->shared_gate_up, 0, &g);
        if (!st) {
            g = clnpu_gemm_args_default();
            g.x = b->sh_h, g.y = b->sh_y, g.m = T;
            st = clnpu_gemm(dev, b->shared_down, 0, &g);
        }
    }
    if (!st) st = clnpu_moe_gather(dev, b->xp, x, b->src, T * K, H);
    /* Counts come back to the host to cut the grouped GEMM into tiles (one sync per layer). */
    if (!st) st = clnpu_buffer_read(b->counts, 0, b->host_counts, E * sizeof(int));
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
    if (!st) {
        g = clnpu_gemm_args_default();
        g.x = b->xp, g.y = b->hp, g.m = T * K, g.epilogue = CLNPU_EPILOGUE_SWIGLU;
        st = clnpu_gemm_grouped(dev, b->gate_up, segs, nseg, &g);
    }
    if (!st) {
        g = clnpu_gemm_args_default();
        g.x = b->hp, g.y = b->yp, g.m = T * K;
        st = clnpu_gemm_grouped(dev, b->down, segs, nseg, &g);
    }
    free(segs);
    if (!st)
        st = clnpu_moe_combine(dev, out, (clnpu_view){b->sh_y, 0, H}, b->yp, b->slot_row, b->weights, T, K, H);
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
    size_t s = clnpu_weight_device_bytes(b->router) + clnpu_weight_device_bytes(b->gate_up) +
               clnpu_weight_device_bytes(b->down);
    if (b->shared_gate_up) s += clnpu_weight_device_bytes(b->shared_gate_up) + clnpu_weight_device_bytes(b->shared_down);
    return s;
}
