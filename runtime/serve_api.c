/* The OpenAI-compatible JSON of `clnpu serve` (cJSON): requests of /v1/completions and
 * /v1/chat/completions into engine requests, tokens into text (UTF-8 safe across token
 * boundaries, stop strings held back until they can no longer match), responses and SSE chunks,
 * /v1/models and the Prometheus text of /metrics. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve_api.h"

/* ---- small helpers ---- */

static unsigned bad(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static unsigned bad(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
    return 400;
}

/* An optional integer field in [lo, hi]: 1 absent (or null), 0 read, -1 malformed. */
static int get_int(const cJSON *o, const char *k, long long lo, long long hi, long long *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return 1;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return -1;
    *out = (long long)v->valuedouble;
    return 0;
}

static int get_num(const cJSON *o, const char *k, double lo, double hi, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return 1;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < lo || v->valuedouble > hi) return -1;
    *out = v->valuedouble;
    return 0;
}

static int get_bool(const cJSON *o, const char *k, bool *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v || cJSON_IsNull(v)) return 1;
    if (!cJSON_IsBool(v)) return -1;
    *out = cJSON_IsTrue(v);
    return 0;
}

static bool append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n + 1) nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb) return false;
        *buf = nb, *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
    return true;
}

/* Bytes at the end of s[0..n) that start a UTF-8 character not yet complete. */
static size_t utf8_incomplete_tail(const char *s, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        const unsigned char b = (unsigned char)s[n - back];
        if ((b & 0xc0) == 0x80) continue; /* a continuation byte: look further back */
        const size_t need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1;
        return need > back ? back : 0;
    }
    return 0;
}

/* Valid UTF-8 for JSON: each byte that does not start a well-formed character (as Python's
 * errors="replace" and HF's decode do) becomes U+FFFD. Byte-level BPE can produce any bytes. */
static char *utf8_valid(const char *s, size_t n)
{
    char *o = malloc(3 * n + 1);
    if (!o) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        const unsigned char b = (unsigned char)s[i];
        size_t len = b < 0x80 ? 1 : (b & 0xe0) == 0xc0 ? 2 : (b & 0xf0) == 0xe0 ? 3 : (b & 0xf8) == 0xf0 ? 4 : 0;
        unsigned cp = len == 1 ? b : len == 2 ? b & 0x1f : len == 3 ? b & 0x0f : b & 0x07;
        bool ok = len && i + len <= n;
        for (size_t j = 1; ok && j < len; j++) {
            ok = ((unsigned char)s[i + j] & 0xc0) == 0x80;
            cp = (cp << 6) | ((unsigned char)s[i + j] & 0x3f);
        }
        /* overlong forms, surrogates and past U+10FFFF are not characters either */
        ok = ok && !(len == 2 && cp < 0x80) && !(len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) &&
             !(len == 4 && (cp < 0x10000 || cp > 0x10ffff)) && (len != 1 || b != 0);
        if (ok) {
            memcpy(o + k, s + i, len);
            k += len, i += len;
        } else {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3, i++;
        }
    }
    o[k] = '\0';
    return o;
}

/* ---- requests ---- */

static unsigned encode_text(serve_conn *c, const char *s, char *err, size_t cap)
{
    if (!c->text || !c->text->encode)
        return bad(err, cap, "this server has no tokenizer (no tokenizer.json in the model directory): send the "
                             "prompt as an array of token ids");
    int *ids = NULL;
    size_t n = 0;
    if (c->text->encode(c->text->ctx, s, strlen(s), &ids, &n)) {
        free(ids);
        return bad(err, cap, "the prompt cannot be tokenized: %s", clnpu_error_message());
    }
    c->prompt = ids, c->nprompt = n;
    return 0;
}

static unsigned read_prompt(serve_conn *c, const cJSON *p, char *err, size_t cap)
{
    if (cJSON_IsString(p)) return encode_text(c, p->valuestring, err, cap);
    if (!cJSON_IsArray(p)) return bad(err, cap, "'prompt' must be a string or an array of token ids");
    const int n = cJSON_GetArraySize(p);
    if (n == 1 && cJSON_IsString(cJSON_GetArrayItem(p, 0)))
        return encode_text(c, cJSON_GetArrayItem(p, 0)->valuestring, err, cap);
    c->prompt = malloc((n ? (size_t)n : 1) * sizeof *c->prompt);
    if (!c->prompt) return bad(err, cap, "out of host memory");
    const cJSON *v;
    size_t i = 0;
    cJSON_ArrayForEach(v, p)
    {
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
            v->valuedouble > 2147483647.0)
            return bad(err, cap, "'prompt' item %zu is not a token id (one prompt per request: a string or an "
                                 "array of non-negative integers)", i);
        c->prompt[i++] = (int)v->valuedouble;
    }
    c->nprompt = i;
    return 0;
}

