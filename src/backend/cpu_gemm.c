/* cpu_gemm.c — the CPU GEMM: OpenBLAS cblas_sgemm when built with it, run single-threaded
 * (cpu.c sets openblas_set_num_threads(1)) on panels that cpu_sgemm splits over the
 * backend's own threads, otherwise a cache-blocked fallback parallelised over row blocks
 * the same way.  The fallback packs op(B) panels so the inner loop is a contiguous axpy the
 * compiler vectorises; it is correct for every transpose and leading dimension. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/core.h"
#include "cpu_internal.h"

#ifdef SD_HAVE_BLAS
#include <cblas.h>
char *openblas_get_corename(void);
char *openblas_get_config(void);
#endif
#ifdef SD_HAVE_DNNL
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
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

/* A process-wide pool of parked workers, so an op's parallel section costs a wake-up,
 * not a thread creation (which was ~10% of a training step on small tensors).  One
 * caller dispatches at a time; a concurrent or nested caller falls back to threads of
 * its own, so the pool never deadlocks and never mixes two callers' jobs.
 *
 * Ops follow each other within microseconds, and a futex wake-up and park per op cost
 * ~15% of a small model's time, so both sides spin a little before they sleep: a worker
 * polls the generation counter, the dispatcher the pending count.  Sleeping is the
 * fallback, made race-free by sequentially consistent atomics: a worker announces itself
 * in pool_sleepers before its last look at pool_gen, and the dispatcher bumps pool_gen
 * before it looks at pool_sleepers (the same handshake for the dispatcher's own sleep),
 * so one of the two always sees the other.  The generation word carries the round's job
 * count in its low byte, so a worker that sat out a round can never pair the old round
 * with the next round's count. */
#define POOL_MAX 64
#define POOL_SPIN 2048
static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER, pool_busy = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_go = PTHREAD_COND_INITIALIZER, pool_done = PTHREAD_COND_INITIALIZER;
static int pool_workers;                  /* workers 1..pool_workers exist (under pool_busy) */
static atomic_ulong pool_gen;              /* round << 8 | jobs in the round */
static atomic_int pool_pending, pool_sleepers, pool_caller_sleeps;
static unsigned long pool_seen0[POOL_MAX];
static struct par_job pool_jobs[POOL_MAX];

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static void *pool_main(void *arg) {
    int me = (int)(intptr_t)arg;
    unsigned long seen = pool_seen0[me];
    for (;;) {
        int spin = 0;
        while (atomic_load(&pool_gen) == seen && spin < POOL_SPIN) { cpu_relax(); spin++; }
        if (atomic_load(&pool_gen) == seen) {
            pthread_mutex_lock(&pool_mu);
            atomic_fetch_add(&pool_sleepers, 1);
            while (atomic_load(&pool_gen) == seen) pthread_cond_wait(&pool_go, &pool_mu);
            atomic_fetch_sub(&pool_sleepers, 1);
            pthread_mutex_unlock(&pool_mu);
        }
        seen = atomic_load(&pool_gen);
        if (me < (int)(seen & 0xff)) {
            struct par_job j = pool_jobs[me];
            j.fn(j.ctx, j.lo, j.hi);
            if (atomic_fetch_sub(&pool_pending, 1) == 1 && atomic_load(&pool_caller_sleeps)) {
                pthread_mutex_lock(&pool_mu);
                pthread_cond_signal(&pool_done);
                pthread_mutex_unlock(&pool_mu);
            }
        }
    }
    return NULL;
}

/* Run fn over [0, n) in nthreads pieces on the pool; 0 if the pool is taken. */
static int pool_run(int nthreads, long long n, void (*fn)(void *, long long, long long), void *ctx) {
    if (pthread_mutex_trylock(&pool_busy)) return 0;
    while (pool_workers < nthreads - 1) {   /* workers see only generations after their start */
        int me = pool_workers + 1;
        pthread_t t;
        pool_seen0[me] = atomic_load(&pool_gen);
        if (pthread_create(&t, NULL, pool_main, (void *)(intptr_t)me)) break;
        pthread_detach(t);
        pool_workers = me;
    }
    int k = nthreads < pool_workers + 1 ? nthreads : pool_workers + 1;
    for (int t = 0; t < k; t++) pool_jobs[t] = (struct par_job){ fn, ctx, n * t / k, n * (t + 1) / k };
    atomic_store(&pool_pending, k - 1);
    atomic_store(&pool_gen, ((atomic_load(&pool_gen) >> 8) + 1) << 8 | (unsigned long)k);
    if (atomic_load(&pool_sleepers)) {
        pthread_mutex_lock(&pool_mu);
        pthread_cond_broadcast(&pool_go);
        pthread_mutex_unlock(&pool_mu);
    }
    fn(ctx, pool_jobs[0].lo, pool_jobs[0].hi);
    for (int spin = 0; atomic_load(&pool_pending) > 0 && spin < POOL_SPIN; spin++) cpu_relax();
    if (atomic_load(&pool_pending) > 0) {
        pthread_mutex_lock(&pool_mu);
        atomic_store(&pool_caller_sleeps, 1);
        while (atomic_load(&pool_pending) > 0) pthread_cond_wait(&pool_done, &pool_mu);
        atomic_store(&pool_caller_sleeps, 0);
        pthread_mutex_unlock(&pool_mu);
    }
    pthread_mutex_unlock(&pool_busy);
    return 1;
}

