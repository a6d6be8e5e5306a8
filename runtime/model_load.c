/* Building a model on a device: weights from a checkpoint (or seeded random ones), the paged
 * latent cache, and activation buffers reused by every layer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/checked.h"
#include "../common/error.h"
#include "gemm_internal.h"
#include "../common/hash.h"
#include "model_fp8.h"
#include "latent_cache.h"
#include "model_internal.h"
#include "tp.h"

typedef struct loader {
    const clnpu_checkpoint *ck;
    const clnpu_model_options *opt;
    void **allocs; /* host arrays to free once uploaded */
    size_t nallocs, cap;
    clnpu_model_weight_stats *stats; /* what the GEMM weights hold, by dtype */
} loader;

static void *keep(loader *L, void *p)
{
    if (!p) return NULL;
    if (L->nallocs == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 64;
        void **n = realloc(L->allocs, cap * sizeof *n);
        if (!n) {
            free(p);
            return NULL;
        }
        L->allocs = n, L->cap = cap;
    }
    return L->allocs[L->nallocs++] = p;
}

static void release_host(loader *L)
{
    for (size_t i = 0; i < L->nallocs; i++) free(L->allocs[i]);
    L->nallocs = 0;
}

/* Seeded per-name random numbers so a random model is the same on every run and device. */
static uint64_t name_seed(const loader *L, const char *name)
{
    return clnpu_fnv1a(CLNPU_FNV_OFFSET ^ L->opt->seed, name, strlen(name)) | 1;
}

static float rnd_uniform(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (float)((*s >> 40) / 16777216.0) * 2.0f - 1.0f;
}

/* The first element of a bf16 / f16 / f32 array that is NaN or Inf (all exponent bits set), or
 * SIZE_MAX: a bit test, so it costs one pass over the bytes. */
static size_t first_nonfinite(clnpu_dtype dt, const void *data, size_t count)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < count; i++) {
        if (dt == CLNPU_DTYPE_F32) {
            uint32_t b;
            memcpy(&b, p + 4 * i, 4);
            if ((b & 0x7f800000u) == 0x7f800000u) return i;
        } else {
            uint16_t b;
            memcpy(&b, p + 2 * i, 2);
            const uint16_t mask = dt == CLNPU_DTYPE_F16 ? 0x7c00 : 0x7f80;
            if ((b & mask) == mask) return i;
        }
    }
    return SIZE_MAX;
}

/* --check-weights: refuse a stored matrix holding NaN or Inf, naming the tensor and the element. */
static clnpu_status check_finite(const loader *L, const char *name, const clnpu_weight_desc *d, const char *file)
{
    if (!L->opt->check_weights) return CLNPU_OK;
    const size_t at = first_nonfinite(d->dtype, d->data, d->n * d->k);
    if (at == SIZE_MAX) return CLNPU_OK;
    const float v = clnpu_weight_desc_element(d, at / d->k, at % d->k);
    return clnpu_fail(CLNPU_ERR_PARSE, "%s: element %zu (row %zu, column %zu) is %s (%s)", name, at, at / d->k,
                      at % d->k, isinf(v) ? "infinite" : "NaN", file);
}

/* A stored matrix must be a weight dtype this loader reads (integer and fp8 tensors need scales). */
static clnpu_status check_weight_dtype(const char *name, const clnpu_tensor_info *t)
{
    if (t->dtype == CLNPU_DTYPE_BF16 || t->dtype == CLNPU_DTYPE_F16 || t->dtype == CLNPU_DTYPE_F32) return CLNPU_OK;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: dtype %s is not a weight dtype here (bf16, f16, f32) (%s)", name,
                      clnpu_dtype_name(t->dtype), t->file);
}

/* Convert a weight to the requested --weights format (int8 per group of 128, or fp8 blocks). */
static clnpu_status requantize(loader *L, const char *name, clnpu_weight_desc *out)
{
    const size_t n = out->n, k = out->k;
    if ((int)out->dtype != L->opt->weights &&
        (L->opt->weights == CLNPU_DTYPE_I8 || L->opt->weights == CLNPU_DTYPE_FP8_E4M3)) {
        float *f = malloc(n * k * sizeof *f);
        if (!f) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for %s", name);
        clnpu_status st = clnpu_weight_desc_to_f32(out, f); /* failing, f would be uninitialised */
        if (st) {
            free(f);
            return clnpu_fail_context(st, "%s", name);
        }
        void *q = keep(L, malloc(n * k));
        if (L->opt->weights == CLNPU_DTYPE_I8) {
            float *sc = keep(L, malloc(n * ((k + 127) / 128) * sizeof *sc));
            st = q && sc ? clnpu_quantize_i8(f, n, k, 128, q, sc) : CLNPU_ERR_OUT_OF_MEMORY;
            *out = (clnpu_weight_desc){CLNPU_DTYPE_I8, n, k, q, sc, 128};
        } else {
            float *sc = keep(L, malloc(((n + 127) / 128) * ((k + 127) / 128) * sizeof *sc));
            st = q && sc ? clnpu_quantize_fp8(f, n, k, q, sc) : CLNPU_ERR_OUT_OF_MEMORY;
            *out = (clnpu_weight_desc){CLNPU_DTYPE_FP8_E4M3, n, k, q, sc, 0};
        }
        free(f);
        if (st) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "quantising %s failed", name);
    }
    if (L->stats) clnpu_model_weight_stats_add(L->stats, out);
    return CLNPU_OK;
}

/* A matrix [n, k] as stored (or seeded random bf16). */
static clnpu_status get_raw(loader *L, const char *name, size_t n, size_t k, clnpu_weight_desc *out)
{
    memset(out, 0, sizeof *out);
    out->n = n, out->k = k;
    /* every host copy of this matrix (f32 for quantising, a column slice) is at most n * k * 4
     * bytes: checked once here, so none of those products can wrap */
    size_t bytes;
    if (!clnpu_size_mul3(n, k, 4, &bytes))
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "%s: a %zu x %zu matrix does not fit in memory", name, n, k);
    if (L->ck) {
        const clnpu_tensor_info *t;
        int64_t shape[2] = {(int64_t)n, (int64_t)k};
        clnpu_status st = clnpu_checkpoint_require(L->ck, name, 2, shape, &t);
        if (st) return st;
        if (t->dtype == CLNPU_DTYPE_FP8_E4M3) { /* DeepSeek-V3's FP8 layout: fp8 + block scales as they are */
            float *sc;
            st = clnpu_fp8_scales_load(L->ck, name, n, k, &sc);
            if (st) return st;
            out->scales = keep(L, sc);
            if (!out->scales) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for %s", name);
        } else if (t->dtype != CLNPU_DTYPE_BF16 && t->dtype != CLNPU_DTYPE_F16 && t->dtype != CLNPU_DTYPE_F32) {
            return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: dtype %s is not a weight dtype here (bf16, f16, f32, fp8) (%s)",
                              name, clnpu_dtype_name(t->dtype), t->file);
        }
        out->dtype = t->dtype, out->data = t->data;
        st = check_finite(L, name, out, t->file);
        if (st) return st;
    } else {
        uint16_t *w = keep(L, malloc(n * k * 2));
        if (!w) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for %s", name);
        uint64_t s = name_seed(L, name);
        const float a = 1.0f / sqrtf((float)k); /* keeps activations O(1) through the layers */
        for (size_t i = 0; i < n * k; i++) w[i] = clnpu_f32_to_bf16(a * rnd_uniform(&s));
        out->dtype = CLNPU_DTYPE_BF16, out->data = w;
    }
    return CLNPU_OK;
}

