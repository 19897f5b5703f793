/* attention.cu — flash-style multi-head attention in fp32.
 *
 * One block of 256 threads owns BQ queries of one (batch, head).  It walks the keys in
 * tiles of BK: S = (scale·Q)·Kᵀ for the tile, masked (keys past Lk, causal j > i) to −∞,
 * then the online softmax (running row max m and sum l; the accumulator is rescaled by
 * exp(m_old − m_new) whenever the max grows), then O += P·V.  At the end O /= l.  No
 * score matrix ever reaches device memory, so the VAE's single-head attention over
 * 16,384 tokens of width 512 needs only the block's shared memory, and the result equals
 * softmax(scale·QKᵀ)·V up to fp32 rounding (expf, not __expf).
 *
 * Tiles live in shared memory; Q and K rows are padded by one float so the 16 threads of
 * a half-warp that read 16 different K rows at the same d hit 16 different banks.
 * Threads form a 16×16 grid: thread (ty, tx) owns query rows ty + 16i and key columns
 * tx + 16j of S, and query rows ty + 16i and head columns tx + 16j of O (strided, so
 * the reads of a half-warp are consecutive or broadcast).  The head width is a template
 * bound DMAX (64, 128, 256, 512) with the runtime D ≤ DMAX; padding columns are zero.
 *
 * This is the stage-one kernel (CUDA cores, fp32).  The faster path (tensor cores with
 * bf16/fp16 operands, or cuDNN's fused SDPA) comes with reduced-precision storage; see
 * docs/cuda.md. */
#include "common.cuh"

#define ATT_THREADS 256

template <int BQ, int BK, int DMAX>
struct att_cfg {
    static constexpr int TR = BQ / 16;      /* query rows per thread */
    static constexpr int TK = BK / 16;      /* key columns per thread */
    static constexpr int TD = DMAX / 16;    /* head columns per thread */
    static constexpr int QS = DMAX + 1;     /* padded row stride of the Q and K tiles */
    static constexpr int PS = BK + 1;       /* padded row stride of the P tile */
    static constexpr size_t floats = (size_t)BQ * QS + (size_t)BK * QS + (size_t)BK * DMAX +
                                     (size_t)BQ * PS + 3 * (size_t)BQ;
    static constexpr size_t smem = floats * sizeof(float);
};

