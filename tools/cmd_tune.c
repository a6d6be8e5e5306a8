/* `clnpu tune`: search kernel parameters per device and shape class (kernels-cl/tunables.yaml),
 * check every candidate against a float64 reference first, keep the fastest in a YAML database
 * that the runtime then uses. Exhaustive where the space is small, random sampling plus local
 * refinement otherwise, inside a time budget; an interrupted run resumes from the database. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ctype.h>
#include <yaml.h>

#include "bench_util.h"

static const char usage[] = "clnpu tune " CLI_DEVICE_USAGE " [--ops gemm,gemm_wg,attention,mla] [--dtype f32,bf16,...] "
                            "[--classes gemv,decode,...] [--budget SECONDS] [--db FILE] [--force]";

#define MAXP 10 /* gemm_wg: ten tile parameters */
#define MAXV 12
#define MAXC 4096 /* candidates kept per class (a random sample when the space is larger) */
#define NSHAPE 3  /* shapes measured per class, at most */

typedef struct space {
    int np;
    char name[MAXP][16];
    int vals[MAXP][MAXV], nv[MAXP];
    char prod[2][16]; int prod_max; /* max_product */
    bool local_rows;                /* bk * attention_row <= budget */
    bool gemm_wg;                   /* clnpu_gemm_wg_params_valid and its local bytes <= budget */
} space;

/* The declaration of one family from the embedded tunables.yaml. */
static bool load_space(const char *family, space *sp)
{
    memset(sp, 0, sizeof *sp);
    yaml_parser_t p;
    yaml_document_t d;
    const char *text = clnpu_tunables_yaml();
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    if (!yaml_parser_load(&p, &d)) {
        yaml_parser_delete(&p);
        return false;
    }
    yaml_node_t *root = yaml_document_get_root_node(&d);
    bool ok = false;
    for (yaml_node_pair_t *pr = root ? root->data.mapping.pairs.start : NULL; root && pr < root->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(&d, pr->key), *fam = yaml_document_get_node(&d, pr->value);
        if (strcmp((char *)k->data.scalar.value, family)) continue;
        for (yaml_node_pair_t *q = fam->data.mapping.pairs.start; q < fam->data.mapping.pairs.top; q++) {
            yaml_node_t *qk = yaml_document_get_node(&d, q->key), *qv = yaml_document_get_node(&d, q->value);
            if (!strcmp((char *)qk->data.scalar.value, "params")) {
                for (yaml_node_pair_t *x = qv->data.mapping.pairs.start; x < qv->data.mapping.pairs.top && sp->np < MAXP; x++) {
                    yaml_node_t *xn = yaml_document_get_node(&d, x->key), *xl = yaml_document_get_node(&d, x->value);
                    snprintf(sp->name[sp->np], 16, "%s", (char *)xn->data.scalar.value);
                    for (yaml_node_item_t *it = xl->data.sequence.items.start; it < xl->data.sequence.items.top && sp->nv[sp->np] < MAXV; it++)
                        sp->vals[sp->np][sp->nv[sp->np]++] = atoi((char *)yaml_document_get_node(&d, *it)->data.scalar.value);
                    sp->np++;
                }
            } else if (!strcmp((char *)qk->data.scalar.value, "constraints")) {
                for (yaml_node_pair_t *x = qv->data.mapping.pairs.start; x < qv->data.mapping.pairs.top; x++) {
                    const char *cn = (char *)yaml_document_get_node(&d, x->key)->data.scalar.value;
                    yaml_node_t *lst = yaml_document_get_node(&d, x->value);
                    yaml_node_t *rule = yaml_document_get_node(&d, *lst->data.sequence.items.start);
                    yaml_node_item_t *ri = rule->data.sequence.items.start;
                    if (!strcmp(cn, "max_product")) {
                        snprintf(sp->prod[0], 16, "%s", (char *)yaml_document_get_node(&d, ri[0])->data.scalar.value);
                        snprintf(sp->prod[1], 16, "%s", (char *)yaml_document_get_node(&d, ri[1])->data.scalar.value);
                        sp->prod_max = atoi((char *)yaml_document_get_node(&d, ri[2])->data.scalar.value);
                    } else if (!strcmp(cn, "local_mem_per")) {
                        sp->local_rows = true;
                    } else if (!strcmp(cn, "gemm_wg_tile")) {
                        sp->gemm_wg = true;
                    }
                }
            }
        }
        ok = sp->np > 0;
    }
    yaml_document_delete(&d);
    yaml_parser_delete(&p);
    return ok;
}

static int value_of(const space *sp, const int *v, const char *name, int def)
{
    for (int i = 0; i < sp->np; i++)
        if (!strcmp(sp->name[i], name)) return v[i];
    return isdigit((unsigned char)name[0]) ? atoi(name) : def;
}

/* A gemm_wg candidate as parameters: the device's defaults with the candidate's values over them. */
static clnpu_gemm_wg_params wg_params(const space *sp, const int *v, const clnpu_gemm_wg_params *def)
{
    clnpu_gemm_wg_params p = *def;
    p.mwg = (unsigned)value_of(sp, v, "mwg", (int)p.mwg), p.nwg = (unsigned)value_of(sp, v, "nwg", (int)p.nwg);
    p.kwg = (unsigned)value_of(sp, v, "kwg", (int)p.kwg), p.mdimc = (unsigned)value_of(sp, v, "mdimc", (int)p.mdimc);
    p.ndimc = (unsigned)value_of(sp, v, "ndimc", (int)p.ndimc), p.vwm = (unsigned)value_of(sp, v, "vwm", (int)p.vwm);
    p.vwn = (unsigned)value_of(sp, v, "vwn", (int)p.vwn), p.kwi = (unsigned)value_of(sp, v, "kwi", (int)p.kwi);
    p.sa = (unsigned)value_of(sp, v, "sa", (int)p.sa), p.sb = (unsigned)value_of(sp, v, "sb", (int)p.sb);
    return p;
}

static const clnpu_capability *tune_cap; /* the device being tuned (gemm_wg constraints) */

