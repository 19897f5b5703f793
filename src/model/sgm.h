/* sgm.h — the original (SGM / ldm) single-file key layout, mapped onto the diffusers
 * weight tables by rules.
 *
 * An SDXL single-file checkpoint (sd_xl_base_1.0.safetensors, most fine-tunes) keeps
 *   the UNet under   model.diffusion_model.       (input_blocks / middle_block / output_blocks)
 *   the VAE under    first_stage_model.           (encoder.down.I.block.J, mid.attn_1.q as 1×1 convs)
 *   CLIP-L under     conditioner.embedders.0.transformer.   (transformers' names)
 *   bigG under       conditioner.embedders.1.model.         (OpenCLIP's names: fused
 *                    attn.in_proj_weight = q|k|v, text_projection stored [in, out])
 * Nothing here lists SDXL's keys: each diffusers row name is rewritten by block, resnet
 * and attention index arithmetic from the model's config (layers_per_block, levels, which
 * up blocks have attention), so the tiny test configs map as SDXL does.  Layout facts
 * from diffusers' single_file_utils / convert_diffusers_to_original_sdxl.py and
 * stable-diffusion.cpp's name_conversion.cpp:
 *   down level i, resnet j   -> input_blocks.(1 + i(L+1) + j).0   (+ .1 its transformer)
 *   down level i sampler     -> input_blocks.((i+1)(L+1)).0.op
 *   mid resnet 0, attn, 1    -> middle_block.0, .1, .2
 *   up block i, resnet j     -> output_blocks.(i(L+1) + j).0      (+ .1 its transformer)
 *   up block i sampler       -> output_blocks.(i(L+1) + L).(1 + has attention).conv
 *   resnet norm1 conv1 time_emb_proj norm2 conv2 conv_shortcut
 *                            -> in_layers.0 in_layers.2 emb_layers.1 out_layers.0 out_layers.3 skip_connection
 * (L = layers_per_block.)  The map works both ways: loading a single file, and writing
 * one (`sdxld convert --to single-file`) that other tools read. */
#ifndef SD_SGM_H
#define SD_SGM_H

#include "../io/safetensors.h"
#include "../io/wfiles.h"
#include "../io/weights.h"
#include "config.h"

enum sgm_part { SGM_UNET, SGM_VAE, SGM_CLIP_L, SGM_CLIP_G };

#define SGM_UNET_PREFIX "model.diffusion_model."
#define SGM_VAE_PREFIX "first_stage_model."
#define SGM_CLIP_L_PREFIX "conditioner.embedders.0.transformer."
#define SGM_CLIP_G_PREFIX "conditioner.embedders.1.model."

struct sgm_entry {
    char key[WT_NAME_MAX];      /* without the component prefix */
    int row;                    /* in the weight table */
    int part, nparts;           /* row is part `part` of nparts along dim 0 of key */
    int transpose;              /* the file holds the row transposed */
    int conv1x1;                /* the file holds the row as [out, in, 1, 1] */
};

/* The original-layout names of one table; prefix is the component's ("" for a bare
 * UNet-only file).  Owns nothing of t. */
struct sgm_map {
    enum sgm_part part;
    const struct weight_table *t;
    const char *prefix;
    int n;
    struct sgm_entry *e;        /* sorted by key, parts in order */
    int *of_row;                /* row -> its entry */
};

/* cfg: struct unet_config * or struct vae_config * (NULL for the text encoders). */
sd_status sgm_map_build(struct sgm_map *m, const struct weight_table *t, enum sgm_part part, const void *cfg,
                        const char *prefix);
void sgm_map_free(struct sgm_map *m);
/* wt_resolve_fn over a struct sgm_map: keys outside its prefix are WT_FOREIGN. */
enum wt_resolution sgm_resolve(void *map, const char *key, struct wt_bind *b);

/* Bind table t from every file of w and check that every row was filled (what names the
 * source in that message): in the original layout under prefix, or, with prefix NULL,
 * under diffusers names through map (NULL: as they are).  Tensors outside the prefix are
 * left for the caller's leftover check. */
sd_status sgm_bind(struct weight_table *t, struct backend *be, const struct wfiles *w, enum sgm_part part,
                   const void *cfg, const char *prefix, wt_name_map map, const char *what);

/* The layout of a UNet-only file: SGM with the prefix, bare SGM (input_blocks.*), or
 * diffusers names (prefix NULL). */
int sgm_is_unet_file(const struct st_file *f, const char **prefix);
/* A whole-model single file (UNet, VAE and text encoders under the prefixes above). */
int sgm_is_checkpoint(const struct st_file *f);
/* Its shapes are SDXL base's (320 channels, 2048 context, 2816 add-embedding inputs):
 * the shipped conf/models/sdxl-base configs fit it. */
int sgm_is_sdxl_base(const struct st_file *f);
/* After the components took theirs: what is left must be a known non-weight (schedule
 * buffers without a dot, model_ema.*) or, with other_parts, another component's tensor
 * (a UNet taken from a whole checkpoint), else "unexpected tensor". */
sd_status sgm_check_leftovers(const struct wfiles *w, int other_parts);

/* Append table t to w in dtype dt, downloading each row through be: with m, under the
 * original names (fused, transposed, 1×1 as the map says); without, under prefix + the
 * diffusers name (except names listed in keep_bare, which get no prefix). */
sd_status sgm_write_table(struct st_writer *w, const struct weight_table *t, struct backend *be, sd_dtype dt,
                          const struct sgm_map *m, const char *prefix, const char *keep_bare);

#endif
