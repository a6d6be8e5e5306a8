/* Regression tests of the reliability review (reports/reliability-2026-12-01.md, issue 17): each
 * case rebuilds one reproducer from tiny inputs made here (FIFOs, symlinks, deep YAML, edited copies
 * of the shipped checkpoint) and checks the clear error or the right result. Cases that could hang
 * run under alarm(): a regression kills the run instead of blocking CI. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"
#include "../backend/binary_cache.h"
#include "../common/file_read.h"
#include "../common/yaml_in.h"

#define TINY CLNPU_SOURCE_DIR "/models/tiny-axk1"
#define CLI CLNPU_CLI_PATH

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void expect_msg(clnpu_status st, clnpu_status want, const char *n1, const char *n2)
{
    const char *msg = clnpu_error_message();
    ck_assert_msg(st == want, "status %s, expected %s: %s", clnpu_status_name(st), clnpu_status_name(want), msg);
    ck_assert_msg(strstr(msg, n1) && (!n2 || strstr(msg, n2)), "message lacks '%s' / '%s': %s", n1, n2 ? n2 : "", msg);
}

__attribute__((noinline)) static char *read_text(const char *path)
{
    char *text = NULL;
    size_t n;
    const clnpu_status st = clnpu_file_read_all(path, &text, &n);
    ck_assert_msg(st == CLNPU_OK, "%s", clnpu_error_message());
    return text;
}

static void copy_file(const char *from, const char *to)
{
    char *t;
    size_t n;
    ck_assert_ok(clnpu_file_read_capped(from, (size_t)1 << 30, &t, &n));
    FILE *f = fopen(to, "wb");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(t, 1, n, f), n);
    ck_assert_int_eq(fclose(f), 0);
    free(t);
}

/* ---- D6, D12, D17, D20: inputs that are not regular files ---------------------------------- */

START_TEST(test_inputs_must_be_regular_files)
{
    alarm(60); /* a FIFO that blocks open() would stop here */
    char dir[256], p[512], q[1024];
    test_mkdtemp(dir, sizeof dir);
    clnpu_model_config cfg;
    /* config.json as a FIFO and as a directory (was "larger than 64 KiB") */
    snprintf(p, sizeof p, "%s/config.json", dir);
    ck_assert_int_eq(mkfifo(p, 0600), 0);
    expect_msg(clnpu_model_config_load(p, &cfg), CLNPU_ERR_IO, "config.json", "not a regular file (a FIFO)");
    unlink(p);
    ck_assert_int_eq(mkdir(p, 0700), 0);
    expect_msg(clnpu_model_config_load(p, &cfg), CLNPU_ERR_IO, "config.json", "not a regular file (a directory)");
    rmdir(p);
    /* the index as a directory (ftell gave LLONG_MAX, then malloc(2^63)), as a FIFO; a FIFO shard */
    copy_file(TINY "/config.json", p);
    snprintf(q, sizeof q, "%s/model.safetensors.index.json", dir);
    ck_assert_int_eq(mkdir(q, 0700), 0);
    clnpu_checkpoint *ck = NULL;
    expect_msg(clnpu_checkpoint_open(dir, &ck), CLNPU_ERR_IO, "model.safetensors.index.json", "a directory");
    rmdir(q);
    ck_assert_int_eq(mkfifo(q, 0600), 0);
    expect_msg(clnpu_checkpoint_open(dir, &ck), CLNPU_ERR_IO, "index.json", "a FIFO");
    unlink(q);
    copy_file(TINY "/model.safetensors.index.json", q);
    snprintf(q, sizeof q, "%s/model-00001-of-00002.safetensors", dir);
    ck_assert_int_eq(mkfifo(q, 0600), 0);
    expect_msg(clnpu_checkpoint_open(dir, &ck), CLNPU_ERR_IO, "model-00001-of-00002.safetensors", "a FIFO");
    /* YAML inputs: a FIFO profile in --targets-dir, /dev/zero as a cluster, plan or tuning DB */
    char tdir[512];
    snprintf(tdir, sizeof tdir, "%s/targets", dir);
    ck_assert_int_eq(mkdir(tdir, 0700), 0);
    snprintf(q, sizeof q, "%s/fifo.yaml", tdir);
    ck_assert_int_eq(mkfifo(q, 0600), 0);
    clnpu_profile_set *set;
    ck_assert_ok(clnpu_profile_set_builtin(&set));
    expect_msg(clnpu_profile_set_add_dir(set, tdir), CLNPU_ERR_IO, "fifo.yaml", "a FIFO");
    clnpu_cluster *cl = NULL;
    expect_msg(clnpu_cluster_load("/dev/zero", set, &cl), CLNPU_ERR_IO, "/dev/zero", "a character device");
    clnpu_calibration cal = clnpu_calibration_default(); /* plan --calibration */
    expect_msg(clnpu_calibration_read(q, clnpu_profile_set_find(set, "pocl-cpu"), &cal), CLNPU_ERR_IO, "fifo.yaml",
               "a FIFO");
    clnpu_profile_set_destroy(set);
    clnpu_tuning_db *db;
    ck_assert_ok(clnpu_tuning_db_create(&db));
    expect_msg(clnpu_tuning_db_merge_file(db, q), CLNPU_ERR_IO, "fifo.yaml", "a FIFO");
    clnpu_tuning_db_destroy(db);
    ck_assert_ok(clnpu_model_config_load(TINY "/config.json", &cfg));
    clnpu_stage_spec *sp = NULL;
    size_t ns = 0;
    clnpu_plan_layout lay;
    expect_msg(clnpu_pipeline_read_plan("/dev/zero", &cfg, &sp, &ns, &lay), CLNPU_ERR_IO, "/dev/zero", "device");
    /* a cache entry that is a FIFO is a miss, at once */
    unsigned char *bin;
    size_t n;
    ck_assert_int_eq(clnpu_binary_cache_load(q, "key", &bin, &n), CLNPU_ERR_NOT_FOUND);
    /* files over the cap are refused by size, not read: a sparse 65 MiB file */
    snprintf(q, sizeof q, "%s/big.yaml", dir);
    FILE *f = fopen(q, "wb");
    ck_assert_int_eq(ftruncate(fileno(f), (off_t)CLNPU_FILE_TEXT_MAX + 1), 0);
    fclose(f);
    char *t;
    size_t len;
    expect_msg(clnpu_file_read_all(q, &t, &len), CLNPU_ERR_PARSE, "big.yaml", "larger than");
    test_rmdir(dir);
    alarm(0);
}
END_TEST

