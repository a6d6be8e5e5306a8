/* Planning a model on a cluster without reading any weight: the layout search, the stages, the
 * memory per device, then the plan file that `clnpu run --plan` and clnpu_pipeline_read_plan take.
 * Usage: plan CONFIG.json CLUSTER.yaml [OUT.yaml] */
#include <stdio.h>

#include "clnpu/clnpu.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: plan CONFIG.json CLUSTER.yaml [OUT.yaml]\n");
        return 2;
    }
    int rc = 1;
    clnpu_model_config cfg;
    clnpu_cluster *cl = NULL;
    clnpu_plan *p = NULL;
    if (clnpu_model_config_load(argv[1], &cfg) || clnpu_cluster_load(argv[2], NULL, &cl)) {
        fprintf(stderr, "plan: %s\n", clnpu_error_message()); /* names the file, line and key */
        goto done;
    }
    clnpu_workload w = clnpu_workload_default(); /* decode, bf16, batch searched */
    if (clnpu_plan_create(&cfg, cl, &w, NULL, &p)) { /* NULL: default calibration */
        fprintf(stderr, "plan: %s\n", clnpu_error_message()); /* says what is missing */
        goto done;
    }
    clnpu_plan_print(p, stdout);
    if (argc > 3) {
        FILE *f = fopen(argv[3], "w");
        if (!f || clnpu_plan_write_yaml(p, f)) {
            fprintf(stderr, "plan: %s: cannot write the plan\n", argv[3]);
            if (f) fclose(f);
            goto done;
        }
        if (fclose(f)) goto done;
    }
    rc = 0;
done:
    clnpu_plan_destroy(p);
    clnpu_cluster_destroy(cl); /* the plan keeps no pointer into the cluster */
    return rc;
}
