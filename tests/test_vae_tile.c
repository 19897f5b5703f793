/* test_vae_tile.c — the tiled VAE decode (engine_set_vae_tile, model/vae_tile.c).
 * The tile plan and blend weights alone (cover, overlap, weights adding up to 1), then on
 * the tiny golden model: a latent within one tile is bit-identical to the untiled decode;
 * a tile's own pixels come through unchanged where no neighbour overlaps them; the arena
 * peaks at one tile's decode; and the error of tiled against untiled decode (random,
 * encoded-image and constant latents, and engine_generate), reported and bounded, with no
 * jump at the tile borders beyond what the untiled image has there. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "engine.h"
#include "model/vae.h"

/* ---- the plan and the weights alone ---- */

/* Every pixel of an axis of n latent pixels covered, by at most two tiles, neighbours
 * sharing exactly the overlap, no tile above `tile`, weights adding up to 1. */
static int plan_ok(int n, int tile, int overlap, int s) {
    struct vae_tiling t;
    vae_tiling_plan(&t, n, tile, overlap);
    if (vae_tile_start(&t, 0) != 0 || vae_tile_start(&t, t.k - 1) + vae_tile_size(&t, t.k - 1) != n) return 0;
    for (int i = 0; i < t.k; i++) {
        if (vae_tile_size(&t, i) > tile || vae_tile_size(&t, i) < 1) return 0;
        if (i && vae_tile_start(&t, i - 1) + vae_tile_size(&t, i - 1) - vae_tile_start(&t, i) != t.overlap) return 0;
    }
    for (int x = 0; x < n * s; x++) {
        float sum = 0;
        int cover = 0;
        for (int i = 0; i < t.k; i++) {
            int q = x - s * vae_tile_start(&t, i);
            if (q < 0 || q >= s * vae_tile_size(&t, i)) continue;
            float w = vae_tile_weight(&t, i, q, s);
            if (!(w > 0 && w <= 1)) return 0;
            sum += w;
            cover++;
        }
        if (cover < 1 || cover > 2 || fabsf(sum - 1) > 1e-6f) return 0;
    }
    return 1;
}

static void test_plan(void) {
    int bad = 0, cases = 0;
    for (int tile = 8; tile <= 40; tile += 3)
        for (int n = 1; n <= 200; n += 7)
            for (int ov = 1; ov <= tile / 4; ov++, cases++) bad += !plan_ok(n, tile, ov, 8);
    ok(bad == 0, "tile plans cover every axis with tiles <= tile, neighbours share the overlap, at most two "
       "tiles per pixel, weights add up to 1 (%d of %d plans wrong)", bad, cases);
    struct vae_tiling t;
    vae_tiling_plan(&t, 128, 32, 8);
    ok(t.k == 5 && t.base == 32 && t.rem == 0, "128 latent pixels in tiles of 32 overlapping 8: 5 tiles of 32 (%d of %d)",
       t.k, t.base);
    vae_tiling_plan(&t, 32, 32, 8);
    ok(t.k == 1 && t.base == 32, "an axis within one tile is one tile");
    vae_tiling_plan(&t, 100, 32, 30);
    ok(t.overlap == 8, "the overlap is at most tile / 4 (asked 30, got %d)", t.overlap);
}

/* ---- the tiny model ---- */

#define TILE 12             /* latent pixels, and the overlap: tile / 4 */
#define OVERLAP 3
/* The bounds, from what this model measures (tiles of 12 overlapping 3, 224 × 160
 * pixels; the diag lines print the figures).  Each tile's GroupNorm statistics and mid
 * attention cover that tile, not the whole latent, and this model's random weights turn
 * those differences into large pixel changes: a random N(0, 1) latent measures 19.5 dB
 * PSNR (max 184/255), engine_generate's latent 26.5 dB (max 90/255), a constant latent,
 * whose untiled image is flat but for the border effects the small tiles multiply,
 * 10.9 dB.  The bounds sit 1.5-2.5 dB below: they catch a blend that drifts, not the
 * approach's own error, which docs/benchmarks.md reports for SDXL.  Seams: the largest
 * excess jump across a line where tiles meet (seam_axis) measures 7.5 and 14.5 levels
 * (random, constant latent) against 8.4 and 0.8 for the untiled image on the same lines;
 * tiles switched hard in the middle of the overlap instead of the ramps measure 29 and
 * 72.  SEAM_LEVELS above the untiled image's figure tells the two apart. */
