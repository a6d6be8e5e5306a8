/* Model directories: sharded checkpoints through model.safetensors.index.json, or one file. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/error.h"
#include "clnpu/checkpoint.h"
#include "safetensors_internal.h"

struct clnpu_checkpoint {
    clnpu_safetensors **files;
    size_t nfiles;
    const clnpu_tensor_info **index; /* every tensor of every file, sorted by name */
    size_t count;
};

static char *read_text(const char *path, size_t *len, clnpu_status *st)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *st = clnpu_fail(errno == ENOENT ? CLNPU_ERR_NOT_FOUND : CLNPU_ERR_IO, "%s: cannot open: %s", path,
                         strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        *st = clnpu_fail(CLNPU_ERR_IO, "%s: read error", path);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = (size_t)n;
    *st = CLNPU_OK;
    return buf;
}

clnpu_status clnpu_checkpoint_parse_index(const char *json, size_t len, const char *origin, char ***out_names,
                                          char ***out_files, size_t *out_count)
{
    *out_names = *out_files = NULL;
    *out_count = 0;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return clnpu_fail(CLNPU_ERR_PARSE, "%s: not valid JSON", origin);
    cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    clnpu_status st = CLNPU_OK;
    if (!cJSON_IsObject(map)) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: no \"weight_map\" object", origin);
    size_t n = 0;
    for (cJSON *e = st ? NULL : map->child; e; e = e->next) n++;
    char **names = calloc(n + 1, sizeof *names), **files = calloc(n + 1, sizeof *files);
    if (!st && (!names || !files)) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    size_t i = 0;
    for (cJSON *e = st ? NULL : map->child; e && !st; e = e->next, i++) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || !strcmp(e->valuestring, "..") || !*e->valuestring)
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: %s: shard must be a plain file name", origin, e->string);
        else if (!(names[i] = strdup(e->string)) || !(files[i] = strdup(e->valuestring)))
            st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    cJSON_Delete(root);
    if (st) {
        for (size_t j = 0; j < n && names; j++) free(names[j]), free(files ? files[j] : NULL);
        free(names);
        free(files);
        return st;
    }
    *out_names = names, *out_files = files, *out_count = n;
    return CLNPU_OK;
}

static int cmp_info(const void *a, const void *b)
{
    return strcmp((*(const clnpu_tensor_info *const *)a)->name, (*(const clnpu_tensor_info *const *)b)->name);
}

void clnpu_checkpoint_close(clnpu_checkpoint *ck)
{
    if (!ck) return;
    for (size_t i = 0; i < ck->nfiles; i++) clnpu_safetensors_close(ck->files[i]);
    free(ck->files);
    free(ck->index);
    free(ck);
}

static clnpu_status add_file(clnpu_checkpoint *ck, const char *path)
{
    clnpu_safetensors *f;
    clnpu_status st = clnpu_safetensors_open(path, &f);
    if (st) return st;
    clnpu_safetensors **nf = realloc(ck->files, (ck->nfiles + 1) * sizeof *nf);
    if (!nf) {
        clnpu_safetensors_close(f);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    ck->files = nf;
    ck->files[ck->nfiles++] = f;
    return CLNPU_OK;
}

clnpu_status clnpu_checkpoint_open(const char *dir, clnpu_checkpoint **out)
{
    *out = NULL;
    clnpu_checkpoint *ck = calloc(1, sizeof *ck);
    if (!ck) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    size_t len;
    clnpu_status st;
    char *text = read_text(path, &len, &st);
    char **names = NULL, **files = NULL;
    size_t n = 0;
    if (text) {
        st = clnpu_checkpoint_parse_index(text, len, path, &names, &files, &n);
        free(text);
        /* Open each distinct shard once (the map lists them per tensor). */
        for (size_t i = 0; !st && i < n; i++) {
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++) seen = !strcmp(files[i], files[j]);
            if (seen) continue;
            snprintf(path, sizeof path, "%s/%s", dir, files[i]);
            st = add_file(ck, path);
        }
    } else if (st == CLNPU_ERR_NOT_FOUND) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        st = add_file(ck, path);
        if (st == CLNPU_ERR_IO && errno == ENOENT)
            st = clnpu_fail(CLNPU_ERR_NOT_FOUND, "%s: neither model.safetensors.index.json nor "
                            "model.safetensors found", dir);
    }
    for (size_t i = 0; !st && i < ck->nfiles; i++) ck->count += ck->files[i]->count;
    if (!st && !(ck->index = malloc((ck->count ? ck->count : 1) * sizeof *ck->index)))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    size_t k = 0;
    for (size_t i = 0; !st && i < ck->nfiles; i++)
        for (size_t j = 0; j < ck->files[i]->count; j++) ck->index[k++] = &ck->files[i]->items[j];
    if (!st) qsort(ck->index, ck->count, sizeof *ck->index, cmp_info);
    for (size_t i = 1; !st && i < ck->count; i++)
        if (!strcmp(ck->index[i - 1]->name, ck->index[i]->name))
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: tensor %s is in both %s and %s", dir, ck->index[i]->name,
                            ck->index[i - 1]->file, ck->index[i]->file);
    /* Every tensor the index promises must be in the shard it names. */
    for (size_t i = 0; !st && i < n; i++) {
        const clnpu_tensor_info *t = clnpu_checkpoint_find(ck, names[i]);
        const char *base = t ? strrchr(t->file, '/') : NULL;
        if (!t)
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: index lists %s in %s, which does not hold it", dir, names[i], files[i]);
        else if (strcmp(base ? base + 1 : t->file, files[i]))
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: index puts %s in %s, found in %s", dir, names[i], files[i], t->file);
    }
    for (size_t i = 0; i < n; i++) free(names[i]), free(files[i]);
    free(names);
    free(files);
    if (st) {
        clnpu_checkpoint_close(ck);
        return st;
    }
    *out = ck;
    return CLNPU_OK;
}

const clnpu_tensor_info *clnpu_checkpoint_find(const clnpu_checkpoint *ck, const char *name)
{
    clnpu_tensor_info key = {.name = name};
    const clnpu_tensor_info *kp = &key;
    const clnpu_tensor_info **r = bsearch(&kp, ck->index, ck->count, sizeof *ck->index, cmp_info);
    return r ? *r : NULL;
}

size_t clnpu_checkpoint_tensor_count(const clnpu_checkpoint *ck) { return ck->count; }

static void shape_str(char *out, size_t cap, int nd, const int64_t *s)
{
    size_t o = (size_t)snprintf(out, cap, "[");
    for (int i = 0; i < nd && o < cap; i++) o += (size_t)snprintf(out + o, cap - o, i ? ", %lld" : "%lld", (long long)s[i]);
    if (o < cap) snprintf(out + o, cap - o, "]");
}

clnpu_status clnpu_checkpoint_require(const clnpu_checkpoint *ck, const char *name, int ndim,
                                      const int64_t *shape, const clnpu_tensor_info **out)
{
    *out = clnpu_checkpoint_find(ck, name);
    if (!*out) return clnpu_fail(CLNPU_ERR_NOT_FOUND, "%s: missing from the checkpoint", name);
    if (ndim < 0) return CLNPU_OK;
    bool ok = (*out)->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = (*out)->shape[i] == shape[i];
    if (!ok) {
        char want[128], have[128];
        shape_str(want, sizeof want, ndim, shape);
        shape_str(have, sizeof have, (*out)->ndim, (*out)->shape);
        const clnpu_tensor_info *t = *out;
        *out = NULL;
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: expected %s, file has %s (%s)", name, want, have, t->file);
    }
    return CLNPU_OK;
}
