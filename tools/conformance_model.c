/* Conformance tiers 2 and 3: GEMM/GEMV for every weight dtype and flash attention at A.X K1
 * shapes; MoE routing and dispatch, MLA decode, and the tiny A.X K1 against transformers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conformance.h"

static void case_gemm(conf_ctx *c, clnpu_dtype t, size_t m, size_t n, size_t k)
{
    char shape[48];
    snprintf(shape, sizeof shape, "%zux%zux%zu", m, n, k);
    float *w = malloc(n * k * sizeof *w), *deq = malloc(n * k * sizeof *deq), *x = malloc(m * k * 4),
          *y = malloc(m * n * 4), *sc = malloc((n + 127) / 128 * ((k + 127) / 128) * 4 + n * ((k + 127) / 128) * 4);
    void *q = malloc(n * k * 4);
    double *ref = malloc(m * n * sizeof *ref);
    for (size_t i = 0; i < n * k; i++) w[i] = conf_rand(c) * 0.5f;
    for (size_t i = 0; i < m * k; i++) x[i] = conf_rand(c);
    clnpu_weight_desc d = {t, n, k, q, NULL, 0};
    clnpu_status st = CLNPU_OK;
    if (t == CLNPU_DTYPE_F32) memcpy(q, w, n * k * 4);
    else if (t == CLNPU_DTYPE_BF16 || t == CLNPU_DTYPE_F16)
        for (size_t i = 0; i < n * k; i++)
            ((uint16_t *)q)[i] = t == CLNPU_DTYPE_BF16 ? clnpu_f32_to_bf16(w[i]) : clnpu_f32_to_f16(w[i]);
    else if (t == CLNPU_DTYPE_I8) d.scales = sc, d.group_k = 128, st = clnpu_quantize_i8(w, n, k, 128, q, sc);
    else d.scales = sc, st = clnpu_quantize_fp8(w, n, k, q, sc);
    if (!st) st = clnpu_weight_desc_to_f32(&d, deq);
    for (size_t i = 0; i < m; i++)
        for (size_t j = 0; j < n; j++) {
            double s = 0;
            for (size_t kk = 0; kk < k; kk++) s += (double)x[i * k + kk] * deq[j * k + kk];
            ref[i * n + j] = s;
        }
    double t0 = conf_now_ms();
    clnpu_weight *wt = NULL;
    clnpu_buffer *bx = NULL, *by = NULL;
    if (!st) st = clnpu_weight_upload(c->dev, &d, 1, &wt);
    if (!st) st = clnpu_buffer_create(c->dev, m * k * 4, &bx);
    if (!st) st = clnpu_buffer_write(bx, 0, x, m * k * 4);
    if (!st) st = clnpu_buffer_create(c->dev, m * n * 4, &by);
    float nan = NAN;
    if (!st) st = clnpu_buffer_fill(by, &nan, 4);
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = bx, a.y = by, a.m = m;
    if (!st) st = clnpu_gemm(c->dev, wt, 0, &a);
    if (!st) st = clnpu_buffer_read(by, 0, y, m * n * 4);
    /* K f32 products against the dequantised weights: u sqrt(K) + 4u for every dtype */
    conf_record(c, 2, m <= 8 ? "gemv" : "gemm", clnpu_dtype_name(t), shape, 0x1p-24 * sqrt((double)k) + 0x1p-22,
                st ? NAN : conf_rel(y, ref, m * n), conf_now_ms() - t0, st);
    clnpu_weight_destroy(wt);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(by);
    free(w), free(deq), free(x), free(y), free(sc), free(q), free(ref);
}