static bool allowed(const space *sp, const int *v, uint64_t local_budget, int row_bytes)
{
    if (sp->gemm_wg) {
        clnpu_gemm_wg_params p = wg_params(sp, v, &tune_cap->gemm);
        if (!clnpu_gemm_wg_params_valid(&p, tune_cap->max_wg, NULL) ||
            clnpu_gemm_wg_local_bytes(&p, false) > local_budget)
            return false;
    }
    if (sp->prod_max && value_of(sp, v, sp->prod[0], 1) * value_of(sp, v, sp->prod[1], 1) > sp->prod_max) return false;
    if (sp->local_rows && (uint64_t)value_of(sp, v, "bk", 0) * (uint64_t)row_bytes > local_budget) return false;
    return true;
}

/* ---- the shape classes and their workloads ---- */

/* A shape class is a range of M, N and K (gemm: docs/tuning.md); its parameters must hold on
 * every shape measured from the range, not only on one. */
typedef struct job {
    const char *kernel, *cls;
    clnpu_dtype dtype;
    size_t m, n, k, segs;  /* gemm: rows, out, in, grouped matrices (the shape being set up) */
    size_t swiglu;         /* gemm: 1 = the SwiGLU epilogue (gate and up weights) */
    /* gemm: the class's shapes (M, N, K, grouped matrices, SwiGLU); M = 0 ends the list */
    size_t shapes[NSHAPE][5];
} job;

#define MAXCOPIES 32 /* grouped: weight groups rotated per launch */

typedef struct runner {
    clnpu_device *dev;
    const job *j;
    clnpu_weight *w, *wc[MAXCOPIES]; /* grouped: one weight group per copy */
    clnpu_buffer *x, *y, *z3[6], *counts, *offsets;
    clnpu_attention_args att;
    clnpu_mla_decode_args mla;
    size_t copies, rot;
    float *hx;
    double *ref;
    size_t check_n;
} runner;

static float rnd(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return (float)((*s >> 40) / 8388608.0 - 1.0);
}

/* Random weights of dtype t as a descriptor over q / sc (int8 in groups of 128 along K). */
static clnpu_status gemm_desc(clnpu_dtype t, const float *w, size_t n, size_t k, void *q, float *sc,
                              clnpu_weight_desc *d)
{
    *d = (clnpu_weight_desc){t, n, k, q, NULL, 0};
    if (t == CLNPU_DTYPE_F32) memcpy(q, w, n * k * 4);
    else if (t == CLNPU_DTYPE_BF16 || t == CLNPU_DTYPE_F16)
        for (size_t i = 0; i < n * k; i++)
            ((uint16_t *)q)[i] = t == CLNPU_DTYPE_BF16 ? clnpu_f32_to_bf16(w[i]) : clnpu_f32_to_f16(w[i]);
    else if (t == CLNPU_DTYPE_I8) return d->scales = sc, d->group_k = 128, clnpu_quantize_i8(w, n, k, 128, q, sc);
    else return d->scales = sc, clnpu_quantize_fp8(w, n, k, q, sc);
    return CLNPU_OK;
}

/* The float64 product of the X rows with a descriptor's dequantised weights. */
static double *gemm_ref(const clnpu_weight_desc *d, const float *x, size_t m)
{
    const size_t n = d->n, k = d->k;
    float *deq = malloc(n * k * 4);
    double *ref = malloc(m * n * sizeof *ref);
    if (deq && ref) {
        clnpu_weight_desc_to_f32(d, deq);
        for (size_t i = 0; i < m; i++)
            for (size_t o = 0; o < n; o++) {
                double a = 0;
                for (size_t kk = 0; kk < k; kk++) a += (double)x[i * k + kk] * deq[o * k + kk];
                ref[i * n + o] = a;
            }
    }
    free(deq);
    return ref;
}

/* The job's GEMM: m rows of X against an n x k weight (grouped: `segs` matrices of the same
 * weights, m / segs rows each, with the counts on the device as a MoE layer runs them; SwiGLU:
 * gate and up weights). check: a float64 reference of the output. */
static clnpu_status gemm_setup(runner *r, size_t m, size_t n, size_t k, bool check)
{
    const job *j = r->j;
    uint64_t s = 0x1234567ULL + m * 31 + n;
    const size_t sides = j->swiglu ? 2 : 1, ns = n * ((k + 127) / 128) + 64;
    float *w = malloc(sides * n * k * 4), *sc = malloc(sides * ns * 4);
    unsigned char *q = malloc(sides * n * k * 4);
    r->hx = malloc(m * k * 4);
    clnpu_status st = w && sc && q && r->hx ? CLNPU_OK : CLNPU_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; !st && i < sides * n * k; i++) w[i] = rnd(&s) * 0.5f;
    for (size_t i = 0; !st && i < m * k; i++) r->hx[i] = rnd(&s);
    clnpu_weight_desc d[2];
    for (size_t h = 0; h < sides && !st; h++)
        st = gemm_desc(j->dtype, w + h * n * k, n, k, q + h * n * k * 4, sc + h * ns, &d[h]);
    const size_t nmat = j->segs ? j->segs : 1;
    /* timing: enough copies of the weights to exceed the last-level cache twice, rotated per
     * launch, so every class is tuned with its weights coming from memory as a model's layers
     * run them: not only the weight-bound ones — a prefill tile that is fast while its weights
     * stay in L3 rereads them from memory once per row block (bf16 512x12288x1536 on Zen 5:
     * MR 3 x MB 8 won 1.13x hot and lost 0.8x cold) */
    size_t copies = 1;
    if (!check) {
        double wsize = (double)sides * n * k * clnpu_dtype_size(j->dtype) * nmat;
        double llc = (double)clnpu_device_get_info(r->dev)->global_cache_bytes;
        copies = wsize >= 2 * llc ? 1 : (size_t)ceil(2 * llc / wsize);
        while (copies > 1 && (copies * wsize > 768e6 || copies * nmat > 256)) copies--;
        if (j->segs && copies > MAXCOPIES) copies = MAXCOPIES;
    }
    r->copies = copies;
    clnpu_weight_desc *ds = malloc(2 * nmat * copies * sizeof *ds);
    for (size_t i = 0; ds && i < nmat * copies; i++) ds[i] = d[0], ds[nmat * copies + i] = d[sides - 1];
    if (!ds && !st) st = CLNPU_ERR_OUT_OF_MEMORY;
    if (!st && j->segs) { /* a weight group per copy, so the counts name matrices 0 .. segs - 1 */
        for (size_t c = 0; c < copies && !st; c++)
            st = j->swiglu ? clnpu_weight_upload_swiglu(r->dev, ds, ds + nmat * copies, nmat, &r->wc[c])
                           : clnpu_weight_upload(r->dev, ds, nmat, &r->wc[c]);
        r->w = r->wc[0];
    } else if (!st) {
        st = j->swiglu ? clnpu_weight_upload_swiglu(r->dev, ds, ds + nmat * copies, nmat * copies, &r->w)
                       : clnpu_weight_upload(r->dev, ds, nmat * copies, &r->w);
    }
    free(ds);
    if (!st) st = clnpu_buffer_create(r->dev, m * k * 4, &r->x);
    if (!st) st = clnpu_buffer_write(r->x, 0, r->hx, m * k * 4);
    if (!st) st = clnpu_buffer_create(r->dev, m * n * 4, &r->y);
    if (!st && j->segs) {
        int cnt[256], off[256];
        for (size_t e = 0; e < nmat && e < 256; e++) cnt[e] = (int)(m / nmat), off[e] = (int)(e * (m / nmat));
        st = clnpu_buffer_create(r->dev, nmat * sizeof(int), &r->counts);
        if (!st) st = clnpu_buffer_create(r->dev, nmat * sizeof(int), &r->offsets);
        if (!st) st = clnpu_buffer_write(r->counts, 0, cnt, nmat * sizeof(int));
        if (!st) st = clnpu_buffer_write(r->offsets, 0, off, nmat * sizeof(int));
    }
    if (!st && check) { /* float64 reference with the dequantised weights; silu(g) * u */
        r->ref = gemm_ref(&d[0], r->hx, m);
        double *u = j->swiglu ? gemm_ref(&d[1], r->hx, m) : NULL;
        if (!r->ref || (j->swiglu && !u)) st = CLNPU_ERR_OUT_OF_MEMORY;
        for (size_t i = 0; !st && u && i < m * n; i++) r->ref[i] = r->ref[i] / (1 + exp(-r->ref[i])) * u[i];
        free(u);
        r->check_n = m * n;
    }
    free(w), free(sc), free(q);
    return st;
}

