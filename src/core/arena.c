/* arena.c — see arena.h.  Marks pack (block index, offset) so a reset is O(1) and keeps
 * later blocks for reuse instead of returning them to the allocator. */
#include <string.h>

#include "arena.h"

#define ALIGN 64

static void *host_alloc(void *ud, size_t n) { (void)ud; return sd_malloc(n); }
static void host_free(void *ud, void *p) { (void)ud; sd_free(p); }

void arena_init(struct arena *a, const char *name, const struct arena_allocator *al, int growable) {
    memset(a, 0, sizeof *a);
    a->name = name;
    a->growable = growable;
    if (al) a->al = *al;
    else a->al = (struct arena_allocator){ host_alloc, host_free, NULL };
}

static sd_status add_block(struct arena *a, size_t bytes) {
    if (a->nblocks == ARENA_MAX_BLOCKS)
        return sd_fail(SD_ERR_NOMEM, "arena %s: too many blocks", a->name);
    bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    /* +ALIGN so the first slice can be aligned whatever the allocator returns */
    char *p = a->al.alloc(a->al.ud, bytes + ALIGN);
    if (!p) return sd_wrap(SD_ERR_NOMEM, "arena %s: reserving %zu MiB", a->name, bytes >> 20);
    a->blocks[a->nblocks].base = p;
    a->blocks[a->nblocks].cap = bytes + ALIGN;
    a->nblocks++;
    return SD_OK;
}

sd_status arena_reserve(struct arena *a, size_t bytes) {
    SD_ASSERT(a->nblocks == 0);
    return add_block(a, bytes);
}

static size_t in_use(const struct arena *a) {
    size_t s = a->used;
    for (int i = 0; i < a->cur; i++) s += a->blocks[i].cap;
    return s;
}

void *arena_alloc(struct arena *a, size_t bytes) {
    bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    for (;;) {
        if (a->cur < a->nblocks) {
            char *base = a->blocks[a->cur].base;
            uintptr_t start = ((uintptr_t)(base + a->used) + ALIGN - 1) & ~(uintptr_t)(ALIGN - 1);
            size_t off = (size_t)(start - (uintptr_t)base);
            if (off + bytes <= a->blocks[a->cur].cap) {
                a->used = off + bytes;
                size_t u = in_use(a);
                if (u > a->peak) a->peak = u;
                return (void *)start;
            }
            if (a->cur + 1 < a->nblocks) { a->cur++; a->used = 0; continue; }
        }
        if (!a->growable) {
            sd_fail(SD_ERR_NOMEM, "arena %s: %zu bytes do not fit (%zu of %zu in use)", a->name,
                    bytes, in_use(a), arena_capacity(a));
            return NULL;
        }
        size_t want = bytes + ALIGN;
        size_t grow = arena_capacity(a) / 2;
        if (grow > want) want = grow;
        if (a->cur == 0 && a->used == 0 && a->nblocks) {
            /* nothing in use: one block for all replaces the old ones, so their capacity is
             * not stranded beside the new block (a VAE decode after a UNet pass) */
            size_t cap = arena_capacity(a);
            for (int i = 0; i < a->nblocks; i++) a->al.free(a->al.ud, a->blocks[i].base);
            a->nblocks = 0;
            if (cap > want) want = cap;
        }
        if (add_block(a, want) != SD_OK) return NULL;
        a->cur = a->nblocks - 1;
        a->used = 0;
    }
}

float *arena_floats(struct arena *a, size_t n) {
    if (n > SIZE_MAX / sizeof(float)) return NULL;
    return arena_alloc(a, n * sizeof(float));
}

size_t arena_capacity(const struct arena *a) {
    size_t s = 0;
    for (int i = 0; i < a->nblocks; i++) s += a->blocks[i].cap;
    return s;
}

size_t arena_in_use(const struct arena *a) { return in_use(a); }

uint64_t arena_mark(const struct arena *a) { return ((uint64_t)a->cur << 48) | a->used; }

void arena_reset(struct arena *a, uint64_t mark) {
    a->cur = (int)(mark >> 48);
    a->used = (size_t)(mark & ((1ull << 48) - 1));
    if (mark == 0 && a->growable && a->nblocks > 1) {
        /* coalesce: one block as large as all of them; if that fails keep the chain */
        size_t total = arena_capacity(a);
        sd_alloc_optional(1);
        char *p = a->al.alloc(a->al.ud, total + ALIGN);
        sd_alloc_optional(0);
        if (p) {
            for (int i = 0; i < a->nblocks; i++) a->al.free(a->al.ud, a->blocks[i].base);
            a->blocks[0].base = p;
            a->blocks[0].cap = total + ALIGN;
            a->nblocks = 1;
        }
    }
}

void arena_free(struct arena *a) {
    for (int i = 0; i < a->nblocks; i++) a->al.free(a->al.ud, a->blocks[i].base);
    a->nblocks = a->cur = 0;
    a->used = 0;
}
