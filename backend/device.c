/* Opening a device: context and queue, profile binding, emulation limits, buffers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_internal.h"
#include "clnpu/tuning.h"
#include "../common/error.h"

clnpu_device_options clnpu_device_options_default(void)
{
    clnpu_device_options o;
    memset(&o, 0, sizeof o);
    return o;
}

static void format_bytes(uint64_t b, char *out, size_t cap)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) { v /= 1024; u++; }
    snprintf(out, cap, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

/* The cache directory, whole or an error: cut to the buffer it would name another directory.
 * Room is left for "/<16 hex>.clbin.tmp.XXXXXX" inside the entry paths. */
#define CACHE_DIR_MAX 1000
static clnpu_status choose_cache_dir(clnpu_device *dev, const clnpu_device_options *o)
{
    const char *env, *from = "the cache directory";
    int n = 0;
    if (o->cache_dir) n = snprintf(dev->cache_dir, sizeof dev->cache_dir, "%s", o->cache_dir);
    else if ((env = getenv("CLNPU_CACHE_DIR")) && *env)
        n = snprintf(dev->cache_dir, sizeof dev->cache_dir, "%s", env), from = "CLNPU_CACHE_DIR";
    else if ((env = getenv("XDG_CACHE_HOME")) && *env)
        n = snprintf(dev->cache_dir, sizeof dev->cache_dir, "%s/clnpu", env), from = "XDG_CACHE_HOME/clnpu";
    else if ((env = getenv("HOME")) && *env)
        n = snprintf(dev->cache_dir, sizeof dev->cache_dir, "%s/.cache/clnpu", env), from = "HOME/.cache/clnpu";
    else
        dev->no_cache = true; /* nowhere sensible to write: build every time */
    if (n > CACHE_DIR_MAX) {
        dev->cache_dir[0] = '\0';
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s is %d characters long: at most %d (or use --no-cache)", from, n,
                          CACHE_DIR_MAX);
    }
    return CLNPU_OK;
}

static void format_base_options(const clnpu_device *d, char *out, size_t cap);

static clnpu_status bind_profile(clnpu_device *dev, const clnpu_device_options *o)
{
    clnpu_profile_set *builtin = NULL;
    const clnpu_profile_set *set = o->profiles;
    if (!set) {
        clnpu_status st = clnpu_profile_set_builtin(&builtin);
        if (st) return st;
        set = builtin;
    }
    clnpu_status st = CLNPU_OK;
    if (o->target && *o->target) {
        const clnpu_profile *p = clnpu_profile_set_find(set, o->target);
        if (!p) {
            char names[1024] = "";
            for (size_t i = 0; i < clnpu_profile_set_count(set); i++) {
                if (i) strncat(names, ", ", sizeof names - strlen(names) - 1);
                strncat(names, clnpu_profile_set_get(set, i)->name, sizeof names - strlen(names) - 1);
            }
            st = clnpu_fail(CLNPU_ERR_NOT_FOUND, "no target profile named '%s' (known: %s)",
                            o->target, names);
        } else if (!strcmp(p->name, "generic")) {
            /* "generic" is always this device's own, filled in from its capabilities. */
            dev->profile = *p;
            clnpu_profile_fill_generic(&dev->profile, &dev->info);
        } else {
            dev->profile = *p;
            /* Binding a profile whose rules reject this device is emulation. */
            dev->emulated = !clnpu_profile_matches(p, &dev->info);
        }
    } else {
        st = clnpu_profile_match(set, &dev->info, &dev->profile, NULL);
    }
    clnpu_profile_set_destroy(builtin);
    return st;
}

