/* test_gpu_backward.c — every training op of the CUDA backend (backward ops, dot, AdamW)
 * against the CPU backend, whose backward ops pass central finite differences
 * (tests/test_backward_ops.c), on random inputs at toy and UNet sizes.  (The whole UNet
 * backward on the GPU against the golden gradients is tests/gpu/run.sh's
 * `sdxld unet --backward --backend cuda` step.)
 *
 * `=` outputs start as NaN (unwritten elements fail); `+=` outputs start equal on both
 * backends, so accumulation is checked too.  Suite `gpu`; exit 77 without a GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "gpu/gpu_util.h"


static void test_linear(int R_, int I, int O) {
    float *x = rnd((size_t)R_ * I), *w = rnd((size_t)O * I), *dy = rnd((size_t)R_ * O);
    float *dw0 = rnd((size_t)O * I), *db0 = rnd(O), *dx = malloc(sizeof(float) * R_ * I);
    float *dwc = malloc(sizeof(float) * O * I), *dbc = malloc(sizeof(float) * O);
    memcpy(dwc, dw0, sizeof(float) * O * I);
    memcpy(dbc, db0, sizeof(float) * O);
    float *gx = dev(x, (size_t)R_ * I), *gw = dev(w, (size_t)O * I), *gdy = dev(dy, (size_t)R_ * O);
    float *gdx = dev_nan((size_t)R_ * I), *gdw = dev(dw0, (size_t)O * I), *gdb = dev(db0, O);
    cpu->ops->linear_backward(cpu, dx, dwc, dbc, dy, x, w, R_, I, O);
    gpu->ops->linear_backward(gpu, gdx, gdw, gdb, gdy, gx, gw, R_, I, O);
    char n[96];
    snprintf(n, sizeof n, "linear_backward %dx%d->%d dinp", R_, I, O);
    check(n, gdx, dx, (size_t)R_ * I, 3e-4);
    check("  ... dw (+=)", gdw, dwc, (size_t)O * I, 3e-4);
    check("  ... db (+=)", gdb, dbc, O, 1e-5);
    dfree(gx); dfree(gw); dfree(gdy); dfree(gdx); dfree(gdw); dfree(gdb);
    free(x); free(w); free(dy); free(dw0); free(db0); free(dx); free(dwc); free(dbc);
}

static void test_conv(int N, int C, int H, int W, int K, int k, int s, int pt, int pl, int pb, int pr) {
    int Ho = (H + pt + pb - k) / s + 1, Wo = (W + pl + pr - k) / s + 1;
    size_t nx = (size_t)N * C * H * W, nw = (size_t)K * C * k * k, ny = (size_t)N * K * Ho * Wo;
    float *x = rnd(nx), *w = rnd(nw), *dy = rnd(ny), *dw = rnd(nw), *db = rnd(K), *dx = malloc(sizeof(float) * nx);
    float *gx = dev(x, nx), *gw = dev(w, nw), *gdy = dev(dy, ny), *gdx = dev_nan(nx), *gdw = dev(dw, nw), *gdb = dev(db, K);
    cpu->ops->conv2d_backward(cpu, dx, dw, db, dy, x, w, N, C, H, W, K, k, k, s, pt, pl, pb, pr);
    gpu->ops->conv2d_backward(gpu, gdx, gdw, gdb, gdy, gx, gw, N, C, H, W, K, k, k, s, pt, pl, pb, pr);
    char n[128];
    snprintf(n, sizeof n, "conv2d_backward N%d C%d %dx%d K%d k%d s%d pad %d,%d,%d,%d dinp", N, C, H, W, K, k, s, pt, pl, pb, pr);
    check(n, gdx, dx, nx, 3e-4);
    check("  ... dw (+=)", gdw, dw, nw, 3e-4);
    check("  ... db (+=)", gdb, db, K, 1e-5);
    dfree(gx); dfree(gw); dfree(gdy); dfree(gdx); dfree(gdw); dfree(gdb);
    free(x); free(w); free(dy); free(dw); free(db); free(dx);
}

static void test_norms(void) {
    int cases[][4] = { { 2, 64, 256, 32 }, { 1, 320, 4096, 32 }, { 2, 8, 10, 8 } };
    for (int c = 0; c < 3; c++)
        for (int silu = 0; silu < 2; silu++) {
            int N = cases[c][0], C = cases[c][1], HW = cases[c][2], G = cases[c][3];
            size_t n = (size_t)N * C * HW;
            float *x = rnd(n), *dy = rnd(n), *w = rnd(C), *b = rnd(C), *dw = rnd(C), *db = rnd(C), *dx = malloc(sizeof(float) * n);
            for (size_t i = 0; i < n; i++) x[i] = 3 * x[i] + 2;
            float *gx = dev(x, n), *gdy = dev(dy, n), *gw = dev(w, C), *gb = dev(b, C), *gdw = dev(dw, C), *gdb = dev(db, C);
            cpu->ops->group_norm_backward(cpu, dx, dw, db, dy, x, w, b, N, C, HW, G, 1e-5f, silu);
            gpu->ops->group_norm_backward(gpu, gdy, gdw, gdb, gdy, gx, gw, gb, N, C, HW, G, 1e-5f, silu);   /* in place */
            char nm[96];
            snprintf(nm, sizeof nm, "group_norm_backward N%d C%d HW%d G%d silu%d (in place)", N, C, HW, G, silu);
            check(nm, gdy, dx, n, 1e-5);
            check("  ... dw", gdw, dw, C, 1e-5);
            check("  ... db", gdb, db, C, 1e-5);
            dfree(gx); dfree(gdy); dfree(gw); dfree(gb); dfree(gdw); dfree(gdb);
            free(x); free(dy); free(w); free(b); free(dw); free(db); free(dx);
        }
    int lc[][2] = { { 4096, 320 }, { 154, 1280 }, { 3, 33 } };
    for (int c = 0; c < 3; c++) {
        int Rr = lc[c][0], C = lc[c][1];
        size_t n = (size_t)Rr * C;
        float *x = rnd(n), *dy = rnd(n), *w = rnd(C), *dw = rnd(C), *db = rnd(C), *dx = malloc(sizeof(float) * n);
        float *gx = dev(x, n), *gdy = dev(dy, n), *gw = dev(w, C), *gdx = dev_nan(n), *gdw = dev(dw, C), *gdb = dev(db, C);
        cpu->ops->layer_norm_backward(cpu, dx, dw, db, dy, x, w, Rr, C, 1e-5f);
        gpu->ops->layer_norm_backward(gpu, gdx, gdw, gdb, gdy, gx, gw, Rr, C, 1e-5f);
        char nm[64];
        snprintf(nm, sizeof nm, "layer_norm_backward %dx%d", Rr, C);
        check(nm, gdx, dx, n, 1e-5);
        check("  ... dw", gdw, dw, C, 1e-5);
        check("  ... db", gdb, db, C, 1e-5);
        dfree(gx); dfree(gdy); dfree(gw); dfree(gdx); dfree(gdw); dfree(gdb);
        free(x); free(dy); free(w); free(dw); free(db); free(dx);
    }
}

