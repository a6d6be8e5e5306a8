/* Checkpoint and config loading: bad input gets a clear error naming the problem, never a crash
 * (run under ASan in CI). Corrupt copies of the shipped fixture are made in a temporary folder. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#define TINY CLNPU_SOURCE_DIR "/models/tiny-axk1"

static void copy_file(const char *from, const char *to)
{
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    ck_assert(a && b);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) ck_assert_uint_eq(fwrite(buf, 1, n, b), n);
    fclose(a);
    ck_assert_int_eq(fclose(b), 0);
}

static void copy_fixture(char *dir, size_t cap)
{
    test_mkdtemp(dir, cap);
    const char *files[] = {"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                           "model.safetensors.index.json"};
    for (size_t i = 0; i < 4; i++) {
        char a[512], b[512];
        snprintf(a, sizeof a, TINY "/%s", files[i]);
        snprintf(b, sizeof b, "%s/%s", dir, files[i]);
        copy_file(a, b);
    }
}

/* Rewrite the fixture as one model.safetensors, with one tensor changed by `edit` (which may
 * drop it by returning 0). */
typedef int (*edit_fn)(clnpu_tensor_out *t, void *scratch);

static void rewrite_single(const char *dir, edit_fn edit, void *scratch)
{
    clnpu_checkpoint *ck;
    ck_assert_ok(clnpu_checkpoint_open(TINY, &ck));
    size_t n = clnpu_checkpoint_tensor_count(ck), k = 0;
    clnpu_tensor_out *ts = calloc(n, sizeof *ts);
    const char *names[512];
    clnpu_safetensors *f1, *f2;
    ck_assert_ok(clnpu_safetensors_open(TINY "/model-00001-of-00002.safetensors", &f1));
    ck_assert_ok(clnpu_safetensors_open(TINY "/model-00002-of-00002.safetensors", &f2));
    for (int fi = 0; fi < 2; fi++) {
        clnpu_safetensors *f = fi ? f2 : f1;
        for (size_t i = 0; i < clnpu_safetensors_count(f); i++) {
            const clnpu_tensor_info *t = clnpu_safetensors_get(f, i);
            clnpu_tensor_out o = {t->name, t->dtype, t->ndim, {0}, t->data};
            memcpy(o.shape, t->shape, sizeof o.shape);
            names[k] = t->name;
            if (edit(&o, scratch)) ts[k++] = o;
        }
    }
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_ok(clnpu_safetensors_write(path, ts, k));
    (void)names;
    free(ts);
    clnpu_safetensors_close(f1);
    clnpu_safetensors_close(f2);
    clnpu_checkpoint_close(ck);
}

static int keep_all(clnpu_tensor_out *t, void *s)
{
    (void)t, (void)s;
    return 1;
}

static int transpose_up7(clnpu_tensor_out *t, void *s)
{
    (void)s;
    if (!strcmp(t->name, "model.layers.1.mlp.experts.7.up_proj.weight")) {
        int64_t a = t->shape[0];
        t->shape[0] = t->shape[1], t->shape[1] = a;
    }
    return 1;
}

static int drop_kv_b(clnpu_tensor_out *t, void *s)
{
    (void)s;
    return strcmp(t->name, "model.layers.2.self_attn.kv_b_proj.weight") != 0;
}

static int i32_o_proj(clnpu_tensor_out *t, void *s)
{
    (void)s;
    if (!strcmp(t->name, "model.layers.0.self_attn.o_proj.weight")) {
        t->dtype = CLNPU_DTYPE_I32; /* same bytes would not fit: halve the shape */
        t->shape[1] /= 2;
    }
    return 1;
}

/* Open the directory and build the model; expect failure with all needles in the message. */
static void expect_model_error(const char *dir, const char *n1, const char *n2)
{
    clnpu_model_config cfg;
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    clnpu_status st = clnpu_model_config_load(path, &cfg);
    clnpu_checkpoint *ck = NULL;
    clnpu_model *m = NULL;
    if (!st) st = clnpu_checkpoint_open(dir, &ck);
    clnpu_model_options o = clnpu_model_options_default();
    o.max_context = 32, o.max_tokens = 8, o.max_sequences = 1;
    if (!st) st = clnpu_model_create(test_device(), &cfg, ck, &o, &m);
    const char *msg = clnpu_error_message();
    ck_assert_msg(st != CLNPU_OK, "accepted a bad model in %s (expected: %s / %s)", dir, n1, n2 ? n2 : "");
    ck_assert_msg(strstr(msg, n1) && (!n2 || strstr(msg, n2)), "message lacks '%s'/'%s': %s", n1, n2 ? n2 : "", msg);
    clnpu_model_destroy(m);
    clnpu_checkpoint_close(ck);
}

START_TEST(test_single_file_and_edits)
{
    char dir[256], p[512];
    /* One model.safetensors instead of shards loads the same. */
    test_mkdtemp(dir, sizeof dir);
    snprintf(p, sizeof p, "%s/config.json", dir);
    copy_file(TINY "/config.json", p);
    rewrite_single(dir, keep_all, NULL);
    clnpu_checkpoint *ck;
    ck_assert_ok(clnpu_checkpoint_open(dir, &ck));
    ck_assert_uint_eq(clnpu_checkpoint_tensor_count(ck), 141);
    clnpu_checkpoint_close(ck);
    /* Shape, missing tensor, dtype. */
    rewrite_single(dir, transpose_up7, NULL);
    expect_model_error(dir, "model.layers.1.mlp.experts.7.up_proj.weight: expected [32, 96], file has [96, 32]",
                       "model.safetensors");
    rewrite_single(dir, drop_kv_b, NULL);
    expect_model_error(dir, "model.layers.2.self_attn.kv_b_proj.weight", "missing");
    rewrite_single(dir, i32_o_proj, NULL);
    expect_model_error(dir, "model.layers.0.self_attn.o_proj.weight", NULL);
    test_rmdir(dir);
}
END_TEST

