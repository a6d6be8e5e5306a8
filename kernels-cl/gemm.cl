/* GEMM / GEMV / grouped GEMM: Y[M,N] = epilogue(X[M,K] . W[N,K]^T), X in f32.
 *
 * W is uploaded once in a *panel* layout: panel p holds output columns p*NR .. p*NR+NR-1 as
 * K rows of NR contiguous values (W_packed[p][k][j] = W[p*NR+j][k], N padded with zeros).
 * One work-item owns an MR x NR block of Y and streams its panel once: per k it loads one
 * NR-wide weight row as a vector, widens/dequantises it in registers, and does MR vector FMAs
 * against broadcast X values (the BLIS micro-kernel shape; on PoCL's CPU device this register
 * blocking is what reaches the FMA peak, local-memory tiles do not). With M <= 8 the same kernel
 * is the decode GEMV: W is read exactly once, at memory speed.
 *
 * Weight dtypes (CLNPU_GEMM_WTYPE): 0 f32, 1 bf16, 2 f16 (vload_half: no cl_khr_fp16 needed),
 * 3 int8 with f32 scales per output channel (CLNPU_GEMM_QGROUP 0) or per group of QGROUP along K,
 * 4 fp8 e4m3 with one f32 scale per 128x128 block (DeepSeek-V3 FP8 checkpoint format).
 *
 * Tunables (defines with defaults; the host sets them from the target profile / tuning DB):
 *   CLNPU_GEMM_MR   rows of Y per work-item (register block height)
 *   CLNPU_GEMM_NR   panel width, 8 or 16 (vector width of the accumulators)
 *   CLNPU_GEMM_KACC independent accumulator chains along K (default 4/MR for MR < 4)
 *   CLNPU_GEMM_KSPLIT 1: the chains walk separate stretches of K (more memory streams)
 *   CLNPU_GEMM_NB   output panels per work-item in clnpu_gemm, 1 or 2 (MR x 2NR register block)
 *   CLNPU_GEMM_MB   row blocks of MR rows per work-item (cache blocking; 1 = none)
 *   CLNPU_GEMM_KC   K block walked by all MB row blocks before the next (a multiple of 128 so
 *                   quantisation blocks never straddle it)
 * Epilogue (CLNPU_GEMM_EPILOGUE): 0 Y = alpha*acc; 1 Y = alpha*acc + R (residual add);
 *   2 SwiGLU: W holds gate and up panels side by side (panel 2p = gate, 2p+1 = up, same columns),
 *     their rows interleaved: row k of the pair is the gate panel's NR values, then the up
 *     panel's (one memory stream per work-item instead of two: 1.25-1.33x for int8 GEMV on
 *     Zen 5); Y = silu(alpha*g) * (alpha*u); the intermediate g and u never touch memory.
 * Split-K: dimension 2 of the launch splits K into chunks; each writes alpha*partial into a
 * workspace [splits][M][N] that clnpu_gemm_splitk_reduce sums (deterministic order).
 */
#include "clnpu_common.h"

#ifndef CLNPU_GEMM_MR
#define CLNPU_GEMM_MR 6
#endif
#ifndef CLNPU_GEMM_NR
#define CLNPU_GEMM_NR 16
#endif
#ifndef CLNPU_GEMM_WTYPE
#define CLNPU_GEMM_WTYPE 0
#endif
#ifndef CLNPU_GEMM_QGROUP
#define CLNPU_GEMM_QGROUP 128
#endif
#ifndef CLNPU_GEMM_EPILOGUE
#define CLNPU_GEMM_EPILOGUE 0
#endif
#ifndef CLNPU_GEMM_NB
#define CLNPU_GEMM_NB 1
#endif
#ifndef CLNPU_GEMM_MB
#define CLNPU_GEMM_MB 1
#endif
#ifndef CLNPU_GEMM_KC
#define CLNPU_GEMM_KC 256
#endif
/* PAIR: a work-item streams two weight panels against the same broadcast X values — the gate and
 * up panels of SwiGLU (2p, 2p + 1), or with NB = 2 two adjacent output panels (p, p + 1; the
 * upload pads an odd panel count with a zero panel), so each broadcast feeds two vector FMAs. */
