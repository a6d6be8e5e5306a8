/* `clnpu plan`: split a model config across a cluster and explain the plan. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "clnpu plan --model CONFIG.json --cluster FILE.yaml [--phase decode|prefill] [--batch B] [--context L]\n"
    "           [--weights bf16|fp8|int8] [--latent-cache f32|bf16] [--slo-ms X] [--expert-load FILE] [--calibration BENCH.jsonl]\n"
    "           [--targets-dir DIR] [--max-tp N] [--min-tp N] [-o plan.yaml] [--svg plan.svg]";

int cmd_plan(int argc, char **argv)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_CLUSTER, O_PHASE, O_BATCH, O_CONTEXT, O_WEIGHTS, O_SLO, O_LOAD, O_CAL,
           O_SVG, O_TDIR, O_MAXTP, O_MINTP, O_CACHE };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, O_MODEL}, {"cluster", required_argument, NULL, O_CLUSTER},
        {"phase", required_argument, NULL, O_PHASE}, {"batch", required_argument, NULL, O_BATCH},
        {"context", required_argument, NULL, O_CONTEXT}, {"weights", required_argument, NULL, O_WEIGHTS},
        {"slo-ms", required_argument, NULL, O_SLO}, {"expert-load", required_argument, NULL, O_LOAD},
        {"calibration", required_argument, NULL, O_CAL}, {"svg", required_argument, NULL, O_SVG},
        {"targets-dir", required_argument, NULL, O_TDIR}, {"max-tp", required_argument, NULL, O_MAXTP},
        {"min-tp", required_argument, NULL, O_MINTP}, {"latent-cache", required_argument, NULL, O_CACHE},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    const char *model = NULL, *cluster = NULL, *load = NULL, *cal_path = NULL, *out = NULL, *svg = NULL, *tdir = NULL;
    clnpu_workload w = clnpu_workload_default();
    int opt;
    char *end;
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
            if (!cli_parse_size(optarg, &w.batch) || !w.batch) return cli_usage_error("plan", usage, "bad --batch '%s'", optarg);
            break;
        case O_CONTEXT:
            if (!cli_parse_size(optarg, &w.context) || !w.context) return cli_usage_error("plan", usage, "bad --context '%s'", optarg);
            break;
        case O_WEIGHTS:
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
            w.slo_ms = strtod(optarg, &end);
            if (*end || w.slo_ms <= 0) return cli_usage_error("plan", usage, "bad --slo-ms '%s'", optarg);
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
        default: return cli_usage_error("plan", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("plan", usage, "unexpected argument '%s'", argv[optind]);
    if (!model || !cluster) return cli_usage_error("plan", usage, "--model and --cluster are required");
    clnpu_model_config cfg;
    clnpu_profile_set *set = NULL;
    clnpu_cluster *cl = NULL;
    clnpu_plan *p = NULL;
    clnpu_graph g = {0};
    double *loads = NULL;
    clnpu_calibration cal = clnpu_calibration_default();
    clnpu_status st = clnpu_model_config_load(model, &cfg);
    if (!st) st = clnpu_profile_set_builtin(&set);
    if (!st && tdir) st = clnpu_profile_set_add_dir(set, tdir);
    if (!st) st = clnpu_cluster_load(cluster, set, &cl);
    if (!st && load) {
        st = clnpu_graph_build(&cfg, &g);
        if (!st) st = clnpu_expert_load_read(load, &g, &loads, &w.expert_load_layers);
        w.expert_load = loads;
    }
    if (!st && cal_path) st = clnpu_calibration_read(cal_path, &cl->devices[0].profile, &cal);
    if (!st) st = clnpu_plan_create(&cfg, cl, &w, &cal, &p);
    if (!st) clnpu_plan_print(p, stdout);
    if (!st && out) {
        FILE *f = fopen(out, "w");
        if (!f) fprintf(stderr, "clnpu plan: error: cannot create %s\n", out), st = CLNPU_ERR_IO;
        else {
            st = clnpu_plan_write_yaml(p, f);
            if (fclose(f) && !st) st = CLNPU_ERR_IO;
        }
    }
    if (!st && svg) {
        FILE *f = fopen(svg, "w");
        if (!f) fprintf(stderr, "clnpu plan: error: cannot create %s\n", svg), st = CLNPU_ERR_IO;
        else {
            st = clnpu_plan_write_svg(p, f);
            if (fclose(f) && !st) st = CLNPU_ERR_IO;
        }
    }
    int rc = st ? cli_fail("plan", st) : CLI_EXIT_OK;
    clnpu_plan_destroy(p);
    clnpu_cluster_destroy(cl);
    clnpu_profile_set_destroy(set);
    clnpu_graph_free(&g);
    free(loads);
    return rc;
}
