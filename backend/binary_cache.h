/* On-disk cache of built program binaries: one file per key, written atomically. */
#ifndef CLNPU_BINARY_CACHE_H
#define CLNPU_BINARY_CACHE_H
#include <stddef.h>
#include <stdint.h>

#include "clnpu/status.h"

/* Bump when the entry layout or the key's contents change. */
#define CLNPU_CACHE_FORMAT_VERSION 1u

/* Path of the entry for `key` in `dir` (dir/<16 hex digits>.clbin). */
void clnpu_binary_cache_path(const char *dir, const char *key, char *out, size_t cap);

/* Load an entry. Returns CLNPU_OK with *out_binary (malloc'd) only when the file is intact and
 * holds exactly this key; CLNPU_ERR_NOT_FOUND when absent; CLNPU_ERR_PARSE when it is corrupt or
 * belongs to another key (the caller rebuilds and overwrites it). */
clnpu_status clnpu_binary_cache_load(const char *path, const char *key, unsigned char **out_binary,
                                     size_t *out_size);

/* Store an entry: write a temporary file in the same directory, then rename it into place, so
 * readers never see a half-written entry. Creates the directory if needed. */
clnpu_status clnpu_binary_cache_store(const char *dir, const char *path, const char *key,
                                      const unsigned char *binary, size_t size);
#endif
