/* norm.cu — GroupNorm (+ fused SiLU) and LayerNorm.
 *
 * GroupNorm runs in three launches so that a few huge groups (the VAE decoder has 32
 * groups of 4 M values per image at 1024²) still fill the GPU: partial sums of x and x²
 * in fp64 over chunks of each group, a tiny kernel folding the partials into mean and
 * rstd, then an elementwise pass applying the affine and SiLU.  fp64 sums keep
 * E[x²] − E[x]² exact enough at any mean (the CPU reference uses a centred fp64 pass),
 * and cost nothing visible in a memory-bound kernel.  Statistics are complete before the
 * apply pass starts, so out == inp works.
 *
 * LayerNorm rows are short (≤ 2048 in SDXL): one warp per row, mean then centred
 * variance then the write, each a pass over the row that stays in L1. */
#include "common.cuh"

#define GN_THREADS 256
#define GN_CHUNK 16384        /* values per stats block */
#define GN_MAX_CHUNKS 512

static int gn_chunks(long long cnt) {
    long long c = (cnt + GN_CHUNK - 1) / GN_CHUNK;
    if (c < 1) c = 1;
    if (c > GN_MAX_CHUNKS) c = GN_MAX_CHUNKS;
    return (int)c;
}

extern "C" size_t k_group_norm_scratch_bytes(int N, int C, int HW, int G) {
    long long cnt = (long long)(C / G) * HW;
    size_t groups = (size_t)N * G;
    /* partial (sum, sumsq) per chunk, then (mean, rstd) per group */
    return groups * gn_chunks(cnt) * sizeof(double2) + groups * sizeof(float2) + 16;
}

/* grid (chunks, N·G): one block per chunk of one group; groups are contiguous in NCHW. */
__global__ void gn_stats_kernel(double2 *part, const float *x, long long cnt, int chunks) {
    long long ng = blockIdx.y;
    const float *xg = x + ng * cnt;
    long long lo = cnt * blockIdx.x / chunks, hi = cnt * (blockIdx.x + 1) / chunks;
    double s = 0, q = 0;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        double v = xg[i];
        s += v;
        q += v * v;
    }
    k_block_sum2_d<GN_THREADS>(&s, &q);
    if (threadIdx.x == 0) part[ng * chunks + blockIdx.x] = make_double2(s, q);
}

__global__ void gn_finalize_kernel(float2 *stats, const double2 *part, long long cnt, int chunks,
                                   int groups, float eps) {
    int ng = blockIdx.x * blockDim.x + threadIdx.x;
    if (ng >= groups) return;
    double s = 0, q = 0;
    for (int c = 0; c < chunks; c++) {
        double2 p = part[(long long)ng * chunks + c];
        s += p.x;
        q += p.y;
    }
    double mean = s / cnt, var = q / cnt - mean * mean;
    if (var < 0) var = 0;
    stats[ng] = make_float2((float)mean, (float)(1.0 / sqrt(var + (double)eps)));
}

/* grid (N·C, hw blocks): row nc = n·C + c is one channel plane of HW values. */
__global__ void gn_apply_kernel(float *y, const float *x, const float2 *stats, const float *w,
                                const float *b, int C, long long HW, int cpg, int silu) {
    long long nc = blockIdx.x;
    int c = (int)(nc % C);
    float2 st = stats[nc / cpg];
    float sc = st.y * (w ? w[c] : 1.0f), sh = b ? b[c] : 0.0f, m = st.x;
    const float *xr = x + nc * HW;
    float *yr = y + nc * HW;
    for (long long i = (long long)blockIdx.y * blockDim.x + threadIdx.x; i < HW;
         i += (long long)gridDim.y * blockDim.x) {
        float v = (xr[i] - m) * sc + sh;
        yr[i] = silu ? k_silu(v) : v;
    }
}

/* stats[g] = (mean, rstd) of each group, through per-chunk double partials in part: the
 * forward and the backward (which recomputes them) share it, so both see the same numbers. */
static cudaError_t gn_group_stats(float2 *stats, double2 *part, const float *inp, long long cnt, int chunks, int groups,
                                  float eps, cudaStream_t stream) {
    gn_stats_kernel<<<dim3(chunks, groups), GN_THREADS, 0, stream>>>(part, inp, cnt, chunks);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    gn_finalize_kernel<<<(groups + 127) / 128, 128, 0, stream>>>(stats, part, cnt, chunks, groups, eps);
    return cudaGetLastError();
}

