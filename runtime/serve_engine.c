/* The continuous-batching engine (include/clnpu/serve.h): a queue of requests, admission by
 * sequence slots and cache pages, one decode step for the running sequences and prompt chunks
 * in every iteration, pre-emption of the newest request when pages run out. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/error.h"
#include "clnpu/pipeline.h"
#include "model_internal.h"
#include "serve_internal.h"
#include "serve_prefix.h"

enum { RQ_WAITING, RQ_PREFILL, RQ_DECODE };

typedef struct rq {
    uint64_t id, arrival;
    int *tok; /* prompt then the generated tokens */
    size_t ntok, cap, prompt_len, generated, max_new;
    clnpu_sampling samp;
    uint64_t rng;
    int *stop;
    size_t nstop, logprobs;
    clnpu_engine_event_fn fn;
    void *user;
    int state;
    size_t slot, computed, cached;
    double t_submit, t_admit, t_first, t_last;
    bool cancel, resumed;
    struct rq *next; /* the waiting list */
} rq;

#define LAT_RING 1024

struct clnpu_engine {
    clnpu_model *m;     /* one model, or */
    clnpu_pipeline *pl; /* a plan's stages (no prefix cache: its pages are per stage and replica) */
    clnpu_engine_options opt;
    size_t V, slots, ctx, page, pool; /* pool: the pages a sequence may hold at most */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    bool started, stop, shut;
    rq *wait_head, *wait_tail;
    size_t nwait;
    rq **run; /* [slots] */
    size_t nrun;
    uint64_t next_id, arrivals;
    serve_prefix *prefix;
    /* step scratch */
    float *logits; /* [step_tokens][V] */
    serve_cand *cand;
    int *ids, *out_ids, *pages;
    size_t *seqs;
    rq **rows;
    /* stats */
    clnpu_engine_stats st;
    double ttft[LAT_RING], itl[LAT_RING];
    size_t nttft, nitl;
    double rate_t0;
    uint64_t rate_tokens;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- the model or pipeline underneath ---- */

/* Over MPI ranks every pipeline call is announced first: the other ranks make it too. A prompt
 * chunk's logits: NULL (not its last chunk), or its last row in *out_row (one model computes the
 * LM head for that row only). */
static clnpu_status be_prefill(clnpu_engine *e, size_t seq, const int *ids, size_t n, bool want, const float **out_row)
{
    if (!e->pl) {
        *out_row = e->logits;
        return want ? clnpu_model_prefill_last(e->m, seq, ids, n, e->logits) : clnpu_model_prefill(e->m, seq, ids, n, NULL);
    }
    *out_row = e->logits + (n - 1) * e->V;
    clnpu_status st = serve_mpi_announce(e->pl, SERVE_CMD_PREFILL, seq, NULL, ids, n, want);
    return st ? st : clnpu_pipeline_prefill(e->pl, seq, ids, n, want ? e->logits : NULL);
}

static clnpu_status be_decode(clnpu_engine *e, size_t n, float *logits)
{
    if (!e->pl) return clnpu_model_decode(e->m, e->seqs, e->ids, n, logits);
    clnpu_status st = serve_mpi_announce(e->pl, SERVE_CMD_DECODE, 0, e->seqs, e->ids, n, true);
    return st ? st : clnpu_pipeline_decode(e->pl, e->seqs, e->ids, n, logits);
}

static void be_reset(clnpu_engine *e, size_t seq)
{
    if (!e->pl) {
        clnpu_model_reset(e->m, seq);
        return;
    }
    serve_mpi_announce(e->pl, SERVE_CMD_RESET, seq, NULL, NULL, 0, false); /* a lost rank fails the next step */
    clnpu_pipeline_reset(e->pl, seq);
}

static clnpu_cache_usage be_usage(clnpu_engine *e)
{
    return e->pl ? clnpu_pipeline_cache_usage(e->pl) : clnpu_model_cache_usage(e->m);
}

clnpu_engine_options clnpu_engine_options_default(void)
{
    return (clnpu_engine_options){256, 0, true};
}

static void rq_free(rq *r)
{
    if (!r) return;
    free(r->tok), free(r->stop), free(r);
}

static clnpu_status engine_init(clnpu_engine *e, const clnpu_engine_options *opt, size_t max_tokens, size_t pages,
                                clnpu_engine **out)
{
    e->opt = opt ? *opt : clnpu_engine_options_default();
    if (!e->opt.max_waiting) e->opt.max_waiting = 1;
    if (!e->opt.step_tokens || e->opt.step_tokens > max_tokens) e->opt.step_tokens = max_tokens;
    if (e->pl) e->opt.prefix_cache = false;
    const size_t B = e->opt.step_tokens;
    e->run = calloc(e->slots, sizeof *e->run);
    e->logits = malloc(B * e->V * sizeof *e->logits);
    e->cand = malloc(e->V * sizeof *e->cand);
    e->ids = malloc(B * sizeof *e->ids), e->out_ids = malloc(B * sizeof *e->out_ids);
    e->seqs = malloc(B * sizeof *e->seqs), e->rows = malloc(B * sizeof *e->rows);
    e->pages = malloc((e->ctx / e->page + 1) * sizeof *e->pages);
    if (e->opt.prefix_cache) e->prefix = serve_prefix_create(pages, e->page);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    if (!e->run || !e->logits || !e->cand || !e->ids || !e->out_ids || !e->seqs || !e->rows || !e->pages ||
        (e->opt.prefix_cache && !e->prefix)) {
        clnpu_engine_destroy(e);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory for the serving engine");
    }
    e->rate_t0 = now_s();
    const clnpu_cache_usage u = be_usage(e);
    e->st.pages = u.pages, e->st.pages_free = u.free; /* the loop keeps them (it owns the model) */
    *out = e;
    return CLNPU_OK;
}

clnpu_status clnpu_engine_create(clnpu_model *m, const clnpu_engine_options *opt, clnpu_engine **out)
{
    *out = NULL;
    if (!m->opt.head || !m->opt.embed || m->opt.layer_begin || m->opt.layer_end < m->cfg.num_hidden_layers)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "serving needs a whole model (this one is a pipeline stage)");
    clnpu_engine *e = calloc(1, sizeof *e);
    if (!e) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    e->m = m;
    e->V = m->cfg.vocab_size, e->slots = m->opt.max_sequences, e->ctx = m->opt.max_context;
    e->page = m->opt.page_size, e->pool = m->pages;
    return engine_init(e, opt, m->opt.max_tokens, m->pages, out);
}