static void test_attention(int N, int H, int Lq, int Lk, int D, int causal) {
    int ld = H * D;
    size_t nq = (size_t)N * Lq * ld, nk = (size_t)N * Lk * ld;
    float *q = rnd(nq), *k = rnd(nk), *v = rnd(nk), *dout = rnd(nq);
    float *dq = malloc(sizeof(float) * nq), *dk = malloc(sizeof(float) * nk), *dv = malloc(sizeof(float) * nk);
    float *gq = dev(q, nq), *gk = dev(k, nk), *gv = dev(v, nk), *gdo = dev(dout, nq);
    float *gdq = dev_nan(nq), *gdk = dev_nan(nk), *gdv = dev_nan(nk);
    float scale = 1.0f / sqrtf((float)D);
    cpu->ops->attention_backward(cpu, dq, dk, dv, dout, q, k, v, N, H, Lq, Lk, D, ld, ld, ld, ld, scale, causal);
    gpu->ops->attention_backward(gpu, gdq, gdk, gdv, gdo, gq, gk, gv, N, H, Lq, Lk, D, ld, ld, ld, ld, scale, causal);
    char nm[96];
    snprintf(nm, sizeof nm, "attention_backward N%d H%d Lq%d Lk%d D%d causal%d dq", N, H, Lq, Lk, D, causal);
    check(nm, gdq, dq, nq, 1e-5);
    check("  ... dk", gdk, dk, nk, 1e-5);
    check("  ... dv", gdv, dv, nk, 1e-5);
    dfree(gq); dfree(gk); dfree(gv); dfree(gdo); dfree(gdq); dfree(gdk); dfree(gdv);
    free(q); free(k); free(v); free(dout); free(dq); free(dk); free(dv);
}

