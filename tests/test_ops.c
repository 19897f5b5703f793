/* test_ops.c — every CPU backend op against a naive, obviously-correct reference on
 * random inputs: GEMM (both the BLAS path and the pthreads fallback, every transpose,
 * strides, batches), linear, conv2d (kernel sizes, strides, asymmetric padding, im2col
 * tile edges), group/layer norm, attention (causal, strided heads, tiled), activations,
 * GEGLU, upsample, timestep embedding, embedding, elementwise, concat, transpose. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "backend/backend.h"
#include "backend/cpu_internal.h"
#include "core/rng.h"

static struct sd_rng R;
static float *rnd(size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    sd_rng_normal(&R, p, n);
    return p;
}
static float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static void naive_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                       const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++)
                s += (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
            C[i * ldc + j] = (float)(alpha * s + (beta ? beta * C[i * ldc + j] : 0));
        }
}

static void test_gemm(struct backend *be) {
    int shapes[][3] = { { 1, 1, 1 }, { 7, 13, 5 }, { 64, 33, 300 }, { 130, 70, 257 } };
    for (int s = 0; s < 4; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int impl = 0; impl < 2; impl++) {
                    int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                    float *A = rnd((size_t)(ta ? K : M) * lda), *B = rnd((size_t)(tb ? N : K) * ldb);
                    float *C = rnd((size_t)M * ldc), *C2 = malloc(sizeof(float) * M * ldc);
                    memcpy(C2, C, sizeof(float) * M * ldc);
                    if (impl) cpu_sgemm_blocked(2, ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.5f, C, ldc);
                    else be->ops->gemm(be, ta, tb, M, N, K, 0.7f, A, lda, 0, B, ldb, 0, 0.5f, C, ldc, 0, 1);
                    naive_gemm(ta, tb, M, N, K, 0.7f, A, lda, B, ldb, 0.5f, C2, ldc);
                    double e = 0;
                    for (int i = 0; i < M; i++) {
                        double r = rel_err(C + i * ldc, C2 + i * ldc, N);
                        if (r > e) e = r;
                    }
                    ok(e < 1e-5, "gemm %s %dx%dx%d ta=%d tb=%d beta=0.5: %.2g", impl ? "fallback" : "backend", M, N, K, ta, tb, e);
                    free(A); free(B); free(C); free(C2);
                }
    /* batched with strides; beta 0 ignores NaN garbage in C */
    int M = 5, N = 6, K = 7, batch = 3;
    float *A = rnd(batch * 40), *B = rnd(batch * 50), *C = malloc(sizeof(float) * batch * 31), *C2 = zeros(batch * 31);
    for (int i = 0; i < batch * 31; i++) C[i] = NAN;
    be->ops->gemm(be, 0, 0, M, N, K, 1.0f, A, K, 40, B, N, 50, 0.0f, C, N, 31, batch);
    for (int b = 0; b < batch; b++) naive_gemm(0, 0, M, N, K, 1.0f, A + b * 40, K, B + b * 50, N, 0.0f, C2 + b * 31, N);
    double e = 0;
    for (int b = 0; b < batch; b++) { double r = rel_err(C + b * 31, C2 + b * 31, M * N); if (!(r <= e)) e = r; }
    ok(e < 1e-5, "batched strided gemm, beta 0 over NaN: %.2g", e);
    free(A); free(B); free(C); free(C2);
}

static void naive_conv(float *out, const float *x, const float *w, const float *b, int N, int C, int H, int W,
                       int K, int kh, int kw, int s, int pt, int pl, int pb, int pr) {
    int Ho = (H + pt + pb - kh) / s + 1, Wo = (W + pl + pr - kw) / s + 1;
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            for (int oy = 0; oy < Ho; oy++)
                for (int ox = 0; ox < Wo; ox++) {
                    double acc = b ? b[k] : 0;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++) {
                                int iy = oy * s - pt + i, ix = ox * s - pl + j;
                                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                                acc += (double)x[((n * C + c) * H + iy) * W + ix] * w[((k * C + c) * kh + i) * kw + j];
                            }
                    out[((n * K + k) * Ho + oy) * Wo + ox] = (float)acc;
                }
}

