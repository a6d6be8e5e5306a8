/* Work-group GEMM family: Y[M,N] = epilogue(X[M,K] . W[N,K]^T) with local-memory tiles and
 * per-thread register tiles (GPUs, NPUs), and the decode GEMV with a work-group cooperating along
 * K. W is in the same panel layout as kernels-cl/gemm.cl (W_packed[q][k][j] = W[q*NR+j][k]), so a
 * weight uploaded once serves both families.
 *
 * GEMM: a work-group of MDIMC x NDIMC threads owns an MWG x NWG tile of Y. Per K step of KWG it
 * copies the X tile (SA) and the dequantised, scaled W tile (SB) into local memory with
 * coalesced loads (a W tile is KWG x NR contiguous values per panel), then each thread multiplies
 * its MWI x NWI register tile (MWI = MWG / MDIMC, NWI = NWG / NDIMC) out of local memory. Thread
 * (tm, tn) owns rows (i / VWM) * MDIMC * VWM + tm * VWM + i % VWM, columns likewise with VWN:
 * neighbouring threads read neighbouring local words and store neighbouring Y columns. With SA or
 * SB 0 that operand is read from global memory in the inner loop instead (the untiled
 * comparison point, and devices whose local memory is slower than their cache).
 * The tunables and their names follow CLBlast's Xgemm (MWG, NWG, KWG, MDIMC, NDIMC, VWM, VWN,
 * KWI, SA, SB); the host picks them from the capability table, the profile, the tuning DB.
 *
 * Weight dtypes and epilogues as in gemm.cl (CLNPU_GEMM_WTYPE, CLNPU_GEMM_QGROUP,
 * CLNPU_GEMM_EPILOGUE 0 plain, 1 residual, 2 SwiGLU with gate/up panel rows interleaved).
 * Scales multiply each element as it is loaded, so quantisation blocks need no alignment with
 * KWG.
 *
 * GEMV (clnpu_gemv_wg, M <= GEMV_MAXM rows): a work-group of WGS threads per output panel; thread
 * t takes column t % NR and every (WGS / NR)-th k, so each step reads WGS contiguous weights;
 * X passes through local memory in chunks of WGS columns (read once per group); the partial sums
 * meet in a local-memory tree.
 */
#include "clnpu_common.h"

#ifndef CLNPU_GEMM_WTYPE
#define CLNPU_GEMM_WTYPE 0
#endif
#ifndef CLNPU_GEMM_QGROUP
#define CLNPU_GEMM_QGROUP 128
#endif
#ifndef CLNPU_GEMM_EPILOGUE
#define CLNPU_GEMM_EPILOGUE 0
#endif
#ifndef CLNPU_GEMM_NR
#define CLNPU_GEMM_NR 16
#endif
#define NR CLNPU_GEMM_NR

/* Profile keys are the defaults where the host passes nothing more specific. */
#ifndef MDIMC
#ifdef CLNPU_WG_Y
#define MDIMC CLNPU_WG_Y
#else
#define MDIMC 8
#endif
#endif
#ifndef NDIMC
#ifdef CLNPU_WG_X
#define NDIMC CLNPU_WG_X
#else
#define NDIMC 8
#endif
#endif
#ifndef MWG
#ifdef CLNPU_TILE_M
#define MWG (MDIMC * CLNPU_TILE_M)
#else
#define MWG (MDIMC * 4)
#endif
#endif
#ifndef NWG
#ifdef CLNPU_TILE_N
#define NWG (NDIMC * CLNPU_TILE_N)
#else
#define NWG (NDIMC * 4)
#endif
#endif
#ifndef KWG
#ifdef CLNPU_TILE_K
#define KWG CLNPU_TILE_K
#else
#define KWG 16
#endif
#endif
#ifndef VWM
#define VWM 1
#endif
#ifndef VWN
#define VWN 1
#endif
#ifndef KWI
#define KWI 2
#endif
#ifndef SA
#define SA 1
#endif
#ifndef SB
#define SB 1
#endif
#ifndef WGS
#define WGS 256 /* GEMV threads per work-group */
#endif
#ifndef GEMV_MAXM
#define GEMV_MAXM 8
#endif

