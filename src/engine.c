/* engine.c — see engine.h.  Owns the backend, both tokenizers and text encoders, the
 * UNet, the VAE, the schedule and the activation arena.  Every call resets the
 * activation arena at the end; the first call sizes it, later calls allocate nothing. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine.h"
#include "img2img.h"
#include "core/fs.h"
#include "core/rng.h"
#include "model/clip.h"
#include "model/cond.h"
#include "io/wfiles.h"
#include "model/lora.h"
#include "model/lora_cache.h"
#include "model/sgm.h"
#include "model/unet.h"
#include "model/vae.h"
#include "sample/sampler.h"
#include "text/tokenizer.h"

struct engine {
    struct backend *be;
    struct cond k;              /* tokenizers and text encoders */
    struct unet *unet;          /* heap: its weight table points into it, so it never moves */
    struct vae vae;
    struct schedule sched;
    struct sched_config sched_cfg;
    struct arena acts;
    struct engine_info info;
    char *model_dir;
    char *unet_dir;             /* the UNet's config folder */
    char *model_file;           /* a single-file model: its path (the UNet's default weights) */
    int loaded_vae;
    sd_dtype wdt;               /* the weight storage asked for (may be WT_DTYPE_AUTO) */
    struct lora_cache loras;    /* run-time LoRA adapters by path (model/lora_cache.h) */
    char *lora_dir;             /* where their names are looked up, NULL = nowhere */
};

static sd_status load_part(const char *dir, const char *sub, char **path) {
    *path = sd_path_join(dir, sub);
    return *path ? SD_OK : SD_ERR_NOMEM;
}

void engine_free(struct engine *e) {
    if (!e) return;
    cond_free(&e->k);
    if (e->unet) { unet_free(e->unet); sd_free(e->unet); }
    if (e->loaded_vae) vae_free(&e->vae);
    lora_cache_free(&e->loras);
    sd_free(e->lora_dir);
    schedule_free(&e->sched);
    arena_free(&e->acts);
    backend_destroy(e->be);
    sd_free(e->model_dir);
    sd_free(e->unet_dir);
    sd_free(e->model_file);
    sd_free(e);
}

static const char *base_name(const char *p) {
    size_t n = strlen(p);
    while (n > 1 && p[n - 1] == '/') n--;
    const char *s = p + n;
    while (s > p && s[-1] != '/') s--;
    return s;
}

/* Device memory figures for engine_info (backends without the optional ops report 0). */
static void engine_mem_report(struct engine *e) {
    const struct backend_ops *o = e->be->ops;
    e->info.device_bytes = o->mem_in_use ? o->mem_in_use(e->be) : 0;
    e->info.device_peak_bytes = o->mem_peak ? o->mem_peak(e->be) : 0;
}

/* Cross-checks between the parts' configs (docs/sdxl.md §8). */
static sd_status check_consistency(struct engine *e) {
    const struct unet_config *u = &e->unet->cfg;
    int cross = e->k.te1.cfg.hidden + e->k.te2.cfg.hidden;
    if (u->cross_dim != cross)
        return sd_fail(SD_ERR_FORMAT, "unet cross_attention_dim %d != text_encoder hidden %d + text_encoder_2 hidden %d",
                       u->cross_dim, e->k.te1.cfg.hidden, e->k.te2.cfg.hidden);
    if (e->unet->pooled_dim != e->k.te2.cfg.projection_dim)
        return sd_fail(SD_ERR_FORMAT, "unet expects a pooled embedding of %d, text_encoder_2 projects to %d",
                       e->unet->pooled_dim, e->k.te2.cfg.projection_dim);
    if (u->in_ch != e->vae.cfg.latent_ch || u->out_ch != e->vae.cfg.latent_ch)
        return sd_fail(SD_ERR_FORMAT, "unet in/out channels %d/%d != vae latent_channels %d", u->in_ch, u->out_ch,
                       e->vae.cfg.latent_ch);
    int L = tokenizer_max_length(e->k.tok1);
    if (L != tokenizer_max_length(e->k.tok2) || L > e->k.te1.cfg.max_pos || L > e->k.te2.cfg.max_pos)
        return sd_fail(SD_ERR_FORMAT, "tokenizer max length %d does not fit the text encoders", L);
    return SD_OK;
}

/* The folder's UNet config with weights from path (NULL: the folder's own), and a LoRA
 * file merged in when lora_path is given.  NULL (and *st) on failure. */
static struct unet *load_unet(struct engine *e, const char *path, const char *lora_path, float lora_scale,
                              sd_status *st, const char **failed) {
    struct unet *u = sd_calloc(1, sizeof *u);
    *st = u ? unet_load(u, e->be, e->unet_dir, path ? path : e->model_file, e->wdt) : SD_ERR_NOMEM;
    if (failed) *failed = "generator";
    if (!*st && lora_path && (*st = lora_apply_file(&u->wt, e->be, lora_path, lora_scale != 0 ? lora_scale : 1.0f))) {
        if (failed) *failed = "lora";
        unet_free(u);
    }
    if (*st) { sd_free(u); return NULL; }
    return u;
}

/* "model", "model:generator", "model+lora", "model:generator+lora" (basenames). */
static void set_model_name(struct engine *e, const char *unet_path, const char *lora_path) {
    char *n = e->info.model_name;
    size_t cap = sizeof e->info.model_name;
    int k = snprintf(n, cap, "%s", base_name(e->model_dir));
    if (unet_path && k >= 0 && (size_t)k < cap) k += snprintf(n + k, cap - (size_t)k, ":%s", base_name(unet_path));
    if (lora_path && k >= 0 && (size_t)k < cap) snprintf(n + k, cap - (size_t)k, "+%s", base_name(lora_path));
}

