/* test_gpu_golden.c — the golden tiny model (tests/data/tiny-sdxl-a, docs/sdxl.md §9)
 * through every stage on the CUDA backend: both text encoders from the golden token ids,
 * the UNet, the ᾱ table, the 4-step sampler with the golden noises, the decode of its
 * result to the final image, and the VAE encoder and decoder on their own.  The same
 * model-level calls as tests/test_golden.c (the CPU version), with the inputs uploaded
 * into the activation arena and the outputs downloaded for comparison.
 *
 * Run twice: with TF32 GEMM/convolutions (the default) every stage must be within 2e-2
 * of the reference (max |gpu − ref| / max |ref|, docs/conformance.md's measure), and with
 * TF32 off within 1e-3 (the CPU gets 1e-4; the GPU's fp32 sums run in another order).
 * Also checks that a second UNet pass reuses the activation arena and allocates no
 * device memory (nothing is allocated in the step loop).
 *
 * Suite `gpu`; exits 77 (skip) without a usable GPU. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/clip.h"
#include "model/unet.h"
#include "model/vae.h"
#include "sample/sampler.h"

static struct st_file G;
static char dir[1024];
static double TOL, TOL_SAMPLER;
static const char *MODE;

static float *golden(const char *name, int64_t *numel) {
    const struct st_tensor *t = st_find(&G, name);
    if (!t) { printf("Bail out! golden tensor %s missing\n", name); exit(1); }
    float *d = malloc(sizeof(float) * (size_t)st_numel(t));
    st_read_f32(t, d);
    if (numel) *numel = st_numel(t);
    return d;
}

static size_t numel_of(const char *name) {
    const struct st_tensor *t = st_find(&G, name);
    if (!t) { printf("Bail out! golden tensor %s missing\n", name); exit(1); }
    return (size_t)st_numel(t);
}

static void check_host(const char *name, const float *got, double tol) {
    int64_t n;
    float *want = golden(name, &n);
    double e = rel_err(got, want, (size_t)n);
    ok(e < tol, "%s %s: rel err %.3g < %.0e", MODE, name, e, tol);
    free(want);
}

/* Download n floats of device memory and compare with a golden tensor. */
static void check_dev(struct backend *be, const char *name, const float *dev, double tol) {
    size_t n = numel_of(name);
    float *h = malloc(sizeof(float) * n);
    be->ops->download(be, h, dev, n * sizeof(float));
    if (!ok(backend_status(be) == SD_OK, "%s %s: downloaded", MODE, name)) be->err = SD_OK;
    check_host(name, h, tol);
    free(h);
}

/* A golden tensor uploaded into a fresh activation slice. */
static float *dev_golden(struct fwd *f, const char *name) {
    int64_t n;
    float *h = golden(name, &n);
    float *d = fwd_alloc(f, (size_t)n);
    if (d) f->be->ops->upload(f->be, d, h, (size_t)n * sizeof(float));
    free(h);
    return d;
}

static int *ids_of(const char *name) {
    int64_t n;
    float *f = golden(name, &n);
    int *ids = malloc(sizeof(int) * n);
    for (int64_t i = 0; i < n; i++) ids[i] = (int)f[i];
    free(f);
    return ids;
}

static char *part(const char *sub) {
    static char buf[4][1200];
    static int k;
    char *b = buf[k++ % 4];
    snprintf(b, 1200, "%s/%s", dir, sub);
    return b;
}

static void test_text(struct backend *be, struct arena *ar) {
    struct fwd f = { .be = be, .ar = ar };
    struct clip te1, te2;
    ok(clip_load(&te1, be, part("text_encoder"), 0, DT_F32) == SD_OK, "%s load text_encoder: %s", MODE, sd_last_error());
    ok(clip_load(&te2, be, part("text_encoder_2"), 1, DT_F32) == SD_OK, "%s load text_encoder_2", MODE);
    int P = 5, L = 77, D1 = te1.cfg.hidden, D2 = te2.cfg.hidden, Pd = te2.cfg.projection_dim;
    int *ids1 = ids_of("tok1_ids"), *ids2 = ids_of("tok2_ids");
    float *pen1 = fwd_alloc(&f, (size_t)P * L * D1), *last1 = fwd_alloc(&f, (size_t)P * L * D1);
    float *pen2 = fwd_alloc(&f, (size_t)P * L * D2), *pool = fwd_alloc(&f, (size_t)P * Pd);
    double t0 = sd_now_ms();
    clip_forward(&f, &te1, ids1, P, L, pen1, last1, NULL);
    clip_forward(&f, &te2, ids2, P, L, pen2, NULL, pool);
    be->ops->sync(be);
    ok(backend_status(be) == SD_OK, "%s text encoders ran (%.1f ms): %s", MODE, sd_now_ms() - t0,
       be->err ? sd_last_error() : "");
    check_dev(be, "te1_penultimate", pen1, TOL);
    check_dev(be, "te1_last", last1, TOL);
    check_dev(be, "te2_penultimate", pen2, TOL);
    check_dev(be, "te2_text_embeds", pool, TOL);
    be->err = SD_OK;
    arena_reset(ar, 0);
    free(ids1); free(ids2);
    clip_free(&te1);
    clip_free(&te2);
}