#define MWI (MWG / MDIMC)
#define NWI (NWG / NDIMC)
#define THREADS (MDIMC * NDIMC)
#if MWG % MDIMC || NWG % NDIMC || MWI % VWM || NWI % VWN || KWG % KWI
#error "gemm_wg: MWG/MDIMC, NWG/NDIMC, VWM, VWN, KWI do not divide"
#endif

#if CLNPU_GEMM_EPILOGUE == 2
#define SWIGLU 1
#define QG(p) (2 * (p))
#define QU(p) (2 * (p) + 1)
#else
#define SWIGLU 0
#define QG(p) (p)
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

inline float widen(__global const WT *p)
{
#if CLNPU_GEMM_WTYPE == 0
    return *p;
#elif CLNPU_GEMM_WTYPE == 1
    return clnpu_bf16_to_f32(*p);
#elif CLNPU_GEMM_WTYPE == 2
    return vload_half(0, (__global const half *)p);
#elif CLNPU_GEMM_WTYPE == 3
    return (float)*p;
#else
    return clnpu_fp8e4m3_to_f32(*p);
#endif
}

/* Element (column j of panel q, row k) of this matrix's packed weights, scaled (scales are laid
 * out per panel as in gemm.cl: int8 per channel S[q][NR], per group S[q][groups][NR], fp8
 * S[q][kblocks]). */
inline float weight_at(__global const WT *Wp, __global const float *S, uint q, uint j, uint k, uint K)
{
#if SWIGLU /* a pair's rows interleave its gate and up panels (gemm.cl) */
    float v = widen(Wp + ((size_t)(q & ~1u) * K + 2 * (size_t)k + (q & 1)) * NR + j);
#else
    float v = widen(Wp + ((size_t)q * K + k) * NR + j);
#endif
#if CLNPU_GEMM_WTYPE == 3 && CLNPU_GEMM_QGROUP == 0
    v *= S[(size_t)q * NR + j];
#elif CLNPU_GEMM_WTYPE == 3
    const uint nb = (K + CLNPU_GEMM_QGROUP - 1) / CLNPU_GEMM_QGROUP;
    v *= S[((size_t)q * nb + k / CLNPU_GEMM_QGROUP) * NR + j];
#elif CLNPU_GEMM_WTYPE == 4
    const uint nb = (K + 127) / 128;
    v *= S[(size_t)q * nb + k / 128];
#endif
    return v;
}

/* W[n][k] (gate side; up = 1 selects the up panel of SwiGLU), 0 outside N x K. */
inline float w_elem(__global const WT *Wp, __global const float *S, uint n, uint k, uint N, uint K, uint up)
{
    if (n >= N || k >= K) return 0.0f;
    const uint p = n / NR;
#if SWIGLU
    const uint q = up ? QU(p) : QG(p);
#else
    const uint q = p;
#endif
    return weight_at(Wp, S, q, n % NR, k, K);
}

inline uint row_of(uint tm, uint i) { return (i / VWM) * (MDIMC * VWM) + tm * VWM + i % VWM; }
inline uint col_of(uint tn, uint j) { return (j / VWN) * (NDIMC * VWN) + tn * VWN + j % VWN; }

