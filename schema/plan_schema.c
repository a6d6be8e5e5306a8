/* The plan file format clnpu-plan-2: parsing (every scalar strictly), validation, stage specs. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "../common/error.h"
#include "../common/yaml_in.h"
#include "plan_schema.h"

const char *const clnpu_plan_mem_keys[CLNPU_PLAN_MEM_KINDS] = {"weights",       "kv_cache", "activations",
                                                               "communication", "reserve",  "capacity"};
const char *const clnpu_plan_predicted_keys[CLNPU_PLAN_PREDICTED] = {
    "step_s", "token_latency_s", "tokens_per_s", "tokens_per_s_per_device", "comm_bytes_per_step",
    "expert_imbalance", "expert_lb_gap"};

void clnpu_plan_doc_init(clnpu_plan_doc *d)
{
    memset(d, 0, sizeof *d);
    d->weights = CLNPU_DTYPE_BF16, d->latent_cache = CLNPU_DTYPE_F32;
    d->batch = 1, d->context = 1, d->max_tokens = 512;
    d->tp = d->pp = d->ep = d->dp = d->micro_batches = d->pipeline_replicas = 1;
}

void clnpu_plan_doc_free(clnpu_plan_doc *d)
{
    if (!d) return;
    for (size_t i = 0; d->stages && i < d->nstages; i++) free(d->stages[i].devices);
    for (size_t j = 0; d->experts && j < d->nexpert_lists; j++) free(d->experts[j]);
    free(d->stages), free(d->experts), free(d->expert_counts);
    d->stages = NULL, d->experts = NULL, d->expert_counts = NULL, d->nstages = d->nexpert_lists = 0;
}

clnpu_status clnpu_plan_doc_alloc(clnpu_plan_doc *d, size_t nstages, size_t ndev, size_t nlists, const size_t *counts)
{
    d->stages = nstages ? calloc(nstages, sizeof *d->stages) : NULL;
    d->experts = nlists ? calloc(nlists, sizeof *d->experts) : NULL;
    d->expert_counts = nlists ? calloc(nlists, sizeof *d->expert_counts) : NULL;
    bool ok = (!nstages || d->stages) && (!nlists || (d->experts && d->expert_counts));
    if (d->stages) d->nstages = nstages;
    if (d->experts && d->expert_counts) d->nexpert_lists = nlists;
    for (size_t i = 0; ok && i < nstages; i++) {
        d->stages[i].ndevices = ndev;
        ok = !ndev || (d->stages[i].devices = calloc(ndev, sizeof(size_t)));
    }
    for (size_t j = 0; ok && j < nlists; j++) {
        d->expert_counts[j] = counts[j];
        ok = !counts[j] || (d->experts[j] = calloc(counts[j], sizeof(size_t)));
    }
    if (ok) return CLNPU_OK;
    clnpu_plan_doc_free(d);
    return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
}

/* ---- strict scalars ---- */

typedef struct reader {
    yaml_document_t *doc;
    const char *origin;
} reader;

static clnpu_status scalar_of(const reader *r, const yaml_node_t *n, const char *what, const char **out)
{
    const char *s = clnpu_yaml_scalar(n);
    if (!s) return clnpu_yaml_fail_at(r->origin, n, "%s: expected a single value, found a %s", what,
                                      n->type == YAML_SEQUENCE_NODE ? "list" : "mapping");
    *out = s;
    return CLNPU_OK;
}

/* A whole number in [lo, hi]: digits only (no sign unless negative, no exponent, no trailing text). */
static clnpu_status get_size(const reader *r, const yaml_node_t *n, const char *what, size_t lo, size_t hi, size_t *out)
{
    const char *s = NULL;
    clnpu_status st = scalar_of(r, n, what, &s);
    if (st) return st;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!(*s == '-' || (*s >= '0' && *s <= '9')) || end == s || *end || errno == ERANGE)
        return clnpu_yaml_fail_at(r->origin, n, "%s: '%s' is not a whole number", what, s);
    if (v < 0 || (unsigned long long)v < lo || (unsigned long long)v > hi)
        return clnpu_yaml_fail_at(r->origin, n, "%s: %s is out of range (%zu..%zu)", what, s, lo, hi);
    *out = (size_t)v;
    return CLNPU_OK;
}

