/* The Jinja subset of Hugging Face chat templates: a tag scanner (whitespace control,
 * trim_blocks, lstrip_blocks as transformers sets them), a recursive-descent parser into a small
 * AST, and an evaluator over cJSON values (undefined is a cJSON item of type cJSON_Invalid,
 * callables are cJSON_Raw items naming the function). No C Jinja library is packaged. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "clnpu/chat_template.h"
#include "../common/error.h"
#include "../common/file_read.h"
#include "tokenizer_internal.h" /* tk_buf */

/* ---------------- AST ---------------- */

enum {
    /* statements */
    S_TEXT, S_OUT, S_IF, S_FOR, S_SET,
    /* expressions */
    E_STR, E_NUM, E_BOOL, E_NONE, E_NAME, E_ATTR, E_INDEX, E_SLICE, E_CALL, E_FILTER, E_TEST, E_BIN, E_NOT, E_NEG,
    E_AND, E_OR, E_COND, E_LIST, E_DICT
};

typedef struct node node;
typedef struct nlist {
    node **v;
    size_t n;
} nlist;

struct node {
    int kind, line;
    char *s;          /* text, name, operator, filter / test / attribute name; S_SET: the attribute or NULL */
    char *s2;         /* S_FOR: second loop variable; S_SET: variable */
    double num;
    bool neg;         /* E_TEST: `is not` */
    node *a, *b, *c, *d;
    nlist args, kwnames; /* E_CALL / E_FILTER / E_TEST args (kwnames: E_STR names, NULL for positional) */
    nlist body, body2;   /* S_IF: conditions in args, bodies in body (each an S_TEXT-less list node), else in body2 */
};

struct clnpu_chat_template {
    char origin[512];
    char *bos, *eos;
    nlist root;
    node **pool; /* every node, freed together */
    size_t npool, cap;
};

/* ---------------- errors ---------------- */

typedef struct ctx {
    const clnpu_chat_template *t;
    bool err;
} ctx;

static clnpu_status failf(const char *origin, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static clnpu_status failf(const char *origin, int line, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return clnpu_fail(CLNPU_ERR_PARSE, "%s: chat template line %d: %s", origin, line, msg);
}

/* ---------------- scanning the template into chunks ---------------- */

typedef struct chunk {
    int kind; /* 0 text, 1 {{ }}, 2 {% %} */
    char *text; /* text: owned copy; tags: the inner source (owned) */
    int line;
} chunk;

static int count_lines(const char *a, const char *b)
{
    int n = 0;
    for (; a < b; a++) n += *a == '\n';
    return n;
}

static clnpu_status scan(const char *src, const char *origin, chunk **out, size_t *nout)
{
    size_t cap = 64, n = 0;
    chunk *c = malloc(cap * sizeof *c);
    if (!c) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    const char *p = src;
    int line = 1;
    bool strip_next = false, trim_nl = false;
    for (;;) {
        const char *open = p;
        while ((open = strchr(open, '{')) && open[1] != '{' && open[1] != '%' && open[1] != '#') open++;
        const char *tend = open ? open : p + strlen(p);
        /* text before the tag, with whitespace control applied */
        const char *ta = p, *tb = tend;
        if (strip_next) while (ta < tb && isspace((unsigned char)*ta)) ta++;
        else if (trim_nl) {
            if (ta < tb && *ta == '\n') ta++;
            else if (tb - ta >= 2 && ta[0] == '\r' && ta[1] == '\n') ta += 2;
        }
        if (open) {
            char k = open[1];
            if (open[2] == '-') while (tb > ta && isspace((unsigned char)tb[-1])) tb--;
            else if ((k == '%' || k == '#') && open[2] != '+') { /* lstrip_blocks: indentation before a block tag */
                const char *q = tb;
                while (q > ta && (q[-1] == ' ' || q[-1] == '\t')) q--;
                if (q == src || q[-1] == '\n') tb = q;
            }
        }
        if (tb > ta) {
            if (n + 2 > cap) {
                chunk *nc = realloc(c, (cap *= 2) * sizeof *nc);
                if (!nc) goto oom;
                c = nc;
            }
            c[n].kind = 0, c[n].line = line + count_lines(p, ta);
            if (!(c[n].text = strndup(ta, (size_t)(tb - ta)))) goto oom;
            n++;
        }
        if (!open) break;
        line += count_lines(p, open);
        char k = open[1];
        const char *close_pat = k == '{' ? "}}" : k == '%' ? "%}" : "#}";
        const char *in = open + 2 + (open[2] == '-' || open[2] == '+');
        const char *close = strstr(in, close_pat);
        if (!close) {
            for (size_t i = 0; i < n; i++) free(c[i].text);
            free(c);
            return failf(origin, line, "'%.2s' is never closed", open);
        }
        const char *ie = close;
        strip_next = close > in && close[-1] == '-';
        if (strip_next) ie--;
        trim_nl = !strip_next && k != '{'; /* trim_blocks */
        if (k != '#') {
            if (n + 2 > cap) {
                chunk *nc = realloc(c, (cap *= 2) * sizeof *nc);
                if (!nc) goto oom;
                c = nc;
            }
            c[n].kind = k == '{' ? 1 : 2, c[n].line = line;
            if (!(c[n].text = strndup(in, (size_t)(ie - in)))) goto oom;
            n++;
        }
        line += count_lines(open, close);
        p = close + 2;
    }
    *out = c, *nout = n;
    return CLNPU_OK;
oom:
    for (size_t i = 0; i < n; i++) free(c[i].text);
    free(c);
    return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
}

/* ---------------- expression tokens ---------------- */

enum { T_END, T_NAME, T_STR, T_NUM, T_OP };
typedef struct tok {
    int kind;
    char *s; /* name, string value, or operator */
    double num;
} tok;

typedef struct parser {
    clnpu_chat_template *t;
    chunk *ch;
    size_t nch, ci; /* the chunk being parsed */
    tok *tk;
    size_t ntk, ti;
    int line;
    bool err;
} parser;

static void perr(parser *P, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void perr(parser *P, const char *fmt, ...)
{
    if (P->err) return;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    failf(P->t->origin, P->line, "%s", msg);
    P->err = true;
}

static void free_toks(parser *P)
{
    for (size_t i = 0; i < P->ntk; i++) free(P->tk[i].s);
    free(P->tk);
    P->tk = NULL, P->ntk = P->ti = 0;
}

static bool lex(parser *P, const char *s)
{
    free_toks(P);
    size_t cap = 16;
    P->tk = calloc(cap, sizeof *P->tk);
    while (P->tk) {
        while (isspace((unsigned char)*s)) s++;
        if (P->ntk + 1 >= cap) {
            tok *nt = realloc(P->tk, (cap *= 2) * sizeof *nt);
            if (!nt) break;
            P->tk = nt;
        }
        tok *t = &P->tk[P->ntk];
        *t = (tok){0};
        if (!*s) {
            t->kind = T_END;
            P->ntk++;
            return true;
        }
        if (isalpha((unsigned char)*s) || *s == '_') {
            const char *b = s;
            while (isalnum((unsigned char)*s) || *s == '_') s++;
            t->kind = T_NAME, t->s = strndup(b, (size_t)(s - b));
        } else if (isdigit((unsigned char)*s)) {
            char *end;
            t->kind = T_NUM, t->num = strtod(s, &end);
            t->s = strndup(s, (size_t)(end - s));
            s = end;
        } else if (*s == '\'' || *s == '"') {
            char q = *s++;
            tk_buf b = {0};
            tk_buf_put(&b, "", 0);
            while (*s && *s != q) {
                char c = *s++;
                if (c == '\\' && *s) {
                    c = *s++;
                    c = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c == '0' ? '\0' : c;
                }
                tk_buf_put(&b, &c, 1);
            }
            if (*s != q) {
                tk_buf_free(&b);
                perr(P, "unterminated string literal");
                return false;
            }
            s++;
            t->kind = T_STR, t->s = b.p;
        } else {
            static const char *ops[] = {"==", "!=", "<=", ">=", "//", "**", NULL};
            size_t l = 1;
            for (int i = 0; ops[i]; i++)
                if (!strncmp(s, ops[i], 2)) l = 2;
            if (l == 1 && !strchr("()[]{}.,:|~+-*/%<>=", *s)) {
                perr(P, "unexpected character '%c'", *s);
                return false;
            }
            t->kind = T_OP, t->s = strndup(s, l);
            s += l;
        }
        P->ntk++;
    }
    perr(P, "out of host memory");
    return false;
}

static tok *peek(parser *P) { return &P->tk[P->ti]; }
static bool is_op(parser *P, const char *op) { return peek(P)->kind == T_OP && !strcmp(peek(P)->s, op); }
static bool is_kw(parser *P, const char *kw) { return peek(P)->kind == T_NAME && !strcmp(peek(P)->s, kw); }
static bool is_kw_at(parser *P, size_t k, const char *kw)
{
    return P->ti + k < P->ntk && P->tk[P->ti + k].kind == T_NAME && !strcmp(P->tk[P->ti + k].s, kw);
}
static void advance(parser *P)
{
    if (P->tk[P->ti].kind != T_END) P->ti++;
}
static bool expect_op(parser *P, const char *op)
{
    if (is_op(P, op)) return advance(P), true;
    perr(P, "expected '%s' but found '%s'", op, peek(P)->kind == T_END ? "end of tag" : peek(P)->s);
    return false;
}

static node *mk(parser *P, int kind)
{
    if (P->err) return NULL;
    clnpu_chat_template *t = P->t;
    if (t->npool == t->cap) {
        size_t c = t->cap ? t->cap * 2 : 64;
        node **np = realloc(t->pool, c * sizeof *np);
        if (!np) return perr(P, "out of host memory"), NULL;
        t->pool = np, t->cap = c;
    }
    node *n = calloc(1, sizeof *n);
    if (!n) return perr(P, "out of host memory"), NULL;
    t->pool[t->npool++] = n;
    n->kind = kind, n->line = P->line;
    return n;
}

static void nl_add(parser *P, nlist *l, node *n)
{
    node **v = realloc(l->v, (l->n + 1) * sizeof *v);
    if (!v) return perr(P, "out of host memory");
    l->v = v;
    l->v[l->n++] = n;
}

static node *p_expr(parser *P);

static void p_args(parser *P, node *n)
{
    /* after '(' : positional and name=value arguments up to ')' */
    while (!P->err && !is_op(P, ")")) {
        node *name = NULL;
        if (peek(P)->kind == T_NAME && P->ti + 1 < P->ntk && P->tk[P->ti + 1].kind == T_OP && !strcmp(P->tk[P->ti + 1].s, "=")) {
            name = mk(P, E_STR);
            if (name) name->s = strdup(peek(P)->s);
            advance(P), advance(P);
        }
        nl_add(P, &n->args, p_expr(P));
        nl_add(P, &n->kwnames, name);
        if (!is_op(P, ",")) break;
        advance(P);
    }
    expect_op(P, ")");
}

static node *p_primary(parser *P)
{
    tok *t = peek(P);
    node *n = NULL;
    if (t->kind == T_STR) {
        n = mk(P, E_STR);
        if (n) n->s = strdup(t->s);
        advance(P);
        while (n && n->s && peek(P)->kind == T_STR) { /* adjacent literals concatenate (n: NULL past a failure) */
            size_t a = strlen(n->s), b = strlen(peek(P)->s);
            char *s = realloc(n->s, a + b + 1);
            if (s) memcpy(s + a, peek(P)->s, b + 1), n->s = s;
            advance(P);
        }
    } else if (t->kind == T_NUM) {
        n = mk(P, E_NUM);
        if (n) n->num = t->num;
        advance(P);
    } else if (t->kind == T_NAME) {
        const char *s = t->s;
        if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "false") || !strcmp(s, "False")) {
            n = mk(P, E_BOOL);
            if (n) n->num = s[0] == 't' || s[0] == 'T';
        } else if (!strcmp(s, "none") || !strcmp(s, "None")) {
            n = mk(P, E_NONE);
        } else {
            n = mk(P, E_NAME);
            if (n) n->s = strdup(s);
        }
        advance(P);
    } else if (is_op(P, "(")) {
        advance(P);
        n = p_expr(P);
        if (is_op(P, ",")) return perr(P, "tuples are not supported"), NULL;
        expect_op(P, ")");
    } else if (is_op(P, "[")) {
        advance(P);
        n = mk(P, E_LIST);
        while (!P->err && !is_op(P, "]")) {
            nl_add(P, &n->args, p_expr(P));
            if (!is_op(P, ",")) break;
            advance(P);
        }
        expect_op(P, "]");
    } else if (is_op(P, "{")) {
        advance(P);
        n = mk(P, E_DICT);
        while (!P->err && !is_op(P, "}")) {
            nl_add(P, &n->kwnames, p_expr(P));
            expect_op(P, ":");
            nl_add(P, &n->args, p_expr(P));
            if (!is_op(P, ",")) break;
            advance(P);
        }
        expect_op(P, "}");
    } else
        perr(P, "unexpected '%s' in an expression", t->kind == T_END ? "end of tag" : t->s);
    return n;
}