/* One MWG x NWG tile of Y: rows [m0, mend), columns from n0. Xs: KWG x MWG, Ws / Us: KWG x NWG. */
inline void gemm_wg_tile(__global const float *X, uint ldx, __global const WT *Wp, __global const float *S,
                         __global float *Y, uint ldy, __global const float *R, uint ldr, uint m0, uint mend,
                         uint n0, uint N, uint K, float alpha, __local float *Xs, __local float *Ws,
                         __local float *Us)
{
    const uint lid = get_local_id(0), tn = lid % NDIMC, tm = lid / NDIMC;
    /* NWI + 1 columns when the tile is 1 x 1: attention_wg.cl says why */
    float acc[MWI][NWI + (MWI * NWI == 1)];
#if SWIGLU
    float accu[MWI][NWI + (MWI * NWI == 1)];
#endif
    for (uint i = 0; i < MWI; i++)
        for (uint j = 0; j < NWI; j++) {
            acc[i][j] = 0.0f;
#if SWIGLU
            accu[i][j] = 0.0f;
#endif
        }
    for (uint k0 = 0; k0 < K; k0 += KWG) {
#if SA || SB
        barrier(CLK_LOCAL_MEM_FENCE);
#endif
#if SA
        /* consecutive threads read consecutive k of one X row */
        for (uint e = lid; e < KWG * MWG; e += THREADS) {
            const uint mm = e / KWG, kk = e % KWG, m = m0 + mm, k = k0 + kk;
            Xs[kk * MWG + mm] = m < mend && k < K ? X[(size_t)m * ldx + k] : 0.0f;
        }
#endif
#if SB
#if NWG % NR == 0
        /* panel by panel: KWG x NR contiguous packed values per panel */
        for (uint e = lid; e < KWG * NWG; e += THREADS) {
            const uint pt = e / (KWG * NR), rem = e % (KWG * NR), kk = rem / NR, nn = pt * NR + rem % NR;
            Ws[kk * NWG + nn] = w_elem(Wp, S, n0 + nn, k0 + kk, N, K, 0);
#if SWIGLU
            Us[kk * NWG + nn] = w_elem(Wp, S, n0 + nn, k0 + kk, N, K, 1);
#endif
        }
#else
        for (uint e = lid; e < KWG * NWG; e += THREADS) {
            const uint kk = e / NWG, nn = e % NWG;
            Ws[kk * NWG + nn] = w_elem(Wp, S, n0 + nn, k0 + kk, N, K, 0);
#if SWIGLU
            Us[kk * NWG + nn] = w_elem(Wp, S, n0 + nn, k0 + kk, N, K, 1);
#endif
        }
#endif
#endif
#if SA || SB
        barrier(CLK_LOCAL_MEM_FENCE);
#endif
        for (uint kk = 0; kk < KWG; kk += KWI) {
#pragma unroll
            for (uint ki = 0; ki < KWI; ki++) {
                const uint kl = kk + ki;
                float xr[MWI], wr[NWI];
#if SWIGLU
                float ur[NWI];
#endif
#pragma unroll
                for (uint i = 0; i < MWI; i++) {
#if SA
                    xr[i] = Xs[kl * MWG + row_of(tm, i)];
#else
                    const uint m = m0 + row_of(tm, i), k = k0 + kl;
                    xr[i] = m < mend && k < K ? X[(size_t)m * ldx + k] : 0.0f;
#endif
                }
#pragma unroll
                for (uint j = 0; j < NWI; j++) {
#if SB
                    wr[j] = Ws[kl * NWG + col_of(tn, j)];
#if SWIGLU
                    ur[j] = Us[kl * NWG + col_of(tn, j)];
#endif
#else
                    wr[j] = w_elem(Wp, S, n0 + col_of(tn, j), k0 + kl, N, K, 0);
#if SWIGLU
                    ur[j] = w_elem(Wp, S, n0 + col_of(tn, j), k0 + kl, N, K, 1);
#endif
#endif
                }
#pragma unroll
                for (uint i = 0; i < MWI; i++)
#pragma unroll
                    for (uint j = 0; j < NWI; j++) {
                        acc[i][j] = fma(xr[i], wr[j], acc[i][j]);
#if SWIGLU
                        accu[i][j] = fma(xr[i], ur[j], accu[i][j]);
#endif
                    }
            }
        }
    }
    for (uint i = 0; i < MWI; i++) {
        const uint m = m0 + row_of(tm, i);
        if (m >= mend) continue;
        for (uint j = 0; j < NWI; j++) {
            const uint n = n0 + col_of(tn, j);
            if (n >= N) continue;
            float v = alpha * acc[i][j];
#if CLNPU_GEMM_EPILOGUE == 2
            const float u = alpha * accu[i][j];
            v = v / (1.0f + exp(-v)) * u; /* silu(g) * u */
#elif CLNPU_GEMM_EPILOGUE == 1
            v += R[(size_t)m * ldr + n];
#endif
            Y[(size_t)m * ldy + n] = v;
        }
    }
}

/* The tiles are __local kernel arguments sized by the host (KWG x MWG, KWG x NWG, KWG x NWG for
 * SwiGLU's up panels; one float where unused), so a launch states its local bytes up front. */
