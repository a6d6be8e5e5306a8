/* DeepSeek Sparse Attention kernels against float64 host references on fresh random inputs with
 * ragged sizes, outputs poisoned with NaN first. Tolerances (relative L2 error):
 *  - indexer scores: heads x head_dim f32 products (<= 16 x 128 terms): 2e-6;
 *  - top-k: the indices must equal the reference's exactly, ties included (lower index wins);
 *  - sparse MLA: a dot product of R + DR terms, softmax and a weighted sum over <= k rows: 2e-6 * sqrt(k) + 1e-6;
 *  - layernorm (sums of n terms), sigmoid gate, silu: 1e-6. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static clnpu_buffer *dev_buf(const void *v, size_t n4)
{
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(test_device(), (n4 ? n4 : 1) * 4, &b));
    if (v && n4) ck_assert_ok(clnpu_buffer_write(b, 0, v, n4 * 4));
    return b;
}

static clnpu_buffer *dev_nan(size_t n)
{
    clnpu_buffer *b = dev_buf(NULL, n);
    float nan = NAN;
    ck_assert_ok(clnpu_buffer_fill(b, &nan, sizeof nan));
    return b;
}

/* A paged layout for two sequences: pages dealt in a shuffled order. */
typedef struct paging {
    size_t page, max_blocks, pages;
    int *bt; /* [2][max_blocks] */
} paging;

static void make_paging(paging *p, size_t page, size_t max_len)
{
    p->page = page, p->max_blocks = (max_len + page - 1) / page, p->pages = 2 * p->max_blocks;
    p->bt = malloc(p->pages * sizeof *p->bt);
    for (size_t i = 0; i < p->pages; i++) p->bt[i] = (int)i;
    for (size_t i = p->pages - 1; i > 0; i--) {
        size_t j = test_rand_u64() % (i + 1);
        int t = p->bt[i];
        p->bt[i] = p->bt[j], p->bt[j] = t;
    }
}

static size_t row_of(const paging *p, int seq, size_t pos)
{
    return (size_t)p->bt[seq * p->max_blocks + pos / p->page] * p->page + pos % p->page;
}

START_TEST(test_dsa_scores)
{
    clnpu_device *dev = test_device();
    const size_t shapes[][4] = {{1, 1, 4, 1}, {5, 3, 12, 7}, {9, 16, 32, 45}, {3, 16, 128, 130}}; /* T, heads, D, max len */
    for (size_t si = 0; si < 4; si++) {
        const size_t T = shapes[si][0], NH = shapes[si][1], D = shapes[si][2], L = shapes[si][3], page = 16;
        paging p;
        make_paging(&p, page, L);
        int *seq = malloc(T * sizeof *seq), *pos = malloc(T * sizeof *pos);
        size_t maxlen = 0;
        for (size_t t = 0; t < T; t++) {
            seq[t] = (int)(t % 2), pos[t] = (int)(t == 0 ? L - 1 : test_rand_u64() % L);
            if ((size_t)pos[t] + 1 > maxlen) maxlen = (size_t)pos[t] + 1;
        }
        const size_t ldq = NH * D + 3, ldw = NH + 1, ld = maxlen + 2;
        float *q = test_rand_array(T * ldq, -1, 1), *w = test_rand_array(T * ldw, -1, 1), *kc = test_rand_array(p.pages * page * D, -1, 1);
        clnpu_buffer *bq = dev_buf(q, T * ldq), *bw = dev_buf(w, T * ldw), *bk = dev_buf(kc, p.pages * page * D),
                     *bbt = dev_buf(p.bt, p.pages), *bs = dev_buf(seq, T), *bp = dev_buf(pos, T), *out = dev_nan(T * ld);
        const float scale = 1.0f / sqrtf((float)D * NH);
        clnpu_dsa_scores_args a = {{bq, 1, ldq}, {bw, 1, ldw}, bk, page, bbt, p.max_blocks, bs, bp, T, NH, D, maxlen,
                                   scale, out, ld};
        ck_assert_ok(clnpu_dsa_scores(dev, &a));
        float *o = malloc(T * ld * sizeof *o);
        ck_assert_ok(clnpu_buffer_read(out, 0, o, T * ld * 4));
        size_t n = 0;
        float *got = malloc(T * maxlen * sizeof *got);
        double *ref = malloc(T * maxlen * sizeof *ref);
        for (size_t t = 0; t < T; t++)
            for (size_t j = 0; j < maxlen; j++) {
                if (j > (size_t)pos[t]) {
                    ck_assert_msg(isinf(o[t * ld + j]) && o[t * ld + j] < 0, "key %zu past query %zu must be -inf", j, t);
                    continue;
                }
                const float *k = kc + row_of(&p, seq[t], j) * D;
                double s = 0;
                for (size_t h = 0; h < NH; h++) {
                    double dot = 0;
                    for (size_t d = 0; d < D; d++) dot += (double)q[1 + t * ldq + h * D + d] * k[d];
                    s += (double)w[1 + t * ldw + h] * (dot > 0 ? dot : 0);
                }
                ref[n] = s * scale, got[n++] = o[t * ld + j];
            }
        double e = test_rel64(got, ref, n);
        ck_assert_msg(e <= 2e-6, "scores T %zu heads %zu D %zu: rel error %.3g", T, NH, D, e);
        clnpu_buffer *bs_[] = {bq, bw, bk, bbt, bs, bp, out};
        for (size_t i = 0; i < 7; i++) clnpu_buffer_destroy(bs_[i]);
        free(q), free(w), free(kc), free(o), free(got), free(ref), free(seq), free(pos), free(p.bt);
    }
}
END_TEST