static clnpu_status gemm_step(void *p)
{
    runner *r = p;
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = r->x, a.y = r->y;
    a.m = clnpu_buffer_size(r->x) / 4 / clnpu_weight_k(r->w); /* rows of the set-up case */
    a.epilogue = r->j->swiglu ? CLNPU_EPILOGUE_SWIGLU : CLNPU_EPILOGUE_NONE;
    const size_t rot = r->rot;
    r->rot = r->copies > 1 ? (r->rot + 1) % r->copies : 0;
    if (!r->j->segs) return clnpu_gemm(r->dev, r->w, rot, &a);
    /* each matrix takes at most its own rows, as a layer's experts take at most T */
    return clnpu_gemm_grouped_counts(r->dev, r->wc[rot], r->counts, r->offsets, a.m / r->j->segs, &a);
}

static void runner_free(runner *r)
{
    if (r->wc[0]) r->w = NULL; /* r->w is r->wc[0] */
    for (size_t c = 0; c < MAXCOPIES; c++) clnpu_weight_destroy(r->wc[c]);
    clnpu_weight_destroy(r->w);
    clnpu_buffer_destroy(r->x), clnpu_buffer_destroy(r->y);
    clnpu_buffer_destroy(r->counts), clnpu_buffer_destroy(r->offsets);
    for (int i = 0; i < 6; i++) clnpu_buffer_destroy(r->z3[i]);
    free(r->hx), free(r->ref);
    memset(r, 0, sizeof *r);
}

static clnpu_status attn_setup(runner *r, size_t T, bool check)
{
    /* the class names the head dims: d192_128 (A.X K1, DeepSeek-V3), d96_64 (axk1-mini) */
    const size_t H = 4;
    size_t dq = 192, dv = 128;
    if (sscanf(r->j->cls, "d%zu_%zu", &dq, &dv) != 2 || !dq || !dv || dq > 1024 || dv > 1024) dq = 192, dv = 128;
    uint64_t s = 77;
    clnpu_status st = CLNPU_OK;
    size_t sizes[4] = {T * H * dq, T * H * dq, T * H * dv, T * H * dv};
    float *host[3];
    for (int i = 0; i < 4 && !st; i++) {
        st = clnpu_buffer_create(r->dev, sizes[i] * 4, &r->z3[i]);
        if (i < 3) {
            host[i] = malloc(sizes[i] * 4);
            for (size_t e = 0; e < sizes[i]; e++) host[i][e] = rnd(&s);
            if (!st) st = clnpu_buffer_write(r->z3[i], 0, host[i], sizes[i] * 4);
        }
    }
    r->att = (clnpu_attention_args){.q = {r->z3[0], 0, H * dq}, .k = {r->z3[1], 0, H * dq}, .v = {r->z3[2], 0, H * dv},
                                    .o = {r->z3[3], 0, H * dv}, .q_head_stride = dq, .k_head_stride = dq,
                                    .v_head_stride = dv, .o_head_stride = dv, .heads = H, .dqk = dq, .dv = dv,
                                    .tokens = T, .prefix = 0, .scale = (float)(1.0 / sqrt((double)dq))};
    if (check) {
        r->ref = malloc(T * H * dv * sizeof *r->ref);
        double *sc = malloc(T * sizeof *sc);
        for (size_t t = 0; t < T; t++)
            for (size_t h = 0; h < H; h++) {
                double mx = -INFINITY, z = 0;
                for (size_t j = 0; j <= t; j++) {
                    double a = 0;
                    for (size_t d = 0; d < dq; d++) a += (double)host[0][(t * H + h) * dq + d] * host[1][(j * H + h) * dq + d];
                    mx = fmax(mx, sc[j] = a * r->att.scale);
                }
                for (size_t j = 0; j <= t; j++) z += (sc[j] = exp(sc[j] - mx));
                for (size_t d = 0; d < dv; d++) {
                    double a = 0;
                    for (size_t j = 0; j <= t; j++) a += sc[j] * host[2][(j * H + h) * dv + d];
                    r->ref[(t * H + h) * dv + d] = a / z;
                }
            }
        free(sc);
        r->check_n = T * H * dv;
    }
    for (int i = 0; i < 3; i++) free(host[i]);
    return st;
}

static clnpu_status attn_step(void *p)
{
    runner *r = p;
    return clnpu_flash_attention(r->dev, &r->att);
}

