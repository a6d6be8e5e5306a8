/* Sets of target profiles: the shipped (embedded) ones plus user files, and device matching. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clnpu/device.h"
#include "clnpu/profile.h"
#include "device_internal.h"
#include "embedded.h"
#include "../common/error.h"

struct clnpu_profile_set {
    clnpu_profile *items;
    size_t count, cap;
};

const clnpu_embedded_file *clnpu_embedded_find(const clnpu_embedded_file *set, const char *name)
{
    for (; set->name; set++)
        if (!strcmp(set->name, name)) return set;
    return NULL;
}

clnpu_status clnpu_profile_set_create(clnpu_profile_set **out)
{
    *out = calloc(1, sizeof **out);
    return *out ? CLNPU_OK : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
}

void clnpu_profile_set_destroy(clnpu_profile_set *set)
{
    if (!set) return;
    free(set->items);
    free(set);
}

clnpu_status clnpu_profile_set_add(clnpu_profile_set *set, const clnpu_profile *p)
{
    for (size_t i = 0; i < set->count; i++) {
        if (!strcmp(set->items[i].name, p->name)) {
            set->items[i] = *p; /* a user file overrides a shipped profile of the same name */
            return CLNPU_OK;
        }
    }
    if (set->count == set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 16;
        clnpu_profile *n = realloc(set->items, cap * sizeof *n);
        if (!n) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        set->items = n;
        set->cap = cap;
    }
    set->items[set->count++] = *p;
    return CLNPU_OK;
}

clnpu_status clnpu_profile_set_builtin(clnpu_profile_set **out)
{
    clnpu_status st = clnpu_profile_set_create(out);
    if (st) return st;
    for (size_t i = 0; i < clnpu_embedded_targets_count; i++) {
        const clnpu_embedded_file *f = &clnpu_embedded_targets[i];
        char origin[160];
        snprintf(origin, sizeof origin, "builtin:targets/%s", f->name);
        clnpu_profile p;
        st = clnpu_profile_parse(f->data, f->size, origin, &p);
        if (!st) st = clnpu_profile_set_add(*out, &p);
        if (st) {
            clnpu_profile_set_destroy(*out);
            *out = NULL;
            return st;
        }
    }
    return CLNPU_OK;
}

clnpu_status clnpu_profile_set_add_file(clnpu_profile_set *set, const char *path)
{
    clnpu_profile p;
    clnpu_status st = clnpu_profile_load_file(path, &p);
    return st ? st : clnpu_profile_set_add(set, &p);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

clnpu_status clnpu_profile_set_add_dir(clnpu_profile_set *set, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char *names[512];
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 512) {
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".yaml")) names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof names[0], cmp_str); /* deterministic order */
    clnpu_status st = CLNPU_OK;
    for (size_t i = 0; i < n; i++) {
        if (!st) {
            char path[2048];
            snprintf(path, sizeof path, "%s/%s", dir, names[i]);
            st = clnpu_profile_set_add_file(set, path);
        }
        free(names[i]);
    }
    return st;
}

size_t clnpu_profile_set_count(const clnpu_profile_set *set)
{
    return set->count;
}

const clnpu_profile *clnpu_profile_set_get(const clnpu_profile_set *set, size_t i)
{
    return i < set->count ? &set->items[i] : NULL;
}

const clnpu_profile *clnpu_profile_set_find(const clnpu_profile_set *set, const char *name)
{
    for (size_t i = 0; i < set->count; i++)
        if (!strcmp(set->items[i].name, name)) return &set->items[i];
    return NULL;
}

static bool ci_contains(const char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay; hay++)
        if (!strncasecmp(hay, needle, n)) return true;
    return n == 0;
}

static unsigned type_bit(clnpu_device_type t)
{
    switch (t) {
    case CLNPU_DEVICE_TYPE_CPU: return CLNPU_MATCH_TYPE_CPU;
    case CLNPU_DEVICE_TYPE_GPU: return CLNPU_MATCH_TYPE_GPU;
    case CLNPU_DEVICE_TYPE_ACCELERATOR: return CLNPU_MATCH_TYPE_ACCELERATOR;
    default: return 0;
    }
}