static node *p_postfix(parser *P)
{
    node *n = p_primary(P);
    while (!P->err) {
        if (is_op(P, ".")) {
            advance(P);
            if (peek(P)->kind != T_NAME) return perr(P, "expected an attribute name after '.'"), NULL;
            node *a = mk(P, E_ATTR);
            if (!a) return NULL;
            a->a = n, a->s = strdup(peek(P)->s);
            advance(P);
            n = a;
        } else if (is_op(P, "[")) {
            advance(P);
            node *x = mk(P, E_INDEX);
            if (!x) return NULL;
            x->a = n;
            node *parts[3] = {NULL, NULL, NULL};
            int np = 0;
            bool slice = false;
            while (!P->err && np < 3) {
                if (!is_op(P, ":") && !is_op(P, "]")) parts[np] = p_expr(P);
                if (is_op(P, ":")) {
                    slice = true;
                    advance(P);
                    np++;
                    continue;
                }
                break;
            }
            expect_op(P, "]");
            if (slice) x->kind = E_SLICE, x->b = parts[0], x->c = parts[1], x->d = parts[2];
            else x->b = parts[0];
            if (!slice && !x->b) return perr(P, "empty index"), NULL;
            n = x;
        } else if (is_op(P, "(")) {
            advance(P);
            node *c = mk(P, E_CALL);
            if (!c) return NULL;
            c->a = n;
            p_args(P, c);
            n = c;
        } else
            break;
    }
    return n;
}

/* filters and tests bind to the primary they follow */
static node *p_filtered(parser *P)
{
    node *n = p_postfix(P);
    while (!P->err) {
        if (is_op(P, "|")) {
            advance(P);
            if (peek(P)->kind != T_NAME) return perr(P, "expected a filter name after '|'"), NULL;
            node *f = mk(P, E_FILTER);
            if (!f) return NULL;
            f->a = n, f->s = strdup(peek(P)->s);
            advance(P);
            if (is_op(P, "(")) advance(P), p_args(P, f);
            n = f;
        } else if (is_kw(P, "is")) {
            advance(P);
            node *f = mk(P, E_TEST);
            if (!f) return NULL;
            if (is_kw(P, "not")) f->neg = true, advance(P);
            if (peek(P)->kind != T_NAME) return perr(P, "expected a test name after 'is'"), NULL;
            f->a = n, f->s = strdup(peek(P)->s);
            advance(P);
            if (is_op(P, "(")) advance(P), p_args(P, f);
            else if (peek(P)->kind == T_STR || peek(P)->kind == T_NUM) nl_add(P, &f->args, p_primary(P)), nl_add(P, &f->kwnames, NULL);
            n = f;
        } else
            break;
    }
    return n;
}

static node *p_unary(parser *P)
{
    if (is_op(P, "-")) {
        advance(P);
        node *n = mk(P, E_NEG);
        if (n) n->a = p_unary(P);
        return n;
    }
    if (is_op(P, "+")) return advance(P), p_unary(P);
    return p_filtered(P);
}

static node *bin(parser *P, const char *op, node *a, node *b)
{
    node *n = mk(P, E_BIN);
    if (!n) return NULL;
    n->s = strdup(op), n->a = a, n->b = b;
    return n;
}

static node *p_mul(parser *P)
{
    node *n = p_unary(P);
    while (!P->err && (is_op(P, "*") || is_op(P, "/") || is_op(P, "//") || is_op(P, "%"))) {
        char op[3];
        snprintf(op, sizeof op, "%s", peek(P)->s);
        advance(P);
        n = bin(P, op, n, p_unary(P));
    }
    if (is_op(P, "**")) perr(P, "operator '**' is not supported");
    return n;
}

static node *p_add(parser *P)
{
    node *n = p_mul(P);
    while (!P->err && (is_op(P, "+") || is_op(P, "-"))) {
        char op[2] = {peek(P)->s[0], 0};
        advance(P);
        n = bin(P, op, n, p_mul(P));
    }
    return n;
}

static node *p_concat(parser *P)
{
    node *n = p_add(P);
    while (!P->err && is_op(P, "~")) advance(P), n = bin(P, "~", n, p_add(P));
    return n;
}

