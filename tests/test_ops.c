/* Transformer operators against float64 host references on fresh random inputs with ragged
 * sizes; outputs poisoned with NaN first. Tolerances (relative L2 error) per kernel:
 *  - rope, silu: elementwise f32: 1e-6; softmax: one f32 sum of n terms: 2 u sqrt(n) + 4e-7;
 *  - rmsnorm: one f32 sum of d squares: 2 u sqrt(d) + 5e-7 (u = 2^-24);
 *  - attention / MLA: scores are dot products of up to 576 terms, softmax and a weighted sum
 *    over up to ~1300 keys, all fp32: 2e-6 * sqrt(keys) + 1e-6 (a few u * sqrt(n));
 *  - MoE combine: k weighted terms: 1e-6; routing ids must match exactly;
 *  - MoE block: three chained f32 GEMMs (K <= 96) and a weighted sum: 1e-5. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../runtime/latent_cache.h"
#include "../runtime/launch.h"
#include "../runtime/rope_table.h"
#include "test_util.h"

static clnpu_buffer *dev_f32(const float *v, size_t n)
{
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(test_device(), (n ? n : 1) * sizeof(float), &b));
    if (n) ck_assert_ok(clnpu_buffer_write(b, 0, v, n * sizeof(float)));
    return b;
}

static clnpu_buffer *dev_i32(const int *v, size_t n)
{
    return dev_f32((const float *)v, n);
}

static clnpu_buffer *dev_nan(size_t n)
{
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(test_device(), n * sizeof(float), &b));
    float nan = NAN;
    ck_assert_ok(clnpu_buffer_fill(b, &nan, sizeof nan));
    return b;
}

static float *read_f32(clnpu_buffer *b, size_t n)
{
    float *v = malloc(n * sizeof *v);
    ck_assert_ok(clnpu_buffer_read(b, 0, v, n * sizeof(float)));
    return v;
}

static double rel_err(const float *out, const double *ref, size_t n, const char *what)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(!isnan(out[i]), "%s: NaN at %zu", what, i);
        num += (out[i] - ref[i]) * (out[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

#define CHECK_ERR(out, ref, n, tol, ...)                                                           \
    do {                                                                                           \
        char what_[160];                                                                           \
        snprintf(what_, sizeof what_, __VA_ARGS__);                                                \
        double e_ = rel_err(out, ref, n, what_);                                                   \
        if (getenv("CLNPU_TEST_VERBOSE")) fprintf(stderr, "%s: rel error %.2e\n", what_, e_);     \
        ck_assert_msg(e_ <= (tol), "%s: rel error %.3g > %.3g", what_, e_, (double)(tol));        \
    } while (0)

START_TEST(test_rmsnorm)
{
    clnpu_device *dev = test_device();
    const size_t dims[] = {1, 5, 96, 1000, 7168}, rowss[] = {1, 3, 17};
    for (size_t di = 0; di < 5; di++)
        for (size_t ri = 0; ri < 3; ri++)
            for (int fused = 0; fused < 2; fused++) {
                const size_t d = dims[di], rows = rowss[ri], ld = d + 3;
                float *x = test_rand_array(rows * ld, -2, 2), *h = test_rand_array(rows * ld, -2, 2), *w = test_rand_array(d, 0.5f, 1.5f);
                clnpu_buffer *bx = dev_f32(x, rows * ld), *bh = dev_f32(h, rows * ld),
                             *bw = dev_f32(w, d), *by = dev_nan(rows * d);
                clnpu_view vx = {bx, 0, ld}, vh = {fused ? bh : NULL, 0, ld}, vy = {by, 0, d};
                ck_assert_ok(clnpu_rmsnorm(dev, vx, vh, vy, bw, rows, d, 1e-6f));
                float *y = read_f32(by, rows * d), *h2 = read_f32(bh, rows * ld);
                double *ref = malloc(rows * d * sizeof *ref), *href = malloc(rows * d * sizeof *href);
                float *h2c = malloc(rows * d * sizeof *h2c);
                for (size_t r = 0; r < rows; r++) {
                    double ss = 0;
                    for (size_t i = 0; i < d; i++) {
                        double v = fused ? (double)h[r * ld + i] + x[r * ld + i] : x[r * ld + i];
                        href[r * d + i] = v;
                        h2c[r * d + i] = h2[r * ld + i];
                        ss += v * v;
                    }
                    double inv = 1 / sqrt(ss / d + 1e-6);
                    for (size_t i = 0; i < d; i++) ref[r * d + i] = w[i] * href[r * d + i] * inv;
                }
                /* one f32 reduction of d squares: u sqrt(d) scale, plus the normalisation */
                CHECK_ERR(y, ref, rows * d, 2 * 0x1p-24 * sqrt((double)d) + 5e-7, "rmsnorm d=%zu rows=%zu fused=%d", d, rows, fused);
                if (fused) CHECK_ERR(h2c, href, rows * d, 1e-7, "fused residual sum d=%zu", d);
                free(x), free(h), free(w), free(y), free(h2), free(ref), free(href), free(h2c);
                clnpu_buffer_destroy(bx), clnpu_buffer_destroy(bh), clnpu_buffer_destroy(bw);
                clnpu_buffer_destroy(by);
            }
}
END_TEST

/* The fused end of a layer (add, check, next norm) and the paired norms of q_a / kv_a:
 * tests/test_util.c, shared with the wg suite. */
START_TEST(test_rmsnorm_add_tag)
{
    test_check_rmsnorm_add_tag(test_device());
    test_check_rmsnorm2(test_device());
}
END_TEST

