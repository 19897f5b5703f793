/* cuda.c — the CUDA backend, stage one: every op of backend.h on the GPU, fp32 storage,
 * correct first.
 *
 * The layer between the model code (backend.h's fp32-pointer ops) and the launchers of
 * kernels/kernels.h: it checks dimensions, owns the scratch buffers, and turns every
 * device, cuBLAS and cuDNN failure into the backend's sticky error (naming the op and
 * the library's own error string), so model code stays free of per-op branches.
 *
 *  - One stream per backend; cuBLAS and cuDNN run on it.  Everything is asynchronous
 *    except download (which waits, so the host data is ready when it returns) and sync.
 *    upload may return before the copy lands; the host buffer can be reused at once
 *    (pageable memory is staged by the driver before the call returns).
 *  - GEMM and linear: cublasGemmStridedBatchedEx on fp32 data, row-major handled by
 *    computing Cᵀ = op(B)ᵀ·op(A)ᵀ in cuBLAS's column-major terms.  Compute type TF32
 *    (tensor cores, 10-bit mantissa products, fp32 accumulation) by default, plain fp32
 *    when SDXLD_CUDA_TF32=0 or backend_cuda_set_tf32(be, 0).  linear's bias is a
 *    separate row-add kernel.
 *  - conv2d: cuDNN (legacy convolution API, NCHW fp32).  The algorithm is chosen once
 *    per shape from cuDNN's heuristics (cached plans) and the workspace only ever grows,
 *    so steady-state passes allocate nothing.  Asymmetric padding (the VAE encoder's
 *    right/bottom pad) is padded explicitly into a scratch buffer; 1×1 stride-1 convs are
 *    one strided-batched GEMM.  Batches whose tensors pass 2^30 values run in chunks of
 *    images (cuDNN's legacy descriptors count elements in int).
 *  - attention: the flash-style kernel in kernels/attention.cu (no score matrix).
 *  - The backward ops, dot and AdamW (training) are in cuda_backward.c.
 *  - Memory: cudaMalloc per alloc call (arenas make these few and large), every byte
 *    counted, so mem_in_use / mem_peak report what sdxld holds on the device (the
 *    CUDA context and the libraries' own handles excluded).  Freeing waits for the
 *    stream first, since queued work may still read the buffer.
 *
 * What stage two changes (docs/cuda.md): weights and activations in bf16 (or fp16 with
 * the VAE scaled), cuBLASLt with fused bias/GELU epilogues, tensor-core attention
 * (cuDNN SDPA or an own wgmma kernel), NHWC convolutions, CUDA graphs for the step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>
#include <cublas_v2.h>
#include <cudnn.h>

#include "cuda_internal.h"


/* ---- errors ---- */

int cuda_fail(struct backend *be, sd_status st, const char *op, const char *what, const char *detail) {
    char msg[400];
    snprintf(msg, sizeof msg, "%s: %s: %s", op, what, detail);
    backend_set_error(be, st, msg);
    return 0;
}

