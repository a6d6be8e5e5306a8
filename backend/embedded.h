/* Files embedded into the library at build time (kernels, target profiles). */
#ifndef CLNPU_EMBEDDED_H
#define CLNPU_EMBEDDED_H
#include <stddef.h>

typedef struct clnpu_embedded_file {
    const char *name;
    const char *data; /* NUL-terminated */
    size_t size;      /* without the NUL */
    unsigned long long hash; /* FNV-1a of data without kernel-selection guard lines
                              * (tools/embed.py), computed at build time */
} clnpu_embedded_file;

extern const clnpu_embedded_file clnpu_embedded_kernels[];
extern const size_t clnpu_embedded_kernels_count;
extern const clnpu_embedded_file clnpu_embedded_targets[];
extern const size_t clnpu_embedded_targets_count;
extern const clnpu_embedded_file clnpu_embedded_tuning[];
extern const size_t clnpu_embedded_tuning_count;
extern const clnpu_embedded_file clnpu_embedded_tunables[];
extern const size_t clnpu_embedded_tunables_count;

const clnpu_embedded_file *clnpu_embedded_find(const clnpu_embedded_file *set, const char *name);

#endif
