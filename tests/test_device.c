/* Device layer: enumeration, capability query, buffers, launches, several devices, emulation. */
#include <CL/cl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

START_TEST(test_capabilities)
{
    clnpu_device_info *infos;
    size_t n;
    ck_assert_ok(clnpu_device_list(&infos, &n));
    ck_assert_uint_ge(n, 1);
    for (size_t i = 0; i < n; i++) {
        const clnpu_device_info *d = &infos[i];
        ck_assert_uint_eq(d->index, i);
        ck_assert_msg(strlen(d->name) > 0, "device %zu has no name", i);
        ck_assert(strlen(d->vendor) > 0 && strlen(d->driver_version) > 0);
        ck_assert_msg(!strncmp(d->opencl_c_version, "OpenCL C ", 9), "bad OpenCL C version '%s'",
                      d->opencl_c_version);
        ck_assert_uint_ge(d->compute_units, 1);
        ck_assert_uint_gt(d->global_mem_bytes, 1u << 20);
        ck_assert_uint_ge(d->local_mem_bytes, 16384); /* OpenCL's minimum for full profile */
        ck_assert_uint_ge(d->max_alloc_bytes, d->global_mem_bytes / 4 < (128u << 20)
                                                  ? d->global_mem_bytes / 4 : (128u << 20));
        ck_assert_uint_ge(d->max_work_group_size, 1);
        ck_assert_uint_ge(d->pref_vector_width_float, 1);
        ck_assert_int_eq(d->fp16, clnpu_device_info_has_extension(d, "cl_khr_fp16"));
    }
    /* PoCL's CPU device, as CI has it: a CPU with fp64 and no fp16. */
    if (strstr(infos[0].platform_name, "Portable Computing Language")) {
        ck_assert_int_eq(infos[0].type, CLNPU_DEVICE_TYPE_CPU);
        ck_assert(infos[0].fp64);
        ck_assert(infos[0].local_mem_is_global);
    }
    ck_assert(!clnpu_device_info_has_extension(&infos[0], "cl_khr_fp6"));
    clnpu_device_list_free(infos);
}
END_TEST

START_TEST(test_bad_index)
{
    clnpu_device *dev = NULL;
    ck_assert_int_eq(clnpu_device_open(100000, NULL, &dev), CLNPU_ERR_NOT_FOUND);
    ck_assert_ptr_null(dev);
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "no device 100000"));
    clnpu_device_options o = clnpu_device_options_default();
    o.target = "no-such-target";
    ck_assert_int_eq(clnpu_device_open(0, &o, &dev), CLNPU_ERR_NOT_FOUND);
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "no-such-target"));
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "rebellions-atom"));
}
END_TEST

/* Launch a kernel on a device and compare with the host: y = a*x + b*y. */
static void check_axpby(clnpu_device *dev)
{
    const uint32_t n = 1000 + (uint32_t)(test_rand_u64() % 3000); /* ragged, not a tile multiple */
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *out = malloc(n * sizeof *out);
    for (uint32_t i = 0; i < n; i++) {
        x[i] = test_rand_uniform(-2, 2);
        y[i] = test_rand_uniform(-2, 2);
    }
    clnpu_buffer *bx, *by;
    ck_assert_ok(clnpu_buffer_create(dev, n * sizeof(float), &bx));
    ck_assert_ok(clnpu_buffer_create(dev, n * sizeof(float), &by));
    ck_assert_ok(clnpu_buffer_write(bx, 0, x, n * sizeof(float)));
    ck_assert_ok(clnpu_buffer_write(by, 0, y, n * sizeof(float)));
    clnpu_program *prog;
    ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", NULL, &prog));
    cl_kernel k;
    ck_assert_ok(clnpu_program_create_kernel(prog, "clnpu_axpby_f32", (void **)&k));
    cl_mem mx = clnpu_buffer_cl_mem(bx), my = clnpu_buffer_cl_mem(by);
    float a = 1.5f, b = -0.25f;
    clSetKernelArg(k, 0, sizeof my, &my);
    clSetKernelArg(k, 1, sizeof mx, &mx);
    clSetKernelArg(k, 2, sizeof a, &a);
    clSetKernelArg(k, 3, sizeof b, &b);
    clSetKernelArg(k, 4, sizeof n, &n);
    size_t local = 64, global = (n + local - 1) / local * local;
    cl_event ev;
    ck_assert_int_eq(clEnqueueNDRangeKernel(clnpu_device_cl_queue(dev), k, 1, NULL, &global, &local,
                                            0, NULL, &ev), CL_SUCCESS);
    ck_assert_int_eq(clWaitForEvents(1, &ev), CL_SUCCESS);
    cl_int status;
    clGetEventInfo(ev, CL_EVENT_COMMAND_EXECUTION_STATUS, sizeof status, &status, NULL);
    ck_assert_int_eq(status, CL_COMPLETE);
    clReleaseEvent(ev);
    ck_assert_ok(clnpu_buffer_read(by, 0, out, n * sizeof(float)));
    for (uint32_t i = 0; i < n; i++) {
        double ref = (double)a * x[i] + (double)b * y[i];
        ck_assert_msg(fabs(out[i] - ref) <= 1e-6 * (1 + fabs(ref)), "y[%u] = %g, expected %g", i,
                      out[i], ref);
    }
    clReleaseKernel(k);
    clnpu_buffer_destroy(bx);
    clnpu_buffer_destroy(by);
    free(x);
    free(y);
    free(out);
}

