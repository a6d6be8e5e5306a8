/* Serving: the continuous-batching engine against each prompt run alone (greedy ids identical,
 * through chunked prefill, prefix-cache hits and pre-emption), and the HTTP server on loopback
 * (OpenAI JSON, streaming, limits, API key, a full queue, clients that vanish, concurrent load).
 * Every wait is bounded; every client talks to 127.0.0.1 only. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "test_util.h"

#define TINY CLNPU_SOURCE_DIR "/models/tiny-axk1"
#define NEW 6
#define LONG 24 /* the first four requests' new tokens: more than the pool holds for all */

static const clnpu_sampling GREEDY = {0.0f, 0, 0.0f, 0};

static clnpu_model_config cfg;
static clnpu_checkpoint *ck;

static void open_tiny(void)
{
    if (!ck) {
        ck_assert_ok(clnpu_model_config_load(TINY "/config.json", &cfg));
        ck_assert_ok(clnpu_checkpoint_open(TINY, &ck));
    }
}

static clnpu_model *tiny_model(size_t seqs, size_t context, size_t pages, size_t max_tokens)
{
    open_tiny();
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = seqs, o.max_context = context, o.cache_pages = pages, o.max_tokens = max_tokens;
    clnpu_model *m;
    ck_assert_ok(clnpu_model_create(test_device(), &cfg, ck, &o, &m));
    return m;
}

/* The prompts: random ids of ragged lengths, some sharing a prefix of 40 ids (prefix cache). */
#define NP 16
static int prompts[NP][80];
static size_t plen[NP];
static int ref[NP][LONG];

static void make_prompts(void)
{
    int shared[40];
    for (size_t i = 0; i < 40; i++) shared[i] = (int)(test_rand_u64() % cfg.vocab_size);
    for (size_t p = 0; p < NP; p++) {
        /* the first four fill two pages each exactly: their first decode rows need new pages */
        plen[p] = p < 4 ? 32 : 3 + test_rand_u64() % 70;
        for (size_t i = 0; i < plen[p]; i++)
            prompts[p][i] = p % 3 == 0 && i < 40 ? shared[i] : (int)(test_rand_u64() % cfg.vocab_size);
    }
}

/* Each prompt alone, as `clnpu run` does it: one prefill, the first id from its last logits on
 * the device, then decode with on-device greedy draws. */
static void reference(void)
{
    clnpu_model *m = tiny_model(1, 128, 0, 512);
    float *logits = malloc(80 * cfg.vocab_size * sizeof *logits);
    clnpu_buffer *lb, *ob;
    ck_assert_ok(clnpu_buffer_create(test_device(), cfg.vocab_size * 4, &lb));
    ck_assert_ok(clnpu_buffer_create(test_device(), 4, &ob));
    const clnpu_sampling g = {0};
    for (size_t p = 0; p < NP; p++) {
        clnpu_model_reset(m, 0);
        ck_assert_ok(clnpu_model_prefill(m, 0, prompts[p], plen[p], logits));
        ck_assert_ok(clnpu_buffer_write(lb, 0, logits + (plen[p] - 1) * cfg.vocab_size, cfg.vocab_size * 4));
        ck_assert_ok(clnpu_sample(test_device(), ob, (clnpu_view){lb, 0, cfg.vocab_size}, 1, cfg.vocab_size, &g, 0));
        ck_assert_ok(clnpu_buffer_read(ob, 0, &ref[p][0], 4));
        const size_t seq = 0;
        for (size_t i = 1; i < LONG; i++)
            ck_assert_ok(clnpu_model_decode_sample(m, &seq, &ref[p][i - 1], 1, &g, i, &ref[p][i], NULL));
    }
    clnpu_buffer_destroy(lb), clnpu_buffer_destroy(ob);
    free(logits);
    clnpu_model_destroy(m);
}

typedef struct got {
    int ids[LONG + 4];
    size_t n;
    clnpu_engine_finish fin;
    pthread_mutex_t mu;
} got;

static bool collect(void *user, const clnpu_engine_event *ev)
{
    got *g = user;
    pthread_mutex_lock(&g->mu);
    if (ev->finish == CLNPU_ENGINE_FINISH_NONE && g->n < LONG + 4) g->ids[g->n++] = ev->token;
    if (ev->finish) g->fin = ev->finish;
    pthread_mutex_unlock(&g->mu);
    return false;
}

/* 16 requests of ragged lengths arriving over time into 4 sequence slots, prompts cut into
 * chunks of 16 rows, a cache of 9 pages of 16 rows (the prompts alone need up to 5 each), some
 * sharing a prefix: every request's greedy ids equal its run alone, requests were pre-empted
 * (the first four need 4 pages each, 16 of 9, while they all decode), and no request holds a
 * page at the end. */
