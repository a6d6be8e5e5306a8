/* Side-by-side GEMM / GEMV in one process: clnpu, CLBlast (CLBlastSgemm on the same OpenCL
 * device and queue) and OpenBLAS (cblas_sgemm, cblas_sgemv for M = 1) on the host.
 * Medians of repeated runs; weights rotate over enough copies to exceed the last-level cache
 * for the memory-bound shapes, so nobody is timed on cached weights. For the M = 1 shapes a
 * second table streams f32 and bf16 weights and compares their bytes per second with a STREAM
 * triad measured in the same run (one host thread per online CPU).
 * Usage: gemm_compare [--device N] [--shape MxNxK ...] [--min-time S] [--no-clblast] [--dtype T]
 *                     [--also bf16,int8] [--model CONFIG] [--verbose] [--params "a;b" [--rounds R]]
 *        gemm_compare --report   (the issue-14 report: every ratio of docs/performance.md in one run)
 * --also times clnpu with those weight dtypes too, as a ratio of its f32 rate; --model runs a
 * random-weight model end to end (bench/model_bench.c); --verbose names every GEMM parameter's
 * source (tuning entry, derived from the device, ...). */
#include <CL/cl.h>
#include <pthread.h>
#include <unistd.h>
#include <cblas.h>
#include <clblast_c.h>
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

typedef struct ctx {
    size_t m, n, k, copies;
    clnpu_device *dev;
    clnpu_weight *w;
    clnpu_buffer *x, *y;
    cl_mem clw; /* copies x [n][k] f32 for CLBlast */
    float *hw, *hx, *hy;
    size_t rot;
} ctx;

typedef int (*run_fn)(ctx *c);

static int run_clnpu(ctx *c)
{
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = c->x, a.y = c->y, a.m = c->m;
    c->rot = (c->rot + 1) % c->copies;
    return clnpu_gemm(c->dev, c->w, c->rot, &a) != CLNPU_OK;
}

static int finish_clnpu(ctx *c)
{
    return clnpu_device_finish(c->dev) != CLNPU_OK;
}

static int run_clblast(ctx *c)
{
    cl_command_queue q = clnpu_device_cl_queue(c->dev);
    c->rot = (c->rot + 1) % c->copies;
    CLBlastStatusCode s = CLBlastSgemm(CLBlastLayoutRowMajor, CLBlastTransposeNo, CLBlastTransposeYes,
                                       c->m, c->n, c->k, 1.0f, clnpu_buffer_cl_mem(c->x), 0, c->k,
                                       c->clw, c->rot * c->n * c->k, c->k, 0.0f,
                                       clnpu_buffer_cl_mem(c->y), 0, c->n, &q, NULL);
    return s != CLBlastSuccess;
}

static int run_openblas(ctx *c)
{
    c->rot = (c->rot + 1) % c->copies;
    const float *w = c->hw + c->rot * c->n * c->k;
    if (c->m == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)c->n, (int)c->k, 1.0f, w, (int)c->k, c->hx, 1,
                    0.0f, c->hy, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->m, (int)c->n, (int)c->k, 1.0f,
                    c->hx, (int)c->k, w, (int)c->k, 0.0f, c->hy, (int)c->n);
    return 0;
}

static int finish_none(ctx *c)
{
    (void)c;
    return 0;
}

/* Median per-call time over 7 batches after one warm-up call. */
/* Process CPU seconds (all threads: PoCL's workers and OpenBLAS's are in this process). On a
 * machine shared by more runnable threads than cores, wall time measures the scheduler; the CPU
 * time a compute-bound call consumes does not depend on how often it was preempted. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double last_cpu; /* CPU seconds per call of the last time_it (median batch) */

static double time_it(ctx *c, run_fn run, run_fn finish, double min_time)
{
    if (run(c) || finish(c)) return NAN;
    double t0 = now_s();
    if (run(c) || finish(c)) return NAN;
    double one = now_s() - t0;
    int batch = (int)(min_time / 7 / (one > 1e-6 ? one : 1e-6));
    if (batch < 1) batch = 1;
    if (batch > 100) batch = 100;
    double t[7], u[7];
    for (int i = 0; i < 7; i++) {
        t0 = now_s();
        const double c0 = cpu_s();
        for (int j = 0; j < batch; j++)
            if (run(c)) return NAN;
        if (finish(c)) return NAN;
        t[i] = (now_s() - t0) / batch;
        u[i] = (cpu_s() - c0) / batch;
    }
    qsort(t, 7, sizeof t[0], cmp_d);
    qsort(u, 7, sizeof u[0], cmp_d);
    last_cpu = u[3];
    return t[3];
}