/* A finite number >= 0. */
static clnpu_status get_num(const reader *r, const yaml_node_t *n, const char *what, double *out)
{
    const char *s = NULL;
    clnpu_status st = scalar_of(r, n, what, &s);
    if (st) return st;
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (!(*s == '-' || *s == '.' || (*s >= '0' && *s <= '9')) || end == s || *end) return clnpu_yaml_fail_at(r->origin, n, "%s: '%s' is not a number", what, s);
    if (!isfinite(v) || v < 0 || errno == ERANGE)
        return clnpu_yaml_fail_at(r->origin, n, "%s: %s is not a finite number >= 0", what, s);
    *out = v;
    return CLNPU_OK;
}

static clnpu_status get_bool(const reader *r, const yaml_node_t *n, const char *what, bool *out)
{
    const char *s = NULL;
    clnpu_status st = scalar_of(r, n, what, &s);
    if (st) return st;
    if (!strcmp(s, "true")) *out = true;
    else if (!strcmp(s, "false")) *out = false;
    else return clnpu_yaml_fail_at(r->origin, n, "%s: '%s' is not true or false", what, s);
    return CLNPU_OK;
}

static clnpu_status get_str(const reader *r, const yaml_node_t *n, const char *what, char *out, size_t cap)
{
    const char *s = NULL;
    clnpu_status st = scalar_of(r, n, what, &s);
    if (st) return st;
    if (!*s || strlen(s) >= cap) return clnpu_yaml_fail_at(r->origin, n, "%s: '%.80s' is empty or too long", what, s);
    memcpy(out, s, strlen(s) + 1);
    return CLNPU_OK;
}

/* weights / latent_cache: one of `allowed` (a CLNPU_DTYPE_COUNT-terminated list). */
static clnpu_status get_dtype(const reader *r, const yaml_node_t *n, const char *what, const clnpu_dtype *allowed,
                              clnpu_dtype *out)
{
    const char *s = NULL;
    clnpu_status st = scalar_of(r, n, what, &s);
    if (st) return st;
    const int t = clnpu_dtype_parse(s);
    char names[64] = "";
    for (const clnpu_dtype *a = allowed; *a != CLNPU_DTYPE_COUNT; a++) {
        if (t == (int)*a) {
            *out = *a;
            return CLNPU_OK;
        }
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", a == allowed ? "" : ", ",
                 clnpu_dtype_name(*a));
    }
    return clnpu_yaml_fail_at(r->origin, n, "%s: '%s' is not supported (%s)", what, s, names);
}

static const clnpu_dtype weight_types[] = {CLNPU_DTYPE_BF16, CLNPU_DTYPE_FP8_E4M3, CLNPU_DTYPE_I8, CLNPU_DTYPE_COUNT};
/* the latent cache types the executor allocates (model_load.c) */
static const clnpu_dtype cache_types[] = {CLNPU_DTYPE_F32, CLNPU_DTYPE_BF16, CLNPU_DTYPE_FP8_E4M3, CLNPU_DTYPE_COUNT};

static size_t seq_len(const yaml_node_t *n)
{
    return (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
}

static clnpu_status need_seq(const reader *r, const yaml_node_t *n, const char *what)
{
    return n->type == YAML_SEQUENCE_NODE ? CLNPU_OK : clnpu_yaml_fail_at(r->origin, n, "%s: expected a list", what);
}

static clnpu_status need_map(const reader *r, const yaml_node_t *n, const char *what)
{
    return n->type == YAML_MAPPING_NODE ? CLNPU_OK : clnpu_yaml_fail_at(r->origin, n, "%s: expected a mapping", what);
}

/* Every key of a mapping is one of `keys` (NULL-terminated) and appears once: a misspelt key is an
 * error, not a default. */
static clnpu_status known_keys(const reader *r, const yaml_node_t *map, const char *what, const char *const *keys)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = yaml_document_get_node(r->doc, p->key);
        const char *name = clnpu_yaml_scalar(k);
        if (!name) return clnpu_yaml_fail_at(r->origin, k, "%s: a key must be a plain value", what);
        bool known = false;
        for (const char *const *q = keys; *q && !known; q++) known = !strcmp(*q, name);
        if (!known) return clnpu_yaml_fail_at(r->origin, k, "%s: unknown key '%.64s'", what, name);
        for (yaml_node_pair_t *o = map->data.mapping.pairs.start; o < p; o++) {
            const char *other = clnpu_yaml_scalar(yaml_document_get_node(r->doc, o->key));
            if (other && !strcmp(other, name)) return clnpu_yaml_fail_at(r->origin, k, "%s: '%s' given twice", what, name);
        }
    }
    return CLNPU_OK;
}

