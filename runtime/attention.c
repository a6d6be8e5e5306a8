/* Attention operators: causal flash attention for prefill, absorbed MLA decode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/error.h"
#include "clnpu/capability.h"
#include "clnpu/ops.h"
#include "clnpu/tuning.h"
#include "latent_cache.h"
#include "launch.h"
#include "rope_table.h"

static clnpu_status check_rows(const clnpu_view *v, size_t rows, size_t heads, size_t hs, size_t d,
                               const char *what)
{
    if (!v->buf) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "attention: no %s buffer", what);
    size_t need = (v->offset + (rows - 1) * v->ld + (heads - 1) * hs + d) * sizeof(float);
    if (need > clnpu_buffer_size(v->buf))
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "attention: %s needs %zu bytes, buffer has %zu",
                          what, need, clnpu_buffer_size(v->buf));
    return CLNPU_OK;
}

clnpu_status clnpu_flash_attention(clnpu_device *dev, const clnpu_attention_args *a)
{
    if (!a) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "attention: no arguments");
    if (!a->tokens || !a->heads) return CLNPU_OK;
    if (!a->dqk || !a->dv || a->dqk % 4 || a->dv % 4 || a->dqk > 1024 || a->dv > 1024)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "attention: head dims %zu / %zu must be multiples of 4 "
                          "up to 1024", a->dqk, a->dv);
    const size_t S = a->prefix + a->tokens;
    clnpu_status st = check_rows(&a->q, a->tokens, a->heads, a->q_head_stride, a->dqk, "q");
    if (!st) st = check_rows(&a->k, S, a->heads, a->k_head_stride, a->dqk, "k");
    if (!st) st = check_rows(&a->v, S, a->heads, a->v_head_stride, a->dv, "v");
    if (!st) st = check_rows(&a->o, a->tokens, a->heads, a->o_head_stride, a->dv, "o");
    if (st) return st;
    char cls[32];
    snprintf(cls, sizeof cls, "d%zu_%zu", a->dqk, a->dv);
    const clnpu_tuning_entry *te = clnpu_device_tuning_lookup(dev, "attention", "f32", cls);
    cl_mem q = clnpu_mem(a->q.buf), k = clnpu_mem(a->k.buf), v = clnpu_mem(a->v.buf), o = clnpu_mem(a->o.buf);
    cl_uint qo = (cl_uint)a->q.offset, ql = (cl_uint)a->q.ld, qh = (cl_uint)a->q_head_stride;
    cl_uint ko = (cl_uint)a->k.offset, kl = (cl_uint)a->k.ld, kh = (cl_uint)a->k_head_stride;
    cl_uint vo = (cl_uint)a->v.offset, vl = (cl_uint)a->v.ld, vh = (cl_uint)a->v_head_stride;
    cl_uint oo = (cl_uint)a->o.offset, ol = (cl_uint)a->o.ld, oh = (cl_uint)a->o_head_stride;
    cl_uint T = (cl_uint)a->tokens, P = (cl_uint)a->prefix;
    cl_float sc = a->scale;
    clnpu_karg args[] = {KARG(q), KARG(qo), KARG(ql), KARG(qh), KARG(k), KARG(ko), KARG(kl), KARG(kh),
                         KARG(v), KARG(vo), KARG(vl), KARG(vh), KARG(o), KARG(oo), KARG(ol), KARG(oh),
                         KARG(T), KARG(P), KARG(sc)};
    char opts[160];
    if (clnpu_attention_uses_registers(dev)) {
        /* Local memory is ordinary memory here: the register-blocked variant, queries in lanes. */
        /* queries per vector: the native vector's lanes unless tuned (16 lanes on an 8-lane ISA
         * spill and make the compiler warn, -Wpsabi) */
        const int lanes = clnpu_device_get_isa(dev)->lanes >= 16 ? 16 : 8;
        const int tqv = clnpu_tuning_param(te, "qv", lanes), tqg = clnpu_tuning_param(te, "qg", 1),
                  tkb = clnpu_tuning_param(te, "kb", 8);
        const size_t qv = tqv == 8 ? 8 : 16, qg = tqg == 2 ? 2 : 1, kb = tkb >= 1 && tkb <= 32 ? (size_t)tkb : 8;
        snprintf(opts, sizeof opts, "-DCLNPU_ATTN_DQK=%zu -DCLNPU_ATTN_DV=%zu -DCLNPU_ATTN_QV=%zu "
                 "-DCLNPU_ATTN_QG=%zu -DCLNPU_ATTN_KB=%zu", a->dqk, a->dv, qv, qg, kb);
        size_t g[2] = {(a->tokens + qv * qg - 1) / (qv * qg), a->heads}, l[2] = {1, 1};
        return clnpu_launch(dev, "attention.cl", opts, "clnpu_flash_attn_regs", 2, g, l, args, 19);
    }
    const char *force = getenv("CLNPU_ATTENTION");
    if (clnpu_device_capability(dev)->family == CLNPU_KERNEL_FAMILY_WG && !(force && !strcmp(force, "local"))) {
        /* The work-group kernel: a group per BQ-query tile, K / V tiles of BK rows in local
         * memory, the largest BK (64 .. 4) that fits the budget with the Q tile and scores. */
        const clnpu_capability *cap = clnpu_device_capability(dev);
        /* 16 queries per group: the BQ x DV outputs spread over 64-256 threads, 8-32 each */
        size_t wgs = cap->wg_size, bq = 16;
        if (bq > wgs) bq = wgs;
        const uint64_t budget = cap->local_mem_bytes;
        size_t bk = 64, lbytes = 0;
        for (;; bk /= 2) {
            lbytes = (bq * a->dqk + bk * (a->dqk + 1) + bk * a->dv + bq * bk + 3 * bq) * sizeof(float);
            if (lbytes <= budget || bk <= 4) break;
        }
        if (lbytes > budget)
            return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "clnpu_flash_attn_wg: a %zu-query x %zu-key tile (d %zu/%zu) needs "
                              "%zu bytes of local memory; the budget on device %zu (profile '%s') is %llu bytes", bq, bk,
                              a->dqk, a->dv, lbytes, clnpu_device_get_info(dev)->index,
                              clnpu_device_get_profile(dev)->name, (unsigned long long)budget);
        snprintf(opts, sizeof opts, "-DCLNPU_ATTN_DQK=%zu -DCLNPU_ATTN_DV=%zu -DCLNPU_ATTN_BQ=%zu -DCLNPU_ATTN_BK=%zu "
                 "-DWGS=%zu", a->dqk, a->dv, bq, bk, wgs);
        clnpu_karg wargs[20];
        memcpy(wargs, args, sizeof args);
        wargs[19] = (clnpu_karg){lbytes, NULL}; /* the __local tile area */
        size_t g[2] = {(a->tokens + bq - 1) / bq * wgs, a->heads}, l[2] = {wgs, 1};
        return clnpu_launch(dev, "attention_wg.cl", opts, "clnpu_flash_attn_wg", 2, g, l, wargs, 20);
    }
    /* Key tile rows from the local-memory budget (the emulated NPU's SRAM when emulating). */
    const uint64_t budget = clnpu_device_local_mem_budget(dev);
    size_t bk = (size_t)(budget / ((a->dqk + a->dv) * sizeof(float)));
    if (bk > 64) bk = 64;
    if (bk < 1)
        return clnpu_fail(CLNPU_ERR_UNSUPPORTED, "attention: local-memory budget %llu B cannot hold one "
                          "key/value row of %zu floats", (unsigned long long)budget, a->dqk + a->dv);
    const bool cpu = clnpu_device_capability(dev)->family == CLNPU_KERNEL_FAMILY_CPU;
    const int tbq = clnpu_tuning_param(te, "bq", 8), tbk = clnpu_tuning_param(te, "bk", 0);
    const size_t bq = tbq >= 1 && tbq <= 16 ? (size_t)tbq : 8, wg = cpu ? 1 : 32;
    if (tbk > 0 && (size_t)tbk < bk) bk = (size_t)tbk; /* never past the local-memory budget */
    snprintf(opts, sizeof opts, "-DCLNPU_ATTN_DQK=%zu -DCLNPU_ATTN_DV=%zu -DCLNPU_ATTN_BQ=%zu "
             "-DCLNPU_ATTN_BK=%zu -DCLNPU_ATTN_WG=%zu", a->dqk, a->dv, bq, bk, wg);
    const size_t groups = (a->tokens + wg * bq - 1) / (wg * bq);
    size_t g[2] = {groups * wg, a->heads}, l[2] = {wg, 1};
    return clnpu_launch(dev, "attention.cl", opts, "clnpu_flash_attn", 2, g, l, args, 19);
}