/* Matrix i of the f32 copies as a weight of dtype t (int8: groups of 128 along K, as the model
 * loads them); what it allocates is freed with free_desc. */
static int make_desc(clnpu_dtype t, const float *w, size_t n, size_t k, clnpu_weight_desc *d)
{
    *d = (clnpu_weight_desc){t, n, k, w, NULL, 0};
    if (t == CLNPU_DTYPE_F32) return 0;
    void *q = malloc(n * k * clnpu_dtype_size(t));
    float *s = NULL;
    if (!q) return 1;
    d->data = q;
    if (t == CLNPU_DTYPE_BF16 || t == CLNPU_DTYPE_F16) {
        for (size_t i = 0; i < n * k; i++)
            ((uint16_t *)q)[i] = t == CLNPU_DTYPE_BF16 ? clnpu_f32_to_bf16(w[i]) : clnpu_f32_to_f16(w[i]);
        return 0;
    }
    if (t == CLNPU_DTYPE_I8) {
        s = malloc(n * ((k + 127) / 128) * sizeof *s);
        d->group_k = 128, d->scales = s;
        return !s || clnpu_quantize_i8(w, n, k, 128, q, s);
    }
    s = malloc(((n + 127) / 128) * ((k + 127) / 128) * sizeof *s);
    d->scales = s;
    return !s || clnpu_quantize_fp8(w, n, k, q, s);
}

static void free_desc(clnpu_weight_desc *d)
{
    if (d->dtype != CLNPU_DTYPE_F32) free((void *)d->data);
    free((void *)d->scales);
}

/* The 1-minute load average, for the record next to each figure. */
static const char *loadavg(void)
{
    static char buf[64];
    FILE *f = fopen("/proc/loadavg", "r");
    buf[0] = '\0';
    if (f) {
        if (!fgets(buf, sizeof buf, f)) buf[0] = '\0';
        fclose(f);
    }
    buf[strcspn(buf, " \n")] = '\0';
    return buf;
}

/* ---- STREAM triad a[i] = b[i] + s * c[i], counted as 24 bytes per element as STREAM does ---- */
typedef struct triad_part {
    double *a, *b, *c;
    size_t lo, hi;
} triad_part;

static void *triad_run(void *arg)
{
    triad_part *p = arg;
    for (size_t i = p->lo; i < p->hi; i++) p->a[i] = p->b[i] + 3.0 * p->c[i];
    return NULL;
}

static void triad_fill(double *a, double *b, double *c, size_t lo, size_t hi)
{
    for (size_t i = lo; i < hi; i++) a[i] = 1.0, b[i] = 2.0, c[i] = 0.5;
}

/* Median GB/s of 10 triads over arrays of 4x the last-level cache (at most 1 GiB each; at most
 * `cap` elements). Each thread touches its own slice first, so its pages sit near it. */
static double stream_triad_n(uint64_t llc, size_t cap, int *out_threads)
{
    long nt = sysconf(_SC_NPROCESSORS_ONLN);
    if (nt < 1) nt = 1;
    if (nt > 64) nt = 64;
    *out_threads = (int)nt;
    size_t n = (size_t)(4 * llc / sizeof(double));
    if (n < ((size_t)1 << 23)) n = (size_t)1 << 23;
    if (n > cap) n = cap;
    double *a = malloc(n * 8), *b = malloc(n * 8), *c = malloc(n * 8);
    double t[10], gbs = NAN;
    triad_part parts[64];
    pthread_t th[64];
    if (!a || !b || !c) goto done;
    for (long i = 0; i < nt; i++) {
        parts[i] = (triad_part){a, b, c, n * (size_t)i / (size_t)nt, n * (size_t)(i + 1) / (size_t)nt};
        triad_fill(a, b, c, parts[i].lo, parts[i].hi);
    }
    for (int r = 0; r < 10; r++) {
        double t0 = now_s();
        long started = 0;
        for (; started < nt; started++)
            if (pthread_create(&th[started], NULL, triad_run, &parts[started])) break;
        for (long i = 0; i < started; i++) pthread_join(th[i], NULL);
        if (started < nt) goto done;
        t[r] = now_s() - t0;
    }
    qsort(t, 10, sizeof t[0], cmp_d);
    gbs = 24.0 * n / ((t[4] + t[5]) / 2) / 1e9;
done:
    free(a), free(b), free(c);
    return gbs;
}

