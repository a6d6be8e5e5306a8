/* GEMM / GEMV / grouped GEMM against a float64 host reference, for every weight dtype, on fresh
 * random inputs of ragged sizes, with outputs poisoned with NaN before every run.
 *
 * Tolerance: outputs accumulate K products in f32, so ||Y - ref|| / ||ref|| grows like
 * u * sqrt(K) with u = 2^-24 (random rounding errors; measured about 0.3 u sqrt(K), 1.2e-6 at
 * K = 4096); we allow u sqrt(K) + 4u (3.8e-6 at K = 4096, "far under 1e-5"). Widening bf16 / f16 / fp8 to f32 is exact and int8 * scale is
 * rounded once, so every dtype is held to the same bound against its *dequantised* reference. */
#include <CL/cl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"
#include "../runtime/gemm_internal.h"

typedef struct host_weight {
    clnpu_weight_desc d;
    void *data;
    float *scales;
    float *deq; /* dequantised f32 [n][k]: what the kernel must reproduce */
} host_weight;

static void make_weight(host_weight *h, clnpu_dtype t, size_t n, size_t k, size_t group_k)
{
    memset(h, 0, sizeof *h);
    float *w = malloc(n * k * sizeof *w);
    for (size_t i = 0; i < n * k; i++) w[i] = test_rand_normal() * 0.5f;
    /* Some tiny values, so fp8 subnormal codes and int8 zeros are exercised too. */
    for (size_t i = 0; i < n * k; i += 7) w[i] *= 1e-5f;
    h->d.dtype = t;
    h->d.n = n;
    h->d.k = k;
    switch (t) {
    case CLNPU_DTYPE_F32: h->data = w; w = NULL; break;
    case CLNPU_DTYPE_BF16:
    case CLNPU_DTYPE_F16: {
        uint16_t *b = malloc(n * k * 2);
        for (size_t i = 0; i < n * k; i++)
            b[i] = t == CLNPU_DTYPE_BF16 ? clnpu_f32_to_bf16(w[i]) : clnpu_f32_to_f16(w[i]);
        h->data = b;
        break;
    }
    case CLNPU_DTYPE_I8: {
        size_t ng = group_k ? (k + group_k - 1) / group_k : 1;
        h->data = malloc(n * k);
        h->scales = malloc(n * ng * sizeof(float));
        ck_assert_ok(clnpu_quantize_i8(w, n, k, group_k, h->data, h->scales));
        h->d.group_k = group_k;
        break;
    }
    case CLNPU_DTYPE_FP8_E4M3: {
        size_t nb = (n + 127) / 128, kb = (k + 127) / 128;
        h->data = malloc(n * k);
        h->scales = malloc(nb * kb * sizeof(float));
        ck_assert_ok(clnpu_quantize_fp8(w, n, k, h->data, h->scales));
        break;
    }
    default: ck_abort_msg("bad dtype");
    }
    free(w);
    h->d.data = h->data;
    h->d.scales = h->scales;
    h->deq = malloc(n * k * sizeof(float));
    ck_assert_ok(clnpu_weight_desc_to_f32(&h->d, h->deq));
}

static void free_weight(host_weight *h)
{
    free(h->data);
    free(h->scales);
    free(h->deq);
}

static clnpu_buffer *upload_f32(const float *v, size_t n)
{
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(test_device(), n * sizeof(float), &b));
    ck_assert_ok(clnpu_buffer_write(b, 0, v, n * sizeof(float)));
    return b;
}

static clnpu_buffer *upload_i32(const int *v, size_t n)
{
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(test_device(), n * sizeof(int), &b));
    ck_assert_ok(clnpu_buffer_write(b, 0, v, n * sizeof(int)));
    return b;
}

static void poison(clnpu_buffer *b)
{
    float nan = NAN;
    ck_assert_ok(clnpu_buffer_fill(b, &nan, sizeof nan));
}

static float *random_vec(size_t n)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = test_rand_uniform(-1, 1);
    return v;
}

static double tolerance(size_t k)
{
    const double u = 0x1p-24;
    return u * sqrt((double)k) + 4 * u;
}

/* ||out - ref|| / ||ref|| over rows x n (row stride ld), failing on any NaN. */
static double rel_error(const float *out, const double *ref, size_t rows, size_t n, size_t ld)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < n; j++) {
            double o = out[i * ld + j], r = ref[i * n + j];
            ck_assert_msg(!isnan(o), "NaN at [%zu, %zu] (output not fully written?)", i, j);
            num += (o - r) * (o - r);
            den += r * r;
        }
    return sqrt(num / (den > 0 ? den : 1));
}

/* ref[m][n] = alpha * sum_k x[m][k] w[n][k] (+ resid) in float64 */
static double *reference(const float *x, const float *w, size_t m, size_t n, size_t k, float alpha,
                         const float *resid)
{
    double *ref = malloc(m * n * sizeof *ref);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            const float *xr = x + i * k, *wr = w + j * k;
            for (size_t kk = 0; kk < k; kk++) s += (double)xr[kk] * wr[kk];
            ref[i * n + j] = alpha * s + (resid ? resid[i * n + j] : 0.0);
        }
    return ref;
}