clnpu_status clnpu_engine_create_pipeline(clnpu_pipeline *p, const clnpu_engine_options *opt, clnpu_engine **out)
{
    *out = NULL;
    if (clnpu_pipeline_rank(p) != 0)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "rank %d serves no engine: it follows rank 0 "
                          "(clnpu_pipeline_serve_follow)", clnpu_pipeline_rank(p));
    clnpu_engine *e = calloc(1, sizeof *e);
    if (!e) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    e->pl = p;
    const clnpu_cache_usage u = clnpu_pipeline_cache_usage(p);
    e->V = clnpu_pipeline_config(p)->vocab_size, e->slots = clnpu_pipeline_max_sequences(p);
    e->ctx = clnpu_pipeline_context(p), e->page = u.page_size ? u.page_size : 16;
    /* every sequence has its whole context's pages on every stage: admission is by slots */
    e->pool = (e->ctx + e->page - 1) / e->page;
    return engine_init(e, opt, clnpu_pipeline_max_tokens(p), 0, out);
}

/* ---- events and endings ---- */

static void lat_push(double *ring, size_t *n, double v)
{
    ring[*n % LAT_RING] = v;
    (*n)++;
}

static bool emit(clnpu_engine *e, rq *r, int token, clnpu_engine_finish fin, const char *msg, const float *row)
{
    clnpu_engine_event ev = {.id = r->id, .token = token, .finish = fin, .message = msg,
                             .prompt_tokens = r->prompt_len, .completion_tokens = r->generated,
                             .cached_tokens = r->cached,
                             .queue_s = r->t_admit > 0 ? r->t_admit - r->t_submit : now_s() - r->t_submit,
                             .first_token_s = r->t_first > 0 ? r->t_first - r->t_submit : 0};
    if (row && token >= 0 && r->logprobs) {
        ev.top_count = r->logprobs;
        serve_logprobs(row, e->V, token, r->logprobs, e->cand, &ev.logprob, ev.top_ids, ev.top_logprobs);
    }
    return r->fn ? r->fn(r->user, &ev) : false;
}