template <int BQ, int BK, int DMAX>
__global__ void __launch_bounds__(ATT_THREADS)
attention_kernel(float *out, const float *q, const float *k, const float *v, int Lq, int Lk, int D,
                 int ldq, int ldk, int ldv, int ldo, float scale, int causal) {
    typedef att_cfg<BQ, BK, DMAX> cfg;
    constexpr int TR = cfg::TR, TK = cfg::TK, TD = cfg::TD, QS = cfg::QS, PS = cfg::PS;
    extern __shared__ float smem[];
    float *sQ = smem;                   /* [BQ][QS]  scale·q */
    float *sK = sQ + BQ * QS;           /* [BK][QS] */
    float *sV = sK + BK * QS;           /* [BK][DMAX] */
    float *sP = sV + BK * DMAX;         /* [BQ][PS]  scores, then probabilities */
    float *sM = sP + BQ * PS;           /* [BQ] running max */
    float *sL = sM + BQ;                /* [BQ] running sum */
    float *sC = sL + BQ;                /* [BQ] rescale factor of this tile */

    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int warp = tid / K_WARP, lane = tid % K_WARP;
    const int q0 = blockIdx.x * BQ, h = blockIdx.y, n = blockIdx.z;
    const float *qb = q + (size_t)n * Lq * ldq + (size_t)h * D;
    const float *kb = k + (size_t)n * Lk * ldk + (size_t)h * D;
    const float *vb = v + (size_t)n * Lk * ldv + (size_t)h * D;
    float *ob = out + (size_t)n * Lq * ldo + (size_t)h * D;

    for (int e = tid; e < BQ * DMAX; e += ATT_THREADS) {
        int r = e / DMAX, d = e % DMAX;
        sQ[r * QS + d] = (q0 + r < Lq && d < D) ? qb[(size_t)(q0 + r) * ldq + d] * scale : 0.0f;
    }
    for (int r = tid; r < BQ; r += ATT_THREADS) { sM[r] = -INFINITY; sL[r] = 0.0f; }

    float acc[TR][TD];
#pragma unroll
    for (int i = 0; i < TR; i++)
#pragma unroll
        for (int j = 0; j < TD; j++) acc[i][j] = 0.0f;

    /* causal: key j is visible to query i iff j <= i, so the last query of the tile
     * bounds the keys this block needs */
    int kend = causal ? min(Lk, q0 + BQ) : Lk;
    for (int k0 = 0; k0 < kend; k0 += BK) {
        __syncthreads();     /* the previous tile's K, V and P are no longer read */
        for (int e = tid; e < BK * DMAX; e += ATT_THREADS) {
            int r = e / DMAX, d = e % DMAX;
            bool in = k0 + r < Lk && d < D;
            sK[r * QS + d] = in ? kb[(size_t)(k0 + r) * ldk + d] : 0.0f;
            sV[r * DMAX + d] = in ? vb[(size_t)(k0 + r) * ldv + d] : 0.0f;
        }
        __syncthreads();

        float s[TR][TK];
#pragma unroll
        for (int i = 0; i < TR; i++)
#pragma unroll
            for (int j = 0; j < TK; j++) s[i][j] = 0.0f;
#pragma unroll 4
        for (int d = 0; d < D; d++) {
            float qa[TR], ka[TK];
#pragma unroll
            for (int i = 0; i < TR; i++) qa[i] = sQ[(ty + 16 * i) * QS + d];
#pragma unroll
            for (int j = 0; j < TK; j++) ka[j] = sK[(tx + 16 * j) * QS + d];
#pragma unroll
            for (int i = 0; i < TR; i++)
#pragma unroll
                for (int j = 0; j < TK; j++) s[i][j] = fmaf(qa[i], ka[j], s[i][j]);
        }
#pragma unroll
        for (int i = 0; i < TR; i++)
#pragma unroll
            for (int j = 0; j < TK; j++) {
                int r = ty + 16 * i, c = tx + 16 * j, kj = k0 + c;
                bool masked = kj >= Lk || (causal && kj > q0 + r);
                sP[r * PS + c] = masked ? -INFINITY : s[i][j];
            }
        __syncthreads();

        /* online softmax: each warp owns rows warp, warp + 8, ... */
        for (int r = warp; r < BQ; r += ATT_THREADS / K_WARP) {
            float mx = -INFINITY;
            for (int c = lane; c < BK; c += K_WARP) mx = fmaxf(mx, sP[r * PS + c]);
            mx = k_warp_max(mx);
            float m_old = sM[r], m_new = fmaxf(m_old, mx);
            float m_use = m_new == -INFINITY ? 0.0f : m_new;   /* all masked so far: p = 0 */
            float sum = 0.0f;
            for (int c = lane; c < BK; c += K_WARP) {
                float p = expf(sP[r * PS + c] - m_use);
                sP[r * PS + c] = p;
                sum += p;
            }
            sum = k_warp_sum(sum);
            if (lane == 0) {
                float corr = expf(m_old - m_use);               /* 0 when m_old is −∞ */
                sL[r] = sL[r] * corr + sum;
                sM[r] = m_new;
                sC[r] = corr;
            }
        }
        __syncthreads();

#pragma unroll
        for (int i = 0; i < TR; i++) {
            float corr = sC[ty + 16 * i];
#pragma unroll
            for (int j = 0; j < TD; j++) acc[i][j] *= corr;
        }
#pragma unroll 4
        for (int c = 0; c < BK; c++) {
            float pa[TR];
#pragma unroll
            for (int i = 0; i < TR; i++) pa[i] = sP[(ty + 16 * i) * PS + c];
#pragma unroll
            for (int j = 0; j < TD; j++) {
                float vv = sV[c * DMAX + tx + 16 * j];
#pragma unroll
                for (int i = 0; i < TR; i++) acc[i][j] = fmaf(pa[i], vv, acc[i][j]);
            }
        }
    }
    __syncthreads();   /* kend == 0 (Lk == 0) never enters the loop: sL still needs a barrier */

#pragma unroll
    for (int i = 0; i < TR; i++) {
        int r = ty + 16 * i;
        if (q0 + r >= Lq) continue;
        float l = sL[r], inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
        for (int j = 0; j < TD; j++) {
            int d = tx + 16 * j;
            if (d < D) ob[(size_t)(q0 + r) * ldo + d] = acc[i][j] * inv;
        }
    }
}