static node *p_compare(parser *P)
{
    node *n = p_concat(P);
    for (;;) {
        if (P->err) return NULL;
        static const char *ops[] = {"==", "!=", "<", ">", "<=", ">=", NULL};
        const char *op = NULL;
        for (int i = 0; ops[i]; i++)
            if (is_op(P, ops[i])) op = ops[i];
        if (op) {
            advance(P);
            n = bin(P, op, n, p_concat(P));
        } else if (is_kw(P, "in")) {
            advance(P);
            n = bin(P, "in", n, p_concat(P));
        } else if (is_kw(P, "not") && is_kw_at(P, 1, "in")) {
            advance(P), advance(P);
            n = bin(P, "notin", n, p_concat(P));
        } else
            return n;
    }
}

static node *p_not(parser *P)
{
    if (is_kw(P, "not")) {
        advance(P);
        node *n = mk(P, E_NOT);
        if (n) n->a = p_not(P);
        return n;
    }
    return p_compare(P);
}

static node *p_and(parser *P)
{
    node *n = p_not(P);
    while (!P->err && is_kw(P, "and")) {
        advance(P);
        node *x = mk(P, E_AND);
        if (!x) return NULL;
        x->a = n, x->b = p_not(P), n = x;
    }
    return n;
}

static node *p_or(parser *P)
{
    node *n = p_and(P);
    while (!P->err && is_kw(P, "or")) {
        advance(P);
        node *x = mk(P, E_OR);
        if (!x) return NULL;
        x->a = n, x->b = p_and(P), n = x;
    }
    return n;
}

static node *p_expr(parser *P)
{
    node *n = p_or(P);
    if (!P->err && is_kw(P, "if")) {
        advance(P);
        node *c = mk(P, E_COND);
        if (!c) return NULL;
        c->a = n, c->b = p_or(P);
        if (is_kw(P, "else")) advance(P), c->c = p_expr(P);
        n = c;
    }
    return n;
}

static bool at_end(parser *P)
{
    if (peek(P)->kind == T_END) return true;
    perr(P, "unexpected '%s' at the end of the tag", peek(P)->s);
    return false;
}

/* Parse statements up to a block tag whose first word is in `ends` ("elif", "else", ...); returns
 * that word (the tokens after it are left for the caller), or NULL at the end of the template. */
static const char *p_body(parser *P, nlist *out, const char *const *ends)
{
    while (!P->err && P->ci < P->nch) {
        chunk *c = &P->ch[P->ci++];
        P->line = c->line;
        if (c->kind == 0) {
            node *n = mk(P, S_TEXT);
            if (n) n->s = strdup(c->text);
            nl_add(P, out, n);
            continue;
        }
        if (!lex(P, c->text)) return NULL;
        if (c->kind == 1) {
            node *n = mk(P, S_OUT);
            if (n) n->a = p_expr(P);
            at_end(P);
            nl_add(P, out, n);
            continue;
        }
        if (peek(P)->kind != T_NAME) {
            perr(P, "a block tag must start with a keyword");
            return NULL;
        }
        const char *kw = peek(P)->s;
        for (int i = 0; ends && ends[i]; i++)
            if (!strcmp(kw, ends[i])) return advance(P), ends[i];
        advance(P);
        if (!strcmp(kw, "if")) {
            node *n = mk(P, S_IF);
            if (!n) return NULL;
            static const char *const if_ends[] = {"elif", "else", "endif", NULL};
            nl_add(P, &n->args, p_expr(P));
            at_end(P);
            for (;;) {
                node *blk = mk(P, S_IF); /* a holder for one branch's body */
                if (!blk) return NULL;
                int line = P->line;
                const char *e = p_body(P, &blk->body, if_ends);
                nl_add(P, &n->body, blk);
                if (P->err) return NULL;
                if (!e) {
                    P->line = line;
                    perr(P, "'if' is never closed with 'endif'");
                    return NULL;
                }
                if (!strcmp(e, "endif")) {
                    at_end(P);
                    break;
                }
                if (!strcmp(e, "else")) {
                    at_end(P);
                    static const char *const else_ends[] = {"endif", NULL};
                    if (!p_body(P, &n->body2, else_ends) && !P->err) perr(P, "'else' is never closed with 'endif'");
                    at_end(P);
                    break;
                }
                nl_add(P, &n->args, p_expr(P)); /* elif */
                at_end(P);
            }
            nl_add(P, out, n);
        } else if (!strcmp(kw, "for")) {
            node *n = mk(P, S_FOR);
            if (!n) return NULL;
            if (peek(P)->kind != T_NAME) return perr(P, "expected a loop variable after 'for'"), NULL;
            n->s = strdup(peek(P)->s);
            advance(P);
            if (is_op(P, ",")) {
                advance(P);
                if (peek(P)->kind != T_NAME) return perr(P, "expected a second loop variable"), NULL;
                n->s2 = strdup(peek(P)->s);
                advance(P);
            }
            if (!is_kw(P, "in")) return perr(P, "expected 'in' in 'for'"), NULL;
            advance(P);
            n->a = p_or(P); /* not p_expr: `for x in y if cond` would be a filtered loop */
            if (is_kw(P, "if")) return perr(P, "unsupported construct 'for ... if' (a filtered loop)"), NULL;
            if (is_kw(P, "recursive")) return perr(P, "unsupported construct 'for ... recursive'"), NULL;
            at_end(P);
            static const char *const for_ends[] = {"else", "endfor", NULL};
            int line = P->line;
            const char *e = p_body(P, &n->body, for_ends);
            if (!P->err && e && !strcmp(e, "else")) {
                at_end(P);
                static const char *const fe[] = {"endfor", NULL};
                e = p_body(P, &n->body2, fe);
            }
            if (P->err) return NULL;
            if (!e) {
                P->line = line;
                perr(P, "'for' is never closed with 'endfor'");
                return NULL;
            }
            at_end(P);
            nl_add(P, out, n);
        } else if (!strcmp(kw, "set")) {
            node *n = mk(P, S_SET);
            if (!n) return NULL;
            if (peek(P)->kind != T_NAME) return perr(P, "expected a variable after 'set'"), NULL;
            n->s2 = strdup(peek(P)->s);
            advance(P);
            if (is_op(P, ".")) {
                advance(P);
                if (peek(P)->kind != T_NAME) return perr(P, "expected an attribute after '.'"), NULL;
                n->s = strdup(peek(P)->s);
                advance(P);
            }
            if (is_op(P, ",")) return perr(P, "unsupported construct 'set' with several targets"), NULL;
            if (!is_op(P, "=")) return perr(P, "unsupported construct 'set' block (without '=')"), NULL;
            advance(P);
            n->a = p_expr(P);
            at_end(P);
            nl_add(P, out, n);
        } else {
            perr(P, "unsupported construct '%s'", kw);
            return NULL;
        }
    }
    return NULL;
}

void clnpu_chat_template_free(clnpu_chat_template *t)
{
    if (!t) return;
    for (size_t i = 0; i < t->npool; i++) {
        node *n = t->pool[i];
        free(n->s), free(n->s2), free(n->args.v), free(n->kwnames.v), free(n->body.v), free(n->body2.v);
        free(n);
    }
    free(t->pool), free(t->root.v), free(t->bos), free(t->eos);
    free(t);
}

