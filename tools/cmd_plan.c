/* `clnpu plan`: split a model config across a cluster and explain the plan. */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "clnpu plan --model CONFIG.json --cluster FILE.yaml [--phase decode|prefill] [--batch B] [--context L]\n"
    "           [--weights bf16|fp8|int8] [--latent-cache f32|bf16] [--slo-ms X] [--expert-load FILE] [--calibration BENCH.jsonl]\n"
    "           [--targets-dir DIR] [--max-tp N] [--min-tp N] [--ep N] [--prefix-hit F] [--mtp-accept F]\n"
    "           [--expert-imbalance X [--expert-imbalance-at EP,SLOTS,ROWS]] [--redundant-experts R] [--tbo auto|on|off]\n"
    "           [--kv-transfer]\n"
    "           [--explain] [-o plan.yaml] [--svg plan.svg]\n"
    "       clnpu plan --validate ROWS.yaml [--base-dir DIR]\n"
    "       clnpu plan --model CONFIG.json --cluster FILE.yaml --disaggregate IN,OUT [workload flags]";

/* A fraction in [0, hi) from a flag. */
static bool parse_frac(const char *s, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= 0 && v < hi)) return false;
    *out = v;
    return true;
}

/* --explain: where the step goes, and what each input does to the prediction (the plan redone
 * with that input at its neutral value). */
