/* cuda_internal.h — what cuda.c and cuda_backward.c share: the backend's state, error
 * reporting into the sticky error, grow-only scratch, the row-major GEMM wrapper, and
 * the backward ops the op table points at.  Included by those two files alone. */
#ifndef SD_CUDA_INTERNAL_H
#define SD_CUDA_INTERNAL_H

#include <cuda_runtime_api.h>
#include <cublas_v2.h>
#include <cudnn.h>

#include "backend.h"
#include "../../kernels/kernels.h"

#define BLAS_WS_BYTES (32u << 20)              /* cuBLAS workspace recommended on sm_90 */
#define CONV_WS_CAP ((size_t)1 << 30)          /* largest cuDNN workspace a plan may ask */
#define CONV_CHUNK_VALUES ((long long)1 << 30) /* per-tensor values in one cuDNN call */

struct scratch { void *p; size_t cap; };

struct conv_plan {
    int key[11];      /* N, C, H, W, K, kh, kw, stride, ph, pw, tf32 */
    cudnnConvolutionFwdAlgo_t algo;
    cudnnMathType_t math;
    size_t ws_bytes;
};

struct dev_block { void *p; size_t n; };

struct cuda {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cudnnHandle_t dnn;
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    int tf32;
    long long conv_chunk;        /* values per tensor in one cuDNN call */
    void *blas_ws;
    struct scratch conv_ws, pad, gn, small, dotp, dpad;   /* dotp, dpad: cuda_backward.c */
    struct conv_plan *plans;
    int nplans, plans_cap;
    struct dev_block *blocks;    /* every live cudaMalloc, for the byte counts */
    int nblocks, blocks_cap;
    size_t in_use, peak;
};

#define BAIL(be) do { if ((be)->err) return; } while (0)

/* Record an error naming op, the failing call and the library's message; returns 0. */
int cuda_fail(struct backend *be, sd_status st, const char *op, const char *what, const char *detail);
/* 1 on success, else the error is recorded (first one wins) and 0 returned. */
int cuda_cu_ok(struct backend *be, cudaError_t e, const char *op, const char *what);
int cuda_blas_ok(struct backend *be, cublasStatus_t s, const char *op, const char *what);
int cuda_dnn_ok(struct backend *be, cudnnStatus_t s, const char *op, const char *what);
/* A grow-only device buffer; NULL (sticky error set) when it cannot grow. */
void *cuda_scratch(struct backend *be, struct scratch *s, size_t bytes, const char *op);
/* Row-major strided-batched C = alpha·op(A)·op(B) + beta·C on fp32 (TF32 when enabled);
 * sC = 0 with batch > 1 accumulates every batch into one C.  0 on failure. */
int cuda_gemm_run(struct backend *be, const char *op, int ta, int tb, int M, int N, int K, float alpha,
                  const float *A, int lda, long long sA, const float *B, int ldb, long long sB, float beta,
                  float *C, int ldc, long long sC, int batch);
/* Set the shared x/w/conv/y descriptors for Nc images (x padded already when asymmetric). */
int cuda_conv_desc(struct backend *be, const char *op, int Nc, int C, int H, int W, int K, int kh, int kw, int stride,
                   int ph, int pw, int Ho, int Wo);
/* Host bytes into the small scratch, queued on the stream (NULL on failure). */
void *cuda_upload_small(struct backend *be, const void *host, size_t bytes, const char *op);

/* cuda_backward.c */
void cuda_linear_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, int R, int I, int O);
void cuda_conv2d_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, int N, int C, int H, int W, int K,
                          int kh, int kw, int stride, int pt, int pl, int pb, int pr);
void cuda_group_norm_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, const float *b, int N, int C, int HW,
                              int G, float eps, int silu);
void cuda_layer_norm_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                              const float *inp, const float *w, int R, int C, float eps);
void cuda_attention_backward(struct backend *be, float *dq, float *dk, float *dv, const float *dout,
                             const float *q, const float *k, const float *v, int N, int H, int Lq,
                             int Lk, int D, int ldq, int ldk, int ldv, int ldo, float scale, int causal);
void cuda_act_backward(struct backend *be, float *dinp, const float *dout, const float *inp, long long n,
                       enum act_kind kind);
void cuda_geglu_backward(struct backend *be, float *dinp, const float *dout, const float *inp, int R, int C);
void cuda_upsample2x_backward(struct backend *be, float *dinp, const float *dout, int N, int C, int H, int W);
void cuda_embedding_backward(struct backend *be, float *dtable, const float *dout, const int *ids_host, int n, int D);
void cuda_channel_sum(struct backend *be, float *dv, const float *dout, int N, int C, int HW);
void cuda_split_channels(struct backend *be, float *a, int Ca, float *b, int Cb, const float *inp, int N, int HW);
double cuda_dot(struct backend *be, const float *a, const float *b, long long n);
void cuda_adamw(struct backend *be, float *p, const float *g, float *m, float *v, long long n, float lr,
                float b1, float b2, float eps, float wd, int step);

#endif
