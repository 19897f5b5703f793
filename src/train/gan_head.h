/* gan_head.h — DMD2's GAN classifier head (docs/dmd2.md §7) on the fake score UNet's
 * mid-block output, with its explicit backward. */
#ifndef SD_GAN_HEAD_H
#define SD_GAN_HEAD_H

#include "../model/layers.h"

/* log2(s/4) × [conv k4 s2 p1 → GN → SiLU] down to 4×4, conv k4 s4 → GN → SiLU to 1×1,
 * conv 1×1 → one logit.  (A mid block smaller than 4×4 uses one conv of its own size.) */
struct head {
    int C, s, nd, G, kf;
    struct conv down[8], final, out;
    struct norm gn[9];
    struct weight_table wt;
    struct arena params;
};
struct head_save { float *x[10], *y[10]; };   /* conv inputs, pre-GN outputs */

sd_status head_create(struct head *hd, struct backend *be, int C, int s);
void head_free(struct head *hd);
/* logits [N] (backend memory) from feat [N, C, s, s]; sv keeps what backward needs. */
void head_forward(struct fwd *f, const struct head *hd, struct head_save *sv, float *logits, const float *feat, int N);
/* dfeat = from dlogits [N] (=); g (may be NULL) += parameter gradients. */
void head_backward(struct fwd *f, const struct head *hd, struct head *g, const struct head_save *sv,
                   const float *dlogits, float *dfeat, int N);

#endif
