/* test_gpu_backward.c — the `gpu_bw` harness: every backward op of the CUDA backend against
 * the CPU backend, whose backward ops pass central finite differences
 * (tests/test_backward_ops.c), over every case of the op table (tests/op_cases.c) with a
 * gpu_bw bound, at toy and UNet sizes, in place too where backend.h allows it; then dot
 * and AdamW.  (The whole UNet backward on the GPU against the golden gradients is
 * tests/gpu/run.sh's `sdxld unet --backward --backend cuda` step.)
 *
 * `=` outputs start as NaN (unwritten elements fail; layout padding must stay NaN); `+=`
 * outputs start equal and random on both backends, so accumulation is checked too.
 * Suite `gpu`; exit 77 without a GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "gpu/gpu_util.h"
#include "gpu/op_gpu.h"

/* ---- every case of the table with a gpu_bw bound ---- */

/* Gradient buffers on the host: `=` ones NaN, `+=` ones a copy of acc (so accumulation is
 * compared too). */
static void grads_host(const struct op_host *h, float **g, float *const *acc) {
    for (int i = 0; i < h->nbuf; i++) {
        int want = h->d[i].n && (h->d[i].role == OPB_IN || h->d[i].role == OPB_PARAM);
        g[i] = !want ? NULL : h->d[i].role == OPB_PARAM ? op_dup(acc[i], h->d[i].n) : op_filled(h->d[i].n, NAN);
    }
}

static void grads_dev(const struct op_host *h, float **gd, float *const *g0, int inplace, float *io) {
    for (int i = 0; i < h->nbuf; i++) gd[i] = g0[i] ? dev(g0[i], h->d[i].n) : NULL;
    if (inplace) { dfree(gd[0]); gd[0] = io; }
}

static void compare_grads(const struct op_case *c, const struct op_host *h, float **gd, float **gc, float **g0,
                          const char *name, const char *how) {
    for (int i = 0; i < h->nbuf; i++) {
        if (!gd[i]) continue;
        char what[320];
        snprintf(what, sizeof what, "%s: d%s%s%s", name, h->d[i].name, h->d[i].role == OPB_PARAM ? " (+=)" : "", how);
        double tol = h->d[i].bias && c->tol.gpu_bw_b > 0 ? c->tol.gpu_bw_b : c->tol.gpu_bw;
        op_check(what, c, i, gd[i], gc[i], g0[i], h->d[i].n, tol);
    }
}

static void run_case(const struct op_case *c) {
    const struct op_kind *k = &op_kinds[c->op];
    char name[256];
    op_case_name(c, name, sizeof name);
    if (!k->backward) { ok(0, "%s: a gpu_bw bound but no backward", name); return; }
    struct op_host h, acc;
    op_host_alloc(c, &R, &h);
    op_host_alloc(c, &R, &acc);   /* random starting values of the += gradients */
    size_t nout = h.d[h.out].n;
    float *dout = rnd(nout), *d[OP_MAX_BUFS], *g0[OP_MAX_BUFS], *gc[OP_MAX_BUFS], *gd[OP_MAX_BUFS];
    grads_host(&h, g0, acc.b);
    grads_host(&h, gc, acc.b);
    backend_cpu_set_tile(cpu, c->tile);
    k->backward(cpu, c, gc, dout, h.b);
    backend_cpu_set_tile(cpu, 0);
    op_dev_alloc(&h, d);
    float *ddout = dev(dout, nout);
    for (int inplace = 0; inplace <= k->inplace; inplace++) {   /* in place: dinp == dout */
        float *io = inplace ? dev(dout, nout) : NULL;
        grads_dev(&h, gd, g0, inplace, io);
        k->backward(gpu, c, gd, inplace ? io : ddout, d);
        compare_grads(c, &h, gd, gc, g0, name, inplace ? " (in place)" : "");
        for (int i = 0; i < h.nbuf; i++) if (gd[i]) dfree(gd[i]);
    }
    dfree(ddout);
    op_dev_free(&h, d);
    for (int i = 0; i < h.nbuf; i++) { free(g0[i]); free(gc[i]); }
    free(dout);
    op_host_free(&h);
    op_host_free(&acc);
}

/* dot and AdamW: the loss and optimiser ops, outside the table */
static void test_dot_adamw(void) {
    size_t n = 100000;
    float *x = rnd(n), *dy = rnd(n);
    float *gx = dev(x, n), *gdy = dev(dy, n);
    {
        double dc = cpu->ops->dot(cpu, x, dy, (long long)n), dg = gpu->ops->dot(gpu, gx, gdy, (long long)n);
        ok(fabs(dc - dg) <= 1e-9 * fabs(dc) + 1e-9, "dot: %.12g vs cpu %.12g", dg, dc);
    }
    {
        float *p = rnd(n), *g = rnd(n), *m = rnd(n), *v = rnd(n);
        for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
        float *gp = dev(p, n), *gg = dev(g, n), *gm = dev(m, n), *gv = dev(v, n);
        cpu->ops->adamw(cpu, p, g, m, v, (long long)n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 7);
        gpu->ops->adamw(gpu, gp, gg, gm, gv, (long long)n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 7);
        check("adamw params", gp, p, n, 1e-6);
        check("adamw m", gm, m, n, 1e-6);
        check("adamw v", gv, v, n, 1e-6);
        gpu->ops->adamw(gpu, gp, gg, gm, gv, (long long)n, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 0);
        ok(backend_status(gpu) == SD_ERR_INVALID, "adamw step 0 refused: %s", sd_last_error());
        gpu->err = SD_OK;
        dfree(gp); dfree(gg); dfree(gm); dfree(gv); free(p); free(g); free(m); free(v);
    }
    dfree(gx); dfree(gdy); free(x); free(dy);
}

int main(void) {
    sd_rng_init(&R, 112611);
    if (backend_create(&gpu, "cuda", 0) != SD_OK) {
        printf("1..0 # SKIP no CUDA backend: %s\n", sd_last_error());
        return 77;
    }
    if (backend_create(&cpu, "cpu", 0) != SD_OK) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    double t0 = sd_now_ms();
    for (int i = 0; i < op_ncases; i++)
        if (op_cases[i].tol.gpu_bw > 0) run_case(&op_cases[i]);
    test_dot_adamw();
    gpu->ops->attention_backward(gpu, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, 1, 1, 60000, 64, 64, 64, 64, 64,
                                 1.0f, 0);
    ok(backend_status(gpu) == SD_ERR_UNSUPPORTED, "attention_backward over 60000 keys is refused: %s", sd_last_error());
    gpu->err = SD_OK;
    ok(backend_status(gpu) == SD_OK, "no sticky error left");
    diag("%.1f s", (sd_now_ms() - t0) / 1e3);
    backend_destroy(gpu);
    backend_destroy(cpu);
    return done_testing();
}