/* Tokenizers from tok_dir, and the parts' folder names (of the model folder, or of the
 * single file's config folder) with the UNet's kept for load_unet. */
static sd_status load_tokenizers(struct engine *e, const char *dir, const char *tok_dir, struct model_parts *mp,
                                 char **p) {
    struct model_parts tp;
    SD_TRY(model_parts_load(mp, dir));
    if (strcmp(tok_dir, dir)) SD_TRY(model_parts_load(&tp, tok_dir));
    else tp = *mp;
    SD_TRY(load_part(dir, mp->unet, &e->unet_dir));
    if ((*p = sd_path_join(tok_dir, tp.tok1)) == NULL) return SD_ERR_NOMEM;
    SD_TRY(tokenizer_load(&e->k.tok1, *p));
    sd_free(*p);
    if ((*p = sd_path_join(tok_dir, tp.tok2)) == NULL) return SD_ERR_NOMEM;
    SD_TRY(tokenizer_load(&e->k.tok2, *p));
    sd_free(*p);
    *p = NULL;
    return SD_OK;
}

/* Text encoders and VAE of a diffusers folder. */
static sd_status load_folder_parts(struct engine *e, const char *dir, const struct model_parts *mp, char **p) {
    sd_status st;
    if ((st = load_part(dir, mp->te1, p)) || (st = clip_load(&e->k.te1, e->be, *p, 0, e->wdt))) return st;
    e->k.loaded1 = 1;
    sd_free(*p);
    if ((st = load_part(dir, mp->te2, p)) || (st = clip_load(&e->k.te2, e->be, *p, 1, e->wdt))) return st;
    e->k.loaded2 = 1;
    sd_free(*p);
    if ((st = load_part(dir, mp->vae, p)) || (st = vae_load(&e->vae, e->be, *p, e->wdt))) return st;
    e->loaded_vae = 1;
    sd_free(*p);
    *p = NULL;
    return SD_OK;
}

static sd_status config_of(const char *dir, const char *sub, char **p) {
    char *d = sd_path_join(dir, sub);
    *p = d ? sd_path_join(d, "config.json") : NULL;
    sd_free(d);
    return *p ? SD_OK : SD_ERR_NOMEM;
}

/* Text encoders and VAE of a single-file checkpoint, configs from cdir.  Every tensor
 * of the file outside the UNet's prefix must be taken (the UNet checks its own). */
static sd_status load_single_parts(struct engine *e, const char *file, const char *cdir, const struct model_parts *mp,
                                   char **p) {
    struct clip_config c1, c2;
    struct vae_config vc;
    sd_status st;
    if ((st = config_of(cdir, mp->te1, p)) || (st = clip_config_load(&c1, *p))) return st;
    sd_free(*p);
    if ((st = config_of(cdir, mp->te2, p)) || (st = clip_config_load(&c2, *p))) return st;
    sd_free(*p);
    if ((st = config_of(cdir, mp->vae, p)) || (st = vae_config_load(&vc, *p))) return st;
    sd_free(*p);
    *p = NULL;
    struct wfiles w;
    SD_TRY(wfiles_open_file(&w, file));
    c1.wdt = c2.wdt = vc.wdt = wfiles_dtype(&w, e->wdt);
    if (!(st = clip_create(&e->k.te1, e->be, &c1, 0))) e->k.loaded1 = 1;
    if (!st && !(st = clip_create(&e->k.te2, e->be, &c2, 1))) e->k.loaded2 = 1;
    if (!st && !(st = vae_create(&e->vae, e->be, &vc))) e->loaded_vae = 1;
    if (!st && !(st = clip_bind(&e->k.te1, e->be, &w, SGM_CLIP_L_PREFIX, file)) &&
        !(st = clip_bind(&e->k.te2, e->be, &w, SGM_CLIP_G_PREFIX, file)) &&
        !(st = vae_bind(&e->vae, e->be, &w, SGM_VAE_PREFIX, file))) {
        for (int j = 0; j < w.f[0].ntensors; j++)
            if (!strncmp(w.f[0].tensors[j].name, SGM_UNET_PREFIX, strlen(SGM_UNET_PREFIX))) w.used[0][j] = 1;
        st = sgm_check_leftovers(&w, 0);
    }
    wfiles_close(&w);
    return st;
}

/* The weight storage asked for, checked against the backend (backend.h, "Weight precision"). */
static sd_status engine_weights_dtype(struct engine *e, const char *name) {
    if (wt_dtype_parse(name ? name : "auto", &e->wdt))
        return sd_fail(SD_ERR_INVALID, "weights_dtype '%s': expected auto, f32, f16 or bf16", name);
    if (strcmp(e->be->name, "cuda")) return SD_OK;
    if (e->wdt == WT_DTYPE_AUTO) {
        LOG_I("weights_dtype auto on CUDA: f32 (the CUDA backend takes F32 weights only, for now)");
        e->wdt = DT_F32;
    }
    return e->wdt == DT_F32 ? SD_OK : sd_fail(SD_ERR_UNSUPPORTED, "weights_dtype %s: the CUDA backend takes F32 weights only, for now",
                                              wt_dtype_name(e->wdt));
}