static const size_t shapes[][3] = {
    /* M, N, K: every M the issue names; N and K never tile multiples (except one long K) */
    {1, 4093, 4096}, {3, 1000, 777}, {8, 2049, 1537}, {17, 333, 1000}, {128, 517, 300},
    {333, 257, 1029}, {1, 17, 5}, {5, 1, 3},
};

static void run_case(clnpu_dtype t, size_t m, size_t n, size_t k, size_t group_k)
{
    clnpu_device *dev = test_device();
    host_weight h;
    make_weight(&h, t, n, k, group_k);
    clnpu_weight *w;
    ck_assert_ok(clnpu_weight_upload(dev, &h.d, 1, &w));
    float *x = random_vec(m * k);
    clnpu_buffer *bx = upload_f32(x, m * k), *by;
    ck_assert_ok(clnpu_buffer_create(dev, m * n * sizeof(float), &by));
    poison(by);
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = bx;
    a.y = by;
    a.m = m;
    ck_assert_ok(clnpu_gemm(dev, w, 0, &a));
    float *out = malloc(m * n * sizeof *out);
    ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * sizeof(float)));
    double *ref = reference(x, h.deq, m, n, k, 1.0f, NULL);
    double err = rel_error(out, ref, m, n, n);
    if (getenv("CLNPU_TEST_VERBOSE"))
        fprintf(stderr, "gemm %-5s M=%-4zu N=%-5zu K=%-5zu group=%-3zu rel error %.2e (tol %.2e)\n",
                clnpu_dtype_name(t), m, n, k, group_k, err, tolerance(k));
    ck_assert_msg(err <= tolerance(k), "%s M=%zu N=%zu K=%zu group=%zu: rel error %.3g > %.3g",
                  clnpu_dtype_name(t), m, n, k, group_k, err, tolerance(k));
    free(out);
    free(ref);
    free(x);
    clnpu_buffer_destroy(bx);
    clnpu_buffer_destroy(by);
    clnpu_weight_destroy(w);
    free_weight(&h);
}

START_TEST(test_gemm_dtypes)
{
    const clnpu_dtype t = (clnpu_dtype)_i;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        size_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        if (t == CLNPU_DTYPE_I8) {
            run_case(t, m, n, k, 0);   /* per output channel */
            run_case(t, m, n, k, 128); /* per group of 128 along K */
        } else {
            run_case(t, m, n, k, 0);
        }
    }
}
END_TEST

START_TEST(test_quant_roundtrip)
{
    /* Exhaustive code round trips: decode then encode gives the code back. */
    for (int c = 0; c < 256; c++) {
        float f = clnpu_fp8e4m3_to_f32((uint8_t)c);
        if ((c & 0x7f) == 0x7f) {
            ck_assert(isnan(f));
            continue;
        }
        uint8_t back = clnpu_f32_to_fp8e4m3(f);
        ck_assert_msg(back == c || (c == 0x80 && back == 0x80), "fp8 code 0x%02x -> %g -> 0x%02x", c, f, back);
    }
    ck_assert(clnpu_fp8e4m3_to_f32(0x7e) == 448.0f);
    ck_assert(clnpu_fp8e4m3_to_f32(0x01) == 0x1p-9f);
    ck_assert_uint_eq(clnpu_f32_to_fp8e4m3(1000.0f), 0x7e); /* saturates */
    for (uint32_t c = 0; c < 65536; c++) {
        float f = clnpu_f16_to_f32((uint16_t)c);
        if (isnan(f)) continue;
        ck_assert_uint_eq(clnpu_f32_to_f16(f), c);
        ck_assert_uint_eq(clnpu_f32_to_bf16(clnpu_bf16_to_f32((uint16_t)c)), c);
    }
    ck_assert_uint_eq(clnpu_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);           /* tie -> even */
    ck_assert_uint_eq(clnpu_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81); /* above tie */

    /* Quantising random matrices: int8 within half a step; fp8 within half a mantissa step
     * (2^-4 relative) for normals, 2^-10 * scale absolute for subnormals. */
    const size_t n = 131, k = 300;
    float *w = malloc(n * k * sizeof *w), *deq = malloc(n * k * sizeof *deq);
    for (size_t i = 0; i < n * k; i++) w[i] = test_rand_normal() * (i % 7 == 0 ? 10.0f : 0.1f);
    for (int grouped = 0; grouped < 2; grouped++) {
        size_t g = grouped ? 128 : 0, ng = grouped ? 3 : 1;
        int8_t *q = malloc(n * k);
        float *s = malloc(n * ng * sizeof *s);
        ck_assert_ok(clnpu_quantize_i8(w, n, k, g, q, s));
        clnpu_weight_desc d = {CLNPU_DTYPE_I8, n, k, q, s, g};
        ck_assert_ok(clnpu_weight_desc_to_f32(&d, deq));
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < k; j++) {
                float sc = s[i * ng + (g ? j / g : 0)];
                ck_assert_msg(fabsf(deq[i * k + j] - w[i * k + j]) <= 0.5f * sc * 1.0001f,
                              "int8 [%zu,%zu]: %g vs %g", i, j, deq[i * k + j], w[i * k + j]);
            }
        free(q);
        free(s);
    }
    uint8_t *q8 = malloc(n * k);
    float *s8 = malloc(2 * 3 * sizeof *s8);
    ck_assert_ok(clnpu_quantize_fp8(w, n, k, q8, s8));
    clnpu_weight_desc d = {CLNPU_DTYPE_FP8_E4M3, n, k, q8, s8, 0};
    ck_assert_ok(clnpu_weight_desc_to_f32(&d, deq));
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < k; j++) {
            float sc = s8[(i / 128) * 3 + j / 128], v = w[i * k + j];
            float bound = fmaxf(fabsf(v) * 0x1p-4f, sc * 0x1p-10f) * 1.0001f;
            ck_assert_msg(fabsf(deq[i * k + j] - v) <= bound, "fp8 [%zu,%zu]: %g vs %g", i, j,
                          deq[i * k + j], v);
        }
    free(q8);
    free(s8);
    free(w);
    free(deq);
}
END_TEST

