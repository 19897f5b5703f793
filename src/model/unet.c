/* unet.c — see unet.h.  Block order and skip handling follow diffusers'
 * UNet2DConditionModel.forward (docs/sdxl.md §3.4): skips are pushed after conv_in, after
 * every down resnet(+transformer) and after every downsampler, popped LIFO by the up
 * resnets, concatenated as [current, skip] on channels. */
#include <stdio.h>
#include <string.h>

#include "sgm.h"
#include "unet.h"

static void level_free(struct unet_level *l) {
    if (l->attn)
        for (int j = 0; j < l->nres; j++) transformer2d_free(&l->attn[j]);
    sd_free(l->attn);
    sd_free(l->res);
    memset(l, 0, sizeof *l);
}

void unet_free(struct unet *m) {
    for (int i = 0; i < UNET_MAX_LEVELS; i++) { level_free(&m->down[i]); level_free(&m->up[i]); }
    transformer2d_free(&m->mid_attn);
    arena_free(&m->params);
    wt_free(&m->wt);
}

static sd_status level_alloc(struct unet_level *l, int nres, int attn) {
    l->nres = nres;
    l->res = sd_calloc(nres, sizeof *l->res);
    l->attn = attn ? sd_calloc(nres, sizeof *l->attn) : NULL;
    return (!l->res || (attn && !l->attn)) ? SD_ERR_NOMEM : SD_OK;
}

sd_status unet_declare(struct unet *m, const struct unet_config *cfg) {
    memset(m, 0, sizeof *m);
    wt_init(&m->wt);
    m->cfg = *cfg;
    m->wt.wdt = cfg->wdt;
    const struct unet_config *c = &m->cfg;
    struct weight_table *t = &m->wt;
    int n = c->nlevels, G = c->groups, Cx = c->cross_dim;
    float eps = c->eps;
    char p[WT_NAME_MAX];
    sd_status st = SD_OK;
    m->temb_dim = 4 * c->ch[0];
    m->pooled_dim = c->add_in_dim - 6 * c->addition_time_embed_dim;
    if (m->pooled_dim <= 0) {
        st = sd_fail(SD_ERR_FORMAT, "unet config: projection_class_embeddings_input_dim %d leaves no room for the pooled text embedding (6 x %d time ids)",
                     c->add_in_dim, c->addition_time_embed_dim);
        goto fail;
    }
    conv_declare(t, &m->conv_in, c->in_ch, c->ch[0], c->conv_in_kernel, "conv_in");
    linear_declare(t, &m->time1, c->ch[0], m->temb_dim, 1, "time_embedding.linear_1");
    linear_declare(t, &m->time2, m->temb_dim, m->temb_dim, 1, "time_embedding.linear_2");
    linear_declare(t, &m->add1, c->add_in_dim, m->temb_dim, 1, "add_embedding.linear_1");
    linear_declare(t, &m->add2, m->temb_dim, m->temb_dim, 1, "add_embedding.linear_2");

    int skips[64], ns = 0, cur = c->ch[0];
    skips[ns++] = cur;
    for (int i = 0; i < n; i++) {
        struct unet_level *l = &m->down[i];
        if ((st = level_alloc(l, c->layers_per_block, c->attn[i]))) goto fail;
        for (int j = 0; j < l->nres; j++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", i, j);
            resnet_declare(t, &l->res[j], cur, c->ch[i], m->temb_dim, G, eps, p);
            cur = c->ch[i];
            if (l->attn) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", i, j);
                transformer2d_declare(t, &l->attn[j], cur, Cx, c->heads[i], c->depth[i], G, p);
            }
            skips[ns++] = cur;
        }
        if (i < n - 1) {
            snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0.conv", i);
            conv_declare(t, &l->sample, cur, cur, 3, p);
            skips[ns++] = cur;
        }
    }
    resnet_declare(t, &m->mid_res[0], cur, cur, m->temb_dim, G, eps, "mid_block.resnets.0");
    transformer2d_declare(t, &m->mid_attn, cur, Cx, c->heads[n - 1], c->depth[n - 1], G, "mid_block.attentions.0");
    resnet_declare(t, &m->mid_res[1], cur, cur, m->temb_dim, G, eps, "mid_block.resnets.1");
    for (int i = 0; i < n; i++) {
        struct unet_level *l = &m->up[i];
        int lvl = n - 1 - i, out = c->ch[lvl];
        if ((st = level_alloc(l, c->layers_per_block + 1, c->up_attn[i]))) goto fail;
        for (int j = 0; j < l->nres; j++) {
            int sk = skips[--ns];
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, j);
            resnet_declare(t, &l->res[j], cur + sk, out, m->temb_dim, G, eps, p);
            cur = out;
            if (l->attn) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, j);
                transformer2d_declare(t, &l->attn[j], cur, Cx, c->heads[lvl], c->up_depth[i], G, p);
            }
        }
        if (i < n - 1) {
            snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0.conv", i);
            conv_declare(t, &l->sample, cur, cur, 3, p);
        }
    }
    SD_ASSERT(ns == 0);
    norm_declare(t, &m->out_norm, cur, "conv_norm_out");
    conv_declare(t, &m->conv_out, cur, c->out_ch, c->conv_out_kernel, "conv_out");
    if (t->err) {
        st = t->err == SD_ERR_NOMEM ? sd_fail(SD_ERR_NOMEM, "declaring weights: out of memory") : t->err;
        goto fail;
    }
    return SD_OK;
