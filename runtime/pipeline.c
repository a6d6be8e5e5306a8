/* Pipeline execution: one model stage per device (its own context and profile), the residual
 * stream handed from stage to stage through the host or, under mpirun, between ranks
 * (pipeline_mpi.c); expert shards of a stage on several devices or ranks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "dp.h"
#include "tp.h"
#include "pipeline_internal.h"
#include "step.h"

void clnpu_pipeline_destroy(clnpu_pipeline *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->count; i++) {
        if (p->stages) clnpu_model_destroy(p->stages[i]);
        for (size_t j = 1; p->reps && j < CLNPU_MAX_EP; j++) clnpu_model_destroy(p->reps[i * CLNPU_MAX_EP + j]);
        if (p->dps) clnpu_dp_group_destroy(p->dps[i]);
        if (p->tps) clnpu_tp_group_destroy(p->tps[i]); /* after the stage's model, which uses it */
        if (p->devs) clnpu_device_close(p->devs[i]);
        for (size_t j = 0; p->ep_devs && j < CLNPU_MAX_EP; j++) clnpu_device_close(p->ep_devs[i * CLNPU_MAX_EP + j]);
    }
    free(p->stages), free(p->reps), free(p->dps), free(p->nrep), free(p->dp_ranks), free(p->tp_ranks), free(p->tps), free(p->dp_in), free(p->dp_out), free(p->devs), free(p->ep_devs), free(p->h[0]), free(p->h[1]);
    free(p->seq_len), free(p->owner), free(p->shard_rank), free(p->remote_ctx), free(p->remotes);
    free(p->srv_rows), free(p->xch_rows), free(p->srv_segs), free(p->wire_segs);
    pipeline_mpi_release(p);
    free(p);
}

int clnpu_pipeline_rank(const clnpu_pipeline *p) { return p->rank; }
void clnpu_pipeline_set_micro_batches(clnpu_pipeline *p, size_t m) { p->micro = m ? m : 1; }
int clnpu_pipeline_ranks(const clnpu_pipeline *p) { return p->nranks; }

/* The plan device of slot j of a stage: slot 0 is the stage's main device (`device`, whatever
 * ep_devices[0] says), slot j > 0 is ep_devices[j]. */
static size_t slot_device(const clnpu_stage_spec *s, size_t j) { return j ? s->ep_devices[j] : s->device; }

/* Plan devices onto this process's OpenCL devices. In one process plan device d is OpenCL device
 * d: a plan device that is not present is an error, unless the caller shares devices (d mod N,
 * each in a context of its own: a many-device plan on a small machine). Under mpirun plan
 * devices number the whole job's devices, and a rank opens d mod the devices its node has. Either
 * way two plan devices never meet on one OpenCL device in one process unless shared. */
typedef struct device_map {
    size_t ndev;
    bool share, mpi;
    size_t *plan, *cl, n, cap; /* what this process opened so far (plan device, OpenCL device) */
} device_map;

static clnpu_status map_device(device_map *m, size_t d, size_t *out)
{
    if (!m->share && !m->mpi && d >= m->ndev)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan device %zu is not present: %zu OpenCL device%s (0..%zu); a "
                          "plan for more devices runs here only with its devices shared (clnpu run --share-devices)",
                          d, m->ndev, m->ndev == 1 ? "" : "s", m->ndev - 1);
    *out = d % m->ndev;
    for (size_t k = 0; k < m->n; k++) {
        if (m->plan[k] == d) return CLNPU_OK;
        if (m->cl[k] == *out && !m->share)
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "plan devices %zu and %zu would both run on OpenCL device %zu "
                              "of this process (%zu present); give each its own device, or share devices (clnpu run "
                              "--share-devices)", m->plan[k], d, *out, m->ndev);
    }
    if (m->n < m->cap) m->plan[m->n] = d, m->cl[m->n++] = *out; /* cap: every device of every stage */
    return CLNPU_OK;
}

clnpu_status clnpu_pipeline_create(const clnpu_model_config *cfg, const clnpu_checkpoint *ck,
                                   const clnpu_stage_spec *sp, size_t n, const clnpu_model_options *opt,
                                   clnpu_pipeline **out)
{
    return clnpu_pipeline_create_mpi(cfg, ck, sp, n, opt, NULL, out);
}