/* A matrix [n, k] as a GEMM weight description, converted to the requested weight format. */
static clnpu_status get_mat(loader *L, const char *name, size_t n, size_t k, clnpu_weight_desc *out)
{
    clnpu_status st = get_raw(L, name, n, k, out);
    return st ? st : requantize(L, name, out);
}

/* Tensor parallel: rows [r0, r0 + rows) of a stored [n, k] matrix (a rank's output features:
 * its heads of q_b / kv_b, its slice of a gate or up projection). Sliced before quantising. */
static clnpu_status get_rows(loader *L, const char *name, size_t n, size_t k, size_t r0, size_t rows,
                             clnpu_weight_desc *out)
{
    clnpu_status st = get_raw(L, name, n, k, out);
    if (st) return st;
    if (out->dtype == CLNPU_DTYPE_FP8_E4M3 && (r0 || rows != n)) {
        st = clnpu_fp8_desc_rows(out, name, r0, rows);
        return st ? st : requantize(L, name, out);
    }
    out->data = (const char *)out->data + r0 * k * clnpu_dtype_size(out->dtype);
    out->n = rows;
    return requantize(L, name, out);
}

/* Columns [c0, c0 + cols) of a stored [n, k] matrix (a rank's input features: o_proj over its
 * heads, down over its slice of the MLP): copied, since the rows are strided (all of them: as
 * stored, no copy). */
static clnpu_status get_cols(loader *L, const char *name, size_t n, size_t k, size_t c0, size_t cols,
                             clnpu_weight_desc *out)
{
    clnpu_status st = get_raw(L, name, n, k, out);
    if (st || (c0 == 0 && cols == k)) return st ? st : requantize(L, name, out);
    if (out->dtype == CLNPU_DTYPE_FP8_E4M3) {
        void *w;
        float *s;
        st = clnpu_fp8_desc_cols(out, name, c0, cols, &w, &s);
        keep(L, w), keep(L, s);
        return st ? st : requantize(L, name, out);
    }
    const size_t es = clnpu_dtype_size(out->dtype);
    char *w = keep(L, malloc(n * cols * es));
    if (!w) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for %s", name);
    for (size_t i = 0; i < n; i++) memcpy(w + i * cols * es, (const char *)out->data + (i * k + c0) * es, cols * es);
    out->data = w, out->k = cols;
    return requantize(L, name, out);
}

/* A vector [n] in f32 (norm weights, router bias). Random: ones for norms (fill), small values
 * for biases. */
static clnpu_status get_vec(loader *L, const char *name, size_t n, float fill, float **out)
{
    float *v = keep(L, malloc(n * sizeof *v));
    if (!v) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for %s", name);
    if (L->ck) {
        const clnpu_tensor_info *t;
        int64_t shape[1] = {(int64_t)n};
        clnpu_status st = clnpu_checkpoint_require(L->ck, name, 1, shape, &t);
        if (st) return st;
        for (size_t i = 0; i < n; i++) {
            switch (t->dtype) {
            case CLNPU_DTYPE_F32: memcpy(&v[i], (const char *)t->data + 4 * i, 4); break;
            case CLNPU_DTYPE_BF16: { uint16_t b; memcpy(&b, (const char *)t->data + 2 * i, 2); v[i] = clnpu_bf16_to_f32(b); break; }
            case CLNPU_DTYPE_F16: { uint16_t b; memcpy(&b, (const char *)t->data + 2 * i, 2); v[i] = clnpu_f16_to_f32(b); break; }
            default: return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: dtype %s for a vector (%s)", name,
                                       clnpu_dtype_name(t->dtype), t->file);
            }
            /* a few numbers, always checked: a NaN norm weight poisons every token, a NaN router
             * bias silently changes which experts run */
            if (!isfinite(v[i]))
                return clnpu_fail(CLNPU_ERR_PARSE, "%s: element %zu is %s (%s)", name, i, isnan(v[i]) ? "NaN" : "infinite",
                                  t->file);
        }
    } else {
        uint64_t s = name_seed(L, name);
        for (size_t i = 0; i < n; i++) v[i] = isnan(fill) ? 0.01f * rnd_uniform(&s) : fill * (1 + 0.1f * rnd_uniform(&s));
    }
    *out = v;
    return CLNPU_OK;
}

static clnpu_status upload_vec(clnpu_device *dev, loader *L, const char *name, size_t n, clnpu_buffer **out)
{
    float *v;
    clnpu_status st = get_vec(L, name, n, 1.0f, &v);
    if (!st) st = clnpu_buffer_create(dev, n * 4, out);
    if (!st) st = clnpu_buffer_write(*out, 0, v, n * 4);
    return st;
}

static clnpu_status upload_mat(clnpu_device *dev, loader *L, const char *name, size_t n, size_t k, clnpu_weight **out)
{
    clnpu_weight_desc d;
    clnpu_status st = get_mat(L, name, n, k, &d);
    if (!st) st = clnpu_weight_upload(dev, &d, 1, out);
    return st ? clnpu_fail_context(st, "loading %s", name) : CLNPU_OK;
}

static clnpu_status upload_rows(clnpu_device *dev, loader *L, const char *name, size_t n, size_t k, size_t r0,
                                size_t rows, clnpu_weight **out)
{
    clnpu_weight_desc d;
    clnpu_status st = get_rows(L, name, n, k, r0, rows, &d);
    if (!st) st = clnpu_weight_upload(dev, &d, 1, out);
    return st ? clnpu_fail_context(st, "loading %s", name) : CLNPU_OK;
}

