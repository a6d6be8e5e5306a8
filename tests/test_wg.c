/* The work-group kernel family on PoCL with the family forced and the work-group sizes a GPU
 * would use (64, 128, 256): GEMM / GEMV / grouped GEMM over every weight dtype and epilogue,
 * argmax and sampling, RMSNorm, against float64 references on ragged shapes with outputs poisoned;
 * the capability table (family choice, sub-group query, local-memory fitting and refusal); the
 * tiny A.X K1 model against transformers with the family forced.
 *
 * Tolerances as tests/test_gemm.c: u sqrt(K) + 4u against the dequantised reference (the wg
 * kernels scale each element as it is loaded, one rounding as the reference's). */
#include <CL/cl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#ifndef CLNPU_CLI_PATH
#error "CLNPU_CLI_PATH must name the clnpu binary"
#endif
#ifndef CLNPU_SOURCE_DIR
#error "CLNPU_SOURCE_DIR must name the source tree"
#endif
#define TINY CLNPU_SOURCE_DIR "/models/tiny-axk1"

static clnpu_kernel_family saved_family;
static unsigned saved_wg;

static void wg_setup(void)
{
    const clnpu_capability *c = clnpu_device_capability(test_device());
    saved_family = c->family;
    saved_wg = c->wg_size;
}

static void wg_teardown(void)
{
    clnpu_device_set_kernel_family(test_device(), saved_family, saved_wg);
}

static void force_wg(unsigned size)
{
    ck_assert_ok(clnpu_device_set_kernel_family(test_device(), CLNPU_KERNEL_FAMILY_WG, size));
    ck_assert_uint_eq(clnpu_device_capability(test_device())->wg_size, size);
}

static clnpu_buffer *upload(const void *v, size_t bytes)
{
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(test_device(), bytes, &b));
    ck_assert_ok(clnpu_buffer_write(b, 0, v, bytes));
    return b;
}

static clnpu_buffer *poisoned(size_t bytes)
{
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(test_device(), bytes, &b));
    float nan = NAN;
    ck_assert_ok(clnpu_buffer_fill(b, &nan, sizeof nan));
    return b;
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