static double stream_triad(uint64_t llc, int *out_threads)
{
    return stream_triad_n(llc, (size_t)1 << 27, out_threads);
}

/* The triad again, beside each model decode timing (the machine's share of memory bandwidth
 * moves within a run on a shared host): 3 x 256 MiB arrays, past any L3 here. */
static double triad_now(void)
{
    int t;
    return stream_triad_n((uint64_t)1 << 26, (size_t)1 << 25, &t);
}

/* clnpu GEMV (M = 1) over `dtype` weights: median ms, with enough copies to leave the cache. */
static double gemv_ms(clnpu_device *dev, clnpu_dtype dtype, size_t n, size_t k, uint64_t llc, double min_time)
{
    const size_t es = dtype == CLNPU_DTYPE_BF16 ? 2 : 4, wbytes = n * k * es;
    size_t copies = wbytes >= 2 * llc ? 1 : (size_t)((2 * llc + wbytes - 1) / wbytes);
    if (copies * wbytes > (1u << 30)) copies = (1u << 30) / wbytes ? (1u << 30) / wbytes : 1;
    void *hw = malloc(n * k * es);
    float *hx = malloc(k * sizeof *hx);
    clnpu_weight_desc *d = calloc(copies, sizeof *d);
    double ms = NAN;
    if (!hw || !hx || !d) goto done;
    for (size_t i = 0; i < n * k; i++) {
        float v = (float)((i * 7919) % 1000) * 1e-4f - 0.05f;
        if (es == 2) ((uint16_t *)hw)[i] = clnpu_f32_to_bf16(v);
        else ((float *)hw)[i] = v;
    }
    for (size_t i = 0; i < k; i++) hx[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < copies; i++) d[i] = (clnpu_weight_desc){dtype, n, k, hw, NULL, 0};
    ctx c = {.m = 1, .n = n, .k = k, .copies = copies, .dev = dev};
    if (!clnpu_weight_upload(dev, d, copies, &c.w) && !clnpu_buffer_create(dev, k * 4, &c.x) &&
        !clnpu_buffer_create(dev, n * 4, &c.y) && !clnpu_buffer_write(c.x, 0, hx, k * 4))
        ms = 1e3 * time_it(&c, run_clnpu, finish_clnpu, min_time);
    clnpu_weight_destroy(c.w);
    clnpu_buffer_destroy(c.x);
    clnpu_buffer_destroy(c.y);
done:
    free(hw), free(hx), free(d);
    return ms;
}

