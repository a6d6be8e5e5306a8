/* `clnpu chat --model DIR`: an interactive conversation through the checkpoint's chat template,
 * line editing with libedit, the reply streamed as it is generated. The KV cache is kept between
 * turns: each turn prefills only what the template adds after the text the cache already holds. */
#include <editline/readline.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_text.h"

static const char usage[] = "clnpu chat --model DIR " CLI_DEVICE_USAGE
                            "\n           [--system TEXT] [--no-think] [--max-tokens N] [--context L] [--greedy | --temperature T "
                            "[--top-k K] [--top-p P] [--seed S]] [--stats]";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One line from a person (libedit, with history) or from a pipe; NULL at the end. */
static char *read_turn(bool tty)
{
    if (tty) {
        char *l = readline("> ");
        if (l && *l) add_history(l);
        return l;
    }
    size_t cap = 0;
    char *l = NULL;
    ssize_t n = getline(&l, &cap, stdin);
    if (n < 0) {
        free(l);
        return NULL;
    }
    while (n > 0 && (l[n - 1] == '\n' || l[n - 1] == '\r')) l[--n] = '\0';
    return l;
}

typedef struct history {
    cli_message *m;
    char **owned;
    size_t n, cap;
} history;

static bool history_add(history *h, const char *role, const char *content)
{
    if (h->n == h->cap) {
        size_t c = h->cap ? h->cap * 2 : 8;
        cli_message *m = realloc(h->m, c * sizeof *m);
        if (m) h->m = m;
        char **o = m ? realloc(h->owned, c * sizeof *o) : NULL;
        if (!o) return false;
        h->owned = o, h->cap = c;
    }
    if (!(h->owned[h->n] = strdup(content))) return false;
    h->m[h->n] = (cli_message){role, h->owned[h->n]};
    h->n++;
    return true;
}

static void history_clear(history *h, size_t keep)
{
    while (h->n > keep) free(h->owned[--h->n]);
}

