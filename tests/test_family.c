/* The newer members of the A.X K / DeepSeek family against transformers: DeepSeek-V3 in its
 * published FP8 layout (models/tiny-dsv3-fp8), DeepSeek-V3.2 and A.X K2 with the sparse-attention
 * indexer (models/tiny-dsv32, models/tiny-axk2); fixtures described in models/FAMILY.md. */
#include <cjson/cJSON.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../common/file_read.h"
#include "../runtime/model_fp8.h"
#include "test_util.h"

#define MODELS CLNPU_SOURCE_DIR "/models/"

/* Routed experts against the reference's expert_ids.L / expert_weights.L (sorted ids): all T rows,
 * or (tiny-dsv32, tiny-axk2) one row, the last position's, which transformers routed last. `last`:
 * the model's last forward was that position alone (a decode step); else the whole sequence. */
static void check_routing(const test_fixture *f, const clnpu_model *m, const char *what, bool last)
{
    const size_t K = f->cfg.num_experts_per_tok, T = f->T;
    int *ids = malloc(T * K * sizeof *ids);
    float *w = malloc(T * K * sizeof *w);
    size_t checked = 0;
    for (size_t l = 0; l < f->cfg.num_hidden_layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "expert_ids.%zu", l);
        const clnpu_tensor_info *t = clnpu_safetensors_find(f->ref, name);
        snprintf(name, sizeof name, "expert_weights.%zu", l);
        const clnpu_tensor_info *tw = clnpu_safetensors_find(f->ref, name);
        if (!t || !tw) continue;
        ck_assert_ok(clnpu_model_routing(m, l, ids, w));
        const size_t rows = (size_t)t->shape[0], r0 = rows == T ? 0 : last ? 0 : T - 1;
        ck_assert(rows == T || rows == 1);
        if (last && rows == T) continue;
        const int *rid = t->data;
        for (size_t i = 0; i < rows * K; i++)
            ck_assert_msg(ids[r0 * K + i] == rid[i], "%s layer %zu row %zu: expert %d, transformers %d", what, l,
                          r0 + i / K, ids[r0 * K + i], rid[i]);
        double num = 0, den = 0;
        for (size_t i = 0; i < rows * K; i++) {
            const double rv = ((const float *)tw->data)[i];
            num += (w[r0 * K + i] - rv) * (w[r0 * K + i] - rv), den += rv * rv;
        }
        ck_assert_msg(sqrt(num / den) <= 1e-5, "%s layer %zu: routing weights differ (%.3g)", what, l, sqrt(num / den));
        checked++;
    }
    ck_assert_msg(checked > 0 || !clnpu_safetensors_find(f->ref, "expert_ids.1"), "%s: no routing compared", what);
    free(ids), free(w);
}

/* Every position's logits by one prefill and by prefill of 1 + token-by-token decode; the hidden
 * states of the whole-sequence forward. */
static void check_fixture(const char *dir, const char *what, clnpu_model **out_m)
{
    test_fixture f;
    test_fixture_open(&f, dir);
    clnpu_model_options o = clnpu_model_options_default();
    o.capture = true;
    o.max_sequences = 2;
    o.max_context = 64;
    o.max_tokens = 64;
    clnpu_model *m;
    ck_assert_ok(clnpu_model_create(test_device(), &f.cfg, f.ck, &o, &m));
    const size_t T = f.T, V = f.cfg.vocab_size, d = f.cfg.hidden_size;
    const float *ref = clnpu_safetensors_find(f.ref, "logits")->data;
    float *lg = malloc(T * V * sizeof *lg), *h = malloc(T * d * sizeof *h);
    for (size_t i = 0; i < T * V; i++) lg[i] = NAN;
    ck_assert_ok(clnpu_model_prefill(m, 0, f.ids, T, lg));
    double e = test_rel(lg, ref, T * V);
    fprintf(stderr, "%s, one prefill of %zu tokens: logits rel error %.2e\n", what, T, e);
    ck_assert_msg(e <= 1e-4, "%s prefill logits: rel error %.3g > 1e-4", what, e);
    const float *hs = clnpu_safetensors_find(f.ref, "hidden_states")->data;
    const size_t ours[4] = {0, 1, 2, f.cfg.num_hidden_layers + 1};
    for (size_t i = 0; i < 4; i++) {
        ck_assert_ok(clnpu_model_hidden(m, ours[i], h));
        double eh = test_rel(h, hs + i * T * d, T * d);
        ck_assert_msg(eh <= 1e-4, "%s hidden state %zu: rel error %.3g", what, i, eh);
    }
    check_routing(&f, m, what, false);
    for (size_t i = 0; i < T * V; i++) lg[i] = NAN;
    ck_assert_ok(clnpu_model_prefill(m, 1, f.ids, 1, lg));
    for (size_t t = 1; t < T; t++) {
        size_t s = 1;
        ck_assert_ok(clnpu_model_decode(m, &s, f.ids + t, 1, lg + t * V));
    }
    check_routing(&f, m, what, true); /* the last decode step's routing, where the reference has one row */
    e = test_rel(lg, ref, T * V);
    fprintf(stderr, "%s, prefill 1 + decode %zu: logits rel error %.2e\n", what, T - 1, e);
    ck_assert_msg(e <= 1e-4, "%s decode logits: rel error %.3g > 1e-4", what, e);
    free(lg), free(h);
    test_fixture_close(&f);
    if (out_m) *out_m = m;
    else clnpu_model_destroy(m);
}

