/* The HTTP side of `clnpu serve` (libmicrohttpd, a thread per connection): routing, the API
 * key, bounded bodies, waiting for a request's tokens while watching for a client that left,
 * streaming as server-sent events, and /metrics. The OpenAI JSON is in serve_api.c. */
#include <arpa/inet.h>
#include <microhttpd.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/error.h"
#include "serve_api.h"

struct clnpu_server {
    struct MHD_Daemon *d;
    clnpu_engine *e;
    clnpu_server_options o;
    char *model_name, *api_key;
    int *eos;
    unsigned port;
    pthread_mutex_t mu;
    uint64_t rejected_busy, rejected_bad, rejected_auth, served;
};

clnpu_server_options clnpu_server_options_default(void)
{
    return (clnpu_server_options){.host = "127.0.0.1", .port = 8080, .model_name = "clnpu", .max_body = 1 << 20,
                                  .timeout_s = 30, .max_connections = 256, .defaults = {1.0f, 0, 1.0f, 0}};
}

/* ---- a connection's request ---- */

static void conn_unref(serve_conn *c)
{
    pthread_mutex_lock(&c->mu);
    const int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left) return;
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    serve_conn_free(c);
}

/* The engine's events (its thread): ids and logprobs are copied, the connection thread decodes. */
static bool on_event(void *user, const clnpu_engine_event *ev)
{
    serve_conn *c = user;
    pthread_mutex_lock(&c->mu);
    if (ev->finish == CLNPU_ENGINE_FINISH_NONE) serve_conn_push(c, ev);
    else {
        if (!c->finish) c->finish = ev->finish;
        if (ev->message) snprintf(c->error, sizeof c->error, "%s", ev->message);
        c->done = true;
    }
    c->usage_prompt = ev->prompt_tokens, c->usage_cached = ev->cached_tokens;
    pthread_cond_broadcast(&c->cv);
    const bool last = c->done;
    pthread_mutex_unlock(&c->mu);
    if (last) conn_unref(c); /* the engine's reference */
    return false;
}

/* Whether the client closed its end (a request waiting in the queue has nothing to write yet,
 * so a vanished client would otherwise hold its place until its first token). */
