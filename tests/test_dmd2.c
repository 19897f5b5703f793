/* test_dmd2.c — the DM loss's gradient against its closed form and against finite
 * differences of the loss with the stop-gradient target held fixed, the per-sample
 * normaliser, and nan_to_num; then out-of-memory anywhere in sharded training runs
 * (VAE, teacher, DMD2). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "tap.h"
#include "core/rng.h"
#include "train/dmd2.h"
#include "train/trainer.h"

/* Open, one generator + fake iteration, one fake-only iteration (the last writes a
 * checkpoint), close. */
static sd_status run_dmd2(const struct dmd2_config *c) {
    struct dmd2 *d;
    sd_status st = dmd2_open(&d, c);
    if (st) return st;
    struct dmd2_stats s;
    for (int i = 0; i < 2 && !st; i++) st = dmd2_step(d, &s);
    dmd2_close(d);
    return st;
}

static sd_status run_teacher(const void *c) { return train_teacher(c); }
static sd_status run_vae(const void *c) { return train_vae(c); }
static sd_status run_dmd2_v(const void *c) { return run_dmd2(c); }

/* Every allocation of a run failing in turn (the first 40, then 80 spread over the rest;
 * the shards' threads allocate too): a clean error, nothing leaked, and the run succeeds
 * again afterwards.  A run may succeed only when the failure fell on an allocation its
 * caller declared optional (sd_alloc_optional); any other success swallowed an error. */
static void sweep(const char *name, sd_status (*run)(const void *), const void *c) {
    size_t live0 = sd_alloc_live_bytes(), calls0 = sd_alloc_calls();
    sd_status st = run(c);
    long total = (long)(sd_alloc_calls() - calls0);
    ok(st == SD_OK && sd_alloc_live_bytes() == live0, "%s: %ld allocations, none left", name, total);
    int leaks = 0, failed = 0, optional = 0, swallowed = 0, tried = 0;
    for (long k = 1; k <= 120 && total > 40; k++) {
        long n = k <= 40 ? k : 40 + (k - 40) * (total - 40) / 80;
        size_t before = sd_alloc_live_bytes();
        sd_fault_arm_alloc(n);
        st = run(c);
        int opt = sd_fault_hit_optional();
        sd_fault_arm_alloc(0);
        tried++;
        failed += st != SD_OK;
        optional += !st && opt;
        if (!st && !opt) {
            swallowed++;
            diag("allocation %ld failing: the run still succeeded", n);
        }
        if (sd_alloc_live_bytes() != before) {
            leaks++;
            diag("allocation %ld failing leaves %zd bytes (%s)", n, (ssize_t)(sd_alloc_live_bytes() - before),
                 st ? sd_last_error() : "no error");
        }
    }
    ok(tried >= 40 && leaks == 0 && swallowed == 0,
       "%s: allocation failures at %d points: %d clean errors, %d optional, %d swallowed, %d leaked", name,
       tried, failed, optional, swallowed, leaks);
    ok(run(c) == SD_OK, "%s: and the run succeeds afterwards", name);
}

/* A yield hook that counts its calls and asks to stop (or abort) at call number stop_at. */
struct ycount { int calls, stop_at, abort; };
static int count_yield(void *ud) {
    struct ycount *y = ud;
    if (++y->calls != y->stop_at) return DMD2_YIELD_CONTINUE;
    return y->abort ? DMD2_YIELD_ABORT : DMD2_YIELD_STOP;
}

static sd_status save_gen(struct dmd2 *d, const char *out, char **bytes, size_t *len) {
    char p[4400];
    SD_TRY(dmd2_save(d, NULL, 0));
    snprintf(p, sizeof p, "%s/generator.safetensors", out);
    return sd_read_file(p, 1u << 30, bytes, len);
}

/* The yield hook runs before every UNet pass (no backward simulation, GAN on: 10 passes
 * in a generator iteration, 5 in a fake-only one); a stop before the first weight update
 * undoes the iteration (the run then continues bit-identically to one never stopped), a
 * stop after it lets the iteration complete. */