/* 1 when e is cudaSuccess; otherwise records the error (first one wins) and returns 0. */
int cuda_cu_ok(struct backend *be, cudaError_t e, const char *op, const char *what) {
    if (e == cudaSuccess) return 1;
    char d[256];
    snprintf(d, sizeof d, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    cudaGetLastError();   /* clear a non-sticky error so the next launch check is clean */
    return cuda_fail(be, e == cudaErrorMemoryAllocation ? SD_ERR_NOMEM : SD_ERR_CUDA, op, what, d);
}

int cuda_blas_ok(struct backend *be, cublasStatus_t s, const char *op, const char *what) {
    if (s == CUBLAS_STATUS_SUCCESS) return 1;
    return cuda_fail(be, s == CUBLAS_STATUS_ALLOC_FAILED ? SD_ERR_NOMEM : SD_ERR_CUDA, op, what,
                cublasGetStatusString(s));
}

int cuda_dnn_ok(struct backend *be, cudnnStatus_t s, const char *op, const char *what) {
    if (s == CUDNN_STATUS_SUCCESS) return 1;
    return cuda_fail(be, s == CUDNN_STATUS_ALLOC_FAILED ? SD_ERR_NOMEM : SD_ERR_CUDA, op, what,
                cudnnGetErrorString(s));
}

/* ---- device memory ---- */

/* cudaMalloc with the byte count recorded.  NULL + sd_fail message on failure; the
 * sticky error is left to the caller (an arena may try a large block and cope). */
static void *dev_malloc(struct backend *be, size_t n, const char *what) {
    struct cuda *c = be->impl;
    if (c->nblocks == c->blocks_cap) {
        int cap = c->blocks_cap ? 2 * c->blocks_cap : 64;
        struct dev_block *b = sd_realloc(c->blocks, sizeof *b * cap);
        if (!b) return NULL;
        c->blocks = b;
        c->blocks_cap = cap;
    }
    if (!n) n = 1;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        /* out of memory, or a context already broken by an earlier fault */
        sd_fail(e == cudaErrorMemoryAllocation ? SD_ERR_NOMEM : SD_ERR_CUDA,
                "cuda: %s: cudaMalloc of %.1f MiB failed: %s (sdxld holds %.1f MiB)", what, n / 1048576.0,
                cudaGetErrorString(e), c->in_use / 1048576.0);
        return NULL;
    }
    c->blocks[c->nblocks++] = (struct dev_block){ p, n };
    c->in_use += n;
    if (c->in_use > c->peak) c->peak = c->in_use;
    return p;
}

static void dev_free(struct backend *be, void *p) {
    struct cuda *c = be->impl;
    if (!p) return;
    cudaStreamSynchronize(c->stream);     /* queued work may still read p */
    cudaFree(p);
    for (int i = 0; i < c->nblocks; i++)
        if (c->blocks[i].p == p) {
            c->in_use -= c->blocks[i].n;
            c->blocks[i] = c->blocks[--c->nblocks];
            break;
        }
}

/* A grow-only scratch buffer; NULL (sticky error set) when it cannot grow. */
void *cuda_scratch(struct backend *be, struct scratch *s, size_t bytes, const char *op) {
    if (bytes <= s->cap) return s->p;
    dev_free(be, s->p);
    s->p = NULL;
    s->cap = 0;
    if (!(s->p = dev_malloc(be, bytes, op))) {
        backend_set_error(be, SD_ERR_NOMEM, sd_last_error());   /* an op needs it: sticky */
        return NULL;
    }
    s->cap = bytes;
    return s->p;
}

static void *cuda_alloc(struct backend *be, size_t n) { return dev_malloc(be, n, "alloc"); }
static void cuda_free(struct backend *be, void *p) { dev_free(be, p); }

static void cuda_upload(struct backend *be, void *dst, const void *src, size_t n) {
    struct cuda *c = be->impl;
    if (n) cuda_cu_ok(be, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->stream), "upload", "cudaMemcpyAsync");
}

static void cuda_download(struct backend *be, void *dst, const void *src, size_t n) {
    struct cuda *c = be->impl;
    if (!n) return;
    if (cuda_cu_ok(be, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->stream), "download", "cudaMemcpyAsync"))
        cuda_cu_ok(be, cudaStreamSynchronize(c->stream), "download", "cudaStreamSynchronize");
}

/* Callers never pass overlapping ranges (the CPU's memmove tolerates them; cudaMemcpy
 * does not). */
static void cuda_copy(struct backend *be, void *dst, const void *src, size_t n) {
    struct cuda *c = be->impl;
    if (n && dst != src)
        cuda_cu_ok(be, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, c->stream), "copy", "cudaMemcpyAsync");
}

static void cuda_zero(struct backend *be, void *dst, size_t n) {
    struct cuda *c = be->impl;
    if (n) cuda_cu_ok(be, cudaMemsetAsync(dst, 0, n, c->stream), "zero", "cudaMemsetAsync");
}

static void cuda_trim(struct backend *be) { (void)be; }   /* its scratch is one arena, sized once */

static void cuda_sync(struct backend *be) {
    struct cuda *c = be->impl;
    cuda_cu_ok(be, cudaStreamSynchronize(c->stream), "sync", "cudaStreamSynchronize");
}

static size_t cuda_mem_in_use(struct backend *be) { return ((struct cuda *)be->impl)->in_use; }
static size_t cuda_mem_peak(struct backend *be) { return ((struct cuda *)be->impl)->peak; }

