/* cond.h — SDXL's text conditioning: two tokenizers and two CLIP text encoders turn a
 * prompt into the UNet's context (the penultimate hidden states of both encoders side by
 * side, [L, D1 + D2]) and its pooled vector (the second encoder's projected text embeds,
 * [P]).  One module for generation (engine.c) and training (the latent caches of
 * src/train), so both condition the UNet identically. */
#ifndef SD_COND_H
#define SD_COND_H

#include "../text/tokenizer.h"
#include "clip.h"

struct cond {
    struct tokenizer *tok1, *tok2;
    struct clip te1, te2;
    int loaded1, loaded2;        /* te1 / te2 hold weights (cond_free frees them) */
    int L, X, P;                 /* tokens per prompt, context width D1 + D2, pooled width */
};

/* Optional outputs of cond_encode, host memory, each may be NULL (the conformance tools). */
struct cond_trace {
    int64_t *ids1, *ids2;              /* [n, L] */
    float *te1_penult, *te1_last;      /* [n, L, D1] */
    float *te2_penult;                 /* [n, L, D2] */
    int *truncated;                    /* [n]: the prompt was cut to L tokens */
};

/* The four parts from a diffusers model folder (tokenizer, tokenizer_2, text_encoder,
 * text_encoder_2).  On failure k is left freed. */
sd_status cond_load(struct cond *k, struct backend *be, const char *model_dir);
/* L, X, P from the loaded parts (for callers that load them one by one). */
void cond_set_dims(struct cond *k);
void cond_free(struct cond *k);
/* ctx [n, L, X] and pooled [n, P] (backend memory, allocated by the caller) for n prompts;
 * scratch on f's arena is released before returning. */
sd_status cond_encode(struct cond *k, struct fwd *f, const char *const *prompts, int n, float *ctx,
                      float *pooled, struct cond_trace *tr);

#endif