template <int BQ, int BK, int DMAX>
static cudaError_t launch(float *out, const float *q, const float *k, const float *v, int N, int H,
                          int Lq, int Lk, int D, int ldq, int ldk, int ldv, int ldo, float scale,
                          int causal, cudaStream_t stream) {
    typedef att_cfg<BQ, BK, DMAX> cfg;
    /* more than 48 KB of dynamic shared memory needs an opt-in, once per kernel; setting
     * it twice is harmless, so no lock around the flag */
    static int raised;
    if (!raised) {
        cudaError_t e = cudaFuncSetAttribute(attention_kernel<BQ, BK, DMAX>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)cfg::smem);
        if (e != cudaSuccess) return e;
        raised = 1;
    }
    dim3 grid((unsigned)((Lq + BQ - 1) / BQ), (unsigned)H, (unsigned)N);
    attention_kernel<BQ, BK, DMAX><<<grid, ATT_THREADS, cfg::smem, stream>>>(
        out, q, k, v, Lq, Lk, D, ldq, ldk, ldv, ldo, scale, causal);
    return cudaGetLastError();
}

extern "C" cudaError_t k_attention(float *out, const float *q, const float *k, const float *v,
                                   int N, int H, int Lq, int Lk, int D, int ldq, int ldk, int ldv,
                                   int ldo, float scale, int causal, cudaStream_t stream) {
    if (N <= 0 || H <= 0 || Lq <= 0 || D <= 0) return cudaSuccess;
    if (H > 65535 || N > 65535 || D > K_ATTENTION_MAX_D) return cudaErrorInvalidValue;
    /* shared memory: 67 KB, 75 KB, 103 KB, 201 KB (sm_90 allows 227 KB per block) */
    if (D <= 64) return launch<64, 64, 64>(out, q, k, v, N, H, Lq, Lk, D, ldq, ldk, ldv, ldo, scale, causal, stream);
    if (D <= 128) return launch<64, 32, 128>(out, q, k, v, N, H, Lq, Lk, D, ldq, ldk, ldv, ldo, scale, causal, stream);
    if (D <= 256) return launch<32, 32, 256>(out, q, k, v, N, H, Lq, Lk, D, ldq, ldk, ldv, ldo, scale, causal, stream);
    return launch<32, 32, 512>(out, q, k, v, N, H, Lq, Lk, D, ldq, ldk, ldv, ldo, scale, causal, stream);
}

/* ---- backward ----
 * Stage one, for correctness: one block per (query row, head, batch) recomputes its row of
 * scores, P = softmax, dP = dO·Vᵀ and dS = P ∘ (dP − Σ P·dP) in shared memory, writes
 * dq = scale·dS·K, and scatters dk += scale·dSᵀ·q and dv += Pᵀ·dO with atomics (dk and dv
 * are zeroed first).  O(Lq·Lk·D) work like the forward, but with atomics and no tiling;
 * the flash-attention-2 backward (tiles of K/V per block, no atomics) replaces it when
 * training runs on the GPU for speed.  Shared memory: 2·Lk + 2·D floats (Lk ≤ ~28k). */
#define ATB_THREADS 128

__device__ float atb_block_reduce(float v, float *red, int is_max) {
    for (int o = K_WARP / 2; o > 0; o >>= 1) {
        float u = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? fmaxf(v, u) : v + u;
    }
    int warp = threadIdx.x / K_WARP, lane = threadIdx.x % K_WARP;
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float r = red[0];
    for (int w = 1; w < ATB_THREADS / K_WARP; w++) r = is_max ? fmaxf(r, red[w]) : r + red[w];
    return r;
}

__global__ void att_zero_kernel(float *x, long long rows, int cols, int ld) {
    for (long long r = blockIdx.y; r < rows; r += gridDim.y)
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) x[r * ld + c] = 0.0f;
}

