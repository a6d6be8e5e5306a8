/* Ids back to text: the decoder chain of a tokenizer.json (HF tokenizers' decoders/, each a
 * step over the list of token strings), and incremental detokenisation for streaming. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "tokenizer_internal.h"

/* ---- the byte-level alphabet (GPT-2's bytes_to_unicode) ---- */

static char byte_chars[256][3];
static int16_t char_bytes[324]; /* code point -> byte; the alphabet stays below U+0144 */
static pthread_once_t byte_once = PTHREAD_ONCE_INIT;

static void byte_init(void)
{
    int next = 256;
    for (int i = 0; i < 324; i++) char_bytes[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        int cp = printable ? b : next++;
        if (cp < 0x80) byte_chars[b][0] = (char)cp;
        else byte_chars[b][0] = (char)(0xC0 | cp >> 6), byte_chars[b][1] = (char)(0x80 | (cp & 0x3F));
        char_bytes[cp] = (int16_t)b;
    }
}

const char *tk_byte_char(int byte)
{
    pthread_once(&byte_once, byte_init);
    return byte_chars[byte & 0xff];
}

int tk_byte_level_decode(uint32_t cp)
{
    pthread_once(&byte_once, byte_init);
    return cp < 324 ? char_bytes[cp] : -1;
}

/* ---- parsing ---- */

static int parse_prepend(const cJSON *j)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme"));
    if (s) return !strcmp(s, "never") ? 0 : !strcmp(s, "first") ? 1 : 2;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
    return !cJSON_IsBool(a) || cJSON_IsTrue(a) ? 2 : 0;
}

static clnpu_status parse_dec_one(clnpu_tokenizer *t, const cJSON *j)
{
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
    if (!type) return clnpu_fail(CLNPU_ERR_PARSE, "%s: decoder without a \"type\"", t->origin);
    if (!strcmp(type, "Sequence")) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "decoders"), *e;
        if (!cJSON_IsArray(a)) return clnpu_fail(CLNPU_ERR_PARSE, "%s: decoder Sequence without \"decoders\"", t->origin);
        cJSON_ArrayForEach(e, a) {
            clnpu_status st = parse_dec_one(t, e);
            if (st) return st;
        }
        return CLNPU_OK;
    }
    tk_dec d = {0};
    if (!strcmp(type, "ByteLevel")) d.kind = TK_DEC_BYTELEVEL;
    else if (!strcmp(type, "ByteFallback")) d.kind = TK_DEC_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) d.kind = TK_DEC_FUSE;
    else if (!strcmp(type, "Strip")) {
        d.kind = TK_DEC_STRIP;
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "content"));
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "start"), *b = cJSON_GetObjectItemCaseSensitive(j, "stop");
        if (!c || !*c || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) || a->valuedouble < 0 || b->valuedouble < 0)
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: decoder Strip needs content, start and stop", t->origin);
        d.a = strdup(c), d.start = (size_t)a->valuedouble, d.stop = (size_t)b->valuedouble;
    } else if (!strcmp(type, "Replace")) {
        d.kind = TK_DEC_REPLACE;
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "pattern"), "String"));
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "content"));
        if (!p || !c || !*p) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: decoder Replace is supported with a String pattern only", t->origin);
        d.a = strdup(p), d.b = strdup(c);
    } else if (!strcmp(type, "Metaspace")) {
        d.kind = TK_DEC_METASPACE;
        const char *r = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "replacement"));
        d.a = strdup(r ? r : "\xe2\x96\x81");
        d.prepend = parse_prepend(j);
    } else
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: unsupported decoder type '%s'", t->origin, type);
    tk_dec *nd = realloc(t->dec, (t->ndec + 1) * sizeof *nd);
    if (!nd) {
        tk_dec_free(&d);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    t->dec = nd;
    t->dec[t->ndec++] = d;
    return CLNPU_OK;
}

clnpu_status tk_parse_decoder(clnpu_tokenizer *t, const cJSON *j)
{
    if (!j || cJSON_IsNull(j)) return CLNPU_OK;
    t->has_decoder = true;
    return parse_dec_one(t, j);
}

