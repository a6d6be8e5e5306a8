/* The generation loop: sequences prefilled, then decoded together one step at a time, each token
 * drawn on the device, streamed as text to a callback, stopped at end-of-sequence ids, stop
 * strings, a token budget or the context. The CLI (`clnpu run`, `clnpu chat`) and a server use it.
 * From examples/chat.c (print_piece writes each piece to stdout):
 *
 *     clnpu_generator_options go = {.model = m, .device = dev, .tokenizer = tok, .vocab_size = cfg.vocab_size,
 *                                   .max_sequences = 1, .max_context = 256};
 *     CHECK(clnpu_generator_create(&go, &g));
 *     clnpu_generate_config gc = clnpu_generate_config_default(); // greedy
 *     gc.eos_ids = &eos, gc.n_eos = eos >= 0;
 *     CHECK(clnpu_generator_start(g, 0, ids, n, &gc, NULL));      // prefill
 *     CHECK(clnpu_generator_run(g, print_piece, NULL));           // until EOS or max_tokens
 *     clnpu_generator_destroy(g);
 *
 * A next turn appends to the same sequence (its cache is kept): clnpu_generator_start again.
 * A sequence that stopped keeps its last drawn token unfed; the next start on that sequence feeds
 * it before the new ids, so the cache holds the whole conversation.
 * Thread safety: one generator per thread (it drives one model or pipeline).
 */
#ifndef CLNPU_GENERATE_H
#define CLNPU_GENERATE_H

#include <stdbool.h>
#include <stddef.h>

#include "clnpu/export.h"
#include "clnpu/model.h"
#include "clnpu/ops.h"
#include "clnpu/pipeline.h"
#include "clnpu/tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct clnpu_generate_config {
    clnpu_sampling sampling;
    size_t max_tokens;           /* new tokens this turn; 0: until another stop */
    const int *eos_ids;          /* drawing one of these ends the turn (its text is not streamed) */
    size_t n_eos;
    const char *const *stop;     /* stop strings (need a tokenizer); the text ends before the match */
    size_t n_stop;
} clnpu_generate_config;

CLNPU_API clnpu_generate_config clnpu_generate_config_default(void); /* greedy, no limits */

typedef enum clnpu_finish_reason {
    CLNPU_FINISH_NONE = 0, /* still generating */
    CLNPU_FINISH_EOS,
    CLNPU_FINISH_STOP,     /* a stop string */
    CLNPU_FINISH_LENGTH,   /* max_tokens */
    CLNPU_FINISH_CONTEXT,  /* the sequence filled max_context */
    CLNPU_FINISH_CALLER,   /* the callback returned false */
} clnpu_finish_reason;
CLNPU_API const char *clnpu_finish_reason_name(clnpu_finish_reason r); /* "eos", "stop", "length", ... */

typedef struct clnpu_generator_options {
    clnpu_model *model;       /* exactly one of model and pipeline */
    clnpu_pipeline *pipeline;
    clnpu_device *device;     /* where tokens are drawn: the model's device (any device for a pipeline) */
    const clnpu_tokenizer *tokenizer; /* NULL: ids only (no text, no stop strings) */
    size_t vocab_size, max_sequences, max_context; /* as the model was created with */
} clnpu_generator_options;

typedef struct clnpu_generator clnpu_generator;

CLNPU_API clnpu_status clnpu_generator_create(const clnpu_generator_options *opt, clnpu_generator **out_gen);
CLNPU_API void clnpu_generator_destroy(clnpu_generator *g);

/* Begin a turn of sequence seq: its unfed last token (if any) and ids are prefilled after what
 * the cache holds. logits: NULL or [k][vocab] for the k prefilled positions. */
CLNPU_API clnpu_status clnpu_generator_start(clnpu_generator *g, size_t seq, const int *ids, size_t n,
                                   const clnpu_generate_config *cfg, float *logits);
/* Begin a turn whose forward the caller ran: the cache holds `context` tokens of seq and
 * last_logits [vocab] are the next token's. */
CLNPU_API clnpu_status clnpu_generator_start_from_logits(clnpu_generator *g, size_t seq, size_t context,
                                               const float *last_logits, const clnpu_generate_config *cfg);

/* Per token of a sequence: its id, the text it completes (UTF-8 characters whole, text held back
 * while it may begin a stop string; "" without a tokenizer). Return false to end that turn. */
typedef bool (*clnpu_token_callback)(void *user, size_t seq, int id, const char *text, size_t len);

/* One step: every generating sequence draws a token (the sequences whose turn just started from
 * their prefill logits, the others through one batched decode). *out_active: sequences still
 * generating. A token that ends a turn comes with all the text still withheld. */
CLNPU_API clnpu_status clnpu_generator_step(clnpu_generator *g, clnpu_token_callback cb, void *user, size_t *out_active);
/* Steps until no sequence is generating. */
CLNPU_API clnpu_status clnpu_generator_run(clnpu_generator *g, clnpu_token_callback cb, void *user);

CLNPU_API clnpu_finish_reason clnpu_generator_finish_reason(const clnpu_generator *g, size_t seq);
/* The ids drawn in this turn (the stopping token included). */
CLNPU_API const int *clnpu_generator_tokens(const clnpu_generator *g, size_t seq, size_t *out_n);
/* The text streamed in this turn (NUL-terminated). */
CLNPU_API const char *clnpu_generator_text(const clnpu_generator *g, size_t seq, size_t *out_len);
/* Tokens in seq's cache. */
CLNPU_API size_t clnpu_generator_context(const clnpu_generator *g, size_t seq);
/* Decode steps run and tokens decoded through them so far (throughput). */
CLNPU_API size_t clnpu_generator_decoded(const clnpu_generator *g);
/* Forget seq (its cache is freed). */
CLNPU_API void clnpu_generator_reset(clnpu_generator *g, size_t seq);

#ifdef __cplusplus
}
#endif
#endif
