/* Target profile YAML parser (libyaml document API). Every error names file, line and column. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "clnpu/profile.h"
#include "../common/error.h"
#include "../common/file_read.h"
#include "../common/yaml_in.h"

typedef struct parse_ctx {
    yaml_document_t *doc;
    const char *origin;
} parse_ctx;


static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_null(const yaml_node_t *n)
{
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return false;
    const char *s = scalar(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static clnpu_status get_string(const parse_ctx *c, const yaml_node_t *n, const char *key, char *out,
                               size_t cap)
{
    if (n->type != YAML_SCALAR_NODE) return clnpu_yaml_fail_at(c->origin, n, "'%s' must be a string", key);
    if (strlen(scalar(n)) >= cap)
        return clnpu_yaml_fail_at(c->origin, n, "'%s' is longer than %zu characters", key, cap - 1);
    strcpy(out, scalar(n));
    return CLNPU_OK;
}

/* A non-negative number; null (allowed_null) gives 0 = "not supported / unknown". */
static clnpu_status get_number(const parse_ctx *c, const yaml_node_t *n, const char *key,
                               bool allow_null, double *out)
{
    if (allow_null && is_null(n)) { *out = 0; return CLNPU_OK; }
    if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return clnpu_yaml_fail_at(c->origin, n, "'%s' must be a number%s", key, allow_null ? " or null" : "");
    char *end = NULL;
    errno = 0;
    double v = strtod(scalar(n), &end);
    if (end == scalar(n) || *end || errno || !isfinite(v))
        return clnpu_yaml_fail_at(c->origin, n, "'%s' must be a number%s, got '%s'", key, allow_null ? " or null" : "",
                       scalar(n));
    if (v < 0) return clnpu_yaml_fail_at(c->origin, n, "'%s' must not be negative, got '%s'", key, scalar(n));
    *out = v;
    return CLNPU_OK;
}

static clnpu_status get_int(const parse_ctx *c, const yaml_node_t *n, const char *key,
                            bool allow_null, int64_t max, int64_t *out)
{
    double v = 0;
    clnpu_status st = get_number(c, n, key, allow_null, &v);
    if (st) return st;
    if (v != floor(v) || v > (double)max)
        return clnpu_yaml_fail_at(c->origin, n, "'%s' must be a whole number up to %lld, got '%s'", key, (long long)max,
                       scalar(n));
    *out = (int64_t)v;
    return CLNPU_OK;
}

/* A list of strings, or a single string taken as a one-element list. */
static clnpu_status get_string_list(const parse_ctx *c, const yaml_node_t *n, const char *key,
                                    char (*out)[64], int cap, int *out_count)
{
    *out_count = 0;
    if (n->type == YAML_SCALAR_NODE) return get_string(c, n, key, out[(*out_count)++], 64);
    if (n->type != YAML_SEQUENCE_NODE) return clnpu_yaml_fail_at(c->origin, n, "'%s' must be a list of strings", key);
    for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top; it++) {
        yaml_node_t *e = yaml_document_get_node(c->doc, *it);
        if (*out_count == cap) return clnpu_yaml_fail_at(c->origin, e, "'%s' has more than %d entries", key, cap);
        clnpu_status st = get_string(c, e, key, out[(*out_count)++], 64);
        if (st) return st;
    }
    return CLNPU_OK;
}

typedef clnpu_status (*field_fn)(const parse_ctx *c, const yaml_node_t *key, const yaml_node_t *val,
                                 void *target);

/* Iterate a mapping, calling fn per pair; fn reports unknown keys itself. */
static clnpu_status each_pair(const parse_ctx *c, const yaml_node_t *map, const char *what,
                              field_fn fn, void *target)
{
    if (map->type != YAML_MAPPING_NODE) return clnpu_yaml_fail_at(c->origin, map, "'%s' must be a mapping", what);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(c->doc, p->value);
        if (k->type != YAML_SCALAR_NODE) return clnpu_yaml_fail_at(c->origin, k, "keys in '%s' must be strings", what);
        for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++)
            if (!strcmp(scalar(yaml_document_get_node(c->doc, q->key)), scalar(k)))
                return clnpu_yaml_fail_at(c->origin, k, "duplicate key '%s' in '%s'", scalar(k), what);
        clnpu_status st = fn(c, k, v, target);
        if (st) return st;
    }
    return CLNPU_OK;
}

static const char *const peak_names[CLNPU_PEAK_COUNT] = {"fp32", "fp16", "bf16", "fp8", "int8", "int4"};

static clnpu_status compute_field(const parse_ctx *c, const yaml_node_t *k, const yaml_node_t *v,
                                  void *target)
{
    clnpu_profile *p = target;
    for (int i = 0; i < CLNPU_PEAK_COUNT; i++)
        if (!strcmp(scalar(k), peak_names[i])) return get_number(c, v, scalar(k), true, &p->peak[i]);
    return clnpu_yaml_fail_at(c->origin, k, "unknown key 'compute.%s' (expected fp32, fp16, bf16, fp8, int8, int4)",
                   scalar(k));
}

