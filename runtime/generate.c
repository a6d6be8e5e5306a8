/* The generation loop (include/clnpu/generate.h): per-sequence state, a batched draw per step
 * (clnpu_model_decode_sample on one model: only ids cross to the host; a pipeline returns logits,
 * drawn with clnpu_sample), incremental detokenisation and stop conditions. */
#include <stdlib.h>
#include <string.h>

#include "clnpu/generate.h"
#include "../common/error.h"

typedef struct gseq {
    bool active, from_logits, has_unfed, dirty;
    int unfed;           /* the last drawn token, not yet through the model */
    size_t context;      /* tokens in the cache */
    float *logits;       /* [vocab]: the next token's, when from_logits */
    clnpu_generate_config cfg;
    char **stop;         /* copies of cfg.stop */
    int *eos;            /* copy of cfg.eos_ids */
    int *out;            /* ids drawn this turn */
    size_t nout, capout;
    char *text;          /* streamed text */
    size_t ntext, captext;
    char *held;          /* text held back: it may begin a stop string */
    size_t nheld, capheld;
    clnpu_detokenizer *dt;
    clnpu_finish_reason finish;
} gseq;

struct clnpu_generator {
    clnpu_generator_options o;
    gseq *seq;
    size_t step;    /* draws so far: successive draws of one seed differ */
    size_t decoded; /* tokens through decode steps */
    clnpu_buffer *lbuf, *obuf; /* logits rows to draw from, drawn ids */
    float *rows;
    size_t *idx;
    int *ids, *drawn;
};

const char *clnpu_finish_reason_name(clnpu_finish_reason r)
{
    static const char *n[] = {"none", "eos", "stop", "length", "context", "caller"};
    return (unsigned)r < 6 ? n[r] : "?";
}

clnpu_generate_config clnpu_generate_config_default(void)
{
    return (clnpu_generate_config){.sampling = {.temperature = 0, .top_k = 0, .top_p = 1, .seed = 0}};
}

static clnpu_status oom(void) { return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory"); }

static bool grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 64;
    while (c < need) c *= 2;
    void *n = realloc(*p, c * elem);
    if (!n) return false;
    *p = n, *cap = c;
    return true;
}

static void free_cfg(gseq *s)
{
    for (size_t i = 0; s->stop && i < s->cfg.n_stop; i++) free(s->stop[i]);
    free(s->stop), free(s->eos);
    s->stop = NULL, s->eos = NULL;
}

clnpu_status clnpu_generator_create(const clnpu_generator_options *o, clnpu_generator **out)
{
    if (!o || !out) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_generator_create: NULL argument");
    *out = NULL;
    if (!o->model == !o->pipeline) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: give exactly one of a model and a pipeline");
    if (!o->device || !o->vocab_size || !o->max_sequences || !o->max_context)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: device, vocab_size, max_sequences and max_context are required");
    clnpu_generator *g = calloc(1, sizeof *g);
    if (!g) return oom();
    g->o = *o;
    const size_t S = o->max_sequences, V = o->vocab_size;
    g->seq = calloc(S, sizeof *g->seq);
    g->rows = malloc(S * V * sizeof *g->rows);
    g->idx = malloc(S * sizeof *g->idx);
    g->ids = malloc(S * sizeof *g->ids);
    g->drawn = calloc(S, sizeof *g->drawn); /* valid ids even before a draw (a dry pass reads none) */
    clnpu_status st = !g->seq || !g->rows || !g->idx || !g->ids || !g->drawn ? oom() : CLNPU_OK;
    if (!st) st = clnpu_buffer_create(o->device, S * V * sizeof(float), &g->lbuf);
    if (!st) st = clnpu_buffer_create(o->device, S * sizeof(int), &g->obuf);
    for (size_t q = 0; !st && q < S && o->tokenizer; q++) st = clnpu_detokenizer_create(o->tokenizer, &g->seq[q].dt);
    if (st) {
        clnpu_generator_destroy(g);
        return st;
    }
    *out = g;
    return CLNPU_OK;
}

void clnpu_generator_destroy(clnpu_generator *g)
{
    if (!g) return;
    for (size_t q = 0; g->seq && q < g->o.max_sequences; q++) {
        gseq *s = &g->seq[q];
        free_cfg(s);
        free(s->logits), free(s->out), free(s->text), free(s->held);
        clnpu_detokenizer_free(s->dt);
    }
    clnpu_buffer_destroy(g->lbuf), clnpu_buffer_destroy(g->obuf);
    free(g->seq), free(g->rows), free(g->idx), free(g->ids), free(g->drawn);
    free(g);
}

