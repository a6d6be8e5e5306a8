/* A plan for people (report, SVG) and for the executor (YAML). */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../schema/plan_schema.h"
#include "plan_internal.h"

static const char *unit_name(const clnpu_plan *p, size_t u, char *buf, size_t cap)
{
    const clnpu_graph_unit *x = &p->graph.units[u];
    if (x->kind == CLNPU_UNIT_EMBED) return "embed";
    if (x->kind == CLNPU_UNIT_HEAD) return "head";
    snprintf(buf, cap, "L%d", x->layer);
    return buf;
}

static void gb(char *out, size_t cap, double bytes)
{
    snprintf(out, cap, bytes >= 1e9 ? "%.1f GB" : "%.1f MB", bytes >= 1e9 ? bytes / 1e9 : bytes / 1e6);
}

void clnpu_plan_print(const clnpu_plan *p, FILE *f)
{
    const clnpu_plan_summary *s = &p->sum;
    const bool dec = p->work.phase == CLNPU_PHASE_DECODE;
    fprintf(f, "plan: %s (%.1f B params, %.1f B active) on %s, %zu devices\n", p->cfg.model_type,
            p->graph.total_params / 1e9, p->graph.active_params / 1e9, p->cluster_name, p->devices_total);
    fprintf(f, "workload: %s, batch %zu x context %zu, %s weights", dec ? "decode" : "prefill", s->batch,
            p->work.context, clnpu_dtype_name(p->work.weights));
    if (p->work.slo_ms > 0) fprintf(f, ", SLO %.1f ms%s", p->work.slo_ms, p->work.batch ? "" : " (batch searched under it)");
    fprintf(f, "\n");
    fprintf(f, "layout: TP %zu (inside a node), PP %zu stages x %zu micro-batches, EP %zu (devices per stage), "
            "DP %zu (%zu attention replicas per stage x %zu pipeline replicas); %zu of %zu devices used\n",
            s->tp, s->pp, s->micro_batches, s->ep, s->dp, p->g / s->tp, s->dp / (p->g / s->tp), s->devices_used,
            p->devices_total);
    fprintf(f, "predicted: step %.3f ms, %s %.3f ms, %.1f tokens/s (%.2f per device)\n", s->step_s * 1e3,
            dec ? "per-token latency" : "prompt latency", s->token_latency_s * 1e3, s->tokens_per_s,
            s->tokens_per_s_per_device);
    if (p->breakdown.tbo) fprintf(f, "overlap: two micro-batches per step, each one's expert exchange beside the other's compute\n");
    char c[32];
    gb(c, sizeof c, s->comm_bytes_per_step);
    fprintf(f, "communication: %s per step; expert placement: %zu slots per device, imbalance max/mean %.3f, "
            "%.1f %% above the lower bound\n", c, p->slots_per_device, s->expert_imbalance, 100 * s->expert_lb_gap);
    fprintf(f, "\n%-6s %-10s %-16s %9s %9s %9s %9s %9s %9s %6s\n", "stage", "devices", "units", "ms/micro",
            "weights", "KV", "activ.", "comm", "capacity", "used");
    for (size_t i = 0; i < p->nstages; i++) {
        const plan_stage *st = &p->stages[i];
        char a[16], b[16], units[40], w[16], kv[16], ac[16], cm[16], cp[16];
        snprintf(units, sizeof units, "%s..%s", unit_name(p, st->unit_begin, a, sizeof a),
                 unit_name(p, st->unit_end - 1, b, sizeof b));
        char devs[32];
        snprintf(devs, sizeof devs, "%zu-%zu", st->device_begin, st->device_begin + p->g - 1);
        gb(w, sizeof w, st->mem[0]), gb(kv, sizeof kv, st->mem[1]), gb(ac, sizeof ac, st->mem[2]);
        gb(cm, sizeof cm, st->mem[3]), gb(cp, sizeof cp, st->mem[5]);
        double used = (st->mem[0] + st->mem[1] + st->mem[2] + st->mem[3] + st->mem[4]) / st->mem[5];
        fprintf(f, "%-6zu %-10s %-16s %9.3f %9s %9s %9s %9s %9s %5.1f%%\n", i, devs, units, st->time_s * 1e3, w, kv,
                ac, cm, cp, 100 * used);
    }
    fprintf(f, "(per device; the reserve is the rest of 'used'. Plan time %.1f ms.)\n", s->plan_time_s * 1e3);
}