/* Leave the running set: the full pages go to the prefix cache, the slot is freed. */
static void retire(clnpu_engine *e, rq *r, clnpu_engine_finish fin, const char *msg)
{
    if (r->state != RQ_WAITING) {
        if (e->prefix && fin != CLNPU_ENGINE_FINISH_ERROR) {
            const size_t full = r->computed / e->page;
            if (full && !clnpu_model_sequence_pages(e->m, r->slot, full, e->pages))
                serve_prefix_insert(e->prefix, e->m, r->tok, full, e->pages);
        }
        be_reset(e, r->slot);
    }
    pthread_mutex_lock(&e->mu);
    if (r->state != RQ_WAITING) e->run[r->slot] = NULL, e->nrun--;
    if (fin == CLNPU_ENGINE_FINISH_ERROR) e->st.requests_failed++;
    else e->st.requests_finished++;
    pthread_mutex_unlock(&e->mu);
    emit(e, r, -1, fin, msg, NULL);
    rq_free(r);
}

/* Back to the head of the queue: its pages are freed; it is recomputed from its tokens so far. */
static void preempt(clnpu_engine *e, rq *r)
{
    be_reset(e, r->slot);
    r->state = RQ_WAITING, r->computed = 0, r->resumed = true;
    pthread_mutex_lock(&e->mu);
    e->run[r->slot] = NULL, e->nrun--;
    r->next = e->wait_head;
    e->wait_head = r;
    if (!e->wait_tail) e->wait_tail = r;
    e->nwait++;
    e->st.preemptions++;
    pthread_mutex_unlock(&e->mu);
}

/* ---- pages ---- */

static size_t pages_free(clnpu_engine *e)
{
    /* a pipeline gives every sequence its pages up front (on each stage): never short */
    return e->pl ? SIZE_MAX : clnpu_model_cache_usage(e->m).free;
}

/* Make `want` pages free, evicting cached prefixes first; false if it cannot. */
static bool make_room(clnpu_engine *e, size_t want)
{
    size_t f = pages_free(e);
    if (f >= want) return true;
    if (e->prefix) serve_prefix_evict(e->prefix, e->m, want - f);
    return pages_free(e) >= want;
}

static size_t pages_for(clnpu_engine *e, size_t from, size_t to) /* new pages to hold rows [from, to) */
{
    const size_t have = (from + e->page - 1) / e->page, need = (to + e->page - 1) / e->page;
    return need > have ? need - have : 0;
}

static rq *newest_running(clnpu_engine *e)
{
    rq *best = NULL;
    for (size_t s = 0; s < e->slots; s++)
        if (e->run[s] && (!best || e->run[s]->arrival > best->arrival)) best = e->run[s];
    return best;
}

/* ---- submission ---- */

