/* test_wdtype.c — linear and conv2d with their weights in F16 or BF16 (backend.h,
 * "Weight precision") against the same op with F32 weights holding the same values:
 *   - F16, and BF16 with native bf16 off, must equal it bit for bit (exact widening);
 *   - BF16 with native bf16 (oneDNN: AVX512-BF16 / AMX) rounds the activations to bf16
 *     and must stay within 1e-2 (‖a − b‖ / ‖b‖), and must really differ from the widened
 *     result (else the native path did not run);
 *   - embedding rows from an F16 or BF16 table equal those of the F32 table of the same
 *     values;
 *   - the weight table's storage (wt_alloc, wt_row_read/write) round-trips. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "backend/backend.h"
#include "core/rng.h"
#include "io/weights.h"

static double norm_err(const float *a, const float *b, size_t n) {
    double d = 0, s = 0;
    for (size_t i = 0; i < n; i++) { d += (double)(a[i] - b[i]) * (a[i] - b[i]); s += (double)b[i] * b[i]; }
    return sqrt(d / (s > 0 ? s : 1));
}

static float *randn(size_t n, uint64_t seed, float sd) {
    float *x = malloc(n * sizeof(float));
    struct sd_rng r;
    sd_rng_init(&r, seed);
    sd_rng_normal(&r, x, n);
    for (size_t i = 0; i < n; i++) x[i] *= sd;
    return x;
}

/* w rounded to dt, both as dt bits (h) and as the fp32 values they hold (wr). */
static void round_to(const float *w, size_t n, sd_dtype dt, uint16_t *h, float *wr) {
    sd_convert_from_f32(h, w, dt, n);
    sd_convert_to_f32(wr, h, dt, n);
}

struct shape { const char *what; int conv, N, C, H, W, K, k, stride, pad; };

/* Run the op (linear: R = N·H·W rows of C inputs, K outputs) with weights w of dtype dt. */
static void run(struct backend *be, const struct shape *s, float *out, const float *x, const void *w, sd_dtype dt,
                const float *b) {
    if (s->conv)
        be->ops->conv2d(be, out, x, w, dt, b, s->N, s->C, s->H, s->W, s->K, s->k, s->k, s->stride, s->pad, s->pad,
                        s->pad, s->pad);
    else be->ops->linear(be, out, x, w, dt, b, s->N * s->H * s->W, s->H * s->W, s->C, s->K);
}

static size_t out_size(const struct shape *s) {
    if (!s->conv) return (size_t)s->N * s->H * s->W * s->K;
    int Ho = (s->H + 2 * s->pad - s->k) / s->stride + 1, Wo = (s->W + 2 * s->pad - s->k) / s->stride + 1;
    return (size_t)s->N * s->K * Ho * Wo;
}

static void check_shape(struct backend *be, const struct shape *s) {
    size_t nx = (size_t)s->N * s->C * s->H * s->W, nw = (size_t)s->K * s->C * (s->conv ? s->k * s->k : 1);
    size_t no = out_size(s);
    float *x = randn(nx, 1, 1.0f), *w = randn(nw, 2, 1.0f / sqrtf((float)s->C)), *b = randn(s->K, 3, 0.1f);
    float *wr = malloc(nw * sizeof(float)), *ref = malloc(no * sizeof(float)), *got = malloc(no * sizeof(float));
    uint16_t *h = malloc(nw * sizeof(uint16_t));
    for (int d = DT_F16; d <= DT_BF16; d++) {
        round_to(w, nw, (sd_dtype)d, h, wr);
        backend_set_native_bf16(be, 0);
        run(be, s, ref, x, wr, DT_F32, b);
        run(be, s, got, x, h, (sd_dtype)d, b);
        ok(backend_status(be) == SD_OK && !memcmp(ref, got, no * sizeof(float)), "%s, %s weights widened: identical to F32",
           s->what, sd_dtype_name((sd_dtype)d));
        if (d == DT_BF16 && backend_set_native_bf16(be, 1)) {
            run(be, s, got, x, h, DT_BF16, b);
            double e = norm_err(got, ref, no);
            ok(backend_status(be) == SD_OK && e < 1e-2 && e > 0, "%s, bf16 native: error %.2e in (0, 1e-2)", s->what, e);
        } else if (d == DT_BF16) {
            printf("ok %d # SKIP %s: no native bf16 here (%s)\n", ++tap_n, s->what, backend_kernels(be));
        }
    }
    free(x); free(w); free(b); free(wr); free(ref); free(got); free(h);
}

