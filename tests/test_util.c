/* Shared helpers for the Check test suite. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <math.h>

#include "test_util.h"

static clnpu_device *shared_dev;

clnpu_device *test_device(void)
{
    if (!shared_dev) {
        clnpu_status st = clnpu_device_open(0, NULL, &shared_dev);
        ck_assert_msg(st == CLNPU_OK, "opening device 0: %s", clnpu_error_message());
    }
    return shared_dev;
}

void test_device_release(void)
{
    clnpu_device_close(shared_dev);
    shared_dev = NULL;
}

static uint64_t rng_state;

uint64_t test_seed(void)
{
    static uint64_t seed;
    if (!seed) {
        const char *s = getenv("CLNPU_TEST_SEED");
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = s ? strtoull(s, NULL, 0) : (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20);
        if (!seed) seed = 1;
        rng_state = seed;
        fprintf(stderr, "clnpu tests: random seed %llu (set CLNPU_TEST_SEED to replay)\n",
                (unsigned long long)seed);
    }
    return seed;
}

uint64_t test_rand_u64(void)
{
    if (!rng_state) test_seed();
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

float test_rand_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)((test_rand_u64() >> 40) / (double)(1ULL << 24));
}

float test_rand_normal(void)
{
    double u1 = ((test_rand_u64() >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (test_rand_u64() >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void test_mkdtemp(char *out, size_t cap)
{
    snprintf(out, cap, "/tmp/clnpu-test-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(out));
}

void test_rmdir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char path[2048];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path)) test_rmdir(path);
    }
    closedir(d);
    rmdir(dir);
}

int test_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t n = strlen(text);
    int rc = fwrite(text, 1, n, f) == n ? 0 : -1;
    return fclose(f) ? -1 : rc;
}

int test_run(const char *cmdline, char *out, size_t cap)
{
    char full[4096];
    snprintf(full, sizeof full, "%s 2>&1", cmdline);
    FILE *p = popen(full, "r");
    if (!p) return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    while (fgetc(p) != EOF) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The tests' own account of the latent cache's row layouts (include/clnpu/ops.h), written from
 * the layout's description and not from the kernels: fp8 scales are the smallest power of two
 * >= the tile's max |c| / 448 (found by comparing against 448 * 2^k, exact in double). */
void *test_latent_cache_encode(clnpu_dtype dt, size_t R, size_t DR, size_t rows, float *vals, size_t *out_bytes)
{
    const size_t lat = R + DR, rb = clnpu_latent_cache_row_bytes(dt, R, DR), tile = CLNPU_LATENT_CACHE_FP8_TILE;
    uint8_t *out = malloc(rows * rb > 0 ? rows * rb : 1);
    for (size_t r = 0; r < rows; r++) {
        float *v = vals + r * lat;
        uint8_t *row = out + r * rb;
        if (dt == CLNPU_DTYPE_F32) {
            memcpy(row, v, lat * 4);
            continue;
        }
        if (dt == CLNPU_DTYPE_BF16) {
            for (size_t d = 0; d < lat; d++) {
                const uint16_t b = clnpu_f32_to_bf16(v[d]);
                memcpy(row + 2 * d, &b, 2);
                v[d] = clnpu_bf16_to_f32(b);
            }
            continue;
        }
        const size_t nt = (R + tile - 1) / tile;
        for (size_t t = 0; t < nt; t++) {
            const size_t d0 = t * tile, n = R - d0 < tile ? R - d0 : tile;
            float amax = 0;
            for (size_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(v[d0 + i])); /* a NaN is passed over */
            if (amax < 0x1p-100f) amax = 0x1p-100f;
            int k = ilogb(amax) - 8;
            if ((double)amax > ldexp(448.0, k)) k++;
            const float s = isinf(amax) ? NAN : ldexpf(1.0f, k);
            memcpy(row + R + 4 * t, &s, 4);
            for (size_t i = 0; i < n; i++) {
                row[d0 + i] = clnpu_f32_to_fp8e4m3(ldexpf(v[d0 + i], -k));
                v[d0 + i] = clnpu_fp8e4m3_to_f32(row[d0 + i]) * s;
            }
        }
        for (size_t d = 0; d < DR; d++) {
            const uint16_t b = clnpu_f32_to_bf16(v[R + d]);
            memcpy(row + R + 4 * nt + 2 * d, &b, 2);
            v[R + d] = clnpu_bf16_to_f32(b);
        }
    }
    *out_bytes = rows * rb;
    return out;
}