static void explain(const clnpu_model_config *cfg, const clnpu_cluster *cl, const clnpu_workload *w,
                    const clnpu_calibration *cal, const clnpu_plan *p)
{
    const clnpu_plan_summary s = clnpu_plan_get_summary(p);
    const clnpu_plan_breakdown b = clnpu_plan_get_breakdown(p);
    printf("\nexplain: step %.3f ms = attention %.3f + MoE compute %.3f + dispatch/combine/TP comm %.3f + other %.3f"
           " + pipeline bubbles %.3f - overlap credit %.3f ms (%s)\n", s.step_s * 1e3, b.attention_s * 1e3,
           b.moe_s * 1e3, b.comm_s * 1e3, b.other_s * 1e3, b.bubble_s * 1e3, b.overlap_s * 1e3,
           b.tbo ? "two-micro-batch overlap" : "one batch");
    printf("explain: %.0f rows computed and %.0f tokens counted per step\n", b.tokens_per_step, b.output_tokens_per_step);
    if (b.table_gemm_s > 0)
        printf("explain: of attention + MoE, %.3f ms are GEMMs priced from the cluster's published shape tables\n",
               b.table_gemm_s * 1e3);
    if (b.permute_s > 0)
        printf("explain: of MoE compute, %.3f ms routed rows into expert order and back for the exchange\n", b.permute_s * 1e3);
    if (b.prefill_qkv_s > 0 || b.prefix_kvb_s > 0)
        printf("explain: of attention, %.3f ms per-head q/k/v traffic (non-absorbed prefill) and %.3f ms kv_b over the "
               "cached prefix keys\n", b.prefill_qkv_s * 1e3, b.prefix_kvb_s * 1e3);
    struct { const char *name; clnpu_workload w; clnpu_cluster c; clnpu_calibration k; bool on; } v[14];
    size_t n = 0;
#define VARIANT(NAME, COND, EDIT) \
    if ((COND) && n < 14) { v[n].name = NAME, v[n].w = *w, v[n].c = *cl, v[n].k = *cal, v[n].on = true; \
        { clnpu_workload *W = &v[n].w; clnpu_cluster *C = &v[n].c; clnpu_calibration *K = &v[n].k; (void)W, (void)C, (void)K; EDIT; } n++; }
    VARIANT("prefix-cache hits 0", w->prefix_hit > 0, W->prefix_hit = 0)
    VARIANT("no MTP", w->mtp_accept > 0, W->mtp_accept = 0)
    VARIANT("expert imbalance from the placement", w->expert_imbalance > 0, W->expert_imbalance = 0)
    VARIANT("imbalance as measured, not carried", w->expert_imbalance > 0 && w->expert_imbalance_at[0] > 0,
            memset(W->expert_imbalance_at, 0, sizeof W->expert_imbalance_at))
    VARIANT("two-micro-batch overlap off", b.tbo, W->tbo = CLNPU_TBO_OFF)
    VARIANT("two-micro-batch overlap on", !b.tbo, W->tbo = CLNPU_TBO_ON)
    VARIANT("no redundant experts", w->redundant_experts || cl->redundant_experts, (W->redundant_experts = 0, C->redundant_experts = 0))
    VARIANT("kernel rates from peak x efficiency", cl->rates_source[0] || cl->phase[w->phase].rates_source[0],
            (memset(&C->rates, 0, sizeof C->rates), memset(&C->phase[0].rates, 0, sizeof C->rates),
             memset(&C->phase[1].rates, 0, sizeof C->rates)))
    VARIANT("no KV transfer", w->kv_transfer, W->kv_transfer = false)
    /* the published rate tables: GEMMs by shape (DeepGEMM's), prefill attention by length (FA3's) */
    const clnpu_kernel_rates *pr = cl->phase[w->phase].set ? &cl->phase[w->phase].rates : &cl->rates;
    VARIANT("GEMMs at gemm_flops (no shape tables)", pr->gemm_table_count || pr->grouped_table_count,
            (C->rates.gemm_table_count = C->rates.grouped_table_count = 0,
             C->phase[0].rates.gemm_table_count = C->phase[0].rates.grouped_table_count = 0,
             C->phase[1].rates.gemm_table_count = C->phase[1].rates.grouped_table_count = 0))
    VARIANT("compute on every SM under TBO", b.tbo && pr->tbo_compute_sm_fraction > 0,
            (C->rates.tbo_compute_sm_fraction = 0, C->phase[0].rates.tbo_compute_sm_fraction = 0,
             C->phase[1].rates.tbo_compute_sm_fraction = 0))
    VARIANT("prefill attention at attn_flops", w->phase == CLNPU_PHASE_PREFILL && pr->attn_prefill_table_count,
            (C->rates.attn_prefill_table_count = 0, C->phase[0].rates.attn_prefill_table_count = 0,
             C->phase[1].rates.attn_prefill_table_count = 0))
#undef VARIANT
    for (size_t i = 0; i < n; i++) {
        clnpu_plan *q = NULL;
        if (clnpu_plan_create(cfg, &v[i].c, &v[i].w, &v[i].k, &q)) {
            printf("explain: with %s: no plan (%s)\n", v[i].name, clnpu_error_message());
            continue;
        }
        const clnpu_plan_summary t = clnpu_plan_get_summary(q);
        printf("explain: with %-38s %10.1f tokens/s per device (%+.1f %%), step %.3f ms, batch %zu\n", v[i].name,
               t.tokens_per_s_per_device, 100 * (t.tokens_per_s_per_device / s.tokens_per_s_per_device - 1), t.step_s * 1e3,
               t.batch);
        clnpu_plan_destroy(q);
    }
    const char *src = cl->phase[w->phase].set ? cl->phase[w->phase].rates_source : cl->rates_source;
    if (src[0]) printf("explain: kernel rates from %s\n", src);
}

