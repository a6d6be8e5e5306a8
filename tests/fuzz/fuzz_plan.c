/* libFuzzer target for plan files (clnpu-plan-2, schema/plan_schema.c): parse, validate, check
 * against a model, turn into stage specs and write back; the written plan must parse again to the
 * same stages. Every input must end in CLNPU_OK or a clean error (ASan / UBSan watch the rest). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../schema/plan_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the tiny A.X K1's shape (models/tiny-axk1) */
    clnpu_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.model_type, sizeof cfg.model_type, "axk1");
    cfg.num_hidden_layers = 3, cfg.hidden_size = 96, cfg.n_routed_experts = 16;
    clnpu_plan_doc d;
    if (clnpu_plan_doc_parse((const char *)data, size, "fuzz-plan.yaml", &d) != CLNPU_OK) return 0;
    clnpu_stage_spec *sp = NULL;
    size_t n = 0;
    clnpu_plan_layout lay;
    if (clnpu_plan_doc_check_model(&d, &cfg, "fuzz-plan.yaml") == CLNPU_OK &&
        clnpu_plan_doc_specs(&d, "fuzz-plan.yaml", &sp, &n, &lay) == CLNPU_OK) {
        for (size_t i = 0; i < n; i++)
            if (sp[i].layer_end > cfg.num_hidden_layers || sp[i].layer_begin > sp[i].layer_end) __builtin_trap();
        free(sp);
    }
    /* what the writer emits the reader accepts, stage for stage */
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) __builtin_trap();
    if (clnpu_plan_doc_write(&d, f) != CLNPU_OK) __builtin_trap();
    fclose(f);
    clnpu_plan_doc e;
    if (clnpu_plan_doc_parse(buf, len, "fuzz-plan-written.yaml", &e) != CLNPU_OK) __builtin_trap();
    if (e.nstages != d.nstages || e.ep != d.ep || e.layers != d.layers || e.nexpert_lists != d.nexpert_lists)
        __builtin_trap();
    for (size_t i = 0; i < d.nstages; i++)
        if (e.stages[i].layer_end != d.stages[i].layer_end || e.stages[i].devices[0] != d.stages[i].devices[0])
            __builtin_trap();
    clnpu_plan_doc_free(&e);
    free(buf);
    clnpu_plan_doc_free(&d);
    return 0;
}
