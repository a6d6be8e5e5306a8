/* On-disk program binary cache entries: header with magic, version, the full key and a
 * checksum, so nothing stale or damaged is ever handed to the OpenCL driver. */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "binary_cache.h"
#include "../common/error.h"
#include "../common/hash.h"

static const char magic[8] = {'C', 'L', 'N', 'P', 'U', 'B', 'I', 'N'};

typedef struct entry_header {
    char magic[8];
    uint32_t version;
    uint32_t key_len;
    uint64_t bin_len;
    uint64_t checksum; /* FNV-1a over key and binary */
} entry_header;

void clnpu_binary_cache_path(const char *dir, const char *key, char *out, size_t cap)
{
    uint64_t h = clnpu_fnv1a(CLNPU_FNV_OFFSET, key, strlen(key));
    snprintf(out, cap, "%s/%016llx.clbin", dir, (unsigned long long)h);
}

clnpu_status clnpu_binary_cache_load(const char *path, const char *key, unsigned char **out_bin,
                                     size_t *out_size)
{
    *out_bin = NULL;
    *out_size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return clnpu_fail(CLNPU_ERR_NOT_FOUND, "%s: no cache entry", path);
    entry_header h;
    size_t key_len = strlen(key);
    clnpu_status st = CLNPU_OK;
    char *stored_key = NULL;
    unsigned char *bin = NULL;
    struct stat sb;
    if (fstat(fileno(f), &sb) || fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, magic, 8)) {
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: not a clnpu cache entry", path);
    } else if (h.version != CLNPU_CACHE_FORMAT_VERSION) {
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: cache format %u, expected %u", path, h.version,
                        CLNPU_CACHE_FORMAT_VERSION);
    } else if (h.key_len != key_len || h.bin_len == 0 ||
               (uint64_t)sb.st_size != sizeof h + h.key_len + h.bin_len) {
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: entry sizes do not add up (truncated or another key)", path);
    } else if (!(stored_key = malloc(key_len + 1)) || !(bin = malloc(h.bin_len))) {
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "%s: out of host memory", path);
    } else if (fread(stored_key, 1, key_len, f) != key_len || memcmp(stored_key, key, key_len)) {
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: entry holds another key", path);
    } else if (fread(bin, 1, h.bin_len, f) != h.bin_len) {
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: truncated entry", path);
    } else {
        uint64_t sum = clnpu_fnv1a(clnpu_fnv1a(CLNPU_FNV_OFFSET, key, key_len), bin, h.bin_len);
        if (sum != h.checksum) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: checksum mismatch (corrupt entry)", path);
    }
    fclose(f);
    free(stored_key);
    if (st) {
        free(bin);
        return st;
    }
    *out_bin = bin;
    *out_size = h.bin_len;
    return CLNPU_OK;
}

static clnpu_status mkdir_p(const char *dir)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", dir);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(tmp, 0755) && errno != EEXIST)
            return clnpu_fail(CLNPU_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0755) && errno != EEXIST)
        return clnpu_fail(CLNPU_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    return CLNPU_OK;
}

clnpu_status clnpu_binary_cache_store(const char *dir, const char *path, const char *key,
                                      const unsigned char *bin, size_t size)
{
    clnpu_status st = mkdir_p(dir);
    if (st) return st;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        unlink(tmp);
        return clnpu_fail(CLNPU_ERR_IO, "%s: cannot open: %s", tmp, strerror(errno));
    }
    entry_header h;
    memcpy(h.magic, magic, 8);
    h.version = CLNPU_CACHE_FORMAT_VERSION;
    h.key_len = (uint32_t)strlen(key);
    h.bin_len = size;
    h.checksum = clnpu_fnv1a(clnpu_fnv1a(CLNPU_FNV_OFFSET, key, h.key_len), bin, size);
    bool ok = fwrite(&h, sizeof h, 1, f) == 1 && fwrite(key, 1, h.key_len, f) == h.key_len &&
              fwrite(bin, 1, size, f) == size;
    ok = (fflush(f) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return clnpu_fail(CLNPU_ERR_IO, "%s: cannot write cache entry: %s", path, strerror(e));
    }
    return CLNPU_OK;
}
