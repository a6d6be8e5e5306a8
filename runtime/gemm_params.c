/* GEMM parameters per launch: defaults derived from the device, overridden by tuning entries
 * (and $CLNPU_GEMM for experiments), then clamped to what the kernel accepts. Each parameter
 * remembers its source, which `--verbose` prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clnpu/profile.h"
#include "gemm_params.h"

static const char *const names[CLNPU_GP_COUNT] = {"mr", "nb", "mb", "kc", "kacc", "ksplit"};

const char *clnpu_gemm_param_name(clnpu_gemm_param p) { return names[p]; }

const char *clnpu_gemm_class(const clnpu_gemm_shape *s)
{
    /* grouped: m is the rows per matrix (a decode step's experts take 1-8 and stream their
     * weights; a prompt's take more and reuse them, which wants other blocks) */
    if (s->grouped) return s->m <= 8 ? "grouped" : "grouped_prefill";
    return s->m == 1 ? "gemv" : s->m <= 8 ? "decode" : "prefill";
}

/* PoCL's CPU device, bound to its own profile: the kernels are sized from the ISA class. A device
 * emulating an NPU profile, or a GPU, keeps the profile's tiles. */
static bool derive_from_isa(const clnpu_device *dev)
{
    return clnpu_device_get_info(dev)->type == CLNPU_DEVICE_TYPE_CPU && !clnpu_device_is_emulated(dev);
}

unsigned clnpu_gemm_panel_width(const clnpu_device *dev)
{
    if (derive_from_isa(dev)) return clnpu_device_get_isa(dev)->lanes >= 16 ? 16 : 8;
    return clnpu_device_get_profile(dev)->kernel.tile_n == 8 ? 8 : 16;
}

static void set(clnpu_gemm_params *p, clnpu_gemm_param i, int v, const char *src)
{
    p->v[i] = v;
    p->src[i] = src;
}

/* Register block height for a device: the accumulators (MR x NB panels of NR lanes, NR / lanes
 * registers each) get what the ISA's registers leave after the weight rows, broadcasts and
 * addresses. 32 registers (AVX-512): 20 accumulators, MR 10 x 2 panels — what `clnpu tune` chose
 * on the AVX-512 Xeon and on Zen 5 (MR 12 = 24 spills under PoCL's register allocator); 16
 * registers (AVX2): 12, OpenBLAS's Haswell kernel's count (4 x 24). */
static unsigned derived_mr(const clnpu_device_isa *isa, unsigned nr, unsigned panels)
{
    const unsigned accs = isa->registers >= 32 ? isa->registers - 12 : isa->registers - 4;
    const unsigned vecs = nr > isa->lanes ? nr / isa->lanes : 1;
    unsigned mr = accs / (panels * vecs);
    return mr < 1 ? 1 : mr > 12 ? 12 : mr;
}

static void derived(const clnpu_device *dev, const clnpu_gemm_shape *s, clnpu_gemm_params *p)
{
    const clnpu_device_isa *isa = clnpu_device_get_isa(dev);
    const char *d = "derived";
    const bool two = !s->grouped && !s->pair; /* NB = 2 possible */
    const unsigned mrmax = derived_mr(isa, s->nr, two || s->pair ? 2 : 1);
    set(p, CLNPU_GP_NB, two && s->m > 1 ? 2 : 1, d);
    if (s->m == 1) { /* a stream over W */
        set(p, CLNPU_GP_MR, 1, d);
        set(p, CLNPU_GP_NB, 1, d);
        set(p, CLNPU_GP_MB, 1, d);
        set(p, CLNPU_GP_KC, 0, d);
        return;
    }
    unsigned mr = s->m < mrmax ? (unsigned)s->m : mrmax;
    set(p, CLNPU_GP_MR, (int)mr, d);
    /* K block: the weight slice a work-item walks (KC x NR x panels in the packed dtype) as large
     * as the L1d (on Zen 5, f32: KC 384 beat 128, half the L1d, by 1.1-1.3x at 512x576x7168 and
     * 512x2048x7168: the slice streams through once per row block, the X rows are the reused
     * operand); the X slice of the MB row blocks (MB x MR x KC floats) half the L2. */
    /* int8 / fp8 slices are widened to f32 in L1 first (gemm.cl's WIDEN): 4 bytes an element */
    const bool widened = s->dtype == CLNPU_DTYPE_I8 || s->dtype == CLNPU_DTYPE_FP8_E4M3;
    const size_t es = widened ? sizeof(float) : clnpu_dtype_size(s->dtype), panels = (two ? 2 : 1) + (s->pair ? 1 : 0);
    const size_t l1 = isa->l1d_bytes ? isa->l1d_bytes : 32768, l2 = isa->l2_bytes ? isa->l2_bytes : 262144;
    size_t kc = l1 / (s->nr * panels * es) / 128 * 128;
    kc = kc < 128 ? 128 : kc > 1024 ? 1024 : kc;
    size_t mb = l2 / 2 / (mr * kc * sizeof(float));
    const size_t blocks = (s->m + mr - 1) / mr;
    if (mb > blocks) mb = blocks;
    if (mb > 16) mb = 16;
    /* keep enough work-items for the compute units: 4 per unit, as for split-K */
    const size_t cu = clnpu_device_get_info(dev)->compute_units, want = 4 * (cu ? cu : 1);
    const size_t cols = (s->n + s->nr - 1) / s->nr / (two ? 2 : 1);
    while (mb > 1 && cols * ((blocks + mb - 1) / mb) < want) mb--;
    if (mb < 1) mb = 1;
    set(p, CLNPU_GP_MB, (int)mb, d);
    set(p, CLNPU_GP_KC, (int)kc, d);
}