#define MIN_PSNR_RANDOM_DB 18.0
#define MIN_PSNR_GENERATE_DB 24.0
#define MIN_PSNR_CONSTANT_DB 9.0
#define SEAM_LEVELS 16.0

struct ctx {
    struct engine *e;
    int s, C;               /* pixels per latent, latent channels */
};

static sd_status decode(struct ctx *c, int tile, const float *z, int N, int h, int w, float *img) {
    sd_status st = engine_set_vae_tile(c->e, tile, tile ? OVERLAP : 0);
    return st ? st : engine_vae_decode(c->e, z, N, h, w, img);
}

static size_t npix(const struct ctx *c, int N, int h, int w) { return (size_t)N * 3 * h * c->s * w * c->s; }

/* Mean |img[x] − img[x−1]| over a whole pixel line: columns (vertical line x) or rows. */
static double line_jump(const float *img, int P, int Hp, int Wp, int vertical, int x) {
    double sum = 0;
    int len = vertical ? Hp : Wp;
    for (int p = 0; p < P; p++)
        for (int k = 0; k < len; k++) {
            size_t i = vertical ? ((size_t)p * Hp + k) * Wp + x : ((size_t)p * Hp + x) * Wp + k;
            sum += fabs(img[i] - img[i - (vertical ? 1 : (size_t)Wp)]);
        }
    return 127.5 * sum / ((double)P * len);   /* 8-bit levels */
}

/* The seam of img along one axis: the largest excess of the mean jump across a pixel
 * line over the mean jump across the lines 2..5 pixels either side (a seam is a line
 * that jumps more than its neighbours), over every line where two tiles meet: the
 * overlaps, their borders included. */
static double seam_axis(const struct ctx *c, const float *img, int N, int h, int w, int vertical) {
    struct vae_tiling t;
    int n = vertical ? w : h, Hp = h * c->s, Wp = w * c->s, np = c->s * n;
    vae_tiling_plan(&t, n, TILE, OVERLAP);
    double worst = 0;
    for (int i = 1; i < t.k; i++)
        for (int X = c->s * vae_tile_start(&t, i); X <= c->s * (vae_tile_start(&t, i - 1) + vae_tile_size(&t, i - 1)); X++) {
            double near = 0;
            int cnt = 0;
            for (int d = 2; d <= 5; d++)
                for (int sg = -1; sg <= 1; sg += 2)
                    if (X + sg * d >= 1 && X + sg * d < np) { near += line_jump(img, N * 3, Hp, Wp, vertical, X + sg * d); cnt++; }
            worst = fmax(worst, line_jump(img, N * 3, Hp, Wp, vertical, X) - near / cnt);
        }
    return worst;
}

static double seam(const struct ctx *c, const float *img, int N, int h, int w) {
    return fmax(seam_axis(c, img, N, h, w, 0), seam_axis(c, img, N, h, w, 1));
}

/* Tiled against untiled decode of z [N, C, h, w]: the error, reported and bounded; the seams. */
static void compare(struct ctx *c, const char *what, const float *z, int N, int h, int w, double min_psnr) {
    size_t n = npix(c, N, h, w);
    float *t = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float));
    ok(decode(c, TILE, z, N, h, w, t) == SD_OK && decode(c, 0, z, N, h, w, u) == SD_OK, "%s: %dx%d latent decoded "
       "tiled and untiled", what, w, h);
    struct engine_pixel_error pe;
    engine_pixel_error(t, u, n, &pe);
    double seam_t = seam(c, t, N, h, w), seam_u = seam(c, u, N, h, w);
    diag("%s: tiled vs untiled: max |diff| %d/255, PSNR %.2f dB, max |diff| %.4f of [-1, 1]; seam where tiles meet "
         "%.2f levels (the untiled image on the same lines: %.2f)", what, pe.max_abs, pe.psnr_db, pe.max_abs_float,
         seam_t, seam_u);
    ok(pe.psnr_db >= min_psnr, "%s: the tiled decode is within %.0f dB PSNR of the untiled one (%.2f dB)", what,
       min_psnr, pe.psnr_db);
    ok(seam_t <= seam_u + SEAM_LEVELS, "%s: no seam where tiles meet: %.2f levels <= the untiled image's %.2f + %.0f",
       what, seam_t, seam_u, SEAM_LEVELS);
    free(t);
    free(u);
}

