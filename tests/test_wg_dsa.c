/* The work-group family of DeepSeek Sparse Attention (kernels-cl/dsa_wg.cl) on PoCL with the family
 * forced at 64 / 128 / 256 work-items: the indexer scores, sparse MLA and LayerNorm against float64
 * on ragged shapes with outputs poisoned (tolerances as tests/test_dsa.c); the top-k's selections
 * equal the cpu family's exactly, ties included, and beat every key left out; the tiny
 * DeepSeek-V3.2 and A.X K2 with every operator in the wg family against transformers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#ifndef CLNPU_SOURCE_DIR
#error "CLNPU_SOURCE_DIR must name the source tree"
#endif

static const unsigned sizes[] = {64, 128, 256};
static clnpu_kernel_family saved_family;
static unsigned saved_wg;

static void setup(void)
{
    const clnpu_capability *c = clnpu_device_capability(test_device());
    saved_family = c->family, saved_wg = c->wg_size;
}

static void teardown(void)
{
    clnpu_device_set_kernel_family(test_device(), saved_family, saved_wg);
}

static void force(clnpu_kernel_family f, unsigned size)
{
    ck_assert_ok(clnpu_device_set_kernel_family(test_device(), f, size));
}

static clnpu_buffer *upload(const void *v, size_t bytes)
{
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(test_device(), bytes ? bytes : 4, &b));
    if (v && bytes) ck_assert_ok(clnpu_buffer_write(b, 0, v, bytes));
    return b;
}

static clnpu_buffer *poisoned(size_t floats)
{
    clnpu_buffer *b = upload(NULL, floats * 4);
    const float nan = NAN;
    ck_assert_ok(clnpu_buffer_fill(b, &nan, sizeof nan));
    return b;
}

/* Two sequences' pages of `page` rows, dealt in a shuffled order: bt [2][max_blocks]. */
static int *make_pages(size_t page, size_t max_len, size_t *out_mb)
{
    const size_t mb = (max_len + page - 1) / page, n = 2 * mb;
    int *bt = malloc(n * sizeof *bt);
    for (size_t i = 0; i < n; i++) bt[i] = (int)i;
    for (size_t i = n - 1; i > 0; i--) {
        const size_t j = test_rand_u64() % (i + 1);
        const int t = bt[i];
        bt[i] = bt[j], bt[j] = t;
    }
    *out_mb = mb;
    return bt;
}

static size_t row_of(const int *bt, size_t mb, size_t page, int seq, size_t pos)
{
    return (size_t)bt[(size_t)seq * mb + pos / page] * page + pos % page;
}

/* Indexer scores of T queries (heads NH of D) over max length L against float64 on device dev:
 * keys past each query -inf, the others within 2e-6. */
