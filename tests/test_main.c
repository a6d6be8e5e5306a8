/* The clnpu test runner: every suite in one process so built programs are shared (a cold PoCL
 * build of one kernel source takes 0.2-1.2 s, docs/architecture.md). Run one suite with
 * CK_RUN_SUITE=name, one case with CK_RUN_CASE. */
#include <stdlib.h>

#include "test_util.h"

int main(void)
{
    /* Two PoCL devices, so multi-device code paths are exercised; must be set before the
     * OpenCL ICD loader first loads PoCL. An explicit setting from the caller wins. */
    setenv("POCL_DEVICES", "pthread pthread", 0);
    /* every kernel variant the suite builds must compile without a warning (users get -w) */
    setenv("CLNPU_KERNEL_WERROR", "1", 0);
    test_seed();

    SRunner *sr = srunner_create(suite_device());
    srunner_add_suite(sr, suite_profile());
    srunner_add_suite(sr, suite_program());
    srunner_add_suite(sr, suite_cli());
    srunner_add_suite(sr, suite_gemm());
    srunner_add_suite(sr, suite_ops());
    srunner_add_suite(sr, suite_model());
    srunner_add_suite(sr, suite_checkpoint());
    srunner_add_suite(sr, suite_plan());
    srunner_add_suite(sr, suite_tuning());
    srunner_add_suite(sr, suite_serve());
    srunner_add_suite(sr, suite_examples());
    srunner_add_suite(sr, suite_tokenizer());
    srunner_add_suite(sr, suite_chat_template());
    srunner_add_suite(sr, suite_generate());
    srunner_add_suite(sr, suite_harden());
    srunner_add_suite(sr, suite_family());
    srunner_add_suite(sr, suite_dsa());
    srunner_add_suite(sr, suite_wg());
    srunner_add_suite(sr, suite_wg_dsa());
    /* No fork: OpenCL runtimes are not fork-safe, and sharing one device shares its programs. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    test_device_release();
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
