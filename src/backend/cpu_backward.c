/* cpu_backward.c — the fp32 CPU backward ops, the dot-product loss helper and AdamW: the
 * oracle every CUDA backward is checked against, itself checked against central finite
 * differences (tests/test_backward_ops.c).
 *
 * Written like the forward in cpu.c, which each op mirrors: GEMMs go through cpu_sgemm;
 * convolution is im2col over bounded output-column tiles (dW += dout·colᵀ) and a col2im
 * scatter of Wᵀ·dout; attention recomputes the probabilities per query tile exactly as the
 * forward does, so nothing but the inputs has to be saved.  Normalisation statistics are
 * recomputed in double the same way as the forward.  Loops are parallelised with
 * cpu_parallel only over independent rows or channels: every parameter-gradient element
 * is owned by one thread, so `+=` needs no atomics and results do not depend on the
 * thread count.  Gradient contract (= for inputs, += for parameters, NULL skips): backend.h. */
#include <math.h>
#include <string.h>

#include "backend.h"
#include "cpu_backward.h"
#include "cpu_internal.h"

#define BAIL(be) do { if ((be)->err) return; } while (0)
#define PAR_MIN 65536          /* below this many elements one thread is faster */

static int nthr(struct backend *be, long long work) { return work > PAR_MIN ? be->threads : 1; }

/* ---- linear ---- */

struct colsum_ctx { float *db; const float *dout; int R, O; };

/* db[o] += Σ_r dout[r, o], columns split across threads. */
static void colsum_cols(void *p, long long lo, long long hi) {
    struct colsum_ctx *g = p;
    for (long long o = lo; o < hi; o++) {
        double s = 0;
        for (int r = 0; r < g->R; r++) s += g->dout[(size_t)r * g->O + o];
        g->db[o] += (float)s;
    }
}

void cpu_linear_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                         const float *inp, const float *w, int R, int I, int O) {
    BAIL(be);
    if (dinp) /* dinp[R, I] = dout[R, O]·w[O, I] */
        cpu_sgemm(be->threads, 0, 0, R, I, O, 1.0f, dout, O, w, I, 0.0f, dinp, I);
    if (dw)   /* dw[O, I] += dout[R, O]ᵀ·inp[R, I] */
        cpu_sgemm(be->threads, 1, 0, O, I, R, 1.0f, dout, O, inp, I, 1.0f, dw, I);
    if (db) {
        struct colsum_ctx g = { db, dout, R, O };
        cpu_parallel(nthr(be, (long long)R * O), O, colsum_cols, &g);
    }
}

/* ---- conv2d ---- */

/* The adjoint: dx[c, iy, ix] += dcol[(c, ki, kj), q].  Split by input channel, whose
 * kh·kw rows of dcol land only in that channel's plane, so threads never collide. */
struct col2im_ctx {
    float *dx; const float *dcol;
    int C, H, W, kh, kw, stride, pt, pl, Wo, p0, np;
};

static void col2im_channels(void *p, long long lo, long long hi) {
    struct col2im_ctx *g = p;
    for (long long c = lo; c < hi; c++) {
        float *xc = g->dx + (size_t)c * g->H * g->W;
        for (int ki = 0; ki < g->kh; ki++)
            for (int kj = 0; kj < g->kw; kj++) {
                const float *src = g->dcol + ((size_t)(c * g->kh + ki) * g->kw + kj) * g->np;
                /* walk the tile one output row at a time: no division per element */
                int q = 0, oy = g->p0 / g->Wo, ox = g->p0 % g->Wo;
                while (q < g->np) {
                    int run = g->Wo - ox < g->np - q ? g->Wo - ox : g->np - q;
                    int iy = oy * g->stride - g->pt + ki;
                    if (iy >= 0 && iy < g->H && g->stride == 1) {   /* a contiguous, branch-free add */
                        float *row = xc + (size_t)iy * g->W;
                        int ix0 = ox - g->pl + kj, e0 = ix0 < 0 ? -ix0 : 0;
                        int e1 = g->W - ix0 < run ? g->W - ix0 : run;
                        for (int e = e0; e < e1; e++) row[ix0 + e] += src[q + e];
                    } else if (iy >= 0 && iy < g->H) {
                        float *row = xc + (size_t)iy * g->W;
                        for (int e = 0; e < run; e++) {
                            int ix = (ox + e) * g->stride - g->pl + kj;
                            if (ix >= 0 && ix < g->W) row[ix] += src[q + e];
                        }
                    }
                    q += run; oy++; ox = 0;
                }
            }
    }
}