static clnpu_status mla_setup(runner *r, size_t L, bool check)
{
    const size_t H = 16, R = 512, DR = 64, page = 64, mb = (L + page - 1) / page;
    uint64_t s = 99;
    size_t sizes[6] = {mb * page * (R + DR), H * R, H * DR, mb, 1, H * R};
    float *host[3] = {0};
    clnpu_status st = CLNPU_OK;
    for (int i = 0; i < 6 && !st; i++) {
        st = clnpu_buffer_create(r->dev, sizes[i] * 4, &r->z3[i]);
        if (i < 3 && !st) {
            host[i] = malloc(sizes[i] * 4);
            for (size_t e = 0; e < sizes[i]; e++) host[i][e] = rnd(&s) * (i ? 0.1f : 1.0f);
            st = clnpu_buffer_write(r->z3[i], 0, host[i], sizes[i] * 4);
        }
    }
    int *bt = malloc(mb * sizeof *bt), len = (int)L;
    for (size_t b = 0; b < mb; b++) bt[b] = (int)b;
    if (!st) st = clnpu_buffer_write(r->z3[3], 0, bt, mb * 4);
    if (!st) st = clnpu_buffer_write(r->z3[4], 0, &len, 4);
    r->mla = (clnpu_mla_decode_args){r->z3[1], r->z3[2], r->z3[0], page, r->z3[3], mb, r->z3[4], L, 1, H, R, DR, 1.0f,
                                     r->z3[5], 0, 0, 0, CLNPU_DTYPE_F32, NULL, CLNPU_ROPE_INTERLEAVED};
    if (check) {
        r->ref = malloc(H * R * sizeof *r->ref);
        double *sc = malloc(L * sizeof *sc);
        for (size_t h = 0; h < H; h++) {
            double mx = -INFINITY, z = 0;
            for (size_t t = 0; t < L; t++) {
                double a = 0;
                for (size_t d = 0; d < R; d++) a += (double)host[1][h * R + d] * host[0][t * (R + DR) + d];
                for (size_t d = 0; d < DR; d++) a += (double)host[2][h * DR + d] * host[0][t * (R + DR) + R + d];
                mx = fmax(mx, sc[t] = a);
            }
            for (size_t t = 0; t < L; t++) z += (sc[t] = exp(sc[t] - mx));
            for (size_t d = 0; d < R; d++) {
                double a = 0;
                for (size_t t = 0; t < L; t++) a += sc[t] * host[0][t * (R + DR) + d];
                r->ref[h * R + d] = a / z;
            }
        }
        free(sc);
        r->check_n = H * R;
    }
    free(bt);
    for (int i = 0; i < 3; i++) free(host[i]);
    return st;
}

static clnpu_status mla_step(void *p)
{
    runner *r = p;
    return clnpu_mla_decode(r->dev, &r->mla);
}

/* Build the job's workload: small (check) or representative (timing). */
static clnpu_status setup(runner *r, clnpu_device *dev, const job *j, bool check)
{
    memset(r, 0, sizeof *r);
    r->dev = dev, r->j = j;
    if (!strncmp(j->kernel, "gemm", 4)) /* gemm and gemm_wg */
        /* the check's rows stay in the job's class, or it would not run the candidate: grouped
         * 2 rows per matrix, grouped_prefill 11 (rows per matrix, gemm_params.c) */
        return check ? gemm_setup(r, j->segs ? j->segs * (j->m / j->segs <= 8 ? 2 : 11) : (j->m < 9 ? j->m : 23), 37,
                                  300, true)
                     : gemm_setup(r, j->m, j->n, j->k, false);
    if (!strcmp(j->kernel, "attention")) return attn_setup(r, check ? 37 : 512, check);
    return mla_setup(r, check ? 300 : 4096, check);
}

static bench_fn step_of(const job *j)
{
    return !strncmp(j->kernel, "gemm", 4) ? gemm_step : !strcmp(j->kernel, "attention") ? attn_step : mla_step;
}

/* Read back the check output: relative error against the reference. */
static double check_error(runner *r)
{
    clnpu_buffer *out = !strncmp(r->j->kernel, "gemm", 4) ? r->y : !strcmp(r->j->kernel, "attention") ? r->z3[3] : r->z3[5];
    float *o = malloc(r->check_n * 4);
    double num = 0, den = 0;
    if (clnpu_buffer_read(out, 0, o, r->check_n * 4)) {
        free(o);
        return INFINITY;
    }
    for (size_t i = 0; i < r->check_n; i++) {
        if (isnan(o[i])) {
            free(o);
            return INFINITY;
        }
        num += (o[i] - r->ref[i]) * (o[i] - r->ref[i]);
        den += r->ref[i] * r->ref[i];
    }
    free(o);
    return sqrt(num / den);
}

/* An entry for this device and job with the given parameter values (NULL: none). */
static clnpu_tuning_entry job_entry(clnpu_device *dev, const job *j, const space *sp, const int *v)
{
    clnpu_tuning_entry e;
    memset(&e, 0, sizeof e);
    clnpu_tuning_entry_set_device(&e, dev);
    snprintf(e.kernel, sizeof e.kernel, "%s", j->kernel);
    snprintf(e.dtype, sizeof e.dtype, "%s", clnpu_dtype_name(j->dtype));
    snprintf(e.shape_class, sizeof e.shape_class, "%s", j->cls);
    clnpu_tuning_source_hash(!strcmp(j->kernel, "gemm_wg") ? "gemm_wg.cl" : !strcmp(j->kernel, "gemm") ? "gemm.cl" : !strcmp(j->kernel, "attention") ? "attention.cl" : "mla.cl",
                             e.source_hash);
    for (int i = 0; v && i < sp->np; i++) {
        snprintf(e.names[e.nparams], sizeof e.names[0], "%s", sp->name[i]);
        e.values[e.nparams++] = v[i];
    }
    return e;
}

/* Median of 5 timed runs (batched up to min_time / 5 each) after a warm-up that builds the
 * variant: bench_median's 12 runs are too many for a search over thousands of candidates. */
