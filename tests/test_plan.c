/* The scheduler: graph totals, the stage DP against brute force, expert replication against
 * brute force, plan invariants and sanity properties, plan time, clear infeasibility errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

#define SRC CLNPU_SOURCE_DIR

START_TEST(test_graph_totals)
{
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(SRC "/models/axk1/config.json", &cfg));
    clnpu_graph g;
    ck_assert_ok(clnpu_graph_build(&cfg, &g));
    ck_assert_uint_eq(g.count, 63);
    ck_assert_msg(g.total_params == 518983063808.0, "total %.0f", g.total_params);
    ck_assert_msg(g.active_params == 32779344128.0, "active %.0f", g.active_params);
    double t, a;
    clnpu_model_config_params(&cfg, &t, &a);
    ck_assert(t == g.total_params && a == g.active_params);
    /* decode FLOPs per token (architecture notes 4.2): 63.21 G in the layers and head */
    double flops = 0;
    for (size_t u = 0; u < g.count; u++) flops += g.units[u].flops_per_token;
    ck_assert_msg(fabs(flops / 1e9 - 63.21) < 0.05, "decode FLOPs per token %.3f G", flops / 1e9);
    ck_assert(g.units[1].kv_bytes_per_token == 576 * 4); /* 512 + 64 latent values per token, f32 as allocated */
    clnpu_graph_free(&g);
}
END_TEST

typedef struct inst {
    double t[12][12][8], m[12][12][8];
} inst;

static double icost(size_t i, size_t j, size_t k, void *c) { return ((inst *)c)->t[i][j - 1][k]; }
static double imem(size_t i, size_t j, size_t k, void *c) { return ((inst *)c)->m[i][j - 1][k]; }

START_TEST(test_stage_dp_equals_brute_force)
{
    inst *in = malloc(sizeof *in);
    size_t agree = 0, infeasible = 0;
    for (int seed = 0; seed < 1000; seed++) {
        const size_t L = 1 + test_rand_u64() % 12, G = 1 + test_rand_u64() % 8;
        double cap[8];
        for (size_t k = 0; k < G; k++) cap[k] = test_rand_uniform(2, 10);
        /* additive unit costs per group (heterogeneous groups), plus a per-stage overhead */
        double ut[12][8], um[12];
        for (size_t u = 0; u < L; u++) {
            um[u] = test_rand_uniform(0.2f, 3);
            for (size_t k = 0; k < G; k++) ut[u][k] = test_rand_uniform(0.1f, 5);
        }
        for (size_t i = 0; i < L; i++)
            for (size_t j = i; j < L; j++)
                for (size_t k = 0; k < G; k++) {
                    double t = 0.3, m = 0;
                    for (size_t u = i; u <= j; u++) t += ut[u][k], m += um[u];
                    in->t[i][j][k] = t, in->m[i][j][k] = m;
                }
        for (int obj = 0; obj < 2; obj++) {
            size_t c1[16], c2[16];
            double v1, v2;
            size_t k1 = clnpu_stage_dp(L, G, icost, imem, cap, (clnpu_stage_objective)obj, in, c1, &v1);
            size_t k2 = clnpu_stage_brute(L, G, icost, imem, cap, (clnpu_stage_objective)obj, in, c2, &v2);
            ck_assert_msg((k1 == 0) == (k2 == 0), "seed %d: feasibility differs (dp %zu, brute %zu)", seed, k1, k2);
            if (!k1) {
                infeasible++;
                continue;
            }
            ck_assert_msg(fabs(v1 - v2) <= 1e-9 * fmax(1, v2), "seed %d obj %d: dp %.12g, brute %.12g", seed, obj, v1, v2);
            /* the DP's cuts achieve its value and respect memory */
            double v = obj ? 0 : -INFINITY;
            for (size_t s = 0; s < k1; s++) {
                ck_assert(imem(c1[s], c1[s + 1], s, in) <= cap[s]);
                double t = icost(c1[s], c1[s + 1], s, in);
                v = obj ? v + t : fmax(v, t);
            }
            ck_assert(fabs(v - v1) <= 1e-9 * fmax(1, v1) && c1[0] == 0 && c1[k1] == L);
            agree++;
        }
    }
    fprintf(stderr, "stage DP = brute force on %zu feasible cases, %zu infeasible agreed\n", agree, infeasible);
    ck_assert_uint_gt(agree, 500);
    free(in);
}
END_TEST

