/* Prefill / decode disaggregation: the node split between the two phases that serves the most
 * requests per second (scheduler notes 3.7 and 7.5), each phase planned on its own nodes. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "clnpu/plan.h"

/* The nodes [first, first + n) of a cluster as a cluster of their own (devices are stored node
 * by node; nothing is copied). */
static clnpu_cluster part_of(const clnpu_cluster *cl, size_t per_node, size_t first, size_t n)
{
    clnpu_cluster c = *cl;
    c.devices = cl->devices + first * per_node;
    c.count = n * per_node;
    c.nodes = n;
    return c;
}

clnpu_status clnpu_plan_disaggregate(const clnpu_model_config *cfg, const clnpu_cluster *cl,
                                     const clnpu_workload *prefill, const clnpu_workload *decode,
                                     const clnpu_calibration *cal, size_t input_len, size_t output_len,
                                     clnpu_plan **out_p, clnpu_plan **out_d, size_t *out_nodes, double *out_rps)
{
    *out_p = *out_d = NULL, *out_nodes = 0, *out_rps = 0;
    if (!input_len || !output_len) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "disaggregate: input and output lengths must be positive");
    if (!cl || cl->nodes < 2 || cl->count % cl->nodes)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "disaggregate: %s needs at least two nodes of equal size",
                          cl ? cl->name : "(no cluster)");
    const size_t per_node = cl->count / cl->nodes;
    for (size_t i = 1; i < cl->count; i++)
        if (cl->devices[i].node != cl->devices[i - 1].node && i % per_node)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "disaggregate: %s has nodes of different sizes", cl->name);
    clnpu_workload wp = *prefill, wd = *decode;
    wp.phase = CLNPU_PHASE_PREFILL, wp.context = input_len, wp.kv_transfer = true;
    wd.phase = CLNPU_PHASE_DECODE, wd.context = input_len + output_len / 2; /* the average KV of a step */
    /* a coarse grid over the split: at most 16 prefill node counts */
    const size_t step = (cl->nodes - 1 + 15) / 16;
    char last_error[512] = "";
    for (size_t np = 1; np < cl->nodes; np += step) {
        const clnpu_cluster a = part_of(cl, per_node, 0, np), b = part_of(cl, per_node, np, cl->nodes - np);
        clnpu_plan *p = NULL, *d = NULL;
        clnpu_status st = clnpu_plan_create(cfg, &a, &wp, cal, &p);
        if (!st) st = clnpu_plan_create(cfg, &b, &wd, cal, &d);
        if (st) {
            snprintf(last_error, sizeof last_error, "%s", clnpu_error_message());
            clnpu_plan_destroy(p), clnpu_plan_destroy(d);
            continue;
        }
        const double rps = fmin(clnpu_plan_get_summary(p).tokens_per_s / (double)input_len,
                                clnpu_plan_get_summary(d).tokens_per_s / (double)output_len);
        if (rps > *out_rps * (1 + 1e-12)) {
            clnpu_plan_destroy(*out_p), clnpu_plan_destroy(*out_d);
            *out_p = p, *out_d = d, *out_nodes = np, *out_rps = rps;
        } else {
            clnpu_plan_destroy(p), clnpu_plan_destroy(d);
        }
    }
    if (!*out_p)
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "disaggregate: no split of %s's %zu nodes fits both phases (last: %s)",
                          cl->name, cl->nodes, last_error);
    return CLNPU_OK;
}
