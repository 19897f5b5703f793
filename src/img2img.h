/* img2img.h — img2img and inpainting inside engine_generate (the engine facade's own
 * header; the daemon sees only engine.h: gen_params.strength, gen_item.init and .mask).
 *
 * Strength on the DMD2 timesteps: the run starts at the first timestep t_k below
 * strength × 1000 (engine_img2img_start), from the item's init latent z0 (the VAE's
 * posterior mean × scaling_factor) noised to it with the item's own first noise draw ε
 * (the draw a txt2img run starts from): x = √ᾱ_t·z0 + √(1−ᾱ_t)·ε, and runs the steps from
 * k on.  Strength 1 starts from ε itself (as diffusers' inpainting does at full strength),
 * so an unmasked item at strength 1 is bit for bit the txt2img image of its seed.
 *
 * Inpainting (a mask, >= 128 = repaint): a latent pixel is repainted when any pixel of
 * its vae_scale² block is.  After every step the kept latent pixels are reset to z0
 * noised to the next timestep with the same ε (to z0 itself after the last step), and
 * after the decode every kept pixel is replaced by the decode of z0 (the input's VAE
 * round trip), so what the mask keeps is exactly the round trip.
 *
 * Everything here is per item: an item's pixels depend on its own seed, init image and
 * mask only, never on its batch neighbours. */
#ifndef SD_IMG2IMG_H
#define SD_IMG2IMG_H

#include "engine.h"
#include "model/vae.h"
#include "sample/sampler.h"

struct img2img {
    int active;                /* some item has an init image */
    int nmask;                 /* items with a mask */
    int start, t0;             /* the first step run (engine_img2img_start; 0 at strength 1)
                                  and its timestep */
    int from_noise;            /* strength 1 (or unset): the run starts from the noise */
    struct backend *be;
    int n, h, w, s;            /* items, latent size, pixels per latent */
    size_t per;                /* floats per item latent */
    const struct schedule *sched;
    const struct gen_item *items;
    float *z0;                 /* host [n, C, h, w]: init latents × scaling factor (0 without) */
    float *eps;                /* host [n, C, h, w]: each item's first noise draw */
    uint8_t *keep;             /* host [n, h, w]: 1 = a kept latent pixel (masked items only) */
    float *x;                  /* host scratch for the blend [n, C, h, w] */
};

/* Validate the items against p (init images need the DMD2 sampler; strength < 1 needs an
 * init image on every item; a mask needs an init image) and, when any item has an init
 * image, encode them (on the backend, through f) into ii->z0 and build the masks.
 * ii->active 0 (and nothing allocated) for a plain txt2img batch. */
sd_status img2img_begin(struct img2img *ii, struct fwd *f, const struct vae *vae, const struct schedule *sched,
                        const struct gen_params *p, const struct gen_item *items, int n);
/* x0 [n, C, h, w] on the host holds each item's first noise draw: keep it, and replace it
 * for the init items by the noised init latent at the start timestep (strength < 1). */
void img2img_start(struct img2img *ii, float *x0);
/* The sampler's blend hook (sampler_blend_fn) with ud = the struct img2img. */
void img2img_blend(void *ud, float *x, int t_next);
/* The kept latents' decode: z [n, C, h, w] host, the masked items' z0 (÷ nothing: still
 * × scaling_factor) packed in item order, nmask of them.  Returns that count. */
int img2img_kept_latents(const struct img2img *ii, float *z);
/* img [n, 3, H, W] in [0, 1] (the generated pixels) and round [nmask, 3, H, W] (the
 * decode of img2img_kept_latents): every kept pixel of a masked item becomes round's. */
void img2img_composite(const struct img2img *ii, float *img, const float *round);
void img2img_free(struct img2img *ii);

#endif
