/* layers.c — see layers.h.  Names follow diffusers (docs/sdxl.md §5.1). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layers.h"
#include "lora_rt.h"

float *fwd_alloc(struct fwd *f, size_t n) {
    float *p = arena_floats(f->ar, n);
    if (!p) backend_set_error(f->be, SD_ERR_NOMEM, sd_last_error());
    return p;
}

void fwd_poll(struct fwd *f) {
    if (f->cancelled && !f->be->err && f->cancelled(f->cancel_ud))
        backend_set_error(f->be, SD_ERR_CANCELLED, "cancelled in the middle of a pass");
}

void keep_push(struct fwd *f, float *p) {
    if (f->keep->n == KEEP_MAX) {
        backend_set_error(f->be, SD_ERR_UNSUPPORTED, "too many kept activations for one tape: "
                          "train with block recomputation instead");
        return;
    }
    f->keep->p[f->keep->n++] = p;
}

float *keep_pop(struct fwd *f) {
    if (f->keep->n == 0) {
        backend_set_error(f->be, SD_ERR_INVALID, "kept activations popped past the bottom (a backward "
                          "that does not match its forward)");
        return NULL;
    }
    return f->keep->p[--f->keep->n];
}

/* Initial std of fresh weights for `sdxld init`: 1/sqrt(fan_in), like a default torch
 * init in spirit; norms start at (1, 0), biases at 0. */
void linear_declare(struct weight_table *t, struct linear *l, int in, int out, int bias, const char *prefix) {
    l->in = in;
    l->out = out;
    l->b = NULL;
    l->row = t->n;
    wt_add(t, &l->w, WT_INIT_NORMAL, 1.0f / sqrtf((float)in), 2, (int64_t[]){ out, in }, "%s.weight", prefix);
    wt_lowp(t, &l->wdt);
    if (bias) wt_add(t, &l->b, WT_INIT_ZERO, 0, 1, (int64_t[]){ out }, "%s.bias", prefix);
}

void conv_declare(struct weight_table *t, struct conv *c, int cin, int cout, int k, const char *prefix) {
    c->cin = cin;
    c->cout = cout;
    c->k = k;
    c->row = t->n;
    wt_add(t, &c->w, WT_INIT_NORMAL, 1.0f / sqrtf((float)cin * k * k), 4, (int64_t[]){ cout, cin, k, k },
           "%s.weight", prefix);
    wt_lowp(t, &c->wdt);
    wt_add(t, &c->b, WT_INIT_ZERO, 0, 1, (int64_t[]){ cout }, "%s.bias", prefix);
}

void norm_declare(struct weight_table *t, struct norm *n, int C, const char *prefix) {
    n->C = C;
    wt_add(t, &n->w, WT_INIT_ONE, 0, 1, (int64_t[]){ C }, "%s.weight", prefix);
    wt_add(t, &n->b, WT_INIT_ZERO, 0, 1, (int64_t[]){ C }, "%s.bias", prefix);
}

void linear_forward(struct fwd *f, float *out, const float *inp, const struct linear *l, int R, int S) {
    f->be->ops->linear(f->be, out, inp, l->w, l->wdt, l->b, R, S, l->in, l->out);
    if (f->lora) lora_linear_add(f, out, inp, l->row, R, S, l->in, l->out);
}

void conv_forward_strided(struct fwd *f, float *out, const float *inp, const struct conv *c, int N, int H, int W,
                          int s) {
    int p = c->k / 2;
    f->be->ops->conv2d(f->be, out, inp, c->w, c->wdt, c->b, N, c->cin, H, W, c->cout, c->k, c->k, s, p, p, p, p);
    if (f->lora) lora_conv_add(f, out, inp, c->row, N, c->cin, H, W, c->cout, c->k, s);
}

void conv_forward(struct fwd *f, float *out, const float *inp, const struct conv *c, int N, int H, int W) {
    conv_forward_strided(f, out, inp, c, N, H, W, 1);
}