/* Both decodes of a latent within one tile (both axes <= TILE) are the same bits. */
static void test_one_tile(struct ctx *c, const float *z) {
    size_t n = npix(c, 1, TILE, TILE - 4);
    float *t = malloc(n * sizeof(float)), *u = malloc(n * sizeof(float));
    ok(decode(c, TILE, z, 1, TILE, TILE - 4, t) == SD_OK && decode(c, 0, z, 1, TILE, TILE - 4, u) == SD_OK &&
       !memcmp(t, u, n * sizeof(float)), "a %dx%d latent (one tile) decodes bit-identically with tiling on", TILE - 4, TILE);
    free(t);
    free(u);
}

/* Where no neighbour overlaps it, the first tile's pixels are its own decode's, bit for
 * bit: the latent tile gathered, decoded and put back in place. */
static void test_own_pixels(struct ctx *c, const float *z, int N, int h, int w, const float *tiled) {
    struct vae_tiling ty, tx;
    vae_tiling_plan(&ty, h, TILE, OVERLAP);
    vae_tiling_plan(&tx, w, TILE, OVERLAP);
    int th = vae_tile_size(&ty, 0), tw = vae_tile_size(&tx, 0), s = c->s, bad = 0;
    float *zt = malloc((size_t)N * c->C * th * tw * sizeof(float)), *it = malloc(npix(c, N, th, tw) * sizeof(float));
    for (int p = 0; p < N * c->C; p++)
        for (int y = 0; y < th; y++) memcpy(zt + ((size_t)p * th + y) * tw, z + ((size_t)p * h + y) * w, tw * sizeof(float));
    ok(decode(c, 0, zt, N, th, tw, it) == SD_OK, "the first tile (%dx%d) decoded alone", tw, th);
    for (int p = 0; p < N * 3; p++)
        for (int y = 0; y < s * (th - OVERLAP); y++)
            for (int x = 0; x < s * (tw - OVERLAP); x++)
                bad += it[((size_t)p * th * s + y) * tw * s + x] != tiled[((size_t)p * h * s + y) * w * s + x];
    ok(bad == 0, "the tiled image holds the first tile's own pixels where no other tile overlaps (%d differ)", bad);
    free(zt);
    free(it);
}

/* engine_generate decodes through the same switch: 4 steps at W × H pixels, rgb out. */
static sd_status generate(struct ctx *c, int tile, int W, int H, uint8_t *rgb) {
    struct gen_params p = { .width = W, .height = H, .nsteps = 4 };
    engine_default_timesteps(p.nsteps, p.timesteps);
    struct gen_item item = { .prompt = "a red circle", .seed = 3 };
    sd_status st = engine_set_vae_tile(c->e, tile, tile ? OVERLAP : 0);
    return st ? st : engine_generate(c->e, &p, &item, 1, rgb, NULL, NULL, NULL);
}

/* 8-bit levels back to the decoder's [-1, 1], for engine_pixel_error. */
static void to_signed(const uint8_t *rgb, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = rgb[i] / 127.5f - 1.0f;
}

static void test_generate(struct ctx *c) {
    const int W = 224, H = 160;
    size_t n = (size_t)W * H * 3;
    uint8_t *t = malloc(n), *u = malloc(n);
    float *tf = malloc(n * sizeof(float)), *uf = malloc(n * sizeof(float));
    ok(generate(c, 0, 64, 64, u) == SD_OK && generate(c, TILE, 64, 64, t) == SD_OK && !memcmp(t, u, 64 * 64 * 3),
       "engine_generate at 64x64 (one tile) makes the same bytes with tiling on");
    ok(generate(c, 0, W, H, u) == SD_OK && generate(c, TILE, W, H, t) == SD_OK, "engine_generate at %dx%d, "
       "untiled and tiled", W, H);
    to_signed(t, tf, n);
    to_signed(u, uf, n);
    struct engine_pixel_error pe;
    engine_pixel_error(tf, uf, n, &pe);
    diag("engine_generate %dx%d: tiled vs untiled: max |diff| %d/255, PSNR %.2f dB", W, H, pe.max_abs, pe.psnr_db);
    ok(pe.psnr_db >= MIN_PSNR_GENERATE_DB && pe.psnr_db < INFINITY, "engine_generate's tiled image is within %.0f dB "
       "PSNR of the untiled one, and not equal to it (%.2f dB)", MIN_PSNR_GENERATE_DB, pe.psnr_db);
    free(t);
    free(u);
    free(tf);
    free(uf);
}

