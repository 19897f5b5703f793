/* trainer.c — see trainer.h.  One loop per trainer; the shared pieces (loading, progress
 * lines, sample grids, checkpoints) sit at the top. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../core/fs.h"
#include "../core/rng.h"
#include "../io/png.h"
#include "../model/clip.h"
#include "../model/unet.h"
#include "../model/vae.h"
#include "../sample/sampler.h"
#include "../text/tokenizer.h"
#include "checkpoint.h"
#include "shards.h"
#include "train_common.h"
#include "trainer.h"

/* ---- shared ---- */

struct run {
    const struct train_config *c;
    struct backend *be;
    struct arena acts;
    struct sd_rng rng;
    long long cursor;           /* dataset items drawn so far */
    double t0;
    int start_step;
};

static sd_status run_init(struct run *r, const struct train_config *c) {
    memset(r, 0, sizeof *r);
    r->c = c;
    if (!c->data || c->batch < 1 || c->batch > 256 || c->steps < 1)
        return sd_fail(SD_ERR_INVALID, "training needs a dataset, batch in [1, 256] and steps >= 1");
    if (sd_mkdir(c->out_dir, 0755) && errno != EEXIST)
        return sd_fail(SD_ERR_IO, "%s: cannot create the run directory: %s", c->out_dir, sd_fs_strerror(errno));
    SD_TRY(backend_create(&r->be, c->backend ? c->backend : "cpu", 0));
    struct arena_allocator al = backend_allocator(r->be);
    arena_init(&r->acts, "activations", &al, 1);
    sd_rng_init(&r->rng, c->seed);
    r->t0 = sd_now_ms();
    return SD_OK;
}

static void run_free(struct run *r) {
    arena_free(&r->acts);
    backend_destroy(r->be);
}

static char *part_path(const char *dir, const char *sub) { return sd_path_join(dir, sub); }

/* Progress callback + log line; returns non-zero to stop. */
static int report(struct run *r, int step, double loss, double gnorm, const char *sample, const char *ckpt) {
    const struct train_config *c = r->c;
    double el = (sd_now_ms() - r->t0) / 1e3, ips = (step - r->start_step) / (el > 1e-9 ? el : 1e-9);
    struct train_progress p = { step, c->steps, loss, gnorm, ips, ips > 0 ? (c->steps - step) / ips : 0, sample, ckpt };
    if (step == r->start_step + 1 || step % (c->log_every > 0 ? c->log_every : 10) == 0 || step == c->steps)
        LOG_I("step %d/%d loss %.5f grad_norm %.3f %.2f it/s ETA %.0f s", step, c->steps, loss, gnorm, ips, p.eta_s);
    return c->progress ? c->progress(c->progress_ud, &p) : 0;
}

static sd_status save_checkpoint(struct run *r, const struct weight_table *wt, const struct optimizer *o, int step,
                                 char *path, size_t n) {
    struct ckpt_state s = { step, r->rng.seed, r->rng.offset, r->cursor, (char *)r->c->config_json,
                            r->c->keep_checkpoints };
    return ckpt_save(r->c->out_dir, r->be, wt, o, &s, path, n);
}

static sd_status maybe_resume(struct run *r, struct weight_table *wt, struct optimizer *o) {
    if (!r->c->resume) return SD_OK;
    char dir[4096];
    SD_TRY(ckpt_latest(r->c->out_dir, dir, sizeof dir));
    struct ckpt_state s;
    SD_TRY(ckpt_load(dir, r->be, wt, o, &s));
    sd_free(s.config_json);
    r->rng.seed = s.rng_seed;
    r->rng.offset = s.rng_offset;
    r->cursor = s.data_cursor;
    r->start_step = s.step;
    LOG_I("resumed from %s at step %d", dir, s.step);
    return SD_OK;
}