/* Widening in the kernel is exact: every fp8 code and every finite f16 code, times 1.0. */
START_TEST(test_gemm_exact_widening)
{
    clnpu_device *dev = test_device();
    for (int fp8 = 0; fp8 < 2; fp8++) {
        size_t n = 0;
        uint8_t codes8[256];
        uint16_t *codes16 = malloc(65536 * sizeof *codes16);
        for (int c = 0; c < (fp8 ? 256 : 65536); c++) {
            if (fp8 && (c & 0x7f) == 0x7f) continue;
            if (!fp8 && ((c >> 10) & 0x1f) == 0x1f) continue; /* inf / NaN */
            if (fp8) codes8[n++] = (uint8_t)c;
            else codes16[n++] = (uint16_t)c;
        }
        float *scales = malloc(((n + 127) / 128) * sizeof *scales);
        for (size_t i = 0; i < (n + 127) / 128; i++) scales[i] = 1.0f;
        clnpu_weight_desc d = {fp8 ? CLNPU_DTYPE_FP8_E4M3 : CLNPU_DTYPE_F16, n, 1,
                               fp8 ? (const void *)codes8 : (const void *)codes16, fp8 ? scales : NULL, 0};
        clnpu_weight *w;
        ck_assert_ok(clnpu_weight_upload(dev, &d, 1, &w));
        float one = 1.0f, *out = malloc(n * sizeof *out);
        clnpu_buffer *bx = upload_f32(&one, 1), *by;
        ck_assert_ok(clnpu_buffer_create(dev, n * sizeof(float), &by));
        poison(by);
        clnpu_gemm_args a = clnpu_gemm_args_default();
        a.x = bx, a.y = by, a.m = 1;
        ck_assert_ok(clnpu_gemm(dev, w, 0, &a));
        ck_assert_ok(clnpu_buffer_read(by, 0, out, n * sizeof(float)));
        for (size_t i = 0; i < n; i++) {
            float want = fp8 ? clnpu_fp8e4m3_to_f32(codes8[i]) : clnpu_f16_to_f32(codes16[i]);
            ck_assert_msg(out[i] == want, "%s code 0x%x: kernel %a, host %a", fp8 ? "fp8" : "f16",
                          fp8 ? codes8[i] : codes16[i], out[i], want);
        }
        free(out);
        free(scales);
        free(codes16);
        clnpu_buffer_destroy(bx);
        clnpu_buffer_destroy(by);
        clnpu_weight_destroy(w);
    }
}
END_TEST