int cmd_plan(int argc, char **argv)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_CLUSTER, O_PHASE, O_BATCH, O_CONTEXT, O_WEIGHTS, O_SLO, O_LOAD, O_CAL,
           O_SVG, O_TDIR, O_MAXTP, O_MINTP, O_HIT, O_MTP, O_IMB, O_RED, O_TBO, O_KVX, O_EXPLAIN, O_VALIDATE, O_BASE, O_DISAGG, O_CACHE, O_EP, O_IMBAT };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, O_MODEL}, {"cluster", required_argument, NULL, O_CLUSTER},
        {"phase", required_argument, NULL, O_PHASE}, {"batch", required_argument, NULL, O_BATCH},
        {"context", required_argument, NULL, O_CONTEXT}, {"weights", required_argument, NULL, O_WEIGHTS},
        {"slo-ms", required_argument, NULL, O_SLO}, {"expert-load", required_argument, NULL, O_LOAD},
        {"calibration", required_argument, NULL, O_CAL}, {"svg", required_argument, NULL, O_SVG},
        {"targets-dir", required_argument, NULL, O_TDIR}, {"max-tp", required_argument, NULL, O_MAXTP},
        {"min-tp", required_argument, NULL, O_MINTP}, {"latent-cache", required_argument, NULL, O_CACHE},
        {"ep", required_argument, NULL, O_EP},
        {"prefix-hit", required_argument, NULL, O_HIT}, {"mtp-accept", required_argument, NULL, O_MTP},
        {"expert-imbalance", required_argument, NULL, O_IMB}, {"expert-imbalance-at", required_argument, NULL, O_IMBAT}, {"redundant-experts", required_argument, NULL, O_RED},
        {"tbo", required_argument, NULL, O_TBO}, {"kv-transfer", no_argument, NULL, O_KVX},
        {"explain", no_argument, NULL, O_EXPLAIN}, {"validate", required_argument, NULL, O_VALIDATE},
        {"base-dir", required_argument, NULL, O_BASE}, {"disaggregate", required_argument, NULL, O_DISAGG},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *model = NULL, *cluster = NULL, *load = NULL, *cal_path = NULL, *out = NULL, *svg = NULL, *tdir = NULL;
    const char *validate = NULL, *base = ".";
    bool want_explain = false;
    size_t dis_in = 0, dis_out = 0;
    clnpu_workload w = clnpu_workload_default();
    int opt;
    bool weights_given = false;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        switch (opt) {
        case 'h':
            printf("usage: %s\n\nChooses TP / PP / EP / DP, pipeline stages (exact DP), expert placement and the batch "
                   "for\nthe model on the cluster, predicts step time and tokens/s, and prints a per-device memory "
                   "plan.\n-o writes the plan (YAML) for 'clnpu run --plan'; --svg draws it. Without --batch the "
                   "largest\nbatch that fits (and meets --slo-ms) is chosen.\n", usage);
            return CLI_EXIT_OK;
        case O_MODEL: model = optarg; break;
        case O_CLUSTER: cluster = optarg; break;
        case O_PHASE:
            if (!strcmp(optarg, "decode")) w.phase = CLNPU_PHASE_DECODE;
            else if (!strcmp(optarg, "prefill")) w.phase = CLNPU_PHASE_PREFILL;
            else return cli_usage_error("plan", usage, "bad --phase '%s'", optarg);
            break;
        case O_BATCH:
            /* bounded: the planner multiplies batch, context and model sizes in size_t */
            if (!cli_parse_size(optarg, &w.batch) || !w.batch || w.batch > (1u << 20)) return cli_usage_error("plan", usage, "bad --batch '%s'", optarg);
            break;
        case O_CONTEXT:
            if (!cli_parse_size(optarg, &w.context) || !w.context || w.context > (1u << 26)) return cli_usage_error("plan", usage, "bad --context '%s'", optarg);
            break;
        case O_WEIGHTS:
            weights_given = true;
            if (!strcmp(optarg, "bf16")) w.weights = CLNPU_DTYPE_BF16;
            else if (!strcmp(optarg, "fp8")) w.weights = CLNPU_DTYPE_FP8_E4M3;
            else if (!strcmp(optarg, "int8")) w.weights = CLNPU_DTYPE_I8;
            else return cli_usage_error("plan", usage, "bad --weights '%s'", optarg);
            break;
        case O_CACHE:
            if (!strcmp(optarg, "f32")) w.latent_cache = CLNPU_DTYPE_F32;
            else if (!strcmp(optarg, "bf16")) w.latent_cache = CLNPU_DTYPE_BF16;
            else return cli_usage_error("plan", usage, "bad --latent-cache '%s' (f32 or bf16)", optarg);
            break;
        case O_SLO:
            if (!cli_parse_double(optarg, 1e-6, 1e9, &w.slo_ms)) return cli_usage_error("plan", usage, "bad --slo-ms '%s'", optarg);
            break;
        case O_LOAD: load = optarg; break;
        case O_CAL: cal_path = optarg; break;
        case 'o': out = optarg; break;
        case O_SVG: svg = optarg; break;
        case O_TDIR: tdir = optarg; break;
        case O_MAXTP:
            if (!cli_parse_size(optarg, &w.max_tp) || !w.max_tp) return cli_usage_error("plan", usage, "bad --max-tp '%s'", optarg);
            break;
        case O_MINTP:
            if (!cli_parse_size(optarg, &w.min_tp) || !w.min_tp) return cli_usage_error("plan", usage, "bad --min-tp '%s'", optarg);
            break;
        case O_HIT:
            if (!parse_frac(optarg, 1, &w.prefix_hit)) return cli_usage_error("plan", usage, "bad --prefix-hit '%s' (a fraction below 1)", optarg);
            break;
        case O_MTP:
            if (!parse_frac(optarg, 1 + 1e-12, &w.mtp_accept)) return cli_usage_error("plan", usage, "bad --mtp-accept '%s' (0..1)", optarg);
            break;
        case O_IMB:
            if (!parse_frac(optarg, 1e3, &w.expert_imbalance) || w.expert_imbalance < 1)
                return cli_usage_error("plan", usage, "bad --expert-imbalance '%s' (max / mean load, >= 1)", optarg);
            break;
        case O_IMBAT: {
            /* EP,SLOTS,ROWS where --expert-imbalance was measured: carried to each layout */
            double *a = w.expert_imbalance_at;
            char tail;
            if (sscanf(optarg, "%lf,%lf,%lf%c", &a[0], &a[1], &a[2], &tail) != 3 || !(a[0] >= 1 && a[1] >= 1 && a[2] >= 1) ||
                a[0] > 1e9 || a[1] > 1e9 || a[2] > 1e9)
                return cli_usage_error("plan", usage, "bad --expert-imbalance-at '%s' (EP,SLOTS,ROWS: EP width, expert slots "
                                       "per device, rows per device per exchange, each >= 1)", optarg);
            break;
        }
        case O_RED:
            if (!cli_parse_size(optarg, &w.redundant_experts) || w.redundant_experts > 65536)
                return cli_usage_error("plan", usage, "bad --redundant-experts '%s'", optarg);
            break;
        case O_TBO:
            if (!strcmp(optarg, "auto")) w.tbo = CLNPU_TBO_AUTO;
            else if (!strcmp(optarg, "on")) w.tbo = CLNPU_TBO_ON;
            else if (!strcmp(optarg, "off")) w.tbo = CLNPU_TBO_OFF;
            else return cli_usage_error("plan", usage, "bad --tbo '%s' (auto, on, off)", optarg);
            break;
        case O_KVX: w.kv_transfer = true; break;
        case O_EP:
            if (!cli_parse_size(optarg, &w.ep) || !w.ep || w.ep > CLNPU_PLAN_MAX_DEVICES)
                return cli_usage_error("plan", usage, "bad --ep '%s'", optarg);
            break;
        case O_EXPLAIN: want_explain = true; break;
        case O_VALIDATE: validate = optarg; break;
        case O_BASE: base = optarg; break;
        case O_DISAGG: {
            char *comma = strchr(optarg, ',');
            if (!comma) return cli_usage_error("plan", usage, "bad --disaggregate '%s' (IN,OUT token lengths)", optarg);
            *comma = 0;
            bool ok = cli_parse_size(optarg, &dis_in) && cli_parse_size(comma + 1, &dis_out) && dis_in && dis_out;
            *comma = ',';
            if (!ok) return cli_usage_error("plan", usage, "bad --disaggregate '%s' (IN,OUT token lengths)", optarg);
            break;
        }
        default: return cli_usage_error("plan", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("plan", usage, "unexpected argument '%s'", argv[optind]);
    if (validate) {
        if (model || cluster) return cli_usage_error("plan", usage, "--validate takes its models and clusters from the file");
        double worst = 0;
        clnpu_status vst = clnpu_plan_validate(validate, base, stdout, &worst);
        if (vst) return cli_fail("plan", vst);
        return CLI_EXIT_OK;
    }
    if (!model || !cluster) return cli_usage_error("plan", usage, "--model and --cluster are required");
    clnpu_model_config cfg;
    clnpu_profile_set *set = NULL;
    clnpu_cluster *cl = NULL;
    clnpu_plan *p = NULL;
    clnpu_graph g = {0};
    double *loads = NULL;
    clnpu_calibration cal = clnpu_calibration_default();
    clnpu_status st = clnpu_model_config_load(model, &cfg);
    /* an FP8 checkpoint is priced by what it holds: 1 byte a weight (its block scales are 1/4096 more) */
    if (!st && cfg.fp8_checkpoint && !weights_given) w.weights = CLNPU_DTYPE_FP8_E4M3;
    if (!st) st = clnpu_profile_set_builtin(&set);
    if (!st && tdir) st = clnpu_profile_set_add_dir(set, tdir);
    if (!st) st = clnpu_cluster_load(cluster, set, &cl);
    if (!st && load) {
        st = clnpu_graph_build(&cfg, &g);
        if (!st) st = clnpu_expert_load_read(load, &g, &loads, &w.expert_load_layers);
        w.expert_load = loads;
    }
    if (!st && cal_path) st = clnpu_calibration_read(cal_path, &cl->devices[0].profile, &cal);
    if (!st && dis_in) {
        /* the decode half keeps the flags' SLO and MTP; the prefill half its batch search */
        clnpu_workload wp = w, wd = w;
        wp.batch = 0, wp.mtp_accept = 0, wp.slo_ms = 0, wd.prefix_hit = 0;
        clnpu_plan *pd = NULL;
        size_t np = 0;
        double rps = 0;
        st = clnpu_plan_disaggregate(&cfg, cl, &wp, &wd, &cal, dis_in, dis_out, &p, &pd, &np, &rps);
        if (!st) {
            printf("disaggregated: %zu of %zu nodes prefill, %zu decode: %.1f requests/s of %zu + %zu tokens\n\n", np,
                   cl->nodes, cl->nodes - np, rps, dis_in, dis_out);
            clnpu_plan_print(p, stdout);
            printf("\n");
            clnpu_plan_print(pd, stdout);
        }
        clnpu_plan_destroy(pd);
        if (!st && (out || svg || want_explain)) printf("(-o, --svg and --explain apply to single-phase plans)\n");
        out = svg = NULL, want_explain = false;
    } else if (!st) st = clnpu_plan_create(&cfg, cl, &w, &cal, &p);
    if (!st && !dis_in) clnpu_plan_print(p, stdout);
    if (!st && want_explain) explain(&cfg, cl, &w, &cal, p);
    /* fopen writes through a symlink to its target; a failure is reported once, with its reason */
    const char *paths[2] = {out, svg};
    int wrc = CLI_EXIT_OK;
    for (int k = 0; k < 2 && !st && wrc == CLI_EXIT_OK; k++) {
        if (!paths[k]) continue;
        FILE *f = fopen(paths[k], "w");
        if (!f) {
            wrc = cli_fail_msg("plan", "%s: cannot create: %s", paths[k], strerror(errno));
            break;
        }
        st = k ? clnpu_plan_write_svg(p, f) : clnpu_plan_write_yaml(p, f);
        if (fclose(f) && !st) wrc = cli_fail_msg("plan", "%s: write failed: %s", paths[k], strerror(errno));
    }
    int rc = st ? cli_fail("plan", st) : wrc;
    clnpu_plan_destroy(p);
    clnpu_cluster_destroy(cl);
    clnpu_profile_set_destroy(set);
    clnpu_graph_free(&g);
    free(loads);
    return rc;
}