static const char *const top_keys[] = {"format", "model", "layers", "hidden_size", "routed_experts", "cluster",
                                       "phase", "weights", "latent_cache", "batch", "context", "max_tokens", "parallel",
                                       "predicted", "stages", "experts", NULL};
static const char *const parallel_keys[] = {"tp", "pp", "ep", "dp", "micro_batches", "pipeline_replicas", NULL};
static const char *const stage_keys[] = {"stage", "profile", "devices", "embedding", "head", "layers", "time_s",
                                         "memory_per_device", NULL};

static clnpu_status read_parallel(const reader *r, const yaml_node_t *par, clnpu_plan_doc *d)
{
    clnpu_status st = need_map(r, par, "parallel");
    if (!st) st = known_keys(r, par, "parallel", parallel_keys);
    size_t *fields[] = {&d->tp, &d->pp, &d->ep, &d->dp, &d->micro_batches, &d->pipeline_replicas};
    const size_t hi[] = {CLNPU_PLAN_MAX_DEVICES, CLNPU_PLAN_MAX_STAGES, CLNPU_PLAN_MAX_DEVICES, CLNPU_PLAN_MAX_DEVICES,
                         CLNPU_PLAN_MAX_MICRO, CLNPU_PLAN_MAX_DEVICES};
    for (int k = 0; !st && k < 6; k++) {
        const yaml_node_t *v = clnpu_yaml_get(r->doc, par, parallel_keys[k]);
        char what[48];
        snprintf(what, sizeof what, "parallel.%s", parallel_keys[k]);
        if (v) st = get_size(r, v, what, 1, hi[k], fields[k]);
    }
    return st;
}

static clnpu_status read_stage(const reader *r, const yaml_node_t *s, size_t i, clnpu_plan_doc_stage *out,
                               size_t *next_layer)
{
    char what[64];
    snprintf(what, sizeof what, "stage %zu", i);
    clnpu_status st = need_map(r, s, what);
    if (!st) st = known_keys(r, s, what, stage_keys);
    if (st) return st;
    const yaml_node_t *idx = clnpu_yaml_get(r->doc, s, "stage"), *prof = clnpu_yaml_get(r->doc, s, "profile");
    const yaml_node_t *devs = clnpu_yaml_get(r->doc, s, "devices"), *ls = clnpu_yaml_get(r->doc, s, "layers");
    const yaml_node_t *emb = clnpu_yaml_get(r->doc, s, "embedding"), *head = clnpu_yaml_get(r->doc, s, "head");
    const yaml_node_t *t = clnpu_yaml_get(r->doc, s, "time_s"), *mem = clnpu_yaml_get(r->doc, s, "memory_per_device");
    if (!devs || !ls) return clnpu_yaml_fail_at(r->origin, s, "%s: a stage needs devices and layers", what);
    size_t k = 0;
    if (idx && !(st = get_size(r, idx, what, 0, CLNPU_PLAN_MAX_STAGES, &k)) && k != i)
        st = clnpu_yaml_fail_at(r->origin, idx, "%s: numbered %zu (stages are listed in order from 0)", what, k);
    if (!st && prof && prof->type == YAML_SCALAR_NODE && !*clnpu_yaml_scalar(prof)) out->profile[0] = '\0';
    else if (!st && prof) st = get_str(r, prof, what, out->profile, sizeof out->profile);
    if (!st && emb) st = get_bool(r, emb, "embedding", &out->embedding);
    if (!st && head) st = get_bool(r, head, "head", &out->head);
    if (!st && t) st = get_num(r, t, "time_s", &out->time_s);
    if (!st && mem) {
        st = need_map(r, mem, "memory_per_device");
        const char *keys[CLNPU_PLAN_MEM_KINDS + 1] = {NULL};
        memcpy(keys, clnpu_plan_mem_keys, sizeof clnpu_plan_mem_keys);
        if (!st) st = known_keys(r, mem, "memory_per_device", keys);
        for (int m = 0; !st && m < CLNPU_PLAN_MEM_KINDS; m++) {
            const yaml_node_t *v = clnpu_yaml_get(r->doc, mem, clnpu_plan_mem_keys[m]);
            if (v) st = get_num(r, v, clnpu_plan_mem_keys[m], &out->memory[m]);
        }
    }
    if (!st) st = need_seq(r, devs, "devices");
    if (!st && !seq_len(devs)) st = clnpu_yaml_fail_at(r->origin, devs, "%s: no devices", what);
    if (!st && seq_len(devs) > CLNPU_PLAN_MAX_DEVICES)
        st = clnpu_yaml_fail_at(r->origin, devs, "%s: more than %d devices", what, CLNPU_PLAN_MAX_DEVICES);
    if (!st && !(out->devices = calloc(seq_len(devs), sizeof(size_t))))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t j = 0; !st && j < seq_len(devs); j++) {
        const yaml_node_t *v = yaml_document_get_node(r->doc, devs->data.sequence.items.start[j]);
        st = get_size(r, v, "device", 0, CLNPU_PLAN_MAX_DEVICES - 1, &out->devices[j]);
        for (size_t q = 0; !st && q < j; q++)
            if (out->devices[q] == out->devices[j])
                st = clnpu_yaml_fail_at(r->origin, v, "%s: device %zu listed twice", what, out->devices[j]);
        out->ndevices = j + 1;
    }
    if (!st) st = need_seq(r, ls, "layers");
    out->layer_begin = *next_layer;
    for (size_t j = 0; !st && j < seq_len(ls); j++) {
        const yaml_node_t *v = yaml_document_get_node(r->doc, ls->data.sequence.items.start[j]);
        size_t l = 0;
        st = get_size(r, v, "layer", 0, CLNPU_PLAN_MAX_LAYERS, &l);
        if (!st && l != *next_layer)
            st = clnpu_yaml_fail_at(r->origin, v, "%s lists layer %zu where layer %zu should come", what, l, *next_layer);
        if (!st) ++*next_layer;
    }
    out->layer_end = *next_layer;
    return st;
}

