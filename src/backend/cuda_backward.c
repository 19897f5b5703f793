/* cuda_backward.c — the CUDA backend's training ops: backward of every op, dot and AdamW
 * (backend.h's gradient contract: input gradients `=`, parameter gradients `+=`, NULL
 * skips one).
 *
 *  - linear: two cuBLAS GEMMs (dinp = dout·w; dw += doutᵀ·inp) and a column-sum kernel
 *    for the bias.
 *  - conv2d: cuDNN backward-data and backward-filter (beta = 1 accumulates dw), with the
 *    forward's conventions: 1×1 stride-1 convs are batched GEMMs, asymmetric padding is
 *    explicit (the input padded as in the forward, the padded input's gradient cropped),
 *    big batches run in chunks of images.  Algorithms come from cuDNN's heuristics on
 *    each call (no per-shape cache yet: stage one is about correctness).
 *  - norms, attention, elementwise: the kernels/ launchers (statistics recomputed).
 *  - dot: fp64 per-block partials, added on the host (a sync point, as the contract says).
 * Every kernel is checked against double-precision references on the CPU through
 * tools/cuda_emu; the GPU-vs-CPU checks are tests/gpu/test_gpu_ops.c. */
#include <math.h>
#include <stdio.h>

#include "cuda_internal.h"

void cuda_linear_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, int R, int I, int O) {
    BAIL(be);
    struct cuda *c = be->impl;
    if (dinp && !cuda_gemm_run(be, "linear_backward", 0, 0, R, I, O, 1.0f, dout, O, 0, w, I, 0, 0.0f, dinp, I, 0, 1))
        return;
    if (dw && !cuda_gemm_run(be, "linear_backward", 1, 0, O, I, R, 1.0f, dout, O, 0, inp, I, 0, 1.0f, dw, I, 0, 1))
        return;
    if (db) cuda_cu_ok(be, k_col_sums_acc(db, dout, R, O, c->stream), "linear_backward", "k_col_sums_acc");
}

/* An algorithm within the workspace cap that never rounds fp32 operands to fp16 (pure
 * FMA when TF32 is off); -1 (error recorded) when there is none. */
static int pick_algo(struct backend *be, int n, const cudnnStatus_t *status, const cudnnMathType_t *math,
                     const size_t *memory, const char *what) {
    struct cuda *c = be->impl;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            if (status[i] != CUDNN_STATUS_SUCCESS || math[i] == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) continue;
            if (!c->tf32 && math[i] != CUDNN_FMA_MATH && !(pass && math[i] == CUDNN_DEFAULT_MATH)) continue;
            if (memory[i] > CONV_WS_CAP) continue;
            return i;
        }
    cuda_fail(be, SD_ERR_UNSUPPORTED, "conv2d_backward", what, "no usable cuDNN algorithm");
    return -1;
}