/* Reference: the k best by (score descending, index ascending), listed in index order. */
static size_t ref_topk(const float *s, size_t n, size_t k, int *out)
{
    if (n <= k) {
        for (size_t j = 0; j < n; j++) out[j] = (int)j;
        return n;
    }
    char *taken = calloc(n, 1);
    for (size_t i = 0; i < k; i++) {
        size_t best = n;
        for (size_t j = 0; j < n; j++)
            if (!taken[j] && (best == n || s[j] > s[best])) best = j;
        taken[best] = 1;
    }
    size_t o = 0;
    for (size_t j = 0; j < n; j++)
        if (taken[j]) out[o++] = (int)j;
    free(taken);
    return o;
}

START_TEST(test_dsa_topk)
{
    clnpu_device *dev = test_device();
    const size_t shapes[][3] = {{1, 1, 1}, {7, 10, 40}, {5, 12, 48}, {4, 64, 1000}, {2, 2048, 5000}}; /* T, k, max len */
    for (size_t si = 0; si < 5; si++)
        for (int ties = 0; ties < 2; ties++) {
            const size_t T = shapes[si][0], k = shapes[si][1], L = shapes[si][2], ld = L + 1;
            int *pos = malloc(T * sizeof *pos);
            float *s = malloc(T * ld * sizeof *s);
            for (size_t t = 0; t < T; t++) {
                pos[t] = (int)(t == 0 ? L - 1 : test_rand_u64() % L);
                for (size_t j = 0; j < ld; j++) {
                    /* ties: a few levels only (and zeros, as ReLU makes), so many equal values straddle the k-th */
                    float v = ties ? (float)(int)test_rand_uniform(-3, 4) : test_rand_uniform(-5, 5);
                    s[t * ld + j] = j > (size_t)pos[t] ? NAN : v; /* past the query: never read */
                }
            }
            clnpu_buffer *bs = dev_buf(s, T * ld), *bp = dev_buf(pos, T), *bi = dev_nan(T * k), *bc = dev_nan(T);
            ck_assert_ok(clnpu_dsa_topk(dev, bs, ld, bp, T, k, bi, bc));
            int *idx = malloc(T * k * sizeof *idx), *cnt = malloc(T * sizeof *cnt), *ref = malloc(k * sizeof *ref);
            ck_assert_ok(clnpu_buffer_read(bi, 0, idx, T * k * 4));
            ck_assert_ok(clnpu_buffer_read(bc, 0, cnt, T * 4));
            for (size_t t = 0; t < T; t++) {
                size_t n = ref_topk(s + t * ld, (size_t)pos[t] + 1, k, ref);
                ck_assert_msg((size_t)cnt[t] == n, "top-%zu of %d: count %d, expected %zu", k, pos[t] + 1, cnt[t], n);
                for (size_t i = 0; i < n; i++)
                    ck_assert_msg(idx[t * k + i] == ref[i], "top-%zu of %d (ties %d) row %zu: index %zu is %d, expected %d",
                                  k, pos[t] + 1, ties, t, i, idx[t * k + i], ref[i]);
            }
            clnpu_buffer_destroy(bs), clnpu_buffer_destroy(bp), clnpu_buffer_destroy(bi), clnpu_buffer_destroy(bc);
            free(pos), free(s), free(idx), free(cnt), free(ref);
        }
}
END_TEST

