/* `clnpu serve`: an OpenAI-compatible HTTP server over one model with continuous batching
 * (docs/serving.md). The process's signals are the CLI's: SIGINT / SIGTERM stop it cleanly. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cli_text.h"

static const char usage[] =
    "clnpu serve (--model DIR | --random-weights --config FILE) " CLI_DEVICE_USAGE "\n"
    "          [--host 127.0.0.1] [--port 8080] [--api-key KEY] [--name NAME] [--sequences N] [--context L]\n"
    "          [--cache-pages P] [--step-tokens T] [--no-prefix-cache] [--max-waiting W] [--max-body BYTES]\n"
    "          [--max-tokens N] [--timeout S] [--weights int8|fp8] [--latent-cache f32|bf16|fp8]\n"
    "          [--plan plan.yaml [--share-devices]]\n"
    "mpirun -np R clnpu serve --plan plan.yaml ...   (rank 0 serves HTTP; the others run their stages)";

typedef struct serve_args {
    cli_device_args da;
    const char *model, *config, *host, *api_key, *name, *plan;
    bool random_weights, no_prefix, share_devices;
    size_t port, sequences, context, cache_pages, step_tokens, max_waiting, max_body, max_tokens, timeout;
    int weights, latent_cache;
} serve_args;

static int parse(int argc, char **argv, serve_args *a)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_CONFIG, O_RANDOM, O_HOST, O_PORT, O_KEY, O_NAME, O_SEQS, O_CONTEXT, O_PAGES,
           O_STEP, O_NOPREFIX, O_WAITING, O_BODY, O_MAXTOK, O_TIMEOUT, O_WEIGHTS, O_PLAN, O_SHARE, O_CACHE };
    static const struct option longopts[] = {
        CLI_DEVICE_LONGOPTS, {"model", required_argument, NULL, O_MODEL}, {"config", required_argument, NULL, O_CONFIG},
        {"random-weights", no_argument, NULL, O_RANDOM}, {"host", required_argument, NULL, O_HOST},
        {"port", required_argument, NULL, O_PORT}, {"api-key", required_argument, NULL, O_KEY},
        {"name", required_argument, NULL, O_NAME}, {"sequences", required_argument, NULL, O_SEQS},
        {"context", required_argument, NULL, O_CONTEXT}, {"cache-pages", required_argument, NULL, O_PAGES},
        {"step-tokens", required_argument, NULL, O_STEP}, {"no-prefix-cache", no_argument, NULL, O_NOPREFIX},
        {"max-waiting", required_argument, NULL, O_WAITING}, {"max-body", required_argument, NULL, O_BODY},
        {"max-tokens", required_argument, NULL, O_MAXTOK}, {"timeout", required_argument, NULL, O_TIMEOUT},
        {"weights", required_argument, NULL, O_WEIGHTS}, {"plan", required_argument, NULL, O_PLAN},
        {"share-devices", no_argument, NULL, O_SHARE}, {"latent-cache", required_argument, NULL, O_CACHE}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    struct { int opt; size_t *dst; size_t lo, hi; const char *name; } sizes[] = {
        {O_PORT, &a->port, 0, 65535, "--port"}, {O_SEQS, &a->sequences, 1, 256, "--sequences"},
        {O_CONTEXT, &a->context, 1, 1 << 20, "--context"}, {O_PAGES, &a->cache_pages, 1, 1 << 24, "--cache-pages"},
        {O_STEP, &a->step_tokens, 1, 1 << 16, "--step-tokens"}, {O_WAITING, &a->max_waiting, 1, 1 << 20, "--max-waiting"},
        {O_BODY, &a->max_body, 64, 1 << 30, "--max-body"}, {O_MAXTOK, &a->max_tokens, 1, 1 << 20, "--max-tokens"},
        {O_TIMEOUT, &a->timeout, 1, 86400, "--timeout"}};
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int d = cli_device_option_checked(opt, optarg, &a->da, "serve", usage);
        if (d == 1) continue;
        if (d < 0) return -d;
        bool done = false;
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            if (sizes[i].opt != opt) continue;
            if (!cli_parse_size(optarg, sizes[i].dst) || *sizes[i].dst < sizes[i].lo || *sizes[i].dst > sizes[i].hi)
                return cli_usage_error("serve", usage, "bad %s '%s' (%zu..%zu)", sizes[i].name, optarg, sizes[i].lo,
                                       sizes[i].hi);
            done = true;
        }
        if (done) continue;
        switch (opt) {
        case 'h':
            printf("usage: %s\n\nServes the model over HTTP (OpenAI API: /v1/completions, /v1/chat/completions, "
                   "/v1/models,\n/health, /metrics) with continuous batching of up to --sequences requests (default 8) "
                   "over\nthe paged latent cache (--cache-pages, default: every sequence at full context). Binds "
                   "127.0.0.1\nunless --host says otherwise. See docs/serving.md.\n", usage);
            return CLI_EXIT_OK;
        case O_MODEL: a->model = optarg; break;
        case O_CONFIG: a->config = optarg; break;
        case O_RANDOM: a->random_weights = true; break;
        case O_HOST: a->host = optarg; break;
        case O_KEY: a->api_key = optarg; break;
        case O_NAME: a->name = optarg; break;
        case O_NOPREFIX: a->no_prefix = true; break;
        case O_PLAN: a->plan = optarg; break;
        case O_SHARE: a->share_devices = true; break;
        case O_CACHE:
            if (!strcmp(optarg, "f32")) a->latent_cache = CLNPU_DTYPE_F32;
            else if (!strcmp(optarg, "bf16")) a->latent_cache = CLNPU_DTYPE_BF16;
            else if (!strcmp(optarg, "fp8")) a->latent_cache = CLNPU_DTYPE_FP8_E4M3;
            else return cli_usage_error("serve", usage, "bad --latent-cache '%s' (f32, bf16 or fp8)", optarg);
            break;
        case O_WEIGHTS:
            if (!strcmp(optarg, "int8")) a->weights = CLNPU_DTYPE_I8;
            else if (!strcmp(optarg, "fp8")) a->weights = CLNPU_DTYPE_FP8_E4M3;
            else return cli_usage_error("serve", usage, "bad --weights '%s' (int8 or fp8)", optarg);
            break;
        default: return cli_usage_error("serve", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("serve", usage, "unexpected argument '%s'", argv[optind]);
    if (!a->model && !a->random_weights) return cli_usage_error("serve", usage, "--model DIR is required");
    if (a->random_weights && !a->config && !a->model)
        return cli_usage_error("serve", usage, "--random-weights needs --config FILE (or --model DIR)");
    if (a->api_key && !*a->api_key) return cli_usage_error("serve", usage, "--api-key must not be empty");
    if (a->plan && (a->cache_pages || a->da.target))
        return cli_usage_error("serve", usage, "--plan gives every sequence its pages on each stage and chooses "
                               "devices itself (no --cache-pages / --target)");
    if (a->share_devices && !a->plan) return cli_usage_error("serve", usage, "--share-devices is for a plan: give --plan");
    const char *ranks = getenv("OMPI_COMM_WORLD_SIZE");
    if (!a->plan && ranks && atoi(ranks) > 1)
        return cli_usage_error("serve", usage, "started by mpirun with %s ranks: give --plan", ranks);
    return -1;
}

/* The server's text hooks over the checkpoint's tokenizer and chat template (tools/cli_text.c). */
static clnpu_status text_encode(void *ctx, const char *text, size_t len, int **out_ids, size_t *out_n)
{
    return clnpu_tokenizer_encode(((cli_text *)ctx)->tok, text, len, out_ids, out_n);
}

