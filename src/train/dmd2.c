/* dmd2.c — see dmd2.h and docs/dmd2.md (section numbers below refer to it).
 *
 * Conventions: B = batch; every tensor [B, C, h, w] latent-shaped; per-sample timesteps
 * live in host arrays and per-sample scalings are applied one sample at a time.  The
 * activation arena is reset at the start of each iteration and after each phase; the
 * iteration's prompts, generator input and x0_gen are allocated first, so they outlive
 * the phases (x0_gen feeds both updates). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/fs.h"
#include "../core/rng.h"
#include "../model/lora.h"
#include "../model/unet.h"
#include "../sample/sampler.h"
#include "estimate.h"
#include "../sample/timesteps.h"
#include "checkpoint.h"
#include "dmd2.h"
#include "dmd2_fixed.h"
#include "gan_head.h"
#include "shards.h"
#include "train_common.h"

#define MAXB 256

/* ---- the trainer ---- */

struct dmd2 {
    struct dmd2_config c;
    struct backend *be;
    struct arena acts;
    struct fwd f;
    struct cond k;
    struct vae v;
    struct unet real, generator, fake, ggenerator, gfake;
    struct head head, ghead;
    struct schedule sch;
    struct latent_cache cache;
    struct optimizer og, of, oh;
    struct lora lora;           /* with lora_rank > 0: og trains its A/B, generator = W0 + s·B·A */
    struct shards sh;           /* the UNet passes run over the batch's rows in shards */
    struct unet *tw[2][SHARDS_MAX];                      /* gradient twins of ggenerator, gfake (shards 1..) */
    const struct weight_table *gt[2][SHARDS_MAX];        /* [0]: ggenerator / gfake themselves */
    struct unet_tape *tapes;    /* [4][SHARDS_MAX]: generator, GAN-G, fake, GAN-D */
    int loaded[13];
    struct sd_rng rng;
    long long cursor;
    int step;
    int committed, stop;        /* this iteration changed weights; a stop was asked for */
    int broken;                 /* aborted after weights changed: no step, no save */
    float tid[6 * 2 * MAXB];
    int S, h, C, L, X, P;
    size_t per, mid_per;        /* floats per latent row, per mid-block feature row */
    double dm, gan_g, fake_l, gan_d;
    char sample[4096], ckpt[4096];
};

static double abar(const struct dmd2 *d, int t) { return d->sch.alphas_cumprod[t]; }
static int tape_mode(const struct dmd2 *d) { return d->c.recompute ? UNET_TRAIN_RECOMPUTE : UNET_TRAIN_KEEP; }

/* out_i = α_i·a_i + β_i·b_i per sample */
static void per_sample(struct dmd2 *d, float *out, const float *a, const float *b, const double *al, const double *be_, int B) {
    for (int i = 0; i < B; i++)
        d->be->ops->axpby(d->be, out + i * d->per, (float)al[i], a + i * d->per, b ? (float)be_[i] : 0.0f, b ? b + i * d->per : NULL,
                          (long long)d->per);
}

/* x_t = √ᾱ x0 + √(1−ᾱ) ε at per-sample t */
static void add_noise(struct dmd2 *d, float *xt, const float *x0, const float *eps, const float *t, int B) {
    double a[MAXB], b[MAXB];
    for (int i = 0; i < B; i++) { a[i] = sqrt(abar(d, (int)t[i])); b[i] = sqrt(1 - abar(d, (int)t[i])); }
    per_sample(d, xt, x0, eps, a, b, B);
}

/* x0 = (x_t − √(1−ᾱ) ε)/√ᾱ (in double for the scalings, §4) */
static void to_x0(struct dmd2 *d, float *x0, const float *xt, const float *eps, const float *t, int B) {
    double a[MAXB], b[MAXB];
    for (int i = 0; i < B; i++) {
        double ab = abar(d, (int)t[i]);
        a[i] = 1.0 / sqrt(ab); b[i] = -sqrt(1 - ab) / sqrt(ab);
    }
    per_sample(d, x0, xt, eps, a, b, B);
}

/* The iteration's random draws (a test may fix them: dmd2_fixed.h). */
static float *normals(struct dmd2 *d, enum dmd2_draw what, int i, size_t n) {
    float *h = sd_malloc(n * sizeof(float)), *dev = fwd_alloc(&d->f, n);
    if (h && dev) { dmd2_draw_normals(d->c.fixed, &d->rng, d->step, what, i, h, n); d->be->ops->upload(d->be, dev, h, n * 4); }
    sd_free(h);
    return h ? dev : NULL;
}

/* Gather cache rows idx[0..B) into latent / ctx / pooled batches (any may be NULL). */
static void gather(struct dmd2 *d, const long long *idx, int B, float *lat, float *ctx, float *pool) {
    const struct latent_cache *c = &d->cache;
    for (int i = 0; i < B; i++) {
        if (lat) d->be->ops->copy(d->be, lat + i * c->per_l, c->lat + idx[i] * c->per_l, c->per_l * 4);
        if (ctx) d->be->ops->copy(d->be, ctx + i * c->per_c, c->ctx + idx[i] * c->per_c, c->per_c * 4);
        if (pool) d->be->ops->copy(d->be, pool + (size_t)i * c->P, c->pool + idx[i] * c->P, (size_t)c->P * 4);
    }
}

static uint32_t draw_u(struct dmd2 *d, enum dmd2_draw w, int i, uint32_t n) {
    return dmd2_draw_u32(d->c.fixed, &d->rng, d->step, w, i, n);
}

static void draw(struct dmd2 *d, enum dmd2_draw what, long long *idx, int B) {
    for (int i = 0; i < B; i++, d->cursor++) idx[i] = draw_u(d, what, i, (uint32_t)d->cache.K);
}

/* The teacher's UNet (DIR/teacher or DIR/unet: estimate.h), with other weights when given. */
static sd_status load_unet(struct unet *u, struct backend *be, const char *dir, const char *weights) {
    char *p = sd_path_join(dir, train_teacher_component(dir));
    if (!p) return SD_ERR_NOMEM;
    sd_status st = unet_load(u, be, p, weights, DT_F32);
    sd_free(p);
    return st;
}

