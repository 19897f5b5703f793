/* test_backward_ops.c — the `fd` harness: every CPU backward op against central finite
 * differences of its forward, on every case of the op table (op_cases.c) with an fd bound,
 * plus the gradient contract checked the same way for each (= into input gradients, +=
 * into parameter gradients, NULL skips, in place where backend.h allows it, layout padding
 * untouched); and outside the table: dot against a double loop, AdamW against a
 * double-precision reimplementation, threaded paths against one thread.
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
#include "op_cases.h"
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
static float *dup(const float *x, size_t n) { return op_dup(x, n); }

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

/* ---- every case of the table with an fd bound ---- */

struct fd_ctx { const struct op_case *c; struct op_host *h; const float *rw; };

/* L = Σ out ⊙ rw; the output starts at 0, so its layout padding adds nothing */
static double case_loss(void *p) {
    struct fd_ctx *x = p;
    op_kinds[x->c->op].forward(be, x->c, x->h->b);
    return dsum(x->h->b[x->h->out], x->rw, (long long)x->h->d[x->h->out].n);
}

static int has_grad(const struct op_host *h, int i) {
    return h->d[i].n && (h->d[i].role == OPB_IN || h->d[i].role == OPB_PARAM);
}

/* Gradient buffers for one backward call: `=` ones NaN (their padding 7), `+=` ones a
 * copy of acc (or 0); only buffer `only` when only >= 0. */
static void grads_new(const struct op_case *c, const struct op_host *h, float **g, float *const *acc, int only) {
    for (int i = 0; i < h->nbuf; i++) {
        g[i] = NULL;
        if (!has_grad(h, i) || (only >= 0 && i != only)) continue;
        size_t n = h->d[i].n;
        if (h->d[i].role == OPB_PARAM) { g[i] = acc ? dup(acc[i], n) : zeros(n); continue; }
        g[i] = filled(n, NAN);
        op_pads_set(c, i, g[i], n, 7.0f);
    }
}

/* Every data element of the `=` gradients written, padding still 7; then the padding
 * becomes 0 (no one reads it: its true gradient). */
static int grads_settle(const struct op_case *c, const struct op_host *h, float **g) {
    int good = 1;
    for (int i = 0; i < h->nbuf; i++) {
        if (!g[i] || h->d[i].role != OPB_IN) continue;
        size_t n = h->d[i].n;
        float *seven = filled(n, 7.0f), *data = dup(NULL, n);
        good &= op_pads_kept(c, i, g[i], seven, n) && all_nan_free(data, op_compact(c, i, g[i], n, data));
        op_pads_set(c, i, g[i], n, 0.0f);
        free(seven); free(data);
    }
    return good;
}

static void grads_free(const struct op_host *h, float **g) {
    for (int i = 0; i < h->nbuf; i++) free(g[i]);
}

/* g against ref: `=` gradients within in_tol (0: exactly), `+=` ones scaled by k within 1e-6 */
static int grads_match(const struct op_host *h, float **g, float **ref, float k, double in_tol) {
    int good = 1;
    for (int i = 0; i < h->nbuf; i++) {
        if (!g[i] || !ref[i]) continue;
        size_t n = h->d[i].n;
        float *r = dup(ref[i], n);
        for (size_t j = 0; j < n; j++) r[j] *= h->d[i].role == OPB_PARAM ? k : 1;
        double e = rel_err(g[i], r, n);
        good &= h->d[i].role == OPB_PARAM ? e < 1e-6 : in_tol > 0 ? e < in_tol : e == 0;
        free(r);
    }
    return good;
}

/* The contract of backend.h: a second call rewrites `=` gradients and adds to `+=` ones;
 * each gradient asked for alone (the others NULL) is the same; in place where allowed. */
static void check_contract(const struct op_case *c, struct op_host *h, float **g, const float *rw, const char *name) {
    const struct op_kind *k = &op_kinds[c->op];
    float *g2[OP_MAX_BUFS];
    grads_new(c, h, g2, g, -1);
    k->backward(be, c, g2, rw, h->b);
    int good = grads_settle(c, h, g2) && grads_match(h, g2, g, 2, 0);
    grads_free(h, g2);
    ok(good && backend_status(be) == SD_OK, "%s: second call: input gradients =, parameter gradients +=", name);
    int ngrad = 0, alone = 1;
    for (int i = 0; i < h->nbuf; i++) ngrad += has_grad(h, i);
    for (int i = 0; ngrad > 1 && i < h->nbuf; i++) {
        if (!has_grad(h, i)) continue;
        grads_new(c, h, g2, NULL, i);
        k->backward(be, c, g2, rw, h->b);
        alone &= grads_settle(c, h, g2) && grads_match(h, g2, g, 1, k->alone_tol);
        grads_free(h, g2);
    }
    if (ngrad > 1) ok(alone, "%s: each gradient alone (the others NULL) matches", name);
    if (!k->inplace) return;
    grads_new(c, h, g2, NULL, -1);
    float *io = dup(rw, h->d[0].n);
    free(g2[0]);
    g2[0] = io;
    k->backward(be, c, g2, io, h->b);
    ok(grads_match(h, g2, g, 1, 0), "%s: in place, dinp == dout", name);
    grads_free(h, g2);
}

static void run_case(const struct op_case *c) {
    const struct op_kind *k = &op_kinds[c->op];
    char name[256];
    op_case_name(c, name, sizeof name);
    if (!k->backward) { ok(0, "%s: an fd bound but no backward", name); return; }
    struct op_host h;
    op_host_alloc(c, &R, &h);
    size_t nout = h.d[h.out].n;
    memset(h.b[h.out], 0, sizeof(float) * nout);
    float *rw = rnd(nout, 1), *g[OP_MAX_BUFS];
    backend_cpu_set_tile(be, c->tile);
    grads_new(c, &h, g, NULL, -1);
    k->backward(be, c, g, rw, h.b);
    ok(grads_settle(c, &h, g), "%s: every gradient element written, layout padding untouched", name);
    struct fd_ctx ctx = { c, &h, rw };
    for (int i = 0; i < h.nbuf; i++)
        if (g[i]) check_grad(name, h.d[i].name, case_loss, &ctx, h.b[i], (long long)h.d[i].n, g[i], 1e-2f, c->tol.fd);
    check_contract(c, &h, g, rw, name);
    backend_cpu_set_tile(be, 0);
    grads_free(&h, g);
    free(rw);
    op_host_free(&h);
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
    for (int i = 0; i < op_ncases; i++)
        if (op_cases[i].tol.fd > 0) run_case(&op_cases[i]);
    test_dot();
    test_adamw();
    test_threads();
    ok(backend_status(be) == SD_OK, "no sticky backend error");
    backend_destroy(be);
    return done_testing();
}