#define LOCAL_TILES_ARGS , __local float *Xs, __local float *Ws, __local float *Us
/* Grid: (ceil(N / NWG) * THREADS, ceil(M / MWG)), local (THREADS, 1). */
__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1)))
void clnpu_gemm_wg(__global const float *X, const uint xoff, const uint ldx, __global const WT *Wp,
                   const ulong woff, __global const float *S, const ulong soff, __global float *Y,
                   const uint yoff, const uint ldy, __global const float *R, const uint roff,
                   const uint ldr, const uint M, const uint N, const uint K, const float alpha LOCAL_TILES_ARGS)
{
    const uint n0 = get_group_id(0) * NWG, m0 = get_group_id(1) * MWG;
    if (n0 >= N || m0 >= M) return; /* whole work-group: no barrier is skipped by part of it */
    gemm_wg_tile(X + xoff, ldx, Wp + woff, S + soff, Y + yoff, ldy, R + roff, ldr, m0, min(M, m0 + MWG), n0, N,
                 K, alpha, Xs, Ws, Us);
}

/* Grouped GEMM over a host tile table (tiles[t] = {matrix, first row, rows <= MWG}). Grid:
 * (ceil(N / NWG) * THREADS, ntiles). */
__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1)))
void clnpu_gemm_wg_grouped(__global const float *X, const uint xoff, const uint ldx, __global const WT *Wp,
                           __global const float *S, __global float *Y, const uint yoff, const uint ldy,
                           __global const float *R, const uint roff, const uint ldr, __global const int *tiles,
                           const uint ntiles, const uint N, const uint K, const ulong w_stride,
                           const ulong s_stride, const float alpha LOCAL_TILES_ARGS)
{
    const uint n0 = get_group_id(0) * NWG, t = get_group_id(1);
    if (n0 >= N || t >= ntiles) return;
    const uint e = (uint)tiles[3 * t], row0 = (uint)tiles[3 * t + 1], rows = (uint)tiles[3 * t + 2];
    gemm_wg_tile(X + xoff, ldx, Wp + (size_t)e * w_stride, S + (size_t)e * s_stride, Y + yoff, ldy, R + roff,
                 ldr, row0, row0 + rows, n0, N, K, alpha, Xs, Ws, Us);
}

/* Grouped GEMM with device-side segments (clnpu_moe_plan's counts and offsets): work-group row t
 * walks the matrices' tile counts to find its tile; every thread of the group walks the same
 * path, so the early returns are uniform. Grid: (ceil(N / NWG) * THREADS, tile upper bound). */
__kernel __attribute__((reqd_work_group_size(THREADS, 1, 1)))
void clnpu_gemm_wg_grouped_counts(__global const float *X, const uint xoff, const uint ldx, __global const WT *Wp,
                                  __global const float *S, __global float *Y, const uint yoff, const uint ldy,
                                  __global const float *R, const uint roff, const uint ldr,
                                  __global const int *counts, __global const int *offsets, const uint E,
                                  const uint M, const uint N, const uint K, const ulong w_stride,
                                  const ulong s_stride, const float alpha LOCAL_TILES_ARGS)
{
    const uint n0 = get_group_id(0) * NWG;
    uint t = get_group_id(1);
    if (n0 >= N) return;
    for (uint e = 0; e < E; e++) {
        const int c = counts[e];
        const uint nt = c > 0 ? ((uint)c + MWG - 1) / MWG : 0;
        if (t < nt) {
            const int o = offsets[e];
            if (o < 0 || (ulong)o + (ulong)c > M) return;
            const uint row0 = (uint)o + t * MWG;
            gemm_wg_tile(X + xoff, ldx, Wp + (size_t)e * w_stride, S + (size_t)e * s_stride, Y + yoff, ldy,
                         R + roff, ldr, row0, min((uint)o + (uint)c, row0 + MWG), n0, N, K, alpha, Xs, Ws, Us);
            return;
        }
        t -= nt;
    }
}

#if WGS % NR
#error "gemm_wg: WGS must be a multiple of NR"
#endif
#define KSTEP (WGS / NR)
#define GEMV_KC WGS /* K columns of X per local chunk (GEMV_MAXM x WGS floats: the size of red) */