clnpu_status clnpu_engine_submit(clnpu_engine *e, const clnpu_engine_request *q, uint64_t *out_id)
{
    if (!q->prompt_len || !q->prompt) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "the prompt is empty");
    if (!q->max_tokens) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "max_tokens must be at least 1");
    if (q->logprobs > CLNPU_ENGINE_MAX_LOGPROBS)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "logprobs %zu: at most %d", q->logprobs, CLNPU_ENGINE_MAX_LOGPROBS);
    for (size_t i = 0; i < q->prompt_len; i++)
        if (q->prompt[i] < 0 || (size_t)q->prompt[i] >= e->V)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "token id %d at %zu is outside the vocabulary of %zu",
                              q->prompt[i], i, e->V);
    /* the whole sequence must fit the context and, alone, the cache: then pre-emption of the
     * others always lets it finish */
    if (q->prompt_len + q->max_tokens > e->ctx)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "prompt of %zu tokens + max_tokens %zu exceed the context of %zu",
                          q->prompt_len, q->max_tokens, e->ctx);
    if (pages_for(e, 0, q->prompt_len + q->max_tokens) > e->pool)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "prompt + max_tokens need more than the %zu cache pages",
                          e->pool);
    rq *r = calloc(1, sizeof *r);
    const size_t cap = q->prompt_len + q->max_tokens;
    if (r) r->tok = malloc(cap * sizeof *r->tok);
    if (r && q->stop_count) r->stop = malloc(q->stop_count * sizeof *r->stop);
    if (!r || !r->tok || (q->stop_count && !r->stop)) {
        rq_free(r);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    memcpy(r->tok, q->prompt, q->prompt_len * sizeof *r->tok);
    if (q->stop_count) memcpy(r->stop, q->stop_ids, q->stop_count * sizeof *r->stop);
    r->ntok = r->prompt_len = q->prompt_len, r->cap = cap, r->max_new = q->max_tokens;
    r->samp = q->sampling, r->rng = q->sampling.seed ^ 0x243f6a8885a308d3ull;
    r->nstop = q->stop_count, r->logprobs = q->logprobs, r->fn = q->on_event, r->user = q->user;
    r->t_submit = now_s();
    pthread_mutex_lock(&e->mu);
    if (e->nwait >= e->opt.max_waiting || e->stop) {
        const size_t n = e->nwait;
        const bool stopping = e->stop;
        pthread_mutex_unlock(&e->mu);
        rq_free(r);
        return stopping ? clnpu_fail(CLNPU_ERR_BUSY, "the server is shutting down")
                        : clnpu_fail(CLNPU_ERR_BUSY, "queue full: %zu requests waiting", n);
    }
    r->id = ++e->next_id, r->arrival = ++e->arrivals;
    if (!q->sampling.seed) r->rng ^= r->id * 0x9e3779b97f4a7c15ull;
    if (e->wait_tail) e->wait_tail->next = r;
    else e->wait_head = r;
    e->wait_tail = r;
    e->nwait++;
    if (out_id) *out_id = r->id;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    return CLNPU_OK;
}

void clnpu_engine_cancel(clnpu_engine *e, uint64_t id)
{
    rq *gone = NULL;
    pthread_mutex_lock(&e->mu);
    for (rq **l = &e->wait_head, *prev = NULL; *l; prev = *l, l = &(*l)->next)
        if ((*l)->id == id) {
            gone = *l;
            *l = gone->next;
            if (e->wait_tail == gone) e->wait_tail = prev;
            e->nwait--;
            break;
        }
    /* a running one is ended by the loop, which owns the model */
    for (size_t s = 0; !gone && s < e->slots; s++)
        if (e->run[s] && e->run[s]->id == id) e->run[s]->cancel = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (gone) {
        gone->state = RQ_WAITING;
        retire(e, gone, CLNPU_ENGINE_FINISH_CANCELLED, NULL);
    }
}

/* ---- one iteration ---- */

