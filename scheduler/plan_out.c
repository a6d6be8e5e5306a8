/* A plan for people (report, SVG) and for the executor (YAML). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "../backend/error.h"
#include "../backend/yaml_out.h"
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

clnpu_status clnpu_plan_write_yaml(const clnpu_plan *p, FILE *f)
{
    clnpu_yaml *y = clnpu_yaml_begin(f);
    if (!y) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    const clnpu_plan_summary *s = &p->sum;
    clnpu_yaml_map_begin(y);
    clnpu_yaml_kv_str(y, "format", "clnpu-plan-1");
    clnpu_yaml_kv_str(y, "model", p->cfg.model_type);
    clnpu_yaml_kv_int(y, "layers", (long long)p->cfg.num_hidden_layers);
    clnpu_yaml_kv_str(y, "cluster", p->cluster_name);
    clnpu_yaml_kv_str(y, "phase", p->work.phase == CLNPU_PHASE_DECODE ? "decode" : "prefill");
    clnpu_yaml_kv_str(y, "weights", clnpu_dtype_name(p->work.weights));
    clnpu_yaml_kv_int(y, "batch", (long long)s->batch);
    clnpu_yaml_kv_int(y, "context", (long long)p->work.context);
    clnpu_yaml_key(y, "parallel");
    clnpu_yaml_map_begin(y);
    clnpu_yaml_kv_int(y, "tp", (long long)s->tp);
    clnpu_yaml_kv_int(y, "pp", (long long)s->pp);
    clnpu_yaml_kv_int(y, "ep", (long long)s->ep);
    clnpu_yaml_kv_int(y, "dp", (long long)s->dp);
    clnpu_yaml_kv_int(y, "micro_batches", (long long)s->micro_batches);
    /* whole copies of the stages below, replica k on devices k * (devices of one) and up */
    clnpu_yaml_kv_int(y, "pipeline_replicas", (long long)(s->dp / (p->g / s->tp)));
    clnpu_yaml_map_end(y);
    clnpu_yaml_key(y, "predicted");
    clnpu_yaml_map_begin(y);
    clnpu_yaml_kv_num(y, "step_s", s->step_s);
    clnpu_yaml_kv_num(y, "token_latency_s", s->token_latency_s);
    clnpu_yaml_kv_num(y, "tokens_per_s", s->tokens_per_s);
    clnpu_yaml_kv_num(y, "tokens_per_s_per_device", s->tokens_per_s_per_device);
    clnpu_yaml_kv_num(y, "comm_bytes_per_step", s->comm_bytes_per_step);
    clnpu_yaml_kv_num(y, "expert_imbalance", s->expert_imbalance);
    clnpu_yaml_kv_num(y, "expert_lb_gap", s->expert_lb_gap);
    clnpu_yaml_map_end(y);
    clnpu_yaml_key(y, "stages");
    clnpu_yaml_seq_begin(y);
    for (size_t i = 0; i < p->nstages; i++) {
        const plan_stage *st = &p->stages[i];
        clnpu_yaml_map_begin(y);
        clnpu_yaml_kv_int(y, "stage", (long long)i);
        clnpu_yaml_kv_str(y, "profile", p->stage_profiles[i]);
        clnpu_yaml_key(y, "devices");
        clnpu_yaml_flow_seq_begin(y);
        for (size_t d = 0; d < p->g; d++) clnpu_yaml_int(y, (long long)(st->device_begin + d));
        clnpu_yaml_seq_end(y);
        /* layers as decoder indices; the embedding / head flags say where those go */
        clnpu_yaml_kv_bool(y, "embedding", p->graph.units[st->unit_begin].kind == CLNPU_UNIT_EMBED);
        clnpu_yaml_kv_bool(y, "head", p->graph.units[st->unit_end - 1].kind == CLNPU_UNIT_HEAD);
        clnpu_yaml_key(y, "layers");
        clnpu_yaml_flow_seq_begin(y);
        for (size_t u = st->unit_begin; u < st->unit_end; u++)
            if (p->graph.units[u].layer >= 0) clnpu_yaml_int(y, p->graph.units[u].layer);
        clnpu_yaml_seq_end(y);
        clnpu_yaml_kv_num(y, "time_s", st->time_s);
        clnpu_yaml_key(y, "memory_per_device");
        clnpu_yaml_map_begin(y);
        const char *names[6] = {"weights", "kv_cache", "activations", "communication", "reserve", "capacity"};
        for (int k = 0; k < 6; k++) clnpu_yaml_kv_num(y, names[k], st->mem[k]);
        clnpu_yaml_map_end(y);
        clnpu_yaml_map_end(y);
    }
    clnpu_yaml_seq_end(y);
    /* experts: every MoE layer uses this placement (device index within its stage's group) */
    clnpu_yaml_key(y, "experts");
    clnpu_yaml_seq_begin(y);
    for (size_t d = 0; d < p->g && p->copy_expert; d++) {
        clnpu_yaml_flow_seq_begin(y);
        for (size_t i = 0; i < p->ncopies; i++)
            if (p->copy_device[i] == d) clnpu_yaml_int(y, (long long)p->copy_expert[i]);
        clnpu_yaml_seq_end(y);
    }
    clnpu_yaml_seq_end(y);
    clnpu_yaml_map_end(y);
    return clnpu_yaml_end(y) ? CLNPU_OK : clnpu_fail(CLNPU_ERR_IO, "writing the plan failed");
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
