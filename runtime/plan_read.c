/* Reading a plan file (format clnpu-plan-1, written by `clnpu plan -o`) into stage specs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "../common/error.h"
#include "../common/yaml_in.h"
#include "clnpu/pipeline.h"

clnpu_status clnpu_pipeline_read_plan(const char *path, const clnpu_model_config *cfg, clnpu_stage_spec **out,
                                      size_t *count, clnpu_plan_layout *layout)
{
    clnpu_plan_layout lay = {1, 1, 1};
    *out = NULL, *count = 0;
    if (layout) *layout = lay;
    yaml_document_t doc;
    clnpu_status st = clnpu_yaml_load_file(path, &doc);
    if (st) return st;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    const char *fmt = clnpu_yaml_value(&doc, root, "format"), *layers = clnpu_yaml_value(&doc, root, "layers");
    yaml_node_t *stages = clnpu_yaml_get(&doc, root, "stages"), *par = clnpu_yaml_get(&doc, root, "parallel");
    if (!fmt || strcmp(fmt, "clnpu-plan-1"))
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: not a clnpu plan (format: clnpu-plan-1)", path);
    else if (!layers || (size_t)atol(layers) != cfg->num_hidden_layers)
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: the plan is for %s layers, the model has %zu", path,
                        layers ? layers : "?", cfg->num_hidden_layers);
    else if (!stages || stages->type != YAML_SEQUENCE_NODE || stages->data.sequence.items.start == stages->data.sequence.items.top)
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: no stages", path);
    if (!st && clnpu_yaml_value(&doc, par, "ep")) lay.ep = (size_t)atol(clnpu_yaml_value(&doc, par, "ep"));
    if (!st && clnpu_yaml_value(&doc, par, "micro_batches")) {
        long mb = atol(clnpu_yaml_value(&doc, par, "micro_batches"));
        if (mb < 1 || mb > 1024) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: micro_batches %s is not 1..1024", path,
                                                 clnpu_yaml_value(&doc, par, "micro_batches"));
        else lay.micro_batches = (size_t)mb;
    }
    if (!st && clnpu_yaml_value(&doc, par, "pipeline_replicas")) {
        long pr = atol(clnpu_yaml_value(&doc, par, "pipeline_replicas"));
        if (pr < 1) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: pipeline_replicas %s is not >= 1", path,
                                    clnpu_yaml_value(&doc, par, "pipeline_replicas"));
        else lay.pipeline_replicas = (size_t)pr;
    }
    if (!st && layout) *layout = lay;
    size_t tp = 1;
    if (!st && clnpu_yaml_value(&doc, par, "tp")) {
        long t = atol(clnpu_yaml_value(&doc, par, "tp"));
        if (t < 1 || t > CLNPU_MAX_EP) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: tp %s is not 1..%d", path,
                                                      clnpu_yaml_value(&doc, par, "tp"), CLNPU_MAX_EP);
        else tp = (size_t)t;
    }
    size_t n = st ? 0 : (size_t)(stages->data.sequence.items.top - stages->data.sequence.items.start);
    /* the experts of each device in a stage (every MoE layer alike), in one block with the specs */
    yaml_node_t *experts = clnpu_yaml_get(&doc, root, "experts");
    size_t total = 0, nids[CLNPU_MAX_EP] = {0};
    const size_t *ids[CLNPU_MAX_EP] = {0};
    if (experts && experts->type == YAML_SEQUENCE_NODE)
        for (yaml_node_item_t *it = experts->data.sequence.items.start; it < experts->data.sequence.items.top; it++) {
            yaml_node_t *l = yaml_document_get_node(&doc, *it);
            if (l->type == YAML_SEQUENCE_NODE) total += (size_t)(l->data.sequence.items.top - l->data.sequence.items.start);
        }
    clnpu_stage_spec *sp = n ? calloc(1, n * sizeof *sp + total * sizeof(size_t)) : NULL;
    if (n && !sp) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (sp && experts && experts->type == YAML_SEQUENCE_NODE) {
        size_t *pool = (size_t *)(sp + n), k = 0, j = 0;
        for (yaml_node_item_t *it = experts->data.sequence.items.start; it < experts->data.sequence.items.top && j < CLNPU_MAX_EP; it++, j++) {
            yaml_node_t *l = yaml_document_get_node(&doc, *it);
            ids[j] = pool + k;
            for (yaml_node_item_t *e = l->type == YAML_SEQUENCE_NODE ? l->data.sequence.items.start : NULL;
                 e && e < l->data.sequence.items.top; e++, nids[j]++)
                pool[k++] = (size_t)atol(clnpu_yaml_scalar(yaml_document_get_node(&doc, *e)));
        }
    }
    size_t next = 0;
    for (size_t i = 0; !st && i < n; i++) {
        yaml_node_t *s = yaml_document_get_node(&doc, stages->data.sequence.items.start[i]);
        yaml_node_t *devs = clnpu_yaml_get(&doc, s, "devices"), *ls = clnpu_yaml_get(&doc, s, "layers");
        const char *emb = clnpu_yaml_value(&doc, s, "embedding"), *head = clnpu_yaml_value(&doc, s, "head");
        const char *prof = clnpu_yaml_value(&doc, s, "profile");
        if (!devs || devs->type != YAML_SEQUENCE_NODE || devs->data.sequence.items.start == devs->data.sequence.items.top ||
            !ls || ls->type != YAML_SEQUENCE_NODE) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: a stage needs devices and layers", path, s->start_mark.line + 1);
            break;
        }
        sp[i].device = (size_t)atol(clnpu_yaml_scalar(yaml_document_get_node(&doc, *devs->data.sequence.items.start)));
        size_t nd = (size_t)(devs->data.sequence.items.top - devs->data.sequence.items.start);
        /* attention replicas of tp devices each (tensor parallel inside a replica) */
        if (nd % tp) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: stage %zu has %zu devices, not a multiple of tensor parallel %zu", path, i,
                            nd, tp);
            break;
        }
        sp[i].tp = tp, sp[i].replicas = nd / tp;
        if (nd > 1) { /* expert parallel over the stage's devices, experts from the plan's list */
            if (nd > CLNPU_MAX_EP || !experts || (size_t)(experts->data.sequence.items.top - experts->data.sequence.items.start) < nd) {
                st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: stage %zu spreads experts over %zu devices: this executor runs up to "
                                "%d, with an 'experts' list per device", path, i, nd, CLNPU_MAX_EP);
                break;
            }
            sp[i].ep_count = nd;
            for (size_t j = 0; j < nd; j++) {
                sp[i].ep_devices[j] = (size_t)atol(clnpu_yaml_scalar(yaml_document_get_node(&doc, devs->data.sequence.items.start[j])));
                sp[i].ep_experts[j] = ids[j];
                sp[i].ep_expert_counts[j] = nids[j];
            }
        }
        if (prof) snprintf(sp[i].profile, sizeof sp[i].profile, "%s", prof);
        sp[i].embed = emb && !strcmp(emb, "true");
        sp[i].head = head && !strcmp(head, "true");
        sp[i].layer_begin = next;
        for (yaml_node_item_t *it = ls->data.sequence.items.start; it < ls->data.sequence.items.top; it++) {
            size_t l = (size_t)atol(clnpu_yaml_scalar(yaml_document_get_node(&doc, *it)));
            if (l != next) {
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: stage %zu lists layer %zu where layer %zu should come", path,
                                s->start_mark.line + 1, i, l, next);
                break;
            }
            next++;
        }
        sp[i].layer_end = next;
        if (!st && (sp[i].embed != (i == 0) || sp[i].head != (i == n - 1)))
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: the embedding must be on the first stage and the head on the last", path);
    }
    if (!st && next != cfg->num_hidden_layers)
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: the stages cover %zu of %zu layers", path, next, cfg->num_hidden_layers);
    yaml_document_delete(&doc);
    if (st) {
        free(sp);
        return st;
    }
    *out = sp, *count = n;
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