static void cuda_destroy(struct backend *be) {
    struct cuda *c = be->impl;
    if (c) {
        if (c->stream) cudaStreamSynchronize(c->stream);
        dev_free(be, c->conv_ws.p);
        dev_free(be, c->pad.p);
        dev_free(be, c->gn.p);
        dev_free(be, c->small.p);
        dev_free(be, c->dotp.p);
        dev_free(be, c->dpad.p);
        dev_free(be, c->blas_ws);
        if (c->xd) cudnnDestroyTensorDescriptor(c->xd);
        if (c->yd) cudnnDestroyTensorDescriptor(c->yd);
        if (c->wd) cudnnDestroyFilterDescriptor(c->wd);
        if (c->cd) cudnnDestroyConvolutionDescriptor(c->cd);
        if (c->dnn) cudnnDestroy(c->dnn);
        if (c->blas) cublasDestroy(c->blas);
        /* anything the model code did not free (a bug elsewhere) still goes back */
        while (c->nblocks) dev_free(be, c->blocks[0].p);
        if (c->stream) cudaStreamDestroy(c->stream);
        sd_free(c->plans);
        sd_free(c->blocks);
        sd_free(c);
    }
    sd_free(be);
}

/* ---- GEMM family ---- */

static cublasComputeType_t compute_type(const struct cuda *c) {
    return c->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

/* Row-major C = alpha·op(A)·op(B) + beta·C is column-major Cᵀ = alpha·op(B)ᵀ·op(A)ᵀ +
 * beta·Cᵀ, and a row-major matrix read column-major is its transpose: so cuBLAS gets B
 * first with B's transpose flag, then A with A's, and m = N, n = M. */
int cuda_gemm_run(struct backend *be, const char *op, int ta, int tb, int M, int N, int K, float alpha,
                    const float *A, int lda, long long sA, const float *B, int ldb, long long sB, float beta,
                    float *C, int ldc, long long sC, int batch) {
    struct cuda *c = be->impl;
    if (M <= 0 || N <= 0 || batch <= 0) return 1;
    cublasOperation_t opA = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opB = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (sC == 0 && batch > 1) {   /* every batch writes one C: run them in order */
        for (int b = 0; b < batch; b++)
            if (!cuda_gemm_run(be, op, ta, tb, M, N, K, alpha, A + b * sA, lda, 0, B + b * sB, ldb, 0, b ? 1.0f : beta,
                          C, ldc, 0, 1))
                return 0;
        return 1;
    }
    cublasStatus_t s = cublasGemmStridedBatchedEx(c->blas, opB, opA, N, M, K, &alpha, B, CUDA_R_32F, ldb, sB,
                                                  A, CUDA_R_32F, lda, sA, &beta, C, CUDA_R_32F, ldc, sC, batch,
                                                  compute_type(c), CUBLAS_GEMM_DEFAULT);
    return cuda_blas_ok(be, s, op, "cublasGemmStridedBatchedEx");
}

static void cuda_gemm(struct backend *be, int ta, int tb, int M, int N, int K, float alpha,
                      const float *A, int lda, long long sA, const float *B, int ldb, long long sB,
                      float beta, float *C, int ldc, long long sC, int batch) {
    BAIL(be);
    cuda_gemm_run(be, "gemm", ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch);
}

/* F32 weights only until the bf16 stage (backend.h, "Weight precision"). */
static int f32_weights(struct backend *be, const char *op, sd_dtype wdt) {
    if (wdt == DT_F32) return 1;
    cuda_fail(be, SD_ERR_UNSUPPORTED, op, "weights", "the CUDA backend takes F32 weights only (weights_dtype f32)");
    return 0;
}

static void cuda_linear(struct backend *be, float *out, const float *inp, const void *wv, sd_dtype wdt,
                        const float *b, int R, int S, int nin, int nout) {
    BAIL(be);
    (void)S;   /* one cuBLAS call for all R rows: not batch-invariant yet (docs/cuda.md) */
    if (!f32_weights(be, "linear", wdt)) return;
    const float *w = wv;
    struct cuda *c = be->impl;
    if (!cuda_gemm_run(be, "linear", 0, 1, R, nout, nin, 1.0f, inp, nin, 0, w, nin, 0, 0.0f, out, nout, 0, 1)) return;
    if (b) cuda_cu_ok(be, k_add_bias_rows(out, b, R, nout, c->stream), "linear", "k_add_bias_rows");
}

/* ---- convolution ---- */

static struct conv_plan *conv_plan(struct backend *be, const int key[11]) {
    struct cuda *c = be->impl;
    for (int i = 0; i < c->nplans; i++)
        if (!memcmp(c->plans[i].key, key, sizeof c->plans[i].key)) return &c->plans[i];
    if (c->nplans == c->plans_cap) {
        int cap = c->plans_cap ? 2 * c->plans_cap : 64;
        struct conv_plan *p = sd_realloc(c->plans, sizeof *p * cap);
        if (!p) { backend_set_error(be, SD_ERR_NOMEM, "conv2d: plan cache: out of host memory"); return NULL; }
        c->plans = p;
        c->plans_cap = cap;
    }
    /* descriptors are already set for this shape; ask the heuristics for a ranked list */
    if (!cuda_dnn_ok(be, cudnnSetConvolutionMathType(c->cd, c->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH),
                "conv2d", "cudnnSetConvolutionMathType"))
        return NULL;
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    if (!cuda_dnn_ok(be, cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, c->xd, c->wd, c->cd, c->yd,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf),
                "conv2d", "cudnnGetConvolutionForwardAlgorithm_v7"))
        return NULL;
    /* passes: 0 within the workspace cap, 1 any workspace; 2-3 the same but, with TF32
     * off, also accepting CUDNN_DEFAULT_MATH when no pure-FMA algorithm was offered */
    int pick = -1;
    for (int pass = 0; pass < 4 && pick < 0; pass++)
        for (int i = 0; i < n && pick < 0; i++) {
            const cudnnConvolutionFwdAlgoPerf_t *p = &perf[i];
            if (p->status != CUDNN_STATUS_SUCCESS) continue;
            /* never let cuDNN round fp32 operands to fp16 */
            if (p->mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
            if (!c->tf32 && p->mathType != CUDNN_FMA_MATH && !(pass >= 2 && p->mathType == CUDNN_DEFAULT_MATH))
                continue;
            if (!(pass & 1) && p->memory > CONV_WS_CAP) continue;
            pick = i;
        }
    if (pick < 0) {
        char d[160];
        snprintf(d, sizeof d, "no usable algorithm among %d for N%d C%d %dx%d K%d %dx%d s%d", n, key[0], key[1],
                 key[2], key[3], key[4], key[5], key[6], key[7]);
        cuda_fail(be, SD_ERR_UNSUPPORTED, "conv2d", "cuDNN", d);
        return NULL;
    }
    struct conv_plan *pl = &c->plans[c->nplans];
    memcpy(pl->key, key, sizeof pl->key);
    pl->algo = perf[pick].algo;
    pl->math = perf[pick].mathType;
    if (!cuda_dnn_ok(be, cudnnSetConvolutionMathType(c->cd, pl->math), "conv2d", "cudnnSetConvolutionMathType"))
        return NULL;
    size_t ws = 0;
    if (!cuda_dnn_ok(be, cudnnGetConvolutionForwardWorkspaceSize(c->dnn, c->xd, c->wd, c->cd, c->yd, pl->algo, &ws),
                "conv2d", "cudnnGetConvolutionForwardWorkspaceSize"))
        return NULL;
    pl->ws_bytes = ws > perf[pick].memory ? ws : perf[pick].memory;
    c->nplans++;
    LOG_D("cuda: conv plan N%d C%d %dx%d K%d %dx%d s%d p%d,%d: algo %d math %d ws %.1f MiB", key[0], key[1],
          key[2], key[3], key[4], key[5], key[6], key[7], key[8], key[9], (int)pl->algo, (int)pl->math,
          pl->ws_bytes / 1048576.0);
    return pl;
}

int cuda_conv_desc(struct backend *be, const char *op, int Nc, int C, int H, int W, int K, int kh, int kw, int stride,
                   int ph, int pw, int Ho, int Wo) {
    struct cuda *c = be->impl;
    return cuda_dnn_ok(be, cudnnSetTensor4dDescriptor(c->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, Nc, C, H, W), op,
                       "cudnnSetTensor4dDescriptor(x)") &&
           cuda_dnn_ok(be, cudnnSetFilter4dDescriptor(c->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, K, C, kh, kw), op,
                       "cudnnSetFilter4dDescriptor") &&
           cuda_dnn_ok(be, cudnnSetConvolution2dDescriptor(c->cd, ph, pw, stride, stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                                           CUDNN_DATA_FLOAT),
                       op, "cudnnSetConvolution2dDescriptor") &&
           cuda_dnn_ok(be, cudnnSetTensor4dDescriptor(c->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, Nc, K, Ho, Wo), op,
                       "cudnnSetTensor4dDescriptor(y)");
}

/* One cuDNN call over Nc images: x [Nc, C, H, W] (already padded when asymmetric). */
static int conv_chunk(struct backend *be, float *y, const float *x, const float *w, int Nc, int C, int H, int W,
                      int K, int kh, int kw, int stride, int ph, int pw, int Ho, int Wo) {
    struct cuda *c = be->impl;
    if (!cuda_conv_desc(be, "conv2d", Nc, C, H, W, K, kh, kw, stride, ph, pw, Ho, Wo)) return 0;
    int key[11] = { Nc, C, H, W, K, kh, kw, stride, ph, pw, c->tf32 };
    struct conv_plan *pl = conv_plan(be, key);
    if (!pl) return 0;
    if (!cuda_dnn_ok(be, cudnnSetConvolutionMathType(c->cd, pl->math), "conv2d", "cudnnSetConvolutionMathType"))
        return 0;
    void *ws = NULL;
    if (pl->ws_bytes && !(ws = cuda_scratch(be, &c->conv_ws, pl->ws_bytes, "conv2d workspace"))) return 0;
    const float one = 1.0f, zero = 0.0f;
    return cuda_dnn_ok(be, cudnnConvolutionForward(c->dnn, &one, c->xd, x, c->wd, w, c->cd, pl->algo, ws, pl->ws_bytes,
                                              &zero, c->yd, y),
                  "conv2d", "cudnnConvolutionForward");
}

static void cuda_conv2d(struct backend *be, float *out, const float *inp, const void *wv, sd_dtype wdt,
                        const float *b, int N, int C, int H, int W, int K, int kh, int kw,
                        int stride, int pt, int pl, int pb, int pr) {
    BAIL(be);
    if (!f32_weights(be, "conv2d", wdt)) return;
    const float *w = wv;
    struct cuda *c = be->impl;
    int Ho = (H + pt + pb - kh) / stride + 1, Wo = (W + pl + pr - kw) / stride + 1;
    if (N <= 0 || K <= 0 || Ho <= 0 || Wo <= 0) return;
    long long P = (long long)Ho * Wo;
    if (kh == 1 && kw == 1 && stride == 1 && !pt && !pl && !pb && !pr) {
        /* y[n] (K × HW) = w (K × C) · x[n] (C × HW): one strided-batched GEMM */
        if (!cuda_gemm_run(be, "conv2d 1x1", 0, 0, K, (int)P, C, 1.0f, w, C, 0, inp, (int)P, (long long)C * P, 0.0f,
                      out, (int)P, (long long)K * P, N))
            return;
    } else {
        const float *x = inp;
        int Hx = H, Wx = W, ph = pt, pw = pl;
        long long in_img = (long long)C * H * W;
        if (pt != pb || pl != pr) {   /* cuDNN pads symmetrically: pad explicitly instead */
            Hx = H + pt + pb;
            Wx = W + pl + pr;
            ph = pw = 0;
            in_img = (long long)C * Hx * Wx;
        }
        long long per = in_img > (long long)K * P ? in_img : (long long)K * P;
        int chunk = per >= c->conv_chunk ? 1 : (int)(c->conv_chunk / per);
        if (chunk > N) chunk = N;
        for (int n0 = 0; n0 < N; n0 += chunk) {
            int Nc = N - n0 < chunk ? N - n0 : chunk;
            const float *xc = x + (size_t)n0 * C * H * W;
            if (Hx != H || Wx != W) {
                float *p = cuda_scratch(be, &c->pad, (size_t)Nc * in_img * sizeof(float), "conv2d padding");
                if (!p) return;
                if (!cuda_cu_ok(be, k_pad2d(p, xc, (long long)Nc * C, H, W, pt, pl, pb, pr, c->stream), "conv2d", "k_pad2d"))
                    return;
                xc = p;
            }
            if (!conv_chunk(be, out + (size_t)n0 * K * P, xc, w, Nc, C, Hx, Wx, K, kh, kw, stride, ph, pw, Ho, Wo))
                return;
        }
    }
    if (b) cuda_cu_ok(be, k_add_channel(out, b, (long long)N * K, K, P, c->stream), "conv2d", "k_add_channel(bias)");
}

/* ---- normalisation, attention ---- */

static void cuda_group_norm(struct backend *be, float *out, const float *inp, const float *w,
                            const float *b, int N, int C, int HW, int G, float eps, int silu) {
    BAIL(be);
    struct cuda *c = be->impl;
    if (G <= 0 || C % G) {
        char d[64];
        snprintf(d, sizeof d, "%d channels in %d groups", C, G);
        cuda_fail(be, SD_ERR_INVALID, "group_norm", "shape", d);
        return;
    }
    void *s = cuda_scratch(be, &c->gn, k_group_norm_scratch_bytes(N, C, HW, G), "group_norm");
    if (s) cuda_cu_ok(be, k_group_norm(out, inp, w, b, s, N, C, HW, G, eps, silu, c->stream), "group_norm", "k_group_norm");
}

static void cuda_layer_norm(struct backend *be, float *out, const float *inp, const float *w,
                            const float *b, int R, int C, float eps) {
    BAIL(be);
    struct cuda *c = be->impl;
    cuda_cu_ok(be, k_layer_norm(out, inp, w, b, R, C, eps, c->stream), "layer_norm", "k_layer_norm");
}

static void cuda_attention(struct backend *be, float *out, const float *q, const float *k,
                           const float *v, int N, int H, int Lq, int Lk, int D, int ldq, int ldk,
                           int ldv, int ldo, float scale, int causal) {
    BAIL(be);
    struct cuda *c = be->impl;
    if (D > K_ATTENTION_MAX_D || H > 65535 || N > 65535) {
        char d[96];
        snprintf(d, sizeof d, "head width %d (max %d), %d heads, batch %d", D, K_ATTENTION_MAX_D, H, N);
        cuda_fail(be, SD_ERR_UNSUPPORTED, "attention", "k_attention", d);
        return;
    }
    cuda_cu_ok(be, k_attention(out, q, k, v, N, H, Lq, Lk, D, ldq, ldk, ldv, ldo, scale, causal, c->stream),
          "attention", "k_attention");
}

/* ---- elementwise ---- */

static void cuda_act(struct backend *be, float *out, const float *inp, long long n, enum act_kind kind) {
    BAIL(be);
    cuda_cu_ok(be, k_act(out, inp, n, (int)kind, ((struct cuda *)be->impl)->stream), "act", "k_act");
}

static void cuda_geglu(struct backend *be, float *out, const float *inp, int R, int C) {
    BAIL(be);
    cuda_cu_ok(be, k_geglu(out, inp, R, C, ((struct cuda *)be->impl)->stream), "geglu", "k_geglu");
}

static void cuda_upsample2x(struct backend *be, float *out, const float *inp, int N, int C, int H, int W) {
    BAIL(be);
    cuda_cu_ok(be, k_upsample2x(out, inp, (long long)N * C, H, W, ((struct cuda *)be->impl)->stream), "upsample2x",
          "k_upsample2x");
}

/* Host inputs (timesteps, token ids) go through a small grow-only device buffer; the
 * copy is queued on the stream ahead of the kernel that reads it. */
void *cuda_upload_small(struct backend *be, const void *host, size_t bytes, const char *op) {
    struct cuda *c = be->impl;
    void *d = cuda_scratch(be, &c->small, bytes, op);
    if (d && !cuda_cu_ok(be, cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, c->stream), op, "cudaMemcpyAsync"))
        return NULL;
    return d;
}

