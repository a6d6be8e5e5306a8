/* libFuzzer target for the parsers that read untrusted files: the safetensors header, the shard
 * index, config.json and target profiles (YAML). The first byte picks the parser; the rest is its input. Every input
 * must end in CLNPU_OK or a clean error (ASan / UBSan watch the rest). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clnpu/checkpoint.h"
#include "clnpu/model.h"
#include "clnpu/profile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    const size_t len = size - 1;
    switch (data[0] % 4) {
    case 0: {
        /* The data area is as long as the input claims in its first two bytes (bounded). */
        size_t area = len >= 2 ? (size_t)(data[1] | data[2] << 8) : 0;
        clnpu_safetensors *f = NULL;
        if (clnpu_safetensors_parse(text, len, NULL, area, "fuzz.safetensors", &f) == CLNPU_OK) {
            for (size_t i = 0; i < clnpu_safetensors_count(f); i++) {
                const clnpu_tensor_info *t = clnpu_safetensors_get(f, i);
                if (clnpu_safetensors_find(f, t->name) != t) __builtin_trap(); /* lookup must agree */
            }
            clnpu_safetensors_close(f);
        }
        break;
    }
    case 1: {
        char **names = NULL, **files = NULL;
        size_t n = 0;
        if (clnpu_checkpoint_parse_index(text, len, "fuzz.index.json", &names, &files, &n) == CLNPU_OK) {
            for (size_t i = 0; i < n; i++) free(names[i]), free(files[i]);
            free(names), free(files);
        }
        break;
    }
    case 3: {
        clnpu_profile p;
        (void)clnpu_profile_parse(text, len, "fuzz.yaml", &p);
        break;
    }
    default: {
        clnpu_model_config cfg;
        if (clnpu_model_config_parse(text, len, "fuzz.config.json", &cfg) == CLNPU_OK) {
            double total, active;
            clnpu_model_config_params(&cfg, &total, &active);
        }
        break;
    }
    }
    return 0;
}
