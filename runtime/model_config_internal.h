/* Parts of config.json parsing kept in files of their own (quantisation, the newer family members). */
#ifndef CLNPU_MODEL_CONFIG_INTERNAL_H
#define CLNPU_MODEL_CONFIG_INTERNAL_H

#include <cjson/cJSON.h>

#include "clnpu/model.h"

/* quantization_config: absent or null (bf16 / f32 weights), or DeepSeek-V3's published FP8 layout;
 * anything else is refused by name. */
clnpu_status clnpu_model_config_parse_quant(const cJSON *root, const char *origin, clnpu_model_config *m);

#endif
