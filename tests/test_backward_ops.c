/* test_backward_ops.c — every CPU backward op against central finite differences of its
 * forward, plus the gradient contract (= into input gradients, += into parameter
 * gradients, NULL skips), dot against a double loop and AdamW against a double-precision
 * reimplementation.
 *
 * For each op the loss is L = Σ out ⊙ Rw with random Rw, summed in double, so the
 * analytic gradients come from calling the backward with dout = Rw.  Each check perturbs
 * every element (or an evenly spread sample of 256) by ±h and compares
 * (L(x+h) − L(x−h)) / 2h with the analytic value by max|a − fd| / max|fd|.  The checker
 * checks itself: the same gradient scaled by 1.1 must fail the bound, so no bound here is
 * loose enough to let a 10% error (a missing term, a wrong scale) through. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "backend/backend.h"
#include "core/rng.h"

static struct sd_rng R;
static struct backend *be;

static float *rnd(size_t n, float sd) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    sd_rng_normal(&R, p, n);
    for (size_t i = 0; i < n; i++) p[i] *= sd;
    return p;
}
static float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }
static float *filled(size_t n, float v) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}
static float *dup(const float *x, size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    memcpy(p, x, sizeof(float) * n);
    return p;
}

static double dsum(const float *a, const float *b, long long n) {
    double s = 0;
    for (long long i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* ---- the checker ---- */

#define FD_SAMPLE 256

typedef double (*loss_fn)(void *ctx);

/* Compare the analytic gradient g of loss f with respect to x[0..n) against central
 * differences; two TAP lines: the comparison, and that 1.1·g is rejected. */
static void check_grad(const char *op, const char *what, loss_fn f, void *ctx, float *x, long long n,
                       const float *g, float h, double bound) {
    int S = n < FD_SAMPLE ? (int)n : FD_SAMPLE;
    float *fd = malloc(sizeof(float) * S), *an = malloc(sizeof(float) * S), *bad = malloc(sizeof(float) * S);
    for (int s = 0; s < S; s++) {
        long long lo = n * s / S, hi = n * (s + 1) / S;
        long long i = lo + (hi - lo > 1 ? (long long)(sd_rng_u32(&R) % (uint32_t)(hi - lo)) : 0);
        float xi = x[i], xp = xi + h, xm = xi - h;
        x[i] = xp;
        double lp = f(ctx);
        x[i] = xm;
        double lm = f(ctx);
        x[i] = xi;
        fd[s] = (float)((lp - lm) / ((double)xp - xm));
        an[s] = g[i];
        bad[s] = 1.1f * g[i];
    }
    double e = rel_err(an, fd, S), eb = rel_err(bad, fd, S);
    ok(e < bound, "%s: d%s vs central differences: %.2g < %.0e (%d of %lld)", op, what, e, bound, S, n);
    ok(eb >= bound, "%s: checker rejects 1.1 x d%s: %.2g", op, what, eb);
    free(fd); free(an); free(bad);
}

static int all_nan_free(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) if (isnan(x[i])) return 0;
    return 1;
}

/* ---- linear ---- */

struct lin { float *x, *w, *b, *out, *rw; int R, I, O; };

static double lin_loss(void *p) {
    struct lin *c = p;
    be->ops->linear(be, c->out, c->x, c->w, c->b, c->R, c->I, c->O);
    return dsum(c->out, c->rw, (long long)c->R * c->O);
}

static void test_linear(int bias) {
    struct lin c = { 0 };
    c.R = 5; c.I = 6; c.O = 4;
    c.x = rnd(c.R * c.I, 1); c.w = rnd(c.O * c.I, 1); c.b = bias ? rnd(c.O, 1) : NULL;
    c.out = zeros(c.R * c.O); c.rw = rnd(c.R * c.O, 1);
    float *dx = filled(c.R * c.I, NAN), *dw = zeros(c.O * c.I), *db = zeros(c.O);
    be->ops->linear_backward(be, dx, dw, bias ? db : NULL, c.rw, c.x, c.w, c.R, c.I, c.O);
    const char *name = bias ? "linear+bias" : "linear";
    check_grad(name, "inp", lin_loss, &c, c.x, c.R * c.I, dx, 1e-2f, 1e-3);
    check_grad(name, "w", lin_loss, &c, c.w, c.O * c.I, dw, 1e-2f, 1e-3);
    if (bias) check_grad(name, "b", lin_loss, &c, c.b, c.O, db, 1e-2f, 1e-3);

    /* contract: a second call doubles dw, db; dinp is rewritten; NULLs skip */
    float *dx2 = filled(c.R * c.I, NAN), *dw2 = dup(dw, c.O * c.I), *db2 = dup(db, c.O);
    be->ops->linear_backward(be, dx2, dw2, bias ? db2 : NULL, c.rw, c.x, c.w, c.R, c.I, c.O);
    for (int i = 0; i < c.O * c.I; i++) dw[i] *= 2;
    for (int i = 0; i < c.O; i++) db[i] *= 2;
    ok(rel_err(dx2, dx, c.R * c.I) == 0 && rel_err(dw2, dw, c.O * c.I) < 1e-6 &&
       (!bias || rel_err(db2, db, c.O) < 1e-6), "%s: second call: dinp =, dw/db +=", name);
    float *dx3 = filled(c.R * c.I, NAN), *dw3 = zeros(c.O * c.I);
    be->ops->linear_backward(be, dx3, NULL, NULL, c.rw, c.x, c.w, c.R, c.I, c.O);
    be->ops->linear_backward(be, NULL, dw3, NULL, c.rw, c.x, c.w, c.R, c.I, c.O);
    for (int i = 0; i < c.O * c.I; i++) dw[i] *= 0.5f;
    ok(rel_err(dx3, dx, c.R * c.I) == 0 && rel_err(dw3, dw, c.O * c.I) < 1e-6,
       "%s: NULL dw/db still gives dinp; NULL dinp still gives dw", name);
    free(c.x); free(c.w); free(c.b); free(c.out); free(c.rw);
    free(dx); free(dw); free(db); free(dx2); free(dw2); free(db2); free(dx3); free(dw3);
}