clnpu_status clnpu_pipeline_create_mpi(const clnpu_model_config *cfg, const clnpu_checkpoint *ck,
                                       const clnpu_stage_spec *sp, size_t n, const clnpu_model_options *opt,
                                       const void *mpi_comm, clnpu_pipeline **out)
{
    *out = NULL;
    if (!n) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "pipeline: no stages");
    clnpu_device_info *infos = NULL;
    size_t ndev = 0;
    clnpu_status st = clnpu_device_list(&infos, &ndev);
    clnpu_device_list_free(infos);
    if (st) return st;
    clnpu_pipeline *p = calloc(1, sizeof *p);
    if (!p) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    p->cfg = *cfg, p->count = n;
    p->devs = calloc(n, sizeof *p->devs);
    p->stages = calloc(n, sizeof *p->stages);
    p->reps = calloc(n * CLNPU_MAX_EP, sizeof *p->reps);
    p->dps = calloc(n, sizeof *p->dps);
    p->nrep = calloc(n, sizeof *p->nrep);
    p->dp_ranks = calloc(n, sizeof *p->dp_ranks);
    p->tp_ranks = calloc(n, sizeof *p->tp_ranks);
    p->tps = calloc(n, sizeof *p->tps);
    p->ep_devs = calloc(n * CLNPU_MAX_EP, sizeof *p->ep_devs);
    clnpu_model_options o = opt ? *opt : clnpu_model_options_default();
    p->max_tokens = o.max_tokens ? o.max_tokens : 512;
    p->h[0] = malloc(p->max_tokens * cfg->hidden_size * sizeof(float));
    p->h[1] = malloc(p->max_tokens * cfg->hidden_size * sizeof(float));
    p->max_sequences = o.max_sequences ? o.max_sequences : 1;
    p->seq_len = calloc(p->max_sequences, sizeof *p->seq_len);
    p->owner = calloc(n, sizeof *p->owner);
    p->shard_rank = calloc(n * CLNPU_MAX_EP, sizeof *p->shard_rank);
    p->remote_ctx = calloc(n, sizeof *p->remote_ctx);
    p->remotes = calloc(n, sizeof *p->remotes);
    p->nranks = 1;
    if (!p->devs || !p->stages || !p->reps || !p->dps || !p->nrep || !p->dp_ranks || !p->tp_ranks || !p->tps || !p->h[0] || !p->h[1] || !p->seq_len || !p->owner || !p->shard_rank ||
        !p->remote_ctx || !p->remotes)
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st) st = pipeline_mpi_setup(p, sp, n, mpi_comm);
    p->never = (clnpu_moe_remote){pipeline_never_exchange, p};
    if (!st && p->nranks > 1 && !(p->wire_segs = malloc(3 * (cfg->n_routed_experts + 1) * sizeof *p->wire_segs)))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    clnpu_profile_set *set = NULL; /* to tell a known stage profile from a typo */
    if (!st) st = clnpu_profile_set_builtin(&set);
    device_map map = {.ndev = ndev, .share = o.share_devices, .mpi = p->nranks > 1, .cap = n * CLNPU_MAX_EP};
    map.plan = calloc(map.cap, sizeof *map.plan), map.cl = calloc(map.cap, sizeof *map.cl);
    if (!st && (!map.plan || !map.cl)) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t i = 0; !st && i < n; i++) {
        p->remote_ctx[i] = (struct remote_ctx){p, i};
        p->remotes[i] = (clnpu_moe_remote){pipeline_mpi_exchange, &p->remote_ctx[i]};
        /* this rank's part of stage i: the whole stage (owner), one expert shard, or nothing */
        const bool own = p->owner[i] == p->rank;
        size_t serve = CLNPU_MAX_EP;
        for (size_t j = 0; !own && j < sp[i].ep_count && j < CLNPU_MAX_EP; j++)
            if (p->shard_rank[i * CLNPU_MAX_EP + j] == p->rank) serve = j;
        if (!own && serve == CLNPU_MAX_EP) continue;
        const size_t main_dev = slot_device(&sp[i], own ? 0 : serve);
        /* each plan device in its own context, bound to the stage's profile (emulation when it
         * is not this device's own) */
        clnpu_device_options dopt = clnpu_device_options_default();
        if (sp[i].profile[0] && !clnpu_profile_set_find(set, sp[i].profile)) {
            st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "stage %zu: no target profile '%s'", i, sp[i].profile);
            break;
        }
        if (sp[i].profile[0]) dopt.target = sp[i].profile;
        dopt.memory_bytes = sp[i].memory_bytes;
        size_t cl_index = 0;
        st = map_device(&map, main_dev, &cl_index);
        if (!st) st = clnpu_device_open(cl_index, &dopt, &p->devs[i]);
        if (st) {
            st = clnpu_fail_context(st, "stage %zu (plan device %zu)", i, main_dev);
            break;
        }
        clnpu_model_options so = o;
        so.layer_begin = sp[i].layer_begin, so.layer_end = sp[i].layer_end;
        /* attention replicas on the stage's ranks (a rank per device): each runs the whole stage
         * for its sequences, the embedding and head included */
        const bool dp_rank = p->group_comm && sp[i].replicas > 1;
        /* tensor-parallel ranks on the stage's ranks: each holds its share of every layer */
        const bool tp_rank = p->group_comm && sp[i].tp > 1;
        so.embed = (own || dp_rank || tp_rank) && sp[i].embed, so.head = (own || dp_rank || tp_rank) && sp[i].head;
        if (dp_rank) so.max_sequences = (p->max_sequences + sp[i].replicas - 1) / sp[i].replicas;
        /* expert parallel: one device (context) per plan device of the stage held by this rank,
         * the main one reused; shards of other ranks are remote */
        clnpu_moe_shard shards[CLNPU_MAX_EP];
        /* attention replica j: tensor parallel over tp_devs[j * tp .. (j + 1) * tp) */
        clnpu_device *tp_devs[CLNPU_MAX_EP] = {p->devs[i]};
        /* with a rank per device (expert shards on other ranks) the owner runs all attention */
        const size_t tp = own && sp[i].tp > 1 && !p->group_comm ? sp[i].tp : 1;
        const size_t reps = own && sp[i].replicas > 1 && !p->group_comm ? sp[i].replicas : 1;
        if (tp * reps > CLNPU_MAX_EP) {
            st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "stage %zu: %zu attention replicas of tensor parallel %zu; at most %d "
                            "devices", i, reps, tp, CLNPU_MAX_EP);
            break;
        }
        const size_t width = sp[i].ep_count > tp * reps ? sp[i].ep_count : tp * reps;
        for (size_t j = 0; !st && j < width && j < CLNPU_MAX_EP; j++) {
            const bool shard = j < sp[i].ep_count;
            if (shard) shards[j] = (clnpu_moe_shard){NULL, sp[i].ep_experts[j], sp[i].ep_expert_counts[j], NULL};
            if (shard && p->shard_rank[i * CLNPU_MAX_EP + j] != p->rank) {
                shards[j].remote = own ? &p->remotes[i] : &p->never;
                continue;
            }
            clnpu_device *d = p->devs[i];
            const size_t pd = slot_device(&sp[i], j);
            if (j && j < tp * reps && pd == main_dev) {
                st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "stage %zu: tensor-parallel rank %zu is on the main device %zu "
                                "again; each rank needs a device of its own", i, j, main_dev);
                break;
            }
            if (pd != main_dev) {
                size_t ci = 0;
                st = map_device(&map, pd, &ci);
                if (!st) st = clnpu_device_open(ci, &dopt, &p->ep_devs[i * CLNPU_MAX_EP + j]);
                if (st) st = clnpu_fail_context(st, "stage %zu (plan device %zu)", i, pd);
                d = p->ep_devs[i * CLNPU_MAX_EP + j];
            }
            if (shard) shards[j].device = d;
            if (j < tp * reps) tp_devs[j] = d; /* a device serves its TP rank and its expert shard */
        }
        if (st) break;
        so.ep_shards = sp[i].ep_count ? shards : NULL;
        so.ep_count = sp[i].ep_count < CLNPU_MAX_EP ? sp[i].ep_count : CLNPU_MAX_EP;
        p->nrep[i] = reps;
        if (reps > 1) { /* replicas take sequences q with q mod reps = j, as local sequence q / reps */
            so.max_sequences = (p->max_sequences + reps - 1) / reps;
            st = clnpu_dp_group_create(reps, p->max_tokens, cfg->hidden_size, p->devs[i], &p->dps[i]);
        }
        if (tp_rank || dp_rank) {
            /* a rank per device: this rank is TP rank (its place in the stage's group) mod tp of
             * attention replica (its place) / tp; its replica's TP ranks get a communicator, and
             * the replicas meet at every MoE layer */
            const size_t t = sp[i].tp > 1 ? sp[i].tp : 1, R = dp_rank ? sp[i].replicas : 1, g = (size_t)p->group_rank;
            p->tp_ranks[i] = tp_rank, p->dp_ranks[i] = dp_rank, p->nrep[i] = R;
            if (tp_rank) st = pipeline_mpi_tp_comm(p, t);
            if (!st && tp_rank) st = clnpu_tp_group_create(t, p->max_tokens * cfg->hidden_size, &p->tps[i]);
            const clnpu_tp_remote remote = pipeline_mpi_tp_remote(p, i);
            if (!st && tp_rank) clnpu_tp_group_set_remote(p->tps[i], &remote);
            if (!st && dp_rank) st = clnpu_dp_group_create(R, p->max_tokens, cfg->hidden_size, p->devs[i], &p->dps[i]);
            if (!st && dp_rank) clnpu_dp_group_set_remote(p->dps[i], pipeline_mpi_meet, &p->remote_ctx[i]);
            if (!st) st = clnpu_model_create_tp_rank(p->devs[i], g % t, t, p->tps[i], g / t, R, p->dps[i], cfg, ck, &so,
                                                     &p->stages[i]);
            const size_t rows = p->max_tokens * cfg->hidden_size; /* a step's rows, every replica's */
            if (!st && !p->dp_in && (!(p->dp_in = malloc(rows * sizeof(float))) || !(p->dp_out = malloc(rows * sizeof(float)))))
                st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        }
        for (size_t j = 0; !st && !tp_rank && !dp_rank && j < reps; j++) {
            clnpu_model **m = j ? &p->reps[i * CLNPU_MAX_EP + j] : &p->stages[i];
            st = clnpu_model_create_replica(tp_devs + j * tp, tp, j, reps, p->dps[i], cfg, ck, &so, m);
            if (st && reps > 1) st = clnpu_fail_context(st, "attention replica %zu", j);
        }
        if (!st && p->dps[i]) clnpu_dp_group_set_leader(p->dps[i], p->stages[i]);
        if (st) st = clnpu_fail_context(st, "stage %zu (layers %zu..%zu)", i, sp[i].layer_begin, sp[i].layer_end);
        if (!st && own && p->group_size > 1 && !p->xch_rows) { /* the owner packs its exchanges here */
            p->xch_rows = malloc(p->max_tokens * cfg->num_experts_per_tok * cfg->hidden_size * sizeof(float));
            if (!p->xch_rows) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        }
        if (!st && !own && !p->srv_rows) { /* room for the largest exchange */
            const size_t rows = p->max_tokens * cfg->num_experts_per_tok, E = cfg->n_routed_experts;
            p->srv_rows = malloc(rows * cfg->hidden_size * sizeof(float));
            p->srv_segs = malloc((E ? E : 1) * sizeof *p->srv_segs);
            if (!p->srv_rows || !p->srv_segs) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        }
    }
    clnpu_profile_set_destroy(set);
    free(map.plan), free(map.cl);
    st = pipeline_mpi_agree(p, st);
    if (st) {
        clnpu_pipeline_destroy(p);
        return st;
    }
    *out = p;
    return CLNPU_OK;
}