static double rel_error(const float *out, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(!isnan(out[i]), "NaN at %zu (output not fully written?)", i);
        num += (out[i] - ref[i]) * (out[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

typedef struct hweight {
    clnpu_weight_desc d;
    void *data;
    float *scales, *deq;
} hweight;

static void make_weight(hweight *h, clnpu_dtype t, size_t n, size_t k, size_t group_k)
{
    memset(h, 0, sizeof *h);
    float *w = malloc(n * k * sizeof *w);
    for (size_t i = 0; i < n * k; i++) w[i] = test_rand_normal() * 0.5f;
    h->d = (clnpu_weight_desc){.dtype = t, .n = n, .k = k};
    if (t == CLNPU_DTYPE_F32) {
        h->data = w;
        w = NULL;
    } else if (t == CLNPU_DTYPE_BF16 || t == CLNPU_DTYPE_F16) {
        uint16_t *b = malloc(n * k * 2);
        for (size_t i = 0; i < n * k; i++) b[i] = t == CLNPU_DTYPE_BF16 ? clnpu_f32_to_bf16(w[i]) : clnpu_f32_to_f16(w[i]);
        h->data = b;
    } else if (t == CLNPU_DTYPE_I8) {
        size_t ng = group_k ? (k + group_k - 1) / group_k : 1;
        h->data = malloc(n * k);
        h->scales = malloc(n * ng * sizeof(float));
        ck_assert_ok(clnpu_quantize_i8(w, n, k, group_k, h->data, h->scales));
        h->d.group_k = group_k;
    } else {
        h->data = malloc(n * k);
        h->scales = malloc(((n + 127) / 128) * ((k + 127) / 128) * sizeof(float));
        ck_assert_ok(clnpu_quantize_fp8(w, n, k, h->data, h->scales));
    }
    free(w);
    h->d.data = h->data;
    h->d.scales = h->scales;
    h->deq = malloc(n * k * sizeof(float));
    ck_assert_ok(clnpu_weight_desc_to_f32(&h->d, h->deq));
}

static void free_weight(hweight *h)
{
    free(h->data);
    free(h->scales);
    free(h->deq);
}

static double dot(const float *x, const float *w, size_t k)
{
    double s = 0;
    for (size_t i = 0; i < k; i++) s += (double)x[i] * w[i];
    return s;
}

/* One table row per program built (dtype x epilogue x work-group size), each run as GEMV (m <= 8)
 * and as tiled GEMM; N and K ragged, never tile multiples. */
static const struct {
    unsigned wg;
    clnpu_dtype t;
    size_t group_k;
    clnpu_epilogue ep;
    size_t m_gemv, m_gemm, n, k;
} cases[] = {
    {64, CLNPU_DTYPE_F32, 0, CLNPU_EPILOGUE_NONE, 1, 37, 75, 131},
    {128, CLNPU_DTYPE_BF16, 0, CLNPU_EPILOGUE_RESIDUAL, 3, 70, 53, 300},
    {256, CLNPU_DTYPE_F16, 0, CLNPU_EPILOGUE_SWIGLU, 8, 33, 41, 97},
    {64, CLNPU_DTYPE_I8, 64, CLNPU_EPILOGUE_SWIGLU, 2, 45, 29, 200},
    {128, CLNPU_DTYPE_I8, 0, CLNPU_EPILOGUE_NONE, 5, 19, 130, 77},
    {256, CLNPU_DTYPE_FP8_E4M3, 0, CLNPU_EPILOGUE_RESIDUAL, 1, 40, 150, 260},
};

static void run_gemm(size_t ci, size_t m)
{
    clnpu_device *dev = test_device();
    const size_t n = cases[ci].n, k = cases[ci].k;
    const clnpu_epilogue ep = cases[ci].ep;
    hweight g, u;
    make_weight(&g, cases[ci].t, n, k, cases[ci].group_k);
    clnpu_weight *w;
    if (ep == CLNPU_EPILOGUE_SWIGLU) {
        make_weight(&u, cases[ci].t, n, k, cases[ci].group_k);
        ck_assert_ok(clnpu_weight_upload_swiglu(dev, &g.d, &u.d, 1, &w));
    } else {
        ck_assert_ok(clnpu_weight_upload(dev, &g.d, 1, &w));
    }
    const size_t ldx = k + 3, ldy = n + 5; /* ragged strides too */
    float *x = random_vec(m * ldx), *r = random_vec(m * ldy), *out = malloc(m * ldy * sizeof *out);
    clnpu_buffer *bx = upload(x, m * ldx * 4), *br = upload(r, m * ldy * 4), *by = poisoned(m * ldy * 4);
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = bx, a.ldx = ldx, a.y = by, a.ldy = ldy, a.m = m, a.epilogue = ep, a.alpha = 0.75f;
    if (ep == CLNPU_EPILOGUE_RESIDUAL) a.residual = br;
    ck_assert_ok(clnpu_gemm(dev, w, 0, &a));
    ck_assert_ok(clnpu_buffer_read(by, 0, out, m * ldy * 4));
    double *ref = malloc(m * n * sizeof *ref);
    float *o = malloc(m * n * sizeof *o);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double v = 0.75 * dot(x + i * ldx, g.deq + j * k, k);
            if (ep == CLNPU_EPILOGUE_SWIGLU) v = v / (1 + exp(-v)) * 0.75 * dot(x + i * ldx, u.deq + j * k, k);
            if (ep == CLNPU_EPILOGUE_RESIDUAL) v += r[i * ldy + j];
            ref[i * n + j] = v;
            o[i * n + j] = out[i * ldy + j];
        }
    for (size_t i = 0; i < m; i++) /* the padding between rows stays poisoned */
        ck_assert_msg(isnan(out[i * ldy + n]), "row %zu: written past N", i);
    const double err = rel_error(o, ref, m * n), tol = tolerance(k) * (ep == CLNPU_EPILOGUE_SWIGLU ? 3 : 1);
    ck_assert_msg(err <= tol, "wg %u %s ep %d M=%zu N=%zu K=%zu: rel error %.3g > %.3g", cases[ci].wg,
                  clnpu_dtype_name(cases[ci].t), (int)ep, m, n, k, err, tol);
    free(x), free(r), free(out), free(ref), free(o);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(br), clnpu_buffer_destroy(by);
    clnpu_weight_destroy(w);
    free_weight(&g);
    if (ep == CLNPU_EPILOGUE_SWIGLU) free_weight(&u);
}

START_TEST(test_wg_gemm)
{
    force_wg(cases[_i].wg);
    run_gemm((size_t)_i, cases[_i].m_gemv);
    run_gemm((size_t)_i, cases[_i].m_gemm);
}
END_TEST

/* Split-K GEMV: work-groups cooperating along K through a workspace (given, or made by the call),
 * with the residual added by the reduce; against float64 with the padding poisoned. */
START_TEST(test_wg_gemv_splitk)
{
    clnpu_device *dev = test_device();
    force_wg(128);
    const size_t m = 3, n = 53, k = 1000, ldy = n + 2;
    hweight h;
    make_weight(&h, CLNPU_DTYPE_BF16, n, k, 0);
    clnpu_weight *w;
    ck_assert_ok(clnpu_weight_upload(dev, &h.d, 1, &w));
    float *x = random_vec(m * k), *r = random_vec(m * ldy), *out = malloc(m * ldy * 4), *o = malloc(m * n * 4);
    double *ref = malloc(m * n * sizeof *ref);
    clnpu_buffer *bx = upload(x, m * k * 4), *br = upload(r, m * ldy * 4), *wsb;
    ck_assert_ok(clnpu_buffer_create(dev, 4 * m * n * 4, &wsb));
    for (int v = 0; v < 2; v++) {
        clnpu_buffer *by = poisoned(m * ldy * 4);
        clnpu_gemm_args a = clnpu_gemm_args_default();
        a.x = bx, a.y = by, a.ldy = ldy, a.m = m, a.alpha = 1.5f, a.epilogue = CLNPU_EPILOGUE_RESIDUAL, a.residual = br;
        a.ldr = ldy, a.split_k = v ? 4 : 3, a.workspace = v ? wsb : NULL;
        ck_assert_ok(clnpu_gemm(dev, w, 0, &a));
        ck_assert_ok(clnpu_buffer_read(by, 0, out, m * ldy * 4));
        for (size_t i = 0; i < m; i++) {
            ck_assert(isnan(out[i * ldy + n]));
            for (size_t j = 0; j < n; j++) {
                ref[i * n + j] = 1.5 * dot(x + i * k, h.deq + j * k, k) + r[i * ldy + j];
                o[i * n + j] = out[i * ldy + j];
            }
        }
        const double err = rel_error(o, ref, m * n);
        ck_assert_msg(err <= tolerance(k), "split-K GEMV (%u splits): %.3g", a.split_k, err);
        clnpu_buffer_destroy(by);
    }
    free(x), free(r), free(out), free(o), free(ref);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(br), clnpu_buffer_destroy(wsb);
    clnpu_weight_destroy(w);
    free_weight(&h);
}
END_TEST

/* Grouped GEMM over a host segment table and over device-side counts / offsets, SwiGLU. */
START_TEST(test_wg_gemm_grouped)
{
    clnpu_device *dev = test_device();
    /* the programs of test_wg_gemm's SwiGLU rows (int8 per group of 64 at 64, f16 at 256): no new builds */
    force_wg(_i ? 256 : 64);
    const clnpu_dtype t = _i ? CLNPU_DTYPE_F16 : CLNPU_DTYPE_I8;
    const size_t gk = _i ? 0 : 64;
    enum { E = 5 };
    const size_t n = 45, k = 70, rows[E] = {3, 0, 40, 1, 9};
    hweight hg[E], hu[E];
    clnpu_weight_desc dg[E], du[E];
    for (size_t e = 0; e < E; e++) {
        make_weight(&hg[e], t, n, k, gk);
        make_weight(&hu[e], t, n, k, gk);
        dg[e] = hg[e].d, du[e] = hu[e].d;
    }
    clnpu_weight *w;
    ck_assert_ok(clnpu_weight_upload_swiglu(dev, dg, du, E, &w));
    size_t m = 0;
    clnpu_gemm_segment segs[E];
    int cnt[E], off[E];
    for (size_t e = 0; e < E; e++) {
        segs[e] = (clnpu_gemm_segment){e, m, rows[e]};
        cnt[e] = (int)rows[e], off[e] = (int)m;
        m += rows[e];
    }
    float *x = random_vec(m * k), *out = malloc(m * n * sizeof *out);
    double *ref = malloc(m * n * sizeof *ref);
    for (size_t e = 0; e < E; e++)
        for (size_t i = segs[e].row; i < segs[e].row + rows[e]; i++)
            for (size_t j = 0; j < n; j++) {
                double gv = dot(x + i * k, hg[e].deq + j * k, k), uv = dot(x + i * k, hu[e].deq + j * k, k);
                ref[i * n + j] = gv / (1 + exp(-gv)) * uv;
            }
    clnpu_buffer *bx = upload(x, m * k * 4), *bc = upload(cnt, sizeof cnt), *bo = upload(off, sizeof off);
    for (int dev_counts = 0; dev_counts < 2; dev_counts++) {
        clnpu_buffer *by = poisoned(m * n * 4);
        clnpu_gemm_args a = clnpu_gemm_args_default();
        a.x = bx, a.y = by, a.m = m, a.epilogue = CLNPU_EPILOGUE_SWIGLU;
        if (dev_counts) ck_assert_ok(clnpu_gemm_grouped_counts(dev, w, bc, bo, 40, &a));
        else ck_assert_ok(clnpu_gemm_grouped(dev, w, segs, E, &a));
        ck_assert_ok(clnpu_buffer_read(by, 0, out, m * n * 4));
        const double err = rel_error(out, ref, m * n);
        ck_assert_msg(err <= 3 * tolerance(k), "grouped %s (device counts %d): %.3g", clnpu_dtype_name(t), dev_counts,
                      err);
        clnpu_buffer_destroy(by);
    }
    free(x), free(out), free(ref);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(bc), clnpu_buffer_destroy(bo);
    clnpu_weight_destroy(w);
    for (size_t e = 0; e < E; e++) free_weight(&hg[e]), free_weight(&hu[e]);
}
END_TEST

/* The untiled comparison point (SA = SB = 0, operands from global memory in the inner loop) and a
 * tuned tile, both chosen through "gemm_wg" tuning entries, as `clnpu tune` would store them. */
START_TEST(test_wg_gemm_tuned)
{
    clnpu_device *dev = test_device();
    force_wg(64);
    clnpu_tuning_db *db;
    ck_assert_ok(clnpu_tuning_db_create(&db));
    clnpu_tuning_entry e;
    memset(&e, 0, sizeof e);
    clnpu_tuning_entry_set_device(&e, dev);
    snprintf(e.kernel, sizeof e.kernel, "gemm_wg");
    snprintf(e.dtype, sizeof e.dtype, "f32");
    snprintf(e.shape_class, sizeof e.shape_class, "prefill");
    clnpu_tuning_source_hash("gemm_wg.cl", e.source_hash);
    const char *names[] = {"mwg", "nwg", "kwg", "mdimc", "ndimc", "vwm", "vwn", "kwi", "sa", "sb"};
    const int vals[2][10] = {{32, 32, 8, 8, 8, 1, 1, 1, 0, 0}, {64, 32, 16, 8, 8, 2, 4, 4, 1, 1}};
    for (int v = 0; v < 2; v++) {
        e.nparams = 10;
        for (int i = 0; i < 10; i++) {
            snprintf(e.names[i], sizeof e.names[i], "%s", names[i]);
            e.values[i] = vals[v][i];
        }
        ck_assert_ok(clnpu_tuning_db_put(db, &e));
        clnpu_device_set_tuning(dev, db);
        run_gemm(0, 37);
    }
    clnpu_device_set_tuning(dev, NULL);
    clnpu_tuning_db_destroy(db);
}
END_TEST

/* Argmax, sampling and softmax with one work-group per row: argmax equals the host's first maximum; a draw
 * equals the cpu family's for the same seed (same algorithm and random stream), and lies in the
 * float64 top-k set; the full vocabulary of 163,840 once. */
START_TEST(test_wg_sampling)
{
    clnpu_device *dev = test_device();
    const unsigned sizes[] = {64, 128, 256};
    /* CLNPU_TEST_SMALL (tools/oclgrind_wg.sh: a simulator runs each work-item) skips the full vocabulary */
    if (_i == 2 && getenv("CLNPU_TEST_SMALL")) return;
    const size_t rows = 6, n = _i == 2 ? 163840 : 3001, ld = n + 7;
    float *l = malloc(rows * ld * sizeof *l);
    for (size_t i = 0; i < rows * ld; i++) l[i] = test_rand_normal() * 3;
    l[2 * ld + 17] = l[2 * ld + 900] = 50; /* a tie: the first index wins */
    clnpu_buffer *bl = upload(l, rows * ld * 4), *bo;
    ck_assert_ok(clnpu_buffer_create(dev, rows * 4, &bo));
    int got[6], cpu[6];
    const clnpu_sampling ps[] = {{0, 0, 0, 1}, {0.8f, 40, 0, 7}, {1.1f, 0, 0.9f, 11}, {0.7f, 200, 0.5f, 3}};
    for (size_t p = 0; p < 4; p++) {
        for (int fam = 0; fam < 2; fam++) {
            int fill = -7;
            ck_assert_ok(clnpu_buffer_fill(bo, &fill, 4));
            if (fam) force_wg(sizes[_i]);
            else ck_assert_ok(clnpu_device_set_kernel_family(dev, CLNPU_KERNEL_FAMILY_CPU, 0));
            clnpu_view v = {bl, 0, ld};
            ck_assert_ok(clnpu_sample(dev, bo, v, rows, n, &ps[p], 5));
            ck_assert_ok(clnpu_buffer_read(bo, 0, fam ? got : cpu, sizeof got));
        }
        for (size_t r = 0; r < rows; r++) {
            ck_assert(got[r] >= 0 && (size_t)got[r] < n);
            if (n < 10000 || !ps[p].temperature) {
                ck_assert_msg(got[r] == cpu[r], "params %zu row %zu: wg picked %d, cpu %d", p, r, got[r], cpu[r]);
            } else if (got[r] != cpu[r]) {
                /* 163,840 terms summed in another order move u by ~1e-6 of the mass: the two picks
                 * may be neighbours in the kept set (the later one may carry a large probability of
                 * its own), with no more than a sliver of mass strictly between them. */
                double mx = -INFINITY, tot = 0, between = 0;
                for (size_t i = 0; i < n; i++) mx = fmax(mx, l[r * ld + i]);
                const size_t lo = (size_t)(got[r] < cpu[r] ? got[r] : cpu[r]), hi = (size_t)(got[r] ^ cpu[r] ^ (int)lo);
                for (size_t i = 0; i < n; i++) {
                    const double q = exp((l[r * ld + i] - mx) / ps[p].temperature);
                    tot += q;
                    if (i > lo && i < hi) between += q; /* strictly between: the picks' own mass is no error */
                }
                ck_assert_msg(between <= 1e-3 * tot, "params %zu row %zu: wg %d, cpu %d, %.3g of the mass apart", p, r,
                              got[r], cpu[r], between / tot);
            }
            if (ps[p].top_k) { /* fewer than top_k logits are strictly larger */
                size_t larger = 0;
                for (size_t i = 0; i < n; i++) larger += l[r * ld + i] > l[r * ld + (size_t)got[r]];
                ck_assert_msg(larger < ps[p].top_k, "row %zu: pick outside the top %u", r, ps[p].top_k);
            }
        }
    }
    force_wg(sizes[_i]);
    clnpu_view v = {bl, 0, ld};
    ck_assert_ok(clnpu_argmax(dev, bo, v, rows, n));
    ck_assert_ok(clnpu_buffer_read(bo, 0, got, sizeof got));
    for (size_t r = 0; r < rows; r++) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (l[r * ld + i] > l[r * ld + best]) best = i;
        ck_assert_int_eq(got[r], (int)best);
    }
    ck_assert_int_eq(got[2], 17);
    /* softmax in place over the same rows, against float64 */
    ck_assert_ok(clnpu_softmax(dev, v, rows, n));
    float *sm = malloc(rows * ld * sizeof *sm);
    double *ref = malloc(rows * n * sizeof *ref);
    float *smp = malloc(rows * n * sizeof *smp);
    ck_assert_ok(clnpu_buffer_read(bl, 0, sm, rows * ld * 4));
    for (size_t r = 0; r < rows; r++) {
        double mx = -INFINITY, z = 0;
        for (size_t i = 0; i < n; i++) mx = fmax(mx, l[r * ld + i]);
        for (size_t i = 0; i < n; i++) z += exp((double)l[r * ld + i] - mx);
        for (size_t i = 0; i < n; i++) ref[r * n + i] = exp((double)l[r * ld + i] - mx) / z, smp[r * n + i] = sm[r * ld + i];
    }
    const double serr = rel_error(smp, ref, rows * n), stol = 2 * 0x1p-24 * sqrt((double)n) + 4e-7;
    ck_assert_msg(serr <= stol, "softmax wg %u n=%zu: %.3g > %.3g", sizes[_i], n, serr, stol);
    free(sm), free(ref), free(smp);
    free(l);
    clnpu_buffer_destroy(bl), clnpu_buffer_destroy(bo);
}
END_TEST

/* RMSNorm fused with the residual add, reduced by 64 / 128 / 256 work-items. */
START_TEST(test_wg_rmsnorm)
{
    clnpu_device *dev = test_device();
    const unsigned sizes[] = {64, 128, 256};
    force_wg(sizes[_i]);
    const size_t rows = 5, dim = 711;
    float *x = random_vec(rows * dim), *h = random_vec(rows * dim), *w = random_vec(dim), *out = malloc(rows * dim * 4);
    double *ref = malloc(rows * dim * sizeof *ref);
    for (size_t r = 0; r < rows; r++) {
        double ss = 0;
        for (size_t i = 0; i < dim; i++) ss += ((double)h[r * dim + i] + x[r * dim + i]) * ((double)h[r * dim + i] + x[r * dim + i]);
        const double inv = 1 / sqrt(ss / dim + 1e-6);
        for (size_t i = 0; i < dim; i++) ref[r * dim + i] = w[i] * ((double)h[r * dim + i] + x[r * dim + i]) * inv;
    }
    clnpu_buffer *bx = upload(x, rows * dim * 4), *bh = upload(h, rows * dim * 4), *bw = upload(w, dim * 4),
                 *by = poisoned(rows * dim * 4);
    clnpu_view vx = {bx, 0, dim}, vh = {bh, 0, dim}, vy = {by, 0, dim};
    ck_assert_ok(clnpu_rmsnorm(dev, vx, vh, vy, bw, rows, dim, 1e-6f));
    ck_assert_ok(clnpu_buffer_read(by, 0, out, rows * dim * 4));
    const double err = rel_error(out, ref, rows * dim);
    ck_assert_msg(err <= 4 * tolerance(dim), "rmsnorm wg %u: %.3g", sizes[_i], err);
    free(x), free(h), free(w), free(out), free(ref);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(bh), clnpu_buffer_destroy(bw), clnpu_buffer_destroy(by);
}
END_TEST

/* The fused layer end (post-MLP norm, residual add, non-finite tag, next norm), the paired norms
 * (reduced by 64 and 256 work-items) and the paired RoPE: the cpu family's checks (test_util.c). */
START_TEST(test_wg_rmsnorm_add_tag)
{
    const unsigned sizes[] = {64, 256};
    force_wg(sizes[_i]);
    test_check_rmsnorm_add_tag(test_device());
    test_check_rmsnorm2(test_device());
    const clnpu_rope_config rc = {64, 10000.0, CLNPU_ROPE_YARN, 4.0, 32768, 32, 1, 1.0, 0.0};
    test_check_rope2(test_device(), &rc); /* lanes over a row's pairs */
}
END_TEST

/* The table: PoCL's CPU device takes the cpu family; an emulated GPU or NPU profile the wg family
 * with its kernel keys as the GEMM tile; the sub-group query asks CL_DEVICE_MAX_NUM_SUB_GROUPS. */
START_TEST(test_wg_capability)
{
    clnpu_device *dev = test_device();
    const clnpu_device_info *info = clnpu_device_get_info(dev);
    cl_uint nsg = 0;
    if (clGetDeviceInfo(clnpu_device_cl_device(dev), 0x105C, sizeof nsg, &nsg, NULL) != CL_SUCCESS) nsg = 0;
    ck_assert_uint_eq(info->max_num_subgroups, nsg);
    ck_assert(info->subgroups == (clnpu_device_info_has_extension(info, "cl_khr_subgroups") ||
                                  clnpu_device_info_has_extension(info, "cl_intel_subgroups") || nsg > 0));
    ck_assert(clnpu_device_capability(dev)->subgroups == info->subgroups);
    if (!getenv("CLNPU_KERNEL_FAMILY") && info->type == CLNPU_DEVICE_TYPE_CPU)
        ck_assert_int_eq(saved_family, CLNPU_KERNEL_FAMILY_CPU);

    clnpu_device_options o = clnpu_device_options_default();
    o.target = "nvidia-h200";
    clnpu_device *h200;
    ck_assert_ok(clnpu_device_open(0, &o, &h200));
    const clnpu_capability *c = clnpu_device_capability(h200);
    if (!getenv("CLNPU_KERNEL_FAMILY")) ck_assert_int_eq(c->family, CLNPU_KERNEL_FAMILY_WG);
    if (!getenv("CLNPU_WG_SIZE")) { /* profile keys: 16 x 16 threads of 8 x 8, K steps of 16, 4-wide */
        ck_assert_uint_eq(c->gemm.mdimc, 16);
        ck_assert_uint_eq(c->gemm.ndimc, 16);
        ck_assert_uint_eq(c->gemm.mwg, 128);
        ck_assert_uint_eq(c->gemm.nwg, 128);
        ck_assert_uint_eq(c->gemm.kwg, 16);
        ck_assert_uint_eq(c->gemm.vwn, 4);
    }
    ck_assert_uint_le(clnpu_gemm_wg_local_bytes(&c->gemm, true), clnpu_device_local_mem_budget(h200));
    clnpu_device_close(h200);

    /* Re-tiling into a budget, and refusal where nothing fits. */
    clnpu_gemm_wg_params p = {128, 128, 16, 16, 16, 1, 4, 2, 1, 1};
    ck_assert(clnpu_gemm_wg_params_valid(&p, 1024, NULL));
    ck_assert(clnpu_gemm_wg_fit(&p, 8192, false));
    ck_assert_uint_le(clnpu_gemm_wg_local_bytes(&p, false), 8192);
    ck_assert(clnpu_gemm_wg_params_valid(&p, 1024, NULL));
    ck_assert(!clnpu_gemm_wg_fit(&p, 64, true));
    const char *why = NULL;
    clnpu_gemm_wg_params bad = {40, 32, 16, 16, 16, 1, 1, 2, 1, 1};
    ck_assert(!clnpu_gemm_wg_params_valid(&bad, 1024, &why) && why);
    ck_assert_int_ne(clnpu_device_set_kernel_family(dev, CLNPU_KERNEL_FAMILY_WG, 96), CLNPU_OK);
}
END_TEST

/* An NPU profile whose local memory cannot hold the smallest GEMV reduction: the launch is refused
 * with a message naming the kernel and the bytes, before anything runs. */
START_TEST(test_wg_budget_refused)
{
    clnpu_profile_set *set;
    ck_assert_ok(clnpu_profile_set_builtin(&set));
    clnpu_profile p = *clnpu_profile_set_find(set, "rebellions-atom");
    snprintf(p.name, sizeof p.name, "tiny-sram-npu");
    p.kernel.local_mem_bytes = 256;
    p.sram_bytes = 256;
    ck_assert_ok(clnpu_profile_set_add(set, &p));
    clnpu_device_options o = clnpu_device_options_default();
    o.target = "tiny-sram-npu";
    o.profiles = set;
    clnpu_device *dev;
    ck_assert_ok(clnpu_device_open(0, &o, &dev));
    ck_assert_int_eq(clnpu_device_capability(dev)->family, CLNPU_KERNEL_FAMILY_WG);
    float wv[16 * 8];
    for (int i = 0; i < 128; i++) wv[i] = (float)i;
    clnpu_weight_desc d = {.dtype = CLNPU_DTYPE_F32, .n = 16, .k = 8, .data = wv};
    clnpu_weight *w;
    ck_assert_ok(clnpu_weight_upload(dev, &d, 1, &w));
    clnpu_buffer *bx, *by;
    ck_assert_ok(clnpu_buffer_create(dev, 8 * 4, &bx));
    ck_assert_ok(clnpu_buffer_create(dev, 16 * 4, &by));
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = bx, a.y = by, a.m = 1;
    ck_assert_int_eq(clnpu_gemm(dev, w, 0, &a), CLNPU_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(clnpu_error_message(), "gemv_wg") && strstr(clnpu_error_message(), "256 bytes"), "%s",
                  clnpu_error_message());
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(by);
    clnpu_weight_destroy(w);
    clnpu_device_close(dev);
    clnpu_profile_set_destroy(set);
}
END_TEST


/* Causal flash attention with a cached prefix, A.X K1 head dims (192 / 128) and a small one, by
 * 64 / 128 / 256 work-items, against float64; rows between heads and past the tokens stay
 * poisoned. */
START_TEST(test_wg_attention)
{
    clnpu_device *dev = test_device();
    const unsigned sizes[] = {64, 128, 256, 256};
    force_wg(sizes[_i]);
    const bool small = _i == 1 || _i == 3; /* the tiny A.X K1's head dims */
    const size_t H = 2, T = small ? 21 : 37, P = _i == 2 ? 0 : 13, S = P + T;
    const size_t dq = small ? 24 : 192, dv = small ? 16 : 128;
    const size_t ldq = H * dq + 4, ldk = H * dq, ldv = H * dv + 8, ldo = H * dv + 4;
    float *q = random_vec(T * ldq), *k = random_vec(S * ldk), *v = random_vec(S * ldv), *o = malloc(T * ldo * 4);
    clnpu_buffer *bq = upload(q, T * ldq * 4), *bk = upload(k, S * ldk * 4), *bv = upload(v, S * ldv * 4),
                 *bo = poisoned(T * ldo * 4);
    const float scale = 1.0f / sqrtf((float)dq);
    clnpu_attention_args a = {.q = {bq, 0, ldq}, .k = {bk, 0, ldk}, .v = {bv, 0, ldv}, .o = {bo, 0, ldo},
                              .q_head_stride = dq, .k_head_stride = dq, .v_head_stride = dv, .o_head_stride = dv,
                              .heads = H, .dqk = dq, .dv = dv, .tokens = T, .prefix = P, .scale = scale};
    ck_assert_str_eq(clnpu_op_variant(dev, "flash_attention", 0), "wg:clnpu_flash_attn_wg (Q, K/V tiles in local memory)");
    ck_assert_ok(clnpu_flash_attention(dev, &a));
    ck_assert_ok(clnpu_buffer_read(bo, 0, o, T * ldo * 4));
    double *ref = malloc(T * H * dv * sizeof *ref), *sc = malloc(S * sizeof *sc);
    float *got = malloc(T * H * dv * 4);
    for (size_t t = 0; t < T; t++)
        for (size_t h = 0; h < H; h++) {
            double mx = -INFINITY, z = 0;
            for (size_t j = 0; j <= P + t; j++) {
                sc[j] = scale * dot(q + t * ldq + h * dq, k + j * ldk + h * dq, dq);
                mx = fmax(mx, sc[j]);
            }
            for (size_t j = 0; j <= P + t; j++) z += (sc[j] = exp(sc[j] - mx));
            for (size_t d = 0; d < dv; d++) {
                double acc = 0;
                for (size_t j = 0; j <= P + t; j++) acc += sc[j] * v[j * ldv + h * dv + d];
                ref[(t * H + h) * dv + d] = acc / z;
                got[(t * H + h) * dv + d] = o[t * ldo + h * dv + d];
            }
            if (h == H - 1) ck_assert_msg(isnan(o[t * ldo + H * dv]), "row %zu: written past the heads", t);
        }
    const double err = rel_error(got, ref, T * H * dv), tol = 2e-6 * sqrt((double)S) + 1e-6;
    ck_assert_msg(err <= tol, "attention wg %u T=%zu P=%zu d %zu/%zu: %.3g > %.3g", sizes[_i], T, P, dq, dv, err, tol);
    free(q), free(k), free(v), free(o), free(ref), free(sc), free(got);
    clnpu_buffer_destroy(bq), clnpu_buffer_destroy(bk), clnpu_buffer_destroy(bv), clnpu_buffer_destroy(bo);
}
END_TEST

/* Absorbed MLA decode over a paged cache (pages out of order), three sequences of different
 * lengths, split into chunks or not, f32, bf16 and fp8 caches, by 64 / 128 / 256 work-items,
 * against float64 over the values the cache holds. */
START_TEST(test_wg_mla)
{
    clnpu_device *dev = test_device();
    const unsigned sizes[] = {64, 128, 256, 256, 128}, splits[] = {3, 1, 0, 1, 3};
    force_wg(sizes[_i]);
    enum { B = 3 };
    /* case 3: the tiny A.X K1's dims (4 heads, rank 32, rope 8); case 4: an fp8 cache of rank 160
     * (two scales a row, the second for 32 elements) with ragged magnitudes along c */
    const size_t H = _i == 3 ? 4 : 5, R = _i == 3 ? 32 : _i == 4 ? 160 : 512, DR = _i == 3 ? 8 : _i == 4 ? 16 : 64,
                 row = R + DR, page = 32, mb = 10;
    const int lens[B] = {300, 1, 77};
    float *cache = random_vec(B * mb * page * row), *qa = random_vec(B * H * R), *qp = random_vec(B * H * DR);
    int bt[B * mb];
    for (size_t i = 0; i < B * mb; i++) bt[i] = (int)((i * 7 + 3) % (B * mb)); /* a permutation */
    /* case 2: a bf16 latent cache (the reference takes the values the cache holds) */
    const clnpu_dtype cdt = _i == 2 ? CLNPU_DTYPE_BF16 : _i == 4 ? CLNPU_DTYPE_FP8_E4M3 : CLNPU_DTYPE_F32;
    const size_t ncache = B * mb * page * row;
    for (size_t i = 0; cdt == CLNPU_DTYPE_FP8_E4M3 && i < ncache; i++)
        if (i % row < R) cache[i] *= ldexpf(1.0f, (int)((i % row) / 16 % 4) - 2);
    size_t nbytes;
    void *c16 = test_latent_cache_encode(cdt, R, DR, B * mb * page, cache, &nbytes);
    clnpu_buffer *bc = upload(c16, nbytes), *bqa = upload(qa, B * H * R * 4),
                 *bqp = upload(qp, B * H * DR * 4), *bb = upload(bt, sizeof bt), *bl = upload(lens, sizeof lens),
                 *bo = poisoned(B * H * R * 4);
    const float scale = 0.05f;
    clnpu_mla_decode_args a = {.q_abs = bqa, .q_pe = bqp, .cache = bc, .page_size = page, .block_table = bb,
                               .max_blocks = mb, .seq_len = bl, .max_seq_len = 300, .batch = B, .heads = H,
                               .rank = R, .rope_dim = DR, .scale = scale, .out = bo, .splits = splits[_i],
                               .cache_dtype = cdt};
    ck_assert_ok(clnpu_mla_decode(dev, &a));
    float *o = malloc(B * H * R * 4);
    ck_assert_ok(clnpu_buffer_read(bo, 0, o, B * H * R * 4));
    double *ref = malloc(B * H * R * sizeof *ref), sc[300];
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++) {
            double mx = -INFINITY, zs = 0;
            for (int t = 0; t < lens[b]; t++) {
                const float *c = cache + ((size_t)bt[b * mb + (size_t)t / page] * page + (size_t)t % page) * row;
                sc[t] = scale * (dot(qa + (b * H + h) * R, c, R) + dot(qp + (b * H + h) * DR, c + R, DR));
                mx = fmax(mx, sc[t]);
            }
            for (int t = 0; t < lens[b]; t++) zs += (sc[t] = exp(sc[t] - mx));
            for (size_t d = 0; d < R; d++) {
                double acc = 0;
                for (int t = 0; t < lens[b]; t++)
                    acc += sc[t] * cache[((size_t)bt[b * mb + (size_t)t / page] * page + (size_t)t % page) * row + d];
                ref[(b * H + h) * R + d] = acc / zs;
            }
        }
    const double err = rel_error(o, ref, B * H * R), tol = 2e-6 * sqrt(300.0) + 1e-6;
    ck_assert_msg(err <= tol, "mla wg %u splits %u, %s cache: %.3g > %.3g", sizes[_i], splits[_i], clnpu_dtype_name(cdt), err,
                  tol);
    test_check_mla_rope_on_load(dev, a, lens); /* q_pe rotated as it is read */
    free(cache), free(c16), free(qa), free(qp), free(o), free(ref);
    clnpu_buffer_destroy(bc), clnpu_buffer_destroy(bqa), clnpu_buffer_destroy(bqp), clnpu_buffer_destroy(bb);
    clnpu_buffer_destroy(bl), clnpu_buffer_destroy(bo);
}
END_TEST

