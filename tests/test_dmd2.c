/* test_dmd2.c — the DM loss's gradient against its closed form and against finite
 * differences of the loss with the stop-gradient target held fixed, the per-sample
 * normaliser, and nan_to_num. */
#include <math.h>
#include <stdlib.h>

#include "tap.h"
#include "core/rng.h"
#include "train/dmd2.h"

int main(void) {
    enum { B = 3, PER = 50 };
    float x[B * PER], xf[B * PER], xr[B * PER], g[B * PER];
    struct sd_rng r;
    sd_rng_init(&r, 9);
    sd_rng_normal(&r, x, B * PER);
    sd_rng_normal(&r, xf, B * PER);
    sd_rng_normal(&r, xr, B * PER);
    for (int i = 0; i < PER; i++) xr[2 * PER + i] = x[2 * PER + i] + 3.0f * xr[2 * PER + i];   /* another scale */
    double loss = dmd2_dm_grad(x, xf, xr, B, PER, g);
    /* closed form */
    double worst = 0, lsum = 0;
    for (int i = 0; i < B; i++) {
        double w = 0;
        for (int q = 0; q < PER; q++) w += fabs((double)x[i * PER + q] - xr[i * PER + q]);
        w /= PER;
        for (int q = 0; q < PER; q++) {
            double gi = ((double)xf[i * PER + q] - xr[i * PER + q]) / w;
            lsum += 0.5 * gi * gi;
            worst = fmax(worst, fabs(g[i * PER + q] - gi / (B * PER)) / fabs(gi / (B * PER)));
        }
    }
    ok(worst < 1e-6, "gradient = (x0_fake − x0_real) / mean|x − x0_real| / n (max rel diff %.2g)", worst);
    ok(fabs(loss - lsum / (B * PER)) < 1e-9 * lsum, "loss = 0.5·mean(g²)");
    /* finite differences of L(x) = 0.5 mean((x − target)²), target = x − g fixed */
    double tgt[B * PER], fdw = 0;
    for (int i = 0; i < B * PER; i++) tgt[i] = x[i] - g[i] * (B * PER);
    for (int k = 0; k < 20; k++) {
        int i = (k * 37) % (B * PER);
        double h = 1e-3, lp = 0, lm = 0;
        for (int j = 0; j < B * PER; j++) {
            double v = x[j] + (j == i ? h : 0), u = x[j] - (j == i ? h : 0);
            lp += 0.5 * (v - tgt[j]) * (v - tgt[j]);
            lm += 0.5 * (u - tgt[j]) * (u - tgt[j]);
        }
        double fd = (lp - lm) / (2 * h) / (B * PER);
        fdw = fmax(fdw, fabs(fd - g[i]) / fabs(g[i] + 1e-12));
    }
    ok(fdw < 1e-4, "matches finite differences of the stop-gradient loss (rel %.2g)", fdw);
    /* x == x0_real for a whole sample: w = 0 -> non-finite -> 0 (nan_to_num) */
    for (int q = 0; q < PER; q++) xr[q] = x[q];
    dmd2_dm_grad(x, xf, xr, B, PER, g);
    int zero = 1;
    for (int q = 0; q < PER; q++) zero &= g[q] == 0.0f && isfinite(g[PER + q]);
    ok(zero, "a sample with zero normaliser gets a zero gradient, the others are finite");
    /* descending moves x toward x0_real: gradient points from real to fake */
    ok(g[PER] * (xf[PER] - xr[PER]) > 0, "gradient has the sign of x0_fake − x0_real");
    return done_testing();
}
