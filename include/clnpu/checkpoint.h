/* Checkpoints: safetensors files (one, or sharded with model.safetensors.index.json), memory-
 * mapped and validated before any tensor is used. From examples/generate.c:
 *
 *     CHECK(clnpu_checkpoint_open(dir, &ck));
 *     int64_t shape[2] = {(int64_t)cfg.vocab_size, (int64_t)cfg.hidden_size};
 *     CHECK(clnpu_checkpoint_require(ck, "lm_head.weight", 2, shape, &t)); // names file and shapes
 *     ... t->data, t->dtype ...
 *     clnpu_checkpoint_close(ck);
 *
 * Validation: header length within the file, offsets inside the data area and not overlapping,
 * byte size = dtype size x product of the shape, known dtypes (BF16, F16, F32, F8_E4M3, I8, I32).
 * Ownership: a clnpu_tensor_info and its data point into the checkpoint's mappings and are valid
 * until clnpu_checkpoint_close. A checkpoint is read-only once open: several threads may read it.
 */
#ifndef CLNPU_CHECKPOINT_H
#define CLNPU_CHECKPOINT_H

#include "clnpu/export.h"

#include <stddef.h>
#include <stdint.h>

#include "clnpu/dtype.h"
#include "clnpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CLNPU_TENSOR_MAX_DIMS 8

typedef struct clnpu_tensor_info {
    const char *name;
    const char *file; /* path of the file holding it */
    clnpu_dtype dtype;
    int ndim;
    int64_t shape[CLNPU_TENSOR_MAX_DIMS];
    const void *data; /* inside the mapped file */
    size_t bytes;
} clnpu_tensor_info;

/* One safetensors file. */
typedef struct clnpu_safetensors clnpu_safetensors;
CLNPU_API clnpu_status clnpu_safetensors_open(const char *path, clnpu_safetensors **out_file);
/* Validate a header (the JSON after the 8-byte length) against a data area of data_size bytes;
 * data may be NULL (only the layout is checked). Used by open and by the fuzzer. */
CLNPU_API clnpu_status clnpu_safetensors_parse(const char *header, size_t header_len, const void *data,
                                     size_t data_size, const char *origin,
                                     clnpu_safetensors **out_file);
CLNPU_API size_t clnpu_safetensors_count(const clnpu_safetensors *file);
CLNPU_API const clnpu_tensor_info *clnpu_safetensors_get(const clnpu_safetensors *file, size_t index);
CLNPU_API const clnpu_tensor_info *clnpu_safetensors_find(const clnpu_safetensors *file, const char *name);
CLNPU_API void clnpu_safetensors_close(clnpu_safetensors *file);

/* A model directory: model.safetensors.index.json + shards, or one model.safetensors. */
typedef struct clnpu_checkpoint clnpu_checkpoint;
CLNPU_API clnpu_status clnpu_checkpoint_open(const char *dir, clnpu_checkpoint **out_checkpoint);
/* Parse an index file's text: the tensor -> shard map (used by open and by the fuzzer). */
CLNPU_API clnpu_status clnpu_checkpoint_parse_index(const char *json, size_t len, const char *origin,
                                          char ***out_names, char ***out_files, size_t *out_count);
CLNPU_API const clnpu_tensor_info *clnpu_checkpoint_find(const clnpu_checkpoint *ck, const char *name);
/* Find a tensor and check its shape (ndim < 0: any); errors name the tensor and the file:
 * "model.layers.1.mlp.experts.7.up_proj.weight: expected [32, 96], file has [96, 32] (...)". */
CLNPU_API clnpu_status clnpu_checkpoint_require(const clnpu_checkpoint *ck, const char *name, int ndim,
                                      const int64_t *shape, const clnpu_tensor_info **out_info);
CLNPU_API size_t clnpu_checkpoint_tensor_count(const clnpu_checkpoint *ck);
CLNPU_API void clnpu_checkpoint_close(clnpu_checkpoint *ck);

/* Write F32 / I32 tensors as one safetensors file (for --dump-logits and tests). */
typedef struct clnpu_tensor_out {
    const char *name;
    clnpu_dtype dtype; /* F32, I32, BF16, ... */
    int ndim;
    int64_t shape[CLNPU_TENSOR_MAX_DIMS];
    const void *data;
} clnpu_tensor_out;
CLNPU_API clnpu_status clnpu_safetensors_write(const char *path, const clnpu_tensor_out *tensors, size_t count);

#ifdef __cplusplus
}
#endif
#endif
