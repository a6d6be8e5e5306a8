/* Validation against published deployments: plan every row of a YAML file (model, cluster,
 * workload under the published conditions) and print published vs predicted vs error. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "../common/error.h"
#include "../common/yaml_in.h"
#include "clnpu/plan.h"

typedef struct row {
    char name[128], model[512], cluster[512], metric[48];
    clnpu_workload w;
    double published;
    bool known_gap;   /* the model misses this row for a stated reason: guarded by max_error */
    double max_error; /* |error| this row must stay under (the file's tolerance unless known_gap) */
} row;

static clnpu_status row_num(const char *path, yaml_node_t *n, const char *key, double lo, double hi, double *out)
{
    const char *s = clnpu_yaml_scalar(n);
    char *end;
    double v = s ? strtod(s, &end) : NAN;
    if (!s || end == s || *end || !(v >= lo && v <= hi))
        return clnpu_yaml_fail_at(path, n, "'%s' must be a number from %g to %g", key, lo, hi);
    *out = v;
    return CLNPU_OK;
}

static clnpu_status row_parse(const char *path, const char *base, yaml_document_t *doc, yaml_node_t *n, row *r)
{
    static const char *const keys[] = {"name", "source", "model", "cluster", "phase", "weights", "context", "batch",
                                       "slo_ms", "prefix_hit", "mtp_accept", "expert_imbalance", "tbo", "kv_transfer",
                                       "metric", "published", "notes", "known_gap", "max_error", "latent_cache", "ep", "tp",
                                       "expert_imbalance_at", NULL};
    if (n->type != YAML_MAPPING_NODE) return clnpu_yaml_fail_at(path, n, "a row must be a mapping");
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        const char *ks = clnpu_yaml_scalar(k);
        bool ok = false;
        for (size_t i = 0; ks && keys[i] && !ok; i++) ok = !strcmp(ks, keys[i]);
        if (!ok) return clnpu_yaml_fail_at(path, k, "unknown key '%s' in a row", ks ? ks : "?");
    }
    memset(r, 0, sizeof *r);
    r->w = clnpu_workload_default();
    const char *s;
    if (!(s = clnpu_yaml_value(doc, n, "name"))) return clnpu_yaml_fail_at(path, n, "a row needs a name");
    snprintf(r->name, sizeof r->name, "%s", s);
    if (!(s = clnpu_yaml_value(doc, n, "model"))) return clnpu_yaml_fail_at(path, n, "row '%s' needs a model", r->name);
    snprintf(r->model, sizeof r->model, "%s/%s", base, s);
    if (!(s = clnpu_yaml_value(doc, n, "cluster"))) return clnpu_yaml_fail_at(path, n, "row '%s' needs a cluster", r->name);
    snprintf(r->cluster, sizeof r->cluster, "%s/%s", base, s);
    if (!clnpu_yaml_value(doc, n, "source")) return clnpu_yaml_fail_at(path, n, "row '%s' needs a source", r->name);
    s = clnpu_yaml_value(doc, n, "metric");
    snprintf(r->metric, sizeof r->metric, "%s", s ? s : "tokens_per_s_per_node");
    if (strcmp(r->metric, "tokens_per_s_per_node") && strcmp(r->metric, "tokens_per_s_per_device"))
        return clnpu_yaml_fail_at(path, n, "row '%s': metric is tokens_per_s_per_node or tokens_per_s_per_device", r->name);
    if ((s = clnpu_yaml_value(doc, n, "phase"))) {
        if (!strcmp(s, "prefill")) r->w.phase = CLNPU_PHASE_PREFILL;
        else if (strcmp(s, "decode")) return clnpu_yaml_fail_at(path, n, "row '%s': phase is decode or prefill", r->name);
    }
    if ((s = clnpu_yaml_value(doc, n, "weights"))) {
        if (!strcmp(s, "fp8")) r->w.weights = CLNPU_DTYPE_FP8_E4M3;
        else if (!strcmp(s, "int8")) r->w.weights = CLNPU_DTYPE_I8;
        else if (strcmp(s, "bf16")) return clnpu_yaml_fail_at(path, n, "row '%s': weights bf16, fp8 or int8", r->name);
    }
    if ((s = clnpu_yaml_value(doc, n, "tbo"))) {
        if (!strcmp(s, "on")) r->w.tbo = CLNPU_TBO_ON;
        else if (!strcmp(s, "off")) r->w.tbo = CLNPU_TBO_OFF;
        else if (!strcmp(s, "auto")) r->w.tbo = CLNPU_TBO_AUTO;
        else return clnpu_yaml_fail_at(path, n, "row '%s': tbo is auto, on or off", r->name);
    }
    if ((s = clnpu_yaml_value(doc, n, "kv_transfer"))) r->w.kv_transfer = !strcmp(s, "true");
    if ((s = clnpu_yaml_value(doc, n, "latent_cache"))) {
        if (!strcmp(s, "bf16")) r->w.latent_cache = CLNPU_DTYPE_BF16;
        else if (strcmp(s, "f32")) return clnpu_yaml_fail_at(path, n, "row '%s': latent_cache is f32 or bf16", r->name);
    }
    double v = 0;
    yaml_node_t *x;
    clnpu_status st = CLNPU_OK;
    if (!st && (x = clnpu_yaml_get(doc, n, "context")) && !(st = row_num(path, x, "context", 1, 1 << 24, &v))) r->w.context = (size_t)v;
    if (!st && (x = clnpu_yaml_get(doc, n, "batch")) && !(st = row_num(path, x, "batch", 0, 1 << 24, &v))) r->w.batch = (size_t)v;
    if (!st && (x = clnpu_yaml_get(doc, n, "ep")) && !(st = row_num(path, x, "ep", 1, CLNPU_PLAN_MAX_DEVICES, &v))) r->w.ep = (size_t)v;
    /* a published attention TP width (DP attention: 1) pins the tensor-parallel width too */
    if (!st && (x = clnpu_yaml_get(doc, n, "tp")) && !(st = row_num(path, x, "tp", 1, 1024, &v))) r->w.min_tp = r->w.max_tp = (size_t)v;
    if (!st && (x = clnpu_yaml_get(doc, n, "slo_ms"))) st = row_num(path, x, "slo_ms", 1e-6, 1e9, &r->w.slo_ms);
    if (!st && (x = clnpu_yaml_get(doc, n, "prefix_hit"))) st = row_num(path, x, "prefix_hit", 0, 0.999, &r->w.prefix_hit);
    if (!st && (x = clnpu_yaml_get(doc, n, "mtp_accept"))) st = row_num(path, x, "mtp_accept", 0, 1, &r->w.mtp_accept);
    if (!st && (x = clnpu_yaml_get(doc, n, "expert_imbalance")))
        st = row_num(path, x, "expert_imbalance", 1, 1e3, &r->w.expert_imbalance);
    /* where that imbalance was measured: [EP width, slots per device, rows per device per exchange] */
    if (!st && (x = clnpu_yaml_get(doc, n, "expert_imbalance_at"))) {
        if (x->type != YAML_SEQUENCE_NODE || x->data.sequence.items.top - x->data.sequence.items.start != 3)
            st = clnpu_yaml_fail_at(path, x, "'expert_imbalance_at' must be [EP width, slots per device, rows per device]");
        for (int i = 0; !st && i < 3; i++)
            st = row_num(path, yaml_document_get_node(doc, x->data.sequence.items.start[i]), "expert_imbalance_at", 1, 1e9,
                         &r->w.expert_imbalance_at[i]);
        if (!st && !(r->w.expert_imbalance > 0))
            st = clnpu_yaml_fail_at(path, x, "row '%s': 'expert_imbalance_at' needs 'expert_imbalance'", r->name);
    }
    if (!st && !(x = clnpu_yaml_get(doc, n, "published"))) st = clnpu_yaml_fail_at(path, n, "row '%s' needs 'published'", r->name);
    if (!st) st = row_num(path, x, "published", 1e-9, 1e15, &r->published);
    /* a row the model does not reach says why, and how far off it may be before it fails */
    r->known_gap = clnpu_yaml_value(doc, n, "known_gap") != NULL;
    if (!st && r->known_gap && !(x = clnpu_yaml_get(doc, n, "max_error")))
        st = clnpu_yaml_fail_at(path, n, "row '%s': a known_gap needs max_error (the |error| it must stay under)", r->name);
    if (!st && r->known_gap) st = row_num(path, x, "max_error", 0, 100, &r->max_error);
    return st;
}