static void cuda_timestep_embedding(struct backend *be, float *out, const float *t, int N, int dim,
                                    int flip, float shift, float max_period) {
    BAIL(be);
    if (N <= 0) return;
    float *td = cuda_upload_small(be, t, (size_t)N * sizeof(float), "timestep_embedding");
    if (td)
        cuda_cu_ok(be, k_timestep_embedding(out, td, N, dim, flip, shift, max_period, ((struct cuda *)be->impl)->stream),
              "timestep_embedding", "k_timestep_embedding");
}

static void cuda_embedding(struct backend *be, float *out, const void *table, sd_dtype tdt, const int *ids, int n,
                           int D) {
    BAIL(be);
    if (!f32_weights(be, "embedding", tdt) || n <= 0) return;
    int *idd = cuda_upload_small(be, ids, (size_t)n * sizeof(int), "embedding");
    if (idd) cuda_cu_ok(be, k_embedding(out, table, idd, n, D, ((struct cuda *)be->impl)->stream), "embedding", "k_embedding");
}

static void cuda_axpby(struct backend *be, float *out, float alpha, const float *a, float beta,
                       const float *b, long long n) {
    BAIL(be);
    cuda_cu_ok(be, k_axpby(out, alpha, a, beta, b, n, ((struct cuda *)be->impl)->stream), "axpby", "k_axpby");
}