/* ---- conv2d ---- */

struct conv {
    float *x, *w, *b, *out, *rw;
    int N, C, H, W, K, kh, kw, s, pt, pl, pb, pr, Ho, Wo;
};

static double conv_loss(void *p) {
    struct conv *c = p;
    be->ops->conv2d(be, c->out, c->x, c->w, c->b, c->N, c->C, c->H, c->W, c->K, c->kh, c->kw, c->s,
                    c->pt, c->pl, c->pb, c->pr);
    return dsum(c->out, c->rw, (long long)c->N * c->K * c->Ho * c->Wo);
}

static void test_conv(const char *name, int N, int C, int H, int W, int K, int kh, int kw, int s,
                      int pt, int pl, int pb, int pr, int bias, size_t tile) {
    struct conv c = { 0, 0, 0, 0, 0, N, C, H, W, K, kh, kw, s, pt, pl, pb, pr,
                      (H + pt + pb - kh) / s + 1, (W + pl + pr - kw) / s + 1 };
    size_t nx = (size_t)N * C * H * W, nw = (size_t)K * C * kh * kw, no = (size_t)N * K * c.Ho * c.Wo;
    c.x = rnd(nx, 1); c.w = rnd(nw, 1); c.b = bias ? rnd(K, 1) : NULL;
    c.out = zeros(no); c.rw = rnd(no, 1);
    backend_cpu_set_tile(be, tile);
    float *dx = filled(nx, NAN), *dw = zeros(nw), *db = zeros(K);
    be->ops->conv2d_backward(be, dx, dw, bias ? db : NULL, c.rw, c.x, c.w, N, C, H, W, K, kh, kw, s,
                             pt, pl, pb, pr);
    check_grad(name, "inp", conv_loss, &c, c.x, nx, dx, 1e-2f, 1e-3);
    check_grad(name, "w", conv_loss, &c, c.w, nw, dw, 1e-2f, 1e-3);
    if (bias) check_grad(name, "b", conv_loss, &c, c.b, K, db, 1e-2f, 1e-3);

    float *dx2 = filled(nx, NAN), *dw2 = dup(dw, nw), *db2 = dup(db, K);
    be->ops->conv2d_backward(be, dx2, dw2, bias ? db2 : NULL, c.rw, c.x, c.w, N, C, H, W, K, kh, kw, s,
                             pt, pl, pb, pr);
    for (size_t i = 0; i < nw; i++) dw[i] *= 2;
    for (int i = 0; i < K; i++) db[i] *= 2;
    ok(rel_err(dx2, dx, nx) == 0 && rel_err(dw2, dw, nw) < 1e-6 && (!bias || rel_err(db2, db, K) < 1e-6),
       "%s: second call: dinp =, dw/db +=", name);
    float *dx3 = filled(nx, NAN), *dw3 = zeros(nw), *db3 = zeros(K);
    be->ops->conv2d_backward(be, dx3, NULL, NULL, c.rw, c.x, c.w, N, C, H, W, K, kh, kw, s, pt, pl, pb, pr);
    be->ops->conv2d_backward(be, NULL, dw3, db3, c.rw, c.x, c.w, N, C, H, W, K, kh, kw, s, pt, pl, pb, pr);
    for (size_t i = 0; i < nw; i++) dw[i] *= 0.5f;
    for (int i = 0; i < K; i++) db[i] *= 0.5f;
    ok(rel_err(dx3, dx, nx) < 1e-6 && rel_err(dw3, dw, nw) < 1e-6 && (!bias || rel_err(db3, db, K) < 1e-6),
       "%s: NULL dw/db still gives dinp; NULL dinp still gives dw, db", name);
    backend_cpu_set_tile(be, 0);
    ok(backend_status(be) == SD_OK, "%s: no backend error", name);
    free(c.x); free(c.w); free(c.b); free(c.out); free(c.rw);
    free(dx); free(dw); free(db); free(dx2); free(dw2); free(db2); free(dx3); free(dw3); free(db3);
}

