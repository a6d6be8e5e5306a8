/* config.json's quantization_config: DeepSeek-V3's FP8 checkpoints (e4m3 weights, one f32 scale per
 * 128x128 block), the layout the fp8 GEMM computes on; other schemes are refused by name. */
#include <string.h>

#include "../common/error.h"
#include "clnpu/gemm.h"
#include "model_config_internal.h"

clnpu_status clnpu_model_config_parse_quant(const cJSON *root, const char *origin, clnpu_model_config *m)
{
    const cJSON *qc = cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    m->fp8_checkpoint = false;
    if (!qc || cJSON_IsNull(qc)) return CLNPU_OK;
    if (!cJSON_IsObject(qc)) return clnpu_fail(CLNPU_ERR_PARSE, "%s: \"quantization_config\" must be an object", origin);
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(qc, "quant_method");
    if (!cJSON_IsString(method))
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: quantization_config needs a \"quant_method\" string", origin);
    if (strcmp(method->valuestring, "fp8"))
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: quantization_config.quant_method \"%s\" is not supported (fp8)",
                          origin, method->valuestring);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(qc, "fmt");
    if (fmt && !cJSON_IsNull(fmt) && (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "e4m3")))
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: quantization_config.fmt %s is not supported (e4m3)", origin,
                          cJSON_IsString(fmt) ? fmt->valuestring : "(not a string)");
    /* activations stay f32 here: "dynamic" (per-token activation scales at run time) is what the
     * published checkpoints ask for, and computing them exactly is at least as precise */
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(qc, "activation_scheme");
    if (act && !cJSON_IsNull(act) && (!cJSON_IsString(act) || strcmp(act->valuestring, "dynamic")))
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: quantization_config.activation_scheme %s is not supported (dynamic)",
                          origin, cJSON_IsString(act) ? act->valuestring : "(not a string)");
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(qc, "weight_block_size");
    if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: quantization_config.weight_block_size must be [rows, columns]", origin);
    double b[2];
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetArrayItem(bs, i);
        if (!cJSON_IsNumber(v))
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: quantization_config.weight_block_size must hold numbers", origin);
        b[i] = v->valuedouble;
    }
    /* the GEMM's scale layout is one f32 per 128x128 block (kernels-cl/gemm.cl) */
    if (b[0] != CLNPU_FP8_BLOCK || b[1] != CLNPU_FP8_BLOCK)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: quantization_config.weight_block_size [%g, %g] is not supported "
                          "(only [%d, %d])", origin, b[0], b[1], CLNPU_FP8_BLOCK, CLNPU_FP8_BLOCK);
    m->fp8_checkpoint = true;
    return CLNPU_OK;
}