static clnpu_status text_decode(void *ctx, const int *ids, size_t n, char **out_text, size_t *out_len)
{
    return clnpu_tokenizer_decode(((cli_text *)ctx)->tok, ids, n, out_text, out_len);
}

static clnpu_status text_chat(void *ctx, const char *messages, bool generation_prompt, int thinking, char **out)
{
    clnpu_chat_options o = clnpu_chat_options_default();
    o.add_generation_prompt = generation_prompt, o.enable_thinking = thinking;
    return clnpu_chat_template_render(((cli_text *)ctx)->tmpl, messages, &o, out);
}

/* SIGINT / SIGTERM (blocked in every thread) end the engine's loop on the main thread. */
static void *wait_signal(void *arg)
{
    void **a = arg;
    int sig;
    sigwait(a[1], &sig);
    fprintf(stderr, "clnpu serve: %s: stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    clnpu_engine_stop(a[0]);
    return NULL;
}

static int serve_job(serve_args a, const void *comm);

int cmd_serve(int argc, char **argv)
{
    serve_args a = {.weights = -1, .latent_cache = -1, .port = 8080, .sequences = 8, .host = "127.0.0.1"};
    int rc = parse(argc, argv, &a);
    if (rc >= 0) return rc;
    /* under mpirun: MPI is the CLI's, and a failed rank ends the job (tools/cli_mpi.c) */
    const void *comm = NULL;
    if (a.plan && cli_mpi_begin(&comm)) return CLI_EXIT_FAIL;
    return cli_mpi_end(serve_job(a, comm));
}

static int serve_job(serve_args a, const void *comm)
{
    int rc = CLI_EXIT_OK;
    char cfgpath[4096];
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", a.model);
    if (a.config) snprintf(cfgpath, sizeof cfgpath, "%s", a.config);
    /* the signals that stop the server go to one thread's sigwait, in no other thread's way */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT), sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    clnpu_model_config cfg;
    clnpu_checkpoint *ck = NULL;
    clnpu_device *dev = NULL;
    clnpu_model *m = NULL;
    clnpu_pipeline *pl = NULL;
    clnpu_stage_spec *specs = NULL;
    size_t nspecs = 0;
    clnpu_engine *e = NULL;
    clnpu_server *srv = NULL;
    clnpu_status st = clnpu_model_config_load(cfgpath, &cfg);
    if (!st && !a.random_weights) st = clnpu_checkpoint_open(a.model, &ck);
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = a.sequences;
    o.max_context = a.context;
    o.cache_pages = a.cache_pages;
    o.weights = a.weights;
    o.latent_cache = a.latent_cache >= 0 ? (clnpu_dtype)a.latent_cache : CLNPU_DTYPE_F32;
    if (!st && a.plan) {
        clnpu_plan_layout lay;
        st = clnpu_pipeline_read_plan(a.plan, &cfg, &specs, &nspecs, &lay);
        /* what the plan's memory assumed: its weights and latent cache, prompt chunks of its max_tokens */
        if (!st) st = clnpu_plan_layout_weights(&lay, a.plan, a.weights, &o.weights);
        if (!st) st = clnpu_plan_layout_latent_cache(&lay, a.plan, a.latent_cache, &o.latent_cache);
        if (!st && o.max_tokens > lay.max_tokens) o.max_tokens = lay.max_tokens;
        o.share_devices = a.share_devices;
        if (!st) st = clnpu_pipeline_create_mpi(&cfg, ck, specs, nspecs, &o, comm, &pl);
        if (!st) clnpu_pipeline_set_micro_batches(pl, lay.micro_batches);
        if (!st && clnpu_pipeline_rank(pl) != 0) { /* a rank that runs its stages when rank 0 says */
            st = clnpu_pipeline_serve_follow(pl);
            rc = st ? cli_fail("serve", st) : CLI_EXIT_OK;
            clnpu_pipeline_destroy(pl);
            free(specs);
            clnpu_checkpoint_close(ck);
            return rc;
        }
    } else if (!st) {
        st = cli_open_device(&a.da, false, &dev);
        if (!st) st = clnpu_model_create(dev, &cfg, ck, &o, &m);
    }
    clnpu_engine_options eo = clnpu_engine_options_default();
    eo.prefix_cache = !a.no_prefix;
    if (a.step_tokens) eo.step_tokens = a.step_tokens;
    if (a.max_waiting) eo.max_waiting = a.max_waiting;
    if (!st) st = pl ? clnpu_engine_create_pipeline(pl, &eo, &e) : clnpu_engine_create(m, &eo, &e);
    /* text in and out where the checkpoint has a tokenizer (and a chat template for chats) */
    cli_text text = {0};
    clnpu_server_text hooks = {&text, text_encode, text_decode, text_chat};
    char tokpath[4096];
    snprintf(tokpath, sizeof tokpath, "%s/tokenizer.json", a.model ? a.model : "");
    const bool has_tok = !st && a.model && !access(tokpath, F_OK);
    if (has_tok) st = cli_text_load(a.model, false, &text);
    if (has_tok && !st && clnpu_chat_template_load(a.model, &text.tmpl)) {
        fprintf(stderr, "clnpu serve: %s: no chat template (%s): /v1/chat/completions will answer 400\n", a.model,
                clnpu_error_message());
        hooks.chat = NULL;
    }
    int eos[16];
    clnpu_server_options so = clnpu_server_options_default();
    if (has_tok && !st) {
        so.text = &hooks;
        if (text.has_generation_config) so.defaults = text.samp;
    }
    so.host = a.host, so.port = (unsigned)a.port, so.api_key = a.api_key;
    const char *base = a.model ? strrchr(a.model, '/') : NULL;
    so.model_name = a.name ? a.name : base && base[1] ? base + 1 : a.model ? a.model : cfg.model_type;
    if (a.max_body) so.max_body = a.max_body;
    if (a.max_tokens) so.max_tokens = a.max_tokens;
    if (a.timeout) so.timeout_s = (unsigned)a.timeout;
    so.eos_count = has_tok ? text.neos : a.model ? cli_eos_ids(a.model, eos, 16) : 0;
    so.eos_ids = has_tok ? text.eos : eos;
    if (!st) st = clnpu_server_start(e, &so, &srv);
    if (!st) {
        clnpu_engine_stats es;
        clnpu_engine_get_stats(e, &es);
        fprintf(stderr, "clnpu serve: http://%s:%u/ (model %s, %zu sequences, %zu-token context, %zu cache pages%s)\n",
                strchr(a.host, ':') ? "[::1]" : a.host, clnpu_server_port(srv), so.model_name, a.sequences,
                clnpu_engine_context(e), es.pages, pl ? ", a plan" : "");
        void *arg[2] = {e, &sigs};
        pthread_t th;
        if (pthread_create(&th, NULL, wait_signal, arg)) {
            fprintf(stderr, "clnpu serve: error: cannot start the signal thread\n");
            rc = CLI_EXIT_FAIL;
        } else {
            st = clnpu_engine_run(e); /* the engine on this thread: MPI calls stay on the main thread */
            pthread_join(th, NULL);
        }
    }
    if (!rc) rc = st ? cli_fail("serve", st) : CLI_EXIT_OK;
    clnpu_engine_shutdown(e); /* open requests end (cancelled), so their connections close */
    clnpu_server_stop(srv);
    clnpu_engine_destroy(e);
    cli_text_free(&text);
    clnpu_model_destroy(m);
    clnpu_pipeline_destroy(pl);
    free(specs);
    clnpu_checkpoint_close(ck);
    clnpu_device_close(dev);
    return rc;
}
