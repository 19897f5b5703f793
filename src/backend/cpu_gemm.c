/* cpu_gemm.c — the CPU GEMM: OpenBLAS cblas_sgemm when built with it (fast, threaded by
 * OpenBLAS itself), otherwise a cache-blocked fallback parallelised over row blocks with
 * pthreads.  The fallback packs op(B) panels so the inner loop is a contiguous axpy the
 * compiler vectorises; it is correct for every transpose and leading dimension. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "cpu_internal.h"

#ifdef SD_HAVE_BLAS
#include <cblas.h>
#endif

struct par_job {
    void (*fn)(void *, long long, long long);
    void *ctx;
    long long lo, hi;
};

static void *par_main(void *p) {
    struct par_job *j = p;
    j->fn(j->ctx, j->lo, j->hi);
    return NULL;
}

void cpu_parallel(int nthreads, long long n, void (*fn)(void *, long long, long long), void *ctx) {
    if (nthreads > 64) nthreads = 64;
    if (nthreads <= 1 || n < 2) { fn(ctx, 0, n); return; }
    if (nthreads > n) nthreads = (int)n;
    pthread_t tid[64];
    struct par_job jobs[64];
    int started[64] = { 0 };
    for (int t = 0; t < nthreads; t++)
        jobs[t] = (struct par_job){ fn, ctx, n * t / nthreads, n * (t + 1) / nthreads };
    for (int t = 1; t < nthreads; t++)
        started[t] = pthread_create(&tid[t], NULL, par_main, &jobs[t]) == 0;
    fn(ctx, jobs[0].lo, jobs[0].hi);
    for (int t = 1; t < nthreads; t++) {
        if (started[t]) pthread_join(tid[t], NULL);
        else fn(ctx, jobs[t].lo, jobs[t].hi);
    }
}

#define MB 64
#define KB 256

struct gemm_ctx {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
};

static inline float elem(const float *X, int trans, int ld, int r, int c) {
    return trans ? X[(size_t)c * ld + r] : X[(size_t)r * ld + c];
}

static void gemm_rows(void *p, long long lo, long long hi) {
    struct gemm_ctx *g = p;
    int N = g->N;
    float *bpanel = malloc(sizeof(float) * (size_t)KB * N);   /* op(B)[k0:k1, :] */
    float *arow = malloc(sizeof(float) * KB);
    if (!bpanel || !arow) abort();  /* scratch of a few MB: treat as fatal like a stack overflow */
    for (long long i = lo; i < hi; i++) {
        float *c = g->C + (size_t)i * g->ldc;
        if (g->beta == 0) memset(c, 0, sizeof(float) * N);
        else if (g->beta != 1) for (int j = 0; j < N; j++) c[j] *= g->beta;
    }
    for (int k0 = 0; k0 < g->K; k0 += KB) {
        int k1 = k0 + KB < g->K ? k0 + KB : g->K;
        for (int k = k0; k < k1; k++) {
            float *dst = bpanel + (size_t)(k - k0) * N;
            if (!g->tb) memcpy(dst, g->B + (size_t)k * g->ldb, sizeof(float) * N);
            else for (int j = 0; j < N; j++) dst[j] = g->B[(size_t)j * g->ldb + k];
        }
        for (long long i0 = lo; i0 < hi; i0 += MB) {
            long long i1 = i0 + MB < hi ? i0 + MB : hi;
            for (long long i = i0; i < i1; i++) {
                float *c = g->C + (size_t)i * g->ldc;
                for (int k = k0; k < k1; k++) arow[k - k0] = g->alpha * elem(g->A, g->ta, g->lda, (int)i, k);
                for (int k = k0; k < k1; k++) {
                    float a = arow[k - k0];
                    if (a == 0) continue;
                    const float *b = bpanel + (size_t)(k - k0) * N;
                    for (int j = 0; j < N; j++) c[j] += a * b[j];
                }
            }
        }
    }
    free(bpanel);
    free(arow);
}

void cpu_sgemm_blocked(int nthreads, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                       int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    struct gemm_ctx g = { ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C };
    long long work = (long long)M * N * (K > 0 ? K : 1);
    cpu_parallel(work > (1 << 18) ? nthreads : 1, M, gemm_rows, &g);
}

#ifdef SD_HAVE_BLAS
struct blas_ctx {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int split_n;
};

/* Panels [lo, hi) of 16 columns (split_n) or rows; lo < 0: the whole product. */
static void blas_part(void *p, long long lo, long long hi) {
    struct blas_ctx *g = p;
    int m0 = 0, m1 = g->M, n0 = 0, n1 = g->N;
    if (lo >= 0) {
        int a = (int)lo * 16, b = (int)hi * 16;
        if (g->split_n) { n0 = a; n1 = b < g->N ? b : g->N; }
        else { m0 = a; m1 = b < g->M ? b : g->M; }
    }
    if (m1 <= m0 || n1 <= n0) return;
    const float *A = g->ta ? g->A + m0 : g->A + (size_t)m0 * g->lda;
    const float *B = g->tb ? g->B + (size_t)n0 * g->ldb : g->B + n0;
    cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans,
                m1 - m0, n1 - n0, g->K, g->alpha, A, g->lda, B, g->ldb, g->beta, g->C + (size_t)m0 * g->ldc + n0, g->ldc);
}
#endif

void cpu_sgemm(int nthreads, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef SD_HAVE_BLAS
    if (K <= 0) {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] *= beta;
        return;
    }
    struct blas_ctx g = { ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C, 0 };
    long long work = (long long)M * N * K;
    if (nthreads > 1 && work > (1 << 21)) {
        /* split the larger of M and N into column/row panels, one single-threaded
         * cblas_sgemm each */
        g.split_n = N >= M;
        cpu_parallel(nthreads, g.split_n ? (N + 15) / 16 : (M + 15) / 16, blas_part, &g);
    } else blas_part(&g, -1, -1);
#else
    cpu_sgemm_blocked(nthreads, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#endif
}
