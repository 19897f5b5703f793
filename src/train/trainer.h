/* trainer.h — plain diffusion training of a teacher UNet and training of a VAE: how
 * sdxld makes its own small built-in model from the shapes dataset (or an image folder).
 *
 * Both trainers run on any backend, log progress lines (step, loss, grad norm, it/s,
 * ETA), write sample PNGs and checkpoints (checkpoint.h) and resume bit-identically: the
 * RNG is counter-based and its offset, the data cursor, the weights and the optimiser
 * moments all go into the checkpoint. */
#ifndef SD_TRAINER_H
#define SD_TRAINER_H

#include "data.h"
#include "optim.h"

struct train_progress {
    int step, total;
    double loss, grad_norm, it_per_s, eta_s;
    const char *sample_path, *checkpoint_path;   /* set on the step that wrote one */
};
/* Called after every step; non-zero stops the run after a final checkpoint. */
typedef int (*train_progress_fn)(void *ud, const struct train_progress *p);

struct train_config {
    const char *model_dir;      /* diffusers folder: tokenizers, text encoders, vae, unet */
    const char *out_dir;        /* run directory: checkpoints, samples, final weights */
    const char *backend;        /* "cpu" (NULL) or "cuda" */
    int resume;                 /* continue from out_dir/latest */
    const struct dataset *data;
    int batch, steps;
    uint64_t seed;
    struct adamw_config opt;
    int log_every, sample_every, checkpoint_every;
    int keep_checkpoints;       /* checkpoint folders kept (checkpoint.h; 0 = all) */
    const char *config_json;    /* the run's options (options.h), stored in every state.json */
    int shards;                 /* data-parallel shards on the CPU (shards.h); 0 = one per thread */
    /* teacher */
    int recompute;              /* UNet activations: block-level recomputation, not keep-all */
    float p2_gamma;             /* loss weight (1 + SNR_t)^-γ per sample (P2 weighting, Choi et al.
                                   2022: emphasises the coarse, high-noise steps); 0 = uniform */
    float cfg_dropout;          /* probability of training with the null condition */
    int cache_size;             /* dataset items whose latents + text are cached (0: all) */
    int sample_steps;           /* DDIM steps for samples (50) */
    float guidance;             /* CFG scale for samples */
    /* vae */
    float kl_weight;
    int l1;                     /* L1 reconstruction (else L2) */
    train_progress_fn progress; void *progress_ud;
};

sd_status train_teacher(const struct train_config *c);
sd_status train_vae(const struct train_config *c);

#endif
