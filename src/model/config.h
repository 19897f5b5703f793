/* config.h — model dimensions, read from each folder's config.json.
 *
 * Nothing in src/model/ hard-codes SDXL's sizes: real SDXL, the golden tiny model and
 * any other SDXL-shaped config load through these structs (docs/sdxl.md §8).  Each
 * parser checks what it reads (types, ranges, consistency between keys) and names the
 * key and file when something is wrong. */
#ifndef SD_MODEL_CONFIG_H
#define SD_MODEL_CONFIG_H

#include "../core/core.h"
#include "../core/tensor.h"

#define UNET_MAX_LEVELS 8
#define VAE_MAX_LEVELS 8

struct clip_config {
    int hidden, intermediate, layers, heads, vocab, max_pos, projection_dim;
    int act;                /* enum act_kind */
    float ln_eps;
    int eos_id;
    sd_dtype wdt;                     /* storage of the GEMM weights (io/weights.h): not from
                                         config.json; F32 unless the loader sets it */
};

struct unet_config {
    int in_ch, out_ch, nlevels;
    int ch[UNET_MAX_LEVELS];          /* block_out_channels */
    int attn[UNET_MAX_LEVELS];        /* 1 = CrossAttnDownBlock2D at this level */
    int up_attn[UNET_MAX_LEVELS];     /* up block i (i = 0 is the deepest) has attention */
    int heads[UNET_MAX_LEVELS];
    int depth[UNET_MAX_LEVELS];       /* transformer_layers_per_block */
    int up_depth[UNET_MAX_LEVELS];    /* per up block (reversed unless given) */
    int layers_per_block;
    int cross_dim;
    int groups;
    float eps;
    int addition_time_embed_dim, add_in_dim;
    int flip_sin_to_cos;
    float freq_shift;
    int sample_size;
    int conv_in_kernel, conv_out_kernel;
    sd_dtype wdt;                     /* storage of the GEMM weights (io/weights.h): not from
                                         config.json; F32 unless the loader sets it */
};

struct vae_config {
    int in_ch, out_ch, latent_ch, nlevels, layers_per_block, groups;
    int ch[VAE_MAX_LEVELS];
    int mid_attn, quant_conv, post_quant_conv;
    float scaling_factor;
    int sample_size;
    sd_dtype wdt;                     /* storage of the GEMM weights (io/weights.h): not from
                                         config.json; F32 unless the loader sets it */
};

struct sched_config {
    int num_train_timesteps;
    double beta_start, beta_end;
    int scaled_linear;                /* else linear */
    double timestep_scaling;          /* LCM boundary condition; 10 by default */
};

sd_status clip_config_load(struct clip_config *c, const char *path);
sd_status unet_config_load(struct unet_config *c, const char *path);
sd_status vae_config_load(struct vae_config *c, const char *path);
sd_status sched_config_load(struct sched_config *c, const char *path);   /* missing file: defaults */
/* Parse from JSON text (for tests and `sdxld init`). */
sd_status unet_config_parse(struct unet_config *c, const char *json, const char *what);

#endif