clnpu_status clnpu_chat_template_parse(const char *source, const char *origin, clnpu_chat_template **out)
{
    if (!source || !out) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_chat_template_parse: NULL argument");
    *out = NULL;
    clnpu_chat_template *t = calloc(1, sizeof *t);
    if (!t) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    snprintf(t->origin, sizeof t->origin, "%s", origin ? origin : "chat template");
    parser P = {.t = t, .line = 1};
    /* Jinja drops one trailing newline of a template (keep_trailing_newline is off) */
    size_t sl = strlen(source);
    char *src = strndup(source, sl);
    if (!src) {
        free(t);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    if (sl && src[sl - 1] == '\n') src[--sl] = '\0';
    if (sl && src[sl - 1] == '\r') src[--sl] = '\0';
    clnpu_status st = scan(src, t->origin, &P.ch, &P.nch);
    free(src);
    if (st) {
        free(t);
        return st;
    }
    static const char *const none[] = {"endif", "endfor", "elif", "else", NULL};
    const char *stray = p_body(&P, &t->root, none);
    if (stray && !P.err) perr(&P, "'%s' without a matching opening tag", stray);
    free_toks(&P);
    for (size_t i = 0; i < P.nch; i++) free(P.ch[i].text);
    free(P.ch);
    if (P.err) {
        clnpu_chat_template_free(t);
        return CLNPU_ERR_PARSE;
    }
    *out = t;
    return CLNPU_OK;
}

clnpu_status clnpu_chat_template_load(const char *dir, clnpu_chat_template **out)
{
    if (!dir || !out) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_chat_template_load: NULL argument");
    *out = NULL;
    char path[4096], cfgpath[4096];
    snprintf(cfgpath, sizeof cfgpath, "%s/tokenizer_config.json", dir);
    char *text = NULL, *cfg = NULL;
    size_t len;
    cJSON *j = NULL;
    clnpu_status st = CLNPU_OK;
    if (!clnpu_file_read_all(cfgpath, &cfg, &len)) {
        j = cJSON_ParseWithLength(cfg, len);
        if (!cJSON_IsObject(j)) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: not a JSON object", cfgpath);
            goto done;
        }
    }
    clnpu_error_clear();
    snprintf(path, sizeof path, "%s/chat_template.jinja", dir);
    const char *src = NULL, *origin = path;
    if (!clnpu_file_read_all(path, &text, &len)) src = text;
    else if (j) {
        clnpu_error_clear();
        const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template"), *e;
        if (cJSON_IsString(ct)) src = ct->valuestring;
        const cJSON *list = cJSON_IsArray(ct) ? ct : NULL;
        cJSON_ArrayForEach(e, list) {
            const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "name"));
            if (name && !strcmp(name, "default")) src = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "template"));
        }
        origin = cfgpath;
    }
    if (!src) {
        st = clnpu_fail(CLNPU_ERR_NOT_FOUND, "%s: no chat template (neither chat_template.jinja nor \"chat_template\" in tokenizer_config.json)", dir);
        goto done;
    }
    if ((st = clnpu_chat_template_parse(src, origin, out))) goto done;
    /* bos_token / eos_token: a string, or an AddedToken object with "content" */
    const char *keys[2] = {"bos_token", "eos_token"};
    for (int k = 0; k < 2 && j; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, keys[k]);
        const char *s = cJSON_IsString(v) ? v->valuestring : cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "content"));
        if (s) {
            char **dst = k ? &(*out)->eos : &(*out)->bos;
            *dst = strdup(s);
        }
    }
done:
    cJSON_Delete(j);
    free(cfg), free(text);
    return st;
}

/* ---------------- values ---------------- */

static cJSON *undef(void)
{
    cJSON *u = cJSON_CreateNull();
    if (u) u->type = cJSON_Invalid;
    return u;
}
static bool is_undef(const cJSON *v) { return !v || (v->type & 0xFF) == cJSON_Invalid; }
static cJSON *func(const char *name, cJSON *self)
{
    cJSON *f = cJSON_CreateRaw(name);
    if (f && self) f->child = self; /* a bound method: the object it was read from */
    return f;
}

static bool truthy(const cJSON *v)
{
    if (is_undef(v) || cJSON_IsNull(v) || cJSON_IsFalse(v)) return false;
    if (cJSON_IsNumber(v)) return v->valuedouble != 0;
    if (cJSON_IsString(v)) return v->valuestring[0] != '\0';
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) return v->child != NULL;
    return true;
}

static void put_num(tk_buf *b, double d)
{
    char s[64];
    if (d == floor(d) && fabs(d) < 1e15) snprintf(s, sizeof s, "%.0f", d);
    else {
        snprintf(s, sizeof s, "%.17g", d);
        for (int p = 1; p < 17; p++) { /* the shortest that reads back, as Python's repr */
            char t[64];
            snprintf(t, sizeof t, "%.*g", p, d);
            if (strtod(t, NULL) == d) {
                memcpy(s, t, strlen(t) + 1);
                break;
            }
        }
        if (!strchr(s, '.') && !strchr(s, 'e') && !strchr(s, 'n')) strcat(s, ".0");
    }
    tk_buf_put(b, s, strlen(s));
}

/* Python's repr of a string (inside lists and dicts) */
static void put_repr_str(tk_buf *b, const char *s)
{
    char q = strchr(s, '\'') && !strchr(s, '"') ? '"' : '\'';
    tk_buf_put(b, &q, 1);
    for (; *s; s++) {
        const char *e = *s == '\n' ? "\\n" : *s == '\t' ? "\\t" : *s == '\r' ? "\\r" : *s == '\\' ? "\\\\" : *s == q ? (q == '\'' ? "\\'" : "\\\"") : NULL;
        if (e) tk_buf_put(b, e, 2);
        else tk_buf_put(b, s, 1);
    }
    tk_buf_put(b, &q, 1);
}

static void put_str(tk_buf *b, const cJSON *v, bool repr)
{
    if (is_undef(v)) return;
    if (cJSON_IsString(v)) {
        if (repr) put_repr_str(b, v->valuestring);
        else tk_buf_put(b, v->valuestring, strlen(v->valuestring));
    } else if (cJSON_IsNumber(v)) put_num(b, v->valuedouble);
    else if (cJSON_IsTrue(v)) tk_buf_put(b, "True", 4);
    else if (cJSON_IsFalse(v)) tk_buf_put(b, "False", 5);
    else if (cJSON_IsNull(v)) tk_buf_put(b, "None", 4);
    else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        bool arr = cJSON_IsArray(v);
        tk_buf_put(b, arr ? "[" : "{", 1);
        for (const cJSON *e = v->child; e; e = e->next) {
            if (e != v->child) tk_buf_put(b, ", ", 2);
            if (!arr) put_repr_str(b, e->string), tk_buf_put(b, ": ", 2);
            put_str(b, e, true);
        }
        tk_buf_put(b, arr ? "]" : "}", 1);
    } else if (cJSON_IsRaw(v))
        tk_buf_put(b, "<function>", 10);
}

/* json.dumps(v, ensure_ascii=False[, indent]) */
static void put_json(tk_buf *b, const cJSON *v, int indent, int depth)
{
    if (cJSON_IsString(v)) {
        tk_buf_put(b, "\"", 1);
        for (const unsigned char *s = (const unsigned char *)v->valuestring; *s; s++) {
            char e[8];
            if (*s == '"') tk_buf_put(b, "\\\"", 2);
            else if (*s == '\\') tk_buf_put(b, "\\\\", 2);
            else if (*s == '\n') tk_buf_put(b, "\\n", 2);
            else if (*s == '\r') tk_buf_put(b, "\\r", 2);
            else if (*s == '\t') tk_buf_put(b, "\\t", 2);
            else if (*s == '\b') tk_buf_put(b, "\\b", 2);
            else if (*s == '\f') tk_buf_put(b, "\\f", 2);
            else if (*s < 0x20) snprintf(e, sizeof e, "\\u%04x", *s), tk_buf_put(b, e, 6);
            else tk_buf_put(b, s, 1);
        }
        tk_buf_put(b, "\"", 1);
    } else if (cJSON_IsNumber(v)) put_num(b, v->valuedouble);
    else if (cJSON_IsTrue(v)) tk_buf_put(b, "true", 4);
    else if (cJSON_IsFalse(v)) tk_buf_put(b, "false", 5);
    else if (cJSON_IsArray(v) || cJSON_IsObject(v)) {
        bool arr = cJSON_IsArray(v);
        tk_buf_put(b, arr ? "[" : "{", 1);
        for (const cJSON *e = v->child; e; e = e->next) {
            if (e != v->child) tk_buf_put(b, indent >= 0 ? "," : ", ", indent >= 0 ? 1 : 2);
            if (indent >= 0) {
                tk_buf_put(b, "\n", 1);
                for (int i = 0; i < indent * (depth + 1); i++) tk_buf_put(b, " ", 1);
            }
            if (!arr) {
                cJSON k = {.type = cJSON_String, .valuestring = e->string};
                put_json(b, &k, indent, depth + 1);
                tk_buf_put(b, ": ", 2);
            }
            put_json(b, e, indent, depth + 1);
        }
        if (indent >= 0 && v->child) {
            tk_buf_put(b, "\n", 1);
            for (int i = 0; i < indent * depth; i++) tk_buf_put(b, " ", 1);
        }
        tk_buf_put(b, arr ? "]" : "}", 1);
    } else
        tk_buf_put(b, "null", 4);
}

/* ---------------- evaluation ---------------- */

typedef struct scope {
    cJSON *vars; /* an object */
    struct scope *up;
} scope;

typedef struct rctx {
    const clnpu_chat_template *t;
    scope *sc;
    tk_buf out;
    bool err;
} rctx;

