/* The GEMM kernel's parameters for one launch, each with where it came from (a tuning entry, the
 * device-derived defaults, the bound profile, or CLNPU_GEMM for experiments). */
#ifndef CLNPU_GEMM_PARAMS_H
#define CLNPU_GEMM_PARAMS_H
#include <stdbool.h>
#include <stddef.h>

#include "clnpu/device.h"
#include "clnpu/dtype.h"
#include "clnpu/gemm.h"
#include "clnpu/tuning.h"

typedef enum clnpu_gemm_param {
    CLNPU_GP_MR,     /* rows per register block */
    CLNPU_GP_NB,     /* output panels per work-item (1, 2) */
    CLNPU_GP_MB,     /* register blocks per work-item (cache blocking along M) */
    CLNPU_GP_KC,     /* K block (cache blocking along K), a multiple of 128 */
    CLNPU_GP_KACC,   /* accumulator chains along K (0: the kernel's default) */
    CLNPU_GP_KSPLIT, /* chains walk separate stretches of K (-1: the kernel's default) */
    CLNPU_GP_COUNT
} clnpu_gemm_param;

typedef struct clnpu_gemm_params {
    int v[CLNPU_GP_COUNT];
    const char *src[CLNPU_GP_COUNT]; /* "tuned", "nearest", "derived", "profile", "kernel", "env" */
} clnpu_gemm_params;

/* The shape a launch's parameters are chosen for. */
typedef struct clnpu_gemm_shape {
    clnpu_dtype dtype;
    size_t m, n, k;   /* m: rows of X (the largest segment for grouped GEMMs) */
    unsigned nr;      /* panel width the weights were packed with */
    bool pair;        /* SwiGLU: two weight panels per output panel */
    bool grouped;
} clnpu_gemm_shape;

/* The tuning database's name for the shape class of a launch. */
const char *clnpu_gemm_class(const clnpu_gemm_shape *s);
/* Parameter names as tuning entries and CLNPU_GEMM spell them. */
const char *clnpu_gemm_param_name(clnpu_gemm_param p);
/* Defaults from the device (ISA class, registers, caches, compute units), then the entry's values,
 * then $CLNPU_GEMM ("mr=10,nb=2,..."), then the constraints of the kernel (MR <= 16, NB = 1 for
 * SwiGLU and grouped, KC >= K when MB = 1, ...). */
void clnpu_gemm_params_choose(clnpu_device *dev, const clnpu_gemm_shape *s, const clnpu_tuning_entry *te,
                              clnpu_gemm_params *out);
/* The panel width weights are packed with on this device (the native vector width, 8 or 16). */
unsigned clnpu_gemm_panel_width(const clnpu_device *dev);
/* "mr 10 (derived), nb 2 (tuned), ..." for --verbose. */
void clnpu_gemm_params_describe(const clnpu_gemm_params *p, char *out, size_t cap);
#endif