#if CLNPU_GEMM_EPILOGUE == 2
#define PAIR 1
#define GEMM_NB 1
#define Q1(p) (2 * (p))
#define Q2(p) (2 * (p) + 1)
#elif CLNPU_GEMM_NB == 2
#define PAIR 1
#define GEMM_NB 2
#define Q1(p) (p)
#define Q2(p) ((p) + 1)
#else
#define PAIR 0
#define GEMM_NB 1
#define Q1(p) (p)
#endif
#define FP8_BLOCK 128
/* elements from one packed weight row to the next: a SwiGLU pair's rows hold both panels */
#if CLNPU_GEMM_EPILOGUE == 2
#define ROW_STRIDE (2 * CLNPU_GEMM_NR)
#else
#define ROW_STRIDE CLNPU_GEMM_NR
#endif

#if CLNPU_GEMM_NR == 16
#define VF float16
#define VU uint16
#define AS_VF as_float16
#define AS_VU as_uint16
#define VLOADF vload16
#define CONVF convert_float16
#define CONVU convert_uint16
#define VLOAD_HALF vload_half16
#elif CLNPU_GEMM_NR == 8
#define VF float8
#define VU uint8
#define AS_VF as_float8
#define AS_VU as_uint8
#define VLOADF vload8
#define CONVF convert_float8
#define CONVU convert_uint8
#define VLOAD_HALF vload_half8
#else
#error "CLNPU_GEMM_NR must be 8 or 16"
#endif

#if CLNPU_GEMM_WTYPE == 0
#define WT float
#elif CLNPU_GEMM_WTYPE == 1 || CLNPU_GEMM_WTYPE == 2
#define WT ushort
#elif CLNPU_GEMM_WTYPE == 3
#define WT char
#elif CLNPU_GEMM_WTYPE == 4
#define WT uchar
#else
#error "unknown CLNPU_GEMM_WTYPE"
#endif

#if CLNPU_GEMM_WTYPE == 4
/* Vector e4m3 -> f32: normals by re-biasing the exponent (7 -> 127), subnormals as m * 2^-9,
 * the sign moved to bit 31. 0x7f / 0xff (NaN) never occur in packed weights. A statement
 * expression, not a function: see STORE_ROW on -Wpsabi. */
#define FP8_WIDEN(uin)                                                                             \
    ({                                                                                             \
        const VU u_ = (uin);                                                                       \
        const VF normal_ = AS_VF(((u_ & 0x7fu) << 20) + (120u << 23));                             \
        const VF sub_ = CONVF(u_ & 7u) * 0x1p-9f;                                                  \
        const VF r_ = select(normal_, sub_, (u_ & 0x78u) == (VU)0);                                \
        AS_VF(AS_VU(r_) | ((u_ & 0x80u) << 24));                                                   \
    })
#endif

/* One NR-wide weight row of the panel, widened to f32 (scale applied by the caller). */
#if CLNPU_GEMM_WTYPE == 0
#define LOAD_ROW(p, k) VLOADF(0, (p) + (size_t)(k) * ROW_STRIDE)
#elif CLNPU_GEMM_WTYPE == 1
#define LOAD_ROW(p, k) AS_VF(CONVU(VLOADF(0, (p) + (size_t)(k) * ROW_STRIDE)) << 16)
#elif CLNPU_GEMM_WTYPE == 2
#define LOAD_ROW(p, k) VLOAD_HALF(0, (__global const half *)((p) + (size_t)(k) * ROW_STRIDE))
#elif CLNPU_GEMM_WTYPE == 3
#define LOAD_ROW(p, k) CONVF(VLOADF(0, (p) + (size_t)(k) * ROW_STRIDE))
#elif CLNPU_GEMM_WTYPE == 4
#define LOAD_ROW(p, k) FP8_WIDEN(CONVU(VLOADF(0, (p) + (size_t)(k) * ROW_STRIDE)))
#endif

#if CLNPU_GEMM_WTYPE == 3 && CLNPU_GEMM_QGROUP > 0
#define QBLOCK CLNPU_GEMM_QGROUP
#elif CLNPU_GEMM_WTYPE == 4
#define QBLOCK FP8_BLOCK
#endif