/* W_UK^T and W_UV per head from kv_b_proj [H * (nope + v), R], for the absorbed decode. Every
 * decode step streams them, so they keep kv_b's bytes where that is exact: bf16 kv_b gives bf16
 * copies (a transpose moves values, bf16 -> f32 -> bf16 is the identity); int8 kv_b gives W_UV
 * as kv_b's own rows and group scales (its K is kv_b's K). W_UK^T crosses int8 groups, so under
 * --weights int8 it is bf16: each element within 2^-9 of its dequantised int8 value (int8's own
 * step is 1/254 of the group's largest), half the bytes of f32. fp8, f16 and f32 kv_b: f32. */
static clnpu_status upload_absorbed(clnpu_model *m, loader *L, const clnpu_weight_desc *kvb, model_layer *ly)
{
    const size_t H = m->heads, R = m->cfg.kv_lora_rank, nope = m->cfg.qk_nope_head_dim,
                 vd = m->cfg.v_head_dim, blk = nope + vd;
    const bool b16 = kvb->dtype == CLNPU_DTYPE_BF16, i8 = kvb->dtype == CLNPU_DTYPE_I8;
    float *f = malloc(kvb->n * R * sizeof *f);
    float *ukt = keep(L, malloc(H * R * nope * sizeof *ukt)), *uv = keep(L, malloc(H * vd * R * sizeof *uv));
    uint16_t *ukt16 = b16 || i8 ? keep(L, malloc(H * R * nope * sizeof *ukt16)) : NULL;
    uint16_t *uv16 = b16 ? keep(L, malloc(H * vd * R * sizeof *uv16)) : NULL;
    clnpu_weight_desc *du = calloc(H, sizeof *du), *dv = calloc(H, sizeof *dv);
    clnpu_status st = f && ukt && uv && du && dv && (!b16 || uv16) && (!(b16 || i8) || ukt16)
                          ? clnpu_weight_desc_to_f32(kvb, f)
                          : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    /* scale floats per kv_b row (int8: [n][ceil(R / group_k)], or one per row) */
    const size_t srow = i8 && kvb->group_k ? (R + kvb->group_k - 1) / kvb->group_k : 1;
    for (size_t h = 0; !st && h < H; h++) {
        for (size_t c = 0; c < R; c++)
            for (size_t i = 0; i < nope; i++) ukt[(h * R + c) * nope + i] = f[(h * blk + i) * R + c];
        memcpy(uv + h * vd * R, f + (h * blk + nope) * R, vd * R * sizeof *f);
        du[h] = (clnpu_weight_desc){CLNPU_DTYPE_F32, R, nope, ukt + h * R * nope, NULL, 0};
        dv[h] = (clnpu_weight_desc){CLNPU_DTYPE_F32, vd, R, uv + h * vd * R, NULL, 0};
        if (b16) {
            for (size_t i = 0; i < R * nope; i++) ukt16[h * R * nope + i] = clnpu_f32_to_bf16(ukt[h * R * nope + i]);
            for (size_t i = 0; i < vd * R; i++) uv16[h * vd * R + i] = clnpu_f32_to_bf16(uv[h * vd * R + i]);
            du[h] = (clnpu_weight_desc){CLNPU_DTYPE_BF16, R, nope, ukt16 + h * R * nope, NULL, 0};
            dv[h] = (clnpu_weight_desc){CLNPU_DTYPE_BF16, vd, R, uv16 + h * vd * R, NULL, 0};
        } else if (i8) {
            for (size_t i = 0; i < R * nope; i++) ukt16[h * R * nope + i] = clnpu_f32_to_bf16(ukt[h * R * nope + i]);
            du[h] = (clnpu_weight_desc){CLNPU_DTYPE_BF16, R, nope, ukt16 + h * R * nope, NULL, 0};
            const size_t row = h * blk + nope;
            dv[h] = (clnpu_weight_desc){CLNPU_DTYPE_I8, vd, R, (const int8_t *)kvb->data + row * R,
                                        kvb->scales + row * srow, kvb->group_k};
        }
    }
    for (size_t h = 0; !st && L->stats && h < H; h++)
        clnpu_model_weight_stats_add(L->stats, &du[h]), clnpu_model_weight_stats_add(L->stats, &dv[h]);
    if (!st) st = clnpu_weight_upload(m->dev, du, H, &ly->uk_t);
    if (!st) st = clnpu_weight_upload(m->dev, dv, H, &ly->uv);
    free(f), free(du), free(dv);
    return st;
}

/* The shared expert(s), fused into one wider MLP of SI features: this rank's [s0, s0 + shared). */
static clnpu_status get_shared(clnpu_model *m, loader *L, size_t l, clnpu_weight_desc *g, clnpu_weight_desc *u,
                               clnpu_weight_desc *d)
{
    const size_t H = m->cfg.hidden_size, SI = m->cfg.moe_intermediate_size * m->cfg.n_shared_experts;
    char name[256];
    snprintf(name, sizeof name, "model.layers.%zu.mlp.shared_experts.gate_proj.weight", l);
    clnpu_status st = get_rows(L, name, SI, H, m->s0, m->shared, g);
    snprintf(name, sizeof name, "model.layers.%zu.mlp.shared_experts.up_proj.weight", l);
    if (!st) st = get_rows(L, name, SI, H, m->s0, m->shared, u);
    snprintf(name, sizeof name, "model.layers.%zu.mlp.shared_experts.down_proj.weight", l);
    if (!st) st = get_cols(L, name, H, SI, m->s0, m->shared, d);
    return st;
}

static clnpu_status load_post_mlp_norm(clnpu_model *m, loader *L, size_t l, model_layer *ly)
{
    char name[256];
    snprintf(name, sizeof name, "model.layers.%zu.post_mlp_layernorm.weight", l);
    if (L->ck && !clnpu_checkpoint_find(L->ck, name)) /* transformers 5 keeps it under mlp. */
        snprintf(name, sizeof name, "model.layers.%zu.mlp.post_mlp_layernorm.weight", l);
    return upload_vec(m->dev, L, name, m->cfg.hidden_size, &ly->post_mlp_norm);
}

/* A TP peer's part of a MoE layer: its slice of the shared expert (as the layer's dense MLP,
 * summed with rank 0's routed experts + slice), and the norm after the block. */
static clnpu_status load_moe_peer(clnpu_model *m, loader *L, size_t l, model_layer *ly)
{
    clnpu_weight_desc g, u, d;
    clnpu_status st = CLNPU_OK;
    if (m->cfg.n_shared_experts && m->shared) {
        st = get_shared(m, L, l, &g, &u, &d);
        if (!st) st = clnpu_weight_upload_swiglu(m->dev, &g, &u, 1, &ly->dense_gate_up);
        if (!st) st = clnpu_weight_upload(m->dev, &d, 1, &ly->dense_down);
    }
    if (!st && m->cfg.post_mlp_layernorm) st = load_post_mlp_norm(m, L, l, ly);
    return st;
}

