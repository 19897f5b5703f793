/* cpu_backward.h — the CPU backend's backward, loss and optimiser ops (cpu_backward.c),
 * reached only through the op table in cpu.c.  Contracts are in backend.h. */
#ifndef SD_CPU_BACKWARD_H
#define SD_CPU_BACKWARD_H

#include "backend.h"

void cpu_linear_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                         const float *inp, const float *w, int R, int I, int O);
void cpu_conv2d_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                         const float *inp, const float *w, int N, int C, int H, int W, int K,
                         int kh, int kw, int stride, int pt, int pl, int pb, int pr);
void cpu_group_norm_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, const float *b, int N, int C, int HW,
                             int G, float eps, int silu);
void cpu_layer_norm_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, int R, int C, float eps);
void cpu_attention_backward(struct backend *be, float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, int N, int H, int Lq,
                            int Lk, int D, int ldq, int ldk, int ldv, int ldo, float scale, int causal);
void cpu_act_backward(struct backend *be, float *dinp, const float *dout, const float *inp, long long n,
                      enum act_kind kind);
void cpu_geglu_backward(struct backend *be, float *dinp, const float *dout, const float *inp, int R, int C);
void cpu_upsample2x_backward(struct backend *be, float *dinp, const float *dout, int N, int C, int H, int W);
void cpu_embedding_backward(struct backend *be, float *dtable, const float *dout, const int *ids_host,
                            int n, int D);
void cpu_channel_sum(struct backend *be, float *dv, const float *dout, int N, int C, int HW);
void cpu_split_channels(struct backend *be, float *a, int Ca, float *b, int Cb, const float *inp, int N,
                        int HW);
double cpu_dot(struct backend *be, const float *a, const float *b, long long n);
void cpu_adamw(struct backend *be, float *p, const float *g, float *m, float *v, long long n, float lr,
               float b1, float b2, float eps, float wd, int step);

#endif