struct convdb_ctx { float *db; const float *dout; int N, K; long long P; };

static void conv_db_channels(void *p, long long lo, long long hi) {
    struct convdb_ctx *g = p;
    for (long long k = lo; k < hi; k++) {
        double s = 0;
        for (int n = 0; n < g->N; n++) {
            const float *d = g->dout + ((size_t)n * g->K + k) * g->P;
            for (long long i = 0; i < g->P; i++) s += d[i];
        }
        g->db[k] += (float)s;
    }
}

void cpu_conv2d_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                         const float *inp, const float *w, int N, int C, int H, int W, int K,
                         int kh, int kw, int stride, int pt, int pl, int pb, int pr) {
    BAIL(be);
    int Ho = (H + pt + pb - kh) / stride + 1, Wo = (W + pl + pr - kw) / stride + 1;
    long long P = (long long)Ho * Wo, CK = (long long)C * kh * kw;
    if (db) {
        struct convdb_ctx g = { db, dout, N, K, P };
        cpu_parallel(nthr(be, (long long)N * K * P), K, conv_db_channels, &g);
    }
    if (!dinp && !dw) return;
    int direct = kh == 1 && kw == 1 && stride == 1 && !pt && !pl && !pb && !pr;
    if (direct) {   /* col is the input itself: plain GEMMs per sample */
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C * P, *d = dout + (size_t)n * K * P;
            if (dw) cpu_sgemm(be->threads, 0, 1, K, C, (int)P, 1.0f, d, (int)P, x, (int)P, 1.0f, dw, C);
            if (dinp) cpu_sgemm(be->threads, 1, 0, C, (int)P, K, 1.0f, w, C, d, (int)P, 0.0f,
                                dinp + (size_t)n * C * P, (int)P);
        }
        return;
    }
    /* One scratch holds the col tile (for dw) and the dcol tile (for dinp); the tile is
     * sized so both together stay within the forward's bound. */
    int nbuf = (dw != NULL) + (dinp != NULL);
    long long tile = (long long)(cpu_tile_floats(be) / ((size_t)CK * nbuf));
    if (tile < 1) tile = 1;
    if (tile > P) tile = P;
    float *buf = cpu_scratch(be, (size_t)CK * tile * nbuf);
    if (!buf) return;
    float *col = dw ? buf : NULL, *dcol = dinp ? buf + (dw ? (size_t)CK * tile : 0) : NULL;
    if (dinp) memset(dinp, 0, sizeof(float) * (size_t)N * C * H * W);   /* col2im accumulates */
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C * H * W, *d = dout + (size_t)n * K * P;
        for (long long p0 = 0; p0 < P; p0 += tile) {
            int np = (int)(P - p0 < tile ? P - p0 : tile);
            if (dw) {   /* dw[K, CK] += dout[K, np]·col[CK, np]ᵀ */
                struct im2col_ctx g = { x, col, C, H, W, kh, kw, stride, pt, pl, Wo, (int)p0, np };
                cpu_parallel(nthr(be, CK * np), CK, cpu_im2col_rows, &g);
                cpu_sgemm(be->threads, 0, 1, K, (int)CK, np, 1.0f, d + p0, (int)P, col, np, 1.0f, dw, (int)CK);
            }
            if (dinp) { /* dcol[CK, np] = w[K, CK]ᵀ·dout[K, np], then scatter */
                cpu_sgemm(be->threads, 1, 0, (int)CK, np, K, 1.0f, w, (int)CK, d + p0, (int)P, 0.0f, dcol, np);
                struct col2im_ctx g = { dinp + (size_t)n * C * H * W, dcol, C, H, W, kh, kw, stride, pt, pl,
                                        Wo, (int)p0, np };
                cpu_parallel(nthr(be, CK * np), C, col2im_channels, &g);
            }
        }
    }
}

/* ---- normalisation ---- */

struct gnb_ctx {
    float *dinp, *dw, *db;
    const float *dout, *inp, *w, *b;
    int N, C, HW, G; float eps; int silu;
};

