/* vae.h — AutoencoderKL (diffusers layout; docs/sdxl.md §4): encoder to the posterior
 * mean, decoder from latents to pixels.  Levels, channels and flags from config.json. */
#ifndef SD_VAE_H
#define SD_VAE_H

#include "config.h"
#include "layers.h"

struct vae_level {
    struct resnet *res;
    int nres;
    struct conv sample;     /* w NULL if none */
};

struct vae_half {           /* encoder or decoder */
    struct conv conv_in, conv_out;
    struct vae_level lv[VAE_MAX_LEVELS];
    struct resnet mid_res[2];
    struct norm attn_gn;
    struct attention attn;
    struct norm out_norm;
};

struct vae {
    struct vae_config cfg;
    struct vae_half enc, dec;
    struct conv quant, post_quant;   /* 1×1; w NULL when the config disables them */
    struct weight_table wt;
    struct arena params;
    size_t band_bytes;   /* inference: a banded conv's output band (0 = 4 MiB; tests) */
};

sd_status vae_create(struct vae *m, struct backend *be, const struct vae_config *cfg);
/* config.json + diffusion_pytorch_model.safetensors from dir. */
sd_status vae_load(struct vae *m, struct backend *be, const char *dir, sd_dtype wdt);
/* Bind created weights from w: diffusers names (prefix NULL), or the original layout
 * under prefix (first_stage_model.; the caller checks the file's leftovers). */
struct wfiles;
sd_status vae_bind(struct vae *m, struct backend *be, const struct wfiles *w, const char *prefix, const char *what);
void vae_free(struct vae *m);
int vae_scale(const struct vae *m);   /* pixels per latent: 2^(levels-1) */

/* ---- training ----
 * A half of the VAE is a chain of steps; with a tape every step keeps its input, and
 * vae_backward walks the chain back (recomputing inside each step).  Gradient contract:
 * g (a second struct vae from vae_create, the gradient storage) += parameter gradients,
 * g == NULL for input gradients only; din = (may be NULL). */
#define VAE_TAPE_MAX 64
struct vae_step {
    int kind;
    const float *in;
    const struct conv *conv;
    const struct resnet *res;
    const struct norm *norm;
    const struct attention *attn;
    int N, C, H, W, Co, Ho, Wo;
};
struct vae_tape { int n, N; struct vae_step s[VAE_TAPE_MAX]; };

/* img -> moments [N, 2·latent_ch, H/s, W/s] (mean ; logvar, after quant_conv). */
void vae_encode_moments(struct fwd *f, const struct vae *m, struct vae_tape *tp, float *moments,
                        const float *img, int N, int H, int W);
void vae_decode_t(struct fwd *f, const struct vae *m, struct vae_tape *tp, float *img, const float *z,
                  int N, int h, int w);
void vae_backward(struct fwd *f, const struct vae *m, struct vae *g, const struct vae_tape *tp,
                  const float *dout, float *din);

/* img [N, in_ch, H, W] in [-1, 1] -> mean [N, latent_ch, H/s, W/s] (not scaled). */
void vae_encode(struct fwd *f, const struct vae *m, float *mean, const float *img, int N, int H, int W);
/* Activation bytes an untiled inference decode of [N, latent_ch, h, w] takes (an upper
 * bound, for arena_expect); 0 when it cannot tell. */
size_t vae_decode_bytes(const struct vae *m, int N, int h, int w);
/* z [N, latent_ch, h, w] (already divided by scaling_factor) -> img [N, out_ch, h·s, w·s]. */
void vae_decode(struct fwd *f, const struct vae *m, float *img, const float *z, int N, int h, int w);

/* ---- tiled decode (vae_tile.c) ----
 * One axis of n latent pixels cut into k tiles of at most `tile`, neighbours sharing
 * exactly `overlap` latent pixels: sizes base or base + 1 (the first rem tiles), so
 * tile i starts at i·(base − overlap) + min(i, rem).  n <= tile is one tile of n.
 * overlap is taken in [1, tile/4], which keeps every pixel inside at most two tiles of
 * an axis (base >= 2·overlap). */
struct vae_tiling { int n, k, base, rem, overlap; };
void vae_tiling_plan(struct vae_tiling *t, int n, int tile, int overlap);
static inline int vae_tile_start(const struct vae_tiling *t, int i) {
    return i * (t->base - t->overlap) + (i < t->rem ? i : t->rem);
}
static inline int vae_tile_size(const struct vae_tiling *t, int i) { return t->base + (i < t->rem); }
/* The blend weight, along one axis, of pixel q (0 .. s·size−1) of tile i at s pixels per
 * latent: a linear ramp across each overlap shared with a neighbour (s·overlap pixels),
 * 1 elsewhere; the two tiles over a pixel weigh 1 together. */
float vae_tile_weight(const struct vae_tiling *t, int i, int q, int s);
/* z [N, latent_ch, h, w] and img [N, out_ch, h·s, w·s] in HOST memory: every tile of
 * the latent decoded on its own by vae_decode (its activations taken and given back
 * from f->ar, so the arena peaks at one tile's worth), downloaded and blended into img
 * with the product of its two axes' weights.  Errors are the backend's sticky error. */
void vae_decode_tiled(struct fwd *f, const struct vae *m, float *img, const float *z, int N, int h, int w,
                      int tile, int overlap);

#endif