/* alpha, residual (separate and in place) and the fused SwiGLU epilogue. */
START_TEST(test_gemm_epilogues)
{
    clnpu_device *dev = test_device();
    const size_t ms[] = {1, 7, 40};
    for (size_t mi = 0; mi < 3; mi++) {
        const size_t m = ms[mi], n = 203, k = 611;
        host_weight h;
        make_weight(&h, CLNPU_DTYPE_BF16, n, k, 0);
        clnpu_weight *w;
        ck_assert_ok(clnpu_weight_upload(dev, &h.d, 1, &w));
        float *x = random_vec(m * k), *res = random_vec(m * n), *out = malloc(m * n * sizeof *out);
        clnpu_buffer *bx = upload_f32(x, m * k), *br = upload_f32(res, m * n), *by;
        ck_assert_ok(clnpu_buffer_create(dev, m * n * sizeof(float), &by));
        clnpu_gemm_args a = clnpu_gemm_args_default();
        a.x = bx, a.y = by, a.m = m, a.alpha = 0.375f, a.epilogue = CLNPU_EPILOGUE_RESIDUAL;
        a.residual = br;
        poison(by);
        ck_assert_ok(clnpu_gemm(dev, w, 0, &a));
        ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * sizeof(float)));
        double *ref = reference(x, h.deq, m, n, k, 0.375f, res);
        double err = rel_error(out, ref, m, n, n);
        ck_assert_msg(err <= tolerance(k), "residual M=%zu: %.3g", m, err);
        /* In place: Y = X.W^T + Y. */
        a.residual = br, a.y = br;
        ck_assert_ok(clnpu_gemm(dev, w, 0, &a));
        ck_assert_ok(clnpu_buffer_read(br, 0, out, m * n * sizeof(float)));
        err = rel_error(out, ref, m, n, n);
        ck_assert_msg(err <= tolerance(k), "in-place residual M=%zu: %.3g", m, err);
        free(ref);

        /* SwiGLU: gate and up, silu(g) * u written once. */
        host_weight hu;
        make_weight(&hu, CLNPU_DTYPE_BF16, n, k, 0);
        clnpu_weight *gu;
        ck_assert_ok(clnpu_weight_upload_swiglu(dev, &h.d, &hu.d, 1, &gu));
        a = clnpu_gemm_args_default();
        a.x = bx, a.y = by, a.m = m, a.epilogue = CLNPU_EPILOGUE_SWIGLU;
        poison(by);
        ck_assert_ok(clnpu_gemm(dev, gu, 0, &a));
        ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * sizeof(float)));
        double *g = reference(x, h.deq, m, n, k, 1, NULL), *u = reference(x, hu.deq, m, n, k, 1, NULL);
        for (size_t i = 0; i < m * n; i++) g[i] = g[i] / (1 + exp(-g[i])) * u[i];
        err = rel_error(out, g, m, n, n);
        ck_assert_msg(err <= 2 * tolerance(k), "swiglu M=%zu: %.3g", m, err);
        /* Wrong epilogue for the weight is refused. */
        a.epilogue = CLNPU_EPILOGUE_NONE;
        ck_assert_int_eq(clnpu_gemm(dev, gu, 0, &a), CLNPU_ERR_INVALID_ARGUMENT);
        free(g);
        free(u);
        clnpu_weight_destroy(gu);
        free_weight(&hu);
        free(x);
        free(res);
        free(out);
        clnpu_buffer_destroy(bx);
        clnpu_buffer_destroy(br);
        clnpu_buffer_destroy(by);
        clnpu_weight_destroy(w);
        free_weight(&h);
    }
}
END_TEST