static clnpu_status memory_field(const parse_ctx *c, const yaml_node_t *k, const yaml_node_t *v,
                                 void *target)
{
    clnpu_profile *p = target;
    const char *key = scalar(k);
    if (!strcmp(key, "type")) return get_string(c, v, "memory.type", p->memory_type, sizeof p->memory_type);
    if (!strcmp(key, "bytes")) return get_int(c, v, "memory.bytes", false, INT64_MAX / 2, &p->memory_bytes);
    if (!strcmp(key, "bandwidth")) return get_number(c, v, "memory.bandwidth", false, &p->memory_bandwidth);
    if (!strcmp(key, "program_bytes")) return get_int(c, v, "memory.program_bytes", false, INT64_MAX / 2, &p->program_bytes);
    return clnpu_yaml_fail_at(c->origin, k, "unknown key 'memory.%s' (expected type, bytes, bandwidth, program_bytes)", key);
}

static clnpu_status link_field(const parse_ctx *c, const yaml_node_t *k, const yaml_node_t *v,
                               void *target)
{
    clnpu_link *l = target;
    const char *key = scalar(k);
    if (!strcmp(key, "type")) return get_string(c, v, "link.type", l->type, sizeof l->type);
    if (!strcmp(key, "bandwidth")) return get_number(c, v, "link.bandwidth", true, &l->bandwidth);
    if (!strcmp(key, "latency_s")) return get_number(c, v, "link.latency_s", true, &l->latency_s);
    return clnpu_yaml_fail_at(c->origin, k, "unknown key '%s' in a link (expected type, bandwidth, latency_s)", key);
}

static clnpu_status kernel_field(const parse_ctx *c, const yaml_node_t *k, const yaml_node_t *v,
                                 void *target)
{
    clnpu_kernel_params *kp = target;
    static const struct { const char *name; size_t off; } ints[] = {
        {"tile_m", offsetof(clnpu_kernel_params, tile_m)},
        {"tile_n", offsetof(clnpu_kernel_params, tile_n)},
        {"tile_k", offsetof(clnpu_kernel_params, tile_k)},
        {"vector_width", offsetof(clnpu_kernel_params, vector_width)},
        {"wg_x", offsetof(clnpu_kernel_params, wg_x)},
        {"wg_y", offsetof(clnpu_kernel_params, wg_y)},
    };
    const char *key = scalar(k);
    int64_t val = 0;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (strcmp(key, ints[i].name)) continue;
        clnpu_status st = get_int(c, v, key, false, 65536, &val);
        if (st) return st;
        *(int *)((char *)kp + ints[i].off) = (int)val;
        return CLNPU_OK;
    }
    if (!strcmp(key, "local_mem_bytes"))
        return get_int(c, v, "kernel.local_mem_bytes", true, INT64_MAX / 2, &kp->local_mem_bytes);
    return clnpu_yaml_fail_at(c->origin, k,
                   "unknown key 'kernel.%s' (expected tile_m, tile_n, tile_k, vector_width, wg_x, "
                   "wg_y, local_mem_bytes)", key);
}

static clnpu_status match_field(const parse_ctx *c, const yaml_node_t *k, const yaml_node_t *v,
                                void *target)
{
    clnpu_profile *p = target;
    const char *key = scalar(k);
    if (!strcmp(key, "vendor"))
        return get_string_list(c, v, "match.vendor", p->match_vendor, CLNPU_PROFILE_MAX_PATTERNS,
                               &p->match_vendor_count);
    if (!strcmp(key, "name"))
        return get_string_list(c, v, "match.name", p->match_name, CLNPU_PROFILE_MAX_PATTERNS,
                               &p->match_name_count);
    if (!strcmp(key, "type")) {
        char types[CLNPU_PROFILE_MAX_PATTERNS][64];
        int n = 0;
        clnpu_status st = get_string_list(c, v, "match.type", types, CLNPU_PROFILE_MAX_PATTERNS, &n);
        if (st) return st;
        for (int i = 0; i < n; i++) {
            if (!strcasecmp(types[i], "cpu")) p->match_types |= CLNPU_MATCH_TYPE_CPU;
            else if (!strcasecmp(types[i], "gpu")) p->match_types |= CLNPU_MATCH_TYPE_GPU;
            else if (!strcasecmp(types[i], "accelerator")) p->match_types |= CLNPU_MATCH_TYPE_ACCELERATOR;
            else return clnpu_yaml_fail_at(c->origin, v, "unknown device type '%s' (expected cpu, gpu, accelerator)", types[i]);
        }
        return CLNPU_OK;
    }
    return clnpu_yaml_fail_at(c->origin, k, "unknown key 'match.%s' (expected vendor, name, type)", key);
}

typedef struct seen_fields {
    clnpu_profile *p;
    bool name, class_name, vendor, compute, memory;
} seen_fields;

