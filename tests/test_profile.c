/* Target profiles: the shipped set, malformed files (error with file and line), matching. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static const char *const shipped[] = {
    "pocl-cpu", "nvidia-h200", "rebellions-atom", "rebellions-atom-max", "rebellions-rebel-quad",
    "furiosa-rngd", "amd-mi300x", "intel-gaudi3", "qualcomm-adreno", "generic"};

START_TEST(test_builtin_profiles)
{
    clnpu_profile_set *set;
    ck_assert_ok(clnpu_profile_set_builtin(&set));
    ck_assert_uint_ge(clnpu_profile_set_count(set), 10);
    for (size_t i = 0; i < sizeof shipped / sizeof shipped[0]; i++) {
        const clnpu_profile *p = clnpu_profile_set_find(set, shipped[i]);
        ck_assert_msg(p != NULL, "profile %s not shipped", shipped[i]);
        ck_assert(p->memory_bytes > 0 && p->memory_bandwidth > 0);
        ck_assert_msg(strlen(p->estimated) > 0, "%s does not mark its estimates", p->name);
    }
    const clnpu_profile *atom = clnpu_profile_set_find(set, "rebellions-atom");
    ck_assert_int_eq(atom->memory_bytes, 16877879296LL);
    ck_assert(atom->peak[CLNPU_PEAK_INT8] == 1.28e14);
    ck_assert(atom->peak[CLNPU_PEAK_FP8] == 0); /* null: no native fp8 */
    ck_assert(atom->link.bandwidth == 6.3e10 && atom->link.latency_s == 5e-6);
    const clnpu_profile *h200 = clnpu_profile_set_find(set, "nvidia-h200");
    ck_assert(h200->memory_bandwidth == 4.8e12);
    ck_assert_int_eq(h200->kernel.local_mem_bytes, 49152);
    ck_assert_ptr_null(clnpu_profile_set_find(set, "nope"));
    clnpu_profile_set_destroy(set);
}
END_TEST

static const char valid[] =
    "name: t\nclass: c\nvendor: v\ncompute: {fp32: 1.0e12}\nmemory: {bytes: 1024, bandwidth: 1e9}\n";

/* Each malformed profile must fail with CLNPU_ERR_PARSE and a message naming file:line and
 * the problem. */
static const struct {
    const char *yaml, *line, *needle;
} bad[] = {
    {"name: t\nclass: c\nvendor: v\ncompute: {fp32: 1}\n", ":1:", "'memory'"},
    {"class: c\nvendor: v\ncompute: {fp32: 1}\nmemory: {bytes: 1, bandwidth: 1}\n", ":1:", "'name'"},
    {"name: t\nclass: c\nvendor: v\ncompute: {fp32: fast}\nmemory: {bytes: 1, bandwidth: 1}\n", ":4:", "number"},
    {"name: t\nclass: c\nvendor: v\ncompute: {fp32: 1}\nmemory: {bytes: 1.5, bandwidth: 1}\n", ":5:", "whole number"},
    {"name: t\nclass: c\nvendor: v\ncompute: {fp32: 1}\nmemory: {bytes: 1, bandwidth: 1}\nflops: 3\n", ":6:", "unknown key 'flops'"},
    {"name: t\nclass: c\nvendor: v\ncompute: {fp32: 1, fp64: 2}\nmemory: {bytes: 1, bandwidth: 1}\n", ":4:", "compute.fp64"},
    {"name: t\nclass: c\nvendor: v\ncompute: {fp32: 1}\nmemory: {bytes: 1, bandwidth: 1}\nkernel: {tile_q: 4}\n", ":6:", "kernel.tile_q"},
    {"name: t\nclass: c\nvendor: v\ncompute: [1, 2]\nmemory: {bytes: 1, bandwidth: 1}\n", ":4:", "mapping"},
    {"name: [a, b]\nclass: c\nvendor: v\ncompute: {fp32: 1}\nmemory: {bytes: 1, bandwidth: 1}\n", ":1:", "string"},
    {"name: t\nclass: c\nvendor: v\ncompute: {fp32: 1\nmemory: {bytes: 1, bandwidth: 1}\n", ":", "bad YAML"},
    {"name: t\n  class: c\n", ":", "bad YAML"},
    {"name: t\nclass: c\nvendor: v\ncompute: {fp32: -5}\nmemory: {bytes: 1, bandwidth: 1}\n", ":4:", "negative"},
    {"name: t\nclass: c\nvendor: v\nmatch: {type: [fpga]}\ncompute: {fp32: 1}\nmemory: {bytes: 1, bandwidth: 1}\n", ":4:", "fpga"},
    {"name: t\nname: u\nclass: c\nvendor: v\ncompute: {fp32: 1}\nmemory: {bytes: 1, bandwidth: 1}\n", ":2:", "duplicate"},
    {"", ":1:", "empty"},
    {"- a\n- b\n", ":1:", "mapping"},
};

