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
    clnpu_program *prog;
    const char *only[] = {kernel, NULL}; /* the file's other kernels are not compiled */
    clnpu_status st = clnpu_program_get_kernels(dev, source, options, only, &prog);
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

size_t clnpu_row_wg(const clnpu_device *dev, size_t n)
{
    size_t cap = clnpu_device_get_info(dev)->max_work_group_size;
    if (cap > 1024) cap = 1024;
    if (!cap || !n) return 1;
    for (size_t l = n < cap ? n : cap; l > 1; l--)
        if (n % l == 0) return l;
    return 1;
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
