/* cpu_weights.c — the weight operand of the CPU backend's linear and conv2d in the
 * precision the model keeps it in (backend.h, "Weight precision"):
 *   - F32 is used as it is;
 *   - F16, and BF16 without native bf16, are widened exactly into a grow-only fp32 buffer
 *     (a pass over the weight per op: the GEMM then runs as for F32, with the same result
 *     bit for bit as F32 weights holding the same values);
 *   - BF16 with native bf16 goes to oneDNN's matmul (cpu_dnnl.h) with the activation
 *     operand rounded to bf16, fp32 accumulation.
 * Also the kernel report (backend_kernels) and the f32 GEMM provider choice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cpu_internal.h"
#ifdef SD_HAVE_DNNL
#include "cpu_dnnl.h"
#endif

struct cpu_wstate {
    float *wide;
    size_t nwide;
    uint16_t *half;             /* activations rounded to bf16 */
    size_t nhalf;
    struct cpu_dnnl *dnnl;
};

struct cpu_wstate *cpu_wstate_create(struct backend *be) {
    struct cpu_wstate *s = sd_calloc(1, sizeof *s);
    if (!s) return NULL;
    char dn[96] = "";
#ifdef SD_HAVE_DNNL
    const char *env = getenv("SDXLD_CPU_BF16");
    if (cpu_dnnl_has_bf16() && cpu_dnnl_create(&s->dnnl)) { sd_free(s); return NULL; }
    be->has_native_bf16 = s->dnnl != NULL;
    be->native_bf16 = be->has_native_bf16 && !(env && !strcmp(env, "0"));
    cpu_dnnl_describe(dn, sizeof dn);
#endif
    snprintf(be->kernels, sizeof be->kernels, "%s%s%s; bf16 weights: %s", cpu_gemm_describe(), dn[0] ? ", " : "", dn,
             be->native_bf16 ? "native (oneDNN)" : "widened to fp32");
    return s;
}

void cpu_wstate_trim(struct cpu_wstate *s) {
    sd_free(s->wide);
    sd_free(s->half);
    s->wide = NULL;
    s->half = NULL;
    s->nwide = s->nhalf = 0;
}

void cpu_wstate_destroy(struct cpu_wstate *s) {
    if (!s) return;
#ifdef SD_HAVE_DNNL
    cpu_dnnl_destroy(s->dnnl);
#endif
    sd_free(s->wide);
    sd_free(s->half);
    sd_free(s);
}

static void *grow(struct backend *be, void **p, size_t *have, size_t n, size_t elem) {
    if (n > *have) {
        void *q = sd_realloc(*p, n * elem);
        if (!q) { backend_set_error(be, SD_ERR_NOMEM, sd_last_error()); return NULL; }
        *p = q;
        *have = n;
    }
    return *p;
}

/* ---- conversions, vectorised (once per op over a whole weight or activation, so they
 * must run at memory speed: the scalar ones of core/tensor.c took longer than the AMX
 * GEMMs they feed).  Function multiversioning keeps the binary running on any x86-64. */
SD_CLONES static void bf16_to_f32(float *d, const uint16_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)s[i] << 16;
        memcpy(d + i, &u, 4);
    }
}

/* Round to nearest even; NaN stays NaN (quietened). */
SD_CLONES __attribute__((unused)) static void f32_to_bf16(uint16_t *d, const float *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, s + i, 4);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, q = (u >> 16) | 0x40u;
        d[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)   /* (clang 14: no "f16c" check) */
#include <immintrin.h>
__attribute__((target("avx2,f16c"))) static void f16_to_f32_f16c(float *d, const uint16_t *s, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    sd_convert_to_f32(d + i, s + i, DT_F16, n - i);
}
#endif

static void f16_to_f32(float *d, const uint16_t *s, size_t n) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)   /* (clang 14: no "f16c" check) */
    if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2")) { f16_to_f32_f16c(d, s, n); return; }
#endif
    sd_convert_to_f32(d, s, DT_F16, n);
}

struct widen_ctx { float *dst; const uint16_t *src; sd_dtype dt; };

static void widen_part(void *p, long long lo, long long hi) {
    struct widen_ctx *g = p;
    if (g->dt == DT_F16) f16_to_f32(g->dst + lo, g->src + lo, (size_t)(hi - lo));
    else bf16_to_f32(g->dst + lo, g->src + lo, (size_t)(hi - lo));
}

const float *cpu_weight_f32(struct backend *be, const void *w, sd_dtype dt, size_t n) {
    if (dt == DT_F32) return w;
    if (dt != DT_F16 && dt != DT_BF16) {
        backend_set_error(be, SD_ERR_UNSUPPORTED, "weights of dtype I64 in a GEMM");
        return NULL;
    }
    struct cpu_wstate *s = cpu_wstate(be);
    float *dst = grow(be, (void **)&s->wide, &s->nwide, n, sizeof(float));
    if (!dst) return NULL;
    struct widen_ctx g = { dst, w, dt };
    cpu_parallel(n > (1u << 16) ? be->threads : 1, (long long)n, widen_part, &g);
    return dst;
}