/* Decode GEMV: Y[m][p*NR + j] for m < M <= GEMV_MAXM. Grid: (panels * WGS), local (WGS). */
__kernel __attribute__((reqd_work_group_size(WGS, 1, 1)))
void clnpu_gemv_wg(__global const float *X, const uint xoff, const uint ldx, __global const WT *Wp,
                   const ulong woff, __global const float *S, const ulong soff, __global float *Y,
                   const uint yoff, const uint ldy, __global const float *R, const uint roff,
                   const uint ldr, const uint M, const uint N, const uint K, const float alpha,
                   const uint kchunk, __local float *red, __local float *redu)
{
    /* red, redu: GEMV_MAXM x WGS floats each (redu one float unless SwiGLU), sized by the host.
     * Dimension 1 splits K into chunks of kchunk: work-groups cooperate along K for narrow N; each
     * chunk writes alpha * partial into Y = workspace [splits][M][N] (epilogue 0), which
     * clnpu_gemv_wg_reduce sums in chunk order. */
    const uint lid = get_local_id(0), j = lid % NR, kq = lid / NR, p = get_group_id(0), split = get_group_id(1);
    if (p * NR >= N) return;
    const uint kbeg = split * kchunk, kend = min(K, kbeg + kchunk);
    Y += (size_t)split * M * ldy;
    X += xoff;
    Wp += woff;
    S += soff;
    float acc[GEMV_MAXM];
#if SWIGLU
    float accu[GEMV_MAXM];
#endif
    for (uint m = 0; m < GEMV_MAXM; m++) {
        acc[m] = 0.0f;
#if SWIGLU
        accu[m] = 0.0f;
#endif
    }
    /* X goes through local memory in chunks of GEMV_KC columns: read once per work-group, not once
     * per lane of a column (red doubles as the chunk buffer: GEMV_MAXM x WGS floats). */
    for (uint kc = kbeg; kc < kend; kc += GEMV_KC) {
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint e = lid; e < M * GEMV_KC; e += WGS) {
            const uint m = e / GEMV_KC, k = kc + e % GEMV_KC;
            red[e] = k < kend ? X[(size_t)m * ldx + k] : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        for (uint kk = kq; kk < GEMV_KC && kc + kk < kend; kk += KSTEP) {
            const uint k = kc + kk;
            const float w = weight_at(Wp, S, QG(p), j, k, K);
#if SWIGLU
            const float u = weight_at(Wp, S, QU(p), j, k, K);
#endif
            for (uint m = 0; m < M; m++) {
                const float x = red[m * GEMV_KC + kk];
                acc[m] = fma(x, w, acc[m]);
#if SWIGLU
                accu[m] = fma(x, u, accu[m]);
#endif
            }
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE); /* the chunk buffer becomes the reduction buffer */
    for (uint m = 0; m < GEMV_MAXM; m++) {
        red[m * WGS + lid] = acc[m];
#if SWIGLU
        redu[m * WGS + lid] = accu[m];
#endif
    }
    for (uint s = KSTEP / 2; s > 0; s >>= 1) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (kq < s)
            for (uint m = 0; m < M; m++) {
                red[m * WGS + lid] += red[m * WGS + lid + s * NR];
#if SWIGLU
                redu[m * WGS + lid] += redu[m * WGS + lid + s * NR];
#endif
            }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    const uint n = p * NR + lid;
    if (lid < NR && n < N)
        for (uint m = 0; m < M; m++) {
            float v = alpha * red[m * WGS + lid];
#if CLNPU_GEMM_EPILOGUE == 2
            const float u = alpha * redu[m * WGS + lid];
            v = v / (1.0f + exp(-v)) * u;
#elif CLNPU_GEMM_EPILOGUE == 1
            v += R[roff + (size_t)m * ldr + n];
#endif
            Y[yoff + (size_t)m * ldy + n] = v;
        }
}

/* Split-K GEMV: Y[m][n] = sum_s Wk[s][m][n] (+ R[m][n]), in chunk order (deterministic). Grid: (N, M). */
__kernel void clnpu_gemv_wg_reduce(__global const float *Wk, const uint splits, __global float *Y, const uint yoff,
                                   const uint ldy, __global const float *R, const uint roff, const uint ldr,
                                   const uint M, const uint N, const uint has_residual)
{
    const uint n = get_global_id(0), m = get_global_id(1);
    if (n >= N || m >= M) return;
    float s = 0.0f;
    for (uint i = 0; i < splits; i++) s += Wk[((size_t)i * M + m) * N + n];
    if (has_residual) s += R[roff + (size_t)m * ldr + n];
    Y[yoff + (size_t)m * ldy + n] = s;
}