/* Routing (sigmoid, group-limited top-k; A.X K2's masked groups scoring 0) and the dispatch plan:
 * the wg family's ids, weights and plan equal the cpu family's (same order of every sum), at 64 /
 * 128 / 256 work-items. */
START_TEST(test_wg_moe)
{
    clnpu_device *dev = test_device();
    const unsigned sizes[] = {64, 128, 256};
    const size_t T = 37, E = _i == 1 ? 192 : 64, K = 6;
    /* case 2: A.X K2's routing, the experts of groups not kept compete with a score of 0 (biases
     * negative so that such an expert can win) */
    const clnpu_moe_config cfg = {E, 8, 4, K, true, 2.5f, _i == 2};
    float *lg = random_vec(T * (E + 3)), *bias = random_vec(E);
    for (size_t i = 0; i < T * (E + 3); i++) lg[i] *= 4;
    if (_i == 2)
        for (size_t e = 0; e < E; e++) bias[e] -= 1.5f;
    clnpu_buffer *bl = upload(lg, T * (E + 3) * 4), *bb = upload(bias, E * 4), *bi[2], *bw[2], *pl[2][4];
    int ids[2][37 * 6], plan[2][4][200 + 37 * 6];
    float w[2][37 * 6];
    for (int fam = 0; fam < 2; fam++) {
        if (fam) force_wg(sizes[_i]);
        else ck_assert_ok(clnpu_device_set_kernel_family(dev, CLNPU_KERNEL_FAMILY_CPU, 0));
        bi[fam] = poisoned(T * K * 4), bw[fam] = poisoned(T * K * 4);
        clnpu_view v = {bl, 0, E + 3};
        ck_assert_ok(clnpu_moe_route(dev, v, bb, T, &cfg, bi[fam], bw[fam]));
        const size_t sz[4] = {E, E + 1, T * K, T * K};
        for (int j = 0; j < 4; j++) pl[fam][j] = poisoned(sz[j] * 4);
        ck_assert_ok(clnpu_moe_plan(dev, bi[fam], T, K, E, pl[fam][0], pl[fam][1], pl[fam][2], pl[fam][3]));
        ck_assert_ok(clnpu_buffer_read(bi[fam], 0, ids[fam], T * K * 4));
        ck_assert_ok(clnpu_buffer_read(bw[fam], 0, w[fam], T * K * 4));
        for (int j = 0; j < 4; j++) ck_assert_ok(clnpu_buffer_read(pl[fam][j], 0, plan[fam][j], sz[j] * 4));
    }
    for (size_t i = 0; i < T * K; i++) {
        ck_assert_msg(ids[1][i] == ids[0][i], "token %zu slot %zu: expert %d, cpu family %d", i / K, i % K, ids[1][i],
                      ids[0][i]);
        ck_assert_msg(w[1][i] == w[0][i], "token %zu slot %zu: weight %.9g, cpu family %.9g", i / K, i % K, w[1][i],
                      w[0][i]);
        if (i % K) ck_assert_int_lt(ids[1][i - 1], ids[1][i]); /* ascending */
    }
    const size_t sz[4] = {E, E + 1, T * K, T * K};
    for (int j = 0; j < 4; j++) ck_assert_msg(!memcmp(plan[0][j], plan[1][j], sz[j] * 4), "plan array %d differs", j);
    ck_assert_int_eq(plan[1][1][E], (int)(T * K));
    free(lg), free(bias);
    clnpu_buffer_destroy(bl), clnpu_buffer_destroy(bb);
    for (int fam = 0; fam < 2; fam++) {
        clnpu_buffer_destroy(bi[fam]), clnpu_buffer_destroy(bw[fam]);
        for (int j = 0; j < 4; j++) clnpu_buffer_destroy(pl[fam][j]);
    }
}
END_TEST

