/* Pipeline-parallel execution in one process: one model stage per device, the residual stream
 * handed from stage to stage through the host. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <time.h>
#ifdef CLNPU_HAVE_MPI
#include <mpi.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "../backend/error.h"
#include "clnpu/pipeline.h"
#include "model_internal.h"

struct clnpu_pipeline {
    clnpu_model_config cfg;
    size_t count;
    clnpu_device **devs;
    clnpu_device **ep_devs; /* [count][CLNPU_MAX_EP], NULL where the main device serves */
    clnpu_model **stages;
    float *h[2];        /* host hand-off buffers [max_tokens][hidden] */
    size_t max_tokens;
    size_t *seq_len;    /* tokens per sequence, kept here (stage 0 may live on another rank) */
    size_t max_sequences;
    /* MPI: stage s runs on rank owner[s]; this process builds only its own stages */
    int rank, nranks, mpi_owner_init;
    int *owner;
    /* expert parallel across ranks: shard j of stage s is served by rank shard_rank[s][j]; a
     * rank that serves a shard of a stage it does not own keeps that stage's model in stages[s]
     * (its own shard local, the others remote) and answers the owner's exchanges */
    int *shard_rank;
    struct remote_ctx *remote_ctx;
    clnpu_moe_remote *remotes, never;
    float *srv_rows;
    clnpu_gemm_segment *srv_segs;
    long long *wire_segs;
    double timeout_s;
    int fault_step;               /* CLNPU_FAULT_RANK: this rank dies at its first step */
};

static yaml_node_t *get(yaml_document_t *d, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(d, p->key);
        if (k->type == YAML_SCALAR_NODE && !strcmp((char *)k->data.scalar.value, key)) return yaml_document_get_node(d, p->value);
    }
    return NULL;
}

