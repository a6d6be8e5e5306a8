/* Program builds: embedded sources, disk cache hit, corrupt entries rebuilt, build logs. */
#include <CL/cl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clnpu/tuning.h"
#include "test_util.h"

static clnpu_device *open_with_cache(const char *dir)
{
    clnpu_device_options o = clnpu_device_options_default();
    o.cache_dir = dir;
    clnpu_device *dev;
    ck_assert_ok(clnpu_device_open(0, &o, &dev));
    return dev;
}

/* A nonce define makes the source's build unique to this run, so neither clnpu's cache nor
 * PoCL's own kernel cache has seen it: the first build is genuinely cold. */
static void nonce_option(char *out, size_t cap)
{
    snprintf(out, cap, "-DCLNPU_TEST_NONCE=%llu", (unsigned long long)(test_rand_u64() >> 1));
}

START_TEST(test_embedded_sources)
{
    ck_assert_uint_ge(clnpu_kernel_source_count(), 1);
    const char *src = clnpu_kernel_source("elementwise.cl");
    ck_assert_ptr_nonnull(src);
    /* Local includes are inlined at build time: no run-time file lookup. */
    ck_assert_ptr_null(strstr(src, "#include \"clnpu_common.h\""));
    ck_assert_ptr_nonnull(strstr(src, "clnpu_bf16_to_f32"));
    clnpu_program *p;
    ck_assert_int_eq(clnpu_program_get(test_device(), "nope.cl", NULL, &p), CLNPU_ERR_NOT_FOUND);
    /* Source hashes (tuning keys) are computed by tools/embed.py at build time; they must be
     * the FNV-1a of the embedded text without its kernel-selection guard lines, as here. */
    size_t guards = 0;
    for (size_t i = 0; i < clnpu_kernel_source_count(); i++) {
        const char *name = clnpu_kernel_source_name(i), *text = clnpu_kernel_source(name);
        unsigned long long h = 0xcbf29ce484222325ULL;
        for (const char *l = text, *e; *l; l = e) {
            e = strchr(l, '\n');
            e = e ? e + 1 : l + strlen(l);
            size_t n = (size_t)(e - l);
            const bool guard = (!strncmp(l, "#if !CLNPU_ONLY || CLNPU_ONLY_", 30) && !memchr(l + 30, ' ', n - 30)) ||
                               !strncmp(l, "#endif /* CLNPU_ONLY */\n", n);
            guards += guard;
            for (size_t j = 0; !guard && j < n; j++) h = (h ^ (unsigned char)l[j]) * 0x100000001b3ULL;
        }
        char want[17], got[17];
        snprintf(want, sizeof want, "%016llx", h);
        clnpu_tuning_source_hash(name, got);
        ck_assert_str_eq(got, want);
    }
    ck_assert_uint_gt(guards, 0); /* the rule above was exercised */
}
END_TEST

START_TEST(test_cache_cold_then_warm)
{
    char dir[256], opt[64];
    test_mkdtemp(dir, sizeof dir);
    nonce_option(opt, sizeof opt);
    clnpu_device *dev = open_with_cache(dir);
    clnpu_program *p;
    ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", opt, &p));
    ck_assert_int_eq(clnpu_program_get_origin(p), CLNPU_PROGRAM_BUILT);
    double cold = clnpu_program_build_ms(p);
    char path[1200];
    snprintf(path, sizeof path, "%s", clnpu_program_cache_path(p));
    struct stat sb;
    ck_assert_msg(stat(path, &sb) == 0 && sb.st_size > 0, "no cache entry at %s", path);
    /* Same device, same process: reused from memory. */
    clnpu_program *again;
    ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", opt, &again));
    ck_assert_ptr_eq(again, p);
    ck_assert_int_eq(clnpu_program_get_origin(again), CLNPU_PROGRAM_MEMORY);
    clnpu_device_close(dev);

    /* A new device context: loaded from disk. */
    dev = open_with_cache(dir);
    ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", opt, &p));
    ck_assert_int_eq(clnpu_program_get_origin(p), CLNPU_PROGRAM_DISK_CACHE);
    double warm = clnpu_program_build_ms(p);
    fprintf(stderr, "program build: cold %.1f ms, warm (disk cache) %.1f ms, %.0fx faster\n", cold,
            warm, cold / (warm > 0.001 ? warm : 0.001));
    ck_assert_msg(warm < cold, "warm build %.1f ms is not faster than cold %.1f ms", warm, cold);
    /* The loaded binary works. */
    cl_kernel k;
    ck_assert_ok(clnpu_program_create_kernel(p, "clnpu_fill_f32", (void **)&k));
    clReleaseKernel(k);
    /* Other options make another entry. */
    clnpu_program *q;
    char opt2[80];
    snprintf(opt2, sizeof opt2, "%s -DOTHER=1", opt);
    ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", opt2, &q));
    ck_assert_int_eq(clnpu_program_get_origin(q), CLNPU_PROGRAM_BUILT);
    ck_assert_str_ne(clnpu_program_cache_path(q), path);
    clnpu_device_close(dev);
    test_rmdir(dir);
}
END_TEST