int cmd_chat(int argc, char **argv)
{
    enum { O_MODEL = CLI_OPT_FIRST_FREE, O_SYSTEM, O_NO_THINK, O_MAX_TOKENS, O_CONTEXT, O_GREEDY, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_STATS };
    static const struct option longopts[] = {
        CLI_DEVICE_LONGOPTS, {"model", required_argument, NULL, O_MODEL}, {"system", required_argument, NULL, O_SYSTEM},
        {"no-think", no_argument, NULL, O_NO_THINK}, {"max-tokens", required_argument, NULL, O_MAX_TOKENS},
        {"context", required_argument, NULL, O_CONTEXT}, {"greedy", no_argument, NULL, O_GREEDY},
        {"temperature", required_argument, NULL, O_TEMP}, {"top-k", required_argument, NULL, O_TOPK},
        {"top-p", required_argument, NULL, O_TOPP}, {"seed", required_argument, NULL, O_SEED}, {"stats", no_argument, NULL, O_STATS},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    cli_device_args da = {0};
    const char *model = NULL, *system = NULL;
    bool no_think = false, greedy = false, stats = false, has_temp = false;
    size_t max_tokens = 0, context = 0, v;
    clnpu_sampling samp = {0};
    char *end;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int d = cli_device_option_checked(opt, optarg, &da, "chat", usage);
        if (d == 1) continue;
        if (d < 0) return -d;
        switch (opt) {
        case 'h':
            printf("usage: %s\n\nA conversation with the checkpoint in DIR through its chat template (chat_template.jinja or\n"
                   "tokenizer_config.json). Lines typed (or piped) are user turns; replies stream as they are generated\n"
                   "and end at an end-of-sequence id or --max-tokens (default: generation_config.json's max_new_tokens,\n"
                   "else 512). The KV cache is kept between turns. /reset forgets the conversation, /exit (or end of\n"
                   "input) ends it. --stats prints each turn's prefilled and cached tokens and decode speed.\n", usage);
            return CLI_EXIT_OK;
        case O_MODEL: model = optarg; break;
        case O_SYSTEM: system = optarg; break;
        case O_NO_THINK: no_think = true; break;
        case O_STATS: stats = true; break;
        case O_GREEDY: greedy = true; break;
        case O_MAX_TOKENS:
            if (!cli_parse_size(optarg, &max_tokens) || !max_tokens) return cli_usage_error("chat", usage, "bad --max-tokens '%s'", optarg);
            break;
        case O_CONTEXT:
            if (!cli_parse_size(optarg, &context) || context < 2) return cli_usage_error("chat", usage, "bad --context '%s'", optarg);
            break;
        case O_TEMP:
            samp.temperature = strtof(optarg, &end);
            if (*end || !(samp.temperature >= 0 && samp.temperature <= 100)) return cli_usage_error("chat", usage, "bad --temperature '%s'", optarg);
            has_temp = true;
            break;
        case O_TOPK:
            if (!cli_parse_size(optarg, &v) || v > 1u << 30) return cli_usage_error("chat", usage, "bad --top-k '%s'", optarg);
            samp.top_k = (unsigned)v;
            break;
        case O_TOPP:
            samp.top_p = strtof(optarg, &end);
            if (*end || !(samp.top_p > 0 && samp.top_p <= 1)) return cli_usage_error("chat", usage, "bad --top-p '%s'", optarg);
            break;
        case O_SEED:
            if (!cli_parse_size(optarg, &v)) return cli_usage_error("chat", usage, "bad --seed '%s'", optarg);
            samp.seed = v;
            break;
        default: return cli_usage_error("chat", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("chat", usage, "unexpected argument '%s'", argv[optind]);
    if (!model) return cli_usage_error("chat", usage, "--model DIR is required");
    if (greedy && has_temp) return cli_usage_error("chat", usage, "--greedy and --temperature exclude each other");

    char cfgpath[4096];
    snprintf(cfgpath, sizeof cfgpath, "%s/config.json", model);
    clnpu_model_config cfg;
    cli_text tx = {0};
    clnpu_checkpoint *ck = NULL;
    clnpu_device *dev = NULL;
    clnpu_model *m = NULL;
    clnpu_generator *g = NULL;
    clnpu_status st = clnpu_model_config_load(cfgpath, &cfg);
    if (st) memset(&cfg, 0, sizeof cfg);
    if (!st) st = cli_text_load(model, true, &tx);
    if (!st) st = clnpu_checkpoint_open(model, &ck);
    if (!st) st = cli_open_device(&da, false, &dev);
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 1;
    if (context) o.max_context = context;
    if (!o.max_context) o.max_context = cfg.max_position_embeddings && cfg.max_position_embeddings < 4096 ? cfg.max_position_embeddings : 4096;
    o.progress = isatty(STDERR_FILENO);
    if (!st) st = clnpu_model_create(dev, &cfg, ck, &o, &m);
    clnpu_generator_options go = {.model = m, .device = dev, .tokenizer = tx.tok, .vocab_size = cfg.vocab_size,
                                  .max_sequences = 1, .max_context = o.max_context};
    if (!st) st = clnpu_generator_create(&go, &g);
    if (st) {
        int rc = cli_fail("chat", st);
        clnpu_generator_destroy(g), clnpu_model_destroy(m), clnpu_device_close(dev), clnpu_checkpoint_close(ck), cli_text_free(&tx);
        return rc;
    }
    clnpu_generate_config gc = clnpu_generate_config_default();
    gc.sampling = greedy || has_temp ? samp : tx.samp;
    if (!greedy && !has_temp) gc.sampling.seed = samp.seed;
    gc.max_tokens = max_tokens ? max_tokens : tx.max_new_tokens ? tx.max_new_tokens : 512;
    gc.eos_ids = tx.eos, gc.n_eos = tx.neos;

    const bool tty = isatty(STDIN_FILENO);
    if (tty) fprintf(stderr, "clnpu chat: %s (%s). /reset forgets the conversation, /exit ends it.\n", model, cfg.model_type);
    history h = {0};
    if (system && !history_add(&h, "system", system)) st = CLNPU_ERR_OUT_OF_MEMORY;
    const size_t base = h.n;
    char *cached = strdup(""); /* the text the KV cache holds */
    int rc = CLI_EXIT_OK;
    for (char *line; !st && (line = read_turn(tty));) {
        if (!strcmp(line, "/exit")) {
            free(line);
            break;
        }
        if (!strcmp(line, "/reset")) {
            history_clear(&h, base);
            clnpu_generator_reset(g, 0);
            cached[0] = '\0';
            free(line);
            continue;
        }
        if (!*line || !history_add(&h, "user", line)) {
            free(line);
            continue;
        }
        char *full = NULL, *reply = NULL;
        int *ids = NULL;
        size_t n = 0, before = 0;
        for (int attempt = 0; !st && attempt < 2; attempt++) {
            free(full), free(ids);
            full = NULL, ids = NULL;
            st = cli_text_chat_prompt(&tx, h.m, h.n, no_think ? 0 : -1, true, &full);
            /* only what follows the cached text is new; a template that rewrites history starts over */
            size_t cl = strlen(cached);
            if (!st && strncmp(full, cached, cl)) {
                clnpu_generator_reset(g, 0);
                cached[0] = '\0';
                cl = 0;
            }
            if (!st) st = clnpu_tokenizer_encode(tx.tok, full + cl, strlen(full + cl), &ids, &n);
            before = clnpu_generator_context(g, 0);
            if (st || before + n + 2 + gc.max_tokens <= o.max_context) break;
            /* the conversation outgrew the context: keep only this turn */
            fprintf(stderr, "clnpu chat: the conversation fills the context (%zu tokens); starting over from this turn\n", o.max_context);
            history_clear(&h, base);
            if (!history_add(&h, "user", line)) st = CLNPU_ERR_OUT_OF_MEMORY;
            clnpu_generator_reset(g, 0);
            cached[0] = '\0';
        }
        free(line);
        double t0 = now_s();
        if (!st) st = clnpu_generator_start(g, 0, ids, n, &gc, NULL);
        double t1 = now_s();
        if (!st) st = clnpu_generator_run(g, cli_stream_token, stdout);
        double t2 = now_s();
        size_t k, tl;
        const int *out = st ? NULL : clnpu_generator_tokens(g, 0, &k);
        const char *text = st ? NULL : clnpu_generator_text(g, 0, &tl);
        char *dec = NULL;
        if (!st) st = clnpu_tokenizer_decode(tx.tok, out, k, &dec, NULL);
        if (!st) {
            printf("\n");
            fflush(stdout);
            /* the cache now holds the rendered turn and every drawn token but the last (fed next turn) */
            size_t fl = strlen(full), dl = strlen(dec);
            char *nc = malloc(fl + dl + 1);
            if (nc) {
                memcpy(nc, full, fl), memcpy(nc + fl, dec, dl + 1);
                free(cached);
                cached = nc;
            }
            reply = strndup(text, tl);
            if (!reply || !history_add(&h, "assistant", reply)) st = CLNPU_ERR_OUT_OF_MEMORY;
            if (stats)
                fprintf(stderr, "[turn: %zu tokens prefilled (%zu already cached) in %.1f ms; %zu generated in %.1f ms, %.1f tokens/s; "
                        "stopped by %s]\n", n + (before ? 1 : 0), before, (t1 - t0) * 1e3, k, (t2 - t1) * 1e3, k / (t2 - t1),
                        clnpu_finish_reason_name(clnpu_generator_finish_reason(g, 0)));
        }
        free(full), free(ids), free(reply), free(dec);
    }
    if (st) rc = cli_fail("chat", st);
    free(cached);
    history_clear(&h, 0);
    free(h.m), free(h.owned);
    clnpu_generator_destroy(g);
    clnpu_model_destroy(m);
    clnpu_device_close(dev);
    clnpu_checkpoint_close(ck);
    cli_text_free(&tx);
    return rc;
}