/* ---- ResNet ---- */

void resnet_declare(struct weight_table *t, struct resnet *r, int cin, int cout, int temb_dim,
                    int groups, float eps, const char *prefix) {
    char n[WT_NAME_MAX];
    r->cin = cin;
    r->cout = cout;
    r->groups = groups;
    r->eps = eps;
    snprintf(n, sizeof n, "%s.norm1", prefix); norm_declare(t, &r->norm1, cin, n);
    snprintf(n, sizeof n, "%s.conv1", prefix); conv_declare(t, &r->conv1, cin, cout, 3, n);
    memset(&r->temb, 0, sizeof r->temb);
    if (temb_dim) { snprintf(n, sizeof n, "%s.time_emb_proj", prefix); linear_declare(t, &r->temb, temb_dim, cout, 1, n); }
    snprintf(n, sizeof n, "%s.norm2", prefix); norm_declare(t, &r->norm2, cout, n);
    snprintf(n, sizeof n, "%s.conv2", prefix); conv_declare(t, &r->conv2, cout, cout, 3, n);
    memset(&r->shortcut, 0, sizeof r->shortcut);
    if (cin != cout) { snprintf(n, sizeof n, "%s.conv_shortcut", prefix); conv_declare(t, &r->shortcut, cin, cout, 1, n); }
}

void resnet_forward(struct fwd *f, float *out, const float *x, const float *temb_act,
                    const struct resnet *r, int N, int H, int W) {
    struct backend *be = f->be;
    fwd_poll(f);
    uint64_t m = arena_mark(f->ar);
    int HW = H * W;
    float *h = fwd_alloc(f, (size_t)N * r->cin * HW);
    float *h2 = fwd_alloc(f, (size_t)N * r->cout * HW);
    float *g2 = f->keep ? fwd_alloc(f, (size_t)N * r->cout * HW) : h2;   /* kept: GN2's input too */
    be->ops->group_norm(be, h, x, r->norm1.w, r->norm1.b, N, r->cin, HW, r->groups, r->eps, 1);
    conv_forward(f, h2, h, &r->conv1, N, H, W);
    if (r->temb.w && temb_act) {
        float *tp = fwd_alloc(f, (size_t)N * r->cout);
        linear_forward(f, tp, temb_act, &r->temb, N, 1);
        be->ops->add_channel(be, h2, tp, N, r->cout, HW);
    }
    be->ops->group_norm(be, g2, h2, r->norm2.w, r->norm2.b, N, r->cout, HW, r->groups, r->eps, 1);
    conv_forward(f, out, g2, &r->conv2, N, H, W);
    if (r->shortcut.w) {
        float *s = fwd_alloc(f, (size_t)N * r->cout * HW);
        conv_forward(f, s, x, &r->shortcut, N, H, W);
        be->ops->axpby(be, out, 1.0f, out, 1.0f, s, (long long)N * r->cout * HW);
    } else {
        be->ops->axpby(be, out, 1.0f, out, 1.0f, x, (long long)N * r->cout * HW);
    }
    if (f->keep) { keep_push(f, h); keep_push(f, h2); keep_push(f, g2); }
    else arena_reset(f->ar, m);
}

/* ---- attention ---- */

void attention_declare(struct weight_table *t, struct attention *a, int C, int Cctx, int heads,
                       int qkv_bias, const char *prefix, const char *const names[4]) {
    char n[WT_NAME_MAX];
    a->heads = heads;
    a->C = C;
    snprintf(n, sizeof n, "%s.%s", prefix, names[0]); linear_declare(t, &a->q, C, C, qkv_bias, n);
    snprintf(n, sizeof n, "%s.%s", prefix, names[1]); linear_declare(t, &a->k, Cctx, C, qkv_bias, n);
    snprintf(n, sizeof n, "%s.%s", prefix, names[2]); linear_declare(t, &a->v, Cctx, C, qkv_bias, n);
    snprintf(n, sizeof n, "%s.%s", prefix, names[3]); linear_declare(t, &a->out, C, C, 1, n);
}

