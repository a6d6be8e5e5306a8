/* `clnpu conformance`: shared state of the case runner (tools/conformance*.c). */
#ifndef CLNPU_CONFORMANCE_H
#define CLNPU_CONFORMANCE_H
#include "cli.h"

typedef enum { CONF_PASS, CONF_FAIL, CONF_UNSUPPORTED } conf_status;

typedef struct conf_case {
    int tier;
    char op[32], dtype[16], shape[64], note[160], variant[64];
    double tol, err, ms;
    conf_status status;
} conf_case;

typedef struct conf_ctx {
    clnpu_device *dev;
    const char *model_dir;
    conf_case *cases;
    size_t n, cap;
    uint64_t rng;
} conf_ctx;

/* Record one case (err NaN or above tol fails; st != OK fails with the library's message). */
void conf_record(conf_ctx *c, int tier, const char *op, const char *dtype, const char *shape, double tol,
                 double err, double ms, clnpu_status st);
void conf_unsupported(conf_ctx *c, int tier, const char *op, const char *dtype, const char *shape, const char *why);
float conf_rand(conf_ctx *c); /* uniform [-1, 1) */
double conf_now_ms(void);
/* ||a - ref|| / ||ref||; NaN anywhere gives NaN */
double conf_rel(const float *a, const double *ref, size_t n);

void conf_tier0(conf_ctx *c);
void conf_tier1(conf_ctx *c);
void conf_tier2(conf_ctx *c);
void conf_tier3(conf_ctx *c);
void conf_tier3_dsa(conf_ctx *c);
#endif