/* ---- D14: deep YAML ---------------------------------------------------------------------- */

static char *nested(const char *prefix, size_t depth)
{
    const size_t pl = strlen(prefix);
    char *s = malloc(pl + 2 * depth + 2);
    memcpy(s, prefix, pl);
    memset(s + pl, '[', depth);
    memset(s + pl + depth, ']', depth);
    s[pl + 2 * depth] = '\n', s[pl + 2 * depth + 1] = '\0';
    return s;
}

START_TEST(test_yaml_depth_cap)
{
    alarm(60);
    /* 200k levels took libyaml minutes; refused after 64 */
    const double t0 = now_s();
    char *deep = nested("name: d\nclass: ", 200000);
    const size_t len = strlen(deep);
    clnpu_profile p;
    expect_msg(clnpu_profile_parse(deep, len, "deep.yaml", &p), CLNPU_ERR_PARSE, "deep.yaml:2:", "nested deeper than 64");
    clnpu_cluster *cl = NULL;
    expect_msg(clnpu_cluster_parse(deep, len, "deep-cluster.yaml", NULL, &cl), CLNPU_ERR_PARSE, "deep-cluster.yaml",
               "nested deeper");
    clnpu_tuning_db *db;
    ck_assert_ok(clnpu_tuning_db_create(&db));
    expect_msg(clnpu_tuning_db_merge_text(db, deep, len, "deep-tuning.yaml"), CLNPU_ERR_PARSE, "deep-tuning.yaml",
               "nested deeper");
    clnpu_tuning_db_destroy(db);
    free(deep);
    /* in a second document too (a profile loads it to refuse it) */
    deep = nested("name: a\n---\nx: ", 100000);
    expect_msg(clnpu_profile_parse(deep, strlen(deep), "two.yaml", &p), CLNPU_ERR_PARSE, "two.yaml", "nested deeper");
    free(deep);
    ck_assert_msg(now_s() - t0 < 2.0, "deep YAML took %.1f s", now_s() - t0);
    /* 64 levels are fine (the cap is not an off-by-one that breaks real files) */
    char *ok = nested("", 64);
    yaml_document_t doc;
    ck_assert_ok(clnpu_yaml_load_text(ok, strlen(ok), "ok.yaml", &doc));
    yaml_document_delete(&doc);
    free(ok);
    ok = nested("", 65);
    expect_msg(clnpu_yaml_load_text(ok, strlen(ok), "ok.yaml", &doc), CLNPU_ERR_PARSE, "ok.yaml:1:65:", "nested");
    free(ok);
    alarm(0);
}
END_TEST

/* ---- D18: outputs through symlinks, devices and FIFOs refused ------------------------------ */

