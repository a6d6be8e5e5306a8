/* Building a run's kernels ahead in helper processes (tools/cli_prebuild.c). */
#ifndef CLI_PREBUILD_H
#define CLI_PREBUILD_H
#include "cli.h"

/* What the run is about to do, for the dry pass that lists its programs. */
typedef struct cli_prebuild_pass {
    const int *ids;
    size_t n_ids, prefix;  /* ids given; how many of them are prefilled (the rest decoded) */
    bool head_all;         /* prefill computes every position's logits */
    size_t sequences, new_tokens, vocab_size, max_context;
    clnpu_sampling sampling;
} cli_prebuild_pass;

typedef struct cli_prebuild_result {
    size_t programs, helpers, failed; /* programs listed as missing; helpers run; helpers failed */
    double seconds;                   /* dry pass and helpers, wall */
} cli_prebuild_result;

/* Unless CLNPU_PREBUILD=0 or the cache is off: list the run's missing programs and, when there
 * are at least two, build them with one helper process per further CPU, this process building
 * its own share meanwhile, and wait for the helpers. Never fails the run. */
void cli_prebuild(const cli_device_args *da, clnpu_device *dev, clnpu_model *m, const cli_prebuild_pass *pass,
                  cli_prebuild_result *out);
/* Build a list ("source<TAB>extra options\n" lines, as clnpu_device_record_stop gives; freed
 * here): this process its share, one helper process per further CPU the rest; never fails. */
void cli_build_ahead(const cli_device_args *da, clnpu_device *dev, char *list, size_t count, cli_prebuild_result *out);
/* `clnpu kernels --build-list - [--part I/K]`: build lines I, I+K, ... of stdin's list. */
int cli_build_list(const cli_device_args *da, const char *part);
#endif
