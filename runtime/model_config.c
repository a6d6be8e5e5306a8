/* config.json for the DeepSeek-V3 family (A.X K1: model_type axk1 / AXK1), through libcjson. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../common/error.h"
#include "clnpu/model.h"

typedef struct cfg_ctx {
    const cJSON *root;
    const char *origin;
} cfg_ctx;

/* A non-negative integer field; absent -> def (or an error when required). */
static clnpu_status get_size(const cfg_ctx *c, const cJSON *obj, const char *key, bool required,
                             size_t def, size_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return clnpu_fail(CLNPU_ERR_PARSE, "%s: missing required field \"%s\"", c->origin, key);
        *out = def;
        return CLNPU_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble > 1e12)
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: \"%s\" must be a non-negative integer", c->origin, key);
    *out = (size_t)v->valuedouble;
    return CLNPU_OK;
}

static clnpu_status get_double(const cfg_ctx *c, const cJSON *obj, const char *key, double def, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return CLNPU_OK;
    }
    if (!cJSON_IsNumber(v)) return clnpu_fail(CLNPU_ERR_PARSE, "%s: \"%s\" must be a number", c->origin, key);
    *out = v->valuedouble;
    return CLNPU_OK;
}

static clnpu_status get_bool(const cfg_ctx *c, const cJSON *obj, const char *key, bool def, bool *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return CLNPU_OK;
    }
    if (!cJSON_IsBool(v)) return clnpu_fail(CLNPU_ERR_PARSE, "%s: \"%s\" must be true or false", c->origin, key);
    *out = cJSON_IsTrue(v);
    return CLNPU_OK;
}

static const char *get_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* rope_scaling (+ top-level rope_theta) or rope_parameters (transformers 5). */
static clnpu_status parse_rope(const cfg_ctx *c, clnpu_model_config *m)
{
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c->root, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(c->root, "rope_parameters");
    const cJSON *src = cJSON_IsObject(rp) ? rp : rs;
    clnpu_status st = get_double(c, c->root, "rope_theta", 10000.0, &m->rope.theta);
    if (!st && cJSON_IsObject(src)) st = get_double(c, src, "rope_theta", m->rope.theta, &m->rope.theta);
    if (st) return st;
    m->rope.dim = m->qk_rope_head_dim;
    m->rope.scaling = CLNPU_ROPE_NONE;
    if (!cJSON_IsObject(src)) {
        if (src && !cJSON_IsNull(src))
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: \"%s\" must be an object or null", c->origin,
                              src == rp ? "rope_parameters" : "rope_scaling");
        return CLNPU_OK;
    }
    const char *type = get_str(src, "rope_type");
    if (!type) type = get_str(src, "type");
    if (!type || !strcmp(type, "default")) return CLNPU_OK;
    if (strcmp(type, "yarn"))
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: rope type \"%s\" is not supported (default, yarn)", c->origin, type);
    m->rope.scaling = CLNPU_ROPE_YARN;
    double orig = 0;
    st = get_double(c, src, "factor", 1.0, &m->rope.factor);
    if (!st) st = get_double(c, src, "original_max_position_embeddings", 0, &orig);
    if (!st) st = get_double(c, src, "beta_fast", 32.0, &m->rope.beta_fast);
    if (!st) st = get_double(c, src, "beta_slow", 1.0, &m->rope.beta_slow);
    if (!st) st = get_double(c, src, "mscale", 1.0, &m->rope.mscale);
    if (!st) st = get_double(c, src, "mscale_all_dim", 0.0, &m->rope.mscale_all_dim);
    if (st) return st;
    if (orig <= 0) return clnpu_fail(CLNPU_ERR_PARSE, "%s: yarn needs original_max_position_embeddings", c->origin);
    m->rope.original_max_position_embeddings = orig;
    /* transformers derives the factor from max_position_embeddings / original when both are
     * given (its DeepSeek-V3 note); follow it so logits match the reference stack. */
    if (m->max_position_embeddings) m->rope.factor = (double)m->max_position_embeddings / orig;
    if (m->rope.factor <= 0) return clnpu_fail(CLNPU_ERR_PARSE, "%s: yarn factor must be positive", c->origin);
    return CLNPU_OK;
}