/* A table with one GEMM weight (wt_lowp) and one bias: storage, sizes, read/write. */
static void check_table(struct backend *be) {
    for (int d = DT_F32; d <= DT_BF16; d++) {
        struct weight_table t;
        struct arena params;
        float *w, *bias;
        sd_dtype slot = DT_I64;
        wt_init(&t);
        t.wdt = (sd_dtype)d;
        wt_add(&t, &w, WT_INIT_NORMAL, 1.0f, 2, (int64_t[]){ 3, 5 }, "layer.weight");
        wt_lowp(&t, &slot);
        wt_add(&t, &bias, WT_INIT_ZERO, 0, 1, (int64_t[]){ 3 }, "layer.bias");
        ok(wt_alloc(&t, &params, be) == SD_OK && (int)slot == d && (int)t.rows[0].dt == d && t.rows[1].dt == DT_F32,
           "table with %s storage: the weight row takes it, the bias stays F32", sd_dtype_name((sd_dtype)d));
        float v[15], back[15 + 8];
        for (int i = 0; i < 15; i++) v[i] = 0.25f * (float)(i - 7);   /* exact in every dtype */
        ok(wt_row_write(be, &t.rows[0], v) == SD_OK, "row write");
        wt_row_read(be, &t.rows[0], back);
        ok(!memcmp(v, back, sizeof v), "%s row reads back what was written", sd_dtype_name((sd_dtype)d));
        arena_free(&params);
        wt_free(&t);
    }
}

static void check_embedding(struct backend *be) {
    enum { V = 50, D = 33, n = 7 };
    const int ids[n] = { 0, 49, 3, 3, 17, 0, 25 };
    float *t = randn((size_t)V * D, 5, 0.5f), tr[V * D], ref[n * D], got[n * D];
    uint16_t h[V * D];
    for (int d = DT_F16; d <= DT_BF16; d++) {
        round_to(t, (size_t)V * D, (sd_dtype)d, h, tr);
        be->ops->embedding(be, ref, tr, DT_F32, ids, n, D);
        be->ops->embedding(be, got, h, (sd_dtype)d, ids, n, D);
        ok(backend_status(be) == SD_OK && !memcmp(ref, got, sizeof got), "embedding from a %s table: the F32 "
           "table's rows of the same values", sd_dtype_name((sd_dtype)d));
    }
    free(t);
}

int main(void) {
    struct backend *be;
    if (backend_create(&be, "cpu", 0)) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    diag("kernels: %s", backend_kernels(be));
    static const struct shape shapes[] = {
        { "linear 77x768->3072 (CLIP MLP)", 0, 1, 768, 1, 77, 3072, 1, 1, 0 },
        { "linear 1024x640->640 (UNet proj)", 0, 1, 640, 32, 32, 640, 1, 1, 0 },
        { "linear odd 37x45->29", 0, 1, 45, 1, 37, 29, 1, 1, 0 },
        { "conv 3x3 320->320 at 32x32", 1, 1, 320, 32, 32, 320, 3, 1, 1 },
        { "conv 3x3 stride 2, batch 2", 1, 2, 64, 17, 15, 96, 3, 2, 1 },
        { "conv 1x1 (direct) 128->256", 1, 2, 128, 16, 16, 256, 1, 1, 0 },
        { "conv odd 3x3 5->7", 1, 1, 5, 9, 11, 7, 3, 1, 1 },
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_shape(be, &shapes[i]);
    check_embedding(be);
    check_table(be);
    backend_destroy(be);
    return done_testing();
}