START_TEST(test_elementwise)
{
    clnpu_device *dev = test_device();
    const size_t rows = 5, n = 1003;
    /* silu(g) * u */
    float *g = test_rand_array(rows * n, -6, 6), *u = test_rand_array(rows * n, -2, 2);
    clnpu_buffer *bg = dev_f32(g, rows * n), *bu = dev_f32(u, rows * n), *by = dev_nan(rows * n);
    ck_assert_ok(clnpu_silu_mul(dev, (clnpu_view){by, 0, n}, (clnpu_view){bg, 0, n}, (clnpu_view){bu, 0, n}, rows, n));
    float *y = read_f32(by, rows * n);
    double *ref = malloc(rows * n * sizeof *ref);
    for (size_t i = 0; i < rows * n; i++) ref[i] = g[i] / (1 + exp(-(double)g[i])) * u[i];
    CHECK_ERR(y, ref, rows * n, 1e-6, "silu_mul");
    free(y);
    /* softmax in place, argmax with ties at the lowest index */
    float *x = test_rand_array(rows * n, -20, 20);
    x[2 * n + 10] = x[2 * n + 500] = 25.0f; /* a tie in row 2 */
    clnpu_buffer *bx = dev_f32(x, rows * n), *bi;
    ck_assert_ok(clnpu_buffer_create(dev, rows * 4, &bi));
    ck_assert_ok(clnpu_argmax(dev, bi, (clnpu_view){bx, 0, n}, rows, n));
    int am[5];
    ck_assert_ok(clnpu_buffer_read(bi, 0, am, sizeof am));
    for (size_t r = 0; r < rows; r++) {
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (x[r * n + i] > x[r * n + best]) best = i;
        ck_assert_int_eq(am[r], (int)best);
    }
    ck_assert_int_eq(am[2], 10);
    ck_assert_ok(clnpu_softmax(dev, (clnpu_view){bx, 0, n}, rows, n));
    y = read_f32(bx, rows * n);
    for (size_t r = 0; r < rows; r++) {
        double m = -INFINITY, s = 0;
        for (size_t i = 0; i < n; i++) m = fmax(m, x[r * n + i]);
        for (size_t i = 0; i < n; i++) s += exp(x[r * n + i] - m);
        for (size_t i = 0; i < n; i++) ref[r * n + i] = exp(x[r * n + i] - m) / s;
    }
    /* the row sum's rounding scales every output: 2 u sqrt(n), plus exp's few ulp */
    CHECK_ERR(y, ref, rows * n, 2 * 0x1p-24 * sqrt((double)n) + 4e-7, "softmax");
    free(y);
    /* bf16 embedding rows widened exactly; an id outside the table gives NaN */
    const size_t vocab = 37, dim = 70;
    uint16_t *tab = malloc(vocab * dim * 2);
    for (size_t i = 0; i < vocab * dim; i++) tab[i] = clnpu_f32_to_bf16(test_rand_normal());
    int ids[4] = {36, 0, 17, 37};
    clnpu_buffer *bt, *bid = dev_i32(ids, 4), *be = dev_nan(4 * dim);
    ck_assert_ok(clnpu_buffer_create(dev, vocab * dim * 2, &bt));
    ck_assert_ok(clnpu_buffer_write(bt, 0, tab, vocab * dim * 2));
    ck_assert_ok(clnpu_embed(dev, be, bt, CLNPU_DTYPE_BF16, bid, 4, dim, vocab));
    y = read_f32(be, 4 * dim);
    for (size_t t = 0; t < 3; t++)
        for (size_t i = 0; i < dim; i++)
            ck_assert_msg(y[t * dim + i] == clnpu_bf16_to_f32(tab[ids[t] * dim + i]), "embed [%zu,%zu]", t, i);
    for (size_t i = 0; i < dim; i++) ck_assert(isnan(y[3 * dim + i]));
    free(y);
    /* a tensor-parallel slice, rows [10, 20) of the table: other ids zeros, 37 still NaN */
    clnpu_buffer *bs;
    ck_assert_ok(clnpu_buffer_create(dev, 10 * dim * 2, &bs));
    ck_assert_ok(clnpu_buffer_write(bs, 0, tab + 10 * dim, 10 * dim * 2));
    ids[0] = 19, ids[1] = 10, ids[2] = 20;
    ck_assert_ok(clnpu_buffer_write(bid, 0, ids, sizeof ids));
    const float nan = NAN;
    ck_assert_ok(clnpu_buffer_fill(be, &nan, sizeof nan));
    ck_assert_ok(clnpu_embed_rows(dev, be, bs, CLNPU_DTYPE_BF16, bid, 4, dim, 10, 10, vocab));
    y = read_f32(be, 4 * dim);
    for (size_t i = 0; i < dim; i++) {
        ck_assert(y[i] == clnpu_bf16_to_f32(tab[19 * dim + i]) && y[dim + i] == clnpu_bf16_to_f32(tab[10 * dim + i]));
        ck_assert(y[2 * dim + i] == 0.0f && isnan(y[3 * dim + i]));
    }
    ck_assert_int_eq(clnpu_embed_rows(dev, be, bs, CLNPU_DTYPE_BF16, bid, 4, dim, 30, 10, vocab), CLNPU_ERR_INVALID_ARGUMENT);
    clnpu_buffer_destroy(bs);
    free(y), free(tab), free(g), free(u), free(x), free(ref);
    clnpu_buffer_destroy(bg), clnpu_buffer_destroy(bu), clnpu_buffer_destroy(by), clnpu_buffer_destroy(bx);
    clnpu_buffer_destroy(bi), clnpu_buffer_destroy(bt), clnpu_buffer_destroy(bid), clnpu_buffer_destroy(be);
}
END_TEST

static clnpu_rope_config axk1_rope(void)
{
    clnpu_rope_config c = {64, 10000.0, CLNPU_ROPE_YARN, 4.0, 32768, 32, 1, 1.0, 0.0};
    return c;
}

/* The check values of ../shared/docs/axk1-architecture.md 2.4.3 and 1.2. */
START_TEST(test_rope_yarn_values)
{
    clnpu_rope_config c = axk1_rope();
    double inv[32];
    clnpu_rope_inv_freq(&c, inv);
    for (int i = 0; i < 32; i++) {
        double base = pow(10000.0, -2.0 * i / 64);
        double ramp = (i - 17.0) / (30.0 - 17.0);
        ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
        double want = ramp * base / 4 + (1 - ramp) * base;
        ck_assert_msg(fabs(inv[i] - want) <= 1e-15 * want, "inv_freq[%d] = %.17g, want %.17g", i, inv[i], want);
        if (i <= 17) ck_assert(inv[i] == base);
        if (i >= 30) ck_assert(fabs(inv[i] - base / 4) <= 1e-18);
    }
    ck_assert(fabs(clnpu_rope_attention_factor(&c) - 1.1386294361) < 1e-9);
    ck_assert(fabs(clnpu_rope_softmax_scale(&c, 192) - 0.0721687836) < 1e-9);
    /* DeepSeek-V3 branch: mscale = mscale_all_dim = 1, factor 40: cos/sin unscaled, softmax
     * scale x g(40,1)^2. */
    clnpu_rope_config d = {64, 10000.0, CLNPU_ROPE_YARN, 40.0, 4096, 32, 1, 1.0, 1.0};
    ck_assert(fabs(clnpu_rope_attention_factor(&d) - 1.0) < 1e-15);
    double g = 0.1 * log(40.0) + 1;
    ck_assert(fabs(clnpu_rope_softmax_scale(&d, 192) - g * g / sqrt(192.0)) < 1e-12);
    /* Plain RoPE */
    clnpu_rope_config p = {64, 10000.0, CLNPU_ROPE_NONE, 0, 0, 0, 0, 0, 0};
    clnpu_rope_inv_freq(&p, inv);
    ck_assert(inv[0] == 1.0 && fabs(inv[31] - pow(10000.0, -62.0 / 64)) < 1e-18);
    ck_assert(clnpu_rope_attention_factor(&p) == 1.0);
}
END_TEST

/* (clnpu_rope_apply2: tests/test_util.c, shared with the wg suite) */
START_TEST(test_rope_apply)
{
    clnpu_device *dev = test_device();
    clnpu_rope_config cfgs[2] = {axk1_rope(), {16, 500000.0, CLNPU_ROPE_NONE, 0, 0, 0, 0, 0, 0}};
    for (int ci = 0; ci < 2; ci++)
        for (int layout = 0; layout < 2; layout++) {
            const clnpu_rope_config *c = &cfgs[ci];
            const size_t rows = 13, heads = 3, d = c->dim, hs = d + 40, ld = heads * hs + 5, off = 40;
            const size_t maxpos = 5000;
            clnpu_rope_table *tab;
            ck_assert_ok(clnpu_rope_table_create(dev, c, maxpos, &tab));
            float *x = test_rand_array(rows * ld + off, -1, 1);
            int pos[13];
            for (size_t t = 0; t < rows; t++) pos[t] = (int)(test_rand_u64() % maxpos);
            pos[0] = 0;
            pos[1] = (int)maxpos - 1;
            clnpu_buffer *bx = dev_f32(x, rows * ld + off), *bp = dev_i32(pos, rows);
            ck_assert_ok(clnpu_rope_apply(dev, tab, (clnpu_view){bx, off, ld}, rows, heads, hs, bp,
                                          (clnpu_rope_layout)layout));
            float *y = read_f32(bx, rows * ld + off);
            double inv[32], af = clnpu_rope_attention_factor(c);
            clnpu_rope_inv_freq(c, inv);
            double *ref = malloc((rows * ld + off) * sizeof *ref);
            for (size_t i = 0; i < rows * ld + off; i++) ref[i] = x[i];
            for (size_t t = 0; t < rows; t++)
                for (size_t h = 0; h < heads; h++)
                    for (size_t i = 0; i < d / 2; i++) {
                        size_t base = off + t * ld + h * hs;
                        size_t a = layout ? i : 2 * i, b = layout ? i + d / 2 : 2 * i + 1;
                        double th = pos[t] * inv[i], x0 = x[base + a], x1 = x[base + b];
                        ref[base + a] = af * (x0 * cos(th) - x1 * sin(th));
                        ref[base + b] = af * (x1 * cos(th) + x0 * sin(th));
                    }
            CHECK_ERR(y, ref, rows * ld + off, 1e-6, "rope cfg %d layout %d", ci, layout);
            if (layout == 0) test_check_rope2(dev, c); /* two tensors in one launch, both layouts */
            free(x), free(y), free(ref);
            clnpu_buffer_destroy(bx), clnpu_buffer_destroy(bp);
            clnpu_rope_table_destroy(tab);
        }
}
END_TEST

