/* layers_backward.c — backward passes of the blocks in layers.h, written by hand in
 * reverse order of the forward (llm.c style, no autograd).  Each function takes the
 * forward intermediates it needs from the keep stack (keep-all mode, f->keep) or
 * recomputes them from the block input on the activation arena, then walks back;
 * temporaries are released before returning. */
#include <math.h>
#include <string.h>

#include "layers.h"

#define GF(g, field) ((g) ? (g)->field : NULL)    /* a parameter gradient */
#define GP(g, field) ((g) ? &(g)->field : NULL)   /* a sub-layer's gradients */

void linear_backward(struct fwd *f, float *dinp, const float *dout, const float *inp,
                     const struct linear *l, struct linear *g, int R) {
    f->be->ops->linear_backward(f->be, dinp, GF(g, w), l->b ? GF(g, b) : NULL, dout, inp, l->w, R, l->in, l->out);
}

void conv_backward(struct fwd *f, float *dinp, const float *dout, const float *inp,
                   const struct conv *c, struct conv *g, int N, int H, int W) {
    int p = c->k / 2;
    f->be->ops->conv2d_backward(f->be, dinp, GF(g, w), GF(g, b), dout, inp, c->w, N, c->cin, H, W, c->cout,
                                c->k, c->k, 1, p, p, p, p);
}

void resnet_backward(struct fwd *f, float *dx, float *dtemb_act, const float *dout, const float *x,
                     const float *temb_act, const struct resnet *r, struct resnet *g, int N, int H, int W) {
    struct backend *be = f->be;
    uint64_t m = arena_mark(f->ar);
    int HW = H * W;
    size_t ni = (size_t)N * r->cin * HW, no = (size_t)N * r->cout * HW;
    /* h = silu(GN1(x)); h2 = conv1(h) + temb_proj; g2 = silu(GN2(h2)): kept or recomputed */
    float *h, *h2, *g2;
    int has_temb = r->temb.w && temb_act;
    if (f->keep) {
        g2 = keep_pop(f); h2 = keep_pop(f); h = keep_pop(f);
        if (!h) { arena_reset(f->ar, m); return; }
    } else {
        h = fwd_alloc(f, ni); h2 = fwd_alloc(f, no); g2 = fwd_alloc(f, no);
        be->ops->group_norm(be, h, x, r->norm1.w, r->norm1.b, N, r->cin, HW, r->groups, r->eps, 1);
        conv_forward(f, h2, h, &r->conv1, N, H, W);
        if (has_temb) {
            float *tp = fwd_alloc(f, (size_t)N * r->cout);
            linear_forward(f, tp, temb_act, &r->temb, N, 1);
            be->ops->add_channel(be, h2, tp, N, r->cout, HW);
        }
        be->ops->group_norm(be, g2, h2, r->norm2.w, r->norm2.b, N, r->cout, HW, r->groups, r->eps, 1);
    }
    /* back: out = conv2(g2) + shortcut(x) */
    float *dg2 = fwd_alloc(f, no), *dh2 = fwd_alloc(f, no), *dh = fwd_alloc(f, ni);
    conv_backward(f, dg2, dout, g2, &r->conv2, GP(g, conv2), N, H, W);
    be->ops->group_norm_backward(be, dh2, GF(g, norm2.w), GF(g, norm2.b), dg2, h2, r->norm2.w, r->norm2.b,
                                 N, r->cout, HW, r->groups, r->eps, 1);
    if (has_temb) {
        float *dtp = fwd_alloc(f, (size_t)N * r->cout), *dte = fwd_alloc(f, (size_t)N * r->temb.in);
        be->ops->channel_sum(be, dtp, dh2, N, r->cout, HW);
        linear_backward(f, dtemb_act ? dte : NULL, dtp, temb_act, &r->temb, GP(g, temb), N);
        if (dtemb_act) be->ops->axpby(be, dtemb_act, 1.0f, dtemb_act, 1.0f, dte, (long long)N * r->temb.in);
    }
    conv_backward(f, dh, dh2, h, &r->conv1, GP(g, conv1), N, H, W);
    be->ops->group_norm_backward(be, dx, GF(g, norm1.w), GF(g, norm1.b), dh, x, r->norm1.w, r->norm1.b,
                                 N, r->cin, HW, r->groups, r->eps, 1);
    if (r->shortcut.w) {
        conv_backward(f, dh, dout, x, &r->shortcut, GP(g, shortcut), N, H, W);
        be->ops->axpby(be, dx, 1.0f, dx, 1.0f, dh, (long long)ni);
    } else {
        be->ops->axpby(be, dx, 1.0f, dx, 1.0f, dout, (long long)ni);
    }
    arena_reset(f->ar, m);
}

