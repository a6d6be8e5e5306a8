/* Internal: what the serving engine's files share. */
#ifndef CLNPU_SERVE_INTERNAL_H
#define CLNPU_SERVE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "clnpu/serve.h"

typedef struct serve_cand {
    float v;
    int id;
} serve_cand;

/* One token drawn from a row of logits [V] under s (greedy when temperature <= 0); rng is the
 * request's generator state; work holds V candidates. */
int serve_sample(const float *logits, size_t V, const clnpu_sampling *s, uint64_t *rng, serve_cand *work);
/* log p(token) under softmax(logits), and the `top` most likely ids with their log p. */
void serve_logprobs(const float *logits, size_t V, int token, size_t top, serve_cand *work, float *out_lp,
                    int *out_ids, float *out_lps);

struct clnpu_pipeline;
/* Serving a plan over MPI ranks (serve_mpi.c): rank 0 tells the others the pipeline call it is
 * about to make, so that they make it too (op: SERVE_CMD_*). */
enum { SERVE_CMD_STOP, SERVE_CMD_PREFILL, SERVE_CMD_DECODE, SERVE_CMD_RESET };
clnpu_status serve_mpi_announce(struct clnpu_pipeline *p, int op, size_t seq, const size_t *seqs, const int *ids,
                                size_t n, bool logits);

#endif
