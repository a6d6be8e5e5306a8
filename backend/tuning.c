/* The kernel tuning database (YAML through libyaml): load, merge, save, lookup with
 * nearest-device fallback, and the device's default database. */
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yaml.h>

#include "clnpu/tuning.h"
#include "device_internal.h"
#include "embedded.h"
#include "../common/error.h"
#include "../common/file_read.h"
#include "../common/yaml_in.h"
#include "../common/hash.h"
#include "../common/yaml_out.h"

struct clnpu_tuning_db {
    clnpu_tuning_entry *items;
    size_t count, cap;
};

clnpu_status clnpu_tuning_db_create(clnpu_tuning_db **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? CLNPU_OK : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
}

void clnpu_tuning_db_destroy(clnpu_tuning_db *db)
{
    if (!db) return;
    free(db->items);
    free(db);
}

size_t clnpu_tuning_db_count(const clnpu_tuning_db *db) { return db ? db->count : 0; }
const clnpu_tuning_entry *clnpu_tuning_db_get(const clnpu_tuning_db *db, size_t i) { return i < db->count ? &db->items[i] : NULL; }

static bool same_slot(const clnpu_tuning_entry *a, const clnpu_tuning_entry *b)
{
    return !strcmp(a->device_key, b->device_key) && !strcmp(a->kernel, b->kernel) && !strcmp(a->dtype, b->dtype) &&
           !strcmp(a->shape_class, b->shape_class);
}

clnpu_status clnpu_tuning_db_put(clnpu_tuning_db *db, const clnpu_tuning_entry *e)
{
    for (size_t i = 0; i < db->count; i++)
        if (same_slot(&db->items[i], e)) {
            db->items[i] = *e;
            return CLNPU_OK;
        }
    if (db->count == db->cap) {
        size_t cap = db->cap ? 2 * db->cap : 32;
        clnpu_tuning_entry *n = realloc(db->items, cap * sizeof *n);
        if (!n) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        db->items = n, db->cap = cap;
    }
    db->items[db->count++] = *e;
    return CLNPU_OK;
}

/* The allowed values of every tunable, from kernels-cl/tunables.yaml (embedded): a database
 * entry must use one of them, since anything else goes to the compiler as a -D (kacc 1000000
 * unrolled for minutes). Families named kernel_suffix (attention_regs) belong to kernel. */
#define TUNABLE_MAX 64
#define TUNABLE_VALUES 16
typedef struct tunable {
    char family[32], name[16];
    int values[TUNABLE_VALUES];
    int nvalues;
} tunable;
static tunable tunables[TUNABLE_MAX];
static size_t ntunables;
/* constraints.max_product rules: a * b <= max (b may be a number), registers per work-item */
typedef struct tunable_product {
    char family[32], a[16], b[16];
    long max;
} tunable_product;
static tunable_product products[TUNABLE_MAX];
static size_t nproducts;
static pthread_once_t tunables_once = PTHREAD_ONCE_INIT;

