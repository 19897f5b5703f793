/* wfiles.h — which files hold a component's weights, as diffusers folders are downloaded.
 *
 * A component folder (unet/, vae/, text_encoder/, text_encoder_2/) holds its weights in
 * one of these, looked for in this order (STEM: diffusion_pytorch_model, or model /
 * pytorch_model for the transformers text encoders):
 *   STEM.safetensors                    the plain layout
 *   STEM.safetensors.index.json         sharded: "weight_map" {tensor: shard file}
 *   STEM.fp16.safetensors               the fp16 variant (`variant="fp16"` downloads)
 *   STEM.safetensors.index.fp16.json    the sharded fp16 variant
 *   the same four with .bin             torch.save files (st_open reads both formats)
 * A sharded component is bound from every shard into one table: each shard named in the
 * index must be a plain file name inside the folder (no '/', no '..'), must exist, and
 * must hold exactly the tensors the index assigns to it, so a tensor present in two
 * shards, or missing from its shard, is an error that names it and the files.
 *
 * model_index.json says which subfolder is which component, by class name
 * (UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTextModelWithProjection,
 * CLIPTokenizer); without one the standard names are used. */
#ifndef SD_WFILES_H
#define SD_WFILES_H

#include "safetensors.h"

#define WFILES_MAX_SHARDS 4096

struct wfiles {
    int n;
    struct st_file *f;          /* n open files */
    unsigned char **used;       /* per file: one flag per tensor, set by wt_bind_file */
};

/* Open the weights of component folder dir (see above).  SD_ERR_NOTFOUND naming
 * dir/STEM.safetensors when there are none. */
sd_status wfiles_open_dir(struct wfiles *w, const char *dir, const char *st_stem, const char *bin_stem);
/* One file given by path. */
sd_status wfiles_open_file(struct wfiles *w, const char *path);
/* Every tensor of every file taken by some table: else "PATH: unexpected tensor 'KEY'". */
sd_status wfiles_check_used(const struct wfiles *w);
void wfiles_close(struct wfiles *w);
/* The storage a model built from these files asks for: req itself, or for
 * WT_DTYPE_AUTO the floating dtype (F32, F16, BF16) holding the most values. */
sd_dtype wfiles_dtype(const struct wfiles *w, sd_dtype req);

/* Subfolder names of a model folder's components. */
struct model_parts {
    char unet[64], vae[64], te1[64], te2[64], tok1[64], tok2[64], scheduler[64];
};
/* From dir/model_index.json when present, else unet, vae, text_encoder, ... */
sd_status model_parts_load(struct model_parts *p, const char *dir);

#endif
