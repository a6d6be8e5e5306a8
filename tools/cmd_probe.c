/* `clnpu probe`: measure what a target profile needs instead of trusting a datasheet — FMA peak,
 * memory bandwidth (read, copy), launch latency, host <-> device transfers — and write a profile. */
#include <CL/cl.h>
#include <ctype.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"

static const char usage[] = "clnpu probe [--device N] [-o FILE.yaml] [--quick]";

typedef struct probe {
    clnpu_device *dev;
    cl_command_queue q;
    cl_kernel fma, rd, empty;
    int reps;
} probe;

/* Median wall time of `reps` runs of one enqueue + finish. */
static double time_kernel(probe *p, cl_kernel k, size_t global, size_t local, clnpu_status *st)
{
    double t[9];
    int n = p->reps > 9 ? 9 : p->reps;
    for (int i = 0; i < n && !*st; i++) {
        double t0 = bench_now_s();
        cl_int e = clEnqueueNDRangeKernel(p->q, k, 1, NULL, &global, local ? &local : NULL, 0, NULL, NULL);
        if (!e) e = clFinish(p->q);
        if (e) *st = CLNPU_ERR_OPENCL;
        t[i] = bench_now_s() - t0;
    }
    qsort(t, (size_t)n, sizeof t[0], bench_cmp_double);
    return t[n / 2];
}

