/* The planner: analytic roofline + alpha-beta cost model (scheduler notes 7.1-7.2), a search over
 * devices per stage (= expert parallel width), tensor parallel inside a node, pipeline stages by
 * the exact DP, data-parallel replicas of the pipeline, and the batch (7.5). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/error.h"
#include "plan_internal.h"

clnpu_workload clnpu_workload_default(void)
{
    clnpu_workload w = {CLNPU_PHASE_DECODE, 0, 4096, CLNPU_DTYPE_BF16, 0, NULL, 0, 0, 0, CLNPU_DTYPE_F32};
    return w;
}

clnpu_calibration clnpu_calibration_default(void)
{
    /* Typical achieved fractions of peak for GEMM-class kernels, streams and collectives. */
    clnpu_calibration c = {0.6, 0.8, 0.7};
    return c;
}

typedef struct cand {
    const clnpu_graph *gr;
    const clnpu_cluster *cl;
    const clnpu_workload *w;
    const clnpu_calibration *cal;
    size_t g, t, r;        /* devices per stage, TP, attention replicas (g / t) */
    double batch;          /* sequences in this pipeline replica */
    double tokens;         /* tokens per step (decode: batch; prefill: batch x context) */
    double wb;             /* bytes per weight */
    double imbalance;      /* max / mean expert load per device */
    size_t slots;          /* expert copies per device */
    size_t per_node;
    /* per group (index = first device / g): time and memory of each unit */
    size_t ngroups;
    double *unit_time;     /* [ngroups][units] */
    double *unit_mem;      /* [ngroups][units] weights + kv per device */
    double *fixed_mem;     /* [ngroups] activations + comm + reserve per device */
    double *cap;           /* [ngroups] capacity */
} cand;

static double peak_of(const clnpu_profile *p, clnpu_dtype w)
{
    /* Weights are widened or dequantised into the activation dtype: bf16 math where the device
     * has it, fp8 math only where it is native. */
    double bf = p->peak[CLNPU_PEAK_BF16] > 0 ? p->peak[CLNPU_PEAK_BF16] : p->peak[CLNPU_PEAK_FP16];
    if (bf <= 0) bf = p->peak[CLNPU_PEAK_FP32];
    if (w == CLNPU_DTYPE_FP8_E4M3 && p->peak[CLNPU_PEAK_FP8] > 0) return p->peak[CLNPU_PEAK_FP8];
    if (w == CLNPU_DTYPE_I8 && p->peak[CLNPU_PEAK_INT8] > 0 && p->peak[CLNPU_PEAK_INT8] < 2 * bf) return bf;
    return bf > 0 ? bf : 1e12;
}

static double roof(const cand *c, const clnpu_profile *p, double flops, double bytes)
{
    return fmax(flops / (peak_of(p, c->w->weights) * c->cal->compute_eff),
                bytes / (p->memory_bandwidth * c->cal->memory_eff));
}

/* alpha-beta: all-reduce (ring) and all-to-all among n devices on a link. */
static double allreduce(const cand *c, const clnpu_link *l, double n, double bytes)
{
    if (n <= 1) return 0;
    return 2 * (n - 1) * l->latency_s + 2 * (n - 1) / n * bytes / (l->bandwidth * c->cal->link_eff);
}

static double alltoall(const cand *c, const clnpu_link *l, double n, double bytes)
{
    if (n <= 1) return 0;
    return (n - 1) * l->latency_s + bytes * (n - 1) / n / (l->bandwidth * c->cal->link_eff);
}

static const clnpu_link *link_for(const cand *c, size_t width)
{
    return width <= c->per_node ? &c->cl->intra : &c->cl->inter;
}

/* Tokens on the busiest attention replica: replicas take whole sequences, so with fewer
 * sequences than replicas some idle and one still carries a full sequence. */
static double tokens_per_replica(const cand *c)
{
    const double per_seq = c->w->phase == CLNPU_PHASE_PREFILL ? (double)c->w->context : 1.0;
    return ceil(c->tokens / per_seq / c->r - 1e-9) * per_seq;
}

/* Devices of a node that share one memory system split its bandwidth among those streaming at
 * the same time (`busy` of them), e.g. PoCL devices carved from one CPU socket. */