/* The CLI names the family: clnpu devices per profile, bench --json rows carry "variant". */
START_TEST(test_wg_cli)
{
    char out[8192];
    ck_assert_int_eq(test_run(CLNPU_CLI_PATH " devices --target nvidia-h200", out, sizeof out), 0);
    ck_assert_msg(strstr(out, "kernels      wg family (emulated accelerator profile)") || getenv("CLNPU_KERNEL_FAMILY"),
                  "%s", out);
    ck_assert_int_eq(test_run("CLNPU_KERNEL_FAMILY=wg " CLNPU_CLI_PATH " bench gemm --dtype f32 --shape 3x40x64 "
                              "--min-time 0.001 --json", out, sizeof out), 0);
    ck_assert_msg(strstr(out, "\"variant\":\"wg:clnpu_gemv_wg\""), "%s", out);
    ck_assert_int_eq(test_run("CLNPU_KERNEL_FAMILY=cpu " CLNPU_CLI_PATH " bench gemm --dtype f32 --shape 3x40x64 "
                              "--min-time 0.001 --json", out, sizeof out), 0);
    ck_assert_msg(strstr(out, "\"variant\":\"cpu:clnpu_gemm"), "%s", out);
}
END_TEST

/* The tiny A.X K1 with every operator in the wg family: logits match transformers' through one
 * prefill and through prefill of 1 + decode. */