void dmd2_close(struct dmd2 *d) {
    if (!d) return;
    if (d->loaded[0]) cond_free(&d->k);
    if (d->loaded[1]) vae_free(&d->v);
    if (d->loaded[2]) unet_free(&d->real);
    if (d->loaded[3]) unet_free(&d->generator);
    if (d->loaded[4]) unet_free(&d->fake);
    if (d->loaded[5]) unet_free(&d->ggenerator);
    if (d->loaded[6]) unet_free(&d->gfake);
    if (d->loaded[7]) head_free(&d->head);
    if (d->loaded[8]) head_free(&d->ghead);
    if (d->loaded[9]) optim_free(&d->og);
    if (d->loaded[10]) optim_free(&d->of);
    if (d->loaded[11]) optim_free(&d->oh);
    if (d->loaded[12]) lora_free(&d->lora);
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < SHARDS_MAX; i++)
            if (d->tw[k][i]) { unet_free(d->tw[k][i]); sd_free(d->tw[k][i]); }
    sd_free(d->tapes);
    shards_free(&d->sh);
    cache_free(&d->cache);
    schedule_free(&d->sch);
    arena_free(&d->acts);
    backend_destroy(d->be);
    sd_free(d);
}

static struct ckpt_part *parts(struct dmd2 *d, struct ckpt_part *p) {
    p[0] = d->c.lora_rank > 0 ? (struct ckpt_part){ "generator_lora.", &d->lora.wt, &d->og }
                              : (struct ckpt_part){ "generator.", &d->generator.wt, &d->og };
    p[1] = (struct ckpt_part){ "fake.", &d->fake.wt, &d->of };
    p[2] = (struct ckpt_part){ "head.", &d->head.wt, &d->oh };
    return p;
}

/* Opening yields too (between the models it loads, and per chunk of the latent cache):
 * a stop there fails the open with SD_ERR_CANCELLED. */
static sd_status open_yield(struct dmd2 *d) {
    if (d->c.yield && d->c.yield(d->c.yield_ud))
        return sd_fail(SD_ERR_CANCELLED, "dmd2: stopped while the run was opening");
    return SD_OK;
}

/* The backend, the text encoders, VAE, teacher ("real"), generator and fake score, their
 * gradient tables and the noise schedule. */
static sd_status open_models(struct dmd2 *d) {
    const struct dmd2_config *c = &d->c;
    sd_status st;
    SD_TRY(backend_create(&d->be, c->backend ? c->backend : "cpu", c->threads));
    struct arena_allocator al = backend_allocator(d->be);
    arena_init(&d->acts, "activations", &al, 1);
    d->f = (struct fwd){ .be = d->be, .ar = &d->acts };
    SD_TRY(cond_load(&d->k, d->be, c->teacher_dir));
    d->loaded[0] = 1;
    SD_TRY(open_yield(d));
    char *p = sd_path_join(c->teacher_dir, "vae");
    st = p ? vae_load(&d->v, d->be, p, DT_F32) : SD_ERR_NOMEM;
    sd_free(p);
    SD_TRY(st);
    d->loaded[1] = 1;
    SD_TRY(open_yield(d));
    SD_TRY(load_unet(&d->real, d->be, c->teacher_dir, NULL));
    d->loaded[2] = 1;
    SD_TRY(open_yield(d));
    SD_TRY(load_unet(&d->generator, d->be, c->teacher_dir, c->generator_init));
    d->loaded[3] = 1;
    SD_TRY(open_yield(d));
    SD_TRY(load_unet(&d->fake, d->be, c->teacher_dir, NULL));     /* fake starts as the teacher */
    d->loaded[4] = 1;
    SD_TRY(open_yield(d));
    SD_TRY(unet_create(&d->ggenerator, d->be, &d->generator.cfg));
    d->loaded[5] = 1;
    SD_TRY(unet_create(&d->gfake, d->be, &d->fake.cfg));
    d->loaded[6] = 1;
    struct sched_config sc;
    if (!(p = sd_path_join(c->teacher_dir, "scheduler/scheduler_config.json"))) return SD_ERR_NOMEM;
    st = sched_config_load(&sc, p);
    sd_free(p);
    return st ? st : schedule_init(&d->sch, &sc);
}

