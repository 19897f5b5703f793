/* cpu.c — the fp32 CPU backend: the reference every other backend is tested against.
 *
 * Written for clarity first and speed second: GEMM goes to OpenBLAS (or the blocked
 * fallback), convolution is im2col + GEMM over column tiles (so scratch stays bounded
 * at any image size), attention is GEMM + row softmax over query tiles.  The remaining
 * ops are simple loops, parallelised with pthreads where they touch whole activations.
 * Scratch (im2col tiles, attention scores) lives in one buffer that only ever grows,
 * so steady-state forward passes allocate nothing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

#include "backend.h"
#include "cpu_internal.h"
#include "cpu_backward.h"

#ifdef SD_HAVE_BLAS
#include <cblas.h>
void openblas_set_num_threads(int);
#endif

#define SCRATCH_TILE_FLOATS (8u << 20)   /* 32 MiB per im2col / score tile */

struct cpu {
    float *scratch;
    size_t scratch_floats;
    size_t tile_floats;          /* bound on one im2col / score tile */
    struct cpu_wstate *ws;       /* weights in their stored precision (cpu_weights.c) */
};

struct cpu_wstate *cpu_wstate(struct backend *be) { return ((struct cpu *)be->impl)->ws; }

void backend_cpu_set_tile(struct backend *be, size_t floats) {
    ((struct cpu *)be->impl)->tile_floats = floats ? floats : SCRATCH_TILE_FLOATS;
}

static float *scratch(struct backend *be, size_t n) {
    struct cpu *c = be->impl;
    if (n > c->scratch_floats) {
        float *p = sd_realloc(c->scratch, n * sizeof(float));
        if (!p) { backend_set_error(be, SD_ERR_NOMEM, sd_last_error()); return NULL; }
        c->scratch = p;
        c->scratch_floats = n;
    }
    return c->scratch;
}

/* For cpu_backward.c: the same grow-only scratch and tile bound. */
float *cpu_scratch(struct backend *be, size_t n) { return scratch(be, n); }
size_t cpu_tile_floats(struct backend *be) { return ((struct cpu *)be->impl)->tile_floats; }

#define BAIL(be) do { if ((be)->err) return; } while (0)

/* ---- memory ---- */

static void *cpu_alloc(struct backend *be, size_t n) { (void)be; return sd_malloc(n ? n : 1); }
static void cpu_free(struct backend *be, void *p) { (void)be; sd_free(p); }
static void cpu_memcpy(struct backend *be, void *d, const void *s, size_t n) { (void)be; if (n) memmove(d, s, n); }
static void cpu_zero(struct backend *be, void *d, size_t n) { (void)be; memset(d, 0, n); }
static void cpu_sync(struct backend *be) { (void)be; }
static void cpu_trim(struct backend *be) {
    struct cpu *c = be->impl;
    sd_free(c->scratch);
    c->scratch = NULL;
    c->scratch_floats = 0;
    cpu_wstate_trim(c->ws);
    sd_heap_trim();
}
static void cpu_destroy(struct backend *be) {
    struct cpu *c = be->impl;
    cpu_wstate_destroy(c->ws);
    sd_free(c->scratch);
    sd_free(c);
    sd_free(be);
}

/* ---- GEMM family ---- */

static void cpu_gemm(struct backend *be, int ta, int tb, int M, int N, int K, float alpha,
                     const float *A, int lda, long long sA, const float *B, int ldb, long long sB,
                     float beta, float *C, int ldc, long long sC, int batch) {
    BAIL(be);
    for (int b = 0; b < batch; b++)
        cpu_sgemm(be->threads, ta, tb, M, N, K, alpha, A + b * sA, lda, B + b * sB, ldb, beta,
                  C + b * sC, ldc);
}

/* Batch invariance: an image's pixels must not depend on what it is batched with, but a
 * GEMM library picks different kernels (and summation orders) for different M.  So every
 * GEMM here has a fixed number of rows: one sample's S rows when S < LINEAR_ROWS (a
 * prompt's 77 tokens run unpadded), else LINEAR_ROWS, a short tail padded through scratch
 * (padding 77 rows to 256 made the text encoders 2.5x slower). */
enum { LINEAR_ROWS = 256 };