START_TEST(test_expert_replication_and_packing)
{
    for (int seed = 0; seed < 300; seed++) {
        const size_t n = 1 + test_rand_u64() % 6, extra = test_rand_u64() % 7;
        double w[8];
        size_t c[8];
        for (size_t e = 0; e < n; e++) w[e] = test_rand_uniform(0.1f, 10);
        double greedy = clnpu_expert_replicate(w, n, n + extra, c), brute = clnpu_expert_replicate_brute(w, n, n + extra);
        ck_assert_msg(fabs(greedy - brute) <= 1e-12 * brute, "seed %d: greedy %.9g brute %.9g", seed, greedy, brute);
        size_t total = 0;
        for (size_t e = 0; e < n; e++) {
            total += c[e];
            ck_assert_uint_ge(c[e], 1);
        }
        ck_assert_uint_eq(total, n + extra);
    }
    /* packing 192 experts with skewed loads onto 32 devices: every copy placed, slots respected,
     * never below the lower bound; report the gap */
    const size_t E = 192, D = 32, S = 8;
    double w[192], sum = 0;
    size_t copies[192], ce[256], cd[256], used[32] = {0};
    for (size_t e = 0; e < E; e++) sum += (w[e] = 1.0 / (1 + e % 37) + test_rand_uniform(0, 0.2f));
    double per_copy = clnpu_expert_replicate(w, E, D * S, copies);
    double mx = clnpu_expert_pack(w, copies, E, D, S, ce, cd);
    for (size_t i = 0; i < D * S; i++) {
        ck_assert_uint_lt(cd[i], D);
        used[cd[i]]++;
    }
    for (size_t d = 0; d < D; d++) ck_assert_uint_le(used[d], S);
    double lb = fmax(sum / D, per_copy);
    ck_assert(mx >= lb - 1e-12);
    fprintf(stderr, "expert packing: max device load %.4f, lower bound %.4f, gap %.2f %%\n", mx, lb, 100 * (mx / lb - 1));
    ck_assert_msg(mx / lb - 1 < 0.25, "packing gap %.3f too large", mx / lb - 1);
    /* group-aware: 8 groups of 24 on 8 devices, uniform loads: each device holds exactly one group;
     * on 2 devices each holds four whole groups; the max load equals the flat packing's */
    double u[192];
    for (size_t e = 0; e < 192; e++) u[e] = 1;
    for (int layout = 0; layout < 2; layout++) {
        const size_t devs = layout ? 2 : 8, slots = 192 / devs;
        double pc = clnpu_expert_replicate(u, 192, 192, copies);
        double m = clnpu_expert_pack_grouped(u, copies, 192, 8, devs, slots, ce, cd);
        ck_assert(pc == 1 && m == 192.0 / devs);
        for (size_t i = 0; i < 192; i++) {
            size_t group = ce[i] / 24;
            if (!layout) ck_assert_msg(cd[i] == group, "expert %zu (group %zu) on device %zu", ce[i], group, cd[i]);
            for (size_t j = 0; j < 192; j++) /* a group never spans two devices */
                if (ce[j] / 24 == group) ck_assert_uint_eq(cd[j], cd[i]);
        }
    }
}
END_TEST

static clnpu_plan *make_plan(const char *model, const char *cluster, clnpu_workload w, clnpu_status *st)
{
    clnpu_model_config cfg;
    clnpu_cluster *cl = NULL;
    clnpu_plan *p = NULL;
    *st = clnpu_model_config_load(model, &cfg);
    if (!*st) *st = clnpu_cluster_load(cluster, NULL, &cl);
    if (!*st) *st = clnpu_plan_create(&cfg, cl, &w, NULL, &p);
    clnpu_cluster_destroy(cl);
    return p;
}

static char *plan_yaml(const clnpu_plan *p)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ok(clnpu_plan_write_yaml(p, f));
    fclose(f);
    return buf;
}