void noise_fn(void *ud, int step, float *host, size_t cnt);

static void test_unet_and_sampler(struct backend *be, struct arena *ar) {
    struct fwd f = { .be = be, .ar = ar };
    struct unet u;
    ok(unet_load(&u, be, part("unet"), NULL, DT_F32) == SD_OK, "%s load unet: %s", MODE, sd_last_error());
    const struct st_tensor *tx = st_find(&G, "unet_x");
    int N = (int)tx->shape[0], C = (int)tx->shape[1], h = (int)tx->shape[2], w = (int)tx->shape[3];
    size_t nl = (size_t)N * C * h * w;
    float *t = golden("unet_t", NULL), *tid = golden("time_ids", NULL);   /* host arrays */
    float *x = dev_golden(&f, "unet_x"), *ctx = dev_golden(&f, "prompt_embeds");
    float *pooled = dev_golden(&f, "pooled_embeds"), *out = fwd_alloc(&f, nl);
    uint64_t mk = arena_mark(ar);
    double t0 = sd_now_ms();
    unet_forward(&f, &u, out, x, t, ctx, pooled, tid, N, h, w, 77);
    be->ops->sync(be);
    ok(backend_status(be) == SD_OK, "%s unet ran (%.1f ms, first pass)", MODE, sd_now_ms() - t0);
    check_dev(be, "unet_out", out, TOL);

    /* second pass: same arena slices, no device allocation */
    arena_reset(ar, mk);
    size_t peak = ar->peak, mem = be->ops->mem_in_use(be);
    int nblocks = ar->nblocks;
    be->ops->zero(be, out, nl * sizeof(float));
    t0 = sd_now_ms();
    unet_forward(&f, &u, out, x, t, ctx, pooled, tid, N, h, w, 77);
    be->ops->sync(be);
    double ms = sd_now_ms() - t0;
    ok(ar->nblocks == nblocks && ar->peak == peak, "%s second unet pass stays inside the arena (peak %zu bytes)", MODE, peak);
    ok(be->ops->mem_in_use(be) == mem, "%s second unet pass allocates no device memory (%zu bytes held, %.1f ms)", MODE,
       mem, ms);
    check_dev(be, "unet_out", out, TOL);
    arena_reset(ar, 0);

    /* the schedule (host math, same on every backend) */
    struct sched_config sc;
    struct schedule s;
    ok(sched_config_load(&sc, part("scheduler/scheduler_config.json")) == SD_OK, "%s scheduler config", MODE);
    ok(schedule_init(&s, &sc) == SD_OK, "%s schedule", MODE);

    /* the 4-step sampler with the golden noises: prompts 0-1, same time_ids */
    float *nz[3];
    for (int k = 0; k < 3; k++) { char nm[32]; snprintf(nm, sizeof nm, "sample_noise_%d", k); nz[k] = golden(nm, NULL); }
    float *eps[4], *den[4];
    for (int k = 0; k < 4; k++) { eps[k] = malloc(sizeof(float) * nl); den[k] = malloc(sizeof(float) * nl); }
    int ts[4] = { 999, 749, 499, 249 };
    struct noise_src { float **nz; } src = { nz };
    ctx = dev_golden(&f, "prompt_embeds");
    pooled = dev_golden(&f, "pooled_embeds");
    float *xs = dev_golden(&f, "sample_init");
    struct sampler_job j = { .unet = &u, .sched = &s, .ctx = ctx, .pooled = pooled, .time_ids = tid,
                             .N = N, .h = h, .w = w, .Lk = 77, .nsteps = 4, .timesteps = ts,
                             .noise = noise_fn, .noise_ud = &src, .trace_eps = eps, .trace_denoised = den };
    ok(sampler_run(&f, &j, xs) == SD_OK, "%s sampler ran: %s", MODE, be->err ? sd_last_error() : "");
    for (int k = 0; k < 4; k++) {
        char nm[32];
        snprintf(nm, sizeof nm, "sample_eps_%d", k); check_host(nm, eps[k], TOL_SAMPLER);
        snprintf(nm, sizeof nm, "sample_denoised_%d", k); check_host(nm, den[k], TOL_SAMPLER);
    }
    check_dev(be, "sample_final_latent", xs, TOL_SAMPLER);

    /* decode the final latent as the pipeline does: / scaling_factor, VAE, *0.5+0.5, clamp */
    struct vae v;
    ok(vae_load(&v, be, part("vae"), DT_F32) == SD_OK, "%s load vae: %s", MODE, sd_last_error());
    int S = vae_scale(&v);
    size_t ni = (size_t)N * 3 * h * S * w * S;
    float *img = fwd_alloc(&f, ni), *himg = malloc(sizeof(float) * ni);
    be->ops->axpby(be, xs, 1.0f / v.cfg.scaling_factor, xs, 0.0f, NULL, (long long)nl);
    vae_decode(&f, &v, img, xs, N, h, w);
    be->ops->download(be, himg, img, ni * sizeof(float));
    ok(backend_status(be) == SD_OK, "%s decode ran", MODE);
    for (size_t i = 0; i < ni; i++) {
        float q = himg[i] * 0.5f + 0.5f;
        himg[i] = q < 0 ? 0 : q > 1 ? 1 : q;
    }
    check_host("sample_image", himg, TOL_SAMPLER);
    arena_reset(ar, 0);

    /* VAE stages */
    const struct st_tensor *te = st_find(&G, "vae_enc_in"), *td = st_find(&G, "vae_dec_in");
    float *ein = dev_golden(&f, "vae_enc_in"), *din = dev_golden(&f, "vae_dec_in");
    float *mean = fwd_alloc(&f, numel_of("vae_enc_mean")), *dout = fwd_alloc(&f, numel_of("vae_dec_out"));
    vae_encode(&f, &v, mean, ein, (int)te->shape[0], (int)te->shape[2], (int)te->shape[3]);
    vae_decode(&f, &v, dout, din, (int)td->shape[0], (int)td->shape[2], (int)td->shape[3]);
    be->ops->sync(be);
    ok(backend_status(be) == SD_OK, "%s vae ran", MODE);
    check_dev(be, "vae_enc_mean", mean, TOL);
    check_dev(be, "vae_dec_out", dout, TOL);
    arena_reset(ar, 0);

    for (int k = 0; k < 4; k++) { free(eps[k]); free(den[k]); }
    for (int k = 0; k < 3; k++) free(nz[k]);
    free(himg); free(t); free(tid);
    schedule_free(&s);
    vae_free(&v);
    unet_free(&u);
}