static void linear_rows(struct backend *be, float *y, const float *x, const float *w, const void *wv, sd_dtype wdt,
                        const float *b, int M, int nin, int nout) {
    if (!w) { cpu_linear_native(be, y, x, wv, wdt, b, M, nin, nout); return; }
    for (int r = 0; b && r < M; r++) memcpy(y + (size_t)r * nout, b, sizeof(float) * nout);
    cpu_sgemm(be->threads, 0, 1, M, nout, nin, 1.0f, x, nin, w, nin, b ? 1.0f : 0.0f, y, nout);
}

static void cpu_linear(struct backend *be, float *out, const float *inp, const void *wv, sd_dtype wdt,
                       const float *b, int R, int S, int nin, int nout) {
    BAIL(be);
    const float *w = NULL;   /* NULL: BF16 computed natively */
    if (!(wdt == DT_BF16 && be->native_bf16) && !(w = cpu_weight_f32(be, wv, wdt, (size_t)nin * nout))) return;
    int block = S > 0 && S < LINEAR_ROWS ? S : LINEAR_ROWS;
    for (int r0 = 0; r0 < R && !be->err; r0 += block) {
        int rows = R - r0 < block ? R - r0 : block;
        const float *x = inp + (size_t)r0 * nin;
        float *y = out + (size_t)r0 * nout;
        if (rows == block) { linear_rows(be, y, x, w, wv, wdt, b, rows, nin, nout); continue; }
        float *sx = scratch(be, (size_t)block * (nin + nout));
        if (!sx) return;
        memcpy(sx, x, sizeof(float) * rows * nin);
        memset(sx + (size_t)rows * nin, 0, sizeof(float) * (block - rows) * nin);
        linear_rows(be, sx + (size_t)block * nin, sx, w, wv, wdt, b, block, nin, nout);
        memcpy(y, sx + (size_t)block * nin, sizeof(float) * rows * nout);
    }
}

/* col[(c, ki, kj), q] for output columns p0..p0+np-1, zero where the tap falls in the
 * padding; walked one output row at a time (no division per element), and for stride 1
 * each row is a zero head, one contiguous copy and a zero tail. */
void cpu_im2col_rows(void *p, long long lo, long long hi) {
    struct im2col_ctx *g = p;
    for (long long r = lo; r < hi; r++) {        /* r = (c, ki, kj) */
        int c = (int)(r / (g->kh * g->kw)), ki = (int)(r / g->kw % g->kh), kj = (int)(r % g->kw);
        const float *xc = g->x + (size_t)c * g->H * g->W;
        float *dst = g->col + (size_t)r * g->np;
        int q = 0, oy = g->p0 / g->Wo, ox = g->p0 % g->Wo;
        while (q < g->np) {
            int run = g->Wo - ox < g->np - q ? g->Wo - ox : g->np - q;
            int iy = oy * g->stride - g->pt + ki;
            if (iy < 0 || iy >= g->H) memset(dst + q, 0, sizeof(float) * run);
            else if (g->stride == 1) {
                const float *row = xc + (size_t)iy * g->W;
                int ix0 = ox - g->pl + kj;                       /* ix of e = 0 */
                int e0 = ix0 < 0 ? -ix0 : 0, e1 = g->W - ix0 < run ? g->W - ix0 : run;
                if (e1 < e0) e1 = e0;
                if (e0 > run) e0 = e1 = run;
                memset(dst + q, 0, sizeof(float) * e0);
                memcpy(dst + q + e0, row + ix0 + e0, sizeof(float) * (e1 - e0));
                memset(dst + q + e1, 0, sizeof(float) * (run - e1));
            } else {
                const float *row = xc + (size_t)iy * g->W;
                for (int e = 0; e < run; e++) {
                    int ix = (ox + e) * g->stride - g->pl + kj;
                    dst[q + e] = ix >= 0 && ix < g->W ? row[ix] : 0.0f;
                }
            }
            q += run; oy++; ox = 0;
        }
    }
}

