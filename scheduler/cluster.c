/* Cluster descriptions (YAML, libyaml document API): nodes of devices named by target profile,
 * with overrides, the links inside and between nodes, a memory reserve. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "../common/error.h"
#include "../common/file_read.h"
#include "../common/yaml_in.h"
#include "clnpu/plan.h"

typedef struct ctx {
    yaml_document_t *doc;
    const char *origin;
} ctx;


static const char *sval(const yaml_node_t *n) { return clnpu_yaml_scalar(n); }

static yaml_node_t *get(const ctx *c, const yaml_node_t *map, const char *key) { return clnpu_yaml_get(c->doc, map, key); }

static clnpu_status check_keys(const ctx *c, const yaml_node_t *map, const char *what, const char *const *allowed)
{
    if (map->type != YAML_MAPPING_NODE) return clnpu_yaml_fail_at(c->origin, map, "%s must be a mapping", what);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
        const char *k = sval(kn);
        bool ok = false;
        for (size_t i = 0; k && allowed[i] && !ok; i++) ok = !strcmp(k, allowed[i]);
        if (!ok) return clnpu_yaml_fail_at(c->origin, kn, "unknown key '%s' in %s", k ? k : "?", what);
    }
    return CLNPU_OK;
}

static clnpu_status num(const ctx *c, const yaml_node_t *n, const char *key, double *out)
{
    const char *s = sval(n);
    char *end;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || end == s || *end || errno || !isfinite(v) || v < 0) return clnpu_yaml_fail_at(c->origin, n, "'%s' must be a non-negative number", key);
    *out = v;
    return CLNPU_OK;
}

static clnpu_status link_of(const ctx *c, const yaml_node_t *n, const char *what, clnpu_link *l)
{
    static const char *const keys[] = {"bandwidth", "latency_s", "type", NULL};
    clnpu_status st = check_keys(c, n, what, keys);
    yaml_node_t *v = NULL;
    if (!st && (v = get(c, n, "bandwidth"))) st = num(c, v, "bandwidth", &l->bandwidth);
    if (!st && (v = get(c, n, "latency_s"))) st = num(c, v, "latency_s", &l->latency_s);
    if (!st && (v = get(c, n, "type")) && sval(v)) snprintf(l->type, sizeof l->type, "%s", sval(v));
    if (!st && l->bandwidth <= 0) st = clnpu_yaml_fail_at(c->origin, n, "%s needs a positive bandwidth", what);
    return st;
}

/* A published GEMM rate table: a sequence of [M, N, K, FLOP/s] rows, all positive. */
static clnpu_status table_of(const ctx *c, const yaml_node_t *n, const char *key, clnpu_gemm_point *out, size_t *count)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return clnpu_yaml_fail_at(c->origin, n, "'%s' must be a list of [M, N, K, FLOP/s] rows", key);
    *count = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *row = yaml_document_get_node(c->doc, *it);
        if (*count == CLNPU_GEMM_TABLE_MAX)
            return clnpu_yaml_fail_at(c->origin, row, "'%s' has more than %d rows", key, CLNPU_GEMM_TABLE_MAX);
        if (!row || row->type != YAML_SEQUENCE_NODE || row->data.sequence.items.top - row->data.sequence.items.start != 4)
            return clnpu_yaml_fail_at(c->origin, row ? row : n, "a row of '%s' must be [M, N, K, FLOP/s]", key);
        double v[4];
        for (int j = 0; j < 4; j++) {
            yaml_node_t *x = yaml_document_get_node(c->doc, row->data.sequence.items.start[j]);
            clnpu_status st = num(c, x, key, &v[j]);
            if (st) return st;
            if (v[j] <= 0) return clnpu_yaml_fail_at(c->origin, x, "a row of '%s' needs positive M, N, K and FLOP/s", key);
        }
        out[(*count)++] = (clnpu_gemm_point){v[0], v[1], v[2], v[3]};
    }
    return CLNPU_OK;
}