fail:
    unet_free(m);
    return st;
}

sd_status unet_create(struct unet *m, struct backend *be, const struct unet_config *cfg) {
    SD_TRY(unet_declare(m, cfg));
    sd_status st = wt_alloc(&m->wt, &m->params, be);
    if (st) unet_free(m);
    return st;
}

sd_status unet_bind(struct unet *m, struct backend *be, const struct wfiles *w, const char *what) {
    const char *prefix = NULL;
    int sgm = w->n == 1 && sgm_is_unet_file(&w->f[0], &prefix);
    SD_TRY(sgm_bind(&m->wt, be, w, SGM_UNET, &m->cfg, sgm ? prefix : NULL, NULL, what));
    return sgm ? sgm_check_leftovers(w, *prefix != 0) : wfiles_check_used(w);
}

sd_status unet_load_weights(struct unet *m, struct backend *be, const char *path) {
    struct wfiles w;
    SD_TRY(wfiles_open_file(&w, path));
    sd_status st = unet_bind(m, be, &w, path);
    wfiles_close(&w);
    return st;
}

sd_status unet_load(struct unet *m, struct backend *be, const char *dir, const char *weights_path, sd_dtype wdt) {
    struct unet_config cfg;
    char *p = sd_path_join(dir, "config.json");
    if (!p) return SD_ERR_NOMEM;
    sd_status st = unet_config_load(&cfg, p);
    sd_free(p);
    if (st) return st;
    struct wfiles w;
    SD_TRY(weights_path ? wfiles_open_file(&w, weights_path)
                        : wfiles_open_dir(&w, dir, "diffusion_pytorch_model", "diffusion_pytorch_model"));
    cfg.wdt = wfiles_dtype(&w, wdt);
    if (!(st = unet_create(m, be, &cfg))) {
        st = unet_bind(m, be, &w, weights_path ? weights_path : dir);
        if (st) unet_free(m);
    }
    wfiles_close(&w);
    return st;
}

void unet_zero(struct backend *be, struct unet *g) {
    for (int i = 0; i < g->params.nblocks; i++) be->ops->zero(be, g->params.blocks[i].base, g->params.blocks[i].cap);
}

/* A copy of src on the arena when taping (transformers work in place). */
static float *tape_copy(struct fwd *f, struct unet_tape *tp, const float *src, size_t n) {
    if (!tp->train) return NULL;
    float *d = fwd_alloc(f, n);
    if (d) f->be->ops->copy(f->be, d, src, n * sizeof(float));
    return d;
}

