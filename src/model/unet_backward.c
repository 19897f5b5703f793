/* unet_backward.c — the UNet's backward pass, the forward of unet.c walked in reverse.
 *
 * Skips: every down-path tensor is a skip; its gradient collects the up-path
 * contribution (into tp->dskip[k] while the up path is walked back) and the contribution
 * of the down-path layer that consumed it.  The resnets' time-embedding gradients
 * collect into tp->dtemb, which the embedding MLPs get at the very end. */
#include <string.h>

#include "unet.h"

#define G_(g, field) ((g) ? &(g)->field : NULL)

void unet_tape_begin_backward(struct fwd *f, const struct unet *m, struct unet_tape *tp) {
    struct backend *be = f->be;
    int N = tp->N;
    /* the gradients that outlive the decode backward come first on the arena */
    for (int k = 0; k < tp->nskip; k++) {
        size_t sz = (size_t)N * tp->skip_c[k] * tp->skip_hw[k];
        tp->dskip[k] = fwd_alloc(f, sz);
        if (tp->dskip[k]) be->ops->zero(be, tp->dskip[k], sz * sizeof(float));
    }
    size_t nm = (size_t)N * tp->mid_c * tp->mid_h * tp->mid_w;
    tp->dtemb = fwd_alloc(f, (size_t)N * m->temb_dim);
    tp->dmid = fwd_alloc(f, nm);
    if (tp->dtemb) be->ops->zero(be, tp->dtemb, (size_t)N * m->temb_dim * sizeof(float));
    if (tp->dmid) be->ops->zero(be, tp->dmid, nm * sizeof(float));
}

void unet_up_backward(struct fwd *f, const struct unet *m, struct unet *g, struct unet_tape *tp,
                          const float *dout, float *dctx) {
    struct backend *be = f->be;
    const struct unet_config *c = &m->cfg;
    int n = c->nlevels, G = c->groups, N = tp->N, h = tp->out_h, w = tp->out_w, C = tp->out_c;
    struct fwd fk = { .be = f->be, .ar = f->ar, .keep = tp->keep };   /* blocks pop what their forward kept */
    f = &fk;
    unet_tape_begin_backward(f, m, tp);
    if (!tp->dtemb || !tp->dmid) return;
    uint64_t mk = arena_mark(f->ar);

    /* output head: out = conv_out(silu(GN(out_in))) */
    size_t maxn = 0;   /* largest activation of the up path, for the two ping-pong buffers */
    {
        int hh = tp->mid_h, ww = tp->mid_w;
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < m->up[i].nres; j++) {
                size_t a = (size_t)N * m->up[i].res[j].cin * hh * ww;
                if (a > maxn) maxn = a;
            }
            if (m->up[i].sample.w) { hh *= 2; ww *= 2; }
            size_t a = (size_t)N * m->up[i].res[m->up[i].nres - 1].cout * hh * ww;
            if (a > maxn) maxn = a;
        }
    }
    float *dcur = fwd_alloc(f, maxn), *dnext = fwd_alloc(f, maxn), *tmp = fwd_alloc(f, maxn);
    float *hn = fwd_alloc(f, (size_t)N * C * h * w);
    be->ops->group_norm(be, hn, tp->out_in, m->out_norm.w, m->out_norm.b, N, C, h * w, G, c->eps, 1);
    conv_backward(f, tmp, dout, hn, &m->conv_out, G_(g, conv_out), N, h, w);
    be->ops->group_norm_backward(be, dcur, g ? g->out_norm.w : NULL, g ? g->out_norm.b : NULL, tmp, tp->out_in,
                                 m->out_norm.w, m->out_norm.b, N, C, h * w, G, c->eps, 1);

    for (int i = n - 1; i >= 0; i--) {
        const struct unet_level *l = &m->up[i];
        struct unet_level *gl = g ? &g->up[i] : NULL;
        if (l->sample.w) {     /* cur = conv(upsample(in)) */
            int hl = h / 2, wl = w / 2;
            uint64_t m2 = arena_mark(f->ar);
            float *u = fwd_alloc(f, (size_t)N * C * h * w), *du = fwd_alloc(f, (size_t)N * C * h * w);
            be->ops->upsample2x(be, u, tp->up_sample_in[i], N, C, hl, wl);
            conv_backward(f, du, dcur, u, &l->sample, gl ? &gl->sample : NULL, N, h, w);
            be->ops->upsample2x_backward(be, dcur, du, N, C, hl, wl);
            arena_reset(f->ar, m2);
            h = hl; w = wl;
        }
        for (int j = l->nres - 1; j >= 0; j--) {
            const struct resnet *r = &l->res[j];
            int k = tp->up_skip[i][j], Cs = tp->skip_c[k], Cin = r->cin - Cs;
            size_t no = (size_t)N * r->cout * h * w;
            if (l->attn) {
                transformer2d_backward(f, tmp, dctx, dcur, tp->up_res[i][j], tp->ctx, &l->attn[j],
                                       gl ? &gl->attn[j] : NULL, N, h, w, tp->Lk, G);
                be->ops->copy(be, dcur, tmp, no * sizeof(float));
            }
            uint64_t m2 = arena_mark(f->ar);
            float *cat = fwd_alloc(f, (size_t)N * r->cin * h * w), *dcat = fwd_alloc(f, (size_t)N * r->cin * h * w);
            float *ds = fwd_alloc(f, (size_t)N * Cs * h * w);
            be->ops->concat_channels(be, cat, tp->up_in[i][j], Cin, tp->skip[k], Cs, N, h * w);
            resnet_backward(f, dcat, tp->dtemb, dcur, cat, tp->temb, r, gl ? &gl->res[j] : NULL, N, h, w);
            be->ops->split_channels(be, dnext, Cin, ds, Cs, dcat, N, h * w);
            be->ops->axpby(be, tp->dskip[k], 1.0f, tp->dskip[k], 1.0f, ds, (long long)N * Cs * h * w);
            arena_reset(f->ar, m2);
            float *t = dcur; dcur = dnext; dnext = t;
            C = Cin;
        }
    }
    be->ops->copy(be, tp->dmid, dcur, (size_t)N * tp->mid_c * tp->mid_h * tp->mid_w * sizeof(float));
    arena_reset(f->ar, mk);
}

