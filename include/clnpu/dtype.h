/* Element types of tensors and weights, and host-side conversions (bf16, f16, fp8 e4m3). */
#ifndef CLNPU_DTYPE_H
#define CLNPU_DTYPE_H

#include "clnpu/export.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clnpu_dtype {
    CLNPU_DTYPE_F32 = 0,
    CLNPU_DTYPE_BF16,
    CLNPU_DTYPE_F16,
    CLNPU_DTYPE_I8,
    CLNPU_DTYPE_FP8_E4M3,
    CLNPU_DTYPE_I32,
    CLNPU_DTYPE_COUNT
} clnpu_dtype;

/* Short lower-case name ("bf16", "fp8"); NULL for an invalid value. */
CLNPU_API const char *clnpu_dtype_name(clnpu_dtype dtype);
/* Parse a name as clnpu_dtype_name prints it (also "f8_e4m3", "int8"); -1 if unknown. */
CLNPU_API int clnpu_dtype_parse(const char *name);
CLNPU_API size_t clnpu_dtype_size(clnpu_dtype dtype);

CLNPU_API float clnpu_bf16_to_f32(uint16_t v);
CLNPU_API uint16_t clnpu_f32_to_bf16(float f); /* round to nearest even */
CLNPU_API float clnpu_f16_to_f32(uint16_t v);
CLNPU_API uint16_t clnpu_f32_to_f16(float f);  /* round to nearest even */
CLNPU_API float clnpu_fp8e4m3_to_f32(uint8_t v);
CLNPU_API uint8_t clnpu_f32_to_fp8e4m3(float f); /* round to nearest even, saturating at +-448 */

#ifdef __cplusplus
}
#endif
#endif
