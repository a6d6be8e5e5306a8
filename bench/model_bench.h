/* gemm_compare --model: the model part of the one-run performance report. */
#ifndef CLNPU_BENCH_MODEL_BENCH_H
#define CLNPU_BENCH_MODEL_BENCH_H
#include "clnpu/device.h"
/* Prefill and decode of a random-weight model against the given OpenBLAS rate (GFLOP/s) and
 * STREAM triad (GB/s) of the same run; with triad_again, each decode timing is bracketed by two
 * more triads and compared with their mean. Prints a table; 0 on success. */
int model_bench_run(clnpu_device *dev, const char *config_path, double oblas_gflops, double triad_gbs,
                    double (*triad_again)(void));
#endif