/* Copy a config file into OUT/sub/config.json and save weights next to it. */
/* OUT/sub/ = the model's config.json + its weights. */
static sd_status export_part(struct run *r, const struct weight_table *wt, const char *sub, const char *file) {
    char p[4096], src[4096];
    snprintf(p, sizeof p, "%s/%s", r->c->out_dir, sub);
    sd_mkdir(p, 0755);
    snprintf(src, sizeof src, "%s/%s/config.json", r->c->model_dir, sub);
    char *text;
    size_t len;
    SD_TRY(sd_read_file(src, 1 << 20, &text, &len));
    snprintf(p, sizeof p, "%s/%s/config.json", r->c->out_dir, sub);
    sd_status st = sd_write_file_atomic(p, text, len);
    sd_free(text);
    if (st) return st;
    snprintf(p, sizeof p, "%s/%s/%s", r->c->out_dir, sub, file);
    return wt_save(wt, r->be, p, DT_F16);
}

/* ---- VAE ---- */

/* Latents should have unit variance for the diffusion model (SD picked 0.18215 and SDXL
 * 0.13025 that way): measure the std of the posterior means over dataset items and
 * write scaling_factor = 1/std into the exported config.json. */
static sd_status set_scaling_factor(struct run *r, const struct vae *m) {
    const struct train_config *c = r->c;
    struct fwd f = { .be = r->be, .ar = &r->acts };
    int S = dataset_resolution(c->data), s = vae_scale(m), L = m->cfg.latent_ch, h = S / s, n = 16, rounds = 16;
    size_t ni = (size_t)n * 3 * S * S, nl = (size_t)n * L * h * h;
    float *host = sd_malloc(sizeof(float) * (ni + nl));
    if (!host) return SD_ERR_NOMEM;
    double sum = 0, sq = 0, cnt = 0;
    sd_status st = SD_OK;
    long D = dataset_size(c->data);   /* a folder may hold fewer than rounds * n items: wrap */
    for (int k = 0; k < rounds && !st; k++) {
        for (int i = 0; i < n && !st; i++) st = dataset_get(c->data, (k * n + i) % D, host + (size_t)i * 3 * S * S, NULL, NULL, 0, NULL);
        if (st) break;
        float *img = fwd_alloc(&f, ni), *mean = fwd_alloc(&f, nl);
        if (!img || !mean) { st = backend_status(r->be); break; }
        r->be->ops->upload(r->be, img, host, ni * sizeof(float));
        vae_encode(&f, m, mean, img, n, S, S);
        if ((st = backend_status(r->be))) break;
        r->be->ops->download(r->be, host + ni, mean, nl * sizeof(float));
        for (size_t q = 0; q < nl; q++) { sum += host[ni + q]; sq += (double)host[ni + q] * host[ni + q]; cnt++; }
        arena_reset(&r->acts, 0);
    }
    sd_free(host);
    if (st) return st;
    double var = sq / cnt - (sum / cnt) * (sum / cnt), sf = var > 0 ? 1.0 / sqrt(var) : 1.0;
    char p[4096];
    snprintf(p, sizeof p, "%s/vae/config.json", c->out_dir);
    json_error_t e;
    json_t *j = json_load_file(p, 0, &e);
    if (!j) return sd_fail(SD_ERR_FORMAT, "%s: %s", p, e.text);
    json_object_set_new(j, "scaling_factor", json_real(sf));
    int bad = json_dump_file(j, p, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(j);
    if (bad) return sd_fail(SD_ERR_IO, "%s: cannot write", p);
    LOG_I("vae: latent std %.4f -> scaling_factor %.5f written to %s", sqrt(var), sf, p);
    return SD_OK;
}

/* One VAE step's shard: reconstruction + KL loss and gradient of rows [lo, hi), the
 * host buffers [B, ...] shared (each shard touches its rows). */
struct vae_train_step {
    const struct vae *m;
    struct vae *g[SHARDS_MAX];
    float *himg, *hrec, *hd, *hmom, *heps, *hz, *hdm;
    int S, L, h, l1;
    size_t ni, nl;                  /* elements of the whole batch's images and latents */
    float kl_weight;
};

static void vae_shard(struct shard *s, void *p) {
    const struct vae_train_step *t = p;
    struct backend *be = s->be;
    struct fwd *f = &s->f;
    int lo = s->lo, n = s->hi - s->lo;
    size_t pi = (size_t)3 * t->S * t->S, pz = (size_t)t->L * t->h * t->h, ni = n * pi, nl = n * pz;
    float *himg = t->himg + lo * pi, *hrec = t->hrec + lo * pi, *hd = t->hd + lo * pi, *hmom = t->hmom + 2 * lo * pz,
          *heps = t->heps + lo * pz, *hz = t->hz + lo * pz, *hdm = t->hdm + 2 * lo * pz;
    struct vae *g = t->g[s->index];
    s->part[0] = s->part[1] = 0;
    wt_zero(&g->wt, be);
    struct vae_tape te, td;
    float *dimg = fwd_alloc(f, ni), *mom = fwd_alloc(f, 2 * nl), *z = fwd_alloc(f, nl), *rec = fwd_alloc(f, ni);
    float *drec = fwd_alloc(f, ni), *dz = fwd_alloc(f, nl), *dmom = fwd_alloc(f, 2 * nl);
    if (!dimg || !mom || !z || !rec || !drec || !dz || !dmom) return;
    be->ops->upload(be, dimg, himg, ni * sizeof(float));
    vae_encode_moments(f, t->m, &te, mom, dimg, n, t->S, t->S);
    if (be->err) return;
    be->ops->download(be, hmom, mom, 2 * nl * sizeof(float));
    /* z = mean + σ·ε with logvar clamped to [-30, 20] */
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < pz; k++) {
            float mu = hmom[(size_t)i * 2 * pz + k], lv = hmom[((size_t)i * 2 + 1) * pz + k];
            lv = lv < -30 ? -30 : lv > 20 ? 20 : lv;
            hz[(size_t)i * pz + k] = mu + expf(0.5f * lv) * heps[(size_t)i * pz + k];
        }
    be->ops->upload(be, z, hz, nl * sizeof(float));
    vae_decode_t(f, t->m, &td, rec, z, n, t->h, t->h);
    if (be->err) return;
    be->ops->download(be, hrec, rec, ni * sizeof(float));
    double rl = 0, kl = 0;
    for (size_t k = 0; k < ni; k++) {
        float d = hrec[k] - himg[k];
        rl += t->l1 ? fabsf(d) : d * d;
        hd[k] = t->l1 ? (float)((d > 0) - (d < 0)) / t->ni : 2.0f * d / t->ni;
    }
    be->ops->upload(be, drec, hd, ni * sizeof(float));
    vae_backward(f, t->m, g, &td, drec, dz);
    if (be->err) return;
    be->ops->download(be, hz, dz, nl * sizeof(float));
    /* KL(N(μ, σ²) ‖ N(0, 1)), mean over latent elements; chain rule through z */
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < pz; k++) {
            size_t mi = (size_t)i * 2 * pz + k, li = mi + pz, zi = (size_t)i * pz + k;
            float mu = hmom[mi], lv = hmom[li], lvc = lv < -30 ? -30 : lv > 20 ? 20 : lv, sd = expf(0.5f * lvc);
            kl += 0.5 * (mu * mu + sd * sd - 1.0 - lvc);
            hdm[mi] = hz[zi] + t->kl_weight * mu / t->nl;
            hdm[li] = (lv == lvc) ? hz[zi] * heps[zi] * 0.5f * sd + t->kl_weight * 0.5f * (sd * sd - 1.0f) / t->nl : 0.0f;
        }
    be->ops->upload(be, dmom, hdm, 2 * nl * sizeof(float));
    vae_backward(f, t->m, g, &te, dmom, NULL);
    s->part[0] = rl;
    s->part[1] = kl;
}