/* MoE-style grouped GEMM: uneven segments, empty and single-row ones, SwiGLU and plain. */
START_TEST(test_gemm_grouped)
{
    clnpu_device *dev = test_device();
    const clnpu_dtype types[] = {CLNPU_DTYPE_BF16, CLNPU_DTYPE_FP8_E4M3, CLNPU_DTYPE_I8};
    for (int ti = 0; ti < 3; ti++) {
        const size_t E = 6, n = 150, k = 260;
        const size_t rows[] = {0, 1, 9, 0, 14, 3}; /* per segment */
        const size_t order[] = {2, 0, 5, 1, 4, 3}; /* segment i uses matrix order[i] */
        size_t m = 0;
        clnpu_gemm_segment segs[6];
        for (size_t i = 0; i < E; i++) {
            segs[i] = (clnpu_gemm_segment){order[i], m, rows[i]};
            m += rows[i];
        }
        host_weight hg[6], hu[6];
        clnpu_weight_desc dg[6], du[6];
        for (size_t e = 0; e < E; e++) {
            make_weight(&hg[e], types[ti], n, k, types[ti] == CLNPU_DTYPE_I8 ? 128 : 0);
            make_weight(&hu[e], types[ti], n, k, types[ti] == CLNPU_DTYPE_I8 ? 128 : 0);
            dg[e] = hg[e].d;
            du[e] = hu[e].d;
        }
        clnpu_weight *wp, *ws;
        ck_assert_ok(clnpu_weight_upload(dev, dg, E, &wp));
        ck_assert_ok(clnpu_weight_upload_swiglu(dev, dg, du, E, &ws));
        float *x = random_vec(m * k), *out = malloc(m * n * sizeof *out);
        clnpu_buffer *bx = upload_f32(x, m * k), *by;
        ck_assert_ok(clnpu_buffer_create(dev, m * n * sizeof(float), &by));
        for (int swiglu = 0; swiglu < 2; swiglu++) {
            clnpu_gemm_args a = clnpu_gemm_args_default();
            a.x = bx, a.y = by, a.m = m;
            a.epilogue = swiglu ? CLNPU_EPILOGUE_SWIGLU : CLNPU_EPILOGUE_NONE;
            poison(by);
            ck_assert_ok(clnpu_gemm_grouped(dev, swiglu ? ws : wp, segs, E, &a));
            ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * sizeof(float)));
            double *ref = malloc(m * n * sizeof *ref);
            for (size_t i = 0; i < E; i++) {
                if (!segs[i].rows) continue;
                size_t e = segs[i].matrix, r0 = segs[i].row;
                double *g = reference(x + r0 * k, hg[e].deq, segs[i].rows, n, k, 1, NULL);
                double *u = reference(x + r0 * k, hu[e].deq, segs[i].rows, n, k, 1, NULL);
                for (size_t j = 0; j < segs[i].rows * n; j++)
                    ref[r0 * n + j] = swiglu ? g[j] / (1 + exp(-g[j])) * u[j] : g[j];
                free(g);
                free(u);
            }
            double err = rel_error(out, ref, m, n, n);
            ck_assert_msg(err <= 2 * tolerance(k), "grouped %s swiglu=%d: %.3g",
                          clnpu_dtype_name(types[ti]), swiglu, err);
            free(ref);
        }
        /* The same segments with counts and offsets on the device, in matrix order (what the
         * MoE routing plan writes), for both tile heights; a segment past m is not written. */
        int cnt[6], off[6];
        size_t at = 0;
        for (size_t e = 0; e < E; e++) {
            size_t r = 0;
            for (size_t i = 0; i < E; i++)
                if (segs[i].matrix == e) r = segs[i].rows;
            cnt[e] = (int)r, off[e] = (int)at, at += r;
        }
        clnpu_buffer *bc = upload_i32(cnt, E), *bo = upload_i32(off, E);
        for (int swiglu = 0; swiglu < 2; swiglu++)
            for (size_t maxr = 1; maxr <= 14; maxr += 13) {
                clnpu_gemm_args a = clnpu_gemm_args_default();
                a.x = bx, a.y = by, a.m = m;
                a.epilogue = swiglu ? CLNPU_EPILOGUE_SWIGLU : CLNPU_EPILOGUE_NONE;
                poison(by);
                ck_assert_ok(clnpu_gemm_grouped_counts(dev, swiglu ? ws : wp, bc, bo, maxr, &a));
                ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * sizeof(float)));
                double *ref = malloc(m * n * sizeof *ref);
                for (size_t e = 0; e < E; e++) {
                    if (!cnt[e]) continue;
                    const size_t r0 = (size_t)off[e], nr = (size_t)cnt[e];
                    double *g = reference(x + r0 * k, hg[e].deq, nr, n, k, 1, NULL);
                    double *u = reference(x + r0 * k, hu[e].deq, nr, n, k, 1, NULL);
                    for (size_t j = 0; j < nr * n; j++)
                        ref[r0 * n + j] = swiglu ? g[j] / (1 + exp(-g[j])) * u[j] : g[j];
                    free(g);
                    free(u);
                }
                double err = rel_error(out, ref, m, n, n);
                ck_assert_msg(err <= 2 * tolerance(k), "grouped counts %s swiglu=%d max_rows=%zu: %.3g",
                              clnpu_dtype_name(types[ti]), swiglu, maxr, err);
                free(ref);
            }
        /* An inconsistent plan (the last segment runs past m) leaves those rows alone. */
        cnt[E - 1] += 5;
        ck_assert_ok(clnpu_buffer_write(bc, 0, cnt, sizeof cnt));
        {
            clnpu_gemm_args a = clnpu_gemm_args_default();
            a.x = bx, a.y = by, a.m = m;
            poison(by);
            ck_assert_ok(clnpu_gemm_grouped_counts(dev, wp, bc, bo, 0, &a));
            ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * sizeof(float)));
            const size_t r0 = (size_t)off[E - 1];
            for (size_t j = r0 * n; j < m * n; j++) ck_assert_msg(isnan(out[j]), "row %zu written", j / n);
            for (size_t j = 0; j < r0 * n; j++) ck_assert(!isnan(out[j]));
        }
        clnpu_buffer_destroy(bc);
        clnpu_buffer_destroy(bo);
        /* A segment outside X is refused; an all-empty call is a no-op. */
        clnpu_gemm_segment bad = {0, m - 1, 2};
        clnpu_gemm_args a = clnpu_gemm_args_default();
        a.x = bx, a.y = by, a.m = m;
        ck_assert_int_eq(clnpu_gemm_grouped(dev, wp, &bad, 1, &a), CLNPU_ERR_INVALID_ARGUMENT);
        clnpu_gemm_segment none = {1, 0, 0};
        ck_assert_ok(clnpu_gemm_grouped(dev, wp, &none, 1, &a));
        free(x);
        free(out);
        clnpu_buffer_destroy(bx);
        clnpu_buffer_destroy(by);
        clnpu_weight_destroy(wp);
        clnpu_weight_destroy(ws);
        for (size_t e = 0; e < E; e++) {
            free_weight(&hg[e]);
            free_weight(&hu[e]);
        }
    }
}
END_TEST

/* Two output panels per work-item (tunable nb = 2), forced through a tuning entry for every class:
 * each weight dtype, an odd and an even number of panels, with and without a residual. */