void attention_backward_add(struct fwd *f, float *dx, float *dctx, const float *dy, const float *x,
                            const float *ctx, const struct attention *a, struct attention *g,
                            int N, int L, int Lk, int causal) {
    struct backend *be = f->be;
    uint64_t m = arena_mark(f->ar);
    int C = a->C, D = C / a->heads, Cc = a->k.in;
    size_t nq = (size_t)N * L * C, nk = (size_t)N * Lk * C;
    float *q, *k, *v, *o, scale = 1.0f / sqrtf((float)D);
    if (f->keep) {
        o = keep_pop(f); v = keep_pop(f); k = keep_pop(f); q = keep_pop(f);
        if (!q) { arena_reset(f->ar, m); return; }
    } else {
        q = fwd_alloc(f, nq); k = fwd_alloc(f, nk); v = fwd_alloc(f, nk); o = fwd_alloc(f, nq);
        linear_forward(f, q, x, &a->q, N * L, L);
        linear_forward(f, k, ctx, &a->k, N * Lk, Lk);
        linear_forward(f, v, ctx, &a->v, N * Lk, Lk);
        be->ops->attention(be, o, q, k, v, N, a->heads, L, Lk, D, C, C, C, C, scale, causal);
    }
    float *d_o = fwd_alloc(f, nq), *dq = fwd_alloc(f, nq), *dk = fwd_alloc(f, nk), *dv = fwd_alloc(f, nk);
    float *tx = fwd_alloc(f, (size_t)N * L * a->q.in), *tc = fwd_alloc(f, (size_t)N * Lk * Cc);
    linear_backward(f, d_o, dy, o, &a->out, GP(g, out), N * L);
    be->ops->attention_backward(be, dq, dk, dv, d_o, q, k, v, N, a->heads, L, Lk, D, C, C, C, C, scale, causal);
    linear_backward(f, tx, dq, x, &a->q, GP(g, q), N * L);
    be->ops->axpby(be, dx, 1.0f, dx, 1.0f, tx, (long long)N * L * a->q.in);
    linear_backward(f, dctx ? tc : NULL, dk, ctx, &a->k, GP(g, k), N * Lk);
    if (dctx) be->ops->axpby(be, dctx, 1.0f, dctx, 1.0f, tc, (long long)N * Lk * Cc);
    linear_backward(f, dctx ? tc : NULL, dv, ctx, &a->v, GP(g, v), N * Lk);
    if (dctx) be->ops->axpby(be, dctx, 1.0f, dctx, 1.0f, tc, (long long)N * Lk * Cc);
    arena_reset(f->ar, m);
}

/* BasicTransformerBlock: x1 = x0 + attn1(LN1 x0); x2 = x1 + attn2(LN2 x1, ctx);
 * x3 = x2 + ff(LN3 x2).  dx is the running gradient, updated in place (dx3 -> dx0).
 * Keep-all mode pops what tblock_forward pushed (x0 too: the argument is then unused). */
static void tblock_backward(struct fwd *f, float *dx, float *dctx, const float *x0, const float *ctx,
                            const struct tblock *b, struct tblock *g, int N, int L, int Lk, int C) {
    struct backend *be = f->be;
    uint64_t m = arena_mark(f->ar);
    size_t R = (size_t)N * L, n = R * C;
    float *x1 = NULL, *x2, *h, *ff, *gg, *dh = fwd_alloc(f, n);
    if (f->keep) {
        gg = keep_pop(f); ff = keep_pop(f); h = keep_pop(f); x2 = keep_pop(f);
        if (!x2) { arena_reset(f->ar, m); return; }
    } else {
        x1 = fwd_alloc(f, n); x2 = fwd_alloc(f, n); h = fwd_alloc(f, n);
        ff = fwd_alloc(f, R * 8 * C); gg = fwd_alloc(f, R * 4 * C);
        be->ops->copy(be, x1, x0, n * sizeof(float));
        be->ops->layer_norm(be, h, x0, b->ln1.w, b->ln1.b, (int)R, C, 1e-5f);
        attention_forward_add(f, x1, h, h, &b->attn1, N, L, L, 0);
        be->ops->copy(be, x2, x1, n * sizeof(float));
        be->ops->layer_norm(be, h, x1, b->ln2.w, b->ln2.b, (int)R, C, 1e-5f);
        attention_forward_add(f, x2, h, ctx, &b->attn2, N, L, Lk, 0);
        be->ops->layer_norm(be, h, x2, b->ln3.w, b->ln3.b, (int)R, C, 1e-5f);
        linear_forward(f, ff, h, &b->ff1, (int)R, L);
        be->ops->geglu(be, gg, ff, (int)R, 4 * C);
    }
    /* feed-forward (h = LN3 x2) */
    float *dgg = fwd_alloc(f, R * 4 * C), *dff = fwd_alloc(f, R * 8 * C), *tmp = fwd_alloc(f, n);
    linear_backward(f, dgg, dx, gg, &b->ff2, GP(g, ff2), (int)R);
    be->ops->geglu_backward(be, dff, dgg, ff, (int)R, 4 * C);
    linear_backward(f, dh, dff, h, &b->ff1, GP(g, ff1), (int)R);
    be->ops->layer_norm_backward(be, tmp, GF(g, ln3.w), GF(g, ln3.b), dh, x2, b->ln3.w, (int)R, C, 1e-5f);
    be->ops->axpby(be, dx, 1.0f, dx, 1.0f, tmp, (long long)n);                 /* dx2 */
    /* cross-attention (h = LN2 x1) */
    if (f->keep) h = keep_pop(f);
    else be->ops->layer_norm(be, h, x1, b->ln2.w, b->ln2.b, (int)R, C, 1e-5f);
    be->ops->zero(be, dh, n * sizeof(float));
    attention_backward_add(f, dh, dctx, dx, h, ctx, &b->attn2, GP(g, attn2), N, L, Lk, 0);
    if (f->keep && !(x1 = keep_pop(f))) { arena_reset(f->ar, m); return; }
    be->ops->layer_norm_backward(be, tmp, GF(g, ln2.w), GF(g, ln2.b), dh, x1, b->ln2.w, (int)R, C, 1e-5f);
    be->ops->axpby(be, dx, 1.0f, dx, 1.0f, tmp, (long long)n);                 /* dx1 */
    /* self-attention: q, k, v all from h = LN1 x0, so its gradient collects all three */
    if (f->keep) h = keep_pop(f);
    else be->ops->layer_norm(be, h, x0, b->ln1.w, b->ln1.b, (int)R, C, 1e-5f);
    be->ops->zero(be, dh, n * sizeof(float));
    attention_backward_add(f, dh, dh, dx, h, h, &b->attn1, GP(g, attn1), N, L, L, 0);
    if (f->keep && !(x0 = keep_pop(f))) { arena_reset(f->ar, m); return; }
    be->ops->layer_norm_backward(be, tmp, GF(g, ln1.w), GF(g, ln1.b), dh, x0, b->ln1.w, (int)R, C, 1e-5f);
    be->ops->axpby(be, dx, 1.0f, dx, 1.0f, tmp, (long long)n);                 /* dx0 */
    arena_reset(f->ar, m);
}