static void yield_checks(struct dmd2_config c, const char *dir) {
    char out_a[4200], out_b[4200], *ga = NULL, *gb = NULL;
    size_t la = 0, lb = 0;
    snprintf(out_a, sizeof out_a, "%s/ya", dir);
    snprintf(out_b, sizeof out_b, "%s/yb", dir);
    c.backward_simulation = 0;
    c.steps = 4;
    c.checkpoint_every = 0;
    c.shards = 1;
    struct ycount y = { 0, 0, 0 };
    c.yield = count_yield;
    c.yield_ud = &y;
    struct dmd2 *d;
    struct dmd2_stats s;
    c.out_dir = out_a;
    if (!ok(dmd2_open(&d, &c) == SD_OK, "yield: open: %s", sd_last_error())) return;
    int calls[4], okay = 1;
    for (int i = 0; i < 4; i++) {
        y.calls = 0;
        okay &= dmd2_step(d, &s) == SD_OK;
        calls[i] = y.calls;
    }
    ok(okay && calls[0] == 10 && calls[1] == 5 && calls[2] == 10 && calls[3] == 5,
       "yield before every UNet pass: %d, %d, %d, %d calls (ttur 2)", calls[0], calls[1], calls[2], calls[3]);
    ok(save_gen(d, out_a, &ga, &la) == SD_OK, "the uninterrupted run's generator");
    dmd2_close(d);

    c.out_dir = out_b;
    if (!ok(dmd2_open(&d, &c) == SD_OK, "yield: open again")) { sd_free(ga); return; }
    y = (struct ycount){ 0, 0, 0 };
    okay = dmd2_step(d, &s) == SD_OK;
    y = (struct ycount){ 0, 4, 0 };   /* iteration 2 (fake only): stop at its 4th pass */
    sd_status st = dmd2_step(d, &s);
    ok(okay && st == SD_ERR_CANCELLED && dmd2_iteration(d) == 1,
       "a stop before any weight changed: SD_ERR_CANCELLED, still at iteration %d", dmd2_iteration(d));
    y = (struct ycount){ 0, 5, 0 };   /* iteration 2 again: its last pass precedes its only update */
    st = dmd2_step(d, &s);
    ok(st == SD_ERR_CANCELLED && dmd2_iteration(d) == 1, "... also late in a fake-only iteration");
    y = (struct ycount){ 0, 0, 0 };
    okay = dmd2_step(d, &s) == SD_OK;
    y = (struct ycount){ 0, 8, 0 };   /* iteration 3 (generator): pass 8 comes after its update */
    st = dmd2_step(d, &s);
    ok(okay && st == SD_OK && dmd2_iteration(d) == 3 && y.calls == 10,
       "a stop after the generator update: the iteration completes (%d calls)", y.calls);
    y = (struct ycount){ 0, 0, 0 };
    okay = dmd2_step(d, &s) == SD_OK;
    ok(okay && save_gen(d, out_b, &gb, &lb) == SD_OK && la == lb && ga && gb && !memcmp(ga, gb, la),
       "after undone iterations the run is bit-identical to the uninterrupted one");
    dmd2_close(d);
    c.steps = 6;
    if (!ok(dmd2_open(&d, &c) == SD_OK, "yield: open a third time")) { sd_free(ga); sd_free(gb); return; }
    y = (struct ycount){ 0, 2, 1 };   /* abort before any weight changed: undone, not broken */
    st = dmd2_step(d, &s);
    ok(st == SD_ERR_CANCELLED && !dmd2_broken(d) && dmd2_iteration(d) == 0, "an abort before any update: undone");
    y = (struct ycount){ 0, 8, 1 };   /* abort after the generator update: broken */
    st = dmd2_step(d, &s);
    ok(st == SD_ERR_CANCELLED && dmd2_broken(d) && dmd2_save(d, NULL, 0) != SD_OK && dmd2_step(d, &s) != SD_OK,
       "an abort after an update: the run is broken, no checkpoint, no further step (%s)", sd_last_error());
    dmd2_close(d);
    sd_free(ga);
    sd_free(gb);
}