static void test_elementwise(void) {
    size_t n = 100000;
    float *x = rnd(n), *dy = rnd(n), *o = malloc(sizeof(float) * n);
    float *gx = dev(x, n), *gdy = dev(dy, n), *go = dev_nan(n);
    for (int k = 0; k < 3; k++) {
        cpu->ops->act_backward(cpu, o, dy, x, (long long)n, (enum act_kind)k);
        gpu->ops->act_backward(gpu, go, gdy, gx, (long long)n, (enum act_kind)k);
        check(k == 0 ? "act_backward silu" : k == 1 ? "act_backward gelu" : "act_backward quick_gelu", go, o, n, 1e-6);
    }
    {   /* GEGLU: R rows of 2C from C */
        int Rr = 154, C = 640;
        float *in = rnd((size_t)Rr * 2 * C), *dyy = rnd((size_t)Rr * C), *di = malloc(sizeof(float) * Rr * 2 * C);
        float *gin = dev(in, (size_t)Rr * 2 * C), *gdyy = dev(dyy, (size_t)Rr * C), *gdi = dev_nan((size_t)Rr * 2 * C);
        cpu->ops->geglu_backward(cpu, di, dyy, in, Rr, C);
        gpu->ops->geglu_backward(gpu, gdi, gdyy, gin, Rr, C);
        check("geglu_backward", gdi, di, (size_t)Rr * 2 * C, 1e-6);
        dfree(gin); dfree(gdyy); dfree(gdi); free(in); free(dyy); free(di);
    }
    {
        int N = 2, C = 320, H = 32, W = 32;
        size_t ni = (size_t)N * C * H * W, no = ni * 4;
        float *d2 = rnd(no), *di = malloc(sizeof(float) * ni), *gd2 = dev(d2, no), *gdi = dev_nan(ni);
        cpu->ops->upsample2x_backward(cpu, di, d2, N, C, H, W);
        gpu->ops->upsample2x_backward(gpu, gdi, gd2, N, C, H, W);
        check("upsample2x_backward", gdi, di, ni, 1e-6);
        float *cs = malloc(sizeof(float) * N * C), *gcs = dev_nan((size_t)N * C);
        cpu->ops->channel_sum(cpu, cs, d2, N, C, 4 * H * W);
        gpu->ops->channel_sum(gpu, gcs, gd2, N, C, 4 * H * W);
        check("channel_sum", gcs, cs, (size_t)N * C, 1e-6);
        float *a = malloc(sizeof(float) * N * 100 * H * W), *b = malloc(sizeof(float) * N * 220 * H * W);
        float *ga = dev_nan((size_t)N * 100 * H * W), *gb = dev_nan((size_t)N * 220 * H * W);
        cpu->ops->split_channels(cpu, a, 100, b, 220, d2, N, H * W);
        gpu->ops->split_channels(gpu, ga, 100, gb, 220, gd2, N, H * W);
        check("split_channels a", ga, a, (size_t)N * 100 * H * W, 1e-7);
        check("split_channels b", gb, b, (size_t)N * 220 * H * W, 1e-7);
        dfree(gd2); dfree(gdi); dfree(gcs); dfree(ga); dfree(gb); free(d2); free(di); free(cs); free(a); free(b);
    }
    {
        int V = 1000, D = 64, cnt = 77;
        int ids[77];
        for (int i = 0; i < cnt; i++) ids[i] = (i * 37) % 50;   /* repeats */
        float *t = rnd((size_t)V * D), *d = rnd((size_t)cnt * D), *gt = dev(t, (size_t)V * D), *gd = dev(d, (size_t)cnt * D);
        cpu->ops->embedding_backward(cpu, t, d, ids, cnt, D);
        gpu->ops->embedding_backward(gpu, gt, gd, ids, cnt, D);
        check("embedding_backward (+=, repeated ids)", gt, t, (size_t)V * D, 1e-6);
        dfree(gt); dfree(gd); free(t); free(d);
    }
    {
        double dc = cpu->ops->dot(cpu, x, dy, (long long)n), dg = gpu->ops->dot(gpu, gx, gdy, (long long)n);
        ok(fabs(dc - dg) <= 1e-9 * fabs(dc) + 1e-9, "dot: %.12g vs cpu %.12g", dg, dc);
    }
    {
        float *p = rnd(n), *g = rnd(n), *m = rnd(n), *v = rnd(n);
        for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        float *gp = dev(p, n), *gg = dev(g, n), *gm = dev(m, n), *gv = dev(v, n);
        cpu->ops->adamw(cpu, p, g, m, v, (long long)n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 7);
        gpu->ops->adamw(gpu, gp, gg, gm, gv, (long long)n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 7);
        check("adamw params", gp, p, n, 1e-6);
        check("adamw m", gm, m, n, 1e-6);
        check("adamw v", gv, v, n, 1e-6);
        gpu->ops->adamw(gpu, gp, gg, gm, gv, (long long)n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0);
        ok(backend_status(gpu) == SD_ERR_INVALID, "adamw step 0 refused: %s", sd_last_error());
        gpu->err = SD_OK;
        dfree(gp); dfree(gg); dfree(gm); dfree(gv); free(p); free(g); free(m); free(v);
    }
    dfree(gx); dfree(gdy); dfree(go); free(x); free(dy); free(o);
}

