/* layers.h — the building blocks shared by CLIP, the UNet and the VAE: linear, conv,
 * norms, the ResNet block, multi-head attention, the transformer block and
 * Transformer2D.  Each block has a declare function (adds its parameters to the weight
 * table under a name prefix) and a forward function.
 *
 * Forward functions write their result into a caller-provided buffer and take
 * temporaries from the activation arena, releasing them before returning (stack
 * discipline), so a whole UNet pass peaks at the live skips plus one block's scratch.
 * Allocation failures are recorded in the backend's sticky error (see backend.h). */
#ifndef SD_LAYERS_H
#define SD_LAYERS_H

#include "../backend/backend.h"
#include "../io/weights.h"

/* Forward context: the backend, the activation arena and, when training keeps every
 * activation, the stack that remembers them (else NULL).
 *
 * Keep-all mode (keep != NULL): resnet_forward, attention_forward_add, tblock_forward and
 * transformer2d_forward leave the intermediates their backward needs on the arena (not
 * released) and push them; the matching backward pops them instead of recomputing them
 * from the block input.  Backward walks the blocks in reverse order of the forward, so a
 * stack is all the bookkeeping needed.  Costs memory (about 20 activations per
 * transformer block), saves one forward's worth of compute per training step. */
#define KEEP_MAX 8192
struct keep_stack { int n; float *p[KEEP_MAX]; };
struct lora_active;
struct fwd {
    struct backend *be;
    struct arena *ar;
    struct keep_stack *keep;
    /* Run-time LoRA adapters (model/lora_rt.h) for the UNet pass under way, or NULL (the
     * cost of a pass without adapters: one pointer test per linear and conv).  Rows
     * index the UNet's weight table, so it is set only around UNet passes. */
    const struct lora_active *lora;
    /* Optional (NULL: never): polled by fwd_poll between blocks; non-zero cancels the pass. */
    int (*cancelled)(void *ud);
    void *cancel_ud;
};
float *fwd_alloc(struct fwd *f, size_t nfloats);
/* Between blocks (resnet_forward and tblock_forward begin with it): when f->cancelled
 * says so, the backend's sticky error becomes SD_ERR_CANCELLED, so the rest of the pass
 * is skipped op by op and its caller sees the status at its next backend_status(). */
void fwd_poll(struct fwd *f);
/* Push / pop one kept activation (overflow and underflow are sticky backend errors). */
void keep_push(struct fwd *f, float *p);
float *keep_pop(struct fwd *f);

/* w holds wdt elements (F32 unless the model keeps its weights in F16/BF16: io/weights.h,
 * wt_lowp); only F32 layers train.  b is always fp32.  row: w's index in the weight table
 * it was declared in (how run-time LoRA adapters find their layer). */
struct linear { float *w, *b; int in, out; sd_dtype wdt; int row; };   /* w [out,in], b [out] or NULL */
struct conv { float *w, *b; int cin, cout, k; sd_dtype wdt; int row; }; /* w [cout,cin,k,k] */
struct norm { float *w, *b; int C; };

void linear_declare(struct weight_table *t, struct linear *l, int in, int out, int bias, const char *prefix);
void conv_declare(struct weight_table *t, struct conv *c, int cin, int cout, int k, const char *prefix);
void norm_declare(struct weight_table *t, struct norm *n, int C, const char *prefix);

/* R rows in samples of S rows each (S divides R): the CPU backend computes a sample's rows
 * the same way whatever R is, so batching never changes an image (backend.h). */
void linear_forward(struct fwd *f, float *out, const float *inp, const struct linear *l, int R, int S);
/* Same-size conv (pad k/2), stride 1. */
void conv_forward(struct fwd *f, float *out, const float *inp, const struct conv *c, int N, int H, int W);
/* Pad k/2, stride s: out [N, cout, (H + 2·(k/2) - k)/s + 1, likewise W] (the UNet's
 * downsamplers). */
void conv_forward_strided(struct fwd *f, float *out, const float *inp, const struct conv *c, int N, int H, int W,
                          int s);

