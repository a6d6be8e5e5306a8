/* Internal: the OpenAI-compatible JSON of `clnpu serve` (serve_api.c) and the per-connection
 * state it shares with the HTTP side (serve_http.c). */
#ifndef CLNPU_SERVE_API_H
#define CLNPU_SERVE_API_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "clnpu/serve.h"

enum { SERVE_COMPLETIONS = 1, SERVE_CHAT = 2 };
#define SERVE_MAX_STOPS 4

typedef struct serve_tok {
    int id;
    float lp;
    size_t ntop;
    int top_ids[CLNPU_ENGINE_MAX_LOGPROBS];
    float top_lps[CLNPU_ENGINE_MAX_LOGPROBS];
} serve_tok;

typedef struct serve_conn {
    pthread_mutex_t mu; /* guards everything below that the engine's events touch */
    pthread_cond_t cv;
    int refs; /* the connection's, and the engine's while the request runs */
    struct MHD_Connection *mhd;
    clnpu_engine *engine;
    const clnpu_server_options *server_opt;
    const clnpu_server_text *text;
    int kind;
    char *body;
    size_t body_len;
    bool too_big;
    /* the request */
    int *prompt;
    size_t nprompt, max_tokens, logprobs;
    clnpu_sampling samp;
    bool stream, include_usage, chat_logprobs;
    char *stops[SERVE_MAX_STOPS];
    size_t nstops;
    time_t created;
    /* progress */
    uint64_t id;
    bool submitted, done, want_cancel;
    clnpu_engine_finish finish;
    char error[512];
    size_t usage_prompt, usage_cached;
    serve_tok *toks; /* every token the engine drew */
    size_t ntok, captok;
    size_t shown_tok;  /* tokens whose text is in `text_all` */
    char *text_all;    /* the completion's text so far (stop strings cut) */
    size_t text_len, text_sent;
    size_t sent_tok;   /* tokens reported in stream chunks */
    /* stream chunks waiting for the socket */
    char *out;
    size_t out_len, out_cap, out_sent;
    bool role_sent, stream_closed;
} serve_conn;

/* Parse the body into the request (JSON, prompt encoding, chat template, limits); 0, or the
 * HTTP status of the error whose message is in err. */
unsigned serve_conn_prepare(serve_conn *c, const clnpu_server_options *o, char *err, size_t cap);
/* A token event, copied (c->mu held). */
void serve_conn_push(serve_conn *c, const clnpu_engine_event *ev);
/* New tokens into text (stop strings checked: c->want_cancel when one is seen, and c->done), and
 * for a stream into SSE chunks in c->out (c->stream_closed after the last); c->mu held. */
void serve_conn_render(serve_conn *c);
/* The whole response of a finished non-streaming request (malloc'ed). */
char *serve_conn_final_json(serve_conn *c);
void serve_conn_free(serve_conn *c);

char *serve_error_json(unsigned code, const char *message);
char *serve_models_json(const char *model_name);
char *serve_metrics_text(const clnpu_engine_stats *st, uint64_t busy, uint64_t bad, uint64_t auth);

#endif
