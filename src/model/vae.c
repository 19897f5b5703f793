/* vae.c — see vae.h.  All VAE norms use eps 1e-6; the encoder's downsampler pads only
 * right and bottom (then a stride-2 3×3 conv with no padding); the mid attention is one
 * head as wide as the channels. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "vae.h"

#define VAE_EPS 1e-6f

static const char *const vae_attn_names[4] = { "to_q", "to_k", "to_v", "to_out.0" };

/* Older files name the mid attention query/key/value/proj_attn (spec/sdxl.md §5.1). */
static int vae_name_map(const char *key, char *buf, size_t n) {
    static const char *const from[] = { ".query.", ".key.", ".value.", ".proj_attn." };
    static const char *const to[] = { ".to_q.", ".to_k.", ".to_v.", ".to_out.0." };
    for (int i = 0; i < 4; i++) {
        const char *p = strstr(key, from[i]);
        if (p) {
            snprintf(buf, n, "%.*s%s%s", (int)(p - key), key, to[i], p + strlen(from[i]));
            return 0;
        }
    }
    snprintf(buf, n, "%s", key);
    return 0;
}

static void mid_declare(struct weight_table *t, struct vae_half *h, int C, int G, int attn, const char *pre) {
    char p[WT_NAME_MAX];
    snprintf(p, sizeof p, "%s.mid_block.resnets.0", pre); resnet_declare(t, &h->mid_res[0], C, C, 0, G, VAE_EPS, p);
    if (attn) {
        snprintf(p, sizeof p, "%s.mid_block.attentions.0.group_norm", pre); norm_declare(t, &h->attn_gn, C, p);
        snprintf(p, sizeof p, "%s.mid_block.attentions.0", pre);
        attention_declare(t, &h->attn, C, C, 1, 1, p, vae_attn_names);
    }
    snprintf(p, sizeof p, "%s.mid_block.resnets.1", pre); resnet_declare(t, &h->mid_res[1], C, C, 0, G, VAE_EPS, p);
}

static void half_free(struct vae_half *h) {
    for (int i = 0; i < VAE_MAX_LEVELS; i++) sd_free(h->lv[i].res);
    memset(h, 0, sizeof *h);
}

void vae_free(struct vae *m) {
    half_free(&m->enc);
    half_free(&m->dec);
    arena_free(&m->params);
    wt_free(&m->wt);
}

int vae_scale(const struct vae *m) { return 1 << (m->cfg.nlevels - 1); }

sd_status vae_create(struct vae *m, struct backend *be, const struct vae_config *cfg) {
    memset(m, 0, sizeof *m);
    wt_init(&m->wt);
    m->cfg = *cfg;
    const struct vae_config *c = &m->cfg;
    struct weight_table *t = &m->wt;
    int n = c->nlevels, G = c->groups, L = c->latent_ch;
    char p[WT_NAME_MAX];
    sd_status st = SD_OK;
    /* encoder */
    struct vae_half *e = &m->enc;
    conv_declare(t, &e->conv_in, c->in_ch, c->ch[0], 3, "encoder.conv_in");
    int cur = c->ch[0];
    for (int i = 0; i < n; i++) {
        struct vae_level *l = &e->lv[i];
        l->nres = c->layers_per_block;
        if (!(l->res = sd_calloc(l->nres, sizeof *l->res))) { st = SD_ERR_NOMEM; goto fail; }
        for (int j = 0; j < l->nres; j++) {
            snprintf(p, sizeof p, "encoder.down_blocks.%d.resnets.%d", i, j);
            resnet_declare(t, &l->res[j], cur, c->ch[i], 0, G, VAE_EPS, p);
            cur = c->ch[i];
        }
        if (i < n - 1) {
            snprintf(p, sizeof p, "encoder.down_blocks.%d.downsamplers.0.conv", i);
            conv_declare(t, &l->sample, cur, cur, 3, p);
        }
    }
    mid_declare(t, e, cur, G, c->mid_attn, "encoder");
    norm_declare(t, &e->out_norm, cur, "encoder.conv_norm_out");
    conv_declare(t, &e->conv_out, cur, 2 * L, 3, "encoder.conv_out");
    if (c->quant_conv) conv_declare(t, &m->quant, 2 * L, 2 * L, 1, "quant_conv");
    if (c->post_quant_conv) conv_declare(t, &m->post_quant, L, L, 1, "post_quant_conv");
    /* decoder */
    struct vae_half *d = &m->dec;
    cur = c->ch[n - 1];
    conv_declare(t, &d->conv_in, L, cur, 3, "decoder.conv_in");
    mid_declare(t, d, cur, G, c->mid_attn, "decoder");
    for (int i = 0; i < n; i++) {
        struct vae_level *l = &d->lv[i];
        int out = c->ch[n - 1 - i];
        l->nres = c->layers_per_block + 1;
        if (!(l->res = sd_calloc(l->nres, sizeof *l->res))) { st = SD_ERR_NOMEM; goto fail; }
        for (int j = 0; j < l->nres; j++) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.resnets.%d", i, j);
            resnet_declare(t, &l->res[j], cur, out, 0, G, VAE_EPS, p);
            cur = out;
        }
        if (i < n - 1) {
            snprintf(p, sizeof p, "decoder.up_blocks.%d.upsamplers.0.conv", i);
            conv_declare(t, &l->sample, cur, cur, 3, p);
        }
    }
    norm_declare(t, &d->out_norm, cur, "decoder.conv_norm_out");
    conv_declare(t, &d->conv_out, cur, c->out_ch, 3, "decoder.conv_out");
    if ((st = wt_alloc(t, &m->params, be))) goto fail;
    return SD_OK;