/* DeepSeek-V3's FP8 layout: the fp8 weights and their block scales are what the device holds
 * (1 byte a weight + 4 bytes per 128x128 block), and the logits match transformers run on the
 * dequantised weights. */
START_TEST(test_fp8_checkpoint)
{
    test_fixture f;
    test_fixture_open(&f, MODELS "tiny-dsv3-fp8");
    ck_assert(f.cfg.fp8_checkpoint);
    test_fixture_close(&f);
    clnpu_model *m;
    const double before = (double)clnpu_device_memory_used(test_device());
    check_fixture(MODELS "tiny-dsv3-fp8", "tiny DeepSeek-V3 fp8", &m);
    const double fp8_bytes = (double)clnpu_device_memory_used(test_device()) - before;
    clnpu_model_weight_stats s;
    clnpu_model_weight_stats_get(m, &s);
    /* q_a, q_b, kv_a, kv_b, o per layer, the dense MLP, 8 routed + 1 shared expert of 2 MoE layers */
    const double attn = 192.0 * 256 + 4 * 48 * 192 + 176.0 * 256 + 4 * 64 * 160 + 256.0 * 128;
    const double fp8 = 3 * attn + 3 * 384.0 * 256 + 2 * 9 * 3 * 160.0 * 256;
    ck_assert_msg(s.elements[CLNPU_DTYPE_FP8_E4M3] == fp8, "fp8 weights %.0f, expected %.0f",
                  s.elements[CLNPU_DTYPE_FP8_E4M3], fp8);
    ck_assert(s.scale_bytes > 0 && s.scale_bytes < fp8 / 100);
    /* the embedding, lm_head and routers as stored */
    ck_assert_msg(s.elements[CLNPU_DTYPE_BF16] == 2 * 512.0 * 256 + 2 * 8 * 256, "bf16 %.0f", s.elements[CLNPU_DTYPE_BF16]);
    clnpu_model_destroy(m);
    /* on the device: the same model with bf16 weights (random, same shapes and options) holds one
     * more byte for every fp8 weight, less the block scales (panel padding aside), and two bytes
     * fewer for each element of the decode's per-head copies of kv_b (W_UK^T, W_UV: bf16 from a
     * bf16 kv_b, f32 from an fp8 one) */
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(MODELS "tiny-dsv3-fp8/config.json", &cfg));
    clnpu_model_options o = clnpu_model_options_default();
    o.capture = true, o.max_sequences = 2, o.max_context = 64, o.max_tokens = 64;
    const double b0 = (double)clnpu_device_memory_used(test_device());
    ck_assert_ok(clnpu_model_create(test_device(), &cfg, NULL, &o, &m));
    const double bf16_bytes = (double)clnpu_device_memory_used(test_device()) - b0;
    clnpu_model_destroy(m);
    const double kvb = 4 * 64 * 160.0; /* H x (nope + v) x R per layer, 3 layers */
    const double saved = bf16_bytes - fp8_bytes, expect = fp8 - s.scale_bytes - 2 * 3 * kvb;
    fprintf(stderr, "tiny DeepSeek-V3 fp8 on the device: %.0f bytes, %.0f with bf16 weights (%.0f fp8 weights)\n", fp8_bytes,
            bf16_bytes, fp8);
    ck_assert_msg(fabs(saved - expect) < 0.05 * expect, "fp8 saves %.0f bytes, expected about %.0f", saved, expect);
    /* --weights fp8 keeps the checkpoint's fp8 blocks and quantises only what is stored wider
     * (lm_head); --weights int8 requantises everything from the stored values */
    test_fixture_open(&f, MODELS "tiny-dsv3-fp8");
    const size_t V = f.cfg.vocab_size, T = 6;
    float *lg[3];
    const int wt[3] = {-1, CLNPU_DTYPE_FP8_E4M3, CLNPU_DTYPE_I8};
    for (int i = 0; i < 3; i++) {
        o = clnpu_model_options_default();
        o.max_context = 16, o.max_tokens = 8, o.weights = wt[i];
        ck_assert_ok(clnpu_model_create(test_device(), &f.cfg, f.ck, &o, &m));
        lg[i] = malloc(T * V * sizeof *lg[i]);
        ck_assert_ok(clnpu_model_prefill(m, 0, f.ids, T, lg[i]));
        clnpu_model_weight_stats ws;
        clnpu_model_weight_stats_get(m, &ws);
        const double want = i == 0 ? fp8 : i == 1 ? fp8 + 512.0 * 256 : 0;
        ck_assert_msg(ws.elements[CLNPU_DTYPE_FP8_E4M3] == want, "weights %d: %.0f fp8 weights, expected %.0f", wt[i],
                      ws.elements[CLNPU_DTYPE_FP8_E4M3], want);
        clnpu_model_destroy(m);
    }
    for (int i = 1; i < 3; i++) {
        const double e = test_rel(lg[i], lg[0], T * V);
        ck_assert_msg(e > 0 && e < 0.05, "--weights %s on the fp8 checkpoint: rel error %.3g", i == 1 ? "fp8" : "int8", e);
    }
    for (int i = 0; i < 3; i++) free(lg[i]);
    test_fixture_close(&f);
}
END_TEST