static void check_scores(clnpu_device *dev, const size_t shape[4], const char *what)
{
    const size_t T = shape[0], NH = shape[1], D = shape[2], L = shape[3], page = 16;
    size_t mb;
    int *bt = make_pages(page, L, &mb), seq[9], pos[9];
    size_t maxlen = 0;
    for (size_t t = 0; t < T; t++) {
        seq[t] = (int)(t % 2), pos[t] = (int)(t == 0 ? L - 1 : test_rand_u64() % L);
        if ((size_t)pos[t] + 1 > maxlen) maxlen = (size_t)pos[t] + 1;
    }
    const size_t ldq = NH * D + 3, ldw = NH + 1, ld = maxlen + 2, nk = 2 * mb * page * D;
    float *q = test_rand_array(T * ldq, -1, 1), *w = test_rand_array(T * ldw, -1, 1), *kc = test_rand_array(nk, -1, 1);
    clnpu_buffer *b[7];
    const void *src[6] = {q, w, kc, bt, seq, pos};
    const size_t n4[7] = {T * ldq, T * ldw, nk, 2 * mb, T, T, T * ld};
    for (int i = 0; i < 7; i++) {
        ck_assert_ok(clnpu_buffer_create(dev, n4[i] * 4, &b[i]));
        if (i < 6) ck_assert_ok(clnpu_buffer_write(b[i], 0, src[i], n4[i] * 4));
    }
    const float nan = NAN;
    ck_assert_ok(clnpu_buffer_fill(b[6], &nan, sizeof nan));
    const float scale = 1.0f / sqrtf((float)(D * NH));
    clnpu_dsa_scores_args a = {{b[0], 1, ldq}, {b[1], 1, ldw}, b[2], page, b[3], mb, b[4], b[5], T, NH, D, maxlen, scale,
                               b[6], ld};
    ck_assert_ok(clnpu_dsa_scores(dev, &a));
    float *o = malloc(T * ld * sizeof *o), *got = malloc(T * maxlen * sizeof *got);
    double *ref = malloc(T * maxlen * sizeof *ref);
    ck_assert_ok(clnpu_buffer_read(b[6], 0, o, T * ld * 4));
    size_t n = 0;
    for (size_t t = 0; t < T; t++)
        for (size_t j = 0; j < maxlen; j++) {
            if (j > (size_t)pos[t]) {
                ck_assert_msg(isinf(o[t * ld + j]) && o[t * ld + j] < 0, "%s: key %zu past query %zu: %g", what, j, t,
                              o[t * ld + j]);
                continue;
            }
            const float *k = kc + row_of(bt, mb, page, seq[t], j) * D;
            double s = 0;
            for (size_t h = 0; h < NH; h++) {
                double dot = 0;
                for (size_t d = 0; d < D; d++) dot += (double)q[1 + t * ldq + h * D + d] * k[d];
                s += (double)w[1 + t * ldw + h] * (dot > 0 ? dot : 0);
            }
            ref[n] = s * scale, got[n++] = o[t * ld + j];
        }
    const double e = test_rel64(got, ref, n);
    ck_assert_msg(e <= 2e-6, "%s scores T %zu heads %zu D %zu: rel error %.3g", what, T, NH, D, e);
    for (int i = 0; i < 7; i++) clnpu_buffer_destroy(b[i]);
    free(q), free(w), free(kc), free(o), free(got), free(ref), free(bt);
}

/* Indexer scores: key tiles over several pages, heads in several local chunks, head dims that
 * are and are not multiples of 16. Each shape at one of the work-group sizes (every shape is a
 * program build of its own). */
START_TEST(test_wg_dsa_scores)
{
    force(CLNPU_KERNEL_FAMILY_WG, sizes[_i]);
    const size_t shapes[][4] = {{1, 1, 4, 1}, {5, 3, 12, 7}, {9, 16, 32, 45}, {3, 16, 128, 130}, {1, 64, 128, 301},
                                {4, 16, 32, 200}};
    char what[32];
    snprintf(what, sizeof what, "wg %u", sizes[_i]);
    for (size_t si = (size_t)_i; si < 6; si += 3) check_scores(test_device(), shapes[si], what);
}
END_TEST

/* An NPU profile of 4 KiB local memory: the scores' tiles shrink to fit (and stay right); at
 * 256 bytes the launches are refused, naming the kernel and the budget. */
START_TEST(test_wg_dsa_budget)
{
    clnpu_profile_set *set;
    ck_assert_ok(clnpu_profile_set_builtin(&set));
    clnpu_profile p = *clnpu_profile_set_find(set, "rebellions-atom");
    const size_t budgets[2] = {4096, 256};
    for (int i = 0; i < 2; i++) {
        snprintf(p.name, sizeof p.name, "dsa-npu-%zu", budgets[i]);
        p.kernel.local_mem_bytes = (int64_t)budgets[i];
        p.sram_bytes = (int64_t)budgets[i];
        ck_assert_ok(clnpu_profile_set_add(set, &p));
    }
    clnpu_device_options o = clnpu_device_options_default();
    o.profiles = set;
    clnpu_device *dev;
    o.target = "dsa-npu-4096";
    ck_assert_ok(clnpu_device_open(0, &o, &dev));
    ck_assert_int_eq(clnpu_device_capability(dev)->family, CLNPU_KERNEL_FAMILY_WG);
    const size_t shape[4] = {3, 5, 32, 70};
    check_scores(dev, shape, "4 KiB budget");
    clnpu_device_close(dev);
    o.target = "dsa-npu-256";
    ck_assert_ok(clnpu_device_open(0, &o, &dev));
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(dev, 4096, &b));
    clnpu_dsa_scores_args a = {{b, 0, 32}, {b, 0, 1}, b, 16, b, 1, b, b, 1, 1, 32, 1, 1.0f, b, 1};
    ck_assert_int_eq(clnpu_dsa_scores(dev, &a), CLNPU_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(clnpu_error_message(), "clnpu_dsa_scores_wg") && strstr(clnpu_error_message(), "256 bytes"), "%s",
                  clnpu_error_message());
    clnpu_mla_sparse_args m = {b, b, 0, 16, 16, b, 16, b, 1, b, b, b, 1, 1, 1, 64, 16, 1.0f, b, 1, CLNPU_DTYPE_F32};
    ck_assert_int_eq(clnpu_mla_sparse(dev, &m), CLNPU_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(clnpu_error_message(), "clnpu_mla_sparse_wg") && strstr(clnpu_error_message(), "256 bytes"), "%s",
                  clnpu_error_message());
    clnpu_buffer_destroy(b);
    clnpu_device_close(dev);
    clnpu_profile_set_destroy(set);
}
END_TEST