static clnpu_status check_cfg(const clnpu_generator *g, const clnpu_generate_config *cfg)
{
    if (!cfg) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: no config");
    if (cfg->n_stop && !g->o.tokenizer) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: stop strings need a tokenizer");
    if ((cfg->n_stop && !cfg->stop) || (cfg->n_eos && !cfg->eos_ids)) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: NULL stop or eos list");
    for (size_t i = 0; i < cfg->n_stop; i++)
        if (!cfg->stop[i] || !*cfg->stop[i]) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: an empty stop string");
    return CLNPU_OK;
}

static clnpu_status begin_turn(clnpu_generator *g, size_t seq, const clnpu_generate_config *cfg)
{
    gseq *s = &g->seq[seq];
    free_cfg(s);
    s->cfg = *cfg;
    if (cfg->n_stop) {
        if (!(s->stop = calloc(cfg->n_stop, sizeof *s->stop))) return oom();
        for (size_t i = 0; i < cfg->n_stop; i++)
            if (!(s->stop[i] = strdup(cfg->stop[i]))) return oom();
    }
    if (cfg->n_eos) {
        if (!(s->eos = malloc(cfg->n_eos * sizeof *s->eos))) return oom();
        memcpy(s->eos, cfg->eos_ids, cfg->n_eos * sizeof *s->eos);
    }
    s->cfg.stop = (const char *const *)s->stop, s->cfg.eos_ids = s->eos;
    s->nout = s->ntext = s->nheld = 0;
    if (s->text) s->text[0] = '\0';
    if (s->dt) clnpu_detokenizer_reset(s->dt);
    s->finish = CLNPU_FINISH_NONE;
    s->active = true;
    return CLNPU_OK;
}

static clnpu_status check_seq(const clnpu_generator *g, size_t seq)
{
    if (!g || seq >= g->o.max_sequences)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: sequence %zu is not below max_sequences %zu", seq,
                          g ? g->o.max_sequences : 0);
    if (g->seq[seq].active) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: sequence %zu is still generating", seq);
    if (g->seq[seq].dirty)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "generator: sequence %zu of a pipeline was reset; a pipeline cannot free its cache", seq);
    return CLNPU_OK;
}

clnpu_status clnpu_generator_start_from_logits(clnpu_generator *g, size_t seq, size_t context, const float *last_logits,
                                               const clnpu_generate_config *cfg)
{
    clnpu_status st = check_seq(g, seq);
    if (!st) st = check_cfg(g, cfg);
    if (st) return st;
    if (!last_logits) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: no logits");
    gseq *s = &g->seq[seq];
    if (!s->logits && !(s->logits = malloc(g->o.vocab_size * sizeof *s->logits))) return oom();
    if ((st = begin_turn(g, seq, cfg))) return st;
    memcpy(s->logits, last_logits, g->o.vocab_size * sizeof *s->logits);
    s->from_logits = true, s->has_unfed = false;
    s->context = context;
    return CLNPU_OK;
}

clnpu_status clnpu_generator_start(clnpu_generator *g, size_t seq, const int *ids, size_t n, const clnpu_generate_config *cfg,
                                   float *logits)
{
    clnpu_status st = check_seq(g, seq);
    if (!st) st = check_cfg(g, cfg);
    if (st) return st;
    if (n && !ids) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: no ids");
    gseq *s = &g->seq[seq];
    const size_t V = g->o.vocab_size, k = n + s->has_unfed;
    if (!k) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: sequence %zu has nothing to prefill", seq);
    if (s->context + k > g->o.max_context)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: sequence %zu: %zu cached + %zu new tokens leave no room in the context of %zu",
                          seq, s->context, k, g->o.max_context);
    int *all = malloc(k * sizeof *all);
    if (!all) return oom();
    if (s->has_unfed) all[0] = s->unfed;
    if (n) memcpy(all + s->has_unfed, ids, n * sizeof *ids);
    for (size_t i = 0; i < k; i++)
        if (all[i] < 0 || (size_t)all[i] >= V) {
            const int bad = all[i];
            free(all);
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "generator: token id %d is outside the vocabulary (0..%zu)", bad, V - 1);
        }
    if (!s->logits && !(s->logits = malloc(V * sizeof *s->logits))) return free(all), oom();
    /* only the last position's logits are needed unless the caller wants them all: one model runs
     * the LM head for that position alone; a long prompt on a pipeline runs without logits but
     * for its last token */
    float *full = logits;
    if (!full && g->o.pipeline && k <= 64) full = malloc(k * V * sizeof *full);
    if (full) {
        st = g->o.model ? clnpu_model_prefill(g->o.model, seq, all, k, full) : clnpu_pipeline_prefill(g->o.pipeline, seq, all, k, full);
        if (!st) memcpy(s->logits, full + (k - 1) * V, V * sizeof *s->logits);
    } else if (g->o.model) {
        st = clnpu_model_prefill_last(g->o.model, seq, all, k, s->logits);
    } else {
        if (k > 1) st = clnpu_pipeline_prefill(g->o.pipeline, seq, all, k - 1, NULL);
        if (!st) st = clnpu_pipeline_prefill(g->o.pipeline, seq, all + k - 1, 1, s->logits);
    }
    if (full != logits) free(full);
    free(all);
    if (st) return st;
    s->context += k;
    s->has_unfed = false;
    if ((st = begin_turn(g, seq, cfg))) return st;
    s->from_logits = true;
    return CLNPU_OK;
}

