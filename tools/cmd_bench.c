/* `clnpu bench gemm`: medians of repeated GEMM / GEMV runs per shape and weight dtype, with
 * GFLOP/s, weight GB/s and the fraction of the bound profile's roofline. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"

static const char usage[] =
    "clnpu bench gemm " CLI_DEVICE_USAGE " [--dtype f32|bf16|f16|int8|fp8[,...]] "
    "[--shape MxNxK ...] [--min-time S] [--json] [--verbose]";

typedef struct shape {
    size_t m, n, k;
} shape;

/* Default shapes: square, A.X K1 decode projections at M = 1, 4, 16, and prefill M = 512. */
static size_t default_shapes(shape *out)
{
    size_t c = 0;
    static const size_t sq[] = {256, 512, 1024, 2048};
    for (size_t i = 0; i < 4; i++) out[c++] = (shape){sq[i], sq[i], sq[i]};
    static const size_t nk[][2] = {{1536, 7168}, {12288, 1536}, {576, 7168},
                                   {7168, 8192}, {2048, 7168}, {7168, 2048}};
    static const size_t ms[] = {1, 4, 16, 512};
    for (size_t j = 0; j < 4; j++)
        for (size_t i = 0; i < 6; i++) out[c++] = (shape){ms[j], nk[i][0], nk[i][1]};
    return c;
}

static clnpu_status make_desc(clnpu_dtype t, size_t n, size_t k, clnpu_weight_desc *d, void **data,
                              float **scales)
{
    float *w = malloc(n * k * sizeof *w);
    clnpu_error_clear(); /* failures here are the tool's own: cli_fail says "out of host memory" */
    if (!w) return CLNPU_ERR_OUT_OF_MEMORY;
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (size_t i = 0; i < n * k; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        w[i] = ((s >> 40) / 16777216.0f - 0.5f) * 0.2f;
    }
    memset(d, 0, sizeof *d);
    d->dtype = t, d->n = n, d->k = k;
    *scales = NULL;
    clnpu_status st = CLNPU_OK;
    switch (t) {
    case CLNPU_DTYPE_F32: *data = w; w = NULL; break;
    case CLNPU_DTYPE_BF16:
    case CLNPU_DTYPE_F16: {
        uint16_t *b = malloc(n * k * 2);
        for (size_t i = 0; b && i < n * k; i++)
            b[i] = t == CLNPU_DTYPE_BF16 ? clnpu_f32_to_bf16(w[i]) : clnpu_f32_to_f16(w[i]);
        *data = b;
        break;
    }
    case CLNPU_DTYPE_I8:
        *data = malloc(n * k);
        *scales = malloc(n * ((k + 127) / 128) * sizeof(float));
        d->group_k = 128;
        st = clnpu_quantize_i8(w, n, k, 128, *data, *scales);
        break;
    case CLNPU_DTYPE_FP8_E4M3:
        *data = malloc(n * k);
        *scales = malloc(((n + 127) / 128) * ((k + 127) / 128) * sizeof(float));
        st = clnpu_quantize_fp8(w, n, k, *data, *scales);
        break;
    default: st = CLNPU_ERR_UNSUPPORTED;
    }
    if (!st && !*data) st = CLNPU_ERR_OUT_OF_MEMORY;
    free(w);
    d->data = *data;
    d->scales = *scales;
    return st;
}

static double peak_for(const clnpu_profile *p, clnpu_dtype t)
{
    switch (t) {
    case CLNPU_DTYPE_BF16: return p->peak[CLNPU_PEAK_BF16] ? p->peak[CLNPU_PEAK_BF16] : p->peak[CLNPU_PEAK_FP32];
    case CLNPU_DTYPE_F16: return p->peak[CLNPU_PEAK_FP16] ? p->peak[CLNPU_PEAK_FP16] : p->peak[CLNPU_PEAK_FP32];
    default: return p->peak[CLNPU_PEAK_FP32]; /* activations are f32: weights widen to f32 */
    }
}

typedef struct gemm_ctx {
    clnpu_device *dev;
    clnpu_weight *w;
    clnpu_gemm_args a;
    size_t copies, rot;
} gemm_ctx;

static clnpu_status gemm_step(void *p)
{
    gemm_ctx *c = p;
    c->rot = (c->rot + 1) % c->copies;
    return clnpu_gemm(c->dev, c->w, c->rot, &c->a);
}