static double tune_median(clnpu_device *dev, bench_fn fn, void *ctx, double min_time, clnpu_status *out_st)
{
    clnpu_status st = fn(ctx);
    if (!st) st = clnpu_device_finish(dev);
    double t0 = bench_now_s();
    if (!st) st = fn(ctx);
    if (!st) st = clnpu_device_finish(dev);
    const double single = bench_now_s() - t0;
    int batch = single > 0 ? (int)(min_time / 5 / single) : 1;
    batch = batch < 1 ? 1 : batch > 100 ? 100 : batch;
    double t[5];
    for (int n = 0; n < 5 && !st; n++) {
        t0 = bench_now_s();
        for (int i = 0; i < batch && !st; i++) st = fn(ctx);
        if (!st) st = clnpu_device_finish(dev);
        t[n] = (bench_now_s() - t0) / batch;
    }
    *out_st = st;
    if (st) return -1;
    qsort(t, 5, sizeof t[0], bench_cmp_double);
    return t[2];
}

/* Evaluate one candidate: correctness on the small case, then the times of the class's shapes
 * (out_ms[s], INFINITY when rejected); returns the first shape's. */
static double evaluate(clnpu_device *dev, clnpu_tuning_db *db, const job *j, const space *sp, const int *v,
                       runner *timing, size_t ntiming, double min_time, const char **why, double *out_ms)
{
    for (size_t s = 0; s < ntiming; s++) out_ms[s] = INFINITY;
    clnpu_tuning_entry e = job_entry(dev, j, sp, v);
    clnpu_tuning_db_put(db, &e); /* the runtime picks the candidate up through the device's db */
    runner r;
    clnpu_status st = setup(&r, dev, j, true);
    if (!st) st = step_of(j)(&r);
    if (!st) st = clnpu_device_finish(dev);
    double err = st ? INFINITY : check_error(&r);
    runner_free(&r);
    if (st == CLNPU_ERR_BUILD || st == CLNPU_ERR_OPENCL || st == CLNPU_ERR_OUT_OF_MEMORY) {
        *why = "build or launch failed";
        return INFINITY;
    }
    if (!(err <= 2e-5)) {
        *why = "wrong result";
        return INFINITY;
    }
    for (size_t s = 0; s < ntiming; s++) {
        double t = tune_median(dev, step_of(j), &timing[s], min_time, &st);
        if (st || t <= 0) {
            *why = "failed while timing";
            for (size_t i = 0; i < ntiming; i++) out_ms[i] = INFINITY;
            return INFINITY;
        }
        out_ms[s] = t * 1e3;
    }
    *why = NULL;
    return out_ms[0];
}

/* The worst shape's time relative to a reference time per shape (lower is better). */
static double score_of(const double *t, const double *ref, size_t ns)
{
    double w = 0;
    for (size_t i = 0; i < ns; i++) {
        const double r = t[i] / (ref[i] > 0 && isfinite(ref[i]) ? ref[i] : 1);
        if (!isfinite(r)) return INFINITY; /* rejected */
        if (r > w) w = r;
    }
    return w;
}

static double worst_ratio(const double *t, const double *best, size_t ns) { return score_of(t, best, ns); }

