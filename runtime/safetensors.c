/* safetensors: header parsing and validation (cJSON), memory mapping, writing. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/error.h"
#include "clnpu/checkpoint.h"
#include "safetensors_internal.h"

/* A header past this is certainly not a real checkpoint's: refuse rather than parse it. */
#define MAX_HEADER (256u << 20)

static const struct {
    const char *name;
    clnpu_dtype dtype;
} st_dtypes[] = {{"BF16", CLNPU_DTYPE_BF16}, {"F16", CLNPU_DTYPE_F16}, {"F32", CLNPU_DTYPE_F32},
                 {"F8_E4M3", CLNPU_DTYPE_FP8_E4M3}, {"I8", CLNPU_DTYPE_I8}, {"I32", CLNPU_DTYPE_I32}};

const char *clnpu_safetensors_dtype_name(clnpu_dtype t)
{
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (st_dtypes[i].dtype == t) return st_dtypes[i].name;
    return "?";
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const clnpu_tensor_info *)a)->name, ((const clnpu_tensor_info *)b)->name);
}

static int cmp_off(const void *a, const void *b)
{
    const clnpu_tensor_info *x = *(clnpu_tensor_info *const *)a, *y = *(clnpu_tensor_info *const *)b;
    return x->data < y->data ? -1 : x->data > y->data;
}

void clnpu_safetensors_close(clnpu_safetensors *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->count; i++) free((char *)f->items[i].name);
    free(f->items);
    free(f->path);
    if (f->map) munmap(f->map, f->map_size);
    free(f);
}

clnpu_status clnpu_safetensors_parse(const char *header, size_t len, const void *data, size_t data_size,
                                     const char *origin, clnpu_safetensors **out)
{
    *out = NULL;
    cJSON *root = cJSON_ParseWithLength(header, len);
    if (!root) return clnpu_fail(CLNPU_ERR_PARSE, "%s: header is not valid JSON", origin);
    clnpu_safetensors *f = calloc(1, sizeof *f);
    clnpu_status st = CLNPU_OK;
    if (!f || !(f->path = strdup(origin))) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st && !cJSON_IsObject(root)) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: header is not a JSON object", origin);
    size_t n = 0;
    for (cJSON *e = root->child; !st && e; e = e->next) n++;
    if (!st && n && !(f->items = calloc(n, sizeof *f->items)))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (cJSON *e = st ? NULL : root->child; !st && e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) continue;
        const char *name = e->string;
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsObject(e) || !cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs) ||
            cJSON_GetArraySize(offs) != 2) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: %s: entry needs dtype, shape and data_offsets [begin, end]",
                            origin, name);
            break;
        }
        clnpu_tensor_info *t = &f->items[f->count];
        int found = 0;
        for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
            if (!strcmp(dt->valuestring, st_dtypes[i].name)) t->dtype = st_dtypes[i].dtype, found = 1;
        if (!found) {
            st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: %s: unsupported dtype %s (known: BF16, F16, F32, "
                            "F8_E4M3, I8, I32)", origin, name, dt->valuestring);
            break;
        }
        int nd = cJSON_GetArraySize(shape);
        if (nd > CLNPU_TENSOR_MAX_DIMS) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: %s: %d dimensions (at most %d)", origin, name, nd, CLNPU_TENSOR_MAX_DIMS);
            break;
        }
        /* Element count with overflow checks: a hostile header must not wrap around. */
        uint64_t elems = 1;
        t->ndim = nd;
        for (int d = 0; d < nd && !st; d++) {
            cJSON *v = cJSON_GetArrayItem(shape, d);
            double x = cJSON_IsNumber(v) ? v->valuedouble : -1;
            if (!(x >= 0 && x <= 9.0e15) || x != floor(x)) { /* range first: casting a huge double is UB */
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s: %s: shape[%d] is not a non-negative integer", origin, name, d);
                break;
            }
            t->shape[d] = (int64_t)x;
            if (t->shape[d] && elems > UINT64_MAX / (uint64_t)t->shape[d])
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s: %s: shape overflows", origin, name);
            else elems *= (uint64_t)t->shape[d];
        }
        if (st) break;
        double b0 = cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) ? cJSON_GetArrayItem(offs, 0)->valuedouble : -1;
        double b1 = cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) ? cJSON_GetArrayItem(offs, 1)->valuedouble : -1;
        if (!(b0 >= 0 && b1 >= b0 && b1 <= 9.0e15) || b0 != floor(b0) || b1 != floor(b1)) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: %s: bad data_offsets", origin, name);
            break;
        }
        if ((uint64_t)b1 > data_size) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: %s: data_offsets [%.0f, %.0f] outside the data area of %zu "
                            "bytes (truncated file?)", origin, name, b0, b1, data_size);
            break;
        }
        uint64_t want = elems * clnpu_dtype_size(t->dtype);
        if (elems && want / elems != clnpu_dtype_size(t->dtype)) want = UINT64_MAX;
        if ((uint64_t)(b1 - b0) != want) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: %s: %s x %llu elements is %llu bytes, data_offsets give %.0f",
                            origin, name, dt->valuestring, (unsigned long long)elems,
                            (unsigned long long)want, b1 - b0);
            break;
        }
        t->bytes = (size_t)(b1 - b0);
        t->data = (const void *)((uintptr_t)data + (uintptr_t)b0); /* data may be NULL: layout only */
        if (!(t->name = strdup(name))) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        t->file = f->path;
        f->count++;
    }
    cJSON_Delete(root);
    if (!st && f->count) {
        /* Overlap check on the byte ranges, then sort by name for lookups. */
        clnpu_tensor_info **byoff = malloc(f->count * sizeof *byoff);
        if (!byoff) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        for (size_t i = 0; !st && i < f->count; i++) byoff[i] = &f->items[i];
        if (!st) qsort(byoff, f->count, sizeof *byoff, cmp_off);
        for (size_t i = 1; !st && i < f->count; i++)
            if (byoff[i]->bytes && byoff[i - 1]->bytes &&
                (uintptr_t)byoff[i - 1]->data + byoff[i - 1]->bytes > (uintptr_t)byoff[i]->data)
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s: tensors %s and %s overlap", origin, byoff[i - 1]->name,
                                byoff[i]->name);
        free(byoff);
        if (!st) qsort(f->items, f->count, sizeof *f->items, cmp_name);
        for (size_t i = 1; !st && i < f->count; i++)
            if (!strcmp(f->items[i - 1].name, f->items[i].name))
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s: tensor %s appears twice", origin, f->items[i].name);
    }
    if (st) {
        clnpu_safetensors_close(f);
        return st;
    }
    *out = f;
    return CLNPU_OK;
}

