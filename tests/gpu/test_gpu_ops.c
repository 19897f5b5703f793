/* test_gpu_ops.c — the `gpu` harness: every forward op of the CUDA backend against the CPU
 * backend (the fp32 oracle) on fresh random inputs, over every case of the op table
 * (tests/op_cases.c) with a gpu or gpu_fp32 bound: toy sizes that hit the edges and SDXL
 * sizes (GEMM transposes, leading dimensions, batches and strides; conv strides, the VAE
 * encoder's right/bottom-only padding, rectangular kernels, batches split in chunks; norms
 * at a mean far from 0; attention causal, with padded and fused strides, at every head
 * width template; the elementwise ops); ops that allow it also in place.  Then copy/zero
 * and the error and memory contracts.  The training ops are test_gpu_backward.c.
 *
 * Outputs are poisoned with NaN before each GPU op, so an element the op never wrote
 * fails the comparison; layout padding must keep its bits.  The measure is the normalized error ‖gpu − cpu‖ / ‖cpu‖ (the
 * square root of STYLE.md's nmse) with a per-op bound: fp32 kernels near 1e-6, TF32
 * products (10-bit mantissa operands) near 3e-4.  GEMM and conv run both with TF32 and
 * with plain fp32.
 *
 * Suite `gpu`.  Without a usable GPU it prints a TAP skip and exits 77 (meson's skip);
 * tests/gpu/run.sh treats that as a failure. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "gpu/gpu_util.h"
#include "gpu/op_gpu.h"

/* ---- every case of the table with a gpu / gpu_fp32 bound ---- */

/* conv rows with a chunk run on a second backend whose conv calls hold at most that many
 * values (SDXLD_CUDA_CONV_CHUNK, a test knob read at creation): every image its own call */
static struct backend *chunked;

static struct backend *backend_for(const struct op_case *c) {
    if (c->op != OP_CONV2D || !c->conv.chunk) return gpu;
    if (!chunked) {
        char v[32];
        snprintf(v, sizeof v, "%d", c->conv.chunk);
        setenv("SDXLD_CUDA_CONV_CHUNK", v, 1);
        sd_status st = backend_create(&chunked, "cuda", 0);
        unsetenv("SDXLD_CUDA_CONV_CHUNK");
        if (!ok(st == SD_OK, "second CUDA backend for conv chunking")) chunked = NULL;
    }
    return chunked;
}

static void run_case(const struct op_case *c, int tf32) {
    struct backend *keep = gpu;
    if (!(gpu = backend_for(c))) { gpu = keep; return; }
    const struct op_kind *k = &op_kinds[c->op];
    double tol = tf32 ? c->tol.gpu : c->tol.gpu_fp32;
    backend_cuda_set_tf32(gpu, tf32);
    struct op_host h;
    op_host_alloc(c, &R, &h);
    size_t n = h.d[h.out].n;
    float *d[OP_MAX_BUFS], *before = op_dup(h.b[h.out], n);
    op_dev_alloc(&h, d);
    double t0 = sd_now_ms();
    k->forward(gpu, c, d);
    gpu->ops->sync(gpu);
    double ms = sd_now_ms() - t0;
    backend_cpu_set_tile(cpu, c->tile);
    k->forward(cpu, c, h.b);
    backend_cpu_set_tile(cpu, 0);
    char name[256], what[320];
    op_case_name(c, name, sizeof name);
    snprintf(what, sizeof what, "%s %s (%.2f ms)", tf32 ? "tf32" : "fp32", name, ms);
    op_check(what, c, h.out, d[h.out], h.b[h.out], before, n, tol);
    if (k->inplace) {   /* out == buffer 0 */
        float *io = dev(h.b[0], n), *d2[OP_MAX_BUFS];
        memcpy(d2, d, sizeof d2);
        d2[0] = d2[h.out] = io;
        k->forward(gpu, c, d2);
        snprintf(what, sizeof what, "%s %s in place", tf32 ? "tf32" : "fp32", name);
        op_check(what, c, h.out, io, h.b[h.out], h.b[h.out], n, tol);
        dfree(io);
    }
    op_dev_free(&h, d);
    free(before);
    op_host_free(&h);
    gpu = keep;
}

/* ---- memory ops ---- */

