/* A stage's forward over its data-parallel attention replicas: the step's rows are dealt to the
 * replicas by sequence (q mod replicas, as local sequence q / replicas), each replica runs on a
 * host thread of its own, and their rows of hidden states and logits go back in the step's
 * order. The replicas meet at every MoE layer (dp.c). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "dp.h"
#include "pipeline_internal.h"

typedef struct replica_call {
    clnpu_model *m;
    clnpu_dp_group *dp;
    size_t replica, n;
    int *ids;
    size_t *seqs, *pos;
    bool decode;
    float *h_in, *h_out, *logits;
} replica_call;

static void *replica_main(void *arg)
{
    replica_call *c = arg;
    clnpu_status st = clnpu_model_forward_stage(c->m, c->n, c->ids, c->seqs, c->pos, c->decode, c->h_in, c->h_out,
                                                c->logits);
    /* a failure before the replica's first MoE layer must release the others waiting there */
    if (st) clnpu_dp_fail(c->dp, c->replica, st);
    return NULL;
}

void pipeline_deal_rows(size_t n, const size_t *seqs, const int *ids, const size_t *pos, size_t R, size_t *count,
                        size_t *start, size_t *order, int *lids, size_t *lseq, size_t *lpos)
{
    size_t fill[CLNPU_MAX_EP];
    start[0] = 0;
    for (size_t j = 0; j < R; j++) count[j] = 0;
    for (size_t i = 0; i < n; i++) count[seqs[i] % R]++;
    for (size_t j = 0; j < R; j++) start[j + 1] = start[j] + count[j], fill[j] = start[j];
    for (size_t i = 0; i < n; i++) {
        const size_t k = fill[seqs[i] % R]++;
        order[k] = i;
        if (lids) lids[k] = ids ? ids[i] : 0, lseq[k] = seqs[i] / R, lpos[k] = pos[i];
    }
}

clnpu_status pipeline_stage_forward(clnpu_pipeline *p, size_t s, size_t n, const int *ids, const size_t *seqs,
                                    const size_t *pos, bool decode, const float *h_in, float *h_out, float *logits)
{
    if (p->dp_ranks[s]) return pipeline_mpi_dp_forward(p, s, n, ids, seqs, pos, decode, h_in, h_out, logits);
    if (p->tp_ranks[s]) return pipeline_mpi_tp_forward(p, s, n, ids, seqs, pos, decode, h_in, h_out, logits);
    const size_t R = p->nrep[s];
    if (R <= 1) return clnpu_model_forward_stage(p->stages[s], n, ids, seqs, pos, decode, h_in, h_out, logits);
    const size_t d = p->cfg.hidden_size, V = p->cfg.vocab_size;
    size_t count[CLNPU_MAX_EP], start[CLNPU_MAX_EP + 1];
    size_t *order = malloc(n * sizeof *order), *lseq = malloc(n * sizeof *lseq), *lpos = malloc(n * sizeof *lpos);
    int *lids = malloc(n * sizeof *lids);
    float *hin = h_in ? malloc(n * d * sizeof *hin) : NULL, *hout = h_out ? malloc(n * d * sizeof *hout) : NULL;
    float *lg = logits ? malloc(n * V * sizeof *lg) : NULL;
    clnpu_status st = CLNPU_OK;
    if (!order || !lseq || !lpos || !lids || (h_in && !hin) || (h_out && !hout) || (logits && !lg))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st) pipeline_deal_rows(n, seqs, ids, pos, R, count, start, order, lids, lseq, lpos);
    for (size_t k = 0; hin && !st && k < n; k++) memcpy(hin + k * d, h_in + order[k] * d, d * sizeof *hin);
    replica_call calls[CLNPU_MAX_EP];
    pthread_t th[CLNPU_MAX_EP];
    bool started[CLNPU_MAX_EP] = {false};
    if (!st) clnpu_dp_group_begin(p->dps[s], count);
    for (size_t j = 0; !st && j < R; j++) {
        if (!count[j]) continue;
        const size_t a = start[j];
        calls[j] = (replica_call){j ? p->reps[s * CLNPU_MAX_EP + j] : p->stages[s], p->dps[s], j, count[j], lids + a,
                                  lseq + a, lpos + a, decode, hin ? hin + a * d : NULL, hout ? hout + a * d : NULL,
                                  lg ? lg + a * V : NULL};
        if (pthread_create(&th[j], NULL, replica_main, &calls[j])) {
            clnpu_dp_fail(p->dps[s], j, clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "cannot start its host thread"));
            break;
        }
        started[j] = true;
    }
    for (size_t j = 0; j < R; j++)
        if (started[j]) pthread_join(th[j], NULL);
    if (!st) st = clnpu_dp_group_status(p->dps[s]); /* the first failure, with its message */
    for (size_t k = 0; !st && k < n; k++) {
        if (hout) memcpy(h_out + order[k] * d, hout + k * d, d * sizeof *hout);
        if (lg) memcpy(logits + order[k] * V, lg + k * V, V * sizeof *lg);
    }
    free(order), free(lseq), free(lpos), free(lids), free(hin), free(hout), free(lg);
    return st;
}