void unet_down_backward(struct fwd *f, const struct unet *m, struct unet *g, struct unet_tape *tp,
                          const float *dmid_extra, float *dx, float *dctx, float *dpooled) {
    struct backend *be = f->be;
    const struct unet_config *c = &m->cfg;
    int n = c->nlevels, G = c->groups, N = tp->N, h = tp->mid_h, w = tp->mid_w, C = tp->mid_c;
    int E = m->temb_dim, A = c->addition_time_embed_dim;
    struct fwd fk = { .be = f->be, .ar = f->ar, .keep = tp->keep };
    f = &fk;
    uint64_t mk = arena_mark(f->ar);
    size_t maxn = (size_t)N * c->ch[0] * tp->H * tp->W;
    for (int i = 0; i < n; i++) {
        size_t a = (size_t)N * c->ch[i] * (tp->H >> i) * (tp->W >> i);
        if (a > maxn) maxn = a;
    }
    float *dcur = fwd_alloc(f, maxn), *dnext = fwd_alloc(f, maxn), *tmp = fwd_alloc(f, maxn);
    size_t nm = (size_t)N * C * h * w;
    /* mid: out = R1(T(R0(in))) */
    if (dmid_extra) be->ops->axpby(be, tp->dmid, 1.0f, tp->dmid, 1.0f, dmid_extra, (long long)nm);
    resnet_backward(f, tmp, tp->dtemb, tp->dmid, tp->mid_a0, tp->temb, &m->mid_res[1], G_(g, mid_res[1]), N, h, w);
    transformer2d_backward(f, dnext, dctx, tmp, tp->mid_r0, tp->ctx, &m->mid_attn, G_(g, mid_attn), N, h, w, tp->Lk, G);
    resnet_backward(f, dcur, tp->dtemb, dnext, tp->mid_in, tp->temb, &m->mid_res[0], G_(g, mid_res[0]), N, h, w);

    /* down path in reverse; dcur is the gradient of skip k (plus its up-path share) */
    int k = tp->nskip - 1;
    be->ops->axpby(be, dcur, 1.0f, dcur, 1.0f, tp->dskip[k], (long long)nm);
    for (int i = n - 1; i >= 0; i--) {
        const struct unet_level *l = &m->down[i];
        struct unet_level *gl = g ? &g->down[i] : NULL;
        if (l->sample.w) {
            int hh = h * 2, ww = w * 2;
            be->ops->conv2d_backward(be, dnext, gl ? gl->sample.w : NULL, gl ? gl->sample.b : NULL, dcur,
                                     tp->skip[k - 1], l->sample.w, N, C, hh, ww, C, 3, 3, 2, 1, 1, 1, 1);
            h = hh; w = ww;
            k--;
            be->ops->axpby(be, dcur, 1.0f, dnext, 1.0f, tp->dskip[k], (long long)N * C * h * w);
        }
        for (int j = l->nres - 1; j >= 0; j--) {
            const struct resnet *r = &l->res[j];
            size_t no = (size_t)N * r->cout * h * w;
            if (l->attn) {
                transformer2d_backward(f, tmp, dctx, dcur, tp->dn_res[i][j], tp->ctx, &l->attn[j],
                                       gl ? &gl->attn[j] : NULL, N, h, w, tp->Lk, G);
                be->ops->copy(be, dcur, tmp, no * sizeof(float));
            }
            resnet_backward(f, dnext, tp->dtemb, dcur, tp->dn_in[i][j], tp->temb, r, gl ? &gl->res[j] : NULL, N, h, w);
            k--;
            C = r->cin;
            be->ops->axpby(be, dcur, 1.0f, dnext, 1.0f, tp->dskip[k], (long long)N * C * h * w);
        }
    }
    SD_ASSERT(k == 0 || be->err);
    if (tp->keep && tp->keep->n != 0 && !be->err)
        backend_set_error(be, SD_ERR_INVALID, "unet backward: kept activations left over (a tape "
                          "replayed by a different backward)");
    if (dx || g) conv_backward(f, dx, dcur, tp->x, &m->conv_in, G_(g, conv_in), N, h, w);

    /* embeddings: temb = silu(emb); emb = time2(silu(time1(ts))) + add2(silu(add1(add_in))) */
    float *demb = fwd_alloc(f, (size_t)N * E), *s1 = fwd_alloc(f, (size_t)N * E), *ds1 = fwd_alloc(f, (size_t)N * E);
    float *dadd = fwd_alloc(f, (size_t)N * c->add_in_dim);
    be->ops->act_backward(be, demb, tp->dtemb, tp->emb, (long long)N * E, ACT_SILU);
    be->ops->act(be, s1, tp->a1, (long long)N * E, ACT_SILU);
    linear_backward(f, g ? ds1 : NULL, demb, s1, &m->time2, G_(g, time2), N);
    if (g) {
        be->ops->act_backward(be, ds1, ds1, tp->a1, (long long)N * E, ACT_SILU);
        linear_backward(f, NULL, ds1, tp->ts, &m->time1, G_(g, time1), N);
    }
    be->ops->act(be, s1, tp->b1, (long long)N * E, ACT_SILU);
    linear_backward(f, ds1, demb, s1, &m->add2, G_(g, add2), N);
    be->ops->act_backward(be, ds1, ds1, tp->b1, (long long)N * E, ACT_SILU);
    linear_backward(f, dpooled ? dadd : NULL, ds1, tp->add_in, &m->add1, G_(g, add1), N);
    if (dpooled) be->ops->split_channels(be, dpooled, m->pooled_dim, NULL, 6 * A, dadd, N, 1);
    arena_reset(f->ar, mk);
}
