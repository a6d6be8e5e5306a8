/* `clnpu kernels`: build every embedded kernel source on one device (independent programs on
 * parallel threads) and report where each program came from (compiler, disk cache) and how long
 * it took. With --model DIR, also every program variant `clnpu run` of that checkpoint uses: a
 * short prompt through prefill and a few sampled decode steps build them. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_prebuild.h"

static const char usage[] = "clnpu kernels " CLI_DEVICE_USAGE " [--threads N] [--model DIR [--prompt-tokens T,T,...]]";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The run's variants: a prompt of T ids through prefill, then decode steps drawing on the device,
 * as `clnpu run --model DIR` does (greedy and sampled draws use the same programs). */
static clnpu_status warm_model(const cli_device_args *da, clnpu_device *dev, const char *dir, size_t T)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    clnpu_model_config cfg;
    clnpu_checkpoint *ck = NULL;
    clnpu_model *m = NULL;
    clnpu_status st = clnpu_model_config_load(path, &cfg);
    if (!st) st = clnpu_checkpoint_open(dir, &ck);
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 1, o.max_context = T + 8;
    if (!st) st = clnpu_model_create(dev, &cfg, ck, &o, &m);
    int *ids = st ? NULL : malloc(T * sizeof *ids);
    float *logits = st ? NULL : malloc(T * cfg.vocab_size * sizeof *logits);
    if (!st && (!ids || !logits)) st = CLNPU_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; !st && i < T; i++) ids[i] = (int)((i * 7919 + 13) % cfg.vocab_size);
    /* the variants built ahead side by side, as `clnpu run` does on an empty cache */
    cli_prebuild_result pre;
    if (!st)
        cli_prebuild(da, dev, m, &(cli_prebuild_pass){ids, T, T, true, 1, 4, cfg.vocab_size, o.max_context,
                                                      clnpu_generate_config_default().sampling}, &pre);
    if (!st) st = clnpu_model_prefill(m, 0, ids, T, logits);
    clnpu_generator *g = NULL;
    clnpu_generator_options go = {.model = m, .device = dev, .vocab_size = cfg.vocab_size, .max_sequences = 1, .max_context = o.max_context};
    if (!st) st = clnpu_generator_create(&go, &g);
    clnpu_generate_config gc = clnpu_generate_config_default();
    gc.max_tokens = 4;
    if (!st) st = clnpu_generator_start_from_logits(g, 0, T, logits + (T - 1) * cfg.vocab_size, &gc);
    if (!st) st = clnpu_generator_run(g, NULL, NULL);
    clnpu_generator_destroy(g);
    free(ids), free(logits);
    clnpu_model_destroy(m);
    clnpu_checkpoint_close(ck);
    return st;
}