/* Admit waiting requests in order while a slot is free and their uncached rows fit. */
static void admit(clnpu_engine *e)
{
    for (;;) {
        pthread_mutex_lock(&e->mu);
        rq *r = e->wait_head;
        pthread_mutex_unlock(&e->mu);
        if (!r || e->nrun == e->slots) return;
        size_t slot = 0;
        while (e->run[slot]) slot++;
        /* cached pages of its prefix; at least its last token is computed, for its logits */
        size_t hit = 0;
        if (e->prefix) hit = serve_prefix_match(e->prefix, r->tok, r->ntok - 1, (r->ntok - 1) / e->page, e->pages);
        /* hold them before eviction may look for room */
        if (hit && clnpu_model_pages_retain(e->m, e->pages, hit)) hit = 0;
        const size_t need = pages_for(e, hit * e->page, r->ntok);
        bool ok = make_room(e, need);
        if (ok && hit) ok = !clnpu_model_sequence_attach(e->m, slot, e->pages, hit);
        if (hit) clnpu_model_pages_release(e->m, e->pages, hit);
        if (!ok) return; /* first come, first served: nothing overtakes the head of the queue */
        r->slot = slot, r->computed = hit * e->page, r->state = RQ_PREFILL;
        if (!r->resumed) r->cached = hit * e->page, r->t_admit = now_s();
        pthread_mutex_lock(&e->mu);
        e->wait_head = r->next;
        if (!e->wait_head) e->wait_tail = NULL;
        e->nwait--;
        if (!r->resumed) e->st.prompt_tokens += r->prompt_len, e->st.cached_prompt_tokens += hit * e->page;
        r->next = NULL;
        e->run[slot] = r, e->nrun++;
        pthread_mutex_unlock(&e->mu);
    }
}

/* A token for r from its row of logits (or the device's draw): stop ids, max_tokens and the
 * context end it; the handler may end it. */
static void accept(clnpu_engine *e, rq *r, int tok, const float *row)
{
    const double t = now_s();
    if (!r->generated) {
        r->t_first = t;
        pthread_mutex_lock(&e->mu);
        lat_push(e->ttft, &e->nttft, t - r->t_submit);
        e->st.ttft_sum_s += t - r->t_submit, e->st.ttft_count++;
        pthread_mutex_unlock(&e->mu);
    } else {
        pthread_mutex_lock(&e->mu);
        lat_push(e->itl, &e->nitl, t - r->t_last);
        pthread_mutex_unlock(&e->mu);
    }
    r->t_last = t;
    r->tok[r->ntok++] = tok;
    r->generated++;
    pthread_mutex_lock(&e->mu);
    e->st.generated_tokens++;
    e->rate_tokens++;
    pthread_mutex_unlock(&e->mu);
    bool stop = false;
    for (size_t i = 0; i < r->nstop; i++) stop |= r->stop[i] == tok;
    const bool halt = emit(e, r, tok, CLNPU_ENGINE_FINISH_NONE, NULL, row);
    if (stop || halt) retire(e, r, CLNPU_ENGINE_FINISH_STOP, NULL);
    else if (r->generated == r->max_new || r->ntok >= e->ctx) retire(e, r, CLNPU_ENGINE_FINISH_LENGTH, NULL);
    else r->state = RQ_DECODE;
}

static void fail_all(clnpu_engine *e, const char *msg)
{
    for (size_t s = 0; s < e->slots; s++)
        if (e->run[s]) retire(e, e->run[s], CLNPU_ENGINE_FINISH_ERROR, msg);
}