double test_rel(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(!isnan(a[i]), "NaN at %zu", i);
        num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / den);
}

void test_fixture_logits(const test_fixture *f, const char *label, size_t max_tokens, double tol)
{
    const size_t T = f->T, V = f->cfg.vocab_size;
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 2, o.max_context = 64, o.max_tokens = max_tokens;
    clnpu_model *m;
    ck_assert_ok(clnpu_model_create(test_device(), &f->cfg, f->ck, &o, &m));
    const float *ref = clnpu_safetensors_find(f->ref, "logits")->data;
    float *lg = malloc(T * V * sizeof *lg);
    for (size_t i = 0; i < T * V; i++) lg[i] = NAN;
    ck_assert_ok(clnpu_model_prefill(m, 0, f->ids, T, lg));
    double e = test_rel(lg, ref, T * V);
    fprintf(stderr, "%s, prefill of %zu: logits rel error %.2e\n", label, T, e);
    ck_assert_msg(e <= tol, "%s prefill logits: %.3g", label, e);
    for (size_t i = 0; i < T * V; i++) lg[i] = NAN;
    ck_assert_ok(clnpu_model_prefill(m, 1, f->ids, 1, lg));
    for (size_t t = 1; t < T; t++) {
        size_t s = 1;
        ck_assert_ok(clnpu_model_decode(m, &s, f->ids + t, 1, lg + t * V));
    }
    e = test_rel(lg, ref, T * V);
    fprintf(stderr, "%s, prefill 1 + decode %zu: logits rel error %.2e\n", label, T - 1, e);
    ck_assert_msg(e <= tol, "%s decode logits: %.3g", label, e);
    free(lg);
    clnpu_model_destroy(m);
}

void test_fixture_open(test_fixture *f, const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    ck_assert_ok(clnpu_model_config_load(path, &f->cfg));
    ck_assert_ok(clnpu_checkpoint_open(dir, &f->ck));
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    ck_assert_ok(clnpu_safetensors_open(path, &f->ref));
    const clnpu_tensor_info *t = clnpu_safetensors_find(f->ref, "input_ids");
    ck_assert_ptr_nonnull(t);
    f->ids = t->data;
    f->T = (size_t)t->shape[0];
}

void test_fixture_close(test_fixture *f)
{
    clnpu_checkpoint_close(f->ck);
    clnpu_safetensors_close(f->ref);
}

float *test_rand_array(size_t n, float lo, float hi)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    ck_assert_ptr_nonnull(v);
    for (size_t i = 0; i < n; i++) v[i] = test_rand_uniform(lo, hi);
    return v;
}