void tk_dec_free(tk_dec *d)
{
    free(d->a), free(d->b);
}

/* ---- the chain over token strings ---- */

typedef struct tlist {
    tk_buf *s;
    size_t n;
} tlist;

static void tlist_free(tlist *l)
{
    for (size_t i = 0; i < l->n; i++) tk_buf_free(&l->s[i]);
    free(l->s);
    l->s = NULL, l->n = 0;
}

/* Append bytes as Rust's String::from_utf8_lossy would: each maximal invalid subpart -> U+FFFD. */
static bool put_lossy(tk_buf *out, const unsigned char *p, size_t n)
{
    static const char fffd[] = "\xef\xbf\xbd";
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t need = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (!need) {
            if (!tk_buf_put(out, fffd, 3)) return false;
            i++;
            continue;
        }
        size_t k = 1;
        for (; k < need && i + k < n; k++) {
            unsigned d = p[i + k];
            unsigned lo = 0x80, hi = 0xBF;
            if (k == 1) {
                if (c == 0xE0) lo = 0xA0;
                else if (c == 0xED) hi = 0x9F;
                else if (c == 0xF0) lo = 0x90;
                else if (c == 0xF4) hi = 0x8F;
            }
            if (d < lo || d > hi) break;
        }
        if (k == need) {
            if (!tk_buf_put(out, p + i, need)) return false;
        } else if (!tk_buf_put(out, fffd, 3))
            return false;
        i += k;
    }
    return true;
}