static void case_attention(conf_ctx *c, size_t T, size_t P, size_t H)
{
    const size_t dq = 192, dv = 128, S = P + T;
    float *q = malloc(T * H * dq * 4), *k = malloc(S * H * dq * 4), *v = malloc(S * H * dv * 4), *o = malloc(T * H * dv * 4);
    double *ref = malloc(T * H * dv * sizeof *ref), *s = malloc(S * sizeof *s);
    for (size_t i = 0; i < T * H * dq; i++) q[i] = conf_rand(c);
    for (size_t i = 0; i < S * H * dq; i++) k[i] = conf_rand(c);
    for (size_t i = 0; i < S * H * dv; i++) v[i] = conf_rand(c);
    const float scale = 0.0721688f;
    for (size_t t = 0; t < T; t++)
        for (size_t h = 0; h < H; h++) {
            double mx = -INFINITY, z = 0;
            for (size_t j = 0; j <= P + t; j++) {
                double a = 0;
                for (size_t d = 0; d < dq; d++) a += (double)q[(t * H + h) * dq + d] * k[(j * H + h) * dq + d];
                mx = fmax(mx, s[j] = a * scale);
            }
            for (size_t j = 0; j <= P + t; j++) z += (s[j] = exp(s[j] - mx));
            for (size_t d = 0; d < dv; d++) {
                double a = 0;
                for (size_t j = 0; j <= P + t; j++) a += s[j] * v[(j * H + h) * dv + d];
                ref[(t * H + h) * dv + d] = a / z;
            }
        }
    clnpu_status st = CLNPU_OK;
    double t0 = conf_now_ms();
    clnpu_buffer *bq = NULL, *bk = NULL, *bv = NULL, *bo = NULL;
    if (!st) st = clnpu_buffer_create(c->dev, T * H * dq * 4, &bq);
    if (!st) st = clnpu_buffer_write(bq, 0, q, T * H * dq * 4);
    if (!st) st = clnpu_buffer_create(c->dev, S * H * dq * 4, &bk);
    if (!st) st = clnpu_buffer_write(bk, 0, k, S * H * dq * 4);
    if (!st) st = clnpu_buffer_create(c->dev, S * H * dv * 4, &bv);
    if (!st) st = clnpu_buffer_write(bv, 0, v, S * H * dv * 4);
    if (!st) st = clnpu_buffer_create(c->dev, T * H * dv * 4, &bo);
    clnpu_attention_args a = {.q = {bq, 0, H * dq}, .k = {bk, 0, H * dq}, .v = {bv, 0, H * dv}, .o = {bo, 0, H * dv},
                              .q_head_stride = dq, .k_head_stride = dq, .v_head_stride = dv, .o_head_stride = dv,
                              .heads = H, .dqk = dq, .dv = dv, .tokens = T, .prefix = P, .scale = scale};
    if (!st) st = clnpu_flash_attention(c->dev, &a);
    if (!st) st = clnpu_buffer_read(bo, 0, o, T * H * dv * 4);
    char shape[64];
    snprintf(shape, sizeof shape, "T%zu P%zu H%zu 192/128", T, P, H);
    conf_record(c, 2, "flash_attention", "f32", shape, 2e-6 * sqrt((double)S) + 1e-6,
                st ? NAN : conf_rel(o, ref, T * H * dv), conf_now_ms() - t0, st);
    clnpu_buffer_destroy(bq), clnpu_buffer_destroy(bk), clnpu_buffer_destroy(bv), clnpu_buffer_destroy(bo);
    free(q), free(k), free(v), free(o), free(ref), free(s);
}

void conf_tier2(conf_ctx *c)
{
    const clnpu_dtype types[] = {CLNPU_DTYPE_F32, CLNPU_DTYPE_BF16, CLNPU_DTYPE_F16, CLNPU_DTYPE_I8, CLNPU_DTYPE_FP8_E4M3};
    /* decode: q_a_proj, kv_a_proj at M = 1 and 4; prefill-like and ragged */
    const size_t shapes[][3] = {{1, 1536, 7168}, {4, 576, 7168}, {17, 1000, 777}, {64, 512, 2048}};
    for (size_t t = 0; t < 5; t++)
        for (size_t s = 0; s < 4; s++) case_gemm(c, types[t], shapes[s][0], shapes[s][1], shapes[s][2]);
    case_attention(c, 129, 0, 2);
    case_attention(c, 37, 64, 3);
}