static void test_convs(void) {
    test_conv("conv 3x3 pad 1 +bias", 2, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 0);
    test_conv("conv 1x1 direct", 2, 5, 4, 3, 3, 1, 1, 1, 0, 0, 0, 0, 0, 0);
    test_conv("conv 1x1 direct +bias", 1, 4, 3, 3, 2, 1, 1, 1, 0, 0, 0, 0, 1, 0);
    test_conv("conv 3x3 stride 2 pad 1 +bias", 2, 3, 7, 7, 4, 3, 3, 2, 1, 1, 1, 1, 1, 0);
    test_conv("conv 3x3 stride 2 bottom/right pad", 2, 3, 8, 6, 3, 3, 3, 2, 0, 0, 1, 1, 1, 0);
    test_conv("conv 3x3 stride 2 no pad, odd size", 1, 2, 8, 7, 3, 3, 3, 2, 0, 0, 0, 0, 0, 0);
    test_conv("conv 2x3 asymmetric pad", 2, 3, 5, 6, 3, 2, 3, 1, 1, 0, 0, 2, 0, 0);
    test_conv("conv 1x1 stride 2", 1, 3, 6, 5, 2, 1, 1, 2, 0, 0, 0, 0, 1, 0);
    /* tiles: col + dcol share the bound, so 2·CK·3 floats is 3 columns per tile */
    test_conv("conv 3x3 pad 1, 3-column tiles", 2, 3, 6, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 2 * 27 * 3);
    test_conv("conv 3x3 stride 2, 1-column tiles", 1, 2, 7, 6, 3, 3, 3, 2, 1, 1, 1, 1, 1, 1);
}

/* ---- group norm ---- */

struct gn { float *x, *w, *b, *out, *rw; int N, C, HW, G, silu; };

static double gn_loss(void *p) {
    struct gn *c = p;
    be->ops->group_norm(be, c->out, c->x, c->w, c->b, c->N, c->C, c->HW, c->G, 1e-5f, c->silu);
    return dsum(c->out, c->rw, (long long)c->N * c->C * c->HW);
}

static void test_group_norm(int silu, int affine) {
    struct gn c = { 0 };
    c.N = 2; c.C = 6; c.HW = 5; c.G = 3; c.silu = silu;
    size_t nx = (size_t)c.N * c.C * c.HW;
    c.x = rnd(nx, 1);
    for (size_t i = 0; i < nx; i++) c.x[i] += 0.5f;   /* a mean to remove */
    c.w = affine ? rnd(c.C, 0.5f) : NULL;
    if (c.w) for (int i = 0; i < c.C; i++) c.w[i] += 1.0f;
    c.b = affine ? rnd(c.C, 0.5f) : NULL;
    c.out = zeros(nx); c.rw = rnd(nx, 1);
    char name[64];
    snprintf(name, sizeof name, "group_norm%s%s", silu ? "+silu" : "", affine ? "" : " (no affine)");
    float *dx = filled(nx, NAN), *dw = zeros(c.C), *db = zeros(c.C);
    be->ops->group_norm_backward(be, dx, affine ? dw : NULL, affine ? db : NULL, c.rw, c.x, c.w, c.b,
                                 c.N, c.C, c.HW, c.G, 1e-5f, silu);
    check_grad(name, "inp", gn_loss, &c, c.x, nx, dx, 1e-2f, 2e-3);
    if (affine) {
        check_grad(name, "w", gn_loss, &c, c.w, c.C, dw, 1e-2f, 2e-3);
        check_grad(name, "b", gn_loss, &c, c.b, c.C, db, 1e-2f, 2e-3);
        float *dx2 = filled(nx, NAN), *dw2 = dup(dw, c.C), *db2 = dup(db, c.C);
        be->ops->group_norm_backward(be, dx2, dw2, db2, c.rw, c.x, c.w, c.b, c.N, c.C, c.HW, c.G, 1e-5f, silu);
        float *dx3 = filled(nx, NAN);
        be->ops->group_norm_backward(be, dx3, NULL, NULL, c.rw, c.x, c.w, c.b, c.N, c.C, c.HW, c.G, 1e-5f, silu);
        for (int i = 0; i < c.C; i++) { dw[i] *= 2; db[i] *= 2; }
        ok(rel_err(dx2, dx, nx) == 0 && rel_err(dx3, dx, nx) == 0 && rel_err(dw2, dw, c.C) < 1e-6 &&
           rel_err(db2, db, c.C) < 1e-6, "%s: second call +=, NULL dw/db gives the same dinp", name);
        /* in place, as the forward allows */
        float *io = dup(c.rw, nx);
        be->ops->group_norm_backward(be, io, NULL, NULL, io, c.x, c.w, c.b, c.N, c.C, c.HW, c.G, 1e-5f, silu);
        ok(rel_err(io, dx, nx) == 0, "%s: dinp == dout in place", name);
        free(dx2); free(dw2); free(db2); free(dx3); free(io);
    }
    free(c.x); free(c.w); free(c.b); free(c.out); free(c.rw); free(dx); free(dw); free(db);
}