void noise_fn(void *ud, int step, float *host, size_t cnt) {
    float **nz = *(float ***)ud;
    memcpy(host, nz[step], cnt * sizeof(float));
}

int main(void) {
    const char *data = getenv("SDXLD_TEST_DATA");
    snprintf(dir, sizeof dir, "%s/tiny-sdxl-a", data ? data : "tests/data");
    char gpath[1200];
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", dir);
    struct backend *be;
    if (backend_create(&be, "cuda", 0)) {
        printf("1..0 # SKIP no CUDA backend: %s\n", sd_last_error());
        return 77;
    }
    if (st_open(&G, gpath)) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    struct arena ar;
    struct arena_allocator al = backend_allocator(be);
    arena_init(&ar, "acts", &al, 1);
    for (int tf32 = 1; tf32 >= 0; tf32--) {
        backend_cuda_set_tf32(be, tf32);
        MODE = tf32 ? "[tf32]" : "[fp32]";
        TOL = tf32 ? 2e-2 : 1e-3;
        TOL_SAMPLER = tf32 ? 2e-2 : 2e-3;
        test_text(be, &ar);
        test_unet_and_sampler(be, &ar);
    }
    size_t held = be->ops->mem_in_use(be), cap = arena_capacity(&ar);
    arena_free(&ar);
    ok(be->ops->mem_in_use(be) == held - cap, "freeing the arena returns its %zu bytes to the device", cap);
    diag("device memory peak %.1f MiB", be->ops->mem_peak(be) / 1048576.0);
    backend_destroy(be);
    st_close(&G);
    ok(sd_alloc_live_bytes() == 0, "every sd_malloc freed (%zu bytes live)", sd_alloc_live_bytes());
    return done_testing();
}
