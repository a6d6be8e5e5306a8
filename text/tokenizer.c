/* tokenizer.json loading and encoding: added tokens split out first (HF's AddedVocabulary:
 * leftmost-longest, lstrip / rstrip / single_word, raw then normalized), then normalizer,
 * pre-tokenizer and BPE on what is left. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "../common/file_read.h"
#include "tokenizer_internal.h"

size_t clnpu_tokenizer_vocab_size(const clnpu_tokenizer *t) { return t ? t->ntok : 0; }

const char *clnpu_tokenizer_token(const clnpu_tokenizer *t, int id)
{
    if (!t || id < 0 || (size_t)id >= t->ntok) return NULL;
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].id == id) return t->added[i].content;
    return t->tok[id];
}

bool clnpu_tokenizer_is_special(const clnpu_tokenizer *t, int id)
{
    return t && id >= 0 && (size_t)id < t->ntok && t->is_special[id];
}

int clnpu_tokenizer_token_id(const clnpu_tokenizer *t, const char *content)
{
    if (!t || !content) return -1;
    size_t n = strlen(content);
    for (size_t i = 0; i < t->nadded; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].content, content, n)) return t->added[i].id;
    return tk_vocab_find(t, content, n);
}

void clnpu_tokenizer_free(clnpu_tokenizer *t)
{
    if (!t) return;
    tk_bpe_free(t);
    for (size_t i = 0; i < t->nadded; i++) free(t->added[i].content);
    free(t->added), free(t->is_special);
    for (size_t i = 0; i < t->nnorm; i++) free(t->norm[i].a), free(t->norm[i].b);
    free(t->norm);
    for (size_t i = 0; i < t->npre; i++) tk_pre_free(&t->pre[i]);
    free(t->pre);
    for (size_t i = 0; i < t->ndec; i++) tk_dec_free(&t->dec[i]);
    free(t->dec);
    free(t);
}

static int added_cmp(const void *a, const void *b)
{
    const tk_added *x = a, *y = b;
    return x->len < y->len ? 1 : x->len > y->len ? -1 : 0; /* longest first: leftmost-longest matching */
}

static clnpu_status parse_added(clnpu_tokenizer *t, const cJSON *arr)
{
    if (!arr || cJSON_IsNull(arr)) return CLNPU_OK;
    if (!cJSON_IsArray(arr)) return clnpu_fail(CLNPU_ERR_PARSE, "%s: \"added_tokens\" is not an array", t->origin);
    size_t n = (size_t)cJSON_GetArraySize(arr);
    if (!(t->added = calloc(n + 1, sizeof *t->added))) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const char *c = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "content"));
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 0x7ffffff || !c || !*c)
            return clnpu_fail(CLNPU_ERR_PARSE, "%s: added_tokens[%zu] needs a non-negative \"id\" and a non-empty \"content\"", t->origin,
                              t->nadded);
        tk_added *a = &t->added[t->nadded++];
        a->content = strdup(c);
        if (!a->content) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        a->len = strlen(c);
        a->id = id->valueint;
        a->special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "special"));
        a->lstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "lstrip"));
        a->rstrip = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "rstrip"));
        a->single_word = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "single_word"));
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "normalized");
        a->normalized = cJSON_IsBool(nm) ? cJSON_IsTrue(nm) : !a->special;
    }
    qsort(t->added, t->nadded, sizeof *t->added, added_cmp);
    return CLNPU_OK;
}