sd_status dmd2_open(struct dmd2 **out, const struct dmd2_config *c) {
    *out = NULL;
    if (!c->data || c->batch < 1 || c->batch > MAXB || c->steps < 1 || c->ttur < 1 || c->nsteps < 1 || c->nsteps > 4)
        return sd_fail(SD_ERR_INVALID, "dmd2: need data, batch in [1, %d], steps >= 1, ttur >= 1, 1..4 timesteps", MAXB);
    char why[160];
    if (timesteps_check(c->timesteps, c->nsteps, 4, 1000, "dmd2: timesteps", why, sizeof why))
        return sd_fail(SD_ERR_INVALID, "%s", why);
    if (c->dm_min_t < 0 || c->dm_max_t > 999 || c->dm_min_t > c->dm_max_t)
        return sd_fail(SD_ERR_INVALID, "dmd2: DM timestep range");
    if (c->lora_rank < 0 || (c->lora_rank > 0 && !(c->lora_alpha > 0)))
        return sd_fail(SD_ERR_INVALID, "dmd2: lora_rank must be >= 0 and lora_alpha > 0");
    struct dmd2 *d = sd_calloc(1, sizeof *d);
    if (!d) return SD_ERR_NOMEM;
    d->c = *c;
    sd_status st;
    if (sd_mkdir(c->out_dir, 0755) && errno != EEXIST) {
        st = sd_fail(SD_ERR_IO, "%s: cannot create: %s", c->out_dir, sd_fs_strerror(errno));
        goto fail;
    }
    if ((st = open_models(d))) goto fail;
    /* sizes: the mid block runs at latent / 2^(levels-1) */
    d->S = dataset_resolution(c->data);
    int vs = vae_scale(&d->v), lv = d->generator.cfg.nlevels;
    if (d->S % (vs << (lv - 1))) { st = sd_fail(SD_ERR_INVALID, "resolution %d does not fit the VAE and UNet", d->S); goto fail; }
    d->h = d->S / vs; d->C = d->generator.cfg.in_ch; d->L = d->k.L; d->X = d->k.X; d->P = d->k.P;
    d->per = (size_t)d->C * d->h * d->h;
    int mid_c = d->fake.cfg.ch[lv - 1], mid_s = d->h >> (lv - 1);
    d->mid_per = (size_t)mid_c * mid_s * mid_s;
    /* shards: every UNet pass splits its rows over them; shard i > 0 accumulates into
     * twins of ggenerator and gfake, summed into them after each backward pass */
    if ((st = shards_init(&d->sh, d->be, &d->acts, shards_pick(d->be, c->shards, c->batch, 2 * d->generator.wt.total), c->batch)))
        goto fail;
    if (!(d->tapes = sd_calloc(4 * SHARDS_MAX, sizeof *d->tapes))) { st = SD_ERR_NOMEM; goto fail; }
    d->gt[0][0] = &d->ggenerator.wt;
    d->gt[1][0] = &d->gfake.wt;
    for (int k = 0; k < 2; k++)
        for (int i = 1; i < d->sh.n; i++) {
            if (!(d->tw[k][i] = sd_calloc(1, sizeof(struct unet)))) { st = SD_ERR_NOMEM; goto fail; }
            if ((st = unet_create(d->tw[k][i], d->sh.s[i].be, k ? &d->fake.cfg : &d->generator.cfg))) {
                sd_free(d->tw[k][i]); d->tw[k][i] = NULL; goto fail;
            }
            d->gt[k][i] = &d->tw[k][i]->wt;
        }
    if (d->sh.n > 1) LOG_I("dmd2: %d shards (one thread each)", d->sh.n);
    if ((st = head_create(&d->head, d->be, mid_c, mid_s))) goto fail;
    d->loaded[7] = 1;
    if ((st = head_create(&d->ghead, d->be, mid_c, mid_s))) goto fail;
    d->loaded[8] = 1;
    if ((st = dmd2_fixed_head(c->fixed, &d->head.wt, d->be, c->seed ^ 0x4ead))) goto fail;
    struct adamw_config og = { c->lr_generator, 0.9f, 0.999f, 1e-8f, 0.01f, c->clip, c->warmup, 0 };
    struct adamw_config of = og;
    of.lr = c->lr_fake;
    if (c->lora_rank > 0) {   /* the generator's base stays frozen at its initial weights */
        if ((st = lora_create(&d->lora, d->be, &d->generator.wt, &d->ggenerator.wt, c->lora_rank, c->lora_alpha, c->seed ^ 0x10a))) goto fail;
        d->loaded[12] = 1;
        st = optim_init(&d->og, d->be, &og, &d->lora.wt, &d->lora.gt);
    } else {
        st = optim_init(&d->og, d->be, &og, &d->generator.wt, &d->ggenerator.wt);
    }
    if (st) goto fail;
    d->loaded[9] = 1;
    if ((st = optim_init(&d->of, d->be, &of, &d->fake.wt, &d->gfake.wt))) goto fail;
    d->loaded[10] = 1;
    if ((st = optim_init(&d->oh, d->be, &of, &d->head.wt, &d->ghead.wt))) goto fail;
    d->loaded[11] = 1;
    sd_rng_init(&d->rng, c->seed);
    struct yield_hook y = { c->yield, c->yield_ud };
    if ((st = cache_build(&d->cache, &d->f, &d->k, &d->v, c->data, c->cache_size, &y))) goto fail;
    if ((st = dmd2_fixed_cache(c->fixed, &d->cache, d->be))) goto fail;
    time_ids_square(d->tid, 2 * MAXB, d->S);
    if (c->resume) {
        char dir[4096];
        struct ckpt_part pp[3];
        struct ckpt_state s;
        if ((st = ckpt_latest(c->out_dir, dir, sizeof dir)) || (st = ckpt_load_parts(dir, d->be, parts(d, pp), 3, &s))) goto fail;
        sd_free(s.config_json);
        d->step = s.step;
        d->rng.seed = s.rng_seed;
        d->rng.offset = s.rng_offset;
        d->cursor = s.data_cursor;
        if (c->lora_rank > 0) lora_merge(&d->lora, d->be);
        LOG_I("dmd2: resumed from %s at step %d (%d generator steps)", dir, d->step, d->og.step);
    }
    *out = d;
    return SD_OK;
fail:
    dmd2_close(d);
    return st;
}

int dmd2_done(const struct dmd2 *d) { return d->step >= d->c.steps; }
int dmd2_broken(const struct dmd2 *d) { return d->broken; }
int dmd2_iteration(const struct dmd2 *d) { return d->step; }

/* Clip several optimisers by one joint norm and step them. */
static sd_status joint_step(struct dmd2 *d, struct optimizer **os, int n, double *norm_out) {
    double sq = 0;
    for (int i = 0; i < n; i++) sq += optim_grad_sq(os[i], d->be);
    SD_TRY(backend_status(d->be));
    double norm = sqrt(sq);
    *norm_out = norm;
    if (!isfinite(norm)) { LOG_W("dmd2 step %d: non-finite gradient norm, update skipped", d->step); return SD_OK; }
    float scale = d->c.clip > 0 && norm > d->c.clip ? (float)(d->c.clip / norm) : 1.0f;
    for (int i = 0; i < n; i++) { os[i]->last_grad_norm = norm; SD_TRY(optim_apply(os[i], d->be, scale)); }
    return SD_OK;
}

