/* Shared helpers of the clnpu command-line tool. */
#ifndef CLNPU_CLI_H
#define CLNPU_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "clnpu/clnpu.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

/* Print "clnpu CMD: message" and the usage line to stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Print the library's last error for a failed call; returns CLI_EXIT_FAIL. A caller's own
 * failure clears the message first (clnpu_error_clear) and gets the status's plain meaning. */
int cli_fail(const char *cmd, clnpu_status st);
/* Print "clnpu CMD: error: message" for a failure of the tool itself; returns CLI_EXIT_FAIL. */
int cli_fail_msg(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A whole regular file of at most max bytes, NUL-terminated (free it); NULL with a message in err
 * for anything else (missing, a directory, FIFO or device: never blocks, never reads /dev/zero). */
char *cli_read_file(const char *path, size_t max, size_t *len, char *err, size_t errcap);
/* Parse a non-negative integer argument; false if malformed. */
bool cli_parse_size(const char *s, size_t *out);
/* Parse a finite number in [lo, hi] (the whole argument; NaN and Inf refused); false if not. */
bool cli_parse_double(const char *s, double lo, double hi, double *out);
void cli_format_bytes(double bytes, char *out, size_t cap);

/* Common device selection flags: --device N, --target NAME, --targets-dir DIR, --no-cache. */
typedef struct cli_device_args {
    size_t device;
    const char *target;
    const char *targets_dir;
    bool no_cache;
} cli_device_args;

enum { CLI_OPT_DEVICE = 1000, CLI_OPT_TARGET, CLI_OPT_TARGETS_DIR, CLI_OPT_NO_CACHE, CLI_OPT_FIRST_FREE };
#define CLI_DEVICE_LONGOPTS                                                                        \
    {"device", required_argument, NULL, CLI_OPT_DEVICE},                                           \
        {"target", required_argument, NULL, CLI_OPT_TARGET},                                       \
        {"targets-dir", required_argument, NULL, CLI_OPT_TARGETS_DIR},                             \
        {"no-cache", no_argument, NULL, CLI_OPT_NO_CACHE}
#define CLI_DEVICE_USAGE "[--device N] [--target NAME] [--targets-dir DIR] [--no-cache]"
/* Handle one of the device options: 1 handled, 0 not a device option, -1 bad value. */
int cli_device_option(int opt, const char *arg, cli_device_args *a);
/* The same in a getopt loop: 1 handled (continue), 0 not a device option, or minus the usage
 * exit code after printing the error (return its negation). */
int cli_device_option_checked(int opt, const char *arg, cli_device_args *a, const char *cmd, const char *usage);

/* Open the device chosen by the flags (loading extra profiles if asked). */
clnpu_status cli_open_device(const cli_device_args *a, bool profiling, clnpu_device **out);

/* MPI for `run --plan` under mpirun (tools/cli_mpi.c): begin initialises MPI when Open MPI's launcher
 * started more than one rank and gives the communicator for clnpu_pipeline_create_mpi (NULL for one
 * process); end finalises after success and, after a failure, ends the whole job (MPI_Abort, never
 * returns). The fault hooks are for the tests (CLNPU_FAULT_RANK). */
int cli_mpi_ranks_from_env(void);
clnpu_status cli_mpi_begin(const void **out_comm);
int cli_mpi_end(int rc);
int cli_mpi_rank(void);
bool cli_mpi_fault_load(void);
void cli_mpi_fault_step(void);

#include "../common/yaml_out.h"

int cmd_devices(int argc, char **argv);
int cmd_kernels(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_probe(int argc, char **argv);
int cmd_conformance(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);

/* PoCL's work-group functions for the command line argv: the generic ones for the cpu family
 * (each kernel compiled once), PoCL's default specialisation for the wg family (see the
 * definition). Call before any OpenCL call: it sets environment variables. */
void cli_opencl_env(int argc, char **argv);
#endif
