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
    clnpu_workload w = {.phase = CLNPU_PHASE_DECODE, .context = 4096, .weights = CLNPU_DTYPE_BF16,
                        .latent_cache = CLNPU_DTYPE_F32};
    return w;
}

clnpu_calibration clnpu_calibration_default(void)
{
    /* Typical achieved fractions of peak for GEMM-class kernels, streams and collectives. */
    clnpu_calibration c = {.compute_eff = 0.6, .memory_eff = 0.8, .link_eff = 0.7};
    return c;
}

typedef struct cand {
    const clnpu_graph *gr;
    const clnpu_cluster *cl;
    const clnpu_workload *w;
    const clnpu_calibration *cal;
    size_t g, t, r;        /* devices per stage, TP, attention replicas (g / t) */
    double batch;          /* sequences in this pipeline replica (per micro-batch) */
    double tokens;         /* rows per step: decode batch x (1 + MTP draft), prefill new prompt tokens */
    double wb;             /* bytes per weight */
    double imbalance;      /* max / mean expert load per device */
    size_t slots;          /* expert copies per device */
    size_t per_node;
    bool tbo;              /* two micro-batches overlap each other's communication */
    /* per group (index = first device / g): time and memory of each unit */
    size_t ngroups;
    double *unit_time;     /* [ngroups][units] */
    double *unit_mem;      /* [ngroups][units] weights + kv per device */
    double *fixed_mem;     /* [ngroups] activations + comm + reserve per device */
    double *cap;           /* [ngroups] capacity */
} cand;

/* Where one unit's time goes (seconds per step); see clnpu_plan_breakdown. */
typedef struct parts {
    double attn, moe, comm, other, overlap;
    double qkv, kvb, tab, perm; /* shares of attn / moe reported by --explain (clnpu_plan_breakdown) */
    double late, shared;  /* of attn: the core and o_proj; of moe: the shared expert and the
                           * router (the overlap schedules place them apart) */
} parts;

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

/* A kernel rate: measured (calibration) first, then published (the cluster's kernel_rates),
 * else the profile's figure times the calibration's efficiency. */
static double rate(double measured, double published, double derived)
{
    return measured > 0 ? measured : published > 0 ? published : derived;
}

/* Rates of one device: GEMM and weight stream (memory bandwidth after sharing). */
static double gemm_rate(const cand *c, const clnpu_profile *p)
{
    return rate(c->cal->rates.gemm_flops, c->cl->rates.gemm_flops, peak_of(p, c->w->weights) * c->cal->compute_eff);
}

static double stream_rate(const cand *c, const clnpu_profile *p, const clnpu_profile *own)
{
    const double r = rate(c->cal->rates.stream_bandwidth, c->cl->rates.stream_bandwidth, own->memory_bandwidth * c->cal->memory_eff);
    /* a shared memory system caps what each streaming device gets */
    return p->memory_bandwidth < own->memory_bandwidth ? fmin(r, p->memory_bandwidth * c->cal->memory_eff) : r;
}

static double roof(const cand *c, const clnpu_profile *p, const clnpu_profile *own, double flops, double bytes)
{
    return fmax(flops / gemm_rate(c, p), bytes / stream_rate(c, p, own));
}

/* The attention core has kernels of its own (FlashMLA-class): its own compute and bandwidth rates;
 * non-absorbed prefill runs a FlashAttention-class kernel whose published rate depends on the
 * prompt length (`attn_prefill_table`; a measured attention rate wins). */