static clnpu_profile sharing(const clnpu_cluster_device *dv, double busy)
{
    clnpu_profile p = dv->profile;
    if (dv->shared_bandwidth > 0 && busy >= 1) p.memory_bandwidth = fmin(p.memory_bandwidth, dv->shared_bandwidth / busy);
    return p;
}

/* Time of one unit on one device of a stage group (device dv) for the whole step. */
static double unit_time(const cand *c, const clnpu_cluster_device *dv, const clnpu_graph_unit *u)
{
    const double d = (double)c->gr->hidden, tr = tokens_per_replica(c), ctx = (double)c->w->context;
    const double t = (double)c->t, g = (double)c->g, act = 2.0; /* bf16 activations on the wire */
    const bool prefill = c->w->phase == CLNPU_PHASE_PREFILL;
    /* On a shared memory system: attention replicas busy at once (fewer sequences than replicas
     * leave some idle) times their TP ranks, and the devices that receive expert rows. */
    const double seqs = c->tokens / (prefill ? ctx : 1.0);
    const double busy_attn = fmin(g, t * fmin((double)c->r, ceil(seqs - 1e-9)));
    const double busy_exp = prefill ? g : g * (1 - pow(1 - 1 / g, c->tokens * (double)c->gr->top_k));
    const clnpu_profile pa = sharing(dv, busy_attn), pe = sharing(dv, busy_exp);
    const clnpu_profile *p = &pa;
    double time = 0;
    /* the embedding and the LM head split by vocabulary rows over the TP ranks: each rank's rows
     * (zeros for the others' ids) summed by an all-reduce; the head's columns gathered on the
     * first rank (about half an all-reduce's traffic), where clnpu samples */
    if (u->kind == CLNPU_UNIT_EMBED)
        return roof(c, p, 0, tr * d * 2) + allreduce(c, link_for(c, c->t), t, tr * d * act) + c->cl->launch_overhead_s;
    if (u->kind == CLNPU_UNIT_HEAD) {
        /* LM head on the last position of each sequence (prefill) or every token (decode) */
        double rows = prefill ? c->batch / c->r : tr;
        return roof(c, p, 2 * u->dense_params * rows / t, u->dense_params * c->wb / t) +
               allreduce(c, link_for(c, c->t), t, rows * (u->dense_params / d) * 4) / 2 + 2 * c->cl->launch_overhead_s;
    }
    /* attention projections (q_b, kv_b, o over the t TP ranks; q_a and kv_a whole on each) and
     * the core: absorbed decode reads the latent of the replica's sequences on every TP rank;
     * prefill is quadratic (half the keys on average). */
    double core_flops = u->attn_flops_per_ctx * (prefill ? ctx / 2 : ctx) * tr / t;
    double core_bytes = prefill ? 0 : u->kv_bytes_per_token * ctx * (c->batch / c->r);
    const double attn_rank = (u->attn_params - u->attn_whole_params) / t + u->attn_whole_params;
    double comp = roof(c, p, 2 * attn_rank * tr + core_flops, attn_rank * c->wb + core_bytes);
    double comm = 2 * allreduce(c, link_for(c, c->t), t, tr * d * act); /* after o_proj and after the MLP */
    if (u->kind == CLNPU_UNIT_DENSE) {
        comp += roof(c, p, 2 * u->dense_params * tr / t, u->dense_params * c->wb / t);
    } else {
        /* routed experts over the g devices of the stage: tokens x top_k spread by placement */
        const double k = (double)c->gr->top_k, s = (double)c->slots;
        const double per_dev = c->tokens * k / g * c->imbalance;
        const double distinct = s * (1 - pow(1 - 1 / s, per_dev)); /* experts that see a token */
        /* router and shared expert: with one attention replica, the replica's tokens with the
         * shared expert split over its TP ranks; with several, clnpu runs them once for every
         * replica's tokens on the first device while the replicas wait at the layer */
        const double sh_rows = c->r > 1 ? c->tokens : tr / t, sh_split = c->r > 1 ? 1 : t;
        const double sh_flops = 2 * (u->shared_params + u->router_params) * sh_rows;
        const double sh_bytes = (u->shared_params / sh_split + u->router_params) * c->wb;
        if (dv->shared_bandwidth > 0) /* routed and shared experts see different bandwidths */
            comp += roof(c, &pe, 2 * u->expert_params * per_dev, distinct * u->expert_params * c->wb) +
                    roof(c, p, sh_flops, sh_bytes);
        else
            comp += roof(c, p, 2 * u->expert_params * per_dev + sh_flops, distinct * u->expert_params * c->wb + sh_bytes);
        /* dispatch (in the weight dtype when it is 8-bit, as DeepEP does) + combine (bf16), to
         * each token's distinct destination devices */
        double fan = fmin(k, g * (1 - pow(1 - 1 / g, k)));
        /* group-aware placement: a token's experts lie in at most topk_group groups' devices */
        if (c->gr->n_group > 1 && c->gr->topk_group)
            fan = fmin(fan, (double)c->gr->topk_group * ceil(g / (double)c->gr->n_group));
        const double disp = c->wb < 2 ? 1.0 : act;
        comm += alltoall(c, link_for(c, c->g), g, c->tokens / g * fan * d * disp) +
                alltoall(c, link_for(c, c->g), g, c->tokens / g * fan * d * act);
    }
    /* Communication overlaps compute (two interleaved micro-batches / asynchronous all-to-all):
     * the cluster says how much of the shorter side is hidden (0.9 by default, scheduler notes
     * 7.1; 0 where the executor exchanges synchronously). */
    time = fmax(comp, comm) + (1 - c->cl->comm_overlap) * fmin(comp, comm);
    /* kernels per decoder layer, and for expert-parallel MoE layers the host round trip that
     * reads the expert counts to cut the rows for the shards (one device: counts stay on it) */
    return time + 24 * c->cl->launch_overhead_s + (u->kind == CLNPU_UNIT_MOE && c->g > 1 ? 2 * c->cl->launch_overhead_s : 0);
}