void attention_forward_add(struct fwd *f, float *x_out, const float *x, const float *ctx,
                           const struct attention *a, int N, int L, int Lk, int causal) {
    struct backend *be = f->be;
    uint64_t m = arena_mark(f->ar);
    int C = a->C, D = C / a->heads;
    float *q = fwd_alloc(f, (size_t)N * L * C), *k = fwd_alloc(f, (size_t)N * Lk * C);
    float *v = fwd_alloc(f, (size_t)N * Lk * C), *o = fwd_alloc(f, (size_t)N * L * C);
    linear_forward(f, q, x, &a->q, N * L, L);
    linear_forward(f, k, ctx, &a->k, N * Lk, Lk);
    linear_forward(f, v, ctx, &a->v, N * Lk, Lk);
    be->ops->attention(be, o, q, k, v, N, a->heads, L, Lk, D, C, C, C, C, 1.0f / sqrtf((float)D), causal);
    float *y = f->keep ? fwd_alloc(f, (size_t)N * L * C) : q;   /* else q is free again: reuse it */
    linear_forward(f, y, o, &a->out, N * L, L);
    be->ops->axpby(be, x_out, 1.0f, x_out, 1.0f, y, (long long)N * L * C);
    if (f->keep) { keep_push(f, q); keep_push(f, k); keep_push(f, v); keep_push(f, o); }
    else arena_reset(f->ar, m);
}

/* ---- Transformer2D ---- */

static const char *const unet_attn_names[4] = { "to_q", "to_k", "to_v", "to_out.0" };

void transformer2d_declare(struct weight_table *t, struct transformer2d *tr, int C, int Cctx,
                           int heads, int depth, int groups, const char *prefix) {
    char n[WT_NAME_MAX];
    (void)groups;
    tr->C = C;
    tr->depth = depth;
    tr->blocks = sd_calloc(depth, sizeof *tr->blocks);
    if (!tr->blocks) { t->err = SD_ERR_NOMEM; return; }
    snprintf(n, sizeof n, "%s.norm", prefix); norm_declare(t, &tr->gn, C, n);
    snprintf(n, sizeof n, "%s.proj_in", prefix); linear_declare(t, &tr->proj_in, C, C, 1, n);
    for (int d = 0; d < depth; d++) {
        struct tblock *b = &tr->blocks[d];
        snprintf(n, sizeof n, "%s.transformer_blocks.%d.norm1", prefix, d); norm_declare(t, &b->ln1, C, n);
        snprintf(n, sizeof n, "%s.transformer_blocks.%d.attn1", prefix, d);
        attention_declare(t, &b->attn1, C, C, heads, 0, n, unet_attn_names);
        snprintf(n, sizeof n, "%s.transformer_blocks.%d.norm2", prefix, d); norm_declare(t, &b->ln2, C, n);
        snprintf(n, sizeof n, "%s.transformer_blocks.%d.attn2", prefix, d);
        attention_declare(t, &b->attn2, C, Cctx, heads, 0, n, unet_attn_names);
        snprintf(n, sizeof n, "%s.transformer_blocks.%d.norm3", prefix, d); norm_declare(t, &b->ln3, C, n);
        snprintf(n, sizeof n, "%s.transformer_blocks.%d.ff.net.0.proj", prefix, d);
        linear_declare(t, &b->ff1, C, 8 * C, 1, n);
        snprintf(n, sizeof n, "%s.transformer_blocks.%d.ff.net.2", prefix, d);
        linear_declare(t, &b->ff2, 4 * C, C, 1, n);
    }
    snprintf(n, sizeof n, "%s.proj_out", prefix); linear_declare(t, &tr->proj_out, C, C, 1, n);
}