START_TEST(test_engine_matches_alone)
{
    open_tiny();
    make_prompts();
    reference();
    clnpu_model *m = tiny_model(4, 128, 9, 16);
    clnpu_engine_options eo = clnpu_engine_options_default();
    eo.step_tokens = 16;
    clnpu_engine *e;
    ck_assert_ok(clnpu_engine_create(m, &eo, &e));
    static got g[NP];
    for (size_t p = 0; p < NP; p++) {
        memset(&g[p], 0, sizeof g[p]);
        pthread_mutex_init(&g[p].mu, NULL);
    }
    size_t submitted = 0;
    for (int it = 0; it < 2000; it++) {
        /* a new request every third iteration: they arrive while others run */
        while (submitted < NP && (it % 3 == 0 || submitted < 4)) {
            const size_t want = submitted < 4 ? LONG : NEW;
            clnpu_engine_request rq = {prompts[submitted], plen[submitted], want, GREEDY, NULL, 0, 0, collect, &g[submitted]};
            ck_assert_ok(clnpu_engine_submit(e, &rq, NULL));
            if (++submitted > 4) break;
        }
        bool busy;
        ck_assert_ok(clnpu_engine_step(e, &busy));
        if (!busy && submitted == NP) break;
    }
    clnpu_engine_stats st;
    clnpu_engine_get_stats(e, &st);
    for (size_t p = 0; p < NP; p++) {
        const size_t want = p < 4 ? LONG : NEW;
        ck_assert_msg(g[p].fin == CLNPU_ENGINE_FINISH_LENGTH, "request %zu: finish %d", p, g[p].fin);
        ck_assert_uint_eq(g[p].n, want);
        for (size_t i = 0; i < want; i++)
            ck_assert_msg(g[p].ids[i] == ref[p][i], "request %zu (prompt %zu ids) token %zu: %d, alone %d", p, plen[p],
                          i, g[p].ids[i], ref[p][i]);
    }
    ck_assert_uint_eq(st.requests_finished, NP);
    ck_assert_msg(st.preemptions > 0, "no request was pre-empted: the test does not test it");
    ck_assert_uint_eq(st.running, 0);
    ck_assert_uint_eq(st.pages_free + st.pages_cached_only, st.pages);
    printf("engine: %d requests identical to alone; %llu prompt tokens from the prefix cache, %llu pre-emptions\n", NP,
           (unsigned long long)st.cached_prompt_tokens, (unsigned long long)st.preemptions);
    clnpu_engine_destroy(e);
    ck_assert_uint_eq(clnpu_model_cache_usage(m).free, clnpu_model_cache_usage(m).pages);
    clnpu_model_destroy(m);
}
END_TEST

/* The same over a plan in this process: two pipeline stages on the test's two devices, decode
 * in two micro-batches; admission by slots (each sequence has its pages on every stage). */
START_TEST(test_engine_pipeline)
{
    open_tiny();
    make_prompts();
    reference();
#define STAGE(d, b, e, em, hd) {.device = d, .profile = "", .layer_begin = b, .layer_end = e, .embed = em, .head = hd}
    const clnpu_stage_spec pp2[] = {STAGE(0, 0, 1, true, false), STAGE(1, 1, 3, false, true)};
#undef STAGE
    clnpu_model_options o = clnpu_model_options_default();
    o.max_sequences = 4, o.max_context = 128, o.max_tokens = 24;
    clnpu_pipeline *pl;
    ck_assert_ok(clnpu_pipeline_create(&cfg, ck, pp2, 2, &o, &pl));
    clnpu_pipeline_set_micro_batches(pl, 2);
    clnpu_engine *e;
    ck_assert_ok(clnpu_engine_create_pipeline(pl, NULL, &e));
    ck_assert_ok(clnpu_engine_start(e));
    static got g[NP];
    for (size_t p = 0; p < NP; p++) {
        memset(&g[p], 0, sizeof g[p]);
        pthread_mutex_init(&g[p].mu, NULL);
        clnpu_engine_request rq = {prompts[p], plen[p], NEW, GREEDY, NULL, 0, 0, collect, &g[p]};
        ck_assert_ok(clnpu_engine_submit(e, &rq, NULL));
    }
    for (int i = 0; i < 3000; i++) {
        clnpu_engine_stats st;
        clnpu_engine_get_stats(e, &st);
        if (st.requests_finished == NP) break;
        usleep(10000);
    }
    for (size_t p = 0; p < NP; p++) {
        pthread_mutex_lock(&g[p].mu);
        ck_assert_msg(g[p].fin == CLNPU_ENGINE_FINISH_LENGTH && g[p].n == NEW, "request %zu: finish %d, %zu ids", p, g[p].fin,
                      g[p].n);
        for (size_t i = 0; i < NEW; i++) ck_assert_int_eq(g[p].ids[i], ref[p][i]);
        pthread_mutex_unlock(&g[p].mu);
    }
    clnpu_engine_destroy(e);
    const clnpu_cache_usage u = clnpu_pipeline_cache_usage(pl);
    ck_assert_uint_eq(u.free, u.pages);
    clnpu_pipeline_destroy(pl);
}
END_TEST