double dmd2_dm_grad(const float *x, const float *x_fake, const float *x_real, int B, size_t per, float *grad) {
    double loss = 0;
    size_t n = (size_t)B * per;
    for (int i = 0; i < B; i++) {
        double w = 0;
        for (size_t q = 0; q < per; q++) w += fabs((double)x[i * per + q] - x_real[i * per + q]);
        w /= per;
        for (size_t q = 0; q < per; q++) {
            double g = ((double)x_fake[i * per + q] - x_real[i * per + q]) / w;
            if (!isfinite(g)) g = 0;    /* nan_to_num */
            loss += 0.5 * g * g;
            grad[i * per + q] = (float)(g / n);
        }
    }
    return loss / n;
}

static double softplus(double x) { return x > 30 ? x : log1p(exp(x)); }
static double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* ---- UNet passes over a batch's rows, shard by shard (shards.h) ----
 * Rows [N·i/n, N·(i+1)/n) of every [N, ...] buffer go to shard i.  A pass's tapes live on
 * the shards' arenas (the trainer's arena when n = 1) until the caller resets them. */
enum { PASS_FORWARD, PASS_DOWN, PASS_BACKWARD };
struct pass {
    struct dmd2 *d;
    int op, N;
    const struct unet *u;
    struct unet_tape *tp;           /* [SHARDS_MAX] (down, backward) */
    int g;                          /* backward: -1 frozen, 0 into ggenerator, 1 into gfake */
    float *out;                     /* forward: ε̂; down: ε̂ through the up half too (NULL: down only) */
    const float *x, *t, *ctx, *pool;
    float *mid;                     /* down: mid-block features gathered (n > 1; may be NULL) */
    const float *dout, *dmid;       /* backward: from the output (through the up half), or from the mid block */
    float *dx;                      /* backward: into the input (may be NULL) */
};

static void pass_shard(struct shard *s, void *p) {
    const struct pass *a = p;
    struct dmd2 *d = a->d;
    int lo, hi;
    shard_range(a->N, s->index, d->sh.n, &lo, &hi);
    int cnt = hi - lo;
    struct unet *g = a->op != PASS_BACKWARD || a->g < 0 ? NULL : s->index == 0 ? (a->g ? &d->gfake : &d->ggenerator)
                                                                           : d->tw[a->g][s->index];
    if (g && s->index > 0) unet_zero(s->be, g);   /* a twin holds this pass's gradient only */
    if (cnt <= 0) return;
    struct fwd *f = &s->f;
    size_t pl = d->per, pc = d->cache.per_c, pm = d->mid_per;
    struct unet_tape *tp = a->tp ? &a->tp[s->index] : NULL;
    if (a->op == PASS_FORWARD) {
        uint64_t mk = arena_mark(f->ar);
        unet_forward(f, a->u, a->out + lo * pl, a->x + lo * pl, a->t + lo, a->ctx + lo * pc, a->pool + (size_t)lo * d->P,
                     d->tid, cnt, d->h, d->h, d->L);
        arena_reset(f->ar, mk);
    } else if (a->op == PASS_DOWN) {
        unet_down(f, a->u, tp, tape_mode(d), a->x + lo * pl, a->t + lo, a->ctx + lo * pc, a->pool + (size_t)lo * d->P,
                    d->tid, cnt, d->h, d->h, d->L);
        if (!s->be->err && a->out) unet_up(f, a->u, tp, a->out + lo * pl);
        if (!s->be->err && a->mid) s->be->ops->copy(s->be, a->mid + lo * pm, tp->mid_out, cnt * pm * 4);
    } else {
        if (a->dout) unet_up_backward(f, a->u, g, tp, a->dout + lo * pl, NULL);
        else unet_tape_begin_backward(f, a->u, tp);
        if (!s->be->err)
            unet_down_backward(f, a->u, g, tp, a->dmid ? a->dmid + lo * pm : NULL, a->dx ? a->dx + lo * pl : NULL, NULL, NULL);
    }
}

/* Before every UNet pass: the yield hook (dmd2.h: a stop undoes a weightless iteration). */
static sd_status yield_point(struct dmd2 *d) {
    int y = d->c.yield ? d->c.yield(d->c.yield_ud) : DMD2_YIELD_CONTINUE;
    if (y == DMD2_YIELD_ABORT) {
        d->broken = d->committed;
        return sd_fail(SD_ERR_CANCELLED, "dmd2: iteration %d aborted%s", d->step,
                       d->committed ? " half-way through its updates (the last checkpoint stands)" : "");
    }
    if (y == DMD2_YIELD_STOP) d->stop = 1;
    if (d->stop && !d->committed)
        return sd_fail(SD_ERR_CANCELLED, "dmd2: iteration %d stopped before it changed any weight", d->step);
    return SD_OK;
}

static sd_status pass_run(struct dmd2 *d, struct pass *a) {
    SD_TRY(yield_point(d));
    a->d = d;
    SD_TRY(shards_run(&d->sh, pass_shard, a));
    return a->op == PASS_BACKWARD && a->g >= 0 ? shards_reduce(&d->sh, d->gt[a->g][0], d->gt[a->g]) : SD_OK;
}

/* out [N] = the UNet u's ε̂ (forward only). */
static sd_status sh_forward(struct dmd2 *d, const struct unet *u, float *out, const float *x, const float *t,
                            const float *ctx, const float *pool, int N) {
    struct pass a = { .op = PASS_FORWARD, .N = N, .u = u, .out = out, .x = x, .t = t, .ctx = ctx, .pool = pool };
    return pass_run(d, &a);
}

/* Taped down half (+ the up half into out when out != NULL); *mid (when mid != NULL) = the
 * mid-block features [N, mid_per]: the tape's own with one shard, else gathered into a
 * buffer on d's arena. */
static sd_status sh_down(struct dmd2 *d, struct unet_tape *tp, const struct unet *u, float *out, const float *x,
                           const float *t, const float *ctx, const float *pool, int N, const float **mid) {
    float *buf = NULL;
    if (mid && d->sh.n > 1 && !(buf = fwd_alloc(&d->f, (size_t)N * d->mid_per))) return backend_status(d->be);
    struct pass a = { .op = PASS_DOWN, .N = N, .u = u, .tp = tp, .out = out, .x = x, .t = t, .ctx = ctx, .pool = pool,
                      .mid = buf };
    SD_TRY(pass_run(d, &a));
    if (mid) *mid = buf ? buf : tp[0].mid_out;
    return SD_OK;
}