sd_status engine_load(struct engine **out, const struct engine_config *cfg) {
    *out = NULL;
    if (!cfg->model_dir) return sd_fail(SD_ERR_INVALID, "no model folder given");
    struct engine *e = sd_calloc(1, sizeof *e);
    if (!e) return SD_ERR_NOMEM;
    char *p = NULL;
    sd_status st;
    struct stat sb;
    struct model_parts mp;
    const char *dir = cfg->model_dir;
    int single = sd_stat(dir, &sb) == 0 && S_ISREG(sb.st_mode);
    double t0 = sd_now_ms();
    if (!(e->model_dir = sd_strdup(dir))) { st = SD_ERR_NOMEM; goto fail; }
    lora_cache_init(&e->loras, cfg->lora_cache_bytes ? cfg->lora_cache_bytes : ENGINE_LORA_CACHE_DEFAULT);
    if (cfg->lora_dir && !(e->lora_dir = sd_strdup(cfg->lora_dir))) { st = SD_ERR_NOMEM; goto fail; }
    if (single && !cfg->config_dir) {
        st = sd_fail(SD_ERR_INVALID, "%s is a single file: its configs must come from a folder (--config DIR)", dir);
        goto fail;
    }
    if (single && !(e->model_file = sd_strdup(dir))) { st = SD_ERR_NOMEM; goto fail; }
    const char *cdir = single ? cfg->config_dir : dir;
    if ((st = backend_create(&e->be, cfg->backend ? cfg->backend : "cpu", cfg->threads))) goto fail;
    if ((st = engine_weights_dtype(e, cfg->weights_dtype))) goto fail;
    if ((st = load_tokenizers(e, cdir, single && cfg->tokenizer_dir ? cfg->tokenizer_dir : cdir, &mp, &p))) goto fail;
    if ((st = single ? load_single_parts(e, dir, cdir, &mp, &p) : load_folder_parts(e, dir, &mp, &p))) goto fail;
    if (!(e->unet = load_unet(e, cfg->unet_path, cfg->lora_path, cfg->lora_scale, &st, NULL))) goto fail;
    char sched[96];
    snprintf(sched, sizeof sched, "%s/scheduler_config.json", mp.scheduler);
    if ((st = load_part(cdir, sched, &p)) || (st = sched_config_load(&e->sched_cfg, p)) ||
        (st = schedule_init(&e->sched, &e->sched_cfg)))
        goto fail;
    sd_free(p); p = NULL;
    cond_set_dims(&e->k);
    if ((st = check_consistency(e))) goto fail;
    if ((st = engine_set_vae_tile(e, cfg->vae_tile, cfg->vae_tile_overlap))) goto fail;
    struct arena_allocator al = backend_allocator(e->be);
    arena_init(&e->acts, "activations", &al, 1);

    struct engine_info *in = &e->info;
    set_model_name(e, cfg->unet_path, cfg->lora_path);
    in->latent_channels = e->vae.cfg.latent_ch;
    in->vae_scale = vae_scale(&e->vae);
    in->max_tokens = tokenizer_max_length(e->k.tok1);
    in->default_width = in->default_height = e->unet->cfg.sample_size * in->vae_scale;
    in->size_multiple = in->vae_scale * (1 << (e->unet->cfg.nlevels - 1));
    in->backend = e->be->name;
    in->kernels = backend_kernels(e->be);
    in->weights_dtype = wt_dtype_name(e->unet->cfg.wdt);
    in->param_bytes = arena_capacity(&e->k.te1.params) + arena_capacity(&e->k.te2.params) +
                      arena_capacity(&e->unet->params) + arena_capacity(&e->vae.params);
    engine_mem_report(e);
    sd_heap_trim();   /* the loaders' temporaries */
    LOG_I("loaded %s on %s in %.0f ms: %.1f MiB of weights (UNet %s); %s", in->model_name, in->backend,
          sd_now_ms() - t0, in->param_bytes / 1048576.0, in->weights_dtype, in->kernels);
    *out = e;
    return SD_OK;
fail:
    if (p) sd_wrap(st, "loading %s", p);
    sd_free(p);
    engine_free(e);
    return st;
}

const struct engine_info *engine_info(const struct engine *e) { return &e->info; }

sd_status engine_set_vae_tile(struct engine *e, int tile, int overlap) {
    if (tile && (tile < ENGINE_VAE_TILE_MIN || tile > ENGINE_VAE_TILE_MAX))
        return sd_fail(SD_ERR_INVALID, "vae_tile %d: 0 (untiled) or %d..%d latent pixels", tile,
                       ENGINE_VAE_TILE_MIN, ENGINE_VAE_TILE_MAX);
    if (overlap < 0 || (tile && overlap > tile / 4))
        return sd_fail(SD_ERR_INVALID, "vae_tile overlap %d: 0 (= tile / 4) or 1..%d", overlap, tile / 4);
    e->info.vae_tile = tile;
    e->info.vae_tile_overlap = !tile ? 0 : overlap ? overlap : tile / 4;
    return SD_OK;
}

/* Is a latent of h × w decoded tile by tile?  Only when it does not fit in one tile. */
static int vae_tiled(const struct engine *e, int h, int w) {
    return e->info.vae_tile && (h > e->info.vae_tile || w > e->info.vae_tile);
}

void engine_dims(const struct engine *e, struct engine_dims *d) {
    d->L = tokenizer_max_length(e->k.tok1);
    d->D1 = e->k.te1.cfg.hidden;
    d->D2 = e->k.te2.cfg.hidden;
    d->P = e->k.te2.cfg.projection_dim;
    d->cross = e->unet->cfg.cross_dim;
    d->latent_ch = e->vae.cfg.latent_ch;
    d->unet_in = e->unet->cfg.in_ch;
}

void engine_default_timesteps(int nsteps, int *ts) {
    if (nsteps == 1) { ts[0] = 399; return; }
    for (int i = 0; i < nsteps; i++) ts[i] = 999 - (int)((long)i * 1000 / nsteps);  /* 4: 999 749 499 249 */
}

/* ---- run-time LoRA adapters ---- */

sd_status engine_set_lora_dir(struct engine *e, const char *dir, size_t cache_bytes) {
    e->loras.max_bytes = cache_bytes ? cache_bytes : ENGINE_LORA_CACHE_DEFAULT;
    if (dir && e->lora_dir && !strcmp(dir, e->lora_dir)) return SD_OK;
    char *d = dir ? sd_strdup(dir) : NULL;
    if (dir && !d) return SD_ERR_NOMEM;
    sd_free(e->lora_dir);
    e->lora_dir = d;
    return SD_OK;
}

