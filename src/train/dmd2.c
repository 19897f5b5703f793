/* dmd2.c — see dmd2.h and spec/dmd2.md (section numbers below refer to it).
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
#include "checkpoint.h"
#include "dmd2.h"
#include "shards.h"
#include "train_common.h"

#define MAXB 256

/* ---- the GAN head on the fake UNet's mid-block output (§7) ----
 * log2(s/4) × [conv k4 s2 p1 → GN → SiLU] down to 4×4, conv k4 s4 → GN → SiLU to 1×1,
 * conv 1×1 → one logit.  (A mid block smaller than 4×4 uses one conv of its own size.) */
struct head {
    int C, s, nd, G, kf;
    struct conv down[8], final, out;
    struct norm gn[9];
    struct weight_table wt;
    struct arena params;
};
struct head_save { float *x[10], *y[10]; };   /* conv inputs, pre-GN outputs */

/* GroupNorm groups: 32 as in the reference (1280 channels), but never fewer than 8
 * channels per group, since at 1×1 a group of one channel normalises to a constant. */
static int groups_for(int C) {
    int g = 32;
    while (g > 1 && (C % g || C / g < 8)) g--;
    return g;
}

static sd_status head_create(struct head *hd, struct backend *be, int C, int s) {
    memset(hd, 0, sizeof *hd);
    wt_init(&hd->wt);
    hd->C = C; hd->s = s; hd->G = groups_for(C);
    char n[64];
    while ((s >> hd->nd) > 4 && hd->nd < 8) hd->nd++;
    if ((s >> hd->nd) << hd->nd != s) {
        wt_free(&hd->wt);
        return sd_fail(SD_ERR_UNSUPPORTED, "GAN head: mid block %d×%d is not a power of two", s, s);
    }
    hd->kf = s >> hd->nd;
    for (int i = 0; i < hd->nd; i++) {
        snprintf(n, sizeof n, "down.%d.conv", i); conv_declare(&hd->wt, &hd->down[i], C, C, 4, n);
        snprintf(n, sizeof n, "down.%d.norm", i); norm_declare(&hd->wt, &hd->gn[i], C, n);
    }
    conv_declare(&hd->wt, &hd->final, C, C, hd->kf, "final.conv");
    norm_declare(&hd->wt, &hd->gn[hd->nd], C, "final.norm");
    conv_declare(&hd->wt, &hd->out, C, 1, 1, "out.conv");
    sd_status st = wt_alloc(&hd->wt, &hd->params, be);   /* reports a failed declaration too */
    if (st) { arena_free(&hd->params); wt_free(&hd->wt); }
    return st;
}

static void head_free(struct head *hd) { arena_free(&hd->params); wt_free(&hd->wt); }

/* logits [N] (backend memory) from feat [N, C, s, s]. */
static void head_forward(struct fwd *f, const struct head *hd, struct head_save *sv, float *logits, const float *feat, int N) {
    struct backend *be = f->be;
    int C = hd->C, s = hd->s;
    const float *x = feat;
    for (int i = 0; i <= hd->nd; i++) {
        const struct conv *cv = i < hd->nd ? &hd->down[i] : &hd->final;
        int so = i < hd->nd ? s / 2 : 1;
        float *y = fwd_alloc(f, (size_t)N * C * so * so), *z = fwd_alloc(f, (size_t)N * C * so * so);
        if (i < hd->nd) be->ops->conv2d(be, y, x, cv->w, cv->b, N, C, s, s, C, 4, 4, 2, 1, 1, 1, 1);
        else be->ops->conv2d(be, y, x, cv->w, cv->b, N, C, s, s, C, hd->kf, hd->kf, hd->kf, 0, 0, 0, 0);
        be->ops->group_norm(be, z, y, hd->gn[i].w, hd->gn[i].b, N, C, so * so, hd->G, 1e-5f, 1);
        sv->x[i] = (float *)x; sv->y[i] = y;
        x = z; s = so;
    }
    sv->x[hd->nd + 1] = (float *)x;
    be->ops->linear(be, logits, x, hd->out.w, hd->out.b, N, C, 1);
}