void transformer2d_free(struct transformer2d *tr) {
    sd_free(tr->blocks);
    tr->blocks = NULL;
}

/* A copy of x on the arena, pushed (keep-all mode only). */
static void keep_copy(struct fwd *f, const float *x, size_t n) {
    float *c = fwd_alloc(f, n);
    if (c) f->be->ops->copy(f->be, c, x, n * sizeof(float));
    keep_push(f, c);
}

/* Kept (in push order): x0, attn1's q k v o, LN1 x0, x1, attn2's, LN2 x1, x2, LN3 x2,
 * ff1 out, GEGLU out. */
void tblock_forward(struct fwd *f, float *x, const float *ctx, const struct tblock *b,
                           int N, int L, int Lk, int C) {
    struct backend *be = f->be;
    fwd_poll(f);
    uint64_t m = arena_mark(f->ar);
    size_t R = (size_t)N * L, n = R * C;
    int k = f->keep != NULL;
    if (k) keep_copy(f, x, n);
    float *h = fwd_alloc(f, n);
    be->ops->layer_norm(be, h, x, b->ln1.w, b->ln1.b, (int)R, C, 1e-5f);
    attention_forward_add(f, x, h, h, &b->attn1, N, L, L, 0);
    if (k) { keep_push(f, h); keep_copy(f, x, n); h = fwd_alloc(f, n); }
    be->ops->layer_norm(be, h, x, b->ln2.w, b->ln2.b, (int)R, C, 1e-5f);
    attention_forward_add(f, x, h, ctx, &b->attn2, N, L, Lk, 0);
    if (k) { keep_push(f, h); keep_copy(f, x, n); h = fwd_alloc(f, n); }
    be->ops->layer_norm(be, h, x, b->ln3.w, b->ln3.b, (int)R, C, 1e-5f);
    float *ff = fwd_alloc(f, R * 8 * C), *g = fwd_alloc(f, R * 4 * C), *y = k ? fwd_alloc(f, n) : h;
    linear_forward(f, ff, h, &b->ff1, (int)R, L);
    be->ops->geglu(be, g, ff, (int)R, 4 * C);
    linear_forward(f, y, g, &b->ff2, (int)R, L);
    be->ops->axpby(be, x, 1.0f, x, 1.0f, y, (long long)n);
    if (k) { keep_push(f, h); keep_push(f, ff); keep_push(f, g); }
    else arena_reset(f->ar, m);
}

void transformer2d_forward(struct fwd *f, float *x, const float *ctx, const struct transformer2d *tr,
                           int N, int H, int W, int Lk, int groups) {
    struct backend *be = f->be;
    uint64_t m = arena_mark(f->ar);
    int C = tr->C, HW = H * W;
    size_t n = (size_t)N * C * HW;
    float *h = fwd_alloc(f, n), *t = fwd_alloc(f, n), *u = fwd_alloc(f, n);
    be->ops->group_norm(be, h, x, tr->gn.w, tr->gn.b, N, C, HW, groups, 1e-6f, 0);
    be->ops->transpose(be, t, h, N, C, HW);            /* NCHW -> [N, HW, C] */
    linear_forward(f, u, t, &tr->proj_in, N * HW, HW);
    if (f->keep) { keep_push(f, t); t = fwd_alloc(f, n); }   /* kept: proj_in's input, then ... */
    for (int d = 0; d < tr->depth; d++) tblock_forward(f, u, ctx, &tr->blocks[d], N, HW, Lk, C);
    linear_forward(f, t, u, &tr->proj_out, N * HW, HW);
    be->ops->transpose(be, h, t, N, HW, C);            /* back to NCHW */
    be->ops->axpby(be, x, 1.0f, x, 1.0f, h, (long long)n);
    if (f->keep) keep_push(f, u);                      /* ... the blocks', then proj_out's input */
    else arena_reset(f->ar, m);
}