START_TEST(test_malformed_profiles)
{
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/p.yaml", dir);
    clnpu_profile p;
    ck_assert_int_eq(test_write_file(path, valid), 0);
    ck_assert_ok(clnpu_profile_load_file(path, &p));
    ck_assert_str_eq(p.name, "t");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(test_write_file(path, bad[i].yaml), 0);
        clnpu_status st = clnpu_profile_load_file(path, &p);
        const char *msg = clnpu_error_message();
        ck_assert_msg(st == CLNPU_ERR_PARSE, "case %zu accepted", i);
        ck_assert_msg(strstr(msg, path) != NULL, "case %zu: message lacks the file: %s", i, msg);
        ck_assert_msg(strstr(msg, bad[i].line) != NULL, "case %zu: message lacks line %s: %s", i,
                      bad[i].line, msg);
        ck_assert_msg(strstr(msg, bad[i].needle) != NULL, "case %zu: message lacks '%s': %s", i,
                      bad[i].needle, msg);
    }
    snprintf(path, sizeof path, "%s/missing.yaml", dir);
    ck_assert_int_eq(clnpu_profile_load_file(path, &p), CLNPU_ERR_IO);
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "missing.yaml"));
    test_rmdir(dir);
}
END_TEST

/* memory.program_bytes: parsed (whole, >= 0), reserved on a device bound to the profile (the
 * buffers get the rest of its capacity), and counted by the planner on every device. */
START_TEST(test_program_bytes)
{
    char dir[256], path[512], cpath[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/pocl-programs.yaml", dir);
    const char *prof = "name: %s\nclass: cpu-opencl\nvendor: pocl\n"
                       "compute: {fp32: 2.0e11, fp16: null, bf16: 2.0e11, fp8: null, int8: 2.0e11, int4: null}\n"
                       "memory: {type: DDR4, bytes: 8.0e6, bandwidth: 3.1e10%s}\ncompute_units: 2\n";
    char text[1024];
    snprintf(text, sizeof text, prof, "pocl-programs", ", program_bytes: -1");
    ck_assert_int_eq(test_write_file(path, text), 0);
    clnpu_profile p;
    ck_assert_int_eq(clnpu_profile_load_file(path, &p), CLNPU_ERR_PARSE);
    ck_assert_msg(strstr(clnpu_error_message(), "memory.program_bytes"), "%s", clnpu_error_message());
    snprintf(text, sizeof text, prof, "pocl-programs", ", program_bytes: 1048576");
    ck_assert_int_eq(test_write_file(path, text), 0);
    clnpu_profile_set *set;
    ck_assert_ok(clnpu_profile_set_builtin(&set));
    ck_assert_ok(clnpu_profile_set_add_file(set, path));
    snprintf(path, sizeof path, "%s/pocl-plain.yaml", dir);
    snprintf(text, sizeof text, prof, "pocl-plain", "");
    ck_assert_int_eq(test_write_file(path, text), 0);
    ck_assert_ok(clnpu_profile_set_add_file(set, path));
    ck_assert_int_eq(clnpu_profile_set_find(set, "pocl-programs")->program_bytes, 1048576);
    ck_assert_int_eq(clnpu_profile_set_find(set, "pocl-plain")->program_bytes, 0);
    clnpu_device_options o = {.target = "pocl-programs", .profiles = set};
    clnpu_device *d;
    ck_assert_ok(clnpu_device_open(0, &o, &d));
    ck_assert_uint_eq(clnpu_device_memory_used(d), 1048576);
    clnpu_buffer *b;
    ck_assert_int_eq(clnpu_buffer_create(d, 7000000, &b), CLNPU_ERR_OUT_OF_MEMORY); /* 8e6 less the programs */
    ck_assert_ok(clnpu_buffer_create(d, 6000000, &b));
    clnpu_buffer_destroy(b);
    ck_assert_uint_eq(clnpu_device_memory_used(d), 1048576);
    clnpu_device_close(d);
    /* the planner: the same one-device plan on either profile, 1 MiB apart on the device */
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(CLNPU_SOURCE_DIR "/models/tiny-axk1/config.json", &cfg));
    double mem[2][6];
    for (int k = 0; k < 2; k++) {
        snprintf(cpath, sizeof cpath, "%s/c.yaml", dir);
        snprintf(text, sizeof text, "name: one\nnodes:\n  - name: host\n    devices:\n      - {profile: %s, count: 1}\n"
                 "links:\n  intra_node: {type: shared-memory, bandwidth: 1.0e10, latency_s: 3.0e-5}\n",
                 k ? "pocl-programs" : "pocl-plain");
        ck_assert_int_eq(test_write_file(cpath, text), 0);
        clnpu_cluster *cl;
        ck_assert_msg(clnpu_cluster_load(cpath, set, &cl) == CLNPU_OK, "%s", clnpu_error_message());
        clnpu_workload w = clnpu_workload_default();
        w.context = 64, w.batch = 2;
        clnpu_plan *pl;
        ck_assert_msg(clnpu_plan_create(&cfg, cl, &w, NULL, &pl) == CLNPU_OK, "%s", clnpu_error_message());
        clnpu_plan_device_memory(pl, 0, mem[k]);
        clnpu_plan_destroy(pl);
        clnpu_cluster_destroy(cl);
    }
    ck_assert_msg(mem[1][2] - mem[0][2] == 1048576 && mem[1][0] == mem[0][0] && mem[1][1] == mem[0][1],
                  "activations %.0f vs %.0f", mem[1][2], mem[0][2]);
    clnpu_profile_set_destroy(set);
    test_rmdir(dir);
}
END_TEST