void cpu_parallel(int nthreads, long long n, void (*fn)(void *, long long, long long), void *ctx) {
    if (nthreads > POOL_MAX) nthreads = POOL_MAX;
    if (nthreads <= 1 || n < 2) { fn(ctx, 0, n); return; }
    if (nthreads > n) nthreads = (int)n;
    if (pool_run(nthreads, n, fn, ctx)) return;
    pthread_t tid[POOL_MAX];
    struct par_job jobs[POOL_MAX];
    int started[POOL_MAX] = { 0 };
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

/* ---- the provider of the fp32 GEMM ----
 * OpenBLAS when built with it, unless its CPU detection fell back to kernels far below
 * what this CPU runs (Debian 12's OpenBLAS 0.3.21 reads recent Xeons as "Prescott" and runs
 * SSE3 kernels, 3.5-4.9x slower than its AVX-512 ones): then oneDNN's sgemm when built
 * with it (it detects features, not model names), else OpenBLAS with a warning.
 * SDXLD_CPU_GEMM=openblas|dnnl|builtin overrides.  Chosen once per process. */
enum provider { PROV_BUILTIN, PROV_OPENBLAS, PROV_DNNL };
static enum provider prov;
static char prov_desc[320];
static pthread_once_t prov_once = PTHREAD_ONCE_INIT;

#ifdef SD_HAVE_BLAS
/* OpenBLAS's core name is one of its pre-AVX2 targets on a CPU with AVX2, or short of
 * AVX-512 on a CPU with AVX-512. */
static int openblas_core_slow(const char *core) {
    static const char *const sse_only[] = { "Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                                            "Katmai", "Coppermine", "Northwood", "Banias", "Sandybridge", NULL };
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2"), avx512 = __builtin_cpu_supports("avx512f");
    for (int i = 0; sse_only[i]; i++)
        if (!strcmp(core, sse_only[i])) return avx2;
    return avx512 && (!strcmp(core, "Haswell") || !strcmp(core, "Zen"));
}
#endif

static void choose_provider(void) {
    const char *env = getenv("SDXLD_CPU_GEMM");
    char note[160] = "";
    prov = PROV_BUILTIN;
#ifdef SD_HAVE_BLAS
    const char *core = openblas_get_corename();
    int slow = openblas_core_slow(core);
    prov = PROV_OPENBLAS;
#ifdef SD_HAVE_DNNL
    if (slow) prov = PROV_DNNL;
#endif
    if (slow)
        snprintf(note, sizeof note, " [OpenBLAS chose its %s kernels, slow on this CPU: %s]", core,
                 prov == PROV_DNNL ? "fp32 GEMM on oneDNN instead" : "set OPENBLAS_CORETYPE=SkylakeX (or Haswell)");
#endif
    if (env && !strcmp(env, "builtin")) prov = PROV_BUILTIN;
#ifdef SD_HAVE_BLAS
    if (env && !strcmp(env, "openblas")) prov = PROV_OPENBLAS;
#endif
#ifdef SD_HAVE_DNNL
    if (env && !strcmp(env, "dnnl")) prov = PROV_DNNL;
#endif
    switch (prov) {
#ifdef SD_HAVE_BLAS
    case PROV_OPENBLAS: snprintf(prov_desc, sizeof prov_desc, "fp32 GEMM: %s (%s kernels)%s", openblas_get_config(), core, note); break;
#endif
    case PROV_DNNL: snprintf(prov_desc, sizeof prov_desc, "fp32 GEMM: oneDNN sgemm%s", note); break;
    default: snprintf(prov_desc, sizeof prov_desc, "fp32 GEMM: built-in blocked loop%s", note); break;
    }
}

const char *cpu_gemm_describe(void) {
    pthread_once(&prov_once, choose_provider);
    return prov_desc;
}

void cpu_sgemm(int nthreads, int ta, int tb, int M, int N, int K, float alpha, const float *A,
               int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    pthread_once(&prov_once, choose_provider);
#ifdef SD_HAVE_DNNL
    if (prov == PROV_DNNL && K > 0) {
        omp_set_num_threads(nthreads);
        if (dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, A, lda, B, ldb, beta, C, ldc) == dnnl_success)
            return;
    }
#endif
    if (prov == PROV_BUILTIN) {
        cpu_sgemm_blocked(nthreads, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
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