#define MR CLNPU_GEMM_MR
#define NR CLNPU_GEMM_NR
#ifndef CLNPU_GEMM_KACC
#define CLNPU_GEMM_KACC (MR >= 4 ? 1 : 4 / MR)
#endif
#define KACC CLNPU_GEMM_KACC
#ifndef CLNPU_GEMM_KSPLIT
#if CLNPU_GEMM_WTYPE <= 2 /* f32, bf16, f16 */
#define CLNPU_GEMM_KSPLIT 1
#else
#define CLNPU_GEMM_KSPLIT 0
#endif
#endif

/* Scales are repacked per weight panel q at upload (see runtime/gemm_pack.c):
 *   int8 per channel: S[q][NR]; int8 per group: S[q][ngroups][NR]; fp8: S[q][kblocks]. */

/* Quantised weights: scale each block's sum once (one FMA per accumulator per block) instead of
 * each widened weight row (one multiply per k step) — the multiply is a fifth of an int8 GEMV's
 * vector work; it needs a second set of accumulators, so only where few are live. */
#ifndef CLNPU_GEMM_DEFER_SCALE
#define CLNPU_GEMM_DEFER_SCALE (MR * KACC * (1 + PAIR) <= 8)
#endif
#define DEFER_SCALE CLNPU_GEMM_DEFER_SCALE
#define MB CLNPU_GEMM_MB
#define KC CLNPU_GEMM_KC
/* With row blocks (MB > 1), an int8 / fp8 weight slice is widened and scaled to f32 once per K
 * block, into private memory (L1), and every row block reads it like f32 weights: the widening
 * (a fifth to a quarter of an int8 block's vector work at MR 12) is paid once per MB * MR rows
 * instead of once per MR (int8 512x12288x1536 on Zen 5: 0.86x -> 1.03x of OpenBLAS's sgemm).
 * Not for bf16 / f16, whose widening is one or two instructions: the slice's store and reload
 * cost more there (bf16 0.95x -> 0.82x). */
#define WIDEN (MB > 1 && (CLNPU_GEMM_WTYPE == 3 || CLNPU_GEMM_WTYPE == 4))

/* Stores / ragged loads of one NR-wide row. Macros, not functions: a 16-wide vector passed by
 * value to a function changes the ABI on 8-wide ISAs and makes the compiler warn (-Wpsabi). */
#if NR == 16
#define VSTORE_NR vstore16
#else
#define VSTORE_NR vstore8
#endif
#define STORE_ROW(yr, v, n0, N)                                                                    \
    do {                                                                                           \
        if ((n0) + NR <= (N)) {                                                                    \
            VSTORE_NR((v), 0, (yr)); /* needs only float alignment: ragged strides are fine */    \
        } else {                                                                                   \
            float tmp_[NR];                                                                        \
            VSTORE_NR((v), 0, tmp_);                                                               \
            for (uint j_ = 0; (n0) + j_ < (N); j_++) (yr)[j_] = tmp_[j_];                          \
        }                                                                                          \
    } while (0)
#define ADD_ROW_RAGGED(v, rr, n0, N)                                                               \
    do {                                                                                           \
        if ((n0) + NR <= (N)) {                                                                    \
            (v) += VLOADF(0, (rr));                                                                \
        } else {                                                                                   \
            float tmp_[NR];                                                                        \
            for (uint j_ = 0; j_ < NR; j_++) tmp_[j_] = (n0) + j_ < (N) ? (rr)[j_] : 0.0f;         \
            (v) += VLOADF(0, tmp_);                                                                \
        }                                                                                          \
    } while (0)

/* Weight row kk of the panel and of its pair: from the packed weights, or from the widened
 * slice of the K block that starts at kc. */
#if WIDEN
#define ROW_G(kk) wide[((kk) - kc) * (1 + PAIR)]
#define ROW_U(kk) wide[((kk) - kc) * (1 + PAIR) + 1]
#else
#define ROW_G(kk) LOAD_ROW(wg, kk)
#define ROW_U(kk) LOAD_ROW(wu, kk)
#endif

/* One k step of accumulator chain c: weight row kk of the panel (and of the paired panel),
 * scaled, against the MR rows' broadcast X values. */
#if PAIR
#define PAIR_LOAD(kk)                                                                              \
    VF w2 = ROW_U(kk);                                                                             \
    SCALE_U(w2)