/* (a before b) in the selection's order: the higher score, at equal scores the earlier key. */
static bool beats(const float *s, size_t a, size_t b)
{
    return s[a] > s[b] || (s[a] == s[b] && a < b);
}

/* Top-k on the same scores by both families: identical counts and indices (ties at the k-th value
 * from a few score levels, and ReLU's zeros); the selection ascending and every selected key
 * beating every key left out. Values past each query are NaN (never read). */
START_TEST(test_wg_dsa_topk)
{
    clnpu_device *dev = test_device();
    const size_t shapes[][3] = {{1, 1, 1}, {7, 10, 40}, {5, 12, 48}, {4, 64, 1000}, {2, 2048, 5000}, {3, 300, 301}};
    /* CLNPU_TEST_SMALL (tools/oclgrind_wg.sh: a simulator runs each work-item) skips the top-2048 */
    for (size_t si = 0; si < 6; si++)
        for (int ties = 0; ties < 2 && !(si == 4 && getenv("CLNPU_TEST_SMALL")); ties++) {
            const size_t T = shapes[si][0], k = shapes[si][1], L = shapes[si][2], ld = L + 1;
            int *pos = malloc(T * sizeof *pos);
            float *s = malloc(T * ld * sizeof *s);
            for (size_t t = 0; t < T; t++) {
                pos[t] = (int)(t == 0 ? L - 1 : test_rand_u64() % L);
                for (size_t j = 0; j < ld; j++) {
                    const float v = ties ? (float)(int)test_rand_uniform(-3, 4) : test_rand_uniform(-5, 5);
                    s[t * ld + j] = j > (size_t)pos[t] ? NAN : v;
                }
            }
            clnpu_buffer *bs = upload(s, T * ld * 4), *bp = upload(pos, T * 4);
            int *idx[2], *cnt[2];
            for (int fam = 0; fam < 2; fam++) {
                force(fam ? CLNPU_KERNEL_FAMILY_WG : CLNPU_KERNEL_FAMILY_CPU, fam ? sizes[_i] : 0);
                clnpu_buffer *bi = poisoned(T * k), *bc = poisoned(T);
                ck_assert_ok(clnpu_dsa_topk(dev, bs, ld, bp, T, k, bi, bc));
                idx[fam] = malloc(T * k * sizeof(int)), cnt[fam] = malloc(T * sizeof(int));
                ck_assert_ok(clnpu_buffer_read(bi, 0, idx[fam], T * k * 4));
                ck_assert_ok(clnpu_buffer_read(bc, 0, cnt[fam], T * 4));
                clnpu_buffer_destroy(bi), clnpu_buffer_destroy(bc);
            }
            char *taken = malloc(L);
            for (size_t t = 0; t < T; t++) {
                const size_t n = (size_t)pos[t] + 1, want = n < k ? n : k;
                const float *st = s + t * ld;
                ck_assert_msg(cnt[1][t] == cnt[0][t] && (size_t)cnt[1][t] == want, "wg %u top-%zu of %zu: count %d, cpu %d",
                              sizes[_i], k, n, cnt[1][t], cnt[0][t]);
                memset(taken, 0, L);
                size_t worst = SIZE_MAX;
                for (size_t i = 0; i < want; i++) {
                    const int j = idx[1][t * k + i];
                    ck_assert_msg(j == idx[0][t * k + i], "wg %u top-%zu of %zu (ties %d) row %zu: index %zu is %d, cpu %d",
                                  sizes[_i], k, n, ties, t, i, j, idx[0][t * k + i]);
                    ck_assert(j >= 0 && (size_t)j < n && (i == 0 || j > idx[1][t * k + i - 1]));
                    taken[j] = 1;
                    if (worst == SIZE_MAX || beats(st, worst, (size_t)j)) worst = (size_t)j;
                }
                for (size_t j = 0; j < n; j++)
                    ck_assert_msg(taken[j] || beats(st, worst, j), "row %zu: key %zu (%g) left out beats %zu (%g)", t, j,
                                  st[j], worst, st[worst]);
            }
            clnpu_buffer_destroy(bs), clnpu_buffer_destroy(bp);
            free(pos), free(s), free(taken);
            for (int fam = 0; fam < 2; fam++) free(idx[fam]), free(cnt[fam]);
        }
}
END_TEST

