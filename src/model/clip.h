/* clip.h — CLIP text encoders (CLIP-L and OpenCLIP-bigG in their HF layout).
 *
 * Pre-LN causal transformer (docs/sdxl.md §2).  SDXL uses the penultimate hidden states
 * (output after layers-1 layers, no final LN) as context, and, for the encoder with a
 * projection, the final-LN row at the first EOS times text_projection as the pooled
 * vector. */
#ifndef SD_CLIP_H
#define SD_CLIP_H

#include "config.h"
#include "layers.h"

struct clip_layer {
    struct norm ln1, ln2;
    struct attention attn;
    struct linear fc1, fc2;
};

struct clip {
    struct clip_config cfg;
    float *tok_emb;           /* [vocab, D], tok_emb_dt elements (wt_lowp) */
    sd_dtype tok_emb_dt;
    float *pos_emb;           /* [max_pos, D] */
    struct clip_layer *layers;
    struct norm final_ln;
    struct linear proj;       /* text_projection [P, D], no bias; w NULL if absent */
    struct weight_table wt;
    struct arena params;
};

/* Load config.json + model.safetensors from dir.  with_projection: expect
 * text_projection (CLIPTextModelWithProjection). */
sd_status clip_load(struct clip *m, struct backend *be, const char *dir, int with_projection, sd_dtype wdt);
/* Structure and parameters only (for `sdxld init`); weights undefined. */
sd_status clip_create(struct clip *m, struct backend *be, const struct clip_config *cfg, int with_projection);
/* Bind created weights from w: transformers names (prefix NULL), or a single file's
 * under prefix (CLIP-L: conditioner.embedders.0.transformer., bigG in OpenCLIP's names:
 * conditioner.embedders.1.model.; model/sgm.h). */
struct wfiles;
sd_status clip_bind(struct clip *m, struct backend *be, const struct wfiles *w, const char *prefix, const char *what);
void clip_free(struct clip *m);

/* ids [N, L] (host).  Outputs (backend memory, any may be NULL):
 *   penult [N, L, D]: hidden_states[-2];  last [N, L, D]: after final LN;
 *   pooled [N, P]: final-LN row at the first eos_id × text_projection. */
void clip_forward(struct fwd *f, const struct clip *m, const int *ids, int N, int L,
                  float *penult, float *last, float *pooled);

#endif