/* A prefill attention rate table: [prompt length, FLOP/s] rows, all positive. */
static clnpu_status attn_table_of(const ctx *c, const yaml_node_t *n, clnpu_attn_point *out, size_t *count)
{
    if (n->type != YAML_SEQUENCE_NODE)
        return clnpu_yaml_fail_at(c->origin, n, "'attn_prefill_table' must be a list of [prompt length, FLOP/s] rows");
    *count = 0;
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *row = yaml_document_get_node(c->doc, *it);
        if (*count == CLNPU_GEMM_TABLE_MAX)
            return clnpu_yaml_fail_at(c->origin, row, "'attn_prefill_table' has more than %d rows", CLNPU_GEMM_TABLE_MAX);
        if (!row || row->type != YAML_SEQUENCE_NODE || row->data.sequence.items.top - row->data.sequence.items.start != 2)
            return clnpu_yaml_fail_at(c->origin, row ? row : n, "a row of 'attn_prefill_table' must be [prompt length, FLOP/s]");
        double v[2];
        for (int j = 0; j < 2; j++) {
            yaml_node_t *x = yaml_document_get_node(c->doc, row->data.sequence.items.start[j]);
            clnpu_status st = num(c, x, "attn_prefill_table", &v[j]);
            if (st) return st;
            if (v[j] <= 0) return clnpu_yaml_fail_at(c->origin, x, "a row of 'attn_prefill_table' needs a positive length and rate");
        }
        out[(*count)++] = (clnpu_attn_point){v[0], v[1]};
    }
    return CLNPU_OK;
}

/* Published or measured kernel rates, with the source they come from (a string). */
static clnpu_status rates_of(const ctx *c, const yaml_node_t *n, clnpu_kernel_rates *rates, char *source, size_t cap)
{
    static const char *const keys[] = {"gemm_flops", "stream_bandwidth", "attn_flops", "attn_bandwidth",
                                       "alltoall_bandwidth", "alltoall_latency_s", "alltoall_sm_fraction", "source",
                                       "gemm_table", "grouped_gemm_table", "attn_prefill_table", "tbo_compute_sm_fraction", NULL};
    clnpu_status st = check_keys(c, n, "kernel_rates", keys);
    double *dst[] = {&rates->gemm_flops, &rates->stream_bandwidth, &rates->attn_flops,
                     &rates->attn_bandwidth, &rates->alltoall_bandwidth, &rates->alltoall_latency_s,
                     &rates->alltoall_sm_fraction};
    yaml_node_t *v;
    for (size_t i = 0; !st && i < 7; i++)
        if ((v = get(c, n, keys[i]))) st = num(c, v, keys[i], dst[i]);
    if (!st && (v = get(c, n, "gemm_table"))) st = table_of(c, v, "gemm_table", rates->gemm_table, &rates->gemm_table_count);
    if (!st && (v = get(c, n, "grouped_gemm_table")))
        st = table_of(c, v, "grouped_gemm_table", rates->grouped_table, &rates->grouped_table_count);
    if (!st && (v = get(c, n, "attn_prefill_table")))
        st = attn_table_of(c, v, rates->attn_prefill_table, &rates->attn_prefill_table_count);
    if (!st && (v = get(c, n, "tbo_compute_sm_fraction")) && !(st = num(c, v, "tbo_compute_sm_fraction", &rates->tbo_compute_sm_fraction)) &&
        !(rates->tbo_compute_sm_fraction > 0 && rates->tbo_compute_sm_fraction <= 1))
        st = clnpu_yaml_fail_at(c->origin, v, "tbo_compute_sm_fraction is a fraction in (0, 1]");
    if (!st && rates->alltoall_sm_fraction >= 1)
        st = clnpu_yaml_fail_at(c->origin, get(c, n, "alltoall_sm_fraction"), "alltoall_sm_fraction is a fraction below 1");
    if (!st && (v = get(c, n, "source")) && sval(v)) snprintf(source, cap, "%s", sval(v));
    if (!st && !source[0])
        st = clnpu_yaml_fail_at(c->origin, n, "kernel_rates needs a 'source' saying where the rates come from");
    return st;
}