/* Backward of a taped pass from dout (the output) or dmid (the mid block); g: -1 frozen,
 * 0 ggenerator, 1 gfake (+=); dx (may be NULL) = the input gradient. */
static sd_status sh_backward(struct dmd2 *d, struct unet_tape *tp, const struct unet *u, int g, const float *dout,
                             const float *dmid, float *dx, int N) {
    struct pass a = { .op = PASS_BACKWARD, .N = N, .u = u, .tp = tp, .g = g, .dout = dout, .dmid = dmid, .dx = dx };
    return pass_run(d, &a);
}

/* ---- one iteration, in phases ----
 * The iteration's prompts, the generator's input and x0_gen come first on the activation
 * arena and live through it; each phase resets the arena to its own mark.  The caller's
 * yield hook runs before every UNet pass (pass_run): a stop it asks for is honoured until
 * the first weight update of the iteration (d->committed), by undoing the iteration (step,
 * RNG, data cursor as before it: a checkpoint is then the last completed iteration); after
 * that the iteration completes, still yielding between passes. */
struct iter {
    int B, generator_iter;
    size_t nb;
    float *ctx, *pool;          /* the batch's prompts */
    float *xt, *eh, *x0;        /* the generator's input at tk, its ε̂, x0_gen */
    float tk[MAXB];
    double gn_generator, gn_fake;
};

/* 1. The generator's input (§8.3, §8.4): backward simulation from pure noise through the
 * first k sampler steps, or (ablated) real latents noised at a random sampler step. */
static sd_status generator_input(struct dmd2 *d, struct iter *it) {
    const struct dmd2_config *c = &d->c;
    struct backend *be = d->be;
    struct fwd *f = &d->f;
    int B = it->B;
    size_t nb = it->nb;
    sd_status st = SD_OK;
    uint64_t mk = arena_mark(f->ar);
    if (c->backward_simulation) {
        int k = (int)draw_u(d, DMD2_DRAW_SIM_K, 0, (uint32_t)c->nsteps);
        float *n0 = normals(d, DMD2_DRAW_INPUT_NOISE, 0, nb);
        for (int i = 0; i < B; i++) it->tk[i] = (float)c->timesteps[k];
        if (k == 0) be->ops->copy(be, it->xt, n0, nb * 4);
        else {
            float *x = normals(d, DMD2_DRAW_SIM_START, 0, nb), *e = fwd_alloc(f, nb), tv[MAXB];
            for (int s = 0; s < k && !st; s++) {
                for (int i = 0; i < B; i++) tv[i] = (float)c->timesteps[s];
                if ((st = sh_forward(d, &d->generator, e, x, tv, it->ctx, it->pool, B))) break;
                to_x0(d, it->x0, x, e, tv, B);
                if (s + 1 < k) {
                    float *z = normals(d, DMD2_DRAW_SIM_RENOISE, s, nb);
                    for (int i = 0; i < B; i++) tv[i] = (float)c->timesteps[s + 1];
                    add_noise(d, x, it->x0, z, tv, B);
                }
            }
            if (!st) add_noise(d, it->xt, it->x0, n0, it->tk, B);
        }
    } else {
        float *real = fwd_alloc(f, nb), *n0 = normals(d, DMD2_DRAW_INPUT_NOISE, 0, nb);
        long long r2[MAXB];
        draw(d, DMD2_DRAW_INPUT_ROWS, r2, B);
        gather(d, r2, B, real, NULL, NULL);
        for (int i = 0; i < B; i++) it->tk[i] = (float)c->timesteps[draw_u(d, DMD2_DRAW_INPUT_STEP, i, (uint32_t)c->nsteps)];
        add_noise(d, it->xt, real, n0, it->tk, B);
        for (int i = 0; i < B; i++)   /* the first step's input is the noise itself */
            if ((int)it->tk[i] == c->timesteps[0]) be->ops->copy(be, it->xt + i * d->per, n0 + i * d->per, d->per * 4);
    }
    arena_reset(f->ar, mk);
    return st;
}

/* 3a. dx0 = the DM gradient (§5): x0_gen noised at t ∈ [dm_min_t, dm_max_t], the fake
 * score's x0 against the real score's with CFG ([cond; uncond] in one batch). */
static sd_status dm_gradient(struct dmd2 *d, struct iter *it, float *dx0) {
    const struct dmd2_config *c = &d->c;
    struct backend *be = d->be;
    struct fwd *f = &d->f;
    int B = it->B;
    size_t nb = it->nb, pc = (size_t)B * d->cache.per_c, pp = (size_t)B * d->P;
    float t2[2 * MAXB];
    uint64_t mk = arena_mark(f->ar);
    float *xd = fwd_alloc(f, nb), *e1 = fwd_alloc(f, nb), *xf = fwd_alloc(f, nb), *xr = fwd_alloc(f, nb);
    float *x2 = fwd_alloc(f, 2 * nb), *e2 = fwd_alloc(f, 2 * nb), *c2 = fwd_alloc(f, 2 * pc), *p2 = fwd_alloc(f, 2 * pp);
    float *z = normals(d, DMD2_DRAW_DM_NOISE, 0, nb);
    for (int i = 0; i < B; i++)
        t2[i] = t2[B + i] = (float)(c->dm_min_t + draw_u(d, DMD2_DRAW_DM_T, i, (uint32_t)(c->dm_max_t - c->dm_min_t + 1)));
    add_noise(d, xd, it->x0, z, t2, B);
    SD_TRY(sh_forward(d, &d->fake, e1, xd, t2, it->ctx, it->pool, B));
    to_x0(d, xf, xd, e1, t2, B);
    be->ops->copy(be, x2, xd, nb * 4);
    be->ops->copy(be, x2 + nb, xd, nb * 4);
    be->ops->copy(be, c2, it->ctx, pc * 4);
    be->ops->zero(be, c2 + pc, pc * 4);
    be->ops->copy(be, p2, it->pool, pp * 4);
    be->ops->zero(be, p2 + pp, pp * 4);
    int cfg = c->guidance > 1.0f;
    SD_TRY(sh_forward(d, &d->real, e2, x2, t2, c2, p2, cfg ? 2 * B : B));
    if (cfg) be->ops->axpby(be, e2, c->guidance, e2, 1.0f - c->guidance, e2 + nb, (long long)nb);
    to_x0(d, xr, xd, e2, t2, B);
    SD_TRY(backend_status(be));
    float *hx = sd_malloc(nb * 3 * sizeof(float));
    if (!hx) return SD_ERR_NOMEM;
    float *hf = hx + nb, *hr = hf + nb;
    be->ops->download(be, hx, it->x0, nb * 4);
    be->ops->download(be, hf, xf, nb * 4);
    be->ops->download(be, hr, xr, nb * 4);
    d->dm = dmd2_dm_grad(hx, hf, hr, B, d->per, hx);
    if (c->fixed && c->fixed->dm_grad) memcpy(c->fixed->dm_grad, hx, nb * sizeof(float));
    be->ops->upload(be, dx0, hx, nb * 4);
    sd_free(hx);
    arena_reset(f->ar, mk);
    return backend_status(be);
}