static bool valid_utf8(const unsigned char *p, size_t n)
{
    tk_buf b = {0};
    bool ok = put_lossy(&b, p, n) && b.n == n && (!n || !memcmp(b.p, p, n));
    tk_buf_free(&b);
    return ok;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool replace_in(tk_buf *b, const char *pat, const char *with)
{
    size_t pl = strlen(pat), wl = strlen(with);
    tk_buf o = {0};
    if (!tk_buf_put(&o, "", 0)) return false;
    for (size_t i = 0; i < b->n;) {
        if (i + pl <= b->n && !memcmp(b->p + i, pat, pl)) {
            if (!tk_buf_put(&o, with, wl)) return tk_buf_free(&o), false;
            i += pl;
        } else if (!tk_buf_put(&o, b->p + i++, 1))
            return tk_buf_free(&o), false;
    }
    tk_buf_free(b);
    *b = o;
    return true;
}

static bool dec_step(const tk_dec *d, tlist *l)
{
    switch (d->kind) {
    case TK_DEC_BYTELEVEL: {
        tk_buf bytes = {0}, out = {0};
        bool ok = tk_buf_put(&bytes, "", 0) && tk_buf_put(&out, "", 0);
        for (size_t i = 0; i < l->n && ok; i++) {
            /* a token with a character outside the alphabet (an added token) passes as it is */
            size_t mark = bytes.n;
            bool all = true;
            for (size_t k = 0; k < l->s[i].n && ok && all;) {
                uint32_t cp;
                k += tk_utf8_next(l->s[i].p + k, &cp);
                int b = tk_byte_level_decode(cp);
                if (b < 0) all = false;
                else {
                    char c = (char)b;
                    ok = tk_buf_put(&bytes, &c, 1);
                }
            }
            if (!all) bytes.n = mark, ok = tk_buf_put(&bytes, l->s[i].p, l->s[i].n);
        }
        ok = ok && put_lossy(&out, (const unsigned char *)bytes.p, bytes.n);
        tk_buf_free(&bytes);
        tlist_free(l);
        if (!ok) return tk_buf_free(&out), false;
        if (!(l->s = malloc(sizeof *l->s))) return tk_buf_free(&out), false;
        l->s[0] = out, l->n = 1;
        return true;
    }
    case TK_DEC_BYTEFALLBACK: {
        /* runs of <0xXX> become their bytes when valid UTF-8, else one U+FFFD per byte */
        tlist o = {calloc(l->n + 1, sizeof *o.s), 0};
        if (!o.s) return false;
        tk_buf run = {0};
        bool ok = true;
        size_t nrun = 0;
        for (size_t i = 0; i <= l->n && ok; i++) {
            const tk_buf *s = i < l->n ? &l->s[i] : NULL;
            int hi, lo;
            if (s && s->n == 6 && !memcmp(s->p, "<0x", 3) && s->p[5] == '>' && (hi = hexval(s->p[3])) >= 0 && (lo = hexval(s->p[4])) >= 0) {
                char c = (char)(hi * 16 + lo);
                ok = tk_buf_put(&run, &c, 1);
                nrun++;
                continue;
            }
            if (nrun) {
                tk_buf *t = &o.s[o.n++];
                if (valid_utf8((const unsigned char *)run.p, run.n)) ok = tk_buf_put(t, run.p, run.n);
                else
                    for (size_t k = 0; k < nrun && ok; k++) ok = tk_buf_put(t, "\xef\xbf\xbd", 3);
                run.n = 0, nrun = 0;
            }
            if (s && ok) {
                o.s[o.n] = *s;
                l->s[i] = (tk_buf){0};
                o.n++;
            }
        }
        tk_buf_free(&run);
        tlist_free(l);
        *l = o;
        return ok;
    }
    case TK_DEC_FUSE: {
        if (l->n <= 1) return true;
        for (size_t i = 1; i < l->n; i++)
            if (!tk_buf_put(&l->s[0], l->s[i].p, l->s[i].n)) return false;
        for (size_t i = 1; i < l->n; i++) tk_buf_free(&l->s[i]);
        l->n = 1;
        return true;
    }
    case TK_DEC_STRIP: {
        size_t cl = strlen(d->a);
        for (size_t i = 0; i < l->n; i++) {
            tk_buf *s = &l->s[i];
            size_t a = 0, b = s->n;
            for (size_t k = 0; k < d->start && a + cl <= b && !memcmp(s->p + a, d->a, cl); k++) a += cl;
            for (size_t k = 0; k < d->stop && b >= a + cl && !memcmp(s->p + b - cl, d->a, cl); k++) b -= cl;
            if (s->p) memmove(s->p, s->p + a, b - a), s->n = b - a, s->p[s->n] = '\0';
        }
        return true;
    }
    case TK_DEC_REPLACE:
        for (size_t i = 0; i < l->n; i++)
            if (!replace_in(&l->s[i], d->a, d->b)) return false;
        return true;
    case TK_DEC_METASPACE:
        for (size_t i = 0; i < l->n; i++) {
            if (!replace_in(&l->s[i], d->a, " ")) return false;
            tk_buf *s = &l->s[i];
            if (i == 0 && d->prepend && s->n && s->p[0] == ' ') memmove(s->p, s->p + 1, s->n), s->n--;
        }
        return true;
    }
    return true;
}

clnpu_status clnpu_tokenizer_decode(const clnpu_tokenizer *t, const int *ids, size_t n, char **out_text, size_t *out_len)
{
    if (!t || !out_text || (n && !ids)) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_tokenizer_decode: NULL argument");
    *out_text = NULL;
    if (out_len) *out_len = 0;
    tlist l = {calloc(n + 1, sizeof *l.s), 0};
    if (!l.s) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t i = 0; i < n; i++) {
        const char *s = clnpu_tokenizer_token(t, ids[i]);
        if (!s) {
            tlist_free(&l);
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: token id %d is not in the vocabulary (0..%zu)", t->origin, ids[i],
                              t->ntok ? t->ntok - 1 : 0);
        }
        if (!tk_buf_put(&l.s[l.n++], s, strlen(s))) goto oom;
    }
    bool ok = true;
    for (size_t k = 0; k < t->ndec && ok; k++) ok = dec_step(&t->dec[k], &l);
    if (!ok) goto oom;
    tk_buf out = {0};
    if (!tk_buf_put(&out, "", 0)) goto oom;
    for (size_t i = 0; i < l.n; i++) {
        /* without a decoder HF joins the tokens with spaces */
        if ((i && !t->has_decoder && !tk_buf_put(&out, " ", 1)) || !tk_buf_put(&out, l.s[i].p, l.s[i].n)) {
            tk_buf_free(&out);
            goto oom;
        }
    }
    tlist_free(&l);
    *out_text = out.p;
    if (out_len) *out_len = out.n;
    return CLNPU_OK;