/* Weights + KV of one unit per device. */
static double unit_mem(const cand *c, const clnpu_graph_unit *u)
{
    const double t = (double)c->t;
    /* with several attention replicas the first device holds the shared expert whole */
    double m = ((u->attn_params - u->attn_whole_params + u->dense_params) / t + u->attn_whole_params +
                u->shared_params / (c->r > 1 ? 1 : t)) * c->wb + (u->router_params + u->norm_params) * 4;
    if (u->kind == CLNPU_UNIT_MOE) m += (double)c->slots * u->expert_params * c->wb;
    m += u->kv_bytes_per_token * (double)c->w->context * (c->batch / c->r);
    return m + plan_exec_unit_bytes(c->gr, c->w, u, c->g, c->t, c->r, c->batch); /* the executor's scratch */
}

/* Stage costs from prefix sums over the units (O(1) per DP step). */
static double stage_cost(size_t i, size_t j, size_t k, void *ctx)
{
    const cand *c = ctx;
    const double *t = c->unit_time + k * (c->gr->count + 1);
    double s = t[j] - t[i];
    /* receiving the stage input: hidden + residual per token */
    if (i > 0) {
        const clnpu_link *l = link_for(c, 2 * c->g); /* stage boundaries may cross nodes */
        s += l->latency_s + c->tokens * 2 * c->gr->hidden * 2.0 / (l->bandwidth * c->cal->link_eff);
    }
    return s;
}

static double stage_mem(size_t i, size_t j, size_t k, void *ctx)
{
    const cand *c = ctx;
    const double *m = c->unit_mem + k * (c->gr->count + 1);
    return c->fixed_mem[k] + m[j] - m[i];
}

static void cand_free(cand *c)
{
    free(c->unit_time), free(c->unit_mem), free(c->fixed_mem), free(c->cap);
    c->unit_time = c->unit_mem = c->fixed_mem = c->cap = NULL;
}