size_t clnpu_pipeline_stage_count(const clnpu_pipeline *p) { return p->count; }
clnpu_device *clnpu_pipeline_stage_device(const clnpu_pipeline *p, size_t s) { return s < p->count ? p->devs[s] : NULL; }


/* One step through every stage: stage s reads h[s % 2] and writes h[(s + 1) % 2]. Across ranks
 * the residual stream goes by point-to-point messages, and the logits are broadcast from the
 * last stage's rank so every rank sees the same next token. */
static clnpu_status run(clnpu_pipeline *p, size_t n, const int *ids, const size_t *seqs, const size_t *pos, bool decode,
                        float *logits)
{
    clnpu_status st = CLNPU_OK;
    /* decode micro-batches: near-equal groups of sequences, in order */
    size_t start[CLNPU_MAX_MICRO + 1], groups = decode && p->micro > 1 && n > 1 && p->count > 1 ? p->micro : 1;
    if (groups > n) groups = n;
    if (groups > CLNPU_MAX_MICRO) groups = CLNPU_MAX_MICRO;
    for (size_t j = 0; j <= groups; j++) start[j] = n * j / groups;
    const bool threads = groups > 1 && p->nranks <= 1; /* in one process: a host thread per stage */
    if (threads) st = pipeline_run_micro(p, n, ids, seqs, pos, true, start, groups, logits);
    /* Otherwise stage by stage; across ranks each group goes on to the next stage's rank as soon
     * as it is done, so that rank computes it while this one computes the next group. */
    const size_t H = p->cfg.hidden_size, V = p->cfg.vocab_size;
    for (size_t s = 0; !threads && !st && s < p->count; s++) {
        const bool last = s + 1 == p->count;
        if (p->owner[s] == p->rank) {
            for (size_t j = 0; !st && j < groups; j++) {
                const size_t a = start[j], len = start[j + 1] - a;
                st = pipeline_recv_hidden(p, s, a, len);
                if (!st)
                    st = pipeline_stage_forward(p, s, len, ids + a, seqs + a, pos + a, decode,
                                                   s ? p->h[s % 2] + a * H : NULL, last ? NULL : p->h[(s + 1) % 2] + a * H,
                                                   last && logits ? logits + a * V : NULL);
                if (!st) st = pipeline_send_hidden(p, s, a, len);
            }
            if (!st) st = pipeline_sends_done(p);
            if (!st && !p->dp_ranks[s] && !p->tp_ranks[s]) st = pipeline_end_stage(p, s);
        } else if (p->stages[s] && (p->dp_ranks[s] || p->tp_ranks[s])) { /* one of the stage's replicas or TP ranks */
            for (size_t j = 0; !st && j < groups; j++) {
                const size_t a = start[j], len = start[j + 1] - a;
                st = pipeline_stage_forward(p, s, len, ids + a, seqs + a, pos + a, decode, NULL, NULL,
                                            last && logits ? logits + a * V : NULL);
            }
        } else if (p->stages[s]) { /* this rank serves one of the stage's expert shards */
            st = pipeline_serve_stage(p, s);
        }
    }
    if (!st) st = pipeline_bcast_logits(p, logits, n * V);
    if (!st)
        for (size_t i = 0; i < n; i++)
            if (pos[i] + 1 > p->seq_len[seqs[i]]) p->seq_len[seqs[i]] = pos[i] + 1; /* seqs checked by the stepper */
    return st;
}

