/* test_gpu_ops.c — every forward op of the CUDA backend against the CPU backend (the fp32
 * oracle) on fresh random inputs, at toy sizes that hit the edges and at SDXL sizes: GEMM
 * (every transpose, leading dimensions, batches, strides, beta), linear, conv2d (3×3,
 * 1×1, stride 2, the VAE encoder's right/bottom-only padding, rectangular kernels,
 * batches split in chunks), group norm (+SiLU, in place), layer norm, attention (causal,
 * strided heads, cross, UNet 4096 tokens × 10 heads × 64, the VAE's single head of 512),
 * activations, GEGLU, upsample, timestep embedding, embedding, axpby, add_channel,
 * concat, transpose; then the error and memory contracts.  The training ops are
 * test_gpu_backward.c.
 *
 * Outputs are poisoned with NaN before each GPU op, so an element the op never wrote
 * fails the comparison.  The measure is the normalized error ‖gpu − cpu‖ / ‖cpu‖ (the
 * square root of STYLE.md's nmse) with a per-op bound: fp32 kernels near 1e-6, TF32
 * products (10-bit mantissa operands) near 3e-4.  GEMM and conv run both with TF32 and
 * with plain fp32.
 *
 * Suite `gpu`.  Without a usable GPU it prints a TAP skip and exits 77 (meson's skip);
 * tests/gpu/run.sh treats that as a failure. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "gpu/gpu_util.h"

/* ---- GEMM, linear ---- */

static void test_gemm(int tf32) {
    double tol = tf32 ? 3e-3 : 1e-5;
    backend_cuda_set_tf32(gpu, tf32);
    int shapes[][3] = { { 1, 1, 1 }, { 7, 13, 5 }, { 64, 33, 300 }, { 130, 70, 257 }, { 640, 512, 1024 } };
    for (int s = 0; s < 5; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
                float *A = rnd(na), *B = rnd(nb), *C = rnd(nc);
                float *dA = dev(A, na), *dB = dev(B, nb), *dC = dev(C, nc);
                gpu->ops->gemm(gpu, ta, tb, M, N, K, 0.7f, dA, lda, 0, dB, ldb, 0, 0.5f, dC, ldc, 0, 1);
                cpu->ops->gemm(cpu, ta, tb, M, N, K, 0.7f, A, lda, 0, B, ldb, 0, 0.5f, C, ldc, 0, 1);
                char name[128];
                snprintf(name, sizeof name, "gemm %s %dx%dx%d ta=%d tb=%d beta=0.5 (padded ld)", tf32 ? "tf32" : "fp32",
                         M, N, K, ta, tb);
                check(name, dC, C, nc, tol);   /* the ld padding is checked too: it must hold C's old values */
                dfree(dA); dfree(dB); dfree(dC);
                free(A); free(B); free(C);
            }
    /* batched with strides; beta 0 must ignore NaN in C */
    int M = 77, N = 64, K = 77, batch = 20;
    long long sA = (long long)M * K + 5, sB = (long long)K * N + 3, sC = (long long)M * N + 7;
    float *A = rnd(batch * sA), *B = rnd(batch * sB), *C = malloc(sizeof(float) * batch * sC);
    float *dA = dev(A, batch * sA), *dB = dev(B, batch * sB), *dC = dev_nan(batch * sC);
    for (long long i = 0; i < batch * sC; i++) C[i] = NAN;
    gpu->ops->gemm(gpu, 0, 1, M, N, K, 1.0f, dA, K, sA, dB, K, sB, 0.0f, dC, N, sC, batch);
    cpu->ops->gemm(cpu, 0, 1, M, N, K, 1.0f, A, K, sA, B, K, sB, 0.0f, C, N, sC, batch);
    float *g = back(dC, batch * sC);
    double e = 0;
    for (int b = 0; b < batch; b++) {
        double r = nerr(g + b * sC, C + b * sC, (size_t)M * N);
        if (!(r <= e)) e = r;
    }
    ok(backend_status(gpu) == SD_OK && e < tol, "batched strided gemm (%d × %dx%dx%d), beta 0 over NaN: %.2g", batch, M,
       N, K, e);
    free(g); free(A); free(B); free(C);
    dfree(dA); dfree(dB); dfree(dC);

    /* linear, with and without bias, at a UNet projection size */
    int dims[][3] = { { 4, 6, 5 }, { 4096, 640, 640 }, { 154, 2048, 640 } };
    for (int t = 0; t < 3; t++)
        for (int bias = 0; bias < 2; bias++) {
            int Rr = dims[t][0], I = dims[t][1], O = dims[t][2];
            float *x = rnd((size_t)Rr * I), *w = rnd((size_t)O * I), *b = bias ? rnd(O) : NULL;
            float *y = malloc(sizeof(float) * Rr * O);
            float *dx = dev(x, (size_t)Rr * I), *dw = dev(w, (size_t)O * I), *db = bias ? dev(b, O) : NULL;
            float *dy = dev_nan((size_t)Rr * O);
            gpu->ops->linear(gpu, dy, dx, dw, db, Rr, I, O);
            cpu->ops->linear(cpu, y, x, w, b, Rr, I, O);
            char name[96];
            snprintf(name, sizeof name, "linear %s %dx%d->%d bias=%d", tf32 ? "tf32" : "fp32", Rr, I, O, bias);
            check(name, dy, y, (size_t)Rr * O, tol);
            dfree(dx); dfree(dw); dfree(db); dfree(dy);
            free(x); free(w); free(b); free(y);
        }
}