/* Damage one shard's bytes: truncated, header length past the end, offsets outside the data. */
START_TEST(test_corrupt_shards)
{
    char dir[256], shard[512];
    copy_fixture(dir, sizeof dir);
    snprintf(shard, sizeof shard, "%s/model-00002-of-00002.safetensors", dir);
    FILE *f = fopen(shard, "r+b");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    ck_assert_int_eq(ftruncate(fileno(f), size - 1000), 0);
    fclose(f);
    expect_model_error(dir, "model-00002-of-00002.safetensors", "outside the data area");

    test_rmdir(dir);
    copy_fixture(dir, sizeof dir);
    snprintf(shard, sizeof shard, "%s/model-00002-of-00002.safetensors", dir);
    f = fopen(shard, "r+b");
    uint64_t huge = 1ull << 40;
    fwrite(&huge, 8, 1, f);
    fclose(f);
    expect_model_error(dir, "model-00002-of-00002.safetensors", "header length");

    /* A data_offsets end moved past the data area, keeping the header length. */
    test_rmdir(dir);
    copy_fixture(dir, sizeof dir);
    snprintf(shard, sizeof shard, "%s/model-00002-of-00002.safetensors", dir);
    f = fopen(shard, "r+b");
    uint64_t hlen;
    ck_assert_uint_eq(fread(&hlen, 8, 1, f), 1);
    char *hdr = calloc(hlen + 1, 1);
    ck_assert_uint_eq(fread(hdr, 1, hlen, f), hlen);
    char *at = strstr(hdr, "\"data_offsets\":[");
    ck_assert_ptr_nonnull(at);
    at = strchr(at, ',') + 1; /* first digit of the end offset */
    *at = '9';                /* ...now far past the end (same length) */
    fseek(f, 8, SEEK_SET);
    fwrite(hdr, 1, hlen, f);
    fclose(f);
    free(hdr);
    expect_model_error(dir, "model-00002-of-00002.safetensors", "data_offsets");

    /* Header that is not JSON. */
    test_rmdir(dir);
    copy_fixture(dir, sizeof dir);
    snprintf(shard, sizeof shard, "%s/model-00002-of-00002.safetensors", dir);
    f = fopen(shard, "r+b");
    fseek(f, 8, SEEK_SET);
    fputs("{{{{", f);
    fclose(f);
    expect_model_error(dir, "model-00002-of-00002.safetensors", "JSON");

    /* An index naming a shard that does not exist. */
    test_rmdir(dir);
    copy_fixture(dir, sizeof dir);
    snprintf(shard, sizeof shard, "%s/model-00001-of-00002.safetensors", dir);
    ck_assert_int_eq(unlink(shard), 0);
    expect_model_error(dir, "model-00001-of-00002.safetensors", "cannot open");
    test_rmdir(dir);
}
END_TEST

/* Safetensors headers built by hand: overlap, dtype, size mismatch. */
START_TEST(test_header_rules)
{
    static const struct { const char *json; const char *needle; } bad[] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", "overlap"},
        {"{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", "unsupported dtype F64"},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[3,3],\"data_offsets\":[0,16]}}", "18 bytes"},
        {"{\"a\":{\"dtype\":\"I8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", "shape[0]"},
        {"{\"a\":{\"dtype\":\"I8\",\"shape\":[4]}}", "data_offsets"},
        {"[1,2,3]", "not a JSON object"},
        {"{\"a\":{\"dtype\":\"I8\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,1]}}", "overflow"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        clnpu_safetensors *f = NULL;
        clnpu_status st = clnpu_safetensors_parse(bad[i].json, strlen(bad[i].json), NULL, 64, "t.safetensors", &f);
        ck_assert_msg(st != CLNPU_OK && !f, "case %zu accepted", i);
        ck_assert_msg(strstr(clnpu_error_message(), bad[i].needle), "case %zu: %s", i, clnpu_error_message());
    }
    const char *good = "{\"__metadata__\":{\"format\":\"pt\"},\"x\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    clnpu_safetensors *f;
    ck_assert_ok(clnpu_safetensors_parse(good, strlen(good), NULL, 16, "t", &f));
    ck_assert_uint_eq(clnpu_safetensors_count(f), 1);
    clnpu_safetensors_close(f);
}
END_TEST