/* dL/dy for one element: dout, times silu'(y) when the forward fused SiLU. */
static inline float gn_dy(float dout, float xh, float wc, float bc, int silu) {
    if (!silu) return dout;
    float y = xh * wc + bc, s = 1.0f / (1.0f + expf(-y));
    return dout * s * (1.0f + y * (1.0f - s));
}

/* Split by group: a group owns its channels' dw/db over all samples.  dinp may alias dout
 * (not inp: the second pass reads inp after dinp holds the first pass's dy). */
static void gnb_groups(void *p, long long lo, long long hi) {
    struct gnb_ctx *g = p;
    int cpg = g->C / g->G;
    size_t cnt = (size_t)cpg * g->HW;
    for (long long grp = lo; grp < hi; grp++)
        for (int n = 0; n < g->N; n++) {
            size_t base = ((size_t)n * g->C + (size_t)grp * cpg) * g->HW;
            const float *x = g->inp + base, *dy = g->dout + base;
            float m, rstd;                  /* statistics exactly as the forward */
            cpu_group_stats(x, cnt, g->eps, &m, &rstd);
            double sdx = 0, sdxx = 0;       /* Σ dxhat, Σ dxhat·xhat over the group */
            float *dx = g->dinp ? g->dinp + base : NULL;
            for (int c = 0; c < cpg; c++) {
                int ch = (int)grp * cpg + c;
                float wc = g->w ? g->w[ch] : 1.0f, bc = g->b ? g->b[ch] : 0.0f;
                double cb[8] = { 0 }, cw[8] = { 0 };   /* 8 partial sums, as cpu_group_stats */
                for (int i = 0; i < g->HW; i++) {
                    size_t j = (size_t)c * g->HW + i;
                    float xh = (x[j] - m) * rstd, d = gn_dy(dy[j], xh, wc, bc, g->silu);
                    cb[i & 7] += d;
                    cw[i & 7] += (double)d * xh;
                    if (dx) dx[j] = d;      /* dy (and SiLU's derivative) once; dx reads it back */
                }
                double tb = cpu_sum8(cb), tw = cpu_sum8(cw);
                sdx += tb * wc;
                sdxx += tw * wc;
                if (g->db) g->db[ch] += (float)tb;
                if (g->dw) g->dw[ch] += (float)tw;
            }
            if (!dx) continue;
            float mdx = (float)(sdx / cnt), mdxx = (float)(sdxx / cnt);
            for (int c = 0; c < cpg; c++) {
                float wc = g->w ? g->w[(int)grp * cpg + c] : 1.0f;
                for (int i = 0; i < g->HW; i++) {
                    size_t j = (size_t)c * g->HW + i;
                    float xh = (x[j] - m) * rstd;
                    dx[j] = rstd * (dx[j] * wc - mdx - xh * mdxx);
                }
            }
        }
}

void cpu_group_norm_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, const float *b, int N, int C, int HW,
                             int G, float eps, int silu) {
    BAIL(be);
    struct gnb_ctx g = { dinp, dw, db, dout, inp, w, b, N, C, HW, G, eps, silu };
    cpu_parallel(nthr(be, (long long)N * C * HW), G, gnb_groups, &g);
}

struct lnb_ctx {
    float *dinp, *dw, *db, *stats;      /* stats [R, 2]: mean, rstd */
    const float *dout, *inp, *w;
    int R, C; float eps;
};

/* Pass 1, by row: the forward's statistics. */
static void lnb_stats(void *p, long long lo, long long hi) {
    struct lnb_ctx *g = p;
    int C = g->C;
    for (long long r = lo; r < hi; r++) {
        const float *x = g->inp + (size_t)r * C;
        double s = 0, ss = 0;
        for (int i = 0; i < C; i++) s += x[i];
        double mean = s / C;
        for (int i = 0; i < C; i++) { double d = x[i] - mean; ss += d * d; }
        g->stats[2 * r] = (float)mean;
        g->stats[2 * r + 1] = (float)(1.0 / sqrt(ss / C + g->eps));
    }
}