/* Score: -1 no match; otherwise the number of rule kinds that matched (more specific wins).
 * Vendor patterns are case-insensitive substrings of the device or platform vendor; name
 * patterns are case-insensitive globs over the device name; an exact name scores extra. */
static int match_score(const clnpu_profile *p, const clnpu_device_info *info)
{
    if (!p->match_vendor_count && !p->match_name_count && !p->match_types) return -1;
    int score = 0;
    if (p->match_vendor_count) {
        bool ok = false;
        for (int i = 0; i < p->match_vendor_count && !ok; i++)
            ok = ci_contains(info->vendor, p->match_vendor[i]) ||
                 ci_contains(info->platform_name, p->match_vendor[i]);
        if (!ok) return -1;
        score += 2;
    }
    if (p->match_name_count) {
        bool ok = false;
        for (int i = 0; i < p->match_name_count && !ok; i++)
            ok = fnmatch(p->match_name[i], info->name, FNM_CASEFOLD) == 0;
        if (!ok) return -1;
        score += 4;
        /* an exact device name (a probed profile) beats any pattern */
        for (int i = 0; i < p->match_name_count; i++)
            if (!strpbrk(p->match_name[i], "*?[") && !strcasecmp(p->match_name[i], info->name)) score += 4;
    }
    if (p->match_types) {
        if (!(p->match_types & type_bit(info->type))) return -1;
        score += 1;
    }
    return score;
}

bool clnpu_profile_matches(const clnpu_profile *p, const clnpu_device_info *info)
{
    return match_score(p, info) >= 0;
}

/* "generic" filled from what the device says about itself; throughput is an estimate
 * (compute units x clock x native float width x 2 for FMA) and marked as such. */
void clnpu_profile_fill_generic(clnpu_profile *p, const clnpu_device_info *info)
{
    if (!p->memory_bytes || (uint64_t)p->memory_bytes > info->global_mem_bytes)
        p->memory_bytes = (int64_t)info->global_mem_bytes;
    double width = info->native_vector_width_float ? info->native_vector_width_float : 1;
    double fp32 = (double)info->compute_units * info->clock_mhz * 1e6 * width * 2.0;
    if (info->type == CLNPU_DEVICE_TYPE_GPU) fp32 *= 32; /* SIMT lanes per compute unit, rough */
    if (fp32 > 0) p->peak[CLNPU_PEAK_FP32] = fp32;
    p->peak[CLNPU_PEAK_FP16] = info->fp16 ? 2 * p->peak[CLNPU_PEAK_FP32] : 0;
    p->peak[CLNPU_PEAK_BF16] = p->peak[CLNPU_PEAK_FP32]; /* widened to f32 in registers */
    p->compute_units = (int)info->compute_units;
    if (!p->kernel.local_mem_bytes || (uint64_t)p->kernel.local_mem_bytes > info->local_mem_bytes)
        p->kernel.local_mem_bytes = (int64_t)info->local_mem_bytes;
    if (!p->estimated[0]) snprintf(p->estimated, sizeof p->estimated, "compute,memory.bandwidth");
    snprintf(p->notes, sizeof p->notes, "generic profile filled from the capabilities of '%s' (%s)",
             info->name, info->vendor);
}

clnpu_status clnpu_profile_match(const clnpu_profile_set *set, const clnpu_device_info *info,
                                 clnpu_profile *out, bool *out_matched)
{
    int best = -1;
    const clnpu_profile *pick = NULL;
    for (size_t i = 0; i < set->count; i++) {
        int s = match_score(&set->items[i], info);
        if (s > best) { best = s; pick = &set->items[i]; }
    }
    if (out_matched) *out_matched = pick != NULL;
    if (pick) { *out = *pick; return CLNPU_OK; }
    const clnpu_profile *g = clnpu_profile_set_find(set, "generic");
    if (g) *out = *g;
    else {
        memset(out, 0, sizeof *out);
        snprintf(out->name, sizeof out->name, "generic");
        snprintf(out->class_name, sizeof out->class_name, "unknown");
        snprintf(out->vendor, sizeof out->vendor, "unknown");
        snprintf(out->source, sizeof out->source, "builtin:fallback");
        out->memory_bandwidth = 1e10;
    }
    clnpu_profile_fill_generic(out, info);
    return CLNPU_OK;
}