static clnpu_status top_field(const parse_ctx *c, const yaml_node_t *k, const yaml_node_t *v,
                              void *target)
{
    seen_fields *s = target;
    clnpu_profile *p = s->p;
    const char *key = scalar(k);
    if (!strcmp(key, "name")) {
        s->name = true;
        clnpu_status st = get_string(c, v, "name", p->name, sizeof p->name);
        if (!st && !p->name[0]) return clnpu_yaml_fail_at(c->origin, v, "'name' must not be empty");
        return st;
    }
    if (!strcmp(key, "class")) { s->class_name = true; return get_string(c, v, "class", p->class_name, sizeof p->class_name); }
    if (!strcmp(key, "vendor")) { s->vendor = true; return get_string(c, v, "vendor", p->vendor, sizeof p->vendor); }
    if (!strcmp(key, "notes")) return get_string(c, v, "notes", p->notes, sizeof p->notes);
    if (!strcmp(key, "match")) return each_pair(c, v, "match", match_field, p);
    if (!strcmp(key, "compute")) { s->compute = true; return each_pair(c, v, "compute", compute_field, p); }
    if (!strcmp(key, "memory")) { s->memory = true; return each_pair(c, v, "memory", memory_field, p); }
    if (!strcmp(key, "link")) return each_pair(c, v, "link", link_field, &p->link);
    if (!strcmp(key, "host_link")) return each_pair(c, v, "host_link", link_field, &p->host_link);
    if (!strcmp(key, "kernel")) return each_pair(c, v, "kernel", kernel_field, &p->kernel);
    if (!strcmp(key, "sram_bytes")) return get_int(c, v, "sram_bytes", true, INT64_MAX / 2, &p->sram_bytes);
    if (!strcmp(key, "compute_units")) {
        int64_t cu;
        clnpu_status st = get_int(c, v, "compute_units", true, 1 << 20, &cu);
        p->compute_units = (int)cu;
        return st;
    }
    if (!strcmp(key, "estimated")) {
        char items[32][64];
        int n = 0;
        clnpu_status st = get_string_list(c, v, "estimated", items, 32, &n);
        if (st) return st;
        for (int i = 0; i < n; i++) {
            if (strlen(p->estimated) + strlen(items[i]) + 2 >= sizeof p->estimated)
                return clnpu_yaml_fail_at(c->origin, v, "'estimated' list is too long");
            if (i) strcat(p->estimated, ",");
            strcat(p->estimated, items[i]);
        }
        return CLNPU_OK;
    }
    return clnpu_yaml_fail_at(c->origin, k,
                   "unknown key '%s' (expected name, class, vendor, match, compute, memory, "
                   "sram_bytes, compute_units, link, host_link, kernel, estimated, notes)", key);
}

clnpu_status clnpu_profile_parse(const char *text, size_t len, const char *origin,
                                 clnpu_profile *out)
{
    if (!text || !out) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_profile_parse: NULL argument");
    if (!origin) origin = "<profile>";
    memset(out, 0, sizeof *out);
    snprintf(out->source, sizeof out->source, "%s", origin);

    clnpu_status lst = clnpu_yaml_check_limits(text, len, origin); /* before libyaml's quadratic nesting */
    if (lst) return lst;
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser))
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "%s: cannot initialise the YAML parser", origin);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        clnpu_status st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu:%zu: bad YAML: %s%s%s", origin,
                                     parser.problem_mark.line + 1, parser.problem_mark.column + 1,
                                     parser.problem ? parser.problem : "parse error",
                                     parser.context ? " " : "", parser.context ? parser.context : "");
        yaml_parser_delete(&parser);
        return st;
    }
    parse_ctx c = {&doc, origin};
    clnpu_status st = CLNPU_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root) {
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s:1:1: empty profile (expected a mapping with name, "
                        "class, vendor, compute, memory)", origin);
    } else {
        seen_fields seen = {.p = out};
        st = each_pair(&c, root, "profile", top_field, &seen);
        const char *missing = !seen.name         ? "name"
                              : !seen.class_name ? "class"
                              : !seen.vendor     ? "vendor"
                              : !seen.compute    ? "compute"
                              : !seen.memory     ? "memory"
                                                 : NULL;
        if (!st && missing)
            st = clnpu_yaml_fail_at(c.origin, root, "missing required field '%s'", missing);
        if (!st && out->memory_bytes <= 0)
            st = clnpu_yaml_fail_at(c.origin, root, "missing required field 'memory.bytes'");
        if (!st && out->memory_bandwidth <= 0)
            st = clnpu_yaml_fail_at(c.origin, root, "missing required field 'memory.bandwidth'");
        /* A second document in the same file is almost certainly a mistake: say so. */
        yaml_document_t extra;
        if (!st && yaml_parser_load(&parser, &extra)) {
            if (yaml_document_get_root_node(&extra))
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu:1: more than one YAML document; one "
                                "profile per file", origin, parser.mark.line + 1);
            yaml_document_delete(&extra);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return st;
}

clnpu_status clnpu_profile_load_file(const char *path, clnpu_profile *out)
{
    char *buf;
    size_t len;
    clnpu_status st = clnpu_file_read_all(path, &buf, &len);
    if (st) return st;
    st = clnpu_profile_parse(buf, len, path, out);
    free(buf);
    return st;
}