bool clnpu_attention_uses_registers(const clnpu_device *dev)
{
    const char *force = getenv("CLNPU_ATTENTION");
    if (force && !strcmp(force, "local")) return false;
    if (force && !strcmp(force, "registers")) return true;
    /* The capability table: the cpu family keeps queries in registers, the wg family tiles K / V
     * through local memory. */
    return clnpu_device_capability(dev)->family == CLNPU_KERNEL_FAMILY_CPU;
}

clnpu_status clnpu_mla_decode(clnpu_device *dev, const clnpu_mla_decode_args *a)
{
    if (!a || !a->q_abs || !a->q_pe || !a->cache || !a->block_table || !a->seq_len || !a->out)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mla decode: NULL argument");
    clnpu_status cst = clnpu_latent_cache_check(a->cache_dtype, "mla decode");
    if (cst) return cst;
    if (!a->batch || !a->heads) return CLNPU_OK;
    if (a->rank % 4 || a->rope_dim % 4 || !a->rank || !a->page_size || !a->max_seq_len)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mla decode: rank and rope dim must be multiples "
                          "of 4; page size and max_seq_len non-zero");
    const size_t B = a->batch, H = a->heads, R = a->rank;
    if (a->q_pe_rope && a->q_pe_rope->dim != a->rope_dim)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mla decode: a rope table of %zu dims for rope dim %zu",
                          a->q_pe_rope->dim, a->rope_dim);
    const size_t qps = a->q_pe_stride ? a->q_pe_stride : a->rope_dim;
    if (qps < a->rope_dim) return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mla decode: q_pe stride < rope dim");
    if (clnpu_buffer_size(a->q_abs) < B * H * R * 4 ||
        clnpu_buffer_size(a->q_pe) < (a->q_pe_offset + (B * H - 1) * qps + a->rope_dim) * 4 ||
        clnpu_buffer_size(a->out) < B * H * R * 4 || clnpu_buffer_size(a->seq_len) < B * 4 ||
        clnpu_buffer_size(a->block_table) < B * a->max_blocks * 4 ||
        a->max_seq_len > a->max_blocks * a->page_size)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "mla decode: a buffer is smaller than its shape");
    /* Heads per work-item share each cache row; chunks of the context fill the device. */
    char cls[16];
    snprintf(cls, sizeof cls, "%s", a->max_seq_len <= 1024 ? "ctx1k" : a->max_seq_len <= 4096 ? "ctx4k" :
                                    a->max_seq_len <= 32768 ? "ctx32k" : "ctx128k");
    const int thg = clnpu_tuning_param(clnpu_device_tuning_lookup(dev, "mla", "f32", cls), "hg", 8);
    const size_t hg = H < (size_t)(thg >= 1 && thg <= 16 ? thg : 8) ? H : (size_t)(thg >= 1 && thg <= 16 ? thg : 8);
    unsigned splits = a->splits;
    if (!splits) {
        size_t cus = clnpu_device_get_info(dev)->compute_units, items = B * ((H + hg - 1) / hg);
        splits = items >= 4 * cus ? 1 : (unsigned)((4 * cus + items - 1) / items);
        size_t max_by_len = (a->max_seq_len + 255) / 256; /* at least 256 rows per chunk */
        if (splits > max_by_len) splits = (unsigned)max_by_len;
        if (!splits) splits = 1;
    }
    const size_t chunk = (a->max_seq_len + splits - 1) / splits;
    /* One chunk (short contexts, decode on a few compute units): the kernel normalises and
     * writes the output itself; no partials, no merge launch. */
    clnpu_buffer *pz = NULL, *pml = NULL;
    clnpu_status st = splits == 1 ? CLNPU_OK : clnpu_buffer_create(dev, B * H * splits * R * sizeof(float), &pz);
    if (!st && splits > 1) st = clnpu_buffer_create(dev, B * H * splits * 2 * sizeof(float), &pml);
    char opts[128];
    snprintf(opts, sizeof opts, "-DCLNPU_MLA_R=%zu -DCLNPU_MLA_DR=%zu -DCLNPU_MLA_HG=%zu%s", R,
             a->rope_dim, hg, clnpu_latent_cache_define(a->cache_dtype));
    if (!st) {
        cl_mem qa = clnpu_mem(a->q_abs), qp = clnpu_mem(a->q_pe), c = clnpu_mem(a->cache),
               bt = clnpu_mem(a->block_table), sl = clnpu_mem(a->seq_len),
               mz = clnpu_mem(splits > 1 ? pz : a->out), mml = clnpu_mem(splits > 1 ? pml : a->out);
        cl_uint page = (cl_uint)a->page_size, mb = (cl_uint)a->max_blocks, h = (cl_uint)H,
                sp = splits, ch = (cl_uint)chunk, qo = (cl_uint)a->q_pe_offset, qs = (cl_uint)qps;
        cl_float sc = a->scale;
        cl_mem rt = a->q_pe_rope ? clnpu_mem(a->q_pe_rope->buf) : NULL;
        cl_uint np = a->q_pe_rope ? (cl_uint)a->q_pe_rope->positions : 0, hs = a->q_pe_layout == CLNPU_ROPE_HALF_SPLIT;
        clnpu_karg args[] = {KARG(qa), KARG(qp), KARG(qo), KARG(qs), KARG(c), KARG(page), KARG(bt), KARG(mb),
                             KARG(sl), KARG(mz), KARG(mml), KARG(h), KARG(sp), KARG(ch), KARG(sc), KARG(rt),
                             KARG(np), KARG(hs)};
        const clnpu_capability *cap = clnpu_device_capability(dev);
        if (cap->family == CLNPU_KERNEL_FAMILY_WG) {
            /* Work-group kernel: HG heads (up to 8) share each cache tile of BT rows in local
             * memory; the largest HG, then BT (32 .. 1) that fit the budget. */
            const size_t row = R + a->rope_dim, wgs = cap->wg_size;
            size_t whg = H < 8 ? H : 8, wbt = 32, lbytes = 0;
            if (whg > wgs) whg = wgs;
            for (;;) {
                lbytes = (whg * row + wbt * (row + 1) + whg * wbt + 3 * whg) * sizeof(float);
                if (lbytes <= cap->local_mem_bytes) break;
                if (wbt > 4) wbt /= 2;
                else if (whg > 1) whg /= 2;
                else if (wbt > 1) wbt /= 2;
                else break;
            }
            if (lbytes > cap->local_mem_bytes)
                st = clnpu_fail(CLNPU_ERR_UNSUPPORTED, "clnpu_mla_decode_wg: one head and one cache row of %zu floats need "
                                "%zu bytes of local memory; the budget on device %zu (profile '%s') is %llu bytes", row,
                                lbytes, clnpu_device_get_info(dev)->index, clnpu_device_get_profile(dev)->name,
                                (unsigned long long)cap->local_mem_bytes);
            char wopts[192];
            snprintf(wopts, sizeof wopts, "-DCLNPU_MLA_R=%zu -DCLNPU_MLA_DR=%zu -DCLNPU_MLA_HG=%zu -DCLNPU_MLA_BT=%zu -DWGS=%zu%s",
                     R, a->rope_dim, whg, wbt, wgs, clnpu_latent_cache_define(a->cache_dtype));
            clnpu_karg wargs[19];
            memcpy(wargs, args, sizeof args);
            wargs[18] = (clnpu_karg){lbytes, NULL}; /* the __local area */
            size_t g[3] = {(H + whg - 1) / whg * wgs, B, splits}, l[3] = {wgs, 1, 1};
            if (!st) st = clnpu_launch(dev, "mla_wg.cl", wopts, "clnpu_mla_decode_wg", 3, g, l, wargs, 19);
        } else {
            size_t g[3] = {(H + hg - 1) / hg, B, splits};
            st = clnpu_launch(dev, "mla.cl", opts, "clnpu_mla_decode", 3, g, NULL, args, 18);
        }
    }
    if (!st && splits > 1) {
        cl_mem mz = clnpu_mem(pz), mml = clnpu_mem(pml), mo = clnpu_mem(a->out);
        cl_uint h = (cl_uint)H, sp = splits;
        clnpu_karg args[] = {KARG(mz), KARG(mml), KARG(mo), KARG(h), KARG(sp)};
        size_t g[3] = {R, H, B}, l[3] = {R % 64 ? 1 : 64, 1, 1};
        st = clnpu_launch(dev, "mla.cl", opts, "clnpu_mla_combine", 3, g, l, args, 5);
    }
    /* Released now; OpenCL keeps them alive until the queued kernels are done. */
    clnpu_buffer_destroy(pz);
    clnpu_buffer_destroy(pml);
    return st;
}
