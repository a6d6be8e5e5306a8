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

/* cl_mem of a buffer, or NULL. */
cl_mem clnpu_mem(const clnpu_buffer *b);
#endif
