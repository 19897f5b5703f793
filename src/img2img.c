/* img2img.c — img2img and inpainting for engine_generate (see img2img.h).  The latent
 * work here is per item and small next to a UNet pass, so it is done on the host: the
 * blend downloads the batch's latent, resets the kept latent pixels, and uploads it. */
#include <math.h>
#include <string.h>

#include "img2img.h"

int engine_img2img_start(const struct gen_params *p) {
    float s = p->strength;
    if (s == 0 || s == 1) return 0;   /* unset, or full strength: from noise */
    if (!(s > 0 && s < 1)) return -1;
    for (int k = 0; k < p->nsteps; k++)
        if ((double)p->timesteps[k] < (double)s * 1000.0) return k;
    return -1;
}

static sd_status check_items(const struct gen_params *p, const struct gen_item *items, int n, int *any) {
    *any = 0;
    for (int i = 0; i < n; i++) {
        if (items[i].mask && !items[i].init) return sd_fail(SD_ERR_INVALID, "mask: item %d has a mask but no init_image", i);
        if (items[i].init) *any = 1;
        else if (p->strength > 0 && p->strength < 1)
            return sd_fail(SD_ERR_INVALID, "init_image: item %d has none, and strength %g < 1 needs one", i,
                           (double)p->strength);
    }
    if (*any && p->sampler != GEN_SAMPLER_DMD2) return sd_fail(SD_ERR_INVALID, "init_image: the DMD2 sampler only");
    return SD_OK;
}

/* Encode the init images (packed, in item order) into ii->z0 × scaling_factor. */
static sd_status encode_inits(struct img2img *ii, struct fwd *f, const struct vae *vae, int W, int H) {
    int nin = 0;
    size_t npix = (size_t)W * H;
    for (int i = 0; i < ii->n; i++) nin += ii->items[i].init != NULL;
    float *img = sd_malloc(sizeof(float) * 3 * npix * nin), *mean = sd_malloc(sizeof(float) * ii->per * nin);
    sd_status st = img && mean ? SD_OK : SD_ERR_NOMEM;
    for (int i = 0, k = 0; !st && i < ii->n; i++) {   /* HWC bytes -> CHW in [-1, 1] */
        const uint8_t *src = ii->items[i].init;
        if (!src) continue;
        for (size_t q = 0; q < npix; q++)
            for (int c = 0; c < 3; c++) img[((size_t)k * 3 + c) * npix + q] = src[q * 3 + c] / 127.5f - 1.0f;
        k++;
    }
    uint64_t mk = arena_mark(f->ar);
    float *di = st ? NULL : fwd_alloc(f, 3 * npix * nin), *dm = st ? NULL : fwd_alloc(f, ii->per * nin);
    if (di && dm) {
        f->be->ops->upload(f->be, di, img, sizeof(float) * 3 * npix * nin);
        vae_encode(f, vae, dm, di, nin, H, W);
        if (!f->be->err) f->be->ops->download(f->be, mean, dm, sizeof(float) * ii->per * nin);
        st = backend_status(f->be);
    }
    arena_reset(f->ar, mk);
    for (int i = 0, k = 0; !st && i < ii->n; i++) {
        if (!ii->items[i].init) continue;
        for (size_t q = 0; q < ii->per; q++) ii->z0[i * ii->per + q] = mean[k * ii->per + q] * vae->cfg.scaling_factor;
        k++;
    }
    sd_free(img);
    sd_free(mean);
    return st;
}

/* keep [h, w]: a latent pixel is kept unless some pixel of its s × s block is repainted. */
static void latent_keep(const uint8_t *mask, int W, int h, int w, int s, uint8_t *keep) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int k = 1;
            for (int dy = 0; dy < s && k; dy++)
                for (int dx = 0; dx < s; dx++)
                    if (mask[(size_t)(y * s + dy) * W + x * s + dx] >= 128) { k = 0; break; }
            keep[(size_t)y * w + x] = (uint8_t)k;
        }
}

