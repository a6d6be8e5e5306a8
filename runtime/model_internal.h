/* Internal state of a model on one device. */
#ifndef CLNPU_MODEL_INTERNAL_H
#define CLNPU_MODEL_INTERNAL_H

#include "clnpu/gemm.h"
#include "clnpu/model.h"
#include "clnpu/ops.h"
#include "clnpu/moe.h"

typedef struct model_layer {
    clnpu_buffer *in_norm, *post_attn_norm, *q_a_norm, *kv_a_norm, *post_mlp_norm; /* f32 */
    clnpu_weight *q_a, *q_b; /* q_b is q_proj when q_lora_rank == 0 */
    clnpu_weight *kv_a, *kv_b;
    clnpu_weight *uk_t; /* H matrices [R, nope]: W_UK^T per head, for the absorbed decode */
    clnpu_weight *uv;   /* H matrices [v, R]: W_UV per head */
    clnpu_weight *o;
    clnpu_weight *dense_gate_up, *dense_down; /* MoE layers of TP peers: their shared-expert slice */
    clnpu_moe_block *moe;
    clnpu_buffer *cache; /* [pages][page][R + DR] */
} model_layer;

struct clnpu_tp_group;

struct clnpu_model {
    clnpu_device *dev;
    clnpu_model_config cfg;
    clnpu_model_options opt;
    /* tensor parallel (clnpu_model_create_tp): this rank's heads [h0, h0 + heads) and dense MLP
     * features [i0, i0 + inter); rank 0 holds the embedding, head and MoE blocks, and the peers */
    size_t tp_rank, tp_size, heads, h0, inter, i0;
    size_t shared, s0; /* this rank's features of the shared expert(s): [s0, s0 + shared) */
    size_t vocab, v0;  /* this rank's rows of the embedding and LM head: [v0, v0 + vocab) */
    struct clnpu_tp_group *tp;
    struct clnpu_model **peers; /* rank 0: ranks 1 .. tp_size - 1 */
    bool head_last_only;        /* the LM head for a step's last row only (clnpu_model_prefill_last) */
    float *logits_host;         /* peers with the head: their logits columns on the way to rank 0 */
    /* data-parallel attention (a replica of a stage): the MoE layers meet the other replicas in
     * dp; replica 0's first rank holds the MoE blocks (a step's rows, all replicas' together,
     * are at most max_tokens) */
    struct clnpu_dp_group *dp;
    size_t replica;
    bool serve_shard; /* a TP peer in its own process: MoE blocks only to serve its expert shard */
    size_t dqk, lat;   /* qk head dim, latent row (R + DR) */
    float scale;       /* softmax scale */
    model_layer *layers;
    clnpu_buffer *embed; /* [vocab][hidden] (this rank's rows), bf16 or f32 */
    clnpu_dtype embed_dtype;
    clnpu_buffer *final_norm;
    clnpu_weight *lm_head;
    clnpu_rope_table *rope;
    /* paged cache bookkeeping (same page ids in every layer) */
    size_t pages, max_blocks;
    int *block_table;       /* host [max_sequences][max_blocks], -1 = none */
    int *free_pages;        /* stack */
    unsigned *page_refs;    /* [pages]: block-table entries plus callers' references (model_pages.c) */
    size_t nfree;
    size_t *seq_len;
    clnpu_buffer *block_table_dev;
    /* activations, reused by every layer (sized for max_tokens, or max_context for prefill K/V) */
    clnpu_buffer *h, *a, *cq, *q, *kv0, *attn, *mlp, *mlp_h, *logits, *ids, *pos, *seqs;
    clnpu_buffer *latent, *kvfull, *kfull; /* prefill: whole-context expansion */
    clnpu_buffer *q_abs, *z, *qpe, *lens;   /* decode */
    clnpu_buffer *sampled;                  /* decode: ids drawn on the device */
    clnpu_buffer *step_bt;  /* decode: block-table rows in batch order (row b = sequence seq_of[b]) */
    int *step_bt_host;      /* its host side, uploaded without waiting */
    clnpu_buffer *stepbuf;  /* parent of ids, pos, seqs, lens: one upload per step */
    size_t step_slot;       /* bytes per slot */
    int *step_host;         /* its host mirror, uploaded without waiting */
    /* set by clnpu_model_decode_sample for the one forward it runs */
    const clnpu_sampling *sample;
    size_t sample_step;
    int *sample_out;
    /* capture (tests) */
    float *hidden;   /* [layers + 2][tokens][hidden] */
    int *route_ids;  /* [layers][tokens][top_k] */
    float *route_w;
    size_t captured_tokens;
};

struct clnpu_dp_group;
/* Replica `replica` of `replicas` data-parallel attention replicas of a stage, tensor parallel
 * over devs[0 .. tp) (clnpu_model_create_tp), meeting the others at the MoE layers in dp. */
clnpu_status clnpu_model_create_replica(clnpu_device *const *devs, size_t tp, size_t replica, size_t replicas,
                                        struct clnpu_dp_group *dp, const clnpu_model_config *cfg,
                                        const clnpu_checkpoint *ck, const clnpu_model_options *opt, clnpu_model **out);

/* Tensor-parallel rank `rank` of `tp` of attention replica `replica` of `replicas` alone (the other
 * ranks in other processes), meeting them in group (clnpu_tp_group_set_remote) and the other
 * replicas in dp; with opt's expert shards any but the first rank also holds its shard to serve. */
clnpu_status clnpu_model_create_tp_rank(clnpu_device *dev, size_t rank, size_t tp, struct clnpu_tp_group *group,
                                       size_t replica, size_t replicas, struct clnpu_dp_group *dp,
                                       const clnpu_model_config *cfg, const clnpu_checkpoint *ck,
                                       const clnpu_model_options *opt, clnpu_model **out);
/* One rank's forward (clnpu_model_forward_stage without spawning peers); want_logits must be the
 * same on every rank of a TP group (the head's columns are gathered). */
clnpu_status clnpu_model_forward_rank(clnpu_model *m, size_t T, const int *ids, const size_t *seq_of, const size_t *pos_of,
                                      bool decode, const float *h_in, float *h_out, float *logits, bool want_logits);

clnpu_status clnpu_model_forward(clnpu_model *m, size_t ntok, const int *ids, const size_t *seq_of,
                                 const size_t *pos_of, bool decode, float *logits);
#endif