/* Tensor parallel over two devices (the indexer and gated norms whole on each rank, the heads and
 * their gates split), two attention replicas with the experts over both, and two pipeline stages:
 * prefill and decode against transformers. */
static void check_tensor_parallel(const char *dir, const char *what)
{
    test_fixture f;
    test_fixture_open(&f, dir);
    const size_t T = f.T, V = f.cfg.vocab_size;
    const float *ref = clnpu_safetensors_find(f.ref, "logits")->data;
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 2, o.max_context = 64, o.max_tokens = 64;
    const size_t L = f.cfg.num_hidden_layers, E = f.cfg.n_routed_experts;
    clnpu_stage_spec tp2 = {.device = 0, .profile = "", .layer_begin = 0, .layer_end = L, .embed = true, .head = true, .tp = 2};
    clnpu_stage_spec dp2 = tp2;
    dp2.tp = 1, dp2.replicas = 2, dp2.ep_count = 2;
    size_t half[2][64];
    for (size_t i = 0; i < E; i++) half[i % 2][i / 2] = i;
    for (size_t i = 0; i < 2; i++)
        tp2.ep_devices[i] = dp2.ep_devices[i] = i, dp2.ep_experts[i] = half[i], dp2.ep_expert_counts[i] = E / 2;
    /* and two pipeline stages (layers [0, 2) with the embedding, [2, L) with the head) */
    clnpu_stage_spec pp2[2] = {tp2, tp2};
    pp2[0].tp = pp2[1].tp = 1, pp2[0].layer_end = pp2[1].layer_begin = 2, pp2[0].head = pp2[1].embed = false;
    pp2[1].device = pp2[1].ep_devices[0] = 1;
    const clnpu_stage_spec *cases[3] = {&tp2, &dp2, pp2};
    const char *names[3] = {"TP 2", "DP 2 x EP 2", "PP 2"};
    float *lg = malloc(T * V * sizeof *lg);
    for (int c = 0; c < 3; c++) {
        clnpu_pipeline *p;
        ck_assert_ok(clnpu_pipeline_create(&f.cfg, f.ck, cases[c], c == 2 ? 2 : 1, &o, &p));
        for (size_t i = 0; i < T * V; i++) lg[i] = NAN;
        ck_assert_ok(clnpu_pipeline_prefill(p, 0, f.ids, T, lg));
        double e = test_rel(lg, ref, T * V);
        ck_assert_msg(e <= 1e-4, "%s %s prefill: rel error %.3g", what, names[c], e);
        for (size_t i = 0; i < T * V; i++) lg[i] = NAN;
        ck_assert_ok(clnpu_pipeline_prefill(p, 1, f.ids, 1, lg));
        for (size_t t = 1; t < T; t++) {
            size_t s = 1;
            ck_assert_ok(clnpu_pipeline_decode(p, &s, f.ids + t, 1, lg + t * V));
        }
        e = test_rel(lg, ref, T * V);
        fprintf(stderr, "%s, %s, prefill 1 + decode %zu: logits rel error %.2e\n", what, names[c], T - 1, e);
        ck_assert_msg(e <= 1e-4, "%s %s decode: rel error %.3g", what, names[c], e);
        clnpu_pipeline_destroy(p);
    }
    free(lg);
    test_fixture_close(&f);
}

/* clnpu_model_memory_estimate counts what the sparse-attention model allocates besides weights (the
 * indexer's buffers and key cache included): a stage without layers, and the growth with the
 * context and with the tokens per step, on fresh devices (the weights cancel). */
static double model_used(const test_fixture *f, const clnpu_model_options *o)
{
    clnpu_device *d;
    clnpu_model *m;
    ck_assert_ok(clnpu_device_open(0, NULL, &d));
    ck_assert_ok(clnpu_model_create(d, &f->cfg, f->ck, o, &m));
    const double used = (double)clnpu_device_memory_used(d);
    clnpu_model_destroy(m);
    clnpu_device_close(d);
    return used;
}

static void check_memory_estimate(const char *dir)
{
    test_fixture f;
    test_fixture_open(&f, dir);
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 3, o.max_context = 40, o.max_tokens = 8;
    const double slack = 4 * 1024; /* the step-input slots' alignment, estimated from above */
    clnpu_model_memory a, b;
    clnpu_model_options e = o;
    e.layer_begin = e.layer_end = 0, e.embed = e.head = false;
    ck_assert_ok(clnpu_model_memory_estimate(&f.cfg, &e, 1, &a));
    double got = model_used(&f, &e);
    ck_assert_msg(got <= a.workspaces && got >= a.workspaces - slack, "%s workspaces: %.0f B allocated, %.0f estimated",
                  dir, got, a.workspaces);
    clnpu_model_options o2 = o;
    o2.max_context = 97;
    ck_assert_ok(clnpu_model_memory_estimate(&f.cfg, &o, 1, &a));
    ck_assert_ok(clnpu_model_memory_estimate(&f.cfg, &o2, 1, &b));
    const double L = (double)f.cfg.num_hidden_layers;
    double want = b.workspaces - a.workspaces + L * (b.cache_per_layer - a.cache_per_layer);
    got = model_used(&f, &o2) - model_used(&f, &o);
    ck_assert_msg(fabs(got - want) <= slack, "%s context 40 -> 97: %.0f B more allocated, %.0f estimated", dir, got, want);
    size_t moe = 0;
    for (size_t l = 0; l < f.cfg.num_hidden_layers; l++) moe += clnpu_model_config_is_moe(&f.cfg, l);
    o2 = o;
    o2.max_tokens = 21;
    ck_assert_ok(clnpu_model_memory_estimate(&f.cfg, &o2, 1, &b));
    want = b.workspaces - a.workspaces + b.logits - a.logits + (double)moe * (b.moe_scratch - a.moe_scratch);
    got = model_used(&f, &o2) - model_used(&f, &o);
    ck_assert_msg(fabs(got - want) <= slack, "%s tokens 8 -> 21: %.0f B more allocated, %.0f estimated", dir, got, want);
    test_fixture_close(&f);
}