static clnpu_status read_experts(const reader *r, const yaml_node_t *ex, clnpu_plan_doc *d)
{
    clnpu_status st = need_seq(r, ex, "experts");
    if (!st && seq_len(ex) > CLNPU_PLAN_MAX_DEVICES)
        st = clnpu_yaml_fail_at(r->origin, ex, "experts: more than %d lists", CLNPU_PLAN_MAX_DEVICES);
    size_t n = st ? 0 : seq_len(ex);
    if (!n) return st;
    if (!(d->experts = calloc(n, sizeof *d->experts)) || !(d->expert_counts = calloc(n, sizeof *d->expert_counts)))
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    d->nexpert_lists = n;
    for (size_t j = 0; !st && j < n; j++) {
        const yaml_node_t *l = yaml_document_get_node(r->doc, ex->data.sequence.items.start[j]);
        st = need_seq(r, l, "experts: a device's list");
        if (!st && seq_len(l) > CLNPU_PLAN_MAX_EXPERTS)
            st = clnpu_yaml_fail_at(r->origin, l, "experts: more than %d in one list", CLNPU_PLAN_MAX_EXPERTS);
        if (!st && seq_len(l) && !(d->experts[j] = calloc(seq_len(l), sizeof(size_t))))
            st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        for (size_t e = 0; !st && e < seq_len(l); e++) {
            const yaml_node_t *v = yaml_document_get_node(r->doc, l->data.sequence.items.start[e]);
            st = get_size(r, v, "expert", 0, CLNPU_PLAN_MAX_EXPERTS - 1, &d->experts[j][e]);
            d->expert_counts[j] = e + 1;
        }
    }
    return st;
}