START_TEST(test_bad_configs)
{
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    static const struct { const char *json; const char *needle; } bad[] = {
        {"{\"model_type\": \"axk1\", \"hidden_size\": 96", "not valid JSON"},
        {"{\"model_type\": \"llama\"}", "model_type \"llama\" is not supported"},
        {"{\"model_type\": \"axk1\", \"vocab_size\": 10}", "missing required field \"hidden_size\""},
        {"{\"hidden_size\": 96}", "model_type"},
    };
    clnpu_model_config cfg;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(test_write_file(path, bad[i].json), 0);
        ck_assert_msg(clnpu_model_config_load(path, &cfg) != CLNPU_OK, "case %zu accepted", i);
        ck_assert_msg(strstr(clnpu_error_message(), bad[i].needle) && strstr(clnpu_error_message(), "config.json"),
                      "case %zu: %s", i, clnpu_error_message());
    }
    /* rope_parameters (transformers 5) instead of rope_scaling + rope_theta gives the same RoPE. */
    clnpu_model_config a, b;
    ck_assert_ok(clnpu_model_config_load(TINY "/config.json", &a));
    FILE *f = fopen(TINY "/config.json", "rb");
    char text[8192] = {0};
    ck_assert_uint_gt(fread(text, 1, sizeof text - 1, f), 0);
    fclose(f);
    char *rs = strstr(text, "\"rope_scaling\"");
    ck_assert_ptr_nonnull(rs);
    char edited[8300];
    size_t pre = (size_t)(rs - text);
    snprintf(edited, sizeof edited, "%.*s\"rope_parameters\": {\"rope_type\": \"yarn\", \"rope_theta\": 10000.0, "
             "\"factor\": 4.0, \"original_max_position_embeddings\": 64, \"beta_fast\": 32.0, \"beta_slow\": 1.0, "
             "\"mscale\": 1.0, \"mscale_all_dim\": 0.0}, \"unused_rope_scaling\"%s", (int)pre, text,
             rs + strlen("\"rope_scaling\""));
    ck_assert_int_eq(test_write_file(path, edited), 0);
    ck_assert_ok(clnpu_model_config_load(path, &b));
    ck_assert(b.rope.scaling == CLNPU_ROPE_YARN && b.rope.factor == a.rope.factor &&
              b.rope.original_max_position_embeddings == a.rope.original_max_position_embeddings &&
              b.rope.theta == a.rope.theta && b.rope.mscale_all_dim == a.rope.mscale_all_dim);
    test_rmdir(dir);
}
END_TEST

/* The CLI end to end: dumped logits equal transformers'; bad input exits non-zero with a message. */
static double logits_error(const char *path)
{
    clnpu_safetensors *got, *ref;
    ck_assert_ok(clnpu_safetensors_open(path, &got));
    ck_assert_ok(clnpu_safetensors_open(TINY "/reference.safetensors", &ref));
    const clnpu_tensor_info *a = clnpu_safetensors_find(got, "logits"), *b = clnpu_safetensors_find(ref, "logits");
    ck_assert(a && b && a->bytes == b->bytes);
    double num = 0, den = 0;
    for (size_t i = 0; i < a->bytes / 4; i++) {
        double x = ((const float *)a->data)[i], y = ((const float *)b->data)[i];
        num += (x - y) * (x - y), den += y * y;
    }
    clnpu_safetensors_close(got);
    clnpu_safetensors_close(ref);
    return sqrt(num / den);
}

/* Write plan `name` (yaml) in dir and run the reference prompt through it with extra arguments,
 * dumping the logits to dir/name.safetensors; the run must succeed. */
static void run_plan(const char *dir, const char *name, const char *yaml, const char *ids, const char *args)
{
    char plan[512], cmd[2048], out[16384];
    snprintf(plan, sizeof plan, "%s/%s.yaml", dir, name);
    ck_assert_int_eq(test_write_file(plan, yaml), 0);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids %s --plan %s %s --dump-logits %s/%s.safetensors", CLNPU_CLI_PATH,
             TINY, ids, plan, args, dir, name);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
}