static const char *str(yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

clnpu_status clnpu_pipeline_read_plan(const char *path, const clnpu_model_config *cfg, clnpu_stage_spec **out,
                                      size_t *count, size_t *ep)
{
    *out = NULL, *count = 0, *ep = 1;
    FILE *f = fopen(path, "rb");
    if (!f) return clnpu_fail(CLNPU_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        clnpu_status st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: bad YAML: %s", path, parser.problem_mark.line + 1,
                                     parser.problem ? parser.problem : "parse error");
        yaml_parser_delete(&parser);
        fclose(f);
        return st;
    }
    clnpu_status st = CLNPU_OK;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    const char *fmt = str(get(&doc, root, "format")), *layers = str(get(&doc, root, "layers"));
    yaml_node_t *stages = get(&doc, root, "stages"), *par = get(&doc, root, "parallel");
    if (!fmt || strcmp(fmt, "clnpu-plan-1"))
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: not a clnpu plan (format: clnpu-plan-1)", path);
    else if (!layers || (size_t)atol(layers) != cfg->num_hidden_layers)
        st = clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%s: the plan is for %s layers, the model has %zu", path,
                        layers ? layers : "?", cfg->num_hidden_layers);
    else if (!stages || stages->type != YAML_SEQUENCE_NODE || stages->data.sequence.items.start == stages->data.sequence.items.top)
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: no stages", path);
    if (!st && str(get(&doc, par, "ep"))) *ep = (size_t)atol(str(get(&doc, par, "ep")));
    if (!st && str(get(&doc, par, "tp")) && atol(str(get(&doc, par, "tp"))) > 1)
        st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: tensor parallel plans (tp %s) are not executed yet; plan with "
                        "--max-tp 1", path, str(get(&doc, par, "tp")));
    size_t n = st ? 0 : (size_t)(stages->data.sequence.items.top - stages->data.sequence.items.start);
    /* the experts of each device in a stage (every MoE layer alike), in one block with the specs */
    yaml_node_t *experts = get(&doc, root, "experts");
    size_t total = 0, nids[CLNPU_MAX_EP] = {0};
    const size_t *ids[CLNPU_MAX_EP] = {0};
    if (experts && experts->type == YAML_SEQUENCE_NODE)
        for (yaml_node_item_t *it = experts->data.sequence.items.start; it < experts->data.sequence.items.top; it++) {
            yaml_node_t *l = yaml_document_get_node(&doc, *it);
            if (l->type == YAML_SEQUENCE_NODE) total += (size_t)(l->data.sequence.items.top - l->data.sequence.items.start);
        }
    clnpu_stage_spec *sp = n ? calloc(1, n * sizeof *sp + total * sizeof(size_t)) : NULL;
    if (n && !sp) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (sp && experts && experts->type == YAML_SEQUENCE_NODE) {
        size_t *pool = (size_t *)(sp + n), k = 0, j = 0;
        for (yaml_node_item_t *it = experts->data.sequence.items.start; it < experts->data.sequence.items.top && j < CLNPU_MAX_EP; it++, j++) {
            yaml_node_t *l = yaml_document_get_node(&doc, *it);
            ids[j] = pool + k;
            for (yaml_node_item_t *e = l->type == YAML_SEQUENCE_NODE ? l->data.sequence.items.start : NULL;
                 e && e < l->data.sequence.items.top; e++, nids[j]++)
                pool[k++] = (size_t)atol(str(yaml_document_get_node(&doc, *e)));
        }
    }
    size_t next = 0;
    for (size_t i = 0; !st && i < n; i++) {
        yaml_node_t *s = yaml_document_get_node(&doc, stages->data.sequence.items.start[i]);
        yaml_node_t *devs = get(&doc, s, "devices"), *ls = get(&doc, s, "layers");
        const char *emb = str(get(&doc, s, "embedding")), *head = str(get(&doc, s, "head")), *prof = str(get(&doc, s, "profile"));
        if (!devs || devs->type != YAML_SEQUENCE_NODE || devs->data.sequence.items.start == devs->data.sequence.items.top ||
            !ls || ls->type != YAML_SEQUENCE_NODE) {
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: a stage needs devices and layers", path, s->start_mark.line + 1);
            break;
        }
        sp[i].device = (size_t)atol(str(yaml_document_get_node(&doc, *devs->data.sequence.items.start)));
        size_t nd = (size_t)(devs->data.sequence.items.top - devs->data.sequence.items.start);
        if (nd > 1) { /* expert parallel over the stage's devices, experts from the plan's list */
            if (nd > CLNPU_MAX_EP || !experts || (size_t)(experts->data.sequence.items.top - experts->data.sequence.items.start) < nd) {
                st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "%s: stage %zu spreads experts over %zu devices: this executor runs up to "
                                "%d, with an 'experts' list per device", path, i, nd, CLNPU_MAX_EP);
                break;
            }
            sp[i].ep_count = nd;
            for (size_t j = 0; j < nd; j++) {
                sp[i].ep_devices[j] = (size_t)atol(str(yaml_document_get_node(&doc, devs->data.sequence.items.start[j])));
                sp[i].ep_experts[j] = ids[j];
                sp[i].ep_expert_counts[j] = nids[j];
            }
        }
        if (prof) snprintf(sp[i].profile, sizeof sp[i].profile, "%s", prof);
        sp[i].embed = emb && !strcmp(emb, "true");
        sp[i].head = head && !strcmp(head, "true");
        sp[i].layer_begin = next;
        for (yaml_node_item_t *it = ls->data.sequence.items.start; it < ls->data.sequence.items.top; it++) {
            size_t l = (size_t)atol(str(yaml_document_get_node(&doc, *it)));
            if (l != next) {
                st = clnpu_fail(CLNPU_ERR_PARSE, "%s:%zu: stage %zu lists layer %zu where layer %zu should come", path,
                                s->start_mark.line + 1, i, l, next);
                break;
            }
            next++;
        }
        sp[i].layer_end = next;
        if (!st && (sp[i].embed != (i == 0) || sp[i].head != (i == n - 1)))
            st = clnpu_fail(CLNPU_ERR_PARSE, "%s: the embedding must be on the first stage and the head on the last", path);
    }
    if (!st && next != cfg->num_hidden_layers)
        st = clnpu_fail(CLNPU_ERR_PARSE, "%s: the stages cover %zu of %zu layers", path, next, cfg->num_hidden_layers);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    fclose(f);
    if (st) {
        free(sp);
        return st;
    }
    *out = sp, *count = n;
    return CLNPU_OK;
}