/* The end of a step: a checkpoint when due (and at the last step), the progress report,
 * and a final checkpoint when the caller asked to stop.  1 when the run ends here (*st
 * says whether with an error). */
static int step_end(struct run *r, const struct weight_table *wt, struct optimizer *o, int step, double loss,
                    const char *sample, char *ckpt, size_t n, sd_status *st) {
    const struct train_config *c = r->c;
    if ((c->checkpoint_every > 0 && step % c->checkpoint_every == 0) || step == c->steps)
        if ((*st = save_checkpoint(r, wt, o, step, ckpt, n))) return 1;
    if (!report(r, step, loss, o->last_grad_norm, sample[0] ? sample : NULL, ckpt[0] ? ckpt : NULL)) return 0;
    if (!ckpt[0]) *st = save_checkpoint(r, wt, o, step, ckpt, n);
    return 1;
}

sd_status train_vae(const struct train_config *c) {
    struct run r;
    struct vae m = { 0 }, g = { 0 };
    struct optimizer o = { 0 };
    struct shards sh = { 0 };
    struct vae *tw[SHARDS_MAX] = { 0 };     /* gradient twins of shards 1.. */
    int have_m = 0, have_g = 0, have_o = 0;
    float *host = NULL;
    char *p = NULL;
    SD_TRY(run_init(&r, c));
    sd_status st;
    if (!(p = part_path(c->model_dir, "vae"))) { st = SD_ERR_NOMEM; goto out; }
    if ((st = vae_load(&m, r.be, p, DT_F32))) goto out;
    have_m = 1;
    if ((st = vae_create(&g, r.be, &m.cfg))) goto out;
    have_g = 1;
    if ((st = optim_init(&o, r.be, &c->opt, &m.wt, &g.wt))) goto out;
    have_o = 1;
    if ((st = maybe_resume(&r, &m.wt, &o))) goto out;
    int S = dataset_resolution(c->data), B = c->batch, s = vae_scale(&m), L = m.cfg.latent_ch, h = S / s;
    if (S % s) { st = sd_fail(SD_ERR_INVALID, "resolution %d not a multiple of the VAE scale %d", S, s); goto out; }
    size_t ni = (size_t)B * 3 * S * S, nl = (size_t)B * L * h * h;
    host = sd_malloc(sizeof(float) * (ni * 3 + nl * 6));
    if (!host) { st = SD_ERR_NOMEM; goto out; }
    struct vae_train_step vs = { &m, { &g }, host, host + ni, host + 2 * ni, host + 3 * ni, host + 3 * ni + 2 * nl,
                           host + 3 * ni + 3 * nl, host + 3 * ni + 4 * nl, S, L, h, c->l1, ni, nl, c->kl_weight };
    if ((st = shards_init(&sh, r.be, &r.acts, shards_pick(r.be, c->shards, B, m.wt.total), B))) goto out;
    const struct weight_table *gts[SHARDS_MAX] = { &g.wt };
    for (int i = 1; i < sh.n; i++) {
        if (!(tw[i] = sd_calloc(1, sizeof(struct vae)))) { st = SD_ERR_NOMEM; goto out; }
        if ((st = vae_create(tw[i], sh.s[i].be, &m.cfg))) { sd_free(tw[i]); tw[i] = NULL; goto out; }
        vs.g[i] = tw[i];
        gts[i] = &tw[i]->wt;
    }
    if (sh.n > 1) LOG_I("vae: %d shards of %d-%d rows (one thread each)", sh.n, B / sh.n, (B + sh.n - 1) / sh.n);
    long long D = dataset_size(c->data);
    long shown[8];   /* the items of the sample grids' cells */
    for (int step = r.start_step + 1; step <= c->steps; step++) {
        for (int i = 0; i < B; i++, r.cursor++) {
            long idx = (long)(sd_rng_u32(&r.rng) % (uint32_t)(D < 0xffffffffLL ? D : 0xffffffffLL));
            if (i < 8) shown[i] = idx;
            if ((st = dataset_get(c->data, idx, vs.himg + (size_t)i * 3 * S * S, NULL, NULL, 0, NULL))) goto out;
        }
        sd_rng_normal(&r.rng, vs.heps, nl);
        st = shards_run(&sh, vae_shard, &vs);
        double rl = 0, kl = 0;
        for (int i = 0; i < sh.n; i++) rl += sh.s[i].part[0], kl += sh.s[i].part[1];
        rl /= ni;
        kl /= nl;
        if (!st) st = shards_reduce(&sh, &g.wt, gts);
        shards_reset(&sh, NULL);
        arena_reset(&r.acts, 0);
        if (st) goto out;
        if ((st = optim_step(&o, r.be))) goto out;
        char sample[4096] = "", ckpt[4096] = "";
        if (c->sample_every > 0 && (step % c->sample_every == 0 || step == c->steps)) {
            /* originals on top of reconstructions: two grids */
            snprintf(sample, sizeof sample, "%s/samples", c->out_dir);
            sd_mkdir(sample, 0755);
            int n = B < 8 ? B : 8;
            snprintf(sample, sizeof sample, "%s/samples/%07d-input.png", c->out_dir, step);
            if ((st = save_grid(sample, vs.himg, n, S, c->data, shown))) goto out;
            snprintf(sample, sizeof sample, "%s/samples/%07d-recon.png", c->out_dir, step);
            if ((st = save_grid(sample, vs.hrec, n, S, c->data, shown))) goto out;
        }
        if (step == r.start_step + 1 || step % (c->log_every > 0 ? c->log_every : 10) == 0)
            LOG_I("vae: recon %s %.5f kl %.4f", c->l1 ? "L1" : "L2", rl, kl);
        if (step_end(&r, &m.wt, &o, step, rl + c->kl_weight * kl, sample, ckpt, sizeof ckpt, &st)) {
            if (st) goto out;
            break;
        }
    }
    if (!st) {   /* the exported VAE (and its measured scale) is the EMA when EMA is on */
        optim_swap_ema(&o);
        st = export_part(&r, &m.wt, "vae", "diffusion_pytorch_model.safetensors");
        if (!st) st = set_scaling_factor(&r, &m);
        optim_swap_ema(&o);
    }
out:
    for (int i = 1; i < SHARDS_MAX; i++)
        if (tw[i]) { vae_free(tw[i]); sd_free(tw[i]); }
    shards_free(&sh);
    sd_free(host);
    sd_free(p);
    if (have_o) optim_free(&o);
    if (have_g) vae_free(&g);
    if (have_m) vae_free(&m);
    run_free(&r);
    return st;
}