static bool append(char **p, size_t *n, size_t *cap, const char *s, size_t len)
{
    if (!grow((void **)p, cap, *n + len + 1, 1)) return false;
    memcpy(*p + *n, s, len);
    *n += len;
    (*p)[*n] = '\0';
    return true;
}

/* Text of one drawn token through the stop strings: what may be streamed now goes to *emit. */
static clnpu_status route_text(gseq *s, const char *piece, size_t len, size_t *emit_len, bool final)
{
    if (!append(&s->held, &s->nheld, &s->capheld, piece, len)) return oom();
    size_t safe = s->nheld;
    for (size_t i = 0; i < s->cfg.n_stop; i++) {
        const char *hit = strstr(s->held, s->stop[i]);
        if (hit && (size_t)(hit - s->held) <= safe) {
            safe = (size_t)(hit - s->held);
            s->finish = CLNPU_FINISH_STOP;
        }
    }
    if (s->finish != CLNPU_FINISH_STOP && !final) {
        /* hold back the longest tail that begins some stop string */
        for (size_t i = 0; i < s->cfg.n_stop; i++) {
            size_t sl = strlen(s->stop[i]);
            for (size_t k = sl - 1; k > 0; k--)
                if (k <= s->nheld && !memcmp(s->held + s->nheld - k, s->stop[i], k)) {
                    if (s->nheld - k < safe) safe = s->nheld - k;
                    break;
                }
        }
    }
    *emit_len = safe;
    return CLNPU_OK;
}

/* After a token was drawn for s: record it, stream its text, decide whether the turn ends. */
static clnpu_status take_token(clnpu_generator *g, size_t q, int id, clnpu_token_callback cb, void *user)
{
    gseq *s = &g->seq[q];
    if (!grow((void **)&s->out, &s->capout, s->nout + 1, sizeof *s->out)) return oom();
    s->out[s->nout++] = id;
    bool eos = false;
    for (size_t i = 0; i < s->cfg.n_eos; i++) eos |= s->eos[i] == id;
    const char *piece = "";
    size_t plen = 0;
    clnpu_status st;
    if (s->dt && !eos && (st = clnpu_detokenizer_push(s->dt, id, &piece, &plen))) return st;
    if (eos) s->finish = CLNPU_FINISH_EOS;
    else if (s->cfg.max_tokens && s->nout >= s->cfg.max_tokens) s->finish = CLNPU_FINISH_LENGTH;
    else if (s->context >= g->o.max_context) s->finish = CLNPU_FINISH_CONTEXT; /* no room to feed it */
    const bool ending = s->finish != CLNPU_FINISH_NONE;
    /* the detokenizer's withheld bytes come out when the turn ends */
    char *tail = NULL;
    if (s->dt && ending) {
        const char *f;
        size_t fl;
        if ((st = clnpu_detokenizer_flush(s->dt, &f, &fl))) return st;
        if (!(tail = malloc(plen + fl + 1))) return oom();
        memcpy(tail, piece, plen), memcpy(tail + plen, f, fl);
        piece = tail, plen += fl;
    }
    size_t emit = 0;
    if (s->dt && (st = route_text(s, piece, plen, &emit, ending))) return free(tail), st;
    free(tail);
    const bool stopped = s->finish == CLNPU_FINISH_STOP;
    if (!append(&s->text, &s->ntext, &s->captext, s->held ? s->held : "", emit)) return oom();
    bool keep = true;
    if (cb) keep = cb(user, q, id, s->held ? s->held : "", emit);
    if (s->held) {
        /* a stop string and what follows it are dropped */
        size_t rest = stopped ? 0 : s->nheld - emit;
        memmove(s->held, s->held + emit, rest);
        s->nheld = rest;
        s->held[rest] = '\0';
    }
    if (!keep && s->finish == CLNPU_FINISH_NONE) s->finish = CLNPU_FINISH_CALLER;
    s->unfed = id, s->has_unfed = true;
    if (s->finish != CLNPU_FINISH_NONE) s->active = false;
    return CLNPU_OK;
}

static bool same_sampling(const clnpu_sampling *a, const clnpu_sampling *b)
{
    return a->temperature == b->temperature && a->top_k == b->top_k && a->top_p == b->top_p && a->seed == b->seed;
}

