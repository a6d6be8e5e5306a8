/* The programs in examples/ (the public headers' usage examples, whole, linked against the shared
 * library) build and run: the vendor's GEMM check and the RMSNorm / raw-kernel check pass, and
 * generate, plan and pipeline agree with the CLI and with each other on the tiny checkpoint. */
#include <stdio.h>
#include <string.h>

#include "test_util.h"

#ifndef CLNPU_EXAMPLES_DIR
#error "CLNPU_EXAMPLES_DIR must name the built examples/"
#endif
#define TINY CLNPU_SOURCE_DIR "/models/tiny-axk1"

static int example(const char *name, const char *args, char *out, size_t cap)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s/example-%s' %s", CLNPU_EXAMPLES_DIR, name, args);
    return test_run(cmd, out, cap);
}

/* The first line made only of digits and commas. */
static void ids_line(const char *out, char *ids, size_t cap)
{
    ids[0] = '\0';
    for (const char *l = out; *l;) {
        size_t len = strcspn(l, "\n");
        if (len && strspn(l, "0123456789,") == len && len < cap) {
            memcpy(ids, l, len), ids[len] = '\0';
            return;
        }
        l += len + (l[len] == '\n');
    }
}

START_TEST(test_example_gemm_check)
{
    char out[4096];
    int rc = example("gemm_check", "0", out, sizeof out);
    ck_assert_msg(rc == 0 && strstr(out, ": ok"), "gemm_check (%d): %s", rc, out);
    /* a device that does not exist is an error with a message, not a crash */
    rc = example("gemm_check", "99", out, sizeof out);
    ck_assert_msg(rc == 1 && strstr(out, "clnpu_device_open"), "gemm_check 99 (%d): %s", rc, out);
}
END_TEST

START_TEST(test_example_rmsnorm)
{
    char out[4096];
    int rc = example("rmsnorm", "0", out, sizeof out);
    ck_assert_msg(rc == 0 && strstr(out, "0 of 231 values wrong"), "rmsnorm (%d): %s", rc, out);
}
END_TEST

/* text in, text out: the same reply as clnpu run --prompt --chat --no-think --greedy */
START_TEST(test_example_chat)
{
    char out[8192], cmd[2048], cli[8192];
    int rc = example("chat", TINY " 'Hello, 세계' 6", out, sizeof out);
    ck_assert_msg(rc == 0 && strstr(out, "prompt: ") && strstr(out, "\n["), "chat (%d): %s", rc, out);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --prompt 'Hello, 세계' --chat --no-think --greedy --max-tokens 6 2>/dev/null", CLNPU_CLI_PATH, TINY);
    ck_assert_msg(test_run(cmd, cli, sizeof cli) == 0, "%s", cli);
    const char *reply = strchr(out, '\n') + 1;
    ck_assert_msg(!strncmp(reply, cli, strlen(cli)), "example replied '%s', clnpu run '%s'", reply, cli);
    rc = example("chat", "/nonexistent hi", out, sizeof out);
    ck_assert_msg(rc == 1 && strstr(out, "/nonexistent"), "(%d): %s", rc, out);
}
END_TEST

START_TEST(test_example_devices)
{
    char out[8192];
    int rc = example("devices", "rebellions-atom", out, sizeof out);
    ck_assert_msg(rc == 0 && strstr(out, "device 0:") && strstr(out, "as rebellions-atom: emulated"), "(%d): %s", rc,
                  out);
    rc = example("devices", "no-such-npu", out, sizeof out);
    ck_assert_msg(rc == 1 && strstr(out, "no profile no-such-npu"), "(%d): %s", rc, out);
}
END_TEST

START_TEST(test_example_generate_plan_pipeline)
{
    char out[16384], cmd[2048], mine[256], cli[256], dir[256], args[1024];
    int rc = example("generate", TINY " 4", out, sizeof out);
    ck_assert_msg(rc == 0, "generate (%d): %s", rc, out);
    ids_line(out, mine, sizeof mine);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2,3 -n 4 --greedy", CLNPU_CLI_PATH, TINY);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%s", out);
    ids_line(out, cli, sizeof cli);
    ck_assert_msg(mine[0] && !strcmp(mine, cli), "generate printed '%s', clnpu run '%s'", mine, cli);

    test_mkdtemp(dir, sizeof dir);
    snprintf(args, sizeof args, "'%s/config.json' '%s/clusters/pocl-2.yaml' '%s/plan.yaml'", TINY, CLNPU_SOURCE_DIR, dir);
    rc = example("plan", args, out, sizeof out);
    ck_assert_msg(rc == 0 && strstr(out, "stage"), "plan (%d): %s", rc, out);
    snprintf(args, sizeof args, "'%s' '%s/plan.yaml'", TINY, dir);
    rc = example("pipeline", args, out, sizeof out);
    ck_assert_msg(rc == 0, "pipeline (%d): %s", rc, out);
    char want[64];
    snprintf(want, sizeof want, "next token %.*s\n", (int)strcspn(mine, ","), mine);
    ck_assert_msg(strstr(out, want), "pipeline through the planned stages, want '%s': %s", want, out);
    test_rmdir(dir);
}
END_TEST

Suite *suite_examples(void)
{
    Suite *s = suite_create("examples");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_example_gemm_check);
    tcase_add_test(tc, test_example_rmsnorm);
    tcase_add_test(tc, test_example_devices);
    tcase_add_test(tc, test_example_chat);
    tcase_add_test(tc, test_example_generate_plan_pipeline);
    suite_add_tcase(s, tc);
    return s;
}