/* ResnetBlock2D: out = shortcut(x) + conv2(SiLU(GN2(conv1(SiLU(GN1(x))) + temb_proj))). */
struct resnet {
    struct norm norm1, norm2;
    struct conv conv1, conv2, shortcut;   /* shortcut.w NULL when cin == cout */
    struct linear temb;                   /* temb.w NULL for VAE resnets */
    int cin, cout, groups;
    float eps;
};
void resnet_declare(struct weight_table *t, struct resnet *r, int cin, int cout, int temb_dim,
                    int groups, float eps, const char *prefix);
/* temb_act: SiLU(emb) [N, temb_dim] or NULL.  out [N,cout,H,W] must not alias x. */
void resnet_forward(struct fwd *f, float *out, const float *x, const float *temb_act,
                    const struct resnet *r, int N, int H, int W);

/* Multi-head attention projections: q from x (dim C), k/v from ctx (dim Cctx). */
struct attention {
    struct linear q, k, v, out;
    int heads, C;
};
void attention_declare(struct weight_table *t, struct attention *a, int C, int Cctx, int heads,
                       int qkv_bias, const char *prefix, const char *const names[4]);
/* x_out += out_proj(MHA(q(x), k(ctx), v(ctx))).  x [N*L, C], ctx [N*Lk, Cctx]. */
void attention_forward_add(struct fwd *f, float *x_out, const float *x, const float *ctx,
                           const struct attention *a, int N, int L, int Lk, int causal);

/* BasicTransformerBlock: self-attn, cross-attn, GEGLU feed-forward, pre-LN. */
struct tblock {
    struct norm ln1, ln2, ln3;
    struct attention attn1, attn2;
    struct linear ff1, ff2;               /* C -> 8C (GEGLU), 4C -> C */
};
/* Transformer2D: GN, proj_in, depth blocks, proj_out, residual. */
#define TRANSFORMER_MAX_DEPTH 64
struct transformer2d {
    struct norm gn;
    struct linear proj_in, proj_out;
    struct tblock *blocks;
    int depth, C;
};
void transformer2d_declare(struct weight_table *t, struct transformer2d *tr, int C, int Cctx,
                           int heads, int depth, int groups, const char *prefix);
void transformer2d_free(struct transformer2d *tr);
/* One BasicTransformerBlock in place on x [N*L, C]. */
void tblock_forward(struct fwd *f, float *x, const float *ctx, const struct tblock *b, int N, int L, int Lk, int C);
/* In place on x [N,C,H,W]; ctx [N, Lk, Cctx]. */
void transformer2d_forward(struct fwd *f, float *x, const float *ctx, const struct transformer2d *tr,
                           int N, int H, int W, int Lk, int groups);

/* ---- backward (layers_backward.c) ----
 * Contract (as in backend.h): input gradients `=` unless marked `+=`; parameter
 * gradients `+=` into the matching struct of g (same layer built on a gradient arena);
 * g == NULL: input gradients only.  Each block recomputes its internals from its saved
 * input, so only block inputs must be kept. */
void linear_backward(struct fwd *f, float *dinp, const float *dout, const float *inp,
                     const struct linear *l, struct linear *g, int R);
void conv_backward(struct fwd *f, float *dinp, const float *dout, const float *inp,
                   const struct conv *c, struct conv *g, int N, int H, int W);
/* dx =; dtemb_act += (may be NULL when the resnet has no time embedding). */
void resnet_backward(struct fwd *f, float *dx, float *dtemb_act, const float *dout, const float *x,
                     const float *temb_act, const struct resnet *r, struct resnet *g, int N, int H, int W);
/* Backward of x_out += attention(x, ctx): dx += and dctx += (may alias for self-attention). */
void attention_backward_add(struct fwd *f, float *dx, float *dctx, const float *dy, const float *x,
                            const float *ctx, const struct attention *a, struct attention *g,
                            int N, int L, int Lk, int causal);
/* x: the transformer's input (before its in-place forward).  dx =; dctx +=. */
void transformer2d_backward(struct fwd *f, float *dx, float *dctx, const float *dout, const float *x,
                            const float *ctx, const struct transformer2d *tr, struct transformer2d *g,
                            int N, int H, int W, int Lk, int groups);

#endif
