/* Tokenizer front end: normalizers (utf8proc) and pre-tokenizers (PCRE2 regexes), following
 * HF tokenizers' normalizers/ and pre_tokenizers/ so the pieces handed to BPE are the same. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "../common/error.h"
#include "tokenizer_internal.h"

bool tk_buf_put(tk_buf *b, const void *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) return false;
        b->p = p, b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

void tk_buf_free(tk_buf *b)
{
    free(b->p);
    *b = (tk_buf){0};
}

bool tk_pieces_add(tk_pieces *ps, const char *s, size_t n, size_t first)
{
    if (!n) return true; /* HF drops empty splits */
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        size_t *o = realloc(ps->off, cap * sizeof *o), *l = o ? realloc(ps->len, cap * sizeof *l) : NULL;
        if (o) ps->off = o;
        if (l) ps->len = l;
        size_t *f = l ? realloc(ps->first, cap * sizeof *f) : NULL;
        if (!f) return false;
        ps->first = f, ps->cap = cap;
    }
    ps->off[ps->n] = ps->text.n;
    ps->len[ps->n] = n;
    ps->first[ps->n] = first;
    ps->n++;
    return tk_buf_put(&ps->text, s, n);
}

void tk_pieces_clear(tk_pieces *ps) { ps->n = 0, ps->text.n = 0; }

void tk_pieces_free(tk_pieces *ps)
{
    tk_buf_free(&ps->text);
    free(ps->off), free(ps->len), free(ps->first);
    *ps = (tk_pieces){0};
}

size_t tk_utf8_next(const char *s, uint32_t *cp)
{
    const unsigned char *u = (const unsigned char *)s;
    if (u[0] < 0x80) return *cp = u[0], 1;
    if (u[0] < 0xE0) return *cp = (uint32_t)(u[0] & 0x1F) << 6 | (u[1] & 0x3F), 2;
    if (u[0] < 0xF0) return *cp = (uint32_t)(u[0] & 0x0F) << 12 | (uint32_t)(u[1] & 0x3F) << 6 | (u[2] & 0x3F), 3;
    *cp = (uint32_t)(u[0] & 0x07) << 18 | (uint32_t)(u[1] & 0x3F) << 12 | (uint32_t)(u[2] & 0x3F) << 6 | (u[3] & 0x3F);
    return 4;
}

bool tk_is_whitespace(uint32_t c)
{
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool tk_is_word_char(uint32_t c)
{
    /* Rust's char::is_alphanumeric (Alphabetic or Numeric), approximated by the categories */
    if (c == '_') return true;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return (k >= UTF8PROC_CATEGORY_LU && k <= UTF8PROC_CATEGORY_LO) || (k >= UTF8PROC_CATEGORY_ND && k <= UTF8PROC_CATEGORY_NO);
}

/* ---- regexes ---- */

clnpu_status tk_regex_compile(tk_regex *re, const char *pattern, bool literal, const char *origin)
{
    int err;
    PCRE2_SIZE at;
    re->code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                             PCRE2_UTF | PCRE2_NO_UTF_CHECK | (literal ? PCRE2_LITERAL : PCRE2_UCP), &err, &at, NULL);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return clnpu_fail(CLNPU_ERR_PARSE, "%s: regex '%s' at offset %zu: %s", origin, pattern, (size_t)at, (char *)msg);
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return CLNPU_OK;
}

void tk_regex_free(tk_regex *re)
{
    pcre2_code_free(re->code);
    re->code = NULL;
}

int tk_regex_next(const tk_regex *re, const char *s, size_t n, size_t start, pcre2_match_data *md, size_t *ms,
                  size_t *me)
{
    int rc = -1;
    if (re->jit) rc = pcre2_jit_match(re->code, (PCRE2_SPTR)s, n, start, 0, md, NULL);
    /* the JIT's default stack is 32 KiB; a long whitespace run can exceed it, the interpreter cannot */
    if (!re->jit || rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        clnpu_fail(CLNPU_ERR_UNSUPPORTED, "tokenizer regex failed on the input: %s", (char *)msg);
        return -1;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0], *me = ov[1];
    return 1;
}

