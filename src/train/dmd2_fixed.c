/* dmd2_fixed.c — see dmd2_fixed.h (a test seam: the trainer's draws, head and cache). */
#include "dmd2_fixed.h"

void dmd2_draw_normals(const struct dmd2_fixed *fx, struct sd_rng *r, int step, enum dmd2_draw what, int i, float *out,
                       size_t n) {
    if (fx && fx->normals) fx->normals(fx->ud, step, what, i, out, n);
    else sd_rng_normal(r, out, n);
}

uint32_t dmd2_draw_u32(const struct dmd2_fixed *fx, struct sd_rng *r, int step, enum dmd2_draw what, int i, uint32_t range) {
    if (!fx || !fx->u32) return sd_rng_u32(r) % range;
    uint32_t v = fx->u32(fx->ud, step, what, i, range);
    SD_ASSERT(v < range);
    return v;
}

sd_status dmd2_fixed_head(const struct dmd2_fixed *fx, struct weight_table *head, struct backend *be, uint64_t seed) {
    if (fx && fx->head_init) return wt_load(head, be, fx->head_init, NULL);
    return wt_init_random(head, be, seed);
}

sd_status dmd2_fixed_cache(const struct dmd2_fixed *fx, struct latent_cache *c, struct backend *be) {
    if (!fx || fx->K <= 0) return SD_OK;
    if (fx->K != c->K) return sd_fail(SD_ERR_INVALID, "dmd2 test seam: %lld fixed rows for a cache of %lld", fx->K, c->K);
    be->ops->upload(be, c->lat, fx->lat, (size_t)c->K * c->per_l * sizeof(float));
    be->ops->upload(be, c->ctx, fx->ctx, (size_t)c->K * c->per_c * sizeof(float));
    be->ops->upload(be, c->pool, fx->pool, (size_t)c->K * c->P * sizeof(float));
    return backend_status(be);
}
