/* unet.h — the SDXL UNet (diffusers UNet2DConditionModel with text_time conditioning),
 * any number of levels, per-level heads and transformer depth, all from config.json
 * (spec/sdxl.md §3 and §8).  Forward predicts ε. */
#ifndef SD_UNET_H
#define SD_UNET_H

#include "config.h"
#include "layers.h"

struct unet_level {
    struct resnet *res;          /* nres resnets */
    struct transformer2d *attn;  /* nres transformers, or NULL */
    int nres;
    struct conv sample;          /* downsampler / upsampler conv; w NULL if none */
};

struct unet {
    struct unet_config cfg;
    int temb_dim, pooled_dim;
    struct conv conv_in;
    struct linear time1, time2, add1, add2;
    struct unet_level down[UNET_MAX_LEVELS], up[UNET_MAX_LEVELS];
    struct resnet mid_res[2];
    struct transformer2d mid_attn;
    struct norm out_norm;
    struct conv conv_out;
    struct weight_table wt;
    struct arena params;
};

/* Build the structure and parameter table from cfg and allocate parameters (contents
 * undefined until unet_load_weights or wt_init_random). */
sd_status unet_create(struct unet *m, struct backend *be, const struct unet_config *cfg);
sd_status unet_load_weights(struct unet *m, struct backend *be, const char *path);
/* config.json + diffusion_pytorch_model.safetensors from dir; weights_path overrides the
 * weights file (a DMD2 generator) when non-NULL. */
sd_status unet_load(struct unet *m, struct backend *be, const char *dir, const char *weights_path);
void unet_free(struct unet *m);

/* out, x [N, in_ch, H, W]; t [N] and time_ids [N, 6] on the host; ctx [N, Lk,
 * cross_dim]; pooled [N, pooled_dim].  H, W divisible by 2^(levels-1). */
void unet_forward(struct fwd *f, const struct unet *m, float *out, const float *x,
                  const float *t, const float *ctx, const float *pooled,
                  const float *time_ids, int N, int H, int W, int Lk);

#endif
