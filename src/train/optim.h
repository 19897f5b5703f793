/* optim.h — AdamW on fp32 master weights, global gradient-norm clipping, a
 * constant-with-warmup learning rate and an optional EMA of the weights.
 *
 * The optimiser works on weight tables (io/weights.h): the model's table gives the
 * parameters, a twin table (the same model built again) holds the gradients, and the
 * moments live in two more arenas of the same layout, one allocation each. */
#ifndef SD_OPTIM_H
#define SD_OPTIM_H

#include "../io/weights.h"

struct adamw_config {
    float lr, beta1, beta2, eps, weight_decay;
    float clip;             /* max global grad norm; 0 = off */
    int warmup;             /* steps of linear warm-up to lr */
    float ema;              /* EMA decay (e.g. 0.999); 0 = off */
};

struct optimizer {
    struct adamw_config cfg;
    const struct weight_table *params, *grads;
    struct arena m, v, ema;
    float **mp, **vp, **ep;     /* per row: moment / EMA pointers */
    int step;                   /* completed steps */
    double last_grad_norm;
};

sd_status optim_init(struct optimizer *o, struct backend *be, const struct adamw_config *cfg,
                     const struct weight_table *params, const struct weight_table *grads);
void optim_free(struct optimizer *o);
float optim_lr(const struct optimizer *o);   /* the rate the next step will use */
/* Clip, step, update EMA.  Returns the pre-clip global grad norm via o->last_grad_norm.
 * A non-finite norm skips the step (and is reported) instead of poisoning the weights. */
sd_status optim_step(struct optimizer *o, struct backend *be);
/* The same step in two halves, for trainers that clip several networks by one joint
 * norm: the sum of squared gradients, then the update with grads scaled by `scale`. */
double optim_grad_sq(struct optimizer *o, struct backend *be);
sd_status optim_apply(struct optimizer *o, struct backend *be, float scale);
/* Exchange the parameters with their EMA (pointer swap; calling it again swaps back), so
 * a trainer exports or samples the averaged weights.  No-op without EMA. */
void optim_swap_ema(struct optimizer *o);
/* Zero every gradient in the grads table. */
void optim_zero_grad(struct optimizer *o, struct backend *be);

#endif
