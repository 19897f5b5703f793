/* elementwise.cu — the memory-bound ops: activations, GEGLU, nearest upsampling,
 * timestep embedding, embedding gather, axpby, per-channel and per-row adds, channel
 * concatenation, transpose, zero padding.
 *
 * Every kernel loops grid-stride over a grid capped by k_blocks, so sizes past 2^31
 * values (a batch of 8 VAE activations at 1024²) launch fine; indices are 64-bit where
 * a tensor can be that large.  "Row" kernels use a 2-D grid, rows in y and the
 * contiguous inner dimension in x, which avoids a division per element.  Formulas match
 * the CPU backend exactly (precise expf/erff/sinf/cosf; nvcc is not given fast-math). */
#include "common.cuh"

#define EW_THREADS 256

__global__ void act_kernel(float *y, const float *x, long long n, int kind) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i];
        y[i] = kind == 0 ? k_silu(v) : kind == 1 ? k_gelu_erf(v) : k_quick_gelu(v);
    }
}

extern "C" cudaError_t k_act(float *out, const float *inp, long long n, int kind, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    act_kernel<<<k_blocks(n, EW_THREADS, K_MAX_GRID_X), EW_THREADS, 0, stream>>>(out, inp, n, kind);
    return cudaGetLastError();
}

/* grid (x over C, y over rows) */
__global__ void geglu_kernel(float *y, const float *x, int R, int C) {
    for (long long r = blockIdx.y; r < R; r += gridDim.y) {
        const float *a = x + r * 2 * C, *g = a + C;
        float *yr = y + r * C;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < C; i += gridDim.x * blockDim.x)
            yr[i] = a[i] * k_gelu_erf(g[i]);
    }
}

extern "C" cudaError_t k_geglu(float *out, const float *inp, int R, int C, cudaStream_t stream) {
    if (R <= 0 || C <= 0) return cudaSuccess;
    dim3 grid(k_blocks(C, EW_THREADS, K_MAX_GRID_X), k_blocks(R, 1, K_MAX_GRID_Y));
    geglu_kernel<<<grid, EW_THREADS, 0, stream>>>(out, inp, R, C);
    return cudaGetLastError();
}

/* grid (x over 2W, y over output rows NC·2H) */
__global__ void upsample2x_kernel(float *y, const float *x, long long rows, int H, int W) {
    int W2 = 2 * W;
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        long long nc = r / (2 * H);
        int i = (int)(r % (2 * H));
        const float *xr = x + (nc * H + i / 2) * W;
        float *yr = y + r * W2;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < W2; j += gridDim.x * blockDim.x)
            yr[j] = xr[j / 2];
    }
}

extern "C" cudaError_t k_upsample2x(float *out, const float *inp, long long NC, int H, int W,
                                    cudaStream_t stream) {
    if (NC <= 0 || H <= 0 || W <= 0) return cudaSuccess;
    long long rows = NC * 2 * H;
    dim3 grid(k_blocks(2LL * W, EW_THREADS, K_MAX_GRID_X), k_blocks(rows, 1, K_MAX_GRID_Y));
    upsample2x_kernel<<<grid, EW_THREADS, 0, stream>>>(out, inp, rows, H, W);
    return cudaGetLastError();
}

/* one thread per (n, i < half); fp32 exactly as cpu.c (and diffusers) computes it */
__global__ void timestep_kernel(float *y, const float *t, int N, int dim, int flip, float shift,
                                float max_period) {
    int half = dim / 2;
    long long total = (long long)N * half;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        int n = (int)(e / half), i = (int)(e % half);
        float f = expf(-logf(max_period) * (float)i / ((float)half - shift));
        float a = t[n] * f;
        float *yr = y + (size_t)n * dim;
        yr[flip ? i : half + i] = cosf(a);
        yr[flip ? half + i : i] = sinf(a);
        if ((dim & 1) && i == 0) yr[dim - 1] = 0.0f;
    }
}