void clnpu_pipeline_destroy(clnpu_pipeline *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->count; i++) {
        if (p->stages) clnpu_model_destroy(p->stages[i]);
        if (!p->devs) continue;
        if (p->devs) clnpu_device_close(p->devs[i]);
        for (size_t j = 0; p->ep_devs && j < CLNPU_MAX_EP; j++) clnpu_device_close(p->ep_devs[i * CLNPU_MAX_EP + j]);
    }
    free(p->stages), free(p->devs), free(p->ep_devs), free(p->h[0]), free(p->h[1]);
    free(p->seq_len), free(p->owner), free(p->shard_rank), free(p->remote_ctx), free(p->remotes);
    free(p->srv_rows), free(p->srv_segs), free(p->wire_segs);
#ifdef CLNPU_HAVE_MPI
    if (p->mpi_owner_init) MPI_Finalize();
#endif
    free(p);
}

#ifdef CLNPU_HAVE_MPI
/* Wait for a request with a deadline: a peer that died or hangs becomes an error, not a hang. */
static clnpu_status mpi_wait(clnpu_pipeline *p, MPI_Request *rq, const char *what, int peer)
{
    char who[32] = "the other ranks"; /* peer < 0: a collective */
    if (peer >= 0) snprintf(who, sizeof who, "rank %d", peer);
    struct timespec t0, now, nap = {0, 100000};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        int done = 0;
        if (MPI_Test(rq, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI error while %s %s (did it fail?)", p->rank, what, who);
        if (done) return CLNPU_OK;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) * 1e-9 > p->timeout_s)
            return clnpu_fail(CLNPU_ERR_IO, "rank %d: nothing from %s for %.0f s while %s it: a rank failed or "
                              "hangs (CLNPU_MPI_TIMEOUT)", p->rank, who, p->timeout_s, what);
        nanosleep(&nap, NULL);
    }
}
#endif

/* Under mpirun (Open MPI's environment), either the stages are dealt to ranks in contiguous runs
 * (ranks <= stages; a stage's expert shards stay with its rank), or every plan device gets its own
 * rank (ranks = devices; a stage's first device's rank owns it, the others serve its expert shards).
 * Without mpirun every stage is this process's. CLNPU_MPI_TIMEOUT (seconds, default 120) bounds
 * every wait for a peer. */
static clnpu_status mpi_setup(clnpu_pipeline *p, const clnpu_stage_spec *sp, size_t n)
{
    p->rank = 0, p->nranks = 1;
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    const char *to = getenv("CLNPU_MPI_TIMEOUT");
    p->timeout_s = to && atof(to) > 0 ? atof(to) : 120;
    if (!size || atoi(size) <= 1) return CLNPU_OK;
#ifdef CLNPU_HAVE_MPI
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS)
            return clnpu_fail(CLNPU_ERR_IO, "MPI_Init failed");
        p->mpi_owner_init = 1;
    }
    /* errors come back as codes so a lost peer becomes a message, not a silent abort */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &p->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &p->nranks);
    size_t slots = 0;
    for (size_t s = 0; s < n; s++) slots += sp[s].ep_count ? sp[s].ep_count : 1;
    if ((size_t)p->nranks <= n) {
        for (size_t s = 0; s < n; s++) {
            p->owner[s] = (int)(s * (size_t)p->nranks / n);
            for (size_t j = 0; j < CLNPU_MAX_EP; j++) p->shard_rank[s * CLNPU_MAX_EP + j] = p->owner[s];
        }
    } else if ((size_t)p->nranks == slots) {
        int r = 0;
        for (size_t s = 0; s < n; s++) {
            p->owner[s] = r;
            for (size_t j = 0; j < CLNPU_MAX_EP; j++) p->shard_rank[s * CLNPU_MAX_EP + j] = r + (j < sp[s].ep_count ? (int)j : 0);
            r += sp[s].ep_count ? (int)sp[s].ep_count : 1;
        }
    } else {
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%d MPI ranks for a plan of %zu stages on %zu devices: give at most "
                          "%zu (stages dealt in runs) or exactly %zu (a rank per device)", p->nranks, n, slots, n, slots);
    }
    /* fault injection for the tests: "r" kills rank r at its first step, "r:load" makes rank r
     * fail its set-up with an error */
    const char *fault = getenv("CLNPU_FAULT_RANK");
    if (fault && *fault && atoi(fault) == p->rank) {
        if (strstr(fault, ":load")) return clnpu_fail(CLNPU_ERR_IO, "rank %d: set-up failure injected (CLNPU_FAULT_RANK)", p->rank);
        p->fault_step = 1;
    }
    return CLNPU_OK;