extern "C" cudaError_t k_group_norm(float *out, const float *inp, const float *w, const float *b,
                                    void *scratch, int N, int C, int HW, int G, float eps, int silu,
                                    cudaStream_t stream) {
    if (N <= 0 || C <= 0 || HW <= 0) return cudaSuccess;
    int cpg = C / G, groups = N * G;
    long long cnt = (long long)cpg * HW;
    int chunks = gn_chunks(cnt);
    double2 *part = (double2 *)scratch;
    float2 *stats = (float2 *)(part + (size_t)groups * chunks);
    cudaError_t e = gn_group_stats(stats, part, inp, cnt, chunks, groups, eps, stream);
    if (e != cudaSuccess) return e;
    dim3 grid((unsigned)((long long)N * C), k_blocks(HW, GN_THREADS * 4, K_MAX_GRID_Y));
    gn_apply_kernel<<<grid, GN_THREADS, 0, stream>>>(out, inp, stats, w, b, C, HW, cpg, silu);
    return cudaGetLastError();
}

/* One warp per row; 8 rows per block. */
__global__ void ln_kernel(float *y, const float *x, const float *w, const float *b, int R, int C,
                          float eps) {
    int lane = threadIdx.x % K_WARP;
    for (long long row = (long long)blockIdx.x * (blockDim.x / K_WARP) + threadIdx.x / K_WARP; row < R;
         row += (long long)gridDim.x * (blockDim.x / K_WARP)) {
        const float *xr = x + row * C;
        float *yr = y + row * C;
        float s = 0;
        for (int i = lane; i < C; i += K_WARP) s += xr[i];
        float mean = k_warp_sum(s) / C;
        float q = 0;
        for (int i = lane; i < C; i += K_WARP) { float d = xr[i] - mean; q += d * d; }
        float rstd = 1.0f / sqrtf(k_warp_sum(q) / C + eps);
        for (int i = lane; i < C; i += K_WARP) {
            float v = (xr[i] - mean) * rstd;
            yr[i] = v * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
        }
    }
}

extern "C" cudaError_t k_layer_norm(float *out, const float *inp, const float *w, const float *b,
                                    int R, int C, float eps, cudaStream_t stream) {
    if (R <= 0 || C <= 0) return cudaSuccess;
    ln_kernel<<<k_blocks(R, 8, K_MAX_GRID_X), 256, 0, stream>>>(out, inp, w, b, R, C, eps);
    return cudaGetLastError();
}

/* ---- backward ----
 * GroupNorm: with x̂ = (x − μ)·rstd, y = x̂·w + b (z = SiLU(y) when fused) and dŷ = dz·w
 * (dz·SiLU'(y)·w), per group dx = rstd·(dŷ − mean(dŷ) − x̂·mean(dŷ·x̂)); per channel
 * dw += Σ dy·x̂, db += Σ dy.  Launches: the forward's statistics, chunked fp64 partial
 * sums of dŷ and dŷ·x̂, their fold, the per-channel dw/db (before dx: dinp may be dout),
 * then the elementwise dx. */

__device__ __forceinline__ float gn_dy(float d, float xh, float wc, float bc, int silu) {
    if (!silu) return d;
    float y = xh * wc + bc, s = 1.0f / (1.0f + expf(-y));
    return d * s * (1.0f + y * (1.0f - s));
}

/* grid (chunks, N·G) */
__global__ void gn_bw_sums_kernel(double2 *part, const float *dy, const float *x, const float2 *stats, const float *w,
                                  const float *b, long long cnt, int chunks, int C, int cpg, long long HW, int silu,
                                  int G) {
    long long ng = blockIdx.y;
    float2 st = stats[ng];
    int c0 = (int)(ng % G) * cpg;
    const float *xg = x + ng * cnt, *dg = dy + ng * cnt;
    long long lo = cnt * blockIdx.x / chunks, hi = cnt * (blockIdx.x + 1) / chunks;
    double s1 = 0, s2 = 0;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        int c = c0 + (int)(i / HW);
        float wc = w ? w[c] : 1.0f, bc = b ? b[c] : 0.0f, xh = (xg[i] - st.x) * st.y;
        double dh = (double)gn_dy(dg[i], xh, wc, bc, silu) * wc;
        s1 += dh;
        s2 += dh * xh;
    }
    k_block_sum2_d<GN_THREADS>(&s1, &s2);
    if (threadIdx.x == 0) part[ng * chunks + blockIdx.x] = make_double2(s1, s2);
    (void)C;
}