/* Pass 2, by column: dw[c] += Σ_r dout·xhat, db[c] += Σ_r dout. */
static void lnb_cols(void *p, long long lo, long long hi) {
    struct lnb_ctx *g = p;
    for (long long c = lo; c < hi; c++) {
        double sw = 0, sb = 0;
        for (int r = 0; r < g->R; r++) {
            size_t j = (size_t)r * g->C + c;
            float xh = (g->inp[j] - g->stats[2 * r]) * g->stats[2 * r + 1];
            sw += (double)g->dout[j] * xh;
            sb += g->dout[j];
        }
        if (g->dw) g->dw[c] += (float)sw;
        if (g->db) g->db[c] += (float)sb;
    }
}

/* Pass 3, by row: dinp, last, so dinp may alias dout or inp. */
static void lnb_dinp(void *p, long long lo, long long hi) {
    struct lnb_ctx *g = p;
    int C = g->C;
    for (long long r = lo; r < hi; r++) {
        const float *x = g->inp + (size_t)r * C, *dy = g->dout + (size_t)r * C;
        float m = g->stats[2 * r], rstd = g->stats[2 * r + 1];
        double sdx = 0, sdxx = 0;       /* Σ dxhat, Σ dxhat·xhat over the row */
        for (int i = 0; i < C; i++) {
            float xh = (x[i] - m) * rstd, d = dy[i] * g->w[i];
            sdx += d;
            sdxx += (double)d * xh;
        }
        float mdx = (float)(sdx / C), mdxx = (float)(sdxx / C);
        float *dx = g->dinp + (size_t)r * C;
        for (int i = 0; i < C; i++) {
            float xh = (x[i] - m) * rstd;
            dx[i] = rstd * (dy[i] * g->w[i] - mdx - xh * mdxx);
        }
    }
}

void cpu_layer_norm_backward(struct backend *be, float *dinp, float *dw, float *db, const float *dout,
                             const float *inp, const float *w, int R, int C, float eps) {
    BAIL(be);
    float *stats = cpu_scratch(be, (size_t)2 * (R > 0 ? R : 1));
    if (!stats) return;
    struct lnb_ctx g = { dinp, dw, db, stats, dout, inp, w, R, C, eps };
    int t = nthr(be, (long long)R * C);
    cpu_parallel(t, R, lnb_stats, &g);
    if (dw || db) cpu_parallel(t, C, lnb_cols, &g);
    if (dinp) cpu_parallel(t, R, lnb_dinp, &g);
}

/* ---- attention ---- */