clnpu_status clnpu_safetensors_open(const char *path, clnpu_safetensors **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb)) {
        close(fd);
        return clnpu_fail(CLNPU_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    }
    size_t size = (size_t)sb.st_size;
    if (size < 8) {
        close(fd);
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: %zu bytes is too short for a safetensors file", path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot map: %s", path, strerror(errno));
    uint64_t hlen;
    memcpy(&hlen, map, 8); /* little-endian u64, as the format specifies (x86/ARM hosts) */
    if (hlen > MAX_HEADER || hlen > size - 8) {
        munmap(map, size);
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: header length %llu runs past the end of the %zu-byte file",
                          path, (unsigned long long)hlen, size);
    }
    clnpu_status st = clnpu_safetensors_parse((const char *)map + 8, (size_t)hlen, (const char *)map + 8 + hlen,
                                              size - 8 - (size_t)hlen, path, out);
    if (st) {
        munmap(map, size);
        return st;
    }
    (*out)->map = map;
    (*out)->map_size = size;
    return CLNPU_OK;
}

size_t clnpu_safetensors_count(const clnpu_safetensors *f) { return f->count; }

const clnpu_tensor_info *clnpu_safetensors_get(const clnpu_safetensors *f, size_t i)
{
    return i < f->count ? &f->items[i] : NULL;
}

const clnpu_tensor_info *clnpu_safetensors_find(const clnpu_safetensors *f, const char *name)
{
    clnpu_tensor_info key = {.name = name};
    return bsearch(&key, f->items, f->count, sizeof key, cmp_name);
}

clnpu_status clnpu_safetensors_write(const char *path, const clnpu_tensor_out *ts, size_t n)
{
    cJSON *root = cJSON_CreateObject();
    uint64_t off = 0;
    for (size_t i = 0; root && i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, ts[i].name);
        uint64_t elems = 1;
        cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        for (int d = 0; shape && d < ts[i].ndim; d++) {
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)ts[i].shape[d]));
            elems *= (uint64_t)ts[i].shape[d];
        }
        uint64_t bytes = elems * clnpu_dtype_size(ts[i].dtype);
        cJSON *offs = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        if (!e || !shape || !offs || !cJSON_AddStringToObject(e, "dtype", clnpu_safetensors_dtype_name(ts[i].dtype))) {
            cJSON_Delete(root);
            return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        }
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *hdr = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!hdr) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    uint64_t hlen = strlen(hdr);
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(hdr);
        return clnpu_fail(CLNPU_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    }
    bool ok = fwrite(&hlen, 8, 1, f) == 1 && fwrite(hdr, 1, hlen, f) == hlen;
    for (size_t i = 0; ok && i < n; i++) {
        uint64_t elems = 1;
        for (int d = 0; d < ts[i].ndim; d++) elems *= (uint64_t)ts[i].shape[d];
        size_t bytes = elems * clnpu_dtype_size(ts[i].dtype);
        ok = fwrite(ts[i].data, 1, bytes, f) == bytes;
    }
    free(hdr);
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        return clnpu_fail(CLNPU_ERR_IO, "%s: write failed", path);
    }
    return CLNPU_OK;
}