static void tunables_load(void)
{
    const char *text = clnpu_tunables_yaml();
    yaml_document_t doc;
    if (clnpu_yaml_load_text(text, strlen(text), "tunables.yaml", &doc)) return;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    for (yaml_node_pair_t *f = root && root->type == YAML_MAPPING_NODE ? root->data.mapping.pairs.start : NULL;
         f && f < root->data.mapping.pairs.top; f++) {
        const char *fam = clnpu_yaml_scalar(yaml_document_get_node(&doc, f->key));
        yaml_node_t *params = clnpu_yaml_get(&doc, yaml_document_get_node(&doc, f->value), "params");
        for (yaml_node_pair_t *p = params && params->type == YAML_MAPPING_NODE ? params->data.mapping.pairs.start : NULL;
             fam && p && p < params->data.mapping.pairs.top && ntunables < TUNABLE_MAX; p++) {
            const char *name = clnpu_yaml_scalar(yaml_document_get_node(&doc, p->key));
            yaml_node_t *vals = yaml_document_get_node(&doc, p->value);
            if (!name || vals->type != YAML_SEQUENCE_NODE) continue;
            tunable *t = &tunables[ntunables++];
            snprintf(t->family, sizeof t->family, "%s", fam);
            snprintf(t->name, sizeof t->name, "%s", name);
            for (yaml_node_item_t *it = vals->data.sequence.items.start;
                 it < vals->data.sequence.items.top && t->nvalues < TUNABLE_VALUES; it++) {
                const char *v = clnpu_yaml_scalar(yaml_document_get_node(&doc, *it));
                if (v) t->values[t->nvalues++] = atoi(v); /* the project's own file */
            }
        }
        yaml_node_t *cons = clnpu_yaml_get(&doc, yaml_document_get_node(&doc, f->value), "constraints");
        yaml_node_t *mp = clnpu_yaml_get(&doc, cons, "max_product");
        for (yaml_node_item_t *r = fam && mp && mp->type == YAML_SEQUENCE_NODE ? mp->data.sequence.items.start : NULL;
             r && r < mp->data.sequence.items.top && nproducts < TUNABLE_MAX; r++) {
            yaml_node_t *rule = yaml_document_get_node(&doc, *r);
            if (rule->type != YAML_SEQUENCE_NODE || rule->data.sequence.items.top - rule->data.sequence.items.start != 3)
                continue;
            const char *a = clnpu_yaml_scalar(yaml_document_get_node(&doc, rule->data.sequence.items.start[0]));
            const char *b = clnpu_yaml_scalar(yaml_document_get_node(&doc, rule->data.sequence.items.start[1]));
            const char *mx = clnpu_yaml_scalar(yaml_document_get_node(&doc, rule->data.sequence.items.start[2]));
            if (!a || !b || !mx) continue;
            tunable_product *p = &products[nproducts++];
            snprintf(p->family, sizeof p->family, "%s", fam);
            snprintf(p->a, sizeof p->a, "%s", a);
            snprintf(p->b, sizeof p->b, "%s", b);
            p->max = atol(mx);
        }
    }
    yaml_document_delete(&doc);
}

/* An entry's values together: the max_product rules of its kernel's families (registers). */
static clnpu_status check_products(const char *origin, size_t line, const clnpu_tuning_entry *e)
{
    pthread_once(&tunables_once, tunables_load);
    const size_t kl = strlen(e->kernel);
    for (size_t i = 0; i < nproducts; i++) {
        const tunable_product *p = &products[i];
        if (strncmp(p->family, e->kernel, kl) || (p->family[kl] && p->family[kl] != '_')) continue;
        const bool b_literal = p->b[0] >= '0' && p->b[0] <= '9';
        const int a = clnpu_tuning_param(e, p->a, -1), b = b_literal ? atoi(p->b) : clnpu_tuning_param(e, p->b, -1);
        if (a < 0 || b < 0) continue; /* a parameter the entry leaves at its default */
        if ((long)a * b > p->max)
            return clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: %s tunables %s x %s = %ld exceed %ld (kernels-cl/tunables.yaml "
                              "max_product)", origin, line, e->kernel, p->a, p->b, (long)a * b, p->max);
    }
    return CLNPU_OK;
}

/* Whether kernel's tunable `name` may be `value`; otherwise a message naming what is allowed. */
static clnpu_status check_tunable(const char *origin, size_t line, const char *kernel, const char *name, long value)
{
    pthread_once(&tunables_once, tunables_load);
    const size_t kl = strlen(kernel);
    bool known_kernel = false;
    for (size_t i = 0; i < ntunables; i++) {
        const tunable *t = &tunables[i];
        if (strncmp(t->family, kernel, kl) || (t->family[kl] && t->family[kl] != '_')) continue;
        known_kernel = true;
        if (strcmp(t->name, name)) continue;
        char list[128] = "";
        for (int v = 0; v < t->nvalues; v++) {
            if (t->values[v] == value) return CLNPU_OK;
            snprintf(list + strlen(list), sizeof list - strlen(list), v ? ", %d" : "%d", t->values[v]);
        }
        return clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: %s tunable %s = %ld is not one of %s (kernels-cl/tunables.yaml)",
                          origin, line, kernel, name, value, list);
    }
    return clnpu_fail(CLNPU_ERR_PARSE, known_kernel ? "%s:%zu: kernel %s has no tunable '%s' (kernels-cl/tunables.yaml)"
                                                    : "%s:%zu: kernel '%s' has no tunables (kernels-cl/tunables.yaml; "
                                                      "parameter '%s')",
                      origin, line, kernel, name);
}

