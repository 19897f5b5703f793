/* gpu_util.h — what the GPU tests share: the two backends, a seeded generator, device
 * buffers (random, from host data, or NaN-poisoned so unwritten elements fail) and the
 * normalised error ‖x − y‖ / ‖y‖.  Included once per test program. */
#ifndef SD_GPU_UTIL_H
#define SD_GPU_UTIL_H

#include <math.h>
#include <stdlib.h>

#include "backend/backend.h"
#include "core/rng.h"

static struct backend *cpu, *gpu;
static struct sd_rng R;

static float *rnd(size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    sd_rng_normal(&R, p, n);
    return p;
}

static float *dev(const float *host, size_t n) {
    float *d = gpu->ops->alloc(gpu, sizeof(float) * (n ? n : 1));
    if (!d) { printf("Bail out! device alloc of %zu floats: %s\n", n, sd_last_error()); exit(1); }
    if (host && n) gpu->ops->upload(gpu, d, host, sizeof(float) * n);
    return d;
}

/* A device buffer full of NaN: whatever the op leaves unwritten fails the comparison. */
static inline float *dev_nan(size_t n) {
    float *h = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) h[i] = NAN;
    float *d = dev(h, n);
    free(h);
    return d;
}

static float *back(const float *d, size_t n) {
    float *h = malloc(sizeof(float) * (n ? n : 1));
    gpu->ops->download(gpu, h, d, sizeof(float) * n);
    return h;
}

static void dfree(void *d) { gpu->ops->free(gpu, d); }

/* ‖x − y‖ / ‖y‖ over n values (y the reference); NaN anywhere gives NaN. */
static double nerr(const float *x, const float *y, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)x[i] - y[i];
        e += d * d;
        r += (double)y[i] * y[i];
    }
    return r > 0 ? sqrt(e / r) : sqrt(e);
}

/* Download the GPU result, compare with the CPU's, report (clearing a sticky error). */
static int check(const char *what, const float *d_out, const float *ref, size_t n, double tol) {
    float *g = back(d_out, n);
    double e = nerr(g, ref, n);
    sd_status st = backend_status(gpu);
    int good = ok(st == SD_OK && e < tol, "%s: err %.2g < %.0e%s%s", what, e, tol, st ? ", backend: " : "",
                  st ? sd_last_error() : "");
    if (st) gpu->err = SD_OK;
    free(g);
    return good;
}

#endif
