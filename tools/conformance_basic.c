/* Conformance tiers 0 and 1: buffers, copies, launches and events; elementwise, RMSNorm,
 * RoPE/YaRN, softmax, sampling. Shapes from A.X K1 (hidden 7168, 64 heads, rope 64, vocab). */
#include <CL/cl.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h"

static clnpu_buffer *buf_f32(conf_ctx *c, const float *v, size_t n, clnpu_status *st)
{
    clnpu_buffer *b = NULL;
    if (*st) return NULL;
    *st = clnpu_buffer_create(c->dev, (n ? n : 1) * 4, &b);
    if (!*st && v) *st = clnpu_buffer_write(b, 0, v, n * 4);
    if (!*st && !v) {
        float nan = NAN;
        *st = clnpu_buffer_fill(b, &nan, 4);
    }
    return b;
}

static float *rnd(conf_ctx *c, size_t n, float scale)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    for (size_t i = 0; v && i < n; i++) v[i] = conf_rand(c) * scale;
    return v;
}

void conf_tier0(conf_ctx *c)
{
    /* buffers: write, read back, fill; sizes odd and large */
    const size_t sizes[] = {1, 4097, 3 << 20};
    for (size_t i = 0; i < 3; i++) {
        double t0 = conf_now_ms();
        unsigned char *a = malloc(sizes[i]), *b = malloc(sizes[i]);
        for (size_t j = 0; j < sizes[i]; j++) a[j] = (unsigned char)(conf_rand(c) * 127 + 128);
        clnpu_buffer *buf = NULL;
        clnpu_status st = clnpu_buffer_create(c->dev, sizes[i], &buf);
        if (!st) st = clnpu_buffer_write(buf, 0, a, sizes[i]);
        if (!st) st = clnpu_buffer_read(buf, 0, b, sizes[i]);
        char shape[32];
        snprintf(shape, sizeof shape, "%zu bytes", sizes[i]);
        conf_record(c, 0, "buffer_roundtrip", "u8", shape, 0, st ? NAN : (double)(memcmp(a, b, sizes[i]) != 0),
                    conf_now_ms() - t0, st);
        clnpu_buffer_destroy(buf);
        free(a), free(b);
    }
    /* a device-side copy, then launches chained through one queue with an event at the end */
    const uint32_t n = 100003;
    float *x = rnd(c, n, 1), *out = malloc(n * 4);
    clnpu_status st = CLNPU_OK;
    double t0 = conf_now_ms();
    clnpu_buffer *bx = buf_f32(c, x, n, &st), *by = buf_f32(c, NULL, n, &st);
    if (!st && (clEnqueueCopyBuffer(clnpu_device_cl_queue(c->dev), clnpu_buffer_cl_mem(bx), clnpu_buffer_cl_mem(by), 0,
                                    0, n * 4, 0, NULL, NULL) || clFinish(clnpu_device_cl_queue(c->dev))))
        st = CLNPU_ERR_OPENCL;
    if (!st) st = clnpu_buffer_read(by, 0, out, n * 4);
    conf_record(c, 0, "copy", "f32", "100003", 0, st ? NAN : (double)(memcmp(x, out, n * 4) != 0), conf_now_ms() - t0, st);
    clnpu_program *prog = NULL;
    cl_kernel k = NULL;
    t0 = conf_now_ms();
    if (!st) st = clnpu_program_get(c->dev, "elementwise.cl", NULL, &prog);
    if (!st) st = clnpu_program_kernel(prog, "clnpu_axpby_f32", (void **)&k);
    cl_event ev = NULL;
    const int launches = 50;
    for (int i = 0; !st && i < launches; i++) { /* y = 0.5 x + y, 50 times */
        cl_mem my = clnpu_buffer_cl_mem(by), mx = clnpu_buffer_cl_mem(bx);
        float a = 0.5f, b = 1.0f;
        size_t g = (n + 63) / 64 * 64, l = 64;
        clSetKernelArg(k, 0, sizeof my, &my), clSetKernelArg(k, 1, sizeof mx, &mx);
        clSetKernelArg(k, 2, sizeof a, &a), clSetKernelArg(k, 3, sizeof b, &b), clSetKernelArg(k, 4, sizeof n, &n);
        if (clEnqueueNDRangeKernel(clnpu_device_cl_queue(c->dev), k, 1, NULL, &g, &l, 0, NULL,
                                   i == launches - 1 ? &ev : NULL))
            st = CLNPU_ERR_OPENCL;
    }
    cl_int evst = -1;
    if (!st && (clWaitForEvents(1, &ev) ||
                clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof evst, &evst, NULL) || evst != CL_COMPLETE))
        st = CLNPU_ERR_OPENCL;
    if (ev) clReleaseEvent(ev);
    if (!st) st = clnpu_buffer_read(by, 0, out, n * 4);
    double *ref = malloc(n * sizeof *ref);
    for (uint32_t i = 0; i < n; i++) ref[i] = (double)x[i] * (1 + 0.5 * launches);
    conf_record(c, 0, "launches+events", "f32", "50 x 100003", 1e-6, st ? NAN : conf_rel(out, ref, n),
                conf_now_ms() - t0, st);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(by);
    free(x), free(out), free(ref);
}

