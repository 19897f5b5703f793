/* train_common.c — see train_common.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/json.h"
#include "../core/rng.h"
#include "../io/png.h"
#include "train_common.h"

sd_status cache_build(struct latent_cache *c, struct fwd *f, struct cond *k, const struct vae *v,
                      const struct dataset *d, long long max_items, const struct yield_hook *y) {
    struct backend *be = f->be;
    memset(c, 0, sizeof *c);
    int S = dataset_resolution(d), s = vae_scale(v), h = S / s, C = v->cfg.latent_ch, L = k->L, X = k->X, P = k->P;
    long long K = dataset_size(d);
    if (max_items > 0 && max_items < K) K = max_items;
    if (K > (1 << 20)) K = 1 << 20;
    c->K = K; c->per_l = (size_t)C * h * h; c->per_c = (size_t)L * X; c->P = P; c->C = C; c->h = h;
    struct arena_allocator al = backend_allocator(be);
    arena_init(&c->mem, "latent cache", &al, 0);
    SD_TRY(arena_reserve(&c->mem, (size_t)K * (c->per_l + c->per_c + P) * 4 + 3 * 64));
    c->lat = arena_floats(&c->mem, K * c->per_l);
    c->ctx = arena_floats(&c->mem, K * c->per_c);
    c->pool = arena_floats(&c->mem, K * P);
    enum { CH = 16 };
    float *host = sd_malloc(sizeof(float) * CH * 3 * S * S);
    char *caps[CH] = { 0 };
    sd_status st = host ? SD_OK : SD_ERR_NOMEM;
    for (int i = 0; i < CH && !st; i++) if (!(caps[i] = sd_malloc(DATASET_CAPTION_MAX))) st = SD_ERR_NOMEM;
    double t0 = sd_now_ms();
    for (long long i0 = 0; i0 < K && !st; i0 += CH) {
        int n = (int)(K - i0 < CH ? K - i0 : CH);
        if (i0 && y && y->fn && y->fn(y->ud)) {
            st = sd_fail(SD_ERR_CANCELLED, "stopped while caching latents (%lld of %lld)", i0, K);
            break;
        }
        uint64_t mk = arena_mark(f->ar);
        for (int i = 0; i < n && !st; i++)
            st = dataset_get(d, (long)(i0 + i), host + (size_t)i * 3 * S * S, NULL, caps[i], DATASET_CAPTION_MAX, NULL);
        float *img = st ? NULL : fwd_alloc(f, (size_t)n * 3 * S * S);
        if (!img) { if (!st) st = backend_status(be); break; }
        be->ops->upload(be, img, host, (size_t)n * 3 * S * S * sizeof(float));
        vae_encode(f, v, c->lat + i0 * c->per_l, img, n, S, S);
        be->ops->axpby(be, c->lat + i0 * c->per_l, v->cfg.scaling_factor, c->lat + i0 * c->per_l, 0.0f, NULL,
                       (long long)(n * c->per_l));
        if (!st) st = cond_encode(k, f, (const char *const *)caps, n, c->ctx + i0 * c->per_c, c->pool + i0 * P, NULL);
        arena_reset(f->ar, mk);
    }
    if (!st) LOG_I("cached %lld latents (%dx%dx%d) and captions in %.1f s", K, C, h, h, (sd_now_ms() - t0) / 1e3);
    for (int i = 0; i < CH; i++) sd_free(caps[i]);
    sd_free(host);
    if (st) cache_free(c);
    return st;
}

void cache_free(struct latent_cache *c) { arena_free(&c->mem); }

sd_status eval_conditioning(struct fwd *f, const struct unet *u, const struct schedule *sch,
                            const struct latent_cache *c, int L, const float *time_ids, int nt, const int *ts,
                            uint64_t seed, double (*mse)[3]) {
    struct backend *be = f->be;
    enum { B = 16, DRAWS = 4 };
    if (c->K < 2) return sd_fail(SD_ERR_INVALID, "eval_conditioning: need at least 2 items");
    size_t nb = (size_t)B * c->per_l;
    uint64_t mk = arena_mark(f->ar);
    float *x = fwd_alloc(f, nb), *e = fwd_alloc(f, nb), *pred = fwd_alloc(f, nb);
    float *ctx = fwd_alloc(f, (size_t)B * c->per_c), *pool = fwd_alloc(f, (size_t)B * c->P);
    float *host = sd_malloc(nb * sizeof(float)), tv[B];
    sd_status st = host ? backend_status(be) : SD_ERR_NOMEM;
    struct sd_rng r;
    sd_rng_init(&r, seed);
    for (int i = 0; i < nt && !st; i++) {
        if (ts[i] < 0 || ts[i] >= sch->T) { st = sd_fail(SD_ERR_INVALID, "eval_conditioning: t %d out of range", ts[i]); break; }
        double a = sch->alphas_cumprod[ts[i]];
        mse[i][0] = mse[i][1] = mse[i][2] = 0;
        for (int dr = 0; dr < DRAWS && !st; dr++) {
            long long idx[B];
            for (int b = 0; b < B; b++) { idx[b] = (dr * B + b) % c->K; tv[b] = (float)ts[i]; }
            sd_rng_normal(&r, host, nb);
            be->ops->upload(be, e, host, nb * sizeof(float));
            for (int b = 0; b < B; b++)
                be->ops->axpby(be, x + b * c->per_l, (float)sqrt(a), c->lat + idx[b] * c->per_l, (float)sqrt(1 - a),
                               e + b * c->per_l, (long long)c->per_l);
            for (int mode = 0; mode < 3; mode++) {   /* own, another item's, null */
                for (int b = 0; b < B; b++) {
                    long long src = mode == 1 ? (idx[b] + 1 + c->K / 2) % c->K : idx[b];
                    if (mode == 2) {
                        be->ops->zero(be, ctx + b * c->per_c, c->per_c * sizeof(float));
                        be->ops->zero(be, pool + (size_t)b * c->P, (size_t)c->P * sizeof(float));
                    } else {
                        be->ops->copy(be, ctx + b * c->per_c, c->ctx + src * c->per_c, c->per_c * sizeof(float));
                        be->ops->copy(be, pool + (size_t)b * c->P, c->pool + src * c->P, (size_t)c->P * sizeof(float));
                    }
                }
                unet_forward(f, u, pred, x, tv, ctx, pool, time_ids, B, c->h, c->h, L);
                be->ops->axpby(be, pred, 1.0f, pred, -1.0f, e, (long long)nb);
                mse[i][mode] += be->ops->dot(be, pred, pred, (long long)nb) / nb / DRAWS;
                if ((st = backend_status(be))) break;
            }
        }
    }
    sd_free(host);
    arena_reset(f->ar, mk);
    return st;
}

