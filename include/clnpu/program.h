/* Kernel programs: embedded OpenCL C sources built per device, with an on-disk binary cache.
 * From examples/rmsnorm.c:
 *
 *     CHECK(clnpu_program_get(dev, "elementwise.cl", NULL, &prog)); // cached per device
 *     CHECK(clnpu_program_create_kernel(prog, "clnpu_fill_f32", &k));
 *     cl_mem mem = clnpu_buffer_cl_mem(buf);
 *     ... clSetKernelArg, clEnqueueNDRangeKernel on clnpu_device_cl_queue(dev) ...
 *     clReleaseKernel(k);
 *
 * Build options: every build gets -D defines from the bound profile's kernel parameters
 * (CLNPU_TILE_M, CLNPU_VECTOR_WIDTH, CLNPU_LOCAL_MEM_BYTES, ...) plus `extra_options`.
 * The cache key hashes source, full options, device name, driver and platform versions and the
 * cache-format version; the full key is also stored in the entry and compared on load, so a
 * mismatched or corrupt entry is rebuilt, never trusted. Writes are atomic (temp + rename).
 * Ownership: programs belong to their device (freed by clnpu_device_close); a kernel from
 * clnpu_program_create_kernel is the caller's, one from clnpu_program_kernel the program's.
 */
#ifndef CLNPU_PROGRAM_H
#define CLNPU_PROGRAM_H

#include "clnpu/export.h"

#include <stdbool.h>
#include <stddef.h>

#include "clnpu/device.h"
#include "clnpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clnpu_program clnpu_program;

typedef enum clnpu_program_origin {
    CLNPU_PROGRAM_BUILT = 0,   /* compiled from source */
    CLNPU_PROGRAM_DISK_CACHE,  /* loaded from the on-disk binary cache */
    CLNPU_PROGRAM_MEMORY,      /* already built on this device in this process */
} clnpu_program_origin;

/* Names of the embedded kernel sources ("elementwise.cl", ...). */
CLNPU_API size_t clnpu_kernel_source_count(void);
CLNPU_API const char *clnpu_kernel_source_name(size_t index);
/* The embedded text of a kernel source, or NULL. */
CLNPU_API const char *clnpu_kernel_source(const char *name);

/* Build (or fetch from cache) an embedded source on a device. The program is owned by the
 * device and lives until clnpu_device_close. */
CLNPU_API clnpu_status clnpu_program_get(clnpu_device *device, const char *source_name,
                               const char *extra_options, clnpu_program **out_program);
/* As clnpu_program_get, for the listed kernels only (a NULL-terminated list of names): the build
 * adds -DCLNPU_ONLY=1 and -DCLNPU_ONLY_<kernel>=1 for each, so a source whose kernels sit inside
 * `#if !CLNPU_ONLY || CLNPU_ONLY_<kernel>` ... `#endif` (marked CLNPU_ONLY) generates no code for
 * the others. On PoCL every kernel of a
 * program is compiled when its binary is taken for the cache, so this is most of a first build. */
CLNPU_API clnpu_status clnpu_program_get_kernels(clnpu_device *device, const char *source_name,
                                                 const char *extra_options, const char *const *kernels,
                                                 clnpu_program **out_program);
/* Same for arbitrary source text (tests, user kernels); `label` names it in messages. */
CLNPU_API clnpu_status clnpu_program_get_source(clnpu_device *device, const char *label, const char *source,
                                      const char *extra_options, clnpu_program **out_program);

CLNPU_API void *clnpu_program_cl_program(const clnpu_program *program); /* cl_program */
CLNPU_API clnpu_program_origin clnpu_program_get_origin(const clnpu_program *program);
CLNPU_API double clnpu_program_build_ms(const clnpu_program *program);
/* Full option string the program was built with. */
CLNPU_API const char *clnpu_program_options(const clnpu_program *program);
/* Path of the disk cache entry ("" when caching is off). */
CLNPU_API const char *clnpu_program_cache_path(const clnpu_program *program);

/* Create a kernel object from a program (caller releases it with clReleaseKernel). */
CLNPU_API clnpu_status clnpu_program_create_kernel(const clnpu_program *program, const char *kernel_name,
                                         void **out_cl_kernel);

/* A kernel object owned and cached by the program (created on first use, released with the
 * device). Setting its arguments is not thread-safe: one host thread drives a device. */
CLNPU_API clnpu_status clnpu_program_kernel(clnpu_program *program, const char *kernel_name, void **out_cl_kernel);

/* Dry passes, to learn a run's programs before building them (e.g. in helper processes, see
 * `clnpu run`): while recording, a program request that is not in memory builds nothing and is
 * remembered, and nothing runs on the device (launches do nothing, clnpu_buffer_read leaves its destination as it was),
 * so a pass through a forward costs milliseconds and lists what a real one would compile. Stop
 * gives the requests missing from the disk cache, one "source<TAB>extra options" line each,
 * oldest first, for clnpu_program_get (caller frees *out_list). The dry pass leaves junk in the
 * device's buffers: reset any sequence it used (clnpu_model_reset). */
CLNPU_API void clnpu_device_record_start(clnpu_device *device);
CLNPU_API bool clnpu_device_recording(const clnpu_device *device);
CLNPU_API clnpu_status clnpu_device_record_stop(clnpu_device *device, char **out_list, size_t *out_count);

/* The cache directory a device uses ("" when caching is off). */
CLNPU_API const char *clnpu_device_cache_dir(const clnpu_device *device);

/* What building programs has cost this device so far: programs compiled and loaded from the disk
 * cache, and the time spent on each (so throughput can be told apart from first-run compiles). */
typedef struct clnpu_program_stats {
    size_t built, cached;
    double build_ms, cache_ms;
} clnpu_program_stats;
CLNPU_API clnpu_program_stats clnpu_device_program_stats(const clnpu_device *device);

/* Build (or load from the disk cache) several embedded sources with their extra options
 * (extra_options NULL: none) at once, independent programs on up to `threads` host threads (0: one
 * per CPU). Programs already in memory are not rebuilt; afterwards clnpu_program_get finds them all.
 * out_programs (NULL or [count]) receives each one, its origin telling how it came. The first
 * failure's message is kept. */
CLNPU_API clnpu_status clnpu_program_build_many(clnpu_device *device, const char *const *source_names,
                                      const char *const *extra_options, size_t count, size_t threads,
                                      clnpu_program **out_programs);

/* Compiler warnings never reach a terminal: kernels are built with -w, or with -Werror when
 * CLNPU_KERNEL_WERROR=1 is set in the environment (the test suite sets it, so a warning fails a
 * test there); PoCL prints clang's diagnostics to stderr, and the build log keeps them. */

#ifdef __cplusplus
}
#endif
#endif