START_TEST(test_outputs_keep_links)
{
    alarm(60);
    char dir[256], target[512], link[512], fifo[512], dangling[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(target, sizeof target, "%s/real.safetensors", dir);
    snprintf(link, sizeof link, "%s/link.safetensors", dir);
    ck_assert_int_eq(test_write_file(target, "old"), 0);
    ck_assert_int_eq(symlink("real.safetensors", link), 0);
    const float v[3] = {1, 2, 3};
    clnpu_tensor_out t = {"logits", CLNPU_DTYPE_F32, 1, {3}, v};
    ck_assert_ok(clnpu_safetensors_write(link, &t, 1));
    struct stat sb;
    ck_assert_int_eq(lstat(link, &sb), 0);
    ck_assert_msg(S_ISLNK(sb.st_mode), "the symlink was replaced by a file");
    clnpu_safetensors *f;
    ck_assert_ok(clnpu_safetensors_open(target, &f)); /* the target got the tensor */
    const clnpu_tensor_info *ti = clnpu_safetensors_find(f, "logits");
    ck_assert_ptr_nonnull(ti);
    ck_assert(((const float *)ti->data)[2] == 3);
    clnpu_safetensors_close(f);
    /* a FIFO (or a symlink to one, as /proc/self/fd/1 to a pipe), a device, a dangling link */
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    expect_msg(clnpu_safetensors_write(fifo, &t, 1), CLNPU_ERR_IO, "fifo", "not a regular file (a FIFO)");
    expect_msg(clnpu_safetensors_write("/dev/null", &t, 1), CLNPU_ERR_IO, "/dev/null", "a character device");
    snprintf(dangling, sizeof dangling, "%s/dangling", dir);
    ck_assert_int_eq(symlink("nowhere/x", dangling), 0);
    expect_msg(clnpu_safetensors_write(dangling, &t, 1), CLNPU_ERR_IO, "dangling", "symlink to nothing");
    ck_assert_int_eq(lstat(dangling, &sb), 0);
    ck_assert(S_ISLNK(sb.st_mode));
    /* the tuning database (tune --db) the same way */
    clnpu_tuning_db *db;
    ck_assert_ok(clnpu_tuning_db_create(&db));
    snprintf(link, sizeof link, "%s/db-link.yaml", dir);
    snprintf(target, sizeof target, "%s/db.yaml", dir);
    ck_assert_int_eq(test_write_file(target, ""), 0);
    ck_assert_int_eq(symlink("db.yaml", link), 0);
    ck_assert_ok(clnpu_tuning_db_save(db, link));
    ck_assert_int_eq(lstat(link, &sb), 0);
    ck_assert(S_ISLNK(sb.st_mode));
    char *text = read_text(target);
    ck_assert_ptr_nonnull(strstr(text, "clnpu-tuning-1"));
    free(text);
    expect_msg(clnpu_tuning_db_save(db, fifo), CLNPU_ERR_IO, "fifo", "FIFO");
    clnpu_tuning_db_destroy(db);
    /* nothing left behind: no temp files beside the targets */
    char cmd[600], out[256];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -c tmp", dir);
    test_run(cmd, out, sizeof out);
    ck_assert_msg(atoi(out) == 0, "temp files left: %s", out);
    test_rmdir(dir);
    alarm(0);
}
END_TEST

/* ---- D8: cluster numbers out of range ------------------------------------------------------ */

START_TEST(test_cluster_ranges)
{
    static const struct { const char *dev, *needle; } bad[] = {
        {"{profile: pocl-cpu, count: 1e300}", "device count"},
        {"{profile: pocl-cpu, count: 18446744073709551616}", "device count"},
        {"{profile: pocl-cpu, count: 2, overrides: {memory_bytes: 1e19}}", "memory_bytes"},
        {"{profile: pocl-cpu, count: 2, overrides: {memory_bytes: 1e300}}", "memory_bytes"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[512];
        snprintf(text, sizeof text, "name: c\nnodes:\n  - {name: h, devices: [%s]}\n", bad[i].dev);
        clnpu_cluster *cl = NULL;
        expect_msg(clnpu_cluster_parse(text, strlen(text), "c.yaml", NULL, &cl), CLNPU_ERR_PARSE, "c.yaml:3:",
                   bad[i].needle);
    }
    /* in range still loads */
    const char *okt = "name: c\nnodes:\n  - {name: h, devices: [{profile: pocl-cpu, count: 2, overrides: "
                      "{memory_bytes: 1e12}}]}\n";
    clnpu_cluster *cl = NULL;
    ck_assert_ok(clnpu_cluster_parse(okt, strlen(okt), "ok.yaml", NULL, &cl));
    clnpu_cluster_destroy(cl);
}
END_TEST

/* Expert-load files (plan --expert-load): whole numbers for layers, finite loads. */
START_TEST(test_expert_load_strict)
{
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(TINY "/config.json", &cfg));
    clnpu_graph g;
    ck_assert_ok(clnpu_graph_build(&cfg, &g));
    char dir[256], path[512], text[512], list[256] = "";
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/load.yaml", dir);
    for (size_t e = 0; e < cfg.n_routed_experts; e++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s1", e ? ", " : "");
    static const char *const bad[][2] = {{"layers: {1abc: [%s]}\n", "not a MoE layer"},
                                         {"default: [inf, %s]\n", "numbers"}};
    for (size_t i = 0; i < 2; i++) {
        snprintf(text, sizeof text, bad[i][0], i ? list + 3 : list); /* inf replaces the first 1 */
        ck_assert_int_eq(test_write_file(path, text), 0);
        double *loads = NULL;
        size_t n = 0;
        expect_msg(clnpu_expert_load_read(path, &g, &loads, &n), CLNPU_ERR_PARSE, "load.yaml", bad[i][1]);
        free(loads);
    }
    snprintf(text, sizeof text, "layers: {1: [%s]}\n", list);
    ck_assert_int_eq(test_write_file(path, text), 0);
    double *loads = NULL;
    size_t n = 0;
    ck_assert_ok(clnpu_expert_load_read(path, &g, &loads, &n));
    free(loads);
    clnpu_graph_free(&g);
    test_rmdir(dir);
}
END_TEST

/* ---- D16: tuning databases checked against tunables.yaml ----------------------------------- */

static const char *tdb_head = "format: clnpu-tuning-1\nentries:\n";
static void tdb_entry(char *out, size_t cap, const char *cls, const char *params)
{
    snprintf(out + strlen(out), cap - strlen(out),
             "- device: x\n  kernel: gemm\n  dtype: f32\n  class: %s\n  source: 0\n  params: {%s}\n", cls, params);
}

START_TEST(test_tuning_db_validated)
{
    clnpu_tuning_db *db;
    ck_assert_ok(clnpu_tuning_db_create(&db));
    char t[2048];
    snprintf(t, sizeof t, "%s", tdb_head);
    tdb_entry(t, sizeof t, "decode", "mr: 2, kacc: 4");
    ck_assert_ok(clnpu_tuning_db_merge_text(db, t, strlen(t), "good.yaml"));
    ck_assert_uint_eq(clnpu_tuning_db_count(db), 1);
    /* kacc 1000000 went to the compiler as a -D; now an error naming the file, line and key */
    tdb_entry(t, sizeof t, "gemv", "mr: 1, kacc: 1000000");
    expect_msg(clnpu_tuning_db_merge_text(db, t, strlen(t), "bad.yaml"), CLNPU_ERR_PARSE, "bad.yaml:14:",
               "kacc = 1000000 is not one of 1, 2, 4, 8");
    ck_assert_uint_eq(clnpu_tuning_db_count(db), 1); /* nothing merged from the bad file */
    static const struct { const char *params, *needle; } bad[] = {
        {"ksplit: 7", "ksplit = 7"}, {"nosuch: 1", "no tunable 'nosuch'"}, {"mr: 99999999999", "integer values"},
        {"mr: 2x", "integer values"}, {"mr: 12, kacc: 8", "mr x kacc = 96 exceed 16"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(t, sizeof t, "%s", tdb_head);
        tdb_entry(t, sizeof t, "decode", bad[i].params);
        expect_msg(clnpu_tuning_db_merge_text(db, t, strlen(t), "b.yaml"), CLNPU_ERR_PARSE, "b.yaml", bad[i].needle);
    }
    snprintf(t, sizeof t, "%s- device: x\n  kernel: gemm\n  dtype: f32\n  class: c\n  source: 0\n  params: {mr: 2}\n"
             "  ms: fast\n", tdb_head);
    expect_msg(clnpu_tuning_db_merge_text(db, t, strlen(t), "ms.yaml"), CLNPU_ERR_PARSE, "ms.yaml", "'ms'");
    /* attention's register variant belongs to the attention kernel */
    snprintf(t, sizeof t, "%s- device: x\n  kernel: attention\n  dtype: f32\n  class: c\n  source: 0\n"
             "  params: {qv: 16, qg: 2, kb: 6}\n", tdb_head);
    ck_assert_ok(clnpu_tuning_db_merge_text(db, t, strlen(t), "attn.yaml"));
    clnpu_tuning_db_destroy(db);
    /* a malformed $CLNPU_TUNING_DB is an error when a device opens, naming the file (was skipped) */
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/db.yaml", dir);
    snprintf(t, sizeof t, "%s", tdb_head);
    tdb_entry(t, sizeof t, "decode", "kacc: 1000000");
    ck_assert_int_eq(test_write_file(path, t), 0);
    setenv("CLNPU_TUNING_DB", path, 1);
    clnpu_device *dev = NULL;
    clnpu_device_options o = clnpu_device_options_default();
    clnpu_status st = clnpu_device_open(0, &o, &dev);
    unsetenv("CLNPU_TUNING_DB");
    expect_msg(st, CLNPU_ERR_PARSE, "$CLNPU_TUNING_DB", "db.yaml:");
    ck_assert_ptr_null(dev);
    test_rmdir(dir);
}
END_TEST

/* ---- D19: a cache directory too long for the entry paths ----------------------------------- */

START_TEST(test_cache_dir_too_long)
{
    char longdir[1200];
    memset(longdir, 'd', sizeof longdir - 1);
    longdir[0] = '/', longdir[sizeof longdir - 1] = '\0';
    clnpu_device_options o = clnpu_device_options_default();
    o.cache_dir = longdir;
    clnpu_device *dev = NULL;
    expect_msg(clnpu_device_open(0, &o, &dev), CLNPU_ERR_INVALID_ARGUMENT, "1199 characters", "at most 1000");
    ck_assert_ptr_null(dev);
}
END_TEST

/* ---- D9, D11, D12, D20: config.json -------------------------------------------------------- */

/* The shipped config with `key` replaced by `value` (or extra text appended when key is NULL). */
static clnpu_status config_with(const char *key, const char *value, const char *tail)
{
    char *text = read_text(TINY "/config.json");
    static char edited[16384];
    if (key) {
        char pat[64];
        snprintf(pat, sizeof pat, "\"%s\": ", key);
        char *at = strstr(text, pat);
        ck_assert_ptr_nonnull(at);
        char *end = at + strlen(pat);
        while (*end != ',' && *end != '\n') end++;
        snprintf(edited, sizeof edited, "%.*s%s%s", (int)(at - text + strlen(pat)), text, value, end);
    } else {
        snprintf(edited, sizeof edited, "%s%s", text, tail);
    }
    free(text);
    clnpu_model_config cfg;
    return clnpu_model_config_parse(edited, strlen(edited), "cfg.json", &cfg);
}

START_TEST(test_config_strict)
{
    ck_assert_ok(config_with(NULL, NULL, "\n  \n"));
    expect_msg(config_with(NULL, NULL, "x"), CLNPU_ERR_PARSE, "cfg.json", "text after the JSON object");
    expect_msg(config_with(NULL, NULL, "{}"), CLNPU_ERR_PARSE, "cfg.json", "text after");
    expect_msg(config_with("model_type", "3", NULL), CLNPU_ERR_PARSE, "\"model_type\" must be a string", NULL);
    expect_msg(config_with("rms_norm_eps", "-1", NULL), CLNPU_ERR_PARSE, "rms_norm_eps", "[0, 1)");
    expect_msg(config_with("rope_theta", "1e999", NULL), CLNPU_ERR_PARSE, "rope_theta", "finite");
    expect_msg(config_with("num_hidden_layers", "1e12", NULL), CLNPU_ERR_PARSE, "num_hidden_layers", "4096");
    expect_msg(config_with("hidden_size", "68719476736", NULL), CLNPU_ERR_PARSE, "past 2^32", NULL);
    expect_msg(config_with("max_position_embeddings", "0", NULL), CLNPU_ERR_PARSE, "max_position_embeddings", NULL);
}
END_TEST

/* ---- D20: a tensor named twice in a header --------------------------------------------------- */

START_TEST(test_duplicate_tensor_key)
{
    const char *h = "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    clnpu_safetensors *f = NULL;
    static const char data[4];
    expect_msg(clnpu_safetensors_parse(h, strlen(h), data, 4, "dup.safetensors", &f), CLNPU_ERR_PARSE,
               "dup.safetensors: tensor a appears twice", NULL);
}
END_TEST

/* ---- checkpoints written here: fused experts (D3, D4), non-finite weights (D9) ------------- */

typedef struct variant {
    clnpu_dtype gate_up, down; /* fused experts of these dtypes (CLNPU_DTYPE_COUNT: not fused) */
    const char *poison;        /* a tensor whose element poison_at becomes poison_value (or NULL) */
    float poison_value;
    size_t poison_at;
} variant;

static void widen_bf16(const void *src, size_t n, float *dst)
{
    const uint16_t *s = src;
    for (size_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)s[i] << 16;
        memcpy(&dst[i], &b, 4);
    }
}

/* Copy the tiny checkpoint into dir as one model.safetensors, changed as v says. */
static void write_variant(const char *dir, const variant *v)
{
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    copy_file(TINY "/config.json", path);
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(path, &cfg));
    clnpu_checkpoint *ck;
    ck_assert_ok(clnpu_checkpoint_open(TINY, &ck));
    const size_t E = cfg.n_routed_experts, I = cfg.moe_intermediate_size, H = cfg.hidden_size;
    clnpu_tensor_out *ts = calloc(clnpu_checkpoint_tensor_count(ck) + 8, sizeof *ts);
    void *owned[16];
    char names[8][96];
    size_t k = 0, no = 0;
    clnpu_safetensors *fs[2];
    ck_assert_ok(clnpu_safetensors_open(TINY "/model-00001-of-00002.safetensors", &fs[0]));
    ck_assert_ok(clnpu_safetensors_open(TINY "/model-00002-of-00002.safetensors", &fs[1]));
    const bool fused = v->gate_up != CLNPU_DTYPE_COUNT;
    for (int fi = 0; fi < 2; fi++)
        for (size_t i = 0; i < clnpu_safetensors_count(fs[fi]); i++) {
            const clnpu_tensor_info *t = clnpu_safetensors_get(fs[fi], i);
            if (fused && strstr(t->name, ".mlp.experts.")) continue; /* rebuilt below */
            clnpu_tensor_out o = {t->name, t->dtype, t->ndim, {0}, t->data};
            memcpy(o.shape, t->shape, sizeof o.shape);
            if (v->poison && !strcmp(t->name, v->poison)) {
                unsigned char *c = malloc(t->bytes);
                memcpy(c, t->data, t->bytes);
                uint32_t bits;
                memcpy(&bits, &v->poison_value, 4);
                if (t->dtype == CLNPU_DTYPE_F32) memcpy(c + 4 * v->poison_at, &bits, 4);
                else {
                    ck_assert_int_eq(t->dtype, CLNPU_DTYPE_BF16);
                    const uint16_t b = (uint16_t)(bits >> 16);
                    memcpy(c + 2 * v->poison_at, &b, 2);
                }
                o.data = owned[no++] = c;
            }
            ts[k++] = o;
        }
    for (size_t L = cfg.first_k_dense_replace; fused && L < cfg.num_hidden_layers; L++) {
        /* gate_up [E, 2I, H] (gate rows first), down [E, H, I], as docs/formats.md lays them out */
        const clnpu_dtype dts[2] = {v->gate_up, v->down};
        const size_t rows[2] = {2 * I, H}, cols[2] = {H, I};
        for (int w = 0; w < 2; w++) {
            const size_t per = rows[w] * cols[w], es = clnpu_dtype_size(dts[w]);
            unsigned char *buf = malloc(E * per * es);
            for (size_t e = 0; e < E; e++)
                for (int part = 0; part < (w ? 1 : 2); part++) {
                    char name[128];
                    snprintf(name, sizeof name, "model.layers.%zu.mlp.experts.%zu.%s.weight", L, e,
                             w ? "down_proj" : part ? "up_proj" : "gate_proj");
                    const clnpu_tensor_info *t = clnpu_checkpoint_find(ck, name);
                    ck_assert_ptr_nonnull(t);
                    ck_assert_int_eq(t->dtype, CLNPU_DTYPE_BF16);
                    const size_t n = t->bytes / 2;
                    unsigned char *dst = buf + (e * per + part * n) * es;
                    if (dts[w] == CLNPU_DTYPE_BF16) memcpy(dst, t->data, t->bytes);
                    else if (dts[w] == CLNPU_DTYPE_F32) widen_bf16(t->data, n, (float *)dst);
                    else memset(dst, 0x11, n * es); /* integer / fp8 filler: such tensors need scales */
                }
            snprintf(names[no], sizeof names[0], "model.layers.%zu.mlp.experts.%s", L, w ? "down_proj" : "gate_up_proj");
            ts[k++] = (clnpu_tensor_out){names[no], dts[w], 3, {(int64_t)E, (int64_t)rows[w], (int64_t)cols[w]}, buf};
            owned[no++] = buf;
        }
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    ck_assert_ok(clnpu_safetensors_write(path, ts, k));
    for (size_t i = 0; i < no; i++) free(owned[i]);
    free(ts);
    clnpu_safetensors_close(fs[0]), clnpu_safetensors_close(fs[1]);
    clnpu_checkpoint_close(ck);
}

/* Load dir (weights: -1 as stored, or a --weights dtype) and prefill ids 1,2,3 into logits. */
static clnpu_status run_variant(const char *dir, int weights, bool check_weights, float *logits)
{
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    clnpu_model_config cfg;
    clnpu_status st = clnpu_model_config_load(path, &cfg);
    clnpu_checkpoint *ck = NULL;
    clnpu_model *m = NULL;
    if (!st) st = clnpu_checkpoint_open(dir, &ck);
    clnpu_model_options o = clnpu_model_options_default();
    o.max_context = 16, o.max_tokens = 8, o.max_sequences = 1, o.weights = weights, o.check_weights = check_weights;
    if (!st) st = clnpu_model_create(test_device(), &cfg, ck, &o, &m);
    const int ids[3] = {1, 2, 3};
    if (!st) st = clnpu_model_prefill(m, 0, ids, 3, logits);
    clnpu_model_destroy(m);
    clnpu_checkpoint_close(ck);
    return st;
}

static double rel_err(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), den += (double)b[i] * b[i];
    return isfinite(num) ? sqrt(num / den) : INFINITY;
}

START_TEST(test_fused_experts_dtypes)
{
    char dir[256];
    test_mkdtemp(dir, sizeof dir);
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(TINY "/config.json", &cfg));
    const size_t n = 3 * cfg.vocab_size;
    float *ref = malloc(n * 4), *got = malloc(n * 4);
    for (size_t i = 0; i < n; i++) ref[i] = got[i] = NAN; /* poisoned */
    ck_assert_ok(run_variant(TINY, -1, false, ref));
    /* D3: gate_up and down of different dtypes, each stepped with its own element size (bf16
     * widened to f32 exactly, so the logits are the unfused model's) */
    const clnpu_dtype pairs[3][2] = {{CLNPU_DTYPE_BF16, CLNPU_DTYPE_F32}, {CLNPU_DTYPE_F32, CLNPU_DTYPE_BF16},
                                     {CLNPU_DTYPE_BF16, CLNPU_DTYPE_BF16}};
    for (int i = 0; i < 3; i++) {
        variant v = {pairs[i][0], pairs[i][1], NULL, 0, 0};
        write_variant(dir, &v);
        for (size_t j = 0; j < n; j++) got[j] = NAN;
        ck_assert_ok(run_variant(dir, -1, false, got));
        const double e = rel_err(got, ref, n);
        ck_assert_msg(e < 1e-5, "fused %s/%s: logits rel error %g", clnpu_dtype_name(pairs[i][0]),
                      clnpu_dtype_name(pairs[i][1]), e);
    }
    /* D4: I8 / FP8 / I32 fused experts without scales are refused with --weights too (they were
     * quantised from uninitialised memory) */
    const clnpu_dtype raw[3] = {CLNPU_DTYPE_I8, CLNPU_DTYPE_FP8_E4M3, CLNPU_DTYPE_I32};
    for (int i = 0; i < 3; i++)
        for (int w = 0; w < 3; w++) {
            variant v = {raw[i], raw[i], NULL, 0, 0};
            write_variant(dir, &v);
            const int weights = w == 0 ? -1 : w == 1 ? CLNPU_DTYPE_I8 : CLNPU_DTYPE_FP8_E4M3;
            expect_msg(run_variant(dir, weights, false, got), CLNPU_ERR_UNSUPPORTED, "mlp.experts.gate_up_proj",
                       "is not a weight dtype");
        }
    free(ref), free(got);
    test_rmdir(dir);
}
END_TEST

