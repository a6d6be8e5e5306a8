/* The tuning database: save / load / merge round trip, stale kernel sources ignored, the nearest
 * tuned device by capabilities, and the runtime using an entry. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

static clnpu_tuning_entry entry_for(clnpu_device *dev, const char *kernel, const char *dtype, const char *cls)
{
    clnpu_tuning_entry e;
    memset(&e, 0, sizeof e);
    clnpu_tuning_entry_set_device(&e, dev);
    snprintf(e.kernel, sizeof e.kernel, "%s", kernel);
    snprintf(e.dtype, sizeof e.dtype, "%s", dtype);
    snprintf(e.shape_class, sizeof e.shape_class, "%s", cls);
    clnpu_tuning_source_hash(!strcmp(kernel, "gemm") ? "gemm.cl" : "attention.cl", e.source_hash);
    return e;
}

START_TEST(test_db_roundtrip_and_lookup)
{
    clnpu_device *dev = test_device();
    char dir[256], path[512];
    test_mkdtemp(dir, sizeof dir);
    snprintf(path, sizeof path, "%s/t.yaml", dir);
    clnpu_tuning_db *db;
    ck_assert_ok(clnpu_tuning_db_load(path, &db)); /* missing file: empty */
    ck_assert_uint_eq(clnpu_tuning_db_count(db), 0);
    clnpu_tuning_entry e = entry_for(dev, "gemm", "bf16", "decode");
    snprintf(e.names[0], sizeof e.names[0], "mr"), e.values[0] = 3;
    snprintf(e.names[1], sizeof e.names[1], "kacc"), e.values[1] = 2;
    e.nparams = 2, e.ms = 0.5, e.default_ms = 0.9;
    snprintf(e.measured, sizeof e.measured, "2026-11-28");
    snprintf(e.how, sizeof e.how, "test");
    ck_assert_ok(clnpu_tuning_db_put(db, &e));
    ck_assert_ok(clnpu_tuning_db_put(db, &e)); /* same slot replaces */
    ck_assert_uint_eq(clnpu_tuning_db_count(db), 1);
    ck_assert_ok(clnpu_tuning_db_save(db, path));
    clnpu_tuning_db *back;
    ck_assert_ok(clnpu_tuning_db_load(path, &back));
    ck_assert_uint_eq(clnpu_tuning_db_count(back), 1);
    clnpu_tuning_match m;
    const char *note;
    const clnpu_tuning_entry *got = clnpu_tuning_lookup(back, dev, "gemm", "bf16", "decode", &m, &note);
    ck_assert_ptr_nonnull(got);
    ck_assert_int_eq(m, CLNPU_TUNING_EXACT);
    ck_assert_int_eq(clnpu_tuning_param(got, "mr", 0), 3);
    ck_assert_int_eq(clnpu_tuning_param(got, "nope", 7), 7);
    ck_assert(got->ms == 0.5 && !strcmp(got->measured, "2026-11-28"));
    /* another device of the same kind: the nearest entry; a GPU-only entry loses to it */
    clnpu_tuning_entry other = e, gpu = e;
    snprintf(other.device_key, sizeof other.device_key, "Other|cpu-x|1.0|0");
    other.values[0] = 5;
    snprintf(gpu.device_key, sizeof gpu.device_key, "GPU|gpu-y|1.0|0");
    gpu.type = CLNPU_DEVICE_TYPE_GPU, gpu.compute_units = 132, gpu.values[0] = 8;
    clnpu_tuning_db *far;
    ck_assert_ok(clnpu_tuning_db_create(&far));
    ck_assert_ok(clnpu_tuning_db_put(far, &gpu));
    ck_assert_ok(clnpu_tuning_db_put(far, &other));
    got = clnpu_tuning_lookup(far, dev, "gemm", "bf16", "decode", &m, &note);
    ck_assert_int_eq(m, CLNPU_TUNING_NEAREST);
    ck_assert_int_eq(clnpu_tuning_param(got, "mr", 0), 5);
    /* never across an ISA class or a CPU vendor; another family of the same vendor stands in,
     * and so does this device's key measured on another CPU, but only as the nearest */
    const clnpu_device_isa *isa = clnpu_device_get_isa(dev);
    if (isa->cpu[0]) {
        clnpu_tuning_entry cls = other, vend = other, fam = e;
        snprintf(cls.isa, sizeof cls.isa, "%s", strcmp(isa->name, "avx2") ? "avx2" : "avx512");
        snprintf(vend.cpu, sizeof vend.cpu, "%s 6/85", strncmp(isa->cpu, "GenuineIntel", 12) ? "GenuineIntel" : "AuthenticAMD");
        snprintf(fam.cpu, sizeof fam.cpu, "%.*s 999/1", (int)strcspn(isa->cpu, " "), isa->cpu);
        fam.values[0] = 9;
        clnpu_tuning_db *x;
        ck_assert_ok(clnpu_tuning_db_create(&x));
        ck_assert_ok(clnpu_tuning_db_put(x, &cls));
        ck_assert_ptr_null(clnpu_tuning_lookup(x, dev, "gemm", "bf16", "decode", &m, &note));
        ck_assert_ok(clnpu_tuning_db_put(x, &vend)); /* replaces cls: same slot */
        ck_assert_ptr_null(clnpu_tuning_lookup(x, dev, "gemm", "bf16", "decode", &m, &note));
        ck_assert_ok(clnpu_tuning_db_put(x, &fam));
        got = clnpu_tuning_lookup(x, dev, "gemm", "bf16", "decode", &m, &note);
        ck_assert_int_eq(m, CLNPU_TUNING_NEAREST);
        ck_assert_int_eq(clnpu_tuning_param(got, "mr", 0), 9);
        clnpu_tuning_db_destroy(x);
    }
    /* an entry written before the isa field gets its class from the key's device name */
    {
        static const char old[] = "format: clnpu-tuning-1\nentries:\n"
                                  "- {device: 'AuthenticAMD|pthread-haswell-AMD EPYC|3.1|0', kernel: gemm, dtype: f32,"
                                  " class: gemv, source: '0', params: {}, capabilities: {type: 1, vector_width: 8}}\n";
        clnpu_tuning_db *x;
        ck_assert_ok(clnpu_tuning_db_create(&x));
        ck_assert_ok(clnpu_tuning_db_merge_text(x, old, sizeof old - 1, "old.yaml"));
        ck_assert_str_eq(clnpu_tuning_db_get(x, 0)->isa, "avx2");
        clnpu_tuning_db_destroy(x);
    }
    /* an entry measured with another kernel source is ignored, with a note */
    clnpu_tuning_entry stale = e;
    snprintf(stale.source_hash, sizeof stale.source_hash, "0000000000000000");
    clnpu_tuning_db *sdb;
    ck_assert_ok(clnpu_tuning_db_create(&sdb));
    ck_assert_ok(clnpu_tuning_db_put(sdb, &stale));
    got = clnpu_tuning_lookup(sdb, dev, "gemm", "bf16", "decode", &m, &note);
    ck_assert_ptr_null(got);
    ck_assert_int_eq(m, CLNPU_TUNING_NONE);
    ck_assert_ptr_nonnull(note);
    /* merging a second file: its entries replace the first's for the same slot */
    clnpu_tuning_db_put(sdb, &gpu);
    snprintf(path, sizeof path, "%s/u.yaml", dir);
    ck_assert_ok(clnpu_tuning_db_save(sdb, path));
    ck_assert_ok(clnpu_tuning_db_merge_file(back, path));
    ck_assert_uint_eq(clnpu_tuning_db_count(back), 2);
    /* malformed databases are errors with the file */
    ck_assert_int_eq(clnpu_tuning_db_merge_text(back, "format: other\n", 14, "x.yaml"), CLNPU_ERR_PARSE);
    ck_assert_ptr_nonnull(strstr(clnpu_error_message(), "x.yaml"));
    clnpu_tuning_db_destroy(db), clnpu_tuning_db_destroy(back), clnpu_tuning_db_destroy(far), clnpu_tuning_db_destroy(sdb);
    test_rmdir(dir);
}
END_TEST