static void case_rmsnorm(conf_ctx *c, size_t rows, size_t d, bool fused)
{
    clnpu_status st = CLNPU_OK;
    float *x = rnd(c, rows * d, 2), *h = rnd(c, rows * d, 2), *w = rnd(c, d, 1), *y = malloc(rows * d * 4);
    double *ref = malloc(rows * d * sizeof *ref);
    double t0 = conf_now_ms();
    clnpu_buffer *bx = buf_f32(c, x, rows * d, &st), *bh = buf_f32(c, h, rows * d, &st), *bw = buf_f32(c, w, d, &st),
                 *by = buf_f32(c, NULL, rows * d, &st);
    if (!st)
        st = clnpu_rmsnorm(c->dev, (clnpu_view){bx, 0, d}, (clnpu_view){fused ? bh : NULL, 0, d}, (clnpu_view){by, 0, d},
                           bw, rows, d, 1e-6f);
    if (!st) st = clnpu_buffer_read(by, 0, y, rows * d * 4);
    for (size_t r = 0; r < rows; r++) {
        double ss = 0;
        for (size_t i = 0; i < d; i++) {
            double v = x[r * d + i] + (fused ? (double)h[r * d + i] : 0);
            ss += v * v;
        }
        for (size_t i = 0; i < d; i++)
            ref[r * d + i] = w[i] * (x[r * d + i] + (fused ? (double)h[r * d + i] : 0)) / sqrt(ss / d + 1e-6);
    }
    char shape[48];
    snprintf(shape, sizeof shape, "%zux%zu%s", rows, d, fused ? " +residual" : "");
    /* one f32 sum of d squares: 2 u sqrt(d) + 5e-7 */
    conf_record(c, 1, "rmsnorm", "f32", shape, 2 * 0x1p-24 * sqrt((double)d) + 5e-7, st ? NAN : conf_rel(y, ref, rows * d),
                conf_now_ms() - t0, st);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(bh), clnpu_buffer_destroy(bw), clnpu_buffer_destroy(by);
    free(x), free(h), free(w), free(y), free(ref);
}

/* A layer's end in one launch (clnpu_rmsnorm_add_tag): h += norm(x) * w1 (post_mlp_layernorm),
 * the non-finite check (nothing flagged on finite rows), y = norm(h) * w2 (the next input norm). */