int main(int argc, char **argv)
{
    size_t devidx = 0, nshapes = 0;
    size_t shapes[32][3];
    double min_time = 1.0;
    bool clblast = true;
    const char *params = NULL; /* "mr=10,nb=2;mr=8": configurations to alternate (CLNPU_GEMM) */
    int rounds = 5;
    clnpu_dtype wtype = CLNPU_DTYPE_F32; /* clnpu's weights (OpenBLAS and CLBlast: always f32) */
    clnpu_dtype also[4];
    size_t nalso = 0;
    bool verbose = false;
    const char *model = NULL;
    double oblas_2048 = NAN; /* OpenBLAS at 2048^3 in this run: the model's prefill reference */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--device") && i + 1 < argc) devidx = strtoul(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--no-clblast")) clblast = false;
        else if (!strcmp(argv[i], "--verbose")) verbose = true;
        else if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--also") && i + 1 < argc) {
            char buf[128];
            snprintf(buf, sizeof buf, "%s", argv[++i]);
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && nalso < 4; t = strtok_r(NULL, ",", &save)) {
                const int d = clnpu_dtype_parse(t);
                if (d < 0) {
                    fprintf(stderr, "gemm_compare: unknown dtype '%s'\n", t);
                    return 2;
                }
                also[nalso++] = (clnpu_dtype)d;
            }
        } else if (!strcmp(argv[i], "--report")) {
            /* issue 14's shapes: squares, a short-K large square, A.X K1's prefill matrices at
             * M = 512, its decode GEMVs; bf16 and int8 against f32; the model */
            static const size_t rep[][3] = {{1024, 1024, 1024}, {2048, 2048, 2048}, {4096, 4096, 1024},
                                            {512, 2048, 7168},  {512, 7168, 2048},  {512, 1536, 7168},
                                            {512, 12288, 1536}, {512, 576, 7168},   {512, 18432, 7168},
                                            {1, 2048, 7168},    {1, 7168, 2048},    {1, 1536, 7168}};
            nshapes = sizeof rep / sizeof rep[0];
            memcpy(shapes, rep, sizeof rep);
            clblast = false, verbose = true, model = "models/axk1-mini/config.json";
            also[0] = CLNPU_DTYPE_BF16, also[1] = CLNPU_DTYPE_I8, nalso = 2;
        }
        else if (!strcmp(argv[i], "--params") && i + 1 < argc) params = argv[++i];
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const int t = clnpu_dtype_parse(argv[++i]);
            if (t < 0) {
                fprintf(stderr, "gemm_compare: unknown dtype '%s'\n", argv[i]);
                return 2;
            }
            wtype = (clnpu_dtype)t;
        }
        else if (!strcmp(argv[i], "--min-time") && i + 1 < argc) min_time = atof(argv[++i]);
        else if (!strcmp(argv[i], "--shape") && i + 1 < argc && nshapes < 32 &&
                 sscanf(argv[++i], "%zux%zux%zu", &shapes[nshapes][0], &shapes[nshapes][1],
                        &shapes[nshapes][2]) == 3)
            nshapes++;
        else {
            fprintf(stderr, "usage: gemm_compare [--device N] [--shape MxNxK ...] [--min-time S] [--no-clblast]\n");
            return 2;
        }
    }
    if (!nshapes) {
        static const size_t def[][3] = {{1024, 1024, 1024}, {2048, 2048, 2048}, {16, 4096, 4096},
                                        {1, 4096, 4096},    {1, 1536, 7168},    {1, 7168, 2048},
                                        {4, 2048, 7168},    {16, 2048, 7168},   {512, 2048, 7168}};
        nshapes = sizeof def / sizeof def[0];
        memcpy(shapes, def, sizeof def);
    }
    clnpu_device *dev;
    clnpu_device_options o = clnpu_device_options_default();
    if (clnpu_device_open(devidx, &o, &dev)) {
        fprintf(stderr, "gemm_compare: %s\n", clnpu_error_message());
        return 1;
    }
    const clnpu_device_info *info = clnpu_device_get_info(dev);
    clnpu_device_set_tuning_verbose(dev, verbose);
    {
        const clnpu_device_isa *isa = clnpu_device_get_isa(dev);
        FILE *lf = fopen("/proc/loadavg", "r");
        char load[64] = "?";
        if (lf) {
            if (!fgets(load, sizeof load, lf)) snprintf(load, sizeof load, "?");
            fclose(lf);
        }
        load[strcspn(load, "\n")] = '\0';
        printf("machine: %s; ISA class %s (LLVM CPU %s, %u x %u-lane registers, L1d %llu KiB, L2 %llu KiB); "
               "load average %s\n", isa->cpu[0] ? isa->cpu : "?", isa->name, isa->llvm_cpu[0] ? isa->llvm_cpu : "?",
               isa->registers, isa->lanes, (unsigned long long)(isa->l1d_bytes >> 10),
               (unsigned long long)(isa->l2_bytes >> 10), load);
    }
    printf("device: %s (%s); %s, core %s, %d threads\n", info->name,
           clnpu_device_get_profile(dev)->name, OPENBLAS_VERSION, openblas_get_corename(),
           openblas_get_num_threads());
    printf("%-16s %9s %9s %9s   %9s %9s %9s   %8s %8s\n", "M x N x K", "clnpu ms", "CLBlast", "OpenBLAS",
           "clnpu GF", "CLBlast", "OpenBLAS", "vs CLB", "vs OBLAS");
    int rc = 0;
    for (size_t si = 0; si < nshapes && !rc; si++) {
        ctx c = {.m = shapes[si][0], .n = shapes[si][1], .k = shapes[si][2], .dev = dev};
        size_t wbytes = c.n * c.k * sizeof(float);
        uint64_t llc = info->global_cache_bytes ? info->global_cache_bytes : (64u << 20);
        c.copies = wbytes >= 2 * llc ? 1 : (size_t)((2 * llc + wbytes - 1) / wbytes);
        if (c.copies * wbytes > (1u << 30)) c.copies = (1u << 30) / wbytes ? (1u << 30) / wbytes : 1;
        c.hw = malloc(c.copies * wbytes);
        c.hx = malloc(c.m * c.k * sizeof(float));
        c.hy = malloc(c.m * c.n * sizeof(float));
        for (size_t i = 0; i < c.copies * c.n * c.k; i++) c.hw[i] = (float)((i * 7919) % 1000) * 1e-4f - 0.05f;
        for (size_t i = 0; i < c.m * c.k; i++) c.hx[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
        clnpu_weight_desc *d = calloc(c.copies, sizeof *d);
        int bad = 0;
        for (size_t i = 0; i < c.copies; i++) bad |= make_desc(wtype, c.hw + i * c.n * c.k, c.n, c.k, &d[i]);
        cl_int err;
        if (bad || clnpu_weight_upload(dev, d, c.copies, &c.w) ||
            clnpu_buffer_create(dev, c.m * c.k * 4, &c.x) || clnpu_buffer_create(dev, c.m * c.n * 4, &c.y) ||
            clnpu_buffer_write(c.x, 0, c.hx, c.m * c.k * 4)) {
            fprintf(stderr, "gemm_compare: %s\n", clnpu_error_message());
            rc = 1;
        }
        c.clw = rc || !clblast ? NULL : clCreateBuffer(clnpu_device_cl_context(dev), CL_MEM_READ_ONLY | CL_MEM_COPY_HOST_PTR,
                                           c.copies * wbytes, c.hw, &err);
        if (!rc && params) {
            /* Round robin over the configurations and OpenBLAS, so each configuration is timed
             * next to OpenBLAS in the same seconds of a noisy machine: medians of the ratios. */
            char list[1024];
            snprintf(list, sizeof list, "%s", params);
            char *cfg[16];
            int ncfg = 0;
            for (char *save = NULL, *t = strtok_r(list, ";", &save); t && ncfg < 16; t = strtok_r(NULL, ";", &save))
                cfg[ncfg++] = t;
            double ratio[16][64], gf[16][64], ob[64], cr[16][64];
            if (rounds > 64) rounds = 64;
            const double f = 2.0 * c.m * c.n * c.k / 1e9;
            for (int r = 0; r < rounds; r++) {
                double to = time_it(&c, run_openblas, finish_none, min_time), co = last_cpu;
                ob[r] = f / to;
                for (int j = 0; j < ncfg; j++) {
                    setenv("CLNPU_GEMM", cfg[j], 1);
                    double t = time_it(&c, run_clnpu, finish_clnpu, min_time);
                    gf[j][r] = f / t;
                    ratio[j][r] = to / t;
                    cr[j][r] = co / last_cpu;
                }
            }
            unsetenv("CLNPU_GEMM");
            qsort(ob, (size_t)rounds, sizeof ob[0], cmp_d);
            printf("%zux%zux%zu: OpenBLAS median %.1f GFLOP/s (load %s)\n", c.m, c.n, c.k, ob[rounds / 2], loadavg());
            for (int j = 0; j < ncfg; j++) {
                qsort(ratio[j], (size_t)rounds, sizeof ratio[j][0], cmp_d);
                qsort(gf[j], (size_t)rounds, sizeof gf[j][0], cmp_d);
                qsort(cr[j], (size_t)rounds, sizeof cr[j][0], cmp_d);
                printf("  %-40s %7.1f GFLOP/s  %5.2fx (%.2f-%.2f)  by CPU time %5.2fx (%.2f-%.2f)\n", cfg[j],
                       gf[j][rounds / 2], ratio[j][rounds / 2], ratio[j][0], ratio[j][rounds - 1], cr[j][rounds / 2],
                       cr[j][0], cr[j][rounds - 1]);
            }
            fflush(stdout);
        } else if (!rc) {
            double t1 = time_it(&c, run_clnpu, finish_clnpu, min_time);
            double t2 = c.clw ? time_it(&c, run_clblast, finish_clnpu, min_time) : NAN;
            double t3 = time_it(&c, run_openblas, finish_none, min_time);
            double f = 2.0 * c.m * c.n * c.k / 1e9;
            char name[32];
            snprintf(name, sizeof name, "%zux%zux%zu", c.m, c.n, c.k);
            printf("%-16s %9.3f %9.3f %9.3f   %9.1f %9.1f %9.1f   %7.2fx %7.2fx", name, t1 * 1e3,
                   t2 * 1e3, t3 * 1e3, f / t1, f / t2, f / t3, t2 / t1, t3 / t1);
            if (c.m == 2048 && c.n == 2048 && c.k == 2048) oblas_2048 = f / t3;
            /* the same shape with other weight dtypes: their rate against clnpu's f32 */
            for (size_t a = 0; a < nalso && c.m > 1; a++) {
                clnpu_weight *f32w = c.w, *ow = NULL;
                clnpu_weight_desc *od = calloc(c.copies, sizeof *od);
                int obad = !od;
                for (size_t i = 0; !obad && i < c.copies; i++) obad |= make_desc(also[a], c.hw + i * c.n * c.k, c.n, c.k, &od[i]);
                double ta = NAN;
                if (!obad && !clnpu_weight_upload(dev, od, c.copies, &ow)) {
                    c.w = ow;
                    ta = time_it(&c, run_clnpu, finish_clnpu, min_time);
                    c.w = f32w;
                }
                clnpu_weight_destroy(ow);
                for (size_t i = 0; od && i < c.copies; i++) free_desc(&od[i]);
                free(od);
                printf("   %s %6.1f GF %5.2fx", clnpu_dtype_name(also[a]), f / ta, t1 / ta);
            }
            printf("\n");
            fflush(stdout);
        }
        if (c.clw) clReleaseMemObject(c.clw);
        clnpu_weight_destroy(c.w);
        clnpu_buffer_destroy(c.x);
        clnpu_buffer_destroy(c.y);
        for (size_t i = 0; i < c.copies; i++) free_desc(&d[i]);
        free(d);
        free(c.hw);
        free(c.hx);
        free(c.hy);
    }
    /* Weight streaming at M = 1: bytes of W per second against this machine's STREAM triad. */
    const uint64_t llc = info->global_cache_bytes ? info->global_cache_bytes : (64u << 20);
    int threads = 0;
    const double triad = rc ? NAN : stream_triad(llc, &threads);
    if (!rc) printf("\nSTREAM triad in this run: %.1f GB/s (%d threads)\n", triad, threads);
    bool header = false;
    for (size_t si = 0; si < nshapes && !rc; si++) {
        const size_t n = shapes[si][1], k = shapes[si][2];
        if (shapes[si][0] != 1) continue;
        if (!header) {
            printf("\nGEMV weight streaming vs STREAM triad in this run: %.1f GB/s (%d threads)\n", triad, threads);
            printf("%-16s %9s %9s   %9s %9s   %9s %9s\n", "M x N x K", "f32 ms", "bf16 ms", "f32 GB/s", "bf16 GB/s",
                   "f32/STRM", "bf16/STRM");
            header = true;
        }
        const double t32 = gemv_ms(dev, CLNPU_DTYPE_F32, n, k, llc, min_time);
        const double t16 = gemv_ms(dev, CLNPU_DTYPE_BF16, n, k, llc, min_time);
        const double g32 = n * k * 4.0 / t32 / 1e6, g16 = n * k * 2.0 / t16 / 1e6;
        char name[32];
        snprintf(name, sizeof name, "1x%zux%zu", n, k);
        printf("%-16s %9.3f %9.3f   %9.1f %9.1f   %8.2fx %8.2fx\n", name, t32, t16, g32, g16, g32 / triad,
               g16 / triad);
        fflush(stdout);
    }
    if (!rc && model) {
        if (isnan(oblas_2048)) { /* not in the shape list: measure it for the reference */
            ctx c = {.m = 2048, .n = 2048, .k = 2048, .copies = 1};
            c.hw = malloc(2048 * 2048 * 4), c.hx = malloc(2048 * 2048 * 4), c.hy = malloc(2048 * 2048 * 4);
            for (size_t i = 0; c.hw && c.hx && i < 2048 * 2048; i++) c.hw[i] = c.hx[i] = (float)(i % 1000) * 1e-3f;
            if (c.hw && c.hx && c.hy) oblas_2048 = 2.0 * 2048 * 2048 * 2048 / 1e9 / time_it(&c, run_openblas, finish_none, min_time);
            free(c.hw), free(c.hx), free(c.hy);
        }
        rc = model_bench_run(dev, model, oblas_2048, triad, triad_now);
    }
    clnpu_device_close(dev);
    return rc;
}