/* Fill the per-group tables for a candidate; false if groups mix device kinds. */
static bool cand_prepare(cand *c)
{
    const size_t N = c->cl->count, U = c->gr->count;
    c->ngroups = N / c->g;
    if (!c->ngroups) return false;
    if (c->ngroups > U) c->ngroups = U; /* never more stages than units */
    c->unit_time = malloc(c->ngroups * (U + 1) * sizeof(double));
    c->unit_mem = malloc(c->ngroups * (U + 1) * sizeof(double));
    c->fixed_mem = malloc(c->ngroups * sizeof(double));
    c->cap = malloc(c->ngroups * sizeof(double));
    if (!c->unit_time || !c->unit_mem || !c->fixed_mem || !c->cap) return false;
    const double d = (double)c->gr->hidden;
    for (size_t k = 0; k < c->ngroups; k++) {
        const clnpu_cluster_device *dv = &c->cl->devices[k * c->g];
        const clnpu_profile *p = &dv->profile;
        for (size_t x = 1; x < c->g; x++)
            if (strcmp(c->cl->devices[k * c->g + x].profile.name, p->name)) return false;
        double *t = c->unit_time + k * (U + 1), *m = c->unit_mem + k * (U + 1);
        /* groups of the same kind share their tables: copy the previous group's */
        const clnpu_cluster_device *pv = k > 0 ? &c->cl->devices[(k - 1) * c->g] : NULL;
        if (pv && !strcmp(pv->profile.name, p->name) && pv->profile.memory_bytes == p->memory_bytes &&
            pv->profile.memory_bandwidth == p->memory_bandwidth && pv->shared_bandwidth == dv->shared_bandwidth &&
            !memcmp(pv->profile.peak, p->peak, sizeof p->peak)) {
            memcpy(t, t - (U + 1), (U + 1) * sizeof *t);
            memcpy(m, m - (U + 1), (U + 1) * sizeof *m);
        } else {
            t[0] = m[0] = 0;
            for (size_t u = 0; u < U; u++) { /* prefix sums */
                t[u + 1] = t[u] + unit_time(c, dv, &c->gr->units[u]);
                m[u + 1] = m[u] + unit_mem(c, &c->gr->units[u]);
            }
        }
        double cap = (double)p->memory_bytes;
        /* the executor's workspaces (scheduler/memory.c) and the expert all-to-all buffers */
        double actv = plan_exec_fixed_bytes(c->gr, c->w, c->t, c->r, c->batch);
        double comm = c->g > 1 ? 2 * c->tokens / c->g * c->gr->top_k * d * 2 : 0;
        c->fixed_mem[k] = actv + comm + c->cl->reserve_fraction * cap;
        c->cap[k] = cap;
    }
    return true;
}

typedef struct result {
    bool ok;
    size_t g, t, stages, dp, micro, cuts[72];
    double batch, period, latency, tps, value;
    double imbalance, lb_gap;
    size_t slots;
} result;

/* Placement depends only on g and the loads: cached per g for the whole search. */
typedef struct place_cache {
    size_t g[48], slots[48], n;
    double imb[48], gap[48];
} place_cache;
static _Thread_local place_cache *cache_now;

/* Expert slots and imbalance for g devices (uniform or histogram loads; worst layer). */
static void place_experts(cand *c, double *out_gap)
{
    for (size_t i = 0; cache_now && i < cache_now->n; i++)
        if (cache_now->g[i] == c->g) {
            c->slots = cache_now->slots[i], c->imbalance = cache_now->imb[i], *out_gap = cache_now->gap[i];
            return;
        }
    const size_t E = c->gr->experts;
    c->slots = (E + c->g - 1) / c->g;
    c->imbalance = 1, *out_gap = 0;
    if (!E) return;
    size_t *copies = malloc(E * sizeof *copies), *ce = malloc(c->slots * c->g * sizeof *ce),
           *cd = malloc(c->slots * c->g * sizeof *cd);
    double *uni = malloc(E * sizeof *uni);
    if (!copies || !ce || !cd || !uni) {
        free(copies), free(ce), free(cd), free(uni);
        return;
    }
    for (size_t e = 0; e < E; e++) uni[e] = 1;
    size_t layers = c->w->expert_load ? c->w->expert_load_layers : 1;
    for (size_t l = 0; l < layers; l++) {
        const double *w = c->w->expert_load ? c->w->expert_load + l * E : uni;
        double sum = 0, mx_w = 0;
        for (size_t e = 0; e < E; e++) sum += w[e], mx_w = fmax(mx_w, w[e]);
        double per_copy = clnpu_expert_replicate(w, E, c->slots * c->g, copies);
        double mx = clnpu_expert_pack_grouped(w, copies, E, c->gr->n_group, c->g, c->slots, ce, cd);
        double mean = sum / (double)c->g, lb = fmax(mean, per_copy);
        if (mean > 0) c->imbalance = fmax(c->imbalance, mx / mean);
        if (lb > 0) *out_gap = fmax(*out_gap, mx / lb - 1);
        (void)mx_w;
    }
    free(copies), free(ce), free(cd), free(uni);
    if (cache_now && cache_now->n < 48) {
        size_t i = cache_now->n++;
        cache_now->g[i] = c->g, cache_now->slots[i] = c->slots, cache_now->imb[i] = c->imbalance, cache_now->gap[i] = *out_gap;
    }
}

