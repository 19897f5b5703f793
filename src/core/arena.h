/* arena.h — bump allocators, one per kind of state (llm.c's rule).
 *
 * An arena hands out 64-byte aligned slices of memory it owns and frees them all at
 * once.  Two uses:
 *   - fixed: arena_reserve(bytes) once, sizes computed beforehand (parameters, gradients,
 *     optimiser moments).  arena_alloc fails with SD_ERR_NOMEM when it would overflow.
 *   - growable: scratch/activations whose peak is only known after one pass.  When a
 *     slice does not fit, the next block is used or a new one chained (old pointers stay
 *     valid); arena_reset(a, 0) with several blocks coalesces them into one block as
 *     large as all of them, so after the first (warm-up) pass the steady state makes no
 *     allocation at all.
 * Memory comes from an allocator (host malloc by default, or a backend's device malloc). */
#ifndef SD_ARENA_H
#define SD_ARENA_H

#include "core.h"

struct arena_allocator {
    void *(*alloc)(void *ud, size_t bytes);
    void (*free)(void *ud, void *p);
    void *ud;
};

#define ARENA_MAX_BLOCKS 32

struct arena {
    struct arena_allocator al;
    const char *name;       /* for messages and the memory report */
    int growable;
    int nblocks, cur;       /* blocks[0..nblocks), allocating from blocks[cur] */
    struct { char *base; size_t cap; } blocks[ARENA_MAX_BLOCKS];
    size_t used;            /* bytes used in blocks[cur] */
    size_t peak;            /* high-water mark of bytes in use */
};

/* al may be NULL for host memory. */
void arena_init(struct arena *a, const char *name, const struct arena_allocator *al, int growable);
sd_status arena_reserve(struct arena *a, size_t bytes);
void *arena_alloc(struct arena *a, size_t bytes);       /* NULL + message if out of room */
float *arena_floats(struct arena *a, size_t n);
size_t arena_capacity(const struct arena *a);
size_t arena_in_use(const struct arena *a);
uint64_t arena_mark(const struct arena *a);             /* an opaque position */
void arena_reset(struct arena *a, uint64_t mark);       /* free everything after mark */
/* An empty growable arena about to hold `bytes`: when its blocks are smaller, they are
 * replaced by one block as large as both, so no capacity is stranded beside a new block
 * (a VAE decode after a UNet pass).  A no-op when anything is in use; a failed
 * allocation leaves the arena empty (arena_alloc grows it later). */
void arena_expect(struct arena *a, size_t bytes);
void arena_free(struct arena *a);

#endif