/* Time one shape: batches of back-to-back launches (as a decode step queues them), one finish
 * per batch; the median batch gives the per-launch time. Launches rotate over enough copies of
 * the weights to exceed the device's last-level cache twice, so weight-bound shapes are timed
 * from memory as in a real model, not from cache. */
static int bench_one(clnpu_device *dev, clnpu_dtype t, shape s, double min_time, bool json)
{
    clnpu_weight_desc d;
    void *data = NULL;
    float *scales = NULL;
    clnpu_weight *w = NULL;
    clnpu_buffer *bx = NULL, *by = NULL;
    clnpu_status st = make_desc(t, s.n, s.k, &d, &data, &scales);
    const double wsize = (double)s.n * s.k * clnpu_dtype_size(t);
    const double llc = (double)clnpu_device_get_info(dev)->global_cache_bytes;
    size_t copies = wsize >= 2 * llc ? 1 : (size_t)ceil(2 * llc / wsize);
    if (copies > 256) copies = 256;
    while (copies > 1 && copies * wsize > 1.0 * (1u << 30)) copies--;
    clnpu_weight_desc *ds = calloc(copies, sizeof *ds);
    if (!ds && !st) clnpu_error_clear(), st = CLNPU_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; !st && i < copies; i++) ds[i] = d;
    if (!st) st = clnpu_weight_upload(dev, ds, copies, &w);
    free(ds);
    if (!st) st = clnpu_buffer_create(dev, s.m * s.k * sizeof(float), &bx);
    if (!st) st = clnpu_buffer_create(dev, s.m * s.n * sizeof(float), &by);
    float one = 0.01f;
    if (!st) st = clnpu_buffer_fill(bx, &one, sizeof one);
    gemm_ctx c = {dev, w, {0}, copies, 0};
    c.a = clnpu_gemm_args_default();
    c.a.x = bx, c.a.y = by, c.a.m = s.m;
    double med = st ? -1 : bench_median(dev, gemm_step, &c, min_time, &st);
    free(data);
    free(scales);
    clnpu_weight_destroy(w);
    clnpu_buffer_destroy(bx);
    clnpu_buffer_destroy(by);
    if (st) return cli_fail("bench", st);
    double flops = 2.0 * s.m * s.n * s.k;
    double wb = wsize; /* checkpoint bytes, no padding */
    const clnpu_profile *p = clnpu_device_get_profile(dev);
    double io = wb + 4.0 * (s.m * s.k + s.m * s.n);
    double roof = fmax(flops / peak_for(p, t), io / p->memory_bandwidth);
    if (json) {
        char shp[96], extra[48];
        snprintf(shp, sizeof shp, "\"m\":%zu,\"n\":%zu,\"k\":%zu", s.m, s.n, s.k);
        snprintf(extra, sizeof extra, "\"roofline_pct\":%.1f", 100 * roof / med);
        bench_print_json("gemm", clnpu_dtype_name(t), shp, med * 1e3, flops / med / 1e9, wb / med / 1e9,
                         extra, dev);
    } else
        printf("%-5s %5zu %6zu %6zu %10.3f %9.1f %8.1f %7.1f%%\n", clnpu_dtype_name(t), s.m, s.n,
               s.k, med * 1e3, flops / med / 1e9, wb / med / 1e9, 100 * roof / med);
    fflush(stdout);
    return CLI_EXIT_OK;
}

/* MxNxK, each 1..2^24 and no operand past 2^32 elements (16 GiB of f32): digits only, since
 * sscanf's %zu takes "-1" as SIZE_MAX. */
static bool parse_shape(const char *s, shape *out)
{
    size_t *dims[3] = {&out->m, &out->n, &out->k};
    for (int i = 0; i < 3; i++) {
        if (*s < '0' || *s > '9') return false;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno || !v || v > (1u << 24) || *end != (i < 2 ? 'x' : '\0')) return false;
        *dims[i] = (size_t)v;
        s = end + (i < 2);
    }
    const double lim = 4294967296.0;
    return (double)out->m * out->k <= lim && (double)out->n * out->k <= lim && (double)out->m * out->n <= lim;
}