START_TEST(test_plan_invariants)
{
    const char *clusters[] = {"rebel-quad-8", "h200-2x8", "mixed-rebel-atom", "atom-max-16", "pocl-2", "pocl-4"};
    for (size_t i = 0; i < sizeof clusters / sizeof clusters[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, SRC "/clusters/%s.yaml", clusters[i]);
        clnpu_workload w = clnpu_workload_default();
        const bool small = !strncmp(clusters[i], "pocl", 4);
        const char *model = small ? SRC "/models/axk1-mini/config.json" : SRC "/models/axk1/config.json";
        if (!strcmp(clusters[i], "atom-max-16")) w.weights = CLNPU_DTYPE_FP8_E4M3; /* bf16 does not fit 64 dies */
        clnpu_status st;
        clnpu_plan *p = make_plan(model, path, w, &st);
        ck_assert_msg(st == CLNPU_OK, "%s: %s", clusters[i], clnpu_error_message());
        clnpu_plan_summary s = clnpu_plan_get_summary(p);
        ck_assert(s.tokens_per_s > 0 && s.step_s > 0 && s.batch >= 1);
        ck_assert_msg(s.token_latency_s * 1e3 <= CLNPU_PLAN_DEFAULT_SLO_MS + 1e-9, "%s: latency over the SLO", clusters[i]);
        ck_assert_msg(s.max_memory_fraction <= 1.0 + 1e-9, "%s: memory %.3f of capacity", clusters[i], s.max_memory_fraction);
        for (size_t d = 0; d < s.devices_used / (s.dp / (s.ep / s.tp) ? s.dp / (s.ep / s.tp) : 1); d++) {
            double m[6];
            clnpu_plan_device_memory(p, d, m);
            ck_assert_msg(m[0] + m[1] + m[2] + m[3] + m[4] <= m[5] * (1 + 1e-9), "%s device %zu over capacity", clusters[i], d);
        }
        /* every expert has at least one copy; the YAML lists each device's experts */
        char *y = plan_yaml(p);
        ck_assert_ptr_nonnull(strstr(y, "experts:"));
        ck_assert_ptr_nonnull(strstr(y, "stages:"));
        /* identical input, identical output */
        clnpu_plan *q = make_plan(model, path, w, &st);
        char *y2 = plan_yaml(q);
        ck_assert_msg(!strcmp(y, y2), "%s: two runs differ", clusters[i]);
        free(y), free(y2);
        clnpu_plan_destroy(q);
        clnpu_plan_destroy(p);
    }
}
END_TEST

START_TEST(test_plan_sanity)
{
    /* halving link bandwidth never speeds a plan up (fixed batch) */
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(SRC "/models/axk1/config.json", &cfg));
    clnpu_cluster *cl;
    ck_assert_ok(clnpu_cluster_load(SRC "/clusters/h200-2x8.yaml", NULL, &cl));
    clnpu_workload w = clnpu_workload_default();
    w.batch = 256;
    clnpu_plan *p;
    ck_assert_ok(clnpu_plan_create(&cfg, cl, &w, NULL, &p));
    double fast = clnpu_plan_get_summary(p).tokens_per_s;
    clnpu_plan_destroy(p);
    cl->intra.bandwidth /= 2, cl->inter.bandwidth /= 2;
    ck_assert_ok(clnpu_plan_create(&cfg, cl, &w, NULL, &p));
    double slow = clnpu_plan_get_summary(p).tokens_per_s;
    clnpu_plan_destroy(p);
    ck_assert_msg(slow <= fast * (1 + 1e-9), "halving bandwidth sped up: %.1f -> %.1f", fast, slow);
    /* a longer context never raises the feasible batch */
    w = clnpu_workload_default();
    size_t prev = (size_t)-1;
    const size_t ctxs[] = {1024, 4096, 16384, 65536};
    for (size_t i = 0; i < 4; i++) {
        w.context = ctxs[i];
        clnpu_status st = clnpu_plan_create(&cfg, cl, &w, NULL, &p);
        size_t b = st ? 0 : clnpu_plan_get_summary(p).batch;
        ck_assert_msg(b <= prev, "context %zu: batch %zu > %zu at a shorter context", ctxs[i], b, prev);
        prev = b;
        clnpu_plan_destroy(p);
    }
    clnpu_cluster_destroy(cl);
    /* more devices never lower the best predicted throughput */
    clnpu_status st;
    w = clnpu_workload_default();
    clnpu_plan *p8 = make_plan(SRC "/models/axk1/config.json", SRC "/clusters/rebel-quad-8.yaml", w, &st);
    ck_assert_ok(st);
    ck_assert_ok(clnpu_cluster_load(SRC "/clusters/rebel-quad-8.yaml", NULL, &cl));
    cl->devices = realloc(cl->devices, 2 * cl->count * sizeof *cl->devices);
    memcpy(cl->devices + cl->count, cl->devices, cl->count * sizeof *cl->devices);
    cl->count *= 2;
    ck_assert_ok(clnpu_plan_create(&cfg, cl, &w, NULL, &p));
    ck_assert_msg(clnpu_plan_get_summary(p).tokens_per_s >= clnpu_plan_get_summary(p8).tokens_per_s,
                  "16 cards slower than 8");
    clnpu_plan_destroy(p), clnpu_plan_destroy(p8);
    clnpu_cluster_destroy(cl);
}
END_TEST