/* The "captions" text of a grid: a JSON array of the captions of items[0..n-1]
 * (fresh, free()), or NULL with the status in *st. */
static char *grid_captions(const struct dataset *d, const long *items, int n, sd_status *st) {
    char *cap = sd_malloc(DATASET_CAPTION_MAX), *out = NULL;
    json_t *a = json_array();
    *st = cap && a ? SD_OK : SD_ERR_NOMEM;
    for (int i = 0; i < n && !*st; i++)
        if (!(*st = dataset_get(d, items[i], NULL, NULL, cap, DATASET_CAPTION_MAX, NULL)) &&
            json_array_append_new(a, json_string(cap)))
            *st = sd_fail(SD_ERR_FORMAT, "sample grid: caption of item %ld is not UTF-8", items[i]);
    if (!*st && !(out = json_dumps(a, JSON_COMPACT))) *st = SD_ERR_NOMEM;
    json_decref(a);
    sd_free(cap);
    return out;
}

/* Write n images [n, 3, S, S] in [-1, 1] side by side as one PNG, with their captions. */
sd_status save_grid(const char *path, const float *img, int n, int S, const struct dataset *d, const long *items) {
    sd_status st = SD_OK;
    char *caps = d && items ? grid_captions(d, items, n, &st) : NULL;
    uint8_t *rgb = st ? NULL : sd_malloc((size_t)n * S * S * 3);
    if (!rgb) { free(caps); return st ? st : SD_ERR_NOMEM; }
    for (int i = 0; i < n; i++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int ch = 0; ch < 3; ch++) {
                    float v = img[(((size_t)i * 3 + ch) * S + y) * S + x] * 0.5f + 0.5f;
                    v = v < 0 ? 0 : v > 1 ? 1 : v;
                    rgb[((size_t)y * n * S + (size_t)i * S + x) * 3 + ch] = (uint8_t)nearbyintf(v * 255.0f);
                }
    const struct png_text txt = { "captions", caps };
    st = png_write_file(path, rgb, n * S, S, caps ? &txt : NULL, caps ? 1 : 0);
    sd_free(rgb);
    free(caps);
    return st;
}

/* Items 0..n-1 (a grid of the first cached items) into items[]; returns items. */
const long *grid_first_items(long *items, int n) {
    for (int i = 0; i < n; i++) items[i] = i;
    return items;
}


void time_ids_square(float *tid, int n, int S) {
    const float t6[6] = { (float)S, (float)S, 0, 0, (float)S, (float)S };
    for (int i = 0; i < n; i++) memcpy(tid + 6 * i, t6, sizeof t6);
}