/* Causal attention reference: query t at position P + t over keys 0..P+t. */
static void attention_ref(const float *q, const float *k, const float *v, double *o, size_t T, size_t P,
                          size_t H, size_t dqk, size_t dv, double scale)
{
    const size_t S = P + T;
    double *s = malloc(S * sizeof *s);
    for (size_t t = 0; t < T; t++)
        for (size_t h = 0; h < H; h++) {
            size_t lim = P + t + 1;
            double m = -INFINITY, z = 0;
            for (size_t j = 0; j < lim; j++) {
                double acc = 0;
                for (size_t d = 0; d < dqk; d++) acc += (double)q[(t * H + h) * dqk + d] * k[(j * H + h) * dqk + d];
                s[j] = acc * scale;
                m = fmax(m, s[j]);
            }
            for (size_t j = 0; j < lim; j++) z += (s[j] = exp(s[j] - m));
            for (size_t d = 0; d < dv; d++) {
                double acc = 0;
                for (size_t j = 0; j < lim; j++) acc += s[j] * v[(j * H + h) * dv + d];
                o[(t * H + h) * dv + d] = acc / z;
            }
        }
    free(s);
}

START_TEST(test_flash_attention)
{
    clnpu_device *dev = test_device();
    const size_t Ts[] = {1, 7, 64, 129, 1000};
    const size_t dims[][3] = {{192, 128, 2}, {64, 64, 3}, {20, 12, 5}}; /* dqk, dv, heads */
    /* both kernels: local-memory tiles (GPUs, NPUs) and register blocks (CPUs) */
    static const char *const variant[] = {"local", "registers"};
    for (int vi = 0; vi < 2; vi++) {
    setenv("CLNPU_ATTENTION", variant[vi], 1);
    ck_assert(clnpu_attention_uses_registers(dev) == (vi == 1));
    for (size_t ti = 0; ti < 5; ti++)
        for (size_t di = 0; di < 3; di++)
            for (int withp = 0; withp < 2; withp++) {
                const size_t T = Ts[ti], dqk = dims[di][0], dv = dims[di][1], H = dims[di][2];
                if (T == 1000 && di != 0) continue; /* the long case once, with A.X K1 dims */
                const size_t P = withp ? 1 + test_rand_u64() % 300 : 0, S = P + T;
                float *q = test_rand_array(T * H * dqk, -1, 1), *k = test_rand_array(S * H * dqk, -1, 1), *v = test_rand_array(S * H * dv, -1, 1);
                clnpu_buffer *bq = dev_f32(q, T * H * dqk), *bk = dev_f32(k, S * H * dqk),
                             *bv = dev_f32(v, S * H * dv), *bo = dev_nan(T * H * dv);
                const float scale = 1.0f / sqrtf((float)dqk) * 2.0f; /* sharper than default */
                clnpu_attention_args a = {
                    .q = {bq, 0, H * dqk}, .k = {bk, 0, H * dqk}, .v = {bv, 0, H * dv}, .o = {bo, 0, H * dv},
                    .q_head_stride = dqk, .k_head_stride = dqk, .v_head_stride = dv, .o_head_stride = dv,
                    .heads = H, .dqk = dqk, .dv = dv, .tokens = T, .prefix = P, .scale = scale};
                ck_assert_ok(clnpu_flash_attention(dev, &a));
                float *o = read_f32(bo, T * H * dv);
                double *ref = malloc(T * H * dv * sizeof *ref);
                attention_ref(q, k, v, ref, T, P, H, dqk, dv, scale);
                CHECK_ERR(o, ref, T * H * dv, 2e-6 * sqrt((double)S) + 1e-6,
                          "%s attention T=%zu P=%zu H=%zu dqk=%zu dv=%zu", variant[vi], T, P, H, dqk, dv);
                free(q), free(k), free(v), free(o), free(ref);
                clnpu_buffer_destroy(bq), clnpu_buffer_destroy(bk), clnpu_buffer_destroy(bv);
                clnpu_buffer_destroy(bo);
            }
    }
    unsetenv("CLNPU_ATTENTION");
}
END_TEST

START_TEST(test_mla_decode)
{
    clnpu_device *dev = test_device();
    const size_t shapes[][3] = {{32, 8, 5}, {512, 64, 4}, {160, 16, 3}}; /* R, DR, H (160: a last tile of 32) */
    for (size_t si = 0; si < 3; si++)
        for (unsigned fi = 0; fi < 5; fi++) {
            /* splits: chosen, forced to 7 (merge pass), forced to 1 (the kernel writes out); then
             * a bf16 and an fp8 cache (the reference reads the values the cache holds) */
            const unsigned forced = fi == 0 || fi >= 3 ? 0 : fi == 1 ? 7 : 1;
            const clnpu_dtype cdt = fi == 3 ? CLNPU_DTYPE_BF16 : fi == 4 ? CLNPU_DTYPE_FP8_E4M3 : CLNPU_DTYPE_F32;
            const size_t R = shapes[si][0], DR = shapes[si][1], H = shapes[si][2], B = 3, page = 16;
            const int lens[3] = {1, 37, 1300};
            const size_t maxlen = 1300, max_blocks = (maxlen + page - 1) / page, npages = B * max_blocks;
            /* Pages handed out in a shuffled order, as a real allocator would. */
            int *perm = malloc(npages * sizeof *perm), *bt = malloc(B * max_blocks * sizeof *bt);
            for (size_t i = 0; i < npages; i++) perm[i] = (int)i;
            for (size_t i = npages - 1; i > 0; i--) {
                size_t j = test_rand_u64() % (i + 1);
                int tmp = perm[i];
                perm[i] = perm[j], perm[j] = tmp;
            }
            for (size_t i = 0; i < B * max_blocks; i++) bt[i] = perm[i];
            float *cache = test_rand_array(npages * page * (R + DR), -1, 1), *qa = test_rand_array(B * H * R, -1, 1),
                  *qp = test_rand_array(B * H * DR, -1, 1);
            /* fp8: each 16 latent values of a row at their own magnitude (x 1/4 .. 2), so the
             * tiles' scales differ */
            for (size_t i = 0; cdt == CLNPU_DTYPE_FP8_E4M3 && i < npages * page * (R + DR); i += 16)
                for (size_t j = 0, k = test_rand_u64() % 4; j < 16 && i % (R + DR) < R; j++) cache[i + j] *= 0.25f * (float)(1 << k);
            size_t nbytes;
            void *enc = test_latent_cache_encode(cdt, R, DR, npages * page, cache, &nbytes);
            clnpu_buffer *bc = NULL;
            ck_assert_ok(clnpu_buffer_create(dev, nbytes, &bc));
            ck_assert_ok(clnpu_buffer_write(bc, 0, enc, nbytes));
            free(enc);
            clnpu_buffer *bqa = dev_f32(qa, B * H * R),
                         *bqp = dev_f32(qp, B * H * DR), *bbt = dev_i32(bt, B * max_blocks),
                         *bl = dev_i32(lens, B), *bo = dev_nan(B * H * R);
            const float scale = 0.15f;
            clnpu_mla_decode_args a = {bqa, bqp, bc, page, bbt, max_blocks, bl, maxlen, B, H, R, DR,
                                       scale, bo, forced, 0, 0, cdt, NULL, CLNPU_ROPE_INTERLEAVED};
            ck_assert_ok(clnpu_mla_decode(dev, &a));
            float *o = read_f32(bo, B * H * R);
            double *ref = malloc(B * H * R * sizeof *ref), *s = malloc(maxlen * sizeof *s);
            for (size_t b = 0; b < B; b++)
                for (size_t h = 0; h < H; h++) {
                    double m = -INFINITY, z = 0;
                    for (int t = 0; t < lens[b]; t++) {
                        const float *row = cache + ((size_t)bt[b * max_blocks + t / page] * page + t % page) * (R + DR);
                        double acc = 0;
                        for (size_t d = 0; d < R; d++) acc += (double)qa[(b * H + h) * R + d] * row[d];
                        for (size_t d = 0; d < DR; d++) acc += (double)qp[(b * H + h) * DR + d] * row[R + d];
                        s[t] = acc * scale;
                        m = fmax(m, s[t]);
                    }
                    for (int t = 0; t < lens[b]; t++) z += (s[t] = exp(s[t] - m));
                    for (size_t d = 0; d < R; d++) {
                        double acc = 0;
                        for (int t = 0; t < lens[b]; t++)
                            acc += s[t] * cache[((size_t)bt[b * max_blocks + t / page] * page + t % page) * (R + DR) + d];
                        ref[(b * H + h) * R + d] = acc / z;
                    }
                }
            CHECK_ERR(o, ref, B * H * R, 2e-6 * sqrt((double)maxlen) + 1e-6, "mla R=%zu H=%zu splits=%u (0: chosen), %s cache",
                      R, H, forced, clnpu_dtype_name(cdt));
            if (fi == 0 || fi == 4) test_check_mla_rope_on_load(dev, a, lens); /* q_pe rotated as it is read */
            free(perm), free(bt), free(cache), free(qa), free(qp), free(o), free(ref), free(s);
            clnpu_buffer_destroy(bc), clnpu_buffer_destroy(bqa), clnpu_buffer_destroy(bqp);
            clnpu_buffer_destroy(bbt), clnpu_buffer_destroy(bl), clnpu_buffer_destroy(bo);
        }
}
END_TEST