/* ---- layer norm ---- */

struct ln { float *x, *w, *b, *out, *rw; int R, C; };

static double ln_loss(void *p) {
    struct ln *c = p;
    be->ops->layer_norm(be, c->out, c->x, c->w, c->b, c->R, c->C, 1e-5f);
    return dsum(c->out, c->rw, (long long)c->R * c->C);
}

static void test_layer_norm(void) {
    struct ln c = { 0 };
    c.R = 4; c.C = 7;
    size_t nx = (size_t)c.R * c.C;
    c.x = rnd(nx, 1); c.w = rnd(c.C, 0.5f); c.b = rnd(c.C, 0.5f);
    for (int i = 0; i < c.C; i++) c.w[i] += 1.0f;
    c.out = zeros(nx); c.rw = rnd(nx, 1);
    float *dx = filled(nx, NAN), *dw = zeros(c.C), *db = zeros(c.C);
    be->ops->layer_norm_backward(be, dx, dw, db, c.rw, c.x, c.w, c.R, c.C, 1e-5f);
    check_grad("layer_norm", "inp", ln_loss, &c, c.x, nx, dx, 1e-2f, 2e-3);
    check_grad("layer_norm", "w", ln_loss, &c, c.w, c.C, dw, 1e-2f, 2e-3);
    check_grad("layer_norm", "b", ln_loss, &c, c.b, c.C, db, 1e-2f, 2e-3);
    float *dx2 = filled(nx, NAN), *dw2 = dup(dw, c.C), *db2 = dup(db, c.C), *dx3 = filled(nx, NAN);
    be->ops->layer_norm_backward(be, dx2, dw2, db2, c.rw, c.x, c.w, c.R, c.C, 1e-5f);
    be->ops->layer_norm_backward(be, dx3, NULL, NULL, c.rw, c.x, c.w, c.R, c.C, 1e-5f);
    for (int i = 0; i < c.C; i++) { dw[i] *= 2; db[i] *= 2; }
    ok(rel_err(dx2, dx, nx) == 0 && rel_err(dx3, dx, nx) == 0 && rel_err(dw2, dw, c.C) < 1e-6 &&
       rel_err(db2, db, c.C) < 1e-6, "layer_norm: second call +=, NULL dw/db gives the same dinp");
    float *io = dup(c.rw, nx), *dw4 = zeros(c.C), *db4 = zeros(c.C);
    be->ops->layer_norm_backward(be, io, dw4, db4, io, c.x, c.w, c.R, c.C, 1e-5f);
    for (int i = 0; i < c.C; i++) { dw[i] *= 0.5f; db[i] *= 0.5f; }
    ok(rel_err(io, dx, nx) == 0 && rel_err(dw4, dw, c.C) < 1e-6 && rel_err(db4, db, c.C) < 1e-6,
       "layer_norm: dinp == dout in place");
    free(c.x); free(c.w); free(c.b); free(c.out); free(c.rw);
    free(dx); free(dw); free(db); free(dx2); free(dw2); free(db2); free(dx3); free(io); free(dw4); free(db4);
}

/* ---- attention ---- */

struct att {
    float *q, *k, *v, *out, *rw;
    int N, H, Lq, Lk, D, ldq, ldk, ldv, ldo, causal; float scale;
};

static double att_loss(void *p) {
    struct att *c = p;
    be->ops->attention(be, c->out, c->q, c->k, c->v, c->N, c->H, c->Lq, c->Lk, c->D, c->ldq, c->ldk,
                       c->ldv, c->ldo, c->scale, c->causal);
    return dsum(c->out, c->rw, (long long)c->N * c->Lq * c->ldo);
}

/* fused: q, k, v are column blocks of one [N, L, 3·H·D + 1] buffer (Lq == Lk) and the
 * gradient goes to one such buffer, whose padding column must survive. */
