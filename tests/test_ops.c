/* test_ops.c — every CPU backend op against a naive, obviously-correct double-precision
 * loop: the `naive` harness over the op case table (op_cases.c), which holds the shapes,
 * strides, options and bounds; the GEMM rows also run the pthreads fallback
 * (cpu_sgemm_blocked) beside the BLAS path.  Per case: the output starts as NaN (GEMM's C
 * random, or NaN under beta 0), layout padding must keep its bits, and ops that allow it
 * are run in place too.  Also: the thread pool and the backend registry. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "op_cases.h"
#include "backend/cpu_internal.h"
#include "core/rng.h"

static struct sd_rng R;

/* ---- the naive references: out from the case's host buffers b ---- */

static void naive_gemm(const struct op_case *c, float *const *b, float *C) {
    int M = c->gemm.M, N = c->gemm.N, K = c->gemm.K, ta = c->gemm.ta, tb = c->gemm.tb;
    int lda = (ta ? M : K) + c->gemm.pad_a, ldb = (tb ? K : N) + c->gemm.pad_b, ldc = N + c->gemm.pad_c;
    size_t sA = (size_t)(ta ? K : M) * lda + c->gemm.sa_pad, sB = (size_t)(tb ? N : K) * ldb + c->gemm.sb_pad;
    size_t sC = (size_t)M * ldc + c->gemm.sc_pad;
    for (int n = 0; n < c->gemm.batch; n++) {
        const float *A = b[0] + n * sA, *B = b[1] + n * sB;
        float *Cn = C + n * sC;
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int k = 0; k < K; k++)
                    s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
                double beta = c->gemm.beta;
                Cn[i * ldc + j] = (float)(c->gemm.alpha * s + (beta ? beta * Cn[i * ldc + j] : 0));
            }
    }
}

static void naive_linear(const struct op_case *c, float *const *b, float *out) {
    int R_ = c->linear.R, I = c->linear.I, O = c->linear.O;
    for (int r = 0; r < R_; r++)
        for (int j = 0; j < O; j++) {
            double s = b[2] ? b[2][j] : 0;
            for (int k = 0; k < I; k++) s += (double)b[0][r * I + k] * b[1][j * I + k];
            out[r * O + j] = (float)s;
        }
}

static void naive_conv(const struct op_case *c, float *const *b, float *out) {
    int N = c->conv.N, C = c->conv.C, H = c->conv.H, W = c->conv.W, K = c->conv.K, kh = c->conv.kh, kw = c->conv.kw;
    int s = c->conv.s, pt = c->conv.pt, pl = c->conv.pl;
    int Ho = (H + pt + c->conv.pb - kh) / s + 1, Wo = (W + pl + c->conv.pr - kw) / s + 1;
    const float *x = b[0], *w = b[1];
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double acc = b[2] ? b[2][k] : 0;
                    for (int ci = 0; ci < C; ci++)
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++) {
                                int iy = oy * s - pt + i, ix = ox * s - pl + j;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                acc += (double)x[((n * C + ci) * H + iy) * W + ix] * w[((k * C + ci) * kh + i) * kw + j];
                            }
                    out[((n * K + k) * Ho + oy) * Wo + ox] = (float)acc;
                }
}

/* normalise n values with stride 1 from x into y, channel of element i = ch(i) */
static void naive_norm(const float *x, float *y, int n, double eps, const float *w, const float *b, int c0, int per_c,
                       int silu) {
    double m = 0, v = 0;
    for (int i = 0; i < n; i++) m += x[i];
    m /= n;
    for (int i = 0; i < n; i++) v += (x[i] - m) * (x[i] - m);
    v /= n;
    for (int i = 0; i < n; i++) {
        int ch = c0 + i / per_c;
        double o = (x[i] - m) / sqrt(v + eps) * (w ? w[ch] : 1) + (b ? b[ch] : 0);
        if (silu) o = o / (1 + exp(-o));
        y[i] = (float)o;
    }
}