static bool client_gone(serve_conn *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c->mhd, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    struct pollfd p = {ci->connect_fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Wait until new tokens, the end, or ~200 ms passed; with c->mu held. */
static void wait_tokens(serve_conn *c)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 200000000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

/* ---- responses ---- */

static enum MHD_Result send_text(struct MHD_Connection *con, unsigned code, const char *type, const char *body)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(con, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_error(clnpu_server *s, struct MHD_Connection *con, unsigned code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(clnpu_server *s, struct MHD_Connection *con, unsigned code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&s->mu);
    if (code == 429) s->rejected_busy++;
    else if (code == 401) s->rejected_auth++;
    else if (code >= 400 && code < 500) s->rejected_bad++;
    pthread_mutex_unlock(&s->mu);
    char *body = serve_error_json(code, msg);
    enum MHD_Result r = send_text(con, code, "application/json", body ? body : "{}");
    free(body);
    return r;
}

/* The SSE stream: chunks as tokens arrive; blocks on this connection's thread. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    serve_conn *c = cls;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (c->out_len > c->out_sent) {
            size_t n = c->out_len - c->out_sent;
            if (n > max) n = max;
            memcpy(buf, c->out + c->out_sent, n);
            c->out_sent += n;
            pthread_mutex_unlock(&c->mu);
            return (ssize_t)n;
        }
        if (c->stream_closed) {
            pthread_mutex_unlock(&c->mu);
            return MHD_CONTENT_READER_END_OF_STREAM;
        }
        serve_conn_render(c); /* new tokens or the end become chunks in c->out */
        if (c->want_cancel) { /* a stop string: the engine may still be drawing */
            c->want_cancel = false;
            pthread_mutex_unlock(&c->mu);
            clnpu_engine_cancel(c->engine, c->id);
            pthread_mutex_lock(&c->mu);
        }
        if (c->out_len > c->out_sent || c->stream_closed) continue;
        pthread_mutex_unlock(&c->mu);
        const bool gone = client_gone(c);
        pthread_mutex_lock(&c->mu);
        if (gone) {
            pthread_mutex_unlock(&c->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        wait_tokens(c);
    }
}

static enum MHD_Result run_request(clnpu_server *s, struct MHD_Connection *con, serve_conn *c)
{
    char err[512];
    unsigned code = serve_conn_prepare(c, &s->o, err, sizeof err);
    if (code) return send_error(s, con, code, "%s", err);
    clnpu_engine_request rq = {c->prompt, c->nprompt, c->max_tokens, c->samp, s->o.eos_ids, s->o.eos_count,
                               c->logprobs, on_event, c};
    pthread_mutex_lock(&c->mu);
    c->refs++; /* the engine's, dropped at the last event */
    pthread_mutex_unlock(&c->mu);
    clnpu_status st = clnpu_engine_submit(s->e, &rq, &c->id);
    if (st) {
        conn_unref(c);
        return send_error(s, con, st == CLNPU_ERR_BUSY ? 429 : 400, "%s", clnpu_error_message());
    }
    c->submitted = true;
    pthread_mutex_lock(&s->mu);
    s->served++;
    pthread_mutex_unlock(&s->mu);
    if (c->stream) {
        struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, c, NULL);
        if (!r) return MHD_NO;
        MHD_add_response_header(r, "Content-Type", "text/event-stream");
        MHD_add_response_header(r, "Cache-Control", "no-cache");
        enum MHD_Result ret = MHD_queue_response(con, MHD_HTTP_OK, r);
        MHD_destroy_response(r);
        return ret;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->done) {
        serve_conn_render(c); /* decodes and checks stop strings as tokens come */
        const bool stop = c->want_cancel;
        c->want_cancel = false;
        if (c->done) break;
        pthread_mutex_unlock(&c->mu);
        if (stop) clnpu_engine_cancel(s->e, c->id); /* its last event ends the wait */
        if (client_gone(c)) {
            clnpu_engine_cancel(s->e, c->id);
            return MHD_NO; /* nobody to answer */
        }
        pthread_mutex_lock(&c->mu);
        if (!c->done) wait_tokens(c);
    }
    serve_conn_render(c);
    char *body = serve_conn_final_json(c);
    const bool failed = c->finish == CLNPU_ENGINE_FINISH_ERROR;
    pthread_mutex_unlock(&c->mu);
    if (!body) return send_error(s, con, 500, "out of host memory");
    enum MHD_Result r = failed ? send_error(s, con, 500, "%s", c->error) : send_text(con, 200, "application/json", body);
    free(body);
    return r;
}

static bool authorised(clnpu_server *s, struct MHD_Connection *con)
{
    if (!s->api_key) return true;
    const char *h = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Authorization");
    if (!h || strncmp(h, "Bearer ", 7)) return false;
    h += 7;
    const size_t n = strlen(s->api_key), m = strlen(h);
    unsigned diff = n != m; /* the same time whatever prefix matches */
    for (size_t i = 0; i < n; i++) diff |= (unsigned)(s->api_key[i] ^ (i < m ? h[i] : 0));
    return !diff;
}

static enum MHD_Result metrics(clnpu_server *s, struct MHD_Connection *con)
{
    clnpu_engine_stats st;
    clnpu_engine_get_stats(s->e, &st);
    pthread_mutex_lock(&s->mu);
    const uint64_t busy = s->rejected_busy, bad = s->rejected_bad, auth = s->rejected_auth;
    pthread_mutex_unlock(&s->mu);
    char *b = serve_metrics_text(&st, busy, bad, auth);
    if (!b) return MHD_NO;
    enum MHD_Result r = send_text(con, 200, "text/plain; version=0.0.4", b);
    free(b);
    return r;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *con, const char *url, const char *method,
                              const char *version, const char *data, size_t *data_size, void **state)
{
    (void)version;
    clnpu_server *s = cls;
    const bool post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
    const int kind = !strcmp(url, "/v1/completions") ? SERVE_COMPLETIONS
                     : !strcmp(url, "/v1/chat/completions") ? SERVE_CHAT : 0;
    if (!*state) { /* the headers: decide before any body arrives */
        serve_conn *c = calloc(1, sizeof *c);
        if (!c) return MHD_NO;
        c->kind = kind, c->mhd = con, c->refs = 1, c->server_opt = &s->o, c->text = s->o.text, c->engine = s->e;
        pthread_mutex_init(&c->mu, NULL);
        pthread_cond_init(&c->cv, NULL);
        *state = c;
        return MHD_YES;
    }
    serve_conn *c = *state;
    if (*data_size) { /* a piece of the body, kept up to the cap */
        if (!c->too_big && c->body_len + *data_size <= s->o.max_body) {
            char *nb = realloc(c->body, c->body_len + *data_size + 1);
            if (nb) {
                memcpy(nb + c->body_len, data, *data_size);
                c->body = nb, c->body_len += *data_size, c->body[c->body_len] = '\0';
            } else {
                c->too_big = true;
            }
        } else {
            c->too_big = true;
        }
        *data_size = 0;
        return MHD_YES;
    }
    if (!strncmp(url, "/v1/", 4) && !authorised(s, con)) return send_error(s, con, 401, "missing or wrong API key");
    if (!strcmp(url, "/health")) {
        if (!get) return send_error(s, con, 405, "%s %s: use GET", method, url);
        return send_text(con, 200, "application/json", "{\"status\":\"ok\"}");
    }
    if (!strcmp(url, "/metrics")) {
        if (!get) return send_error(s, con, 405, "%s %s: use GET", method, url);
        return metrics(s, con);
    }
    if (!strcmp(url, "/v1/models")) {
        if (!get) return send_error(s, con, 405, "%s %s: use GET", method, url);
        char *b = serve_models_json(s->o.model_name);
        enum MHD_Result r = b ? send_text(con, 200, "application/json", b) : MHD_NO;
        free(b);
        return r;
    }
    if (!kind) return send_error(s, con, 404, "no such endpoint: %s", url);
    if (!post) return send_error(s, con, 405, "%s %s: use POST", method, url);
    if (c->too_big) return send_error(s, con, 400, "the request body is larger than %zu bytes", s->o.max_body);
    return run_request(s, con, c);
}

static void completed(void *cls, struct MHD_Connection *con, void **state, enum MHD_RequestTerminationCode why)
{
    (void)con, (void)why;
    clnpu_server *s = cls;
    serve_conn *c = *state;
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    const bool running = c->submitted && !c->done;
    pthread_mutex_unlock(&c->mu);
    if (running) clnpu_engine_cancel(s->e, c->id); /* a client that left frees its pages */
    *state = NULL;
    conn_unref(c);
}

clnpu_status clnpu_server_start(clnpu_engine *e, const clnpu_server_options *opt, clnpu_server **out)
{
    *out = NULL;
    clnpu_server *s = calloc(1, sizeof *s);
    if (!s) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    pthread_mutex_init(&s->mu, NULL);
    s->e = e;
    s->o = opt ? *opt : clnpu_server_options_default();
    const clnpu_server_options d = clnpu_server_options_default();
    if (!s->o.host) s->o.host = d.host;
    if (!s->o.max_body) s->o.max_body = d.max_body;
    if (!s->o.timeout_s) s->o.timeout_s = d.timeout_s;
    if (!s->o.max_connections) s->o.max_connections = d.max_connections;
    s->model_name = strdup(s->o.model_name ? s->o.model_name : d.model_name);
    s->api_key = s->o.api_key ? strdup(s->o.api_key) : NULL;
    s->eos = s->o.eos_count ? malloc(s->o.eos_count * sizeof *s->eos) : NULL;
    if (!s->model_name || (s->o.api_key && !s->api_key) || (s->o.eos_count && !s->eos)) {
        clnpu_server_stop(s);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    if (s->eos) memcpy(s->eos, s->o.eos_ids, s->o.eos_count * sizeof *s->eos);
    s->o.model_name = s->model_name, s->o.api_key = s->api_key, s->o.eos_ids = s->eos;
    struct sockaddr_in a4 = {0};
    struct sockaddr_in6 a6 = {0};
    struct sockaddr *sa;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
    if (inet_pton(AF_INET, s->o.host, &a4.sin_addr) == 1) {
        a4.sin_family = AF_INET, a4.sin_port = htons((uint16_t)s->o.port);
        sa = (struct sockaddr *)&a4;
    } else if (inet_pton(AF_INET6, s->o.host, &a6.sin6_addr) == 1) {
        a6.sin6_family = AF_INET6, a6.sin6_port = htons((uint16_t)s->o.port);
        sa = (struct sockaddr *)&a6;
        flags |= MHD_USE_IPv6;
    } else {
        const clnpu_status st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "host '%s' is not an IPv4 or IPv6 address",
                                           s->o.host);
        clnpu_server_stop(s);
        return st;
    }
    if (s->o.port > 65535) {
        const clnpu_status st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "port %u is out of range", s->o.port);
        clnpu_server_stop(s);
        return st;
    }
    s->d = MHD_start_daemon(flags, (uint16_t)s->o.port, NULL, NULL, handle, s, MHD_OPTION_SOCK_ADDR, sa,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)s->o.timeout_s, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)s->o.max_connections, MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                            MHD_OPTION_END);
    if (!s->d) {
        const clnpu_status st = clnpu_fail(CLNPU_ERR_IO, "cannot listen on %s port %u (in use, or not an address of "
                                           "this machine)", s->o.host, s->o.port);
        clnpu_server_stop(s);
        return st;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->o.port;
    *out = s;
    return CLNPU_OK;
}

unsigned clnpu_server_port(const clnpu_server *s)
{
    return s->port;
}

void clnpu_server_stop(clnpu_server *s)
{
    if (!s) return;
    if (s->d) MHD_stop_daemon(s->d); /* ends every connection; their requests are cancelled */
    pthread_mutex_destroy(&s->mu);
    free(s->model_name), free(s->api_key), free(s->eos), free(s);
}