int cmd_kernels(int argc, char **argv)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_THREADS, O_PROMPT_TOKENS, O_BUILD_LIST, O_PART };
    static const struct option longopts[] = {CLI_DEVICE_LONGOPTS, {"model", required_argument, NULL, O_MODEL},
                                             {"threads", required_argument, NULL, O_THREADS},
                                             {"prompt-tokens", required_argument, NULL, O_PROMPT_TOKENS},
                                             /* the helpers of `clnpu run` (tools/cli_prebuild.c) */
                                             {"build-list", required_argument, NULL, O_BUILD_LIST},
                                             {"part", required_argument, NULL, O_PART},
                                             {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    cli_device_args da = {0};
    const char *model = NULL, *build_list = NULL, *part = NULL;
    size_t threads = 0, lens[8] = {24}, nlens = 1;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            printf("usage: %s\n\nBuilds every kernel embedded in libclnpu on the device, with the bound profile's\n"
                   "parameters, independent programs on --threads host threads (default: one per CPU), and reports\n"
                   "cache hits and build times. --model DIR also builds every program variant `clnpu run --model DIR`\n"
                   "uses (prompts of --prompt-tokens ids, default 24, and a few decode steps), so that the first run\n"
                   "finds them all in the cache.\n", usage);
            return CLI_EXIT_OK;
        }
        int r = cli_device_option_checked(opt, optarg, &da, "kernels", usage);
        if (r == 1) continue;
        if (r < 0) return -r;
        if (opt == O_MODEL) model = optarg;
        else if (opt == O_BUILD_LIST) build_list = optarg;
        else if (opt == O_PART) part = optarg;
        else if (opt == O_THREADS) {
            if (!cli_parse_size(optarg, &threads) || !threads || threads > 64) return cli_usage_error("kernels", usage, "bad --threads '%s' (1..64)", optarg);
        } else if (opt == O_PROMPT_TOKENS) {
            /* GEMM variants follow the rows a call sees: a few prompt lengths cover more of them */
            nlens = 0;
            for (char *p = optarg, *end; *p && nlens < 8; p = *end ? end + 1 : end) {
                long v = strtol(p, &end, 10);
                if (end == p || v < 1 || v > 4096 || (*end && *end != ',')) return cli_usage_error("kernels", usage, "bad --prompt-tokens '%s' (lengths 1..4096, comma-separated)", optarg);
                lens[nlens++] = (size_t)v;
            }
            if (!nlens) return cli_usage_error("kernels", usage, "bad --prompt-tokens '%s'", optarg);
        } else
            return cli_usage_error("kernels", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
    if (optind < argc) return cli_usage_error("kernels", usage, "unexpected argument '%s'", argv[optind]);
    if (build_list) {
        if (strcmp(build_list, "-")) return cli_usage_error("kernels", usage, "--build-list takes '-' (the list on stdin)");
        return cli_build_list(&da, part);
    }

    clnpu_device *dev;
    clnpu_status st = cli_open_device(&da, false, &dev);
    if (st) return cli_fail("kernels", st);
    const clnpu_device_info *info = clnpu_device_get_info(dev);
    const char *cache = clnpu_device_cache_dir(dev);
    printf("device %zu: %s, profile %s%s\ncache: %s\n", info->index, info->name,
           clnpu_device_get_profile(dev)->name, clnpu_device_is_emulated(dev) ? " (emulated)" : "",
           *cache ? cache : "off");
    static const char *origin[] = {"built", "disk cache", "memory"};
    const size_t n = clnpu_kernel_source_count();
    const char **names = malloc((n + 1) * sizeof *names);
    int rc = CLI_EXIT_OK;
    double t0 = now_s();
    if (!names) st = CLNPU_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; !st && i < n; i++) names[i] = clnpu_kernel_source_name(i);
    clnpu_program **progs = names ? calloc(n + 1, sizeof *progs) : NULL;
    if (!st && !progs) st = CLNPU_ERR_OUT_OF_MEMORY;
    const char *pb = getenv("CLNPU_PREBUILD");
    if (!st && !(pb && !strcmp(pb, "0")) && *cache) { /* missing sources built side by side in helper processes first */
        clnpu_device_record_start(dev);
        for (size_t i = 0; i < n; i++) clnpu_program_get(dev, names[i], NULL, &progs[i]);
        char *list = NULL;
        size_t missing = 0;
        cli_prebuild_result pre;
        if (!clnpu_device_record_stop(dev, &list, &missing)) cli_build_ahead(&da, dev, list, missing, &pre);
        clnpu_error_clear();
    }
    if (!st) st = clnpu_program_build_many(dev, names, NULL, n, threads, progs);
    if (st) rc = cli_fail("kernels", st);
    for (size_t i = 0; !st && i < n; i++)
        printf("  %-24s %-10s %8.1f ms\n", names[i], origin[clnpu_program_get_origin(progs[i])], clnpu_program_build_ms(progs[i]));
    free(progs);
    free(names);
    clnpu_program_stats ks = clnpu_device_program_stats(dev);
    if (rc == CLI_EXIT_OK)
        printf("sources: %zu built, %zu from the cache, %.2f s wall\n", ks.built, ks.cached, now_s() - t0);
    if (rc == CLI_EXIT_OK && model) {
        t0 = now_s();
        for (size_t i = 0; !st && i < nlens; i++) st = warm_model(&da, dev, model, lens[i]);
        if (st) rc = cli_fail("kernels", st);
        clnpu_program_stats k2 = clnpu_device_program_stats(dev);
        if (!st)
            printf("%s: %zu more program variants, %zu built, %zu from the cache, %.2f s wall\n", model,
                   k2.built + k2.cached - ks.built - ks.cached, k2.built - ks.built, k2.cached - ks.cached, now_s() - t0);
    }
    clnpu_device_close(dev);
    return rc;
}