/* The latent cache's append and gather kernels (kernels-cl/clnpu_cache.h) for every cache type:
 * rows at shuffled pages and positions, each row's bytes equal the tests' own encoding of the
 * layout (bit for bit: fp8 codes, power-of-two scales, bf16 k_pe), rows not appended keep their
 * poison, and the gather returns exactly the values the cache holds. The rows have ragged
 * magnitudes per tile (10^-4 .. 10^3), an all-zero tile, a value in the e4m3 subnormal range of
 * its tile, rounding ties, and a NaN that must stay NaN. */
START_TEST(test_latent_cache_append_gather)
{
    clnpu_device *dev = test_device();
    const size_t shapes[][2] = {{32, 8}, {160, 16}, {512, 64}};
    const clnpu_dtype types[] = {CLNPU_DTYPE_F32, CLNPU_DTYPE_BF16, CLNPU_DTYPE_FP8_E4M3};
    for (size_t si = 0; si < 3; si++)
        for (size_t ti = 0; ti < 3; ti++) {
            const size_t R = shapes[si][0], DR = shapes[si][1], lat = R + DR, page = 8, mb = 6, S = 2;
            const size_t T = 37, lds = lat + 3; /* sequence 1's positions 0 .. 36; rows of src padded */
            const clnpu_dtype dt = types[ti];
            const size_t rb = clnpu_latent_cache_row_bytes(dt, R, DR), npages = S * mb, nrows = npages * page;
            ck_assert_uint_eq(rb, dt == CLNPU_DTYPE_FP8_E4M3 ? R + 4 * ((R + 127) / 128) + 2 * DR
                                                             : lat * (dt == CLNPU_DTYPE_BF16 ? 2 : 4));
            int bt[2 * 6], seq[37], pos[37];
            for (size_t i = 0; i < npages; i++) bt[i] = (int)((i * 5 + 7) % npages); /* a permutation */
            float *src = malloc(T * lds * sizeof *src), *want = malloc(T * lat * sizeof *want);
            for (size_t t = 0; t < T; t++) {
                seq[t] = 1, pos[t] = (int)((t * 11 + 3) % T); /* every position once, out of order */
                for (size_t d = 0; d < lds; d++) {
                    const float mag = d < R ? powf(10.0f, (float)((d / 16 + t) % 8) - 4.0f) : 1.0f;
                    src[t * lds + d] = d < lat ? test_rand_normal() * mag : NAN; /* padding never read */
                }
            }
            float *r0 = src + 0 * lds, *r1 = src + 1 * lds;
            for (size_t d = 0; d < 16; d++) r0[d] = 0.0f; /* a zero run (a zero tile when R = 32 below) */
            for (size_t d = 0; d < R && R == 32; d++) r0[d] = 0.0f;
            /* ties in tile 0 of row 1 (its max 448 gives scale 1): 1.0625 -> 1, 1.1875 -> 1.25, 17 -> 16,
             * 1.5 * 2^-9 -> 2^-8, 2^-10 -> 0; and an element 2^-20 of the max (fp8 zero) */
            const float ties[] = {448.0f, 1.0625f, -1.1875f, 17.0f, 0x1.8p-9f, 0x1p-10f, 448.0f * 0x1p-20f};
            for (size_t d = 0; d < R && d < 128; d++) r1[d] = d < 7 ? ties[d] : 0.01f * test_rand_normal();
            src[5 * lds + 3] = NAN;
            for (size_t t = 0; t < T; t++) memcpy(want + (size_t)pos[t] * lat, src + t * lds, lat * sizeof *want);
            size_t eb;
            uint8_t *enc = test_latent_cache_encode(dt, R, DR, T, want, &eb); /* rows by position */
            /* src at an offset of 5 floats (NaN: never read), as the fused q_a | kv_a output holds it */
            clnpu_buffer *bc, *bsrc = dev_nan(5 + T * lds), *bbt = dev_i32(bt, npages), *bs = dev_i32(seq, T),
                              *bp = dev_i32(pos, T), *bd = dev_nan((T + 1) * lat);
            ck_assert_ok(clnpu_buffer_create(dev, nrows * rb, &bc));
            const uint8_t poison = 0xa5;
            ck_assert_ok(clnpu_buffer_fill(bc, &poison, 1));
            char opts[128];
            snprintf(opts, sizeof opts, "-DCLNPU_MLA_R=%zu -DCLNPU_MLA_DR=%zu%s", R, DR, clnpu_latent_cache_define(dt));
            cl_mem c = clnpu_mem(bc), b = clnpu_mem(bbt), sm = clnpu_mem(bsrc), sq = clnpu_mem(bs), ps = clnpu_mem(bp),
                   dm = clnpu_mem(bd);
            ck_assert_ok(clnpu_buffer_write(bsrc, 5 * sizeof(float), src, T * lds * sizeof(float)));
            cl_uint pg = (cl_uint)page, m = (cl_uint)mb, ld = (cl_uint)lds, s1 = 1, so = 5;
            cl_mem notab = NULL;
            cl_uint np = 0, hs = 0;
            clnpu_karg aa[] = {KARG(c), KARG(pg), KARG(b), KARG(m), KARG(sm), KARG(so), KARG(ld), KARG(sq), KARG(ps),
                               KARG(notab), KARG(np), KARG(hs)};
            size_t l[2] = {clnpu_lanes(dev), 1}, g[2] = {l[0], T};
            ck_assert_ok(clnpu_launch(dev, "mla.cl", opts, "clnpu_kv_append", 2, g, l, aa, 12));
            clnpu_karg ga[] = {KARG(dm), KARG(c), KARG(pg), KARG(b), KARG(m), KARG(s1)};
            ck_assert_ok(clnpu_launch(dev, "mla.cl", opts, "clnpu_kv_gather", 2, g, l, ga, 6));
            uint8_t *got = malloc(nrows * rb);
            float *gath = read_f32(bd, (T + 1) * lat);
            ck_assert_ok(clnpu_buffer_read(bc, 0, got, nrows * rb));
            size_t untouched = 0;
            for (size_t r = 0; r < nrows; r++) {
                const size_t p = r / page, slot = r % page; /* page p, slot: sequence 1's position? */
                long at = -1;
                for (size_t k = 0; k < mb; k++)
                    if ((size_t)bt[mb + k] == p && k * page + slot < T) at = (long)(k * page + slot);
                if (at < 0) {
                    for (size_t i = 0; i < rb; i++) ck_assert_msg(got[r * rb + i] == poison, "row %zu written", r);
                    untouched++;
                    continue;
                }
                const uint8_t *w = enc + (size_t)at * rb, *o = got + r * rb;
                for (size_t i = 0; i < rb; i++)
                    ck_assert_msg(o[i] == w[i], "%s R=%zu: position %ld byte %zu is 0x%02x, the layout says 0x%02x", clnpu_dtype_name(dt), R,
                                  at, i, o[i], w[i]);
            }
            ck_assert_uint_eq(untouched, nrows - T);
            for (size_t i = 0; i < T * lat; i++)
                ck_assert_msg(gath[i] == want[i] || (isnan(gath[i]) && isnan(want[i])), "%s R=%zu gather [%zu][%zu]: %g, cached %g",
                              clnpu_dtype_name(dt), R, i / lat, i % lat, gath[i], want[i]);
            ck_assert(isnan(gath[(size_t)pos[5] * lat + 3])); /* NaN stays NaN (the model's check sees it) */
            for (size_t i = T * lat; i < (T + 1) * lat; i++) ck_assert(isnan(gath[i])); /* nothing past the length */
            if (dt == CLNPU_DTYPE_FP8_E4M3) {
                const float *w1 = want + (size_t)pos[1] * lat;
                const float rounded[] = {448.0f, 1.0f, -1.25f, 16.0f, 0x1p-8f, 0.0f, 0.0f};
                for (size_t d = 0; d < 7; d++) ck_assert_msg(w1[d] == rounded[d], "tie %zu: %g", d, w1[d]);
            }
            /* k_pe rotated by the append (a rope table: the decode step's RoPE launch saved), both
             * layouts: the cache bytes equal those of the rows rotated first by clnpu_rope_apply
             * and appended without one (the same rotation, bit for bit) */
            const clnpu_rope_config rc = {DR, 10000.0, CLNPU_ROPE_NONE, 0, 0, 0, 0, 0, 0};
            clnpu_rope_table *tab;
            ck_assert_ok(clnpu_rope_table_create(dev, &rc, T, &tab));
            uint8_t *rot = malloc(nrows * rb);
            for (cl_uint hs = 0; hs < 2; hs++) {
                ck_assert_ok(clnpu_buffer_fill(bc, &poison, 1));
                ck_assert_ok(clnpu_buffer_write(bsrc, 5 * sizeof(float), src, T * lds * sizeof(float)));
                ck_assert_ok(clnpu_rope_apply(dev, tab, (clnpu_view){bsrc, 5 + R, lds}, T, 1, 0, bp, (clnpu_rope_layout)hs));
                ck_assert_ok(clnpu_launch(dev, "mla.cl", opts, "clnpu_kv_append", 2, g, l, aa, 12));
                ck_assert_ok(clnpu_buffer_read(bc, 0, rot, nrows * rb));
                ck_assert_ok(clnpu_buffer_fill(bc, &poison, 1));
                ck_assert_ok(clnpu_buffer_write(bsrc, 5 * sizeof(float), src, T * lds * sizeof(float)));
                cl_mem tm = clnpu_mem(tab->buf);
                cl_uint tn = (cl_uint)T;
                clnpu_karg ra[] = {KARG(c), KARG(pg), KARG(b), KARG(m), KARG(sm), KARG(so), KARG(ld), KARG(sq), KARG(ps),
                                   KARG(tm), KARG(tn), KARG(hs)};
                ck_assert_ok(clnpu_launch(dev, "mla.cl", opts, "clnpu_kv_append", 2, g, l, ra, 12));
                ck_assert_ok(clnpu_buffer_read(bc, 0, got, nrows * rb));
                ck_assert_msg(!memcmp(got, rot, nrows * rb), "%s cache R=%zu: k_pe rotated by the append differs (layout %u)",
                              clnpu_dtype_name(dt), R, hs);
            }
            free(rot);
            clnpu_rope_table_destroy(tab);
            free(src), free(want), free(enc), free(got), free(gath);
            clnpu_buffer_destroy(bc), clnpu_buffer_destroy(bsrc), clnpu_buffer_destroy(bbt), clnpu_buffer_destroy(bs);
            clnpu_buffer_destroy(bp), clnpu_buffer_destroy(bd);
        }
}
END_TEST