#else
    (void)sp;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "started by mpirun with %s ranks, but clnpu was built without MPI "
                      "(install libopenmpi-dev and rebuild)", size);
#endif
}

/* Expert exchange between a stage's owner and the ranks serving its other shards: a header
 * {layer, shard, rows, segments}, the segments and the rows go out, the outputs come back; a
 * header with rows = -1 ends the stage's step. Tags stay clear of the stage numbers used for
 * hidden states. */
enum { TAG_EXP_HDR = 30000, TAG_EXP_SEGS, TAG_EXP_ROWS, TAG_EXP_OUT };

struct remote_ctx {
    clnpu_pipeline *p;
    size_t stage;
};

static clnpu_status never_called(void *ctx, size_t tag, size_t shard, const float *rows, size_t nrows,
                                 const clnpu_gemm_segment *segs, size_t nseg, float *out)
{
    (void)ctx, (void)rows, (void)nrows, (void)segs, (void)nseg, (void)out;
    return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "layer %zu: shard %zu belongs to the stage's owner rank", tag, shard);
}

#ifdef CLNPU_HAVE_MPI
static clnpu_status mpi_wait(clnpu_pipeline *p, MPI_Request *rq, const char *what, int peer);

static clnpu_status mpi_xfer(clnpu_pipeline *p, bool send, void *buf, size_t count, MPI_Datatype type, int peer,
                             int tag, const char *what)
{
    if (!count) return CLNPU_OK;
    if (count > INT_MAX) return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "rank %d: message of %zu items to rank %d", p->rank, count, peer);
    MPI_Request rq;
    int rc = send ? MPI_Isend(buf, (int)count, type, peer, tag, MPI_COMM_WORLD, &rq)
                  : MPI_Irecv(buf, (int)count, type, peer, tag, MPI_COMM_WORLD, &rq);
    if (rc != MPI_SUCCESS) return clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI failed %s rank %d", p->rank, what, peer);
    return mpi_wait(p, &rq, what, peer);
}
#endif

static clnpu_status mpi_exchange(void *ctx, size_t tag, size_t shard, const float *rows, size_t nrows,
                                 const clnpu_gemm_segment *segs, size_t nseg, float *out)
{
    struct remote_ctx *c = ctx;
    clnpu_pipeline *p = c->p;
#ifdef CLNPU_HAVE_MPI
    const int peer = p->shard_rank[c->stage * CLNPU_MAX_EP + shard];
    const size_t H = p->cfg.hidden_size;
    long long hdr[4] = {(long long)tag, (long long)shard, (long long)nrows, (long long)nseg};
    for (size_t i = 0; i < nseg; i++)
        p->wire_segs[3 * i] = (long long)segs[i].matrix, p->wire_segs[3 * i + 1] = (long long)segs[i].row,
        p->wire_segs[3 * i + 2] = (long long)segs[i].rows;
    clnpu_status st = mpi_xfer(p, true, hdr, 4, MPI_LONG_LONG, peer, TAG_EXP_HDR, "sending experts' rows to");
    if (!st) st = mpi_xfer(p, true, p->wire_segs, 3 * nseg, MPI_LONG_LONG, peer, TAG_EXP_SEGS, "sending experts' rows to");
    if (!st) st = mpi_xfer(p, true, (void *)rows, nrows * H, MPI_FLOAT, peer, TAG_EXP_ROWS, "sending experts' rows to");
    if (!st) st = mpi_xfer(p, false, out, nrows * H, MPI_FLOAT, peer, TAG_EXP_OUT, "receiving experts' outputs from");
    return st;
#else
    (void)p, (void)tag, (void)shard, (void)rows, (void)nrows, (void)segs, (void)nseg, (void)out;
    return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "remote expert shards need MPI");
#endif
}

