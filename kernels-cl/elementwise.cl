/* Elementwise kernels: fills, copies, scaled adds. The smallest kernels, used by tier-0
 * conformance (launches, events) and as building blocks by the runtime. */
#include "clnpu_common.h"

__kernel void clnpu_fill_f32(__global float *y, const float value, const uint n)
{
    uint i = get_global_id(0);
    if (i < n) y[i] = value;
}

__kernel void clnpu_copy_f32(__global float *y, __global const float *x, const uint n)
{
    uint i = get_global_id(0);
    if (i < n) y[i] = x[i];
}

/* y = a * x + b * y */
__kernel void clnpu_axpby_f32(__global float *y, __global const float *x, const float a,
                              const float b, const uint n)
{
    uint i = get_global_id(0);
    if (i < n) y[i] = fma(a, x[i], b * y[i]);
}

__kernel void clnpu_convert_bf16_f32(__global float *y, __global const ushort *x, const uint n)
{
    uint i = get_global_id(0);
    if (i < n) y[i] = clnpu_bf16_to_f32(x[i]);
}
