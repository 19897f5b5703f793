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
    __shared__ double ss_sum[GN_THREADS / K_WARP], ss_sq[GN_THREADS / K_WARP];
    long long ng = blockIdx.y;
    const float *xg = x + ng * cnt;
    long long lo = cnt * blockIdx.x / chunks, hi = cnt * (blockIdx.x + 1) / chunks;
    double s = 0, q = 0;
    for (long long i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        double v = xg[i];
        s += v;
        q += v * v;
    }
    s = k_warp_sum_d(s);
    q = k_warp_sum_d(q);
    int warp = threadIdx.x / K_WARP, lane = threadIdx.x % K_WARP;
    if (lane == 0) { ss_sum[warp] = s; ss_sq[warp] = q; }
    __syncthreads();
    if (threadIdx.x == 0) {
        s = 0; q = 0;
        for (int w = 0; w < GN_THREADS / K_WARP; w++) { s += ss_sum[w]; q += ss_sq[w]; }
        part[ng * chunks + blockIdx.x] = make_double2(s, q);
    }
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

extern "C" cudaError_t k_group_norm(float *out, const float *inp, const float *w, const float *b,
                                    void *scratch, int N, int C, int HW, int G, float eps, int silu,
                                    cudaStream_t stream) {
    if (N <= 0 || C <= 0 || HW <= 0) return cudaSuccess;
    int cpg = C / G, groups = N * G;
    long long cnt = (long long)cpg * HW;
    int chunks = gn_chunks(cnt);
    double2 *part = (double2 *)scratch;
    float2 *stats = (float2 *)(part + (size_t)groups * chunks);
    gn_stats_kernel<<<dim3(chunks, groups), GN_THREADS, 0, stream>>>(part, inp, cnt, chunks);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    gn_finalize_kernel<<<(groups + 127) / 128, 128, 0, stream>>>(stats, part, cnt, chunks, groups, eps);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
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
