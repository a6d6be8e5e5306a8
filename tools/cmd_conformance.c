/* `clnpu conformance`: does every kernel A.X K1 needs compute the right answer on this device?
 * Tiered cases at the model's shapes plus ragged ones, a summary table, a YAML report, and a
 * non-zero exit when a required case fails. */
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conformance.h"

static const char usage[] = "clnpu conformance " CLI_DEVICE_USAGE " [--tier 0|1|2|3] [--report FILE.yaml] [--model DIR]";

double conf_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

float conf_rand(conf_ctx *c)
{
    c->rng ^= c->rng << 13, c->rng ^= c->rng >> 7, c->rng ^= c->rng << 17;
    return (float)((c->rng >> 40) / 8388608.0 - 1.0);
}

double conf_rel(const float *a, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(a[i])) return NAN;
        num += (a[i] - ref[i]) * (a[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static conf_case *next_case(conf_ctx *c)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 64;
        conf_case *n = realloc(c->cases, cap * sizeof *n);
        if (!n) return NULL;
        c->cases = n, c->cap = cap;
    }
    conf_case *k = &c->cases[c->n++];
    memset(k, 0, sizeof *k);
    return k;
}

void conf_record(conf_ctx *c, int tier, const char *op, const char *dtype, const char *shape, double tol, double err,
                 double ms, clnpu_status st)
{
    conf_case *k = next_case(c);
    if (!k) return;
    k->tier = tier, k->tol = tol, k->err = err, k->ms = ms;
    snprintf(k->op, sizeof k->op, "%s", op);
    snprintf(k->dtype, sizeof k->dtype, "%s", dtype);
    snprintf(k->shape, sizeof k->shape, "%s", shape);
    /* gemv / gemm cases name their rows first ("MxNxK") */
    snprintf(k->variant, sizeof k->variant, "%s", clnpu_op_variant(c->dev, op, strtoul(shape, NULL, 10)));
    if (st) {
        k->status = st == CLNPU_ERR_UNSUPPORTED ? CONF_UNSUPPORTED : CONF_FAIL;
        snprintf(k->note, sizeof k->note, "%s", clnpu_error_message());
    } else {
        k->status = !(err <= tol) ? CONF_FAIL : CONF_PASS; /* NaN fails */
    }
    static const char *names[] = {"pass", "FAIL", "unsupported"};
    printf("  %-5s t%d %-18s %-6s %-26s err %-9.2e tol %-9.2e %8.1f ms  [%s]%s%s\n", names[k->status], tier, op,
           dtype, shape, err, tol, ms, k->variant, k->note[0] ? "  " : "", k->note);
    fflush(stdout);
}

void conf_unsupported(conf_ctx *c, int tier, const char *op, const char *dtype, const char *shape, const char *why)
{
    conf_case *k = next_case(c);
    if (!k) return;
    k->tier = tier, k->status = CONF_UNSUPPORTED, k->err = NAN;
    snprintf(k->op, sizeof k->op, "%s", op);
    snprintf(k->dtype, sizeof k->dtype, "%s", dtype);
    snprintf(k->shape, sizeof k->shape, "%s", shape);
    snprintf(k->note, sizeof k->note, "%s", why);
    snprintf(k->variant, sizeof k->variant, "%s", clnpu_op_variant(c->dev, op, strtoul(shape, NULL, 10)));
    printf("  %-5s t%d %-18s %-6s %-26s %s\n", "unsup", tier, op, dtype, shape, why);
}

static int write_report(const conf_ctx *c, const char *path, int max_tier)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "clnpu conformance: error: cannot create %s\n", path);
        return CLI_EXIT_FAIL;
    }
    const clnpu_device_info *d = clnpu_device_get_info(c->dev);
    clnpu_yaml *y = clnpu_yaml_begin(f);
    clnpu_yaml_map_begin(y);
    clnpu_yaml_kv_str(y, "format", "clnpu-conformance-1");
    clnpu_yaml_kv_str(y, "clnpu", clnpu_version());
    clnpu_yaml_key(y, "device");
    clnpu_yaml_map_begin(y);
    clnpu_yaml_kv_str(y, "name", d->name);
    clnpu_yaml_kv_str(y, "vendor", d->vendor);
    clnpu_yaml_kv_str(y, "driver", d->driver_version);
    clnpu_yaml_kv_str(y, "platform", d->platform_name);
    clnpu_yaml_kv_str(y, "type", clnpu_device_type_name(d->type));
    clnpu_yaml_kv_str(y, "profile", clnpu_device_get_profile(c->dev)->name);
    clnpu_yaml_kv_bool(y, "emulated", clnpu_device_is_emulated(c->dev));
    clnpu_yaml_kv_str(y, "kernel_family", clnpu_kernel_family_name(clnpu_device_capability(c->dev)->family));
    clnpu_yaml_kv_str(y, "kernel_family_reason", clnpu_device_capability(c->dev)->reason);
    clnpu_yaml_map_end(y);
    const char *qv[8], *qr[8];
    size_t nq = clnpu_quirks_applied(d, qv, qr, 8);
    clnpu_yaml_key(y, "quirks");
    clnpu_yaml_seq_begin(y);
    for (size_t i = 0; i < nq; i++) {
        clnpu_yaml_map_begin(y);
        clnpu_yaml_kv_str(y, "variant", qv[i]);
        clnpu_yaml_kv_str(y, "reason", qr[i]);
        clnpu_yaml_map_end(y);
    }
    clnpu_yaml_seq_end(y);
    clnpu_yaml_kv_int(y, "tier", max_tier);
    clnpu_yaml_key(y, "cases");
    clnpu_yaml_seq_begin(y);
    static const char *names[] = {"pass", "fail", "unsupported"};
    for (size_t i = 0; i < c->n; i++) {
        const conf_case *k = &c->cases[i];
        clnpu_yaml_map_begin(y);
        clnpu_yaml_kv_int(y, "tier", k->tier);
        clnpu_yaml_kv_str(y, "op", k->op);
        clnpu_yaml_kv_str(y, "dtype", k->dtype);
        clnpu_yaml_kv_str(y, "shape", k->shape);
        clnpu_yaml_kv_str(y, "status", names[k->status]);
        clnpu_yaml_kv_str(y, "variant", k->variant);
        if (!isnan(k->err)) clnpu_yaml_kv_num(y, "error", k->err);
        clnpu_yaml_kv_num(y, "tolerance", k->tol);
        clnpu_yaml_kv_num(y, "ms", k->ms);
        if (k->note[0]) clnpu_yaml_kv_str(y, "note", k->note);
        clnpu_yaml_map_end(y);
    }
    clnpu_yaml_seq_end(y);
    clnpu_yaml_map_end(y);
    bool ok = clnpu_yaml_end(y);
    if (fclose(f) || !ok) {
        fprintf(stderr, "clnpu conformance: error: writing %s failed\n", path);
        return CLI_EXIT_FAIL;
    }
    return CLI_EXIT_OK;
}