extern "C" cudaError_t k_timestep_embedding(float *out, const float *t, int N, int dim, int flip_sin_to_cos,
                                            float shift, float max_period, cudaStream_t stream) {
    if (N <= 0 || dim <= 0) return cudaSuccess;
    if (dim == 1) {   /* half = 0: the CPU writes only the odd tail zero */
        cudaError_t e = cudaMemsetAsync(out, 0, (size_t)N * sizeof(float), stream);
        return e != cudaSuccess ? e : cudaGetLastError();
    }
    long long total = (long long)N * (dim / 2);
    timestep_kernel<<<k_blocks(total, EW_THREADS, K_MAX_GRID_X), EW_THREADS, 0, stream>>>(
        out, t, N, dim, flip_sin_to_cos, shift, max_period);
    return cudaGetLastError();
}

/* grid (x over D, y over ids) */
__global__ void embedding_kernel(float *y, const float *table, const int *ids, int n, int D) {
    for (long long r = blockIdx.y; r < n; r += gridDim.y) {
        const float *src = table + (long long)ids[r] * D;
        float *dst = y + r * D;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < D; i += gridDim.x * blockDim.x) dst[i] = src[i];
    }
}

extern "C" cudaError_t k_embedding(float *out, const float *table, const int *ids, int n, int D,
                                   cudaStream_t stream) {
    if (n <= 0 || D <= 0) return cudaSuccess;
    dim3 grid(k_blocks(D, EW_THREADS, K_MAX_GRID_X), k_blocks(n, 1, K_MAX_GRID_Y));
    embedding_kernel<<<grid, EW_THREADS, 0, stream>>>(out, table, ids, n, D);
    return cudaGetLastError();
}

__global__ void axpby_kernel(float *y, float alpha, const float *a, float beta, const float *b, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = b ? alpha * a[i] + beta * b[i] : alpha * a[i];
}

extern "C" cudaError_t k_axpby(float *out, float alpha, const float *a, float beta, const float *b,
                               long long n, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    axpby_kernel<<<k_blocks(n, EW_THREADS, K_MAX_GRID_X), EW_THREADS, 0, stream>>>(out, alpha, a, beta, b, n);
    return cudaGetLastError();
}

/* grid (x over inner, y over rows): out[r, :] += v[r % C_mod] */
__global__ void add_channel_kernel(float *y, const float *v, long long rows, int C_mod, long long inner) {
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        float a = v[r % C_mod];
        float *yr = y + r * inner;
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < inner;
             i += (long long)gridDim.x * blockDim.x)
            yr[i] += a;
    }
}

extern "C" cudaError_t k_add_channel(float *out, const float *v, long long rows, int C_mod, long long inner,
                                     cudaStream_t stream) {
    if (rows <= 0 || inner <= 0 || C_mod <= 0) return cudaSuccess;
    dim3 grid(k_blocks(inner, EW_THREADS * 4, K_MAX_GRID_X), k_blocks(rows, 1, K_MAX_GRID_Y));
    add_channel_kernel<<<grid, EW_THREADS, 0, stream>>>(out, v, rows, C_mod, inner);
    return cudaGetLastError();
}

/* grid (x over O, y over rows) */
__global__ void add_bias_rows_kernel(float *y, const float *b, int R, int O) {
    for (long long r = blockIdx.y; r < R; r += gridDim.y) {
        float *yr = y + r * O;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < O; i += gridDim.x * blockDim.x) yr[i] += b[i];
    }
}

extern "C" cudaError_t k_add_bias_rows(float *out, const float *b, int R, int O, cudaStream_t stream) {
    if (R <= 0 || O <= 0) return cudaSuccess;
    dim3 grid(k_blocks(O, EW_THREADS, K_MAX_GRID_X), k_blocks(R, 1, K_MAX_GRID_Y));
    add_bias_rows_kernel<<<grid, EW_THREADS, 0, stream>>>(out, b, R, O);
    return cudaGetLastError();
}