/* float64 reference of sparse absorbed MLA over the cached values `cache` (rows of R + DR). */
typedef struct sparse_shape {
    size_t N, H, R, DR, k, ld, dqk;
} sparse_shape;

static void sparse_ref(const paging *p, const sparse_shape *a, const float *qa, const float *qp, const float *cache,
                       const int *seq, const int *idx, const int *cnt, float scale, double *ref)
{
    const size_t H = a->H, R = a->R, DR = a->DR, k = a->k, row = R + DR;
    double *sc = malloc(k * sizeof *sc);
    for (size_t r = 0; r < a->N; r++)
        for (size_t h = 0; h < H; h++) {
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < cnt[r]; i++) {
                const float *c = cache + row_of(p, seq[r], (size_t)idx[r * k + i]) * row;
                double s = 0;
                for (size_t d = 0; d < R; d++) s += (double)qa[(r * H + h) * R + d] * c[d];
                for (size_t d = 0; d < DR; d++) s += (double)qp[16 + r * a->ld + h * a->dqk + d] * c[R + d];
                sc[i] = s * scale;
                if (sc[i] > mx) mx = sc[i];
            }
            for (int i = 0; i < cnt[r]; i++) sum += sc[i] = exp(sc[i] - mx);
            for (size_t d = 0; d < R; d++) ref[(r * H + h) * R + d] = 0;
            for (int i = 0; i < cnt[r]; i++) {
                const float *c = cache + row_of(p, seq[r], (size_t)idx[r * k + i]) * row;
                for (size_t d = 0; d < R; d++) ref[(r * H + h) * R + d] += sc[i] / sum * c[d];
            }
        }
    free(sc);
}