START_TEST(test_plan_time_and_errors)
{
    clnpu_workload w = clnpu_workload_default();
    clnpu_status st;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    clnpu_plan *p = make_plan(SRC "/models/axk1/config.json", SRC "/clusters/atom-1024.yaml", w, &st);
    clock_gettime(CLOCK_MONOTONIC, &b);
    ck_assert_msg(st == CLNPU_OK, "%s", clnpu_error_message());
    double t = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
    fprintf(stderr, "plan for 1024 devices: %.2f s (target < 1 s)\n", t);
    ck_assert_msg(t < 30, "planning 1024 devices took %.1f s", t);
    clnpu_plan_destroy(p);
    /* bf16 A.X K1 does not fit 64 ATOM dies: the error says how much is missing and what would do */
    p = make_plan(SRC "/models/axk1/config.json", SRC "/clusters/atom-max-16.yaml", w, &st);
    ck_assert_int_eq(st, CLNPU_ERR_OUT_OF_MEMORY);
    ck_assert_ptr_null(p);
    const char *msg = clnpu_error_message();
    ck_assert_msg(strstr(msg, "missing") && strstr(msg, "devices of type rebellions-atom"), "%s", msg);
    /* cluster files: unknown profile and unknown key, with file and line */
    clnpu_cluster *cl = NULL;
    const char *bad1 = "name: x\nnodes:\n  - devices:\n      - {profile: no-such-npu, count: 2}\n";
    ck_assert_int_eq(clnpu_cluster_parse(bad1, strlen(bad1), "c.yaml", NULL, &cl), CLNPU_ERR_PARSE);
    ck_assert_msg(strstr(clnpu_error_message(), "c.yaml:4:") && strstr(clnpu_error_message(), "no-such-npu"), "%s",
                  clnpu_error_message());
    const char *bad2 = "name: x\nnodez: []\n";
    ck_assert_int_eq(clnpu_cluster_parse(bad2, strlen(bad2), "c.yaml", NULL, &cl), CLNPU_ERR_PARSE);
    ck_assert_msg(strstr(clnpu_error_message(), "c.yaml:2:") && strstr(clnpu_error_message(), "nodez"), "%s",
                  clnpu_error_message());
    /* comm_overlap: a fraction; an executor that hides nothing (0) never predicts a shorter step
     * than one that hides most (0.9), and an EP plan's exposed exchange makes it longer */
    const char *bad3 = "name: x\ncomm_overlap: 1.5\nnodes:\n  - devices:\n      - {profile: pocl-cpu, count: 2}\n";
    ck_assert_int_eq(clnpu_cluster_parse(bad3, strlen(bad3), "c.yaml", NULL, &cl), CLNPU_ERR_PARSE);
    ck_assert_msg(strstr(clnpu_error_message(), "comm_overlap"), "%s", clnpu_error_message());
    {
        clnpu_model_config cfg;
        ck_assert_ok(clnpu_model_config_load(SRC "/models/axk1-mini/config.json", &cfg));
        clnpu_workload wm = clnpu_workload_default();
        wm.batch = 1, wm.context = 64, wm.max_tp = 1;
        double step[2];
        for (int i = 0; i < 2; i++) {
            char text[512];
            snprintf(text, sizeof text, "name: x\ncomm_overlap: %s\nnodes:\n  - devices:\n"
                     "      - {profile: pocl-cpu, count: 2, overrides: {memory_bytes: 6.0e8}}\n"
                     "links:\n  intra_node: {type: shared-memory, bandwidth: 1.0e10, latency_s: 3.0e-5}\n",
                     i ? "0" : "0.9");
            ck_assert_ok(clnpu_cluster_parse(text, strlen(text), "c.yaml", NULL, &cl));
            clnpu_plan *pm = NULL;
            ck_assert_ok(clnpu_plan_create(&cfg, cl, &wm, NULL, &pm));
            const clnpu_plan_summary sm = clnpu_plan_get_summary(pm);
            step[i] = sm.step_s;
            ck_assert_uint_gt(sm.ep, 1); /* 0.6 GB devices: the experts must be split */
            clnpu_plan_destroy(pm);
            clnpu_cluster_destroy(cl);
        }
        ck_assert_msg(step[1] > step[0], "exposed exchange %.3f ms vs overlapped %.3f ms", step[1] * 1e3, step[0] * 1e3);
        /* EP inside a node pays the node's link, also when --max-tp caps TP below the node size;
         * a node whose devices share one memory system gains nothing from splitting the experts */
        const char *variants[3][2] = {{"1.0e-6", ""}, {"1.0e-3", ""}, {"1.0e-6", "    shared_memory_bandwidth: 3.1e10\n"}};
        double st3[3];
        size_t ep3[3];
        for (int i = 0; i < 3; i++) {
            char text[640];
            snprintf(text, sizeof text, "name: x\ncomm_overlap: 0\nnodes:\n  - name: n\n%s    devices:\n"
                     "      - {profile: pocl-cpu, count: 2, overrides: {memory_bytes: 6.0e8}}\n"
                     "links:\n  intra_node: {bandwidth: 1.0e10, latency_s: %s}\n"
                     "  inter_node: {bandwidth: 1.0e10, latency_s: 1.0e-6}\n", variants[i][1], variants[i][0]);
            ck_assert_ok(clnpu_cluster_parse(text, strlen(text), "c.yaml", NULL, &cl));
            clnpu_plan *pm = NULL;
            ck_assert_ok(clnpu_plan_create(&cfg, cl, &wm, NULL, &pm));
            const clnpu_plan_summary sm = clnpu_plan_get_summary(pm);
            st3[i] = sm.step_s, ep3[i] = sm.ep;
            clnpu_plan_destroy(pm);
            clnpu_cluster_destroy(cl);
        }
        ck_assert_uint_gt(ep3[0], 1);
        ck_assert_msg(ep3[1] == 1 || st3[1] > st3[0] + 7 * 1e-3, "a slow node link is not charged: %.3f vs %.3f ms",
                      st3[1] * 1e3, st3[0] * 1e3);
        ck_assert_msg(st3[2] > st3[0] * 1.05, "shared memory: %.3f ms, own memory %.3f ms", st3[2] * 1e3, st3[0] * 1e3);
        /* data-parallel replicas on one shared memory system: no more tokens/s than one device;
         * with memory of their own, twice */
        double tps[3];
        const char *dp[3] = {"count: 1", "count: 2", "count: 2"};
        for (int i = 0; i < 3; i++) {
            char text[512];
            snprintf(text, sizeof text, "name: x\nnodes:\n  - name: n\n%s    devices:\n"
                     "      - {profile: pocl-cpu, %s, overrides: {memory_bytes: 2.0e9}}\n",
                     i == 2 ? "    shared_memory_bandwidth: 3.1e10\n" : "", dp[i]);
            ck_assert_ok(clnpu_cluster_parse(text, strlen(text), "c.yaml", NULL, &cl));
            clnpu_plan *pm = NULL;
            ck_assert_ok(clnpu_plan_create(&cfg, cl, &wm, NULL, &pm));
            tps[i] = clnpu_plan_get_summary(pm).tokens_per_s;
            clnpu_plan_destroy(pm);
            clnpu_cluster_destroy(cl);
        }
        ck_assert_msg(tps[1] > 1.9 * tps[0], "two devices with their own memory: %.1f vs %.1f tokens/s", tps[1], tps[0]);
        ck_assert_msg(tps[2] < 1.02 * tps[0], "two devices sharing one memory: %.1f vs %.1f tokens/s", tps[2], tps[0]);
        const char *bad4 = "name: x\nnodes:\n  - shared_memory_bandwidth: 0\n    devices:\n      - {profile: pocl-cpu}\n";
        ck_assert_int_eq(clnpu_cluster_parse(bad4, strlen(bad4), "c.yaml", NULL, &cl), CLNPU_ERR_PARSE);
        ck_assert_msg(strstr(clnpu_error_message(), "shared_memory_bandwidth"), "%s", clnpu_error_message());
    }
    /* a cluster file past 1 MiB (generated files with long comments) is read whole, not cut */
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/big.yaml", dir);
    const char *tail = "name: big\nnodes:\n  - devices:\n      - {profile: pocl-cpu, count: 3}\n";
    const size_t pad = 1300000;
    char *text = malloc(pad + strlen(tail) + 1);
    for (size_t i = 0; i < pad; i += 100) {
        memset(text + i, 'x', 99);
        text[i] = '#', text[i + 99] = '\n';
    }
    strcpy(text + pad, tail);
    ck_assert_int_eq(test_write_file(path, text), 0);
    free(text);
    ck_assert_ok(clnpu_cluster_load(path, NULL, &cl));
    ck_assert_str_eq(cl->name, "big");
    ck_assert_uint_eq(cl->count, 3);
    clnpu_cluster_destroy(cl);
    test_rmdir(dir);
}
END_TEST