START_TEST(test_engine_refuses)
{
    clnpu_model *m = tiny_model(2, 128, 6, 64); /* 6 pages of 16 rows */
    clnpu_engine_options eo = clnpu_engine_options_default();
    eo.max_waiting = 2;
    clnpu_engine *e;
    ck_assert_ok(clnpu_engine_create(m, &eo, &e));
    int ids[70];
    for (size_t i = 0; i < 70; i++) ids[i] = (int)(test_rand_u64() % cfg.vocab_size);
    clnpu_engine_request rq = {ids, 3, 4, GREEDY, NULL, 0, 0, NULL, NULL};
    ck_assert_int_eq(clnpu_engine_submit(e, &(clnpu_engine_request){ids, 0, 4, GREEDY, NULL, 0, 0, NULL, NULL}, NULL),
                     CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_int_eq(clnpu_engine_submit(e, &(clnpu_engine_request){ids, 60, 70, GREEDY, NULL, 0, 0, NULL, NULL}, NULL),
                     CLNPU_ERR_INVALID_ARGUMENT); /* past the context of 128 */
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "context"));
    ck_assert_int_eq(clnpu_engine_submit(e, &(clnpu_engine_request){ids, 60, 50, GREEDY, NULL, 0, 0, NULL, NULL}, NULL),
                     CLNPU_ERR_INVALID_ARGUMENT); /* 110 rows need 7 pages: more than the cache */
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "cache pages"));
    int bad_id = (int)cfg.vocab_size;
    ck_assert_int_eq(clnpu_engine_submit(e, &(clnpu_engine_request){&bad_id, 1, 4, GREEDY, NULL, 0, 0, NULL, NULL}, NULL),
                     CLNPU_ERR_INVALID_ARGUMENT);
    ck_assert_ok(clnpu_engine_submit(e, &rq, NULL));
    ck_assert_ok(clnpu_engine_submit(e, &rq, NULL));
    ck_assert_int_eq(clnpu_engine_submit(e, &rq, NULL), CLNPU_ERR_BUSY);
    /* a stop id ends a request with STOP; cancel of a waiting one ends it with CANCELLED */
    got a = {0}, b = {0};
    pthread_mutex_init(&a.mu, NULL), pthread_mutex_init(&b.mu, NULL);
    clnpu_engine_destroy(e);
    ck_assert_ok(clnpu_engine_create(m, NULL, &e));
    uint64_t ida, idb;
    ck_assert_ok(clnpu_engine_submit(e, &(clnpu_engine_request){ids, 5, 8, GREEDY, NULL, 0, 0, collect, &a}, &ida));
    ck_assert_ok(clnpu_engine_submit(e, &(clnpu_engine_request){ids, 5, 8, GREEDY, NULL, 0, 0, collect, &b}, &idb));
    clnpu_engine_cancel(e, idb);
    ck_assert_int_eq(b.fin, CLNPU_ENGINE_FINISH_CANCELLED);
    bool busy = true;
    for (int i = 0; i < 100 && busy; i++) ck_assert_ok(clnpu_engine_step(e, &busy));
    ck_assert_int_eq(a.fin, CLNPU_ENGINE_FINISH_LENGTH);
    const int stop = a.ids[2];
    memset(&a.ids, 0, sizeof a.ids), a.n = 0, a.fin = 0;
    ck_assert_ok(clnpu_engine_submit(e, &(clnpu_engine_request){ids, 5, 8, GREEDY, &stop, 1, 0, collect, &a}, &ida));
    busy = true;
    for (int i = 0; i < 100 && busy; i++) ck_assert_ok(clnpu_engine_step(e, &busy));
    ck_assert_int_eq(a.fin, CLNPU_ENGINE_FINISH_STOP);
    ck_assert_uint_le(a.n, 3);
    ck_assert_int_eq(a.ids[a.n - 1], stop);
    clnpu_engine_destroy(e);
    clnpu_model_destroy(m);
    /* prefix cache: B shares A's first 40 ids, so its first two pages (32 rows) are A's, and its
     * ids are those of B alone */
    m = tiny_model(1, 128, 0, 64);
    int B[47], alone[4];
    memcpy(B, ids, 40 * sizeof *B);
    for (size_t i = 40; i < 47; i++) B[i] = (int)(test_rand_u64() % cfg.vocab_size);
    ck_assert_ok(clnpu_engine_create(m, NULL, &e));
    for (int pass = 0; pass < 3; pass++) { /* B without cache; A; B again, on A's pages */
        if (pass == 1) {
            ck_assert_ok(clnpu_engine_submit(e, &(clnpu_engine_request){ids, 45, 4, GREEDY, NULL, 0, 0, NULL, NULL}, NULL));
        } else {
            memset(&a.ids, 0, sizeof a.ids), a.n = 0, a.fin = 0;
            ck_assert_ok(clnpu_engine_submit(e, &(clnpu_engine_request){B, 47, 4, GREEDY, NULL, 0, 0, collect, &a}, NULL));
        }
        busy = true;
        for (int i = 0; i < 100 && busy; i++) ck_assert_ok(clnpu_engine_step(e, &busy));
        if (pass == 0) {
            memcpy(alone, a.ids, sizeof alone);
            clnpu_engine_destroy(e); /* forget B's pages */
            ck_assert_ok(clnpu_engine_create(m, NULL, &e));
        }
    }
    clnpu_engine_stats st;
    clnpu_engine_get_stats(e, &st);
    ck_assert_uint_eq(st.cached_prompt_tokens, 32);
    ck_assert_uint_eq(a.n, 4);
    for (size_t i = 0; i < 4; i++) ck_assert_int_eq(a.ids[i], alone[i]);
    clnpu_engine_destroy(e);
    clnpu_model_destroy(m);
}
END_TEST