/* Sparse absorbed MLA over random selections (1 .. k rows of a paged cache): the selection whole,
 * in 3 chunks merged after, as chosen, and (odd shapes) over a bf16 cache; then whole and in 3
 * chunks over an fp8 cache (FlashMLA's rows, ragged magnitudes along c; the reference reads the
 * values it holds); each shape at one of the work-group sizes. */
START_TEST(test_wg_mla_sparse)
{
    clnpu_device *dev = test_device();
    force(CLNPU_KERNEL_FAMILY_WG, sizes[_i]);
    const size_t shapes[][5] = {{1, 1, 4, 4, 1}, {3, 5, 32, 8, 10}, {6, 4, 36, 12, 7}, {2, 9, 64, 16, 300},
                                {5, 16, 32, 8, 12}, {3, 3, 16, 4, 40}}; /* rows, H, R, DR, k */
    for (size_t si = (size_t)_i; si < 6; si += 3) {
        const size_t N = shapes[si][0], H = shapes[si][1], R = shapes[si][2], DR = shapes[si][3], k = shapes[si][4];
        const size_t L = 2 * k + 5, page = 8, row = R + DR, dqk = 16 + DR, ld = H * dqk + 2;
        size_t mb;
        int *bt = make_pages(page, L, &mb);
        const size_t nc = 2 * mb * page * row;
        float *qa = test_rand_array(N * H * R, -0.5f, 0.5f), *qp = test_rand_array(N * ld, -0.5f, 0.5f), *cache = test_rand_array(nc, -1, 1);
        uint16_t *c16 = malloc(nc * sizeof *c16);
        for (size_t i = 0; i < nc; i++) /* values a bf16 cache holds exactly: one reference for both */
            c16[i] = clnpu_f32_to_bf16(cache[i]), cache[i] = clnpu_bf16_to_f32(c16[i]);
        int seq[6], *idx = malloc(N * k * sizeof *idx), cnt[6];
        for (size_t r = 0; r < N; r++) {
            seq[r] = (int)(r % 2);
            size_t c = 0, want = 1 + test_rand_u64() % k;
            for (size_t j = 0; j < L && c < want; j++)
                if (test_rand_u64() % (L - j) < want - c) idx[r * k + c++] = (int)j;
            cnt[r] = (int)c;
            for (size_t i = c; i < k; i++) idx[r * k + i] = -1; /* never read */
        }
        double *ref = calloc(N * H * R, sizeof *ref), *sc = malloc(k * sizeof *sc);
        clnpu_buffer *bc8 = NULL;
        for (int pass = 0; pass < 2; pass++) {
            if (pass) { /* the fp8 cache */
                for (size_t i = 0; i < nc; i++)
                    if (i % row < R) cache[i] *= ldexpf(1.0f, (int)((i % row) / 8 % 5) - 2);
                size_t nb;
                void *enc = test_latent_cache_encode(CLNPU_DTYPE_FP8_E4M3, R, DR, 2 * mb * page, cache, &nb);
                bc8 = upload(enc, nb);
                free(enc);
                for (size_t i = 0; i < N * H * R; i++) ref[i] = 0;
            }
            for (size_t r = 0; r < N; r++)
                for (size_t h = 0; h < H; h++) {
                    double mx = -INFINITY, sum = 0;
                    for (int i = 0; i < cnt[r]; i++) {
                        const float *c = cache + row_of(bt, mb, page, seq[r], (size_t)idx[r * k + i]) * row;
                        double s = 0;
                        for (size_t d = 0; d < R; d++) s += (double)qa[(r * H + h) * R + d] * c[d];
                        for (size_t d = 0; d < DR; d++) s += (double)qp[16 + r * ld + h * dqk + d] * c[R + d];
                        sc[i] = s * 0.37;
                        if (sc[i] > mx) mx = sc[i];
                    }
                    for (int i = 0; i < cnt[r]; i++) sum += sc[i] = exp(sc[i] - mx);
                    for (int i = 0; i < cnt[r]; i++) {
                        const float *c = cache + row_of(bt, mb, page, seq[r], (size_t)idx[r * k + i]) * row;
                        for (size_t d = 0; d < R; d++) ref[(r * H + h) * R + d] += sc[i] / sum * c[d];
                    }
                }
            if (pass) {
                float *o = malloc(N * H * R * sizeof *o);
                clnpu_buffer *bqa = upload(qa, N * H * R * 4), *bqp = upload(qp, N * ld * 4), *bbt = upload(bt, 2 * mb * 4),
                             *bs = upload(seq, N * 4), *bi = upload(idx, N * k * 4), *bn = upload(cnt, N * 4),
                             *out = poisoned(N * H * R);
                for (int sp = 0; sp < 2; sp++) {
                    const float nan = NAN;
                    ck_assert_ok(clnpu_buffer_fill(out, &nan, sizeof nan));
                    clnpu_mla_sparse_args a = {bqa, bqp, 16, ld, dqk, bc8, page, bbt, mb, bs, bi, bn, k,
                                               N, H, R, DR, 0.37f, out, sp ? 3 : 1, CLNPU_DTYPE_FP8_E4M3};
                    ck_assert_ok(clnpu_mla_sparse(dev, &a));
                    ck_assert_ok(clnpu_buffer_read(out, 0, o, N * H * R * 4));
                    const double e = test_rel64(o, ref, N * H * R), tol = 2e-6 * sqrt((double)k) + 1e-6;
                    ck_assert_msg(e <= tol, "wg %u sparse MLA rows %zu H %zu R %zu k %zu splits %d fp8: rel error %.3g > %.3g",
                                  sizes[_i], N, H, R, k, sp ? 3 : 1, e, tol);
                }
                clnpu_buffer *bufs[] = {bqa, bqp, bc8, bbt, bs, bi, bn, out};
                for (size_t i = 0; i < 8; i++) clnpu_buffer_destroy(bufs[i]);
                free(o);
                continue;
            }
            clnpu_buffer *bqa = upload(qa, N * H * R * 4), *bqp = upload(qp, N * ld * 4), *bc = upload(cache, nc * 4),
                         *bc16 = upload(c16, nc * 2), *bbt = upload(bt, 2 * mb * 4), *bs = upload(seq, N * 4),
                         *bi = upload(idx, N * k * 4), *bn = upload(cnt, N * 4), *out = poisoned(N * H * R);
            float *o = malloc(N * H * R * sizeof *o);
            const unsigned splits[4] = {1, 3, 0, 0};
            for (int sp = 0; sp < (si % 2 ? 4 : 3); sp++) {
                const float nan = NAN;
                ck_assert_ok(clnpu_buffer_fill(out, &nan, sizeof nan));
                clnpu_mla_sparse_args a = {bqa, bqp, 16, ld, dqk, sp == 3 ? bc16 : bc, page, bbt, mb, bs, bi, bn, k,
                                           N, H, R, DR, 0.37f, out, splits[sp], sp == 3 ? CLNPU_DTYPE_BF16 : CLNPU_DTYPE_F32};
                ck_assert_ok(clnpu_mla_sparse(dev, &a));
                ck_assert_ok(clnpu_buffer_read(out, 0, o, N * H * R * 4));
                const double e = test_rel64(o, ref, N * H * R), tol = 2e-6 * sqrt((double)k) + 1e-6;
                ck_assert_msg(e <= tol, "wg %u sparse MLA rows %zu H %zu R %zu k %zu splits %u%s: rel error %.3g > %.3g",
                              sizes[_i], N, H, R, k, splits[sp], sp == 3 ? " bf16" : "", e, tol);
            }
            clnpu_buffer *bufs[] = {bqa, bqp, bc, bc16, bbt, bs, bi, bn, out};
            for (size_t i = 0; i < 9; i++) clnpu_buffer_destroy(bufs[i]);
            free(o);
        }
        free(qa), free(qp), free(cache), free(c16), free(idx), free(ref), free(sc), free(bt);
    }
}
END_TEST

