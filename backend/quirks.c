/* Driver quirks: kernel variants disabled on devices where they are known to be wrong or slow,
 * keyed by vendor / device / driver version (case-insensitive globs), each with its reason.
 * CLNPU_QUIRKS="variant,variant" disables more variants everywhere (for vendors bisecting a
 * miscompile before a table entry exists). */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnpu/device.h"

typedef struct quirk {
    const char *vendor, *device, *driver, *variant, *reason;
} quirk;

static const quirk table[] = {
    /* Separate K streams per work-item help CPUs (more line fills in flight) but split a GPU
     * warp's accesses across stretches of memory; measured on PoCL only, so GPUs keep the
     * interleaved loop until a GPU measurement says otherwise. */
    {"*NVIDIA*", "*", "*", "gemm.ksplit", "performance: scattered K streams defeat coalescing on GPUs (not measured)"},
    {"*Advanced Micro Devices*", "*", "*", "gemm.ksplit", "performance: scattered K streams defeat coalescing on GPUs (not measured)"},
};

static bool env_disables(const char *variant)
{
    const char *env = getenv("CLNPU_QUIRKS");
    if (!env) return false;
    size_t n = strlen(variant);
    for (const char *p = env; (p = strstr(p, variant)) != NULL; p += n) {
        bool start = p == env || p[-1] == ',';
        bool end = p[n] == '\0' || p[n] == ',';
        if (start && end) return true;
    }
    return false;
}

bool clnpu_quirk_disabled(const clnpu_device_info *info, const char *variant, const char **out_reason)
{
    if (env_disables(variant)) {
        if (out_reason) *out_reason = "disabled by CLNPU_QUIRKS";
        return true;
    }
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const quirk *q = &table[i];
        if (strcmp(q->variant, variant)) continue;
        if (fnmatch(q->vendor, info->vendor, FNM_CASEFOLD) || fnmatch(q->device, info->name, FNM_CASEFOLD) ||
            fnmatch(q->driver, info->driver_version, FNM_CASEFOLD))
            continue;
        if (out_reason) *out_reason = q->reason;
        return true;
    }
    return false;
}

size_t clnpu_quirks_applied(const clnpu_device_info *info, const char **out_variants, const char **out_reasons,
                            size_t cap)
{
    static const char *const variants[] = {"gemm.ksplit"};
    size_t n = 0;
    for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
        const char *why;
        if (clnpu_quirk_disabled(info, variants[i], &why) && n < cap) {
            out_variants[n] = variants[i];
            out_reasons[n++] = why;
        }
    }
    return n;
}