static unsigned read_messages(serve_conn *c, const cJSON *msgs, const cJSON *kwargs, char *err, size_t cap)
{
    int think = -1; /* vLLM's and SGLang's way to pass a template variable: chat_template_kwargs */
    if (kwargs && !cJSON_IsNull(kwargs)) {
        bool t = false;
        if (!cJSON_IsObject(kwargs) || get_bool(kwargs, "enable_thinking", &t) < 0)
            return bad(err, cap, "'chat_template_kwargs' must be an object; its 'enable_thinking' true or false");
        if (cJSON_GetObjectItemCaseSensitive(kwargs, "enable_thinking")) think = t;
    }
    if (!cJSON_IsArray(msgs) || !cJSON_GetArraySize(msgs)) return bad(err, cap, "'messages' must be a non-empty array");
    const cJSON *m;
    size_t i = 0;
    cJSON_ArrayForEach(m, msgs)
    {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsObject(m) || !cJSON_IsString(role))
            return bad(err, cap, "'messages' item %zu needs a string 'role'", i);
        if (content && !cJSON_IsString(content) && !cJSON_IsNull(content) && !cJSON_IsArray(content))
            return bad(err, cap, "'messages' item %zu: 'content' must be a string", i);
        i++;
    }
    if (!c->text || !c->text->chat || !c->text->encode)
        return bad(err, cap, "this server has no chat template (tokenizer_config.json / chat_template.jinja)");
    char *json = cJSON_PrintUnformatted(msgs), *prompt = NULL;
    if (!json) return bad(err, cap, "out of host memory");
    const clnpu_status st = c->text->chat(c->text->ctx, json, true, think, &prompt);
    free(json);
    if (st) {
        free(prompt);
        return bad(err, cap, "the chat template failed: %s", clnpu_error_message());
    }
    const unsigned r = encode_text(c, prompt, err, cap);
    free(prompt);
    return r;
}

static unsigned read_stops(serve_conn *c, const cJSON *st, char *err, size_t cap)
{
    if (!st || cJSON_IsNull(st)) return 0;
    const cJSON *one[1] = {st};
    const int n = cJSON_IsString(st) ? 1 : cJSON_IsArray(st) ? cJSON_GetArraySize(st) : -1;
    if (n < 0 || n > SERVE_MAX_STOPS) return bad(err, cap, "'stop' must be a string or up to %d strings", SERVE_MAX_STOPS);
    for (int i = 0; i < n; i++) {
        const cJSON *v = cJSON_IsString(st) ? one[0] : cJSON_GetArrayItem(st, i);
        if (!cJSON_IsString(v) || !*v->valuestring) return bad(err, cap, "'stop' item %d must be a non-empty string", i);
        if (!c->text || !c->text->decode) return bad(err, cap, "'stop' strings need a tokenizer: this server has none");
        if (!(c->stops[c->nstops++] = strdup(v->valuestring))) return bad(err, cap, "out of host memory");
    }
    return 0;
}

