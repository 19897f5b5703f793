/* vae_tile.c — the tiled VAE decode (vae.h): a large latent decoded tile by tile, so
 * the activation arena holds one tile's decode at a time, the pixel tiles blended with
 * linear ramps across their overlaps.  The decoder's GroupNorms and mid attention see
 * one tile instead of the whole latent, so a tiled image differs a little from the
 * untiled one (measured in tests/test_vae_tile.c and docs/benchmarks.md); the overlap
 * and the ramps hide the seams. */
#include <string.h>

#include "vae.h"

void vae_tiling_plan(struct vae_tiling *t, int n, int tile, int overlap) {
    if (tile < 4) tile = 4;
    int o = overlap < 1 ? 1 : overlap > tile / 4 ? tile / 4 : overlap;
    t->n = n;
    t->overlap = o;
    if (n <= tile) {
        t->k = 1; t->base = n; t->rem = 0;
        return;
    }
    /* the fewest tiles of at most `tile` that cover n with o shared between neighbours */
    t->k = (n - o + (tile - o) - 1) / (tile - o);
    int span = n + (t->k - 1) * o;   /* the tiles' sizes add up to this */
    t->base = span / t->k;
    t->rem = span % t->k;
    SD_ASSERT(t->base >= 2 * o && t->base + (t->rem > 0) <= tile);
}

float vae_tile_weight(const struct vae_tiling *t, int i, int q, int s) {
    int ramp = s * t->overlap, size = s * vae_tile_size(t, i);
    if (i > 0 && q < ramp) return ((float)q + 0.5f) / (float)ramp;
    if (i < t->k - 1 && q >= size - ramp) return ((float)(size - q) - 0.5f) / (float)ramp;
    return 1.0f;
}

struct tile_job {
    struct fwd *f;
    const struct vae *m;
    int N, C, O, s, h, w;
    float *hz, *hi, *wy, *wx;        /* host: a latent tile, its pixels, its weights per axis */
};

/* Latent rows [y0, y0+th) × cols [x0, x0+tw) of z into j->hz [N, C, th, tw]. */
static void gather(const struct tile_job *j, const float *z, int y0, int x0, int th, int tw) {
    for (int n = 0; n < j->N; n++)
        for (int c = 0; c < j->C; c++)
            for (int y = 0; y < th; y++)
                memcpy(j->hz + (((size_t)n * j->C + c) * th + y) * tw,
                       z + (((size_t)n * j->C + c) * j->h + y0 + y) * j->w + x0, (size_t)tw * sizeof(float));
}

/* One tile through vae_decode on the backend, its pixels downloaded into j->hi; the
 * arena is given back before the next tile. */
static void decode_one(const struct tile_job *j, int th, int tw) {
    struct backend *be = j->f->be;
    size_t nz = (size_t)j->N * j->C * th * tw, ni = (size_t)j->N * j->O * th * j->s * tw * j->s;
    uint64_t mk = arena_mark(j->f->ar);
    float *dz = fwd_alloc(j->f, nz), *di = fwd_alloc(j->f, ni);
    if (dz && di) {
        be->ops->upload(be, dz, j->hz, nz * sizeof(float));
        vae_decode(j->f, j->m, di, dz, j->N, th, tw);
        if (!be->err) be->ops->download(be, j->hi, di, ni * sizeof(float));
    }
    arena_reset(j->f->ar, mk);
}

/* img += wy ⊗ wx ⊙ the tile's pixels at pixel (Y0, X0), size PH × PW. */
static void blend(const struct tile_job *j, float *img, int Y0, int X0, int PH, int PW) {
    size_t H = (size_t)j->h * j->s, W = (size_t)j->w * j->s;
    for (int n = 0; n < j->N; n++)
        for (int c = 0; c < j->O; c++)
            for (int y = 0; y < PH; y++) {
                const float *src = j->hi + (((size_t)n * j->O + c) * PH + y) * PW;
                float *dst = img + (((size_t)n * j->O + c) * H + Y0 + y) * W + X0;
                float wy = j->wy[y];
                for (int x = 0; x < PW; x++) dst[x] += wy * j->wx[x] * src[x];
            }
}

void vae_decode_tiled(struct fwd *f, const struct vae *m, float *img, const float *z, int N, int h, int w,
                      int tile, int overlap) {
    struct vae_tiling ty, tx;
    vae_tiling_plan(&ty, h, tile, overlap);
    vae_tiling_plan(&tx, w, tile, overlap);
    int s = vae_scale(m), mh = ty.base + (ty.rem > 0), mw = tx.base + (tx.rem > 0);
    struct tile_job j = { f, m, N, m->cfg.latent_ch, m->cfg.out_ch, s, h, w, NULL, NULL, NULL, NULL };
    j.hz = sd_malloc((size_t)N * j.C * mh * mw * sizeof(float));
    j.hi = sd_malloc((size_t)N * j.O * mh * s * mw * s * sizeof(float));
    j.wy = sd_malloc((size_t)mh * s * sizeof(float));
    j.wx = sd_malloc((size_t)mw * s * sizeof(float));
    if (!j.hz || !j.hi || !j.wy || !j.wx) backend_set_error(f->be, SD_ERR_NOMEM, "tiled VAE decode: no memory for a tile");
    else memset(img, 0, (size_t)N * j.O * h * s * w * s * sizeof(float));
    for (int iy = 0; iy < ty.k && !f->be->err; iy++) {
        int y0 = vae_tile_start(&ty, iy), th = vae_tile_size(&ty, iy);
        for (int q = 0; q < th * s; q++) j.wy[q] = vae_tile_weight(&ty, iy, q, s);
        for (int ix = 0; ix < tx.k && !f->be->err; ix++) {
            int x0 = vae_tile_start(&tx, ix), tw = vae_tile_size(&tx, ix);
            for (int q = 0; q < tw * s; q++) j.wx[q] = vae_tile_weight(&tx, ix, q, s);
            gather(&j, z, y0, x0, th, tw);
            decode_one(&j, th, tw);
            if (!f->be->err) blend(&j, img, y0 * s, x0 * s, th * s, tw * s);
        }
    }
    sd_free(j.hz);
    sd_free(j.hi);
    sd_free(j.wy);
    sd_free(j.wx);
}