TCase *tcase_plan_published(void); /* test_plan_published.c */

/* The plan file schema (clnpu-plan-2) through clnpu_pipeline_read_plan: a good plan gives its
 * stages; each malformed one (the reliability review's reproducers among them) is refused with a
 * message naming the file and what is wrong, never a crash or a silent default. */
#define PLAN_HEAD "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\n"
#define PLAN_EP2 "parallel: {tp: 1, pp: 2, ep: 2, dp: 2, micro_batches: 2}\n"
#define PLAN_S0 "- {stage: 0, profile: pocl-cpu, devices: [0, 1], embedding: true, head: false, layers: [0, 1]}\n"
#define PLAN_S1 "- {stage: 1, profile: rebellions-atom, devices: [2, 3], embedding: false, head: true, layers: [2]}\n"
#define PLAN_EX "experts:\n- [0, 1, 2, 3, 4, 5, 6, 7]\n- [8, 9, 10, 11, 12, 13, 14, 15]\n"
START_TEST(test_plan_file_schema)
{
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(SRC "/models/tiny-axk1/config.json", &cfg));
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/plan.yaml", dir);
    clnpu_stage_spec *sp = NULL;
    size_t n = 0;
    clnpu_plan_layout lay;
    ck_assert_int_eq(test_write_file(path, PLAN_HEAD "latent_cache: f32\n" PLAN_EP2 "stages:\n" PLAN_S0 PLAN_S1 PLAN_EX), 0);
    ck_assert_msg(clnpu_pipeline_read_plan(path, &cfg, &sp, &n, &lay) == CLNPU_OK, "%s", clnpu_error_message());
    ck_assert_uint_eq(n, 2);
    ck_assert_uint_eq(lay.micro_batches, 2);
    ck_assert_int_eq(lay.weights, -1);
    ck_assert(sp[0].device == 0 && sp[0].ep_devices[0] == 0 && sp[0].ep_devices[1] == 1);
    ck_assert(sp[1].device == 2 && sp[1].ep_devices[1] == 3 && sp[1].ep_count == 2 && sp[1].replicas == 2);
    ck_assert(sp[0].layer_begin == 0 && sp[0].layer_end == 2 && sp[1].layer_begin == 2 && sp[1].layer_end == 3);
    ck_assert(sp[0].embed && !sp[0].head && !sp[1].embed && sp[1].head);
    ck_assert_str_eq(sp[1].profile, "rebellions-atom");
    ck_assert(sp[1].ep_expert_counts[1] == 8 && sp[1].ep_experts[1][7] == 15);
    free(sp);
    static const struct { const char *yaml, *want; } bad[] = {
        /* D2: non-scalar items (atol(NULL) crashed) */
        {PLAN_HEAD "stages:\n- {devices: [[0]], layers: [0, 1, 2], embedding: true, head: true}\n", "expected a single value"},
        {PLAN_HEAD "stages:\n- {devices: [0], layers: [[0], 1, 2], embedding: true, head: true}\n", "expected a single value"},
        {PLAN_HEAD PLAN_EP2 "stages:\n" PLAN_S0 PLAN_S1 "experts: [[[0]], [1]]\n", "expected a single value"},
        {PLAN_HEAD "stages:\n- {devices: {a: 0}, layers: [0, 1, 2], embedding: true, head: true}\n", "expected a list"},
        /* D20: lenient scalars */
        {"format: clnpu-plan-2\nmodel: axk1\nlayers: 3abc\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nstages:\n"
         "- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n", "'3abc' is not a whole number"},
        {PLAN_HEAD "parallel: {tp: 1, pp: 2, ep: 2, dp: 2, micro_batches: 1e3}\nstages:\n" PLAN_S0 PLAN_S1 PLAN_EX,
         "'1e3' is not a whole number"},
        {PLAN_HEAD PLAN_EP2 "stages:\n" PLAN_S0 PLAN_S1 "experts:\n- [zero, 1, 2, 3, 4, 5, 6, 7]\n- [8, 9, 10, 11, 12, 13, "
         "14, 15]\n", "'zero' is not a whole number"},
        {PLAN_HEAD "parallel: {tp: 1, pp: 2, ep: -5, dp: 2}\nstages:\n" PLAN_S0 PLAN_S1 PLAN_EX, "-5 is out of range"},
        {PLAN_HEAD "stages:\n- {devices: [-1], layers: [0, 1, 2], embedding: true, head: true}\n", "-1 is out of range"},
        {PLAN_HEAD "context: 1000000000000\nstages:\n- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n",
         "context: 1000000000000 is out of range"},
        {PLAN_HEAD "stages:\n- {devices: [0], layers: [0, 1, 2], embedding: yes, head: true}\n", "not true or false"},
        {PLAN_HEAD "stages:\n- {stage: 0, devices: [0], layers: [0, 1, 2], embedding: true, head: true, time_s: nan}\n",
         "'nan' is not a number"},
        /* profiles exist */
        {PLAN_HEAD "stages:\n- {profile: rebelions-atom, devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n",
         "no target profile 'rebelions-atom'"},
        /* devices distinct within a stage; every stage as wide as ep */
        {PLAN_HEAD PLAN_EP2 "stages:\n- {devices: [0, 0], embedding: true, head: false, layers: [0, 1]}\n" PLAN_S1 PLAN_EX,
         "device 0 listed twice"},
        {PLAN_HEAD PLAN_EP2 "stages:\n" PLAN_S0 "- {devices: [2], embedding: false, head: true, layers: [2]}\n" PLAN_EX,
         "stage 1 has 1 devices, parallel.ep says 2"},
        /* stage and layer coverage */
        {PLAN_HEAD "stages:\n- {devices: [0], layers: [0, 1], embedding: true, head: true}\n", "cover layers 0..2 of 3"},
        {PLAN_HEAD "stages:\n- {devices: [0], layers: [0, 2, 1], embedding: true, head: true}\n", "lists layer 2 where layer 1"},
        {PLAN_HEAD "stages:\n- {stage: 1, devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n", "numbered 1"},
        {PLAN_HEAD "parallel: {pp: 2}\nstages:\n- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n",
         "parallel.pp is 2"},
        {PLAN_HEAD "stages:\n- {devices: [0], layers: [0, 1, 2], embedding: false, head: true}\n", "embedding must be"},
        {PLAN_HEAD "stages: []\n", "stages: 0 stages"},
        /* parallel widths agree */
        {PLAN_HEAD "parallel: {tp: 1, pp: 2, ep: 2, dp: 1}\nstages:\n" PLAN_S0 PLAN_S1 PLAN_EX, "parallel.dp 1 is not"},
        {PLAN_HEAD "parallel: {tp: 3, pp: 2, ep: 2, dp: 1}\nstages:\n" PLAN_S0 PLAN_S1 PLAN_EX, "not a multiple of tp 3"},
        /* experts: in range, each somewhere, one list per device */
        {PLAN_HEAD PLAN_EP2 "stages:\n" PLAN_S0 PLAN_S1 "experts:\n- [0, 1, 2, 3, 4, 5, 6, 16]\n- [8, 9, 10, 11, 12, 13, 14, "
         "15]\n", "expert 16, but the model has 16"},
        {PLAN_HEAD PLAN_EP2 "stages:\n" PLAN_S0 PLAN_S1 "experts:\n- [0, 1, 2, 3, 4, 5, 6]\n- [8, 9, 10, 11, 12, 13, 14, "
         "15]\n", "expert 7 is on no device"},
        {PLAN_HEAD PLAN_EP2 "stages:\n" PLAN_S0 PLAN_S1 "experts:\n- [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n",
         "1 lists for 2 devices per stage"},
        {PLAN_HEAD "stages:\n- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n" PLAN_EX,
         "2 lists for 1 devices per stage"},
        /* the model: type, layers, hidden size, experts; weights and cache types */
        {"format: clnpu-plan-2\nmodel: deepseek_v3\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nstages:\n"
         "- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n", "for model 'deepseek_v3'"},
        {"format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 256\nweights: bf16\nstages:\n"
         "- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n", "256 routed experts"},
        {"format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: f16\nstages:\n"
         "- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n", "weights: 'f16' is not supported"},
        {"format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nrouted_experts: 16\nweights: bf16\nstages:\n"
         "- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n", "no 'hidden_size'"},
        {PLAN_HEAD "latent_cache: f16\nstages:\n- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n",
         "latent_cache: 'f16' is not supported (f32, bf16, fp8)"},
        {PLAN_HEAD "latent_cache: i32\nstages:\n- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n",
         "latent_cache: 'i32' is not supported"},
        /* keys: a misspelt one is an error, as is a repeated one; old and foreign formats */
        {PLAN_HEAD "parallel: {micro_batch: 2}\nstages:\n- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n",
         "unknown key 'micro_batch'"},
        {PLAN_HEAD "layers: 3\nstages:\n- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n", "given twice"},
        {"format: clnpu-plan-1\nlayers: 3\nstages:\n- {devices: [0], layers: [0, 1, 2], embedding: true, head: true}\n",
         "older clnpu"},
        {"[1, 2]\n", "not a clnpu plan"},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        ck_assert_int_eq(test_write_file(path, bad[k].yaml), 0);
        sp = NULL;
        const clnpu_status st = clnpu_pipeline_read_plan(path, &cfg, &sp, &n, &lay);
        ck_assert_msg(st != CLNPU_OK, "case %zu accepted:\n%s", k, bad[k].yaml);
        ck_assert_msg(strstr(clnpu_error_message(), bad[k].want) && strstr(clnpu_error_message(), path),
                      "case %zu: '%s' does not say '%s'", k, clnpu_error_message(), bad[k].want);
        ck_assert_ptr_null(sp);
    }
    test_rmdir(dir);
}
END_TEST