/* ---- convolution ---- */

struct conv_case { int N, C, H, W, K, kh, kw, s, pt, pl, pb, pr, bias; const char *what; };

static void run_conv(struct backend *g, const struct conv_case *cs, double tol, const char *mode) {
    int N = cs->N, C = cs->C, H = cs->H, W = cs->W, K = cs->K, kh = cs->kh, kw = cs->kw, s = cs->s;
    int Ho = (H + cs->pt + cs->pb - kh) / s + 1, Wo = (W + cs->pl + cs->pr - kw) / s + 1;
    size_t nx = (size_t)N * C * H * W, nw = (size_t)K * C * kh * kw, ny = (size_t)N * K * Ho * Wo;
    float *x = rnd(nx), *w = rnd(nw), *b = cs->bias ? rnd(K) : NULL, *y = malloc(sizeof(float) * ny);
    struct backend *keep = gpu;
    gpu = g;
    float *dx = dev(x, nx), *dw = dev(w, nw), *db = b ? dev(b, K) : NULL, *dy = dev_nan(ny);
    g->ops->conv2d(g, dy, dx, dw, db, N, C, H, W, K, kh, kw, s, cs->pt, cs->pl, cs->pb, cs->pr);
    cpu->ops->conv2d(cpu, y, x, w, b, N, C, H, W, K, kh, kw, s, cs->pt, cs->pl, cs->pb, cs->pr);
    char name[200];
    snprintf(name, sizeof name, "conv2d %s %s: N%d C%d %dx%d -> K%d k%dx%d s%d pad %d,%d,%d,%d", mode, cs->what, N, C, H,
             W, K, kh, kw, s, cs->pt, cs->pl, cs->pb, cs->pr);
    check(name, dy, y, ny, tol);
    dfree(dx); dfree(dw); dfree(db); dfree(dy);
    gpu = keep;
    free(x); free(w); free(b); free(y);
}

static void test_conv(int tf32) {
    static const struct conv_case cs[] = {
        { 2, 3, 9, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, "same 3x3" },
        { 1, 4, 8, 8, 6, 1, 1, 1, 0, 0, 0, 0, 1, "1x1 (GEMM path)" },
        { 2, 3, 8, 10, 4, 3, 3, 2, 1, 1, 1, 1, 1, "UNet downsample" },
        { 1, 3, 8, 8, 3, 3, 3, 2, 0, 0, 1, 1, 1, "VAE downsample, pad right/bottom" },
        { 2, 4, 9, 9, 5, 3, 3, 1, 1, 0, 0, 1, 0, "asymmetric pad, no bias" },
        { 1, 2, 11, 6, 3, 5, 3, 1, 2, 1, 2, 1, 0, "rectangular kernel" },
        { 2, 320, 64, 64, 320, 3, 3, 1, 1, 1, 1, 1, 1, "UNet resnet conv" },
        { 2, 640, 32, 32, 1280, 1, 1, 1, 0, 0, 0, 0, 1, "UNet shortcut 1x1" },
        { 1, 4, 32, 32, 320, 3, 3, 1, 1, 1, 1, 1, 1, "conv_in 4->320" },
        { 1, 128, 128, 128, 128, 3, 3, 2, 0, 0, 1, 1, 1, "VAE encoder downsample 128ch" },
        { 1, 256, 96, 96, 128, 3, 3, 1, 1, 1, 1, 1, 1, "VAE decoder conv 256->128" },
        { 1, 128, 64, 64, 3, 3, 3, 1, 1, 1, 1, 1, 1, "VAE conv_out 128->3" },
    };
    backend_cuda_set_tf32(gpu, tf32);
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) run_conv(gpu, &cs[t], tf32 ? 3e-3 : 1e-4, tf32 ? "tf32" : "fp32");
}