/* 3b. dx0 += gan_g·dL_GAN_G/dx0, L_GAN_G = mean softplus(−ℓ(noised x0_gen)) through the
 * frozen fake score's down half and the head (§7). */
static sd_status gan_g_gradient(struct dmd2 *d, struct iter *it, float *dx0) {
    struct backend *be = d->be;
    struct fwd *f = &d->f;
    int B = it->B;
    size_t nb = it->nb;
    float t2[MAXB], host_l[MAXB];
    uint64_t mk = arena_mark(f->ar), smk[SHARDS_MAX];
    float *zg = normals(d, DMD2_DRAW_GAN_G_NOISE, 0, nb), *lg = fwd_alloc(f, B), *dl = fwd_alloc(f, B), *dxg = fwd_alloc(f, nb);
    float *xd = fwd_alloc(f, nb);
    for (int i = 0; i < B; i++) t2[i] = (float)draw_u(d, DMD2_DRAW_GAN_G_T, i, 1000u);
    add_noise(d, xd, it->x0, zg, t2, B);
    struct unet_tape *tp = d->tapes + SHARDS_MAX;
    struct head_save sv;
    const float *mid = NULL;
    shards_mark(&d->sh, smk);
    SD_TRY(sh_down(d, tp, &d->fake, NULL, xd, t2, it->ctx, it->pool, B, &mid));
    head_forward(f, &d->head, &sv, lg, mid, B);
    SD_TRY(backend_status(be));
    be->ops->download(be, host_l, lg, B * 4);
    d->gan_g = 0;
    for (int i = 0; i < B; i++) {
        d->gan_g += softplus(-host_l[i]) / B;
        host_l[i] = (float)(-sigmoid(-host_l[i]) / B * d->c.gan_weight_g);
    }
    be->ops->upload(be, dl, host_l, B * 4);
    float *dmid = fwd_alloc(f, (size_t)B * d->mid_per);
    head_backward(f, &d->head, NULL, &sv, dl, dmid, B);
    SD_TRY(backend_status(be));
    SD_TRY(sh_backward(d, tp, &d->fake, -1, NULL, dmid, dxg, B));
    double a[MAXB], one[MAXB];
    for (int i = 0; i < B; i++) { a[i] = sqrt(abar(d, (int)t2[i])); one[i] = 1.0; }
    per_sample(d, dx0, dx0, dxg, one, a, B);
    arena_reset(f->ar, mk);
    shards_reset(&d->sh, smk);
    return SD_OK;
}

/* 3c. Through x0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ into ε̂, back through the taped generator, and
 * the generator's update: the iteration's first weight change. */
static sd_status generator_backward(struct dmd2 *d, struct iter *it, struct unet_tape *gtp, const float *dx0) {
    const struct dmd2_config *c = &d->c;
    struct backend *be = d->be;
    double sc[MAXB];
    for (int i = 0; i < it->B; i++) sc[i] = -sqrt(1 - abar(d, (int)it->tk[i])) / sqrt(abar(d, (int)it->tk[i]));
    float *deh = fwd_alloc(&d->f, it->nb);
    if (!deh) return backend_status(be);
    per_sample(d, deh, dx0, NULL, sc, NULL, it->B);
    optim_zero_grad(&d->og, be);
    if (c->lora_rank > 0) unet_zero(be, &d->ggenerator);   /* og holds only the adapters' gradients */
    SD_TRY(sh_backward(d, gtp, &d->generator, 0, deh, NULL, NULL, it->B));
    if (c->lora_rank > 0) lora_grads(&d->lora, be);
    SD_TRY(backend_status(be));
    struct optimizer *og = &d->og;
    d->committed = 1;
    SD_TRY(joint_step(d, &og, 1, &it->gn_generator));
    if (c->lora_rank > 0) lora_merge(&d->lora, be);
    return SD_OK;
}

/* 2 + 3. The generator's forward (taped on generator iterations: every ttur-th) gives
 * x0_gen; on generator iterations, its update with L_DM + gan_g·L_GAN_G. */
static sd_status generator_phase(struct dmd2 *d, struct iter *it) {
    struct fwd *f = &d->f;
    struct unet_tape *gtp = d->tapes;   /* per shard: the generator's, then GAN-G, fake, GAN-D */
    uint64_t mk = arena_mark(f->ar), smk[SHARDS_MAX];
    shards_mark(&d->sh, smk);
    sd_status st = it->generator_iter ? sh_down(d, gtp, &d->generator, it->eh, it->xt, it->tk, it->ctx, it->pool, it->B, NULL)
                                : sh_forward(d, &d->generator, it->eh, it->xt, it->tk, it->ctx, it->pool, it->B);
    if (!st) {
        to_x0(d, it->x0, it->xt, it->eh, it->tk, it->B);
        st = backend_status(d->be);
    }
    if (!st && it->generator_iter) {
        float *dx0 = fwd_alloc(f, it->nb);
        st = dx0 ? dm_gradient(d, it, dx0) : backend_status(d->be);
        d->gan_g = 0;
        if (!st && d->c.gan) st = gan_g_gradient(d, it, dx0);
        if (!st && d->c.fixed && d->c.fixed->dx0) d->be->ops->download(d->be, d->c.fixed->dx0, dx0, it->nb * 4);
        if (!st) st = generator_backward(d, it, gtp, dx0);
    }
    arena_reset(f->ar, mk);   /* the generator tape is dead; x0_gen (allocated before it) lives */
    shards_reset(&d->sh, smk);
    return st;
}