void unet_down(struct fwd *f, const struct unet *m, struct unet_tape *tp, int train, const float *x,
                 const float *t, const float *ctx, const float *pooled, const float *time_ids,
                 int N, int H, int W, int Lk) {
    struct backend *be = f->be;
    const struct unet_config *c = &m->cfg;
    int n = c->nlevels, G = c->groups, E = m->temb_dim, A = c->addition_time_embed_dim;
    memset(tp, 0, sizeof *tp);
    tp->train = train;
    struct fwd fk = *f;     /* block calls see the tape's keep stack (keep-all mode) */
    if (train == UNET_TRAIN_KEEP) {
        fk.keep = tp->keep = (struct keep_stack *)fwd_alloc(f, sizeof(struct keep_stack) / sizeof(float) + 1);
        if (!tp->keep) return;
        tp->keep->n = 0;
    }
    f = &fk;
    tp->N = N; tp->H = H; tp->W = W; tp->Lk = Lk;
    tp->x = x; tp->ctx = ctx; tp->pooled = pooled;
    if ((H | W) & ((1 << (n - 1)) - 1)) {
        backend_set_error(be, SD_ERR_INVALID, "latent size not divisible by the UNet's downsampling");
        return;
    }
    /* embeddings: emb = time_mlp(sinusoid(t)) + add_mlp([pooled, sinusoid(time_ids)]) */
    float *ts = fwd_alloc(f, (size_t)N * c->ch[0]), *a1 = fwd_alloc(f, (size_t)N * E), *s1 = fwd_alloc(f, (size_t)N * E);
    float *emb = fwd_alloc(f, (size_t)N * E), *tid = fwd_alloc(f, (size_t)N * 6 * A);
    float *add_in = fwd_alloc(f, (size_t)N * c->add_in_dim), *b1 = fwd_alloc(f, (size_t)N * E);
    float *add = fwd_alloc(f, (size_t)N * E), *temb = fwd_alloc(f, (size_t)N * E);
    be->ops->timestep_embedding(be, ts, t, N, c->ch[0], c->flip_sin_to_cos, c->freq_shift, 10000.0f);
    linear_forward(f, a1, ts, &m->time1, N, 1);
    be->ops->act(be, s1, a1, (long long)N * E, ACT_SILU);
    linear_forward(f, emb, s1, &m->time2, N, 1);
    be->ops->timestep_embedding(be, tid, time_ids, N * 6, A, c->flip_sin_to_cos, c->freq_shift, 10000.0f);
    be->ops->concat_channels(be, add_in, pooled, m->pooled_dim, tid, 6 * A, N, 1);
    linear_forward(f, b1, add_in, &m->add1, N, 1);
    be->ops->act(be, s1, b1, (long long)N * E, ACT_SILU);
    linear_forward(f, add, s1, &m->add2, N, 1);
    be->ops->axpby(be, emb, 1.0f, emb, 1.0f, add, (long long)N * E);
    be->ops->act(be, temb, emb, (long long)N * E, ACT_SILU);   /* what every resnet projects */
    tp->ts = ts; tp->a1 = a1; tp->add_in = add_in; tp->b1 = b1; tp->emb = emb; tp->temb = temb;

    /* down path: every output below stays alive as a skip */
    int h = H, w = W, C = c->ch[0];
    float *cur = fwd_alloc(f, (size_t)N * C * h * w);
    conv_forward(f, cur, x, &m->conv_in, N, h, w);
    tp->skip[tp->nskip] = cur; tp->skip_hw[tp->nskip] = h * w; tp->skip_c[tp->nskip++] = C;
    for (int i = 0; i < n; i++) {
        const struct unet_level *l = &m->down[i];
        for (int j = 0; j < l->nres; j++) {
            size_t sz = (size_t)N * l->res[j].cout * h * w;
            float *o = fwd_alloc(f, sz);
            resnet_forward(f, o, cur, temb, &l->res[j], N, h, w);
            tp->dn_in[i][j] = cur;
            C = l->res[j].cout;
            if (l->attn) {
                tp->dn_res[i][j] = tape_copy(f, tp, o, sz);
                transformer2d_forward(f, o, ctx, &l->attn[j], N, h, w, Lk, G);
            }
            cur = o;
            tp->skip[tp->nskip] = cur; tp->skip_hw[tp->nskip] = h * w; tp->skip_c[tp->nskip++] = C;
        }
        if (l->sample.w) {
            float *o = fwd_alloc(f, (size_t)N * C * (h / 2) * (w / 2));
            conv_forward_strided(f, o, cur, &l->sample, N, h, w, 2);
            h /= 2; w /= 2;
            cur = o;
            tp->skip[tp->nskip] = cur; tp->skip_hw[tp->nskip] = h * w; tp->skip_c[tp->nskip++] = C;
        }
    }
    /* mid */
    size_t sz = (size_t)N * C * h * w;
    float *r0 = fwd_alloc(f, sz), *a0 = train ? fwd_alloc(f, sz) : r0, *out = fwd_alloc(f, sz);
    resnet_forward(f, r0, cur, temb, &m->mid_res[0], N, h, w);
    if (train) be->ops->copy(be, a0, r0, sz * sizeof(float));
    transformer2d_forward(f, a0, ctx, &m->mid_attn, N, h, w, Lk, G);
    resnet_forward(f, out, a0, temb, &m->mid_res[1], N, h, w);
    tp->mid_in = cur; tp->mid_r0 = r0; tp->mid_a0 = a0; tp->mid_out = out;
    tp->mid_h = h; tp->mid_w = w; tp->mid_c = C;
}