/* For the loaders in other files (model_load_family.c): a matrix as a GEMM weight in the requested
 * format, a vector in f32 (fill: random norms' value; NaN: small random values). */
clnpu_status clnpu_loader_upload_mat(clnpu_model *m, struct loader *L, const char *name, size_t n, size_t k,
                                     clnpu_weight **out)
{
    return upload_mat(m->dev, L, name, n, k, out);
}

clnpu_status clnpu_loader_upload_rows(clnpu_model *m, struct loader *L, const char *name, size_t n, size_t k, size_t r0,
                                      size_t rows, clnpu_weight **out)
{
    return upload_rows(m->dev, L, name, n, k, r0, rows, out);
}

clnpu_status clnpu_loader_upload_vec(clnpu_model *m, struct loader *L, const char *name, size_t n, float fill,
                                     clnpu_buffer **out)
{
    float *v;
    clnpu_status st = get_vec(L, name, n, fill, &v);
    if (!st) st = clnpu_buffer_create(m->dev, n * 4, out);
    if (!st) st = clnpu_buffer_write(*out, 0, v, n * 4);
    return st ? clnpu_fail_context(st, "loading %s", name) : CLNPU_OK;
}

static clnpu_status load_moe(clnpu_model *m, loader *L, size_t l, model_layer *ly, bool norm)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t E = c->n_routed_experts, H = c->hidden_size, I = c->moe_intermediate_size;
    char name[256];
    clnpu_weight_desc *g = calloc(E, sizeof *g), *u = calloc(E, sizeof *u), *d = calloc(E, sizeof *d);
    clnpu_weight_desc sg = {0}, su = {0}, sd = {0}, router;
    float *bias = NULL;
    clnpu_status st = g && u && d ? CLNPU_OK : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    snprintf(name, sizeof name, "model.layers.%zu.mlp.experts.gate_up_proj", l);
    const clnpu_tensor_info *fused = L->ck ? clnpu_checkpoint_find(L->ck, name) : NULL;
    if (!st && fused) {
        /* Fused layout: gate_up [E, 2I, H] (gate rows first), down [E, H, I]; no copies. */
        int64_t s3[3] = {(int64_t)E, (int64_t)(2 * I), (int64_t)H};
        const clnpu_tensor_info *gu, *dn;
        st = clnpu_checkpoint_require(L->ck, name, 3, s3, &gu);
        snprintf(name, sizeof name, "model.layers.%zu.mlp.experts.down_proj", l);
        int64_t d3[3] = {(int64_t)E, (int64_t)H, (int64_t)I};
        if (!st) st = clnpu_checkpoint_require(L->ck, name, 3, d3, &dn);
        char gname[256];
        snprintf(gname, sizeof gname, "model.layers.%zu.mlp.experts.gate_up_proj", l);
        if (!st) st = check_weight_dtype(gname, gu);
        if (!st) st = check_weight_dtype(name, dn);
        /* each tensor is stepped with its own element size: the two may differ */
        const size_t ges = st ? 0 : clnpu_dtype_size(gu->dtype), des = st ? 0 : clnpu_dtype_size(dn->dtype);
        for (size_t e = 0; !st && e < E; e++) {
            g[e] = (clnpu_weight_desc){gu->dtype, I, H, (const char *)gu->data + e * 2 * I * H * ges, NULL, 0};
            u[e] = (clnpu_weight_desc){gu->dtype, I, H, (const char *)gu->data + (e * 2 + 1) * I * H * ges, NULL, 0};
            d[e] = (clnpu_weight_desc){dn->dtype, H, I, (const char *)dn->data + e * H * I * des, NULL, 0};
            st = check_finite(L, gname, &g[e], gu->file);
            if (!st) st = check_finite(L, gname, &u[e], gu->file);
            if (!st) st = check_finite(L, name, &d[e], dn->file);
            if (!st) st = requantize(L, gname, &g[e]);
            if (!st) st = requantize(L, gname, &u[e]);
            if (!st) st = requantize(L, name, &d[e]);
        }
    } else {
        for (size_t e = 0; !st && e < E; e++) {
            snprintf(name, sizeof name, "model.layers.%zu.mlp.experts.%zu.gate_proj.weight", l, e);
            st = get_mat(L, name, I, H, &g[e]);
            snprintf(name, sizeof name, "model.layers.%zu.mlp.experts.%zu.up_proj.weight", l, e);
            if (!st) st = get_mat(L, name, I, H, &u[e]);
            snprintf(name, sizeof name, "model.layers.%zu.mlp.experts.%zu.down_proj.weight", l, e);
            if (!st) st = get_mat(L, name, H, I, &d[e]);
        }
    }
    const bool shared = c->n_shared_experts && m->shared;
    if (!st && shared) st = get_shared(m, L, l, &sg, &su, &sd); /* this TP rank's slice */
    snprintf(name, sizeof name, "model.layers.%zu.mlp.gate.weight", l);
    if (!st) {
        loader raw = *L; /* the router stays in the checkpoint dtype, widened to f32 */
        clnpu_model_options o = *L->opt;
        o.weights = -1;
        raw.opt = &o;
        st = get_mat(&raw, name, E, H, &router);
        L->allocs = raw.allocs, L->nallocs = raw.nallocs, L->cap = raw.cap;
    }
    snprintf(name, sizeof name, "model.layers.%zu.mlp.gate.e_score_correction_bias", l);
    if (!st) st = get_vec(L, name, E, NAN, &bias);
    if (!st) {
        clnpu_moe_config mc = {E, c->n_group, c->topk_group, c->num_experts_per_tok, c->norm_topk_prob,
                               (float)c->routed_scaling_factor, c->attn_output_gate /* A.X K2's rule */};
        clnpu_moe_weights w = {router, bias, g, u, d, shared ? &sg : NULL, shared ? &su : NULL, shared ? &sd : NULL};
        st = m->opt.ep_count ? clnpu_moe_block_create_sharded(m->dev, &mc, &w, m->opt.max_tokens, m->opt.ep_shards,
                                                              m->opt.ep_count, &ly->moe)
                             : clnpu_moe_block_create(m->dev, &mc, &w, m->opt.max_tokens, &ly->moe);
        if (!st) clnpu_moe_block_set_tag(ly->moe, l);
    }
    free(g), free(u), free(d);
    if (!st && norm && c->post_mlp_layernorm) st = load_post_mlp_norm(m, L, l, ly);
    return st;
}

