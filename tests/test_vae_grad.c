/* test_vae_grad.c — the VAE encoder and decoder backward against central finite
 * differences on a small random VAE (two levels, mid attention), in double-checked fp32:
 * input gradients and a sample of parameter gradients of L = Σ out ⊙ R. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "core/rng.h"
#include "model/vae.h"

static struct backend *be;
static struct arena ar;
static struct vae M, Gr;
static int N = 2, H = 8, W = 8;

static double loss(int enc, const float *in, const float *R, size_t nout) {
    struct fwd f = { .be = be, .ar = &ar };
    float *out = malloc(sizeof(float) * nout);
    if (enc) vae_encode_moments(&f, &M, NULL, out, in, N, H, W);
    else vae_decode(&f, &M, out, in, N, H / 2, W / 2);
    double s = 0;
    for (size_t i = 0; i < nout; i++) s += (double)out[i] * R[i];
    free(out);
    arena_reset(&ar, 0);
    return s;
}

/* max |fd - analytic| / max |analytic| over the sampled elements of p */
static double check(int enc, float *p, const float *grad, size_t n, const float *in, const float *R, size_t nout) {
    double md = 0, mg = 0;
    for (size_t k = 0; k < 24 && k < n; k++) {
        size_t i = (k * 7919) % n;
        float old = p[i], h = 1e-2f;
        p[i] = old + h; double lp = loss(enc, in, R, nout);
        p[i] = old - h; double lm = loss(enc, in, R, nout);
        p[i] = old;
        double fd = (lp - lm) / (2 * h);
        if (fabs(fd - grad[i]) > md) md = fabs(fd - grad[i]);
        if (fabs(grad[i]) > mg) mg = fabs(grad[i]);
    }
    return md / (mg > 1e-3 ? mg : 1e-3);   /* floor: some gradients are exactly 0 (key bias) */
}

static void run(int enc) {
    struct fwd f = { .be = be, .ar = &ar };
    struct sd_rng r;
    sd_rng_init(&r, 5 + enc);
    int L = M.cfg.latent_ch;
    size_t nin = enc ? (size_t)N * 3 * H * W : (size_t)N * L * (H / 2) * (W / 2);
    size_t nout = enc ? (size_t)N * 2 * L * (H / 2) * (W / 2) : (size_t)N * 3 * H * W;
    float *in = malloc(sizeof(float) * nin), *R = malloc(sizeof(float) * nout), *din = malloc(sizeof(float) * nin);
    float *out = malloc(sizeof(float) * nout);
    sd_rng_normal(&r, in, nin);
    sd_rng_normal(&r, R, nout);
    for (int i = 0; i < Gr.params.nblocks; i++) memset(Gr.params.blocks[i].base, 0, Gr.params.blocks[i].cap);
    struct vae_tape tp;
    if (enc) vae_encode_moments(&f, &M, &tp, out, in, N, H, W);
    else vae_decode_t(&f, &M, &tp, out, in, N, H / 2, W / 2);
    vae_backward(&f, &M, &Gr, &tp, R, din);
    ok(backend_status(be) == SD_OK, "%s backward ran", enc ? "encoder" : "decoder");
    arena_reset(&ar, 0);
    double e = check(enc, in, din, nin, in, R, nout);
    ok(e < 2e-2, "%s: input gradient vs finite differences: %.2g", enc ? "encoder" : "decoder", e);
    /* a sample of parameters across the chain */
    int checked = 0;
    double worst = 0;
    for (int i = 0; i < M.wt.n; i++) {
        const char *nm = M.wt.rows[i].name;
        if (strncmp(nm, enc ? "encoder." : "decoder.", 8) && strcmp(nm, enc ? "quant_conv.weight" : "post_quant_conv.weight")) continue;
        size_t n = (size_t)sd_numel(M.wt.rows[i].ndim, M.wt.rows[i].shape);
        if (strstr(nm, "to_k.bias")) {   /* softmax ignores a per-query constant: exactly zero */
            float mx = 0;
            for (size_t k = 0; k < n; k++) mx = fmaxf(mx, fabsf((*Gr.wt.rows[i].dst)[k]));
            ok(mx < 1e-4, "%s gradient is zero (%.2g)", nm, mx);
            continue;
        }
        if (i % 5) continue;
        double pe = check(enc, *M.wt.rows[i].dst, *Gr.wt.rows[i].dst, n, in, R, nout);
        if (pe > worst) worst = pe;
        if (pe >= 2e-2) diag("%s: %.3g", nm, pe);
        checked++;
    }
    ok(checked > 8 && worst < 2e-2, "%s: %d parameter gradients vs finite differences, worst %.2g", enc ? "encoder" : "decoder",
       checked, worst);
    free(in); free(R); free(din); free(out);
}

int main(void) {
    backend_create(&be, "cpu", 2);
    struct arena_allocator al = backend_allocator(be);
    arena_init(&ar, "acts", &al, 1);
    struct vae_config c = { .in_ch = 3, .out_ch = 3, .latent_ch = 4, .nlevels = 2, .layers_per_block = 1,
                            .groups = 4, .ch = { 8, 16 }, .mid_attn = 1, .quant_conv = 1, .post_quant_conv = 1,
                            .scaling_factor = 0.13f, .sample_size = 8 };
    ok(vae_create(&M, be, &c) == SD_OK && vae_create(&Gr, be, &c) == SD_OK, "small vae");
    wt_init_random(&M.wt, be, 11);
    /* perturb norms and biases away from (1, 0) so their gradients are exercised */
    struct sd_rng r;
    sd_rng_init(&r, 3);
    for (int i = 0; i < M.wt.n; i++)
        if (M.wt.rows[i].init != WT_INIT_NORMAL) {
            size_t n = (size_t)sd_numel(M.wt.rows[i].ndim, M.wt.rows[i].shape);
            float *p = *M.wt.rows[i].dst, z[1024];
            sd_rng_normal(&r, z, n);
            for (size_t k = 0; k < n; k++) p[k] += 0.3f * z[k];
        }
    run(1);
    run(0);
    vae_free(&M);
    vae_free(&Gr);
    arena_free(&ar);
    backend_destroy(be);
    return done_testing();
}