void cpu_attention_backward(struct backend *be, float *dq, float *dk, float *dv, const float *dout,
                            const float *q, const float *k, const float *v, int N, int H, int Lq,
                            int Lk, int D, int ldq, int ldk, int ldv, int ldo, float scale, int causal) {
    BAIL(be);
    /* dk, dv collect every query tile's share: clear their H·D columns first (only those:
     * in a fused QKV gradient the other columns belong to dq and the neighbours). */
    for (long long r = 0; r < (long long)N * Lk; r++) {
        if (dk) memset(dk + r * ldk, 0, sizeof(float) * (size_t)H * D);
        if (dv) memset(dv + r * ldv, 0, sizeof(float) * (size_t)H * D);
    }
    if (N <= 0 || Lq <= 0 || Lk <= 0 || (!dq && !dk && !dv)) return;
    int tile = (int)(cpu_tile_floats(be) / (2 * (size_t)Lk));   /* P and dP tiles */
    if (tile < 1) tile = 1;
    if (tile > Lq) tile = Lq;
    float *sp = cpu_scratch(be, (size_t)2 * tile * Lk);
    if (!sp) return;
    float *dp = sp + (size_t)tile * Lk;
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++) {
            const float *qn = q + (size_t)n * Lq * ldq + h * D;
            const float *kn = k + (size_t)n * Lk * ldk + h * D;
            const float *vn = v + (size_t)n * Lk * ldv + h * D;
            const float *on = dout + (size_t)n * Lq * ldo + h * D;
            float *dqn = dq ? dq + (size_t)n * Lq * ldq + h * D : NULL;
            float *dkn = dk ? dk + (size_t)n * Lk * ldk + h * D : NULL;
            float *dvn = dv ? dv + (size_t)n * Lk * ldv + h * D : NULL;
            for (int i0 = 0; i0 < Lq; i0 += tile) {
                int rows = Lq - i0 < tile ? Lq - i0 : tile;
                /* causal: no row of this tile sees keys past i0 + rows − 1, so they are
                 * left out of every product (their probabilities are exactly zero) */
                int L = causal && i0 + rows < Lk ? i0 + rows : Lk;
                const float *qt = qn + (size_t)i0 * ldq, *ot = on + (size_t)i0 * ldo;
                cpu_sgemm(be->threads, 0, 1, rows, L, D, scale, qt, ldq, kn, ldk, 0.0f, sp, L);
                cpu_softmax_rows(sp, rows, L, causal ? i0 : -1);
                if (dvn)   /* dV[L, D] += Pᵀ·dO */
                    cpu_sgemm(be->threads, 1, 0, L, D, rows, 1.0f, sp, L, ot, ldo, 1.0f, dvn, ldv);
                if (!dqn && !dkn) continue;
                /* dP = dO·Vᵀ; dS = P ⊙ (dP − rowsum(dP ⊙ P)) */
                cpu_sgemm(be->threads, 0, 1, rows, L, D, 1.0f, ot, ldo, vn, ldv, 0.0f, dp, L);
                for (int i = 0; i < rows; i++) {
                    float *pr = sp + (size_t)i * L, *dr = dp + (size_t)i * L;
                    double t = 0;
                    for (int j = 0; j < L; j++) t += (double)pr[j] * dr[j];
                    for (int j = 0; j < L; j++) dr[j] = pr[j] * (dr[j] - (float)t);
                }
                if (dqn)   /* dQ = scale·dS·K */
                    cpu_sgemm(be->threads, 0, 0, rows, D, L, scale, dp, L, kn, ldk, 0.0f,
                              dqn + (size_t)i0 * ldq, ldq);
                if (dkn)   /* dK += scale·dSᵀ·Q */
                    cpu_sgemm(be->threads, 1, 0, L, D, rows, scale, dp, L, qt, ldq, 1.0f, dkn, ldk);
            }
        }
}

/* ---- elementwise ---- */

struct actb_ctx { float *dinp; const float *dout, *inp; enum act_kind kind; };

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* d/dx of x·Φ(x) = Φ(x) + x·φ(x), the exact-erf GELU. */
static inline float gelu_erf_grad(float x) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return cdf + x * pdf;
}

static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

static void actb_range(void *p, long long lo, long long hi) {
    struct actb_ctx *g = p;
    for (long long i = lo; i < hi; i++) {
        float x = g->inp[i], d;
        switch (g->kind) {
        case ACT_SILU: { float s = sigmoidf(x); d = s * (1.0f + x * (1.0f - s)); break; }
        case ACT_GELU: d = gelu_erf_grad(x); break;
        case ACT_QUICK_GELU: { float s = sigmoidf(1.702f * x); d = s * (1.0f + 1.702f * x * (1.0f - s)); break; }
        default: d = 0.0f;
        }
        g->dinp[i] = g->dout[i] * d;
    }
}

void cpu_act_backward(struct backend *be, float *dinp, const float *dout, const float *inp, long long n,
                      enum act_kind kind) {
    BAIL(be);
    struct actb_ctx g = { dinp, dout, inp, kind };
    cpu_parallel(nthr(be, n), n, actb_range, &g);
}

struct geglub_ctx { float *dinp; const float *dout, *inp; int C; };

static void geglub_rows(void *p, long long lo, long long hi) {
    struct geglub_ctx *g = p;
    int C = g->C;
    for (long long r = lo; r < hi; r++) {
        const float *a = g->inp + (size_t)r * 2 * C, *gt = a + C, *dy = g->dout + (size_t)r * C;
        float *da = g->dinp + (size_t)r * 2 * C, *dg = da + C;
        for (int i = 0; i < C; i++) {
            float av = a[i], gv = gt[i], d = dy[i];   /* read first: dinp may alias inp */
            da[i] = d * gelu_erf(gv);
            dg[i] = d * av * gelu_erf_grad(gv);
        }
    }
}

void cpu_geglu_backward(struct backend *be, float *dinp, const float *dout, const float *inp, int R, int C) {
    BAIL(be);
    struct geglub_ctx g = { dinp, dout, inp, C };
    cpu_parallel(nthr(be, (long long)R * C), R, geglub_rows, &g);
}