static void from_profile(const clnpu_device *dev, const clnpu_gemm_shape *s, clnpu_gemm_params *p)
{
    int t = clnpu_device_get_profile(dev)->kernel.tile_m;
    unsigned mr = t < 1 ? 6 : t > 8 ? 8 : (unsigned)t;
    if (s->pair) mr = mr / 2 ? mr / 2 : 1; /* two accumulator sets */
    if (s->m == 1) mr = 1;
    set(p, CLNPU_GP_MR, (int)mr, "profile");
    set(p, CLNPU_GP_NB, 1, "kernel");
    set(p, CLNPU_GP_MB, 1, "kernel");
    set(p, CLNPU_GP_KC, 0, "kernel");
}

/* $CLNPU_GEMM="mr=10,nb=2,mb=8,kc=256": for measuring by hand; wins over everything.
 * $CLNPU_GEMM_GEMV, _DECODE, _GROUPED, _PREFILL: the same for one shape class only (a decode
 * step runs gemv and grouped launches; measuring one class's change needs the other kept). */
static void from_env_var(clnpu_gemm_params *p, const char *e)
{
    if (!e || !*e) return;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", e);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(t, '=');
        if (!eq) continue;
        *eq = '\0';
        for (int i = 0; i < CLNPU_GP_COUNT; i++)
            if (!strcmp(t, names[i])) set(p, (clnpu_gemm_param)i, atoi(eq + 1), "env");
    }
}

static void from_env(const clnpu_gemm_shape *s, clnpu_gemm_params *p)
{
    from_env_var(p, getenv("CLNPU_GEMM"));
    char name[32];
    const char *cls = clnpu_gemm_class(s);
    size_t n = (size_t)snprintf(name, sizeof name, "CLNPU_GEMM_");
    for (size_t i = 0; cls[i] && n + 1 < sizeof name; i++) name[n++] = (char)(cls[i] >= 'a' && cls[i] <= 'z' ? cls[i] - 32 : cls[i]);
    name[n] = '\0';
    from_env_var(p, getenv(name));
}

void clnpu_gemm_params_choose(clnpu_device *dev, const clnpu_gemm_shape *s, const clnpu_tuning_entry *te,
                              clnpu_gemm_params *p)
{
    memset(p, 0, sizeof *p);
    set(p, CLNPU_GP_KACC, 0, "kernel");
    set(p, CLNPU_GP_KSPLIT, -1, "kernel");
    if (derive_from_isa(dev)) derived(dev, s, p);
    else from_profile(dev, s, p);
    if (te) {
        char key[384];
        clnpu_tuning_device_key(dev, key, sizeof key);
        const char *src = !strcmp(te->device_key, key) ? "tuned" : "nearest";
        for (int i = 0; i < CLNPU_GP_COUNT; i++) {
            const int none = -1000;
            int v = clnpu_tuning_param(te, names[i], none);
            if (v != none) set(p, (clnpu_gemm_param)i, v, src);
        }
    }
    from_env(s, p);
    /* what the kernel accepts */
    int *v = p->v;
    if (s->m == 1 && strcmp(p->src[CLNPU_GP_MR], "env")) v[CLNPU_GP_MR] = 1; /* one row: a stream over W */
    if (v[CLNPU_GP_MR] < 1) v[CLNPU_GP_MR] = 1;
    if (v[CLNPU_GP_MR] > 16) v[CLNPU_GP_MR] = 16;
    if (s->pair || s->grouped || v[CLNPU_GP_NB] != 2) v[CLNPU_GP_NB] = 1;
    if (v[CLNPU_GP_MB] < 1) v[CLNPU_GP_MB] = 1;
    if (v[CLNPU_GP_MB] > 16) v[CLNPU_GP_MB] = 16;
    const size_t blocks = (s->m + (size_t)v[CLNPU_GP_MR] - 1) / (size_t)v[CLNPU_GP_MR];
    if ((size_t)v[CLNPU_GP_MB] > blocks) v[CLNPU_GP_MB] = (int)blocks; /* no empty blocks */
    if (v[CLNPU_GP_KC] > 0) v[CLNPU_GP_KC] = (v[CLNPU_GP_KC] + 127) / 128 * 128;
    /* A KC of K or more is one K block; it stays as chosen (not "all of K"), so 8- and 16-bit
     * weights widen a slice of a fixed size (kernels-cl/gemm.cl) and the variant is the same
     * for every K it covers. */
    if (v[CLNPU_GP_MB] == 1 || v[CLNPU_GP_KC] <= 0) v[CLNPU_GP_KC] = 0;
    if (v[CLNPU_GP_KACC] < 0 || v[CLNPU_GP_KACC] > 16) v[CLNPU_GP_KACC] = 0;
    if (v[CLNPU_GP_KSPLIT] > 1) v[CLNPU_GP_KSPLIT] = 1;
}

void clnpu_gemm_params_describe(const clnpu_gemm_params *p, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int i = 0; i < CLNPU_GP_COUNT && n < cap; i++) {
        const int v = p->v[i];
        char val[16];
        if (i == CLNPU_GP_KC && v == 0) snprintf(val, sizeof val, "K");
        else if ((i == CLNPU_GP_KACC && v == 0) || (i == CLNPU_GP_KSPLIT && v < 0)) snprintf(val, sizeof val, "auto");
        else snprintf(val, sizeof val, "%d", v);
        n += (size_t)snprintf(out + n, cap - n, "%s%s %s (%s)", i ? ", " : "", names[i], val, p->src[i]);
    }
}
