/* Internal: the serving engine's prefix cache of full latent-cache pages (serve_prefix.c). */
#ifndef CLNPU_SERVE_PREFIX_H
#define CLNPU_SERVE_PREFIX_H

#include <stddef.h>

#include "clnpu/model.h"

typedef struct serve_prefix serve_prefix;

/* Room for cap pages of page_size tokens. NULL: out of host memory. */
serve_prefix *serve_prefix_create(size_t cap, size_t page_size);
/* Drops the cache's references on m's pages (m NULL: none taken yet). */
void serve_prefix_destroy(serve_prefix *p, clnpu_model *m);
/* The cached pages that hold tokens[0 .. k * page_size) for the largest k <= max_pages: k, and
 * the pages in out_pages[0 .. k). They count as just used. */
size_t serve_prefix_match(serve_prefix *p, const int *tokens, size_t n, size_t max_pages, int *out_pages);
/* Keep pages[0 .. npages), which hold tokens[0 .. npages * page_size) (a reference each, for
 * the pages not cached yet). */
clnpu_status serve_prefix_insert(serve_prefix *p, clnpu_model *m, const int *tokens, size_t npages, const int *pages);
/* Pages held by the cache alone (freed by eviction), and eviction of up to `want` of them. */
size_t serve_prefix_evictable(const serve_prefix *p, const clnpu_model *m);
size_t serve_prefix_evict(serve_prefix *p, clnpu_model *m, size_t want);
size_t serve_prefix_pages(const serve_prefix *p);

#endif