START_TEST(test_cli_run)
{
    char dir[256], cmd[2048], out[16384];
    test_mkdtemp(dir, sizeof dir);
    const char *ids = "296,365,263,313,40,223,311,274,157,172,163,193,185,305,68,221,193,230,243,246,169,257,365,277";
    for (int df = 0; df < 2; df++) {
        snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids %s -n 3 %s --dump-logits %s/l.safetensors",
                 CLNPU_CLI_PATH, TINY, ids, df ? "--decode-from 1" : "", dir);
        ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
        char path[512];
        snprintf(path, sizeof path, "%s/l.safetensors", dir);
        clnpu_safetensors *got, *ref;
        ck_assert_ok(clnpu_safetensors_open(path, &got));
        ck_assert_ok(clnpu_safetensors_open(TINY "/reference.safetensors", &ref));
        const clnpu_tensor_info *a = clnpu_safetensors_find(got, "logits"), *b = clnpu_safetensors_find(ref, "logits");
        ck_assert(a && b && a->bytes == b->bytes && a->ndim == 2 && a->shape[0] == 24 && a->shape[1] == 384);
        double num = 0, den = 0;
        for (size_t i = 0; i < a->bytes / 4; i++) {
            double x = ((const float *)a->data)[i], y = ((const float *)b->data)[i];
            num += (x - y) * (x - y), den += y * y;
        }
        ck_assert_msg(sqrt(num / den) <= 1e-4, "dumped logits (decode-from %d): %.3g", df, sqrt(num / den));
        clnpu_safetensors_close(got);
        clnpu_safetensors_close(ref);
    }
    /* A plan from `clnpu plan`, and a three-stage plan with an emulated NPU stage, run through the
     * pipeline: the same logits. */
    snprintf(cmd, sizeof cmd, "'%s' plan --model '%s/config.json' --cluster '%s/clusters/pocl-2.yaml' -o %s/plan.yaml "
             "--context 64 && '%s' run --model '%s' --ids %s --plan %s/plan.yaml --dump-logits %s/p.safetensors",
             CLNPU_CLI_PATH, TINY, CLNPU_SOURCE_DIR, dir, CLNPU_CLI_PATH, TINY, ids, dir, dir);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    run_plan(dir, "p3",
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nparallel: {tp: 1, pp: 3, ep: 1, dp: 1}\nstages:\n"
        "- {stage: 0, profile: pocl-cpu, devices: [0], embedding: true, head: false, layers: [0]}\n"
        "- {stage: 1, profile: rebellions-atom, devices: [1], embedding: false, head: false, layers: [1]}\n"
        "- {stage: 2, profile: pocl-cpu, devices: [2], embedding: false, head: true, layers: [2]}\n", ids, "--decode-from 3 --share-devices");
    /* tensor parallel: PP 2 x TP 2, each stage's experts over its two devices */
    run_plan(dir, "ptp",
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nparallel: {tp: 2, pp: 2, ep: 2, dp: 1}\nstages:\n"
        "- {stage: 0, profile: pocl-cpu, devices: [0, 1], embedding: true, head: false, layers: [0, 1]}\n"
        "- {stage: 1, profile: pocl-cpu, devices: [2, 3], embedding: false, head: true, layers: [2]}\n"
        "experts:\n- [0, 1, 2, 3, 4, 5, 6, 7]\n- [8, 9, 10, 11, 12, 13, 14, 15]\n", ids, "--decode-from 5 --share-devices");
    /* pipeline replica 1 of a plan with two: the same stages on the next devices, the same logits;
     * a replica the plan does not have is refused */
    run_plan(dir, "pr",
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nparallel: {tp: 1, pp: 2, ep: 1, dp: 2, pipeline_replicas: 2}\n"
        "stages:\n- {stage: 0, devices: [0], embedding: true, head: false, layers: [0, 1]}\n"
        "- {stage: 1, devices: [1], embedding: false, head: true, layers: [2]}\n", ids, "--replica 1 --share-devices");
    char plan3[512], planr[512];
    snprintf(plan3, sizeof plan3, "%s/p3.yaml", dir);
    snprintf(planr, sizeof planr, "%s/pr.yaml", dir);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids %s --plan %s --replica 2", CLNPU_CLI_PATH, TINY, ids, planr);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "2 pipeline replicas (0..1)"), "%.1500s", out);
    const char *names[4] = {"p", "p3", "ptp", "pr"};
    for (int k = 0; k < 4; k++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, names[k]);
        const double e = logits_error(path);
        ck_assert_msg(e <= 1e-4, "plan run %d: %.3g", k, e);
    }
    /* replica 1 lies on plan devices 2 and 3: with two OpenCL devices that is refused unless the
     * devices are shared (no silent wrap) */
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids %s --plan %s --replica 1", CLNPU_CLI_PATH, TINY, ids, planr);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "plan device 2 is not present"), "%.1500s", out);
    /* a plan for another model, or for other weights, is refused */
    ck_assert_int_eq(test_write_file(plan3, "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 7168\n"
        "routed_experts: 16\nweights: bf16\nstages:\n- {devices: [0], embedding: true, head: true, layers: [0, 1, 2]}\n"), 0);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2 --plan %s", CLNPU_CLI_PATH, TINY, plan3);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "hidden size 7168"), "%.1500s", out);
    ck_assert_int_eq(test_write_file(plan3, "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\n"
        "routed_experts: 16\nweights: fp8\nstages:\n- {devices: [0], embedding: true, head: true, layers: [0, 1, 2]}\n"), 0);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2 --plan %s --weights int8", CLNPU_CLI_PATH, TINY, plan3);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "the plan is for fp8 weights, not int8"), "%.1500s", out);
    ck_assert_int_eq(test_write_file(plan3, "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\n"
        "routed_experts: 16\nweights: bf16\nlatent_cache: bf16\nstages:\n"
        "- {devices: [0], embedding: true, head: true, layers: [0, 1, 2]}\n"), 0);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2 --plan %s --latent-cache f32", CLNPU_CLI_PATH, TINY, plan3);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "the plan is for a bf16 latent cache, not f32"), "%.1500s", out);
    /* an fp8 cache: run by the plan that says so, or by the option; another type is refused */
    ck_assert_int_eq(test_write_file(plan3, "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\n"
        "routed_experts: 16\nweights: bf16\nlatent_cache: fp8\nstages:\n"
        "- {devices: [0], embedding: true, head: true, layers: [0, 1, 2]}\n"), 0);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2 --plan %s --latent-cache bf16", CLNPU_CLI_PATH, TINY, plan3);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "the plan is for a fp8 latent cache, not bf16"), "%.1500s", out);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2 --plan %s -n 2", CLNPU_CLI_PATH, TINY, plan3);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2 --latent-cache fp8 -n 2", CLNPU_CLI_PATH, TINY);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2 --latent-cache fp4", CLNPU_CLI_PATH, TINY);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 2);
    ck_assert_msg(strstr(out, "bad --latent-cache 'fp4' (f32, bf16 or fp8)"), "%.1500s", out);

    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,2,999", CLNPU_CLI_PATH, TINY);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "token id 999"), "%.1500s", out);
    snprintf(cmd, sizeof cmd, "'%s' run --model /nonexistent --ids 1", CLNPU_CLI_PATH);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "/nonexistent"), "%.1500s", out);
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids 1,x", CLNPU_CLI_PATH, TINY);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 2);
    test_rmdir(dir);
}
END_TEST