static void case_rmsnorm_layer_end(conf_ctx *c, size_t rows, size_t d)
{
    clnpu_status st = CLNPU_OK;
    float *x = rnd(c, rows * d, 1), *h = rnd(c, rows * d, 1), *w1 = rnd(c, d, 1), *w2 = rnd(c, d, 1);
    float *y = malloc(rows * d * 4), *h2 = malloc(rows * d * 4);
    for (size_t i = 0; i < rows * d; i++) h[i] += 3.0f; /* no cancellation in h + ... */
    double *ry = malloc(rows * d * sizeof *ry), *rh = malloc(rows * d * sizeof *rh);
    double t0 = conf_now_ms();
    clnpu_buffer *bx = buf_f32(c, x, rows * d, &st), *bh = buf_f32(c, h, rows * d, &st), *b1 = buf_f32(c, w1, d, &st),
                 *b2 = buf_f32(c, w2, d, &st), *by = buf_f32(c, NULL, rows * d, &st), *bf = NULL;
    const int32_t none = INT32_MAX;
    int32_t flag = 0;
    if (!st) st = clnpu_buffer_create(c->dev, 4, &bf);
    if (!st) st = clnpu_buffer_write(bf, 0, &none, 4);
    if (!st)
        st = clnpu_rmsnorm_add_tag(c->dev, (clnpu_view){bx, 0, d}, b1, (clnpu_view){bh, 0, d}, (clnpu_view){by, 0, d}, b2,
                                   rows, d, 1e-6f, 3, bf);
    if (!st) st = clnpu_buffer_read(by, 0, y, rows * d * 4);
    if (!st) st = clnpu_buffer_read(bh, 0, h2, rows * d * 4);
    if (!st) st = clnpu_buffer_read(bf, 0, &flag, 4);
    for (size_t r = 0; r < rows; r++) {
        double s1 = 0, s2 = 0;
        for (size_t i = 0; i < d; i++) s1 += (double)x[r * d + i] * x[r * d + i];
        for (size_t i = 0; i < d; i++) {
            rh[r * d + i] = h[r * d + i] + w1[i] * x[r * d + i] / sqrt(s1 / d + 1e-6);
            s2 += rh[r * d + i] * rh[r * d + i];
        }
        for (size_t i = 0; i < d; i++) ry[r * d + i] = w2[i] * rh[r * d + i] / sqrt(s2 / d + 1e-6);
    }
    char shape[48];
    snprintf(shape, sizeof shape, "%zux%zu", rows, d);
    /* two f32 sums of d squares, and h's sum feeding the second */
    const double e = st ? NAN : fmax(conf_rel(y, ry, rows * d), conf_rel(h2, rh, rows * d));
    conf_record(c, 1, "rmsnorm_layer_end", "f32", shape, 4 * 0x1p-24 * sqrt((double)d) + 1e-6,
                st ? NAN : flag != none ? 1.0 : e, conf_now_ms() - t0, st);
    clnpu_buffer *bs[] = {bx, bh, b1, b2, by, bf};
    for (size_t i = 0; i < 6; i++) clnpu_buffer_destroy(bs[i]);
    free(x), free(h), free(w1), free(w2), free(y), free(h2), free(ry), free(rh);
}

/* MLA's two low-rank norms in one launch (clnpu_rmsnorm2): q_a's rows and kv_a's c, in place. */
static void case_rmsnorm2(conf_ctx *c, size_t rows, size_t d1, size_t d2)
{
    clnpu_status st = CLNPU_OK;
    const size_t ld = d1 + d2 + 64; /* A.X K1's q_a | c | k_pe rows */
    float *x = rnd(c, rows * ld, 2), *w1 = rnd(c, d1, 1), *w2 = rnd(c, d2, 1), *y = malloc(rows * ld * 4);
    double *ref = malloc(rows * ld * sizeof *ref);
    double t0 = conf_now_ms();
    clnpu_buffer *bx = buf_f32(c, x, rows * ld, &st), *b1 = buf_f32(c, w1, d1, &st), *b2 = buf_f32(c, w2, d2, &st);
    if (!st) st = clnpu_rmsnorm2(c->dev, (clnpu_view){bx, 0, ld}, b1, d1, (clnpu_view){bx, d1, ld}, b2, d2, rows, 1e-6f);
    if (!st) st = clnpu_buffer_read(bx, 0, y, rows * ld * 4);
    for (size_t i = 0; i < rows * ld; i++) ref[i] = x[i];
    for (size_t r = 0; r < rows; r++)
        for (int side = 0; side < 2; side++) {
            const size_t o = r * ld + (side ? d1 : 0), d = side ? d2 : d1;
            const float *w = side ? w2 : w1;
            double ss = 0;
            for (size_t i = 0; i < d; i++) ss += (double)x[o + i] * x[o + i];
            for (size_t i = 0; i < d; i++) ref[o + i] = w[i] * x[o + i] / sqrt(ss / d + 1e-6);
        }
    char shape[48];
    snprintf(shape, sizeof shape, "%zux(%zu | %zu)", rows, d1, d2);
    conf_record(c, 1, "rmsnorm2", "f32", shape, 2 * 0x1p-24 * sqrt((double)d1) + 5e-7, st ? NAN : conf_rel(y, ref, rows * ld),
                conf_now_ms() - t0, st);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(b1), clnpu_buffer_destroy(b2);
    free(x), free(w1), free(w2), free(y), free(ref);
}

