/* An operator and a raw kernel on a device: RMSNorm against a float64 host reference (ops.h), then
 * the embedded elementwise.cl program and one of its kernels launched by hand through OpenCL
 * (program.h). Usage: rmsnorm [DEVICE]; exit 0 when both results hold. */
#include <CL/cl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "clnpu/clnpu.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        clnpu_status st_ = (call);                                                                 \
        if (st_ != CLNPU_OK) {                                                                     \
            fprintf(stderr, "rmsnorm: %s: %s (%s)\n", #call, clnpu_error_message(), clnpu_status_name(st_)); \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    const size_t index = argc > 1 ? strtoul(argv[1], NULL, 10) : 0;
    enum { T = 3, DIM = 77 }; /* ragged */
    const float eps = 1e-6f;
    int rc = 1;
    clnpu_device *dev = NULL;
    clnpu_buffer *buf = NULL, *norm_w = NULL;
    float h[T * DIM], w[DIM], y[T * DIM];
    srand(11);
    for (size_t i = 0; i < T * DIM; i++) h[i] = 4.0f * rand() / RAND_MAX - 2.0f;
    for (size_t i = 0; i < DIM; i++) w[i] = 0.5f + (float)rand() / RAND_MAX;

    CHECK(clnpu_device_open(index, NULL, &dev));
    CHECK(clnpu_buffer_create(dev, sizeof h, &buf));
    CHECK(clnpu_buffer_create(dev, sizeof w, &norm_w));
    CHECK(clnpu_buffer_write(buf, 0, h, sizeof h));
    CHECK(clnpu_buffer_write(norm_w, 0, w, sizeof w));
    clnpu_view x = {buf, 0, DIM};                                        /* rows of DIM floats */
    CHECK(clnpu_rmsnorm(dev, x, (clnpu_view){0}, x, norm_w, T, DIM, eps)); /* in place, queued */
    CHECK(clnpu_buffer_read(buf, 0, y, sizeof y));
    double err = 0, ref2 = 0;
    for (size_t t = 0; t < T; t++) {
        double ms = 0;
        for (size_t i = 0; i < DIM; i++) ms += (double)h[t * DIM + i] * h[t * DIM + i];
        const double r = 1.0 / sqrt(ms / DIM + eps);
        for (size_t i = 0; i < DIM; i++) {
            const double ref = w[i] * h[t * DIM + i] * r;
            err += (y[t * DIM + i] - ref) * (y[t * DIM + i] - ref), ref2 += ref * ref;
        }
    }
    const double rel = sqrt(err / ref2);
    printf("rmsnorm: %zu x %d rows, relative error %.2e\n", (size_t)T, DIM, rel);
    if (!(rel <= 1e-6)) goto done;

    /* A kernel by hand: the program is the device's (built once, cached on disk), the kernel
     * object the caller's. clnpu_fill_f32(y, value, n) sets the first n floats of y. */
    clnpu_program *prog;
    CHECK(clnpu_program_get(dev, "elementwise.cl", NULL, &prog)); /* cached per device */
    void *k;
    CHECK(clnpu_program_create_kernel(prog, "clnpu_fill_f32", &k));
    cl_mem mem = clnpu_buffer_cl_mem(buf);
    const float value = 0.25f;
    const cl_uint n = T * DIM;
    size_t global = n;
    cl_int err_cl = clSetKernelArg(k, 0, sizeof mem, &mem);
    err_cl |= clSetKernelArg(k, 1, sizeof value, &value);
    err_cl |= clSetKernelArg(k, 2, sizeof n, &n);
    if (!err_cl) err_cl = clEnqueueNDRangeKernel(clnpu_device_cl_queue(dev), k, 1, NULL, &global, NULL, 0, NULL, NULL);
    clReleaseKernel(k);
    if (err_cl) {
        fprintf(stderr, "rmsnorm: launching clnpu_fill_f32 failed (OpenCL error %d)\n", err_cl);
        goto done;
    }
    CHECK(clnpu_buffer_read(buf, 0, y, sizeof y)); /* same in-order queue: after the kernel */
    size_t bad = 0;
    for (size_t i = 0; i < T * DIM; i++) bad += y[i] != value;
    printf("clnpu_fill_f32 from %s: %zu of %u values wrong\n",
           clnpu_program_get_origin(prog) == CLNPU_PROGRAM_BUILT ? "the compiler" : "a cache", bad, n);
    rc = bad ? 1 : 0;
done:
    clnpu_buffer_destroy(buf), clnpu_buffer_destroy(norm_w);
    clnpu_device_close(dev); /* its programs with it */
    return rc;
}