static void cpu_conv2d(struct backend *be, float *out, const float *inp, const void *wv, sd_dtype wdt,
                       const float *b, int N, int C, int H, int W, int K, int kh, int kw,
                       int stride, int pt, int pl, int pb, int pr) {
    BAIL(be);
    const float *w = wdt == DT_BF16 && be->native_bf16 ? NULL : cpu_weight_f32(be, wv, wdt, (size_t)K * C * kh * kw);
    if (be->err) return;
    int Ho = (H + pt + pb - kh) / stride + 1, Wo = (W + pl + pr - kw) / stride + 1;
    long long P = (long long)Ho * Wo, CK = (long long)C * kh * kw;
    int direct = kh == 1 && kw == 1 && stride == 1 && !pt && !pl && !pb && !pr;
    int tile = direct ? (int)P : (int)(((struct cpu *)be->impl)->tile_floats / CK);
    if (tile < 1) tile = 1;
    if (tile > P) tile = (int)P;
    float *col = direct ? NULL : scratch(be, (size_t)CK * tile);
    if (!direct && !col) return;
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C * H * W;
        float *y = out + (size_t)n * K * P;
        for (int k = 0; k < K; k++) {
            float bias = b ? b[k] : 0.0f;
            for (long long p_ = 0; p_ < P; p_++) y[k * P + p_] = bias;
        }
        if (direct) {
            if (!cpu_conv_tile_native(be, y, P, wv, wdt, K, x, C, (int)P))
                cpu_sgemm(be->threads, 0, 0, K, (int)P, C, 1.0f, w, C, x, (int)P, 1.0f, y, (int)P);
            continue;
        }
        for (long long p0 = 0; p0 < P; p0 += tile) {
            int np = (int)(P - p0 < tile ? P - p0 : tile);
            struct im2col_ctx g = { x, col, C, H, W, kh, kw, stride, pt, pl, Wo, (int)p0, np };
            cpu_parallel(CK * np > 65536 ? be->threads : 1, CK, cpu_im2col_rows, &g);
            if (!cpu_conv_tile_native(be, y + p0, P, wv, wdt, K, col, (int)CK, np))
                cpu_sgemm(be->threads, 0, 0, K, np, (int)CK, 1.0f, w, (int)CK, col, np, 1.0f, y + p0, (int)P);
        }
    }
}

/* ---- normalisation ---- */

struct gn_ctx { float *out; const float *inp, *w, *b; int C, HW, G; float eps; int silu; };

void cpu_group_stats(const float *x, size_t n, float eps, float *mean, float *rstd) {
    double s[8] = { 0 }, ss[8] = { 0 };
    size_t i = 0, n8 = n & ~(size_t)7;
    for (; i < n8; i += 8)
        for (int k = 0; k < 8; k++) s[k] += x[i + k];
    for (; i < n; i++) s[i & 7] += x[i];
    double m = cpu_sum8(s) / (double)n;
    for (i = 0; i < n8; i += 8)
        for (int k = 0; k < 8; k++) { double d = x[i + k] - m; ss[k] += d * d; }
    for (; i < n; i++) { double d = x[i] - m; ss[i & 7] += d * d; }
    double v = cpu_sum8(ss) / (double)n;
    *mean = (float)m;
    *rstd = (float)(1.0 / sqrt(v + eps));
}

static void gn_groups(void *p, long long lo, long long hi) {
    struct gn_ctx *g = p;
    int cpg = g->C / g->G;
    for (long long ng = lo; ng < hi; ng++) {
        long long n = ng / g->G, grp = ng % g->G;
        size_t base = ((size_t)n * g->C + (size_t)grp * cpg) * g->HW, cnt = (size_t)cpg * g->HW;
        const float *x = g->inp + base;
        float m, rstd;
        cpu_group_stats(x, cnt, g->eps, &m, &rstd);
        float *y = g->out + base;
        for (int c = 0; c < cpg; c++) {
            int ch = (int)grp * cpg + c;
            float sc = rstd * (g->w ? g->w[ch] : 1.0f), sh = g->b ? g->b[ch] : 0.0f;
            cpu_vnorm(y + (size_t)c * g->HW, x + (size_t)c * g->HW, (size_t)g->HW, m, sc, sh, g->silu);
        }
    }
}

static void cpu_group_norm(struct backend *be, float *out, const float *inp, const float *w,
                           const float *b, int N, int C, int HW, int G, float eps, int silu) {
    BAIL(be);
    struct gn_ctx g = { out, inp, w, b, C, HW, G, eps, silu };
    cpu_parallel((long long)N * C * HW > 65536 ? be->threads : 1, (long long)N * G, gn_groups, &g);
}