START_TEST(test_mla_sparse)
{
    clnpu_device *dev = test_device();
    /* rows, H, R, DR, k; R = 160: two fp8 scales a row, the second for 32 elements */
    const size_t shapes[][5] = {{1, 1, 4, 4, 1}, {3, 5, 32, 8, 10}, {6, 4, 36, 12, 7}, {2, 9, 64, 16, 300}, {2, 3, 160, 16, 40}};
    for (size_t si = 0; si < 5; si++) {
        const size_t N = shapes[si][0], H = shapes[si][1], R = shapes[si][2], DR = shapes[si][3], k = shapes[si][4];
        const size_t L = 2 * k + 5, page = 8, row = R + DR, dqk = 16 + DR, ld = H * dqk + 2;
        paging p;
        make_paging(&p, page, L);
        float *qa = test_rand_array(N * H * R, -0.5f, 0.5f), *qp = test_rand_array(N * ld, -0.5f, 0.5f), *cache = test_rand_array(p.pages * page * row, -1, 1);
        /* values a bf16 cache holds exactly, so one reference serves the f32 and the bf16 cache */
        uint16_t *c16 = malloc(p.pages * page * row * sizeof *c16);
        for (size_t i = 0; i < p.pages * page * row; i++)
            c16[i] = clnpu_f32_to_bf16(cache[i]), cache[i] = clnpu_bf16_to_f32(c16[i]);
        int *seq = malloc(N * sizeof *seq), *idx = malloc(N * k * sizeof *idx), *cnt = malloc(N * sizeof *cnt);
        for (size_t r = 0; r < N; r++) {
            seq[r] = (int)(r % 2);
            /* a random subset of [0, L) of 1 .. k positions, in increasing order */
            size_t c = 0, want = 1 + test_rand_u64() % k;
            for (size_t j = 0; j < L && c < want; j++)
                if (test_rand_u64() % (L - j) < want - c) idx[r * k + c++] = (int)j;
            cnt[r] = (int)c;
            for (size_t i = c; i < k; i++) idx[r * k + i] = -1; /* never read */
        }
        clnpu_buffer *bqa = dev_buf(qa, N * H * R), *bqp = dev_buf(qp, N * ld), *bc = dev_buf(cache, p.pages * page * row),
                     *bbt = dev_buf(p.bt, p.pages), *bs = dev_buf(seq, N), *bi = dev_buf(idx, N * k),
                     *bn = dev_buf(cnt, N), *out = dev_nan(N * H * R);
        const float scale = 0.37f;
        float *o = malloc(N * H * R * sizeof *o);
        double *ref = calloc(N * H * R, sizeof *ref);
        const sparse_shape sh = {N, H, R, DR, k, ld, dqk};
        sparse_ref(&p, &sh, qa, qp, cache, seq, idx, cnt, scale, ref);
        /* the selection whole, cut into 3 chunks (merged after; some rows' chunks empty), and as
         * chosen; the last over a bf16 cache */
        clnpu_buffer *bc16;
        ck_assert_ok(clnpu_buffer_create(dev, p.pages * page * row * 2, &bc16));
        ck_assert_ok(clnpu_buffer_write(bc16, 0, c16, p.pages * page * row * 2));
        const unsigned splits[4] = {1, 3, 0, 0};
        for (int sp = 0; sp < 4; sp++) {
            const float nan = NAN;
            ck_assert_ok(clnpu_buffer_fill(out, &nan, sizeof nan));
            clnpu_mla_sparse_args a = {bqa, bqp, 16, ld, dqk, sp == 3 ? bc16 : bc, page, bbt, p.max_blocks, bs, bi, bn, k,
                                       N, H, R, DR, scale, out, splits[sp], sp == 3 ? CLNPU_DTYPE_BF16 : CLNPU_DTYPE_F32};
            ck_assert_ok(clnpu_mla_sparse(dev, &a));
            ck_assert_ok(clnpu_buffer_read(out, 0, o, N * H * R * 4));
            double e = test_rel64(o, ref, N * H * R), tol = 2e-6 * sqrt((double)k) + 1e-6;
            ck_assert_msg(e <= tol, "sparse MLA rows %zu H %zu R %zu k %zu splits %u: rel error %.3g > %.3g", N, H, R, k,
                          splits[sp], e, tol);
        }
        /* an fp8 cache (FlashMLA's rows, ragged magnitudes along c), whole and in 3 chunks: the
         * reference reads the values the cache holds */
        for (size_t i = 0; i < p.pages * page * row; i++)
            if (i % row < R) cache[i] *= ldexpf(1.0f, (int)((i % row) / 8 % 5) - 2);
        size_t nb;
        void *enc = test_latent_cache_encode(CLNPU_DTYPE_FP8_E4M3, R, DR, p.pages * page, cache, &nb);
        clnpu_buffer *bc8;
        ck_assert_ok(clnpu_buffer_create(dev, nb, &bc8));
        ck_assert_ok(clnpu_buffer_write(bc8, 0, enc, nb));
        free(enc);
        sparse_ref(&p, &sh, qa, qp, cache, seq, idx, cnt, scale, ref);
        for (int sp = 0; sp < 2; sp++) {
            const float nan = NAN;
            ck_assert_ok(clnpu_buffer_fill(out, &nan, sizeof nan));
            clnpu_mla_sparse_args a = {bqa, bqp, 16, ld, dqk, bc8, page, bbt, p.max_blocks, bs, bi, bn, k,
                                       N, H, R, DR, scale, out, sp ? 3 : 1, CLNPU_DTYPE_FP8_E4M3};
            ck_assert_ok(clnpu_mla_sparse(dev, &a));
            ck_assert_ok(clnpu_buffer_read(out, 0, o, N * H * R * 4));
            double e = test_rel64(o, ref, N * H * R), tol = 2e-6 * sqrt((double)k) + 1e-6;
            ck_assert_msg(e <= tol, "sparse MLA, fp8 cache, rows %zu H %zu R %zu k %zu splits %d: rel error %.3g > %.3g", N, H,
                          R, k, sp ? 3 : 1, e, tol);
        }
        clnpu_buffer *bs_[] = {bqa, bqp, bc, bbt, bs, bi, bn, out, bc16, bc8};
        for (size_t i = 0; i < 10; i++) clnpu_buffer_destroy(bs_[i]);
        free(c16), free(qa), free(qp), free(cache), free(seq), free(idx), free(cnt), free(o), free(ref), free(p.bt);
    }
}
END_TEST