/* What `clnpu plan -o` writes, read back, is what the planner hands the executor in memory. */
START_TEST(test_plan_file_round_trip)
{
    const char *clusters[] = {"pocl-2", "pocl-4-small"};
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(SRC "/models/axk1-mini/config.json", &cfg));
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/plan.yaml", dir);
    for (size_t c = 0; c < 2; c++) {
        char cl[512];
        snprintf(cl, sizeof cl, SRC "/clusters/%s.yaml", clusters[c]);
        clnpu_status st;
        clnpu_workload w = clnpu_workload_default();
        w.context = 256;
        clnpu_plan *p = make_plan(SRC "/models/axk1-mini/config.json", cl, w, &st);
        ck_assert_msg(st == CLNPU_OK, "%s: %s", clusters[c], clnpu_error_message());
        FILE *f = fopen(path, "w");
        ck_assert_ok(clnpu_plan_write_yaml(p, f));
        fclose(f);
        clnpu_stage_spec *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        clnpu_plan_layout la, lb;
        ck_assert_msg(clnpu_pipeline_read_plan(path, &cfg, &a, &na, &la) == CLNPU_OK, "%s", clnpu_error_message());
        ck_assert_msg(clnpu_plan_stage_specs(p, &cfg, &b, &nb, &lb) == CLNPU_OK, "%s", clnpu_error_message());
        ck_assert_uint_eq(na, nb);
        ck_assert(la.ep == lb.ep && la.micro_batches == lb.micro_batches && la.batch == lb.batch && la.context == 256);
        for (size_t i = 0; i < na; i++) {
            ck_assert(a[i].device == b[i].device && a[i].layer_begin == b[i].layer_begin && a[i].layer_end == b[i].layer_end);
            ck_assert(a[i].embed == b[i].embed && a[i].head == b[i].head && a[i].tp == b[i].tp && a[i].ep_count == b[i].ep_count);
            ck_assert_str_eq(a[i].profile, b[i].profile);
            for (size_t j = 0; j < la.ep; j++) {
                ck_assert_uint_eq(a[i].ep_devices[j], b[i].ep_devices[j]);
                ck_assert_uint_eq(a[i].ep_expert_counts[j], b[i].ep_expert_counts[j]);
                for (size_t e = 0; e < a[i].ep_expert_counts[j]; e++) ck_assert_uint_eq(a[i].ep_experts[j][e], b[i].ep_experts[j][e]);
            }
        }
        free(a), free(b);
        /* a plan for this config refused for another one */
        clnpu_model_config tiny;
        ck_assert_ok(clnpu_model_config_load(SRC "/models/tiny-axk1/config.json", &tiny));
        ck_assert_int_eq(clnpu_plan_stage_specs(p, &tiny, &b, &nb, &lb), CLNPU_ERR_INVALID_ARGUMENT);
        clnpu_plan_destroy(p);
    }
    test_rmdir(dir);
}
END_TEST

Suite *suite_plan(void)
{
    Suite *s = suite_create("plan");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_graph_totals);
    tcase_add_test(tc, test_stage_dp_equals_brute_force);
    tcase_add_test(tc, test_expert_replication_and_packing);
    tcase_add_test(tc, test_plan_invariants);
    tcase_add_test(tc, test_plan_file_schema);
    tcase_add_test(tc, test_plan_file_round_trip);
    tcase_add_test(tc, test_plan_sanity);
    tcase_add_test(tc, test_plan_time_and_errors);
    suite_add_tcase(s, tc);
    suite_add_tcase(s, tcase_plan_published());
    return s;
}