int main(void) {
    sd_rng_init(&R, 112611);
    if (backend_create(&gpu, "cuda", 0) != SD_OK) {
        printf("1..0 # SKIP no CUDA backend: %s\n", sd_last_error());
        return 77;
    }
    if (backend_create(&cpu, "cpu", 0) != SD_OK) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    double t0 = sd_now_ms();
    test_linear(37, 45, 29);
    test_linear(4096, 320, 2560);
    test_conv(2, 8, 9, 11, 6, 3, 1, 1, 1, 1, 1);
    test_conv(2, 64, 32, 32, 64, 3, 1, 1, 1, 1, 1);
    test_conv(2, 32, 16, 16, 48, 1, 1, 0, 0, 0, 0);
    test_conv(1, 16, 17, 17, 16, 3, 2, 1, 1, 1, 1);
    test_conv(1, 16, 16, 16, 16, 3, 2, 0, 0, 1, 1);     /* the VAE encoder's right/bottom padding */
    test_norms();
    test_attention(2, 3, 7, 9, 8, 0);
    test_attention(1, 2, 33, 33, 64, 1);
    test_attention(2, 10, 1024, 77, 64, 0);              /* cross-attention */
    test_attention(1, 5, 4096, 4096, 64, 0);             /* SDXL level-1 self-attention */
    test_elementwise();
    gpu->ops->attention_backward(gpu, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 1, 1, 60000, 64, 64, 64, 64, 64,
                                 1.0f, 0);
    ok(backend_status(gpu) == SD_ERR_UNSUPPORTED, "attention_backward over 60000 keys is refused: %s", sd_last_error());
    gpu->err = SD_OK;
    ok(backend_status(gpu) == SD_OK, "no sticky error left");
    diag("%.1f s", (sd_now_ms() - t0) / 1e3);
    backend_destroy(gpu);
    backend_destroy(cpu);
    return done_testing();
}
