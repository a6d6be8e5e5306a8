/* A barrier for the host threads of one step (tensor-parallel ranks, attention replicas) that a
 * failing thread can break: the others leave their next wait with the failure instead of waiting
 * for a thread that will never come, and the first failure's message is kept for the step. */
#ifndef CLNPU_RUNTIME_BARRIER_H
#define CLNPU_RUNTIME_BARRIER_H

#include <pthread.h>
#include <stddef.h>

#include "clnpu/status.h"

typedef struct clnpu_barrier {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t arrived, generation;
    clnpu_status failed; /* the first failure this step */
    char msg[1024];
} clnpu_barrier;

void clnpu_barrier_init(clnpu_barrier *b);
void clnpu_barrier_destroy(clnpu_barrier *b);
/* Before a step, with no thread inside: forget the last step's failure. */
void clnpu_barrier_reset(clnpu_barrier *b);
/* The thread `who` (e.g. "tensor-parallel rank 1") failed with st, its message on this thread. */
clnpu_status clnpu_barrier_fail(clnpu_barrier *b, const char *who, clnpu_status st);
/* The step's first failure (CLNPU_OK if none), re-raised with its message on this thread. */
clnpu_status clnpu_barrier_status(clnpu_barrier *b);
/* Wait until n threads have arrived. The last to arrive first runs last(ctx) when given, while
 * the others wait (its failure breaks the barrier, recorded as `who`'s). A thread released by a
 * failure returns it, saying `stopped` (e.g. "another rank failed"). */
clnpu_status clnpu_barrier_wait(clnpu_barrier *b, size_t n, clnpu_status (*last)(void *), void *ctx,
                                const char *who, const char *stopped);

#endif