static void lora_info(struct engine *e) {
    e->info.lora_bytes = e->loras.bytes;
    e->info.lora_cached = e->loras.n;
    e->info.lora_loads = e->loras.loads;
    e->info.lora_hits = e->loras.hits;
    e->info.lora_evictions = e->loras.evictions;
}

/* The adapters p->lora names, from the cache (loaded on a miss), as the set the UNet
 * passes apply; act stays empty when p names none. */
static sd_status lora_activate(struct engine *e, const struct gen_params *p, struct lora_active *act) {
    char paths[ENGINE_LORA_MAX][PATH_MAX];
    const char *pp[ENGINE_LORA_MAX];
    const struct lora_adapter *ads[ENGINE_LORA_MAX];
    float scales[ENGINE_LORA_MAX];
    int n = 0;
    for (; n < ENGINE_LORA_MAX && p->lora[n].name[0]; n++) {
        SD_TRY(lora_find_file(e->lora_dir, p->lora[n].name, paths[n], sizeof paths[n]));
        pp[n] = paths[n];
        scales[n] = p->lora[n].scale;
    }
    if (!n) return SD_OK;
    sd_status st = lora_cache_get(&e->loras, e->be, &e->unet->wt, pp, n, ads);
    lora_info(e);
    return st ? sd_wrap(st, "lora") : lora_active_build(act, e->unet->wt.n, ads, scales, n);
}

sd_status engine_check_params(const struct engine *e, const struct gen_params *p) {
    int s = e->info.size_multiple;
    if (p->width < s || p->width % s || p->width > 16384)
        return sd_fail(SD_ERR_INVALID, "width %d must be a positive multiple of %d", p->width, s);
    if (p->height < s || p->height % s || p->height > 16384)
        return sd_fail(SD_ERR_INVALID, "height %d must be a positive multiple of %d", p->height, s);
    SD_TRY(engine_lora_check(p));
    if (p->sampler == GEN_SAMPLER_DDIM) {
        if (p->strength != 0 && p->strength != 1) return sd_fail(SD_ERR_INVALID, "strength: the DMD2 sampler only");
        if (p->nsteps < 1 || p->nsteps > e->sched.T) return sd_fail(SD_ERR_INVALID, "steps %d outside [1, %d]", p->nsteps, e->sched.T);
        if (!(p->guidance >= 0 && p->guidance <= 100)) return sd_fail(SD_ERR_INVALID, "guidance outside [0, 100]");
        return SD_OK;
    }
    if (p->sampler != GEN_SAMPLER_DMD2) return sd_fail(SD_ERR_INVALID, "unknown sampler");
    if (p->nsteps < 1 || p->nsteps > ENGINE_MAX_STEPS)
        return sd_fail(SD_ERR_INVALID, "steps %d outside [1, %d]", p->nsteps, ENGINE_MAX_STEPS);
    char why[160];
    if (timesteps_check(p->timesteps, p->nsteps, ENGINE_MAX_STEPS, e->sched.T, "timesteps", why, sizeof why))
        return sd_fail(SD_ERR_INVALID, "%s", why);
    if (engine_img2img_start(p) < 0)
        return sd_fail(SD_ERR_INVALID, "strength %g leaves no step: it must be in (0, 1] and above the last "
                       "timestep / 1000 (%g)", (double)p->strength, p->timesteps[p->nsteps - 1] / 1000.0);
    return SD_OK;
}

/* The end of every engine call: the activation arena's high-water mark goes into
 * engine_info, the arena is reset, and the call's status is st or else the backend's
 * first (sticky) error, which is cleared so the next call starts clean. */
static sd_status finish(struct engine *e, sd_status st) {
    sd_status bst = backend_status(e->be);
    e->be->err = SD_OK;
    arena_reset(&e->acts, 0);
    e->info.scratch_bytes = e->acts.peak;
    engine_mem_report(e);
    return st ? st : bst;
}

/* Text conditioning on the backend (model/cond.h): ctx [n, L, cross] and pooled [n, P]. */
static sd_status encode_device(struct engine *e, struct fwd *f, const char *const *prompts, int n,
                               float *ctx, float *pooled, struct engine_text *out) {
    struct cond_trace tr = { 0 };
    if (out) tr = (struct cond_trace){ out->ids1, out->ids2, out->te1_penult, out->te1_last, out->te2_penult,
                                       out->truncated };
    return cond_encode(&e->k, f, prompts, n, ctx, pooled, &tr);
}

sd_status engine_encode(struct engine *e, const char *const *prompts, int n, struct engine_text *out) {
    struct fwd f = { .be = e->be, .ar = &e->acts };
    int L = tokenizer_max_length(e->k.tok1), P = e->k.te2.cfg.projection_dim, X = e->unet->cfg.cross_dim;
    float *ctx = fwd_alloc(&f, (size_t)n * L * X), *pooled = fwd_alloc(&f, (size_t)n * P);
    sd_status st = ctx && pooled ? encode_device(e, &f, prompts, n, ctx, pooled, out) : SD_OK;
    if (!st && !e->be->err) {
        if (out->context) e->be->ops->download(e->be, out->context, ctx, (size_t)n * L * X * sizeof(float));
        if (out->pooled) e->be->ops->download(e->be, out->pooled, pooled, (size_t)n * P * sizeof(float));
    }
    return finish(e, st);
}

/* Upload n floats of host data into a fresh activation slice. */
static float *upload(struct fwd *f, const float *host, size_t n) {
    float *d = fwd_alloc(f, n);
    if (d) f->be->ops->upload(f->be, d, host, n * sizeof(float));
    return d;
}