static clnpu_status parse_doc(const reader *r, clnpu_plan_doc *d)
{
    yaml_node_t *root = yaml_document_get_root_node(r->doc);
    if (!root || root->type != YAML_MAPPING_NODE)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: not a clnpu plan (format: %s)", r->origin, CLNPU_PLAN_FORMAT);
    const char *fmt = clnpu_yaml_value(r->doc, root, "format");
    if (fmt && !strcmp(fmt, "clnpu-plan-1"))
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: format clnpu-plan-1 is from an older clnpu (it says nothing of the "
                          "hidden size, experts or latent cache); make the plan again with `clnpu plan -o`", r->origin);
    if (!fmt || strcmp(fmt, CLNPU_PLAN_FORMAT))
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: not a clnpu plan (format: %s)", r->origin, CLNPU_PLAN_FORMAT);
    clnpu_status st = known_keys(r, root, "plan", top_keys);
    const char *required[] = {"model", "layers", "hidden_size", "routed_experts", "weights", "stages"};
    for (int k = 0; !st && k < 6; k++)
        if (!clnpu_yaml_get(r->doc, root, required[k]))
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: no '%s' (a plan says which model it is for)", r->origin, required[k]);
    if (st) return st;
    const yaml_node_t *n;
    st = get_str(r, clnpu_yaml_get(r->doc, root, "model"), "model", d->model, sizeof d->model);
    if (!st) st = get_size(r, clnpu_yaml_get(r->doc, root, "layers"), "layers", 1, CLNPU_PLAN_MAX_LAYERS, &d->layers);
    if (!st) st = get_size(r, clnpu_yaml_get(r->doc, root, "hidden_size"), "hidden_size", 1, 1u << 24, &d->hidden_size);
    if (!st)
        st = get_size(r, clnpu_yaml_get(r->doc, root, "routed_experts"), "routed_experts", 0, CLNPU_PLAN_MAX_EXPERTS,
                      &d->routed_experts);
    if (!st) st = get_dtype(r, clnpu_yaml_get(r->doc, root, "weights"), "weights", weight_types, &d->weights);
    if (!st && (n = clnpu_yaml_get(r->doc, root, "latent_cache")))
        st = get_dtype(r, n, "latent_cache", cache_types, &d->latent_cache);
    if (!st && (n = clnpu_yaml_get(r->doc, root, "cluster"))) st = get_str(r, n, "cluster", d->cluster, sizeof d->cluster);
    if (!st && (n = clnpu_yaml_get(r->doc, root, "phase"))) {
        const char *s = NULL;
        st = scalar_of(r, n, "phase", &s);
        if (!st && strcmp(s, "decode") && strcmp(s, "prefill"))
            st = clnpu_yaml_fail_at(r->origin, n, "phase: '%s' is not decode or prefill", s);
        if (!st) d->prefill = !strcmp(s, "prefill");
    }
    if (!st && (n = clnpu_yaml_get(r->doc, root, "batch"))) st = get_size(r, n, "batch", 1, CLNPU_PLAN_MAX_BATCH, &d->batch);
    if (!st && (n = clnpu_yaml_get(r->doc, root, "context")))
        st = get_size(r, n, "context", 1, CLNPU_PLAN_MAX_CONTEXT, &d->context);
    if (!st && (n = clnpu_yaml_get(r->doc, root, "max_tokens")))
        st = get_size(r, n, "max_tokens", 1, CLNPU_PLAN_MAX_TOKENS, &d->max_tokens);
    if (!st && (n = clnpu_yaml_get(r->doc, root, "parallel"))) st = read_parallel(r, n, d);
    if (!st && (n = clnpu_yaml_get(r->doc, root, "predicted"))) {
        st = need_map(r, n, "predicted");
        const char *keys[CLNPU_PLAN_PREDICTED + 1] = {NULL};
        memcpy(keys, clnpu_plan_predicted_keys, sizeof clnpu_plan_predicted_keys);
        if (!st) st = known_keys(r, n, "predicted", keys);
        for (int k = 0; !st && k < CLNPU_PLAN_PREDICTED; k++) {
            const yaml_node_t *v = clnpu_yaml_get(r->doc, n, clnpu_plan_predicted_keys[k]);
            if (v) st = get_num(r, v, clnpu_plan_predicted_keys[k], &d->predicted[k]);
        }
    }
    if (!st && (n = clnpu_yaml_get(r->doc, root, "experts"))) st = read_experts(r, n, d);
    const yaml_node_t *stages = st ? NULL : clnpu_yaml_get(r->doc, root, "stages");
    if (!st) st = need_seq(r, stages, "stages");
    if (!st && (!seq_len(stages) || seq_len(stages) > CLNPU_PLAN_MAX_STAGES))
        st = clnpu_yaml_fail_at(r->origin, stages, "stages: %zu stages (1..%d)", seq_len(stages), CLNPU_PLAN_MAX_STAGES);
    if (!st && !(d->stages = calloc(seq_len(stages), sizeof *d->stages)))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    size_t next = 0;
    for (size_t i = 0; !st && i < seq_len(stages); i++) {
        d->nstages = i + 1;
        st = read_stage(r, yaml_document_get_node(r->doc, stages->data.sequence.items.start[i]), i, &d->stages[i], &next);
    }
    return st;
}

