/* Serving: a continuous-batching engine over one model's paged latent cache, and an
 * OpenAI-compatible HTTP server on top of it (docs/serving.md).
 *
 * The engine keeps a queue of requests (token ids in, token ids out). One host thread runs its
 * loop: each iteration admits waiting requests while sequence slots and cache pages allow (a
 * prompt whose leading pages are already cached starts with them: prefix caching), runs one
 * decode step for every running sequence, and spends the rest of a token budget on prompt
 * chunks (chunked prefill), so a long prompt never stalls the others' tokens. When a decode step
 * needs a page and none is free, the newest request is pre-empted (its pages freed; it is
 * recomputed later from its tokens so far), so running requests never fail for lack of pages.
 *
 *     clnpu_engine_options eo = clnpu_engine_options_default();
 *     clnpu_engine *e;  clnpu_engine_create(model, &eo, &e);
 *     clnpu_engine_start(e);                           // its loop on a thread of its own
 *     clnpu_engine_request rq = {.prompt = ids, .prompt_len = n, .max_tokens = 16,
 *                                .on_event = my_fn, .user = me};
 *     uint64_t id;  clnpu_engine_submit(e, &rq, &id);  // my_fn sees each token, then the end
 *     ...
 *     clnpu_engine_destroy(e);                         // cancels what is left, stops the thread
 *
 * Thread safety: submit, cancel and stats may be called from any thread; events are delivered on
 * the engine's thread and must return quickly (copy and signal). The model belongs to the engine
 * while it runs: nothing else may use it.
 */
#ifndef CLNPU_SERVE_H
#define CLNPU_SERVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clnpu/export.h"
#include "clnpu/model.h"
#include "clnpu/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum clnpu_engine_finish {
    CLNPU_ENGINE_FINISH_NONE = 0,  /* not finished: a token */
    CLNPU_ENGINE_FINISH_LENGTH,    /* max_tokens reached, or the context is full */
    CLNPU_ENGINE_FINISH_STOP,      /* a stop id was drawn, or the event handler asked to stop */
    CLNPU_ENGINE_FINISH_CANCELLED, /* clnpu_engine_cancel, or the engine was destroyed */
    CLNPU_ENGINE_FINISH_ERROR,     /* a forward step failed: see message */
} clnpu_engine_finish;

#define CLNPU_ENGINE_MAX_LOGPROBS 20

typedef struct clnpu_engine_event {
    uint64_t id;
    int token;                    /* the new token, or -1 (an end without one) */
    float logprob;                /* of the token under the model (temperature 1), when asked */
    size_t top_count;             /* alternatives with the highest logprobs, when asked */
    int top_ids[CLNPU_ENGINE_MAX_LOGPROBS];
    float top_logprobs[CLNPU_ENGINE_MAX_LOGPROBS];
    clnpu_engine_finish finish;   /* NONE for a token; otherwise this is the request's last event */
    const char *message;          /* FINISH_ERROR: what failed */
    size_t prompt_tokens, completion_tokens, cached_tokens; /* usage so far */
    double queue_s, first_token_s; /* waited before admission; submit to first token */
} clnpu_engine_event;

/* Return true to end the request now with CLNPU_ENGINE_FINISH_STOP (a stop string was seen). The last
 * event's return value is ignored. */
typedef bool (*clnpu_engine_event_fn)(void *user, const clnpu_engine_event *ev);

typedef struct clnpu_engine_request {
    const int *prompt;        /* copied at submit */
    size_t prompt_len;        /* >= 1 */
    size_t max_tokens;        /* new tokens, >= 1 */
    clnpu_sampling sampling;  /* temperature <= 0: greedy */
    const int *stop_ids;      /* drawing one ends the request (the id is reported, finish STOP) */
    size_t stop_count;
    size_t logprobs;          /* 0: none; else the token's logprob and this many alternatives (<= 20) */
    clnpu_engine_event_fn on_event;
    void *user;
} clnpu_engine_request;

typedef struct clnpu_engine_options {
    size_t max_waiting;    /* queued requests beyond which submit refuses (CLNPU_ERR_BUSY), default 256 */
    size_t step_tokens;    /* token rows per iteration (decode rows + prompt chunk), default the model's max_tokens */
    bool prefix_cache;     /* reuse cached pages of shared prompt prefixes, default true */
} clnpu_engine_options;

CLNPU_API clnpu_engine_options clnpu_engine_options_default(void);

typedef struct clnpu_engine clnpu_engine;

CLNPU_API clnpu_status clnpu_engine_create(clnpu_model *model, const clnpu_engine_options *opt, clnpu_engine **out_engine);
/* Over a plan's stages (pipeline stages, expert shards, attention replicas, decode
 * micro-batches): each sequence keeps its pages on every stage, so admission is by sequence
 * slots and there is no prefix cache. Under mpirun the engine is rank 0's; every other rank
 * calls clnpu_pipeline_serve_follow, which makes the pipeline calls rank 0 announces until
 * rank 0's engine is destroyed. */
struct clnpu_pipeline;
CLNPU_API clnpu_status clnpu_engine_create_pipeline(struct clnpu_pipeline *pipeline, const clnpu_engine_options *opt,
                                          clnpu_engine **out_engine);