/* 4a. The fake score's denoising loss on x0_gen (§6) into gfake. */
static sd_status fake_denoise(struct dmd2 *d, struct iter *it) {
    struct backend *be = d->be;
    struct fwd *f = &d->f;
    size_t nb = it->nb;
    float t2[MAXB];
    uint64_t mk = arena_mark(f->ar), smk[SHARDS_MAX];
    float *z = normals(d, DMD2_DRAW_FAKE_NOISE, 0, nb), *xn = fwd_alloc(f, nb), *pred = fwd_alloc(f, nb);
    for (int i = 0; i < it->B; i++) t2[i] = (float)draw_u(d, DMD2_DRAW_FAKE_T, i, 1000u);
    add_noise(d, xn, it->x0, z, t2, it->B);
    struct unet_tape *tp = d->tapes + 2 * SHARDS_MAX;
    shards_mark(&d->sh, smk);
    SD_TRY(sh_down(d, tp, &d->fake, pred, xn, t2, it->ctx, it->pool, it->B, NULL));
    be->ops->axpby(be, pred, 1.0f, pred, -1.0f, z, (long long)nb);
    d->fake_l = be->ops->dot(be, pred, pred, (long long)nb) / nb;
    be->ops->axpby(be, pred, 2.0f / nb, pred, 0.0f, NULL, (long long)nb);
    SD_TRY(sh_backward(d, tp, &d->fake, 1, pred, NULL, NULL, it->B));
    arena_reset(f->ar, mk);
    shards_reset(&d->sh, smk);
    return SD_OK;
}

/* 4b. gan_d·L_GAN_D (§7): real latents (with their own captions) against x0_gen, each at
 * its own t, through the fake score's down half and the head, into gfake and ghead. */
static sd_status gan_d_gradient(struct dmd2 *d, struct iter *it) {
    struct backend *be = d->be;
    struct fwd *f = &d->f;
    int B = it->B;
    size_t nb = it->nb, pc = (size_t)B * d->cache.per_c, pp = (size_t)B * d->P;
    float t2[2 * MAXB], host_l[2 * MAXB];
    long long ridx[MAXB];
    uint64_t mk = arena_mark(f->ar), smk[SHARDS_MAX];
    float *x2 = fwd_alloc(f, 2 * nb), *c2 = fwd_alloc(f, 2 * pc), *p2 = fwd_alloc(f, 2 * pp);
    float *z = normals(d, DMD2_DRAW_GAN_D_NOISE, 0, 2 * nb), *xn = fwd_alloc(f, 2 * nb);
    float *lg = fwd_alloc(f, 2 * B), *dl = fwd_alloc(f, 2 * B);
    draw(d, DMD2_DRAW_GAN_D_ROWS, ridx, B);
    gather(d, ridx, B, x2, c2, p2);
    be->ops->copy(be, x2 + nb, it->x0, nb * 4);
    be->ops->copy(be, c2 + pc, it->ctx, pc * 4);
    be->ops->copy(be, p2 + pp, it->pool, pp * 4);
    for (int i = 0; i < 2 * B; i++) t2[i] = (float)draw_u(d, DMD2_DRAW_GAN_D_T, i, 1000u);
    add_noise(d, xn, x2, z, t2, 2 * B);
    struct unet_tape *tp = d->tapes + 3 * SHARDS_MAX;
    struct head_save sv;
    const float *mid = NULL;
    shards_mark(&d->sh, smk);
    SD_TRY(sh_down(d, tp, &d->fake, NULL, xn, t2, c2, p2, 2 * B, &mid));
    head_forward(f, &d->head, &sv, lg, mid, 2 * B);
    SD_TRY(backend_status(be));
    be->ops->download(be, host_l, lg, 2 * B * 4);
    for (int i = 0; i < B; i++) {   /* rows 0..B-1 real, B..2B-1 fake */
        double lr = host_l[i], lf = host_l[B + i];
        d->gan_d += (softplus(-lr) + softplus(lf)) / B;
        host_l[i] = (float)(-sigmoid(-lr) / B * d->c.gan_weight_d);
        host_l[B + i] = (float)(sigmoid(lf) / B * d->c.gan_weight_d);
    }
    be->ops->upload(be, dl, host_l, 2 * B * 4);
    float *dmid = fwd_alloc(f, (size_t)2 * B * d->mid_per);
    head_backward(f, &d->head, &d->ghead, &sv, dl, dmid, 2 * B);
    SD_TRY(backend_status(be));
    SD_TRY(sh_backward(d, tp, &d->fake, 1, NULL, dmid, NULL, 2 * B));
    arena_reset(f->ar, mk);
    shards_reset(&d->sh, smk);
    return SD_OK;
}

/* 4. The fake score and GAN head's update (every iteration). */
static sd_status fake_phase(struct dmd2 *d, struct iter *it) {
    optim_zero_grad(&d->of, d->be);
    optim_zero_grad(&d->oh, d->be);
    SD_TRY(fake_denoise(d, it));
    d->gan_d = 0;
    if (d->c.gan) SD_TRY(gan_d_gradient(d, it));
    struct optimizer *os[2] = { &d->of, &d->oh };
    d->committed = 1;
    return joint_step(d, os, 2, &it->gn_fake);
}

static void rng_fill(void *ud, int step, float *host, size_t n) {
    (void)step;
    sd_rng_normal(ud, host, n);
}

