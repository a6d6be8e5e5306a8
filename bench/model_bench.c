/* The model part of gemm_compare --model: a random-weight model (axk1-mini) end to end in the
 * same run as the GEMM tables — prefill against OpenBLAS's sgemm rate, decode against the memory
 * roofline at the STREAM triad of the run, several sequences against one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clnpu/clnpu.h"
#include "model_bench.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static clnpu_status fail_here(clnpu_status st, const char *what)
{
    if (st) fprintf(stderr, "gemm_compare --model: %s: %s\n", what, clnpu_error_message());
    return st;
}

/* Median seconds of `reps` prefills of T tokens into sequence 0 (reset before each). */
static clnpu_status time_prefill(clnpu_model *m, const int *ids, size_t T, size_t V, int reps, double *out_s)
{
    double t[8];
    float *last = malloc(V * sizeof *last);
    clnpu_status st = last ? CLNPU_OK : CLNPU_ERR_OUT_OF_MEMORY;
    for (int r = 0; r < reps && !st; r++) {
        clnpu_model_reset(m, 0);
        const double t0 = now_s();
        st = clnpu_model_prefill_last(m, 0, ids, T, last);
        t[r] = now_s() - t0;
    }
    free(last);
    qsort(t, (size_t)reps, sizeof t[0], cmp_d);
    *out_s = t[reps / 2];
    return st;
}

/* Tokens per second of `steps` greedy decode steps of S sequences (each prefilled with P ids),
 * sampled on the device as `clnpu run` generates. */
static clnpu_status time_decode(clnpu_model *m, const int *ids, size_t P, size_t S, size_t steps, double *out_tps)
{
    clnpu_status st = CLNPU_OK;
    size_t *seqs = malloc(S * sizeof *seqs);
    int *cur = malloc(S * sizeof *cur), *next = malloc(S * sizeof *next);
    if (!seqs || !cur || !next) st = CLNPU_ERR_OUT_OF_MEMORY;
    for (size_t q = 0; q < S && !st; q++) {
        clnpu_model_reset(m, q);
        seqs[q] = q, cur[q] = ids[(P + q) % P];
        st = clnpu_model_prefill(m, q, ids + q % 7, P - 7, NULL);
    }
    const clnpu_sampling greedy = {0, 0, 0, 0};
    double t0 = 0;
    for (size_t i = 0; i < steps + 2 && !st; i++) {
        if (i == 2) t0 = now_s(); /* two warm-up steps: builds */
        st = clnpu_model_decode_sample(m, seqs, cur, S, &greedy, i, next, NULL);
        memcpy(cur, next, S * sizeof *cur);
    }
    *out_tps = st ? NAN : (double)(steps * S) / (now_s() - t0);
    free(seqs), free(cur), free(next);
    return st;
}

int model_bench_run(clnpu_device *dev, const char *config_path, double oblas_gflops, double triad_gbs)
{
    clnpu_model_config cfg;
    if (fail_here(clnpu_model_config_load(config_path, &cfg), config_path)) return 1;
    double total, active;
    clnpu_model_config_params(&cfg, &total, &active);
    const double vh = (double)cfg.vocab_size * cfg.hidden_size;
    /* Prefill work per token: every active matrix but the embedding (a row lookup) and the LM
     * head (run for the last position only); attention's own FLOPs not counted. */
    const double flops_tok = 2.0 * (active - 2 * vh);
    /* Decode reads every active weight but the embedding table once per step. */
    const double wparams = active - vh;
    const size_t T = 512, V = cfg.vocab_size;
    int *ids = malloc(T * sizeof *ids);
    for (size_t i = 0; i < T; i++) ids[i] = (int)(1 + (i * 7919) % (V - 1));
    printf("\nModel %s (random weights): %.4g M parameters, %.4g M active per token\n", config_path, total / 1e6,
           active / 1e6);
    printf("%-34s %10s %12s %10s %9s\n", "run", "tokens/s", "rate", "reference", "ratio");
    int rc = 0;
    double tps1[2] = {NAN, NAN};
    for (int wi = 0; wi < 2 && !rc; wi++) {
        const int wdt = wi ? CLNPU_DTYPE_I8 : -1; /* random weights are bf16 by default */
        const char *wname = wi ? "int8" : "bf16";
        clnpu_model_options o = clnpu_model_options_default();
        o.max_sequences = 32, o.max_context = T + 64, o.max_tokens = T, o.weights = wdt;
        clnpu_model *m = NULL;
        if (fail_here(clnpu_model_create(dev, &cfg, NULL, &o, &m), "creating the model")) {
            rc = 1;
            break;
        }
        double s = NAN, tps = NAN;
        if (!wi) { /* prefill once, with bf16 weights (int8 prefill runs the same f32 FMAs) */
            if (fail_here(time_prefill(m, ids, T, V, 3, &s), "prefill")) rc = 1;
            const double gf = T * flops_tok / s / 1e9;
            if (!rc)
                printf("%-34s %10.1f %8.1f GF/s %6.1f GF/s %8.2fx  (OpenBLAS sgemm 2048^3, this run)\n",
                       "prefill 512 tokens, bf16", T / s, gf, oblas_gflops, gf / oblas_gflops);
        }
        const size_t batches[3] = {1, 8, 32};
        for (int b = 0; b < 3 && !rc; b++) {
            if (fail_here(time_decode(m, ids, 64, batches[b], batches[b] == 1 ? 48 : 16, &tps), "decode")) {
                rc = 1;
                break;
            }
            char label[64];
            snprintf(label, sizeof label, "decode %s, %zu sequence%s", wname, batches[b], batches[b] > 1 ? "s" : "");
            if (batches[b] == 1) {
                tps1[wi] = tps;
                const double bytes = wparams * (wi ? 1.0 : 2.0), gbs = tps * bytes / 1e9;
                printf("%-34s %10.1f %8.1f GB/s %6.1f GB/s %8.2fx  (memory roofline at STREAM triad)\n", label, tps,
                       gbs, triad_gbs, gbs / triad_gbs);
            } else {
                printf("%-34s %10.1f %12s %10s %8.2fx  (vs 1 sequence)\n", label, tps, "", "", tps / tps1[wi]);
            }
            fflush(stdout);
        }
        clnpu_model_destroy(m);
    }
    if (!rc)
        printf("int8 / bf16 decode tokens/s: %.2fx (bytes per token %.2fx fewer)\n", tps1[1] / tps1[0], 2.0);
    free(ids);
    return rc;
}
