/* config.json fields of DeepSeek-V3.2 (deepseek_v32) and A.X K2 (axk2): the sparse-attention
 * indexer (index_topk, index_n_heads, index_head_dim), A.X K2's gated norms and output gate, and
 * mlp_layer_types, as transformers 5.24's DeepseekV32Config / AXK2Config read them. */
#include <math.h>
#include <string.h>

#include "../common/error.h"
#include "model_config_internal.h"

static clnpu_status size_field(const cJSON *root, const char *origin, const char *key, size_t def, size_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return CLNPU_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble) || v->valuedouble > 1e9)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: \"%s\" must be a non-negative integer", origin, key);
    *out = (size_t)v->valuedouble;
    return CLNPU_OK;
}

/* A list of one string per layer, each one of two names (bit set for `one`); absent: *given false. */
static clnpu_status layer_list(const cJSON *root, const char *origin, const char *key, const char *zero, const char *one,
                               size_t layers, bool *given, uint64_t *bits)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *given = false;
    if (!v || cJSON_IsNull(v)) return CLNPU_OK;
    if (!cJSON_IsArray(v) || (size_t)cJSON_GetArraySize(v) != layers)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: \"%s\" must list one entry per layer (%zu)", origin, key, layers);
    if (layers > CLNPU_MODEL_MAX_LAYERS)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: \"%s\": more than %d layers", origin, key, CLNPU_MODEL_MAX_LAYERS);
    size_t l = 0;
    for (const cJSON *e = v->child; e; e = e->next, l++) {
        if (!cJSON_IsString(e) || (strcmp(e->valuestring, zero) && (!one || strcmp(e->valuestring, one))))
            return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: \"%s\"[%zu] is %s%s%s (%s%s%s)", origin, key, l,
                              cJSON_IsString(e) ? "\"" : "", cJSON_IsString(e) ? e->valuestring : "not a string",
                              cJSON_IsString(e) ? "\"" : "", zero, one ? ", " : "", one ? one : "");
        if (bits && one && !strcmp(e->valuestring, one)) bits[l / 64] |= 1ull << (l % 64);
    }
    *given = true;
    return CLNPU_OK;
}

clnpu_status clnpu_model_config_parse_family(const cJSON *root, const char *origin, bool axk2, bool v32,
                                             clnpu_model_config *m)
{
    const size_t L = m->num_hidden_layers;
    memset(m->mlp_sparse, 0, sizeof m->mlp_sparse);
    clnpu_status st = layer_list(root, origin, "mlp_layer_types", "dense", "sparse", L, &m->has_mlp_layer_types,
                                 m->mlp_sparse);
    m->index_topk = m->index_n_heads = m->index_head_dim = m->gated_norm_rank = 0;
    m->attn_output_gate = false;
    if (st || (!axk2 && !v32)) return st;
    /* every layer of these models attends through the indexer */
    bool given;
    st = layer_list(root, origin, "layer_types", "indexed_attention", NULL, L, &given, NULL);
    if (!st) st = size_field(root, origin, "index_topk", 2048, &m->index_topk);
    if (!st) st = size_field(root, origin, "index_n_heads", axk2 ? 16 : 64, &m->index_n_heads);
    if (!st) st = size_field(root, origin, "index_head_dim", 128, &m->index_head_dim);
    if (!st && axk2) st = size_field(root, origin, "gated_norm_rank", 16, &m->gated_norm_rank);
    if (st) return st;
    if (!m->index_topk || !m->index_n_heads || !m->index_head_dim || m->index_head_dim % 4 ||
        m->index_head_dim < m->qk_rope_head_dim)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: index_topk and index_n_heads must be positive, index_head_dim a "
                          "multiple of 4 and at least qk_rope_head_dim", origin);
    /* the indexer's queries come from q_resid (and A.X K2's gate from q_a_proj's output) */
    if (!m->q_lora_rank)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: %s needs a positive q_lora_rank (the indexer reads the query LoRA)",
                          origin, m->model_type);
    if (axk2) {
        m->attn_output_gate = true;
        if (!m->gated_norm_rank) return clnpu_fail(CLNPU_ERR_PARSE, "%s: gated_norm_rank must be positive", origin);
        /* grouped A.X K2 routing (AXK2TopkRouter) scores the experts of unkept groups 0, not -inf:
         * clnpu_moe_config.masked_groups_score_zero; without groups (n_group null) one group */
    }
    return CLNPU_OK;
}

void clnpu_model_config_layer_family(const clnpu_model_config *c, size_t l, double *attn, double *whole, double *norms,
                                     double *gates)
{
    const double d = (double)c->hidden_size, H = (double)c->num_attention_heads, qr = (double)c->q_lora_rank;
    const double nh = (double)c->index_n_heads, D = (double)c->index_head_dim, rank = (double)c->gated_norm_rank;
    const double dqk = (double)(c->qk_nope_head_dim + c->qk_rope_head_dim), vd = (double)c->v_head_dim;
    double a = 0, w = 0, n = 0, g = 0;
    if (c->index_topk) {
        n = 2 * D;                            /* k_norm: LayerNorm weight and bias */
        w = qr * nh * D + d * D + d * nh + n; /* wq_b, wk, weights_proj */
        a = w;
    }
    if (c->attn_output_gate) a += 2 * qr * H * (dqk + vd) - qr * H * dqk; /* q_gate_proj instead of q_b_proj */
    if (c->gated_norm_rank) g = 2 * d * rank * (clnpu_model_config_is_moe(c, l) ? 2 : 1);
    if (attn) *attn = a;
    if (whole) *whole = w;
    if (norms) *norms = n;
    if (gates) *gates = g;
}