sd_status img2img_begin(struct img2img *ii, struct fwd *f, const struct vae *vae, const struct schedule *sched,
                        const struct gen_params *p, const struct gen_item *items, int n) {
    memset(ii, 0, sizeof *ii);
    SD_TRY(check_items(p, items, n, &ii->active));
    if (!ii->active) return SD_OK;
    ii->be = f->be;
    ii->sched = sched;
    ii->items = items;
    ii->n = n;
    ii->s = vae_scale(vae);
    ii->h = p->height / ii->s;
    ii->w = p->width / ii->s;
    ii->per = (size_t)vae->cfg.latent_ch * ii->h * ii->w;
    ii->start = engine_img2img_start(p);
    ii->t0 = p->timesteps[ii->start];
    ii->from_noise = p->strength == 0 || p->strength == 1;
    for (int i = 0; i < n; i++) ii->nmask += items[i].mask != NULL;
    ii->z0 = sd_calloc(ii->per * n, sizeof(float));
    ii->eps = sd_malloc(sizeof(float) * ii->per * n);
    ii->x = ii->nmask ? sd_malloc(sizeof(float) * ii->per * n) : NULL;
    ii->keep = ii->nmask ? sd_calloc((size_t)n * ii->h * ii->w, 1) : NULL;
    if (!ii->z0 || !ii->eps || (ii->nmask && (!ii->x || !ii->keep))) return SD_ERR_NOMEM;
    for (int i = 0; i < n; i++)
        if (items[i].mask) latent_keep(items[i].mask, p->width, ii->h, ii->w, ii->s, ii->keep + (size_t)i * ii->h * ii->w);
    return encode_inits(ii, f, vae, p->width, p->height);
}

/* x = √ᾱ_t·z0 + √(1−ᾱ_t)·ε for item i, at timestep t (t < 0: z0). */
static void noised(const struct img2img *ii, int i, int t, size_t q, float *out) {
    const float *z = ii->z0 + (size_t)i * ii->per, *e = ii->eps + (size_t)i * ii->per;
    if (t < 0) { *out = z[q]; return; }
    double a = ii->sched->alphas_cumprod[t];
    *out = (float)(sqrt(a) * z[q] + sqrt(1.0 - a) * e[q]);
}

void img2img_start(struct img2img *ii, float *x0) {
    if (!ii->active) return;
    memcpy(ii->eps, x0, sizeof(float) * ii->per * ii->n);
    if (ii->from_noise) return;   /* full strength: every item from its noise */
    for (int i = 0; i < ii->n; i++)
        for (size_t q = 0; ii->items[i].init && q < ii->per; q++) noised(ii, i, ii->t0, q, x0 + (size_t)i * ii->per + q);
}

void img2img_blend(void *ud, float *x, int t_next) {
    struct img2img *ii = ud;
    struct backend *be = ii->be;
    size_t hw = (size_t)ii->h * ii->w, bytes = sizeof(float) * ii->per * ii->n;
    if (!ii->nmask || be->err) return;
    be->ops->download(be, ii->x, x, bytes);
    for (int i = 0; i < ii->n; i++) {
        if (!ii->items[i].mask) continue;
        const uint8_t *keep = ii->keep + (size_t)i * hw;
        for (size_t q = 0; q < ii->per; q++)
            if (keep[q % hw]) noised(ii, i, t_next, q, ii->x + (size_t)i * ii->per + q);
    }
    be->ops->upload(be, x, ii->x, bytes);
}

int img2img_kept_latents(const struct img2img *ii, float *z) {
    int k = 0;
    for (int i = 0; i < ii->n; i++)
        if (ii->items[i].mask) memcpy(z + (size_t)k++ * ii->per, ii->z0 + (size_t)i * ii->per, sizeof(float) * ii->per);
    return k;
}

void img2img_composite(const struct img2img *ii, float *img, const float *round) {
    size_t npix = (size_t)ii->h * ii->s * ii->w * ii->s;
    for (int i = 0, k = 0; i < ii->n; i++) {
        const uint8_t *m = ii->items[i].mask;
        if (!m) continue;
        for (int c = 0; c < 3; c++)
            for (size_t q = 0; q < npix; q++)
                if (m[q] < 128) img[((size_t)i * 3 + c) * npix + q] = round[((size_t)k * 3 + c) * npix + q];
        k++;
    }
}

void img2img_free(struct img2img *ii) {
    sd_free(ii->z0);
    sd_free(ii->eps);
    sd_free(ii->keep);
    sd_free(ii->x);
    memset(ii, 0, sizeof *ii);
}
