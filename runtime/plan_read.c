/* A plan file (format clnpu-plan-2, written by `clnpu plan -o`) into stage specs for this model,
 * through the plan schema (schema/plan_schema.c), and a plan's pipeline replicas. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../schema/plan_schema.h"
#include "clnpu/pipeline.h"

clnpu_status clnpu_pipeline_read_plan(const char *path, const clnpu_model_config *cfg, clnpu_stage_spec **out,
                                      size_t *count, clnpu_plan_layout *layout)
{
    *out = NULL, *count = 0;
    clnpu_plan_doc d;
    clnpu_status st = clnpu_plan_doc_load(path, &d);
    if (st) return st;
    st = clnpu_plan_doc_check_model(&d, cfg, path);
    if (!st) st = clnpu_plan_doc_check_profiles(&d, NULL, path);
    if (!st) st = clnpu_plan_doc_specs(&d, path, out, count, layout);
    clnpu_plan_doc_free(&d);
    return st;
}

clnpu_status clnpu_plan_layout_weights(const clnpu_plan_layout *lay, const char *origin, int requested, int *out)
{
    if (requested >= 0 && requested != lay->weights) {
        const char *plan = lay->weights < 0 ? "bf16" : clnpu_dtype_name((clnpu_dtype)lay->weights);
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: the plan is for %s weights, not %s (its memory assumed %s)",
                          origin, plan, clnpu_dtype_name((clnpu_dtype)requested), plan);
    }
    *out = lay->weights;
    return CLNPU_OK;
}

clnpu_status clnpu_plan_layout_latent_cache(const clnpu_plan_layout *lay, const char *origin, int requested,
                                            clnpu_dtype *out)
{
    if (requested >= 0 && requested != (int)lay->latent_cache)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: the plan is for a %s latent cache, not %s (its memory "
                          "assumed %s)", origin, clnpu_dtype_name(lay->latent_cache),
                          clnpu_dtype_name((clnpu_dtype)requested), clnpu_dtype_name(lay->latent_cache));
    *out = lay->latent_cache;
    return CLNPU_OK;
}

clnpu_status clnpu_stage_specs_replica(clnpu_stage_spec *sp, size_t n, size_t k, size_t replicas)
{
    if (k >= replicas)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "pipeline replica %zu, but the plan has %zu pipeline replica%s (0..%zu)",
                          k, replicas, replicas == 1 ? "" : "s", replicas ? replicas - 1 : 0);
    size_t span = 0;
    for (size_t i = 0; i < n; i++) {
        const size_t w = sp[i].ep_count > 1 ? sp[i].ep_count : 1, tr = (sp[i].tp ? sp[i].tp : 1) * (sp[i].replicas ? sp[i].replicas : 1);
        if (sp[i].device + 1 > span) span = sp[i].device + 1;
        for (size_t j = 0; j < (w > tr ? w : tr) && j < CLNPU_MAX_EP; j++)
            if (sp[i].ep_devices[j] + 1 > span) span = sp[i].ep_devices[j] + 1;
    }
    for (size_t i = 0; i < n; i++) {
        sp[i].device += k * span;
        for (size_t j = 0; j < CLNPU_MAX_EP; j++) sp[i].ep_devices[j] += k * span;
    }
    return CLNPU_OK;
}