START_TEST(test_family_memory_estimate)
{
    check_memory_estimate(MODELS "tiny-axk2");
    check_memory_estimate(MODELS "tiny-dsv32");
}
END_TEST

/* DeepSeek-V3.2: index_topk 10 of a 40-token prompt, grouped routing. */
START_TEST(test_dsv32_matches_transformers)
{
    clnpu_model *m;
    check_fixture(MODELS "tiny-dsv32", "tiny DeepSeek-V3.2", &m);
    /* two sequences past index_topk decoding together, in both orders: each row's indexer and
     * attention read its own sequence's pages */
    test_fixture f;
    test_fixture_open(&f, MODELS "tiny-dsv32");
    const size_t V = f.cfg.vocab_size;
    const float *ref = clnpu_safetensors_find(f.ref, "logits")->data;
    clnpu_model_reset(m, 0), clnpu_model_reset(m, 1);
    ck_assert_ok(clnpu_model_prefill(m, 0, f.ids, 17, NULL));
    ck_assert_ok(clnpu_model_prefill(m, 1, f.ids, 29, NULL));
    size_t seqs[2] = {0, 1}, rev[2] = {1, 0};
    int next[2] = {f.ids[17], f.ids[29]}, nrev[2] = {f.ids[30], f.ids[18]};
    float *two = malloc(2 * V * sizeof *two);
    ck_assert_ok(clnpu_model_decode(m, seqs, next, 2, two));
    ck_assert_msg(test_rel(two, ref + 17 * V, V) <= 1e-4 && test_rel(two + V, ref + 29 * V, V) <= 1e-4, "batched sparse decode");
    ck_assert_ok(clnpu_model_decode(m, rev, nrev, 2, two));
    ck_assert_msg(test_rel(two, ref + 30 * V, V) <= 1e-4 && test_rel(two + V, ref + 18 * V, V) <= 1e-4, "reversed batched decode");
    clnpu_model_destroy(m);
    /* bf16 and fp8 latent caches under the sparse attention (the indexer's keys stay f32): layer
     * 0, whose selection comes from the unperturbed embedding, is within bf16's 1e-2 (2e-3 here,
     * as A.X K1's) and fp8's 5e-2 (as A.X K1's 3e-2); past it the perturbed hidden states can flip
     * selections whose index margins are 4.6e-4, so the logits are not held to those bounds
     * (they come out ~5e-2 off with bf16) */
    for (int k = 0; k < 2; k++) {
        clnpu_model_options ob = clnpu_model_options_default();
        ob.max_context = 64, ob.max_tokens = 64, ob.capture = true;
        ob.latent_cache = k ? CLNPU_DTYPE_FP8_E4M3 : CLNPU_DTYPE_BF16;
        float *lb = malloc(f.T * V * sizeof *lb), *hb = malloc(f.T * f.cfg.hidden_size * sizeof *hb);
        for (size_t i = 0; i < f.T * V; i++) lb[i] = NAN;
        ck_assert_ok(clnpu_model_create(test_device(), &f.cfg, f.ck, &ob, &m));
        ck_assert_ok(clnpu_model_prefill(m, 0, f.ids, f.T, lb));
        ck_assert_ok(clnpu_model_hidden(m, 1, hb));
        const double eh = test_rel(hb, (const float *)clnpu_safetensors_find(f.ref, "hidden_states")->data +
                                      f.T * f.cfg.hidden_size, f.T * f.cfg.hidden_size);
        const double eb = test_rel(lb, ref, f.T * V);
        fprintf(stderr, "tiny DeepSeek-V3.2, %s latent cache: layer 0 rel error %.2e, logits %.2e\n",
                clnpu_dtype_name(ob.latent_cache), eh, eb);
        ck_assert_msg(eh <= (k ? 5e-2 : 1e-2) && eb < 0.5, "%s latent cache: layer 0 %.3g, logits %.3g",
                      clnpu_dtype_name(ob.latent_cache), eh, eb);
        clnpu_model_destroy(m);
        free(lb), free(hb);
    }
    /* the fixture tells sparse from dense: attending to every token (index_topk past the prompt)
     * gives other logits */
    f.cfg.index_topk = 1000;
    clnpu_model_options o = clnpu_model_options_default();
    o.max_context = 64, o.max_tokens = 64;
    ck_assert_ok(clnpu_model_create(test_device(), &f.cfg, f.ck, &o, &m));
    float *lg = malloc(f.T * V * sizeof *lg);
    ck_assert_ok(clnpu_model_prefill(m, 0, f.ids, f.T, lg));
    const double dense = test_rel(lg, ref, f.T * V);
    fprintf(stderr, "tiny DeepSeek-V3.2 with dense attention: logits rel error %.2e\n", dense);
    ck_assert_msg(dense > 1e-3, "dense attention matches the sparse reference (%.3g): the selection is not exercised", dense);
    free(two), free(lg);
    clnpu_model_destroy(m);
    test_fixture_close(&f);
    check_tensor_parallel(MODELS "tiny-dsv32", "tiny DeepSeek-V3.2");
}
END_TEST

