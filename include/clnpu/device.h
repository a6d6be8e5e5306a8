/* Devices: every OpenCL device on every platform, its capabilities, and the target profile
 * bound to it. From examples/devices.c (built and run by the tests):
 *
 *     if (clnpu_device_list(&infos, &n) || clnpu_profile_set_builtin(&set)) goto fail; // enumerate and query
 *     clnpu_device_options opt = clnpu_device_options_default();
 *     opt.target = target; // a profile name, e.g. "rebellions-atom": emulate that NPU on this device
 *     if (clnpu_device_open(0, &opt, &dev)) goto fail;
 *     if (clnpu_buffer_create(dev, 1 << 20, &b)) goto fail; // fails past the profile's memory
 *     ...
 *     clnpu_buffer_destroy(b);
 *     clnpu_device_close(dev);
 *     clnpu_device_list_free(infos);
 *
 * Binding: with no explicit target, the profile whose match rules fit best is bound; an
 * unknown device gets "generic", filled from its queried capabilities. A device is never
 * refused because its name is unknown. Binding a profile whose rules do not match the device
 * (for example an NPU profile on the PoCL CPU device) is *emulation*: the backend then
 * enforces the profile's memory capacity and local-memory budget and builds kernels with its
 * parameters.
 *
 * Ownership and threads: buffers, weights, programs, models and MoE blocks created on a device
 * borrow it; destroy them before clnpu_device_close (programs and cached kernels go with the
 * device). A device and everything created on it are used by one host thread at a time; two
 * devices are independent. Calls that launch kernels return once queued; a blocking
 * clnpu_buffer_read or clnpu_device_finish waits for the queue.
 */
#ifndef CLNPU_DEVICE_H
#define CLNPU_DEVICE_H

#include "clnpu/export.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clnpu/profile.h"
#include "clnpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clnpu_device_type {
    CLNPU_DEVICE_TYPE_OTHER = 0,
    CLNPU_DEVICE_TYPE_CPU,
    CLNPU_DEVICE_TYPE_GPU,
    CLNPU_DEVICE_TYPE_ACCELERATOR,
} clnpu_device_type;

CLNPU_API const char *clnpu_device_type_name(clnpu_device_type type);

typedef struct clnpu_device_info {
    size_t index;          /* global index over all platforms */
    size_t platform_index;
    char platform_name[128];
    char platform_version[128];
    char vendor[128];
    char name[256];
    char driver_version[128];
    char device_version[128];
    char opencl_c_version[128];
    clnpu_device_type type;
    unsigned compute_units;
    unsigned clock_mhz;
    uint64_t global_mem_bytes;
    uint64_t global_cache_bytes; /* last-level cache in front of global memory, 0 if unknown */
    uint64_t local_mem_bytes;
    bool local_mem_is_global; /* CL_GLOBAL: "local" memory is ordinary cached memory */
    uint64_t max_alloc_bytes;
    size_t max_work_group_size;
    size_t max_work_item_sizes[3];
    unsigned pref_vector_width_float, pref_vector_width_half, pref_vector_width_char;
    unsigned native_vector_width_float;
    bool fp16, fp64;
    bool int_dot_product;  /* cl_khr_integer_dot_product */
    bool subgroups;        /* cl_khr_subgroups, cl_intel_subgroups or OpenCL 3.0 sub-groups */
    unsigned max_num_subgroups; /* CL_DEVICE_MAX_NUM_SUB_GROUPS (0x105C), 0 when not reported */
    size_t subgroup_sizes[8];
    unsigned subgroup_size_count;
    unsigned address_bits;
    char extensions[4096];
} clnpu_device_info;

/* Enumerate every device of every platform. A platform that fails to answer is skipped
 * (noted in the message only if no device at all is found). */
CLNPU_API clnpu_status clnpu_device_list(clnpu_device_info **out_infos, size_t *out_count);
CLNPU_API void clnpu_device_list_free(clnpu_device_info *infos);
CLNPU_API bool clnpu_device_info_has_extension(const clnpu_device_info *info, const char *ext);

