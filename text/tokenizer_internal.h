/* Internals of the tokenizer (text/tokenizer*.c): the loaded components and the small
 * containers they share. Not a public header. */
#ifndef CLNPU_TOKENIZER_INTERNAL_H
#define CLNPU_TOKENIZER_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clnpu/tokenizer.h"

/* A growable byte string. */
typedef struct tk_buf {
    char *p;
    size_t n, cap;
} tk_buf;
bool tk_buf_put(tk_buf *b, const void *s, size_t n);
void tk_buf_free(tk_buf *b);

/* Pieces of text: spans of one buffer, each with how many of its first bytes come from the
 * original input's first character (HF's offsets_original().0 == 0, for Metaspace's
 * prepend_scheme "first"; a normalizer can expand that character into several). */
typedef struct tk_pieces {
    tk_buf text;
    size_t *off, *len;
    size_t *first;
    size_t n, cap;
} tk_pieces;
bool tk_pieces_add(tk_pieces *ps, const char *s, size_t n, size_t first);
void tk_pieces_clear(tk_pieces *ps);
void tk_pieces_free(tk_pieces *ps);

/* A compiled regex (PCRE2, UTF + UCP, JIT where the library has it). */
typedef struct tk_regex {
    pcre2_code *code;
    bool jit;
} tk_regex;
clnpu_status tk_regex_compile(tk_regex *re, const char *pattern, bool literal, const char *origin);
void tk_regex_free(tk_regex *re);
/* Next match at or after `start`: 1 found (*ms, *me), 0 none, -1 error (message set). */
int tk_regex_next(const tk_regex *re, const char *s, size_t n, size_t start, pcre2_match_data *md, size_t *ms,
                  size_t *me);

typedef enum tk_split_behavior {
    TK_SPLIT_REMOVED,
    TK_SPLIT_ISOLATED,
    TK_SPLIT_MERGED_PREV,
    TK_SPLIT_MERGED_NEXT,
    TK_SPLIT_CONTIGUOUS
} tk_split_behavior;

typedef enum tk_norm_kind { TK_NORM_NFC, TK_NORM_NFD, TK_NORM_NFKC, TK_NORM_NFKD, TK_NORM_REPLACE, TK_NORM_PREPEND } tk_norm_kind;
typedef struct tk_norm {
    tk_norm_kind kind;
    char *a, *b; /* Replace: pattern, content; Prepend: a */
} tk_norm;

typedef enum tk_pre_kind {
    TK_PRE_SPLIT,
    TK_PRE_BYTELEVEL,
    TK_PRE_DIGITS,
    TK_PRE_WHITESPACE,
    TK_PRE_WHITESPACE_SPLIT,
    TK_PRE_METASPACE
} tk_pre_kind;
typedef struct tk_pre {
    tk_pre_kind kind;
    tk_regex re;                 /* Split, ByteLevel with use_regex, Digits, Whitespace */
    tk_split_behavior behavior;  /* Split */
    bool invert, add_prefix_space, use_regex, individual_digits, split;
    char replacement[8];         /* Metaspace */
    int prepend;                 /* Metaspace: 0 never, 1 first, 2 always */
} tk_pre;

typedef enum tk_dec_kind { TK_DEC_BYTELEVEL, TK_DEC_BYTEFALLBACK, TK_DEC_FUSE, TK_DEC_STRIP, TK_DEC_REPLACE, TK_DEC_METASPACE } tk_dec_kind;
typedef struct tk_dec {
    tk_dec_kind kind;
    char *a, *b;          /* Replace: pattern, content; Strip / Metaspace: the character */
    size_t start, stop;   /* Strip */
    int prepend;          /* Metaspace */
} tk_dec;

typedef struct tk_added {
    char *content;
    size_t len;
    int id;
    bool special, lstrip, rstrip, single_word, normalized;
} tk_added;

/* Open-addressing map from a string to an id; the strings live in the caller's table. */
typedef struct tk_strmap {
    int32_t *slot; /* id or -1 */
    uint32_t *tag; /* high hash bits: most mismatches skip the string compare */
    size_t mask;
} tk_strmap;

/* (left id, right id) -> (merge rank, merged id). */
typedef struct tk_merge_map {
    uint64_t *key;
    uint32_t *rank, *id;
    size_t mask;
} tk_merge_map;

/* Words already split by BPE (HF keeps the same cache); a lock so encode can run on several threads. */
typedef struct tk_cache {
    pthread_mutex_t lock;
    struct tk_cache_entry *slot;
    size_t mask, used;
} tk_cache;

struct clnpu_tokenizer {
    char origin[512];
    /* the model's vocabulary: id -> string, string -> id */
    char **tok; /* into tok_arena; NULL for ids only added tokens use */
    char *tok_arena;
    uint32_t *tok_len;
    size_t ntok; /* one past the largest id, added tokens included */
    tk_strmap vocab;
    tk_merge_map merges;
    bool byte_fallback, ignore_merges, fuse_unk;
    int unk_id;           /* -1: unknown characters are dropped, as HF does without unk_token */
    int byte_id[256];     /* <0xXX> tokens for byte_fallback, -1 where missing */
    tk_cache cache;
    /* added tokens, longest first within each first byte */
    tk_added *added;
    size_t nadded;
    bool *is_special; /* [ntok] */
    unsigned char added_first[256]; /* first bytes of added tokens: 1 raw, 2 normalized */
    tk_norm *norm;
    size_t nnorm;
    tk_pre *pre;
    size_t npre;
    tk_dec *dec;
    size_t ndec;
    bool has_decoder;
};

/* tokenizer_pretok.c */
clnpu_status tk_parse_normalizer(clnpu_tokenizer *t, const cJSON *j);
clnpu_status tk_parse_pre_tokenizer(clnpu_tokenizer *t, const cJSON *j);
/* *out_first: how many leading bytes of the result the first input character became. */
clnpu_status tk_normalize(const clnpu_tokenizer *t, const char *s, size_t n, tk_buf *out, size_t *out_first);
/* Pre-tokenize `in` (its pieces replaced by the result); md sized for every regex. */
clnpu_status tk_pre_tokenize(const clnpu_tokenizer *t, tk_pieces *in, tk_pieces *scratch, pcre2_match_data *md);
void tk_pre_free(tk_pre *p);
/* Unicode White_Space (Rust's char::is_whitespace). */
bool tk_is_whitespace(uint32_t cp);
/* Decode one UTF-8 character at s (valid input assumed); returns its length. */
size_t tk_utf8_next(const char *s, uint32_t *cp);
bool tk_is_word_char(uint32_t cp);

/* tokenizer_bpe.c */
clnpu_status tk_parse_bpe(clnpu_tokenizer *t, const cJSON *model);
int tk_vocab_find(const clnpu_tokenizer *t, const char *s, size_t n);
/* Append the ids of one pre-tokenized piece. */
clnpu_status tk_bpe_encode(const clnpu_tokenizer *t, const char *s, size_t n, int **ids, size_t *nids, size_t *cap);
void tk_bpe_free(clnpu_tokenizer *t);
uint64_t tk_hash(const char *s, size_t n);

/* tokenizer_decode.c */
clnpu_status tk_parse_decoder(clnpu_tokenizer *t, const cJSON *j);
void tk_dec_free(tk_dec *d);

/* byte-level alphabet (GPT-2): byte -> UTF-8 of its character */
const char *tk_byte_char(int byte);
/* character -> byte, or -1 */
int tk_byte_level_decode(uint32_t cp);

#endif
