/* kernels.h — C launchers for the CUDA kernels (the kernels/ .cu files, the only files nvcc
 * compiles).  The CUDA backend (src/backend/cuda.c, plain C11) is their one caller: it
 * checks shapes and picks scratch, these launch.
 *
 * Contract for every launcher:
 *  - pointers are device memory, fp32 unless typed otherwise; dimension letters as in
 *    backend.h (N batch, C channels, H/W spatial, HW = H·W, G groups, L tokens, D head
 *    width, R rows);
 *  - argument order: outputs, inputs, weights, scratch, dimensions, options, stream;
 *  - work is queued on `stream` and nothing is synchronised;
 *  - the return value is cudaGetLastError() right after the last launch (cudaSuccess
 *    or the launch error), so a failure names the launcher that caused it.  Nothing here
 *    exits or prints.
 * Zero-sized work launches nothing and returns cudaSuccess. */
#ifndef SD_KERNELS_H
#define SD_KERNELS_H

#include <stddef.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- norm.cu ---- */

/* Bytes of scratch k_group_norm needs for these dimensions. */
size_t k_group_norm_scratch_bytes(int N, int C, int HW, int G);
/* GroupNorm over (C/G channels × HW) per (n, group), statistics in fp64, then affine
 * (w, b may be NULL) and optional SiLU.  out may equal inp.  scratch: see above. */
cudaError_t k_group_norm(float *out, const float *inp, const float *w, const float *b,
                         void *scratch, int N, int C, int HW, int G, float eps, int silu,
                         cudaStream_t stream);
/* LayerNorm over the last dim C of R rows (centred two-pass variance).  out may equal inp. */
cudaError_t k_layer_norm(float *out, const float *inp, const float *w, const float *b,
                         int R, int C, float eps, cudaStream_t stream);

/* ---- attention.cu ---- */

/* Largest head width k_attention supports. */
#define K_ATTENTION_MAX_D 512
/* Flash-style attention (tiled, online softmax, fp32 throughout, no score matrix in
 * device memory): layout and semantics of backend.h's attention op.  D <= 512. */
cudaError_t k_attention(float *out, const float *q, const float *k, const float *v,
                        int N, int H, int Lq, int Lk, int D, int ldq, int ldk, int ldv,
                        int ldo, float scale, int causal, cudaStream_t stream);

/* ---- elementwise.cu ---- */

/* kind: 0 SiLU, 1 GELU (erf), 2 quick GELU (enum act_kind's values).  out may equal inp. */
cudaError_t k_act(float *out, const float *inp, long long n, int kind, cudaStream_t stream);
/* inp [R, 2C] = [a | g] -> out [R, C] = a·GELU_erf(g). */
cudaError_t k_geglu(float *out, const float *inp, int R, int C, cudaStream_t stream);
/* nearest ×2: inp [NC, H, W] -> out [NC, 2H, 2W]. */
cudaError_t k_upsample2x(float *out, const float *inp, long long NC, int H, int W,
                         cudaStream_t stream);
/* t: N device floats -> out [N, dim]; see backend.h timestep_embedding. */
cudaError_t k_timestep_embedding(float *out, const float *t, int N, int dim, int flip_sin_to_cos,
                                 float shift, float max_period, cudaStream_t stream);
/* out[i, :] = table[ids[i], :] (D floats); ids: n device ints, already range-checked. */
cudaError_t k_embedding(float *out, const float *table, const int *ids, int n, int D,
                        cudaStream_t stream);
/* out = alpha·a + beta·b, or alpha·a when b is NULL.  out may equal a or b. */
cudaError_t k_axpby(float *out, float alpha, const float *a, float beta, const float *b,
                    long long n, cudaStream_t stream);
/* out[r, c, :] += v[(r % C_mod)] over `inner` floats, r < rows: with C_mod = rows this is
 * the resnet's per-(n, c) time embedding add, with C_mod = K a conv bias over [N, K, P]. */
cudaError_t k_add_channel(float *out, const float *v, long long rows, int C_mod, long long inner,
                          cudaStream_t stream);
/* out[r, :] += b over R rows of O floats (a linear layer's bias). */
cudaError_t k_add_bias_rows(float *out, const float *b, int R, int O, cudaStream_t stream);
/* out[n] = [a[n] (Ca·HW floats) ; b[n] (Cb·HW floats)]. */
cudaError_t k_concat_channels(float *out, const float *a, int Ca, const float *b, int Cb, int N,
                              long long HW, cudaStream_t stream);
