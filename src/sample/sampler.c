/* sampler.c — the DMD2 / LCM few-step loop (see sampler.h).  All tensor math runs on the
 * backend; only the per-step noise is drawn on the host (it comes from per-image
 * counter-based RNGs, so batching never changes an image). */
#include <math.h>
#include <string.h>

#include "sampler.h"

sd_status sampler_run(struct fwd *f, const struct sampler_job *j, float *x) {
    struct backend *be = f->be;
    int C = j->unet->cfg.in_ch;
    size_t n = (size_t)j->N * C * j->h * j->w;
    for (int k = 0; k < j->nsteps; k++)
        if (j->timesteps[k] < 0 || j->timesteps[k] >= j->sched->T || (k && j->timesteps[k] >= j->timesteps[k - 1]))
            return sd_fail(SD_ERR_INVALID, "timesteps must be strictly decreasing in [0, %d]", j->sched->T - 1);
    uint64_t mk = arena_mark(f->ar);
    float *eps = fwd_alloc(f, n), *x0 = fwd_alloc(f, n), *z = fwd_alloc(f, n);
    float *host = sd_malloc(n * sizeof(float));
    float tv[256];
    sd_status st = SD_OK;
    if (!host) { arena_reset(f->ar, mk); return SD_ERR_NOMEM; }
    if (j->N > 256) { sd_free(host); arena_reset(f->ar, mk); return sd_fail(SD_ERR_INVALID, "batch too large"); }
    for (int k = 0; k < j->nsteps && !st; k++) {
        int t = j->timesteps[k];
        for (int i = 0; i < j->N; i++) tv[i] = (float)t;
        unet_forward(f, j->unet, eps, x, tv, j->ctx, j->pooled, j->time_ids, j->N, j->h, j->w, j->Lk);
        double a = j->sched->alphas_cumprod[t], c_skip, c_out;
        schedule_lcm_scalings(j->sched, t, &c_skip, &c_out);
        /* x0 = (x - √(1-ᾱ)·ε)/√ᾱ, then denoised = c_out·x0 + c_skip·x (into x0) */
        be->ops->axpby(be, x0, (float)(1.0 / sqrt(a)), x, (float)(-sqrt(1.0 - a) / sqrt(a)), eps, (long long)n);
        be->ops->axpby(be, x0, (float)c_out, x0, (float)c_skip, x, (long long)n);
        if (j->trace_eps && j->trace_eps[k]) be->ops->download(be, j->trace_eps[k], eps, n * sizeof(float));
        if (j->trace_denoised && j->trace_denoised[k]) be->ops->download(be, j->trace_denoised[k], x0, n * sizeof(float));
        if (k + 1 < j->nsteps) {
            double an = j->sched->alphas_cumprod[j->timesteps[k + 1]];
            j->noise(j->noise_ud, k, host, n);
            be->ops->upload(be, z, host, n * sizeof(float));
            be->ops->axpby(be, x, (float)sqrt(an), x0, (float)sqrt(1.0 - an), z, (long long)n);
        } else {
            be->ops->copy(be, x, x0, n * sizeof(float));
        }
        if (j->blend) j->blend(j->blend_ud, x, k + 1 < j->nsteps ? j->timesteps[k + 1] : -1);
        if ((st = backend_status(be))) break;
        if (j->on_step && j->on_step(j->step_ud, k + 1, j->nsteps))
            st = sd_fail(SD_ERR_CANCELLED, "cancelled after step %d of %d", k + 1, j->nsteps);
    }
    sd_free(host);
    arena_reset(f->ar, mk);
    return st;
}

sd_status sampler_ddim(struct fwd *f, const struct ddim_job *j, float *x) {
    struct backend *be = f->be;
    int C = j->unet->cfg.in_ch, T = j->sched->T, cfg = j->guidance > 1.0f, B = cfg ? 2 * j->N : j->N;
    size_t n = (size_t)j->N * C * j->h * j->w;
    if (j->steps < 1 || j->steps > T || j->N > 128) return sd_fail(SD_ERR_INVALID, "ddim: steps in [1, %d], N <= 128", T);
    uint64_t mk = arena_mark(f->ar);
    float *xin = fwd_alloc(f, 2 * n), *eps = fwd_alloc(f, 2 * n), *x0 = fwd_alloc(f, n);
    float tv[256];
    sd_status st = SD_OK;
    for (int k = 0; k < j->steps && !st; k++) {
        int t = (j->steps - 1 - k) * T / j->steps, tp = k + 1 < j->steps ? (j->steps - 2 - k) * T / j->steps : -1;
        for (int i = 0; i < B; i++) tv[i] = (float)t;
        be->ops->copy(be, xin, x, n * sizeof(float));
        if (cfg) be->ops->copy(be, xin + n, x, n * sizeof(float));
        unet_forward(f, j->unet, eps, xin, tv, j->ctx, j->pooled, j->time_ids, B, j->h, j->w, j->Lk);
        if (cfg)   /* ε = ε_u + g (ε_c − ε_u) = g ε_c + (1 − g) ε_u */
            be->ops->axpby(be, eps, j->guidance, eps, 1.0f - j->guidance, eps + n, (long long)n);
        double a = j->sched->alphas_cumprod[t], ap = tp >= 0 ? j->sched->alphas_cumprod[tp] : 1.0;
        be->ops->axpby(be, x0, (float)(1.0 / sqrt(a)), x, (float)(-sqrt(1.0 - a) / sqrt(a)), eps, (long long)n);
        be->ops->axpby(be, x, (float)sqrt(ap), x0, (float)sqrt(1.0 - ap), eps, (long long)n);
        st = backend_status(be);
    }
    arena_reset(f->ar, mk);
    return st;
}