static void test_attention(const char *name, int N, int H, int Lq, int Lk, int D, int causal, int fused,
                           int ldo_pad, size_t tile) {
    int HD = H * D;
    struct att c = { 0 };
    c.N = N; c.H = H; c.Lq = Lq; c.Lk = Lk; c.D = D; c.causal = causal;
    c.scale = 1.0f / sqrtf((float)D);
    c.ldo = HD + ldo_pad;
    float *qkv = NULL, *dqkv = NULL, *dq, *dk, *dv;
    size_t nq, nk, nv, nqkv = 0;
    if (fused) {
        c.ldq = c.ldk = c.ldv = 3 * HD + 1;
        nqkv = (size_t)N * Lq * c.ldq;
        qkv = rnd(nqkv, 1);
        c.q = qkv; c.k = qkv + HD; c.v = qkv + 2 * HD;
        nq = nk = nv = nqkv - 2 * HD;      /* views reach to the end of the buffer */
        dqkv = filled(nqkv, NAN);
        for (size_t r = 0; r < (size_t)N * Lq; r++) dqkv[r * c.ldq + 3 * HD] = 7.0f;
        dq = dqkv; dk = dqkv + HD; dv = dqkv + 2 * HD;
    } else {
        c.ldq = c.ldk = c.ldv = HD;
        nq = (size_t)N * Lq * HD; nk = nv = (size_t)N * Lk * HD;
        c.q = rnd(nq, 1); c.k = rnd(nk, 1); c.v = rnd(nv, 1);
        dq = filled(nq, NAN); dk = filled(nk, NAN); dv = filled(nv, NAN);
    }
    size_t no = (size_t)N * Lq * c.ldo;
    c.out = zeros(no); c.rw = rnd(no, 1);   /* rw's padding columns are not dout: ignored */
    backend_cpu_set_tile(be, tile);
    be->ops->attention_backward(be, dq, dk, dv, c.rw, c.q, c.k, c.v, N, H, Lq, Lk, D, c.ldq, c.ldk,
                                c.ldv, c.ldo, c.scale, causal);
    if (fused) {
        int kept = 1;
        for (size_t r = 0; r < (size_t)N * Lq; r++) kept &= dqkv[r * c.ldq + 3 * HD] == 7.0f;
        ok(kept, "%s: padding column untouched", name);
        for (size_t r = 0; r < (size_t)N * Lq; r++) dqkv[r * c.ldq + 3 * HD] = 0.0f;
        ok(all_nan_free(dqkv, nqkv), "%s: every covered element written", name);
        check_grad(name, "qkv", att_loss, &c, qkv, nqkv, dqkv, 1e-2f, 2e-3);
    } else {
        ok(all_nan_free(dq, nq) && all_nan_free(dk, nk) && all_nan_free(dv, nv), "%s: dq, dk, dv written", name);
        check_grad(name, "q", att_loss, &c, c.q, nq, dq, 1e-2f, 2e-3);
        check_grad(name, "k", att_loss, &c, c.k, nk, dk, 1e-2f, 2e-3);
        check_grad(name, "v", att_loss, &c, c.v, nv, dv, 1e-2f, 2e-3);
        /* = semantics (dk/dv are zeroed, not accumulated across calls); NULLs skip */
        float *dq2 = filled(nq, NAN), *dk2 = filled(nk, NAN), *dv2 = filled(nv, NAN);
        be->ops->attention_backward(be, dq2, dk2, dv2, c.rw, c.q, c.k, c.v, N, H, Lq, Lk, D, c.ldq, c.ldk,
                                    c.ldv, c.ldo, c.scale, causal);
        ok(rel_err(dq2, dq, nq) == 0 && rel_err(dk2, dk, nk) == 0 && rel_err(dv2, dv, nv) == 0,
           "%s: second call gives the same dq, dk, dv (=)", name);
        float *dq3 = filled(nq, NAN), *dk3 = filled(nk, NAN), *dv3 = filled(nv, NAN);
        be->ops->attention_backward(be, dq3, NULL, NULL, c.rw, c.q, c.k, c.v, N, H, Lq, Lk, D, c.ldq, c.ldk,
                                    c.ldv, c.ldo, c.scale, causal);
        be->ops->attention_backward(be, NULL, dk3, NULL, c.rw, c.q, c.k, c.v, N, H, Lq, Lk, D, c.ldq, c.ldk,
                                    c.ldv, c.ldo, c.scale, causal);
        be->ops->attention_backward(be, NULL, NULL, dv3, c.rw, c.q, c.k, c.v, N, H, Lq, Lk, D, c.ldq, c.ldk,
                                    c.ldv, c.ldo, c.scale, causal);
        ok(rel_err(dq3, dq, nq) < 1e-6 && rel_err(dk3, dk, nk) < 1e-6 && rel_err(dv3, dv, nv) < 1e-6,
           "%s: each gradient alone (others NULL) matches", name);
        free(dq2); free(dk2); free(dv2); free(dq3); free(dk3); free(dv3);
        free(c.q); free(c.k); free(c.v); free(dq); free(dk); free(dv);
    }
    backend_cpu_set_tile(be, 0);
    free(qkv); free(dqkv); free(c.out); free(c.rw);
}

static void test_attentions(void) {
    test_attention("attention self", 2, 2, 5, 5, 4, 0, 0, 0, 0);
    test_attention("attention cross", 2, 2, 4, 7, 4, 0, 0, 0, 0);
    test_attention("attention causal", 1, 2, 6, 6, 3, 1, 0, 0, 0);
    test_attention("attention causal Lk > Lq", 1, 2, 4, 6, 3, 1, 0, 0, 0);
    test_attention("attention fused qkv, ldo padded", 2, 2, 5, 5, 3, 0, 1, 3, 0);
    test_attention("attention fused qkv causal", 1, 2, 5, 5, 3, 1, 1, 2, 0);
    /* the backward's tile is bound / (2·Lk) rows: 2-row tiles over 5 and 7 queries */
    test_attention("attention cross, 2-row tiles", 2, 2, 5, 3, 4, 0, 0, 1, 2 * 2 * 3);
    test_attention("attention causal, 2-row tiles", 1, 2, 7, 7, 4, 1, 0, 0, 2 * 2 * 7);
    test_attention("attention fused causal, 1-row tiles", 1, 1, 5, 5, 4, 1, 1, 0, 1);
}

