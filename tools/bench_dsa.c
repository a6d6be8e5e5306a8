/* `clnpu bench dsa`: DeepSeek Sparse Attention decode at long contexts, against dense absorbed MLA:
 * one query of one sequence, the indexer (scores over every cached key, then the top-k), MLA over
 * the index_topk selected rows, and dense MLA decode over all of them, each timed alone. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

typedef struct dsa_ctx {
    clnpu_device *dev;
    clnpu_dsa_scores_args sa;
    clnpu_buffer *pos, *idx, *count;
    size_t k;
    clnpu_mla_sparse_args ma;
    clnpu_mla_decode_args da;
} dsa_ctx;

static clnpu_status step_indexer(void *p)
{
    dsa_ctx *c = p;
    clnpu_status st = clnpu_dsa_scores(c->dev, &c->sa);
    return st ? st : clnpu_dsa_topk(c->dev, c->sa.scores, c->sa.ld, c->pos, 1, c->k, c->idx, c->count);
}

static clnpu_status step_sparse(void *p)
{
    dsa_ctx *c = p;
    return clnpu_mla_sparse(c->dev, &c->ma);
}

static clnpu_status step_dense(void *p)
{
    dsa_ctx *c = p;
    return clnpu_mla_decode(c->dev, &c->da);
}

static clnpu_status fill(clnpu_buffer *b, float scale, uint64_t seed)
{
    size_t n = clnpu_buffer_size(b) / 4;
    float *v = malloc(n * sizeof *v);
    if (!v) return CLNPU_ERR_OUT_OF_MEMORY;
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        v[i] = ((seed >> 40) / 16777216.0f - 0.5f) * scale;
    }
    clnpu_status st = clnpu_buffer_write(b, 0, v, n * 4);
    free(v);
    return st;
}

int bench_dsa(int argc, char **argv)
{
    static const char usage[] = "clnpu bench dsa " CLI_DEVICE_USAGE " [--context L ...] [--topk K] [--heads H] "
                                "[--min-time S] [--json]";
    enum { OPT_JSON = CLI_OPT_FIRST_FREE, OPT_MIN_TIME, OPT_CONTEXT, OPT_TOPK, OPT_HEADS };
    struct option longopts[] = {CLI_DEVICE_LONGOPTS, {"json", no_argument, NULL, OPT_JSON},
                                {"min-time", required_argument, NULL, OPT_MIN_TIME},
                                {"context", required_argument, NULL, OPT_CONTEXT}, {"topk", required_argument, NULL, OPT_TOPK},
                                {"heads", required_argument, NULL, OPT_HEADS}, {"help", no_argument, NULL, 'h'},
                                {NULL, 0, NULL, 0}};
    cli_device_args da = {0};
    bool json = false;
    double min_time = 1.0;
    size_t ctx[8], nctx = 0, K = 2048, H = 32;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int r = cli_device_option(opt, optarg, &da);
        if (r == 1) continue;
        if (r == -1) return cli_usage_error("bench dsa", usage, "bad value '%s' for --device", optarg);
        switch (opt) {
        case 'h':
            printf("usage: %s\n\nDeepSeek Sparse Attention decode for one sequence at A.X-K2-Light's attention shapes\n"
                   "(32 heads, latent rank 128, rope 32; indexer 16 heads of 128; f32, pages of 64 rows):\n"
                   "the indexer (scores over every cached key + top-K), MLA over the K selected rows,\n"
                   "and dense absorbed MLA over all of them. Default contexts 4096, 16384, 65536; K 2048.\n", usage);
            return CLI_EXIT_OK;
        case OPT_JSON: json = true; break;
        case OPT_MIN_TIME:
            if ((min_time = atof(optarg)) <= 0) return cli_usage_error("bench dsa", usage, "bad --min-time '%s'", optarg);
            break;
        case OPT_CONTEXT:
            if (nctx == 8 || !cli_parse_size(optarg, &ctx[nctx]) || !ctx[nctx])
                return cli_usage_error("bench dsa", usage, "bad --context '%s'", optarg);
            nctx++;
            break;
        case OPT_TOPK:
            if (!cli_parse_size(optarg, &K) || !K) return cli_usage_error("bench dsa", usage, "bad --topk '%s'", optarg);
            break;
        case OPT_HEADS:
            if (!cli_parse_size(optarg, &H) || !H) return cli_usage_error("bench dsa", usage, "bad --heads '%s'", optarg);
            break;
        default: return cli_usage_error("bench dsa", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("bench dsa", usage, "unexpected argument '%s'", argv[optind]);
    if (!nctx) ctx[0] = 4096, ctx[1] = 16384, ctx[2] = 65536, nctx = 3;
    const size_t R = 128, DR = 32, NH = 16, D = 128, page = 64;
    clnpu_device *dev;
    clnpu_status st = cli_open_device(&da, false, &dev);
    if (st) return cli_fail("bench", st);
    if (!json)
        printf("device %s, profile %s; heads %zu, rank %zu, indexer %zu x %zu, top-%zu\n%8s %12s %12s %12s %12s\n",
               clnpu_device_get_info(dev)->name, clnpu_device_get_profile(dev)->name, H, R, NH, D, K, "context",
               "indexer ms", "sparse ms", "dsa total ms", "dense ms");
    for (size_t i = 0; i < nctx && !st; i++) {
        const size_t L = ctx[i], blocks = (L + page - 1) / page, k = K < L ? K : L;
        enum { IQ, IW, KC, LC, BT, SEQ, POS, LEN, SC, IDX, CNT, QA, QP, Z, NB };
        const size_t floats[NB] = {NH * D, NH, blocks * page * D, blocks * page * (R + DR), blocks, 1, 1, 1, L, k, 1,
                                   H * R, H * DR, H * R};
        clnpu_buffer *b[NB] = {0};
        for (int j = 0; j < NB && !st; j++) st = clnpu_buffer_create(dev, floats[j] * 4, &b[j]);
        const float scales[] = {1, 1, 1, 1};
        const int bufs[] = {IQ, IW, KC, LC};
        for (int j = 0; j < 4 && !st; j++) st = fill(b[bufs[j]], scales[j], 0x2545F4914F6CDD1DULL + (uint64_t)j);
        if (!st) st = fill(b[QA], 0.1f, 7);
        if (!st) st = fill(b[QP], 0.1f, 9);
        int *ids = malloc(blocks * sizeof *ids), zero = 0, last = (int)L - 1, len = (int)L;
        for (size_t j = 0; ids && j < blocks; j++) ids[j] = (int)(blocks - 1 - j); /* pages not in order */
        if (!st) st = ids ? clnpu_buffer_write(b[BT], 0, ids, blocks * 4) : CLNPU_ERR_OUT_OF_MEMORY;
        free(ids);
        if (!st) st = clnpu_buffer_write(b[SEQ], 0, &zero, 4);
        if (!st) st = clnpu_buffer_write(b[POS], 0, &last, 4);
        if (!st) st = clnpu_buffer_write(b[LEN], 0, &len, 4);
        dsa_ctx c = {dev,
                     {{b[IQ], 0, NH * D}, {b[IW], 0, NH}, b[KC], page, b[BT], blocks, b[SEQ], b[POS], 1, NH, D, L,
                      0.022f, b[SC], L},
                     b[POS], b[IDX], b[CNT], k,
                     {b[QA], b[QP], 0, H * DR, DR, b[LC], page, b[BT], blocks, b[SEQ], b[IDX], b[CNT], k, 1, H, R, DR,
                      0.1f, b[Z], 0, CLNPU_DTYPE_F32},
                     {b[QA], b[QP], b[LC], page, b[BT], blocks, b[LEN], L, 1, H, R, DR, 0.1f, b[Z], 0, 0, 0,
                      CLNPU_DTYPE_F32, NULL, CLNPU_ROPE_INTERLEAVED}};
        double ti = st ? -1 : bench_median(dev, step_indexer, &c, min_time, &st);
        double ts = st ? -1 : bench_median(dev, step_sparse, &c, min_time, &st);
        double td = st ? -1 : bench_median(dev, step_dense, &c, min_time, &st);
        for (int j = 0; j < NB; j++) clnpu_buffer_destroy(b[j]);
        if (st) break;
        if (json) {
            char shp[96], extra[160];
            snprintf(shp, sizeof shp, "\"context\":%zu,\"heads\":%zu,\"topk\":%zu", L, H, K);
            snprintf(extra, sizeof extra, "\"indexer_ms\":%.4f,\"sparse_ms\":%.4f,\"dense_ms\":%.4f", ti * 1e3, ts * 1e3,
                     td * 1e3);
            bench_print_json("dsa", "f32", shp, (ti + ts) * 1e3, 0, 0, extra, dev);
        } else {
            printf("%8zu %12.3f %12.3f %12.3f %12.3f\n", L, ti * 1e3, ts * 1e3, (ti + ts) * 1e3, td * 1e3);
        }
    }
    clnpu_device_close(dev);
    return st ? cli_fail("bench", st) : CLI_EXIT_OK;
}
