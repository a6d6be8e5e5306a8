/* Internal: launch an embedded kernel with a list of arguments. */
#ifndef CLNPU_LAUNCH_H
#define CLNPU_LAUNCH_H
#include <CL/cl.h>

#include "clnpu/device.h"
#include "clnpu/program.h"

typedef struct clnpu_karg {
    size_t size;
    const void *value;
} clnpu_karg;

#define KARG(v) ((clnpu_karg){sizeof(v), &(v)})

/* Build (or reuse) `source` with `options`, set the arguments and enqueue `kernel`. Global sizes
 * are rounded up to multiples of local ones (NULL local: 1 in every dimension for the cpu family,
 * the driver's choice for the wg family). */
clnpu_status clnpu_launch(clnpu_device *dev, const char *source, const char *options,
                          const char *kernel, cl_uint dims, const size_t *global,
                          const size_t *local, const clnpu_karg *args, size_t nargs);

/* Enqueue kernel k with its arguments set (global sizes already multiples of local ones); with
 * tracing on, its span is recorded under trace_name. */
clnpu_status clnpu_enqueue(clnpu_device *dev, cl_kernel k, cl_uint dims, const size_t *global, const size_t *local,
                           const char *trace_name);

/* A work-group size for a kernel with one work-item per element of an n-wide row (copies,
 * gathers): the largest divisor of n up to 1024 and the device's limit, so one group covers a row
 * where it can. On PoCL each work-group costs ~0.1-0.2 us of scheduling besides its work: groups of
 * 1 or 64 four-byte copies ran a prefill's MoE gather and per-head K assembly at ~1 GB/s. */
size_t clnpu_row_wg(const clnpu_device *dev, size_t n);

/* cl_mem of a buffer, or NULL. */
cl_mem clnpu_mem(const clnpu_buffer *b);
#endif