/* The indexer's k_norm: rows shorter and longer than the work-group, at an offset and a stride. */
START_TEST(test_wg_layernorm)
{
    force(CLNPU_KERNEL_FAMILY_WG, sizes[_i]);
    const size_t ns[2] = {20, 300};
    for (int c = 0; c < 2; c++) {
        const size_t T = 7, n = ns[c], ld = n + 7;
        float *x = test_rand_array(T * ld, -2, 2), *w = test_rand_array(n, 0.5f, 1.5f), *b = test_rand_array(n, -0.5f, 0.5f);
        for (size_t i = 0; i < T * ld; i++) x[i] += 3.0f; /* a mean far from 0: the two-pass variance matters */
        clnpu_buffer *bx = upload(x, T * ld * 4), *bw = upload(w, n * 4), *bb = upload(b, n * 4);
        ck_assert_ok(clnpu_layernorm(test_device(), (clnpu_view){bx, 3, ld}, bw, bb, T, n, 1e-6f));
        float *o = malloc(T * ld * sizeof *o), *got = malloc(T * n * sizeof *got);
        double *ref = malloc(T * n * sizeof *ref);
        ck_assert_ok(clnpu_buffer_read(bx, 0, o, T * ld * 4));
        for (size_t t = 0; t < T; t++) {
            const float *xr = x + 3 + t * ld;
            double mean = 0, var = 0;
            for (size_t i = 0; i < n; i++) mean += xr[i];
            mean /= (double)n;
            for (size_t i = 0; i < n; i++) var += (xr[i] - mean) * (xr[i] - mean);
            var /= (double)n;
            for (size_t i = 0; i < n; i++) ref[t * n + i] = (xr[i] - mean) / sqrt(var + 1e-6) * w[i] + b[i], got[t * n + i] = o[3 + t * ld + i];
        }
        ck_assert_msg(o[0] == x[0] && o[2] == x[2], "layernorm wrote before its rows");
        const double e = test_rel64(got, ref, T * n);
        ck_assert_msg(e <= 1e-6, "wg %u layernorm n %zu: rel error %.3g", sizes[_i], n, e);
        clnpu_buffer_destroy(bx), clnpu_buffer_destroy(bw), clnpu_buffer_destroy(bb);
        free(x), free(w), free(b), free(o), free(got), free(ref);
    }
}
END_TEST

