/* Internal view of devices shared by backend modules (device, program, buffers). */
#ifndef CLNPU_DEVICE_INTERNAL_H
#define CLNPU_DEVICE_INTERNAL_H

#include <CL/cl.h>

#include "clnpu/capability.h"
#include "clnpu/device.h"
#include "clnpu/program.h"

typedef struct clnpu_cl_device_ref {
    cl_platform_id platform;
    cl_device_id device;
} clnpu_cl_device_ref;

void clnpu_device_query(cl_platform_id platform, cl_device_id d, clnpu_device_info *info);
clnpu_status clnpu_device_enumerate(clnpu_cl_device_ref **out_refs, clnpu_device_info **out_infos,
                                    size_t *out_count);

struct clnpu_device {
    clnpu_device_info info;
    clnpu_profile profile;
    bool emulated;
    cl_platform_id platform;
    cl_device_id device;
    cl_context context;
    cl_command_queue queue;
    uint64_t capacity, used;
    uint64_t local_budget;
    bool no_cache;
    char cache_dir[1024];
    struct clnpu_program *programs; /* built in this process, newest first */
    clnpu_program_stats program_stats; /* compiler and disk-cache work so far (program.c) */
    bool recording;                     /* a dry pass: see clnpu_device_record_start */
    struct clnpu_program *recorded;     /* its missing programs, newest first (never built) */
    bool profiling;
    struct clnpu_trace *trace;      /* NULL unless tracing */
    const struct clnpu_tuning_db *tuning; /* consulted by the kernels' host code */
    struct clnpu_tuning_db *owned_tuning; /* the default one, freed with the device */
    int tuning_verbose;
    char tuning_said[8192];
    char base_options[1024]; /* fixed at open: see clnpu_device_base_options */
    char tuning_key[384];    /* fixed at open: see clnpu_tuning_device_key */
    clnpu_capability cap;    /* the capability table's choice, made at open (backend/capability.c) */
    clnpu_device_isa isa;    /* fixed at open: see clnpu_device_isa_of */
};

clnpu_status clnpu_device_load_default_tuning(clnpu_device *dev);
/* Fill dev->cap from the device, its bound profile and the environment (at open). */
void clnpu_capability_fill(clnpu_device *dev);
/* The device's tuning key (vendor, name, driver, hash of its base options), made once at open. */
void clnpu_tuning_format_device_key(const clnpu_device *dev, char *out, size_t cap);

void clnpu_trace_free(struct clnpu_trace *t);

/* Base -D options derived from the bound profile and device (no trailing space). */
void clnpu_device_base_options(const clnpu_device *device, char *out, size_t cap);
void clnpu_programs_release(clnpu_device *device);
/* Fill a "generic" profile from the device's queried capabilities. */
void clnpu_profile_fill_generic(clnpu_profile *profile, const clnpu_device_info *info);

#endif
