/* dmd2_fixed.h — TEST SEAM of the DMD2 trainer (tests/test_dmd2_ref.c only).
 *
 * A reference run (tests/ref/make_dmd2_fixture.py) can only be compared with dmd2_step
 * when both see the same random draws.  With dmd2_config.fixed set, every draw of an
 * iteration (cache rows, backward-simulation k, noises, timesteps), the GAN head's
 * initial weights and the latent cache come from the test; a NULL member keeps the
 * trainer's own source for that part.  With dmd2_config.fixed NULL (every real run) the
 * trainer makes exactly the RNG calls it always made, in the same order. */
#ifndef SD_DMD2_FIXED_H
#define SD_DMD2_FIXED_H

#include "../core/rng.h"
#include "../io/weights.h"
#include "train_common.h"

/* The draws of one iteration, in the order dmd2_step makes them; i numbers the draws of
 * one kind within the iteration (a row, a sample, the re-noise after step i). */
enum dmd2_draw {
    DMD2_DRAW_BATCH,        /* int [0, K): cache row i of the iteration's prompts */
    DMD2_DRAW_SIM_K,        /* int [0, nsteps): backward simulation's k */
    DMD2_DRAW_INPUT_NOISE,  /* normals [B, C, h, w]: the noise of the generator input */
    DMD2_DRAW_SIM_START,    /* normals: backward simulation's start (k > 0) */
    DMD2_DRAW_SIM_RENOISE,  /* normals: its re-noise after step i (i < k - 1) */
    DMD2_DRAW_INPUT_ROWS,   /* without backward simulation: int [0, K), real row i ... */
    DMD2_DRAW_INPUT_STEP,   /* ... and int [0, nsteps), the index of row i's timestep */
    DMD2_DRAW_DM_NOISE,     /* normals: the DM loss's noise */
    DMD2_DRAW_DM_T,         /* int [0, dm_max_t - dm_min_t]: t_i - dm_min_t */
    DMD2_DRAW_GAN_G_NOISE,  /* normals, and int [0, 1000) t_i: the generator's GAN loss */
    DMD2_DRAW_GAN_G_T,
    DMD2_DRAW_FAKE_NOISE,   /* normals, and int [0, 1000) t_i: the fake score's denoising loss */
    DMD2_DRAW_FAKE_T,
    DMD2_DRAW_GAN_D_NOISE,  /* normals [2B, C, h, w]: the real rows', then x0_gen's */
    DMD2_DRAW_GAN_D_ROWS,   /* int [0, K): real row i of the discriminator's batch */
    DMD2_DRAW_GAN_D_T,      /* int [0, 1000): t_i, i < 2B, real rows first */
};

struct dmd2_fixed {
    void *ud;
    /* Draw `what` number i of iteration `step` (1-based): n normals into out. */
    void (*normals)(void *ud, int step, enum dmd2_draw what, int i, float *out, size_t n);
    /* Draw `what` number i of iteration `step`: an integer in [0, range). */
    uint32_t (*u32)(void *ud, int step, enum dmd2_draw what, int i, uint32_t range);
    const char *head_init;          /* safetensors holding the head's initial weights (head.wt names) */
    long long K;                    /* > 0: the latent cache's K rows (K = the cache's size) are ... */
    const float *lat, *ctx, *pool;  /* ... these, host [K, C, h, w], [K, L, X], [K, P] */
    float *dm_grad, *dx0;           /* out, host [B, C, h, w] (may be NULL): the last generator
                                     * iteration's dL_DM/dx0 and dL_G/dx0 (DM + weighted GAN-G) */
};

/* n normals: fx's when it has them, else the RNG's. */
void dmd2_draw_normals(const struct dmd2_fixed *fx, struct sd_rng *r, int step, enum dmd2_draw what, int i, float *out,
                       size_t n);
/* An integer in [0, range): fx's when it has them, else sd_rng_u32(r) % range. */
uint32_t dmd2_draw_u32(const struct dmd2_fixed *fx, struct sd_rng *r, int step, enum dmd2_draw what, int i, uint32_t range);
/* The head's initial weights: fx->head_init's, else random from seed (wt_init_random). */
sd_status dmd2_fixed_head(const struct dmd2_fixed *fx, struct weight_table *head, struct backend *be, uint64_t seed);
/* Replace the cache's rows by fx's (when fx->K > 0; it must equal c->K). */
sd_status dmd2_fixed_cache(const struct dmd2_fixed *fx, struct latent_cache *c, struct backend *be);

#endif
