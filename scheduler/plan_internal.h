/* Internal state of a plan: the chosen layout, per-stage and per-device figures. */
#ifndef CLNPU_PLAN_INTERNAL_H
#define CLNPU_PLAN_INTERNAL_H
#include "clnpu/plan.h"

typedef struct plan_stage {
    size_t unit_begin, unit_end; /* units [begin, end) */
    size_t device_begin;         /* first device of its group (g devices) */
    double time_s;               /* per micro-batch */
    double mem[6];               /* weights, kv, activations, comm, reserve, capacity (per device) */
} plan_stage;

struct clnpu_plan {
    clnpu_model_config cfg;
    clnpu_graph graph;
    clnpu_workload work;
    char cluster_name[64];
    size_t devices_total, devices_per_node;
    clnpu_plan_summary sum;
    size_t g;                    /* devices per stage (= EP) */
    plan_stage *stages;
    size_t nstages;
    /* expert placement (one layer's; uniform loads place every layer alike) */
    size_t slots_per_device, *copy_expert, *copy_device, ncopies;
    double weight_bytes_per_param;
    char profile_names[4][64];
    char (*stage_profiles)[64];  /* [nstages] */
    clnpu_plan_breakdown breakdown;
};
#endif