clnpu_status clnpu_device_open(size_t index, const clnpu_device_options *options, clnpu_device **out)
{
    if (!out) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_device_open: NULL output");
    *out = NULL;
    clnpu_device_options defaults = clnpu_device_options_default();
    const clnpu_device_options *o = options ? options : &defaults;

    clnpu_cl_device_ref *refs = NULL;
    clnpu_device_info *infos = NULL;
    size_t n = 0;
    clnpu_status st = clnpu_device_enumerate(&refs, &infos, &n);
    if (st) return st;
    if (index >= n) {
        clnpu_device_list_free(infos);
        free(refs);
        return clnpu_fail(CLNPU_ERR_NOT_FOUND, "no device %zu: %zu device%s found (see 'clnpu devices')",
                          index, n, n == 1 ? "" : "s");
    }
    clnpu_device *dev = calloc(1, sizeof *dev);
    if (!dev) {
        clnpu_device_list_free(infos);
        free(refs);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    dev->info = infos[index];
    dev->platform = refs[index].platform;
    dev->device = refs[index].device;
    clnpu_device_list_free(infos);
    free(refs);

    st = bind_profile(dev, o);
    if (st) { free(dev); return st; }

    cl_int err;
    cl_context_properties props[] = {CL_CONTEXT_PLATFORM, (cl_context_properties)dev->platform, 0};
    dev->context = clCreateContext(props, 1, &dev->device, NULL, NULL, &err);
    if (!dev->context) {
        free(dev);
        return clnpu_fail_cl(err, "clCreateContext", "opening the device");
    }
    cl_command_queue_properties qp = o->profiling ? CL_QUEUE_PROFILING_ENABLE : 0;
    dev->queue = clCreateCommandQueue(dev->context, dev->device, qp, &err);
    if (!dev->queue) {
        clReleaseContext(dev->context);
        free(dev);
        return clnpu_fail_cl(err, "clCreateCommandQueue", "opening the device");
    }

    dev->capacity = dev->info.global_mem_bytes;
    if (dev->profile.memory_bytes > 0 && (uint64_t)dev->profile.memory_bytes < dev->capacity)
        dev->capacity = (uint64_t)dev->profile.memory_bytes;
    /* a plan's assumed capacity (a cluster's override of the profile): held to it exactly */
    if (options && options->memory_bytes && options->memory_bytes < dev->capacity) dev->capacity = options->memory_bytes;
    /* where the profile says kernel programs live in device memory, they are held for the
     * device's lifetime: reserved now, so buffers and plans see the rest */
    dev->used = (uint64_t)dev->profile.program_bytes;
    uint64_t budget = dev->info.local_mem_bytes;
    if (dev->profile.kernel.local_mem_bytes > 0)
        budget = (uint64_t)dev->profile.kernel.local_mem_bytes;
    else if (dev->profile.sram_bytes > 0)
        budget = (uint64_t)dev->profile.sram_bytes;
    if (budget > dev->info.local_mem_bytes) budget = dev->info.local_mem_bytes;
    dev->local_budget = budget;
    clnpu_capability_fill(dev);

    dev->no_cache = o->no_cache;
    dev->profiling = o->profiling;
    if (!dev->no_cache) st = choose_cache_dir(dev, o);
    else if (o->cache_dir) snprintf(dev->cache_dir, sizeof dev->cache_dir, "%s", o->cache_dir);
    format_base_options(dev, dev->base_options, sizeof dev->base_options);
    clnpu_device_isa_of(&dev->info, &dev->isa);
    clnpu_tuning_format_device_key(dev, dev->tuning_key, sizeof dev->tuning_key);
    if (!st) st = clnpu_device_load_default_tuning(dev);
    if (st) {
        clnpu_device_close(dev);
        return st;
    }
    *out = dev;
    return CLNPU_OK;
}

void clnpu_device_close(clnpu_device *dev)
{
    if (!dev) return;
    if (dev->queue) clFinish(dev->queue);
    clnpu_trace_free(dev->trace);
    clnpu_tuning_db_destroy(dev->owned_tuning);
    clnpu_programs_release(dev);
    if (dev->queue) clReleaseCommandQueue(dev->queue);
    if (dev->context) clReleaseContext(dev->context);
    free(dev);
}

const clnpu_device_info *clnpu_device_get_info(const clnpu_device *d) { return &d->info; }
const clnpu_profile *clnpu_device_get_profile(const clnpu_device *d) { return &d->profile; }
const clnpu_device_isa *clnpu_device_get_isa(const clnpu_device *d) { return &d->isa; }
bool clnpu_device_is_emulated(const clnpu_device *d) { return d->emulated; }
uint64_t clnpu_device_memory_capacity(const clnpu_device *d) { return d->capacity; }
uint64_t clnpu_device_memory_used(const clnpu_device *d) { return d->used; }
uint64_t clnpu_device_local_mem_budget(const clnpu_device *d) { return d->local_budget; }
void *clnpu_device_cl_context(const clnpu_device *d) { return d->context; }
void *clnpu_device_cl_queue(const clnpu_device *d) { return d->queue; }
void *clnpu_device_cl_device(const clnpu_device *d) { return d->device; }
const char *clnpu_device_cache_dir(const clnpu_device *d) { return d->no_cache ? "" : d->cache_dir; }

clnpu_status clnpu_device_finish(clnpu_device *d)
{
    cl_int err = clFinish(d->queue);
    return err ? clnpu_fail_cl(err, "clFinish", d->info.name) : CLNPU_OK;
}

/* The -D options every program of this device gets, from its bound profile and local-memory
 * budget; both are fixed at open, so this runs once there (programs and the tuning key use it
 * on every launch). */
static void format_base_options(const clnpu_device *d, char *out, size_t cap)
{
    const clnpu_kernel_params *k = &d->profile.kernel;
    int n = snprintf(out, cap, "-DCLNPU_LOCAL_MEM_BYTES=%llu", (unsigned long long)d->local_budget);
    struct { const char *name; int v; } defs[] = {
        {"CLNPU_TILE_M", k->tile_m}, {"CLNPU_TILE_N", k->tile_n}, {"CLNPU_TILE_K", k->tile_k},
        {"CLNPU_VECTOR_WIDTH", k->vector_width}, {"CLNPU_WG_X", k->wg_x}, {"CLNPU_WG_Y", k->wg_y},
    };
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        if (defs[i].v > 0 && n >= 0 && (size_t)n < cap)
            n += snprintf(out + n, cap - (size_t)n, " -D%s=%d", defs[i].name, defs[i].v);
    if (d->info.fp16 && n >= 0 && (size_t)n < cap) snprintf(out + n, cap - (size_t)n, " -DCLNPU_HAS_FP16=1");
}

void clnpu_device_base_options(const clnpu_device *d, char *out, size_t cap)
{
    snprintf(out, cap, "%s", d->base_options);
}

/* ---- buffers ---- */

struct clnpu_buffer {
    clnpu_device *dev;
    cl_mem mem;
    size_t size;
    bool sub;
};

clnpu_status clnpu_buffer_create(clnpu_device *d, size_t bytes, clnpu_buffer **out)
{
    *out = NULL;
    char want[32], used[32], cap[32];
    format_bytes(bytes, want, sizeof want);
    format_bytes(d->used, used, sizeof used);
    format_bytes(d->capacity, cap, sizeof cap);
    if (bytes == 0) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "cannot allocate an empty buffer");
    if (d->used + bytes > d->capacity) {
        char over[32];
        format_bytes(d->used + bytes - d->capacity, over, sizeof over);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY,
                          "device %zu (%s) bound to profile '%s'%s: cannot allocate %s: %s of %s "
                          "already in use, %s over capacity",
                          d->info.index, d->info.name, d->profile.name,
                          d->emulated ? " (emulated)" : "", want, used, cap, over);
    }
    if (bytes > d->info.max_alloc_bytes)
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY,
                          "device %zu (%s): cannot allocate %s in one buffer (max allocation %llu B)",
                          d->info.index, d->info.name, want,
                          (unsigned long long)d->info.max_alloc_bytes);
    clnpu_buffer *b = calloc(1, sizeof *b);
    if (!b) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    cl_int err;
    b->mem = clCreateBuffer(d->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (!b->mem) {
        free(b);
        clnpu_fail_cl(err, "clCreateBuffer", NULL);
        return clnpu_fail_context(err == CL_INVALID_BUFFER_SIZE || err == CL_MEM_OBJECT_ALLOCATION_FAILURE
                                      ? CLNPU_ERR_OUT_OF_MEMORY : CLNPU_ERR_OPENCL,
                                  "device %zu (%s): allocating %s", d->info.index, d->info.name, want);
    }
    b->dev = d;
    b->size = bytes;
    d->used += bytes;
    *out = b;
    return CLNPU_OK;
}