/* The key cache append, LayerNorm with bias, the sigmoid gate and SiLU. */
START_TEST(test_dsa_elementwise)
{
    clnpu_device *dev = test_device();
    const size_t T = 7, D = 20, ld = 27, page = 4;
    paging p;
    make_paging(&p, page, 13);
    int seq[7], pos[7];
    for (size_t t = 0; t < T; t++) seq[t] = (int)(t % 2), pos[t] = (int)(test_rand_u64() % 13);
    seq[1] = 0, pos[1] = pos[0] + 1 < 13 ? pos[0] + 1 : pos[0] - 1; /* rows 0 and 1: different slots */
    for (size_t t = 2; t < T; t++) seq[t] = 1, pos[t] = (int)t; /* distinct slots of sequence 1 */
    float *x = test_rand_array(T * ld, -2, 2);
    clnpu_buffer *bx = dev_buf(x, T * ld), *bc = dev_nan(p.pages * page * D), *bbt = dev_buf(p.bt, p.pages),
                 *bs = dev_buf(seq, T), *bp = dev_buf(pos, T);
    ck_assert_ok(clnpu_dsa_key_append(dev, bc, page, bbt, p.max_blocks, (clnpu_view){bx, 3, ld}, D, T, bs, bp));
    float *c = malloc(p.pages * page * D * sizeof *c);
    ck_assert_ok(clnpu_buffer_read(bc, 0, c, p.pages * page * D * 4));
    for (size_t t = 0; t < T; t++)
        ck_assert_msg(!memcmp(c + row_of(&p, seq[t], (size_t)pos[t]) * D, x + 3 + t * ld, D * 4), "key row %zu", t);
    /* layernorm in place on [T][D] at offset 3, stride ld */
    float *w = test_rand_array(D, 0.5f, 1.5f), *b = test_rand_array(D, -0.5f, 0.5f), *o = malloc(T * ld * sizeof *o);
    clnpu_buffer *bw = dev_buf(w, D), *bb = dev_buf(b, D);
    ck_assert_ok(clnpu_layernorm(dev, (clnpu_view){bx, 3, ld}, bw, bb, T, D, 1e-6f));
    ck_assert_ok(clnpu_buffer_read(bx, 0, o, T * ld * 4));
    double *ref = malloc(T * D * sizeof *ref);
    float *got = malloc(T * D * sizeof *got);
    for (size_t t = 0; t < T; t++) {
        double mean = 0, var = 0;
        for (size_t i = 0; i < D; i++) mean += x[3 + t * ld + i];
        mean /= D;
        for (size_t i = 0; i < D; i++) var += (x[3 + t * ld + i] - mean) * (x[3 + t * ld + i] - mean);
        var /= D;
        for (size_t i = 0; i < D; i++)
            ref[t * D + i] = (x[3 + t * ld + i] - mean) / sqrt(var + 1e-6) * w[i] + b[i], got[t * D + i] = o[3 + t * ld + i];
    }
    ck_assert_msg(test_rel64(got, ref, T * D) <= 1e-6, "layernorm: rel error %.3g", test_rel64(got, ref, T * D));
    /* y[t][h][i] *= sigmoid(g[t][h][i]): 3 heads of 5, y heads 5 apart at offset 1, g heads 6 apart */
    const size_t H = 3, n = 5;
    float *y = test_rand_array(T * 16, -2, 2), *g = test_rand_array(T * 20, -4, 4);
    clnpu_buffer *by = dev_buf(y, T * 16), *bg = dev_buf(g, T * 20);
    ck_assert_ok(clnpu_mul_sigmoid(dev, (clnpu_view){by, 1, 16}, 5, (clnpu_view){bg, 2, 20}, 6, T, H, n));
    float *yo = malloc(T * 16 * sizeof *yo);
    ck_assert_ok(clnpu_buffer_read(by, 0, yo, T * 16 * 4));
    size_t m = 0;
    for (size_t t = 0; t < T; t++)
        for (size_t h = 0; h < H; h++)
            for (size_t i = 0; i < n; i++, m++) {
                ref[m] = y[1 + t * 16 + h * 5 + i] / (1 + exp(-(double)g[2 + t * 20 + h * 6 + i]));
                got[m] = yo[1 + t * 16 + h * 5 + i];
            }
    ck_assert_msg(test_rel64(got, ref, m) <= 1e-6, "mul sigmoid: rel error %.3g", test_rel64(got, ref, m));
    ck_assert_ok(clnpu_silu(dev, (clnpu_view){bg, 2, 20}, T, 17));
    float *go = malloc(T * 20 * sizeof *go);
    ck_assert_ok(clnpu_buffer_read(bg, 0, go, T * 20 * 4));
    m = 0;
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < 17; i++, m++) {
            const double v = g[2 + t * 20 + i];
            ref[m] = v / (1 + exp(-v)), got[m] = go[2 + t * 20 + i];
        }
    ck_assert_msg(test_rel64(got, ref, m) <= 1e-6, "silu: rel error %.3g", test_rel64(got, ref, m));
    ck_assert_msg(go[0] == g[0] && go[1] == g[1] && go[19] == g[19], "silu wrote outside its rows");
    clnpu_buffer *bs_[] = {bx, bc, bbt, bs, bp, bw, bb, by, bg};
    for (size_t i = 0; i < 9; i++) clnpu_buffer_destroy(bs_[i]);
    free(x), free(c), free(w), free(b), free(o), free(ref), free(got), free(y), free(g), free(yo), free(go), free(p.bt);
}
END_TEST