START_TEST(test_wg_model_transformers)
{
    force_wg(256); /* the widest groups: what found PoCL's one-element-array quirk */
    test_fixture f;
    test_fixture_open(&f, TINY);
    test_fixture_logits(&f, "tiny A.X K1, wg family", 32, 1e-4);
    test_fixture_close(&f);
}
END_TEST

/* One tcase per kernel group, so each can be run alone (CK_RUN_CASE=wg_sampling; also how
 * tools/oclgrind_wg.sh runs them under Oclgrind). */
static TCase *wg_case(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 600);
    tcase_add_checked_fixture(tc, wg_setup, wg_teardown);
    return tc;
}

Suite *suite_wg(void)
{
    Suite *s = suite_create("wg");
    TCase *tc = wg_case("wg_capability");
    tcase_add_test(tc, test_wg_capability);
    tcase_add_test(tc, test_wg_budget_refused);
    tcase_add_test(tc, test_wg_cli);
    suite_add_tcase(s, tc);
    tc = wg_case("wg_gemm");
    tcase_add_loop_test(tc, test_wg_gemm, 0, sizeof cases / sizeof cases[0]);
    tcase_add_loop_test(tc, test_wg_gemm_grouped, 0, 2);
    tcase_add_test(tc, test_wg_gemm_tuned);
    tcase_add_test(tc, test_wg_gemv_splitk);
    suite_add_tcase(s, tc);
    tc = wg_case("wg_sampling");
    tcase_add_loop_test(tc, test_wg_sampling, 0, 3);
    suite_add_tcase(s, tc);
    tc = wg_case("wg_moe");
    tcase_add_loop_test(tc, test_wg_moe, 0, 3);
    suite_add_tcase(s, tc);
    tc = wg_case("wg_rmsnorm");
    tcase_add_loop_test(tc, test_wg_rmsnorm, 0, 3);
    tcase_add_loop_test(tc, test_wg_rmsnorm_add_tag, 0, 2);
    suite_add_tcase(s, tc);
    tc = wg_case("wg_attention");
    tcase_add_loop_test(tc, test_wg_attention, 0, 4);
    tcase_add_loop_test(tc, test_wg_mla, 0, 5);
    suite_add_tcase(s, tc);
    tc = wg_case("wg_model");
    tcase_add_test(tc, test_wg_model_transformers);
    suite_add_tcase(s, tc);
    return s;
}
