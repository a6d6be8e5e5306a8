/* Building a run's kernels ahead, side by side: a dry pass through the run's prefill and decode
 * lists the programs it will ask for (clnpu_device_record_start), and helper processes
 * (`clnpu kernels --build-list -`) build the missing ones into the disk cache. Processes, not
 * threads: PoCL compiles under one process-wide lock. Helpers are an optimisation only: when one
 * fails, the run says so and builds what is still missing itself. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "cli_prebuild.h"

extern char **environ;

#define MAX_HELPERS 8

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The run's own calls with nothing launched; every sequence it touched is reset afterwards. */
static clnpu_status dry_pass(clnpu_model *m, clnpu_device *dev, const cli_prebuild_pass *r)
{
    const size_t V = r->vocab_size, P = r->prefix, T = r->n_ids;
    float *logits = calloc((r->head_all ? (P ? P : 1) : 1) * V, sizeof *logits);
    clnpu_status st = logits ? CLNPU_OK : CLNPU_ERR_OUT_OF_MEMORY;
    if (!st) st = r->head_all ? clnpu_model_prefill(m, 0, r->ids, P, logits) : clnpu_model_prefill_last(m, 0, r->ids, P, logits);
    for (size_t q = 1; !st && q < r->sequences; q++)
        st = clnpu_model_prefill_last(m, q, r->ids + q % P, P - q % P, logits);
    size_t seq = 0;
    for (size_t t = P; !st && t < T; t++) st = clnpu_model_decode(m, &seq, r->ids + t, 1, logits);
    clnpu_generator *gen = NULL;
    if (!st && r->new_tokens) {
        clnpu_generator_options go = {.model = m, .device = dev, .vocab_size = V, .max_sequences = r->sequences,
                                      .max_context = r->max_context};
        st = clnpu_generator_create(&go, &gen);
        clnpu_generate_config gc = clnpu_generate_config_default();
        gc.sampling = r->sampling, gc.max_tokens = r->new_tokens; /* no end-of-sequence: every step */
        memset(logits, 0, V * sizeof *logits);
        for (size_t q = 0; !st && q < r->sequences; q++)
            st = clnpu_generator_start_from_logits(gen, q, q ? P - q % P : T, logits, &gc);
        if (!st) st = clnpu_generator_run(gen, NULL, NULL);
    }
    clnpu_generator_destroy(gen);
    free(logits);
    for (size_t q = 0; q < r->sequences; q++) clnpu_model_reset(m, q);
    return st;
}

static void add_arg(char **argv, size_t *n, char *a) { argv[(*n)++] = a; }

/* Helper i of k: `clnpu kernels --build-list - --part i/k` with the run's device options, the
 * list on its stdin, its stdout discarded. */
static pid_t spawn_helper(const cli_device_args *da, size_t i, size_t k, int *out_fd)
{
    int fds[2];
    if (pipe(fds)) return -1;
    char part[32], devn[32], *argv[16];
    size_t n = 0;
    snprintf(part, sizeof part, "%zu/%zu", i, k);
    snprintf(devn, sizeof devn, "%zu", da->device);
    add_arg(argv, &n, "clnpu"), add_arg(argv, &n, "kernels"), add_arg(argv, &n, "--build-list"), add_arg(argv, &n, "-");
    add_arg(argv, &n, "--part"), add_arg(argv, &n, part), add_arg(argv, &n, "--device"), add_arg(argv, &n, devn);
    if (da->target) add_arg(argv, &n, "--target"), add_arg(argv, &n, (char *)da->target);
    if (da->targets_dir) add_arg(argv, &n, "--targets-dir"), add_arg(argv, &n, (char *)da->targets_dir);
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[0], STDIN_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid = -1;
    int e = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[0]);
    if (e) {
        close(fds[1]);
        errno = e;
        return -1;
    }
    *out_fd = fds[1];
    return pid;
}

static void write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* a helper that died early: its exit status says so */
        s += w, n -= (size_t)w;
    }
}

/* Which helper builds line j: the heaviest programs (GEMM variants) dealt first, each to the part
 * with the least work so far, the same way in the run and in every helper. */
static size_t weight(const char *line) { return !strncmp(line, "gemm", 4) ? 3 : !strncmp(line, "elementwise", 11) ? 1 : 2; }

static void assign(const char *list, size_t count, size_t k, size_t *part)
{
    size_t load[MAX_HELPERS + 1] = {0};
    for (size_t w = 3; w >= 1; w--) {
        size_t j = 0;
        for (const char *s = list; *s && j < count; j++) {
            if (weight(s) == w) {
                size_t best = 0;
                for (size_t p = 1; p < k; p++)
                    if (load[p] < load[best]) best = p;
                part[j] = best, load[best] += w;
            }
            const char *nl = strchr(s, '\n');
            s = nl ? nl + 1 : s + strlen(s);
        }
    }
}

