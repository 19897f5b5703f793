/* cpu_internal.h — shared between cpu.c, cpu_gemm.c and cpu_backward.c. */
#ifndef SD_CPU_INTERNAL_H
#define SD_CPU_INTERNAL_H

#include <stddef.h>

#include "../core/tensor.h"
#include "backend.h"

struct backend;

/* Run fn(ctx, lo, hi) over [0, n) split across up to nthreads pthreads (the calling
 * thread takes the first share).  Falls back to one thread if threads can't start. */
void cpu_parallel(int nthreads, long long n, void (*fn)(void *ctx, long long lo, long long hi),
                  void *ctx);

/* Row-major sgemm on host memory, one matrix. */
void cpu_sgemm(int nthreads, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Row softmax in place over L keys; causal_from >= 0 masks keys j > causal_from + i
 * (row i).  Shared by the attention forward and backward so both see the same P. */
void cpu_softmax_rows(float *s, int rows, int L, int causal_from);

/* The pthreads fallback, always built so tests check it even when OpenBLAS is used. */
void cpu_sgemm_blocked(int nthreads, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* im2col over one tile of output columns: col[(c, ki, kj), q] for q in [p0, p0 + np),
 * zero in the padding; rows [lo, hi) of the C·kh·kw (a cpu_parallel body). */
struct im2col_ctx {
    const float *x; float *col;
    int C, H, W, kh, kw, stride, pt, pl, Wo, p0, np;
};
void cpu_im2col_rows(void *ctx, long long lo, long long hi);

/* Mean and 1/sqrt(var + eps) of n floats (a GroupNorm group), summed in double over 8
 * interleaved partial sums: a fixed order (deterministic, the forward and the backward
 * agree bit for bit) that the compiler vectorises, unlike one running sum. */
void cpu_group_stats(const float *x, size_t n, float eps, float *mean, float *rstd);
/* The fixed-order total of 8 partial sums (cpu_group_stats and GroupNorm's backward). */
static inline double cpu_sum8(const double *a) { return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])); }

/* The CPU backend's grow-only scratch (NULL and a sticky error when it can't grow; the
 * pointer is valid until the next call) and its bound on one im2col / score tile. */
float *cpu_scratch(struct backend *be, size_t n);
size_t cpu_tile_floats(struct backend *be);

/* Function multiversioning: a loop built for AVX-512, AVX2 and plain x86-64, one picked at
 * run time (GCC on x86-64; elsewhere one plain build). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SD_CLONES
#endif

/* ---- vectorised transcendental loops (cpu_math.c) ---- */
void cpu_vact(float *out, const float *in, size_t n, enum act_kind kind);
/* y = a·GELU(g) */
void cpu_vgeglu(float *y, const float *a, const float *g, size_t n);
/* y = (x − m)·sc + sh, then SiLU when silu (GroupNorm's affine step) */
void cpu_vnorm(float *y, const float *x, size_t n, float m, float sc, float sh, int silu);
/* r = exp(r − mx) in place; returns the sum (fixed order, in double) */
double cpu_vexp_sub(float *r, size_t n, float mx);

/* ---- weights in their stored precision (cpu_weights.c) ---- */
struct cpu_wstate;
/* The backend's weight state (cpu.c owns it); created with the backend, which it fills
 * in: has_native_bf16, native_bf16, kernels. */
struct cpu_wstate *cpu_wstate(struct backend *be);
struct cpu_wstate *cpu_wstate_create(struct backend *be);
void cpu_wstate_destroy(struct cpu_wstate *s);
/* Free the widened-weight and rounded-activation buffers (they grow again on use). */
void cpu_wstate_trim(struct cpu_wstate *s);
/* w as fp32: itself for F32, else widened into a buffer valid until the next call (NULL
 * and a sticky error when out of memory). */
const float *cpu_weight_f32(struct backend *be, const void *w, sd_dtype dt, size_t n);
/* The native bf16 forms of linear, and of conv2d's tile product y[K, np] (row stride ldy)
 * += W[K, CK]·col[CK, np]; each returns 0 when the weights are not computed natively (the
 * caller then widens), else 1 with the work done or a sticky error. */
int cpu_linear_native(struct backend *be, float *out, const float *inp, const void *w, sd_dtype wdt, const float *b,
                      int R, int I, int O);
int cpu_conv_tile_native(struct backend *be, float *y, long long ldy, const void *w, sd_dtype wdt, int K,
                         const float *col, int CK, int np);
/* The fp32 GEMM's provider, e.g. "OpenBLAS 0.3.21 (SkylakeX kernels)", with a warning
 * when the library chose a slow kernel for this CPU (cpu_gemm.c). */
const char *cpu_gemm_describe(void);

#endif
