/* `clnpu run`: load an A.X K1 checkpoint (or random weights for a config), process a prompt,
 * generate tokens; optionally dump logits, print throughput, write a kernel trace. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_prebuild.h"
#include "cli_ids.h"

/* Flags that size buffers are bounded before any arithmetic: 2^24 tokens is far past every
 * model's context (A.X K1: 131072), and keeps n * sequences * vocab * 4 inside size_t. */
#define RUN_MAX_TOKENS ((size_t)1 << 24)
/* An ids file holds text ids: 64 MiB is millions of them. */
#define RUN_IDS_FILE_MAX ((size_t)64 << 20)
#include "cli_text.h"

static const char usage[] =
    "clnpu run (--model DIR | --random-weights --config FILE) " CLI_DEVICE_USAGE "\n"
    "          (--ids 1,2,3 | --ids-file F | --prompt TEXT | --prompt-file F [--chat [--no-think] [--system TEXT]])\n"
    "          [-n NEW | --max-tokens NEW] [--stop TEXT]... [--ignore-eos] [--greedy | --temperature T [--top-k K] [--top-p P] "
    "[--seed S]]\n          [--decode-from P] [--weights int8|fp8] [--latent-cache f32|bf16|fp8] [--context L] [--dump-logits OUT.safetensors] "
    "[--stats] [--trace OUT.json] [--verbose]\n          [--plan plan.yaml [--replica K] [--share-devices]] [--sequences N] [--check-weights]";

/* The tool's own allocation failures: no stale library message may stand for them (cli_fail
 * prints "out of host memory"). */
