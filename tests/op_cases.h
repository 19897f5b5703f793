/* op_cases.h — every backend op case, declared once, run by every harness that fits it
 * (ggml's tests/test-backend-ops.cpp, in C).
 *
 * A case (struct op_case, one row of op_cases[] in op_cases.c) is an op kind, its shapes,
 * strides and options, the input distributions, and one error bound per harness; a zero
 * bound leaves the case out of that harness.  The harnesses:
 *
 *   naive    tests/test_ops.c              CPU forward vs a naive double-precision loop;
 *                                          max|a − b| / max|b| over blocks (struct op_kind)
 *   fd       tests/test_backward_ops.c     CPU backward vs central differences of the CPU
 *                                          forward (h = 1e-2), same measure, plus the
 *                                          gradient contract (=, +=, NULL skips, in place)
 *   gpu      tests/gpu/test_gpu_ops.c      CUDA forward vs CPU forward, ‖a − b‖ / ‖b‖,
 *   gpu_fp32                               with TF32 on (gpu) and off (gpu_fp32)
 *   gpu_bw   tests/gpu/test_gpu_backward.c CUDA backward vs CPU backward, ‖a − b‖ / ‖b‖;
 *   gpu_bw_b                               gpu_bw_b bounds bias gradients (0: gpu_bw)
 *
 * An op kind (struct op_kind, op_kinds[]) says how to run any case of one op on any
 * backend: its buffers and their roles, the forward and backward calls, which elements of
 * a buffer are layout padding (leading-dimension gaps, a fused QKV buffer's spare column)
 * that the op must leave untouched.  Harnesses only allocate, fill, call and compare, so
 * adding a case is one row; adding an op is one kind here plus its naive loop in
 * test_ops.c.
 *
 * Conventions shared by all harnesses: a buffer of size 0 is absent (NULL, e.g. no bias);
 * outputs start as NaN so unwritten elements fail; layout padding must keep its initial
 * bits; parameter gradients are `+=`, input gradients `=` (backend.h). */
#ifndef SD_OP_CASES_H
#define SD_OP_CASES_H

#include <float.h>
#include <stddef.h>

#include "backend/backend.h"

/* An error bound that only an exact match meets (err < DBL_MIN ⇔ err == 0 for these
 * ratios of float differences). */
#define TOL_EXACT DBL_MIN

enum op_id {
    OP_GEMM, OP_LINEAR, OP_CONV2D, OP_GROUP_NORM, OP_LAYER_NORM, OP_ATTENTION, OP_ACT, OP_GEGLU,
    OP_UPSAMPLE2X, OP_TIMESTEP_EMBEDDING, OP_EMBEDDING, OP_AXPBY, OP_ADD_CHANNEL, OP_CONCAT,
    OP_TRANSPOSE, OP_COUNT
};

struct op_tol { double naive, fd, gpu, gpu_fp32, gpu_bw, gpu_bw_b; };

struct op_case {
    enum op_id op;
    const char *what;
    union {
        /* C[b] = alpha·op(A)·op(B) + beta·C; ld = the matrix width + pad_*; with batch > 1
         * each stride is the matrix size (with its ld) + s*_pad.  beta 0: C starts NaN. */
        struct { int M, N, K, ta, tb, pad_a, pad_b, pad_c, batch, sa_pad, sb_pad, sc_pad;
                 float alpha, beta; } gemm;
        struct { int R, I, O, bias; } linear;
        /* chunk: the GPU harness runs it on a backend whose conv calls hold at most this
         * many values (SDXLD_CUDA_CONV_CHUNK), so batches split into single images */
        struct { int N, C, H, W, K, kh, kw, s, pt, pl, pb, pr, bias, chunk; } conv;
        struct { int N, C, HW, G, silu, no_affine; float eps; } gn;
        struct { int R, C; float eps; } ln;
        /* q, k, v: ld = H·D + pad, out: H·D + ldo_pad; fused: q, k, v are column blocks
         * of one [N, L, 3·H·D + pad] buffer (Lq == Lk) and their gradient of another */
        struct { int N, H, Lq, Lk, D, causal, fused, pad, ldo_pad; } att;
        struct { long long n; enum act_kind kind; } act;
        struct { int R, C; } geglu;
        struct { int N, C, H, W; } up;
        struct { int N, dim, flip; float shift, max_period; } ts;
        /* ids[i] = (37·i + m − 1) mod m, m = id_mod ≤ V: id 0 is m − 1; repeats when n > m */
        struct { int V, D, n, id_mod; } emb;
        struct { long long n; float alpha, beta; int no_b; } axpby;
        struct { int N, C, HW; } addc;
        struct { int N, Ca, Cb, HW; } cat;
        struct { int N, R, C; } tr;
    };
    size_t tile;                            /* CPU im2col / attention tile bound (0: default) */
    struct { float sd, mean; } init[3];     /* buffers 0..2: mean + sd·N(0,1); sd 0 means 1 */
    struct op_tol tol;
};

