/* Building kernel programs per device: in-process reuse, then the on-disk binary cache, then
 * the OpenCL compiler. A failed build returns the compiler's log. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "binary_cache.h"
#include "device_internal.h"
#include "embedded.h"
#include "../common/error.h"
#include "../common/hash.h"

typedef struct kernel_entry {
    struct kernel_entry *next;
    char name[64];
    cl_kernel kernel;
} kernel_entry;

struct clnpu_program {
    struct clnpu_program *next;
    kernel_entry *kernels; /* cached kernel objects, created on first use */
    char *key;
    char *options;
    const clnpu_embedded_file *embedded; /* the embedded source it was built from, or NULL */
    char cache_path[1100];
    cl_program program;
    clnpu_program_origin origin;
    double build_ms;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

size_t clnpu_kernel_source_count(void) { return clnpu_embedded_kernels_count; }

const char *clnpu_kernel_source_name(size_t i)
{
    return i < clnpu_embedded_kernels_count ? clnpu_embedded_kernels[i].name : NULL;
}

const char *clnpu_kernel_source(const char *name)
{
    const clnpu_embedded_file *f = clnpu_embedded_find(clnpu_embedded_kernels, name);
    return f ? f->data : NULL;
}

void *clnpu_program_cl_program(const clnpu_program *p) { return p->program; }
clnpu_program_origin clnpu_program_get_origin(const clnpu_program *p) { return p->origin; }
double clnpu_program_build_ms(const clnpu_program *p) { return p->build_ms; }
const char *clnpu_program_options(const clnpu_program *p) { return p->options; }
const char *clnpu_program_cache_path(const clnpu_program *p) { return p->cache_path; }

void clnpu_programs_release(clnpu_device *dev)
{
    for (clnpu_program *p = dev->programs, *next; p; p = next) {
        next = p->next;
        for (kernel_entry *k = p->kernels, *kn; k; k = kn) {
            kn = k->next;
            clReleaseKernel(k->kernel);
            free(k);
        }
        clReleaseProgram(p->program);
        free(p->key);
        free(p->options);
        free(p);
    }
    dev->programs = NULL;
}

static char *build_log(clnpu_device *dev, cl_program prog)
{
    size_t n = 0;
    clGetProgramBuildInfo(prog, dev->device, CL_PROGRAM_BUILD_LOG, 0, NULL, &n);
    char *log = calloc(n + 1, 1);
    if (log && n) clGetProgramBuildInfo(prog, dev->device, CL_PROGRAM_BUILD_LOG, n, log, NULL);
    return log;
}

/* Compile from source; on failure the message carries the build log. */
static clnpu_status compile(clnpu_device *dev, const char *label, const char *source,
                            const char *options, cl_program *out)
{
    cl_int err;
    size_t len = strlen(source);
    cl_program prog = clCreateProgramWithSource(dev->context, 1, &source, &len, &err);
    if (!prog) return clnpu_fail_cl(err, "clCreateProgramWithSource", label);
    err = clBuildProgram(prog, 1, &dev->device, options, NULL, NULL);
    if (err != CL_SUCCESS) {
        char *log = build_log(dev, prog);
        clnpu_fail(CLNPU_ERR_BUILD, "building %s on device %zu (%s) failed with %s; options: %s\n"
                   "build log:\n", label, dev->info.index, dev->info.name, clnpu_cl_error_name(err),
                   options);
        clnpu_error_append(log && *log ? log : "(the driver returned an empty build log)");
        free(log);
        clReleaseProgram(prog);
        return CLNPU_ERR_BUILD;
    }
    *out = prog;
    return CLNPU_OK;
}

static clnpu_status program_binary(clnpu_device *dev, cl_program prog, unsigned char **out, size_t *n)
{
    *out = NULL;
    cl_int err = clGetProgramInfo(prog, CL_PROGRAM_BINARY_SIZES, sizeof *n, n, NULL);
    if (err) return clnpu_fail_cl(err, "clGetProgramInfo(CL_PROGRAM_BINARY_SIZES)", NULL);
    if (*n == 0) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "device %s returns no program binary", dev->info.name);
    *out = malloc(*n);
    if (!*out) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    err = clGetProgramInfo(prog, CL_PROGRAM_BINARIES, sizeof *out, out, NULL);
    if (err) {
        free(*out);
        *out = NULL;
        return clnpu_fail_cl(err, "clGetProgramInfo(CL_PROGRAM_BINARIES)", NULL);
    }
    return CLNPU_OK;
}

static bool load_binary(clnpu_device *dev, const unsigned char *bin, size_t n, const char *options,
                        cl_program *out)
{
    cl_int err, status = CL_SUCCESS;
    cl_program prog = clCreateProgramWithBinary(dev->context, 1, &dev->device, &n, &bin, &status, &err);
    if (!prog) return false;
    if (err || status || clBuildProgram(prog, 1, &dev->device, options, NULL, NULL) != CL_SUCCESS) {
        clReleaseProgram(prog);
        return false;
    }
    *out = prog;
    return true;
}

static char *make_key(const clnpu_device *dev, const char *source, const char *options)
{
    size_t len = strlen(source);
    /* Two independent 64-bit hashes of the source make an accidental collision negligible;
     * the full key is stored in the entry and compared on load. */
    uint64_t h1 = clnpu_fnv1a(CLNPU_FNV_OFFSET, source, len);
    uint64_t h2 = clnpu_fnv1a(0x84222325cbf29ce4ULL, source, len);
    size_t cap = strlen(options) + 1024;
    char *key = malloc(cap);
    if (!key) return NULL;
    snprintf(key, cap,
             "clnpu-cache v%u\nplatform: %s / %s\ndevice: %s / %s\ndriver: %s\noptions: %s\n"
             "source: %zu bytes %016llx%016llx\n",
             CLNPU_CACHE_FORMAT_VERSION, dev->info.platform_name, dev->info.platform_version,
             dev->info.vendor, dev->info.name, dev->info.driver_version, options, len,
             (unsigned long long)h1, (unsigned long long)h2);
    return key;
}