/* Batches past the per-call value limit are run in chunks of images: a second backend with
 * a tiny limit (SDXLD_CUDA_CONV_CHUNK, a test knob read at creation) makes every image its
 * own cuDNN call. */
static void test_conv_chunks(void) {
    setenv("SDXLD_CUDA_CONV_CHUNK", "1000", 1);
    struct backend *g2;
    sd_status st = backend_create(&g2, "cuda", 0);
    unsetenv("SDXLD_CUDA_CONV_CHUNK");
    if (!ok(st == SD_OK, "second CUDA backend for conv chunking")) return;
    static const struct conv_case cs[] = {
        { 3, 8, 12, 12, 6, 3, 3, 1, 1, 1, 1, 1, 1, "chunked per image" },
        { 3, 8, 12, 12, 6, 3, 3, 2, 0, 0, 1, 1, 1, "chunked, padded per chunk" },
    };
    for (int t = 0; t < 2; t++) run_conv(g2, &cs[t], 3e-3, "chunks");
    backend_destroy(g2);
}

/* ---- norms ---- */

static void test_norms(void) {
    int gs[][4] = { { 2, 8, 10, 4 }, { 2, 64, 33 * 33, 32 }, { 1, 320, 64 * 64, 32 }, { 1, 128, 256 * 256, 32 }, { 3, 6, 1, 3 } };
    for (int t = 0; t < 5; t++)
        for (int silu = 0; silu < 2; silu++) {
            int N = gs[t][0], C = gs[t][1], HW = gs[t][2], G = gs[t][3];
            size_t n = (size_t)N * C * HW;
            float *x = rnd(n), *w = rnd(C), *b = rnd(C), *y = malloc(sizeof(float) * n);
            for (size_t i = 0; i < n; i++) x[i] = x[i] * 3.0f + 5.0f;   /* a mean far from 0 */
            float *dx = dev(x, n), *dw = dev(w, C), *db = dev(b, C), *dy = dev_nan(n);
            gpu->ops->group_norm(gpu, dy, dx, dw, db, N, C, HW, G, 1e-6f, silu);
            cpu->ops->group_norm(cpu, y, x, w, b, N, C, HW, G, 1e-6f, silu);
            char name[96];
            snprintf(name, sizeof name, "group_norm N%d C%d HW%d G%d silu=%d", N, C, HW, G, silu);
            check(name, dy, y, n, 2e-6);
            if (t == 1) {   /* in place */
                gpu->ops->group_norm(gpu, dx, dx, dw, db, N, C, HW, G, 1e-6f, silu);
                check("group_norm in place", dx, y, n, 2e-6);
            }
            dfree(dx); dfree(dw); dfree(db); dfree(dy);
            free(x); free(w); free(b); free(y);
        }
    int ls[][2] = { { 6, 8 }, { 4096, 640 }, { 154, 1280 }, { 5, 33 } };
    for (int t = 0; t < 4; t++) {
        int Rr = ls[t][0], C = ls[t][1];
        size_t n = (size_t)Rr * C;
        float *x = rnd(n), *w = rnd(C), *b = rnd(C), *y = malloc(sizeof(float) * n);
        float *dx = dev(x, n), *dw = dev(w, C), *db = dev(b, C), *dy = dev_nan(n);
        gpu->ops->layer_norm(gpu, dy, dx, dw, db, Rr, C, 1e-5f);
        cpu->ops->layer_norm(cpu, y, x, w, b, Rr, C, 1e-5f);
        char name[64];
        snprintf(name, sizeof name, "layer_norm %dx%d", Rr, C);
        check(name, dy, y, n, 2e-6);
        gpu->ops->layer_norm(gpu, dx, dx, dw, db, Rr, C, 1e-5f);
        snprintf(name, sizeof name, "layer_norm %dx%d in place", Rr, C);
        check(name, dx, y, n, 2e-6);
        dfree(dx); dfree(dw); dfree(db); dfree(dy);
        free(x); free(w); free(b); free(y);
    }
}

