/* The BPE model of a tokenizer.json: vocabulary, merge ranks, and the split of one pre-tokenized
 * piece into ids (HF tokenizers' models/bpe: lowest rank first, leftmost among equal ranks). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "tokenizer_internal.h"

uint64_t tk_hash(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ULL;
    return h ^ (h >> 29);
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n) c *= 2;
    return c;
}

int tk_vocab_find(const clnpu_tokenizer *t, const char *s, size_t n)
{
    if (!t->vocab.slot) return -1;
    const uint64_t h = tk_hash(s, n);
    const uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = h & t->vocab.mask;; i = (i + 1) & t->vocab.mask) {
        int32_t id = t->vocab.slot[i];
        if (id < 0) return -1;
        if (t->vocab.tag[i] == tag && t->tok_len[id] == n && !memcmp(t->tok[id], s, n)) return id;
    }
}

static uint64_t mix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return k;
}

/* rank of merging (a, b), or UINT32_MAX; *id the merged token */
static inline uint32_t merge_find(const tk_merge_map *m, uint32_t a, uint32_t b, uint32_t *id)
{
    if (!m->key) return UINT32_MAX;
    uint64_t k = (uint64_t)a << 32 | b;
    for (size_t i = mix64(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->key[i] == UINT64_MAX) return UINT32_MAX;
        if (m->key[i] == k) return *id = m->id[i], m->rank[i];
    }
}

static clnpu_status merge_add(tk_merge_map *m, uint32_t a, uint32_t b, uint32_t rank, uint32_t id)
{
    uint64_t k = (uint64_t)a << 32 | b;
    for (size_t i = mix64(k) & m->mask;; i = (i + 1) & m->mask) {
        if (m->key[i] == k) return CLNPU_OK; /* a repeated merge keeps its first (lowest) rank */
        if (m->key[i] == UINT64_MAX) {
            m->key[i] = k, m->rank[i] = rank, m->id[i] = id;
            return CLNPU_OK;
        }
    }
}

struct tk_cache_entry {
    char *key;
    uint32_t klen, n;
    int *ids;
};

void tk_bpe_free(clnpu_tokenizer *t)
{
    free(t->tok_arena);
    free(t->tok), free(t->tok_len), free(t->vocab.slot), free(t->vocab.tag);
    free(t->merges.key), free(t->merges.rank), free(t->merges.id);
    if (t->cache.slot) {
        for (size_t i = 0; i <= t->cache.mask; i++) free(t->cache.slot[i].key), free(t->cache.slot[i].ids);
        free(t->cache.slot);
        pthread_mutex_destroy(&t->cache.lock);
    }
}