static cJSON *rerr(rctx *R, const node *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static cJSON *rerr(rctx *R, const node *n, const char *fmt, ...)
{
    if (R->err) return NULL;
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    failf(R->t->origin, n ? n->line : 0, "%s", msg);
    R->err = true;
    return NULL;
}

static cJSON *lookup(rctx *R, const char *name)
{
    for (scope *s = R->sc; s; s = s->up) {
        cJSON *v = cJSON_GetObjectItemCaseSensitive(s->vars, name);
        if (v) return v;
    }
    return NULL;
}

static void set_var(scope *s, const char *name, cJSON *v)
{
    if (cJSON_GetObjectItemCaseSensitive(s->vars, name)) cJSON_ReplaceItemInObjectCaseSensitive(s->vars, name, v);
    else cJSON_AddItemToObject(s->vars, name, v);
}

static cJSON *eval(rctx *R, const node *n);

static const char *type_name(const cJSON *v)
{
    return is_undef(v) ? "undefined" : cJSON_IsNull(v) ? "none" : cJSON_IsBool(v) ? "boolean" : cJSON_IsNumber(v) ? "number"
           : cJSON_IsString(v) ? "string" : cJSON_IsArray(v) ? "list" : cJSON_IsObject(v) ? "dict" : "function";
}

static cJSON *get_member(rctx *R, const node *n, cJSON *obj, const cJSON *key)
{
    if (is_undef(obj)) return rerr(R, n, "cannot read %s%s%s of an undefined value", cJSON_IsString(key) ? "'" : "",
                                   cJSON_IsString(key) ? key->valuestring : "an index", cJSON_IsString(key) ? "'" : "");
    if (cJSON_IsObject(obj) && cJSON_IsString(key)) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key->valuestring);
        if (v) return cJSON_Duplicate(v, true);
        static const char *dict_methods[] = {"get", "items", "keys", "values", NULL};
        for (int i = 0; dict_methods[i]; i++)
            if (!strcmp(key->valuestring, dict_methods[i])) return func(dict_methods[i], cJSON_Duplicate(obj, true));
        return undef();
    }
    if (cJSON_IsString(obj) && cJSON_IsString(key)) {
        static const char *str_methods[] = {"strip", "lstrip", "rstrip", "startswith", "endswith", "split", "upper", "lower", "replace", NULL};
        for (int i = 0; str_methods[i]; i++)
            if (!strcmp(key->valuestring, str_methods[i])) return func(str_methods[i], cJSON_Duplicate(obj, true));
        return rerr(R, n, "unsupported string method '%s'", key->valuestring);
    }
    if ((cJSON_IsArray(obj) || cJSON_IsString(obj)) && cJSON_IsNumber(key)) {
        int len = cJSON_IsArray(obj) ? cJSON_GetArraySize(obj) : (int)strlen(obj->valuestring);
        int i = (int)key->valuedouble;
        if (i < 0) i += len;
        if (i < 0 || i >= len) return undef();
        if (cJSON_IsArray(obj)) return cJSON_Duplicate(cJSON_GetArrayItem(obj, i), true);
        char c[2] = {obj->valuestring[i], 0};
        return cJSON_CreateString(c);
    }
    if (cJSON_IsArray(obj) && cJSON_IsString(key)) return undef();
    return rerr(R, n, "cannot index a %s with a %s", type_name(obj), type_name(key));
}

static cJSON *slice(rctx *R, const node *n, cJSON *obj, const cJSON *a, const cJSON *b, const cJSON *c)
{
    bool arr = cJSON_IsArray(obj);
    if (!arr && !cJSON_IsString(obj)) return rerr(R, n, "cannot slice a %s", type_name(obj));
    long len = arr ? cJSON_GetArraySize(obj) : (long)strlen(obj->valuestring);
    long step = c && cJSON_IsNumber(c) ? (long)c->valuedouble : 1;
    if (!step) return rerr(R, n, "slice step cannot be zero");
    long lo, hi;
    /* Python's slice.indices */
    if (step > 0) {
        lo = a && cJSON_IsNumber(a) ? (long)a->valuedouble : 0;
        hi = b && cJSON_IsNumber(b) ? (long)b->valuedouble : len;
        if (lo < 0) lo += len;
        if (hi < 0) hi += len;
        lo = lo < 0 ? 0 : lo > len ? len : lo;
        hi = hi < 0 ? 0 : hi > len ? len : hi;
    } else {
        lo = a && cJSON_IsNumber(a) ? (long)a->valuedouble : len - 1;
        hi = b && cJSON_IsNumber(b) ? (long)b->valuedouble : -len - 1;
        if (lo < 0) lo += len;
        if (hi < -1) hi += len;
        if (hi < -1) hi = -1;
        lo = lo < -1 ? -1 : lo >= len ? len - 1 : lo;
    }
    cJSON *r = arr ? cJSON_CreateArray() : NULL;
    tk_buf s = {0};
    tk_buf_put(&s, "", 0);
    for (long i = lo; step > 0 ? i < hi : i > hi; i += step) {
        if (arr) cJSON_AddItemToArray(r, cJSON_Duplicate(cJSON_GetArrayItem(obj, (int)i), true));
        else tk_buf_put(&s, obj->valuestring + i, 1);
    }
    if (!arr) r = cJSON_CreateString(s.p);
    tk_buf_free(&s);
    return r;
}

static int cmp_values(const cJSON *a, const cJSON *b, bool *ok)
{
    *ok = true;
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b)) return (a->valuedouble > b->valuedouble) - (a->valuedouble < b->valuedouble);
    if (cJSON_IsBool(a) && cJSON_IsBool(b)) return cJSON_IsTrue(a) - cJSON_IsTrue(b);
    if (cJSON_IsString(a) && cJSON_IsString(b)) return strcmp(a->valuestring, b->valuestring);
    *ok = false;
    return 0;
}

static bool equal(const cJSON *a, const cJSON *b)
{
    if (is_undef(a) || is_undef(b)) return is_undef(a) && is_undef(b);
    bool ok;
    int c = cmp_values(a, b, &ok);
    if (ok) return c == 0;
    return cJSON_Compare(a, b, true);
}

static bool contains(const cJSON *hay, const cJSON *needle)
{
    if (cJSON_IsString(hay)) return cJSON_IsString(needle) && strstr(hay->valuestring, needle->valuestring);
    if (cJSON_IsObject(hay)) return cJSON_IsString(needle) && cJSON_GetObjectItemCaseSensitive(hay, needle->valuestring);
    for (const cJSON *e = cJSON_IsArray(hay) ? hay->child : NULL; e; e = e->next)
        if (equal(e, needle)) return true;
    return false;
}

static cJSON *to_string_value(const cJSON *v)
{
    tk_buf b = {0};
    tk_buf_put(&b, "", 0);
    put_str(&b, v, false);
    cJSON *r = cJSON_CreateString(b.p);
    tk_buf_free(&b);
    return r;
}

static cJSON *binop(rctx *R, const node *n, cJSON *a, cJSON *b)
{
    const char *op = n->s;
    if (!strcmp(op, "~")) {
        tk_buf s = {0};
        tk_buf_put(&s, "", 0);
        put_str(&s, a, false), put_str(&s, b, false);
        cJSON *r = cJSON_CreateString(s.p);
        tk_buf_free(&s);
        return r;
    }
    if (!strcmp(op, "in") || !strcmp(op, "notin")) {
        if (is_undef(b)) return rerr(R, n, "'in' on an undefined value");
        return cJSON_CreateBool(contains(b, a) == !strcmp(op, "in"));
    }
    if (!strcmp(op, "==")) return cJSON_CreateBool(equal(a, b));
    if (!strcmp(op, "!=")) return cJSON_CreateBool(!equal(a, b));
    if (op[0] == '<' || op[0] == '>') {
        bool ok;
        int c = cmp_values(a, b, &ok);
        if (!ok) return rerr(R, n, "cannot compare a %s with a %s", type_name(a), type_name(b));
        return cJSON_CreateBool(!strcmp(op, "<") ? c < 0 : !strcmp(op, ">") ? c > 0 : !strcmp(op, "<=") ? c <= 0 : c >= 0);
    }
    if (is_undef(a) || is_undef(b)) return rerr(R, n, "operator '%s' on an undefined value", op);
    if (!strcmp(op, "+")) {
        if (cJSON_IsString(a) && cJSON_IsString(b)) {
            size_t la = strlen(a->valuestring), lb = strlen(b->valuestring);
            char *s = malloc(la + lb + 1);
            if (!s) return rerr(R, n, "out of host memory");
            memcpy(s, a->valuestring, la), memcpy(s + la, b->valuestring, lb + 1);
            cJSON *r = cJSON_CreateString(s);
            free(s);
            return r;
        }
        if (cJSON_IsArray(a) && cJSON_IsArray(b)) {
            cJSON *r = cJSON_Duplicate(a, true);
            for (const cJSON *e = b->child; e; e = e->next) cJSON_AddItemToArray(r, cJSON_Duplicate(e, true));
            return r;
        }
    }
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b)) {
        double x = a->valuedouble, y = b->valuedouble;
        if ((op[0] == '/' || op[0] == '%') && y == 0) return rerr(R, n, "division by zero");
        double r = op[0] == '+' ? x + y : op[0] == '-' ? x - y : op[0] == '*' ? x * y : !strcmp(op, "//") ? floor(x / y)
                   : op[0] == '/' ? x / y : x - y * floor(x / y);
        return cJSON_CreateNumber(r);
    }
    if (!strcmp(op, "*") && cJSON_IsString(a) && cJSON_IsNumber(b)) {
        tk_buf s = {0};
        tk_buf_put(&s, "", 0);
        for (int i = 0; i < (int)b->valuedouble; i++) tk_buf_put(&s, a->valuestring, strlen(a->valuestring));
        cJSON *r = cJSON_CreateString(s.p);
        tk_buf_free(&s);
        return r;
    }
    return rerr(R, n, "operator '%s' on a %s and a %s", op, type_name(a), type_name(b));
}