/* ---- HTTP on loopback ---- */

typedef struct http_reply {
    int status;
    char *body; /* after the headers */
    size_t len;
} http_reply;

static int connect_local(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    struct timeval tv = {20, 0}; /* no test waits longer for a byte */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_request(int fd, const char *method, const char *path, const char *extra, const char *body, size_t blen)
{
    char head[1024];
    int n = snprintf(head, sizeof head, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%sContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n", method, path, extra ? extra : "", blen);
    ck_assert_int_eq(send(fd, head, (size_t)n, MSG_NOSIGNAL), n);
    for (size_t off = 0; off < blen;) {
        ssize_t w = send(fd, body + off, blen - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server may answer and close before a huge body is in */
        off += (size_t)w;
    }
}

static http_reply read_reply(int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = recv(fd, buf + len, cap - len - 1, 0)) > 0) {
        len += (size_t)r;
        if (len + 1 == cap) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    close(fd);
    http_reply h = {0};
    sscanf(buf, "HTTP/1.%*d %d", &h.status);
    char *b = strstr(buf, "\r\n\r\n");
    if (b) {
        h.len = len - (size_t)(b + 4 - buf);
        h.body = malloc(h.len + 1);
        memcpy(h.body, b + 4, h.len + 1);
    }
    free(buf);
    return h;
}

static http_reply http(unsigned port, const char *method, const char *path, const char *extra, const char *body)
{
    int fd = connect_local(port);
    ck_assert_int_ge(fd, 0);
    send_request(fd, method, path, extra, body ? body : "", body ? strlen(body) : 0);
    return read_reply(fd);
}

/* The ids of "token_ids" arrays in a body, in order (all chunks of a stream). */
static size_t ids_of(const char *body, int *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = body; p && (p = strstr(p, "\"token_ids\":[")); ) {
        p += 13;
        while (*p && *p != ']') {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) break;
            if (n < cap) out[n++] = (int)v;
            p = *end == ',' ? end + 1 : end;
        }
    }
    return n;
}

static long metric(unsigned port, const char *name)
{
    http_reply h = http(port, "GET", "/metrics", NULL, NULL);
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = h.body ? strstr(h.body, key) : NULL;
    long v = p ? strtol(p + strlen(key), NULL, 10) : -1;
    free(h.body);
    return v;
}

static char *ids_json(const int *ids, size_t n)
{
    char *s = malloc(n * 12 + 4);
    size_t k = (size_t)sprintf(s, "[");
    for (size_t i = 0; i < n; i++) k += (size_t)sprintf(s + k, i ? ",%d" : "%d", ids[i]);
    sprintf(s + k, "]");
    return s;
}

typedef struct server_fixture {
    clnpu_model *m;
    clnpu_engine *e;
    clnpu_server *s;
    unsigned port;
} server_fixture;

static const clnpu_server_text *fixture_text; /* set by the text test only */

static server_fixture start_server(size_t seqs, size_t pages, const char *key, size_t max_waiting, bool run,
                                   unsigned timeout_s)
{
    server_fixture f = {tiny_model(seqs, 128, pages, 64), NULL, NULL, 0};
    clnpu_engine_options eo = clnpu_engine_options_default();
    eo.max_waiting = max_waiting;
    ck_assert_ok(clnpu_engine_create(f.m, &eo, &f.e));
    if (run) ck_assert_ok(clnpu_engine_start(f.e));
    clnpu_server_options so = clnpu_server_options_default();
    so.port = 0, so.api_key = key, so.model_name = "tiny", so.max_body = 4096, so.max_tokens = 64;
    so.timeout_s = timeout_s, so.text = fixture_text;
    ck_assert_ok(clnpu_server_start(f.e, &so, &f.s));
    f.port = clnpu_server_port(f.s);
    ck_assert_uint_gt(f.port, 0);
    return f;
}

static void stop_server(server_fixture *f)
{
    clnpu_engine_shutdown(f->e);
    clnpu_server_stop(f->s);
    clnpu_engine_destroy(f->e);
    clnpu_model_destroy(f->m);
}