/* A whole-string integer in [lo, hi] (strtoll: no trailing text, no overflow). */
static bool strict_ll(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = s && *s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* The ISA class of an entry from its device key (vendor|name|driver|hash) and capabilities. */
static void entry_isa_from_key(clnpu_tuning_entry *e)
{
    const char *name = strchr(e->device_key, '|');
    char dname[256] = "", cpu[48];
    if (name) snprintf(dname, sizeof dname, "%.*s", (int)strcspn(name + 1, "|"), name + 1);
    clnpu_isa_llvm_cpu(dname, cpu, sizeof cpu);
    snprintf(e->isa, sizeof e->isa, "%s",
             clnpu_isa_class_of(cpu, (clnpu_device_type)e->type, (unsigned)e->vector_width));
}

clnpu_status clnpu_tuning_db_merge_text(clnpu_tuning_db *db, const char *text, size_t len, const char *origin)
{
    /* entries go to a scratch database first: a file with a bad entry adds nothing */
    clnpu_tuning_db *into = db, scratch = {0};
    db = &scratch;
    yaml_document_t doc;
    clnpu_status st = clnpu_yaml_load_text(text, len, origin, &doc);
    if (st) return st;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    const char *fmt = root ? clnpu_yaml_value(&doc, root, "format") : NULL;
    yaml_node_t *entries = root ? clnpu_yaml_get(&doc, root, "entries") : NULL;
    if (root && (!fmt || strcmp(fmt, "clnpu-tuning-1")))
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: not a clnpu tuning database (format: clnpu-tuning-1)", origin);
    else if (entries && entries->type != YAML_SEQUENCE_NODE)
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: 'entries' must be a list", origin);
    for (yaml_node_item_t *it = st || !entries ? NULL : entries->data.sequence.items.start;
         it && it < entries->data.sequence.items.top && !st; it++) {
        yaml_node_t *n = yaml_document_get_node(&doc, *it);
        clnpu_tuning_entry e;
        memset(&e, 0, sizeof e);
        const char *dev = clnpu_yaml_value(&doc, n, "device"), *k = clnpu_yaml_value(&doc, n, "kernel"), *dt = clnpu_yaml_value(&doc, n, "dtype"),
                   *cl = clnpu_yaml_value(&doc, n, "class"), *src = clnpu_yaml_value(&doc, n, "source");
        yaml_node_t *params = clnpu_yaml_get(&doc, n, "params"), *caps = clnpu_yaml_get(&doc, n, "capabilities");
        if (!dev || !k || !dt || !cl || !src || !params || params->type != YAML_MAPPING_NODE) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: an entry needs device, kernel, dtype, class, source and params",
                            origin, n->start_mark.line + 1);
            break;
        }
        snprintf(e.device_key, sizeof e.device_key, "%s", dev);
        snprintf(e.kernel, sizeof e.kernel, "%s", k);
        snprintf(e.dtype, sizeof e.dtype, "%s", dt);
        snprintf(e.shape_class, sizeof e.shape_class, "%s", cl);
        snprintf(e.source_hash, sizeof e.source_hash, "%s", src);
        for (yaml_node_pair_t *p = params->data.mapping.pairs.start; p < params->data.mapping.pairs.top; p++) {
            yaml_node_t *pk = yaml_document_get_node(&doc, p->key), *pv = yaml_document_get_node(&doc, p->value);
            long long v = 0;
            if (pk->type != YAML_SCALAR_NODE || pv->type != YAML_SCALAR_NODE ||
                !strict_ll((char *)pv->data.scalar.value, -1000000000LL, 1000000000LL, &v) ||
                e.nparams == CLNPU_TUNING_MAX_PARAMS) {
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: params must be up to %d integer values", origin,
                                pk->start_mark.line + 1, CLNPU_TUNING_MAX_PARAMS);
                break;
            }
            st = check_tunable(origin, pv->start_mark.line + 1, e.kernel, (char *)pk->data.scalar.value, (long)v);
            if (st) break;
            snprintf(e.names[e.nparams], sizeof e.names[0], "%s", (char *)pk->data.scalar.value);
            e.values[e.nparams++] = (int)v;
        }
        /* the rest strictly too: numbers that are not are errors, not zeros */
        static const char *const times[] = {"ms", "default_ms"};
        double *tdst[] = {&e.ms, &e.default_ms};
        for (size_t i = 0; !st && i < 2; i++) {
            yaml_node_t *v = clnpu_yaml_get(&doc, n, times[i]);
            const char *s = clnpu_yaml_scalar(v);
            char *end;
            double x = s ? strtod(s, &end) : 0;
            if (v && (!s || !*s || *end || !isfinite(x) || x < 0))
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: '%s' must be a non-negative number of milliseconds", origin,
                                v->start_mark.line + 1, times[i]);
            else if (v) *tdst[i] = x;
        }
        static const char *const capk[] = {"type", "compute_units", "local_mem", "vector_width", "fp16", "int_dot"};
        for (size_t i = 0; !st && i < sizeof capk / sizeof capk[0]; i++) {
            yaml_node_t *v = clnpu_yaml_get(&doc, caps, capk[i]);
            long long x = 0;
            if (!v) continue;
            if (!strict_ll(clnpu_yaml_scalar(v), 0, i == 2 ? (1LL << 50) : 0x7fffffffLL, &x)) {
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: capabilities.%s must be a non-negative integer", origin,
                                v->start_mark.line + 1, capk[i]);
                break;
            }
            switch (i) {
            case 0: e.type = (int)x; break;
            case 1: e.compute_units = (int)x; break;
            case 2: e.local_mem = x; break;
            case 3: e.vector_width = (int)x; break;
            case 4: e.fp16 = (int)x; break;
            default: e.int_dot = (int)x; break;
            }
        }
        if (!st) st = check_products(origin, params->start_mark.line + 1, &e);
        const char *s;
        if ((s = clnpu_yaml_value(&doc, n, "measured"))) snprintf(e.measured, sizeof e.measured, "%s", s);
        if ((s = clnpu_yaml_value(&doc, n, "how"))) snprintf(e.how, sizeof e.how, "%s", s);
        if ((s = clnpu_yaml_value(&doc, caps, "isa"))) snprintf(e.isa, sizeof e.isa, "%s", s);
        if ((s = clnpu_yaml_value(&doc, caps, "cpu"))) snprintf(e.cpu, sizeof e.cpu, "%s", s);
        if (!e.isa[0]) entry_isa_from_key(&e); /* databases written before the field */
        if (!st) st = clnpu_tuning_db_put(db, &e);
    }
    yaml_document_delete(&doc);
    for (size_t i = 0; !st && i < scratch.count; i++) st = clnpu_tuning_db_put(into, &scratch.items[i]);
    free(scratch.items);
    return st;
}

