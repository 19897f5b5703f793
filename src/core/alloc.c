/* alloc.c — checked host allocation with a live-byte count and fault injection.
 * Each block carries a 16-byte header with its size so sd_alloc_live_bytes() can prove
 * error paths free what they took (STYLE.md: fault injection). */
#include <stdatomic.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>
#include <time.h>

#include "core.h"

#define HDR 16
static atomic_size_t live_bytes;
static atomic_long fault_countdown;   /* 0 = disarmed */
static atomic_size_t alloc_calls;
static atomic_int fault_hit_optional;
static _Thread_local int optional_depth;

void sd_fault_arm_alloc(long nth) {
    atomic_store(&fault_hit_optional, 0);
    atomic_store(&fault_countdown, nth);
}
void sd_alloc_optional(int on) { optional_depth += on ? 1 : -1; }
int sd_fault_hit_optional(void) { return atomic_load(&fault_hit_optional); }
size_t sd_alloc_live_bytes(void) { return atomic_load(&live_bytes); }
size_t sd_alloc_calls(void) { return atomic_load(&alloc_calls); }

static int should_fail(void) {
    atomic_fetch_add(&alloc_calls, 1);
    long c = atomic_load(&fault_countdown);
    while (c > 0) {
        if (!atomic_compare_exchange_weak(&fault_countdown, &c, c - 1)) continue;
        if (c == 1 && optional_depth > 0) atomic_store(&fault_hit_optional, 1);
        return c == 1;
    }
    return 0;
}

void *sd_malloc(size_t n) {
    if (n > SIZE_MAX - HDR || should_fail()) {
        sd_fail(SD_ERR_NOMEM, "out of host memory allocating %zu bytes", n);
        return NULL;
    }
    char *p = malloc(n + HDR);
    if (!p) {
        sd_fail(SD_ERR_NOMEM, "out of host memory allocating %zu bytes", n);
        return NULL;
    }
    memcpy(p, &n, sizeof n);
    atomic_fetch_add(&live_bytes, n);
    return p + HDR;
}

void *sd_calloc(size_t n, size_t size) {
    if (size && n > SIZE_MAX / size) {
        sd_fail(SD_ERR_NOMEM, "allocation size overflow (%zu x %zu)", n, size);
        return NULL;
    }
    void *p = sd_malloc(n * size);
    if (p) memset(p, 0, n * size);
    return p;
}

void *sd_realloc(void *p, size_t n) {
    if (!p) return sd_malloc(n);
    char *base = (char *)p - HDR;
    size_t old;
    memcpy(&old, base, sizeof old);
    if (n > SIZE_MAX - HDR || should_fail()) {
        sd_fail(SD_ERR_NOMEM, "out of host memory growing to %zu bytes", n);
        return NULL;
    }
    char *q = realloc(base, n + HDR);
    if (!q) {
        sd_fail(SD_ERR_NOMEM, "out of host memory growing to %zu bytes", n);
        return NULL;
    }
    memcpy(q, &n, sizeof n);
    atomic_fetch_sub(&live_bytes, old);
    atomic_fetch_add(&live_bytes, n);
    return q + HDR;
}

void sd_free(void *p) {
    if (!p) return;
    char *base = (char *)p - HDR;
    size_t n;
    memcpy(&n, base, sizeof n);
    atomic_fetch_sub(&live_bytes, n);
    free(base);
}

char *sd_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = sd_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

char *sd_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = sd_malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

double sd_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void sd_heap_trim(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}