__global__ void __launch_bounds__(ATB_THREADS)
attention_bw_kernel(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
                    int Lq, int Lk, int D, int ldq, int ldk, int ldv, int ldo, float scale, int causal) {
    extern __shared__ float smem[];
    float *s = smem, *dp = s + Lk, *qi = dp + Lk, *doi = qi + D, *red = doi + D;
    int i = blockIdx.x, h = blockIdx.y, n = blockIdx.z, t = threadIdx.x;
    const float *qr = q + ((size_t)n * Lq + i) * ldq + (size_t)h * D, *dor = dout + ((size_t)n * Lq + i) * ldo + (size_t)h * D;
    const float *kb = k + (size_t)n * Lk * ldk + (size_t)h * D, *vb = v + (size_t)n * Lk * ldv + (size_t)h * D;
    float *dkb = dk + (size_t)n * Lk * ldk + (size_t)h * D, *dvb = dv + (size_t)n * Lk * ldv + (size_t)h * D;
    float *dqr = dq + ((size_t)n * Lq + i) * ldq + (size_t)h * D;
    for (int d = t; d < D; d += blockDim.x) { qi[d] = qr[d]; doi[d] = dor[d]; }
    __syncthreads();
    int nk = causal ? min(i + 1, Lk) : Lk;
    float mx = -INFINITY;
    for (int j = t; j < nk; j += blockDim.x) {
        float a = 0.0f, b = 0.0f;
        for (int d = 0; d < D; d++) { a += qi[d] * kb[(size_t)j * ldk + d]; b += doi[d] * vb[(size_t)j * ldv + d]; }
        s[j] = a * scale;
        dp[j] = b;
        mx = fmaxf(mx, s[j]);
    }
    mx = atb_block_reduce(mx, red, 1);
    float sum = 0.0f;
    for (int j = t; j < nk; j += blockDim.x) { float e = expf(s[j] - mx); s[j] = e; sum += e; }
    sum = atb_block_reduce(sum, red, 0);
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f, dsum = 0.0f;
    for (int j = t; j < nk; j += blockDim.x) { s[j] *= inv; dsum += s[j] * dp[j]; }
    dsum = atb_block_reduce(dsum, red, 0);
    for (int j = t; j < nk; j += blockDim.x) dp[j] = s[j] * (dp[j] - dsum);
    __syncthreads();
    for (int d = t; d < D; d += blockDim.x) {
        float a = 0.0f;
        for (int j = 0; j < nk; j++) a += dp[j] * kb[(size_t)j * ldk + d];
        dqr[d] = a * scale;
    }
    for (long long e = t; e < (long long)nk * D; e += blockDim.x) {
        int j = (int)(e / D), d = (int)(e % D);
        atomicAdd(dkb + (size_t)j * ldk + d, scale * dp[j] * qi[d]);
        atomicAdd(dvb + (size_t)j * ldv + d, s[j] * doi[d]);
    }
}

extern "C" cudaError_t k_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q,
                                            const float *k, const float *v, int N, int H, int Lq, int Lk, int D,
                                            int ldq, int ldk, int ldv, int ldo, float scale, int causal,
                                            cudaStream_t stream) {
    if (N <= 0 || H <= 0 || D <= 0) return cudaSuccess;
    if (H > 65535 || N > 65535 || Lq > 2147483647) return cudaErrorInvalidValue;
    size_t smem_bytes = ((size_t)2 * Lk + 2 * (size_t)D + ATB_THREADS / K_WARP) * sizeof(float);
    if (smem_bytes > K_ATTENTION_BW_MAX_SMEM) return cudaErrorInvalidValue;
    static size_t raised;
    if (smem_bytes > 48 * 1024 && smem_bytes > raised) {
        cudaError_t e = cudaFuncSetAttribute(attention_bw_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             (int)K_ATTENTION_BW_MAX_SMEM);
        if (e != cudaSuccess) return e;
        raised = K_ATTENTION_BW_MAX_SMEM;
    }
    if (Lk > 0) {
        dim3 zg(k_blocks((long long)H * D, 256, K_MAX_GRID_X), k_blocks((long long)N * Lk, 1, K_MAX_GRID_Y));
        att_zero_kernel<<<zg, 256, 0, stream>>>(dk, (long long)N * Lk, H * D, ldk);
        att_zero_kernel<<<zg, 256, 0, stream>>>(dv, (long long)N * Lk, H * D, ldv);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) return e;
    }
    if (Lq <= 0) return cudaSuccess;
    attention_bw_kernel<<<dim3((unsigned)Lq, (unsigned)H, (unsigned)N), ATB_THREADS, smem_bytes, stream>>>(
        dq, dk, dv, dout, q, k, v, Lq, Lk, D, ldq, ldk, ldv, ldo, scale, causal);
    return cudaGetLastError();
}