START_TEST(test_http_api)
{
    open_tiny();
    make_prompts();
    reference();
    server_fixture f = start_server(4, 0, NULL, 64, true, 30);
    http_reply h = http(f.port, "GET", "/health", NULL, NULL);
    ck_assert_int_eq(h.status, 200);
    free(h.body);
    h = http(f.port, "GET", "/v1/models", NULL, NULL);
    ck_assert_int_eq(h.status, 200);
    ck_assert_ptr_nonnull(strstr(h.body, "\"id\":\"tiny\""));
    free(h.body);
    h = http(f.port, "GET", "/nowhere", NULL, NULL);
    ck_assert_int_eq(h.status, 404);
    free(h.body);
    h = http(f.port, "GET", "/v1/completions", NULL, NULL);
    ck_assert_int_eq(h.status, 405);
    free(h.body);
    /* a completion, then the same prompt streamed: the ids of the prompt run alone */
    char body[2048], *p = ids_json(prompts[1], plen[1]);
    snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":%d,\"temperature\":0}", p, NEW);
    h = http(f.port, "POST", "/v1/completions", NULL, body);
    ck_assert_msg(h.status == 200, "%d %s", h.status, h.body);
    int ids[64];
    ck_assert_uint_eq(ids_of(h.body, ids, 64), NEW);
    for (size_t i = 0; i < NEW; i++) ck_assert_int_eq(ids[i], ref[1][i]);
    ck_assert_ptr_nonnull(strstr(h.body, "\"finish_reason\":\"length\""));
    char usage[96];
    snprintf(usage, sizeof usage, "\"prompt_tokens\":%zu,\"completion_tokens\":%d", plen[1], NEW);
    ck_assert_msg(strstr(h.body, usage), "%s", h.body);
    free(h.body);
    snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":%d,\"temperature\":0,\"stream\":true,\"logprobs\":2}", p, NEW);
    h = http(f.port, "POST", "/v1/completions", NULL, body);
    ck_assert_int_eq(h.status, 200);
    ck_assert_uint_eq(ids_of(h.body, ids, 64), NEW);
    for (size_t i = 0; i < NEW; i++) ck_assert_int_eq(ids[i], ref[1][i]);
    ck_assert_ptr_nonnull(strstr(h.body, "data: [DONE]\n\n"));
    ck_assert_ptr_nonnull(strstr(h.body, "\"token_logprobs\":["));
    free(h.body);
    free(p);
    /* bad requests: 400 with a message naming what is wrong */
    static const struct { const char *body, *says; } bads[] = {
        {"{\"prompt\":[1,2", "not JSON"},
        {"[1,2,3]", "JSON object"},
        {"{\"prompt\":[1,2,3]} x", "after the JSON"},
        {"{\"max_tokens\":3}", "'prompt' is required"},
        {"{\"prompt\":[1,-2]}", "not a token id"},
        {"{\"prompt\":[1,2],\"max_tokens\":\"x\"}", "'max_tokens'"},
        {"{\"prompt\":[1,2],\"max_tokens\":65}", "at most 64"},
        {"{\"prompt\":[1,2],\"temperature\":-1}", "'temperature'"},
        {"{\"prompt\":[1,2],\"top_p\":0}", "'top_p'"},
        {"{\"prompt\":[1,2],\"stream\":1}", "'stream'"},
        {"{\"prompt\":[1,2],\"n\":2}", "'n'"},
        {"{\"prompt\":[99999]}", "outside the vocabulary"},
        {"{\"prompt\":\"hello\"}", "no tokenizer"},
        {"{\"prompt\":[1,2],\"stop\":\"x\"}", "need a tokenizer"},
    };
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; i++) {
        h = http(f.port, "POST", "/v1/completions", NULL, bads[i].body);
        ck_assert_msg(h.status == 400 && h.body && strstr(h.body, bads[i].says), "%s: %d %s", bads[i].body, h.status,
                      h.body ? h.body : "");
        free(h.body);
    }
    h = http(f.port, "POST", "/v1/chat/completions", NULL, "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    ck_assert_int_eq(h.status, 400); /* no chat template in this server */
    free(h.body);
    char *huge = malloc(8192);
    memset(huge, ' ', 8191), huge[8191] = '\0';
    memcpy(huge, "{\"prompt\":[1]", 13), huge[8190] = '}';
    h = http(f.port, "POST", "/v1/completions", NULL, huge);
    ck_assert_msg(h.status == 400 && strstr(h.body, "larger than 4096"), "%d", h.status);
    free(h.body), free(huge);
    ck_assert_int_eq(metric(f.port, "clnpu_requests_running"), 0);
    ck_assert_int_eq(metric(f.port, "clnpu_kv_pages_used"), 0);
    stop_server(&f);
}
END_TEST

START_TEST(test_http_key_and_queue)
{
    open_tiny();
    server_fixture f = start_server(2, 0, "s3cret", 1, false, 30); /* the engine does not run: requests wait */
    http_reply h = http(f.port, "POST", "/v1/completions", NULL, "{\"prompt\":[1,2,3]}");
    ck_assert_int_eq(h.status, 401);
    free(h.body);
    h = http(f.port, "GET", "/v1/models", "Authorization: Bearer s3cre\r\n", NULL);
    ck_assert_int_eq(h.status, 401);
    free(h.body);
    h = http(f.port, "GET", "/health", NULL, NULL); /* health and metrics need no key */
    ck_assert_int_eq(h.status, 200);
    free(h.body);
    /* one request fills the queue of 1; the next gets 429; the first's client leaves and its
     * request is cancelled */
    int fd = connect_local(f.port);
    const char *b = "{\"prompt\":[1,2,3],\"max_tokens\":4}";
    send_request(fd, "POST", "/v1/completions", "Authorization: Bearer s3cret\r\n", b, strlen(b));
    for (int i = 0; i < 200 && metric(f.port, "clnpu_requests_waiting") != 1; i++) usleep(10000);
    ck_assert_int_eq(metric(f.port, "clnpu_requests_waiting"), 1);
    h = http(f.port, "POST", "/v1/completions", "Authorization: Bearer s3cret\r\n", b);
    ck_assert_msg(h.status == 429 && strstr(h.body, "queue full"), "%d", h.status);
    free(h.body);
    close(fd);
    long w = 1;
    for (int i = 0; i < 300 && (w = metric(f.port, "clnpu_requests_waiting")) != 0; i++) usleep(10000);
    ck_assert_int_eq(w, 0);
    ck_assert_int_eq(metric(f.port, "clnpu_requests_rejected_total{reason=\"unauthorized\"}"), 2);
    stop_server(&f);
}
END_TEST

