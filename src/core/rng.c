/* rng.c — Philox4x32-10 (Salmon et al., SC'11) keyed by the seed, counter = offset;
 * normals by Box-Muller on pairs of 32-bit words.  Stateless apart from the offset, so
 * the same (seed, offset) gives the same numbers on any machine or backend. */
#include <math.h>

#include "rng.h"

static void philox(uint32_t ctr[4], uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1; c3 = (uint32_t)p0; c0 = n0; c2 = n2;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

static void next_block(struct sd_rng *r, uint32_t out[4]) {
    uint32_t ctr[4] = { (uint32_t)r->offset, (uint32_t)(r->offset >> 32), 0x5344584Cu, 0 };
    uint32_t key[2] = { (uint32_t)r->seed, (uint32_t)(r->seed >> 32) };
    philox(ctr, key, out);
    r->offset++;
}

void sd_rng_init(struct sd_rng *r, uint64_t seed) { r->seed = seed; r->offset = 0; }

static double u01(uint32_t x) { return ((double)x + 0.5) / 4294967296.0; } /* (0,1) */

void sd_rng_normal(struct sd_rng *r, float *out, size_t n) {
    uint32_t w[4];
    for (size_t i = 0; i < n; i += 4) {
        next_block(r, w);
        for (int j = 0; j < 4 && i + j < n; j += 2) {
            double rad = sqrt(-2.0 * log(u01(w[j]))), th = 2.0 * M_PI * u01(w[j + 1]);
            out[i + j] = (float)(rad * cos(th));
            if (i + j + 1 < n) out[i + j + 1] = (float)(rad * sin(th));
        }
    }
}

uint32_t sd_rng_u32(struct sd_rng *r) {
    uint32_t w[4];
    next_block(r, w);
    return w[0];
}

float sd_rng_uniform(struct sd_rng *r) { return (float)(sd_rng_u32(r) >> 8) / 16777216.0f; }