/* Routing with A.X K1's settings on random logits vs a float64 reference of the rule. */
static void case_routing(conf_ctx *c)
{
    const clnpu_moe_config cfg = {192, 8, 4, 8, true, 2.5f, false};
    const size_t T = 33, E = 192, K = 8, gs = 24;
    float *lg = malloc(T * E * 4), bias[192], *w = malloc(T * K * 4);
    int *ids = malloc(T * K * sizeof *ids);
    for (size_t i = 0; i < T * E; i++) lg[i] = conf_rand(c) * 4;
    for (size_t e = 0; e < E; e++) bias[e] = conf_rand(c) * 0.05f;
    clnpu_status st = CLNPU_OK;
    double t0 = conf_now_ms();
    clnpu_buffer *bl = NULL, *bb = NULL, *bi = NULL, *bw = NULL;
    if (!st) st = clnpu_buffer_create(c->dev, T * E * 4, &bl);
    if (!st) st = clnpu_buffer_write(bl, 0, lg, T * E * 4);
    if (!st) st = clnpu_buffer_create(c->dev, E * 4, &bb);
    if (!st) st = clnpu_buffer_write(bb, 0, bias, E * 4);
    if (!st) st = clnpu_buffer_create(c->dev, T * K * 4, &bi);
    if (!st) st = clnpu_buffer_create(c->dev, T * K * 4, &bw);
    if (!st) st = clnpu_moe_route(c->dev, (clnpu_view){bl, 0, E}, bb, T, &cfg, bi, bw);
    if (!st) st = clnpu_buffer_read(bi, 0, ids, T * K * 4);
    if (!st) st = clnpu_buffer_read(bw, 0, w, T * K * 4);
    double mism = 0, *rw = malloc(T * K * sizeof *rw);
    for (size_t t = 0; t < T && !st; t++) {
        double s[192], sb[192], gsc[8];
        int keep[8] = {0}, chosen[192] = {0};
        for (size_t e = 0; e < E; e++) s[e] = 1 / (1 + exp(-(double)lg[t * E + e])), sb[e] = (float)s[e] + bias[e];
        for (size_t g = 0; g < 8; g++) {
            double a = -INFINITY, b = -INFINITY;
            for (size_t e = g * gs; e < (g + 1) * gs; e++) {
                if (sb[e] > a) b = a, a = sb[e];
                else if (sb[e] > b) b = sb[e];
            }
            gsc[g] = a + b;
        }
        for (int r = 0; r < 4; r++) {
            int bg = -1;
            for (int g = 0; g < 8; g++)
                if (!keep[g] && (bg < 0 || gsc[g] > gsc[bg])) bg = g;
            keep[bg] = 1;
        }
        double sum = 0;
        for (size_t r = 0; r < K; r++) {
            int be = -1;
            for (size_t e = 0; e < E; e++)
                if (!chosen[e] && keep[e / gs] && (be < 0 || sb[e] > sb[be])) be = (int)e;
            chosen[be] = 1, sum += s[be];
        }
        size_t j = 0;
        for (size_t e = 0; e < E; e++)
            if (chosen[e]) {
                mism += ids[t * K + j] != (int)e;
                rw[t * K + j++] = s[e] / (sum + 1e-20) * 2.5;
            }
    }
    /* ids must match exactly; weights to f32 rounding */
    conf_record(c, 3, "moe_route_ids", "f32", "33 tok x 192 experts", 0, st ? NAN : mism, conf_now_ms() - t0, st);
    conf_record(c, 3, "moe_route_weights", "f32", "33 tok x top-8", 1e-6, st ? NAN : conf_rel(w, rw, T * K), 0, st);
    clnpu_buffer_destroy(bl), clnpu_buffer_destroy(bb), clnpu_buffer_destroy(bi), clnpu_buffer_destroy(bw);
    free(lg), free(w), free(ids), free(rw);
}

/* A decode step's cache, sequences and sizes, for mla_decode_ref. */
typedef struct mla_shape {
    const float *cache; /* pages of rows [c (R) | k_pe (DR)] */
    const int *bt, *lens;
    size_t B, H, R, DR, page, mb;
} mla_shape;

/* The absorbed MLA decode in float64: per sequence and head, z = softmax(q_a . c + q_pe . k_pe)
 * over the cached rows, times c. q_pe as double (rotated or not by the caller); s: scratch of the
 * longest sequence. */