/* ---- teacher ---- */

/* Teacher samples: DDIM with CFG for the first n cached captions, decoded, one grid. */
static sd_status teacher_samples(struct run *r, struct fwd *f, const struct unet *u, const struct vae *v,
                                 const struct schedule *sch, const float *ctx_c, const float *pool_c, int n, int Lk,
                                 int X, int P, int h, const char *path) {
    const struct train_config *c = r->c;
    struct backend *be = r->be;
    uint64_t mk = arena_mark(f->ar);
    int C = u->cfg.in_ch, S = h * vae_scale(v);
    size_t nl = (size_t)n * C * h * h;
    float *ctx = fwd_alloc(f, (size_t)2 * n * Lk * X), *pool = fwd_alloc(f, (size_t)2 * n * P), *x = fwd_alloc(f, nl);
    float *img = fwd_alloc(f, (size_t)n * 3 * S * S), *host = sd_malloc(sizeof(float) * (nl > (size_t)n * 3 * S * S ? nl : (size_t)n * 3 * S * S));
    float tid[6 * 256];
    if (!host || !ctx) { sd_free(host); arena_reset(f->ar, mk); return backend_status(be) ? backend_status(be) : SD_ERR_NOMEM; }
    be->ops->copy(be, ctx, ctx_c, (size_t)n * Lk * X * sizeof(float));
    be->ops->zero(be, ctx + (size_t)n * Lk * X, (size_t)n * Lk * X * sizeof(float));   /* null condition */
    be->ops->copy(be, pool, pool_c, (size_t)n * P * sizeof(float));
    be->ops->zero(be, pool + (size_t)n * P, (size_t)n * P * sizeof(float));
    time_ids_square(tid, 2 * n, S);
    struct sd_rng rr;
    sd_rng_init(&rr, 1234);    /* fixed noise: samples comparable across steps */
    sd_rng_normal(&rr, host, nl);
    be->ops->upload(be, x, host, nl * sizeof(float));
    struct ddim_job j = { u, sch, ctx, pool, tid, n, h, h, Lk, c->sample_steps > 0 ? c->sample_steps : 50,
                          c->guidance > 0 ? c->guidance : 4.0f };
    sd_status st = sampler_ddim(f, &j, x);
    if (!st) {
        be->ops->axpby(be, x, 1.0f / v->cfg.scaling_factor, x, 0.0f, NULL, (long long)nl);
        vae_decode(f, v, img, x, n, h, h);
        if (!(st = backend_status(be))) {
            be->ops->download(be, host, img, (size_t)n * 3 * S * S * sizeof(float));
            long items[8];   /* n <= 8: the first cached captions */
            st = save_grid(path, host, n, S, c->data, grid_first_items(items, n));
        }
    }
    sd_free(host);
    arena_reset(f->ar, mk);
    return st;
}