/* The plan as a plan-file document (schema/plan_schema.h): what `clnpu plan -o` writes and what
 * clnpu_plan_stage_specs hands the executor without a file. */
static clnpu_status plan_doc(const clnpu_plan *p, clnpu_plan_doc *d)
{
    const clnpu_plan_summary *s = &p->sum;
    clnpu_plan_doc_init(d);
    size_t *cnt = NULL;
    const size_t lists = p->copy_expert ? p->g : 0;
    if (lists && !(cnt = calloc(lists, sizeof *cnt))) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t i = 0; i < p->ncopies && lists; i++) cnt[p->copy_device[i]]++;
    clnpu_status st = clnpu_plan_doc_alloc(d, p->nstages, p->g, lists, cnt);
    free(cnt);
    if (st) return st;
    snprintf(d->model, sizeof d->model, "%s", p->cfg.model_type);
    d->layers = p->cfg.num_hidden_layers, d->hidden_size = p->cfg.hidden_size;
    d->routed_experts = p->cfg.n_routed_experts;
    snprintf(d->cluster, sizeof d->cluster, "%s", p->cluster_name);
    d->prefill = p->work.phase == CLNPU_PHASE_PREFILL;
    d->weights = p->work.weights, d->latent_cache = p->work.latent_cache;
    d->batch = s->batch, d->context = p->work.context;
    /* the batch is the whole plan's; each pipeline replica runs its share */
    const size_t prep = s->dp / (p->g / s->tp) ? s->dp / (p->g / s->tp) : 1;
    d->max_tokens = plan_exec_max_tokens(&p->work, p->g / s->tp, (double)s->batch / (double)prep);
    d->tp = s->tp, d->pp = s->pp, d->ep = s->ep, d->dp = s->dp, d->micro_batches = s->micro_batches;
    /* whole copies of the stages, replica k on devices k * (devices of one) and up */
    d->pipeline_replicas = s->dp / (p->g / s->tp);
    const double pred[CLNPU_PLAN_PREDICTED] = {s->step_s, s->token_latency_s, s->tokens_per_s,
                                               s->tokens_per_s_per_device, s->comm_bytes_per_step,
                                               s->expert_imbalance, s->expert_lb_gap};
    memcpy(d->predicted, pred, sizeof pred);
    for (size_t i = 0; i < p->nstages; i++) {
        const plan_stage *ps = &p->stages[i];
        clnpu_plan_doc_stage *ds = &d->stages[i];
        snprintf(ds->profile, sizeof ds->profile, "%s", p->stage_profiles[i]);
        for (size_t j = 0; j < p->g; j++) ds->devices[j] = ps->device_begin + j;
        ds->embedding = p->graph.units[ps->unit_begin].kind == CLNPU_UNIT_EMBED;
        ds->head = p->graph.units[ps->unit_end - 1].kind == CLNPU_UNIT_HEAD;
        ds->layer_begin = SIZE_MAX, ds->layer_end = 0;
        for (size_t u = ps->unit_begin; u < ps->unit_end; u++) {
            const int l = p->graph.units[u].layer;
            if (l < 0) continue;
            if ((size_t)l < ds->layer_begin) ds->layer_begin = (size_t)l;
            if ((size_t)l + 1 > ds->layer_end) ds->layer_end = (size_t)l + 1;
        }
        if (ds->layer_begin == SIZE_MAX) /* no decoder layer: empty, where the previous stage ends */
            ds->layer_begin = ds->layer_end = i ? d->stages[i - 1].layer_end : 0;
        ds->time_s = ps->time_s;
        memcpy(ds->memory, ps->mem, sizeof ds->memory);
    }
    size_t *fill = lists ? calloc(lists, sizeof *fill) : NULL;
    if (lists && !fill) {
        clnpu_plan_doc_free(d);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    for (size_t i = 0; i < p->ncopies && lists; i++) {
        const size_t dev = p->copy_device[i];
        d->experts[dev][fill[dev]++] = p->copy_expert[i];
    }
    free(fill);
    st = clnpu_plan_doc_validate(d, "the plan");
    if (st) {
        clnpu_plan_doc_free(d);
        return clnpu_fail_context(st, "the planner's plan does not pass the plan schema");
    }
    return CLNPU_OK;
}