/* q_a and kv_a read the same normed input: one matrix [q_lora + R + DR, d], q_a's rows then
 * kv_a's, is one GEMV per decode step instead of two (a launch fewer, and a wider GEMV streams
 * nearer the memory's rate). Their outputs sit side by side in m->cq (model_forward.c). Not for
 * the sparse family (its own forward), nor where one packed weight cannot hold both: other
 * dtypes or quantisation groups, or fp8 blocks across the seam (q_lora not a multiple of 128). */
/* *out_done: q_a and kv_a are loaded (joined or not); else load_layer loads them. */
static clnpu_status upload_qkv_a(clnpu_model *m, loader *L, size_t l, model_layer *ly, bool *out_done)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t d = c->hidden_size, nq = c->q_lora_rank, nk = m->lat;
    char qn[256], kn[256];
    snprintf(qn, sizeof qn, "model.layers.%zu.self_attn.q_a_proj.weight", l);
    snprintf(kn, sizeof kn, "model.layers.%zu.self_attn.kv_a_proj_with_mqa.weight", l);
    *out_done = false;
    if (m->fam || !nq) return CLNPU_OK;
    clnpu_weight_desc q, k;
    clnpu_status st = get_mat(L, qn, nq, d, &q);
    if (!st) st = get_mat(L, kn, nk, d, &k);
    if (st) return clnpu_fail_context(st, "loading %s and %s", qn, kn);
    if (!clnpu_weight_desc_stackable(&q, &k)) {
        st = clnpu_weight_upload(m->dev, &q, 1, &ly->q_a);
        if (!st) st = clnpu_weight_upload(m->dev, &k, 1, &ly->kv_a);
        *out_done = !st;
        return st ? clnpu_fail_context(st, "loading %s and %s", qn, kn) : CLNPU_OK;
    }
    const size_t ns = clnpu_weight_desc_stack_scales(&q, &k);
    void *w = keep(L, malloc((nq + nk) * d * clnpu_dtype_size(q.dtype)));
    float *s = ns ? keep(L, malloc(ns * sizeof *s)) : NULL;
    if (!w || (ns && !s)) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for %s", qn);
    clnpu_weight_desc both;
    clnpu_weight_desc_stack(&q, &k, w, s, &both);
    st = clnpu_weight_upload(m->dev, &both, 1, &ly->qkv_a);
    *out_done = !st;
    return st ? clnpu_fail_context(st, "loading %s and %s", qn, kn) : CLNPU_OK;
}

static clnpu_status load_layer(clnpu_model *m, loader *L, size_t l)
{
    const clnpu_model_config *c = &m->cfg;
    model_layer *ly = &m->layers[l];
    /* H heads in all; this rank's are [h0, h0 + Hl) (all of them without tensor parallelism):
     * q_b and kv_b by rows, o by columns; q_a, kv_a and the latent cache are whole on every rank */
    const size_t d = c->hidden_size, H = c->num_attention_heads, R = c->kv_lora_rank, Hl = m->heads, h0 = m->h0;
    const size_t vd = c->v_head_dim, blk = c->qk_nope_head_dim + vd;
    char name[256];
#define NAME(fmt) (snprintf(name, sizeof name, "model.layers.%zu." fmt, l), name)
    /* A.X K2's gated norms keep their RMSNorm weight under .norm (input: every layer; post: MoE layers) */
    const bool gin = c->gated_norm_rank, gpost = gin && clnpu_model_config_is_moe(c, l);
    clnpu_status st = upload_vec(m->dev, L, gin ? NAME("input_layernorm.norm.weight") : NAME("input_layernorm.weight"),
                                 d, &ly->in_norm);
    if (!st)
        st = upload_vec(m->dev, L, gpost ? NAME("post_attention_layernorm.norm.weight")
                                         : NAME("post_attention_layernorm.weight"), d, &ly->post_attn_norm);
    if (!st) st = clnpu_model_load_family_layer(m, L, l, ly); /* indexer, gates (model_load_family.c) */
    bool qkv = false;
    if (!st) st = upload_qkv_a(m, L, l, ly, &qkv);
    if (!st && c->q_lora_rank) {
        if (!qkv) st = upload_mat(m->dev, L, NAME("self_attn.q_a_proj.weight"), c->q_lora_rank, d, &ly->q_a);
        if (!st) st = upload_vec(m->dev, L, NAME("self_attn.q_a_layernorm.weight"), c->q_lora_rank, &ly->q_a_norm);
        if (!st && !c->attn_output_gate) /* (A.X K2: q_gate_proj instead) */
            st = upload_rows(m->dev, L, NAME("self_attn.q_b_proj.weight"), H * m->dqk, c->q_lora_rank, h0 * m->dqk,
                             Hl * m->dqk, &ly->q_b);
    } else if (!st) {
        st = upload_rows(m->dev, L, NAME("self_attn.q_proj.weight"), H * m->dqk, d, h0 * m->dqk, Hl * m->dqk, &ly->q_b);
    }
    if (!st && !qkv) st = upload_mat(m->dev, L, NAME("self_attn.kv_a_proj_with_mqa.weight"), m->lat, d, &ly->kv_a);
    if (!st) st = upload_vec(m->dev, L, NAME("self_attn.kv_a_layernorm.weight"), R, &ly->kv_a_norm);
    clnpu_weight_desc kvb, o;
    if (!st) st = get_rows(L, NAME("self_attn.kv_b_proj.weight"), H * blk, R, h0 * blk, Hl * blk, &kvb);
    if (!st) st = clnpu_weight_upload(m->dev, &kvb, 1, &ly->kv_b);
    if (!st) st = upload_absorbed(m, L, &kvb, ly);
    if (!st) st = get_cols(L, NAME("self_attn.o_proj.weight"), d, H * vd, h0 * vd, Hl * vd, &o);
    if (!st) st = clnpu_weight_upload(m->dev, &o, 1, &ly->o);
    if (!st && !clnpu_model_config_is_moe(c, l)) {
        /* the dense MLP's features [i0, i0 + inter): gate and up by rows, down by columns */
        clnpu_weight_desc g, u, dn;
        const size_t I = c->intermediate_size;
        st = get_rows(L, NAME("mlp.gate_proj.weight"), I, d, m->i0, m->inter, &g);
        if (!st) st = get_rows(L, NAME("mlp.up_proj.weight"), I, d, m->i0, m->inter, &u);
        if (!st) st = get_cols(L, NAME("mlp.down_proj.weight"), d, I, m->i0, m->inter, &dn);
        if (!st) st = clnpu_weight_upload_swiglu(m->dev, &g, &u, 1, &ly->dense_gate_up);
        if (!st) st = clnpu_weight_upload(m->dev, &dn, 1, &ly->dense_down);
    } else if (!st) { /* the MoE block (router, routed experts) on rank 0; the shared expert split */
        st = m->tp_rank || m->replica ? load_moe_peer(m, L, l, ly) : load_moe(m, L, l, ly, true);
        /* a TP peer or another replica in its own process also serves its expert shard: a block
         * for that alone */
        if (!st && (m->tp_rank || m->replica) && m->serve_shard) st = load_moe(m, L, l, ly, false);
    }
#undef NAME
    if (!st)
        st = clnpu_buffer_create(m->dev, m->pages * m->opt.page_size *
                                 clnpu_latent_cache_row_bytes(m->opt.latent_cache, m->cfg.kv_lora_rank, m->cfg.qk_rope_head_dim),
                                 &ly->cache);
    return st ? clnpu_fail_context(st, "layer %zu", l) : CLNPU_OK;
}

