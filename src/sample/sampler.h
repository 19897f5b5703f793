/* sampler.h — the noise schedule and the DMD2 few-step sampler.
 *
 * Schedule: scaled-linear betas (√β linear from β_start to β_end over T steps, squared),
 * ᾱ_t = ∏(1 − β_i), in float64 (docs/sdxl.md §6.1).
 * Sampler (docs/sdxl.md §6.2): for each timestep t_k, ε = UNet(x, t_k); x0 = (x −
 * √(1−ᾱ)ε)/√ᾱ; denoised = c_out·x0 + c_skip·x (LCM boundary condition); if another
 * step follows, x = √ᾱ_next·denoised + √(1−ᾱ_next)·z with fresh z.  Works for any
 * strictly decreasing timesteps, one step included. */
#ifndef SD_SAMPLER_H
#define SD_SAMPLER_H

#include "../model/config.h"
#include "../model/unet.h"

struct schedule {
    int T;
    double *alphas_cumprod;     /* [T] */
    double timestep_scaling;
};

sd_status schedule_init(struct schedule *s, const struct sched_config *c);
void schedule_free(struct schedule *s);
/* LCM boundary-condition scalings at timestep t (σ_data = 0.5). */
void schedule_lcm_scalings(const struct schedule *s, int t, double *c_skip, double *c_out);

/* Fills noise [N, C, h, w] on the host for re-noising after step `step` (0-based). */
typedef void (*sampler_noise_fn)(void *ud, int step, float *host, size_t n);
/* Called after each step; non-zero cancels. */
typedef int (*sampler_step_fn)(void *ud, int step, int total);
/* Called after each step's re-noise (t_next: the next timestep) or, after the last step,
 * on the final denoised latent (t_next -1), with x in backend memory [N, C, h, w]: the
 * place to change the latent between steps (inpainting's masked blend).  Errors through
 * the backend's sticky status. */
typedef void (*sampler_blend_fn)(void *ud, float *x, int t_next);

struct sampler_job {
    const struct unet *unet;
    const struct schedule *sched;
    const float *ctx, *pooled;  /* backend memory: [N, Lk, cross], [N, P] */
    const float *time_ids;      /* host [N, 6] */
    int N, h, w, Lk;
    int nsteps;
    const int *timesteps;
    sampler_noise_fn noise; void *noise_ud;
    sampler_step_fn on_step; void *step_ud;
    sampler_blend_fn blend; void *blend_ud;   /* optional */
    float **trace_eps, **trace_denoised;   /* optional host outputs per step, [N,C,h,w] */
};

/* x: backend memory [N, C, h, w]; in: initial noise, out: the final denoised latent. */
sd_status sampler_run(struct fwd *f, const struct sampler_job *j, float *x);

/* Deterministic DDIM (η = 0) over `steps` evenly spaced timesteps with classifier-free
 * guidance: ε = ε_u + guidance·(ε_c − ε_u), the conditional and unconditional halves run
 * as one batch of 2N (guidance <= 1: conditional only).  The teacher's sampler.
 * ctx/pooled: [2N, ...] with the N conditional rows first, then N unconditional. */
struct ddim_job {
    const struct unet *unet;
    const struct schedule *sched;
    const float *ctx, *pooled, *time_ids;   /* time_ids host [2N, 6] */
    int N, h, w, Lk, steps;
    float guidance;
};
sd_status sampler_ddim(struct fwd *f, const struct ddim_job *j, float *x);

#endif
