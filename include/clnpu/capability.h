/* Kernel families and the capability table that chooses between them.
 *
 * Every operator has two kernel families: "cpu" (one work-item streams a register block; local
 * memory unused, work-groups of 1 where that is fastest) and "wg" (work-groups cooperating through
 * local memory: tiled GEMM, K-parallel GEMV, parallel reductions). One table in the backend maps a
 * device's capabilities (and the bound profile) to a family and its defaults; runtime code asks it
 * instead of testing the device type itself.
 *
 *     const clnpu_capability *c = clnpu_device_capability(dev);
 *     if (c->family == CLNPU_KERNEL_FAMILY_WG) ... c->wg_size, c->gemm.mwg ...
 *
 * Choice, first that applies: CLNPU_KERNEL_FAMILY=wg|cpu (tests, bring-up); a bound profile that is
 * emulated and is not a CPU profile (an NPU or GPU emulated on this device: its local-memory budget
 * must be exercised); a device whose local memory is real (CL_LOCAL) and that is not a CPU: wg;
 * otherwise cpu. clnpu_device_set_kernel_family overrides it on an open device (tests, the tuner).
 */
#ifndef CLNPU_CAPABILITY_H
#define CLNPU_CAPABILITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clnpu/device.h"
#include "clnpu/export.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clnpu_kernel_family {
    CLNPU_KERNEL_FAMILY_CPU = 0,
    CLNPU_KERNEL_FAMILY_WG,
} clnpu_kernel_family;

CLNPU_API const char *clnpu_kernel_family_name(clnpu_kernel_family f);

/* Tunables of the work-group GEMM (kernels-cl/gemm_wg.cl), CLBlast Xgemm's names. */
typedef struct clnpu_gemm_wg_params {
    unsigned mwg, nwg, kwg;   /* work-group tile of Y (M x N) and K step through local memory */
    unsigned mdimc, ndimc;    /* threads per work-group along M and N */
    unsigned vwm, vwn;        /* contiguous rows / columns per thread chunk */
    unsigned kwi;             /* K unroll of the inner loop */
    unsigned sa, sb;          /* 1: X / W tiles cached in local memory; 0: read from global */
} clnpu_gemm_wg_params;

typedef struct clnpu_capability {
    clnpu_device_type type;
    bool local_mem_real;       /* CL_LOCAL: dedicated on-chip memory; false: emulated in global */
    uint64_t local_mem_bytes;  /* the budget kernels may use (an emulated NPU's SRAM budget) */
    bool subgroups;            /* cl_khr_subgroups / cl_intel_subgroups / OpenCL 3.0 sub-groups */
    unsigned subgroup_size;    /* the preferred sub-group size, 0 unknown */
    unsigned compute_units;
    unsigned vector_width;     /* preferred float vector width */
    size_t max_wg;             /* CL_DEVICE_MAX_WORK_GROUP_SIZE */
    clnpu_kernel_family family;
    const char *reason;        /* why this family: "CLNPU_KERNEL_FAMILY", "emulated NPU profile", ... */
    unsigned wg_size;          /* work-items of a 1-D reduction work-group in the wg family */
    clnpu_gemm_wg_params gemm; /* defaults; the tuning database may override per shape class */
} clnpu_capability;

/* The table's choice for a device with a bound profile, without opening it (clnpu devices). */
CLNPU_API void clnpu_capability_compute(const clnpu_device_info *info, const clnpu_profile *profile, bool emulated,
                              clnpu_capability *out_capability);
/* The table's choice for an open device (never NULL). */
CLNPU_API const clnpu_capability *clnpu_device_capability(const clnpu_device *device);
/* Force a family (and, when wg_size > 0, the reduction work-group size) on an open device. Kernels
 * built before keep their programs; the next launch builds the other family's. wg_size must be a
 * power of two within the device's work-group limit. */
CLNPU_API clnpu_status clnpu_device_set_kernel_family(clnpu_device *device, clnpu_kernel_family family, unsigned wg_size);
/* The kernel an operator runs on this device in its current family, "family:kernel" (reports,
 * benchmarks): op is one of gemm, gemv, gemm_grouped, rmsnorm, argmax, sample, flash_attention,
 * mla_decode, rope_yarn, silu_mul, softmax, moe_route_ids, moe_route_weights, model_forward; rows is
 * M for GEMM (gemm with rows <= 8 is the GEMV). Ops with one kernel for both families say "shared". */
CLNPU_API const char *clnpu_op_variant(const clnpu_device *device, const char *op, size_t rows);
/* Bytes of local memory a work-group GEMM tile with these parameters uses. */
CLNPU_API size_t clnpu_gemm_wg_local_bytes(const clnpu_gemm_wg_params *p, bool swiglu);
/* Whether parameters are consistent (multiples, power-of-two thread counts, within max_wg);
 * *out_why names the first violated rule. */
CLNPU_API bool clnpu_gemm_wg_params_valid(const clnpu_gemm_wg_params *p, size_t max_wg, const char **out_why);
/* Fit parameters to a local-memory budget by halving KWG, then NWG/MWG (re-tiling). Returns false
 * when even the smallest tile does not fit. */
CLNPU_API bool clnpu_gemm_wg_fit(clnpu_gemm_wg_params *p, uint64_t budget, bool swiglu);

#ifdef __cplusplus
}
#endif
#endif
