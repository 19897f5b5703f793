/* unet.h — the SDXL UNet (diffusers UNet2DConditionModel with text_time conditioning),
 * any number of levels, per-level heads and transformer depth, all from config.json
 * (docs/sdxl.md §3 and §8).  Forward predicts ε. */
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
/* The weight table alone (names, shapes, m->wt.total), nothing allocated: for sizing a
 * run before it starts.  unet_free releases it. */
sd_status unet_declare(struct unet *m, const struct unet_config *cfg);
sd_status unet_load_weights(struct unet *m, struct backend *be, const char *path);
/* config.json + diffusion_pytorch_model.safetensors from dir; weights_path overrides the
 * weights file (a DMD2 generator) when non-NULL. */
sd_status unet_load(struct unet *m, struct backend *be, const char *dir, const char *weights_path, sd_dtype wdt);
/* Bind created weights from w: diffusers names (a folder's files, possibly sharded), or
 * one file in the original layout (model.diffusion_model.* or bare input_blocks.*;
 * model/sgm.h).  what names the source in a "missing tensor" message. */
struct wfiles;
sd_status unet_bind(struct unet *m, struct backend *be, const struct wfiles *w, const char *what);
void unet_free(struct unet *m);

/* out, x [N, in_ch, H, W]; t [N] and time_ids [N, 6] on the host; ctx [N, Lk,
 * cross_dim]; pooled [N, pooled_dim].  H, W divisible by 2^(levels-1). */
void unet_forward(struct fwd *f, const struct unet *m, float *out, const float *x,
                  const float *t, const float *ctx, const float *pooled,
                  const float *time_ids, int N, int H, int W, int Lk);

/* ---- training: the down half (to the mid block) and the up half with a tape, and their backward ----
 *
 * unet_down runs the embeddings, conv_in, the down blocks and the mid block, keeping
 * every block input/output the backward needs on the activation arena (the tape lives
 * until the caller resets the arena past it); tape->mid_out is the mid-block output (the
 * DMD2 GAN head reads it).  unet_up runs the up blocks and the output head.
 * Two training modes (the `train` argument):
 *   UNET_TRAIN_KEEP — every block also keeps its internals (layers.h keep-all mode) and
 *     backward uses them: the fastest, and the most activation memory;
 *   UNET_TRAIN_RECOMPUTE — backward recomputes each block's internals from its saved
 *     input (block-level recomputation: activations cost one block at a time, compute
 *     ~one extra forward).  Both give the same gradients.
 *
 * Gradient contract: g (a second struct unet made by unet_create, used as gradient
 * storage) receives parameter gradients with +=; g == NULL pushes gradients through
 * without touching any (a frozen UNet).  dx, dctx, dpooled are written with =; any may
 * be NULL. */
#define UNET_MAX_RES 8
enum unet_tape_mode { UNET_INFER = 0, UNET_TRAIN_RECOMPUTE = 1, UNET_TRAIN_KEEP = 2 };
struct unet_tape {
    int train;                  /* enum unet_tape_mode: what is kept for backward */
    struct keep_stack *keep;    /* UNET_TRAIN_KEEP: the blocks' internals (on the arena) */
    int N, H, W, Lk;
    const float *x, *ctx, *pooled;
    float *ts, *a1, *add_in, *b1, *emb, *temb;      /* embedding path */
    float *skip[64]; int skip_c[64], skip_hw[64]; int nskip;
    float *dn_in[UNET_MAX_LEVELS][UNET_MAX_RES], *dn_res[UNET_MAX_LEVELS][UNET_MAX_RES];
    float *mid_in, *mid_r0, *mid_a0, *mid_out;
    float *up_in[UNET_MAX_LEVELS][UNET_MAX_RES], *up_res[UNET_MAX_LEVELS][UNET_MAX_RES];
    int up_skip[UNET_MAX_LEVELS][UNET_MAX_RES];
    float *up_sample_in[UNET_MAX_LEVELS], *out_in;
    int out_h, out_w, out_c, mid_h, mid_w, mid_c;
    /* backward state, filled by unet_up_backward, consumed by unet_down_backward */
    float *dskip[64], *dtemb, *dmid;
};

void unet_down(struct fwd *f, const struct unet *m, struct unet_tape *tp, int train, const float *x,
                 const float *t, const float *ctx, const float *pooled, const float *time_ids,
                 int N, int H, int W, int Lk);
void unet_up(struct fwd *f, const struct unet *m, struct unet_tape *tp, float *out);
/* Allocate the zeroed backward state (dskip, dtemb, dmid) on the arena.  unet_up_backward
 * does it itself; call it directly to backpropagate from the mid block alone (a GAN
 * head on unet_down's features, no up half). */
void unet_tape_begin_backward(struct fwd *f, const struct unet *m, struct unet_tape *tp);
/* From dout [N, out_ch, H, W] to tp->dmid, tp->dskip, tp->dtemb; dctx (+=, may be NULL). */
void unet_up_backward(struct fwd *f, const struct unet *m, struct unet *g, struct unet_tape *tp,
                          const float *dout, float *dctx);
/* dmid_extra (may be NULL) is added to the mid-output gradient (a GAN head's).  dctx +=. */
void unet_down_backward(struct fwd *f, const struct unet *m, struct unet *g, struct unet_tape *tp,
                          const float *dmid_extra, float *dx, float *dctx, float *dpooled);
/* Zero every parameter gradient of g (one memset over its arena). */
void unet_zero(struct backend *be, struct unet *g);

#endif