/* grid (x over (Ca + Cb)·HW, y over N) */
__global__ void concat_kernel(float *y, const float *a, long long na, const float *b, long long nb, int N) {
    long long row = na + nb;
    for (long long n = blockIdx.y; n < N; n += gridDim.y) {
        float *yr = y + n * row;
        const float *ar = a + n * na, *br = b + n * nb;
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < row;
             i += (long long)gridDim.x * blockDim.x)
            yr[i] = i < na ? ar[i] : br[i - na];
    }
}

extern "C" cudaError_t k_concat_channels(float *out, const float *a, int Ca, const float *b, int Cb, int N,
                                         long long HW, cudaStream_t stream) {
    long long na = (long long)Ca * HW, nb = (long long)Cb * HW;
    if (N <= 0 || na + nb <= 0) return cudaSuccess;
    dim3 grid(k_blocks(na + nb, EW_THREADS * 4, K_MAX_GRID_X), k_blocks(N, 1, K_MAX_GRID_Y));
    concat_kernel<<<grid, EW_THREADS, 0, stream>>>(out, a, na, b, nb, N);
    return cudaGetLastError();
}

/* 32×32 tiles through shared memory (padded against bank conflicts), block 32×8;
 * grid (x over C tiles, y over R tiles, z over N), tiles looped grid-stride. */
__global__ void transpose_kernel(float *out, const float *inp, int R, int C) {
    __shared__ float tile[32][33];
    const float *x = inp + (size_t)blockIdx.z * R * C;
    float *y = out + (size_t)blockIdx.z * R * C;
    for (int r0 = blockIdx.y * 32; r0 < R; r0 += gridDim.y * 32)
        for (int c0 = blockIdx.x * 32; c0 < C; c0 += gridDim.x * 32) {
            for (int k = threadIdx.y; k < 32; k += 8) {
                int r = r0 + k, c = c0 + threadIdx.x;
                if (r < R && c < C) tile[k][threadIdx.x] = x[(size_t)r * C + c];
            }
            __syncthreads();
            for (int k = threadIdx.y; k < 32; k += 8) {
                int c = c0 + k, r = r0 + threadIdx.x;
                if (r < R && c < C) y[(size_t)c * R + r] = tile[threadIdx.x][k];
            }
            __syncthreads();
        }
}

extern "C" cudaError_t k_transpose(float *out, const float *inp, int N, int R, int C, cudaStream_t stream) {
    if (N <= 0 || R <= 0 || C <= 0) return cudaSuccess;
    if (N > 65535) return cudaErrorInvalidValue;
    dim3 grid(k_blocks(C, 32, K_MAX_GRID_Y), k_blocks(R, 32, K_MAX_GRID_Y), (unsigned)N);
    transpose_kernel<<<grid, dim3(32, 8), 0, stream>>>(out, inp, R, C);
    return cudaGetLastError();
}

/* grid (x over padded W, y over padded rows NC·Hp) */
__global__ void pad2d_kernel(float *y, const float *x, long long rows, int H, int W, int Hp, int Wp,
                             int pt, int pl) {
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        long long nc = r / Hp;
        int iy = (int)(r % Hp) - pt;
        float *yr = y + r * Wp;
        const float *xr = iy >= 0 && iy < H ? x + (nc * H + iy) * W : NULL;   /* NULL: a padding row */
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < Wp; j += gridDim.x * blockDim.x) {
            int ix = j - pl;
            yr[j] = (xr && ix >= 0 && ix < W) ? xr[ix] : 0.0f;
        }
    }
}