/* ISA classes from PoCL's device names (the LLVM CPU after the driver's prefix), else the width. */
START_TEST(test_isa_class)
{
    static const struct { const char *name, *cpu, *cls; unsigned width; } cases[] = {
        {"pthread-skylake-avx512-AMD EPYC", "skylake-avx512", "avx512", 16},
        {"pthread-skylake-avx512-Intel(R) Xeon(R) Processor", "skylake-avx512", "avx512", 16},
        {"pthread-haswell-AMD EPYC", "haswell", "avx2", 8},
        {"cpu-znver3-AMD Ryzen 9", "znver3", "avx2", 8},
        {"pthread-znver4", "znver4", "avx512", 16},
        {"pthread-mystery-cpu", "mystery", "avx512", 16}, /* unknown: the reported width decides */
        {"pthread-mystery-cpu", "mystery", "vec4", 4},
        {"NVIDIA H200", "", "avx2", 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cpu[48];
        clnpu_isa_llvm_cpu(cases[i].name, cpu, sizeof cpu);
        ck_assert_str_eq(cpu, cases[i].cpu);
        ck_assert_str_eq(clnpu_isa_class_of(cpu, CLNPU_DEVICE_TYPE_CPU, cases[i].width), cases[i].cls);
    }
    ck_assert_str_eq(clnpu_isa_class_of("", CLNPU_DEVICE_TYPE_GPU, 1), "gpu");
    const clnpu_device_isa *isa = clnpu_device_get_isa(test_device());
    ck_assert(isa->lanes == 4 || isa->lanes == 8 || isa->lanes == 16);
    ck_assert(isa->registers == 16 || isa->registers == 32);
}
END_TEST

/* With an entry, the GEMM builds the tuned variant, still correct; the CLI says which entry. */
START_TEST(test_runtime_uses_entry)
{
    clnpu_device *dev = test_device();
    clnpu_tuning_db *db;
    ck_assert_ok(clnpu_tuning_db_create(&db));
    clnpu_tuning_entry e = entry_for(dev, "gemm", "f32", "decode");
    snprintf(e.names[0], sizeof e.names[0], "mr"), e.values[0] = 5;
    snprintf(e.names[1], sizeof e.names[1], "kacc"), e.values[1] = 3;
    snprintf(e.names[2], sizeof e.names[2], "ksplit"), e.values[2] = 1;
    snprintf(e.names[3], sizeof e.names[3], "nb"), e.values[3] = 1; /* over the derived 2 */
    e.nparams = 4;
    ck_assert_ok(clnpu_tuning_db_put(db, &e));
    const clnpu_tuning_db *prev = clnpu_device_get_tuning(dev);
    clnpu_device_set_tuning(dev, db);
    const size_t m = 7, n = 45, k = 333;
    float *w = malloc(n * k * 4), *x = malloc(m * k * 4), *y = malloc(m * n * 4);
    for (size_t i = 0; i < n * k; i++) w[i] = test_rand_uniform(-1, 1);
    for (size_t i = 0; i < m * k; i++) x[i] = test_rand_uniform(-1, 1);
    clnpu_weight_desc d = {CLNPU_DTYPE_F32, n, k, w, NULL, 0};
    clnpu_weight *wt;
    clnpu_buffer *bx, *by;
    ck_assert_ok(clnpu_weight_upload(dev, &d, 1, &wt));
    ck_assert_ok(clnpu_buffer_create(dev, m * k * 4, &bx));
    ck_assert_ok(clnpu_buffer_write(bx, 0, x, m * k * 4));
    ck_assert_ok(clnpu_buffer_create(dev, m * n * 4, &by));
    clnpu_gemm_args a = clnpu_gemm_args_default();
    a.x = bx, a.y = by, a.m = m;
    ck_assert_ok(clnpu_gemm(dev, wt, 0, &a));
    ck_assert_ok(clnpu_buffer_read(by, 0, y, m * n * 4));
    double num = 0, den = 0;
    for (size_t i = 0; i < m; i++)
        for (size_t o = 0; o < n; o++) {
            double r = 0;
            for (size_t kk = 0; kk < k; kk++) r += (double)x[i * k + kk] * w[o * k + kk];
            num += (y[i * n + o] - r) * (y[i * n + o] - r), den += r * r;
        }
    ck_assert_msg(num / den < 1e-10, "tuned variant wrong: %g", num / den);
    /* the variant really was built with the entry's defines */
    clnpu_program *p;
    char opts[256]; /* the panel width is the device's native vector width (8 on AVX2) */
    const bool cpu = clnpu_device_get_info(dev)->type == CLNPU_DEVICE_TYPE_CPU && !clnpu_device_is_emulated(dev);
    const int nr = cpu ? (clnpu_device_get_isa(dev)->lanes >= 16 ? 16 : 8)
                       : (clnpu_device_get_profile(dev)->kernel.tile_n == 8 ? 8 : 16);
    snprintf(opts, sizeof opts, "-DCLNPU_GEMM_WTYPE=0 -DCLNPU_GEMM_QGROUP=128 -DCLNPU_GEMM_EPILOGUE=0 "
             "-DCLNPU_GEMM_MR=5 -DCLNPU_GEMM_NR=%d -DCLNPU_GEMM_KACC=3 -DCLNPU_GEMM_KSPLIT=1", nr);
    const char *only[] = {"clnpu_gemm", NULL}; /* the variant holds the launched kernel only */
    ck_assert_ok(clnpu_program_get_kernels(dev, "gemm.cl", opts, only, &p));
    ck_assert_int_eq(clnpu_program_get_origin(p), CLNPU_PROGRAM_MEMORY);
    clnpu_device_set_tuning(dev, prev);
    clnpu_weight_destroy(wt);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(by);
    clnpu_tuning_db_destroy(db);
    free(w), free(x), free(y);
}
END_TEST

/* The two grouped classes: a decode step's experts (<= 8 rows each) take the `grouped` entry, a
 * prompt's the `grouped_prefill` one, each on the device-side counts path a MoE layer runs; the
 * programs built carry each entry's defines and the results match float64. */
static clnpu_tuning_entry grouped_entry(clnpu_device *dev, const char *cls, int mr, int mb, int kc)
{
    clnpu_tuning_entry e = entry_for(dev, "gemm", "f32", cls);
    const char *names[] = {"mr", "kacc", "ksplit", "mb", "kc"};
    const int vals[] = {mr, 1, 0, mb, kc};
    for (int i = 0; i < 5; i++) snprintf(e.names[i], sizeof e.names[i], "%s", names[i]), e.values[i] = vals[i];
    e.nparams = 5;
    return e;
}

START_TEST(test_grouped_classes)
{
    clnpu_device *dev = test_device();
    const clnpu_device_info *info = clnpu_device_get_info(dev);
    if (info->type != CLNPU_DEVICE_TYPE_CPU || clnpu_device_is_emulated(dev)) return; /* wg family: gemm_wg */
    clnpu_tuning_db *db;
    ck_assert_ok(clnpu_tuning_db_create(&db));
    clnpu_tuning_entry ge = grouped_entry(dev, "grouped", 2, 1, 0), pe = grouped_entry(dev, "grouped_prefill", 4, 2, 128);
    ck_assert_ok(clnpu_tuning_db_put(db, &ge));
    ck_assert_ok(clnpu_tuning_db_put(db, &pe));
    const clnpu_tuning_db *prev = clnpu_device_get_tuning(dev);
    clnpu_device_set_tuning(dev, db);
    const size_t E = 3, n = 29, k = 333, rows[2] = {2, 12};
    const int nr = clnpu_device_get_isa(dev)->lanes >= 16 ? 16 : 8;
    float *w = malloc(E * n * k * 4), *x = malloc(E * 12 * k * 4), *y = malloc(E * 12 * n * 4);
    for (size_t i = 0; i < E * n * k; i++) w[i] = test_rand_uniform(-1, 1);
    for (size_t i = 0; i < E * 12 * k; i++) x[i] = test_rand_uniform(-1, 1);
    clnpu_weight_desc d[3];
    for (size_t e = 0; e < E; e++) d[e] = (clnpu_weight_desc){CLNPU_DTYPE_F32, n, k, w + e * n * k, NULL, 0};
    clnpu_weight *wt;
    clnpu_buffer *bx, *by, *bc, *bo;
    ck_assert_ok(clnpu_weight_upload(dev, d, E, &wt));
    ck_assert_ok(clnpu_buffer_create(dev, E * 12 * k * 4, &bx));
    ck_assert_ok(clnpu_buffer_write(bx, 0, x, E * 12 * k * 4));
    ck_assert_ok(clnpu_buffer_create(dev, E * 12 * n * 4, &by));
    ck_assert_ok(clnpu_buffer_create(dev, E * sizeof(int), &bc));
    ck_assert_ok(clnpu_buffer_create(dev, E * sizeof(int), &bo));
    for (int c = 0; c < 2; c++) {
        const size_t r = rows[c], m = E * r;
        int cnt[3], off[3];
        for (size_t e = 0; e < E; e++) cnt[e] = (int)r, off[e] = (int)(e * r);
        ck_assert_ok(clnpu_buffer_write(bc, 0, cnt, sizeof cnt));
        ck_assert_ok(clnpu_buffer_write(bo, 0, off, sizeof off));
        for (size_t i = 0; i < m * n; i++) y[i] = NAN;
        ck_assert_ok(clnpu_buffer_write(by, 0, y, m * n * 4));
        clnpu_gemm_args a = clnpu_gemm_args_default();
        a.x = bx, a.y = by, a.m = m;
        ck_assert_ok(clnpu_gemm_grouped_counts(dev, wt, bc, bo, r, &a));
        ck_assert_ok(clnpu_buffer_read(by, 0, y, m * n * 4));
        double num = 0, den = 0;
        for (size_t i = 0; i < m; i++)
            for (size_t o = 0; o < n; o++) {
                double ref = 0;
                for (size_t kk = 0; kk < k; kk++) ref += (double)x[i * k + kk] * w[((i / r) * n + o) * k + kk];
                num += (y[i * n + o] - ref) * (y[i * n + o] - ref), den += ref * ref;
            }
        ck_assert_msg(num / den < 1e-10, "%zu rows per matrix: %g", r, num / den);
        char opts[256];
        if (c == 0)
            snprintf(opts, sizeof opts, "-DCLNPU_GEMM_WTYPE=0 -DCLNPU_GEMM_QGROUP=128 -DCLNPU_GEMM_EPILOGUE=0 "
                     "-DCLNPU_GEMM_MR=2 -DCLNPU_GEMM_NR=%d -DCLNPU_GEMM_KACC=1 -DCLNPU_GEMM_KSPLIT=0", nr);
        else
            snprintf(opts, sizeof opts, "-DCLNPU_GEMM_WTYPE=0 -DCLNPU_GEMM_QGROUP=128 -DCLNPU_GEMM_EPILOGUE=0 "
                     "-DCLNPU_GEMM_MR=4 -DCLNPU_GEMM_NR=%d -DCLNPU_GEMM_KACC=1 -DCLNPU_GEMM_KSPLIT=0 "
                     "-DCLNPU_GEMM_MB=2 -DCLNPU_GEMM_KC=128", nr);
        clnpu_program *p;
        const char *only[] = {"clnpu_gemm_grouped_counts", NULL};
        ck_assert_ok(clnpu_program_get_kernels(dev, "gemm.cl", opts, only, &p));
        ck_assert_msg(clnpu_program_get_origin(p) == CLNPU_PROGRAM_MEMORY, "%zu rows: not the %s entry's variant", r,
                      c ? "grouped_prefill" : "grouped");
    }
    clnpu_device_set_tuning(dev, prev);
    clnpu_weight_destroy(wt);
    clnpu_buffer_destroy(bx), clnpu_buffer_destroy(by), clnpu_buffer_destroy(bc), clnpu_buffer_destroy(bo);
    clnpu_tuning_db_destroy(db);
    free(w), free(x), free(y);
}
END_TEST

/* clnpu tune on one small class: a database appears, a second run resumes from it. */
START_TEST(test_tune_cli)
{
    char dir[256], cmd[1024], out[16384];
    test_mkdtemp(dir, sizeof dir);
    snprintf(cmd, sizeof cmd, "'%s' tune --ops mla --budget 3 --db '%s/db.yaml'", CLNPU_CLI_PATH, dir);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    ck_assert_msg(strstr(out, "mla f32 ctx4k") && strstr(out, "speedup"), "%.1500s", out);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0 && strstr(out, "already tuned"), "no resume: %s", out);
    snprintf(cmd, sizeof cmd, "CLNPU_TUNING_DB='%s/db.yaml' '%s' bench mla --context 300 --heads 4 --min-time 0.01 "
             "--json 2>&1", dir, CLNPU_CLI_PATH);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    /* the grouped class as a MoE layer runs it (SwiGLU, counts on the device), and only it */
    snprintf(cmd, sizeof cmd, "'%s' tune --ops gemm --dtype bf16 --classes grouped --budget 3 --db '%s/g.yaml'",
             CLNPU_CLI_PATH, dir);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    /* every candidate passed its float64 check (silu(g) * u): none rejected */
    ck_assert_msg(strstr(out, "gemm bf16 grouped ") && !strstr(out, "gemm bf16 gemv") && strstr(out, " 0 rejected"),
                  "%.1500s", out);
    snprintf(cmd, sizeof cmd, "'%s' tune --ops gemm --classes nothing", CLNPU_CLI_PATH);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s' tune --ops nothing", CLNPU_CLI_PATH);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 2);
    /* --verbose names every GEMM parameter's source: without a database all derived from the
     * device or the kernel's own defaults; CLNPU_GEMM overrides are named as such */
    snprintf(cmd, sizeof cmd, "CLNPU_TUNING=off CLNPU_GEMM=mb=2 '%s' bench gemm --dtype f32 --shape 20x64x300 "
             "--min-time 0.01 --verbose 2>&1", CLNPU_CLI_PATH);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%.1500s", out);
    const char *line = strstr(out, "gemm f32 prefill m20 n64 k300: mr ");
    ck_assert_msg(line && strstr(line, "mb 2 (env)") && strstr(line, "kacc auto (kernel)"), "%.1500s", out);
    if (clnpu_device_get_info(test_device())->type == CLNPU_DEVICE_TYPE_CPU) ck_assert_msg(strstr(line, "(derived)"), "%.1500s", out);
    test_rmdir(dir);
}
END_TEST