#define PAIR_FMA(r, c) ACC_U[(r) * KACC + (c)] = fma(xv, w2, ACC_U[(r) * KACC + (c)])
#else
#define PAIR_LOAD(kk)
#define PAIR_FMA(r, c)
#endif
#define K_STEP(kk, c)                                                                              \
    {                                                                                              \
        const size_t kk_ = (kk);                                                                   \
        VF w = ROW_G(kk_);                                                                         \
        SCALE_G(w);                                                                                \
        PAIR_LOAD(kk_);                                                                            \
        _Pragma("unroll") for (int r = 0; r < MR; r++) {                                           \
            const VF xv = (VF)(xr[r][kk_]);                                                        \
            ACC_G[r * KACC + (c)] = fma(xv, w, ACC_G[r * KACC + (c)]);                             \
            PAIR_FMA(r, c);                                                                        \
        }                                                                                          \
    }

/* The micro-kernel, cache-blocked. A work-item owns up to MB blocks of MR rows (rows <= MB*MR)
 * against output panel p (and its pair). K is walked in blocks of KC: per block the KC x NR
 * (x2) weight slice sits in L1 while each of the MB row blocks passes over it, so W is read from
 * memory once per MB*MR rows instead of once per MR (the slice of the MB*MR rows of X, MB*MR*KC
 * floats, is what L2 holds). Between K blocks a row block's accumulators wait in `part` (private
 * memory, in L1); after the last K block the epilogue runs and Y is written. With MB = 1 and
 * KC >= K this is the plain register-blocked kernel. Wp points at this matrix's packed panels,
 * S at its per-panel scales. */