/* One decode step for every sequence in RQ_DECODE; returns the rows run. */
static size_t decode_step(clnpu_engine *e)
{
    size_t n;
    for (;;) { /* pages for the rows that start one: pre-empt the newest until they fit */
        n = 0;
        size_t need = 0;
        for (size_t s = 0; s < e->slots; s++)
            if (e->run[s] && e->run[s]->state == RQ_DECODE && n < e->opt.step_tokens) {
                e->rows[n++] = e->run[s];
                need += e->run[s]->computed % e->page == 0;
            }
        if (!n || make_room(e, need)) break;
        preempt(e, newest_running(e));
    }
    if (!n) return 0;
    bool greedy = true, lp = false;
    for (size_t i = 0; i < n; i++) {
        rq *r = e->rows[i];
        e->seqs[i] = r->slot, e->ids[i] = r->tok[r->ntok - 1];
        greedy &= !(r->samp.temperature > 0), lp |= r->logprobs > 0;
    }
    clnpu_status st;
    const bool on_device = greedy && !lp && e->m; /* the device's argmax: only the ids come back */
    if (on_device) {
        const clnpu_sampling g = {0};
        st = clnpu_model_decode_sample(e->m, e->seqs, e->ids, n, &g, 0, e->out_ids, NULL);
    } else {
        st = be_decode(e, n, e->logits);
    }
    if (st) {
        fail_all(e, clnpu_error_message());
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        rq *r = e->rows[i];
        r->computed++;
        const float *row = on_device ? NULL : e->logits + i * e->V;
        const int tok = row ? serve_sample(row, e->V, &r->samp, &r->rng, e->cand) : e->out_ids[i];
        accept(e, r, tok, row);
    }
    return n;
}

/* Prompt chunks in admission order within `budget` rows. */
static size_t prefill_step(clnpu_engine *e, size_t budget)
{
    size_t used = 0;
    for (;;) {
        rq *r = NULL;
        for (size_t s = 0; s < e->slots; s++)
            if (e->run[s] && e->run[s]->state == RQ_PREFILL && (!r || e->run[s]->arrival < r->arrival)) r = e->run[s];
        if (!r || used >= budget) return used;
        size_t chunk = r->ntok - r->computed;
        if (chunk > budget - used) chunk = budget - used;
        /* no pre-emption for a prompt: shrink the chunk to the pages there are, or wait */
        while (chunk && !make_room(e, pages_for(e, r->computed, r->computed + chunk))) chunk--;
        if (!chunk) return used;
        const bool last = r->computed + chunk == r->ntok;
        const float *row = NULL;
        clnpu_status st = be_prefill(e, r->slot, r->tok + r->computed, chunk, last, &row);
        if (st) {
            fail_all(e, clnpu_error_message());
            return used + chunk;
        }
        r->computed += chunk;
        used += chunk;
        if (!last) { /* a chunk of a long prompt; the rest next iteration, after a decode step */
            if (used >= budget) return used;
            continue;
        }
        if (e->prefix) { /* the prompt's full pages, for the requests that share them */
            const size_t full = r->computed / e->page;
            if (full && !clnpu_model_sequence_pages(e->m, r->slot, full, e->pages))
                serve_prefix_insert(e->prefix, e->m, r->tok, full, e->pages);
        }
        accept(e, r, serve_sample(row, e->V, &r->samp, &r->rng, e->cand), row);
    }
}

clnpu_status clnpu_engine_step(clnpu_engine *e, bool *out_busy)
{
    /* cancellations first: their pages may let others in */
    for (size_t s = 0; s < e->slots; s++) {
        pthread_mutex_lock(&e->mu);
        const bool c = e->run[s] && e->run[s]->cancel;
        pthread_mutex_unlock(&e->mu);
        if (c) retire(e, e->run[s], CLNPU_ENGINE_FINISH_CANCELLED, NULL);
    }
    admit(e);
    const size_t dec = decode_step(e);
    const size_t budget = e->opt.step_tokens > dec ? e->opt.step_tokens - dec : 0;
    const size_t pre = prefill_step(e, budget ? budget : 1);
    if (!dec && !pre && e->nrun > 1) {
        /* prompts part-way through hold every page and none can go on: the newest gives way */
        preempt(e, newest_running(e));
    } else if (!dec && !pre) {
        admit(e); /* a retirement in this iteration may have made room */
    }
    const clnpu_cache_usage u = be_usage(e);
    const size_t cached = e->prefix ? serve_prefix_pages(e->prefix) : 0;
    const size_t alone = e->prefix ? serve_prefix_evictable(e->prefix, e->m) : 0;
    pthread_mutex_lock(&e->mu);
    e->st.pages = u.pages, e->st.pages_free = u.free, e->st.pages_cached = cached, e->st.pages_cached_only = alone;
    const double t = now_s();
    if (t - e->rate_t0 >= 2.0) {
        e->st.decode_tokens_per_s = e->rate_tokens / (t - e->rate_t0);
        e->rate_t0 = t, e->rate_tokens = 0;
    }
    if (out_busy) *out_busy = e->nrun || e->nwait;
    pthread_mutex_unlock(&e->mu);
    return CLNPU_OK;
}