unsigned serve_conn_prepare(serve_conn *c, const clnpu_server_options *o, char *err, size_t cap)
{
    const size_t ctx = clnpu_engine_context(c->engine);
    const size_t max_prompt = o->max_prompt_tokens ? o->max_prompt_tokens : ctx;
    const size_t max_new = o->max_tokens ? o->max_tokens : ctx;
    if (!c->body || !c->body_len) return bad(err, cap, "the request has no body (JSON expected)");
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(c->body, c->body_len, &end, false);
    if (!j) return bad(err, cap, "the body is not JSON (near byte %td)", end ? end - c->body : (ptrdiff_t)0);
    while (end && (size_t)(end - c->body) < c->body_len && (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
        end++;
    unsigned r = 0;
    long long iv;
    double dv;
    int k;
    if (end && (size_t)(end - c->body) < c->body_len) r = bad(err, cap, "text after the JSON object");
    else if (!cJSON_IsObject(j)) r = bad(err, cap, "the body must be a JSON object");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!r && model && !cJSON_IsString(model) && !cJSON_IsNull(model)) r = bad(err, cap, "'model' must be a string");
    if (!r && c->kind == SERVE_COMPLETIONS) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt");
        r = p ? read_prompt(c, p, err, cap) : bad(err, cap, "'prompt' is required");
    } else if (!r) {
        const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "messages");
        r = m ? read_messages(c, m, cJSON_GetObjectItemCaseSensitive(j, "chat_template_kwargs"), err, cap)
              : bad(err, cap, "'messages' is required");
    }
    if (!r && !c->nprompt) r = bad(err, cap, "the prompt is empty");
    if (!r && c->nprompt > max_prompt)
        r = bad(err, cap, "the prompt has %zu tokens: at most %zu", c->nprompt, max_prompt);
    /* max_tokens: OpenAI's default for completions is 16; a chat runs to the end of the context */
    bool given = false;
    if (!r && (k = get_int(j, "max_tokens", 1, 1LL << 40, &iv)) < 0) r = bad(err, cap, "'max_tokens' must be an integer >= 1");
    else if (!r && !k) c->max_tokens = (size_t)iv, given = true;
    if (!r && (k = get_int(j, "max_completion_tokens", 1, 1LL << 40, &iv)) < 0)
        r = bad(err, cap, "'max_completion_tokens' must be an integer >= 1");
    else if (!r && !k) c->max_tokens = (size_t)iv, given = true;
    if (!r && given && c->max_tokens > max_new) r = bad(err, cap, "max_tokens %zu: at most %zu", c->max_tokens, max_new);
    if (!r && !given) {
        const size_t room = ctx > c->nprompt ? ctx - c->nprompt : 1;
        c->max_tokens = c->kind == SERVE_COMPLETIONS ? 16 : room;
        if (c->max_tokens > room) c->max_tokens = room;
        if (c->max_tokens > max_new) c->max_tokens = max_new;
    }
    c->samp = o->defaults;
    if (!r && (k = get_num(j, "temperature", 0, 100, &dv)) < 0) r = bad(err, cap, "'temperature' must be a number in [0, 100]");
    else if (!r && !k) c->samp.temperature = (float)dv;
    if (!r && (k = get_num(j, "top_p", 0, 1, &dv)) < 0) r = bad(err, cap, "'top_p' must be a number in (0, 1]");
    else if (!r && !k && dv <= 0) r = bad(err, cap, "'top_p' must be a number in (0, 1]");
    else if (!r && !k) c->samp.top_p = (float)dv;
    if (!r && (k = get_int(j, "top_k", -1, 1 << 30, &iv)) < 0) r = bad(err, cap, "'top_k' must be an integer (-1 or 0: off)");
    else if (!r && !k) c->samp.top_k = iv > 0 ? (unsigned)iv : 0;
    if (!r && (k = get_int(j, "seed", 0, 1LL << 53, &iv)) < 0) r = bad(err, cap, "'seed' must be a non-negative integer");
    else if (!r && !k) c->samp.seed = (uint64_t)iv;
    if (!r && (k = get_int(j, "n", 1, 1, &iv)) < 0) r = bad(err, cap, "'n': only 1 completion per request");
    if (!r && get_bool(j, "stream", &c->stream) < 0) r = bad(err, cap, "'stream' must be true or false");
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
    if (!r && so && !cJSON_IsNull(so) && (!cJSON_IsObject(so) || get_bool(so, "include_usage", &c->include_usage) < 0))
        r = bad(err, cap, "'stream_options' must be an object with a boolean 'include_usage'");
    if (!r && c->kind == SERVE_COMPLETIONS) {
        if ((k = get_int(j, "logprobs", 0, CLNPU_ENGINE_MAX_LOGPROBS, &iv)) < 0)
            r = bad(err, cap, "'logprobs' must be an integer in [0, %d]", CLNPU_ENGINE_MAX_LOGPROBS);
        else if (!k) c->logprobs = (size_t)iv + 1, c->chat_logprobs = false; /* the token's own + iv alternatives */
    } else if (!r) {
        bool lp = false;
        if (get_bool(j, "logprobs", &lp) < 0) r = bad(err, cap, "'logprobs' must be true or false");
        if (!r && (k = get_int(j, "top_logprobs", 0, CLNPU_ENGINE_MAX_LOGPROBS, &iv)) < 0)
            r = bad(err, cap, "'top_logprobs' must be an integer in [0, %d]", CLNPU_ENGINE_MAX_LOGPROBS);
        if (!r && lp) c->logprobs = (!k ? (size_t)iv : 0) + 1, c->chat_logprobs = true;
    }
    if (!r) r = read_stops(c, cJSON_GetObjectItemCaseSensitive(j, "stop"), err, cap);
    cJSON_Delete(j);
    c->created = time(NULL);
    return r;
}

