/* `clnpu kernels`: build every embedded kernel source on one device and report where each
 * program came from (compiler, disk cache) and how long it took. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] = "clnpu kernels " CLI_DEVICE_USAGE;

int cmd_kernels(int argc, char **argv)
{
    static const struct option longopts[] = {CLI_DEVICE_LONGOPTS, {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    cli_device_args da = {0};
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt == 'h') {
            printf("usage: %s\n\nBuilds every kernel embedded in libclnpu on the device, with the "
                   "bound profile's\nparameters, and reports cache hits and build times.\n", usage);
            return CLI_EXIT_OK;
        }
        int r = cli_device_option_checked(opt, optarg, &da, "kernels", usage);
        if (r == 1) continue;
        if (r < 0) return -r;
        return cli_usage_error("kernels", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
    }
    if (optind < argc) return cli_usage_error("kernels", usage, "unexpected argument '%s'", argv[optind]);

    clnpu_device *dev;
    clnpu_status st = cli_open_device(&da, false, &dev);
    if (st) return cli_fail("kernels", st);
    const clnpu_device_info *info = clnpu_device_get_info(dev);
    const char *cache = clnpu_device_cache_dir(dev);
    printf("device %zu: %s, profile %s%s\ncache: %s\n", info->index, info->name,
           clnpu_device_get_profile(dev)->name, clnpu_device_is_emulated(dev) ? " (emulated)" : "",
           *cache ? cache : "off");
    static const char *origin[] = {"built", "disk cache", "memory"};
    int rc = CLI_EXIT_OK;
    for (size_t i = 0; i < clnpu_kernel_source_count(); i++) {
        const char *name = clnpu_kernel_source_name(i);
        clnpu_program *p;
        st = clnpu_program_get(dev, name, NULL, &p);
        if (st) {
            rc = cli_fail("kernels", st);
            continue;
        }
        printf("  %-24s %-10s %8.1f ms\n", name, origin[clnpu_program_get_origin(p)],
               clnpu_program_build_ms(p));
    }
    clnpu_device_close(dev);
    return rc;
}
