/* `clnpu devices`: every OpenCL device, its capabilities and the profile it binds to. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static const char usage[] = "clnpu devices [--yaml] [--target NAME] [--targets-dir DIR]";

static void print_text(const clnpu_device_info *d, const clnpu_profile *p, bool matched,
                       bool emulated)
{
    char mem[32], local[32], cap[32], budget[32];
    cli_format_bytes((double)d->global_mem_bytes, mem, sizeof mem);
    cli_format_bytes((double)d->local_mem_bytes, local, sizeof local);
    printf("[%zu] %s\n", d->index, d->name);
    printf("    platform     %s (%s)\n", d->platform_name, d->platform_version);
    printf("    vendor       %s, driver %s, %s\n", d->vendor, d->driver_version, d->opencl_c_version);
    printf("    type         %s, %u compute units @ %u MHz\n", clnpu_device_type_name(d->type),
           d->compute_units, d->clock_mhz);
    printf("    memory       %s global, %s local%s, max work-group %zu\n", mem, local,
           d->local_mem_is_global ? " (emulated in global)" : "", d->max_work_group_size);
    printf("    features     fp16 %s, fp64 %s, int dot %s, sub-groups %s, float vector %u\n",
           d->fp16 ? "yes" : "no", d->fp64 ? "yes" : "no", d->int_dot_product ? "yes" : "no",
           d->subgroups || d->subgroup_size_count ? "yes" : "no", d->pref_vector_width_float);
    printf("    profile      %s (%s)%s\n", p->name, p->class_name,
           emulated ? " EMULATED" : matched ? "" : " (no profile matched: generic from capabilities)");
    clnpu_capability c;
    clnpu_capability_compute(d, p, emulated, &c);
    printf("    kernels      %s family (%s)", clnpu_kernel_family_name(c.family), c.reason);
    if (c.family == CLNPU_KERNEL_FAMILY_WG)
        printf(", reductions %u wide, GEMM tile %ux%ux%u by %ux%u threads, %zu B local", c.wg_size, c.gemm.mwg,
               c.gemm.nwg, c.gemm.kwg, c.gemm.mdimc, c.gemm.ndimc, clnpu_gemm_wg_local_bytes(&c.gemm, false));
    printf("\n");
    if (emulated) {
        uint64_t c = (uint64_t)p->memory_bytes < d->global_mem_bytes ? (uint64_t)p->memory_bytes
                                                                    : d->global_mem_bytes;
        uint64_t b = p->kernel.local_mem_bytes > 0 ? (uint64_t)p->kernel.local_mem_bytes
                                                   : (uint64_t)p->sram_bytes;
        if (!b || b > d->local_mem_bytes) b = d->local_mem_bytes;
        cli_format_bytes((double)c, cap, sizeof cap);
        cli_format_bytes((double)b, budget, sizeof budget);
        printf("    emulation    memory capped at %s, local-memory budget %s, kernel tiles %dx%dx%d\n",
               cap, budget, p->kernel.tile_m, p->kernel.tile_n, p->kernel.tile_k);
    }
}

static void print_yaml(clnpu_yaml *y, const clnpu_device_info *d, const clnpu_profile *p,
                       bool matched, bool emulated)
{
    clnpu_yaml_map_begin(y);
    clnpu_yaml_kv_int(y, "index", (long long)d->index);
    clnpu_yaml_kv_str(y, "platform", d->platform_name);
    clnpu_yaml_kv_str(y, "platform_version", d->platform_version);
    clnpu_yaml_kv_str(y, "name", d->name);
    clnpu_yaml_kv_str(y, "vendor", d->vendor);
    clnpu_yaml_kv_str(y, "driver_version", d->driver_version);
    clnpu_yaml_kv_str(y, "opencl_c_version", d->opencl_c_version);
    clnpu_yaml_kv_str(y, "type", clnpu_device_type_name(d->type));
    clnpu_yaml_kv_int(y, "compute_units", d->compute_units);
    clnpu_yaml_kv_int(y, "clock_mhz", d->clock_mhz);
    clnpu_yaml_kv_int(y, "global_mem_bytes", (long long)d->global_mem_bytes);
    clnpu_yaml_kv_int(y, "local_mem_bytes", (long long)d->local_mem_bytes);
    clnpu_yaml_kv_int(y, "max_alloc_bytes", (long long)d->max_alloc_bytes);
    clnpu_yaml_kv_int(y, "max_work_group_size", (long long)d->max_work_group_size);
    clnpu_yaml_kv_int(y, "preferred_vector_width_float", d->pref_vector_width_float);
    clnpu_yaml_kv_bool(y, "fp16", d->fp16);
    clnpu_yaml_kv_bool(y, "fp64", d->fp64);
    clnpu_yaml_kv_bool(y, "integer_dot_product", d->int_dot_product);
    clnpu_yaml_kv_str(y, "profile", p->name);
    clnpu_yaml_kv_bool(y, "profile_matched", matched);
    clnpu_yaml_kv_bool(y, "emulated", emulated);
    clnpu_capability c;
    clnpu_capability_compute(d, p, emulated, &c);
    clnpu_yaml_kv_str(y, "kernel_family", clnpu_kernel_family_name(c.family));
    clnpu_yaml_kv_bool(y, "subgroups", d->subgroups);
    clnpu_yaml_kv_int(y, "max_num_subgroups", d->max_num_subgroups);
    if (emulated) clnpu_yaml_kv_int(y, "emulated_memory_bytes", (long long)p->memory_bytes);
    clnpu_yaml_map_end(y);
}

int cmd_devices(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"yaml", no_argument, NULL, 'y'}, {"help", no_argument, NULL, 'h'},
        {"target", required_argument, NULL, 't'}, {"targets-dir", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0}};
    bool yaml = false;
    const char *target = NULL, *dir = NULL;
    int opt;
    opterr = 0;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'y': yaml = true; break;
        case 't': target = optarg; break;
        case 'd': dir = optarg; break;
        case 'h':
            printf("usage: %s\n\nLists every OpenCL device with its capabilities and the target "
                   "profile it binds to.\n  --yaml          machine-readable output\n"
                   "  --target NAME   bind this profile to every device (shows emulation limits)\n"
                   "  --targets-dir D load extra profiles from D/*.yaml\n", usage);
            return CLI_EXIT_OK;
        default: return cli_usage_error("devices", usage, "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) return cli_usage_error("devices", usage, "unexpected argument '%s'", argv[optind]);

    clnpu_profile_set *set = NULL;
    clnpu_status st = clnpu_profile_set_builtin(&set);
    if (!st && dir) st = clnpu_profile_set_add_dir(set, dir);
    const clnpu_profile *forced = NULL;
    if (!st && target && !(forced = clnpu_profile_set_find(set, target)))
        st = CLNPU_ERR_NOT_FOUND, fprintf(stderr, "clnpu devices: no target profile named '%s'\n", target);
    clnpu_device_info *infos = NULL;
    size_t n = 0;
    if (!st) st = clnpu_device_list(&infos, &n);
    if (st) {
        clnpu_profile_set_destroy(set);
        return forced || !target ? cli_fail("devices", st) : CLI_EXIT_FAIL;
    }
    clnpu_yaml *y = yaml ? clnpu_yaml_begin(stdout) : NULL;
    if (y) clnpu_yaml_seq_begin(y);
    for (size_t i = 0; i < n; i++) {
        clnpu_profile p;
        bool matched = false, emulated = false;
        if (forced) {
            p = *forced;
            matched = clnpu_profile_matches(forced, &infos[i]);
            emulated = !matched && strcmp(forced->name, "generic");
        } else {
            clnpu_profile_match(set, &infos[i], &p, &matched);
        }
        if (y) print_yaml(y, &infos[i], &p, matched, emulated);
        else print_text(&infos[i], &p, matched, emulated);
    }
    int rc = CLI_EXIT_OK;
    if (y) {
        clnpu_yaml_seq_end(y);
        if (!clnpu_yaml_end(y)) { fprintf(stderr, "clnpu devices: YAML output failed\n"); rc = CLI_EXIT_FAIL; }
    }
    clnpu_device_list_free(infos);
    clnpu_profile_set_destroy(set);
    return rc;
}