clnpu_status clnpu_plan_doc_parse(const char *text, size_t len, const char *origin, clnpu_plan_doc *out)
{
    clnpu_plan_doc_init(out);
    yaml_document_t doc;
    clnpu_status st = clnpu_yaml_load_text(text, len, origin, &doc);
    if (st) return st;
    const reader r = {&doc, origin};
    st = parse_doc(&r, out);
    yaml_document_delete(&doc);
    if (!st) st = clnpu_plan_doc_validate(out, origin);
    if (st) clnpu_plan_doc_free(out);
    return st;
}

clnpu_status clnpu_plan_doc_load(const char *path, clnpu_plan_doc *out)
{
    clnpu_plan_doc_init(out);
    yaml_document_t doc;
    clnpu_status st = clnpu_yaml_load_file(path, &doc);
    if (st) return st;
    const reader r = {&doc, path};
    st = parse_doc(&r, out);
    yaml_document_delete(&doc);
    if (!st) st = clnpu_plan_doc_validate(out, path);
    if (st) clnpu_plan_doc_free(out);
    return st;
}

/* ---- validation ---- */

clnpu_status clnpu_plan_doc_validate(const clnpu_plan_doc *d, const char *origin)
{
    if (!d->nstages) return clnpu_fail(CLNPU_ERR_PARSE, "%s: no stages", origin);
    if (d->pp != d->nstages)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: parallel.pp is %zu but the plan lists %zu stages", origin, d->pp,
                          d->nstages);
    if (d->ep % d->tp)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: parallel.ep %zu (devices per stage) is not a multiple of tp %zu", origin,
                          d->ep, d->tp);
    if (d->dp != d->ep / d->tp * d->pipeline_replicas)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: parallel.dp %zu is not (ep / tp) x pipeline_replicas = %zu x %zu", origin,
                          d->dp, d->ep / d->tp, d->pipeline_replicas);
    for (size_t i = 0; i < d->nstages; i++) {
        const clnpu_plan_doc_stage *s = &d->stages[i];
        if (s->ndevices != d->ep)
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: stage %zu has %zu devices, parallel.ep says %zu per stage", origin, i,
                              s->ndevices, d->ep);
        if (s->embedding != (i == 0) || s->head != (i + 1 == d->nstages))
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: the embedding must be on the first stage and the head on the last "
                              "(stage %zu says embedding %s, head %s)", origin, i, s->embedding ? "true" : "false",
                              s->head ? "true" : "false");
        if (i && s->layer_begin != d->stages[i - 1].layer_end)
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: stage %zu starts at layer %zu, after layer %zu", origin, i,
                              s->layer_begin, d->stages[i - 1].layer_end);
        for (size_t j = 0; j < s->ndevices; j++)
            for (size_t q = 0; q < j; q++)
                if (s->devices[q] == s->devices[j])
                    return clnpu_fail(CLNPU_ERR_PARSE, "%s: stage %zu lists device %zu twice", origin, i, s->devices[j]);
    }
    if (d->stages[0].layer_begin != 0 || d->stages[d->nstages - 1].layer_end != d->layers)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: the stages cover layers %zu..%zu of %zu", origin, d->stages[0].layer_begin,
                          d->stages[d->nstages - 1].layer_end, d->layers);
    /* one expert list per device of a stage when experts are spread; every expert somewhere */
    if ((d->ep > 1 && d->routed_experts && d->nexpert_lists != d->ep) || (d->nexpert_lists && d->nexpert_lists != d->ep))
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: experts: %zu lists for %zu devices per stage (one each)", origin,
                          d->nexpert_lists, d->ep);
    if (d->nexpert_lists) {
        const size_t E = d->routed_experts;
        unsigned char *seen = calloc(E ? E : 1, 1);
        if (!seen) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        clnpu_status st = CLNPU_OK;
        for (size_t j = 0; !st && j < d->nexpert_lists; j++) {
            if (!d->expert_counts[j] && E)
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s: experts: device %zu of each stage holds no experts", origin, j);
            for (size_t e = 0; !st && e < d->expert_counts[j]; e++) {
                const size_t x = d->experts[j][e];
                if (x >= E)
                    st = clnpu_fail(CLNPU_ERR_PARSE, "%s: experts: expert %zu, but the model has %zu (0..%zu)", origin, x,
                                    E, E ? E - 1 : 0);
                else if (seen[x] & 2)
                    st = clnpu_fail(CLNPU_ERR_PARSE, "%s: experts: expert %zu twice on device %zu", origin, x, j);
                else seen[x] |= 3;
            }
            for (size_t e = 0; e < d->expert_counts[j] && d->experts[j][e] < E; e++) seen[d->experts[j][e]] &= 1;
        }
        for (size_t x = 0; !st && x < E; x++)
            if (!seen[x]) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: experts: expert %zu is on no device", origin, x);
        free(seen);
        if (st) return st;
    }
    return CLNPU_OK;
}