#ifdef CLNPU_HAVE_MPI
/* A rank serving a shard of stage s: answer the owner's exchanges until it ends the step. */
static clnpu_status serve_stage(clnpu_pipeline *p, size_t s)
{
    const int owner = p->owner[s];
    const size_t H = p->cfg.hidden_size, E = p->cfg.n_routed_experts;
    const size_t max_rows = p->max_tokens * p->cfg.num_experts_per_tok;
    for (;;) {
        long long hdr[4];
        clnpu_status st = mpi_xfer(p, false, hdr, 4, MPI_LONG_LONG, owner, TAG_EXP_HDR, "waiting for experts' rows from");
        if (st) return st;
        if (hdr[2] < 0) return CLNPU_OK; /* the stage's step is over */
        if (hdr[2] > (long long)max_rows || hdr[3] < 0 || hdr[3] > (long long)E)
            return clnpu_fail(CLNPU_ERR_IO, "rank %d: malformed exchange from rank %d", p->rank, owner);
        const size_t nrows = (size_t)hdr[2], nseg = (size_t)hdr[3];
        st = mpi_xfer(p, false, p->wire_segs, 3 * nseg, MPI_LONG_LONG, owner, TAG_EXP_SEGS, "receiving experts' rows from");
        if (!st) st = mpi_xfer(p, false, p->srv_rows, nrows * H, MPI_FLOAT, owner, TAG_EXP_ROWS, "receiving experts' rows from");
        for (size_t i = 0; !st && i < nseg; i++)
            p->srv_segs[i] = (clnpu_gemm_segment){(size_t)p->wire_segs[3 * i], (size_t)p->wire_segs[3 * i + 1],
                                                  (size_t)p->wire_segs[3 * i + 2]};
        clnpu_moe_block *b = st ? NULL : clnpu_model_moe_block(p->stages[s], (size_t)hdr[0]);
        if (!st && !b) st = clnpu_fail(CLNPU_ERR_IO, "rank %d: rank %d sent rows for layer %lld, not a MoE layer of stage %zu",
                                       p->rank, owner, hdr[0], s);
        if (!st) st = clnpu_moe_block_serve(b, (size_t)hdr[1], p->srv_rows, nrows, p->srv_segs, nseg, p->srv_rows);
        if (!st) st = mpi_xfer(p, true, p->srv_rows, nrows * H, MPI_FLOAT, owner, TAG_EXP_OUT, "sending experts' outputs to");
        if (st) return clnpu_fail_context(st, "serving stage %zu's experts", s);
    }
}

/* The owner of stage s tells every rank serving one of its shards that the step is over. */
static clnpu_status end_stage(clnpu_pipeline *p, size_t s)
{
    clnpu_status st = CLNPU_OK;
    long long done[4] = {0, 0, -1, 0};
    for (size_t j = 1; !st && j < CLNPU_MAX_EP; j++) {
        const int r = p->shard_rank[s * CLNPU_MAX_EP + j];
        if (r != p->rank && r != p->shard_rank[s * CLNPU_MAX_EP + j - 1])
            st = mpi_xfer(p, true, done, 4, MPI_LONG_LONG, r, TAG_EXP_HDR, "ending the step with");
    }
    return st;
}
#endif

int clnpu_pipeline_rank(const clnpu_pipeline *p) { return p->rank; }
int clnpu_pipeline_ranks(const clnpu_pipeline *p) { return p->nranks; }