static void test_conv(struct backend *be) {
    struct { int N, C, H, W, K, kh, kw, s, pt, pl, pb, pr, bias; size_t tile; } cs[] = {
        { 2, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 0 },   /* same 3×3 */
        { 1, 4, 8, 8, 6, 1, 1, 1, 0, 0, 0, 0, 1, 0 },   /* 1×1 direct GEMM */
        { 2, 3, 8, 10, 4, 3, 3, 2, 1, 1, 1, 1, 1, 0 },  /* UNet downsample */
        { 1, 3, 8, 8, 3, 3, 3, 2, 0, 0, 1, 1, 1, 0 },   /* VAE downsample: pad right/bottom */
        { 1, 2, 11, 6, 3, 5, 3, 1, 2, 1, 2, 1, 0, 0 },  /* rectangular kernel, no bias */
        { 2, 5, 9, 9, 4, 3, 3, 1, 1, 1, 1, 1, 1, 100 }, /* tiny tiles: tile edges */
    };
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        int N = cs[t].N, C = cs[t].C, H = cs[t].H, W = cs[t].W, K = cs[t].K, kh = cs[t].kh, kw = cs[t].kw, s = cs[t].s;
        int Ho = (H + cs[t].pt + cs[t].pb - kh) / s + 1, Wo = (W + cs[t].pl + cs[t].pr - kw) / s + 1;
        float *x = rnd((size_t)N * C * H * W), *w = rnd((size_t)K * C * kh * kw), *b = cs[t].bias ? rnd(K) : NULL;
        float *y = zeros((size_t)N * K * Ho * Wo), *y2 = zeros((size_t)N * K * Ho * Wo);
        backend_cpu_set_tile(be, cs[t].tile);
        be->ops->conv2d(be, y, x, w, b, N, C, H, W, K, kh, kw, s, cs[t].pt, cs[t].pl, cs[t].pb, cs[t].pr);
        backend_cpu_set_tile(be, 0);
        naive_conv(y2, x, w, b, N, C, H, W, K, kh, kw, s, cs[t].pt, cs[t].pl, cs[t].pb, cs[t].pr);
        double e = rel_err(y, y2, (size_t)N * K * Ho * Wo);
        ok(e < 1e-5, "conv2d case %zu (%dx%d k%dx%d s%d pad %d,%d,%d,%d tile %zu): %.2g", t, H, W, kh, kw, s,
           cs[t].pt, cs[t].pl, cs[t].pb, cs[t].pr, cs[t].tile, e);
        free(x); free(w); free(b); free(y); free(y2);
    }
}

static void test_norms(struct backend *be) {
    int N = 2, C = 8, HW = 10, G = 4;
    float *x = rnd(N * C * HW), *w = rnd(C), *b = rnd(C), *y = zeros(N * C * HW), *y2 = zeros(N * C * HW);
    for (int silu = 0; silu < 2; silu++) {
        be->ops->group_norm(be, y, x, w, b, N, C, HW, G, 1e-5f, silu);
        for (int n = 0; n < N; n++)
            for (int g = 0; g < G; g++) {
                double m = 0, v = 0;
                int cnt = C / G * HW;
                const float *xs = x + (n * C + g * C / G) * HW;
                for (int i = 0; i < cnt; i++) m += xs[i];
                m /= cnt;
                for (int i = 0; i < cnt; i++) v += (xs[i] - m) * (xs[i] - m);
                v /= cnt;
                for (int i = 0; i < cnt; i++) {
                    int c = g * C / G + i / HW;
                    double o = (xs[i] - m) / sqrt(v + 1e-5) * w[c] + b[c];
                    if (silu) o = o / (1 + exp(-o));
                    y2[(n * C + g * C / G) * HW + i] = (float)o;
                }
            }
        ok(rel_err(y, y2, N * C * HW) < 1e-5, "group_norm silu=%d: %.2g", silu, rel_err(y, y2, N * C * HW));
    }
    memcpy(y, x, sizeof(float) * N * C * HW);
    be->ops->group_norm(be, y, y, w, b, N, C, HW, G, 1e-5f, 1);
    ok(rel_err(y, y2, N * C * HW) < 1e-5, "group_norm in place");
    int Rr = 6, D = 20;
    be->ops->layer_norm(be, y, x, w, b, Rr, D > C ? C : D, 1e-5f);
    for (int r = 0; r < Rr; r++) {
        double m = 0, v = 0;
        for (int i = 0; i < C; i++) m += x[r * C + i];
        m /= C;
        for (int i = 0; i < C; i++) v += (x[r * C + i] - m) * (x[r * C + i] - m);
        v /= C;
        for (int i = 0; i < C; i++) y2[r * C + i] = (float)((x[r * C + i] - m) / sqrt(v + 1e-5) * w[i] + b[i]);
    }
    ok(rel_err(y, y2, Rr * C) < 1e-5, "layer_norm: %.2g", rel_err(y, y2, Rr * C));
    free(x); free(w); free(b); free(y); free(y2);
}