/* One teacher step's shard: ε-prediction loss and gradient of rows [lo, hi) of the batch. */
struct teacher_step {
    const struct unet *u;
    struct unet *g[SHARDS_MAX];          /* the gradient table of each shard */
    float *xt, *eps, *pred, *ctx, *pool; /* the batch */
    const float *tv, *tid;
    size_t per_l, per_c;
    int P, h, L;
    const double *p2w;                   /* P2 weight per t */
    size_t nb;                           /* elements of the whole batch's ε */
    int recompute;
};

static void teacher_shard(struct shard *s, void *p) {
    const struct teacher_step *t = p;
    struct backend *be = s->be;
    int lo = s->lo, n = s->hi - s->lo;
    size_t pl = t->per_l, ns = (size_t)n * pl;
    float *pred = t->pred + lo * pl, *eps = t->eps + lo * pl;
    struct unet *g = t->g[s->index];
    s->part[0] = 0;
    wt_zero(&g->wt, be);
    struct unet_tape tp;
    unet_down(&s->f, t->u, &tp, t->recompute ? UNET_TRAIN_RECOMPUTE : UNET_TRAIN_KEEP, t->xt + lo * pl, t->tv + lo,
                t->ctx + lo * t->per_c, t->pool + (size_t)lo * t->P, t->tid + 6 * lo, n, t->h, t->h, t->L);
    if (!be->err) unet_up(&s->f, t->u, &tp, pred);
    if (be->err) return;
    /* loss = mean_i w_i·mean (pred_i − ε_i)², w_i = (1 + SNR)^-γ normalised to mean 1 over
     * t (1 when γ = 0); dloss/dpred_i = 2 w_i (pred_i − ε_i) / n (into pred).  The
     * logged loss is the unweighted MSE, comparable across weightings. */
    be->ops->axpby(be, pred, 1.0f, pred, -1.0f, eps, (long long)ns);
    s->part[0] = be->ops->dot(be, pred, pred, (long long)ns);
    for (int i = 0; i < n; i++)
        be->ops->axpby(be, pred + i * pl, 2.0f * (float)t->p2w[(int)t->tv[lo + i]] / t->nb, pred + i * pl, 0.0f, NULL,
                       (long long)pl);
    if (!be->err) unet_up_backward(&s->f, t->u, g, &tp, pred, NULL);
    if (!be->err) unet_down_backward(&s->f, t->u, g, &tp, NULL, NULL, NULL, NULL);
}