START_TEST(test_nonfinite_weights)
{
    char dir[256];
    test_mkdtemp(dir, sizeof dir);
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(TINY "/config.json", &cfg));
    float *logits = malloc(3 * cfg.vocab_size * 4);
    /* NaN / Inf weights: the step's device-side flag stops the run naming the first layer that
     * went bad (exit 0 with 100 % NaN logits before); --check-weights names the tensor at load */
    static const struct { const char *tensor, *where; float value; size_t at; } cases[] = {
        {"lm_head.weight", "the logits", NAN, 5},
        {"model.embed_tokens.weight", "the embedding output", INFINITY, 96 + 5}, /* row of token 1 */
        {"model.layers.0.mlp.down_proj.weight", "output of layer 0", NAN, 5},
        {"model.layers.2.self_attn.q_a_proj.weight", "output of layer 2", -INFINITY, 5},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        variant v = {CLNPU_DTYPE_COUNT, CLNPU_DTYPE_COUNT, cases[i].tensor, cases[i].value, cases[i].at};
        write_variant(dir, &v);
        expect_msg(run_variant(dir, -1, false, logits), CLNPU_ERR_INVALID_ARGUMENT, "non-finite", cases[i].where);
        expect_msg(run_variant(dir, -1, true, logits), CLNPU_ERR_PARSE, cases[i].tensor,
                   isnan(cases[i].value) ? "is NaN" : "is infinite");
    }
    variant v = {CLNPU_DTYPE_COUNT, CLNPU_DTYPE_COUNT, NULL, 0, 0};
    write_variant(dir, &v);
    ck_assert_ok(run_variant(dir, -1, true, logits)); /* the clean copy passes the scan */
    /* vectors are always checked: a NaN router bias (f32) silently changed the routing; a NaN
     * norm weight (bf16) poisons every token */
    static const struct { const char *tensor; float value; } vecs[] = {
        {"model.layers.1.mlp.gate.e_score_correction_bias", NAN},
        {"model.layers.2.mlp.gate.e_score_correction_bias", -INFINITY},
        {"model.norm.weight", NAN},
    };
    for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) {
        variant b = {CLNPU_DTYPE_COUNT, CLNPU_DTYPE_COUNT, vecs[i].tensor, vecs[i].value, 3};
        write_variant(dir, &b);
        expect_msg(run_variant(dir, -1, false, logits), CLNPU_ERR_PARSE, vecs[i].tensor, "element 3 is");
    }
    free(logits);
    test_rmdir(dir);
}
END_TEST