/* One of a few words; index into `words` in *out. */
static clnpu_status word_of(const ctx *c, const yaml_node_t *n, const char *key, const char *const *words, int *out)
{
    const char *s = sval(n);
    for (int i = 0; s && words[i]; i++)
        if (!strcmp(s, words[i])) return *out = i, CLNPU_OK;
    return clnpu_yaml_fail_at(c->origin, n, "'%s' must be one of %s|%s|%s", key, words[0], words[1], words[2]);
}

/* ep_dispatch, tbo and kernel_rates of the cluster or of one phase's block. */
static clnpu_status phase_of(const ctx *c, const yaml_node_t *n, int *dispatch, int *tbo, clnpu_kernel_rates *rates,
                             char *source)
{
    static const char *const dispatch_words[] = {"device", "expert", "node", NULL}, *const tbo_words[] = {"auto", "on", "off", NULL};
    yaml_node_t *v;
    clnpu_status st = CLNPU_OK;
    int t = 0;
    if ((v = get(c, n, "ep_dispatch"))) st = word_of(c, v, "ep_dispatch", dispatch_words, dispatch);
    if (!st && (v = get(c, n, "tbo")) && !(st = word_of(c, v, "tbo", tbo_words, &t))) *tbo = CLNPU_TBO_AUTO + t;
    if (!st && (v = get(c, n, "kernel_rates"))) {
        memset(rates, 0, sizeof *rates), source[0] = 0; /* a phase's rates replace the cluster's whole */
        st = rates_of(c, v, rates, source, 256);
    }
    return st;
}

static clnpu_status apply_overrides(const ctx *c, const yaml_node_t *n, clnpu_profile *p)
{
    static const char *const keys[] = {"memory_bytes", "memory_bandwidth", "fp32", "fp16", "bf16", "fp8", "int8", NULL};
    clnpu_status st = check_keys(c, n, "overrides", keys);
    double v = 0;
    for (size_t i = 0; !st && keys[i]; i++) {
        yaml_node_t *x = get(c, n, keys[i]);
        if (!x) continue;
        if ((st = num(c, x, keys[i], &v))) break;
        /* range first: casting a double past int64 is undefined (1e19 became negative bytes) */
        if (i == 0 && !(v <= 0x1p62))
            st = clnpu_yaml_fail_at(c->origin, x, "memory_bytes %g is past 2^62 bytes", v);
        else if (i == 0) p->memory_bytes = (int64_t)v;
        else if (i == 1) p->memory_bandwidth = v;
        else p->peak[(int[]){CLNPU_PEAK_FP32, CLNPU_PEAK_FP16, CLNPU_PEAK_BF16, CLNPU_PEAK_FP8, CLNPU_PEAK_INT8}[i - 2]] = v;
    }
    return st;
}

void clnpu_cluster_destroy(clnpu_cluster *c)
{
    if (!c) return;
    free(c->devices);
    free(c);
}

static clnpu_status add_devices(clnpu_cluster *cl, const clnpu_profile *p, size_t count, size_t node, double shared,
                                size_t *cap)
{
    if (cl->count + count > 1u << 20) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "more than 2^20 devices");
    if (cl->count + count > *cap) {
        size_t nc = (cl->count + count) * 2;
        clnpu_cluster_device *n = realloc(cl->devices, nc * sizeof *n);
        if (!n) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        cl->devices = n, *cap = nc;
    }
    for (size_t i = 0; i < count; i++) cl->devices[cl->count++] = (clnpu_cluster_device){*p, node, shared};
    return CLNPU_OK;
}