static int bench_gemm(int argc, char **argv)
{
    enum { OPT_DTYPE = CLI_OPT_FIRST_FREE, OPT_SHAPE, OPT_JSON, OPT_MIN_TIME };
    static const struct option longopts[] = {
        CLI_DEVICE_LONGOPTS,
        {"dtype", required_argument, NULL, OPT_DTYPE}, {"shape", required_argument, NULL, OPT_SHAPE},
        {"json", no_argument, NULL, OPT_JSON}, {"min-time", required_argument, NULL, OPT_MIN_TIME},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    cli_device_args da = {0};
    shape shapes[64];
    size_t nshapes = 0;
    clnpu_dtype dtypes[CLNPU_DTYPE_COUNT];
    size_t ndt = 0;
    bool json = false;
    double min_time = 0.5;
    bool verbose = false;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int r = cli_device_option_checked(opt, optarg, &da, "bench gemm", usage);
        if (r == 1) continue;
        if (r < 0) return -r;
        switch (opt) {
        case 'h':
            printf("usage: %s\n\nMedian time per launch of Y = X.W^T (X f32, W of the given dtype) "
                   "over 9 batches after warm-up;\nGFLOP/s, GB/s of weight bytes, and the fraction of "
                   "the profile's roofline.\nDefault: every dtype on square 256..2048, the A.X K1 decode "
                   "shapes at M = 1, 4, 16 and prefill M = 512.\n", usage);
            return CLI_EXIT_OK;
        case OPT_DTYPE: {
            char buf[128];
            snprintf(buf, sizeof buf, "%s", optarg);
            for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
                int t = clnpu_dtype_parse(tok);
                if (t < 0 || t == CLNPU_DTYPE_I32 || ndt == CLNPU_DTYPE_COUNT)
                    return cli_usage_error("bench gemm", usage, "unknown weight dtype '%s'", tok);
                dtypes[ndt++] = (clnpu_dtype)t;
            }
            break;
        }
        case OPT_SHAPE:
            if (nshapes == 64 || !parse_shape(optarg, &shapes[nshapes]))
                return cli_usage_error("bench gemm", usage, "bad shape '%s' (expected MxNxK, each 1..16777216, operands up to 2^32 elements)", optarg);
            nshapes++;
            break;
        case OPT_JSON: json = true; break;
        case 'v': verbose = true; break;
        case OPT_MIN_TIME:
            if (!cli_parse_double(optarg, 1e-6, 3600, &min_time))
                return cli_usage_error("bench gemm", usage, "bad --min-time '%s'", optarg);
            break;
        default: return cli_usage_error("bench gemm", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("bench gemm", usage, "unexpected argument '%s'", argv[optind]);
    if (!nshapes) nshapes = default_shapes(shapes);
    if (!ndt) {
        const clnpu_dtype all[] = {CLNPU_DTYPE_F32, CLNPU_DTYPE_BF16, CLNPU_DTYPE_F16, CLNPU_DTYPE_I8,
                                   CLNPU_DTYPE_FP8_E4M3};
        memcpy(dtypes, all, sizeof all);
        ndt = 5;
    }
    clnpu_device *dev;
    clnpu_status st = cli_open_device(&da, false, &dev);
    if (st) return cli_fail("bench", st);
    clnpu_device_set_tuning_verbose(dev, verbose);
    if (!json) {
        printf("device %zu: %s, profile %s\n", clnpu_device_get_info(dev)->index,
               clnpu_device_get_info(dev)->name, clnpu_device_get_profile(dev)->name);
        printf("%-5s %5s %6s %6s %10s %9s %8s %8s\n", "dtype", "M", "N", "K", "median ms", "GFLOP/s",
               "W GB/s", "roofline");
    }
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < nshapes && rc == CLI_EXIT_OK; i++)
        for (size_t j = 0; j < ndt && rc == CLI_EXIT_OK; j++) rc = bench_one(dev, dtypes[j], shapes[i], min_time, json);
    clnpu_device_close(dev);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    static const char top[] = "clnpu bench <op> [options]   (ops: gemm, attention, mla, moe, dsa)";
    if (argc < 2) return cli_usage_error("bench", top, "missing operation");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: %s\n\nRun 'clnpu bench <op> --help' for an operation's options.\n", top);
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "gemm")) return bench_gemm(argc - 1, argv + 1);
    if (!strcmp(argv[1], "attention")) return bench_attention(argc - 1, argv + 1);
    if (!strcmp(argv[1], "mla")) return bench_mla(argc - 1, argv + 1);
    if (!strcmp(argv[1], "moe")) return bench_moe(argc - 1, argv + 1);
    if (!strcmp(argv[1], "dsa")) return bench_dsa(argc - 1, argv + 1);
    return cli_usage_error("bench", top, "unknown operation '%s'", argv[1]);
}