/* ---- elementwise ---- */

struct act { float *x, *out, *rw; long long n; enum act_kind kind; int C; };

static double act_loss(void *p) {
    struct act *c = p;
    be->ops->act(be, c->out, c->x, c->n, c->kind);
    return dsum(c->out, c->rw, c->n);
}

static void test_act(enum act_kind kind, const char *name) {
    struct act c = { 0 };
    c.n = 200; c.kind = kind;
    c.x = rnd(c.n, 2); c.out = zeros(c.n); c.rw = rnd(c.n, 1);
    float *dx = filled(c.n, NAN);
    be->ops->act_backward(be, dx, c.rw, c.x, c.n, kind);
    check_grad(name, "inp", act_loss, &c, c.x, c.n, dx, 1e-2f, 1e-3);
    float *io = dup(c.rw, c.n);
    be->ops->act_backward(be, io, io, c.x, c.n, kind);
    ok(rel_err(io, dx, c.n) == 0, "%s: in place", name);
    free(c.x); free(c.out); free(c.rw); free(dx); free(io);
}

static double geglu_loss(void *p) {
    struct act *c = p;
    be->ops->geglu(be, c->out, c->x, (int)c->n, c->C);
    return dsum(c->out, c->rw, c->n * c->C);
}

static void test_geglu(void) {
    struct act c = { 0 };
    c.n = 4; c.C = 9;                    /* n = R rows */
    size_t nx = (size_t)c.n * 2 * c.C, no = (size_t)c.n * c.C;
    c.x = rnd(nx, 1.5f); c.out = zeros(no); c.rw = rnd(no, 1);
    float *dx = filled(nx, NAN);
    be->ops->geglu_backward(be, dx, c.rw, c.x, (int)c.n, c.C);
    check_grad("geglu", "inp", geglu_loss, &c, c.x, nx, dx, 1e-2f, 1e-3);
    free(c.x); free(c.out); free(c.rw); free(dx);
}

struct ups { float *x, *out, *rw; int N, C, H, W; };

static double ups_loss(void *p) {
    struct ups *c = p;
    be->ops->upsample2x(be, c->out, c->x, c->N, c->C, c->H, c->W);
    return dsum(c->out, c->rw, 4LL * c->N * c->C * c->H * c->W);
}

static void test_upsample(void) {
    struct ups c = { 0, 0, 0, 2, 3, 3, 4 };
    size_t nx = (size_t)c.N * c.C * c.H * c.W;
    c.x = rnd(nx, 1); c.out = zeros(4 * nx); c.rw = rnd(4 * nx, 1);
    float *dx = filled(nx, NAN);
    be->ops->upsample2x_backward(be, dx, c.rw, c.N, c.C, c.H, c.W);
    check_grad("upsample2x", "inp", ups_loss, &c, c.x, nx, dx, 1e-2f, 1e-3);
    free(c.x); free(c.out); free(c.rw); free(dx);
}

struct emb { float *table, *out, *rw; const int *ids; int n, D; };

static double emb_loss(void *p) {
    struct emb *c = p;
    be->ops->embedding(be, c->out, c->table, c->ids, c->n, c->D);
    return dsum(c->out, c->rw, (long long)c->n * c->D);
}

static void test_embedding(void) {
    static const int ids[] = { 1, 3, 1, 0, 1, 4 };   /* repeats: their rows add */
    struct emb c = { 0 };
    c.ids = ids; c.n = 6; c.D = 5;
    int V = 6;                                       /* row 5 is never looked up */
    c.table = rnd((size_t)V * c.D, 1); c.out = zeros((size_t)c.n * c.D); c.rw = rnd((size_t)c.n * c.D, 1);
    float *dt = zeros((size_t)V * c.D);
    be->ops->embedding_backward(be, dt, c.rw, ids, c.n, c.D);
    check_grad("embedding", "table", emb_loss, &c, c.table, (long long)V * c.D, dt, 1e-2f, 1e-3);
    float *dt2 = filled((size_t)V * c.D, 1.0f);
    be->ops->embedding_backward(be, dt2, c.rw, ids, c.n, c.D);
    for (int i = 0; i < V * c.D; i++) dt2[i] -= 1.0f;
    ok(rel_err(dt2, dt, (size_t)V * c.D) < 1e-6, "embedding: dtable +=");
    free(c.table); free(c.out); free(c.rw); free(dt); free(dt2);
}

struct addc { float *x, *v, *out, *rw; int N, C, HW; };

static double addc_loss(void *p) {
    struct addc *c = p;
    size_t n = (size_t)c->N * c->C * c->HW;
    memcpy(c->out, c->x, sizeof(float) * n);
    be->ops->add_channel(be, c->out, c->v, c->N, c->C, c->HW);
    return dsum(c->out, c->rw, (long long)n);
}