/* ---- tokens into text ---- */

void serve_conn_push(serve_conn *c, const clnpu_engine_event *ev)
{
    if (c->ntok == c->captok) {
        const size_t nc = c->captok ? 2 * c->captok : 16;
        serve_tok *nt = realloc(c->toks, nc * sizeof *nt);
        if (!nt) return; /* the token is lost to the text; the usage still counts it */
        c->toks = nt, c->captok = nc;
    }
    serve_tok *t = &c->toks[c->ntok++];
    t->id = ev->token, t->lp = ev->logprob, t->ntop = ev->top_count;
    memcpy(t->top_ids, ev->top_ids, sizeof t->top_ids);
    memcpy(t->top_lps, ev->top_logprobs, sizeof t->top_lps);
}

static bool is_eos(const serve_conn *c, int id)
{
    for (size_t i = 0; i < c->server_opt->eos_count; i++)
        if (c->server_opt->eos_ids[i] == id) return true;
    return false;
}

/* Tokens that count as text: an end-of-sequence id ends the text, it is not part of it. */
static size_t text_tokens(const serve_conn *c)
{
    size_t n = c->ntok;
    if (n && is_eos(c, c->toks[n - 1].id)) n--;
    return n;
}

/* Decode the text tokens again (byte-level BPE is not prefix-stable per token: a character may
 * span tokens) and cut at the first stop string. */
static void decode_text(serve_conn *c)
{
    const size_t n = text_tokens(c);
    if (n == c->shown_tok || !c->text || !c->text->decode || c->finish == CLNPU_ENGINE_FINISH_STOP) return;
    int *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return;
    for (size_t i = 0; i < n; i++) ids[i] = c->toks[i].id;
    char *t = NULL;
    size_t len = 0;
    if (!c->text->decode(c->text->ctx, ids, n, &t, &len)) {
        for (size_t s = 0; s < c->nstops; s++) {
            const char *hit = strstr(t, c->stops[s]);
            if (hit && (size_t)(hit - t) < len) len = (size_t)(hit - t), c->finish = CLNPU_ENGINE_FINISH_STOP;
        }
        if (c->finish == CLNPU_ENGINE_FINISH_STOP) c->want_cancel = true;
        if (len < c->text_sent) len = c->text_sent; /* never take back what was sent */
        free(c->text_all);
        c->text_all = t, c->text_len = len;
        c->shown_tok = n;
    } else {
        free(t);
    }
    free(ids);
}

/* Bytes of text_all that can go out now: not a character cut in two, not a possible stop. */
static size_t sendable(const serve_conn *c, bool final)
{
    size_t n = c->text_len;
    if (final) return n;
    n -= utf8_incomplete_tail(c->text_all, n);
    size_t hold = 0;
    for (size_t s = 0; s < c->nstops; s++) {
        const size_t L = strlen(c->stops[s]);
        for (size_t k = L - 1; k > hold && k > 0; k--)
            if (k <= n && !memcmp(c->text_all + n - k, c->stops[s], k)) {
                hold = k;
                break;
            }
    }
    return n - hold > c->text_sent ? n - hold : c->text_sent;
}

static cJSON *token_string(const serve_conn *c, int id)
{
    char *t = NULL, buf[24];
    size_t len = 0;
    if (c->text && c->text->decode && !c->text->decode(c->text->ctx, &id, 1, &t, &len)) {
        char *v = utf8_valid(t, len);
        cJSON *s = cJSON_CreateString(v ? v : "");
        free(t), free(v);
        return s;
    }
    free(t);
    snprintf(buf, sizeof buf, "%d", id);
    return cJSON_CreateString(buf);
}