static void case_rope(conf_ctx *c, size_t rows, size_t heads)
{
    /* A.X K1: rope dim 64 at the end of each 192-wide q head, YaRN factor 4 from 32768 */
    clnpu_rope_config cfg = {64, 10000.0, CLNPU_ROPE_YARN, 4.0, 32768, 32, 1, 1.0, 0.0};
    const size_t hs = 192, ld = heads * hs, n = rows * ld, maxpos = 8192;
    clnpu_status st = CLNPU_OK;
    float *x = rnd(c, n, 1), *y = malloc(n * 4);
    int *pos = malloc(rows * sizeof *pos);
    for (size_t t = 0; t < rows; t++) pos[t] = (int)((conf_rand(c) + 1) * 0.5 * (maxpos - 1));
    double t0 = conf_now_ms();
    clnpu_rope_table *tab = NULL;
    clnpu_buffer *bx = buf_f32(c, x, n, &st), *bp = NULL;
    if (!st) st = clnpu_buffer_create(c->dev, rows * 4, &bp);
    if (!st) st = clnpu_buffer_write(bp, 0, pos, rows * 4);
    if (!st) st = clnpu_rope_table_create(c->dev, &cfg, maxpos, &tab);
    if (!st) st = clnpu_rope_apply(c->dev, tab, (clnpu_view){bx, 128, ld}, rows, heads, hs, bp, CLNPU_ROPE_INTERLEAVED);
    if (!st) st = clnpu_buffer_read(bx, 0, y, n * 4);
    double inv[32], af = clnpu_rope_attention_factor(&cfg), *ref = malloc(n * sizeof *ref);
    clnpu_rope_inv_freq(&cfg, inv);
    for (size_t i = 0; i < n; i++) ref[i] = x[i];
    for (size_t t = 0; t < rows; t++)
        for (size_t h = 0; h < heads; h++)
            for (size_t i = 0; i < 32; i++) {
                size_t b = t * ld + h * hs + 128 + 2 * i;
                double th = pos[t] * inv[i];
                ref[b] = af * (x[b] * cos(th) - x[b + 1] * sin(th));
                ref[b + 1] = af * (x[b + 1] * cos(th) + x[b] * sin(th));
            }
    char shape[48];
    snprintf(shape, sizeof shape, "%zu tok x %zu heads x 64", rows, heads);
    conf_record(c, 1, "rope_yarn", "f32", shape, 1e-6, st ? NAN : conf_rel(y, ref, n), conf_now_ms() - t0, st);
    /* q's heads and the one k_pe of 576-wide latent rows (at 512) in one launch */
    const size_t lat = 576, nk = rows * lat;
    float *k = rnd(c, nk, 1), *yk = malloc(nk * 4);
    double *rk = malloc(nk * sizeof *rk);
    t0 = conf_now_ms();
    clnpu_buffer *bk = buf_f32(c, k, nk, &st);
    if (!st) st = clnpu_buffer_write(bx, 0, x, n * 4);
    if (!st)
        st = clnpu_rope_apply2(c->dev, tab, (clnpu_view){bx, 128, ld}, heads, hs, (clnpu_view){bk, 512, lat}, 1, 0, rows, bp,
                               CLNPU_ROPE_INTERLEAVED);
    if (!st) st = clnpu_buffer_read(bx, 0, y, n * 4);
    if (!st) st = clnpu_buffer_read(bk, 0, yk, nk * 4);
    for (size_t i = 0; i < nk; i++) rk[i] = k[i];
    for (size_t t = 0; t < rows; t++)
        for (size_t i = 0; i < 32; i++) {
            size_t b = t * lat + 512 + 2 * i;
            double th = pos[t] * inv[i];
            rk[b] = af * (k[b] * cos(th) - k[b + 1] * sin(th));
            rk[b + 1] = af * (k[b + 1] * cos(th) + k[b] * sin(th));
        }
    snprintf(shape, sizeof shape, "%zu tok x (%zu + 1) heads x 64", rows, heads);
    conf_record(c, 1, "rope_yarn_pair", "f32", shape, 1e-6,
                st ? NAN : fmax(conf_rel(y, ref, n), conf_rel(yk, rk, nk)), conf_now_ms() - t0, st);
    clnpu_buffer_destroy(bk);
    free(k), free(yk), free(rk);
    clnpu_rope_table_destroy(tab);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(bp);
    free(x), free(y), free(pos), free(ref);
}