/* Times of a candidate (already checked) on each shape, for the final round robin. */
static void time_shapes(clnpu_device *dev, clnpu_tuning_db *db, const job *j, const space *sp, const int *v,
                        runner *timing, size_t ns, double min_time, double *out_ms)
{
    clnpu_tuning_entry e = job_entry(dev, j, sp, v);
    clnpu_tuning_db_put(db, &e);
    for (size_t s = 0; s < ns; s++) {
        clnpu_status st;
        const double t = tune_median(dev, step_of(j), &timing[s], min_time, &st);
        out_ms[s] = st || t <= 0 ? INFINITY : t * 1e3;
    }
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void progress(const char *label, size_t done, size_t total)
{
    int w = 30, filled = total ? (int)(w * done / total) : w;
    fprintf(stderr, "\r  [%.*s%*s] %-28s %zu/%zu", filled, "##############################", w - filled, "", label, done, total);
    if (done == total) fprintf(stderr, "\n");
    fflush(stderr);
}

int cmd_tune(int argc, char **argv)
{
    enum { O_OPS = CLI_OPT_FIRST_FREE, O_DTYPE, O_CLASSES, O_BUDGET, O_DB, O_FORCE };
    static const struct option longopts[] = {CLI_DEVICE_LONGOPTS, {"ops", required_argument, NULL, O_OPS},
                                             {"dtype", required_argument, NULL, O_DTYPE},
                                             {"classes", required_argument, NULL, O_CLASSES},
                                             {"budget", required_argument, NULL, O_BUDGET},
                                             {"db", required_argument, NULL, O_DB}, {"force", no_argument, NULL, O_FORCE},
                                             {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    cli_device_args da = {0};
    const char *ops = "gemm,attention,mla", *dtypes = "f32,bf16,int8,fp8", *dbpath = NULL, *classes = NULL;
    double budget = 120;
    bool force = false, ops_given = false;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int r = cli_device_option_checked(opt, optarg, &da, "tune", usage);
        if (r == 1) continue;
        if (r < 0) return -r;
        switch (opt) {
        case 'h':
            printf("usage: %s\n\nSearches the tunables of kernels-cl/tunables.yaml per shape class (gemm: gemv, "
                   "decode, grouped,\ngrouped_prefill, prefill per weight dtype; attention per head-dim pair; mla per context bucket), "
                   "checks each\ncandidate against a float64 reference, and keeps the fastest in the database "
                   "(default\n<cache dir>/tuning.yaml, used automatically by the runtime). --budget is in seconds "
                   "(default 120).\n--classes keeps only the named shape classes (e.g. prefill,grouped_prefill).\n", usage);
            return CLI_EXIT_OK;
        case O_OPS: ops = optarg, ops_given = true; break;
        case O_DTYPE: dtypes = optarg; break;
        case O_CLASSES: classes = optarg; break;
        case O_BUDGET:
            if (!cli_parse_double(optarg, 1e-3, 1e7, &budget)) return cli_usage_error("tune", usage, "bad --budget '%s'", optarg);
            break;
        case O_DB: dbpath = optarg; break;
        case O_FORCE: force = true; break;
        default: return cli_usage_error("tune", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("tune", usage, "unexpected argument '%s'", argv[optind]);
    /* the jobs: shape classes x dtypes */
    job jobs[64];
    size_t nj = 0;
    char dbuf[128], obuf[128];
    snprintf(obuf, sizeof obuf, "%s", ops);
    for (char *op = strtok(obuf, ","); op; op = strtok(NULL, ",")) {
        if (!strcmp(op, "gemm") || !strcmp(op, "gemm_wg")) {
            const char *kn = !strcmp(op, "gemm") ? "gemm" : "gemm_wg";
            snprintf(dbuf, sizeof dbuf, "%s", dtypes);
            char *save = NULL;
            for (char *dt = strtok_r(dbuf, ",", &save); dt; dt = strtok_r(NULL, ",", &save)) {
                int t = clnpu_dtype_parse(dt);
                if (t < 0 || t == CLNPU_DTYPE_I32) return cli_usage_error("tune", usage, "unknown dtype '%s'", dt);
                /* two shapes from each class's range (runtime/gemm_params.c, docs/tuning.md): a
                 * small and a large weight, short and long K */
                const clnpu_dtype d = (clnpu_dtype)t;
                if (nj + 5 > sizeof jobs / sizeof jobs[0]) return cli_usage_error("tune", usage, "too many jobs");
                /* the wg GEMV has no tile parameters: gemm_wg's classes are the tiled ones */
                if (kn[4] == '\0') jobs[nj++] = (job){kn, "gemv", d, 1, 2048, 4096, 0, 0, {{1, 2048, 4096}, {1, 7168, 2048}}};
                if (kn[4] == '\0') jobs[nj++] = (job){kn, "decode", d, 8, 2048, 2048, 0, 0, {{8, 2048, 2048}, {4, 1536, 7168}}};
                /* grouped: a decode step's experts (1-8 rows each), weight-bound; grouped_prefill:
                 * a prompt's (9 and more), compute-bound. Both as a MoE layer runs them: counts
                 * on the device, the SwiGLU gate_up and the plain down projection */
                jobs[nj++] = (job){kn, "grouped", d, 9, 256, 1024, 9, 1, {{9, 256, 1024, 9, 1}, {16, 1024, 512, 8, 0}}};
                jobs[nj++] = (job){kn, "grouped_prefill", d, 4096, 256, 1024, 64, 1,
                                   {{4096, 256, 1024, 64, 1}, {512, 1024, 512, 32, 0}}};
                jobs[nj++] = (job){kn, "prefill", d, 256, 512, 1024, 0, 0,
                                   {{256, 1024, 1024}, {512, 1536, 7168}, {512, 12288, 1536}}};
            }
        } else if (!strcmp(op, "attention")) {
            jobs[nj++] = (job){"attention", "d192_128", CLNPU_DTYPE_F32, 0, 0, 0, 0, 0, {{0}}};
            jobs[nj++] = (job){"attention", "d96_64", CLNPU_DTYPE_F32, 0, 0, 0, 0, 0, {{0}}};
        } else if (!strcmp(op, "mla")) {
            jobs[nj++] = (job){"mla", "ctx4k", CLNPU_DTYPE_F32, 0, 0, 0, 0, 0, {{0}}};
        } else {
            return cli_usage_error("tune", usage, "unknown op '%s' (gemm, gemm_wg, attention, mla)", op);
        }
    }
    if (classes) { /* only the named classes (a comma list) */
        size_t kept = 0;
        for (size_t i = 0; i < nj; i++) {
            const size_t n = strlen(jobs[i].cls);
            for (const char *c = classes; *c; c += strcspn(c, ",") + (c[strcspn(c, ",")] == ',')) {
                if (strcspn(c, ",") == n && !strncmp(c, jobs[i].cls, n)) {
                    jobs[kept++] = jobs[i];
                    break;
                }
            }
        }
        if (!kept) return cli_usage_error("tune", usage, "--classes '%s' names no class of these ops", classes);
        nj = kept;
    }
    clnpu_device *dev;
    clnpu_status st = cli_open_device(&da, false, &dev);
    if (st) return cli_fail("tune", st);
    if (!ops_given && clnpu_device_capability(dev)->family == CLNPU_KERNEL_FAMILY_WG) {
        /* by default, the GEMM family this device runs: gemm_wg's tiled classes */
        size_t kept = 0;
        for (size_t i = 0; i < nj; i++) {
            if (!strcmp(jobs[i].kernel, "gemm")) {
                if (!strcmp(jobs[i].cls, "gemv") || !strcmp(jobs[i].cls, "decode")) continue;
                jobs[i].kernel = "gemm_wg";
            }
            jobs[kept++] = jobs[i];
        }
        nj = kept;
    }
    char defpath[1200];
    snprintf(defpath, sizeof defpath, "%s/tuning.yaml", clnpu_device_cache_dir(dev));
    if (!dbpath) dbpath = *clnpu_device_cache_dir(dev) ? defpath : "tuning.yaml";
    clnpu_tuning_db *db = NULL, *work = NULL;
    st = clnpu_tuning_db_load(dbpath, &db);
    if (!st) st = clnpu_tuning_db_create(&work);
    if (st) {
        clnpu_device_close(dev);
        return cli_fail("tune", st);
    }
    clnpu_device_set_tuning(dev, work); /* candidates go through here */
    const clnpu_kernel_family table_family = clnpu_device_capability(dev)->family;
    const unsigned table_wg = clnpu_device_capability(dev)->wg_size;
    tune_cap = clnpu_device_capability(dev);
    const clnpu_device_info *info = clnpu_device_get_info(dev);
    printf("tuning %s (%s), profile %s, budget %.0f s, database %s\n", info->name, info->vendor,
           clnpu_device_get_profile(dev)->name, budget, dbpath);
    const double t_start = bench_now_s();
    typedef struct row { char label[48]; double def, best; char params[64]; char how[96]; } row;
    row rows[64];
    size_t nr = 0;
    char key[384];
    clnpu_tuning_device_key(dev, key, sizeof key);
    for (size_t ji = 0; ji < nj; ji++) {
        const job *j = &jobs[ji];
        char label[48];
        snprintf(label, sizeof label, "%s %s %s", j->kernel, clnpu_dtype_name(j->dtype), j->cls);
        /* resume: an entry for this device and source already measured */
        clnpu_tuning_match m;
        const clnpu_tuning_entry *have = clnpu_tuning_lookup(db, dev, j->kernel, clnpu_dtype_name(j->dtype), j->cls, &m, NULL);
        if (have && m == CLNPU_TUNING_EXACT && !force) {
            printf("  %-28s already tuned (%s); --force to redo\n", label, have->measured);
            continue;
        }
        /* each GEMM family's tunables are measured with that family running */
        clnpu_device_set_kernel_family(dev, !strcmp(j->kernel, "gemm_wg") ? CLNPU_KERNEL_FAMILY_WG
                                            : !strcmp(j->kernel, "gemm") ? CLNPU_KERNEL_FAMILY_CPU : table_family,
                                       table_wg);
        space sp;
        /* attention has two kernels; the tunables are those of the one this device runs */
        const bool regs = !strcmp(j->kernel, "attention") && clnpu_attention_uses_registers(dev);
        if (!load_space(regs ? "attention_regs" : j->kernel, &sp)) continue;
        /* what a class's kernel ignores is not searched: one row per work-item at M = 1, no
         * row blocks below 9 rows, one panel per work-item in the grouped kernels */
        const bool gemv = !strcmp(j->cls, "gemv"), grouped = !strncmp(j->cls, "grouped", 7);
        const bool small = gemv || !strcmp(j->cls, "decode") || !strcmp(j->cls, "grouped");
        for (int i = 0; i < sp.np && !strcmp(j->kernel, "gemm"); i++) {
            if ((gemv && !strcmp(sp.name[i], "mr")) || (small && !strcmp(sp.name[i], "mb")) ||
                (grouped && !strcmp(sp.name[i], "nb")))
                sp.vals[i][0] = 1, sp.nv[i] = 1;
            if (small && !strcmp(sp.name[i], "kc")) sp.nv[i] = 1;
        }
        const int row_bytes = (192 + 128) * 4;
        const uint64_t local = clnpu_device_local_mem_budget(dev);
        /* every allowed combination (kc only matters with row blocks), shuffled (seeded: runs
         * repeat), at most MAXC of them */
        size_t total = 1;
        for (int i = 0; i < sp.np; i++) total *= (size_t)sp.nv[i];
        int (*cand)[MAXP] = malloc((total ? total : 1) * sizeof *cand);
        size_t nc = 0;
        for (size_t c = 0; cand && c < total; c++) {
            size_t x = c;
            for (int i = 0; i < sp.np; i++) {
                cand[nc][i] = sp.vals[i][x % (size_t)sp.nv[i]];
                x /= (size_t)sp.nv[i];
            }
            const int mb = value_of(&sp, cand[nc], "mb", 1), kc = value_of(&sp, cand[nc], "kc", 0);
            int kc0 = kc;
            for (int i = 0; i < sp.np; i++)
                if (!strcmp(sp.name[i], "kc")) kc0 = sp.vals[i][0];
            if (mb == 1 && kc != kc0) continue;
            if (allowed(&sp, cand[nc], local, row_bytes)) nc++;
        }
        uint64_t s = 0x5eed + ji;
        for (size_t i = nc; i > 1; i--) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            size_t k = s % i;
            int tmp[MAXP];
            memcpy(tmp, cand[i - 1], sizeof tmp), memcpy(cand[i - 1], cand[k], sizeof tmp), memcpy(cand[k], tmp, sizeof tmp);
        }
        if (nc > MAXC) nc = MAXC;
        const double left = budget - (bench_now_s() - t_start);
        const double share = left / (double)(nj - ji);
        const double min_time = 0.05;
        const char *why;
        /* the class's representative shapes, set up once */
        job shapes[NSHAPE];
        runner timing[NSHAPE];
        size_t ns = 0;
        for (; ns < NSHAPE && (ns == 0 || j->shapes[ns][0]); ns++) {
            shapes[ns] = *j;
            if (j->shapes[ns][0])
                shapes[ns].m = j->shapes[ns][0], shapes[ns].n = j->shapes[ns][1], shapes[ns].k = j->shapes[ns][2],
                shapes[ns].segs = j->shapes[ns][3], shapes[ns].swiglu = j->shapes[ns][4];
            st = setup(&timing[ns], dev, &shapes[ns], false);
            if (st) break;
        }
        if (st || !cand) {
            for (size_t i = 0; i <= ns && i < NSHAPE; i++) runner_free(&timing[i]);
            free(cand);
            if (!st) st = CLNPU_ERR_OUT_OF_MEMORY;
            break;
        }
        double def[NSHAPE], (*tm)[NSHAPE] = malloc((nc ? nc : 1) * sizeof *tm);
        evaluate(dev, work, j, &sp, NULL, timing, ns, min_time, &why, def); /* the kernel's defaults */
        /* search order score: the worst shape's time relative to the defaults' */
#define SCORE(t) score_of(t, def, ns)
        double best = SCORE(def);
        int bestv[MAXP] = {0};
        bool have_best = false;
        size_t tried = 0, rejected = 0;
        const double per = 0.8 * (double)ns;
        const bool exhaustive = (double)nc * per <= share;
        const double t_job = bench_now_s();
        bool *done = calloc(nc ? nc : 1, 1);
        size_t refined = 0;
        for (size_t c = 0; c < nc; c++) tm[c][0] = INFINITY;
        /* random phase: all of the share when exhaustive, else 60 % of it */
        const double phase = exhaustive ? share : 0.6 * share;
        for (size_t c = 0; c < nc; c++) {
            if (bench_now_s() - t_job > phase && tried > 0) break;
            evaluate(dev, work, j, &sp, cand[c], timing, ns, min_time, &why, tm[c]);
            tried++, done[c] = true;
            if (why) rejected++;
            if (SCORE(tm[c]) < best * 0.995) best = SCORE(tm[c]), memcpy(bestv, cand[c], sizeof bestv), have_best = true;
            progress(label, c + 1, nc);
        }
        /* local refinement: move one parameter of the best to a neighbouring value, repeat while
         * that helps and the share lasts */
        for (bool improved = have_best && !exhaustive; improved && bench_now_s() - t_job < share;) {
            improved = false;
            for (int i = 0; i < sp.np && !improved; i++)
                for (int dir = -1; dir <= 1 && !improved; dir += 2) {
                    int at = 0;
                    while (at < sp.nv[i] && sp.vals[i][at] != bestv[i]) at++;
                    if (at + dir < 0 || at + dir >= sp.nv[i]) continue;
                    int nb[MAXP];
                    memcpy(nb, bestv, sizeof nb);
                    nb[i] = sp.vals[i][at + dir];
                    for (size_t c = 0; c < nc; c++) {
                        if (done[c] || memcmp(cand[c], nb, (size_t)sp.np * sizeof(int))) continue;
                        evaluate(dev, work, j, &sp, cand[c], timing, ns, min_time, &why, tm[c]);
                        tried++, refined++, done[c] = true;
                        if (why) rejected++;
                        if (SCORE(tm[c]) < best * 0.995) best = SCORE(tm[c]), memcpy(bestv, cand[c], sizeof bestv), improved = true;
                        break;
                    }
                }
        }
        if (tried < nc) fprintf(stderr, "\n");
        /* Finalists: the defaults and the FINAL best candidates by their worst shape against the
         * per-shape bests of the search; timed again round robin (3 rounds, medians), so a load
         * spike during one candidate's turn on a shared machine cannot decide the choice. */
        enum { FINAL = 4, ROUNDS = 3 };
        double bsearch[NSHAPE];
        for (size_t i = 0; i < ns; i++) {
            bsearch[i] = def[i];
            for (size_t c = 0; c < nc; c++)
                if (done[c] && tm[c][i] < bsearch[i]) bsearch[i] = tm[c][i];
        }
        size_t fin[FINAL + 1];
        size_t nfin = 0;
        bool *picked = calloc(nc ? nc : 1, 1);
        for (size_t f = 0; f < FINAL && picked; f++) {
            size_t bi = nc;
            for (size_t c = 0; c < nc; c++)
                if (done[c] && !picked[c] && isfinite(worst_ratio(tm[c], bsearch, ns)) &&
                    (bi == nc || worst_ratio(tm[c], bsearch, ns) < worst_ratio(tm[bi], bsearch, ns)))
                    bi = c;
            if (bi == nc) break;
            picked[bi] = true, fin[nfin++] = bi;
        }
        free(picked);
        double rt[FINAL + 1][NSHAPE][ROUNDS];
        for (int r = 0; r < ROUNDS; r++)
            for (size_t f = 0; f <= nfin; f++) { /* f == nfin: the defaults */
                double ms[NSHAPE];
                time_shapes(dev, work, j, &sp, f < nfin ? cand[fin[f]] : NULL, timing, ns, min_time, ms);
                for (size_t i = 0; i < ns; i++) rt[f][i][r] = ms[i];
            }
        for (size_t f = 0; f <= nfin; f++)
            for (size_t i = 0; i < ns; i++) {
                qsort(rt[f][i], ROUNDS, sizeof(double), cmp_double);
                double med = rt[f][i][ROUNDS / 2];
                if (f < nfin) tm[fin[f]][i] = med;
                else def[i] = med;
            }
        for (size_t c = 0; c < nc; c++) { /* only the finalists compete now */
            bool is_fin = false;
            for (size_t f = 0; f < nfin; f++) is_fin |= fin[f] == c;
            if (!is_fin) done[c] = false;
        }
        /* The choice: each shape's best among the finalists and the defaults; the one whose
         * worst shape is closest to its own best (at least 0.9x is the aim; the report says). */
        double bshape[NSHAPE];
        for (size_t i = 0; i < ns; i++) {
            bshape[i] = def[i];
            for (size_t c = 0; c < nc; c++)
                if (done[c] && tm[c][i] < bshape[i]) bshape[i] = tm[c][i];
        }
        double worst_best = worst_ratio(def, bshape, ns);
        have_best = false;
        for (size_t c = 0; c < nc; c++) {
            if (!done[c]) continue;
            const double w = worst_ratio(tm[c], bshape, ns);
            if (w < worst_best * 0.995) worst_best = w, memcpy(bestv, cand[c], sizeof bestv), have_best = true;
        }
        size_t worst_s = 0;
        double chosen[NSHAPE];
        memcpy(chosen, def, sizeof chosen);
        for (size_t c = 0; have_best && c < nc; c++)
            if (done[c] && !memcmp(cand[c], bestv, (size_t)sp.np * sizeof(int))) memcpy(chosen, tm[c], sizeof chosen);
        for (size_t i = 1; i < ns; i++)
            if (chosen[i] / bshape[i] > chosen[worst_s] / bshape[worst_s]) worst_s = i;
        for (size_t i = 0; i < ns; i++) runner_free(&timing[i]);
        clnpu_tuning_entry e = job_entry(dev, j, &sp, have_best ? bestv : NULL);
        e.ms = chosen[0], e.default_ms = def[0];
        time_t now = time(NULL);
        strftime(e.measured, sizeof e.measured, "%Y-%m-%d", gmtime(&now));
        char worst[48] = "";
        if (ns > 1)
            snprintf(worst, sizeof worst, "; worst %zux%zux%zu %.2fx", shapes[worst_s].m, shapes[worst_s].n,
                     shapes[worst_s].k, bshape[worst_s] / chosen[worst_s]);
        snprintf(e.how, sizeof e.how, "%s %zu/%zu, %zu shapes, %zu refined, %zu rejected, %zu re-timed x3%s",
                 exhaustive ? "exhaustive" : "random", tried, nc, ns, refined, rejected, nfin, worst);
        free(cand), free(tm), free(done);
#undef SCORE
        clnpu_tuning_db_put(db, &e);
        st = clnpu_tuning_db_save(db, dbpath); /* after every class: an interrupted run resumes */
        if (st) break;
        row *rw = &rows[nr++];
        snprintf(rw->label, sizeof rw->label, "%s", label);
        rw->def = def[0], rw->best = chosen[0];
        rw->params[0] = '\0';
        for (int i = 0; i < e.nparams; i++)
            snprintf(rw->params + strlen(rw->params), sizeof rw->params - strlen(rw->params), "%s%s=%d", i ? " " : "",
                     e.names[i], e.values[i]);
        if (!e.nparams) snprintf(rw->params, sizeof rw->params, "(defaults are best)");
        snprintf(rw->how, sizeof rw->how, "%s", e.how);
    }
    printf("\n%-28s %11s %11s %8s  %s\n", "kernel dtype class", "default ms", "tuned ms", "speedup", "parameters");
    for (size_t i = 0; i < nr; i++)
        printf("%-28s %11.3f %11.3f %7.2fx  %s  [%s]\n", rows[i].label, rows[i].def, rows[i].best,
               rows[i].def / rows[i].best, rows[i].params, rows[i].how);
    printf("tuning time %.0f s; database %s (%zu entries)\n", bench_now_s() - t_start, dbpath, clnpu_tuning_db_count(db));
    clnpu_device_set_kernel_family(dev, table_family, table_wg);
    clnpu_device_set_tuning(dev, NULL);
    clnpu_tuning_db_destroy(work);
    clnpu_tuning_db_destroy(db);
    clnpu_device_close(dev);
    return st ? cli_fail("tune", st) : CLI_EXIT_OK;
}
