/* Internal: turning prefill and decode requests into forward steps, shared by one model and a
 * pipeline of stages — the chunking of long prompts, the positions of each token and the checks
 * on the sequences asked for. */
#ifndef CLNPU_STEP_H
#define CLNPU_STEP_H
#include <stdbool.h>
#include <stddef.h>

#include "clnpu/status.h"

/* One forward step over n tokens (token i of sequence seqs[i] at position pos[i]); it advances
 * the owner's tokens-per-sequence record. */
typedef clnpu_status (*clnpu_step_fn)(void *ctx, size_t n, const int *ids, const size_t *seqs, const size_t *pos,
                                      bool decode, float *logits);

/* Optional: a whole prompt of n tokens (n > max_tokens) in chunks of `chunk` tokens at once, so the
 * owner may keep several chunks in flight (pipeline stages). */
typedef clnpu_status (*clnpu_chunks_fn)(void *ctx, size_t n, const int *ids, const size_t *seqs, const size_t *pos,
                                        size_t chunk, float *logits);

typedef struct clnpu_stepper {
    clnpu_step_fn forward;
    void *ctx;
    const size_t *seq_len;  /* tokens so far per sequence, kept by forward */
    size_t max_sequences, max_tokens, vocab;
    const char *what;       /* "model" / "pipeline", for messages */
    clnpu_chunks_fn forward_chunks; /* NULL: chunk by chunk through forward */
} clnpu_stepper;

/* n prompt tokens of sequence seq in chunks of max_tokens, continuing its positions. */
clnpu_status clnpu_step_prefill(const clnpu_stepper *s, size_t seq, const int *ids, size_t n, float *logits);
/* One new token for each of n distinct sequences. */
clnpu_status clnpu_step_decode(const clnpu_stepper *s, const size_t *seqs, const int *ids, size_t n, float *logits);

#endif
