/* Internal: overflow-checked size arithmetic for buffer sizes computed from file or flag values. */
#ifndef CLNPU_CHECKED_H
#define CLNPU_CHECKED_H
#include <stdbool.h>
#include <stddef.h>

/* *out = a * b (a * b * c); false, and *out = SIZE_MAX, when it does not fit in size_t. */
static inline bool clnpu_size_mul(size_t a, size_t b, size_t *out)
{
    if (__builtin_mul_overflow(a, b, out)) {
        *out = (size_t)-1;
        return false;
    }
    return true;
}

static inline bool clnpu_size_mul3(size_t a, size_t b, size_t c, size_t *out)
{
    return clnpu_size_mul(a, b, out) && clnpu_size_mul(*out, c, out);
}
#endif