static void test_settings(struct ctx *c) {
    ok(engine_set_vae_tile(c->e, ENGINE_VAE_TILE_MIN - 1, 0) == SD_ERR_INVALID && strstr(sd_last_error(), "vae_tile"),
       "a tile below %d latent pixels is refused naming vae_tile", ENGINE_VAE_TILE_MIN);
    ok(engine_set_vae_tile(c->e, 16, 5) == SD_ERR_INVALID, "an overlap above tile / 4 is refused");
    ok(engine_set_vae_tile(c->e, 16, 0) == SD_OK && engine_info(c->e)->vae_tile == 16 &&
       engine_info(c->e)->vae_tile_overlap == 4, "overlap 0 is tile / 4, shown in engine_info");
    ok(engine_set_vae_tile(c->e, 0, 0) == SD_OK && engine_info(c->e)->vae_tile == 0, "tile 0 turns tiling off");
}

int main(void) {
    test_plan();
    const char *env = getenv("SDXLD_TEST_DATA");
    char model[600];
    snprintf(model, sizeof model, "%s/tiny-sdxl-a", env ? env : "tests/data");
    struct ctx c = { 0 };
    struct engine_config ec = { .model_dir = model, .threads = 1 };
    sd_status st = engine_load(&c.e, &ec);
    if (!ok(st == SD_OK, "the tiny model loads%s%s", st ? ": " : "", st ? sd_last_error() : ""))
        return done_testing();
    c.s = engine_info(c.e)->vae_scale;
    c.C = engine_info(c.e)->latent_channels;
    const int N = 2, h = 20, w = 28;   /* 160 × 224 pixels: 2 × 3 tiles */
    size_t nz = (size_t)N * c.C * h * w;
    float *z = malloc(nz * sizeof(float));
    struct sd_rng r;
    sd_rng_init(&r, 99);
    sd_rng_normal(&r, z, nz);

    /* the arena: a lone tile first, then the tiled decode, then the untiled one */
    size_t n = npix(&c, N, h, w);
    float *img = malloc(n * sizeof(float)), *img2 = malloc(n * sizeof(float));
    ok(decode(&c, 0, z, N, TILE, TILE, img) == SD_OK, "a %dx%d latent alone", TILE, TILE);
    size_t peak1 = engine_info(c.e)->scratch_bytes;
    ok(decode(&c, TILE, z, N, h, w, img) == SD_OK, "%dx%d tiled", w, h);
    size_t peak_t = engine_info(c.e)->scratch_bytes;
    ok(decode(&c, 0, z, N, h, w, img2) == SD_OK, "%dx%d untiled", w, h);
    size_t peak_u = engine_info(c.e)->scratch_bytes;
    ok(peak_t == peak1 && peak_u > peak_t, "the tiled decode's arena peaks at one tile's decode: %.2f MiB (a lone "
       "tile %.2f MiB), the untiled decode's at %.2f MiB", peak_t / 1048576.0, peak1 / 1048576.0, peak_u / 1048576.0);
    test_one_tile(&c, z);
    test_own_pixels(&c, z, N, h, w, img);

    compare(&c, "random latent", z, N, h, w, MIN_PSNR_RANDOM_DB);
    for (size_t i = 0; i < nz; i++) z[i] = 0.3f;
    compare(&c, "constant latent", z, N, h, w, MIN_PSNR_CONSTANT_DB);
    test_generate(&c);
    test_settings(&c);
    free(img);
    free(img2);
    free(z);
    engine_free(c.e);
    return done_testing();
}