static void test_attention(struct backend *be) {
    for (int t = 0; t < 4; t++) {
        int N = 2, H = 3, Lq = 7 + t, Lk = t & 1 ? 5 : Lq, D = 4, causal = t == 2, ld = H * D + (t == 3 ? 5 : 0);
        if (causal) Lk = Lq;
        float *q = rnd((size_t)N * Lq * ld), *k = rnd((size_t)N * Lk * ld), *v = rnd((size_t)N * Lk * ld);
        float *o = zeros((size_t)N * Lq * ld), *o2 = zeros((size_t)N * Lq * ld);
        float scale = 1.0f / sqrtf((float)D);
        backend_cpu_set_tile(be, t == 3 ? (size_t)Lk * 2 : 0);    /* 2-row query tiles */
        be->ops->attention(be, o, q, k, v, N, H, Lq, Lk, D, ld, ld, ld, ld, scale, causal);
        backend_cpu_set_tile(be, 0);
        for (int n = 0; n < N; n++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < Lq; i++) {
                    double s[64], mx = -1e30, sum = 0;
                    int nk = causal ? i + 1 : Lk;
                    for (int j = 0; j < nk; j++) {
                        double d = 0;
                        for (int c = 0; c < D; c++) d += (double)q[(n * Lq + i) * ld + h * D + c] * k[(n * Lk + j) * ld + h * D + c];
                        s[j] = d * scale;
                        if (s[j] > mx) mx = s[j];
                    }
                    for (int j = 0; j < nk; j++) { s[j] = exp(s[j] - mx); sum += s[j]; }
                    for (int c = 0; c < D; c++) {
                        double acc = 0;
                        for (int j = 0; j < nk; j++) acc += s[j] / sum * v[(n * Lk + j) * ld + h * D + c];
                        o2[(n * Lq + i) * ld + h * D + c] = (float)acc;
                    }
                }
        ok(rel_err(o, o2, (size_t)N * Lq * ld) < 1e-5, "attention case %d (Lq %d Lk %d causal %d ld %d): %.2g", t, Lq, Lk,
           causal, ld, rel_err(o, o2, (size_t)N * Lq * ld));
        free(q); free(k); free(v); free(o); free(o2);
    }
}