/* Stage groups that stream weights at the same time on one node whose devices share a memory
 * system: a replica keeps min(m, k) of its k stages busy (m micro-batches), and the node's groups
 * belong to different replicas or stages. unit_time already splits the bandwidth among one
 * group's devices; this is the further factor for the other groups on the node (1: own memory). */
static double node_sharing(const clnpu_cluster *cl, size_t g, size_t k, double dp, size_t m, size_t per_node,
                           bool prefill)
{
    if (prefill || cl->devices[0].shared_bandwidth <= 0 || g >= per_node) return 1;
    const double groups_on_node = (double)(per_node / g), busy = dp * (double)(m < k ? m : k);
    return fmax(1, fmin(groups_on_node, busy));
}

/* One layout (g devices per stage, TP t) at one batch: for each number of micro-batches m, the
 * stage DP on per-micro-batch costs (decode: at most m stages keep the pipeline full); the
 * period is m times the slowest stage, since every micro-batch reads its stage's weights. */
static result evaluate(const clnpu_graph *gr, const clnpu_cluster *cl, const clnpu_workload *w,
                       const clnpu_calibration *cal, size_t g, size_t t, double batch, size_t per_node)
{
    result best = {0};
    const bool prefill = w->phase == CLNPU_PHASE_PREFILL;
    for (size_t m = 1; m <= 64; m *= 2) {
        if (m > 1 && (prefill || (double)m > batch)) break;
        result r = {0};
        cand c = {gr, cl, w, cal, g, t, g / t, batch, 0, 0, 1, 0, per_node, 0, NULL, NULL, NULL, NULL};
        c.tokens = (prefill ? batch * (double)w->context : batch) / (double)m;
        c.wb = (double)clnpu_dtype_size(w->weights);
        double gap;
        place_experts(&c, &gap);
        if (!cand_prepare(&c)) {
            cand_free(&c);
            break;
        }
        /* One DP gives the optimum for every stage count k; fewer stages leave devices for
         * more pipeline replicas, so the best k is the one with the most tokens/s overall. */
        double value, per_k[72];
        const clnpu_stage_objective obj = prefill ? CLNPU_STAGES_SUM : CLNPU_STAGES_BOTTLENECK;
        size_t any = clnpu_stage_dp_all(gr->count, c.ngroups, stage_cost, stage_mem, c.cap, obj, &c, r.cuts, &value, per_k);
        size_t best_k = 0;
        double best_tps = 0;
        for (size_t k = 1; any && k <= c.ngroups; k++) {
            if (!isfinite(per_k[k])) continue;
            double dp = (double)(cl->count / (g * k));
            double period = (prefill ? per_k[k] : (double)(m > k ? m : k) * per_k[k]) *
                            node_sharing(cl, g, k, dp, m, per_node, prefill);
            if (w->slo_ms > 0 && period * 1e3 > w->slo_ms) continue;
            double tps = (prefill ? batch * (double)w->context : batch) / period * dp;
            if (tps > best_tps * (1 + 1e-12)) best_tps = tps, best_k = k;
        }
        size_t k = best_k ? clnpu_stage_dp(gr->count, best_k, stage_cost, stage_mem, c.cap, obj, &c, r.cuts, &value) : 0;
        if (k) {
            double mx = 0, sum = 0;
            for (size_t s = 0; s < k; s++) {
                double ts = stage_cost(r.cuts[s], r.cuts[s + 1], s, &c);
                mx = fmax(mx, ts), sum += ts;
            }
            r.ok = true, r.g = g, r.t = t, r.stages = k, r.batch = batch, r.value = value, r.micro = m;
            r.dp = cl->count / (g * k);
            r.imbalance = c.imbalance, r.lb_gap = gap, r.slots = c.slots;
            if (!prefill) {
                /* fewer micro-batches than stages leave bubbles: a step takes max(m, k) slots */
                r.period = (double)(m > k ? m : k) * mx * node_sharing(cl, g, k, (double)r.dp, m, per_node, false);
                r.latency = r.period;                    /* a sequence waits one period per token */
                r.tps = batch / r.period * (double)r.dp;
            } else {
                r.period = sum; /* the prompts through every stage */
                r.latency = sum;
                r.tps = batch * (double)w->context / sum * (double)r.dp;
            }
        }
        cand_free(&c);
        if (r.ok && (!best.ok || r.tps > best.tps * (1 + 1e-12))) best = r;
    }
    return best;
}