/* out[n, c, r] = inp[n, r, c]. */
cudaError_t k_transpose(float *out, const float *inp, int N, int R, int C, cudaStream_t stream);
/* Zero padding: inp [NC, H, W] -> out [NC, H + pt + pb, W + pl + pr]. */
cudaError_t k_pad2d(float *out, const float *inp, long long NC, int H, int W, int pt, int pl,
                    int pb, int pr, cudaStream_t stream);

/* ---- backward and optimiser (elementwise.cu, norm.cu, attention.cu) ----
 * Gradient contract as backend.h: input gradients `=`, parameter gradients `+=`. */

/* dinp = dout · act'(inp); kind as k_act.  dinp may equal dout. */
cudaError_t k_act_backward(float *dinp, const float *dout, const float *inp, long long n, int kind,
                           cudaStream_t stream);
/* dinp [R, 2C] from dout [R, C] and the forward input [R, 2C]; dinp may equal inp. */
cudaError_t k_geglu_backward(float *dinp, const float *dout, const float *inp, int R, int C, cudaStream_t stream);
/* dinp [NC, H, W] = sum of each 2×2 block of dout [NC, 2H, 2W]. */
cudaError_t k_upsample2x_backward(float *dinp, const float *dout, long long NC, int H, int W, cudaStream_t stream);
/* Sums of `rows` rows of `inner` floats (fp64 inside): out[r] = sum (mod = rows,
 * accumulate 0), or out[r % mod] += sum (accumulate 1: a conv bias gradient). */
cudaError_t k_row_sums(float *out, const float *inp, long long rows, long long inner, int mod, int accumulate,
                       cudaStream_t stream);
/* out[o] += sum over R rows of inp[r, o] (a linear bias gradient). */
cudaError_t k_col_sums_acc(float *out, const float *inp, long long R, int O, cudaStream_t stream);
/* a = inp[:, :Ca], b = inp[:, Ca:] per n (either may be NULL). */
cudaError_t k_split_channels(float *a, int Ca, float *b, int Cb, const float *inp, int N, long long HW,
                             cudaStream_t stream);
/* The adjoint of k_pad2d: out [NC, H, W] = interior of inp [NC, H+pt+pb, W+pl+pr]. */
cudaError_t k_crop2d(float *out, const float *inp, long long NC, int H, int W, int pt, int pl, int pb, int pr,
                     cudaStream_t stream);
/* dtable[ids[i], :] += dout[i, :]; ids: n device ints, already range-checked. */
cudaError_t k_embedding_backward(float *dtable, const float *dout, const int *ids, int n, int D, cudaStream_t stream);
/* sum(a·b): k_dot_blocks(n) fp64 partials into part (device), to be added by the caller. */
#define K_DOT_MAX_BLOCKS 1024
int k_dot_blocks(long long n);
cudaError_t k_dot_partials(double *part, const float *a, const float *b, long long n, cudaStream_t stream);
/* Attention backward: dq, dk, dv (=) in q's, k's, v's layouts; probabilities recomputed
 * per query row.  Needs (2·Lk + 2·D + 4) floats of shared memory, at most this: */
#define K_ATTENTION_BW_MAX_SMEM (200 * 1024)
cudaError_t k_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                                 const float *v, int N, int H, int Lq, int Lk, int D, int ldq, int ldk, int ldv,
                                 int ldo, float scale, int causal, cudaStream_t stream);
/* GroupNorm / LayerNorm backward (statistics recomputed from inp; SiLU's pre-activation
 * too, which needs b).  dinp may equal dout.  Scratch sizes from the _bytes functions. */
size_t k_group_norm_backward_scratch_bytes(int N, int C, int HW, int G);
cudaError_t k_group_norm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                  const float *w, const float *b, void *scratch, int N, int C, int HW, int G,
                                  float eps, int silu, cudaStream_t stream);
size_t k_layer_norm_backward_scratch_bytes(int R);
cudaError_t k_layer_norm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                  const float *w, void *scratch, int R, int C, float eps, cudaStream_t stream);
/* AdamW (decoupled decay) with bias corrections bc1 = 1 − b1^t, bc2 = 1 − b2^t. */
cudaError_t k_adamw(float *p, const float *g, float *m, float *v, long long n, float lr, float b1, float b2,
                    float eps, float wd, float bc1, float bc2, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