clnpu_status clnpu_model_config_parse(const char *json, size_t len, const char *origin, clnpu_model_config *m)
{
    memset(m, 0, sizeof *m);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return clnpu_fail(CLNPU_ERR_PARSE, "%s: not valid JSON", origin);
    cfg_ctx c = {root, origin};
    clnpu_status st = CLNPU_OK;
    if (!cJSON_IsObject(root)) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: not a JSON object", origin);
    const char *type = st ? NULL : get_str(root, "model_type");
    if (!st && !type) st = clnpu_fail(CLNPU_ERR_PARSE, "%s: missing required field \"model_type\"", origin);
    bool axk1 = false;
    if (!st) {
        axk1 = !strcasecmp(type, "axk1");
        if (!axk1 && strcmp(type, "deepseek_v3"))
            st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (axk1, deepseek_v3)",
                            origin, type);
        else snprintf(m->model_type, sizeof m->model_type, "%s", type);
    }
    struct { const char *key; size_t *dst; bool req; size_t def; } sizes[] = {
        {"vocab_size", &m->vocab_size, true, 0},
        {"hidden_size", &m->hidden_size, true, 0},
        {"intermediate_size", &m->intermediate_size, true, 0},
        {"moe_intermediate_size", &m->moe_intermediate_size, true, 0},
        {"num_hidden_layers", &m->num_hidden_layers, true, 0},
        {"num_attention_heads", &m->num_attention_heads, true, 0},
        {"kv_lora_rank", &m->kv_lora_rank, true, 0},
        {"qk_nope_head_dim", &m->qk_nope_head_dim, true, 0},
        {"qk_rope_head_dim", &m->qk_rope_head_dim, true, 0},
        {"v_head_dim", &m->v_head_dim, true, 0},
        {"n_routed_experts", &m->n_routed_experts, true, 0},
        {"q_lora_rank", &m->q_lora_rank, false, 0},
        {"first_k_dense_replace", &m->first_k_dense_replace, false, axk1 ? 1 : 3},
        {"moe_layer_freq", &m->moe_layer_freq, false, 1},
        {"n_shared_experts", &m->n_shared_experts, false, 1},
        {"num_experts_per_tok", &m->num_experts_per_tok, false, 8},
        {"n_group", &m->n_group, false, 1},
        {"topk_group", &m->topk_group, false, 1},
        {"max_position_embeddings", &m->max_position_embeddings, false, axk1 ? 131072 : 163840},
    };
    for (size_t i = 0; !st && i < sizeof sizes / sizeof sizes[0]; i++)
        st = get_size(&c, root, sizes[i].key, sizes[i].req, sizes[i].def, sizes[i].dst);
    if (!st) st = get_double(&c, root, "routed_scaling_factor", axk1 ? 2.5 : 1.0, &m->routed_scaling_factor);
    if (!st) st = get_double(&c, root, "rms_norm_eps", 1e-6, &m->rms_norm_eps);
    if (!st) st = get_bool(&c, root, "norm_topk_prob", true, &m->norm_topk_prob);
    if (!st) st = get_bool(&c, root, "tie_word_embeddings", false, &m->tie_word_embeddings);
    if (!st) st = get_bool(&c, root, "rope_interleave", true, &m->rope_interleave);
    if (!st) st = parse_rope(&c, m);
    m->post_mlp_layernorm = axk1;
    /* Features this backend does not implement are refused, not silently run wrong. */
    const char *act = st ? NULL : get_str(root, "hidden_act");
    if (!st && act && strcmp(act, "silu"))
        st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: hidden_act \"%s\" (only silu)", origin, act);
    const char *scoring = st ? NULL : get_str(root, "scoring_func");
    if (!st && scoring && strcmp(scoring, "sigmoid"))
        st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: scoring_func \"%s\" (only sigmoid)", origin, scoring);
    const char *topk = st ? NULL : get_str(root, "topk_method");
    if (!st && topk && strcmp(topk, "noaux_tc"))
        st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: topk_method \"%s\" (only noaux_tc)", origin, topk);
    const cJSON *qc = st ? NULL : cJSON_GetObjectItemCaseSensitive(root, "quantization_config");
    if (!st && qc && !cJSON_IsNull(qc))
        st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: quantized checkpoints (quantization_config) are not "
                        "loaded yet; use --weights int8|fp8 on a bf16 checkpoint", origin);
    /* Consistency the math relies on. */
    if (!st && (!m->hidden_size || !m->num_attention_heads || !m->num_hidden_layers || !m->vocab_size ||
                !m->kv_lora_rank || !m->qk_rope_head_dim || m->qk_rope_head_dim % 2))
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: hidden_size, num_attention_heads, num_hidden_layers, vocab_size, "
                        "kv_lora_rank must be positive and qk_rope_head_dim even", origin);
    if (!st && (m->qk_nope_head_dim + m->qk_rope_head_dim) % 4 + m->v_head_dim % 4 + m->kv_lora_rank % 4)
        st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: head dims and kv_lora_rank must be multiples of 4", origin);
    if (!st && m->first_k_dense_replace < m->num_hidden_layers &&
        (!m->n_routed_experts || !m->n_group || m->n_routed_experts % m->n_group || !m->num_experts_per_tok ||
         m->topk_group > m->n_group || !m->moe_layer_freq))
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: inconsistent MoE settings (experts %zu, groups %zu, topk_group %zu)",
                        origin, m->n_routed_experts, m->n_group, m->topk_group);
    cJSON_Delete(root);
    return st;
}

