/* Parts of config.json parsing kept in files of their own (quantisation, the newer family members). */
#ifndef CLNPU_MODEL_CONFIG_INTERNAL_H
#define CLNPU_MODEL_CONFIG_INTERNAL_H

#include <cjson/cJSON.h>

#include "clnpu/model.h"

/* quantization_config: absent or null (bf16 / f32 weights), or DeepSeek-V3's published FP8 layout;
 * anything else is refused by name. */
clnpu_status clnpu_model_config_parse_quant(const cJSON *root, const char *origin, clnpu_model_config *m);

/* The newer members: deepseek_v32 (v32) and axk2 add the sparse-attention indexer; A.X K2 its gated
 * norms and output gate; both may list mlp_layer_types. */
clnpu_status clnpu_model_config_parse_family(const cJSON *root, const char *origin, bool axk2, bool v32,
                                             clnpu_model_config *m);

#endif
