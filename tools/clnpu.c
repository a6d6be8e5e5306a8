/* clnpu: command-line entry point; dispatches to one subcommand per file (cmd_*.c). */
#include <stdio.h>
#include <string.h>

#include "cli.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"devices", cmd_devices, "list OpenCL devices, their capabilities and matched target profiles"},
    {"kernels", cmd_kernels, "build every embedded kernel on a device (uses the binary cache)"},
    {"run", cmd_run, "run A.X K1: prefill a prompt, generate tokens, dump logits, stats, traces"},
    {"chat", cmd_chat, "talk with a checkpoint through its chat template; the KV cache kept between turns"},
    {"tokenize", cmd_tokenize, "text on stdin to token ids with a checkpoint's tokenizer.json"},
    {"detokenize", cmd_detokenize, "token ids on stdin back to text"},
    {"plan", cmd_plan, "split the model across a cluster: layout, stages, experts, memory, prediction"},
    {"conformance", cmd_conformance, "check every kernel A.X K1 needs on a device, tier by tier (report)"},
    {"probe", cmd_probe, "measure a device (FMA peak, bandwidth, launch latency) and write a profile"},
    {"serve", cmd_serve, "serve the model over HTTP (OpenAI API) with continuous batching"},
    {"tune", cmd_tune, "search kernel parameters per shape class into a tuning database"},
    {"bench", cmd_bench, "measure kernels: medians, GFLOP/s, GB/s, fraction of the roofline"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: clnpu [--help] [--version] <command> [options]\n\n"
               "A.X K1 inference over OpenCL on NPUs, GPUs and CPUs.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nRun 'clnpu <command> --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("clnpu %s\n", clnpu_version());
        return CLI_EXIT_OK;
    }
    cli_opencl_env(argc, argv); /* before any OpenCL call */
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "clnpu: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_EXIT_USAGE;
}