/* ---- text: the tiny model's own tokenizer and chat template ---- */

static clnpu_tokenizer *tok;
static clnpu_chat_template *tmpl;

static clnpu_status t_encode(void *ctx, const char *text, size_t len, int **ids, size_t *n)
{
    (void)ctx;
    return clnpu_tokenizer_encode(tok, text, len, ids, n);
}

static clnpu_status t_decode(void *ctx, const int *ids, size_t n, char **text, size_t *len)
{
    (void)ctx;
    return clnpu_tokenizer_decode(tok, ids, n, text, len);
}

static clnpu_status t_chat(void *ctx, const char *msgs, bool gen, int think, char **out)
{
    (void)ctx;
    clnpu_chat_options o = clnpu_chat_options_default();
    o.add_generation_prompt = gen, o.enable_thinking = think;
    return clnpu_chat_template_render(tmpl, msgs, &o, out);
}

/* The JSON string value after "key": in body (unescaped by cJSON), or NULL. */
static char *json_text(const char *body, const char *path0, const char *path1)
{
    cJSON *j = cJSON_Parse(body);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, path0);
    if (path1) v = cJSON_GetObjectItemCaseSensitive(v, path1);
    char *s = cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
    cJSON_Delete(j);
    return s;
}

/* Text prompts give the ids of their tokenization; a stream's pieces add up to the whole text (no
 * character cut in two, valid UTF-8); a stop string ends the text before it; a chat renders the
 * template. */
START_TEST(test_http_text)
{
    open_tiny();
    ck_assert_ok(clnpu_tokenizer_load(TINY, &tok));
    ck_assert_ok(clnpu_chat_template_load(TINY, &tmpl));
    const clnpu_server_text hooks = {NULL, t_encode, t_decode, t_chat};
    fixture_text = &hooks;
    server_fixture f = start_server(4, 0, NULL, 64, true, 30);
    fixture_text = NULL;
    const char *prompt = "The quick brown fox jumps over";
    int *pids;
    size_t pn;
    ck_assert_ok(clnpu_tokenizer_encode(tok, prompt, strlen(prompt), &pids, &pn));
    char *pj = ids_json(pids, pn), body[4096];
    free(pids);
    /* ids and text of the same prompt: the same tokens, the text their decoding */
    snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":24,\"temperature\":0}", pj);
    http_reply byid = http(f.port, "POST", "/v1/completions", NULL, body);
    snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"max_tokens\":24,\"temperature\":0}", prompt);
    http_reply bytext = http(f.port, "POST", "/v1/completions", NULL, body);
    ck_assert_int_eq(byid.status, 200);
    ck_assert_int_eq(bytext.status, 200);
    int a[64], b[64];
    const size_t na = ids_of(byid.body, a, 64), nb = ids_of(bytext.body, b, 64);
    ck_assert_uint_eq(na, nb);
    for (size_t i = 0; i < na; i++) ck_assert_int_eq(a[i], b[i]);
    char *whole = json_text(bytext.body, "text", NULL), *want;
    size_t wl;
    ck_assert_ok(clnpu_tokenizer_decode(tok, a, na, &want, &wl));
    ck_assert_ptr_nonnull(whole);
    /* the decoding itself (where it is not valid UTF-8, the server's U+FFFD replacements) */
    ck_assert_msg(!strcmp(whole, want) || strstr(whole, "\xef\xbf\xbd"), "text '%s', decoded '%s'", whole, want);
    /* streamed: the pieces add up to the same text */
    snprintf(body, sizeof body, "{\"prompt\":\"%s\",\"max_tokens\":24,\"temperature\":0,\"stream\":true}", prompt);
    http_reply st = http(f.port, "POST", "/v1/completions", NULL, body);
    ck_assert_int_eq(st.status, 200);
    char joined[8192] = "";
    for (char *p = st.body; (p = strstr(p, "data: {")); p++) {
        char *end = strstr(p, "\n\n");
        ck_assert_ptr_nonnull(end);
        *end = '\0';
        char *piece = json_text(p + 6, "text", NULL);
        ck_assert_msg(piece != NULL, "a chunk that is not valid JSON: %s", p + 6);
        strncat(joined, piece, sizeof joined - strlen(joined) - 1);
        free(piece);
        p = end;
    }
    ck_assert_str_eq(joined, whole);
    /* a stop string from the middle of that text: the text ends right before it */
    const size_t L = strlen(whole);
    if (L >= 6) {
        char stop[8];
        memcpy(stop, whole + L / 2, 3), stop[3] = '\0';
        cJSON *req = cJSON_CreateObject();
        cJSON_AddStringToObject(req, "prompt", prompt);
        cJSON_AddNumberToObject(req, "max_tokens", 24), cJSON_AddNumberToObject(req, "temperature", 0);
        cJSON_AddStringToObject(req, "stop", stop);
        char *rq = cJSON_PrintUnformatted(req);
        cJSON_Delete(req);
        http_reply h = http(f.port, "POST", "/v1/completions", NULL, rq);
        free(rq);
        char *cut = json_text(h.body, "text", NULL), *first = strstr(whole, stop);
        ck_assert_ptr_nonnull(cut);
        ck_assert_uint_eq(strlen(cut), (size_t)(first - whole));
        ck_assert_int_eq(strncmp(cut, whole, strlen(cut)), 0);
        ck_assert_ptr_nonnull(strstr(h.body, "\"finish_reason\":\"stop\""));
        free(cut), free(h.body);
    }
    /* a chat: the template's prompt, an assistant message back */
    http_reply chat = http(f.port, "POST", "/v1/chat/completions", NULL,
                           "{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\","
                           "\"content\":\"Hi\"}],\"max_tokens\":5,\"temperature\":0,\"logprobs\":true,\"top_logprobs\":2,"
                           "\"chat_template_kwargs\":{\"enable_thinking\":false}}");
    ck_assert_msg(chat.status == 200, "%d %s", chat.status, chat.body);
    char *content = json_text(chat.body, "message", "content");
    ck_assert_ptr_nonnull(content);
    ck_assert_ptr_nonnull(strstr(chat.body, "\"role\":\"assistant\""));
    ck_assert_ptr_nonnull(strstr(chat.body, "\"top_logprobs\":[{"));
    free(content);
    free(whole), free(want), free(pj);
    free(byid.body), free(bytext.body), free(st.body), free(chat.body);
    stop_server(&f);
    clnpu_chat_template_free(tmpl), clnpu_tokenizer_free(tok);
    tmpl = NULL, tok = NULL;
}
END_TEST