/* ---- attention ---- */

struct att_case { int N, H, Lq, Lk, D, pad, causal; const char *what; };

static void test_attention(void) {
    static const struct att_case cs[] = {
        { 2, 3, 7, 7, 4, 0, 0, "tiny" },
        { 2, 3, 8, 5, 4, 0, 0, "Lq != Lk" },
        { 2, 3, 9, 9, 4, 0, 1, "causal" },
        { 2, 3, 10, 10, 4, 5, 0, "padded ld" },
        { 5, 4, 77, 77, 8, 0, 1, "tiny CLIP-L (causal, D 8)" },
        { 5, 4, 77, 77, 16, 0, 1, "tiny bigG (causal, D 16)" },
        { 2, 12, 77, 77, 64, 0, 1, "CLIP-L causal 77 x 12 x 64" },
        { 2, 3, 64, 77, 32, 0, 0, "tiny UNet cross (D 32)" },
        { 1, 5, 130, 70, 80, 3, 0, "D 80 (128-wide tiles)" },
        { 1, 2, 100, 100, 200, 0, 0, "D 200 (256-wide tiles)" },
        { 1, 1, 64, 64, 64, 0, 0, "tiny VAE mid (1 head, D 64)" },
        { 1, 10, 4096, 4096, 64, 0, 0, "UNet self 4096 x 10 x 64" },
        { 2, 10, 4096, 77, 64, 0, 0, "UNet cross 4096 x 77, 10 heads" },
        { 1, 20, 1024, 1024, 64, 0, 0, "UNet self 1024 x 20 x 64" },
        { 1, 1, 4096, 4096, 512, 0, 0, "VAE mid 4096 x 1 x 512" },
        { 1, 1, 1000, 1000, 512, 0, 1, "D 512 causal, ragged tiles" },
    };
    for (size_t t = 0; t < sizeof cs / sizeof cs[0]; t++) {
        const struct att_case *a = &cs[t];
        int ld = a->H * a->D + a->pad;
        size_t nq = (size_t)a->N * a->Lq * ld, nk = (size_t)a->N * a->Lk * ld;
        float *q = rnd(nq), *k = rnd(nk), *v = rnd(nk), *o = malloc(sizeof(float) * nq);
        for (size_t i = 0; i < nq; i++) o[i] = 0.0f;
        float *dq = dev(q, nq), *dk = dev(k, nk), *dv = dev(v, nk), *dout = dev(o, nq);
        float scale = 1.0f / sqrtf((float)a->D);
        double t0 = sd_now_ms();
        gpu->ops->attention(gpu, dout, dq, dk, dv, a->N, a->H, a->Lq, a->Lk, a->D, ld, ld, ld, ld, scale, a->causal);
        gpu->ops->sync(gpu);
        double ms = sd_now_ms() - t0;
        cpu->ops->attention(cpu, o, q, k, v, a->N, a->H, a->Lq, a->Lk, a->D, ld, ld, ld, ld, scale, a->causal);
        char name[160];
        snprintf(name, sizeof name, "attention %s: N%d H%d Lq%d Lk%d D%d ld%d causal=%d (%.2f ms incl. launch)", a->what,
                 a->N, a->H, a->Lq, a->Lk, a->D, ld, a->causal, ms);
        check(name, dout, o, nq, 1e-5);
        dfree(dq); dfree(dk); dfree(dv); dfree(dout);
        free(q); free(k); free(v); free(o);
    }
    /* the ld padding columns are not written: check they survive (poisoned with a marker) */
    {
        int N = 1, H = 2, L = 9, D = 4, ld = H * D + 3;
        size_t n = (size_t)N * L * ld;
        float *q = rnd(n), *mark = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) mark[i] = 12345.0f;
        float *dq = dev(q, n), *dout = dev(mark, n);
        gpu->ops->attention(gpu, dout, dq, dq, dq, N, H, L, L, D, ld, ld, ld, ld, 0.5f, 0);
        float *g = back(dout, n);
        int good = 1;
        for (int i = 0; i < L; i++)
            for (int c = H * D; c < ld; c++) good &= g[(size_t)i * ld + c] == 12345.0f;
        ok(good && backend_status(gpu) == SD_OK, "attention leaves the ld padding alone");
        free(g); free(q); free(mark);
        dfree(dq); dfree(dout);
    }
}

