/* The serving engine's prefix cache: full latent-cache pages keyed by the tokens they hold and
 * every token before them (a chained hash, checked against the stored tokens, so a collision
 * never shares a wrong page). The cache holds one reference on each page it keeps; a page only
 * it holds is evictable, least recently used first, and the deepest pages of a prefix before its
 * head (their use stamps are older), as vLLM's block manager does. */
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "serve_prefix.h"

typedef struct entry {
    uint64_t hash, parent;
    int page;
    int next;      /* bucket chain, or the free list */
    uint64_t used; /* use stamp: larger is more recent */
    bool live;
} entry;

struct serve_prefix {
    size_t cap, page_size, nbuckets, live;
    entry *e;
    int *tokens; /* [cap][page_size] */
    int *bucket;
    int free_head;
    uint64_t clock;
};

static uint64_t chain(uint64_t parent, const int *t, size_t n)
{
    uint64_t h = parent ^ 0xcbf29ce484222325ull; /* FNV-1a over the ids, seeded by the parent */
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)t[i];
        for (int b = 0; b < 4; b++) h = (h ^ ((v >> (8 * b)) & 0xff)) * 0x100000001b3ull;
    }
    return h ? h : 1; /* 0 is the root's parent */
}

serve_prefix *serve_prefix_create(size_t cap, size_t page_size)
{
    serve_prefix *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->cap = cap ? cap : 1, p->page_size = page_size;
    p->nbuckets = 1;
    while (p->nbuckets < 2 * p->cap) p->nbuckets <<= 1;
    p->e = calloc(p->cap, sizeof *p->e);
    p->tokens = malloc(p->cap * page_size * sizeof *p->tokens);
    p->bucket = malloc(p->nbuckets * sizeof *p->bucket);
    if (!p->e || !p->tokens || !p->bucket) {
        serve_prefix_destroy(p, NULL);
        return NULL;
    }
    for (size_t i = 0; i < p->nbuckets; i++) p->bucket[i] = -1;
    for (size_t i = 0; i < p->cap; i++) p->e[i].next = i + 1 < p->cap ? (int)(i + 1) : -1;
    p->free_head = 0;
    return p;
}

void serve_prefix_destroy(serve_prefix *p, clnpu_model *m)
{
    if (!p) return;
    for (size_t i = 0; m && p->e && i < p->cap; i++)
        if (p->e[i].live) clnpu_model_pages_release(m, &p->e[i].page, 1);
    free(p->e), free(p->tokens), free(p->bucket), free(p);
}

static int find(const serve_prefix *p, uint64_t h, uint64_t parent, const int *t)
{
    for (int i = p->bucket[h & (p->nbuckets - 1)]; i >= 0; i = p->e[i].next)
        if (p->e[i].hash == h && p->e[i].parent == parent &&
            !memcmp(p->tokens + (size_t)i * p->page_size, t, p->page_size * sizeof *t))
            return i;
    return -1;
}

size_t serve_prefix_match(serve_prefix *p, const int *tokens, size_t n, size_t max_pages, int *out_pages)
{
    int idx[4096];
    size_t k = 0;
    uint64_t parent = 0;
    while (k < max_pages && k < sizeof idx / sizeof idx[0] && (k + 1) * p->page_size <= n) {
        const int *t = tokens + k * p->page_size;
        const uint64_t h = chain(parent, t, p->page_size);
        const int i = find(p, h, parent, t);
        if (i < 0) break;
        out_pages[k] = p->e[i].page, idx[k++] = i, parent = h;
    }
    for (size_t j = k; j-- > 0;) p->e[idx[j]].used = ++p->clock; /* deepest oldest */
    return k;
}

clnpu_status serve_prefix_insert(serve_prefix *p, clnpu_model *m, const int *tokens, size_t npages, const int *pages)
{
    uint64_t parent = 0;
    int idx[4096];
    size_t k = 0;
    clnpu_status st = CLNPU_OK;
    for (size_t b = 0; b < npages && k < sizeof idx / sizeof idx[0]; b++) {
        const int *t = tokens + b * p->page_size;
        const uint64_t h = chain(parent, t, p->page_size);
        int i = find(p, h, parent, t);
        if (i < 0) { /* a new entry; none free: this prefix is not kept past here */
            if (p->free_head < 0) break;
            if ((st = clnpu_model_pages_retain(m, &pages[b], 1))) break;
            i = p->free_head;
            p->free_head = p->e[i].next;
            const size_t bk = h & (p->nbuckets - 1);
            p->e[i] = (entry){h, parent, pages[b], p->bucket[bk], 0, true};
            p->bucket[bk] = i;
            memcpy(p->tokens + (size_t)i * p->page_size, t, p->page_size * sizeof *t);
            p->live++;
        }
        idx[k++] = i, parent = h;
    }
    for (size_t j = k; j-- > 0;) p->e[idx[j]].used = ++p->clock;
    return st;
}

static void drop(serve_prefix *p, clnpu_model *m, int i)
{
    entry *e = &p->e[i];
    int *link = &p->bucket[e->hash & (p->nbuckets - 1)];
    while (*link != i) link = &p->e[*link].next;
    *link = e->next;
    clnpu_model_pages_release(m, &e->page, 1);
    e->live = false, e->next = p->free_head, p->free_head = i;
    p->live--;
}

size_t serve_prefix_evictable(const serve_prefix *p, const clnpu_model *m)
{
    size_t n = 0;
    for (size_t i = 0; i < p->cap; i++) n += p->e[i].live && clnpu_model_page_refs(m, p->e[i].page) == 1;
    return n;
}

size_t serve_prefix_evict(serve_prefix *p, clnpu_model *m, size_t want)
{
    size_t freed = 0;
    while (freed < want) {
        int best = -1;
        for (size_t i = 0; i < p->cap; i++)
            if (p->e[i].live && clnpu_model_page_refs(m, p->e[i].page) == 1 &&
                (best < 0 || p->e[i].used < p->e[best].used))
                best = (int)i;
        if (best < 0) break;
        drop(p, m, best);
        freed++;
    }
    return freed;
}

size_t serve_prefix_pages(const serve_prefix *p)
{
    return p->live;
}