static void mla_decode_ref(const mla_shape *m, const float *qa, const double *qpe, double *s, double *ref)
{
    const size_t H = m->H, R = m->R, DR = m->DR, row = R + DR;
    for (size_t b = 0; b < m->B; b++)
        for (size_t h = 0; h < H; h++) {
            double mx = -INFINITY, zs = 0;
            for (int t = 0; t < m->lens[b]; t++) {
                const float *r = m->cache + ((size_t)m->bt[b * m->mb + t / m->page] * m->page + t % m->page) * row;
                double v = 0;
                for (size_t d = 0; d < R; d++) v += (double)qa[(b * H + h) * R + d] * r[d];
                for (size_t d = 0; d < DR; d++) v += qpe[(b * H + h) * DR + d] * r[R + d];
                mx = fmax(mx, s[t] = v);
            }
            for (int t = 0; t < m->lens[b]; t++) zs += (s[t] = exp(s[t] - mx));
            for (size_t d = 0; d < R; d++) {
                double v = 0;
                for (int t = 0; t < m->lens[b]; t++)
                    v += s[t] * m->cache[((size_t)m->bt[b * m->mb + t / m->page] * m->page + t % m->page) * row + d];
                ref[(b * H + h) * R + d] = v / zs;
            }
        }
}

static void case_mla(conf_ctx *c)
{
    const size_t R = 512, DR = 64, H = 4, B = 3, page = 64, maxlen = 1000, mb = (maxlen + page - 1) / page;
    const int lens[3] = {1, 300, 1000};
    const size_t npages = B * mb, row = R + DR;
    float *cache = malloc(npages * page * row * 4), *qa = malloc(B * H * R * 4), *qp = malloc(B * H * DR * 4),
          *z = malloc(B * H * R * 4);
    int *bt = malloc(B * mb * sizeof *bt);
    for (size_t i = 0; i < npages * page * row; i++) cache[i] = conf_rand(c);
    for (size_t i = 0; i < B * H * R; i++) qa[i] = conf_rand(c) * 0.1f;
    for (size_t i = 0; i < B * H * DR; i++) qp[i] = conf_rand(c) * 0.1f;
    for (size_t i = 0; i < B * mb; i++) bt[i] = (int)((i * 7) % npages); /* scattered pages */
    const mla_shape sh = {cache, bt, lens, B, H, R, DR, page, mb};
    double *ref = malloc(B * H * R * sizeof *ref), *s = malloc(maxlen * sizeof *s),
           *qr = malloc(B * H * DR * sizeof *qr);
    for (size_t i = 0; i < B * H * DR; i++) qr[i] = qp[i];
    mla_decode_ref(&sh, qa, qr, s, ref);
    clnpu_status st = CLNPU_OK;
    double t0 = conf_now_ms();
    clnpu_buffer *bc = NULL, *bqa = NULL, *bqp = NULL, *bbt = NULL, *bl = NULL, *bz = NULL;
    struct { clnpu_buffer **b; const void *src; size_t bytes; } up[] = {
        {&bc, cache, npages * page * row * 4}, {&bqa, qa, B * H * R * 4}, {&bqp, qp, B * H * DR * 4},
        {&bbt, bt, B * mb * 4}, {&bl, lens, B * 4}, {&bz, NULL, B * H * R * 4}};
    for (size_t i = 0; i < 6 && !st; i++) {
        st = clnpu_buffer_create(c->dev, up[i].bytes, up[i].b);
        if (!st && up[i].src) st = clnpu_buffer_write(*up[i].b, 0, up[i].src, up[i].bytes);
    }
    clnpu_mla_decode_args a = {bqa, bqp, bc, page, bbt, mb, bl, maxlen, B, H, R, DR, 1.0f, bz, 0, 0, 0, CLNPU_DTYPE_F32, NULL, CLNPU_ROPE_INTERLEAVED};
    if (!st) st = clnpu_mla_decode(c->dev, &a);
    if (!st) st = clnpu_buffer_read(bz, 0, z, B * H * R * 4);
    conf_record(c, 3, "mla_decode", "f32", "3 seq (1/300/1000) x 4 heads 512+64", 2e-6 * sqrt((double)maxlen) + 1e-6,
                st ? NAN : conf_rel(z, ref, B * H * R), conf_now_ms() - t0, st);
    /* The same with q_pe rotated as the kernel reads it (a decode step's RoPE launch saved): A.X
     * K1's YaRN at each sequence's new position len - 1, the reference on q_pe rotated in float64. */
    const clnpu_rope_config rc = {DR, 10000.0, CLNPU_ROPE_YARN, 4.0, 32768, 32, 1, 1.0, 0.0};
    double inv[32], af = clnpu_rope_attention_factor(&rc);
    clnpu_rope_inv_freq(&rc, inv);
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < H; h++)
            for (size_t i = 0; i < DR / 2; i++) {
                const float *p = qp + (b * H + h) * DR;
                const double th = (lens[b] - 1) * inv[i];
                qr[(b * H + h) * DR + 2 * i] = af * (p[2 * i] * cos(th) - p[2 * i + 1] * sin(th));
                qr[(b * H + h) * DR + 2 * i + 1] = af * (p[2 * i + 1] * cos(th) + p[2 * i] * sin(th));
            }
    mla_decode_ref(&sh, qa, qr, s, ref);
    t0 = conf_now_ms();
    clnpu_rope_table *tab = NULL;
    const float nan = NAN;
    if (!st) st = clnpu_rope_table_create(c->dev, &rc, maxlen, &tab);
    if (!st) st = clnpu_buffer_fill(bz, &nan, sizeof nan);
    a.q_pe_rope = tab;
    if (!st) st = clnpu_mla_decode(c->dev, &a);
    if (!st) st = clnpu_buffer_read(bz, 0, z, B * H * R * 4);
    conf_record(c, 3, "mla_decode_rope", "f32", "3 seq (1/300/1000) x 4 heads 512+64, YaRN on q_pe",
                2e-6 * sqrt((double)maxlen) + 1e-6, st ? NAN : conf_rel(z, ref, B * H * R), conf_now_ms() - t0, st);
    clnpu_rope_table_destroy(tab);
    free(qr);
    for (size_t i = 0; i < 6; i++) clnpu_buffer_destroy(*up[i].b);
    free(cache), free(qa), free(qp), free(z), free(bt), free(ref), free(s);
}