clnpu_status clnpu_model_config_load(const char *path, clnpu_model_config *out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    bool big = !feof(f);
    fclose(f);
    if (big) return clnpu_fail(CLNPU_ERR_PARSE, "%s: larger than 64 KiB: not a model config", path);
    return clnpu_model_config_parse(buf, n, path, out);
}

bool clnpu_model_config_is_moe(const clnpu_model_config *c, size_t l)
{
    return l >= c->first_k_dense_replace && c->moe_layer_freq && l % c->moe_layer_freq == 0;
}

void clnpu_model_config_params(const clnpu_model_config *c, double *total, double *active)
{
    const double d = (double)c->hidden_size, H = (double)c->num_attention_heads;
    const double dqk = (double)(c->qk_nope_head_dim + c->qk_rope_head_dim), R = (double)c->kv_lora_rank;
    double attn = c->q_lora_rank ? d * c->q_lora_rank + c->q_lora_rank + (double)c->q_lora_rank * H * dqk
                                 : d * H * dqk;
    attn += d * (R + c->qk_rope_head_dim) + R + R * H * (c->qk_nope_head_dim + c->v_head_dim) +
            H * c->v_head_dim * d;
    const double expert = 3 * d * (double)c->moe_intermediate_size, dense = 3 * d * (double)c->intermediate_size;
    double t = 2 * (double)c->vocab_size * d * (c->tie_word_embeddings ? 0.5 : 1) + d, a = t;
    for (size_t l = 0; l < c->num_hidden_layers; l++) {
        double base = attn + 2 * d; /* + input and post-attention norms */
        t += base, a += base;
        if (!clnpu_model_config_is_moe(c, l)) {
            t += dense, a += dense;
            continue;
        }
        double router = (double)c->n_routed_experts * d + (double)c->n_routed_experts;
        double post = c->post_mlp_layernorm ? d : 0;
        t += router + post + expert * (double)(c->n_routed_experts + c->n_shared_experts);
        a += router + post + expert * (double)(c->num_experts_per_tok + c->n_shared_experts);
    }
    if (total) *total = t;
    if (active) *active = a;
}