static void test_elementwise(struct backend *be) {
    int n = 1000;
    float *x = rnd(n), *y = zeros(n), *y2 = zeros(n);
    const char *names[] = { "silu", "gelu", "quick_gelu" };
    for (int k = 0; k < 3; k++) {
        be->ops->act(be, y, x, n, (enum act_kind)k);
        for (int i = 0; i < n; i++) {
            double v = x[i];
            y2[i] = (float)(k == 0 ? v / (1 + exp(-v)) : k == 1 ? 0.5 * v * (1 + erf(v / sqrt(2))) : v / (1 + exp(-1.702 * v)));
        }
        ok(rel_err(y, y2, n) < 1e-6, "%s: %.2g", names[k], rel_err(y, y2, n));
    }
    /* geglu: [a | g] -> a * gelu(g) */
    be->ops->geglu(be, y, x, 10, 50);
    for (int r = 0; r < 10; r++)
        for (int i = 0; i < 50; i++) {
            double a = x[r * 100 + i], g = x[r * 100 + 50 + i];
            y2[r * 50 + i] = (float)(a * 0.5 * g * (1 + erf(g / sqrt(2))));
        }
    ok(rel_err(y, y2, 500) < 1e-6, "geglu");
    /* upsample */
    be->ops->upsample2x(be, y, x, 2, 3, 4, 5);
    int good = 1;
    for (int nc = 0; nc < 6; nc++)
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 10; j++) good &= y[nc * 80 + i * 10 + j] == x[nc * 20 + (i / 2) * 5 + j / 2];
    ok(good, "upsample2x nearest");
    /* timestep embedding, cos first */
    float t[2] = { 999, 3.5f };
    be->ops->timestep_embedding(be, y, t, 2, 8, 1, 0, 10000);
    good = 1;
    for (int n2 = 0; n2 < 2; n2++)
        for (int i = 0; i < 4; i++) {
            double f = exp(-log(10000.0) * i / 4.0);
            good &= fabs(y[n2 * 8 + i] - cos(t[n2] * f)) < 1e-3 && fabs(y[n2 * 8 + 4 + i] - sin(t[n2] * f)) < 1e-3;
        }
    ok(good, "timestep_embedding cos-first");
    be->ops->timestep_embedding(be, y, t, 1, 8, 0, 1, 10000);
    ok(fabs(y[0] - sin(999.0)) < 1e-3 && fabs(y[4] - cos(999.0)) < 1e-3, "timestep_embedding sin-first, shift 1");
    /* embedding */
    int ids[3] = { 4, 0, 4 };
    be->ops->embedding(be, y, x, ids, 3, 7);
    ok(!memcmp(y, x + 28, 28) && !memcmp(y + 7, x, 28) && !memcmp(y + 14, x + 28, 28), "embedding gathers rows");
    /* axpby, add_channel, concat, transpose */
    be->ops->axpby(be, y, 2.0f, x, -1.0f, x + 500, 500);
    good = 1;
    for (int i = 0; i < 500; i++) good &= fabsf(y[i] - (2 * x[i] - x[500 + i])) < 1e-6f;
    ok(good, "axpby");
    memcpy(y, x, sizeof(float) * 60);
    be->ops->add_channel(be, y, x + 100, 2, 3, 10);
    good = 1;
    for (int i = 0; i < 60; i++) good &= y[i] == x[i] + x[100 + i / 10];
    ok(good, "add_channel broadcasts over HW");
    be->ops->concat_channels(be, y, x, 2, x + 200, 3, 2, 4);
    good = 1;
    for (int n2 = 0; n2 < 2; n2++)
        for (int c = 0; c < 5; c++)
            for (int i = 0; i < 4; i++)
                good &= y[(n2 * 5 + c) * 4 + i] == (c < 2 ? x[(n2 * 2 + c) * 4 + i] : x[200 + (n2 * 3 + c - 2) * 4 + i]);
    ok(good, "concat_channels [a; b]");
    free(x); free(y); free(y2);
    float *a = rnd(2 * 37 * 45), *bt = zeros(2 * 37 * 45);
    be->ops->transpose(be, bt, a, 2, 37, 45);
    good = 1;
    for (int n2 = 0; n2 < 2; n2++)
        for (int r = 0; r < 37; r++)
            for (int c = 0; c < 45; c++) good &= bt[n2 * 1665 + c * 37 + r] == a[n2 * 1665 + r * 45 + c];
    ok(good, "transpose [N,R,C] -> [N,C,R]");
    free(a); free(bt);
    /* linear = x Wᵀ + b */
    float *xi = rnd(4 * 6), *w = rnd(5 * 6), *bb = rnd(5), *o = zeros(20), *o2 = zeros(20);
    be->ops->linear(be, o, xi, w, bb, 4, 6, 5);
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 5; j++) {
            double s = bb[j];
            for (int k = 0; k < 6; k++) s += (double)xi[r * 6 + k] * w[j * 6 + k];
            o2[r * 5 + j] = (float)s;
        }
    ok(rel_err(o, o2, 20) < 1e-6, "linear");
    free(xi); free(w); free(bb); free(o); free(o2);
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
    test_gemm(be);
    test_conv(be);
    test_norms(be);
    test_attention(be);
    test_elementwise(be);
    ok(backend_status(be) == SD_OK, "no sticky error");
    struct backend *b2;
    ok(backend_create(&b2, "tpu", 0) == SD_ERR_INVALID, "unknown backend is an error: %s", sd_last_error());
    backend_destroy(be);
    return done_testing();
}