/* tiny-dsv32 (index_topk 10 of 40) and tiny-axk2 (12 of 48) with every operator in the wg family:
 * logits against transformers by one prefill and by prefill of 1 + token-by-token decode (the
 * fixtures' index margins are >= 3e-4, so the selections must be transformers'). */
START_TEST(test_wg_dsa_models)
{
    const char *dirs[2] = {CLNPU_SOURCE_DIR "/models/tiny-dsv32", CLNPU_SOURCE_DIR "/models/tiny-axk2"};
    force(CLNPU_KERNEL_FAMILY_WG, 256); /* test_wg_model_transformers' size: its programs are reused */
    test_fixture f;
    test_fixture_open(&f, dirs[_i]);
    ck_assert_uint_lt(f.cfg.index_topk, f.T);
    char label[128];
    snprintf(label, sizeof label, "%s, wg family (%u)", dirs[_i] + strlen(CLNPU_SOURCE_DIR) + 1,
             clnpu_device_capability(test_device())->wg_size);
    test_fixture_logits(&f, label, 64, 1e-4);
    test_fixture_close(&f);
}
END_TEST

/* One tcase per group, so each runs alone (CK_RUN_CASE=wg_dsa_kernels; tools/oclgrind_wg.sh). */
Suite *suite_wg_dsa(void)
{
    Suite *s = suite_create("wg_dsa");
    TCase *tc = tcase_create("wg_dsa_kernels");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_wg_dsa_scores, 0, 3);
    tcase_add_loop_test(tc, test_wg_dsa_topk, 0, 3);
    tcase_add_loop_test(tc, test_wg_mla_sparse, 0, 3);
    tcase_add_loop_test(tc, test_wg_layernorm, 0, 3);
    tcase_add_test(tc, test_wg_dsa_budget);
    suite_add_tcase(s, tc);
    tc = tcase_create("wg_dsa_models");
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, test_wg_dsa_models, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}