/* transformers' AXK2TopkRouter with groups, in float64: sigmoid, + bias; group score = the two
 * best biased scores; the topk_group best groups kept, the others' experts scored 0 (not
 * excluded); top_k by that score (ties: lower index), weights from the unbiased sigmoid. */
static void ref_route_axk2(const float *logit, const float *bias, size_t E, size_t G, size_t TG, size_t K, bool norm,
                           double scale, int *ids, double *w)
{
    double s[64], sb[64], gsc[64];
    int keep[64] = {0}, chosen[64] = {0};
    const size_t gs = E / G;
    for (size_t e = 0; e < E; e++) s[e] = 1 / (1 + exp(-(double)logit[e])), sb[e] = s[e] + bias[e];
    for (size_t g = 0; g < G; g++) {
        double a = -INFINITY, b = -INFINITY;
        for (size_t e = g * gs; e < (g + 1) * gs; e++) {
            if (sb[e] > a) b = a, a = sb[e];
            else if (sb[e] > b) b = sb[e];
        }
        gsc[g] = a + b;
    }
    for (size_t r = 0; r < TG; r++) {
        size_t best = G;
        for (size_t g = 0; g < G; g++)
            if (!keep[g] && (best == G || gsc[g] > gsc[best])) best = g;
        keep[best] = 1;
    }
    for (size_t e = 0; e < E; e++)
        if (!keep[e / gs]) sb[e] = 0;
    double sum = 0;
    for (size_t r = 0; r < K; r++) {
        size_t best = E;
        for (size_t e = 0; e < E; e++)
            if (!chosen[e] && (best == E || sb[e] > sb[best])) best = e;
        chosen[best] = 1, sum += s[best];
    }
    size_t j = 0;
    for (size_t e = 0; e < E; e++)
        if (chosen[e]) ids[j] = (int)e, w[j++] = s[e] * (norm ? scale / (sum + 1e-20) : scale);
}