enum op_role {
    OPB_IN,      /* input; its gradient is written with = */
    OPB_PARAM,   /* weight or bias; its gradient is accumulated with += */
    OPB_CONST,   /* input without a gradient */
    OPB_HOST,    /* host array passed to every backend as is (timesteps) */
    OPB_OUT,     /* the output; starts as NaN */
    OPB_INOUT,   /* the output, read first (GEMM's C under beta); starts random unless poison */
};

#define OP_MAX_BUFS 6

/* bias: a bias gradient (its own GPU bound); poison: an INOUT buffer that starts as NaN
 * (GEMM with beta 0 must not read C) */
struct op_buf { const char *name; size_t n; enum op_role role; int bias, poison; };

struct op_kind {
    const char *name;
    /* Fill d[] (inputs first, the one output last); returns the count. */
    int (*bufs)(const struct op_case *c, struct op_buf *d);
    void (*forward)(struct backend *be, const struct op_case *c, float *const *b);
    /* g[i]: the gradient of buffer i or NULL; dout shaped like the output.  NULL: no
     * backward (the case's fd / gpu_bw bounds must be 0). */
    void (*backward)(struct backend *be, const struct op_case *c, float *const *g, const float *dout,
                     float *const *b);
    /* Element e of buffer i is layout padding (never read as data, never written).
     * NULL: none. */
    int (*pad)(const struct op_case *c, int i, size_t e);
    /* Host inputs that are not random (timesteps); NULL: none. */
    void (*init)(const struct op_case *c, int i, float *x, size_t n);
    /* Elements per compared block of the output (max of the per-block errors); 0 = all.
     * naive: the naive harness's blocks, else the GPU's. */
    size_t (*block)(const struct op_case *c, int naive);
    int inplace;   /* out == buffer 0 allowed in the forward, dinp == dout in the backward */
    /* fd contract: an input gradient asked for alone matches the one computed with the
     * others within this (0: bit for bit) */
    double alone_tol;
};

extern const struct op_kind op_kinds[OP_COUNT];
extern const struct op_case op_cases[];
extern const int op_ncases;

/* "conv2d same 3x3: N2 C3 9x7 -> K5 k3x3 s1 pad 1,1,1,1 bias" into buf. */
void op_case_name(const struct op_case *c, char *buf, size_t n);
/* The ids an embedding case looks up (n ≤ OP_MAX_IDS). */
#define OP_MAX_IDS 256
void op_emb_ids(const struct op_case *c, int *ids);

/* A case's buffers in host memory: inputs mean + sd·N(0,1) from r (or the kind's init),
 * the output NaN (INOUT: random unless poison); absent buffers (n 0) are NULL. */
struct sd_rng;
struct op_host { int nbuf, out; struct op_buf d[OP_MAX_BUFS]; float *b[OP_MAX_BUFS]; };
void op_host_alloc(const struct op_case *c, struct sd_rng *r, struct op_host *h);
void op_host_free(struct op_host *h);
float *op_dup(const float *x, size_t n);
float *op_filled(size_t n, float v);
/* Copy the data elements (not the layout padding) of buffer i from x into out; returns
 * how many. */
size_t op_compact(const struct op_case *c, int i, const float *x, size_t n, float *out);
/* The padding of buffer i in x is bit for bit as in before. */
int op_pads_kept(const struct op_case *c, int i, const float *x, const float *before, size_t n);
/* Set buffer i's padding to v. */
void op_pads_set(const struct op_case *c, int i, float *x, size_t n, float v);
/* The worst err(a, b) over blocks of `block` elements (0: one block). */
double op_block_err(double (*err)(const float *, const float *, size_t), const float *a, const float *b,
                    size_t n, size_t block);

#endif
