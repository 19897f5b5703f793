/* schedule.c — ᾱ table and LCM scalings (see sampler.h). */
#include <math.h>

#include "sampler.h"

sd_status schedule_init(struct schedule *s, const struct sched_config *c) {
    s->T = c->num_train_timesteps;
    s->timestep_scaling = c->timestep_scaling;
    s->alphas_cumprod = sd_malloc(sizeof(double) * s->T);
    if (!s->alphas_cumprod) return SD_ERR_NOMEM;
    double prod = 1.0;
    for (int i = 0; i < s->T; i++) {
        double frac = s->T > 1 ? (double)i / (s->T - 1) : 0.0, beta;
        if (c->scaled_linear) {
            double r = sqrt(c->beta_start) + (sqrt(c->beta_end) - sqrt(c->beta_start)) * frac;
            beta = r * r;
        } else beta = c->beta_start + (c->beta_end - c->beta_start) * frac;
        prod *= 1.0 - beta;
        s->alphas_cumprod[i] = prod;
    }
    return SD_OK;
}

void schedule_free(struct schedule *s) {
    sd_free(s->alphas_cumprod);
    s->alphas_cumprod = NULL;
}

void schedule_lcm_scalings(const struct schedule *s, int t, double *c_skip, double *c_out) {
    const double sd2 = 0.25;   /* σ_data² */
    double x = s->timestep_scaling * t;
    *c_skip = sd2 / (x * x + sd2);
    *c_out = x / sqrt(x * x + sd2);
}