/* Damage the entry in several ways; each time the next open rebuilds and rewrites it. */
START_TEST(test_corrupt_entry_rebuilt)
{
    char dir[256], opt[64], path[1200];
    test_mkdtemp(dir, sizeof dir);
    nonce_option(opt, sizeof opt);
    clnpu_device *dev = open_with_cache(dir);
    clnpu_program *p;
    ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", opt, &p));
    snprintf(path, sizeof path, "%s", clnpu_program_cache_path(p));
    clnpu_device_close(dev);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    const off_t good_size = sb.st_size;

    for (int mode = 0; mode < 4; mode++) {
        FILE *f = fopen(path, "r+b");
        ck_assert_ptr_nonnull(f);
        if (mode == 0) { /* truncated */
            ck_assert_int_eq(ftruncate(fileno(f), good_size / 2), 0);
        } else if (mode == 1) { /* one flipped byte near the end of the binary */
            fseek(f, good_size - 7, SEEK_SET);
            int c = fgetc(f);
            fseek(f, good_size - 7, SEEK_SET);
            fputc(c ^ 0x5a, f);
        } else if (mode == 2) { /* garbage */
            ck_assert_int_eq(ftruncate(fileno(f), 0), 0);
            fputs("this is not a program binary", f);
        } else { /* bad magic */
            fseek(f, 0, SEEK_SET);
            fputs("XXXX", f);
        }
        fclose(f);
        dev = open_with_cache(dir);
        ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", opt, &p));
        ck_assert_msg(clnpu_program_get_origin(p) == CLNPU_PROGRAM_BUILT,
                      "damage mode %d: corrupt entry was trusted", mode);
        cl_kernel k;
        ck_assert_ok(clnpu_program_create_kernel(p, "clnpu_axpby_f32", (void **)&k));
        clReleaseKernel(k);
        clnpu_device_close(dev);
        ck_assert_int_eq(stat(path, &sb), 0);
        ck_assert_int_eq(sb.st_size, good_size); /* rewritten whole */
        dev = open_with_cache(dir);
        ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", opt, &p));
        ck_assert_int_eq(clnpu_program_get_origin(p), CLNPU_PROGRAM_DISK_CACHE);
        clnpu_device_close(dev);
    }
    test_rmdir(dir);
}
END_TEST

START_TEST(test_build_error_log)
{
    static const char broken[] =
        "__kernel void k(__global float *y) {\n"
        "    y[get_global_id(0)] = undefined_thing + ;\n"
        "}\n";
    clnpu_program *p = NULL;
    clnpu_status st = clnpu_program_get_source(test_device(), "broken.cl", broken, NULL, &p);
    ck_assert_int_eq(st, CLNPU_ERR_BUILD);
    ck_assert_ptr_null(p);
    const char *msg = clnpu_error_message();
    ck_assert_msg(strstr(msg, "broken.cl") && strstr(msg, "build log"), "message: %s", msg);
    /* The compiler's own words, pointing at line 2. */
    ck_assert_msg(strstr(msg, "error") && strstr(msg, ":2:"), "no compiler diagnostics in: %s", msg);
}
END_TEST

START_TEST(test_no_cache_option)
{
    clnpu_device_options o = clnpu_device_options_default();
    o.no_cache = true;
    clnpu_device *dev;
    ck_assert_ok(clnpu_device_open(0, &o, &dev));
    ck_assert_str_eq(clnpu_device_cache_dir(dev), "");
    clnpu_program *p;
    ck_assert_ok(clnpu_program_get(dev, "elementwise.cl", NULL, &p));
    ck_assert_int_eq(clnpu_program_get_origin(p), CLNPU_PROGRAM_BUILT);
    ck_assert_str_eq(clnpu_program_cache_path(p), "");
    clnpu_device_close(dev);
}
END_TEST