inline void gemm_tile(__global const float *X, uint ldx, __global const WT *Wp,
                      __global const float *S, __global float *Y, uint ldy,
                      __global const float *R, uint ldr, uint row0, uint rows, uint p,
                      uint k0, uint k1, uint K, uint N, float alpha)
{
    const uint qg = Q1(p);
    const __global WT *wg = Wp + (size_t)qg * K * NR;
#if PAIR
    const uint qu = Q2(p); /* the second panel: SwiGLU's up projection, or output panel p + 1 */
#if CLNPU_GEMM_EPILOGUE == 2
    const __global WT *wu = wg + NR; /* the up half of each pair row */
#else
    const __global WT *wu = Wp + (size_t)qu * K * NR;
#endif
#endif
#ifdef QBLOCK
    const uint nblocks = (K + QBLOCK - 1) / QBLOCK;
#endif
#if MB > 1
    VF part[MB * MR * (1 + PAIR)];
#endif
#if WIDEN
    VF wide[KC * (1 + PAIR)];
#endif
    const uint nb_rows = (rows + MR - 1) / MR;
    /* With one row block there is nothing to reuse a weight slice for: one K block. */
    const uint kstep = MB > 1 ? (uint)KC : k1 - k0;
    for (uint kc = k0; kc < k1; kc += kstep) {
        const uint kc1 = min(k1, kc + kstep);
#if WIDEN
        for (uint kb = kc; kb < kc1;) { /* per scale block (KC is a multiple of 128) */
#ifdef QBLOCK
            const uint kn = min(kc1, (kb / QBLOCK + 1) * QBLOCK);
#if CLNPU_GEMM_WTYPE == 3
            const VF sg = VLOADF(0, S + ((size_t)qg * nblocks + kb / QBLOCK) * NR);
#if PAIR
            const VF su = VLOADF(0, S + ((size_t)qu * nblocks + kb / QBLOCK) * NR);
#endif
#else
            const VF sg = (VF)(S[(size_t)qg * nblocks + kb / QBLOCK]);
#if PAIR
            const VF su = (VF)(S[(size_t)qu * nblocks + kb / QBLOCK]);
#endif
#endif
#else
            const uint kn = kc1;
            const VF sg = (VF)(1.0f);
#if PAIR
            const VF su = (VF)(1.0f);
#endif
#endif
            for (uint k = kb; k < kn; k++) {
                wide[(k - kc) * (1 + PAIR)] = LOAD_ROW(wg, k) * sg;
#if PAIR
                wide[(k - kc) * (1 + PAIR) + 1] = LOAD_ROW(wu, k) * su;
#endif
            }
            kb = kn;
        }
#endif
        for (uint b = 0; b < nb_rows; b++) {
            const uint rb0 = row0 + b * MR, brows = min((uint)MR, rows - b * MR);
            const __global float *xr[MR];
#pragma unroll
            for (int r = 0; r < MR; r++) /* rows past the end re-read the last row; never stored */
                xr[r] = X + (size_t)(rb0 + min((uint)r, brows - 1)) * ldx;
            VF acc[MR * KACC];
#pragma unroll
            for (int r = 0; r < MR * KACC; r++) acc[r] = (VF)(0.0f);
#if PAIR
            VF accu[MR * KACC];
#pragma unroll
            for (int r = 0; r < MR * KACC; r++) accu[r] = (VF)(0.0f);
#endif
#if defined(QBLOCK) && !WIDEN
            for (size_t kb = kc; kb < kc1;) {
#if DEFER_SCALE
                VF bacc[MR * KACC];
#pragma unroll
                for (int r = 0; r < MR * KACC; r++) bacc[r] = (VF)(0.0f);
#if PAIR
                VF baccu[MR * KACC];
#pragma unroll
                for (int r = 0; r < MR * KACC; r++) baccu[r] = (VF)(0.0f);
#endif
#endif
                const size_t kn = min((size_t)kc1, (kb / QBLOCK + 1) * QBLOCK);
#if CLNPU_GEMM_WTYPE == 3
                const VF sg = VLOADF(0, S + ((size_t)qg * nblocks + kb / QBLOCK) * NR);
#else
                const VF sg = (VF)(S[(size_t)qg * nblocks + kb / QBLOCK]);
#endif
#if PAIR
#if CLNPU_GEMM_WTYPE == 3
                const VF su = VLOADF(0, S + ((size_t)qu * nblocks + kb / QBLOCK) * NR);
#else
                const VF su = (VF)(S[(size_t)qu * nblocks + kb / QBLOCK]);
#endif
#endif
#if DEFER_SCALE
#define SCALE_G(w)
#define SCALE_U(w)
#define ACC_G bacc
#define ACC_U baccu
#else
#define SCALE_G(w) (w) *= sg
#define SCALE_U(w) (w) *= su
#define ACC_G acc
#define ACC_U accu
#endif
#else
            {
                const size_t kb = kc, kn = kc1;
#define SCALE_G(w)
#define SCALE_U(w)
#define ACC_G acc
#define ACC_U accu
#endif
                /* KACC independent accumulator chains along k hide the FMA latency when MR is
                 * small. */
#if CLNPU_GEMM_KSPLIT
                /* The KACC chains walk KACC separate stretches of the panel: several independent
                 * memory streams per work-item keep more cache-line fills in flight than one
                 * (worth ~25 % for f32 / bf16 GEMV on PoCL; the 8-bit types are bound by their
                 * decode). */
                const size_t q = (kn - kb) / KACC;
                size_t k = kb;
                for (size_t i = 0; i < q; i++, k++) {
#pragma unroll
                    for (int c = 0; c < KACC; c++) K_STEP(k + c * q, c);
                }
                k = kb + KACC * q;
#else
                size_t k = kb;
                for (; k + KACC <= kn; k += KACC) {
#pragma unroll
                    for (int c = 0; c < KACC; c++) K_STEP(k + c, c);
                }
#endif
                for (; k < kn; k++) K_STEP(k, 0);
#undef SCALE_G
#undef SCALE_U
#undef ACC_G
#undef ACC_U
#if defined(QBLOCK) && !WIDEN
#if DEFER_SCALE
#pragma unroll
                for (int r = 0; r < MR * KACC; r++) {
                    acc[r] = fma(bacc[r], sg, acc[r]);
#if PAIR
                    accu[r] = fma(baccu[r], su, accu[r]);
#endif
                }
#endif
                kb = kn;
#endif
            }
#if KACC > 1
#pragma unroll
            for (int r = 0; r < MR; r++) {
#pragma unroll
                for (int c = 1; c < KACC; c++) {
                    acc[r * KACC] += acc[r * KACC + c];
#if PAIR
                    accu[r * KACC] += accu[r * KACC + c];
#endif
                }
            }
#endif
#if MB > 1
            /* Earlier K blocks' sums of this row block, then keep them for the next K block. */
            VF *pb = part + b * MR * (1 + PAIR);
            if (kc > k0) {
#pragma unroll
                for (int r = 0; r < MR; r++) {
                    acc[r * KACC] += pb[r];
#if PAIR
                    accu[r * KACC] += pb[MR + r];
#endif
                }
            }
            if (kc1 < k1) {
#pragma unroll
                for (int r = 0; r < MR; r++) {
                    pb[r] = acc[r * KACC];
#if PAIR
                    pb[MR + r] = accu[r * KACC];
#endif
                }
                continue;
            }
#endif

#if CLNPU_GEMM_WTYPE == 3 && CLNPU_GEMM_QGROUP == 0
            const VF chg = VLOADF(0, S + (size_t)qg * NR); /* per output channel */
#if PAIR
            const VF chu = VLOADF(0, S + (size_t)qu * NR);
#endif
#endif
            const uint n0 = p * NR; /* output panel p (and p + 1 with NB = 2) */
#pragma unroll
            for (int r = 0; r < MR; r++) {
                if ((uint)r < brows) {
                    VF v = acc[r * KACC] * alpha;
#if CLNPU_GEMM_WTYPE == 3 && CLNPU_GEMM_QGROUP == 0
                    v *= chg;
#endif
#if PAIR
                    VF u = accu[r * KACC] * alpha;
#if CLNPU_GEMM_WTYPE == 3 && CLNPU_GEMM_QGROUP == 0
                    u *= chu;
#endif
#endif
#if CLNPU_GEMM_EPILOGUE == 2
                    v = v / (1.0f + exp(-v)) * u; /* silu(g) * u */
#elif CLNPU_GEMM_EPILOGUE == 1
                    ADD_ROW_RAGGED(v, R + (size_t)(rb0 + r) * ldr + n0, n0, N);
#if PAIR
                    ADD_ROW_RAGGED(u, R + (size_t)(rb0 + r) * ldr + n0 + NR, n0 + NR, N);
#endif
#endif
                    STORE_ROW(Y + (size_t)(rb0 + r) * ldy + n0, v, n0, N);
#if PAIR && CLNPU_GEMM_EPILOGUE != 2
                    STORE_ROW(Y + (size_t)(rb0 + r) * ldy + n0 + NR, u, n0 + NR, N); /* panel p + 1 */
#endif
                }
            }
        }
    }
}

#define TILE_ROWS (MB * MR) /* rows of Y per work-item */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_gemm
/* Plain / batched GEMM and GEMV. Grid: (panels / NB, ceil(M / TILE_ROWS), splits). With splits > 1, Y is a
 * workspace [splits][M][ldy] and the epilogue must be 0 (the reduce kernel adds the residual).
 * Offsets are in elements (a weight offset selects one matrix of a group). */
__kernel void clnpu_gemm(__global const float *X, const uint xoff, const uint ldx,
                         __global const WT *Wp, const ulong woff, __global const float *S,
                         const ulong soff, __global float *Y, const uint yoff, const uint ldy,
                         __global const float *R, const uint roff, const uint ldr, const uint M,
                         const uint N, const uint K, const uint kchunk, const float alpha,
                         const uint rows_first)
{
    /* rows_first: consecutive work-items share one weight panel (it stays in cache while the
     * row blocks pass), the right order when W dominates the traffic (small M). */
    const uint g0 = get_global_id(0), g1 = get_global_id(1);
    const uint p = (rows_first ? g1 : g0) * GEMM_NB, rb = rows_first ? g0 : g1;
    const uint split = get_global_id(2);
    const uint npanels = (N + NR - 1) / NR;
    const uint row0 = rb * TILE_ROWS;
    if (p >= npanels || row0 >= M) return;
    const uint k0 = split * kchunk, k1 = min(K, k0 + kchunk);
    __global float *Yp = Y + yoff + (size_t)split * M * ldy;
    gemm_tile(X + xoff, ldx, Wp + woff, S + soff, Yp, ldy, R + roff, ldr, row0,
              min((uint)TILE_ROWS, M - row0), p, k0, k1, K, N, alpha);
}
#endif /* CLNPU_ONLY */

#if GEMM_NB == 1 /* the grouped kernels take one output panel per work-item */
#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_gemm_grouped
/* Grouped GEMM for MoE experts: one launch over many (matrix, row range) segments. The host
 * lists tiles of at most TILE_ROWS rows: tiles[t] = {matrix index, first row, rows}; empty segments
 * simply have no tiles. Matrices of one group share N and K and sit back to back in Wp / S. */
__kernel void clnpu_gemm_grouped(__global const float *X, const uint xoff, const uint ldx,
                                 __global const WT *Wp, __global const float *S,
                                 __global float *Y, const uint yoff, const uint ldy,
                                 __global const float *R, const uint roff, const uint ldr,
                                 __global const int *tiles, const uint ntiles, const uint N,
                                 const uint K, const ulong w_stride, const ulong s_stride,
                                 const float alpha)
{
    const uint p = get_global_id(0), t = get_global_id(1);
    const uint npanels = (N + NR - 1) / NR;
    if (p >= npanels || t >= ntiles) return;
    const uint e = (uint)tiles[3 * t], row0 = (uint)tiles[3 * t + 1], rows = (uint)tiles[3 * t + 2];
    gemm_tile(X + xoff, ldx, Wp + (size_t)e * w_stride, S + (size_t)e * s_stride, Y + yoff, ldy,
              R + roff, ldr, row0, rows, p, 0, K, K, N, alpha);
}
#endif /* CLNPU_ONLY */

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_gemm_grouped_counts
/* Grouped GEMM with its segments on the device, so MoE layers need no host round trip: matrix e
 * takes rows [offsets[e], offsets[e] + counts[e]) of X (what clnpu_moe_plan writes). Work-item
 * (p, t) finds tile t by walking the matrices' tile counts; E is at most a few hundred ints,
 * small next to the K x NR panel each work-item streams. Tiles past the last do nothing, and a
 * segment that does not fit in M rows (an inconsistent plan) is not written. */
__kernel void clnpu_gemm_grouped_counts(__global const float *X, const uint xoff, const uint ldx,
                                        __global const WT *Wp, __global const float *S,
                                        __global float *Y, const uint yoff, const uint ldy,
                                        __global const float *R, const uint roff, const uint ldr,
                                        __global const int *counts, __global const int *offsets,
                                        const uint E, const uint M, const uint N, const uint K,
                                        const ulong w_stride, const ulong s_stride, const float alpha)
{
    const uint p = get_global_id(0);
    uint t = get_global_id(1);
    if (p >= (N + NR - 1) / NR) return;
    for (uint e = 0; e < E; e++) {
        const int c = counts[e];
        const uint nt = c > 0 ? ((uint)c + TILE_ROWS - 1) / TILE_ROWS : 0;
        if (t < nt) {
            const int o = offsets[e];
            const uint row0 = (uint)o + t * TILE_ROWS, rows = min((uint)TILE_ROWS, (uint)c - t * TILE_ROWS);
            if (o < 0 || (ulong)o + (ulong)c > M) return;
            gemm_tile(X + xoff, ldx, Wp + (size_t)e * w_stride, S + (size_t)e * s_stride, Y + yoff,
                      ldy, R + roff, ldr, row0, rows, p, 0, K, K, N, alpha);
            return;
        }
        t -= nt;
    }
}
#endif /* CLNPU_ONLY */

#endif

#if !CLNPU_ONLY || CLNPU_ONLY_clnpu_gemm_splitk_reduce
/* Split-K reduction: Y[m][n] = sum_s Wk[s][m][n] (+ R[m][n]), summed in split order. */
__kernel void clnpu_gemm_splitk_reduce(__global const float *Wk, const uint splits,
                                       __global float *Y, const uint yoff, const uint ldy,
                                       __global const float *R, const uint roff, const uint ldr,
                                       const uint M, const uint N, const uint has_residual)
{
    const uint n = get_global_id(0), m = get_global_id(1);
    if (n >= N || m >= M) return;
    float s = 0.0f;
    for (uint i = 0; i < splits; i++) s += Wk[((size_t)i * M + m) * N + n];
    if (has_residual) s += R[roff + (size_t)m * ldr + n];
    Y[yoff + (size_t)m * ldy + n] = s;
}
#endif /* CLNPU_ONLY */