/* Host reference of the routing rule; ties go to the lower index. */
static void route_ref(const float *logits, const float *bias, const clnpu_moe_config *c, int *ids,
                      double *w)
{
    const size_t E = c->experts, gs = E / c->n_group;
    double s[256], sb[256], gsc[256];
    int keep[256] = {0}, chosen[256] = {0};
    for (size_t e = 0; e < E; e++) {
        s[e] = 1 / (1 + exp(-(double)logits[e]));
        sb[e] = (double)(float)s[e] + (bias ? bias[e] : 0); /* kernel adds in f32 */
    }
    for (size_t g = 0; g < c->n_group; g++) {
        double a = -INFINITY, b = -INFINITY;
        for (size_t e = g * gs; e < (g + 1) * gs; e++) {
            if (sb[e] > a) b = a, a = sb[e];
            else if (sb[e] > b) b = sb[e];
        }
        gsc[g] = gs > 1 ? a + b : a;
    }
    for (size_t r = 0; r < c->topk_group; r++) {
        int best = -1;
        for (size_t g = 0; g < c->n_group; g++)
            if (!keep[g] && (best < 0 || gsc[g] > gsc[best])) best = (int)g;
        keep[best] = 1;
    }
    double sum = 0;
    for (size_t r = 0; r < c->top_k; r++) {
        int best = -1;
        for (size_t e = 0; e < E; e++)
            if (!chosen[e] && keep[e / gs] && (best < 0 || sb[e] > sb[best])) best = (int)e;
        chosen[best] = 1;
        sum += s[best];
    }
    size_t j = 0;
    for (size_t e = 0; e < E; e++)
        if (chosen[e]) {
            ids[j] = (int)e;
            w[j++] = s[e] * (c->norm_topk_prob ? c->routed_scaling_factor / (sum + 1e-20) : c->routed_scaling_factor);
        }
}