static void test_channel_sum(void) {
    struct addc c = { 0, 0, 0, 0, 2, 3, 7 };
    size_t n = (size_t)c.N * c.C * c.HW;
    c.x = rnd(n, 1); c.v = rnd((size_t)c.N * c.C, 1); c.out = zeros(n); c.rw = rnd(n, 1);
    float *dv = filled((size_t)c.N * c.C, NAN);
    be->ops->channel_sum(be, dv, c.rw, c.N, c.C, c.HW);
    check_grad("channel_sum (add_channel)", "v", addc_loss, &c, c.v, (long long)c.N * c.C, dv, 1e-2f, 1e-3);
    free(c.x); free(c.v); free(c.out); free(c.rw); free(dv);
}

struct cat { float *a, *b, *out, *rw; int Ca, Cb, N, HW; };

static double cat_loss(void *p) {
    struct cat *c = p;
    be->ops->concat_channels(be, c->out, c->a, c->Ca, c->b, c->Cb, c->N, c->HW);
    return dsum(c->out, c->rw, (long long)c->N * (c->Ca + c->Cb) * c->HW);
}

static void test_split(void) {
    struct cat c = { 0, 0, 0, 0, 2, 3, 2, 5 };
    size_t na = (size_t)c.N * c.Ca * c.HW, nb = (size_t)c.N * c.Cb * c.HW;
    c.a = rnd(na, 1); c.b = rnd(nb, 1); c.out = zeros(na + nb); c.rw = rnd(na + nb, 1);
    float *da = filled(na, NAN), *db = filled(nb, NAN);
    be->ops->split_channels(be, da, c.Ca, db, c.Cb, c.rw, c.N, c.HW);
    check_grad("split_channels (concat)", "a", cat_loss, &c, c.a, na, da, 1e-2f, 1e-3);
    check_grad("split_channels (concat)", "b", cat_loss, &c, c.b, nb, db, 1e-2f, 1e-3);
    float *da2 = filled(na, NAN), *db2 = filled(nb, NAN);
    be->ops->split_channels(be, da2, c.Ca, NULL, c.Cb, c.rw, c.N, c.HW);
    be->ops->split_channels(be, NULL, c.Ca, db2, c.Cb, c.rw, c.N, c.HW);
    ok(rel_err(da2, da, na) == 0 && rel_err(db2, db, nb) == 0, "split_channels: either side may be NULL");
    free(c.a); free(c.b); free(c.out); free(c.rw); free(da); free(db); free(da2); free(db2);
}

/* ---- dot, AdamW ---- */

static void test_dot(void) {
    long long n = 300007;                  /* past the threading threshold */
    float *a = rnd(n, 1), *b = rnd(n, 1);
    double ref = dsum(a, b, n), got = be->ops->dot(be, a, b, n);
    ok(fabs(got - ref) <= 1e-9 * (fabs(ref) + 1), "dot: %.12g vs double loop %.12g", got, ref);
    ok(be->ops->dot(be, a, b, 0) == 0.0 && be->ops->dot(be, a, b, 3) == dsum(a, b, 3), "dot: tiny n");
    free(a); free(b);
}

static void test_adamw(void) {
    long long n = 100003;
    float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
    float *p = rnd(n, 1), *m = zeros(n), *v = zeros(n);
    double *P = malloc(sizeof(double) * n), *M = calloc(n, sizeof(double)), *V = calloc(n, sizeof(double));
    for (long long i = 0; i < n; i++) P[i] = p[i];
    double worst = 0;
    for (int step = 1; step <= 4; step++) {
        float *g = rnd(n, step == 3 ? 1e-3f : 1.0f);   /* a small-gradient step too */
        be->ops->adamw(be, p, g, m, v, n, lr, b1, b2, eps, wd, step);
        double c1 = 1 - pow(b1, step), c2 = 1 - pow(b2, step);
        for (long long i = 0; i < n; i++) {
            M[i] = b1 * M[i] + (1.0 - b1) * g[i];
            V[i] = b2 * V[i] + (1.0 - b2) * (double)g[i] * g[i];
            P[i] -= lr * ((M[i] / c1) / (sqrt(V[i] / c2) + eps) + wd * P[i]);
        }
        double e = 0;
        for (long long i = 0; i < n; i++) {
            double d = fabs(p[i] - P[i]);
            if (!(d <= e)) e = d;
        }
        if (!(e <= worst)) worst = e;
        free(g);
    }
    /* the update moves each weight by about lr per step; 1e-5·lr is fp32 round-off of it */
    ok(worst < 1e-6, "adamw: 4 steps vs double reimplementation, max |dp| %.2g", worst);
    float *Mf = malloc(sizeof(float) * n), *Vf = malloc(sizeof(float) * n);
    for (long long i = 0; i < n; i++) { Mf[i] = (float)M[i]; Vf[i] = (float)V[i]; }
    double em = rel_err(m, Mf, n), ev = rel_err(v, Vf, n);
    free(Mf); free(Vf);
    ok(em < 1e-5 && ev < 1e-5, "adamw: moments match (max-normalised %.2g, %.2g)", em, ev);
    /* a step change moves weights by about lr: a wrong bias correction would show */
    float q[1] = { 0.5f }, gq[1] = { 1.0f }, mq[1] = { 0 }, vq[1] = { 0 };
    be->ops->adamw(be, q, gq, mq, vq, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 1);
    ok(fabsf(q[0] - 0.4f) < 1e-6f, "adamw: first step with unit gradient moves by lr: %.7g", q[0]);
    free(p); free(m); free(v); free(P); free(M); free(V);

    struct backend *b0;
    backend_cpu_create(&b0, 1);
    float q0 = q[0];
    b0->ops->adamw(b0, q, gq, mq, vq, 1, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 0);
    ok(b0->err == SD_ERR_INVALID && q[0] == q0, "adamw: step 0 is a sticky error, weights untouched");
    backend_destroy(b0);
}