static void cuda_add_channel(struct backend *be, float *out, const float *v, int N, int C, int HW) {
    BAIL(be);
    long long rows = (long long)N * C;
    if (rows <= 0) return;
    if (rows > 0x7fffffffLL) { cuda_fail(be, SD_ERR_UNSUPPORTED, "add_channel", "shape", "more than 2^31 channels"); return; }
    cuda_cu_ok(be, k_add_channel(out, v, rows, (int)rows, HW, ((struct cuda *)be->impl)->stream), "add_channel",
          "k_add_channel");
}

static void cuda_concat_channels(struct backend *be, float *out, const float *a, int Ca,
                                 const float *b, int Cb, int N, int HW) {
    BAIL(be);
    cuda_cu_ok(be, k_concat_channels(out, a, Ca, b, Cb, N, HW, ((struct cuda *)be->impl)->stream), "concat_channels",
          "k_concat_channels");
}

static void cuda_transpose(struct backend *be, float *out, const float *inp, int N, int R, int C) {
    BAIL(be);
    cuda_cu_ok(be, k_transpose(out, inp, N, R, C, ((struct cuda *)be->impl)->stream), "transpose", "k_transpose");
}

static const struct backend_ops cuda_ops = {
    .alloc = cuda_alloc, .free = cuda_free, .upload = cuda_upload, .download = cuda_download,
    .copy = cuda_copy, .zero = cuda_zero, .sync = cuda_sync, .trim = cuda_trim, .destroy = cuda_destroy,
    .gemm = cuda_gemm, .linear = cuda_linear, .conv2d = cuda_conv2d,
    .group_norm = cuda_group_norm, .layer_norm = cuda_layer_norm, .attention = cuda_attention,
    .act = cuda_act, .geglu = cuda_geglu, .upsample2x = cuda_upsample2x,
    .timestep_embedding = cuda_timestep_embedding, .embedding = cuda_embedding,
    .axpby = cuda_axpby, .add_channel = cuda_add_channel,
    .concat_channels = cuda_concat_channels, .transpose = cuda_transpose,
    .linear_backward = cuda_linear_backward, .conv2d_backward = cuda_conv2d_backward,
    .group_norm_backward = cuda_group_norm_backward, .layer_norm_backward = cuda_layer_norm_backward,
    .attention_backward = cuda_attention_backward, .act_backward = cuda_act_backward,
    .geglu_backward = cuda_geglu_backward, .upsample2x_backward = cuda_upsample2x_backward,
    .embedding_backward = cuda_embedding_backward, .channel_sum = cuda_channel_sum,
    .split_channels = cuda_split_channels, .dot = cuda_dot, .adamw = cuda_adamw,
    .mem_in_use = cuda_mem_in_use, .mem_peak = cuda_mem_peak,
};