static clnpu_status parse_root(const ctx *c, const yaml_node_t *root, const clnpu_profile_set *set, clnpu_cluster *cl)
{
    static const char *const top[] = {"name", "nodes", "links", "memory_reserve", "launch_overhead_s", "comm_overlap",
                                      "notes", "redundant_experts", "ep_dispatch", "tbo", "kernel_rates", "prefill", "decode", NULL};
    clnpu_status st = check_keys(c, root, "the cluster", top);
    yaml_node_t *v = NULL;
    if (!st && (v = get(c, root, "name")) && sval(v)) snprintf(cl->name, sizeof cl->name, "%s", sval(v));
    cl->reserve_fraction = 0.05, cl->launch_overhead_s = 5e-6, cl->comm_overlap = 0.9;
    if (!st && (v = get(c, root, "memory_reserve"))) st = num(c, v, "memory_reserve", &cl->reserve_fraction);
    if (!st && cl->reserve_fraction >= 1) st = clnpu_yaml_fail_at(c->origin, v, "memory_reserve is a fraction below 1");
    if (!st && (v = get(c, root, "launch_overhead_s"))) st = num(c, v, "launch_overhead_s", &cl->launch_overhead_s);
    if (!st && (v = get(c, root, "comm_overlap"))) st = num(c, v, "comm_overlap", &cl->comm_overlap);
    if (!st && v && (cl->comm_overlap < 0 || cl->comm_overlap > 1))
        st = clnpu_yaml_fail_at(c->origin, v, "comm_overlap is a fraction from 0 to 1");
    double red = 0;
    if (!st && (v = get(c, root, "redundant_experts"))) st = num(c, v, "redundant_experts", &red);
    if (!st && (red != floor(red) || red > 65536))
        st = clnpu_yaml_fail_at(c->origin, v, "redundant_experts must be an integer 0..65536");
    if (!st) cl->redundant_experts = (size_t)red; /* only in range: the cast of 1e64 is undefined */
    cl->tbo = CLNPU_TBO_OFF;
    if (!st) st = phase_of(c, root, &cl->ep_dispatch, &cl->tbo, &cl->rates, cl->rates_source);
    static const char *const phases[2] = {"decode", "prefill"};
    for (int ph = 0; ph < 2 && !st; ph++) {
        yaml_node_t *b = get(c, root, phases[ph]);
        if (!b) continue;
        static const char *const pkeys[] = {"ep_dispatch", "tbo", "kernel_rates", NULL};
        st = check_keys(c, b, phases[ph], pkeys);
        struct clnpu_cluster_phase *P = &cl->phase[ph];
        P->set = true, P->ep_dispatch = cl->ep_dispatch, P->tbo = cl->tbo, P->rates = cl->rates;
        snprintf(P->rates_source, sizeof P->rates_source, "%s", cl->rates_source);
        if (!st) st = phase_of(c, b, &P->ep_dispatch, &P->tbo, &P->rates, P->rates_source);
    }
    yaml_node_t *nodes = st ? NULL : get(c, root, "nodes");
    if (!st && (!nodes || nodes->type != YAML_SEQUENCE_NODE || nodes->data.sequence.items.start == nodes->data.sequence.items.top))
        st = clnpu_yaml_fail_at(c->origin, root, "'nodes' must be a non-empty list");
    size_t cap = 0;
    for (yaml_node_item_t *it = st ? NULL : nodes->data.sequence.items.start; !st && it < nodes->data.sequence.items.top; it++) {
        yaml_node_t *nd = yaml_document_get_node(c->doc, *it);
        static const char *const nkeys[] = {"name", "count", "shared_memory_bandwidth", "devices", NULL};
        st = check_keys(c, nd, "a node", nkeys);
        double repeat = 1, shared = 0;
        if (!st && (v = get(c, nd, "shared_memory_bandwidth"))) st = num(c, v, "shared_memory_bandwidth", &shared);
        if (!st && v && !(shared > 0)) st = clnpu_yaml_fail_at(c->origin, v, "shared_memory_bandwidth must be positive (bytes/s)");
        if (!st && (v = get(c, nd, "count"))) st = num(c, v, "count", &repeat);
        if (!st && (repeat < 1 || repeat != floor(repeat) || repeat > 65536)) st = clnpu_yaml_fail_at(c->origin, nd, "node count must be 1..65536");
        yaml_node_t *devs = st ? NULL : get(c, nd, "devices");
        if (!st && (!devs || devs->type != YAML_SEQUENCE_NODE)) st = clnpu_yaml_fail_at(c->origin, nd, "a node needs a 'devices' list");
        for (size_t r = 0; !st && r < (size_t)repeat; r++, cl->nodes++)
            for (yaml_node_item_t *di = devs->data.sequence.items.start; !st && di < devs->data.sequence.items.top; di++) {
                yaml_node_t *dv = yaml_document_get_node(c->doc, *di);
                static const char *const dkeys[] = {"profile", "count", "overrides", NULL};
                st = check_keys(c, dv, "a device entry", dkeys);
                const char *pname = st ? NULL : (get(c, dv, "profile") ? sval(get(c, dv, "profile")) : NULL);
                const clnpu_profile *p = pname ? clnpu_profile_set_find(set, pname) : NULL;
                if (!st && !p) st = clnpu_yaml_fail_at(c->origin, dv, "unknown device profile '%s'", pname ? pname : "(none)");
                double n = 1;
                if (!st && (v = get(c, dv, "count"))) st = num(c, v, "count", &n);
                if (!st && (n < 1 || n != floor(n) || n > 1 << 20)) /* before the cast to size_t */
                    st = clnpu_yaml_fail_at(c->origin, dv, "device count must be an integer from 1 to 2^20");
                clnpu_profile prof;
                if (!st) prof = *p;
                if (!st && (v = get(c, dv, "overrides"))) st = apply_overrides(c, v, &prof);
                if (!st) st = add_devices(cl, &prof, (size_t)n, cl->nodes, shared, &cap);
            }
    }
    yaml_node_t *links = st ? NULL : get(c, root, "links");
    if (!st && cl->count) {
        cl->intra = cl->devices[0].profile.link;
        cl->inter = (clnpu_link){"network-100g", 1.25e10, 1e-5};
    }
    if (!st && links) {
        static const char *const lkeys[] = {"intra_node", "inter_node", NULL};
        st = check_keys(c, links, "links", lkeys);
        if (!st && (v = get(c, links, "intra_node"))) st = link_of(c, v, "links.intra_node", &cl->intra);
        if (!st && (v = get(c, links, "inter_node"))) st = link_of(c, v, "links.inter_node", &cl->inter);
    }
    if (!st && cl->intra.bandwidth <= 0) cl->intra = (clnpu_link){"pcie", 2.5e10, 5e-6};
    return st;
}