/* A.X K2's grouped routing on the device against that reference: negative biases make kept
 * experts score below the zeros of the dropped groups, and top_k exceeds a kept group. */
START_TEST(test_moe_route_masked_zero)
{
    clnpu_device *dev = test_device();
    const size_t E = 16, G = 4, TG = 1, K = 6, T = 37;
    float *logits = test_rand_array(T * E, -3, 3), *bias = test_rand_array(E, -1.2f, 0.3f);
    clnpu_buffer *bl = dev_buf(logits, T * E), *bb = dev_buf(bias, E), *bi = dev_nan(T * K), *bw = dev_nan(T * K);
    const clnpu_moe_config cfg = {E, G, TG, K, true, 2.5f, true};
    ck_assert_ok(clnpu_moe_route(dev, (clnpu_view){bl, 0, E}, bb, T, &cfg, bi, bw));
    int *ids = malloc(T * K * sizeof *ids), rid[16];
    float *w = malloc(T * K * sizeof *w);
    double rw[16], num = 0, den = 0;
    ck_assert_ok(clnpu_buffer_read(bi, 0, ids, T * K * 4));
    ck_assert_ok(clnpu_buffer_read(bw, 0, w, T * K * 4));
    size_t from_dropped = 0;
    for (size_t t = 0; t < T; t++) {
        ref_route_axk2(logits + t * E, bias, E, G, TG, K, true, 2.5, rid, rw);
        for (size_t j = 0; j < K; j++) {
            ck_assert_msg(ids[t * K + j] == rid[j], "token %zu slot %zu: expert %d, reference %d", t, j, ids[t * K + j], rid[j]);
            num += (w[t * K + j] - rw[j]) * (w[t * K + j] - rw[j]), den += rw[j] * rw[j];
        }
        /* the case this rule exists for: some chosen experts come from groups not kept */
        int g0 = rid[0] / 4;
        for (size_t j = 1; j < K; j++) from_dropped += rid[j] / 4 != g0;
    }
    ck_assert_msg(sqrt(num / den) <= 1e-6, "routing weights: rel error %.3g", sqrt(num / den));
    ck_assert_msg(from_dropped > 0, "no token picked an expert of a dropped group: the test does not exercise the rule");
    clnpu_buffer_destroy(bl), clnpu_buffer_destroy(bb), clnpu_buffer_destroy(bi), clnpu_buffer_destroy(bw);
    free(logits), free(bias), free(ids), free(w);
}
END_TEST

Suite *suite_dsa(void)
{
    Suite *s = suite_create("dsa");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_dsa_scores);
    tcase_add_test(tc, test_dsa_topk);
    tcase_add_test(tc, test_mla_sparse);
    tcase_add_test(tc, test_dsa_elementwise);
    tcase_add_test(tc, test_moe_route_masked_zero);
    suite_add_tcase(s, tc);
    return s;
}
