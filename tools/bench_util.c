/* Timing shared by the clnpu bench subcommands: medians of batched runs. */
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include "bench_util.h"

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(clnpu_device *dev, bench_fn fn, void *ctx, double min_time, clnpu_status *out_st)
{
    clnpu_status st = CLNPU_OK;
    for (int i = 0; i < 2 && !st; i++) st = fn(ctx); /* builds variants, first-launch costs */
    if (!st) st = clnpu_device_finish(dev);
    double t0 = bench_now_s();
    if (!st) st = fn(ctx);
    if (!st) st = clnpu_device_finish(dev);
    const double single = bench_now_s() - t0;
    int batch = single > 0 ? (int)(min_time / 9 / single) : 1;
    if (batch < 1) batch = 1;
    if (batch > 200) batch = 200;
    double times[9];
    for (int n = 0; n < 9 && !st; n++) {
        t0 = bench_now_s();
        for (int i = 0; i < batch && !st; i++) st = fn(ctx);
        if (!st) st = clnpu_device_finish(dev);
        times[n] = (bench_now_s() - t0) / batch;
    }
    *out_st = st;
    if (st) return -1;
    qsort(times, 9, sizeof times[0], bench_cmp_double);
    return times[4];
}

void bench_print_json(const char *op, const char *dtype, const char *shape, double ms, double gflops,
                      double gbps, const char *extra, const clnpu_device *dev)
{
    /* the kernel that ran, from the capability table: bench ops named as clnpu_op_variant's */
    const char *m = strstr(shape, "\"m\":");
    const char *vop = !strcmp(op, "attention") ? "flash_attention" : !strcmp(op, "mla") ? "mla_decode"
                      : !strcmp(op, "moe") ? "gemm_grouped" : op;
    printf("{\"op\":\"%s\",\"dtype\":\"%s\",%s,\"ms\":%.4f,\"gflops\":%.2f,\"gbps\":%.2f%s%s,"
           "\"device\":\"%s\",\"profile\":\"%s\",\"variant\":\"%s\"}\n",
           op, dtype, shape, ms, gflops, gbps, extra && *extra ? "," : "", extra ? extra : "",
           clnpu_device_get_info(dev)->name, clnpu_device_get_profile(dev)->name,
           clnpu_op_variant(dev, vop, m ? strtoul(m + 4, NULL, 10) : 0));
    fflush(stdout);
}
