/* backend.h — the compute backend table.  The model code is written once against these
 * ops and runs on any backend (CPU fp32 reference now; CUDA in kernels/ + cuda.c).
 *
 * Conventions
 *  - Pointers passed to ops are backend memory (host memory for the CPU backend), from
 *    be_alloc or an arena built on backend_allocator().  fp32 everywhere at this level.
 *  - Argument order: outputs, inputs, weights, dimensions, options.
 *  - Layouts: images NCHW; token sequences [N, L, C] row-major; linear weights [out, in]
 *    (y = x·Wᵀ + b); conv weights [K, C, kh, kw].
 *  - Errors are sticky: an op that fails (device error, out of scratch memory) records the
 *    first failure in be->err and later ops become no-ops; callers check backend_status()
 *    at the end of a forward pass.  This keeps model code free of per-op branches, and
 *    matches how device errors surface (asynchronously) anyway.
 *  - In-place is allowed where noted (out == inp).
 *  - Threading: a backend belongs to one thread at a time.
 *
 * Weight precision (decided here once, for every backend): the weight operand of linear
 * and conv2d is (pointer, sd_dtype): F32, or F16/BF16 when a model keeps its weights in
 * the precision they were stored in (`weights_dtype`, io/weights.h).  Everything else
 * (activations, biases, norms, gradients, the backward ops) is fp32.
 *  - F32 and F16 weights compute in fp32: F16 widens exactly, so the result equals the
 *    F32 op on the same (rounded) values bit for bit.
 *  - BF16 weights compute with the CPU's bf16 dot products (AVX512-BF16, AMX) when the
 *    backend has them (backend_native_bf16): the activation operand is rounded to bf16,
 *    products accumulate in fp32.  Without them BF16 widens exactly like F16.
 *  - A backend that cannot take a dtype fails the op with a sticky SD_ERR_UNSUPPORTED
 *    (the CUDA backend takes F32 only until its bf16 stage). */
#ifndef SD_BACKEND_H
#define SD_BACKEND_H

#include "../core/arena.h"
#include "../core/core.h"
#include "../core/tensor.h"

enum act_kind { ACT_SILU, ACT_GELU, ACT_QUICK_GELU };

struct backend;