static clnpu_status oom(void) { return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory"); }

clnpu_status tk_parse_bpe(clnpu_tokenizer *t, const cJSON *model)
{
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "type"));
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!type && cJSON_IsObject(vocab) && merges) type = "BPE"; /* old files name no type */
    if (!type) return clnpu_fail(CLNPU_ERR_PARSE, "%s: \"model\" has no \"type\"", t->origin);
    if (strcmp(type, "BPE")) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: unsupported model type '%s' (BPE only)", t->origin, type);
    if (!cJSON_IsObject(vocab)) return clnpu_fail(CLNPU_ERR_PARSE, "%s: model.vocab is not an object", t->origin);
    if (!cJSON_IsArray(merges)) return clnpu_fail(CLNPU_ERR_PARSE, "%s: model.merges is not an array", t->origin);
    static const char *unsupported[] = {"continuing_subword_prefix", "end_of_word_suffix", "dropout"};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, unsupported[i]);
        if (v && !cJSON_IsNull(v) && !(cJSON_IsString(v) && !*v->valuestring))
            return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: BPE option '%s' is not supported", t->origin, unsupported[i]);
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, "byte_fallback");
    t->byte_fallback = cJSON_IsTrue(v);
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    t->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));

    /* ids: the largest decides the table's size (added tokens may extend it later) */
    size_t nv = 0, maxid = 0, bytes = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        bytes += strlen(e->string) + 1;
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 0x7ffffff || e->valuedouble != (double)e->valueint)
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: model.vocab[\"%s\"] is not a valid id", t->origin, e->string);
        if ((size_t)e->valueint > maxid) maxid = (size_t)e->valueint;
        nv++;
    }
    t->ntok = nv ? maxid + 1 : 0;
    t->tok = calloc(t->ntok + 1, sizeof *t->tok);
    t->tok_len = calloc(t->ntok + 1, sizeof *t->tok_len);
    const size_t cap = pow2_at_least(nv * 2 + 2);
    t->vocab.slot = malloc(cap * sizeof *t->vocab.slot);
    t->vocab.tag = malloc(cap * sizeof *t->vocab.tag);
    /* one block for every token's text: a 163,840-token vocabulary loads without 163,840 mallocs */
    char *arena = t->tok_arena = malloc(bytes + 1);
    if (!t->tok || !t->tok_len || !t->vocab.slot || !t->vocab.tag || !arena) return oom();
    memset(t->vocab.slot, 0xff, cap * sizeof *t->vocab.slot);
    t->vocab.mask = cap - 1;
    cJSON_ArrayForEach(e, vocab) {
        size_t id = (size_t)e->valueint, n = strlen(e->string);
        if (t->tok[id])
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: model.vocab gives id %zu to both \"%s\" and \"%s\"", t->origin, id, t->tok[id], e->string);
        t->tok[id] = arena;
        memcpy(arena, e->string, n + 1);
        arena += n + 1;
        t->tok_len[id] = (uint32_t)n;
        const uint64_t h = tk_hash(e->string, n);
        size_t i = h & t->vocab.mask;
        while (t->vocab.slot[i] >= 0) {
            int32_t o = t->vocab.slot[i];
            if (t->vocab.tag[i] == (uint32_t)(h >> 32) && t->tok_len[o] == n && !memcmp(t->tok[o], e->string, n))
                return clnpu_fail(CLNPU_ERR_PARSE, "%s: model.vocab lists \"%s\" twice", t->origin, e->string);
            i = (i + 1) & t->vocab.mask;
        }
        t->vocab.slot[i] = (int32_t)id;
        t->vocab.tag[i] = (uint32_t)(h >> 32);
    }

    const size_t nm = (size_t)cJSON_GetArraySize(merges), mcap = pow2_at_least(nm * 2 + 2);
    t->merges.key = malloc(mcap * sizeof *t->merges.key);
    t->merges.rank = malloc(mcap * sizeof *t->merges.rank);
    t->merges.id = malloc(mcap * sizeof *t->merges.id);
    if (!t->merges.key || !t->merges.rank || !t->merges.id) return oom();
    memset(t->merges.key, 0xff, mcap * sizeof *t->merges.key);
    t->merges.mask = mcap - 1;
    char *joined = NULL;
    size_t jcap = 0;
    uint32_t rank = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(e)) { /* "a b": split at the first space, as HF does */
            a = e->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) {
                free(joined); /* from an earlier merge */
                return clnpu_fail(CLNPU_ERR_PARSE, "%s: merge %u \"%s\" is not two tokens separated by a space", t->origin, rank, a);
            }
            la = (size_t)(sp - a), b = sp + 1, lb = strlen(b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) && cJSON_IsString(e->child->next)) {
            a = e->child->valuestring, b = e->child->next->valuestring;
            la = strlen(a), lb = strlen(b);
        } else {
            free(joined);
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: merge %u is neither \"a b\" nor [a, b]", t->origin, rank);
        }
        int ia = tk_vocab_find(t, a, la), ib = tk_vocab_find(t, b, lb);
        if (la + lb + 1 > jcap) {
            char *nj = realloc(joined, jcap = la + lb + 64);
            if (!nj) return free(joined), oom();
            joined = nj;
        }
        memcpy(joined, a, la), memcpy(joined + la, b, lb);
        int im = tk_vocab_find(t, joined, la + lb);
        if (ia < 0 || ib < 0 || im < 0) {
            joined[la + lb] = '\0';
            clnpu_status st = clnpu_fail(CLNPU_ERR_PARSE, "%s: merge %u (\"%.*s\", \"%.*s\"): \"%s\" is not in the vocabulary", t->origin,
                                         rank, (int)la, a, (int)lb, b, ia < 0 ? a : ib < 0 ? b : joined);
            free(joined);
            return st;
        }
        merge_add(&t->merges, (uint32_t)ia, (uint32_t)ib, rank, (uint32_t)im);
        rank++;
    }
    free(joined);

    for (int i = 0; i < 256; i++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", i);
        t->byte_id[i] = tk_vocab_find(t, name, 6);
    }
    t->unk_id = -1;
    const char *unk = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "unk_token"));
    if (unk && (t->unk_id = tk_vocab_find(t, unk, strlen(unk))) < 0)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: unk_token \"%s\" is not in the vocabulary", t->origin, unk);

    if (pthread_mutex_init(&t->cache.lock, NULL)) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "cannot create a lock");
    t->cache.mask = (1u << 15) - 1;
    if (!(t->cache.slot = calloc(t->cache.mask + 1, sizeof *t->cache.slot))) return oom();
    return CLNPU_OK;
}

static bool push_id(int **ids, size_t *n, size_t *cap, int id)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        int *p = realloc(*ids, c * sizeof *p);
        if (!p) return false;
        *ids = p, *cap = c;
    }
    (*ids)[(*n)++] = id;
    return true;
}

/* Longest words are not cached (HF: MAX_LENGTH 256 bytes). */
enum { CACHE_MAX_WORD = 256 };

