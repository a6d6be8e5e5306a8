/* The vector ISA class of a device: what register blocks are sized for. Read from what the device
 * reports (PoCL names its LLVM CPU in the device name, "pthread-<cpu>-<model>"; the native float
 * vector width) and, for CPU devices, from the host's caches (sysconf) and CPU family
 * (/proc/cpuinfo): for PoCL's CPU device the host is the device. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clnpu/device.h"

/* LLVM CPU names with AVX-512 (32 vector registers of 16 f32 lanes). */
static const char *const avx512_cpus[] = {
    "skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client", "icelake-server",
    "tigerlake",      "sapphirerapids", "alderlake-avx512", "rocketlake", "graniterapids", "emeraldrapids",
    "znver4",         "znver5",      "x86-64-v4", "knl", "knm",
};
/* LLVM CPU names with AVX2 (16 registers of 8 lanes). */
static const char *const avx2_cpus[] = {
    "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "znver1", "znver2",
    "znver3",  "x86-64-v3", "bdver4",  "core-avx2", "gracemont",
};

static bool in_list(const char *cpu, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(cpu, list[i])) return true;
    return false;
}

void clnpu_isa_llvm_cpu(const char *device_name, char *out, size_t cap)
{
    out[0] = '\0';
    static const char *const prefixes[] = {"pthread-", "cpu-", "basic-", "tbb-", "cpu-minimal-"};
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i]);
        if (strncmp(device_name, prefixes[i], n)) continue;
        const char *s = device_name + n;
        /* the CPU name ends at the first '-' that is not part of a known name (skylake-avx512) */
        size_t best = 0;
        for (size_t j = 0; j < sizeof avx512_cpus / sizeof avx512_cpus[0]; j++) {
            size_t m = strlen(avx512_cpus[j]);
            if (!strncmp(s, avx512_cpus[j], m) && (s[m] == '-' || !s[m]) && m > best) best = m;
        }
        for (size_t j = 0; j < sizeof avx2_cpus / sizeof avx2_cpus[0]; j++) {
            size_t m = strlen(avx2_cpus[j]);
            if (!strncmp(s, avx2_cpus[j], m) && (s[m] == '-' || !s[m]) && m > best) best = m;
        }
        if (!best) best = strcspn(s, "-");
        snprintf(out, cap, "%.*s", (int)(best < cap ? best : cap - 1), s);
        return;
    }
}

const char *clnpu_isa_class_of(const char *llvm_cpu, clnpu_device_type type, unsigned native_float)
{
    if (type == CLNPU_DEVICE_TYPE_GPU) return "gpu";
    if (type != CLNPU_DEVICE_TYPE_CPU) return "accelerator";
    if (llvm_cpu[0]) {
        if (in_list(llvm_cpu, avx512_cpus, sizeof avx512_cpus / sizeof avx512_cpus[0])) return "avx512";
        if (in_list(llvm_cpu, avx2_cpus, sizeof avx2_cpus / sizeof avx2_cpus[0])) return "avx2";
    }
    /* unknown name: the vector width the driver reports */
    return native_float >= 16 ? "avx512" : native_float >= 8 ? "avx2" : "vec4";
}

/* "AuthenticAMD 26/2": vendor_id, cpu family and model of the first processor. */
static void host_cpu(char *out, size_t cap)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256], vendor[64] = "", fam[16] = "", model[16] = "";
    while (fgets(line, sizeof line, f) && !(vendor[0] && fam[0] && model[0])) {
        char *c = strchr(line, ':');
        if (!c) continue;
        char *v = c + 1 + strspn(c + 1, " \t");
        v[strcspn(v, "\n")] = '\0';
        if (!strncmp(line, "vendor_id", 9) && !vendor[0]) snprintf(vendor, sizeof vendor, "%s", v);
        else if (!strncmp(line, "cpu family", 10) && !fam[0]) snprintf(fam, sizeof fam, "%s", v);
        else if (!strncmp(line, "model\t", 6) && !model[0]) snprintf(model, sizeof model, "%s", v);
    }
    fclose(f);
    if (vendor[0]) snprintf(out, cap, "%s %s/%s", vendor, fam, model);
}

void clnpu_device_isa_of(const clnpu_device_info *info, clnpu_device_isa *out)
{
    memset(out, 0, sizeof *out);
    clnpu_isa_llvm_cpu(info->name, out->llvm_cpu, sizeof out->llvm_cpu);
    snprintf(out->name, sizeof out->name, "%s",
             clnpu_isa_class_of(out->llvm_cpu, info->type, info->native_vector_width_float));
    const bool avx512 = !strcmp(out->name, "avx512"), avx2 = !strcmp(out->name, "avx2");
    out->lanes = avx512 ? 16 : avx2 ? 8 : 4;
    out->registers = avx512 ? 32 : 16;
    if (info->type == CLNPU_DEVICE_TYPE_CPU) {
        long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
        out->l1d_bytes = l1 > 0 ? (uint64_t)l1 : 32768;
        out->l2_bytes = l2 > 0 ? (uint64_t)l2 : 262144;
        host_cpu(out->cpu, sizeof out->cpu);
    }
}