clnpu_status clnpu_plan_doc_check_model(const clnpu_plan_doc *d, const clnpu_model_config *cfg, const char *origin)
{
    if (strcmp(d->model, cfg->model_type))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: the plan is for model '%s', this config is '%s'", origin,
                          d->model, cfg->model_type);
    if (d->layers != cfg->num_hidden_layers)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: the plan is for %zu layers, the model has %zu", origin, d->layers,
                          cfg->num_hidden_layers);
    if (d->hidden_size != cfg->hidden_size)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: the plan is for hidden size %zu, the model has %zu", origin,
                          d->hidden_size, cfg->hidden_size);
    if (d->routed_experts != cfg->n_routed_experts)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: the plan is for %zu routed experts, the model has %zu", origin,
                          d->routed_experts, cfg->n_routed_experts);
    return CLNPU_OK;
}

clnpu_status clnpu_plan_doc_specs(const clnpu_plan_doc *d, const char *origin, clnpu_stage_spec **out, size_t *count,
                                  clnpu_plan_layout *layout)
{
    *out = NULL, *count = 0;
    const size_t n = d->nstages, nd = d->ep;
    if (nd > CLNPU_MAX_EP)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: %zu devices per stage: this executor runs up to %d", origin, nd,
                          CLNPU_MAX_EP);
    size_t total = 0;
    const size_t lists = d->nexpert_lists < nd ? d->nexpert_lists : nd; /* validated: 0 or nd */
    for (size_t j = 0; nd > 1 && j < lists; j++) total += d->expert_counts[j];
    clnpu_stage_spec *sp = calloc(1, n * sizeof *sp + total * sizeof(size_t));
    if (!sp) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    size_t *pool = (size_t *)(sp + n);
    const size_t *ids[CLNPU_MAX_EP] = {0};
    for (size_t j = 0, k = 0; nd > 1 && j < lists; j++) {
        ids[j] = pool + k;
        memcpy(pool + k, d->experts[j], d->expert_counts[j] * sizeof(size_t));
        k += d->expert_counts[j];
    }
    for (size_t i = 0; i < n; i++) {
        const clnpu_plan_doc_stage *s = &d->stages[i];
        sp[i].device = s->devices[0];
        snprintf(sp[i].profile, sizeof sp[i].profile, "%s", s->profile);
        /* the devices are held to the capacity the plan's memory assumed */
        const double capb = s->memory[CLNPU_PLAN_MEM_KINDS - 1];
        sp[i].memory_bytes = capb >= 1 && capb < 1.8e19 ? (uint64_t)capb : 0;
        sp[i].layer_begin = s->layer_begin, sp[i].layer_end = s->layer_end;
        sp[i].embed = s->embedding, sp[i].head = s->head;
        /* attention replicas of tp devices each (tensor parallel inside a replica) */
        sp[i].tp = d->tp, sp[i].replicas = nd / d->tp;
        for (size_t j = 0; j < nd; j++) sp[i].ep_devices[j] = s->devices[j];
        if (nd > 1) { /* expert parallel over the stage's devices, experts from the plan's lists */
            sp[i].ep_count = nd;
            for (size_t j = 0; j < nd; j++) sp[i].ep_experts[j] = ids[j], sp[i].ep_expert_counts[j] = d->expert_counts[j];
        }
    }
    if (layout) {
        layout->ep = nd, layout->micro_batches = d->micro_batches, layout->pipeline_replicas = d->pipeline_replicas;
        layout->weights = d->weights == CLNPU_DTYPE_BF16 ? -1 : (int)d->weights;
        layout->latent_cache = d->latent_cache;
        layout->batch = d->batch, layout->context = d->context, layout->max_tokens = d->max_tokens;
    }
    *out = sp, *count = n;
    return CLNPU_OK;
}

/* ---- writing ---- */

#include "../common/yaml_out.h"