clnpu_model_options clnpu_model_options_default(void)
{
    clnpu_model_options o = {4, 0, 512, 16, -1, 0x5eed, false, false, 0, (size_t)-1, true, true, NULL, 0, false, CLNPU_DTYPE_F32, 0,
                             false};
    return o;
}

static void destroy_layer(model_layer *ly)
{
    clnpu_model_family_destroy_layer(ly);
    clnpu_buffer *bs[] = {ly->in_norm, ly->post_attn_norm, ly->q_a_norm, ly->kv_a_norm, ly->post_mlp_norm, ly->cache};
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) clnpu_buffer_destroy(bs[i]);
    clnpu_weight *ws[] = {ly->q_a, ly->qkv_a, ly->q_b, ly->kv_a, ly->kv_b, ly->uk_t, ly->uv, ly->o, ly->dense_gate_up, ly->dense_down};
    for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) clnpu_weight_destroy(ws[i]);
    clnpu_moe_block_destroy(ly->moe);
}

void clnpu_model_destroy(clnpu_model *m)
{
    if (!m) return;
    for (size_t r = 1; m->peers && r < m->tp_size; r++) clnpu_model_destroy(m->peers[r - 1]);
    if (m->peers) clnpu_tp_group_destroy(m->tp);
    free(m->peers);
    for (size_t l = 0; m->layers && l < m->cfg.num_hidden_layers; l++) destroy_layer(&m->layers[l]);
    free(m->layers);
    clnpu_buffer *bs[] = {m->embed, m->final_norm, m->block_table_dev, m->h, m->a, m->cq, m->q, m->kv0, m->attn,
                          m->mlp, m->mlp_h, m->logits, m->ids, m->pos, m->seqs, m->latent, m->kvfull, m->kfull,
                          m->q_abs, m->z, m->qpe, m->lens, m->sampled, m->step_bt, m->stepbuf, m->nonfinite}; /* views before their parent */
    for (size_t i = 0; i < sizeof bs / sizeof bs[0]; i++) clnpu_buffer_destroy(bs[i]);
    clnpu_weight_destroy(m->lm_head);
    clnpu_model_family_destroy(m);
    clnpu_rope_table_destroy(m->rope);
    free(m->block_table), free(m->free_pages), free(m->page_refs), free(m->seq_len), free(m->step_host), free(m->step_bt_host);
    free(m->hidden), free(m->route_ids), free(m->route_w), free(m->logits_host);
    free(m);
}

static clnpu_status load_embedding(clnpu_model *m, loader *L);

static clnpu_status load_globals(clnpu_model *m, loader *L)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t V = c->vocab_size, d = c->hidden_size;
    clnpu_status st = CLNPU_OK;
    if (m->opt.embed) st = load_embedding(m, L);
    if (!st && m->opt.head) st = upload_vec(m->dev, L, "model.norm.weight", d, &m->final_norm);
    if (!st && m->opt.head) /* this rank's vocabulary rows */
        st = upload_rows(m->dev, L, c->tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight", V, d,
                         m->v0, m->vocab, &m->lm_head);
    if (!st && m->opt.head && m->tp_rank && !(m->logits_host = malloc(m->opt.max_tokens * m->vocab * sizeof(float))))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    return st;
}

static clnpu_status load_embedding(clnpu_model *m, loader *L)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t V = c->vocab_size, d = c->hidden_size;
    clnpu_weight_desc e;
    loader raw = *L; /* the embedding table is gathered, never multiplied: keep it as stored */
    clnpu_model_options o = *L->opt;
    o.weights = -1;
    raw.opt = &o;
    clnpu_status st = get_rows(&raw, "model.embed_tokens.weight", V, d, m->v0, m->vocab, &e); /* this rank's rows */
    L->allocs = raw.allocs, L->nallocs = raw.nallocs, L->cap = raw.cap;
    if (!st && e.dtype != CLNPU_DTYPE_BF16 && e.dtype != CLNPU_DTYPE_F32)
        st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "model.embed_tokens.weight: %s tables are not supported (bf16, f32)",
                        clnpu_dtype_name(e.dtype));
    if (!st) {
        const size_t bytes = m->vocab * d * clnpu_dtype_size(e.dtype);
        m->embed_dtype = e.dtype;
        st = clnpu_buffer_create(m->dev, bytes, &m->embed);
        if (!st) st = clnpu_buffer_write(m->embed, 0, e.data, bytes);
    }
    return st;
}