static void naive_gn(const struct op_case *c, float *const *b, float *out) {
    int C = c->gn.C, HW = c->gn.HW, G = c->gn.G, cpg = C / G;
    for (int n = 0; n < c->gn.N; n++)
        for (int g = 0; g < G; g++) {
            size_t o = ((size_t)n * C + (size_t)g * cpg) * HW;
            naive_norm(b[0] + o, out + o, cpg * HW, c->gn.eps, b[1], b[2], g * cpg, HW, c->gn.silu);
        }
}

static void naive_ln(const struct op_case *c, float *const *b, float *out) {
    for (int r = 0; r < c->ln.R; r++)
        naive_norm(b[0] + (size_t)r * c->ln.C, out + (size_t)r * c->ln.C, c->ln.C, c->ln.eps, b[1], b[2], 0, 1, 0);
}

static void naive_attention(const struct op_case *c, float *const *b, float *out) {
    int N = c->att.N, H = c->att.H, Lq = c->att.Lq, Lk = c->att.Lk, D = c->att.D, HD = H * D;
    int ld = (c->att.fused ? 3 : 1) * HD + c->att.pad, ldo = HD + c->att.ldo_pad;
    const float *q = b[0], *k = c->att.fused ? b[0] + HD : b[1], *v = c->att.fused ? b[0] + 2 * HD : b[2];
    double scale = 1.0f / sqrtf((float)D), *s = malloc(sizeof(double) * Lk);
    for (int n = 0; n < N; n++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Lq; i++) {
                int nk = c->att.causal && i + 1 < Lk ? i + 1 : Lk;
                double mx = -1e300, sum = 0;
                for (int j = 0; j < nk; j++) {
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += (double)q[((size_t)n * Lq + i) * ld + h * D + e] * k[((size_t)n * Lk + j) * ld + h * D + e];
                    s[j] = d * scale;
                    if (s[j] > mx) mx = s[j];
                }
                for (int j = 0; j < nk; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
                for (int e = 0; e < D; e++) {
                    double acc = 0;
                    for (int j = 0; j < nk; j++) acc += s[j] / sum * v[((size_t)n * Lk + j) * ld + h * D + e];
                    out[((size_t)n * Lq + i) * ldo + h * D + e] = (float)acc;
                }
            }
    free(s);
}

static double gelu(double g) { return 0.5 * g * (1 + erf(g / sqrt(2))); }

static void naive_act(const struct op_case *c, float *const *b, float *out) {
    for (long long i = 0; i < c->act.n; i++) {
        double v = b[0][i];
        out[i] = (float)(c->act.kind == ACT_SILU ? v / (1 + exp(-v)) : c->act.kind == ACT_GELU ? gelu(v)
                                                                      : v / (1 + exp(-1.702 * v)));
    }
}

static void naive_geglu(const struct op_case *c, float *const *b, float *out) {
    int C = c->geglu.C;
    for (int r = 0; r < c->geglu.R; r++)
        for (int i = 0; i < C; i++)
            out[(size_t)r * C + i] = (float)(b[0][(size_t)r * 2 * C + i] * gelu(b[0][(size_t)r * 2 * C + C + i]));
}

static void naive_upsample(const struct op_case *c, float *const *b, float *out) {
    int H = c->up.H, W = c->up.W;
    for (int nc = 0; nc < c->up.N * c->up.C; nc++)
        for (int i = 0; i < 2 * H; i++)
            for (int j = 0; j < 2 * W; j++)
                out[((size_t)nc * 2 * H + i) * 2 * W + j] = b[0][((size_t)nc * H + i / 2) * W + j / 2];
}

static void naive_timestep(const struct op_case *c, float *const *b, float *out) {
    int dim = c->ts.dim, half = dim / 2;
    for (int n = 0; n < c->ts.N; n++) {
        for (int i = 0; i < dim; i++) out[(size_t)n * dim + i] = 0;   /* an odd width ends in a zero */
        for (int i = 0; i < half; i++) {
            double f = exp(-log((double)c->ts.max_period) * i / (half - c->ts.shift)), a = b[0][n] * f;
            out[(size_t)n * dim + i] = (float)(c->ts.flip ? cos(a) : sin(a));
            out[(size_t)n * dim + half + i] = (float)(c->ts.flip ? sin(a) : cos(a));
        }
    }
}

static void naive_embedding(const struct op_case *c, float *const *b, float *out) {
    int ids[OP_MAX_IDS], D = c->emb.D;
    op_emb_ids(c, ids);
    for (int i = 0; i < c->emb.n; i++) memcpy(out + (size_t)i * D, b[0] + (size_t)ids[i] * D, sizeof(float) * D);
}

static void naive_axpby(const struct op_case *c, float *const *b, float *out) {
    for (long long i = 0; i < c->axpby.n; i++)
        out[i] = (float)((double)c->axpby.alpha * b[0][i] + (b[1] ? (double)c->axpby.beta * b[1][i] : 0));
}

static void naive_add_channel(const struct op_case *c, float *const *b, float *out) {
    for (size_t i = 0; i < (size_t)c->addc.N * c->addc.C * c->addc.HW; i++) out[i] = b[0][i] + b[1][i / c->addc.HW];
}

static void naive_concat(const struct op_case *c, float *const *b, float *out) {
    int Ca = c->cat.Ca, Cb = c->cat.Cb, HW = c->cat.HW;
    for (int n = 0; n < c->cat.N; n++)
        for (int ch = 0; ch < Ca + Cb; ch++)
            for (int i = 0; i < HW; i++)
                out[((size_t)n * (Ca + Cb) + ch) * HW + i] =
                    ch < Ca ? b[0][((size_t)n * Ca + ch) * HW + i] : b[1][((size_t)n * Cb + ch - Ca) * HW + i];
}

static void naive_transpose(const struct op_case *c, float *const *b, float *out) {
    size_t R_ = c->tr.R, C = c->tr.C;
    for (size_t n = 0; n < (size_t)c->tr.N; n++)
        for (size_t r = 0; r < R_; r++)
            for (size_t k = 0; k < C; k++) out[n * R_ * C + k * R_ + r] = b[0][n * R_ * C + r * C + k];
}

static void (*const naive[OP_COUNT])(const struct op_case *, float *const *, float *) = {
    [OP_GEMM] = naive_gemm, [OP_LINEAR] = naive_linear, [OP_CONV2D] = naive_conv, [OP_GROUP_NORM] = naive_gn,
    [OP_LAYER_NORM] = naive_ln, [OP_ATTENTION] = naive_attention, [OP_ACT] = naive_act, [OP_GEGLU] = naive_geglu,
    [OP_UPSAMPLE2X] = naive_upsample, [OP_TIMESTEP_EMBEDDING] = naive_timestep, [OP_EMBEDDING] = naive_embedding,
    [OP_AXPBY] = naive_axpby, [OP_ADD_CHANNEL] = naive_add_channel, [OP_CONCAT] = naive_concat,
    [OP_TRANSPOSE] = naive_transpose,
};

/* ---- the harness ---- */

/* err of got against ref over the output's data elements, in the kind's naive blocks;
 * -1 when the padding moved */
static double out_err(const struct op_case *c, const struct op_host *h, const float *got, const float *ref,
                      const float *before) {
    size_t n = h->d[h->out].n;
    if (!op_pads_kept(c, h->out, got, before, n)) return -1;
    float *a = op_dup(NULL, n), *r = op_dup(NULL, n);
    size_t m = op_compact(c, h->out, got, n, a);
    op_compact(c, h->out, ref, n, r);
    size_t block = op_kinds[c->op].block ? op_kinds[c->op].block(c, 1) : 0;
    double e = op_block_err(rel_err, a, r, m, block);
    free(a); free(r);
    return e;
}

static void report(const struct op_case *c, const char *how, double e) {
    char name[256];
    op_case_name(c, name, sizeof name);
    ok(e >= 0 && e < c->tol.naive, "%s%s: %.2g < %.0e%s", name, how, e, c->tol.naive, e < 0 ? " (padding written)" : "");
}

/* the pthreads GEMM fallback on the same case (one matrix) */
static double gemm_fallback(const struct op_case *c, const struct op_host *h, const float *ref, const float *before) {
    int M = c->gemm.M, N = c->gemm.N, K = c->gemm.K, ta = c->gemm.ta, tb = c->gemm.tb;
    float *C = op_dup(before, h->d[2].n);
    cpu_sgemm_blocked(2, ta, tb, M, N, K, c->gemm.alpha, h->b[0], (ta ? M : K) + c->gemm.pad_a, h->b[1],
                      (tb ? K : N) + c->gemm.pad_b, c->gemm.beta, C, N + c->gemm.pad_c);
    double e = out_err(c, h, C, ref, before);
    free(C);
    return e;
}

static void run_case(struct backend *be, const struct op_case *c) {
    struct op_host h;
    op_host_alloc(c, &R, &h);
    size_t n = h.d[h.out].n;
    float *before = op_dup(h.b[h.out], n), *ref = op_dup(h.b[h.out], n);
    naive[c->op](c, h.b, ref);
    backend_cpu_set_tile(be, c->tile);
    op_kinds[c->op].forward(be, c, h.b);
    report(c, "", be->err ? -1 : out_err(c, &h, h.b[h.out], ref, before));
    if (c->op == OP_GEMM && c->gemm.batch == 1) report(c, " [pthreads fallback]", gemm_fallback(c, &h, ref, before));
    if (op_kinds[c->op].inplace) {   /* out == buffer 0 */
        float *io = op_dup(h.b[0], n), *b[OP_MAX_BUFS];
        memcpy(b, h.b, sizeof b);
        b[0] = b[h.out] = io;
        op_kinds[c->op].forward(be, c, b);
        report(c, " in place", be->err ? -1 : out_err(c, &h, io, ref, ref));
        free(io);
    }
    backend_cpu_set_tile(be, 0);
    free(before); free(ref);
    op_host_free(&h);
}

/* cpu_parallel's parked pool: every index covered exactly once, from two threads at
 * once (one of them falls back to its own threads) and with a nested call inside. */
struct par_chk { int *hits; int nested; };
static void par_mark(void *p, long long lo, long long hi) {
    struct par_chk *c = p;
    for (long long i = lo; i < hi; i++) __atomic_add_fetch(&c->hits[i], 1, __ATOMIC_RELAXED);
    if (c->nested) {
        struct par_chk inner = { c->hits + 1000, 0 };
        cpu_parallel(3, 500, par_mark, &inner);
    }
}
static void *par_thread(void *p) {
    int *bad = p;
    for (int rep = 0; rep < 200; rep++) {
        int hits[1000] = { 0 };
        struct par_chk c = { hits, 0 };
        cpu_parallel(4, 1000, par_mark, &c);
        for (int i = 0; i < 1000; i++) *bad += hits[i] != 1;
    }
    return NULL;
}
static void test_pool(void) {
    pthread_t t[2];
    int bad[2] = { 0, 0 };
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, par_thread, &bad[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    ok(bad[0] == 0 && bad[1] == 0, "cpu_parallel from two threads at once: every index once, 400 runs (%d, %d bad)",
       bad[0], bad[1]);
    int hits[1500] = { 0 };
    struct par_chk c = { hits, 1 };
    cpu_parallel(2, 1000, par_mark, &c);
    int once = 1;
    for (int i = 0; i < 1000; i++) once &= hits[i] == 1;
    for (int i = 1000; i < 1500; i++) once &= hits[i] == 2;   /* each of the 2 outer shares ran the inner once */
    ok(once, "a nested cpu_parallel runs (on its own threads) without deadlock");
}

int main(void) {
    sd_rng_init(&R, 42);
    test_pool();
    struct backend *be;
    if (backend_create(&be, "cpu", 2)) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    for (int i = 0; i < op_ncases; i++)
        if (op_cases[i].tol.naive > 0) run_case(be, &op_cases[i]);
    ok(backend_status(be) == SD_OK, "no sticky error");
    struct backend *b2;
    ok(backend_create(&b2, "tpu", 0) == SD_ERR_INVALID, "unknown backend is an error: %s", sd_last_error());
    backend_destroy(be);
    return done_testing();
}