clnpu_status clnpu_tuning_db_merge_file(clnpu_tuning_db *db, const char *path)
{
    if (access(path, F_OK) != 0 && errno == ENOENT) return CLNPU_OK; /* no database yet */
    char *buf;
    size_t n;
    clnpu_status st = clnpu_file_read_all(path, &buf, &n);
    if (st) return st;
    st = clnpu_tuning_db_merge_text(db, buf, n, path);
    free(buf);
    return st;
}

clnpu_status clnpu_tuning_db_load(const char *path, clnpu_tuning_db **out)
{
    clnpu_status st = clnpu_tuning_db_create(out);
    if (!st) st = clnpu_tuning_db_merge_file(*out, path);
    if (st) {
        clnpu_tuning_db_destroy(*out);
        *out = NULL;
    }
    return st;
}

clnpu_status clnpu_tuning_db_save(const clnpu_tuning_db *db, const char *path)
{
    clnpu_file_out out; /* through a symlink to its target; a device or FIFO is refused */
    clnpu_status st = clnpu_file_out_open(path, &out);
    if (st) return st;
    FILE *f = out.f;
    clnpu_yaml *y = clnpu_yaml_begin(f);
    clnpu_yaml_map_begin(y);
    clnpu_yaml_kv_str(y, "format", "clnpu-tuning-1");
    clnpu_yaml_key(y, "entries");
    clnpu_yaml_seq_begin(y);
    for (size_t i = 0; i < db->count; i++) {
        const clnpu_tuning_entry *e = &db->items[i];
        clnpu_yaml_map_begin(y);
        clnpu_yaml_kv_str(y, "device", e->device_key);
        clnpu_yaml_kv_str(y, "kernel", e->kernel);
        clnpu_yaml_kv_str(y, "dtype", e->dtype);
        clnpu_yaml_kv_str(y, "class", e->shape_class);
        clnpu_yaml_kv_str(y, "source", e->source_hash);
        clnpu_yaml_key(y, "params");
        clnpu_yaml_map_begin(y);
        for (int p = 0; p < e->nparams; p++) clnpu_yaml_kv_int(y, e->names[p], e->values[p]);
        clnpu_yaml_map_end(y);
        clnpu_yaml_kv_num(y, "ms", e->ms);
        clnpu_yaml_kv_num(y, "default_ms", e->default_ms);
        clnpu_yaml_kv_str(y, "measured", e->measured);
        clnpu_yaml_kv_str(y, "how", e->how);
        clnpu_yaml_key(y, "capabilities");
        clnpu_yaml_map_begin(y);
        clnpu_yaml_kv_int(y, "type", e->type);
        clnpu_yaml_kv_int(y, "compute_units", e->compute_units);
        clnpu_yaml_kv_int(y, "local_mem", e->local_mem);
        clnpu_yaml_kv_int(y, "vector_width", e->vector_width);
        clnpu_yaml_kv_int(y, "fp16", e->fp16);
        clnpu_yaml_kv_int(y, "int_dot", e->int_dot);
        clnpu_yaml_kv_str(y, "isa", e->isa);
        if (e->cpu[0]) clnpu_yaml_kv_str(y, "cpu", e->cpu);
        clnpu_yaml_map_end(y);
        clnpu_yaml_map_end(y);
    }
    clnpu_yaml_seq_end(y);
    clnpu_yaml_map_end(y);
    if (!clnpu_yaml_end(y)) {
        clnpu_file_out_abort(&out);
        return clnpu_fail(CLNPU_ERR_IO, "%s: cannot write the tuning database", path);
    }
    return clnpu_file_out_commit(&out);
}

