/* vae.c — see vae.h.  All VAE norms use eps 1e-6; the encoder's downsampler pads only
 * right and bottom (then a stride-2 3×3 conv with no padding); the mid attention is one
 * head as wide as the channels. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sgm.h"
#include "vae.h"

#define VAE_EPS 1e-6f

static const char *const vae_attn_names[4] = { "to_q", "to_k", "to_v", "to_out.0" };

/* Older files name the mid attention query/key/value/proj_attn (docs/sdxl.md §5.1). */
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
    m->wt.wdt = cfg->wdt;
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

sd_status vae_bind(struct vae *m, struct backend *be, const struct wfiles *w, const char *prefix, const char *what) {
    SD_TRY(sgm_bind(&m->wt, be, w, SGM_VAE, &m->cfg, prefix, vae_name_map, what));
    return prefix ? SD_OK : wfiles_check_used(w);
}

sd_status vae_load(struct vae *m, struct backend *be, const char *dir, sd_dtype wdt) {
    struct vae_config cfg;
    char *p = sd_path_join(dir, "config.json");
    if (!p) return SD_ERR_NOMEM;
    sd_status st = vae_config_load(&cfg, p);
    sd_free(p);
    if (st) return st;
    struct wfiles w;
    SD_TRY(wfiles_open_dir(&w, dir, "diffusion_pytorch_model", "diffusion_pytorch_model"));
    cfg.wdt = wfiles_dtype(&w, wdt);
    if (!(st = vae_create(m, be, &cfg))) {
        st = vae_bind(m, be, &w, NULL, dir);
        if (st) vae_free(m);
    }
    wfiles_close(&w);
    return st;
}

/* ---- forward as a list of steps ----
 * Both halves are a straight chain of steps (conv, resnet, attention, downsample,
 * upsample+conv, GN+SiLU).  Inference runs them through two ping-pong buffers; training
 * gives every step its own output and records it on a tape, so vae_backward can walk the
 * chain in reverse. */

enum vae_kind { VS_CONV, VS_DOWN, VS_UP, VS_RES, VS_ATTN, VS_GNSILU };

static void step_forward(struct fwd *f, const struct vae *m, const struct vae_step *s, float *out) {
    struct backend *be = f->be;
    int N = s->N, C = s->C, H = s->H, W = s->W, HW = H * W, G = m->cfg.groups;
    switch (s->kind) {
    case VS_CONV: conv_forward(f, out, s->in, s->conv, N, H, W); break;
    case VS_DOWN:   /* pad right/bottom by one, 3×3 stride 2, no other padding */
        be->ops->conv2d(be, out, s->in, s->conv->w, s->conv->wdt, s->conv->b, N, C, H, W, C, 3, 3, 2, 0, 0, 1, 1);
        break;
    case VS_UP: {
        uint64_t mk = arena_mark(f->ar);
        float *u = fwd_alloc(f, (size_t)N * C * HW * 4);
        be->ops->upsample2x(be, u, s->in, N, C, H, W);
        conv_forward(f, out, u, s->conv, N, 2 * H, 2 * W);
        arena_reset(f->ar, mk);
        break;
    }
    case VS_RES: resnet_forward(f, out, s->in, NULL, s->res, N, H, W); break;
    case VS_ATTN: {   /* out = in + proj(attention(GN(in))) over the HW tokens, one head */
        uint64_t mk = arena_mark(f->ar);
        size_t n = (size_t)N * C * HW;
        float *g = fwd_alloc(f, n), *t = fwd_alloc(f, n), *r = fwd_alloc(f, n);
        be->ops->group_norm(be, g, s->in, s->norm->w, s->norm->b, N, C, HW, G, VAE_EPS, 0);
        be->ops->transpose(be, t, g, N, C, HW);
        be->ops->zero(be, r, n * sizeof(float));
        attention_forward_add(f, r, t, t, s->attn, N, HW, HW, 0);
        be->ops->transpose(be, g, r, N, HW, C);
        be->ops->axpby(be, out, 1.0f, s->in, 1.0f, g, (long long)n);
        arena_reset(f->ar, mk);
        break;
    }
    case VS_GNSILU: be->ops->group_norm(be, out, s->in, s->norm->w, s->norm->b, N, C, HW, G, VAE_EPS, 1); break;
    }
}