/* *p = dir/sub (the previous *p freed). */
static sd_status load_in(const char *dir, const char *sub, char **p) {
    sd_free(*p);
    *p = part_path(dir, sub);
    return *p ? SD_OK : SD_ERR_NOMEM;
}

/* Gradient twins of a UNet for shards 1.. (shard 0 accumulates into the UNet's own). */
static sd_status make_twins(struct shards *sh, const struct unet_config *cfg, struct unet **tw, struct unet **g,
                            const struct weight_table **gts) {
    for (int i = 1; i < sh->n; i++) {
        if (!(tw[i] = sd_calloc(1, sizeof(struct unet)))) return SD_ERR_NOMEM;
        sd_status st = unet_create(tw[i], sh->s[i].be, cfg);
        if (st) { sd_free(tw[i]); tw[i] = NULL; return st; }
        g[i] = tw[i];
        gts[i] = &tw[i]->wt;
    }
    return SD_OK;
}

/* P2 loss weights (1 + SNR_t)^-gamma over the schedule, normalised to mean 1. */
static void p2_weights(const struct schedule *sch, float gamma, double *w) {
    double sum = 0;
    for (int t = 0; t < sch->T; t++) {
        double a = sch->alphas_cumprod[t];
        sum += w[t] = pow(1.0 + a / (1.0 - a), -(double)gamma);
    }
    for (int t = 0; t < sch->T; t++) w[t] *= sch->T / sum;
}

