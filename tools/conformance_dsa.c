/* Conformance tier 3, DeepSeek Sparse Attention: the indexer's scores, the top-k with ties, and
 * absorbed MLA over selected rows, at DeepSeek-V3.2's indexer and latent widths, against float64. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h"

static clnpu_status upload(clnpu_device *dev, const void *src, size_t bytes, clnpu_buffer **out)
{
    clnpu_status st = clnpu_buffer_create(dev, bytes, out);
    if (!st && src) st = clnpu_buffer_write(*out, 0, src, bytes);
    return st;
}

/* 3 queries at positions 0 / 700 / 1499 of two sequences, 64 heads of 128 (DeepSeek-V3.2's
 * indexer), scattered pages; then a top-256 over scores rounded to eighths, so ties straddle it. */
static void case_indexer(conf_ctx *c)
{
    const size_t T = 3, NH = 64, D = 128, L = 1500, page = 64, mb = (L + page - 1) / page, npages = 2 * mb;
    const int pos[3] = {0, 700, 1499}, seq[3] = {0, 1, 1};
    float *q = malloc(T * NH * D * 4), *w = malloc(T * NH * 4), *kc = malloc(npages * page * D * 4), *out = malloc(T * L * 4);
    int *bt = malloc(npages * sizeof *bt);
    for (size_t i = 0; i < T * NH * D; i++) q[i] = conf_rand(c);
    for (size_t i = 0; i < T * NH; i++) w[i] = conf_rand(c);
    for (size_t i = 0; i < npages * page * D; i++) kc[i] = conf_rand(c);
    for (size_t i = 0; i < npages; i++) bt[i] = (int)((i * 7) % npages);
    const float scale = 1.0f / sqrtf((float)(NH * D));
    size_t n = 0;
    double *ref = malloc(T * L * sizeof *ref);
    float *got = malloc(T * L * 4);
    for (size_t t = 0; t < T; t++)
        for (int j = 0; j <= pos[t]; j++) {
            const float *k = kc + ((size_t)bt[seq[t] * mb + j / page] * page + j % page) * D;
            double s = 0;
            for (size_t h = 0; h < NH; h++) {
                double dot = 0;
                for (size_t d = 0; d < D; d++) dot += (double)q[(t * NH + h) * D + d] * k[d];
                s += w[t * NH + h] * fmax(dot, 0);
            }
            ref[n++] = s * scale;
        }
    double t0 = conf_now_ms();
    clnpu_buffer *bq = NULL, *bw = NULL, *bk = NULL, *bb = NULL, *bs = NULL, *bp = NULL, *bo = NULL;
    clnpu_status st = upload(c->dev, q, T * NH * D * 4, &bq);
    if (!st) st = upload(c->dev, w, T * NH * 4, &bw);
    if (!st) st = upload(c->dev, kc, npages * page * D * 4, &bk);
    if (!st) st = upload(c->dev, bt, npages * 4, &bb);
    if (!st) st = upload(c->dev, seq, T * 4, &bs);
    if (!st) st = upload(c->dev, pos, T * 4, &bp);
    if (!st) st = upload(c->dev, NULL, T * L * 4, &bo);
    clnpu_dsa_scores_args a = {{bq, 0, NH * D}, {bw, 0, NH}, bk, page, bb, mb, bs, bp, T, NH, D, L, scale, bo, L};
    if (!st) st = clnpu_dsa_scores(c->dev, &a);
    if (!st) st = clnpu_buffer_read(bo, 0, out, T * L * 4);
    n = 0;
    for (size_t t = 0; !st && t < T; t++)
        for (int j = 0; j <= pos[t]; j++) got[n++] = out[t * L + j];
    conf_record(c, 3, "dsa_scores", "f32", "3 queries (1/701/1500 keys) x 64 heads of 128", 2e-6,
                st ? NAN : conf_rel(got, ref, n), conf_now_ms() - t0, st);
    /* top-256 of scores rounded to 1/8 (many ties at the boundary): exact, the earlier token first */
    const size_t K = 256;
    for (size_t t = 0; t < T; t++)
        for (size_t j = 0; j < L; j++) out[t * L + j] = (float)(int)(conf_rand(c) * 40) / 8.0f;
    int *idx = malloc(T * K * sizeof *idx), cnt[3];
    clnpu_buffer *bi = NULL, *bc = NULL;
    t0 = conf_now_ms();
    if (!st) st = clnpu_buffer_write(bo, 0, out, T * L * 4);
    if (!st) st = upload(c->dev, NULL, T * K * 4, &bi);
    if (!st) st = upload(c->dev, NULL, T * 4, &bc);
    if (!st) st = clnpu_dsa_topk(c->dev, bo, L, bp, T, K, bi, bc);
    if (!st) st = clnpu_buffer_read(bi, 0, idx, T * K * 4);
    if (!st) st = clnpu_buffer_read(bc, 0, cnt, T * 4);
    size_t wrong = 0;
    for (size_t t = 0; !st && t < T; t++) {
        const size_t nk = (size_t)pos[t] + 1, want = nk < K ? nk : K;
        /* the reference: the want best by (score desc, index asc), listed in index order */
        char *taken = calloc(nk, 1);
        for (size_t i = 0; i < want; i++) {
            size_t best = nk;
            for (size_t j = 0; j < nk; j++)
                if (!taken[j] && (best == nk || out[t * L + j] > out[t * L + best])) best = j;
            taken[best] = 1;
        }
        size_t o = 0;
        for (size_t j = 0; j < nk; j++)
            if (taken[j]) wrong += o >= (size_t)cnt[t] || idx[t * K + o++] != (int)j;
        wrong += (size_t)cnt[t] != want;
        free(taken);
    }
    conf_record(c, 3, "dsa_topk", "f32", "top-256 of 1/701/1500 keys, ties", 0, st ? NAN : (double)wrong,
                conf_now_ms() - t0, st);
    clnpu_buffer *bufs[] = {bq, bw, bk, bb, bs, bp, bo, bi, bc};
    for (size_t i = 0; i < 9; i++) clnpu_buffer_destroy(bufs[i]);
    free(q), free(w), free(kc), free(out), free(bt), free(ref), free(got), free(idx);
}