sd_status engine_unet(struct engine *e, const float *x, const float *t, const float *ctx,
                      const float *pooled, const float *time_ids, int N, int h, int w, float *out) {
    struct fwd f = { .be = e->be, .ar = &e->acts };
    int L = tokenizer_max_length(e->k.tok1), C = e->unet->cfg.in_ch;
    size_t n = (size_t)N * C * h * w;
    float *dx = upload(&f, x, n), *dctx = upload(&f, ctx, (size_t)N * L * e->unet->cfg.cross_dim);
    float *dp = upload(&f, pooled, (size_t)N * e->unet->pooled_dim), *dout = fwd_alloc(&f, (size_t)N * e->unet->cfg.out_ch * h * w);
    unet_forward(&f, e->unet, dout, dx, t, dctx, dp, time_ids, N, h, w, L);
    if (!e->be->err) e->be->ops->download(e->be, out, dout, (size_t)N * e->unet->cfg.out_ch * h * w * sizeof(float));
    return finish(e, SD_OK);
}

sd_status engine_vae_encode(struct engine *e, const float *img, int N, int H, int W, float *mean) {
    struct fwd f = { .be = e->be, .ar = &e->acts };
    int s = vae_scale(&e->vae), C = e->vae.cfg.latent_ch;
    if (H % s || W % s) return sd_fail(SD_ERR_INVALID, "image size %dx%d not a multiple of %d", W, H, s);
    size_t nm = (size_t)N * C * (H / s) * (W / s);
    float *di = upload(&f, img, (size_t)N * e->vae.cfg.in_ch * H * W), *dm = fwd_alloc(&f, nm);
    vae_encode(&f, &e->vae, dm, di, N, H, W);
    if (!e->be->err) e->be->ops->download(e->be, mean, dm, nm * sizeof(float));
    return finish(e, SD_OK);
}

/* Before an untiled decode from an empty arena: one block for all it will take (the
 * latents, the image, the decoder's buffers), not the UNet's block plus a new one. */
static void expect_decode(struct engine *e, int N, int h, int w) {
    if (vae_tiled(e, h, w)) return;   /* a tiled decode plans its own tiles */
    int s = vae_scale(&e->vae);
    size_t io = (size_t)N * (e->vae.cfg.latent_ch * h * w + e->vae.cfg.out_ch * (size_t)h * s * w * s) * sizeof(float);
    size_t dec = vae_decode_bytes(&e->vae, N, h, w);
    if (dec) arena_expect(&e->acts, dec + io + 4096);
}

sd_status engine_vae_decode(struct engine *e, const float *z, int N, int h, int w, float *img) {
    struct fwd f = { .be = e->be, .ar = &e->acts };
    if (vae_tiled(e, h, w)) {   /* host to host, one tile on the backend at a time */
        vae_decode_tiled(&f, &e->vae, img, z, N, h, w, e->info.vae_tile, e->info.vae_tile_overlap);
        return finish(e, SD_OK);
    }
    int s = vae_scale(&e->vae), C = e->vae.cfg.latent_ch, O = e->vae.cfg.out_ch;
    size_t ni = (size_t)N * O * h * s * w * s;
    expect_decode(e, N, h, w);
    float *dz = upload(&f, z, (size_t)N * C * h * w), *di = fwd_alloc(&f, ni);
    vae_decode(&f, &e->vae, di, dz, N, h, w);
    if (!e->be->err) e->be->ops->download(e->be, img, di, ni * sizeof(float));
    return finish(e, SD_OK);
}

sd_status engine_unet_backward(struct engine *e, const float *x, const float *t, const float *ctx,
                               const float *pooled, const float *time_ids, int N, int h, int w,
                               const float *dout, float *out, float *dx, float *dctx, float *dpooled,
                               int recompute, engine_grad_fn each, void *ud) {
    struct backend *be = e->be;
    struct fwd f = { .be = be, .ar = &e->acts };
    const struct unet *u = e->unet;
    int L = tokenizer_max_length(e->k.tok1), C = u->cfg.in_ch, O = u->cfg.out_ch;
    size_t nx = (size_t)N * C * h * w, no = (size_t)N * O * h * w, nc = (size_t)N * L * u->cfg.cross_dim;
    size_t np = (size_t)N * u->pooled_dim;
    if (u->cfg.wdt != DT_F32)
        return sd_fail(SD_ERR_UNSUPPORTED, "the UNet backward needs f32 weights (--weights-dtype f32), not %s",
                       wt_dtype_name(u->cfg.wdt));
    struct unet g;
    sd_status st = unet_create(&g, be, &u->cfg);
    if (st) return st;
    unet_zero(be, &g);
    float *dx_ = upload(&f, x, nx), *dctx_ = upload(&f, ctx, nc), *dp_ = upload(&f, pooled, np);
    float *dout_ = upload(&f, dout, no), *out_ = fwd_alloc(&f, no);
    float *gx = fwd_alloc(&f, nx), *gctx = fwd_alloc(&f, nc), *gp = fwd_alloc(&f, np);
    if (gctx) be->ops->zero(be, gctx, nc * sizeof(float));
    struct unet_tape tp;
    unet_down(&f, u, &tp, recompute ? UNET_TRAIN_RECOMPUTE : UNET_TRAIN_KEEP, dx_, t, dctx_, dp_, time_ids, N, h, w, L);
    if (!be->err) unet_up(&f, u, &tp, out_);
    if (!be->err) unet_up_backward(&f, u, &g, &tp, dout_, gctx);
    if (!be->err) unet_down_backward(&f, u, &g, &tp, NULL, gx, gctx, gp);
    if (!(st = backend_status(be))) {
        if (out) be->ops->download(be, out, out_, no * sizeof(float));
        if (dx) be->ops->download(be, dx, gx, nx * sizeof(float));
        if (dctx) be->ops->download(be, dctx, gctx, nc * sizeof(float));
        if (dpooled) be->ops->download(be, dpooled, gp, np * sizeof(float));
        float *host = NULL;
        size_t cap = 0;
        for (int i = 0; i < g.wt.n && each && !st; i++) {
            const struct weight_row *r = &g.wt.rows[i];
            size_t n = (size_t)sd_numel(r->ndim, r->shape);
            if (n > cap) {
                float *p = sd_realloc(host, n * sizeof(float));
                if (!p) { st = SD_ERR_NOMEM; break; }
                host = p;
                cap = n;
            }
            be->ops->download(be, host, *r->dst, n * sizeof(float));
            each(ud, r->name, r->ndim, r->shape, host);
        }
        sd_free(host);
    }
    unet_free(&g);
    return finish(e, st);
}