extern "C" cudaError_t k_pad2d(float *out, const float *inp, long long NC, int H, int W, int pt, int pl,
                               int pb, int pr, cudaStream_t stream) {
    int Hp = H + pt + pb, Wp = W + pl + pr;
    if (NC <= 0 || Hp <= 0 || Wp <= 0) return cudaSuccess;
    long long rows = NC * Hp;
    dim3 grid(k_blocks(Wp, EW_THREADS, K_MAX_GRID_X), k_blocks(rows, 1, K_MAX_GRID_Y));
    pad2d_kernel<<<grid, EW_THREADS, 0, stream>>>(out, inp, rows, H, W, Hp, Wp, pt, pl);
    return cudaGetLastError();
}

/* ---- backward and optimiser (the training ops; formulas as cpu_backward.c) ---- */

__device__ __forceinline__ float k_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float k_gelu_erf_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    return cdf + x * 0.39894228040143268f * expf(-0.5f * x * x);
}

__global__ void act_bw_kernel(float *dx, const float *dy, const float *x, long long n, int kind) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = x[i], d, s;
        if (kind == 0) { s = k_sigmoid(v); d = s * (1.0f + v * (1.0f - s)); }
        else if (kind == 1) d = k_gelu_erf_grad(v);
        else { s = k_sigmoid(1.702f * v); d = s * (1.0f + 1.702f * v * (1.0f - s)); }
        dx[i] = dy[i] * d;
    }
}

extern "C" cudaError_t k_act_backward(float *dinp, const float *dout, const float *inp, long long n, int kind,
                                      cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    act_bw_kernel<<<k_blocks(n, EW_THREADS, K_MAX_GRID_X), EW_THREADS, 0, stream>>>(dinp, dout, inp, n, kind);
    return cudaGetLastError();
}

/* grid (x over C, y over rows); reads a, g before writing (dinp may be inp) */
__global__ void geglu_bw_kernel(float *dx, const float *dy, const float *x, int R, int C) {
    for (long long r = blockIdx.y; r < R; r += gridDim.y) {
        const float *a = x + r * 2 * C, *g = a + C, *d = dy + r * C;
        float *da = dx + r * 2 * C, *dg = da + C;
        for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < C; i += gridDim.x * blockDim.x) {
            float av = a[i], gv = g[i], dv = d[i];
            da[i] = dv * k_gelu_erf(gv);
            dg[i] = dv * av * k_gelu_erf_grad(gv);
        }
    }
}

extern "C" cudaError_t k_geglu_backward(float *dinp, const float *dout, const float *inp, int R, int C,
                                        cudaStream_t stream) {
    if (R <= 0 || C <= 0) return cudaSuccess;
    dim3 grid(k_blocks(C, EW_THREADS, K_MAX_GRID_X), k_blocks(R, 1, K_MAX_GRID_Y));
    geglu_bw_kernel<<<grid, EW_THREADS, 0, stream>>>(dinp, dout, inp, R, C);
    return cudaGetLastError();
}

/* grid (x over W, y over input rows NC·H): each input pixel sums its 2×2 block */
__global__ void upsample2x_bw_kernel(float *dx, const float *dy, long long rows, int H, int W) {
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        long long nc = r / H;
        int i = (int)(r % H);
        const float *d0 = dy + (nc * 2 * H + 2 * i) * 2 * W, *d1 = d0 + 2 * W;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < W; j += gridDim.x * blockDim.x)
            dx[r * W + j] = d0[2 * j] + d0[2 * j + 1] + d1[2 * j] + d1[2 * j + 1];
    }
}

extern "C" cudaError_t k_upsample2x_backward(float *dinp, const float *dout, long long NC, int H, int W,
                                             cudaStream_t stream) {
    if (NC <= 0 || H <= 0 || W <= 0) return cudaSuccess;
    long long rows = NC * H;
    dim3 grid(k_blocks(W, EW_THREADS, K_MAX_GRID_X), k_blocks(rows, 1, K_MAX_GRID_Y));
    upsample2x_bw_kernel<<<grid, EW_THREADS, 0, stream>>>(dinp, dout, rows, H, W);
    return cudaGetLastError();
}