START_TEST(test_gemm_two_panels)
{
    clnpu_device *dev = test_device();
    const clnpu_tuning_db *prev = clnpu_device_get_tuning(dev);
    clnpu_tuning_db *db;
    ck_assert_ok(clnpu_tuning_db_create(&db));
    const clnpu_dtype types[] = {CLNPU_DTYPE_F32, CLNPU_DTYPE_BF16, CLNPU_DTYPE_F16, CLNPU_DTYPE_I8,
                                 CLNPU_DTYPE_I8, CLNPU_DTYPE_FP8_E4M3};
    const char *classes[] = {"gemv", "decode", "prefill"};
    for (int ti = 0; ti < 5; ti++) /* types[3] and [4] share the int8 entry */
        for (int c = 0; c < 3; c++) {
            clnpu_tuning_entry e;
            memset(&e, 0, sizeof e);
            clnpu_tuning_entry_set_device(&e, dev);
            snprintf(e.kernel, sizeof e.kernel, "gemm");
            snprintf(e.dtype, sizeof e.dtype, "%s", clnpu_dtype_name(types[ti == 4 ? 5 : ti]));
            snprintf(e.shape_class, sizeof e.shape_class, "%s", classes[c]);
            clnpu_tuning_source_hash("gemm.cl", e.source_hash);
            snprintf(e.names[0], sizeof e.names[0], "nb"), e.values[0] = 2;
            snprintf(e.names[1], sizeof e.names[1], "mr"), e.values[1] = c == 2 ? 5 : 3;
            e.nparams = 2;
            ck_assert_ok(clnpu_tuning_db_put(db, &e));
        }
    clnpu_device_set_tuning(dev, db);
    const size_t dims[][3] = {{1, 45, 300}, {5, 150, 257}, {17, 200, 130}}; /* 3, 10, 13 panels */
    for (int ti = 0; ti < 6; ti++)
        for (int si = 0; si < 3; si++)
            for (int resid = 0; resid < 2; resid++) {
                const size_t m = dims[si][0], n = dims[si][1], k = dims[si][2];
                host_weight h;
                make_weight(&h, types[ti], n, k, ti == 4 ? 128 : 0);
                clnpu_weight *w;
                ck_assert_ok(clnpu_weight_upload(dev, &h.d, 1, &w));
                float *x = random_vec(m * k), *r = random_vec(m * n), *out = malloc(m * n * sizeof *out);
                clnpu_buffer *bx = upload_f32(x, m * k), *br = upload_f32(r, m * n), *by;
                ck_assert_ok(clnpu_buffer_create(dev, m * n * sizeof(float), &by));
                poison(by);
                clnpu_gemm_args a = clnpu_gemm_args_default();
                a.x = bx, a.y = by, a.m = m, a.alpha = 0.75f, a.split_k = 1;
                if (resid) a.residual = br, a.epilogue = CLNPU_EPILOGUE_RESIDUAL;
                ck_assert_ok(clnpu_gemm(dev, w, 0, &a));
                ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * sizeof(float)));
                double *ref = reference(x, h.deq, m, n, k, 0.75f, resid ? r : NULL);
                double err = rel_error(out, ref, m, n, n);
                ck_assert_msg(err <= 2 * tolerance(k), "two panels %s%s %zux%zux%zu resid=%d: %.3g",
                              clnpu_dtype_name(types[ti]), ti == 4 ? " (groups)" : "", m, n, k, resid, err);
                free(ref), free(x), free(r), free(out);
                clnpu_buffer_destroy(bx), clnpu_buffer_destroy(br), clnpu_buffer_destroy(by);
                clnpu_weight_destroy(w);
                free_weight(&h);
            }
    clnpu_device_set_tuning(dev, prev);
    clnpu_tuning_db_destroy(db);
}
END_TEST

/* Cache blocking (MB row blocks per work-item, K in blocks of KC), forced through CLNPU_GEMM for
 * every weight dtype and epilogue and the grouped kernels: M = 23 is 3 ragged tiles of 3 x 3 rows,
 * K = 389 four K blocks of 128 (the last 5 long), N = 45 three panels (odd for NB = 2). */