struct ln_ctx { float *out; const float *inp, *w, *b; int C; float eps; };

static void ln_rows(void *p, long long lo, long long hi) {
    struct ln_ctx *g = p;
    int C = g->C;
    for (long long r = lo; r < hi; r++) {
        const float *x = g->inp + (size_t)r * C;
        float *y = g->out + (size_t)r * C;
        double s = 0, ss = 0;
        for (int i = 0; i < C; i++) s += x[i];
        double mean = s / C;
        for (int i = 0; i < C; i++) { double d = x[i] - mean; ss += d * d; }
        float rstd = (float)(1.0 / sqrt(ss / C + g->eps)), m = (float)mean;
        for (int i = 0; i < C; i++) y[i] = (x[i] - m) * rstd * g->w[i] + g->b[i];
    }
}

static void cpu_layer_norm(struct backend *be, float *out, const float *inp, const float *w,
                           const float *b, int R, int C, float eps) {
    BAIL(be);
    struct ln_ctx g = { out, inp, w, b, C, eps };
    cpu_parallel((long long)R * C > 65536 ? be->threads : 1, R, ln_rows, &g);
}

/* ---- attention ---- */

void cpu_softmax_rows(float *s, int rows, int L, int causal_from) {
    for (int i = 0; i < rows; i++) {
        float *r = s + (size_t)i * L;
        int n = causal_from >= 0 ? causal_from + i + 1 : L;   /* keys 0..n-1 visible */
        if (n > L) n = L;
        float mx = -INFINITY;
        for (int j = 0; j < n; j++) mx = r[j] > mx ? r[j] : mx;
        double sum = cpu_vexp_sub(r, (size_t)n, mx);
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < n; j++) r[j] *= inv;
        for (int j = n; j < L; j++) r[j] = 0.0f;
    }
}

/* Attention is many small products: (image, head, query tile) items, each run whole by
 * one thread (its own score tile, single-threaded GEMMs and softmax), so the softmax runs
 * on every core and not between two parallel GEMMs. */
struct att_ctx {
    const float *q, *k, *v;
    float *out, *s;
    int H, Lq, Lk, D, ldq, ldk, ldv, ldo, causal, tile, ntiles, nthreads;
    float scale;
    long long items;
};

static void att_item(const struct att_ctx *g, long long it, float *s, int threads) {
    int n = (int)(it / ((long long)g->H * g->ntiles)), h = (int)(it / g->ntiles % g->H), i0 = (int)(it % g->ntiles) * g->tile;
    int rows = g->Lq - i0 < g->tile ? g->Lq - i0 : g->tile;
    const float *qn = g->q + (size_t)n * g->Lq * g->ldq + (size_t)h * g->D;
    const float *kn = g->k + (size_t)n * g->Lk * g->ldk + (size_t)h * g->D;
    const float *vn = g->v + (size_t)n * g->Lk * g->ldv + (size_t)h * g->D;
    float *on = g->out + (size_t)n * g->Lq * g->ldo + (size_t)h * g->D;
    cpu_sgemm(threads, 0, 1, rows, g->Lk, g->D, g->scale, qn + (size_t)i0 * g->ldq, g->ldq, kn, g->ldk, 0.0f, s, g->Lk);
    cpu_softmax_rows(s, rows, g->Lk, g->causal ? i0 : -1);
    cpu_sgemm(threads, 0, 0, rows, g->D, g->Lk, 1.0f, s, g->Lk, vn, g->ldv, 0.0f, on + (size_t)i0 * g->ldo, g->ldo);
}

static void att_part(void *p, long long lo, long long hi) {
    const struct att_ctx *g = p;
    for (long long t = lo; t < hi; t++)
        for (long long it = t; it < g->items; it += g->nthreads)
            att_item(g, it, g->s + (size_t)t * g->tile * g->Lk, 1);
}