/* the evaluated arguments of a call / filter / test; kwargs by name */
typedef struct args {
    cJSON *pos[8];
    int npos;
    cJSON *kw; /* object */
} args;

static bool eval_args(rctx *R, const node *n, args *A)
{
    A->npos = 0;
    A->kw = cJSON_CreateObject();
    for (size_t i = 0; i < n->args.n; i++) {
        cJSON *v = eval(R, n->args.v[i]);
        if (!v) return false;
        if (n->kwnames.v[i]) cJSON_AddItemToObject(A->kw, n->kwnames.v[i]->s, v);
        else if (A->npos < 8) A->pos[A->npos++] = v;
        else {
            cJSON_Delete(v);
            rerr(R, n, "too many arguments");
            return false;
        }
    }
    return true;
}

static void free_args(args *A)
{
    for (int i = 0; i < A->npos; i++) cJSON_Delete(A->pos[i]);
    cJSON_Delete(A->kw);
    A->npos = 0, A->kw = NULL;
}

static const char *arg_str(const args *A, int i, const char *kw)
{
    const cJSON *v = i < A->npos ? A->pos[i] : kw ? cJSON_GetObjectItemCaseSensitive(A->kw, kw) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static cJSON *strip_chars(const char *s, const char *chars, bool left, bool right)
{
    size_t a = 0, b = strlen(s);
    /* without chars: Python's str.strip() whitespace (ASCII and Unicode White_Space) */
#define IS_STRIP(c) (chars ? strchr(chars, (c)) != NULL && (c) : isspace((unsigned char)(c)))
    if (left) while (a < b && IS_STRIP(s[a])) a++;
    if (right) while (b > a && IS_STRIP(s[b - 1])) b--;
#undef IS_STRIP
    char *t = strndup(s + a, b - a);
    cJSON *r = cJSON_CreateString(t ? t : "");
    free(t);
    return r;
}

static cJSON *call_method(rctx *R, const node *n, const char *name, cJSON *self, args *A)
{
    if (cJSON_IsString(self)) {
        const char *s = self->valuestring;
        if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip"))
            return strip_chars(s, arg_str(A, 0, NULL), name[0] != 'r', name[0] != 'l');
        if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
            const char *p = arg_str(A, 0, NULL);
            if (!p) return rerr(R, n, "%s() needs a string", name);
            size_t ls = strlen(s), lp = strlen(p);
            return cJSON_CreateBool(lp <= ls && !memcmp(name[0] == 's' ? s : s + ls - lp, p, lp));
        }
        if (!strcmp(name, "upper") || !strcmp(name, "lower")) {
            char *t = strdup(s);
            for (char *q = t; q && *q; q++) *q = (char)(name[0] == 'u' ? toupper((unsigned char)*q) : tolower((unsigned char)*q));
            cJSON *r = cJSON_CreateString(t ? t : "");
            free(t);
            return r;
        }
        if (!strcmp(name, "replace")) {
            const char *a = arg_str(A, 0, NULL), *b = arg_str(A, 1, NULL);
            if (!a || !b || !*a) return rerr(R, n, "replace() needs two strings");
            tk_buf o = {0};
            tk_buf_put(&o, "", 0);
            for (const char *q = s; *q;) {
                if (!strncmp(q, a, strlen(a))) tk_buf_put(&o, b, strlen(b)), q += strlen(a);
                else tk_buf_put(&o, q++, 1);
            }
            cJSON *r = cJSON_CreateString(o.p);
            tk_buf_free(&o);
            return r;
        }
        if (!strcmp(name, "split")) {
            const char *sep = arg_str(A, 0, NULL);
            int maxsplit = A->npos > 1 && cJSON_IsNumber(A->pos[1]) ? (int)A->pos[1]->valuedouble : -1;
            cJSON *r = cJSON_CreateArray();
            if (sep && !*sep) return cJSON_Delete(r), rerr(R, n, "split() with an empty separator");
            const char *q = s;
            int splits = 0;
            if (!sep) { /* whitespace runs, no empty strings */
                for (;;) {
                    while (*q && isspace((unsigned char)*q)) q++;
                    if (!*q) break;
                    const char *e = q;
                    if (maxsplit >= 0 && splits == maxsplit) e = q + strlen(q);
                    else while (*e && !isspace((unsigned char)*e)) e++;
                    char *t = strndup(q, (size_t)(e - q));
                    cJSON_AddItemToArray(r, cJSON_CreateString(t ? t : ""));
                    free(t);
                    splits++;
                    q = e;
                }
                return r;
            }
            for (;;) {
                const char *e = maxsplit >= 0 && splits == maxsplit ? NULL : strstr(q, sep);
                char *t = strndup(q, e ? (size_t)(e - q) : strlen(q));
                cJSON_AddItemToArray(r, cJSON_CreateString(t ? t : ""));
                free(t);
                if (!e) break;
                q = e + strlen(sep);
                splits++;
            }
            return r;
        }
    }
    if (cJSON_IsObject(self)) {
        if (!strcmp(name, "get")) {
            const char *k = arg_str(A, 0, NULL);
            const cJSON *v = k ? cJSON_GetObjectItemCaseSensitive(self, k) : NULL;
            if (v) return cJSON_Duplicate(v, true);
            return A->npos > 1 ? cJSON_Duplicate(A->pos[1], true) : cJSON_CreateNull();
        }
        cJSON *r = cJSON_CreateArray();
        for (const cJSON *e = self->child; e; e = e->next) {
            if (!strcmp(name, "keys")) cJSON_AddItemToArray(r, cJSON_CreateString(e->string));
            else if (!strcmp(name, "values")) cJSON_AddItemToArray(r, cJSON_Duplicate(e, true));
            else {
                cJSON *pair = cJSON_CreateArray();
                cJSON_AddItemToArray(pair, cJSON_CreateString(e->string));
                cJSON_AddItemToArray(pair, cJSON_Duplicate(e, true));
                cJSON_AddItemToArray(r, pair);
            }
        }
        return r;
    }
    return rerr(R, n, "unsupported method '%s'", name);
}

static cJSON *call(rctx *R, const node *n, cJSON *f, args *A)
{
    if (!cJSON_IsRaw(f)) return rerr(R, n, "a %s is not callable", type_name(f));
    const char *name = f->valuestring;
    if (f->child) return call_method(R, n, name, f->child, A);
    if (!strcmp(name, "raise_exception")) {
        const char *m = arg_str(A, 0, NULL);
        return rerr(R, n, "raise_exception: %s", m ? m : "(no message)");
    }
    if (!strcmp(name, "namespace")) {
        cJSON *ns = A->npos && cJSON_IsObject(A->pos[0]) ? cJSON_Duplicate(A->pos[0], true) : cJSON_CreateObject();
        for (const cJSON *e = A->kw->child; e; e = e->next) cJSON_AddItemToObject(ns, e->string, cJSON_Duplicate(e, true));
        return ns;
    }
    if (!strcmp(name, "range")) {
        double lo = 0, hi, step = 1;
        if (A->npos == 1 && cJSON_IsNumber(A->pos[0])) hi = A->pos[0]->valuedouble;
        else if (A->npos >= 2 && cJSON_IsNumber(A->pos[0]) && cJSON_IsNumber(A->pos[1])) {
            lo = A->pos[0]->valuedouble, hi = A->pos[1]->valuedouble;
            if (A->npos > 2 && cJSON_IsNumber(A->pos[2])) step = A->pos[2]->valuedouble;
        } else
            return rerr(R, n, "range() needs numbers");
        if (step == 0 || fabs((hi - lo) / step) > 1e6) return rerr(R, n, "range() too long or with step 0");
        cJSON *r = cJSON_CreateArray();
        for (double i = lo; step > 0 ? i < hi : i > hi; i += step) cJSON_AddItemToArray(r, cJSON_CreateNumber(i));
        return r;
    }
    return rerr(R, n, "unsupported function '%s'", name);
}