void transformer2d_backward(struct fwd *f, float *dx, float *dctx, const float *dout, const float *x,
                            const float *ctx, const struct transformer2d *tr, struct transformer2d *g,
                            int N, int H, int W, int Lk, int groups) {
    struct backend *be = f->be;
    uint64_t m = arena_mark(f->ar);
    int C = tr->C, HW = H * W, d;
    size_t n = (size_t)N * C * HW;
    /* the block inputs u[0..depth] and proj_in's input tin: kept or recomputed */
    float *gn = fwd_alloc(f, n), *t = fwd_alloc(f, n), *tin = NULL, *u[TRANSFORMER_MAX_DEPTH + 1] = { 0 };
    if (f->keep) {
        u[tr->depth] = keep_pop(f);     /* the blocks pop their own inputs */
    } else {
        for (d = 0; d <= tr->depth; d++) u[d] = fwd_alloc(f, n);
        be->ops->group_norm(be, gn, x, tr->gn.w, tr->gn.b, N, C, HW, groups, 1e-6f, 0);
        be->ops->transpose(be, t, gn, N, C, HW);
        linear_forward(f, u[0], t, &tr->proj_in, N * HW, HW);
        for (d = 0; d < tr->depth; d++) {
            be->ops->copy(be, u[d + 1], u[d], n * sizeof(float));
            tblock_forward(f, u[d + 1], ctx, &tr->blocks[d], N, HW, Lk, C);
        }
    }
    if (!u[tr->depth]) { arena_reset(f->ar, m); return; }
    /* back: out = x + transpose(proj_out(u[depth])) */
    float *du = fwd_alloc(f, n);
    be->ops->transpose(be, t, dout, N, C, HW);                 /* NCHW -> [N, HW, C] */
    linear_backward(f, du, t, u[tr->depth], &tr->proj_out, GP(g, proj_out), N * HW);
    for (d = tr->depth - 1; d >= 0; d--)
        tblock_backward(f, du, dctx, u[d], ctx, &tr->blocks[d], g ? &g->blocks[d] : NULL, N, HW, Lk, C);
    if (f->keep) {
        if (!(tin = keep_pop(f))) { arena_reset(f->ar, m); return; }
    } else {
        be->ops->transpose(be, t, gn, N, C, HW);               /* proj_in's input again */
        tin = t;
    }
    linear_backward(f, gn, du, tin, &tr->proj_in, GP(g, proj_in), N * HW);
    be->ops->transpose(be, t, gn, N, HW, C);                   /* d(GN output), NCHW */
    be->ops->group_norm_backward(be, dx, GF(g, gn.w), GF(g, gn.b), t, x, tr->gn.w, tr->gn.b, N, C, HW,
                                 groups, 1e-6f, 0);
    be->ops->axpby(be, dx, 1.0f, dx, 1.0f, dout, (long long)n);   /* the residual */
    arena_reset(f->ar, m);
}