void cli_prebuild(const cli_device_args *da, clnpu_device *dev, clnpu_model *m, const cli_prebuild_pass *pass,
                  cli_prebuild_result *out)
{
    memset(out, 0, sizeof *out);
    const char *env = getenv("CLNPU_PREBUILD");
    if ((env && !strcmp(env, "0")) || da->no_cache || !*clnpu_device_cache_dir(dev)) return;
    double t0 = now_s();
    clnpu_device_record_start(dev);
    clnpu_status st = dry_pass(m, dev, pass);
    char *list = NULL;
    size_t count = 0;
    if (clnpu_device_record_stop(dev, &list, &count) == CLNPU_OK && st) count = 0; /* a pass that failed lists too little */
    clnpu_error_clear();
    cli_build_ahead(da, dev, list, count, out);
    out->seconds = now_s() - t0;
}

void cli_build_ahead(const cli_device_args *da, clnpu_device *dev, char *list, size_t count, cli_prebuild_result *out)
{
    memset(out, 0, sizeof *out);
    double t0 = now_s();
    if (count < 2) { /* one program is as fast built here */
        free(list);
        return;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t k = cpus > 1 ? (size_t)cpus : 1;
    if (k > MAX_HELPERS) k = MAX_HELPERS;
    if (k > count) k = count;
    /* a helper whose pipe closes early must not kill the run with SIGPIPE */
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGPIPE, &ign, &old);
    pid_t pids[MAX_HELPERS];
    size_t started = 0;
    for (size_t i = 1; i < k; i++) { /* this process is part 0 */
        int fd = -1;
        pid_t pid = spawn_helper(da, i, k, &fd);
        if (pid < 0) {
            fprintf(stderr, "clnpu: cannot start a kernel-building helper (%s); building here\n", strerror(errno));
            break;
        }
        pids[started++] = pid;
        write_all(fd, list, strlen(list));
        close(fd);
    }
    size_t *part = calloc(count, sizeof *part);
    if (part) assign(list, count, k, part);
    size_t j = 0;
    for (char *s = list, *nl; part && *s && j < count; s = nl + 1, j++) {
        if (!(nl = strchr(s, '\n'))) break;
        *nl = '\0';
        char *tab = strchr(s, '\t');
        clnpu_program *p;
        /* a failure here is the run's own to report, at the launch that needs the program */
        if (tab && part[j] == 0 && (*tab = '\0', clnpu_program_get(dev, s, tab + 1, &p))) clnpu_error_clear();
    }
    free(part);
    for (size_t i = 0; i < started; i++) {
        int ws = 0;
        while (waitpid(pids[i], &ws, 0) < 0 && errno == EINTR) {}
        if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) continue;
        out->failed++;
        if (WIFSIGNALED(ws))
            fprintf(stderr, "clnpu: kernel-building helper %zu of %zu ended by signal %d; its part is built here\n",
                    i + 1, started, WTERMSIG(ws));
        else
            fprintf(stderr, "clnpu: kernel-building helper %zu of %zu failed (exit status %d); its part is built here\n",
                    i + 1, started, WEXITSTATUS(ws));
    }
    sigaction(SIGPIPE, &old, NULL);
    free(list);
    out->programs = count, out->helpers = started, out->seconds = now_s() - t0;
    if (!started) out->programs = 0; /* all built here, counted as the run's own builds */
}

int cli_build_list(const cli_device_args *da, const char *part_arg)
{
    size_t i = 0, k = 1;
    if (part_arg && (sscanf(part_arg, "%zu/%zu", &i, &k) != 2 || !k || i >= k))
        return cli_fail_msg("kernels", "bad --part '%s' (I/K with I < K)", part_arg);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (ssize_t r; buf; len += (size_t)r) {
        if (len + 1 == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) break;
            buf = nb;
        }
        r = read(STDIN_FILENO, buf + len, cap - 1 - len);
        if (r < 0 && errno == EINTR) r = 0;
        else if (r <= 0) break;
    }
    if (!buf) return cli_fail_msg("kernels", "out of host memory");
    buf[len] = '\0';
    size_t count = 0;
    for (const char *c = buf; *c; c++) count += *c == '\n';
    size_t *part = calloc(count + 1, sizeof *part);
    if (!part || k > MAX_HELPERS) {
        free(buf), free(part);
        return cli_fail_msg("kernels", part ? "--part: at most %d parts" : "out of host memory", MAX_HELPERS);
    }
    assign(buf, count, k, part);
    clnpu_device *dev;
    clnpu_status st = cli_open_device(da, false, &dev);
    if (st) {
        free(buf), free(part);
        return cli_fail("kernels", st);
    }
    size_t line = 0;
    char *save = NULL;
    for (char *s = strtok_r(buf, "\n", &save); !st && s && line < count; s = strtok_r(NULL, "\n", &save), line++) {
        char *tab = strchr(s, '\t');
        if (!tab) {
            free(buf), free(part);
            clnpu_device_close(dev);
            return cli_fail_msg("kernels", "build list line %zu: no tab between source and options", line + 1);
        }
        *tab = '\0';
        clnpu_program *p;
        if (part[line] == i) st = clnpu_program_get(dev, s, tab + 1, &p);
    }
    free(part);
    free(buf);
    clnpu_device_close(dev);
    return st ? cli_fail("kernels", st) : CLI_EXIT_OK;
}