static bool cache_get(const clnpu_tokenizer *t, const char *s, size_t n, uint64_t h, int **ids, size_t *nids, size_t *cap)
{
    tk_cache *c = (tk_cache *)&t->cache;
    bool hit = false;
    pthread_mutex_lock(&c->lock);
    struct tk_cache_entry *e = &c->slot[h & c->mask];
    if (e->key && e->klen == n && !memcmp(e->key, s, n)) {
        hit = true;
        for (uint32_t i = 0; i < e->n && hit; i++) hit = push_id(ids, nids, cap, e->ids[i]);
    }
    pthread_mutex_unlock(&c->lock);
    return hit;
}

static void cache_put(const clnpu_tokenizer *t, const char *s, size_t n, uint64_t h, const int *ids, size_t k)
{
    tk_cache *c = (tk_cache *)&t->cache;
    char *key = malloc(n ? n : 1);
    int *v = malloc((k ? k : 1) * sizeof *v);
    if (!key || !v) {
        free(key), free(v);
        return; /* a cache miss costs time, not correctness */
    }
    memcpy(key, s, n), memcpy(v, ids, k * sizeof *v);
    pthread_mutex_lock(&c->lock);
    struct tk_cache_entry *e = &c->slot[h & c->mask]; /* direct-mapped: a newer word replaces an older */
    free(e->key), free(e->ids);
    *e = (struct tk_cache_entry){key, (uint32_t)n, (uint32_t)k, v};
    pthread_mutex_unlock(&c->lock);
}

typedef struct sym {
    int id;
    uint32_t rank, merged; /* rank of merging with the next symbol */
} sym;

clnpu_status tk_bpe_encode(const clnpu_tokenizer *t, const char *s, size_t n, int **ids, size_t *nids, size_t *cap)
{
    if (!n) return CLNPU_OK;
    if (t->ignore_merges) {
        int id = tk_vocab_find(t, s, n);
        if (id >= 0) return push_id(ids, nids, cap, id) ? CLNPU_OK : oom();
    }
    const uint64_t h = tk_hash(s, n);
    if (n <= CACHE_MAX_WORD && cache_get(t, s, n, h, ids, nids, cap)) return CLNPU_OK;
    /* initial symbols: one per character (byte_fallback: its bytes; else unk, else dropped) */
    sym stack[128];
    sym *w = n <= 128 ? stack : malloc(n * sizeof *w);
    if (!w) return oom();
    size_t k = 0;
    bool prev_unk = false;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = tk_utf8_next(s + i, &cp);
        int id = tk_vocab_find(t, s + i, l);
        if (id >= 0) {
            w[k++] = (sym){id, 0, 0};
            prev_unk = false;
        } else {
            bool done = false;
            if (t->byte_fallback) {
                done = true;
                for (size_t b = 0; b < l; b++) done = done && t->byte_id[(unsigned char)s[i + b]] >= 0;
                if (done)
                    for (size_t b = 0; b < l; b++) w[k++] = (sym){t->byte_id[(unsigned char)s[i + b]], 0, 0};
                prev_unk = false;
            }
            if (!done && t->unk_id >= 0) {
                if (!(t->fuse_unk && prev_unk)) w[k++] = (sym){t->unk_id, 0, 0};
                prev_unk = true;
            }
        }
        i += l;
    }
    for (size_t i = 0; i + 1 < k; i++) w[i].rank = merge_find(&t->merges, (uint32_t)w[i].id, (uint32_t)w[i + 1].id, &w[i].merged);
    if (k) w[k - 1].rank = UINT32_MAX;
    /* Words are short: a scan for the lowest rank beats a heap. */
    while (k > 1) {
        size_t best = SIZE_MAX;
        uint32_t br = UINT32_MAX;
        for (size_t i = 0; i + 1 < k; i++)
            if (w[i].rank < br) br = w[i].rank, best = i;
        if (best == SIZE_MAX) break;
        w[best].id = (int)w[best].merged;
        memmove(w + best + 1, w + best + 2, (k - best - 2) * sizeof *w);
        k--;
        w[best].rank = best + 1 < k ? merge_find(&t->merges, (uint32_t)w[best].id, (uint32_t)w[best + 1].id, &w[best].merged) : UINT32_MAX;
        if (best) w[best - 1].rank = merge_find(&t->merges, (uint32_t)w[best - 1].id, (uint32_t)w[best].id, &w[best - 1].merged);
    }
    clnpu_status st = CLNPU_OK;
    size_t start = *nids;
    for (size_t i = 0; i < k && !st; i++)
        if (!push_id(ids, nids, cap, w[i].id)) st = oom();
    if (!st && n <= CACHE_MAX_WORD) cache_put(t, s, n, h, *ids + start, k);
    if (w != stack) free(w);
    return st;
}