static cJSON *logprobs_json(const serve_conn *c, size_t from, size_t to)
{
    if (!c->logprobs) return cJSON_CreateNull();
    cJSON *o = cJSON_CreateObject();
    if (c->chat_logprobs) {
        cJSON *content = cJSON_AddArrayToObject(o, "content");
        for (size_t i = from; i < to; i++) {
            const serve_tok *t = &c->toks[i];
            cJSON *e = cJSON_CreateObject();
            cJSON_AddItemToObject(e, "token", token_string(c, t->id));
            cJSON_AddNumberToObject(e, "logprob", t->lp);
            cJSON *tops = cJSON_AddArrayToObject(e, "top_logprobs");
            for (size_t k = 0; k + 1 < c->logprobs && k < t->ntop; k++) {
                cJSON *a = cJSON_CreateObject();
                cJSON_AddItemToObject(a, "token", token_string(c, t->top_ids[k]));
                cJSON_AddNumberToObject(a, "logprob", t->top_lps[k]);
                cJSON_AddItemToArray(tops, a);
            }
            cJSON_AddItemToArray(content, e);
        }
        return o;
    }
    cJSON *toks = cJSON_AddArrayToObject(o, "tokens"), *lps = cJSON_AddArrayToObject(o, "token_logprobs");
    cJSON *tops = cJSON_AddArrayToObject(o, "top_logprobs");
    for (size_t i = from; i < to; i++) {
        const serve_tok *t = &c->toks[i];
        cJSON_AddItemToArray(toks, token_string(c, t->id));
        cJSON_AddItemToArray(lps, cJSON_CreateNumber(t->lp));
        cJSON *m = cJSON_CreateObject();
        for (size_t k = 0; k + 1 < c->logprobs && k < t->ntop; k++) {
            cJSON *s = token_string(c, t->top_ids[k]);
            if (cJSON_IsString(s) && !cJSON_GetObjectItemCaseSensitive(m, s->valuestring))
                cJSON_AddNumberToObject(m, s->valuestring, t->top_lps[k]);
            cJSON_Delete(s);
        }
        cJSON_AddItemToArray(tops, m);
    }
    return o;
}

static const char *finish_name(clnpu_engine_finish f)
{
    switch (f) {
    case CLNPU_ENGINE_FINISH_LENGTH: return "length";
    case CLNPU_ENGINE_FINISH_STOP: return "stop";
    case CLNPU_ENGINE_FINISH_CANCELLED: return "cancelled";
    case CLNPU_ENGINE_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

static cJSON *envelope(const serve_conn *c, bool chunk)
{
    cJSON *o = cJSON_CreateObject();
    char id[48];
    snprintf(id, sizeof id, "%s-%llu", c->kind == SERVE_CHAT ? "chatcmpl" : "cmpl", (unsigned long long)c->id);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", c->kind == SERVE_CHAT ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                               : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)c->created);
    cJSON_AddStringToObject(o, "model", c->server_opt->model_name);
    return o;
}

static cJSON *usage_json(const serve_conn *c)
{
    cJSON *u = cJSON_CreateObject();
    cJSON_AddNumberToObject(u, "prompt_tokens", (double)c->nprompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)c->ntok);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(c->nprompt + c->ntok));
    cJSON *d = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(d, "cached_tokens", (double)c->usage_cached);
    return u;
}

/* One choice: text (or a chat delta / message), the ids, logprobs, finish_reason. */
static cJSON *choice(const serve_conn *c, const char *text, size_t tlen, size_t from, size_t to, const char *fin,
                     bool chunk)
{
    cJSON *ch = cJSON_CreateObject();
    cJSON_AddNumberToObject(ch, "index", 0);
    char *t = utf8_valid(text, tlen);
    if (c->kind == SERVE_CHAT) {
        cJSON *m = cJSON_AddObjectToObject(ch, chunk ? "delta" : "message");
        if (!chunk || !c->role_sent) cJSON_AddStringToObject(m, "role", "assistant");
        if (!chunk || tlen || !c->role_sent) cJSON_AddStringToObject(m, "content", t ? t : "");
    } else {
        cJSON_AddStringToObject(ch, "text", t ? t : "");
    }
    free(t);
    cJSON *ids = cJSON_AddArrayToObject(ch, "token_ids"); /* clnpu's extension: the ids behind the text */
    for (size_t i = from; i < to; i++) cJSON_AddItemToArray(ids, cJSON_CreateNumber(c->toks[i].id));
    cJSON_AddItemToObject(ch, "logprobs", logprobs_json(c, from, to));
    if (fin) cJSON_AddStringToObject(ch, "finish_reason", fin);
    else cJSON_AddNullToObject(ch, "finish_reason");
    return ch;
}