void unet_up(struct fwd *f, const struct unet *m, struct unet_tape *tp, float *out) {
    struct backend *be = f->be;
    const struct unet_config *c = &m->cfg;
    int n = c->nlevels, G = c->groups, N = tp->N, ns = tp->nskip, h = tp->mid_h, w = tp->mid_w, C = tp->mid_c;
    float *cur = tp->mid_out;
    struct fwd fk = *f;   /* the caller's, cancel poll included, with the tape's keep stack */
    fk.keep = tp->keep;
    f = &fk;
    for (int i = 0; i < n; i++) {
        const struct unet_level *l = &m->up[i];
        for (int j = 0; j < l->nres; j++) {
            ns--;
            int Cin = C + tp->skip_c[ns], Co = l->res[j].cout;
            size_t sz = (size_t)N * Co * h * w;
            float *o = fwd_alloc(f, sz);
            uint64_t mk = arena_mark(f->ar);
            float *cat = fwd_alloc(f, (size_t)N * Cin * h * w);
            be->ops->concat_channels(be, cat, cur, C, tp->skip[ns], tp->skip_c[ns], N, h * w);
            resnet_forward(f, o, cat, tp->temb, &l->res[j], N, h, w);
            if (!tp->keep) arena_reset(f->ar, mk);  /* the concat is dead (recomputed in backward) */
            tp->up_in[i][j] = cur;
            tp->up_skip[i][j] = ns;
            if (l->attn) {
                tp->up_res[i][j] = tape_copy(f, tp, o, sz);
                transformer2d_forward(f, o, tp->ctx, &l->attn[j], N, h, w, tp->Lk, G);
            }
            cur = o;
            C = Co;
        }
        if (l->sample.w) {
            float *o = fwd_alloc(f, (size_t)N * C * h * w * 4);
            uint64_t mk = arena_mark(f->ar);
            float *u = fwd_alloc(f, (size_t)N * C * h * w * 4);   /* recomputed in backward */
            be->ops->upsample2x(be, u, cur, N, C, h, w);
            tp->up_sample_in[i] = cur;
            h *= 2; w *= 2;
            conv_forward(f, o, u, &l->sample, N, h, w);
            arena_reset(f->ar, mk);
            cur = o;
        }
    }
    tp->out_in = cur; tp->out_h = h; tp->out_w = w; tp->out_c = C;
    uint64_t mk = arena_mark(f->ar);
    float *hn = fwd_alloc(f, (size_t)N * C * h * w);
    be->ops->group_norm(be, hn, cur, m->out_norm.w, m->out_norm.b, N, C, h * w, G, c->eps, 1);
    conv_forward(f, out, hn, &m->conv_out, N, h, w);
    arena_reset(f->ar, mk);
}

void unet_forward(struct fwd *f, const struct unet *m, float *out, const float *x,
                  const float *t, const float *ctx, const float *pooled,
                  const float *time_ids, int N, int H, int W, int Lk) {
    uint64_t mk = arena_mark(f->ar);
    struct unet_tape tp;
    unet_down(f, m, &tp, 0, x, t, ctx, pooled, time_ids, N, H, W, Lk);
    if (!f->be->err) unet_up(f, m, &tp, out);
    arena_reset(f->ar, mk);
}