static double attn_roof(const cand *c, const clnpu_profile *p, const clnpu_profile *own, double flops, double bytes,
                        double prefill_len)
{
    const clnpu_kernel_rates *pr = &c->cl->rates;
    const double by_len = prefill_len > 0 && !c->cal->rates.attn_flops && pr->attn_prefill_table_count
                              ? clnpu_attn_table_rate(pr->attn_prefill_table, pr->attn_prefill_table_count, prefill_len)
                              : 0;
    const double f = by_len > 0 ? by_len : rate(c->cal->rates.attn_flops, c->cl->rates.attn_flops, gemm_rate(c, p));
    const double b = rate(c->cal->rates.attn_bandwidth, c->cl->rates.attn_bandwidth, stream_rate(c, p, own));
    return fmax(flops / f, bytes / (p->memory_bandwidth < own->memory_bandwidth ? fmin(b, stream_rate(c, p, own)) : b));
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

static int dispatch_mode(const cand *c) { return c->cl->ep_dispatch; }

/* Rows of one sequence per step: decode verifies one MTP draft token besides the next one. */
static double rows_per_seq(const clnpu_workload *w)
{
    return w->phase == CLNPU_PHASE_PREFILL ? (double)w->context * (1 - w->prefix_hit) : (w->mtp_accept > 0 ? 2.0 : 1.0);
}

/* Tokens on the busiest attention replica: replicas take whole sequences, so with fewer
 * sequences than replicas some idle and one still carries a full sequence. */
static double tokens_per_replica(const cand *c)
{
    const double per_seq = rows_per_seq(c->w);
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

/* The busiest device's rows over the mean in this candidate's exchanges: the placement's (or a
 * measured figure as given), or a measured figure carried from where it was measured to this
 * EP width, slot count and rows per device per exchange (a half batch's under TBO). */
static double imbalance_of(const cand *c)
{
    const clnpu_workload *w = c->w;
    if (!(w->expert_imbalance > 0 && w->expert_imbalance_at[0] > 0)) return c->imbalance;
    const double rows = c->tokens * (double)c->gr->top_k / (double)c->g;
    return clnpu_expert_imbalance_transfer(w->expert_imbalance, w->expert_imbalance_at[0], w->expert_imbalance_at[1],
                                           w->expert_imbalance_at[2], (double)c->g, (double)c->slots, rows);
}

/* Dispatch (8-bit when the weights are, as DeepEP does) or combine (bf16) of one MoE layer:
 * the busiest device's bytes over the link the stage spans. */
static double ep_exchange(const cand *c, double bytes_per_value)
{
    const double d = (double)c->gr->hidden, k = (double)c->gr->top_k, g = (double)c->g;
    const double per_dev = c->tokens / g; /* rows each device sends */
    const clnpu_link *l = link_for(c, c->g);
    const double bw = rate(c->cal->rates.alltoall_bandwidth, c->cl->rates.alltoall_bandwidth, l->bandwidth * c->cal->link_eff);
    const double lat = rate(c->cal->rates.alltoall_latency_s, c->cl->rates.alltoall_latency_s, l->latency_s);
    if (c->g <= 1) return 0;
    const double imb = imbalance_of(c);
    /* A measured rate (DeepEP's tests, a calibration) is applied to bytes counted the way it was
     * measured: DeepEP counts every (token, expert) selection in low-latency mode and every
     * destination node of a token, its own included, in normal mode. A link's own bandwidth is
     * applied to what crosses it: the remote share. */
    const bool measured = c->cl->rates.alltoall_bandwidth > 0 || c->cal->rates.alltoall_bandwidth > 0;
    const double remote = measured ? 1 : (g - 1) / g;
    if (dispatch_mode(c) == CLNPU_DISPATCH_EXPERT) /* one message per (token, expert), posted at once */
        return lat + per_dev * k * remote * d * bytes_per_value * imb / bw;
    /* distinct destination devices of a token; group-aware placement bounds them by topk_group */
    double fan = fmin(k, g * (1 - pow(1 - 1 / g, k)));
    if (c->gr->n_group > 1 && c->gr->topk_group) fan = fmin(fan, (double)c->gr->topk_group * ceil(g / (double)c->gr->n_group));
    if (dispatch_mode(c) == CLNPU_DISPATCH_NODE && c->g > c->per_node) {
        /* once per destination node over the network, then NVLink fan-out inside the node */
        const double nodes = g / (double)c->per_node;
        const double nfan = fmin(fan, nodes * (1 - pow(1 - 1 / nodes, fan)));
        const double inter = lat + per_dev * nfan * (measured ? 1 : (nodes - 1) / nodes) * d * bytes_per_value * imb / bw;
        const double intra = c->cl->intra.latency_s +
                             per_dev * fan * d * bytes_per_value * imb / (c->cl->intra.bandwidth * c->cal->link_eff);
        return fmax(inter, intra);
    }
    if (measured) return (g - 1) * lat + per_dev * fan * remote * d * bytes_per_value * imb / bw;
    return alltoall(c, l, g, per_dev * fan * d * bytes_per_value);
}

/* A published table's time for `groups` GEMMs of m rows (N x K), or -1 where it lists no such
 * shape: the calibration's table first; a measured GEMM rate wins over the cluster's table. */
static double table_time(const cand *c, bool grouped, double m, double n, double k, double groups)
{
    const clnpu_kernel_rates *r = &c->cal->rates;
    if (!(grouped ? r->grouped_table_count : r->gemm_table_count)) {
        if (r->gemm_flops > 0) return -1;
        r = &c->cl->rates;
    }
    return grouped ? clnpu_gemm_table_time(r->grouped_table, r->grouped_table_count, m, n, k, groups)
                   : clnpu_gemm_table_time(r->gemm_table, r->gemm_table_count, m, n, k, groups);
}

/* The two GEMMs of a SiLU-gated MLP of width I (gate+up fused: N = 2 I, K = d; down: N = d,
 * K = I) from the table: `groups` experts of m rows each, or -1. */
static double mlp_table_time(const cand *c, bool grouped, double m, double I, double groups)
{
    const double d = (double)c->gr->hidden;
    const double a = table_time(c, grouped, m, 2 * I, d, groups), b = table_time(c, grouped, m, d, I, groups);
    return a < 0 || b < 0 ? -1 : a + b;
}

/* MLA's projections from the table (the shapes DeepGEMM tabulates: q_a and kv_a fused,
 * N = q_lora + R + rope, whole on every TP rank; q_b; kv_b over `kv_rows` keys, which in prefill
 * include the cached prefix keys it expands per head; o_proj), or -1 (another attention family,
 * a shape the table lacks). TP t splits q_b, kv_b and o_proj by heads: a rank runs 1 / t of the
 * full shape's time (its efficiency is taken as the full shape's). */
static double proj_table_time(const cand *c, const clnpu_graph_unit *u, double rows, double kv_rows)
{
    /* (absorbed decode runs kv_b's weights as two batched GEMMs, q x W_UK and o x W_UV, over the
     * same rows: priced at kv_b's shape) */
    const clnpu_model_config *m = &c->gr->cfg;
    const double d = (double)m->hidden_size, H = (double)m->num_attention_heads, R = (double)m->kv_lora_rank;
    const double nope = (double)m->qk_nope_head_dim, rope = (double)m->qk_rope_head_dim, vd = (double)m->v_head_dim;
    const double qlr = (double)m->q_lora_rank, dqk = nope + rope;
    const double base = (qlr ? d * qlr + qlr + qlr * H * dqk : d * H * dqk) + d * (R + rope) + R + R * H * (nope + vd) + H * vd * d;
    if (u->attn_topk || fabs(u->attn_params - base) > 0.5) return -1;
    const double tp = (double)c->t;
    double t[4];
    t[0] = table_time(c, false, rows, qlr ? qlr + R + rope : H * dqk + R + rope, d, 1);
    t[1] = qlr ? table_time(c, false, rows, H * dqk, qlr, 1) : 0;
    t[2] = table_time(c, false, kv_rows, H * (nope + vd), R, 1);
    t[3] = table_time(c, false, rows, d, H * vd, 1);
    if (t[0] < 0 || t[1] < 0 || t[2] < 0 || t[3] < 0) return -1;
    return t[0] + (t[1] + t[2] + t[3]) / tp;
}

/* Time of one unit on one device of a stage group (device dv) for the whole step, by part. */
/* Sparse attention in prefill: the mean over new positions p in [a, ctx) of min(p, k), the keys a
 * query attends to when the indexer keeps k of its p. */
static double sparse_prefill_keys(double a, double ctx, double k)
{
    if (ctx <= a) return fmin(a, k);
    if (k <= a) return k;
    if (k >= ctx) return (a + ctx) / 2;
    return ((k * k - a * a) / 2 + k * (ctx - k)) / (ctx - a);
}

static parts unit_parts(const cand *c, const clnpu_cluster_device *dv, const clnpu_graph_unit *u)
{
    parts P = {0};
    const double d = (double)c->gr->hidden, tr = tokens_per_replica(c), ctx = (double)c->w->context;
    const double t = (double)c->t, g = (double)c->g, act = 2.0; /* bf16 activations on the wire */
    const bool prefill = c->w->phase == CLNPU_PHASE_PREFILL;
    const double seqs = c->tokens / rows_per_seq(c->w);
    /* On a shared memory system: attention replicas busy at once (fewer sequences than replicas
     * leave some idle) times their TP ranks, and the devices that receive expert rows. */
    const double busy_attn = fmin(g, t * fmin((double)c->r, ceil(seqs - 1e-9)));
    const double busy_exp = prefill ? g : g * (1 - pow(1 - 1 / g, c->tokens * (double)c->gr->top_k));
    const clnpu_profile pa = sharing(dv, busy_attn), pe = sharing(dv, busy_exp), *own = &dv->profile;
    const clnpu_profile *p = &pa;
    const double launch = c->cl->launch_overhead_s;
    /* the embedding and the LM head split by vocabulary rows over the TP ranks: each rank's rows
     * (zeros for the others' ids) summed by an all-reduce; the head's columns gathered on the
     * first rank (about half an all-reduce's traffic), where clnpu samples */
    if (u->kind == CLNPU_UNIT_EMBED) {
        P.other = roof(c, p, own, 0, tr * d * 2) + allreduce(c, link_for(c, c->t), t, tr * d * act) + launch;
        return P;
    }
    if (u->kind == CLNPU_UNIT_HEAD) {
        /* LM head on the last position of each sequence (prefill) or every row (decode) */
        double rows = prefill ? ceil(seqs / c->r - 1e-9) : tr;
        P.other = roof(c, p, own, 2 * u->dense_params * rows / t, u->dense_params * c->wb / t) +
                  allreduce(c, link_for(c, c->t), t, rows * (u->dense_params / d) * 4) / 2 + 2 * launch;
        return P;
    }
    /* attention projections (q_b, kv_b, o over the t TP ranks; q_a and kv_a whole on each) and
     * the core: absorbed decode reads the latent of the replica's sequences on every TP rank;
     * prefill attends causally (half the new keys on average) plus every cached prefix key, in the
     * non-absorbed form. DeepSeek Sparse Attention: at most attn_topk keys per query (prefill: the
     * mean over the new positions of min(position, topk)), in the absorbed form both ways, plus the
     * indexer's scores over every key, whole on each TP rank. */
    const double hit = prefill ? c->w->prefix_hit : 0;
    const double scored = prefill ? ctx * hit + ctx * (1 - hit) / 2 : ctx;
    const double kt = (double)u->attn_topk;
    const double keys = !kt ? scored : prefill ? sparse_prefill_keys(ctx * hit, ctx, kt) : fmin(ctx, kt);
    const double per_key = prefill && !kt && u->attn_prefill_flops_per_ctx > 0 ? u->attn_prefill_flops_per_ctx
                                                                               : u->attn_flops_per_ctx;
    const double core_flops = per_key * keys * tr / t + u->index_flops_per_ctx * scored * tr;
    const double core_bytes = prefill ? 0 : ((u->kv_bytes_per_token - u->index_bytes_per_token) * keys +
                                             u->index_bytes_per_token * ctx) * ceil(seqs / c->r - 1e-9);
    const double attn_rank = (u->attn_params - u->attn_whole_params) / t + u->attn_whole_params;
    /* the memory-bound kernels between the GEMMs stream activations (bf16): the attention block's
     * norms, rope, fp8 quantisation and residual add, about 13 passes of a hidden row (read and
     * write counted), and the o_proj input's quantisation (3 bytes per value of the H x v_head
     * attention output of the rank's heads) */
    const double o_in = (double)c->gr->cfg.num_attention_heads * (double)c->gr->cfg.v_head_dim;
    double elem_attn = tr / t * (13 * d + 3 * o_in);
    /* Non-absorbed prefill (dense MLA): kv_b expands every key it attends, the cached prefix keys
     * too (hit / (1 - hit) of them per new token), into per-head keys and values, and the
     * per-head q, k and v (bf16) are written by their GEMMs and read by the attention kernel. */
    const clnpu_model_config *mc = &c->gr->cfg;
    const double H = (double)mc->num_attention_heads, dqk = (double)(mc->qk_nope_head_dim + mc->qk_rope_head_dim);
    const double cached = prefill && !kt && hit > 0 ? tr * hit / (1 - hit) : 0;
    const double kvb_params = (double)mc->kv_lora_rank * H * (double)(mc->qk_nope_head_dim + mc->v_head_dim);
    if (prefill && !kt && u->attn_prefill_flops_per_ctx > 0)
        elem_attn += (tr * H * dqk + (tr + cached) * H * (dqk + (double)mc->v_head_dim)) * 2 * 2 / t;
    const double proj_tab = proj_table_time(c, u, tr, tr + cached);
    const double proj = proj_tab >= 0 ? fmax(proj_tab, attn_rank * c->wb / stream_rate(c, p, own))
                                      : roof(c, p, own, 2 * attn_rank * tr + 2 * kvb_params * cached / t, attn_rank * c->wb);
    if (prefill && !kt && u->attn_prefill_flops_per_ctx > 0)
        P.qkv = (tr * H * dqk + (tr + cached) * H * (dqk + (double)mc->v_head_dim)) * 2 * 2 / t / stream_rate(c, p, own);
    if (cached > 0)
        P.kvb = proj_tab >= 0 ? table_time(c, false, tr + cached, H * (double)(mc->qk_nope_head_dim + mc->v_head_dim),
                                           (double)mc->kv_lora_rank, 1) / t -
                                    table_time(c, false, tr, H * (double)(mc->qk_nope_head_dim + mc->v_head_dim), (double)mc->kv_lora_rank, 1) / t
                              : 2 * kvb_params * cached / t / gemm_rate(c, p);
    if (proj_tab >= 0) P.tab += proj_tab;
    const double dense_len = prefill && !kt && u->attn_prefill_flops_per_ctx > 0 ? ctx : 0; /* FlashAttention-class */
    const double core = attn_roof(c, p, own, core_flops, core_bytes, dense_len);
    P.attn = proj + core + elem_attn / stream_rate(c, p, own);
    /* the core and o_proj (DeepSeek's decode schedule runs them as ATTN-1, beside a combine) */
    const double o_params = (double)mc->num_attention_heads * (double)mc->v_head_dim * d / t;
    P.late = core + (proj_tab >= 0 ? table_time(c, false, tr, d, (double)mc->num_attention_heads * (double)mc->v_head_dim, 1) / t
                                   : proj * fmin(1, o_params / fmax(attn_rank, 1)));
    double comm = 2 * allreduce(c, link_for(c, c->t), t, tr * d * act); /* after o_proj and after the MLP */
    double comp1 = P.attn, comp2 = 0;
    if (u->kind == CLNPU_UNIT_DENSE) {
        /* SiLU x up reads 2 I and writes I (fp8) per row, the down input's quantisation 3 d */
        const double I = u->dense_params / (3 * d), elem = tr / t * (5 * I / t + 3 * d);
        const double tab = mlp_table_time(c, false, tr, I, 1) / t; /* TP splits I: 1 / t of the time */
        if (tab >= 0) P.tab += tab;
        comp1 += (tab >= 0 ? fmax(tab, u->dense_params * c->wb / t / stream_rate(c, p, own))
                           : roof(c, p, own, 2 * u->dense_params * tr / t, u->dense_params * c->wb / t)) +
                 elem / stream_rate(c, p, own);
        P.moe = comp1 - P.attn;
    } else {
        /* routed experts over the g devices of the stage: tokens x top_k spread by placement */
        const double k = (double)c->gr->top_k, s = (double)c->slots;
        const double per_dev = c->tokens * k / g * imbalance_of(c);
        const double distinct = s * (1 - pow(1 - 1 / s, per_dev)); /* experts that see a token */
        /* router and shared expert: clnpu's executor (device dispatch) runs them once for every
         * replica's tokens on the first device while the replicas wait at the layer; DeepEP-style
         * deployments hold the shared expert on every device and run it on its own tokens */
        const bool per_replica = c->r <= 1 || dispatch_mode(c) != CLNPU_DISPATCH_DEVICE;
        const double sh_rows = per_replica ? tr / t : c->tokens, sh_split = per_replica ? t : 1;
        const double sh_flops = 2 * (u->shared_params + u->router_params) * sh_rows;
        const double sh_bytes = (u->shared_params / sh_split + u->router_params) * c->wb;
        const double I = u->expert_params / (3 * d), Ish = u->shared_params / (3 * d);
        /* a published table prices the grouped GEMM at the rows each active expert gets, and the
         * shared expert (and the router, by roofline) at the replica's rows */
        const double g_tab = distinct > 0 ? mlp_table_time(c, true, per_dev / distinct, I, distinct) : 0;
        const double s_tab = per_replica && sh_split == 1 ? mlp_table_time(c, false, sh_rows, Ish, 1) : -1;
        if (g_tab >= 0 && s_tab >= 0 && dv->shared_bandwidth <= 0) P.tab += g_tab + s_tab;
        P.shared = (g_tab >= 0 && s_tab >= 0 ? s_tab + roof(c, p, own, 2 * u->router_params * sh_rows, u->router_params * c->wb)
                                             : roof(c, p, own, sh_flops, sh_bytes)) +
                   sh_rows * (5 * Ish / sh_split + 3 * d) / stream_rate(c, p, own);
        if (g_tab >= 0 && s_tab >= 0 && dv->shared_bandwidth <= 0)
            comp2 = fmax(g_tab + s_tab, (distinct * u->expert_params + u->shared_params) * c->wb / stream_rate(c, p, own)) +
                    roof(c, p, own, 2 * u->router_params * sh_rows, u->router_params * c->wb);
        else if (dv->shared_bandwidth > 0) /* routed and shared experts see different bandwidths */
            comp2 = roof(c, &pe, own, 2 * u->expert_params * per_dev, distinct * u->expert_params * c->wb) +
                    roof(c, p, own, sh_flops, sh_bytes);
        else
            comp2 = roof(c, p, own, 2 * u->expert_params * per_dev + sh_flops, distinct * u->expert_params * c->wb + sh_bytes);
        /* routed rows gathered into expert order (read and write, fp8) and, after the down
         * projection, back into the exchange's order for the combine (read and write, bf16) --
         * not where the exchange itself writes each row into its expert's slot and the combine
         * reads it there (DeepEP's low-latency kernels feeding the masked grouped GEMM); SiLU x
         * up on each routed and shared row (5 I bytes), the shared expert's input quantisation */
        const double permute = dispatch_mode(c) == CLNPU_DISPATCH_EXPERT ? 0 : 2 * d + 4 * d;
        const double elem = per_dev * (permute + 5 * I) + sh_rows * (5 * Ish / sh_split + 3 * d);
        const double elem_rate = stream_rate(c, u->kind == CLNPU_UNIT_MOE && dv->shared_bandwidth > 0 ? &pe : p, own);
        comp2 += elem / elem_rate;
        P.perm = per_dev * permute / elem_rate;
        P.moe = comp2;
        /* dispatch (in the weight dtype when it is 8-bit, as DeepEP does) + combine (bf16) */
        const double disp = ep_exchange(c, c->wb < 2 ? 1.0 + 4.0 / 128 : act), comb = ep_exchange(c, act);
        /* disaggregated prefill: this layer's new latent cache leaves for the decode devices on
         * the network link, which the combine also uses */
        const double kv = prefill && c->w->kv_transfer ? tr * u->kv_bytes_per_token / (c->cl->inter.bandwidth * c->cal->link_eff) : 0;
        comm += disp + comb + kv;
    }
    P.comm = comm;
    const double comp = comp1 + comp2;
    /* Within one batch, the executor hides `comm_overlap` of the shorter of compute and
     * communication (asynchronous all-to-all; 0 where it exchanges synchronously). */
    P.overlap = c->cl->comm_overlap * fmin(comp, comm);
    /* kernels per decoder layer, and for expert-parallel MoE layers the host round trip that
     * reads the expert counts to cut the rows for the shards (one device: counts stay on it) */
    P.other = 24 * launch + (u->kind == CLNPU_UNIT_MOE && c->g > 1 && dispatch_mode(c) == CLNPU_DISPATCH_DEVICE ? 2 * launch : 0);
    return P;
}

static double parts_sum(parts P) { return P.attn + P.moe + P.comm + P.other - P.overlap; }

/* The overlap of one MoE layer: DeepSeek's published schedules (scheduler/overlap.c), with the
 * cluster's split of the compute units. */
static double tbo_slots(const cand *c, bool prefill, double attn, double late, double sh, double mlp, double dd, double mm)
{
    const double part = rate(c->cal->rates.tbo_compute_sm_fraction, c->cl->rates.tbo_compute_sm_fraction, 0);
    const clnpu_tbo_layer x = {.prefill = prefill, .attn = attn, .late = late, .shared = sh, .mlp = mlp, .dispatch = dd,
                               .combine = mm, .compute_sm_fraction = part,
                               .exchange_sm_fraction = rate(c->cal->rates.alltoall_sm_fraction, c->cl->rates.alltoall_sm_fraction, 0)};
    return clnpu_tbo_layer_time(&x);
}

/* With two micro-batches (TBO), one micro-batch's dispatch and combine run while the other
 * computes, in DeepSeek's published schedules (tbo_slots): each half's attention (of it the core
 * and o_proj), shared expert, routed experts, dispatch and combine, priced at half the rows. What
 * cannot hide (exchange longer than the compute beside it, fixed latencies that do not halve with
 * the batch, weights read once per micro-batch, decode's routed experts) stays in the step. */
static parts unit_parts_tbo(const cand *c, const clnpu_cluster_device *dv, const clnpu_graph_unit *u)
{
    cand h = *c;
    h.tokens = c->tokens / 2, h.batch = c->batch / 2;
    parts P = unit_parts(&h, dv, u), R = P;
    R.attn *= 2, R.moe *= 2, R.comm *= 2, R.other *= 2, R.qkv *= 2, R.kvb *= 2, R.tab *= 2, R.perm *= 2;
    if (u->kind != CLNPU_UNIT_MOE || c->g <= 1) {
        R.overlap *= 2;
        return R;
    }
    /* split the exchange into dispatch and combine as the bytes do (1 B + scales vs 2 B) */
    const double one_b = h.wb < 2 ? 1.0 + 4.0 / 128 : 2.0, frac_d = one_b / (one_b + 2.0);
    const double dd = P.comm * frac_d, mm = P.comm * (1 - frac_d);
    const double sh = fmin(P.shared, P.moe), mlp = P.moe - sh, attn = P.attn + P.other, late = fmin(P.late, attn);
    R.overlap = R.attn + R.moe + R.comm + R.other - tbo_slots(c, c->w->phase == CLNPU_PHASE_PREFILL, attn, late, sh, mlp, dd, mm);
    return R;
}

static double unit_time_of(const cand *c, const clnpu_cluster_device *dv, const clnpu_graph_unit *u, parts *out)
{
    parts P = c->tbo ? unit_parts_tbo(c, dv, u) : unit_parts(c, dv, u);
    if (out) *out = P;
    return parts_sum(P);
}

static double unit_time(const cand *c, const clnpu_cluster_device *dv, const clnpu_graph_unit *u)
{
    return unit_time_of(c, dv, u, NULL);
}

/* The MTP module (decode with MTP): one more MoE layer and the LM head over the same rows. */
static const clnpu_graph_unit *mtp_layer(const cand *c)
{
    if (c->w->phase != CLNPU_PHASE_DECODE || c->w->mtp_accept <= 0) return NULL;
    for (size_t u = c->gr->count; u-- > 0;)
        if (c->gr->units[u].kind == CLNPU_UNIT_MOE) return &c->gr->units[u];
    return NULL;
}

/* The executor's own buffers: clnpu's (scheduler/memory.c, its runtime's account) when the plan
 * is for clnpu's executor (device dispatch); a DeepEP-style deployment's executor is not clnpu,
 * so its activations are priced as a dozen live bf16 rows per token, and no per-unit scratch. */
static double exec_unit_bytes(const cand *c, const clnpu_graph *gr, const clnpu_workload *w, const clnpu_graph_unit *u)
{
    if (dispatch_mode(c) != CLNPU_DISPATCH_DEVICE) return 0;
    return plan_exec_unit_bytes(gr, w, u, c->g, c->t, c->r, c->batch);
}

static double exec_fixed_bytes(const cand *c, const clnpu_graph *gr, const clnpu_workload *w)
{
    if (dispatch_mode(c) != CLNPU_DISPATCH_DEVICE) {
        const double tr = tokens_per_replica(c) * (c->tbo ? 0.5 : 1), d = (double)gr->hidden;
        return tr * d * 2 * 12 + (w->phase == CLNPU_PHASE_PREFILL ? tr * d * 2 * 4 : 0);
    }
    return plan_exec_fixed_bytes(gr, w, c->t, c->r, c->batch);
}

/* Weights + KV of one unit per device. */
static double unit_mem(const cand *c, const clnpu_graph_unit *u)
{
    const double t = (double)c->t;
    /* with several attention replicas clnpu's executor holds the shared expert whole on the first
     * device; DeepEP-style deployments on every device, split over a replica's TP ranks */
    const bool whole = c->r > 1 && dispatch_mode(c) == CLNPU_DISPATCH_DEVICE;
    double m = ((u->attn_params - u->attn_whole_params + u->dense_params) / t + u->attn_whole_params +
                u->shared_params / (whole ? 1 : t)) * c->wb + (u->router_params + u->norm_params) * 4;
    if (u->kind == CLNPU_UNIT_MOE) m += (double)c->slots * u->expert_params * c->wb;
    m += u->kv_bytes_per_token * (double)c->w->context * (c->batch / c->r);
    return m + exec_unit_bytes(c, c->gr, c->w, u); /* the executor's scratch */
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

/* Rows per step of one micro-batch of a pipeline replica holding `batch` sequences. */
static void cand_set_batch(cand *c, double batch, size_t m)
{
    c->batch = batch;
    c->tokens = batch * rows_per_seq(c->w) / (double)m;
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
            const clnpu_graph_unit *mtp = mtp_layer(c);
            for (size_t u = 0; u < U; u++) { /* prefix sums */
                const clnpu_graph_unit *x = &c->gr->units[u];
                double tu = unit_time(c, dv, x), mu = unit_mem(c, x);
                if (mtp && x->kind == CLNPU_UNIT_HEAD) /* the MTP module sits with the head it shares */
                    tu += unit_time(c, dv, mtp) + unit_time(c, dv, x), mu += unit_mem(c, mtp) + 2 * x->norm_params * c->wb +
                                                                             2 * (double)c->gr->hidden * (double)c->gr->hidden * c->wb;
                t[u + 1] = t[u] + tu;
                m[u + 1] = m[u] + mu;
            }
        }
        double cap = (double)p->memory_bytes;
        /* the executor's workspaces (scheduler/memory.c) and the expert all-to-all buffers */
        double actv = exec_fixed_bytes(c, c->gr, c->w);
        double comm = c->g > 1 ? 2 * c->tokens / c->g * (double)c->gr->top_k * d * 2 : 0;
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
    bool tbo;
} result;

/* Placement depends only on g and the loads: cached per g for the whole search (every EP width
 * the search tries: divisors of the device count up to the expert slots). */
#define PLACE_CACHE 256
typedef struct place_cache {
    size_t g[PLACE_CACHE], slots[PLACE_CACHE], n;
    double imb[PLACE_CACHE], gap[PLACE_CACHE];
} place_cache;
static _Thread_local place_cache *cache_now;

static size_t redundant_slots(const clnpu_cluster *cl, const clnpu_workload *w)
{
    return w->redundant_experts ? w->redundant_experts : cl->redundant_experts;
}

static void place_experts_now(cand *c, double *out_gap);

/* Expert slots and imbalance for g devices (uniform or histogram loads; worst layer); a
 * measured residual imbalance (workload) replaces the placement's own. */
static void place_experts(cand *c, double *out_gap)
{
    place_experts_now(c, out_gap);
    if (c->w->expert_imbalance > 0) c->imbalance = c->w->expert_imbalance;
}

static void place_experts_now(cand *c, double *out_gap)
{
    for (size_t i = 0; cache_now && i < cache_now->n; i++)
        if (cache_now->g[i] == c->g) {
            c->slots = cache_now->slots[i], c->imbalance = cache_now->imb[i], *out_gap = cache_now->gap[i];
            return;
        }
    const size_t E = c->gr->experts;
    /* the slots of a layer (E plus the redundant ones, EPLB) spread evenly, rounded up */
    c->slots = (E + redundant_slots(c->cl, c->w) + c->g - 1) / c->g;
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
    if (cache_now && cache_now->n < PLACE_CACHE) {
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

/* Output tokens of a step per sequence: decode emits 1 + the accepted MTP draft; prefill counts
 * every prompt token, the prefix-cache hits included (as DeepSeek's published figure does). */
static double out_per_seq(const clnpu_workload *w)
{
    return w->phase == CLNPU_PHASE_PREFILL ? (double)w->context : 1 + w->mtp_accept;
}

/* Two-micro-batch overlap: the workload's choice, else the cluster's; auto tries both. */
static int tbo_choice(const clnpu_cluster *cl, const clnpu_workload *w)
{
    return w->tbo != CLNPU_TBO_DEFAULT ? w->tbo : cl->tbo ? cl->tbo : CLNPU_TBO_OFF;
}

/* One layout (g devices per stage, TP t) at one batch: for each number of micro-batches m, the
 * stage DP on per-micro-batch costs (decode: at most m stages keep the pipeline full); the
 * period is m times the slowest stage, since every micro-batch reads its stage's weights. */
static result evaluate(const clnpu_graph *gr, const clnpu_cluster *cl, const clnpu_workload *w,
                       const clnpu_calibration *cal, size_t g, size_t t, double batch, size_t per_node)
{
    result best = {0};
    const bool prefill = w->phase == CLNPU_PHASE_PREFILL;
    const int tc = tbo_choice(cl, w);
    for (int tbo = tc == CLNPU_TBO_ON; tbo <= (tc != CLNPU_TBO_OFF); tbo++)
    for (size_t m = 1; m <= 64; m *= 2) {
        if (m > 1 && (prefill || (double)m > batch)) break;
        if (tbo && (double)m * 2 > batch * rows_per_seq(w)) break; /* two halves need two rows */
        result r = {0};
        cand c = {gr, cl, w, cal, g, t, g / t, batch, 0, 0, 1, 0, per_node, tbo, 0, NULL, NULL, NULL, NULL};
        cand_set_batch(&c, batch, m);
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
            double latency = prefill ? period : period / out_per_seq(w);
            if (w->slo_ms > 0 && latency * 1e3 > w->slo_ms) continue;
            double tps = batch * out_per_seq(w) / period * dp;
            if (tps > best_tps * (1 + 1e-12)) best_tps = tps, best_k = k;
        }
        size_t k = best_k ? clnpu_stage_dp(gr->count, best_k, stage_cost, stage_mem, c.cap, obj, &c, r.cuts, &value) : 0;
        if (k) {
            double mx = 0, sum = 0;
            for (size_t s = 0; s < k; s++) {
                double ts = stage_cost(r.cuts[s], r.cuts[s + 1], s, &c);
                mx = fmax(mx, ts), sum += ts;
            }
            r.ok = true, r.g = g, r.t = t, r.stages = k, r.batch = batch, r.value = value, r.micro = m, r.tbo = tbo;
            r.dp = cl->count / (g * k);
            r.imbalance = imbalance_of(&c), r.lb_gap = gap, r.slots = c.slots;
            if (!prefill) {
                /* fewer micro-batches than stages leave bubbles: a step takes max(m, k) slots */
                r.period = (double)(m > k ? m : k) * mx * node_sharing(cl, g, k, (double)r.dp, m, per_node, false);
                r.latency = r.period / out_per_seq(w); /* per output token of one sequence */
            } else {
                r.period = sum; /* the prompts through every stage */
                r.latency = sum;
            }
            r.tps = batch * out_per_seq(w) / r.period * (double)r.dp;
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
/* EP widths to try: every divisor of the device count (EP 144 on 18 nodes, 72 on 9: the slot
 * count E + R need not be a power of two) and the powers of two (leaving devices idle when
 * they do not divide), at most max(E + R, devices per node): a wider stage would hold devices
 * without an expert slot, which pipeline replicas use better. Ascending; returns the count. */
static size_t ep_widths(const clnpu_graph *gr, const clnpu_cluster *cl, const clnpu_workload *w, size_t per_node,
                        size_t *out, size_t cap)
{
    const size_t N = cl->count, slots = gr->experts + redundant_slots(cl, w);
    size_t top = slots > per_node ? slots : per_node;
    if (w->ep > top) top = w->ep; /* a pinned width is tried even past the slots */
    size_t n = 0;
    for (size_t g = 1; g <= N && g <= top && n < cap; g++) {
        const bool pow2 = !(g & (g - 1));
        if (N % g == 0 || (pow2 && g <= N / 2)) out[n++] = g;
    }
    return n;
}

/* Best layout for a given batch (sequences per pipeline replica). */
static result search(const clnpu_graph *gr, const clnpu_cluster *cl, const clnpu_workload *w,
                     const clnpu_calibration *cal, double batch, size_t per_node, size_t tp_cap)
{
    result best = {0};
    size_t widths[PLACE_CACHE];
    const size_t nw = ep_widths(gr, cl, w, per_node, widths, PLACE_CACHE);
    for (size_t i = 0; i < nw; i++) {
        const size_t g = widths[i];
        if (w->ep && g != w->ep) continue;
        for (size_t t = 1; t <= g && t <= tp_cap; t *= 2) {
            if (gr->heads % t || g % t || t < w->min_tp) continue;
            result r = evaluate(gr, cl, w, cal, g, t, batch, per_node);
            if (r.ok && w->slo_ms > 0 && r.latency * 1e3 > w->slo_ms) r.ok = false;
            if (getenv("CLNPU_PLAN_DEBUG"))
                fprintf(stderr, "batch %.0f g %zu t %zu: %s k %zu m %zu tbo %d dp %zu period %.4f tps %.1f\n", batch, g, t,
                        r.ok ? "ok" : "--", r.stages, r.micro, r.tbo, r.dp, r.period, r.tps);
            if (better(&r, &best)) best = r;
        }
    }
    return best;
}

/* The parts of units [i, j) on stage group k, the MTP module with the head as in cand_prepare. */
static parts stage_parts(const cand *c, size_t i, size_t j, size_t k)
{
    parts S = {0};
    const clnpu_cluster_device *dv = &c->cl->devices[k * c->g];
    const clnpu_graph_unit *mtp = mtp_layer(c);
    for (size_t u = i; u < j; u++) {
        const clnpu_graph_unit *x = &c->gr->units[u];
        parts P[3];
        size_t n = 1;
        unit_time_of(c, dv, x, &P[0]);
        if (mtp && x->kind == CLNPU_UNIT_HEAD) unit_time_of(c, dv, mtp, &P[1]), unit_time_of(c, dv, x, &P[2]), n = 3;
        for (size_t q = 0; q < n; q++)
            S.attn += P[q].attn, S.moe += P[q].moe, S.comm += P[q].comm, S.other += P[q].other, S.overlap += P[q].overlap,
            S.qkv += P[q].qkv, S.kvb += P[q].kvb, S.tab += P[q].tab, S.perm += P[q].perm;
    }
    /* receiving the stage input */
    S.other += stage_cost(i, j, k, (void *)c) - (c->unit_time[k * (c->gr->count + 1) + j] - c->unit_time[k * (c->gr->count + 1) + i]);
    return S;
}

/* Where the step goes: decode's period is max(m, k) slots of the slowest stage (m of them work,
 * the rest are bubbles); prefill's is every stage in turn. */
static clnpu_plan_breakdown breakdown_of(const cand *c, const result *best, const clnpu_plan *p)
{
    clnpu_plan_breakdown b = {0};
    b.tbo = best->tbo;
    const bool prefill = c->w->phase == CLNPU_PHASE_PREFILL;
    size_t slow = 0;
    double mx = -1;
    for (size_t s = 0; s < best->stages; s++) {
        double ts = stage_cost(best->cuts[s], best->cuts[s + 1], s, (void *)c);
        if (ts > mx) mx = ts, slow = s;
        if (prefill) {
            parts S = stage_parts(c, best->cuts[s], best->cuts[s + 1], s);
            b.attention_s += S.attn, b.moe_s += S.moe, b.comm_s += S.comm, b.other_s += S.other, b.overlap_s += S.overlap;
            b.prefill_qkv_s += S.qkv, b.prefix_kvb_s += S.kvb, b.table_gemm_s += S.tab, b.permute_s += S.perm;
        }
    }
    const double m = (double)best->micro, k = (double)best->stages;
    if (!prefill) {
        parts S = stage_parts(c, best->cuts[slow], best->cuts[slow + 1], slow);
        b.attention_s = m * S.attn, b.moe_s = m * S.moe, b.comm_s = m * S.comm, b.other_s = m * S.other;
        b.overlap_s = m * S.overlap;
        b.prefill_qkv_s = m * S.qkv, b.prefix_kvb_s = m * S.kvb, b.table_gemm_s = m * S.tab, b.permute_s = m * S.perm;
        b.bubble_s = (fmax(m, k) - m) * mx;
    }
    /* what is left (memory shared by groups of one node) */
    b.other_s += best->period - (b.attention_s + b.moe_s + b.comm_s + b.other_s + b.bubble_s - b.overlap_s);
    b.tokens_per_step = c->tokens * m * (double)best->dp;
    b.output_tokens_per_step = best->batch * out_per_seq(c->w) * (double)best->dp;
    (void)p;
    return b;
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

clnpu_status clnpu_plan_create(const clnpu_model_config *cfg, const clnpu_cluster *cl_in, const clnpu_workload *w_in,
                               const clnpu_calibration *cal_in, clnpu_plan **out)
{
    *out = NULL;
    /* the phase's own kernels and overlap where the cluster names them */
    clnpu_cluster cl_phase;
    const clnpu_cluster *cl = cl_in;
    if (!w_in || (w_in->phase != CLNPU_PHASE_DECODE && w_in->phase != CLNPU_PHASE_PREFILL))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: the workload's phase is decode or prefill");
    if (cl_in && cl_in->phase[w_in->phase].set) {
        const struct clnpu_cluster_phase *P = &cl_in->phase[w_in->phase];
        cl_phase = *cl_in;
        cl_phase.ep_dispatch = P->ep_dispatch, cl_phase.tbo = P->tbo, cl_phase.rates = P->rates;
        snprintf(cl_phase.rates_source, sizeof cl_phase.rates_source, "%s", P->rates_source);
        cl = &cl_phase;
    }
    /* Searching the batch for throughput alone ends in absurd per-token latencies: without an
     * SLO, decode plans aim at an interactive 100 ms per token (documented in docs/scheduler.md). */
    clnpu_workload wcopy = *w_in;
    if (wcopy.phase == CLNPU_PHASE_DECODE && !wcopy.batch && wcopy.slo_ms <= 0) wcopy.slo_ms = CLNPU_PLAN_DEFAULT_SLO_MS;
    const clnpu_workload *w = &wcopy;
    *out = NULL;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (!cl || !cl->count) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: empty cluster");
    if (cl->count > CLNPU_PLAN_MAX_DEVICES)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: %s has %zu devices, more than the planner's limit of %d",
                          cl->name, cl->count, CLNPU_PLAN_MAX_DEVICES);
    if (!(w_in->prefix_hit >= 0 && w_in->prefix_hit < 1) || !(w_in->mtp_accept >= 0 && w_in->mtp_accept <= 1) ||
        !(w_in->expert_imbalance == 0 || (w_in->expert_imbalance >= 1 && isfinite(w_in->expert_imbalance))))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: prefix_hit must be in [0, 1), mtp_accept in [0, 1], "
                          "expert_imbalance 0 (from the placement) or >= 1");
    if (w->weights != CLNPU_DTYPE_BF16 && w->weights != CLNPU_DTYPE_FP8_E4M3 && w->weights != CLNPU_DTYPE_I8)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: weights must be bf16, fp8 or int8");
    if (!w->context) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: context must be positive");
    clnpu_calibration cal = cal_in ? *cal_in : clnpu_calibration_default();
    if (redundant_slots(cl, w) > cfg->n_routed_experts)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan: %zu redundant expert slots for %zu experts (at most as many "
                          "as there are experts)", redundant_slots(cl, w), (size_t)cfg->n_routed_experts);
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
    cand c = {&p->graph, cl, w, &cal, best.g, best.t, best.g / best.t, best.batch, 0, 0, 1, 0, per_node, best.tbo, 0,
              NULL, NULL, NULL, NULL};
    cand_set_batch(&c, best.batch, best.micro);
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
            double ex = exec_unit_bytes(&c, &p->graph, w, x);
            kv += kvu, scratch += ex, wts += unit_mem(&c, x) - kvu - ex;
        }
        const double d = (double)p->graph.hidden, capb = c.cap[s];
        ps->mem[0] = wts, ps->mem[1] = kv;
        ps->mem[2] = exec_fixed_bytes(&c, &p->graph, w) + scratch;
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
    p->breakdown = breakdown_of(&c, &best, p);
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

clnpu_plan_breakdown clnpu_plan_get_breakdown(const clnpu_plan *p)
{
    return p->breakdown;
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