/* One block per row (grid-stride over rows): the row's sum in fp64, then out[r] = s, or
 * out[r % mod] += s when accumulating (atomics: rows sharing a channel). */
__global__ void row_sums_kernel(float *out, const float *x, long long rows, long long inner, int mod, int acc) {
    __shared__ double part[EW_THREADS / K_WARP];
    for (long long r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *xr = x + r * inner;
        double s = 0;
        for (long long i = threadIdx.x; i < inner; i += blockDim.x) s += xr[i];
        s = k_warp_sum_d(s);
        if (threadIdx.x % K_WARP == 0) part[threadIdx.x / K_WARP] = s;
        __syncthreads();
        if (threadIdx.x == 0) {
            double t = 0;
            for (int w = 0; w < EW_THREADS / K_WARP; w++) t += part[w];
            if (acc) atomicAdd(out + r % mod, (float)t);
            else out[r] = (float)t;
        }
        __syncthreads();
    }
}

extern "C" cudaError_t k_row_sums(float *out, const float *inp, long long rows, long long inner, int mod, int accumulate,
                                  cudaStream_t stream) {
    if (rows <= 0) return cudaSuccess;
    row_sums_kernel<<<k_blocks(rows, 1, K_MAX_GRID_X), EW_THREADS, 0, stream>>>(out, inp, rows, inner, mod, accumulate);
    return cudaGetLastError();
}

/* grid (x over O, y over row chunks): partial column sums, accumulated with atomics */
__global__ void col_sums_kernel(float *out, const float *x, long long R, int O, long long chunk) {
    for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < O; o += gridDim.x * blockDim.x) {
        long long lo = chunk * blockIdx.y, hi = lo + chunk < R ? lo + chunk : R;
        float s = 0;
        for (long long r = lo; r < hi; r++) s += x[r * O + o];
        if (hi > lo) atomicAdd(out + o, s);
    }
}

extern "C" cudaError_t k_col_sums_acc(float *out, const float *inp, long long R, int O, cudaStream_t stream) {
    if (R <= 0 || O <= 0) return cudaSuccess;
    long long chunks = (R + 255) / 256;
    if (chunks > K_MAX_GRID_Y) chunks = K_MAX_GRID_Y;
    long long chunk = (R + chunks - 1) / chunks;
    dim3 grid(k_blocks(O, EW_THREADS, K_MAX_GRID_X), (unsigned)chunks);
    col_sums_kernel<<<grid, EW_THREADS, 0, stream>>>(out, inp, R, O, chunk);
    return cudaGetLastError();
}

/* grid (x over a row's Ca·HW + Cb·HW, y over n): the inverse of concat_channels */
__global__ void split_kernel(float *a, long long na, float *b, long long nb, const float *x, int N) {
    for (long long n = blockIdx.y; n < N; n += gridDim.y) {
        const float *xr = x + n * (na + nb);
        for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < na + nb;
             i += (long long)gridDim.x * blockDim.x) {
            if (i < na) { if (a) a[n * na + i] = xr[i]; }
            else if (b) b[n * nb + i - na] = xr[i];
        }
    }
}

extern "C" cudaError_t k_split_channels(float *a, int Ca, float *b, int Cb, const float *inp, int N, long long HW,
                                        cudaStream_t stream) {
    if (N <= 0 || HW <= 0 || (!a && !b)) return cudaSuccess;
    long long na = (long long)Ca * HW, nb = (long long)Cb * HW;
    dim3 grid(k_blocks(na + nb, EW_THREADS, K_MAX_GRID_X), k_blocks(N, 1, K_MAX_GRID_Y));
    split_kernel<<<grid, EW_THREADS, 0, stream>>>(a, na, b, nb, inp, N);
    return cudaGetLastError();
}

