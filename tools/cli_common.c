/* Argument parsing, error printing and device opening shared by clnpu subcommands. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "clnpu %s: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s\n", usage);
    return CLI_EXIT_USAGE;
}

int cli_fail_msg(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "clnpu %s: error: ", cmd);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    return CLI_EXIT_FAIL;
}

char *cli_read_file(const char *path, size_t max, size_t *len, char *err, size_t errcap)
{
    *len = 0;
    /* O_NONBLOCK: open() of a FIFO returns at once, and fstat refuses it with anything else
     * that is not a regular file (a directory, /dev/zero) */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb)) {
        snprintf(err, errcap, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errcap, "%s: not a regular file (%s)", path,
                 S_ISDIR(sb.st_mode) ? "a directory" : S_ISFIFO(sb.st_mode) ? "a FIFO" :
                 S_ISCHR(sb.st_mode) ? "a character device" : S_ISBLK(sb.st_mode) ? "a block device" : "a socket");
        close(fd);
        return NULL;
    }
    if ((size_t)sb.st_size > max) {
        snprintf(err, errcap, "%s: larger than %zu bytes", path, max);
        close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)sb.st_size + 1);
    size_t n = 0;
    ssize_t got = 0;
    while (buf && n < (size_t)sb.st_size && (got = read(fd, buf + n, (size_t)sb.st_size - n)) > 0) n += (size_t)got;
    close(fd);
    if (!buf || got < 0) {
        snprintf(err, errcap, "%s: %s", path, buf ? "read error" : "out of host memory");
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

int cli_fail(const char *cmd, clnpu_status st)
{
    const char *msg = clnpu_error_message();
    /* every failure should have set a message; if one did not, say what the status means */
    if (!*msg) msg = st == CLNPU_ERR_OUT_OF_MEMORY ? "out of host memory" : st == CLNPU_ERR_IO ? "input/output error"
                                                                                    : "failed (no details recorded)";
    fprintf(stderr, "clnpu %s: error: %s (%s)\n", cmd, msg, clnpu_status_name(st));
    return CLI_EXIT_FAIL;
}

bool cli_parse_size(const char *s, size_t *out)
{
    if (!s || *s < '0' || *s > '9') return false; /* strtoull would take " 5", "+5" and "-1" */
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || errno) return false;
    *out = (size_t)v;
    return true;
}

bool cli_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    const double v = s && *s ? strtod(s, &end) : NAN;
    /* NaN passes every < test; "1e999" is inf with ERANGE */
    if (!s || !*s || *end || errno == ERANGE || !isfinite(v) || v < lo || v > hi) return false;
    *out = v;
    return true;
}

void cli_format_bytes(double b, char *out, size_t cap)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    int u = 0;
    while (b >= 1024 && u < 5) { b /= 1024; u++; }
    snprintf(out, cap, u ? "%.1f %s" : "%.0f %s", b, unit[u]);
}

clnpu_status cli_open_device(const cli_device_args *a, bool profiling, clnpu_device **out)
{
    clnpu_device_options o = clnpu_device_options_default();
    clnpu_profile_set *set = NULL;
    if (a->targets_dir) {
        clnpu_status st = clnpu_profile_set_builtin(&set);
        if (!st) st = clnpu_profile_set_add_dir(set, a->targets_dir);
        if (st) { clnpu_profile_set_destroy(set); return st; }
        o.profiles = set;
    }
    o.target = a->target;
    o.no_cache = a->no_cache;
    o.profiling = profiling;
    clnpu_status st = clnpu_device_open(a->device, &o, out);
    clnpu_profile_set_destroy(set);
    return st;
}

int cli_device_option(int opt, const char *arg, cli_device_args *a)
{
    switch (opt) {
    case CLI_OPT_DEVICE: return cli_parse_size(arg, &a->device) ? 1 : -1;
    case CLI_OPT_TARGET: a->target = arg; return 1;
    case CLI_OPT_TARGETS_DIR: a->targets_dir = arg; return 1;
    case CLI_OPT_NO_CACHE: a->no_cache = true; return 1;
    default: return 0;
    }
}

int cli_device_option_checked(int opt, const char *arg, cli_device_args *a, const char *cmd, const char *usage)
{
    int r = cli_device_option(opt, arg, a);
    if (r == -1) return -cli_usage_error(cmd, usage, "bad value '%s' for --device", arg);
    return r;
}

void cli_opencl_env(int argc, char **argv)
{
    /* PoCL compiles each kernel twice: a generic work-group function (any launch shape) when a
     * binary is taken for clnpu's cache, always (pocl_driver_build_poclbinary), and one
     * specialised for the launch's shape (local size, zero offset, grid under 2^16) at the
     * kernel's first launch. The cpu family launches every kernel in work-groups of 1, where the
     * two are the same code but for the loop over the group's work-items around the body
     * (objdump of PoCL's cached GEMM variants: identical inner loops; the row and stretch kernels
     * take their lane count as a constant, CLNPU_LANES), so the CLI has PoCL run the generic ones:
     * each kernel is compiled once, a third less of a first run's CPU, and no launch compiles.
     * The wg family has real work-groups, where specialising pays: with CLNPU_KERNEL_FAMILY=wg, a
     * --target (NPU profiles emulate on PoCL with it) or a --plan, PoCL keeps its default and the
     * binary carries the usual shape's function too. A variable the user set stands. PoCL reads
     * its variables once, at first use: this runs before any OpenCL call. */
    const char *fam = getenv("CLNPU_KERNEL_FAMILY");
    bool wg = fam && !strcmp(fam, "wg");
    for (int i = 1; i < argc && !wg; i++)
        wg = !strcmp(argv[i], "--target") || !strncmp(argv[i], "--target=", 9) || !strcmp(argv[i], "--plan") ||
             !strncmp(argv[i], "--plan=", 7);
    if (!wg) setenv("POCL_WORK_GROUP_SPECIALIZATION", "0", 0);
    else setenv("POCL_BINARY_SPECIALIZE_WG", "1-1-1-goffs0-smallgrid", 0);
}
