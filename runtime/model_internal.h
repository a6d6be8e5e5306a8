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
    clnpu_weight *qkv_a; /* [q_lora + R + DR, d]: q_a's rows then kv_a's, in place of both (see model_load.c) */
    clnpu_weight *uk_t; /* H matrices [R, nope]: W_UK^T per head, for the absorbed decode */
    clnpu_weight *uv;   /* H matrices [v, R]: W_UV per head */
    clnpu_weight *o;
    clnpu_weight *dense_gate_up, *dense_down; /* MoE layers of TP peers: their shared-expert slice */
    clnpu_moe_block *moe;
    clnpu_buffer *cache; /* [pages][page][R + DR] */
    /* DeepSeek Sparse Attention indexer (deepseek_v32, axk2): wq_b [nh * D, q_lora_rank], wk [D, d],
     * weights_proj [nh, d], k_norm (LayerNorm weight, bias) and its key cache [pages][page][D] */
    clnpu_weight *ix_wq, *ix_wk, *ix_w;
    clnpu_buffer *ix_knorm_w, *ix_knorm_b, *ix_cache;
    /* A.X K2: gated norms' fc1 [rank, d] and fc2 [d, rank] (input; post-attention on MoE layers);
     * q_b holds q_gate_proj [H * (dqk + v), 2 * q_lora_rank] */
    clnpu_weight *in_fc1, *in_fc2, *post_fc1, *post_fc2;
} model_layer;

struct model_family; /* activations of the sparse-attention and gated layers (model_load_family.c) */

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
    clnpu_model_weight_stats wstats; /* the GEMM weights as loaded */
    struct model_family *fam;        /* NULL for models without an indexer or gates */
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
    clnpu_buffer *nonfinite; /* one int: the first tag whose tensor held NaN / Inf (CL_INT_MAX: none) */
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

/* The newer family members (model_load_family.c, model_forward_family.c). */
struct loader;
clnpu_status clnpu_loader_upload_mat(clnpu_model *m, struct loader *L, const char *name, size_t n, size_t k,
                                     clnpu_weight **out);
/* rows [r0, r0 + rows) of a stored [n, k] matrix (a tensor-parallel rank's heads) */
clnpu_status clnpu_loader_upload_rows(clnpu_model *m, struct loader *L, const char *name, size_t n, size_t k, size_t r0,
                                      size_t rows, clnpu_weight **out);
clnpu_status clnpu_loader_upload_vec(clnpu_model *m, struct loader *L, const char *name, size_t n, float fill,
                                     clnpu_buffer **out);
clnpu_status clnpu_model_family_create(clnpu_model *m);
/* What clnpu_model_family_create allocates (bytes, for max_tokens T, context S, H heads on the
 * rank) and the indexer's key cache per cache row (bytes, 0 without an indexer). */
void clnpu_model_family_memory(const clnpu_model_config *c, size_t T, size_t S, size_t H, double *out_workspaces,
                               double *out_key_bytes_per_row);
void clnpu_model_family_destroy(clnpu_model *m);
clnpu_status clnpu_model_load_family_layer(clnpu_model *m, struct loader *L, size_t l, model_layer *ly);
void clnpu_model_family_destroy_layer(model_layer *ly);
/* Layer l's input norm (RMSNorm, gated for A.X K2) from m->h into m->a. */
clnpu_status clnpu_model_family_in_norm(clnpu_model *m, model_layer *ly, size_t T);
/* The post-attention norm's gate (A.X K2 MoE layers) on m->a, after its RMSNorm. */
clnpu_status clnpu_model_family_post_gate(clnpu_model *m, model_layer *ly, size_t T);
/* Attention of a layer with the indexer or the output gate, from the normed m->a to m->attn
 * (before o_proj), the latent rows appended to the cache: q (A.X K2: through q_gate_proj), the
 * latent, the indexer's keys and top-k, absorbed MLA over the selected rows, the gate. */
clnpu_status clnpu_model_family_attention(clnpu_model *m, model_layer *ly, size_t T, size_t maxlen);

/* Layer ly's new latent rows (T rows of c | k_pe from src) into its paged cache at m->pos;
 * rotate: k_pe gets RoPE on the way (else it was rotated before). opts: mla.cl's defines. */
clnpu_status clnpu_model_kv_append(clnpu_model *m, model_layer *ly, const char *opts, clnpu_view src, bool rotate,
                                   clnpu_rope_layout layout, size_t T);

/* Count one GEMM weight as loaded (its dtype, elements and scales). */
void clnpu_model_weight_stats_add(clnpu_model_weight_stats *s, const clnpu_weight_desc *d);

clnpu_status clnpu_model_forward(clnpu_model *m, size_t ntok, const int *ids, const size_t *seq_of,
                                 const size_t *pos_of, bool decode, float *logits);
#endif