static void test_copy_zero(void) {
    size_t n = 1 << 20;
    float *x = rnd(n), *y = calloc(n, sizeof(float)), *dx = dev(x, n), *dz = dev_nan(n);
    gpu->ops->copy(gpu, dz, dx, n * sizeof(float));
    check("copy", dz, x, n, 1e-7);
    gpu->ops->zero(gpu, dz, n * sizeof(float));
    float *g = back(dz, n);
    ok(!memcmp(g, y, n * sizeof(float)), "zero");
    free(g); free(x); free(y);
    dfree(dx); dfree(dz);
}

/* ---- contracts: sticky errors, memory accounting ---- */

static void test_contracts(void) {
    ok(gpu->ops->mem_in_use && gpu->ops->mem_peak, "cuda reports its memory");
    ok(cpu->ops->mem_in_use == NULL && cpu->ops->mem_peak == NULL, "cpu does not");
    size_t base = gpu->ops->mem_in_use(gpu);
    float *a = dev(NULL, 1 << 20);
    ok(gpu->ops->mem_in_use(gpu) >= base + (4u << 20), "an alloc is counted (%zu -> %zu bytes)", base,
       gpu->ops->mem_in_use(gpu));
    dfree(a);
    ok(gpu->ops->mem_in_use(gpu) == base, "a free is counted");
    ok(gpu->ops->mem_peak(gpu) >= base + (4u << 20), "peak holds the high-water mark (%zu bytes)", gpu->ops->mem_peak(gpu));

    void *huge = gpu->ops->alloc(gpu, (size_t)1 << 50);
    ok(huge == NULL, "a 1 PiB alloc returns NULL: %s", sd_last_error());
    ok(backend_status(gpu) == SD_OK, "and leaves no sticky error (arenas may try big blocks and cope)");
    float *x = rnd(1000), *dx = dev(x, 1000), *dy = dev_nan(1000), y[1000];
    gpu->ops->act(gpu, dy, dx, 1000, ACT_SILU);
    cpu->ops->act(cpu, y, x, 1000, ACT_SILU);
    check("an op after the failed alloc works", dy, y, 1000, 1e-6);

    gpu->ops->attention(gpu, dy, dx, dx, dx, 1, 1, 1, 1, 600, 600, 600, 600, 600, 1.0f, 0);
    ok(backend_status(gpu) == SD_ERR_UNSUPPORTED, "attention with D 600 is refused: %s", sd_last_error());
    gpu->ops->act(gpu, dy, dx, 1000, ACT_GELU);
    ok(backend_status(gpu) == SD_ERR_UNSUPPORTED, "errors are sticky: later ops are no-ops");
    gpu->err = SD_OK;
    gpu->ops->group_norm(gpu, dy, dx, NULL, NULL, 1, 10, 100, 3, 1e-5f, 0);
    ok(backend_status(gpu) == SD_ERR_INVALID, "group_norm with C %% G != 0 is refused: %s", sd_last_error());
    gpu->err = SD_OK;
    dfree(dx); dfree(dy); free(x);
}

int main(void) {
    sd_rng_init(&R, 20261126);
    if (backend_create(&gpu, "cuda", 0) != SD_OK) {
        printf("1..0 # SKIP no CUDA backend: %s\n", sd_last_error());
        return 77;
    }
    if (backend_create(&cpu, "cpu", 0) != SD_OK) { printf("Bail out! %s\n", sd_last_error()); return 1; }
    double t0 = sd_now_ms();
    for (int i = 0; i < op_ncases; i++) {
        if (op_cases[i].tol.gpu > 0) run_case(&op_cases[i], 1);
        if (op_cases[i].tol.gpu_fp32 > 0) run_case(&op_cases[i], 0);
    }
    backend_cuda_set_tf32(gpu, 1);
    if (chunked) backend_destroy(chunked);
    test_copy_zero();
    test_contracts();
    ok(backend_status(gpu) == SD_OK, "no sticky error left");
    diag("device memory peak %.1f MiB; %.1f s", gpu->ops->mem_peak(gpu) / 1048576.0, (sd_now_ms() - t0) / 1e3);
    backend_destroy(gpu);
    backend_destroy(cpu);
    return done_testing();
}
