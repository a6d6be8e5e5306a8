/* Two-micro-batch overlap of one MoE layer in the schedules DeepSeek publishes (open-infra-index
 * day 6 and deepseek-ai/profile-data's prefill and decode figures); see clnpu_tbo_layer_time. */
#include <math.h>

#include "clnpu/plan.h"

double clnpu_tbo_layer_time(const clnpu_tbo_layer *x)
{
    const double part = x->compute_sm_fraction;
    /* a fixed split gives the exchange its own units: nothing of it runs on the compute stream */
    const double sm = part > 0 ? 0 : x->exchange_sm_fraction, k = part > 0 ? 1 / part : 1;
    const double late = fmin(x->late, x->attn), early = x->attn - late;
#define SLOT(COMPUTE, X) fmax((COMPUTE) * k + sm * (X), (X))
    if (x->prefill)
        return SLOT(x->attn + x->shared, x->combine) + SLOT(x->attn, x->dispatch) + SLOT(x->mlp, x->dispatch) +
               SLOT(x->mlp + x->shared, x->combine);
    /* decode: the routed experts wait for their own dispatch and their combine waits for them */
    return 2 * (SLOT(x->shared + early, x->dispatch) + x->mlp * k + SLOT(late, x->combine));
#undef SLOT
}