static void sse(serve_conn *c, cJSON *o)
{
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!s) return;
    append(&c->out, &c->out_len, &c->out_cap, "data: ", 6);
    append(&c->out, &c->out_len, &c->out_cap, s, strlen(s));
    append(&c->out, &c->out_len, &c->out_cap, "\n\n", 2);
    free(s);
}

/* Text to send with no complete character at its end: invalid trailing bytes become U+FFFD. */
static void sanitize_tail(serve_conn *c)
{
    const size_t cut = utf8_incomplete_tail(c->text_all, c->text_len);
    if (!cut) return;
    char *nt = realloc(c->text_all, c->text_len - cut + 4);
    if (!nt) return;
    memcpy(nt + c->text_len - cut, "\xef\xbf\xbd", 4);
    c->text_all = nt, c->text_len = c->text_len - cut + 3;
}

void serve_conn_render(serve_conn *c)
{
    decode_text(c);
    const bool finished = c->done || c->finish == CLNPU_ENGINE_FINISH_STOP;
    if (finished && c->text_all) sanitize_tail(c);
    if (!c->stream || c->stream_closed) return;
    const size_t upto = sendable(c, finished), ntext = c->text && c->text->decode ? c->shown_tok : text_tokens(c);
    const size_t tok_to = finished ? c->ntok : ntext;
    if (upto > c->text_sent || tok_to > c->sent_tok || (c->kind == SERVE_CHAT && !c->role_sent)) {
        cJSON *o = envelope(c, true);
        cJSON *chs = cJSON_AddArrayToObject(o, "choices");
        cJSON_AddItemToArray(chs, choice(c, c->text_all ? c->text_all + c->text_sent : "", upto - c->text_sent,
                                         c->sent_tok, tok_to, NULL, true));
        c->role_sent = true, c->text_sent = upto, c->sent_tok = tok_to;
        sse(c, o);
    }
    if (!finished) return;
    if (c->finish == CLNPU_ENGINE_FINISH_ERROR) {
        char *e = serve_error_json(500, c->error);
        if (e) {
            append(&c->out, &c->out_len, &c->out_cap, "data: ", 6);
            append(&c->out, &c->out_len, &c->out_cap, e, strlen(e));
            append(&c->out, &c->out_len, &c->out_cap, "\n\n", 2);
            free(e);
        }
    } else {
        cJSON *o = envelope(c, true);
        cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"),
                             choice(c, "", 0, c->ntok, c->ntok, finish_name(c->finish), true));
        sse(c, o);
        if (c->include_usage) {
            o = envelope(c, true);
            cJSON_AddArrayToObject(o, "choices");
            cJSON_AddItemToObject(o, "usage", usage_json(c));
            sse(c, o);
        }
    }
    append(&c->out, &c->out_len, &c->out_cap, "data: [DONE]\n\n", 14);
    c->stream_closed = true;
}

char *serve_conn_final_json(serve_conn *c)
{
    cJSON *o = envelope(c, false);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "choices"),
                         choice(c, c->text_all ? c->text_all : "", c->text_len, 0, c->ntok, finish_name(c->finish), false));
    cJSON_AddItemToObject(o, "usage", usage_json(c));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

void serve_conn_free(serve_conn *c)
{
    free(c->body), free(c->prompt), free(c->toks), free(c->text_all), free(c->out);
    for (size_t i = 0; i < c->nstops; i++) free(c->stops[i]);
    free(c);
}

/* ---- other endpoints ---- */