static clnpu_device_info fake(const char *vendor, const char *platform, const char *name,
                              clnpu_device_type type)
{
    clnpu_device_info d;
    memset(&d, 0, sizeof d);
    snprintf(d.vendor, sizeof d.vendor, "%s", vendor);
    snprintf(d.platform_name, sizeof d.platform_name, "%s", platform);
    snprintf(d.name, sizeof d.name, "%s", name);
    d.type = type;
    d.compute_units = 20;
    d.clock_mhz = 1000;
    d.native_vector_width_float = 1;
    d.global_mem_bytes = 8ULL << 30;
    d.local_mem_bytes = 65536;
    return d;
}

START_TEST(test_matching)
{
    clnpu_profile_set *set;
    ck_assert_ok(clnpu_profile_set_builtin(&set));
    clnpu_profile p;
    bool matched;
    struct { clnpu_device_info d; const char *want; bool matched; } cases[] = {
        {fake("NVIDIA Corporation", "NVIDIA CUDA", "NVIDIA H200", CLNPU_DEVICE_TYPE_GPU), "nvidia-h200", true},
        {fake("GenuineIntel", "Portable Computing Language", "pthread-haswell-AMD EPYC", CLNPU_DEVICE_TYPE_CPU), "pocl-cpu", true},
        {fake("QUALCOMM", "QUALCOMM Snapdragon(TM)", "QUALCOMM Adreno(TM) X1-85", CLNPU_DEVICE_TYPE_GPU), "qualcomm-adreno", true},
        {fake("Advanced Micro Devices, Inc.", "AMD Accelerated Parallel Processing", "gfx942:sramecc+:xnack-", CLNPU_DEVICE_TYPE_GPU), "amd-mi300x", true},
        /* NVIDIA but not an H200: nothing matches, generic from capabilities, never refused. */
        {fake("NVIDIA Corporation", "NVIDIA CUDA", "NVIDIA GeForce RTX 4090", CLNPU_DEVICE_TYPE_GPU), "generic", false},
        {fake("Mystery Silicon", "Mystery CL", "MX-1", CLNPU_DEVICE_TYPE_ACCELERATOR), "generic", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_ok(clnpu_profile_match(set, &cases[i].d, &p, &matched));
        ck_assert_msg(!strcmp(p.name, cases[i].want), "%s matched %s, expected %s", cases[i].d.name,
                      p.name, cases[i].want);
        ck_assert_int_eq(matched, cases[i].matched);
    }
    /* Generic takes its figures from the device. */
    ck_assert_ok(clnpu_profile_match(set, &cases[5].d, &p, &matched));
    ck_assert_int_eq(p.memory_bytes, 8LL << 30);
    ck_assert_int_eq(p.kernel.local_mem_bytes, 65536);
    ck_assert(p.peak[CLNPU_PEAK_FP32] == 20 * 1000e6 * 2);
    ck_assert_ptr_nonnull(strstr(p.notes, "MX-1"));
    /* An NPU profile does not match the PoCL CPU device (so binding it is emulation). */
    ck_assert(!clnpu_profile_matches(clnpu_profile_set_find(set, "rebellions-atom"), &cases[1].d));
    ck_assert(!clnpu_profile_matches(clnpu_profile_set_find(set, "generic"), &cases[1].d));
    clnpu_profile_set_destroy(set);
}
END_TEST

START_TEST(test_user_dir_overrides)
{
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/a.yaml", dir);
    ck_assert_int_eq(test_write_file(path,
        "name: pocl-cpu\nclass: cpu\nvendor: me\nmatch: {type: cpu}\ncompute: {fp32: 1}\n"
        "memory: {bytes: 4096, bandwidth: 1}\n"), 0);
    snprintf(path, sizeof path, "%s/b.yaml", dir);
    ck_assert_int_eq(test_write_file(path, valid), 0);
    clnpu_profile_set *set;
    ck_assert_ok(clnpu_profile_set_builtin(&set));
    size_t before = clnpu_profile_set_count(set);
    ck_assert_ok(clnpu_profile_set_add_dir(set, dir));
    ck_assert_uint_eq(clnpu_profile_set_count(set), before + 1);
    ck_assert_str_eq(clnpu_profile_set_find(set, "pocl-cpu")->vendor, "me");
    clnpu_profile_set_destroy(set);
    test_rmdir(dir);
}
END_TEST

Suite *suite_profile(void)
{
    Suite *s = suite_create("profile");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_builtin_profiles);
    tcase_add_test(tc, test_malformed_profiles);
    tcase_add_test(tc, test_matching);
    tcase_add_test(tc, test_user_dir_overrides);
    tcase_add_test(tc, test_program_bytes);
    suite_add_tcase(s, tc);
    return s;
}
