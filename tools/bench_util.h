/* Timing shared by the clnpu bench subcommands. */
#ifndef CLNPU_BENCH_UTIL_H
#define CLNPU_BENCH_UTIL_H
#include "cli.h"

typedef clnpu_status (*bench_fn)(void *ctx);

/* Monotonic seconds; a qsort comparator for doubles. */
double bench_now_s(void);
int bench_cmp_double(const void *a, const void *b);

/* Median time per call of fn (which enqueues work) over 9 batches after two warm-up calls; each
 * batch runs back to back and finishes once, as a decode step queues its kernels. Batches are
 * sized so the whole takes about min_time seconds. Returns a negative time on failure (*out_st). */
double bench_median(clnpu_device *dev, bench_fn fn, void *ctx, double min_time, clnpu_status *out_st);

/* Print one JSON line with the common fields plus extra "key":value pairs (already formatted). */
void bench_print_json(const char *op, const char *dtype, const char *shape_fields, double ms,
                      double gflops, double gbps, const char *extra, const clnpu_device *dev);
int bench_attention(int argc, char **argv);
int bench_mla(int argc, char **argv);
int bench_moe(int argc, char **argv);
int bench_dsa(int argc, char **argv);
#endif