CLNPU_API clnpu_status clnpu_pipeline_serve_follow(struct clnpu_pipeline *pipeline);
/* Run the loop on a thread of its own (until destroy). Without it, call clnpu_engine_step. */
CLNPU_API clnpu_status clnpu_engine_start(clnpu_engine *e);
/* Run the loop on the caller's thread until clnpu_engine_stop (from another thread): what a
 * host does whose MPI calls must stay on its main thread. */
CLNPU_API clnpu_status clnpu_engine_run(clnpu_engine *e);
CLNPU_API void clnpu_engine_stop(clnpu_engine *e);
/* One iteration on the caller's thread (tests, single-threaded hosts); out_busy: work remains. */
CLNPU_API clnpu_status clnpu_engine_step(clnpu_engine *e, bool *out_busy);
/* Stops the loop (joining its thread), refuses new requests and ends every open one (its last
 * event: CANCELLED). A server is stopped after this and before destroy, so that no connection
 * waits for a request that will not end. */
CLNPU_API void clnpu_engine_shutdown(clnpu_engine *e);
/* Shuts down if not yet, frees. The model stays. */
CLNPU_API void clnpu_engine_destroy(clnpu_engine *e);

/* Queue a request. CLNPU_ERR_INVALID_ARGUMENT: it can never run (empty prompt, ids outside the
 * vocabulary, longer than the context or the cache); CLNPU_ERR_BUSY: max_waiting requests are
 * waiting already (a server answers 429). */
CLNPU_API clnpu_status clnpu_engine_submit(clnpu_engine *e, const clnpu_engine_request *rq, uint64_t *out_id);
/* End a request early (a client went away): its pages are freed and its last event is
 * CANCELLED. Unknown or finished ids are ignored. */
CLNPU_API void clnpu_engine_cancel(clnpu_engine *e, uint64_t id);

typedef struct clnpu_engine_stats {
    size_t waiting, running;
    size_t pages, pages_free;
    size_t pages_cached, pages_cached_only; /* kept by the prefix cache; by it alone (freed on demand) */
    uint64_t requests_finished, requests_failed, preemptions;
    uint64_t prompt_tokens, cached_prompt_tokens, generated_tokens;
    double decode_tokens_per_s;   /* over the last few seconds of decode steps */
    double ttft_sum_s;            /* time to first token over finished first tokens */
    uint64_t ttft_count;
    double ttft_p50_s, ttft_p99_s, itl_p50_s, itl_p99_s; /* over the last 1024 samples */
} clnpu_engine_stats;

CLNPU_API void clnpu_engine_get_stats(clnpu_engine *e, clnpu_engine_stats *out);
/* Tokens per sequence (prompt + new tokens) the engine's model holds. */
CLNPU_API size_t clnpu_engine_context(const clnpu_engine *e);

/* ---- the HTTP server (libmicrohttpd) ----
 *
 * POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health, GET /metrics
 * (Prometheus text). JSON in and out (cJSON), streaming as server-sent events. A thread per
 * connection; the engine's loop does the work. */

/* What a server needs to take text: encode a prompt, decode ids, render a chat. A server
 * without it takes prompts as arrays of token ids and answers with ids (text ""). Each call
 * may run on any connection's thread at once. */
typedef struct clnpu_server_text {
    void *ctx;
    /* *out_ids malloc'ed by the callee, freed by the server */
    clnpu_status (*encode)(void *ctx, const char *text, size_t len, int **out_ids, size_t *out_n);
    /* the bytes of ids[0 .. n) (malloc'ed, NUL-terminated); may end inside a UTF-8 character */
    clnpu_status (*decode)(void *ctx, const int *ids, size_t n, char **out_text, size_t *out_len);
    /* messages: the request's JSON array; the rendered prompt text (malloc'ed). NULL: no chat.
     * enable_thinking: -1 as the template has it, else the request's chat_template_kwargs */
    clnpu_status (*chat)(void *ctx, const char *messages_json, bool add_generation_prompt, int enable_thinking,
                         char **out_text);
} clnpu_server_text;

typedef struct clnpu_server_options {
    const char *host;          /* address to bind, default "127.0.0.1" (IPv4 or IPv6 literal) */
    unsigned port;             /* 0: any free port (clnpu_server_port tells which) */
    const char *api_key;       /* requests to /v1/ without "Authorization: Bearer KEY" get 401 */
    const char *model_name;    /* the id /v1/models lists and responses carry */
    size_t max_body;           /* bytes of a request body, default 1 MiB (more: 400) */
    size_t max_prompt_tokens;  /* default: the model's context */
    size_t max_tokens;         /* largest max_tokens a request may ask, default: the context */
    unsigned timeout_s;        /* an idle connection is closed, default 30 */
    unsigned max_connections;  /* at once, default 256 */
    const int *eos_ids;        /* end-of-sequence ids every request stops at */
    size_t eos_count;
    clnpu_sampling defaults;   /* for requests that leave them out (generation_config.json) */
    const clnpu_server_text *text;
} clnpu_server_options;

CLNPU_API clnpu_server_options clnpu_server_options_default(void);

typedef struct clnpu_server clnpu_server;

/* Serve e (started) until clnpu_server_stop. */
CLNPU_API clnpu_status clnpu_server_start(clnpu_engine *e, const clnpu_server_options *opt, clnpu_server **out_server);
CLNPU_API unsigned clnpu_server_port(const clnpu_server *s);
/* Stops accepting, ends open connections (their requests are cancelled), frees. */
CLNPU_API void clnpu_server_stop(clnpu_server *s);

#ifdef __cplusplus
}
#endif
#endif