static clnpu_status run_oom(void)
{
    clnpu_error_clear();
    return CLNPU_ERR_OUT_OF_MEMORY;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define MAX_STOP 16

/* Kernel builds so far on the run's devices (the CLI's and every local stage's). */
static clnpu_program_stats build_stats(clnpu_device *dev, clnpu_pipeline *pl, size_t nstages)
{
    clnpu_program_stats t = clnpu_device_program_stats(dev);
    for (size_t s = 0; pl && s < nstages; s++) {
        clnpu_device *d = clnpu_pipeline_stage_device(pl, s);
        if (!d || d == dev) continue;
        clnpu_program_stats x = clnpu_device_program_stats(d);
        t.built += x.built, t.cached += x.cached, t.build_ms += x.build_ms, t.cache_ms += x.cache_ms;
    }
    return t;
}

static double stats_ms(clnpu_program_stats s) { return s.build_ms + s.cache_ms; }

typedef struct run_args {
    cli_device_args da;
    const char *model, *config, *ids, *ids_file, *dump, *trace, *plan;
    const char *prompt, *prompt_file, *system, *stop[MAX_STOP]; /* text in, text out */
    size_t nstop;
    bool chat, no_think, ignore_eos, has_n;
    bool random_weights, stats, greedy, verbose, share_devices, check_weights;
    size_t n, decode_from, context, sequences, replica;
    bool has_decode_from, has_top;
    clnpu_sampling samp;
    int weights, latent_cache;
} run_args;

static int parse(int argc, char **argv, run_args *r)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_CONFIG, O_RANDOM, O_IDS, O_IDS_FILE, O_GREEDY, O_TEMP, O_TOPP, O_TOPK,
           O_SEED, O_DECODE_FROM, O_DUMP, O_STATS, O_TRACE, O_WEIGHTS, O_CONTEXT, O_PLAN, O_SEQS, O_REPLICA, O_SHARE, O_CACHE,
           O_PROMPT, O_PROMPT_FILE, O_CHAT, O_NO_THINK, O_SYSTEM, O_STOP, O_MAX_TOKENS, O_IGNORE_EOS,
           O_CHECK_WEIGHTS };
    static const struct option longopts[] = {
        CLI_DEVICE_LONGOPTS, {"model", required_argument, NULL, O_MODEL}, {"config", required_argument, NULL, O_CONFIG},
        {"random-weights", no_argument, NULL, O_RANDOM}, {"ids", required_argument, NULL, O_IDS},
        {"ids-file", required_argument, NULL, O_IDS_FILE}, {"greedy", no_argument, NULL, O_GREEDY},
        {"temperature", required_argument, NULL, O_TEMP}, {"top-p", required_argument, NULL, O_TOPP},
        {"top-k", required_argument, NULL, O_TOPK}, {"seed", required_argument, NULL, O_SEED},
        {"decode-from", required_argument, NULL, O_DECODE_FROM}, {"dump-logits", required_argument, NULL, O_DUMP},
        {"stats", no_argument, NULL, O_STATS}, {"trace", required_argument, NULL, O_TRACE},
        {"weights", required_argument, NULL, O_WEIGHTS}, {"context", required_argument, NULL, O_CONTEXT},
        {"verbose", no_argument, NULL, 'v'}, {"plan", required_argument, NULL, O_PLAN},
        {"sequences", required_argument, NULL, O_SEQS}, {"replica", required_argument, NULL, O_REPLICA},
        {"share-devices", no_argument, NULL, O_SHARE}, {"latent-cache", required_argument, NULL, O_CACHE},
        {"prompt", required_argument, NULL, O_PROMPT}, {"prompt-file", required_argument, NULL, O_PROMPT_FILE},
        {"chat", no_argument, NULL, O_CHAT}, {"no-think", no_argument, NULL, O_NO_THINK},
        {"system", required_argument, NULL, O_SYSTEM}, {"stop", required_argument, NULL, O_STOP},
        {"max-tokens", required_argument, NULL, O_MAX_TOKENS}, {"ignore-eos", no_argument, NULL, O_IGNORE_EOS},
        {"check-weights", no_argument, NULL, O_CHECK_WEIGHTS},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "hvn:", longopts, NULL)) != -1) {
        int d = cli_device_option(opt, optarg, &r->da);
        if (d == 1) continue;
        if (d == -1) return cli_usage_error("run", usage, "bad value '%s' for --device", optarg);
        switch (opt) {
        case 'h':
            printf("usage: %s\n\nRuns A.X K1 (DeepSeek-V3 family) on one device: the prompt through prefill, "
                   "then -n new tokens\nthrough decode; prints the generated ids. --decode-from P prefills the "
                   "first P ids and\nfeeds the rest one at a time through decode. --dump-logits writes F32 "
                   "'logits' [T, vocab]\nfor every prompt position. --random-weights runs any config with seeded "
                   "random weights.\n--sequences N decodes N sequences together (sequence q's prompt drops its first "
                   "q mod T ids);\nit prints one line of ids per sequence. --check-weights refuses a checkpoint with NaN or Inf "
                   "weights,\nnaming the tensor (a scan of every weight at load). Generation stops with an error "
                   "naming the layer\nwhere hidden states or logits turn NaN or Inf.\n\n"
                   "Text: --prompt / --prompt-file is encoded with the checkpoint's tokenizer.json (--chat first wraps it\n"
                   "in its chat template as a user message; --no-think sets enable_thinking false); the generated text\n"
                   "streams to stdout. It stops at the end-of-sequence ids of config.json, generation_config.json and\n"
                   "tokenizer_config.json (not with --ignore-eos), at a --stop string, or after --max-tokens (default:\n"
                   "generation_config.json's max_new_tokens, else 256). Sampling defaults come from\n"
                   "generation_config.json; --greedy or --temperature override it. With --ids exactly -n tokens are\n"
                   "generated, greedily unless told otherwise.\n", usage);
            return CLI_EXIT_OK;
        case O_MODEL: r->model = optarg; break;
        case O_CONFIG: r->config = optarg; break;
        case O_RANDOM: r->random_weights = true; break;
        case O_IDS: r->ids = optarg; break;
        case O_IDS_FILE: r->ids_file = optarg; break;
        case O_GREEDY: r->greedy = true; break;
        case 'n':
            if (!cli_parse_size(optarg, &r->n) || r->n > RUN_MAX_TOKENS)
                return cli_usage_error("run", usage, "bad -n '%s' (0..%zu)", optarg, RUN_MAX_TOKENS);
            r->has_n = true;
            break;
        case O_TEMP: {
            double t;
            if (!cli_parse_double(optarg, 0, 1e6, &t))
                return cli_usage_error("run", usage, "bad --temperature '%s' (a number from 0 to 1e6)", optarg);
            /* below float's range 1/T overflows; such a T is greedy in all but name */
            r->samp.temperature = t < 1e-30 ? 0.0f : (float)t;
            break;
        }
        case O_TOPP: {
            double p;
            if (!cli_parse_double(optarg, 0, 1, &p) || p <= 0)
                return cli_usage_error("run", usage, "bad --top-p '%s' (in (0, 1])", optarg);
            r->samp.top_p = (float)p;
            r->has_top = true;
            break;
        }
        case O_TOPK: {
            size_t k;
            if (!cli_parse_size(optarg, &k) || k > 0xffffffffu) /* a wider k wrapped to 0 = off */
                return cli_usage_error("run", usage, "bad --top-k '%s' (0..4294967295)", optarg);
            r->samp.top_k = (unsigned)k;
            r->has_top = true;
            break;
        }
        case O_SEED: {
            size_t s;
            if (!cli_parse_size(optarg, &s)) return cli_usage_error("run", usage, "bad --seed '%s'", optarg);
            r->samp.seed = s;
            break;
        }
        case O_DECODE_FROM:
            if (!cli_parse_size(optarg, &r->decode_from) || !r->decode_from)
                return cli_usage_error("run", usage, "bad --decode-from '%s' (>= 1)", optarg);
            r->has_decode_from = true;
            break;
        case O_DUMP: r->dump = optarg; break;
        case O_PROMPT: r->prompt = optarg; break;
        case O_PROMPT_FILE: r->prompt_file = optarg; break;
        case O_CHAT: r->chat = true; break;
        case O_NO_THINK: r->no_think = true; break;
        case O_SYSTEM: r->system = optarg; break;
        case O_IGNORE_EOS: r->ignore_eos = true; break;
        case O_STOP:
            if (!*optarg || r->nstop == MAX_STOP) return cli_usage_error("run", usage, "bad --stop (non-empty, at most %d)", MAX_STOP);
            r->stop[r->nstop++] = optarg;
            break;
        case O_MAX_TOKENS:
            if (!cli_parse_size(optarg, &r->n) || r->n > RUN_MAX_TOKENS)
                return cli_usage_error("run", usage, "bad --max-tokens '%s' (0..%zu)", optarg, RUN_MAX_TOKENS);
            r->has_n = true;
            break;
        case O_STATS: r->stats = true; break;
        case 'v': r->verbose = true; break;
        case O_PLAN: r->plan = optarg; break;
        case O_SHARE: r->share_devices = true; break;
        case O_TRACE: r->trace = optarg; break;
        case O_WEIGHTS:
            if (!strcmp(optarg, "int8")) r->weights = CLNPU_DTYPE_I8;
            else if (!strcmp(optarg, "fp8")) r->weights = CLNPU_DTYPE_FP8_E4M3;
            else return cli_usage_error("run", usage, "bad --weights '%s' (int8 or fp8)", optarg);
            break;
        case O_CACHE:
            if (!strcmp(optarg, "f32")) r->latent_cache = CLNPU_DTYPE_F32;
            else if (!strcmp(optarg, "bf16")) r->latent_cache = CLNPU_DTYPE_BF16;
            else if (!strcmp(optarg, "fp8")) r->latent_cache = CLNPU_DTYPE_FP8_E4M3;
            else return cli_usage_error("run", usage, "bad --latent-cache '%s' (f32, bf16 or fp8)", optarg);
            break;
        case O_CONTEXT:
            if (!cli_parse_size(optarg, &r->context) || !r->context || r->context > RUN_MAX_TOKENS)
                return cli_usage_error("run", usage, "bad --context '%s' (1..%zu)", optarg, RUN_MAX_TOKENS);
            break;
        case O_CHECK_WEIGHTS: r->check_weights = true; break;
        case O_REPLICA:
            if (!cli_parse_size(optarg, &r->replica)) return cli_usage_error("run", usage, "bad --replica '%s'", optarg);
            break;
        case O_SEQS:
            if (!cli_parse_size(optarg, &r->sequences) || !r->sequences || r->sequences > 256)
                return cli_usage_error("run", usage, "bad --sequences '%s' (1..256)", optarg);
            break;
        default: return cli_usage_error("run", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("run", usage, "unexpected argument '%s'", argv[optind]);
    if (!r->model && !r->random_weights) return cli_usage_error("run", usage, "--model DIR is required");
    if (r->random_weights && !r->config && !r->model)
        return cli_usage_error("run", usage, "--random-weights needs --config FILE (or --model DIR)");
    if (!!r->ids + !!r->ids_file + !!r->prompt + !!r->prompt_file != 1)
        return cli_usage_error("run", usage, "give exactly one of --ids, --ids-file, --prompt and --prompt-file");
    const bool text = r->prompt || r->prompt_file;
    if (!text && (r->chat || r->nstop || r->system || r->no_think))
        return cli_usage_error("run", usage, "--chat, --stop, --system and --no-think need --prompt or --prompt-file");
    if ((r->no_think || r->system) && !r->chat) return cli_usage_error("run", usage, "--no-think and --system go with --chat");
    if (text && !r->model) return cli_usage_error("run", usage, "--prompt needs --model DIR (its tokenizer.json)");
    if (r->plan && (r->trace || r->da.target))
        return cli_usage_error("run", usage, "--plan chooses devices and profiles itself (no --trace / --target)");
    if (r->share_devices && !r->plan) return cli_usage_error("run", usage, "--share-devices is for a plan's devices: give --plan");
    if (r->replica && !r->plan) return cli_usage_error("run", usage, "--replica is a plan's pipeline replica: give --plan");
    if (r->sequences > 1 && r->has_decode_from)
        return cli_usage_error("run", usage, "--decode-from is for one sequence");
    if (r->greedy && r->samp.temperature > 0)
        return cli_usage_error("run", usage, "--greedy and --temperature exclude each other");
    if (r->has_top && !(r->samp.temperature > 0))
        return cli_usage_error("run", usage, "--top-k and --top-p shape sampling: give --temperature T > 0 too");
    /* ranks share work only through a plan; without one every rank would repeat the same job */
    const char *ranks = getenv("OMPI_COMM_WORLD_SIZE");
    if (!r->plan && ranks && atoi(ranks) > 1)
        return cli_usage_error("run", usage, "started by mpirun with %s ranks: give --plan (ranks run its stages)", ranks);
    return -1;
}

static int run_job(run_args r, const void *comm);

int cmd_run(int argc, char **argv)
{
    run_args r = {.weights = -1, .latent_cache = -1};
    int rc = parse(argc, argv, &r);
    if (rc >= 0) return rc;
    /* under mpirun the ranks run a plan's stages: MPI is ours to start, and a failed rank ends
     * the job instead of waiting for the others in MPI_Finalize (tools/cli_mpi.c) */
    const void *comm = NULL;
    if (r.plan && cli_mpi_begin(&comm)) return CLI_EXIT_FAIL;
    return cli_mpi_end(run_job(r, comm));
}

static int run_job(run_args r, const void *comm)
{
    int rc;
    int *ids = NULL;
    size_t T = 0;
    cli_text tx = {0};
    const bool text_mode = r.prompt || r.prompt_file;
    if (text_mode) {
        /* the prompt through the checkpoint's chat template and tokenizer */
        char err[4200], *rendered = NULL;
        size_t plen = 0;
        char *ptext = r.prompt_file ? cli_read_file(r.prompt_file, RUN_IDS_FILE_MAX, &plen, err, sizeof err) : NULL;
        if (r.prompt_file && !ptext) return cli_fail_msg("run", "%s", err); /* a regular file under a size cap */
        const char *prompt = ptext ? ptext : r.prompt;
        clnpu_status ts = cli_text_load(r.model, r.chat, &tx);
        cli_message msgs[2] = {{"system", r.system}, {"user", prompt}};
        if (!ts && r.chat) ts = cli_text_chat_prompt(&tx, r.system ? msgs : msgs + 1, r.system ? 2 : 1, r.no_think ? 0 : -1, true, &rendered);
        if (!ts) ts = clnpu_tokenizer_encode(tx.tok, rendered ? rendered : prompt, strlen(rendered ? rendered : prompt), &ids, &T);
        if (!ts && !T) ts = CLNPU_ERR_INVALID_ARGUMENT, fprintf(stderr, "clnpu run: error: the prompt encodes to no tokens\n");
        free(ptext), free(rendered);
        if (ts) {
            cli_text_free(&tx);
            free(ids);
            return T || clnpu_error_message()[0] ? cli_fail("run", ts) : CLI_EXIT_FAIL;
        }
        if (!r.greedy && r.samp.temperature <= 0) { /* generation_config.json's sampling unless told otherwise */
            r.samp.temperature = tx.samp.temperature;
            if (!r.samp.top_k) r.samp.top_k = tx.samp.top_k;
            if (!r.samp.top_p) r.samp.top_p = tx.samp.top_p;
        }
        if (!r.has_n) r.n = tx.max_new_tokens ? tx.max_new_tokens : 256;
    } else {
        char *text = NULL;
        size_t text_len = 0;
        if (r.ids_file) { /* a regular file under a size cap: not a directory, FIFO or /dev/zero */
            char err[4200];
            if (!(text = cli_read_file(r.ids_file, RUN_IDS_FILE_MAX, &text_len, err, sizeof err)))
                return cli_fail_msg("run", "%s", err);
        }
        const int pr = r.ids ? cli_parse_ids(r.ids, strlen(r.ids), RUN_MAX_TOKENS, &ids, &T)
                             : cli_parse_ids(text, text_len, RUN_MAX_TOKENS, &ids, &T);
        if (pr) {
            free(text);
            if (pr == CLI_IDS_NO_MEMORY) return cli_fail_msg("run", "out of host memory for the ids");
            if (pr == CLI_IDS_TOO_MANY) return cli_usage_error("run", usage, "more than %zu ids", RUN_MAX_TOKENS);
            return cli_usage_error("run", usage, "ids must be integers from 0 to 2^31-1 separated by commas or spaces");
        }
        free(text);
    }
    if (r.has_decode_from && r.decode_from > T) {
        free(ids);
        return cli_usage_error("run", usage, "--decode-from %zu is past the %zu prompt ids", r.decode_from, T);
    }
    char cfgpath[4096];
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", r.model);
    if (r.config) snprintf(cfgpath, sizeof cfgpath, "%s", r.config);
    clnpu_model_config cfg;
    clnpu_checkpoint *ck = NULL;
    clnpu_device *dev = NULL;
    clnpu_model *m = NULL;
    float *logits = NULL;
    clnpu_generator *gen = NULL;
    clnpu_status st = clnpu_model_config_load(cfgpath, &cfg);
    /* positions 0 .. T + n - 2 are used (the last token is not fed back); text mode's default budget
     * ends where the context does instead */
    const size_t positions = T + (r.n && (!text_mode || r.has_n) ? r.n - 1 : 0);
    if (!st && (positions > cfg.max_position_embeddings || r.context > cfg.max_position_embeddings)) {
        free(ids); /* nothing else is held yet */
        return cli_fail_msg("run", "%s: %zu prompt ids and %zu new tokens need %zu positions (context %zu); the model "
                            "has max_position_embeddings %zu", cfgpath, T, r.n, positions,
                            r.context ? r.context : T + r.n + 1, cfg.max_position_embeddings);
    }
    if (!st && !r.random_weights) st = clnpu_checkpoint_open(r.model, &ck);
    if (!st) st = cli_open_device(&r.da, r.trace != NULL, &dev);
    if (!st) clnpu_device_set_tuning_verbose(dev, r.verbose); /* say which tuning entries the kernels use */
    const size_t V = cfg.vocab_size;
    const size_t P = r.has_decode_from ? r.decode_from : T;
    clnpu_model_options o = clnpu_model_options_default();
    const size_t S = r.sequences ? r.sequences : 1;
    o.max_sequences = S;
    o.max_context = r.context ? r.context : T + r.n + 1;
    /* the positions fit (checked above): the default context stops at the model's, which also ends
     * text mode's default budget there */
    if (!r.context && o.max_context > cfg.max_position_embeddings) o.max_context = cfg.max_position_embeddings;
    o.max_tokens = P < 512 ? (P ? P : 1) : 512;
    o.weights = r.weights;
    o.latent_cache = r.latent_cache >= 0 ? (clnpu_dtype)r.latent_cache : CLNPU_DTYPE_F32;
    o.check_weights = r.check_weights;
    o.progress = isatty(STDERR_FILENO); /* a live progress line only for a person watching */
    clnpu_pipeline *pl = NULL;
    clnpu_stage_spec *specs = NULL;
    size_t nspecs = 0;
    double t0 = now_s();
    if (!st && r.plan) {
        /* The plan's stages, each on its own device: the residual stream crosses them. */
        /* stages with several devices run their experts there (expert parallel) */
        clnpu_plan_layout lay;
        st = clnpu_pipeline_read_plan(r.plan, &cfg, &specs, &nspecs, &lay);
        /* the plan's weight dtype is what its memory assumed: honoured, or a clash refused */
        if (!st) st = clnpu_plan_layout_weights(&lay, r.plan, r.weights, &r.weights);
        o.weights = r.weights;
        if (!st) st = clnpu_plan_layout_latent_cache(&lay, r.plan, r.latent_cache, &o.latent_cache);
        o.share_devices = r.share_devices;
        /* prompts in chunks of at most the plan's max_tokens: the workspaces its memory counted */
        if (!st && o.max_tokens > lay.max_tokens) o.max_tokens = lay.max_tokens;
        /* pipeline replica k on its own devices */
        if (!st) st = clnpu_stage_specs_replica(specs, nspecs, r.replica, lay.pipeline_replicas);
        /* a test's rank that fails to load its stages: it is given a config the checkpoint does not
         * match, so the library's own set-up fails there (and the ranks' agreement reports it) */
        clnpu_model_config stage_cfg = cfg;
        if (!st && cli_mpi_fault_load()) {
            fprintf(stderr, "clnpu run: rank %d: set-up failure injected (CLNPU_FAULT_RANK)\n", cli_mpi_rank());
            stage_cfg.kv_lora_rank++;
        }
        if (!st) st = clnpu_pipeline_create_mpi(&stage_cfg, ck, specs, nspecs, &o, comm, &pl);
        if (!st) clnpu_pipeline_set_micro_batches(pl, lay.micro_batches);
    } else if (!st) {
        st = clnpu_model_create(dev, &cfg, ck, &o, &m);
    }
    double t_load = now_s() - t0;
    if (!st && r.trace) st = clnpu_device_trace_start(dev);
    if (!st && !(logits = malloc(T * V * sizeof *logits)))
        st = run_oom();
    /* Only --dump-logits needs every prompt position's logits; generation needs the last one. */
    const bool head_all = pl || r.dump || !P;
    /* an empty cache: the run's programs built ahead, in helper processes side by side */
    cli_prebuild_result pre = {0};
    if (!st && m && P)
        cli_prebuild(&r.da, dev, m, &(cli_prebuild_pass){ids, T, P, head_all, S, r.n, V, o.max_context, r.samp}, &pre);
    /* kernels are built at their first launch: their time is counted apart from throughput */
    const clnpu_program_stats k0 = build_stats(dev, pl, nspecs);
    t0 = now_s();
    if (!st && pl) cli_mpi_fault_step(); /* the tests' killed or stopped rank, at its first step */
    if (!st) st = pl ? clnpu_pipeline_prefill(pl, 0, ids, P, logits)
                  : head_all ? clnpu_model_prefill(m, 0, ids, P, logits)
                             : clnpu_model_prefill_last(m, 0, ids, P, logits + (P - 1) * V);
    /* the other sequences: the prompt without its first q mod P ids; their last rows kept */
    float *last = !st && r.n ? malloc(S * V * sizeof *last) : NULL, *tmp = S > 1 && !st ? malloc(P * V * sizeof *tmp) : NULL;
    if (!st && ((r.n && !last) || (S > 1 && !tmp))) st = run_oom();
    size_t prefilled = P;
    for (size_t q = 1; !st && q < S; q++) {
        const size_t off = q % P, len = P - off;
        st = pl ? clnpu_pipeline_prefill(pl, q, ids + off, len, tmp) : clnpu_model_prefill_last(m, q, ids + off, len, tmp);
        if (!st && last) memcpy(last + q * V, tmp + (pl ? len - 1 : 0) * V, V * sizeof *last);
        prefilled += len;
    }
    double t_prefill = now_s() - t0;
    const clnpu_program_stats k1 = build_stats(dev, pl, nspecs);
    t0 = now_s();
    size_t seq = 0, decoded = 0;
    for (size_t t = P; !st && t < T; t++, decoded++)
        st = pl ? clnpu_pipeline_decode(pl, &seq, ids + t, 1, logits + t * V) : clnpu_model_decode(m, &seq, ids + t, 1, logits + t * V);
    /* Generation through the library's loop (include/clnpu/generate.h): every sequence starts
     * from its prompt's last logits; the first tokens are drawn from those, then each decode step
     * of one model draws the next tokens on the device (only the ids come back). */
    const bool speak0 = !pl || clnpu_pipeline_rank(pl) == 0;
    if (!st && r.n) {
        /* a plan's tokens are drawn on the head's device, where the plan counts the sampler's rows
         * (an MPI rank without the head draws on its own device) */
        clnpu_device *head = pl ? clnpu_pipeline_stage_device(pl, nspecs - 1) : NULL;
        clnpu_generator_options go = {.model = m, .pipeline = pl, .device = head ? head : dev, .tokenizer = text_mode ? tx.tok : NULL,
                                      .vocab_size = V, .max_sequences = S, .max_context = o.max_context};
        st = clnpu_generator_create(&go, &gen);
        clnpu_generate_config gc = clnpu_generate_config_default();
        gc.sampling = r.samp, gc.max_tokens = r.n;
        if (text_mode && !r.ignore_eos) gc.eos_ids = tx.eos, gc.n_eos = tx.neos;
        gc.stop = r.stop, gc.n_stop = r.nstop;
        if (!st) memcpy(last, logits + (T - 1) * V, V * sizeof *last);
        for (size_t q = 0; !st && q < S; q++)
            st = clnpu_generator_start_from_logits(gen, q, q ? P - q % P : T, last + q * V, &gc);
        /* one sequence's text streams as it comes; several are printed when done */
        const bool stream = text_mode && S == 1 && speak0;
        if (!st) st = clnpu_generator_run(gen, stream ? cli_stream_token : NULL, NULL);
        decoded += clnpu_generator_decoded(gen);
    }
    free(last), free(tmp);
    double t_decode = now_s() - t0;
    const clnpu_program_stats k2 = build_stats(dev, pl, nspecs);
    /* throughput without the builds */
    const double b_prefill = (stats_ms(k1) - stats_ms(k0)) / 1e3, b_decode = (stats_ms(k2) - stats_ms(k1)) / 1e3;
    t_prefill -= b_prefill, t_decode -= b_decode;
    /* under MPI every rank has the same ids and logits; rank 0 speaks */
    const bool speak = !pl || clnpu_pipeline_rank(pl) == 0;
    if (!st && r.dump && speak) {
        clnpu_tensor_out out = {"logits", CLNPU_DTYPE_F32, 2, {(int64_t)T, (int64_t)V}, logits};
        st = clnpu_safetensors_write(r.dump, &out, 1);
    }
    size_t events = 0;
    if (!st && r.trace) st = clnpu_device_trace_write(dev, r.trace, &events);
    if (!st && speak && !r.n && !r.dump && !r.stats && isatty(STDERR_FILENO))
        fprintf(stderr, "clnpu run: the prompt ran through prefill; no tokens were generated (give -n N)\n");
    if (!st && speak && gen) {
        for (size_t q = 0; q < S; q++) {
            size_t k, tl;
            const int *g = clnpu_generator_tokens(gen, q, &k);
            const char *t = clnpu_generator_text(gen, q, &tl);
            if (text_mode && S > 1) printf("--- sequence %zu ---\n", q);
            if (text_mode && S > 1) fwrite(t, 1, tl, stdout);
            if (text_mode && (S > 1 || isatty(STDOUT_FILENO))) printf("\n");
            if (!text_mode) {
                for (size_t i = 0; i < k; i++) printf(i ? ",%d" : "%d", g[i]);
                printf("\n");
            }
        }
        fflush(stdout);
    }
    if (!st && r.stats && speak) {
        char mem[32], cap[32];
        cli_format_bytes((double)clnpu_device_memory_used(dev), mem, sizeof mem);
        cli_format_bytes((double)clnpu_device_memory_capacity(dev), cap, sizeof cap);
        double total, active;
        clnpu_model_config_params(&cfg, &total, &active);
        fprintf(stderr, "model: %s, %.4g M parameters (%.4g M active per token), %s weights%s\n",
                cfg.model_type, total / 1e6, active / 1e6,
                r.weights >= 0 ? clnpu_dtype_name((clnpu_dtype)r.weights) : r.random_weights ? "bf16"
                                                   : cfg.fp8_checkpoint ? "fp8 checkpoint" : "checkpoint",
                r.random_weights ? " (random)" : "");
        if (m) { /* what the weights hold on the device: fp8 checkpoints stay 1 byte a weight + block scales */
            clnpu_model_weight_stats ws;
            clnpu_model_weight_stats_get(m, &ws);
            fprintf(stderr, "weights loaded:");
            for (int t = 0; t < CLNPU_DTYPE_COUNT; t++)
                if (ws.elements[t] > 0)
                    fprintf(stderr, " %s %.4g M (%.4g MB)", clnpu_dtype_name((clnpu_dtype)t), ws.elements[t] / 1e6,
                            ws.elements[t] * clnpu_dtype_size((clnpu_dtype)t) / 1e6);
            if (ws.scale_bytes > 0) fprintf(stderr, " + scales %.4g MB", ws.scale_bytes / 1e6);
            fprintf(stderr, "\n");
        }
        fprintf(stderr, "load: %.2f s\n", t_load);
        if (pre.helpers)
            fprintf(stderr, "kernels: %zu programs built ahead by %zu helper processes in %.2f s%s\n", pre.programs,
                    pre.helpers, pre.seconds, pre.failed ? " (some failed: built here)" : "");
        fprintf(stderr, "kernels: built %zu programs in %.2f s, %zu from the cache in %.2f s%s\n", k2.built - k0.built,
                (k2.build_ms - k0.build_ms) / 1e3, k2.cached - k0.cached, (k2.cache_ms - k0.cache_ms) / 1e3,
                k2.built > k0.built ? " (now cached)" : "");
        fprintf(stderr, "prefill: %zu tokens in %.1f ms, %.1f tokens/s (kernel builds excluded)\n", prefilled, t_prefill * 1e3,
                prefilled / t_prefill);
        if (decoded)
            fprintf(stderr, "decode: %zu tokens in %.1f ms, %.2f tokens/s\n", decoded, t_decode * 1e3,
                    decoded / t_decode);
        /* The memory roofline of decode: every active weight byte read once per token (the
         * embedding table is not: one row is), at the profile's memory bandwidth. */
        const double bw = clnpu_device_get_profile(dev)->memory_bandwidth;
        const int wdt = r.weights >= 0 ? r.weights : r.random_weights ? CLNPU_DTYPE_BF16
                                                    : cfg.fp8_checkpoint ? CLNPU_DTYPE_FP8_E4M3 : -1;
        if (decoded && !pl && wdt >= 0 && bw > 0 && S == 1) { /* a batch shares the weight reads */
            const double bytes = (active - (double)cfg.vocab_size * cfg.hidden_size) * clnpu_dtype_size((clnpu_dtype)wdt);
            fprintf(stderr, "decode roofline: %.0f MB of %s weights per token at %.1f GB/s (profile %s) = %.1f tokens/s; "
                    "measured %.2fx\n", bytes / 1e6, clnpu_dtype_name((clnpu_dtype)wdt), bw / 1e9,
                    clnpu_device_get_profile(dev)->name, bw / bytes, decoded / t_decode / (bw / bytes));
        }
    }
    /* each rank's own stages' devices (under MPI every rank reports its own) */
    for (size_t s = 0; !st && r.stats && s < (pl ? nspecs : 1); s++) {
        char mem[32], cap[32];
        clnpu_device *dv = pl ? clnpu_pipeline_stage_device(pl, s) : dev;
        if (!dv) continue; /* a stage of another MPI rank */
        cli_format_bytes((double)clnpu_device_memory_used(dv), mem, sizeof mem);
        cli_format_bytes((double)clnpu_device_memory_capacity(dv), cap, sizeof cap);
        char who[32] = "";
        if (pl && clnpu_pipeline_ranks(pl) > 1) snprintf(who, sizeof who, "rank %d: ", clnpu_pipeline_rank(pl));
        fprintf(stderr, "%s%sdevice %zu (%s, profile %s%s): %s of %s in use\n", who, pl ? "stage " : "",
                clnpu_device_get_info(dv)->index, clnpu_device_get_info(dv)->name, clnpu_device_get_profile(dv)->name,
                clnpu_device_is_emulated(dv) ? ", emulated" : "", mem, cap);
    }
    if (!st && r.trace) fprintf(stderr, "trace: %zu kernel spans in %s\n", events, r.trace);
    if (st && comm) fprintf(stderr, "clnpu run: rank %d of %d:\n", cli_mpi_rank(), cli_mpi_ranks_from_env());
    rc = st ? cli_fail("run", st) : CLI_EXIT_OK;
    /* a failed rank ends the job now: freeing the pipeline could wait for sends to a stopped peer */
    if (rc != CLI_EXIT_OK && comm) cli_mpi_end(rc);
    if (!st && r.stats && speak && gen && text_mode)
        for (size_t q = 0; q < S; q++) {
            size_t k;
            clnpu_generator_tokens(gen, q, &k);
            fprintf(stderr, "sequence %zu: %zu prompt tokens, %zu generated, stopped by %s\n", q, q ? P - q % P : T, k,
                    clnpu_finish_reason_name(clnpu_generator_finish_reason(gen, q)));
        }
    clnpu_generator_destroy(gen);
    cli_text_free(&tx);
    clnpu_model_destroy(m);
    clnpu_pipeline_destroy(pl);
    free(specs);
    clnpu_checkpoint_close(ck);
    clnpu_device_close(dev);
    free(ids), free(logits);
    return rc;
}
