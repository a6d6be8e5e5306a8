/* A Hugging Face tokenizer.json (byte-level BPE and friends): text to token ids and back, as HF
 * tokenizers does with add_special_tokens=False / skip_special_tokens=False. From examples/chat.c
 * (CHECK: print clnpu_error_message(), clean up):
 *
 *     CHECK(clnpu_tokenizer_load(dir, &tok));              // DIR/tokenizer.json
 *     CHECK(clnpu_tokenizer_encode(tok, prompt, strlen(prompt), &ids, &n));
 *     clnpu_tokenizer_free(tok);
 *
 * Streaming (a generation loop, a server): one clnpu_detokenizer per sequence turns ids into
 * text as they come, never splitting a UTF-8 character across two pieces.
 *
 * Supported components (anything else is an error naming it): normalizers NFC, NFD, NFKC, NFKD,
 * Replace, Prepend, Sequence; pre-tokenizers Split (every behaviour, invert), ByteLevel, Digits,
 * Whitespace, WhitespaceSplit, Metaspace, Sequence; model BPE (merges as "a b" or pairs,
 * ignore_merges, byte_fallback, unk_token, fuse_unk); decoders ByteLevel, ByteFallback, Fuse,
 * Strip, Replace, Metaspace, Sequence. Regexes run on PCRE2 (UTF, Unicode properties, JIT).
 *
 * Thread safety: a loaded tokenizer is read-only but for an internal word cache behind a lock;
 * encode and decode may run on several threads at once. A detokenizer belongs to one thread.
 */
#ifndef CLNPU_TOKENIZER_H
#define CLNPU_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>

#include "clnpu/export.h"
#include "clnpu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clnpu_tokenizer clnpu_tokenizer;

/* Load tokenizer.json from a file, or from a directory holding one. */
CLNPU_API clnpu_status clnpu_tokenizer_load(const char *path, clnpu_tokenizer **out_tok);
/* The same from JSON text in memory; origin names it in error messages. */
CLNPU_API clnpu_status clnpu_tokenizer_parse(const char *json, size_t len, const char *origin, clnpu_tokenizer **out_tok);
CLNPU_API void clnpu_tokenizer_free(clnpu_tokenizer *tok);

/* UTF-8 text (invalid UTF-8 is an error) to ids; *out_ids is malloc'd (free it), NULL when n = 0.
 * Added tokens in the text (special or not) are recognised. */
CLNPU_API clnpu_status clnpu_tokenizer_encode(const clnpu_tokenizer *tok, const char *text, size_t len, int **out_ids,
                                    size_t *out_n);
/* Ids to text (a malloc'd, NUL-terminated string); special tokens are kept. An id outside the
 * vocabulary is an error naming it. */
CLNPU_API clnpu_status clnpu_tokenizer_decode(const clnpu_tokenizer *tok, const int *ids, size_t n, char **out_text,
                                    size_t *out_len);

/* One past the largest id (model vocabulary and added tokens). */
CLNPU_API size_t clnpu_tokenizer_vocab_size(const clnpu_tokenizer *tok);
/* The id of a token's exact content (an added token or a vocabulary entry), or -1. */
CLNPU_API int clnpu_tokenizer_token_id(const clnpu_tokenizer *tok, const char *content);
/* The content of an id (vocabulary form, e.g. "Ġthe"), or NULL. */
CLNPU_API const char *clnpu_tokenizer_token(const clnpu_tokenizer *tok, int id);
CLNPU_API bool clnpu_tokenizer_is_special(const clnpu_tokenizer *tok, int id);

/* Incremental detokenisation (HF's DecodeStream): push ids one at a time, get the text they
 * complete. Text is withheld while it ends in an incomplete UTF-8 sequence. */
typedef struct clnpu_detokenizer clnpu_detokenizer;
CLNPU_API clnpu_status clnpu_detokenizer_create(const clnpu_tokenizer *tok, clnpu_detokenizer **out_dt);
/* *out_text (owned by dt, valid until the next call) gets the new text, possibly "". */
CLNPU_API clnpu_status clnpu_detokenizer_push(clnpu_detokenizer *dt, int id, const char **out_text, size_t *out_len);
/* Whatever is withheld (an incomplete sequence decodes to U+FFFD, as a full decode would). */
CLNPU_API clnpu_status clnpu_detokenizer_flush(clnpu_detokenizer *dt, const char **out_text, size_t *out_len);
CLNPU_API void clnpu_detokenizer_reset(clnpu_detokenizer *dt);
CLNPU_API void clnpu_detokenizer_free(clnpu_detokenizer *dt);

#ifdef __cplusplus
}
#endif
#endif