void conf_tier1(conf_ctx *c)
{
    case_rmsnorm(c, 5, 7168, false);
    case_rmsnorm(c, 3, 7168, true);
    case_rmsnorm(c, 7, 1536, false);
    case_rmsnorm_layer_end(c, 5, 7168);
    case_rmsnorm2(c, 7, 1536, 512);
    case_rope(c, 7, 64);
    /* silu(g) * u at the expert width, softmax over a vocabulary-sized row */
    clnpu_status st = CLNPU_OK;
    const size_t rows = 9, n = 2048;
    float *g = rnd(c, rows * n, 6), *u = rnd(c, rows * n, 2), *y = malloc(rows * n * 4);
    double *ref = malloc(rows * n * sizeof *ref);
    double t0 = conf_now_ms();
    clnpu_buffer *bg = buf_f32(c, g, rows * n, &st), *bu = buf_f32(c, u, rows * n, &st), *by = buf_f32(c, NULL, rows * n, &st);
    if (!st) st = clnpu_silu_mul(c->dev, (clnpu_view){by, 0, n}, (clnpu_view){bg, 0, n}, (clnpu_view){bu, 0, n}, rows, n);
    if (!st) st = clnpu_buffer_read(by, 0, y, rows * n * 4);
    for (size_t i = 0; i < rows * n; i++) ref[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
    conf_record(c, 1, "silu_mul", "f32", "9x2048", 1e-6, st ? NAN : conf_rel(y, ref, rows * n), conf_now_ms() - t0, st);
    clnpu_buffer_destroy(bg), clnpu_buffer_destroy(bu), clnpu_buffer_destroy(by);
    free(g), free(u), free(y), free(ref);

    const size_t V = 163840;
    float *l = rnd(c, V, 12), *p = malloc(V * 4);
    double *pr = malloc(V * sizeof *pr), m = -INFINITY, s = 0;
    st = CLNPU_OK;
    t0 = conf_now_ms();
    clnpu_buffer *bl = buf_f32(c, l, V, &st), *bi = NULL;
    if (!st) st = clnpu_softmax(c->dev, (clnpu_view){bl, 0, V}, 1, V);
    if (!st) st = clnpu_buffer_read(bl, 0, p, V * 4);
    for (size_t i = 0; i < V; i++) m = fmax(m, l[i]);
    for (size_t i = 0; i < V; i++) s += exp(l[i] - m);
    for (size_t i = 0; i < V; i++) pr[i] = exp(l[i] - m) / s;
    conf_record(c, 1, "softmax", "f32", "1x163840", 2 * 0x1p-24 * sqrt((double)V) + 4e-7, st ? NAN : conf_rel(p, pr, V),
                conf_now_ms() - t0, st);
    /* sampling: greedy equals argmax; a seed reproduces its draw; the draw is in the top-k */
    st = CLNPU_OK;
    t0 = conf_now_ms();
    if (!st) st = clnpu_buffer_write(bl, 0, l, V * 4);
    if (!st) st = clnpu_buffer_create(c->dev, 4, &bi);
    int got[3] = {-1, -2, -3};
    size_t best = 0;
    for (size_t i = 1; i < V; i++)
        if (l[i] > l[best]) best = i;
    clnpu_sampling greedy = {0, 0, 1, 1}, topk = {0.8f, 20, 0.9f, 42};
    if (!st) st = clnpu_sample(c->dev, bi, (clnpu_view){bl, 0, V}, 1, V, &greedy, 0);
    if (!st) st = clnpu_buffer_read(bi, 0, &got[0], 4);
    if (!st) st = clnpu_sample(c->dev, bi, (clnpu_view){bl, 0, V}, 1, V, &topk, 7);
    if (!st) st = clnpu_buffer_read(bi, 0, &got[1], 4);
    if (!st) st = clnpu_sample(c->dev, bi, (clnpu_view){bl, 0, V}, 1, V, &topk, 7);
    if (!st) st = clnpu_buffer_read(bi, 0, &got[2], 4);
    size_t rank = 0;
    for (size_t i = 0; !st && got[1] >= 0 && i < V; i++) rank += l[i] > l[got[1]];
    double bad = (got[0] != (int)best) + (got[1] != got[2]) + (rank >= 20);
    conf_record(c, 1, "sample", "f32", "1x163840 greedy/top-k/top-p", 0, st ? NAN : bad, conf_now_ms() - t0, st);
    clnpu_buffer_destroy(bl), clnpu_buffer_destroy(bi);
    free(l), free(p), free(pr);
}