/* The shipped tiny A.X K1 against the logits transformers computed from the same weights. */
static void case_model(conf_ctx *c)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/reference.safetensors", c->model_dir);
    clnpu_safetensors *ref = NULL;
    if (clnpu_safetensors_open(path, &ref)) {
        conf_unsupported(c, 3, "model_forward", "bf16", "tiny A.X K1", "reference not found (--model DIR)");
        return;
    }
    clnpu_model_config cfg;
    clnpu_checkpoint *ck = NULL;
    clnpu_model *m = NULL;
    snprintf(path, sizeof path, "%s/config.json", c->model_dir);
    double t0 = conf_now_ms();
    clnpu_status st = clnpu_model_config_load(path, &cfg);
    if (!st) st = clnpu_checkpoint_open(c->model_dir, &ck);
    const clnpu_tensor_info *ids = clnpu_safetensors_find(ref, "input_ids"), *lg = clnpu_safetensors_find(ref, "logits");
    if (!st && (!ids || !lg)) st = CLNPU_ERR_NOT_FOUND;
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 1, o.max_context = 64, o.max_tokens = 32;
    if (!st) st = clnpu_model_create(c->dev, &cfg, ck, &o, &m);
    const size_t T = ids ? (size_t)ids->shape[0] : 0, V = cfg.vocab_size;
    float *out = malloc((T ? T : 1) * V * 4);
    double *r = malloc((T ? T : 1) * V * sizeof *r);
    if (!st) st = clnpu_model_prefill(m, 0, ids->data, T, out);
    for (size_t i = 0; !st && i < T * V; i++) r[i] = ((const float *)lg->data)[i];
    /* the fixture's stated float32 tolerance */
    conf_record(c, 3, "model_forward", "bf16", "tiny A.X K1, 24 tokens", 1e-4, st ? NAN : conf_rel(out, r, T * V),
                conf_now_ms() - t0, st);
    free(out), free(r);
    clnpu_model_destroy(m);
    clnpu_checkpoint_close(ck);
    clnpu_safetensors_close(ref);
}

void conf_tier3(conf_ctx *c)
{
    case_routing(c);
    case_mla(c);
    conf_tier3_dsa(c); /* conformance_dsa.c */
    case_model(c);
}