/* The reference prompt through `plan` under mpirun with np ranks (prefill 2, then decode): the
 * dumped logits' error against transformers. */
static double mpirun_logits_error(const char *dir, int np, const char *plan, const char *ids, const char *what)
{
    static int runs;
    char path[512], cmd[2048], out[16384];
    snprintf(path, sizeof path, "%s/mpi-%d.safetensors", dir, runs++);
    /* one rank is one process: a plan for more devices than the runner's two shares them */
    snprintf(cmd, sizeof cmd, "CLNPU_MPI_TIMEOUT=60 timeout 120 mpirun --oversubscribe -np %d '%s' run --model '%s' "
             "--ids %s --plan %s --decode-from 2 -n 2 --dump-logits %s%s", np, CLNPU_CLI_PATH, TINY, ids, plan, path,
             np == 1 ? " --share-devices" : "");
    int rc = test_run(cmd, out, sizeof out);
    ck_assert_msg(rc == 0, "mpirun -np %d (%s) failed (%d): %.1500s", np, what, rc, out);
    double e = logits_error(path);
    fprintf(stderr, "mpirun -np %d, %s: logits rel error %.2e\n", np, what, e);
    return e;
}

/* Plans across Open MPI ranks on loopback: 2, 3 and 4 ranks give the transformers logits; a rank
 * that dies ends the job with a non-zero exit and a message, quickly. */
/* The lines of generated ids in a command's output (digits and commas only). */
static void id_lines(const char *out, char *ids, size_t cap)
{
    size_t n = 0;
    ids[0] = '\0';
    for (const char *l = out; *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        bool digits = len > 0;
        for (size_t i = 0; i < len; i++) digits = digits && (l[i] == ',' || (l[i] >= '0' && l[i] <= '9'));
        if (digits && n + len + 2 < cap) memcpy(ids + n, l, len), n += len, ids[n++] = '\n', ids[n] = '\0';
        l = e ? e + 1 : l + len;
    }
}

/* Three sequences decoding together through `plan`, started with `launch` ("" or an mpirun
 * line): the run succeeds and prints `want`, one device's ids. */
static void expect_ids(const char *launch, const char *seq_ids, const char *plan, const char *want, const char *what)
{
    char cmd[2048], out[16384], got[1024];
    snprintf(cmd, sizeof cmd, "%s '%s' run --model '%s' --ids %s -n 6 --sequences 3 --plan %s", launch, CLNPU_CLI_PATH,
             TINY, seq_ids, plan);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    id_lines(out, got, sizeof got);
    ck_assert_msg(!strcmp(want, got), "%s:\n%s\none device:\n%s", what, got, want);
}

