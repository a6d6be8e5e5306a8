/* Prefill and decode requests as forward steps (see step.h). */
#include "step.h"

#include <stdlib.h>

#include "../common/error.h"

clnpu_status clnpu_step_prefill(const clnpu_stepper *s, size_t seq, const int *ids, size_t n, float *logits)
{
    if (seq >= s->max_sequences)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sequence %zu: the %s was created for %zu", seq, s->what,
                          s->max_sequences);
    size_t *seqs = malloc((n ? n : 1) * sizeof *seqs), *pos = malloc((n ? n : 1) * sizeof *pos);
    clnpu_status st = seqs && pos ? CLNPU_OK : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    /* Long prompts go through in chunks of max_tokens (chunked prefill over the cached prefix);
     * an owner that can keep chunks in flight gets them all at once. */
    if (!st && s->forward_chunks && n > s->max_tokens) {
        const size_t p0 = s->seq_len[seq];
        for (size_t i = 0; i < n; i++) seqs[i] = seq, pos[i] = p0 + i;
        st = s->forward_chunks(s->ctx, n, ids, seqs, pos, s->max_tokens, logits);
        free(seqs), free(pos);
        return st;
    }
    for (size_t done = 0; !st && done < n;) {
        const size_t T = n - done < s->max_tokens ? n - done : s->max_tokens, p0 = s->seq_len[seq];
        for (size_t i = 0; i < T; i++) seqs[i] = seq, pos[i] = p0 + i;
        st = s->forward(s->ctx, T, ids + done, seqs, pos, false, logits ? logits + done * s->vocab : NULL);
        done += T;
    }
    free(seqs), free(pos);
    return st;
}

clnpu_status clnpu_step_decode(const clnpu_stepper *s, const size_t *seqs, const int *ids, size_t n, float *logits)
{
    if (n > s->max_sequences || n > s->max_tokens)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "decode batch of %zu > %zu sequences", n,
                          s->max_sequences < s->max_tokens ? s->max_sequences : s->max_tokens);
    size_t *pos = malloc((n ? n : 1) * sizeof *pos);
    if (!pos) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    clnpu_status st = CLNPU_OK;
    for (size_t i = 0; i < n && !st; i++) {
        if (seqs[i] >= s->max_sequences) {
            st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sequence %zu: the %s was created for %zu", seqs[i], s->what,
                            s->max_sequences);
            break;
        }
        for (size_t j = 0; j < i && !st; j++)
            if (seqs[j] == seqs[i]) st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sequence %zu twice in one decode step", seqs[i]);
        pos[i] = s->seq_len[seqs[i]];
    }
    if (!st) st = s->forward(s->ctx, n, ids, seqs, pos, true, logits);
    free(pos);
    return st;
}