size_t clnpu_buffer_sub_align(const clnpu_device *d)
{
    cl_uint align_bits = 0;
    clGetDeviceInfo(d->device, CL_DEVICE_MEM_BASE_ADDR_ALIGN, sizeof align_bits, &align_bits, NULL);
    return align_bits >= 8 ? align_bits / 8 : 1;
}

clnpu_status clnpu_buffer_create_sub(clnpu_buffer *parent, size_t offset, size_t bytes, clnpu_buffer **out)
{
    *out = NULL;
    const size_t align = clnpu_buffer_sub_align(parent->dev);
    if (!bytes || offset % align || offset + bytes > parent->size)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sub-buffer [%zu, +%zu) of a %zu-byte buffer: empty, past the "
                          "end, or not aligned to the device's %zu bytes", offset, bytes, parent->size, align);
    clnpu_buffer *b = calloc(1, sizeof *b);
    if (!b) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    cl_buffer_region region = {offset, bytes};
    cl_int err;
    b->mem = clCreateSubBuffer(parent->mem, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, &region, &err);
    if (!b->mem) {
        free(b);
        return clnpu_fail_cl(err, "clCreateSubBuffer", NULL);
    }
    b->dev = parent->dev;
    b->size = bytes;
    b->sub = true; /* its bytes are the parent's: not counted twice */
    *out = b;
    return CLNPU_OK;
}