static void cpu_attention(struct backend *be, float *out, const float *q, const float *k,
                          const float *v, int N, int H, int Lq, int Lk, int D, int ldq, int ldk,
                          int ldv, int ldo, float scale, int causal) {
    BAIL(be);
    if (Lk <= 0 || Lq <= 0) { backend_set_error(be, SD_ERR_INVALID, "attention over an empty sequence"); return; }
    struct att_ctx g = { q, k, v, out, NULL, H, Lq, Lk, D, ldq, ldk, ldv, ldo, causal, 0, 0, 1, scale, 0 };
    size_t tf = ((struct cpu *)be->impl)->tile_floats;
    for (int pass = 0; pass < 2; pass++) {   /* one thread per item when there are enough items */
        g.nthreads = pass ? 1 : be->threads;
        g.tile = (int)(tf / (size_t)g.nthreads / (size_t)Lk);
        if (g.tile < 1) g.tile = 1;
        if (g.tile > Lq) g.tile = Lq;
        g.ntiles = (Lq + g.tile - 1) / g.tile;
        g.items = (long long)N * H * g.ntiles;
        if (g.items >= g.nthreads) break;
    }
    if (!(g.s = scratch(be, (size_t)g.nthreads * g.tile * Lk))) return;
    if (g.nthreads > 1) cpu_parallel(g.nthreads, g.nthreads, att_part, &g);
    else
        for (long long it = 0; it < g.items; it++) att_item(&g, it, g.s, be->threads);
}

/* ---- elementwise ---- */

struct act_ctx { float *out; const float *inp; enum act_kind kind; int C; };

static void act_range(void *p, long long lo, long long hi) {
    struct act_ctx *g = p;
    cpu_vact(g->out + lo, g->inp + lo, (size_t)(hi - lo), g->kind);
}

static void geglu_rows(void *p, long long lo, long long hi) {
    struct act_ctx *g = p;
    for (long long r = lo; r < hi; r++) {
        const float *a = g->inp + (size_t)r * 2 * g->C;
        cpu_vgeglu(g->out + (size_t)r * g->C, a, a + g->C, (size_t)g->C);
    }
}

static void cpu_act(struct backend *be, float *out, const float *inp, long long n, enum act_kind kind) {
    BAIL(be);
    struct act_ctx g = { out, inp, kind, 0 };
    cpu_parallel(n > 65536 ? be->threads : 1, n, act_range, &g);
}

static void cpu_geglu(struct backend *be, float *out, const float *inp, int R, int C) {
    BAIL(be);
    struct act_ctx g = { out, inp, ACT_GELU, C };
    cpu_parallel((long long)R * C > 65536 ? be->threads : 1, R, geglu_rows, &g);
}

static void cpu_upsample2x(struct backend *be, float *out, const float *inp, int N, int C, int H, int W) {
    BAIL(be);
    for (long long nc = 0; nc < (long long)N * C; nc++) {
        const float *x = inp + nc * H * W;
        float *y = out + nc * 4 * H * W;
        for (int i = 0; i < 2 * H; i++)
            for (int j = 0; j < 2 * W; j++) y[(size_t)i * 2 * W + j] = x[(size_t)(i / 2) * W + j / 2];
    }
}

static void cpu_timestep_embedding(struct backend *be, float *out, const float *t, int N, int dim,
                                   int flip, float shift, float max_period) {
    BAIL(be);
    int half = dim / 2;
    for (int n = 0; n < N; n++) {
        float *y = out + (size_t)n * dim;
        for (int i = 0; i < half; i++) {
            /* fp32 throughout, as diffusers computes it */
            float f = expf(-logf(max_period) * (float)i / ((float)half - shift));
            float a = t[n] * f;
            y[flip ? i : half + i] = cosf(a);
            y[flip ? half + i : i] = sinf(a);
        }
        if (dim % 2) y[dim - 1] = 0.0f;
    }
}

static void cpu_embedding(struct backend *be, float *out, const void *table, sd_dtype tdt, const int *ids,
                          int n, int D) {
    BAIL(be);
    size_t es = sd_dtype_size(tdt);
    for (int i = 0; i < n; i++) {
        const char *row = (const char *)table + (size_t)ids[i] * D * es;
        if (tdt == DT_F32) memcpy(out + (size_t)i * D, row, sizeof(float) * D);
        else sd_convert_to_f32(out + (size_t)i * D, row, tdt, (size_t)D);
    }
}