/* Every shipped entry (the YAML files in tuning/, embedded in the library) was measured with the kernel source
 * the library holds now: a kernel change that alters the source hash silently turns its entries
 * off (the runtime ignores them as stale), so it must re-measure or drop them in the same change.
 * The hash leaves the kernel-selection guards out (tools/embed.py); anything else counts. */
START_TEST(test_shipped_entries_match_sources)
{
    static const char *files[] = {"pocl-cpu.yaml", "pocl-cpu-zen5.yaml"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/tuning/%s", CLNPU_SOURCE_DIR, files[f]);
        clnpu_tuning_db *db;
        ck_assert_ok(clnpu_tuning_db_load(path, &db));
        ck_assert_uint_gt(clnpu_tuning_db_count(db), 0);
        for (size_t i = 0; i < clnpu_tuning_db_count(db); i++) {
            const clnpu_tuning_entry *e = clnpu_tuning_db_get(db, i);
            const char *src = !strcmp(e->kernel, "gemm")      ? "gemm.cl"
                              : !strcmp(e->kernel, "gemm_wg")   ? "gemm_wg.cl"
                              : !strcmp(e->kernel, "attention") ? "attention.cl"
                              : !strcmp(e->kernel, "mla")       ? "mla.cl"
                                                                : NULL;
            ck_assert_msg(src, "%s: entry %zu: unknown kernel %s", files[f], i, e->kernel);
            char now[17];
            clnpu_tuning_source_hash(src, now);
            ck_assert_msg(!strcmp(now, e->source_hash),
                          "%s: entry %zu (%s %s %s) measured with %s %s, the library's is %s: re-measure or drop it",
                          files[f], i, e->kernel, e->dtype, e->shape_class, src, e->source_hash, now);
        }
        clnpu_tuning_db_destroy(db);
    }
}
END_TEST

Suite *suite_tuning(void)
{
    Suite *s = suite_create("tuning");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_isa_class);
    tcase_add_test(tc, test_db_roundtrip_and_lookup);
    tcase_add_test(tc, test_shipped_entries_match_sources);
    tcase_add_test(tc, test_runtime_uses_entry);
    tcase_add_test(tc, test_grouped_classes);
    tcase_add_test(tc, test_tune_cli);
    suite_add_tcase(s, tc);
    return s;
}
