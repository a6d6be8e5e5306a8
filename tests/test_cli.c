/* The clnpu command line: help, version, listing, and usage errors with exit code 2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

#ifndef CLNPU_CLI_PATH
#error "CLNPU_CLI_PATH must name the built clnpu binary"
#endif

static int run(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' %s", CLNPU_CLI_PATH, args);
    return test_run(cmd, out, cap);
}

START_TEST(test_help_and_version)
{
    char out[8192];
    ck_assert_int_eq(run("--help", out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "devices"));
    ck_assert_int_eq(run("--version", out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, clnpu_version()));
    const char *subs[] = {"devices", "kernels", "bench", "bench gemm"};
    for (size_t i = 0; i < 4; i++) {
        char a[64];
        snprintf(a, sizeof a, "%s --help", subs[i]);
        ck_assert_int_eq(run(a, out, sizeof out), 0);
        ck_assert_msg(strstr(out, "usage:") != NULL, "%s --help: %s", subs[i], out);
    }
}
END_TEST

START_TEST(test_usage_errors)
{
    char out[8192];
    const char *bad[] = {"", "frobnicate", "devices --bogus", "devices extra", "kernels --device",
                         "kernels --device x", "kernels --device -1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(run(bad[i], out, sizeof out) == 2, "'clnpu %s' did not exit 2: %s", bad[i], out);
        ck_assert_msg(strstr(out, "usage") != NULL, "'clnpu %s' printed no usage: %s", bad[i], out);
    }
}
END_TEST

START_TEST(test_devices_listing)
{
    char out[16384];
    ck_assert_int_eq(run("devices", out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "[0]"));
    ck_assert_ptr_nonnull(strstr(out, "profile"));
    ck_assert_int_eq(run("devices --yaml --target rebellions-atom", out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "profile: rebellions-atom"));
    ck_assert_ptr_nonnull(strstr(out, "emulated: true"));
    ck_assert_int_eq(run("devices --target nonexistent", out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "nonexistent"));
    ck_assert_int_eq(run("kernels --device 999", out, sizeof out), 1);
    ck_assert_ptr_nonnull(strstr(out, "no device 999"));
}
END_TEST

START_TEST(test_bench_gemm)
{
    char out[8192];
    ck_assert_int_eq(run("bench gemm --dtype bf16,fp8 --shape 3x40x70 --min-time 0.01 --json", out, sizeof out), 0);
    /* One JSON object per line with the documented fields. */
    const char *fields[] = {"\"op\":\"gemm\"", "\"dtype\":\"bf16\"", "\"dtype\":\"fp8\"", "\"m\":3",
                            "\"n\":40", "\"k\":70", "\"ms\":", "\"gflops\":", "\"gbps\":", "\"device\":"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        ck_assert_msg(strstr(out, fields[i]) != NULL, "missing %s in: %s", fields[i], out);
    ck_assert_int_eq(run("bench attention --tokens 9 --heads 2 --min-time 0.01 --json", out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "\"op\":\"attention\""));
    ck_assert_int_eq(run("bench mla --context 70 --heads 3 --min-time 0.01 --json", out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "\"op\":\"mla\""));
    ck_assert_int_eq(run("bench moe --tokens 2 --min-time 0.01 --json", out, sizeof out), 0);
    ck_assert_ptr_nonnull(strstr(out, "\"op\":\"moe\""));
    ck_assert_int_eq(run("bench mla --context 0", out, sizeof out), 2);
    ck_assert_int_eq(run("bench gemm --shape 3x4", out, sizeof out), 2);
    ck_assert_int_eq(run("bench gemm --dtype q4", out, sizeof out), 2);
    ck_assert_int_eq(run("bench nothing", out, sizeof out), 2);
}
END_TEST

/* The vendor kit: conformance tiers 0-3 pass on this device and write a report; probe writes a
 * profile that loads; quirks can be forced from the environment. */
START_TEST(test_vendor_kit)
{
    char dir[256], cmd[1024], out[65536], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' conformance --tier 3 --report '%s/conf.yaml'", CLNPU_SOURCE_DIR,
             CLNPU_CLI_PATH, dir);
    int rc = test_run(cmd, out, sizeof out);
    ck_assert_msg(rc == 0, "conformance failed (%d): %s", rc, out);
    ck_assert_msg(strstr(out, "0 failed, 0 unsupported"), "%.1500s", out);
    snprintf(path, sizeof path, "%s/conf.yaml", dir);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(out, 1, sizeof out - 1, f);
    out[n] = '\0';
    fclose(f);
    ck_assert(strstr(out, "format: clnpu-conformance-1") && strstr(out, "op: model_forward") &&
              strstr(out, "status: pass") && !strstr(out, "status: fail"));
    snprintf(cmd, sizeof cmd, "'%s' conformance --tier 7", CLNPU_CLI_PATH);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 2);

    snprintf(cmd, sizeof cmd, "'%s' probe --quick -o '%s/probe.yaml'", CLNPU_CLI_PATH, dir);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    ck_assert_ptr_nonnull(strstr(out, "GFLOP/s"));
    snprintf(path, sizeof path, "%s/probe.yaml", dir);
    clnpu_profile p;
    ck_assert_ok(clnpu_profile_load_file(path, &p));
    ck_assert(p.peak[CLNPU_PEAK_FP32] > 1e9 && p.memory_bandwidth > 1e8 && p.memory_bytes > 0);
    clnpu_profile_set *set;
    ck_assert_ok(clnpu_profile_set_builtin(&set));
    ck_assert_ok(clnpu_profile_set_add(set, &p));
    clnpu_profile bound;
    bool matched;
    ck_assert_ok(clnpu_profile_match(set, clnpu_device_get_info(test_device()), &bound, &matched));
    ck_assert_msg(!strcmp(bound.name, p.name), "the probed profile %s did not bind (got %s)", p.name, bound.name);
    clnpu_profile_set_destroy(set);

    const char *why = NULL;
    ck_assert(!clnpu_quirk_disabled(clnpu_device_get_info(test_device()), "gemm.ksplit", &why));
    setenv("CLNPU_QUIRKS", "other,gemm.ksplit", 1);
    ck_assert(clnpu_quirk_disabled(clnpu_device_get_info(test_device()), "gemm.ksplit", &why));
    ck_assert_ptr_nonnull(strstr(why, "CLNPU_QUIRKS"));
    unsetenv("CLNPU_QUIRKS");
    clnpu_device_info nv = *clnpu_device_get_info(test_device());
    snprintf(nv.vendor, sizeof nv.vendor, "NVIDIA Corporation");
    ck_assert(clnpu_quirk_disabled(&nv, "gemm.ksplit", &why));
    test_rmdir(dir);
}
END_TEST

Suite *suite_cli(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_help_and_version);
    tcase_add_test(tc, test_usage_errors);
    tcase_add_test(tc, test_devices_listing);
    tcase_add_test(tc, test_bench_gemm);
    tcase_add_test(tc, test_vendor_kit);
    suite_add_tcase(s, tc);
    return s;
}
