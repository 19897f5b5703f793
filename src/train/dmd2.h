/* dmd2.h — DMD2 distillation (docs/dmd2.md): a few-step generator trained against a
 * frozen teacher ("real score", with CFG) and a trainable "fake score" UNet with a GAN
 * head on its mid-block features.
 *
 * One iteration (dmd2_step, in phases: generator input, generator update, fake-score
 * update, samples/checkpoint):
 *   1. prompts = captions of a cached dataset batch; backward simulation (or, ablated,
 *      real latents noised at a random step) makes the generator input x_t at t_k;
 *   2. the generator predicts x0_gen;
 *   3. every `ttur`-th iteration: generator update with L_DM (normalised (x0_fake −
 *      x0_real) gradient) + gan_g·L_GAN_G, clipped, AdamW;
 *   4. every iteration: fake-score update with the denoising loss on x0_gen +
 *      gan_d·L_GAN_D (real latents vs x0_gen), one joint clip over UNet and head, AdamW.
 * A stepper (open/step/save/close) so the daemon's worker can interleave iterations with
 * generation; `sdxld train dmd2` drives the same code offline. */
#ifndef SD_DMD2_H
#define SD_DMD2_H

#include "data.h"
#include "optim.h"

struct dmd2_fixed;

struct dmd2_config {
    const char *teacher_dir;     /* model folder: teacher UNet, VAE, text encoders */
    const char *generator_init;  /* NULL: the teacher's weights; else a UNet safetensors */
    const char *out_dir;
    int resume;
    const struct dataset *data;  /* real images (latents) and captions (prompts) */
    long long cache_size;
    int batch, steps, ttur;
    float lr_generator, lr_fake, guidance, gan_weight_g, gan_weight_d, clip;
    int warmup;
    int nsteps, timesteps[4];
    int backward_simulation, gan;
    int lora_rank;               /* > 0: train LoRA adapters on the generator (model/lora.h) */
    int recompute;               /* UNet activations: block-level recomputation, not keep-all */
    float lora_alpha;            /* LoRA scale = alpha / rank */
    int dm_min_t, dm_max_t;      /* 20, 980 */
    uint64_t seed;
    int checkpoint_every, sample_every, log_every;
    int keep_checkpoints;        /* checkpoint folders kept (checkpoint.h; 0 = all) */
    const char *config_json;     /* the run's options (options.h), stored in every state.json */
    int threads;                 /* CPU threads of the training backend; 0 = all cores */
    int shards;                  /* CPU data-parallel shards of the UNet passes (shards.h); 0 = one per thread */
    const char *backend;         /* "cpu" (NULL) or "cuda" */
    /* Called before every UNet pass of an iteration (NULL: none): the daemon serves
     * generations there, so one waits for at most one pass.  It returns a DMD2_YIELD_*.
     * STOP: dmd2_step returns SD_ERR_CANCELLED with the iteration undone (step, RNG and
     * data cursor as before it) as long as it has changed no weight; past its first weight
     * update the iteration completes (still calling yield) and returns normally.  ABORT
     * (a forced stop): SD_ERR_CANCELLED at once; if weights had changed the run is broken
     * (dmd2_broken): no checkpoint may be written from it, the last one stands. */
    int (*yield)(void *ud);
    void *yield_ud;
    const struct dmd2_fixed *fixed;   /* TEST SEAM (dmd2_fixed.h): fixed draws; NULL in every real run */
};

enum { DMD2_YIELD_CONTINUE, DMD2_YIELD_STOP, DMD2_YIELD_ABORT };

struct dmd2_stats {
    int step, generator_steps;
    double dm, gan_g, fake, gan_d;    /* last values (dm/gan_g from the last generator step) */
    double grad_generator, grad_fake;
    const char *sample_path, *checkpoint_path;   /* written by this step, else NULL */
};

/* The distribution-matching gradient (§5): per sample g = (x0_fake − x0_real) / mean|x −
 * x0_real| (non-finite → 0); grad = g / (B·per), the gradient of 0.5·mean((x −
 * stopgrad(x − g))²) with respect to x.  Returns the loss 0.5·mean(g²).  grad may
 * alias x.  Host memory. */
double dmd2_dm_grad(const float *x, const float *x_fake, const float *x_real, int B, size_t per, float *grad);

struct dmd2;
sd_status dmd2_open(struct dmd2 **out, const struct dmd2_config *c);
/* One iteration; fills st.  SD_ERR_INVALID once all steps are done; SD_ERR_CANCELLED
 * when the yield hook stopped it before any weight changed (the iteration is undone). */
sd_status dmd2_step(struct dmd2 *d, struct dmd2_stats *st);
/* A checkpoint now (path_out may be NULL) and the generator as OUT/generator.safetensors
 * (the merged UNet), plus OUT/generator_lora.safetensors (kohya format) with LoRA. */
sd_status dmd2_save(struct dmd2 *d, char *path_out, size_t n);
int dmd2_done(const struct dmd2 *d);
/* An iteration was aborted half-way through its updates: dmd2_step and dmd2_save refuse. */
int dmd2_broken(const struct dmd2 *d);
/* Iterations done so far: the checkpoint's step right after a resuming dmd2_open. */
int dmd2_iteration(const struct dmd2 *d);
void dmd2_close(struct dmd2 *d);

#endif