__global__ void gn_bw_fold_kernel(float2 *means, const double2 *part, long long cnt, int chunks, int groups) {
    int ng = blockIdx.x * blockDim.x + threadIdx.x;
    if (ng >= groups) return;
    double s1 = 0, s2 = 0;
    for (int c = 0; c < chunks; c++) { double2 p = part[(long long)ng * chunks + c]; s1 += p.x; s2 += p.y; }
    means[ng] = make_float2((float)(s1 / cnt), (float)(s2 / cnt));
}

/* one block per channel: dw[c] += Σ_n Σ_hw dy·x̂, db[c] += Σ dy */
__global__ void gn_bw_param_kernel(float *dw, float *db, const float *dy, const float *x, const float2 *stats,
                                   const float *w, const float *b, int N, int C, long long HW, int cpg, int G, int silu) {
    for (int c = blockIdx.x; c < C; c += gridDim.x) {
        float wc = w ? w[c] : 1.0f, bc = b ? b[c] : 0.0f;
        double s1 = 0, s2 = 0;
        for (int n = 0; n < N; n++) {
            float2 st = stats[(long long)n * G + c / cpg];
            const float *xr = x + ((long long)n * C + c) * HW, *dr = dy + ((long long)n * C + c) * HW;
            for (long long i = threadIdx.x; i < HW; i += blockDim.x) {
                float xh = (xr[i] - st.x) * st.y, d = gn_dy(dr[i], xh, wc, bc, silu);
                s1 += d;
                s2 += (double)d * xh;
            }
        }
        k_block_sum2_d<GN_THREADS>(&s1, &s2);
        if (threadIdx.x == 0) {
            if (db) db[c] += (float)s1;
            if (dw) dw[c] += (float)s2;
        }
    }
}

/* grid (N·C, hw blocks) */
__global__ void gn_bw_apply_kernel(float *dx, const float *dy, const float *x, const float2 *stats, const float2 *means,
                                   const float *w, const float *b, int C, long long HW, int cpg, int silu) {
    long long nc = blockIdx.x;
    int c = (int)(nc % C);
    float2 st = stats[nc / cpg], mm = means[nc / cpg];
    float wc = w ? w[c] : 1.0f, bc = b ? b[c] : 0.0f;
    const float *xr = x + nc * HW, *dr = dy + nc * HW;
    float *o = dx + nc * HW;
    for (long long i = (long long)blockIdx.y * blockDim.x + threadIdx.x; i < HW;
         i += (long long)gridDim.y * blockDim.x) {
        float xh = (xr[i] - st.x) * st.y, dh = gn_dy(dr[i], xh, wc, bc, silu) * wc;
        o[i] = st.y * (dh - mm.x - xh * mm.y);
    }
}

extern "C" size_t k_group_norm_backward_scratch_bytes(int N, int C, int HW, int G) {
    long long cnt = (long long)(C / G) * HW;
    size_t groups = (size_t)N * G;
    return k_group_norm_scratch_bytes(N, C, HW, G) + groups * gn_chunks(cnt) * sizeof(double2) +
           groups * sizeof(float2) + 16;
}

