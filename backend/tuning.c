/* The kernel tuning database (YAML through libyaml): load, merge, save, lookup with
 * nearest-device fallback, and the device's default database. */
#include <errno.h>
#include <fnmatch.h>
#include <math.h>
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
            char *end;
            long v = pv->type == YAML_SCALAR_NODE ? strtol((char *)pv->data.scalar.value, &end, 10) : 0;
            if (pk->type != YAML_SCALAR_NODE || pv->type != YAML_SCALAR_NODE || *end ||
                e.nparams == CLNPU_TUNING_MAX_PARAMS) {
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: params must be up to %d integer values", origin,
                                pk->start_mark.line + 1, CLNPU_TUNING_MAX_PARAMS);
                break;
            }
            snprintf(e.names[e.nparams], sizeof e.names[0], "%s", (char *)pk->data.scalar.value);
            e.values[e.nparams++] = (int)v;
        }
        const char *s;
        if ((s = clnpu_yaml_value(&doc, n, "ms"))) e.ms = strtod(s, NULL);
        if ((s = clnpu_yaml_value(&doc, n, "default_ms"))) e.default_ms = strtod(s, NULL);
        if ((s = clnpu_yaml_value(&doc, n, "measured"))) snprintf(e.measured, sizeof e.measured, "%s", s);
        if ((s = clnpu_yaml_value(&doc, n, "how"))) snprintf(e.how, sizeof e.how, "%s", s);
        if ((s = clnpu_yaml_value(&doc, caps, "type"))) e.type = atoi(s);
        if ((s = clnpu_yaml_value(&doc, caps, "compute_units"))) e.compute_units = atoi(s);
        if ((s = clnpu_yaml_value(&doc, caps, "local_mem"))) e.local_mem = atoll(s);
        if ((s = clnpu_yaml_value(&doc, caps, "vector_width"))) e.vector_width = atoi(s);
        if ((s = clnpu_yaml_value(&doc, caps, "fp16"))) e.fp16 = atoi(s);
        if ((s = clnpu_yaml_value(&doc, caps, "int_dot"))) e.int_dot = atoi(s);
        if ((s = clnpu_yaml_value(&doc, caps, "isa"))) snprintf(e.isa, sizeof e.isa, "%s", s);
        if ((s = clnpu_yaml_value(&doc, caps, "cpu"))) snprintf(e.cpu, sizeof e.cpu, "%s", s);
        if (!e.isa[0]) entry_isa_from_key(&e); /* databases written before the field */
        if (!st) st = clnpu_tuning_db_put(db, &e);
    }
    yaml_document_delete(&doc);
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
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
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
    bool ok = clnpu_yaml_end(y);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return clnpu_fail(CLNPU_ERR_IO, "%s: cannot write the tuning database", path);
    }
    return CLNPU_OK;
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

/* The database a device opens with: the shipped files, then $CLNPU_TUNING_DB or the cache's. */
void clnpu_device_load_default_tuning(clnpu_device *dev)
{
    const char *off = getenv("CLNPU_TUNING");
    if (off && !strcmp(off, "off")) return;
    clnpu_tuning_db *db = NULL;
    if (clnpu_tuning_db_create(&db)) return;
    for (size_t i = 0; i < clnpu_embedded_tuning_count; i++)
        clnpu_tuning_db_merge_text(db, clnpu_embedded_tuning[i].data, clnpu_embedded_tuning[i].size,
                                   clnpu_embedded_tuning[i].name);
    const char *env = getenv("CLNPU_TUNING_DB");
    char path[1200];
    if (env && *env) snprintf(path, sizeof path, "%s", env);
    else snprintf(path, sizeof path, "%s/tuning.yaml", dev->cache_dir);
    if (env || dev->cache_dir[0]) clnpu_tuning_db_merge_file(db, path); /* a broken user file is skipped */
    clnpu_error_clear();
    dev->owned_tuning = db;
    dev->tuning = db;
}

const char *clnpu_tunables_yaml(void)
{
    return clnpu_embedded_tunables_count ? clnpu_embedded_tunables[0].data : "";
}