typedef struct load_arg {
    unsigned port;
    int ok, wrong;
    int eos; /* the server stops at this id (-1: none): a reply may end early with it */
} load_arg;

static void *load_client(void *arg)
{
    load_arg *a = arg;
    for (int r = 0; r < 8; r++) {
        const size_t p = test_rand_u64() % NP;
        char body[2048], *ids = ids_json(prompts[p], plen[p]);
        snprintf(body, sizeof body, "{\"prompt\":%s,\"max_tokens\":%d,\"temperature\":0%s}", ids, NEW,
                 r % 2 ? ",\"stream\":true" : "");
        free(ids);
        int fd = connect_local(a->port);
        if (fd < 0) {
            a->wrong++;
            continue;
        }
        send_request(fd, "POST", "/v1/completions", NULL, body, strlen(body));
        http_reply h = read_reply(fd);
        int got_ids[64];
        const size_t n = h.status == 200 && h.body ? ids_of(h.body, got_ids, 64) : 0;
        /* all NEW ids of the prompt alone, or a prefix of them that ends at the end-of-sequence id */
        bool same = n == NEW || (n && n < NEW && got_ids[n - 1] == a->eos && strstr(h.body, "\"finish_reason\":\"stop\""));
        for (size_t i = 0; same && i < n; i++) same = got_ids[i] == ref[p][i];
        if (same) a->ok++;
        else if (a->wrong++ == 0)
            fprintf(stderr, "load: prompt %zu (%zu ids): HTTP %d %.3000s\n", p, plen[p], h.status, h.body ? h.body : "");
        free(h.body);
    }
    return NULL;
}

/* 64 clients x 8 requests (half streamed), a client that vanishes mid-stream and one that sends
 * half a request and stalls: every accepted request is answered with the ids of its prompt
 * alone, and the cache is empty at the end. */
START_TEST(test_http_load)
{
    open_tiny();
    make_prompts();
    reference();
    server_fixture f = start_server(16, 0, NULL, 1024, true, 2);
    /* a stream whose client leaves after the first chunk */
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\":[5,6,7],\"max_tokens\":100,\"temperature\":0,\"stream\":true}");
    int fd = connect_local(f.port);
    send_request(fd, "POST", "/v1/completions", NULL, body, strlen(body));
    char first[512];
    ck_assert_int_gt(recv(fd, first, sizeof first, 0), 0);
    close(fd);
    /* half a request, then silence: the server's 2 s timeout closes it */
    int slow = connect_local(f.port);
    ck_assert_int_gt(send(slow, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n", 40, MSG_NOSIGNAL), 0);
    enum { CLIENTS = 64 };
    pthread_t th[CLIENTS];
    load_arg a[CLIENTS];
    const double t0 = clock() / (double)CLOCKS_PER_SEC;
    struct timespec w0, w1;
    clock_gettime(CLOCK_MONOTONIC, &w0);
    for (int i = 0; i < CLIENTS; i++) {
        a[i] = (load_arg){f.port, 0, 0, -1};
        ck_assert_int_eq(pthread_create(&th[i], NULL, load_client, &a[i]), 0);
    }
    int ok = 0, wrong = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(th[i], NULL);
        ok += a[i].ok, wrong += a[i].wrong;
    }
    clock_gettime(CLOCK_MONOTONIC, &w1);
    (void)t0;
    char c;
    ck_assert_int_eq(recv(slow, &c, 1, 0), 0); /* closed by the server */
    close(slow);
    ck_assert_msg(wrong == 0, "%d of %d requests answered wrong or not at all", wrong, ok + wrong);
    ck_assert_int_eq(ok, CLIENTS * 8);
    long used = -1, running = -1;
    for (int i = 0; i < 300; i++) {
        used = metric(f.port, "clnpu_kv_pages_used"), running = metric(f.port, "clnpu_requests_running");
        if (!used && !running) break;
        usleep(10000);
    }
    ck_assert_int_eq(running, 0);
    ck_assert_int_eq(used, 0);
    ck_assert_int_eq(metric(f.port, "clnpu_requests_waiting"), 0);
    printf("serve: %d clients x 8 requests in %.2f s, all identical to their prompts alone; cache empty after\n",
           CLIENTS, (w1.tv_sec - w0.tv_sec) + (w1.tv_nsec - w0.tv_nsec) * 1e-9);
    stop_server(&f);
}
END_TEST