static void cpu_axpby(struct backend *be, float *out, float alpha, const float *a, float beta,
                      const float *b, long long n) {
    BAIL(be);
    if (b) for (long long i = 0; i < n; i++) out[i] = alpha * a[i] + beta * b[i];
    else for (long long i = 0; i < n; i++) out[i] = alpha * a[i];
}

static void cpu_add_channel(struct backend *be, float *out, const float *v, int N, int C, int HW) {
    BAIL(be);
    for (long long nc = 0; nc < (long long)N * C; nc++) {
        float a = v[nc];
        float *y = out + nc * HW;
        for (int i = 0; i < HW; i++) y[i] += a;
    }
}

static void cpu_concat_channels(struct backend *be, float *out, const float *a, int Ca,
                                const float *b, int Cb, int N, int HW) {
    BAIL(be);
    for (int n = 0; n < N; n++) {
        float *y = out + (size_t)n * (Ca + Cb) * HW;
        memcpy(y, a + (size_t)n * Ca * HW, sizeof(float) * Ca * HW);
        memcpy(y + (size_t)Ca * HW, b + (size_t)n * Cb * HW, sizeof(float) * Cb * HW);
    }
}

static void cpu_transpose(struct backend *be, float *out, const float *inp, int N, int R, int C) {
    BAIL(be);
    enum { T = 32 };
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * R * C;
        float *y = out + (size_t)n * R * C;
        for (int r0 = 0; r0 < R; r0 += T)
            for (int c0 = 0; c0 < C; c0 += T)
                for (int r = r0; r < r0 + T && r < R; r++)
                    for (int c = c0; c < c0 + T && c < C; c++) y[(size_t)c * R + r] = x[(size_t)r * C + c];
    }
}

static const struct backend_ops cpu_ops = {
    .alloc = cpu_alloc, .free = cpu_free, .upload = cpu_memcpy, .download = cpu_memcpy,
    .copy = cpu_memcpy, .zero = cpu_zero, .sync = cpu_sync, .trim = cpu_trim, .destroy = cpu_destroy,
    .gemm = cpu_gemm, .linear = cpu_linear, .conv2d = cpu_conv2d,
    .group_norm = cpu_group_norm, .layer_norm = cpu_layer_norm, .attention = cpu_attention,
    .act = cpu_act, .geglu = cpu_geglu, .upsample2x = cpu_upsample2x,
    .timestep_embedding = cpu_timestep_embedding, .embedding = cpu_embedding,
    .axpby = cpu_axpby, .add_channel = cpu_add_channel,
    .concat_channels = cpu_concat_channels, .transpose = cpu_transpose,
    .linear_backward = cpu_linear_backward, .conv2d_backward = cpu_conv2d_backward,
    .group_norm_backward = cpu_group_norm_backward, .layer_norm_backward = cpu_layer_norm_backward,
    .attention_backward = cpu_attention_backward, .act_backward = cpu_act_backward,
    .geglu_backward = cpu_geglu_backward, .upsample2x_backward = cpu_upsample2x_backward,
    .embedding_backward = cpu_embedding_backward, .channel_sum = cpu_channel_sum,
    .split_channels = cpu_split_channels, .dot = cpu_dot, .adamw = cpu_adamw,
    .mem_in_use = NULL, .mem_peak = NULL,
};

sd_status backend_cpu_create(struct backend **out, int threads) {
    *out = NULL;
    struct backend *be = sd_calloc(1, sizeof *be);
    struct cpu *c = sd_calloc(1, sizeof *c);
    if (!be || !c) { sd_free(be); sd_free(c); return SD_ERR_NOMEM; }
    if (threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n > 0 ? (int)n : 1;
    }
    be->name = "cpu";
    be->ops = &cpu_ops;
    be->impl = c;
    be->threads = threads;
    c->tile_floats = SCRATCH_TILE_FLOATS;
    if (!(c->ws = cpu_wstate_create(be))) { sd_free(c); sd_free(be); return SD_ERR_NOMEM; }
#ifdef SD_HAVE_BLAS
    /* OpenBLAS runs single-threaded; cpu_sgemm splits large GEMMs over our own threads.
     * (OpenBLAS's own pool spin-waits between calls and fights our im2col/norm threads:
     * measured 40% of training time in sched_yield.) */
    openblas_set_num_threads(1);
#endif
    *out = be;
    return SD_OK;
}