double test_rel64(const float *out, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(!isnan(out[i]), "NaN at %zu", i);
        num += (out[i] - ref[i]) * (out[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

void test_check_rmsnorm_add_tag(clnpu_device *dev)
{
    const size_t dims[] = {1, 5, 96, 1000, 1031}, rowss[] = {1, 3, 17};
    const float qnan = NAN;
    clnpu_buffer *flag;
    ck_assert_ok(clnpu_buffer_create(dev, 4, &flag));
    for (size_t di = 0; di < 5; di++)
        for (size_t ri = 0; ri < 3; ri++)
            for (int mode = 0; mode < 4; mode++) { /* 0: x, w1, w2; 1: x, w2; 2: w2 only; 3: x, w1 */
                const size_t d = dims[di], rows = rowss[ri], ld = d + 3, xo = 2, ho = 5, yo = 1;
                const bool hx = mode != 2, h1 = mode == 0 || mode == 3, h2 = mode != 3;
                /* h in [2, 4], what is added within +-1.5: no cancellation to make a relative error of
                 * the sum meaningless (a one-element row would be all of it) */
                float *x = test_rand_array(rows * ld + xo, -1, 1), *h = test_rand_array(rows * ld + ho, 2, 4),
                      *w1 = test_rand_array(d, 0.5f, 1.5f), *w2 = test_rand_array(d, 0.5f, 1.5f);
                clnpu_buffer *bx, *bh, *b1, *b2, *by;
                ck_assert_ok(clnpu_buffer_create(dev, (rows * ld + xo) * 4, &bx));
                ck_assert_ok(clnpu_buffer_create(dev, (rows * ld + ho) * 4, &bh));
                ck_assert_ok(clnpu_buffer_create(dev, d * 4, &b1));
                ck_assert_ok(clnpu_buffer_create(dev, d * 4, &b2));
                ck_assert_ok(clnpu_buffer_create(dev, (rows * ld + yo) * 4, &by));
                ck_assert_ok(clnpu_buffer_write(bx, 0, x, (rows * ld + xo) * 4));
                ck_assert_ok(clnpu_buffer_write(bh, 0, h, (rows * ld + ho) * 4));
                ck_assert_ok(clnpu_buffer_write(b1, 0, w1, d * 4));
                ck_assert_ok(clnpu_buffer_write(b2, 0, w2, d * 4));
                ck_assert_ok(clnpu_buffer_fill(by, &qnan, 4));
                const int32_t none = INT32_MAX;
                ck_assert_ok(clnpu_buffer_write(flag, 0, &none, 4));
                const clnpu_view vx = {hx ? bx : NULL, xo, ld}, vh = {bh, ho, ld}, vy = {by, yo, ld};
                ck_assert_ok(clnpu_rmsnorm_add_tag(dev, vx, h1 ? b1 : NULL, vh, vy, h2 ? b2 : NULL, rows, d, 1e-6f, 9, flag));
                float *hg = malloc((rows * ld + ho) * 4), *yg = malloc((rows * ld + yo) * 4);
                ck_assert_ok(clnpu_buffer_read(bh, 0, hg, (rows * ld + ho) * 4));
                ck_assert_ok(clnpu_buffer_read(by, 0, yg, (rows * ld + yo) * 4));
                int32_t fl;
                ck_assert_ok(clnpu_buffer_read(flag, 0, &fl, 4));
                ck_assert_int_eq(fl, INT32_MAX); /* all finite: untouched */
                double *href = malloc(rows * d * sizeof *href), *yref = malloc(rows * d * sizeof *yref);
                float *hc = malloc(rows * d * 4), *yc = malloc(rows * d * 4);
                for (size_t r = 0; r < rows; r++) {
                    double s1 = 0, s2 = 0;
                    for (size_t i = 0; i < d; i++) s1 += (double)x[xo + r * ld + i] * x[xo + r * ld + i];
                    const double inv1 = 1 / sqrt(s1 / d + 1e-6);
                    for (size_t i = 0; i < d; i++) {
                        const double xv = x[xo + r * ld + i], add = !hx ? 0 : h1 ? w1[i] * xv * inv1 : xv;
                        href[r * d + i] = h[ho + r * ld + i] + add;
                        s2 += href[r * d + i] * href[r * d + i];
                        hc[r * d + i] = hg[ho + r * ld + i], yc[r * d + i] = yg[yo + r * ld + i];
                    }
                    const double inv2 = 1 / sqrt(s2 / d + 1e-6);
                    for (size_t i = 0; i < d; i++) yref[r * d + i] = w2[i] * href[r * d + i] * inv2;
                    /* the row padding is not written: h keeps its values, y its poison */
                    for (size_t i = d; i < ld && r + 1 < rows; i++) {
                        ck_assert(hg[ho + r * ld + i] == h[ho + r * ld + i]);
                        ck_assert(isnan(yg[yo + r * ld + i]));
                    }
                }
                /* f32 reductions of d squares, twice, and the normalisations */
                const double tol = 4 * 0x1p-24 * sqrt((double)d) + 1e-6;
                double e = test_rel64(hc, href, rows * d);
                ck_assert_msg(e <= tol, "rmsnorm_add_tag h d=%zu rows=%zu mode %d: %.3g", d, rows, mode, e);
                if (h2) {
                    e = test_rel64(yc, yref, rows * d);
                    ck_assert_msg(e <= tol, "rmsnorm_add_tag y d=%zu rows=%zu mode %d: %.3g", d, rows, mode, e);
                } else {
                    for (size_t i = 0; i < rows * d; i++) ck_assert(isnan(yc[i])); /* no second norm: y untouched */
                }
                /* a NaN in the last row's x (or h) lowers the flag to the tag, and the lowest tag stays */
                if (ri == 2 && di == 3) {
                    float *tgt = hx ? x : h;
                    tgt[(hx ? xo : ho) + (rows - 1) * ld + d - 1] = NAN;
                    ck_assert_ok(clnpu_buffer_write(hx ? bx : bh, 0, tgt, (rows * ld + (hx ? xo : ho)) * 4));
                    ck_assert_ok(clnpu_rmsnorm_add_tag(dev, vx, h1 ? b1 : NULL, vh, vy, h2 ? b2 : NULL, rows, d, 1e-6f, 7, flag));
                    ck_assert_ok(clnpu_rmsnorm_add_tag(dev, vx, h1 ? b1 : NULL, vh, vy, h2 ? b2 : NULL, rows, d, 1e-6f, 8, flag));
                    ck_assert_ok(clnpu_buffer_read(flag, 0, &fl, 4));
                    ck_assert_int_eq(fl, 7);
                    /* tag < 0: no check, no flag needed */
                    ck_assert_ok(clnpu_rmsnorm_add_tag(dev, vx, h1 ? b1 : NULL, vh, vy, h2 ? b2 : NULL, rows, d, 1e-6f, -1, NULL));
                }
                free(x), free(h), free(w1), free(w2), free(hg), free(yg), free(href), free(yref), free(hc), free(yc);
                clnpu_buffer *bs[] = {bx, bh, b1, b2, by};
                for (size_t i = 0; i < 5; i++) clnpu_buffer_destroy(bs[i]);
            }
    /* a norm of x without x, and a tag without a flag, are refused */
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(dev, 64, &b));
    const clnpu_view v = {b, 0, 4}, nov = {0};
    ck_assert_int_eq(clnpu_rmsnorm_add_tag(dev, nov, b, v, v, NULL, 1, 4, 1e-6f, -1, NULL), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(clnpu_rmsnorm_add_tag(dev, v, NULL, v, v, NULL, 1, 4, 1e-6f, 3, NULL), CLNPU_ERR_INVALID_ARGUMENT);
    clnpu_buffer_destroy(b), clnpu_buffer_destroy(flag);
}

void test_check_rmsnorm2(clnpu_device *dev)
{
    const size_t dims[][2] = {{1, 5}, {384, 128}, {1000, 97}, {7, 1536}}, rowss[] = {1, 3, 17};
    for (size_t di = 0; di < 4; di++)
        for (size_t ri = 0; ri < 3; ri++) {
            const size_t d1 = dims[di][0], d2 = dims[di][1], rows = rowss[ri], ld1 = d1 + 2, ld2 = d2 + 33, o1 = 3, o2 = 1;
            const size_t n1 = rows * ld1 + o1, n2 = rows * ld2 + o2;
            float *x1 = test_rand_array(n1, -2, 2), *x2 = test_rand_array(n2, -2, 2), *w1 = test_rand_array(d1, 0.5f, 1.5f),
                  *w2 = test_rand_array(d2, 0.5f, 1.5f), *g1 = malloc(n1 * 4), *g2 = malloc(n2 * 4);
            clnpu_buffer *b1, *b2, *bw1, *bw2;
            ck_assert_ok(clnpu_buffer_create(dev, n1 * 4, &b1));
            ck_assert_ok(clnpu_buffer_create(dev, n2 * 4, &b2));
            ck_assert_ok(clnpu_buffer_create(dev, d1 * 4, &bw1));
            ck_assert_ok(clnpu_buffer_create(dev, d2 * 4, &bw2));
            ck_assert_ok(clnpu_buffer_write(b1, 0, x1, n1 * 4));
            ck_assert_ok(clnpu_buffer_write(b2, 0, x2, n2 * 4));
            ck_assert_ok(clnpu_buffer_write(bw1, 0, w1, d1 * 4));
            ck_assert_ok(clnpu_buffer_write(bw2, 0, w2, d2 * 4));
            ck_assert_ok(clnpu_rmsnorm2(dev, (clnpu_view){b1, o1, ld1}, bw1, d1, (clnpu_view){b2, o2, ld2}, bw2, d2, rows, 1e-6f));
            ck_assert_ok(clnpu_buffer_read(b1, 0, g1, n1 * 4));
            ck_assert_ok(clnpu_buffer_read(b2, 0, g2, n2 * 4));
            for (int side = 0; side < 2; side++) {
                const size_t d = side ? d2 : d1, ld = side ? ld2 : ld1, o = side ? o2 : o1, n = side ? n2 : n1;
                const float *x = side ? x2 : x1, *w = side ? w2 : w1, *g = side ? g2 : g1;
                double *ref = malloc(n * sizeof *ref);
                float *got = malloc(n * 4);
                for (size_t i = 0; i < n; i++) ref[i] = x[i], got[i] = g[i]; /* what lies between rows is kept */
                for (size_t r = 0; r < rows; r++) {
                    double ss = 0;
                    for (size_t i = 0; i < d; i++) ss += (double)x[o + r * ld + i] * x[o + r * ld + i];
                    const double inv = 1 / sqrt(ss / d + 1e-6);
                    for (size_t i = 0; i < d; i++) ref[o + r * ld + i] = w[i] * (double)x[o + r * ld + i] * inv;
                }
                const double e = test_rel64(got, ref, n), tol = 2 * 0x1p-24 * sqrt((double)d) + 5e-7;
                ck_assert_msg(e <= tol, "rmsnorm2 side %d d=%zu rows=%zu: %.3g > %.3g", side, d, rows, e, tol);
                for (size_t i = 0; i < o; i++) ck_assert(g[i] == x[i]);
                free(ref), free(got);
            }
            free(x1), free(x2), free(w1), free(w2), free(g1), free(g2);
            clnpu_buffer_destroy(b1), clnpu_buffer_destroy(b2), clnpu_buffer_destroy(bw1), clnpu_buffer_destroy(bw2);
        }
}

/* x (rows x ld at off) with `heads` rope slices at stride hs rotated in float64 into ref */
static void rope_ref(const float *x, double *ref, size_t n, size_t rows, size_t ld, size_t off, size_t heads, size_t hs,
                     size_t d, const int *pos, const double *inv, double af, int layout)
{
    for (size_t i = 0; i < n; i++) ref[i] = x[i];
    for (size_t t = 0; t < rows; t++)
        for (size_t h = 0; h < heads; h++)
            for (size_t i = 0; i < d / 2; i++) {
                const size_t base = off + t * ld + h * hs, a = layout ? i : 2 * i, b = layout ? i + d / 2 : 2 * i + 1;
                const double th = pos[t] * inv[i], x0 = x[base + a], x1 = x[base + b];
                ref[base + a] = af * (x0 * cos(th) - x1 * sin(th));
                ref[base + b] = af * (x1 * cos(th) + x0 * sin(th));
            }
}

void test_check_rope2(clnpu_device *dev, const clnpu_rope_config *c)
{
    const size_t maxpos = 5000, d = c->dim;
    clnpu_rope_table *tab;
    ck_assert_ok(clnpu_rope_table_create(dev, c, maxpos, &tab));
    double inv[64], af = clnpu_rope_attention_factor(c);
    ck_assert_uint_le(d / 2, 64);
    clnpu_rope_inv_freq(c, inv);
    for (int layout = 0; layout < 2; layout++) {
        const size_t rows = 13, heads = 3, hs = d + 40, ld = heads * hs + 5, off = 40, n1 = rows * ld + off;
        const size_t hs2 = d + 7, ld2 = 2 * hs2 + 3, off2 = 11, n2 = rows * ld2 + off2;
        int pos[13];
        for (size_t t = 0; t < rows; t++) pos[t] = (int)(test_rand_u64() % maxpos);
        pos[0] = 0, pos[1] = (int)maxpos - 1;
        float *x = test_rand_array(n1, -1, 1), *x2 = test_rand_array(n2, -1, 1), *y1 = malloc(n1 * 4), *y2 = malloc(n2 * 4);
        double *ref = malloc(n1 * sizeof *ref), *ref2 = malloc(n2 * sizeof *ref2);
        rope_ref(x, ref, n1, rows, ld, off, heads, hs, d, pos, inv, af, layout);
        rope_ref(x2, ref2, n2, rows, ld2, off2, 2, hs2, d, pos, inv, af, layout);
        clnpu_buffer *bx, *bx2, *bp;
        ck_assert_ok(clnpu_buffer_create(dev, n1 * 4, &bx));
        ck_assert_ok(clnpu_buffer_create(dev, n2 * 4, &bx2));
        ck_assert_ok(clnpu_buffer_create(dev, rows * 4, &bp));
        ck_assert_ok(clnpu_buffer_write(bx, 0, x, n1 * 4));
        ck_assert_ok(clnpu_buffer_write(bx2, 0, x2, n2 * 4));
        ck_assert_ok(clnpu_buffer_write(bp, 0, pos, rows * 4));
        const clnpu_view v1 = {bx, off, ld}, v2 = {bx2, off2, ld2};
        ck_assert_ok(clnpu_rope_apply2(dev, tab, v1, heads, hs, v2, 2, hs2, rows, bp, (clnpu_rope_layout)layout));
        ck_assert_ok(clnpu_buffer_read(bx, 0, y1, n1 * 4));
        ck_assert_ok(clnpu_buffer_read(bx2, 0, y2, n2 * 4));
        double e1 = test_rel64(y1, ref, n1), e2 = test_rel64(y2, ref2, n2);
        ck_assert_msg(e1 <= 1e-6 && e2 <= 1e-6, "rope2 layout %d: %.3g, %.3g", layout, e1, e2);
        /* a position past the table poisons both tensors' rows rather than reading past it */
        pos[rows - 1] = (int)maxpos;
        ck_assert_ok(clnpu_buffer_write(bp, 0, pos, rows * 4));
        ck_assert_ok(clnpu_rope_apply2(dev, tab, v1, heads, hs, v2, 2, hs2, rows, bp, (clnpu_rope_layout)layout));
        ck_assert_ok(clnpu_buffer_read(bx, 0, y1, n1 * 4));
        ck_assert_ok(clnpu_buffer_read(bx2, 0, y2, n2 * 4));
        ck_assert(isnan(y1[off + (rows - 1) * ld + (heads - 1) * hs]) && isnan(y2[off2 + (rows - 1) * ld2 + hs2]));
        ck_assert(!isnan(y1[off]) && !isnan(y2[off2]));
        free(x), free(x2), free(y1), free(y2), free(ref), free(ref2);
        clnpu_buffer_destroy(bx), clnpu_buffer_destroy(bx2), clnpu_buffer_destroy(bp);
    }
    clnpu_rope_table_destroy(tab);
}

void test_check_mla_rope_on_load(clnpu_device *dev, clnpu_mla_decode_args a, const int *lens)
{
    const size_t B = a.batch, H = a.heads, DR = a.rope_dim, R = a.rank, nq = B * H * DR, no = B * H * R;
    ck_assert(!a.q_pe_offset && (!a.q_pe_stride || a.q_pe_stride == DR));
    const clnpu_rope_config rc = {DR, 10000.0, CLNPU_ROPE_NONE, 0, 0, 0, 0, 0, 0};
    clnpu_rope_table *tab;
    ck_assert_ok(clnpu_rope_table_create(dev, &rc, a.max_seq_len, &tab));
    int *pos = malloc(B * sizeof *pos);
    for (size_t b = 0; b < B; b++) pos[b] = lens[b] - 1; /* the new token's position */
    float *raw = malloc(nq * 4), *o1 = malloc(no * 4), *o2 = malloc(no * 4);
    ck_assert_ok(clnpu_buffer_read((clnpu_buffer *)a.q_pe, 0, raw, nq * 4));
    clnpu_buffer *bp, *brot;
    ck_assert_ok(clnpu_buffer_create(dev, B * 4, &bp));
    ck_assert_ok(clnpu_buffer_create(dev, nq * 4, &brot));
    ck_assert_ok(clnpu_buffer_write(bp, 0, pos, B * 4));
    const float qnan = NAN;
    for (int layout = 0; layout < 2; layout++) {
        ck_assert_ok(clnpu_buffer_write(brot, 0, raw, nq * 4));
        ck_assert_ok(clnpu_rope_apply(dev, tab, (clnpu_view){brot, 0, H * DR}, B, H, DR, bp, (clnpu_rope_layout)layout));
        clnpu_mla_decode_args first = a, onload = a;
        first.q_pe = brot, first.q_pe_rope = NULL;
        onload.q_pe_rope = tab, onload.q_pe_layout = (clnpu_rope_layout)layout;
        ck_assert_ok(clnpu_buffer_fill(a.out, &qnan, 4));
        ck_assert_ok(clnpu_mla_decode(dev, &first));
        ck_assert_ok(clnpu_buffer_read(a.out, 0, o1, no * 4));
        ck_assert_ok(clnpu_buffer_fill(a.out, &qnan, 4));
        ck_assert_ok(clnpu_mla_decode(dev, &onload));
        ck_assert_ok(clnpu_buffer_read(a.out, 0, o2, no * 4));
        const double e = test_rel(o2, o1, no); /* the same rotation, the same sums */
        ck_assert_msg(e <= 1e-6, "mla with q_pe rotated on load, layout %d: %.3g", layout, e);
    }
    /* a table of another width is refused */
    const clnpu_rope_config wide = {DR + 2, 10000.0, CLNPU_ROPE_NONE, 0, 0, 0, 0, 0, 0};
    clnpu_rope_table *bad;
    ck_assert_ok(clnpu_rope_table_create(dev, &wide, 4, &bad));
    a.q_pe_rope = bad;
    ck_assert_int_eq(clnpu_mla_decode(dev, &a), CLNPU_ERR_INVALID_ARGUMENT);
    clnpu_rope_table_destroy(bad), clnpu_rope_table_destroy(tab);
    clnpu_buffer_destroy(bp), clnpu_buffer_destroy(brot);
    free(pos), free(raw), free(o1), free(o2);
}