clnpu_status clnpu_tokenizer_parse(const char *json, size_t len, const char *origin, clnpu_tokenizer **out)
{
    if (!json || !out) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_tokenizer_parse: NULL argument");
    *out = NULL;
    clnpu_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    snprintf(t->origin, sizeof t->origin, "%s", origin ? origin : "tokenizer.json");
    clnpu_status st = CLNPU_OK;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: not a JSON object%s", t->origin, root ? "" : " (malformed JSON)");
        goto done;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: no \"model\" object", t->origin);
        goto done;
    }
    if ((st = tk_parse_bpe(t, model))) goto done;
    if ((st = parse_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens")))) goto done;
    const size_t nmodel = t->ntok;
    for (size_t i = 0; i < t->nadded; i++)
        if ((size_t)t->added[i].id >= t->ntok) t->ntok = (size_t)t->added[i].id + 1;
    /* ids only added tokens use get empty model rows */
    char **nt = realloc(t->tok, (t->ntok + 1) * sizeof *nt);
    if (nt) t->tok = nt;
    uint32_t *nl = nt ? realloc(t->tok_len, (t->ntok + 1) * sizeof *nl) : NULL;
    if (nl) t->tok_len = nl;
    if (!nt || !nl || !(t->is_special = calloc(t->ntok + 1, 1))) {
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        goto done;
    }
    for (size_t i = nmodel; i <= t->ntok; i++) t->tok[i] = NULL, t->tok_len[i] = 0;
    for (size_t k = 0; k < t->nadded; k++) {
        t->is_special[t->added[k].id] = t->added[k].special;
        t->added_first[(unsigned char)t->added[k].content[0]] |= t->added[k].normalized ? 2 : 1;
    }
    /* the post_processor is not read: with add_special_tokens=False it adds nothing */
    if ((st = tk_parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer")))) goto done;
    if ((st = tk_parse_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer")))) goto done;
    if ((st = tk_parse_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder")))) goto done;
done:
    cJSON_Delete(root);
    if (st) clnpu_tokenizer_free(t);
    else *out = t;
    return st;
}

clnpu_status clnpu_tokenizer_load(const char *path, clnpu_tokenizer **out)
{
    if (!path || !out) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_tokenizer_load: NULL argument");
    char full[4096];
    size_t pl = strlen(path);
    if (pl >= 5 && !strcmp(path + pl - 5, ".json")) snprintf(full, sizeof full, "%s", path);
    else snprintf(full, sizeof full, "%s/tokenizer.json", path);
    char *text;
    size_t len;
    clnpu_status st = clnpu_file_read_all(full, &text, &len);
    if (st) return st;
    st = clnpu_tokenizer_parse(text, len, full, out);
    free(text);
    return st;
}

/* ---- encoding ---- */

/* Valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF)? */
static size_t utf8_invalid_at(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        size_t need = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >= 0xE0 && c <= 0xEF) ? 3 : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (!need || i + need > n) return i;
        for (size_t k = 1; k < need; k++) {
            unsigned d = p[i + k], lo = 0x80, hi = 0xBF;
            if (k == 1 && c == 0xE0) lo = 0xA0;
            if (k == 1 && c == 0xED) hi = 0x9F;
            if (k == 1 && c == 0xF0) lo = 0x90;
            if (k == 1 && c == 0xF4) hi = 0x8F;
            if (d < lo || d > hi) return i;
        }
        i += need;
    }
    return SIZE_MAX;
}

static bool prev_is_word(const char *s, size_t at)
{
    if (!at) return false;
    size_t k = at - 1;
    while (k && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    uint32_t cp;
    tk_utf8_next(s + k, &cp);
    return tk_is_word_char(cp);
}

typedef struct seg {
    size_t a, b;
    int id; /* -1: text to tokenize */
} seg;

typedef struct segs {
    seg *v;
    size_t n, cap;
} segs;

static bool seg_add(segs *s, size_t a, size_t b, int id)
{
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 16;
        seg *nv = realloc(s->v, c * sizeof *nv);
        if (!nv) return false;
        s->v = nv, s->cap = c;
    }
    s->v[s->n++] = (seg){a, b, id};
    return true;
}

/* Split s into added tokens (of the `normalized` kind) and the text between them. */
static bool split_added(const clnpu_tokenizer *t, const char *s, size_t n, bool normalized, segs *out)
{
    size_t start = 0, i = 0;
    const unsigned char kind = normalized ? 2 : 1;
    while (i < n) {
        if (!(t->added_first[(unsigned char)s[i]] & kind)) {
            i++;
            continue;
        }
        const tk_added *hit = NULL;
        for (size_t k = 0; k < t->nadded; k++) { /* sorted longest first */
            const tk_added *a = &t->added[k];
            if (a->normalized == normalized && a->len <= n - i && a->content[0] == s[i] && !memcmp(a->content, s + i, a->len)) {
                hit = a;
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        size_t ms = i, me = i + hit->len;
        if (hit->single_word) {
            uint32_t cp = 0;
            bool before = prev_is_word(s, ms), after = me < n && (tk_utf8_next(s + me, &cp), tk_is_word_char(cp));
            if (before || after) {
                i = me; /* HF's matcher goes on after the rejected match */
                continue;
            }
        }
        if (hit->lstrip) {
            size_t k = ms;
            while (k > start) {
                size_t j = k - 1;
                while (j > start && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
                uint32_t cp;
                tk_utf8_next(s + j, &cp);
                if (!tk_is_whitespace(cp)) break;
                k = j;
            }
            ms = k;
        }
        if (hit->rstrip) {
            uint32_t cp;
            size_t l;
            while (me < n && (l = tk_utf8_next(s + me, &cp), tk_is_whitespace(cp))) me += l;
        }
        if (start < ms && !seg_add(out, start, ms, -1)) return false;
        if (!seg_add(out, ms, me, hit->id)) return false;
        start = i = me;
    }
    if (start < n || n == 0) return seg_add(out, start, n, -1);
    return true;
}

clnpu_status clnpu_tokenizer_encode(const clnpu_tokenizer *t, const char *text, size_t len, int **out_ids, size_t *out_n)
{
    if (!t || !out_ids || !out_n || (len && !text)) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_tokenizer_encode: NULL argument");
    *out_ids = NULL, *out_n = 0;
    size_t bad = utf8_invalid_at((const unsigned char *)text, len);
    if (bad != SIZE_MAX) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "text is not valid UTF-8 (byte %zu)", bad);
    int *ids = NULL;
    size_t nids = 0, cap = 0;
    segs raw = {0}, nsg = {0};
    tk_buf norm = {0};
    tk_pieces pieces = {0}, scratch = {0};
    clnpu_status st = CLNPU_OK;
    pcre2_match_data *md = pcre2_match_data_create(4, NULL);
    if (!md || !split_added(t, text, len, false, &raw)) goto oom;
    for (size_t r = 0; r < raw.n && !st; r++) {
        if (raw.v[r].id >= 0) {
            int id = raw.v[r].id;
            if (nids == cap) {
                int *ni = realloc(ids, (cap = cap ? cap * 2 : 64) * sizeof *ni);
                if (!ni) goto oom;
                ids = ni;
            }
            ids[nids++] = id;
            continue;
        }
        size_t nfirst;
        if ((st = tk_normalize(t, text + raw.v[r].a, raw.v[r].b - raw.v[r].a, &norm, &nfirst))) break;
        if (raw.v[r].a) nfirst = 0;
        nsg.n = 0;
        if (!split_added(t, norm.p, norm.n, true, &nsg)) goto oom;
        for (size_t k = 0; k < nsg.n && !st; k++) {
            if (nsg.v[k].id >= 0) {
                if (nids == cap) {
                    int *ni = realloc(ids, (cap = cap ? cap * 2 : 64) * sizeof *ni);
                    if (!ni) goto oom;
                    ids = ni;
                }
                ids[nids++] = nsg.v[k].id;
                continue;
            }
            tk_pieces_clear(&pieces);
            if (nsg.v[k].b == nsg.v[k].a) continue;
            if (!tk_pieces_add(&pieces, norm.p + nsg.v[k].a, nsg.v[k].b - nsg.v[k].a, nfirst > nsg.v[k].a ? nfirst - nsg.v[k].a : 0)) goto oom;
            if ((st = tk_pre_tokenize(t, &pieces, &scratch, md))) break;
            for (size_t p = 0; p < pieces.n && !st; p++) st = tk_bpe_encode(t, pieces.text.p + pieces.off[p], pieces.len[p], &ids, &nids, &cap);
        }
    }
    goto done;
oom:
    st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
done:
    pcre2_match_data_free(md);
    free(raw.v), free(nsg.v);
    tk_buf_free(&norm);
    tk_pieces_free(&pieces), tk_pieces_free(&scratch);
    if (st) free(ids);
    else *out_ids = ids, *out_n = nids;
    return st;
}
