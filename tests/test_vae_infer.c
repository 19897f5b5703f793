/* test_vae_infer.c — the VAE's inference chain (model/vae.c: two buffers, resnets in
 * place, upsampling convs in row bands) against the training chain, which keeps every
 * step's output and runs each step as written (resnet_forward, upsample then conv):
 * decode and encode must give the same bits (banded: the same up to the rounding of a
 * GEMM over fewer columns), and the decode's activation memory must be the largest tensor,
 * one resnet temporary (its convs run in place, a band at a time) and little more. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "backend/backend.h"
#include "core/arena.h"
#include "core/rng.h"
#include "model/vae.h"

static struct backend *be;
static struct arena ar;

static size_t decode_peak(struct vae *m, size_t band_bytes, float *img, const float *z, int N, int h, int w) {
    struct fwd f = { .be = be, .ar = &ar };
    arena_reset(&ar, 0);
    ar.peak = 0;
    m->band_bytes = band_bytes;
    vae_decode(&f, m, img, z, N, h, w);
    return ar.peak;
}

int main(void) {
    backend_create(&be, "cpu", 2);
    struct arena_allocator al = backend_allocator(be);
    arena_init(&ar, "acts", &al, 1);
    /* three levels: two upsampling steps, resnets with and without a shortcut (32 -> 16
     * -> 8 channels on the way up), mid attention */
    struct vae_config c = { .in_ch = 3, .out_ch = 3, .latent_ch = 4, .nlevels = 3, .layers_per_block = 1,
                            .groups = 4, .ch = { 8, 16, 32 }, .mid_attn = 1, .quant_conv = 1, .post_quant_conv = 1,
                            .scaling_factor = 0.13f, .sample_size = 8 };
    struct vae m;
    if (!ok(vae_create(&m, be, &c) == SD_OK, "a small three-level VAE")) return done_testing();
    wt_init_random(&m.wt, be, 5);
    const int N = 2, h = 6, w = 10, s = vae_scale(&m), H = h * s, W = w * s;
    size_t nz = (size_t)N * c.latent_ch * h * w, ni = (size_t)N * 3 * H * W;
    float *z = malloc(nz * sizeof(float)), *ref = malloc(ni * sizeof(float)), *img = malloc(ni * sizeof(float));
    struct sd_rng r;
    sd_rng_init(&r, 17);
    sd_rng_normal(&r, z, nz);

    struct vae_tape *tp = malloc(sizeof *tp);
    struct fwd f = { .be = be, .ar = &ar };
    vae_decode_t(&f, &m, tp, ref, z, N, h, w);   /* the training chain */
    ok(backend_status(be) == SD_OK && tp->n > 10, "the training chain decodes (%d steps)", tp->n);
    size_t peak = 0;
    const size_t bands[] = { 0, 1, 4096, 1u << 30 };   /* default, 2-row bands, a few rows, unbanded */
    for (int i = 0; i < 4; i++) {
        size_t p = decode_peak(&m, bands[i], img, z, N, h, w);
        double worst = 0, top = 0;
        for (size_t q = 0; q < ni; q++) {
            double d = fabs((double)img[q] - ref[q]);
            worst = d > worst ? d : worst;
            top = fabs(ref[q]) > top ? fabs(ref[q]) : top;
        }
        if (i == 0 || i == 3)   /* this image is unbanded by default */
            ok(backend_status(be) == SD_OK && worst == 0, "inference decode (band bytes %zu, unbanded) gives the "
               "training chain's bits", bands[i]);
        else   /* a band's conv is a GEMM over fewer columns: its sums may round differently */
            ok(backend_status(be) == SD_OK && worst <= 1e-5 * top, "inference decode in bands (band bytes %zu) "
               "within 1e-5 of the largest pixel (%.2g of %.2g)", bands[i], worst, top);
        if (i == 1) peak = p;
    }
    /* the largest tensor: the second upsampling conv's output, 16 channels at H × W, in one
     * buffer; the other holds at most the 16 -> 8 resnet's one temporary after it (8
     * channels at H × W: its convs run in place, a band at a time); beside the two buffers,
     * the mid attention's 3 temporaries at the latent's size and two-row bands */
    size_t big = (size_t)N * 16 * H * W * 4, tmp = big / 2, attn = 3 * (size_t)N * 32 * h * w * 4, band = 64 * 1024;
    ok(peak <= big + tmp + attn + band, "the decode's activation peak is the largest tensor and one resnet "
       "temporary: %zu bytes <= %zu (the largest tensor %zu)", peak, big + tmp + attn + band, big);

    size_t nm = (size_t)N * 2 * c.latent_ch * h * w;
    float *mom_t = malloc(nm * sizeof(float)), *mom = malloc(nm * sizeof(float));
    arena_reset(&ar, 0);
    vae_encode_moments(&f, &m, tp, mom_t, ref, N, H, W);
    arena_reset(&ar, 0);
    vae_encode_moments(&f, &m, NULL, mom, ref, N, H, W);
    ok(backend_status(be) == SD_OK && !memcmp(mom, mom_t, nm * sizeof(float)),
       "inference encode gives the training chain's bits");

    free(mom_t); free(mom); free(tp); free(z); free(ref); free(img);
    vae_free(&m);
    arena_free(&ar);
    backend_destroy(be);
    return done_testing();
}