/* Through a stage of two data-parallel attention replicas of TP 2 over EP 4 (one process, the plan's
 * devices shared) and the poisoned variant in dir: each replica's own flag names what went bad. */
static clnpu_pipeline *replica_pipeline(const char *dir, clnpu_checkpoint **ck)
{
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(path, &cfg));
    ck_assert_ok(clnpu_checkpoint_open(dir, ck));
    static const size_t e4[4][4] = {{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}};
    clnpu_stage_spec sp = {.device = 0, .profile = "", .layer_begin = 0, .layer_end = cfg.num_hidden_layers,
                           .embed = true, .head = true, .tp = 2, .replicas = 2, .ep_count = 4};
    for (size_t i = 0; i < 4; i++) sp.ep_devices[i] = i, sp.ep_experts[i] = e4[i], sp.ep_expert_counts[i] = 4;
    clnpu_model_options o = clnpu_model_options_default();
    o.share_devices = true, o.max_sequences = 2, o.max_context = 16, o.max_tokens = 8;
    clnpu_pipeline *p;
    ck_assert_ok(clnpu_pipeline_create(&cfg, *ck, &sp, 1, &o, &p));
    return p;
}

START_TEST(test_nonfinite_replicas)
{
    char dir[256];
    test_mkdtemp(dir, sizeof dir);
    clnpu_model_config cfg;
    ck_assert_ok(clnpu_model_config_load(TINY "/config.json", &cfg));
    const size_t V = cfg.vocab_size, d = cfg.hidden_size;
    float *lg = malloc(2 * V * sizeof *lg);
    const int ids[3] = {1, 2, 3}, next[2] = {4, 7};
    const size_t both[2] = {0, 1};
    /* NaN in layer 2's attention: replica 0 (sequence 0) names the layer */
    variant v = {CLNPU_DTYPE_COUNT, CLNPU_DTYPE_COUNT, "model.layers.2.self_attn.q_a_proj.weight", NAN, 5};
    write_variant(dir, &v);
    clnpu_checkpoint *ck;
    clnpu_pipeline *p = replica_pipeline(dir, &ck);
    expect_msg(clnpu_pipeline_prefill(p, 0, ids, 3, lg), CLNPU_ERR_INVALID_ARGUMENT, "non-finite", "output of layer 2");
    clnpu_pipeline_destroy(p), clnpu_checkpoint_close(ck);
    /* an infinite embedding row (token 7) that only replica 1's sequence meets: the prompts and
     * replica 0's rows are clean, the step stops naming replica 1 and the embedding */
    variant e = {CLNPU_DTYPE_COUNT, CLNPU_DTYPE_COUNT, "model.embed_tokens.weight", INFINITY, 7 * d + 5};
    write_variant(dir, &e);
    p = replica_pipeline(dir, &ck);
    for (size_t q = 0; q < 2; q++) ck_assert_ok(clnpu_pipeline_prefill(p, q, ids, 3, NULL));
    const int clean[2] = {4, 5};
    for (size_t i = 0; i < 2 * V; i++) lg[i] = NAN; /* poisoned */
    ck_assert_ok(clnpu_pipeline_decode(p, both, clean, 2, lg));
    for (size_t i = 0; i < 2 * V; i++) ck_assert_msg(isfinite(lg[i]), "logit %zu: %g", i, lg[i]);
    expect_msg(clnpu_pipeline_decode(p, both, next, 2, lg), CLNPU_ERR_INVALID_ARGUMENT, "attention replica 1",
               "non-finite values (NaN or Inf) in the embedding output");
    clnpu_pipeline_destroy(p), clnpu_checkpoint_close(ck);
    free(lg);
    test_rmdir(dir);
}
END_TEST