static bool better(const result *a, const result *b)
{
    if (!b->ok) return a->ok;
    if (!a->ok) return false;
    if (a->tps != b->tps) return a->tps > b->tps * (1 + 1e-12);
    return a->g * a->stages < b->g * b->stages; /* fewer devices on ties */
}

/* Best layout for a given batch (sequences per pipeline replica). */
static result search(const clnpu_graph *gr, const clnpu_cluster *cl, const clnpu_workload *w,
                     const clnpu_calibration *cal, double batch, size_t per_node, size_t tp_cap)
{
    result best = {0};
    for (size_t g = 1; g <= cl->count; g *= 2) {
        for (size_t t = 1; t <= g && t <= tp_cap; t *= 2) {
            if (gr->heads % t || g % t || t < w->min_tp) continue;
            result r = evaluate(gr, cl, w, cal, g, t, batch, per_node);
            if (r.ok && w->slo_ms > 0 && r.latency * 1e3 > w->slo_ms) r.ok = false;
            if (getenv("CLNPU_PLAN_DEBUG"))
                fprintf(stderr, "batch %.0f g %zu t %zu: %s k %zu m %zu dp %zu period %.4f tps %.1f\n", batch, g, t,
                        r.ok ? "ok" : "--", r.stages, r.micro, r.dp, r.period, r.tps);
            if (better(&r, &best)) best = r;
        }
        if (g > cl->count / 2 && g != cl->count && cl->count % g) break;
    }
    /* g = all devices when N is not a power of two */
    if ((cl->count & (cl->count - 1)) != 0)
        for (size_t t = 1; t <= tp_cap; t *= 2) {
            if (gr->heads % t || cl->count % t || t < w->min_tp) continue;
            result r = evaluate(gr, cl, w, cal, cl->count, t, batch, per_node);
            if (r.ok && w->slo_ms > 0 && r.latency * 1e3 > w->slo_ms) r.ok = false;
            if (better(&r, &best)) best = r;
        }
    return best;
}

/* Memory missing for the smallest request, and the device count of the first kind that fits. */
static clnpu_status infeasible(const clnpu_graph *gr, const clnpu_cluster *cl, const clnpu_workload *w)
{
    const clnpu_profile *p = &cl->devices[0].profile;
    double wb = (double)clnpu_dtype_size(w->weights), need = 0, have = 0;
    for (size_t u = 0; u < gr->count; u++) {
        const clnpu_graph_unit *x = &gr->units[u];
        need += (x->attn_params + x->dense_params + x->shared_params + x->router_params + x->norm_params +
                 x->expert_params * (double)gr->experts) * wb;
        need += x->kv_bytes_per_token * (double)w->context * (w->batch ? (double)w->batch : 1);
    }
    for (size_t i = 0; i < cl->count; i++)
        have += (double)cl->devices[i].profile.memory_bytes * (1 - cl->reserve_fraction);
    double per = (double)p->memory_bytes * (1 - cl->reserve_fraction);
    /* each extra device also repeats the non-expert weights it holds: add a 10 % margin */
    double devices = ceil(need * 1.1 / per);
    return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY,
                      "no plan fits %s: the model needs about %.1f GB (%s weights + the KV cache of %zu "
                      "sequence(s) x %zu tokens), the cluster has %.1f GB usable: %.1f GB missing; at least "
                      "%.0f devices of type %s would be needed%s",
                      cl->name, need / 1e9, clnpu_dtype_name(w->weights), w->batch ? w->batch : 1, w->context,
                      have / 1e9, fmax(need - have, 0) / 1e9, devices, p->name,
                      need <= have ? " (memory adds up, but no split satisfies every device's limit and the SLO)" : "");
}