struct backend_ops {
    void *(*alloc)(struct backend *be, size_t bytes);
    void (*free)(struct backend *be, void *p);
    void (*upload)(struct backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(struct backend *be, void *dst, const void *src, size_t bytes);
    void (*copy)(struct backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(struct backend *be, void *dst, size_t bytes);
    void (*sync)(struct backend *be);
    /* Give back the scratch kept between ops for speed (widened weights, im2col tiles):
     * the engine calls it between the phases of a generation, so the next phase's peak
     * does not include the last one's buffers.  Later ops grow them again. */
    void (*trim)(struct backend *be);
    void (*destroy)(struct backend *be);

    /* C[b] = alpha·op(A[b])·op(B[b]) + beta·C[b], row-major, b < batch, strides in floats.
     * op(A) is M×K, op(B) is K×N; ta/tb transpose the stored matrix. */
    void (*gemm)(struct backend *be, int ta, int tb, int M, int N, int K, float alpha,
                 const float *A, int lda, long long sA, const float *B, int ldb, long long sB,
                 float beta, float *C, int ldc, long long sC, int batch);
    /* out[R, O] = inp[R, I]·w[O, I]ᵀ + b[O] (b may be NULL).  w holds wdt elements (see
     * "Weight precision" above).  The R rows come in samples of S rows (S divides R: an
     * image's HW tokens, a prompt's 77, 1 for per-sample vectors): a backend computes a
     * sample's rows the same way whatever R is, so an image does not depend on what it is
     * batched with. */
    void (*linear)(struct backend *be, float *out, const float *inp, const void *w, sd_dtype wdt,
                   const float *b, int R, int S, int I, int O);
    /* out[N,K,Ho,Wo] = conv(inp[N,C,H,W], w[K,C,kh,kw]) + b[K]; padding per side (top,
     * left, bottom, right) so the VAE encoder's right/bottom-only padding is expressible.
     * Ho = (H + pt + pb - kh)/stride + 1.  b may be NULL; w holds wdt elements. */
    void (*conv2d)(struct backend *be, float *out, const float *inp, const void *w, sd_dtype wdt,
                   const float *b, int N, int C, int H, int W, int K, int kh, int kw,
                   int stride, int pt, int pl, int pb, int pr);
    /* GroupNorm over (C/G channels × HW) per sample and group, affine; silu applies SiLU
     * to the result (the usual GN→SiLU pair).  In-place allowed. */
    void (*group_norm)(struct backend *be, float *out, const float *inp, const float *w,
                       const float *b, int N, int C, int HW, int G, float eps, int silu);
    /* LayerNorm over the last dim C of R rows.  In-place allowed. */
    void (*layer_norm)(struct backend *be, float *out, const float *inp, const float *w,
                       const float *b, int R, int C, float eps);
    /* Multi-head attention.  q[n, i, h·D + d] lives at q + n·Lq·ldq + i·ldq + h·D + d
     * (likewise k, v with Lk and ldk/ldv; out with Lq and ldo), so fused QKV buffers
     * work.  softmax(scale·q·kᵀ) over keys in fp32; causal masks keys j > i. */
    void (*attention)(struct backend *be, float *out, const float *q, const float *k,
                      const float *v, int N, int H, int Lq, int Lk, int D, int ldq, int ldk,
                      int ldv, int ldo, float scale, int causal);
    void (*act)(struct backend *be, float *out, const float *inp, long long n, enum act_kind kind);
    /* inp [R, 2C] = [a | g] -> out [R, C] = a·GELU(g). */
    void (*geglu)(struct backend *be, float *out, const float *inp, int R, int C);
    /* nearest ×2: inp [N,C,H,W] -> out [N,C,2H,2W]. */
    void (*upsample2x)(struct backend *be, float *out, const float *inp, int N, int C, int H, int W);
    /* Sinusoidal embedding of N scalars t (host array): out [N, dim], cos first when
     * flip_sin_to_cos, exponent −ln(max_period)·i/(half − shift). */
    void (*timestep_embedding)(struct backend *be, float *out, const float *t_host, int N,
                               int dim, int flip_sin_to_cos, float shift, float max_period);
    /* out[i] = table[ids[i]] rows of D values, as floats; ids on the host.  The table holds
     * tdt elements (F32; F16 or BF16 where the backend takes 16-bit weights, widened
     * exactly: "Weight precision" above). */
    void (*embedding)(struct backend *be, float *out, const void *table, sd_dtype tdt, const int *ids_host,
                      int n, int D);
    /* out = alpha·a + beta·b (b may be NULL: out = alpha·a).  In-place allowed. */
    void (*axpby)(struct backend *be, float *out, float alpha, const float *a, float beta,
                  const float *b, long long n);
    /* out[n, c, :] += v[n, c] over HW (resnet time embedding). */
    void (*add_channel)(struct backend *be, float *out, const float *v, int N, int C, int HW);
    /* out[n] = [a[n] (Ca×HW) ; b[n] (Cb×HW)] on the channel axis. */
    void (*concat_channels)(struct backend *be, float *out, const float *a, int Ca,
                            const float *b, int Cb, int N, int HW);
    /* out[n, c, r] = inp[n, r, c]: NCHW <-> [N, HW, C]. */
    void (*transpose)(struct backend *be, float *out, const float *inp, int N, int R, int C);

    /* ---- backward ----
     * Gradient contract: input gradients (dinp, dq, ...) are written with `=`; parameter
     * gradients (dw, db) are accumulated with `+=`.  A NULL parameter gradient means
     * "input gradient only" (pushing a gradient through a frozen network); a NULL input
     * gradient skips it.  Arguments: gradients out, then dout, then the forward's inputs
     * and weights, then dimensions — the forward's own order.  In place (dinp == dout) is
     * allowed for act, group_norm and layer_norm backward (and geglu's dinp == inp), not
     * for conv, linear or attention.  Input pixels no output reads get gradient 0.
     * Norm weights/biases may be NULL (1 and 0) as in the forward. */
    void (*linear_backward)(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, int R, int I, int O);
    void (*conv2d_backward)(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                            const float *inp, const float *w, int N, int C, int H, int W, int K,
                            int kh, int kw, int stride, int pt, int pl, int pb, int pr);
    /* Statistics are recomputed from inp (cheap next to the convolutions around it); with
     * silu the pre-activation is recomputed too (b is needed for that). */
    void (*group_norm_backward)(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const float *w, const float *b, int N, int C, int HW,
                                int G, float eps, int silu);
    void (*layer_norm_backward)(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                                const float *inp, const float *w, int R, int C, float eps);
    /* dq, dk, dv with the forward's layouts/strides (=; rows not covered are untouched);
     * probabilities are recomputed tile by tile. */
    void (*attention_backward)(struct backend *be, float *dq, float *dk, float *dv, const float *dout,
                               const float *q, const float *k, const float *v, int N, int H, int Lq,
                               int Lk, int D, int ldq, int ldk, int ldv, int ldo, float scale, int causal);
    void (*act_backward)(struct backend *be, float *dinp, const float *dout, const float *inp, long long n,
                         enum act_kind kind);
    /* dinp [R, 2C] from dout [R, C] and the forward input [R, 2C]. */
    void (*geglu_backward)(struct backend *be, float *dinp, const float *dout, const float *inp, int R, int C);
    /* dinp [N,C,H,W] = sum over each 2×2 block of dout [N,C,2H,2W]. */
    void (*upsample2x_backward)(struct backend *be, float *dinp, const float *dout, int N, int C, int H, int W);
    /* dtable[ids[i]] += dout[i] (rows of D). */
    void (*embedding_backward)(struct backend *be, float *dtable, const float *dout, const int *ids_host,
                               int n, int D);
    /* dv[n, c] = sum over HW of dout[n, c, :]  (backward of add_channel; =). */
    void (*channel_sum)(struct backend *be, float *dv, const float *dout, int N, int C, int HW);
    /* a = inp[:, :Ca], b = inp[:, Ca:] (backward of concat_channels; either may be NULL). */
    void (*split_channels)(struct backend *be, float *a, int Ca, float *b, int Cb, const float *inp, int N, int HW);

    /* ---- losses and optimiser ---- */
    /* Returns sum(a·b) over n in double precision (host value; a sync point); 0 after a
     * sticky error. */
    double (*dot)(struct backend *be, const float *a, const float *b, long long n);
    /* AdamW step on n fp32 master weights (decoupled weight decay; bias-corrected with
     * step >= 1, else a sticky SD_ERR_INVALID): m = b1·m + (1−b1)·g; v = b2·v + (1−b2)·g²; p −= lr·(m̂/(√v̂+eps) + wd·p). */
    void (*adamw)(struct backend *be, float *p, const float *g, float *m, float *v, long long n, float lr,
                  float b1, float b2, float eps, float wd, int step);

    /* ---- memory report ----
     * Optional; NULL where the backend does not count its memory (the CPU).  Bytes of
     * backend memory allocated now, and the most at once since the backend was created:
     * weights, arenas, scratch and library workspaces (the CUDA context itself and the
     * libraries' internal handles are not included).  Callers check for NULL. */
    size_t (*mem_in_use)(struct backend *be);
    size_t (*mem_peak)(struct backend *be);
};

struct backend {
    const char *name;
    const struct backend_ops *ops;
    void *impl;
    int threads;
    sd_status err;          /* sticky first error; message in err_msg */
    char err_msg[512];
    int has_native_bf16;    /* the backend can compute BF16 weights natively ... */
    int native_bf16;        /* ... and does (backend_native_bf16) */
    char kernels[256];      /* backend_kernels */
};

/* "cpu" or "cuda".  threads: 0 = all cores. */
sd_status backend_create(struct backend **out, const char *name, int threads);
void backend_destroy(struct backend *be);
/* SD_OK, or the first error any op hit (and its message is made current). */
sd_status backend_status(struct backend *be);
/* Record an op failure (first one wins).  For backend implementations. */
void backend_set_error(struct backend *be, sd_status st, const char *msg);
/* An arena allocator drawing backend memory. */
struct arena_allocator backend_allocator(struct backend *be);

sd_status backend_cpu_create(struct backend **out, int threads);
/* The CUDA backend (src/backend/cuda.c, built as the module sdxld-cuda.so and loaded on
 * first use: backend.c), present when built with SD_HAVE_CUDA; fails with SD_ERR_CUDA
 * when no GPU is usable, SD_ERR_UNSUPPORTED when the build has none or its module does
 * not load.  threads is unused.  GEMM and convolutions use TF32
 * tensor cores unless the environment sets SDXLD_CUDA_TF32=0. */
sd_status backend_cuda_create(struct backend **out, int threads);
/* Tests and benchmarks: TF32 (on != 0) or full fp32 (0) for GEMM and convolutions from
 * the next op on.  No-op on other backends. */
void backend_cuda_set_tf32(struct backend *be, int on);
/* Whether linear/conv2d compute BF16 weights with native bf16 dot products (see "Weight
 * precision"); the CPU backend turns them on when its kernel library and the CPU have them
 * and the environment does not set SDXLD_CPU_BF16=0.  backend_set_native_bf16 switches
 * them off (0) or back on where available (tests, benchmarks); returns the new state. */
int backend_native_bf16(const struct backend *be);
int backend_set_native_bf16(struct backend *be, int on);
/* One line naming the kernels the backend runs (library, version, ISA), for logs and
 * `sdxld bench`; a warning when a library picked a slow path for this CPU. */
const char *backend_kernels(const struct backend *be);
/* Tests: bound the CPU backend's im2col/attention tiles (floats; 0 = default) so tile
 * edges are exercised on small inputs. */
void backend_cpu_set_tile(struct backend *be, size_t floats);

#endif
