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
 * sampled on the device as `clnpu run` generates: the median of three runs from the same
 * prefilled context (one run of 48 short int8 steps moved by up to 1.4x between runs). */
static clnpu_status time_decode(clnpu_model *m, const int *ids, size_t P, size_t S, size_t steps, double *out_tps)
{
    enum { RUNS = 3 };
    clnpu_status st = CLNPU_OK;
    size_t *seqs = malloc(S * sizeof *seqs);
    int *cur = malloc(S * sizeof *cur), *next = malloc(S * sizeof *next);
    double tps[RUNS];
    if (!seqs || !cur || !next) st = CLNPU_ERR_OUT_OF_MEMORY;
    for (int run = 0; run < RUNS && !st; run++) {
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
        tps[run] = (double)(steps * S) / (now_s() - t0);
    }
    qsort(tps, RUNS, sizeof tps[0], cmp_d);
    *out_tps = st ? NAN : tps[RUNS / 2];
    free(seqs), free(cur), free(next);
    return st;
}

/* Weight and latent-cache bytes a decode step of B sequences reads, as parameters (weights at
 * `bpp` bytes each, the f32 cache at 4). Routed experts: with random routing each token picks k
 * of E experts uniformly and independently of the other tokens, so a step touches
 * E * (1 - (1 - k/E)^B) distinct experts on average; everything else is read once per step. */
static double step_bytes(const clnpu_model_config *c, double wparams, double bpp, size_t B, double ctx)
{
    size_t moe_layers = 0;
    for (size_t l = 0; l < c->num_hidden_layers; l++) moe_layers += clnpu_model_config_is_moe(c, l);
    const double E = (double)c->n_routed_experts, k = (double)c->num_experts_per_tok;
    const double pe = 3.0 * (double)c->moe_intermediate_size * (double)c->hidden_size; /* one expert */
    const double fixed = wparams - (double)moe_layers * k * pe;
    const double distinct = E > 0 ? E * (1.0 - pow(1.0 - k / E, (double)B)) : 0;
    const double cache = (double)B * (double)c->num_hidden_layers * ctx *
                         (double)(c->kv_lora_rank + c->qk_rope_head_dim) * 4.0;
    return bpp * (fixed + (double)moe_layers * distinct * pe) + cache;
}

int model_bench_run(clnpu_device *dev, const char *config_path, double oblas_gflops, double triad_gbs,
                    double (*triad_again)(void))
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
    const size_t T = 512, V = cfg.vocab_size, P = 64;
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
        const double bpp = wi ? 1.0 : 2.0; /* int8's group scales (4 bytes per 128) not counted */
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
            const size_t B = batches[b], steps = B == 1 ? 48 : 16;
            const double t0 = triad_again ? triad_again() : triad_gbs;
            if (fail_here(time_decode(m, ids, P, B, steps, &tps), "decode")) {
                rc = 1;
                break;
            }
            const double t1 = triad_again ? triad_again() : triad_gbs, triad = (t0 + t1) / 2;
            /* bytes of a step: weights (distinct experts of B tokens) + the latent cache at the
             * timed steps' mean context (P - 7 prefilled, 2 warm-up steps, then `steps`) */
            const double ctx = (double)(P - 7 + 2) + steps / 2.0;
            const double bytes = step_bytes(&cfg, wparams, bpp, B, ctx), gbs = tps / B * bytes / 1e9;
            char label[64];
            snprintf(label, sizeof label, "decode %s, %zu sequence%s", wname, B, B > 1 ? "s" : "");
            if (B == 1) {
                tps1[wi] = tps;
                printf("%-34s %10.1f %8.1f GB/s %6.1f GB/s %8.2fx  (memory roofline at STREAM triad %.1f-%.1f)\n",
                       label, tps, gbs, triad, gbs / triad, t0 < t1 ? t0 : t1, t0 < t1 ? t1 : t0);
            } else {
                const double b1 = step_bytes(&cfg, wparams, bpp, 1, ctx);
                printf("%-34s %10.1f %8.1f GB/s %6.1f GB/s %8.2fx  (its bytes roofline; %.2fx batch 1, "
                       "bytes ceiling %.2fx: %.0f MB/step, batch 1 %.0f)\n",
                       label, tps, gbs, triad, gbs / triad, tps / tps1[wi], B * b1 / bytes, bytes / 1e6, b1 / 1e6);
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