/* ---- generation ---- */

struct gen_ctx {
    struct sd_rng *rngs;
    int N, step0;                    /* step0: the first step run (img2img) */
    size_t per;                      /* floats per image */
    struct gen_trace *trace;
    const struct gen_hooks *hooks;   /* may be NULL */
};

static void gen_noise(void *ud, int step, float *host, size_t n) {
    struct gen_ctx *g = ud;
    step += g->step0;
    if (g->trace && g->trace->step_noise[step]) { memcpy(host, g->trace->step_noise[step], n * sizeof(float)); return; }
    for (int i = 0; i < g->N; i++) sd_rng_normal(&g->rngs[i], host + (size_t)i * g->per, g->per);
}

static int gen_step(void *ud, int step, int total) {
    struct gen_ctx *g = ud;
    return g->hooks && g->hooks->progress ? g->hooks->progress(g->hooks->ud, g->step0 + step, g->step0 + total) : 0;
}

/* A generation whose numbers went NaN or infinite fails instead of serving a black
 * image: x [n·per], what names the stage. */
static sd_status check_finite(const float *x, size_t total, size_t per, const char *what) {
    long long bad = sd_find_nonfinite(x, total);
    if (bad < 0) return SD_OK;
    return sd_fail(SD_ERR_NUMERIC, "image %lld: the %s became non-finite (NaN or infinity): the model's "
                   "weights or the request's numbers overflow", bad / (long long)per, what);
}

/* A decoded value in [-1, 1] as a pixel in [0, 1] (NaN-safe: anything not above 0 is 0),
 * and that as an 8-bit level (round half to even): the one place these rules live. */
static float unit_pixel(float v) {
    v = v * 0.5f + 0.5f;
    return v > 0 ? (v < 1 ? v : 1) : 0;
}
static uint8_t level8(float unit) { return (uint8_t)nearbyintf(unit * 255.0f); }

void engine_pixel_error(const float *a, const float *b, size_t n, struct engine_pixel_error *out) {
    double se = 0, mf = 0;
    int m8 = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)level8(unit_pixel(a[i])) - (int)level8(unit_pixel(b[i])));
        double df = fabs((double)a[i] - b[i]);
        if (d > m8) m8 = d;
        if (!(df <= mf)) mf = df;
        se += (double)d * d;
    }
    out->max_abs = m8;
    out->max_abs_float = mf;
    out->psnr_db = se > 0 ? 10.0 * log10(255.0 * 255.0 / (se / (double)n)) : INFINITY;
}

/* decode: the latents x [n, C, h, w] on the device ÷ scaling_factor -> the VAE (tiled
 * when vae_tiled says so) -> [-1, 1] -> pixels in [0, 1] in host (3·npix·n floats). */
static sd_status decode_latents(struct engine *e, struct fwd *f, float *x, float *host, int n, int h, int w) {
    struct backend *be = e->be;
    int s = e->info.vae_scale;
    size_t per = (size_t)e->vae.cfg.latent_ch * h * w, npix = (size_t)h * s * w * s;
    be->ops->axpby(be, x, 1.0f / e->vae.cfg.scaling_factor, x, 0.0f, NULL, (long long)(per * n));
    if (vae_tiled(e, h, w)) {
        float *z = sd_malloc(per * n * sizeof(float));
        if (!z) return SD_ERR_NOMEM;
        be->ops->download(be, z, x, per * n * sizeof(float));
        vae_decode_tiled(f, &e->vae, host, z, n, h, w, e->info.vae_tile, e->info.vae_tile_overlap);
        sd_free(z);
    } else {
        float *img = fwd_alloc(f, 3 * npix * n);
        vae_decode(f, &e->vae, img, x, n, h, w);
        if (!be->err) be->ops->download(be, host, img, 3 * npix * n * sizeof(float));
    }
    SD_TRY(backend_status(be));
    SD_TRY(check_finite(host, 3 * npix * n, 3 * npix, "decoded image"));
    for (size_t i = 0; i < 3 * npix * n; i++) host[i] = unit_pixel(host[i]);
    return SD_OK;
}

/* Inpainting's last word: the masked items' kept pixels in host [n, 3, H, W] become the
 * decode of their init latents (img2img.h). */
static sd_status decode_kept(struct engine *e, struct fwd *f, const struct img2img *ii, float *host, int h, int w) {
    size_t npix = (size_t)h * w * ii->s * ii->s;
    float *z = sd_malloc(sizeof(float) * ii->per * ii->nmask), *round = sd_malloc(sizeof(float) * 3 * npix * ii->nmask);
    float *dz = z && round ? fwd_alloc(f, ii->per * ii->nmask) : NULL;
    sd_status st = z && round ? SD_OK : SD_ERR_NOMEM;
    if (dz) {
        int k = img2img_kept_latents(ii, z);
        e->be->ops->upload(e->be, dz, z, sizeof(float) * ii->per * k);
        if (!(st = decode_latents(e, f, dz, round, k, h, w))) img2img_composite(ii, host, round);
    }
    sd_free(z);
    sd_free(round);
    return st;
}