/* ---- elementwise ---- */

static void test_elementwise(void) {
    size_t n = 1 << 20;
    float *x = rnd(n), *y = malloc(sizeof(float) * n);
    float *dx = dev(x, n), *dy = dev_nan(n);
    const char *names[] = { "act silu", "act gelu", "act quick_gelu" };
    for (int k = 0; k < 3; k++) {
        gpu->ops->act(gpu, dy, dx, (long long)n, (enum act_kind)k);
        cpu->ops->act(cpu, y, x, (long long)n, (enum act_kind)k);
        check(names[k], dy, y, n, 1e-6);
    }
    gpu->ops->act(gpu, dy, dx, (long long)n, ACT_SILU);
    gpu->ops->act(gpu, dy, dy, (long long)n, ACT_SILU);
    cpu->ops->act(cpu, y, x, (long long)n, ACT_SILU);
    cpu->ops->act(cpu, y, y, (long long)n, ACT_SILU);
    check("act in place", dy, y, n, 1e-6);

    /* geglu: [a | g] -> a * gelu(g), R rows of 2C */
    int Rr = 1024, C = 2560;
    float *gx = rnd((size_t)Rr * 2 * C), *gy = malloc(sizeof(float) * Rr * C);
    float *dgx = dev(gx, (size_t)Rr * 2 * C), *dgy = dev_nan((size_t)Rr * C);
    gpu->ops->geglu(gpu, dgy, dgx, Rr, C);
    cpu->ops->geglu(cpu, gy, gx, Rr, C);
    check("geglu 1024 x 2·2560", dgy, gy, (size_t)Rr * C, 1e-6);
    dfree(dgx); dfree(dgy); free(gx); free(gy);

    /* upsample */
    {
        int N = 2, Cc = 3, H = 17, W = 33;
        size_t ni = (size_t)N * Cc * H * W, no = ni * 4;
        float *u = rnd(ni), *uo = malloc(sizeof(float) * no);
        float *du = dev(u, ni), *duo = dev_nan(no);
        gpu->ops->upsample2x(gpu, duo, du, N, Cc, H, W);
        cpu->ops->upsample2x(cpu, uo, u, N, Cc, H, W);
        check("upsample2x 17x33", duo, uo, no, 1e-7);
        dfree(du); dfree(duo); free(u); free(uo);
    }
    /* timestep embedding: cos first / sin first, shift, an odd width */
    {
        float t[3] = { 999, 3.5f, 0 };
        int dims[3] = { 320, 256, 7 };
        for (int k = 0; k < 3; k++) {
            int dim = dims[k], flip = k != 1;
            float shift = k == 1 ? 1.0f : 0.0f;
            float *e = malloc(sizeof(float) * 3 * dim), *de = dev_nan((size_t)3 * dim);
            gpu->ops->timestep_embedding(gpu, de, t, 3, dim, flip, shift, 10000.0f);
            cpu->ops->timestep_embedding(cpu, e, t, 3, dim, flip, shift, 10000.0f);
            char name[64];
            snprintf(name, sizeof name, "timestep_embedding dim %d flip %d shift %g", dim, flip, shift);
            check(name, de, e, (size_t)3 * dim, 1e-4);   /* cos/sin of ~1000 rad: an ulp of the angle shows */
            dfree(de); free(e);
        }
    }
    /* embedding */
    {
        int V = 1000, D = 64, cnt = 154;
        int ids[154];
        for (int i = 0; i < cnt; i++) ids[i] = (int)(sd_rng_u32(&R) % V);
        ids[0] = V - 1;
        float *tab = rnd((size_t)V * D), *e = malloc(sizeof(float) * cnt * D);
        float *dt = dev(tab, (size_t)V * D), *de = dev_nan((size_t)cnt * D);
        gpu->ops->embedding(gpu, de, dt, ids, cnt, D);
        cpu->ops->embedding(cpu, e, tab, ids, cnt, D);
        check("embedding gather", de, e, (size_t)cnt * D, 1e-7);
        dfree(dt); dfree(de); free(tab); free(e);
    }
    /* axpby (two inputs, one input, in place) */
    {
        float *b = rnd(n), *db = dev(b, n);
        gpu->ops->axpby(gpu, dy, 2.0f, dx, -0.5f, db, (long long)n);
        cpu->ops->axpby(cpu, y, 2.0f, x, -0.5f, b, (long long)n);
        check("axpby", dy, y, n, 1e-7);
        gpu->ops->axpby(gpu, dy, 0.25f, dy, 0.0f, NULL, (long long)n);
        cpu->ops->axpby(cpu, y, 0.25f, y, 0.0f, NULL, (long long)n);
        check("axpby b NULL, in place", dy, y, n, 1e-7);
        gpu->ops->axpby(gpu, dy, 1.0f, dy, 1.0f, db, (long long)n);
        cpu->ops->axpby(cpu, y, 1.0f, y, 1.0f, b, (long long)n);
        check("axpby out == a", dy, y, n, 1e-7);
        dfree(db); free(b);
    }
    /* add_channel: [N, C, HW] += v[N, C] */
    {
        int N = 2, Cc = 320, HW = 1000;
        size_t m = (size_t)N * Cc * HW;
        float *v = rnd((size_t)N * Cc), *dv = dev(v, (size_t)N * Cc);
        gpu->ops->upload(gpu, dy, x, m * sizeof(float));
        memcpy(y, x, m * sizeof(float));
        gpu->ops->add_channel(gpu, dy, dv, N, Cc, HW);
        cpu->ops->add_channel(cpu, y, v, N, Cc, HW);
        check("add_channel", dy, y, m, 1e-7);
        dfree(dv); free(v);
    }
    /* concat [a; b] on channels, also as the text encoders use it (HW = 1) */
    {
        int N = 3, Ca = 5, Cb = 7, HW = 1001;
        size_t m = (size_t)N * (Ca + Cb) * HW;
        float *a = rnd((size_t)N * Ca * HW), *b = rnd((size_t)N * Cb * HW), *o = malloc(sizeof(float) * m);
        float *da = dev(a, (size_t)N * Ca * HW), *db = dev(b, (size_t)N * Cb * HW), *dox = dev_nan(m);
        gpu->ops->concat_channels(gpu, dox, da, Ca, db, Cb, N, HW);
        cpu->ops->concat_channels(cpu, o, a, Ca, b, Cb, N, HW);
        check("concat_channels", dox, o, m, 1e-7);
        gpu->ops->concat_channels(gpu, dox, da, 768, db, 1280, 2, 1);
        cpu->ops->concat_channels(cpu, o, a, 768, b, 1280, 2, 1);
        check("concat_channels HW 1 (text context)", dox, o, (size_t)2 * 2048, 1e-7);
        dfree(da); dfree(db); dfree(dox); free(a); free(b); free(o);
    }
    /* transpose, ragged and at a UNet size */
    {
        int ts[][3] = { { 2, 37, 45 }, { 2, 640, 4096 }, { 1, 1, 5 } };
        for (int k = 0; k < 3; k++) {
            int N = ts[k][0], Rr2 = ts[k][1], Cc = ts[k][2];
            size_t m = (size_t)N * Rr2 * Cc;
            float *ti = rnd(m), *to = malloc(sizeof(float) * m), *dti = dev(ti, m), *dt = dev_nan(m);
            gpu->ops->transpose(gpu, dt, dti, N, Rr2, Cc);
            cpu->ops->transpose(cpu, to, ti, N, Rr2, Cc);
            char name[64];
            snprintf(name, sizeof name, "transpose %d x %d x %d", N, Rr2, Cc);
            check(name, dt, to, m, 1e-7);
            dfree(dti); dfree(dt); free(ti); free(to);
        }
    }
    /* copy, zero */
    {
        float *dz = dev_nan(n);
        gpu->ops->copy(gpu, dz, dx, n * sizeof(float));
        check("copy", dz, x, n, 1e-7);
        gpu->ops->zero(gpu, dz, n * sizeof(float));
        memset(y, 0, n * sizeof(float));
        float *g = back(dz, n);
        ok(!memcmp(g, y, n * sizeof(float)), "zero");
        free(g);
        dfree(dz);
    }
    dfree(dx); dfree(dy);
    free(x); free(y);
}