/* A teacher batch: B cached items drawn with replacement, t uniform, the condition
 * dropped with probability dropout; x_t = √ᾱ x0 + √(1−ᾱ) ε (hbuf: host scratch for ε). */
static void teacher_batch(struct run *r, const struct latent_cache *cache, const struct schedule *sch, float dropout,
                          int B, float *x0, float *xt, float *eps, float *ctx, float *pool, float *tv, float *hbuf) {
    struct backend *be = r->be;
    size_t per_l = cache->per_l, per_c = cache->per_c, nb = (size_t)B * per_l;
    int P = cache->P;
    for (int i = 0; i < B; i++, r->cursor++) {
        long long idx = sd_rng_u32(&r->rng) % (uint32_t)cache->K;
        int t = (int)(sd_rng_u32(&r->rng) % (uint32_t)sch->T);
        int drop = sd_rng_uniform(&r->rng) < dropout;
        tv[i] = (float)t;
        be->ops->copy(be, x0 + i * per_l, cache->lat + idx * per_l, per_l * 4);
        if (drop) {
            be->ops->zero(be, ctx + i * per_c, per_c * 4);
            be->ops->zero(be, pool + (size_t)i * P, (size_t)P * 4);
        } else {
            be->ops->copy(be, ctx + i * per_c, cache->ctx + idx * per_c, per_c * 4);
            be->ops->copy(be, pool + (size_t)i * P, cache->pool + idx * P, (size_t)P * 4);
        }
    }
    sd_rng_normal(&r->rng, hbuf, nb);
    be->ops->upload(be, eps, hbuf, nb * 4);
    for (int i = 0; i < B; i++) {
        double a = sch->alphas_cumprod[(int)tv[i]];
        be->ops->axpby(be, xt + i * per_l, (float)sqrt(a), x0 + i * per_l, (float)sqrt(1 - a), eps + i * per_l,
                       (long long)per_l);
    }
}