/* 2 rows x 4 heads, rank 512 + rope 64, over 300 selected of 1000 cached rows. */
static void case_mla_sparse(conf_ctx *c)
{
    const size_t N = 2, H = 4, R = 512, DR = 64, K = 300, L = 1000, page = 64, mb = (L + page - 1) / page, row = R + DR;
    const size_t npages = mb;
    float *cache = malloc(npages * page * row * 4), *qa = malloc(N * H * R * 4), *qp = malloc(N * H * DR * 4),
          *z = malloc(N * H * R * 4);
    int *bt = malloc(mb * sizeof *bt), *idx = malloc(N * K * sizeof *idx), cnt[2] = {1, (int)K}, seq[2] = {0, 0};
    for (size_t i = 0; i < npages * page * row; i++) cache[i] = conf_rand(c);
    for (size_t i = 0; i < N * H * R; i++) qa[i] = conf_rand(c) * 0.1f;
    for (size_t i = 0; i < N * H * DR; i++) qp[i] = conf_rand(c) * 0.1f;
    for (size_t i = 0; i < mb; i++) bt[i] = (int)((i * 5) % npages);
    for (size_t r = 0; r < N; r++)
        for (size_t i = 0; i < K; i++) idx[r * K + i] = (int)((i * 3 + r * 11) % L);
    double *ref = calloc(N * H * R, sizeof *ref), *s = malloc(K * sizeof *s);
    for (size_t r = 0; r < N; r++)
        for (size_t h = 0; h < H; h++) {
            double mx = -INFINITY, zs = 0;
            for (int i = 0; i < cnt[r]; i++) {
                const int t = idx[r * K + i];
                const float *rw = cache + ((size_t)bt[t / page] * page + t % page) * row;
                double a = 0;
                for (size_t d = 0; d < R; d++) a += (double)qa[(r * H + h) * R + d] * rw[d];
                for (size_t d = 0; d < DR; d++) a += (double)qp[(r * H + h) * DR + d] * rw[R + d];
                mx = fmax(mx, s[i] = a);
            }
            for (int i = 0; i < cnt[r]; i++) zs += (s[i] = exp(s[i] - mx));
            for (int i = 0; i < cnt[r]; i++) {
                const int t = idx[r * K + i];
                for (size_t d = 0; d < R; d++) ref[(r * H + h) * R + d] += s[i] / zs * cache[((size_t)bt[t / page] * page + t % page) * row + d];
            }
        }
    double t0 = conf_now_ms();
    clnpu_buffer *bc = NULL, *bqa = NULL, *bqp = NULL, *bbt = NULL, *bs = NULL, *bi = NULL, *bn = NULL, *bz = NULL;
    clnpu_status st = upload(c->dev, cache, npages * page * row * 4, &bc);
    if (!st) st = upload(c->dev, qa, N * H * R * 4, &bqa);
    if (!st) st = upload(c->dev, qp, N * H * DR * 4, &bqp);
    if (!st) st = upload(c->dev, bt, mb * 4, &bbt);
    if (!st) st = upload(c->dev, seq, N * 4, &bs);
    if (!st) st = upload(c->dev, idx, N * K * 4, &bi);
    if (!st) st = upload(c->dev, cnt, N * 4, &bn);
    if (!st) st = upload(c->dev, NULL, N * H * R * 4, &bz);
    clnpu_mla_sparse_args a = {bqa, bqp, 0, H * DR, DR, bc, page, bbt, mb, bs, bi, bn, K, N, H, R, DR, 1.0f, bz, 0,
                               CLNPU_DTYPE_F32};
    if (!st) st = clnpu_mla_sparse(c->dev, &a);
    if (!st) st = clnpu_buffer_read(bz, 0, z, N * H * R * 4);
    conf_record(c, 3, "mla_sparse", "f32", "2 rows (1/300 of 1000 rows) x 4 heads 512+64", 2e-6 * sqrt((double)K) + 1e-6,
                st ? NAN : conf_rel(z, ref, N * H * R), conf_now_ms() - t0, st);
    clnpu_buffer *bufs[] = {bc, bqa, bqp, bbt, bs, bi, bn, bz};
    for (size_t i = 0; i < 8; i++) clnpu_buffer_destroy(bufs[i]);
    free(cache), free(qa), free(qp), free(z), free(bt), free(idx), free(ref), free(s);
}

void conf_tier3_dsa(conf_ctx *c)
{
    case_indexer(c);
    case_mla_sparse(c);
}
