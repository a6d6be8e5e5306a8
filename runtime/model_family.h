/* Internal: the activations the sparse-attention indexer and A.X K2's gates add to a model. */
#ifndef CLNPU_MODEL_FAMILY_H
#define CLNPU_MODEL_FAMILY_H

#include "model_internal.h"

typedef struct model_family {
    clnpu_buffer *cq2;           /* A.X K2: [T][2 q_lora_rank] = q_resid | q_compressed, q_gate_proj's input */
    clnpu_buffer *qg;            /* A.X K2: [T][H][dqk + v]: query, then output gate, per head */
    clnpu_buffer *gn1, *gn2;     /* gated norms: [T][rank], [T][hidden] */
    clnpu_buffer *iq, *ik, *iw;  /* indexer: queries [T][nh][D], keys [T][D], head weights [T][nh] */
    clnpu_buffer *scores;        /* [T][max_context] */
    clnpu_buffer *idx, *count;   /* top-k: [T][k], [T] */
    clnpu_buffer *q_abs, *z;     /* absorbed MLA over the selected rows: [T][H][R] */
    size_t k;                    /* min(index_topk, max_context) */
} model_family;

#endif