char *serve_error_json(unsigned code, const char *message)
{
    cJSON *o = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(o, "error");
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", code == 401   ? "authentication_error"
                                       : code == 429 ? "rate_limit_error"
                                       : code >= 500 ? "server_error"
                                                     : "invalid_request_error");
    cJSON_AddNumberToObject(e, "code", code);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *serve_models_json(const char *name)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "object", "list");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", name);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)time(NULL));
    cJSON_AddStringToObject(m, "owned_by", "clnpu");
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "data"), m);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *serve_metrics_text(const clnpu_engine_stats *st, uint64_t busy, uint64_t bad_rq, uint64_t auth)
{
    char *b = NULL;
    size_t len = 0, cap = 0;
    char line[256];
#define METRIC(name, type, help, fmt, ...)                                                                       \
    do {                                                                                                       \
        int n = snprintf(line, sizeof line, "# HELP clnpu_%s %s\n# TYPE clnpu_%s %s\nclnpu_%s" fmt "\n", name, \
                         help, name, type, name, __VA_ARGS__);                                                 \
        if (n > 0 && !append(&b, &len, &cap, line, (size_t)n)) goto oom;                                       \
    } while (0)
    METRIC("requests_waiting", "gauge", "Requests queued for admission.", " %zu", st->waiting);
    METRIC("requests_running", "gauge", "Requests holding a sequence slot.", " %zu", st->running);
    METRIC("requests_finished_total", "counter", "Requests that ended (length, stop, cancelled).", " %llu",
           (unsigned long long)st->requests_finished);
    METRIC("requests_failed_total", "counter", "Requests ended by a failed forward step.", " %llu",
           (unsigned long long)st->requests_failed);
    METRIC("requests_rejected_total", "counter", "Requests refused before the queue.", "{reason=\"queue_full\"} %llu",
           (unsigned long long)busy);
    int n = snprintf(line, sizeof line, "clnpu_requests_rejected_total{reason=\"bad_request\"} %llu\n"
                     "clnpu_requests_rejected_total{reason=\"unauthorized\"} %llu\n",
                     (unsigned long long)bad_rq, (unsigned long long)auth);
    if (n > 0 && !append(&b, &len, &cap, line, (size_t)n)) goto oom;
    METRIC("preemptions_total", "counter", "Requests pre-empted for cache pages (recomputed later).", " %llu",
           (unsigned long long)st->preemptions);
    METRIC("prompt_tokens_total", "counter", "Prompt tokens admitted.", " %llu", (unsigned long long)st->prompt_tokens);
    METRIC("prompt_tokens_cached_total", "counter", "Prompt tokens served from the prefix cache.", " %llu",
           (unsigned long long)st->cached_prompt_tokens);
    METRIC("generation_tokens_total", "counter", "Tokens generated.", " %llu", (unsigned long long)st->generated_tokens);
    METRIC("tokens_per_second", "gauge", "Tokens generated per second over the last seconds.", " %.3f",
           st->decode_tokens_per_s);
    METRIC("time_to_first_token_seconds", "summary", "Submit to first token (last 1024 requests).",
           "{quantile=\"0.5\"} %.6f", st->ttft_p50_s);
    n = snprintf(line, sizeof line,
                 "clnpu_time_to_first_token_seconds{quantile=\"0.99\"} %.6f\n"
                 "clnpu_time_to_first_token_seconds_sum %.6f\nclnpu_time_to_first_token_seconds_count %llu\n",
                 st->ttft_p99_s, st->ttft_sum_s, (unsigned long long)st->ttft_count);
    if (n > 0 && !append(&b, &len, &cap, line, (size_t)n)) goto oom;
    METRIC("inter_token_latency_seconds", "summary", "Time between a request's tokens (last 1024).",
           "{quantile=\"0.5\"} %.6f", st->itl_p50_s);
    n = snprintf(line, sizeof line, "clnpu_inter_token_latency_seconds{quantile=\"0.99\"} %.6f\n", st->itl_p99_s);
    if (n > 0 && !append(&b, &len, &cap, line, (size_t)n)) goto oom;
    const size_t used = st->pages - st->pages_free - st->pages_cached_only;
    METRIC("kv_pages_total", "gauge", "Latent cache pages.", " %zu", st->pages);
    METRIC("kv_pages_used", "gauge", "Latent cache pages held by requests.", " %zu", used);
    METRIC("kv_pages_cached", "gauge", "Pages kept by the prefix cache alone (freed on demand).", " %zu",
           st->pages_cached_only);
    METRIC("kv_pages_free", "gauge", "Latent cache pages free.", " %zu", st->pages_free);
#undef METRIC
    return b;
oom:
    free(b);
    return NULL;
}