/* ---- normalizers ---- */

static clnpu_status parse_norm_one(clnpu_tokenizer *t, const cJSON *j)
{
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
    if (!type) return clnpu_fail(CLNPU_ERR_PARSE, "%s: normalizer without a \"type\"", t->origin);
    if (!strcmp(type, "Sequence")) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "normalizers"), *e;
        if (!cJSON_IsArray(a)) return clnpu_fail(CLNPU_ERR_PARSE, "%s: normalizer Sequence without \"normalizers\"", t->origin);
        cJSON_ArrayForEach(e, a) {
            clnpu_status st = parse_norm_one(t, e);
            if (st) return st;
        }
        return CLNPU_OK;
    }
    tk_norm n = {0};
    if (!strcmp(type, "NFC")) n.kind = TK_NORM_NFC;
    else if (!strcmp(type, "NFD")) n.kind = TK_NORM_NFD;
    else if (!strcmp(type, "NFKC")) n.kind = TK_NORM_NFKC;
    else if (!strcmp(type, "NFKD")) n.kind = TK_NORM_NFKD;
    else if (!strcmp(type, "Prepend")) {
        n.kind = TK_NORM_PREPEND;
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "prepend"));
        if (!p) return clnpu_fail(CLNPU_ERR_PARSE, "%s: normalizer Prepend without \"prepend\"", t->origin);
        n.a = strdup(p);
    } else if (!strcmp(type, "Replace")) {
        n.kind = TK_NORM_REPLACE;
        const char *p = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "pattern"), "String"));
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "content"));
        if (!p || !c || !*p)
            return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: normalizer Replace is supported with a String pattern only", t->origin);
        n.a = strdup(p), n.b = strdup(c);
    } else
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: unsupported normalizer type '%s'", t->origin, type);
    tk_norm *nn = realloc(t->norm, (t->nnorm + 1) * sizeof *nn);
    if (!nn) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    t->norm = nn;
    t->norm[t->nnorm++] = n;
    return CLNPU_OK;
}

clnpu_status tk_parse_normalizer(clnpu_tokenizer *t, const cJSON *j)
{
    return !j || cJSON_IsNull(j) ? CLNPU_OK : parse_norm_one(t, j);
}

static bool replace_all(const char *s, size_t n, const char *pat, const char *with, tk_buf *out)
{
    size_t pl = strlen(pat), wl = strlen(with);
    out->n = 0;
    if (!tk_buf_put(out, "", 0)) return false;
    for (size_t i = 0; i < n;) {
        if (i + pl <= n && !memcmp(s + i, pat, pl)) {
            if (!tk_buf_put(out, with, wl)) return false;
            i += pl;
        } else {
            if (!tk_buf_put(out, s + i, 1)) return false;
            i++;
        }
    }
    return true;
}

static clnpu_status normalize_str(const clnpu_tokenizer *t, const char *s, size_t n, tk_buf *out)
{
    out->n = 0;
    if (!tk_buf_put(out, s, n)) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    tk_buf tmp = {0};
    for (size_t k = 0; k < t->nnorm; k++) {
        const tk_norm *nm = &t->norm[k];
        if (nm->kind == TK_NORM_REPLACE) {
            if (!replace_all(out->p, out->n, nm->a, nm->b, &tmp)) goto oom;
            tk_buf x = *out;
            *out = tmp, tmp = x;
            continue;
        }
        if (nm->kind == TK_NORM_PREPEND) {
            /* HF prepends only to a non-empty string */
            if (!out->n) continue;
            tmp.n = 0;
            if (!tk_buf_put(&tmp, nm->a, strlen(nm->a)) || !tk_buf_put(&tmp, out->p, out->n)) goto oom;
            tk_buf x = *out;
            *out = tmp, tmp = x;
            continue;
        }
        if (!out->n) continue;
        int flags = UTF8PROC_STABLE | (nm->kind == TK_NORM_NFC || nm->kind == TK_NORM_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
                    (nm->kind == TK_NORM_NFKC || nm->kind == TK_NORM_NFKD ? UTF8PROC_COMPAT : 0);
        utf8proc_uint8_t *r = NULL;
        utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)out->p, (utf8proc_ssize_t)out->n, &r, (utf8proc_option_t)flags);
        if (len < 0) {
            tk_buf_free(&tmp);
            return clnpu_fail(CLNPU_ERR_PARSE, "normalizing text: %s", utf8proc_errmsg(len));
        }
        out->n = 0;
        bool ok = tk_buf_put(out, r, (size_t)len);
        free(r);
        if (!ok) goto oom;
    }
    tk_buf_free(&tmp);
    return CLNPU_OK;