/* A.X K2: index_topk 12 of 48, gated norms, the output gate, routing without groups. */
START_TEST(test_axk2_matches_transformers)
{
    clnpu_model *m;
    check_fixture(MODELS "tiny-axk2", "tiny A.X K2", &m);
    clnpu_model_destroy(m);
    /* the prompt in chunks of 13 (each chunk's queries over the cached prefix + themselves) */
    test_fixture f;
    test_fixture_open(&f, MODELS "tiny-axk2");
    clnpu_model_options o = clnpu_model_options_default();
    o.max_context = 64, o.max_tokens = 13;
    ck_assert_ok(clnpu_model_create(test_device(), &f.cfg, f.ck, &o, &m));
    const size_t V = f.cfg.vocab_size;
    float *lg = malloc(f.T * V * sizeof *lg);
    ck_assert_ok(clnpu_model_prefill(m, 0, f.ids, f.T, lg));
    const double e = test_rel(lg, clnpu_safetensors_find(f.ref, "logits")->data, f.T * V);
    ck_assert_msg(e <= 1e-4, "tiny A.X K2 prefill in chunks of 13: rel error %.3g", e);
    free(lg);
    clnpu_model_destroy(m);
    test_fixture_close(&f);
    check_tensor_parallel(MODELS "tiny-axk2", "tiny A.X K2");
}
END_TEST

/* The serving engine over A.X K2's sparse attention: 8 ragged prompts (most past index_topk, some
 * sharing a 20-id prefix, so the prefix cache shares their pages with the indexer's keys) into 3
 * sequence slots, steps of 16 rows mixing prompt chunks and decode rows: every request's greedy
 * ids equal its run alone. */
typedef struct fam_got {
    int ids[16];
    size_t n;
    clnpu_engine_finish fin;
    pthread_mutex_t mu;
} fam_got;

static bool fam_collect(void *user, const clnpu_engine_event *ev)
{
    fam_got *g = user;
    pthread_mutex_lock(&g->mu);
    if (ev->finish == CLNPU_ENGINE_FINISH_NONE && g->n < 16) g->ids[g->n++] = ev->token;
    if (ev->finish) g->fin = ev->finish;
    pthread_mutex_unlock(&g->mu);
    return false;
}

START_TEST(test_axk2_engine)
{
    test_fixture f;
    test_fixture_open(&f, MODELS "tiny-axk2");
    enum { NP = 8, NEWT = 6 };
    int prompts[NP][40], ref[NP][NEWT];
    size_t plen[NP];
    for (size_t p = 0; p < NP; p++) {
        plen[p] = 5 + test_rand_u64() % 35;
        for (size_t i = 0; i < plen[p]; i++)
            prompts[p][i] = p % 2 && i < 20 ? f.ids[i] : (int)(test_rand_u64() % f.cfg.vocab_size);
    }
    /* alone: prefill, then greedy decode on the device */
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 1, o.max_context = 64, o.max_tokens = 64;
    clnpu_model *m;
    ck_assert_ok(clnpu_model_create(test_device(), &f.cfg, f.ck, &o, &m));
    const size_t V = f.cfg.vocab_size;
    float *lg = malloc(40 * V * sizeof *lg);
    const clnpu_sampling greedy = {0};
    for (size_t p = 0; p < NP; p++) {
        clnpu_model_reset(m, 0);
        ck_assert_ok(clnpu_model_prefill(m, 0, prompts[p], plen[p], lg));
        const float *last = lg + (plen[p] - 1) * V;
        int best = 0;
        for (size_t v = 1; v < V; v++)
            if (last[v] > last[best]) best = (int)v;
        ref[p][0] = best;
        const size_t seq = 0;
        for (size_t i = 1; i < NEWT; i++)
            ck_assert_ok(clnpu_model_decode_sample(m, &seq, &ref[p][i - 1], 1, &greedy, i, &ref[p][i], NULL));
    }
    clnpu_model_destroy(m);
    free(lg);
    o.max_sequences = 3, o.max_tokens = 16;
    ck_assert_ok(clnpu_model_create(test_device(), &f.cfg, f.ck, &o, &m));
    clnpu_engine_options eo = clnpu_engine_options_default();
    eo.step_tokens = 16;
    clnpu_engine *e;
    ck_assert_ok(clnpu_engine_create(m, &eo, &e));
    static fam_got g[NP];
    for (size_t p = 0; p < NP; p++) {
        memset(&g[p], 0, sizeof g[p]);
        pthread_mutex_init(&g[p].mu, NULL);
        clnpu_engine_request rq = {prompts[p], plen[p], NEWT, greedy, NULL, 0, 0, fam_collect, &g[p]};
        ck_assert_ok(clnpu_engine_submit(e, &rq, NULL));
    }
    for (int it = 0; it < 1000; it++) {
        bool busy;
        ck_assert_ok(clnpu_engine_step(e, &busy));
        if (!busy) break;
    }
    clnpu_engine_stats st;
    clnpu_engine_get_stats(e, &st);
    for (size_t p = 0; p < NP; p++) {
        ck_assert_msg(g[p].fin == CLNPU_ENGINE_FINISH_LENGTH && g[p].n == NEWT, "request %zu: finish %d, %zu ids", p,
                      g[p].fin, g[p].n);
        for (size_t i = 0; i < NEWT; i++)
            ck_assert_msg(g[p].ids[i] == ref[p][i], "request %zu (prompt %zu ids) token %zu: %d, alone %d", p, plen[p], i,
                          g[p].ids[i], ref[p][i]);
    }
    fprintf(stderr, "tiny A.X K2 engine: %d requests identical to alone, %llu prompt tokens from the prefix cache\n", NP,
            (unsigned long long)st.cached_prompt_tokens);
    clnpu_engine_destroy(e);
    clnpu_model_destroy(m);
    test_fixture_close(&f);
}
END_TEST

