/* lora_rt.h — LoRA adapters applied at run time, unmerged: for every adapted layer of the
 * UNet, y = W x + b + Σ_i s_i · B_i (A_i x), with s_i = scale_i · alpha_i / rank_i, so the
 * adapters of a generation are chosen per batch, the UNet's weights are never touched,
 * and switching adapters costs no reload (model/lora.h merges instead: W += s·B·A).
 *
 * A linear's adapter is A [r, in] then B [out, r] (two GEMMs with the rows-per-sample of
 * the layer, so an image does not depend on its batch neighbours); a conv's is A as a
 * k×k conv to r channels with the layer's stride and padding, then B as a 1×1 conv
 * (peft's LoRA for Conv2d).  Adapter files are read by model/lora.h's reader: the same
 * keys, shapes and refusals as the merge.
 *
 *   struct lora_adapter  one file's adapters, uploaded once (fp32, one arena), shared by
 *                        every generation that names it (model/lora_cache.h keeps them);
 *   struct lora_active   the adapters of one generation with their scales, indexed by the
 *                        UNet's table row; set as fwd.lora around the UNet passes.
 *
 * Temporaries come from the activation arena and are released before returning.  The
 * backward passes ignore fwd.lora (training merges, model/lora.h). */
#ifndef SD_LORA_RT_H
#define SD_LORA_RT_H

#include "layers.h"

struct lora_rt_module {
    int row, rank;          /* the UNet table row it adapts; r */
    float s;                /* alpha / rank */
    float *a, *b;           /* A [r, K], B [cout, r] (a conv's A is [r, cin, k, k]) */
};

struct lora_adapter {
    int n;                  /* modules */
    struct lora_rt_module *m;
    struct arena mem;       /* every A and B */
    size_t bytes;           /* what the adapter holds on the backend */
};

/* Load the adapter file at path for the UNet table wt onto be.  room(ud, bytes), when not
 * NULL, is asked for the backend bytes before any is allocated (a cache evicting others)
 * and may refuse with an error status.  On failure *ad holds nothing. */
sd_status lora_adapter_load(struct lora_adapter *ad, struct backend *be, const struct weight_table *wt,
                            const char *path, sd_status (*room)(void *ud, size_t bytes), void *ud);
void lora_adapter_free(struct lora_adapter *ad);

/* One (A, B, s) on a layer; next: the layer's next term, -1 at the end. */
struct lora_term { const float *a, *b; int rank; float s; int next; };
struct lora_active {
    int nrows;
    int *head;              /* [nrows]: a row's first term, or -1 */
    struct lora_term *t;
    int nt;
};
/* The adapters ads[0..n) with their scales (scale·alpha/rank per module) over a table of
 * nrows rows.  Terms of a layer are applied in the order of ads. */
sd_status lora_active_build(struct lora_active *act, int nrows, const struct lora_adapter *const *ads,
                            const float *scales, int n);
void lora_active_free(struct lora_active *act);

/* The hooks of linear_forward and conv_forward (layers.c) while f->lora is set: out +=
 * the adapters of table row `row` applied to inp.  Shapes as the layer's own call. */
void lora_linear_add(struct fwd *f, float *out, const float *inp, int row, int R, int S, int I, int O);
void lora_conv_add(struct fwd *f, float *out, const float *inp, int row, int N, int C, int H, int W, int K,
                   int k, int stride);

#endif