fail:
    vae_free(m);
    return st;
}

sd_status vae_load(struct vae *m, struct backend *be, const char *dir) {
    struct vae_config cfg;
    char *p = sd_path_join(dir, "config.json");
    if (!p) return SD_ERR_NOMEM;
    sd_status st = vae_config_load(&cfg, p);
    sd_free(p);
    if (st) return st;
    SD_TRY(vae_create(m, be, &cfg));
    if (!(p = sd_path_join(dir, "diffusion_pytorch_model.safetensors"))) { vae_free(m); return SD_ERR_NOMEM; }
    st = wt_load(&m->wt, be, p, vae_name_map);
    sd_free(p);
    if (st) vae_free(m);
    return st;
}

/* mid: resnet, single-head attention with residual, resnet.  x is replaced in place
 * through out (x and out distinct). */
static void mid_forward(struct fwd *f, const struct vae *m, const struct vae_half *hf, float *out,
                        float *x, int N, int H, int W) {
    struct backend *be = f->be;
    int C = hf->mid_res[0].cout, HW = H * W, G = m->cfg.groups;
    resnet_forward(f, out, x, NULL, &hf->mid_res[0], N, H, W);
    if (m->cfg.mid_attn) {
        uint64_t mk = arena_mark(f->ar);
        size_t n = (size_t)N * C * HW;
        float *g = fwd_alloc(f, n), *t = fwd_alloc(f, n), *r = fwd_alloc(f, n);
        be->ops->group_norm(be, g, out, hf->attn_gn.w, hf->attn_gn.b, N, C, HW, G, VAE_EPS, 0);
        be->ops->transpose(be, t, g, N, C, HW);
        be->ops->zero(be, r, n * sizeof(float));
        attention_forward_add(f, r, t, t, &hf->attn, N, HW, HW, 0);
        be->ops->transpose(be, g, r, N, HW, C);
        be->ops->axpby(be, out, 1.0f, out, 1.0f, g, (long long)n);
        arena_reset(f->ar, mk);
    }
    resnet_forward(f, x, out, NULL, &hf->mid_res[1], N, H, W);
    be->ops->copy(be, out, x, (size_t)N * C * HW * sizeof(float));
}