START_TEST(test_moe_route_and_dispatch)
{
    clnpu_device *dev = test_device();
    const clnpu_moe_config cfgs[] = {{192, 8, 4, 8, true, 2.5f, false}, {16, 4, 2, 4, true, 2.5f, false},
                                     {64, 1, 1, 6, false, 1.0f, false}};
    for (int ci = 0; ci < 3; ci++) {
        const clnpu_moe_config *c = &cfgs[ci];
        const size_t T = 37, E = c->experts, K = c->top_k, dim = 45;
        float *lg = test_rand_array(T * E, -4, 4), *bias = test_rand_array(E, -0.1f, 0.1f);
        /* Exact ties: token 0 has every logit equal (lowest indices must win); token 1 two equal
         * maxima in different groups. A strongly negative bias masks group 1 entirely. */
        for (size_t e = 0; e < E; e++) lg[e] = 0.5f;
        lg[E + E - 1] = lg[E + 0] = 6.0f;
        if (ci == 0)
            for (size_t e = 0; e < E; e++) bias[e] = ((e * 7) % 5) * 0.01f; /* ties in biased order too */
        if (ci == 1)
            for (size_t e = 0; e < E; e++) bias[e] = 0.0f; /* token 0: a perfect tie everywhere */
        if (c->n_group > 2)
            for (size_t e = E / c->n_group; e < 2 * E / c->n_group; e++) bias[e] = -5.0f;
        clnpu_buffer *bl = dev_f32(lg, T * E), *bb = dev_f32(bias, E), *bi, *bw = dev_nan(T * K);
        ck_assert_ok(clnpu_buffer_create(dev, T * K * 4, &bi));
        ck_assert_ok(clnpu_moe_route(dev, (clnpu_view){bl, 0, E}, bb, T, c, bi, bw));
        int *ids = malloc(T * K * sizeof *ids), *rid = malloc(K * sizeof *rid);
        float *w = read_f32(bw, T * K);
        double *rw = malloc(T * K * sizeof *rw);
        ck_assert_ok(clnpu_buffer_read(bi, 0, ids, T * K * 4));
        for (size_t t = 0; t < T; t++) {
            route_ref(lg + t * E, bias, c, rid, rw + t * K);
            for (size_t j = 0; j < K; j++)
                ck_assert_msg(ids[t * K + j] == rid[j], "cfg %d token %zu slot %zu: expert %d, want %d", ci, t,
                              j, ids[t * K + j], rid[j]);
            if (c->n_group > 2)
                for (size_t j = 0; j < K; j++)
                    ck_assert_msg(ids[t * K + j] / (int)(E / c->n_group) != 1, "masked group chosen");
        }
        if (ci == 1) /* all equal scores: group 0 (group 1 is masked), its experts 0..3 */
            for (size_t j = 0; j < K; j++) ck_assert_int_eq(ids[j], (int)j);
        CHECK_ERR(w, rw, T * K, 1e-6, "moe weights cfg %d", ci);

        /* Plan, gather, then combine a fake expert output against the reference. */
        clnpu_buffer *cnt, *off, *src, *slot;
        ck_assert_ok(clnpu_buffer_create(dev, E * 4, &cnt));
        ck_assert_ok(clnpu_buffer_create(dev, (E + 1) * 4, &off));
        ck_assert_ok(clnpu_buffer_create(dev, T * K * 4, &src));
        ck_assert_ok(clnpu_buffer_create(dev, T * K * 4, &slot));
        ck_assert_ok(clnpu_moe_plan(dev, bi, T, K, E, cnt, off, src, slot));
        int *hc = malloc(E * 4), *ho = malloc((E + 1) * 4), *hs = malloc(T * K * 4), *hr = malloc(T * K * 4);
        ck_assert_ok(clnpu_buffer_read(cnt, 0, hc, E * 4));
        ck_assert_ok(clnpu_buffer_read(off, 0, ho, (E + 1) * 4));
        ck_assert_ok(clnpu_buffer_read(src, 0, hs, T * K * 4));
        ck_assert_ok(clnpu_buffer_read(slot, 0, hr, T * K * 4));
        ck_assert_int_eq(ho[E], (int)(T * K));
        for (size_t e = 0; e < E; e++) {
            int n = 0;
            for (size_t i = 0; i < T * K; i++) n += ids[i] == (int)e;
            ck_assert_int_eq(hc[e], n);
            ck_assert_int_eq(ho[e + 1] - ho[e], n);
            for (int p = ho[e]; p + 1 < ho[e + 1]; p++) ck_assert_int_lt(hs[p], hs[p + 1]); /* token order */
        }
        for (size_t t = 0; t < T; t++)
            for (size_t j = 0; j < K; j++) {
                int p = hr[t * K + j];
                ck_assert_int_eq(hs[p], (int)t);
                ck_assert(p >= ho[ids[t * K + j]] && p < ho[ids[t * K + j] + 1]);
            }
        float *x = test_rand_array(T * dim, -1, 1), *base = test_rand_array(T * dim, -1, 1);
        clnpu_buffer *bx = dev_f32(x, T * dim), *bxp = dev_nan(T * K * dim), *bbase = dev_f32(base, T * dim),
                     *bout = dev_nan(T * dim);
        ck_assert_ok(clnpu_moe_gather(dev, bxp, (clnpu_view){bx, 0, dim}, src, T * K, dim));
        float *xp = read_f32(bxp, T * K * dim);
        for (size_t p = 0; p < T * K; p++)
            ck_assert(!memcmp(xp + p * dim, x + (size_t)hs[p] * dim, dim * 4));
        /* "Expert output" = gathered rows x (1 + expert id), so the combine is checkable. */
        for (size_t p = 0; p < T * K; p++) {
            int e = -1;
            for (size_t ee = 0; ee < E; ee++)
                if ((int)p >= ho[ee] && (int)p < ho[ee + 1]) e = (int)ee;
            for (size_t d = 0; d < dim; d++) xp[p * dim + d] *= (float)(1 + e);
        }
        ck_assert_ok(clnpu_buffer_write(bxp, 0, xp, T * K * dim * 4));
        ck_assert_ok(clnpu_moe_combine(dev, (clnpu_view){bout, 0, dim}, (clnpu_view){bbase, 0, dim}, bxp, slot,
                                       bw, T, K, dim));
        float *out = read_f32(bout, T * dim);
        double *ref = malloc(T * dim * sizeof *ref);
        for (size_t t = 0; t < T; t++)
            for (size_t d = 0; d < dim; d++) {
                double acc = base[t * dim + d];
                for (size_t j = 0; j < K; j++) acc += (double)w[t * K + j] * (1 + ids[t * K + j]) * x[t * dim + d];
                ref[t * dim + d] = acc;
            }
        CHECK_ERR(out, ref, T * dim, 1e-6, "moe combine cfg %d", ci);
        free(lg), free(bias), free(ids), free(rid), free(w), free(rw), free(hc), free(ho), free(hs), free(hr);
        free(x), free(base), free(xp), free(out), free(ref);
        clnpu_buffer *bufs[] = {bl, bb, bi, bw, cnt, off, src, slot, bx, bxp, bbase, bout};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) clnpu_buffer_destroy(bufs[i]);
    }
    /* Inconsistent configs are refused. */
    clnpu_moe_config bad = {192, 7, 4, 8, true, 2.5f, false};
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(dev, 4096, &b));
    ck_assert_int_eq(clnpu_moe_route(dev, (clnpu_view){b, 0, 192}, NULL, 1, &bad, b, b), CLNPU_ERR_INVALID_ARGUMENT);
    clnpu_buffer_destroy(b);
}
END_TEST

static double silu(double v)
{
    return v / (1 + exp(-v));
}

/* The whole block: router (fp32) + routing + grouped SwiGLU experts + shared expert. */
/* A peer block in the same process standing in for another rank: each exchange serves every
 * remote part through the peer block (as the serving rank would) and writes its outputs back. */
