/* The plan schema's check that every stage profile exists (apart, so that the format's parser
 * builds without the embedded profile set: tests/fuzz/fuzz_plan.c). */
#include "../common/error.h"
#include "plan_schema.h"

clnpu_status clnpu_plan_doc_check_profiles(const clnpu_plan_doc *d, const clnpu_profile_set *set, const char *origin)
{
    clnpu_profile_set *own = NULL;
    clnpu_status st = CLNPU_OK;
    if (!set) {
        st = clnpu_profile_set_builtin(&own);
        set = own;
    }
    for (size_t i = 0; !st && i < d->nstages; i++)
        if (d->stages[i].profile[0] && !clnpu_profile_set_find(set, d->stages[i].profile))
            st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: stage %zu: no target profile '%s' (clnpu devices lists them)",
                            origin, i, d->stages[i].profile);
    clnpu_profile_set_destroy(own);
    return st;
}
