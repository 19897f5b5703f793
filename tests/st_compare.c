/* st_compare — test helper: compare tensors of two safetensors files.
 *   st_compare GOT.safetensors WANT.safetensors TOL name [name ...]
 *       relative error max|a-b|/max|b| per tensor must be < TOL (TOL 0: exact); the
 *       single name '*' means every tensor of WANT
 *   st_compare --png IMAGE.png WANT.safetensors TENSOR INDEX
 *       the PNG's pixels must equal round(255 * TENSOR[INDEX]) within 1 level
 * Prints one line per tensor; exit 0 when all pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/png.h"
#include "io/safetensors.h"

static float *load(const struct st_file *f, const char *name, int64_t *n, const struct st_tensor **t) {
    *t = st_find(f, name);
    if (!*t) return NULL;
    *n = st_numel(*t);
    float *d = malloc(sizeof(float) * (*n ? *n : 1));
    st_read_f32(*t, d);
    return d;
}

static int png_mode(int argc, char **argv) {
    if (argc != 6) return 2;
    char *data;
    size_t len;
    struct st_file f;
    if (sd_read_file(argv[2], 1u << 28, &data, &len) || st_open(&f, argv[3])) { fprintf(stderr, "%s\n", sd_last_error()); return 1; }
    uint8_t *rgb;
    int w, h, idx = atoi(argv[5]);
    if (png_decode((uint8_t *)data, len, 1u << 26, &rgb, &w, &h)) { fprintf(stderr, "%s\n", sd_last_error()); return 1; }
    int64_t n;
    const struct st_tensor *t;
    float *ref = load(&f, argv[4], &n, &t);
    if (!ref || t->ndim != 4 || t->shape[1] != 3 || t->shape[2] != h || t->shape[3] != w || idx >= t->shape[0]) {
        fprintf(stderr, "png %dx%d does not fit %s\n", w, h, argv[4]);
        return 1;
    }
    int maxd = 0;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < h * w; i++) {
            int want = (int)lrintf(ref[((size_t)idx * 3 + c) * h * w + i] * 255.0f);
            int d = abs(want - rgb[(size_t)i * 3 + c]);
            if (d > maxd) maxd = d;
        }
    printf("%s vs %s[%d]: max pixel difference %d\n", argv[2], argv[4], idx, maxd);
    sd_free(rgb);
    sd_free(data);
    free(ref);
    st_close(&f);
    return maxd <= 1 ? 0 : 1;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--png")) return png_mode(argc, argv);
    if (argc < 5) { fprintf(stderr, "usage: st_compare GOT WANT TOL name...\n"); return 2; }
    struct st_file a, b;
    if (st_open(&a, argv[1]) || st_open(&b, argv[2])) { fprintf(stderr, "%s\n", sd_last_error()); return 1; }
    double tol = atof(argv[3]), worst = 0;
    int bad = 0, all = argc == 5 && !strcmp(argv[4], "*"), count = all ? b.ntensors : argc - 4;
    if (all && a.ntensors != b.ntensors) { printf("FAIL: %d tensors, want %d\n", a.ntensors, b.ntensors); bad++; }
    for (int j = 0; j < count; j++) {
        const char *name = all ? b.tensors[j].name : argv[4 + j];
        int64_t na, nb;
        const struct st_tensor *ta, *tb;
        float *x = load(&a, name, &na, &ta), *y = load(&b, name, &nb, &tb);
        if (!x || !y || ta->ndim != tb->ndim || memcmp(ta->shape, tb->shape, sizeof(int64_t) * ta->ndim)) {
            printf("FAIL %s: missing or shape differs\n", name);
            bad++;
        } else {
            double md = 0, mb = 0;
            for (int64_t k = 0; k < na; k++) {
                double d = fabs((double)x[k] - y[k]);
                if (!(d <= md)) md = d;
                if (fabs(y[k]) > mb) mb = fabs(y[k]);
            }
            double e = mb > 0 ? md / mb : md;
            int pass = tol == 0 ? md == 0 : e < tol;
            if (!all || !pass) printf("%s %s: rel err %.3g (tol %g)\n", pass ? "ok  " : "FAIL", name, e, tol);
            if (e > worst) worst = e;
            bad += !pass;
        }
        free(x);
        free(y);
    }
    if (all) printf("%d tensors, worst rel err %.3g (tol %g)\n", count, worst, tol);
    st_close(&a);
    st_close(&b);
    return bad ? 1 : 0;
}
