/* Target profiles: what a class of device can do, read from YAML files in targets/.
 *
 * A profile carries the figures the scheduler's cost model needs (peak throughput per
 * dtype, memory capacity and bandwidth, on-chip SRAM, links) and the kernel parameters
 * the backend passes to the OpenCL compiler as -D options. The shipped profiles are
 * embedded into the library; more can be loaded from files (clnpu_profile_set_add_file:
 * errors name the file and line). From examples/devices.c:
 *
 *     if (clnpu_device_list(&infos, &n) || clnpu_profile_set_builtin(&set)) goto fail; // the shipped targets/
 *     const clnpu_profile *npu = clnpu_profile_set_find(set, target);
 *     clnpu_profile_set_destroy(set);
 *
 * Ownership: a profile returned by a set points into it (valid until the set is destroyed); a
 * clnpu_profile filled by value (clnpu_profile_match) is the caller's. A set given to
 * clnpu_device_options.profiles is read during clnpu_device_open only. Once built, a set may be
 * read from several threads.
 */
#ifndef CLNPU_PROFILE_H
#define CLNPU_PROFILE_H

#include "clnpu/export.h"

#include <stddef.h>
#include <stdint.h>

#include "clnpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clnpu_dtype_peak {
    CLNPU_PEAK_FP32 = 0,
    CLNPU_PEAK_FP16,
    CLNPU_PEAK_BF16,
    CLNPU_PEAK_FP8,
    CLNPU_PEAK_INT8,
    CLNPU_PEAK_INT4,
    CLNPU_PEAK_COUNT
} clnpu_dtype_peak;

/* Bits for clnpu_profile.match_types; values follow CL_DEVICE_TYPE_*. */
enum {
    CLNPU_MATCH_TYPE_CPU = 1 << 1,
    CLNPU_MATCH_TYPE_GPU = 1 << 2,
    CLNPU_MATCH_TYPE_ACCELERATOR = 1 << 3,
};

#define CLNPU_PROFILE_MAX_PATTERNS 8

typedef struct clnpu_link {
    char type[48];
    double bandwidth; /* bytes/s per direction; 0 = unknown */
    double latency_s; /* one-hop small-message latency; 0 = unknown */
} clnpu_link;

/* Kernel parameters; 0 means "not set: use the kernel's own default". */
typedef struct clnpu_kernel_params {
    int tile_m, tile_n, tile_k; /* GEMM register/cache tile */
    int vector_width;
    int wg_x, wg_y;             /* work-group shape */
    int64_t local_mem_bytes;    /* local-memory (SRAM) budget per work-group */
} clnpu_kernel_params;

typedef struct clnpu_profile {
    char name[64];
    char class_name[48];
    char vendor[48];
    char source[256]; /* file (or "builtin:NAME.yaml") it came from */
    /* Match rules; a profile with none is only bound explicitly (or is "generic"). */
    char match_vendor[CLNPU_PROFILE_MAX_PATTERNS][64];
    int match_vendor_count;
    char match_name[CLNPU_PROFILE_MAX_PATTERNS][64]; /* glob patterns, case-insensitive */
    int match_name_count;
    unsigned match_types; /* CLNPU_MATCH_TYPE_* bits, 0 = any */
    double peak[CLNPU_PEAK_COUNT]; /* FLOP/s or OP/s; 0 = not supported natively */
    char memory_type[32];
    int64_t memory_bytes;
    double memory_bandwidth; /* bytes/s */
    int64_t sram_bytes;      /* on-chip SRAM; 0 = unknown */
    int compute_units;
    clnpu_link link;      /* device to device */
    clnpu_link host_link; /* host to device */
    clnpu_kernel_params kernel;
    char estimated[512];  /* comma-separated fields that are estimates, not measured/published */
    char notes[512];
    /* memory.program_bytes: device memory the kernel programs occupy (a device reserves it when
     * opened, the planner counts it per device); 0 where they are not in device memory, as on
     * PoCL's CPU device (its kernels are shared objects loaded into the host process) */
    int64_t program_bytes;
} clnpu_profile;

typedef struct clnpu_profile_set clnpu_profile_set;

/* Parse one profile from YAML text; `origin` names the file in error messages. */
CLNPU_API clnpu_status clnpu_profile_parse(const char *yaml_text, size_t len, const char *origin,
                                 clnpu_profile *out_profile);
CLNPU_API clnpu_status clnpu_profile_load_file(const char *path, clnpu_profile *out_profile);

CLNPU_API clnpu_status clnpu_profile_set_create(clnpu_profile_set **out_set);
/* A set holding every profile shipped in targets/ (embedded at build time). */
CLNPU_API clnpu_status clnpu_profile_set_builtin(clnpu_profile_set **out_set);
/* Add (or replace, by name) a profile. */
CLNPU_API clnpu_status clnpu_profile_set_add(clnpu_profile_set *set, const clnpu_profile *profile);
CLNPU_API clnpu_status clnpu_profile_set_add_file(clnpu_profile_set *set, const char *path);
/* Add every *.yaml file in a directory. */
CLNPU_API clnpu_status clnpu_profile_set_add_dir(clnpu_profile_set *set, const char *dir);
CLNPU_API size_t clnpu_profile_set_count(const clnpu_profile_set *set);
CLNPU_API const clnpu_profile *clnpu_profile_set_get(const clnpu_profile_set *set, size_t index);
CLNPU_API const clnpu_profile *clnpu_profile_set_find(const clnpu_profile_set *set, const char *name);
CLNPU_API void clnpu_profile_set_destroy(clnpu_profile_set *set);

#ifdef __cplusplus
}
#endif
#endif