oom:
    tk_buf_free(&tmp);
    return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
}

clnpu_status tk_normalize(const clnpu_tokenizer *t, const char *s, size_t n, tk_buf *out, size_t *out_first)
{
    clnpu_status st = normalize_str(t, s, n, out);
    *out_first = 0;
    if (st || !n || !out->n) return st;
    uint32_t cp;
    size_t l = tk_utf8_next(s, &cp);
    if (!t->nnorm) return *out_first = l, CLNPU_OK;
    /* the first character alone; if composition merged it with what follows, the first output character */
    tk_buf f = {0};
    st = normalize_str(t, s, l, &f);
    if (!st) *out_first = f.n && f.n <= out->n && !memcmp(f.p, out->p, f.n) ? f.n : tk_utf8_next(out->p, &cp);
    tk_buf_free(&f);
    return st;
}

/* ---- pre-tokenizers ---- */

/* GPT-2's pattern, which ByteLevel applies when use_regex is set */
static const char gpt2_regex[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static bool get_bool(const cJSON *j, const char *key, bool dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static int parse_prepend(const cJSON *j)
{
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme"));
    if (s) return !strcmp(s, "never") ? 0 : !strcmp(s, "first") ? 1 : 2;
    return get_bool(j, "add_prefix_space", true) ? 2 : 0;
}

static clnpu_status parse_pre_one(clnpu_tokenizer *t, const cJSON *j)
{
    const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "type"));
    if (!type) return clnpu_fail(CLNPU_ERR_PARSE, "%s: pre_tokenizer without a \"type\"", t->origin);
    if (!strcmp(type, "Sequence")) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers"), *e;
        if (!cJSON_IsArray(a)) return clnpu_fail(CLNPU_ERR_PARSE, "%s: pre_tokenizer Sequence without \"pretokenizers\"", t->origin);
        cJSON_ArrayForEach(e, a) {
            clnpu_status st = parse_pre_one(t, e);
            if (st) return st;
        }
        return CLNPU_OK;
    }
    tk_pre p = {0};
    clnpu_status st = CLNPU_OK;
    if (!strcmp(type, "Split")) {
        p.kind = TK_PRE_SPLIT;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        const char *rx = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pat, "Regex"));
        const char *lit = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pat, "String"));
        const char *b = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "behavior"));
        if (!rx && !lit) return clnpu_fail(CLNPU_ERR_PARSE, "%s: Split without a Regex or String pattern", t->origin);
        if (!b) return clnpu_fail(CLNPU_ERR_PARSE, "%s: Split without a \"behavior\"", t->origin);
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        int k = -1;
        for (int i = 0; i < 5; i++)
            if (!strcmp(b, names[i])) k = i;
        if (k < 0) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: unsupported Split behavior '%s'", t->origin, b);
        p.behavior = (tk_split_behavior)k;
        p.invert = get_bool(j, "invert", false);
        st = tk_regex_compile(&p.re, rx ? rx : lit, !rx, t->origin);
    } else if (!strcmp(type, "ByteLevel")) {
        p.kind = TK_PRE_BYTELEVEL;
        p.add_prefix_space = get_bool(j, "add_prefix_space", true);
        p.use_regex = get_bool(j, "use_regex", true);
        if (p.use_regex) st = tk_regex_compile(&p.re, gpt2_regex, false, t->origin);
    } else if (!strcmp(type, "Digits")) {
        p.kind = TK_PRE_DIGITS;
        p.individual_digits = get_bool(j, "individual_digits", false);
        st = tk_regex_compile(&p.re, "\\p{N}", false, t->origin);
    } else if (!strcmp(type, "Whitespace")) {
        p.kind = TK_PRE_WHITESPACE;
        st = tk_regex_compile(&p.re, "\\w+|[^\\w\\s]+", false, t->origin);
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p.kind = TK_PRE_WHITESPACE_SPLIT;
    } else if (!strcmp(type, "Metaspace")) {
        p.kind = TK_PRE_METASPACE;
        const char *r = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "replacement"));
        snprintf(p.replacement, sizeof p.replacement, "%s", r ? r : "\xe2\x96\x81");
        p.prepend = parse_prepend(j);
        p.split = get_bool(j, "split", true);
        st = tk_regex_compile(&p.re, p.replacement, true, t->origin);
    } else
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: unsupported pre_tokenizer type '%s'", t->origin, type);
    if (st) return st;
    tk_pre *np = realloc(t->pre, (t->npre + 1) * sizeof *np);
    if (!np) {
        tk_pre_free(&p);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    t->pre = np;
    t->pre[t->npre++] = p;
    return CLNPU_OK;
}