clnpu_status clnpu_plan_write_yaml(const clnpu_plan *p, FILE *f)
{
    clnpu_plan_doc d;
    clnpu_status st = plan_doc(p, &d);
    if (st) return st;
    st = clnpu_plan_doc_write(&d, f);
    clnpu_plan_doc_free(&d);
    return st;
}

clnpu_status clnpu_plan_stage_specs(const clnpu_plan *p, const clnpu_model_config *cfg, clnpu_stage_spec **out_specs,
                                    size_t *out_count, clnpu_plan_layout *out_layout)
{
    *out_specs = NULL, *out_count = 0;
    clnpu_plan_doc d;
    clnpu_status st = plan_doc(p, &d);
    if (st) return st;
    st = clnpu_plan_doc_check_model(&d, cfg, "the plan");
    if (!st) st = clnpu_plan_doc_check_profiles(&d, NULL, "the plan");
    if (!st) st = clnpu_plan_doc_specs(&d, "the plan", out_specs, out_count, out_layout);
    clnpu_plan_doc_free(&d);
    return st;
}

/* Devices (rows, grouped by stage) x units (columns), experts per device, memory bars. */
clnpu_status clnpu_plan_write_svg(const clnpu_plan *p, FILE *f)
{
    const size_t U = p->graph.count, rows = p->nstages;
    const int cw = 12, rh = 28, left = 150, top = 60, barw = 220;
    const int width = left + (int)U * cw + barw + 60, height = top + (int)rows * rh + 80;
    fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' font-family='sans-serif' "
            "font-size='11'>\n<rect width='100%%' height='100%%' fill='white'/>\n", width, height);
    fprintf(f, "<text x='10' y='20' font-size='14'>%s on %s: TP %zu, PP %zu, EP %zu, DP %zu; %.1f tokens/s</text>\n",
            p->cfg.model_type, p->cluster_name, p->sum.tp, p->sum.pp, p->sum.ep, p->sum.dp, p->sum.tokens_per_s);
    fprintf(f, "<text x='%d' y='%d'>units: embedding, layers 0..%zu, head</text>\n", left, top - 10, U - 3);
    fprintf(f, "<text x='%d' y='%d'>memory per device (weights, KV, activations, comm, reserve)</text>\n",
            left + (int)U * cw + 20, top - 10);
    const char *colors[5] = {"#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#bab0ac"};
    for (size_t s = 0; s < rows; s++) {
        const plan_stage *st = &p->stages[s];
        int y = top + (int)s * rh;
        fprintf(f, "<text x='10' y='%d'>stage %zu: devices %zu-%zu</text>\n", y + 17, s, st->device_begin,
                st->device_begin + p->g - 1);
        for (size_t u = 0; u < U; u++) {
            const bool on = u >= st->unit_begin && u < st->unit_end;
            const clnpu_graph_unit *x = &p->graph.units[u];
            const char *fill = !on ? "#f2f2f2" : x->kind == CLNPU_UNIT_MOE ? "#76b7b2" : "#edc948";
            fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='%s' stroke='white'/>\n", left + (int)u * cw,
                    y, cw, rh - 4, fill);
        }
        double x0 = left + (double)U * cw + 20;
        for (int k = 0; k < 5; k++) {
            double wdt = barw * st->mem[k] / st->mem[5];
            fprintf(f, "<rect x='%.1f' y='%d' width='%.1f' height='%d' fill='%s'/>\n", x0, y + 4, wdt, rh - 12,
                    colors[k]);
            x0 += wdt;
        }
        fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='black'/>\n",
                left + (int)U * cw + 20, y + 4, barw, rh - 12);
    }
    int y = top + (int)rows * rh + 20;
    fprintf(f, "<text x='10' y='%d'>experts per device in every MoE layer: %zu slots (%zu copies of %zu experts), "
            "imbalance %.3f</text>\n", y, p->slots_per_device, p->ncopies, p->graph.experts, p->sum.expert_imbalance);
    fprintf(f, "</svg>\n");
    return ferror(f) ? clnpu_fail(CLNPU_ERR_IO, "writing the SVG failed") : CLNPU_OK;
}