static cJSON *filter(rctx *R, const node *n, cJSON *v, args *A)
{
    const char *f = n->s;
    if (!strcmp(f, "safe")) return cJSON_Duplicate(v, true);
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        bool boolean = A->npos > 1 && truthy(A->pos[1]);
        if (is_undef(v) || (boolean && !truthy(v))) return A->npos ? cJSON_Duplicate(A->pos[0], true) : cJSON_CreateString("");
        return cJSON_Duplicate(v, true);
    }
    if (is_undef(v)) return rerr(R, n, "filter '%s' on an undefined value", f);
    if (!strcmp(f, "trim")) return cJSON_IsString(v) ? strip_chars(v->valuestring, arg_str(A, 0, "chars"), true, true)
                                                     : rerr(R, n, "filter 'trim' on a %s", type_name(v));
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        if (cJSON_IsString(v)) { /* characters, not bytes */
            size_t c = 0;
            for (const char *s = v->valuestring; *s; s++) c += ((unsigned char)*s & 0xC0) != 0x80;
            return cJSON_CreateNumber((double)c);
        }
        if (cJSON_IsArray(v) || cJSON_IsObject(v)) return cJSON_CreateNumber(cJSON_GetArraySize(v));
        return rerr(R, n, "filter '%s' on a %s", f, type_name(v));
    }
    if (!strcmp(f, "tojson")) {
        const cJSON *ind = A->npos ? A->pos[0] : cJSON_GetObjectItemCaseSensitive(A->kw, "indent");
        tk_buf b = {0};
        tk_buf_put(&b, "", 0);
        put_json(&b, v, cJSON_IsNumber(ind) ? (int)ind->valuedouble : -1, 0);
        cJSON *r = cJSON_CreateString(b.p);
        tk_buf_free(&b);
        return r;
    }
    if (!strcmp(f, "string")) return to_string_value(v);
    if (!strcmp(f, "upper") || !strcmp(f, "lower")) {
        if (!cJSON_IsString(v)) return rerr(R, n, "filter '%s' on a %s", f, type_name(v));
        args none = {.npos = 0};
        return call_method(R, n, f, v, &none);
    }
    if (!strcmp(f, "replace")) {
        if (!cJSON_IsString(v)) return rerr(R, n, "filter 'replace' on a %s", type_name(v));
        return call_method(R, n, "replace", v, A);
    }
    if (!strcmp(f, "int")) {
        if (cJSON_IsNumber(v)) return cJSON_CreateNumber(trunc(v->valuedouble));
        if (cJSON_IsString(v)) return cJSON_CreateNumber((double)strtol(v->valuestring, NULL, 10));
        return cJSON_CreateNumber(cJSON_IsTrue(v));
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        if (!cJSON_IsArray(v) || !v->child) return undef();
        const cJSON *e = v->child;
        if (f[0] == 'l') while (e->next) e = e->next;
        return cJSON_Duplicate(e, true);
    }
    if (!strcmp(f, "join")) {
        if (!cJSON_IsArray(v)) return rerr(R, n, "filter 'join' on a %s", type_name(v));
        const char *sep = arg_str(A, 0, "d");
        tk_buf b = {0};
        tk_buf_put(&b, "", 0);
        for (const cJSON *e = v->child; e; e = e->next) {
            if (e != v->child && sep) tk_buf_put(&b, sep, strlen(sep));
            put_str(&b, e, false);
        }
        cJSON *r = cJSON_CreateString(b.p);
        tk_buf_free(&b);
        return r;
    }
    if (!strcmp(f, "list")) {
        if (cJSON_IsArray(v)) return cJSON_Duplicate(v, true);
        cJSON *r = cJSON_CreateArray();
        if (cJSON_IsObject(v))
            for (const cJSON *e = v->child; e; e = e->next) cJSON_AddItemToArray(r, cJSON_CreateString(e->string));
        else if (cJSON_IsString(v))
            for (const char *s = v->valuestring; *s;) {
                uint32_t cp;
                size_t l = tk_utf8_next(s, &cp);
                char *t = strndup(s, l);
                cJSON_AddItemToArray(r, cJSON_CreateString(t ? t : ""));
                free(t);
                s += l;
            }
        return r;
    }
    if (!strcmp(f, "items")) {
        if (!cJSON_IsObject(v)) return rerr(R, n, "filter 'items' on a %s", type_name(v));
        return call_method(R, n, "items", v, A);
    }
    if (!strcmp(f, "reverse")) {
        if (!cJSON_IsArray(v)) return rerr(R, n, "filter 'reverse' on a %s", type_name(v));
        cJSON *r = cJSON_CreateArray();
        for (const cJSON *e = v->child; e; e = e->next) {
            cJSON *d = cJSON_Duplicate(e, true);
            if (r->child) cJSON_InsertItemInArray(r, 0, d);
            else cJSON_AddItemToArray(r, d);
        }
        return r;
    }
    return rerr(R, n, "unsupported filter '%s'", f);
}

static cJSON *test(rctx *R, const node *n, cJSON *v, args *A)
{
    const char *t = n->s;
    bool r;
    if (!strcmp(t, "defined")) r = !is_undef(v);
    else if (!strcmp(t, "undefined")) r = is_undef(v);
    else if (!strcmp(t, "none")) r = cJSON_IsNull(v);
    else if (!strcmp(t, "string")) r = cJSON_IsString(v);
    else if (!strcmp(t, "number")) r = cJSON_IsNumber(v);
    else if (!strcmp(t, "integer")) r = cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble);
    else if (!strcmp(t, "boolean")) r = cJSON_IsBool(v);
    else if (!strcmp(t, "true")) r = cJSON_IsTrue(v);
    else if (!strcmp(t, "false")) r = cJSON_IsFalse(v);
    else if (!strcmp(t, "mapping")) r = cJSON_IsObject(v);
    else if (!strcmp(t, "sequence") || !strcmp(t, "iterable")) r = cJSON_IsArray(v) || cJSON_IsString(v) || cJSON_IsObject(v);
    else if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "sameas")) r = A->npos && equal(v, A->pos[0]);
    else return rerr(R, n, "unsupported test '%s'", t);
    return cJSON_CreateBool(r != n->neg);
}