void cpu_upsample2x_backward(struct backend *be, float *dinp, const float *dout, int N, int C, int H, int W) {
    BAIL(be);
    for (long long nc = 0; nc < (long long)N * C; nc++) {
        const float *d = dout + nc * 4 * H * W;
        float *x = dinp + nc * H * W;
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                const float *d0 = d + (size_t)2 * i * 2 * W + 2 * j, *d1 = d0 + 2 * W;
                x[(size_t)i * W + j] = d0[0] + d0[1] + d1[0] + d1[1];
            }
    }
}

void cpu_embedding_backward(struct backend *be, float *dtable, const float *dout, const int *ids,
                            int n, int D) {
    BAIL(be);
    /* serial: ids repeat (padding tokens), and n is a prompt's worth of rows */
    for (int i = 0; i < n; i++) {
        float *t = dtable + (size_t)ids[i] * D;
        const float *d = dout + (size_t)i * D;
        for (int j = 0; j < D; j++) t[j] += d[j];
    }
}

void cpu_channel_sum(struct backend *be, float *dv, const float *dout, int N, int C, int HW) {
    BAIL(be);
    for (long long nc = 0; nc < (long long)N * C; nc++) {
        const float *d = dout + nc * HW;
        double s = 0;
        for (int i = 0; i < HW; i++) s += d[i];
        dv[nc] = (float)s;
    }
}

void cpu_split_channels(struct backend *be, float *a, int Ca, float *b, int Cb, const float *inp, int N,
                        int HW) {
    BAIL(be);
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * (Ca + Cb) * HW;
        if (a) memcpy(a + (size_t)n * Ca * HW, x, sizeof(float) * Ca * HW);
        if (b) memcpy(b + (size_t)n * Cb * HW, x + (size_t)Ca * HW, sizeof(float) * Cb * HW);
    }
}

/* ---- losses and optimiser ---- */

#define DOT_CHUNKS 64   /* fixed split: the sum does not depend on the thread count */

struct dot_ctx { const float *a, *b; long long n; double part[DOT_CHUNKS]; };

static void dot_chunks(void *p, long long lo, long long hi) {
    struct dot_ctx *g = p;
    for (long long c = lo; c < hi; c++) {
        long long i0 = g->n * c / DOT_CHUNKS, i1 = g->n * (c + 1) / DOT_CHUNKS;
        double s = 0;
        for (long long i = i0; i < i1; i++) s += (double)g->a[i] * g->b[i];
        g->part[c] = s;
    }
}

double cpu_dot(struct backend *be, const float *a, const float *b, long long n) {
    if (be->err) return 0.0;
    struct dot_ctx g = { a, b, n, { 0 } };
    cpu_parallel(nthr(be, n), DOT_CHUNKS, dot_chunks, &g);
    double s = 0;
    for (int c = 0; c < DOT_CHUNKS; c++) s += g.part[c];
    return s;
}

struct adamw_ctx {
    float *p, *m, *v; const float *g;
    float lr, b1, b2, eps, wd, bc1, bc2;
};

static void adamw_range(void *ctx, long long lo, long long hi) {
    struct adamw_ctx *a = ctx;
    for (long long i = lo; i < hi; i++) {
        float g = a->g[i];
        float m = a->b1 * a->m[i] + (1.0f - a->b1) * g;
        float v = a->b2 * a->v[i] + (1.0f - a->b2) * g * g;
        a->m[i] = m;
        a->v[i] = v;
        float mh = m / a->bc1, vh = v / a->bc2;
        a->p[i] -= a->lr * (mh / (sqrtf(vh) + a->eps) + a->wd * a->p[i]);
    }
}

void cpu_adamw(struct backend *be, float *p, const float *g, float *m, float *v, long long n, float lr,
               float b1, float b2, float eps, float wd, int step) {
    BAIL(be);
    if (step < 1) { backend_set_error(be, SD_ERR_INVALID, "adamw: step must be >= 1"); return; }
    struct adamw_ctx a = { p, m, v, g, lr, b1, b2, eps, wd,
                           1.0f - powf(b1, (float)step), 1.0f - powf(b2, (float)step) };
    cpu_parallel(nthr(be, n), n, adamw_range, &a);
}
