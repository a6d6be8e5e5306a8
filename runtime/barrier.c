/* The breakable barrier of barrier.h. */
#include <stdio.h>
#include <string.h>

#include "../common/error.h"
#include "barrier.h"

void clnpu_barrier_init(clnpu_barrier *b)
{
    memset(b, 0, sizeof *b);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
}

void clnpu_barrier_destroy(clnpu_barrier *b)
{
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}

void clnpu_barrier_reset(clnpu_barrier *b)
{
    pthread_mutex_lock(&b->mu);
    b->failed = CLNPU_OK, b->msg[0] = '\0', b->arrived = 0;
    pthread_mutex_unlock(&b->mu);
}

clnpu_status clnpu_barrier_fail(clnpu_barrier *b, const char *who, clnpu_status st)
{
    pthread_mutex_lock(&b->mu);
    if (!b->failed) {
        b->failed = st;
        snprintf(b->msg, sizeof b->msg, "%s: %s", who, clnpu_error_message());
    }
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    return st;
}

clnpu_status clnpu_barrier_status(clnpu_barrier *b)
{
    pthread_mutex_lock(&b->mu);
    const clnpu_status st = b->failed;
    char msg[sizeof b->msg];
    memcpy(msg, b->msg, sizeof msg);
    pthread_mutex_unlock(&b->mu);
    return st ? clnpu_fail(st, "%s", msg) : CLNPU_OK;
}

clnpu_status clnpu_barrier_wait(clnpu_barrier *b, size_t n, clnpu_status (*last)(void *), void *ctx,
                                const char *who, const char *stopped)
{
    clnpu_status mine = CLNPU_OK;
    pthread_mutex_lock(&b->mu);
    const size_t gen = b->generation;
    if (!b->failed && ++b->arrived == n) {
        if (last) { /* every other thread is waiting below: this one works alone */
            pthread_mutex_unlock(&b->mu);
            mine = last(ctx);
            if (mine) clnpu_barrier_fail(b, who, mine);
            pthread_mutex_lock(&b->mu);
        }
        b->arrived = 0, b->generation++;
        pthread_cond_broadcast(&b->cv);
    }
    while (!b->failed && b->generation == gen) pthread_cond_wait(&b->cv, &b->mu);
    /* a thread that passed before a later failure has passed */
    const clnpu_status st = b->generation != gen && (!b->failed || !last) ? CLNPU_OK : b->failed;
    pthread_mutex_unlock(&b->mu);
    if (mine) return mine;
    return st ? clnpu_fail(st, "%s", stopped) : CLNPU_OK;
}