/* dfeat = from dlogits [N]; g (may be NULL) += parameter gradients. */
static void head_backward(struct fwd *f, const struct head *hd, struct head *g, const struct head_save *sv,
                          const float *dlogits, float *dfeat, int N) {
    struct backend *be = f->be;
    int C = hd->C;
    uint64_t mk = arena_mark(f->ar);
    size_t big = (size_t)N * C * hd->s * hd->s;
    float *dz = fwd_alloc(f, big), *dy = fwd_alloc(f, big);
    be->ops->linear_backward(be, dz, g ? g->out.w : NULL, g ? g->out.b : NULL, dlogits, sv->x[hd->nd + 1], hd->out.w, N, C, 1);
    for (int i = hd->nd; i >= 0; i--) {
        int si = hd->s >> i, so = i < hd->nd ? si / 2 : 1;
        const struct conv *cv = i < hd->nd ? &hd->down[i] : &hd->final;
        struct conv *gc = g ? (i < hd->nd ? &g->down[i] : &g->final) : NULL;
        be->ops->group_norm_backward(be, dy, g ? g->gn[i].w : NULL, g ? g->gn[i].b : NULL, dz, sv->y[i], hd->gn[i].w,
                                     hd->gn[i].b, N, C, so * so, hd->G, 1e-5f, 1);
        float *dx = i == 0 ? dfeat : dz;
        if (i < hd->nd)
            be->ops->conv2d_backward(be, dx, gc ? gc->w : NULL, gc ? gc->b : NULL, dy, sv->x[i], cv->w, N, C, si, si, C, 4, 4, 2, 1, 1, 1, 1);
        else
            be->ops->conv2d_backward(be, dx, gc ? gc->w : NULL, gc ? gc->b : NULL, dy, sv->x[i], cv->w, N, C, si, si, C,
                                     hd->kf, hd->kf, hd->kf, 0, 0, 0, 0);
    }
    arena_reset(f->ar, mk);
}

/* ---- the trainer ---- */