static int sample_step(void *ud, int step, int total) {
    (void)step; (void)total;
    return yield_point(ud) != SD_OK;   /* never: samples come after the iteration committed */
}

/* 5. A sample grid of the generator (fixed noise, the first cached prompts). */
static sd_status samples(struct dmd2 *d, const struct iter *it) {
    const struct dmd2_config *c = &d->c;
    struct backend *be = d->be;
    struct fwd *f = &d->f;
    int n = it->B < 8 ? it->B : 8;
    size_t nl = (size_t)n * d->per, ni = (size_t)n * 3 * d->S * d->S;
    uint64_t mk = arena_mark(f->ar);
    float *x = fwd_alloc(f, nl), *img = fwd_alloc(f, ni), *hbuf = sd_malloc(sizeof(float) * (ni + nl));
    sd_status st = hbuf && x && img ? SD_OK : hbuf ? backend_status(be) : SD_ERR_NOMEM;
    struct sd_rng r2;
    sd_rng_init(&r2, 4321);
    if (!st) {
        sd_rng_normal(&r2, hbuf, nl);
        be->ops->upload(be, x, hbuf, nl * 4);
        struct sampler_job j = { .unet = &d->generator, .sched = &d->sch, .ctx = d->cache.ctx, .pooled = d->cache.pool,
                                 .time_ids = d->tid, .N = n, .h = d->h, .w = d->h, .Lk = d->L, .nsteps = c->nsteps,
                                 .timesteps = c->timesteps, .noise = rng_fill, .noise_ud = &r2,
                                 .on_step = sample_step, .step_ud = d };
        if (!(st = yield_point(d)) && !(st = sampler_run(f, &j, x))) {
            be->ops->axpby(be, x, 1.0f / d->v.cfg.scaling_factor, x, 0.0f, NULL, (long long)nl);
            vae_decode(f, &d->v, img, x, n, d->h, d->h);
            be->ops->download(be, hbuf, img, ni * 4);
            snprintf(d->sample, sizeof d->sample, "%s/samples", c->out_dir);
            sd_mkdir(d->sample, 0755);
            snprintf(d->sample, sizeof d->sample, "%s/samples/%07d.png", c->out_dir, d->step);
            long items[8];   /* n <= 8: the first cached prompts */
            st = save_grid(d->sample, hbuf, n, d->S, c->data, grid_first_items(items, n));
        }
    }
    sd_free(hbuf);
    arena_reset(f->ar, mk);
    return st;
}

sd_status dmd2_step(struct dmd2 *d, struct dmd2_stats *out) {
    const struct dmd2_config *c = &d->c;
    if (dmd2_done(d)) return sd_fail(SD_ERR_INVALID, "dmd2: all %d steps done", c->steps);
    if (d->broken) return sd_fail(SD_ERR_INVALID, "dmd2: the run was aborted half-way through an iteration");
    struct iter it = { .B = c->batch, .generator_iter = d->step % c->ttur == 0, .gn_generator = d->og.last_grad_norm };
    it.nb = (size_t)it.B * d->per;
    struct sd_rng rng0 = d->rng;
    long long cursor0 = d->cursor;
    d->step++;
    d->sample[0] = d->ckpt[0] = 0;
    d->committed = d->stop = 0;
    arena_reset(&d->acts, 0);
    shards_reset(&d->sh, NULL);
    struct fwd *f = &d->f;
    it.x0 = fwd_alloc(f, it.nb);
    it.ctx = fwd_alloc(f, (size_t)it.B * d->cache.per_c);
    it.pool = fwd_alloc(f, (size_t)it.B * d->P);
    it.xt = fwd_alloc(f, it.nb);
    it.eh = fwd_alloc(f, it.nb);
    if (!it.x0 || !it.ctx || !it.pool || !it.xt || !it.eh) return backend_status(d->be);
    long long idx[MAXB];
    draw(d, DMD2_DRAW_BATCH, idx, it.B);
    gather(d, idx, it.B, NULL, it.ctx, it.pool);
    sd_status st = generator_input(d, &it);
    if (!st) st = generator_phase(d, &it);
    if (!st) st = fake_phase(d, &it);
    if (st == SD_ERR_CANCELLED && !d->committed) {   /* undone: as if it never began */
        d->step--;
        d->rng = rng0;
        d->cursor = cursor0;
        return st;
    }
    if (!st && c->sample_every > 0 && (d->step % c->sample_every == 0 || d->step == c->steps))
        st = samples(d, &it);
    if (!st && ((c->checkpoint_every > 0 && d->step % c->checkpoint_every == 0) || d->step == c->steps))
        st = dmd2_save(d, NULL, 0);
    if (st) return st;
    if (out) {
        *out = (struct dmd2_stats){ d->step, d->og.step, d->dm, d->gan_g, d->fake_l, d->gan_d, it.gn_generator, it.gn_fake,
                                    d->sample[0] ? d->sample : NULL, d->ckpt[0] ? d->ckpt : NULL };
    }
    return SD_OK;
}

sd_status dmd2_save(struct dmd2 *d, char *path_out, size_t n) {
    if (d->broken) return sd_fail(SD_ERR_INVALID, "dmd2: no checkpoint from a run aborted half-way through an iteration");
    struct ckpt_part pp[3];
    struct ckpt_state s = { d->step, d->rng.seed, d->rng.offset, d->cursor, (char *)d->c.config_json,
                            d->c.keep_checkpoints };
    SD_TRY(ckpt_save_parts(d->c.out_dir, d->be, parts(d, pp), 3, &s, d->ckpt, sizeof d->ckpt));
    if (path_out) snprintf(path_out, n, "%s", d->ckpt);
    char p[4200];
    snprintf(p, sizeof p, "%s/generator.safetensors", d->c.out_dir);
    SD_TRY(wt_save(&d->generator.wt, d->be, p, DT_F16));
    if (d->c.lora_rank <= 0) return SD_OK;
    snprintf(p, sizeof p, "%s/generator_lora.safetensors", d->c.out_dir);
    return lora_save(&d->lora, d->be, p, DT_F16);
}