START_TEST(test_gemm_blocked)
{
    clnpu_device *dev = test_device();
    const clnpu_dtype types[] = {CLNPU_DTYPE_F32, CLNPU_DTYPE_BF16, CLNPU_DTYPE_F16, CLNPU_DTYPE_I8,
                                 CLNPU_DTYPE_I8, CLNPU_DTYPE_FP8_E4M3};
    const size_t m = 23, n = 45, k = 389;
    for (int ti = 0; ti < 6; ti++) {
        host_weight h, hu;
        make_weight(&h, types[ti], n, k, ti == 4 ? 128 : 0);
        make_weight(&hu, types[ti], n, k, ti == 4 ? 128 : 0);
        clnpu_weight *w, *gu;
        ck_assert_ok(clnpu_weight_upload(dev, &h.d, 1, &w));
        ck_assert_ok(clnpu_weight_upload_swiglu(dev, &h.d, &hu.d, 1, &gu));
        float *x = random_vec(m * k), *r = random_vec(m * n), *out = malloc(m * n * sizeof *out);
        clnpu_buffer *bx = upload_f32(x, m * k), *br = upload_f32(r, m * n), *by;
        ck_assert_ok(clnpu_buffer_create(dev, m * n * sizeof(float), &by));
        double *g = reference(x, h.deq, m, n, k, 1, NULL), *u = reference(x, hu.deq, m, n, k, 1, NULL);
        double *res = reference(x, h.deq, m, n, k, 0.5f, r), *sw = malloc(m * n * sizeof *sw);
        for (size_t i = 0; i < m * n; i++) sw[i] = g[i] / (1 + exp(-g[i])) * u[i];
        /* plain (one panel, separate K stretches), two panels + residual, SwiGLU, grouped; then
         * a K block longer than K (one block: 8/16-bit weights widen a slice of KC rows) */
        const char *cfgs[2] = {ti % 2 ? "mr=3,mb=3,kc=128,kacc=2,ksplit=1" : "mr=3,mb=3,kc=128,nb=2",
                               ti % 2 ? "mr=4,mb=2,kc=512" : "mr=4,mb=2,kc=512,nb=2"};
        for (int it = 0; it < 8; it++) {
            const char *cfg = cfgs[it / 4];
            const int ep = it % 4;
            setenv("CLNPU_GEMM", cfg, 1);
            clnpu_gemm_args a = clnpu_gemm_args_default();
            a.x = bx, a.y = by, a.m = m, a.split_k = 1;
            if (ep == 1) a.alpha = 0.5f, a.residual = br, a.epilogue = CLNPU_EPILOGUE_RESIDUAL;
            if (ep == 2) a.epilogue = CLNPU_EPILOGUE_SWIGLU;
            poison(by);
            if (ep < 3) {
                ck_assert_ok(clnpu_gemm(dev, ep == 2 ? gu : w, 0, &a));
            } else { /* rows 0-6 and 7-22 as two segments of the same matrix */
                const clnpu_gemm_segment segs[2] = {{0, 0, 7}, {0, 7, 16}};
                ck_assert_ok(clnpu_gemm_grouped(dev, w, segs, 2, &a));
            }
            ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * sizeof(float)));
            const double *ref = ep == 1 ? res : ep == 2 ? sw : g;
            double err = rel_error(out, ref, m, n, n);
            ck_assert_msg(err <= 2 * tolerance(k), "blocked %s%s %s epilogue %d: %.3g", clnpu_dtype_name(types[ti]),
                          ti == 4 ? " (groups)" : "", cfg, ep, err);
        }
        unsetenv("CLNPU_GEMM");
        free(g), free(u), free(res), free(sw), free(x), free(r), free(out);
        clnpu_buffer_destroy(bx), clnpu_buffer_destroy(br), clnpu_buffer_destroy(by);
        clnpu_weight_destroy(w), clnpu_weight_destroy(gu);
        free_weight(&h), free_weight(&hu);
    }
}
END_TEST

/* Split-K with a workspace, with and without a residual, on a long ragged K. */
START_TEST(test_gemm_splitk)
{
    clnpu_device *dev = test_device();
    const size_t m = 2, n = 77, k = 3001;
    const clnpu_dtype types[] = {CLNPU_DTYPE_F32, CLNPU_DTYPE_FP8_E4M3, CLNPU_DTYPE_I8};
    for (int ti = 0; ti < 3; ti++) {
        host_weight h;
        make_weight(&h, types[ti], n, k, types[ti] == CLNPU_DTYPE_I8 ? 128 : 0);
        clnpu_weight *w;
        ck_assert_ok(clnpu_weight_upload(dev, &h.d, 1, &w));
        float *x = random_vec(m * k), *res = random_vec(m * n), *out = malloc(m * n * sizeof *out);
        clnpu_buffer *bx = upload_f32(x, m * k), *br = upload_f32(res, m * n), *by, *ws;
        ck_assert_ok(clnpu_buffer_create(dev, m * n * sizeof(float), &by));
        ck_assert_ok(clnpu_buffer_create(dev, 8 * m * n * sizeof(float), &ws));
        for (int withres = 0; withres < 2; withres++) {
            clnpu_gemm_args a = clnpu_gemm_args_default();
            a.x = bx, a.y = by, a.m = m, a.workspace = ws, a.split_k = 5;
            if (withres) a.epilogue = CLNPU_EPILOGUE_RESIDUAL, a.residual = br;
            poison(by);
            poison(ws);
            ck_assert_ok(clnpu_gemm(dev, w, 0, &a));
            ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * sizeof(float)));
            double *ref = reference(x, h.deq, m, n, k, 1, withres ? res : NULL);
            double err = rel_error(out, ref, m, n, n);
            ck_assert_msg(err <= tolerance(k), "split-K %s residual=%d: %.3g",
                          clnpu_dtype_name(types[ti]), withres, err);
            free(ref);
        }
        free(x);
        free(res);
        free(out);
        clnpu_buffer_destroy(bx);
        clnpu_buffer_destroy(br);
        clnpu_buffer_destroy(by);
        clnpu_buffer_destroy(ws);
        clnpu_weight_destroy(w);
        free_weight(&h);
    }
}
END_TEST

START_TEST(test_gemm_bad_input)
{
    clnpu_device *dev = test_device();
    int8_t q[12] = {1, 2, 3};
    clnpu_weight_desc d = {CLNPU_DTYPE_I8, 3, 4, q, NULL, 0};
    clnpu_weight *w = NULL;
    ck_assert_int_eq(clnpu_weight_upload(dev, &d, 1, &w), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "scales"));
    float f[12] = {1}, f2[20] = {1};
    clnpu_weight_desc two[2] = {{CLNPU_DTYPE_F32, 3, 4, f, NULL, 0}, {CLNPU_DTYPE_F32, 5, 4, f2, NULL, 0}};
    ck_assert_int_eq(clnpu_weight_upload(dev, two, 2, &w), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "matrix 1"));
    ck_assert_ok(clnpu_weight_upload(dev, two, 1, &w));
    clnpu_buffer *small;
    ck_assert_ok(clnpu_buffer_create(dev, 8, &small));
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = small, a.y = small, a.m = 2;
    ck_assert_int_eq(clnpu_gemm(dev, w, 0, &a), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "X needs"));
    ck_assert_int_eq(clnpu_gemm(dev, w, 1, &a), CLNPU_ERR_INVALID_ARGUMENT);
    clnpu_buffer_destroy(small);
    clnpu_weight_destroy(w);
}
END_TEST

