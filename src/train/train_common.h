/* train_common.h — pieces shared by the trainers (not a public interface): frozen text
 * conditioning and the cache of VAE latents + text embeddings of dataset items. */
#ifndef SD_TRAIN_COMMON_H
#define SD_TRAIN_COMMON_H

#include "../model/cond.h"
#include "../model/clip.h"
#include "../model/unet.h"
#include "../sample/sampler.h"
#include "../model/vae.h"
#include "../text/tokenizer.h"
#include "data.h"

/* A caller's hook between long steps (the daemon serves generations there); non-zero asks
 * to stop. */
struct yield_hook { int (*fn)(void *ud); void *ud; };

/* Latents (× scaling_factor) and conditioning of the first K dataset items, on the
 * backend in one allocation, in chunks of 16 items with y (may be NULL) asked between
 * them: a stop is SD_ERR_CANCELLED. */
struct latent_cache {
    struct arena mem;
    float *lat, *ctx, *pool;    /* [K, C, h, w], [K, L, X], [K, P] */
    long long K;
    size_t per_l, per_c;
    int P, C, h;
};
sd_status cache_build(struct latent_cache *c, struct fwd *f, struct cond *k, const struct vae *v,
                      const struct dataset *d, long long max_items, const struct yield_hook *y);
void cache_free(struct latent_cache *c);

/* How much a denoiser uses its condition: the ε-MSE of u on the cached items noised at
 * each ts[i] (4 draws of noise), conditioned on their own captions (mse[i][0]), on another
 * item's (mse[i][1]) and on the null condition (mse[i][2]).  A model that ignores its
 * text has the three equal.  Needs c->K >= 2; time_ids [>= 16, 6]. */
sd_status eval_conditioning(struct fwd *f, const struct unet *u, const struct schedule *sch,
                            const struct latent_cache *c, int L, const float *time_ids, int nt, const int *ts,
                            uint64_t seed, double (*mse)[3]);

/* SDXL's micro-conditioning of n square S×S training images, [n, 6] host: original size
 * (S, S), crop (0, 0), target size (S, S). */
void time_ids_square(float *tid, int n, int S);

/* Write n images [n, 3, S, S] (host, in [-1, 1]) side by side as one PNG.  Cell i shows
 * dataset item items[i] (its caption was the prompt, or it is that item's picture): the
 * PNG's "captions" text chunk holds their captions, a JSON array left to right (tEXt
 * when ASCII, else iTXt).  d and items NULL: no captions. */
sd_status save_grid(const char *path, const float *img, int n, int S, const struct dataset *d, const long *items);
/* items[i] = i for i < n (a grid of the first n cached items, cache_build's order);
 * returns items. */
const long *grid_first_items(long *items, int n);

#endif