static int conv_bw_data(struct backend *be, float *dx, const float *dy, const float *w) {
    struct cuda *c = be->impl;
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0;
    if (!cuda_dnn_ok(be, cudnnGetConvolutionBackwardDataAlgorithm_v7(c->dnn, c->wd, c->yd, c->cd, c->xd,
                                                                   CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf),
                     "conv2d_backward", "cudnnGetConvolutionBackwardDataAlgorithm_v7"))
        return 0;
    cudnnStatus_t st[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    cudnnMathType_t mt[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    size_t mem[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    for (int i = 0; i < n; i++) { st[i] = perf[i].status; mt[i] = perf[i].mathType; mem[i] = perf[i].memory; }
    int k = pick_algo(be, n, st, mt, mem, "backward data");
    if (k < 0 || !cuda_dnn_ok(be, cudnnSetConvolutionMathType(c->cd, mt[k]), "conv2d_backward", "cudnnSetConvolutionMathType"))
        return 0;
    size_t ws_bytes = 0;
    if (!cuda_dnn_ok(be, cudnnGetConvolutionBackwardDataWorkspaceSize(c->dnn, c->wd, c->yd, c->cd, c->xd, perf[k].algo,
                                                                    &ws_bytes),
                     "conv2d_backward", "cudnnGetConvolutionBackwardDataWorkspaceSize"))
        return 0;
    void *ws = NULL;
    if (ws_bytes && !(ws = cuda_scratch(be, &c->conv_ws, ws_bytes, "conv2d_backward workspace"))) return 0;
    const float one = 1.0f, zero = 0.0f;
    return cuda_dnn_ok(be, cudnnConvolutionBackwardData(c->dnn, &one, c->wd, w, c->yd, dy, c->cd, perf[k].algo, ws,
                                                        ws_bytes, &zero, c->xd, dx),
                       "conv2d_backward", "cudnnConvolutionBackwardData");
}

static int conv_bw_filter(struct backend *be, float *dw, const float *dy, const float *x) {
    struct cuda *c = be->impl;
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    int n = 0;
    if (!cuda_dnn_ok(be, cudnnGetConvolutionBackwardFilterAlgorithm_v7(c->dnn, c->xd, c->yd, c->cd, c->wd,
                                                                     CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf),
                     "conv2d_backward", "cudnnGetConvolutionBackwardFilterAlgorithm_v7"))
        return 0;
    cudnnStatus_t st[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    cudnnMathType_t mt[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    size_t mem[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    for (int i = 0; i < n; i++) { st[i] = perf[i].status; mt[i] = perf[i].mathType; mem[i] = perf[i].memory; }
    int k = pick_algo(be, n, st, mt, mem, "backward filter");
    if (k < 0 || !cuda_dnn_ok(be, cudnnSetConvolutionMathType(c->cd, mt[k]), "conv2d_backward", "cudnnSetConvolutionMathType"))
        return 0;
    size_t ws_bytes = 0;
    if (!cuda_dnn_ok(be, cudnnGetConvolutionBackwardFilterWorkspaceSize(c->dnn, c->xd, c->yd, c->cd, c->wd,
                                                                      perf[k].algo, &ws_bytes),
                     "conv2d_backward", "cudnnGetConvolutionBackwardFilterWorkspaceSize"))
        return 0;
    void *ws = NULL;
    if (ws_bytes && !(ws = cuda_scratch(be, &c->conv_ws, ws_bytes, "conv2d_backward workspace"))) return 0;
    const float one = 1.0f;   /* beta = 1: dw accumulates */
    return cuda_dnn_ok(be, cudnnConvolutionBackwardFilter(c->dnn, &one, c->xd, x, c->yd, dy, c->cd, perf[k].algo, ws,
                                                          ws_bytes, &one, c->wd, dw),
                       "conv2d_backward", "cudnnConvolutionBackwardFilter");
}

void cuda_conv2d_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, int N, int C, int H, int W, int K,
                          int kh, int kw, int stride, int pt, int pl, int pb, int pr) {
    BAIL(be);
    struct cuda *c = be->impl;
    int Ho = (H + pt + pb - kh) / stride + 1, Wo = (W + pl + pr - kw) / stride + 1;
    if (N <= 0 || K <= 0 || Ho <= 0 || Wo <= 0) return;
    long long P = (long long)Ho * Wo;
    if (kh == 1 && kw == 1 && stride == 1 && !pt && !pl && !pb && !pr) {
        /* dx[n] (C × P) = wᵀ (C × K) · dy[n] (K × P); dw (K × C) += Σ_n dy[n] · x[n]ᵀ */
        if (dinp && !cuda_gemm_run(be, "conv2d_backward 1x1", 1, 0, C, (int)P, K, 1.0f, w, C, 0, dout, (int)P,
                                   (long long)K * P, 0.0f, dinp, (int)P, (long long)C * P, N))
            return;
        if (dw && !cuda_gemm_run(be, "conv2d_backward 1x1", 0, 1, K, C, (int)P, 1.0f, dout, (int)P, (long long)K * P,
                                 inp, (int)P, (long long)C * P, 1.0f, dw, C, 0, N))
            return;
    } else if (dinp || dw) {
        int asym = pt != pb || pl != pr, Hx = asym ? H + pt + pb : H, Wx = asym ? W + pl + pr : W;
        int ph = asym ? 0 : pt, pw = asym ? 0 : pl;
        long long in_img = (long long)C * Hx * Wx, per = in_img > (long long)K * P ? in_img : (long long)K * P;
        int chunk = per >= c->conv_chunk ? 1 : (int)(c->conv_chunk / per);
        if (chunk > N) chunk = N;
        for (int n0 = 0; n0 < N; n0 += chunk) {
            int Nc = N - n0 < chunk ? N - n0 : chunk;
            const float *xc = inp + (size_t)n0 * C * H * W, *dyc = dout + (size_t)n0 * K * P;
            float *dxc = dinp ? dinp + (size_t)n0 * C * H * W : NULL, *dxp = dxc;
            if (asym) {
                float *p = cuda_scratch(be, &c->pad, (size_t)Nc * in_img * sizeof(float), "conv2d_backward padding");
                if (!p || !cuda_cu_ok(be, k_pad2d(p, xc, (long long)Nc * C, H, W, pt, pl, pb, pr, c->stream),
                                      "conv2d_backward", "k_pad2d"))
                    return;
                xc = p;
                if (dinp && !(dxp = cuda_scratch(be, &c->dpad, (size_t)Nc * in_img * sizeof(float), "conv2d_backward")))
                    return;
            }
            if (!cuda_conv_desc(be, "conv2d_backward", Nc, C, Hx, Wx, K, kh, kw, stride, ph, pw, Ho, Wo) ||
                !cuda_dnn_ok(be, cudnnSetConvolutionMathType(c->cd, c->tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH),
                             "conv2d_backward", "cudnnSetConvolutionMathType"))
                return;
            if (dw && !conv_bw_filter(be, dw, dyc, xc)) return;
            if (dinp) {
                if (!conv_bw_data(be, dxp, dyc, w)) return;
                if (asym && !cuda_cu_ok(be, k_crop2d(dxc, dxp, (long long)Nc * C, H, W, pt, pl, pb, pr, c->stream),
                                        "conv2d_backward", "k_crop2d"))
                    return;
            }
        }
    }
    if (db) cuda_cu_ok(be, k_row_sums(db, dout, (long long)N * K, P, K, 1, c->stream), "conv2d_backward", "k_row_sums");
}

void cuda_group_norm_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, const float *b, int N, int C, int HW,
                              int G, float eps, int silu) {
    BAIL(be);
    struct cuda *c = be->impl;
    if (G <= 0 || C % G) {
        cuda_fail(be, SD_ERR_INVALID, "group_norm_backward", "shape", "channels not divisible by groups");
        return;
    }
    void *s = cuda_scratch(be, &c->gn, k_group_norm_backward_scratch_bytes(N, C, HW, G), "group_norm_backward");
    if (s)
        cuda_cu_ok(be, k_group_norm_backward(dinp, dw, db, dout, inp, w, b, s, N, C, HW, G, eps, silu, c->stream),
                   "group_norm_backward", "k_group_norm_backward");
}

void cuda_layer_norm_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, int R, int C, float eps) {
    BAIL(be);
    struct cuda *c = be->impl;
    void *s = cuda_scratch(be, &c->gn, k_layer_norm_backward_scratch_bytes(R), "layer_norm_backward");
    if (s)
        cuda_cu_ok(be, k_layer_norm_backward(dinp, dw, db, dout, inp, w, s, R, C, eps, c->stream), "layer_norm_backward",
                   "k_layer_norm_backward");
}

void cuda_attention_backward(struct backend *be, float *dq, float *dk, float *dv, const float *dout,
                             const float *q, const float *k, const float *v, int N, int H, int Lq,
                             int Lk, int D, int ldq, int ldk, int ldv, int ldo, float scale, int causal) {
    BAIL(be);
    struct cuda *c = be->impl;
    size_t smem = ((size_t)2 * Lk + 2 * (size_t)D + 4) * sizeof(float);
    if (H > 65535 || N > 65535 || smem > K_ATTENTION_BW_MAX_SMEM) {
        char d[128];
        snprintf(d, sizeof d, "%d keys × head width %d need %zu KB of shared memory (max %d KB), %d heads, batch %d",
                 Lk, D, smem >> 10, K_ATTENTION_BW_MAX_SMEM >> 10, H, N);
        cuda_fail(be, SD_ERR_UNSUPPORTED, "attention_backward", "k_attention_backward", d);
        return;
    }
    cuda_cu_ok(be, k_attention_backward(dq, dk, dv, dout, q, k, v, N, H, Lq, Lk, D, ldq, ldk, ldv, ldo, scale, causal,
                                        c->stream),
               "attention_backward", "k_attention_backward");
}

void cuda_act_backward(struct backend *be, float *dinp, const float *dout, const float *inp, long long n,
                       enum act_kind kind) {
    BAIL(be);
    cuda_cu_ok(be, k_act_backward(dinp, dout, inp, n, (int)kind, ((struct cuda *)be->impl)->stream), "act_backward",
               "k_act_backward");
}

void cuda_geglu_backward(struct backend *be, float *dinp, const float *dout, const float *inp, int R, int C) {
    BAIL(be);
    cuda_cu_ok(be, k_geglu_backward(dinp, dout, inp, R, C, ((struct cuda *)be->impl)->stream), "geglu_backward",
               "k_geglu_backward");
}

void cuda_upsample2x_backward(struct backend *be, float *dinp, const float *dout, int N, int C, int H, int W) {
    BAIL(be);
    cuda_cu_ok(be, k_upsample2x_backward(dinp, dout, (long long)N * C, H, W, ((struct cuda *)be->impl)->stream),
               "upsample2x_backward", "k_upsample2x_backward");
}

void cuda_embedding_backward(struct backend *be, float *dtable, const float *dout, const int *ids_host, int n, int D) {
    BAIL(be);
    if (n <= 0) return;
    int *ids = cuda_upload_small(be, ids_host, (size_t)n * sizeof(int), "embedding_backward");
    if (ids)
        cuda_cu_ok(be, k_embedding_backward(dtable, dout, ids, n, D, ((struct cuda *)be->impl)->stream),
                   "embedding_backward", "k_embedding_backward");
}

void cuda_channel_sum(struct backend *be, float *dv, const float *dout, int N, int C, int HW) {
    BAIL(be);
    long long rows = (long long)N * C;
    if (rows > 0x7fffffffLL) { cuda_fail(be, SD_ERR_UNSUPPORTED, "channel_sum", "shape", "more than 2^31 channels"); return; }
    cuda_cu_ok(be, k_row_sums(dv, dout, rows, HW, (int)rows, 0, ((struct cuda *)be->impl)->stream), "channel_sum",
               "k_row_sums");
}

void cuda_split_channels(struct backend *be, float *a, int Ca, float *b, int Cb, const float *inp, int N, int HW) {
    BAIL(be);
    cuda_cu_ok(be, k_split_channels(a, Ca, b, Cb, inp, N, HW, ((struct cuda *)be->impl)->stream), "split_channels",
               "k_split_channels");
}

double cuda_dot(struct backend *be, const float *a, const float *b, long long n) {
    if (be->err || n <= 0) return 0.0;
    struct cuda *c = be->impl;
    int nb = k_dot_blocks(n);
    double *part = cuda_scratch(be, &c->dotp, (size_t)nb * sizeof(double), "dot"), host[K_DOT_MAX_BLOCKS];
    if (!part || !cuda_cu_ok(be, k_dot_partials(part, a, b, n, c->stream), "dot", "k_dot_partials")) return 0.0;
    be->ops->download(be, host, part, (size_t)nb * sizeof(double));
    if (be->err) return 0.0;
    double s = 0;
    for (int i = 0; i < nb; i++) s += host[i];
    return s;
}

void cuda_adamw(struct backend *be, float *p, const float *g, float *m, float *v, long long n, float lr,
                float b1, float b2, float eps, float wd, int step) {
    BAIL(be);
    if (step < 1) { backend_set_error(be, SD_ERR_INVALID, "adamw: step must be >= 1"); return; }
    cuda_cu_ok(be, k_adamw(p, g, m, v, n, lr, b1, b2, eps, wd, 1.0f - powf(b1, (float)step),
                           1.0f - powf(b2, (float)step), ((struct cuda *)be->impl)->stream),
               "adamw", "k_adamw");
}