/* Bad FP8 checkpoints: block sizes other than 128 x 128 and other schemes, refused by name. */
START_TEST(test_fp8_config_refused)
{
    const char *bad[][2] = {
        {"{\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"weight_block_size\": [64, 64]}", "[64, 64]"},
        {"{\"quant_method\": \"fp8\", \"fmt\": \"e5m2\", \"weight_block_size\": [128, 128]}", "e5m2"},
        {"{\"quant_method\": \"gptq\"}", "gptq"},
        {"{\"quant_method\": \"fp8\", \"fmt\": \"e4m3\"}", "weight_block_size"},
    };
    /* A.X K2 with expert groups: accepted (routed by AXK2TopkRouter's rule, tests/test_dsa.c) */
    const char *grouped = "{\"model_type\": \"axk2\", \"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 64, "
                          "\"moe_intermediate_size\": 16, \"num_hidden_layers\": 2, \"num_attention_heads\": 2, "
                          "\"q_lora_rank\": 16, \"kv_lora_rank\": 16, \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 4, "
                          "\"v_head_dim\": 8, \"n_routed_experts\": 4, \"n_group\": 2, \"topk_group\": 1}";
    clnpu_model_config gc;
    ck_assert_ok(clnpu_model_config_parse(grouped, strlen(grouped), "g.json", &gc));
    ck_assert(gc.n_group == 2 && gc.attn_output_gate && gc.index_topk == 2048);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[1024];
        snprintf(json, sizeof json,
                 "{\"model_type\": \"deepseek_v3\", \"vocab_size\": 64, \"hidden_size\": 32, \"intermediate_size\": 64, "
                 "\"moe_intermediate_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 2, "
                 "\"kv_lora_rank\": 16, \"qk_nope_head_dim\": 8, \"qk_rope_head_dim\": 4, \"v_head_dim\": 8, "
                 "\"n_routed_experts\": 4, \"quantization_config\": %s}", bad[i][0]);
        clnpu_model_config c;
        ck_assert_int_ne(clnpu_model_config_parse(json, strlen(json), "cfg.json", &c), CLNPU_OK);
        ck_assert_msg(strstr(clnpu_error_message(), bad[i][1]) && strstr(clnpu_error_message(), "cfg.json"),
                      "message: %s", clnpu_error_message());
    }
}
END_TEST

/* A checkpoint's block scales: missing, misshapen, of another dtype or not finite, each refused
 * naming the tensor; a tensor-parallel split off the 128-row blocks refused. */