#ifdef SD_HAVE_DNNL
struct round_ctx { uint16_t *dst; const float *src; long long ld_src, cols; };

/* rows [lo, hi) of a cols-wide matrix with row stride ld_src, packed. */
static void round_rows(void *p, long long lo, long long hi) {
    struct round_ctx *g = p;
    if (g->ld_src == g->cols) f32_to_bf16(g->dst + lo * g->cols, g->src + lo * g->cols, (size_t)((hi - lo) * g->cols));
    else
        for (long long r = lo; r < hi; r++) f32_to_bf16(g->dst + r * g->cols, g->src + r * g->ld_src, (size_t)g->cols);
}

/* src [rows, cols] (row stride ld) rounded to bf16, packed, in the activation buffer. */
static const uint16_t *to_bf16(struct backend *be, const float *src, long long rows, long long cols, long long ld) {
    struct cpu_wstate *s = cpu_wstate(be);
    uint16_t *dst = grow(be, (void **)&s->half, &s->nhalf, (size_t)(rows * cols), sizeof(uint16_t));
    if (!dst) return NULL;
    struct round_ctx g = { dst, src, ld, cols };
    cpu_parallel(rows * cols > (1 << 16) ? be->threads : 1, rows, round_rows, &g);
    return dst;
}

/* One product split into column panels over the backend's threads, each a one-thread
 * oneDNN call on its own scratch slot (cpu_dnnl.c says why). */
struct panel_ctx { struct cpu_dnnl *d; const struct cpu_dnnl_mm *mm; int width; sd_status st[CPU_DNNL_SLOTS]; };

static void panel_part(void *p, long long lo, long long hi) {
    struct panel_ctx *g = p;
    for (long long t = lo; t < hi; t++) {
        struct cpu_dnnl_mm mm = *g->mm;
        int n0 = (int)t * g->width, n1 = n0 + g->width < mm.N ? n0 + g->width : mm.N;
        if (n1 <= n0) continue;
        mm.N = n1 - n0;
        mm.B += n0 * mm.sb1;
        mm.C += n0;
        if (mm.bias) mm.bias += n0;
        g->st[t] = cpu_dnnl_gemm(g->d, (int)t, &mm);
    }
}

static void run(struct backend *be, const struct cpu_dnnl_mm *mm) {
    int k = be->threads < CPU_DNNL_SLOTS ? be->threads : CPU_DNNL_SLOTS;
    if ((long long)mm->M * mm->N * mm->K < (1LL << 22)) k = 1;   /* too small to split */
    struct panel_ctx g = { cpu_wstate(be)->dnnl, mm, (mm->N + k - 1) / k, { SD_OK } };
    g.width = (g.width + 31) / 32 * 32;                            /* whole kernel blocks */
    k = (mm->N + g.width - 1) / g.width;
    cpu_parallel(k, k, panel_part, &g);
    for (int t = 0; t < k; t++)
        if (g.st[t]) { backend_set_error(be, g.st[t], sd_last_error()); return; }
}
#endif

int cpu_linear_native(struct backend *be, float *out, const float *inp, const void *w, sd_dtype wdt, const float *b,
                      int R, int I, int O) {
    if (wdt != DT_BF16 || !be->native_bf16) return 0;   /* (cpu.c calls it for native weights only) */
#ifdef SD_HAVE_DNNL
    const uint16_t *x = to_bf16(be, inp, R, I, I);
    if (!x) return 1;
    /* out = x·Wᵀ: B = Wᵀ is [I, O] with strides (1, I) over W [O, I] */
    struct cpu_dnnl_mm mm = { R, O, I, x, I, 1, w, 1, I, out, O, b, 0 };
    run(be, &mm);
#else
    (void)out; (void)inp; (void)w; (void)b; (void)R; (void)I; (void)O;
#endif
    return 1;
}

int cpu_conv_tile_native(struct backend *be, float *y, long long ldy, const void *w, sd_dtype wdt, int K,
                         const float *col, int CK, int np) {
    if (wdt != DT_BF16 || !be->native_bf16) return 0;
#ifdef SD_HAVE_DNNL
    const uint16_t *c = to_bf16(be, col, CK, np, np);
    if (!c) return 1;
    struct cpu_dnnl_mm mm = { K, np, CK, w, CK, 1, c, np, 1, y, ldy, NULL, 1 };   /* y += W·col */
    run(be, &mm);
#else
    (void)y; (void)ldy; (void)w; (void)K; (void)col; (void)CK; (void)np;
#endif
    return 1;
}