static clnpu_status alloc_activations(clnpu_model *m)
{
    const clnpu_model_config *c = &m->cfg;
    const size_t T = m->opt.max_tokens, S = m->opt.max_context, d = c->hidden_size, H = m->heads;
    const size_t R = c->kv_lora_rank, B = m->opt.max_sequences;
    size_t mlp = c->intermediate_size > c->moe_intermediate_size ? c->intermediate_size : c->moe_intermediate_size;
    if (mlp < d) mlp = d;
    /* 4-byte elements, x * y * z of them: multiplied with overflow checks (sizes from a config) */
    struct { clnpu_buffer **b; size_t x, y, z; } a[] = {
        {&m->h, T, d, 1}, {&m->a, T, d, 1}, {&m->cq, T, c->q_lora_rank ? c->q_lora_rank + m->lat : 1, 1}, /* q_a | kv_a */
        {&m->q, T, H, m->dqk}, {&m->kv0, T, m->lat, 1}, {&m->attn, T, H, c->v_head_dim},
        {&m->mlp, T, d, 1}, {&m->mlp_h, T, mlp, 1}, {&m->logits, m->opt.head ? T : 1, c->vocab_size, 1},
        {&m->latent, S, m->lat, 1}, {&m->kvfull, S, H, c->qk_nope_head_dim + c->v_head_dim},
        {&m->kfull, S, H, m->dqk}, {&m->q_abs, B, H, R}, {&m->z, B, H, R},
        {&m->qpe, B, H, c->qk_rope_head_dim}, {&m->sampled, T, 1, 1},
        {&m->block_table_dev, B, m->max_blocks, 1}, {&m->step_bt, B, m->max_blocks, 1},
    };
    /* A step's small inputs (token ids, positions, sequences, lengths) sit in one buffer, each
     * in an aligned slot seen as a buffer of its own, so a step uploads them in one write. */
    const size_t al = clnpu_buffer_sub_align(m->dev), n = T > B ? T : B;
    m->step_slot = (n * sizeof(int) + al - 1) / al * al;
    clnpu_status st = (m->step_host = malloc(4 * m->step_slot)) ? CLNPU_OK
                                                                : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st && !(m->step_bt_host = malloc(B * m->max_blocks * sizeof(int))))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st) st = clnpu_buffer_create(m->dev, 4 * m->step_slot, &m->stepbuf);
    const cl_int none = CL_INT_MAX;
    if (!st) st = clnpu_buffer_create(m->dev, sizeof none, &m->nonfinite);
    if (!st) st = clnpu_buffer_write(m->nonfinite, 0, &none, sizeof none);
    clnpu_buffer **slots[] = {&m->ids, &m->pos, &m->seqs, &m->lens};
    for (size_t i = 0; !st && i < 4; i++) st = clnpu_buffer_create_sub(m->stepbuf, i * m->step_slot, m->step_slot, slots[i]);
    for (size_t i = 0; !st && i < sizeof a / sizeof a[0]; i++) {
        size_t bytes;
        if (!clnpu_size_mul3(a[i].x, a[i].y, a[i].z, &bytes) || !clnpu_size_mul(bytes, 4, &bytes))
            st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "an activation of %zu x %zu x %zu floats does not fit in memory",
                            a[i].x, a[i].y, a[i].z);
        if (!st) st = clnpu_buffer_create(m->dev, bytes, a[i].b);
    }
    return st ? clnpu_fail_context(st, "allocating activations for %zu tokens per step, context %zu", T, S) : CLNPU_OK;
}

/* Which part of a stage a model is: tensor-parallel rank `rank` of `size` in data-parallel
 * attention replica `replica` of `replicas` (0 of 1 and 0 of 1: the whole model). */
typedef struct model_part {
    size_t rank, size, replica, replicas;
    struct clnpu_dp_group *dp;
    bool serve_shard; /* a TP peer holding the opt's expert shards to serve them */
} model_part;

static clnpu_status model_create(clnpu_device *dev, const clnpu_model_config *cfg, const clnpu_checkpoint *ck,
                                 const clnpu_model_options *opt, const model_part *part, clnpu_model **out)
{
    const size_t rank = part->rank, size = part->size;
    *out = NULL;
    clnpu_model *m = calloc(1, sizeof *m);
    if (!m) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    m->dev = dev;
    m->cfg = *cfg;
    m->opt = opt ? *opt : clnpu_model_options_default();
    const size_t H = cfg->num_attention_heads, I = cfg->intermediate_size;
    m->tp_rank = rank, m->tp_size = size;
    m->h0 = H * rank / size, m->heads = H * (rank + 1) / size - m->h0;
    m->i0 = I * rank / size, m->inter = I * (rank + 1) / size - m->i0;
    const size_t SI = cfg->moe_intermediate_size * cfg->n_shared_experts;
    m->s0 = SI * rank / size, m->shared = SI * (rank + 1) / size - m->s0;
    /* replicas share one MoE block (replica 0's first rank): its shared expert whole, for all
     * their rows */
    m->replica = part->replica, m->dp = part->dp, m->serve_shard = part->serve_shard;
    if (part->replicas > 1) m->s0 = 0, m->shared = rank || part->replica ? 0 : SI;
    m->v0 = cfg->vocab_size * rank / size, m->vocab = cfg->vocab_size * (rank + 1) / size - m->v0;
    if (!m->opt.max_context) m->opt.max_context = cfg->max_position_embeddings < 4096 ? cfg->max_position_embeddings : 4096;
    if (!m->opt.max_sequences) m->opt.max_sequences = 1;
    if (!m->opt.page_size) m->opt.page_size = 16;
    if (!m->opt.max_tokens) m->opt.max_tokens = 512;
    if (m->opt.max_tokens < m->opt.max_sequences) m->opt.max_tokens = m->opt.max_sequences;
    m->dqk = cfg->qk_nope_head_dim + cfg->qk_rope_head_dim;
    m->lat = cfg->kv_lora_rank + cfg->qk_rope_head_dim;
    m->scale = (float)clnpu_rope_softmax_scale(&cfg->rope, m->dqk);
    clnpu_status st = CLNPU_OK;
    /* sizes from the caller and the config, bounded before they are multiplied */
    if (m->opt.max_context > cfg->max_position_embeddings)
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "a context of %zu tokens is past the model's max_position_embeddings "
                        "(%zu)", m->opt.max_context, cfg->max_position_embeddings);
    else if (m->opt.max_sequences > 65536 || m->opt.max_tokens > ((size_t)1 << 24) || m->opt.page_size > 65536)
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "model options out of range: %zu sequences (at most 65536), %zu "
                        "tokens per step (2^24), pages of %zu rows (65536)", m->opt.max_sequences, m->opt.max_tokens,
                        m->opt.page_size);
    m->max_blocks = st ? 0 : (m->opt.max_context + m->opt.page_size - 1) / m->opt.page_size;
    const size_t table = m->max_blocks * m->opt.max_sequences; /* block-table entries */
    m->pages = table;
    if (m->opt.cache_pages && m->opt.cache_pages < m->pages) m->pages = m->opt.cache_pages;
    if (!st) st = clnpu_latent_cache_check(m->opt.latent_cache, "model");
    if (!st) {
        m->layers = calloc(cfg->num_hidden_layers, sizeof *m->layers);
        m->block_table = malloc((table ? table : 1) * sizeof *m->block_table);
        m->free_pages = malloc((m->pages ? m->pages : 1) * sizeof *m->free_pages);
        m->page_refs = calloc(m->pages ? m->pages : 1, sizeof *m->page_refs);
        m->seq_len = calloc(m->opt.max_sequences ? m->opt.max_sequences : 1, sizeof *m->seq_len);
        if (!m->layers || !m->block_table || !m->free_pages || !m->page_refs || !m->seq_len)
            st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    for (size_t i = 0; !st && i < m->opt.max_sequences * m->max_blocks; i++) m->block_table[i] = -1;
    for (size_t i = 0; !st && i < m->pages; i++) m->free_pages[i] = (int)(m->pages - 1 - i);
    m->nfree = m->pages;
    loader L = {ck, &m->opt, NULL, 0, 0, &m->wstats};
    if (!st) st = clnpu_rope_table_create(dev, &cfg->rope, m->opt.max_context, &m->rope);
    if (!st) st = alloc_activations(m);
    if (!st) st = clnpu_model_family_create(m); /* the newer members' buffers (model_load_family.c) */
    if (!st) st = load_globals(m, &L);
    release_host(&L);
    if (m->opt.layer_end > cfg->num_hidden_layers) m->opt.layer_end = cfg->num_hidden_layers;
    if (!st && m->opt.layer_begin > m->opt.layer_end)
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "stage layers [%zu, %zu) are empty or reversed", m->opt.layer_begin,
                        m->opt.layer_end);
    for (size_t l = m->opt.layer_begin; !st && l < m->opt.layer_end; l++) {
        if (m->opt.progress)
            fprintf(stderr, "\rclnpu: loading layer %zu/%zu (%.1f MiB on the device)", l + 1, m->opt.layer_end,
                    clnpu_device_memory_used(dev) / 1048576.0);
        st = load_layer(m, &L, l);
        release_host(&L);
    }
    if (m->opt.progress) fprintf(stderr, "\n");
    free(L.allocs);
    if (!st && m->opt.capture) {
        const size_t T = m->opt.max_tokens;
        size_t nh, nr; /* products of config sizes: checked (a wrapped count would under-allocate) */
        const bool fit = clnpu_size_mul3(cfg->num_hidden_layers + 2, T, cfg->hidden_size, &nh) &&
                         clnpu_size_mul3(cfg->num_hidden_layers, T, cfg->num_experts_per_tok, &nr);
        m->hidden = fit ? calloc(nh, sizeof *m->hidden) : NULL;
        m->route_ids = fit ? calloc(nr ? nr : 1, sizeof *m->route_ids) : NULL;
        m->route_w = fit ? calloc(nr ? nr : 1, sizeof *m->route_w) : NULL;
        if (!m->hidden || !m->route_ids || !m->route_w) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    if (st) {
        clnpu_model_destroy(m);
        return st;
    }
    *out = m;
    return CLNPU_OK;
}

