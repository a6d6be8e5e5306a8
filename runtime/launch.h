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

/* The same, from a program holding the kernels of `group` (NULL-terminated, `kernel` among
 * them): kernels that a forward always launches together share one build, so the compiler's
 * fixed cost per program (~0.1 s on PoCL: clang parses opencl-c.h and links the kernel library
 * each time) is paid once for them on a first run. Give every launch of a group the same list:
 * the forward's groups are below. */
clnpu_status clnpu_launch_group(clnpu_device *dev, const char *source, const char *options,
                                const char *const *group, const char *kernel, cl_uint dims,
                                const size_t *global, const size_t *local, const clnpu_karg *args,
                                size_t nargs);
extern const char *const clnpu_group_moe[];     /* moe.cl: plan, gather, combine (no options) */
extern const char *const clnpu_group_forward[]; /* elementwise.cl: add, non-finite check, MLA keys */
extern const char *const clnpu_group_cache[];   /* mla.cl: latent cache append and gather */

/* Enqueue kernel k with its arguments set (global sizes already multiples of local ones); with
 * tracing on, its span is recorded under trace_name. */
clnpu_status clnpu_enqueue(clnpu_device *dev, cl_kernel k, cl_uint dims, const size_t *global, const size_t *local,
                           const char *trace_name);

/* Lanes per work-group for the row kernels (copies, gathers, combines: a work-group per row whose
 * lanes stride through it; launch a grid of (lanes, rows) in work-groups of (lanes, 1)) and the
 * stretch kernels below. The cpu family gets 1: one work-item loops over the row (vectorised),
 * PoCL schedules one group per row (each costs ~0.1-0.2 us: groups of one element ran a prefill's
 * MoE gather at ~1 GB/s), and every kernel the cpu family launches has work-groups of 1, the
 * shape its binary is built for. The wg family gets up to 256, a GPU's SIMD width several times
 * over. Their programs take the lanes as a constant (clnpu_lanes_options). */
size_t clnpu_lanes(const clnpu_device *dev);

/* `extra` (may be NULL) and -DCLNPU_LANES=<clnpu_lanes> into out: the options of the row and
 * stretch kernels' programs. Returns out. */
const char *clnpu_lanes_options(const clnpu_device *dev, const char *extra, char *out, size_t cap);

/* The same for a flat [n]: `groups` work-groups of `lanes` work-items, each group over `chunk`
 * consecutive elements (the cpu family: one work-item per chunk, a few chunks per compute unit;
 * the wg family: 256 lanes, 16 elements each). Launch a grid of groups * lanes. */
void clnpu_stretches(const clnpu_device *dev, size_t n, size_t *lanes, size_t *chunk, size_t *groups);

/* cl_mem of a buffer, or NULL. */
cl_mem clnpu_mem(const clnpu_buffer *b);
#endif
