/* common.cuh — helpers shared by the kernels/ .cu files: warp and block reductions and
 * grid sizing.  Header-only, device code; included by .cu files alone. */
#ifndef SD_KERNELS_COMMON_CUH
#define SD_KERNELS_COMMON_CUH

#include <cuda_runtime.h>
#include <math.h>

#include "kernels.h"

#define K_WARP 32

/* Grids are capped and kernels loop grid-stride, so any size launches (gridDim.y and .z
 * are limited to 65535, .x to 2^31 - 1). */
#define K_MAX_GRID_X 1048576LL
#define K_MAX_GRID_Y 65535LL

static inline unsigned k_blocks(long long work, int per_block, long long cap) {
    long long b = (work + per_block - 1) / per_block;
    if (b < 1) b = 1;
    if (b > cap) b = cap;
    return (unsigned)b;
}

__device__ __forceinline__ float k_warp_sum(float v) {
    for (int o = K_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double k_warp_sum_d(double v) {
    for (int o = K_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float k_warp_max(float v) {
    for (int o = K_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Two fp64 sums over a block of NT threads (NT a multiple of 32); the totals reach thread 0
 * (other threads get partial values).  Ends with the block synchronised, so it may run
 * in a loop. */
template <int NT>
__device__ __forceinline__ void k_block_sum2_d(double *s1, double *s2) {
    __shared__ double a[NT / K_WARP], b[NT / K_WARP];
    double x = k_warp_sum_d(*s1), y = k_warp_sum_d(*s2);
    if (threadIdx.x % K_WARP == 0) { a[threadIdx.x / K_WARP] = x; b[threadIdx.x / K_WARP] = y; }
    __syncthreads();
    if (threadIdx.x == 0) {
        x = 0; y = 0;
        for (int w = 0; w < NT / K_WARP; w++) { x += a[w]; y += b[w]; }
    }
    *s1 = x; *s2 = y;
    __syncthreads();
}

/* Same formulas as the CPU backend (cpu.c), in precise fp32 (no fast-math). */
__device__ __forceinline__ float k_silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float k_gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
__device__ __forceinline__ float k_quick_gelu(float x) { return x / (1.0f + expf(-1.702f * x)); }

#endif