clnpu_status clnpu_model_create(clnpu_device *dev, const clnpu_model_config *cfg, const clnpu_checkpoint *ck,
                                const clnpu_model_options *opt, clnpu_model **out)
{
    const model_part whole = {0, 1, 0, 1, NULL, false};
    return model_create(dev, cfg, ck, opt, &whole, out);
}

clnpu_status clnpu_model_create_tp(clnpu_device *const *devs, size_t tp, const clnpu_model_config *cfg,
                                   const clnpu_checkpoint *ck, const clnpu_model_options *opt, clnpu_model **out)
{
    return clnpu_model_create_replica(devs, tp, 0, 1, NULL, cfg, ck, opt, out);
}

clnpu_status clnpu_model_create_replica(clnpu_device *const *devs, size_t tp, size_t replica, size_t replicas,
                                        struct clnpu_dp_group *dp, const clnpu_model_config *cfg,
                                        const clnpu_checkpoint *ck, const clnpu_model_options *opt, clnpu_model **out)
{
    *out = NULL;
    if (!tp) tp = 1;
    if (tp > CLNPU_MAX_TP || tp > cfg->num_attention_heads || tp > cfg->intermediate_size)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "tensor parallel over %zu devices: at most %d, and the model has %zu "
                          "attention heads (each rank needs one)", tp, CLNPU_MAX_TP, cfg->num_attention_heads);
    clnpu_model_options ro = opt ? *opt : clnpu_model_options_default();
    if (replica) ro.capture = false, ro.ep_shards = NULL, ro.ep_count = 0; /* the MoE block is replica 0's */
    clnpu_model *m;
    const model_part p0 = {0, tp, replica, replicas, dp, false};
    clnpu_status st = model_create(devs[0], cfg, ck, &ro, &p0, &m);
    if (st) return tp > 1 ? clnpu_fail_context(st, "tensor-parallel rank 0") : st;
    if (tp == 1) {
        *out = m;
        return CLNPU_OK;
    }
    m->peers = calloc(tp - 1, sizeof *m->peers);
    if (!m->peers) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    /* the residual stream of a step's tokens crosses at the collectives */
    if (!st) st = clnpu_tp_group_create(tp, m->opt.max_tokens * cfg->hidden_size, &m->tp);
    clnpu_model_options po = m->opt; /* peers: no routed experts, nothing captured */
    po.capture = false, po.ep_shards = NULL, po.ep_count = 0;
    for (size_t r = 1; !st && r < tp; r++) {
        const model_part pr = {r, tp, replica, replicas, dp, false};
        st = model_create(devs[r], cfg, ck, &po, &pr, &m->peers[r - 1]);
        if (st) st = clnpu_fail_context(st, "tensor-parallel rank %zu", r);
        else m->peers[r - 1]->tp = m->tp;
    }
    if (st) {
        clnpu_model_destroy(m);
        return st;
    }
    *out = m;
    return CLNPU_OK;
}

size_t clnpu_model_device_bytes(const clnpu_model *m)
{
    return (size_t)clnpu_device_memory_used(m->dev);
}

clnpu_moe_block *clnpu_model_moe_block(clnpu_model *m, size_t layer)
{
    return m->layers && layer < m->cfg.num_hidden_layers ? m->layers[layer].moe : NULL;
}

clnpu_status clnpu_model_create_tp_rank(clnpu_device *dev, size_t rank, size_t tp, struct clnpu_tp_group *group,
                                       size_t replica, size_t replicas, struct clnpu_dp_group *dp,
                                       const clnpu_model_config *cfg, const clnpu_checkpoint *ck,
                                       const clnpu_model_options *opt, clnpu_model **out)
{
    *out = NULL;
    if (tp > CLNPU_MAX_TP || tp > cfg->num_attention_heads || rank >= tp)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "tensor-parallel rank %zu of %zu: the model has %zu attention heads",
                          rank, tp, cfg->num_attention_heads);
    clnpu_model_options o = opt ? *opt : clnpu_model_options_default();
    if (rank || replica) o.capture = false;
    const model_part part = {rank, tp, replica, replicas, dp, (rank || replica) && o.ep_count};
    clnpu_status st = model_create(dev, cfg, ck, &o, &part, out);
    if (!st) (*out)->tp = group;
    return st;
}