clnpu_status clnpu_plan_validate(const char *path, const char *base, FILE *out, double *out_worst)
{
    *out_worst = 0;
    yaml_document_t doc;
    clnpu_status st = clnpu_yaml_load_file(path, &doc);
    if (st) return st;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    yaml_node_t *rows = root ? clnpu_yaml_get(&doc, root, "rows") : NULL;
    double tol = 0.15;
    yaml_node_t *tn = root ? clnpu_yaml_get(&doc, root, "tolerance") : NULL;
    if (!rows || rows->type != YAML_SEQUENCE_NODE || rows->data.sequence.items.start == rows->data.sequence.items.top)
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: expected 'rows:' with a list of deployments", path);
    if (!st && tn) st = row_num(path, tn, "tolerance", 0, 10, &tol);
    if (!st)
        fprintf(out, "%-52s %12s %12s %8s  %s\n", "deployment (published conditions)", "published", "predicted", "error",
                "layout chosen");
    size_t outside = 0, failed = 0, n = 0;
    for (yaml_node_item_t *it = st ? NULL : rows->data.sequence.items.start; !st && it < rows->data.sequence.items.top; it++) {
        row r;
        st = row_parse(path, base, &doc, yaml_document_get_node(&doc, *it), &r);
        clnpu_model_config cfg;
        clnpu_cluster *cl = NULL;
        clnpu_plan *p = NULL;
        if (!st) st = clnpu_model_config_load(r.model, &cfg);
        if (!st) st = clnpu_cluster_load(r.cluster, NULL, &cl);
        if (!st) {
            st = clnpu_plan_create(&cfg, cl, &r.w, NULL, &p);
            if (st) {
                char msg[768];
                snprintf(msg, sizeof msg, "%s", clnpu_error_message());
                st = clnpu_fail(st, "%s: row '%s': %s", path, r.name, msg);
            }
        }
        if (!st) {
            const clnpu_plan_summary s = clnpu_plan_get_summary(p);
            const clnpu_plan_breakdown b = clnpu_plan_get_breakdown(p);
            const double per_node = (double)cl->count / (double)(cl->nodes ? cl->nodes : 1);
            const double pred = s.tokens_per_s_per_device * (strcmp(r.metric, "tokens_per_s_per_node") ? 1 : per_node);
            const double err = pred / r.published - 1;
            *out_worst = fmax(*out_worst, fabs(err));
            outside += fabs(err) > tol;
            failed += fabs(err) > (r.known_gap ? r.max_error : tol);
            n++;
            fprintf(out, "%-52.52s %12.0f %12.0f %+7.1f%% %s TP%zu PP%zu EP%zu DP%zu m%zu%s, batch %zu, step %.1f ms\n", r.name,
                    r.published, pred, 100 * err,
                    fabs(err) <= tol ? "ok  " : fabs(err) <= (r.known_gap ? r.max_error : tol) ? "gap " : "FAIL",
                    s.tp, s.pp, s.ep, s.dp, s.micro_batches, b.tbo ? " TBO" : "", s.batch, s.step_s * 1e3);
        }
        clnpu_plan_destroy(p);
        clnpu_cluster_destroy(cl);
    }
    if (!st)
        fprintf(out, "%zu rows, worst |error| %.1f %%, %zu outside +-%.0f %% (gap: a known gap, stated in the file), %zu "
                "failing\n", n, 100 * *out_worst, outside, 100 * tol, failed);
    yaml_document_delete(&doc);
    if (!st && failed)
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: %zu row(s) outside their bound (+-%.0f %%, or a known gap's max_error)",
                        path, failed, 100 * tol);
    return st;
}