void clnpu_buffer_destroy(clnpu_buffer *b)
{
    if (!b) return;
    clReleaseMemObject(b->mem);
    if (!b->sub) b->dev->used -= b->size;
    free(b);
}

size_t clnpu_buffer_size(const clnpu_buffer *b) { return b->size; }
void *clnpu_buffer_cl_mem(const clnpu_buffer *b) { return b->mem; }

static clnpu_status check_range(const clnpu_buffer *b, size_t off, size_t bytes, const char *op)
{
    if (off > b->size || bytes > b->size - off)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s of %zu bytes at offset %zu is outside a "
                          "buffer of %zu bytes", op, bytes, off, b->size);
    return CLNPU_OK;
}

clnpu_status clnpu_buffer_write_async(clnpu_buffer *b, size_t off, const void *src, size_t bytes)
{
    clnpu_status st = check_range(b, off, bytes, "write");
    if (st || !bytes) return st;
    cl_int err = clEnqueueWriteBuffer(b->dev->queue, b->mem, CL_FALSE, off, bytes, src, 0, NULL, NULL);
    return err ? clnpu_fail_cl(err, "clEnqueueWriteBuffer", NULL) : CLNPU_OK;
}

clnpu_status clnpu_buffer_write(clnpu_buffer *b, size_t off, const void *src, size_t bytes)
{
    clnpu_status st = check_range(b, off, bytes, "write");
    if (st || !bytes) return st;
    cl_int err = clEnqueueWriteBuffer(b->dev->queue, b->mem, CL_TRUE, off, bytes, src, 0, NULL, NULL);
    return err ? clnpu_fail_cl(err, "clEnqueueWriteBuffer", NULL) : CLNPU_OK;
}

clnpu_status clnpu_buffer_write_2d(clnpu_buffer *b, size_t off, size_t pitch, const void *src, size_t src_pitch,
                                   size_t width, size_t rows)
{
    if (!rows || !width) return CLNPU_OK;
    if (width > pitch || width > src_pitch)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "2-D write: rows of %zu bytes with pitches %zu and %zu", width,
                          pitch, src_pitch);
    clnpu_status st = check_range(b, off, (rows - 1) * pitch + width, "2-D write");
    if (st) return st;
    const size_t zero[3] = {0, 0, 0}, dst_origin[3] = {off, 0, 0}, region[3] = {width, rows, 1};
    cl_int err = clEnqueueWriteBufferRect(b->dev->queue, b->mem, CL_TRUE, dst_origin, zero, region, pitch, 0, src_pitch,
                                          0, src, 0, NULL, NULL);
    return err ? clnpu_fail_cl(err, "clEnqueueWriteBufferRect", NULL) : CLNPU_OK;
}

clnpu_status clnpu_buffer_read(clnpu_buffer *b, size_t off, void *dst, size_t bytes)
{
    clnpu_status st = check_range(b, off, bytes, "read");
    if (st || !bytes) return st;
    if (b->dev->recording) return CLNPU_OK; /* a dry pass: nothing ran, the caller's values stay */
    cl_int err = clEnqueueReadBuffer(b->dev->queue, b->mem, CL_TRUE, off, bytes, dst, 0, NULL, NULL);
    return err ? clnpu_fail_cl(err, "clEnqueueReadBuffer", NULL) : CLNPU_OK;
}

clnpu_status clnpu_buffer_fill(clnpu_buffer *b, const void *pattern, size_t psize)
{
    if (!psize || b->size % psize)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "fill pattern of %zu bytes does not divide a "
                          "buffer of %zu bytes", psize, b->size);
    cl_int err = clEnqueueFillBuffer(b->dev->queue, b->mem, pattern, psize, 0, b->size, 0, NULL, NULL);
    return err ? clnpu_fail_cl(err, "clEnqueueFillBuffer", NULL) : CLNPU_OK;
}