int cmd_conformance(int argc, char **argv)
{
    enum { O_TIER = CLI_OPT_FIRST_FREE, O_REPORT, O_MODEL };
    static const struct option longopts[] = {CLI_DEVICE_LONGOPTS, {"tier", required_argument, NULL, O_TIER},
                                             {"report", required_argument, NULL, O_REPORT},
                                             {"model", required_argument, NULL, O_MODEL},
                                             {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    cli_device_args da = {0};
    size_t tier = 3;
    const char *report = NULL, *model = "models/tiny-axk1";
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int r = cli_device_option_checked(opt, optarg, &da, "conformance", usage);
        if (r == 1) continue;
        if (r < 0) return -r;
        switch (opt) {
        case 'h':
            printf("usage: %s\n\nTier 0: buffers, copies, launches, events. 1: elementwise, RMSNorm, RoPE/YaRN, "
                   "softmax,\nsampling. 2: GEMM/GEMV for every weight dtype, flash attention. 3: MoE routing and "
                   "dispatch,\nMLA decode, a full forward of the tiny A.X K1 (--model, default models/tiny-axk1) "
                   "against\nits transformers reference. Runs every tier up to --tier (default 3).\n", usage);
            return CLI_EXIT_OK;
        case O_TIER:
            if (!cli_parse_size(optarg, &tier) || tier > 3) return cli_usage_error("conformance", usage, "bad --tier '%s'", optarg);
            break;
        case O_REPORT: report = optarg; break;
        case O_MODEL: model = optarg; break;
        default: return cli_usage_error("conformance", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("conformance", usage, "unexpected argument '%s'", argv[optind]);
    conf_ctx c = {.model_dir = model, .rng = 0x9e3779b97f4a7c15ULL};
    clnpu_status st = cli_open_device(&da, false, &c.dev);
    if (st) return cli_fail("conformance", st);
    const clnpu_device_info *d = clnpu_device_get_info(c.dev);
    printf("conformance on device %zu: %s (%s, driver %s), profile %s%s\n", d->index, d->name, d->vendor,
           d->driver_version, clnpu_device_get_profile(c.dev)->name, clnpu_device_is_emulated(c.dev) ? " (emulated)" : "");
    const char *qv[8], *qr[8];
    size_t nq = clnpu_quirks_applied(d, qv, qr, 8);
    for (size_t i = 0; i < nq; i++) printf("quirk: %s disabled (%s)\n", qv[i], qr[i]);
    printf("kernel family: %s (%s)\n", clnpu_kernel_family_name(clnpu_device_capability(c.dev)->family),
           clnpu_device_capability(c.dev)->reason);
    void (*tiers[4])(conf_ctx *) = {conf_tier0, conf_tier1, conf_tier2, conf_tier3};
    for (size_t t = 0; t <= tier; t++) tiers[t](&c);
    size_t pass = 0, fail = 0, unsup = 0;
    for (size_t i = 0; i < c.n; i++)
        c.cases[i].status == CONF_PASS ? pass++ : c.cases[i].status == CONF_FAIL ? fail++ : unsup++;
    printf("\n%-6s %6s %6s %12s\n", "tier", "pass", "fail", "unsupported");
    for (size_t t = 0; t <= tier; t++) {
        size_t p = 0, f = 0, u = 0;
        for (size_t i = 0; i < c.n; i++)
            if (c.cases[i].tier == (int)t)
                c.cases[i].status == CONF_PASS ? p++ : c.cases[i].status == CONF_FAIL ? f++ : u++;
        printf("%-6zu %6zu %6zu %12zu\n", t, p, f, u);
    }
    printf("%zu passed, %zu failed, %zu unsupported\n", pass, fail, unsup);
    int rc = fail ? CLI_EXIT_FAIL : CLI_EXIT_OK;
    if (report && write_report(&c, report, (int)tier)) rc = CLI_EXIT_FAIL;
    free(c.cases);
    clnpu_device_close(c.dev);
    return rc;
}