void backend_cuda_set_tf32(struct backend *be, int on) {
    if (be && be->ops == &cuda_ops) ((struct cuda *)be->impl)->tf32 = !!on;
}

/* The entry point of the CUDA module (sdxld-cuda.so, loaded by backend.c) and of a
 * binary that links this file in (tests/gpu). */
__attribute__((visibility("default"))) sd_status sdxld_cuda_backend_create(struct backend **out, int threads);
sd_status sdxld_cuda_backend_create(struct backend **out, int threads) {
    *out = NULL;
    int ndev = 0;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev <= 0) {
        cudaGetLastError();
        return sd_fail(SD_ERR_CUDA, "cuda: no usable GPU: %s", e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
    }
    struct backend *be = sd_calloc(1, sizeof *be);
    struct cuda *c = sd_calloc(1, sizeof *c);
    if (!be || !c) { sd_free(be); sd_free(c); return SD_ERR_NOMEM; }
    be->name = "cuda";
    be->ops = &cuda_ops;
    be->impl = c;
    be->threads = threads;
    const char *env = getenv("SDXLD_CUDA_TF32");
    c->tf32 = !(env && !strcmp(env, "0"));
    /* test knob: a small limit makes every batch run image by image */
    env = getenv("SDXLD_CUDA_CONV_CHUNK");
    c->conv_chunk = env && atoll(env) > 0 ? atoll(env) : CONV_CHUNK_VALUES;

    sd_status st = SD_ERR_CUDA;
    struct cudaDeviceProp prop;
    if ((e = cudaGetDevice(&c->device)) != cudaSuccess || (e = cudaGetDeviceProperties(&prop, c->device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        sd_fail(SD_ERR_CUDA, "cuda: device setup: %s", cudaGetErrorString(e));
        goto fail;
    }
    snprintf(be->kernels, sizeof be->kernels, "%.120s (sm_%d%d): cuBLAS, cuDNN %zu, own kernels; %s; F32 weights only",
             prop.name, prop.major, prop.minor, cudnnGetVersion(), c->tf32 ? "TF32" : "fp32");
    cublasStatus_t bs;
    if ((bs = cublasCreate(&c->blas)) != CUBLAS_STATUS_SUCCESS || (bs = cublasSetStream(c->blas, c->stream)) != CUBLAS_STATUS_SUCCESS) {
        sd_fail(SD_ERR_CUDA, "cuda: cuBLAS: %s", cublasGetStatusString(bs));
        goto fail;
    }
    /* our own workspace, set after cublasSetStream (which resets it), so cuBLAS never
     * allocates inside a step */
    if (!(c->blas_ws = dev_malloc(be, BLAS_WS_BYTES, "cuBLAS workspace"))) { st = SD_ERR_NOMEM; goto fail; }
    if ((bs = cublasSetWorkspace(c->blas, c->blas_ws, BLAS_WS_BYTES)) != CUBLAS_STATUS_SUCCESS) {
        sd_fail(SD_ERR_CUDA, "cuda: cublasSetWorkspace: %s", cublasGetStatusString(bs));
        goto fail;
    }
    cudnnStatus_t ds;
    if ((ds = cudnnCreate(&c->dnn)) != CUDNN_STATUS_SUCCESS || (ds = cudnnSetStream(c->dnn, c->stream)) != CUDNN_STATUS_SUCCESS ||
        (ds = cudnnCreateTensorDescriptor(&c->xd)) != CUDNN_STATUS_SUCCESS ||
        (ds = cudnnCreateTensorDescriptor(&c->yd)) != CUDNN_STATUS_SUCCESS ||
        (ds = cudnnCreateFilterDescriptor(&c->wd)) != CUDNN_STATUS_SUCCESS ||
        (ds = cudnnCreateConvolutionDescriptor(&c->cd)) != CUDNN_STATUS_SUCCESS) {
        sd_fail(SD_ERR_CUDA, "cuda: cuDNN: %s", cudnnGetErrorString(ds));
        goto fail;
    }
    int blas_ver = 0;
    cublasGetVersion(c->blas, &blas_ver);
    size_t dnn_ver = cudnnGetVersion();
    LOG_I("cuda: %s (sm_%d%d, %d SMs, %.1f GiB), cuBLAS %d.%d, cuDNN %zu.%zu, %s GEMM/conv", prop.name, prop.major,
          prop.minor, prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, blas_ver / 10000,
          blas_ver / 100 % 100, dnn_ver / 10000, dnn_ver / 100 % 100, c->tf32 ? "TF32" : "fp32");
    *out = be;
    return SD_OK;
fail:
    cuda_destroy(be);
    return st;
}
