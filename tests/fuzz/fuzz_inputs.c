/* libFuzzer target for the other untrusted text inputs: cluster descriptions (YAML), tuning
 * databases (YAML, checked against kernels-cl/tunables.yaml) and token-id lists (clnpu run --ids /
 * --ids-file). The first byte picks the parser; the rest is its input. Every input must end in a
 * result or a clean error (ASan / UBSan, with float-cast-overflow, watch the rest). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "clnpu/plan.h"
#include "clnpu/profile.h"
#include "clnpu/tuning.h"
#include "../../tools/cli_ids.h"

static clnpu_profile_set *profiles;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    return clnpu_profile_set_builtin(&profiles) ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    switch (data[0] % 3) {
    case 0: {
        clnpu_cluster *c = NULL;
        if (clnpu_cluster_parse(text, len, "fuzz-cluster.yaml", profiles, &c) == CLNPU_OK) {
            if (!c->count) __builtin_trap(); /* a parsed cluster has devices */
            clnpu_cluster_destroy(c);
        }
        break;
    }
    case 1: {
        clnpu_tuning_db *db = NULL;
        if (clnpu_tuning_db_create(&db)) break;
        const size_t before = clnpu_tuning_db_count(db);
        if (clnpu_tuning_db_merge_text(db, text, len, "fuzz-tuning.yaml") != CLNPU_OK &&
            clnpu_tuning_db_count(db) != before)
            __builtin_trap(); /* a refused file adds nothing */
        clnpu_tuning_db_destroy(db);
        break;
    }
    default: {
        int *ids = NULL;
        size_t n = 0;
        if (cli_parse_ids(text, len, 1u << 16, &ids, &n) == CLI_IDS_OK) {
            if (!n || n > (1u << 16)) __builtin_trap();
            for (size_t i = 0; i < n; i++)
                if (ids[i] < 0) __builtin_trap();
            free(ids);
        }
        break;
    }
    }
    return 0;
}