static cJSON *eval(rctx *R, const node *n)
{
    if (R->err || !n) return NULL;
    switch (n->kind) {
    case E_STR: return cJSON_CreateString(n->s);
    case E_NUM: return cJSON_CreateNumber(n->num);
    case E_BOOL: return cJSON_CreateBool(n->num != 0);
    case E_NONE: return cJSON_CreateNull();
    case E_NAME: {
        cJSON *v = lookup(R, n->s);
        if (v) return cJSON_Duplicate(v, true);
        if (!strcmp(n->s, "raise_exception") || !strcmp(n->s, "namespace") || !strcmp(n->s, "range")) return func(n->s, NULL);
        return undef();
    }
    case E_ATTR: {
        cJSON *o = eval(R, n->a);
        if (!o) return NULL;
        cJSON key = {.type = cJSON_String, .valuestring = n->s};
        cJSON *r = get_member(R, n, o, &key);
        cJSON_Delete(o);
        return r;
    }
    case E_INDEX: {
        cJSON *o = eval(R, n->a), *k = o ? eval(R, n->b) : NULL;
        cJSON *r = k ? get_member(R, n, o, k) : NULL;
        cJSON_Delete(o), cJSON_Delete(k);
        return r;
    }
    case E_SLICE: {
        cJSON *o = eval(R, n->a), *a = n->b ? eval(R, n->b) : NULL, *b = n->c ? eval(R, n->c) : NULL, *c = n->d ? eval(R, n->d) : NULL;
        cJSON *r = R->err || !o ? NULL : slice(R, n, o, a, b, c);
        cJSON_Delete(o), cJSON_Delete(a), cJSON_Delete(b), cJSON_Delete(c);
        return r;
    }
    case E_CALL: {
        cJSON *f = eval(R, n->a);
        args A = {0};
        cJSON *r = f && eval_args(R, n, &A) ? call(R, n, f, &A) : NULL;
        free_args(&A);
        cJSON_Delete(f);
        return r;
    }
    case E_FILTER:
    case E_TEST: {
        cJSON *v = eval(R, n->a);
        args A = {0};
        cJSON *r = v && eval_args(R, n, &A) ? (n->kind == E_FILTER ? filter(R, n, v, &A) : test(R, n, v, &A)) : NULL;
        free_args(&A);
        cJSON_Delete(v);
        return r;
    }
    case E_BIN: {
        cJSON *a = eval(R, n->a), *b = a ? eval(R, n->b) : NULL;
        cJSON *r = b ? binop(R, n, a, b) : NULL;
        cJSON_Delete(a), cJSON_Delete(b);
        return r;
    }
    case E_NOT: {
        cJSON *a = eval(R, n->a);
        cJSON *r = a ? cJSON_CreateBool(!truthy(a)) : NULL;
        cJSON_Delete(a);
        return r;
    }
    case E_NEG: {
        cJSON *a = eval(R, n->a);
        cJSON *r = !a ? NULL : cJSON_IsNumber(a) ? cJSON_CreateNumber(-a->valuedouble) : rerr(R, n, "unary '-' on a %s", type_name(a));
        cJSON_Delete(a);
        return r;
    }
    case E_AND:
    case E_OR: { /* Python semantics: the deciding operand is the value */
        cJSON *a = eval(R, n->a);
        if (!a) return NULL;
        if (truthy(a) == (n->kind == E_OR)) return a;
        cJSON_Delete(a);
        return eval(R, n->b);
    }
    case E_COND: {
        cJSON *c = eval(R, n->b);
        if (!c) return NULL;
        bool t = truthy(c);
        cJSON_Delete(c);
        return t ? eval(R, n->a) : n->c ? eval(R, n->c) : undef();
    }
    case E_LIST: {
        cJSON *r = cJSON_CreateArray();
        for (size_t i = 0; i < n->args.n && r; i++) {
            cJSON *v = eval(R, n->args.v[i]);
            if (!v) return cJSON_Delete(r), NULL;
            cJSON_AddItemToArray(r, v);
        }
        return r;
    }
    case E_DICT: {
        cJSON *r = cJSON_CreateObject();
        for (size_t i = 0; i < n->args.n && r; i++) {
            cJSON *k = eval(R, n->kwnames.v[i]), *v = k ? eval(R, n->args.v[i]) : NULL;
            if (!v || !cJSON_IsString(k)) {
                cJSON_Delete(k), cJSON_Delete(v), cJSON_Delete(r);
                return R->err ? NULL : rerr(R, n, "dict keys must be strings");
            }
            cJSON_AddItemToObject(r, k->valuestring, v);
            cJSON_Delete(k);
        }
        return r;
    }
    }
    return rerr(R, n, "internal: not an expression");
}

static void exec_list(rctx *R, const nlist *l);

static void exec(rctx *R, const node *n)
{
    if (R->err) return;
    switch (n->kind) {
    case S_TEXT: tk_buf_put(&R->out, n->s, strlen(n->s)); return;
    case S_OUT: {
        cJSON *v = eval(R, n->a);
        if (v) put_str(&R->out, v, false);
        cJSON_Delete(v);
        return;
    }
    case S_IF:
        for (size_t i = 0; i < n->args.n; i++) {
            cJSON *c = eval(R, n->args.v[i]);
            if (!c) return;
            bool t = truthy(c);
            cJSON_Delete(c);
            if (t) return exec_list(R, &n->body.v[i]->body);
        }
        exec_list(R, &n->body2);
        return;
    case S_SET: {
        cJSON *v = eval(R, n->a);
        if (!v) return;
        if (!n->s) {
            set_var(R->sc, n->s2, v);
            return;
        }
        cJSON *ns = lookup(R, n->s2);
        if (!cJSON_IsObject(ns)) {
            cJSON_Delete(v);
            rerr(R, n, "'set %s.%s': %s is not a namespace", n->s2, n->s, n->s2);
            return;
        }
        set_var(&(scope){ns, NULL}, n->s, v);
        return;
    }
    case S_FOR: {
        cJSON *it = eval(R, n->a);
        if (!it) return;
        if (cJSON_IsObject(it)) { /* iterating a dict gives its keys */
            cJSON *keys = cJSON_CreateArray();
            for (const cJSON *e = it->child; e; e = e->next) cJSON_AddItemToArray(keys, cJSON_CreateString(e->string));
            cJSON_Delete(it);
            it = keys;
        } else if (cJSON_IsString(it)) {
            args none = {.npos = 0};
            node fake = {.s = "list", .line = n->line};
            cJSON *l = filter(R, &fake, it, &none);
            cJSON_Delete(it);
            if (!(it = l)) return;
        } else if (!cJSON_IsArray(it)) {
            rerr(R, n, "cannot loop over a %s", type_name(it));
            cJSON_Delete(it);
            return;
        }
        int len = cJSON_GetArraySize(it), i = 0;
        if (!len) exec_list(R, &n->body2);
        for (const cJSON *e = it->child; e && !R->err; e = e->next, i++) {
            scope sc = {cJSON_CreateObject(), R->sc};
            if (n->s2) {
                if (!cJSON_IsArray(e) || cJSON_GetArraySize(e) != 2) {
                    rerr(R, n, "'for %s, %s': an item is not a pair", n->s, n->s2);
                    cJSON_Delete(sc.vars);
                    break;
                }
                cJSON_AddItemToObject(sc.vars, n->s, cJSON_Duplicate(e->child, true));
                cJSON_AddItemToObject(sc.vars, n->s2, cJSON_Duplicate(e->child->next, true));
            } else
                cJSON_AddItemToObject(sc.vars, n->s, cJSON_Duplicate(e, true));
            cJSON *loop = cJSON_CreateObject();
            cJSON_AddNumberToObject(loop, "index0", i);
            cJSON_AddNumberToObject(loop, "index", i + 1);
            cJSON_AddNumberToObject(loop, "revindex0", len - 1 - i);
            cJSON_AddNumberToObject(loop, "revindex", len - i);
            cJSON_AddBoolToObject(loop, "first", i == 0);
            cJSON_AddBoolToObject(loop, "last", i == len - 1);
            cJSON_AddNumberToObject(loop, "length", len);
            cJSON_AddItemToObject(sc.vars, "loop", loop);
            R->sc = &sc;
            exec_list(R, &n->body);
            R->sc = sc.up;
            cJSON_Delete(sc.vars);
        }
        cJSON_Delete(it);
        return;
    }
    }
}

static void exec_list(rctx *R, const nlist *l)
{
    for (size_t i = 0; i < l->n && !R->err; i++) exec(R, l->v[i]);
}

clnpu_chat_options clnpu_chat_options_default(void)
{
    return (clnpu_chat_options){.add_generation_prompt = true, .enable_thinking = -1};
}

clnpu_status clnpu_chat_template_render(const clnpu_chat_template *t, const char *messages_json, const clnpu_chat_options *opt,
                                        char **out_text)
{
    if (!t || !messages_json || !out_text) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "clnpu_chat_template_render: NULL argument");
    *out_text = NULL;
    clnpu_chat_options o = opt ? *opt : clnpu_chat_options_default();
    cJSON *msgs = cJSON_Parse(messages_json);
    if (!cJSON_IsArray(msgs)) {
        cJSON_Delete(msgs);
        return clnpu_fail(CLNPU_ERR_PARSE, "chat messages: not a JSON array");
    }
    cJSON *vars = cJSON_CreateObject();
    cJSON_AddItemToObject(vars, "messages", msgs);
    cJSON_AddBoolToObject(vars, "add_generation_prompt", o.add_generation_prompt);
    if (o.enable_thinking >= 0) cJSON_AddBoolToObject(vars, "enable_thinking", o.enable_thinking > 0);
    const char *bos = o.bos_token ? o.bos_token : t->bos, *eos = o.eos_token ? o.eos_token : t->eos;
    if (bos) cJSON_AddStringToObject(vars, "bos_token", bos);
    if (eos) cJSON_AddStringToObject(vars, "eos_token", eos);
    if (o.tools_json) {
        cJSON *tools = cJSON_Parse(o.tools_json);
        if (!cJSON_IsArray(tools)) {
            cJSON_Delete(tools), cJSON_Delete(vars);
            return clnpu_fail(CLNPU_ERR_PARSE, "chat tools: not a JSON array");
        }
        cJSON_AddItemToObject(vars, "tools", tools);
    }
    scope top = {vars, NULL};
    rctx R = {.t = t, .sc = &top};
    tk_buf_put(&R.out, "", 0);
    exec_list(&R, &t->root);
    cJSON_Delete(vars);
    if (R.err || !R.out.p) {
        tk_buf_free(&R.out);
        return R.err ? CLNPU_ERR_PARSE : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    *out_text = R.out.p;
    return CLNPU_OK;
}