clnpu_status clnpu_program_get_source(clnpu_device *dev, const char *label, const char *source,
                                      const char *extra, clnpu_program **out)
{
    if (!dev || !source || !out)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_program_get_source: NULL argument");
    *out = NULL;
    if (!label) label = "<source>";
    size_t ocap = 2048 + (extra ? strlen(extra) : 0);
    char *options = malloc(ocap);
    if (!options) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    clnpu_device_base_options(dev, options, ocap);
    if (extra && *extra) {
        strcat(options, " ");
        strcat(options, extra);
    }
    char *key = make_key(dev, source, options);
    if (!key) {
        free(options);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    for (clnpu_program *p = dev->programs; p; p = p->next) {
        if (!strcmp(p->key, key)) {
            free(key);
            free(options);
            p->origin = CLNPU_PROGRAM_MEMORY;
            *out = p;
            return CLNPU_OK;
        }
    }

    clnpu_program *p = calloc(1, sizeof *p);
    if (!p) {
        free(key);
        free(options);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    p->key = key;
    p->options = options;
    double t0 = now_ms();
    bool have = false;
    if (!dev->no_cache) {
        clnpu_binary_cache_path(dev->cache_dir, key, p->cache_path, sizeof p->cache_path);
        unsigned char *bin = NULL;
        size_t n = 0;
        /* Anything short of an intact entry for exactly this key is rebuilt and overwritten. */
        if (clnpu_binary_cache_load(p->cache_path, key, &bin, &n) == CLNPU_OK)
            have = load_binary(dev, bin, n, options, &p->program);
        free(bin);
        if (have) p->origin = CLNPU_PROGRAM_DISK_CACHE;
    }
    if (!have) {
        clnpu_status st = compile(dev, label, source, options, &p->program);
        if (st) {
            free(p->key);
            free(p->options);
            free(p);
            return st;
        }
        p->origin = CLNPU_PROGRAM_BUILT;
        if (!dev->no_cache) {
            unsigned char *bin = NULL;
            size_t n = 0;
            /* A cache that cannot be written only costs time later; it is not an error. */
            if (program_binary(dev, p->program, &bin, &n) == CLNPU_OK)
                clnpu_binary_cache_store(dev->cache_dir, p->cache_path, key, bin, n);
            free(bin);
            clnpu_error_clear();
        }
    }
    p->build_ms = now_ms() - t0;
    p->next = dev->programs;
    dev->programs = p;
    *out = p;
    return CLNPU_OK;
}

clnpu_status clnpu_program_get(clnpu_device *dev, const char *name, const char *extra,
                               clnpu_program **out)
{
    const clnpu_embedded_file *f = clnpu_embedded_find(clnpu_embedded_kernels, name ? name : "");
    if (!f) return clnpu_fail(CLNPU_ERR_NOT_FOUND, "no embedded kernel source named '%s'", name ? name : "(null)");
    if (!dev || !out) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_program_get: NULL argument");
    /* Every launch asks for its program: embedded sources never change, so a program built from
     * the same file with the same options is found without hashing the source (the full key
     * costs ~50 us per launch for gemm.cl, which on a 2-core CPU device is taken from the
     * kernels themselves). */
    char opts[1024];
    clnpu_device_base_options(dev, opts, sizeof opts);
    size_t n = strlen(opts), m = extra ? strlen(extra) : 0;
    if (n + m + 2 <= sizeof opts) {
        if (m) opts[n] = ' ', memcpy(opts + n + 1, extra, m + 1);
        for (clnpu_program *p = dev->programs; p; p = p->next)
            if (p->embedded == f && !strcmp(p->options, opts)) {
                p->origin = CLNPU_PROGRAM_MEMORY;
                *out = p;
                return CLNPU_OK;
            }
    }
    clnpu_status st = clnpu_program_get_source(dev, name, f->data, extra, out);
    if (!st) (*out)->embedded = f;
    return st;
}

clnpu_status clnpu_program_create_kernel(const clnpu_program *p, const char *kernel_name,
                                         void **out_kernel)
{
    cl_int err;
    cl_kernel k = clCreateKernel(p->program, kernel_name, &err);
    if (!k) return clnpu_fail_cl(err, "clCreateKernel", kernel_name);
    *out_kernel = k;
    return CLNPU_OK;
}

clnpu_status clnpu_program_kernel(clnpu_program *p, const char *kernel_name, void **out_kernel)
{
    for (kernel_entry *k = p->kernels; k; k = k->next) {
        if (!strcmp(k->name, kernel_name)) {
            *out_kernel = k->kernel;
            return CLNPU_OK;
        }
    }
    kernel_entry *k = calloc(1, sizeof *k);
    if (!k) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    clnpu_status st = clnpu_program_create_kernel(p, kernel_name, (void **)&k->kernel);
    if (st) {
        free(k);
        return st;
    }
    snprintf(k->name, sizeof k->name, "%s", kernel_name);
    k->next = p->kernels;
    p->kernels = k;
    *out_kernel = k->kernel;
    return CLNPU_OK;
}