START_TEST(test_fp8_scales_refused)
{
    char dir[256], path[300];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    static uint8_t w[3 * 200];
    static float good[2] = {0.5f, 0.25f}, bad[2] = {0.5f, NAN}, one[1] = {1};
    static uint16_t half[2] = {0x3f80, 0x3f80};
    const clnpu_tensor_out t[] = {
        {"a.weight", CLNPU_DTYPE_FP8_E4M3, 2, {3, 200}, w}, {"a.weight_scale_inv", CLNPU_DTYPE_F32, 2, {1, 2}, good},
        {"b.weight", CLNPU_DTYPE_FP8_E4M3, 2, {3, 200}, w}, {"b.weight_scale_inv", CLNPU_DTYPE_F32, 2, {1, 1}, one},
        {"c.weight", CLNPU_DTYPE_FP8_E4M3, 2, {3, 200}, w}, {"c.weight_scale_inv", CLNPU_DTYPE_F32, 2, {1, 2}, bad},
        {"d.weight", CLNPU_DTYPE_FP8_E4M3, 2, {3, 200}, w}, {"d.weight_scale_inv", CLNPU_DTYPE_BF16, 2, {1, 2}, half},
        {"e.weight", CLNPU_DTYPE_FP8_E4M3, 2, {3, 200}, w}};
    ck_assert_ok(clnpu_safetensors_write(path, t, sizeof t / sizeof t[0]));
    clnpu_checkpoint *ck;
    ck_assert_ok(clnpu_checkpoint_open(dir, &ck));
    float *sc = NULL;
    ck_assert_ok(clnpu_fp8_scales_load(ck, "a.weight", 3, 200, &sc));
    ck_assert(sc[0] == 0.5f && sc[1] == 0.25f);
    free(sc);
    const char *names[] = {"b.weight", "c.weight", "d.weight", "e.weight"};
    for (size_t i = 0; i < 4; i++) {
        sc = NULL;
        ck_assert_int_ne(clnpu_fp8_scales_load(ck, names[i], 3, 200, &sc), CLNPU_OK);
        ck_assert_msg(strstr(clnpu_error_message(), names[i]), "%s: %s", names[i], clnpu_error_message());
        ck_assert_ptr_null(sc);
    }
    clnpu_checkpoint_close(ck);
    test_rmdir(dir);
    /* the tiny fp8 model split over two ranks: q_b's 192 rows halve at 96, inside a block */
    test_fixture f;
    test_fixture_open(&f, MODELS "tiny-dsv3-fp8");
    clnpu_stage_spec tp2 = {.device = 0, .profile = "", .layer_begin = 0, .layer_end = 3, .embed = true, .head = true, .tp = 2};
    tp2.ep_devices[0] = 0, tp2.ep_devices[1] = 1;
    clnpu_model_options o = clnpu_model_options_default();
    o.max_context = 64, o.max_tokens = 8;
    clnpu_pipeline *p;
    ck_assert_int_eq(clnpu_pipeline_create(&f.cfg, f.ck, &tp2, 1, &o, &p), CLNPU_ERR_UNSUPPORTED);
    ck_assert_msg(strstr(clnpu_error_message(), "q_b_proj.weight") && strstr(clnpu_error_message(), "block"), "%s",
                  clnpu_error_message());
    test_fixture_close(&f);
}
END_TEST

/* The CLI: --stats says what the fp8 checkpoint holds; the planner prices it in fp8 unless told. */
START_TEST(test_fp8_cli)
{
    char out[8192];
    int rc = test_run(CLNPU_CLI_PATH " run --model " MODELS "tiny-dsv3-fp8 --ids 1,2,3 -n 1 --stats", out, sizeof out);
    ck_assert_msg(rc == 0 && strstr(out, "fp8 3.121 M (3.121 MB) + scales"), "rc %d: %s", rc, out);
    rc = test_run(CLNPU_CLI_PATH " plan --model " MODELS "tiny-dsv3-fp8/config.json --cluster " CLNPU_SOURCE_DIR
                  "/clusters/pocl-2.yaml --batch 4", out, sizeof out);
    ck_assert_msg(rc == 0 && strstr(out, "fp8 weights"), "rc %d: %s", rc, out);
    rc = test_run(CLNPU_CLI_PATH " plan --model " MODELS "tiny-dsv3-fp8/config.json --cluster " CLNPU_SOURCE_DIR
                  "/clusters/pocl-2.yaml --batch 4 --weights bf16", out, sizeof out);
    ck_assert_msg(rc == 0 && strstr(out, "bf16 weights"), "rc %d: %s", rc, out);
    /* random weights for the new model types, requantised */
    rc = test_run(CLNPU_CLI_PATH " run --random-weights --config " MODELS "tiny-dsv32/config.json --ids 1,2,3,4,5,6,7,8,9,10,11,12 "
                  "-n 2 --weights int8", out, sizeof out);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, out);
    rc = test_run(CLNPU_CLI_PATH " run --random-weights --config " MODELS "tiny-axk2/config.json --ids 1,2,3,4,5,6,7,8,9,10,11,12,13,14 "
                  "-n 2 --weights fp8", out, sizeof out);
    ck_assert_msg(rc == 0, "rc %d: %s", rc, out);
}
END_TEST

/* Elements of every tensor a fixture's checkpoint holds (its block scales aside): what transformers
 * 5.24 saved from the model it built, its parameters and the e_score_correction_bias buffers. */
static double checkpoint_elements(const char *dir, const char *const *files, size_t nfiles)
{
    double n = 0;
    for (size_t i = 0; i < nfiles; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        clnpu_safetensors *st;
        ck_assert_ok(clnpu_safetensors_open(path, &st));
        for (size_t t = 0; t < clnpu_safetensors_count(st); t++) {
            const clnpu_tensor_info *ti = clnpu_safetensors_get(st, t);
            const size_t len = strlen(ti->name);
            if (len > 10 && !strcmp(ti->name + len - 10, "_scale_inv")) continue;
            double e = 1;
            for (int d = 0; d < ti->ndim; d++) e *= (double)ti->shape[d];
            n += e;
        }
        clnpu_safetensors_close(st);
    }
    return n;
}

static double graph_total(const char *config)
{
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(config, &cfg));
    clnpu_graph g;
    ck_assert_ok(clnpu_graph_build(&cfg, &g));
    double t, a;
    clnpu_model_config_params(&cfg, &t, &a);
    ck_assert_msg(t == g.total_params && a == g.active_params, "%s: graph and config counts differ", config);
    const double total = g.total_params;
    clnpu_graph_free(&g);
    return total;
}