clnpu_status clnpu_plan_doc_write(const clnpu_plan_doc *d, FILE *f)
{
    clnpu_yaml *y = clnpu_yaml_begin(f);
    if (!y) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    clnpu_yaml_map_begin(y);
    clnpu_yaml_kv_str(y, "format", CLNPU_PLAN_FORMAT);
    clnpu_yaml_kv_str(y, "model", d->model);
    clnpu_yaml_kv_int(y, "layers", (long long)d->layers);
    clnpu_yaml_kv_int(y, "hidden_size", (long long)d->hidden_size);
    clnpu_yaml_kv_int(y, "routed_experts", (long long)d->routed_experts);
    if (d->cluster[0]) clnpu_yaml_kv_str(y, "cluster", d->cluster);
    clnpu_yaml_kv_str(y, "phase", d->prefill ? "prefill" : "decode");
    clnpu_yaml_kv_str(y, "weights", clnpu_dtype_name(d->weights));
    clnpu_yaml_kv_str(y, "latent_cache", clnpu_dtype_name(d->latent_cache));
    clnpu_yaml_kv_int(y, "batch", (long long)d->batch);
    clnpu_yaml_kv_int(y, "context", (long long)d->context);
    clnpu_yaml_kv_int(y, "max_tokens", (long long)d->max_tokens);
    clnpu_yaml_key(y, "parallel");
    clnpu_yaml_map_begin(y);
    const size_t par[6] = {d->tp, d->pp, d->ep, d->dp, d->micro_batches, d->pipeline_replicas};
    for (int k = 0; k < 6; k++) clnpu_yaml_kv_int(y, parallel_keys[k], (long long)par[k]);
    clnpu_yaml_map_end(y);
    clnpu_yaml_key(y, "predicted");
    clnpu_yaml_map_begin(y);
    for (int k = 0; k < CLNPU_PLAN_PREDICTED; k++) clnpu_yaml_kv_num(y, clnpu_plan_predicted_keys[k], d->predicted[k]);
    clnpu_yaml_map_end(y);
    clnpu_yaml_key(y, "stages");
    clnpu_yaml_seq_begin(y);
    for (size_t i = 0; i < d->nstages; i++) {
        const clnpu_plan_doc_stage *s = &d->stages[i];
        clnpu_yaml_map_begin(y);
        clnpu_yaml_kv_int(y, "stage", (long long)i);
        if (s->profile[0]) clnpu_yaml_kv_str(y, "profile", s->profile);
        clnpu_yaml_key(y, "devices");
        clnpu_yaml_flow_seq_begin(y);
        for (size_t j = 0; j < s->ndevices; j++) clnpu_yaml_int(y, (long long)s->devices[j]);
        clnpu_yaml_seq_end(y);
        /* layers as decoder indices; the embedding / head flags say where those go */
        clnpu_yaml_kv_bool(y, "embedding", s->embedding);
        clnpu_yaml_kv_bool(y, "head", s->head);
        clnpu_yaml_key(y, "layers");
        clnpu_yaml_flow_seq_begin(y);
        for (size_t l = s->layer_begin; l < s->layer_end; l++) clnpu_yaml_int(y, (long long)l);
        clnpu_yaml_seq_end(y);
        clnpu_yaml_kv_num(y, "time_s", s->time_s);
        clnpu_yaml_key(y, "memory_per_device");
        clnpu_yaml_map_begin(y);
        for (int k = 0; k < CLNPU_PLAN_MEM_KINDS; k++) clnpu_yaml_kv_num(y, clnpu_plan_mem_keys[k], s->memory[k]);
        clnpu_yaml_map_end(y);
        clnpu_yaml_map_end(y);
    }
    clnpu_yaml_seq_end(y);
    /* experts: every MoE layer uses this placement (device index within its stage's group) */
    clnpu_yaml_key(y, "experts");
    clnpu_yaml_seq_begin(y);
    for (size_t j = 0; j < d->nexpert_lists; j++) {
        clnpu_yaml_flow_seq_begin(y);
        for (size_t e = 0; e < d->expert_counts[j]; e++) clnpu_yaml_int(y, (long long)d->experts[j][e]);
        clnpu_yaml_seq_end(y);
    }
    clnpu_yaml_seq_end(y);
    clnpu_yaml_map_end(y);
    return clnpu_yaml_end(y) ? CLNPU_OK : clnpu_fail(CLNPU_ERR_IO, "writing the plan failed");
}
