/* `clnpu bench attention | mla | moe`: the transformer kernels at A.X K1 shapes. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

typedef struct op_opts {
    cli_device_args da;
    bool json;
    double min_time;
    size_t sizes[8], nsizes; /* T for attention, context for mla, tokens for moe */
    size_t heads;
} op_opts;

/* Parse the options common to the op benchmarks; returns -1 to continue, else an exit code. */
static int parse_op_opts(int argc, char **argv, const char *op, const char *usage, const char *help,
                         const char *size_flag, op_opts *o)
{
    enum { OPT_JSON = CLI_OPT_FIRST_FREE, OPT_MIN_TIME, OPT_SIZE, OPT_HEADS };
    struct option longopts[] = {CLI_DEVICE_LONGOPTS,
                                {"json", no_argument, NULL, OPT_JSON},
                                {"min-time", required_argument, NULL, OPT_MIN_TIME},
                                {size_flag, required_argument, NULL, OPT_SIZE},
                                {"heads", required_argument, NULL, OPT_HEADS},
                                {"help", no_argument, NULL, 'h'},
                                {NULL, 0, NULL, 0}};
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int r = cli_device_option(opt, optarg, &o->da);
        if (r == 1) continue;
        if (r == -1) return cli_usage_error(op, usage, "bad value '%s' for --device", optarg);
        switch (opt) {
        case 'h': printf("usage: %s\n\n%s\n", usage, help); return CLI_EXIT_OK;
        case OPT_JSON: o->json = true; break;
        case OPT_MIN_TIME:
            if (!cli_parse_double(optarg, 1e-6, 3600, &o->min_time)) return cli_usage_error(op, usage, "bad --min-time '%s'", optarg);
            break;
        case OPT_SIZE:
            if (o->nsizes == 8 || !cli_parse_size(optarg, &o->sizes[o->nsizes]) || !o->sizes[o->nsizes])
                return cli_usage_error(op, usage, "bad --%s '%s'", size_flag, optarg);
            o->nsizes++;
            break;
        case OPT_HEADS:
            if (!cli_parse_size(optarg, &o->heads) || !o->heads) return cli_usage_error(op, usage, "bad --heads '%s'", optarg);
            break;
        default: return cli_usage_error(op, usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error(op, usage, "unexpected argument '%s'", argv[optind]);
    return -1;
}

static clnpu_status fill_random(clnpu_buffer *b, float scale)
{
    size_t n = clnpu_buffer_size(b) / 4;
    float *v = malloc(n * sizeof *v);
    if (!v) return CLNPU_ERR_OUT_OF_MEMORY;
    uint64_t s = 0x2545F4914F6CDD1DULL;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        v[i] = ((s >> 40) / 16777216.0f - 0.5f) * scale;
    }
    clnpu_status st = clnpu_buffer_write(b, 0, v, n * 4);
    free(v);
    return st;
}

/* ---- attention ---- */

typedef struct attn_ctx {
    clnpu_device *dev;
    clnpu_attention_args a;
} attn_ctx;

static clnpu_status attn_step(void *p)
{
    attn_ctx *c = p;
    return clnpu_flash_attention(c->dev, &c->a);
}

typedef struct gemm_rate_ctx {
    clnpu_device *dev;
    clnpu_weight *w;
    clnpu_gemm_args a;
} gemm_rate_ctx;

static clnpu_status gemm_rate_step(void *p)
{
    gemm_rate_ctx *c = p;
    return clnpu_gemm(c->dev, c->w, 0, &c->a);
}

/* The device's own f32 GEMM rate at 1024^3, measured in this run, as the yardstick. */
static double gemm_rate(clnpu_device *dev, double min_time, clnpu_status *st)
{
    const size_t n = 1024;
    float *w = calloc(n * n, sizeof *w);
    gemm_rate_ctx c = {dev, NULL, clnpu_gemm_args_default()};
    clnpu_buffer *x = NULL, *y = NULL;
    for (size_t i = 0; w && i < n * n; i++) w[i] = (float)(i % 7) * 0.01f;
    clnpu_weight_desc d = {CLNPU_DTYPE_F32, n, n, w, NULL, 0};
    *st = w ? clnpu_weight_upload(dev, &d, 1, &c.w) : CLNPU_ERR_OUT_OF_MEMORY;
    if (!*st) *st = clnpu_buffer_create(dev, n * n * 4, &x);
    if (!*st) *st = clnpu_buffer_create(dev, n * n * 4, &y);
    if (!*st) *st = fill_random(x, 1.0f);
    c.a.x = x, c.a.y = y, c.a.m = n;
    double t = *st ? -1 : bench_median(dev, gemm_rate_step, &c, min_time, st);
    free(w);
    clnpu_weight_destroy(c.w);
    clnpu_buffer_destroy(x);
    clnpu_buffer_destroy(y);
    return t > 0 ? 2.0 * n * n * n / t / 1e9 : 0;
}

int bench_attention(int argc, char **argv)
{
    static const char usage[] = "clnpu bench attention " CLI_DEVICE_USAGE " [--tokens T ...] [--heads H] [--min-time S] [--json]";
    op_opts o = {.min_time = 1.0, .heads = 16};
    int rc = parse_op_opts(argc, argv, "bench attention", usage,
                           "Causal flash attention (prefill, no prefix) with A.X K1 head dims q/k 192, v 128.\n"
                           "GFLOP/s count unmasked work only; 'vs gemm' divides by this device's f32 GEMM\n"
                           "rate at 1024^3 measured in the same run. Default T = 512 and 2048, 16 heads.",
                           "tokens", &o);
    if (rc >= 0) return rc;
    if (!o.nsizes) o.sizes[0] = 512, o.sizes[1] = 2048, o.nsizes = 2;
    clnpu_device *dev;
    clnpu_status st = cli_open_device(&o.da, false, &dev);
    if (st) return cli_fail("bench", st);
    double gemm = gemm_rate(dev, o.min_time, &st);
    if (!o.json && !st)
        printf("device %s, profile %s; f32 GEMM 1024^3: %.1f GFLOP/s\n%6s %6s %10s %9s %8s\n",
               clnpu_device_get_info(dev)->name, clnpu_device_get_profile(dev)->name, gemm, "T", "heads",
               "median ms", "GFLOP/s", "vs gemm");
    for (size_t i = 0; i < o.nsizes && !st; i++) {
        const size_t T = o.sizes[i], H = o.heads, dqk = 192, dv = 128;
        clnpu_buffer *q = NULL, *k = NULL, *v = NULL, *out = NULL;
        st = clnpu_buffer_create(dev, T * H * dqk * 4, &q);
        if (!st) st = clnpu_buffer_create(dev, T * H * dqk * 4, &k);
        if (!st) st = clnpu_buffer_create(dev, T * H * dv * 4, &v);
        if (!st) st = clnpu_buffer_create(dev, T * H * dv * 4, &out);
        if (!st) st = fill_random(q, 1.0f);
        if (!st) st = fill_random(k, 1.0f);
        if (!st) st = fill_random(v, 1.0f);
        attn_ctx c = {dev, {.q = {q, 0, H * dqk}, .k = {k, 0, H * dqk}, .v = {v, 0, H * dv}, .o = {out, 0, H * dv},
                            .q_head_stride = dqk, .k_head_stride = dqk, .v_head_stride = dv,
                            .o_head_stride = dv, .heads = H, .dqk = dqk, .dv = dv, .tokens = T,
                            .prefix = 0, .scale = 0.0721688f}};
        double t = st ? -1 : bench_median(dev, attn_step, &c, o.min_time, &st);
        clnpu_buffer_destroy(q), clnpu_buffer_destroy(k), clnpu_buffer_destroy(v), clnpu_buffer_destroy(out);
        if (st) break;
        double flops = (double)H * T * (T + 1) / 2 * 2.0 * (dqk + dv);
        double gf = flops / t / 1e9;
        if (o.json) {
            char shp[96], extra[64];
            snprintf(shp, sizeof shp, "\"t\":%zu,\"heads\":%zu,\"dqk\":%zu,\"dv\":%zu", T, H, dqk, dv);
            snprintf(extra, sizeof extra, "\"vs_gemm\":%.3f", gf / gemm);
            bench_print_json("attention", "f32", shp, t * 1e3, gf, 0, extra, dev);
        } else {
            printf("%6zu %6zu %10.3f %9.1f %7.2fx\n", T, H, t * 1e3, gf, gf / gemm);
        }
    }
    clnpu_device_close(dev);
    return st ? cli_fail("bench", st) : CLI_EXIT_OK;
}

/* ---- MLA decode ---- */

typedef struct mla_ctx {
    clnpu_device *dev;
    clnpu_mla_decode_args a;
} mla_ctx;

static clnpu_status mla_step(void *p)
{
    mla_ctx *c = p;
    return clnpu_mla_decode(c->dev, &c->a);
}

int bench_mla(int argc, char **argv)
{
    static const char usage[] = "clnpu bench mla " CLI_DEVICE_USAGE " [--context L ...] [--heads H] [--min-time S] [--json]";
    op_opts o = {.min_time = 1.0, .heads = 64};
    int rc = parse_op_opts(argc, argv, "bench mla", usage,
                           "Absorbed MLA decode for one sequence over a paged latent cache (rank 512,\n"
                           "rope 64, f32, pages of 64 rows), A.X K1's 64 heads by default. GB/s counts\n"
                           "the latent cache bytes read once. Default context 4096 and 32768.",
                           "context", &o);
    if (rc >= 0) return rc;
    if (!o.nsizes) o.sizes[0] = 4096, o.sizes[1] = 32768, o.nsizes = 2;
    clnpu_device *dev;
    clnpu_status st = cli_open_device(&o.da, false, &dev);
    if (st) return cli_fail("bench", st);
    if (!o.json)
        printf("device %s, profile %s\n%8s %6s %10s %9s %9s\n", clnpu_device_get_info(dev)->name,
               clnpu_device_get_profile(dev)->name, "context", "heads", "median ms", "GFLOP/s", "cache GB/s");
    for (size_t i = 0; i < o.nsizes && !st; i++) {
        const size_t L = o.sizes[i], H = o.heads, R = 512, DR = 64, page = 64, blocks = (L + page - 1) / page;
        clnpu_buffer *qa = NULL, *qp = NULL, *cache = NULL, *bt = NULL, *len = NULL, *out = NULL;
        st = clnpu_buffer_create(dev, H * R * 4, &qa);
        if (!st) st = clnpu_buffer_create(dev, H * DR * 4, &qp);
        if (!st) st = clnpu_buffer_create(dev, blocks * page * (R + DR) * 4, &cache);
        if (!st) st = clnpu_buffer_create(dev, blocks * 4, &bt);
        if (!st) st = clnpu_buffer_create(dev, 4, &len);
        if (!st) st = clnpu_buffer_create(dev, H * R * 4, &out);
        if (!st) st = fill_random(qa, 0.1f);
        if (!st) st = fill_random(qp, 0.1f);
        if (!st) st = fill_random(cache, 1.0f);
        int *ids = malloc(blocks * sizeof *ids), l = (int)L;
        for (size_t b = 0; ids && b < blocks; b++) ids[b] = (int)(blocks - 1 - b); /* not in order */
        if (!st) st = ids ? clnpu_buffer_write(bt, 0, ids, blocks * 4) : CLNPU_ERR_OUT_OF_MEMORY;
        if (!st) st = clnpu_buffer_write(len, 0, &l, 4);
        free(ids);
        mla_ctx c = {dev, {qa, qp, cache, page, bt, blocks, len, L, 1, H, R, DR, 0.0721688f, out, 0, 0, 0, CLNPU_DTYPE_F32, NULL, CLNPU_ROPE_INTERLEAVED}};
        double t = st ? -1 : bench_median(dev, mla_step, &c, o.min_time, &st);
        clnpu_buffer *bufs[] = {qa, qp, cache, bt, len, out};
        for (size_t j = 0; j < 6; j++) clnpu_buffer_destroy(bufs[j]);
        if (st) break;
        double bytes = (double)L * (R + DR) * 4, flops = 2.0 * H * L * (R + DR + R);
        if (o.json) {
            char shp[64];
            snprintf(shp, sizeof shp, "\"context\":%zu,\"heads\":%zu", L, H);
            bench_print_json("mla", "f32", shp, t * 1e3, flops / t / 1e9, bytes / t / 1e9, NULL, dev);
        } else {
            printf("%8zu %6zu %10.3f %9.1f %9.2f\n", L, H, t * 1e3, flops / t / 1e9, bytes / t / 1e9);
        }
    }
    clnpu_device_close(dev);
    return st ? cli_fail("bench", st) : CLI_EXIT_OK;
}

/* ---- one MoE layer ---- */

typedef struct moe_ctx {
    clnpu_device *dev;
    clnpu_moe_block *blk;
    clnpu_buffer *x, *y;
    size_t T, H;
} moe_ctx;

static clnpu_status moe_step(void *p)
{
    moe_ctx *c = p;
    return clnpu_moe_block_forward(c->dev, c->blk, (clnpu_view){c->x, 0, c->H}, c->T, (clnpu_view){c->y, 0, c->H});
}

int bench_moe(int argc, char **argv)
{
    static const char usage[] = "clnpu bench moe " CLI_DEVICE_USAGE " [--tokens T ...] [--min-time S] [--json]";
    op_opts o = {.min_time = 1.0};
    int rc = parse_op_opts(argc, argv, "bench moe", usage,
                           "One MoE layer (fp32 router, routing, grouped SwiGLU experts, shared expert,\n"
                           "combine) with bf16 weights at the axk1-mini size: hidden 1024, 64 experts of\n"
                           "width 512 in 8 groups, top-8 from 4 groups, 1 shared. GB/s counts the expert\n"
                           "weight bytes the tokens touch. Default 1, 16 and 64 tokens.",
                           "tokens", &o);
    if (rc >= 0) return rc;
    if (!o.nsizes) o.sizes[0] = 1, o.sizes[1] = 16, o.sizes[2] = 64, o.nsizes = 3;
    const size_t E = 64, H = 1024, I = 512;
    const clnpu_moe_config cfg = {E, 8, 4, 8, true, 2.5f, false};
    clnpu_device *dev;
    clnpu_status st = cli_open_device(&o.da, false, &dev);
    if (st) return cli_fail("bench", st);
    /* One random bf16 matrix reused for every expert keeps host memory small; the device still
     * holds (and streams) a separate copy per expert. */
    uint16_t *wg = malloc(I * H * 2), *wd = malloc(H * I * 2), *wr = malloc(E * H * 2);
    uint64_t s = 1;
    for (size_t i = 0; wg && wd && i < I * H; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        wg[i] = clnpu_f32_to_bf16(((s >> 40) / 16777216.0f - 0.5f) * 0.05f);
        wd[i] = clnpu_f32_to_bf16(((s >> 20 & 0xffffff) / 16777216.0f - 0.5f) * 0.05f);
    }
    for (size_t i = 0; wr && i < E * H; i++) wr[i] = clnpu_f32_to_bf16((float)((i * 2654435761u) % 1000) * 1e-4f - 0.05f);
    clnpu_weight_desc *g = calloc(E, sizeof *g), *d = calloc(E, sizeof *d);
    if (!wg || !wd || !wr || !g || !d) st = CLNPU_ERR_OUT_OF_MEMORY;
    for (size_t e = 0; !st && e < E; e++) {
        g[e] = (clnpu_weight_desc){CLNPU_DTYPE_BF16, I, H, wg, NULL, 0};
        d[e] = (clnpu_weight_desc){CLNPU_DTYPE_BF16, H, I, wd, NULL, 0};
    }
    moe_ctx c = {dev, NULL, NULL, NULL, 0, H};
    size_t maxT = 0;
    for (size_t i = 0; i < o.nsizes; i++) maxT = o.sizes[i] > maxT ? o.sizes[i] : maxT;
    if (!st) {
        clnpu_moe_weights w = {{CLNPU_DTYPE_BF16, E, H, wr, NULL, 0}, NULL, g, g, d, &g[0], &g[0], &d[0]};
        st = clnpu_moe_block_create(dev, &cfg, &w, maxT, &c.blk);
    }
    if (!st) st = clnpu_buffer_create(dev, maxT * H * 4, &c.x);
    if (!st) st = clnpu_buffer_create(dev, maxT * H * 4, &c.y);
    if (!st) st = fill_random(c.x, 2.0f);
    if (!o.json && !st)
        printf("device %s, profile %s; MoE layer weights %.1f MiB (bf16)\n%7s %10s %9s %9s %9s\n",
               clnpu_device_get_info(dev)->name, clnpu_device_get_profile(dev)->name,
               clnpu_moe_block_device_bytes(c.blk) / 1048576.0, "tokens", "median ms", "tokens/s", "GFLOP/s",
               "W GB/s");
    for (size_t i = 0; i < o.nsizes && !st; i++) {
        c.T = o.sizes[i];
        double t = bench_median(dev, moe_step, &c, o.min_time, &st);
        if (st) break;
        /* Distinct experts touched (read back from the last routing) decide the weight bytes. */
        int *ids = malloc(c.T * cfg.top_k * sizeof *ids), used[64] = {0}, distinct = 0;
        if (ids && !clnpu_moe_block_last_routing(c.blk, ids, NULL))
            for (size_t j = 0; j < c.T * cfg.top_k; j++)
                if (!used[ids[j]]++) distinct++;
        free(ids);
        double wbytes = (distinct + 1.0) * 3 * H * I * 2 + E * H * 4;
        double flops = c.T * (2.0 * E * H + (cfg.top_k + 1) * 6.0 * H * I);
        if (o.json) {
            char shp[64], extra[48];
            snprintf(shp, sizeof shp, "\"tokens\":%zu,\"hidden\":%zu,\"experts\":%zu", c.T, H, E);
            snprintf(extra, sizeof extra, "\"tokens_per_s\":%.1f", c.T / t);
            bench_print_json("moe", "bf16", shp, t * 1e3, flops / t / 1e9, wbytes / t / 1e9, extra, dev);
        } else {
            printf("%7zu %10.3f %9.1f %9.1f %9.1f\n", c.T, t * 1e3, c.T / t, flops / t / 1e9, wbytes / t / 1e9);
        }
    }
    clnpu_moe_block_destroy(c.blk);
    clnpu_buffer_destroy(c.x);
    clnpu_buffer_destroy(c.y);
    free(wg), free(wd), free(wr), free(g), free(d);
    clnpu_device_close(dev);
    return st ? cli_fail("bench", st) : CLI_EXIT_OK;
}