/* The planner's graphs of the new members: parameter counts as transformers built them. */
START_TEST(test_family_graph_params)
{
    const char *one[] = {"model.safetensors"}, *two[] = {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    ck_assert_double_eq(graph_total(MODELS "tiny-dsv32/config.json"), checkpoint_elements(MODELS "tiny-dsv32", one, 1));
    ck_assert_double_eq(graph_total(MODELS "tiny-axk2/config.json"), checkpoint_elements(MODELS "tiny-axk2", two, 2));
    ck_assert_double_eq(graph_total(MODELS "tiny-dsv3-fp8/config.json"), checkpoint_elements(MODELS "tiny-dsv3-fp8", one, 1));
    /* Full-size configs, against transformers' own counts: tools/make_param_counts.py built each
     * model on torch's meta device (transformers 5.24: the default AXK2Config and DeepseekV32Config,
     * dumped beside the counts, and the shipped A.X-K2-Light, DeepSeek-V3.2, DeepSeek-V3, A.X K1)
     * and stored its state-dict elements (parameters + the routers' e_score_correction_bias). */
    char path[512];
    snprintf(path, sizeof path, "%s/tests/data/param-counts/counts.json", CLNPU_SOURCE_DIR);
    char *text = NULL;
    size_t len = 0;
    ck_assert_ok(clnpu_file_read_all(path, &text, &len));
    cJSON *root = cJSON_Parse(text), *configs = cJSON_GetObjectItem(root, "configs"), *c;
    ck_assert_ptr_nonnull(configs);
    size_t n = 0;
    cJSON_ArrayForEach(c, configs) {
        const cJSON *want = cJSON_GetObjectItem(c, "state_dict_elements");
        ck_assert(cJSON_IsNumber(want));
        snprintf(path, sizeof path, "%s/%s", CLNPU_SOURCE_DIR, c->string);
        const double got = graph_total(path);
        fprintf(stderr, "%s: planner %.0f, transformers %.0f\n", c->string, got, want->valuedouble);
        ck_assert_msg(got == want->valuedouble, "%s: the planner counts %.0f parameters, transformers %.0f", c->string,
                      got, want->valuedouble);
        n++;
    }
    ck_assert_uint_eq(n, 6); /* both defaults and the four shipped configs */
    cJSON_Delete(root);
    free(text);
}
END_TEST

/* The cost model follows the sparsity: past index_topk, a longer context adds the indexer's cost
 * (its scores and key cache) but not dense attention's. */
START_TEST(test_family_plan_cost)
{
    clnpu_model_config sparse, dense;
    ck_assert_ok(clnpu_model_config_load(MODELS "deepseek-v32/config.json", &sparse));
    ck_assert_ok(clnpu_model_config_load(CLNPU_SOURCE_DIR "/models/deepseek-v3/config.json", &dense));
    clnpu_graph g;
    ck_assert_ok(clnpu_graph_build(&sparse, &g));
    ck_assert_uint_eq(g.units[1].attn_topk, 2048);
    /* the latent as the executor allocates it, and the indexer's f32 keys */
    ck_assert_double_eq(g.units[1].kv_bytes_per_token, (512 + 64) * (double)clnpu_dtype_size(CLNPU_LATENT_CACHE_DTYPE) + 128 * 4);
    clnpu_graph_free(&g);
    clnpu_cluster *cl;
    ck_assert_ok(clnpu_cluster_load(CLNPU_SOURCE_DIR "/clusters/h200-2x8.yaml", NULL, &cl));
    double step[2][2];
    const size_t ctx[2] = {4096, 65536};
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < 2; i++) {
            clnpu_workload w = clnpu_workload_default();
            /* batch 8: the 64k plans stay below 90 % of memory, so the layout is not chosen by memory
             * (at 16 the sparse 64k plan, its indexer keys counted, fills 99 % and moves to other
             * widths than the 4k one, and the layout, not the attention, sets the step) */
            w.batch = 8, w.context = ctx[i];
            clnpu_plan *p;
            ck_assert_ok(clnpu_plan_create(m ? &dense : &sparse, cl, &w, NULL, &p));
            step[m][i] = clnpu_plan_get_summary(p).step_s;
            clnpu_plan_destroy(p);
        }
    fprintf(stderr, "decode step, batch 8: DeepSeek-V3.2 %.2f -> %.2f ms, DeepSeek-V3 %.2f -> %.2f ms (4k -> 64k)\n",
            step[0][0] * 1e3, step[0][1] * 1e3, step[1][0] * 1e3, step[1][1] * 1e3);
    ck_assert(step[0][1] > step[0][0]); /* the indexer still reads every key */
    ck_assert_msg(step[0][1] - step[0][0] < 0.5 * (step[1][1] - step[1][0]), "sparse attention grows like dense");
    clnpu_cluster_destroy(cl);
}
END_TEST

Suite *suite_family(void)
{
    Suite *s = suite_create("family");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_fp8_checkpoint);
    tcase_add_test(tc, test_fp8_config_refused);
    tcase_add_test(tc, test_fp8_cli);
    tcase_add_test(tc, test_fp8_scales_refused);
    tcase_add_test(tc, test_dsv32_matches_transformers);
    tcase_add_test(tc, test_axk2_matches_transformers);
    tcase_add_test(tc, test_family_graph_params);
    tcase_add_test(tc, test_family_plan_cost);
    tcase_add_test(tc, test_family_memory_estimate);
    tcase_add_test(tc, test_axk2_engine);
    suite_add_tcase(s, tc);
    return s;
}