typedef struct clnpu_device_options {
    const char *target;            /* profile name to bind; NULL = match automatically */
    const clnpu_profile_set *profiles; /* NULL = the built-in set */
    bool no_cache;                 /* skip the on-disk program binary cache */
    const char *cache_dir;         /* NULL = $CLNPU_CACHE_DIR, $XDG_CACHE_HOME/clnpu, ~/.cache/clnpu */
    bool profiling;                /* create the queue with CL_QUEUE_PROFILING_ENABLE */
    uint64_t memory_bytes;         /* buffers capped at this (0: the profile's capacity); below the device's own */
} clnpu_device_options;

CLNPU_API clnpu_device_options clnpu_device_options_default(void);

/* Pick the profile for a device from a set: best-scoring match, else "generic" filled from
 * the device's capabilities. Never fails for lack of a match. out_matched tells which. */
CLNPU_API clnpu_status clnpu_profile_match(const clnpu_profile_set *set, const clnpu_device_info *info,
                                 clnpu_profile *out_profile, bool *out_matched);
/* Whether a profile's match rules accept a device (a profile without rules accepts none). */
CLNPU_API bool clnpu_profile_matches(const clnpu_profile *profile, const clnpu_device_info *info);

typedef struct clnpu_device clnpu_device;

CLNPU_API clnpu_status clnpu_device_open(size_t index, const clnpu_device_options *options,
                               clnpu_device **out_device);
CLNPU_API void clnpu_device_close(clnpu_device *device);

CLNPU_API const clnpu_device_info *clnpu_device_get_info(const clnpu_device *device);
CLNPU_API const clnpu_profile *clnpu_device_get_profile(const clnpu_device *device);
/* True when the bound profile is not this device's own (an NPU emulated on a real device). */
CLNPU_API bool clnpu_device_is_emulated(const clnpu_device *device);
/* Bytes usable for buffers: min(profile memory, device memory). */
CLNPU_API uint64_t clnpu_device_memory_capacity(const clnpu_device *device);
CLNPU_API uint64_t clnpu_device_memory_used(const clnpu_device *device);
/* Local-memory budget kernels may use: min(profile budget or SRAM, device local memory). */
CLNPU_API uint64_t clnpu_device_local_mem_budget(const clnpu_device *device);

/* Raw OpenCL handles for code that launches kernels (cl_context, cl_command_queue,
 * cl_device_id), returned as void * so this header does not need CL/cl.h. */
CLNPU_API void *clnpu_device_cl_context(const clnpu_device *device);
CLNPU_API void *clnpu_device_cl_queue(const clnpu_device *device);
CLNPU_API void *clnpu_device_cl_device(const clnpu_device *device);

/* Wait for all queued work. */
CLNPU_API clnpu_status clnpu_device_finish(clnpu_device *device);

/* The vector ISA class of a device, from what it reports (PoCL's device name carries the LLVM
 * CPU: "pthread-skylake-avx512-..."; else the native float vector width) and, for CPU devices,
 * the host's L1d / L2 sizes and CPU ("AuthenticAMD 26/2" = vendor, family/model). Kernels size
 * their register blocks by it; tuning never falls back across classes. */
typedef struct clnpu_device_isa {
    char name[16];        /* "avx512", "avx2", "vec4" (CPUs); "gpu", "accelerator" */
    char llvm_cpu[48];    /* "skylake-avx512", "haswell", ... ("" when the name carries none) */
    unsigned lanes;       /* f32 lanes of a native vector register */
    unsigned registers;   /* vector registers */
    uint64_t l1d_bytes, l2_bytes; /* per core (CPU devices; 0 otherwise) */
    char cpu[64];         /* host CPU for CPU devices, "" otherwise */
} clnpu_device_isa;
CLNPU_API void clnpu_device_isa_of(const clnpu_device_info *info, clnpu_device_isa *out_isa);
/* An open device's class (queried once at open). */
CLNPU_API const clnpu_device_isa *clnpu_device_get_isa(const clnpu_device *device);
/* The pieces: the LLVM CPU in a device name, and the class of (cpu name, type, native width). */
CLNPU_API void clnpu_isa_llvm_cpu(const char *device_name, char *out, size_t cap);
CLNPU_API const char *clnpu_isa_class_of(const char *llvm_cpu, clnpu_device_type type, unsigned native_float_width);