/* The gradient struct g has m's layout: the twin of a layer of m is at the same offset,
 * either inside struct vae or inside one of the per-level resnet arrays. */
static void *twin(const struct vae *m, struct vae *g, const void *ptr) {
    if (!g) return NULL;
    const char *p = ptr;
    if (p >= (const char *)m && p < (const char *)(m + 1)) return (char *)g + (p - (const char *)m);
    for (int h = 0; h < 2; h++) {
        const struct vae_half *mh = h ? &m->dec : &m->enc;
        struct vae_half *gh = h ? &g->dec : &g->enc;
        for (int i = 0; i < VAE_MAX_LEVELS; i++) {
            const struct vae_level *l = &mh->lv[i];
            if (l->res && p >= (const char *)l->res && p < (const char *)(l->res + l->nres))
                return (char *)gh->lv[i].res + (p - (const char *)l->res);
        }
    }
    SD_PANIC("vae layer %p has no twin", ptr);
}

static void step_backward(struct fwd *f, const struct vae *m, struct vae *g, const struct vae_step *s,
                          float *din, const float *dout) {
    struct backend *be = f->be;
    int N = s->N, C = s->C, H = s->H, W = s->W, HW = H * W, G = m->cfg.groups;
#define TWIN(ptr) twin(m, g, ptr)
    switch (s->kind) {
    case VS_CONV: conv_backward(f, din, dout, s->in, s->conv, TWIN(s->conv), N, H, W); break;
    case VS_DOWN: {
        struct conv *gc = TWIN(s->conv);
        be->ops->conv2d_backward(be, din, gc ? gc->w : NULL, gc ? gc->b : NULL, dout, s->in, s->conv->w, N, C, H, W,
                                 C, 3, 3, 2, 0, 0, 1, 1);
        break;
    }
    case VS_UP: {
        uint64_t mk = arena_mark(f->ar);
        float *u = fwd_alloc(f, (size_t)N * C * HW * 4), *du = fwd_alloc(f, (size_t)N * C * HW * 4);
        be->ops->upsample2x(be, u, s->in, N, C, H, W);
        conv_backward(f, du, dout, u, s->conv, TWIN(s->conv), N, 2 * H, 2 * W);
        be->ops->upsample2x_backward(be, din, du, N, C, H, W);
        arena_reset(f->ar, mk);
        break;
    }
    case VS_RES: resnet_backward(f, din, NULL, dout, s->in, NULL, s->res, TWIN(s->res), N, H, W); break;
    case VS_ATTN: {
        uint64_t mk = arena_mark(f->ar);
        size_t n = (size_t)N * C * HW;
        struct norm *gn = TWIN(s->norm);
        float *gx = fwd_alloc(f, n), *t = fwd_alloc(f, n), *dt = fwd_alloc(f, n), *dr = fwd_alloc(f, n);
        be->ops->group_norm(be, gx, s->in, s->norm->w, s->norm->b, N, C, HW, G, VAE_EPS, 0);
        be->ops->transpose(be, t, gx, N, C, HW);
        be->ops->transpose(be, dr, dout, N, C, HW);
        be->ops->zero(be, dt, n * sizeof(float));
        attention_backward_add(f, dt, dt, dr, t, t, s->attn, TWIN(s->attn), N, HW, HW, 0);
        be->ops->transpose(be, gx, dt, N, HW, C);
        be->ops->group_norm_backward(be, din, gn ? gn->w : NULL, gn ? gn->b : NULL, gx, s->in, s->norm->w,
                                     s->norm->b, N, C, HW, G, VAE_EPS, 0);
        be->ops->axpby(be, din, 1.0f, din, 1.0f, dout, (long long)n);
        arena_reset(f->ar, mk);
        break;
    }
    case VS_GNSILU: {
        struct norm *gn = TWIN(s->norm);
        be->ops->group_norm_backward(be, din, gn ? gn->w : NULL, gn ? gn->b : NULL, dout, s->in, s->norm->w,
                                     s->norm->b, N, C, HW, G, VAE_EPS, 1);
        break;
    }
    }
#undef TWIN
}