sd_status engine_generate(struct engine *e, const struct gen_params *p, struct gen_item *items, int n,
                          uint8_t *rgb, struct gen_timings *tm, const struct gen_hooks *hooks,
                          struct gen_trace *trace) {
    SD_TRY(engine_check_params(e, p));
    if (n < 1 || n > 256) return sd_fail(SD_ERR_INVALID, "batch of %d images outside [1, 256]", n);
    struct backend *be = e->be;
    struct fwd f = { .be = be, .ar = &e->acts, .cancelled = hooks ? hooks->cancelled : NULL,
                    .cancel_ud = hooks ? hooks->ud : NULL };
    int s = e->info.vae_scale, C = e->unet->cfg.in_ch, h = p->height / s, w = p->width / s;
    int L = tokenizer_max_length(e->k.tok1), X = e->unet->cfg.cross_dim, P = e->unet->pooled_dim;
    size_t per = (size_t)C * h * w, npix = (size_t)p->width * p->height;
    struct gen_timings t = { 0 };
    struct img2img ii = { 0 };
    double t0 = sd_now_ms();
    sd_status st = SD_OK;
    struct lora_active act = { 0 };
    const char **prompts = sd_malloc(sizeof(char *) * n);
    int *trunc = sd_calloc(n, sizeof(int));
    struct sd_rng *rngs = sd_malloc(sizeof *rngs * n);
    float *host = sd_malloc(sizeof(float) * (per > 3 * npix ? per : 3 * npix) * n);
    float *tid = sd_malloc(sizeof(float) * 6 * n), *tid2 = NULL;
    if (!prompts || !trunc || !rngs || !host || !tid) { st = SD_ERR_NOMEM; goto out; }
    if ((st = lora_activate(e, p, &act))) goto out;
    for (int i = 0; i < n; i++) {
        prompts[i] = items[i].prompt ? items[i].prompt : "";
        sd_rng_init(&rngs[i], items[i].seed);
        int z = 1;
        for (int k = 0; k < 6; k++) z &= p->time_ids[k] == 0;
        for (int k = 0; k < 6; k++)
            tid[i * 6 + k] = (float)(z ? (int[]){ p->height, p->width, 0, 0, p->height, p->width }[k] : p->time_ids[k]);
    }
    int ddim = p->sampler == GEN_SAMPLER_DDIM, cfg = ddim && p->guidance > 1.0f;
    float *ctx = fwd_alloc(&f, (size_t)(cfg ? 2 : 1) * n * L * X), *pooled = fwd_alloc(&f, (size_t)(cfg ? 2 : 1) * n * P);
    float *x = fwd_alloc(&f, per * n);
    struct engine_text et = { .truncated = trunc };
    if (!ctx || !pooled || !x) goto out;
    if ((st = encode_device(e, &f, prompts, n, ctx, pooled, &et))) goto out;
    if (cfg) {   /* the unconditional half: all-zero embeddings (force_zeros_for_empty_prompt) */
        be->ops->zero(be, ctx + (size_t)n * L * X, (size_t)n * L * X * sizeof(float));
        be->ops->zero(be, pooled + (size_t)n * P, (size_t)n * P * sizeof(float));
        if (!(tid2 = sd_malloc(sizeof(float) * 12 * n))) { st = SD_ERR_NOMEM; goto out; }
        memcpy(tid2, tid, sizeof(float) * 6 * n);
        memcpy(tid2 + 6 * n, tid, sizeof(float) * 6 * n);
    }
    for (int i = 0; i < n; i++) items[i].truncated = trunc[i];
    be->ops->sync(be);
    t.text_ms = sd_now_ms() - t0;
    double te = sd_now_ms();   /* img2img: the init images' VAE encode counts as VAE time */
    if ((st = img2img_begin(&ii, &f, &e->vae, &e->sched, p, items, n))) goto out;
    t.vae_ms = sd_now_ms() - te;

    /* initial noise: each image from its own seed */
    if (trace && trace->init_noise) memcpy(host, trace->init_noise, per * n * sizeof(float));
    else for (int i = 0; i < n; i++) sd_rng_normal(&rngs[i], host + per * i, per);
    img2img_start(&ii, host);
    be->ops->upload(be, x, host, per * n * sizeof(float));
    struct gen_ctx g = { rngs, n, ii.start, per, trace, hooks };
    struct sampler_job j = {
        .unet = e->unet, .sched = &e->sched, .ctx = ctx, .pooled = pooled, .time_ids = tid,
        .N = n, .h = h, .w = w, .Lk = L, .nsteps = p->nsteps - ii.start, .timesteps = p->timesteps + ii.start,
        .noise = gen_noise, .noise_ud = &g, .on_step = gen_step, .step_ud = &g,
        .blend = ii.nmask ? img2img_blend : NULL, .blend_ud = &ii,
        .trace_eps = trace ? trace->eps : NULL, .trace_denoised = trace ? trace->denoised : NULL,
    };
    struct ddim_job dj = { e->unet, &e->sched, ctx, pooled, cfg ? tid2 : tid, n, h, w, L, p->nsteps, p->guidance };
    double t1 = sd_now_ms();
    f.lora = act.nt ? &act : NULL;   /* the UNet passes only: rows index the UNet's table */
    st = ddim ? sampler_ddim(&f, &dj, x) : sampler_run(&f, &j, x);
    f.lora = NULL;
    if (st) goto out;
    be->ops->sync(be);
    t.unet_ms = sd_now_ms() - t1;
    be->ops->download(be, host, x, per * n * sizeof(float));   /* host holds 3·npix·n >= per·n */
    if ((st = check_finite(host, per * n, per, "latent"))) goto out;

    double t2 = sd_now_ms();
    be->ops->trim(be);   /* the UNet's widened weights and tiles are not the VAE's */
    arena_reset(&e->acts, 0);   /* nor its activations: the decode starts from an empty arena */
    expect_decode(e, n, h, w);
    if (!(x = upload(&f, host, per * n))) { st = backend_status(be) ? backend_status(be) : SD_ERR_NOMEM; goto out; }
    if ((st = decode_latents(e, &f, x, host, n, h, w))) goto out;
    if (ii.nmask && (st = decode_kept(e, &f, &ii, host, h, w))) goto out;
    if (trace && trace->image) memcpy(trace->image, host, 3 * npix * n * sizeof(float));
    for (int i = 0; i < n; i++)        /* CHW float -> HWC uint8 */
        for (size_t q = 0; q < npix; q++)
            for (int c = 0; c < 3; c++) rgb[(i * npix + q) * 3 + c] = level8(host[(i * 3 + c) * npix + q]);
    t.vae_ms += sd_now_ms() - t2;
out:
    if (tm) *tm = t;
    lora_active_free(&act);
    sd_free(prompts);
    sd_free(trunc);
    sd_free(rngs);
    sd_free(host);
    sd_free(tid);
    sd_free(tid2);
    img2img_free(&ii);
    return finish(e, st);
}