START_TEST(test_launch)
{
    check_axpby(test_device());
}
END_TEST

START_TEST(test_buffer_bounds)
{
    clnpu_device *dev = test_device();
    clnpu_buffer *b;
    ck_assert_ok(clnpu_buffer_create(dev, 256, &b));
    char data[512] = {0};
    ck_assert_int_eq(clnpu_buffer_write(b, 200, data, 100), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(clnpu_buffer_read(b, 0, data, 512), CLNPU_ERR_INVALID_ARGUMENT);
    float pat = 3.0f;
    ck_assert_ok(clnpu_buffer_fill(b, &pat, sizeof pat));
    float back[64];
    ck_assert_ok(clnpu_buffer_read(b, 0, back, sizeof back));
    for (int i = 0; i < 64; i++) ck_assert_float_eq(back[i], 3.0f);
    /* 2-D writes: 3 rows of 5 floats into a pitch of 16 floats at float 2, the rest untouched */
    const float src[3][7] = {{1, 2, 3, 4, 5, -1, -1}, {6, 7, 8, 9, 10, -1, -1}, {11, 12, 13, 14, 15, -1, -1}};
    ck_assert_ok(clnpu_buffer_write_2d(b, 2 * sizeof(float), 16 * sizeof(float), src, 7 * sizeof(float), 5 * sizeof(float), 3));
    ck_assert_ok(clnpu_buffer_read(b, 0, back, sizeof back));
    for (int i = 0; i < 64; i++) {
        const int r = i / 16, c = i % 16 - 2;
        ck_assert_float_eq(back[i], r < 3 && c >= 0 && c < 5 ? src[r][c] : 3.0f);
    }
    ck_assert_int_eq(clnpu_buffer_write_2d(b, 0, 64 * sizeof(float), src, 7 * sizeof(float), 5 * sizeof(float), 3),
                     CLNPU_ERR_INVALID_ARGUMENT); /* past the end */
    ck_assert_int_eq(clnpu_buffer_write_2d(b, 0, 4 * sizeof(float), src, 7 * sizeof(float), 5 * sizeof(float), 3),
                     CLNPU_ERR_INVALID_ARGUMENT); /* rows wider than the pitch */
    clnpu_buffer_destroy(b);
    clnpu_buffer *z = NULL;
    ck_assert_int_eq(clnpu_buffer_create(dev, 0, &z), CLNPU_ERR_INVALID_ARGUMENT);
    /* Sub-buffers: aligned views written through, their bytes counted once, bad views refused. */
    const size_t al = clnpu_buffer_sub_align(dev), used = clnpu_device_memory_used(dev);
    clnpu_buffer *parent, *v1, *bad = NULL;
    ck_assert_ok(clnpu_buffer_create(dev, 4 * al, &parent));
    ck_assert_ok(clnpu_buffer_create_sub(parent, al, 2 * al, &v1));
    ck_assert_uint_eq(clnpu_device_memory_used(dev), used + 4 * al);
    float zero = 0.0f, one = 1.0f;
    ck_assert_ok(clnpu_buffer_fill(parent, &zero, sizeof zero));
    ck_assert_ok(clnpu_buffer_write_async(v1, 0, &one, sizeof one));
    float first = -1;
    ck_assert_ok(clnpu_buffer_read(parent, al, &first, sizeof first)); /* in order after the write */
    ck_assert_float_eq(first, 1.0f);
    if (al > 1) ck_assert_int_eq(clnpu_buffer_create_sub(parent, al / 2, al, &bad), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(clnpu_buffer_create_sub(parent, 2 * al, 3 * al, &bad), CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_ptr_null(bad);
    clnpu_buffer_destroy(v1);
    clnpu_buffer_destroy(parent);
    ck_assert_uint_eq(clnpu_device_memory_used(dev), used);
}
END_TEST

/* Several devices at once (POCL_DEVICES="pthread pthread" gives two). */
START_TEST(test_two_devices)
{
    clnpu_device_info *infos;
    size_t n;
    ck_assert_ok(clnpu_device_list(&infos, &n));
    clnpu_device_list_free(infos);
    if (n < 2) {
        fprintf(stderr, "test_two_devices: only one device, skipped\n");
        return;
    }
    clnpu_device *d1;
    ck_assert_ok(clnpu_device_open(1, NULL, &d1));
    ck_assert_uint_eq(clnpu_device_get_info(d1)->index, 1);
    ck_assert_ptr_ne(clnpu_device_cl_device(d1), clnpu_device_cl_device(test_device()));
    check_axpby(d1);
    check_axpby(test_device());
    clnpu_device_close(d1);
}
END_TEST

/* Binding an NPU profile to the PoCL device: allocations past its capacity fail clearly. */
START_TEST(test_emulated_memory_limit)
{
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/tiny-npu.yaml", dir);
    ck_assert_int_eq(test_write_file(path,
        "name: tiny-npu\nclass: npu-pcie\nvendor: test\n"
        "compute: {fp32: 1.0e12, bf16: 4.0e12}\n"
        "memory: {bytes: 1048576, bandwidth: 1.0e11}\n"
        "sram_bytes: 65536\n"
        "kernel: {tile_m: 4, tile_n: 8, local_mem_bytes: 32768}\n"), 0);
    clnpu_profile_set *set;
    ck_assert_ok(clnpu_profile_set_builtin(&set));
    ck_assert_ok(clnpu_profile_set_add_file(set, path));
    clnpu_device_options o = clnpu_device_options_default();
    o.profiles = set;
    o.target = "tiny-npu";
    o.no_cache = true;
    clnpu_device *dev;
    ck_assert_ok(clnpu_device_open(0, &o, &dev));
    ck_assert(clnpu_device_is_emulated(dev));
    ck_assert_uint_eq(clnpu_device_memory_capacity(dev), 1048576);
    ck_assert_uint_eq(clnpu_device_local_mem_budget(dev), 32768);
    clnpu_buffer *a, *b, *c = NULL;
    ck_assert_ok(clnpu_buffer_create(dev, 600000, &a));
    ck_assert_ok(clnpu_buffer_create(dev, 400000, &b));
    ck_assert_int_eq(clnpu_buffer_create(dev, 100000, &c), CLNPU_ERR_OUT_OF_MEMORY);
    ck_assert_ptr_null(c);
    const char *msg = clnpu_error_message();
    ck_assert_msg(strstr(msg, "tiny-npu") && strstr(msg, "emulated") && strstr(msg, "over capacity"),
                  "unclear message: %s", msg);
    ck_assert_uint_eq(clnpu_device_memory_used(dev), 1000000);
    clnpu_buffer_destroy(a);
    ck_assert_ok(clnpu_buffer_create(dev, 100000, &c)); /* freed memory is usable again */
    /* The budget reaches kernels as a define. */
    clnpu_program *p;
    ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", NULL, &p));
    ck_assert_ptr_nonnull(strstr(clnpu_program_options(p), "-DCLNPU_LOCAL_MEM_BYTES=32768"));
    ck_assert_ptr_nonnull(strstr(clnpu_program_options(p), "-DCLNPU_TILE_M=4"));
    clnpu_buffer_destroy(b);
    clnpu_buffer_destroy(c);
    clnpu_device_close(dev);
    clnpu_profile_set_destroy(set);
    test_rmdir(dir);
}
END_TEST

START_TEST(test_builtin_npu_emulation)
{
    clnpu_device_options o = clnpu_device_options_default();
    o.target = "rebellions-atom";
    o.no_cache = true;
    clnpu_device *dev;
    ck_assert_ok(clnpu_device_open(0, &o, &dev));
    ck_assert(clnpu_device_is_emulated(dev));
    ck_assert_str_eq(clnpu_device_get_profile(dev)->name, "rebellions-atom");
    uint64_t devmem = clnpu_device_get_info(dev)->global_mem_bytes;
    uint64_t expect = devmem < 16877879296ULL ? devmem : 16877879296ULL;
    ck_assert_uint_eq(clnpu_device_memory_capacity(dev), expect);
    clnpu_device_close(dev);
}
END_TEST

Suite *suite_device(void)
{
    Suite *s = suite_create("device");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_capabilities);
    tcase_add_test(tc, test_bad_index);
    tcase_add_test(tc, test_launch);
    tcase_add_test(tc, test_buffer_bounds);
    tcase_add_test(tc, test_two_devices);
    tcase_add_test(tc, test_emulated_memory_limit);
    tcase_add_test(tc, test_builtin_npu_emulation);
    suite_add_tcase(s, tc);
    return s;
}
