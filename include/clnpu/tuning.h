/* Kernel tuning database: the best parameters per device, kernel, weight dtype and shape class,
 * measured by `clnpu tune`, stored as YAML, used automatically by the runtime. From
 * examples/devices.c:
 *
 *     if (clnpu_tuning_db_load("tuning/pocl-cpu.yaml", &db)) goto fail;
 *     clnpu_device_set_tuning(dev, db);
 *     ... clnpu_gemm() now builds the entry's variant for its shape class ...
 *     clnpu_device_close(dev);
 *     clnpu_tuning_db_destroy(db);
 *
 * A missing file is an empty database. The device borrows the database given to it: destroy the
 * database after the device (or after setting another). Entries are keyed by the device (vendor,
 * name, driver, hash of the build options) and carry the
 * hash of the kernel source they were measured with: an entry whose source changed is ignored
 * (with a note), never trusted. An entry applies exactly when its device key and CPU (vendor,
 * family/model, for CPU devices) both match. Otherwise a device gets the entry of the nearest
 * tuned device by capabilities (type, compute units, local memory, vector width, fp16, integer
 * dot product, CPU family) among those of its own ISA class and CPU vendor only, else the
 * kernels' defaults derived from the device (runtime/gemm_params.c). Devices open with the shipped database (tuning/ in the source tree,
 * embedded) merged with $CLNPU_TUNING_DB or <cache dir>/tuning.yaml; CLNPU_TUNING=off disables it.
 */
#ifndef CLNPU_TUNING_H
#define CLNPU_TUNING_H

#include "clnpu/export.h"

#include <stddef.h>

#include "clnpu/device.h"
#include "clnpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CLNPU_TUNING_MAX_PARAMS 12

typedef struct clnpu_tuning_entry {
    char device_key[384];   /* vendor|name|driver|options hash */
    char kernel[32];        /* gemm, attention, mla */
    char dtype[16];
    char shape_class[32];   /* gemv, decode, grouped, prefill, d192_128, ctx4k, ... */
    char source_hash[17];
    int nparams;
    char names[CLNPU_TUNING_MAX_PARAMS][32];
    int values[CLNPU_TUNING_MAX_PARAMS];
    double ms, default_ms;  /* tuned and default time on the representative shape */
    char measured[32];      /* ISO date */
    char how[96];           /* e.g. "exhaustive 24 candidates, 3 rejected" */
    /* capabilities of the device it was measured on, for nearest-device fallback */
    int type, compute_units, vector_width, fp16, int_dot;
    long long local_mem;
    char isa[16];           /* ISA class (clnpu_device_isa.name); from the key's name if absent */
    char cpu[64];           /* host CPU of a CPU device, "AuthenticAMD 26/2" ("" if unknown) */
} clnpu_tuning_entry;

typedef struct clnpu_tuning_db clnpu_tuning_db;

typedef enum clnpu_tuning_match {
    CLNPU_TUNING_NONE = 0,  /* defaults */
    CLNPU_TUNING_EXACT,     /* this device */
    CLNPU_TUNING_NEAREST,   /* the nearest tuned device by capabilities */
} clnpu_tuning_match;

CLNPU_API clnpu_status clnpu_tuning_db_create(clnpu_tuning_db **out_db);
/* Load (a missing file gives an empty database) and merge (later entries replace earlier). */
CLNPU_API clnpu_status clnpu_tuning_db_load(const char *path, clnpu_tuning_db **out_db);
CLNPU_API clnpu_status clnpu_tuning_db_merge_file(clnpu_tuning_db *db, const char *path);
CLNPU_API clnpu_status clnpu_tuning_db_merge_text(clnpu_tuning_db *db, const char *yaml, size_t len, const char *origin);
/* Write atomically (temp + rename). */
CLNPU_API clnpu_status clnpu_tuning_db_save(const clnpu_tuning_db *db, const char *path);
CLNPU_API size_t clnpu_tuning_db_count(const clnpu_tuning_db *db);
CLNPU_API const clnpu_tuning_entry *clnpu_tuning_db_get(const clnpu_tuning_db *db, size_t i);
/* Insert or replace (same device key, kernel, dtype, class). */
CLNPU_API clnpu_status clnpu_tuning_db_put(clnpu_tuning_db *db, const clnpu_tuning_entry *e);
CLNPU_API void clnpu_tuning_db_destroy(clnpu_tuning_db *db);

/* The key of a device and the hash of an embedded kernel source, as entries store them. */
CLNPU_API void clnpu_tuning_device_key(const clnpu_device *dev, char *out, size_t cap);
CLNPU_API void clnpu_tuning_source_hash(const char *source_name, char out[17]);
/* Fill an entry's capability fields from a device. */
CLNPU_API void clnpu_tuning_entry_set_device(clnpu_tuning_entry *e, const clnpu_device *dev);

/* The entry for (kernel, dtype, class) on a device: exact, else nearest by capabilities, else
 * NULL. Entries with a stale source hash are skipped; *out_note says why when one was. */
CLNPU_API const clnpu_tuning_entry *clnpu_tuning_lookup(const clnpu_tuning_db *db, const clnpu_device *dev, const char *kernel,
                                              const char *dtype, const char *shape_class, clnpu_tuning_match *out_match,
                                              const char **out_note);
/* A parameter of an entry, or def when the entry (or the parameter) is absent. */
CLNPU_API int clnpu_tuning_param(const clnpu_tuning_entry *e, const char *name, int def);

/* The tunables declaration (kernels-cl/tunables.yaml, embedded). */
CLNPU_API const char *clnpu_tunables_yaml(void);

/* The database a device's kernels consult (borrowed; NULL = none). */
CLNPU_API void clnpu_device_set_tuning(clnpu_device *dev, const clnpu_tuning_db *db);
CLNPU_API const clnpu_tuning_db *clnpu_device_get_tuning(const clnpu_device *dev);
/* Say which entry each kernel launch uses, on stderr, once per (kernel, dtype, class). */
CLNPU_API void clnpu_device_set_tuning_verbose(clnpu_device *dev, int verbose);
/* True once per tag when the device is verbose: for kernels' host code to report its choices. */
CLNPU_API bool clnpu_device_tuning_say_once(clnpu_device *dev, const char *tag);
/* The device's choice for (kernel, dtype, class), reported when verbose. */
CLNPU_API const clnpu_tuning_entry *clnpu_device_tuning_lookup(clnpu_device *dev, const char *kernel, const char *dtype,
                                                     const char *shape_class);

#ifdef __cplusplus
}
#endif
#endif