clnpu_status clnpu_pipeline_create(const clnpu_model_config *cfg, const clnpu_checkpoint *ck,
                                   const clnpu_stage_spec *sp, size_t n, const clnpu_model_options *opt,
                                   clnpu_pipeline **out)
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
    if (!p->devs || !p->stages || !p->h[0] || !p->h[1] || !p->seq_len || !p->owner || !p->shard_rank ||
        !p->remote_ctx || !p->remotes)
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    if (!st) st = mpi_setup(p, sp, n);
    p->never = (clnpu_moe_remote){never_called, p};
    if (!st && p->nranks > 1 && !(p->wire_segs = malloc(3 * (cfg->n_routed_experts + 1) * sizeof *p->wire_segs)))
        st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t i = 0; !st && i < n; i++) {
        p->remote_ctx[i] = (struct remote_ctx){p, i};
        p->remotes[i] = (clnpu_moe_remote){mpi_exchange, &p->remote_ctx[i]};
        /* this rank's part of stage i: the whole stage (owner), one expert shard, or nothing */
        const bool own = p->owner[i] == p->rank;
        size_t serve = CLNPU_MAX_EP;
        for (size_t j = 0; !own && j < sp[i].ep_count && j < CLNPU_MAX_EP; j++)
            if (p->shard_rank[i * CLNPU_MAX_EP + j] == p->rank) serve = j;
        if (!own && serve == CLNPU_MAX_EP) continue;
        const size_t main_dev = own ? sp[i].device : sp[i].ep_devices[serve];
        /* plan device d on OpenCL device d mod N, in its own context, bound to the stage's
         * profile (emulation when it is not this device's own) */
        clnpu_device_options dopt = clnpu_device_options_default();
        clnpu_profile_set *set = NULL;
        if (sp[i].profile[0] && !clnpu_profile_set_builtin(&set) && clnpu_profile_set_find(set, sp[i].profile))
            dopt.target = sp[i].profile;
        st = clnpu_device_open(main_dev % ndev, &dopt, &p->devs[i]);
        clnpu_profile_set_destroy(set);
        if (st) {
            st = clnpu_fail_context(st, "stage %zu (plan device %zu)", i, main_dev);
            break;
        }
        clnpu_model_options so = o;
        so.layer_begin = sp[i].layer_begin, so.layer_end = sp[i].layer_end;
        so.embed = own && sp[i].embed, so.head = own && sp[i].head;
        /* expert parallel: one device (context) per plan device of the stage held by this rank,
         * the main one reused; shards of other ranks are remote */
        clnpu_moe_shard shards[CLNPU_MAX_EP];
        for (size_t j = 0; !st && j < sp[i].ep_count && j < CLNPU_MAX_EP; j++) {
            shards[j] = (clnpu_moe_shard){NULL, sp[i].ep_experts[j], sp[i].ep_expert_counts[j], NULL};
            if (p->shard_rank[i * CLNPU_MAX_EP + j] != p->rank) {
                shards[j].remote = own ? &p->remotes[i] : &p->never;
                continue;
            }
            clnpu_device *d = p->devs[i];
            if (sp[i].ep_devices[j] != main_dev) {
                st = clnpu_device_open(sp[i].ep_devices[j] % ndev, &dopt, &p->ep_devs[i * CLNPU_MAX_EP + j]);
                d = p->ep_devs[i * CLNPU_MAX_EP + j];
            }
            shards[j].device = d;
        }
        if (st) break;
        so.ep_shards = sp[i].ep_count ? shards : NULL;
        so.ep_count = sp[i].ep_count < CLNPU_MAX_EP ? sp[i].ep_count : CLNPU_MAX_EP;
        st = clnpu_model_create(p->devs[i], cfg, ck, &so, &p->stages[i]);
        if (st) st = clnpu_fail_context(st, "stage %zu (layers %zu..%zu)", i, sp[i].layer_begin, sp[i].layer_end);
        if (!st && !own && !p->srv_rows) { /* room for the largest exchange */
            const size_t rows = p->max_tokens * cfg->num_experts_per_tok, E = cfg->n_routed_experts;
            p->srv_rows = malloc(rows * cfg->hidden_size * sizeof(float));
            p->srv_segs = malloc((E ? E : 1) * sizeof *p->srv_segs);
            if (!p->srv_rows || !p->srv_segs) st = clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
        }
    }
#ifdef CLNPU_HAVE_MPI
    /* every rank agrees that set-up worked before any step starts: a rank that failed to load
     * its stages is named on all of them, and timings start with every rank ready */
    if (p && p->nranks > 1) {
        int mine = st ? p->rank : INT_MAX, first = INT_MAX;
        MPI_Request rq;
        clnpu_status ws = MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &rq) == MPI_SUCCESS
                              ? mpi_wait(p, &rq, "agreeing on set-up with", -1)
                              : clnpu_fail(CLNPU_ERR_IO, "rank %d: MPI_Iallreduce failed", p->rank);
        if (!st && ws) st = ws;
        if (!st && first != INT_MAX)
            st = clnpu_fail(CLNPU_ERR_IO, "rank %d could not set up its stages (its own message says why)", first);
    }
