/* estimate.h — what a training run will cost, before it starts: the model facts its
 * defaults come from (native resolution, latent and text sizes) and an estimate of its
 * memory and of the time of one iteration, for admission control (the daemon refuses a
 * run that does not fit) and for the 202 of POST /v1/train.
 *
 * Everything is derived from the model folder's config.json files and weight headers,
 * read without loading a weight: the UNet's parameter table is declared (unet_declare)
 * and counted, the frozen VAE and text encoders are counted from their safetensors
 * headers.  Memory is a sum per kind of state (see train_estimate_dmd2); the iteration
 * time is parameters × batch × latent pixels × a constant measured on the 2-core
 * development box (docs/training.md, "Admission"), scaled by the cores in use.  Both are
 * estimates: they decide admission, they do not promise anything. */
#ifndef SD_TRAIN_ESTIMATE_H
#define SD_TRAIN_ESTIMATE_H

#include "../core/core.h"
#include "../model/config.h"
#include "options.h"

struct train_model_info {
    int native_resolution;      /* UNet sample_size × VAE scale (the VAE's sample_size if no UNet) */
    int vae_scale, latent_ch;   /* pixels per latent, latent channels */
    int text_len, text_dim, pooled_dim;   /* L, X, P of the cached text conditioning */
    int64_t unet_params;        /* floats of one UNet */
    int64_t lora_base;          /* floats of the UNet weights LoRA adapts (W0 copies) */
    int64_t lora_per_rank;      /* adapter floats per unit of rank: Σ (cout + K) */
    int64_t frozen_params;      /* VAE + text encoders */
    int has_unet;
    struct unet_config unet;    /* activations follow its levels, channels and blocks */
};

/* A model folder may carry the teacher it was distilled from, beside the generator it
 * serves in unet/: DIR/teacher/ (a UNet config.json and its weights, diffusers names),
 * with DIR/teacher/dmd2_defaults.json, the DMD2 options of the run that distilled it
 * (the built-in model does: docs/training.md).  The UNet component a DMD2 run on DIR takes
 * as its teacher: "teacher" when DIR/teacher/config.json exists, else "unet". */
const char *train_teacher_component(const char *model_dir);
/* Set the DMD2 options not in given from DIR/teacher/dmd2_defaults.json when it exists
 * (SD_OK when not); a bad file is SD_ERR_FORMAT naming it and the option. */
sd_status train_teacher_defaults(const char *model_dir, struct train_options *o,
                                 const struct topt_given *given);

/* Read model_dir's config.json files and weight headers (a run kind without a UNet,
 * the VAE trainer, needs only vae/). */
sd_status train_model_probe(const char *model_dir, struct train_model_info *m);

/* Fill what the model decides: resolution 0 = native, DMD2 cache_size 0 = 4096 items,
 * fewer when their latents and text embeddings would take over 1/8 of ram_bytes. */
void train_options_finish(struct train_options *o, enum train_kind kind,
                          const struct train_model_info *m, double ram_bytes);

struct train_estimate {
    double memory_bytes;        /* the sum of the parts below */
    double weights_bytes, gradients_bytes, optimizer_bytes, activations_bytes, cache_bytes;
    double iteration_s;         /* one DMD2 iteration, seconds */
    int shards;
};

/* A DMD2 run of o on model m with `threads` CPU threads (0 = all cores). */
void train_estimate_dmd2(const struct train_options *o, const struct train_model_info *m,
                         int threads, struct train_estimate *e);

/* Physical memory and CPU cores of this machine (fallbacks 4 GB, 1). */
double train_ram_bytes(void);
int train_cores(void);

#endif