/* ---- threaded paths against one thread ---- */

static void test_threads(void) {
    struct backend *b1;
    backend_cpu_create(&b1, 1);
    struct backend *bs[2] = { b1, be };
    int N = 2, C = 32, HW = 2304, G = 8, K = 16;     /* 48×48 images: past the threshold */
    size_t nx = (size_t)N * C * HW;
    float *x = rnd(nx, 1), *w = rnd(C, 1), *b = rnd(C, 1), *dy = rnd(nx, 1);
    float *cw = rnd((size_t)K * C * 9, 0.1f), *cy = rnd((size_t)N * K * HW, 1);
    float *dx[2], *dw[2], *db[2], *cdx[2], *cdw[2], *cdb[2], *lx[2], *lw[2], *lb[2], *ax[2];
    for (int t = 0; t < 2; t++) {
        struct backend *e = bs[t];
        dx[t] = zeros(nx); dw[t] = zeros(C); db[t] = zeros(C);
        e->ops->group_norm_backward(e, dx[t], dw[t], db[t], dy, x, w, b, N, C, HW, G, 1e-5f, 1);
        cdx[t] = zeros(nx); cdw[t] = zeros((size_t)K * C * 9); cdb[t] = zeros(K);
        e->ops->conv2d_backward(e, cdx[t], cdw[t], cdb[t], cy, x, cw, N, C, 48, 48, K, 3, 3, 1, 1, 1, 1, 1);
        lx[t] = zeros(nx); lw[t] = zeros(C); lb[t] = zeros(C);       /* rows of C over N·HW */
        e->ops->layer_norm_backward(e, lx[t], lw[t], lb[t], dy, x, w, N * HW, C, 1e-5f);
        ax[t] = zeros(nx);
        e->ops->act_backward(e, ax[t], dy, x, (long long)nx, ACT_GELU);
    }
    ok(rel_err(dx[1], dx[0], nx) == 0 && rel_err(dw[1], dw[0], C) == 0 && rel_err(db[1], db[0], C) == 0,
       "group_norm+silu: %d threads == 1 thread", be->threads);
    double ec = rel_err(cdx[1], cdx[0], nx), ew = rel_err(cdw[1], cdw[0], (size_t)K * C * 9);
    ok(ec < 1e-5 && ew < 1e-5 && rel_err(cdb[1], cdb[0], K) == 0, "conv 3x3: %d threads vs 1: %.2g %.2g",
       be->threads, ec, ew);
    ok(rel_err(lx[1], lx[0], nx) == 0 && rel_err(lw[1], lw[0], C) == 0 && rel_err(lb[1], lb[0], C) == 0,
       "layer_norm: %d threads == 1 thread", be->threads);
    ok(rel_err(ax[1], ax[0], nx) == 0, "act gelu: %d threads == 1 thread", be->threads);
    for (int t = 0; t < 2; t++) {
        free(dx[t]); free(dw[t]); free(db[t]); free(cdx[t]); free(cdw[t]); free(cdb[t]);
        free(lx[t]); free(lw[t]); free(lb[t]); free(ax[t]);
    }
    free(x); free(w); free(b); free(dy); free(cw); free(cy);
    backend_destroy(b1);
}

int main(void) {
    sd_rng_init(&R, 7);
    if (backend_cpu_create(&be, 4) != SD_OK) { printf("Bail out! no CPU backend\n"); return 1; }
    test_linear(1);
    test_linear(0);
    test_convs();
    test_group_norm(0, 1);
    test_group_norm(1, 1);
    test_group_norm(1, 0);
    test_layer_norm();
    test_attentions();
    test_act(ACT_SILU, "act silu");
    test_act(ACT_GELU, "act gelu");
    test_act(ACT_QUICK_GELU, "act quick_gelu");
    test_geglu();
    test_upsample();
    test_embedding();
    test_channel_sum();
    test_split();
    test_dot();
    test_adamw();
    test_threads();
    ok(backend_status(be) == SD_OK, "no sticky backend error");
    backend_destroy(be);
    return done_testing();
}