clnpu_status clnpu_plan_create(const clnpu_model_config *cfg, const clnpu_cluster *cl, const clnpu_workload *w_in,
                               const clnpu_calibration *cal_in, clnpu_plan **out)
{
    /* Searching the batch for throughput alone ends in absurd per-token latencies: without an
     * SLO, decode plans aim at an interactive 100 ms per token (documented in docs/scheduler.md). */
    clnpu_workload wcopy = *w_in;
    if (wcopy.phase == CLNPU_PHASE_DECODE && !wcopy.batch && wcopy.slo_ms <= 0) wcopy.slo_ms = CLNPU_PLAN_DEFAULT_SLO_MS;
    const clnpu_workload *w = &wcopy;
    *out = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!cl || !cl->count) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: empty cluster");
    if (w->weights != CLNPU_DTYPE_BF16 && w->weights != CLNPU_DTYPE_FP8_E4M3 && w->weights != CLNPU_DTYPE_I8)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: weights must be bf16, fp8 or int8");
    if (!w->context) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: context must be positive");
    clnpu_calibration cal = cal_in ? *cal_in : clnpu_calibration_default();
    place_cache pc = {.n = 0};
    cache_now = &pc;
    clnpu_plan *p = calloc(1, sizeof *p);
    if (!p) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    clnpu_status st = clnpu_graph_build(cfg, &p->graph);
    if (st) {
        free(p);
        return st;
    }
    plan_graph_set_latent_cache(&p->graph, w->latent_cache); /* what the executor will allocate */
    p->cfg = *cfg, p->work = *w, p->devices_total = cl->count;
    if (!w_in->slo_ms && w->slo_ms) p->work.slo_ms = w->slo_ms;
    snprintf(p->cluster_name, sizeof p->cluster_name, "%s", cl->name);
    size_t per_node = cl->count / (cl->nodes ? cl->nodes : 1);
    if (!per_node) per_node = 1;
    p->devices_per_node = per_node;
    /* TP stays inside a node and under the cap; the node size still decides which link EP uses */
    const size_t tp_cap = w->max_tp && w->max_tp < per_node ? w->max_tp : per_node;
    result best = {0};
    if (w->batch) {
        best = search(&p->graph, cl, w, &cal, (double)w->batch, per_node, tp_cap);
        if (best.ok && best.dp > 1) { /* the global batch is shared by the pipeline replicas */
            result r2 = search(&p->graph, cl, w, &cal, ceil((double)w->batch / best.dp), per_node, tp_cap);
            if (r2.ok) best = r2;
        }
    } else {
        /* the largest batch that fits (and meets the SLO): feasibility falls with the batch */
        size_t lo = 0, hi = 1;
        result r = search(&p->graph, cl, w, &cal, 1, per_node, tp_cap);
        if (r.ok) {
            best = r, lo = 1;
            while (hi < (1u << 20)) {
                hi *= 2;
                r = search(&p->graph, cl, w, &cal, (double)hi, per_node, tp_cap);
                if (!r.ok) break;
                best = r, lo = hi;
            }
            if (r.ok) hi = lo + 1;
            while (hi - lo > 1 && hi - lo > lo / 64) { /* within 1.5 % */
                size_t mid = lo + (hi - lo) / 2;
                r = search(&p->graph, cl, w, &cal, (double)mid, per_node, tp_cap);
                if (r.ok) best = r, lo = mid;
                else hi = mid;
            }
        }
    }
    if (!best.ok) {
        cache_now = NULL;
        st = infeasible(&p->graph, cl, w);
        clnpu_plan_destroy(p);
        return st;
    }
    /* Record the plan: stages, memory per device, expert placement of one layer. */
    cand c = {&p->graph, cl, w, &cal, best.g, best.t, best.g / best.t, best.batch, 0, 0, 1, 0, per_node, 0,
              NULL, NULL, NULL, NULL};
    c.tokens = (w->phase == CLNPU_PHASE_PREFILL ? best.batch * (double)w->context : best.batch) / (double)best.micro;
    c.wb = (double)clnpu_dtype_size(w->weights);
    double gap;
    place_experts(&c, &gap);
    cand_prepare(&c);
    p->g = best.g, p->nstages = best.stages;
    p->stages = calloc(best.stages, sizeof *p->stages);
    p->stage_profiles = calloc(best.stages, sizeof *p->stage_profiles);
    double maxfrac = 0, comm = 0;
    for (size_t s = 0; p->stages && s < best.stages; s++) {
        plan_stage *ps = &p->stages[s];
        ps->unit_begin = best.cuts[s], ps->unit_end = best.cuts[s + 1], ps->device_begin = s * best.g;
        ps->time_s = stage_cost(ps->unit_begin, ps->unit_end, s, &c);
        double wts = 0, kv = 0, scratch = 0;
        for (size_t u = ps->unit_begin; u < ps->unit_end; u++) {
            const clnpu_graph_unit *x = &p->graph.units[u];
            double kvu = x->kv_bytes_per_token * (double)w->context * (c.batch / c.r);
            double ex = plan_exec_unit_bytes(&p->graph, w, x, c.g, c.t, c.r, c.batch);
            kv += kvu, scratch += ex, wts += unit_mem(&c, x) - kvu - ex;
        }
        const double d = (double)p->graph.hidden, capb = c.cap[s];
        ps->mem[0] = wts, ps->mem[1] = kv;
        ps->mem[2] = plan_exec_fixed_bytes(&p->graph, w, c.t, c.r, c.batch) + scratch;
        ps->mem[3] = best.g > 1 ? 2 * c.tokens / best.g * p->graph.top_k * d * 2 : 0;
        ps->mem[4] = cl->reserve_fraction * capb, ps->mem[5] = capb;
        maxfrac = fmax(maxfrac, (ps->mem[0] + ps->mem[1] + ps->mem[2] + ps->mem[3] + ps->mem[4]) / capb);
        comm += c.tokens * (double)best.micro * 2 * d * 2 * (s > 0);
        for (size_t u = ps->unit_begin; u < ps->unit_end; u++)
            if (p->graph.units[u].kind == CLNPU_UNIT_MOE)
                comm += 2 * c.tokens * (double)best.micro * fmin((double)p->graph.top_k, best.g * (1 - pow(1 - 1.0 / best.g, (double)p->graph.top_k))) * d * 2 *
                        (best.g > 1);
        snprintf(p->profile_names[s < 3 ? s : 3], 64, "%s", cl->devices[ps->device_begin].profile.name);
        if (p->stage_profiles) snprintf(p->stage_profiles[s], 64, "%s", cl->devices[ps->device_begin].profile.name);
    }
    /* one layer's placement for the report */
    const size_t E = p->graph.experts;
    if (E) {
        size_t *copies = malloc(E * sizeof *copies);
        double *uni = malloc(E * sizeof *uni);
        p->ncopies = c.slots * best.g;
        p->copy_expert = malloc(p->ncopies * sizeof(size_t));
        p->copy_device = malloc(p->ncopies * sizeof(size_t));
        if (copies && uni && p->copy_expert && p->copy_device) {
            for (size_t e = 0; e < E; e++) uni[e] = 1;
            const double *wl = w->expert_load ? w->expert_load : uni;
            clnpu_expert_replicate(wl, E, p->ncopies, copies);
            clnpu_expert_pack_grouped(wl, copies, E, p->graph.n_group, best.g, c.slots, p->copy_expert, p->copy_device);
        }
        free(copies), free(uni);
    }
    p->slots_per_device = c.slots;
    p->weight_bytes_per_param = c.wb;
    cand_free(&c);
    cache_now = NULL;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    p->sum = (clnpu_plan_summary){best.t, best.stages, best.g, best.dp * (best.g / best.t), best.g * best.stages * best.dp,
                                  (size_t)(best.batch * best.dp), best.micro, best.period, best.latency, best.tps,
                                  best.tps / (double)(best.g * best.stages * best.dp), comm * best.dp,
                                  best.imbalance, best.lb_gap, maxfrac,
                                  (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9};
    *out = p;
    return CLNPU_OK;
}

void clnpu_plan_destroy(clnpu_plan *p)
{
    if (!p) return;
    clnpu_graph_free(&p->graph);
    free(p->stages), free(p->copy_expert), free(p->copy_device), free(p->stage_profiles);
    free(p);
}

clnpu_plan_summary clnpu_plan_get_summary(const clnpu_plan *p)
{
    return p->sum;
}

void clnpu_plan_device_memory(const clnpu_plan *p, size_t d, double out[6])
{
    memset(out, 0, 6 * sizeof *out);
    for (size_t s = 0; s < p->nstages; s++)
        if (d >= p->stages[s].device_begin && d < p->stages[s].device_begin + p->g)
            memcpy(out, p->stages[s].mem, 6 * sizeof *out);
}