#endif
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
    const size_t hn = n * p->cfg.hidden_size;
    if (p->fault_step) raise(SIGKILL);
    for (size_t s = 0; !st && s < p->count; s++) {
        const int me = p->owner[s];
        const bool last = s + 1 == p->count;
#ifdef CLNPU_HAVE_MPI
        if (p->nranks > 1 && s > 0 && p->owner[s - 1] != me && me == p->rank) { /* input from the previous rank */
            MPI_Request rq;
            MPI_Irecv(p->h[s % 2], (int)hn, MPI_FLOAT, p->owner[s - 1], (int)s, MPI_COMM_WORLD, &rq);
            st = mpi_wait(p, &rq, "receiving hidden states from", p->owner[s - 1]);
        }
#endif
        if (!st && me == p->rank) {
            st = clnpu_model_forward_stage(p->stages[s], n, ids, seqs, pos, decode, s ? p->h[s % 2] : NULL,
                                           last ? NULL : p->h[(s + 1) % 2], last ? logits : NULL);
#ifdef CLNPU_HAVE_MPI
            if (!st && p->nranks > 1) st = end_stage(p, s);
#endif
        }
#ifdef CLNPU_HAVE_MPI
        else if (!st && p->stages[s]) /* this rank serves one of the stage's expert shards */
            st = serve_stage(p, s);
#endif
#ifdef CLNPU_HAVE_MPI
        if (!st && p->nranks > 1 && !last && me == p->rank && p->owner[s + 1] != me) {
            MPI_Request rq;
            MPI_Isend(p->h[(s + 1) % 2], (int)hn, MPI_FLOAT, p->owner[s + 1], (int)(s + 1), MPI_COMM_WORLD, &rq);
            st = mpi_wait(p, &rq, "sending hidden states to", p->owner[s + 1]);
        }
#endif
    }
#ifdef CLNPU_HAVE_MPI
    if (!st && p->nranks > 1 && logits) {
        MPI_Request rq;
        MPI_Ibcast(logits, (int)(n * p->cfg.vocab_size), MPI_FLOAT, p->owner[p->count - 1], MPI_COMM_WORLD, &rq);
        st = mpi_wait(p, &rq, "receiving logits from", p->owner[p->count - 1]);
    }
#endif
    (void)hn;
    if (!st)
        for (size_t i = 0; i < n; i++)
            if (seqs[i] < p->max_sequences && pos[i] + 1 > p->seq_len[seqs[i]]) p->seq_len[seqs[i]] = pos[i] + 1;
    return st;
}

clnpu_status clnpu_pipeline_prefill(clnpu_pipeline *p, size_t seq, const int *ids, size_t n, float *logits)
{
    if (seq >= p->max_sequences)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sequence %zu: the pipeline was created for %zu", seq, p->max_sequences);
    size_t *seqs = malloc((n ? n : 1) * sizeof *seqs), *pos = malloc((n ? n : 1) * sizeof *pos);
    clnpu_status st = seqs && pos ? CLNPU_OK : clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t done = 0; !st && done < n;) {
        size_t T = n - done < p->max_tokens ? n - done : p->max_tokens;
        size_t p0 = seq < p->max_sequences ? p->seq_len[seq] : 0;
        for (size_t i = 0; i < T; i++) seqs[i] = seq, pos[i] = p0 + i;
        st = run(p, T, ids + done, seqs, pos, false, logits ? logits + done * p->cfg.vocab_size : NULL);
        done += T;
    }
    free(seqs), free(pos);
    return st;
}

clnpu_status clnpu_pipeline_decode(clnpu_pipeline *p, const size_t *seqs, const int *ids, size_t n, float *logits)
{
    size_t *pos = malloc((n ? n : 1) * sizeof *pos);
    if (!pos) return clnpu_fail(CLNPU_ERR_OUT_OF_MEMORY, "out of host memory");
    for (size_t i = 0; i < n; i++) pos[i] = seqs[i] < p->max_sequences ? p->seq_len[seqs[i]] : 0;
    clnpu_status st = n > p->max_tokens ? clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "decode batch of %zu > %zu", n, p->max_tokens)
                                        : run(p, n, ids, seqs, pos, true, logits);
    free(pos);
    return st;
}