/* ---- D1, D10, D11, D12, D13, D20: the CLI ----------------------------------------------------- */

static void expect_cli(const char *args, int rc, const char *needle)
{
    char cmd[2048], out[16384];
    snprintf(cmd, sizeof cmd, "'%s' %s", CLI, args);
    const int got = test_run(cmd, out, sizeof out);
    ck_assert_msg(got == rc && strstr(out, needle), "%s: exit %d (expected %d), output lacks '%s':\n%.2000s", args, got,
                  rc, needle, out);
    ck_assert_msg(!strstr(out, "error:  ("), "%s: empty message:\n%s", args, out);
    ck_assert_msg(!strstr(out, "Sanitizer") && !strstr(out, "runtime error"), "%s: sanitizer report:\n%s", args, out);
}

START_TEST(test_cli_limits)
{
    alarm(120);
    char dir[256], args[1024];
    test_mkdtemp(dir, sizeof dir);
    /* D1, D12: sizes from flags bounded before any arithmetic */
    expect_cli("run --model " TINY " --ids 1,2,3 -n 4611686018427387904 --context 64", 2, "bad -n");
    expect_cli("run --model " TINY " --ids 1,2,3 -n 18446744073709551615", 2, "bad -n");
    expect_cli("run --model " TINY " --ids 1,2,3 --context 1000000000000", 2, "bad --context");
    /* D10: NaN, subnormal and wrapping sampling values; --top-p alone */
    expect_cli("run --model " TINY " --ids 1,2,3 --temperature nan", 2, "bad --temperature");
    expect_cli("run --model " TINY " --ids 1,2,3 --temperature inf", 2, "bad --temperature");
    expect_cli("run --model " TINY " --ids 1,2,3 --temperature 1 --top-p nan", 2, "bad --top-p");
    expect_cli("run --model " TINY " --ids 1,2,3 --temperature 1 --top-k 4294967296", 2, "bad --top-k");
    expect_cli("run --model " TINY " --ids 1,2,3 --top-p 0.5", 2, "give --temperature");
    expect_cli("run --model " TINY " --ids 1,2,3 --top-k 5", 2, "give --temperature");
    /* a temperature too small for float's 1/T is greedy (it gave the last id, 383) */
    expect_cli("run --model " TINY " --ids 1,2,3 -n 2 --temperature 1e-39", 0, "167,170");
    /* D11: past max_position_embeddings (256) */
    snprintf(args, sizeof args, "%s/ids300", dir);
    FILE *f = fopen(args, "w");
    for (int i = 0; i < 300; i++) fprintf(f, "%s5", i ? "," : "");
    fclose(f);
    snprintf(args, sizeof args, "run --model " TINY " --ids-file %s/ids300 -n 2", dir);
    expect_cli(args, 1, "max_position_embeddings 256");
    expect_cli("run --model " TINY " --ids 1,2,3 -n 300", 1, "max_position_embeddings 256");
    expect_cli("run --model " TINY " --ids 1,2,3 --context 300", 1, "max_position_embeddings 256");
    /* D20: --ids-file a directory or a device */
    snprintf(args, sizeof args, "run --model " TINY " --ids-file %s", dir);
    expect_cli(args, 1, "not a regular file (a directory)");
    expect_cli("run --model " TINY " --ids-file /dev/zero", 1, "not a regular file (a character device)");
    /* D13: messages never empty */
    expect_cli("bench gemm --shape 1x1000000000x1000000000", 2, "bad shape");
    expect_cli("bench gemm --shape 1x-1x1", 2, "bad shape");
    expect_cli("bench gemm --min-time nan", 2, "bad --min-time");
    expect_cli("tune --budget inf", 2, "bad --budget");
    expect_cli("run --model " TINY " --ids ' 1' --device ' 0'", 2, "--device");
    expect_cli("plan --model " TINY "/config.json --cluster " CLNPU_SOURCE_DIR "/clusters/pocl-2.yaml -o "
               "/nonexistent/p.yaml", 1, "/nonexistent/p.yaml: cannot create");
    /* D18 through the CLI: a symlink to a pipe (as /dev/stdout is) is refused, not replaced */
    snprintf(args, sizeof args, "%s/out", dir);
    ck_assert_int_eq(symlink("/proc/self/fd/1", args), 0);
    char cmd[1200], out[8192];
    snprintf(cmd, sizeof cmd, "('%s' run --model " TINY " --ids 1,2,3 -n 1 --dump-logits %s/out 2>&1; echo rc=$?) | cat",
             CLI, dir);
    test_run(cmd, out, sizeof out);
    ck_assert_msg(strstr(out, "not a regular file (a FIFO)") && strstr(out, "rc=1"), "%s", out);
    struct stat sb;
    snprintf(args, sizeof args, "%s/out", dir);
    ck_assert_int_eq(lstat(args, &sb), 0);
    ck_assert_msg(S_ISLNK(sb.st_mode), "--dump-logits replaced the symlink");
    test_rmdir(dir);
    alarm(0);
}
END_TEST

Suite *suite_harden(void)
{
    Suite *s = suite_create("harden");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_inputs_must_be_regular_files);
    tcase_add_test(tc, test_yaml_depth_cap);
    tcase_add_test(tc, test_outputs_keep_links);
    tcase_add_test(tc, test_cluster_ranges);
    tcase_add_test(tc, test_tuning_db_validated);
    tcase_add_test(tc, test_expert_load_strict);
    tcase_add_test(tc, test_cache_dir_too_long);
    tcase_add_test(tc, test_config_strict);
    tcase_add_test(tc, test_duplicate_tensor_key);
    tcase_add_test(tc, test_fused_experts_dtypes);
    tcase_add_test(tc, test_nonfinite_weights);
    tcase_add_test(tc, test_nonfinite_replicas);
    tcase_add_test(tc, test_cli_limits);
    suite_add_tcase(s, tc);
    return s;
}
