/* Planner inputs besides the cluster: measured calibration (clnpu bench --json lines, cJSON)
 * and expert load histograms (YAML). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "../common/error.h"
#include "../common/yaml_in.h"
#include "clnpu/plan.h"

/* The best of each kind of measurement in a `clnpu bench --json` log. */
typedef struct cal_best {
    double gemm_c, gemm_m;           /* large-M GEMM FLOP/s, M = 1 stream bytes/s */
    double mla_b, mla_f;             /* MLA decode: bandwidth at the longest context, FLOP/s */
    double mla_ctx;
    double attn_f;                   /* prefill attention FLOP/s */
    double moe_f, moe_b, moe_hi, moe_lo; /* grouped GEMM: FLOP/s at the most tokens, stream at the fewest */
    double a2a_b, a2a_lat;           /* dispatch / combine bytes/s and latency */
    size_t n;
} cal_best;

static double jnum(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) && isfinite(v->valuedouble) && v->valuedouble >= 0 ? v->valuedouble : -1;
}

static void cal_take(const cJSON *o, cal_best *b)
{
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(o, "op");
    if (!cJSON_IsString(op)) return;
    const char *name = op->valuestring;
    const double gf = jnum(o, "gflops") * 1e9, gb = jnum(o, "gbps") * 1e9;
    if (!strcmp(name, "gemm") && jnum(o, "m") >= 0 && gf >= 0 && gb >= 0) {
        /* the best large-M rate is the compute efficiency, the best M = 1 stream the memory one */
        if (jnum(o, "m") >= 256) b->gemm_c = fmax(b->gemm_c, gf);
        if (jnum(o, "m") == 1) b->gemm_m = fmax(b->gemm_m, gb);
        b->n++;
    } else if (!strcmp(name, "mla") && gf >= 0 && gb >= 0) {
        /* the latent cache streams at the longest context; the FLOP rate is the best seen */
        const double L = jnum(o, "context");
        if (L > b->mla_ctx || (L == b->mla_ctx && gb > b->mla_b)) b->mla_ctx = L, b->mla_b = gb;
        b->mla_f = fmax(b->mla_f, gf);
        b->n++;
    } else if (!strcmp(name, "attention") && gf >= 0) {
        b->attn_f = fmax(b->attn_f, gf);
        b->n++;
    } else if (!strcmp(name, "moe") && gf >= 0 && gb >= 0 && jnum(o, "tokens") > 0) {
        const double T = jnum(o, "tokens");
        if (T > b->moe_hi) b->moe_hi = T, b->moe_f = gf;
        if (b->moe_lo == 0 || T < b->moe_lo) b->moe_lo = T, b->moe_b = gb;
        b->n++;
    } else if (!strcmp(name, "alltoall") && gb > 0) {
        /* from DeepEP's or nccl-tests' output, converted: {"op":"alltoall","gbps":..,"latency_us":..} */
        b->a2a_b = fmax(b->a2a_b, gb);
        if (jnum(o, "latency_us") >= 0) b->a2a_lat = b->a2a_lat > 0 ? fmin(b->a2a_lat, jnum(o, "latency_us") * 1e-6) : jnum(o, "latency_us") * 1e-6;
        b->n++;
    }
}

clnpu_status clnpu_calibration_read(const char *path, const clnpu_profile *p, clnpu_calibration *cal)
{
    FILE *f = fopen(path, "rb");
    if (!f) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char line[4096];
    cal_best b = {0};
    size_t lineno = 0;
    clnpu_status st = CLNPU_OK;
    while (!st && fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] != '{') continue; /* the text table lines of a mixed log are skipped */
        cJSON *o = cJSON_Parse(line);
        if (!o) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: not a JSON object", path, lineno);
            break;
        }
        cal_take(o, &b);
        cJSON_Delete(o);
    }
    fclose(f);
    if (st) return st;
    if (!b.n)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: no gemm, mla, attention, moe or alltoall measurements (expected clnpu "
                          "bench --json output)", path);
    if (b.gemm_c > 0 && p->peak[CLNPU_PEAK_FP32] > 0) cal->compute_eff = fmin(1, b.gemm_c / p->peak[CLNPU_PEAK_FP32]);
    if (b.gemm_m > 0 && p->memory_bandwidth > 0) cal->memory_eff = fmin(1.5, b.gemm_m / p->memory_bandwidth);
    /* kernel rates measured directly replace peak x efficiency for their kernels */
    if (b.mla_b > 0) cal->rates.attn_bandwidth = b.mla_b;
    if (b.attn_f > 0 || b.mla_f > 0) cal->rates.attn_flops = fmax(b.attn_f, b.mla_f);
    if (b.moe_f > 0) cal->rates.gemm_flops = fmax(b.moe_f, b.gemm_c);
    if (b.moe_b > 0) cal->rates.stream_bandwidth = b.moe_b;
    if (b.a2a_b > 0) cal->rates.alltoall_bandwidth = b.a2a_b;
    if (b.a2a_lat > 0) cal->rates.alltoall_latency_s = b.a2a_lat;
    return CLNPU_OK;
}

