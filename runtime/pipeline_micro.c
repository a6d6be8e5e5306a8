/* Micro-batches in flight through the stages of one process: one host thread per stage, each
 * taking the groups in order as the previous stage hands them over, so stage s computes group j
 * while stage s + 1 computes j - 1 (each stage has its own device and queue). Decode groups are
 * sets of sequences (independent); prefill groups are a prompt's chunks, which every stage takes
 * in order, so each chunk finds its prefix's cache rows already written. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "pipeline_internal.h"

typedef struct micro_run {
    clnpu_pipeline *p;
    bool decode;
    size_t n, groups;
    const size_t *start; /* group j: rows [start[j], start[j + 1]) */
    const int *ids;
    const size_t *seqs, *pos;
    float *logits, *hand; /* hand: [stages - 1][n][hidden], stage s's output rows */
    size_t *done;         /* micro-batches finished per stage */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    clnpu_status st;      /* the first failure; every thread stops at its next hand-over */
    char msg[1024];
} micro_run;

typedef struct stage_arg {
    micro_run *r;
    size_t s;
} stage_arg;

static void *stage_main(void *arg)
{
    micro_run *r = ((stage_arg *)arg)->r;
    const size_t s = ((stage_arg *)arg)->s, H = r->p->cfg.hidden_size, V = r->p->cfg.vocab_size;
    const bool last = s + 1 == r->p->count;
    for (size_t j = 0; j < r->groups; j++) {
        pthread_mutex_lock(&r->mu);
        while (!r->st && s && r->done[s - 1] <= j) pthread_cond_wait(&r->cv, &r->mu);
        const bool stop = r->st != CLNPU_OK;
        pthread_mutex_unlock(&r->mu);
        if (stop) return NULL;
        const size_t a = r->start[j], len = r->start[j + 1] - a;
        clnpu_status st = pipeline_stage_forward(r->p, s, len, r->ids + a, r->seqs + a, r->pos + a, r->decode,
                                                    s ? r->hand + ((s - 1) * r->n + a) * H : NULL,
                                                    last ? NULL : r->hand + (s * r->n + a) * H,
                                                    last && r->logits ? r->logits + a * V : NULL);
        pthread_mutex_lock(&r->mu);
        if (st && !r->st) {
            r->st = st;
            snprintf(r->msg, sizeof r->msg, "stage %zu, micro-batch %zu: %s", s, j, clnpu_error_message());
        }
        if (!st) r->done[s]++;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (st) return NULL;
    }
    return NULL;
}

clnpu_status pipeline_run_micro(clnpu_pipeline *p, size_t n, const int *ids, const size_t *seqs, const size_t *pos,
                                bool decode, const size_t *start, size_t groups, float *logits)
{
    micro_run r = {.p = p, .decode = decode, .n = n, .groups = groups, .start = start, .ids = ids, .seqs = seqs,
                   .pos = pos, .logits = logits};
    r.hand = malloc((p->count - 1) * n * p->cfg.hidden_size * sizeof(float));
    r.done = calloc(p->count, sizeof *r.done);
    stage_arg *args = calloc(p->count, sizeof *args);
    pthread_t *th = calloc(p->count, sizeof *th);
    if (!r.hand || !r.done || !args || !th) {
        free(r.hand), free(r.done), free(args), free(th);
        return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    }
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    size_t started = 0;
    for (; started < p->count; started++) {
        args[started] = (stage_arg){&r, started};
        if (pthread_create(&th[started], NULL, stage_main, &args[started])) {
            pthread_mutex_lock(&r.mu);
            if (!r.st) r.st = CLNPU_ERR_OUT_OF_MEMORY, snprintf(r.msg, sizeof r.msg, "cannot start a stage thread");
            pthread_cond_broadcast(&r.cv);
            pthread_mutex_unlock(&r.mu);
            break;
        }
    }
    for (size_t s = 0; s < started; s++) pthread_join(th[s], NULL);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    free(r.hand), free(r.done), free(args), free(th);
    /* the failing thread's message lives in its thread; say it again here */
    return r.st ? clnpu_fail(r.st, "%s", r.msg) : CLNPU_OK;
}