extern "C" cudaError_t k_group_norm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                             const float *w, const float *b, void *scratch, int N, int C, int HW,
                                             int G, float eps, int silu, cudaStream_t stream) {
    if (N <= 0 || C <= 0 || HW <= 0) return cudaSuccess;
    int cpg = C / G, groups = N * G;
    long long cnt = (long long)cpg * HW;
    int chunks = gn_chunks(cnt);
    double2 *part = (double2 *)scratch;
    float2 *stats = (float2 *)(part + (size_t)groups * chunks);
    double2 *part2 = (double2 *)((char *)scratch + ((k_group_norm_scratch_bytes(N, C, HW, G) + 15) & ~(size_t)15));
    float2 *means = (float2 *)(part2 + (size_t)groups * chunks);
    cudaError_t e = gn_group_stats(stats, part, inp, cnt, chunks, groups, eps, stream);
    if (e != cudaSuccess) return e;
    gn_bw_sums_kernel<<<dim3(chunks, groups), GN_THREADS, 0, stream>>>(part2, dout, inp, stats, w, b, cnt, chunks, C, cpg,
                                                                      HW, silu, G);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
    gn_bw_fold_kernel<<<(groups + 127) / 128, 128, 0, stream>>>(means, part2, cnt, chunks, groups);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
    if (dw || db) {
        gn_bw_param_kernel<<<k_blocks(C, 1, K_MAX_GRID_X), GN_THREADS, 0, stream>>>(dw, db, dout, inp, stats, w, b, N, C,
                                                                                   HW, cpg, G, silu);
        if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    dim3 grid((unsigned)((long long)N * C), k_blocks(HW, GN_THREADS * 4, K_MAX_GRID_Y));
    gn_bw_apply_kernel<<<grid, GN_THREADS, 0, stream>>>(dinp, dout, inp, stats, means, w, b, C, HW, cpg, silu);
    return cudaGetLastError();
}

/* LayerNorm backward.  Row statistics first (one warp per row, kept in scratch), then the
 * column sums dw += Σ_r dy·x̂, db += Σ_r dy (atomics over row chunks), then per row
 * dx = rstd·(dŷ − mean(dŷ) − x̂·mean(dŷ·x̂)), dŷ = dy·w.  dinp may equal dout. */
__global__ void ln_stats_kernel(float2 *st, const float *x, int R, int C, float eps) {
    int lane = threadIdx.x % K_WARP;
    for (long long row = (long long)blockIdx.x * (blockDim.x / K_WARP) + threadIdx.x / K_WARP; row < R;
         row += (long long)gridDim.x * (blockDim.x / K_WARP)) {
        const float *xr = x + row * C;
        float s = 0;
        for (int i = lane; i < C; i += K_WARP) s += xr[i];
        float mean = k_warp_sum(s) / C, q = 0;
        for (int i = lane; i < C; i += K_WARP) { float d = xr[i] - mean; q += d * d; }
        float rstd = 1.0f / sqrtf(k_warp_sum(q) / C + eps);
        if (lane == 0) st[row] = make_float2(mean, rstd);
    }
}

__global__ void ln_bw_param_kernel(float *dw, float *db, const float *dy, const float *x, const float2 *st, int R, int C,
                                   long long chunk) {
    for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < C; c += gridDim.x * blockDim.x) {
        long long lo = chunk * blockIdx.y, hi = lo + chunk < R ? lo + chunk : R;
        float s1 = 0, s2 = 0;
        for (long long r = lo; r < hi; r++) {
            float d = dy[r * C + c];
            s1 += d;
            s2 += d * (x[r * C + c] - st[r].x) * st[r].y;
        }
        if (hi > lo) {
            if (db) atomicAdd(db + c, s1);
            if (dw) atomicAdd(dw + c, s2);
        }
    }
}

__global__ void ln_bw_kernel(float *dx, const float *dy, const float *x, const float *w, const float2 *st, int R, int C) {
    int lane = threadIdx.x % K_WARP;
    for (long long row = (long long)blockIdx.x * (blockDim.x / K_WARP) + threadIdx.x / K_WARP; row < R;
         row += (long long)gridDim.x * (blockDim.x / K_WARP)) {
        const float *xr = x + row * C, *dr = dy + row * C;
        float m = st[row].x, rs = st[row].y, s1 = 0, s2 = 0;
        for (int i = lane; i < C; i += K_WARP) {
            float dh = dr[i] * (w ? w[i] : 1.0f), xh = (xr[i] - m) * rs;
            s1 += dh;
            s2 += dh * xh;
        }
        s1 = k_warp_sum(s1) / C;
        s2 = k_warp_sum(s2) / C;
        for (int i = lane; i < C; i += K_WARP) {
            float dh = dr[i] * (w ? w[i] : 1.0f), xh = (xr[i] - m) * rs;
            dx[row * C + i] = rs * (dh - s1 - xh * s2);
        }
    }
}

extern "C" size_t k_layer_norm_backward_scratch_bytes(int R) { return (size_t)(R > 0 ? R : 1) * sizeof(float2) + 16; }

extern "C" cudaError_t k_layer_norm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                             const float *w, void *scratch, int R, int C, float eps,
                                             cudaStream_t stream) {
    if (R <= 0 || C <= 0) return cudaSuccess;
    float2 *st = (float2 *)scratch;
    ln_stats_kernel<<<k_blocks(R, 8, K_MAX_GRID_X), 256, 0, stream>>>(st, inp, R, C, eps);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (dw || db) {
        long long chunks = (R + 63) / 64;
        if (chunks > K_MAX_GRID_Y) chunks = K_MAX_GRID_Y;
        long long chunk = (R + chunks - 1) / chunks;
        dim3 grid(k_blocks(C, 256, K_MAX_GRID_X), (unsigned)chunks);
        ln_bw_param_kernel<<<grid, 256, 0, stream>>>(dw, db, dout, inp, st, R, C, chunk);
        if ((e = cudaGetLastError()) != cudaSuccess) return e;
    }
    ln_bw_kernel<<<k_blocks(R, 8, K_MAX_GRID_X), 256, 0, stream>>>(dinp, dout, inp, w, st, R, C);
    return cudaGetLastError();
}
