/* backend.c — the backend registry and the helpers every backend shares (backend.h):
 * creating a backend by name, the sticky error, the arena allocator on backend memory.
 * Here rather than in cpu.c, so neither backend depends on the other. */
#include <stdio.h>
#include <string.h>
#ifdef SD_HAVE_CUDA
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#endif

#include "backend.h"

sd_status backend_create(struct backend **out, const char *name, int threads) {
    if (!name || !strcmp(name, "cpu")) return backend_cpu_create(out, threads);
    if (!strcmp(name, "cuda")) return backend_cuda_create(out, threads);
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

/* ---- the CUDA backend, loaded on demand ----
 * cuBLAS(Lt), cuDNN and the CUDA runtime cost a process ~200 MiB of resident memory as
 * soon as they are loaded (their static data and initialisers), so they are not linked
 * into sdxld: the CUDA backend is a module, sdxld-cuda.so, opened the first time a CUDA
 * backend is asked for, and only after the NVIDIA driver (libcuda.so.1) has shown a
 * device.  A CPU-only run never maps them.  A binary that links cuda.c in (tests/gpu)
 * calls it directly.  The module is looked for at $SDXLD_CUDA_MODULE, beside the running
 * binary (the build tree), then in the install's SDXLD_CUDA_MODULE_DIR. */
#ifdef SD_HAVE_CUDA
typedef sd_status (*cuda_create_fn)(struct backend **out, int threads);
sd_status sdxld_cuda_backend_create(struct backend **out, int threads) __attribute__((weak));

static struct {
    pthread_once_t once;
    cuda_create_fn create;
    sd_status st;
    char why[512];
} cuda_mod = { .once = PTHREAD_ONCE_INIT };

/* The driver shows at least one device: else why not, in cuda_mod.why. */
static int cuda_driver_has_device(void) {
    void *drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!drv) {
        snprintf(cuda_mod.why, sizeof cuda_mod.why, "cuda: no usable GPU: no NVIDIA driver (%s)", dlerror());
        return 0;
    }
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(drv, "cuInit");
    int (*count)(int *) = (int (*)(int *))dlsym(drv, "cuDeviceGetCount");
    int n = 0, e = init && count ? init(0) : -1;
    if (e == 0) e = count(&n);
    if (e != 0 || n <= 0) {
        snprintf(cuda_mod.why, sizeof cuda_mod.why, "cuda: no usable GPU: %s",
                 e != 0 ? "the NVIDIA driver does not start (cuInit failed)" : "no devices");
        return 0;   /* the driver stays loaded: unloading a driver library is not worth its risks */
    }
    return 1;
}

/* The module, or NULL with the loader's reasons in why (both places tried, when both were). */
static void *cuda_module_open(char *why, size_t n) {
    const char *env = getenv("SDXLD_CUDA_MODULE");
    void *h;
    if (env && *env) {
        if (!(h = dlopen(env, RTLD_NOW | RTLD_LOCAL))) snprintf(why, n, "%s", dlerror());
        return h;
    }
    char exe[PATH_MAX], first[240] = "";
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 32);
    char *slash = len > 0 ? (exe[len] = 0, strrchr(exe, '/')) : NULL;
    if (slash) {   /* beside the binary: the build tree */
        strcpy(slash + 1, "sdxld-cuda.so");
        if ((h = dlopen(exe, RTLD_NOW | RTLD_LOCAL))) return h;
        snprintf(first, sizeof first, "%s", dlerror());
    }
    if ((h = dlopen(SDXLD_CUDA_MODULE_DIR "/sdxld-cuda.so", RTLD_NOW | RTLD_LOCAL))) return h;
    snprintf(why, n, "%s%s%s", first, *first ? "; " : "", dlerror());
    return NULL;
}

static void cuda_module_load(void) {
    cuda_mod.st = SD_ERR_CUDA;
    if (!cuda_driver_has_device()) return;
    char why[480] = "";
    void *h = cuda_module_open(why, sizeof why);
    if (!h) {
        snprintf(cuda_mod.why, sizeof cuda_mod.why, "cuda: the CUDA module of this build did not load: %s", why);
        cuda_mod.st = SD_ERR_UNSUPPORTED;
        return;
    }
    cuda_mod.create = (cuda_create_fn)dlsym(h, "sdxld_cuda_backend_create");
    if (!cuda_mod.create) {
        snprintf(cuda_mod.why, sizeof cuda_mod.why, "cuda: the CUDA module has no entry point: %s", dlerror());
        cuda_mod.st = SD_ERR_UNSUPPORTED;
        return;
    }
    cuda_mod.st = SD_OK;   /* never closed: cuBLAS and cuDNN do not unload cleanly */
}
#endif

sd_status backend_cuda_create(struct backend **out, int threads) {
    *out = NULL;
#ifdef SD_HAVE_CUDA
    if (sdxld_cuda_backend_create) return sdxld_cuda_backend_create(out, threads);
    pthread_once(&cuda_mod.once, cuda_module_load);
    if (cuda_mod.st != SD_OK) return sd_fail(cuda_mod.st, "%s", cuda_mod.why);
    return cuda_mod.create(out, threads);
#else
    (void)threads;
    return sd_fail(SD_ERR_UNSUPPORTED, "backend 'cuda' is not built into this sdxld yet");
#endif
}
