/* rng.h — counter-based normal RNG (Philox4x32-10 + Box-Muller).
 *
 * Counter-based so that image i of a request, seeded with seed+i, draws the same noise
 * whether it runs alone or batched with others, on any backend: the stream is a pure
 * function of (seed, offset). */
#ifndef SD_RNG_H
#define SD_RNG_H

#include <stdint.h>
#include <stddef.h>

struct sd_rng { uint64_t seed; uint64_t offset; /* in 4-word blocks consumed */ };

void sd_rng_init(struct sd_rng *r, uint64_t seed);
/* Fill n standard normals (mean 0, std 1). */
void sd_rng_normal(struct sd_rng *r, float *out, size_t n);
/* Uniform u32 and uniform float in [0,1). */
uint32_t sd_rng_u32(struct sd_rng *r);
float sd_rng_uniform(struct sd_rng *r);

#endif