static void *loop(void *arg)
{
    clnpu_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop && !e->nwait && !e->nrun) pthread_cond_wait(&e->cv, &e->mu);
        const bool stop = e->stop;
        pthread_mutex_unlock(&e->mu);
        if (stop) return NULL;
        bool busy;
        clnpu_engine_step(e, &busy);
        if (busy && !e->nrun) { /* waiting for pages that nothing running will free: cannot happen, but never spin */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
}

clnpu_status clnpu_engine_start(clnpu_engine *e)
{
    if (e->started) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "the serving engine runs already");
    if (pthread_create(&e->th, NULL, loop, e)) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "cannot start its thread");
    e->started = true;
    return CLNPU_OK;
}

clnpu_status clnpu_engine_run(clnpu_engine *e)
{
    if (e->started) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "the serving engine runs already");
    loop(e);
    return CLNPU_OK;
}

void clnpu_engine_stop(clnpu_engine *e)
{
    pthread_mutex_lock(&e->mu);
    e->stop = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void clnpu_engine_shutdown(clnpu_engine *e)
{
    if (!e || e->shut) return;
    pthread_mutex_lock(&e->mu);
    e->stop = true; /* submit refuses from here on */
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (e->started) pthread_join(e->th, NULL);
    e->started = false, e->shut = true;
    for (size_t s = 0; e->run && s < e->slots; s++)
        if (e->run[s]) retire(e, e->run[s], CLNPU_ENGINE_FINISH_CANCELLED, NULL);
    for (;;) {
        pthread_mutex_lock(&e->mu);
        rq *r = e->wait_head;
        if (r) {
            e->wait_head = r->next;
            if (!e->wait_head) e->wait_tail = NULL;
            e->nwait--;
        }
        pthread_mutex_unlock(&e->mu);
        if (!r) break;
        r->state = RQ_WAITING;
        retire(e, r, CLNPU_ENGINE_FINISH_CANCELLED, NULL);
    }
}

void clnpu_engine_destroy(clnpu_engine *e)
{
    if (!e) return;
    clnpu_engine_shutdown(e);
    serve_prefix_destroy(e->prefix, e->m);
    if (e->pl) serve_mpi_announce(e->pl, SERVE_CMD_STOP, 0, NULL, NULL, 0, false); /* the other ranks may go */
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e->run), free(e->logits), free(e->cand), free(e->ids), free(e->out_ids), free(e->seqs), free(e->rows);
    free(e->pages);
    free(e);
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void quantiles(const double *ring, size_t n, double *p50, double *p99)
{
    double v[LAT_RING];
    const size_t k = n < LAT_RING ? n : LAT_RING;
    memcpy(v, ring, k * sizeof *v);
    qsort(v, k, sizeof *v, cmp_double);
    *p50 = k ? v[k / 2] : 0;
    *p99 = k ? v[(k * 99) / 100 < k ? (k * 99) / 100 : k - 1] : 0;
}

void clnpu_engine_get_stats(clnpu_engine *e, clnpu_engine_stats *out)
{
    pthread_mutex_lock(&e->mu);
    *out = e->st;
    out->waiting = e->nwait, out->running = e->nrun;
    quantiles(e->ttft, e->nttft, &out->ttft_p50_s, &out->ttft_p99_s);
    quantiles(e->itl, e->nitl, &out->itl_p50_s, &out->itl_p99_s);
    pthread_mutex_unlock(&e->mu);
}

size_t clnpu_engine_context(const clnpu_engine *e)
{
    return e->ctx;
}