/* Quirks: kernel variants ("gemm.ksplit", ...) disabled on a device by the quirk table (vendor /
 * device / driver) or by CLNPU_QUIRKS; out_reason says why. */
CLNPU_API bool clnpu_quirk_disabled(const clnpu_device_info *info, const char *variant, const char **out_reason);
/* The quirks that apply to a device (variant names and reasons); returns how many. */
CLNPU_API size_t clnpu_quirks_applied(const clnpu_device_info *info, const char **out_variants, const char **out_reasons,
                            size_t cap);

/* Kernel traces (device opened with options.profiling): every launch after trace_start is
 * recorded and written as Chrome / Perfetto JSON, one span per kernel. */
CLNPU_API clnpu_status clnpu_device_trace_start(clnpu_device *device);
CLNPU_API bool clnpu_device_tracing(const clnpu_device *device);
/* Record a launch's cl_event (the trace takes ownership). */
CLNPU_API void clnpu_device_trace_record(clnpu_device *device, const char *name, void *cl_event);
CLNPU_API clnpu_status clnpu_device_trace_write(clnpu_device *device, const char *path, size_t *out_events);

/* Device buffers, counted against the (emulated) memory capacity. */
typedef struct clnpu_buffer clnpu_buffer;
CLNPU_API clnpu_status clnpu_buffer_create(clnpu_device *device, size_t bytes, clnpu_buffer **out_buffer);
CLNPU_API void clnpu_buffer_destroy(clnpu_buffer *buffer);
/* A view of bytes [offset, offset + bytes) of parent as a buffer of its own (clCreateSubBuffer):
 * several small inputs packed in one parent are uploaded with one write. offset must be a
 * multiple of clnpu_buffer_sub_align; destroy the views before the parent. */
CLNPU_API clnpu_status clnpu_buffer_create_sub(clnpu_buffer *parent, size_t offset, size_t bytes, clnpu_buffer **out_buffer);
CLNPU_API size_t clnpu_buffer_sub_align(const clnpu_device *device);
CLNPU_API size_t clnpu_buffer_size(const clnpu_buffer *buffer);
CLNPU_API void *clnpu_buffer_cl_mem(const clnpu_buffer *buffer); /* cl_mem */
CLNPU_API clnpu_status clnpu_buffer_write(clnpu_buffer *buffer, size_t offset, const void *src, size_t bytes);
/* Queued in order with the kernels, without waiting: src must stay valid and unchanged until
 * the queue has passed it (clnpu_device_finish, or a blocking read after it). Saves a host round
 * trip per small upload (a decode step's token ids and positions). */
CLNPU_API clnpu_status clnpu_buffer_write_async(clnpu_buffer *buffer, size_t offset, const void *src, size_t bytes);
/* rows rows of width bytes, src_pitch apart in src, to offset + r * pitch (blocking). */
CLNPU_API clnpu_status clnpu_buffer_write_2d(clnpu_buffer *buffer, size_t offset, size_t pitch, const void *src,
                                   size_t src_pitch, size_t width, size_t rows);
CLNPU_API clnpu_status clnpu_buffer_read(clnpu_buffer *buffer, size_t offset, void *dst, size_t bytes);
CLNPU_API clnpu_status clnpu_buffer_fill(clnpu_buffer *buffer, const void *pattern, size_t pattern_size);

#ifdef __cplusplus
}
#endif
#endif