clnpu_status tk_parse_pre_tokenizer(clnpu_tokenizer *t, const cJSON *j)
{
    return !j || cJSON_IsNull(j) ? CLNPU_OK : parse_pre_one(t, j);
}

void tk_pre_free(tk_pre *p) { tk_regex_free(&p->re); }

/* A sub-piece at `off` starts within the original input's first character when its parent's
 * `first` bytes (those aligned to offset 0) reach past off. */
#define SUBFIRST(first, off) ((first) > (off) ? (first) - (off) : 0)

/* Split one piece by a regex (pattern.rs find_matches, then normalizer.rs split): spans that
 * match and spans that do not, combined by the behaviour. */
static clnpu_status split_piece(const tk_regex *re, tk_split_behavior beh, bool invert, const char *s, size_t n,
                                size_t first, pcre2_match_data *md, tk_pieces *out)
{
    enum { MAXSPAN = 64 };
    size_t cap = MAXSPAN, cnt = 0;
    size_t sbuf[MAXSPAN][2];
    bool mbuf[MAXSPAN];
    size_t(*sp)[2] = sbuf;
    bool *ism = mbuf;
    clnpu_status st = CLNPU_OK;
#define PUSH(a, b, m)                                                                                              \
    do {                                                                                                           \
        if (cnt == cap) {                                                                                          \
            size_t nc = cap * 2;                                                                                   \
            size_t(*ns)[2] = malloc(nc * sizeof *ns);                                                              \
            bool *nm = malloc(nc);                                                                                 \
            if (!ns || !nm) { free(ns), free(nm); st = CLNPU_ERR_OUT_OF_MEMORY; goto done; }                      \
            memcpy(ns, sp, cnt * sizeof *ns), memcpy(nm, ism, cnt);                                                \
            if (sp != sbuf) free(sp), free(ism);                                                                   \
            sp = ns, ism = nm, cap = nc;                                                                           \
        }                                                                                                          \
        sp[cnt][0] = (a), sp[cnt][1] = (b), ism[cnt] = (m);                                                        \
        cnt++;                                                                                                     \
    } while (0)
    if (!n) return CLNPU_OK; /* an empty piece yields nothing */
    /* the Rust onig crate's find_iter: an empty match right after the previous match is
     * skipped by one character; other empty matches count (and split) */
    size_t prev = 0, pos = 0, ms, me, last_me = 0;
    bool have_last = false;
    while (pos <= n) {
        int r = tk_regex_next(re, s, n, pos, md, &ms, &me);
        if (r < 0) { st = CLNPU_ERR_UNSUPPORTED; goto done; }
        if (!r) break;
        if (me == ms && have_last && last_me == me) {
            uint32_t cp;
            pos += pos < n ? tk_utf8_next(s + pos, &cp) : 1;
            continue;
        }
        pos = last_me = me, have_last = true;
        if (prev != ms) PUSH(prev, ms, invert);
        PUSH(ms, me, !invert);
        prev = me;
    }
    if (prev != n) PUSH(prev, n, invert);
    /* combine (matches marked true) */
    size_t outn = 0;
    bool prevm = false;
    if (beh == TK_SPLIT_MERGED_NEXT) {
        /* walk backwards: a match joins the piece after it */
        size_t w = cnt;
        for (size_t k = cnt; k-- > 0;) {
            bool m = ism[k];
            if (m && !prevm && w < cnt) sp[w][0] = sp[k][0];
            else w--, sp[w][0] = sp[k][0], sp[w][1] = sp[k][1], ism[w] = false;
            prevm = m;
        }
        for (size_t k = w; k < cnt; k++)
            if (!tk_pieces_add(out, s + sp[k][0], sp[k][1] - sp[k][0], SUBFIRST(first, sp[k][0]))) { st = CLNPU_ERR_OUT_OF_MEMORY; goto done; }
        goto done;
    }
    for (size_t k = 0; k < cnt; k++) {
        bool m = ism[k], remove = false;
        bool merge = false;
        switch (beh) {
        case TK_SPLIT_ISOLATED: break;
        case TK_SPLIT_REMOVED: remove = m; break;
        case TK_SPLIT_CONTIGUOUS: merge = outn && m == prevm; break;
        case TK_SPLIT_MERGED_PREV: merge = outn && m && !prevm; break;
        default: break;
        }
        prevm = m;
        if (merge) {
            sp[outn - 1][1] = sp[k][1];
            continue;
        }
        sp[outn][0] = sp[k][0], sp[outn][1] = sp[k][1], ism[outn] = remove;
        outn++;
    }
    for (size_t k = 0; k < outn; k++)
        if (!ism[k] && !tk_pieces_add(out, s + sp[k][0], sp[k][1] - sp[k][0], SUBFIRST(first, sp[k][0]))) {
            st = CLNPU_ERR_OUT_OF_MEMORY;
            break;
        }
done:
    if (sp != sbuf) free(sp), free(ism);
#undef PUSH
    if (st == CLNPU_ERR_OUT_OF_MEMORY) return clnpu_fail(st, "out of host memory");
    return st;
}