static unsigned free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t len = sizeof a;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* `mpirun -np 2 clnpu serve --plan` (two pipeline stages, a rank each): rank 0 answers HTTP,
 * concurrent requests get the ids of their prompts alone, SIGTERM ends both ranks. */
START_TEST(test_http_mpi)
{
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_http_mpi: mpirun not installed, skipped\n");
        return;
    }
#ifndef CLNPU_HAVE_MPI
    fprintf(stderr, "test_http_mpi: built without MPI, skipped\n");
    return;
#endif
    open_tiny();
    make_prompts();
    reference();
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    const char *asan = getenv("ASAN_OPTIONS"); /* Open MPI's plugins leak past LSan: see test_mpi_ranks */
    char asan_ranks[512], dir[256], plan[512], cmd[4096], log[512], pidf[512];
    snprintf(asan_ranks, sizeof asan_ranks, "%s%sdetect_leaks=0", asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", asan_ranks, 1);
    test_mkdtemp(dir, sizeof dir);
    snprintf(plan, sizeof plan, "%s/plan.yaml", dir);
    ck_assert_int_eq(test_write_file(plan,
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\n"
        "parallel: {tp: 1, pp: 2, ep: 1, dp: 1}\nstages:\n"
        "- {stage: 0, devices: [0], embedding: true, head: false, layers: [0]}\n"
        "- {stage: 1, devices: [1], embedding: false, head: true, layers: [1, 2]}\n"), 0);
    const unsigned port = free_port();
    snprintf(log, sizeof log, "%s/log", dir), snprintf(pidf, sizeof pidf, "%s/pid", dir);
    snprintf(cmd, sizeof cmd, "CLNPU_MPI_TIMEOUT=60 timeout 120 mpirun --oversubscribe -np 2 '%s' serve --model '%s' "
             "--plan '%s' --port %u --sequences 4 --context 128 > '%s' 2>&1 & echo $! > '%s'", CLNPU_CLI_PATH, TINY,
             plan, port, log, pidf);
    ck_assert_int_eq(system(cmd), 0);
    int up = 0;
    for (int i = 0; i < 600 && !up; i++) {
        int fd = connect_local(port);
        if (fd >= 0) {
            send_request(fd, "GET", "/health", NULL, "", 0);
            http_reply h = read_reply(fd);
            up = h.status == 200;
            free(h.body);
        }
        if (!up) usleep(100000);
    }
    char out[4096] = "";
    FILE *lf = fopen(log, "r");
    if (lf) out[fread(out, 1, sizeof out - 1, lf)] = '\0', fclose(lf);
    ck_assert_msg(up, "the server did not come up: %s", out);
    /* four streams at once through both ranks */
    load_arg la = {port, 0, 0, 2}; /* config.json's eos_token_id */
    pthread_t th[4];
    for (int i = 0; i < 4; i++) ck_assert_int_eq(pthread_create(&th[i], NULL, load_client, &la), 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    snprintf(cmd, sizeof cmd, "kill -TERM $(cat '%s'); for i in $(seq 100); do kill -0 $(cat '%s') 2>/dev/null || "
             "exit 0; sleep 0.1; done; exit 1", pidf, pidf);
    const int gone = system(cmd);
    if (asan) setenv("ASAN_OPTIONS", asan, 1);
    else unsetenv("ASAN_OPTIONS");
    ck_assert_msg(la.wrong == 0 && la.ok == 32, "%d right, %d wrong", la.ok, la.wrong);
    ck_assert_msg(gone == 0, "mpirun did not end on SIGTERM");
    test_rmdir(dir);
}
END_TEST

Suite *suite_serve(void)
{
    Suite *s = suite_create("serve");
    TCase *t = tcase_create("serve");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, test_engine_matches_alone);
    tcase_add_test(t, test_engine_pipeline);
    tcase_add_test(t, test_engine_refuses);
    tcase_add_test(t, test_http_api);
    tcase_add_test(t, test_http_key_and_queue);
    tcase_add_test(t, test_http_text);
    tcase_add_test(t, test_http_load);
    tcase_add_test(t, test_http_mpi);
    suite_add_tcase(s, t);
    return s;
}