/* Append a step; returns its output shape through (C, H, W). */
static void add_step(struct vae_tape *tp, int kind, const void *layer, int C, int H, int W, int Co,
                     int Ho, int Wo) {
    SD_ASSERT(tp->n < VAE_TAPE_MAX);
    struct vae_step *s = &tp->s[tp->n++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->conv = kind == VS_CONV || kind == VS_DOWN || kind == VS_UP ? layer : NULL;
    s->res = kind == VS_RES ? layer : NULL;
    s->norm = kind == VS_GNSILU ? layer : NULL;
    s->N = tp->N; s->C = C; s->H = H; s->W = W; s->Co = Co; s->Ho = Ho; s->Wo = Wo;
}

static void plan_mid(struct vae_tape *tp, const struct vae *m, const struct vae_half *hf, int C, int H, int W) {
    add_step(tp, VS_RES, &hf->mid_res[0], C, H, W, C, H, W);
    if (m->cfg.mid_attn) {
        add_step(tp, VS_ATTN, NULL, C, H, W, C, H, W);
        tp->s[tp->n - 1].norm = &hf->attn_gn;
        tp->s[tp->n - 1].attn = &hf->attn;
    }
    add_step(tp, VS_RES, &hf->mid_res[1], C, H, W, C, H, W);
}

static void plan_encoder(struct vae_tape *tp, const struct vae *m, int H, int W) {
    const struct vae_config *c = &m->cfg;
    const struct vae_half *e = &m->enc;
    int C = c->ch[0];
    add_step(tp, VS_CONV, &e->conv_in, c->in_ch, H, W, C, H, W);
    for (int i = 0; i < c->nlevels; i++) {
        const struct vae_level *l = &e->lv[i];
        for (int j = 0; j < l->nres; j++) {
            add_step(tp, VS_RES, &l->res[j], C, H, W, l->res[j].cout, H, W);
            C = l->res[j].cout;
        }
        if (l->sample.w) { add_step(tp, VS_DOWN, &l->sample, C, H, W, C, H / 2, W / 2); H /= 2; W /= 2; }
    }
    plan_mid(tp, m, e, C, H, W);
    add_step(tp, VS_GNSILU, &e->out_norm, C, H, W, C, H, W);
    add_step(tp, VS_CONV, &e->conv_out, C, H, W, 2 * c->latent_ch, H, W);
    if (m->quant.w) add_step(tp, VS_CONV, &m->quant, 2 * c->latent_ch, H, W, 2 * c->latent_ch, H, W);
}

static void plan_decoder(struct vae_tape *tp, const struct vae *m, int h, int w) {
    const struct vae_config *c = &m->cfg;
    const struct vae_half *d = &m->dec;
    int L = c->latent_ch, n = c->nlevels, C = c->ch[n - 1];
    if (m->post_quant.w) add_step(tp, VS_CONV, &m->post_quant, L, h, w, L, h, w);
    add_step(tp, VS_CONV, &d->conv_in, L, h, w, C, h, w);
    plan_mid(tp, m, d, C, h, w);
    for (int i = 0; i < n; i++) {
        const struct vae_level *l = &d->lv[i];
        for (int j = 0; j < l->nres; j++) {
            add_step(tp, VS_RES, &l->res[j], C, h, w, l->res[j].cout, h, w);
            C = l->res[j].cout;
        }
        if (l->sample.w) { add_step(tp, VS_UP, &l->sample, C, h, w, C, 2 * h, 2 * w); h *= 2; w *= 2; }
    }
    add_step(tp, VS_GNSILU, &d->out_norm, C, h, w, C, h, w);
    add_step(tp, VS_CONV, &d->conv_out, C, h, w, c->out_ch, h, w);
}

/* ---- inference: two buffers, resnets in place, upsampling in row bands ----
 * The steps compute what step_forward computes (the same ops on the same values, so the
 * same bits, except that a banded conv's GEMM runs over fewer columns and may round its
 * sums differently: about 1e-7 relative), in less memory: at 512² the SDXL decoder's peak goes from 2 buffers of
 * the largest tensor plus each step's temporaries (a resnet's 3, the 4× upsampled
 * input) to the 2 buffers alone. */

/* A banded conv's output band: small, because the bands' copies are all the extra memory
 * a step takes.  An upsampling conv's band also computes two rows it drops (the band's
 * upsampled input starts and ends a row early), so its bands are larger. */
#define UP_BAND_BYTES (8u << 20)
#define IP_BAND_BYTES (4u << 20)

static void conv_in_place(struct fwd *f, float *x, const struct conv *cv, int N, int H, int W, size_t band_bytes);

/* x (destroyed) -> the resnet's output, in x's buffer; tmp holds N·cout·HW floats.
 * With a shortcut that does not widen (cout <= cin, as everywhere in a decoder): A =
 * shortcut(x) in tmp, x = GN+SiLU(x) in place, x = conv1(x) in place, GN+SiLU in
 * place, x = conv2(x) in place, x = x + A.  Without a shortcut: B = GN+SiLU(x) in tmp,
 * B = conv1(B), GN+SiLU, B = conv2(B) (in place in tmp), x = B + x.  A widening shortcut
 * (the encoder) keeps both temporaries in tmp: 2·N·cout·HW floats (res_tmp_floats).
 * Every sum is resnet_forward's, in the same order (a + b == b + a). */
static void res_in_place(struct fwd *f, float *x, float *tmp, const struct resnet *r, int N, int H, int W,
                         size_t band_bytes) {
    struct backend *be = f->be;
    int HW = H * W;
    long long n = (long long)N * r->cout * HW;
    fwd_poll(f);
    if (r->shortcut.w && r->cout <= r->cin) {
        conv_forward(f, tmp, x, &r->shortcut, N, H, W);
        be->ops->group_norm(be, x, x, r->norm1.w, r->norm1.b, N, r->cin, HW, r->groups, r->eps, 1);
        conv_in_place(f, x, &r->conv1, N, H, W, band_bytes);
        be->ops->group_norm(be, x, x, r->norm2.w, r->norm2.b, N, r->cout, HW, r->groups, r->eps, 1);
        conv_in_place(f, x, &r->conv2, N, H, W, band_bytes);
        be->ops->axpby(be, x, 1.0f, x, 1.0f, tmp, n);
    } else if (r->shortcut.w) {
        float *A = tmp, *B = tmp + n;
        conv_forward(f, A, x, &r->shortcut, N, H, W);
        be->ops->group_norm(be, x, x, r->norm1.w, r->norm1.b, N, r->cin, HW, r->groups, r->eps, 1);
        conv_forward(f, B, x, &r->conv1, N, H, W);
        be->ops->group_norm(be, B, B, r->norm2.w, r->norm2.b, N, r->cout, HW, r->groups, r->eps, 1);
        conv_forward(f, x, B, &r->conv2, N, H, W);
        be->ops->axpby(be, x, 1.0f, x, 1.0f, A, n);
    } else {
        be->ops->group_norm(be, tmp, x, r->norm1.w, r->norm1.b, N, r->cin, HW, r->groups, r->eps, 1);
        conv_in_place(f, tmp, &r->conv1, N, H, W, band_bytes);
        be->ops->group_norm(be, tmp, tmp, r->norm2.w, r->norm2.b, N, r->cout, HW, r->groups, r->eps, 1);
        conv_in_place(f, tmp, &r->conv2, N, H, W, band_bytes);
        be->ops->axpby(be, x, 1.0f, tmp, 1.0f, x, n);
    }
}

/* Floats a resnet step needs in the other buffer (res_in_place's tmp). */
static size_t res_tmp_floats(const struct vae_step *s) {
    size_t o = (size_t)s->N * s->Co * s->Ho * s->Wo;
    return s->res->shortcut.w && s->res->cout > s->res->cin ? 2 * o : o;
}

/* Rows [r0, r1) of every channel of x [C, H, W] into dst [C, r1 - r0, W]. */
static void rows_copy(struct backend *be, float *dst, const float *x, int C, int H, int W, int r0, int r1) {
    size_t n = (size_t)(r1 - r0) * W;
    for (int c = 0; c < C && !be->err; c++)
        be->ops->copy(be, dst + (size_t)c * n, x + ((size_t)c * H + r0) * W, n * sizeof(float));
}

/* The reverse: src [C, r1 - r0, W] into rows [r0, r1) of every channel of x [C, H, W]. */
static void rows_put(struct backend *be, float *x, const float *src, int C, int H, int W, int r0, int r1) {
    size_t n = (size_t)(r1 - r0) * W;
    for (int c = 0; c < C && !be->err; c++)
        be->ops->copy(be, x + ((size_t)c * H + r0) * W, src + (size_t)c * n, n * sizeof(float));
}

/* out [N, K, 2H, 2W] = conv(upsample2x(x [N, C, H, W])), band by band of output rows, so
 * the upsampled input exists a band at a time.  A band of output rows [o0, o1) reads the
 * upsampled rows o0 - 1 .. o1 (zero outside), i.e. input rows a .. b - 1; the band's conv
 * pads only at the image's own top and bottom and its rows j0 .. are the wanted ones. */
static void up_conv_banded(struct fwd *f, float *out, const float *x, const struct conv *cv, int N,
                           int H, int W, size_t band_bytes) {
    struct backend *be = f->be;
    int C = cv->cin, K = cv->cout, Ho = 2 * H, Wo = 2 * W;
    int rows = (int)(band_bytes / ((size_t)K * Wo * sizeof(float))) & ~1;
    if (rows < 2) rows = 2;
    uint64_t mk = arena_mark(f->ar);
    float *xb = fwd_alloc(f, (size_t)C * (rows / 2 + 2) * W), *ub = fwd_alloc(f, (size_t)C * (rows + 4) * Wo),
          *ob = fwd_alloc(f, (size_t)K * (rows + 2) * Wo);
    for (int n = 0; n < N && !be->err; n++)
        for (int o0 = 0; o0 < Ho && !be->err; o0 += rows) {
            int o1 = o0 + rows < Ho ? o0 + rows : Ho;
            int a = (o0 > 0 ? o0 - 1 : 0) >> 1, b = ((o1 < Ho ? o1 : Ho - 1) >> 1) + 1;
            int pt = o0 == 0, pb = o1 == Ho, hb = 2 * (b - a), hout = hb + pt + pb - 2;
            int j0 = o0 - 2 * a - 1 + pt;
            rows_copy(be, xb, x + (size_t)n * C * H * W, C, H, W, a, b);
            be->ops->upsample2x(be, ub, xb, 1, C, b - a, W);
            be->ops->conv2d(be, ob, ub, cv->w, cv->wdt, cv->b, 1, C, hb, Wo, K, 3, 3, 1, pt, 1, pb, 1);
            for (int k = 0; k < K && !be->err; k++)
                be->ops->copy(be, out + (((size_t)n * K + k) * Ho + o0) * Wo, ob + ((size_t)k * hout + j0) * Wo,
                              (size_t)(o1 - o0) * Wo * sizeof(float));
        }
    arena_reset(f->ar, mk);
}

/* x [N, C, H, W] -> conv(x) [N, K, H, W] in the same buffer (K <= C; 3×3 pad 1 or 1×1),
 * a band of output rows at a time.  A band [o0, o1) reads input rows o0 - 1 .. o1 (copied
 * out, padded only at the image's own edges), so its output may overwrite input rows only
 * once the next band has read them: each band is written back after the next one is
 * computed (two output bands in flight).  Output element (n, k, r) lands at or before the
 * address of input (n, k, r), and every input row still to be read lies past the rows
 * written, so nothing is overwritten before it is read.  One band covering the image is
 * conv_forward's call, bit for bit. */
static void conv_in_place(struct fwd *f, float *x, const struct conv *cv, int N, int H, int W, size_t band_bytes) {
    struct backend *be = f->be;
    int C = cv->cin, K = cv->cout, p = cv->k / 2;
    SD_ASSERT(K <= C && (cv->k == 1 || cv->k == 3));
    int rows = (int)(band_bytes / ((size_t)K * W * sizeof(float)));
    if (rows < 1) rows = 1;
    if (rows > H) rows = H;
    uint64_t mk = arena_mark(f->ar);
    float *xb = fwd_alloc(f, (size_t)C * (rows + 2) * W), *ob[2] = { fwd_alloc(f, (size_t)K * rows * W),
                                                                       fwd_alloc(f, (size_t)K * rows * W) };
    for (int n = 0; n < N && !be->err; n++) {
        const float *in = x + (size_t)n * C * H * W;
        float *out = x + (size_t)n * K * H * W;
        int prev0 = -1, prev1 = -1, cur = 0;
        for (int o0 = 0; o0 < H && !be->err; o0 += rows, cur = !cur) {
            int o1 = o0 + rows < H ? o0 + rows : H;
            int a = o0 - p > 0 ? o0 - p : 0, b = o1 + p < H ? o1 + p : H;
            int pt = p - (o0 - a), pb = p - (b - o1);
            rows_copy(be, xb, in, C, H, W, a, b);
            be->ops->conv2d(be, ob[cur], xb, cv->w, cv->wdt, cv->b, 1, C, b - a, W, K, cv->k, cv->k, 1, pt, p, pb, p);
            if (prev0 >= 0) rows_put(be, out, ob[!cur], K, H, W, prev0, prev1);
            prev0 = o0;
            prev1 = o1;
        }
        if (prev0 >= 0 && !be->err) rows_put(be, out, ob[!cur], K, H, W, prev0, prev1);
    }
    arena_reset(f->ar, mk);
}

static int step_in_place(const struct vae_step *s) { return s->kind == VS_RES || s->kind == VS_GNSILU; }

/* Floats each of the two buffers needs, following the chain's ping-pong: the buffer a
 * step reads holds its input and (in place) its output; the other holds a resnet's
 * temporaries or a step's output.  The buffers differ in size: in the SDXL decoder at
 * 512², one holds the 256-channel output of the last upsampling conv (256 MiB), the
 * other at most the 128-channel temporaries after it. */
static void infer_caps(const struct vae_tape *tp, size_t cap[2]) {
    int c = 0;
    cap[0] = cap[1] = 0;
    for (int i = 0; i < tp->n; i++) {
        const struct vae_step *s = &tp->s[i];
        size_t in = (size_t)tp->N * s->C * s->H * s->W, o = (size_t)tp->N * s->Co * s->Ho * s->Wo;
        size_t here = step_in_place(s) && o > in ? o : in;
        size_t there = s->kind == VS_RES ? res_tmp_floats(s) : s->kind == VS_GNSILU ? 0 : o;
        if (here > cap[c]) cap[c] = here;
        if (there > cap[!c]) cap[!c] = there;
        if (!step_in_place(s)) c = !c;
    }
}

/* band_bytes: a banded conv's output band (0: UP_BAND_BYTES / IP_BAND_BYTES; tests set it) */
static void infer_step(struct fwd *f, const struct vae *m, struct vae_step *s, float *cur, float *other,
                       size_t band_bytes) {
    size_t up = (size_t)s->N * s->C * s->H * s->W * 4 * sizeof(float), ip_band = band_bytes ? band_bytes : IP_BAND_BYTES;
    if (!band_bytes) band_bytes = UP_BAND_BYTES;
    if (s->kind == VS_RES) res_in_place(f, cur, other, s->res, s->N, s->H, s->W, ip_band);
    else if (s->kind == VS_GNSILU)
        f->be->ops->group_norm(f->be, cur, cur, s->norm->w, s->norm->b, s->N, s->C, s->H * s->W, m->cfg.groups,
                               VAE_EPS, 1);
    else if (s->kind == VS_UP && up > band_bytes) up_conv_banded(f, other, cur, s->conv, s->N, s->H, s->W, band_bytes);
    else { s->in = cur; step_forward(f, m, s, other); }
}

/* Run the planned chain from in to out.  train: every step output is kept (the tape);
 * else the two buffers above.  band_bytes: as infer_step's. */
static void run_chain(struct fwd *f, const struct vae *m, struct vae_tape *tp, int train, const float *in, float *out,
                      size_t band_bytes) {
    uint64_t mk = arena_mark(f->ar);
    if (train) {
        const float *cur = in;
        for (int i = 0; i < tp->n && !f->be->err; i++) {
            struct vae_step *s = &tp->s[i];
            float *o = i == tp->n - 1 ? out : fwd_alloc(f, (size_t)tp->N * s->Co * s->Ho * s->Wo);
            s->in = cur;
            step_forward(f, m, s, o);
            cur = o;
        }
        return;
    }
    size_t cap[2];
    infer_caps(tp, cap);
    float *pp[2] = { fwd_alloc(f, cap[0]), fwd_alloc(f, cap[1]) };
    int c = 0;
    if (f->be->err) { arena_reset(f->ar, mk); return; }   /* copy is not an op that skips */
    f->be->ops->copy(f->be, pp[0], in, (size_t)tp->N * tp->s[0].C * tp->s[0].H * tp->s[0].W * sizeof(float));
    for (int i = 0; i < tp->n && !f->be->err; i++) {
        struct vae_step *s = &tp->s[i];
        infer_step(f, m, s, pp[c], pp[!c], band_bytes);
        if (!step_in_place(s)) c = !c;
    }
    const struct vae_step *last = &tp->s[tp->n - 1];
    if (!f->be->err)
        f->be->ops->copy(f->be, out, pp[c], (size_t)tp->N * last->Co * last->Ho * last->Wo * sizeof(float));
    arena_reset(f->ar, mk);
}

void vae_encode_moments(struct fwd *f, const struct vae *m, struct vae_tape *tp, float *moments,
                        const float *img, int N, int H, int W) {
    struct vae_tape local;
    int s = vae_scale(m);
    if (!tp) tp = &local;
    tp->n = 0;
    tp->N = N;
    if (H % s || W % s) { backend_set_error(f->be, SD_ERR_INVALID, "image size not divisible by the VAE scale"); return; }
    plan_encoder(tp, m, H, W);
    run_chain(f, m, tp, tp != &local, img, moments, 0);
}

void vae_encode(struct fwd *f, const struct vae *m, float *mean, const float *img, int N, int H, int W) {
    int s = vae_scale(m), L = m->cfg.latent_ch;
    size_t hw = (size_t)(H / s) * (W / s);
    uint64_t mk = arena_mark(f->ar);
    float *mom = fwd_alloc(f, (size_t)N * 2 * L * hw);
    vae_encode_moments(f, m, NULL, mom, img, N, H, W);
    for (int n = 0; n < N && !f->be->err; n++)   /* mean = first latent_ch channels */
        f->be->ops->copy(f->be, mean + (size_t)n * L * hw, mom + (size_t)n * 2 * L * hw, (size_t)L * hw * sizeof(float));
    arena_reset(f->ar, mk);
}

void vae_decode_t(struct fwd *f, const struct vae *m, struct vae_tape *tp, float *img, const float *z, int N, int h, int w) {
    struct vae_tape local;
    if (!tp) tp = &local;
    tp->n = 0;
    tp->N = N;
    plan_decoder(tp, m, h, w);
    run_chain(f, m, tp, tp != &local, z, img, m->band_bytes);
}

size_t vae_decode_bytes(const struct vae *m, int N, int h, int w) {
    struct vae_tape *tp = sd_malloc(sizeof *tp);
    if (!tp) { sd_clear_error(); return 0; }
    tp->n = 0;
    tp->N = N;
    plan_decoder(tp, m, h, w);
    size_t mid = (size_t)N * m->cfg.ch[m->cfg.nlevels - 1] * h * w;
    size_t cap[2];
    infer_caps(tp, cap);
    /* + a banded step's copies: an upsampling band's input, upsampled input and output
     * (about 3 bands), or an in-place band's input (up to twice the output's channels,
     * with 2 rows of margin) and two output bands */
    size_t bands = 3 * UP_BAND_BYTES > 6 * IP_BAND_BYTES ? 3 * UP_BAND_BYTES : 6 * IP_BAND_BYTES;
    size_t bytes = (cap[0] + cap[1] + 3 * mid) * sizeof(float) + bands + 64 * 1024;
    sd_free(tp);
    return bytes;
}

void vae_decode(struct fwd *f, const struct vae *m, float *img, const float *z, int N, int h, int w) {
    vae_decode_t(f, m, NULL, img, z, N, h, w);
}

void vae_backward(struct fwd *f, const struct vae *m, struct vae *g, const struct vae_tape *tp,
                  const float *dout, float *din) {
    uint64_t mk = arena_mark(f->ar);
    size_t cap = 0;
    for (int i = 0; i < tp->n; i++) {
        size_t a = (size_t)tp->N * tp->s[i].C * tp->s[i].H * tp->s[i].W;
        if (a > cap) cap = a;
    }
    float *pp[2] = { fwd_alloc(f, cap), fwd_alloc(f, cap) };
    const float *d = dout;
    for (int i = tp->n - 1; i >= 0 && !f->be->err; i--) {
        float *o = i == 0 && din ? din : pp[i & 1];
        if (i == 0 && !din && !g) break;
        step_backward(f, m, g, &tp->s[i], o, d);
        d = o;
    }
    arena_reset(f->ar, mk);
}
