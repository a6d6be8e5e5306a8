/* Host-side sampling for the serving engine: every request brings its own temperature, top-k,
 * top-p and seed, which one device launch over the whole batch (clnpu_sample) cannot express;
 * and log-probabilities of the drawn token and of the best alternatives (OpenAI `logprobs`). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "serve_internal.h"

/* splitmix64: a small, well-mixed generator; one state per request so draws are reproducible. */
static uint64_t next_u64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int argmax(const float *x, size_t n)
{
    size_t best = 0; /* the lowest id among equal maxima, as the device's argmax */
    for (size_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int)best;
}

static int by_value_desc(const void *a, const void *b)
{
    const serve_cand *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->id - y->id;
}

/* Keep the k largest of c[0..n) in c[0..k), sorted descending: a min-heap of k entries over one
 * pass (the vocabulary is large, k usually small), then a sort of the kept ones. */
static void sift_down(serve_cand *h, size_t k, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i; /* the heap's root is its "smallest" (last in order) */
        if (l < k && by_value_desc(&h[l], &h[m]) > 0) m = l;
        if (r < k && by_value_desc(&h[r], &h[m]) > 0) m = r;
        if (m == i) return;
        serve_cand t = h[i];
        h[i] = h[m], h[m] = t, i = m;
    }
}

static size_t keep_top(serve_cand *c, size_t n, size_t k)
{
    if (k < n) {
        for (size_t i = k / 2; i-- > 0;) sift_down(c, k, i);
        for (size_t i = k; i < n; i++)
            if (by_value_desc(&c[i], &c[0]) < 0) {
                c[0] = c[i];
                sift_down(c, k, 0);
            }
        n = k;
    }
    qsort(c, n, sizeof *c, by_value_desc);
    return n;
}

int serve_sample(const float *logits, size_t V, const clnpu_sampling *s, uint64_t *rng, serve_cand *work)
{
    if (!(s->temperature > 0)) return argmax(logits, V);
    const float inv_t = 1.0f / s->temperature;
    for (size_t i = 0; i < V; i++) work[i] = (serve_cand){logits[i] * inv_t, (int)i};
    size_t n = V;
    const bool top_p = s->top_p > 0 && s->top_p < 1;
    if (s->top_k && s->top_k < V) n = keep_top(work, V, s->top_k);
    else if (top_p) n = keep_top(work, V, V);
    /* softmax over the kept candidates */
    float mx = -INFINITY;
    for (size_t i = 0; i < n; i++) mx = work[i].v > mx ? work[i].v : mx;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += (work[i].v = expf(work[i].v - mx));
    if (top_p) { /* the smallest prefix (sorted descending) whose mass reaches top_p */
        double acc = 0;
        size_t keep = 0;
        while (keep < n && acc < s->top_p * sum) acc += work[keep++].v;
        n = keep ? keep : 1;
        sum = acc > 0 ? acc : work[0].v;
    }
    const double u = (double)(next_u64(rng) >> 11) * (1.0 / 9007199254740992.0) * sum;
    double acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc += work[i].v;
        if (u < acc) return work[i].id;
    }
    return work[n - 1].id;
}

void serve_logprobs(const float *logits, size_t V, int token, size_t top, serve_cand *work, float *out_lp,
                    int *out_ids, float *out_lps)
{
    float mx = -INFINITY;
    for (size_t i = 0; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (size_t i = 0; i < V; i++) sum += exp((double)logits[i] - mx);
    const float lse = mx + (float)log(sum);
    *out_lp = logits[token] - lse;
    if (!top) return;
    for (size_t i = 0; i < V; i++) work[i] = (serve_cand){logits[i], (int)i};
    const size_t n = keep_top(work, V, top);
    for (size_t i = 0; i < n; i++) out_ids[i] = work[i].id, out_lps[i] = work[i].v - lse;
}