static clnpu_status pipeline_step(void *ctx, size_t n, const int *ids, const size_t *seqs, const size_t *pos,
                                  bool decode, float *logits)
{
    return run(ctx, n, ids, seqs, pos, decode, logits);
}

/* A long prompt's chunks in flight through the stages (micro-batching in one process), at most
 * CLNPU_MAX_MICRO chunks per round. */
static clnpu_status pipeline_chunks(void *ctx, size_t n, const int *ids, const size_t *seqs, const size_t *pos,
                                    size_t chunk, float *logits)
{
    clnpu_pipeline *p = ctx;
    clnpu_status st = CLNPU_OK;
    for (size_t a = 0; !st && a < n; a += CLNPU_MAX_MICRO * chunk) {
        const size_t len = n - a < CLNPU_MAX_MICRO * chunk ? n - a : CLNPU_MAX_MICRO * chunk;
        size_t start[CLNPU_MAX_MICRO + 1], groups = (len + chunk - 1) / chunk;
        for (size_t j = 0; j <= groups; j++) start[j] = j * chunk < len ? j * chunk : len;
        st = pipeline_run_micro(p, len, ids + a, seqs + a, pos + a, false, start, groups,
                                logits ? logits + a * p->cfg.vocab_size : NULL);
        if (!st) p->seq_len[seqs[a]] = pos[a + len - 1] + 1; /* one sequence, positions in order */
    }
    return st;
}

static clnpu_stepper stepper(clnpu_pipeline *p)
{
    /* chunks go through together only where stages can overlap: one process, micro-batching on */
    const bool chunks = p->micro > 1 && p->count > 1 && p->nranks <= 1;
    return (clnpu_stepper){pipeline_step, p, p->seq_len, p->max_sequences, p->max_tokens, p->cfg.vocab_size, "pipeline",
                           chunks ? pipeline_chunks : NULL};
}

clnpu_status clnpu_pipeline_prefill(clnpu_pipeline *p, size_t seq, const int *ids, size_t n, float *logits)
{
    const clnpu_stepper s = stepper(p);
    return clnpu_step_prefill(&s, seq, ids, n, logits);
}

clnpu_status clnpu_pipeline_decode(clnpu_pipeline *p, const size_t *seqs, const int *ids, size_t n, float *logits)
{
    const clnpu_stepper s = stepper(p);
    return clnpu_step_decode(&s, seqs, ids, n, logits);
}