oom:
    tlist_free(&l);
    return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
}

/* ---- streaming: HF tokenizers' DecodeStream ---- */

struct clnpu_detokenizer {
    const clnpu_tokenizer *tok;
    int *ids;
    size_t n, cap, prefix_index;
    char *prefix;
    size_t prefix_len;
    tk_buf out;
};

clnpu_status clnpu_detokenizer_create(const clnpu_tokenizer *tok, clnpu_detokenizer **out)
{
    if (!tok || !out) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_detokenizer_create: NULL argument");
    if (!(*out = calloc(1, sizeof **out))) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    (*out)->tok = tok;
    return CLNPU_OK;
}

void clnpu_detokenizer_reset(clnpu_detokenizer *dt)
{
    if (!dt) return;
    dt->n = dt->prefix_index = dt->prefix_len = 0;
    free(dt->prefix);
    dt->prefix = NULL;
}

void clnpu_detokenizer_free(clnpu_detokenizer *dt)
{
    if (!dt) return;
    clnpu_detokenizer_reset(dt);
    free(dt->ids);
    tk_buf_free(&dt->out);
    free(dt);
}

static bool ends_fffd(const char *s, size_t n) { return n >= 3 && !memcmp(s + n - 3, "\xef\xbf\xbd", 3); }

clnpu_status clnpu_detokenizer_push(clnpu_detokenizer *dt, int id, const char **out_text, size_t *out_len)
{
    *out_text = "", *out_len = 0;
    dt->out.n = 0;
    clnpu_status st;
    if (!dt->prefix_len && dt->n) {
        char *p;
        size_t pl;
        if ((st = clnpu_tokenizer_decode(dt->tok, dt->ids, dt->n, &p, &pl))) return st;
        if (!ends_fffd(p, pl)) free(dt->prefix), dt->prefix = p, dt->prefix_len = pl, dt->prefix_index = dt->n;
        else free(p);
    }
    if (dt->n == dt->cap) {
        size_t c = dt->cap ? dt->cap * 2 : 16;
        int *ni = realloc(dt->ids, c * sizeof *ni);
        if (!ni) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        dt->ids = ni, dt->cap = c;
    }
    dt->ids[dt->n++] = id;
    char *s;
    size_t sl;
    if ((st = clnpu_tokenizer_decode(dt->tok, dt->ids, dt->n, &s, &sl))) {
        dt->n--;
        return st;
    }
    if (sl > dt->prefix_len && !ends_fffd(s, sl) && (!dt->prefix_len || !memcmp(s, dt->prefix, dt->prefix_len))) {
        bool ok = tk_buf_put(&dt->out, s + dt->prefix_len, sl - dt->prefix_len);
        free(s);
        if (!ok) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        /* keep only the ids after the old prefix: the new prefix is their decode */
        size_t keep = dt->n - dt->prefix_index;
        memmove(dt->ids, dt->ids + dt->prefix_index, keep * sizeof *dt->ids);
        dt->n = keep;
        free(dt->prefix);
        dt->prefix = NULL;
        if ((st = clnpu_tokenizer_decode(dt->tok, dt->ids, dt->n, &dt->prefix, &dt->prefix_len))) return st;
        dt->prefix_index = dt->n;
        *out_text = dt->out.p, *out_len = dt->out.n;
        return CLNPU_OK;
    }
    free(s);
    return CLNPU_OK;
}

clnpu_status clnpu_detokenizer_flush(clnpu_detokenizer *dt, const char **out_text, size_t *out_len)
{
    *out_text = "", *out_len = 0;
    dt->out.n = 0;
    char *s;
    size_t sl;
    clnpu_status st = clnpu_tokenizer_decode(dt->tok, dt->ids, dt->n, &s, &sl);
    if (st) return st;
    bool ok = sl <= dt->prefix_len || tk_buf_put(&dt->out, s + dt->prefix_len, sl - dt->prefix_len);
    free(s);
    if (!ok) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    clnpu_detokenizer_reset(dt);
    *out_text = dt->out.p ? dt->out.p : "", *out_len = dt->out.n;
    return CLNPU_OK;
}