void vae_encode(struct fwd *f, const struct vae *m, float *mean, const float *img, int N, int H, int W) {
    struct backend *be = f->be;
    const struct vae_config *c = &m->cfg;
    const struct vae_half *e = &m->enc;
    int s = vae_scale(m), G = c->groups, L = c->latent_ch;
    if (H % s || W % s) { backend_set_error(be, SD_ERR_INVALID, "image size not divisible by the VAE scale"); return; }
    uint64_t mk = arena_mark(f->ar);
    size_t cap = 0;   /* largest activation: level i runs at (H/2^i)² with ch[i-1..i] */
    for (int i = 0; i < c->nlevels; i++) {
        size_t hw = (size_t)(H >> i) * (W >> i), cm = c->ch[i];
        if (i && (size_t)c->ch[i - 1] > cm) cm = c->ch[i - 1];
        if (cm * hw > cap) cap = cm * hw;
    }
    if ((size_t)2 * L * (H / s) * (W / s) > cap) cap = (size_t)2 * L * (H / s) * (W / s);
    cap *= N;
    float *a = fwd_alloc(f, cap), *b = fwd_alloc(f, cap);
    int h = H, w = W, C = c->ch[0];
    conv_forward(f, a, img, &e->conv_in, N, h, w);
    for (int i = 0; i < c->nlevels; i++) {
        const struct vae_level *l = &e->lv[i];
        for (int j = 0; j < l->nres; j++) {
            resnet_forward(f, b, a, NULL, &l->res[j], N, h, w);
            float *t = a; a = b; b = t;
            C = l->res[j].cout;
        }
        if (l->sample.w) {   /* pad right/bottom by one, 3×3 stride 2, no other padding */
            be->ops->conv2d(be, b, a, l->sample.w, l->sample.b, N, C, h, w, C, 3, 3, 2, 0, 0, 1, 1);
            h /= 2; w /= 2;
            float *t = a; a = b; b = t;
        }
    }
    mid_forward(f, m, e, b, a, N, h, w);
    be->ops->group_norm(be, a, b, e->out_norm.w, e->out_norm.b, N, C, h * w, G, VAE_EPS, 1);
    conv_forward(f, b, a, &e->conv_out, N, h, w);
    if (m->quant.w) { conv_forward(f, a, b, &m->quant, N, h, w); float *t = a; a = b; b = t; }
    for (int n = 0; n < N; n++)   /* mean = first latent_ch channels of the moments */
        be->ops->copy(be, mean + (size_t)n * L * h * w, b + (size_t)n * 2 * L * h * w,
                      (size_t)L * h * w * sizeof(float));
    arena_reset(f->ar, mk);
}

void vae_decode(struct fwd *f, const struct vae *m, float *img, const float *z, int N, int h, int w) {
    struct backend *be = f->be;
    const struct vae_config *c = &m->cfg;
    const struct vae_half *d = &m->dec;
    int s = vae_scale(m), G = c->groups, n = c->nlevels;
    uint64_t mk = arena_mark(f->ar);
    size_t cap = 0;   /* up block i runs at (h·2^i)² with ch[n-i..n-1-i], upsampled after */
    for (int i = 0; i < n; i++) {
        size_t hw = (size_t)(h << i) * (w << i), cm = c->ch[n - 1 - i];
        if (i && (size_t)c->ch[n - i] > cm) cm = c->ch[n - i];
        if (i < n - 1 && cm * hw * 4 > cap) cap = cm * hw * 4;
        if (cm * hw > cap) cap = cm * hw;
    }
    if ((size_t)c->out_ch * h * w * s * s > cap) cap = (size_t)c->out_ch * h * w * s * s;
    cap *= N;
    (void)s;
    float *a = fwd_alloc(f, cap), *b = fwd_alloc(f, cap);
    const float *zin = z;
    if (m->post_quant.w) { conv_forward(f, b, z, &m->post_quant, N, h, w); zin = b; }
    int C = c->ch[n - 1];
    conv_forward(f, a, zin, &d->conv_in, N, h, w);
    mid_forward(f, m, d, b, a, N, h, w);
    float *t = a; a = b; b = t;
    for (int i = 0; i < n; i++) {
        const struct vae_level *l = &d->lv[i];
        for (int j = 0; j < l->nres; j++) {
            resnet_forward(f, b, a, NULL, &l->res[j], N, h, w);
            t = a; a = b; b = t;
            C = l->res[j].cout;
        }
        if (l->sample.w) {
            be->ops->upsample2x(be, b, a, N, C, h, w);
            h *= 2; w *= 2;
            conv_forward(f, a, b, &l->sample, N, h, w);
        }
    }
    be->ops->group_norm(be, b, a, d->out_norm.w, d->out_norm.b, N, C, h * w, G, VAE_EPS, 1);
    conv_forward(f, img, b, &d->conv_out, N, h, w);
    arena_reset(f->ar, mk);
}
