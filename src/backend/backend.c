/* backend.c — the backend registry and the helpers every backend shares (backend.h):
 * creating a backend by name, the sticky error, the arena allocator on backend memory.
 * Here rather than in cpu.c, so neither backend depends on the other. */
#include <stdio.h>
#include <string.h>

#include "backend.h"

sd_status backend_create(struct backend **out, const char *name, int threads) {
    if (!name || !strcmp(name, "cpu")) return backend_cpu_create(out, threads);
    if (!strcmp(name, "cuda")) {
#ifdef SD_HAVE_CUDA
        return backend_cuda_create(out, threads);
#else
        return sd_fail(SD_ERR_UNSUPPORTED, "backend 'cuda' is not built into this sdxld yet");
#endif
    }
    return sd_fail(SD_ERR_INVALID, "unknown backend '%s' (cpu, cuda)", name);
}

void backend_destroy(struct backend *be) { if (be) be->ops->destroy(be); }

void backend_set_error(struct backend *be, sd_status st, const char *msg) {
    if (be->err) return;
    be->err = st;
    snprintf(be->err_msg, sizeof be->err_msg, "%s", msg);
}

sd_status backend_status(struct backend *be) {
    if (!be->err) return SD_OK;
    return sd_fail(be->err, "%s backend: %s", be->name, be->err_msg);
}

static void *be_arena_alloc(void *ud, size_t n) { struct backend *be = ud; return be->ops->alloc(be, n); }
static void be_arena_free(void *ud, void *p) { struct backend *be = ud; be->ops->free(be, p); }

struct arena_allocator backend_allocator(struct backend *be) {
    return (struct arena_allocator){ be_arena_alloc, be_arena_free, be };
}

int backend_native_bf16(const struct backend *be) { return be->native_bf16; }

int backend_set_native_bf16(struct backend *be, int on) {
    be->native_bf16 = on && be->has_native_bf16;
    return be->native_bf16;
}

const char *backend_kernels(const struct backend *be) { return be->kernels[0] ? be->kernels : be->name; }
