/* The clnpu command line: help, version, listing, and usage errors with exit code 2. */
#include <stdio.h>
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

Suite *suite_cli(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_help_and_version);
    tcase_add_test(tc, test_usage_errors);
    tcase_add_test(tc, test_devices_listing);
    tcase_add_test(tc, test_bench_gemm);
    suite_add_tcase(s, tc);
    return s;
}