void clnpu_tuning_format_device_key(const clnpu_device *dev, char *out, size_t cap)
{
    uint64_t h = clnpu_fnv1a(CLNPU_FNV_OFFSET, dev->base_options, strlen(dev->base_options));
    snprintf(out, cap, "%s|%s|%s|%016llx", dev->info.vendor, dev->info.name, dev->info.driver_version,
             (unsigned long long)h);
}

void clnpu_tuning_device_key(const clnpu_device *dev, char *out, size_t cap)
{
    snprintf(out, cap, "%s", dev->tuning_key);
}

void clnpu_tuning_source_hash(const char *name, char out[17])
{
    const clnpu_embedded_file *f = clnpu_embedded_find(clnpu_embedded_kernels, name);
    /* hashed at build time (tools/embed.py): this runs on every tuned launch */
    snprintf(out, 17, "%016llx", f ? f->hash : 0ULL);
}

void clnpu_tuning_entry_set_device(clnpu_tuning_entry *e, const clnpu_device *dev)
{
    clnpu_tuning_device_key(dev, e->device_key, sizeof e->device_key);
    e->type = dev->info.type, e->compute_units = (int)dev->info.compute_units;
    e->local_mem = (long long)dev->info.local_mem_bytes, e->vector_width = (int)dev->info.pref_vector_width_float;
    e->fp16 = dev->info.fp16, e->int_dot = dev->info.int_dot_product;
    snprintf(e->isa, sizeof e->isa, "%s", dev->isa.name);
    snprintf(e->cpu, sizeof e->cpu, "%s", dev->isa.cpu);
}

