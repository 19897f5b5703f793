/* gan_head.c — see gan_head.h. */
#include <stdio.h>
#include <string.h>

#include "gan_head.h"

/* GroupNorm groups: 32 as in the reference (1280 channels), but never fewer than 8
 * channels per group, since at 1×1 a group of one channel normalises to a constant. */
static int groups_for(int C) {
    int g = 32;
    while (g > 1 && (C % g || C / g < 8)) g--;
    return g;
}

sd_status head_create(struct head *hd, struct backend *be, int C, int s) {
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

void head_free(struct head *hd) { arena_free(&hd->params); wt_free(&hd->wt); }

/* logits [N] (backend memory) from feat [N, C, s, s]. */
void head_forward(struct fwd *f, const struct head *hd, struct head_save *sv, float *logits, const float *feat, int N) {
    struct backend *be = f->be;
    int C = hd->C, s = hd->s;
    const float *x = feat;
    for (int i = 0; i <= hd->nd; i++) {
        const struct conv *cv = i < hd->nd ? &hd->down[i] : &hd->final;
        int so = i < hd->nd ? s / 2 : 1;
        float *y = fwd_alloc(f, (size_t)N * C * so * so), *z = fwd_alloc(f, (size_t)N * C * so * so);
        if (i < hd->nd) be->ops->conv2d(be, y, x, cv->w, cv->wdt, cv->b, N, C, s, s, C, 4, 4, 2, 1, 1, 1, 1);
        else be->ops->conv2d(be, y, x, cv->w, cv->wdt, cv->b, N, C, s, s, C, hd->kf, hd->kf, hd->kf, 0, 0, 0, 0);
        be->ops->group_norm(be, z, y, hd->gn[i].w, hd->gn[i].b, N, C, so * so, hd->G, 1e-5f, 1);
        sv->x[i] = (float *)x; sv->y[i] = y;
        x = z; s = so;
    }
    sv->x[hd->nd + 1] = (float *)x;
    be->ops->linear(be, logits, x, hd->out.w, hd->out.wdt, hd->out.b, N, 1, C, 1);
}

/* dfeat = from dlogits [N]; g (may be NULL) += parameter gradients. */
void head_backward(struct fwd *f, const struct head *hd, struct head *g, const struct head_save *sv,
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