/* A dry pass builds and runs nothing and lists what a real pass would build, once per program;
 * `clnpu kernels --build-list -` (the run's helper) builds a listed program into the cache; the
 * selected program holds only its kernel. */
START_TEST(test_record_dry_pass)
{
    char dir[256], opt[64], path[512], cmd[1400], out[4096], want[256];
    test_mkdtemp(dir, sizeof dir);
    nonce_option(opt, sizeof opt);
    clnpu_device *dev = open_with_cache(dir);
    clnpu_buffer *b;
    float v = 42.0f, got = -1.0f;
    ck_assert_ok(clnpu_buffer_create(dev, sizeof v, &b));
    ck_assert_ok(clnpu_buffer_write(b, 0, &v, sizeof v));
    clnpu_device_record_start(dev);
    ck_assert(clnpu_device_recording(dev));
    const char *only[] = {"clnpu_fill_f32", NULL};
    clnpu_program *p, *p2;
    ck_assert_ok(clnpu_program_get_kernels(dev, "elementwise.cl", opt, only, &p));
    ck_assert_ok(clnpu_program_get_kernels(dev, "elementwise.cl", opt, only, &p2));
    ck_assert_ok(clnpu_buffer_read(b, 0, &got, sizeof got));
    ck_assert_msg(got == -1.0f, "a dry pass read %g", got);
    char *list;
    size_t n;
    ck_assert_ok(clnpu_device_record_stop(dev, &list, &n));
    ck_assert(!clnpu_device_recording(dev));
    ck_assert_uint_eq(n, 1);
    snprintf(want, sizeof want, "elementwise.cl\t%s -DCLNPU_ONLY=1 -DCLNPU_ONLY_clnpu_fill_f32=1\n", opt);
    ck_assert_str_eq(list, want);
    ck_assert_uint_eq(clnpu_device_program_stats(dev).built, 0);
    ck_assert_ok(clnpu_buffer_read(b, 0, &got, sizeof got));
    ck_assert(got == 42.0f);
    clnpu_buffer_destroy(b);
    clnpu_device_close(dev);

    snprintf(path, sizeof path, "%s/list", dir);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(list, f);
    fclose(f);
    free(list);
    snprintf(cmd, sizeof cmd, "CLNPU_CACHE_DIR='%s' '%s' kernels --build-list - --part 0/1 < '%s'", dir, CLNPU_CLI_PATH, path);
    ck_assert_msg(test_run(cmd, out, sizeof out) == 0, "%s", out);
    dev = open_with_cache(dir);
    ck_assert_ok(clnpu_program_get_kernels(dev, "elementwise.cl", opt, only, &p));
    ck_assert_int_eq(clnpu_program_get_origin(p), CLNPU_PROGRAM_DISK_CACHE);
    cl_kernel k;
    ck_assert_ok(clnpu_program_create_kernel(p, "clnpu_fill_f32", (void **)&k));
    clReleaseKernel(k);
    ck_assert_int_ne(clnpu_program_create_kernel(p, "clnpu_copy_f32", (void **)&k), CLNPU_OK);
    clnpu_device_close(dev);
    /* a damaged list is refused with its line */
    snprintf(cmd, sizeof cmd, "echo nonsense | CLNPU_CACHE_DIR='%s' '%s' kernels --build-list -", dir, CLNPU_CLI_PATH);
    ck_assert_int_eq(test_run(cmd, out, sizeof out), 1);
    ck_assert_msg(strstr(out, "build list line 1"), "%s", out);
    test_rmdir(dir);
}
END_TEST

Suite *suite_program(void)
{
    Suite *s = suite_create("program");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_embedded_sources);
    tcase_add_test(tc, test_cache_cold_then_warm);
    tcase_add_test(tc, test_record_dry_pass);
    tcase_add_test(tc, test_corrupt_entry_rebuilt);
    tcase_add_test(tc, test_build_error_log);
    tcase_add_test(tc, test_no_cache_option);
    suite_add_tcase(s, tc);
    return s;
}