clnpu_status clnpu_expert_load_read(const char *path, const clnpu_graph *g, double **out, size_t *out_layers)
{
    *out = NULL, *out_layers = 0;
    size_t moe = 0;
    for (size_t u = 0; u < g->count; u++) moe += g->units[u].kind == CLNPU_UNIT_MOE;
    yaml_document_t doc;
    clnpu_status st = clnpu_yaml_load_file(path, &doc);
    if (st) return st;
    double *loads = calloc(moe * g->experts, sizeof *loads);
    bool *set = calloc(moe, sizeof *set);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!loads || !set) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    else if (!root || root->type != YAML_MAPPING_NODE) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: expected a mapping", path);
    /* first MoE layer index, to map layer numbers to rows */
    size_t first = 0;
    for (size_t u = 0; u < g->count; u++)
        if (g->units[u].kind == CLNPU_UNIT_MOE) { first = (size_t)g->units[u].layer; break; }
    for (yaml_node_pair_t *p = st ? NULL : root->data.mapping.pairs.start; !st && p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key), *v = yaml_document_get_node(&doc, p->value);
        const char *key = k->type == YAML_SCALAR_NODE ? (const char *)k->data.scalar.value : "";
        bool is_default = !strcmp(key, "default");
        if (!is_default && strcmp(key, "layers")) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: unknown key '%s' (layers, default)", path, k->start_mark.line + 1, key);
            break;
        }
        /* default: one list; layers: {L: list} */
        size_t nlists = is_default ? 1 : (v->type == YAML_MAPPING_NODE ? (size_t)(v->data.mapping.pairs.top - v->data.mapping.pairs.start) : 0);
        for (size_t li = 0; !st && li < nlists; li++) {
            yaml_node_t *list = v;
            long layer = -1;
            if (!is_default) {
                yaml_node_pair_t *lp = v->data.mapping.pairs.start + li;
                yaml_node_t *lk = yaml_document_get_node(&doc, lp->key);
                layer = lk->type == YAML_SCALAR_NODE ? strtol((const char *)lk->data.scalar.value, NULL, 10) : -1;
                list = yaml_document_get_node(&doc, lp->value);
                if (layer < (long)first || (size_t)layer >= first + moe) {
                    st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: layer %ld is not a MoE layer (%zu..%zu)", path,
                                    lk->start_mark.line + 1, layer, first, first + moe - 1);
                    break;
                }
            }
            if (list->type != YAML_SEQUENCE_NODE ||
                (size_t)(list->data.sequence.items.top - list->data.sequence.items.start) != g->experts) {
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: a load list needs %zu numbers", path, list->start_mark.line + 1,
                                g->experts);
                break;
            }
            for (size_t row = 0; row < moe && !st; row++) {
                if (!is_default && row != (size_t)layer - first) continue;
                if (is_default && set[row]) continue;
                for (size_t e = 0; e < g->experts && !st; e++) {
                    yaml_node_t *x = yaml_document_get_node(&doc, list->data.sequence.items.start[e]);
                    char *end;
                    double w = x->type == YAML_SCALAR_NODE ? strtod((const char *)x->data.scalar.value, &end) : -1;
                    if (x->type != YAML_SCALAR_NODE || *end || !(w >= 0))
                        st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: loads must be non-negative numbers", path, x->start_mark.line + 1);
                    else loads[row * g->experts + e] = w;
                }
                if (!is_default) set[row] = true;
            }
        }
    }
    for (size_t row = 0; !st && row < moe; row++) {
        double sum = 0;
        for (size_t e = 0; e < g->experts; e++) sum += loads[row * g->experts + e];
        if (sum == 0) /* not given: uniform */
            for (size_t e = 0; e < g->experts; e++) loads[row * g->experts + e] = 1;
    }
    yaml_document_delete(&doc);
    free(set);
    if (st) {
        free(loads);
        return st;
    }
    *out = loads, *out_layers = moe;
    return CLNPU_OK;
}