/* ---- contracts: sticky errors, memory accounting ---- */

static void test_contracts(void) {
    ok(gpu->ops->mem_in_use && gpu->ops->mem_peak, "cuda reports its memory");
    ok(cpu->ops->mem_in_use == NULL && cpu->ops->mem_peak == NULL, "cpu does not");
    size_t base = gpu->ops->mem_in_use(gpu);
    float *a = dev(NULL, 1 << 20);
    ok(gpu->ops->mem_in_use(gpu) >= base + (4u << 20), "an alloc is counted (%zu -> %zu bytes)", base,
       gpu->ops->mem_in_use(gpu));
    dfree(a);
    ok(gpu->ops->mem_in_use(gpu) == base, "a free is counted");
    ok(gpu->ops->mem_peak(gpu) >= base + (4u << 20), "peak holds the high-water mark (%zu bytes)", gpu->ops->mem_peak(gpu));

    void *huge = gpu->ops->alloc(gpu, (size_t)1 << 50);
    ok(huge == NULL, "a 1 PiB alloc returns NULL: %s", sd_last_error());
    ok(backend_status(gpu) == SD_OK, "and leaves no sticky error (arenas may try big blocks and cope)");
    float *x = rnd(1000), *dx = dev(x, 1000), *dy = dev_nan(1000), y[1000];
    gpu->ops->act(gpu, dy, dx, 1000, ACT_SILU);
    cpu->ops->act(cpu, y, x, 1000, ACT_SILU);
    check("an op after the failed alloc works", dy, y, 1000, 1e-6);

    gpu->ops->attention(gpu, dy, dx, dx, dx, 1, 1, 1, 1, 600, 600, 600, 600, 600, 1.0f, 0);
    ok(backend_status(gpu) == SD_ERR_UNSUPPORTED, "attention with D 600 is refused: %s", sd_last_error());
    gpu->ops->act(gpu, dy, dx, 1000, ACT_GELU);
    ok(backend_status(gpu) == SD_ERR_UNSUPPORTED, "errors are sticky: later ops are no-ops");
    gpu->err = SD_OK;
    gpu->ops->group_norm(gpu, dy, dx, NULL, NULL, 1, 10, 100, 3, 1e-5f, 0);
    ok(backend_status(gpu) == SD_ERR_INVALID, "group_norm with C %% G != 0 is refused: %s", sd_last_error());
    gpu->err = SD_OK;
    dfree(dx); dfree(dy); free(x);
}

int main(void) {
    sd_rng_init(&R, 20261126);
    if (backend_create(&gpu, "cuda", 0) != SD_OK) {
        printf("1..0 # SKIP no CUDA backend: %s\n", sd_last_error());
        return 77;
    }
    if (backend_create(&cpu, "cpu", 0) != SD_OK) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    double t0 = sd_now_ms();
    for (int tf32 = 1; tf32 >= 0; tf32--) { test_gemm(tf32); test_conv(tf32); }
    backend_cuda_set_tf32(gpu, 1);
    test_conv_chunks();
    test_norms();
    test_attention();
    test_elementwise();
    test_contracts();
    ok(backend_status(gpu) == SD_OK, "no sticky error left");
    diag("device memory peak %.1f MiB; %.1f s", gpu->ops->mem_peak(gpu) / 1048576.0, (sd_now_ms() - t0) / 1e3);
    backend_destroy(gpu);
    backend_destroy(cpu);
    return done_testing();
}
