/* Building kernel programs per device: in-process reuse, then the on-disk binary cache, then
 * the OpenCL compiler. A failed build returns the compiler's log. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
    char label[64]; /* recorded stand-ins only: the source's name, */
    char *extra;    /* the caller's options */
    bool in_cache;  /* recorded stand-ins only: the disk cache has it */
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

static void recorded_release(clnpu_device *dev)
{
    for (clnpu_program *p = dev->recorded, *next; p; p = next) {
        next = p->next;
        free(p->key);
        free(p->options);
        free(p->extra);
        free(p);
    }
    dev->recorded = NULL;
}

void clnpu_programs_release(clnpu_device *dev)
{
    recorded_release(dev);
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

clnpu_program_stats clnpu_device_program_stats(const clnpu_device *dev)
{
    return dev ? dev->program_stats : (clnpu_program_stats){0};
}

/* " -w" for users, " -Werror" for the test suite (CLNPU_KERNEL_WERROR=1): the OpenCL compiler's
 * warnings go to stderr in PoCL, so they must not be produced where a person is watching. */
static const char *warning_option(void)
{
    const char *e = getenv("CLNPU_KERNEL_WERROR");
    return e && *e == '1' ? " -Werror" : " -w";
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

/* base options, the warning option, then the caller's */
static char *make_options(const clnpu_device *dev, const char *extra)
{
    size_t ocap = 2048 + (extra ? strlen(extra) : 0);
    char *options = malloc(ocap);
    if (!options) return NULL;
    clnpu_device_base_options(dev, options, ocap);
    strcat(options, warning_option());
    if (extra && *extra) {
        strcat(options, " ");
        strcat(options, extra);
    }
    return options;
}

/* The disk cache, else the compiler, for one program not yet in memory: no device state is
 * touched but the cache files, so builds of different programs can run on several threads. */
static clnpu_status make_program(clnpu_device *dev, const char *label, const char *source, char *options, char *key,
                                 clnpu_program **out)
{
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
    *out = p;
    return CLNPU_OK;
}

static void program_insert(clnpu_device *dev, clnpu_program *p)
{
    if (p->origin == CLNPU_PROGRAM_BUILT) dev->program_stats.built++, dev->program_stats.build_ms += p->build_ms;
    else dev->program_stats.cached++, dev->program_stats.cache_ms += p->build_ms;
    p->next = dev->programs;
    dev->programs = p;
}

/* A dry pass's request for a program not in memory: remembered (once) unless the disk cache has
 * it; either way an unbuilt stand-in is returned, whose kernels the launch code never asks for. */
static clnpu_status record(clnpu_device *dev, const char *label, const char *extra, char *options, char *key,
                           clnpu_program **out)
{
    for (clnpu_program *p = dev->recorded; p; p = p->next)
        if (!strcmp(p->key, key)) {
            free(key), free(options);
            *out = p;
            return CLNPU_OK;
        }
    clnpu_program *p = calloc(1, sizeof *p);
    char *x = strdup(extra ? extra : "");
    if (!p || !x) {
        free(p), free(x), free(key), free(options);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    p->key = key, p->options = options, p->extra = x;
    snprintf(p->label, sizeof p->label, "%s", label);
    if (!dev->no_cache) {
        clnpu_binary_cache_path(dev->cache_dir, key, p->cache_path, sizeof p->cache_path);
        p->in_cache = access(p->cache_path, F_OK) == 0;
    }
    p->next = dev->recorded;
    dev->recorded = p;
    *out = p;
    return CLNPU_OK;
}

clnpu_status clnpu_program_get_source(clnpu_device *dev, const char *label, const char *source,
                                      const char *extra, clnpu_program **out)
{
    if (!dev || !source || !out)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_program_get_source: NULL argument");
    *out = NULL;
    if (!label) label = "<source>";
    char *options = make_options(dev, extra);
    if (!options) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
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

    if (dev->recording) return record(dev, label, extra, options, key, out);
    clnpu_program *p;
    clnpu_status st = make_program(dev, label, source, options, key, &p);
    if (st) return st;
    program_insert(dev, p);
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
    snprintf(opts + strlen(opts), sizeof opts - strlen(opts), "%s", warning_option());
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

clnpu_status clnpu_program_get_kernels(clnpu_device *dev, const char *name, const char *extra,
                                       const char *const *kernels, clnpu_program **out)
{
    if (!kernels || !kernels[0]) return clnpu_program_get(dev, name, extra, out);
    /* On the launch path: a stack buffer, no allocation. */
    char opts[1024];
    int n = snprintf(opts, sizeof opts, "%s%s-DCLNPU_ONLY=1", extra ? extra : "", extra && *extra ? " " : "");
    for (size_t i = 0; kernels[i] && n > 0 && (size_t)n < sizeof opts; i++)
        n += snprintf(opts + n, sizeof opts - (size_t)n, " -DCLNPU_ONLY_%s=1", kernels[i]);
    if (n <= 0 || (size_t)n >= sizeof opts)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: build options for the kernel list too long", name ? name : "(null)");
    return clnpu_program_get(dev, name, opts, out);
}

clnpu_status clnpu_program_create_kernel(const clnpu_program *p, const char *kernel_name,
                                         void **out_kernel)
{
    if (!p->program) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: no kernels during a dry pass (clnpu_device_record_start)", kernel_name);
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

/* ---- several programs at once ---- */

typedef struct build_job {
    clnpu_device *dev;
    const clnpu_embedded_file *f;
    char *options, *key;
    clnpu_program *out;
    clnpu_status st;
    char msg[2048];
} build_job;

typedef struct build_queue {
    build_job *jobs;
    size_t n, next;
    pthread_mutex_t lock;
} build_queue;

static void *build_worker(void *arg)
{
    build_queue *q = arg;
    for (;;) {
        pthread_mutex_lock(&q->lock);
        size_t i = q->next++;
        pthread_mutex_unlock(&q->lock);
        if (i >= q->n) return NULL;
        build_job *j = &q->jobs[i];
        /* make_program owns options and key from here, on success and failure */
        j->st = make_program(j->dev, j->f->name, j->f->data, j->options, j->key, &j->out);
        j->options = j->key = NULL;
        if (j->st) snprintf(j->msg, sizeof j->msg, "%s", clnpu_error_message());
    }
}

clnpu_status clnpu_program_build_many(clnpu_device *dev, const char *const *names, const char *const *extras, size_t count,
                                      size_t threads, clnpu_program **out)
{
    if (!dev || (count && !names)) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_program_build_many: NULL argument");
    build_job *jobs = calloc(count + 1, sizeof *jobs);
    if (!jobs) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    size_t n = 0;
    clnpu_status st = CLNPU_OK;
    for (size_t i = 0; i < count && !st; i++) {
        const clnpu_embedded_file *f = clnpu_embedded_find(clnpu_embedded_kernels, names[i] ? names[i] : "");
        if (!f) {
            st = clnpu_fail(CLNPU_ERR_NOT_FOUND, "no embedded kernel source named '%s'", names[i] ? names[i] : "(null)");
            break;
        }
        char *options = make_options(dev, extras ? extras[i] : NULL), *key = options ? make_key(dev, f->data, options) : NULL;
        if (!key) {
            free(options);
            st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
            break;
        }
        bool known = false; /* in memory already, or listed twice */
        for (clnpu_program *p = dev->programs; p && !known; p = p->next) known = !strcmp(p->key, key);
        for (size_t k = 0; k < n && !known; k++) known = !strcmp(jobs[k].key, key);
        if (known) {
            free(options), free(key);
            continue;
        }
        jobs[n++] = (build_job){.dev = dev, .f = f, .options = options, .key = key};
    }
    if (!st && n) {
        if (!threads) {
            long c = sysconf(_SC_NPROCESSORS_ONLN);
            threads = c > 0 ? (size_t)c : 1;
        }
        if (threads > n) threads = n;
        build_queue q = {jobs, n, 0, PTHREAD_MUTEX_INITIALIZER};
        pthread_t tid[64];
        size_t started = 0;
        for (size_t t = 1; t < threads && t < 64; t++)
            if (!pthread_create(&tid[started], NULL, build_worker, &q)) started++;
        build_worker(&q); /* this thread works too */
        for (size_t t = 0; t < started; t++) pthread_join(tid[t], NULL);
        for (size_t i = 0; i < n; i++) {
            if (jobs[i].st) {
                if (!st) st = clnpu_fail(jobs[i].st, "%s", jobs[i].msg);
                continue;
            }
            jobs[i].out->embedded = jobs[i].f;
            program_insert(dev, jobs[i].out);
        }
    }
    for (size_t i = 0; i < n; i++) free(jobs[i].options), free(jobs[i].key);
    free(jobs);
    for (size_t i = 0; !st && out && i < count; i++) { /* each request's program, without touching its origin */
        char *options = make_options(dev, extras ? extras[i] : NULL);
        const clnpu_embedded_file *f = clnpu_embedded_find(clnpu_embedded_kernels, names[i]);
        char *key = options ? make_key(dev, f->data, options) : NULL;
        out[i] = NULL;
        for (clnpu_program *p = dev->programs; key && p && !out[i]; p = p->next)
            if (!strcmp(p->key, key)) out[i] = p;
        free(options), free(key);
        if (!out[i]) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    return st;
}

/* ---- dry passes ---- */

void clnpu_device_record_start(clnpu_device *dev)
{
    recorded_release(dev);
    dev->recording = true;
}

bool clnpu_device_recording(const clnpu_device *dev) { return dev && dev->recording; }

clnpu_status clnpu_device_record_stop(clnpu_device *dev, char **out_list, size_t *out_count)
{
    dev->recording = false;
    *out_list = NULL, *out_count = 0;
    size_t len = 1, n = 0;
    for (clnpu_program *p = dev->recorded; p; p = p->next)
        if (!p->in_cache) len += strlen(p->label) + strlen(p->extra) + 2, n++;
    char *list = malloc(len), *w = list;
    if (!list) {
        recorded_release(dev);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    *w = '\0';
    /* oldest first: the order a real pass asks for them */
    clnpu_program *rev = NULL;
    for (clnpu_program *p = dev->recorded, *next; p; p = next) next = p->next, p->next = rev, rev = p;
    dev->recorded = rev;
    for (clnpu_program *p = dev->recorded; p; p = p->next)
        if (!p->in_cache) w += sprintf(w, "%s\t%s\n", p->label, p->extra);
    recorded_release(dev);
    *out_list = list, *out_count = n;
    return CLNPU_OK;
}