clnpu_status clnpu_cluster_parse(const char *text, size_t len, const char *origin, const clnpu_profile_set *profiles,
                                 clnpu_cluster **out)
{
    *out = NULL;
    clnpu_profile_set *builtin = NULL;
    if (!profiles) {
        clnpu_status st = clnpu_profile_set_builtin(&builtin);
        if (st) return st;
        profiles = builtin;
    }
    yaml_document_t doc;
    clnpu_status st = clnpu_yaml_load_text(text, len, origin, &doc);
    if (st) {
        clnpu_profile_set_destroy(builtin);
        return st;
    }
    clnpu_cluster *cl = calloc(1, sizeof *cl);
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    ctx c = {&doc, origin};
    if (!cl) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    else if (!root) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: empty cluster file", origin);
    else st = parse_root(&c, root, profiles, cl);
    if (!st && !cl->name[0]) snprintf(cl->name, sizeof cl->name, "%s", origin);
    yaml_document_delete(&doc);
    clnpu_profile_set_destroy(builtin);
    if (st) {
        clnpu_cluster_destroy(cl);
        return st;
    }
    *out = cl;
    return CLNPU_OK;
}

clnpu_status clnpu_cluster_load(const char *path, const clnpu_profile_set *profiles, clnpu_cluster **out)
{
    char *buf;
    size_t n;
    clnpu_status st = clnpu_file_read_all(path, &buf, &n);
    if (st) return st;
    st = clnpu_cluster_parse(buf, n, path, profiles, out);
    free(buf);
    return st;
}