typedef struct peer_ctx {
    clnpu_moe_block *peer;
    size_t exchanges, parts, rows;
} peer_ctx;

static clnpu_status peer_exchange(void *ctx, size_t tag, const clnpu_moe_remote_part *parts, size_t n)
{
    peer_ctx *c = ctx;
    ck_assert_ptr_nonnull(c); /* the peer's own remote entry is never called */
    ck_assert_uint_eq(tag, 7);
    c->exchanges++, c->parts += n;
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_le(parts[i].nrows, 96);
        c->rows += parts[i].nrows;
        clnpu_status st = parts[i].nrows ? clnpu_moe_block_serve(c->peer, parts[i].shard, parts[i].rows, parts[i].nrows,
                                                                 parts[i].segs, parts[i].nseg, parts[i].out)
                                         : CLNPU_OK;
        if (st) return st;
    }
    return CLNPU_OK;
}

START_TEST(test_moe_block)
{
    clnpu_device *dev = test_device();
    const clnpu_moe_config cfg = {16, 4, 2, 4, true, 2.5f, false};
    const size_t E = 16, H = 96, I = 32, T = 24, K = 4;
    clnpu_weight_desc gate[16], up[16], down[16], sg, su, sd, router;
    uint16_t *mem[3 * 16 + 4];
    float *deq[3 * 16 + 4];
    size_t nm = 0;
    /* bf16 weights, as in the checkpoint; reference uses the same (widened) values. */
#define MAKE(desc, n, k)                                                                               do {                                                                                                   uint16_t *d_ = malloc((n) * (k) * 2);                                                              float *f_ = malloc((n) * (k) * sizeof(float));                                                     for (size_t i_ = 0; i_ < (n) * (k); i_++) {                                                            d_[i_] = clnpu_f32_to_bf16(test_rand_normal() * 0.2f);                                             f_[i_] = clnpu_bf16_to_f32(d_[i_]);                                                            }                                                                                                  desc = (clnpu_weight_desc){CLNPU_DTYPE_BF16, n, k, d_, NULL, 0};                                   mem[nm] = d_;                                                                                      deq[nm++] = f_;                                                                                } while (0)
    for (size_t e = 0; e < E; e++) {
        MAKE(gate[e], I, H);
        MAKE(up[e], I, H);
        MAKE(down[e], H, I);
    }
    MAKE(sg, I, H);
    MAKE(su, I, H);
    MAKE(sd, H, I);
    MAKE(router, E, H);
#undef MAKE
    float *bias = test_rand_array(E, -0.2f, 0.2f);
    clnpu_moe_weights w = {router, bias, gate, up, down, &sg, &su, &sd};
    clnpu_moe_block *blk;
    ck_assert_ok(clnpu_moe_block_create(dev, &cfg, &w, 32, &blk));
    float *x = test_rand_array(T * H, -1, 1);
    clnpu_buffer *bx = dev_f32(x, T * H), *bo = dev_nan(T * H);
    ck_assert_ok(clnpu_moe_block_forward(dev, blk, (clnpu_view){bx, 0, H}, T, (clnpu_view){bo, 0, H}));
    float *out = read_f32(bo, T * H);
    int ids[24 * 4], rid[4];
    ck_assert_ok(clnpu_moe_block_last_routing(blk, ids, NULL));
    double *ref = malloc(T * H * sizeof *ref), rw[4], h1[32], lg[16];
    const float *R = deq[3 * E + 3];
    for (size_t t = 0; t < T; t++) {
        float lgf[16];
        for (size_t e = 0; e < E; e++) {
            lg[e] = 0;
            for (size_t k = 0; k < H; k++) lg[e] += (double)x[t * H + k] * R[e * H + k];
            lgf[e] = (float)lg[e];
        }
        route_ref(lgf, bias, &cfg, rid, rw);
        for (size_t j = 0; j < K; j++) ck_assert_int_eq(ids[t * K + j], rid[j]);
        for (size_t d = 0; d < H; d++) ref[t * H + d] = 0;
        for (size_t j = 0; j <= K; j++) { /* K routed experts, then the shared one (weight 1) */
            const float *G = j < K ? deq[3 * rid[j]] : deq[3 * E], *U = j < K ? deq[3 * rid[j] + 1] : deq[3 * E + 1],
                        *D = j < K ? deq[3 * rid[j] + 2] : deq[3 * E + 2];
            for (size_t i = 0; i < I; i++) {
                double a = 0, b = 0;
                for (size_t k = 0; k < H; k++) {
                    a += (double)x[t * H + k] * G[i * H + k];
                    b += (double)x[t * H + k] * U[i * H + k];
                }
                h1[i] = silu(a) * b;
            }
            for (size_t d = 0; d < H; d++) {
                double acc = 0;
                for (size_t i = 0; i < I; i++) acc += h1[i] * D[d * I + i];
                ref[t * H + d] += (j < K ? rw[j] : 1.0) * acc;
            }
        }
    }
    CHECK_ERR(out, ref, T * H, 1e-5, "moe block");
    /* Fewer tokens, then more again: the shared expert's segment in the group (its source rows and
     * count, rewritten when T changes) follows; rows are independent, so the first T' match. */
    const size_t Ts[] = {1, 5, 1, 24};
    for (size_t i = 0; i < 4; i++) {
        float nan_ = NAN;
        ck_assert_ok(clnpu_buffer_fill(bo, &nan_, sizeof nan_));
        ck_assert_ok(clnpu_moe_block_forward(dev, blk, (clnpu_view){bx, 0, H}, Ts[i], (clnpu_view){bo, 0, H}));
        float *o2 = read_f32(bo, Ts[i] * H);
        CHECK_ERR(o2, ref, Ts[i] * H, 1e-5, "moe block, %zu tokens after others", Ts[i]);
        free(o2);
    }
    /* Expert parallel: the experts over two devices (5 and 6 on both, served by their first
     * copy), router and shared expert on the main one: the same output. */
    clnpu_device *d2;
    clnpu_device_info *infos;
    size_t ndev;
    ck_assert_ok(clnpu_device_list(&infos, &ndev));
    clnpu_device_list_free(infos);
    ck_assert_ok(clnpu_device_open(ndev > 1 ? 1 : 0, NULL, &d2));
    const size_t ea[] = {0, 1, 2, 3, 4, 5, 6}, eb[] = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const clnpu_moe_shard shards[] = {{dev, ea, 7, NULL}, {d2, eb, 11, NULL}};
    clnpu_moe_block *ep;
    ck_assert_ok(clnpu_moe_block_create_sharded(dev, &cfg, &w, 32, shards, 2, &ep));
    float nan = NAN;
    ck_assert_ok(clnpu_buffer_fill(bo, &nan, sizeof nan));
    ck_assert_ok(clnpu_moe_block_forward(dev, ep, (clnpu_view){bx, 0, H}, T, (clnpu_view){bo, 0, H}));
    float *out2 = read_f32(bo, T * H);
    CHECK_ERR(out2, ref, T * H, 1e-5, "moe block over two devices");
    /* (on one device the shared expert runs as a matrix of the experts' group, under expert
     * parallelism apart: another GEMM kernel, other rounding, hence 1e-5 here and 1e-6 between
     * the two expert-parallel runs below) */
    for (size_t i = 0; i < T * H; i++) ck_assert_msg(fabsf(out2[i] - out[i]) <= 1e-5f * (1 + fabsf(out[i])), "EP differs at %zu", i);
    /* an expert on no device is refused */
    const clnpu_moe_shard partial[] = {{dev, ea, 7, NULL}};
    clnpu_moe_block *bad = NULL;
    ck_assert_int_eq(clnpu_moe_block_create_sharded(dev, &cfg, &w, 32, partial, 1, &bad), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "expert 7"));
    /* the second shard served by a peer block, as another process would (pipeline.c does it
     * over MPI): the peer holds only that shard's weights, the output is the same */
    static peer_ctx pc;
    memset(&pc, 0, sizeof pc);
    const clnpu_moe_remote to_peer = {peer_exchange, &pc}, never = {peer_exchange, NULL};
    const clnpu_moe_shard mine[] = {{dev, ea, 7, NULL}, {NULL, eb, 11, &to_peer}};
    const clnpu_moe_shard theirs[] = {{NULL, ea, 7, &never}, {d2, eb, 11, NULL}};
    clnpu_moe_block *lead, *peer;
    ck_assert_ok(clnpu_moe_block_create_sharded(dev, &cfg, &w, 32, mine, 2, &lead));
    ck_assert_ok(clnpu_moe_block_create_sharded(d2, &cfg, &w, 32, theirs, 2, &peer));
    pc.peer = peer;
    clnpu_moe_block_set_tag(lead, 7);
    ck_assert_ok(clnpu_buffer_fill(bo, &nan, sizeof nan));
    ck_assert_ok(clnpu_moe_block_forward(dev, lead, (clnpu_view){bx, 0, H}, T, (clnpu_view){bo, 0, H}));
    float *out3 = read_f32(bo, T * H);
    ck_assert_uint_eq(pc.exchanges, 1); /* one exchange per forward, with the one remote shard */
    ck_assert_uint_eq(pc.parts, 1);
    ck_assert_uint_gt(pc.rows, 0);
    for (size_t i = 0; i < T * H; i++) ck_assert_msg(fabsf(out3[i] - out2[i]) <= 1e-6f * (1 + fabsf(out2[i])), "remote shard differs at %zu", i);
    /* a peer refuses what it does not hold and malformed segments */
    float row[2 * 96];
    for (size_t i = 0; i < 2 * H; i++) row[i] = 1.0f;
    const clnpu_gemm_segment seg1 = {0, 0, 1}, bad_seg = {11, 0, 1};
    ck_assert_int_eq(clnpu_moe_block_serve(peer, 0, row, 1, &seg1, 1, row), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(clnpu_moe_block_serve(peer, 1, row, 1, &bad_seg, 1, row), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(clnpu_moe_block_serve(peer, 1, row, 2, &seg1, 1, row), CLNPU_ERR_INVALID_ARGUMENT);
    free(out2), free(out3);
    clnpu_moe_block_destroy(lead), clnpu_moe_block_destroy(peer);
    clnpu_moe_block_destroy(ep);
    clnpu_device_close(d2);
    free(out), free(ref), free(x), free(bias);
    for (size_t i = 0; i < nm; i++) free(mem[i]), free(deq[i]);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(bo);
    clnpu_moe_block_destroy(blk);
}
END_TEST

START_TEST(test_sampling)
{
    clnpu_device *dev = test_device();
    const size_t n = 12, rows = 20000;
    const float base[12] = {2.0f, 1.5f, 1.5f, 0.3f, -1.0f, 3.0f, 0.0f, -2.0f, 2.5f, 1.0f, -0.5f, 0.7f};
    float *lg = malloc(rows * n * sizeof *lg);
    for (size_t r = 0; r < rows; r++) memcpy(lg + r * n, base, sizeof base);
    clnpu_buffer *bl = dev_f32(lg, rows * n), *bo;
    ck_assert_ok(clnpu_buffer_create(dev, rows * 4, &bo));
    int *out = malloc(rows * sizeof *out), *again = malloc(rows * sizeof *again);
    const clnpu_sampling cases[] = {{0.7f, 5, 0.9f, 1234}, {1.0f, 0, 1.0f, 99}, {1.3f, 0, 0.5f, 7},
                                    {0.0f, 0, 1.0f, 5}};
    for (int ci = 0; ci < 4; ci++) {
        const clnpu_sampling *p = &cases[ci];
        ck_assert_ok(clnpu_sample(dev, bo, (clnpu_view){bl, 0, n}, rows, n, p, 3));
        ck_assert_ok(clnpu_buffer_read(bo, 0, out, rows * 4));
        /* Same seed and step: same draws. Another step: different draws. */
        ck_assert_ok(clnpu_sample(dev, bo, (clnpu_view){bl, 0, n}, rows, n, p, 3));
        ck_assert_ok(clnpu_buffer_read(bo, 0, again, rows * 4));
        ck_assert(!memcmp(out, again, rows * 4));
        /* Expected distribution: softmax(l / T), cut to top-k, then to the top-p prefix. */
        double pr[12], mx = -INFINITY, z = 0;
        for (size_t i = 0; i < n; i++) mx = fmax(mx, base[i]);
        if (p->temperature <= 0) {
            for (size_t r = 0; r < rows; r++) ck_assert_int_eq(out[r], 5);
            continue;
        }
        ck_assert_ok(clnpu_sample(dev, bo, (clnpu_view){bl, 0, n}, rows, n, p, 4));
        ck_assert_ok(clnpu_buffer_read(bo, 0, again, rows * 4));
        ck_assert(memcmp(out, again, rows * 4) != 0);
        for (size_t i = 0; i < n; i++) pr[i] = exp((base[i] - mx) / p->temperature);
        double sorted[12];
        memcpy(sorted, pr, sizeof sorted);
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                if (sorted[j] > sorted[i]) { double t = sorted[i]; sorted[i] = sorted[j]; sorted[j] = t; }
        double th = p->top_k ? sorted[p->top_k - 1] : 0, kept = 0;
        for (size_t i = 0; i < n; i++) kept += pr[i] >= th ? pr[i] : 0;
        if (p->top_p > 0 && p->top_p < 1) {
            double acc = 0;
            for (size_t i = 0; i < n && sorted[i] >= th; i++) {
                acc += sorted[i];
                if (acc >= p->top_p * kept) { th = sorted[i]; break; }
            }
        }
        for (size_t i = 0; i < n; i++) z += pr[i] >= th ? pr[i] : 0;
        size_t cnt[12] = {0};
        for (size_t r = 0; r < rows; r++) {
            ck_assert(out[r] >= 0 && out[r] < (int)n);
            cnt[out[r]]++;
        }
        double chi2 = 0;
        int df = -1;
        for (size_t i = 0; i < n; i++) {
            if (pr[i] < th) {
                ck_assert_msg(cnt[i] == 0, "case %d: token %zu outside top-k/top-p drawn %zu times", ci, i, cnt[i]);
                continue;
            }
            double e = rows * pr[i] / z;
            chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
            df++;
        }
        /* chi-square critical value at p = 1e-6 for <= 11 degrees of freedom is below 50. */
        ck_assert_msg(chi2 < 50, "case %d: chi2 %.1f with %d dof: sampling distribution is off", ci, chi2, df);
    }
    free(lg), free(out), free(again);
    clnpu_buffer_destroy(bl), clnpu_buffer_destroy(bo);
}
END_TEST

Suite *suite_ops(void)
{
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_rmsnorm);
    tcase_add_test(tc, test_rmsnorm_add_tag);
    tcase_add_test(tc, test_elementwise);
    tcase_add_test(tc, test_rope_yarn_values);
    tcase_add_test(tc, test_rope_apply);
    tcase_add_test(tc, test_flash_attention);
    tcase_add_test(tc, test_mla_decode);
    tcase_add_test(tc, test_latent_cache_append_gather);
    tcase_add_test(tc, test_moe_route_and_dispatch);
    tcase_add_test(tc, test_moe_block);
    tcase_add_test(tc, test_sampling);
    suite_add_tcase(s, tc);
    return s;
}