static bool add_byte_level(tk_pieces *out, const char *s, size_t n, size_t first, tk_buf *tmp)
{
    tmp->n = 0;
    for (size_t i = 0; i < n; i++) {
        const char *c = tk_byte_char((unsigned char)s[i]);
        if (!tk_buf_put(tmp, c, strlen(c))) return false;
    }
    return tk_pieces_add(out, tmp->p ? tmp->p : "", tmp->n, first);
}

static clnpu_status pre_step(const tk_pre *p, const tk_pieces *in, tk_pieces *out, pcre2_match_data *md)
{
    tk_buf tmp = {0}, tmp2 = {0};
    clnpu_status st = CLNPU_OK;
    for (size_t i = 0; i < in->n && !st; i++) {
        const char *s = in->text.p + in->off[i];
        size_t n = in->len[i];
        size_t first = in->first[i];
        switch (p->kind) {
        case TK_PRE_SPLIT: st = split_piece(&p->re, p->behavior, p->invert, s, n, first, md, out); break;
        case TK_PRE_DIGITS:
            st = split_piece(&p->re, p->individual_digits ? TK_SPLIT_ISOLATED : TK_SPLIT_CONTIGUOUS, false, s, n, first, md, out);
            break;
        case TK_PRE_WHITESPACE: st = split_piece(&p->re, TK_SPLIT_REMOVED, true, s, n, first, md, out); break;
        case TK_PRE_WHITESPACE_SPLIT: {
            size_t a = 0;
            while (a < n) {
                uint32_t cp;
                size_t k = a, l;
                while (k < n && (l = tk_utf8_next(s + k, &cp), tk_is_whitespace(cp))) k += l;
                size_t b = k;
                while (b < n && (l = tk_utf8_next(s + b, &cp), !tk_is_whitespace(cp))) b += l;
                if (b > k && !tk_pieces_add(out, s + k, b - k, SUBFIRST(first, k))) st = CLNPU_ERR_OUT_OF_MEMORY;
                a = b;
            }
            break;
        }
        case TK_PRE_BYTELEVEL: {
            tk_pieces sub = {0};
            const tk_pieces *src = NULL;
            tmp2.n = 0;
            if (p->add_prefix_space && (n == 0 || s[0] != ' ')) {
                if (!tk_buf_put(&tmp2, " ", 1) || !tk_buf_put(&tmp2, s, n)) { st = CLNPU_ERR_OUT_OF_MEMORY; break; }
                s = tmp2.p, n = tmp2.n;
            }
            if (p->use_regex) {
                st = split_piece(&p->re, TK_SPLIT_ISOLATED, false, s, n, first, md, &sub);
                src = &sub;
            }
            if (!st && src) {
                for (size_t k = 0; k < src->n && !st; k++)
                    if (!add_byte_level(out, src->text.p + src->off[k], src->len[k], src->first[k], &tmp)) st = CLNPU_ERR_OUT_OF_MEMORY;
            } else if (!st && n && !add_byte_level(out, s, n, first, &tmp))
                st = CLNPU_ERR_OUT_OF_MEMORY;
            tk_pieces_free(&sub);
            break;
        }
        case TK_PRE_METASPACE: {
            if (first) { /* the first character's bytes after the replacement */
                if (!replace_all(s, first < n ? first : n, " ", p->replacement, &tmp)) { st = CLNPU_ERR_OUT_OF_MEMORY; break; }
                first = tmp.n;
            }
            if (!replace_all(s, n, " ", p->replacement, &tmp)) { st = CLNPU_ERR_OUT_OF_MEMORY; break; }
            size_t rl = strlen(p->replacement);
            bool starts = tmp.n >= rl && !memcmp(tmp.p, p->replacement, rl);
            if ((p->prepend == 2 || (p->prepend == 1 && first)) && !starts && tmp.n) {
                tmp2.n = 0;
                if (!tk_buf_put(&tmp2, p->replacement, rl) || !tk_buf_put(&tmp2, tmp.p, tmp.n)) { st = CLNPU_ERR_OUT_OF_MEMORY; break; }
                tk_buf x = tmp;
                tmp = tmp2, tmp2 = x;
                if (first) first += rl;
            }
            if (p->split) st = split_piece(&p->re, TK_SPLIT_MERGED_NEXT, false, tmp.p ? tmp.p : "", tmp.n, first, md, out);
            else if (tmp.n && !tk_pieces_add(out, tmp.p, tmp.n, first)) st = CLNPU_ERR_OUT_OF_MEMORY;
            break;
        }
        }
    }
    tk_buf_free(&tmp), tk_buf_free(&tmp2);
    if (st == CLNPU_ERR_OUT_OF_MEMORY) return clnpu_fail(st, "out of host memory");
    return st;
}

clnpu_status tk_pre_tokenize(const clnpu_tokenizer *t, tk_pieces *in, tk_pieces *scratch, pcre2_match_data *md)
{
    for (size_t k = 0; k < t->npre; k++) {
        tk_pieces_clear(scratch);
        clnpu_status st = pre_step(&t->pre[k], in, scratch, md);
        if (st) return st;
        tk_pieces x = *in;
        *in = *scratch, *scratch = x;
    }
    return CLNPU_OK;
}