/* Out of memory anywhere in sharded training runs (2 shards) of the VAE, the teacher and
 * DMD2 on a micro model made by `sdxld init`. */
static void fault_sweeps(void) {
    const char *bin = getenv("SDXLD_BIN"), *data = getenv("SDXLD_TEST_DATA");
    char dir[] = "/tmp/sdxld-dmd2-XXXXXX", cmd[16384], model[4200], out[4200];
    if (!bin || !data || !mkdtemp(dir)) { ok(0, "SDXLD_BIN, SDXLD_TEST_DATA and a temp dir"); return; }
    snprintf(model, sizeof model, "%s/m", dir);
    snprintf(out, sizeof out, "%s/run", dir);
    snprintf(cmd, sizeof cmd, "'%s' init --from '%s/tiny-sdxl-a' --config '%s/configs/unet-micro.json' "
             "--vae-config '%s/configs/vae-micro.json' --out '%s' --seed 3 >/dev/null 2>&1", bin, data, data, data, model);
    ok(system(cmd) == 0, "a micro model from sdxld init");
    struct dataset *ds;
    ok(dataset_shapes(&ds, 16, 5, 1 << 20) == SD_OK, "shapes dataset");
    struct train_config t = { .model_dir = model, .out_dir = out, .data = ds, .batch = 4, .steps = 2, .seed = 1,
                              .opt = { .lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .clip = 1.0f, .ema = 0.9f },
                              .log_every = 1000, .shards = 2, .cfg_dropout = 0.1f, .cache_size = 8, .kl_weight = 1e-4f,
                              .l1 = 1 };
    sweep("train_vae", run_vae, &t);
    sweep("train_teacher", run_teacher, &t);
    struct dmd2_config c = { .teacher_dir = model, .out_dir = out, .data = ds, .cache_size = 8, .batch = 3, .steps = 2,
                             .ttur = 2, .lr_generator = 5e-3f, .lr_fake = 1e-3f, .guidance = 4, .gan_weight_g = 5e-3f,
                             .gan_weight_d = 1e-2f, .clip = 10, .nsteps = 4, .timesteps = { 999, 749, 499, 249 },
                             .backward_simulation = 1, .gan = 1, .dm_min_t = 20, .dm_max_t = 980, .seed = 2,
                             .log_every = 1000, .shards = 2 };
    sweep("dmd2", run_dmd2_v, &c);
    yield_checks(c, dir);
    dataset_free(ds);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) diag("could not remove %s", dir);
}

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
    /* Finite differences of DMD2's surrogate L(x) = 0.5·mean((x − target)²) with the
     * stop-gradient target = x − (x0_fake − x0_real) / mean|x − x0_real| computed here in
     * double from the inputs (not from g): the returned gradient must be dL/dx. */
    double tgt[B * PER], fdw = 0;
    for (int i = 0; i < B; i++) {
        double w = 0;
        for (int q = 0; q < PER; q++) w += fabs((double)x[i * PER + q] - xr[i * PER + q]);
        w /= PER;
        for (int q = 0; q < PER; q++)
            tgt[i * PER + q] = x[i * PER + q] - ((double)xf[i * PER + q] - xr[i * PER + q]) / w;
    }
    for (int k = 0; k < 20; k++) {
        int i = (k * 37) % (B * PER);
        double h = 1e-3, lp = 0, lm = 0;
        for (int j = 0; j < B * PER; j++) {
            double v = x[j] + (j == i ? h : 0), u = x[j] - (j == i ? h : 0);
            lp += 0.5 * (v - tgt[j]) * (v - tgt[j]);
            lm += 0.5 * (u - tgt[j]) * (u - tgt[j]);
        }
        double fd = (lp - lm) / (2 * h) / (B * PER);
        fdw = fmax(fdw, fabs(fd - g[i]) / fabs(fd));
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
    fault_sweeps();
    return done_testing();
}