/* Two matrices stacked into one weight (the load's q_a | kv_a): every dtype's data and scales
 * follow, so one GEMV gives both products, against float64 over the dequantised values. */
START_TEST(test_weight_desc_stack)
{
    clnpu_device *dev = test_device();
    const clnpu_dtype types[] = {CLNPU_DTYPE_F32, CLNPU_DTYPE_BF16, CLNPU_DTYPE_F16, CLNPU_DTYPE_I8, CLNPU_DTYPE_I8,
                                 CLNPU_DTYPE_FP8_E4M3};
    for (size_t ti = 0; ti < 6; ti++) {
        const clnpu_dtype t = types[ti];
        const size_t na = t == CLNPU_DTYPE_FP8_E4M3 ? 128 : 48, nb = 37, k = 200, M = 3, group = ti == 3 ? 128 : 0;
        host_weight a, b;
        make_weight(&a, t, na, k, group);
        make_weight(&b, t, nb, k, group);
        ck_assert(clnpu_weight_desc_stackable(&a.d, &b.d));
        const size_t ns = clnpu_weight_desc_stack_scales(&a.d, &b.d);
        void *w = malloc((na + nb) * k * clnpu_dtype_size(t));
        float *s = ns ? malloc(ns * sizeof *s) : NULL;
        clnpu_weight_desc both;
        clnpu_weight_desc_stack(&a.d, &b.d, w, s, &both);
        ck_assert_uint_eq(both.n, na + nb);
        clnpu_weight *wt;
        ck_assert_ok(clnpu_weight_upload(dev, &both, 1, &wt));
        float *x = random_vec(M * k), *y = malloc(M * (na + nb) * sizeof *y);
        clnpu_buffer *bx = upload_f32(x, M * k), *by;
        ck_assert_ok(clnpu_buffer_create(dev, M * (na + nb) * sizeof(float), &by));
        poison(by);
        clnpu_gemm_args g = clnpu_gemm_args_default();
        g.x = bx, g.y = by, g.m = M;
        ck_assert_ok(clnpu_gemm(dev, wt, 0, &g));
        ck_assert_ok(clnpu_buffer_read(by, 0, y, M * (na + nb) * sizeof(float)));
        double *ref = malloc(M * (na + nb) * sizeof *ref);
        for (size_t r = 0; r < M; r++)
            for (size_t j = 0; j < na + nb; j++) {
                const float *row = j < na ? a.deq + j * k : b.deq + (j - na) * k;
                double acc = 0;
                for (size_t i = 0; i < k; i++) acc += (double)x[r * k + i] * row[i];
                ref[r * (na + nb) + j] = acc;
            }
        const double e = rel_error(y, ref, M, na + nb, na + nb);
        ck_assert_msg(e <= 2 * tolerance(k), "stacked %s (group %zu): %.3g", clnpu_dtype_name(t), group, e);
        free(w), free(s), free(x), free(y), free(ref);
        clnpu_buffer_destroy(bx), clnpu_buffer_destroy(by);
        clnpu_weight_destroy(wt);
        /* what one packed weight cannot hold is refused */
        if (t == CLNPU_DTYPE_FP8_E4M3) {
            a.d.n = 100;
            ck_assert(!clnpu_weight_desc_stackable(&a.d, &b.d)); /* fp8 blocks across the seam */
        }
        if (t == CLNPU_DTYPE_I8) {
            b.d.group_k = group ? 0 : 128;
            ck_assert(!clnpu_weight_desc_stackable(&a.d, &b.d));
        }
        clnpu_weight_desc other = b.d;
        other.dtype = t == CLNPU_DTYPE_F32 ? CLNPU_DTYPE_BF16 : CLNPU_DTYPE_F32;
        ck_assert(!clnpu_weight_desc_stackable(&a.d, &other));
        free_weight(&a), free_weight(&b);
    }
}
END_TEST

Suite *suite_gemm(void)
{
    Suite *s = suite_create("gemm");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, test_gemm_dtypes, CLNPU_DTYPE_F32, CLNPU_DTYPE_FP8_E4M3 + 1);
    tcase_add_test(tc, test_quant_roundtrip);
    tcase_add_test(tc, test_gemm_exact_widening);
    tcase_add_test(tc, test_gemm_epilogues);
    tcase_add_test(tc, test_gemm_grouped);
    tcase_add_test(tc, test_gemm_two_panels);
    tcase_add_test(tc, test_gemm_blocked);
    tcase_add_test(tc, test_gemm_splitk);
    tcase_add_test(tc, test_gemm_bad_input);
    tcase_add_test(tc, test_weight_desc_stack);
    suite_add_tcase(s, tc);
    return s;
}