clnpu_status clnpu_generator_step(clnpu_generator *g, clnpu_token_callback cb, void *user, size_t *out_active)
{
    if (!g) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_generator_step: NULL generator");
    const size_t S = g->o.max_sequences, V = g->o.vocab_size;
    clnpu_status st = CLNPU_OK;
    bool any = false;
    /* Sequences fresh from a prefill draw from their logits; the rest decode their last token.
     * Each group is split by sampling parameters (one draw call per distinct set). */
    for (int fresh = 1; fresh >= 0 && !st; fresh--) {
        bool done[S];
        memset(done, 0, sizeof done);
        for (size_t lead = 0; lead < S && !st; lead++) {
            gseq *ls = &g->seq[lead];
            if (done[lead] || !ls->active || ls->from_logits != (bool)fresh) continue;
            size_t n = 0;
            for (size_t q = lead; q < S; q++) {
                gseq *s = &g->seq[q];
                if (!done[q] && s->active && s->from_logits == (bool)fresh && same_sampling(&s->cfg.sampling, &ls->cfg.sampling)) {
                    done[q] = true;
                    g->idx[n] = q;
                    g->ids[n] = s->unfed;
                    if (fresh) memcpy(g->rows + n * V, s->logits, V * sizeof *g->rows);
                    n++;
                }
            }
            const clnpu_sampling *sp = &ls->cfg.sampling;
            if (!fresh && g->o.model) {
                st = clnpu_model_decode_sample(g->o.model, g->idx, g->ids, n, sp, g->step, g->drawn, NULL);
            } else {
                if (!fresh) st = clnpu_pipeline_decode(g->o.pipeline, g->idx, g->ids, n, g->rows);
                if (!st) st = clnpu_buffer_write(g->lbuf, 0, g->rows, n * V * sizeof(float));
                if (!st) st = clnpu_sample(g->o.device, g->obuf, (clnpu_view){g->lbuf, 0, V}, n, V, sp, g->step);
                if (!st) st = clnpu_buffer_read(g->obuf, 0, g->drawn, n * sizeof(int));
            }
            if (st) break;
            any = true;
            if (!fresh) g->decoded += n;
            for (size_t i = 0; i < n && !st; i++) {
                gseq *s = &g->seq[g->idx[i]];
                if (!fresh) s->context++, s->has_unfed = false;
                s->from_logits = false;
                if (g->drawn[i] < 0 || (size_t)g->drawn[i] >= V)
                    st = clnpu_fail(CLNPU_ERR_OPENCL, "generator: the device drew token %d, outside the vocabulary", g->drawn[i]);
                else st = take_token(g, g->idx[i], g->drawn[i], cb, user);
            }
        }
    }
    if (any) g->step++;
    size_t active = 0;
    for (size_t q = 0; q < S; q++) active += g->seq[q].active;
    if (out_active) *out_active = active;
    return st;
}

clnpu_status clnpu_generator_run(clnpu_generator *g, clnpu_token_callback cb, void *user)
{
    size_t active = 1;
    clnpu_status st = CLNPU_OK;
    while (!st && active) st = clnpu_generator_step(g, cb, user, &active);
    return st;
}

clnpu_finish_reason clnpu_generator_finish_reason(const clnpu_generator *g, size_t seq)
{
    return g && seq < g->o.max_sequences ? g->seq[seq].finish : CLNPU_FINISH_NONE;
}

const int *clnpu_generator_tokens(const clnpu_generator *g, size_t seq, size_t *out_n)
{
    if (!g || seq >= g->o.max_sequences) return *out_n = 0, NULL;
    *out_n = g->seq[seq].nout;
    return g->seq[seq].out;
}

const char *clnpu_generator_text(const clnpu_generator *g, size_t seq, size_t *out_len)
{
    if (out_len) *out_len = g && seq < g->o.max_sequences ? g->seq[seq].ntext : 0;
    return g && seq < g->o.max_sequences && g->seq[seq].text ? g->seq[seq].text : "";
}

size_t clnpu_generator_context(const clnpu_generator *g, size_t seq)
{
    return g && seq < g->o.max_sequences ? g->seq[seq].context : 0;
}

size_t clnpu_generator_decoded(const clnpu_generator *g) { return g ? g->decoded : 0; }

void clnpu_generator_reset(clnpu_generator *g, size_t seq)
{
    if (!g || seq >= g->o.max_sequences) return;
    gseq *s = &g->seq[seq];
    if (g->o.model) clnpu_model_reset(g->o.model, seq);
    else if (s->context) s->dirty = true;
    s->active = s->from_logits = s->has_unfed = false;
    s->context = s->nout = s->ntext = s->nheld = 0;
    s->finish = CLNPU_FINISH_NONE;
    if (s->dt) clnpu_detokenizer_reset(s->dt);
}