sd_status train_teacher(const struct train_config *c) {
    struct run r;
    struct cond k = { 0 };
    struct vae v = { 0 };
    struct unet u = { 0 }, g = { 0 };
    struct optimizer o = { 0 };
    struct schedule sch = { 0 };
    struct sched_config scfg;
    int have_k = 0, have_v = 0, have_u = 0, have_g = 0, have_o = 0;
    struct latent_cache cache = { 0 };
    struct shards sh = { 0 };
    struct unet *tw[SHARDS_MAX] = { 0 };    /* gradient twins of shards 1.. */
    char *p = NULL;
    SD_TRY(run_init(&r, c));
    sd_status st;
    struct fwd f = { .be = r.be, .ar = &r.acts };
    if ((st = cond_load(&k, r.be, c->model_dir))) goto out;
    have_k = 1;
    if ((st = load_in(c->model_dir, "vae", &p)) || (st = vae_load(&v, r.be, p, DT_F32))) goto out;
    have_v = 1;
    if ((st = load_in(c->model_dir, "unet", &p)) || (st = unet_load(&u, r.be, p, NULL, DT_F32))) goto out;
    have_u = 1;
    if ((st = load_in(c->model_dir, "scheduler/scheduler_config.json", &p)) || (st = sched_config_load(&scfg, p)) ||
        (st = schedule_init(&sch, &scfg)))
        goto out;
    if ((st = unet_create(&g, r.be, &u.cfg))) goto out;
    have_g = 1;
    if (u.cfg.cross_dim != k.X || u.pooled_dim != k.P) { st = sd_fail(SD_ERR_FORMAT, "unet and text encoders do not fit"); goto out; }
    if ((st = optim_init(&o, r.be, &c->opt, &u.wt, &g.wt))) goto out;
    have_o = 1;
    if ((st = maybe_resume(&r, &u.wt, &o))) goto out;

    /* cache: VAE latents (× scaling_factor) and text conditioning of K dataset items */
    int S = dataset_resolution(c->data), s = vae_scale(&v), h = S / s, L = k.L, X = k.X, P = k.P, B = c->batch;
    if (S % (s << (u.cfg.nlevels - 1))) { st = sd_fail(SD_ERR_INVALID, "resolution %d does not fit the VAE and UNet", S); goto out; }
    if ((st = cache_build(&cache, &f, &k, &v, c->data, c->cache_size, NULL))) goto out;
    long long K = cache.K;
    size_t per_l = cache.per_l, per_c = cache.per_c;
    float *cctx = cache.ctx, *cpool = cache.pool;
    size_t nb = (size_t)B * per_l;
    float *hbuf = sd_malloc(sizeof(float) * nb * 2), tv[256], tid[6 * 256];
    double *p2w = sd_malloc(sizeof(double) * sch.T);
    if (!hbuf || !p2w) { st = SD_ERR_NOMEM; goto out_p2; }
    time_ids_square(tid, B, S);
    p2_weights(&sch, c->p2_gamma, p2w);
    /* shards (shards.h): shard 0 accumulates into g, the others into twins of it */
    if ((st = shards_init(&sh, r.be, &r.acts, shards_pick(r.be, c->shards, B, u.wt.total), B))) goto out_p2;
    struct teacher_step ts = { &u, { &g }, NULL, NULL, NULL, NULL, NULL, tv, tid, per_l, per_c, P, h, L, p2w, nb,
                               c->recompute };
    const struct weight_table *gts[SHARDS_MAX] = { &g.wt };
    if ((st = make_twins(&sh, &u.cfg, tw, ts.g, gts))) goto out_p2;
    if (sh.n > 1) LOG_I("teacher: %d shards of %d-%d rows (one thread each)", sh.n, B / sh.n, (B + sh.n - 1) / sh.n);
    for (int step = r.start_step + 1; step <= c->steps && !st; step++) {
        float *x0 = fwd_alloc(&f, nb), *xt = fwd_alloc(&f, nb), *eps = fwd_alloc(&f, nb), *pred = fwd_alloc(&f, nb);
        float *ctx = fwd_alloc(&f, (size_t)B * per_c), *pool = fwd_alloc(&f, (size_t)B * P);
        if (!x0 || !xt || !eps || !pred || !ctx || !pool) { st = backend_status(r.be); break; }
        teacher_batch(&r, &cache, &sch, c->cfg_dropout, B, x0, xt, eps, ctx, pool, tv, hbuf);
        ts.xt = xt, ts.eps = eps, ts.pred = pred, ts.ctx = ctx, ts.pool = pool;
        st = shards_run(&sh, teacher_shard, &ts);
        double loss = 0;
        for (int i = 0; i < sh.n; i++) loss += sh.s[i].part[0];
        loss /= nb;
        if (!st) st = shards_reduce(&sh, &g.wt, gts);
        shards_reset(&sh, NULL);
        arena_reset(&r.acts, 0);
        if (st) break;
        if ((st = optim_step(&o, r.be))) break;
        char sample[4096] = "", ckpt[4096] = "";
        if (c->sample_every > 0 && (step % c->sample_every == 0 || step == c->steps)) {
            snprintf(sample, sizeof sample, "%s/samples", c->out_dir);
            sd_mkdir(sample, 0755);
            snprintf(sample, sizeof sample, "%s/samples/%07d.png", c->out_dir, step);
            optim_swap_ema(&o);      /* samples show what would be exported */
            st = teacher_samples(&r, &f, &u, &v, &sch, cctx, cpool, K < 8 ? (int)K : 8, L, X, P, h, sample);
            optim_swap_ema(&o);
            if (st) break;
        }
        if (step_end(&r, &u.wt, &o, step, loss, sample, ckpt, sizeof ckpt, &st)) break;
    }
    if (!st) {   /* the EMA weights when EMA is on */
        optim_swap_ema(&o);
        st = export_part(&r, &u.wt, "unet", "diffusion_pytorch_model.safetensors");
        optim_swap_ema(&o);
    }
out_p2:
    sd_free(hbuf);
    sd_free(p2w);
out:
    for (int i = 1; i < SHARDS_MAX; i++)
        if (tw[i]) { unet_free(tw[i]); sd_free(tw[i]); }
    shards_free(&sh);
    sd_free(p);
    cache_free(&cache);
    schedule_free(&sch);
    if (have_o) optim_free(&o);
    if (have_g) unet_free(&g);
    if (have_u) unet_free(&u);
    if (have_v) vae_free(&v);
    if (have_k) cond_free(&k);
    run_free(&r);
    return st;
}
