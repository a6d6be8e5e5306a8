/* Internal layout of a parsed safetensors file. */
#ifndef CLNPU_SAFETENSORS_INTERNAL_H
#define CLNPU_SAFETENSORS_INTERNAL_H
#include <stdbool.h>

#include "clnpu/checkpoint.h"

struct clnpu_safetensors {
    char *path;
    clnpu_tensor_info *items; /* sorted by name */
    size_t count;
    void *map;
    size_t map_size;
};

const char *clnpu_safetensors_dtype_name(clnpu_dtype t);
#endif
