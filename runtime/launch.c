/* Kernel launches shared by the runtime's operators. */
#include <stdio.h>

#include "../common/error.h"
#include "clnpu/capability.h"
#include "launch.h"

cl_mem clnpu_mem(const clnpu_buffer *b)
{
    return b ? (cl_mem)clnpu_buffer_cl_mem(b) : NULL;
}

clnpu_status clnpu_launch(clnpu_device *dev, const char *source, const char *options,
                          const char *kernel, cl_uint dims, const size_t *global,
                          const size_t *local, const clnpu_karg *args, size_t nargs)
{
    const char *only[] = {kernel, NULL}; /* the file's other kernels are not compiled */
    return clnpu_launch_group(dev, source, options, only, kernel, dims, global, local, args, nargs);
}

const char *const clnpu_group_moe[] = {"clnpu_moe_plan", "clnpu_moe_gather", "clnpu_moe_combine", NULL};
const char *const clnpu_group_forward[] = {"clnpu_add_f32", "clnpu_nonfinite_tag", "clnpu_mla_assemble_k", NULL};
const char *const clnpu_group_cache[] = {"clnpu_kv_append", "clnpu_kv_gather", NULL};

clnpu_status clnpu_launch_group(clnpu_device *dev, const char *source, const char *options,
                                const char *const *group, const char *kernel, cl_uint dims,
                                const size_t *global, const size_t *local, const clnpu_karg *args,
                                size_t nargs)
{
    clnpu_program *prog;
    clnpu_status st = clnpu_program_get_kernels(dev, source, options, group, &prog);
    if (st) return st;
    if (clnpu_device_recording(dev)) return CLNPU_OK; /* a dry pass only lists programs */
    cl_kernel k;
    st = clnpu_program_kernel(prog, kernel, (void **)&k);
    if (st) return st;
    for (size_t i = 0; i < nargs; i++) {
        cl_int err = clSetKernelArg(k, (cl_uint)i, args[i].size, args[i].value);
        if (err) {
            char what[128];
            snprintf(what, sizeof what, "setting argument %zu of %s", i, kernel);
            return clnpu_fail_cl(err, "clSetKernelArg", what);
        }
    }
    /* No local size: the cpu family runs work-groups of 1 (PoCL's fastest for one-row kernels);
     * the wg family leaves the choice to the driver, which fills a GPU's lanes. */
    const bool driver_local = !local && clnpu_device_capability(dev)->family == CLNPU_KERNEL_FAMILY_WG;
    size_t g[3] = {1, 1, 1}, l[3] = {1, 1, 1};
    for (cl_uint d = 0; d < dims; d++) {
        l[d] = local ? local[d] : 1;
        g[d] = (global[d] + l[d] - 1) / l[d] * l[d];
        if (g[d] == 0) return CLNPU_OK; /* nothing to do */
    }
    return clnpu_enqueue(dev, k, dims, g, driver_local ? NULL : l, kernel);
}

size_t clnpu_lanes(const clnpu_device *dev)
{
    if (clnpu_device_capability(dev)->family != CLNPU_KERNEL_FAMILY_WG) return 1;
    size_t cap = clnpu_device_get_info(dev)->max_work_group_size;
    return cap < 1 ? 1 : cap < 256 ? cap : 256;
}

const char *clnpu_lanes_options(const clnpu_device *dev, const char *extra, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s-DCLNPU_LANES=%zu", extra ? extra : "", extra && *extra ? " " : "", clnpu_lanes(dev));
    return out;
}

void clnpu_stretches(const clnpu_device *dev, size_t n, size_t *lanes, size_t *chunk, size_t *groups)
{
    *lanes = clnpu_lanes(dev);
    if (*lanes > 1) *chunk = *lanes * 16;
    else { /* about four stretches per compute unit, none under 4096 elements */
        const size_t cu = clnpu_device_get_info(dev)->compute_units, parts = 4 * (cu ? cu : 1),
                     per = (n + parts - 1) / parts;
        *chunk = per > 4096 ? per : 4096;
    }
    *groups = n ? (n + *chunk - 1) / *chunk : 0;
}

clnpu_status clnpu_enqueue(clnpu_device *dev, cl_kernel k, cl_uint dims, const size_t *global, const size_t *local,
                           const char *trace_name)
{
    if (clnpu_device_recording(dev)) return CLNPU_OK;
    cl_event ev = NULL;
    const bool trace = clnpu_device_tracing(dev);
    cl_int err = clEnqueueNDRangeKernel(clnpu_device_cl_queue(dev), k, dims, NULL, global, local, 0, NULL,
                                        trace ? &ev : NULL);
    if (!err && trace) clnpu_device_trace_record(dev, trace_name, ev);
    if (err) {
        char what[128];
        snprintf(what, sizeof what, "launching %s", trace_name);
        return clnpu_fail_cl(err, "clEnqueueNDRangeKernel", what);
    }
    return CLNPU_OK;
}