struct dmd2 {
    struct dmd2_config c;
    struct backend *be;
    struct arena acts;
    struct fwd f;
    struct cond k;
    struct vae v;
    struct unet real, gen, fake, ggen, gfake;
    struct head head, ghead;
    struct schedule sch;
    struct latent_cache cache;
    struct optimizer og, of, oh;
    struct lora lora;           /* with lora_rank > 0: og trains its A/B, gen = W0 + s·B·A */
    struct shards sh;           /* the UNet passes run over the batch's rows in shards */
    struct unet *tw[2][SHARDS_MAX];                      /* gradient twins of ggen, gfake (shards 1..) */
    const struct weight_table *gt[2][SHARDS_MAX];        /* [0]: ggen / gfake themselves */
    struct unet_tape *tapes;    /* [4][SHARDS_MAX]: generator, GAN-G, fake, GAN-D */
    int loaded[13];
    struct sd_rng rng;
    long long cursor;
    int step;
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

static float *normals(struct dmd2 *d, size_t n) {
    float *h = sd_malloc(n * sizeof(float)), *dev = fwd_alloc(&d->f, n);
    if (h && dev) { sd_rng_normal(&d->rng, h, n); d->be->ops->upload(d->be, dev, h, n * sizeof(float)); }
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

static void draw(struct dmd2 *d, long long *idx, int B) {
    for (int i = 0; i < B; i++, d->cursor++) idx[i] = sd_rng_u32(&d->rng) % (uint32_t)d->cache.K;
}

static sd_status load_unet(struct unet *u, struct backend *be, const char *dir, const char *weights) {
    char *p = sd_path_join(dir, "unet");
    if (!p) return SD_ERR_NOMEM;
    sd_status st = unet_load(u, be, p, weights);
    sd_free(p);
    return st;
}

void dmd2_close(struct dmd2 *d) {
    if (!d) return;
    if (d->loaded[0]) cond_free(&d->k);
    if (d->loaded[1]) vae_free(&d->v);
    if (d->loaded[2]) unet_free(&d->real);
    if (d->loaded[3]) unet_free(&d->gen);
    if (d->loaded[4]) unet_free(&d->fake);
    if (d->loaded[5]) unet_free(&d->ggen);
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
                              : (struct ckpt_part){ "generator.", &d->gen.wt, &d->og };
    p[1] = (struct ckpt_part){ "fake.", &d->fake.wt, &d->of };
    p[2] = (struct ckpt_part){ "head.", &d->head.wt, &d->oh };
    return p;
}

sd_status dmd2_open(struct dmd2 **out, const struct dmd2_config *c) {
    *out = NULL;
    if (!c->data || c->batch < 1 || c->batch > MAXB || c->steps < 1 || c->ttur < 1 || c->nsteps < 1 || c->nsteps > 4)
        return sd_fail(SD_ERR_INVALID, "dmd2: need data, batch in [1, %d], steps >= 1, ttur >= 1, 1..4 timesteps", MAXB);
    for (int i = 0; i < c->nsteps; i++)
        if (c->timesteps[i] < 0 || c->timesteps[i] > 999 || (i && c->timesteps[i] >= c->timesteps[i - 1]))
            return sd_fail(SD_ERR_INVALID, "dmd2: timesteps must be strictly decreasing in [0, 999]");
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
    if ((st = backend_create(&d->be, c->backend ? c->backend : "cpu", c->threads))) goto fail;
    struct arena_allocator al = backend_allocator(d->be);
    arena_init(&d->acts, "activations", &al, 1);
    d->f = (struct fwd){ d->be, &d->acts, NULL };
    if ((st = cond_load(&d->k, d->be, c->teacher_dir))) goto fail;
    d->loaded[0] = 1;
    char *p = sd_path_join(c->teacher_dir, "vae");
    st = p ? vae_load(&d->v, d->be, p) : SD_ERR_NOMEM;
    sd_free(p);
    if (st) goto fail;
    d->loaded[1] = 1;
    if ((st = load_unet(&d->real, d->be, c->teacher_dir, NULL))) goto fail;
    d->loaded[2] = 1;
    if ((st = load_unet(&d->gen, d->be, c->teacher_dir, c->generator_init))) goto fail;
    d->loaded[3] = 1;
    if ((st = load_unet(&d->fake, d->be, c->teacher_dir, NULL))) goto fail;     /* fake starts as the teacher */
    d->loaded[4] = 1;
    if ((st = unet_create(&d->ggen, d->be, &d->gen.cfg))) goto fail;
    d->loaded[5] = 1;
    if ((st = unet_create(&d->gfake, d->be, &d->fake.cfg))) goto fail;
    d->loaded[6] = 1;
    struct sched_config sc;
    if (!(p = sd_path_join(c->teacher_dir, "scheduler/scheduler_config.json"))) { st = SD_ERR_NOMEM; goto fail; }
    st = sched_config_load(&sc, p);
    sd_free(p);
    if (st || (st = schedule_init(&d->sch, &sc))) goto fail;
    /* sizes: the mid block runs at latent / 2^(levels-1) */
    d->S = dataset_resolution(c->data);
    int vs = vae_scale(&d->v), lv = d->gen.cfg.nlevels;
    if (d->S % (vs << (lv - 1))) { st = sd_fail(SD_ERR_INVALID, "resolution %d does not fit the VAE and UNet", d->S); goto fail; }
    d->h = d->S / vs; d->C = d->gen.cfg.in_ch; d->L = d->k.L; d->X = d->k.X; d->P = d->k.P;
    d->per = (size_t)d->C * d->h * d->h;
    int mid_c = d->fake.cfg.ch[lv - 1], mid_s = d->h >> (lv - 1);
    d->mid_per = (size_t)mid_c * mid_s * mid_s;
    /* shards: every UNet pass splits its rows over them; shard i > 0 accumulates into
     * twins of ggen and gfake, summed into them after each backward pass */
    if ((st = shards_init(&d->sh, d->be, &d->acts, shards_pick(d->be, c->shards, c->batch, 2 * d->gen.wt.total), c->batch)))
        goto fail;
    if (!(d->tapes = sd_calloc(4 * SHARDS_MAX, sizeof *d->tapes))) { st = SD_ERR_NOMEM; goto fail; }
    d->gt[0][0] = &d->ggen.wt;
    d->gt[1][0] = &d->gfake.wt;
    for (int k = 0; k < 2; k++)
        for (int i = 1; i < d->sh.n; i++) {
            if (!(d->tw[k][i] = sd_calloc(1, sizeof(struct unet)))) { st = SD_ERR_NOMEM; goto fail; }
            if ((st = unet_create(d->tw[k][i], d->sh.s[i].be, k ? &d->fake.cfg : &d->gen.cfg))) {
                sd_free(d->tw[k][i]); d->tw[k][i] = NULL; goto fail;
            }
            d->gt[k][i] = &d->tw[k][i]->wt;
        }
    if (d->sh.n > 1) LOG_I("dmd2: %d shards (one thread each)", d->sh.n);
    if ((st = head_create(&d->head, d->be, mid_c, mid_s))) goto fail;
    d->loaded[7] = 1;
    if ((st = head_create(&d->ghead, d->be, mid_c, mid_s))) goto fail;
    d->loaded[8] = 1;
    if ((st = wt_init_random(&d->head.wt, d->be, c->seed ^ 0x4ead))) goto fail;
    struct adamw_config og = { c->lr_generator, 0.9f, 0.999f, 1e-8f, 0.01f, c->clip, c->warmup, 0 };
    struct adamw_config of = og;
    of.lr = c->lr_fake;
    if (c->lora_rank > 0) {   /* the generator's base stays frozen at its initial weights */
        if ((st = lora_create(&d->lora, d->be, &d->gen.wt, &d->ggen.wt, c->lora_rank, c->lora_alpha, c->seed ^ 0x10a))) goto fail;
        d->loaded[12] = 1;
        st = optim_init(&d->og, d->be, &og, &d->lora.wt, &d->lora.gt);
    } else {
        st = optim_init(&d->og, d->be, &og, &d->gen.wt, &d->ggen.wt);
    }
    if (st) goto fail;
    d->loaded[9] = 1;
    if ((st = optim_init(&d->of, d->be, &of, &d->fake.wt, &d->gfake.wt))) goto fail;
    d->loaded[10] = 1;
    if ((st = optim_init(&d->oh, d->be, &of, &d->head.wt, &d->ghead.wt))) goto fail;
    d->loaded[11] = 1;
    sd_rng_init(&d->rng, c->seed);
    if ((st = cache_build(&d->cache, &d->f, &d->k, &d->v, c->data, c->cache_size))) goto fail;
    for (int i = 0; i < 2 * MAXB; i++) {
        float t6[6] = { (float)d->S, (float)d->S, 0, 0, (float)d->S, (float)d->S };
        memcpy(d->tid + 6 * i, t6, sizeof t6);
    }
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
enum { PASS_FORWARD, PASS_ENCODE, PASS_BACKWARD };
struct pass {
    struct dmd2 *d;
    int op, N;
    const struct unet *u;
    struct unet_tape *tp;           /* [SHARDS_MAX] (encode, backward) */
    int g;                          /* backward: -1 frozen, 0 into ggen, 1 into gfake */
    float *out;                     /* forward: ε̂; encode: decoded ε̂ (NULL: encode only) */
    const float *x, *t, *ctx, *pool;
    float *mid;                     /* encode: mid-block features gathered (n > 1; may be NULL) */
    const float *dout, *dmid;       /* backward: from the decoded output, or from the mid block */
    float *dx;                      /* backward: into the input (may be NULL) */
};

static void pass_shard(struct shard *s, void *p) {
    const struct pass *a = p;
    struct dmd2 *d = a->d;
    int lo, hi;
    shard_range(a->N, s->index, d->sh.n, &lo, &hi);
    int cnt = hi - lo;
    struct unet *g = a->op != PASS_BACKWARD || a->g < 0 ? NULL : s->index == 0 ? (a->g ? &d->gfake : &d->ggen)
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
    } else if (a->op == PASS_ENCODE) {
        unet_encode(f, a->u, tp, tape_mode(d), a->x + lo * pl, a->t + lo, a->ctx + lo * pc, a->pool + (size_t)lo * d->P,
                    d->tid, cnt, d->h, d->h, d->L);
        if (!s->be->err && a->out) unet_decode(f, a->u, tp, a->out + lo * pl);
        if (!s->be->err && a->mid) s->be->ops->copy(s->be, a->mid + lo * pm, tp->mid_out, cnt * pm * 4);
    } else {
        if (a->dout) unet_decode_backward(f, a->u, g, tp, a->dout + lo * pl, NULL);
        else unet_tape_begin_backward(f, a->u, tp);
        if (!s->be->err)
            unet_encode_backward(f, a->u, g, tp, a->dmid ? a->dmid + lo * pm : NULL, a->dx ? a->dx + lo * pl : NULL, NULL, NULL);
    }
}

static sd_status pass_run(struct dmd2 *d, struct pass *a) {
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

/* Taped encode (+ decode into out when out != NULL); *mid (when mid != NULL) = the
 * mid-block features [N, mid_per]: the tape's own with one shard, else gathered into a
 * buffer on d's arena. */
static sd_status sh_encode(struct dmd2 *d, struct unet_tape *tp, const struct unet *u, float *out, const float *x,
                           const float *t, const float *ctx, const float *pool, int N, const float **mid) {
    float *buf = NULL;
    if (mid && d->sh.n > 1 && !(buf = fwd_alloc(&d->f, (size_t)N * d->mid_per))) return backend_status(d->be);
    struct pass a = { .op = PASS_ENCODE, .N = N, .u = u, .tp = tp, .out = out, .x = x, .t = t, .ctx = ctx, .pool = pool,
                      .mid = buf };
    SD_TRY(pass_run(d, &a));
    if (mid) *mid = buf ? buf : tp[0].mid_out;
    return SD_OK;
}

/* Backward of a taped pass from dout (decoded output) or dmid (mid block); g: -1 frozen,
 * 0 ggen, 1 gfake (+=); dx (may be NULL) = the input gradient. */
static sd_status sh_backward(struct dmd2 *d, struct unet_tape *tp, const struct unet *u, int g, const float *dout,
                             const float *dmid, float *dx, int N) {
    struct pass a = { .op = PASS_BACKWARD, .N = N, .u = u, .tp = tp, .g = g, .dout = dout, .dmid = dmid, .dx = dx };
    return pass_run(d, &a);
}

sd_status dmd2_step(struct dmd2 *d, struct dmd2_stats *out) {
    const struct dmd2_config *c = &d->c;
    struct backend *be = d->be;
    struct fwd *f = &d->f;
    if (dmd2_done(d)) return sd_fail(SD_ERR_INVALID, "dmd2: all %d steps done", c->steps);
    int B = c->batch, gen_iter = d->step % c->ttur == 0;
    size_t nb = (size_t)B * d->per;
    d->step++;
    d->sample[0] = d->ckpt[0] = 0;
    double gn_gen = d->og.last_grad_norm, gn_fake = 0;
    long long idx[MAXB], ridx[MAXB];
    float tk[MAXB], t2[2 * MAXB], host_l[2 * MAXB];
    sd_status st = SD_OK;
    arena_reset(&d->acts, 0);
    shards_reset(&d->sh, NULL);
    /* persistent (for this iteration) buffers first */
    float *x0 = fwd_alloc(f, nb), *ctx = fwd_alloc(f, (size_t)B * d->cache.per_c), *pool = fwd_alloc(f, (size_t)B * d->P);
    float *xt = fwd_alloc(f, nb), *eh = fwd_alloc(f, nb);
    if (!x0 || !ctx || !pool || !xt || !eh) return backend_status(be);
    draw(d, idx, B);
    gather(d, idx, B, NULL, ctx, pool);

    /* 1. the generator's input (§8.3, §8.4) */
    if (c->backward_simulation) {
        int k = (int)(sd_rng_u32(&d->rng) % (uint32_t)c->nsteps);
        float *n0 = normals(d, nb);
        for (int i = 0; i < B; i++) tk[i] = (float)c->timesteps[k];
        if (k == 0) be->ops->copy(be, xt, n0, nb * 4);
        else {
            uint64_t mk = arena_mark(f->ar);
            float *x = normals(d, nb), *e = fwd_alloc(f, nb), tv[MAXB];
            for (int s = 0; s < k; s++) {
                for (int i = 0; i < B; i++) tv[i] = (float)c->timesteps[s];
                if ((st = sh_forward(d, &d->gen, e, x, tv, ctx, pool, B))) return st;
                to_x0(d, x0, x, e, tv, B);
                if (s + 1 < k) { float *z = normals(d, nb); for (int i = 0; i < B; i++) tv[i] = (float)c->timesteps[s + 1]; add_noise(d, x, x0, z, tv, B); }
            }
            add_noise(d, xt, x0, n0, tk, B);
            arena_reset(f->ar, mk);
        }
    } else {
        uint64_t mk = arena_mark(f->ar);
        float *real = fwd_alloc(f, nb), *n0 = normals(d, nb);
        long long r2[MAXB];
        draw(d, r2, B);
        gather(d, r2, B, real, NULL, NULL);
        for (int i = 0; i < B; i++) {
            int s = (int)(sd_rng_u32(&d->rng) % (uint32_t)c->nsteps);
            tk[i] = (float)c->timesteps[s];
        }
        add_noise(d, xt, real, n0, tk, B);
        for (int i = 0; i < B; i++)   /* the first step's input is the noise itself */
            if ((int)tk[i] == c->timesteps[0]) be->ops->copy(be, xt + i * d->per, n0 + i * d->per, d->per * 4);
        arena_reset(f->ar, mk);
    }

    /* 2. generator forward (taped on generator iterations) */
    struct unet_tape *gtp = d->tapes;   /* per shard: the generator's, then GAN-G, fake, GAN-D */
    uint64_t mk_gen = arena_mark(f->ar), smk_gen[SHARDS_MAX];
    shards_mark(&d->sh, smk_gen);
    st = gen_iter ? sh_encode(d, gtp, &d->gen, eh, xt, tk, ctx, pool, B, NULL) : sh_forward(d, &d->gen, eh, xt, tk, ctx, pool, B);
    if (st) return st;
    to_x0(d, x0, xt, eh, tk, B);
    if ((st = backend_status(be))) return st;

    /* 3. generator update: L_DM + gan_g·L_GAN_G (§5, §7) */
    if (gen_iter) {
        uint64_t mk = arena_mark(f->ar);
        float *dx0 = fwd_alloc(f, nb), *xd = fwd_alloc(f, nb), *e1 = fwd_alloc(f, nb), *xf = fwd_alloc(f, nb);
        float *xr = fwd_alloc(f, nb), *x2 = fwd_alloc(f, 2 * nb), *e2 = fwd_alloc(f, 2 * nb);
        float *c2 = fwd_alloc(f, 2 * (size_t)B * d->cache.per_c), *p2 = fwd_alloc(f, 2 * (size_t)B * d->P);
        float *z = normals(d, nb);
        for (int i = 0; i < B; i++) t2[i] = t2[B + i] = (float)(c->dm_min_t + sd_rng_u32(&d->rng) % (uint32_t)(c->dm_max_t - c->dm_min_t + 1));
        add_noise(d, xd, x0, z, t2, B);
        if ((st = sh_forward(d, &d->fake, e1, xd, t2, ctx, pool, B))) return st;
        to_x0(d, xf, xd, e1, t2, B);
        /* real score with CFG: [cond; uncond (all-zero embeddings)] in one batch */
        be->ops->copy(be, x2, xd, nb * 4);
        be->ops->copy(be, x2 + nb, xd, nb * 4);
        be->ops->copy(be, c2, ctx, (size_t)B * d->cache.per_c * 4);
        be->ops->zero(be, c2 + (size_t)B * d->cache.per_c, (size_t)B * d->cache.per_c * 4);
        be->ops->copy(be, p2, pool, (size_t)B * d->P * 4);
        be->ops->zero(be, p2 + (size_t)B * d->P, (size_t)B * d->P * 4);
        int cfg = c->guidance > 1.0f;
        if ((st = sh_forward(d, &d->real, e2, x2, t2, c2, p2, cfg ? 2 * B : B))) return st;
        if (cfg) be->ops->axpby(be, e2, c->guidance, e2, 1.0f - c->guidance, e2 + nb, (long long)nb);
        to_x0(d, xr, xd, e2, t2, B);
        if ((st = backend_status(be))) return st;
        /* g = (x0_fake − x0_real) / mean|x − x0_real| per sample; dL/dx = g / (B·C·H·W) */
        float *hx = sd_malloc(nb * 3 * sizeof(float));
        if (!hx) return SD_ERR_NOMEM;
        float *hf = hx + nb, *hr = hf + nb;
        be->ops->download(be, hx, x0, nb * 4);
        be->ops->download(be, hf, xf, nb * 4);
        be->ops->download(be, hr, xr, nb * 4);
        double dm = dmd2_dm_grad(hx, hf, hr, B, d->per, hx);
        d->dm = dm;
        be->ops->upload(be, dx0, hx, nb * 4);
        sd_free(hx);
        d->gan_g = 0;
        if (c->gan) {   /* L_GAN_G = mean softplus(−ℓ(noised x0_gen)), through the frozen fake encoder and head */
            uint64_t m2 = arena_mark(f->ar);
            float *zg = normals(d, nb), *lg = fwd_alloc(f, B), *dl = fwd_alloc(f, B), *dxg = fwd_alloc(f, nb);
            for (int i = 0; i < B; i++) t2[i] = (float)(sd_rng_u32(&d->rng) % 1000u);
            add_noise(d, xd, x0, zg, t2, B);
            struct unet_tape *tp = d->tapes + SHARDS_MAX;
            struct head_save sv;
            const float *mid;
            uint64_t smk[SHARDS_MAX];
            shards_mark(&d->sh, smk);
            if ((st = sh_encode(d, tp, &d->fake, NULL, xd, t2, ctx, pool, B, &mid))) return st;
            head_forward(f, &d->head, &sv, lg, mid, B);
            if ((st = backend_status(be))) return st;
            be->ops->download(be, host_l, lg, B * 4);
            for (int i = 0; i < B; i++) {
                d->gan_g += softplus(-host_l[i]) / B;
                host_l[i] = (float)(-sigmoid(-host_l[i]) / B * c->gan_weight_g);
            }
            be->ops->upload(be, dl, host_l, B * 4);
            float *dmid = fwd_alloc(f, (size_t)B * d->mid_per);
            head_backward(f, &d->head, NULL, &sv, dl, dmid, B);
            if ((st = backend_status(be)) || (st = sh_backward(d, tp, &d->fake, -1, NULL, dmid, dxg, B))) return st;
            double a[MAXB], one[MAXB];
            for (int i = 0; i < B; i++) { a[i] = sqrt(abar(d, (int)t2[i])); one[i] = 1.0; }
            per_sample(d, dx0, dx0, dxg, one, a, B);
            arena_reset(f->ar, m2);
            shards_reset(&d->sh, smk);
        }
        /* through x0 = (x_t − √(1−ᾱ) ε̂)/√ᾱ into ε̂, then the generator */
        double sc[MAXB];
        for (int i = 0; i < B; i++) sc[i] = -sqrt(1 - abar(d, (int)tk[i])) / sqrt(abar(d, (int)tk[i]));
        float *deh = xf;   /* reuse */
        per_sample(d, deh, dx0, NULL, sc, NULL, B);
        optim_zero_grad(&d->og, be);
        if (c->lora_rank > 0) unet_zero(be, &d->ggen);   /* og holds only the adapters' gradients */
        if ((st = sh_backward(d, gtp, &d->gen, 0, deh, NULL, NULL, B))) return st;
        if (c->lora_rank > 0) lora_grads(&d->lora, be);
        if ((st = backend_status(be))) return st;
        struct optimizer *og = &d->og;
        if ((st = joint_step(d, &og, 1, &gn_gen))) return st;
        if (c->lora_rank > 0) lora_merge(&d->lora, be);
        arena_reset(f->ar, mk);
    }
    arena_reset(f->ar, mk_gen);   /* the generator tape is dead; x0 (allocated before it) lives */
    shards_reset(&d->sh, smk_gen);

    /* 4. fake score + head: denoising loss on x0_gen + gan_d·L_GAN_D (§6, §7) */
    optim_zero_grad(&d->of, be);
    optim_zero_grad(&d->oh, be);
    {
        uint64_t mk = arena_mark(f->ar);
        float *z = normals(d, nb), *xn = fwd_alloc(f, nb), *pred = fwd_alloc(f, nb);
        for (int i = 0; i < B; i++) t2[i] = (float)(sd_rng_u32(&d->rng) % 1000u);
        add_noise(d, xn, x0, z, t2, B);
        struct unet_tape *tp = d->tapes + 2 * SHARDS_MAX;
        uint64_t smk[SHARDS_MAX];
        shards_mark(&d->sh, smk);
        if ((st = sh_encode(d, tp, &d->fake, pred, xn, t2, ctx, pool, B, NULL))) return st;
        be->ops->axpby(be, pred, 1.0f, pred, -1.0f, z, (long long)nb);
        d->fake_l = be->ops->dot(be, pred, pred, (long long)nb) / nb;
        be->ops->axpby(be, pred, 2.0f / nb, pred, 0.0f, NULL, (long long)nb);
        if ((st = sh_backward(d, tp, &d->fake, 1, pred, NULL, NULL, B))) return st;
        arena_reset(f->ar, mk);
        shards_reset(&d->sh, smk);
    }
    d->gan_d = 0;
    if (c->gan) {   /* real latents (their own captions) and x0_gen, each at its own t */
        uint64_t mk = arena_mark(f->ar);
        float *x2 = fwd_alloc(f, 2 * nb), *c2 = fwd_alloc(f, 2 * (size_t)B * d->cache.per_c);
        float *p2 = fwd_alloc(f, 2 * (size_t)B * d->P), *z = normals(d, 2 * nb), *lg = fwd_alloc(f, 2 * B), *dl = fwd_alloc(f, 2 * B);
        draw(d, ridx, B);
        gather(d, ridx, B, x2, c2, p2);
        be->ops->copy(be, x2 + nb, x0, nb * 4);
        be->ops->copy(be, c2 + (size_t)B * d->cache.per_c, ctx, (size_t)B * d->cache.per_c * 4);
        be->ops->copy(be, p2 + (size_t)B * d->P, pool, (size_t)B * d->P * 4);
        for (int i = 0; i < 2 * B; i++) t2[i] = (float)(sd_rng_u32(&d->rng) % 1000u);
        float *xn = fwd_alloc(f, 2 * nb);
        add_noise(d, xn, x2, z, t2, 2 * B);
        struct unet_tape *tp = d->tapes + 3 * SHARDS_MAX;
        struct head_save sv;
        const float *mid;
        uint64_t smk[SHARDS_MAX];
        shards_mark(&d->sh, smk);
        if ((st = sh_encode(d, tp, &d->fake, NULL, xn, t2, c2, p2, 2 * B, &mid))) return st;
        head_forward(f, &d->head, &sv, lg, mid, 2 * B);
        if ((st = backend_status(be))) return st;
        be->ops->download(be, host_l, lg, 2 * B * 4);
        for (int i = 0; i < B; i++) {   /* rows 0..B-1 real, B..2B-1 fake */
            double lr = host_l[i], lf = host_l[B + i];
            d->gan_d += (softplus(-lr) + softplus(lf)) / B;
            host_l[i] = (float)(-sigmoid(-lr) / B * c->gan_weight_d);
            host_l[B + i] = (float)(sigmoid(lf) / B * c->gan_weight_d);
        }
        be->ops->upload(be, dl, host_l, 2 * B * 4);
        float *dmid = fwd_alloc(f, (size_t)2 * B * d->mid_per);
        head_backward(f, &d->head, &d->ghead, &sv, dl, dmid, 2 * B);
        if ((st = backend_status(be)) || (st = sh_backward(d, tp, &d->fake, 1, NULL, dmid, NULL, 2 * B))) return st;
        arena_reset(f->ar, mk);
        shards_reset(&d->sh, smk);
    }
    struct optimizer *os[2] = { &d->of, &d->oh };
    if ((st = joint_step(d, os, 2, &gn_fake))) return st;

    /* samples and checkpoints */
    if (c->sample_every > 0 && (d->step % c->sample_every == 0 || d->step == c->steps)) {
        int n = B < 8 ? B : 8;
        uint64_t mk = arena_mark(f->ar);
        float *x = fwd_alloc(f, (size_t)n * d->per), *img = fwd_alloc(f, (size_t)n * 3 * d->S * d->S);
        float *hbuf = sd_malloc(sizeof(float) * ((size_t)n * 3 * d->S * d->S + (size_t)n * d->per));
        struct sd_rng r2;
        sd_rng_init(&r2, 4321);
        if (hbuf && x && img) {
            sd_rng_normal(&r2, hbuf, (size_t)n * d->per);
            be->ops->upload(be, x, hbuf, (size_t)n * d->per * 4);
            struct { struct sd_rng *r; } nctx = { &r2 };
            void fill(void *ud, int s, float *hh, size_t cnt);
            struct sampler_job j = { .unet = &d->gen, .sched = &d->sch, .ctx = d->cache.ctx, .pooled = d->cache.pool,
                                     .time_ids = d->tid, .N = n, .h = d->h, .w = d->h, .Lk = d->L, .nsteps = c->nsteps,
                                     .timesteps = c->timesteps, .noise = fill, .noise_ud = &nctx };
            if (!(st = sampler_run(f, &j, x))) {
                be->ops->axpby(be, x, 1.0f / d->v.cfg.scaling_factor, x, 0.0f, NULL, (long long)(n * d->per));
                vae_decode(f, &d->v, img, x, n, d->h, d->h);
                be->ops->download(be, hbuf, img, (size_t)n * 3 * d->S * d->S * 4);
                snprintf(d->sample, sizeof d->sample, "%s/samples", c->out_dir);
                sd_mkdir(d->sample, 0755);
                snprintf(d->sample, sizeof d->sample, "%s/samples/%07d.png", c->out_dir, d->step);
                st = save_grid(d->sample, hbuf, n, d->S);
            }
        }
        sd_free(hbuf);
        arena_reset(f->ar, mk);
        if (st) return st;
    }
    if ((c->checkpoint_every > 0 && d->step % c->checkpoint_every == 0) || d->step == c->steps)
        if ((st = dmd2_save(d, NULL, 0))) return st;
    if (out) {
        *out = (struct dmd2_stats){ d->step, d->og.step, d->dm, d->gan_g, d->fake_l, d->gan_d, gn_gen, gn_fake,
                                    d->sample[0] ? d->sample : NULL, d->ckpt[0] ? d->ckpt : NULL };
    }
    return SD_OK;
}

void fill(void *ud, int s, float *hh, size_t cnt) {
    (void)s;
    struct sd_rng *r = *(struct sd_rng **)ud;
    sd_rng_normal(r, hh, cnt);
}

sd_status dmd2_save(struct dmd2 *d, char *path_out, size_t n) {
    struct ckpt_part pp[3];
    struct ckpt_state s = { d->step, d->rng.seed, d->rng.offset, d->cursor, (char *)d->c.config_json,
                            d->c.keep_checkpoints };
    SD_TRY(ckpt_save_parts(d->c.out_dir, d->be, parts(d, pp), 3, &s, d->ckpt, sizeof d->ckpt));
    if (path_out) snprintf(path_out, n, "%s", d->ckpt);
    char p[4200];
    snprintf(p, sizeof p, "%s/generator.safetensors", d->c.out_dir);
    SD_TRY(wt_save(&d->gen.wt, d->be, p, DT_F16));
    if (d->c.lora_rank <= 0) return SD_OK;
    snprintf(p, sizeof p, "%s/generator_lora.safetensors", d->c.out_dir);
    return lora_save(&d->lora, d->be, p, DT_F16);
}