/* dtable[ids[i], :] += dout[i, :] (atomics: ids repeat) */
__global__ void embedding_bw_kernel(float *dt, const float *dy, const int *ids, int n, int D) {
    long long total = (long long)n * D;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x)
        atomicAdd(dt + (long long)ids[e / D] * D + e % D, dy[e]);
}

extern "C" cudaError_t k_embedding_backward(float *dtable, const float *dout, const int *ids, int n, int D,
                                            cudaStream_t stream) {
    if (n <= 0 || D <= 0) return cudaSuccess;
    embedding_bw_kernel<<<k_blocks((long long)n * D, EW_THREADS, K_MAX_GRID_X), EW_THREADS, 0, stream>>>(
        dtable, dout, ids, n, D);
    return cudaGetLastError();
}

/* Partial sums of a·b in fp64, one per block (the host adds k_dot_blocks of them). */
__global__ void dot_kernel(double *part, const float *a, const float *b, long long n) {
    __shared__ double wsum[EW_THREADS / K_WARP];
    double s = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        s += (double)a[i] * b[i];
    s = k_warp_sum_d(s);
    if (threadIdx.x % K_WARP == 0) wsum[threadIdx.x / K_WARP] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int w = 0; w < EW_THREADS / K_WARP; w++) t += wsum[w];
        part[blockIdx.x] = t;
    }
}

extern "C" int k_dot_blocks(long long n) { return (int)k_blocks(n, EW_THREADS * 8, K_DOT_MAX_BLOCKS); }

extern "C" cudaError_t k_dot_partials(double *part, const float *a, const float *b, long long n, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    dot_kernel<<<k_dot_blocks(n), EW_THREADS, 0, stream>>>(part, a, b, n);
    return cudaGetLastError();
}

__global__ void adamw_kernel(float *p, const float *g, float *m, float *v, long long n, float lr, float b1, float b2,
                             float eps, float wd, float bc1, float bc2) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.0f - b1) * gi;
        float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float mh = mi / bc1, vh = vi / bc2;
        p[i] -= lr * (mh / (sqrtf(vh) + eps) + wd * p[i]);
    }
}

extern "C" cudaError_t k_adamw(float *p, const float *g, float *m, float *v, long long n, float lr, float b1, float b2,
                               float eps, float wd, float bc1, float bc2, cudaStream_t stream) {
    if (n <= 0) return cudaSuccess;
    adamw_kernel<<<k_blocks(n, EW_THREADS, K_MAX_GRID_X), EW_THREADS, 0, stream>>>(p, g, m, v, n, lr, b1, b2, eps, wd,
                                                                                bc1, bc2);
    return cudaGetLastError();
}

/* The adjoint of k_pad2d: out [NC, H, W] = the interior of inp [NC, H+pt+pb, W+pl+pr]. */
__global__ void crop2d_kernel(float *y, const float *x, long long rows, int H, int W, int Hp, int Wp, int pt, int pl) {
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        long long nc = r / H;
        int i = (int)(r % H);
        const float *xr = x + (nc * Hp + i + pt) * Wp + pl;
        for (int j = blockIdx.x * blockDim.x + threadIdx.x; j < W; j += gridDim.x * blockDim.x) y[r * W + j] = xr[j];
    }
}

extern "C" cudaError_t k_crop2d(float *out, const float *inp, long long NC, int H, int W, int pt, int pl, int pb, int pr,
                                cudaStream_t stream) {
    if (NC <= 0 || H <= 0 || W <= 0) return cudaSuccess;
    long long rows = NC * H;
    dim3 grid(k_blocks(W, EW_THREADS, K_MAX_GRID_X), k_blocks(rows, 1, K_MAX_GRID_Y));
    crop2d_kernel<<<grid, EW_THREADS, 0, stream>>>(out, inp, rows, H, W, H + pt + pb, W + pl + pr, pt, pl);
    return cudaGetLastError();
}
