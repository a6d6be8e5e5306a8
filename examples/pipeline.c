/* A plan's stages, each on its own device, in one process: read the plan file, build the stages,
 * prefill a prompt through all of them and print the next token (greedy). Usage: pipeline MODEL_DIR
 * PLAN.yaml; the id equals the first one `generate MODEL_DIR` prints. */
#include <stdio.h>
#include <stdlib.h>

#include "clnpu/clnpu.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        clnpu_status st_ = (call);                                                                 \
        if (st_ != CLNPU_OK) {                                                                     \
            fprintf(stderr, "pipeline: %s: %s (%s)\n", #call, clnpu_error_message(), clnpu_status_name(st_)); \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: pipeline MODEL_DIR PLAN.yaml\n");
        return 2;
    }
    const int ids[] = {1, 2, 3};
    const size_t T = 3;
    int rc = 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", argv[1]);
    clnpu_checkpoint *ck = NULL;
    clnpu_stage_spec *st = NULL;
    clnpu_pipeline *pl = NULL;
    float *logits = NULL;

    clnpu_model_config cfg;
    CHECK(clnpu_model_config_load(path, &cfg));
    CHECK(clnpu_checkpoint_open(argv[1], &ck));
    size_t n;
    clnpu_plan_layout lay;
    CHECK(clnpu_pipeline_read_plan(argv[2], &cfg, &st, &n, &lay)); /* written by `clnpu plan -o` */
    clnpu_model_options opt = clnpu_model_options_default();
    opt.max_sequences = 1, opt.max_context = 64;
    CHECK(clnpu_pipeline_create(&cfg, ck, st, n, &opt, &pl)); /* one process; see _create_mpi for ranks */
    if (!(logits = malloc(T * cfg.vocab_size * sizeof *logits))) goto done;
    CHECK(clnpu_pipeline_prefill(pl, 0, ids, T, logits));
    const float *last = logits + (T - 1) * cfg.vocab_size;
    size_t best = 0;
    for (size_t i = 1; i < cfg.vocab_size; i++)
        if (last[i] > last[best]) best = i;
    printf("%zu stages", clnpu_pipeline_stage_count(pl));
    for (size_t s = 0; s < clnpu_pipeline_stage_count(pl); s++)
        printf("%s device %zu", s ? "," : ":", clnpu_device_get_info(clnpu_pipeline_stage_device(pl, s))->index);
    printf("; next token %zu\n", best);
    rc = 0;
done:
    clnpu_pipeline_destroy(pl); /* its stages' models and devices with it */
    free(st);                   /* the specs are the caller's (malloc'd by read_plan) */
    clnpu_checkpoint_close(ck);
    free(logits);
    return rc;
}
