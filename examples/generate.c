/* A checkpoint on one device: prefill a prompt, then greedy decode, argmax on the host.
 * Usage: generate MODEL_DIR [NEW_TOKENS] (default 4); prints the generated ids, comma-separated,
 * which equal `clnpu run --model MODEL_DIR --ids 1,2,3 -n NEW_TOKENS --greedy`. */
#include <stdio.h>
#include <stdlib.h>

#include "clnpu/clnpu.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        clnpu_status st_ = (call);                                                                 \
        if (st_ != CLNPU_OK) {                                                                     \
            fprintf(stderr, "generate: %s: %s (%s)\n", #call, clnpu_error_message(), clnpu_status_name(st_)); \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)

static int argmax(const float *v, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return (int)best;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: generate MODEL_DIR [NEW_TOKENS]\n");
        return 2;
    }
    const char *dir = argv[1];
    const size_t n_new = argc > 2 ? strtoul(argv[2], NULL, 10) : 4;
    const int ids[] = {1, 2, 3};
    const size_t T = sizeof ids / sizeof ids[0];
    int rc = 1;
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    clnpu_device *dev = NULL;
    clnpu_checkpoint *ck = NULL;
    clnpu_model *m = NULL;
    float *logits = NULL;

    clnpu_model_config cfg;
    CHECK(clnpu_model_config_load(path, &cfg));
    CHECK(clnpu_checkpoint_open(dir, &ck));
    /* the checkpoint says which file and which shapes when a tensor does not fit the config */
    const clnpu_tensor_info *t;
    int64_t shape[2] = {(int64_t)cfg.vocab_size, (int64_t)cfg.hidden_size};
    CHECK(clnpu_checkpoint_require(ck, "lm_head.weight", 2, shape, &t));
    CHECK(clnpu_device_open(0, NULL, &dev));
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 1;
    o.max_context = T + n_new + 1;
    CHECK(clnpu_model_create(dev, &cfg, ck, &o, &m));
    /* what the model allocates besides its weights, from the config and options alone (the
     * planner's account of it) */
    size_t moe_layers = 0;
    for (size_t l = 0; l < cfg.num_hidden_layers; l++) moe_layers += clnpu_model_config_is_moe(&cfg, l);
    clnpu_model_memory mm;
    CHECK(clnpu_model_memory_estimate(&cfg, &o, 1, &mm));
    const double besides = mm.workspaces + mm.logits + cfg.num_hidden_layers * (mm.cache_per_layer + mm.absorbed_per_layer) +
                           moe_layers * mm.moe_scratch;
    fprintf(stderr, "generate: %.2f MiB in use on the device; estimated besides the weights: %.2f MiB\n",
            clnpu_device_memory_used(dev) / 1048576.0, besides / 1048576.0);
    clnpu_checkpoint_close(ck); /* the model holds its own copy of the weights on the device */
    ck = NULL;
    if (!(logits = malloc(T * cfg.vocab_size * sizeof *logits))) {
        fprintf(stderr, "generate: out of host memory\n");
        goto done;
    }
    CHECK(clnpu_model_prefill(m, 0, ids, T, logits)); /* logits [T][vocab] */
    int next = argmax(logits + (T - 1) * cfg.vocab_size, cfg.vocab_size);
    const size_t seq = 0;
    for (size_t i = 0; i < n_new; i++) {
        printf(i ? ",%d" : "%d", next);
        if (i + 1 < n_new) {
            CHECK(clnpu_model_decode(m, &seq, &next, 1, logits)); /* one token for sequence 0 */
            next = argmax(logits, cfg.vocab_size);
        }
    }
    printf("\n");
    rc = 0;
done:
    clnpu_model_destroy(m); /* before its device */
    clnpu_checkpoint_close(ck);
    clnpu_device_close(dev);
    free(logits);
    return rc;
}