static const char *source_of(const char *kernel)
{
    if (!strcmp(kernel, "gemm")) return "gemm.cl";
    if (!strcmp(kernel, "gemm_wg")) return "gemm_wg.cl";
    if (!strcmp(kernel, "attention")) return "attention.cl";
    if (!strcmp(kernel, "mla")) return "mla.cl";
    return "";
}

/* The vendor part of a CPU string ("AuthenticAMD 26/2" -> "AuthenticAMD"). */
static size_t cpu_vendor_len(const char *cpu) { return strcspn(cpu, " "); }

/* Whether an entry measured elsewhere may stand in for this device at all: never across an ISA
 * class (register budget and vector width differ: an AVX-512 block spills on AVX2), and for CPUs
 * never across CPU vendors (an AVX-512 Xeon's and an AVX-512 EPYC's best blocks differ). */
static bool may_stand_in(const clnpu_tuning_entry *e, const clnpu_device *dev)
{
    if (strcmp(e->isa, dev->isa.name)) return false;
    if (dev->info.type == CLNPU_DEVICE_TYPE_CPU) {
        const char *ev = e->cpu[0] ? e->cpu : e->device_key; /* old entries: the key's vendor */
        size_t n = e->cpu[0] ? cpu_vendor_len(e->cpu) : strcspn(e->device_key, "|");
        const char *dv = dev->isa.cpu[0] ? dev->isa.cpu : dev->info.vendor;
        size_t dn = dev->isa.cpu[0] ? cpu_vendor_len(dev->isa.cpu) : strlen(dev->info.vendor);
        if (n != dn || strncmp(ev, dv, n)) return false;
    }
    return true;
}

/* Capability distance: a different device type is far; then relative differences. */
static double distance(const clnpu_tuning_entry *e, const clnpu_device_info *d, const char *cpu)
{
    double x = e->type == (int)d->type ? 0 : 100;
    x += strcmp(e->cpu, cpu) ? 1 : 0; /* another family / model of the same vendor */
    x += fabs(log2((e->compute_units + 1.0) / (d->compute_units + 1.0)));
    x += fabs(log2((e->local_mem + 1.0) / (d->local_mem_bytes + 1.0))) * 0.5;
    x += fabs(log2((e->vector_width + 1.0) / (d->pref_vector_width_float + 1.0)));
    x += (e->fp16 != d->fp16) + (e->int_dot != d->int_dot_product);
    return x;
}

const clnpu_tuning_entry *clnpu_tuning_lookup(const clnpu_tuning_db *db, const clnpu_device *dev, const char *kernel,
                                              const char *dtype, const char *cls, clnpu_tuning_match *match,
                                              const char **note)
{
    if (match) *match = CLNPU_TUNING_NONE;
    if (note) *note = NULL;
    if (!db) return NULL;
    const char *key = dev->tuning_key;
    char src[17];
    clnpu_tuning_source_hash(source_of(kernel), src);
    const clnpu_tuning_entry *best = NULL;
    double bd = INFINITY;
    for (size_t i = 0; i < db->count; i++) {
        const clnpu_tuning_entry *e = &db->items[i];
        if (strcmp(e->kernel, kernel) || strcmp(e->dtype, dtype) || strcmp(e->shape_class, cls)) continue;
        if (strcmp(e->source_hash, src)) {
            if (note) *note = "an entry was measured with another version of the kernel source: ignored";
            continue;
        }
        /* the same key on another CPU (a VM's CPU name is often just "AMD EPYC") is not exact */
        if (!strcmp(e->device_key, key) && (!e->cpu[0] || !strcmp(e->cpu, dev->isa.cpu))) {
            if (match) *match = CLNPU_TUNING_EXACT;
            return e;
        }
        if (!may_stand_in(e, dev)) continue;
        double dd = distance(e, &dev->info, dev->isa.cpu);
        if (dd < bd) bd = dd, best = e;
    }
    if (best && match) *match = CLNPU_TUNING_NEAREST;
    return best;
}