int cmd_probe(int argc, char **argv)
{
    static const struct option longopts[] = {{"device", required_argument, NULL, 'd'}, {"quick", no_argument, NULL, 'q'},
                                             {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    cli_device_args da = {0};
    const char *out = NULL;
    bool quick = false;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            printf("usage: %s\n\nMeasures FMA throughput (fp32), read and copy bandwidth, kernel launch latency and "
                   "host<->device\ntransfers, and writes a target profile (queried capabilities + measured figures) "
                   "that\n'clnpu plan', 'clnpu tune' and --targets-dir accept.\n", usage);
            return CLI_EXIT_OK;
        case 'd':
            if (!cli_parse_size(optarg, &da.device)) return cli_usage_error("probe", usage, "bad --device '%s'", optarg);
            break;
        case 'o': out = optarg; break;
        case 'q': quick = true; break;
        default: return cli_usage_error("probe", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("probe", usage, "unexpected argument '%s'", argv[optind]);
    probe p = {0};
    p.reps = quick ? 3 : 7;
    da.target = "generic"; /* measure the device itself, not a profile's claims */
    clnpu_status st = cli_open_device(&da, false, &p.dev);
    if (st) return cli_fail("probe", st);
    const clnpu_device_info *info = clnpu_device_get_info(p.dev);
    p.q = clnpu_device_cl_queue(p.dev);
    clnpu_program *prog;
    st = clnpu_program_get(p.dev, "elementwise.cl", NULL, &prog);
    if (!st) st = clnpu_program_kernel(prog, "clnpu_probe_fma", (void **)&p.fma);
    if (!st) st = clnpu_program_kernel(prog, "clnpu_probe_read", (void **)&p.rd);
    if (!st) st = clnpu_program_kernel(prog, "clnpu_probe_empty", (void **)&p.empty);
    const bool cpu = info->type == CLNPU_DEVICE_TYPE_CPU;
    const size_t local = cpu ? 1 : 64, global = (size_t)info->compute_units * (cpu ? 64 : 2048);
    size_t bytes = quick ? (64u << 20) : (256u << 20);
    while (bytes > info->max_alloc_bytes / 2) bytes /= 2;
    clnpu_buffer *a = NULL, *b = NULL, *o = NULL;
    if (!st) st = clnpu_buffer_create(p.dev, bytes, &a);
    if (!st) st = clnpu_buffer_create(p.dev, bytes, &b);
    if (!st) st = clnpu_buffer_create(p.dev, global * 4 > bytes / 1024 ? global * 4 : bytes / 1024, &o);
    float one = 1.0f;
    if (!st) st = clnpu_buffer_fill(a, &one, 4);
    double fma_flops = 0, read_bw = 0, copy_bw = 0, lat1 = 0, latq = 0, h2d = 0, d2h = 0;
    if (!st) { /* FMA: size the loop so one launch takes ~50 ms */
        cl_mem mo = clnpu_buffer_cl_mem(o);
        cl_uint iters = 256;
        cl_float av = 1e-3f;
        clSetKernelArg(p.fma, 0, sizeof mo, &mo);
        clSetKernelArg(p.fma, 2, sizeof av, &av);
        for (int round = 0; round < 2 && !st; round++) {
            clSetKernelArg(p.fma, 1, sizeof iters, &iters);
            double t = time_kernel(&p, p.fma, global, local, &st);
            fma_flops = (double)global * iters * 8 * 8 * 2 / t;
            double want = quick ? 0.02 : 0.05;
            if (round == 0) iters = (cl_uint)fmin(1e8, fmax(256, iters * want / t));
        }
    }
    if (!st) { /* read bandwidth */
        cl_mem mo = clnpu_buffer_cl_mem(o), ma = clnpu_buffer_cl_mem(a);
        cl_uint per = 256; /* 16 KiB per work-item */
        clSetKernelArg(p.rd, 0, sizeof mo, &mo);
        clSetKernelArg(p.rd, 1, sizeof ma, &ma);
        clSetKernelArg(p.rd, 2, sizeof per, &per);
        size_t g = bytes / 64 / per;
        read_bw = (double)(g * per * 64) / time_kernel(&p, p.rd, g, cpu ? 1 : 64, &st);
    }
    if (!st) { /* device copy: bytes read + bytes written */
        double t[9];
        for (int i = 0; i < p.reps && !st; i++) {
            double t0 = bench_now_s();
            if (clEnqueueCopyBuffer(p.q, clnpu_buffer_cl_mem(a), clnpu_buffer_cl_mem(b), 0, 0, bytes, 0, NULL, NULL) ||
                clFinish(p.q))
                st = CLNPU_ERR_OPENCL;
            t[i] = bench_now_s() - t0;
        }
        qsort(t, (size_t)p.reps, sizeof t[0], bench_cmp_double);
        copy_bw = 2.0 * bytes / t[p.reps / 2];
    }
    if (!st) { /* launch latency: alone, and amortised in a queue */
        cl_mem mo = clnpu_buffer_cl_mem(o);
        clSetKernelArg(p.empty, 0, sizeof mo, &mo);
        double t[51];
        for (int i = 0; i < 51 && !st; i++) {
            size_t g1 = 1;
            double t0 = bench_now_s();
            if (clEnqueueNDRangeKernel(p.q, p.empty, 1, NULL, &g1, &g1, 0, NULL, NULL) || clFinish(p.q)) st = CLNPU_ERR_OPENCL;
            t[i] = bench_now_s() - t0;
        }
        qsort(t, 51, sizeof t[0], bench_cmp_double);
        lat1 = t[25];
        double t0 = bench_now_s();
        for (int i = 0; i < 1000 && !st; i++) {
            size_t g1 = 1;
            if (clEnqueueNDRangeKernel(p.q, p.empty, 1, NULL, &g1, &g1, 0, NULL, NULL)) st = CLNPU_ERR_OPENCL;
        }
        if (!st && clFinish(p.q)) st = CLNPU_ERR_OPENCL;
        latq = (bench_now_s() - t0) / 1000;
    }
    void *host = st ? NULL : malloc(bytes);
    if (!st && host) { /* host <-> device */
        memset(host, 1, bytes);
        double tw[9], tr[9];
        for (int i = 0; i < p.reps && !st; i++) {
            double t0 = bench_now_s();
            st = clnpu_buffer_write(b, 0, host, bytes);
            tw[i] = bench_now_s() - t0;
            t0 = bench_now_s();
            if (!st) st = clnpu_buffer_read(b, 0, host, bytes);
            tr[i] = bench_now_s() - t0;
        }
        qsort(tw, (size_t)p.reps, sizeof tw[0], bench_cmp_double);
        qsort(tr, (size_t)p.reps, sizeof tr[0], bench_cmp_double);
        h2d = bytes / tw[p.reps / 2], d2h = bytes / tr[p.reps / 2];
    }
    free(host);
    clnpu_buffer_destroy(a), clnpu_buffer_destroy(b), clnpu_buffer_destroy(o);
    if (st) {
        clnpu_device_close(p.dev);
        return cli_fail("probe", st);
    }
    printf("device %zu: %s (%s)\n", info->index, info->name, info->vendor);
    printf("  fp32 FMA           %10.1f GFLOP/s\n", fma_flops / 1e9);
    printf("  read bandwidth     %10.1f GB/s\n", read_bw / 1e9);
    printf("  copy bandwidth     %10.1f GB/s (read + write)\n", copy_bw / 1e9);
    printf("  launch latency     %10.1f us alone, %.1f us queued\n", lat1 * 1e6, latq * 1e6);
    printf("  host -> device     %10.1f GB/s, device -> host %.1f GB/s\n", h2d / 1e9, d2h / 1e9);
    int rc = CLI_EXIT_OK;
    if (out) {
        FILE *f = fopen(out, "w");
        if (!f) {
            fprintf(stderr, "clnpu probe: error: cannot create %s\n", out);
            rc = CLI_EXIT_FAIL;
        } else {
            /* A profile in the targets/ format: name from the device, matched by its exact name. */
            char name[64];
            size_t j = snprintf(name, sizeof name, "probed-");
            for (const char *c = info->name; *c && j + 1 < sizeof name; c++)
                name[j++] = isalnum((unsigned char)*c) ? (char)tolower((unsigned char)*c) : '-';
            name[j] = '\0';
            clnpu_yaml *y = clnpu_yaml_begin(f);
            clnpu_yaml_map_begin(y);
            clnpu_yaml_kv_str(y, "name", name);
            clnpu_yaml_kv_str(y, "class", cpu ? "cpu-opencl" : info->type == CLNPU_DEVICE_TYPE_GPU ? "gpu-opencl" : "accelerator-opencl");
            clnpu_yaml_kv_str(y, "vendor", info->vendor);
            clnpu_yaml_key(y, "match");
            clnpu_yaml_map_begin(y);
            clnpu_yaml_key(y, "vendor");
            clnpu_yaml_flow_seq_begin(y);
            clnpu_yaml_str(y, info->vendor);
            clnpu_yaml_seq_end(y);
            clnpu_yaml_key(y, "name");
            clnpu_yaml_flow_seq_begin(y);
            clnpu_yaml_str(y, info->name);
            clnpu_yaml_seq_end(y);
            clnpu_yaml_map_end(y);
            clnpu_yaml_key(y, "compute");
            clnpu_yaml_map_begin(y);
            clnpu_yaml_kv_num(y, "fp32", fma_flops);
            clnpu_yaml_kv_num(y, "fp16", info->fp16 ? 2 * fma_flops : 0);
            clnpu_yaml_kv_num(y, "bf16", fma_flops); /* bf16 weights are widened to f32 in registers */
            clnpu_yaml_kv_num(y, "int8", fma_flops);
            clnpu_yaml_map_end(y);
            clnpu_yaml_key(y, "memory");
            clnpu_yaml_map_begin(y);
            clnpu_yaml_kv_int(y, "bytes", (long long)info->global_mem_bytes);
            clnpu_yaml_kv_num(y, "bandwidth", read_bw);
            clnpu_yaml_map_end(y);
            clnpu_yaml_kv_int(y, "sram_bytes", (long long)info->local_mem_bytes);
            clnpu_yaml_kv_int(y, "compute_units", info->compute_units);
            clnpu_yaml_key(y, "host_link");
            clnpu_yaml_map_begin(y);
            clnpu_yaml_kv_str(y, "type", "measured");
            clnpu_yaml_kv_num(y, "bandwidth", fmin(h2d, d2h));
            clnpu_yaml_kv_num(y, "latency_s", lat1);
            clnpu_yaml_map_end(y);
            clnpu_yaml_key(y, "estimated");
            clnpu_yaml_flow_seq_begin(y);
            clnpu_yaml_str(y, "compute.fp16");
            clnpu_yaml_str(y, "compute.bf16");
            clnpu_yaml_str(y, "compute.int8");
            clnpu_yaml_seq_end(y);
            char notes[256];
            snprintf(notes, sizeof notes, "measured by clnpu probe: copy %.1f GB/s, launch %.1f us (queued %.1f us), "
                     "device->host %.1f GB/s", copy_bw / 1e9, lat1 * 1e6, latq * 1e6, d2h / 1e9);
            clnpu_yaml_kv_str(y, "notes", notes);
            clnpu_yaml_map_end(y);
            bool ok = clnpu_yaml_end(y);
            if (fclose(f) || !ok) {
                fprintf(stderr, "clnpu probe: error: writing %s failed\n", out);
                rc = CLI_EXIT_FAIL;
            } else printf("profile written to %s (name %s)\n", out, name);
        }
    }
    clnpu_device_close(p.dev);
    return rc;
}