START_TEST(test_mpi_ranks)
{
    char dir[256], cmd[2048], out[16384], plan[512], plan2[512];
    if (system("command -v mpirun >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_mpi_ranks: mpirun not installed, skipped\n");
        return;
    }
    /* as root in CI: the variables Open MPI documents for it */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    /* Open MPI's and PMIx's plugins are unloaded before LeakSanitizer runs, so their allocations
     * cannot be attributed to a library (no suppression can match them): leak checking is off in
     * the ranks only; the same code runs leak-checked in the single-process tests. ASan and UBSan
     * stay on. */
    const char *asan = getenv("ASAN_OPTIONS");
    char asan_ranks[512];
    snprintf(asan_ranks, sizeof asan_ranks, "%s%sdetect_leaks=0", asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", asan_ranks, 1);
    test_mkdtemp(dir, sizeof dir);
    snprintf(plan, sizeof plan, "%s/plan4.yaml", dir);
    ck_assert_int_eq(test_write_file(plan,
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nparallel: {tp: 1, pp: 4, ep: 1, dp: 1}\nstages:\n"
        "- {stage: 0, devices: [0], embedding: true, head: false, layers: []}\n"
        "- {stage: 1, devices: [1], embedding: false, head: false, layers: [0, 1]}\n"
        "- {stage: 2, profile: rebellions-atom, devices: [2], embedding: false, head: false, layers: [2]}\n"
        "- {stage: 3, devices: [3], embedding: false, head: true, layers: []}\n"), 0);
    const char *ids = "296,365,263,313,40,223,311,274,157,172,163,193,185,305,68,221,193,230,243,246,169,257,365,277";
#ifndef CLNPU_HAVE_MPI
    /* built without MPI: started by mpirun, it says so instead of running every stage N times */
    snprintf(cmd, sizeof cmd, "timeout 120 mpirun --oversubscribe -np 2 '%s' run --model '%s' --ids %s --plan %s -n 2",
             CLNPU_CLI_PATH, TINY, ids, plan);
    ck_assert_msg(test_run(cmd, out, sizeof out) != 0 && strstr(out, "built without MPI"), "%.1500s", out);
    if (asan) setenv("ASAN_OPTIONS", asan, 1);
    else unsetenv("ASAN_OPTIONS");
    test_rmdir(dir);
    return;
#endif
    const int ranks[] = {2, 3, 4};
    for (int i = 0; i < 3; i++) {
        double e = mpirun_logits_error(dir, ranks[i], plan, ids, "4 stages");
        ck_assert_msg(e <= 1e-4, "-np %d: %.3g", ranks[i], e);
    }
    /* expert parallel across ranks: with a rank per plan device, each stage's second device is a
     * rank serving its expert shard (an expert listed twice serves from its first copy); with
     * one rank per stage the shards stay in the stage's rank */
    snprintf(plan2, sizeof plan2, "%s/plan-ep.yaml", dir);
    ck_assert_int_eq(test_write_file(plan2,
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nparallel: {tp: 1, pp: 2, ep: 2, dp: 2}\n"
        "experts: [[0, 1, 2, 3, 4, 5, 6, 7, 8], [8, 9, 10, 11, 12, 13, 14, 15]]\nstages:\n"
        "- {stage: 0, devices: [0, 1], embedding: true, head: false, layers: [0, 1]}\n"
        "- {stage: 1, devices: [2, 3], embedding: false, head: true, layers: [2]}\n"), 0);
    const int ep_ranks[] = {4, 2};
    for (int i = 0; i < 2; i++) {
        double e = mpirun_logits_error(dir, ep_ranks[i], plan2, ids, "PP 2 x EP 2");
        ck_assert_msg(e <= 1e-4, "EP -np %d: %.3g", ep_ranks[i], e);
    }
    /* several sequences decoding together, with two micro-batches in flight: in one process (a
     * thread per stage) and over two ranks (each group goes on as soon as it is done), the same
     * ids as one device; and each line the same as that sequence's prompt run alone */
    char plan_mb[600], want[1024], got[1024];
    snprintf(plan_mb, sizeof plan_mb, "%s/plan-mb.yaml", dir);
    ck_assert_int_eq(test_write_file(plan_mb,
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nparallel: {tp: 1, pp: 2, ep: 1, dp: 1, micro_batches: 2}\n"
        "stages:\n- {stage: 0, devices: [0], embedding: true, head: false, layers: [0, 1]}\n"
        "- {stage: 1, devices: [1], embedding: false, head: true, layers: [2]}\n"), 0);
    const char *seq_ids = "3,9,17,4,22,8,1,5";
    snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids %s -n 6 --sequences 3", CLNPU_CLI_PATH, TINY, seq_ids);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    id_lines(out, want, sizeof want);
    char alone[1024] = "";
    const char *prompts[3] = {"3,9,17,4,22,8,1,5", "9,17,4,22,8,1,5", "17,4,22,8,1,5"};
    for (int q = 0; q < 3; q++) {
        snprintf(cmd, sizeof cmd, "'%s' run --model '%s' --ids %s -n 6", CLNPU_CLI_PATH, TINY, prompts[q]);
        ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
        id_lines(out, got, sizeof got);
        strncat(alone, got, sizeof alone - strlen(alone) - 1);
    }
    ck_assert_msg(!strcmp(want, alone) && strlen(want) > 20, "--sequences 3:\n%s\nalone:\n%s", want, alone);
    expect_ids("POCL_DEVICES='pthread pthread'", seq_ids, plan_mb, want, "micro-batches in one process");
    expect_ids("CLNPU_MPI_TIMEOUT=60 timeout 120 mpirun --oversubscribe -np 2", seq_ids, plan_mb, want, "micro-batches over 2 ranks");
    /* a stage per rank: each rank's stage weights on its plan device (memory in use on both, about
     * the same on each: layers 0-1 with the embedding, layer 2 with the head) */
    snprintf(cmd, sizeof cmd, "CLNPU_MPI_TIMEOUT=60 timeout 120 mpirun --oversubscribe -np 2 '%s' run --model '%s' --ids "
             "%s -n 2 --plan %s --stats", CLNPU_CLI_PATH, TINY, seq_ids, plan_mb);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    for (int d = 0; d < 2; d++) {
        char key[32];
        snprintf(key, sizeof key, "rank %d: stage device %d (", d, d);
        const char *l = strstr(out, key), *u = l ? strstr(l, "): ") : NULL;
        double kib = u ? strtod(u + 3, NULL) : 0;
        ck_assert_msg(u && kib > 100 && strncmp(u + 3, "0 B", 3) && strstr(u, "KiB of"), "rank's stage on device %d: %.1500s",
                      d, out);
    }

    fprintf(stderr, "3 sequences, 2 micro-batches in flight over 2 ranks: the same ids as one device\n");
    /* EP 4: one stage on four devices, a rank each (three serve expert shards) */
    char plan4[600];
    snprintf(plan4, sizeof plan4, "%s/plan-ep4.yaml", dir);
    ck_assert_int_eq(test_write_file(plan4,
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nparallel: {tp: 1, pp: 1, ep: 4, dp: 4}\n"
        "experts: [[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15]]\nstages:\n"
        "- {stage: 0, devices: [0, 1, 2, 3], embedding: true, head: true, layers: [0, 1, 2]}\n"), 0);
    double e4 = mpirun_logits_error(dir, 4, plan4, ids, "EP 4");
    ck_assert_msg(e4 <= 1e-4, "EP 4 -np 4: %.3g", e4);
    /* in one process the same plan runs four attention replicas (a sequence each), meeting at
     * the MoE layers: three sequences decoding together give one device's ids */
    char plan4s[700];
    snprintf(plan4s, sizeof plan4s, "%s --share-devices", plan4); /* four plan devices on two */
    expect_ids("", seq_ids, plan4s, want, "3 sequences on 4 attention replicas");
    /* with a rank per device each rank is an attention replica with its own sequences, meeting
     * the others at every MoE layer (a rank without rows too): one device's ids, with EP 4 on 4
     * ranks and with PP 2 x EP 2 (two replicas per stage) on 4 ranks */
    const char *dp_plans[2] = {plan4, plan2};
    for (int k = 0; k < 2; k++) {
        expect_ids("CLNPU_MPI_TIMEOUT=60 timeout 120 mpirun --oversubscribe -np 4", seq_ids, dp_plans[k], want,
                   k ? "3 sequences, attention replicas on 4 ranks (PP 2 x EP 2)"
                     : "3 sequences, attention replicas on 4 ranks (EP 4)");
    }
    fprintf(stderr, "3 sequences on attention replicas over 4 ranks (EP 4, PP 2 x EP 2): the same ids as one device\n");
    snprintf(cmd, sizeof cmd, "timeout 120 mpirun --oversubscribe -np 3 '%s' run --model '%s' --ids %s --plan %s -n 2",
             CLNPU_CLI_PATH, TINY, ids, plan2);
    ck_assert_msg(test_run(cmd, out, sizeof out) != 0 && strstr(out, "give at most 2 (stages dealt in runs) or exactly 4"),
                  "3 ranks for 2 stages on 4 devices: %.1500s", out);
    /* a rank killed after start-up: the job ends, non-zero, saying which rank */
    snprintf(cmd, sizeof cmd, "CLNPU_FAULT_RANK=1 CLNPU_MPI_TIMEOUT=20 timeout 120 mpirun --oversubscribe -np 2 '%s' run "
             "--model '%s' --ids %s --plan %s -n 2", CLNPU_CLI_PATH, TINY, ids, plan);
    double t0 = (double)time(NULL);
    int rc = test_run(cmd, out, sizeof out);
    ck_assert_msg(rc != 0 && rc != 124, "a dead rank did not end the job with an error (%d): %.1500s", rc, out);
    ck_assert_msg(strstr(out, "rank 1"), "no word of rank 1: %.1500s", out);
    ck_assert_msg((double)time(NULL) - t0 < 60, "the job took too long to notice");
    /* a rank serving an expert shard killed: the owner's all-to-all fails or times out, the job
     * ends non-zero saying which rank */
    snprintf(cmd, sizeof cmd, "CLNPU_FAULT_RANK=1 CLNPU_MPI_TIMEOUT=20 timeout 120 mpirun --oversubscribe -np 4 '%s' run "
             "--model '%s' --ids %s --plan %s -n 2", CLNPU_CLI_PATH, TINY, ids, plan2);
    t0 = (double)time(NULL);
    rc = test_run(cmd, out, sizeof out);
    ck_assert_msg(rc != 0 && rc != 124, "a dead shard rank did not end the job with an error (%d): %.1500s", rc, out);
    ck_assert_msg(strstr(out, "rank 1"), "no word of rank 1: %.1500s", out);
    ck_assert_msg((double)time(NULL) - t0 < 60, "the job took too long to notice the dead shard rank");
    /* tensor parallel under mpirun: a rank per stage runs its stage's TP ranks in-process, a rank
     * per device makes each TP rank a process (collectives by MPI over its replica's ranks, each
     * serving its expert shard), also inside attention replicas */
    char plantp[600];
    snprintf(plantp, sizeof plantp, "%s/plan-tp.yaml", dir);
    ck_assert_int_eq(test_write_file(plantp,
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nparallel: {tp: 2, pp: 2, ep: 2, dp: 1}\n"
        "experts: [[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]]\nstages:\n"
        "- {stage: 0, devices: [0, 1], embedding: true, head: false, layers: [0, 1]}\n"
        "- {stage: 1, devices: [2, 3], embedding: false, head: true, layers: [2]}\n"), 0);
    double etp = mpirun_logits_error(dir, 2, plantp, ids, "PP 2 x TP 2");
    ck_assert_msg(etp <= 1e-4, "PP 2 x TP 2 -np 2: %.3g", etp);
    etp = mpirun_logits_error(dir, 4, plantp, ids, "PP 2 x TP 2, a rank per device");
    ck_assert_msg(etp <= 1e-4, "PP 2 x TP 2 -np 4: %.3g", etp);
    expect_ids("CLNPU_MPI_TIMEOUT=60 timeout 120 mpirun --oversubscribe -np 4", seq_ids, plantp, want, "3 sequences, TP ranks on 4 ranks");
    ck_assert_int_eq(test_write_file(plantp,
        "format: clnpu-plan-2\nmodel: axk1\nlayers: 3\nhidden_size: 96\nrouted_experts: 16\nweights: bf16\nparallel: {tp: 2, pp: 1, ep: 4, dp: 2}\n"
        "experts: [[0, 4, 8, 12], [1, 5, 9, 13], [2, 6, 10, 14], [3, 7, 11, 15]]\nstages:\n"
        "- {stage: 0, devices: [0, 1, 2, 3], embedding: true, head: true, layers: [0, 1, 2]}\n"), 0);
    const int tpdp_ranks[2] = {1, 4};
    for (int k = 0; k < 2; k++) {
        double e = mpirun_logits_error(dir, tpdp_ranks[k], plantp, ids, "TP 2 x 2 attention replicas x EP 4");
        ck_assert_msg(e <= 1e-4, "TP 2 x DP 2 -np %d: %.3g", tpdp_ranks[k], e);
    }
    expect_ids("CLNPU_MPI_TIMEOUT=60 timeout 120 mpirun --oversubscribe -np 4", seq_ids, plantp, want, "3 sequences, TP 2 x 2 replicas on 4 ranks");
    fprintf(stderr, "3 sequences, TP 2 x 2 attention replicas x EP 4 over 4 ranks: the same ids as one device\n");
    /* a TP rank that dies: the job ends, non-zero, naming it */
    snprintf(cmd, sizeof cmd, "CLNPU_FAULT_RANK=3 CLNPU_MPI_TIMEOUT=20 timeout 120 mpirun --oversubscribe -np 4 '%s' run "
             "--model '%s' --ids %s --plan %s -n 2", CLNPU_CLI_PATH, TINY, ids, plantp);
    rc = test_run(cmd, out, sizeof out);
    ck_assert_msg(rc != 0 && rc != 124 && strstr(out, "rank 3"), "a dead TP rank (%d): %.1500s", rc, out);
    /* several ranks without a plan would each repeat the job: a usage error */
    snprintf(cmd, sizeof cmd, "timeout 120 mpirun --oversubscribe -np 2 '%s' run --model '%s' --ids %s -n 2",
             CLNPU_CLI_PATH, TINY, ids);
    rc = test_run(cmd, out, sizeof out);
    ck_assert_msg(rc != 0 && rc != 124 && strstr(out, "give --plan"), "(%d): %.1500s", rc, out);
    /* more ranks than stages: refused up front, on every rank */
    snprintf(cmd, sizeof cmd, "CLNPU_MPI_TIMEOUT=20 timeout 120 mpirun --oversubscribe -np 5 '%s' run --model '%s' "
             "--ids %s --plan %s -n 2", CLNPU_CLI_PATH, TINY, ids, plan);
    rc = test_run(cmd, out, sizeof out);
    ck_assert_msg(rc != 0 && rc != 124, "5 ranks for 4 stages ran (%d): %.1500s", rc, out);
    ck_assert_msg(strstr(out, "5 MPI ranks for a plan of 4 stages"), "%.1500s", out);
    /* a rank that fails to load its stages: every rank stops with an error naming it, no hang */
    snprintf(cmd, sizeof cmd, "CLNPU_FAULT_RANK=1:load CLNPU_MPI_TIMEOUT=20 timeout 120 mpirun --oversubscribe -np 2 '%s' "
             "run --model '%s' --ids %s --plan %s -n 2", CLNPU_CLI_PATH, TINY, ids, plan);
    t0 = (double)time(NULL);
    rc = test_run(cmd, out, sizeof out);
    ck_assert_msg(rc != 0 && rc != 124, "a failed set-up did not end the job with an error (%d): %.1500s", rc, out);
    ck_assert_msg(strstr(out, "rank 1 could not set up its stages"), "rank 0 did not name rank 1: %.1500s", out);
    ck_assert_msg(strstr(out, "set-up failure injected"), "rank 1's own message is lost: %.1500s", out);
    ck_assert_msg((double)time(NULL) - t0 < 60, "the job took too long to stop");
    /* a rank that hangs (stopped at its first step): the others time out, and the job ends,
     * non-zero, naming it, instead of waiting for it in MPI_Finalize forever (issue 17's D5) */
    snprintf(cmd, sizeof cmd, "CLNPU_FAULT_RANK=1:stop CLNPU_MPI_TIMEOUT=2 timeout -k 5 30 mpirun --oversubscribe -np 2 "
             "'%s' run --model '%s' --ids %s --plan %s -n 2", CLNPU_CLI_PATH, TINY, ids, plan);
    t0 = (double)time(NULL);
    rc = test_run(cmd, out, sizeof out);
    ck_assert_msg(rc != 0 && rc != 124 && rc != 137, "a stopped rank hung the job (%d): %.1500s", rc, out);
    ck_assert_msg(strstr(out, "rank 1") && strstr(out, "CLNPU_MPI_TIMEOUT"), "no word of the stopped rank 1: %.1500s", out);
    ck_assert_msg((double)time(NULL) - t0 < 20, "the job took %.0f s to end after a 2 s timeout", (double)time(NULL) - t0);
    if (asan) setenv("ASAN_OPTIONS", asan, 1);
    else unsetenv("ASAN_OPTIONS");
    test_rmdir(dir);
}
END_TEST

Suite *suite_checkpoint(void)
{
    Suite *s = suite_create("checkpoint");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_single_file_and_edits);
    tcase_add_test(tc, test_corrupt_shards);
    tcase_add_test(tc, test_header_rules);
    tcase_add_test(tc, test_bad_configs);
    tcase_add_test(tc, test_cli_run);
    suite_add_tcase(s, tc);
    /* its own case, so the parser-only runs (tools/test.sh --sanitize, clang UBSan) can leave it out */
    TCase *mpi = tcase_create("mpi");
    tcase_set_timeout(mpi, 300);
    tcase_add_test(mpi, test_mpi_ranks);
    suite_add_tcase(s, mpi);
    return s;
}