int clnpu_tuning_param(const clnpu_tuning_entry *e, const char *name, int def)
{
    for (int i = 0; e && i < e->nparams; i++)
        if (!strcmp(e->names[i], name)) return e->values[i];
    return def;
}

void clnpu_device_set_tuning(clnpu_device *dev, const clnpu_tuning_db *db) { dev->tuning = db; }
const clnpu_tuning_db *clnpu_device_get_tuning(const clnpu_device *dev) { return dev->tuning; }
void clnpu_device_set_tuning_verbose(clnpu_device *dev, int v) { dev->tuning_verbose = v; }

bool clnpu_device_tuning_say_once(clnpu_device *dev, const char *tag)
{
    if (!dev->tuning_verbose) return false;
    char t[160];
    snprintf(t, sizeof t, "|%s|", tag);
    if (strstr(dev->tuning_said, t) || strlen(dev->tuning_said) + strlen(t) >= sizeof dev->tuning_said) return false;
    strcat(dev->tuning_said, t);
    return true;
}

const clnpu_tuning_entry *clnpu_device_tuning_lookup(clnpu_device *dev, const char *kernel, const char *dtype,
                                                     const char *cls)
{
    clnpu_tuning_match match;
    const char *note;
    const clnpu_tuning_entry *e = clnpu_tuning_lookup(dev->tuning, dev, kernel, dtype, cls, &match, &note);
    if (dev->tuning_verbose) {
        /* say it once per (kernel, dtype, class) */
        char tag[96];
        snprintf(tag, sizeof tag, "%s/%s/%s", kernel, dtype, cls);
        if (clnpu_device_tuning_say_once(dev, tag)) {
            fprintf(stderr, "clnpu: tuning %s %s %s: %s%s%s\n", kernel, dtype, cls,
                    match == CLNPU_TUNING_EXACT ? "entry for this device" :
                    match == CLNPU_TUNING_NEAREST ? "entry of the nearest tuned device " : "kernel defaults",
                    match == CLNPU_TUNING_NEAREST ? e->device_key : "", note ? " (" : "");
            if (note) fprintf(stderr, "%s)\n", note);
        }
    }
    return e;
}

/* The database a device opens with: the shipped files, then $CLNPU_TUNING_DB or the cache's.
 * A user database that does not parse or holds a value outside tunables.yaml is an error naming
 * the file and the key (it was once skipped without a word, after merging its first entries). */
clnpu_status clnpu_device_load_default_tuning(clnpu_device *dev)
{
    const char *off = getenv("CLNPU_TUNING");
    if (off && !strcmp(off, "off")) return CLNPU_OK;
    clnpu_tuning_db *db = NULL;
    clnpu_status st = clnpu_tuning_db_create(&db);
    for (size_t i = 0; !st && i < clnpu_embedded_tuning_count; i++) /* tested to parse (test_tuning.c) */
        st = clnpu_tuning_db_merge_text(db, clnpu_embedded_tuning[i].data, clnpu_embedded_tuning[i].size,
                                        clnpu_embedded_tuning[i].name);
    const char *env = getenv("CLNPU_TUNING_DB");
    char path[1200];
    if (env && *env) snprintf(path, sizeof path, "%s", env);
    else snprintf(path, sizeof path, "%s/tuning.yaml", dev->cache_dir);
    if (!st && ((env && *env) || dev->cache_dir[0])) {
        st = clnpu_tuning_db_merge_file(db, path);
        if (st) st = clnpu_fail_context(st, "tuning database (%s)", env && *env ? "$CLNPU_TUNING_DB" : "the cache's");
    }
    if (st) {
        clnpu_tuning_db_destroy(db);
        return st;
    }
    dev->owned_tuning = db;
    dev->tuning = db;
    return CLNPU_OK;
}

const char *clnpu_tunables_yaml(void)
{
    return clnpu_embedded_tunables_count ? clnpu_embedded_tunables[0].data : "";
}
