/* optim.c — see optim.h. */
#include <math.h>
#include <string.h>

#include "optim.h"

static sd_status twin_arena(struct arena *a, const char *name, struct backend *be, const struct weight_table *t,
                            float ***ptrs) {
    struct arena_allocator al = backend_allocator(be);
    arena_init(a, name, &al, 0);
    size_t bytes = 0;
    for (int i = 0; i < t->n; i++) bytes += ((size_t)sd_numel(t->rows[i].ndim, t->rows[i].shape) * 4 + 63) / 64 * 64;
    SD_TRY(arena_reserve(a, bytes));
    *ptrs = sd_calloc(t->n, sizeof(float *));
    if (!*ptrs) return SD_ERR_NOMEM;
    for (int i = 0; i < t->n; i++) {
        size_t n = (size_t)sd_numel(t->rows[i].ndim, t->rows[i].shape);
        (*ptrs)[i] = arena_floats(a, n);
        be->ops->zero(be, (*ptrs)[i], n * sizeof(float));
    }
    return SD_OK;
}

sd_status optim_init(struct optimizer *o, struct backend *be, const struct adamw_config *cfg,
                     const struct weight_table *params, const struct weight_table *grads) {
    memset(o, 0, sizeof *o);
    o->cfg = *cfg;
    o->params = params;
    o->grads = grads;
    if (params->n != grads->n) return sd_fail(SD_ERR_INVALID, "optimiser: parameter and gradient tables differ");
    sd_status st;
    if ((st = twin_arena(&o->m, "adam_m", be, params, &o->mp)) || (st = twin_arena(&o->v, "adam_v", be, params, &o->vp)))
        goto fail;
    if (cfg->ema > 0) {
        if ((st = twin_arena(&o->ema, "ema", be, params, &o->ep))) goto fail;
        for (int i = 0; i < params->n; i++)
            be->ops->copy(be, o->ep[i], *params->rows[i].dst, (size_t)sd_numel(params->rows[i].ndim, params->rows[i].shape) * 4);
    }
    return SD_OK;
fail:
    optim_free(o);
    return st;
}

void optim_free(struct optimizer *o) {
    arena_free(&o->m);
    arena_free(&o->v);
    arena_free(&o->ema);
    sd_free(o->mp);
    sd_free(o->vp);
    sd_free(o->ep);
    o->mp = o->vp = o->ep = NULL;
}

float optim_lr(const struct optimizer *o) {
    int s = o->step + 1;
    if (o->cfg.warmup > 0 && s < o->cfg.warmup) return o->cfg.lr * (float)s / (float)o->cfg.warmup;
    return o->cfg.lr;
}

void optim_zero_grad(struct optimizer *o, struct backend *be) { wt_zero(o->grads, be); }

double optim_grad_sq(struct optimizer *o, struct backend *be) {
    const struct weight_table *g = o->grads;
    double sq = 0;
    for (int i = 0; i < g->n; i++)
        sq += be->ops->dot(be, *g->rows[i].dst, *g->rows[i].dst, sd_numel(g->rows[i].ndim, g->rows[i].shape));
    return sq;
}

sd_status optim_apply(struct optimizer *o, struct backend *be, float scale) {
    const struct weight_table *p = o->params, *g = o->grads;
    float lr = optim_lr(o);
    o->step++;
    for (int i = 0; i < p->n; i++) {
        long long n = sd_numel(p->rows[i].ndim, p->rows[i].shape);
        float *gr = *g->rows[i].dst;
        if (scale != 1.0f) be->ops->axpby(be, gr, scale, gr, 0.0f, NULL, n);
        /* no weight decay on norms and biases (1-D parameters), as usual */
        float wd = p->rows[i].ndim >= 2 ? o->cfg.weight_decay : 0.0f;
        be->ops->adamw(be, *p->rows[i].dst, gr, o->mp[i], o->vp[i], n, lr, o->cfg.beta1, o->cfg.beta2, o->cfg.eps, wd, o->step);
        if (o->ep)
            be->ops->axpby(be, o->ep[i], o->cfg.ema, o->ep[i], 1.0f - o->cfg.ema, *p->rows[i].dst, n);
    }
    return backend_status(be);
}

sd_status optim_step(struct optimizer *o, struct backend *be) {
    double norm = sqrt(optim_grad_sq(o, be));
    SD_TRY(backend_status(be));
    o->last_grad_norm = norm;
    if (!isfinite(norm)) {
        LOG_W("step %d: non-finite gradient norm, step skipped", o->step + 1);
        return SD_OK;
    }
    float scale = o->cfg.clip > 0 && norm > o->cfg.clip ? (float)(o->cfg.clip / norm) : 1.0f;
    return optim_apply(o, be, scale);
}

void optim_swap_ema(struct optimizer *o) {
    if (!o->ep) return;
    for (int i = 0; i < o->params->n; i++) {
        float *t = *o->params->rows[i].dst;
        *o->params->rows[i].dst = o->ep[i];
        o->ep[i] = t;
    }
}