sd_status engine_load_unet(struct engine *e, const char *path, const char *lora_path, float lora_scale,
                           const char **failed) {
    /* Same config folder, so a file of another architecture fails on its first
     * mis-shaped tensor; until the new UNet has fully loaded the old one keeps serving. */
    sd_status st;
    struct unet *nu = load_unet(e, path, lora_path, lora_scale, &st, failed);
    if (!nu) return st;
    lora_cache_clear(&e->loras);   /* run-time adapters were bound to the old UNet's table */
    lora_info(e);
    unet_free(e->unet);
    sd_free(e->unet);
    e->unet = nu;
    e->info.size_multiple = e->info.vae_scale * (1 << (e->unet->cfg.nlevels - 1));
    set_model_name(e, path, lora_path);
    return SD_OK;
}

void engine_parameters_text(char *out, size_t n, const char *prompt, uint64_t seed,
                            const struct gen_params *p, const char *model, const char *extra) {
    char ts[ENGINE_MAX_STEPS * 5 + 1] = "", tags[ENGINE_LORA_MAX * (ENGINE_LORA_NAME_MAX + 24)] = "";
    size_t o = 0;
    for (int i = 0; i < p->nsteps && o < sizeof ts; i++)
        o += (size_t)snprintf(ts + o, sizeof ts - o, i ? ",%d" : "%d", p->timesteps[i]);
    o = 0;   /* run-time LoRA adapters as A1111 writes them: tags in the prompt */
    for (int i = 0; i < ENGINE_LORA_MAX && p->lora[i].name[0] && o < sizeof tags; i++)
        o += (size_t)snprintf(tags + o, sizeof tags - o, " <lora:%s:%g>", p->lora[i].name, (double)p->lora[i].scale);
    snprintf(out, n, "%s%s\nSteps: %d, Sampler: DMD2, CFG scale: 1, Seed: %llu, Size: %dx%d, Model: %s, "
             "Timesteps: %s, Version: sdxld " SDXLD_VERSION "%s%s", prompt, tags, p->nsteps, (unsigned long long)seed,
             p->width, p->height, model, ts, extra ? ", " : "", extra ? extra : "");
}

static sd_status init_component(struct backend *be, const char *sub, const char *cfg_path,
                                const char *wpath, uint64_t seed, sd_dtype dt) {
    sd_status st;
    if (!strcmp(sub, "unet")) {
        struct unet_config c;
        struct unet m;
        SD_TRY(unet_config_load(&c, cfg_path));
        SD_TRY(unet_create(&m, be, &c));
        if (!(st = wt_init_random(&m.wt, be, seed))) st = wt_save(&m.wt, be, wpath, dt);
        LOG_I("unet: %.1f M parameters", m.wt.total / 1e6);
        unet_free(&m);
    } else if (!strcmp(sub, "vae")) {
        struct vae_config c;
        struct vae m;
        SD_TRY(vae_config_load(&c, cfg_path));
        SD_TRY(vae_create(&m, be, &c));
        if (!(st = wt_init_random(&m.wt, be, seed))) st = wt_save(&m.wt, be, wpath, dt);
        LOG_I("vae: %.1f M parameters", m.wt.total / 1e6);
        vae_free(&m);
    } else if (!strcmp(sub, "text_encoder") || !strcmp(sub, "text_encoder_2")) {
        struct clip_config c;
        struct clip m;
        SD_TRY(clip_config_load(&c, cfg_path));
        SD_TRY(clip_create(&m, be, &c, !strcmp(sub, "text_encoder_2")));
        if (!(st = wt_init_random(&m.wt, be, seed))) st = wt_save(&m.wt, be, wpath, dt);
        LOG_I("%s: %.1f M parameters", sub, m.wt.total / 1e6);
        clip_free(&m);
    } else {
        return sd_fail(SD_ERR_INVALID, "init: unknown component '%s'", sub);
    }
    return st;
}

sd_status engine_init_component(const char *sub, const char *cfg_path, const char *wpath, uint64_t seed,
                                sd_dtype dt) {
    struct backend *be;
    SD_TRY(backend_create(&be, "cpu", 0));
    sd_status st = init_component(be, sub, cfg_path, wpath, seed, dt);
    backend_destroy(be);
    return st;
}
